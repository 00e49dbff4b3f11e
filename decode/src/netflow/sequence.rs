//! Loss accounting and restart detection from export header sequence numbers and
//! uptimes, per stream: a v9/IPFIX template scope (source port + domain) or a v5
//! (source port, engine) pair.
//!
//! **Units** (each protocol's own rule): NetFlow v5 numbers flows (next = sequence +
//! records in the packet), NetFlow v9 numbers export packets (next = sequence + 1),
//! IPFIX numbers data records, options data records included (next = sequence + data
//! records in the message; template sets do not count, RFC 7011 §3.1).
//!
//! **Reordering**: a jump ahead opens a *hole* instead of counting a loss at once. A
//! late datagram whose numbers fall in a hole fills (part of) it; a datagram that fills
//! no hole is a duplicate and ignored. A hole is declared lost once it is older than
//! [`WINDOW`] datagrams of its stream (or when more than [`MAX_HOLES`] are open), so a
//! late datagram is never counted, and nothing is counted twice.
//!
//! **Unknown record counts**: an IPFIX data set held for its template (or one that
//! failed) has an unknown number of records, so the next expected number is unknown:
//! the stream *resyncs* on the next datagram without declaring anything lost.
//!
//! **Restarts** (checked before a datagram's sets are decoded):
//! - v5/v9: each datagram gives the exporter's boot time, export time − sysUpTime. A
//!   datagram whose boot time is later than the stream's (beyond [`BOOT_TOLERANCE_MS`])
//!   *and* whose uptime is lower than the last one's (beyond [`UPTIME_TOLERANCE_MS`])
//!   comes from a rebooted exporter. Boot times are compared modulo 2^32 ms, so the
//!   49.7-day uptime wrap is not a reboot; a clock step alone (boot time moves, uptime
//!   does not go back) is not one either; a late datagram has the same boot time.
//! - all: a sequence number further behind the next expected one than the stream's
//!   late limit (not reordering: the exporting process started numbering again).
//! - IPFIX also restarts when systemInitTimeMilliseconds moves forward (see `scope`).
//!
//! After a v5/v9 restart, a datagram with the previous boot time is *stale* (sent
//! before the reboot, delivered late): it must not be decoded with the new templates.

use std::collections::VecDeque;

/// Datagrams of a stream a hole may wait for a late datagram before it is a loss.
pub(crate) const WINDOW: u64 = 64;
/// Open holes kept per stream; past it the oldest is declared lost.
pub(crate) const MAX_HOLES: usize = 64;
/// Boot time estimates closer than this (modulo 2^32 ms) are the same boot: v9 export
/// times have one-second resolution and exporters sample clock and uptime apart.
pub(crate) const BOOT_TOLERANCE_MS: u64 = 10_000;
/// Uptime may run backwards this much between reordered datagrams.
pub(crate) const UPTIME_TOLERANCE_MS: u32 = 5_000;
/// A forward jump larger than this is a discontinuity (resync), not a loss: it bounds
/// what one corrupt or spoofed header can add to the loss counters.
pub(crate) const MAX_GAP: u64 = 1 << 24;
/// 2^32 as u64/i64, the modulus of 32-bit sequence numbers and uptimes.
const WRAP: u64 = 1 << 32;

/// What a stream's sequence numbers count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Export packets (NetFlow v9).
    Packets,
    /// Flows or data records (NetFlow v5, IPFIX).
    Records,
}

impl Unit {
    /// How far behind the next expected number a datagram may be and still be a late
    /// arrival rather than a restart: 4096 packets, or 2^17 records (4096 full v5
    /// packets).
    fn late_limit(self) -> u32 {
        match self {
            Unit::Packets => 4096,
            Unit::Records => 1 << 17,
        }
    }
}

/// The v5/v9 header fields that date the exporter's boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeaderClock {
    /// Export time, Unix milliseconds.
    pub export_ms: u64,
    pub sys_uptime_ms: u32,
}

impl HeaderClock {
    fn boot_ms(self) -> i64 {
        i64::try_from(self.export_ms).unwrap_or(i64::MAX) - i64::from(self.sys_uptime_ms)
    }
}

/// Whether two boot time estimates are the same boot, modulo the uptime wrap.
fn same_boot(a: i64, b: i64) -> bool {
    let d = (b.wrapping_sub(a)).rem_euclid(WRAP as i64) as u64;
    d.min(WRAP - d) <= BOOT_TOLERANCE_MS
}

/// What the header check says about a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Same exporter incarnation: decode it.
    Continue,
    /// The exporter restarted with this datagram: reset its state, then decode it.
    Restarted,
    /// Sent before the exporter's last restart, delivered late: skip it.
    Stale,
}

/// A gap in the sequence waiting for a late datagram: numbers `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hole {
    start: u64,
    end: u64,
    /// Stream datagram count when it opened.
    opened: u64,
}

/// The boot of the exporter a stream's datagrams come from.
#[derive(Debug, Clone, Copy)]
struct Boot {
    boot_ms: i64,
    last_uptime_ms: u32,
}

/// One stream's sequence and restart state.
#[derive(Debug)]
pub(crate) struct Stream {
    unit: Unit,
    /// Next expected number, unwrapped to 64 bits (starts at 2^32 + first number so
    /// late numbers stay positive); `None` until the first datagram.
    next: Option<u64>,
    /// `next` is only a lower bound: the last datagram's record count was unknown.
    resync: bool,
    holes: VecDeque<Hole>,
    datagrams: u64,
    boot: Option<Boot>,
    /// The boot before the last restart, to recognise its late datagrams.
    previous_boot: Option<i64>,
}

impl Stream {
    pub fn new(unit: Unit) -> Self {
        Self {
            unit,
            next: None,
            resync: false,
            holes: VecDeque::new(),
            datagrams: 0,
            boot: None,
            previous_boot: None,
        }
    }

    /// The 32-bit next expected number, if any.
    fn next32(&self) -> Option<u32> {
        self.next.map(|n| n as u32)
    }

    /// Classifies a datagram before its sets are decoded; on `Restarted` the stream
    /// has already started over.
    pub fn check(&mut self, sequence: u32, clock: Option<HeaderClock>) -> Verdict {
        let behind = self.next32().map_or(0, |next| next.wrapping_sub(sequence));
        let late = behind != 0 && behind < 1 << 31;
        if let (Some(clock), Some(boot)) = (clock, self.boot) {
            let new_boot = clock.boot_ms();
            let same = same_boot(boot.boot_ms, new_boot);
            if !same && self.previous_boot.is_some_and(|prev| same_boot(prev, new_boot)) {
                return Verdict::Stale;
            }
            let uptime_back =
                clock.sys_uptime_ms.saturating_add(UPTIME_TOLERANCE_MS) < boot.last_uptime_ms;
            if !same && new_boot > boot.boot_ms && uptime_back {
                return self.restart(Some(clock));
            }
        }
        if late && behind > self.unit.late_limit() {
            return self.restart(clock);
        }
        if let Some(clock) = clock.filter(|_| !late) {
            self.boot =
                Some(Boot { boot_ms: clock.boot_ms(), last_uptime_ms: clock.sys_uptime_ms });
        }
        Verdict::Continue
    }

    /// Forgets the sequence state (the exporter restarted); the next datagram starts
    /// the count again. Open holes are dropped uncounted.
    pub fn reset(&mut self) {
        self.next = None;
        self.resync = false;
        self.holes.clear();
    }

    fn restart(&mut self, clock: Option<HeaderClock>) -> Verdict {
        self.reset();
        self.previous_boot = self.boot.map(|b| b.boot_ms);
        self.boot = clock.map(|c| Boot { boot_ms: c.boot_ms(), last_uptime_ms: c.sys_uptime_ms });
        Verdict::Restarted
    }

    /// Accounts a decoded datagram numbered `sequence` carrying `count` units (`None`:
    /// unknown); returns the units declared lost now.
    pub fn advance(&mut self, sequence: u32, count: Option<u32>) -> u64 {
        self.datagrams += 1;
        let Some(next) = self.next else {
            self.next = Some(WRAP + u64::from(sequence));
            self.extend(count);
            return 0;
        };
        let offset = i64::from(sequence.wrapping_sub(next as u32) as i32);
        let position = next.saturating_add_signed(offset);
        if offset >= 0 {
            let gap = position - next;
            if gap > 0 && !self.resync && gap <= MAX_GAP {
                self.holes.push_back(Hole { start: next, end: position, opened: self.datagrams });
            }
            self.next = Some(position);
            self.extend(count);
        } else {
            self.fill(position, count);
        }
        self.age_out()
    }

    /// Moves `next` past the datagram's units, or marks it a lower bound.
    fn extend(&mut self, count: Option<u32>) {
        match (self.next, count) {
            (Some(next), Some(count)) => {
                self.next = Some(next + u64::from(count));
                self.resync = false;
            }
            _ => self.resync = true,
        }
    }

    /// A late datagram at `start`: removes its numbers from the holes. With an unknown
    /// count, the hole it starts in is taken as filled (never over-count).
    fn fill(&mut self, start: u64, count: Option<u32>) {
        let end = match count {
            Some(count) => start + u64::from(count.max(1)),
            None => self
                .holes
                .iter()
                .find(|h| h.start <= start && start < h.end)
                .map_or(start, |h| h.end),
        };
        let mut kept = VecDeque::with_capacity(self.holes.len() + 1);
        for hole in self.holes.drain(..) {
            if hole.end <= start || end <= hole.start {
                kept.push_back(hole);
                continue;
            }
            if hole.start < start {
                kept.push_back(Hole { end: start, ..hole });
            }
            if end < hole.end {
                kept.push_back(Hole { start: end, ..hole });
            }
        }
        self.holes = kept;
    }

    /// Declares the holes past the window (or over the cap) lost.
    fn age_out(&mut self) -> u64 {
        let mut lost = 0;
        while let Some(hole) = self.holes.front().copied() {
            let expired = self.datagrams.saturating_sub(hole.opened) >= WINDOW;
            if !expired && self.holes.len() <= MAX_HOLES {
                break;
            }
            lost += hole.end - hole.start;
            self.holes.pop_front();
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds (sequence, count) pairs; returns (lost, restarts).
    fn feed(stream: &mut Stream, datagrams: &[(u32, Option<u32>)]) -> (u64, u64) {
        let mut lost = 0;
        let mut restarts = 0;
        for (sequence, count) in datagrams {
            if stream.check(*sequence, None) == Verdict::Restarted {
                restarts += 1;
            }
            lost += stream.advance(*sequence, *count);
        }
        (lost, restarts)
    }

    fn records(from: u32, per: u32, n: u32) -> Vec<(u32, Option<u32>)> {
        (0..n).map(|i| (from + i * per, Some(per))).collect()
    }

    #[test]
    fn in_order_records_lose_nothing() {
        let mut s = Stream::new(Unit::Records);
        assert_eq!(feed(&mut s, &records(100, 5, 500)), (0, 0));
    }

    #[test]
    fn a_gap_is_declared_once_it_leaves_the_window() {
        let mut s = Stream::new(Unit::Records);
        // 10..15 (5 records) never arrive.
        assert_eq!(feed(&mut s, &[(0, Some(10)), (15, Some(5))]), (0, 0));
        // The hole opened with the 2nd datagram; the 64 after it may still fill it.
        let (lost, _) = feed(&mut s, &records(20, 5, WINDOW as u32 - 1));
        assert_eq!(lost, 0, "still inside the window");
        assert_eq!(feed(&mut s, &records(20 + 5 * (WINDOW as u32 - 1), 5, 1)).0, 5);
        assert_eq!(feed(&mut s, &records(25 + 5 * (WINDOW as u32 - 1), 5, 200)).0, 0);
    }

    #[test]
    fn late_datagrams_fill_their_hole_and_duplicates_are_ignored() {
        let mut s = Stream::new(Unit::Records);
        let mut datagrams = vec![(0, Some(10)), (20, Some(5)), (10, Some(4)), (14, Some(6))];
        datagrams.push((10, Some(4))); // duplicate
        datagrams.extend(records(25, 5, 200));
        assert_eq!(feed(&mut s, &datagrams), (0, 0));
    }

    #[test]
    fn a_partly_filled_hole_counts_the_rest_once() {
        let mut s = Stream::new(Unit::Records);
        let mut datagrams = vec![(0, Some(10)), (30, Some(5)), (12, Some(3))];
        datagrams.extend(records(35, 5, 200));
        // 10..12 and 15..30 stay missing: 2 + 15.
        assert_eq!(feed(&mut s, &datagrams), (17, 0));
    }

    #[test]
    fn unknown_counts_resync_without_loss() {
        let mut s = Stream::new(Unit::Records);
        let mut datagrams = vec![(0, Some(10)), (10, None), (17, Some(3))];
        datagrams.extend(records(20, 5, 200));
        assert_eq!(feed(&mut s, &datagrams), (0, 0));
    }

    #[test]
    fn an_exporter_that_never_counts_is_neither_loss_nor_restart() {
        let mut s = Stream::new(Unit::Records);
        let datagrams: Vec<_> = (0..500).map(|_| (0, Some(30))).collect();
        assert_eq!(feed(&mut s, &datagrams), (0, 0));
    }

    #[test]
    fn packets_wrap_around_without_loss() {
        let mut s = Stream::new(Unit::Packets);
        let datagrams: Vec<_> =
            (0..200u32).map(|i| ((u32::MAX - 100).wrapping_add(i), Some(1))).collect();
        assert_eq!(feed(&mut s, &datagrams), (0, 0));
    }

    #[test]
    fn far_behind_is_a_restart_and_counting_starts_over() {
        let mut s = Stream::new(Unit::Packets);
        let mut datagrams: Vec<_> = (50_000..50_010).map(|i| (i, Some(1))).collect();
        datagrams.extend((1..300).map(|i| (i, Some(1))));
        assert_eq!(feed(&mut s, &datagrams), (0, 1));
    }

    #[test]
    fn a_huge_jump_is_a_discontinuity_not_a_loss() {
        let mut s = Stream::new(Unit::Records);
        let mut datagrams = vec![(0, Some(1)), (1 + MAX_GAP as u32 + 1, Some(1))];
        datagrams.extend(records(MAX_GAP as u32 + 3, 1, 100));
        assert_eq!(feed(&mut s, &datagrams), (0, 0));
    }

    #[test]
    fn too_many_holes_declare_the_oldest() {
        let mut s = Stream::new(Unit::Packets);
        // Every other packet missing: the 65th hole pushes out the first.
        let datagrams: Vec<_> = (0..=MAX_HOLES as u32 + 1).map(|i| (i * 2, Some(1))).collect();
        assert_eq!(feed(&mut s, &datagrams).0, 1);
    }

    fn clock(export_s: u64, uptime_ms: u32) -> Option<HeaderClock> {
        Some(HeaderClock { export_ms: export_s * 1000, sys_uptime_ms: uptime_ms })
    }

    #[test]
    fn reboot_is_uptime_back_and_boot_time_forward() {
        let mut s = Stream::new(Unit::Packets);
        assert_eq!(s.check(100, clock(10_000, 9_000_000)), Verdict::Continue);
        s.advance(100, Some(1));
        // 19 s late datagram: same boot, lower uptime and sequence.
        assert_eq!(s.check(90, clock(9_981, 8_981_000)), Verdict::Continue);
        // Clock stepped forward 1 h: boot moves, uptime does not go back.
        assert_eq!(s.check(101, clock(13_601, 9_001_000)), Verdict::Continue);
        s.advance(101, Some(1));
        // Rebooted: uptime 30 s, sequence 102 (not far behind): a restart all the same.
        assert_eq!(s.check(102, clock(13_700, 30_000)), Verdict::Restarted);
        s.advance(102, Some(1));
        // A datagram of the previous boot arriving now is stale.
        assert_eq!(s.check(101, clock(13_650, 9_050_000)), Verdict::Stale);
        assert_eq!(s.check(103, clock(13_701, 31_000)), Verdict::Continue);
    }

    #[test]
    fn uptime_wrap_is_not_a_reboot() {
        let mut s = Stream::new(Unit::Packets);
        assert_eq!(s.check(1, clock(5_000_000, u32::MAX - 500)), Verdict::Continue);
        s.advance(1, Some(1));
        assert_eq!(s.check(2, clock(5_000_001, 500)), Verdict::Continue);
    }

    #[test]
    fn a_reboot_after_a_long_uptime_is_seen() {
        let mut s = Stream::new(Unit::Packets);
        let thirty_days_ms = 30 * 86_400_000u32;
        assert_eq!(s.check(7, clock(3_000_000, thirty_days_ms)), Verdict::Continue);
        s.advance(7, Some(1));
        assert_eq!(s.check(8, clock(3_000_300, 60_000)), Verdict::Restarted);
    }
}
