//! Per-exporter traffic figures for `/metrics`, capped in cardinality: the first
//! `max_series` exporters of a listener get series of their own, every later one adds to
//! a single `other` series. Assignment is sticky (a ranking by traffic would move
//! figures between series, and `other` would then run backwards, which Prometheus reads
//! as a counter reset); an exporter's slot is freed when it is evicted for idleness, and
//! its series ends there.
//!
//! Updated once per decoded batch by the exporter actor, read at scrape time.

// Wired by the binary's integration (ListenerCounters, the exporter's decode, the
// listener's eviction); until then only the tests use it.
#![cfg_attr(not(test), expect(dead_code, reason = "not wired into ListenerCounters yet"))]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

/// Series of their own per listener when nothing else is configured.
pub const DEFAULT_MAX_SERIES: usize = 100;

/// What one exporter sent and what became of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExporterFigures {
    /// Datagrams decoded.
    pub datagrams: u64,
    /// Payload bytes of those datagrams.
    pub bytes: u64,
    /// Flows decoded.
    pub flows: u64,
    /// Decode errors.
    pub decode_errors: u64,
    /// Datagrams or records its sequence numbers show lost upstream.
    pub sequence_lost: u64,
}

impl ExporterFigures {
    fn add(&mut self, other: &ExporterFigures) {
        self.datagrams = self.datagrams.saturating_add(other.datagrams);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.flows = self.flows.saturating_add(other.flows);
        self.decode_errors = self.decode_errors.saturating_add(other.decode_errors);
        self.sequence_lost = self.sequence_lost.saturating_add(other.sequence_lost);
    }
}

/// A point-in-time copy of an [`ExporterTable`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExporterTableSnapshot {
    /// Exporters with a series of their own, most bytes first.
    pub exporters: Vec<(IpAddr, ExporterFigures)>,
    /// Everything from exporters past the cap.
    pub other: ExporterFigures,
}

/// One listener's per-exporter figures.
#[derive(Debug)]
pub struct ExporterTable {
    max_series: usize,
    inner: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    series: HashMap<IpAddr, ExporterFigures>,
    other: ExporterFigures,
}

impl Default for ExporterTable {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_SERIES)
    }
}

impl ExporterTable {
    /// A table giving at most `max_series` exporters a series of their own.
    pub fn new(max_series: usize) -> Self {
        ExporterTable { max_series, inner: Mutex::new(Table::default()) }
    }

    /// Adds one batch's figures of `exporter`.
    pub fn record(&self, exporter: IpAddr, figures: &ExporterFigures) {
        let mut table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let has_slot = table.series.contains_key(&exporter) || table.series.len() < self.max_series;
        if has_slot {
            table.series.entry(exporter).or_default().add(figures);
        } else {
            table.other.add(figures);
        }
    }

    /// Ends the series of an exporter that went away, freeing its slot.
    pub fn forget(&self, exporter: IpAddr) {
        let mut table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        table.series.remove(&exporter);
    }

    /// Every series now.
    pub fn snapshot(&self) -> ExporterTableSnapshot {
        let table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut exporters: Vec<(IpAddr, ExporterFigures)> =
            table.series.iter().map(|(addr, figures)| (*addr, *figures)).collect();
        exporters.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(&b.0)));
        ExporterTableSnapshot { exporters, other: table.other }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    fn bytes(n: u64) -> ExporterFigures {
        ExporterFigures { datagrams: 1, bytes: n, flows: 2, decode_errors: 0, sequence_lost: 0 }
    }

    #[test]
    fn exporters_past_the_cap_add_to_other_and_series_stay_monotonic() {
        let table = ExporterTable::new(2);
        table.record(ip(1), &bytes(100));
        table.record(ip(2), &bytes(500));
        table.record(ip(3), &bytes(10_000));
        table.record(ip(1), &bytes(100));
        let snapshot = table.snapshot();
        let order: Vec<IpAddr> = snapshot.exporters.iter().map(|(addr, _)| *addr).collect();
        assert_eq!(order, vec![ip(2), ip(1)], "most bytes first");
        assert_eq!(
            snapshot.exporters[1].1,
            ExporterFigures { datagrams: 2, bytes: 200, flows: 4, ..Default::default() }
        );
        assert_eq!(snapshot.other, bytes(10_000), "the third exporter has no series of its own");
        table.record(ip(3), &bytes(1));
        assert_eq!(table.snapshot().other.bytes, 10_001);
    }

    #[test]
    fn a_forgotten_exporter_frees_its_slot() {
        let table = ExporterTable::new(1);
        table.record(ip(1), &bytes(5));
        table.record(ip(2), &bytes(7));
        table.forget(ip(1));
        table.record(ip(2), &bytes(7));
        let snapshot = table.snapshot();
        assert_eq!(snapshot.exporters, vec![(ip(2), bytes(7))]);
        assert_eq!(snapshot.other, bytes(7));
    }
}
