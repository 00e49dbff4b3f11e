//! A TCP fault proxy between the collector and NATS: latency with jitter, throttled
//! bandwidth and a black hole, changeable while connections are open.
//!
//! This kernel has no `tc netem`, and the `trixter` crate is a binary with a REST API
//! rather than a library, so this small proxy (tokio) does the shaping in-process: each
//! direction of each connection reads chunks, stamps each with `now + latency +
//! uniform(0, jitter)` (never earlier than the chunk before it: TCP does not reorder),
//! and a writer task delivers them when due, at most `bytes_per_sec` (written in 20 ms
//! slices). In a black hole nothing is delivered and, once a bounded queue fills,
//! nothing is read either, so the sender's TCP window closes as on a dead link; what
//! was held is delivered when the hole closes, as TCP retransmission would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::exporter::Rng;

/// How the proxy treats the bytes passing through it, in each direction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Shaping {
    /// Added to every chunk.
    pub latency: Duration,
    /// A further uniform random delay in `[0, jitter)` per chunk.
    pub jitter: Duration,
    /// Bandwidth cap per direction of each connection.
    pub bytes_per_sec: Option<u64>,
    /// Hold everything (a partition that neither closes nor resets connections).
    pub blackhole: bool,
}

/// Chunks a direction may hold before it stops reading.
const QUEUE_CHUNKS: usize = 256;
const CHUNK: usize = 16 * 1024;

/// A running proxy on 127.0.0.1 forwarding to `upstream`.
pub struct FaultProxy {
    addr: SocketAddr,
    shaping: watch::Sender<Shaping>,
    bytes: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1; each accepted connection is joined to a
    /// new connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (shaping, watcher) = watch::channel(Shaping::default());
        let bytes = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&bytes);
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            let mut seed = 1;
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                for (from, to) in [(client_read, server_write), (server_read, client_write)] {
                    seed += 1;
                    let pipe = pipe(from, to, watcher.clone(), Arc::clone(&counter), seed);
                    connections.spawn(pipe);
                }
                while connections.try_join_next().is_some() {}
            }
        });
        FaultProxy { addr, shaping, bytes, task }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the shaping of every open and future connection.
    pub fn set(&self, shaping: Shaping) {
        self.shaping.send_replace(shaping);
    }

    /// Bytes delivered so far, both directions.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

/// One direction of one connection: a reader stamping chunks with their due time, a
/// writer delivering them.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shaping: watch::Receiver<Shaping>,
    delivered: Arc<AtomicU64>,
    seed: u64,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    let reader_shaping = shaping.clone();
    let reader = async move {
        let mut rng = Rng::new(seed);
        let mut last_due = Instant::now();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let s = *reader_shaping.borrow();
            let jitter = s.jitter.mul_f64(rng.unit());
            let due = (Instant::now() + s.latency + jitter).max(last_due);
            last_due = due;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        let mut shaping = shaping;
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if shaping.wait_for(|s| !s.blackhole).await.is_err() {
                break;
            }
            let rate = shaping.borrow().bytes_per_sec;
            let written = match rate {
                None => to.write_all(&chunk).await,
                Some(rate) => throttled(&mut to, &chunk, rate.max(1)).await,
            };
            if written.is_err() {
                break;
            }
            delivered.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// Writes `chunk` in 20 ms slices of `rate / 50` bytes.
async fn throttled(to: &mut OwnedWriteHalf, chunk: &[u8], rate: u64) -> std::io::Result<()> {
    let slice = usize::try_from(rate / 50).unwrap_or(usize::MAX).max(1);
    for piece in chunk.chunks(slice) {
        let started = Instant::now();
        to.write_all(piece).await?;
        let budget = Duration::from_secs_f64(piece.len() as f64 / rate as f64);
        tokio::time::sleep_until(started + budget).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, n: usize) -> Duration {
        let started = Instant::now();
        stream.write_all(&vec![7u8; n]).await.unwrap();
        let mut back = vec![0u8; n];
        stream.read_exact(&mut back).await.unwrap();
        assert!(back.iter().all(|b| *b == 7));
        started.elapsed()
    }

    #[tokio::test]
    async fn latency_throttle_and_blackhole_shape_the_stream() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut stream, 10).await < Duration::from_secs(1));

        proxy.set(Shaping { latency: Duration::from_millis(100), ..Default::default() });
        let rtt = round_trip(&mut stream, 10).await;
        assert!(rtt >= Duration::from_millis(200), "{rtt:?}");

        proxy.set(Shaping { bytes_per_sec: Some(100_000), ..Default::default() });
        let slow = round_trip(&mut stream, 50_000).await;
        assert!(slow >= Duration::from_millis(450), "{slow:?}");

        proxy.set(Shaping { blackhole: true, ..Default::default() });
        stream.write_all(b"held").await.unwrap();
        let mut back = [0u8; 4];
        let held = tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut back));
        assert!(held.await.is_err(), "nothing passes a black hole");
        proxy.set(Shaping::default());
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"held");
    }
}
