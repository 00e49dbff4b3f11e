//! Typed settings the actors are started with, built once by the binary from the
//! validated config file.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use flow_decode::prefix::{IpNet, contains};
use flow_decode::{NetflowSettings, SflowSettings};

use crate::sink::JetStreamLink;
use crate::tenancy::Registry;

/// Everything the supervision tree needs to run.
#[derive(Debug, Clone)]
pub struct CollectorSettings {
    /// One entry per socket to bind.
    pub listeners: Vec<ListenerSettings>,
    /// Depth of each listener's bounded datagram channel (`channel_size`); when full the
    /// newest datagram is dropped and counted.
    pub channel_size: usize,
    /// Flows per publish batch (`batch_size`).
    pub batch_size: usize,
    /// Caps on the exporter directory of each listener.
    pub exporters: ExporterLimits,
    /// How often each exporter logs its template cache statistics line (30 s).
    pub stats_interval: Duration,
    /// Where decoded flows go.
    pub sink: SinkSettings,
    /// Partition tag of this install (`partition`).
    pub partition: String,
    /// The exporter registry: partitions and tags by exporter prefix (`exporters`).
    pub registry: Registry,
    /// Limits of the partitions that have any (`partitions.<name>`).
    pub partition_limits: BTreeMap<String, PartitionLimits>,
}

/// What one partition (tenant) may take of the collector, over every listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionLimits {
    /// Live exporters of the partition at most (`max_exporters`); datagrams from a new
    /// source beyond it are dropped and counted as `partition_exporter_cap`.
    pub max_exporters: Option<usize>,
    /// Datagrams per second all its exporters may send together (`max_pps`; bursts of
    /// one second's worth pass); the excess is dropped as `partition_rate_limited`.
    pub max_pps: Option<NonZeroU32>,
}

/// One socket and the decoder its datagrams get.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// Address to bind (`listen_addr`).
    pub listen_addr: SocketAddr,
    /// Subject the listener's flows are published on (`subject`); may hold
    /// `{partition}`, replaced by each flow's partition.
    pub subject: String,
    /// The partition of this listener's exporters when the registry names none
    /// (`partition` of the listener entry; `None`: the install's).
    pub partition: Option<String>,
    /// Kernel receive buffer in bytes, SO_RCVBUF (`buffer_size`).
    pub buffer_size: usize,
    /// Which protocol is decoded, with its per-exporter limits.
    pub protocol: ListenerProtocol,
    /// Which source addresses may send (`allow_sources`, `deny_sources`).
    pub sources: SourceFilter,
    /// Datagrams per second one exporter may send before the excess is dropped
    /// (`max_exporter_pps`; bursts of one second's worth pass). `None`: no limit.
    pub max_exporter_pps: Option<NonZeroU32>,
    /// Datagrams larger than this are dropped unread (`max_datagram_bytes`; 65535, the
    /// largest UDP payload, by default).
    pub max_datagram_bytes: usize,
    /// UDP sockets bound to `listen_addr` with SO_REUSEPORT, each read by its own task
    /// and all feeding the listener's one exporter directory (`sockets`; at least 1).
    /// TCP/TLS listeners bind one socket whatever it says.
    pub sockets: usize,
    /// UDP datagrams, or IPFIX messages over TCP or TLS connections (`transport`).
    pub transport: Transport,
}

/// How a listener receives: UDP datagrams (the default), or IPFIX messages framed on TCP
/// connections (RFC 7011 §10.4), optionally inside TLS with client certificates.
#[derive(Debug, Clone, Default)]
pub enum Transport {
    #[default]
    Udp,
    Stream(StreamSettings),
}

/// An IPFIX-over-TCP (or TLS) listener's connection limits.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Connections open at once at most, handshaking ones included (`max_sessions`);
    /// more are accepted and closed at once, and counted.
    pub max_sessions: usize,
    /// A connection that has not finished its TLS handshake this long after it was
    /// accepted is closed (`handshake_timeout_secs`).
    pub handshake_timeout: Duration,
    /// A session that has not delivered a complete message this long is closed
    /// (`idle_timeout_secs`).
    pub idle_timeout: Duration,
    /// TLS with required client certificates; `None`: plain TCP.
    pub tls: Option<crate::tls::TlsServerSettings>,
}

/// Source address control of a listener: the deny list wins, then an allow list (when
/// given) must hold the address. Applied before anything else is spent on a datagram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceFilter {
    /// Empty: every source not denied may send.
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl SourceFilter {
    /// Whether datagrams from `source` are accepted.
    pub fn accepts(&self, source: IpAddr) -> bool {
        let holds = |net: &IpNet| contains(net, source);
        !self.deny.iter().any(holds) && (self.allow.is_empty() || self.allow.iter().any(holds))
    }

    /// Whether every source is accepted (nothing to check per datagram).
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

impl ListenerSettings {
    /// A stable name for logs, metrics and the actor registry: "netflow@0.0.0.0:2055",
    /// "netflow-tcp@0.0.0.0:4739", "netflow-tls@0.0.0.0:4740".
    pub fn name(&self) -> String {
        let protocol = self.protocol.as_str();
        match &self.transport {
            Transport::Udp => format!("{protocol}@{}", self.listen_addr),
            Transport::Stream(stream) if stream.tls.is_some() => {
                format!("{protocol}-tls@{}", self.listen_addr)
            }
            Transport::Stream(_) => format!("{protocol}-tcp@{}", self.listen_addr),
        }
    }
}

/// The protocol a listener decodes.
#[derive(Debug, Clone)]
pub enum ListenerProtocol {
    Netflow(NetflowSettings),
    Sflow(SflowSettings),
}

impl ListenerProtocol {
    /// "netflow" or "sflow", as the config file names it.
    pub fn as_str(&self) -> &'static str {
        match self {
            ListenerProtocol::Netflow(_) => "netflow",
            ListenerProtocol::Sflow(_) => "sflow",
        }
    }
}

/// Bounds on the per-listener exporter directory.
#[derive(Debug, Clone)]
pub struct ExporterLimits {
    /// Live exporter actors per listener at most (`max_exporters`); datagrams from a
    /// new source beyond it are dropped and counted.
    pub max_exporters: usize,
    /// An exporter silent this long is stopped and its state freed (`exporter_idle_timeout_secs`).
    pub idle_timeout: Duration,
    /// Exporters per listener with `/metrics` series of their own
    /// (`metrics_max_exporters`); the rest add to `exporter="other"`.
    pub max_series: usize,
}

/// The destination of decoded flows.
#[derive(Debug, Clone)]
pub enum SinkSettings {
    /// One JSON line per flow on standard output (the embedded default; no NATS).
    Stdout,
    /// Nowhere: flows are decoded, counted as published and discarded (`--discard-flows`,
    /// for measuring the decode path).
    Discard,
    /// One protobuf `FlowMessage` per message on NATS JetStream.
    JetStream(JetStreamSinkSettings),
}

/// The JetStream sink: the connections and how much each publisher may hold while
/// JetStream is slow or away.
#[derive(Debug, Clone)]
pub struct JetStreamSinkSettings {
    /// The install's connection, which every partition without one of its own publishes
    /// through; the binary connects each link once the listeners are bound.
    pub link: JetStreamLink,
    /// Partitions with credentials, a server or a stream of their own (`partitions`):
    /// their flows go through their own connection, never the install's.
    pub partition_links: BTreeMap<String, JetStreamLink>,
    /// Flows each subject's publishers hold at most, waiting or unacknowledged
    /// (`publish_buffer_flows`, split between the subject's partitions); beyond it new
    /// flows are dropped as `buffer_full`. Each held flow costs its protobuf encoding
    /// plus about 32 bytes.
    pub buffer_flows: usize,
    /// Batches each subject's publisher has in flight at once.
    pub batches_in_flight: usize,
    /// How flows are laid out in NATS messages (`publish_framing`).
    pub framing: Framing,
}

/// How flows are laid out in NATS messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Framing {
    /// One protobuf `FlowMessage` per message: the wire contract's default.
    #[default]
    PerFlow,
    /// Up to a batch of `FlowMessage`s per message, each preceded by its length as a
    /// protobuf varint (`prost::Message::decode_length_delimited` reads them one by
    /// one); a message stays under 1 MB. Far fewer messages for the broker to store and
    /// acknowledge; consumers must read the framing.
    Delimited,
}

impl JetStreamSinkSettings {
    /// The connection `partition`'s flows are published through.
    pub fn link_for(&self, partition: &str) -> &JetStreamLink {
        self.partition_links.get(partition).unwrap_or(&self.link)
    }

    /// Enough batches in flight to keep `max_in_flight` acks outstanding, and at least
    /// four, so one batch waiting out a retry does not stall the subject.
    pub fn batches_in_flight_for(max_in_flight: usize, batch_size: usize) -> usize {
        (max_in_flight / batch_size.max(1)).max(4)
    }
}
