//! Per-exporter figures for `/metrics`, capped in cardinality: the first `max_series`
//! exporters of a listener get series of their own, every later one adds to a single
//! `other` series. Assignment is sticky (a ranking by traffic would move figures between
//! series, and `other` would then run backwards, which Prometheus reads as a counter
//! reset); an exporter's slot is freed when its actor stops (idle eviction), its series
//! ends there, and the next exporter to report past the cap takes the slot.
//!
//! Every live exporter, with a series or not, also leaves its current gauges here (the
//! templates and pending flows it holds, whether its sampling rate is unknown), so the
//! listener's totals cover all of them.
//!
//! Each series carries its exporter's partition; `other` is kept per partition, and so
//! is a running total of everything each partition's exporters sent, so per-tenant
//! figures add up to the listener's whatever the cap and evictions did.
//!
//! Updated once per decoded batch by the exporter actor, read at scrape time.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Series of their own per listener when nothing else is configured.
pub const DEFAULT_MAX_SERIES: usize = 100;

/// How an exporter is keyed and labelled: by its address (UDP, IPFIX over TCP), or by
/// the name in its client certificate (IPFIX over TLS).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExporterId {
    Addr(IpAddr),
    Name(Arc<str>),
}

impl From<IpAddr> for ExporterId {
    fn from(addr: IpAddr) -> Self {
        ExporterId::Addr(addr)
    }
}

impl fmt::Display for ExporterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExporterId::Addr(addr) => addr.fmt(f),
            ExporterId::Name(name) => f.write_str(name),
        }
    }
}

/// What one exporter sent and what became of it: counters, only ever added to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExporterFigures {
    /// Datagrams handed to its decoder (decoded or failing to).
    pub datagrams: u64,
    /// Payload bytes of those datagrams.
    pub bytes: u64,
    /// Flows decoded.
    pub flows: u64,
    /// Decode errors.
    pub decode_errors: u64,
    /// Datagrams or records its sequence numbers show lost upstream.
    pub sequence_lost: u64,
    /// Flows emitted with sampling rate 0 (none announced).
    pub sampling_rate_unknown: u64,
}

impl ExporterFigures {
    fn add(&mut self, other: &ExporterFigures) {
        self.datagrams = self.datagrams.saturating_add(other.datagrams);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.flows = self.flows.saturating_add(other.flows);
        self.decode_errors = self.decode_errors.saturating_add(other.decode_errors);
        self.sequence_lost = self.sequence_lost.saturating_add(other.sequence_lost);
        self.sampling_rate_unknown =
            self.sampling_rate_unknown.saturating_add(other.sampling_rate_unknown);
    }
}

/// An exporter's state right now, as its actor last reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExporterGauges {
    /// Templates in its cache (all protocols and observation domains).
    pub templates: u64,
    /// Data sets parked until their template arrives.
    pub pending_flows: u64,
    /// Bytes those parked data sets take.
    pub pending_bytes: u64,
    /// Exporters whose latest flows had no known sampling rate (0 or 1 per exporter;
    /// a sum counts exporters).
    pub sampling_rate_unknown: u64,
}

impl ExporterGauges {
    fn add(&mut self, other: &ExporterGauges) {
        self.templates = self.templates.saturating_add(other.templates);
        self.pending_flows = self.pending_flows.saturating_add(other.pending_flows);
        self.pending_bytes = self.pending_bytes.saturating_add(other.pending_bytes);
        self.sampling_rate_unknown =
            self.sampling_rate_unknown.saturating_add(other.sampling_rate_unknown);
    }
}

/// One exporter's series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExporterSeries {
    pub exporter: ExporterId,
    pub partition: Arc<str>,
    pub figures: ExporterFigures,
    pub gauges: ExporterGauges,
}

/// The exporters of one partition past the cap: counters since the listener started,
/// gauges summed over the live ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OtherExporters {
    pub figures: ExporterFigures,
    pub gauges: ExporterGauges,
}

/// A point-in-time copy of an [`ExporterTable`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExporterTableSnapshot {
    /// Exporters with a series of their own, most bytes first.
    pub exporters: Vec<ExporterSeries>,
    /// Everything from exporters past the cap, by partition.
    pub other: BTreeMap<Arc<str>, OtherExporters>,
    /// Gauges summed over every live exporter, with a series or not.
    pub totals: ExporterGauges,
    /// What each partition's exporters sent since the listener started, with a series or
    /// not, evicted or live.
    pub partitions: BTreeMap<Arc<str>, ExporterFigures>,
}

impl ExporterTableSnapshot {
    /// Everything from exporters past the cap, all partitions together.
    pub fn other_total(&self) -> ExporterFigures {
        let mut total = ExporterFigures::default();
        self.other.values().for_each(|o| total.add(&o.figures));
        total
    }
}

/// One listener's per-exporter figures.
#[derive(Debug)]
pub struct ExporterTable {
    max_series: usize,
    inner: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    live: HashMap<ExporterId, Entry>,
    /// How many of `live` have a series of their own.
    series: usize,
    /// Figures of exporters past the cap, by partition.
    other: BTreeMap<Arc<str>, ExporterFigures>,
    /// Everything each partition's exporters sent.
    partitions: BTreeMap<Arc<str>, ExporterFigures>,
}

#[derive(Debug)]
struct Entry {
    /// The actor that reports for this exporter (a new actor may start for the address
    /// while an evicted one is still finishing; only the current one may end the series).
    owner: u64,
    partition: Arc<str>,
    /// `None`: past the cap, its figures go to `other`.
    figures: Option<ExporterFigures>,
    gauges: ExporterGauges,
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

    /// Adds one batch's figures of `exporter` (of `partition`) and sets its gauges.
    /// `owner` identifies the reporting actor.
    pub fn record(
        &self,
        exporter: &ExporterId,
        owner: u64,
        partition: &Arc<str>,
        figures: &ExporterFigures,
        gauges: ExporterGauges,
    ) {
        let mut table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let table = &mut *table;
        bucket(&mut table.partitions, partition).add(figures);
        // Cloning the key is cheap: an address, or a shared name.
        let entry = table.live.entry(exporter.clone()).or_insert_with(|| {
            let has_series = table.series < self.max_series;
            table.series += usize::from(has_series);
            Entry {
                owner,
                partition: Arc::clone(partition),
                figures: has_series.then(ExporterFigures::default),
                gauges,
            }
        });
        if entry.figures.is_none() && table.series < self.max_series {
            // A slot came free: the exporter gets a series of its own from now on
            // (what it sent before stays in `other`, which never runs backwards).
            entry.figures = Some(ExporterFigures::default());
            table.series += 1;
        }
        entry.owner = owner;
        entry.gauges = gauges;
        match &mut entry.figures {
            Some(own) => own.add(figures),
            None => bucket(&mut table.other, partition).add(figures),
        }
    }

    /// Ends the series of an exporter whose actor `owner` stopped, freeing its slot
    /// (unless a newer actor reports for the address by now).
    pub fn forget(&self, exporter: &ExporterId, owner: u64) {
        let mut table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if table.live.get(exporter).is_some_and(|entry| entry.owner == owner)
            && let Some(entry) = table.live.remove(exporter)
            && entry.figures.is_some()
        {
            table.series -= 1;
        }
    }

    /// Forgets every exporter (their actors are gone: the listener restarted).
    pub fn clear(&self) {
        let mut table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        table.live.clear();
        table.series = 0;
    }

    /// Every series now.
    pub fn snapshot(&self) -> ExporterTableSnapshot {
        let table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut snapshot =
            ExporterTableSnapshot { partitions: table.partitions.clone(), ..Default::default() };
        for (partition, figures) in &table.other {
            snapshot.other.entry(Arc::clone(partition)).or_default().figures = *figures;
        }
        for (exporter, entry) in &table.live {
            snapshot.totals.add(&entry.gauges);
            match entry.figures {
                Some(figures) => snapshot.exporters.push(ExporterSeries {
                    exporter: exporter.clone(),
                    partition: Arc::clone(&entry.partition),
                    figures,
                    gauges: entry.gauges,
                }),
                None => {
                    let other = snapshot.other.entry(Arc::clone(&entry.partition)).or_default();
                    other.gauges.add(&entry.gauges);
                }
            }
        }
        snapshot.exporters.sort_by(|a, b| {
            b.figures.bytes.cmp(&a.figures.bytes).then(a.exporter.cmp(&b.exporter))
        });
        snapshot
    }
}

/// The figures kept for `partition` in `map`, created empty on first use.
fn bucket<'a>(
    map: &'a mut BTreeMap<Arc<str>, ExporterFigures>,
    partition: &Arc<str>,
) -> &'a mut ExporterFigures {
    map.entry(Arc::clone(partition)).or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> ExporterId {
        IpAddr::from([10, 0, 0, n]).into()
    }

    fn bytes(n: u64) -> ExporterFigures {
        ExporterFigures { datagrams: 1, bytes: n, flows: 2, ..Default::default() }
    }

    fn acme() -> Arc<str> {
        "acme".into()
    }

    fn templates(n: u64) -> ExporterGauges {
        ExporterGauges { templates: n, ..Default::default() }
    }

    #[test]
    fn exporters_past_the_cap_add_to_other_and_series_stay_monotonic() {
        let table = ExporterTable::new(2);
        table.record(&ip(1), 1, &acme(), &bytes(100), templates(1));
        table.record(&ip(2), 2, &acme(), &bytes(500), templates(2));
        table.record(&ip(3), 3, &acme(), &bytes(10_000), templates(4));
        table.record(&ip(1), 1, &acme(), &bytes(100), templates(3));
        let snapshot = table.snapshot();
        let order: Vec<ExporterId> =
            snapshot.exporters.iter().map(|s| s.exporter.clone()).collect();
        assert_eq!(order, vec![ip(2), ip(1)], "most bytes first");
        assert_eq!(
            snapshot.exporters[1].figures,
            ExporterFigures { datagrams: 2, bytes: 200, flows: 4, ..Default::default() }
        );
        assert_eq!(snapshot.exporters[1].gauges, templates(3), "gauges are set, not added");
        assert_eq!(snapshot.other_total(), bytes(10_000), "the third exporter has no series");
        assert_eq!(snapshot.other[&acme()].gauges, templates(4));
        assert_eq!(snapshot.totals, templates(9), "totals cover every live exporter");
        table.record(&ip(3), 3, &acme(), &bytes(1), templates(4));
        assert_eq!(table.snapshot().other_total().bytes, 10_001);
    }

    #[test]
    fn a_forgotten_exporter_frees_its_slot() {
        let table = ExporterTable::new(1);
        table.record(&ip(1), 1, &acme(), &bytes(5), templates(1));
        table.record(&ip(2), 2, &acme(), &bytes(7), templates(1));
        table.forget(&ip(1), 1);
        table.record(&ip(2), 2, &acme(), &bytes(7), templates(1));
        let snapshot = table.snapshot();
        assert_eq!(snapshot.exporters.len(), 1);
        assert_eq!(snapshot.exporters[0].exporter, ip(2));
        assert_eq!(snapshot.exporters[0].figures, bytes(7), "only what came after the slot");
        assert_eq!(snapshot.other_total(), bytes(7));
        assert_eq!(snapshot.totals, templates(1), "the forgotten exporter's gauges are gone");
    }

    #[test]
    fn only_the_current_actor_ends_a_series() {
        let table = ExporterTable::new(4);
        table.record(&ip(1), 1, &acme(), &bytes(5), templates(1));
        // An evicted actor (1) is still finishing when a new one (2) starts reporting.
        table.record(&ip(1), 2, &acme(), &bytes(6), templates(2));
        table.forget(&ip(1), 1);
        let snapshot = table.snapshot();
        assert_eq!(snapshot.exporters.len(), 1, "the new actor's series survives");
        assert_eq!(snapshot.exporters[0].figures.bytes, 11);
        table.forget(&ip(1), 2);
        assert!(table.snapshot().exporters.is_empty());
    }

    #[test]
    fn clear_forgets_every_exporter_but_keeps_other() {
        let table = ExporterTable::new(1);
        table.record(&ip(1), 1, &acme(), &bytes(5), templates(1));
        table.record(&ip(2), 2, &acme(), &bytes(7), templates(1));
        table.clear();
        let snapshot = table.snapshot();
        assert!(snapshot.exporters.is_empty());
        assert_eq!(snapshot.totals, ExporterGauges::default());
        assert_eq!(snapshot.other_total(), bytes(7), "other is a counter: it never goes back");
        table.record(&ip(3), 3, &acme(), &bytes(1), templates(1));
        assert_eq!(table.snapshot().exporters.len(), 1, "the slot is free again");
    }

    #[test]
    fn partitions_keep_their_own_other_and_running_totals() {
        let table = ExporterTable::new(1);
        let globex: Arc<str> = "globex".into();
        table.record(&ip(1), 1, &acme(), &bytes(5), templates(1));
        table.record(&ip(2), 2, &globex, &bytes(7), templates(2));
        table.record(&ip(3), 3, &acme(), &bytes(11), templates(3));
        table.forget(&ip(1), 1);
        let snapshot = table.snapshot();
        assert_eq!(snapshot.exporters.len(), 0, "the slot freed, nobody reported since");
        assert_eq!(snapshot.other[&globex].figures, bytes(7));
        assert_eq!(snapshot.other[&acme()].figures, bytes(11));
        assert_eq!(snapshot.other[&acme()].gauges, templates(3));
        let acme_total = snapshot.partitions[&acme()];
        assert_eq!((acme_total.datagrams, acme_total.bytes), (2, 16), "evicted exporters stay");
        assert_eq!(snapshot.partitions[&globex].bytes, 7);
    }
}
