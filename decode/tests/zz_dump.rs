mod support;
use flow_decode::*;
#[test]
fn dump() {
    for (p, idx) in [("104-IPFIXv10-IPv6-CISCO-sampling_option/traffic-00.pcap", 2usize), ("500-IPFIXv10-BGP-CISCO-SRv6/traffic-00.pcap", 14), ("101-NFv9-CISCO-cust_primitives/traffic-00.pcap", 1), ("106-IPFIXv10-HUAWEI-vrf_name/traffic-00.pcap", 4), ("srv6/srv6.pcap", 30)] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps").join(p);
        let dgs = support::pcap::udp_datagrams(&path).unwrap();
        let mut s = NetflowSession::new(&NetflowSettings { max_templates: 100, max_template_fields: 1000, pending: None });
        for (i, d) in dgs.iter().enumerate() {
            let mut out = vec![];
            let r = s.decode(Datagram { source: d.source, received_ns: d.timestamp_ns, payload: &d.payload }, &mut out);
            if i == idx || !r.events.is_empty() && i < 3 { println!("{p} {i} events {:?}", r.events); }
            if i == idx { for f in &out { println!("{}", flowpb::json::to_json(f)); } }
        }
        println!("{:?}", s.stats());
    }
}
