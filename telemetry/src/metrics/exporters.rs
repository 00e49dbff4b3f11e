//! Per-exporter families, `{listener, exporter}`: the first exporters of each listener
//! (`metrics_max_exporters`) by address, every later one summed into `exporter="other"`,
//! so a flood of spoofed sources cannot blow up the series count.

use std::fmt;

use flow_actors::counters::{ExporterFigures, ExporterGauges, ListenerSnapshot};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::snapshot::family;

/// The label value of the series that sums exporters past the cap.
pub(crate) const OTHER: &str = "other";

type Labels = [(&'static str, String); 2];

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

/// Writes every per-exporter family.
pub(super) fn encode(
    encoder: &mut DescriptorEncoder,
    listeners: &[ListenerSnapshot],
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
    Ok(())
}

/// A listener's exporters with series of their own, then `other` once anything went there.
fn rows_of(listener: &ListenerSnapshot) -> Vec<Row<'_>> {
    let table = &listener.counters.exporters;
    let labels = |exporter: String| [("listener", listener.name.clone()), ("exporter", exporter)];
    let mut rows: Vec<Row<'_>> = table
        .exporters
        .iter()
        .map(|series| Row {
            labels: labels(series.exporter.to_string()),
            figures: &series.figures,
            gauges: &series.gauges,
        })
        .collect();
    if table.other != ExporterFigures::default() || table.other_gauges != ExporterGauges::default()
    {
        rows.push(Row {
            labels: labels(OTHER.to_owned()),
            figures: &table.other,
            gauges: &table.other_gauges,
        });
    }
    rows
}
