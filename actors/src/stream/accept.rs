//! The accept task of a stream listener: admits a connection when its peer is allowed,
//! a `max_sessions` slot is free and its partition is below its `max_exporters`, and
//! hands it to the listener actor; closes it at once otherwise, counted by reason and
//! logged once per peer per interval.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ractor::ActorRef;
use tokio::net::TcpListener;

use crate::counters::refusal;
use crate::ratelimit::LogLimiter;

use super::session::Connection;
use super::{StreamMsg, StreamSpec};

/// Pause after an accept error (out of file descriptors, …), so it cannot spin a core.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one accept error warning per listener this often.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Accepts connections until aborted (dropping the socket stops accepting).
pub(crate) async fn accept_loop(
    socket: TcpListener,
    listener: ActorRef<StreamMsg>,
    spec: Arc<StreamSpec>,
) {
    let counters = &spec.ctx.counters;
    let mut error_log = LogLimiter::new(ACCEPT_ERROR_LOG_INTERVAL);
    loop {
        let (stream, peer) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                counters.sessions.accept_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(held_back) = error_log.allow(Instant::now()) {
                    tracing::warn!(listener = %spec.ctx.name, %error, held_back, "TCP accept failed");
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        if !spec.sources.is_open() && !spec.sources.accepts(peer.ip().to_canonical()) {
            refuse(&spec, peer, refusal::SOURCE_DENIED);
            continue;
        }
        let Ok(slot) = Arc::clone(&spec.slots).try_acquire_owned() else {
            refuse(&spec, peer, refusal::MAX_SESSIONS);
            continue;
        };
        let partition =
            spec.ctx.registry.partition_of(peer.ip().to_canonical(), spec.ctx.partition());
        let Ok(place) = spec.quotas.admit(partition, 0) else {
            refuse(&spec, peer, refusal::PARTITION_EXPORTER_CAP);
            continue;
        };
        let connection = Connection { stream, peer, slot, place };
        if listener.send_message(StreamMsg::Accepted(connection)).is_err() {
            return;
        }
    }
}

/// Counts a refused connection (closed when its stream is dropped) and warns.
fn refuse(spec: &StreamSpec, peer: std::net::SocketAddr, reason: &'static str) {
    spec.ctx.counters.sessions.refused.add(reason, 1);
    if let Some(held_back) = spec.warn_allowed(peer.ip()) {
        tracing::warn!(
            listener = %spec.ctx.name,
            peer = %peer,
            reason,
            max_sessions = spec.settings.max_sessions,
            held_back,
            "Connection refused"
        );
    }
}
