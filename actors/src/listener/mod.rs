//! The actor of one UDP listener. It owns the listener's sockets (`sockets` of them on
//! one address, SO_REUSEPORT, each read by its own receive task), the exporter directory
//! with its cap and idle eviction, and supervises one exporter actor per source IP: a
//! failed exporter is restarted with fresh state.
//!
//! Every receive task feeds the same channel (a burst at a time: what the socket held
//! when the task woke), drained by one dispatcher, so all sockets
//! share the one directory: an exporter has exactly one actor whichever socket the
//! kernel's hash sends its datagrams to. Datagrams reach the actor from the dispatcher a
//! batch at a time; it splits each batch by source and forwards one message per exporter.

mod burst;
mod directory;
mod receive;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ractor::{
    Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};
use thiserror::Error;
use tokio::sync::mpsc;

use crate::batch::{DatagramBatch, RawDatagram};
use crate::budget::InFlight;
use crate::exporter::{ExporterActor, ExporterArgs, ExporterMsg, ListenerContext};
use crate::quota::{ExporterSlot, PartitionQuotas};
use crate::ratelimit::{KeyedLogLimiter, TokenBucket};
use crate::settings::{ExporterLimits, SourceFilter};
use crate::socket::{BindError, bind_udp};

use self::directory::{Directory, ExporterEntry, Limit};
pub(crate) use self::receive::TaskGuard;
use self::receive::{QueuedDatagrams, dispatch_loop, into_tokio, receive_loop};

/// How often exporters age out their templates and pending flows.
const EXPIRE_INTERVAL: Duration = Duration::from_secs(1);
/// A refused source is logged on its first refusal, then at most this often.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(600);
/// Refused sources remembered for that purpose.
const MAX_REFUSALS_REMEMBERED: usize = 4096;
/// At most one "rate limited" warning per exporter this often.
const RATE_LIMIT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Everything needed to (re)start a listener, kept by the root supervisor.
pub(crate) struct ListenerSpec {
    pub(crate) ctx: Arc<ListenerContext>,
    /// The address actually bound (port resolved when 0 was configured): a restarted
    /// listener rebinds exactly here.
    pub(crate) local_addr: SocketAddr,
    pub(crate) buffer_size: usize,
    pub(crate) channel_size: usize,
    pub(crate) limits: ExporterLimits,
    /// Which sources may send.
    pub(crate) sources: SourceFilter,
    /// Datagrams per second per exporter at most.
    pub(crate) max_exporter_pps: Option<NonZeroU32>,
    /// Datagrams larger than this are dropped and counted as `oversized`.
    pub(crate) max_datagram_bytes: usize,
    /// UDP sockets bound on `local_addr` (at least 1).
    pub(crate) sockets: usize,
    pub(crate) stats_interval: Duration,
    pub(crate) budget: Arc<InFlight>,
    /// Per-partition limits, shared by every listener.
    pub(crate) quotas: Arc<PartitionQuotas>,
}

/// Arguments of a listener: its spec, and the socket bound at start-up (`None` on a
/// restart, when it rebinds); it binds its other sockets itself.
pub(crate) struct ListenerArgs {
    pub(crate) spec: Arc<ListenerSpec>,
    pub(crate) socket: Option<std::net::UdpSocket>,
}

/// Messages of a [`ListenerActor`].
pub(crate) enum ListenerMsg {
    /// A batch from the dispatcher.
    Datagrams(DatagramBatch),
    /// The dispatcher has forwarded everything and stopped.
    DispatcherDone,
    /// Periodic: evict idle exporters, have exporters expire state and log statistics.
    Housekeeping,
    /// Stop receiving, hand everything queued to the exporters, let them finish, reply.
    Drain(RpcReplyPort<()>),
    /// Test hook: make the exporter of this address fail; replies whether it exists.
    #[cfg(any(test, feature = "fault-injection"))]
    PanicExporter(IpAddr, RpcReplyPort<bool>),
    /// Test hook: fail on purpose, to exercise the restart path.
    #[cfg(any(test, feature = "fault-injection"))]
    Panic,
}

/// Why a listener stopped working.
#[derive(Debug, Error)]
enum ListenerError {
    #[error("the receive task of listener {0} stopped")]
    ReceiveStopped(String),
}

/// A listener's state.
pub(crate) struct ListenerState {
    spec: Arc<ListenerSpec>,
    directory: Directory,
    /// The receive task of each socket; dropped (aborted) to stop receiving.
    receivers: Vec<TaskGuard>,
    _dispatcher: TaskGuard,
    /// Set while draining: the reply to send once everything is finished.
    drain_reply: Option<RpcReplyPort<()>>,
    last_expire: Instant,
    last_stats: Instant,
    refusals: KeyedLogLimiter<IpAddr>,
    rate_limited: KeyedLogLimiter<IpAddr>,
}

impl ListenerState {
    fn name(&self) -> &str {
        &self.spec.ctx.name
    }

    /// Splits a dispatcher batch by source and forwards each part to its exporter.
    async fn route(&mut self, myself: &ActorRef<ListenerMsg>, batch: DatagramBatch) {
        let counters = Arc::clone(&self.spec.ctx.counters);
        let (datagrams, mut credit) = batch.into_parts();
        let now = Instant::now();
        for (addr, group) in group_by_source(datagrams) {
            let units = group.len();
            let part = DatagramBatch::new(group, credit.split(units), Arc::clone(&counters));
            self.deliver(myself, addr, part, now).await;
        }
    }

    /// Hands `batch` to the exporter of `addr`, starting one if the caps allow.
    async fn deliver(
        &mut self,
        myself: &ActorRef<ListenerMsg>,
        addr: IpAddr,
        batch: DatagramBatch,
        now: Instant,
    ) {
        if self.directory.touch(addr, now).is_none() {
            if self.directory.len() >= self.spec.limits.max_exporters {
                self.refuse(addr, batch, now);
                return;
            }
            let spec = Arc::clone(&self.spec);
            let partition = spec.ctx.registry.partition_of(addr, spec.ctx.partition());
            let slot = match self.spec.quotas.admit(partition, batch.datagrams().len()) {
                Ok(slot) => slot,
                Err(full) => {
                    self.refuse_for_partition(addr, partition, full.max_exporters, batch, now);
                    return;
                }
            };
            if let Err(error) = self.spawn_exporter(myself, addr, slot, now).await {
                // The batch is dropped here: counted as lost.
                tracing::warn!(listener = %self.name(), exporter = %addr, %error, "Cannot start exporter actor");
                return;
            }
            self.spec.ctx.counters.exporters_added.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                lifecycle = "exporter.added",
                listener = %self.name(),
                exporter = %addr,
                partition = %partition,
                "Exporter added"
            );
        }
        let Some(batch) = self.rate_limit(addr, batch, now) else { return };
        if let Some(actor) = self.directory.get(addr) {
            // If the exporter just died the batch comes back in the error: counted lost.
            let _ = actor.send_message(ExporterMsg::Datagrams(batch));
        }
    }

    /// Drops what `addr` sent beyond `max_exporter_pps` or its partition's `max_pps`
    /// (the newest datagrams of the batch), counted as `rate_limited` or
    /// `partition_rate_limited`; returns the rest, if any.
    fn rate_limit(
        &mut self,
        addr: IpAddr,
        batch: DatagramBatch,
        now: Instant,
    ) -> Option<DatagramBatch> {
        let wanted = batch.datagrams().len();
        let (allowed, limit) = self.directory.admit(addr, wanted, now);
        let Some(limit) = limit else { return Some(batch) };
        let counters = Arc::clone(&self.spec.ctx.counters);
        let (mut datagrams, mut credit) = batch.into_parts();
        let excess = datagrams.split_off(allowed);
        let kept = DatagramBatch::new(datagrams, credit.split(allowed), Arc::clone(&counters));
        drop(credit);
        let dropped = u64::try_from(excess.len()).unwrap_or(u64::MAX);
        let drops = &counters.datagrams_dropped;
        match limit {
            Limit::Exporter => drops.rate_limited.fetch_add(dropped, Ordering::Relaxed),
            Limit::Partition => drops.partition_rate_limited.fetch_add(dropped, Ordering::Relaxed),
        };
        if let Some(held_back) = self.rate_limited.allow(addr, now) {
            self.log_rate_limited(addr, limit, dropped, held_back);
        }
        (allowed > 0).then_some(kept)
    }

    fn log_rate_limited(&self, addr: IpAddr, limit: Limit, dropped: u64, held_back: u64) {
        match limit {
            Limit::Exporter => tracing::warn!(
                listener = %self.name(),
                exporter = %addr,
                max_exporter_pps = self.spec.max_exporter_pps.map_or(0, NonZeroU32::get),
                dropped,
                held_back,
                "Exporter over its rate limit, dropping datagrams"
            ),
            Limit::Partition => tracing::warn!(
                listener = %self.name(),
                exporter = %addr,
                partition = self.partition_of(addr),
                dropped,
                held_back,
                "Partition over its rate limit (max_pps), dropping datagrams"
            ),
        }
    }

    /// Drops the datagrams of a source refused by the exporter cap, and says so.
    fn refuse(&mut self, addr: IpAddr, batch: DatagramBatch, now: Instant) {
        let refused = discard(batch);
        self.spec.ctx.counters.datagrams_dropped.exporter_cap.fetch_add(refused, Ordering::Relaxed);
        if let Some(held_back) = self.refusals.allow(addr, now) {
            tracing::warn!(
                listener = %self.name(),
                exporter = %addr,
                max_exporters = self.spec.limits.max_exporters,
                held_back,
                "Exporter limit reached, dropping datagrams from a new source"
            );
        }
    }

    /// Drops the datagrams of a source whose partition has its `max_exporters` live.
    fn refuse_for_partition(
        &mut self,
        addr: IpAddr,
        partition: &str,
        max_exporters: usize,
        batch: DatagramBatch,
        now: Instant,
    ) {
        let refused = discard(batch);
        let drops = &self.spec.ctx.counters.datagrams_dropped;
        drops.partition_exporter_cap.fetch_add(refused, Ordering::Relaxed);
        if let Some(held_back) = self.refusals.allow(addr, now) {
            tracing::warn!(
                listener = %self.name(),
                exporter = %addr,
                partition,
                max_exporters,
                held_back,
                "Partition exporter limit reached, dropping datagrams from a new source"
            );
        }
    }

    async fn spawn_exporter(
        &mut self,
        myself: &ActorRef<ListenerMsg>,
        addr: IpAddr,
        slot: Option<ExporterSlot>,
        now: Instant,
    ) -> Result<(), SpawnErr> {
        let args =
            ExporterArgs { addr, id: addr.into(), label: None, ctx: Arc::clone(&self.spec.ctx) };
        let (actor, _) =
            ExporterActor::spawn_linked(None, ExporterActor, args, myself.get_cell()).await?;
        let bucket = self.spec.max_exporter_pps.map(|rate| TokenBucket::new(rate, now));
        self.directory.insert(addr, ExporterEntry { actor, last_seen: now, bucket, slot });
        self.update_live();
        Ok(())
    }

    /// An exporter failed: count it, and start a fresh one in its place.
    async fn exporter_failed(&mut self, myself: &ActorRef<ListenerMsg>, id: ActorId, reason: &str) {
        let Some((addr, entry)) = self.directory.remove_id(id) else { return };
        let counters = &self.spec.ctx.counters;
        counters.exporters_restarted.fetch_add(1, Ordering::Relaxed);
        counters.exporters.forget(&addr.into(), id.pid());
        tracing::warn!(
            actor = "exporter",
            listener = %self.name(),
            exporter = %addr,
            partition = self.partition_of(addr),
            reason,
            datagrams_lost_total = counters.datagrams_lost_in_restart.load(Ordering::Relaxed),
            "actor restarted"
        );
        if self.drain_reply.is_some() {
            self.update_live();
            return;
        }
        // The fresh actor keeps the failed one's place in its partition.
        if let Err(error) = self.spawn_exporter(myself, addr, entry.slot, Instant::now()).await {
            self.update_live();
            tracing::warn!(listener = %self.name(), exporter = %addr, %error,
                "Cannot restart exporter actor; it starts again with its next datagram");
        }
    }

    /// An exporter stopped without failing while still in the directory.
    fn exporter_stopped(&mut self, id: ActorId) {
        if let Some((addr, _)) = self.directory.remove_id(id) {
            self.update_live();
            tracing::debug!(listener = %self.name(), exporter = %addr, "Exporter actor stopped");
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.evict_idle(now);
        if now.duration_since(self.last_expire) >= EXPIRE_INTERVAL {
            self.last_expire = now;
            self.broadcast(|| ExporterMsg::Expire);
        }
        if now.duration_since(self.last_stats) >= self.spec.stats_interval {
            self.last_stats = now;
            self.broadcast(|| ExporterMsg::LogStats);
        }
    }

    /// Stops exporters silent for `idle_timeout`, freeing their state. Each finishes
    /// what it already holds before stopping.
    fn evict_idle(&mut self, now: Instant) {
        let idle_timeout = self.spec.limits.idle_timeout;
        for (addr, entry) in self.directory.take_idle(now, idle_timeout) {
            let _ = entry.actor.drain();
            self.spec.ctx.counters.exporters_evicted.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                listener = %self.name(),
                exporter = %addr,
                partition = self.partition_of(addr),
                idle_secs = now.saturating_duration_since(entry.last_seen).as_secs_f64(),
                "exporter evicted"
            );
        }
        self.update_live();
    }

    /// The partition of the exporter at `addr`.
    fn partition_of(&self, addr: IpAddr) -> &str {
        self.spec.ctx.registry.partition_of(addr, self.spec.ctx.partition())
    }

    fn broadcast(&self, message: impl Fn() -> ExporterMsg) {
        for actor in self.directory.actors() {
            let _ = actor.send_message(message());
        }
    }

    /// The dispatcher is done: every datagram is with an exporter. Let every exporter
    /// (evicted ones still finishing included) work through its mailbox and stop.
    async fn finish_drain(&mut self, myself: &ActorRef<ListenerMsg>) {
        self.directory.take_all();
        myself.drain_children_and_wait(None).await;
        self.update_live();
    }

    fn update_live(&self) {
        let live = u64::try_from(self.directory.len()).unwrap_or(u64::MAX);
        self.spec.ctx.counters.exporters_live.store(live, Ordering::Relaxed);
    }
}

/// Gives up a batch's datagrams (and their budget), returning how many there were.
fn discard(batch: DatagramBatch) -> u64 {
    let (datagrams, credit) = batch.into_parts();
    drop(credit);
    u64::try_from(datagrams.len()).unwrap_or(u64::MAX)
}

/// Groups datagrams by source IP, keeping arrival order within each source. IPv4-mapped
/// IPv6 sources count as their IPv4 address, so a dual-stack socket sees one exporter.
fn group_by_source(datagrams: Vec<RawDatagram>) -> Vec<(IpAddr, Vec<RawDatagram>)> {
    let mut groups: Vec<(IpAddr, Vec<RawDatagram>)> = Vec::new();
    let mut index: HashMap<IpAddr, usize> = HashMap::new();
    for datagram in datagrams {
        let addr = datagram.source.ip().to_canonical();
        match index.get(&addr) {
            Some(&i) => groups[i].1.push(datagram),
            None => {
                index.insert(addr, groups.len());
                groups.push((addr, vec![datagram]));
            }
        }
    }
    groups
}

/// The listener's sockets, all on `local_addr`: the one bound at start-up, if given, and
/// as many more as `spec.sockets` asks (SO_REUSEPORT lets them share the address).
fn bind_sockets(
    spec: &ListenerSpec,
    bound: Option<std::net::UdpSocket>,
) -> Result<Vec<tokio::net::UdpSocket>, BindError> {
    let wanted = spec.sockets.max(1);
    let mut sockets = Vec::with_capacity(wanted);
    if let Some(socket) = bound {
        sockets.push(into_tokio(socket, spec.local_addr)?);
    }
    while sockets.len() < wanted {
        let socket = bind_udp(spec.local_addr, spec.buffer_size)?;
        sockets.push(into_tokio(socket, spec.local_addr)?);
    }
    Ok(sockets)
}

/// How often housekeeping runs: often enough to evict within a quarter of the idle
/// timeout and to keep the stats interval, never busier than every 10 ms nor lazier than
/// every second.
fn housekeeping_period(idle_timeout: Duration, stats_interval: Duration) -> Duration {
    (idle_timeout / 4).min(stats_interval).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// The actor: owns a [`ListenerState`] and routes messages to it.
pub(crate) struct ListenerActor;

impl Actor for ListenerActor {
    type Msg = ListenerMsg;
    type State = ListenerState;
    type Arguments = ListenerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ListenerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let spec = args.spec;
        let sockets = bind_sockets(&spec, args.socket)?;
        let (tx, rx) = mpsc::channel(spec.channel_size.max(1));
        let receivers = sockets
            .into_iter()
            .map(|socket| TaskGuard::spawn(receive_loop(socket, tx.clone(), Arc::clone(&spec))))
            .collect();
        // The channel closes (and the dispatcher finishes) once every receive task is gone.
        drop(tx);
        let queue = QueuedDatagrams::new(rx, Arc::clone(&spec));
        let dispatcher = TaskGuard::spawn(dispatch_loop(queue, myself.clone(), Arc::clone(&spec)));
        drop(myself.send_interval(
            housekeeping_period(spec.limits.idle_timeout, spec.stats_interval),
            || ListenerMsg::Housekeeping,
        ));
        spec.ctx.counters.exporters_live.store(0, Ordering::Relaxed);
        // A restarted listener starts without exporters: their rows went with them.
        spec.ctx.counters.exporters.clear();
        tracing::info!(listener = %spec.ctx.name, local_addr = %spec.local_addr, sockets = spec.sockets, subject = %spec.ctx.publisher().subject(), "Listener started");
        let now = Instant::now();
        Ok(ListenerState {
            spec,
            directory: Directory::default(),
            receivers,
            _dispatcher: dispatcher,
            drain_reply: None,
            last_expire: now,
            last_stats: now,
            refusals: KeyedLogLimiter::new(REFUSAL_LOG_INTERVAL, MAX_REFUSALS_REMEMBERED),
            rate_limited: KeyedLogLimiter::new(RATE_LIMIT_LOG_INTERVAL, MAX_REFUSALS_REMEMBERED),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ListenerMsg::Datagrams(batch) => state.route(&myself, batch).await,
            ListenerMsg::Housekeeping => state.housekeeping(Instant::now()),
            ListenerMsg::Drain(reply) => {
                state.receivers.clear();
                state.drain_reply = Some(reply);
            }
            ListenerMsg::DispatcherDone => match state.drain_reply.take() {
                Some(reply) => {
                    state.finish_drain(&myself).await;
                    let _ = reply.send(());
                }
                None => return Err(ListenerError::ReceiveStopped(state.name().to_owned()).into()),
            },
            #[cfg(any(test, feature = "fault-injection"))]
            ListenerMsg::PanicExporter(addr, reply) => {
                let found = state
                    .directory
                    .get(addr)
                    .is_some_and(|actor| actor.send_message(ExporterMsg::Panic).is_ok());
                let _ = reply.send(found);
            }
            #[cfg(any(test, feature = "fault-injection"))]
            ListenerMsg::Panic => panic!("fault injection: listener {} told to fail", state.name()),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                state.exporter_failed(&myself, cell.get_id(), &error.to_string()).await;
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => state.exporter_stopped(cell.get_id()),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn datagram(ip: [u8; 4], port: u16) -> RawDatagram {
        RawDatagram { source: SocketAddr::from((ip, port)), received_ns: 0, payload: Bytes::new() }
    }

    #[test]
    fn groups_by_source_ip_in_arrival_order() {
        let groups = group_by_source(vec![
            datagram([10, 0, 0, 1], 1),
            datagram([10, 0, 0, 2], 1),
            datagram([10, 0, 0, 1], 2),
        ]);
        let summary: Vec<(IpAddr, Vec<u16>)> = groups
            .iter()
            .map(|(addr, group)| (*addr, group.iter().map(|d| d.source.port()).collect()))
            .collect();
        assert_eq!(
            summary,
            vec![(IpAddr::from([10, 0, 0, 1]), vec![1, 2]), (IpAddr::from([10, 0, 0, 2]), vec![1])]
        );
    }

    #[test]
    fn v4_mapped_sources_are_their_ipv4_exporter() {
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:5".parse().unwrap();
        let raw = RawDatagram { source: mapped, received_ns: 0, payload: Bytes::new() };
        let groups = group_by_source(vec![raw, datagram([10, 0, 0, 1], 6)]);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].0, IpAddr::from([10, 0, 0, 1]));
    }

    #[test]
    fn housekeeping_period_is_bounded() {
        let stats = Duration::from_secs(30);
        assert_eq!(housekeeping_period(Duration::from_millis(8), stats), Duration::from_millis(10));
        assert_eq!(
            housekeeping_period(Duration::from_millis(400), stats),
            Duration::from_millis(100)
        );
        assert_eq!(housekeeping_period(Duration::from_secs(300), stats), Duration::from_secs(1));
        let stats = Duration::from_millis(200);
        assert_eq!(
            housekeeping_period(Duration::from_secs(300), stats),
            Duration::from_millis(200)
        );
    }
}
