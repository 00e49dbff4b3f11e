//! The Prometheus registry behind `/metrics`: the pipeline's counters, read from a
//! [`flow_actors::CountersSnapshot`] at scrape time (listeners, their exporters, the
//! publishers), and the kernel's socket drops.

mod exporters;
mod kernel;
mod snapshot;

use std::fmt;

use flow_actors::CountersSnapshot;
use prometheus_client::encoding::text;
use prometheus_client::registry::Registry;

pub use self::snapshot::CountersProvider;
use self::snapshot::SnapshotCollector;

/// The OpenMetrics text content type `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics reading the pipeline's counters from `counters` on every scrape.
    pub fn new(counters: impl Fn() -> CountersSnapshot + Send + Sync + 'static) -> Self {
        let mut registry = Registry::default();
        let collector = SnapshotCollector::new(Box::new(counters), kernel::udp_drops);
        registry.register_collector(Box::new(collector));
        Metrics { registry }
    }

    /// The OpenMetrics text of every metric, now.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
