//! `ensure_stream` against a real nats-server: create, reconcile, refuse overlaps.

mod support;

use std::time::Duration;

use async_nats::jetstream::stream::{Config, StorageType};
use flow_publish::{
    JetStreamPublisher, PublisherError, StreamChange, StreamError, SubjectConflict,
};
use support::{NatsServer, inspector, settings};

#[tokio::test]
async fn missing_stream_is_created_with_the_configured_settings() {
    let server = NatsServer::start();
    let settings = settings(&server.url(), "events", &["flows.raw.netflow", "flows.raw.sflow"]);
    let publisher = JetStreamPublisher::connect(settings).await.expect("publisher starts");
    assert!(publisher.is_connected());

    let js = inspector(&server.url()).await;
    let mut stream = js.get_stream("events").await.expect("stream was created");
    let config = stream.info().await.expect("stream info").config.clone();
    assert_eq!(config.subjects, vec!["flows.raw.netflow", "flows.raw.sflow"]);
    assert_eq!(config.max_bytes, 256 * 1024 * 1024);
    assert_eq!(config.num_replicas, 1);
    assert_eq!(config.storage, StorageType::File);
    assert_eq!(config.duplicate_window, Duration::from_secs(60));
    assert_eq!(publisher.retry_horizon(), Duration::from_secs(59));

    let again = publisher.ensure_stream().await.expect("second ensure");
    assert_eq!(again.change, StreamChange::Unchanged);
}

#[tokio::test]
async fn existing_stream_gains_missing_subjects_and_keeps_operator_settings() {
    let server = NatsServer::start();
    let js = inspector(&server.url()).await;
    js.create_stream(Config {
        name: "events".into(),
        subjects: vec!["flows.raw.netflow".into(), "logs.>".into()],
        max_age: Duration::from_secs(3600),
        max_bytes: 8 * 1024 * 1024,
        description: Some("set by the operator".into()),
        duplicate_window: Duration::from_secs(30),
        ..Default::default()
    })
    .await
    .expect("operator creates the stream");

    let wanted = ["flows.raw.netflow", "flows.raw.sflow", "logs.syslog"];
    let publisher =
        JetStreamPublisher::connect(settings(&server.url(), "events", &wanted)).await.unwrap();
    let outcome = publisher.ensure_stream().await.expect("ensure");
    assert_eq!(outcome.change, StreamChange::Unchanged, "the first connect already updated it");
    assert_eq!(outcome.duplicate_window, Duration::from_secs(30), "operator's window is used");
    assert_eq!(publisher.retry_horizon(), Duration::from_secs(29));

    let config = js.get_stream("events").await.unwrap().info().await.unwrap().config.clone();
    assert_eq!(config.subjects, vec!["flows.raw.netflow", "logs.>", "flows.raw.sflow"]);
    assert_eq!(config.max_age, Duration::from_secs(3600));
    assert_eq!(config.max_bytes, 8 * 1024 * 1024);
    assert_eq!(config.description.as_deref(), Some("set by the operator"));
}

#[tokio::test]
async fn ensure_reports_the_subjects_it_added() {
    let server = NatsServer::start();
    let js = inspector(&server.url()).await;
    let publisher = JetStreamPublisher::connect(settings(&server.url(), "events", &["a.one"]))
        .await
        .expect("publisher starts");
    let mut config = js.get_stream("events").await.unwrap().info().await.unwrap().config.clone();
    config.subjects = vec!["b.two".into()];
    js.update_stream(&config).await.expect("operator edits the subjects");

    let outcome = publisher.ensure_stream().await.expect("ensure");
    assert_eq!(
        outcome.change,
        StreamChange::Updated { added_subjects: vec!["a.one".into()], replicas: None }
    );
}

#[tokio::test]
async fn subject_owned_by_another_stream_is_an_error_naming_both() {
    let server = NatsServer::start();
    let js = inspector(&server.url()).await;
    js.create_stream(Config {
        name: "flows".into(),
        subjects: vec!["flows.raw.netflow".into()],
        ..Default::default()
    })
    .await
    .expect("an old stream owns the subject");

    let settings = settings(&server.url(), "events", &["flows.raw.netflow", "flows.raw.sflow"]);
    let err = JetStreamPublisher::connect(settings).await.expect_err("overlap must fail");
    let text = err.to_string();
    match err {
        PublisherError::Stream(StreamError::SubjectOwnedByOtherStream { stream, conflicts }) => {
            assert_eq!(stream, "events");
            assert_eq!(
                conflicts,
                vec![SubjectConflict {
                    subject: "flows.raw.netflow".into(),
                    owner: "flows".into()
                }]
            );
        }
        other => panic!("wrong error: {other:?}"),
    }
    assert!(text.contains("stream events"), "{text}");
    assert!(text.contains("flows.raw.netflow is already captured by stream flows"), "{text}");
}

#[tokio::test]
async fn overlap_on_update_names_the_owner_too() {
    let server = NatsServer::start();
    let js = inspector(&server.url()).await;
    for (name, subject) in [("events", "flows.raw.sflow"), ("legacy", "flows.*.netflow")] {
        js.create_stream(Config {
            name: name.into(),
            subjects: vec![subject.into()],
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    }
    let settings = settings(&server.url(), "events", &["flows.raw.sflow", "flows.raw.netflow"]);
    let err = JetStreamPublisher::connect(settings).await.expect_err("overlap must fail");
    let text = err.to_string();
    assert!(text.contains("flows.raw.netflow is already captured by stream legacy"), "{text}");
}

#[tokio::test]
async fn a_server_without_jetstream_is_a_clear_start_up_error_after_a_warm_up() {
    let server = NatsServer::start_without_jetstream();
    let settings = settings(&server.url(), "events", &["flows.raw.netflow"]);
    let error = match JetStreamPublisher::connect(settings).await {
        Ok(_) => panic!("a server without JetStream cannot host the stream"),
        Err(error) => error,
    };
    assert!(
        matches!(&error, PublisherError::Stream(StreamError::JetStreamUnavailable { .. })),
        "{error:?}"
    );
    assert!(error.to_string().contains("JetStream enabled (-js)"), "{error}");
}
