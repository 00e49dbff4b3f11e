//! The bounded queue in front of the unbounded actor mailboxes.
//!
//! ractor mailboxes are unbounded, so each listener keeps a budget of `channel_size`
//! datagrams it has accepted and not yet finished: queued in its channel, in the listener
//! or exporter mailboxes, or as flows waiting in the publisher's mailbox. The receive task
//! takes one unit per datagram and drops the datagram (drop-newest) when none is left;
//! the units travel with the datagrams as a [`Credit`] and come back when the publisher
//! takes the flows into its batch, or when the datagrams are dropped on the way. So a slow
//! sink fills the budget and the socket sheds load, instead of memory growing.
//!
//! A TCP or TLS session waits for a unit instead ([`InFlight::acquire`]): it stops
//! reading, and TCP flow control slows the exporter down; nothing is dropped.
//!
//! A unit stands for a datagram of up to [`FLOWS_PER_UNIT`] flows. Decoded flows are
//! charged one unit per that many ([`Credit::cover_flows`]), past the limit if need be,
//! so datagrams of many tiny records (1,400 one-byte records fit in one) cannot hold
//! fifty times the flows a typical datagram would; the socket drops newest until the
//! budget is back under its limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::counters::ListenerCounters;

/// Flows one unit of budget stands for: the most a NetFlow v5 datagram carries, about
/// what a v9 or IPFIX datagram of typical records carries in a 1,500-byte MTU.
pub(crate) const FLOWS_PER_UNIT: usize = 30;

/// A waiting session looks again at least this often, should a wake-up be missed.
const RECHECK: Duration = Duration::from_millis(20);

/// One listener's in-flight budget. The count lives in the listener's
/// `datagrams_in_flight` gauge, so what is measured is what is enforced.
#[derive(Debug)]
pub(crate) struct InFlight {
    limit: u64,
    counters: Arc<ListenerCounters>,
    /// Woken when units come back while someone waits in [`InFlight::acquire`].
    freed: Notify,
    waiting: AtomicUsize,
}

impl InFlight {
    /// A budget of `limit` datagrams.
    pub(crate) fn new(limit: usize, counters: Arc<ListenerCounters>) -> Arc<Self> {
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        Arc::new(Self { limit, counters, freed: Notify::new(), waiting: AtomicUsize::new(0) })
    }

    /// Takes one unit; `false` when the budget is used up.
    pub(crate) fn try_acquire(&self) -> bool {
        self.counters
            .datagrams_in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.limit).then_some(used + 1)
            })
            .is_ok()
    }

    /// Takes one unit, waiting until one is given back when the budget is used up.
    pub(crate) async fn acquire(&self) {
        while !self.try_acquire() {
            let _waiting = Waiting::enter(&self.waiting);
            let mut freed = std::pin::pin!(self.freed.notified());
            freed.as_mut().enable();
            if self.try_acquire() {
                return;
            }
            let _ = tokio::time::timeout(RECHECK, freed).await;
        }
    }

    /// Takes `n` units whatever is left: the count may pass the limit, and nothing is
    /// acquired until it is back under.
    fn charge(&self, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        self.counters.datagrams_in_flight.fetch_add(n, Ordering::AcqRel);
    }

    /// Gives back `n` units.
    pub(crate) fn release(&self, n: usize) {
        if n > 0 {
            let n = u64::try_from(n).unwrap_or(u64::MAX);
            self.counters.datagrams_in_flight.fetch_sub(n, Ordering::AcqRel);
            if self.waiting.load(Ordering::SeqCst) > 0 {
                self.freed.notify_waiters();
            }
        }
    }
}

/// Counts a waiter of [`InFlight::acquire`] for as long as it waits (also when its
/// task is cancelled while waiting).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Units of an [`InFlight`] budget held by datagrams (or their flows) on their way
/// through the pipeline; given back when dropped.
#[derive(Debug)]
pub(crate) struct Credit {
    budget: Arc<InFlight>,
    units: usize,
}

impl Credit {
    /// Takes charge of `units` already acquired from `budget`.
    pub(crate) fn adopt(budget: Arc<InFlight>, units: usize) -> Self {
        Self { budget, units }
    }

    /// Moves up to `units` of this credit into a new one.
    pub(crate) fn split(&mut self, units: usize) -> Credit {
        let units = units.min(self.units);
        self.units -= units;
        Credit { budget: Arc::clone(&self.budget), units }
    }

    /// Takes charge of one more unit, already acquired from the same budget.
    pub(crate) fn add_acquired(&mut self) {
        self.units += 1;
    }

    /// Moves the whole credit out, leaving this one empty.
    pub(crate) fn take(&mut self) -> Credit {
        self.split(self.units)
    }

    /// Makes this credit hold at least one unit per [`FLOWS_PER_UNIT`] of `flows`,
    /// charging its budget the difference.
    pub(crate) fn cover_flows(&mut self, flows: usize) {
        let missing = flows.div_ceil(FLOWS_PER_UNIT).saturating_sub(self.units);
        if missing > 0 {
            self.budget.charge(missing);
            self.units += missing;
        }
    }

    /// Units held.
    #[cfg(test)]
    pub(crate) fn units(&self) -> usize {
        self.units
    }
}

impl Drop for Credit {
    fn drop(&mut self) {
        self.budget.release(self.units);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(budget: &InFlight) -> u64 {
        budget.counters.datagrams_in_flight.load(Ordering::Relaxed)
    }

    #[test]
    fn budget_refuses_past_its_limit_and_credits_give_units_back() {
        let budget = InFlight::new(3, Arc::default());
        assert!(budget.try_acquire());
        assert!(budget.try_acquire());
        assert!(budget.try_acquire());
        assert!(!budget.try_acquire());

        let mut credit = Credit::adopt(Arc::clone(&budget), 3);
        let part = credit.split(2);
        assert_eq!(part.units(), 2);
        assert_eq!(credit.units(), 1);
        drop(part);
        assert_eq!(used(&budget), 1);
        assert!(budget.try_acquire());
        assert!(budget.try_acquire());
        assert!(!budget.try_acquire());
        budget.release(2);

        let rest = credit.take();
        assert_eq!(credit.units(), 0);
        drop(credit);
        assert_eq!(used(&budget), 1);
        drop(rest);
        assert_eq!(used(&budget), 0);
    }

    #[test]
    fn flows_are_covered_one_unit_per_thirty_past_the_limit_and_all_come_back() {
        let budget = InFlight::new(4, Arc::default());
        assert!(budget.try_acquire());
        let mut credit = Credit::adopt(Arc::clone(&budget), 1);
        credit.cover_flows(FLOWS_PER_UNIT);
        assert_eq!((credit.units(), used(&budget)), (1, 1), "a typical datagram's flows");
        credit.cover_flows(1_400);
        assert_eq!(credit.units(), 47, "1,400 flows: 47 units of 30");
        assert_eq!(used(&budget), 47, "charged past the limit of 4");
        assert!(!budget.try_acquire(), "nothing more until the flows are gone");
        credit.cover_flows(10);
        assert_eq!(credit.units(), 47, "never less than held");
        drop(credit);
        assert_eq!(used(&budget), 0);
        assert!(budget.try_acquire());
    }

    #[tokio::test]
    async fn acquire_waits_until_a_unit_comes_back() {
        let budget = InFlight::new(1, Arc::default());
        budget.acquire().await;
        let waiter = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.acquire().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "no unit is free yet");
        budget.release(1);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert_eq!(used(&budget), 1);
        assert_eq!(budget.waiting.load(Ordering::SeqCst), 0);
    }
}
