//! A data template compiled for its records: where each mapped field lies in a record
//! and where its value goes, worked out once when the template is installed.
//!
//! A record is then read without looking up any Information Element: integer fields of
//! a fixed-length template go straight into their [`Slot`], the others to their
//! [`Target`]. Fields the mapping does not know, and integer fields whose declared
//! length no value can have, are left out when compiling, which is what reading them
//! one by one would do with them.

use super::fields::{FieldSpec, FlowFields, Target, target};
use super::slots::{Slot, be_uint, slot_set};

/// How a template's records are read into [`FlowFields`] (see
/// [`super::templates::Layout::read_flow`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Every field has a fixed length, so each sits at the same offset in every record.
    Fixed(FixedReads),
    /// Some field is IPFIX variable-length: each field's target, in template order
    /// (offsets are found record by record).
    Variable(Vec<Option<Target>>),
}

/// The mapped fields of a fixed-length template, by offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FixedReads {
    ints: Vec<IntRead>,
    /// The slots of `ints` as a mask (see [`slot_set`]), when no two share a slot:
    /// a record with none of them set yet, and whole 8-byte words at every integer
    /// (see `words_end`), then takes every value with no check. `None` when a slot
    /// repeats.
    distinct_slots: Option<u64>,
    /// How many bytes reading every integer as an 8-byte word needs.
    words_end: usize,
    others: Vec<OtherRead>,
    /// The parts of [`FlowFields`] `others` write (see [`FlowFields::reset`]).
    parts: u16,
}

/// An integer field of a fixed-length template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IntRead {
    at: u32,
    len: u16,
    /// 64 − 8 × `len`: the value is the 8 bytes from `at`, big-endian, shifted right
    /// by this (one read with no branch on the width).
    shift: u8,
    slot: Slot,
}

impl IntRead {
    /// The value, read as the 8-byte word at its offset (`data` holds it).
    fn word_value(&self, data: &[u8]) -> u64 {
        let start = self.at as usize;
        let word = data.get(start..start + 8).and_then(|word| <[u8; 8]>::try_from(word).ok());
        word.map_or(0, |word| u64::from_be_bytes(word) >> self.shift)
    }

    fn value(&self, data: &[u8]) -> Option<u64> {
        let start = usize::try_from(self.at).ok()?;
        match data.get(start..start.checked_add(8)?) {
            Some(word) => {
                let word: [u8; 8] = word.try_into().ok()?;
                Some(u64::from_be_bytes(word) >> self.shift)
            }
            // Fewer than 8 bytes left in the set (its last record): the value alone.
            None => value_at(data, self.at, self.len).and_then(be_uint),
        }
    }
}

/// Any other mapped field of a fixed-length template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OtherRead {
    at: u32,
    len: u16,
    id: u16,
    target: Target,
}

impl Plan {
    /// Compiles `fields` (a template's, in wire order); `fixed` tells whether every
    /// record has the same length.
    pub fn compile(fields: &[FieldSpec], fixed: bool) -> Self {
        if !fixed {
            return Plan::Variable(fields.iter().map(|spec| target(*spec)).collect());
        }
        let (mut ints, mut others) = (Vec::new(), Vec::new());
        let mut at = 0u32;
        for spec in fields {
            let len = spec.length;
            match target(*spec) {
                Some(Target::Int(slot)) if slot.fits(usize::from(len)) => {
                    // `fits` bounds `len` to 1..=8.
                    let shift = (64 - 8 * len) as u8;
                    ints.push(IntRead { at, len, shift, slot });
                }
                Some(Target::Int(_)) | None => {}
                Some(target) => others.push(OtherRead { at, len, id: spec.id, target }),
            }
            at = at.saturating_add(u32::from(len));
        }
        let slots: Vec<Slot> = ints.iter().map(|read| read.slot).collect();
        let mask = slot_set(&slots);
        let distinct_slots = (mask.count_ones() as usize == slots.len()).then_some(mask);
        let words_end = ints.iter().map(|read| read.at as usize + 8).max().unwrap_or(0);
        let parts = others.iter().fold(0, |parts, read| parts | read.target.part());
        Plan::Fixed(FixedReads { ints, distinct_slots, words_end, others, parts })
    }
}

impl FixedReads {
    /// Readies `flow`, which holds a record this plan read, for the next one: every
    /// record writes the same integer slots, so their values need no clearing.
    pub fn reset(&self, flow: &mut FlowFields) {
        flow.reset(self.parts);
    }

    /// Reads the record at the start of `data` into `flow` (`data` may go on past the
    /// record: the bytes after it let an integer be read as one 8-byte word). Integer
    /// and other fields go to separate places, so reading the integers first changes
    /// nothing; within each kind, template order is kept (the first occurrence wins).
    pub fn read(&self, data: &[u8], flow: &mut FlowFields) {
        let filled = match self.distinct_slots {
            Some(slots) if data.len() >= self.words_end => {
                let values = self.ints.iter().map(|read| (read.slot, read.word_value(data)));
                flow.fill_unset_ints(slots, values)
            }
            _ => false,
        };
        if !filled {
            for read in &self.ints {
                if let Some(value) = read.value(data) {
                    flow.apply_int(read.slot, value);
                }
            }
        }
        for read in &self.others {
            if let Some(value) = value_at(data, read.at, read.len) {
                flow.apply_target(read.id, read.target, value);
            }
        }
    }
}

fn value_at(wire: &[u8], at: u32, len: u16) -> Option<&[u8]> {
    let start = usize::try_from(at).ok()?;
    wire.get(start..start.checked_add(usize::from(len))?)
}

#[cfg(test)]
mod tests {
    use flow_replay::generate::flow::Rng;
    use flowpb::{FlowMessage, FlowType};

    use super::*;
    use crate::netflow::fields::RecordContext;

    /// Information Elements of every kind the mapping has: integers of each width,
    /// MACs, addresses, MPLS sections, sampling, times, unknown ones.
    const IDS: &[u16] = &[
        1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 14, 15, 27, 28, 32, 34, 56, 58, 60, 70, 71, 80, 85, 152,
        153, 160, 176, 225, 231, 232, 298, 299, 498, 1000, 40001,
    ];
    const LENGTHS: &[u16] = &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 16];

    fn ctx() -> RecordContext<'static> {
        RecordContext {
            flow_type: FlowType::NetflowV9,
            sequence: 1,
            domain: 0,
            export_ms: 1_700_000_000_000,
            sys_uptime_ms: Some(1_000_000),
            system_init_ms: None,
            received_ns: 1,
            sampler_address: &[192, 0, 2, 1],
        }
    }

    fn message(flow: &mut FlowFields) -> FlowMessage {
        let mut msg = FlowMessage::default();
        flow.finish_into(&ctx(), 0, &mut msg);
        msg
    }

    /// The plan of random fixed-length templates (repeated elements, lengths no value
    /// of the element can have, records at the very end of the data) reads every record
    /// as taking its fields one by one does.
    #[test]
    fn a_compiled_template_reads_records_as_field_by_field_does() {
        let mut rng = Rng::new(11);
        for _ in 0..2000 {
            let count = rng.between(1, 24);
            let fields: Vec<FieldSpec> = (0..count)
                .map(|_| FieldSpec { id: rng.pick(IDS), enterprise: 0, length: rng.pick(LENGTHS) })
                .collect();
            let record_len: usize = fields.iter().map(|f| usize::from(f.length)).sum();
            let trailing = rng.below(12) as usize;
            let data: Vec<u8> = (0..record_len + trailing).map(|_| rng.next_u64() as u8).collect();
            let Plan::Fixed(reads) = Plan::compile(&fields, true) else {
                panic!("a fixed-length template compiles to fixed reads");
            };
            let mut planned = FlowFields::default();
            reads.read(&data, &mut planned);
            let mut one_by_one = FlowFields::default();
            let mut at = 0;
            for spec in &fields {
                let len = usize::from(spec.length);
                one_by_one.apply(*spec, &data[at..at + len]);
                at += len;
            }
            assert_eq!(message(&mut planned), message(&mut one_by_one), "template {fields:?}");
        }
    }

    /// Fields readied by [`FixedReads::reset`] read each next record of their template
    /// as new fields do: no value of one record shows in the next, whatever the
    /// template (every kind of element, repeated ones, odd lengths).
    #[test]
    fn reset_fields_read_the_next_record_as_new_fields_do() {
        let mut rng = Rng::new(29);
        let ids: Vec<u16> =
            IDS.iter().copied().chain([27, 28, 62, 140, 152, 153, 485, 494, 497]).collect();
        for _ in 0..2000 {
            let count = rng.between(1, 24);
            let fields: Vec<FieldSpec> = (0..count)
                .map(|_| FieldSpec { id: rng.pick(&ids), enterprise: 0, length: rng.pick(LENGTHS) })
                .collect();
            let record_len: usize = fields.iter().map(|f| usize::from(f.length)).sum();
            let Plan::Fixed(reads) = Plan::compile(&fields, true) else {
                panic!("a fixed-length template compiles to fixed reads");
            };
            let mut reused = FlowFields::default();
            for record in 0..4 {
                // A field all zeros now and then (an unused address family, padding
                // MPLS sections), so values come and go from record to record.
                let mut data = Vec::with_capacity(record_len + 8);
                for spec in &fields {
                    let zero = rng.below(4) == 0;
                    data.extend(
                        (0..spec.length).map(|_| if zero { 0 } else { rng.next_u64() as u8 }),
                    );
                }
                data.extend_from_slice(&[0; 8]);
                if record > 0 {
                    reads.reset(&mut reused);
                }
                reads.read(&data, &mut reused);
                let mut fresh = FlowFields::default();
                reads.read(&data, &mut fresh);
                assert_eq!(message(&mut reused), message(&mut fresh), "template {fields:?}");
            }
        }
    }

    #[test]
    fn unknown_elements_and_lengths_no_value_fits_are_left_out() {
        let spec = |id, length| FieldSpec { id, enterprise: 0, length };
        let fields = [spec(7, 0), spec(7, 9), spec(56, 4), spec(1000, 4), spec(7, 2), spec(8, 4)];
        let Plan::Fixed(reads) = Plan::compile(&fields, true) else {
            panic!("a fixed-length template compiles to fixed reads");
        };
        assert_eq!(reads.ints, vec![IntRead { at: 17, len: 2, shift: 48, slot: Slot::SrcPort }]);
        assert_eq!(reads.others.len(), 1);
        assert_eq!((reads.others[0].at, reads.others[0].target), (19, Target::SrcAddr4));
        assert_eq!(reads.distinct_slots, Some(slot_set(&[Slot::SrcPort])));
        assert_eq!(reads.words_end, 25);
    }

    #[test]
    fn a_repeated_integer_slot_keeps_the_first_occurrence_check() {
        let spec = |id, length| FieldSpec { id, enterprise: 0, length };
        let Plan::Fixed(reads) = Plan::compile(&[spec(7, 2), spec(11, 2), spec(7, 2)], true) else {
            panic!("a fixed-length template compiles to fixed reads");
        };
        assert_eq!(reads.distinct_slots, None);
        let mut flow = FlowFields::default();
        reads.read(&[0, 80, 0, 53, 0, 22, 0, 0, 0, 0, 0, 0, 0, 0], &mut flow);
        let msg = message(&mut flow);
        assert_eq!((msg.src_port, msg.dst_port), (80, 53));
    }
}
