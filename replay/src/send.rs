//! Replays datagrams over real UDP, one local socket per original source.
//!
//! Each original source `ip:port` gets its own socket, so a collector that scopes
//! templates by exporter address and port sees the same scoping as the capture had.
//! Which local address a socket binds is the [`SourcePlan`]'s choice, made once per
//! original exporter IP (in order of first appearance).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::num::NonZeroU32;
use std::thread;
use std::time::{Duration, Instant};

use crate::UdpDatagram;

/// Where replayed datagrams come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePlan {
    /// The kernel picks the source address.
    Kernel,
    /// Exporters, in order of first appearance, take these addresses in turn, wrapping
    /// around when there are more exporters than addresses.
    Addresses(Vec<IpAddr>),
    /// The k-th exporter (from 0) sends from 127.0.0.(10 + k).
    PerExporter,
}

/// The first loopback address [`SourcePlan::PerExporter`] hands out.
pub const FIRST_EXPORTER_OCTET: u8 = 10;

/// Why a datagram could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// `SourcePlan::Addresses` with no address.
    #[error("no source address to send from")]
    NoAddresses,
    /// More exporters than 127.0.0.10–127.0.0.255 can hold.
    #[error("no loopback address left for exporter {0}: 127.0.0.10 to 127.0.0.255 are taken")]
    TooManyExporters(IpAddr),
    /// The source address and the target are of different IP families.
    #[error("cannot send from {local} to {target}: different IP families")]
    FamilyMismatch {
        /// The local source address.
        local: IpAddr,
        /// The target.
        target: SocketAddr,
    },
    /// The local socket could not be bound.
    #[error("cannot bind {local}: {source}")]
    Bind {
        /// The address bound.
        local: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Sending failed.
    #[error("cannot send from {local} to {target}: {source}")]
    Send {
        /// The local socket address.
        local: SocketAddr,
        /// The target.
        target: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// What one original source sent through its local socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceReport {
    /// The source address and port in the capture.
    pub original: SocketAddr,
    /// The local socket the datagrams were sent from.
    pub local: SocketAddr,
    /// Datagrams sent.
    pub datagrams: u64,
    /// Payload bytes sent.
    pub bytes: u64,
}

/// A local socket standing in for one original source.
struct Source {
    socket: UdpSocket,
    report: SourceReport,
}

/// Spaces sends at a fixed rate.
struct Pacer {
    interval: Duration,
    next: Option<Instant>,
}

impl Pacer {
    fn new(pps: NonZeroU32) -> Self {
        Self { interval: Duration::from_secs(1) / pps.get(), next: None }
    }

    /// Sleeps until the next send is due, then books the one after it.
    fn wait(&mut self) {
        let now = Instant::now();
        let due = self.next.unwrap_or(now);
        if due > now {
            thread::sleep(due - now);
        }
        self.next = Some(due.max(now) + self.interval);
    }
}

/// Sends datagrams to one target, from local sockets chosen by a [`SourcePlan`].
pub struct Replayer {
    target: SocketAddr,
    plan: SourcePlan,
    exporters: HashMap<IpAddr, IpAddr>,
    exporter_order: usize,
    sources: Vec<Source>,
    by_original: HashMap<SocketAddr, usize>,
    pacer: Option<Pacer>,
}

impl Replayer {
    /// A replayer sending to `target`, at most `pps` datagrams per second when given.
    pub fn new(
        target: SocketAddr,
        plan: SourcePlan,
        pps: Option<NonZeroU32>,
    ) -> Result<Self, SendError> {
        if matches!(&plan, SourcePlan::Addresses(list) if list.is_empty()) {
            return Err(SendError::NoAddresses);
        }
        Ok(Self {
            target,
            plan,
            exporters: HashMap::new(),
            exporter_order: 0,
            sources: Vec::new(),
            by_original: HashMap::new(),
            pacer: pps.map(Pacer::new),
        })
    }

    /// Sends `datagram`'s payload from the socket standing in for its source.
    pub fn send(&mut self, datagram: &UdpDatagram) -> Result<(), SendError> {
        self.send_from(datagram.source, &datagram.payload)
    }

    /// Sends `payload` from the socket standing in for `original`.
    pub fn send_from(&mut self, original: SocketAddr, payload: &[u8]) -> Result<(), SendError> {
        let index = self.source_for(original)?;
        if let Some(pacer) = &mut self.pacer {
            pacer.wait();
        }
        let target = self.target;
        let source = &mut self.sources[index];
        let local = source.report.local;
        source.socket.send_to(payload, target).map_err(|e| SendError::Send {
            local,
            target,
            source: e,
        })?;
        source.report.datagrams += 1;
        source.report.bytes += payload.len() as u64;
        Ok(())
    }

    /// The local address the exporter at `original` sends from, once it has sent.
    pub fn local_ip(&self, original: IpAddr) -> Option<IpAddr> {
        self.exporters.get(&original).copied()
    }

    /// What each original source sent, in order of first appearance.
    pub fn reports(&self) -> Vec<SourceReport> {
        self.sources.iter().map(|s| s.report).collect()
    }

    /// The index of `original`'s socket, binding it on first use.
    fn source_for(&mut self, original: SocketAddr) -> Result<usize, SendError> {
        if let Some(&index) = self.by_original.get(&original) {
            return Ok(index);
        }
        let local_ip = self.exporter_ip(original.ip())?;
        let bind = SocketAddr::new(local_ip, 0);
        let socket =
            UdpSocket::bind(bind).map_err(|source| SendError::Bind { local: bind, source })?;
        let local =
            socket.local_addr().map_err(|source| SendError::Bind { local: bind, source })?;
        let report = SourceReport { original, local, datagrams: 0, bytes: 0 };
        self.sources.push(Source { socket, report });
        let index = self.sources.len() - 1;
        self.by_original.insert(original, index);
        Ok(index)
    }

    /// The local IP of the exporter at `original`, chosen on its first datagram.
    fn exporter_ip(&mut self, original: IpAddr) -> Result<IpAddr, SendError> {
        if let Some(&ip) = self.exporters.get(&original) {
            return Ok(ip);
        }
        let k = self.exporter_order;
        let local = match &self.plan {
            SourcePlan::Kernel => unspecified_like(self.target.ip()),
            SourcePlan::Addresses(list) => list[k % list.len()],
            SourcePlan::PerExporter => {
                let octet = u8::try_from(k + usize::from(FIRST_EXPORTER_OCTET))
                    .map_err(|_| SendError::TooManyExporters(original))?;
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet))
            }
        };
        if local.is_ipv4() != self.target.is_ipv4() {
            return Err(SendError::FamilyMismatch { local, target: self.target });
        }
        self.exporter_order += 1;
        self.exporters.insert(original, local);
        Ok(local)
    }
}

/// The unspecified address of `ip`'s family.
fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver() -> (UdpSocket, SocketAddr) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("timeout: {e}"));
        let addr = socket.local_addr().unwrap_or_else(|e| panic!("addr: {e}"));
        (socket, addr)
    }

    fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = [0u8; 2048];
        let (len, from) = socket.recv_from(&mut buf).unwrap_or_else(|e| panic!("recv: {e}"));
        (buf[..len].to_vec(), from)
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn each_exporter_gets_its_own_loopback_address_and_each_port_its_own_socket() {
        let (socket, target) = receiver();
        let mut replayer =
            Replayer::new(target, SourcePlan::PerExporter, None).unwrap_or_else(|e| panic!("{e}"));
        let sends =
            [("198.51.100.1:50109", "a"), ("[2001:db8::1]:4000", "b"), ("198.51.100.1:50111", "c")];
        for (original, payload) in sends {
            replayer
                .send_from(addr(original), payload.as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let got: Vec<(Vec<u8>, SocketAddr)> = (0..3).map(|_| recv(&socket)).collect();
        assert_eq!(got[0].0, b"a");
        assert_eq!(got[0].1.ip(), addr("127.0.0.10:0").ip());
        assert_eq!(got[1].1.ip(), addr("127.0.0.11:0").ip());
        assert_eq!(got[2].1.ip(), got[0].1.ip(), "same exporter, same address");
        assert_ne!(got[2].1.port(), got[0].1.port(), "different original port, different socket");
        let reports = replayer.reports();
        assert_eq!(reports.len(), 3);
        assert_eq!((reports[0].datagrams, reports[0].bytes), (1, 1));
        assert_eq!(
            replayer.local_ip(addr("[2001:db8::1]:0").ip()),
            Some(addr("127.0.0.11:0").ip())
        );
    }

    #[test]
    fn addresses_are_handed_out_in_turn() {
        let (socket, target) = receiver();
        let plan = SourcePlan::Addresses(vec![addr("127.0.0.3:0").ip(), addr("127.0.0.4:0").ip()]);
        let mut replayer =
            Replayer::new(target, plan, NonZeroU32::new(1000)).unwrap_or_else(|e| panic!("{e}"));
        for original in ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"] {
            replayer.send_from(addr(original), b"x").unwrap_or_else(|e| panic!("{e}"));
        }
        let sources: Vec<IpAddr> = (0..3).map(|_| recv(&socket).1.ip()).collect();
        let expected: Vec<IpAddr> =
            ["127.0.0.3:0", "127.0.0.4:0", "127.0.0.3:0"].iter().map(|a| addr(a).ip()).collect();
        assert_eq!(sources, expected);
    }

    #[test]
    fn mismatched_families_and_empty_plans_are_refused() {
        let plan = SourcePlan::Addresses(vec![addr("[::1]:0").ip()]);
        let mut replayer =
            Replayer::new(addr("127.0.0.1:9"), plan, None).unwrap_or_else(|e| panic!("{e}"));
        let result = replayer.send_from(addr("10.0.0.1:1"), b"x");
        assert!(matches!(result, Err(SendError::FamilyMismatch { .. })));
        let empty = Replayer::new(addr("127.0.0.1:9"), SourcePlan::Addresses(vec![]), None);
        assert!(matches!(empty, Err(SendError::NoAddresses)));
    }
}
