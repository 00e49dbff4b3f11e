//! The publisher's queue and lanes, with a scripted sink: batching, holding back,
//! the bounded buffer, concurrency, drain, abandonment and sink panics.

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use tokio::sync::watch;

use super::*;
use crate::budget::InFlight;
use crate::counters::ListenerCounters;
use crate::sink::{Encoder, SinkFuture};

/// What every lane of a [`Scripted`] sink saw.
#[derive(Clone)]
struct Script {
    /// Batch sizes, in the order publishes finished.
    batches: Arc<std::sync::Mutex<Vec<usize>>>,
    /// Payloads of encoded batches.
    payloads: Arc<std::sync::Mutex<Vec<Bytes>>>,
    running: Arc<AtomicUsize>,
    most_running: Arc<AtomicUsize>,
    open: watch::Receiver<bool>,
    opener: Arc<watch::Sender<bool>>,
    fail: bool,
    panic: Arc<std::sync::atomic::AtomicBool>,
    /// When set, each publish first takes a permit (after the gate opens).
    permits: Option<Arc<tokio::sync::Semaphore>>,
    /// The task each publish ran in.
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::Id>>>,
}

impl Script {
    fn new(open: bool) -> Self {
        let (opener, open) = watch::channel(open);
        Self {
            batches: Arc::default(),
            payloads: Arc::default(),
            running: Arc::default(),
            most_running: Arc::default(),
            open,
            opener: Arc::new(opener),
            fail: false,
            panic: Arc::default(),
            permits: None,
            tasks: Arc::default(),
        }
    }

    fn distinct_tasks(&self) -> usize {
        self.tasks.lock().unwrap().iter().collect::<std::collections::HashSet<_>>().len()
    }

    fn release(&self) {
        self.opener.send_replace(true);
    }

    fn batches(&self) -> Vec<usize> {
        self.batches.lock().unwrap().clone()
    }

    fn running(&self) -> usize {
        self.running.load(AtomicOrdering::SeqCst)
    }
}

/// A sink following a [`Script`]: waits until the script is open, fails or panics when
/// told, and forks when `buffering` is set.
struct Scripted {
    script: Script,
    buffering: Option<Buffering>,
    encoder: Option<Encoder>,
}

impl Scripted {
    async fn run(&mut self, size: usize, payloads: Vec<Bytes>) -> Result<Delivery, SinkError> {
        let now = self.script.running.fetch_add(1, AtomicOrdering::SeqCst) + 1;
        self.script.most_running.fetch_max(now, AtomicOrdering::SeqCst);
        let mut open = self.script.open.clone();
        let opened = open.wait_for(|open| *open).await.is_ok();
        if let Some(permits) = &self.script.permits {
            permits.acquire().await.expect("permits stay open").forget();
        }
        self.script.tasks.lock().unwrap().extend(tokio::task::try_id());
        self.script.running.fetch_sub(1, AtomicOrdering::SeqCst);
        if self.script.panic.swap(false, AtomicOrdering::SeqCst) {
            panic!("scripted sink panic");
        }
        if self.script.fail || !opened {
            return Err(SinkError::Rejected("scripted".into()));
        }
        self.script.batches.lock().unwrap().push(size);
        self.script.payloads.lock().unwrap().extend(payloads);
        Ok(Delivery::all(size))
    }
}

impl FlowSink for Scripted {
    fn publish<'a>(&'a mut self, flows: &'a [FlowMessage]) -> SinkFuture<'a, Delivery> {
        Box::pin(self.run(flows.len(), Vec::new()))
    }

    fn publish_encoded(&mut self, payloads: Vec<Bytes>) -> SinkFuture<'_, Delivery> {
        Box::pin(async move { self.run(payloads.len(), payloads).await })
    }

    fn buffering(&self) -> Option<Buffering> {
        self.buffering
    }

    fn encoding(&self) -> Option<Encoding> {
        self.encoder.map(|encoder| Encoding { encoder, identity: IdentityFields::Appended })
    }

    fn fork(&self) -> Option<Box<dyn FlowSink>> {
        self.buffering.map(|buffering| {
            let (script, encoder) = (self.script.clone(), self.encoder);
            Box::new(Scripted { script, buffering: Some(buffering), encoder }) as Box<dyn FlowSink>
        })
    }
}

/// One-byte payloads: the flow's source port.
fn port_bytes(flows: &[FlowMessage], _shared: &[u8]) -> Vec<Bytes> {
    flows.iter().map(|f| Bytes::from(vec![u8::try_from(f.src_port).unwrap_or(0)])).collect()
}

fn slot(batch_size: usize, script: &Script, buffering: Option<Buffering>) -> Arc<PublisherSlot> {
    let sink = Scripted { script: script.clone(), buffering, encoder: None };
    PublisherSlot::new(("flows.test".into(), "default".into()), 1, batch_size, Box::new(sink))
}

/// A listener budget for the batches a test offers.
struct Budget {
    listener: Arc<ListenerCounters>,
    budget: Arc<InFlight>,
}

impl Budget {
    fn new() -> Self {
        let listener = Arc::new(ListenerCounters::default());
        Self { budget: InFlight::new(1_000_000, Arc::clone(&listener)), listener }
    }

    /// A batch of flows with ports `ports`, holding one budget unit.
    fn batch(&self, slot: &PublisherSlot, ports: std::ops::Range<u32>) -> FlowBatch {
        assert!(self.budget.try_acquire());
        let mut flows = FlowBuffer::new();
        ports.for_each(|port| flows.next_slot().src_port = port);
        let credit = Credit::adopt(Arc::clone(&self.budget), 1);
        slot.batch_of(&mut flows, &unnamed_exporter(), credit)
    }

    fn in_flight(&self) -> u64 {
        self.listener.snapshot().datagrams_in_flight
    }
}

/// A slot of `batch_size` 2 on an inline sink that holds the first batch it gets, the
/// flows `ports`, until `script.release()`; with that batch in the sink.
async fn inline_with_a_batch_in_the_sink(
    ports: std::ops::Range<u32>,
) -> (Script, Arc<PublisherSlot>, Budget) {
    let script = Script::new(false);
    let slot = slot(2, &script, None);
    let budget = Budget::new();
    slot.offer(budget.batch(&slot, ports));
    wait_until("the first batch is in the sink", || script.running() == 1).await;
    (script, slot, budget)
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn buffered(max_flows: usize, lanes: usize) -> Option<Buffering> {
    Some(Buffering { max_flows, max_batches_in_flight: lanes })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_batches_go_at_once_and_the_rest_on_linger() {
    let script = Script::new(true);
    let slot = slot(4, &script, None);
    let budget = Budget::new();
    for i in 0..10 {
        slot.offer(budget.batch(&slot, i..i + 1));
        wait_until("the sink keeps up", || slot.queue().in_flight.is_empty()).await;
    }
    assert_eq!(script.batches(), vec![4, 4]);
    assert!(slot.needs_linger());
    slot.linger();
    wait_until("the rest is published", || slot.counters().snapshot().flows_published == 10).await;
    assert_eq!(script.batches(), vec![4, 4, 2]);
    assert!(!slot.needs_linger());
    let s = slot.counters().snapshot();
    assert_eq!((s.flows_published, s.batches_published), (10, 3));
    assert_eq!(budget.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_sink_holds_flows_back_with_their_budget() {
    let (script, slot, budget) = inline_with_a_batch_in_the_sink(0..2).await;
    for i in 1..=3 {
        slot.offer(budget.batch(&slot, i * 10..i * 10 + 1));
    }
    // One batch in flight is all an inline sink gets: the rest keeps its budget.
    assert_eq!(slot.queue().held.len(), 3);
    assert_eq!(budget.in_flight(), 3);
    script.release();
    wait_until("the full batches are published", || {
        slot.counters().snapshot().flows_published == 4
    })
    .await;
    assert!(slot.needs_linger(), "the last flow waits for its batch to fill");
    slot.drain().await;
    assert_eq!(script.batches(), vec![2, 2, 1]);
    assert_eq!(budget.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_sink_publishes_a_hand_off_larger_than_a_batch_whole() {
    let (script, slot, budget) = inline_with_a_batch_in_the_sink(0..2).await;
    slot.offer(budget.batch(&slot, 10..15));
    slot.offer(budget.batch(&slot, 20..21));
    script.release();
    slot.drain().await;
    // The five flows went as one batch, not as 2 + 2 + 1.
    assert_eq!(script.batches(), vec![2, 5, 1]);
    assert_eq!(slot.counters().snapshot().flows_published, 8);
    assert_eq!(budget.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_sink_drops_what_it_cannot_hold_back_and_gives_its_budget_back() {
    let (script, slot, budget) = inline_with_a_batch_in_the_sink(0..2).await;
    slot.queue().max_held = 5;
    for i in 1..=3 {
        slot.offer(budget.batch(&slot, i * 10..i * 10 + 2));
    }
    slot.offer(budget.batch(&slot, 40..41));
    // Held back: 2 + 2; the third batch would make 6 of at most 5; the last one fits.
    let counters = slot.counters().snapshot();
    assert_eq!(counters.flows_dropped.get(BUFFER_FULL), Some(&2));
    let held = { slot.queue().held_flows };
    assert_eq!((slot.queue().held.len(), held), (3, 5));
    assert_eq!(budget.in_flight(), 3, "the dropped batch gave its budget back");
    script.release();
    slot.drain().await;
    assert_eq!(slot.counters().snapshot().flows_published, 7);
    assert_eq!(budget.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_newest_and_gives_the_budget_back() {
    let script = Script::new(false);
    let slot = slot(3, &script, buffered(5, 1));
    let budget = Budget::new();
    for i in 0..4 {
        slot.offer(budget.batch(&slot, i * 2..i * 2 + 2));
    }
    // 2 + 2 + 2 taken (the third batch arrived below the bound), the fourth dropped.
    let counters = slot.counters().snapshot();
    assert_eq!(counters.flows_dropped.get(BUFFER_FULL), Some(&2));
    assert_eq!(budget.in_flight(), 0, "budget given back on entry and on drop");
    script.release();
    slot.drain().await;
    let counters = slot.counters().snapshot();
    assert_eq!(counters.flows_published, 6);
    assert_eq!(script.batches(), vec![3, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffered_sink_has_its_lanes_in_flight_at_once() {
    let script = Script::new(false);
    let sink = Scripted {
        script: script.clone(),
        buffering: buffered(1000, 4),
        encoder: Some(port_bytes),
    };
    let slot = PublisherSlot::new(("flows.test".into(), "default".into()), 1, 10, Box::new(sink));
    assert_eq!(slot.lanes.len(), 4);
    let budget = Budget::new();
    slot.offer(budget.batch(&slot, 0..100));
    wait_until("four batches are in flight", || script.running() == 4).await;
    assert_eq!(slot.queue().waiting.len(), 60);
    script.release();
    slot.drain().await;
    assert_eq!(script.most_running.load(AtomicOrdering::SeqCst), 4);
    assert_eq!(slot.counters().snapshot().flows_published, 100);
    let mut ports: Vec<u8> = script.payloads.lock().unwrap().iter().map(|p| p[0]).collect();
    ports.sort_unstable();
    assert_eq!(ports, (0..100).collect::<Vec<u8>>(), "each flow encoded and published once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_lane_publishes_batch_after_batch_in_one_task() {
    let (script, slot, budget) = inline_with_a_batch_in_the_sink(0..2).await;
    for i in 1..=4 {
        slot.offer(budget.batch(&slot, i * 10..i * 10 + 2));
    }
    script.release();
    slot.drain().await;
    assert_eq!(script.batches(), vec![2; 5]);
    assert_eq!(script.distinct_tasks(), 1, "the lane's task took each next batch itself");
    assert_eq!(budget.in_flight(), 0);

    let script = Script::new(false);
    let sink = Scripted { script: script.clone(), buffering: buffered(1000, 3), encoder: None };
    let slot = PublisherSlot::new(("flows.test".into(), "default".into()), 1, 5, Box::new(sink));
    slot.offer(budget.batch(&slot, 0..100));
    wait_until("every lane is busy", || script.running() == 3).await;
    script.release();
    slot.drain().await;
    assert_eq!(slot.counters().snapshot().flows_published, 100);
    assert_eq!(script.distinct_tasks(), 3, "one task per lane for 20 batches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_task_aborted_on_a_later_batch_counts_that_batch_once() {
    let mut script = Script::new(true);
    let permits = Arc::new(tokio::sync::Semaphore::new(1));
    script.permits = Some(Arc::clone(&permits));
    // One lane that splits the four flows in two batches (an inline sink would take all
    // four at once).
    let slot = slot(2, &script, buffered(10, 1));
    let budget = Budget::new();
    slot.offer(budget.batch(&slot, 0..4));
    wait_until("the second batch waits in the same task", || {
        script.batches() == vec![2] && script.running() == 1
    })
    .await;
    assert!(
        slot.queue().in_flight.values().all(|flight| flight.task.is_some()),
        "the batch the task went on with can still be stopped"
    );
    slot.abandon_pending();
    assert_eq!(slot.counters().flows_dropped.get(flow_drop::DRAIN_TIMEOUT), 2);
    wait_until("the aborted task is gone", || slot.queue().idle.len() == 1).await;
    permits.add_permits(1);
    let counters = slot.counters().snapshot();
    assert_eq!(counters.flows_published, 2);
    assert_eq!(counters.flows_dropped_total(), 2, "the abandoned batch is not counted twice");
    assert_eq!(budget.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_errors_drop_and_count_the_batch() {
    let mut script = Script::new(true);
    script.fail = true;
    let slot = slot(3, &script, None);
    let budget = Budget::new();
    slot.offer(budget.batch(&slot, 0..7));
    slot.drain().await;
    let counters = slot.counters().snapshot();
    assert_eq!(counters.flows_dropped.get("sink_rejected"), Some(&7));
    assert_eq!(counters.flows_published, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoning_counts_every_held_flow_once() {
    let (script, slot, budget) = inline_with_a_batch_in_the_sink(0..3).await;
    slot.offer(budget.batch(&slot, 3..5));
    slot.abandon_pending();
    // In flight (3: an inline sink takes what waits) and held back (2).
    assert_eq!(slot.counters().flows_dropped.get(flow_drop::DRAIN_TIMEOUT), 5);
    assert_eq!(budget.in_flight(), 0);
    script.release();
    wait_until("the aborted task is gone", || slot.queue().idle.len() == 1).await;
    let counters = slot.counters().snapshot();
    assert_eq!(counters.flows_published, 0, "an abandoned batch is not counted twice");
    assert_eq!(counters.flows_dropped_total(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_panics_loses_its_batch_not_its_lane() {
    let script = Script::new(true);
    script.panic.store(true, AtomicOrdering::SeqCst);
    let slot = slot(2, &script, None);
    let budget = Budget::new();
    slot.offer(budget.batch(&slot, 0..2));
    wait_until("the panicked batch is counted", || {
        slot.counters().flows_dropped.get(flow_drop::PUBLISHER_FAILED) == 2
    })
    .await;
    slot.offer(budget.batch(&slot, 2..4));
    slot.drain().await;
    assert_eq!(slot.counters().snapshot().flows_published, 2);
    assert_eq!(script.batches(), vec![2]);
}

#[test]
fn partial_deliveries_are_counted_by_reason_and_unreported_flows_as_dropped() {
    let counters = PublisherCounters::default();
    let mut queue = Queue::new(10, None, false, 1);
    let mut delivery = Delivery { delivered: 6, ..Default::default() };
    delivery.give_up("ack_timeout", 3);
    let to = Destination { subject: "s".into(), partition: "p".into() };
    queue.account(delivery, 10, &counters, &to);
    assert_eq!(counters.snapshot().flows_published, 6);
    assert_eq!(counters.flows_dropped.get("ack_timeout"), 3);
    assert_eq!(counters.flows_dropped.get(flow_drop::SINK_UNREPORTED), 1);
    // A sink claiming more than it was given cannot unbalance the books.
    queue.account(Delivery::all(50), 10, &counters, &to);
    assert_eq!(counters.snapshot().flows_published, 16);
}

#[test]
fn partitions_on_one_subject_split_its_buffer() {
    let script = Script::new(true);
    let sink = |max_flows| Scripted {
        script: script.clone(),
        buffering: buffered(max_flows, 2),
        encoder: None,
    };
    let to = || ("flows.test".to_owned(), "acme".to_owned());
    let shared = PublisherSlot::new(to(), 4, 10, Box::new(sink(1000)));
    assert_eq!(shared.queue().max_flows, 250, "a quarter of the subject's buffer");
    let alone = PublisherSlot::new(to(), 1, 10, Box::new(sink(1000)));
    assert_eq!(alone.queue().max_flows, 1000);
    let tiny = PublisherSlot::new(to(), 4, 10, Box::new(sink(20)));
    assert_eq!(tiny.queue().max_flows, 10, "never below one batch");
}

/// The identity of an exporter the registry does not name.
fn unnamed_exporter() -> ExporterIdentity {
    crate::tenancy::Registry::new(Vec::new()).identify("192.0.2.9".parse().unwrap(), "default")
}

/// The identity of an exporter the registry names.
fn named_exporter() -> ExporterIdentity {
    let entry = crate::tenancy::RegistryEntry {
        prefix: "192.0.2.0/24".parse().unwrap(),
        partition: Some("acme".into()),
        name: Some("edge-1".into()),
        site: None,
        role: None,
        tags: Default::default(),
    };
    crate::tenancy::Registry::new(vec![entry]).identify("192.0.2.7".parse().unwrap(), "default")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_are_written_where_flows_are_decoded_with_their_exporter_stamped() {
    let out = Arc::new(AsyncMutex::new(Vec::<u8>::new()));
    let sink = crate::sink::JsonLinesSink::new(Arc::clone(&out));
    let slot = PublisherSlot::new(("flows.test".into(), "acme".into()), 1, 10, Box::new(sink));
    let budget = Budget::new();
    let mut flows = FlowBuffer::new();
    for port in [53, 443] {
        flows.next_slot().src_port = port;
    }
    assert!(budget.budget.try_acquire());
    let credit = Credit::adopt(Arc::clone(&budget.budget), 1);
    let batch = slot.batch_of(&mut flows, &named_exporter(), credit);
    assert!(matches!(batch.accept().0, Staged::Encoded(ref lines) if lines.len() == 2));

    assert!(budget.budget.try_acquire());
    let credit = Credit::adopt(Arc::clone(&budget.budget), 1);
    slot.offer(slot.batch_of(&mut flows, &named_exporter(), credit));
    slot.drain().await;
    assert_eq!(slot.counters().snapshot().flows_published, 2);
    let text = String::from_utf8(out.lock().await.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    for (line, port) in lines.iter().zip([53, 443]) {
        let mut want = FlowMessage { src_port: port, ..Default::default() };
        named_exporter().stamp(&mut want);
        assert_eq!(*line, flowpb::json::to_json_line(&want));
        assert!(line.contains(r#""exporter_name":"edge-1""#), "{line}");
    }
    assert_eq!(budget.in_flight(), 0);
}

#[test]
fn queued_flows_keep_their_order_and_a_batch_taken_whole_keeps_its_buffer() {
    let mut queue = VecDeque::new();
    append(&mut queue, (0..10).collect::<Vec<u32>>());
    append(&mut queue, vec![10, 11]);
    assert_eq!(take_front(&mut queue, 3), vec![0, 1, 2]);
    assert_eq!(take_front(&mut queue, 100), (3..12).collect::<Vec<_>>());
    assert!(queue.is_empty());

    let batch: Vec<u32> = (0..10).collect();
    let buffer = batch.as_ptr();
    append(&mut queue, batch);
    let taken = take_front(&mut queue, 10);
    assert_eq!(taken, (0..10).collect::<Vec<_>>());
    assert_eq!(taken.as_ptr(), buffer, "the batch went through without a copy");
}

#[test]
fn each_flow_with_a_receipt_time_is_observed_once_whatever_its_run() {
    let histogram = LatencyHistogram::default();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970");
    let at = |ago_ms: u64| u64::try_from(now.as_nanos()).expect("fits") - ago_ms * 1_000_000;
    let (old, new) = (at(3_000), at(2));
    observe_flow_latency(&histogram, &[old, old, 0, old, new, new, 0, 0, old]);
    let snapshot = histogram.snapshot();
    assert_eq!(snapshot.count, 6, "the flows without a receipt time are left out");
    let three_seconds =
        snapshot.buckets.iter().position(|(bound, _)| *bound >= 3.0).expect("a bucket");
    assert_eq!(snapshot.buckets[three_seconds].1, 4, "three seconds old: four flows, three runs");
    let (low, high) = (4.0 * 3.0 + 2.0 * 0.002, 4.0 * 3.0 + 2.0 * 0.002 + 6.0);
    assert!((low..high).contains(&snapshot.sum_seconds), "{}", snapshot.sum_seconds);
}
