//! Synthetic export traffic: NetFlow v5, NetFlow v9, IPFIX and sFlow v5 datagrams built
//! here, byte for byte, for load generation and benchmarks.
//!
//! One [`Exporter`] stands for one device: it has its own boot time (so its sysUpTime
//! advances with the clock it is given), its own sequence numbers, kept by each
//! protocol's rule (v5: flows, v9: export packets, IPFIX: data records, sFlow:
//! datagrams and per-source samples), and for v9/IPFIX its own templates, sent in the
//! first datagram and again every `template_every` datagrams or `template_interval`,
//! in front of that datagram's data. Every datagram carries `records` flow records with
//! varied field values ([`flow::Flow::random`]), taken from a [`pool::RecordPool`] of
//! pre-encoded records (each exporter walks it from its own offset), their times set
//! against the datagram's clock.

pub mod flow;
pub mod netflow;
pub mod pool;
pub mod sflow;

use std::fmt;
use std::net::Ipv4Addr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use flow::Rng;
use pool::{DEFAULT_POOL, RecordPool};

/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;

/// Which export protocol to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    V5,
    V9,
    Ipfix,
    Sflow,
}

impl Protocol {
    /// Every protocol, in a stable order.
    pub const ALL: [Protocol; 4] = [Protocol::V5, Protocol::V9, Protocol::Ipfix, Protocol::Sflow];

    /// Records per datagram when none is asked for: what fits a 1500-byte MTU.
    pub fn default_records(self) -> u16 {
        match self {
            Protocol::V5 => 30,
            Protocol::V9 => 28,
            Protocol::Ipfix => 19,
            Protocol::Sflow => 8,
        }
    }

    /// Most records one datagram may carry (v5: 30 by the format; the others: what
    /// fits the largest UDP datagram).
    pub fn max_records(self) -> u16 {
        match self {
            Protocol::V5 => netflow::V5_MAX_RECORDS,
            Protocol::V9 => netflow::v9_max_records(),
            Protocol::Ipfix => netflow::ipfix_max_records(),
            Protocol::Sflow => sflow::max_samples(),
        }
    }

    /// Whether this protocol sends templates.
    pub fn has_templates(self) -> bool {
        matches!(self, Protocol::V9 | Protocol::Ipfix)
    }

    /// The name used on the command line and in summaries.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V5 => "v5",
            Protocol::V9 => "v9",
            Protocol::Ipfix => "ipfix",
            Protocol::Sflow => "sflow",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Protocol {
    type Err = GenerateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "v5" | "netflow5" => Ok(Protocol::V5),
            "v9" | "netflow9" => Ok(Protocol::V9),
            "ipfix" | "v10" => Ok(Protocol::Ipfix),
            "sflow" | "sflow5" => Ok(Protocol::Sflow),
            _ => Err(GenerateError::UnknownProtocol(s.to_string())),
        }
    }
}

/// A setting the generator cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    #[error("unknown protocol {0:?}: expected v5, v9, ipfix or sflow")]
    UnknownProtocol(String),
    #[error("{protocol} datagrams carry 1 to {max} records, not {requested}")]
    Records { protocol: Protocol, requested: u16, max: u16 },
    #[error("sampling rate must be at least 1")]
    SamplingRate,
    #[error("the record pool holds {pool} records, not {protocol} records")]
    PoolProtocol { pool: Protocol, protocol: Protocol },
}

/// What every generated exporter shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub protocol: Protocol,
    /// Flow records (sFlow: flow samples) per datagram.
    pub records: u16,
    /// 1 = unsampled. Above 1: announced in the v5 header, in a v9/IPFIX options
    /// template and record (sent with the templates), in each sFlow flow sample.
    pub sampling_rate: u32,
    /// Templates again after this many datagrams of an exporter (v9/IPFIX).
    pub template_every: Option<NonZeroU32>,
    /// Templates again after this much time (v9/IPFIX), whichever comes first.
    pub template_interval: Option<Duration>,
    /// Seeds every exporter's field values (each exporter mixes in its own index).
    pub seed: u64,
}

impl Settings {
    /// `protocol` with its default record count, unsampled, templates every 100
    /// datagrams or 30 s.
    pub fn new(protocol: Protocol) -> Self {
        Settings {
            protocol,
            records: protocol.default_records(),
            sampling_rate: 1,
            template_every: NonZeroU32::new(100),
            template_interval: Some(Duration::from_secs(30)),
            seed: 1,
        }
    }

    /// Checks the settings can be generated.
    pub fn validate(&self) -> Result<(), GenerateError> {
        let max = self.protocol.max_records();
        if self.records == 0 || self.records > max {
            return Err(GenerateError::Records {
                protocol: self.protocol,
                requested: self.records,
                max,
            });
        }
        if self.sampling_rate == 0 {
            return Err(GenerateError::SamplingRate);
        }
        Ok(())
    }
}

/// What one generated datagram holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Generated {
    /// Flow records (sFlow: flow samples).
    pub records: u32,
    /// Whether templates (and the sampling options record) were sent in front.
    pub templates: bool,
}

/// One simulated device: its clock, sequence numbers, templates and random values.
#[derive(Debug, Clone)]
pub struct Exporter {
    settings: Settings,
    agent: Ipv4Addr,
    /// Unix milliseconds when the device booted.
    boot_ms: u64,
    pool: Arc<RecordPool>,
    /// The pool record the next record is copied from.
    cursor: usize,
    /// v5: flows sent; v9: packets sent; IPFIX: data records sent; sFlow: datagrams
    /// sent (the next datagram is numbered one more).
    sequence: u32,
    /// sFlow: flow samples taken (the sample sequence number) and packets seen by the
    /// sampler (the sample pool).
    samples: u32,
    sample_pool: u32,
    /// Datagrams since templates were last sent; `None` before the first.
    since_templates: Option<u32>,
    templates_at_ms: u64,
}

impl Exporter {
    /// Exporter number `index` (its boot time and place in the pool derive from it),
    /// speaking from `agent`, at Unix time `now_ms`, with a pool of its own. It has been
    /// up between 10 minutes and 10 days.
    pub fn new(
        settings: &Settings,
        index: u32,
        agent: Ipv4Addr,
        now_ms: u64,
    ) -> Result<Self, GenerateError> {
        let pool = Arc::new(RecordPool::new(settings, DEFAULT_POOL));
        Self::with_pool(settings, pool, index, agent, now_ms)
    }

    /// As [`Exporter::new`], taking its records from `pool` (shared by many exporters;
    /// built from the same settings).
    pub fn with_pool(
        settings: &Settings,
        pool: Arc<RecordPool>,
        index: u32,
        agent: Ipv4Addr,
        now_ms: u64,
    ) -> Result<Self, GenerateError> {
        settings.validate()?;
        if pool.protocol() != settings.protocol {
            return Err(GenerateError::PoolProtocol {
                pool: pool.protocol(),
                protocol: settings.protocol,
            });
        }
        let mut rng = Rng::new(settings.seed ^ ((u64::from(index) << 32) | u64::from(index)));
        let uptime_ms = u64::from(rng.between(600_000, 864_000_000));
        let cursor = (u64::from(index) * 7_919 % pool.len() as u64) as usize;
        Ok(Exporter {
            settings: settings.clone(),
            agent,
            boot_ms: now_ms.saturating_sub(uptime_ms),
            pool,
            cursor,
            sequence: 0,
            samples: 0,
            sample_pool: 0,
            since_templates: None,
            templates_at_ms: 0,
        })
    }

    /// Appends the next pool record, times against `now`; returns where it starts.
    pub(crate) fn append_record(&mut self, now: u64, out: &mut Vec<u8>) -> usize {
        let at = self.pool.append(self.cursor, now, out);
        self.cursor = (self.cursor + 1) % self.pool.len();
        at
    }

    /// Appends `settings.records` records.
    pub(crate) fn append_records(&mut self, now: u64, out: &mut Vec<u8>) {
        for _ in 0..self.settings.records {
            self.append_record(now, out);
        }
    }

    /// The agent address (sFlow puts it in every datagram).
    pub fn agent(&self) -> Ipv4Addr {
        self.agent
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Milliseconds since boot at `now_ms`, as the 32-bit sysUpTime (wraps at 49.7 days).
    fn uptime_ms(&self, now_ms: u64) -> u32 {
        now_ms.saturating_sub(self.boot_ms) as u32
    }

    /// Whether this datagram should carry the templates.
    fn templates_due(&mut self, now_ms: u64) -> bool {
        if !self.settings.protocol.has_templates() {
            return false;
        }
        let due = match self.since_templates {
            None => true,
            Some(n) => {
                self.settings.template_every.is_some_and(|every| n >= every.get())
                    || self.settings.template_interval.is_some_and(|interval| {
                        now_ms.saturating_sub(self.templates_at_ms) >= interval.as_millis() as u64
                    })
            }
        };
        if due {
            self.since_templates = Some(0);
            self.templates_at_ms = now_ms;
        }
        if let Some(n) = &mut self.since_templates {
            *n += 1;
        }
        due
    }

    /// Writes the next datagram, stamped `now_ms` (Unix milliseconds), into `out`
    /// (cleared first).
    pub fn next_datagram(&mut self, now_ms: u64, out: &mut Vec<u8>) -> Generated {
        out.clear();
        let templates = self.templates_due(now_ms);
        let records = u32::from(self.settings.records);
        match self.settings.protocol {
            Protocol::V5 => netflow::write_v5(self, now_ms, out),
            Protocol::V9 => netflow::write_v9(self, now_ms, templates, out),
            Protocol::Ipfix => netflow::write_ipfix(self, now_ms, templates, out),
            Protocol::Sflow => sflow::write(self, now_ms, out),
        }
        Generated { records, templates }
    }
}

/// Big-endian writes onto a byte vector.
pub(crate) trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    /// Starts a length-prefixed element (a set, an sFlow sample or record): returns the
    /// offset its length word is patched at by [`Put::end_u16`] / [`Put::end_u32`].
    fn mark(&self) -> usize;
    /// Pads to 4 bytes and writes the set length (id and length words included) as a
    /// u16 at `mark + 2`.
    fn end_set(&mut self, mark: usize);
    /// Writes the bytes after the u32 length word at `mark` into that word (XDR opaque).
    fn end_u32(&mut self, mark: usize);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn mark(&self) -> usize {
        self.len()
    }
    fn end_set(&mut self, mark: usize) {
        while !(self.len() - mark).is_multiple_of(4) {
            self.push(0);
        }
        let length = (self.len() - mark) as u16;
        self[mark + 2..mark + 4].copy_from_slice(&length.to_be_bytes());
    }
    fn end_u32(&mut self, mark: usize) {
        let length = (self.len() - mark - 4) as u32;
        self[mark..mark + 4].copy_from_slice(&length.to_be_bytes());
    }
}
