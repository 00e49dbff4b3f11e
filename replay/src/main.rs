//! `flow-replay`: replays the UDP payloads of pcap/pcapng captures, in file order, to a
//! collector over real UDP, and prints what each source sent.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use flow_replay::{
    DatagramReader, PcapError, Replayer, SendError, SkipCounts, SourcePlan, SourceReport,
};

/// Replays the UDP datagrams of captures to a collector.
#[derive(Debug, Parser)]
#[command(name = "flow-replay", version)]
struct Cli {
    /// Where to send: HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    to: String,
    /// Local source address(es); exporters take them in turn, in order of first appearance.
    #[arg(long = "from-ip", value_name = "IP", conflicts_with = "source_per_exporter")]
    from_ip: Vec<IpAddr>,
    /// Give each original exporter its own source address, 127.0.0.10 upwards.
    #[arg(long)]
    source_per_exporter: bool,
    /// Send at most this many datagrams per second.
    #[arg(long, value_name = "N")]
    pps: Option<NonZeroU32>,
    /// Replay all files this many times.
    #[arg(long = "loop", value_name = "N", default_value = "1")]
    loops: NonZeroU32,
    /// Captures to replay, in order.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
enum ReplayError {
    #[error("cannot resolve {target}: {reason}")]
    Resolve { target: String, reason: String },
    #[error("{path}: {source}")]
    Capture { path: PathBuf, source: PcapError },
    #[error(transparent)]
    Send(#[from] SendError),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(reports) => {
            print_reports(&reports);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flow-replay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Replays every file `cli.loops` times and returns the per-source counts.
fn run(cli: &Cli) -> Result<Vec<SourceReport>, ReplayError> {
    let target = resolve(&cli.to)?;
    let plan = if cli.source_per_exporter {
        SourcePlan::PerExporter
    } else if cli.from_ip.is_empty() {
        SourcePlan::Kernel
    } else {
        SourcePlan::Addresses(cli.from_ip.clone())
    };
    let mut replayer = Replayer::new(target, plan, cli.pps)?;
    for round in 0..cli.loops.get() {
        for path in &cli.files {
            let skipped = replay_file(&mut replayer, path)?;
            if round == 0 && skipped.total() > 0 {
                eprintln!("{}: skipped {}", path.display(), describe(&skipped));
            }
        }
    }
    Ok(replayer.reports())
}

/// Sends the datagrams of one capture, returning what it skipped.
fn replay_file(replayer: &mut Replayer, path: &Path) -> Result<SkipCounts, ReplayError> {
    let capture_error = |source| ReplayError::Capture { path: path.to_path_buf(), source };
    let mut reader = DatagramReader::open(path).map_err(capture_error)?;
    for datagram in reader.by_ref() {
        replayer.send(&datagram.map_err(capture_error)?)?;
    }
    Ok(reader.skipped())
}

/// The first address `target` resolves to.
fn resolve(target: &str) -> Result<SocketAddr, ReplayError> {
    let resolve_error =
        |reason: String| ReplayError::Resolve { target: target.to_string(), reason };
    let mut addrs = target.to_socket_addrs().map_err(|e| resolve_error(e.to_string()))?;
    addrs.next().ok_or_else(|| resolve_error("no address".to_string()))
}

/// The non-zero skip counters, as text.
fn describe(skipped: &SkipCounts) -> String {
    let counters = [
        ("not IP", skipped.not_ip),
        ("not UDP", skipped.not_udp),
        ("IP fragments", skipped.fragments),
        ("truncated", skipped.truncated),
        ("malformed", skipped.malformed),
        ("unsupported link type", skipped.unsupported_link),
    ];
    let parts: Vec<String> =
        counters.iter().filter(|(_, n)| *n > 0).map(|(what, n)| format!("{n} {what}")).collect();
    parts.join(", ")
}

/// Prints one line per source and a total line on stdout.
fn print_reports(reports: &[SourceReport]) {
    let mut out = std::io::stdout().lock();
    let (mut datagrams, mut bytes) = (0u64, 0u64);
    for r in reports {
        datagrams += r.datagrams;
        bytes += r.bytes;
        // A closed stdout at the very end is not worth failing a finished replay for.
        let _ = writeln!(
            out,
            "{} -> {}: {} datagrams, {} bytes",
            r.original, r.local, r.datagrams, r.bytes
        );
    }
    let _ = writeln!(out, "total: {datagrams} datagrams, {bytes} bytes");
}
