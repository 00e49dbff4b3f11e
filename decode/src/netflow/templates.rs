//! Our record of each template netflow_parser holds (its layout), compiled into the
//! walker that splits data records straight from the wire.
//!
//! netflow_parser's caches are private and its events carry no template id (and fire
//! `Learned` on every refresh), so a scope keeps the layout of every template the parser
//! accepted. Comparing an arriving template with it tells new from refreshed from
//! reused-with-a-new-layout; asking the parser which ids it still holds after an
//! eviction tells which one went. The layouts also give each value its Information
//! Element id (netflow_parser's IPFIX field enums do not convert back), and split data
//! records field by field with no per-record allocation: a fixed-length template's
//! record length, and where each of its fields goes ([`super::plan`]), are worked out
//! once, when the template is installed.

use netflow_parser::variable_versions::{ipfix, v9};

use crate::SessionMap;

use super::fields::{FieldSpec, FlowFields, VARIABLE_LENGTH};
use super::plan::Plan;

/// Data template or options template (they share one id space per scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TemplateKind {
    Data,
    Options,
}

/// The layout of one template as netflow_parser accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub kind: TemplateKind,
    /// All fields in wire order, scope fields first. For v9 options templates the scope
    /// fields carry the v9 scope type as their id (they are not Information Elements).
    pub fields: Vec<FieldSpec>,
    pub scope_fields: usize,
    /// The length of every record, unless a field is IPFIX variable-length.
    fixed_len: Option<usize>,
    /// How a data record is read (compiled from `fields`).
    plan: Plan,
}

impl Layout {
    /// `variable`: whether length 65535 marks a variable-length field (IPFIX); in
    /// NetFlow v9 it is a plain length, which no record can fit in a set.
    fn new(
        kind: TemplateKind,
        fields: Vec<FieldSpec>,
        scope_fields: usize,
        variable: bool,
    ) -> Self {
        let fixed_len = if variable && fields.iter().any(|f| f.length == VARIABLE_LENGTH) {
            None
        } else {
            Some(fields.iter().map(|f| usize::from(f.length)).sum())
        };
        let plan = Plan::compile(&fields, fixed_len.is_some());
        Self { kind, fields, scope_fields, fixed_len, plan }
    }

    pub fn from_v9(template: &v9::Template) -> Self {
        let fields = template
            .fields
            .iter()
            .map(|f| FieldSpec { id: f.field_type_number, enterprise: 0, length: f.field_length })
            .collect();
        Self::new(TemplateKind::Data, fields, 0, false)
    }

    pub fn from_v9_options(template: &v9::OptionsTemplate) -> Self {
        let scope = template.scope_fields.iter().map(|f| FieldSpec {
            id: f.field_type_number,
            enterprise: 0,
            length: f.field_length,
        });
        let options = template.option_fields.iter().map(|f| FieldSpec {
            id: f.field_type_number,
            enterprise: 0,
            length: f.field_length,
        });
        Self::new(
            TemplateKind::Options,
            scope.chain(options).collect(),
            template.scope_fields.len(),
            false,
        )
    }

    fn ipfix_fields(fields: &[ipfix::TemplateField]) -> Vec<FieldSpec> {
        fields
            .iter()
            .map(|f| FieldSpec {
                id: f.field_type_number,
                enterprise: f.enterprise_number.unwrap_or(0),
                length: f.field_length,
            })
            .collect()
    }

    pub fn from_ipfix(template: &ipfix::Template) -> Self {
        Self::new(TemplateKind::Data, Self::ipfix_fields(&template.fields), 0, true)
    }

    pub fn from_ipfix_options(template: &ipfix::OptionsTemplate) -> Self {
        Self::new(
            TemplateKind::Options,
            Self::ipfix_fields(&template.fields),
            usize::from(template.scope_field_count),
            true,
        )
    }

    /// Length of the record at the start of `data`, or `None` when it is not all there.
    /// Variable-length fields may be empty (length 0): RFC 7011 §7 allows it.
    pub fn record_len(&self, data: &[u8]) -> Option<usize> {
        if let Some(len) = self.fixed_len {
            return (len <= data.len()).then_some(len);
        }
        let mut at = 0usize;
        for field in &self.fields {
            let (start, len) = field_extent(field.length, data, at)?;
            at = start.checked_add(len).filter(|end| *end <= data.len())?;
        }
        Some(at)
    }

    /// How many whole records `body` holds, when every record has the same length (a
    /// fixed-length template of non-zero length); `None` otherwise.
    pub fn fixed_records_in(&self, body: &[u8]) -> Option<usize> {
        self.fixed_len.filter(|len| *len > 0).map(|len| body.len() / len)
    }

    /// Calls `apply` with each field of the record at the start of `data` (which
    /// [`Layout::record_len`] has measured).
    pub fn for_each_field(&self, data: &[u8], mut apply: impl FnMut(FieldSpec, &[u8])) {
        let variable = self.fixed_len.is_none();
        let mut at = 0usize;
        for field in &self.fields {
            let extent = match variable {
                true => field_extent(field.length, data, at),
                false => Some((at, usize::from(field.length))),
            };
            let Some((start, len)) = extent else {
                return;
            };
            let Some(value) = data.get(start..start + len) else {
                return;
            };
            apply(*field, value);
            at = start + len;
        }
    }

    /// Readies `flow`, which holds the record this layout read last, for the next one
    /// (see [`FlowFields::reset`]): cheaper than new fields for a fixed-length
    /// template; new fields for a variable-length one, whose integer fields may come
    /// and go from record to record.
    pub fn reset_flow(&self, flow: &mut FlowFields) {
        match &self.plan {
            Plan::Fixed(reads) => reads.reset(flow),
            Plan::Variable(_) => *flow = FlowFields::default(),
        }
    }

    /// Reads the data record at the start of `data` (which [`Layout::record_len`] has
    /// measured) into `flow`, by the compiled plan. `data` may go on past the record
    /// (the rest of its set): only the record's own fields are read.
    pub fn read_flow(&self, data: &[u8], flow: &mut FlowFields) {
        match &self.plan {
            Plan::Fixed(reads) => reads.read(data, flow),
            Plan::Variable(targets) => {
                let mut targets = targets.iter();
                self.for_each_field(data, |spec, value| {
                    if let Some(Some(target)) = targets.next() {
                        flow.apply_target(spec.id, *target, value);
                    }
                });
            }
        }
    }
}

/// Where a field's value starts and how long it is: fixed, or an IPFIX variable-length
/// prefix (1 byte, or 255 followed by 2 bytes).
fn field_extent(length: u16, data: &[u8], at: usize) -> Option<(usize, usize)> {
    if length != VARIABLE_LENGTH {
        return Some((at, usize::from(length)));
    }
    match *data.get(at)? {
        255 => {
            let long = data.get(at + 1..at + 3)?;
            Some((at + 3, usize::from(u16::from_be_bytes([long[0], long[1]]))))
        }
        short => Some((at + 1, usize::from(short))),
    }
}

/// What installing a template did to a scope's layouts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Installed {
    /// Not known before.
    New,
    /// Known with this exact layout (a refresh).
    Refreshed,
    /// Known with a different layout, which it replaced.
    Replaced { old_field_count: usize },
}

/// A layout, the session datagram tick it was last (re)defined in and the scope's
/// use clock when a data set last used it (0: never).
#[derive(Debug)]
struct Defined {
    layout: Layout,
    tick: u64,
    used: u64,
}

/// The layouts of one scope's templates, by template id.
#[derive(Debug, Default)]
pub(crate) struct Layouts {
    by_id: SessionMap<u16, Defined>,
}

impl Layouts {
    pub fn get(&self, id: u16) -> Option<&Layout> {
        self.by_id.get(&id).map(|d| &d.layout)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The layout of `id`, noting that a data set uses it at `clock` (see
    /// [`Layouts::used_since`]).
    pub fn use_at(&mut self, id: u16, clock: u64) -> Option<&Layout> {
        let defined = self.by_id.get_mut(&id)?;
        defined.used = clock;
        Some(&defined.layout)
    }

    /// Ids of the templates data sets used after `clock`, least recently used first.
    pub fn used_since(&self, clock: u64) -> Vec<u16> {
        let mut used: Vec<(u64, u16)> = self
            .by_id
            .iter()
            .filter(|(_, d)| d.used > clock)
            .map(|(id, d)| (d.used, *id))
            .collect();
        used.sort_unstable();
        used.into_iter().map(|(_, id)| id).collect()
    }

    /// Installs `layout` for `id`, defined in datagram `tick` (a redefinition keeps
    /// when the template was last used).
    pub fn install(&mut self, id: u16, layout: Layout, tick: u64) -> Installed {
        let used = self.by_id.get(&id).map_or(0, |d| d.used);
        match self.by_id.insert(id, Defined { layout, tick, used }) {
            None => Installed::New,
            Some(old) if Some(&old.layout) == self.get(id) => Installed::Refreshed,
            Some(old) => Installed::Replaced { old_field_count: old.layout.fields.len() },
        }
    }

    pub fn remove(&mut self, id: u16) -> Option<Layout> {
        self.by_id.remove(&id).map(|d| d.layout)
    }

    /// Ids of the templates of `kind`, sorted (for a deterministic event order).
    pub fn ids_of(&self, kind: TemplateKind) -> Vec<u16> {
        let mut ids: Vec<u16> =
            self.by_id.iter().filter(|(_, d)| d.layout.kind == kind).map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids
    }

    /// Drops the layouts last defined before datagram `tick`; returns how many.
    pub fn forget_before(&mut self, tick: u64) -> usize {
        let before = self.by_id.len();
        self.by_id.retain(|_, d| d.tick >= tick);
        before - self.by_id.len()
    }

    /// Removes and returns (sorted) the ids for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(u16) -> bool) -> Vec<u16> {
        let mut gone: Vec<u16> = self.by_id.keys().copied().filter(|id| !keep(*id)).collect();
        gone.sort_unstable();
        for id in &gone {
            self.by_id.remove(id);
        }
        gone
    }

    pub fn all_ids(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self.by_id.keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(lengths: &[u16]) -> Layout {
        let fields =
            lengths.iter().map(|l| FieldSpec { id: 1, enterprise: 0, length: *l }).collect();
        Layout::new(TemplateKind::Data, fields, 0, true)
    }

    #[test]
    fn variable_length_fields_may_be_empty() {
        let l = layout(&[2, VARIABLE_LENGTH, 1]);
        assert_eq!(l.record_len(&[1, 2, 0, 9]), Some(4));
        let mut seen = Vec::new();
        l.for_each_field(&[1, 2, 0, 9], |_, v| seen.push(v.to_vec()));
        assert_eq!(seen, vec![vec![1, 2], vec![], vec![9]]);
    }

    #[test]
    fn long_variable_length_prefix_and_truncation() {
        let l = layout(&[VARIABLE_LENGTH]);
        assert_eq!(l.record_len(&[255, 0, 2, 7, 7]), Some(5));
        assert_eq!(l.record_len(&[255, 0, 3, 7, 7]), None);
        assert_eq!(l.record_len(&[]), None);
    }

    #[test]
    fn install_tells_new_refresh_and_replacement_apart() {
        let mut layouts = Layouts::default();
        assert_eq!(layouts.install(256, layout(&[4]), 1), Installed::New);
        assert_eq!(layouts.install(256, layout(&[4]), 2), Installed::Refreshed);
        assert_eq!(
            layouts.install(256, layout(&[4, 2]), 3),
            Installed::Replaced { old_field_count: 1 }
        );
    }

    #[test]
    fn templates_used_since_a_clock_come_least_recently_used_first() {
        let mut layouts = Layouts::default();
        for id in [256, 257, 258] {
            layouts.install(id, layout(&[4]), 1);
        }
        assert!(layouts.used_since(0).is_empty());
        layouts.use_at(258, 1);
        layouts.use_at(256, 2);
        layouts.use_at(257, 3);
        layouts.use_at(258, 4);
        assert_eq!(layouts.used_since(0), vec![256, 257, 258]);
        assert_eq!(layouts.used_since(3), vec![258]);
        layouts.install(256, layout(&[4]), 2);
        assert_eq!(layouts.used_since(1), vec![256, 257, 258], "a refresh keeps its use");
        assert!(layouts.use_at(300, 5).is_none());
    }

    #[test]
    fn forgetting_keeps_templates_defined_since_the_tick() {
        let mut layouts = Layouts::default();
        layouts.install(256, layout(&[4]), 1);
        layouts.install(257, layout(&[4]), 1);
        layouts.install(257, layout(&[4]), 5);
        layouts.install(258, layout(&[2]), 5);
        assert_eq!(layouts.forget_before(5), 1);
        assert_eq!(layouts.all_ids(), vec![257, 258]);
    }
}
