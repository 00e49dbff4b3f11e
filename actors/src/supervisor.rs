//! The root of the tree: one publisher actor per subject and one listener actor per
//! socket (UDP, or IPFIX over TCP/TLS), linked to it. A failed child is restarted (counted, logged "actor restarted");
//! on shutdown it drains the tree front to back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::exporter::ListenerContext;
use crate::listener::{ListenerActor, ListenerArgs, ListenerMsg, ListenerSpec};
use crate::publisher::{PublisherActor, PublisherSlot};
use crate::stream::{StreamArgs, StreamListenerActor, StreamMsg, StreamSpec};

/// Time the shutdown drain may take before what is left is killed and counted.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before retrying a restart that failed (a listener that cannot rebind yet).
const RESTART_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Time a killed actor gets to be gone.
const KILL_WAIT: Duration = Duration::from_secs(1);

/// A child of the root.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Child {
    Listener(usize),
    Publisher(usize),
}

/// A failure to inject, for tests.
#[cfg(any(test, feature = "fault-injection"))]
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// The exporter actor of `exporter` on the listener at index `listener` panics.
    Exporter { listener: usize, exporter: std::net::IpAddr },
    /// The listener actor at this index panics.
    Listener(usize),
    /// The publisher actor at this index (order of first appearance of subjects) panics.
    Publisher(usize),
}

/// Messages of the [`CollectorSupervisor`].
pub(crate) enum RootMsg {
    /// Drain the tree and reply whether it finished within [`DRAIN_TIMEOUT`]; then stop.
    Shutdown(RpcReplyPort<bool>),
    /// Try again to restart a child whose restart failed.
    Restart(Child),
    /// Test hook; replies whether the target existed.
    #[cfg(any(test, feature = "fault-injection"))]
    Inject(Fault, RpcReplyPort<bool>),
}

/// What the root is started with: sockets already bound, so bind errors surface before
/// any actor runs.
pub(crate) struct RootArgs {
    pub(crate) listeners: Vec<(ListenerKind, BoundSocket)>,
    pub(crate) publishers: Vec<Arc<PublisherSlot>>,
}

/// What a listener is (re)started with: a UDP socket's, or a TCP/TLS socket's.
#[derive(Clone)]
pub(crate) enum ListenerKind {
    Datagram(Arc<ListenerSpec>),
    Stream(Arc<StreamSpec>),
}

impl ListenerKind {
    pub(crate) fn ctx(&self) -> &Arc<ListenerContext> {
        match self {
            ListenerKind::Datagram(spec) => &spec.ctx,
            ListenerKind::Stream(spec) => &spec.ctx,
        }
    }

    pub(crate) fn local_addr(&self) -> std::net::SocketAddr {
        match self {
            ListenerKind::Datagram(spec) => spec.local_addr,
            ListenerKind::Stream(spec) => spec.local_addr,
        }
    }
}

/// A socket bound at start-up.
pub(crate) enum BoundSocket {
    Udp(std::net::UdpSocket),
    Tcp(std::net::TcpListener),
}

/// A running listener actor of either kind.
enum ListenerRef {
    Datagram(ActorRef<ListenerMsg>),
    Stream(ActorRef<StreamMsg>),
}

impl ListenerRef {
    fn cell(&self) -> ActorCell {
        match self {
            ListenerRef::Datagram(actor) => actor.get_cell(),
            ListenerRef::Stream(actor) => actor.get_cell(),
        }
    }

    fn drain(&self, reply: RpcReplyPort<()>) -> bool {
        match self {
            ListenerRef::Datagram(actor) => actor.send_message(ListenerMsg::Drain(reply)).is_ok(),
            ListenerRef::Stream(actor) => actor.send_message(StreamMsg::Drain(reply)).is_ok(),
        }
    }

    #[cfg(any(test, feature = "fault-injection"))]
    fn panic(&self) -> bool {
        match self {
            ListenerRef::Datagram(actor) => actor.send_message(ListenerMsg::Panic).is_ok(),
            ListenerRef::Stream(actor) => actor.send_message(StreamMsg::Panic).is_ok(),
        }
    }

    /// The listener answers `reply`: it knows whether the exporter exists.
    #[cfg(any(test, feature = "fault-injection"))]
    fn panic_exporter(&self, exporter: std::net::IpAddr, reply: RpcReplyPort<bool>) {
        let _ = match self {
            ListenerRef::Datagram(actor) => {
                actor.send_message(ListenerMsg::PanicExporter(exporter, reply)).is_ok()
            }
            ListenerRef::Stream(actor) => {
                actor.send_message(StreamMsg::PanicExporter(exporter, reply)).is_ok()
            }
        };
    }
}

/// The root's state: what each child needs to be restarted.
pub(crate) struct RootState {
    listeners: Vec<ListenerChild>,
    publishers: Vec<Arc<PublisherSlot>>,
    children: HashMap<ActorId, Child>,
    shutting_down: bool,
}

struct ListenerChild {
    spec: ListenerKind,
    actor: Option<ListenerRef>,
}

impl RootState {
    async fn spawn_publisher(&mut self, root: ActorCell, index: usize) -> Result<(), SpawnErr> {
        let Some(slot) = self.publishers.get(index) else { return Ok(()) };
        let (actor, _) =
            PublisherActor::spawn_linked(None, PublisherActor, Arc::clone(slot), root).await?;
        self.children.insert(actor.get_id(), Child::Publisher(index));
        slot.attach(actor);
        Ok(())
    }

    async fn spawn_listener(
        &mut self,
        root: ActorCell,
        index: usize,
        socket: Option<BoundSocket>,
    ) -> Result<(), SpawnErr> {
        let Some(child) = self.listeners.get_mut(index) else { return Ok(()) };
        let actor = match &child.spec {
            ListenerKind::Datagram(spec) => {
                let socket = match socket {
                    Some(BoundSocket::Udp(socket)) => Some(socket),
                    _ => None,
                };
                let args = ListenerArgs { spec: Arc::clone(spec), socket };
                let (actor, _) =
                    ListenerActor::spawn_linked(None, ListenerActor, args, root).await?;
                ListenerRef::Datagram(actor)
            }
            ListenerKind::Stream(spec) => {
                let socket = match socket {
                    Some(BoundSocket::Tcp(socket)) => Some(socket),
                    _ => None,
                };
                let args = StreamArgs { spec: Arc::clone(spec), socket };
                let (actor, _) =
                    StreamListenerActor::spawn_linked(None, StreamListenerActor, args, root)
                        .await?;
                ListenerRef::Stream(actor)
            }
        };
        self.children.insert(actor.cell().get_id(), Child::Listener(index));
        child.actor = Some(actor);
        Ok(())
    }

    async fn spawn_children(
        &mut self,
        root: ActorCell,
        sockets: Vec<BoundSocket>,
    ) -> Result<(), SpawnErr> {
        for index in 0..self.publishers.len() {
            self.spawn_publisher(root.clone(), index).await?;
        }
        for (index, socket) in sockets.into_iter().enumerate() {
            self.spawn_listener(root.clone(), index, Some(socket)).await?;
        }
        Ok(())
    }

    /// A child stopped or failed: unless shutting down, count it and restart it.
    async fn child_exited(&mut self, myself: &ActorRef<RootMsg>, id: ActorId, reason: &str) {
        let Some(child) = self.children.remove(&id) else { return };
        if self.shutting_down {
            return;
        }
        match child {
            Child::Listener(index) => {
                let Some(listener) = self.listeners.get_mut(index) else { return };
                listener.actor = None;
                let ctx = listener.spec.ctx();
                ctx.counters.listener_restarts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(actor = "listener", listener = %ctx.name, reason, "actor restarted");
            }
            Child::Publisher(index) => {
                let Some(slot) = self.publishers.get(index) else { return };
                slot.detach();
                slot.counters().publisher_restarts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(actor = "publisher", subject = %slot.subject(), reason, "actor restarted");
            }
        }
        self.restart(myself, child).await;
    }

    /// Starts `child` again; on failure, tries again after [`RESTART_RETRY_DELAY`].
    async fn restart(&mut self, myself: &ActorRef<RootMsg>, child: Child) {
        if self.shutting_down {
            return;
        }
        let result = match child {
            Child::Listener(index) => self.spawn_listener(myself.get_cell(), index, None).await,
            Child::Publisher(index) => self.spawn_publisher(myself.get_cell(), index).await,
        };
        if let Err(error) = result {
            tracing::error!(?child, %error, "Restart failed, retrying in {RESTART_RETRY_DELAY:?}");
            drop(myself.send_after(RESTART_RETRY_DELAY, move || RootMsg::Restart(child)));
        }
    }

    /// Drains front to back: listeners stop receiving and their exporters finish, then
    /// publishers publish what they hold and flush their sinks. Returns whether all of it
    /// finished within [`DRAIN_TIMEOUT`]; what did not is killed and counted as lost.
    async fn shutdown(&mut self) -> bool {
        self.shutting_down = true;
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let listeners_clean = self.drain_listeners(deadline).await;
        let publishers_clean = self.drain_publishers(deadline).await;
        listeners_clean && publishers_clean
    }

    async fn drain_listeners(&mut self, deadline: Instant) -> bool {
        let mut pending = Vec::new();
        for child in &mut self.listeners {
            let Some(actor) = child.actor.take() else { continue };
            let (tx, rx) = oneshot::channel();
            if actor.drain(tx.into()) {
                pending.push((actor.cell(), rx));
            }
        }
        let mut clean = true;
        for (actor, done) in pending {
            let drained = matches!(tokio::time::timeout_at(deadline, done).await, Ok(Ok(())));
            if drained {
                let _ = actor.stop_and_wait(None, Some(remaining(deadline).max(KILL_WAIT))).await;
            } else {
                clean = false;
                tracing::warn!("Listener did not drain in time; killing it and its exporters");
                let _ = actor.kill_and_wait(Some(KILL_WAIT)).await;
            }
        }
        clean
    }

    async fn drain_publishers(&mut self, deadline: Instant) -> bool {
        let mut clean = true;
        for slot in &self.publishers {
            let Some(actor) = slot.detach() else { continue };
            if actor.drain_and_wait(Some(remaining(deadline))).await.is_err() {
                clean = false;
                let _ = actor.kill_and_wait(Some(KILL_WAIT)).await;
                slot.abandon_pending();
            }
        }
        clean
    }

    #[cfg(any(test, feature = "fault-injection"))]
    fn inject(&self, fault: Fault, reply: RpcReplyPort<bool>) {
        let found = match fault {
            Fault::Exporter { listener, exporter } => {
                match self.listeners.get(listener).and_then(|l| l.actor.as_ref()) {
                    Some(actor) => {
                        actor.panic_exporter(exporter, reply);
                        return;
                    }
                    None => false,
                }
            }
            Fault::Listener(index) => self
                .listeners
                .get(index)
                .and_then(|l| l.actor.as_ref())
                .is_some_and(ListenerRef::panic),
            Fault::Publisher(index) => {
                self.publishers.get(index).and_then(|slot| slot.current()).is_some_and(|actor| {
                    actor.send_message(crate::publisher::PublisherMsg::Panic).is_ok()
                })
            }
        };
        let _ = reply.send(found);
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// The root supervisor.
pub(crate) struct CollectorSupervisor;

impl Actor for CollectorSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    /// Publishers first, so the listeners' exporters have somewhere to send flows.
    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RootArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = RootState {
            listeners: Vec::with_capacity(args.listeners.len()),
            publishers: args.publishers,
            children: HashMap::new(),
            shutting_down: false,
        };
        let mut sockets = Vec::with_capacity(args.listeners.len());
        for (spec, socket) in args.listeners {
            state.listeners.push(ListenerChild { spec, actor: None });
            sockets.push(socket);
        }
        if let Err(error) = state.spawn_children(myself.get_cell(), sockets).await {
            // Do not leave the children started so far running without a supervisor.
            myself.stop_children(Some("start-up failed".to_owned()));
            return Err(error.into());
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMsg::Shutdown(reply) => {
                let clean = state.shutdown().await;
                let _ = reply.send(clean);
                myself.stop(Some("shutdown".to_owned()));
            }
            RootMsg::Restart(child) => state.restart(&myself, child).await,
            #[cfg(any(test, feature = "fault-injection"))]
            RootMsg::Inject(fault, reply) => state.inject(fault, reply),
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
                state.child_exited(&myself, cell.get_id(), &error.to_string()).await;
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let reason = reason.unwrap_or_else(|| "stopped".to_owned());
                state.child_exited(&myself, cell.get_id(), &reason).await;
            }
            _ => {}
        }
        Ok(())
    }
}
