//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use flow_actors::SinkSettings;

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

    /// Decode and count flows, then discard them: nothing is published or printed. For
    /// measuring the decode path (flows count as published).
    #[arg(long, conflicts_with = "stdout")]
    pub discard_flows: bool,

    /// Log format on stderr. Filter with RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "FLOW_COLLECTOR_LOG_FORMAT")]
    pub log_format: LogFormat,
}

impl Cli {
    /// The sink the command line asks for instead of the config's, if any.
    pub fn sink_override(&self) -> Option<SinkSettings> {
        if self.discard_flows {
            Some(SinkSettings::Discard)
        } else if self.stdout {
            Some(SinkSettings::Stdout)
        } else {
            None
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
