//! The publisher of one subject and partition: takes the flows of that partition's
//! exporters on the listeners of that subject into a queue, cuts it into batches of
//! `batch_size` (or whatever is there after [`LINGER`]) and hands each batch to a lane of
//! its [`FlowSink`].
//!
//! Two ways of holding flows, chosen by the sink ([`FlowSink::buffering`]):
//! - inline (stdout, the default): one batch in flight, taking every flow waiting (about
//!   `batch_size`, passed by the exporter hand-off admitted last); flows beyond that are
//!   held back with their listener's budget, so a slow sink fills the budget and the
//!   listener drops newest (`channel_full`); past [`MAX_HELD_FLOWS`] held back, flows
//!   are dropped and counted (`buffer_full`);
//! - buffered (JetStream): up to `max_flows` held, with several batches in flight; the
//!   listener's budget is given back as flows enter the buffer, and flows arriving at
//!   the bound are dropped and counted (`buffer_full`).
//!
//! Both sinks take flows encoded ([`FlowSink::encoding`]: JSON lines, protobuf) by the
//! exporter actors that decoded them; a sink without an encoding takes them decoded.
//!
//! The queue, the sink lanes and the batches in flight live in a [`PublisherSlot`] owned
//! by the root supervisor and handed to the actor as its argument, and batches are
//! published by tasks of their own, one per busy lane (it goes on with the lane's next
//! batch while one is ready): a publisher restarted after a failure picks up everything
//! accepted and in flight (architecture.md).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flow_decode::FlowBuffer;
use flowpb::FlowMessage;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{Mutex as AsyncMutex, Notify};
use tokio::task::AbortHandle;

use crate::batch::{FlowBatch, Staged};
use crate::budget::Credit;
use crate::counters::{LatencyHistogram, PublisherCounters, flow_drop};
use crate::ratelimit::LogLimiter;
use crate::sink::{
    BUFFER_FULL, Buffering, Delivery, Encoding, FlowSink, IdentityFields, SinkError,
};
use crate::tenancy::ExporterIdentity;

/// The longest a flow waits for its batch to fill: bounds latency at low rates, while at
/// high rates batches fill long before it.
pub const LINGER: Duration = Duration::from_millis(50);

/// At most one "sink failed" or "buffer full" warning per subject this often (every
/// occurrence is counted).
const SINK_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Flows an inline sink's publisher holds back at most, with their listeners' budget:
/// `channel_size` (10,000 by default) datagrams of 30 flows. Datagrams of more flows
/// are charged for them (`Credit::cover_flows`), but those already accepted when the
/// charge comes are still decoded; this bounds what they can add.
const MAX_HELD_FLOWS: usize = 300_000;

/// Messages of a [`PublisherActor`].
pub(crate) enum PublisherMsg {
    /// Flows from an exporter.
    Flows(FlowBatch),
    /// [`LINGER`] has passed since flows started waiting: publish what is there.
    Linger,
    /// A lane came back without its batch finishing (its task panicked): start the next.
    Dispatch,
    /// Test hook: fail on purpose, to exercise the restart path.
    #[cfg(any(test, feature = "fault-injection"))]
    Panic,
}

/// Where a publisher's flows go: a subject, and whose flows they are. Each partition
/// has publishers (and counters) of its own, even on a subject it shares.
#[derive(Debug)]
pub(crate) struct Destination {
    subject: String,
    partition: String,
}

/// The publishing state of one subject and partition, kept by the root supervisor across
/// publisher restarts.
pub(crate) struct PublisherSlot {
    to: Destination,
    counters: Arc<PublisherCounters>,
    /// Each lane publishes one batch at a time. The sink sits behind an async mutex only
    /// so that a task which panics mid-publish hands it back.
    lanes: Vec<Arc<AsyncMutex<Box<dyn FlowSink>>>>,
    queue: Mutex<Queue>,
    /// The form the sink takes flows in, applied by the senders (see
    /// [`FlowBatch::encoded`]).
    encoding: Option<Encoding>,
    /// Signalled whenever a batch in flight is settled.
    settled: Notify,
    actor: RwLock<Option<ActorRef<PublisherMsg>>>,
}

impl PublisherSlot {
    /// The publisher of `partition`'s flows on `subject`. `shares` publishers (one per
    /// partition) split the subject's buffer (`Buffering::max_flows`), so the memory a
    /// subject may hold does not grow with its partitions, and one tenant filling its
    /// part leaves the others theirs.
    pub(crate) fn new(
        to: (String, String),
        shares: usize,
        batch_size: usize,
        sink: Box<dyn FlowSink>,
    ) -> Arc<Self> {
        let (subject, partition) = to;
        let batch_size = batch_size.max(1);
        let buffering = sink.buffering().map(|whole| Buffering {
            max_flows: (whole.max_flows / shares.max(1)).max(batch_size),
            ..whole
        });
        let encoding = sink.encoding();
        let lanes = lanes_for(sink, buffering.as_ref());
        let queue = Queue::new(batch_size, buffering.as_ref(), encoding.is_some(), lanes.len());
        Arc::new(Self {
            to: Destination { subject, partition },
            counters: Arc::default(),
            lanes,
            queue: Mutex::new(queue),
            encoding,
            settled: Notify::new(),
            actor: RwLock::new(None),
        })
    }

    pub(crate) fn subject(&self) -> &str {
        &self.to.subject
    }

    pub(crate) fn partition(&self) -> &str {
        &self.to.partition
    }

    pub(crate) fn counters(&self) -> &Arc<PublisherCounters> {
        &self.counters
    }

    /// Sends an exporter's flows, with its identity put on each (stamped, or appended
    /// encoded, as the sink's encoding says), to whichever publisher actor is current.
    /// If there is none (it failed and is being restarted), the batch is dropped and
    /// counted. Flows encoded here stay in `flows` (their messages are reused for the
    /// next ones); decoded flows are taken along.
    pub(crate) fn send(&self, flows: &mut FlowBuffer, from: &ExporterIdentity, credit: Credit) {
        let batch = self.batch_of(flows, from, credit);
        if let Some(actor) = self.current() {
            // On failure the batch comes back inside the error and is dropped: counted.
            let _ = actor.send_message(PublisherMsg::Flows(batch));
        }
    }

    /// An exporter's flows as the sink takes them, its identity on each.
    fn batch_of(
        &self,
        flows: &mut FlowBuffer,
        from: &ExporterIdentity,
        credit: Credit,
    ) -> FlowBatch {
        let counters = Arc::clone(&self.counters);
        match self.encoding {
            Some(Encoding { encoder, identity: IdentityFields::Appended }) => {
                FlowBatch::encoded(flows, (encoder, from.encoded_fields()), credit, counters)
            }
            Some(Encoding { encoder, identity: IdentityFields::Stamped }) => {
                flows.iter_mut().for_each(|flow| from.stamp(flow));
                FlowBatch::encoded(flows, (encoder, &[]), credit, counters)
            }
            None => {
                let mut flows = flows.take();
                flows.iter_mut().for_each(|flow| from.stamp(flow));
                FlowBatch::new(flows, credit, counters)
            }
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

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a batch of flows in (or holds it back, or drops it when the buffer is
    /// full), then starts whatever batches are ready.
    fn offer(self: &Arc<Self>, batch: FlowBatch) {
        self.queue().offer(batch, &self.counters, &self.to);
        self.dispatch();
    }

    /// [`LINGER`] passed: partial batches may go.
    fn linger(self: &Arc<Self>) {
        self.queue().flush = true;
        self.dispatch();
    }

    /// Whether flows wait for a linger flush that is not yet due.
    fn needs_linger(&self) -> bool {
        let queue = self.queue();
        !queue.flush && queue.waiting.len() > 0
    }

    /// Starts a task for every batch ready to go while a lane is free.
    fn dispatch(self: &Arc<Self>) {
        let mut queue = self.queue();
        while let Some(boarding) = self.board(&mut queue) {
            let id = boarding.0.id;
            let task = tokio::spawn(fly(boarding));
            queue.track(id, task.abort_handle());
        }
        queue.update_gauges(&self.counters);
    }

    /// The next batch ready while a lane is free, registered in flight; the caller
    /// tracks the task that publishes it. A batch whose lane is missing is counted.
    fn board(self: &Arc<Self>, queue: &mut Queue) -> Option<Boarding> {
        loop {
            let (lane, batch, received) = queue.next_batch()?;
            let Some(sink) = self.lanes.get(lane).cloned() else {
                // Lanes are never removed; should one be missing, the batch is counted.
                self.counters.flows_dropped.add(flow_drop::PUBLISHER_FAILED, to_u64(batch.len()));
                continue;
            };
            let id = queue.register(batch.len(), received);
            return Some((
                Flight { slot: Arc::clone(self), id, lane, finished: false },
                sink,
                batch,
            ));
        }
    }

    /// Accounts for a batch that finished and frees its lane. If another batch is ready
    /// it is handed back, for the same task to publish next (a busy lane costs no task
    /// per batch: the lane just freed is the one taken); batches ready for other free
    /// lanes get tasks of their own.
    fn settle(
        self: &Arc<Self>,
        id: u64,
        lane: usize,
        result: Result<Delivery, SinkError>,
    ) -> Option<Boarding> {
        let next = {
            let mut queue = self.queue();
            // No task handle: the batch was abandoned at the drain deadline, and so is
            // the task.
            let task = queue.settle(id, lane, Some(result), &self.counters, &self.to);
            task.and_then(|task| {
                let boarding = self.board(&mut queue)?;
                queue.track(boarding.0.id, task);
                Some(boarding)
            })
        };
        self.dispatch();
        self.settled.notify_waiters();
        // Held-back flows the dispatch admitted may now wait for a partial batch with no
        // more flows coming: only the actor keeps the linger timer, so it must hear of
        // them, or they would wait for the next flows to arrive.
        if self.needs_linger()
            && let Some(actor) = self.current()
        {
            let _ = actor.send_message(PublisherMsg::Dispatch);
        }
        next
    }

    /// A task ended without finishing its batch: counted, unless the drain deadline
    /// already did. Dispatching is left to the actor (this runs inside a `Drop`).
    fn settle_unfinished(&self, id: u64, lane: usize) {
        {
            let mut queue = self.queue();
            queue.settle(id, lane, None, &self.counters, &self.to);
            queue.update_gauges(&self.counters);
        }
        self.settled.notify_waiters();
        if let Some(actor) = self.current() {
            let _ = actor.send_message(PublisherMsg::Dispatch);
        }
    }

    /// Publishes everything held, partial batches included, and waits until nothing is
    /// held or in flight; then flushes every lane's sink. Called once, at shutdown.
    async fn drain(self: &Arc<Self>) {
        self.queue().start_draining();
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            self.dispatch();
            if self.queue().is_empty() {
                break;
            }
            settled.await;
        }
        for lane in &self.lanes {
            if let Err(error) = lane.lock().await.flush().await {
                tracing::warn!(subject = %self.to.subject, partition = %self.to.partition, %error, "Sink flush failed at shutdown");
            }
        }
    }

    /// After the publisher was killed at the drain deadline: counts every flow it still
    /// held or had in flight as dropped, and stops the batches in flight.
    pub(crate) fn abandon_pending(&self) {
        let (count, tasks) = {
            let mut queue = self.queue();
            let abandoned = queue.abandon();
            queue.update_gauges(&self.counters);
            abandoned
        };
        for task in tasks {
            task.abort();
        }
        if count > 0 {
            self.counters.flows_dropped.add(flow_drop::DRAIN_TIMEOUT, count);
            tracing::warn!(subject = %self.to.subject, partition = %self.to.partition, flows = count, "Drain timed out, dropping pending flows");
        }
    }
}

/// The sink's lanes: itself, and for a buffered sink as many forks as it may have
/// batches in flight.
fn lanes_for(
    sink: Box<dyn FlowSink>,
    buffering: Option<&Buffering>,
) -> Vec<Arc<AsyncMutex<Box<dyn FlowSink>>>> {
    let wanted = buffering.map_or(1, |b| b.max_batches_in_flight.max(1));
    let forks: Vec<Box<dyn FlowSink>> = (1..wanted).map_while(|_| sink.fork()).collect();
    std::iter::once(sink).chain(forks).map(|s| Arc::new(AsyncMutex::new(s))).collect()
}

/// Publishes one batch on one lane and settles it, then goes on with the lane's next
/// batch while one is ready. If the task ends early (a panic in the sink, or an abort at
/// the drain deadline) the [`Flight`] of the batch it was on settles it when dropped.
async fn fly(boarding: Boarding) {
    let mut next = Some(boarding);
    while let Some((flight, sink, batch)) = next {
        let result = {
            let mut sink = sink.lock().await;
            match batch {
                Staged::Decoded(flows) => sink.publish(&flows).await,
                Staged::Encoded(payloads) => sink.publish_encoded(payloads).await,
            }
        };
        next = flight.finish(result);
        // A sink that never waits (stdout, discard) would otherwise keep the worker for
        // as long as batches keep coming.
        tokio::task::consume_budget().await;
    }
}

/// A batch registered in flight, with the sink of its lane.
type Boarding = (Flight, Arc<AsyncMutex<Box<dyn FlowSink>>>, Staged);

/// One batch in flight, owned by its task.
struct Flight {
    slot: Arc<PublisherSlot>,
    id: u64,
    lane: usize,
    finished: bool,
}

impl Flight {
    /// Settles the batch; returns the next batch to publish, if one is ready.
    fn finish(mut self, result: Result<Delivery, SinkError>) -> Option<Boarding> {
        self.finished = true;
        self.slot.settle(self.id, self.lane, result)
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if !self.finished {
            self.slot.settle_unfinished(self.id, self.lane);
        }
    }
}

/// Flows waiting for a batch, as the sink wants them held.
enum Waiting {
    Decoded(VecDeque<FlowMessage>),
    Encoded(VecDeque<Bytes>),
}

impl Waiting {
    fn len(&self) -> usize {
        match self {
            Waiting::Decoded(flows) => flows.len(),
            Waiting::Encoded(payloads) => payloads.len(),
        }
    }

    /// Appends flows, in the form the slot made them in ([`PublisherSlot::batch_of`]):
    /// the same sink's encoding decides both, so the forms always agree. Should that
    /// ever break, the flows come back.
    fn push(&mut self, flows: Staged) -> Result<(), Staged> {
        match (self, flows) {
            (Waiting::Decoded(waiting), Staged::Decoded(flows)) => append(waiting, flows),
            (Waiting::Encoded(waiting), Staged::Encoded(payloads)) => append(waiting, payloads),
            (_, mismatched) => return Err(mismatched),
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Staged {
        match self {
            Waiting::Decoded(flows) => Staged::Decoded(take_front(flows, n)),
            Waiting::Encoded(payloads) => Staged::Encoded(take_front(payloads, n)),
        }
    }

    fn clear(&mut self) {
        match self {
            Waiting::Decoded(flows) => flows.clear(),
            Waiting::Encoded(payloads) => payloads.clear(),
        }
    }
}

/// Appends `items` to `queue`. An empty queue takes the vector's buffer instead: an
/// inline sink's batch then goes from the exporter to the sink without a copy of its
/// flows (see [`take_front`]).
fn append<T>(queue: &mut VecDeque<T>, items: Vec<T>) {
    if queue.is_empty() {
        *queue = VecDeque::from(items);
    } else {
        queue.extend(items);
    }
}

/// The first `n` items of `queue` (all of them when it holds no more). Taking them all
/// takes the queue's buffer, moving nothing when the queue starts at its beginning.
fn take_front<T>(queue: &mut VecDeque<T>, n: usize) -> Vec<T> {
    if n >= queue.len() { Vec::from(std::mem::take(queue)) } else { queue.drain(..n).collect() }
}

/// Observes, for each flow of a delivered batch, the time from its datagram's receipt
/// until now. Flows without a receipt time are left out. The flows of one burst read
/// share their receipt time, so each run of equal times is observed at once.
fn observe_flow_latency(histogram: &LatencyHistogram, received: &[u64]) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let now_ns = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
    let runs = received.chunk_by(|a, b| a == b).filter(|run| run[0] > 0);
    histogram.observe_runs(runs.map(|run| {
        let latency = Duration::from_nanos(now_ns.saturating_sub(run[0]));
        (latency, u64::try_from(run.len()).unwrap_or(u64::MAX))
    }));
}

/// What to do with flows arriving when `max_flows` are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overflow {
    /// Keep them, with their listener budget, until there is room (inline sinks).
    Wait,
    /// Drop them, counted as `buffer_full` (buffered sinks).
    Drop,
}

/// A batch in flight.
struct InFlight {
    flows: usize,
    task: Option<AbortHandle>,
    /// When it was handed to its lane: the start of its publish latency.
    started: Instant,
    /// When its flows' datagrams were received: the start of their flow latency.
    received: Vec<u64>,
}

/// The flows of one publisher: waiting, held back, and in flight, plus the free lanes.
struct Queue {
    batch_size: usize,
    max_flows: usize,
    overflow: Overflow,
    waiting: Waiting,
    /// When each waiting flow's datagram was received (wall clock ns, as in
    /// `time_received_ns`; 0 when unknown), in the order of `waiting`.
    received: VecDeque<u64>,
    held: VecDeque<FlowBatch>,
    /// Flows in `held`.
    held_flows: usize,
    /// The most flows `held` takes ([`MAX_HELD_FLOWS`]).
    max_held: usize,
    idle: Vec<usize>,
    in_flight: HashMap<u64, InFlight>,
    in_flight_flows: usize,
    next_id: u64,
    /// Partial batches may go: [`LINGER`] passed, or draining.
    flush: bool,
    draining: bool,
    log: LogLimiter,
}

impl Queue {
    fn new(batch_size: usize, buffering: Option<&Buffering>, encoded: bool, lanes: usize) -> Self {
        let (max_flows, overflow) = match buffering {
            None => (batch_size, Overflow::Wait),
            Some(Buffering { max_flows, .. }) => ((*max_flows).max(1), Overflow::Drop),
        };
        let waiting = match encoded {
            true => Waiting::Encoded(VecDeque::new()),
            false => Waiting::Decoded(VecDeque::new()),
        };
        Self {
            batch_size,
            max_flows,
            overflow,
            waiting,
            received: VecDeque::new(),
            held: VecDeque::new(),
            held_flows: 0,
            max_held: MAX_HELD_FLOWS,
            idle: (0..lanes).rev().collect(),
            in_flight: HashMap::new(),
            in_flight_flows: 0,
            next_id: 0,
            flush: false,
            draining: false,
            log: LogLimiter::new(SINK_ERROR_LOG_INTERVAL),
        }
    }

    fn has_room(&self) -> bool {
        self.waiting.len() + self.in_flight_flows < self.max_flows
    }

    /// Takes a batch in whole while below the bound (so the bound may be passed by one
    /// batch); at the bound, holds it back or drops it. An inline sink holds back at
    /// most `max_held` flows: past that, batches are dropped like a buffered sink's.
    fn offer(&mut self, batch: FlowBatch, counters: &PublisherCounters, to: &Destination) {
        match self.overflow {
            Overflow::Wait if self.held_flows + batch.len() > self.max_held => {
                self.drop_batch(batch, self.max_held, counters, to);
            }
            Overflow::Wait if !self.held.is_empty() || !self.has_room() => {
                self.held_flows += batch.len();
                self.held.push_back(batch);
            }
            Overflow::Wait => self.enqueue(batch.accept()),
            Overflow::Drop if self.has_room() => self.enqueue(batch.accept()),
            Overflow::Drop => self.drop_batch(batch, self.max_flows, counters, to),
        }
    }

    /// Drops a batch at the bound of `held` flows, counted as `buffer_full`; its
    /// budget goes back to its listener.
    fn drop_batch(
        &mut self,
        batch: FlowBatch,
        held: usize,
        counters: &PublisherCounters,
        to: &Destination,
    ) {
        let dropped = to_u64(batch.accept().0.len());
        counters.flows_dropped.add(BUFFER_FULL, dropped);
        if let Some(held_back) = self.log.allow(Instant::now()) {
            tracing::warn!(subject = %to.subject, partition = %to.partition, flows = dropped, held, held_back,
                "Publisher buffer full, dropping flows");
        }
    }

    /// Moves held-back batches in while there is room.
    fn admit_held(&mut self) {
        while self.has_room() {
            let Some(batch) = self.held.pop_front() else { break };
            self.held_flows -= batch.len();
            self.enqueue(batch.accept());
        }
    }

    /// Flows join the waiting queue, with their receipt times.
    fn enqueue(&mut self, (flows, received): (Staged, Vec<u64>)) {
        match self.waiting.push(flows) {
            Ok(()) => append(&mut self.received, received),
            Err(mismatched) => {
                debug_assert!(mismatched.is_empty(), "flows in a form the sink does not take");
                tracing::error!(
                    flows = mismatched.len(),
                    "Flows in a form the sink does not take, dropping them"
                );
            }
        }
    }

    /// A free lane and the batch it should publish, with its flows' receipt times, if
    /// one is ready.
    fn next_batch(&mut self) -> Option<(usize, Staged, Vec<u64>)> {
        self.admit_held();
        let waiting = self.waiting.len();
        let n = if waiting >= self.batch_size {
            self.full_batch(waiting)
        } else if self.flush && waiting > 0 {
            waiting
        } else {
            return None;
        };
        let lane = self.idle.pop()?;
        let batch = self.waiting.take(n);
        let received = take_front(&mut self.received, n);
        if self.waiting.len() == 0 {
            self.flush = self.draining;
        }
        Some((lane, batch, received))
    }

    /// How many of `waiting` (at least `batch_size`) a full batch takes: `batch_size`;
    /// an inline sink takes them all. It holds about a batch, passed by the exporter
    /// hand-off admitted last (up to 512 flows): publishing that in pieces of
    /// `batch_size` made its one lane fall behind decoding, as every batch costs a
    /// settle, a wake-up and a task turn whatever its size.
    fn full_batch(&self, waiting: usize) -> usize {
        match self.overflow {
            Overflow::Wait => waiting,
            Overflow::Drop => self.batch_size,
        }
    }

    fn register(&mut self, flows: usize, received: Vec<u64>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let flight = InFlight { flows, task: None, started: Instant::now(), received };
        self.in_flight.insert(id, flight);
        self.in_flight_flows += flows;
        id
    }

    fn track(&mut self, id: u64, task: AbortHandle) {
        if let Some(flight) = self.in_flight.get_mut(&id) {
            flight.task = Some(task);
        }
    }

    /// Frees the lane and accounts for the batch, unless it was already counted when the
    /// drain was abandoned. `None`: the task ended before the sink answered.
    fn settle(
        &mut self,
        id: u64,
        lane: usize,
        result: Option<Result<Delivery, SinkError>>,
        counters: &PublisherCounters,
        to: &Destination,
    ) -> Option<AbortHandle> {
        self.idle.push(lane);
        let flight = self.in_flight.remove(&id)?;
        self.in_flight_flows -= flight.flows;
        let count = to_u64(flight.flows);
        match result {
            Some(Ok(delivery)) => {
                counters.publish_latency.observe(flight.started.elapsed());
                if delivery.delivered > 0 {
                    observe_flow_latency(&counters.flow_latency, &flight.received);
                }
                self.account(delivery, count, counters, to);
            }
            Some(Err(error)) => {
                counters.flows_dropped.add(error.reason(), count);
                if let Some(held_back) = self.log.allow(Instant::now()) {
                    tracing::warn!(subject = %to.subject, partition = %to.partition, flows = count, %error, held_back, "Sink failed, dropping flow batch");
                }
            }
            None => {
                counters.flows_dropped.add(flow_drop::PUBLISHER_FAILED, count);
                tracing::error!(subject = %to.subject, partition = %to.partition, flows = count, "Sink task failed mid-publish, dropping flow batch");
            }
        }
        flight.task
    }

    /// Counts a sink's report on `count` flows. Whatever it leaves unreported is counted
    /// as dropped too, so the publisher's books always balance.
    fn account(
        &mut self,
        delivery: Delivery,
        count: u64,
        counters: &PublisherCounters,
        to: &Destination,
    ) {
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
            && let Some(held_back) = self.log.allow(Instant::now())
        {
            tracing::warn!(subject = %to.subject, partition = %to.partition, given_up = ?delivery.given_up, unreported, held_back,
                "Sink gave up part of a flow batch");
        }
    }

    fn start_draining(&mut self) {
        self.draining = true;
        self.flush = true;
    }

    /// Sets the publisher's gauges: flows held (waiting or held back) and in flight.
    fn update_gauges(&self, counters: &PublisherCounters) {
        let buffered = self.waiting.len() + self.held_flows;
        counters.flows_buffered.store(to_u64(buffered), Ordering::Relaxed);
        counters.flows_in_flight.store(to_u64(self.in_flight_flows), Ordering::Relaxed);
    }

    /// Nothing waiting, held back or in flight.
    fn is_empty(&self) -> bool {
        self.waiting.len() == 0 && self.held.is_empty() && self.in_flight.is_empty()
    }

    /// Forgets every flow held or in flight; returns how many flows that was and the
    /// tasks to stop (stopped by the caller, outside the lock their guards take).
    fn abandon(&mut self) -> (u64, Vec<AbortHandle>) {
        let mut count = self.waiting.len() + self.in_flight_flows;
        self.waiting.clear();
        self.received.clear();
        for batch in self.held.drain(..) {
            count += batch.accept().0.len();
        }
        self.held_flows = 0;
        let tasks = self.in_flight.drain().filter_map(|(_, flight)| flight.task).collect();
        self.in_flight_flows = 0;
        (to_u64(count), tasks)
    }
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A publisher's own state: the slot it works on, and whether a [`PublisherMsg::Linger`]
/// is on its way (at most one is).
pub(crate) struct PublisherState {
    slot: Arc<PublisherSlot>,
    linger_armed: bool,
}

impl PublisherState {
    /// Schedules a linger flush if flows wait for one and none is scheduled.
    fn arm_linger(&mut self, myself: &ActorRef<PublisherMsg>) {
        if !self.linger_armed && self.slot.needs_linger() {
            self.linger_armed = true;
            drop(myself.send_after(LINGER, || PublisherMsg::Linger));
        }
    }
}

/// The actor: routes flows into the slot's queue and keeps the linger timer; batches are
/// published by tasks of their own, so the mailbox never waits on a sink.
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
        slot.dispatch();
        let mut state = PublisherState { slot, linger_armed: false };
        state.arm_linger(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PublisherMsg::Flows(batch) => state.slot.offer(batch),
            PublisherMsg::Linger => {
                state.linger_armed = false;
                state.slot.linger();
            }
            PublisherMsg::Dispatch => state.slot.dispatch(),
            #[cfg(any(test, feature = "fault-injection"))]
            PublisherMsg::Panic => {
                panic!("fault injection: publisher {} told to fail", state.slot.to.subject)
            }
        }
        state.arm_linger(&myself);
        Ok(())
    }

    /// Reached after a drain (every queued message handled) or a stop: publish the rest.
    /// Not reached after a panic, when everything stays in the slot for the next actor.
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.slot.drain().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
