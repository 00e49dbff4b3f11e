//! Flow times end to end: the v9 sysUpTime wrap in both directions, every IPFIX time
//! element (seconds, milliseconds, NTP micro/nanoseconds, delta microseconds,
//! sysUpTime with systemInitTimeMilliseconds from options data or the record), NSEL's
//! event time, and the sanity check that flags (and counts) impossible times.

mod support;

use flow_decode::decode_flags::{TIME_END_BEFORE_START, TIME_IN_FUTURE};
use flow_decode::{ExporterSession, NetflowSession};
use flowpb::FlowMessage;

use support::netflow::{
    EXPORT_NS, EXPORT_SECS, MS, Rec, SECOND_NS, decode, ipfix_options_template_set, ipfix_packet,
    set, settings, source, template_set, v9_packet,
};

/// Seconds from the NTP epoch (1900) to the Unix epoch.
const NTP_OFFSET_S: u64 = 2_208_988_800;
/// Unix time of the test flows' start: 100 s before the export.
const START_S: u64 = EXPORT_SECS as u64 - 100;

fn times(flows: &[FlowMessage]) -> Vec<(u64, u64)> {
    flows.iter().map(|f| (f.time_flow_start_ns, f.time_flow_end_ns)).collect()
}

/// One IPFIX message with template 256 of `fields` and one record.
fn ipfix_times(fields: &[(u16, u16)], record: Vec<u8>) -> (Vec<FlowMessage>, usize, usize) {
    let mut session = NetflowSession::new(&settings(false));
    let packet =
        ipfix_packet(EXPORT_SECS, 1, 0, &[template_set(2, &[(256, fields)]), set(256, &record)]);
    let (flows, report) = decode(&mut session, source(4739), EXPORT_NS, &packet);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    (flows, report.time_anomalies, report.time_unknown)
}

/// An NTP timestamp of Unix `seconds` plus `fraction` / 2^32 s.
fn ntp(seconds: u64, fraction: u32) -> u64 {
    ((seconds + NTP_OFFSET_S) << 32) | u64::from(fraction)
}

#[test]
fn ipfix_seconds_and_milliseconds() {
    let (flows, anomalies, unknown) =
        ipfix_times(&[(150, 4), (151, 4)], Rec::new().u32(START_S as u32).u32(EXPORT_SECS).done());
    assert_eq!(times(&flows), vec![(START_S * SECOND_NS, EXPORT_NS)]);
    assert_eq!((anomalies, unknown), (0, 0));
    let (flows, _, _) = ipfix_times(
        &[(152, 8), (153, 8)],
        Rec::new().u64(START_S * 1000 + 250).u64(START_S * 1000 + 750).done(),
    );
    assert_eq!(
        times(&flows),
        vec![(START_S * SECOND_NS + 250 * MS, START_S * SECOND_NS + 750 * MS)]
    );
}

#[test]
fn ipfix_micro_and_nanoseconds_are_ntp_format() {
    // Half and a quarter second past START_S, as NTP fractions.
    let (flows, _, _) = ipfix_times(
        &[(154, 8), (155, 8)],
        Rec::new().u64(ntp(START_S, 1 << 31)).u64(ntp(START_S + 1, 1 << 30)).done(),
    );
    let start = START_S * SECOND_NS;
    assert_eq!(times(&flows), vec![(start + SECOND_NS / 2, start + SECOND_NS + SECOND_NS / 4)]);
    let (flows, _, _) = ipfix_times(
        &[(156, 8), (157, 8)],
        Rec::new().u64(ntp(START_S, 0)).u64(ntp(START_S + 2, 1 << 31)).done(),
    );
    assert_eq!(times(&flows), vec![(start, start + 2 * SECOND_NS + SECOND_NS / 2)]);
}

#[test]
fn unix_epoch_microseconds_in_a_microseconds_element_are_recognised() {
    // Some exporters write Unix microseconds where NTP format is due.
    let start_us = START_S * 1_000_000;
    let (flows, _, _) =
        ipfix_times(&[(154, 8), (155, 8)], Rec::new().u64(start_us).u64(start_us + 5).done());
    assert_eq!(times(&flows), vec![(START_S * SECOND_NS, START_S * SECOND_NS + 5_000)]);
}

#[test]
fn ipfix_delta_microseconds_count_back_from_the_export_time() {
    let (flows, _, _) =
        ipfix_times(&[(158, 4), (159, 4)], Rec::new().u32(3_000_000).u32(500_000).done());
    assert_eq!(times(&flows), vec![(EXPORT_NS - 3 * SECOND_NS, EXPORT_NS - 500 * MS)]);
}

#[test]
fn ipfix_sysuptime_needs_system_init_time() {
    // Without IE 160 the times are unknown (0), never invented, and counted.
    let (flows, anomalies, unknown) =
        ipfix_times(&[(22, 4), (21, 4)], Rec::new().u32(1_000).u32(2_000).done());
    assert_eq!((times(&flows), anomalies, unknown), (vec![(0, 0)], 0, 1));
    // IE 160 in the record itself.
    let init_ms = START_S * 1000 - 5_000;
    let (flows, _, unknown) = ipfix_times(
        &[(22, 4), (21, 4), (160, 8)],
        Rec::new().u32(5_000).u32(6_000).u64(init_ms).done(),
    );
    assert_eq!(
        (times(&flows), unknown),
        (vec![(START_S * SECOND_NS, (START_S + 1) * SECOND_NS)], 0)
    );
}

#[test]
fn ipfix_sysuptime_with_system_init_time_from_options_data() {
    let mut session = NetflowSession::new(&settings(false));
    let init_ms = START_S * 1000 - 10_000;
    let packet = ipfix_packet(
        EXPORT_SECS,
        1,
        0,
        &[
            ipfix_options_template_set(300, &[(149, 4)], &[(160, 8)]),
            set(300, &Rec::new().u32(0).u64(init_ms).done()),
            template_set(2, &[(256, &[(22, 4), (21, 4)])]),
            set(256, &Rec::new().u32(10_000).u32(12_000).done()),
        ],
    );
    let (flows, report) = decode(&mut session, source(4739), EXPORT_NS, &packet);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(times(&flows), vec![(START_S * SECOND_NS, (START_S + 2) * SECOND_NS)]);
    assert_eq!((report.time_unknown, report.non_flow_records), (0, 1));
}

#[test]
fn system_init_time_after_the_data_in_the_same_message_still_applies() {
    // Data template and data first, then the options template and IE 160: the flows'
    // uptimes are resolved once the whole message is decoded.
    let mut session = NetflowSession::new(&settings(false));
    let init_ms = START_S * 1000 - 10_000;
    let packet = ipfix_packet(
        EXPORT_SECS,
        1,
        0,
        &[
            template_set(2, &[(256, &[(22, 4), (21, 4)])]),
            set(256, &Rec::new().u32(10_000).u32(12_000).u32(10_500).u32(11_000).done()),
            ipfix_options_template_set(300, &[(149, 4)], &[(160, 8)]),
            set(300, &Rec::new().u32(0).u64(init_ms).done()),
        ],
    );
    let (flows, report) = decode(&mut session, source(4739), EXPORT_NS, &packet);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let start = START_S * SECOND_NS;
    assert_eq!(
        times(&flows),
        vec![(start, start + 2 * SECOND_NS), (start + 500 * MS, start + SECOND_NS)]
    );
    assert_eq!((report.time_unknown, report.time_anomalies, report.non_flow_records), (0, 0, 1));
}

#[test]
fn system_init_time_in_a_later_message_cannot_fix_flows_already_emitted() {
    let mut session = NetflowSession::new(&settings(false));
    let first = ipfix_packet(
        EXPORT_SECS,
        1,
        0,
        &[
            template_set(2, &[(256, &[(22, 4), (21, 4)])]),
            set(256, &Rec::new().u32(10_000).u32(12_000).done()),
        ],
    );
    let (flows, report) = decode(&mut session, source(4739), EXPORT_NS, &first);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((times(&flows), report.time_unknown), (vec![(0, 0)], 1), "unknown, counted");

    let init_ms = START_S * 1000 - 10_000;
    let options = ipfix_packet(
        EXPORT_SECS,
        2,
        0,
        &[
            ipfix_options_template_set(300, &[(149, 4)], &[(160, 8)]),
            set(300, &Rec::new().u32(0).u64(init_ms).done()),
        ],
    );
    let (flows, report) = decode(&mut session, source(4739), EXPORT_NS, &options);
    assert!(flows.is_empty());
    assert_eq!((report.time_unknown, report.non_flow_records), (0, 1));

    // From then on the exporter's uptimes resolve.
    let next =
        ipfix_packet(EXPORT_SECS, 3, 0, &[set(256, &Rec::new().u32(10_000).u32(12_000).done())]);
    let (flows, report) = decode(&mut session, source(4739), EXPORT_NS, &next);
    assert_eq!(times(&flows), vec![(START_S * SECOND_NS, (START_S + 2) * SECOND_NS)]);
    assert_eq!(report.time_unknown, 0);
    assert_eq!(session.stats().fidelity.time_unknown, 1);
}

/// v9 template 256: FIRST_SWITCHED (22), LAST_SWITCHED (21).
fn v9_times(header_uptime: u32, first: u32, last: u32) -> (Vec<FlowMessage>, usize) {
    let mut session = NetflowSession::new(&settings(false));
    let packet = v9_packet(
        header_uptime,
        EXPORT_SECS,
        1,
        0,
        &[
            template_set(0, &[(256, &[(22, 4), (21, 4)])]),
            set(256, &Rec::new().u32(first).u32(last).done()),
        ],
    );
    let (flows, report) = decode(&mut session, source(2055), EXPORT_NS, &packet);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    (flows, report.time_anomalies)
}

#[test]
fn v9_uptime_wrap_in_both_directions() {
    // The header's uptime wrapped 500 ms ago; the flow started 1 s before the export,
    // before the wrap, and ended 100 ms before it.
    let (flows, anomalies) = v9_times(500, u32::MAX - 499, 400);
    assert_eq!(times(&flows), vec![(EXPORT_NS - SECOND_NS, EXPORT_NS - 100 * MS)]);
    assert_eq!(anomalies, 0);
    // The header was taken just before the wrap and the flow's end just after it
    // (exporters stamp records after the header's uptime): 300 ms after the export.
    let (flows, anomalies) = v9_times(u32::MAX - 199, u32::MAX - 2_199, 100);
    assert_eq!(times(&flows), vec![(EXPORT_NS - 2_000 * MS, EXPORT_NS + 300 * MS)]);
    assert_eq!(anomalies, 0, "300 ms ahead is within the clock-skew tolerance");
}

#[test]
fn start_after_end_is_flagged_and_counted() {
    let (flows, anomalies) = v9_times(60_000, 50_000, 40_000);
    assert_eq!(flows[0].decode_flags, TIME_END_BEFORE_START);
    assert_eq!(anomalies, 1);
    assert_eq!(times(&flows), vec![(EXPORT_NS - 10 * SECOND_NS, EXPORT_NS - 20 * SECOND_NS)]);
}

#[test]
fn times_past_the_receive_time_plus_tolerance_are_flagged() {
    // Flow ends 10 minutes after it was received: the exporter's clock is ahead.
    let end_s = EXPORT_SECS + 600;
    let (flows, anomalies, _) =
        ipfix_times(&[(150, 4), (151, 4)], Rec::new().u32(EXPORT_SECS).u32(end_s).done());
    assert_eq!((flows[0].decode_flags, anomalies), (TIME_IN_FUTURE, 1));
    // Four minutes ahead is within the 5-minute tolerance.
    let (flows, anomalies, _) = ipfix_times(
        &[(150, 4), (151, 4)],
        Rec::new().u32(EXPORT_SECS).u32(EXPORT_SECS + 240).done(),
    );
    assert_eq!((flows[0].decode_flags, anomalies), (0, 0));
}

#[test]
fn nsel_event_time_ends_a_flow_without_an_end() {
    // flowStartMilliseconds (152) and observationTimeMilliseconds (323), as Cisco ASA.
    let start_ms = START_S * 1000;
    let (flows, _, unknown) =
        ipfix_times(&[(152, 8), (323, 8)], Rec::new().u64(start_ms).u64(start_ms + 61_000).done());
    assert_eq!(times(&flows), vec![(start_ms * MS, (start_ms + 61_000) * MS)]);
    assert_eq!(unknown, 0);
}
