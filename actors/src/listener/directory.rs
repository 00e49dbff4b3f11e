//! A listener's exporter directory: source IP → exporter actor, with the reverse map used
//! to recognise a child in supervision events, and the last time each one was sent data.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ractor::{ActorId, ActorRef};

use crate::exporter::ExporterMsg;
use crate::ratelimit::TokenBucket;

/// One live exporter.
pub(crate) struct ExporterEntry {
    pub(crate) actor: ActorRef<ExporterMsg>,
    pub(crate) last_seen: Instant,
    /// Its datagram rate limit, when the listener has one.
    pub(crate) bucket: Option<TokenBucket>,
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

    pub(crate) fn insert(
        &mut self,
        addr: IpAddr,
        actor: ActorRef<ExporterMsg>,
        bucket: Option<TokenBucket>,
        now: Instant,
    ) {
        self.by_id.insert(actor.get_id(), addr);
        let entry = ExporterEntry { actor, last_seen: now, bucket };
        if let Some(old) = self.by_addr.insert(addr, entry) {
            self.by_id.remove(&old.actor.get_id());
        }
    }

    /// How many of `wanted` datagrams `addr`'s rate limit lets through now (all of them
    /// without a limit).
    pub(crate) fn admit(&mut self, addr: IpAddr, wanted: usize, now: Instant) -> usize {
        match self.by_addr.get_mut(&addr).and_then(|entry| entry.bucket.as_mut()) {
            Some(bucket) => bucket.take(wanted, now),
            None => wanted,
        }
    }

    /// Forgets the exporter whose actor is `id`, returning its address; `None` when that
    /// actor is no longer in the directory (evicted, or already replaced).
    pub(crate) fn remove_id(&mut self, id: ActorId) -> Option<IpAddr> {
        let addr = self.by_id.remove(&id)?;
        self.by_addr.remove(&addr);
        Some(addr)
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
