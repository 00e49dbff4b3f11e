//! `serviceradar-flow-collector`: receives NetFlow v5/v9/IPFIX and sFlow v5, decodes
//! each record into a `FlowMessage`, and hands it to the configured sink — NATS
//! JetStream, or JSON lines on stdout when no `nats_url` is set.

mod cli;
mod config;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Parser;
use flow_actors::sink::{
    ConnectionState, JetStreamLink, JetStreamSettings, PublisherError, redact_servers,
};
use flow_actors::{Collector, CollectorSettings, CountersHandle, SinkSettings};
use flow_telemetry::{Metrics, Readiness, TelemetryServer, TelemetrySettings, WatchCheck};

use crate::cli::{Cli, LogFormat};
use crate::config::{Config, ConfigSource};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = match cli.log_format {
        LogFormat::Text => flow_telemetry::LogFormat::Text,
        LogFormat::Json => flow_telemetry::LogFormat::Json,
    };
    // Logs before the config is read (its errors) go through a logs-only subscriber; the
    // full one, with OTLP export, needs the config's `otel` section.
    let bootstrap = flow_telemetry::bootstrap_dispatch(log_format);
    let source = ConfigSource::choose(cli.config.clone());
    let config = match Config::load(&source) {
        Ok(config) => config,
        Err(error) => {
            tracing::dispatcher::with_default(&bootstrap, || tracing::error!("{error}"));
            if cli.check_config {
                println!("config INVALID: {error}");
            }
            return ExitCode::FAILURE;
        }
    };
    if cli.check_config {
        println!("config OK: {} ({} listeners)", source.describe(), config.listeners.len());
        return ExitCode::SUCCESS;
    }
    let telemetry = match flow_telemetry::init(&TelemetrySettings {
        log_format,
        otel: config.otel.clone(),
        service_version: env!("CARGO_PKG_VERSION").to_owned(),
        partition: config.partition.clone(),
        host_name: None,
    }) {
        Ok(guard) => guard,
        Err(error) => {
            tracing::dispatcher::with_default(&bootstrap, || tracing::error!("{error}"));
            return ExitCode::FAILURE;
        }
    };
    if matches!(source, ConfigSource::Embedded) {
        tracing::warn!(
            "No --config given and {} does not exist: running the embedded default \
             (NetFlow on 0.0.0.0:2055, sFlow on 0.0.0.0:6343, flows printed to stdout)",
            config::DEFAULT_CONFIG_PATH
        );
    }
    if cli.discard_flows {
        tracing::warn!("--discard-flows: flows are decoded and counted, then discarded");
    }
    let plan =
        collector_settings(&config, cli.sink_override()).and_then(|(settings, publishing)| {
            Ok((settings, publishing, config.metrics_socket_addr()?))
        });
    let (settings, publishing, metrics_addr) = match plan {
        Ok(plan) => plan,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        config = %source.describe(),
        partition = %config.partition,
        listeners = config.listeners.len(),
        "Configuration loaded"
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        let code = run(settings, publishing, metrics_addr).await;
        if let Err(error) = telemetry.shutdown().await {
            tracing::warn!("{error}");
        }
        code
    });
    // The drain is over: a blocking task still running (a name lookup that hangs) must
    // not keep the process from exiting.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    code
}

/// How long the runtime may wait for its blocking tasks once the collector has stopped.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// Where flows go besides the tree itself: the JetStream connections to make once the
/// listeners are bound — the install's, then one per partition target of its own.
struct Publishing {
    connections: Vec<Connection>,
}

/// One JetStream connection and what it connects with.
struct Connection {
    /// "install", or the partitions publishing through it ("partition acme").
    name: String,
    link: JetStreamLink,
    settings: JetStreamSettings,
}

/// How long closing the NATS connection may take after the drain.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the supervision tree, connects to JetStream in the background, waits for
/// SIGTERM/SIGINT, drains and reports. A JetStream connect failure that retrying cannot
/// fix (TLS files, CA, client certificate, credentials, stream) ends the run with 1.
async fn run(
    settings: CollectorSettings,
    publishing: Option<Publishing>,
    metrics_addr: Option<SocketAddr>,
) -> ExitCode {
    let mut collector = match Collector::start(settings).await {
        Ok(collector) => collector,
        Err(error) => {
            tracing::error!("cannot start the collector: {error}");
            return ExitCode::FAILURE;
        }
    };
    for addr in collector.local_addrs() {
        tracing::info!(%addr, "listener bound");
    }
    let links: Vec<(String, JetStreamLink)> = publishing
        .iter()
        .flat_map(|p| &p.connections)
        .map(|c| (c.name.clone(), c.link.clone()))
        .collect();
    let accepting = Arc::new(AtomicBool::new(true));
    let server = match metrics_addr {
        Some(addr) => {
            let health = Health { counters: collector.counters_handle(), accepting: &accepting };
            match health.serve(addr, &links).await {
                Ok(server) => Some(server),
                Err(error) => {
                    tracing::error!("{error}");
                    let _ = drain(collector).await;
                    return ExitCode::FAILURE;
                }
            }
        }
        None => None,
    };
    let mut connect = tokio::spawn(connect(publishing));
    let fatal = tokio::select! {
        signal = shutdown_signal() => match signal {
            Ok(()) => false,
            Err(error) => {
                tracing::error!("cannot listen for shutdown signals: {error}");
                true
            }
        },
        error = collector.stopped() => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
        outcome = &mut connect => {
            match outcome {
                Ok(error) => tracing::error!("cannot publish to NATS JetStream: {error}"),
                Err(error) => tracing::error!("the NATS connect task failed: {error}"),
            }
            true
        }
    };
    tracing::info!("Shutdown requested: draining (up to {:?})", flow_actors::DRAIN_TIMEOUT);
    accepting.store(false, Ordering::Relaxed);
    let drained = drain(collector).await;
    if let Some(server) = server {
        server.shutdown().await;
    }
    connect.abort();
    for publisher in links.iter().filter_map(|(_, link)| link.publisher()) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, publisher.close()).await;
    }
    if drained && !fatal { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// What the metrics and health endpoint reads.
struct Health<'a> {
    counters: CountersHandle,
    /// False once shutdown began: the pod stops receiving traffic.
    accepting: &'a Arc<AtomicBool>,
}

impl Health<'_> {
    /// Serves `/metrics` (the collector's counters), `/healthz` and `/readyz` (listeners
    /// accepting, and — with JetStream — every NATS connection up: `publisher` for the
    /// install's, `publisher:<partitions>` for a partition's own).
    async fn serve(
        self,
        addr: SocketAddr,
        links: &[(String, JetStreamLink)],
    ) -> Result<TelemetryServer, flow_telemetry::TelemetryError> {
        let counters = OnceLock::from(self.counters);
        let metrics = Arc::new(Metrics::new(move || {
            counters.get().map(CountersHandle::snapshot).unwrap_or_default()
        }));
        let accepting = Arc::clone(self.accepting);
        let mut readiness =
            Readiness::new().with_check("listeners", move || accepting.load(Ordering::Relaxed));
        for (name, link) in links {
            let check =
                if name == INSTALL { "publisher".to_owned() } else { format!("publisher:{name}") };
            readiness = readiness.with_check(
                check,
                WatchCheck::new(link.connection_state(), |state| {
                    *state == ConnectionState::Connected
                }),
            );
        }
        TelemetryServer::start(addr, metrics, readiness).await
    }
}

/// Connects every link, at once. Resolves only with a failure retrying cannot fix;
/// while NATS is unreachable flow-publish retries (and logs) with backoff.
async fn connect(publishing: Option<Publishing>) -> PublisherError {
    let Some(Publishing { connections }) = publishing else {
        return std::future::pending().await;
    };
    let mut connecting = tokio::task::JoinSet::new();
    for Connection { name, link, settings } in connections {
        tracing::info!(
            connection = %name,
            servers = %redact_servers(&settings.servers),
            stream = %settings.stream.name,
            subjects = ?settings.stream.subjects,
            tls = settings.tls.is_some(),
            creds_file = ?settings.creds_file,
            "Connecting to NATS JetStream"
        );
        connecting.spawn(async move { link.connect(settings).await.err() });
    }
    while let Some(done) = connecting.join_next().await {
        if let Ok(Some(error)) = done {
            return error;
        }
    }
    std::future::pending().await
}

/// Stops receiving, drains, and logs the final counters; whether it could report.
async fn drain(collector: Collector) -> bool {
    match collector.shutdown().await {
        Ok(report) => {
            tracing::info!(
                drained_cleanly = report.drained_cleanly,
                counters = ?report.counters,
                "Final counters"
            );
            true
        }
        Err(error) => {
            tracing::error!("shutdown failed: {error}");
            false
        }
    }
}

/// The name of the install's own JetStream connection.
const INSTALL: &str = "install";

/// The sink follows the config unless the command line overrides it (`--stdout`,
/// `--discard-flows`): JetStream when `nats_url` is set, through the install's
/// connection and each partition target's own; else stdout.
fn collector_settings(
    config: &Config,
    sink_override: Option<SinkSettings>,
) -> Result<(CollectorSettings, Option<Publishing>), config::ConfigError> {
    let mut settings = config.collector_settings()?;
    if let Some(sink) = sink_override {
        settings.sink = sink;
        return Ok((settings, None));
    }
    let Some(install) = config.jetstream_settings() else {
        settings.sink = SinkSettings::Stdout;
        return Ok((settings, None));
    };
    let link = JetStreamLink::new();
    let max_in_flight = install.max_in_flight;
    let mut connections =
        vec![Connection { name: INSTALL.to_owned(), link: link.clone(), settings: install }];
    let mut partition_links = BTreeMap::new();
    for own in config.partition_connections() {
        let link = JetStreamLink::new();
        for partition in &own.partitions {
            partition_links.insert(partition.clone(), link.clone());
        }
        connections.push(Connection {
            name: format!("partition {}", own.partitions.join(",")),
            link,
            settings: own.settings,
        });
    }
    settings.sink = config.jetstream_sink(link, partition_links, max_in_flight);
    Ok((settings, Some(Publishing { connections })))
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
