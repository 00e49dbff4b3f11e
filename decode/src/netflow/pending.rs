//! Data sets that arrived before their template, held until it comes.
//!
//! Each entry is a synthetic datagram (the original export header plus the one data
//! set) with its own receive time and source, so a replay decodes with the header the
//! data came with (uptime, export time, sequence), unlike netflow_parser's pending cache,
//! which replays with the header of the packet that brought the template.
//!
//! Bounds (`pending_flows` settings): at most `max_pending_flows` (scope, template id)
//! queues per exporter, the oldest queue giving way to a new one; at most
//! `max_entries_per_template` sets per queue and `max_entry_size_bytes` per set, a set
//! past either being refused (counted as `no_template` by the caller); entries older
//! than `ttl` are dropped. Memory: an exporter holds at most `max_bytes`, and all
//! exporters together at most what their shared [`PendingMemory`] allows; a set that
//! does not fit is refused and counted by which bound it hit. The counts above alone
//! would let one exporter hold 256 × 1024 × 64 KiB; the byte bounds are what keep a
//! flood of template-less data from spoofed sources within a known size.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{PendingFlowSettings, ScopeKey};
use crate::SessionMap;
use crate::report::PendingMemoryCap;

/// What one held entry costs beyond its bytes (the entry, its queue slot, allocator).
const ENTRY_OVERHEAD: usize = 96;

/// Bytes held by the pending caches that share it, and their bound. Shared by every
/// exporter session of the process; each session gives back what it held when it ends.
#[derive(Debug)]
pub struct PendingMemory {
    limit: usize,
    used: AtomicUsize,
}

impl PendingMemory {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { limit, used: AtomicUsize::new(0) }
    }

    /// No bound (tests, tools).
    pub fn unbounded() -> Self {
        Self::new(usize::MAX)
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes `bytes` if they fit under the bound.
    fn try_reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// One held data set.
#[derive(Debug, Clone)]
pub(crate) struct PendingEntry {
    /// Export header + the data set, ready for netflow_parser.
    pub datagram: Vec<u8>,
    pub received_ns: u64,
    pub source: SocketAddr,
    /// Session datagram tick it arrived in (a restart drops what came before it).
    pub tick: u64,
}

impl PendingEntry {
    /// What holding it costs.
    fn cost(&self) -> usize {
        self.datagram.len() + ENTRY_OVERHEAD
    }
}

#[derive(Debug)]
struct Queue {
    entries: VecDeque<PendingEntry>,
    /// Creation order, to find the oldest queue.
    created: u64,
    /// What its entries cost together, kept as they come and go: read on every stats
    /// call, which must not walk every held entry.
    bytes: usize,
}

impl Queue {
    fn cost(&self) -> usize {
        self.bytes
    }
}

/// Where a held set went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// Held; holding it pushed out the oldest queue (its key), if any.
    Yes { evicted: Option<(ScopeKey, u16)> },
    /// Refused: too large, its template's queue is full (`None`), or a memory bound.
    Refused(Option<PendingMemoryCap>),
}

#[derive(Debug)]
pub(crate) struct PendingCache {
    settings: PendingFlowSettings,
    queues: SessionMap<(ScopeKey, u16), Queue>,
    next_order: u64,
    /// Bytes held, as reserved in `settings.memory`.
    bytes: usize,
}

impl PendingCache {
    pub fn new(settings: PendingFlowSettings) -> Self {
        Self { settings, queues: SessionMap::default(), next_order: 0, bytes: 0 }
    }

    /// Bytes held for scopes that `matches`.
    pub fn bytes_where(&self, matches: impl Fn(&ScopeKey) -> bool) -> usize {
        self.queues.iter().filter(|((scope, _), _)| matches(scope)).map(|(_, q)| q.cost()).sum()
    }

    pub fn max_queues(&self) -> usize {
        self.settings.max_pending_flows
    }

    fn ttl_ns(&self) -> u64 {
        u64::try_from(self.settings.ttl.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether an entry received at `received_ns` is past its time to live at `now_ns`.
    pub fn is_stale(&self, received_ns: u64, now_ns: u64) -> bool {
        now_ns.saturating_sub(received_ns) > self.ttl_ns()
    }

    /// Holds `entry` (whose data set body is `body_len` bytes) for `template_id`.
    pub fn hold(
        &mut self,
        scope: ScopeKey,
        template_id: u16,
        body_len: usize,
        entry: PendingEntry,
    ) -> Held {
        if body_len > self.settings.max_entry_size_bytes {
            return Held::Refused(None);
        }
        let key = (scope, template_id);
        let queue_full = self
            .queues
            .get(&key)
            .is_some_and(|q| q.entries.len() >= self.settings.max_entries_per_template);
        if queue_full {
            return Held::Refused(None);
        }
        let evicted = if !self.queues.contains_key(&key)
            && self.queues.len() >= self.settings.max_pending_flows
        {
            self.oldest_key().inspect(|oldest| self.remove_queue(oldest))
        } else {
            None
        };
        let cost = entry.cost();
        if let Err(cap) = self.reserve(cost) {
            return Held::Refused(Some(cap));
        }
        if let Some(queue) = self.queues.get_mut(&key) {
            queue.entries.push_back(entry);
            queue.bytes += cost;
            return Held::Yes { evicted };
        }
        self.next_order += 1;
        let queue =
            Queue { entries: VecDeque::from([entry]), created: self.next_order, bytes: cost };
        self.queues.insert(key, queue);
        Held::Yes { evicted }
    }

    /// Takes `bytes` from this exporter's share and the shared budget.
    fn reserve(&mut self, bytes: usize) -> Result<(), PendingMemoryCap> {
        if self.bytes.saturating_add(bytes) > self.settings.max_bytes {
            return Err(PendingMemoryCap::Exporter);
        }
        if !self.settings.memory.try_reserve(bytes) {
            return Err(PendingMemoryCap::Total);
        }
        self.bytes += bytes;
        Ok(())
    }

    fn release(&mut self, bytes: usize) {
        self.bytes -= bytes;
        self.settings.memory.release(bytes);
    }

    fn remove_queue(&mut self, key: &(ScopeKey, u16)) {
        if let Some(queue) = self.queues.remove(key) {
            self.release(queue.cost());
        }
    }

    fn oldest_key(&self) -> Option<(ScopeKey, u16)> {
        self.queues.iter().min_by_key(|(_, q)| q.created).map(|(key, _)| *key)
    }

    /// Takes the entries held for `template_id`, oldest first.
    pub fn take(&mut self, scope: ScopeKey, template_id: u16) -> Option<VecDeque<PendingEntry>> {
        let queue = self.queues.remove(&(scope, template_id))?;
        self.release(queue.cost());
        Some(queue.entries)
    }

    /// Drops entries past their time to live; returns the keys that lost entries.
    pub fn expire(&mut self, now_ns: u64) -> Vec<(ScopeKey, u16)> {
        let ttl_ns = self.ttl_ns();
        let mut touched =
            self.drop_entries(|_, entry| now_ns.saturating_sub(entry.received_ns) > ttl_ns);
        touched.sort_unstable_by_key(|(scope, id)| (scope.port, scope.domain, *id));
        touched
    }

    /// Drops the entries `doomed` picks, giving their bytes back; returns the keys of
    /// the queues that lost entries.
    fn drop_entries(
        &mut self,
        doomed: impl Fn(&(ScopeKey, u16), &PendingEntry) -> bool,
    ) -> Vec<(ScopeKey, u16)> {
        let mut touched = Vec::new();
        let mut freed = 0;
        self.queues.retain(|key, queue| {
            let before = queue.entries.len();
            let mut queue_freed = 0;
            queue.entries.retain(|entry| {
                let drop = doomed(key, entry);
                if drop {
                    queue_freed += entry.cost();
                }
                !drop
            });
            queue.bytes -= queue_freed;
            freed += queue_freed;
            if queue.entries.len() != before {
                touched.push(*key);
            }
            !queue.entries.is_empty()
        });
        self.release(freed);
        touched
    }

    /// Drops every entry; returns the keys of the queues that held some.
    pub fn drop_all(&mut self) -> Vec<(ScopeKey, u16)> {
        let mut touched = self.drop_entries(|_, _| true);
        touched.sort_unstable_by_key(|(scope, id)| (scope.port, scope.domain, *id));
        touched
    }

    /// Drops every queue of `scope`; returns their template ids.
    pub fn drop_scope(&mut self, scope: ScopeKey) -> Vec<u16> {
        let mut ids: Vec<u16> =
            self.drop_entries(|(s, _), _| *s == scope).into_iter().map(|(_, id)| id).collect();
        ids.sort_unstable();
        ids
    }

    /// Drops the entries of `scope` that arrived before datagram `tick` (the exporter
    /// restarted: they may have been sent with templates it no longer uses); returns
    /// the template ids that lost entries.
    pub fn drop_scope_before(&mut self, scope: ScopeKey, tick: u64) -> Vec<u16> {
        let mut ids: Vec<u16> = self
            .drop_entries(|(s, _), entry| *s == scope && entry.tick < tick)
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Queues held for scopes that `matches`.
    pub fn queues_where(&self, matches: impl Fn(&ScopeKey) -> bool) -> usize {
        self.queues.keys().filter(|(scope, _)| matches(scope)).count()
    }
}

impl Drop for PendingCache {
    /// A session that ends (exporter evicted or restarted) gives its bytes back.
    fn drop(&mut self) {
        self.settings.memory.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::event::Protocol;

    fn settings() -> PendingFlowSettings {
        PendingFlowSettings {
            max_pending_flows: 2,
            max_entries_per_template: 2,
            max_entry_size_bytes: 10,
            ttl: Duration::from_secs(1),
            max_bytes: usize::MAX,
            memory: Arc::new(PendingMemory::unbounded()),
        }
    }

    /// What one test entry costs.
    const COST: usize = 4 + ENTRY_OVERHEAD;

    fn scope() -> ScopeKey {
        ScopeKey { protocol: Protocol::Ipfix, port: 1, domain: 0 }
    }

    fn entry(received_ns: u64) -> PendingEntry {
        PendingEntry {
            datagram: vec![0; 4],
            received_ns,
            source: "192.0.2.1:1".parse().unwrap(),
            tick: received_ns,
        }
    }

    #[test]
    fn caps_refuse_or_push_out_the_oldest_queue() {
        let mut cache = PendingCache::new(settings());
        assert_eq!(cache.hold(scope(), 256, 11, entry(0)), Held::Refused(None));
        assert_eq!(cache.hold(scope(), 256, 4, entry(0)), Held::Yes { evicted: None });
        assert_eq!(cache.hold(scope(), 256, 4, entry(0)), Held::Yes { evicted: None });
        assert_eq!(cache.hold(scope(), 256, 4, entry(0)), Held::Refused(None));
        assert_eq!(cache.hold(scope(), 257, 4, entry(0)), Held::Yes { evicted: None });
        assert_eq!(
            cache.hold(scope(), 258, 4, entry(0)),
            Held::Yes { evicted: Some((scope(), 256)) }
        );
        assert!(cache.take(scope(), 256).is_none());
    }

    #[test]
    fn a_restart_drops_only_what_came_before_it() {
        let mut cache = PendingCache::new(settings());
        let other = ScopeKey { domain: 1, ..scope() };
        let _ = cache.hold(scope(), 256, 4, entry(1));
        let _ = cache.hold(scope(), 256, 4, entry(7));
        let _ = cache.hold(scope(), 257, 4, entry(2));
        assert_eq!(cache.drop_scope_before(scope(), 7), vec![256, 257]);
        assert_eq!(cache.take(scope(), 256).map(|q| q.len()), Some(1));
        assert!(cache.take(scope(), 257).is_none());
        let _ = cache.hold(other, 256, 4, entry(1));
        assert!(cache.drop_scope_before(scope(), 9).is_empty());
        assert!(cache.take(other, 256).is_some());
    }

    #[test]
    fn expire_drops_entries_past_the_ttl() {
        let mut cache = PendingCache::new(settings());
        let _ = cache.hold(scope(), 256, 4, entry(0));
        let _ = cache.hold(scope(), 256, 4, entry(2_000_000_000));
        assert_eq!(cache.expire(2_500_000_000), vec![(scope(), 256)]);
        assert_eq!(cache.take(scope(), 256).map(|q| q.len()), Some(1));
    }

    #[test]
    fn memory_bounds_refuse_and_every_exit_gives_the_bytes_back() {
        let memory = Arc::new(PendingMemory::new(3 * COST));
        let exporter_share = PendingFlowSettings {
            max_entries_per_template: 10,
            max_bytes: 2 * COST,
            memory: Arc::clone(&memory),
            ..settings()
        };
        let mut first = PendingCache::new(exporter_share.clone());
        let mut second = PendingCache::new(exporter_share);
        assert_eq!(first.hold(scope(), 256, 4, entry(0)), Held::Yes { evicted: None });
        assert_eq!(first.hold(scope(), 256, 4, entry(0)), Held::Yes { evicted: None });
        assert_eq!(
            first.hold(scope(), 256, 4, entry(0)),
            Held::Refused(Some(PendingMemoryCap::Exporter)),
            "the exporter's share is used up"
        );
        assert_eq!(second.hold(scope(), 256, 4, entry(0)), Held::Yes { evicted: None });
        assert_eq!(
            second.hold(scope(), 257, 4, entry(0)),
            Held::Refused(Some(PendingMemoryCap::Total)),
            "the shared budget is used up"
        );
        assert_eq!(memory.used(), 3 * COST);

        assert_eq!(first.take(scope(), 256).map(|q| q.len()), Some(2));
        assert_eq!(memory.used(), COST, "taken entries give their bytes back");
        let _ = second.hold(scope(), 257, 4, entry(0));
        assert_eq!(second.expire(5_000_000_000).len(), 2);
        assert_eq!((second.bytes_where(|_| true), memory.used()), (0, 0), "expired too");
        let _ = second.hold(scope(), 258, 4, entry(0));
        drop(second);
        assert_eq!(memory.used(), 0, "and a session that ends gives back what it held");
    }
}
