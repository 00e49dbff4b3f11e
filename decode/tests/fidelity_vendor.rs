//! Bi-directional and vendor records on hand-built datagrams: RFC 5103 reverse
//! elements, Cisco ASA NSEL (current and pre-8.4(5) field types), post-NAT addresses
//! and ports, BGP community lists, MPLS label stack sections and SRv6 segment lists.

mod support;

use flow_decode::NetflowSession;
use flowpb::FlowMessage;

use support::netflow::{
    EXPORT_NS, EXPORT_SECS, MS, Rec, decode, ipfix_packet, ipfix_template_with_pens, set, settings,
    source, template_set, v9_packet,
};

/// The IANA-assigned PEN of the RFC 5103 reverse Information Elements.
const REVERSE_PEN: u32 = 29305;

fn ipfix_one(template: Vec<u8>, record: Vec<u8>) -> FlowMessage {
    let mut session = NetflowSession::new(&settings(false));
    let packet = ipfix_packet(EXPORT_SECS, 1, 0, &[template, set(256, &record)]);
    let (flows, report) = decode(&mut session, source(4739), EXPORT_NS, &packet);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let [flow] = <[FlowMessage; 1]>::try_from(flows).unwrap_or_else(|f| panic!("one flow: {f:?}"));
    flow
}

#[test]
fn rfc_5103_reverse_counters_fill_the_in_direction() {
    let template = ipfix_template_with_pens(
        256,
        &[(8, 4, 0), (1, 8, 0), (2, 8, 0), (1, 8, REVERSE_PEN), (2, 8, REVERSE_PEN)],
    );
    let record = Rec::new().bytes(&[10, 0, 0, 1]).u64(1_500).u64(10).u64(90_000).u64(60).done();
    let flow = ipfix_one(template, record);
    assert_eq!((flow.bytes_out, flow.packets_out), (1_500, 10), "forward");
    assert_eq!((flow.bytes_in, flow.packets_in), (90_000, 60), "reverse");
    assert_eq!((flow.bytes, flow.packets), (91_500, 70), "both directions");
}

/// Cisco ASA 9.x NSEL template (NetFlow v9) and a flow-teardown record.
const ASA_FIELDS: &[(u16, u16)] = &[
    (148, 4),    // NF_F_CONN_ID
    (8, 4),      // source address
    (7, 2),      // source port
    (10, 2),     // input interface
    (12, 4),     // destination address
    (11, 2),     // destination port
    (14, 2),     // output interface
    (4, 1),      // protocol
    (225, 4),    // NF_F_XLATE_SRC_ADDR_IPV4
    (226, 4),    // NF_F_XLATE_DST_ADDR_IPV4
    (227, 2),    // NF_F_XLATE_SRC_PORT
    (228, 2),    // NF_F_XLATE_DST_PORT
    (233, 1),    // NF_F_FW_EVENT
    (33002, 2),  // NF_F_FW_EXT_EVENT
    (323, 8),    // NF_F_EVENT_TIME_MSEC
    (152, 8),    // NF_F_FLOW_CREATE_TIME_MSEC
    (231, 4),    // NF_F_FWD_FLOW_DELTA_BYTES
    (232, 4),    // NF_F_REV_FLOW_DELTA_BYTES
    (298, 8),    // initiatorPackets
    (299, 8),    // responderPackets
    (40000, 20), // NF_F_USERNAME
];

#[test]
fn asa_nsel_teardown_has_counters_nat_and_event_fields() {
    let created_ms = u64::from(EXPORT_SECS) * 1000 - 120_000;
    let record = Rec::new()
        .u32(123_509_628)
        .bytes(&[192, 168, 1, 20])
        .u16(43_842)
        .u16(9)
        .bytes(&[195, 218, 150, 10])
        .u16(50_022)
        .u16(4)
        .u8(6)
        .bytes(&[212, 47, 219, 218])
        .bytes(&[195, 218, 150, 10])
        .u16(61_001)
        .u16(50_022)
        .u8(2) // flow deleted
        .u16(2_032)
        .u64(created_ms + 119_000)
        .u64(created_ms)
        .u32(4_167)
        .u32(2_877)
        .u64(21)
        .u64(19)
        .bytes(&[0; 20])
        .done();
    let mut session = NetflowSession::new(&settings(false));
    let packet = v9_packet(
        900_000,
        EXPORT_SECS,
        1,
        0,
        &[template_set(0, &[(263, ASA_FIELDS)]), set(263, &record)],
    );
    let (flows, report) = decode(&mut session, source(9995), EXPORT_NS, &packet);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let [f] = flows.as_slice() else { panic!("{flows:?}") };
    assert_eq!((f.bytes_out, f.bytes_in, f.bytes), (4_167, 2_877, 7_044));
    assert_eq!((f.packets_out, f.packets_in, f.packets), (21, 19, 40));
    assert_eq!((f.flow_id, f.firewall_event), (123_509_628, 2));
    assert_eq!(f.src_addr, vec![192, 168, 1, 20]);
    assert_eq!(f.post_nat_src_addr, vec![212, 47, 219, 218]);
    assert_eq!(f.post_nat_dst_addr, vec![195, 218, 150, 10]);
    assert_eq!((f.post_nat_src_port, f.post_nat_dst_port), (61_001, 50_022));
    assert_eq!((f.in_if, f.out_if, f.proto), (9, 4, 6));
    assert_eq!(
        (f.time_flow_start_ns, f.time_flow_end_ns),
        (created_ms * MS, (created_ms + 119_000) * MS)
    );
    let json = flowpb::json::to_json(f);
    assert_eq!(json["post_nat_src_addr"], "212.47.219.218");
    assert_eq!(json["flow_id"], 123_509_628);
}

#[test]
fn pre_8_4_5_asa_xlate_fields_fill_the_same_nat_fields() {
    let fields: &[(u16, u16)] =
        &[(8, 4), (12, 4), (40001, 4), (40002, 4), (40003, 2), (40004, 2), (40005, 1), (231, 4)];
    let record = Rec::new()
        .bytes(&[10, 1, 1, 1])
        .bytes(&[10, 2, 2, 2])
        .bytes(&[198, 51, 100, 1])
        .bytes(&[10, 2, 2, 2])
        .u16(1_025)
        .u16(80)
        .u8(1)
        .u32(0)
        .done();
    let mut session = NetflowSession::new(&settings(false));
    let packet = v9_packet(
        900_000,
        EXPORT_SECS,
        1,
        0,
        &[template_set(0, &[(256, fields)]), set(256, &record)],
    );
    let (flows, report) = decode(&mut session, source(9995), EXPORT_NS, &packet);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let [f] = flows.as_slice() else { panic!("{flows:?}") };
    assert_eq!(f.post_nat_src_addr, vec![198, 51, 100, 1]);
    assert_eq!((f.post_nat_src_port, f.post_nat_dst_port, f.firewall_event), (1_025, 80, 1));
    assert_eq!((f.bytes_out, f.bytes), (0, 0), "a flow-create event has no bytes yet");
}

#[test]
fn ipv6_post_nat_and_nat64() {
    let v6: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64];
    // NAT64: IPv6 inside, IPv4 after translation; the unused family exported as zeros.
    let template = template_set(2, &[(256, &[(27, 16), (225, 4), (281, 16), (282, 16)])]);
    let record = Rec::new().bytes(&v6).bytes(&[203, 0, 113, 5]).bytes(&[0; 16]).bytes(&v6).done();
    let f = ipfix_one(template, record);
    assert_eq!(f.post_nat_src_addr, vec![203, 0, 113, 5], "the non-zero family");
    assert_eq!(f.post_nat_dst_addr, v6.to_vec());
}

/// An RFC 6313 basicList of IANA element `id` with `length`-byte elements.
fn basic_list(id: u16, length: u16, elements: &[u8]) -> Vec<u8> {
    let mut list = vec![3]; // semantic: allOf
    list.extend_from_slice(&id.to_be_bytes());
    list.extend_from_slice(&length.to_be_bytes());
    list.extend_from_slice(elements);
    let mut field = vec![u8::try_from(list.len()).expect("short list")];
    field.extend(list);
    field
}

#[test]
fn destination_community_list_fills_bgp_communities() {
    // bgpSourceCommunityList (484) is not the flow's route: ignored.
    let template = template_set(2, &[(256, &[(12, 4), (484, 65535), (485, 65535)])]);
    let communities = Rec::new().u32((65000 << 16) | 100).u32((65000 << 16) | 200).done();
    let record = Rec::new()
        .bytes(&[10, 0, 0, 2])
        .bytes(&basic_list(483, 4, &Rec::new().u32(1).done()))
        .bytes(&basic_list(483, 4, &communities))
        .done();
    let f = ipfix_one(template, record);
    assert_eq!(f.bgp_communities, vec![(65000 << 16) | 100, (65000 << 16) | 200]);
}

#[test]
fn srv6_segment_basic_list_and_mpls_label_bits() {
    let segment = |last: u8| {
        let mut s = [0u8; 16];
        s[..4].copy_from_slice(&[0x20, 1, 0x0d, 0xb8]);
        s[15] = last;
        s
    };
    let template = template_set(2, &[(256, &[(70, 3), (71, 3), (496, 65535), (498, 1)])]);
    // Label 16000, EXP 5, bottom of stack clear; label 24, EXP 0, bottom of stack set.
    let top = (16_000u32 << 4) | (5 << 1);
    let bottom = (24u32 << 4) | 1;
    let segments = [segment(1), segment(2)].concat();
    let record = Rec::new()
        .bytes(&top.to_be_bytes()[1..])
        .bytes(&bottom.to_be_bytes()[1..])
        .bytes(&basic_list(494, 16, &segments))
        .u8(1)
        .done();
    let f = ipfix_one(template, record);
    assert_eq!(f.mpls_label, vec![16_000, 24], "EXP and bottom-of-stack bits are not label");
    assert_eq!(f.ipv6_routing_header_addresses, vec![segment(1).to_vec(), segment(2).to_vec()]);
    assert_eq!(f.ipv6_routing_header_seg_left, 1);
}
