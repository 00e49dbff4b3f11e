//! Turns what a decoder session reports into the operator guide's log lines and counter
//! increments. Each lifecycle event is logged once, here, by the exporter that owns the
//! state, as a `tracing` event carrying exporter, domain, template, protocol and partition.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flow_decode::report::CacheStats;
use flow_decode::{DecodeError, LifecycleEvent, Protocol};

use crate::counters::ListenerCounters;
use crate::ratelimit::KeyedLogLimiter;

/// At most one "Missing template" warning per template this often.
const MISSING_TEMPLATE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// At most one warning per decode error reason this often.
const DECODE_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Templates (or reasons) remembered by the limiters of one exporter.
const MAX_LIMITED_KEYS: usize = 1024;

/// How logs name an exporter: "192.168.1.1:2055", or the bare address while its source
/// port is not known yet (a restarted exporter before its next datagram; port 0 is never
/// a UDP source port).
pub(crate) struct ExporterName(pub(crate) SocketAddr);

impl fmt::Display for ExporterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.port() == 0 { self.0.ip().fmt(f) } else { self.0.fmt(f) }
    }
}

/// The stable counter label of a lifecycle event.
pub(crate) fn event_kind(event: &LifecycleEvent) -> &'static str {
    match event {
        LifecycleEvent::TemplateLearned { .. } => "template_learned",
        LifecycleEvent::TemplateCollision { .. } => "template_collision",
        LifecycleEvent::TemplateEvicted { .. } => "template_evicted",
        LifecycleEvent::TemplateExpired { .. } => "template_expired",
        LifecycleEvent::TemplateWithdrawn { .. } => "template_withdrawn",
        LifecycleEvent::MissingTemplate { .. } => "missing_template",
        LifecycleEvent::PendingReplayed { .. } => "pending_replayed",
        LifecycleEvent::PendingDropped { .. } => "pending_dropped",
        LifecycleEvent::ExporterRestarted { .. } => "exporter_restarted",
    }
}

/// One exporter's reporter: its log rate limits and where its counters go.
pub(crate) struct Reporter {
    partition: String,
    missing_template: KeyedLogLimiter<(Protocol, u32, u16)>,
    decode_errors: KeyedLogLimiter<&'static str>,
}

impl Reporter {
    pub(crate) fn new(partition: String) -> Self {
        Self {
            partition,
            missing_template: KeyedLogLimiter::new(MISSING_TEMPLATE_LOG_INTERVAL, MAX_LIMITED_KEYS),
            decode_errors: KeyedLogLimiter::new(DECODE_ERROR_LOG_INTERVAL, MAX_LIMITED_KEYS),
        }
    }

    /// Counts and logs one lifecycle event of the exporter at `source`.
    pub(crate) fn event(
        &mut self,
        event: &LifecycleEvent,
        source: SocketAddr,
        counters: &ListenerCounters,
        now: Instant,
    ) {
        counters.lifecycle_events.add(event_kind(event), 1);
        let partition = self.partition.as_str();
        let name = ExporterName(source);
        match *event {
            LifecycleEvent::TemplateLearned { protocol, domain, template_id, field_count } => {
                tracing::info!(exporter = %name, domain, template_id, protocol = %protocol, partition = %partition, field_count,
                    "Template learned - ID: {template_id}, Protocol: {protocol}");
            }
            LifecycleEvent::TemplateCollision {
                protocol,
                domain,
                template_id,
                old_field_count,
                new_field_count,
            } => {
                tracing::warn!(exporter = %name, domain, template_id, protocol = %protocol, partition = %partition, old_field_count, new_field_count,
                    "Template collision - ID: {template_id}, Protocol: {protocol}");
            }
            LifecycleEvent::TemplateEvicted { protocol, domain, template_id } => {
                tracing::debug!(exporter = %name, domain, template_id, protocol = %protocol, partition = %partition,
                    "Template evicted - ID: {template_id}, Protocol: {protocol}");
            }
            LifecycleEvent::TemplateExpired { protocol, domain, template_id } => {
                tracing::debug!(exporter = %name, domain, template_id, protocol = %protocol, partition = %partition,
                    "Template expired - ID: {template_id}, Protocol: {protocol}");
            }
            LifecycleEvent::TemplateWithdrawn { protocol, domain, template_id } => {
                tracing::debug!(exporter = %name, domain, template_id, protocol = %protocol, partition = %partition,
                    "Template withdrawn - ID: {template_id}, Protocol: {protocol}");
            }
            LifecycleEvent::MissingTemplate { protocol, domain, template_id } => {
                if let Some(held_back) =
                    self.missing_template.allow((protocol, domain, template_id), now)
                {
                    tracing::warn!(exporter = %name, domain, template_id, protocol = %protocol, partition = %partition, held_back,
                        "Missing template - ID: {template_id}, Protocol: {protocol}. Flow data received before template definition.");
                }
            }
            LifecycleEvent::PendingReplayed { protocol, domain, template_id, records } => {
                tracing::debug!(exporter = %name, domain, template_id, protocol = %protocol, partition = %partition, records,
                    "Pending flows replayed - ID: {template_id}, Protocol: {protocol}");
            }
            LifecycleEvent::PendingDropped { protocol, domain, template_id, reason } => {
                tracing::debug!(exporter = %name, domain, template_id, protocol = %protocol, partition = %partition, reason,
                    "Pending flows dropped - ID: {template_id}, Protocol: {protocol}");
            }
            LifecycleEvent::ExporterRestarted { protocol, domain } => {
                tracing::info!(exporter = %name, domain, protocol = %protocol, partition = %partition,
                    "Exporter restarted - Protocol: {protocol}. Its templates and sequence state were reset.");
            }
        }
    }

    /// Counts and (rate-limited) logs one decode error of the exporter at `source`.
    pub(crate) fn error(
        &mut self,
        error: &DecodeError,
        source: SocketAddr,
        counters: &ListenerCounters,
        now: Instant,
    ) {
        let reason = error.reason();
        counters.decode_errors.add(reason, 1);
        let name = ExporterName(source);
        if let Some(held_back) = self.decode_errors.allow(reason, now) {
            tracing::warn!(exporter = %name, partition = %self.partition, reason, held_back, "Decode error: {error}");
        }
    }

    /// The guide's periodic cache statistics line, one per protocol the exporter speaks.
    /// "Data" is the pending-flows cache: its hits are data sets replayed once their
    /// template came, its misses data sets given up.
    pub(crate) fn stats(&self, caches: &[CacheStats], source: SocketAddr) {
        let name = ExporterName(source);
        for cache in caches {
            let protocol = cache.protocol.map_or("UNKNOWN", Protocol::as_str);
            tracing::info!(
                exporter = %name,
                partition = %self.partition,
                protocol,
                templates = cache.templates,
                max_templates = cache.max_templates,
                pending_flows = cache.pending_flows,
                max_pending_flows = cache.max_pending_flows,
                template_hits = cache.template_hits,
                template_misses = cache.template_misses,
                evictions = cache.evictions,
                collisions = cache.collisions,
                pending_replayed = cache.pending_replayed,
                pending_dropped = cache.pending_dropped,
                "{protocol} Template Cache [{name}] - Templates: {}/{}, Data: {}/{}, Template Hits/Misses: {}/{}, Data Hits/Misses: {}/{}, Evictions: {}, Collisions: {}",
                cache.templates,
                cache.max_templates,
                cache.pending_flows,
                cache.max_pending_flows,
                cache.template_hits,
                cache.template_misses,
                cache.pending_replayed,
                cache.pending_dropped,
                cache.evictions,
                cache.collisions,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exporter_is_named_by_address_and_port_when_known() {
        let known: SocketAddr = "192.168.1.1:2055".parse().unwrap();
        assert_eq!(ExporterName(known).to_string(), "192.168.1.1:2055");
        let unknown: SocketAddr = "192.168.1.1:0".parse().unwrap();
        assert_eq!(ExporterName(unknown).to_string(), "192.168.1.1");
    }
}
