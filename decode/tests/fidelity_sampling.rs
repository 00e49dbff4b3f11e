//! Sampling rates end to end on hand-built datagrams: each way an exporter announces a
//! rate (v5 header, v9/IPFIX options data with each sampling element, rates inside data
//! records), options and data in one datagram in either order, the operator's default
//! and override, and the counting of flows whose rate stays unknown.

mod support;

use flow_decode::decode_flags::{SAMPLING_RATE_DEFAULTED, SAMPLING_RATE_OVERRIDDEN};
use flow_decode::{ExporterSession, NetflowSession, SamplingOverride, SamplingPolicy};
use flowpb::FlowMessage;

use support::netflow::{
    EXPORT_NS, EXPORT_SECS, Rec, V5Header, decode, ipfix_options_template_set, ipfix_packet, set,
    settings, source, template_set, v5_packet, v5_record, v9_options_template_set, v9_packet,
};

fn rates(flows: &[FlowMessage]) -> Vec<u64> {
    flows.iter().map(|f| f.sampling_rate).collect()
}

/// IPFIX data template 256: sourceIPv4Address, selectorId (4), samplerId (1).
fn ipfix_flow_template() -> Vec<u8> {
    template_set(2, &[(256, &[(8, 4), (302, 4), (48, 1)])])
}

fn ipfix_flow(selector: u32, sampler: u8) -> Vec<u8> {
    Rec::new().bytes(&[10, 0, 0, 1]).u32(selector).u8(sampler).done()
}

/// Decodes one IPFIX message: options template 300 (scope selectorId) with `fields`,
/// one options record `options`, then the flow template and `flows`.
fn ipfix_options_then_flows(
    fields: &[(u16, u16)],
    options: Vec<u8>,
    flows: &[Vec<u8>],
) -> (Vec<FlowMessage>, flow_decode::DatagramReport) {
    let mut session = NetflowSession::new(&settings(false));
    let data: Vec<u8> = flows.concat();
    let packet = ipfix_packet(
        EXPORT_SECS,
        1,
        0,
        &[
            ipfix_options_template_set(300, &[(302, 4)], fields),
            set(300, &options),
            ipfix_flow_template(),
            set(256, &data),
        ],
    );
    decode(&mut session, source(4739), EXPORT_NS, &packet)
}

#[test]
fn rfc_5477_packet_interval_and_space() {
    // selector 5: 1 packet sampled, 999 skipped: 1 in 1000.
    let options = Rec::new().u32(5).u32(1).u32(999).done();
    let (flows, report) = ipfix_options_then_flows(
        &[(305, 4), (306, 4)],
        options,
        &[ipfix_flow(5, 0), ipfix_flow(6, 0)],
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(rates(&flows), vec![1000, 0], "selector 6 announced nothing");
    assert_eq!(report.sampling_rate_unknown, 1);
}

#[test]
fn random_n_out_of_n_uses_population_over_size() {
    // selectorAlgorithm 3, samplingPacketInterval 1 (Cisco), size 1, population 256.
    let options = Rec::new().u32(1).u16(3).u32(1).u32(1).u32(256).done();
    let fields = [(304, 2), (305, 4), (309, 4), (310, 4)];
    let (flows, report) = ipfix_options_then_flows(&fields, options, &[ipfix_flow(1, 0)]);
    assert_eq!(rates(&flows), vec![256]);
    assert_eq!(report.sampling_rate_unknown, 0);
}

#[test]
fn a_lone_packet_interval_is_not_read_as_unsampled() {
    // Cisco IOS-XR: random n-out-of-N, samplingPacketInterval 1, nothing else.
    let options = Rec::new().u32(1).u16(3).u32(1).done();
    let (flows, report) =
        ipfix_options_then_flows(&[(304, 2), (305, 4)], options, &[ipfix_flow(1, 0)]);
    assert_eq!(rates(&flows), vec![0]);
    assert_eq!(report.sampling_rate_unknown, 1);
}

#[test]
fn sampling_probability_inverts() {
    // selectorAlgorithm 4 (uniform probabilistic), samplingProbability 0.001.
    let options = Rec::new().u32(2).u16(4).f64(0.001).done();
    let (flows, _) = ipfix_options_then_flows(&[(304, 2), (311, 8)], options, &[ipfix_flow(2, 0)]);
    assert_eq!(rates(&flows), vec![1000]);
}

#[test]
fn sampler_id_with_sampler_random_interval() {
    // Options keyed by samplerId (48, scope) with samplerRandomInterval (50).
    let mut session = NetflowSession::new(&settings(false));
    let packet = ipfix_packet(
        EXPORT_SECS,
        1,
        0,
        &[
            ipfix_options_template_set(301, &[(48, 1)], &[(50, 4)]),
            set(301, &Rec::new().u8(9).u32(512).done()),
            ipfix_flow_template(),
            set(256, &[ipfix_flow(77, 9), ipfix_flow(77, 8)].concat()),
        ],
    );
    let (flows, report) = decode(&mut session, source(4739), EXPORT_NS, &packet);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(rates(&flows), vec![512, 0]);
}

#[test]
fn v9_domain_wide_and_interface_scoped_options() {
    let mut session = NetflowSession::new(&settings(false));
    // Options 257: scope System; SAMPLING_INTERVAL (34) 100. Options 258: scope
    // Interface; SAMPLING_INTERVAL 10 for ifIndex 7.
    let packet = v9_packet(
        50_000,
        EXPORT_SECS,
        1,
        0,
        &[
            v9_options_template_set(257, &[(1, 4)], &[(34, 4)]),
            v9_options_template_set(258, &[(2, 4)], &[(34, 4)]),
            set(257, &Rec::new().u32(0).u32(100).done()),
            set(258, &Rec::new().u32(7).u32(10).done()),
            template_set(0, &[(256, &[(8, 4), (10, 4)])]),
            set(256, &Rec::new().bytes(&[10, 0, 0, 1]).u32(7).bytes(&[10, 0, 0, 2]).u32(8).done()),
        ],
    );
    let (flows, report) = decode(&mut session, source(2055), EXPORT_NS, &packet);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.non_flow_records, 2);
    assert_eq!(rates(&flows), vec![10, 100], "ifIndex 7 has its own rate; 8 the domain's");
}

#[test]
fn rates_inside_data_records_win() {
    let mut session = NetflowSession::new(&settings(false));
    // v9: SAMPLING_INTERVAL (34) in the data template itself.
    let v9 = v9_packet(
        50_000,
        EXPORT_SECS,
        1,
        0,
        &[
            template_set(0, &[(256, &[(8, 4), (34, 4)])]),
            set(256, &Rec::new().bytes(&[10, 0, 0, 1]).u32(2048).done()),
        ],
    );
    let (flows, _) = decode(&mut session, source(2055), EXPORT_NS, &v9);
    assert_eq!(rates(&flows), vec![2048]);
    // IPFIX: samplingPacketInterval/Space in the record, over a domain-wide announcement.
    let ipfix = ipfix_packet(
        EXPORT_SECS,
        1,
        0,
        &[
            ipfix_options_template_set(300, &[(149, 4)], &[(34, 4)]),
            set(300, &Rec::new().u32(0).u32(50).done()),
            template_set(2, &[(256, &[(8, 4), (305, 4), (306, 4)]), (257, &[(8, 4)])]),
            set(256, &Rec::new().bytes(&[10, 0, 0, 1]).u32(1).u32(63).done()),
            set(257, &[10, 0, 0, 2]),
        ],
    );
    let (flows, report) = decode(&mut session, source(4739), EXPORT_NS, &ipfix);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(rates(&flows), vec![64, 50]);
}

#[test]
fn options_after_data_in_the_same_datagram_still_apply() {
    let mut session = NetflowSession::new(&settings(false));
    let packet = ipfix_packet(
        EXPORT_SECS,
        1,
        0,
        &[
            ipfix_flow_template(),
            set(256, &ipfix_flow(4, 0)),
            ipfix_options_template_set(300, &[(302, 4)], &[(305, 4), (306, 4)]),
            set(300, &Rec::new().u32(4).u32(1).u32(31).done()),
        ],
    );
    let (flows, report) = decode(&mut session, source(4739), EXPORT_NS, &packet);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(rates(&flows), vec![32]);
    assert_eq!(report.sampling_rate_unknown, 0, "resolved before counting");
    // The next datagram's flows get it at once.
    let next = ipfix_packet(EXPORT_SECS, 2, 0, &[set(256, &ipfix_flow(4, 0))]);
    let (flows, _) = decode(&mut session, source(4739), EXPORT_NS, &next);
    assert_eq!(rates(&flows), vec![32]);
}

#[test]
fn records_before_any_announcement_stay_unknown_and_are_counted() {
    let mut session = NetflowSession::new(&settings(false));
    let early = ipfix_packet(
        EXPORT_SECS,
        1,
        0,
        &[ipfix_flow_template(), set(256, &[ipfix_flow(1, 0), ipfix_flow(1, 0)].concat())],
    );
    let (flows, report) = decode(&mut session, source(4739), EXPORT_NS, &early);
    assert_eq!(rates(&flows), vec![0, 0]);
    assert_eq!(report.sampling_rate_unknown, 2);
    let announce = ipfix_packet(
        EXPORT_SECS,
        3,
        0,
        &[
            ipfix_options_template_set(300, &[(302, 4)], &[(305, 4), (306, 4)]),
            set(300, &Rec::new().u32(1).u32(1).u32(9).done()),
        ],
    );
    let (_, report) = decode(&mut session, source(4739), EXPORT_NS, &announce);
    assert_eq!(report.sampling_rate_unknown, 0);
    let later = ipfix_packet(EXPORT_SECS, 4, 0, &[set(256, &ipfix_flow(1, 0))]);
    let (flows, report) = decode(&mut session, source(4739), EXPORT_NS, &later);
    assert_eq!((rates(&flows), report.sampling_rate_unknown), (vec![10], 0));
    assert_eq!(session.stats().fidelity.sampling_rate_unknown, 2);
}

fn v5_with_interval(sampling: u16) -> Vec<u8> {
    let header = V5Header { sampling, ..Default::default() };
    v5_packet(header, &[v5_record([10, 0, 0, 1], 1, 64, 9_000, 9_500)])
}

#[test]
fn default_rate_fills_only_unknown_rates_and_is_flagged() {
    let mut settings = settings(false);
    settings.sampling = SamplingPolicy { default_rate: Some(1), overrides: Vec::new() };
    let mut session = NetflowSession::new(&settings);
    let (flows, report) = decode(&mut session, source(2055), EXPORT_NS, &v5_with_interval(0));
    assert_eq!((flows[0].sampling_rate, flows[0].decode_flags), (1, SAMPLING_RATE_DEFAULTED));
    assert_eq!((report.sampling_rate_defaulted, report.sampling_rate_unknown), (1, 0));
    // Mode bits 10 (random), interval 300: announced, so the default does not apply.
    let mut next = v5_with_interval(0x8000 | 300);
    next[16..20].copy_from_slice(&2u32.to_be_bytes());
    let (flows, report) = decode(&mut session, source(2055), EXPORT_NS, &next);
    assert_eq!((flows[0].sampling_rate, flows[0].decode_flags), (300, 0));
    assert_eq!(report.sampling_rate_defaulted, 0);
    assert_eq!(session.stats().fidelity.sampling_rate_defaulted, 1);
}

#[test]
fn without_a_default_an_unannounced_v5_rate_is_unknown() {
    let mut session = NetflowSession::new(&settings(false));
    let (flows, report) = decode(&mut session, source(2055), EXPORT_NS, &v5_with_interval(0));
    assert_eq!((flows[0].sampling_rate, flows[0].decode_flags), (0, 0));
    assert_eq!(report.sampling_rate_unknown, 1);
}

#[test]
fn an_override_replaces_what_the_exporter_announced() {
    let mut settings = settings(false);
    let host = SamplingOverride::parse("192.0.2.10", 4096).expect("valid override");
    let wider = SamplingOverride::parse("192.0.2.0/24", 2).expect("valid override");
    settings.sampling = SamplingPolicy { default_rate: Some(1), overrides: vec![wider, host] };
    let mut session = NetflowSession::new(&settings);
    let (flows, report) =
        decode(&mut session, source(2055), EXPORT_NS, &v5_with_interval(0x4000 | 100));
    assert_eq!(
        (flows[0].sampling_rate, flows[0].decode_flags),
        (4096, SAMPLING_RATE_OVERRIDDEN),
        "the longest prefix (the exporter's own address) wins over its header's 100"
    );
    assert_eq!((report.sampling_rate_defaulted, report.sampling_rate_unknown), (0, 0));
    // Another exporter of the /24 gets the /24's rate.
    let mut other = NetflowSession::new(&settings);
    let from = std::net::SocketAddr::from(([192, 0, 2, 99], 2055));
    let (flows, _) = decode(&mut other, from, EXPORT_NS, &v5_with_interval(0));
    assert_eq!(flows[0].sampling_rate, 2);
}

#[test]
fn options_records_after_an_empty_variable_length_value_still_apply() {
    // samplerName (84) is variable-length and empty in both records: netflow_parser alone
    // stops the set at the first empty value (RFC 7011 §7 allows them).
    let options = [
        Rec::new().u32(5).u8(0).u32(1).u32(999).done(),
        Rec::new().u32(6).u8(0).u32(1).u32(99).done(),
    ]
    .concat();
    let (flows, report) = ipfix_options_then_flows(
        &[(84, 65535), (305, 4), (306, 4)],
        options,
        &[ipfix_flow(5, 0), ipfix_flow(6, 0)],
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(rates(&flows), vec![1000, 100], "both selectors' rates apply");
    assert_eq!(report.non_flow_records, 2);
}
