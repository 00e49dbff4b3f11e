//! The sFlow v5 datagram framing: the datagram header, the sample records it holds,
//! and the fixed part of flow samples (compact and expanded).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::cursor::Cursor;
use super::error::SflowError;

/// The only sFlow version decoded.
pub(crate) const SFLOW_VERSION: u32 = 5;

/// An XDR `address` union: type 0 (unknown) has no body, 1 is IPv4, 2 is IPv6.
pub(crate) fn read_address(
    cur: &mut Cursor<'_>,
    what: &'static str,
) -> Result<Option<IpAddr>, SflowError> {
    match cur.u32(what)? {
        0 => Ok(None),
        1 => Ok(Some(IpAddr::V4(Ipv4Addr::from(cur.array::<4>(what)?)))),
        2 => Ok(Some(IpAddr::V6(Ipv6Addr::from(cur.array::<16>(what)?)))),
        address_type => Err(SflowError::AddressType { what, address_type }),
    }
}

/// The header of a datagram, after the version word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatagramHeader {
    /// The agent address; `None` when the datagram said "unknown" (type 0).
    pub agent: Option<IpAddr>,
    pub sub_agent_id: u32,
    pub sequence: u32,
    /// Milliseconds since the agent booted.
    pub uptime_ms: u32,
    /// Samples the datagram declares (untrusted).
    pub sample_count: u32,
}

impl DatagramHeader {
    /// Reads the header that follows the version word.
    pub(crate) fn read(cur: &mut Cursor<'_>) -> Result<Self, SflowError> {
        Ok(DatagramHeader {
            agent: read_address(cur, "agent address")?,
            sub_agent_id: cur.u32("sub-agent id")?,
            sequence: cur.u32("datagram sequence number")?,
            uptime_ms: cur.u32("uptime")?,
            sample_count: cur.u32("sample count")?,
        })
    }
}

/// A sample or record type: enterprise (top 20 bits) and format (low 12 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DataFormat {
    pub enterprise: u32,
    pub format: u32,
}

impl DataFormat {
    pub(crate) fn from_word(word: u32) -> Self {
        DataFormat { enterprise: word >> 12, format: word & 0x0FFF }
    }

    /// A standard (sFlow.org, enterprise 0) type.
    pub(crate) const fn standard(format: u32) -> Self {
        DataFormat { enterprise: 0, format }
    }
}

/// Reads one length-prefixed element (sample or record): its type and its body.
pub(crate) fn read_element<'a>(
    cur: &mut Cursor<'a>,
    what: &'static str,
) -> Result<(DataFormat, &'a [u8]), SflowError> {
    let format = DataFormat::from_word(cur.u32(what)?);
    let body = cur.opaque(what)?;
    Ok((format, body))
}

/// Sample types of the sFlow v5 specification.
pub(crate) const FLOW_SAMPLE: DataFormat = DataFormat::standard(1);
pub(crate) const COUNTER_SAMPLE: DataFormat = DataFormat::standard(2);
pub(crate) const EXPANDED_FLOW_SAMPLE: DataFormat = DataFormat::standard(3);
pub(crate) const EXPANDED_COUNTER_SAMPLE: DataFormat = DataFormat::standard(4);

/// The value that marks "the device itself" in an interface field (ifIndex format).
const INTERNAL_INTERFACE: u32 = 0x3FFF_FFFF;

/// An input or output interface of a flow sample, with its format decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interface {
    /// Format 0: this ifIndex (0 = unknown).
    Index(u32),
    /// Format 0 with value 0x3FFFFFFF: the packet came from, or went to, the device
    /// itself.
    Internal,
    /// Format 1: the packet was discarded, with this reason code.
    Discarded(u32),
    /// Format 2: sent to this many interfaces (0 = an unknown number above 1).
    Multiple(u32),
    /// Format 3, not defined by the specification.
    Unknown(u32),
}

impl Interface {
    /// The compact form: the top 2 bits are the format, the low 30 the value.
    pub(crate) fn from_compact(word: u32) -> Self {
        Self::from_parts(word >> 30, word & 0x3FFF_FFFF)
    }

    /// The expanded form's separate format and value words.
    pub(crate) fn from_parts(format: u32, value: u32) -> Self {
        match format {
            0 if value == INTERNAL_INTERFACE || value == u32::MAX => Interface::Internal,
            0 => Interface::Index(value),
            1 => Interface::Discarded(value),
            2 => Interface::Multiple(value),
            _ => Interface::Unknown(value),
        }
    }

    /// The ifIndex to report: a real interface's index, 0 for everything else.
    pub(crate) fn if_index(self) -> u32 {
        match self {
            Interface::Index(index) => index,
            _ => 0,
        }
    }
}

/// The fixed part of a flow sample, compact or expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlowSampleHeader {
    pub sampling_rate: u32,
    pub input: Interface,
    pub output: Interface,
}

impl FlowSampleHeader {
    /// Format 1: sequence, source id, rate, pool, drops, input, output (7 words).
    pub(crate) fn read_compact(cur: &mut Cursor<'_>) -> Result<Self, SflowError> {
        cur.skip(8, "flow sample sequence and source id")?;
        let sampling_rate = cur.u32("flow sample sampling rate")?;
        cur.skip(8, "flow sample pool and drops")?;
        let input = Interface::from_compact(cur.u32("flow sample input interface")?);
        let output = Interface::from_compact(cur.u32("flow sample output interface")?);
        Ok(FlowSampleHeader { sampling_rate, input, output })
    }

    /// Format 3: sequence, source type and index, rate, pool, drops, then input and
    /// output as (format, value) pairs (11 words).
    pub(crate) fn read_expanded(cur: &mut Cursor<'_>) -> Result<Self, SflowError> {
        cur.skip(12, "expanded flow sample sequence and source id")?;
        let sampling_rate = cur.u32("expanded flow sample sampling rate")?;
        cur.skip(8, "expanded flow sample pool and drops")?;
        let input_format = cur.u32("expanded flow sample input format")?;
        let input_value = cur.u32("expanded flow sample input value")?;
        let output_format = cur.u32("expanded flow sample output format")?;
        let output_value = cur.u32("expanded flow sample output value")?;
        Ok(FlowSampleHeader {
            sampling_rate,
            input: Interface::from_parts(input_format, input_value),
            output: Interface::from_parts(output_format, output_value),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_interface_formats() {
        assert_eq!(Interface::from_compact(7), Interface::Index(7));
        assert_eq!(Interface::from_compact(0x3FFF_FFFF), Interface::Internal);
        assert_eq!(Interface::from_compact(0x4000_0102), Interface::Discarded(0x102));
        assert_eq!(Interface::from_compact(0x8000_0003), Interface::Multiple(3));
        assert_eq!(Interface::from_compact(0xC000_0001), Interface::Unknown(1));
        assert_eq!(Interface::from_compact(0x8000_0003).if_index(), 0);
    }

    #[test]
    fn data_format_splits_enterprise_and_format() {
        let f = DataFormat::from_word((4413 << 12) | 5);
        assert_eq!(f, DataFormat { enterprise: 4413, format: 5 });
        assert_eq!(DataFormat::from_word(3), EXPANDED_FLOW_SAMPLE);
    }

    #[test]
    fn address_types() {
        let mut cur = Cursor::new(&[0, 0, 0, 1, 10, 0, 0, 1]);
        assert_eq!(read_address(&mut cur, "a"), Ok(Some(IpAddr::from([10, 0, 0, 1]))));
        let mut cur = Cursor::new(&[0, 0, 0, 0]);
        assert_eq!(read_address(&mut cur, "a"), Ok(None));
        let mut cur = Cursor::new(&[0, 0, 0, 9, 1, 2, 3, 4]);
        assert_eq!(
            read_address(&mut cur, "a"),
            Err(SflowError::AddressType { what: "a", address_type: 9 })
        );
        let mut cur = Cursor::new(&[0, 0, 0, 2, 1, 2, 3, 4]);
        assert!(matches!(read_address(&mut cur, "a"), Err(SflowError::Truncated { .. })));
    }
}
