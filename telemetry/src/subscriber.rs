//! The global `tracing` subscriber: log lines on stderr (text or JSON, filtered by
//! `RUST_LOG`), plus, when OTLP export is on, the tracing-opentelemetry layer and the
//! lifecycle-event bridge (filtered by `otel.filter`), all sharing one span context.

use std::sync::Arc;

use tracing::{Dispatch, Metadata};
use tracing_subscriber::Registry;
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::bridge::EventSpans;
use crate::error::TelemetryError;
use crate::export::TraceExport;
use crate::resource;
use crate::settings::{Env, ExportPlan, LogFormat, TelemetrySettings, parse_filter, process_env};

/// Target of the lifecycle spans of the exporter actors (actors/src/exporter/report.rs).
/// They exist for OTLP: log lines are written without them, so their text is unchanged.
pub const LIFECYCLE_TARGET: &str = "flow_actors::lifecycle";

/// Never exported over OTLP: the exporter's own internals (they would report on
/// themselves in a loop), and ractor's spans, which last an actor's whole life: they
/// would parent every lifecycle span and hold its log lines as span events for hours.
/// Without them, each lifecycle span is a short trace of its own.
const OTLP_EXCLUDED: &str = "opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,\
                             tonic=off,h2=off,hyper=off,hyper_util=off,tower=off,reqwest=off,ractor=off";

/// Installs the global subscriber and, when configured, starts OTLP trace export.
/// Call once, after the config is loaded; keep the guard until the process ends.
pub fn init(settings: &TelemetrySettings) -> Result<TelemetryGuard, TelemetryError> {
    init_with_env(settings, &process_env)
}

pub(crate) fn init_with_env(
    settings: &TelemetrySettings,
    env: Env<'_>,
) -> Result<TelemetryGuard, TelemetryError> {
    let export = match ExportPlan::resolve(&settings.otel, env)? {
        Some(plan) => Some(start_export(&plan, settings, env)?),
        None => None,
    };
    let mut layers = vec![log_layer(settings.log_format, log_filter(env))];
    if let Some((export, filter)) = &export {
        layers.extend(otlp_layers(export, filter)?);
    }
    tracing_subscriber::registry().with(layers).try_init().map_err(TelemetryError::Subscriber)?;
    Ok(TelemetryGuard { export: export.map(|(export, _)| Arc::new(export)) })
}

/// A log-only subscriber for the time before the config is loaded, to use with
/// `tracing::dispatcher::with_default` (the global one is installed by [`init`]).
pub fn bootstrap_dispatch(format: LogFormat) -> Dispatch {
    let subscriber =
        tracing_subscriber::registry().with(log_layer(format, log_filter(&process_env)));
    Dispatch::new(subscriber)
}

fn start_export(
    plan: &ExportPlan,
    settings: &TelemetrySettings,
    env: Env<'_>,
) -> Result<(TraceExport, String), TelemetryError> {
    let resource = resource::build(settings, env)?;
    let export = TraceExport::start(plan, resource)?;
    Ok((export, plan.filter.clone()))
}

/// `RUST_LOG`, or `info`; invalid directives are skipped rather than fatal.
fn log_filter(env: Env<'_>) -> EnvFilter {
    EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .parse_lossy(env("RUST_LOG").unwrap_or_default())
}

/// A layer of the global subscriber, filtered on its own.
type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The fmt layer on stderr, blind to lifecycle spans.
fn log_layer(format: LogFormat, filter: EnvFilter) -> BoxedLayer {
    log_layer_to(format, filter, std::io::stderr)
}

fn log_layer_to<W>(format: LogFormat, filter: EnvFilter, writer: W) -> BoxedLayer
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = filter_fn(|meta| !is_lifecycle_span(meta)).and(filter);
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => layer.with_target(false).with_filter(filter).boxed(),
        LogFormat::Json => layer.json().flatten_event(true).with_filter(filter).boxed(),
    }
}

fn is_lifecycle_span(meta: &Metadata<'_>) -> bool {
    meta.is_span() && meta.target() == LIFECYCLE_TARGET
}

/// The tracing-opentelemetry layer and the lifecycle-event bridge, each behind the OTLP
/// filter (two instances: a filter belongs to one layer).
fn otlp_layers(export: &TraceExport, directives: &str) -> Result<[BoxedLayer; 2], TelemetryError> {
    let filter = || parse_filter("otel.filter", &format!("{directives},{OTLP_EXCLUDED}"));
    let spans = tracing_opentelemetry::layer()
        .with_tracer(export.tracer())
        .with_level(true)
        .with_filter(filter()?)
        .boxed();
    let events = EventSpans::new(export.tracer()).with_filter(filter()?).boxed();
    Ok([spans, events])
}

/// Keeps trace export running. Dropping it exports what is queued (bounded by a
/// timeout) on a thread of its own and stops the exporter; prefer [`shutdown`] from
/// async code.
///
/// [`shutdown`]: TelemetryGuard::shutdown
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    export: Option<Arc<TraceExport>>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard").field("tracing", &self.tracing_enabled()).finish()
    }
}

impl TelemetryGuard {
    /// Whether spans are exported over OTLP.
    pub fn tracing_enabled(&self) -> bool {
        self.export.is_some()
    }

    /// Exports every finished span now, without blocking the async runtime.
    pub async fn force_flush(&self) -> Result<(), TelemetryError> {
        let Some(export) = self.export.clone() else { return Ok(()) };
        tokio::task::spawn_blocking(move || export.force_flush())
            .await
            .map_err(|_| TelemetryError::Thread("OTLP flush"))?
    }

    /// Exports what is queued and stops trace export, without blocking the runtime.
    pub async fn shutdown(mut self) -> Result<(), TelemetryError> {
        let Some(export) = self.export.take() else { return Ok(()) };
        tokio::task::spawn_blocking(move || shut_down(export))
            .await
            .map_err(|_| TelemetryError::Thread("OTLP shutdown"))?
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(export) = self.export.take() else { return };
        let stopper = std::thread::Builder::new()
            .name("otlp-shutdown".to_owned())
            .spawn(move || shut_down(export));
        let outcome = match stopper {
            Ok(handle) => handle.join().unwrap_or(Err(TelemetryError::Thread("OTLP shutdown"))),
            Err(_) => Err(TelemetryError::Thread("OTLP shutdown")),
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, "OTLP trace export did not shut down cleanly");
        }
    }
}

/// Shuts the export down once no flush holds it any more.
fn shut_down(export: Arc<TraceExport>) -> Result<(), TelemetryError> {
    match Arc::try_unwrap(export) {
        Ok(export) => export.shutdown(),
        Err(shared) => shared.force_flush(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use super::*;

    /// Collects what the log layer writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(format: LogFormat) -> String {
        let capture = Capture::default();
        let writer = capture.clone();
        let layer = log_layer_to(format, EnvFilter::new("info"), move || writer.clone());
        let subscriber = tracing_subscriber::registry().with(vec![layer]);
        tracing::subscriber::with_default(subscriber, || {
            let lifecycle = tracing::info_span!(target: LIFECYCLE_TARGET, "lifecycle", otel.name = "template.learned", exporter = "192.0.2.1:2055");
            lifecycle.in_scope(|| tracing::info!(template_id = 256, "Template learned - ID: 256"));
            tracing::info_span!("outer", request = 7).in_scope(|| tracing::info!("inside outer"));
            tracing::debug!("filtered out");
        });
        let bytes = capture.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn log_lines_keep_their_text_without_lifecycle_spans() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let text = logged(format);
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 2, "{format:?}: {text}");
            assert!(lines[0].contains("Template learned - ID: 256"), "{format:?}: {text}");
            assert!(
                !lines[0].contains("lifecycle") && !lines[0].contains("otel.name"),
                "{format:?}: {text}"
            );
            assert!(lines[1].contains("outer"), "other spans still give context: {text}");
        }
    }

    #[test]
    fn the_json_format_writes_one_object_per_line() {
        let text = logged(LogFormat::Json);
        for line in text.lines() {
            let object: serde_json::Value = serde_json::from_str(line).expect("a JSON object");
            assert!(object.get("message").is_some(), "{line}");
        }
    }
}
