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
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;

use crate::batch::{DatagramBatch, RawDatagram};
use crate::budget::Credit;
use crate::exporter::unix_now_ns;
use crate::ratelimit::{KeyedLogLimiter, LogLimiter};

use super::{ListenerMsg, ListenerSpec, MAX_REFUSALS_REMEMBERED, REFUSAL_LOG_INTERVAL};

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams per message from the dispatcher to the listener at most.
const DISPATCH_BATCH: usize = 512;
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

/// Reads datagrams until the channel closes. Each datagram takes a unit of the in-flight
/// budget; with none left it is dropped (drop-newest) and counted as `channel_full`.
pub(crate) async fn receive_loop(
    socket: UdpSocket,
    tx: mpsc::Sender<RawDatagram>,
    spec: Arc<ListenerSpec>,
) {
    let counters = &spec.ctx.counters;
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    let mut full_log = LogLimiter::new(CHANNEL_FULL_LOG_INTERVAL);
    let mut error_log = LogLimiter::new(RECEIVE_ERROR_LOG_INTERVAL);
    let mut denied_log = KeyedLogLimiter::new(REFUSAL_LOG_INTERVAL, MAX_REFUSALS_REMEMBERED);
    let mut oversized_log = LogLimiter::new(CHANNEL_FULL_LOG_INTERVAL);
    loop {
        let (len, source) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                counters.receive_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(held_back) = error_log.allow(Instant::now()) {
                    tracing::warn!(listener = %spec.ctx.name, %error, held_back, "UDP receive failed");
                }
                tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                continue;
            }
        };
        counters.datagrams_received.fetch_add(1, Ordering::Relaxed);
        counters.bytes_received.fetch_add(len as u64, Ordering::Relaxed);
        tracing::trace!(listener = %spec.ctx.name, "Received {len} bytes from {source}");
        if len > spec.max_datagram_bytes {
            drop_oversized(&spec, source, len, &mut oversized_log);
            continue;
        }
        if !spec.sources.is_open() && !spec.sources.accepts(source.ip()) {
            drop_denied(&spec, source.ip(), &mut denied_log);
            continue;
        }
        if !spec.budget.try_acquire() {
            drop_full(&spec, &mut full_log);
            continue;
        }
        let datagram = RawDatagram {
            source,
            received_ns: unix_now_ns(),
            payload: Bytes::copy_from_slice(&buffer[..len]),
        };
        match tx.try_send(datagram) {
            Ok(()) => {}
            // The budget never exceeds the channel's capacity; kept so drop-newest holds
            // whatever the sizes.
            Err(TrySendError::Full(_)) => {
                spec.budget.release(1);
                drop_full(&spec, &mut full_log);
            }
            Err(TrySendError::Closed(_)) => {
                spec.budget.release(1);
                counters.datagrams_lost_in_restart.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Counts a drop-newest drop and warns, at most once per interval.
fn drop_full(spec: &ListenerSpec, log: &mut LogLimiter) {
    spec.ctx.counters.datagrams_dropped.channel_full.fetch_add(1, Ordering::Relaxed);
    if let Some(held_back) = log.allow(Instant::now()) {
        tracing::warn!(
            listener = %spec.ctx.name,
            subject = %spec.ctx.publisher().subject(),
            channel_size = spec.channel_size,
            dropped = held_back + 1,
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
    let limit = DISPATCH_BATCH.min(spec.channel_size).max(1);
    loop {
        let mut datagrams = Vec::new();
        if queue.rx.recv_many(&mut datagrams, limit).await == 0 {
            break;
        }
        let credit = Credit::adopt(Arc::clone(&spec.budget), datagrams.len());
        let batch = DatagramBatch::new(datagrams, credit, Arc::clone(&spec.ctx.counters));
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
    rx: mpsc::Receiver<RawDatagram>,
    spec: Arc<ListenerSpec>,
}

impl QueuedDatagrams {
    pub(crate) fn new(rx: mpsc::Receiver<RawDatagram>, spec: Arc<ListenerSpec>) -> Self {
        Self { rx, spec }
    }
}

impl Drop for QueuedDatagrams {
    fn drop(&mut self) {
        self.rx.close();
        let mut lost = 0usize;
        while self.rx.try_recv().is_ok() {
            lost += 1;
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
