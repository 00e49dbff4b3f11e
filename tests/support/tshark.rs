//! tshark as an independent NetFlow/IPFIX decoder: runs `tshark -T json` on a capture,
//! turns each flow record into the collector's JSON fields it implies, and compares a
//! collector flow against them.
//!
//! Times tshark shows relative to sysUpTime are made absolute the documented way: from
//! the v5/v9 header (export time − (uptime − value), modulo 2^32 ms) or, for IPFIX, from
//! systemInitTimeMilliseconds in the exporter's options data.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

/// Collector time fields may differ from tshark's by this much (rounding of the
/// exporter's millisecond fields).
pub const TIME_TOLERANCE_NS: u64 = 1_000_000;

/// What one collector field must hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Exactly this JSON value.
    Exact(Value),
    /// Unix nanoseconds, within [`TIME_TOLERANCE_NS`].
    TimeNs(u64),
    /// Any of these values.
    AnyOf(Vec<Value>),
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Exact(v) => write!(f, "{v}"),
            Expect::TimeNs(ns) => write!(f, "{ns} ±1ms"),
            Expect::AnyOf(vs) => {
                let list: Vec<String> = vs.iter().map(Value::to_string).collect();
                write!(f, "one of [{}]", list.join(", "))
            }
        }
    }
}

/// One flow record as tshark decoded it: collector field → expected value.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// Frame number in the capture (1-based), for messages.
    pub frame: u64,
    /// The expected collector fields.
    pub fields: BTreeMap<&'static str, Expect>,
}

/// How to read records whose fields repeat.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// RFC 5103 biflows: a repeated octets/packets field is (forward, reverse).
    pub biflow: bool,
}

/// Exporter state tshark's output needs to make records absolute.
#[derive(Debug, Default, Clone)]
struct ExporterState {
    sys_init_ns: Option<u64>,
    /// Sampling rates announced in options data, by the sampler they are scoped to.
    sampling: HashMap<SamplerKey, u64>,
}

/// What an options record's sampling rate is scoped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SamplerKey {
    /// selectorId (PSAMP).
    Selector(u64),
    /// samplerId / FLOW_SAMPLER_ID.
    Sampler(u64),
    /// No sampler named: the whole exporter and domain.
    Domain,
}

impl ExporterState {
    /// The rate in force for a flow record: its own sampling fields, else the options
    /// rate of the selector or sampler it names, else the domain-wide one.
    fn rate_for(&self, record: &Value) -> Option<u64> {
        if let Some(rate) = options_rate(record) {
            return Some(rate);
        }
        let selector = number(&record["cflow.selector_id"]).map(SamplerKey::Selector);
        let sampler = number(&record["cflow.sampler_id"]).map(SamplerKey::Sampler);
        let lookup = |key: SamplerKey| self.sampling.get(&key).copied();
        selector
            .and_then(lookup)
            .or_else(|| sampler.and_then(lookup))
            .or_else(|| lookup(SamplerKey::Domain))
    }
}

/// The header fields of one export packet that records inherit.
#[derive(Debug, Clone, Copy, Default)]
struct Header {
    version: u64,
    sequence: u64,
    domain: u64,
    /// Export time, Unix ns (v5 with nanoseconds, v9/IPFIX whole seconds).
    export_ns: u64,
    /// sysUpTime in ms (v5/v9).
    uptime_ms: Option<u64>,
    /// v5 header sampling interval.
    v5_sampling: Option<u64>,
}

/// Decodes the capture at `pcap` with tshark, treating UDP `port` as cflow.
pub fn decode(pcap: &Path, port: u16, options: Options) -> Vec<Record> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-d", &format!("udp.port=={port},cflow"), "-T", "json", "--no-duplicate-keys"])
        .env("TZ", "UTC")
        .output()
        .unwrap_or_else(|e| panic!("tshark: {e}"));
    assert!(out.status.success(), "tshark failed: {}", String::from_utf8_lossy(&out.stderr));
    let packets: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("tshark JSON for {}: {e}", pcap.display()));
    let mut states: HashMap<(String, u64), ExporterState> = HashMap::new();
    let mut records = Vec::new();
    for packet in packets.as_array().map(Vec::as_slice).unwrap_or_default() {
        let layers = &packet["_source"]["layers"];
        let cflow = &layers["cflow"];
        if !cflow.is_object() {
            continue;
        }
        let frame = number(&layers["frame"]["frame.number"]).unwrap_or(0);
        let source = format!(
            "{}{}:{}",
            text(&layers["ip"]["ip.src"]).unwrap_or_default(),
            text(&layers["ipv6"]["ipv6.src"]).unwrap_or_default(),
            text(&layers["udp"]["udp.srcport"]).unwrap_or_default()
        );
        let header = header(cflow);
        let state = states.entry((source, header.domain)).or_default();
        for record in record_objects(cflow) {
            learn_options(record, state);
            if is_flow(record) {
                let fields = expected_fields(record, &header, state, options);
                records.push(Record { frame, fields });
            }
        }
    }
    records
}

/// The header fields of one cflow PDU.
fn header(cflow: &Value) -> Header {
    let secs = number(&cflow["cflow.timestamp_tree"]["cflow.unix_secs"]).unwrap_or(0);
    let nsecs = number(&cflow["cflow.timestamp_tree"]["cflow.unix_nsecs"]).unwrap_or(0);
    let version = number(&cflow["cflow.version"]).unwrap_or(0);
    Header {
        version,
        sequence: number(&cflow["cflow.sequence"]).unwrap_or(0),
        domain: number(&cflow["cflow.od_id"])
            .or_else(|| number(&cflow["cflow.source_id"]))
            .unwrap_or(0),
        export_ns: secs * 1_000_000_000 + nsecs,
        uptime_ms: text(&cflow["cflow.sysuptime"]).and_then(duration_ns).map(|ns| ns / 1_000_000),
        v5_sampling: (version == 5).then(|| number(&cflow["cflow.samplerate"]).unwrap_or(0)),
    }
}

/// The record objects of a PDU in wire order: v5 `pdu i/n` objects, or `Flow i` inside
/// each `Set i` / `FlowSet i` (tshark's JSON object keys come back sorted as text).
fn record_objects(cflow: &Value) -> Vec<&Value> {
    let mut out: Vec<((u64, u64), &Value)> = Vec::new();
    for (key, value) in cflow.as_object().into_iter().flatten() {
        if key.starts_with("pdu ") {
            out.push(((ordinal(key), 0), value));
        } else if key.starts_with("FlowSet ") || key.starts_with("Set ") {
            let set = ordinal(key);
            for (inner, record) in value.as_object().into_iter().flatten() {
                if inner.starts_with("Flow ") {
                    out.push(((set, ordinal(inner)), record));
                }
            }
        }
    }
    out.sort_by_key(|(order, _)| *order);
    out.into_iter().map(|(_, record)| record).filter(|r| r.is_object()).collect()
}

/// The number after the first space of a tshark subtree name ("Set 12 [id=2]" → 12).
fn ordinal(key: &str) -> u64 {
    let digits = key.split_once(' ').map_or("", |(_, rest)| rest);
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().unwrap_or(0)
}

/// Remembers what options data says about the exporter.
fn learn_options(record: &Value, state: &mut ExporterState) {
    if let Some(ns) = text(&record["cflow.sys_init_time"]).and_then(absolute_time_ns) {
        state.sys_init_ns = Some(ns);
    }
    if let Some(rate) = options_rate(record) {
        let key = match (number(&record["cflow.selector_id"]), number(&record["cflow.sampler_id"]))
        {
            (Some(id), _) => SamplerKey::Selector(id),
            (None, Some(id)) => SamplerKey::Sampler(id),
            (None, None) => SamplerKey::Domain,
        };
        state.sampling.insert(key, rate);
    }
}

/// The rate an options record's sampling fields give, by selectorAlgorithm when given
/// (RFC 5475/5477): count-based needs both packet interval and space, random
/// n-out-of-N needs size and population; a lone packet interval (as Cisco IOS-XR sends
/// with algorithm 3) gives no rate. Without an algorithm: n-out-of-N, count-based,
/// then the v9 samplingInterval. The same rule as `decode/tests/support/reference.rs`.
fn options_rate(record: &Value) -> Option<u64> {
    let positive = |key: &str| number(&record[key]).filter(|n| *n > 0);
    let n_out_of_n = match (positive("cflow.sampling_size"), positive("cflow.sampling_population"))
    {
        (Some(size), Some(population)) => Some((population / size).max(1)),
        _ => None,
    };
    let space = number(&record["cflow.sampling_packet_space"]);
    let count_based = match (positive("cflow.sampling_packet_interval"), space) {
        (Some(interval), Some(space)) => Some((interval + space) / interval),
        _ => None,
    };
    let interval = positive("cflow.sampling_interval");
    match number(&record["cflow.selector_algorithm"]) {
        Some(1) => count_based.or(interval),
        Some(3) => n_out_of_n.or(interval),
        _ => n_out_of_n.or(count_based).or(interval),
    }
}

/// Whether a record describes traffic (options records carry no addresses).
fn is_flow(record: &Value) -> bool {
    ["cflow.srcaddr", "cflow.srcaddrv6", "cflow.dstaddr", "cflow.dstaddrv6"]
        .iter()
        .any(|k| record.get(*k).is_some())
}

/// The collector fields implied by one tshark flow record.
fn expected_fields(
    record: &Value,
    header: &Header,
    state: &ExporterState,
    options: Options,
) -> BTreeMap<&'static str, Expect> {
    let mut f = BTreeMap::new();
    let flow_type = match header.version {
        5 => "NETFLOW_V5",
        9 => "NETFLOW_V9",
        _ => "IPFIX",
    };
    f.insert("type", Expect::Exact(json!(flow_type)));
    f.insert("sequence_num", Expect::Exact(json!(header.sequence)));
    if header.version != 5 {
        f.insert("observation_domain_id", Expect::Exact(json!(header.domain)));
    }
    let addresses = [
        ("src_addr", "cflow.srcaddr", "cflow.srcaddrv6"),
        ("dst_addr", "cflow.dstaddr", "cflow.dstaddrv6"),
        ("next_hop", "cflow.nexthop", "cflow.nexthopv6"),
        ("bgp_next_hop", "cflow.bgpnexthop", "cflow.bgpnexthopv6"),
    ];
    let version = number(&record["cflow.ip_version"]);
    for (field, v4, v6) in addresses {
        // A record with both families (tunnels, SRv6) says which is the flow's through
        // ipVersion; without it the choice is the decoder's and is not checked here.
        let addr = match (text(&record[v4]), text(&record[v6]), version) {
            (Some(a), None, _) | (None, Some(a), _) => Some(a),
            (Some(a), Some(_), Some(4)) | (Some(_), Some(a), Some(6)) => Some(a),
            _ => None,
        };
        if let Some(addr) = addr {
            f.insert(field, address(field, addr));
        }
    }
    let numbers = [
        ("src_port", "cflow.srcport"),
        ("dst_port", "cflow.dstport"),
        ("proto", "cflow.protocol"),
        ("ip_tos", "cflow.tos"),
        ("tcp_flags", "cflow.tcpflags"),
        ("in_if", "cflow.inputint"),
        ("out_if", "cflow.outputint"),
        ("src_as", "cflow.srcas"),
        ("dst_as", "cflow.dstas"),
        ("src_net", "cflow.srcmask"),
        ("src_net", "cflow.srcmaskv6"),
        ("dst_net", "cflow.dstmask"),
        ("dst_net", "cflow.dstmaskv6"),
        ("ipv6_flow_label", "cflow.ipv6flowlabel"),
        ("icmp_type", "cflow.icmp_ipv6_type"),
        ("icmp_code", "cflow.icmp_ipv6_code"),
    ];
    for (field, key) in numbers {
        if let Some(n) = forward_number(&record[key], options) {
            f.insert(field, Expect::Exact(json!(n)));
        }
    }
    if let Some(type_code) = number(&record["cflow.icmp_type_code_ipv4"]) {
        f.insert("icmp_type", Expect::Exact(json!(type_code >> 8)));
        f.insert("icmp_code", Expect::Exact(json!(type_code & 0xFF)));
    }
    if let Some(version) = version {
        let etype = if version == 6 { 0x86DD } else { 0x0800 };
        f.insert("etype", Expect::Exact(json!(etype)));
    }
    counters(record, options, &mut f);
    times(record, header, state, &mut f);
    sampling(header, state.rate_for(record), &mut f);
    f
}

/// Octets and packets; with biflows the repeated values are (forward, reverse).
fn counters(record: &Value, options: Options, f: &mut BTreeMap<&'static str, Expect>) {
    let pairs = [
        ("cflow.octets", "bytes", "bytes_out", "bytes_in"),
        ("cflow.packets", "packets", "packets_out", "packets_in"),
    ];
    for (key, total, forward, reverse) in pairs {
        let values = numbers(&record[key]);
        match (values.as_slice(), options.biflow) {
            ([one], _) => {
                f.insert(total, Expect::Exact(json!(one)));
            }
            ([fwd, rev], true) => {
                // The flow's total: the forward count as exported, or both directions.
                let both = Expect::AnyOf(vec![json!(fwd), json!(fwd + rev)]);
                f.insert(total, both);
                f.insert(forward, Expect::Exact(json!(fwd)));
                f.insert(reverse, Expect::Exact(json!(rev)));
            }
            _ => {}
        }
    }
}

/// Flow start and end, made absolute.
fn times(
    record: &Value,
    header: &Header,
    state: &ExporterState,
    f: &mut BTreeMap<&'static str, Expect>,
) {
    let tree = &record["cflow.timedelta_tree"];
    let pairs = [
        ("time_flow_start_ns", "cflow.abstimestart", "cflow.timestart"),
        ("time_flow_end_ns", "cflow.abstimeend", "cflow.timeend"),
    ];
    for (field, absolute, relative) in pairs {
        // tshark shows a sysUpTime of 0 as the absolute time 0 (1970-01-01).
        let ns = match text(&tree[absolute]).and_then(absolute_time_ns) {
            Some(0) => from_uptime(0, header, state),
            Some(ns) => Some(ns),
            None => text(&tree[relative])
                .and_then(duration_ns)
                .and_then(|uptime_ns| from_uptime(uptime_ns, header, state)),
        };
        if let Some(ns) = ns {
            f.insert(field, Expect::TimeNs(ns));
        }
    }
}

/// A sysUpTime-relative time as Unix ns.
fn from_uptime(value_ns: u64, header: &Header, state: &ExporterState) -> Option<u64> {
    match header.uptime_ms {
        Some(uptime_ms) => {
            let value_ms = value_ns / 1_000_000;
            let ago_ms = uptime_ms.wrapping_sub(value_ms) & 0xFFFF_FFFF;
            header.export_ns.checked_sub(ago_ms * 1_000_000)
        }
        None => state.sys_init_ns.map(|init| init + value_ns),
    }
}

/// The sampling rate in force: v5 header, else what options data announced for the
/// record's sampler (0, "unknown", when nothing did).
fn sampling(header: &Header, options_rate: Option<u64>, f: &mut BTreeMap<&'static str, Expect>) {
    let expect = match header.v5_sampling {
        // An unsampled v5 export says 0 in its header: 1-in-1, or "unknown".
        Some(0) => Expect::AnyOf(vec![json!(0), json!(1)]),
        Some(rate) => Expect::Exact(json!(rate)),
        None => Expect::Exact(json!(options_rate.unwrap_or(0))),
    };
    f.insert("sampling_rate", expect);
}

/// An address expectation; an all-zero next hop may also be left empty.
fn address(field: &str, addr: &str) -> Expect {
    let unspecified = addr == "0.0.0.0" || addr == "::";
    if unspecified && field.contains("next_hop") {
        Expect::AnyOf(vec![json!(addr), json!("")])
    } else {
        Expect::Exact(json!(addr))
    }
}

/// Compares a collector flow with a tshark record; one message per differing field.
pub fn compare(expected: &Record, got: &Value) -> Vec<String> {
    let mut diffs = Vec::new();
    for (field, want) in &expected.fields {
        let have = got.get(*field).unwrap_or(&Value::Null);
        let ok = match want {
            Expect::Exact(v) => v == have,
            Expect::AnyOf(vs) => vs.contains(have),
            Expect::TimeNs(ns) => {
                have.as_u64().is_some_and(|h| h.abs_diff(*ns) <= TIME_TOLERANCE_NS)
            }
        };
        if !ok {
            diffs.push(format!("{field}: expected {want}, got {have}"));
        }
    }
    diffs
}

/// Pairs each record with the unused collector flow that differs least from it, and
/// describes every difference (and every record or flow left over).
pub fn match_all(records: &[Record], flows: &[Value]) -> Vec<String> {
    let mut used = vec![false; flows.len()];
    let mut problems = Vec::new();
    for record in records {
        let best = flows
            .iter()
            .enumerate()
            .filter(|(i, _)| !used[*i])
            .map(|(i, flow)| (i, compare(record, flow)))
            .min_by_key(|(_, diffs)| diffs.len());
        match best {
            Some((i, diffs)) => {
                used[i] = true;
                if !diffs.is_empty() {
                    let key = describe(record);
                    problems.push(format!("frame {} {key}: {}", record.frame, diffs.join("; ")));
                }
            }
            None => problems.push(format!(
                "frame {} {}: no flow in the output",
                record.frame,
                describe(record)
            )),
        }
    }
    let extra = used.iter().filter(|u| !**u).count();
    if extra > 0 {
        problems.push(format!("{extra} flow(s) in the output that tshark did not decode"));
    }
    problems
}

/// A short name for a record: its addresses, ports and protocol.
fn describe(record: &Record) -> String {
    let get = |k: &str| {
        let shown = record.fields.get(k).map(ToString::to_string).unwrap_or_default();
        shown.trim_matches('"').to_string()
    };
    format!(
        "{}:{} -> {}:{} proto {}",
        get("src_addr"),
        get("src_port"),
        get("dst_addr"),
        get("dst_port"),
        get("proto")
    )
}

/// A field that occurs once, as text.
fn text(v: &Value) -> Option<&str> {
    v.as_str()
}

/// A numeric field that occurs once (decimal or 0x-hex text).
fn number(v: &Value) -> Option<u64> {
    v.as_str().and_then(parse_number)
}

/// A numeric field's forward value: the only one, or with biflows the first of two.
fn forward_number(v: &Value, options: Options) -> Option<u64> {
    match numbers(v).as_slice() {
        [one] if !v.is_array() => Some(*one),
        [forward, _] if options.biflow => Some(*forward),
        _ => None,
    }
}

/// Every occurrence of a numeric field.
fn numbers(v: &Value) -> Vec<u64> {
    match v {
        Value::String(s) => parse_number(s).into_iter().collect(),
        Value::Array(items) => {
            items.iter().filter_map(|i| i.as_str().and_then(parse_number)).collect()
        }
        _ => Vec::new(),
    }
}

fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// "SECONDS.NANOS" (tshark's relative times) as nanoseconds.
fn duration_ns(s: &str) -> Option<u64> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let frac = format!("{frac:0<9}");
    Some(secs.parse::<u64>().ok()? * 1_000_000_000 + frac.get(..9)?.parse::<u64>().ok()?)
}

/// tshark's absolute time, "Mar  1, 2024 10:00:00.070000000 UTC", as Unix nanoseconds.
pub fn absolute_time_ns(s: &str) -> Option<u64> {
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let mut parts = s.split_whitespace();
    let name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == name)? as u64 + 1;
    let day: u64 = parts.next()?.trim_end_matches(',').parse().ok()?;
    let year: i64 = parts.next()?.parse().ok()?;
    let clock = parts.next()?;
    if parts.next() != Some("UTC") {
        return None;
    }
    let mut hms = clock.splitn(3, ':');
    let hours: u64 = hms.next()?.parse().ok()?;
    let minutes: u64 = hms.next()?.parse().ok()?;
    let seconds_ns = duration_ns(hms.next()?)?;
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some((days * 86_400 + hours * 3_600 + minutes * 60) * 1_000_000_000 + seconds_ns)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u64, day: u64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let m = i64::try_from(month).unwrap_or(1);
    let d = i64::try_from(day).unwrap_or(1);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
