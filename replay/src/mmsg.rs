//! Sending many datagrams with one system call: `sendmmsg(2)` on Linux, a `send_to`
//! loop elsewhere.

use std::io;
use std::net::{SocketAddrV4, UdpSocket};

/// Sends `payloads` from `socket` to `target`, in order, with as few system calls as
/// the kernel allows. Returns how many were sent: all of them, unless an error stopped
/// the batch part-way (then the error is returned only when nothing was sent).
#[cfg(target_os = "linux")]
pub(crate) fn send_batch(
    socket: &UdpSocket,
    target: SocketAddrV4,
    payloads: &[Vec<u8>],
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;

    let address = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: target.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*target.ip()).to_be() },
        sin_zero: [0; 8],
    };
    let mut iovecs: Vec<libc::iovec> = payloads
        .iter()
        .map(|p| libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() })
        .collect();
    let mut sent = 0;
    while sent < payloads.len() {
        let mut headers: Vec<libc::mmsghdr> = iovecs[sent..]
            .iter_mut()
            .map(|iov| {
                // SAFETY: an all-zero msghdr/mmsghdr is a valid empty header.
                let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
                header.msg_hdr.msg_name = &address as *const libc::sockaddr_in as *mut libc::c_void;
                header.msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                header.msg_hdr.msg_iov = iov as *mut libc::iovec;
                header.msg_hdr.msg_iovlen = 1;
                header
            })
            .collect();
        let count = headers.len().min(1024) as libc::c_uint;
        // SAFETY: every header points at `address`, at one iovec of `iovecs` and through
        // it at one payload, all alive and unmoved for the duration of the call; the
        // kernel only reads them (it writes `msg_len`, inside `headers`).
        let rc = unsafe { libc::sendmmsg(socket.as_raw_fd(), headers.as_mut_ptr(), count, 0) };
        if rc < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return if sent == 0 { Err(error) } else { Ok(sent) };
        }
        sent += rc as usize;
    }
    Ok(sent)
}

/// Sends `payloads` one `send_to` at a time (no `sendmmsg` on this system).
#[cfg(not(target_os = "linux"))]
pub(crate) fn send_batch(
    socket: &UdpSocket,
    target: SocketAddrV4,
    payloads: &[Vec<u8>],
) -> io::Result<usize> {
    for (sent, payload) in payloads.iter().enumerate() {
        if let Err(error) = socket.send_to(payload, target) {
            return if sent == 0 { Err(error) } else { Ok(sent) };
        }
    }
    Ok(payloads.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_batch_arrives_whole_and_in_order() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("timeout: {e}"));
        let target = match receiver.local_addr() {
            Ok(std::net::SocketAddr::V4(v4)) => v4,
            other => panic!("receiver address: {other:?}"),
        };
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let payloads: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; usize::from(i) + 1]).collect();
        let sent = send_batch(&sender, target, &payloads).unwrap_or_else(|e| panic!("send: {e}"));
        assert_eq!(sent, 100);
        let mut buf = [0u8; 512];
        for expected in &payloads {
            let len = receiver.recv(&mut buf).unwrap_or_else(|e| panic!("recv: {e}"));
            assert_eq!(&buf[..len], &expected[..]);
        }
    }
}
