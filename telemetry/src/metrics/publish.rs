//! Figures only the publisher knows as they happen: publish latency, acks in flight,
//! buffered messages. The publisher reports them through [`PublishObserver`]; the
//! binary hands it [`PublishMetrics`], which records them for `/metrics`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What a publisher reports, per subject. Implementations are cheap and never block.
pub trait PublishObserver: Send + Sync + fmt::Debug {
    /// A batch was acknowledged `latency` after it was first handed to the transport.
    fn publish_latency(&self, subject: &str, latency: Duration);
    /// Messages published and not yet acknowledged, now.
    fn in_flight_acks(&self, subject: &str, count: u64);
    /// Messages held by the publisher (waiting or unacknowledged), now.
    fn buffered_messages(&self, subject: &str, count: u64);
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubjectLabels {
    subject: String,
}

/// Latency buckets: 0.5 ms doubling to ~16 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The publisher figures, registered in a [`crate::Metrics`] registry. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PublishMetrics {
    latency: Family<SubjectLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<SubjectLabels, Gauge>,
    buffered: Family<SubjectLabels, Gauge>,
}

impl PublishMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = PublishMetrics {
            latency: Family::new_with_constructor(latency_histogram),
            in_flight: Family::default(),
            buffered: Family::default(),
        };
        registry.register(
            "flow_collector_publish_latency_seconds",
            "Time from handing a batch to the transport until its acknowledgement",
            metrics.latency.clone(),
        );
        registry.register(
            "flow_collector_publish_in_flight_acks",
            "Messages published and not yet acknowledged",
            metrics.in_flight.clone(),
        );
        registry.register(
            "flow_collector_publish_buffered_messages",
            "Messages the publisher holds, waiting or unacknowledged",
            metrics.buffered.clone(),
        );
        metrics
    }

    /// This handle as the observer a publisher takes.
    pub fn observer(&self) -> Arc<dyn PublishObserver> {
        Arc::new(self.clone())
    }
}

fn labels(subject: &str) -> SubjectLabels {
    SubjectLabels { subject: subject.to_owned() }
}

fn as_gauge(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl PublishObserver for PublishMetrics {
    fn publish_latency(&self, subject: &str, latency: Duration) {
        self.latency.get_or_create(&labels(subject)).observe(latency.as_secs_f64());
    }

    fn in_flight_acks(&self, subject: &str, count: u64) {
        self.in_flight.get_or_create(&labels(subject)).set(as_gauge(count));
    }

    fn buffered_messages(&self, subject: &str, count: u64) {
        self.buffered.get_or_create(&labels(subject)).set(as_gauge(count));
    }
}
