//! Datagram loss and agent restart detection from sFlow datagram sequence numbers and
//! uptimes, per (agent address, sub-agent id).
//!
//! Each sub-agent numbers its datagrams 1, 2, 3, … A missing number is not declared
//! lost at once: the tracker keeps a 64-datagram window of the numbers seen below the
//! highest one, and a number counts as lost only when it leaves that window unseen. A
//! datagram overtaken in the network therefore fills its slot instead of being
//! counted. A restart (ExporterRestarted) is an uptime that went backwards by more
//! than [`UPTIME_TOLERANCE_MS`], or a sequence number more than
//! [`LATE_LIMIT`] below the highest seen.

use std::net::IpAddr;

use crate::SessionMap;

/// Datagrams a late arrival may trail the highest sequence number by and still fill
/// its slot.
const WINDOW: u32 = 64;
/// A sequence number further than this below the highest seen is a restart, not a
/// late datagram.
pub(crate) const LATE_LIMIT: u32 = 4096;
/// Uptime may run backwards this much (milliseconds) between reordered datagrams
/// before it means a restart.
pub(crate) const UPTIME_TOLERANCE_MS: u32 = 5_000;
/// Sub-agents tracked per session at most; the least recently seen is forgotten when
/// a new one would exceed it, so spoofed agent addresses cannot grow memory.
pub(crate) const MAX_TRACKED_AGENTS: usize = 256;

/// Which sequence a datagram belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct AgentKey {
    pub agent: IpAddr,
    pub sub_agent_id: u32,
}

/// What one datagram's sequence number told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Observation {
    /// Datagrams declared lost now.
    pub lost: u64,
    /// The sub-agent restarted; its sequence tracking started over.
    pub restarted: bool,
}

/// Sequence windows of every sub-agent seen by one session.
#[derive(Debug, Default)]
pub(crate) struct SequenceTracker {
    agents: SessionMap<AgentKey, SequenceWindow>,
    /// Increments on every observation; orders entries for eviction.
    clock: u64,
    lost_total: u64,
    restarts_total: u64,
}

impl SequenceTracker {
    /// Records one datagram's sequence number and uptime.
    pub(crate) fn observe(&mut self, key: AgentKey, sequence: u32, uptime_ms: u32) -> Observation {
        self.clock = self.clock.wrapping_add(1);
        let clock = self.clock;
        let observation = match self.agents.get_mut(&key) {
            Some(window) => window.observe(sequence, uptime_ms, clock),
            None => {
                self.make_room();
                self.agents.insert(key, SequenceWindow::start(sequence, uptime_ms, clock));
                Observation::default()
            }
        };
        self.lost_total = self.lost_total.saturating_add(observation.lost);
        self.restarts_total += u64::from(observation.restarted);
        observation
    }

    /// Datagrams declared lost since the session started.
    pub(crate) fn lost_total(&self) -> u64 {
        self.lost_total
    }

    /// Restarts detected since the session started.
    pub(crate) fn restarts_total(&self) -> u64 {
        self.restarts_total
    }

    fn make_room(&mut self) {
        if self.agents.len() < MAX_TRACKED_AGENTS {
            return;
        }
        let oldest = self.agents.iter().min_by_key(|(_, window)| window.last_seen).map(|(k, _)| *k);
        if let Some(key) = oldest {
            self.agents.remove(&key);
        }
    }
}

/// One sub-agent's state.
#[derive(Debug, Clone, Copy)]
struct SequenceWindow {
    highest: u32,
    /// Bit i set: sequence number `highest - i` was seen.
    seen: u64,
    uptime_ms: u32,
    last_seen: u64,
}

impl SequenceWindow {
    /// Numbers before the first one seen are not losses: the window starts full.
    fn start(sequence: u32, uptime_ms: u32, clock: u64) -> Self {
        SequenceWindow { highest: sequence, seen: u64::MAX, uptime_ms, last_seen: clock }
    }

    fn observe(&mut self, sequence: u32, uptime_ms: u32, clock: u64) -> Observation {
        self.last_seen = clock;
        let ahead = sequence.wrapping_sub(self.highest);
        let behind = self.highest.wrapping_sub(sequence);
        let is_forward = ahead != 0 && ahead < 1 << 31;
        if self.uptime_went_backwards(uptime_ms) || (!is_forward && behind > LATE_LIMIT) {
            *self = Self::start(sequence, uptime_ms, clock);
            return Observation { lost: 0, restarted: true };
        }
        if is_forward {
            let lost = self.advance(ahead);
            self.highest = sequence;
            self.uptime_ms = uptime_ms;
            return Observation { lost, restarted: false };
        }
        if behind < WINDOW {
            // A late or duplicate datagram: fill its slot.
            self.seen |= 1 << behind;
        }
        Observation::default()
    }

    /// Signed comparison, so the 49.7-day wrap of the 32-bit millisecond uptime is
    /// not taken for a restart.
    fn uptime_went_backwards(&self, uptime_ms: u32) -> bool {
        let delta = uptime_ms.wrapping_sub(self.uptime_ms);
        delta >= 1 << 31 && delta.wrapping_neg() > UPTIME_TOLERANCE_MS
    }

    /// Slides the window `ahead` numbers forward; returns the unseen numbers that
    /// fell out of it.
    fn advance(&mut self, ahead: u32) -> u64 {
        if ahead >= WINDOW {
            let never_in_window = u64::from(ahead - WINDOW);
            let lost = u64::from(self.seen.count_zeros()) + never_in_window;
            self.seen = 1;
            return lost;
        }
        let leaving = self.seen >> (WINDOW - ahead);
        let lost = u64::from(ahead - leaving.count_ones());
        self.seen = (self.seen << ahead) | 1;
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: AgentKey =
        AgentKey { agent: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), sub_agent_id: 0 };

    fn feed(tracker: &mut SequenceTracker, sequences: &[u32]) -> (u64, usize) {
        let mut lost = 0;
        let mut restarts = 0;
        for (i, seq) in sequences.iter().enumerate() {
            let obs = tracker.observe(KEY, *seq, 1_000 + i as u32);
            lost += obs.lost;
            restarts += usize::from(obs.restarted);
        }
        (lost, restarts)
    }

    #[test]
    fn in_order_loses_nothing() {
        let mut t = SequenceTracker::default();
        let seqs: Vec<u32> = (1..=500).collect();
        assert_eq!(feed(&mut t, &seqs), (0, 0));
    }

    #[test]
    fn gap_is_counted_once_it_leaves_the_window() {
        let mut t = SequenceTracker::default();
        // 4 and 5 missing.
        let mut seqs = vec![1, 2, 3, 6, 7];
        assert_eq!(feed(&mut t, &seqs).0, 0, "not declared while still in the window");
        seqs = (8..=80).collect();
        let (lost, restarts) = feed(&mut t, &seqs);
        assert_eq!((lost, restarts), (2, 0));
        assert_eq!(t.lost_total(), 2);
    }

    #[test]
    fn big_forward_jump_counts_every_missing_number() {
        let mut t = SequenceTracker::default();
        assert_eq!(feed(&mut t, &[10, 11, 1_011]).0, 999 - 63);
        // The 63 numbers still in the window are declared when it moves past them.
        assert_eq!(feed(&mut t, &[1_011 + 64]).0, 63);
    }

    #[test]
    fn reordering_inside_the_window_is_not_loss() {
        let mut t = SequenceTracker::default();
        let mut seqs = vec![1, 2, 4, 3, 5, 8, 6, 7];
        seqs.extend(9..=200);
        assert_eq!(feed(&mut t, &seqs), (0, 0));
    }

    #[test]
    fn duplicate_is_neither_loss_nor_restart() {
        let mut t = SequenceTracker::default();
        let mut seqs = vec![1, 2, 2, 3];
        seqs.extend(4..=100);
        assert_eq!(feed(&mut t, &seqs), (0, 0));
    }

    #[test]
    fn sequence_wraps_around_without_loss() {
        let mut t = SequenceTracker::default();
        let seqs = [u32::MAX - 2, u32::MAX - 1, u32::MAX, 0, 1, 2];
        assert_eq!(feed(&mut t, &seqs), (0, 0));
    }

    #[test]
    fn sequence_reset_is_a_restart() {
        let mut t = SequenceTracker::default();
        let (lost, restarts) = feed(&mut t, &[50_000, 50_001, 1, 2]);
        assert_eq!((lost, restarts), (0, 1));
        assert_eq!(t.restarts_total(), 1);
    }

    #[test]
    fn uptime_going_backwards_is_a_restart_even_with_sequence_ahead() {
        let mut t = SequenceTracker::default();
        assert!(!t.observe(KEY, 5, 900_000).restarted);
        assert!(t.observe(KEY, 6, 100).restarted);
        // Small uptime jitter from reordering is tolerated.
        assert!(!t.observe(KEY, 7, 200).restarted);
        assert!(!t.observe(KEY, 8, 150).restarted);
    }

    #[test]
    fn uptime_wrap_is_not_a_restart() {
        let mut t = SequenceTracker::default();
        assert!(!t.observe(KEY, 1, u32::MAX - 10).restarted);
        assert!(!t.observe(KEY, 2, 20).restarted);
    }

    #[test]
    fn sub_agents_are_tracked_separately_and_bounded() {
        let mut t = SequenceTracker::default();
        let other = AgentKey { sub_agent_id: 1, ..KEY };
        assert_eq!(t.observe(KEY, 100, 1), Observation::default());
        assert_eq!(t.observe(other, 1, 1), Observation::default());
        assert_eq!(t.observe(KEY, 101, 2), Observation::default());
        assert_eq!(t.observe(other, 2, 2), Observation::default());
        for id in 0..(MAX_TRACKED_AGENTS as u32 * 2) {
            t.observe(AgentKey { sub_agent_id: 1_000 + id, ..KEY }, 1, 1);
        }
        assert_eq!(t.agents.len(), MAX_TRACKED_AGENTS);
    }
}
