//! The NetGauze reference decodes (`*-flow.json`, one JSON object per exported packet)
//! turned into the `FlowMessage` JSON (`flowpb::json::to_json`) we expect for each data
//! record, and the comparison of the two.
//!
//! Self-contained (serde_json and std only) so the root integration tests can include
//! it with `#[path]` and compare the collector's JSON output too.
//!
//! The expectations follow the decoder's documented choices (decode/src/netflow):
//! first occurrence of a repeated Information Element wins (SRv6 templates repeat the
//! inner packet's IEs after the outer ones); the address family is `ipVersion` when
//! present, else the first non-zero address IE's, and next hops / prefix lengths follow
//! it; MPLS label stack sections that are all zero are padding; IPFIX sysUpTime times
//! need systemInitTimeMilliseconds (from the record or earlier options data of the same
//! exporter and domain), without which they are 0 (unknown); v9 sysUpTime times are
//! relative to the header's uptime and export time; sampling rates come from options
//! data the same way (by selectorAlgorithm when given: count-based needs both packet
//! interval and space, n-out-of-N needs size and population; a lone packet interval,
//! as Cisco IOS-XR sends, gives no rate).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::{Map, Value, json};

/// One data record of the reference, as the `FlowMessage` JSON fields it must produce.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedFlow {
    /// Where it is in the reference: line (0-based) and record within the line.
    pub line: usize,
    pub record: usize,
    pub fields: Vec<(&'static str, Value)>,
}

/// State carried across the packets of one exporter: what options data announced.
#[derive(Debug, Default)]
pub struct ReferenceStream {
    /// systemInitTimeMilliseconds (Unix ms) by (exporter label, domain).
    system_init: HashMap<(String, u64), u64>,
    /// Sampling rates by (exporter, domain, sampler key).
    sampling: HashMap<(String, u64, SamplerKey), u64>,
    line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SamplerKey {
    Domain,
    Sampler(u64),
    Selector(u64),
}

/// The header of one reference packet.
#[derive(Debug, Clone)]
struct Header {
    flow_type: &'static str,
    sequence: u64,
    domain: u64,
    export_ms: u64,
    /// v9 only.
    sys_uptime_ms: Option<u64>,
}

impl ReferenceStream {
    /// The expected flows of the next reference line (one exported packet), in order.
    /// `exporter` names the exporter (e.g. its address), scoping options state.
    pub fn next_packet(&mut self, exporter: &str, line: &str) -> Result<Vec<ExpectedFlow>, String> {
        let line_no = self.line;
        self.line += 1;
        let value: Value =
            serde_json::from_str(line).map_err(|e| format!("line {line_no}: {e}"))?;
        let (kind, message) = value
            .as_object()
            .and_then(|o| o.iter().next())
            .ok_or_else(|| format!("line {line_no}: not an object"))?;
        let header = parse_header(kind, message).map_err(|e| format!("line {line_no}: {e}"))?;
        let sets = message["sets"].as_array().ok_or(format!("line {line_no}: no sets"))?;
        let mut flows = Vec::new();
        for set in sets {
            let Some(data) = set.get("Data") else {
                continue;
            };
            let records =
                data["records"].as_array().ok_or(format!("line {line_no}: no records"))?;
            for record in records {
                let scope = record["scope_fields"].as_array().map_or(0, Vec::len);
                let fields = ie_list(&record["fields"])?;
                if scope > 0 {
                    let mut all = ie_list(&record["scope_fields"])?;
                    all.extend(fields);
                    self.options(exporter, &header, &all)?;
                } else {
                    let fields = self.expected(exporter, &header, &fields)?;
                    flows.push(ExpectedFlow { line: line_no, record: flows.len(), fields });
                }
            }
        }
        Ok(flows)
    }

    fn options(
        &mut self,
        exporter: &str,
        header: &Header,
        fields: &[(String, Value)],
    ) -> Result<(), String> {
        let ies = Ies(fields);
        if let Some(init) = ies.first("systemInitTimeMilliseconds") {
            self.system_init.insert((exporter.to_owned(), header.domain), rfc3339_ms(init)?);
        }
        if let Some(rate) = options_rate(&ies) {
            let key = match (ies.first("selectorId"), ies.first("samplerId")) {
                (Some(id), _) => SamplerKey::Selector(id.as_u64().unwrap_or(0)),
                (None, Some(id)) => SamplerKey::Sampler(id.as_u64().unwrap_or(0)),
                (None, None) => SamplerKey::Domain,
            };
            self.sampling.insert((exporter.to_owned(), header.domain, key), rate);
        }
        Ok(())
    }

    fn sampling_rate(&self, exporter: &str, header: &Header, ies: &Ies<'_>) -> u64 {
        if let Some(rate) = options_rate(ies) {
            return rate;
        }
        let lookup = |key: SamplerKey| {
            self.sampling.get(&(exporter.to_owned(), header.domain, key)).copied()
        };
        let selector = ies.first("selectorId").and_then(Value::as_u64).map(SamplerKey::Selector);
        let sampler = ies.first("samplerId").and_then(Value::as_u64).map(SamplerKey::Sampler);
        selector
            .and_then(lookup)
            .or_else(|| sampler.and_then(lookup))
            .or_else(|| lookup(SamplerKey::Domain))
            .unwrap_or(0)
    }

    fn expected(
        &self,
        exporter: &str,
        header: &Header,
        fields: &[(String, Value)],
    ) -> Result<Vec<(&'static str, Value)>, String> {
        let ies = Ies(fields);
        let mut out: Vec<(&'static str, Value)> = vec![
            ("type", json!(header.flow_type)),
            ("sequence_num", json!(header.sequence)),
            ("observation_domain_id", json!(header.domain)),
            ("sampling_rate", json!(self.sampling_rate(exporter, header, &ies))),
        ];
        let family = ies.family();
        let pick = |v4: &str, v6: &str| -> Value {
            let (a, b) = if family == Some(6) { (v6, v4) } else { (v4, v6) };
            ies.first(a).or_else(|| ies.first(b)).cloned().unwrap_or(json!(""))
        };
        let src = pick("sourceIPv4Address", "sourceIPv6Address");
        let dst = pick("destinationIPv4Address", "destinationIPv6Address");
        let etype = match src.as_str().or(dst.as_str()).and_then(|a| a.parse::<IpAddr>().ok()) {
            Some(IpAddr::V4(_)) => 0x0800,
            Some(IpAddr::V6(_)) => 0x86DD,
            None => 0,
        };
        out.push(("src_addr", src));
        out.push(("dst_addr", dst));
        out.push(("etype", json!(etype)));
        out.push(("next_hop", pick("ipNextHopIPv4Address", "ipNextHopIPv6Address")));
        out.push(("bgp_next_hop", pick("bgpNextHopIPv4Address", "bgpNextHopIPv6Address")));
        let number = |name: &str| ies.first(name).and_then(Value::as_u64);
        let prefix = |v4: &str, v6: &str| {
            let (a, b) = if family == Some(6) { (v6, v4) } else { (v4, v6) };
            json!(number(a).or_else(|| number(b)).unwrap_or(0))
        };
        out.push(("src_net", prefix("sourceIPv4PrefixLength", "sourceIPv6PrefixLength")));
        out.push(("dst_net", prefix("destinationIPv4PrefixLength", "destinationIPv6PrefixLength")));
        for (key, names) in NUMBERS {
            let value = names.iter().find_map(|n| number(n)).unwrap_or(0);
            out.push((key, json!(value)));
        }
        let proto = match ies.first("protocolIdentifier") {
            Some(p) => protocol_number(p)?,
            None => 0,
        };
        out.push(("proto", json!(proto)));
        let flags = ies.first("tcpControlBits").map_or(Ok(0), tcp_flags)?;
        out.push(("tcp_flags", json!(flags)));
        let type_code = number("icmpTypeCodeIPv4").or_else(|| number("icmpTypeCodeIPv6"));
        out.push(("icmp_type", json!(type_code.map_or(0, |tc| tc >> 8))));
        out.push(("icmp_code", json!(type_code.map_or(0, |tc| tc & 0xFF))));
        out.push(("mpls_label", json!(mpls_labels(&ies)?)));
        let (start, end) = self.times(exporter, header, &ies)?;
        out.push(("time_flow_start_ns", json!(start)));
        out.push(("time_flow_end_ns", json!(end)));
        Ok(out)
    }

    fn times(&self, exporter: &str, header: &Header, ies: &Ies<'_>) -> Result<(u64, u64), String> {
        let absolute = |name: &str| -> Result<Option<u64>, String> {
            ies.first(name).map(|v| rfc3339_ms(v).map(|ms| ms * 1_000_000)).transpose()
        };
        let init = match ies.first("systemInitTimeMilliseconds") {
            Some(v) => Some(rfc3339_ms(v)?),
            None => self.system_init.get(&(exporter.to_owned(), header.domain)).copied(),
        };
        let uptime = |name: &str| -> Option<u64> {
            let value = ies.first(name)?.as_u64()?;
            let ms = match header.sys_uptime_ms {
                Some(sys_uptime) => {
                    let offset = (value as u32).wrapping_sub(sys_uptime as u32) as i32;
                    header.export_ms.checked_add_signed(i64::from(offset))?
                }
                None => init? + value,
            };
            Some(ms * 1_000_000)
        };
        let start = absolute("flowStartMilliseconds")?.or_else(|| uptime("flowStartSysUpTime"));
        let end = absolute("flowEndMilliseconds")?.or_else(|| uptime("flowEndSysUpTime"));
        Ok((start.unwrap_or(0), end.unwrap_or(0)))
    }
}

/// The rate a record's sampling elements give (RFC 5477 / RFC 5475 selector algorithms).
fn options_rate(ies: &Ies<'_>) -> Option<u64> {
    let num = |name: &str| ies.first(name).and_then(Value::as_u64).filter(|v| *v > 0);
    let algorithm = ies.first("selectorAlgorithm").and_then(|v| {
        v.as_u64().or(match v.as_str()? {
            "SystematiccountbasedSampling" => Some(1),
            "RandomnoutofNSampling" => Some(3),
            "UniformprobabilisticSampling" => Some(4),
            _ => None,
        })
    });
    let n_out_of_n = match (num("samplingSize"), num("samplingPopulation")) {
        (Some(size), Some(population)) => Some((population / size).max(1)),
        _ => None,
    };
    let space = ies.first("samplingPacketSpace").and_then(Value::as_u64);
    let count_based = match (num("samplingPacketInterval"), space) {
        (Some(interval), Some(space)) => Some((interval + space) / interval),
        _ => None,
    };
    let interval = num("samplingInterval").or(num("samplerRandomInterval"));
    let probabilistic = ies
        .first("samplingProbability")
        .and_then(Value::as_f64)
        .filter(|p| *p > 0.0 && *p <= 1.0)
        .map(|p| (1.0 / p).round() as u64);
    match algorithm {
        Some(1) => count_based.or(interval),
        Some(3) => n_out_of_n.or(interval),
        Some(4) => probabilistic.or(interval),
        _ => n_out_of_n.or(count_based).or(interval).or(probabilistic),
    }
}

/// FlowMessage keys filled from the first of these numeric IEs present (else 0).
const NUMBERS: &[(&str, &[&str])] = &[
    ("src_port", &["sourceTransportPort"]),
    ("dst_port", &["destinationTransportPort"]),
    ("bytes", &["octetDeltaCount", "octetTotalCount", "postOctetDeltaCount"]),
    ("packets", &["packetDeltaCount", "packetTotalCount", "postPacketDeltaCount"]),
    ("in_if", &["ingressInterface"]),
    ("out_if", &["egressInterface"]),
    ("src_as", &["bgpSourceAsNumber"]),
    ("dst_as", &["bgpDestinationAsNumber"]),
    ("next_hop_as", &["bgpNextAdjacentAsNumber"]),
    ("ip_tos", &["ipClassOfService"]),
    ("ip_ttl", &["ipTTL", "minimumTTL", "maximumTTL"]),
    ("src_vlan", &["vlanId"]),
    ("dst_vlan", &["postVlanId"]),
    ("vlan_id", &["vlanId", "dot1qVlanId"]),
    ("ipv6_flow_label", &["flowLabelIPv6"]),
    ("fragment_id", &["fragmentIdentification"]),
    ("fragment_offset", &["fragmentOffset"]),
    ("ipv6_routing_header_seg_left", &["srhSegmentsIPv6Left"]),
];

/// The fields of a record, in order, as (IE name, value).
struct Ies<'a>(&'a [(String, Value)]);

impl Ies<'_> {
    fn first(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// 4, 6 or `None`: ipVersion, else the first address IE that is not all zeros.
    fn family(&self) -> Option<u64> {
        if let Some(version) = self.first("ipVersion").and_then(Value::as_u64) {
            return Some(version);
        }
        self.0.iter().find_map(|(name, value)| {
            let addr = value.as_str()?.parse::<IpAddr>().ok()?;
            let is_address = matches!(
                name.as_str(),
                "sourceIPv4Address"
                    | "destinationIPv4Address"
                    | "sourceIPv6Address"
                    | "destinationIPv6Address"
            );
            (is_address && !addr.is_unspecified()).then_some(if addr.is_ipv4() { 4 } else { 6 })
        })
    }
}

fn ie_list(fields: &Value) -> Result<Vec<(String, Value)>, String> {
    let list = fields.as_array().ok_or("fields is not an array")?;
    list.iter()
        .map(|f| {
            let (name, value) = f.as_object().and_then(|o| o.iter().next()).ok_or("empty field")?;
            Ok((name.clone(), value.clone()))
        })
        .collect()
}

fn parse_header(kind: &str, m: &Value) -> Result<Header, String> {
    let num = |k: &str| m[k].as_u64().ok_or(format!("header field {k} missing"));
    match kind {
        "IPFIX" => Ok(Header {
            flow_type: "IPFIX",
            sequence: num("sequence_number")?,
            domain: num("observation_domain_id")?,
            export_ms: rfc3339_ms(&m["export_time"])?,
            sys_uptime_ms: None,
        }),
        "NetFlowV9" => Ok(Header {
            flow_type: "NETFLOW_V9",
            sequence: num("sequence_number")?,
            domain: num("source_id")?,
            export_ms: rfc3339_ms(&m["unix_time"])?,
            sys_uptime_ms: Some(num("sys_up_time")?),
        }),
        other => Err(format!("unknown export kind {other}")),
    }
}

/// IP protocol numbers of the names NetGauze prints.
fn protocol_number(value: &Value) -> Result<u64, String> {
    if let Some(n) = value.as_u64() {
        return Ok(n);
    }
    let name = value.as_str().ok_or(format!("protocol {value}"))?;
    Ok(match name {
        "HOPOPT" => 0,
        "ICMP" => 1,
        "IGMP" => 2,
        "IPv4" => 4,
        "TCP" => 6,
        "UDP" => 17,
        "IPv6" => 41,
        "IPv6Route" => 43,
        "IPv6Frag" => 44,
        "GRE" => 47,
        "ESP" => 50,
        "AH" => 51,
        "IPv6ICMP" => 58,
        "IPv6NoNxt" => 59,
        "IPv6Opts" => 60,
        "OSPFIGP" => 89,
        "PIM" => 103,
        "VRRP" => 112,
        "SCTP" => 132,
        other => return Err(format!("protocol name {other} is not in the test's table")),
    })
}

fn tcp_flags(value: &Value) -> Result<u64, String> {
    if let Some(n) = value.as_u64() {
        return Ok(n);
    }
    let flags = value.as_object().ok_or(format!("tcpControlBits {value}"))?;
    const BITS: [(&str, u64); 9] = [
        ("FIN", 1),
        ("SYN", 2),
        ("RST", 4),
        ("PSH", 8),
        ("ACK", 16),
        ("URG", 32),
        ("ECE", 64),
        ("CWR", 128),
        ("NS", 256),
    ];
    Ok(BITS.iter().filter(|(name, _)| flags.get(*name) == Some(&json!(true))).map(|(_, b)| b).sum())
}

/// Labels of the MPLS stack sections (70..79), all-zero sections skipped.
fn mpls_labels(ies: &Ies<'_>) -> Result<Vec<u64>, String> {
    let mut labels = Vec::new();
    let names = (1..=10).map(|i| {
        if i == 1 {
            "mplsTopLabelStackSection".to_owned()
        } else {
            format!("mplsLabelStackSection{i}")
        }
    });
    for name in names {
        let Some(section) = ies.first(&name) else {
            continue;
        };
        let bytes: Vec<u64> = section
            .as_array()
            .ok_or(format!("{name} is not a byte array"))?
            .iter()
            .map(|b| b.as_u64().unwrap_or(0))
            .collect();
        if bytes.len() >= 3 && bytes.iter().any(|b| *b != 0) {
            labels.push((bytes[0] << 12) | (bytes[1] << 4) | (bytes[2] >> 4));
        }
    }
    Ok(labels)
}

/// "2023-02-28T09:46:01.088Z" → Unix milliseconds.
pub fn rfc3339_ms(value: &Value) -> Result<u64, String> {
    let text = value.as_str().ok_or(format!("time {value} is not a string"))?;
    let bad = || format!("time {text} is not YYYY-MM-DDTHH:MM:SS[.fff]Z");
    let text_z = text.strip_suffix('Z').ok_or_else(bad)?;
    let (date, clock) = text_z.split_once('T').ok_or_else(bad)?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (year, month, day) = match (d.next(), d.next(), d.next()) {
        (Some(Ok(y)), Some(Ok(m)), Some(Ok(d))) => (y, m, d),
        _ => return Err(bad()),
    };
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (h, mi, s) = match (t.next(), t.next(), t.next()) {
        (Some(Ok(h)), Some(Ok(m)), Some(Ok(s))) => (h, m, s),
        _ => return Err(bad()),
    };
    let millis = if fraction.is_empty() {
        0
    } else {
        let padded = format!("{fraction:0<3}");
        padded[..3].parse::<i64>().map_err(|_| bad())?
    };
    // Days from civil (H. Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = ((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + millis;
    u64::try_from(ms).map_err(|_| bad())
}

/// Compares one expected flow with a `flowpb::json::to_json` object. Addresses are
/// compared as addresses (any textual form).
pub fn compare(expected: &ExpectedFlow, actual: &Value) -> Result<(), String> {
    let actual = actual.as_object().ok_or("actual flow is not an object")?;
    let mut mismatches = Vec::new();
    for (key, want) in &expected.fields {
        let got = actual.get(*key).unwrap_or(&Value::Null);
        if !same(want, got) {
            mismatches.push(format!("{key}: expected {want}, got {got}"));
        }
    }
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "reference line {} record {}: {}",
            expected.line,
            expected.record,
            mismatches.join("; ")
        ))
    }
}

fn same(want: &Value, got: &Value) -> bool {
    match (want.as_str(), got.as_str()) {
        (Some(w), Some(g)) => match (w.parse::<IpAddr>(), g.parse::<IpAddr>()) {
            (Ok(w), Ok(g)) => w == g,
            _ => w == g,
        },
        _ => want == got,
    }
}

/// An expected flow as a JSON object (for messages).
pub fn to_object(expected: &ExpectedFlow) -> Value {
    let map: Map<String, Value> =
        expected.fields.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_milliseconds() {
        assert_eq!(rfc3339_ms(&json!("1970-01-01T00:00:01.5Z")), Ok(1_500));
        assert_eq!(rfc3339_ms(&json!("2023-02-28T09:47:00Z")), Ok(1_677_577_620_000));
    }
}
