//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// NetFlow v5/v9/IPFIX and sFlow v5 collector publishing FlowMessage protobufs to NATS
/// JetStream, or printing them as JSON lines.
#[derive(Debug, Parser)]
#[command(name = "serviceradar-flow-collector", version, about)]
pub struct Cli {
    /// JSON config file. Without it, /etc/serviceradar/flow-collector.json is read when it
    /// exists, else the embedded default (NetFlow on 2055, sFlow on 6343, flows to stdout).
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Validate the configuration, print the result and exit 0 (valid) or 1 (invalid).
    #[arg(long)]
    pub check_config: bool,

    /// Print flows to stdout as JSON lines even when `nats_url` is set.
    #[arg(long)]
    pub stdout: bool,

    /// Log format on stderr. Filter with RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "FLOW_COLLECTOR_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
