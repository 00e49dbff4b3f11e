//! What the JetStream transport is configured with: servers, authentication, the stream
//! it owns, and the bounds of its delivery guarantees. Built once by the caller from the
//! validated config file; nothing here reads files or touches the network.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

/// Everything needed to connect, own the stream and publish.
#[derive(Debug, Clone)]
pub struct JetStreamSettings {
    /// Server URLs, as the operator wrote them: one URL or a comma-separated list of
    /// `nats://` / `tls://` URLs (the scheme may be omitted: `host:port`). A URL may carry
    /// `user:password@` or `token@`, which are sent as the connection's credentials.
    pub servers: String,
    /// A NATS `.creds` file (user JWT + nkey seed), read at connect time.
    pub creds_file: Option<PathBuf>,
    /// TLS towards the server; `None` keeps plain TCP unless a URL says `tls://`.
    pub tls: Option<TlsSettings>,
    /// The stream this collector publishes into and keeps in shape.
    pub stream: StreamSettings,
    /// How long one publish waits for its JetStream ack (`publish_timeout_ms`); also
    /// bounds JetStream API requests.
    pub publish_timeout: Duration,
    /// Publishes whose ack is still outstanding, at most, across all batches of this
    /// connection. Bounds memory while NATS is slow.
    pub max_in_flight: usize,
    /// Delay between rounds of re-sending unacknowledged messages.
    pub retry_backoff: Backoff,
    /// Delay between attempts of the first connect.
    pub connect_backoff: Backoff,
    /// Attempts of the first connect before giving up; `None` retries forever (the
    /// collector waits for NATS to come up).
    pub max_connect_attempts: Option<NonZeroU32>,
    /// Name the connection shows in the server's monitoring (`connz`).
    pub client_name: String,
}

impl JetStreamSettings {
    /// Settings with the wire contract's defaults for everything but the servers and the
    /// stream's name and subjects.
    pub fn new(servers: impl Into<String>, stream: StreamSettings) -> Self {
        JetStreamSettings {
            servers: servers.into(),
            creds_file: None,
            tls: None,
            stream,
            publish_timeout: Duration::from_secs(5),
            max_in_flight: 4096,
            retry_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            connect_backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(30)),
            max_connect_attempts: None,
            client_name: "serviceradar-flow-collector".into(),
        }
    }
}

/// Certificates for TLS to the server. File contents are checked before connecting so a
/// bad path or a non-PEM file is reported as such, not as a handshake failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM CA bundle that signs the server's certificate; `None` trusts the system roots.
    pub ca_file: Option<PathBuf>,
    /// Our certificate and key, for servers that verify clients (mTLS).
    pub client: Option<ClientCertificate>,
}

/// A client certificate chain and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The stream this collector owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// Stream name (`stream_name`, "events").
    pub name: String,
    /// Subjects the stream must capture: `stream_subjects` ∪ every listener's subject,
    /// merged by the caller.
    pub subjects: Vec<String>,
    /// Size cap in bytes, set when the stream is created (`stream_max_bytes`).
    pub max_bytes: i64,
    /// Replica count, reconciled on an existing stream too (`stream_replicas`).
    pub replicas: usize,
    /// JetStream's `Nats-Msg-Id` dedupe window, set when the stream is created. Retries
    /// stop before it ends: past it a re-send could be stored twice.
    pub duplicate_window: Duration,
}

impl StreamSettings {
    /// A stream with the wire contract's defaults: 10 GiB, one replica, a two-minute
    /// duplicate window.
    pub fn new(name: impl Into<String>, subjects: Vec<String>) -> Self {
        StreamSettings {
            name: name.into(),
            subjects,
            max_bytes: 10 * 1024 * 1024 * 1024,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// Capped exponential backoff bounds: the first delay, doubled per attempt up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max }
    }

    /// The delay before attempt `attempt + 1`, counting from 0: `initial * 2^attempt`,
    /// never above `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(backoff.delay(0), Duration::from_millis(100));
        assert_eq!(backoff.delay(1), Duration::from_millis(200));
        assert_eq!(backoff.delay(3), Duration::from_millis(800));
        assert_eq!(backoff.delay(4), Duration::from_secs(1));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(1));
    }
}
