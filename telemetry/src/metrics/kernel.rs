//! Datagrams the kernel dropped before the collector read them: the `drops` column of
//! `/proc/net/udp` and `/proc/net/udp6` (receive buffer full), per bound address.
//! Linux only; elsewhere the figure is absent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The kernel's drop count of the UDP sockets bound to `addr` (summed: SO_REUSEPORT
/// binds several), or `None` when `/proc` cannot tell. Resets when a listener rebinds.
pub(crate) fn udp_drops(addr: SocketAddr) -> Option<u64> {
    let table = match addr {
        SocketAddr::V4(_) => "/proc/net/udp",
        SocketAddr::V6(_) => "/proc/net/udp6",
    };
    let text = std::fs::read_to_string(table).ok()?;
    Some(drops_in_table(&text, addr))
}

/// Sums the drops of the table rows whose local address is `addr`.
fn drops_in_table(text: &str, addr: SocketAddr) -> u64 {
    text.lines()
        .skip(1)
        .filter_map(parse_row)
        .filter(|(local, _)| *local == addr)
        .map(|(_, drops)| drops)
        .sum()
}

/// A row: `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
/// ref pointer drops`; returns the local address and the drops.
fn parse_row(line: &str) -> Option<(SocketAddr, u64)> {
    let columns: Vec<&str> = line.split_whitespace().collect();
    let local = parse_local(columns.get(1)?)?;
    let drops = columns.last()?.parse().ok()?;
    (columns.len() >= 13).then_some((local, drops))
}

/// `0100007F:0807` (IPv4) or 32 hex digits (IPv6): 32-bit words in host byte order,
/// then the port in hex.
fn parse_local(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(host_word(ip)?)),
        32 => {
            let mut octets = [0u8; 16];
            for (i, chunk) in octets.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&host_word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Eight hex digits of a word the kernel printed in host order, as its memory bytes.
fn host_word(hex: &str) -> Option<[u8; 4]> {
    u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops";

    /// A row as the kernel prints it on this machine (host byte order words).
    fn row(ip: &[u8], port: u16, drops: u64) -> String {
        let words: String = ip
            .chunks_exact(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect();
        format!(
            "  1: {words}:{port:04X} 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 12345 2 0000000000000000 {drops}"
        )
    }

    #[test]
    fn drops_of_the_bound_address_are_summed() {
        let table = [
            HEADER.to_owned(),
            row(&[127, 0, 0, 1], 2055, 7),
            row(&[127, 0, 0, 1], 2055, 3),
            row(&[127, 0, 0, 1], 6343, 100),
            row(&[0, 0, 0, 0], 2055, 50),
        ]
        .join("\n");
        assert_eq!(drops_in_table(&table, "127.0.0.1:2055".parse().unwrap()), 10);
        assert_eq!(drops_in_table(&table, "0.0.0.0:2055".parse().unwrap()), 50);
        assert_eq!(drops_in_table(&table, "127.0.0.1:9".parse().unwrap()), 0);
    }

    #[test]
    fn ipv6_rows_are_read() {
        let ip: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let table = [HEADER.to_owned(), row(&ip.octets(), 4739, 12)].join("\n");
        assert_eq!(drops_in_table(&table, "[2001:db8::1]:4739".parse().unwrap()), 12);
    }

    #[test]
    fn a_real_socket_is_found_in_the_kernel_table() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        if std::path::Path::new("/proc/net/udp").exists() {
            assert_eq!(udp_drops(addr), Some(0));
            let text = std::fs::read_to_string("/proc/net/udp").unwrap();
            assert!(
                text.lines().filter_map(parse_row).any(|(local, _)| local == addr),
                "{addr} not in {text}"
            );
        }
    }
}
