//! The pipeline's counters as Prometheus families, read from a [`CountersSnapshot`] at
//! scrape time: the hot path keeps its plain atomics and pays nothing per scrape.

use std::fmt;
use std::net::SocketAddr;

use flow_actors::CountersSnapshot;
use flow_actors::counters::{
    LatencySnapshot, ListenerCountersSnapshot, ListenerSnapshot, PublisherSnapshot,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads the counters; called once per scrape.
pub type CountersProvider = dyn Fn() -> CountersSnapshot + Send + Sync;
/// Reads the kernel's drop count of a bound UDP address.
pub(crate) type KernelDrops = fn(SocketAddr) -> Option<u64>;

/// A per-listener counter: name, help, and how to read it.
type ListenerFigure = (&'static str, &'static str, fn(&ListenerCountersSnapshot) -> u64);

const LISTENER_COUNTERS: &[ListenerFigure] = &[
    (
        "flow_collector_datagrams_received",
        "Datagrams read from the socket, dropped ones included",
        |c| c.datagrams_received,
    ),
    ("flow_collector_bytes_received", "Payload bytes read from the socket", |c| c.bytes_received),
    ("flow_collector_datagrams_decoded", "Datagrams decoded and handed on", |c| {
        c.datagrams_decoded
    }),
    ("flow_collector_flows_decoded", "Flows decoded and handed to the publisher", |c| {
        c.flows_decoded
    }),
    (
        "flow_collector_non_flow_records",
        "Records recognised but not flows (options data, sFlow counters)",
        |c| c.non_flow_records,
    ),
    ("flow_collector_records_pending", "Data sets parked until their template arrives", |c| {
        c.records_pending
    }),
    (
        "flow_collector_flows_sampling_rate_unknown",
        "Flows emitted with sampling rate 0: the exporter announced none",
        |c| c.flows_sampling_rate_unknown,
    ),
    (
        "flow_collector_flows_sampling_rate_defaulted",
        "Flows given the configured default sampling rate",
        |c| c.flows_sampling_rate_defaulted,
    ),
    ("flow_collector_flows_time_anomalies", "Flows whose times failed the sanity check", |c| {
        c.flows_time_anomalies
    }),
    ("flow_collector_flows_time_unknown", "Flows emitted without a start or end time", |c| {
        c.flows_time_unknown
    }),
    ("flow_collector_receive_errors", "Errors returned by recvmmsg on the socket", |c| {
        c.receive_errors
    }),
    ("flow_collector_exporters_added", "Exporter actors started for a new source", |c| {
        c.exporters_added
    }),
    ("flow_collector_exporters_evicted", "Exporter actors stopped after the idle timeout", |c| {
        c.exporters_evicted
    }),
    ("flow_collector_exporters_restarted", "Exporter actors restarted after a failure", |c| {
        c.exporters_restarted
    }),
    ("flow_collector_listener_restarts", "Times the listener actor was restarted", |c| {
        c.listener_restarts
    }),
    (
        "flow_collector_sessions_accepted",
        "IPFIX over TCP/TLS: connections that became sessions (TLS: handshake done)",
        |c| c.sessions.accepted,
    ),
    ("flow_collector_accept_errors", "IPFIX over TCP/TLS: errors returned by accept", |c| {
        c.sessions.accept_errors
    }),
    ("flow_collector_template_cache_hits", "Data sets whose template was cached", |c| {
        c.template_cache.hits
    }),
    (
        "flow_collector_template_cache_misses",
        "Data sets whose template was not cached (parked or dropped)",
        |c| c.template_cache.misses,
    ),
    (
        "flow_collector_template_cache_evictions",
        "Templates evicted to make room (max_templates)",
        |c| c.template_cache.evictions,
    ),
    (
        "flow_collector_template_collisions",
        "Templates replaced by one with the same id and another layout",
        |c| c.template_cache.collisions,
    ),
    (
        "flow_collector_pending_flows_replayed",
        "Parked data sets decoded once their template arrived",
        |c| c.template_cache.pending_replayed,
    ),
    (
        "flow_collector_pending_flows_dropped",
        "Parked data sets given up (time to live, caps, exporter restarts)",
        |c| c.template_cache.pending_dropped,
    ),
];

const LISTENER_GAUGES: &[ListenerFigure] = &[
    ("flow_collector_exporters", "Exporter actors alive now", |c| c.exporters_live),
    (
        "flow_collector_sessions",
        "IPFIX over TCP/TLS: connections open now, handshaking ones included",
        |c| c.sessions.live,
    ),
    (
        "flow_collector_datagrams_in_flight",
        "Accepted datagrams not yet in a publisher batch (one of more than 30 flows counts once per 30)",
        |c| c.datagrams_in_flight,
    ),
    ("flow_collector_templates", "Templates cached by the listener's exporters", |c| {
        c.exporters.totals.templates
    }),
    (
        "flow_collector_pending_flows",
        "Data sets parked by the listener's exporters until their template arrives",
        |c| c.exporters.totals.pending_flows,
    ),
    (
        "flow_collector_pending_flows_bytes",
        "Bytes of the data sets the listener's exporters park (all listeners together are \
         bounded by pending_flows_max_bytes)",
        |c| c.exporters.totals.pending_bytes,
    ),
    (
        "flow_collector_exporters_sampling_rate_unknown",
        "Exporters whose latest flows had no known sampling rate",
        |c| c.exporters.totals.sampling_rate_unknown,
    ),
];

/// A per-publisher counter.
type PublisherFigure = (&'static str, &'static str, fn(&PublisherSnapshot) -> u64);

const PUBLISHER_COUNTERS: &[PublisherFigure] = &[
    ("flow_collector_flows_published", "Flows the sink accepted", |p| p.counters.flows_published),
    ("flow_collector_batches_published", "Batches the sink accepted", |p| {
        p.counters.batches_published
    }),
    ("flow_collector_publisher_restarts", "Times the publisher actor was restarted", |p| {
        p.counters.publisher_restarts
    }),
];

const PUBLISHER_GAUGES: &[PublisherFigure] = &[
    (
        "flow_collector_publish_buffered_messages",
        "Messages (one per flow) the publisher holds until a batch and a lane are free",
        |p| p.counters.flows_buffered,
    ),
    (
        "flow_collector_publish_in_flight_acks",
        "Messages (one per flow) handed to the transport whose acknowledgement is awaited",
        |p| p.counters.flows_in_flight,
    ),
];

/// Encodes a fresh snapshot on every scrape.
pub(crate) struct SnapshotCollector {
    counters: Box<CountersProvider>,
    kernel_drops: KernelDrops,
}

impl SnapshotCollector {
    pub(crate) fn new(counters: Box<CountersProvider>, kernel_drops: KernelDrops) -> Self {
        SnapshotCollector { counters, kernel_drops }
    }
}

impl fmt::Debug for SnapshotCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotCollector").finish_non_exhaustive()
    }
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let snapshot = (self.counters)();
        encode_listeners(&mut encoder, &snapshot.listeners, self.kernel_drops)?;
        super::exporters::encode(&mut encoder, &snapshot.listeners, &snapshot.partitions)?;
        encode_publishers(&mut encoder, &snapshot.publishers)
    }
}

fn encode_listeners(
    encoder: &mut DescriptorEncoder,
    listeners: &[ListenerSnapshot],
    kernel_drops: KernelDrops,
) -> fmt::Result {
    let label = |l: &ListenerSnapshot| listener_labels(l);
    for (name, help, read) in LISTENER_COUNTERS {
        let samples = listeners.iter().map(|l| (label(l), read(&l.counters)));
        family(encoder, name, help, MetricType::Counter, samples)?;
    }
    for (name, help, read) in LISTENER_GAUGES {
        let samples = listeners.iter().map(|l| (label(l), read(&l.counters)));
        family(encoder, name, help, MetricType::Gauge, samples)?;
    }
    let drops = listeners.iter().flat_map(|l| datagram_drops(l, kernel_drops));
    family(
        encoder,
        "flow_collector_datagrams_dropped",
        "Datagrams dropped before decoding, by reason",
        MetricType::Counter,
        drops,
    )?;
    let errors = labeled(listeners, "reason", |c| &c.decode_errors);
    family(
        encoder,
        "flow_collector_decode_errors",
        "Decode errors, by reason",
        MetricType::Counter,
        errors,
    )?;
    let events = labeled(listeners, "event", |c| &c.lifecycle_events);
    family(
        encoder,
        "flow_collector_lifecycle_events",
        "Template and exporter lifecycle events (template_learned, missing_template, ...)",
        MetricType::Counter,
        events,
    )?;
    let refused = labeled(listeners, "reason", |c| &c.sessions.refused);
    family(
        encoder,
        "flow_collector_sessions_refused",
        "IPFIX over TCP/TLS: connections closed at once, by reason (max_sessions, source_denied)",
        MetricType::Counter,
        refused,
    )?;
    let handshakes = labeled(listeners, "reason", |c| &c.sessions.tls_handshake_failures);
    family(
        encoder,
        "flow_collector_tls_handshake_failures",
        "IPFIX over TLS: failed handshakes, by reason (no_certificate, certificate_rejected, timeout, ...)",
        MetricType::Counter,
        handshakes,
    )?;
    let closed = labeled(listeners, "reason", |c| &c.sessions.closed);
    family(
        encoder,
        "flow_collector_sessions_closed",
        "IPFIX over TCP/TLS: sessions ended, by reason (peer_closed, idle_timeout, framing_error, ...)",
        MetricType::Counter,
        closed,
    )?;
    let lost = listeners.iter().flat_map(|l| {
        [
            ("datagrams", l.counters.export_datagrams_lost),
            ("records", l.counters.export_records_lost),
        ]
        .map(|(unit, n)| (listener_labels_and(l, "unit", unit), n))
    });
    family(
        encoder,
        "flow_collector_sequence_lost",
        "Export datagrams (NetFlow v9, sFlow) or records (NetFlow v5, IPFIX) the exporters' sequence numbers show lost upstream",
        MetricType::Counter,
        lost,
    )
}

/// A listener's labels: its name and its own partition.
fn listener_labels(l: &ListenerSnapshot) -> [(&'static str, String); 2] {
    [("listener", l.name.clone()), ("partition", l.partition.clone())]
}

/// A listener's labels and one more.
fn listener_labels_and(
    l: &ListenerSnapshot,
    key: &'static str,
    value: &str,
) -> [(&'static str, String); 3] {
    let [listener, partition] = listener_labels(l);
    [listener, partition, (key, value.to_owned())]
}

/// One listener's drops by reason; `kernel` only where `/proc` reports it.
fn datagram_drops(
    l: &ListenerSnapshot,
    kernel_drops: KernelDrops,
) -> Vec<([(&'static str, String); 3], u64)> {
    let c = &l.counters;
    let mut reasons = vec![
        ("channel_full", c.dropped_channel_full),
        ("exporter_cap", c.dropped_exporter_cap),
        ("source_denied", c.dropped_source_denied),
        ("oversized", c.dropped_oversized),
        ("rate_limited", c.dropped_rate_limited),
        ("partition_exporter_cap", c.dropped_partition_exporter_cap),
        ("partition_rate_limited", c.dropped_partition_rate_limited),
        ("lost_in_restart", c.datagrams_lost_in_restart),
    ];
    if let Some(kernel) = kernel_drops(l.local_addr) {
        reasons.push(("kernel", kernel));
    }
    reasons.into_iter().map(|(reason, n)| (listener_labels_and(l, "reason", reason), n)).collect()
}

/// A per-listener family keyed by one label from a labeled counter of the snapshot.
fn labeled<'a>(
    listeners: &'a [ListenerSnapshot],
    key: &'static str,
    read: fn(&ListenerCountersSnapshot) -> &std::collections::BTreeMap<&'static str, u64>,
) -> impl Iterator<Item = ([(&'static str, String); 3], u64)> + 'a {
    listeners.iter().flat_map(move |l| {
        read(&l.counters).iter().map(move |(value, n)| (listener_labels_and(l, key, value), *n))
    })
}

fn encode_publishers(
    encoder: &mut DescriptorEncoder,
    publishers: &[PublisherSnapshot],
) -> fmt::Result {
    for (name, help, read) in PUBLISHER_COUNTERS {
        let samples = publishers.iter().map(|p| (publisher_labels(p), read(p)));
        family(encoder, name, help, MetricType::Counter, samples)?;
    }
    for (name, help, read) in PUBLISHER_GAUGES {
        let samples = publishers.iter().map(|p| (publisher_labels(p), read(p)));
        family(encoder, name, help, MetricType::Gauge, samples)?;
    }
    publish_latency(encoder, publishers)?;
    let dropped = publishers.iter().flat_map(|p| {
        p.counters.flows_dropped.iter().map(|(reason, n)| {
            let [subject, partition] = publisher_labels(p);
            ([subject, partition, ("reason", (*reason).to_owned())], *n)
        })
    });
    family(
        encoder,
        "flow_collector_flows_dropped",
        "Flows the publisher gave up, by reason (publish give-up, buffer full, ...)",
        MetricType::Counter,
        dropped,
    )
}

/// A publisher's labels: its subject and whose flows it publishes.
fn publisher_labels(p: &PublisherSnapshot) -> [(&'static str, String); 2] {
    [("subject", p.subject.clone()), ("partition", p.partition.clone())]
}

/// A latency histogram family: name, help, and which histogram of a publisher.
type LatencyFigure = (&'static str, &'static str, fn(&PublisherSnapshot) -> &LatencySnapshot);

const LATENCIES: &[LatencyFigure] = &[
    (
        "flow_collector_publish_latency_seconds",
        "Time from handing a batch to the transport until it is acknowledged",
        |p| &p.counters.publish_latency,
    ),
    (
        "flow_collector_flow_latency_seconds",
        "Time from a flow's datagram being received until the sink delivered it \
         (JetStream: acknowledged), per flow",
        |p| &p.counters.flow_latency,
    ),
];

/// The latency histograms of every publisher.
fn publish_latency(
    encoder: &mut DescriptorEncoder,
    publishers: &[PublisherSnapshot],
) -> fmt::Result {
    for (name, help, read) in LATENCIES {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for p in publishers {
            let latency = read(p);
            let labels = publisher_labels(p);
            let mut sample = metric.encode_family(&labels)?;
            sample.encode_histogram::<NoLabelSet>(
                latency.sum_seconds,
                latency.count,
                &latency.buckets,
                None,
            )?;
        }
    }
    Ok(())
}

/// Writes one family: its descriptor, then one sample per label set.
pub(super) fn family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let sample = metric.encode_family(&labels)?;
        match kind {
            MetricType::Gauge => {
                ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(sample)?
            }
            _ => ConstCounter::new(value).encode(sample)?,
        }
    }
    Ok(())
}
