//! The actor of one IPFIX-over-TCP or IPFIX-over-TLS listening socket (RFC 7011 §10.4),
//! for exporters whose UDP source addresses cannot be trusted.
//!
//! ```text
//! accept task ──Accepted──▶ StreamListenerActor ──spawns──▶ session task per connection
//!   (allow/deny, max_sessions)        │                      (TLS handshake, framing, budget)
//!                                     └─ supervises ExporterActor per session ◀── messages
//! ```
//!
//! Each connection is an exporter of its own, with its own decoder session: templates
//! live and die with the connection (RFC 7011 §8), so two sessions from one address never
//! share templates. Over TLS the exporter is named by its client certificate. A session
//! whose decoder fails is closed and counted; the listener lives on. Each IPFIX message is
//! counted like a UDP datagram, so the listener's accounting is the same.

mod accept;
mod framing;
mod session;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ractor::{
    Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};
use tokio::sync::{Semaphore, watch};

use crate::budget::InFlight;
use crate::counters::{ExporterId, close};
use crate::exporter::{ExporterActor, ExporterArgs, ExporterMsg, ListenerContext};
use crate::listener::TaskGuard;
use crate::quota::PartitionQuotas;
use crate::ratelimit::KeyedLogLimiter;
use crate::settings::{ListenerSettings, SourceFilter, StreamSettings};
use crate::socket::{BindError, bind_tcp};

use self::accept::accept_loop;
use self::session::{Connection, SessionTask};

/// How often exporters age out their templates and pending flows.
const EXPIRE_INTERVAL: Duration = Duration::from_secs(1);
/// A peer's refused connections, failed handshakes and framing errors are logged on the
/// first one, then at most this often (every one is counted).
const PEER_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Peers remembered for that purpose.
const MAX_PEERS_REMEMBERED: usize = 4096;

/// Everything needed to (re)start a stream listener, kept by the root supervisor.
pub(crate) struct StreamSpec {
    pub(crate) ctx: Arc<ListenerContext>,
    /// The address actually bound; a restarted listener rebinds exactly here.
    pub(crate) local_addr: SocketAddr,
    pub(crate) buffer_size: usize,
    pub(crate) sources: SourceFilter,
    pub(crate) settings: StreamSettings,
    pub(crate) stats_interval: Duration,
    pub(crate) budget: Arc<InFlight>,
    /// One permit per open connection (`max_sessions`).
    pub(crate) slots: Arc<Semaphore>,
    /// Per-peer limit on warnings, shared by the accept and session tasks.
    pub(crate) warnings: Mutex<KeyedLogLimiter<IpAddr>>,
    /// Per-partition limits, shared by every listener.
    pub(crate) quotas: Arc<PartitionQuotas>,
}

impl StreamSpec {
    /// The spec of `listener`, a stream listener with `settings`, bound at `local_addr`.
    pub(crate) fn new(
        ctx: Arc<ListenerContext>,
        local_addr: SocketAddr,
        listener: &ListenerSettings,
        settings: StreamSettings,
        stats_interval: Duration,
        budget: Arc<InFlight>,
        quotas: Arc<PartitionQuotas>,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(settings.max_sessions));
        let warnings = Mutex::new(KeyedLogLimiter::new(PEER_LOG_INTERVAL, MAX_PEERS_REMEMBERED));
        Self {
            ctx,
            local_addr,
            buffer_size: listener.buffer_size,
            sources: listener.sources.clone(),
            settings,
            stats_interval,
            budget,
            slots,
            warnings,
            quotas,
        }
    }

    /// `Some(held back)` when a warning about `peer` may be logged now.
    pub(crate) fn warn_allowed(&self, peer: IpAddr) -> Option<u64> {
        let mut warnings = self.warnings.lock().unwrap_or_else(PoisonError::into_inner);
        warnings.allow(peer, Instant::now())
    }
}

/// Arguments of a stream listener: its spec, and the socket bound at start-up (`None` on
/// a restart, when it rebinds).
pub(crate) struct StreamArgs {
    pub(crate) spec: Arc<StreamSpec>,
    pub(crate) socket: Option<std::net::TcpListener>,
}

/// Messages of a [`StreamListenerActor`].
pub(crate) enum StreamMsg {
    /// A connection the accept task admitted.
    Accepted(Connection),
    /// A connection is ready to deliver messages (its TLS handshake succeeded): start its
    /// decoder actor. Replies with it, or `None` when the listener is draining.
    Open {
        serial: u64,
        label: Option<Arc<str>>,
        reply: RpcReplyPort<Option<ActorRef<ExporterMsg>>>,
    },
    /// A connection's task ended: why, if it had become a session (one of [`close`]).
    Ended { serial: u64, reason: Option<&'static str> },
    /// Periodic: have exporters expire state and log statistics.
    Housekeeping,
    /// Stop accepting, let sessions hand on what they read, close them, let their
    /// exporters finish, reply.
    Drain(RpcReplyPort<()>),
    /// Test hook: make the exporter of a session from this address fail; replies whether
    /// there was one.
    #[cfg(any(test, feature = "fault-injection"))]
    PanicExporter(IpAddr, RpcReplyPort<bool>),
    /// Test hook: fail on purpose, to exercise the restart path.
    #[cfg(any(test, feature = "fault-injection"))]
    Panic,
}

/// One connection, from its acceptance to its end.
struct Session {
    peer: SocketAddr,
    /// Its task; dropping it closes the connection.
    _task: TaskGuard,
    opened: Option<Opened>,
}

/// A session's decoder actor and how it is named.
struct Opened {
    actor: ActorRef<ExporterMsg>,
    id: ExporterId,
    since: Instant,
}

/// A stream listener's state.
pub(crate) struct StreamState {
    spec: Arc<StreamSpec>,
    /// The accept task; dropped (aborted) to stop accepting and close the socket.
    accept: Option<TaskGuard>,
    /// Tells the session tasks to stop reading.
    shutdown: watch::Sender<bool>,
    sessions: HashMap<u64, Session>,
    /// Each live exporter actor's session and table key (kept until the actor stops,
    /// which may be after its session ended).
    by_actor: HashMap<ActorId, (u64, ExporterId)>,
    next_serial: u64,
    drain_reply: Option<RpcReplyPort<()>>,
    last_stats: Instant,
}

impl StreamState {
    fn name(&self) -> &str {
        &self.spec.ctx.name
    }

    /// Starts the task of an admitted connection.
    fn accepted(&mut self, myself: &ActorRef<StreamMsg>, connection: Connection) {
        if self.drain_reply.is_some() {
            return; // Draining: the connection is closed unread.
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        let peer = connection.peer;
        let task = SessionTask {
            serial,
            listener: myself.clone(),
            spec: Arc::clone(&self.spec),
            shutdown: self.shutdown.subscribe(),
        };
        let task = TaskGuard::spawn(task.run(connection));
        self.sessions.insert(serial, Session { peer, _task: task, opened: None });
        self.update_live();
    }

    /// Starts the decoder actor of session `serial`.
    async fn open(
        &mut self,
        myself: &ActorRef<StreamMsg>,
        serial: u64,
        label: Option<Arc<str>>,
    ) -> Option<ActorRef<ExporterMsg>> {
        if self.drain_reply.is_some() {
            return None;
        }
        let peer = self.sessions.get(&serial)?.peer;
        let addr = peer.ip().to_canonical();
        let id = label.clone().map_or(ExporterId::Addr(addr), ExporterId::Name);
        let args = ExporterArgs { addr, id: id.clone(), label, ctx: Arc::clone(&self.spec.ctx) };
        let spawned: Result<_, SpawnErr> =
            ExporterActor::spawn_linked(None, ExporterActor, args, myself.get_cell()).await;
        let actor = match spawned {
            Ok((actor, _)) => actor,
            Err(error) => {
                tracing::warn!(listener = %self.name(), exporter = %id, peer = %peer, %error, "Cannot start the session's exporter actor; closing it");
                return None;
            }
        };
        self.by_actor.insert(actor.get_id(), (serial, id.clone()));
        if let Some(session) = self.sessions.get_mut(&serial) {
            session.opened =
                Some(Opened { actor: actor.clone(), id: id.clone(), since: Instant::now() });
        }
        let counters = &self.spec.ctx.counters;
        counters.exporters_added.fetch_add(1, Ordering::Relaxed);
        counters.sessions.accepted.fetch_add(1, Ordering::Relaxed);
        self.update_live();
        tracing::info!(
            lifecycle = "exporter.added",
            listener = %self.name(),
            exporter = %id,
            peer = %peer,
            partition = %self.spec.ctx.partition(),
            "Exporter session opened"
        );
        Some(actor)
    }

    /// A session's task ended: its exporter finishes what it holds and stops.
    async fn ended(
        &mut self,
        myself: &ActorRef<StreamMsg>,
        serial: u64,
        reason: Option<&'static str>,
    ) {
        if let Some(session) = self.sessions.remove(&serial)
            && let Some(opened) = session.opened
        {
            let reason = reason.unwrap_or(close::PEER_CLOSED);
            self.closed(&session.peer, &opened, reason);
            let _ = opened.actor.drain();
        }
        self.update_live();
        self.finish_drain_if_done(myself).await;
    }

    /// A session's exporter failed: its connection is closed (its task aborted), what it
    /// held is counted lost, and the listener carries on.
    async fn exporter_failed(&mut self, myself: &ActorRef<StreamMsg>, id: ActorId, reason: &str) {
        let Some((serial, exporter)) = self.by_actor.remove(&id) else { return };
        // A failed actor does not clear its own row.
        self.spec.ctx.counters.exporters.forget(&exporter, id.pid());
        if let Some(session) = self.sessions.remove(&serial)
            && let Some(opened) = session.opened
        {
            tracing::warn!(actor = "exporter", listener = %self.name(), exporter = %opened.id, peer = %session.peer, reason,
                "Exporter session failed; closing its connection (the exporter reconnects and resends its templates)");
            self.closed(&session.peer, &opened, close::SESSION_FAILED);
        }
        self.update_live();
        self.finish_drain_if_done(myself).await;
    }

    /// Counts and logs the end of an opened session.
    fn closed(&self, peer: &SocketAddr, opened: &Opened, reason: &'static str) {
        self.spec.ctx.counters.sessions.closed.add(reason, 1);
        tracing::info!(
            lifecycle = "exporter.removed",
            listener = %self.name(),
            exporter = %opened.id,
            peer = %peer,
            reason,
            session_secs = opened.since.elapsed().as_secs_f64(),
            "Exporter session closed"
        );
    }

    fn housekeeping(&mut self, now: Instant) {
        let stats = now.duration_since(self.last_stats) >= self.spec.stats_interval;
        if stats {
            self.last_stats = now;
        }
        for opened in self.sessions.values().filter_map(|s| s.opened.as_ref()) {
            let _ = opened.actor.send_message(ExporterMsg::Expire);
            if stats {
                let _ = opened.actor.send_message(ExporterMsg::LogStats);
            }
        }
    }

    fn drain(&mut self, reply: RpcReplyPort<()>) {
        self.accept = None;
        self.shutdown.send_replace(true);
        self.drain_reply = Some(reply);
    }

    /// Once draining and every session task has ended: let every exporter work through
    /// its mailbox and stop, then reply.
    async fn finish_drain_if_done(&mut self, myself: &ActorRef<StreamMsg>) {
        if self.drain_reply.is_none() || !self.sessions.is_empty() {
            return;
        }
        myself.drain_children_and_wait(None).await;
        self.update_live();
        if let Some(reply) = self.drain_reply.take() {
            let _ = reply.send(());
        }
    }

    fn update_live(&self) {
        let counters = &self.spec.ctx.counters;
        let open = self.sessions.values().filter(|s| s.opened.is_some()).count();
        counters.exporters_live.store(to_u64(open), Ordering::Relaxed);
        counters.sessions.live.store(to_u64(self.sessions.len()), Ordering::Relaxed);
    }
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The actor: owns a [`StreamState`] and routes messages to it.
pub(crate) struct StreamListenerActor;

impl Actor for StreamListenerActor {
    type Msg = StreamMsg;
    type State = StreamState;
    type Arguments = StreamArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: StreamArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let spec = args.spec;
        let socket = match args.socket {
            Some(socket) => socket,
            None => bind_tcp(spec.local_addr, spec.buffer_size)?,
        };
        let socket = tokio::net::TcpListener::from_std(socket).map_err(|source| BindError {
            transport: "TCP",
            addr: spec.local_addr,
            source,
        })?;
        let accept = TaskGuard::spawn(accept_loop(socket, myself.clone(), Arc::clone(&spec)));
        drop(myself.send_interval(EXPIRE_INTERVAL, || StreamMsg::Housekeeping));
        let counters = &spec.ctx.counters;
        counters.exporters_live.store(0, Ordering::Relaxed);
        counters.sessions.live.store(0, Ordering::Relaxed);
        // A restarted listener starts without sessions: their rows went with them.
        counters.exporters.clear();
        let tls = spec.settings.tls.is_some();
        tracing::info!(listener = %spec.ctx.name, local_addr = %spec.local_addr, tls, max_sessions = spec.settings.max_sessions, subject = %spec.ctx.publisher().subject(), "Listener started");
        let (shutdown, _) = watch::channel(false);
        Ok(StreamState {
            spec,
            accept: Some(accept),
            shutdown,
            sessions: HashMap::new(),
            by_actor: HashMap::new(),
            next_serial: 0,
            drain_reply: None,
            last_stats: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            StreamMsg::Accepted(connection) => state.accepted(&myself, connection),
            StreamMsg::Open { serial, label, reply } => {
                let actor = state.open(&myself, serial, label).await;
                let _ = reply.send(actor);
            }
            StreamMsg::Ended { serial, reason } => state.ended(&myself, serial, reason).await,
            StreamMsg::Housekeeping => state.housekeeping(Instant::now()),
            StreamMsg::Drain(reply) => {
                state.drain(reply);
                state.finish_drain_if_done(&myself).await;
            }
            #[cfg(any(test, feature = "fault-injection"))]
            StreamMsg::PanicExporter(addr, reply) => {
                let found = state
                    .sessions
                    .values()
                    .filter(|s| s.peer.ip().to_canonical() == addr)
                    .find_map(|s| s.opened.as_ref())
                    .is_some_and(|o| o.actor.send_message(ExporterMsg::Panic).is_ok());
                let _ = reply.send(found);
            }
            #[cfg(any(test, feature = "fault-injection"))]
            StreamMsg::Panic => panic!("fault injection: listener {} told to fail", state.name()),
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
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.by_actor.remove(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}
