//! The input format of the session fuzz targets, shared by the targets and the corpus
//! seeder (`seed/`, which includes this file by path).
//!
//! ```text
//! input  = settings:u8 frame*
//! frame  = length:u16be meta:u8 payload[length]
//! meta   = bits 0-1: source port (index into SOURCE_PORTS)
//!          bit  2  : call `expire(now)` before decoding this datagram
//!          bits 3-7: seconds the clock moves forward before this datagram (0..=31)
//! ```
//!
//! A frame cut short by the end of the input takes whatever bytes are left, so every
//! mutation of an input still decodes as datagrams. The settings byte is read by each
//! target (see its doc).

/// UDP source ports a frame can come from: template scopes are per source port.
pub const SOURCE_PORTS: [u16; 4] = [2055, 9995, 4739, 6343];

/// Meta bit: expire before this datagram.
pub const META_EXPIRE: u8 = 0b100;

/// One datagram of a session input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub port: u16,
    pub expire_first: bool,
    pub advance_secs: u64,
    pub payload: &'a [u8],
}

/// Splits a session input into its settings byte and frames.
pub fn split(input: &[u8]) -> Option<(u8, Vec<Frame<'_>>)> {
    let (&settings, mut rest) = input.split_first()?;
    let mut frames = Vec::new();
    while rest.len() >= 3 {
        let length = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let meta = rest[2];
        rest = &rest[3..];
        let (payload, tail) = rest.split_at(length.min(rest.len()));
        frames.push(Frame {
            port: SOURCE_PORTS[usize::from(meta & 0b11)],
            expire_first: meta & META_EXPIRE != 0,
            advance_secs: u64::from(meta >> 3),
            payload,
        });
        rest = tail;
    }
    Some((settings, frames))
}

/// Appends one frame to a session input (the seeder's side of [`split`]).
pub fn push_frame(input: &mut Vec<u8>, port_index: u8, advance_secs: u8, payload: &[u8]) {
    let length = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    input.extend_from_slice(&length.to_be_bytes());
    input.push((port_index & 0b11) | (advance_secs.min(31) << 3));
    input.extend_from_slice(&payload[..usize::from(length)]);
}
