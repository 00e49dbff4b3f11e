//! Why part of an sFlow datagram could not be decoded. Each error becomes one counted
//! [`DecodeError`] with `Protocol::Sflow`.

use thiserror::Error;

use crate::event::Protocol;
use crate::report::DecodeError;

/// A structural problem in an sFlow datagram, sample or record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SflowError {
    /// A fixed-size field runs past the end of its enclosing structure.
    #[error("{what} is cut off: {needed} bytes needed, {available} left")]
    Truncated { what: &'static str, needed: usize, available: usize },
    /// A declared length runs past the end of its enclosing structure.
    #[error("{what} length {length} runs past the end of its enclosing structure")]
    LengthPastEnd { what: &'static str, length: u32 },
    /// An address whose type is neither unknown (0), IPv4 (1) nor IPv6 (2): its length
    /// is unknown, so nothing after it can be found.
    #[error("{what} has unknown address type {address_type}")]
    AddressType { what: &'static str, address_type: u32 },
    /// The datagram ended before the number of samples its header declares.
    #[error("datagram declares {declared} samples but ends after {found}")]
    MissingSamples { declared: u32, found: u32 },
    /// The datagram header's agent address is of type 0 (unknown); the UDP source
    /// address stands in for it.
    #[error("agent address type 0 (unknown); using the UDP source address")]
    UnknownAgentAddress,
}

impl From<SflowError> for DecodeError {
    fn from(error: SflowError) -> Self {
        match error {
            SflowError::LengthPastEnd { length, .. } => DecodeError::LengthPastEnd {
                protocol: Protocol::Sflow,
                length: usize::try_from(length).unwrap_or(usize::MAX),
            },
            other => {
                DecodeError::Malformed { protocol: Protocol::Sflow, detail: other.to_string() }
            }
        }
    }
}
