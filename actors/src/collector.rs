//! The entry point: start the tree from [`CollectorSettings`], learn its bound addresses
//! and counters, and shut it down with a drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, SpawnErr};
use thiserror::Error;
use tokio::task::JoinHandle;

use crate::budget::InFlight;
use crate::counters::{CountersSnapshot, ListenerCounters, ListenerSnapshot, PublisherSnapshot};
use crate::exporter::ListenerContext;
use crate::exporter::PartitionRoutes;
use crate::listener::ListenerSpec;
use crate::publisher::PublisherSlot;
use crate::quota::PartitionQuotas;
use crate::session::{DecoderSessions, SessionFactory};
use crate::settings::{CollectorSettings, ListenerProtocol, ListenerSettings, Transport};
use crate::sink::{ConfiguredSinks, SinkError, SinkFactory};
use crate::socket::{BindError, bind_tcp, bind_udp};
use crate::stream::StreamSpec;
use crate::supervisor::{
    BoundSocket, CollectorSupervisor, DRAIN_TIMEOUT, ListenerKind, RootArgs, RootMsg,
};
use crate::tenancy::{Registry, listener_partitions, subject_for};

/// Extra time the caller of a shutdown waits beyond the drain timeout itself.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the collector could not start or stopped badly.
#[derive(Debug, Error)]
pub enum CollectorError {
    #[error("invalid collector settings: {0}")]
    InvalidSettings(&'static str),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot create the sink for subject {subject}: {source}")]
    Sink {
        subject: String,
        #[source]
        source: SinkError,
    },
    #[error("cannot start the collector supervision tree: {0}")]
    Spawn(#[source] SpawnErr),
    #[error("the collector supervision tree stopped unexpectedly")]
    SupervisorStopped,
}

/// What a run ends with.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// Counters after the drain.
    pub counters: CountersSnapshot,
    /// Whether the drain finished in time; if not, what was left is counted as lost.
    pub drained_cleanly: bool,
}

/// Runs a collector until `shutdown` resolves, then drains it and reports its counters.
/// Fails at start-up (a socket that cannot be bound, named with the OS error) or when the
/// supervision tree dies, in which case the process should exit non-zero.
pub async fn run(
    settings: CollectorSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, CollectorError> {
    let mut collector = Collector::start(settings).await?;
    tokio::select! {
        () = shutdown => collector.shutdown().await,
        error = collector.stopped() => Err(error),
    }
}

/// A running collector.
pub struct Collector {
    root: ActorRef<RootMsg>,
    /// `None` once awaited to completion (a JoinHandle must not be polled again).
    root_task: Option<JoinHandle<()>>,
    counters: CountersHandle,
}

/// Reads every counter of a collector on demand; see [`Collector::counters_handle`].
#[derive(Clone)]
pub struct CountersHandle {
    listeners: Arc<[ListenerInfo]>,
    publishers: Arc<[Arc<PublisherSlot>]>,
    quotas: Arc<PartitionQuotas>,
}

impl CountersHandle {
    /// Every counter, now.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            listeners: self
                .listeners
                .iter()
                .map(|l| ListenerSnapshot {
                    name: l.name.clone(),
                    subject: l.subject.clone(),
                    partition: l.partition.clone(),
                    local_addr: l.local_addr,
                    counters: l.counters.snapshot(),
                })
                .collect(),
            publishers: self
                .publishers
                .iter()
                .map(|p| PublisherSnapshot {
                    subject: p.subject().to_owned(),
                    partition: p.partition().to_owned(),
                    counters: p.counters().snapshot(),
                })
                .collect(),
            partitions: self.quotas.snapshot(),
        }
    }
}

#[derive(Clone)]
struct ListenerInfo {
    name: String,
    subject: String,
    /// The listener's own partition (its `partition`, else the install's).
    partition: String,
    local_addr: SocketAddr,
    counters: Arc<ListenerCounters>,
}

impl Collector {
    /// Binds every listener and starts the tree with the real decoders and the sinks the
    /// settings name.
    pub async fn start(settings: CollectorSettings) -> Result<Self, CollectorError> {
        let sinks = ConfiguredSinks::new(settings.sink.clone());
        Self::start_with(settings, Arc::new(DecoderSessions), &sinks).await
    }

    /// Starts the tree with the given decoder sessions and sinks.
    pub async fn start_with(
        settings: CollectorSettings,
        sessions: Arc<dyn SessionFactory>,
        sinks: &dyn SinkFactory,
    ) -> Result<Self, CollectorError> {
        validate(&settings)?;
        let publishers = create_publishers(&settings, sinks)?;
        let quotas = Arc::new(PartitionQuotas::new(&settings.partition_limits, Instant::now()));
        let mut listeners = Vec::with_capacity(settings.listeners.len());
        let mut infos = Vec::with_capacity(settings.listeners.len());
        let registry = Arc::new(settings.registry.clone());
        for listener in &settings.listeners {
            let routes = routes_of(&settings, listener, &publishers)?;
            let (spec, socket) = bind_listener(
                &settings,
                listener,
                routes,
                Arc::clone(&registry),
                Arc::clone(&quotas),
                Arc::clone(&sessions),
            )?;
            infos.push(ListenerInfo {
                name: spec.ctx().name.clone(),
                subject: listener.subject.clone(),
                partition: spec.ctx().partition().to_owned(),
                local_addr: spec.local_addr(),
                counters: Arc::clone(&spec.ctx().counters),
            });
            listeners.push((spec, socket));
        }
        let args = RootArgs { listeners, publishers: publishers.clone() };
        let (root, root_task) = CollectorSupervisor::spawn(None, CollectorSupervisor, args)
            .await
            .map_err(CollectorError::Spawn)?;
        let addrs: Vec<String> =
            infos.iter().map(|l| format!("{} on {}", l.name, l.local_addr)).collect();
        tracing::info!(listeners = ?addrs, "Collector started");
        let counters =
            CountersHandle { listeners: infos.into(), publishers: publishers.into(), quotas };
        Ok(Self { root, root_task: Some(root_task), counters })
    }

    /// The bound address of each listener, in configuration order (the real port when 0
    /// was configured).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.counters.listeners.iter().map(|l| l.local_addr).collect()
    }

    /// Every counter, now.
    pub fn counters(&self) -> CountersSnapshot {
        self.counters.snapshot()
    }

    /// A cheap handle that reads the counters later, from anywhere (the metrics endpoint),
    /// and outlives the collector.
    pub fn counters_handle(&self) -> CountersHandle {
        self.counters.clone()
    }

    /// Resolves only if the supervision tree stops by itself (its root failed).
    pub async fn stopped(&mut self) -> CollectorError {
        if let Some(task) = self.root_task.as_mut() {
            let _ = task.await;
            self.root_task = None;
        }
        tracing::error!("Collector supervision tree stopped unexpectedly");
        CollectorError::SupervisorStopped
    }

    /// Stops receiving, drains everything queued through the decoders and publishers,
    /// flushes the sinks, and returns the final counters. Bounded by the drain timeout.
    pub async fn shutdown(mut self) -> Result<RunReport, CollectorError> {
        let root = self.root.clone();
        let call = root.call(RootMsg::Shutdown, Some(DRAIN_TIMEOUT + SHUTDOWN_GRACE)).await;
        let drained_cleanly = match call {
            Ok(CallResult::Success(clean)) => clean,
            Ok(CallResult::Timeout) => {
                tracing::warn!("Collector drain did not answer in time; stopping it");
                root.kill();
                false
            }
            Ok(CallResult::SenderError) | Err(_) => return Err(CollectorError::SupervisorStopped),
        };
        if let Some(task) = self.root_task.as_mut() {
            match tokio::time::timeout(SHUTDOWN_GRACE, task).await {
                Ok(_) => self.root_task = None,
                Err(_) => tracing::warn!("Collector supervisor did not stop in time"),
            }
        }
        let counters = self.counters();
        tracing::info!(
            drained_cleanly,
            datagrams_received = counters.datagrams_received(),
            flows_decoded = counters.flows_decoded(),
            flows_published = counters.flows_published(),
            flows_dropped = counters.flows_dropped(),
            "Collector stopped"
        );
        Ok(RunReport { counters, drained_cleanly })
    }

    /// Makes an actor of the tree fail, to test supervision. Returns whether the target
    /// existed.
    #[cfg(any(test, feature = "fault-injection"))]
    pub async fn inject_fault(
        &self,
        fault: crate::supervisor::Fault,
    ) -> Result<bool, CollectorError> {
        match self.root.call(|reply| RootMsg::Inject(fault, reply), Some(SHUTDOWN_GRACE)).await {
            Ok(CallResult::Success(found)) => Ok(found),
            Ok(CallResult::Timeout | CallResult::SenderError) | Err(_) => {
                Err(CollectorError::SupervisorStopped)
            }
        }
    }
}

/// Dropping a collector that was not shut down kills its tree (no drain), so actors and
/// sockets never outlive their handle.
impl Drop for Collector {
    fn drop(&mut self) {
        if self.root_task.as_ref().is_some_and(|task| !task.is_finished()) {
            self.root.kill();
        }
    }
}

/// Checks what the actors rely on (the binary validates the config file in depth).
fn validate(settings: &CollectorSettings) -> Result<(), CollectorError> {
    let checks = [
        (settings.listeners.is_empty(), "at least one listener is required"),
        (settings.channel_size == 0, "channel_size must be > 0"),
        (settings.batch_size == 0, "batch_size must be > 0"),
        (settings.exporters.max_exporters == 0, "max_exporters must be > 0"),
        (settings.exporters.idle_timeout.is_zero(), "the exporter idle timeout must be > 0"),
        (settings.stats_interval.is_zero(), "stats_interval must be > 0"),
    ];
    if let Some((_, message)) = checks.iter().find(|(failed, _)| *failed) {
        return Err(CollectorError::InvalidSettings(message));
    }
    for listener in &settings.listeners {
        let Transport::Stream(stream) = &listener.transport else { continue };
        let checks = [
            (
                matches!(listener.protocol, ListenerProtocol::Sflow(_)),
                "sFlow is only received over UDP",
            ),
            (stream.max_sessions == 0, "max_sessions must be > 0"),
            (stream.idle_timeout.is_zero(), "the session idle timeout must be > 0"),
            (stream.handshake_timeout.is_zero(), "the TLS handshake timeout must be > 0"),
        ];
        if let Some((_, message)) = checks.iter().find(|(failed, _)| *failed) {
            return Err(CollectorError::InvalidSettings(message));
        }
    }
    Ok(())
}

/// One publisher slot (and sink) per distinct subject and partition, in order of first
/// appearance: each partition's flows are batched, published and counted apart (a
/// listener subject holding `{partition}` also gives each partition its own subject).
fn create_publishers(
    settings: &CollectorSettings,
    sinks: &dyn SinkFactory,
) -> Result<Vec<Arc<PublisherSlot>>, CollectorError> {
    let mut routes: Vec<(String, String)> = Vec::new();
    for listener in &settings.listeners {
        for partition in partitions_of(settings, listener) {
            let route = (subject_for(&listener.subject, &partition), partition);
            if !routes.contains(&route) {
                routes.push(route);
            }
        }
    }
    let shares = |subject: &str| routes.iter().filter(|(s, _)| s == subject).count();
    let mut publishers = Vec::with_capacity(routes.len());
    for (subject, partition) in &routes {
        let sink = sinks
            .create(subject, partition)
            .map_err(|source| CollectorError::Sink { subject: subject.clone(), source })?;
        let to = (subject.clone(), partition.clone());
        publishers.push(PublisherSlot::new(to, shares(subject), settings.batch_size, sink));
    }
    Ok(publishers)
}

fn find_publisher<'a>(
    publishers: &'a [Arc<PublisherSlot>],
    subject: &str,
    partition: &str,
) -> Option<&'a Arc<PublisherSlot>> {
    publishers.iter().find(|slot| slot.subject() == subject && slot.partition() == partition)
}

/// The partitions a listener's exporters may belong to, its own first.
fn partitions_of(settings: &CollectorSettings, listener: &ListenerSettings) -> Vec<String> {
    let own = listener.partition.as_deref().unwrap_or(&settings.partition);
    listener_partitions(own, &settings.registry)
}

/// Which publisher each partition of a listener's flows goes to.
fn routes_of(
    settings: &CollectorSettings,
    listener: &ListenerSettings,
    publishers: &[Arc<PublisherSlot>],
) -> Result<PartitionRoutes, CollectorError> {
    let mut routes = Vec::new();
    for partition in partitions_of(settings, listener) {
        let subject = subject_for(&listener.subject, &partition);
        let slot = find_publisher(publishers, &subject, &partition)
            .cloned()
            .ok_or(CollectorError::InvalidSettings("listener subject without a publisher"))?;
        routes.push((partition, slot));
    }
    Ok(PartitionRoutes::new(routes))
}

/// Binds one listener's socket and builds what its actor is (re)started with.
fn bind_listener(
    settings: &CollectorSettings,
    listener: &ListenerSettings,
    routes: PartitionRoutes,
    registry: Arc<Registry>,
    quotas: Arc<PartitionQuotas>,
    sessions: Arc<dyn SessionFactory>,
) -> Result<(ListenerKind, BoundSocket), CollectorError> {
    let addr = listener.listen_addr;
    let (socket, local_addr) = match &listener.transport {
        Transport::Udp => {
            let socket = bind_udp(addr, listener.buffer_size)?;
            let local = socket.local_addr();
            (
                BoundSocket::Udp(socket),
                local.map_err(|source| BindError { transport: "UDP", addr, source })?,
            )
        }
        Transport::Stream(_) => {
            let socket = bind_tcp(addr, listener.buffer_size)?;
            let local = socket.local_addr();
            (
                BoundSocket::Tcp(socket),
                local.map_err(|source| BindError { transport: "TCP", addr, source })?,
            )
        }
    };
    let counters = Arc::new(ListenerCounters::new(settings.exporters.max_series));
    let ctx = Arc::new(ListenerContext {
        name: listener.name(),
        protocol: listener.protocol.clone(),
        counters: Arc::clone(&counters),
        routes,
        registry,
        sessions,
    });
    let budget = InFlight::new(settings.channel_size, counters);
    let spec = match &listener.transport {
        Transport::Udp => ListenerKind::Datagram(Arc::new(ListenerSpec {
            ctx,
            local_addr,
            buffer_size: listener.buffer_size,
            channel_size: settings.channel_size,
            limits: settings.exporters.clone(),
            sources: listener.sources.clone(),
            max_exporter_pps: listener.max_exporter_pps,
            max_datagram_bytes: listener.max_datagram_bytes,
            sockets: listener.sockets.max(1),
            stats_interval: settings.stats_interval,
            budget,
            quotas,
        })),
        Transport::Stream(stream) => ListenerKind::Stream(Arc::new(StreamSpec::new(
            ctx,
            local_addr,
            listener,
            stream.clone(),
            settings.stats_interval,
            budget,
            quotas,
        ))),
    };
    Ok((spec, socket))
}
