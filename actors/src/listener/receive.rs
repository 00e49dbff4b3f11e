//! The two tasks in front of a listener actor: the receive task reads the socket and
//! applies drop-newest backpressure; the dispatcher drains the channel in batches and
//! hands each batch to the listener actor as one message.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ractor::ActorRef;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};
use tokio::task::JoinHandle;

use crate::batch::{DatagramBatch, RawDatagram};
use crate::budget::Credit;
use crate::exporter::unix_now_ns;
use crate::ratelimit::{KeyedLogLimiter, LogLimiter};

use super::burst::{Arrived, BurstBuffer, RECEIVE_BURST};

use super::{ListenerMsg, ListenerSpec, MAX_REFUSALS_REMEMBERED, REFUSAL_LOG_INTERVAL};

/// Datagrams per message from the dispatcher to the listener at most (a burst is never
/// split, so a batch may exceed this by less than one burst).
const DISPATCH_BATCH: usize = 512;
/// How long the dispatcher waits for more datagrams before it hands on a batch of
/// fewer than [`LINGER_BATCH`]. A batch costs a message and a wake-up at each actor on
/// its way whatever its size: at 1 M flows/s in small batches that was about a quarter
/// of the collector's CPU. Flows are minutes old when exported; a millisecond is nothing.
const DISPATCH_LINGER: Duration = Duration::from_millis(1);
/// A batch this large goes without waiting for more (one much larger would be decoded
/// with its flows no longer in the CPU's cache).
const LINGER_BATCH: usize = 32;
/// At most one "channel full" warning per listener this often (every drop is counted).
const CHANNEL_FULL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// At most one receive error warning per listener this often.
const RECEIVE_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Pause after a receive error, so a persistent one cannot spin a core.
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(1);

/// A spawned task, aborted when this guard is dropped (with the actor state that owns it,
/// also after a panic, when `post_stop` does not run).
pub(crate) struct TaskGuard(JoinHandle<()>);

impl TaskGuard {
    pub(crate) fn spawn(task: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(task))
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads datagrams until the channel closes. Each wake-up reads what the socket holds
/// (up to [`RECEIVE_BURST`], one system call) and sends it down the channel as one
/// burst, so a busy socket costs one hand-off per burst rather than per datagram. Each
/// datagram takes a unit of the in-flight budget; with none left it is dropped
/// (drop-newest) and counted as `channel_full`.
pub(crate) async fn receive_loop(
    socket: UdpSocket,
    tx: mpsc::Sender<Vec<RawDatagram>>,
    spec: Arc<ListenerSpec>,
) {
    let mut buffer = BurstBuffer::new(spec.max_datagram_bytes.saturating_add(1));
    let mut receiver = Receiver::new(spec);
    loop {
        // No await from the read to the send: an aborted task never holds a burst.
        let failed = match buffer.read(&socket).await {
            Ok(()) => {
                // One read, one arrival time: the datagrams of a burst came in together.
                let received_ns = unix_now_ns();
                for datagram in buffer.arrived() {
                    receiver.take(datagram, buffer.payload(datagram), received_ns);
                }
                false
            }
            Err(error) => {
                receiver.failed(&error);
                true
            }
        };
        if !receiver.send_burst(&tx) {
            return;
        }
        // After a receive error, pause: a persistent one cannot spin a core.
        if failed {
            tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
        }
    }
}

/// The state of one receive task: its buffer, the burst being gathered and its warnings'
/// rate limits.
struct Receiver {
    spec: Arc<ListenerSpec>,
    burst: Vec<RawDatagram>,
    full_log: LogLimiter,
    error_log: LogLimiter,
    denied_log: KeyedLogLimiter<IpAddr>,
    oversized_log: LogLimiter,
}

impl Receiver {
    fn new(spec: Arc<ListenerSpec>) -> Self {
        Self {
            spec,
            burst: Vec::with_capacity(RECEIVE_BURST),
            full_log: LogLimiter::new(CHANNEL_FULL_LOG_INTERVAL),
            error_log: LogLimiter::new(RECEIVE_ERROR_LOG_INTERVAL),
            denied_log: KeyedLogLimiter::new(REFUSAL_LOG_INTERVAL, MAX_REFUSALS_REMEMBERED),
            oversized_log: LogLimiter::new(CHANNEL_FULL_LOG_INTERVAL),
        }
    }

    /// Counts a receive error and warns, at most once per interval.
    fn failed(&mut self, error: &std::io::Error) {
        let spec = &*self.spec;
        spec.ctx.counters.receive_errors.fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = self.error_log.allow(Instant::now()) {
            tracing::warn!(listener = %spec.ctx.name, %error, held_back, "UDP receive failed");
        }
    }

    /// Counts one datagram received (at `received_ns`) and, when it passes the checks
    /// and the budget has room, adds it to the burst.
    fn take(&mut self, datagram: &Arrived, payload: &[u8], received_ns: u64) {
        let spec = &*self.spec;
        let counters = &spec.ctx.counters;
        let (len, source) = (datagram.len, datagram.source);
        counters.datagrams_received.fetch_add(1, Ordering::Relaxed);
        counters.bytes_received.fetch_add(len as u64, Ordering::Relaxed);
        tracing::trace!(listener = %spec.ctx.name, "Received {len} bytes from {source}");
        if len > spec.max_datagram_bytes {
            drop_oversized(spec, source, len, &mut self.oversized_log);
            return;
        }
        if !spec.sources.is_open() && !spec.sources.accepts(source.ip()) {
            drop_denied(spec, source.ip(), &mut self.denied_log);
            return;
        }
        if !spec.budget.try_acquire() {
            drop_full(spec, 1, &mut self.full_log);
            return;
        }
        self.burst.push(RawDatagram {
            source,
            received_ns,
            payload: Bytes::copy_from_slice(payload),
        });
    }

    /// Sends the burst gathered (if any) down the channel; false once the channel is
    /// closed, when the burst is counted lost.
    fn send_burst(&mut self, tx: &mpsc::Sender<Vec<RawDatagram>>) -> bool {
        if self.burst.is_empty() {
            return true;
        }
        let burst = std::mem::replace(&mut self.burst, Vec::with_capacity(RECEIVE_BURST));
        let count = burst.len();
        match tx.try_send(burst) {
            Ok(()) => true,
            // The budget never exceeds the channel's capacity; kept so drop-newest holds
            // whatever the sizes.
            Err(TrySendError::Full(_)) => {
                self.spec.budget.release(count);
                drop_full(&self.spec, count, &mut self.full_log);
                true
            }
            Err(TrySendError::Closed(_)) => {
                self.spec.budget.release(count);
                self.spec
                    .ctx
                    .counters
                    .datagrams_lost_in_restart
                    .fetch_add(count as u64, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Counts `count` drop-newest drops and warns, at most once per interval.
fn drop_full(spec: &ListenerSpec, count: usize, log: &mut LogLimiter) {
    spec.ctx.counters.datagrams_dropped.channel_full.fetch_add(count as u64, Ordering::Relaxed);
    if let Some(held_back) = log.allow(Instant::now()) {
        tracing::warn!(
            listener = %spec.ctx.name,
            subject = %spec.ctx.publisher().subject(),
            channel_size = spec.channel_size,
            dropped = held_back + count as u64,
            "Publisher channel full, dropping flow message"
        );
    }
}

/// Counts a datagram over `max_datagram_bytes` and warns, at most once per interval.
fn drop_oversized(spec: &ListenerSpec, source: SocketAddr, len: usize, log: &mut LogLimiter) {
    spec.ctx.counters.datagrams_dropped.oversized.fetch_add(1, Ordering::Relaxed);
    if let Some(held_back) = log.allow(Instant::now()) {
        tracing::warn!(
            listener = %spec.ctx.name,
            exporter = %source.ip(),
            bytes = len,
            max_datagram_bytes = spec.max_datagram_bytes,
            held_back,
            "Datagram larger than max_datagram_bytes, dropping it"
        );
    }
}

/// Counts a datagram from a denied (or not allowed) source; logs a source's first drop,
/// then at most one line per source per [`REFUSAL_LOG_INTERVAL`].
fn drop_denied(spec: &ListenerSpec, source: IpAddr, log: &mut KeyedLogLimiter<IpAddr>) {
    spec.ctx.counters.datagrams_dropped.source_denied.fetch_add(1, Ordering::Relaxed);
    if let Some(held_back) = log.allow(source, Instant::now()) {
        tracing::warn!(
            listener = %spec.ctx.name,
            exporter = %source,
            held_back,
            "Source not allowed (allow_sources / deny_sources), dropping its datagrams"
        );
    }
}

/// Moves datagrams from the channel to the listener actor in batches, then says so
/// with [`ListenerMsg::DispatcherDone`] once the channel is closed and empty.
pub(crate) async fn dispatch_loop(
    mut queue: QueuedDatagrams,
    listener: ActorRef<ListenerMsg>,
    spec: Arc<ListenerSpec>,
) {
    while let Some(burst) = queue.rx.recv().await {
        let credit = Credit::adopt(Arc::clone(&spec.budget), burst.len());
        let mut batch = DatagramBatch::new(burst, credit, Arc::clone(&spec.ctx.counters));
        fill(&mut queue.rx, &mut batch).await;
        // If the listener is gone the batch comes back in the error and is counted lost.
        if listener.send_message(ListenerMsg::Datagrams(batch)).is_err() {
            return;
        }
    }
    let _ = listener.send_message(ListenerMsg::DispatcherDone);
}

/// The receiving end of the channel. Datagrams still queued when it is dropped (the
/// listener failed) are counted as lost and their budget given back.
pub(crate) struct QueuedDatagrams {
    rx: mpsc::Receiver<Vec<RawDatagram>>,
    spec: Arc<ListenerSpec>,
}

impl QueuedDatagrams {
    pub(crate) fn new(rx: mpsc::Receiver<Vec<RawDatagram>>, spec: Arc<ListenerSpec>) -> Self {
        Self { rx, spec }
    }
}

/// Adds queued bursts to `batch`, up to [`DISPATCH_BATCH`] datagrams. While it
/// holds fewer than [`LINGER_BATCH`] it waits for more, for [`DISPATCH_LINGER`] at
/// most. A batch aborted while it waits counts its datagrams lost and gives back
/// their budget (see [`DatagramBatch`]).
async fn fill(rx: &mut mpsc::Receiver<Vec<RawDatagram>>, batch: &mut DatagramBatch) {
    let deadline = tokio::time::Instant::now() + DISPATCH_LINGER;
    while batch.datagrams().len() < DISPATCH_BATCH {
        let burst = match rx.try_recv() {
            Ok(burst) => burst,
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) => {
                // The clock, not only the timer: a busy runtime fires timers late.
                let now = tokio::time::Instant::now();
                if batch.datagrams().len() >= LINGER_BATCH || now >= deadline {
                    return;
                }
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(burst)) => burst,
                    // Closed, or the linger is over.
                    Ok(None) | Err(_) => return,
                }
            }
        };
        burst.into_iter().for_each(|datagram| batch.push(datagram));
    }
}

impl Drop for QueuedDatagrams {
    fn drop(&mut self) {
        self.rx.close();
        let mut lost = 0usize;
        while let Ok(burst) = self.rx.try_recv() {
            lost += burst.len();
        }
        if lost > 0 {
            self.spec.budget.release(lost);
            let lost = u64::try_from(lost).unwrap_or(u64::MAX);
            self.spec.ctx.counters.datagrams_lost_in_restart.fetch_add(lost, Ordering::Relaxed);
        }
    }
}

/// Creates a tokio socket from a bound std one.
pub(crate) fn into_tokio(
    socket: std::net::UdpSocket,
    addr: SocketAddr,
) -> Result<UdpSocket, crate::socket::BindError> {
    UdpSocket::from_std(socket).map_err(|source| crate::socket::BindError {
        transport: "UDP",
        addr,
        source,
    })
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::budget::InFlight;
    use crate::counters::ListenerCounters;

    /// A channel of bursts, and a budget with every datagram sent through it acquired.
    struct Queue {
        tx: mpsc::Sender<Vec<RawDatagram>>,
        rx: mpsc::Receiver<Vec<RawDatagram>>,
        budget: Arc<InFlight>,
        counters: Arc<ListenerCounters>,
        next: u16,
    }

    impl Queue {
        fn new() -> Self {
            let (tx, rx) = mpsc::channel(1_000);
            let counters = Arc::new(ListenerCounters::default());
            let budget = InFlight::new(10_000, Arc::clone(&counters));
            Self { tx, rx, budget, counters, next: 0 }
        }

        /// A burst of `n` datagrams, numbered by their source port.
        fn burst(&mut self, n: usize) -> Vec<RawDatagram> {
            (0..n)
                .map(|_| {
                    assert!(self.budget.try_acquire());
                    self.next += 1;
                    RawDatagram {
                        source: SocketAddr::from(([127, 0, 0, 2], self.next)),
                        received_ns: 0,
                        payload: Bytes::new(),
                    }
                })
                .collect()
        }

        fn send(&mut self, n: usize) {
            let burst = self.burst(n);
            self.tx.try_send(burst).expect("room in the channel");
        }

        /// A batch of the first burst, as the dispatcher starts one.
        fn batch(&mut self, n: usize) -> DatagramBatch {
            let burst = self.burst(n);
            let credit = Credit::adopt(Arc::clone(&self.budget), burst.len());
            DatagramBatch::new(burst, credit, Arc::clone(&self.counters))
        }
    }

    fn ports(batch: &DatagramBatch) -> Vec<u16> {
        batch.datagrams().iter().map(|d| d.source.port()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_batch_waits_the_linger_for_more_then_goes() {
        let mut queue = Queue::new();
        let mut batch = queue.batch(2);
        queue.send(3);
        let tx = queue.tx.clone();
        let late = queue.burst(1);
        let too_late = queue.burst(1);
        // Sent once `fill` waits (the clock is paused, so before the linger is over),
        // then one after it.
        tokio::spawn(async move {
            tx.send(late).await.expect("send");
            tokio::time::sleep(DISPATCH_LINGER * 2).await;
            tx.send(too_late).await.expect("send");
        });
        let started = Instant::now();
        fill(&mut queue.rx, &mut batch).await;
        assert_eq!(ports(&batch), [1, 2, 3, 4, 5, 6], "queued and lingered-for bursts joined");
        assert_eq!(started.elapsed(), DISPATCH_LINGER, "then no longer than the linger");
        let next = queue.rx.recv().await.expect("the burst after the linger");
        assert_eq!(next[0].source.port(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_large_enough_takes_what_is_queued_without_waiting() {
        let mut queue = Queue::new();
        let mut batch = queue.batch(LINGER_BATCH);
        queue.send(4);
        let started = Instant::now();
        fill(&mut queue.rx, &mut batch).await;
        assert_eq!(batch.datagrams().len(), LINGER_BATCH + 4);
        assert_eq!(started.elapsed(), Duration::ZERO);

        let mut full = queue.batch(DISPATCH_BATCH - 1);
        queue.send(3);
        queue.send(3);
        fill(&mut queue.rx, &mut full).await;
        assert_eq!(full.datagrams().len(), DISPATCH_BATCH + 2, "a burst is never split");
        assert_eq!(queue.rx.try_recv().map(|burst| burst.len()), Ok(3), "the next one waits");
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_channel_ends_the_wait() {
        let mut queue = Queue::new();
        let mut batch = queue.batch(1);
        queue.send(2);
        let Queue { tx, mut rx, .. } = queue;
        drop(tx);
        let started = Instant::now();
        fill(&mut rx, &mut batch).await;
        assert_eq!(batch.datagrams().len(), 3);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_aborted_while_it_waits_is_counted_lost_and_its_budget_given_back() {
        let mut queue = Queue::new();
        let mut batch = queue.batch(2);
        queue.send(3);
        let mut rx = queue.rx;
        let waiting = tokio::spawn(async move { fill(&mut rx, &mut batch).await });
        tokio::task::yield_now().await;
        waiting.abort();
        assert!(waiting.await.is_err_and(|e| e.is_cancelled()));
        let counters = queue.counters.snapshot();
        assert_eq!((counters.datagrams_lost_in_restart, counters.datagrams_in_flight), (5, 0));
    }
}
