//! `serviceradar-flow-collector`: receives NetFlow v5/v9/IPFIX and sFlow v5, decodes
//! each record into a `FlowMessage`, and hands it to the configured sink — NATS
//! JetStream, or JSON lines on stdout when no `nats_url` is set.

mod cli;
mod config;
mod logging;

use std::process::ExitCode;

use clap::Parser;
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
    let settings = match collector_settings(&config, cli.stdout) {
        Ok(settings) => settings,
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
    runtime.block_on(run(settings))
}

/// Starts the supervision tree, waits for SIGTERM/SIGINT, drains and reports.
async fn run(settings: CollectorSettings) -> ExitCode {
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
    tokio::select! {
        signal = shutdown_signal() => {
            if let Err(error) = signal {
                tracing::error!("cannot listen for shutdown signals: {error}");
                return ExitCode::FAILURE;
            }
        }
        error = collector.stopped() => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    }
    tracing::info!("Shutdown requested: draining");
    match collector.shutdown().await {
        Ok(report) => {
            tracing::info!(
                drained_cleanly = report.drained_cleanly,
                counters = ?report.counters,
                "Final counters"
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!("shutdown failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The sink follows the config: JetStream when `nats_url` is set, unless `--stdout`.
fn collector_settings(
    config: &Config,
    force_stdout: bool,
) -> Result<CollectorSettings, config::ConfigError> {
    let mut settings = config.collector_settings()?;
    settings.sink = match (&config.nats_url, force_stdout) {
        (None, _) | (Some(_), true) => SinkSettings::Stdout,
        (Some(_), false) => {
            return Err(config::ConfigError::Invalid {
                key: "nats_url".into(),
                reason: "JetStream publishing is not available in this build; run with --stdout"
                    .into(),
            });
        }
    };
    Ok(settings)
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
