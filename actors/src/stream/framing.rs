//! IPFIX message framing on a byte stream (RFC 7011 §10.4): every message starts with
//! the 16-byte IPFIX header, whose Length field (octets 2–3) is the size of the whole
//! message, header included. Messages are cut out of the stream by that length; a header
//! whose version is not 10, or whose length is shorter than the header, means the stream
//! cannot be followed any further and the session must end.
//!
//! The Length field is 16 bits, so no message can claim more than 65,535 bytes, and the
//! buffer never holds more than one incomplete message plus one read.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The IPFIX message header.
pub(crate) const HEADER_LEN: usize = 16;
/// The IPFIX version number.
const IPFIX_VERSION: u16 = 10;
/// Bytes read from the stream at most per read.
const READ_CHUNK: usize = 16 * 1024;

/// Why the stream cannot be read on.
#[derive(Debug, Error)]
pub(crate) enum FrameError {
    #[error("message header with version {0}: not IPFIX (10), or not at a message boundary")]
    Version(u16),
    #[error("message header with length {0}, shorter than the 16-byte header")]
    Length(u16),
    #[error("connection closed {0} bytes into a message")]
    Truncated(usize),
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

/// Checks a message header, returning the message length (header included).
pub(crate) fn message_length(header: &[u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let version = u16::from_be_bytes([header[0], header[1]]);
    if version != IPFIX_VERSION {
        return Err(FrameError::Version(version));
    }
    let length = u16::from_be_bytes([header[2], header[3]]);
    if usize::from(length) < HEADER_LEN {
        return Err(FrameError::Length(length));
    }
    Ok(usize::from(length))
}

/// Reads whole IPFIX messages from a stream.
pub(crate) struct FrameReader<S> {
    stream: S,
    buffer: BytesMut,
}

impl<S: AsyncRead + Unpin> FrameReader<S> {
    pub(crate) fn new(stream: S) -> Self {
        Self { stream, buffer: BytesMut::new() }
    }

    /// The next message if the buffer holds all of it, without reading. Each message is
    /// copied out, so a message in flight never pins a larger read buffer.
    pub(crate) fn buffered(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some(header) = self.buffer.first_chunk::<HEADER_LEN>() else { return Ok(None) };
        let length = message_length(header)?;
        if self.buffer.len() < length {
            return Ok(None);
        }
        let message = Bytes::copy_from_slice(&self.buffer[..length]);
        self.buffer.advance(length);
        Ok(Some(message))
    }

    /// The next message, reading as needed; `Ok(None)` when the peer closed the
    /// connection between two messages. Cancel safe: bytes read stay buffered.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            if let Some(message) = self.buffered()? {
                return Ok(Some(message));
            }
            self.buffer.reserve(READ_CHUNK);
            let read = match self.stream.read_buf(&mut (&mut self.buffer).limit(READ_CHUNK)).await {
                Ok(read) => read,
                // TLS without close_notify: the peer closed all the same.
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => 0,
                Err(error) => return Err(error.into()),
            };
            if read == 0 {
                return match self.buffer.len() {
                    0 => Ok(None),
                    partial => Err(FrameError::Truncated(partial)),
                };
            }
        }
    }

    /// The stream, to close it.
    pub(crate) fn into_inner(self) -> S {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(length: u16, fill: u8) -> Vec<u8> {
        let mut m = vec![0, 10];
        m.extend_from_slice(&length.to_be_bytes());
        m.resize(usize::from(length).max(HEADER_LEN), fill);
        m
    }

    #[test]
    fn a_header_gives_the_message_length_or_the_reason_it_cannot() {
        let header = |bytes: [u8; 4]| {
            let mut h = [0u8; HEADER_LEN];
            h[..4].copy_from_slice(&bytes);
            h
        };
        assert_eq!(message_length(&header([0, 10, 0, 16])).unwrap(), 16);
        assert_eq!(message_length(&header([0, 10, 0xff, 0xff])).unwrap(), 65_535);
        assert!(matches!(message_length(&header([0, 9, 0, 40])), Err(FrameError::Version(9))));
        assert!(matches!(message_length(&header([0, 10, 0, 3])), Err(FrameError::Length(3))));
        assert!(matches!(message_length(&header([0, 10, 0, 15])), Err(FrameError::Length(15))));
    }

    #[tokio::test]
    async fn messages_split_anywhere_come_out_whole_and_in_order() {
        let mut wire = Vec::new();
        let messages: Vec<Vec<u8>> =
            [16u16, 100, 65_535, 17].iter().zip(1u8..).map(|(&l, f)| message(l, f)).collect();
        for m in &messages {
            wire.extend_from_slice(m);
        }
        let (mut client, server) = tokio::io::duplex(1024);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for chunk in wire.chunks(7) {
                client.write_all(chunk).await.unwrap();
            }
        });
        let mut reader = FrameReader::new(server);
        for want in &messages {
            let got = reader.next().await.unwrap().unwrap();
            assert_eq!(&got[..], &want[..]);
        }
        writer.await.unwrap();
        assert!(reader.next().await.unwrap().is_none(), "a clean close between messages");
    }

    #[tokio::test]
    async fn a_close_inside_a_message_or_a_bad_header_is_an_error() {
        let mut partial = message(40, 1);
        partial.truncate(30);
        let mut reader = FrameReader::new(&partial[..]);
        assert!(matches!(reader.next().await, Err(FrameError::Truncated(30))));

        let mut bad = message(16, 1);
        bad.extend_from_slice(&message(3, 2));
        let mut reader = FrameReader::new(&bad[..]);
        assert!(reader.next().await.unwrap().is_some());
        assert!(matches!(reader.next().await, Err(FrameError::Length(3))));
    }
}
