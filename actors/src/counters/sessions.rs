//! Counters of the connections of an IPFIX-over-TCP or -TLS listener. A UDP listener
//! leaves them at zero. Each IPFIX message a session reads is counted like a UDP
//! datagram in the listener's own counters; these count the connections themselves.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::LabeledCounter;

const ORDER: Ordering = Ordering::Relaxed;

/// Reasons a connection was refused before it became a session, as used in
/// [`SessionCounters::refused`].
pub mod refusal {
    /// `max_sessions` connections were open already.
    pub const MAX_SESSIONS: &str = "max_sessions";
    /// The peer address is denied, or not allowed (`deny_sources`, `allow_sources`).
    pub const SOURCE_DENIED: &str = "source_denied";
    /// The peer's partition had its `max_exporters` sessions and exporters live.
    pub const PARTITION_EXPORTER_CAP: &str = "partition_exporter_cap";
}

/// Why a session ended, as used in [`SessionCounters::closed`].
pub mod close {
    /// The exporter closed the connection between two messages.
    pub const PEER_CLOSED: &str = "peer_closed";
    /// Nothing complete arrived for `idle_timeout_secs`.
    pub const IDLE_TIMEOUT: &str = "idle_timeout";
    /// A message header that is not IPFIX (version) or whose length is impossible.
    pub const FRAMING_ERROR: &str = "framing_error";
    /// The connection closed in the middle of a message.
    pub const TRUNCATED: &str = "truncated";
    /// Reading failed (reset, TLS error after the handshake).
    pub const READ_ERROR: &str = "read_error";
    /// The collector shut down (drain).
    pub const SHUTDOWN: &str = "shutdown";
    /// The session's decoder actor failed; what it held is counted lost.
    pub const SESSION_FAILED: &str = "session_failed";
}

/// Why a TLS handshake failed, as used in [`SessionCounters::tls_handshake_failures`].
pub mod handshake {
    /// The client sent no certificate.
    pub const NO_CERTIFICATE: &str = "no_certificate";
    /// The client certificate is not signed by `client_ca_file`, expired, or unusable.
    pub const CERTIFICATE_REJECTED: &str = "certificate_rejected";
    /// The client did not finish within `handshake_timeout_secs`.
    pub const TIMEOUT: &str = "timeout";
    /// The client sent a TLS alert (it refused the collector's certificate, …).
    pub const PEER_ALERT: &str = "peer_alert";
    /// Not TLS, or TLS the collector does not speak.
    pub const PROTOCOL: &str = "protocol";
    /// The connection failed or closed during the handshake.
    pub const IO: &str = "io";
}

/// Connection counters of one stream listener.
#[derive(Debug, Default)]
pub struct SessionCounters {
    /// Connections that became sessions (TLS: once the handshake succeeded).
    pub accepted: AtomicU64,
    /// Connections open now, handshaking ones included (a gauge).
    pub live: AtomicU64,
    /// Connections closed at once, by [`refusal`] reason.
    pub refused: LabeledCounter,
    /// TLS handshakes that failed, by [`handshake`] reason.
    pub tls_handshake_failures: LabeledCounter,
    /// Sessions ended, by [`close`] reason.
    pub closed: LabeledCounter,
    /// Errors returned by `accept` on the listening socket.
    pub accept_errors: AtomicU64,
}

impl SessionCounters {
    /// Reads every counter.
    pub fn snapshot(&self) -> SessionCountersSnapshot {
        SessionCountersSnapshot {
            accepted: self.accepted.load(ORDER),
            live: self.live.load(ORDER),
            refused: self.refused.snapshot(),
            tls_handshake_failures: self.tls_handshake_failures.snapshot(),
            closed: self.closed.snapshot(),
            accept_errors: self.accept_errors.load(ORDER),
        }
    }
}

/// A point-in-time copy of [`SessionCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionCountersSnapshot {
    pub accepted: u64,
    pub live: u64,
    pub refused: BTreeMap<&'static str, u64>,
    pub tls_handshake_failures: BTreeMap<&'static str, u64>,
    pub closed: BTreeMap<&'static str, u64>,
    pub accept_errors: u64,
}

impl SessionCountersSnapshot {
    /// Connections refused, all reasons.
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }

    /// Failed TLS handshakes, all reasons.
    pub fn tls_handshake_failures_total(&self) -> u64 {
        self.tls_handshake_failures.values().sum()
    }

    /// Sessions closed under `reason` (one of [`close`]).
    pub fn closed(&self, reason: &str) -> u64 {
        self.closed.get(reason).copied().unwrap_or(0)
    }
}
