//! The embedded default sink: one JSON object per flow per line.

use std::io::{IoSlice, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use flowpb::FlowMessage;
use nix::fcntl::{FcntlArg, fcntl};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::Mutex;

use super::{Delivery, Encoding, FlowSink, IdentityFields, SinkFuture};

/// Writes one JSON object per flow per line (`flowpb::json::write_json`), a batch's
/// lines with one vectored write per [`LINES_PER_WRITE`] and one flush. The exporter
/// actors write the lines ([`encode_json_lines`]), so the JSON work runs on every core;
/// the sink hands their buffers to `writev(2)` as they are (gathering them into one
/// buffer first was a copy of every line, 7% of the collector's CPU on this path). The
/// writer is shared behind an async mutex so several subjects can write to the same
/// stream without interleaving lines.
pub struct JsonLinesSink<W> {
    writer: Arc<Mutex<W>>,
}

/// Lines handed to one vectored write at most: Linux's `IOV_MAX`.
const LINES_PER_WRITE: usize = 1024;

/// The JSON line of each flow, newline included, in order. The flows carry their
/// exporter's identity already ([`IdentityFields::Stamped`]): `stamped` is empty. The
/// lines share one buffer, each a slice of it.
pub fn encode_json_lines(flows: &[FlowMessage], stamped: &[u8]) -> Vec<Bytes> {
    const TYPICAL_LINE_BYTES: usize = 1_400;
    debug_assert!(stamped.is_empty(), "JSON lines carry the identity stamped, not appended");
    let mut text = String::with_capacity(flows.len() * TYPICAL_LINE_BYTES);
    let mut ends = Vec::with_capacity(flows.len());
    for flow in flows {
        flowpb::json::write_json(flow, &mut text);
        text.push('\n');
        ends.push(text.len());
    }
    let text = Bytes::from(text.into_bytes());
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let line = text.slice(start..end);
            start = end;
            line
        })
        .collect()
}

/// Standard output, written by the task that publishes.
///
/// A pipe (a container runtime's log FIFO, `| jq`) is opened anew through
/// `/proc/self/fd/1` and written without blocking: a reader that stalls parks the
/// publishing task, never a runtime thread, so decoding, `/metrics` and the shutdown's
/// drain deadline go on while the listener's budget fills and the sockets drop newest,
/// counted. The new open file description is the collector's own, so its `O_NONBLOCK`
/// leaves the descriptors it shares (stderr after `2>&1`, the parent's) as they were.
/// A pipe it may not reopen is made non-blocking where it is ([`shared_pipe`]).
///
/// Anything else (a file, /dev/null, a terminal, a socket) is written in place, a
/// blocking `write(2)` on the runtime thread: it returns at once unless the reader
/// stalls. Handing each batch to another thread costs wake-ups both ways: through
/// tokio's own stdout (its blocking pool) a fifth of the collector's CPU, through a
/// writer thread of our own a third more CPU a flow.
#[derive(Debug)]
pub enum Stdout {
    Pipe(pipe::Sender),
    InPlace,
}

/// The pipe buffer asked for on a standard output that is a pipe: Linux's default
/// unprivileged cap, where the kernel's default is 64 KiB.
const PIPE_BYTES: i32 = 1 << 20;

impl Stdout {
    /// The process's standard output, as a non-blocking pipe when it is one and a
    /// runtime is there to wait on it; otherwise in place.
    pub fn open() -> Self {
        const STDOUT: &str = "/proc/self/fd/1";
        let is_pipe = std::fs::metadata(STDOUT).is_ok_and(|m| m.file_type().is_fifo());
        if !is_pipe || tokio::runtime::Handle::try_current().is_err() {
            return Stdout::InPlace;
        }
        match pipe::OpenOptions::new().open_sender(STDOUT).or_else(|_| shared_pipe()) {
            Ok(sender) => {
                // Room for a few batches, so a reader that keeps up is not woken per
                // 64 KiB; past the system's cap (fs.pipe-max-size) the size stays.
                let _ = fcntl(&sender, FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
                Stdout::Pipe(sender)
            }
            Err(error) => {
                tracing::debug!(
                    "standard output is a pipe that cannot be made non-blocking ({error}): writing in place"
                );
                Stdout::InPlace
            }
        }
    }
}

/// Standard output itself made non-blocking, for when it cannot be reopened: a pipe
/// another user made (a container runtime's, for a collector running as non-root) is
/// not ours to open. Its `O_NONBLOCK` then holds for every descriptor sharing it, stderr
/// too when it was redirected there, whose log lines are dropped rather than waited for
/// while the pipe is full.
fn shared_pipe() -> std::io::Result<pipe::Sender> {
    pipe::Sender::from_owned_fd(std::io::stdout().as_fd().try_clone_to_owned()?)
}

impl AsyncWrite for Stdout {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stdout::Pipe(sender) => Pin::new(sender).poll_write(cx, buf),
            Stdout::InPlace => Poll::Ready(std::io::stdout().lock().write(buf)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stdout::Pipe(sender) => Pin::new(sender).poll_write_vectored(cx, bufs),
            Stdout::InPlace => Poll::Ready(std::io::stdout().lock().write_vectored(bufs)),
        }
    }

    /// Both are: a pipe by `writev(2)`, standard output in place by its line writer,
    /// which writes whole lines with `writev(2)` as well.
    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stdout::Pipe(sender) => Pin::new(sender).poll_flush(cx),
            Stdout::InPlace => Poll::Ready(std::io::stdout().lock().flush()),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl<W> JsonLinesSink<W> {
    /// A sink writing to `writer`, which other sinks may share.
    pub fn new(writer: Arc<Mutex<W>>) -> Self {
        Self { writer }
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> JsonLinesSink<W> {
    /// Writes a batch's lines, in order, from the buffers they are in.
    async fn write_lines(&mut self, lines: &[Bytes]) -> Result<Delivery, super::SinkError> {
        let mut writer = self.writer.lock().await;
        for chunk in lines.chunks(LINES_PER_WRITE) {
            write_all_vectored(&mut *writer, chunk).await?;
        }
        writer.flush().await?;
        Ok(Delivery::all(lines.len()))
    }
}

/// Writes every byte of `lines`, resuming after a short write (a full pipe) where it
/// stopped.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    writer: &mut W,
    lines: &[Bytes],
) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> =
        lines.iter().filter(|line| !line.is_empty()).map(|line| IoSlice::new(line)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match writer.write_vectored(rest).await? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            written => IoSlice::advance_slices(&mut rest, written),
        }
    }
    Ok(())
}

impl<W: AsyncWrite + Unpin + Send + 'static> FlowSink for JsonLinesSink<W> {
    fn publish<'a>(&'a mut self, flows: &'a [FlowMessage]) -> SinkFuture<'a, Delivery> {
        Box::pin(async move {
            let lines = encode_json_lines(flows, &[]);
            self.write_lines(&lines).await
        })
    }

    fn publish_encoded(&mut self, lines: Vec<Bytes>) -> SinkFuture<'_, Delivery> {
        Box::pin(async move { self.write_lines(&lines).await })
    }

    /// JSON lines, the exporter's identity stamped on each flow first.
    fn encoding(&self) -> Option<Encoding> {
        Some(Encoding { encoder: encode_json_lines, identity: IdentityFields::Stamped })
    }

    fn flush(&mut self) -> SinkFuture<'_> {
        Box::pin(async move {
            self.writer.lock().await.flush().await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_one_json_line_per_flow() {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let mut sink = JsonLinesSink::new(Arc::clone(&out));
        let flows = vec![
            FlowMessage { src_port: 1, ..Default::default() },
            FlowMessage { src_port: 2, ..Default::default() },
        ];
        let delivery = sink.publish(&flows).await.map_err(|e| e.to_string()).unwrap();
        assert_eq!(delivery, Delivery::all(2));
        sink.publish(&flows[..1]).await.map_err(|e| e.to_string()).unwrap();
        sink.flush().await.map_err(|e| e.to_string()).unwrap();
        assert!(sink.buffering().is_none(), "stdout publishes inline");
        assert!(sink.encoding().is_some_and(|e| e.identity == IdentityFields::Stamped));

        let text = String::from_utf8(out.lock().await.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(text.ends_with('\n'));
        assert_eq!(lines[0], flowpb::json::to_json_line(&flows[0]));
        assert_eq!(lines[1], flowpb::json::to_json_line(&flows[1]));
        assert_eq!(lines[2], lines[0]);
    }

    #[tokio::test]
    async fn a_pipe_gets_every_line_once_and_in_order_through_short_writes() {
        use tokio::io::AsyncReadExt;

        // 2,500 lines (~3 MB) into a 64 KiB pipe: every vectored write of up to 1,024
        // lines comes back short, most of them mid-line.
        let flows: Vec<FlowMessage> =
            (0..2500).map(|port| FlowMessage { src_port: port, ..Default::default() }).collect();
        let lines = encode_json_lines(&flows, &[]);
        let (sender, mut receiver) = pipe::pipe().expect("a pipe");
        let reader = tokio::spawn(async move {
            let mut read = Vec::new();
            receiver.read_to_end(&mut read).await.map(|_| read)
        });
        let mut sink = JsonLinesSink::new(Arc::new(Mutex::new(Stdout::Pipe(sender))));
        let delivery = sink.publish_encoded(lines.clone()).await.map_err(|e| e.to_string());
        assert_eq!(delivery, Ok(Delivery::all(2500)));
        drop(sink);

        let read = reader.await.expect("reader").expect("read the pipe");
        assert_eq!(read.len(), lines.iter().map(Bytes::len).sum::<usize>());
        assert!(read == lines.concat(), "every byte, in order, once");
    }
}
