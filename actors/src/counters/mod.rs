//! Counters of the pipeline: plain atomics in named structs, shared through `Arc`s by the
//! actors and tasks that update them, read as snapshots by tests, the binary and the
//! metrics endpoint. Per-exporter figures live in an [`ExporterTable`], publish latency in
//! a [`LatencyHistogram`].
//!
//! Accounting invariants, exact once the pipeline is quiet (after a drain):
//! - per listener: `datagrams_received = datagrams_decoded + datagrams_dropped.total()
//!   + datagrams_lost_in_restart`; while running, the difference is still in flight.
//! - per publisher: every flow handed to it (the listeners' `flows_decoded` of its subject)
//!   ends as `flows_published` or in `flows_dropped` under a reason.

mod exporters;
mod latency;
mod sessions;

pub use crate::quota::QuotaSnapshot;
pub use exporters::{
    DEFAULT_MAX_SERIES, ExporterFigures, ExporterGauges, ExporterId, ExporterSeries, ExporterTable,
    ExporterTableSnapshot, OtherExporters,
};
pub use latency::{LatencyHistogram, LatencySnapshot};
pub use sessions::{SessionCounters, SessionCountersSnapshot, close, handshake, refusal};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

/// Relaxed is enough: each counter is an independent tally, read for reporting only.
const ORDER: Ordering = Ordering::Relaxed;

/// A counter family keyed by a short, stable label (a drop reason, an error reason, an
/// event kind). The set of labels is small and fixed by the code, so the map stays tiny.
#[derive(Debug, Default)]
pub struct LabeledCounter {
    values: RwLock<BTreeMap<&'static str, AtomicU64>>,
}

impl LabeledCounter {
    /// Adds `n` under `label`; the label is created on first use.
    pub fn add(&self, label: &'static str, n: u64) {
        {
            let values = self.values.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(counter) = values.get(label) {
                counter.fetch_add(n, ORDER);
                return;
            }
        }
        let mut values = self.values.write().unwrap_or_else(PoisonError::into_inner);
        values.entry(label).or_default().fetch_add(n, ORDER);
    }

    /// The current value under `label` (0 when never counted).
    pub fn get(&self, label: &str) -> u64 {
        let values = self.values.read().unwrap_or_else(PoisonError::into_inner);
        values.get(label).map_or(0, |c| c.load(ORDER))
    }

    /// Every label with its current value.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        let values = self.values.read().unwrap_or_else(PoisonError::into_inner);
        values.iter().map(|(label, c)| (*label, c.load(ORDER))).collect()
    }
}

/// Why a listener dropped a datagram before decoding it.
#[derive(Debug, Default)]
pub struct DatagramDrops {
    /// The listener's in-flight budget (`channel_size`) was used up: backpressure, drop-newest.
    pub channel_full: AtomicU64,
    /// The datagram came from a new source while `max_exporters` exporters were live.
    pub exporter_cap: AtomicU64,
    /// The source is denied, or not allowed (`deny_sources`, `allow_sources`).
    pub source_denied: AtomicU64,
    /// Larger than the listener's `max_datagram_bytes`.
    pub oversized: AtomicU64,
    /// The exporter sent faster than `max_exporter_pps`.
    pub rate_limited: AtomicU64,
    /// The datagram came from a new source while its partition had `max_exporters` live.
    pub partition_exporter_cap: AtomicU64,
    /// The exporter's partition was over its `max_pps`.
    pub partition_rate_limited: AtomicU64,
}

/// Template cache activity summed over a listener's exporters (the guide's stats line,
/// as counters). Each exporter adds what changed since its last report.
#[derive(Debug, Default)]
pub struct TemplateCacheCounters {
    /// Data sets whose template was in the cache.
    pub hits: AtomicU64,
    /// Data sets whose template was not (parked or dropped).
    pub misses: AtomicU64,
    /// Templates evicted to make room (`max_templates`).
    pub evictions: AtomicU64,
    /// Templates replaced by one with the same id and a different layout.
    pub collisions: AtomicU64,
    /// Parked data sets decoded once their template arrived.
    pub pending_replayed: AtomicU64,
    /// Parked data sets given up (time to live, caps, restarts).
    pub pending_dropped: AtomicU64,
}

/// A point-in-time copy of [`TemplateCacheCounters`]; also an exporter's running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TemplateCacheTotals {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub collisions: u64,
    pub pending_replayed: u64,
    pub pending_dropped: u64,
}

impl TemplateCacheCounters {
    /// Adds what grew from `before` to `now` (a fresh session starts from zero, so
    /// nothing is ever subtracted).
    pub fn add_growth(&self, before: &TemplateCacheTotals, now: &TemplateCacheTotals) {
        let pairs = [
            (&self.hits, before.hits, now.hits),
            (&self.misses, before.misses, now.misses),
            (&self.evictions, before.evictions, now.evictions),
            (&self.collisions, before.collisions, now.collisions),
            (&self.pending_replayed, before.pending_replayed, now.pending_replayed),
            (&self.pending_dropped, before.pending_dropped, now.pending_dropped),
        ];
        for (counter, before, now) in pairs {
            let growth = now.saturating_sub(before);
            if growth > 0 {
                counter.fetch_add(growth, ORDER);
            }
        }
    }

    pub fn snapshot(&self) -> TemplateCacheTotals {
        TemplateCacheTotals {
            hits: self.hits.load(ORDER),
            misses: self.misses.load(ORDER),
            evictions: self.evictions.load(ORDER),
            collisions: self.collisions.load(ORDER),
            pending_replayed: self.pending_replayed.load(ORDER),
            pending_dropped: self.pending_dropped.load(ORDER),
        }
    }
}

/// Counters of one listener (one socket) and the exporters below it.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    /// Datagrams read from the socket, dropped ones included.
    pub datagrams_received: AtomicU64,
    /// Payload bytes read from the socket.
    pub bytes_received: AtomicU64,
    /// Datagrams dropped before decoding, by reason.
    pub datagrams_dropped: DatagramDrops,
    /// Accepted datagrams lost because the actor holding them failed or was stopped
    /// (an exporter panic, a listener restart, a drain cut short).
    pub datagrams_lost_in_restart: AtomicU64,
    /// Datagrams an exporter decoded and whose flows it handed to the publisher.
    pub datagrams_decoded: AtomicU64,
    /// Errors reported by the decoders, by `DecodeError::reason()`.
    pub decode_errors: LabeledCounter,
    /// Lifecycle events reported by the decoders, by kind ("template_learned", …).
    pub lifecycle_events: LabeledCounter,
    /// Flows decoded and handed to the publisher.
    pub flows_decoded: AtomicU64,
    /// Records recognised but not flows (options data, sFlow counter samples).
    pub non_flow_records: AtomicU64,
    /// Data sets parked in a pending-flows cache until their template arrives.
    pub records_pending: AtomicU64,
    /// Export datagrams the exporters' sequence numbers show were lost before reaching
    /// this socket (sFlow, NetFlow v9).
    pub export_datagrams_lost: AtomicU64,
    /// Flows / data records the exporters' sequence numbers show were lost upstream
    /// (NetFlow v5, IPFIX).
    pub export_records_lost: AtomicU64,
    /// Flows emitted with sampling rate 0: the exporter announced none.
    pub flows_sampling_rate_unknown: AtomicU64,
    /// Flows given the configured default sampling rate.
    pub flows_sampling_rate_defaulted: AtomicU64,
    /// Flows whose times failed the decoder's sanity check.
    pub flows_time_anomalies: AtomicU64,
    /// Flows emitted without a start or end time.
    pub flows_time_unknown: AtomicU64,
    /// Errors returned by `recvmmsg` on the socket.
    pub receive_errors: AtomicU64,
    /// Exporter actors alive now (a gauge).
    pub exporters_live: AtomicU64,
    /// Exporter actors started for a new source.
    pub exporters_added: AtomicU64,
    /// Exporter actors stopped after `idle_timeout` of silence.
    pub exporters_evicted: AtomicU64,
    /// Exporter actors restarted with fresh state after a failure.
    pub exporters_restarted: AtomicU64,
    /// Times this listener actor itself was restarted by the root supervisor.
    pub listener_restarts: AtomicU64,
    /// Accepted datagrams whose flows have not yet reached the publisher's batch (a gauge).
    pub datagrams_in_flight: AtomicU64,
    /// Template cache activity of all its exporters.
    pub template_cache: TemplateCacheCounters,
    /// Per-exporter figures, capped in cardinality.
    pub exporters: ExporterTable,
    /// Connections of an IPFIX-over-TCP/TLS listener (zero on UDP listeners).
    pub sessions: SessionCounters,
}

impl ListenerCounters {
    /// Counters whose exporter table gives `max_series` exporters series of their own.
    pub fn new(max_series: usize) -> Self {
        ListenerCounters { exporters: ExporterTable::new(max_series), ..Default::default() }
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> ListenerCountersSnapshot {
        ListenerCountersSnapshot {
            datagrams_received: self.datagrams_received.load(ORDER),
            bytes_received: self.bytes_received.load(ORDER),
            dropped_channel_full: self.datagrams_dropped.channel_full.load(ORDER),
            dropped_exporter_cap: self.datagrams_dropped.exporter_cap.load(ORDER),
            dropped_source_denied: self.datagrams_dropped.source_denied.load(ORDER),
            dropped_oversized: self.datagrams_dropped.oversized.load(ORDER),
            dropped_rate_limited: self.datagrams_dropped.rate_limited.load(ORDER),
            dropped_partition_exporter_cap: self
                .datagrams_dropped
                .partition_exporter_cap
                .load(ORDER),
            dropped_partition_rate_limited: self
                .datagrams_dropped
                .partition_rate_limited
                .load(ORDER),
            datagrams_lost_in_restart: self.datagrams_lost_in_restart.load(ORDER),
            datagrams_decoded: self.datagrams_decoded.load(ORDER),
            decode_errors: self.decode_errors.snapshot(),
            lifecycle_events: self.lifecycle_events.snapshot(),
            flows_decoded: self.flows_decoded.load(ORDER),
            non_flow_records: self.non_flow_records.load(ORDER),
            records_pending: self.records_pending.load(ORDER),
            export_datagrams_lost: self.export_datagrams_lost.load(ORDER),
            export_records_lost: self.export_records_lost.load(ORDER),
            flows_sampling_rate_unknown: self.flows_sampling_rate_unknown.load(ORDER),
            flows_sampling_rate_defaulted: self.flows_sampling_rate_defaulted.load(ORDER),
            flows_time_anomalies: self.flows_time_anomalies.load(ORDER),
            flows_time_unknown: self.flows_time_unknown.load(ORDER),
            receive_errors: self.receive_errors.load(ORDER),
            exporters_live: self.exporters_live.load(ORDER),
            exporters_added: self.exporters_added.load(ORDER),
            exporters_evicted: self.exporters_evicted.load(ORDER),
            exporters_restarted: self.exporters_restarted.load(ORDER),
            listener_restarts: self.listener_restarts.load(ORDER),
            datagrams_in_flight: self.datagrams_in_flight.load(ORDER),
            template_cache: self.template_cache.snapshot(),
            exporters: self.exporters.snapshot(),
            sessions: self.sessions.snapshot(),
        }
    }
}

/// A point-in-time copy of [`ListenerCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerCountersSnapshot {
    pub datagrams_received: u64,
    pub bytes_received: u64,
    pub dropped_channel_full: u64,
    pub dropped_exporter_cap: u64,
    pub dropped_source_denied: u64,
    pub dropped_oversized: u64,
    pub dropped_rate_limited: u64,
    pub dropped_partition_exporter_cap: u64,
    pub dropped_partition_rate_limited: u64,
    pub datagrams_lost_in_restart: u64,
    pub datagrams_decoded: u64,
    pub decode_errors: BTreeMap<&'static str, u64>,
    pub lifecycle_events: BTreeMap<&'static str, u64>,
    pub flows_decoded: u64,
    pub non_flow_records: u64,
    pub records_pending: u64,
    pub export_datagrams_lost: u64,
    pub export_records_lost: u64,
    pub flows_sampling_rate_unknown: u64,
    pub flows_sampling_rate_defaulted: u64,
    pub flows_time_anomalies: u64,
    pub flows_time_unknown: u64,
    pub receive_errors: u64,
    pub exporters_live: u64,
    pub exporters_added: u64,
    pub exporters_evicted: u64,
    pub exporters_restarted: u64,
    pub listener_restarts: u64,
    pub datagrams_in_flight: u64,
    pub template_cache: TemplateCacheTotals,
    pub exporters: ExporterTableSnapshot,
    pub sessions: SessionCountersSnapshot,
}

impl ListenerCountersSnapshot {
    /// Datagrams dropped before decoding, all reasons.
    pub fn datagrams_dropped(&self) -> u64 {
        self.dropped_channel_full
            + self.dropped_exporter_cap
            + self.dropped_source_denied
            + self.dropped_oversized
            + self.dropped_rate_limited
            + self.dropped_partition_exporter_cap
            + self.dropped_partition_rate_limited
    }

    /// Received datagrams not yet accounted as decoded, dropped or lost: zero once drained.
    pub fn datagrams_unaccounted(&self) -> u64 {
        self.datagrams_received.saturating_sub(
            self.datagrams_decoded + self.datagrams_dropped() + self.datagrams_lost_in_restart,
        )
    }
}

/// Reasons a publisher gives up flows, as used in [`PublisherCounters::flows_dropped`].
pub mod flow_drop {
    /// The publisher actor failed or was killed with the flows still in its mailbox.
    pub const PUBLISHER_FAILED: &str = "publisher_failed";
    /// The shutdown drain ran out of time with the flows still pending.
    pub const DRAIN_TIMEOUT: &str = "drain_timeout";
    /// The sink reported on fewer flows than it was given.
    pub const SINK_UNREPORTED: &str = "sink_unreported";
}

/// Counters of one publisher (one subject).
#[derive(Debug, Default)]
pub struct PublisherCounters {
    /// Flows the sink accepted.
    pub flows_published: AtomicU64,
    /// Batches the sink accepted.
    pub batches_published: AtomicU64,
    /// Flows given up, by reason: the sink's error reasons and those of [`flow_drop`].
    pub flows_dropped: LabeledCounter,
    /// Times the publisher actor was restarted by the root supervisor.
    pub publisher_restarts: AtomicU64,
    /// Flows held by the publisher, waiting for a batch or a free lane (a gauge).
    pub flows_buffered: AtomicU64,
    /// Flows handed to the sink whose outcome (acknowledgement) is awaited (a gauge).
    pub flows_in_flight: AtomicU64,
    /// From handing a batch to the sink until it is settled, for batches it accepted.
    pub publish_latency: LatencyHistogram,
    /// From a flow's datagram being received until the sink delivered it (JetStream:
    /// acknowledged), per flow.
    pub flow_latency: LatencyHistogram,
}

impl PublisherCounters {
    /// Reads every counter.
    pub fn snapshot(&self) -> PublisherCountersSnapshot {
        PublisherCountersSnapshot {
            flows_published: self.flows_published.load(ORDER),
            batches_published: self.batches_published.load(ORDER),
            flows_dropped: self.flows_dropped.snapshot(),
            publisher_restarts: self.publisher_restarts.load(ORDER),
            flows_buffered: self.flows_buffered.load(ORDER),
            flows_in_flight: self.flows_in_flight.load(ORDER),
            publish_latency: self.publish_latency.snapshot(),
            flow_latency: self.flow_latency.snapshot(),
        }
    }
}

/// A point-in-time copy of [`PublisherCounters`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublisherCountersSnapshot {
    pub flows_published: u64,
    pub batches_published: u64,
    pub flows_dropped: BTreeMap<&'static str, u64>,
    pub publisher_restarts: u64,
    pub flows_buffered: u64,
    pub flows_in_flight: u64,
    pub publish_latency: LatencySnapshot,
    pub flow_latency: LatencySnapshot,
}

impl PublisherCountersSnapshot {
    /// Flows given up, all reasons.
    pub fn flows_dropped_total(&self) -> u64 {
        self.flows_dropped.values().sum()
    }
}

/// One listener's identity and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSnapshot {
    /// "netflow@0.0.0.0:2055", as configured.
    pub name: String,
    /// The subject its flows are published on.
    pub subject: String,
    /// Its own partition (its `partition`, else the install's): where exporters the
    /// registry does not place go, and what its listener-wide figures are labelled with.
    pub partition: String,
    /// The address the socket is bound to (the real port when 0 was configured).
    pub local_addr: SocketAddr,
    pub counters: ListenerCountersSnapshot,
}

/// One publisher's identity and counters.
#[derive(Debug, Clone, PartialEq)]
pub struct PublisherSnapshot {
    pub subject: String,
    /// Whose flows: every partition has publishers of its own.
    pub partition: String,
    pub counters: PublisherCountersSnapshot,
}

/// Every counter of a collector, at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CountersSnapshot {
    /// In configuration order.
    pub listeners: Vec<ListenerSnapshot>,
    /// One per distinct subject, in order of first appearance.
    pub publishers: Vec<PublisherSnapshot>,
    /// The partitions with limits (`partitions.<name>`), in name order.
    pub partitions: Vec<QuotaSnapshot>,
}

impl CountersSnapshot {
    /// Datagrams received by all listeners.
    pub fn datagrams_received(&self) -> u64 {
        self.listeners.iter().map(|l| l.counters.datagrams_received).sum()
    }

    /// Flows decoded by all listeners.
    pub fn flows_decoded(&self) -> u64 {
        self.listeners.iter().map(|l| l.counters.flows_decoded).sum()
    }

    /// Flows accepted by all sinks.
    pub fn flows_published(&self) -> u64 {
        self.publishers.iter().map(|p| p.counters.flows_published).sum()
    }

    /// Flows given up by all publishers.
    pub fn flows_dropped(&self) -> u64 {
        self.publishers.iter().map(|p| p.counters.flows_dropped_total()).sum()
    }

    /// The listener bound to `addr`, if any.
    pub fn listener(&self, addr: SocketAddr) -> Option<&ListenerSnapshot> {
        self.listeners.iter().find(|l| l.local_addr == addr)
    }

    /// The first publisher of `subject` (its listeners' own partition), if any.
    pub fn publisher(&self, subject: &str) -> Option<&PublisherSnapshot> {
        self.publishers.iter().find(|p| p.subject == subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labeled_counter_adds_per_label() {
        let c = LabeledCounter::default();
        c.add("a", 2);
        c.add("b", 1);
        c.add("a", 3);
        assert_eq!(c.get("a"), 5);
        assert_eq!(c.get("b"), 1);
        assert_eq!(c.get("missing"), 0);
        assert_eq!(c.snapshot().into_iter().collect::<Vec<_>>(), vec![("a", 5), ("b", 1)]);
    }

    #[test]
    fn unaccounted_is_what_is_neither_decoded_dropped_nor_lost() {
        let s = ListenerCountersSnapshot {
            datagrams_received: 11,
            datagrams_decoded: 5,
            dropped_channel_full: 2,
            dropped_exporter_cap: 1,
            dropped_partition_rate_limited: 1,
            datagrams_lost_in_restart: 1,
            ..Default::default()
        };
        assert_eq!(s.datagrams_dropped(), 4);
        assert_eq!(s.datagrams_unaccounted(), 1);
    }
}
