//! The JetStream actor tests' rig: a real nats-server (publish/tests/support), the real
//! supervision tree with the echo decoder double and the real JetStream sink, and a
//! reader of what the stream holds.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use flow_actors::settings::JetStreamSinkSettings;
use flow_actors::sink::{ConfiguredSinks, JetStreamLink, JetStreamSettings};
use flow_actors::{Collector, SinkSettings};
use flowpb::FlowMessage;
use prost::Message;

use crate::common::{echo_sessions, listener, settings};
use crate::nats;

pub const STREAM: &str = "events";
pub const SUBJECT: &str = "flows.raw.netflow";

/// Logs of the crates under test, shown for failing tests (`RUST_LOG` to change them).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("flow_actors=info,flow_publish=info")
    });
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// Transport settings with short timeouts and backoffs (publish timeout 1 s, duplicate
/// window 60 s), retrying the first connect forever.
pub fn transport(url: &str) -> JetStreamSettings {
    nats::settings(url, STREAM, &[SUBJECT])
}

/// How a test collector publishes.
#[derive(Debug, Clone, Copy)]
pub struct Publishing {
    pub batch_size: usize,
    pub buffer_flows: usize,
    pub batches_in_flight: usize,
}

impl Default for Publishing {
    fn default() -> Self {
        Self { batch_size: 50, buffer_flows: 100_000, batches_in_flight: 4 }
    }
}

/// A collector with one listener on 127.0.0.1 whose flows go to JetStream through `link`.
pub async fn start_collector(link: &JetStreamLink, publishing: Publishing) -> Collector {
    init_logs();
    let mut settings = settings(vec![listener(SUBJECT)]);
    settings.batch_size = publishing.batch_size;
    settings.sink = SinkSettings::JetStream(JetStreamSinkSettings {
        link: link.clone(),
        buffer_flows: publishing.buffer_flows,
        batches_in_flight: publishing.batches_in_flight,
        framing: Default::default(),
        partition_links: Default::default(),
    });
    let sinks = ConfiguredSinks::new(settings.sink.clone());
    Collector::start_with(settings, echo_sessions(Arc::default()), &sinks)
        .await
        .expect("collector starts")
}

/// Connects `link` in the background, as the binary does once its listeners are bound.
pub fn connect_in_background(link: &JetStreamLink, url: &str) -> tokio::task::JoinHandle<()> {
    let link = link.clone();
    let settings = transport(url);
    tokio::spawn(async move {
        if let Err(error) = link.connect(settings).await {
            panic!("JetStream connect failed: {error}");
        }
    })
}

/// One flow of the echo decoder: which exporter sent it and its sequence number.
pub type FlowKey = (IpAddr, u32);

fn key(flow: &FlowMessage) -> FlowKey {
    let octets: [u8; 4] = flow.sampler_address.as_slice().try_into().expect("IPv4 sampler");
    (IpAddr::from(octets), flow.sequence_num)
}

/// Every message of the stream decoded as a `FlowMessage`, with how many times the very
/// same bytes are stored.
pub async fn stored_flows(url: &str) -> Vec<(FlowMessage, usize)> {
    let js = nats::inspector(url).await;
    let payloads: HashMap<bytes::Bytes, usize> = nats::stored_payloads(&js, STREAM).await;
    payloads
        .into_iter()
        .map(|(payload, copies)| {
            let flow = FlowMessage::decode(payload).expect("every message is one FlowMessage");
            (flow, copies)
        })
        .collect()
}

/// Asserts the stream holds each expected flow exactly once and nothing else, and that
/// each stored flow carries what the decoder produced.
pub async fn assert_stream_holds_exactly(url: &str, expected: &[FlowKey]) {
    let stored = stored_flows(url).await;
    let twice: Vec<_> = stored.iter().filter(|(_, n)| *n > 1).map(|(f, _)| key(f)).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let mut counts: BTreeMap<FlowKey, usize> = BTreeMap::new();
    for (flow, _) in &stored {
        assert_eq!(flow.src_port, 1, "the echo decoder's tag");
        assert!(flow.time_received_ns > 0);
        *counts.entry(key(flow)).or_default() += 1;
    }
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "a flow stored twice under different ids: {repeated:?}");
    let missing: Vec<_> = expected.iter().filter(|k| !counts.contains_key(k)).collect();
    assert!(missing.is_empty(), "{} flows missing, e.g. {:?}", missing.len(), missing.first());
    assert_eq!(counts.len(), expected.len(), "the stream holds flows never sent");
}

/// Sends datagrams `seqs` (tag 1) from 127.0.0.`from` to `to`, a few at a time so the
/// loopback socket never overflows.
pub async fn send_paced(from: u8, to: SocketAddr, seqs: std::ops::Range<u32>) -> Vec<FlowKey> {
    let socket = crate::common::sender(from).await;
    let mut sent = Vec::new();
    for seq in seqs {
        socket.send_to(&crate::common::payload(1, seq), to).await.expect("send");
        sent.push((crate::common::ip(from), seq));
        if seq % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    sent
}

/// Waits (generously: not a speed test) until the collector has published `n` flows.
pub async fn wait_published(collector: &Collector, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let counters = collector.counters();
        if counters.flows_published() >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {n} flows published: {counters:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
