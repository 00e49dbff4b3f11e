//! The operator guide's log lines, captured from a real run. Its own test binary: it
//! installs the process-wide tracing subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use flow_actors::Fault;

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text().lines().filter(|l| l.contains(needle)).map(str::to_owned).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_guide_log_lines_carry_the_exporter_address() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .init();

    let recorder = Recorder::open();
    let mut s = settings(vec![listener("flows.a")]);
    s.stats_interval = Duration::from_millis(100);
    s.exporters.max_exporters = 1;
    s.exporters.idle_timeout = Duration::from_secs(2);
    let collector = start(s, &recorder, Arc::default()).await;
    let to = collector.local_addrs()[0];
    let router = sender(2).await;

    send(&router, to, 1, [0]).await; // learns template 256
    send(&router, to, TAG_MISSING_TEMPLATE, 0..5).await;
    send(&sender(3).await, to, 1, [0]).await; // refused: one exporter at most
    wait_until("the stats line is logged", || !capture.lines_with("V9 Template Cache").is_empty())
        .await;
    wait_until("the refusal is counted", || {
        listener0(&collector.counters()).dropped_exporter_cap == 1
    })
    .await;
    let learned = capture.lines_with("Template learned - ID: 256, Protocol: V9");
    assert_eq!(learned.len(), 1, "{learned:?}");
    assert!(
        learned[0].contains("INFO") && learned[0].contains("exporter=127.0.0.2:"),
        "{learned:?}"
    );
    assert!(learned[0].contains("partition=test"), "{learned:?}");

    let missing = capture.lines_with(
        "Missing template - ID: 300, Protocol: V9. Flow data received before template definition.",
    );
    assert_eq!(missing.len(), 1, "rate limit failed: {missing:?}");
    assert!(missing[0].contains("WARN") && missing[0].contains("exporter=127.0.0.2:"));
    assert_eq!(listener0(&collector.counters()).lifecycle_events.get("missing_template"), Some(&5));

    let stats = capture.lines_with("V9 Template Cache [127.0.0.2:");
    assert!(
        stats[0].contains("Templates: 15/2000, Data: 8/256, Template Hits/Misses: 1250/15"),
        "{stats:?}"
    );
    let refused = capture.lines_with("Exporter limit reached");
    assert!(refused.len() == 1 && refused[0].contains("exporter=127.0.0.3"), "{refused:?}");

    assert!(
        collector.inject_fault(Fault::Exporter { listener: 0, exporter: ip(2) }).await.unwrap()
    );
    wait_until("the restart is logged", || !capture.lines_with("actor restarted").is_empty()).await;
    let restarted = capture.lines_with("actor restarted");
    assert!(
        restarted[0].contains("WARN") && restarted[0].contains("exporter=127.0.0.2"),
        "{restarted:?}"
    );

    wait_until("the idle exporter is evicted", || {
        !capture.lines_with("exporter evicted").is_empty()
    })
    .await;
    assert!(capture.lines_with("exporter evicted")[0].contains("exporter=127.0.0.2"));

    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    assert_eq!(capture.lines_with("Collector stopped").len(), 1);
}
