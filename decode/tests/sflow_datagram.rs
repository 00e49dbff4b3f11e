//! sFlow v5 datagram decoding: headers, samples, records, errors, limits and sequence
//! tracking, on hand-built datagrams.

mod sflow_builder;

use std::net::IpAddr;

use flow_decode::{DecodeError, LifecycleEvent, Protocol, SflowSession, SflowSettings};
use flowpb::{FlowType, LayerStack};
use sflow_builder::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid address")
}

fn tcp_frame() -> Vec<u8> {
    [
        ethernet(MAC_B, MAC_A, 0x0800),
        ipv4(0x28, 0x1234, 0b010, 0, 63, 6, [10, 1, 1, 1], [10, 2, 2, 2], 20),
        tcp(44_000, 443, 0x12),
    ]
    .concat()
}

#[test]
fn compact_flow_sample_with_header_fills_the_flow() {
    let datagram = DatagramBuilder::new(ip("10.0.0.1"))
        .sequence(42)
        .sample(flow_sample(512, 3, 9, &[header_record(1, 1514, &tcp_frame())]))
        .build();
    let (flows, report) = decode(&datagram);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.flows, 1);
    let f = &flows[0];
    assert_eq!(f.r#type, FlowType::Sflow5 as i32);
    assert_eq!(f.sequence_num, 42);
    assert_eq!(f.sampler_address, vec![10, 0, 0, 1]);
    assert_eq!(f.sampling_rate, 512);
    assert_eq!(f.time_received_ns, RECEIVED_NS);
    assert_eq!(f.time_flow_start_ns, RECEIVED_NS);
    assert_eq!(f.time_flow_end_ns, RECEIVED_NS);
    assert_eq!((f.in_if, f.out_if, f.forwarding_status), (3, 9, 0x40));
    assert_eq!((f.bytes, f.packets), (1514, 1));
    assert_eq!(f.src_mac, 0x0011_2233_4455);
    assert_eq!(f.dst_mac, 0x6677_8899_AABB);
    assert_eq!(f.etype, 0x0800);
    assert_eq!(f.src_addr, vec![10, 1, 1, 1]);
    assert_eq!(f.dst_addr, vec![10, 2, 2, 2]);
    assert_eq!((f.proto, f.protocol_name.as_str()), (6, "TCP"));
    assert_eq!((f.src_port, f.dst_port, f.tcp_flags), (44_000, 443, 0x12));
    assert_eq!((f.ip_tos, f.ip_ttl, f.ip_flags, f.fragment_id), (0x28, 63, 0b010, 0x1234));
    assert_eq!(
        layers(f),
        vec![(LayerStack::Ethernet, 14), (LayerStack::IPv4, 20), (LayerStack::Tcp, 20)]
    );
}

#[test]
fn ipv6_agent_address_is_the_sampler_address() {
    let agent = ip("2001:db8::7");
    let datagram = DatagramBuilder::new(agent)
        .sample(flow_sample(1, 1, 2, &[header_record(1, 60, &tcp_frame())]))
        .build();
    let (flows, report) = decode(&datagram);
    assert!(report.errors.is_empty());
    assert_eq!(flows[0].sampler_address, flow_decode::address_bytes(agent));
    assert_eq!(flows[0].sampler_address.len(), 16);
}

#[test]
fn unknown_agent_address_type_is_counted_and_the_source_stands_in() {
    let mut builder = DatagramBuilder::new(ip("10.0.0.1")).sample(flow_sample(
        10,
        1,
        2,
        &[header_record(1, 60, &tcp_frame())],
    ));
    builder.agent = Agent::Unknown;
    let (flows, report) = decode(&builder.build());
    assert_eq!(report.errors.len(), 1);
    assert!(
        matches!(&report.errors[0], DecodeError::Malformed { protocol: Protocol::Sflow, detail } if detail.contains("agent address type 0"))
    );
    assert_eq!(flows.len(), 1, "the samples are still decoded");
    assert_eq!(flows[0].sampler_address, vec![192, 0, 2, 50]);
}

#[test]
fn undefined_agent_address_type_rejects_the_datagram() {
    let mut builder = DatagramBuilder::new(ip("10.0.0.1")).sample(flow_sample(
        10,
        1,
        2,
        &[header_record(1, 60, &tcp_frame())],
    ));
    builder.agent = Agent::BadType(7);
    let (flows, report) = decode(&builder.build());
    assert!(flows.is_empty());
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].reason(), "malformed");
}

#[test]
fn wrong_version_and_short_datagrams_are_counted() {
    let mut builder = DatagramBuilder::new(ip("10.0.0.1"));
    builder.version = 4;
    let (_, report) = decode(&builder.build());
    assert_eq!(report.errors, vec![DecodeError::UnsupportedVersion { version: 4 }]);

    let (_, report) = decode(&[0, 0, 0, 5, 0, 0, 0, 1, 10]);
    assert_eq!(
        report.errors,
        vec![DecodeError::TruncatedHeader { protocol: Protocol::Sflow, len: 9 }]
    );

    let (_, report) = decode(&[]);
    assert_eq!(
        report.errors,
        vec![DecodeError::TruncatedHeader { protocol: Protocol::Sflow, len: 0 }]
    );
}

#[test]
fn expanded_flow_sample_reads_separate_interface_words() {
    let datagram = DatagramBuilder::new(ip("10.0.0.1"))
        .sample(expanded_flow_sample(
            2048,
            (0, 0x0123_4567),
            (0, 0x0200_0001),
            &[header_record(1, 800, &tcp_frame())],
        ))
        .build();
    let (flows, report) = decode(&datagram);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let f = &flows[0];
    assert_eq!((f.in_if, f.out_if), (0x0123_4567, 0x0200_0001));
    assert_eq!(f.sampling_rate, 2048);
    assert_eq!(f.bytes, 800);
    assert_eq!(f.dst_port, 443);
}

#[test]
fn interface_formats_set_out_if_and_forwarding_status() {
    let cases = [
        (0x4000_0102, 0, 0x80), // discarded, reason 258 (ACL)
        (0x8000_0003, 0, 0x40), // multiple interfaces
        (0x3FFF_FFFF, 0, 0xC0), // to the device itself
        (0, 0, 0),              // unknown
        (17, 17, 0x40),         // an ifIndex
    ];
    for (output, out_if, status) in cases {
        let datagram = DatagramBuilder::new(ip("10.0.0.1"))
            .sample(flow_sample(1, 0x3FFF_FFFF, output, &[header_record(1, 60, &tcp_frame())]))
            .build();
        let (flows, _) = decode(&datagram);
        assert_eq!(flows[0].in_if, 0, "internal input is no ifIndex");
        assert_eq!(
            (flows[0].out_if, flows[0].forwarding_status),
            (out_if, status),
            "output {output:#x}"
        );
    }
    let datagram = DatagramBuilder::new(ip("10.0.0.1"))
        .sample(expanded_flow_sample(1, (0, 5), (1, 258), &[]))
        .build();
    let (flows, _) = decode(&datagram);
    assert_eq!((flows[0].in_if, flows[0].out_if, flows[0].forwarding_status), (5, 0, 0x80));
}

#[test]
fn counter_samples_are_counted_not_emitted() {
    let datagram = DatagramBuilder::new(ip("10.0.0.1"))
        .sample(counter_sample(false))
        .sample(flow_sample(1, 1, 2, &[header_record(1, 60, &tcp_frame())]))
        .sample(counter_sample(true))
        .build();
    let (flows, report) = decode(&datagram);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(flows.len(), 1);
    assert_eq!(report.non_flow_records, 2);
}

#[test]
fn unknown_samples_and_records_are_skipped_by_length() {
    let vendor_record = Element::new(data_format(8800, 1), vec![0xEE; 13]);
    let unknown_standard_record = Element::new(1006, vec![0xDD; 12]);
    let vendor_sample = Element::new(data_format(4413, 1), vec![0xCC; 40]);
    let unknown_sample = Element::new(9, vec![0xBB; 8]);
    let datagram = DatagramBuilder::new(ip("10.0.0.1"))
        .sample(vendor_sample)
        .sample(unknown_sample)
        .sample(flow_sample(
            100,
            1,
            2,
            &[
                vendor_record,
                header_record(1, 60, &tcp_frame()),
                unknown_standard_record,
                switch_record(10, 20),
            ],
        ))
        .build();
    let (flows, report) = decode(&datagram);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].dst_port, 443);
    assert_eq!((flows[0].src_vlan, flows[0].dst_vlan), (10, 20));
}

#[test]
fn extended_switch_router_and_gateway_records() {
    let records = [
        header_record(1, 60, &tcp_frame()),
        switch_record(100, 200),
        router_record(Some(ip("192.0.2.1")), 24, 16),
        gateway_record(
            ip("2001:db8::1"),
            65000,
            64512,
            64513,
            &[(2, vec![65001, 65002]), (1, vec![65003, 65004])],
            &[0xFDE8_0001, 0xFDE8_0002],
            100,
        ),
    ];
    let datagram =
        DatagramBuilder::new(ip("10.0.0.1")).sample(flow_sample(1, 1, 2, &records)).build();
    let (flows, report) = decode(&datagram);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let f = &flows[0];
    assert_eq!((f.src_vlan, f.dst_vlan), (100, 200));
    assert_eq!(f.next_hop, vec![192, 0, 2, 1]);
    assert_eq!((f.src_net, f.dst_net), (24, 16));
    assert_eq!(f.bgp_next_hop, flow_decode::address_bytes(ip("2001:db8::1")));
    assert_eq!(f.as_path, vec![65001, 65002, 65003, 65004]);
    assert_eq!((f.src_as, f.dst_as, f.next_hop_as), (64512, 65004, 65001));
    assert_eq!(f.bgp_communities, vec![0xFDE8_0001, 0xFDE8_0002]);
}

#[test]
fn gateway_with_empty_path_and_zero_source_as_uses_the_router_as() {
    let records = [gateway_record(ip("192.0.2.9"), 65000, 0, 0, &[], &[], 0)];
    let datagram =
        DatagramBuilder::new(ip("10.0.0.1")).sample(flow_sample(1, 1, 2, &records)).build();
    let (flows, report) = decode(&datagram);
    assert!(report.errors.is_empty());
    let f = &flows[0];
    assert_eq!((f.src_as, f.dst_as, f.next_hop_as), (65000, 65000, 0));
    assert!(f.as_path.is_empty());
}

#[test]
fn router_record_without_next_hop() {
    let datagram = DatagramBuilder::new(ip("10.0.0.1"))
        .sample(flow_sample(1, 1, 2, &[router_record(None, 8, 32)]))
        .build();
    let (flows, report) = decode(&datagram);
    assert!(report.errors.is_empty());
    assert!(flows[0].next_hop.is_empty());
    assert_eq!((flows[0].src_net, flows[0].dst_net), (8, 32));
}

#[test]
fn sampled_ipv4_and_ipv6_records_without_a_header() {
    let v4 = ip_record(1400, 17, ip("198.51.100.1"), ip("203.0.113.9"), 5353, 53, 0, 0xB8);
    let datagram =
        DatagramBuilder::new(ip("10.0.0.1")).sample(flow_sample(64, 1, 2, &[v4])).build();
    let (flows, report) = decode(&datagram);
    assert!(report.errors.is_empty());
    let f = &flows[0];
    assert_eq!(
        (f.src_addr.clone(), f.dst_addr.clone()),
        (vec![198, 51, 100, 1], vec![203, 0, 113, 9])
    );
    assert_eq!((f.proto, f.protocol_name.as_str(), f.src_port, f.dst_port), (17, "UDP", 5353, 53));
    assert_eq!((f.ip_tos, f.bytes, f.packets, f.etype), (0xB8, 1400, 1, 0x0800));
    assert!(f.layer_stack.is_empty());

    let v6 = ip_record(900, 6, ip("2001:db8::1"), ip("2001:db8::2"), 1234, 80, 0x18, 3);
    let datagram =
        DatagramBuilder::new(ip("10.0.0.1")).sample(flow_sample(64, 1, 2, &[v6])).build();
    let (flows, report) = decode(&datagram);
    assert!(report.errors.is_empty());
    let f = &flows[0];
    assert_eq!(f.src_addr, flow_decode::address_bytes(ip("2001:db8::1")));
    assert_eq!(f.dst_addr.len(), 16);
    assert_eq!((f.proto, f.tcp_flags, f.ip_tos, f.etype, f.bytes), (6, 0x18, 3, 0x86DD, 900));
}

#[test]
fn header_takes_precedence_over_sampled_ip_and_ethernet_records() {
    let records = [
        ethernet_record(1518, [1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12], 0x0800),
        ip_record(1500, 17, ip("1.1.1.1"), ip("2.2.2.2"), 1, 2, 0, 0),
        header_record(1, 1514, &tcp_frame()),
    ];
    let datagram =
        DatagramBuilder::new(ip("10.0.0.1")).sample(flow_sample(1, 1, 2, &records)).build();
    let (flows, _) = decode(&datagram);
    let f = &flows[0];
    assert_eq!(f.src_addr, vec![10, 1, 1, 1]);
    assert_eq!((f.proto, f.dst_port, f.bytes), (6, 443, 1514));
    assert_eq!(f.src_mac, 0x0011_2233_4455);
}

#[test]
fn ethernet_frame_record_alone_gives_macs_and_type() {
    let records = [ethernet_record(64, [1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12], 0x0806)];
    let datagram =
        DatagramBuilder::new(ip("10.0.0.1")).sample(flow_sample(1, 1, 2, &records)).build();
    let (flows, report) = decode(&datagram);
    assert!(report.errors.is_empty());
    let f = &flows[0];
    assert_eq!(
        (f.src_mac, f.dst_mac, f.etype, f.bytes),
        (0x0102_0304_0506, 0x0708_090A_0B0C, 0x0806, 64)
    );
}

#[test]
fn max_samples_decodes_the_first_n_and_counts_the_datagram() {
    let mut builder = DatagramBuilder::new(ip("10.0.0.1"));
    for port in 0..5u16 {
        let frame = [
            ethernet(MAC_B, MAC_A, 0x0800),
            ipv4(0, 1, 0, 0, 64, 17, [10, 0, 0, 1], [10, 0, 0, 2], 8),
            udp(1000 + port, 53, 0),
        ]
        .concat();
        builder = builder.sample(flow_sample(1, 1, 2, &[header_record(1, 60, &frame)]));
    }
    let datagram = builder.build();
    let mut session = SflowSession::new(&SflowSettings {
        max_samples_per_datagram: Some(3),
        ..SflowSettings::default()
    });
    let (flows, report) = decode_with(&mut session, &datagram);
    assert_eq!(flows.iter().map(|f| f.src_port).collect::<Vec<_>>(), vec![1000, 1001, 1002]);
    assert_eq!(report.errors, vec![DecodeError::TooManySamples { samples: 5, max: 3 }]);

    let mut uncapped = SflowSession::new(&SflowSettings {
        max_samples_per_datagram: Some(5),
        ..SflowSettings::default()
    });
    let (flows, report) = decode_with(&mut uncapped, &datagram);
    assert_eq!(flows.len(), 5);
    assert!(report.errors.is_empty());
}

#[test]
fn malformed_sample_is_counted_and_its_neighbours_survive() {
    // A flow sample whose record count promises a record that is not there.
    let broken = Element::new(
        1,
        Xdr::new().u32(1).u32(1).u32(1).u32(1).u32(0).u32(1).u32(2).u32(3).into_bytes(),
    );
    // A gateway record whose AS path length runs past the record.
    let bad_gateway = Element::new(
        1003,
        Xdr::new()
            .u32(1)
            .raw(&[1, 1, 1, 1])
            .u32(1)
            .u32(2)
            .u32(3)
            .u32(1)
            .u32(2)
            .u32(1000)
            .into_bytes(),
    );
    let datagram = DatagramBuilder::new(ip("10.0.0.1"))
        .sample(flow_sample(1, 1, 2, &[header_record(1, 60, &tcp_frame())]))
        .sample(broken)
        .sample(flow_sample(1, 1, 2, &[bad_gateway]))
        .sample(flow_sample(1, 5, 6, &[header_record(1, 60, &tcp_frame())]))
        .build();
    let (flows, report) = decode(&datagram);
    assert_eq!(flows.len(), 2);
    assert_eq!((flows[0].in_if, flows[1].in_if), (1, 5));
    assert_eq!(report.errors.len(), 2, "{:?}", report.errors);
    assert!(report.errors.iter().all(|e| matches!(
        e,
        DecodeError::Malformed { protocol: Protocol::Sflow, .. }
            | DecodeError::LengthPastEnd { protocol: Protocol::Sflow, .. }
    )));
}

#[test]
fn sample_length_past_the_end_keeps_earlier_samples() {
    let mut datagram = DatagramBuilder::new(ip("10.0.0.1"))
        .sample(flow_sample(1, 1, 2, &[header_record(1, 60, &tcp_frame())]))
        .build();
    // A second sample that claims 4000 bytes.
    datagram.extend_from_slice(&1u32.to_be_bytes());
    datagram.extend_from_slice(&4000u32.to_be_bytes());
    datagram.extend_from_slice(&[0; 16]);
    datagram[27] = 2; // sample count (IPv4 agent: count is bytes 24..28)
    let (flows, report) = decode(&datagram);
    assert_eq!(flows.len(), 1);
    assert_eq!(
        report.errors,
        vec![DecodeError::LengthPastEnd { protocol: Protocol::Sflow, length: 4000 }]
    );
}

#[test]
fn fewer_samples_than_declared_is_counted() {
    let mut builder = DatagramBuilder::new(ip("10.0.0.1")).sample(flow_sample(
        1,
        1,
        2,
        &[header_record(1, 60, &tcp_frame())],
    ));
    builder.declared_samples = Some(3);
    let (flows, report) = decode(&builder.build());
    assert_eq!(flows.len(), 1);
    assert_eq!(report.errors.len(), 1);
    assert!(
        matches!(&report.errors[0], DecodeError::Malformed { detail, .. } if detail.contains("declares 3 samples but ends after 1"))
    );
}

#[test]
fn huge_declared_counts_do_not_allocate_or_loop() {
    let mut builder = DatagramBuilder::new(ip("10.0.0.1"));
    builder.declared_samples = Some(u32::MAX);
    let (flows, report) = decode(&builder.build());
    assert!(flows.is_empty());
    assert_eq!(report.errors.len(), 1);
    // A flow sample declaring u32::MAX records.
    let sample = Element::new(
        1,
        Xdr::new().u32(1).u32(1).u32(1).u32(1).u32(0).u32(1).u32(2).u32(u32::MAX).into_bytes(),
    );
    let (flows, report) = decode(&DatagramBuilder::new(ip("10.0.0.1")).sample(sample).build());
    assert!(flows.is_empty());
    assert_eq!(report.errors.len(), 1);
}

#[test]
fn sequence_gaps_are_counted_per_sub_agent_and_restarts_reported() {
    let mut session = session();
    let agent = ip("10.0.0.1");
    let mut gap = 0;
    // Sub-agent 0 loses 10, 11 and 12; sub-agent 1 is in order.
    for seq in (1..=9).chain(13..=100) {
        for sub in [0, 1] {
            let seq_for_sub = if sub == 0 { seq } else { seq + 1000 };
            let datagram = DatagramBuilder::new(agent)
                .sub_agent(sub)
                .sequence(seq_for_sub)
                .uptime(seq * 1000)
                .build();
            let (_, report) = decode_with(&mut session, &datagram);
            assert!(report.events.is_empty());
            gap += report.sequence_gap;
        }
    }
    // Sub-agent 1 skipped 1010..=1012 as well, since its numbers follow seq.
    assert_eq!(gap, 6);
    assert_eq!(session.lost_datagrams(), 6);

    // Sub-agent 1 reboots: uptime falls from 100 s to 5 ms, numbering starts again.
    let datagram = DatagramBuilder::new(agent).sub_agent(1).sequence(1).uptime(5).build();
    let (_, report) = decode_with(&mut session, &datagram);
    assert_eq!(
        report.events,
        vec![LifecycleEvent::ExporterRestarted { protocol: Protocol::Sflow, domain: 1 }]
    );
    assert_eq!(report.sequence_gap, 0);
    assert_eq!(session.restarts(), 1);
}

#[test]
fn reordered_datagrams_are_not_losses() {
    let mut session = session();
    let mut order: Vec<u32> = (1..=200).collect();
    order.swap(10, 12);
    order.swap(50, 51);
    let mut gap = 0;
    for seq in order {
        let datagram =
            DatagramBuilder::new(ip("10.0.0.1")).sequence(seq).uptime(1000 + seq).build();
        let (_, report) = decode_with(&mut session, &datagram);
        assert!(report.events.is_empty());
        gap += report.sequence_gap;
    }
    assert_eq!(gap, 0);
}

#[test]
fn every_truncation_of_a_full_datagram_is_safe() {
    let qinq_frame = [
        ethernet(MAC_B, MAC_A, 0x88A8),
        vlan_tag(0, 100, 0x8100),
        vlan_tag(3, 200, 0x86DD),
        ipv6(0, 1, 6, 64, v6(1), v6(2), 20),
        tcp(1, 2, 0x02),
    ]
    .concat();
    let datagram = DatagramBuilder::new(ip("2001:db8::9"))
        .sample(counter_sample(false))
        .sample(flow_sample(
            1,
            1,
            2,
            &[
                header_record(1, 1000, &qinq_frame),
                switch_record(1, 2),
                router_record(Some(ip("10.9.9.9")), 1, 2),
                gateway_record(ip("10.8.8.8"), 1, 2, 3, &[(2, vec![4, 5])], &[6], 7),
            ],
        ))
        .sample(expanded_flow_sample(
            1,
            (0, 1),
            (0, 2),
            &[ip_record(1, 2, ip("1.1.1.1"), ip("2.2.2.2"), 3, 4, 5, 6)],
        ))
        .build();
    let (full, report) = decode(&datagram);
    assert_eq!(full.len(), 2);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    for len in 0..datagram.len() {
        let (flows, report) = decode(&datagram[..len]);
        assert!(flows.len() < 2, "a cut datagram ({len} bytes) cannot hold both flows");
        assert!(!report.errors.is_empty(), "cut at {len}: the loss must be counted");
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    let datagram = DatagramBuilder::new(ip("10.0.0.1"))
        .sample(flow_sample(
            1,
            1,
            2,
            &[
                header_record(1, 1000, &tcp_frame()),
                gateway_record(ip("10.8.8.8"), 1, 2, 3, &[(2, vec![4, 5])], &[6], 7),
            ],
        ))
        .sample(counter_sample(true))
        .build();
    // A small deterministic generator (xorshift) flips bytes all over the datagram.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut decoded_some = 0;
    for _ in 0..20_000 {
        let mut bytes = datagram.clone();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        let (flows, _) = decode(&bytes);
        decoded_some += flows.len();
    }
    assert!(decoded_some > 0, "corruption of unimportant bytes still decodes");
}
