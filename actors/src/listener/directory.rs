//! A listener's exporter directory: source IP → exporter actor, with the reverse map used
//! to recognise a child in supervision events, and the last time each one was sent data.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ractor::{ActorId, ActorRef};

use crate::exporter::ExporterMsg;
use crate::quota::ExporterSlot;
use crate::ratelimit::TokenBucket;

/// One live exporter.
pub(crate) struct ExporterEntry {
    pub(crate) actor: ActorRef<ExporterMsg>,
    pub(crate) last_seen: Instant,
    /// Its datagram rate limit, when the listener has one.
    pub(crate) bucket: Option<TokenBucket>,
    /// Its place among its partition's exporters, when the partition has limits; freed
    /// with the entry.
    pub(crate) slot: Option<ExporterSlot>,
}

/// Which limit held datagrams back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// The exporter's own `max_exporter_pps`.
    Exporter,
    /// Its partition's `max_pps`, shared with the partition's other exporters.
    Partition,
}

#[derive(Default)]
pub(crate) struct Directory {
    by_addr: HashMap<IpAddr, ExporterEntry>,
    by_id: HashMap<ActorId, IpAddr>,
}

impl Directory {
    pub(crate) fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// The exporter of `addr`, marked as seen at `now`.
    pub(crate) fn touch(&mut self, addr: IpAddr, now: Instant) -> Option<&ActorRef<ExporterMsg>> {
        let entry = self.by_addr.get_mut(&addr)?;
        entry.last_seen = now;
        Some(&entry.actor)
    }

    pub(crate) fn get(&self, addr: IpAddr) -> Option<&ActorRef<ExporterMsg>> {
        self.by_addr.get(&addr).map(|entry| &entry.actor)
    }

    pub(crate) fn insert(&mut self, addr: IpAddr, entry: ExporterEntry) {
        self.by_id.insert(entry.actor.get_id(), addr);
        if let Some(old) = self.by_addr.insert(addr, entry) {
            self.by_id.remove(&old.actor.get_id());
        }
    }

    /// How many of `wanted` datagrams `addr`'s rate limits let through now (all of them
    /// without limits), and which limit held the rest back.
    pub(crate) fn admit(
        &mut self,
        addr: IpAddr,
        wanted: usize,
        now: Instant,
    ) -> (usize, Option<Limit>) {
        let Some(entry) = self.by_addr.get_mut(&addr) else { return (wanted, None) };
        let own = entry.bucket.as_mut().map_or(wanted, |bucket| bucket.take(wanted, now));
        if own < wanted {
            return (own, Some(Limit::Exporter));
        }
        let shared = entry.slot.as_ref().map_or(wanted, |slot| slot.take(wanted, now));
        (shared, (shared < wanted).then_some(Limit::Partition))
    }

    /// Forgets the exporter whose actor is `id`, returning its address and entry; `None`
    /// when that actor is no longer in the directory (evicted, or already replaced).
    pub(crate) fn remove_id(&mut self, id: ActorId) -> Option<(IpAddr, ExporterEntry)> {
        let addr = self.by_id.remove(&id)?;
        let entry = self.by_addr.remove(&addr)?;
        Some((addr, entry))
    }

    /// Removes and returns the exporters not seen for `idle_timeout`.
    pub(crate) fn take_idle(
        &mut self,
        now: Instant,
        idle_timeout: Duration,
    ) -> Vec<(IpAddr, ExporterEntry)> {
        let idle: Vec<IpAddr> = self
            .by_addr
            .iter()
            .filter(|(_, entry)| now.saturating_duration_since(entry.last_seen) >= idle_timeout)
            .map(|(addr, _)| *addr)
            .collect();
        idle.into_iter().filter_map(|addr| self.take(addr)).collect()
    }

    /// Removes and returns every exporter.
    pub(crate) fn take_all(&mut self) -> Vec<(IpAddr, ExporterEntry)> {
        self.by_id.clear();
        self.by_addr.drain().collect()
    }

    /// Every live exporter actor.
    pub(crate) fn actors(&self) -> impl Iterator<Item = &ActorRef<ExporterMsg>> {
        self.by_addr.values().map(|entry| &entry.actor)
    }

    fn take(&mut self, addr: IpAddr) -> Option<(IpAddr, ExporterEntry)> {
        let entry = self.by_addr.remove(&addr)?;
        self.by_id.remove(&entry.actor.get_id());
        Some((addr, entry))
    }
}
