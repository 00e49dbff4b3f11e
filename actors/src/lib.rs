//! The supervision tree (ractor): a root supervisor, a listener actor per socket, an
//! exporter actor per source IP (per connection for IPFIX over TCP/TLS), and publisher
//! actors that hand flows to a sink.
//!
//! ```text
//! CollectorSupervisor ─┬─ PublisherActor per subject and partition ──▶ FlowSink (stdout JSON lines, …)
//!                      ├─ ListenerActor per UDP socket
//!                      │    receive task ─▶ bounded budget (channel_size, drop-newest)
//!                      │    ─▶ dispatcher ─▶ listener ─▶ ExporterActor per source IP
//!                      │                                   (decoder session) ─▶ publisher
//!                      └─ StreamListenerActor per TCP/TLS socket
//!                           accept task ─▶ session task per connection (TLS, framing,
//!                           budget: waits, never drops) ─▶ ExporterActor per connection
//! ```
//!
//! This crate knows nothing of the JSON config file: the binary turns the config into
//! the typed [`settings`] below, and each actor receives only its part. Start a tree with
//! [`Collector::start`] (or [`run`] until a shutdown signal), read its [`counters`], and
//! stop it with [`Collector::shutdown`], which drains everything queued.

mod batch;
mod budget;
mod collector;
pub mod counters;
mod exporter;
mod listener;
mod publisher;
mod quota;
mod ratelimit;
pub mod session;
pub mod settings;
pub mod sink;
mod socket;
mod stream;
mod supervisor;
pub mod tenancy;
pub mod tls;

pub use collector::{Collector, CollectorError, CountersHandle, RunReport, run};
pub use counters::CountersSnapshot;
pub use publisher::LINGER;
pub use session::{DecoderSessions, SessionFactory};
pub use settings::{
    CollectorSettings, ExporterLimits, ListenerProtocol, ListenerSettings, PartitionLimits,
    SinkSettings, SourceFilter, StreamSettings, Transport,
};
pub use sink::{ConfiguredSinks, FlowSink, JsonLinesSink, SinkError, SinkFactory, SinkFuture};
pub use socket::BindError;
pub use supervisor::DRAIN_TIMEOUT;
#[cfg(any(test, feature = "fault-injection"))]
pub use supervisor::Fault;
