//! Wire-format decoders: bytes in, `FlowMessage`s out.
//!
//! Nothing here knows of actors, sockets or NATS. Each exporter (one source IP) owns
//! one decoder session ([`NetflowSession`] or [`SflowSession`]); a session keeps that
//! exporter's state (templates, pending flows, sequence tracking) and turns each of its
//! datagrams into flows, lifecycle events and counted errors.

pub mod buffer;
pub mod event;
pub mod netflow;
pub mod packet;
pub mod prefix;
pub mod report;
pub mod sampling;
pub mod sflow;

pub use buffer::FlowBuffer;
pub use event::{LifecycleEvent, Protocol};
pub use netflow::{NetflowSession, NetflowSettings, PendingFlowSettings};
pub use report::{DatagramReport, DecodeError, FidelityStats, SessionStats};
pub use sampling::{SamplingOverride, SamplingPolicy, SamplingPolicyError};
pub use sflow::{SflowSession, SflowSettings};

use std::net::SocketAddr;

/// The maps a session keeps per exporter (scopes, templates, sampling rates, pending
/// sets, sequence streams), looked up for every data set and record: hashed with
/// foldhash, several times faster than SipHash for these small keys and still seeded
/// per process. Each map is one exporter's own and bounded by its settings.
pub(crate) type SessionMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Bits of `FlowMessage::decode_flags`: the values of the proto's `DecodeFlag` enum.
pub mod decode_flags {
    /// `time_flow_start_ns` is later than `time_flow_end_ns`.
    pub const TIME_END_BEFORE_START: u32 = 1;
    /// A flow time is later than the receive time plus the clock-skew tolerance.
    pub const TIME_IN_FUTURE: u32 = 2;
    /// The exporter announced no rate: `sampling_rate` is the configured default.
    pub const SAMPLING_RATE_DEFAULTED: u32 = 4;
    /// `sampling_rate` is the configured per-exporter override.
    pub const SAMPLING_RATE_OVERRIDDEN: u32 = 8;
}

/// One received datagram, as the decoders see it.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// The UDP source (address and port) the datagram came from.
    pub source: SocketAddr,
    /// Collector clock when the datagram arrived, Unix nanoseconds.
    pub received_ns: u64,
    /// The UDP payload.
    pub payload: &'a [u8],
}

/// The decoder state of one exporter, whatever protocol it speaks.
pub trait ExporterSession: Send {
    /// Decodes one datagram, appending its flows to `out`.
    fn decode(&mut self, datagram: Datagram<'_>, out: &mut FlowBuffer) -> DatagramReport;
    /// Ages out state that timed out (templates past their TTL, pending flows past
    /// `ttl_secs`), returning the lifecycle events that caused.
    fn expire(&mut self, now_ns: u64) -> Vec<LifecycleEvent>;
    /// Cache statistics for the periodic stats line and metrics.
    fn stats(&self) -> SessionStats;
    /// The exporter goes away (evicted, restarted, shut down): gives up what the session
    /// still holds for later (pending flows), returning the events that says so, so
    /// nothing it took in leaves uncounted.
    fn close(&mut self) -> Vec<LifecycleEvent> {
        Vec::new()
    }
}

/// Converts an address into the contract's byte form: 4 bytes for IPv4 (also for
/// v4-mapped IPv6), 16 for IPv6.
pub fn address_bytes(addr: std::net::IpAddr) -> Vec<u8> {
    let mut bytes = Vec::new();
    set_address(&mut bytes, addr);
    bytes
}

/// Sets a message's address field to `addr` in the contract's byte form (see
/// [`address_bytes`]), keeping the field's buffer (a kept message's: see
/// [`FlowBuffer::next_slot`]).
pub(crate) fn set_address(field: &mut Vec<u8>, addr: std::net::IpAddr) {
    match addr {
        std::net::IpAddr::V4(v4) => set_bytes(field, &v4.octets()),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => set_bytes(field, &v4.octets()),
            None => set_bytes(field, &v6.octets()),
        },
    }
}

/// Sets a message's bytes field to `value`, keeping the field's buffer. Addresses, most
/// values, are copied as the arrays they are (4 or 16 bytes), with no call to `memcpy`.
#[inline]
pub(crate) fn set_bytes(field: &mut Vec<u8>, value: &[u8]) {
    field.clear();
    if let Ok(v4) = <&[u8; 4]>::try_from(value) {
        field.extend_from_slice(v4);
    } else if let Ok(v6) = <&[u8; 16]>::try_from(value) {
        field.extend_from_slice(v6);
    } else {
        field.extend_from_slice(value);
    }
}

/// Sets a message's string field to `value`, keeping the field's buffer.
pub(crate) fn set_text(field: &mut String, value: &str) {
    field.clear();
    field.push_str(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_bytes_replaces_a_value_of_any_length_keeping_the_buffer() {
        let mut field = vec![9u8; 40];
        let kept = field.as_ptr();
        for value in [&[10u8, 0, 0, 1][..], &[0x20; 16], &[1, 2, 3], &[], &[7; 33]] {
            set_bytes(&mut field, value);
            assert_eq!(field, value);
        }
        assert_eq!(field.as_ptr(), kept, "no new buffer for values that fit the old one");
    }
}
