//! The HTTP endpoint at `metrics_addr`: `/metrics` (OpenMetrics text), `/healthz`
//! (the process answers) and `/readyz` (every readiness check passes, else 503 naming
//! the failing ones). HTTP/1.1, GET and HEAD only, a bounded number of connections,
//! and a header timeout so an idle client cannot hold one forever.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::error::TelemetryError;
use crate::health::Readiness;
use crate::metrics::{self, Metrics};

/// Connections served at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors), so the loop cannot spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
const TEXT: &str = "text/plain; charset=utf-8";

/// What the endpoints answer from.
struct Endpoints {
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

/// The running endpoint. Dropping it stops it; [`TelemetryServer::shutdown`] waits.
pub struct TelemetryServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TelemetryServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryServer").field("local_addr", &self.local_addr).finish()
    }
}

impl TelemetryServer {
    /// Listens on `addr` (port 0: any free port) and serves until stopped. Must be called
    /// inside a Tokio runtime.
    pub async fn start(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        readiness: Readiness,
    ) -> Result<Self, TelemetryError> {
        let bind_error = |source| TelemetryError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let (stop, stopped) = oneshot::channel();
        let endpoints = Arc::new(Endpoints { metrics, readiness });
        let task = tokio::spawn(accept_loop(listener, endpoints, stopped));
        tracing::info!(%local_addr, "Metrics and health endpoint listening");
        Ok(TelemetryServer { local_addr, stop: Some(stop), task: Some(task) })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes open connections and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TelemetryServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Accepts connections until told to stop; dropping the join set closes them all.
async fn accept_loop(
    listener: TcpListener,
    endpoints: Arc<Endpoints>,
    mut stop: oneshot::Receiver<()>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Over the cap the stream is dropped: the client sees the connection close.
                    if let Ok(permit) = Arc::clone(&permits).try_acquire_owned() {
                        connections.spawn(serve_connection(stream, Arc::clone(&endpoints), permit));
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "Metrics endpoint cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    endpoints: Arc<Endpoints>,
    _permit: OwnedSemaphorePermit,
) {
    let service = service_fn(move |request: Request<Incoming>| {
        let response = endpoints.respond(&request);
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(error) = connection.await {
        tracing::debug!(%error, "Metrics endpoint connection ended with an error");
    }
}

impl Endpoints {
    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n");
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match request.uri().path() {
            "/metrics" => self.metrics(),
            "/healthz" => reply(StatusCode::OK, TEXT, "ok\n"),
            "/readyz" => self.ready(),
            _ => reply(StatusCode::NOT_FOUND, TEXT, "not found\n"),
        }
    }

    fn metrics(&self) -> Response<Full<Bytes>> {
        match self.metrics.encode() {
            Ok(body) => reply(StatusCode::OK, metrics::CONTENT_TYPE, body),
            Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "cannot encode metrics\n"),
        }
    }

    fn ready(&self) -> Response<Full<Bytes>> {
        let failing = self.readiness.failing();
        if failing.is_empty() {
            reply(StatusCode::OK, TEXT, "ready\n")
        } else {
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!("not ready: {}\n", failing.join(", ")),
            )
        }
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
