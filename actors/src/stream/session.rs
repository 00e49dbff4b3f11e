//! The task of one connection: the TLS handshake (bounded by `handshake_timeout_secs`),
//! then IPFIX messages cut from the stream and handed to the session's exporter actor
//! in batches, until the peer closes, goes idle for `idle_timeout_secs`, sends something
//! that is not an IPFIX message, or the collector shuts down.
//!
//! Backpressure: every message takes a unit of the listener's in-flight budget before it
//! is handed on. When none is left the task waits for one and does not read meanwhile, so
//! the kernel's receive buffer fills and TCP flow control slows the exporter down:
//! nothing is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ractor::ActorRef;
use ractor::rpc::CallResult;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::batch::{DatagramBatch, RawDatagram};
use crate::budget::Credit;
use crate::counters::{close, handshake};
use crate::exporter::{ExporterMsg, unix_now_ns};
use crate::tls::{TlsServerSettings, certificate_name, handshake_failure};

use super::framing::{FrameError, FrameReader};
use super::{StreamMsg, StreamSpec};
use crate::quota::ExporterSlot;

/// Messages handed to the exporter actor in one batch at most.
const MAX_BATCH: usize = 64;
/// Time the listener may take to start a session's exporter actor.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a closing session may spend sending its TLS close_notify / FIN.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// An accepted connection with its `max_sessions` slot and its place among its
/// partition's exporters (when the partition has limits), both freed when it ends.
pub(crate) struct Connection {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) slot: OwnedSemaphorePermit,
    pub(crate) place: Option<ExporterSlot>,
}

/// What a connection's task needs.
pub(crate) struct SessionTask {
    pub(crate) serial: u64,
    pub(crate) listener: ActorRef<StreamMsg>,
    pub(crate) spec: Arc<StreamSpec>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl SessionTask {
    /// Serves `connection` to its end, then tells the listener why it ended.
    pub(crate) async fn run(mut self, connection: Connection) {
        let Connection { stream, peer, slot, place } = connection;
        let reason = match self.spec.settings.tls.clone() {
            Some(tls) => match self.handshake(stream, peer, &tls).await {
                Some((stream, label)) => self.serve(stream, peer, label).await,
                None => None,
            },
            None => self.serve(stream, peer, None).await,
        };
        drop((slot, place));
        let _ = self.listener.send_message(StreamMsg::Ended { serial: self.serial, reason });
    }

    /// The TLS handshake, client certificate required; returns the stream and the name
    /// in the certificate, or `None` (counted and logged) when it failed.
    async fn handshake(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        tls: &TlsServerSettings,
    ) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Option<Arc<str>>)> {
        let limit = self.spec.settings.handshake_timeout;
        let accepting = tokio::time::timeout(limit, tls.acceptor().accept(stream));
        let outcome = tokio::select! {
            biased;
            _ = self.shutdown.wait_for(|stop| *stop) => return None,
            outcome = accepting => outcome,
        };
        let (reason, detail) = match outcome {
            Ok(Ok(stream)) => {
                let certificates = stream.get_ref().1.peer_certificates();
                let label = certificates.and_then(|c| c.first()).and_then(certificate_name);
                return Some((stream, label.map(Arc::from)));
            }
            Ok(Err(error)) => (handshake_failure(&error), error.to_string()),
            Err(_) => (handshake::TIMEOUT, format!("not finished within {limit:?}")),
        };
        self.spec.ctx.counters.sessions.tls_handshake_failures.add(reason, 1);
        if let Some(held_back) = self.spec.warn_allowed(peer.ip()) {
            tracing::warn!(listener = %self.spec.ctx.name, peer = %peer, reason, held_back, "TLS handshake failed: {detail}");
        }
        None
    }

    /// Opens the session and reads it to its end; the reason it ended, or `None` when it
    /// could not be opened (the listener is draining).
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: S,
        peer: SocketAddr,
        label: Option<Arc<str>>,
    ) -> Option<&'static str> {
        let exporter = self.open(label).await?;
        let mut reader = FrameReader::new(stream);
        let reason = self.read(&mut reader, peer, &exporter).await;
        if !matches!(reason, close::READ_ERROR | close::SESSION_FAILED) {
            let mut stream = reader.into_inner();
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, stream.shutdown()).await;
        }
        Some(reason)
    }

    async fn open(&self, label: Option<Arc<str>>) -> Option<ActorRef<ExporterMsg>> {
        let serial = self.serial;
        let call = self
            .listener
            .call(|reply| StreamMsg::Open { serial, label, reply }, Some(OPEN_TIMEOUT))
            .await;
        match call {
            Ok(CallResult::Success(actor)) => actor,
            _ => None,
        }
    }

    /// Reads messages and hands them on until the session ends; returns why.
    async fn read<S: AsyncRead + Unpin>(
        &mut self,
        reader: &mut FrameReader<S>,
        peer: SocketAddr,
        exporter: &ActorRef<ExporterMsg>,
    ) -> &'static str {
        let spec = Arc::clone(&self.spec);
        let counters = &spec.ctx.counters;
        let credit = Credit::adopt(Arc::clone(&spec.budget), 0);
        let mut batch = DatagramBatch::new(Vec::new(), credit, Arc::clone(counters));
        let reason = loop {
            let message = match reader.buffered() {
                Ok(Some(message)) => message,
                Err(error) => break self.frame_error(&error, peer),
                Ok(None) => {
                    // Nothing complete buffered: hand on what is held before waiting.
                    if !hand_on(&mut batch, exporter) {
                        break close::SESSION_FAILED;
                    }
                    let read = tokio::select! {
                        biased;
                        _ = self.shutdown.wait_for(|stop| *stop) => None,
                        read = tokio::time::timeout(spec.settings.idle_timeout, reader.next()) => Some(read),
                    };
                    let Some(read) = read else {
                        break self.finish_buffered(reader, &mut batch, peer).await;
                    };
                    match read {
                        Ok(Ok(Some(message))) => message,
                        Ok(Ok(None)) => break close::PEER_CLOSED,
                        Ok(Err(error)) => break self.frame_error(&error, peer),
                        Err(_) => break close::IDLE_TIMEOUT,
                    }
                }
            };
            if !self.admit(&mut batch, exporter).await {
                break close::SESSION_FAILED;
            }
            counters.datagrams_received.fetch_add(1, Ordering::Relaxed);
            counters.bytes_received.fetch_add(message.len() as u64, Ordering::Relaxed);
            batch.push(RawDatagram { source: peer, received_ns: unix_now_ns(), payload: message });
            if batch.datagrams().len() >= MAX_BATCH && !hand_on(&mut batch, exporter) {
                break close::SESSION_FAILED;
            }
        };
        hand_on(&mut batch, exporter);
        reason
    }

    /// Takes a budget unit for the next message; when none is left, hands on what is
    /// held and waits, not reading meanwhile. `false` when the exporter actor is gone.
    async fn admit(&self, batch: &mut DatagramBatch, exporter: &ActorRef<ExporterMsg>) -> bool {
        if self.spec.budget.try_acquire() {
            return true;
        }
        if !hand_on(batch, exporter) {
            return false;
        }
        self.spec.budget.acquire().await;
        true
    }

    /// At shutdown: the complete messages already read are handed on too.
    async fn finish_buffered<S: AsyncRead + Unpin>(
        &self,
        reader: &mut FrameReader<S>,
        batch: &mut DatagramBatch,
        peer: SocketAddr,
    ) -> &'static str {
        let counters = &self.spec.ctx.counters;
        while let Ok(Some(message)) = reader.buffered() {
            self.spec.budget.acquire().await;
            counters.datagrams_received.fetch_add(1, Ordering::Relaxed);
            counters.bytes_received.fetch_add(message.len() as u64, Ordering::Relaxed);
            batch.push(RawDatagram { source: peer, received_ns: unix_now_ns(), payload: message });
        }
        close::SHUTDOWN
    }

    /// Names (and, once per peer per interval, logs) why the stream cannot be read on.
    fn frame_error(&self, error: &FrameError, peer: SocketAddr) -> &'static str {
        let reason = match error {
            FrameError::Version(_) | FrameError::Length(_) => close::FRAMING_ERROR,
            FrameError::Truncated(_) => close::TRUNCATED,
            FrameError::Io(_) => close::READ_ERROR,
        };
        if let Some(held_back) = self.spec.warn_allowed(peer.ip()) {
            tracing::warn!(listener = %self.spec.ctx.name, peer = %peer, reason, held_back, "Closing IPFIX session: {error}");
        }
        reason
    }
}

/// Sends what `batch` holds to the exporter actor; `false` when the actor is gone (the
/// batch comes back in the error and is counted lost).
fn hand_on(batch: &mut DatagramBatch, exporter: &ActorRef<ExporterMsg>) -> bool {
    if batch.datagrams().is_empty() {
        return true;
    }
    exporter.send_message(ExporterMsg::Datagrams(batch.take())).is_ok()
}
