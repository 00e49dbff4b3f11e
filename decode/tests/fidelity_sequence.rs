//! Loss accounting by each protocol's sequence rule (v5 flows, v9 packets, IPFIX data
//! records), reordering that is not loss, and exporter restarts: a scripted router
//! reboot that reuses a template id with a new layout must not mis-decode a record and
//! must be reported exactly once.

mod support;

use flow_decode::{
    DatagramReport, DecodeError, ExporterSession, LifecycleEvent, NetflowSession, Protocol,
};
use flowpb::FlowMessage;

use support::netflow::{
    EXPORT_NS, EXPORT_SECS, Rec, V5Header, V9_FIELDS, decode, ipfix_options_template_set,
    ipfix_packet, restarts, set, settings, source, template_set, v5_packet, v5_record, v9_packet,
    v9_record,
};

/// Datagrams a gap may wait for a late datagram before it counts (the stream window).
const WINDOW: u32 = 64;

/// Decodes every payload in order; returns the summed loss fields and the reports.
fn feed(
    session: &mut NetflowSession,
    port: u16,
    payloads: &[Vec<u8>],
) -> (u64, u64, Vec<DatagramReport>) {
    let (mut packets, mut records, mut reports) = (0, 0, Vec::new());
    for payload in payloads {
        let (_, report) = decode(session, source(port), EXPORT_NS, payload);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        packets += report.sequence_gap;
        records += report.lost_records;
        reports.push(report);
    }
    (packets, records, reports)
}

fn v5(sequence: u32, flows: usize) -> Vec<u8> {
    let header = V5Header { flow_sequence: sequence, ..Default::default() };
    let records: Vec<Vec<u8>> =
        (0..flows).map(|_| v5_record([10, 0, 0, 1], 1, 64, 9_000, 9_500)).collect();
    v5_packet(header, &records)
}

#[test]
fn v5_counts_missing_flows_once_they_leave_the_window() {
    let mut session = NetflowSession::new(&settings(false));
    // Two flows per packet: 100, 102, [104 lost], 106, then 108 and 110 swapped.
    let mut payloads = vec![v5(100, 2), v5(102, 2), v5(106, 2), v5(110, 2), v5(108, 2)];
    payloads.extend((0..WINDOW).map(|i| v5(112 + 2 * i, 2)));
    let (packets, records, _) = feed(&mut session, 2055, &payloads);
    assert_eq!((packets, records), (0, 2), "2 flows of the lost packet; the swap is no loss");
    let fidelity = session.stats().fidelity;
    assert_eq!((fidelity.lost_records, fidelity.lost_packets, fidelity.restarts), (2, 0, 0));
}

fn v9_data(sequence: u32) -> Vec<u8> {
    v9_packet(
        60_000 + sequence,
        EXPORT_SECS,
        sequence,
        0,
        &[
            template_set(0, &[(256, V9_FIELDS)]),
            set(256, &v9_record([10, 0, 0, 1], 64, 50_000, 51_000)),
        ],
    )
}

#[test]
fn v9_counts_missing_export_packets() {
    let mut session = NetflowSession::new(&settings(false));
    // 10, 11, [12 lost], 13, 15, 14 (late), then a run past the window.
    let mut payloads: Vec<Vec<u8>> = [10, 11, 13, 15, 14].iter().map(|s| v9_data(*s)).collect();
    payloads.extend((16..16 + WINDOW).map(v9_data));
    let (packets, records, reports) = feed(&mut session, 2055, &payloads);
    assert_eq!((packets, records), (1, 0));
    let declared_at = reports.iter().position(|r| r.sequence_gap > 0);
    assert_eq!(declared_at, Some(2 + WINDOW as usize), "declared when the hole leaves the window");
    assert!(reports.iter().all(|r| restarts(r).is_empty()));
}

/// IPFIX template 256: sourceIPv4Address. Four-byte records need no set padding
/// (padding as long as a record would read as one more record).
fn ipfix_template(sequence: u32) -> Vec<u8> {
    ipfix_packet(EXPORT_SECS, sequence, 0, &[template_set(2, &[(256, &[(8, 4)])])])
}

/// An IPFIX message of `records` flow records of template 256.
fn ipfix_data(sequence: u32, records: usize) -> Vec<u8> {
    ipfix_packet(EXPORT_SECS, sequence, 0, &[set(256, &[10, 0, 0, 1].repeat(records))])
}

#[test]
fn ipfix_counts_missing_data_records() {
    let mut session = NetflowSession::new(&settings(false));
    let template = ipfix_template(1000);
    // Template-only messages do not advance the sequence; options records do count.
    let options = ipfix_packet(
        EXPORT_SECS,
        1000,
        0,
        &[
            ipfix_options_template_set(300, &[(149, 4)], &[(34, 4)]),
            set(300, &Rec::new().u32(0).u32(1).done()),
        ],
    );
    let mut payloads = vec![template, options, ipfix_data(1001, 3), ipfix_data(1004, 2)];
    // [1006..1010 lost: 4 records], then 1012 before 1010 (reordered).
    payloads.extend([ipfix_data(1010, 2), ipfix_data(1014, 1), ipfix_data(1012, 2)]);
    payloads.extend((0..WINDOW).map(|i| ipfix_data(1015 + i, 1)));
    let (packets, records, _) = feed(&mut session, 4739, &payloads);
    assert_eq!((packets, records), (0, 4));
    assert_eq!(session.stats().fidelity.lost_records, 4);
}

#[test]
fn ipfix_sets_held_for_their_template_resync_instead_of_counting_loss() {
    let mut session = NetflowSession::new(&settings(true));
    // Data before its template: its record count is unknown until the template comes.
    let mut payloads = vec![ipfix_data(500, 7)];
    payloads.push(ipfix_template(507));
    payloads.extend((0..WINDOW + 2).map(|i| ipfix_data(507 + i, 1)));
    let (_, records, reports) = feed(&mut session, 4739, &payloads);
    assert_eq!(records, 0);
    assert_eq!(reports[1].flows, 7, "the held set was replayed");
}

/// The scripted reboot: template 256 of layout A, then the router restarts, numbers
/// from 0 again and reuses 256 with layout B, sending data before the template.
#[test]
fn v9_router_reboot_reusing_a_template_id_never_misdecodes() {
    let mut session = NetflowSession::new(&settings(true));
    let layout_a: &[(u16, u16)] = &[(8, 4), (12, 4), (1, 4)];
    let layout_b: &[(u16, u16)] = &[(12, 4), (8, 4), (2, 4), (1, 4)];
    let before = |sequence: u32, uptime: u32| {
        v9_packet(
            uptime,
            EXPORT_SECS + sequence,
            sequence,
            0,
            &[
                template_set(0, &[(256, layout_a)]),
                set(256, &Rec::new().bytes(&[10, 0, 0, 1]).bytes(&[10, 0, 0, 2]).u32(1_000).done()),
            ],
        )
    };
    let record_b = Rec::new().bytes(&[10, 9, 9, 2]).bytes(&[10, 9, 9, 1]).u32(7).u32(4_242).done();
    // Up 20 days; then rebooted: uptime 40 s, sequence 0, data before its template.
    let uptime = 20 * 86_400_000u32;
    let mut flows: Vec<FlowMessage> = Vec::new();
    let mut events: Vec<LifecycleEvent> = Vec::new();
    let mut errors: Vec<DecodeError> = Vec::new();
    let mut run = |session: &mut NetflowSession, payload: Vec<u8>| {
        let (out, report) = decode(session, source(2055), EXPORT_NS, &payload);
        flows.extend(out);
        events.extend(report.events);
        errors.extend(report.errors);
    };
    run(&mut session, before(5_000, uptime));
    run(&mut session, before(5_001, uptime + 1_000));
    let after_secs = EXPORT_SECS + 3_600;
    run(&mut session, v9_packet(40_000, after_secs, 0, 0, &[set(256, &record_b)]));
    run(
        &mut session,
        v9_packet(41_000, after_secs + 1, 1, 0, &[template_set(0, &[(256, layout_b)])]),
    );
    run(&mut session, v9_packet(42_000, after_secs + 2, 2, 0, &[set(256, &record_b)]));
    // A datagram of the old boot, delivered late: skipped, not decoded with layout B.
    run(&mut session, before(5_002, uptime + 2_000));

    let summary: Vec<(Vec<u8>, Vec<u8>, u64, u64)> = flows
        .iter()
        .map(|f| (f.src_addr.clone(), f.dst_addr.clone(), f.bytes, f.packets))
        .collect();
    let old = (vec![10, 0, 0, 1], vec![10, 0, 0, 2], 1_000, 0);
    let new = (vec![10, 9, 9, 1], vec![10, 9, 9, 2], 4_242, 7);
    assert_eq!(summary, vec![old.clone(), old, new.clone(), new], "layout A before, B after");
    let restarted: Vec<&LifecycleEvent> =
        events.iter().filter(|e| matches!(e, LifecycleEvent::ExporterRestarted { .. })).collect();
    assert_eq!(
        restarted,
        vec![&LifecycleEvent::ExporterRestarted { protocol: Protocol::V9, domain: 0 }]
    );
    assert!(
        !events.iter().any(|e| matches!(e, LifecycleEvent::TemplateCollision { .. })),
        "the old layout was dropped at the restart, so B is learned, not a collision: {events:?}"
    );
    assert!(events.contains(&LifecycleEvent::PendingReplayed {
        protocol: Protocol::V9,
        domain: 0,
        template_id: 256,
        records: 1
    }));
    assert_eq!(
        errors,
        vec![DecodeError::PreviousIncarnation { protocol: Protocol::V9, domain: 0 }]
    );
    assert_eq!(session.stats().fidelity.restarts, 1);
}

#[test]
fn ipfix_sequence_reset_is_a_restart_that_drops_stale_templates_and_rates() {
    let mut session = NetflowSession::new(&settings(false));
    let first = ipfix_packet(
        EXPORT_SECS,
        3_000_000,
        7,
        &[
            ipfix_options_template_set(300, &[(149, 4)], &[(34, 4)]),
            set(300, &Rec::new().u32(7).u32(100).done()),
            template_set(2, &[(256, &[(8, 4)]), (257, &[(12, 4)])]),
            set(256, &[10, 0, 0, 1]),
        ],
    );
    let (flows, report) = decode(&mut session, source(4739), EXPORT_NS, &first);
    assert_eq!(flows[0].sampling_rate, 100);
    assert!(restarts(&report).is_empty());
    // Restarted: numbering from 0, template 256 redefined with another layout in the
    // same message, and data for 257 whose old template must not be used.
    let reset = ipfix_packet(
        EXPORT_SECS + 600,
        0,
        7,
        &[
            template_set(2, &[(256, &[(7, 2), (8, 4)])]),
            set(256, &Rec::new().u16(443).bytes(&[10, 0, 0, 5]).done()),
            set(257, &[10, 0, 0, 9]),
        ],
    );
    let (flows, report) = decode(&mut session, source(4739), EXPORT_NS, &reset);
    assert_eq!(
        restarts(&report),
        vec![LifecycleEvent::ExporterRestarted { protocol: Protocol::Ipfix, domain: 7 }]
    );
    let [flow] = flows.as_slice() else { panic!("one flow expected: {flows:?}") };
    assert_eq!((flow.src_port, flow.src_addr.as_slice()), (443, &[10, 0, 0, 5][..]));
    assert_eq!(flow.sampling_rate, 0, "the previous boot's rate is gone");
    assert_eq!(
        report.errors,
        vec![DecodeError::NoTemplate { protocol: Protocol::Ipfix, template_id: 257 }]
    );
    assert_eq!(report.lost_records, 0, "a restart is not a loss");
}

#[test]
fn system_init_time_moving_forward_is_a_restart_inside_the_datagram() {
    let mut session = NetflowSession::new(&settings(false));
    let init_ms = u64::from(EXPORT_SECS) * 1000 - 86_400_000;
    let boot = |init: u64| set(300, &Rec::new().u32(0).u64(init).u32(10).done());
    let first = ipfix_packet(
        EXPORT_SECS,
        10,
        0,
        &[
            ipfix_options_template_set(300, &[(149, 4)], &[(160, 8), (34, 4)]),
            boot(init_ms),
            template_set(2, &[(256, &[(8, 4)]), (257, &[(12, 4)])]),
        ],
    );
    let (_, report) = decode(&mut session, source(4739), EXPORT_NS, &first);
    assert!(report.errors.is_empty() && restarts(&report).is_empty(), "{report:?}");
    // Rebooted 10 minutes ago, sequence only slightly behind: the new template 256 and
    // the new boot time come in one message, then data for 256 and the stale 257.
    let second = ipfix_packet(
        EXPORT_SECS + 600,
        5,
        0,
        &[
            template_set(2, &[(256, &[(7, 2), (11, 2)])]),
            boot(u64::from(EXPORT_SECS) * 1000),
            set(256, &Rec::new().u16(22).u16(2222).done()),
            set(257, &[10, 0, 0, 9]),
        ],
    );
    let (flows, report) = decode(&mut session, source(4739), EXPORT_NS, &second);
    assert_eq!(restarts(&report).len(), 1, "{:?}", report.events);
    let summary: Vec<(u32, u64)> = flows.iter().map(|f| (f.src_port, f.sampling_rate)).collect();
    assert_eq!(
        summary,
        vec![(22, 10)],
        "256 as defined in this message, 257 dropped: {:?}",
        report.events
    );
    assert_eq!(
        report.errors,
        vec![DecodeError::NoTemplate { protocol: Protocol::Ipfix, template_id: 257 }]
    );
}

#[test]
fn uptime_wrap_and_reordering_are_not_restarts() {
    let mut session = NetflowSession::new(&settings(false));
    let packet = |sequence: u32, uptime: u32, secs: u32| {
        v9_packet(uptime, secs, sequence, 0, &[template_set(0, &[(256, V9_FIELDS)])])
    };
    let payloads = vec![
        packet(1, u32::MAX - 1_500, EXPORT_SECS),
        packet(3, 500, EXPORT_SECS + 2),
        packet(2, u32::MAX - 500, EXPORT_SECS + 1),
        packet(4, 1_500, EXPORT_SECS + 3),
    ];
    let (packets, _, reports) = feed(&mut session, 2055, &payloads);
    assert!(reports.iter().all(|r| restarts(r).is_empty()));
    assert_eq!(packets, 0);
}
