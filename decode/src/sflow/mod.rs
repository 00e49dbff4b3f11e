//! sFlow v5 (sflow.org, "sFlow Version 5", July 2004), decoded by hand: a datagram is
//! a short header and a list of length-prefixed samples, each a list of
//! length-prefixed records, so every unknown part can be skipped by its length.
//!
//! - Flow samples (compact, format 1, and expanded, format 3) become one `FlowMessage`
//!   each; counter samples (2, 4) are counted in `DatagramReport::non_flow_records`;
//!   other samples and records (any other format, or enterprise ≠ 0) are skipped.
//! - A malformed sample is one counted error and is not emitted; decoding goes on with
//!   the next sample, since the sample's length says where it ends. A sample whose
//!   length runs past the datagram ends the datagram (earlier samples are kept).
//! - `max_samples_per_datagram`: the first N samples are decoded; one
//!   `TooManySamples` error counts a datagram that declares more.
//! - An agent address of type 0 (unknown) is a counted error; the UDP source address
//!   then stands in as `sampler_address` and the samples are still decoded.
//! - Datagram loss and agent restarts are tracked per (agent address, sub-agent id)
//!   (see `sequence`): losses in `DatagramReport::sequence_gap`, restarts as
//!   `ExporterRestarted` events whose `domain` is the sub-agent id.
//! - Sampling policy (`sampling` of the listener, [`crate::sampling`]): an override
//!   whose prefix holds the agent address (the UDP source when the agent address is
//!   unknown) replaces the sample's rate (`SAMPLING_RATE_OVERRIDDEN`); `default_rate`
//!   fills only a rate of 0, which some agents send (`SAMPLING_RATE_DEFAULTED`, counted
//!   in `DatagramReport::sampling_rate_defaulted`); a rate left 0 is counted in
//!   `DatagramReport::sampling_rate_unknown`.
//!
//! Flow fields: `sampling_rate` from the sample (or the policy), `sequence_num` = the
//! datagram sequence, flow start/end = receive time, `packets` = 1, `bytes` = the
//! sampled frame length; interfaces and `forwarding_status` as
//! `flow::apply_interfaces` documents.

mod cursor;
mod datagram;
mod error;
mod flow;
mod records;
mod sequence;

pub use error::SflowError;

use std::net::IpAddr;

use crate::buffer::FlowBuffer;
use crate::event::{LifecycleEvent, Protocol};
use crate::report::{DatagramReport, DecodeError, SessionStats};
use crate::sampling::{PolicyCache, SamplingPolicy};
use crate::{Datagram, ExporterSession, address_bytes};
use cursor::Cursor;
use datagram::{
    COUNTER_SAMPLE, DatagramHeader, EXPANDED_COUNTER_SAMPLE, EXPANDED_FLOW_SAMPLE, FLOW_SAMPLE,
    FlowSampleHeader, SFLOW_VERSION, read_element,
};
use flow::{DatagramContext, write_flow};
use records::FlowRecords;
use sequence::{AgentKey, SequenceTracker};

/// sFlow limits and sampling policy, from the listener's config entry.
#[derive(Debug, Clone, Default)]
pub struct SflowSettings {
    /// Samples decoded per datagram at most (`max_samples_per_datagram`); `None` = no cap.
    pub max_samples_per_datagram: Option<u32>,
    /// Per-agent rate overrides and the rate for samples that carry 0 (`sampling`).
    pub sampling: SamplingPolicy,
}

/// One sFlow exporter's decoder state: the sequence tracking of every agent and
/// sub-agent that sends from its address, and its sampling policy.
#[derive(Debug)]
pub struct SflowSession {
    max_samples: Option<u32>,
    sequences: SequenceTracker,
    sampling: SamplingPolicy,
    /// The policy as it applies to the last agent address seen.
    agent_policy: PolicyCache,
}

/// Compact or expanded flow sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SampleForm {
    Compact,
    Expanded,
}

impl SflowSession {
    pub fn new(settings: &SflowSettings) -> Self {
        SflowSession {
            max_samples: settings.max_samples_per_datagram,
            sequences: SequenceTracker::default(),
            sampling: settings.sampling.clone(),
            agent_policy: PolicyCache::default(),
        }
    }

    /// Datagrams declared lost (by sequence number) since the session started.
    pub fn lost_datagrams(&self) -> u64 {
        self.sequences.lost_total()
    }

    /// Agent restarts detected since the session started.
    pub fn restarts(&self) -> u64 {
        self.sequences.restarts_total()
    }

    fn decode_datagram(
        &mut self,
        datagram: Datagram<'_>,
        out: &mut FlowBuffer,
        report: &mut DatagramReport,
    ) -> Result<(), DecodeError> {
        let mut cur = Cursor::new(datagram.payload);
        let header = read_datagram_header(&mut cur)?;
        let agent = header.agent.unwrap_or_else(|| {
            report.errors.push(SflowError::UnknownAgentAddress.into());
            datagram.source.ip()
        });
        self.track_sequence(agent, &header, report);
        let context = DatagramContext {
            received_ns: datagram.received_ns,
            sequence: header.sequence,
            sampler_address: address_bytes(agent),
        };
        let budget = self.sample_budget(header.sample_count, report);
        let first = out.len();
        decode_samples(&mut cur, header.sample_count, budget, &context, out, report);
        self.apply_sampling_policy(agent, out.get_mut(first..).unwrap_or_default(), report);
        Ok(())
    }

    /// Gives the datagram's flows their final rate under the listener's policy for
    /// `agent` (override, else the sample's rate, else the default), counting them.
    fn apply_sampling_policy(
        &mut self,
        agent: IpAddr,
        flows: &mut [flowpb::FlowMessage],
        report: &mut DatagramReport,
    ) {
        let policy = self.agent_policy.get(&self.sampling, agent);
        for flow in flows {
            policy.apply(flow, report);
        }
    }

    fn track_sequence(
        &mut self,
        agent: IpAddr,
        header: &DatagramHeader,
        report: &mut DatagramReport,
    ) {
        let key = AgentKey { agent, sub_agent_id: header.sub_agent_id };
        let observation = self.sequences.observe(key, header.sequence, header.uptime_ms);
        report.sequence_gap = observation.lost;
        if observation.restarted {
            report.events.push(LifecycleEvent::ExporterRestarted {
                protocol: Protocol::Sflow,
                domain: header.sub_agent_id,
            });
        }
    }

    /// Samples to decode: all declared, or the first `max_samples_per_datagram`.
    fn sample_budget(&self, declared: u32, report: &mut DatagramReport) -> u32 {
        match self.max_samples {
            Some(max) if declared > max => {
                report.errors.push(DecodeError::TooManySamples { samples: declared, max });
                max
            }
            _ => declared,
        }
    }
}

impl ExporterSession for SflowSession {
    fn decode(&mut self, datagram: Datagram<'_>, out: &mut FlowBuffer) -> DatagramReport {
        let mut report = DatagramReport::default();
        if let Err(error) = self.decode_datagram(datagram, out, &mut report) {
            report.errors.push(error);
        }
        report
    }

    /// sFlow keeps no state that times out; an idle exporter's session is dropped whole.
    fn expire(&mut self, _now_ns: u64) -> Vec<LifecycleEvent> {
        Vec::new()
    }

    /// sFlow has no template cache to report.
    fn stats(&self) -> SessionStats {
        SessionStats::default()
    }
}

/// Version word and header. A datagram too short for them is `TruncatedHeader`.
fn read_datagram_header(cur: &mut Cursor<'_>) -> Result<DatagramHeader, DecodeError> {
    let len = cur.remaining();
    let truncated = |error: SflowError| match error {
        SflowError::Truncated { .. } => {
            DecodeError::TruncatedHeader { protocol: Protocol::Sflow, len }
        }
        other => other.into(),
    };
    let version = cur.u32("version").map_err(truncated)?;
    if version != SFLOW_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            version: u16::try_from(version).unwrap_or(u16::MAX),
        });
    }
    DatagramHeader::read(cur).map_err(truncated)
}

/// Decodes up to `budget` samples, appending flows; errors are counted per sample.
fn decode_samples(
    cur: &mut Cursor<'_>,
    declared: u32,
    budget: u32,
    context: &DatagramContext,
    out: &mut FlowBuffer,
    report: &mut DatagramReport,
) {
    for found in 0..budget {
        if cur.is_empty() {
            report.errors.push(SflowError::MissingSamples { declared, found }.into());
            return;
        }
        let (format, body) = match read_element(cur, "sample") {
            Ok(element) => element,
            Err(error) => {
                report.errors.push(error.into());
                return;
            }
        };
        let form = match format {
            FLOW_SAMPLE => SampleForm::Compact,
            EXPANDED_FLOW_SAMPLE => SampleForm::Expanded,
            COUNTER_SAMPLE | EXPANDED_COUNTER_SAMPLE => {
                report.non_flow_records += 1;
                continue;
            }
            _ => continue,
        };
        match decode_flow_sample(body, form, context, out) {
            Ok(()) => report.flows += 1,
            Err(error) => report.errors.push(error.into()),
        }
    }
}

/// Decodes one flow sample into the next message of `out` (none is taken when the
/// sample is malformed).
fn decode_flow_sample(
    body: &[u8],
    form: SampleForm,
    context: &DatagramContext,
    out: &mut FlowBuffer,
) -> Result<(), SflowError> {
    let mut cur = Cursor::new(body);
    let sample = match form {
        SampleForm::Compact => FlowSampleHeader::read_compact(&mut cur)?,
        SampleForm::Expanded => FlowSampleHeader::read_expanded(&mut cur)?,
    };
    let records = FlowRecords::read(&mut cur)?;
    write_flow(context, &sample, records, out.next_slot());
    Ok(())
}
