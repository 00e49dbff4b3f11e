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
//! than `ttl` are dropped.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use super::{PendingFlowSettings, ScopeKey};

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

#[derive(Debug)]
struct Queue {
    entries: VecDeque<PendingEntry>,
    /// Creation order, to find the oldest queue.
    created: u64,
}

/// Where a held set went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// Held; holding it pushed out the oldest queue (its key), if any.
    Yes { evicted: Option<(ScopeKey, u16)> },
    /// Refused: too large or its template's queue is full.
    Refused,
}

#[derive(Debug)]
pub(crate) struct PendingCache {
    settings: PendingFlowSettings,
    queues: HashMap<(ScopeKey, u16), Queue>,
    next_order: u64,
}

impl PendingCache {
    pub fn new(settings: PendingFlowSettings) -> Self {
        Self { settings, queues: HashMap::new(), next_order: 0 }
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
            return Held::Refused;
        }
        let key = (scope, template_id);
        if let Some(queue) = self.queues.get_mut(&key) {
            if queue.entries.len() >= self.settings.max_entries_per_template {
                return Held::Refused;
            }
            queue.entries.push_back(entry);
            return Held::Yes { evicted: None };
        }
        let evicted = if self.queues.len() >= self.settings.max_pending_flows {
            self.oldest_key().inspect(|oldest| {
                self.queues.remove(oldest);
            })
        } else {
            None
        };
        self.next_order += 1;
        let queue = Queue { entries: VecDeque::from([entry]), created: self.next_order };
        self.queues.insert(key, queue);
        Held::Yes { evicted }
    }

    fn oldest_key(&self) -> Option<(ScopeKey, u16)> {
        self.queues.iter().min_by_key(|(_, q)| q.created).map(|(key, _)| *key)
    }

    /// Takes the entries held for `template_id`, oldest first.
    pub fn take(&mut self, scope: ScopeKey, template_id: u16) -> Option<VecDeque<PendingEntry>> {
        self.queues.remove(&(scope, template_id)).map(|q| q.entries)
    }

    /// Drops entries past their time to live; returns the keys that lost entries.
    pub fn expire(&mut self, now_ns: u64) -> Vec<(ScopeKey, u16)> {
        let ttl_ns = self.ttl_ns();
        let mut touched = Vec::new();
        self.queues.retain(|key, queue| {
            let before = queue.entries.len();
            queue.entries.retain(|e| now_ns.saturating_sub(e.received_ns) <= ttl_ns);
            if queue.entries.len() != before {
                touched.push(*key);
            }
            !queue.entries.is_empty()
        });
        touched.sort_unstable_by_key(|(scope, id)| (scope.port, scope.domain, *id));
        touched
    }

    /// Drops every queue of `scope`; returns their template ids.
    pub fn drop_scope(&mut self, scope: ScopeKey) -> Vec<u16> {
        let mut ids: Vec<u16> =
            self.queues.keys().filter(|(s, _)| *s == scope).map(|(_, id)| *id).collect();
        ids.sort_unstable();
        for id in &ids {
            self.queues.remove(&(scope, *id));
        }
        ids
    }

    /// Drops the entries of `scope` that arrived before datagram `tick` (the exporter
    /// restarted: they may have been sent with templates it no longer uses); returns
    /// the template ids that lost entries.
    pub fn drop_scope_before(&mut self, scope: ScopeKey, tick: u64) -> Vec<u16> {
        let mut ids = Vec::new();
        self.queues.retain(|(s, id), queue| {
            if *s != scope {
                return true;
            }
            let before = queue.entries.len();
            queue.entries.retain(|e| e.tick >= tick);
            if queue.entries.len() != before {
                ids.push(*id);
            }
            !queue.entries.is_empty()
        });
        ids.sort_unstable();
        ids
    }

    /// Queues held for scopes that `matches`.
    pub fn queues_where(&self, matches: impl Fn(&ScopeKey) -> bool) -> usize {
        self.queues.keys().filter(|(scope, _)| matches(scope)).count()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::Protocol;

    fn settings() -> PendingFlowSettings {
        PendingFlowSettings {
            max_pending_flows: 2,
            max_entries_per_template: 2,
            max_entry_size_bytes: 10,
            ttl: Duration::from_secs(1),
        }
    }

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
        assert_eq!(cache.hold(scope(), 256, 11, entry(0)), Held::Refused);
        assert_eq!(cache.hold(scope(), 256, 4, entry(0)), Held::Yes { evicted: None });
        assert_eq!(cache.hold(scope(), 256, 4, entry(0)), Held::Yes { evicted: None });
        assert_eq!(cache.hold(scope(), 256, 4, entry(0)), Held::Refused);
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
}
