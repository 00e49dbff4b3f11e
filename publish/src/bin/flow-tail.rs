//! `flow-tail`: the operator's "is anything arriving?" tool. Reads a JetStream stream with
//! an ephemeral ordered consumer (nothing is acknowledged or removed) and prints every
//! `FlowMessage` as one JSON line.
//!
//! ```text
//! flow-tail --server nats://nats:4222 --subject flows.raw.netflow --count 10
//! ```

use std::io::Write;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use async_nats::jetstream::Message;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use clap::{Parser, ValueEnum};
use flow_publish::{
    Backoff, ClientCertificate, ConnectError, JetStreamConnection, JetStreamSettings,
    StreamSettings, TlsSettings,
};
use futures_util::StreamExt;
use prost::Message as _;
use thiserror::Error;

#[derive(Debug, Parser)]
#[command(
    name = "flow-tail",
    version,
    about = "Print the FlowMessages stored in a JetStream stream as JSON lines"
)]
struct Args {
    /// NATS server URL(s), comma-separated (nats:// or tls://).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    server: String,
    /// NATS .creds file.
    #[arg(long)]
    creds: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS; needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mTLS; needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA bundle (PEM) that signs the server's certificate.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Stream to read.
    #[arg(long, default_value = "events")]
    stream: String,
    /// Only messages on this subject (wildcards allowed); default: the whole stream.
    #[arg(long)]
    subject: Option<String>,
    /// Exit after printing this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Where to start: new messages only, the whole stream, or its last message.
    #[arg(long, value_enum, default_value_t = Start::New)]
    from: Start,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Start {
    New,
    All,
    Last,
}

#[derive(Debug, Error)]
enum TailError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("stream {stream} not found on {servers}: {detail}")]
    Stream { stream: String, servers: String, detail: String },
    #[error("cannot read stream {stream}: {detail}")]
    Consumer { stream: String, detail: String },
    #[error("writing to standard output failed: {0}")]
    Output(#[from] std::io::Error),
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logs();
    match tail(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(TailError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flow-tail: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Connection warnings go to stderr so stdout stays pure JSON lines.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn settings(args: &Args) -> JetStreamSettings {
    let mut settings =
        JetStreamSettings::new(args.server.clone(), StreamSettings::new(&args.stream, Vec::new()));
    settings.client_name = "flow-tail".into();
    settings.creds_file = args.creds.clone();
    settings.max_connect_attempts = NonZeroU32::new(3);
    settings.connect_backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
    let client = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(ClientCertificate { cert_file: cert.clone(), key_file: key.clone() })
        }
        _ => None,
    };
    if client.is_some() || args.tls_ca.is_some() {
        settings.tls = Some(TlsSettings { ca_file: args.tls_ca.clone(), client });
    }
    settings
}

async fn tail(args: Args) -> Result<(), TailError> {
    let connection = JetStreamConnection::connect(&settings(&args)).await?;
    let stream =
        connection.context().get_stream(&args.stream).await.map_err(|e| TailError::Stream {
            stream: args.stream.clone(),
            servers: connection.servers().to_string(),
            detail: e.to_string(),
        })?;
    let consumer_error = |e: &dyn std::fmt::Display| TailError::Consumer {
        stream: args.stream.clone(),
        detail: e.to_string(),
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: args.subject.clone().unwrap_or_default(),
            deliver_policy: match args.from {
                Start::New => DeliverPolicy::New,
                Start::All => DeliverPolicy::All,
                Start::Last => DeliverPolicy::Last,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| consumer_error(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| consumer_error(&e))?;

    let mut printed: u64 = 0;
    let mut stdout = std::io::stdout().lock();
    while args.count.is_none_or(|count| printed < count) {
        let next = tokio::select! {
            next = messages.next() => next,
            _ = tokio::signal::ctrl_c() => break,
        };
        match next {
            Some(Ok(message)) => {
                print_flow(&mut stdout, &message)?;
                printed += 1;
            }
            Some(Err(e)) => tracing::warn!(error = %e, "reading the stream failed; continuing"),
            None => break,
        }
    }
    Ok(())
}

/// One JSON line per FlowMessage; a payload that is not one is reported on stderr.
fn print_flow(out: &mut impl Write, message: &Message) -> Result<(), TailError> {
    match flowpb::FlowMessage::decode(message.payload.clone()) {
        Ok(flow) => {
            writeln!(out, "{}", flowpb::json::to_json_line(&flow))?;
            out.flush()?;
        }
        Err(e) => {
            let sequence = message.info().map(|i| i.stream_sequence).unwrap_or_default();
            eprintln!(
                "flow-tail: message {sequence} on {} is not a FlowMessage ({} bytes): {e}",
                message.subject,
                message.payload.len()
            );
        }
    }
    Ok(())
}
