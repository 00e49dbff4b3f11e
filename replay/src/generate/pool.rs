//! Pre-encoded records: a pool of random flows encoded once for a protocol, copied into
//! datagrams with their times (and, for sFlow, sample numbers) written in on the way.
//! Encoding each record afresh costs about as much as sending it; a pool of 4096
//! distinct flows, walked by each exporter from its own offset, keeps values varied at a
//! fraction of the cost, and exporters can share one pool.

use super::flow::{Flow, Rng};
use super::{Protocol, Settings, netflow, sflow};

/// Flows a pool holds unless told otherwise.
pub const DEFAULT_POOL: usize = 4096;

/// Where a record's times go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Times {
    /// v5/v9: first and last switched, 4-byte sysUpTime milliseconds, at these offsets.
    Uptime { first: usize, last: usize },
    /// IPFIX: flowStartMilliseconds and flowEndMilliseconds, 8-byte Unix ms.
    Unix { start: usize, end: usize },
    /// sFlow: no flow times.
    None,
}

/// Records of one protocol and settings, encoded.
#[derive(Debug, Clone)]
pub struct RecordPool {
    protocol: Protocol,
    bytes: Vec<u8>,
    /// (offset in `bytes`, length) of each record.
    spans: Vec<(usize, usize)>,
    /// (ms before the clock the flow ended, its duration in ms) of each record.
    ages: Vec<(u32, u32)>,
    times: Times,
}

impl RecordPool {
    /// `size` random flows (at least 1) for `settings`, from `settings.seed`.
    pub fn new(settings: &Settings, size: usize) -> Self {
        let mut rng = Rng::new(settings.seed);
        let size = size.max(1);
        let mut pool = RecordPool {
            protocol: settings.protocol,
            bytes: Vec::new(),
            spans: Vec::with_capacity(size),
            ages: Vec::with_capacity(size),
            times: match settings.protocol {
                Protocol::V5 => Times::Uptime { first: 24, last: 28 },
                Protocol::V9 => Times::Uptime {
                    first: netflow::offset_of(netflow::V9_TEMPLATE, 22),
                    last: netflow::offset_of(netflow::V9_TEMPLATE, 21),
                },
                Protocol::Ipfix => Times::Unix {
                    start: netflow::offset_of(netflow::IPFIX_TEMPLATE, 152),
                    end: netflow::offset_of(netflow::IPFIX_TEMPLATE, 153),
                },
                Protocol::Sflow => Times::None,
            },
        };
        for _ in 0..size {
            let flow = Flow::random(&mut rng);
            let start = pool.bytes.len();
            match settings.protocol {
                Protocol::V5 => netflow::encode_v5_record(&flow, &mut pool.bytes),
                Protocol::V9 => {
                    netflow::encode_record(netflow::V9_TEMPLATE, &flow, &mut pool.bytes)
                }
                Protocol::Ipfix => {
                    netflow::encode_record(netflow::IPFIX_TEMPLATE, &flow, &mut pool.bytes)
                }
                Protocol::Sflow => {
                    sflow::encode_flow_sample(&flow, settings.sampling_rate, &mut pool.bytes)
                }
            }
            pool.spans.push((start, pool.bytes.len() - start));
            pool.ages.push((flow.end_ago_ms, flow.duration_ms));
        }
        pool
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Appends record `index` (modulo the pool) to `out`, its times set against `now`
    /// (sysUpTime ms for v5/v9, Unix ms for IPFIX). Returns where it starts in `out`.
    pub(crate) fn append(&self, index: usize, now: u64, out: &mut Vec<u8>) -> usize {
        let i = index % self.spans.len();
        let (start, len) = self.spans[i];
        let at = out.len();
        out.extend_from_slice(&self.bytes[start..start + len]);
        let (end_ago, duration) = self.ages[i];
        let end = now.saturating_sub(u64::from(end_ago));
        let begin = end.saturating_sub(u64::from(duration));
        match self.times {
            Times::Uptime { first, last } => {
                out[at + first..at + first + 4].copy_from_slice(&(begin as u32).to_be_bytes());
                out[at + last..at + last + 4].copy_from_slice(&(end as u32).to_be_bytes());
            }
            Times::Unix { start, end: finish } => {
                out[at + start..at + start + 8].copy_from_slice(&begin.to_be_bytes());
                out[at + finish..at + finish + 8].copy_from_slice(&end.to_be_bytes());
            }
            Times::None => {}
        }
        at
    }
}
