//! Server failures during publishing: every message ends up stored exactly once.

mod support;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use flow_publish::{
    BatchOutcome, ConnectError, ConnectionState, JetStreamPublisher, PublisherError,
};
use support::{NatsServer, assert_exactly_once, free_port, inspector, messages, settings};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Publishes batches of `size` until told to stop, reporting each finished batch.
struct Producer {
    stop: Arc<AtomicBool>,
    done: mpsc::UnboundedReceiver<usize>,
    task: JoinHandle<(Vec<Bytes>, Vec<BatchOutcome>)>,
}

impl Producer {
    fn start(publisher: Arc<JetStreamPublisher>, subject: &'static str, size: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, done) = mpsc::unbounded_channel();
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let (mut sent, mut outcomes) = (Vec::new(), Vec::new());
            let mut batch_no = 0;
            while !flag.load(Ordering::Relaxed) {
                let batch = messages(&format!("b{batch_no}"), size);
                sent.extend(batch.iter().map(|m| m.payload.clone()));
                outcomes.push(publisher.publish_batch(subject, batch).await);
                let _ = tx.send(batch_no);
                batch_no += 1;
            }
            (sent, outcomes)
        });
        Producer { stop, done, task }
    }

    async fn wait_batches(&mut self, count: usize) {
        for _ in 0..count {
            tokio::time::timeout(Duration::from_secs(60), self.done.recv())
                .await
                .expect("a batch finishes within a minute")
                .expect("producer alive");
        }
    }

    async fn finish(self) -> (Vec<Bytes>, Vec<BatchOutcome>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("producer task")
    }
}

fn totals(outcomes: &[BatchOutcome]) -> (u64, u64, u64, u64) {
    outcomes.iter().fold((0, 0, 0, 0), |(d, dup, r, g), o| {
        (d + o.delivered(), dup + o.duplicates, r + o.retries, g + o.given_up_total())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted_mid_batch_loses_and_duplicates_nothing() {
    let mut server = NatsServer::start();
    let publisher = Arc::new(
        JetStreamPublisher::connect(settings(&server.url(), "events", &["f.kill"]))
            .await
            .expect("publisher starts"),
    );
    let mut producer = Producer::start(Arc::clone(&publisher), "f.kill", 2000);
    producer.wait_batches(2).await;
    server.kill();
    // Down for longer than the ack timeout: the batch in progress cannot ride it out on
    // the client's buffer alone, it has to be re-sent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.restart();
    producer.wait_batches(3).await;
    let (sent, outcomes) = producer.finish().await;

    let (delivered, duplicates, retries, given_up) = totals(&outcomes);
    eprintln!("delivered {delivered} duplicates {duplicates} retries {retries}");
    assert_eq!(given_up, 0, "{outcomes:?}");
    assert_eq!(delivered, sent.len() as u64);
    assert!(retries > 0, "the outage outlasted the ack timeout: {outcomes:?}");
    let js = inspector(&server.url()).await;
    assert_exactly_once(&js, "events", &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_frozen_past_the_ack_timeout_is_deduplicated() {
    let server = NatsServer::start();
    let publisher = Arc::new(
        JetStreamPublisher::connect(settings(&server.url(), "events", &["f.stop"]))
            .await
            .expect("publisher starts"),
    );
    let mut producer = Producer::start(Arc::clone(&publisher), "f.stop", 2000);
    producer.wait_batches(2).await;
    server.stop();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.resume();
    producer.wait_batches(3).await;
    let (sent, outcomes) = producer.finish().await;

    let (delivered, duplicates, retries, given_up) = totals(&outcomes);
    eprintln!("delivered {delivered} duplicates {duplicates} retries {retries}");
    assert_eq!(given_up, 0, "{outcomes:?}");
    assert_eq!(delivered, sent.len() as u64);
    assert!(retries > 0, "acks timed out while the server was frozen: {outcomes:?}");
    assert!(duplicates > 0, "re-sends of stored messages were recognised: {outcomes:?}");
    let js = inspector(&server.url()).await;
    assert_exactly_once(&js, "events", &sent).await;
}

#[tokio::test]
async fn a_server_restarted_with_an_empty_store_gets_the_stream_back() {
    let mut server = NatsServer::start();
    let publisher = JetStreamPublisher::connect(settings(&server.url(), "events", &["f.wipe"]))
        .await
        .expect("publisher starts");
    assert_eq!(publisher.publish_batch("f.wipe", messages("before", 5)).await.acked, 5);

    server.kill();
    std::fs::remove_dir_all(server.path("store")).expect("wipe the store");
    server.restart();
    let batch = messages("after", 300);
    let outcome = publisher.publish_batch("f.wipe", batch.clone()).await;
    assert_eq!(outcome.given_up_total(), 0, "{outcome:?}");
    assert_eq!(outcome.delivered(), 300);
    let js = inspector(&server.url()).await;
    let expected: Vec<Bytes> = batch.iter().map(|m| m.payload.clone()).collect();
    assert_exactly_once(&js, "events", &expected).await;
}

#[tokio::test]
async fn connection_state_follows_the_server() {
    let mut server = NatsServer::start();
    let publisher = JetStreamPublisher::connect(settings(&server.url(), "events", &["f.state"]))
        .await
        .expect("publisher starts");
    let mut state = publisher.connection().state();
    assert!(publisher.is_connected());
    let wait = |state: &mut tokio::sync::watch::Receiver<ConnectionState>, want| {
        let mut state = state.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(15), state.wait_for(|s| *s == want))
                .await
                .expect("state change within 15 s")
                .map(|_| ())
                .expect("state channel open");
        }
    };
    wait(&mut state, ConnectionState::Connected).await;

    server.kill();
    wait(&mut state, ConnectionState::Disconnected).await;
    assert!(!publisher.is_connected());

    server.restart();
    wait(&mut state, ConnectionState::Connected).await;
    assert!(publisher.is_connected());
    let outcome = publisher.publish_batch("f.state", messages("after", 3)).await;
    assert_eq!(outcome.delivered(), 3);
}

#[tokio::test]
async fn first_connect_waits_for_a_late_server() {
    let port = free_port();
    let settings = settings(&format!("nats://127.0.0.1:{port}"), "events", &["f.late"]);
    let connecting = tokio::spawn(JetStreamPublisher::connect(settings));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!connecting.is_finished(), "still retrying while nothing listens");
    let _server = NatsServer::start_on(port, "");
    let publisher = tokio::time::timeout(Duration::from_secs(20), connecting)
        .await
        .expect("connects soon after the server starts")
        .expect("task")
        .expect("publisher starts");
    assert!(publisher.is_connected());
}

#[tokio::test]
async fn unreachable_server_is_reported_after_the_allowed_attempts() {
    let port = free_port();
    let mut settings = settings(&format!("nats://127.0.0.1:{port}"), "events", &["f.none"]);
    settings.max_connect_attempts = NonZeroU32::new(3);
    let err = JetStreamPublisher::connect(settings).await.expect_err("nothing listens");
    let text = err.to_string();
    match err {
        PublisherError::Connect(ConnectError::Unreachable { attempts, servers, .. }) => {
            assert_eq!(attempts, 3);
            assert_eq!(servers, format!("nats://127.0.0.1:{port}"));
        }
        other => panic!("wrong error: {other:?}"),
    }
    assert!(text.contains("NATS not reachable at nats://127.0.0.1:"), "{text}");
}
