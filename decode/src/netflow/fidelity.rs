//! The last pass over a datagram's flows, once all its sets are decoded: the
//! operator's sampling policy ([`crate::sampling`]) and the time sanity check, each
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

use crate::decode_flags::{TIME_END_BEFORE_START, TIME_IN_FUTURE};
use crate::report::DatagramReport;
use crate::sampling::ExporterPolicy;

/// How far ahead of the collector's clock an exporter's flow times may be.
pub(crate) const CLOCK_SKEW_TOLERANCE_NS: u64 = 5 * 60 * 1_000_000_000;

/// Applies the sampling policy and the time check to `flows`, counting in `report`.
pub(crate) fn finish_flows(
    flows: &mut [FlowMessage],
    policy: ExporterPolicy,
    report: &mut DatagramReport,
) {
    for flow in flows {
        policy.apply(flow, report);
        check_times(flow, report);
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
}
