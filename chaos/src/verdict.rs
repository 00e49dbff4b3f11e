//! The end of every scenario: what the stream holds compared with what was sent, and
//! the one-line verdict with its figures.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use flowpb::FlowMessage;

use crate::exporter::{Expected, Ledger, flow_id, mismatch};

/// What the stream holds, record by record, against the [`Ledger`].
#[derive(Debug, Default, Clone)]
pub struct Audit {
    /// Messages stored (each copy counts).
    pub messages: u64,
    /// Distinct records stored.
    pub distinct: u64,
    /// Copies beyond what the exporters put on the wire (a re-publish stored twice).
    pub duplicates: u64,
    /// Copies the exporters put on the wire twice and the stream holds twice (expected).
    pub exporter_duplicates: u64,
    /// Copies put on the wire that the stream does not hold.
    pub missing: u64,
    /// Ids of missing records, a few.
    pub missing_examples: Vec<u32>,
    /// Stored messages that are no record of ours.
    pub unknown: u64,
    /// Stored records whose fields differ from what was sent (decoded with a wrong
    /// template layout, or corrupted), with the first few explained.
    pub corrupt: u64,
    pub corrupt_examples: Vec<String>,
}

impl Audit {
    /// Compares what the stream holds (each distinct payload with its copies) with the
    /// ledger.
    pub fn of(stored: &[(FlowMessage, usize)], ledger: &Ledger) -> Audit {
        let mut audit = Audit::default();
        let mut copies: HashMap<u32, u64> = HashMap::new();
        for (flow, n) in stored {
            let n = *n as u64;
            audit.messages += n;
            let Some((id, sent)) =
                flow_id(flow).and_then(|id| Some((id, ledger.records.get(&id)?)))
            else {
                audit.unknown += n;
                continue;
            };
            if let Some(wrong) =
                mismatch(flow, sent.exporter, sent.protocol, &Expected::of(id, sent.layout))
            {
                audit.corrupt += n;
                if audit.corrupt_examples.len() < 3 {
                    audit.corrupt_examples.push(wrong);
                }
                continue;
            }
            *copies.entry(id).or_default() += n;
        }
        audit.distinct = copies.len() as u64;
        for (id, sent) in &ledger.records {
            let want = u64::from(sent.copies);
            let got = copies.get(id).copied().unwrap_or(0);
            if got < want {
                audit.missing += want - got;
                if audit.missing_examples.len() < 5 {
                    audit.missing_examples.push(*id);
                }
            }
            if got > want {
                audit.duplicates += got - want;
            }
            if want > 1 {
                audit.exporter_duplicates += got.min(want) - 1;
            }
        }
        audit
    }

    /// This audit with the duplicate copies taken out (for a scenario where some are
    /// expected and checked on their own).
    pub fn without_duplicates(&self) -> Audit {
        Audit { messages: self.messages - self.duplicates, duplicates: 0, ..self.clone() }
    }

    /// No duplicate, nothing unknown or corrupt: everything stored was sent, once.
    pub fn clean(&self) -> bool {
        self.duplicates == 0 && self.unknown == 0 && self.corrupt == 0
    }

    /// A one-line account of what is wrong, for failure messages.
    pub fn problems(&self) -> String {
        format!(
            "missing={} (e.g. ids {:?}) duplicates={} unknown={} corrupt={} {:?}",
            self.missing,
            self.missing_examples,
            self.duplicates,
            self.unknown,
            self.corrupt,
            self.corrupt_examples
        )
    }
}

/// A scenario's outcome: its figures, the invariants that failed, and notes.
#[derive(Debug)]
pub struct Verdict {
    name: String,
    /// Flow records sent (copies on the wire).
    pub sent: u64,
    /// Flows the collector says it published.
    pub published: u64,
    /// Messages the stream holds.
    pub in_stream: u64,
    /// Copies stored beyond one per record sent.
    pub duplicates: u64,
    /// Records (or datagrams, where so named) dropped and counted, by reason.
    pub dropped: BTreeMap<String, u64>,
    pub recovery: Option<Duration>,
    pub peak_rss_kib: Option<u64>,
    notes: Vec<String>,
    failures: Vec<String>,
}

impl Verdict {
    pub fn new(name: &str) -> Verdict {
        Verdict {
            name: name.to_owned(),
            sent: 0,
            published: 0,
            in_stream: 0,
            duplicates: 0,
            dropped: BTreeMap::new(),
            recovery: None,
            peak_rss_kib: None,
            notes: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Takes the stream-side figures from an audit.
    pub fn audit(&mut self, audit: &Audit) {
        self.in_stream = audit.messages;
        self.duplicates = audit.duplicates;
    }

    /// Adds a counted drop (zeros are left out of the line).
    pub fn drop_count(&mut self, reason: &str, n: u64) {
        if n > 0 {
            *self.dropped.entry(reason.to_owned()).or_default() += n;
        }
    }

    /// Records an invariant: fails the verdict with `what` when `ok` is false.
    pub fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }

    /// A figure shown after the standard ones (`key=value`).
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The verdict line.
    pub fn line(&self) -> String {
        let state = if self.failures.is_empty() { "PASS" } else { "FAIL" };
        let dropped: Vec<String> = self.dropped.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        let mut line = format!(
            "chaos {}: {state} sent={} published={} in_stream={} duplicates={} dropped={{{}}}",
            self.name,
            self.sent,
            self.published,
            self.in_stream,
            self.duplicates,
            dropped.join(",")
        );
        match self.recovery {
            Some(recovery) => write!(line, " recovery={:.1}s", recovery.as_secs_f64()),
            None => write!(line, " recovery=-"),
        }
        .expect("write to a String");
        match self.peak_rss_kib {
            Some(kib) => write!(line, " peak_rss={:.1}MiB", kib as f64 / 1024.0),
            None => write!(line, " peak_rss=-"),
        }
        .expect("write to a String");
        for note in &self.notes {
            line.push(' ');
            line.push_str(note);
        }
        if !self.failures.is_empty() {
            write!(line, " failed=[{}]", self.failures.join("; ")).expect("write to a String");
        }
        line
    }

    /// Prints the verdict line (stdout) and fails the test when an invariant failed.
    pub fn finish(self) {
        let line = self.line();
        println!("{line}");
        assert!(self.failures.is_empty(), "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporter::{Exporter, Ids, Layout, Protocol};

    #[test]
    fn the_line_carries_every_figure() {
        let mut v = Verdict::new("demo");
        v.sent = 10;
        v.published = 9;
        v.in_stream = 9;
        v.drop_count("channel_full", 1);
        v.drop_count("kernel", 0);
        v.recovery = Some(Duration::from_millis(1500));
        v.peak_rss_kib = Some(30 * 1024);
        assert_eq!(
            v.line(),
            "chaos demo: PASS sent=10 published=9 in_stream=9 duplicates=0 \
             dropped={channel_full:1} recovery=1.5s peak_rss=30.0MiB"
        );
        v.check(false, "bad");
        assert!(v.line().contains(": FAIL ") && v.line().ends_with("failed=[bad]"));
    }

    #[test]
    fn the_audit_finds_missing_duplicate_and_misdecoded_records() {
        let exporter_ip = "127.0.0.2".parse().unwrap();
        let mut exporter = Exporter::new(Protocol::V9, Layout::A);
        let mut ids = Ids::starting_at(1);
        let datagram = exporter.datagram(ids.take(3), true);
        let mut ledger = Ledger::default();
        ledger.record(exporter_ip, Protocol::V9, &datagram, 1);
        let flow = |id: u32, layout: Layout| {
            let e = Expected::of(id, layout);
            FlowMessage {
                r#type: flowpb::FlowType::NetflowV9 as i32,
                sampler_address: vec![127, 0, 0, 2],
                src_addr: e.src_addr.to_vec(),
                dst_addr: e.dst_addr.to_vec(),
                src_port: e.src_port.into(),
                dst_port: e.dst_port.into(),
                proto: e.proto.into(),
                bytes: e.bytes,
                packets: e.packets,
                ..Default::default()
            }
        };
        let stored = vec![(flow(1, Layout::A), 2), (flow(2, Layout::B), 1)];
        let audit = Audit::of(&stored, &ledger);
        assert_eq!((audit.messages, audit.distinct), (3, 1));
        assert_eq!((audit.duplicates, audit.corrupt, audit.missing), (1, 1, 2));
        assert!(!audit.clean());
    }
}
