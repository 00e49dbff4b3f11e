//! The proof behind decoding records with our compiled [`Layout`]s instead of
//! netflow_parser: on every data record and IPFIX options record of every shared
//! router capture, the layout splits out exactly the field values netflow_parser
//! decodes (as wire bytes, which is what [`super::fields::FlowFields`] and the options
//! reader map), record for record. The mapping after that is the same code either
//! way, so the flows are identical.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use flow_replay::generate::flow::Rng;
use netflow_parser::variable_versions::{ipfix, v9};
use netflow_parser::{FieldValue, NetflowPacket, NetflowParser};

use super::fields::VARIABLE_LENGTH;
use super::scope::accepted_layouts;
use super::templates::{Layout, TemplateKind};
use super::wire::{ExportHeader, SetWalk};

/// One record: each field's value as wire bytes, in template order.
type Values = Vec<Vec<u8>>;

fn wire_bytes<'v>(values: impl Iterator<Item = &'v FieldValue>) -> Values {
    values
        .map(|value| {
            let mut bytes = Vec::new();
            value.write_be_bytes(&mut bytes).expect("netflow_parser writes its own value");
            bytes
        })
        .collect()
}

/// The records netflow_parser decoded from each set of one export packet, in set
/// order (`None` for a set that is not data), and the templates it accepted.
fn parser_view(packets: &[NetflowPacket]) -> Vec<Option<Vec<Values>>> {
    let mut sets = Vec::new();
    for packet in packets {
        match packet {
            NetflowPacket::V9(packet) => {
                sets.extend(packet.flowsets.iter().map(|set| match &set.body {
                    v9::FlowSetBody::Data(data) => Some(
                        data.fields.iter().map(|r| wire_bytes(r.iter().map(|(_, v)| v))).collect(),
                    ),
                    _ => None,
                }))
            }
            NetflowPacket::IPFix(packet) => {
                sets.extend(packet.flowsets.iter().map(|set| match &set.body {
                    ipfix::FlowSetBody::Data(data) => Some(
                        data.fields.iter().map(|r| wire_bytes(r.iter().map(|(_, v)| v))).collect(),
                    ),
                    ipfix::FlowSetBody::OptionsData(data) => Some(
                        data.fields.iter().map(|r| wire_bytes(r.iter().map(|(_, v)| v))).collect(),
                    ),
                    _ => None,
                }))
            }
            _ => {}
        }
    }
    sets
}

/// The records our layout splits out of a data set body.
fn layout_view(layout: &Layout, body: &[u8]) -> Vec<Values> {
    let mut records = Vec::new();
    let mut rest = body;
    while let Some(len) = layout.record_len(rest).filter(|len| *len > 0) {
        let mut values = Vec::new();
        layout.for_each_field(&rest[..len], |_, value| values.push(value.to_vec()));
        records.push(values);
        rest = &rest[len..];
    }
    records
}

/// Figures of one comparison.
#[derive(Debug, Default)]
struct Compared {
    records: usize,
    /// Records after an empty variable-length value, which netflow_parser stops at.
    past_parser: usize,
    /// Values netflow_parser normalized (bits or codes it does not know dropped).
    normalized: usize,
    /// IPFIX options records among them (v9 options stay with netflow_parser).
    options: usize,
}

/// (enterprise, id) of the elements netflow_parser decodes into typed flags or codes
/// and writes back without the bits or codes it does not know (protocolIdentifier,
/// tcpControlBits, forwardingStatus, fragmentFlags, firewallEvent, ...). The layout
/// keeps what the exporter sent; real exports only carry values both agree on.
const NORMALIZED_BY_PARSER: [(u32, u16); 13] = [
    (0, 4),
    (0, 6),
    (0, 46),
    (0, 64),
    (0, 89),
    (0, 136),
    (0, 197),
    (0, 203),
    (0, 206),
    (0, 208),
    (0, 209),
    (0, 229),
    (0, 233),
];

/// Compares every data set of `payload` both ways; `None` when netflow_parser refused
/// the packet (nothing to compare with).
fn compare_packet(
    parser: &mut NetflowParser,
    layouts: &mut HashMap<u16, Layout>,
    payload: &[u8],
    at: &str,
    mutated: bool,
) -> Option<Compared> {
    let version = payload.get(..2).map(|v| u16::from_be_bytes([v[0], v[1]]))?;
    let (header, sets) = ExportHeader::parse(payload, version).ok()?;
    let walked: Vec<_> = SetWalk::new(header.protocol, sets).collect::<Result<_, _>>().ok()?;
    let result = parser.parse_bytes(payload);
    if result.error.is_some() {
        return None;
    }
    layouts.extend(accepted_layouts(&result.packets));
    let parsed = parser_view(&result.packets);
    assert_eq!(walked.len(), parsed.len(), "{at}: sets");
    let mut compared = Compared::default();
    for (set, expected) in walked.iter().zip(parsed) {
        let Some(expected) = expected else {
            continue;
        };
        let layout = &layouts[&set.id];
        if layout.kind == TemplateKind::Options {
            compared.options += expected.len();
        }
        let ours = layout_view(layout, set.body);
        assert!(ours.len() >= expected.len(), "{at}: set {}: records lost", set.id);
        let shared = expected.len();
        for (index, (our, their)) in ours.iter().zip(&expected).enumerate() {
            for ((value, parsed), field) in our.iter().zip(their).zip(&layout.fields) {
                if value != parsed {
                    assert!(
                        mutated && NORMALIZED_BY_PARSER.contains(&(field.enterprise, field.id)),
                        "{at}: set {} record {index} field {field:?}: {value:?} vs {parsed:?}",
                        set.id
                    );
                    compared.normalized += 1;
                }
            }
            assert_eq!(our.len(), their.len(), "{at}: set {} record {index}", set.id);
        }
        if let Some(cut) = ours.get(shared) {
            // netflow_parser stops a set at an empty variable-length value (RFC 7011 §7
            // allows them); the decoder always finished such a set with the layout, as
            // it now decodes every record.
            let empty_variable = cut
                .iter()
                .zip(&layout.fields)
                .any(|(value, field)| field.length == VARIABLE_LENGTH && value.is_empty());
            assert!(empty_variable, "{at}: set {}: netflow_parser stopped at {shared}", set.id);
            compared.past_parser += ours.len() - shared;
        }
        compared.records += ours.len();
    }
    Some(compared)
}

/// `payload` with `flips` random bytes of its data set bodies changed (template sets
/// and set headers kept, so the parser's state is not touched).
fn mutate_data_sets(payload: &[u8], rng: &mut Rng, flips: usize) -> Vec<u8> {
    let mut out = payload.to_vec();
    let version = u16::from_be_bytes([payload[0], payload[1]]);
    let Ok((header, sets)) = ExportHeader::parse(payload, version) else {
        return out;
    };
    let offset = payload.len() - sets.len();
    let mut positions = Vec::new();
    let mut at = offset;
    for set in SetWalk::new(header.protocol, sets).map_while(Result::ok) {
        if set.id >= 256 {
            positions.extend(at + 4..at + set.whole.len());
        }
        at += set.whole.len();
    }
    for _ in 0..flips.min(positions.len()) {
        let position = rng.pick(&positions);
        out[position] = rng.next_u64() as u8;
    }
    out
}

#[test]
fn compiled_layouts_split_every_capture_record_as_netflow_parser_does() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps");
    let (mut total, mut mutated, mut normalized) = (Compared::default(), 0usize, 0usize);
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let captures = flow_replay::capture_files(&dir).unwrap_or_else(|e| panic!("{e}"));
    for path in captures {
        let capture = flow_replay::read_file(&path).unwrap_or_else(|e| panic!("{e}"));
        // One parser per exporter socket, as netflow_parser's own cache sees it.
        let mut exporters: HashMap<SocketAddr, (NetflowParser, HashMap<u16, Layout>)> =
            HashMap::new();
        let mut records = 0;
        for (index, datagram) in capture.datagrams.iter().enumerate() {
            let (parser, layouts) = exporters.entry(datagram.source).or_insert_with(|| {
                let parser = NetflowParser::builder()
                    .with_cache_size(2000)
                    .with_max_records_per_flowset(65_536)
                    .build()
                    .expect("parser settings");
                (parser, HashMap::new())
            });
            let at = format!("{} datagram {index}", path.display());
            let Some(compared) = compare_packet(parser, layouts, &datagram.payload, &at, false)
            else {
                continue;
            };
            records += compared.records;
            total.past_parser += compared.past_parser;
            total.options += compared.options;
            // The same packet with its data records' bytes changed: other values and,
            // for variable-length fields, other lengths.
            for round in 0..20 {
                let variant = mutate_data_sets(&datagram.payload, &mut rng, 1 + round % 8);
                let at = format!("{at} variant {round}");
                if let Some(compared) = compare_packet(parser, layouts, &variant, &at, true) {
                    mutated += compared.records;
                    normalized += compared.normalized;
                }
            }
        }
        assert!(records > 0, "{}: no data record compared", path.display());
        total.records += records;
    }
    println!(
        "{} capture records split identically ({} of them IPFIX options records, {} past an \
         empty variable-length value netflow_parser stops at); {mutated} records of mutated \
         variants, {normalized} values of which netflow_parser normalized",
        total.records, total.options, total.past_parser
    );
    assert!(total.options > 0, "no IPFIX options record in the captures compared");
}
