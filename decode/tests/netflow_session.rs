//! `NetflowSession` on hand-built v5, v9 and IPFIX datagrams: decoding, template
//! lifecycle events, pending flows, scoping, and malformed input.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use flow_decode::netflow::PendingMemory;
use flow_decode::{DecodeError, ExporterSession, LifecycleEvent, NetflowSession, Protocol};

use support::netflow::{
    EXPORT_SECS, MS, V9_FIELDS, decode, ipfix_packet, learned, set, settings, source, template_set,
    v9_packet, v9_record,
};

#[test]
fn v5_masks_the_sampling_mode_and_resolves_times() {
    let mut p = vec![0, 5, 0, 1];
    p.extend_from_slice(&10_000u32.to_be_bytes()); // sys uptime
    p.extend_from_slice(&EXPORT_SECS.to_be_bytes());
    p.extend_from_slice(&500_000u32.to_be_bytes()); // nsecs
    p.extend_from_slice(&77u32.to_be_bytes()); // flow sequence
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&(0x4000u16 | 100).to_be_bytes()); // mode 01, interval 100
    let mut r = vec![10, 0, 0, 1, 10, 0, 0, 2, 10, 0, 0, 254];
    r.extend_from_slice(&3u16.to_be_bytes());
    r.extend_from_slice(&4u16.to_be_bytes());
    r.extend_from_slice(&5u32.to_be_bytes()); // packets
    r.extend_from_slice(&700u32.to_be_bytes()); // octets
    r.extend_from_slice(&4_000u32.to_be_bytes()); // first
    r.extend_from_slice(&9_000u32.to_be_bytes()); // last
    r.extend_from_slice(&53u16.to_be_bytes());
    r.extend_from_slice(&5353u16.to_be_bytes());
    r.extend_from_slice(&[0, 0x12, 17, 0x20]); // pad, tcp flags, proto, tos
    r.extend_from_slice(&65001u16.to_be_bytes());
    r.extend_from_slice(&65002u16.to_be_bytes());
    r.extend_from_slice(&[24, 16, 0, 0]);
    p.extend(r);
    let mut session = NetflowSession::new(&settings(false));
    let (flows, report) = decode(&mut session, source(2055), 9, &p);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let [f] = flows.as_slice() else { panic!("one flow expected, got {flows:?}") };
    assert_eq!(f.sampling_rate, 100);
    assert_eq!(f.sequence_num, 77);
    let export_ns = u64::from(EXPORT_SECS) * 1_000_000_000 + 500_000;
    assert_eq!(f.time_flow_start_ns, export_ns - 6_000 * MS);
    assert_eq!(f.time_flow_end_ns, export_ns - 1_000 * MS);
    assert_eq!((f.bytes, f.packets, f.proto, f.protocol_name.as_str()), (700, 5, 17, "UDP"));
    assert_eq!((f.src_port, f.dst_port, f.in_if, f.out_if), (53, 5353, 3, 4));
    assert_eq!((f.src_as, f.dst_as, f.src_net, f.dst_net), (65001, 65002, 24, 16));
    assert_eq!((f.tcp_flags, f.ip_tos, f.etype), (0x12, 0x20, 0x0800));
    assert_eq!(f.next_hop, vec![10, 0, 0, 254]);
    assert_eq!(f.sampler_address, vec![192, 0, 2, 10]);
    assert_eq!(f.r#type, flowpb::FlowType::NetflowV5 as i32);
}

#[test]
fn v9_template_and_data_decode_with_uptime_times() {
    let mut session = NetflowSession::new(&settings(false));
    let packet = v9_packet(
        10_000,
        EXPORT_SECS,
        42,
        7,
        &[
            template_set(0, &[(256, V9_FIELDS)]),
            set(256, &v9_record([10, 1, 1, 1], 1500, 4_000, 9_000)),
        ],
    );
    let (flows, report) = decode(&mut session, source(2055), 11, &packet);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(learned(&report), vec![256]);
    let [f] = flows.as_slice() else { panic!("{flows:?}") };
    let export_ns = u64::from(EXPORT_SECS) * 1_000_000_000;
    assert_eq!(f.time_flow_start_ns, export_ns - 6_000 * MS);
    assert_eq!(f.time_flow_end_ns, export_ns - 1_000 * MS);
    assert_eq!((f.sequence_num, f.observation_domain_id), (42, 7));
    assert_eq!((f.bytes, f.packets, f.src_port, f.dst_port), (1500, 3, 1234, 443));
    assert_eq!(f.src_addr, vec![10, 1, 1, 1]);
    assert_eq!(f.r#type, flowpb::FlowType::NetflowV9 as i32);
    assert_eq!(f.time_received_ns, 11);

    // A refresh of the same layout is not learned again.
    let refresh = v9_packet(11_000, EXPORT_SECS, 43, 7, &[template_set(0, &[(256, V9_FIELDS)])]);
    let (_, report) = decode(&mut session, source(2055), 12, &refresh);
    assert!(report.events.is_empty(), "{:?}", report.events);
    let stats = session.stats();
    let v9 = stats.caches.iter().find(|c| c.protocol == Some(Protocol::V9)).expect("v9 stats");
    assert_eq!((v9.templates, v9.template_hits, v9.template_misses), (1, 1, 0));
}

#[test]
fn ipfix_template_and_data_decode() {
    let mut session = NetflowSession::new(&settings(false));
    let fields: &[(u16, u16)] = &[
        (27, 16),
        (28, 16),
        (4, 1),
        (139, 2),
        (1, 8),
        (2, 8),
        (152, 8),
        (153, 8),
        (70, 3),
        (71, 3),
    ];
    let mut r = Vec::new();
    r.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    r.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    r.push(58);
    r.extend_from_slice(&[128, 0]);
    r.extend_from_slice(&900u64.to_be_bytes());
    r.extend_from_slice(&9u64.to_be_bytes());
    r.extend_from_slice(&1_700_000_000_123u64.to_be_bytes());
    r.extend_from_slice(&1_700_000_001_456u64.to_be_bytes());
    r.extend_from_slice(&[0x00, 0x10, 0x00, 0x00, 0x20, 0x01]); // labels 256, 512 (bottom)
    let packet =
        ipfix_packet(EXPORT_SECS, 1000, 5, &[template_set(2, &[(300, fields)]), set(300, &r)]);
    let (flows, report) = decode(&mut session, source(4739), 3, &packet);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(learned(&report), vec![300]);
    let [f] = flows.as_slice() else { panic!("{flows:?}") };
    assert_eq!(f.r#type, flowpb::FlowType::Ipfix as i32);
    assert_eq!((f.etype, f.proto, f.protocol_name.as_str()), (0x86DD, 58, "IPv6-ICMP"));
    assert_eq!((f.icmp_type, f.icmp_code), (128, 0));
    assert_eq!((f.bytes, f.packets), (900, 9));
    assert_eq!(
        (f.time_flow_start_ns, f.time_flow_end_ns),
        (1_700_000_000_123 * MS, 1_700_000_001_456 * MS)
    );
    assert_eq!(f.mpls_label, vec![256, 512]);
    assert_eq!((f.sequence_num, f.observation_domain_id), (1000, 5));
    assert_eq!(f.src_addr.len(), 16);
}

#[test]
fn data_before_template_is_replayed_with_its_own_header() {
    let mut session = NetflowSession::new(&settings(true));
    let data = v9_packet(
        10_000,
        EXPORT_SECS,
        5,
        0,
        &[set(256, &v9_record([10, 0, 0, 9], 64, 4_000, 9_000))],
    );
    let (flows, report) = decode(&mut session, source(2055), 1_000, &data);
    assert!(flows.is_empty());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.records_pending, 1);
    assert_eq!(
        report.events,
        vec![LifecycleEvent::MissingTemplate {
            protocol: Protocol::V9,
            domain: 0,
            template_id: 256
        }]
    );

    // The template comes a minute later, in a packet with another uptime and sequence.
    let template =
        v9_packet(70_000, EXPORT_SECS + 60, 6, 0, &[template_set(0, &[(256, V9_FIELDS)])]);
    let (flows, report) = decode(&mut session, source(2055), 2_000, &template);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let [f] = flows.as_slice() else { panic!("{flows:?}") };
    let export_ns = u64::from(EXPORT_SECS) * 1_000_000_000;
    assert_eq!(f.time_flow_start_ns, export_ns - 6_000 * MS, "original header's time");
    assert_eq!(f.sequence_num, 5, "original header's sequence");
    assert_eq!(f.time_received_ns, 1_000, "original receive time");
    assert_eq!(report.flows, 1);
    assert!(report.events.contains(&LifecycleEvent::PendingReplayed {
        protocol: Protocol::V9,
        domain: 0,
        template_id: 256,
        records: 1
    }));
    let stats = session.stats();
    let v9 = stats.caches.iter().find(|c| c.protocol == Some(Protocol::V9)).expect("v9 stats");
    assert_eq!((v9.pending_replayed, v9.pending_dropped), (1, 0), "Data Hits/Misses");
    assert_eq!(v9.pending_flows, 0, "nothing left pending");
}

#[test]
fn pending_entries_past_their_ttl_are_dropped_on_expire() {
    let mut session = NetflowSession::new(&settings(true));
    let data = ipfix_packet(EXPORT_SECS, 1, 0, &[set(300, &[1, 2, 3, 4])]);
    let (_, report) = decode(&mut session, source(4739), 1_000, &data);
    assert_eq!(report.records_pending, 1);
    assert!(session.expire(500_000_000).is_empty(), "not yet past the 1 s ttl");
    assert_eq!(
        session.expire(2_000_000_000),
        vec![LifecycleEvent::PendingDropped {
            protocol: Protocol::Ipfix,
            domain: 0,
            template_id: 300,
            reason: "ttl"
        }]
    );
    let ipfix = session.stats().caches.into_iter().find(|c| c.protocol == Some(Protocol::Ipfix));
    assert_eq!(ipfix.map(|c| c.pending_flows), Some(0));
}

#[test]
fn without_pending_cache_data_before_template_is_counted_once_per_template() {
    let mut session = NetflowSession::new(&settings(false));
    let data = ipfix_packet(EXPORT_SECS, 1, 0, &[set(300, &[1, 2, 3, 4])]);
    let (_, first) = decode(&mut session, source(4739), 1, &data);
    let (_, second) = decode(&mut session, source(4739), 2, &data);
    for report in [&first, &second] {
        assert_eq!(
            report.errors,
            vec![DecodeError::NoTemplate { protocol: Protocol::Ipfix, template_id: 300 }]
        );
    }
    assert_eq!(first.events.len(), 1);
    assert!(second.events.is_empty(), "MissingTemplate once per template: {:?}", second.events);
}

#[test]
fn reused_template_id_with_a_new_layout_collides_and_decodes_with_the_new_layout() {
    let mut session = NetflowSession::new(&settings(false));
    let old = ipfix_packet(EXPORT_SECS, 1, 0, &[template_set(2, &[(300, &[(8, 4), (12, 4)])])]);
    let (_, report) = decode(&mut session, source(4739), 1, &old);
    assert_eq!(learned(&report), vec![300]);
    let new_layout: &[(u16, u16)] = &[(12, 4), (8, 4), (1, 8)];
    let mut record = vec![10, 0, 0, 2, 10, 0, 0, 1];
    record.extend_from_slice(&5_000u64.to_be_bytes());
    let reused = ipfix_packet(
        EXPORT_SECS,
        2,
        0,
        &[template_set(2, &[(300, new_layout)]), set(300, &record)],
    );
    let (flows, report) = decode(&mut session, source(4739), 2, &reused);
    assert_eq!(
        report.events,
        vec![LifecycleEvent::TemplateCollision {
            protocol: Protocol::Ipfix,
            domain: 0,
            template_id: 300,
            old_field_count: 2,
            new_field_count: 3
        }]
    );
    let [f] = flows.as_slice() else { panic!("{flows:?}") };
    assert_eq!(
        (f.src_addr.as_slice(), f.dst_addr.as_slice(), f.bytes),
        (&[10, 0, 0, 1][..], &[10, 0, 0, 2][..], 5_000)
    );
    let ipfix = session.stats().caches.into_iter().find(|c| c.protocol == Some(Protocol::Ipfix));
    assert_eq!(ipfix.map(|c| c.collisions), Some(1));
}

#[test]
fn ipfix_withdrawal_removes_one_template_or_all() {
    let mut session = NetflowSession::new(&settings(false));
    let learn = ipfix_packet(
        EXPORT_SECS,
        1,
        0,
        &[template_set(2, &[(300, &[(8, 4)]), (301, &[(12, 4)]), (302, &[(1, 4)])])],
    );
    let (_, report) = decode(&mut session, source(4739), 1, &learn);
    assert_eq!(learned(&report), vec![300, 301, 302]);

    let withdraw_one = ipfix_packet(EXPORT_SECS, 2, 0, &[template_set(2, &[(300, &[])])]);
    let (_, report) = decode(&mut session, source(4739), 2, &withdraw_one);
    assert_eq!(
        report.events,
        vec![LifecycleEvent::TemplateWithdrawn {
            protocol: Protocol::Ipfix,
            domain: 0,
            template_id: 300
        }]
    );
    let data = ipfix_packet(EXPORT_SECS, 3, 0, &[set(300, &[10, 0, 0, 1])]);
    let (flows, report) = decode(&mut session, source(4739), 3, &data);
    assert!(flows.is_empty());
    assert_eq!(
        report.errors,
        vec![DecodeError::NoTemplate { protocol: Protocol::Ipfix, template_id: 300 }]
    );

    let withdraw_all = ipfix_packet(EXPORT_SECS, 4, 0, &[template_set(2, &[(2, &[])])]);
    let (_, report) = decode(&mut session, source(4739), 4, &withdraw_all);
    let withdrawn: Vec<u16> = report
        .events
        .iter()
        .filter_map(|e| match e {
            LifecycleEvent::TemplateWithdrawn { template_id, .. } => Some(*template_id),
            _ => None,
        })
        .collect();
    assert_eq!(withdrawn, vec![301, 302]);
    let ipfix = session.stats().caches.into_iter().find(|c| c.protocol == Some(Protocol::Ipfix));
    assert_eq!(ipfix.map(|c| c.templates), Some(0));
}

#[test]
fn truncated_headers_and_unknown_versions_are_counted() {
    let mut session = NetflowSession::new(&settings(false));
    let cases: [(&[u8], DecodeError); 5] = [
        (&[0], DecodeError::TruncatedHeader { protocol: Protocol::V9, len: 1 }),
        (
            &[0, 9, 0, 1, 0, 0, 0, 0, 0, 0],
            DecodeError::TruncatedHeader { protocol: Protocol::V9, len: 10 },
        ),
        (&[0, 10, 0, 16, 0, 0], DecodeError::TruncatedHeader { protocol: Protocol::Ipfix, len: 6 }),
        (&[0, 5, 0, 1, 0, 0], DecodeError::TruncatedHeader { protocol: Protocol::V5, len: 6 }),
        (&[0, 7, 0, 1], DecodeError::UnsupportedVersion { version: 7 }),
    ];
    for (payload, error) in cases {
        let (flows, report) = decode(&mut session, source(2055), 1, payload);
        assert!(flows.is_empty());
        assert_eq!(report.errors, vec![error]);
    }
    // A v5 header announcing more records than the datagram holds.
    let mut v5 = vec![0, 5, 0, 2];
    v5.resize(24 + 48, 0);
    let (_, report) = decode(&mut session, source(2055), 1, &v5);
    assert_eq!(
        report.errors,
        vec![DecodeError::LengthPastEnd { protocol: Protocol::V5, length: 120 }]
    );
}

#[test]
fn a_set_length_past_the_end_keeps_the_sets_before_it() {
    let mut session = NetflowSession::new(&settings(false));
    let mut packet = v9_packet(
        10_000,
        EXPORT_SECS,
        1,
        0,
        &[template_set(0, &[(256, V9_FIELDS)]), set(256, &v9_record([10, 0, 0, 1], 1, 1, 1))],
    );
    packet.extend_from_slice(&[1, 0, 0, 200, 0, 0, 0, 0]); // data set 256 claiming 200 bytes
    let (flows, report) = decode(&mut session, source(2055), 1, &packet);
    assert_eq!(flows.len(), 1, "the good flowset before the bad one is kept");
    assert_eq!(
        report.errors,
        vec![DecodeError::LengthPastEnd { protocol: Protocol::V9, length: 200 }]
    );

    let ipfix = ipfix_packet(EXPORT_SECS, 1, 0, &[vec![1, 44, 0, 40, 0, 0, 0, 0]]);
    let (_, report) = decode(&mut session, source(4739), 1, &ipfix);
    assert_eq!(
        report.errors,
        vec![DecodeError::LengthPastEnd { protocol: Protocol::Ipfix, length: 40 }]
    );

    let mut short = ipfix_packet(EXPORT_SECS, 1, 0, &[]);
    short[3] = 64; // message length past the datagram
    let (_, report) = decode(&mut session, source(4739), 1, &short);
    assert_eq!(
        report.errors,
        vec![DecodeError::LengthPastEnd { protocol: Protocol::Ipfix, length: 64 }]
    );
}

#[test]
fn a_zero_length_set_is_malformed_and_ends_the_walk() {
    let mut session = NetflowSession::new(&settings(false));
    let packet = ipfix_packet(
        EXPORT_SECS,
        1,
        0,
        &[template_set(2, &[(300, &[(8, 4)])]), vec![1, 44, 0, 0], set(300, &[10, 0, 0, 1])],
    );
    let (flows, report) = decode(&mut session, source(4739), 1, &packet);
    assert_eq!(learned(&report), vec![300]);
    assert!(flows.is_empty(), "nothing after a set whose length cannot be trusted");
    assert!(matches!(
        report.errors.as_slice(),
        [DecodeError::Malformed { protocol: Protocol::Ipfix, .. }]
    ));
}

#[test]
fn a_template_declaring_65535_fields_is_rejected_without_panic() {
    let mut session = NetflowSession::new(&settings(false));
    for (payload, protocol) in [
        (
            ipfix_packet(EXPORT_SECS, 1, 0, &[set(2, &[1, 144, 255, 255, 0, 8, 0, 4])]),
            Protocol::Ipfix,
        ),
        (v9_packet(1, EXPORT_SECS, 1, 0, &[set(0, &[1, 0, 255, 255, 0, 8, 0, 4])]), Protocol::V9),
    ] {
        let (flows, report) = decode(&mut session, source(2055), 1, &payload);
        assert!(flows.is_empty());
        assert!(learned(&report).is_empty());
        assert!(
            matches!(
                report.errors.as_slice(),
                [DecodeError::TooManyFields { fields: 65535, max: 10_000, protocol: p, .. }] if *p == protocol
            ),
            "{:?}",
            report.errors
        );
    }
}

#[test]
fn a_template_over_max_template_fields_is_rejected_and_counted() {
    let mut settings = settings(false);
    settings.max_template_fields = 2;
    let mut session = NetflowSession::new(&settings);
    let packet = ipfix_packet(
        EXPORT_SECS,
        1,
        0,
        &[template_set(2, &[(300, &[(8, 4), (12, 4), (1, 4)]), (301, &[(8, 4)])])],
    );
    let (_, report) = decode(&mut session, source(4739), 1, &packet);
    assert_eq!(learned(&report), vec![301]);
    assert_eq!(
        report.errors,
        vec![DecodeError::TooManyFields {
            protocol: Protocol::Ipfix,
            template_id: 300,
            fields: 3,
            max: 2
        }]
    );
}

#[test]
fn oversized_and_odd_field_lengths_do_not_panic() {
    let mut session = NetflowSession::new(&settings(false));
    // v9 has no variable length: a field length of 65535 is rejected.
    let v9 = v9_packet(1, EXPORT_SECS, 1, 0, &[template_set(0, &[(256, &[(8, 65535)])])]);
    let (_, report) = decode(&mut session, source(2055), 1, &v9);
    assert!(
        matches!(report.errors.as_slice(), [DecodeError::BadTemplate { template_id: 256, .. }]),
        "{:?}",
        report.errors
    );
    // A 60000-byte field can never fit a set: the data set decodes to nothing.
    let big = ipfix_packet(
        EXPORT_SECS,
        1,
        0,
        &[template_set(2, &[(300, &[(1, 60000)])]), set(300, &[0; 64])],
    );
    let (flows, report) = decode(&mut session, source(4739), 1, &big);
    assert!(flows.is_empty());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // An IPv4 address field of 8 bytes is not an address: left empty, the rest decodes.
    let odd = ipfix_packet(
        EXPORT_SECS,
        1,
        1,
        &[template_set(2, &[(301, &[(8, 8), (7, 2)])]), set(301, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 80])],
    );
    let (flows, report) = decode(&mut session, source(4739), 1, &odd);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let [f] = flows.as_slice() else { panic!("{flows:?}") };
    assert!(f.src_addr.is_empty());
    assert_eq!(f.src_port, 80);
}

#[test]
fn five_six_and_seven_byte_integers_decode() {
    let mut session = NetflowSession::new(&settings(false));
    let fields: &[(u16, u16)] = &[(1, 5), (2, 6), (85, 7), (10, 3)];
    let mut r = vec![0x01, 0x02, 0x03, 0x04, 0x05];
    r.extend_from_slice(&[0, 0, 0, 0, 0x01, 0x00]);
    r.extend_from_slice(&[0; 7]);
    r.extend_from_slice(&[0x01, 0x00, 0x01]);
    let packet =
        ipfix_packet(EXPORT_SECS, 1, 0, &[template_set(2, &[(300, fields)]), set(300, &r)]);
    let (flows, report) = decode(&mut session, source(4739), 1, &packet);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let [f] = flows.as_slice() else { panic!("{flows:?}") };
    assert_eq!((f.bytes, f.packets, f.in_if), (0x01_0203_0405, 256, 0x01_0001));
}

#[test]
fn an_empty_variable_length_field_does_not_cut_the_set() {
    let mut session = NetflowSession::new(&settings(false));
    // srhSegmentIPv6ListSection (variable length), then dst address and bytes.
    let fields: &[(u16, u16)] = &[(497, 65535), (12, 4), (1, 4)];
    let mut records = vec![0, 10, 0, 0, 1, 0, 0, 0, 100];
    records.push(16);
    records.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
    records.extend_from_slice(&[10, 0, 0, 2, 0, 0, 0, 200]);
    records.extend_from_slice(&[0, 10, 0, 0, 3, 0, 0, 0, 250]);
    let packet =
        ipfix_packet(EXPORT_SECS, 1, 0, &[template_set(2, &[(300, fields)]), set(300, &records)]);
    let (flows, report) = decode(&mut session, source(4739), 1, &packet);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let summary: Vec<(Vec<u8>, u64, usize)> = flows
        .iter()
        .map(|f| (f.dst_addr.clone(), f.bytes, f.ipv6_routing_header_addresses.len()))
        .collect();
    assert_eq!(
        summary,
        vec![(vec![10, 0, 0, 1], 100, 0), (vec![10, 0, 0, 2], 200, 1), (vec![10, 0, 0, 3], 250, 0)]
    );
}

#[test]
fn same_template_id_on_other_ports_and_domains_is_isolated() {
    let mut session = NetflowSession::new(&settings(false));
    let a = ipfix_packet(
        EXPORT_SECS,
        1,
        1,
        &[template_set(2, &[(300, &[(7, 2)])]), set(300, &[0, 80])],
    );
    let b = ipfix_packet(
        EXPORT_SECS,
        1,
        2,
        &[template_set(2, &[(300, &[(11, 2), (1, 4)])]), set(300, &[0, 53, 0, 0, 0, 9])],
    );
    let c =
        ipfix_packet(EXPORT_SECS, 1, 1, &[template_set(2, &[(300, &[(1, 2)])]), set(300, &[0, 7])]);
    let (fa, ra) = decode(&mut session, source(1000), 1, &a);
    let (fb, rb) = decode(&mut session, source(1000), 1, &b);
    let (fc, rc) = decode(&mut session, source(2000), 1, &c);
    for r in [&ra, &rb, &rc] {
        assert_eq!(
            learned(r),
            vec![300],
            "each scope learns its own 300, no collision: {:?}",
            r.events
        );
    }
    assert_eq!((fa[0].src_port, fa[0].bytes), (80, 0));
    assert_eq!((fb[0].dst_port, fb[0].bytes), (53, 9));
    assert_eq!(fc[0].bytes, 7);
    // Domain 1 on port 1000 still decodes with its own layout.
    let again = ipfix_packet(EXPORT_SECS, 2, 1, &[set(300, &[0, 81])]);
    let (flows, _) = decode(&mut session, source(1000), 2, &again);
    assert_eq!(flows[0].src_port, 81);
    // A template known on port 1000 is not known on port 3000.
    let (flows, report) = decode(&mut session, source(3000), 3, &again);
    assert!(flows.is_empty());
    assert_eq!(report.errors.len(), 1);
}

#[test]
fn options_data_sets_the_sampling_rate_and_is_not_a_flow() {
    let mut session = NetflowSession::new(&settings(false));
    // v9 options template 257: scope System (4 bytes); FLOW_SAMPLER_ID (1), interval (4).
    let options_template = set(1, &[1, 1, 0, 4, 0, 8, 0, 1, 0, 4, 0, 48, 0, 1, 0, 34, 0, 4]);
    let options_data = set(257, &[0, 0, 0, 0, 3, 0, 0, 0x03, 0xE8]);
    let template = template_set(0, &[(256, &[(8, 4), (48, 1)])]);
    let data = set(256, &[10, 0, 0, 1, 3, 10, 0, 0, 2, 4]);
    let packet = v9_packet(1, EXPORT_SECS, 1, 0, &[options_template, options_data, template, data]);
    let (flows, report) = decode(&mut session, source(2055), 1, &packet);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.non_flow_records, 1);
    let rates: Vec<u64> = flows.iter().map(|f| f.sampling_rate).collect();
    assert_eq!(rates, vec![1000, 0], "sampler 3 announced 1:1000; sampler 4 is unknown");
}

#[test]
fn eviction_at_max_templates_is_reported_with_the_template_id() {
    let mut settings = settings(false);
    settings.max_templates = 1;
    let mut session = NetflowSession::new(&settings);
    let first = ipfix_packet(EXPORT_SECS, 1, 0, &[template_set(2, &[(300, &[(8, 4)])])]);
    let second = ipfix_packet(EXPORT_SECS, 2, 0, &[template_set(2, &[(301, &[(12, 4)])])]);
    decode(&mut session, source(4739), 1, &first);
    let (_, report) = decode(&mut session, source(4739), 2, &second);
    assert_eq!(
        report.events,
        vec![
            LifecycleEvent::TemplateLearned {
                protocol: Protocol::Ipfix,
                domain: 0,
                template_id: 301,
                field_count: 1
            },
            LifecycleEvent::TemplateEvicted {
                protocol: Protocol::Ipfix,
                domain: 0,
                template_id: 300
            },
        ]
    );
    let ipfix = session.stats().caches.into_iter().find(|c| c.protocol == Some(Protocol::Ipfix));
    assert_eq!(ipfix.map(|c| (c.templates, c.evictions)), Some((1, 1)));
}

#[test]
fn more_records_than_netflow_parsers_default_limit_are_all_decoded() {
    let mut session = NetflowSession::new(&settings(false));
    let records: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
    let packet = ipfix_packet(
        EXPORT_SECS,
        1,
        0,
        &[template_set(2, &[(300, &[(4, 1)])]), set(300, &records)],
    );
    let (flows, report) = decode(&mut session, source(4739), 1, &packet);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(
        flows.len(),
        2000,
        "netflow_parser's default of 1024 records per set must not apply"
    );
    assert_eq!(flows[1999].proto, 1999 % 251);
}

/// Template-less data from two exporters: each is held to its own byte share, both
/// together to the shared bound; what does not fit is refused and counted by bound,
/// and ending a session gives its bytes back.
#[test]
fn pending_memory_is_bounded_per_exporter_and_in_total() {
    let shared = Arc::new(PendingMemory::new(48 * 1024));
    let capped = |max_bytes: usize| {
        let mut settings = settings(true);
        if let Some(pending) = settings.pending.as_mut() {
            pending.max_pending_flows = 1_000;
            pending.max_entries_per_template = 1_000;
            pending.max_bytes = max_bytes;
            pending.memory = Arc::clone(&shared);
        }
        NetflowSession::new(&settings)
    };
    let (mut first, mut second) = (capped(32 * 1024), capped(32 * 1024));
    let body = vec![7u8; 1_000];
    let reasons = |session: &mut NetflowSession, sets: u16| {
        let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
        for i in 0..sets {
            let data = ipfix_packet(EXPORT_SECS, u32::from(i), 0, &[set(300 + i, &body)]);
            let (_, report) = decode(session, source(4739), 1_000, &data);
            for error in &report.errors {
                *reasons.entry(error.reason()).or_default() += 1;
            }
        }
        reasons
    };
    let first_refused = reasons(&mut first, 100);
    assert!(shared.used() <= 32 * 1024, "one exporter stays in its share: {}", shared.used());
    assert!(first_refused.get("pending_memory_exporter").copied().unwrap_or(0) > 60);
    let second_refused = reasons(&mut second, 100);
    assert!(shared.used() <= 48 * 1024, "both stay in the total: {}", shared.used());
    assert!(second_refused.get("pending_memory_total").copied().unwrap_or(0) > 60);
    let held: usize = first.stats().caches.iter().map(|c| c.pending_bytes).sum::<usize>()
        + second.stats().caches.iter().map(|c| c.pending_bytes).sum::<usize>();
    assert_eq!(held, shared.used(), "the sessions' figures add up to the shared count");
    drop(first);
    drop(second);
    assert_eq!(shared.used(), 0);
}

/// An exporter that goes away gives up what it parked, and says so: nothing it took in
/// leaves uncounted.
#[test]
fn closing_a_session_gives_up_and_counts_its_pending_flows() {
    let mut session = NetflowSession::new(&settings(true));
    let data = ipfix_packet(EXPORT_SECS, 1, 0, &[set(300, &[1, 2, 3, 4]), set(301, &[5, 6, 7, 8])]);
    let (_, report) = decode(&mut session, source(4739), 1_000, &data);
    assert_eq!(report.records_pending, 2);
    let events = session.close();
    let dropped: Vec<u16> = events
        .iter()
        .filter_map(|e| match e {
            LifecycleEvent::PendingDropped { template_id, reason: "exporter_stopped", .. } => {
                Some(*template_id)
            }
            _ => None,
        })
        .collect();
    assert_eq!(dropped, vec![300, 301]);
    let ipfix = session.stats().caches.into_iter().find(|c| c.protocol == Some(Protocol::Ipfix));
    let ipfix = ipfix.expect("ipfix stats");
    assert_eq!((ipfix.pending_flows, ipfix.pending_dropped, ipfix.pending_bytes), (0, 2, 0));
    assert!(session.close().is_empty(), "a second close has nothing left");
}

/// At `max_templates`, the template evicted is the one whose data came least
/// recently, in whichever datagram and set order the data came, not the oldest one
/// defined: netflow_parser's LRU order follows the data sets.
#[test]
fn eviction_at_max_templates_takes_the_template_used_least_recently() {
    let mut settings = settings(false);
    settings.max_templates = 2;
    let mut session = NetflowSession::new(&settings);
    let templates = template_set(2, &[(300, &[(8, 4)]), (301, &[(12, 4)])]);
    let evicted_by = |session: &mut NetflowSession, sequence: u32, data: Vec<Vec<u8>>| {
        let packet = ipfix_packet(EXPORT_SECS, sequence, 0, &data);
        decode(session, source(4739), u64::from(sequence), &packet);
        let next = template_set(2, &[(302 + sequence as u16, &[(7, 2)])]);
        let packet = ipfix_packet(EXPORT_SECS, sequence + 1, 0, &[next]);
        let (_, report) = decode(session, source(4739), u64::from(sequence) + 1, &packet);
        report
            .events
            .iter()
            .filter_map(|event| match event {
                LifecycleEvent::TemplateEvicted { template_id, .. } => Some(*template_id),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    decode(&mut session, source(4739), 1, &ipfix_packet(EXPORT_SECS, 1, 0, &[templates]));
    // 300 was defined first, but its data came last.
    let data = vec![set(301, &[10, 0, 0, 2]), set(300, &[10, 0, 0, 1])];
    assert_eq!(evicted_by(&mut session, 2, data), vec![301]);
    // Now 300 and 304 are held; 304's data came before 300's, in an earlier datagram.
    decode(&mut session, source(4739), 4, &ipfix_packet(EXPORT_SECS, 4, 0, &[set(304, &[0, 80])]));
    let data = vec![set(300, &[10, 0, 0, 1])];
    assert_eq!(evicted_by(&mut session, 5, data), vec![304]);
}
