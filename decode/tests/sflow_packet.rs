//! Sampled packet header decoding (sFlow raw packet header record), through whole
//! datagrams and through `flow_decode::packet` directly.

mod sflow_builder;

use flow_decode::packet::{HeaderProtocol, decode_sampled_header, protocol_name};
use flowpb::{FlowMessage, LayerStack};
use sflow_builder::*;

#[test]
fn vlan_ipv6_udp() {
    let frame = [
        ethernet(MAC_B, MAC_A, 0x8100),
        vlan_tag(5, 300, 0x86DD),
        ipv6(0xB8, 0xABCDE, 17, 61, v6(1), v6(2), 8),
        udp(5000, 4789, 0),
    ]
    .concat();
    let f = decode_header(1, 200, &frame);
    assert_eq!(f.vlan_id, 300);
    assert_eq!(f.etype, 0x86DD);
    assert_eq!((f.src_addr.clone(), f.dst_addr.clone()), (v6(1).to_vec(), v6(2).to_vec()));
    assert_eq!((f.ip_tos, f.ipv6_flow_label, f.ip_ttl), (0xB8, 0xABCDE, 61));
    assert_eq!(
        (f.proto, f.protocol_name.as_str(), f.src_port, f.dst_port),
        (17, "UDP", 5000, 4789)
    );
    assert_eq!(
        layers(&f),
        vec![
            (LayerStack::Ethernet, 14),
            (LayerStack::Dot1Q, 4),
            (LayerStack::IPv6, 40),
            (LayerStack::Udp, 8)
        ]
    );
}

#[test]
fn qinq_reports_the_outer_vlan() {
    for outer_type in [0x88A8u16, 0x9100, 0x8100] {
        let frame = [
            ethernet(MAC_B, MAC_A, outer_type),
            vlan_tag(0, 100, 0x8100),
            vlan_tag(0, 200, 0x0800),
            ipv4(0, 7, 0, 0, 64, 1, [10, 0, 0, 1], [10, 0, 0, 2], 8),
            icmp(8, 0),
        ]
        .concat();
        let f = decode_header(1, 98, &frame);
        assert_eq!(f.vlan_id, 100, "outer tag, ethertype {outer_type:#x}");
        assert_eq!(f.etype, 0x0800);
        assert_eq!(
            (f.proto, f.protocol_name.as_str(), f.icmp_type, f.icmp_code),
            (1, "ICMP", 8, 0)
        );
        assert_eq!(
            layers(&f),
            vec![
                (LayerStack::Ethernet, 14),
                (LayerStack::Dot1Q, 4),
                (LayerStack::Dot1Q, 4),
                (LayerStack::IPv4, 20),
                (LayerStack::Icmp, 8)
            ]
        );
    }
}

#[test]
fn mpls_stack_then_ipv4_guessed_from_the_version_nibble() {
    let frame = [
        ethernet(MAC_B, MAC_A, 0x8847),
        mpls_entry(16_001, false, 255),
        mpls_entry(24_005, false, 254),
        mpls_entry(3, true, 253),
        ipv4(0x10, 99, 0, 0, 12, 6, [192, 168, 1, 1], [192, 168, 2, 2], 20),
        tcp(179, 50_000, 0x18),
    ]
    .concat();
    let f = decode_header(1, 300, &frame);
    assert_eq!(f.mpls_label, vec![16_001, 24_005, 3]);
    assert_eq!(f.mpls_ttl, vec![255, 254, 253]);
    assert_eq!(f.etype, 0x0800);
    assert_eq!((f.src_port, f.dst_port, f.tcp_flags, f.ip_ttl), (179, 50_000, 0x18, 12));
    assert_eq!(
        layers(&f),
        vec![
            (LayerStack::Ethernet, 14),
            (LayerStack::Mpls, 12),
            (LayerStack::IPv4, 20),
            (LayerStack::Tcp, 20)
        ]
    );
}

#[test]
fn mpls_multicast_with_ipv6_payload() {
    let frame = [
        ethernet(MAC_B, MAC_A, 0x8848),
        mpls_entry(2, true, 64),
        ipv6(0, 0, 58, 255, v6(3), v6(4), 8),
        icmp(128, 0),
    ]
    .concat();
    let f = decode_header(1, 100, &frame);
    assert_eq!((f.mpls_label.clone(), f.etype), (vec![2], 0x86DD));
    assert_eq!((f.proto, f.protocol_name.as_str(), f.icmp_type), (58, "IPv6-ICMP", 128));
    assert_eq!(layers(&f).last(), Some(&(LayerStack::IcmPv6, 8)));
}

#[test]
fn ipv6_extension_chain_with_srv6_segments() {
    let segments = [v6(0xA1), v6(0xA2), v6(0xA3)];
    let frame = [
        ethernet(MAC_B, MAC_A, 0x86DD),
        ipv6(0, 0x12345, 0, 64, v6(1), v6(2), 200),
        ipv6_options(60, 0),   // hop-by-hop, 8 bytes
        ipv6_options(43, 1),   // destination options, 16 bytes
        srh(44, 1, &segments), // routing, type 4
        ipv6_fragment(6, 0, true, 0xDEAD_BEEF),
        tcp(8080, 443, 0x02),
    ]
    .concat();
    let f = decode_header(1, 400, &frame);
    assert_eq!(
        f.ipv6_routing_header_addresses,
        segments.iter().map(|s| s.to_vec()).collect::<Vec<_>>()
    );
    assert_eq!(f.ipv6_routing_header_seg_left, 1);
    assert_eq!((f.fragment_id, f.fragment_offset, f.ip_flags), (0xDEAD_BEEF, 0, 1));
    assert_eq!(
        (f.proto, f.protocol_name.as_str()),
        (6, "TCP"),
        "proto is the upper layer, not the first extension"
    );
    assert_eq!((f.src_port, f.dst_port, f.tcp_flags), (8080, 443, 0x02));
    assert_eq!(
        layers(&f),
        vec![
            (LayerStack::Ethernet, 14),
            (LayerStack::IPv6, 40),
            (LayerStack::IPv6HeaderRouting, 56),
            (LayerStack::IPv6HeaderFragment, 8),
            (LayerStack::Tcp, 20)
        ]
    );
}

#[test]
fn non_first_fragments_carry_no_ports() {
    let frame = [
        ethernet(MAC_B, MAC_A, 0x0800),
        ipv4(0, 0x4242, 0b001, 185, 64, 17, [10, 0, 0, 1], [10, 0, 0, 2], 100),
        udp(1111, 2222, 0), // payload bytes that only look like a UDP header
    ]
    .concat();
    let f = decode_header(1, 1500, &frame);
    assert_eq!((f.fragment_id, f.fragment_offset, f.ip_flags), (0x4242, 185, 1));
    assert_eq!((f.src_port, f.dst_port), (0, 0));
    assert_eq!(f.proto, 17);
    assert_eq!(layers(&f), vec![(LayerStack::Ethernet, 14), (LayerStack::IPv4, 20)]);

    let frame = [
        ethernet(MAC_B, MAC_A, 0x86DD),
        ipv6(0, 0, 44, 64, v6(1), v6(2), 100),
        ipv6_fragment(17, 100, false, 7),
        udp(1111, 2222, 0),
    ]
    .concat();
    let f = decode_header(1, 1500, &frame);
    assert_eq!((f.fragment_id, f.fragment_offset, f.proto), (7, 100, 17));
    assert_eq!((f.src_port, f.dst_port), (0, 0));
}

#[test]
fn raw_ipv4_and_ipv6_header_protocols() {
    let packet =
        [ipv4(4, 1, 0, 0, 33, 6, [1, 2, 3, 4], [5, 6, 7, 8], 20), tcp(22, 60_000, 0x10)].concat();
    let f = decode_header(11, 1000, &packet);
    assert_eq!((f.etype, f.src_addr.clone(), f.dst_port), (0x0800, vec![1, 2, 3, 4], 60_000));
    assert_eq!(f.src_mac, 0);
    assert_eq!(layers(&f), vec![(LayerStack::IPv4, 20), (LayerStack::Tcp, 20)]);

    let packet = [ipv6(0, 0, 17, 1, v6(8), v6(9), 8), udp(123, 123, 0)].concat();
    let f = decode_header(12, 1000, &packet);
    assert_eq!((f.etype, f.src_port, f.ip_ttl), (0x86DD, 123, 1));
    assert_eq!(layers(&f), vec![(LayerStack::IPv6, 40), (LayerStack::Udp, 8)]);
}

#[test]
fn ipv4_options_move_the_transport_header() {
    let mut ip = ipv4(0, 1, 0, 0, 64, 17, [10, 0, 0, 1], [10, 0, 0, 2], 8);
    ip[0] = 0x46; // IHL 6: 4 bytes of options
    let frame = [ethernet(MAC_B, MAC_A, 0x0800), ip, vec![1, 1, 0, 0], udp(7, 9, 0)].concat();
    let f = decode_header(1, 100, &frame);
    assert_eq!((f.src_port, f.dst_port), (7, 9));
    assert_eq!(layers(&f)[1], (LayerStack::IPv4, 24));
}

#[test]
fn other_link_types_and_non_ip_frames_decode_what_they_can() {
    let f = decode_header(7, 100, &[0xAB; 64]); // PPP: not decoded
    assert!(f.layer_stack.is_empty());
    assert_eq!((f.bytes, f.packets), (100, 1));

    let arp = [ethernet(MAC_B, MAC_A, 0x0806), vec![0; 28]].concat();
    let f = decode_header(1, 60, &arp);
    assert_eq!((f.etype, f.src_mac), (0x0806, 0x0011_2233_4455));
    assert_eq!(layers(&f), vec![(LayerStack::Ethernet, 14)]);

    // Ethernet type that is an 802.3 length: no ethertype.
    let llc = [ethernet(MAC_B, MAC_A, 0x0040), vec![0; 20]].concat();
    let f = decode_header(1, 60, &llc);
    assert_eq!(f.etype, 0);

    // Ethertype IPv4 with a version nibble that is not 4.
    let bogus = [ethernet(MAC_B, MAC_A, 0x0800), ipv6(0, 0, 6, 1, v6(1), v6(2), 0)].concat();
    let f = decode_header(1, 60, &bogus);
    assert!(f.src_addr.is_empty());
}

#[test]
fn truncated_headers_at_every_length_decode_a_prefix() {
    let segments = [v6(0xA1), v6(0xA2)];
    let frames = [
        [
            ethernet(MAC_B, MAC_A, 0x88A8),
            vlan_tag(0, 10, 0x8100),
            vlan_tag(0, 20, 0x8847),
            mpls_entry(100, false, 9),
            mpls_entry(200, true, 8),
            ipv6(0, 5, 0, 64, v6(1), v6(2), 100),
            ipv6_options(43, 0),
            srh(44, 0, &segments),
            ipv6_fragment(6, 0, false, 9),
            tcp(1, 2, 0x11),
        ]
        .concat(),
        [
            ethernet(MAC_B, MAC_A, 0x0800),
            ipv4(0, 1, 0, 0, 64, 17, [10, 0, 0, 1], [10, 0, 0, 2], 8),
            udp(7, 9, 0),
        ]
        .concat(),
    ];
    for frame in &frames {
        let mut full = FlowMessage::default();
        decode_sampled_header(HeaderProtocol::Ethernet, frame, &mut full);
        for len in 0..frame.len() {
            let mut cut = FlowMessage::default();
            decode_sampled_header(HeaderProtocol::Ethernet, &frame[..len], &mut cut);
            // Layers decoded from a prefix are a prefix of the full decode's layers.
            assert!(cut.layer_stack.len() <= full.layer_stack.len());
            assert_eq!(
                cut.layer_stack[..],
                full.layer_stack[..cut.layer_stack.len()],
                "cut at {len}"
            );
            // Any field decoded from a prefix matches the full decode.
            if !cut.src_addr.is_empty() {
                assert_eq!(cut.src_addr, full.src_addr, "cut at {len}");
            }
            if cut.dst_port != 0 {
                assert_eq!(cut.dst_port, full.dst_port, "cut at {len}");
            }
            for (i, segment) in cut.ipv6_routing_header_addresses.iter().enumerate() {
                assert_eq!(segment, &full.ipv6_routing_header_addresses[i], "cut at {len}");
            }
        }
        // Through a whole datagram, every cut decodes one flow without errors.
        for len in 0..frame.len() {
            let f = decode_header(1, 1500, &frame[..len]);
            assert_eq!(f.bytes, 1500);
        }
    }
}

#[test]
fn hostile_lengths_stay_inside_the_header() {
    // A routing header claiming 255 units (2048 bytes) inside a 100-byte sample.
    let mut frame = [ethernet(MAC_B, MAC_A, 0x86DD), ipv6(0, 0, 43, 64, v6(1), v6(2), 0)].concat();
    frame.extend_from_slice(&[6, 255, 4, 0, 200, 0, 0, 0]);
    frame.extend_from_slice(&v6(0xEE));
    frame.resize(100, 0x11);
    let mut f = FlowMessage::default();
    decode_sampled_header(HeaderProtocol::Ethernet, &frame, &mut f);
    assert_eq!(f.ipv6_routing_header_addresses.len(), 2, "only segments present in the bytes");
    assert_eq!(f.ipv6_routing_header_addresses[0], v6(0xEE).to_vec());
    assert_eq!(f.src_port, 0);

    // An endless MPLS stack (no bottom-of-stack bit) stops at the label cap.
    let mut frame = ethernet(MAC_B, MAC_A, 0x8847);
    for label in 0..40 {
        frame.extend(mpls_entry(label + 16, false, 1));
    }
    let mut f = FlowMessage::default();
    decode_sampled_header(HeaderProtocol::Ethernet, &frame, &mut f);
    assert_eq!(f.mpls_label.len(), 16);

    // Back-to-back VLAN tags stop at the layer cap.
    let mut frame = ethernet(MAC_B, MAC_A, 0x8100);
    for _ in 0..100 {
        frame.extend(vlan_tag(0, 1, 0x8100));
    }
    let mut f = FlowMessage::default();
    decode_sampled_header(HeaderProtocol::Ethernet, &frame, &mut f);
    assert!(f.layer_stack.len() <= 32);
}

#[test]
fn protocol_names() {
    assert_eq!(protocol_name(6), "TCP");
    assert_eq!(protocol_name(17), "UDP");
    assert_eq!(protocol_name(1), "ICMP");
    assert_eq!(protocol_name(58), "IPv6-ICMP");
    assert_eq!(protocol_name(47), "GRE");
    assert_eq!(protocol_name(253), "");
}
