//! Why telemetry could not start.

use std::net::SocketAddr;

use thiserror::Error;

/// A telemetry start-up failure. Each names the setting or variable at fault.
#[derive(Debug, Error)]
pub enum TelemetryError {
    /// A setting of the `otel` config section, or an `OTEL_*` variable, is not acceptable.
    #[error("telemetry setting `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    /// The OTLP span exporter could not be built from the resolved settings.
    #[error("cannot build the OTLP span exporter: {0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    /// The runtime that carries OTLP/gRPC exports could not start.
    #[error("cannot start the OTLP export runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A helper thread or blocking task of telemetry could not run, or panicked.
    #[error("the telemetry {0} thread failed")]
    Thread(&'static str),
    /// A global `tracing` subscriber was installed before.
    #[error("cannot install the tracing subscriber: {0}")]
    Subscriber(#[source] tracing_subscriber::util::TryInitError),
    /// Flushing or shutting down the tracer provider failed.
    #[error("OTLP trace export: {0}")]
    Export(#[source] opentelemetry_sdk::error::OTelSdkError),
    /// The metrics and health endpoint could not listen.
    #[error("cannot listen on metrics_addr {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl TelemetryError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        TelemetryError::Invalid { key: key.into(), reason: reason.into() }
    }
}
