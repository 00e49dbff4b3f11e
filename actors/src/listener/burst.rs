//! Reading a burst of datagrams with one system call: `recvmmsg(2)` fills up to
//! [`RECEIVE_BURST`] slots of one buffer and reports each datagram's length and source.
//! A busy socket then costs one system call per burst instead of one per datagram
//! (Linux, the collector's platform).

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams one read takes at most.
pub(crate) const RECEIVE_BURST: usize = 32;

/// One datagram of a burst: its slot, its length as sent (it is longer than its slot
/// when truncated) and its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arrived {
    slot: usize,
    pub(crate) len: usize,
    pub(crate) source: SocketAddr,
}

/// The buffers a burst is read into: [`RECEIVE_BURST`] slots of `slot_len` bytes each,
/// allocated zeroed, so only the pages datagrams have landed in are resident.
pub(crate) struct BurstBuffer {
    slots: Vec<u8>,
    slot_len: usize,
    arrived: Vec<Arrived>,
}

impl BurstBuffer {
    /// Slots of `slot_len` bytes: one more than the largest datagram kept, so a longer
    /// one shows as longer than that (its full length is reported anyway).
    pub(crate) fn new(slot_len: usize) -> Self {
        let slot_len = slot_len.max(1);
        Self {
            slots: vec![0; slot_len * RECEIVE_BURST],
            slot_len,
            arrived: Vec::with_capacity(RECEIVE_BURST),
        }
    }

    /// Waits until `socket` is readable, then reads what it holds, up to a burst: at
    /// least one datagram (see [`BurstBuffer::arrived`]), or the receive error.
    pub(crate) async fn read(&mut self, socket: &UdpSocket) -> io::Result<()> {
        loop {
            socket.readable().await?;
            let fd = socket.as_raw_fd();
            match socket.try_io(Interest::READABLE, || self.read_now(fd)) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error),
                Ok(()) if self.arrived.is_empty() => continue,
                Ok(()) => return Ok(()),
            }
        }
    }

    /// One `recvmmsg(2)` that does not wait: `WouldBlock` when the socket is empty.
    fn read_now(&mut self, fd: RawFd) -> io::Result<()> {
        self.arrived.clear();
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .slots
            .chunks_exact_mut(self.slot_len)
            .map(|slot| [IoSliceMut::new(slot)])
            .collect();
        // MSG_TRUNC: each length is the datagram's, even when its slot was too short.
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC;
        // Made per read: it holds raw pointers, so a task keeping it could not move
        // between threads.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(RECEIVE_BURST, None);
        let results = recvmmsg(fd, &mut headers, slices.iter_mut(), flags, None)?;
        for (slot, message) in results.enumerate() {
            // UDP always names its source; a message without one is not a datagram.
            if let Some(source) = message.address.as_ref().and_then(socket_addr) {
                self.arrived.push(Arrived { slot, len: message.bytes, source });
            }
        }
        Ok(())
    }

    /// The datagrams the last read took.
    pub(crate) fn arrived(&self) -> &[Arrived] {
        &self.arrived
    }

    /// The bytes of `datagram` (cut at its slot when it was truncated).
    pub(crate) fn payload(&self, datagram: &Arrived) -> &[u8] {
        let start = datagram.slot * self.slot_len;
        let len = datagram.len.min(self.slot_len);
        self.slots.get(start..start + len).unwrap_or_default()
    }
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    address.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn bound() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.expect("bind")
    }

    /// Reads bursts until `count` datagrams have arrived: (length, source, payload).
    async fn read_all(
        buffer: &mut BurstBuffer,
        socket: &UdpSocket,
        count: usize,
    ) -> (Vec<(usize, SocketAddr, Vec<u8>)>, Vec<usize>) {
        let (mut datagrams, mut bursts) = (Vec::new(), Vec::new());
        while datagrams.len() < count {
            buffer.read(socket).await.expect("read a burst");
            bursts.push(buffer.arrived().len());
            for arrived in buffer.arrived() {
                datagrams.push((arrived.len, arrived.source, buffer.payload(arrived).to_vec()));
            }
        }
        (datagrams, bursts)
    }

    #[tokio::test]
    async fn a_burst_keeps_each_datagrams_source_bytes_and_full_length() {
        let socket = bound().await;
        let to = socket.local_addr().expect("address");
        let (a, b) = (bound().await, bound().await);
        a.send_to(b"first", to).await.expect("send");
        b.send_to(&[7u8; 40], to).await.expect("send");
        a.send_to(b"", to).await.expect("send");
        let mut buffer = BurstBuffer::new(16);
        let (datagrams, _) = read_all(&mut buffer, &socket, 3).await;
        let (a, b) = (a.local_addr().expect("a"), b.local_addr().expect("b"));
        assert_eq!(
            datagrams,
            vec![(5, a, b"first".to_vec()), (40, b, vec![7u8; 16]), (0, a, Vec::new())],
            "a datagram longer than its slot is cut there and reports its real length"
        );
    }

    #[tokio::test]
    async fn more_than_a_burst_waiting_is_read_in_bursts_in_order() {
        let socket = bound().await;
        let to = socket.local_addr().expect("address");
        let sender = bound().await;
        let total = RECEIVE_BURST * 2 + 5;
        for i in 0..total {
            sender
                .send_to(&u32::try_from(i).expect("small").to_be_bytes(), to)
                .await
                .expect("send");
        }
        let mut buffer = BurstBuffer::new(64);
        let (datagrams, bursts) = read_all(&mut buffer, &socket, total).await;
        let numbers: Vec<u32> = datagrams
            .iter()
            .map(|(_, _, payload)| u32::from_be_bytes(payload[..4].try_into().expect("4 bytes")))
            .collect();
        assert_eq!(numbers, (0..u32::try_from(total).expect("small")).collect::<Vec<_>>());
        assert!(bursts.iter().all(|n| (1..=RECEIVE_BURST).contains(n)), "{bursts:?}");
        assert!(bursts.len() >= 3, "{total} datagrams need three reads at least: {bursts:?}");
    }
}
