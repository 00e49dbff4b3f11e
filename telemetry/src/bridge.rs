//! Lifecycle log lines outside any span, exported as short OTLP spans.
//!
//! tracing-opentelemetry attaches an event to its enclosing span and drops events that
//! have none. Lifecycle lines such as "actor restarted" or "NATS connected" are logged
//! outside any span, so this layer turns each of them into a span of its own, named
//! after the event and carrying its fields as attributes. An event is a lifecycle event
//! when it has a `lifecycle` field (its value is the span name), or when its message is
//! one of [`KNOWN_EVENTS`]; every other event is left alone.

use std::borrow::Cow;
use std::fmt;

use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _};
use opentelemetry::{Context as OtelContext, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Lifecycle lines logged outside spans today, and the span each becomes.
pub const KNOWN_EVENTS: &[(&str, &str)] = &[
    ("Configuration loaded", "config.loaded"),
    ("Listener started", "listener.started"),
    ("exporter evicted", "exporter.evicted"),
    ("Exporter limit reached, dropping datagrams from a new source", "exporter.refused"),
    ("actor restarted", "actor.restarted"),
    ("NATS connected", "publisher.connected"),
    ("NATS connection lost; reconnecting", "publisher.disconnected"),
    ("NATS connection closed", "publisher.closed"),
    ("JetStream stream ready", "publisher.stream_reconciled"),
    ("Collector stopped", "collector.stopped"),
];

/// The field that names an event's span explicitly.
const LIFECYCLE_FIELD: &str = "lifecycle";

/// The layer: one finished span per lifecycle event that has no enclosing span.
pub(crate) struct EventSpans {
    tracer: SdkTracer,
}

impl EventSpans {
    pub(crate) fn new(tracer: SdkTracer) -> Self {
        EventSpans { tracer }
    }
}

impl<S> Layer<S> for EventSpans
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if ctx.event_span(event).is_some() {
            return;
        }
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let Some(name) = fields.span_name() else { return };
        let meta = event.metadata();
        let mut attributes = fields.attributes;
        attributes.push(KeyValue::new("message", fields.message));
        attributes.push(KeyValue::new("level", meta.level().as_str()));
        attributes.push(KeyValue::new("target", meta.target()));
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &OtelContext::new());
        if *meta.level() == Level::ERROR {
            span.set_status(Status::error(meta.target().to_owned()));
        }
        span.end();
    }
}

/// An event's message, its `lifecycle` name if any, and its other fields as attributes.
#[derive(Default)]
struct EventFields {
    message: String,
    lifecycle: Option<String>,
    attributes: Vec<KeyValue>,
}

impl EventFields {
    fn span_name(&mut self) -> Option<Cow<'static, str>> {
        if let Some(name) = self.lifecycle.take() {
            return Some(Cow::Owned(name));
        }
        KNOWN_EVENTS
            .iter()
            .find(|(message, _)| *message == self.message)
            .map(|(_, name)| Cow::Borrowed(*name))
    }

    fn put(&mut self, field: &Field, value: opentelemetry::Value) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => value.clone_into(&mut self.message),
            LIFECYCLE_FIELD => self.lifecycle = Some(value.to_owned()),
            _ => self.put(field, value.to_owned().into()),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "message" => self.message = text,
            LIFECYCLE_FIELD => self.lifecycle = Some(text),
            _ => self.put(field, text.into()),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    /// OTLP has no unsigned integers: values past i64::MAX are exported as strings.
    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(value) => self.put(field, value.into()),
            Err(_) => self.put(field, value.to_string().into()),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Runs `f` under a subscriber with only this layer, and returns the exported spans.
    fn spans_of(f: impl FnOnce()) -> Vec<SpanData> {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let subscriber =
            tracing_subscriber::registry().with(EventSpans::new(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f);
        exporter.get_finished_spans().unwrap()
    }

    fn attribute(span: &SpanData, key: &str) -> Option<opentelemetry::Value> {
        span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.clone())
    }

    #[test]
    fn a_known_lifecycle_line_becomes_a_span_with_its_fields() {
        let spans = spans_of(|| {
            tracing::warn!(actor = "exporter", exporter = %"10.0.0.1", datagrams_lost_total = 3u64, "actor restarted");
        });
        assert_eq!(spans.len(), 1);
        let span = &spans[0];
        assert_eq!(span.name, "actor.restarted");
        assert_eq!(attribute(span, "exporter"), Some("10.0.0.1".into()));
        assert_eq!(attribute(span, "actor"), Some("exporter".into()));
        assert_eq!(attribute(span, "datagrams_lost_total"), Some(3i64.into()));
        assert_eq!(attribute(span, "level"), Some("WARN".into()));
        assert!(span.parent_span_id == opentelemetry::trace::SpanId::INVALID);
    }

    #[test]
    fn a_lifecycle_field_names_the_span() {
        let spans = spans_of(|| {
            tracing::info!(lifecycle = "exporter.added", exporter = "10.0.0.2", "new exporter")
        });
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, "exporter.added");
        assert_eq!(attribute(&spans[0], "message"), Some("new exporter".into()));
    }

    #[test]
    fn other_lines_and_lines_inside_spans_are_left_alone() {
        let spans = spans_of(|| {
            tracing::info!(flows = 3, "Some routine line");
            let span = tracing::info_span!("outer");
            let _entered = span.enter();
            tracing::warn!("actor restarted");
        });
        assert!(spans.is_empty(), "{spans:?}");
    }

    #[test]
    fn error_lines_mark_the_span_as_failed() {
        let spans = spans_of(|| tracing::error!(lifecycle = "actor.failed", "boom"));
        assert!(matches!(spans[0].status, Status::Error { .. }), "{:?}", spans[0].status);
    }
}
