//! The listener's sampling policy on sFlow: an override for the agent's address
//! replaces the sample's rate, `default_rate` fills only a rate of 0, and without a
//! policy a sample's rate is kept (0 counted as unknown).

mod sflow_builder;

use std::net::IpAddr;

use flow_decode::decode_flags::{SAMPLING_RATE_DEFAULTED, SAMPLING_RATE_OVERRIDDEN};
use flow_decode::{DatagramReport, SamplingOverride, SamplingPolicy, SflowSession, SflowSettings};
use flowpb::FlowMessage;
use sflow_builder::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid address")
}

/// One datagram from `agent` with one flow sample per rate in `rates`.
fn datagram(agent: Agent, rates: &[u32]) -> Vec<u8> {
    let frame = [
        ethernet(MAC_B, MAC_A, 0x0800),
        ipv4(0, 1, 0, 0, 64, 17, [10, 0, 0, 1], [10, 0, 0, 2], 8),
        udp(1000, 53, 0),
    ]
    .concat();
    let mut builder = DatagramBuilder::new(ip("10.0.0.1"));
    builder.agent = agent;
    for rate in rates {
        builder = builder.sample(flow_sample(*rate, 1, 2, &[header_record(1, 60, &frame)]));
    }
    builder.build()
}

fn session_with(default_rate: Option<u64>, overrides: &[(&str, u64)]) -> SflowSession {
    let overrides = overrides
        .iter()
        .map(|(prefix, rate)| SamplingOverride::parse(prefix, *rate).expect("valid override"))
        .collect();
    let sampling = SamplingPolicy { default_rate, overrides };
    SflowSession::new(&SflowSettings { sampling, ..SflowSettings::default() })
}

/// (sampling_rate, decode_flags) of each flow.
fn rates(flows: &[FlowMessage]) -> Vec<(u64, u32)> {
    flows.iter().map(|f| (f.sampling_rate, f.decode_flags)).collect()
}

fn counted(report: &DatagramReport) -> (usize, usize) {
    (report.sampling_rate_defaulted, report.sampling_rate_unknown)
}

#[test]
fn an_override_for_the_agent_replaces_the_sample_rate() {
    let mut session = session_with(Some(7), &[("10.0.0.0/8", 100), ("10.0.0.1", 4096)]);
    let agent = Agent::Ip(ip("10.0.0.1"));
    let (flows, report) = decode_with(&mut session, &datagram(agent, &[512, 0]));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let overridden = (4096, SAMPLING_RATE_OVERRIDDEN);
    assert_eq!(rates(&flows), vec![overridden, overridden], "the longest prefix wins");
    assert_eq!(counted(&report), (0, 0));
    // Another agent inside the /8 gets the /8's rate; one outside keeps its own.
    let (flows, _) = decode_with(&mut session, &datagram(Agent::Ip(ip("10.9.9.9")), &[512]));
    assert_eq!(rates(&flows), vec![(100, SAMPLING_RATE_OVERRIDDEN)]);
    let (flows, _) = decode_with(&mut session, &datagram(Agent::Ip(ip("192.0.2.9")), &[512]));
    assert_eq!(rates(&flows), vec![(512, 0)]);
}

#[test]
fn the_override_matches_the_agent_address_not_the_udp_source() {
    // The UDP source (SOURCE, 192.0.2.50) is inside the override; the agent is not.
    let mut session = session_with(None, &[("192.0.2.0/24", 64)]);
    let (flows, _) = decode_with(&mut session, &datagram(Agent::Ip(ip("10.0.0.1")), &[512]));
    assert_eq!(rates(&flows), vec![(512, 0)]);
    // Without an agent address the UDP source stands in.
    let (flows, report) = decode_with(&mut session, &datagram(Agent::Unknown, &[512]));
    assert_eq!(report.errors.len(), 1, "the unknown agent address is counted");
    assert_eq!(rates(&flows), vec![(64, SAMPLING_RATE_OVERRIDDEN)]);
}

#[test]
fn the_default_fills_only_a_zero_rate() {
    let mut session = session_with(Some(1000), &[]);
    let agent = Agent::Ip(ip("10.0.0.1"));
    let (flows, report) = decode_with(&mut session, &datagram(agent, &[0, 256]));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(rates(&flows), vec![(1000, SAMPLING_RATE_DEFAULTED), (256, 0)]);
    assert_eq!(counted(&report), (1, 0));
}

#[test]
fn without_a_policy_the_sample_rate_is_kept_and_zero_is_unknown() {
    let mut session = session();
    let agent = Agent::Ip(ip("10.0.0.1"));
    let (flows, report) = decode_with(&mut session, &datagram(agent, &[0, 256, 0]));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(rates(&flows), vec![(0, 0), (256, 0), (0, 0)]);
    assert_eq!(counted(&report), (0, 2));
}
