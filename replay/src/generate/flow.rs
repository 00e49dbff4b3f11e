//! Varied, plausible flow values for generated records: a small deterministic random
//! generator and one flow's fields drawn from it.

/// SplitMix64: fast, seedable, good enough for varied field values (not cryptographic).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n` > 0; 0 gives 0).
    pub fn below(&mut self, n: u32) -> u32 {
        // Multiply-shift: unbiased enough for field values, no division.
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }

    /// A value in `low..=high`.
    pub fn between(&mut self, low: u32, high: u32) -> u32 {
        low + self.below(high - low + 1)
    }

    /// One of `items` (not empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u32) as usize]
    }
}

/// Well-known server ports flows go to.
const SERVER_PORTS: &[u16] = &[443, 443, 443, 80, 53, 123, 22, 25, 993, 3306, 5432, 8080, 8443];
/// Autonomous systems flows come from or go to (0: unknown, private, large clouds/CDNs).
const AS_NUMBERS: &[u32] = &[0, 64512, 64513, 64520, 15169, 13335, 16509, 8075, 32934];
/// TCP flag combinations seen on whole flows: SYN, SYN+ACK, ACK+PSH, FIN+ACK+PSH, ...
const TCP_FLAGS: &[u8] = &[0x02, 0x12, 0x18, 0x10, 0x19, 0x1B, 0x1A, 0x14];
/// DSCP/ToS values: best effort mostly, some AF11, EF, CS1.
const TOS: &[u8] = &[0, 0, 0, 0, 0, 0, 0x28, 0xB8, 0x20];

/// One flow's fields, protocol-neutral; each encoder takes what its format carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src_addr: [u8; 4],
    pub dst_addr: [u8; 4],
    pub next_hop: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol: 6 (TCP), 17 (UDP) or 1 (ICMP).
    pub protocol: u8,
    pub tos: u8,
    /// 0 unless TCP.
    pub tcp_flags: u8,
    pub packets: u32,
    pub bytes: u64,
    /// Size of a sampled frame (sFlow), 64–1518 bytes.
    pub frame_length: u32,
    pub input_if: u16,
    pub output_if: u16,
    pub src_as: u32,
    pub dst_as: u32,
    pub src_mask: u8,
    pub dst_mask: u8,
    pub vlan: u16,
    /// How long before the export the flow ended, ms (0–2 s: an active/idle timeout).
    pub end_ago_ms: u32,
    /// How long the flow lasted, ms (0–120 s).
    pub duration_ms: u32,
}

impl Flow {
    /// A flow with fields drawn from `rng`: internal clients (10/8) talking to servers
    /// in the documentation prefixes, in either direction; mostly TCP; packet counts
    /// spread over four orders of magnitude.
    pub fn random(rng: &mut Rng) -> Self {
        let client = [10, rng.below(16) as u8, rng.below(256) as u8, rng.between(1, 254) as u8];
        let server_net: [u8; 3] = rng.pick(&[[198, 51, 100], [203, 0, 113], [192, 0, 2]]);
        let server = [server_net[0], server_net[1], server_net[2], rng.between(1, 254) as u8];
        let roll = rng.below(100);
        let protocol = match roll {
            0..75 => 6,
            75..97 => 17,
            _ => 1,
        };
        let (client_port, server_port) = if protocol == 1 {
            (0, 0)
        } else {
            (rng.between(32_768, 60_999) as u16, rng.pick(SERVER_PORTS))
        };
        let outbound = rng.below(2) == 0;
        let (src_addr, dst_addr, src_port, dst_port) = if outbound {
            (client, server, client_port, server_port)
        } else {
            (server, client, server_port, client_port)
        };
        // 1 to ~16k packets, most flows small.
        let packets = (1u32 << rng.below(14)) + rng.below(8);
        let mean_size = rng.between(40, 1500);
        Flow {
            src_addr,
            dst_addr,
            next_hop: [10, 0, 0, rng.between(1, 4) as u8],
            src_port,
            dst_port,
            protocol,
            tos: rng.pick(TOS),
            tcp_flags: if protocol == 6 { rng.pick(TCP_FLAGS) } else { 0 },
            packets,
            bytes: u64::from(packets) * u64::from(mean_size),
            frame_length: rng.between(64, 1518),
            input_if: rng.between(1, 48) as u16,
            output_if: rng.between(1, 48) as u16,
            src_as: rng.pick(AS_NUMBERS),
            dst_as: rng.pick(AS_NUMBERS),
            src_mask: rng.between(8, 32) as u8,
            dst_mask: rng.between(8, 32) as u8,
            vlan: rng.between(1, 4094) as u16,
            end_ago_ms: rng.below(2_000),
            duration_ms: rng.below(120_000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_stay_in_their_ranges_and_vary() {
        let mut rng = Rng::new(7);
        let flows: Vec<Flow> = (0..2_000).map(|_| Flow::random(&mut rng)).collect();
        for f in &flows {
            assert!(f.packets >= 1 && f.bytes >= 40 * u64::from(f.packets));
            assert!((64..=1518).contains(&f.frame_length));
            assert!(matches!(f.protocol, 1 | 6 | 17));
            assert!((8..=32).contains(&f.src_mask));
            assert_eq!(f.tcp_flags != 0, f.protocol == 6);
        }
        let distinct: std::collections::HashSet<[u8; 4]> =
            flows.iter().map(|f| f.src_addr).collect();
        assert!(distinct.len() > 500, "addresses vary: {}", distinct.len());
        assert!(flows.iter().any(|f| f.protocol == 17) && flows.iter().any(|f| f.protocol == 1));
    }

    #[test]
    fn the_same_seed_gives_the_same_flows() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        assert_eq!(Flow::random(&mut a), Flow::random(&mut b));
        assert!(Rng::new(1).below(10) < 10);
        assert_eq!(Rng::new(3).below(0), 0);
    }
}
