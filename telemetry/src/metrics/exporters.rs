//! Per-exporter families, `{listener, partition, exporter}`: the first exporters of each
//! listener (`metrics_max_exporters`) by address, every later one summed into
//! `exporter="other"` of its partition, so a flood of spoofed sources cannot blow up the
//! series count. Then per-partition families: what each partition's exporters sent
//! (`flow_collector_partition_*{listener, partition}`, running totals that add up to the
//! listener's), and the partitions' limits (`partitions.<name>`).

use std::fmt;

use flow_actors::counters::{ExporterFigures, ExporterGauges, ListenerSnapshot, QuotaSnapshot};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::snapshot::family;

/// The label value of the series that sums exporters past the cap.
pub(crate) const OTHER: &str = "other";

type Labels = [(&'static str, String); 3];

/// One exporter's row: its label and figures.
struct Row<'a> {
    labels: Labels,
    figures: &'a ExporterFigures,
    gauges: &'a ExporterGauges,
}

type FigureRead = fn(&ExporterFigures) -> u64;
type GaugeRead = fn(&ExporterGauges) -> u64;

const COUNTERS: &[(&str, &str, FigureRead)] = &[
    ("flow_collector_exporter_datagrams", "Datagrams decoded (or failing to), per exporter", |f| {
        f.datagrams
    }),
    ("flow_collector_exporter_bytes", "Payload bytes of those datagrams, per exporter", |f| {
        f.bytes
    }),
    ("flow_collector_exporter_flows", "Flows decoded, per exporter", |f| f.flows),
    ("flow_collector_exporter_decode_errors", "Decode errors, per exporter", |f| f.decode_errors),
    (
        "flow_collector_exporter_sequence_lost",
        "Datagrams or records the exporter's sequence numbers show lost upstream",
        |f| f.sequence_lost,
    ),
    (
        "flow_collector_exporter_flows_sampling_rate_unknown",
        "Flows emitted with sampling rate 0 (none announced), per exporter",
        |f| f.sampling_rate_unknown,
    ),
];

const GAUGES: &[(&str, &str, GaugeRead)] = &[
    ("flow_collector_exporter_templates", "Templates cached for the exporter", |g| g.templates),
    (
        "flow_collector_exporter_pending_flows",
        "Data sets parked for the exporter until their template arrives",
        |g| g.pending_flows,
    ),
    (
        "flow_collector_exporter_pending_flows_bytes",
        "Bytes of the data sets parked for the exporter (pending_flows.max_bytes)",
        |g| g.pending_bytes,
    ),
    (
        "flow_collector_exporter_sampling_rate_unknown",
        "1 while the exporter's latest flows have no known sampling rate (for `other`: how \
         many such exporters)",
        |g| g.sampling_rate_unknown,
    ),
];

/// What each partition's exporters sent, per listener: running totals.
const PARTITION_COUNTERS: &[(&str, &str, FigureRead)] = &[
    (
        "flow_collector_partition_datagrams",
        "Datagrams decoded (or failing to) from the partition's exporters",
        |f| f.datagrams,
    ),
    ("flow_collector_partition_bytes", "Payload bytes from the partition's exporters", |f| f.bytes),
    ("flow_collector_partition_flows", "Flows decoded from the partition's exporters", |f| f.flows),
    ("flow_collector_partition_decode_errors", "Decode errors of the partition's exporters", |f| {
        f.decode_errors
    }),
];

/// Writes every per-exporter and per-partition family.
pub(super) fn encode(
    encoder: &mut DescriptorEncoder,
    listeners: &[ListenerSnapshot],
    quotas: &[QuotaSnapshot],
) -> fmt::Result {
    let rows: Vec<Row<'_>> = listeners.iter().flat_map(rows_of).collect();
    for (name, help, read) in COUNTERS {
        let samples = rows.iter().map(|row| (row.labels.clone(), read(row.figures)));
        family(encoder, name, help, MetricType::Counter, samples)?;
    }
    for (name, help, read) in GAUGES {
        let samples = rows.iter().map(|row| (row.labels.clone(), read(row.gauges)));
        family(encoder, name, help, MetricType::Gauge, samples)?;
    }
    for (name, help, read) in PARTITION_COUNTERS {
        let samples = listeners.iter().flat_map(|l| {
            l.counters.exporters.partitions.iter().map(move |(partition, figures)| {
                (
                    [("listener", l.name.clone()), ("partition", partition.to_string())],
                    read(figures),
                )
            })
        });
        family(encoder, name, help, MetricType::Counter, samples)?;
    }
    encode_quotas(encoder, quotas)
}

/// The limits of the partitions that have any, and what they refused.
fn encode_quotas(encoder: &mut DescriptorEncoder, quotas: &[QuotaSnapshot]) -> fmt::Result {
    let label = |q: &QuotaSnapshot| [("partition", q.partition.clone())];
    family(
        encoder,
        "flow_collector_partition_exporters",
        "Exporters and TCP/TLS sessions of the partition live now, over every listener (partitions with limits)",
        MetricType::Gauge,
        quotas.iter().map(|q| (label(q), q.exporters_live)),
    )?;
    family(
        encoder,
        "flow_collector_partition_max_exporters",
        "The partition's max_exporters",
        MetricType::Gauge,
        quotas.iter().filter_map(|q| Some((label(q), q.max_exporters?))),
    )?;
    let drops = quotas.iter().flat_map(|q| {
        [("exporter_cap", q.dropped_exporter_cap), ("rate_limited", q.dropped_rate_limited)]
            .map(|(reason, n)| ([label(q)[0].clone(), ("reason", reason.to_owned())], n))
    });
    family(
        encoder,
        "flow_collector_partition_datagrams_dropped",
        "Datagrams dropped by the partition's limits (also in flow_collector_datagrams_dropped \
         as partition_exporter_cap and partition_rate_limited)",
        MetricType::Counter,
        drops,
    )
}

/// A listener's exporters with series of their own, then `other` of each partition once
/// anything went there.
fn rows_of(listener: &ListenerSnapshot) -> Vec<Row<'_>> {
    let table = &listener.counters.exporters;
    let labels = |partition: &str, exporter: String| {
        [
            ("listener", listener.name.clone()),
            ("partition", partition.to_owned()),
            ("exporter", exporter),
        ]
    };
    let mut rows: Vec<Row<'_>> = table
        .exporters
        .iter()
        .map(|series| Row {
            labels: labels(&series.partition, series.exporter.to_string()),
            figures: &series.figures,
            gauges: &series.gauges,
        })
        .collect();
    for (partition, other) in &table.other {
        if other.figures != ExporterFigures::default() || other.gauges != ExporterGauges::default()
        {
            rows.push(Row {
                labels: labels(partition, OTHER.to_owned()),
                figures: &other.figures,
                gauges: &other.gauges,
            });
        }
    }
    rows
}
