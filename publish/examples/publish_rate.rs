//! Acked messages per second for 100-byte messages, with acks in flight (batches) and one
//! at a time, against a nats-server this example starts. Prints figures; asserts nothing.
//!
//! ```text
//! cargo run --release -p flow-publish --example publish_rate [-- <messages>]
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use bytes::Bytes;
use flow_publish::{JetStreamPublisher, MessageIdGenerator, OutboundMessage};
use support::{NatsServer, settings};

fn batch(ids: &MessageIdGenerator, size: usize) -> Vec<OutboundMessage> {
    (0..size)
        .map(|_| OutboundMessage { msg_id: ids.next_id(), payload: Bytes::from(vec![b'x'; 100]) })
        .collect()
}

/// Publishes `total` messages in batches of `size`; returns acked messages per second.
async fn rate(publisher: &JetStreamPublisher, subject: &str, total: usize, size: usize) -> f64 {
    let ids = MessageIdGenerator::new();
    let started = Instant::now();
    let mut delivered = 0;
    for _ in 0..total / size {
        delivered += publisher.publish_batch(subject, batch(&ids, size)).await.delivered();
    }
    delivered as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let total: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let server = NatsServer::start();
    let mut settings = settings(&server.url(), "bench", &["bench.>"]);
    settings.stream.max_bytes = 768 * 1024 * 1024;
    let publisher = match JetStreamPublisher::connect(settings).await {
        Ok(publisher) => publisher,
        Err(e) => {
            // Returning (not `exit`) lets the server guard drop and stop nats-server.
            eprintln!("publish_rate: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("{total} messages of 100 bytes, nats-server on loopback, Nats-Msg-Id on each");
    for size in [100, 1000, 10_000].into_iter().filter(|size| *size <= total) {
        let per_second = rate(&publisher, "bench.batch", total, size).await;
        println!("acks in flight, batches of {size:>6}: {per_second:>10.0} acked msg/s");
    }
    let one_by_one = (total / 10).max(1);
    let per_second = rate(&publisher, "bench.single", one_by_one, 1).await;
    println!("one at a time ({one_by_one} messages):  {per_second:>10.0} acked msg/s");
    std::process::ExitCode::SUCCESS
}
