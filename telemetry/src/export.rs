//! The OTLP trace pipeline: exporter, batch span processor and tracer provider.
//!
//! Spans leave through a batch span processor with a bounded queue on its own thread:
//! a slow or absent collector fills the queue and later spans are dropped (the SDK
//! counts and logs the drops); the pipeline never waits for an export. gRPC exports run
//! on a small runtime of their own, so they need no runtime from the caller and do not
//! compete with the data path's tasks.

use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use tokio::runtime::Runtime;

use crate::error::TelemetryError;
use crate::settings::{ExportPlan, OtlpProtocol};

/// How long a shutdown may take to export what is queued.
pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// The instrumentation scope of every span this crate exports.
const SCOPE_NAME: &str = "serviceradar-flow-collector";

/// A running trace export: the provider, and the runtime its gRPC client lives on.
pub(crate) struct TraceExport {
    provider: SdkTracerProvider,
    /// Declared after `provider`: dropped (stopped) only once the provider is gone.
    _runtime: Option<ExportRuntime>,
}

impl TraceExport {
    /// Builds the exporter and starts the batch processor's thread.
    pub(crate) fn start(plan: &ExportPlan, resource: Resource) -> Result<Self, TelemetryError> {
        let (exporter, runtime) = match plan.protocol {
            OtlpProtocol::Grpc => grpc_exporter(plan).map(|(e, rt)| (e, Some(rt)))?,
            OtlpProtocol::HttpProtobuf => (http_exporter(plan)?, None),
        };
        let processor =
            BatchSpanProcessor::builder(exporter).with_batch_config(batch_config(plan)).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        Ok(TraceExport { provider, _runtime: runtime })
    }

    /// The tracer spans are created with.
    pub(crate) fn tracer(&self) -> SdkTracer {
        let scope = InstrumentationScope::builder(SCOPE_NAME)
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        self.provider.tracer_with_scope(scope)
    }

    /// Exports every finished span now. Blocks the calling thread.
    pub(crate) fn force_flush(&self) -> Result<(), TelemetryError> {
        self.provider.force_flush().map_err(TelemetryError::Export)
    }

    /// Exports what is queued (within [`SHUTDOWN_TIMEOUT`]) and stops. Blocks the calling
    /// thread.
    pub(crate) fn shutdown(self) -> Result<(), TelemetryError> {
        self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT).map_err(TelemetryError::Export)
    }
}

fn batch_config(plan: &ExportPlan) -> opentelemetry_sdk::trace::BatchConfig {
    let mut config = BatchConfigBuilder::default();
    if let Some(size) = plan.max_queue_size {
        config = config.with_max_queue_size(size);
    }
    if let Some(delay) = plan.scheduled_delay {
        config = config.with_scheduled_delay(delay);
    }
    config.build()
}

/// The tonic client must be created inside a runtime, which must outlive it.
fn grpc_exporter(plan: &ExportPlan) -> Result<(SpanExporter, ExportRuntime), TelemetryError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()
        .map_err(TelemetryError::Runtime)?;
    let runtime = ExportRuntime(Some(runtime));
    let exporter = runtime.enter(|| {
        SpanExporter::builder()
            .with_tonic()
            .with_endpoint(plan.endpoint.clone())
            .with_timeout(plan.timeout)
            .build()
    });
    Ok((exporter.map_err(TelemetryError::Exporter)?, runtime))
}

/// The blocking HTTP client starts a runtime of its own, which must not happen on a
/// thread that runs async tasks: build it on a thread of its own.
fn http_exporter(plan: &ExportPlan) -> Result<SpanExporter, TelemetryError> {
    let build = || {
        SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(plan.endpoint.clone())
            .with_timeout(plan.timeout)
            .build()
    };
    let built = std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("otlp-http-setup".to_owned())
            .spawn_scoped(scope, build)
            .map_err(|_| TelemetryError::Thread("OTLP/HTTP setup"))?;
        handle.join().map_err(|_| TelemetryError::Thread("OTLP/HTTP setup"))
    })?;
    built.map_err(TelemetryError::Exporter)
}

/// The runtime of the gRPC client. Stopped without waiting, so it may be dropped from
/// any context, async ones included.
struct ExportRuntime(Option<Runtime>);

impl ExportRuntime {
    fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.0 {
            Some(runtime) => {
                let _entered = runtime.enter();
                f()
            }
            None => f(),
        }
    }
}

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
