//! Per-partition limits, shared by every listener: how many exporters of a partition may
//! be live at once, and how many datagrams per second they may send together. One tenant
//! flooding the collector then starves neither the others' exporter slots nor their CPU.
//!
//! A listener asks [`PartitionQuotas::admit`] before it starts an exporter; the
//! [`ExporterSlot`] it gets back is held in its directory entry and frees the place when
//! the entry goes (eviction, failure, shutdown), whichever way that happens.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::ratelimit::TokenBucket;
use crate::settings::PartitionLimits;

/// The quotas of every partition that has limits; partitions without are never slowed.
#[derive(Debug, Default)]
pub(crate) struct PartitionQuotas {
    quotas: HashMap<String, Arc<Quota>>,
}

/// One partition's limits and what is used of them.
#[derive(Debug)]
pub(crate) struct Quota {
    partition: Arc<str>,
    max_exporters: Option<usize>,
    live: AtomicUsize,
    bucket: Option<Mutex<TokenBucket>>,
    /// Datagrams refused because the partition had `max_exporters` live.
    refused: AtomicU64,
    /// Datagrams dropped over the partition's `max_pps`.
    rate_limited: AtomicU64,
}

/// One partition's quota figures, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaSnapshot {
    pub partition: String,
    /// Exporters of the partition live now, over every listener.
    pub exporters_live: u64,
    pub max_exporters: Option<u64>,
    pub dropped_exporter_cap: u64,
    pub dropped_rate_limited: u64,
}

/// A place among a partition's live exporters; given back when dropped.
#[derive(Debug)]
pub(crate) struct ExporterSlot {
    quota: Arc<Quota>,
}

impl Drop for ExporterSlot {
    fn drop(&mut self) {
        self.quota.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why an exporter was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartitionFull {
    pub(crate) max_exporters: usize,
}

impl PartitionQuotas {
    pub(crate) fn new(limits: &BTreeMap<String, PartitionLimits>, now: Instant) -> Self {
        let quotas = limits
            .iter()
            .map(|(partition, limits)| {
                let quota = Quota {
                    partition: partition.as_str().into(),
                    max_exporters: limits.max_exporters,
                    live: AtomicUsize::new(0),
                    bucket: limits.max_pps.map(|rate| Mutex::new(TokenBucket::new(rate, now))),
                    refused: AtomicU64::new(0),
                    rate_limited: AtomicU64::new(0),
                };
                (partition.clone(), Arc::new(quota))
            })
            .collect();
        Self { quotas }
    }

    /// A place for a new exporter of `partition`: `Ok(None)` when the partition has no
    /// limits, `Err` (counted) when it has `max_exporters` live already.
    pub(crate) fn admit(
        &self,
        partition: &str,
        datagrams: usize,
    ) -> Result<Option<ExporterSlot>, PartitionFull> {
        let Some(quota) = self.quotas.get(partition) else { return Ok(None) };
        let Some(max) = quota.max_exporters else {
            quota.live.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(ExporterSlot { quota: Arc::clone(quota) }));
        };
        let taken = quota.live.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |live| {
            (live < max).then_some(live + 1)
        });
        match taken {
            Ok(_) => Ok(Some(ExporterSlot { quota: Arc::clone(quota) })),
            Err(_) => {
                quota.refused.fetch_add(to_u64(datagrams), Ordering::Relaxed);
                Err(PartitionFull { max_exporters: max })
            }
        }
    }

    /// Every partition's figures, in name order.
    pub(crate) fn snapshot(&self) -> Vec<QuotaSnapshot> {
        let mut figures: Vec<QuotaSnapshot> = self.quotas.values().map(|q| q.snapshot()).collect();
        figures.sort_by(|a, b| a.partition.cmp(&b.partition));
        figures
    }
}

impl ExporterSlot {
    /// How many of `wanted` datagrams the partition's rate lets through now (all of them
    /// without a rate); the rest are counted as rate limited.
    pub(crate) fn take(&self, wanted: usize, now: Instant) -> usize {
        let Some(bucket) = &self.quota.bucket else { return wanted };
        let allowed = bucket.lock().unwrap_or_else(PoisonError::into_inner).take(wanted, now);
        self.quota.rate_limited.fetch_add(to_u64(wanted - allowed), Ordering::Relaxed);
        allowed
    }
}

impl Quota {
    fn snapshot(&self) -> QuotaSnapshot {
        QuotaSnapshot {
            partition: self.partition.to_string(),
            exporters_live: to_u64(self.live.load(Ordering::Relaxed)),
            max_exporters: self.max_exporters.map(to_u64),
            dropped_exporter_cap: self.refused.load(Ordering::Relaxed),
            dropped_rate_limited: self.rate_limited.load(Ordering::Relaxed),
        }
    }
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn quotas(max_exporters: Option<usize>, max_pps: Option<u32>) -> PartitionQuotas {
        let limits = PartitionLimits { max_exporters, max_pps: max_pps.and_then(NonZeroU32::new) };
        PartitionQuotas::new(&[("acme".to_owned(), limits)].into(), Instant::now())
    }

    #[test]
    fn a_partition_admits_up_to_its_cap_and_slots_come_back_when_dropped() {
        let quotas = quotas(Some(2), None);
        let first = quotas.admit("acme", 1).expect("room").expect("a slot");
        let second = quotas.admit("acme", 1).expect("room").expect("a slot");
        assert_eq!(quotas.admit("acme", 3).err(), Some(PartitionFull { max_exporters: 2 }));
        assert!(quotas.admit("globex", 1).expect("no limits").is_none());
        drop(first);
        let third = quotas.admit("acme", 1).expect("a slot came free");
        let figures = &quotas.snapshot()[0];
        assert_eq!((figures.exporters_live, figures.dropped_exporter_cap), (2, 3));
        drop((second, third));
        assert_eq!(quotas.snapshot()[0].exporters_live, 0);
    }

    #[test]
    fn exporters_of_a_partition_share_its_rate() {
        let quotas = quotas(None, Some(100));
        let a = quotas.admit("acme", 1).expect("room").expect("a slot");
        let b = quotas.admit("acme", 1).expect("room").expect("a slot");
        let now = Instant::now();
        assert_eq!(a.take(70, now), 70);
        assert_eq!(b.take(70, now), 30, "one second's burst, shared");
        assert_eq!(quotas.snapshot()[0].dropped_rate_limited, 40);
    }
}
