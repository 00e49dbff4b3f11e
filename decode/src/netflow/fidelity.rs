//! The last pass over a datagram's flows, once all its sets are decoded: the
//! operator's sampling policy ([`super::policy`]) and the time sanity check, each
//! flagged in `decode_flags` and counted in the report.
//!
//! **Time sanity**: a flow is flagged `TIME_END_BEFORE_START` when its start is later
//! than its end, and `TIME_IN_FUTURE` when its start or end is later than the receive
//! time plus [`CLOCK_SKEW_TOLERANCE_NS`] (5 minutes of exporter clock error). Flagged
//! times are kept as exported (the flag says they are suspect; rewriting them would
//! hide the exporter's problem). A time that could not be resolved (0) is neither: it
//! is counted in `time_unknown`. Old flows are not anomalies: long-lived connections
//! (NSEL teardown events) legitimately start hours before they are exported.

use flowpb::FlowMessage;

use crate::decode_flags::{
    SAMPLING_RATE_DEFAULTED, SAMPLING_RATE_OVERRIDDEN, TIME_END_BEFORE_START, TIME_IN_FUTURE,
};
use crate::report::DatagramReport;

/// How far ahead of the collector's clock an exporter's flow times may be.
pub(crate) const CLOCK_SKEW_TOLERANCE_NS: u64 = 5 * 60 * 1_000_000_000;

/// The sampling policy as it applies to one exporter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ExporterPolicy {
    /// The override matching the exporter's address.
    pub override_rate: Option<u64>,
    /// The default for flows whose rate the exporter did not announce.
    pub default_rate: Option<u64>,
}

/// Applies the sampling policy and the time check to `flows`, counting in `report`.
pub(crate) fn finish_flows(
    flows: &mut [FlowMessage],
    policy: ExporterPolicy,
    report: &mut DatagramReport,
) {
    for flow in flows {
        apply_sampling_policy(flow, policy, report);
        check_times(flow, report);
    }
}

/// Override, else the exporter's rate, else the default, else unknown (counted).
fn apply_sampling_policy(
    flow: &mut FlowMessage,
    policy: ExporterPolicy,
    report: &mut DatagramReport,
) {
    if let Some(rate) = policy.override_rate {
        flow.sampling_rate = rate;
        flow.decode_flags |= SAMPLING_RATE_OVERRIDDEN;
    } else if flow.sampling_rate == 0 {
        match policy.default_rate {
            Some(rate) => {
                flow.sampling_rate = rate;
                flow.decode_flags |= SAMPLING_RATE_DEFAULTED;
                report.sampling_rate_defaulted += 1;
            }
            None => report.sampling_rate_unknown += 1,
        }
    }
}

/// Flags (and counts) a flow whose times cannot be right; counts unresolved times.
fn check_times(flow: &mut FlowMessage, report: &mut DatagramReport) {
    let (start, end) = (flow.time_flow_start_ns, flow.time_flow_end_ns);
    if start == 0 || end == 0 {
        report.time_unknown += 1;
    }
    let mut flags = 0;
    if start != 0 && end != 0 && start > end {
        flags |= TIME_END_BEFORE_START;
    }
    if start.max(end) > flow.time_received_ns.saturating_add(CLOCK_SKEW_TOLERANCE_NS) {
        flags |= TIME_IN_FUTURE;
    }
    if flags != 0 {
        flow.decode_flags |= flags;
        report.time_anomalies += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000_000_000;

    fn flow(start: u64, end: u64, rate: u64) -> FlowMessage {
        FlowMessage {
            time_received_ns: NOW,
            time_flow_start_ns: start,
            time_flow_end_ns: end,
            sampling_rate: rate,
            ..Default::default()
        }
    }

    #[test]
    fn times_are_flagged_and_counted_once_per_flow() {
        let ahead = NOW + CLOCK_SKEW_TOLERANCE_NS + 1;
        let mut flows = vec![
            flow(NOW - 10, NOW - 5, 1),
            flow(NOW - 5, NOW - 10, 1),
            flow(NOW, ahead, 1),
            flow(ahead + 10, ahead, 1),
            flow(0, NOW, 1),
            flow(NOW + CLOCK_SKEW_TOLERANCE_NS, NOW + CLOCK_SKEW_TOLERANCE_NS, 1),
        ];
        let mut report = DatagramReport::default();
        finish_flows(&mut flows, ExporterPolicy::default(), &mut report);
        let flags: Vec<u32> = flows.iter().map(|f| f.decode_flags).collect();
        let both = TIME_END_BEFORE_START | TIME_IN_FUTURE;
        assert_eq!(flags, vec![0, TIME_END_BEFORE_START, TIME_IN_FUTURE, both, 0, 0]);
        assert_eq!((report.time_anomalies, report.time_unknown), (3, 1));
    }

    #[test]
    fn override_beats_announced_and_default_fills_unknown() {
        let mut report = DatagramReport::default();
        let mut flows = vec![flow(NOW, NOW, 0), flow(NOW, NOW, 64)];
        let policy = ExporterPolicy { override_rate: None, default_rate: Some(10) };
        finish_flows(&mut flows, policy, &mut report);
        let summary: Vec<(u64, u32)> =
            flows.iter().map(|f| (f.sampling_rate, f.decode_flags)).collect();
        assert_eq!(summary, vec![(10, SAMPLING_RATE_DEFAULTED), (64, 0)]);
        assert_eq!((report.sampling_rate_defaulted, report.sampling_rate_unknown), (1, 0));

        let mut report = DatagramReport::default();
        let mut flows = vec![flow(NOW, NOW, 0), flow(NOW, NOW, 64)];
        let policy = ExporterPolicy { override_rate: Some(1000), default_rate: Some(10) };
        finish_flows(&mut flows, policy, &mut report);
        assert!(
            flows
                .iter()
                .all(|f| f.sampling_rate == 1000 && f.decode_flags == SAMPLING_RATE_OVERRIDDEN)
        );
        assert_eq!((report.sampling_rate_defaulted, report.sampling_rate_unknown), (0, 0));

        let mut report = DatagramReport::default();
        let mut flows = vec![flow(NOW, NOW, 0)];
        finish_flows(&mut flows, ExporterPolicy::default(), &mut report);
        assert_eq!((flows[0].sampling_rate, report.sampling_rate_unknown), (0, 1));
    }
}
