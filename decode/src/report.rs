//! What decoding one datagram produced besides flows: lifecycle events and counted
//! errors; and the cache statistics a session reports.

use thiserror::Error;

use crate::event::{LifecycleEvent, Protocol};

/// Why (part of) a datagram could not be decoded. Each variant is a counter reason:
/// [`DecodeError::reason`] is its stable label.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("datagram too short for a {protocol} header: {len} bytes")]
    TruncatedHeader { protocol: Protocol, len: usize },
    #[error("unsupported export version {version}")]
    UnsupportedVersion { version: u16 },
    #[error("{protocol} set/record length {length} runs past the end of the datagram")]
    LengthPastEnd { protocol: Protocol, length: usize },
    #[error("{protocol} template {template_id} rejected: {detail}")]
    BadTemplate { protocol: Protocol, template_id: u16, detail: String },
    #[error(
        "{protocol} template {template_id} has {fields} fields, more than max_template_fields {max}"
    )]
    TooManyFields { protocol: Protocol, template_id: u16, fields: usize, max: usize },
    #[error(
        "{protocol} data for template {template_id} dropped: no template and no room to hold it"
    )]
    NoTemplate { protocol: Protocol, template_id: u16 },
    #[error("{protocol} malformed: {detail}")]
    Malformed { protocol: Protocol, detail: String },
    #[error("sFlow datagram has {samples} samples, more than max_samples_per_datagram {max}")]
    TooManySamples { samples: u32, max: u32 },
    #[error("{protocol} datagram from before the exporter restarted (domain {domain}) skipped")]
    PreviousIncarnation { protocol: Protocol, domain: u32 },
    #[error(
        "{protocol} data for template {template_id} dropped: no template, and the pending-flows \
         memory {cap} is used up"
    )]
    PendingMemoryFull { protocol: Protocol, template_id: u16, cap: PendingMemoryCap },
}

/// Which pending-flows memory bound refused a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingMemoryCap {
    /// `pending_flows.max_bytes`, this exporter's share.
    Exporter,
    /// `pending_flows_max_bytes`, shared by every exporter of the process.
    Total,
}

impl std::fmt::Display for PendingMemoryCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PendingMemoryCap::Exporter => "of this exporter (pending_flows.max_bytes)",
            PendingMemoryCap::Total => "of all exporters (pending_flows_max_bytes)",
        })
    }
}

impl DecodeError {
    /// A short, stable label for metrics and drop counters.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TruncatedHeader { .. } => "truncated_header",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
            DecodeError::LengthPastEnd { .. } => "length_past_end",
            DecodeError::BadTemplate { .. } => "bad_template",
            DecodeError::TooManyFields { .. } => "too_many_fields",
            DecodeError::NoTemplate { .. } => "no_template",
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::TooManySamples { .. } => "too_many_samples",
            DecodeError::PreviousIncarnation { .. } => "previous_incarnation",
            DecodeError::PendingMemoryFull { cap: PendingMemoryCap::Exporter, .. } => {
                "pending_memory_exporter"
            }
            DecodeError::PendingMemoryFull { cap: PendingMemoryCap::Total, .. } => {
                "pending_memory_total"
            }
        }
    }
}

/// The outcome of decoding one datagram, besides the flows appended to the output.
#[derive(Debug, Default, Clone)]
pub struct DatagramReport {
    /// Flows appended to the output for this datagram (replayed pending flows included).
    pub flows: usize,
    /// Records recognised but deliberately not emitted as flows (options data,
    /// sFlow counter samples).
    pub non_flow_records: usize,
    /// Data sets held in the pending-flows cache until their template arrives (their
    /// record count is unknown until the template says how long a record is).
    pub records_pending: usize,
    /// Export datagrams the exporter's sequence numbers show were lost, declared while
    /// decoding this one (sFlow: counted once a missing datagram sequence number falls
    /// out of the 64-datagram reordering window, so a late arrival is not a loss).
    /// Unit: datagrams. NetFlow v9 counts export packets, so its losses are here; v5
    /// and IPFIX number records, not packets: their losses are in `lost_records`.
    pub sequence_gap: u64,
    /// Flows (NetFlow v5) or data records (IPFIX, options data records included) the
    /// exporter's sequence numbers show were lost, declared while decoding this one.
    /// Like `sequence_gap`, a gap is declared only once it falls out of the reordering
    /// window, so a late datagram fills it instead of being counted.
    pub lost_records: u64,
    /// Flows emitted with `sampling_rate` 0: the exporter has announced no rate for
    /// them (yet) and no default is configured.
    pub sampling_rate_unknown: usize,
    /// Flows given the configured default rate because the exporter announced none
    /// (flagged `SAMPLING_RATE_DEFAULTED`).
    pub sampling_rate_defaulted: usize,
    /// Flows whose times failed the sanity check (start after end, or later than the
    /// receive time plus the clock-skew tolerance); flagged in `decode_flags`.
    pub time_anomalies: usize,
    /// Flows emitted without a start or an end time (left 0: not resolvable, e.g.
    /// IPFIX sysUpTime times before systemInitTimeMilliseconds is known).
    pub time_unknown: usize,
    /// Lifecycle events, in the order they happened.
    pub events: Vec<LifecycleEvent>,
    /// Errors; a datagram may decode partly and still report errors.
    pub errors: Vec<DecodeError>,
}

/// One protocol's template cache figures for an exporter, as the guide's stats line
/// prints them: "V9 Template Cache [addr] - Templates: 15/2000, Data: 8/2000, ...".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheStats {
    pub protocol: Option<Protocol>,
    pub templates: usize,
    pub max_templates: usize,
    pub pending_flows: usize,
    pub max_pending_flows: usize,
    /// Bytes the pending data sets take (bounded by `pending_flows.max_bytes`).
    pub pending_bytes: usize,
    pub template_hits: u64,
    pub template_misses: u64,
    pub evictions: u64,
    pub collisions: u64,
    /// Pending data sets decoded once their template arrived (the guide's "Data Hits").
    pub pending_replayed: u64,
    /// Pending data sets given up: ttl, caps, restarts (the guide's "Data Misses").
    pub pending_dropped: u64,
}

/// Running totals of what decoding fidelity an exporter's flows had, since its session
/// started (the sums of the matching [`DatagramReport`] fields).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FidelityStats {
    /// Flows emitted with an unknown sampling rate (0).
    pub sampling_rate_unknown: u64,
    /// Flows given the configured default sampling rate.
    pub sampling_rate_defaulted: u64,
    /// Export packets declared lost (NetFlow v9 sequence numbers).
    pub lost_packets: u64,
    /// Flows / data records declared lost (NetFlow v5, IPFIX sequence numbers).
    pub lost_records: u64,
    /// Exporter restarts detected (`ExporterRestarted` events).
    pub restarts: u64,
    /// Flows whose times failed the sanity check.
    pub time_anomalies: u64,
    /// Flows emitted without a start or end time.
    pub time_unknown: u64,
}

impl FidelityStats {
    /// Adds one datagram's report (its `sequence_gap` counts as lost packets: NetFlow
    /// v9 is the NetFlow protocol that numbers packets).
    pub fn add(&mut self, report: &DatagramReport) {
        let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let restarts = report
            .events
            .iter()
            .filter(|e| matches!(e, LifecycleEvent::ExporterRestarted { .. }))
            .count();
        let add = |total: &mut u64, n: u64| *total = total.saturating_add(n);
        add(&mut self.sampling_rate_unknown, as_u64(report.sampling_rate_unknown));
        add(&mut self.sampling_rate_defaulted, as_u64(report.sampling_rate_defaulted));
        add(&mut self.lost_packets, report.sequence_gap);
        add(&mut self.lost_records, report.lost_records);
        add(&mut self.restarts, as_u64(restarts));
        add(&mut self.time_anomalies, as_u64(report.time_anomalies));
        add(&mut self.time_unknown, as_u64(report.time_unknown));
    }
}

/// A session's statistics: one entry per protocol it has seen.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionStats {
    pub caches: Vec<CacheStats>,
    /// Fidelity totals (NetFlow/IPFIX sessions; zero for sFlow).
    pub fidelity: FidelityStats,
}
