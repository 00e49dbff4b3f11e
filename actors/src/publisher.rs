//! The publisher of one subject: gathers the flows of every exporter of the listeners on
//! that subject into batches of `batch_size` (or whatever is there after [`LINGER`]) and
//! hands each batch to the subject's [`FlowSink`].
//!
//! Its batch and its sink live in a [`PublisherSlot`] owned by the root supervisor and
//! handed to the actor as its argument, so a publisher restarted after a failure picks up
//! the flows it had already accepted: a restart loses no accepted flow (architecture.md).

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use flowpb::FlowMessage;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::Mutex;

use crate::batch::FlowBatch;
use crate::budget::Credit;
use crate::counters::{PublisherCounters, flow_drop};
use crate::ratelimit::LogLimiter;
use crate::sink::{Delivery, FlowSink};

/// The longest a flow waits for its batch to fill: bounds latency at low rates, while at
/// high rates batches fill long before it.
pub const LINGER: Duration = Duration::from_millis(50);

/// At most one "sink failed" warning per subject this often (every failure is counted).
const SINK_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Messages of a [`PublisherActor`].
pub(crate) enum PublisherMsg {
    /// Flows from an exporter.
    Flows(FlowBatch),
    /// [`LINGER`] has passed since the batch started: publish what is there.
    Linger,
    /// Test hook: fail on purpose, to exercise the restart path.
    #[cfg(any(test, feature = "fault-injection"))]
    Panic,
}

/// One subject's publishing state, kept by the root supervisor across publisher restarts.
pub(crate) struct PublisherSlot {
    subject: String,
    counters: Arc<PublisherCounters>,
    batcher: Mutex<Batcher>,
    actor: RwLock<Option<ActorRef<PublisherMsg>>>,
}

impl PublisherSlot {
    pub(crate) fn new(subject: String, batch_size: usize, sink: Box<dyn FlowSink>) -> Arc<Self> {
        Arc::new(Self {
            batcher: Mutex::new(Batcher::new(subject.clone(), batch_size, sink)),
            subject,
            counters: Arc::default(),
            actor: RwLock::new(None),
        })
    }

    pub(crate) fn subject(&self) -> &str {
        &self.subject
    }

    pub(crate) fn counters(&self) -> &Arc<PublisherCounters> {
        &self.counters
    }

    /// Sends flows to whichever publisher actor is current. If there is none (it failed
    /// and is being restarted), the batch is dropped and counted.
    pub(crate) fn send(&self, flows: Vec<FlowMessage>, credit: Credit) {
        let batch = FlowBatch::new(flows, credit, Arc::clone(&self.counters));
        if let Some(actor) = self.current() {
            // On failure the batch comes back inside the error and is dropped: counted.
            let _ = actor.send_message(PublisherMsg::Flows(batch));
        }
    }

    /// The publisher actor flows go to now.
    pub(crate) fn current(&self) -> Option<ActorRef<PublisherMsg>> {
        self.actor.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Makes `actor` the one flows are sent to.
    pub(crate) fn attach(&self, actor: ActorRef<PublisherMsg>) {
        *self.actor.write().unwrap_or_else(PoisonError::into_inner) = Some(actor);
    }

    /// Forgets the current actor (shutdown), returning it.
    pub(crate) fn detach(&self) -> Option<ActorRef<PublisherMsg>> {
        self.actor.write().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// After the publisher was killed at the drain deadline: counts the flows it still
    /// held as dropped.
    pub(crate) fn abandon_pending(&self) {
        match self.batcher.try_lock() {
            Ok(mut batcher) => batcher.abandon(&self.counters),
            Err(_) => {
                tracing::warn!(subject = %self.subject, "Pending flows of a killed publisher not counted: batch still locked")
            }
        }
    }
}

/// The batch being filled and the sink it goes to.
struct Batcher {
    subject: String,
    batch_size: usize,
    pending: Vec<FlowMessage>,
    sink: Box<dyn FlowSink>,
    error_log: LogLimiter,
}

impl Batcher {
    fn new(subject: String, batch_size: usize, sink: Box<dyn FlowSink>) -> Self {
        Self {
            subject,
            batch_size: batch_size.max(1),
            pending: Vec::new(),
            sink,
            error_log: LogLimiter::new(SINK_ERROR_LOG_INTERVAL),
        }
    }

    /// Adds flows, publishing every full batch.
    async fn add(&mut self, flows: Vec<FlowMessage>, counters: &PublisherCounters) {
        if self.pending.is_empty() {
            self.pending = flows;
        } else {
            self.pending.extend(flows);
        }
        while self.pending.len() >= self.batch_size {
            self.publish_front(self.batch_size, counters).await;
        }
    }

    /// Publishes everything pending, in batches.
    async fn publish_all(&mut self, counters: &PublisherCounters) {
        while !self.pending.is_empty() {
            let n = self.pending.len().min(self.batch_size);
            self.publish_front(n, counters).await;
        }
    }

    /// Hands the first `n` pending flows to the sink and accounts for every one of them.
    async fn publish_front(&mut self, n: usize, counters: &PublisherCounters) {
        let result = self.sink.publish(&self.pending[..n]).await;
        let count = u64::try_from(n).unwrap_or(u64::MAX);
        match result {
            Ok(delivery) => self.account(delivery, count, counters),
            Err(error) => {
                counters.flows_dropped.add(error.reason(), count);
                if let Some(held_back) = self.error_log.allow(Instant::now()) {
                    tracing::warn!(subject = %self.subject, flows = n, %error, held_back, "Sink failed, dropping flow batch");
                }
            }
        }
        self.pending.drain(..n);
    }

    /// Counts a sink's report on `count` flows. Whatever it leaves unreported is counted
    /// as dropped too, so the publisher's books always balance.
    fn account(&mut self, delivery: Delivery, count: u64, counters: &PublisherCounters) {
        let given_up = delivery.given_up_total().min(count);
        let delivered = delivery.delivered.min(count - given_up);
        counters.flows_published.fetch_add(delivered, Ordering::Relaxed);
        if delivered > 0 {
            counters.batches_published.fetch_add(1, Ordering::Relaxed);
        }
        for (reason, flows) in &delivery.given_up {
            counters.flows_dropped.add(reason, *flows);
        }
        let unreported = count - given_up - delivered;
        if unreported > 0 {
            counters.flows_dropped.add(flow_drop::SINK_UNREPORTED, unreported);
        }
        if given_up + unreported > 0
            && let Some(held_back) = self.error_log.allow(Instant::now())
        {
            tracing::warn!(subject = %self.subject, given_up = ?delivery.given_up, unreported, held_back,
                "Sink gave up part of a flow batch");
        }
    }

    /// Flushes the sink (called once, at the end of a drain).
    async fn flush_sink(&mut self) {
        if let Err(error) = self.sink.flush().await {
            tracing::warn!(subject = %self.subject, %error, "Sink flush failed at shutdown");
        }
    }

    fn abandon(&mut self, counters: &PublisherCounters) {
        let count = u64::try_from(self.pending.len()).unwrap_or(u64::MAX);
        if count > 0 {
            counters.flows_dropped.add(flow_drop::DRAIN_TIMEOUT, count);
            tracing::warn!(subject = %self.subject, flows = count, "Drain timed out, dropping pending flows");
        }
        self.pending.clear();
    }
}

/// A publisher's own state: the slot it works on, and whether a [`PublisherMsg::Linger`]
/// is on its way (at most one is, so a sink that blocks cannot pile up timer messages).
pub(crate) struct PublisherState {
    slot: Arc<PublisherSlot>,
    linger_armed: bool,
}

impl PublisherState {
    /// Schedules a linger flush if flows are pending and none is scheduled.
    fn arm_linger(&mut self, myself: &ActorRef<PublisherMsg>, pending: bool) {
        if pending && !self.linger_armed {
            self.linger_armed = true;
            drop(myself.send_after(LINGER, || PublisherMsg::Linger));
        }
    }
}

/// The actor: routes messages to the slot's batcher, one at a time.
pub(crate) struct PublisherActor;

impl Actor for PublisherActor {
    type Msg = PublisherMsg;
    type State = PublisherState;
    type Arguments = Arc<PublisherSlot>;

    /// A restarted publisher finds the flows its predecessor accepted, and schedules them.
    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        slot: Arc<PublisherSlot>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let pending = !slot.batcher.lock().await.pending.is_empty();
        let mut state = PublisherState { slot, linger_armed: false };
        state.arm_linger(&myself, pending);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let slot = Arc::clone(&state.slot);
        let mut batcher = slot.batcher.lock().await;
        match message {
            PublisherMsg::Flows(batch) => batcher.add(batch.accept(), &slot.counters).await,
            PublisherMsg::Linger => {
                state.linger_armed = false;
                batcher.publish_all(&slot.counters).await;
            }
            #[cfg(any(test, feature = "fault-injection"))]
            PublisherMsg::Panic => {
                panic!("fault injection: publisher {} told to fail", slot.subject)
            }
        }
        state.arm_linger(&myself, !batcher.pending.is_empty());
        Ok(())
    }

    /// Reached after a drain (every queued batch handled) or a stop: publish the rest.
    /// Not reached after a panic, when the batch stays in the slot for the next actor.
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let mut batcher = state.slot.batcher.lock().await;
        batcher.publish_all(&state.slot.counters).await;
        batcher.flush_sink().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{SinkError, SinkFuture};

    /// Records batch sizes; fails every batch when `fail` is set.
    struct Recorder {
        batches: Arc<std::sync::Mutex<Vec<usize>>>,
        fail: bool,
    }

    impl FlowSink for Recorder {
        fn publish<'a>(&'a mut self, flows: &'a [FlowMessage]) -> SinkFuture<'a, Delivery> {
            Box::pin(async move {
                if self.fail {
                    return Err(SinkError::Rejected("test".into()));
                }
                self.batches.lock().unwrap().push(flows.len());
                Ok(Delivery::all(flows.len()))
            })
        }
    }

    fn batcher(batch_size: usize, fail: bool) -> (Batcher, Arc<std::sync::Mutex<Vec<usize>>>) {
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Recorder { batches: Arc::clone(&batches), fail };
        (Batcher::new("s".into(), batch_size, Box::new(sink)), batches)
    }

    #[tokio::test]
    async fn full_batches_go_at_once_and_the_rest_when_flushed() {
        let counters = PublisherCounters::default();
        let (mut b, batches) = batcher(4, false);
        b.add(vec![FlowMessage::default(); 10], &counters).await;
        assert_eq!(*batches.lock().unwrap(), vec![4, 4]);
        assert_eq!(b.pending.len(), 2);

        b.publish_all(&counters).await;
        assert_eq!(*batches.lock().unwrap(), vec![4, 4, 2]);
        let s = counters.snapshot();
        assert_eq!((s.flows_published, s.batches_published), (10, 3));
    }

    #[tokio::test]
    async fn sink_errors_drop_and_count_the_batch() {
        let counters = PublisherCounters::default();
        let (mut b, _) = batcher(3, true);
        b.add(vec![FlowMessage::default(); 7], &counters).await;
        b.publish_all(&counters).await;
        assert!(b.pending.is_empty());
        assert_eq!(counters.flows_dropped.get("sink_rejected"), 7);
        assert_eq!(counters.snapshot().flows_published, 0);
    }

    #[test]
    fn partial_deliveries_are_counted_by_reason_and_unreported_flows_as_dropped() {
        let counters = PublisherCounters::default();
        let (mut b, _) = batcher(10, false);
        let mut delivery = Delivery { delivered: 6, ..Default::default() };
        delivery.give_up("ack_timeout", 3);
        b.account(delivery, 10, &counters);
        assert_eq!(counters.snapshot().flows_published, 6);
        assert_eq!(counters.flows_dropped.get("ack_timeout"), 3);
        assert_eq!(counters.flows_dropped.get(flow_drop::SINK_UNREPORTED), 1);
        // A sink claiming more than it was given cannot unbalance the books.
        b.account(Delivery::all(50), 10, &counters);
        assert_eq!(counters.snapshot().flows_published, 16);
    }

    #[tokio::test]
    async fn abandoning_counts_pending_flows_as_drain_timeout() {
        let counters = PublisherCounters::default();
        let (mut b, _) = batcher(100, false);
        b.add(vec![FlowMessage::default(); 5], &counters).await;
        b.abandon(&counters);
        assert_eq!(counters.flows_dropped.get(flow_drop::DRAIN_TIMEOUT), 5);
        assert!(b.pending.is_empty());
    }
}
