//! `serviceradar-flow-collector`: receives NetFlow v5/v9/IPFIX and sFlow v5, decodes
//! each record into a `FlowMessage`, and hands it to the configured sink — NATS
//! JetStream, or JSON lines on stdout when no `nats_url` is set.

mod cli;
mod config;
mod logging;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use flow_actors::sink::{JetStreamLink, JetStreamSettings, PublisherError};
use flow_actors::{Collector, CollectorSettings, SinkSettings};

use crate::cli::Cli;
use crate::config::{Config, ConfigSource};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let source = ConfigSource::choose(cli.config.clone());
    let config = match Config::load(&source) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!("{error}");
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
    if matches!(source, ConfigSource::Embedded) {
        tracing::warn!(
            "No --config given and {} does not exist: running the embedded default \
             (NetFlow on 0.0.0.0:2055, sFlow on 0.0.0.0:6343, flows printed to stdout)",
            config::DEFAULT_CONFIG_PATH
        );
    }
    let (settings, publishing) = match collector_settings(&config, cli.stdout) {
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
    runtime.block_on(run(settings, publishing))
}

/// Where flows go besides the tree itself: the JetStream connection to make once the
/// listeners are bound.
struct Publishing {
    link: JetStreamLink,
    settings: JetStreamSettings,
}

/// How long closing the NATS connection may take after the drain.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the supervision tree, connects to JetStream in the background, waits for
/// SIGTERM/SIGINT, drains and reports. A JetStream connect failure that retrying cannot
/// fix (TLS files, CA, client certificate, credentials, stream) ends the run with 1.
async fn run(settings: CollectorSettings, publishing: Option<Publishing>) -> ExitCode {
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
    let link = publishing.as_ref().map(|p| p.link.clone());
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
    let drained = drain(collector).await;
    connect.abort();
    if let Some(publisher) = link.and_then(|link| link.publisher()) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, publisher.close()).await;
    }
    if drained && !fatal { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Connects the link, if there is one. Resolves only with a failure retrying cannot fix;
/// while NATS is unreachable flow-publish retries (and logs) with backoff.
async fn connect(publishing: Option<Publishing>) -> PublisherError {
    let Some(Publishing { link, settings }) = publishing else {
        return std::future::pending().await;
    };
    tracing::info!(
        servers = %settings.servers,
        stream = %settings.stream.name,
        subjects = ?settings.stream.subjects,
        tls = settings.tls.is_some(),
        "Connecting to NATS JetStream"
    );
    match link.connect(settings).await {
        Ok(_) => std::future::pending().await,
        Err(error) => error,
    }
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

/// The sink follows the config: JetStream when `nats_url` is set, unless `--stdout`.
fn collector_settings(
    config: &Config,
    force_stdout: bool,
) -> Result<(CollectorSettings, Option<Publishing>), config::ConfigError> {
    let mut settings = config.collector_settings()?;
    let jetstream = if force_stdout { None } else { config.jetstream_settings() };
    let publishing = jetstream.map(|jetstream| {
        let link = JetStreamLink::new();
        settings.sink = config.jetstream_sink(link.clone(), jetstream.max_in_flight);
        Publishing { link, settings: jetstream }
    });
    if publishing.is_none() {
        settings.sink = SinkSettings::Stdout;
    }
    Ok((settings, publishing))
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
