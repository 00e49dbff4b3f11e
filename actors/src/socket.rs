//! Binding a listener's UDP socket: SO_REUSEADDR and SO_REUSEPORT (so a restarted listener
//! can rebind while the old socket closes, and several collectors may share a port), and
//! the kernel receive buffer (`buffer_size`), which is what absorbs bursts while the
//! receive task is descheduled. An IPFIX-over-TCP/TLS listener's socket is bound the same
//! way; its receive buffer is inherited by the connections it accepts.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

/// A listener socket could not be set up.
#[derive(Debug, Error)]
#[error("cannot bind {transport} listener on {addr}: {source}")]
pub struct BindError {
    /// "UDP" or "TCP".
    pub transport: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// Binds a non-blocking UDP socket on `addr` with a receive buffer of `buffer_size` bytes.
pub(crate) fn bind_udp(
    addr: SocketAddr,
    buffer_size: usize,
) -> Result<std::net::UdpSocket, BindError> {
    let wrap = |source| BindError { transport: "UDP", addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(wrap)?;
    socket.set_reuse_address(true).map_err(wrap)?;
    socket.set_reuse_port(true).map_err(wrap)?;
    set_receive_buffer(&socket, addr, buffer_size);
    socket.bind(&addr.into()).map_err(wrap)?;
    socket.set_nonblocking(true).map_err(wrap)?;
    Ok(socket.into())
}

/// Connections waiting to be accepted at most (the kernel may cap it at somaxconn).
const TCP_BACKLOG: i32 = 1024;

/// Binds a non-blocking, listening TCP socket on `addr`; the connections it accepts get
/// a receive buffer of `buffer_size` bytes.
pub(crate) fn bind_tcp(
    addr: SocketAddr,
    buffer_size: usize,
) -> Result<std::net::TcpListener, BindError> {
    let wrap = |source| BindError { transport: "TCP", addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(wrap)?;
    socket.set_reuse_address(true).map_err(wrap)?;
    socket.set_reuse_port(true).map_err(wrap)?;
    if let Err(error) = socket.set_recv_buffer_size(buffer_size) {
        tracing::warn!(listen_addr = %addr, buffer_size, %error, "Cannot set the TCP receive buffer size");
    }
    socket.bind(&addr.into()).map_err(wrap)?;
    socket.listen(TCP_BACKLOG).map_err(wrap)?;
    socket.set_nonblocking(true).map_err(wrap)?;
    Ok(socket.into())
}

/// Asks for `requested` bytes of receive buffer. The kernel silently caps SO_RCVBUF at
/// `net.core.rmem_max`; when it did, SO_RCVBUFFORCE (root / CAP_NET_ADMIN only) goes past
/// the cap. A buffer smaller than asked is not fatal: it is logged with the real size.
fn set_receive_buffer(socket: &Socket, addr: SocketAddr, requested: usize) {
    if let Err(error) = socket.set_recv_buffer_size(requested) {
        tracing::warn!(listen_addr = %addr, requested, %error, "Cannot set the UDP receive buffer size");
    }
    if granted(socket) < requested {
        match force_receive_buffer(socket, requested) {
            Ok(()) => {
                tracing::debug!(listen_addr = %addr, requested, "UDP receive buffer forced past net.core.rmem_max")
            }
            Err(error) => {
                tracing::debug!(listen_addr = %addr, requested, %error, "SO_RCVBUFFORCE not permitted")
            }
        }
    }
    let effective = granted(socket);
    if effective < requested {
        tracing::warn!(
            listen_addr = %addr,
            requested,
            effective,
            "UDP receive buffer capped by the kernel (raise net.core.rmem_max or run with CAP_NET_ADMIN)"
        );
    } else {
        tracing::info!(listen_addr = %addr, requested, effective, "UDP receive buffer set");
    }
}

/// The usable receive buffer. Linux reports twice the size set (the other half is its
/// bookkeeping overhead, see socket(7)), so halve it to compare with what was asked.
fn granted(socket: &Socket) -> usize {
    let reported = socket.recv_buffer_size().unwrap_or(0);
    if cfg!(target_os = "linux") { reported / 2 } else { reported }
}

#[cfg(target_os = "linux")]
fn force_receive_buffer(socket: &Socket, size: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    let value = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
        .map_err(|_| io::Error::other("socklen_t overflow"))?;
    // SAFETY: the descriptor is owned by `socket` and open for the whole call; the option
    // value points to a live c_int whose size is passed as the option length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            std::ptr::from_ref(&value).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(not(target_os = "linux"))]
fn force_receive_buffer(_socket: &Socket, _size: usize) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "SO_RCVBUFFORCE is Linux-only"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_port_zero_with_the_requested_buffer() {
        let socket = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let addr = socket.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let socket = Socket::from(socket);
        // Either the kernel granted it, or we run without the privilege to force it.
        assert!(granted(&socket) >= 1 << 20 || !is_root());
    }

    #[test]
    fn a_second_socket_can_share_the_port() {
        let first = bind_udp("127.0.0.1:0".parse().unwrap(), 65536).unwrap();
        let addr = first.local_addr().unwrap();
        assert!(bind_udp(addr, 65536).is_ok());
    }

    #[test]
    fn bind_failure_names_the_address_and_the_os_error() {
        // TEST-NET-1 is never a local address.
        let addr: SocketAddr = "192.0.2.1:2055".parse().unwrap();
        let error = bind_udp(addr, 65536).unwrap_err();
        assert_eq!(error.addr, addr);
        assert!(bind_tcp(addr, 65536).unwrap_err().to_string().contains("TCP listener"));
        let text = error.to_string();
        assert!(text.contains("192.0.2.1:2055"), "{text}");
        assert!(text.contains("os error"), "{text}");
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }
}
