//! `flow-tail` prints what the stream holds, as the JSON of each FlowMessage.

mod support;

use std::process::Command;

use bytes::Bytes;
use flow_publish::{JetStreamPublisher, OutboundMessage};
use flowpb::{FlowMessage, FlowType};
use prost::Message;
use support::{NatsServer, settings};

fn flow(port: u32) -> FlowMessage {
    FlowMessage {
        r#type: FlowType::NetflowV9 as i32,
        src_addr: vec![10, 0, 0, 1],
        dst_addr: vec![192, 168, 1, 7],
        src_port: port,
        dst_port: 443,
        proto: 6,
        bytes: 1500,
        packets: 3,
        ..Default::default()
    }
}

#[tokio::test]
async fn tail_prints_the_json_of_each_flow_on_the_subject() {
    let server = NatsServer::start();
    let publisher = JetStreamPublisher::connect(settings(
        &server.url(),
        "events",
        &["flows.raw.netflow", "flows.raw.sflow"],
    ))
    .await
    .expect("publisher starts");
    let flows = [flow(1111), flow(2222)];
    let batch = flows
        .iter()
        .enumerate()
        .map(|(i, f)| OutboundMessage {
            msg_id: format!("t-{i}"),
            payload: f.encode_to_vec().into(),
        })
        .collect();
    assert_eq!(publisher.publish_batch("flows.raw.netflow", batch).await.acked, 2);
    let other = OutboundMessage { msg_id: "s".into(), payload: Bytes::from_static(b"\x08\x01") };
    assert_eq!(publisher.publish_batch("flows.raw.sflow", vec![other]).await.acked, 1);

    let url = server.url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_flow-tail"))
            .args(["--server", &url, "--stream", "events", "--subject", "flows.raw.netflow"])
            .args(["--from", "all", "--count", "2"])
            .output()
    })
    .await
    .expect("join")
    .expect("run flow-tail");
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    let lines: Vec<&str> = stdout.lines().collect();
    let expected: Vec<String> = flows.iter().map(flowpb::json::to_json_line).collect();
    assert_eq!(lines, expected);
    assert!(lines[0].contains("\"src_port\":1111"), "{}", lines[0]);
}

#[tokio::test]
async fn tail_names_a_missing_stream() {
    let server = NatsServer::start();
    let url = server.url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_flow-tail"))
            .args(["--server", &url, "--stream", "nope", "--count", "1"])
            .output()
    })
    .await
    .expect("join")
    .expect("run flow-tail");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stream nope not found on nats://127.0.0.1:"), "{stderr}");
}
