//! The comparison point of `bench/run.sh`: the smallest useful async-nats JetStream
//! publisher, against a server that is already running. It sends `--count` messages of
//! `--size` bytes to one subject, each with its own `Nats-Msg-Id` (as the collector
//! does), keeping up to `--window` acks in flight, and counts the acks. No batching
//! logic, retries, buffering or accounting: what the client and server can do at best.
//! Prints one line: `minimal_publisher messages=… acked=… secs=… acked_per_sec=…`.
//!
//! ```text
//! cargo run --release -p flow-publish --example minimal_publisher -- --server nats://127.0.0.1:4222
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::ContextBuilder;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config, StorageType};
use bytes::Bytes;
use clap::Parser;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

/// Publishes messages with acks in flight and prints the acked rate.
#[derive(Debug, Parser)]
struct Args {
    /// NATS server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    server: String,
    /// Stream to create (if missing) for the subject.
    #[arg(long, default_value = "minimal")]
    stream: String,
    #[arg(long, default_value = "minimal.flows")]
    subject: String,
    /// Messages to publish.
    #[arg(long, default_value = "200000")]
    count: u64,
    /// Payload bytes per message (an encoded FlowMessage is about 100–200).
    #[arg(long, default_value = "150")]
    size: usize,
    /// Acks in flight at most (the collector's default `max_in_flight` is 4096).
    #[arg(long, default_value = "4096")]
    window: usize,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("connect: {0}")]
    Connect(#[from] async_nats::ConnectError),
    #[error("stream: {0}")]
    Stream(#[from] async_nats::jetstream::context::CreateStreamError),
    #[error("publish: {0}")]
    Publish(#[from] async_nats::jetstream::context::PublishError),
}

async fn run(args: &Args) -> Result<(u64, Duration), Error> {
    let client = async_nats::connect(&args.server).await?;
    let js = ContextBuilder::new()
        .max_ack_inflight(args.window.max(1))
        .backpressure_on_inflight(true)
        .build(client);
    js.get_or_create_stream(Config {
        name: args.stream.clone(),
        subjects: vec![args.subject.clone()],
        storage: StorageType::File,
        duplicate_window: Duration::from_secs(120),
        max_bytes: 1 << 30,
        ..Config::default()
    })
    .await?;
    let payload = Bytes::from(vec![0x5A; args.size]);
    let prefix = nuid::next().to_string();
    let mut acks = FuturesUnordered::new();
    let mut acked = 0u64;
    let started = Instant::now();
    for i in 0..args.count {
        let message =
            PublishMessage::build().payload(payload.clone()).message_id(format!("{prefix}-{i}"));
        let ack = js.send_publish(args.subject.clone(), message).await?;
        acks.push(ack.into_future());
        while acks.len() >= args.window.max(1) {
            if let Some(result) = acks.next().await {
                acked += u64::from(result.is_ok());
            }
        }
    }
    while let Some(result) = acks.next().await {
        acked += u64::from(result.is_ok());
    }
    Ok((acked, started.elapsed()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok((acked, elapsed)) => {
            let secs = elapsed.as_secs_f64();
            println!(
                "minimal_publisher messages={} acked={acked} secs={secs:.3} acked_per_sec={:.0}",
                args.count,
                acked as f64 / secs.max(1e-9)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("minimal_publisher: {e}");
            ExitCode::FAILURE
        }
    }
}
