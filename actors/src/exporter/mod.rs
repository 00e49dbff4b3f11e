//! The actor of one exporter (one source IP of one listener). It owns that exporter's
//! decoder session (templates, pending flows, sampling and sequence state), decodes its
//! datagrams a batch at a time, sends the flows on to the publisher of its listener's
//! subject, and reports lifecycle events, errors and periodic cache statistics.
//!
//! Supervised by its listener: when it fails, the listener starts a fresh one, and the
//! exporter re-learns its templates from the next refresh.

mod metrics;
mod report;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use flow_decode::{Datagram, DatagramReport, ExporterSession};
use flowpb::FlowMessage;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::batch::DatagramBatch;
use crate::counters::ListenerCounters;
use crate::publisher::PublisherSlot;
use crate::session::SessionFactory;
use crate::settings::ListenerProtocol;

use self::report::Reporter;

/// What an exporter needs from its listener, shared by all of that listener's exporters.
pub(crate) struct ListenerContext {
    /// "netflow@0.0.0.0:2055".
    pub(crate) name: String,
    pub(crate) protocol: ListenerProtocol,
    pub(crate) partition: String,
    pub(crate) counters: Arc<ListenerCounters>,
    pub(crate) publisher: Arc<PublisherSlot>,
    pub(crate) sessions: Arc<dyn SessionFactory>,
}

/// Messages of an [`ExporterActor`].
pub(crate) enum ExporterMsg {
    /// Datagrams from this exporter, in arrival order.
    Datagrams(DatagramBatch),
    /// Age out templates and pending flows past their time to live.
    Expire,
    /// Log the periodic template cache statistics line.
    LogStats,
    /// Test hook: fail on purpose, to exercise the restart path.
    #[cfg(any(test, feature = "fault-injection"))]
    Panic,
}

/// Arguments of a new (or restarted) exporter.
pub(crate) struct ExporterArgs {
    pub(crate) addr: IpAddr,
    pub(crate) ctx: Arc<ListenerContext>,
}

/// An exporter's state.
pub(crate) struct ExporterState {
    /// The last UDP source (address and port) seen: how logs name the exporter.
    source: SocketAddr,
    session: Box<dyn ExporterSession>,
    reporter: Reporter,
    ctx: Arc<ListenerContext>,
}

impl ExporterState {
    /// Decodes a batch and hands its flows to the publisher in one message.
    fn decode(&mut self, batch: DatagramBatch) {
        let now = Instant::now();
        let mut flows: Vec<FlowMessage> = Vec::new();
        let mut tally = Tally::default();
        for raw in batch.datagrams() {
            self.source = raw.source;
            let datagram = Datagram {
                source: raw.source,
                received_ns: raw.received_ns,
                payload: &raw.payload,
            };
            let report = self.session.decode(datagram, &mut flows);
            self.account(report, &mut tally, now);
        }
        let credit = batch.finish();
        tally.flows = to_u64(flows.len());
        tally.add_to(&self.ctx.counters);
        if !flows.is_empty() {
            self.ctx.publisher.send(flows, credit);
        }
    }

    fn account(&mut self, report: DatagramReport, tally: &mut Tally, now: Instant) {
        tally.add(&report);
        for event in &report.events {
            self.reporter.event(event, self.source, &self.ctx.counters, now);
        }
        for error in &report.errors {
            self.reporter.error(error, self.source, &self.ctx.counters, now);
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        for event in self.session.expire(unix_now_ns()) {
            self.reporter.event(&event, self.source, &self.ctx.counters, now);
        }
    }

    fn log_stats(&self) {
        self.reporter.stats(&self.session.stats().caches, self.source);
    }
}

/// Per-batch sums of the datagram reports, added to the shared counters once per batch
/// rather than once per datagram.
#[derive(Default)]
struct Tally {
    flows: u64,
    non_flow_records: u64,
    records_pending: u64,
    export_datagrams_lost: u64,
    export_records_lost: u64,
    sampling_rate_unknown: u64,
    sampling_rate_defaulted: u64,
    time_anomalies: u64,
    time_unknown: u64,
}

impl Tally {
    fn add(&mut self, report: &DatagramReport) {
        self.non_flow_records += to_u64(report.non_flow_records);
        self.records_pending += to_u64(report.records_pending);
        self.export_datagrams_lost += report.sequence_gap;
        self.export_records_lost += report.lost_records;
        self.sampling_rate_unknown += to_u64(report.sampling_rate_unknown);
        self.sampling_rate_defaulted += to_u64(report.sampling_rate_defaulted);
        self.time_anomalies += to_u64(report.time_anomalies);
        self.time_unknown += to_u64(report.time_unknown);
    }

    fn add_to(&self, counters: &ListenerCounters) {
        let pairs = [
            (&counters.flows_decoded, self.flows),
            (&counters.non_flow_records, self.non_flow_records),
            (&counters.records_pending, self.records_pending),
            (&counters.export_datagrams_lost, self.export_datagrams_lost),
            (&counters.export_records_lost, self.export_records_lost),
            (&counters.flows_sampling_rate_unknown, self.sampling_rate_unknown),
            (&counters.flows_sampling_rate_defaulted, self.sampling_rate_defaulted),
            (&counters.flows_time_anomalies, self.time_anomalies),
            (&counters.flows_time_unknown, self.time_unknown),
        ];
        for (counter, value) in pairs {
            if value > 0 {
                counter.fetch_add(value, Ordering::Relaxed);
            }
        }
    }
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The collector clock, Unix nanoseconds (0 if the clock is before 1970).
pub(crate) fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The actor: owns an [`ExporterState`] and routes messages to it.
pub(crate) struct ExporterActor;

impl Actor for ExporterActor {
    type Msg = ExporterMsg;
    type State = ExporterState;
    type Arguments = ExporterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ExporterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let session = args.ctx.sessions.create(&args.ctx.protocol);
        Ok(ExporterState {
            source: SocketAddr::new(args.addr, 0),
            session,
            reporter: Reporter::new(args.ctx.partition.clone()),
            ctx: args.ctx,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ExporterMsg::Datagrams(batch) => state.decode(batch),
            ExporterMsg::Expire => state.expire(),
            ExporterMsg::LogStats => state.log_stats(),
            #[cfg(any(test, feature = "fault-injection"))]
            ExporterMsg::Panic => {
                panic!(
                    "fault injection: exporter {} told to fail",
                    report::ExporterName(state.source)
                )
            }
        }
        Ok(())
    }
}
