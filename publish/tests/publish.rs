//! Publishing against a real nats-server: counts, dedupe, stream repair, refusals.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::stream::{Config, DiscardPolicy};
use bytes::Bytes;
use flow_publish::{GiveUpReason, JetStreamPublisher, MessageIdGenerator, OutboundMessage};
use support::{NatsServer, assert_exactly_once, inspector, messages, settings};

fn payloads(messages: &[OutboundMessage]) -> Vec<Bytes> {
    messages.iter().map(|m| m.payload.clone()).collect()
}

#[tokio::test]
async fn every_message_of_a_batch_is_stored_once_with_its_msg_id() {
    let server = NatsServer::start();
    let publisher =
        JetStreamPublisher::connect(settings(&server.url(), "events", &["flows.raw.netflow"]))
            .await
            .expect("publisher starts");
    let batch = messages("n", 2500);
    let outcome = publisher.publish_batch("flows.raw.netflow", batch.clone()).await;
    assert_eq!(outcome.acked, 2500);
    assert_eq!(outcome.duplicates, 0);
    assert_eq!(outcome.given_up_total(), 0);

    let js = inspector(&server.url()).await;
    let mut stream = js.get_stream("events").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2500);
    assert_exactly_once(&js, "events", &payloads(&batch)).await;
    let first = stream.get_raw_message(1).await.expect("first message");
    assert_eq!(first.subject.as_str(), "flows.raw.netflow");
    let id = first.headers.get(NATS_MESSAGE_ID).expect("Nats-Msg-Id header");
    assert_eq!(id.as_str(), "n-id-0");
}

#[tokio::test]
async fn the_same_msg_id_twice_is_stored_once() {
    let server = NatsServer::start();
    let publisher =
        JetStreamPublisher::connect(settings(&server.url(), "events", &["flows.raw.sflow"]))
            .await
            .expect("publisher starts");
    let message = OutboundMessage { msg_id: "same".into(), payload: Bytes::from_static(b"x") };
    let first = publisher.publish_batch("flows.raw.sflow", vec![message.clone()]).await;
    let second = publisher.publish_batch("flows.raw.sflow", vec![message.clone(), message]).await;
    assert_eq!((first.acked, first.duplicates), (1, 0));
    assert_eq!((second.acked, second.duplicates), (0, 2));

    let js = inspector(&server.url()).await;
    let info = js.get_stream("events").await.unwrap().info().await.unwrap().clone();
    assert_eq!(info.state.messages, 1);
}

#[tokio::test]
async fn generated_ids_keep_two_processes_apart() {
    let server = NatsServer::start();
    let publisher = JetStreamPublisher::connect(settings(&server.url(), "events", &["f.a"]))
        .await
        .expect("publisher starts");
    // Two "runs" of a collector: each counter starts at 0, the prefixes differ.
    for _run in 0..2 {
        let ids = MessageIdGenerator::new();
        let batch = (0..10)
            .map(|i| OutboundMessage { msg_id: ids.next_id(), payload: Bytes::from(vec![i]) })
            .collect();
        let outcome = publisher.publish_batch("f.a", batch).await;
        assert_eq!(outcome.acked, 10, "no message taken for a duplicate of the other run");
    }
}

#[tokio::test]
async fn concurrent_batches_on_two_subjects_share_one_connection() {
    let server = NatsServer::start();
    let mut settings = settings(&server.url(), "events", &["f.netflow", "f.sflow"]);
    settings.max_in_flight = 64;
    let publisher = Arc::new(JetStreamPublisher::connect(settings).await.unwrap());
    let a = messages("a", 3000);
    let b = messages("b", 3000);
    let (ra, rb) = tokio::join!(
        publisher.publish_batch("f.netflow", a.clone()),
        publisher.publish_batch("f.sflow", b.clone())
    );
    assert_eq!((ra.acked, rb.acked), (3000, 3000));
    let js = inspector(&server.url()).await;
    assert_exactly_once(&js, "events", &[payloads(&a), payloads(&b)].concat()).await;
}

#[tokio::test]
async fn a_deleted_stream_is_recreated_and_the_batch_delivered() {
    let server = NatsServer::start();
    let publisher = JetStreamPublisher::connect(settings(&server.url(), "events", &["f.x"]))
        .await
        .expect("publisher starts");
    let js = inspector(&server.url()).await;
    js.delete_stream("events").await.expect("operator deletes the stream");

    let batch = messages("r", 200);
    let outcome = publisher.publish_batch("f.x", batch.clone()).await;
    assert_eq!(outcome.delivered(), 200);
    assert_eq!(outcome.given_up_total(), 0);
    assert!(outcome.retries >= 200, "every message was first refused: {outcome:?}");
    assert_exactly_once(&js, "events", &payloads(&batch)).await;
}

#[tokio::test]
async fn oversized_messages_are_given_up_as_max_payload() {
    let server = NatsServer::start();
    let publisher = JetStreamPublisher::connect(settings(&server.url(), "events", &["f.big"]))
        .await
        .expect("publisher starts");
    let big =
        OutboundMessage { msg_id: "big".into(), payload: Bytes::from(vec![0u8; 2 * 1024 * 1024]) };
    let small = OutboundMessage { msg_id: "small".into(), payload: Bytes::from_static(b"ok") };
    let outcome = publisher.publish_batch("f.big", vec![big, small]).await;
    assert_eq!(outcome.acked, 1);
    assert_eq!(outcome.retries, 0, "a too-large message is not retried");
    assert_eq!(outcome.given_up.get(&GiveUpReason::MaxPayload), Some(&1));
}

#[tokio::test]
async fn a_full_stream_with_discard_new_is_counted_as_stream_full() {
    let server = NatsServer::start();
    let js = inspector(&server.url()).await;
    js.create_stream(Config {
        name: "events".into(),
        subjects: vec!["f.full".into()],
        max_messages: 5,
        discard: DiscardPolicy::New,
        duplicate_window: Duration::from_millis(2500),
        ..Default::default()
    })
    .await
    .expect("operator's bounded stream");
    let publisher = JetStreamPublisher::connect(settings(&server.url(), "events", &["f.full"]))
        .await
        .expect("publisher starts");
    assert_eq!(publisher.retry_horizon(), Duration::from_millis(1500));

    let outcome = publisher.publish_batch("f.full", messages("full", 8)).await;
    assert_eq!(outcome.acked, 5);
    assert_eq!(outcome.given_up.get(&GiveUpReason::StreamFull), Some(&3), "{outcome:?}");
    assert!(outcome.retries > 0, "a full stream is retried inside the window");
}

#[tokio::test]
async fn an_invalid_subject_is_rejected_without_retries() {
    let server = NatsServer::start();
    let publisher = JetStreamPublisher::connect(settings(&server.url(), "events", &["f.ok"]))
        .await
        .expect("publisher starts");
    let outcome = publisher.publish_batch("f bad subject", messages("bad", 3)).await;
    assert_eq!(outcome.retries, 0);
    assert_eq!(outcome.given_up.get(&GiveUpReason::Rejected), Some(&3), "{outcome:?}");
}
