//! Turns what a decoder session reports into the operator guide's log lines and counter
//! increments. Each lifecycle event is logged once, here, by the exporter that owns the
//! state, as a `tracing` event carrying exporter, domain, template, protocol and partition.
//!
//! Each log event is emitted inside a short lifecycle span (target [`LIFECYCLE_TARGET`])
//! that carries the same attributes, for OTLP export: the telemetry layer keeps these
//! spans out of the log lines, so their text is unchanged. OTLP has no unsigned integers,
//! so numbers are recorded as `i64`. Missing-template spans are rate-limited with their
//! log line.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_decode::report::CacheStats;
use flow_decode::{DecodeError, LifecycleEvent, Protocol};
use tracing::Span;

use crate::counters::ListenerCounters;
use crate::ratelimit::KeyedLogLimiter;

/// At most one "Missing template" warning per template this often.
const MISSING_TEMPLATE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// At most one warning per decode error reason this often.
const DECODE_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Templates (or reasons) remembered by the limiters of one exporter.
const MAX_LIMITED_KEYS: usize = 1024;
/// Target of the lifecycle spans; flow-telemetry hides spans of this target from logs.
pub(crate) const LIFECYCLE_TARGET: &str = "flow_actors::lifecycle";

/// How logs name an exporter: "192.168.1.1:2055", or the bare address while its source
/// port is not known yet (a restarted exporter before its next datagram; port 0 is never
/// a UDP source port); an IPFIX-over-TLS exporter by the name in its certificate.
pub(crate) struct ExporterName(pub(crate) SocketAddr, pub(crate) Option<Arc<str>>);

impl fmt::Display for ExporterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.1 {
            Some(label) => f.write_str(label),
            None if self.0.port() == 0 => self.0.ip().fmt(f),
            None => self.0.fmt(f),
        }
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

/// The OTLP span name of a lifecycle event.
pub(crate) fn span_name(event: &LifecycleEvent) -> &'static str {
    match event {
        LifecycleEvent::TemplateLearned { .. } => "template.learned",
        LifecycleEvent::TemplateCollision { .. } => "template.collision",
        LifecycleEvent::TemplateEvicted { .. } => "template.evicted",
        LifecycleEvent::TemplateExpired { .. } => "template.expired",
        LifecycleEvent::TemplateWithdrawn { .. } => "template.withdrawn",
        LifecycleEvent::MissingTemplate { .. } => "template.missing",
        LifecycleEvent::PendingReplayed { .. } => "pending.replayed",
        LifecycleEvent::PendingDropped { .. } => "pending.dropped",
        LifecycleEvent::ExporterRestarted { .. } => "exporter.restarted",
    }
}

/// The protocol, observation domain and template id (absent for a restart) of an event.
fn scope(event: &LifecycleEvent) -> (Protocol, u32, Option<u16>) {
    match *event {
        LifecycleEvent::TemplateLearned { protocol, domain, template_id, .. }
        | LifecycleEvent::TemplateCollision { protocol, domain, template_id, .. }
        | LifecycleEvent::TemplateEvicted { protocol, domain, template_id }
        | LifecycleEvent::TemplateExpired { protocol, domain, template_id }
        | LifecycleEvent::TemplateWithdrawn { protocol, domain, template_id }
        | LifecycleEvent::MissingTemplate { protocol, domain, template_id }
        | LifecycleEvent::PendingReplayed { protocol, domain, template_id, .. }
        | LifecycleEvent::PendingDropped { protocol, domain, template_id, .. } => {
            (protocol, domain, Some(template_id))
        }
        LifecycleEvent::ExporterRestarted { protocol, domain } => (protocol, domain, None),
    }
}

/// The lifecycle span of `event`, to be entered around its log line.
fn lifecycle_span(event: &LifecycleEvent, exporter: &ExporterName, partition: &str) -> Span {
    let (protocol, domain, template_id) = scope(event);
    tracing::info_span!(
        target: LIFECYCLE_TARGET,
        "lifecycle",
        otel.name = span_name(event),
        exporter = %exporter,
        domain = i64::from(domain),
        template_id = template_id.map(i64::from),
        protocol = protocol.as_str(),
        partition,
    )
}

/// One exporter's reporter: its log rate limits and where its counters go.
pub(crate) struct Reporter {
    partition: String,
    /// The exporter's certificate name, when it has one.
    label: Option<Arc<str>>,
    missing_template: KeyedLogLimiter<(Protocol, u32, u16)>,
    decode_errors: KeyedLogLimiter<&'static str>,
}

impl Reporter {
    pub(crate) fn new(partition: String, label: Option<Arc<str>>) -> Self {
        Self {
            partition,
            label,
            missing_template: KeyedLogLimiter::new(MISSING_TEMPLATE_LOG_INTERVAL, MAX_LIMITED_KEYS),
            decode_errors: KeyedLogLimiter::new(DECODE_ERROR_LOG_INTERVAL, MAX_LIMITED_KEYS),
        }
    }

    /// How logs name the exporter whose latest datagram came from `source`.
    pub(crate) fn name(&self, source: SocketAddr) -> ExporterName {
        ExporterName(source, self.label.clone())
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
        // Missing templates are logged (and traced) at most once per interval.
        let mut held_back = 0;
        if let LifecycleEvent::MissingTemplate { protocol, domain, template_id } = *event {
            match self.missing_template.allow((protocol, domain, template_id), now) {
                Some(held) => held_back = held,
                None => return,
            }
        }
        let name = self.name(source);
        let span = lifecycle_span(event, &name, &self.partition);
        let _entered = span.enter();
        self.log(event, &name, held_back);
    }

    /// The operator guide's log line of one lifecycle event; `held_back`: missing-template
    /// lines suppressed since the last one.
    fn log(&self, event: &LifecycleEvent, name: &ExporterName, held_back: u64) {
        let partition = self.partition.as_str();
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
                tracing::warn!(exporter = %name, domain, template_id, protocol = %protocol, partition = %partition, held_back,
                    "Missing template - ID: {template_id}, Protocol: {protocol}. Flow data received before template definition.");
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
        let name = self.name(source);
        if let Some(held_back) = self.decode_errors.allow(reason, now) {
            tracing::warn!(exporter = %name, partition = %self.partition, reason, held_back, "Decode error: {error}");
        }
    }

    /// The guide's periodic cache statistics line, one per protocol the exporter speaks.
    /// "Data" is the pending-flows cache: its hits are data sets replayed once their
    /// template came, its misses data sets given up.
    pub(crate) fn stats(&self, caches: &[CacheStats], source: SocketAddr) {
        let name = self.name(source);
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
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    use super::*;

    /// A span's fields, as (name, text) pairs.
    type SpanFields = Vec<(String, String)>;

    /// The fields of each lifecycle span created.
    #[derive(Clone, Default)]
    struct SpanLog(Arc<Mutex<Vec<SpanFields>>>);

    struct Fields(SpanFields);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0.push((field.name().to_owned(), format!("{value:?}")));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push((field.name().to_owned(), value.to_owned()));
        }
        fn record_i64(&mut self, field: &Field, value: i64) {
            self.0.push((field.name().to_owned(), format!("i64:{value}")));
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for SpanLog {
        fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
            if attrs.metadata().target() == LIFECYCLE_TARGET {
                let mut fields = Fields(Vec::new());
                attrs.record(&mut fields);
                self.0.lock().unwrap().push(fields.0);
            }
        }
    }

    impl SpanLog {
        fn spans(&self) -> Vec<SpanFields> {
            self.0.lock().unwrap().clone()
        }
    }

    fn field<'a>(span: &'a [(String, String)], name: &str) -> Option<&'a str> {
        span.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn each_event_opens_a_lifecycle_span_with_its_attributes_and_missing_templates_are_limited() {
        let log = SpanLog::default();
        let subscriber = tracing_subscriber::registry().with(log.clone());
        let counters = ListenerCounters::default();
        let source: SocketAddr = "192.0.2.1:2055".parse().unwrap();
        let mut reporter = Reporter::new("edge".to_owned(), None);
        let start = Instant::now();
        let learned = LifecycleEvent::TemplateLearned {
            protocol: Protocol::V9,
            domain: 7,
            template_id: 256,
            field_count: 9,
        };
        let missing =
            LifecycleEvent::MissingTemplate { protocol: Protocol::V9, domain: 7, template_id: 300 };
        let restarted = LifecycleEvent::ExporterRestarted { protocol: Protocol::V9, domain: 7 };
        tracing::subscriber::with_default(subscriber, || {
            reporter.event(&learned, source, &counters, start);
            for _ in 0..3 {
                reporter.event(&missing, source, &counters, start);
            }
            reporter.event(&restarted, source, &counters, start);
            reporter.event(&missing, source, &counters, start + MISSING_TEMPLATE_LOG_INTERVAL);
        });
        let spans = log.spans();
        let names: Vec<&str> = spans.iter().filter_map(|s| field(s, "otel.name")).collect();
        assert_eq!(
            names,
            ["template.learned", "template.missing", "exporter.restarted", "template.missing"]
        );
        assert_eq!(field(&spans[0], "exporter"), Some("192.0.2.1:2055"));
        assert_eq!(field(&spans[0], "domain"), Some("i64:7"));
        assert_eq!(field(&spans[0], "template_id"), Some("i64:256"));
        assert_eq!(field(&spans[0], "protocol"), Some("V9"));
        assert_eq!(field(&spans[0], "partition"), Some("edge"));
        assert_eq!(field(&spans[2], "template_id"), None);
        assert_eq!(counters.lifecycle_events.get("missing_template"), 4);
    }

    #[test]
    fn the_lifecycle_target_is_the_one_flow_telemetry_keeps_out_of_log_lines() {
        // flow_telemetry::LIFECYCLE_TARGET: the two must stay equal.
        assert_eq!(LIFECYCLE_TARGET, "flow_actors::lifecycle");
    }

    #[test]
    fn an_exporter_is_named_by_address_and_port_when_known() {
        let known: SocketAddr = "192.168.1.1:2055".parse().unwrap();
        assert_eq!(ExporterName(known, None).to_string(), "192.168.1.1:2055");
        let unknown: SocketAddr = "192.168.1.1:0".parse().unwrap();
        assert_eq!(ExporterName(unknown, None).to_string(), "192.168.1.1");
        let named = ExporterName(known, Some("router1.example.net".into()));
        assert_eq!(named.to_string(), "router1.example.net");
    }
}
