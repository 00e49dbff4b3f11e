//! `flow-loadgen`: generates NetFlow v5/v9, IPFIX or sFlow v5 export traffic from many
//! simulated exporters (one UDP socket each, on 127.1.x.y) to a collector, at a fixed
//! rate or flat out (`sendmmsg`), and prints what it sent.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use flow_replay::generate::{Protocol, Settings};
use flow_replay::load::{self, LoadError, LoadPlan, LoadSummary, Stop};

/// Generates flow export traffic to a collector.
#[derive(Debug, Parser)]
#[command(name = "flow-loadgen", version)]
struct Cli {
    /// Where to send: HOST:PORT (IPv4).
    #[arg(long, value_name = "HOST:PORT")]
    to: String,
    /// v5, v9, ipfix or sflow.
    #[arg(long, short = 'p', default_value = "v9")]
    protocol: Protocol,
    /// Flow records (sFlow: flow samples) per datagram [default: what fits 1500 bytes:
    /// v5 30, v9 28, ipfix 19, sflow 8].
    #[arg(long, value_name = "N")]
    records: Option<u16>,
    /// Simulated exporters, each sending from its own address 127.1.x.y.
    #[arg(long, value_name = "N", default_value = "1")]
    exporters: u32,
    /// Datagrams per second in all; 0 = flat out.
    #[arg(long, value_name = "PPS", conflicts_with = "flows_per_sec")]
    rate: Option<f64>,
    /// Flow records per second in all (the datagram rate is this / --records).
    #[arg(long, value_name = "N")]
    flows_per_sec: Option<f64>,
    /// Send for this many seconds [default: 10, unless --count is given].
    #[arg(long, value_name = "SECS", conflicts_with = "count")]
    duration: Option<f64>,
    /// Send this many datagrams in all, shared evenly between the exporters.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Templates again after this many datagrams of an exporter (v9/IPFIX; 0 = never).
    #[arg(long, value_name = "N", default_value = "100")]
    template_every: u32,
    /// Templates again after this many seconds (v9/IPFIX; 0 = never).
    #[arg(long, value_name = "SECS", default_value = "30")]
    template_secs: f64,
    /// Sampling rate announced (1 = unsampled): v5 header, v9/IPFIX options record,
    /// sFlow samples.
    #[arg(long, value_name = "N", default_value = "1")]
    sampling_rate: u32,
    /// Datagrams of one exporter per sendmmsg call at most.
    #[arg(long, value_name = "N", default_value = "32")]
    burst: usize,
    /// Sending threads; exporters are shared out between them (needs --exporters >= N).
    #[arg(long, value_name = "N", default_value = "1")]
    threads: usize,
    /// Seed of the field values.
    #[arg(long, default_value = "1")]
    seed: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("cannot resolve {target}: {reason}")]
    Resolve { target: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Load(#[from] LoadError),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match plan(&cli).and_then(|plan| Ok((load::run(&plan)?, plan))) {
        Ok((summary, plan)) => {
            print_summary(&cli, &plan, &summary);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flow-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The run the command line asks for.
fn plan(cli: &Cli) -> Result<LoadPlan, CliError> {
    let mut settings = Settings::new(cli.protocol);
    settings.records = cli.records.unwrap_or(settings.records);
    settings.sampling_rate = cli.sampling_rate;
    settings.template_every = NonZeroU32::new(cli.template_every);
    settings.template_interval = positive_secs("--template-secs", cli.template_secs)?;
    settings.seed = cli.seed;
    let rate = match (cli.rate, cli.flows_per_sec) {
        (Some(0.0), _) => None,
        (Some(pps), _) => Some(pps),
        (None, Some(0.0)) => None,
        (None, Some(fps)) => Some(fps / f64::from(settings.records.max(1))),
        (None, None) => None,
    };
    let stop = match (cli.count, cli.duration) {
        (Some(count), _) => Stop::Count(count),
        (None, secs) => Stop::After(
            positive_secs("--duration", secs.unwrap_or(10.0))?
                .ok_or_else(|| CliError::Invalid("--duration must be above 0".into()))?,
        ),
    };
    Ok(LoadPlan {
        target: resolve(&cli.to)?,
        exporters: cli.exporters,
        settings,
        rate,
        stop,
        burst: cli.burst,
        threads: cli.threads,
    })
}

/// `secs` as a duration; 0 = none.
fn positive_secs(flag: &str, secs: f64) -> Result<Option<Duration>, CliError> {
    if secs == 0.0 {
        return Ok(None);
    }
    Duration::try_from_secs_f64(secs)
        .map(Some)
        .map_err(|_| CliError::Invalid(format!("{flag} {secs}: not a number of seconds")))
}

/// The first IPv4 address `target` resolves to.
fn resolve(target: &str) -> Result<SocketAddr, CliError> {
    let resolve_error = |reason: String| CliError::Resolve { target: target.to_string(), reason };
    let addrs = target.to_socket_addrs().map_err(|e| resolve_error(e.to_string()))?;
    let mut addrs: Vec<SocketAddr> = addrs.collect();
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs.into_iter().next().ok_or_else(|| resolve_error("no address".to_string()))
}

/// One line (or one JSON object) on stdout: what was sent, how fast.
fn print_summary(cli: &Cli, plan: &LoadPlan, s: &LoadSummary) {
    let secs = s.elapsed.as_secs_f64();
    let line = if cli.json {
        format!(
            "{{\"protocol\":\"{}\",\"exporters\":{},\"records_per_datagram\":{},\
             \"datagrams\":{},\"records\":{},\"template_datagrams\":{},\"bytes\":{},\
             \"elapsed_secs\":{secs:.6},\"datagrams_per_sec\":{:.1},\"records_per_sec\":{:.1},\
             \"offered_datagrams_per_sec\":{}}}",
            plan.settings.protocol,
            s.exporters,
            plan.settings.records,
            s.datagrams,
            s.records,
            s.template_datagrams,
            s.bytes,
            s.datagrams_per_sec(),
            s.records_per_sec(),
            plan.rate.map_or("null".to_string(), |r| format!("{r:.1}")),
        )
    } else {
        format!(
            "flow-loadgen: {} datagrams ({} with templates), {} {} records, {} bytes from {} \
             exporters in {secs:.3} s: {:.0} datagrams/s, {:.0} records/s",
            s.datagrams,
            s.template_datagrams,
            s.records,
            plan.settings.protocol,
            s.bytes,
            s.exporters,
            s.datagrams_per_sec(),
            s.records_per_sec(),
        )
    };
    // A closed stdout at the very end is not worth failing a finished run for.
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}
