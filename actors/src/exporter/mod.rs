//! The actor of one exporter (one source IP of one listener). It owns that exporter's
//! decoder session (templates, pending flows, sampling and sequence state), decodes its
//! datagrams a batch at a time, sends the flows on to the publisher of its listener's
//! subject, and reports lifecycle events, errors and periodic cache statistics.
//!
//! Supervised by its listener: when it fails, the listener starts a fresh one, and the
//! exporter re-learns its templates from the next refresh.

mod report;

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use flow_decode::buffer::KEPT_MESSAGES;
use flow_decode::report::CacheStats;
use flow_decode::{Datagram, DatagramReport, ExporterSession, FlowBuffer};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::batch::DatagramBatch;
use crate::budget::Credit;
use crate::counters::{
    ExporterFigures, ExporterGauges, ExporterId, ListenerCounters, TemplateCacheTotals,
};
use crate::publisher::PublisherSlot;
use crate::session::SessionFactory;
use crate::settings::ListenerProtocol;
use crate::tenancy::{ExporterIdentity, Registry};

use self::report::Reporter;

/// Flows decoded from a batch that go on to the publisher before the rest of the batch
/// is decoded, so the decode buffer never grows past that by more than one datagram's
/// flows. 512 messages (~0.5 MB with their buffers) stay in a core's L2 cache from
/// decoding to encoding, and the next datagrams are decoded into the same messages: at
/// 2.9 M flows/s, handing on every 4,096 (~4 MB) cost 11% more CPU a flow (TESTING.md,
/// session 17).
const HAND_OFF_FLOWS: usize = 512;
const _: () = assert!(HAND_OFF_FLOWS <= KEPT_MESSAGES, "a hand-off's messages are all kept");

/// What an exporter needs from its listener, shared by all of that listener's exporters.
pub(crate) struct ListenerContext {
    /// "netflow@0.0.0.0:2055".
    pub(crate) name: String,
    pub(crate) protocol: ListenerProtocol,
    pub(crate) counters: Arc<ListenerCounters>,
    /// The publisher of each partition this listener's exporters may belong to.
    pub(crate) routes: PartitionRoutes,
    /// Partitions and tags by exporter prefix.
    pub(crate) registry: Arc<Registry>,
    pub(crate) sessions: Arc<dyn SessionFactory>,
}

impl ListenerContext {
    /// The listener's own partition (the install's unless it names one).
    pub(crate) fn partition(&self) -> &str {
        self.routes.default_partition()
    }

    /// The publisher of the listener's own partition (what its logs name).
    pub(crate) fn publisher(&self) -> &Arc<PublisherSlot> {
        self.routes.default_publisher()
    }
}

/// Partition → publisher of one listener; the first entry is the listener's own
/// partition, where exporters the registry does not place go.
pub(crate) struct PartitionRoutes {
    routes: Vec<(String, Arc<PublisherSlot>)>,
}

impl PartitionRoutes {
    /// `routes` must hold at least the listener's own partition, first.
    pub(crate) fn new(routes: Vec<(String, Arc<PublisherSlot>)>) -> Self {
        debug_assert!(!routes.is_empty(), "a listener has at least its own partition");
        Self { routes }
    }

    fn default_partition(&self) -> &str {
        self.routes.first().map_or("", |(partition, _)| partition.as_str())
    }

    fn default_publisher(&self) -> &Arc<PublisherSlot> {
        // `new` is always given the listener's own route; the index is never empty.
        &self.routes[0].1
    }

    /// The publisher of `partition`, else the listener's own.
    pub(crate) fn publisher_for(&self, partition: &str) -> &Arc<PublisherSlot> {
        self.routes
            .iter()
            .find(|(p, _)| p == partition)
            .map_or_else(|| self.default_publisher(), |(_, slot)| slot)
    }
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
    /// Its key in the listener's exporter table: the address, or a certificate name.
    pub(crate) id: ExporterId,
    /// How logs name it instead of its address (an IPFIX-over-TLS certificate name).
    pub(crate) label: Option<Arc<str>>,
    pub(crate) ctx: Arc<ListenerContext>,
}

/// An exporter's state.
pub(crate) struct ExporterState {
    /// The exporter's key in the listener's exporter table.
    id: ExporterId,
    /// The last UDP source (address and port) seen: how logs name the exporter.
    source: SocketAddr,
    session: Box<dyn ExporterSession>,
    reporter: Reporter,
    ctx: Arc<ListenerContext>,
    /// Its partition and registry tags, stamped on each of its flows.
    identity: ExporterIdentity,
    /// Its partition, as its `/metrics` figures are labelled.
    partition: Arc<str>,
    /// The publisher of its partition.
    publisher: Arc<PublisherSlot>,
    /// This actor's id, which owns the exporter's row in the table.
    owner: u64,
    /// The session's template cache totals at the last report.
    cache_reported: TemplateCacheTotals,
    /// Whether the latest batch with flows had flows of unknown sampling rate.
    sampling_rate_unknown: bool,
}

thread_local! {
    /// The flows of the batch an exporter actor is decoding on this thread. Its
    /// messages are kept from batch to batch (see [`FlowBuffer`]) when the flows are
    /// encoded here, one buffer per runtime thread whatever the number of exporters.
    static DECODED: RefCell<FlowBuffer> = RefCell::new(FlowBuffer::new());
}

impl ExporterState {
    /// Decodes a batch and hands its flows to the publisher (see [`Self::decode_into`]).
    fn decode(&mut self, batch: DatagramBatch) {
        DECODED.with_borrow_mut(|flows| {
            // Empty even if a decode on this thread panicked half-way through a batch.
            flows.clear();
            self.decode_into(batch, flows);
            flows.clear();
        });
    }

    /// Decodes a batch datagram by datagram. Its flows go on to the publisher once
    /// there are [`HAND_OFF_FLOWS`] of them, and at the end: datagrams of many small
    /// records (a few bytes each: 1,400 flows in one datagram) never gather hundreds
    /// of megabytes of decoded flows in one batch.
    fn decode_into(&mut self, mut batch: DatagramBatch, flows: &mut FlowBuffer) {
        let now = Instant::now();
        let mut tally = Tally::default();
        for index in 0..batch.datagrams().len() {
            let Some(raw) = batch.datagrams().get(index) else { break };
            self.source = raw.source;
            let datagram = Datagram {
                source: raw.source,
                received_ns: raw.received_ns,
                payload: &raw.payload,
            };
            let report = self.session.decode(datagram, flows);
            tally.add(&report, raw.payload.len());
            self.account(report, now);
            if flows.len() >= HAND_OFF_FLOWS {
                let credit = batch.finish_first(index + 1);
                self.hand_off(std::mem::take(&mut tally), flows, credit);
            }
        }
        let credit = batch.finish();
        self.hand_off(tally, flows, credit);
    }

    /// Counts what was decoded since the last hand-off and sends its flows to the
    /// publisher with the credit of their datagrams, raised to cover the flows (see
    /// [`Credit::cover_flows`]); leaves `flows` empty.
    fn hand_off(&mut self, mut tally: Tally, flows: &mut FlowBuffer, mut credit: Credit) {
        credit.cover_flows(flows.len());
        tally.flows = to_u64(flows.len());
        tally.add_to(&self.ctx.counters);
        self.report_figures(&tally.figures());
        if !flows.is_empty() {
            self.publisher.send(flows, &self.identity, credit);
        }
        flows.clear();
    }

    /// Adds a batch's figures to this exporter's row and refreshes its gauges and the
    /// listener's template cache counters from the session.
    fn report_figures(&mut self, figures: &ExporterFigures) {
        if figures.flows > 0 {
            self.sampling_rate_unknown = figures.sampling_rate_unknown > 0;
        }
        let caches = self.session.stats().caches;
        let totals = cache_totals(&caches);
        let counters = &self.ctx.counters;
        counters.template_cache.add_growth(&self.cache_reported, &totals);
        self.cache_reported = totals;
        let gauges = ExporterGauges {
            templates: caches.iter().map(|c| to_u64(c.templates)).sum(),
            pending_flows: caches.iter().map(|c| to_u64(c.pending_flows)).sum(),
            pending_bytes: caches.iter().map(|c| to_u64(c.pending_bytes)).sum(),
            sampling_rate_unknown: u64::from(self.sampling_rate_unknown),
        };
        counters.exporters.record(&self.id, self.owner, &self.partition, figures, gauges);
    }

    /// Reports a datagram's lifecycle events and errors.
    fn account(&mut self, report: DatagramReport, now: Instant) {
        for event in &report.events {
            self.reporter.event(event, self.source, &self.ctx.counters, now);
        }
        for error in &report.errors {
            self.reporter.error(error, self.source, &self.ctx.counters, now);
        }
    }

    /// Gives up what the session still holds (pending flows), reporting and counting it.
    fn close(&mut self) {
        let now = Instant::now();
        for event in self.session.close() {
            self.reporter.event(&event, self.source, &self.ctx.counters, now);
        }
        self.report_figures(&ExporterFigures::default());
    }

    fn expire(&mut self) {
        let now = Instant::now();
        for event in self.session.expire(unix_now_ns()) {
            self.reporter.event(&event, self.source, &self.ctx.counters, now);
        }
        self.report_figures(&ExporterFigures::default());
    }

    fn log_stats(&self) {
        self.reporter.stats(&self.session.stats().caches, self.source);
    }
}

/// Sums a session's template cache figures over its protocols.
fn cache_totals(caches: &[CacheStats]) -> TemplateCacheTotals {
    caches.iter().fold(TemplateCacheTotals::default(), |sum, c| TemplateCacheTotals {
        hits: sum.hits + c.template_hits,
        misses: sum.misses + c.template_misses,
        evictions: sum.evictions + c.evictions,
        collisions: sum.collisions + c.collisions,
        pending_replayed: sum.pending_replayed + c.pending_replayed,
        pending_dropped: sum.pending_dropped + c.pending_dropped,
    })
}

/// Per-batch sums of the datagram reports, added to the shared counters once per batch
/// rather than once per datagram.
#[derive(Default)]
struct Tally {
    datagrams: u64,
    bytes: u64,
    decode_errors: u64,
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
    fn add(&mut self, report: &DatagramReport, bytes: usize) {
        self.datagrams += 1;
        self.bytes += to_u64(bytes);
        self.decode_errors += to_u64(report.errors.len());
        self.non_flow_records += to_u64(report.non_flow_records);
        self.records_pending += to_u64(report.records_pending);
        self.export_datagrams_lost += report.sequence_gap;
        self.export_records_lost += report.lost_records;
        self.sampling_rate_unknown += to_u64(report.sampling_rate_unknown);
        self.sampling_rate_defaulted += to_u64(report.sampling_rate_defaulted);
        self.time_anomalies += to_u64(report.time_anomalies);
        self.time_unknown += to_u64(report.time_unknown);
    }

    /// This batch's row in the exporter table.
    fn figures(&self) -> ExporterFigures {
        ExporterFigures {
            datagrams: self.datagrams,
            bytes: self.bytes,
            flows: self.flows,
            decode_errors: self.decode_errors,
            sequence_lost: self.export_datagrams_lost + self.export_records_lost,
            sampling_rate_unknown: self.sampling_rate_unknown,
        }
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
        myself: ActorRef<Self::Msg>,
        args: ExporterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let session = args.ctx.sessions.create(&args.ctx.protocol);
        let identity = args.ctx.registry.identify(args.addr, args.ctx.partition());
        let publisher = Arc::clone(args.ctx.routes.publisher_for(&identity.partition));
        Ok(ExporterState {
            id: args.id,
            source: SocketAddr::new(args.addr, 0),
            session,
            reporter: Reporter::new(identity.partition.clone(), args.label),
            partition: identity.partition.as_str().into(),
            identity,
            publisher,
            ctx: args.ctx,
            owner: myself.get_id().pid(),
            cache_reported: TemplateCacheTotals::default(),
            sampling_rate_unknown: false,
        })
    }

    /// A stopped exporter (evicted, or drained at shutdown) gives up and counts what its
    /// session still held, and ends its `/metrics` series.
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.close();
        state.ctx.counters.exporters.forget(&state.id, state.owner);
        Ok(())
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
                    state.reporter.name(state.source)
                )
            }
        }
        Ok(())
    }
}
