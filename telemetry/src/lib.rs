//! Observability of the collector: one `tracing` subscriber for logs and OTLP traces,
//! Prometheus metrics, and health endpoints for Kubernetes probes.
//!
//! - [`init`] installs the global subscriber: log lines on stderr (text or JSON,
//!   filtered by `RUST_LOG`) and, when configured, OTLP trace export (gRPC or
//!   HTTP/protobuf) through tracing-opentelemetry, so logs and spans share one context.
//!   The exporter actors' lifecycle spans (template learned, missing template, exporter
//!   restarted, ...) and the lifecycle log lines outside spans ([`KNOWN_EVENTS`]) become
//!   OTLP spans. Keep the returned [`TelemetryGuard`]: dropping it flushes and stops
//!   export.
//! - [`Metrics`] encodes the pipeline's counters from a [`flow_actors::CountersSnapshot`]
//!   at scrape time (per listener, per exporter with a cardinality cap, per publisher
//!   with its latency histogram) and the kernel's socket drops.
//! - [`TelemetryServer`] serves `/metrics`, `/healthz` and `/readyz` ([`Readiness`]).

mod bridge;
mod error;
mod export;
mod health;
mod metrics;
mod resource;
mod server;
mod settings;
mod subscriber;

pub use bridge::KNOWN_EVENTS;
pub use error::TelemetryError;
pub use health::{Readiness, ReadinessCheck, WatchCheck};
pub use metrics::{CONTENT_TYPE, CountersProvider, Metrics};
pub use server::TelemetryServer;
pub use settings::{DEFAULT_SERVICE_NAME, LogFormat, OtelConfig, OtlpProtocol, TelemetrySettings};
pub use subscriber::{LIFECYCLE_TARGET, TelemetryGuard, bootstrap_dispatch, init};
