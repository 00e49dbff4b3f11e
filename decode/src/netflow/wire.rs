//! The framing we read ourselves before handing bytes to netflow_parser: export
//! headers, the set walk, and a scan of template sets.
//!
//! netflow_parser rejects a whole v9 datagram for one malformed flowset and silently
//! stops an IPFIX message at the first bad set. Walking the sets here lets each set be
//! parsed on its own (a synthetic datagram of the original header plus that one set), so
//! good sets before and after a bad one are kept, and every failure has a set to name.

use crate::event::Protocol;
use crate::report::DecodeError;

pub(crate) const V9_HEADER_LEN: usize = 20;
pub(crate) const IPFIX_HEADER_LEN: usize = 16;
const SET_HEADER_LEN: usize = 4;

/// v9 set ids of template and options template sets.
pub(crate) const V9_TEMPLATE_SET: u16 = 0;
pub(crate) const V9_OPTIONS_TEMPLATE_SET: u16 = 1;
/// IPFIX set ids of template and options template sets (also the "withdraw all" ids).
pub(crate) const IPFIX_TEMPLATE_SET: u16 = 2;
pub(crate) const IPFIX_OPTIONS_TEMPLATE_SET: u16 = 3;
/// The first data set id / template id.
pub(crate) const FIRST_DATA_SET: u16 = 256;

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// The header fields of a v9 or IPFIX export packet that the flows need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExportHeader {
    pub protocol: Protocol,
    pub sequence: u32,
    /// IPFIX observation domain or v9 source id.
    pub domain: u32,
    /// Export time, Unix milliseconds.
    pub export_ms: u64,
    /// v9 only: sysUpTime at export.
    pub sys_uptime_ms: Option<u32>,
}

impl ExportHeader {
    pub fn header_len(&self) -> usize {
        match self.protocol {
            Protocol::Ipfix => IPFIX_HEADER_LEN,
            _ => V9_HEADER_LEN,
        }
    }

    /// Reads a v9 (`version` 9) or IPFIX (`version` 10) header and returns it with the
    /// bytes of the sets that follow it.
    pub fn parse(payload: &[u8], version: u16) -> Result<(Self, &[u8]), DecodeError> {
        match version {
            9 => Self::parse_v9(payload),
            _ => Self::parse_ipfix(payload),
        }
    }

    fn parse_v9(payload: &[u8]) -> Result<(Self, &[u8]), DecodeError> {
        let truncated = DecodeError::TruncatedHeader { protocol: Protocol::V9, len: payload.len() };
        let sets = payload.get(V9_HEADER_LEN..).ok_or(truncated.clone())?;
        let field = |at| u32_at(payload, at).ok_or(truncated.clone());
        let header = Self {
            protocol: Protocol::V9,
            sys_uptime_ms: Some(field(4)?),
            export_ms: u64::from(field(8)?) * 1000,
            sequence: field(12)?,
            domain: field(16)?,
        };
        Ok((header, sets))
    }

    fn parse_ipfix(payload: &[u8]) -> Result<(Self, &[u8]), DecodeError> {
        let len = payload.len();
        let truncated = DecodeError::TruncatedHeader { protocol: Protocol::Ipfix, len };
        if len < IPFIX_HEADER_LEN {
            return Err(truncated);
        }
        let field = |at| u32_at(payload, at).ok_or(truncated.clone());
        let length = usize::from(u16_at(payload, 2).ok_or(truncated.clone())?);
        if length < IPFIX_HEADER_LEN {
            return Err(DecodeError::Malformed {
                protocol: Protocol::Ipfix,
                detail: format!("message length {length} is shorter than the header"),
            });
        }
        let message = payload
            .get(..length)
            .ok_or(DecodeError::LengthPastEnd { protocol: Protocol::Ipfix, length })?;
        let header = Self {
            protocol: Protocol::Ipfix,
            export_ms: u64::from(field(4)?) * 1000,
            sequence: field(8)?,
            domain: field(12)?,
            sys_uptime_ms: None,
        };
        Ok((header, &message[IPFIX_HEADER_LEN..]))
    }
}

/// One set: its id, its bytes with the set header (`whole`) and without (`body`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SetRef<'a> {
    pub id: u16,
    pub whole: &'a [u8],
    pub body: &'a [u8],
}

/// Walks the sets of a message. A set header that cannot be trusted (length below 4 or
/// past the end) ends the walk with an error: the framing of what follows is lost.
/// Trailing bytes too short for a set header are v9 padding and are ignored.
pub(crate) struct SetWalk<'a> {
    protocol: Protocol,
    rest: &'a [u8],
}

impl<'a> SetWalk<'a> {
    pub fn new(protocol: Protocol, sets: &'a [u8]) -> Self {
        Self { protocol, rest: sets }
    }
}

impl<'a> Iterator for SetWalk<'a> {
    type Item = Result<SetRef<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < SET_HEADER_LEN {
            return None;
        }
        let id = u16_at(self.rest, 0)?;
        let length = usize::from(u16_at(self.rest, 2)?);
        let protocol = self.protocol;
        if length < SET_HEADER_LEN {
            self.rest = &[];
            return Some(Err(DecodeError::Malformed {
                protocol,
                detail: format!("set {id} has length {length}, shorter than its header"),
            }));
        }
        let Some(whole) = self.rest.get(..length) else {
            self.rest = &[];
            return Some(Err(DecodeError::LengthPastEnd { protocol, length }));
        };
        self.rest = &self.rest[length..];
        Some(Ok(SetRef { id, whole, body: &whole[SET_HEADER_LEN..] }))
    }
}

/// What a template set declares, read before netflow_parser sees it: the template ids
/// it defines, the IPFIX withdrawals it carries, and the templates it must reject for
/// too many fields (netflow_parser drops those without saying which).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TemplateSetScan {
    pub defined: Vec<u16>,
    pub withdrawn: Vec<u16>,
    pub errors: Vec<DecodeError>,
}

/// Scans a template or options template set (`set_id` 0/1 for v9, 2/3 for IPFIX).
pub(crate) fn scan_template_set(
    protocol: Protocol,
    set_id: u16,
    body: &[u8],
    max_fields: usize,
) -> TemplateSetScan {
    let mut scan = TemplateSetScan::default();
    let mut at = 0;
    while body.len() - at >= 4 {
        let (Some(template_id), Some(count)) = (u16_at(body, at), u16_at(body, at + 2)) else {
            break;
        };
        let declared = match scan_template_record(protocol, set_id, &body[at..]) {
            Ok(record) => record,
            Err(fields) => {
                if fields > max_fields {
                    scan.errors.push(DecodeError::TooManyFields {
                        protocol,
                        template_id,
                        fields,
                        max: max_fields,
                    });
                } else if template_id != 0 || count != 0 {
                    scan.errors.push(DecodeError::BadTemplate {
                        protocol,
                        template_id,
                        detail: format!("{fields} fields run past the end of the set"),
                    });
                }
                break;
            }
        };
        if declared.fields == 0 && protocol == Protocol::Ipfix {
            scan.withdrawn.push(template_id);
        } else if declared.fields > max_fields {
            scan.errors.push(DecodeError::TooManyFields {
                protocol,
                template_id,
                fields: declared.fields,
                max: max_fields,
            });
        } else if template_id >= FIRST_DATA_SET {
            scan.defined.push(template_id);
        } else if template_id != 0 || declared.fields != 0 {
            scan.errors.push(DecodeError::BadTemplate {
                protocol,
                template_id,
                detail: "template ids below 256 are reserved".to_owned(),
            });
        }
        at += declared.len;
    }
    scan
}

/// One template record's declared field count and its length in bytes.
struct TemplateRecord {
    fields: usize,
    len: usize,
}

/// Reads one template record at the start of `data`; `Err(fields)` when its field
/// specifiers run past the end.
fn scan_template_record(
    protocol: Protocol,
    set_id: u16,
    data: &[u8],
) -> Result<TemplateRecord, usize> {
    let count = |at| usize::from(u16_at(data, at).unwrap_or(0));
    match (protocol, set_id) {
        (Protocol::V9, V9_OPTIONS_TEMPLATE_SET) => {
            let fields = (count(2) + count(4)) / 4;
            let len = 6 + count(2) + count(4);
            if data.len() < len {
                return Err(fields);
            }
            Ok(TemplateRecord { fields, len })
        }
        (Protocol::Ipfix, IPFIX_OPTIONS_TEMPLATE_SET) | (Protocol::Ipfix, IPFIX_TEMPLATE_SET) => {
            let fields = count(2);
            let mut at = if set_id == IPFIX_OPTIONS_TEMPLATE_SET && fields > 0 { 6 } else { 4 };
            for _ in 0..fields {
                let id = u16_at(data, at).ok_or(fields)?;
                at += if id & 0x8000 != 0 { 8 } else { 4 };
            }
            if data.len() < at {
                return Err(fields);
            }
            Ok(TemplateRecord { fields, len: at })
        }
        _ => {
            let fields = count(2);
            let len = 4 + fields * 4;
            if data.len() < len {
                return Err(fields);
            }
            Ok(TemplateRecord { fields, len })
        }
    }
}

/// Builds the synthetic datagram for one set into `out`: the original header (IPFIX
/// length rewritten to fit) followed by the set.
pub(crate) fn single_set_datagram(header_bytes: &[u8], set: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(header_bytes);
    out.extend_from_slice(set);
    if header_bytes.len() == IPFIX_HEADER_LEN {
        let length = u16::try_from(out.len()).unwrap_or(u16::MAX);
        out[2..4].copy_from_slice(&length.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_walk_stops_at_a_length_past_the_end() {
        let sets = [1, 0, 0, 8, 0, 0, 0, 0, 1, 1, 0, 9, 0];
        let mut walk = SetWalk::new(Protocol::Ipfix, &sets);
        assert!(matches!(walk.next(), Some(Ok(SetRef { id: 256, .. }))));
        assert!(matches!(walk.next(), Some(Err(DecodeError::LengthPastEnd { length: 9, .. }))));
        assert!(walk.next().is_none());
    }

    #[test]
    fn set_walk_rejects_zero_length_sets() {
        let sets = [1, 0, 0, 0, 0, 0, 0, 0];
        let mut walk = SetWalk::new(Protocol::V9, &sets);
        assert!(matches!(walk.next(), Some(Err(DecodeError::Malformed { .. }))));
        assert!(walk.next().is_none());
    }

    #[test]
    fn scan_finds_withdrawals_and_oversized_templates() {
        // withdraw 300, then template 301 declaring 65535 fields that are not there.
        let body = [1, 44, 0, 0, 1, 45, 255, 255, 0, 8, 0, 4];
        let scan = scan_template_set(Protocol::Ipfix, IPFIX_TEMPLATE_SET, &body, 10_000);
        assert_eq!(scan.withdrawn, vec![300]);
        assert!(scan.defined.is_empty());
        assert!(matches!(
            scan.errors.as_slice(),
            [DecodeError::TooManyFields { template_id: 301, fields: 65535, .. }]
        ));
    }

    #[test]
    fn scan_reads_enterprise_fields_and_options_scope_count() {
        // options template 400: 2 fields, 1 scope; field 1 enterprise (8 bytes).
        let body = [1, 144, 0, 2, 0, 1, 0x80, 1, 0, 4, 0, 0, 0, 9, 0, 34, 0, 4];
        let scan = scan_template_set(Protocol::Ipfix, IPFIX_OPTIONS_TEMPLATE_SET, &body, 100);
        assert_eq!(scan.defined, vec![400]);
        assert!(scan.errors.is_empty());
    }

    #[test]
    fn ipfix_header_rejects_lengths_past_the_payload() {
        let mut payload = [0u8; 20];
        payload[1] = 10;
        payload[3] = 40;
        assert!(matches!(
            ExportHeader::parse(&payload, 10),
            Err(DecodeError::LengthPastEnd { length: 40, .. })
        ));
    }
}
