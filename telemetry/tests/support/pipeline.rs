//! A collector with the real decoders on 127.0.0.1 (one NetFlow listener), a sink that
//! counts what it is given, and the NetFlow v9 datagrams the tests send.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flow_actors::sink::{Delivery, FlowSink, SinkError, SinkFuture};
use flow_actors::{
    Collector, CollectorSettings, DecoderSessions, ExporterLimits, ListenerProtocol,
    ListenerSettings, SinkSettings, SourceFilter,
};
use flowpb::FlowMessage;
use tokio::net::UdpSocket;

use super::netflow::{self, EXPORT_SECS, V9_FIELDS};

pub const SUBJECT: &str = "flows.test";
pub const PARTITION: &str = "test";
/// The v9 template the tests announce, and one they never announce.
pub const TEMPLATE: u16 = 256;
pub const UNKNOWN_TEMPLATE: u16 = 300;

/// Counts the flows it accepts.
pub struct CountingSink {
    flows: Arc<AtomicU64>,
}

impl FlowSink for CountingSink {
    fn publish<'a>(&'a mut self, flows: &'a [FlowMessage]) -> SinkFuture<'a, Delivery> {
        Box::pin(async move {
            self.flows.fetch_add(flows.len() as u64, Ordering::Relaxed);
            Ok(Delivery::all(flows.len()))
        })
    }
}

/// One NetFlow listener on 127.0.0.1, any port.
pub fn settings() -> CollectorSettings {
    CollectorSettings {
        listeners: vec![ListenerSettings {
            listen_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            partition: None,
            subject: SUBJECT.to_owned(),
            buffer_size: 1 << 20,
            protocol: ListenerProtocol::Netflow(netflow::settings(false)),
            sources: SourceFilter::default(),
            max_exporter_pps: None,
            max_datagram_bytes: 65_535,
            sockets: 1,
            transport: Default::default(),
        }],
        channel_size: 10_000,
        batch_size: 100,
        exporters: ExporterLimits {
            max_exporters: 100,
            idle_timeout: Duration::from_secs(600),
            max_series: 100,
        },
        stats_interval: Duration::from_secs(30),
        sink: SinkSettings::Stdout,
        partition: PARTITION.to_owned(),
        registry: Default::default(),
        partition_limits: Default::default(),
    }
}

/// Starts the collector with the real decoders; `flows` counts what the sink accepts.
pub async fn start(flows: Arc<AtomicU64>) -> Collector {
    start_with(settings(), flows).await
}

/// [`start`] with other settings.
pub async fn start_with(settings: CollectorSettings, flows: Arc<AtomicU64>) -> Collector {
    let sinks = move |_: &str, _: &str| -> Result<Box<dyn FlowSink>, SinkError> {
        Ok(Box::new(CountingSink { flows: Arc::clone(&flows) }))
    };
    Collector::start_with(settings, Arc::new(DecoderSessions), &sinks)
        .await
        .expect("the collector starts")
}

/// A UDP socket on 127.0.0.1 to send from.
pub async fn exporter() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("bind the exporter socket")
}

/// A v9 packet with template 256 and `records` data records of it.
pub fn template_and_data(sequence: u32, uptime_ms: u32, unix_secs: u32, records: usize) -> Vec<u8> {
    let template = netflow::template_set(0, &[(TEMPLATE, V9_FIELDS)]);
    let body: Vec<u8> = (0..records)
        .flat_map(|i| netflow::v9_record([10, 0, 0, i as u8], 1000, 1000, 2000))
        .collect();
    netflow::v9_packet(
        uptime_ms,
        unix_secs,
        sequence,
        0,
        &[template, netflow::set(TEMPLATE, &body)],
    )
}

/// A v9 packet with data of a template never announced.
pub fn data_without_template(sequence: u32, uptime_ms: u32) -> Vec<u8> {
    let body = netflow::v9_record([10, 0, 0, 9], 1000, 1000, 2000);
    netflow::v9_packet(
        uptime_ms,
        EXPORT_SECS,
        sequence,
        0,
        &[netflow::set(UNKNOWN_TEMPLATE, &body)],
    )
}

/// Uptime of the exporter before its reboot: 1000 s.
pub const UPTIME_BEFORE_REBOOT_MS: u32 = 1_000_000;
/// A packet from the same exporter 20 s later with an uptime of 1 s: a reboot.
pub fn after_reboot(sequence: u32) -> Vec<u8> {
    template_and_data(sequence, 1_000, EXPORT_SECS + 20, 1)
}
