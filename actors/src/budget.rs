//! The bounded queue in front of the unbounded actor mailboxes.
//!
//! ractor mailboxes are unbounded, so each listener keeps a budget of `channel_size`
//! datagrams it has accepted and not yet finished: queued in its channel, in the listener
//! or exporter mailboxes, or as flows waiting in the publisher's mailbox. The receive task
//! takes one unit per datagram and drops the datagram (drop-newest) when none is left;
//! the units travel with the datagrams as a [`Credit`] and come back when the publisher
//! takes the flows into its batch, or when the datagrams are dropped on the way. So a slow
//! sink fills the budget and the socket sheds load, instead of memory growing.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::counters::ListenerCounters;

/// One listener's in-flight budget. The count lives in the listener's
/// `datagrams_in_flight` gauge, so what is measured is what is enforced.
#[derive(Debug)]
pub(crate) struct InFlight {
    limit: u64,
    counters: Arc<ListenerCounters>,
}

impl InFlight {
    /// A budget of `limit` datagrams.
    pub(crate) fn new(limit: usize, counters: Arc<ListenerCounters>) -> Arc<Self> {
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        Arc::new(Self { limit, counters })
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

    /// Gives back `n` units.
    pub(crate) fn release(&self, n: usize) {
        if n > 0 {
            let n = u64::try_from(n).unwrap_or(u64::MAX);
            self.counters.datagrams_in_flight.fetch_sub(n, Ordering::AcqRel);
        }
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

    /// Moves the whole credit out, leaving this one empty.
    pub(crate) fn take(&mut self) -> Credit {
        self.split(self.units)
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
}
