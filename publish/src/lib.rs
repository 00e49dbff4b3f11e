//! The JetStream transport of the collector. It knows nothing of NetFlow or actors: it
//! connects to NATS (TLS, mTLS, credentials), keeps a stream in shape, and publishes
//! opaque payloads with `Nats-Msg-Id` dedupe and retried acks, accounting for every
//! message it was given.
//!
//! ```text
//! JetStreamPublisher::connect(settings)      connect (retried), ensure_stream
//!   .publish_batch(subject, messages)  ──▶   publish with acks in flight
//!                                            re-send unacked with the same Msg-Id
//!                                            ──▶ BatchOutcome { acked, duplicates, given_up }
//! ```

mod connect;
mod msgid;
mod publish;
mod settings;
mod stream;

pub use connect::{ConnectError, ConnectionState, FileRole, JetStreamConnection, redact_servers};
pub use msgid::MessageIdGenerator;
pub use publish::{
    BatchOutcome, GiveUpReason, JetStreamPublisher, OutboundMessage, PublisherError,
};
pub use settings::{Backoff, ClientCertificate, JetStreamSettings, StreamSettings, TlsSettings};
pub use stream::{
    ApiError, EnsureOutcome, StreamChange, StreamError, SubjectConflict, ensure_stream,
};
