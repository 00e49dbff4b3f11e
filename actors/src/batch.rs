//! What moves between the actors: datagrams and flows, always in batches (one ractor
//! message costs about as much as decoding a small record), each batch carrying the
//! budget [`Credit`] of the datagrams it came from.
//!
//! Both batch types count themselves as lost when dropped unfinished, so datagrams or
//! flows that die in a mailbox with a failed actor are counted, never silently gone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use flowpb::FlowMessage;

use crate::budget::Credit;
use crate::counters::{ListenerCounters, PublisherCounters, flow_drop};
use crate::sink::Encoder;

/// One datagram as received.
#[derive(Debug, Clone)]
pub(crate) struct RawDatagram {
    /// UDP source address and port.
    pub(crate) source: SocketAddr,
    /// Collector clock at receipt, Unix nanoseconds.
    pub(crate) received_ns: u64,
    pub(crate) payload: Bytes,
}

/// Datagrams on their way to (or being decoded by) an exporter.
#[derive(Debug)]
pub(crate) struct DatagramBatch {
    datagrams: Vec<RawDatagram>,
    /// The leading datagrams already marked decoded (see [`DatagramBatch::finish_first`]).
    finished: usize,
    credit: Credit,
    counters: Arc<ListenerCounters>,
}

impl DatagramBatch {
    pub(crate) fn new(
        datagrams: Vec<RawDatagram>,
        credit: Credit,
        counters: Arc<ListenerCounters>,
    ) -> Self {
        Self { datagrams, finished: 0, credit, counters }
    }

    pub(crate) fn datagrams(&self) -> &[RawDatagram] {
        &self.datagrams
    }

    /// Adds a datagram whose budget unit the caller has just acquired.
    pub(crate) fn push(&mut self, datagram: RawDatagram) {
        self.datagrams.push(datagram);
        self.credit.add_acquired();
    }

    /// Moves the datagrams (and their credit) out into a batch of their own, leaving
    /// this one empty.
    pub(crate) fn take(&mut self) -> DatagramBatch {
        let datagrams = std::mem::take(&mut self.datagrams);
        DatagramBatch::new(datagrams, self.credit.take(), Arc::clone(&self.counters))
    }

    /// Takes the datagrams and their credit out, to regroup them; the caller becomes
    /// responsible for accounting each one.
    pub(crate) fn into_parts(mut self) -> (Vec<RawDatagram>, Credit) {
        (std::mem::take(&mut self.datagrams), self.credit.take())
    }

    /// Marks the first `count` datagrams decoded (those not yet marked) and hands back
    /// their credit, to travel on with their flows; the others stay the batch's.
    pub(crate) fn finish_first(&mut self, count: usize) -> Credit {
        let count = count.min(self.datagrams.len());
        let newly = count.saturating_sub(self.finished);
        self.finished = self.finished.max(count);
        let decoded = u64::try_from(newly).unwrap_or(u64::MAX);
        self.counters.datagrams_decoded.fetch_add(decoded, Ordering::Relaxed);
        self.credit.split(newly)
    }

    /// Marks every datagram decoded and hands back the credit, to travel on with the flows.
    pub(crate) fn finish(mut self) -> Credit {
        let credit = self.finish_first(self.datagrams.len());
        self.datagrams.clear();
        self.finished = 0;
        credit
    }
}

impl Drop for DatagramBatch {
    fn drop(&mut self) {
        let unfinished = self.datagrams.len().saturating_sub(self.finished);
        if unfinished > 0 {
            let lost = u64::try_from(unfinished).unwrap_or(u64::MAX);
            self.counters.datagrams_lost_in_restart.fetch_add(lost, Ordering::Relaxed);
        }
    }
}

/// Flows as a publisher holds them: decoded, or already encoded into the payloads a
/// buffering sink publishes.
#[derive(Debug)]
pub(crate) enum Staged {
    Decoded(Vec<FlowMessage>),
    Encoded(Vec<Bytes>),
}

impl Staged {
    pub(crate) fn len(&self) -> usize {
        match self {
            Staged::Decoded(flows) => flows.len(),
            Staged::Encoded(payloads) => payloads.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Flows on their way to a publisher, with when each one's datagram was received.
#[derive(Debug)]
pub(crate) struct FlowBatch {
    flows: Staged,
    /// `time_received_ns` of each flow, in order: the start of its flow latency.
    received: Vec<u64>,
    credit: Credit,
    counters: Arc<PublisherCounters>,
}

impl FlowBatch {
    pub(crate) fn new(
        flows: Vec<FlowMessage>,
        credit: Credit,
        counters: Arc<PublisherCounters>,
    ) -> Self {
        let received = flows.iter().map(|flow| flow.time_received_ns).collect();
        Self { flows: Staged::Decoded(flows), received, credit, counters }
    }

    /// A batch of payloads `encoder` made of `flows`, each followed by `shared` (see
    /// [`Encoder`]). The exporter actor that decoded them encodes them, so encoding runs
    /// beside decoding on every core instead of in the one publisher actor of a subject.
    pub(crate) fn encoded(
        flows: &[FlowMessage],
        (encoder, shared): (Encoder, &[u8]),
        credit: Credit,
        counters: Arc<PublisherCounters>,
    ) -> Self {
        let received = flows.iter().map(|flow| flow.time_received_ns).collect();
        Self { flows: Staged::Encoded(encoder(flows, shared)), received, credit, counters }
    }

    /// Flows in the batch.
    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }

    /// The publisher takes the flows into its batch: the datagrams' budget is given
    /// back. Returns the flows and their receipt times.
    pub(crate) fn accept(mut self) -> (Staged, Vec<u64>) {
        drop(self.credit.take());
        let flows = std::mem::replace(&mut self.flows, Staged::Decoded(Vec::new()));
        (flows, std::mem::take(&mut self.received))
    }
}

impl Drop for FlowBatch {
    fn drop(&mut self) {
        if !self.flows.is_empty() {
            let lost = u64::try_from(self.flows.len()).unwrap_or(u64::MAX);
            self.counters.flows_dropped.add(flow_drop::PUBLISHER_FAILED, lost);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::InFlight;

    fn datagram() -> RawDatagram {
        RawDatagram {
            source: SocketAddr::from(([127, 0, 0, 2], 9)),
            received_ns: 1,
            payload: Bytes::from_static(b"x"),
        }
    }

    /// A batch of `n` datagrams, their units acquired from `budget`.
    fn acquired_batch(
        n: usize,
        budget: &Arc<InFlight>,
        counters: &Arc<ListenerCounters>,
    ) -> DatagramBatch {
        (0..n).for_each(|_| assert!(budget.try_acquire()));
        let credit = Credit::adopt(Arc::clone(budget), n);
        DatagramBatch::new(vec![datagram(); n], credit, Arc::clone(counters))
    }

    #[test]
    fn a_dropped_datagram_batch_counts_as_lost_and_a_finished_one_as_decoded() {
        let counters = Arc::new(ListenerCounters::default());
        let budget = InFlight::new(10, Arc::clone(&counters));
        let lost = acquired_batch(1, &budget, &counters);
        let done = acquired_batch(2, &budget, &counters);
        drop(lost);
        let credit = done.finish();
        let s = counters.snapshot();
        assert_eq!((s.datagrams_lost_in_restart, s.datagrams_decoded), (1, 2));
        assert_eq!(s.datagrams_in_flight, 2);
        drop(credit);
        assert_eq!(counters.snapshot().datagrams_in_flight, 0);
    }

    #[test]
    fn a_batch_finished_in_parts_counts_each_datagram_once_and_only_the_rest_as_lost() {
        let counters = Arc::new(ListenerCounters::default());
        let budget = InFlight::new(10, Arc::clone(&counters));
        let mut batch = acquired_batch(5, &budget, &counters);
        let first = batch.finish_first(2);
        let again = batch.finish_first(2);
        let next = batch.finish_first(3);
        assert_eq!((first.units(), again.units(), next.units()), (2, 0, 1));
        assert_eq!(counters.snapshot().datagrams_decoded, 3);
        drop(batch);
        let s = counters.snapshot();
        assert_eq!((s.datagrams_decoded, s.datagrams_lost_in_restart), (3, 2));
        assert_eq!(s.datagrams_in_flight, 3, "the dropped rest gave its budget back");
        drop((first, next));
        assert_eq!(counters.snapshot().datagrams_in_flight, 0);
    }

    #[test]
    fn a_dropped_flow_batch_counts_its_flows_as_dropped() {
        let listener = Arc::new(ListenerCounters::default());
        let budget = InFlight::new(10, listener);
        let counters = Arc::new(PublisherCounters::default());
        let batch = FlowBatch::new(
            vec![FlowMessage::default(); 4],
            Credit::adopt(Arc::clone(&budget), 0),
            Arc::clone(&counters),
        );
        drop(batch);
        assert_eq!(counters.flows_dropped.get(flow_drop::PUBLISHER_FAILED), 4);
        let accepted = FlowBatch::new(
            vec![FlowMessage::default(); 2],
            Credit::adopt(budget, 0),
            Arc::clone(&counters),
        );
        assert_eq!(accepted.accept().0.len(), 2);
        assert_eq!(counters.flows_dropped.get(flow_drop::PUBLISHER_FAILED), 4);
    }

    #[test]
    fn an_encoded_batch_keeps_each_flows_receipt_time_and_counts_when_dropped() {
        let budget = InFlight::new(10, Arc::new(ListenerCounters::default()));
        let counters = Arc::new(PublisherCounters::default());
        let flows =
            |n: u64| (1..=n).map(|t| FlowMessage { time_received_ns: t, ..Default::default() });
        let encoder: Encoder = crate::sink::encode_flows;
        let dropped = FlowBatch::encoded(
            &flows(3).collect::<Vec<_>>(),
            (encoder, &[]),
            Credit::adopt(Arc::clone(&budget), 0),
            Arc::clone(&counters),
        );
        drop(dropped);
        assert_eq!(counters.flows_dropped.get(flow_drop::PUBLISHER_FAILED), 3);
        let batch = FlowBatch::encoded(
            &flows(2).collect::<Vec<_>>(),
            (encoder, &[]),
            Credit::adopt(budget, 0),
            Arc::clone(&counters),
        );
        let (staged, received) = batch.accept();
        assert!(matches!(staged, Staged::Encoded(ref payloads) if payloads.len() == 2));
        assert_eq!(received, vec![1, 2]);
        assert_eq!(counters.flows_dropped.get(flow_drop::PUBLISHER_FAILED), 3);
    }
}
