//! Flow start/end times in Unix nanoseconds.
//!
//! Sources, in order of preference for each end of the flow:
//! 1. absolute IPFIX times: flowStart/End Seconds (150/151), Milliseconds (152/153),
//!    Microseconds (154/155) and Nanoseconds (156/157). The last two are NTP
//!    timestamps (RFC 7011 §6.1.9: 32-bit seconds since 1900 + 32-bit fraction); the
//!    NTP era (the seconds wrap in 2036) is the one that puts the time nearest the
//!    export time, and an exporter that writes plain Unix-epoch microseconds /
//!    nanoseconds instead (seen in the field) is read that way when that reading is
//!    nearer the export time;
//! 2. flowStart/EndDeltaMicroseconds (158/159): microseconds before the export time;
//! 3. sysUpTime milliseconds (22/21): relative to the v9 header's sysUpTime and export
//!    time, or for IPFIX to systemInitTimeMilliseconds (IE 160, from the record itself
//!    or announced by options data); without IE 160 an IPFIX uptime is left unknown;
//! 4. flowDurationMilliseconds/Microseconds (161/162) derive a missing end from the
//!    other one;
//! 5. observationTime Seconds/Milliseconds/Microseconds/Nanoseconds (322..325, Cisco
//!    ASA NSEL's event time) stand in for an end, or a start, still missing.
//!
//! A time that cannot be resolved is left 0 ("unknown"), never invented. An IPFIX record
//! whose uptimes wait for IE 160 keeps its times ([`RecordTimes`]) until the end of its
//! datagram, so IE 160 in options data later in the same datagram still resolves them;
//! one announced in a later datagram cannot reach flows already emitted.

use std::borrow::Borrow;

use super::fields::RecordContext;
use super::slots::be_uint;

const NS_PER_MS: u64 = 1_000_000;
const NS_PER_US: u64 = 1_000;
const NS_PER_S: u64 = 1_000_000_000;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// The time-carrying Information Elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeField {
    StartSeconds,
    EndSeconds,
    StartMilliseconds,
    EndMilliseconds,
    StartMicroseconds,
    EndMicroseconds,
    StartNanoseconds,
    EndNanoseconds,
    StartDeltaMicroseconds,
    EndDeltaMicroseconds,
    DurationMilliseconds,
    DurationMicroseconds,
    ObservationSeconds,
    ObservationMilliseconds,
    ObservationMicroseconds,
    ObservationNanoseconds,
}

/// An absolute time as carried: already Unix nanoseconds, or an NTP-format value whose
/// reading waits for the export time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    UnixNs(u64),
    /// 64-bit NTP timestamp of a dateTimeMicroseconds (`unit_ns` 1000) or
    /// dateTimeNanoseconds (`unit_ns` 1) Information Element.
    Ntp {
        raw: u64,
        unit_ns: u64,
    },
}

impl Stamp {
    /// Unix nanoseconds, reading NTP values as near `reference_ns` as they can be.
    fn unix_ns(self, reference_ns: Option<u64>) -> Option<u64> {
        match self {
            Stamp::UnixNs(ns) => Some(ns),
            Stamp::Ntp { raw, unit_ns } => {
                let candidates = [ntp_to_unix_ns(raw, reference_ns), raw.checked_mul(unit_ns)];
                let distance = |t: &u64| reference_ns.map_or(0, |r| t.abs_diff(r));
                candidates.into_iter().flatten().min_by_key(distance)
            }
        }
    }
}

/// Times carried by one record, before resolution.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FlowTimes {
    absolute_start: Option<Stamp>,
    absolute_end: Option<Stamp>,
    delta_start_us: Option<u64>,
    delta_end_us: Option<u64>,
    duration_ns: Option<u64>,
    observation: Option<Stamp>,
    /// Whether any time element was taken ([`FlowTimes::set`]); without one, resolving
    /// gives the uptime-derived times as they are.
    taken: bool,
}

/// Seconds in one NTP era (the 32-bit seconds field wraps every 2^32 s).
const NTP_ERA_S: u64 = 1 << 32;

/// An NTP timestamp (32-bit seconds since 1900, 32-bit fraction) in Unix nanoseconds,
/// in the NTP era that puts it nearest `reference_ns` (era 0, until 2036, without one).
fn ntp_to_unix_ns(raw: u64, reference_ns: Option<u64>) -> Option<u64> {
    let fraction_ns = ((raw & 0xFFFF_FFFF) * NS_PER_S) >> 32;
    let reference_s = reference_ns.map_or(NTP_UNIX_OFFSET_S, |r| r / NS_PER_S + NTP_UNIX_OFFSET_S);
    // The era e minimising |e * 2^32 + seconds - reference|, never below era 0.
    let era = (reference_s + NTP_ERA_S / 2).saturating_sub(raw >> 32) / NTP_ERA_S;
    let ntp_seconds = era.checked_mul(NTP_ERA_S)?.checked_add(raw >> 32)?;
    let seconds = ntp_seconds.checked_sub(NTP_UNIX_OFFSET_S)?;
    seconds.checked_mul(NS_PER_S)?.checked_add(fraction_ns)
}

/// An 8-byte NTP-format value.
fn ntp(bytes: &[u8], unit_ns: u64) -> Option<Stamp> {
    let raw = be_uint(bytes).filter(|_| bytes.len() == 8)?;
    Some(Stamp::Ntp { raw, unit_ns })
}

fn set_first<T>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}

impl FlowTimes {
    pub fn set(&mut self, field: TimeField, value: &[u8]) {
        self.taken = true;
        let scaled = |unit: u64| be_uint(value).and_then(|v| v.checked_mul(unit));
        let unix = |unit: u64| scaled(unit).map(Stamp::UnixNs);
        match field {
            TimeField::StartSeconds => set_first(&mut self.absolute_start, unix(NS_PER_S)),
            TimeField::EndSeconds => set_first(&mut self.absolute_end, unix(NS_PER_S)),
            TimeField::StartMilliseconds => set_first(&mut self.absolute_start, unix(NS_PER_MS)),
            TimeField::EndMilliseconds => set_first(&mut self.absolute_end, unix(NS_PER_MS)),
            TimeField::StartMicroseconds => {
                set_first(&mut self.absolute_start, ntp(value, NS_PER_US))
            }
            TimeField::EndMicroseconds => set_first(&mut self.absolute_end, ntp(value, NS_PER_US)),
            TimeField::StartNanoseconds => set_first(&mut self.absolute_start, ntp(value, 1)),
            TimeField::EndNanoseconds => set_first(&mut self.absolute_end, ntp(value, 1)),
            TimeField::StartDeltaMicroseconds => {
                set_first(&mut self.delta_start_us, be_uint(value))
            }
            TimeField::EndDeltaMicroseconds => set_first(&mut self.delta_end_us, be_uint(value)),
            TimeField::DurationMilliseconds => set_first(&mut self.duration_ns, scaled(NS_PER_MS)),
            TimeField::DurationMicroseconds => set_first(&mut self.duration_ns, scaled(NS_PER_US)),
            TimeField::ObservationSeconds => set_first(&mut self.observation, unix(NS_PER_S)),
            TimeField::ObservationMilliseconds => set_first(&mut self.observation, unix(NS_PER_MS)),
            TimeField::ObservationMicroseconds => {
                set_first(&mut self.observation, ntp(value, NS_PER_US))
            }
            TimeField::ObservationNanoseconds => set_first(&mut self.observation, ntp(value, 1)),
        }
    }

    /// Start and end in Unix ns, given the export time and the uptime-derived times
    /// (those alone, with no call, for a record without time elements: most v9).
    #[inline]
    pub fn resolve(
        &self,
        export_ms: u64,
        uptime_start_ns: Option<u64>,
        uptime_end_ns: Option<u64>,
    ) -> (Option<u64>, Option<u64>) {
        if !self.taken {
            return (uptime_start_ns, uptime_end_ns);
        }
        self.resolve_elements(export_ms, uptime_start_ns, uptime_end_ns)
    }

    /// [`FlowTimes::resolve`] for a record with time elements.
    fn resolve_elements(
        &self,
        export_ms: u64,
        uptime_start_ns: Option<u64>,
        uptime_end_ns: Option<u64>,
    ) -> (Option<u64>, Option<u64>) {
        let export_ns = export_ms.checked_mul(NS_PER_MS);
        let before_export =
            |us: u64| export_ns.and_then(|e| e.checked_sub(us.checked_mul(NS_PER_US)?));
        let absolute = |stamp: Option<Stamp>| stamp.and_then(|s| s.unix_ns(export_ns));
        let mut start = absolute(self.absolute_start)
            .or_else(|| self.delta_start_us.and_then(before_export))
            .or(uptime_start_ns);
        let mut end = absolute(self.absolute_end)
            .or_else(|| self.delta_end_us.and_then(before_export))
            .or(uptime_end_ns);
        if let Some(duration) = self.duration_ns {
            match (start, end) {
                (Some(s), None) => end = s.checked_add(duration),
                (None, Some(e)) => start = e.checked_sub(duration),
                _ => {}
            }
        }
        // An event time (NSEL) ends a flow that has no end; it starts one only when the
        // record has no end time either.
        let observed = absolute(self.observation);
        let start = start.or(if end.is_none() { observed } else { None });
        (start, end.or(observed))
    }
}

/// The time elements of one record with its export time: what resolving its start and
/// end needs besides the base of its sysUpTime values. The elements are held (`T`:
/// [`FlowTimes`]) where the record waits for its base, or borrowed from the record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordTimes<T = FlowTimes> {
    pub times: T,
    pub export_ms: u64,
    pub uptime_start: Option<u32>,
    pub uptime_end: Option<u32>,
}

impl<T: Borrow<FlowTimes>> RecordTimes<T> {
    /// Start and end in Unix ns; the sysUpTime values count only with a `base`.
    pub fn resolve(&self, base: Option<UptimeBase>) -> (Option<u64>, Option<u64>) {
        let uptime = |value: Option<u32>| base.and_then(|b| value.and_then(|v| b.to_unix_ns(v)));
        let (start, end) = (uptime(self.uptime_start), uptime(self.uptime_end));
        self.times.borrow().resolve(self.export_ms, start, end)
    }

    /// These times, holding the time elements.
    pub fn held(&self) -> RecordTimes {
        RecordTimes {
            times: *self.times.borrow(),
            export_ms: self.export_ms,
            uptime_start: self.uptime_start,
            uptime_end: self.uptime_end,
        }
    }

    /// Whether the record carries sysUpTime values (22/21).
    pub fn has_uptimes(&self) -> bool {
        self.uptime_start.is_some() || self.uptime_end.is_some()
    }
}

/// What a sysUpTime value (22/21) is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UptimeBase {
    /// NetFlow v9: the header's sysUpTime was taken at the header's export time.
    Header { export_ms: u64, sys_uptime_ms: u32 },
    /// IPFIX: the exporter booted at this Unix time (IE 160).
    SystemInit { init_ms: u64 },
}

impl UptimeBase {
    /// The base for a record: the v9 header, or IE 160 from the record (preferred) or
    /// from options data; `None` for IPFIX without a known IE 160.
    pub fn for_record(ctx: &RecordContext<'_>, record_init_ms: Option<u64>) -> Option<Self> {
        match ctx.sys_uptime_ms {
            Some(sys_uptime_ms) => Some(Self::Header { export_ms: ctx.export_ms, sys_uptime_ms }),
            None => {
                record_init_ms.or(ctx.system_init_ms).map(|init_ms| Self::SystemInit { init_ms })
            }
        }
    }

    /// Unix ns of an uptime in milliseconds.
    ///
    /// v9 uptimes are 32-bit and wrap after ~49.7 days; the difference to the header's
    /// uptime is taken modulo 2^32 and read as signed, so a flow that started before the
    /// wrap (or a timestamp a little after the header's, seen on some exporters) lands
    /// at the right time as long as it is within ~24.8 days of the export.
    pub fn to_unix_ns(self, uptime_ms: u32) -> Option<u64> {
        let ms = match self {
            Self::Header { export_ms, sys_uptime_ms } => {
                let offset = i64::from(uptime_ms.wrapping_sub(sys_uptime_ms) as i32);
                export_ms.checked_add_signed(offset)?
            }
            Self::SystemInit { init_ms } => init_ms.checked_add(u64::from(uptime_ms))?,
        };
        ms.checked_mul(NS_PER_MS)
    }
}

/// v5 flow times: `first`/`last` are sysUpTime ms, relative to the header's uptime and
/// its export time in seconds + nanoseconds.
pub(crate) fn v5_time_ns(unix_secs: u32, unix_nsecs: u32, sys_uptime_ms: u32, at: u32) -> u64 {
    let export_ns = u64::from(unix_secs) * NS_PER_S + u64::from(unix_nsecs);
    let offset_ns = i64::from(at.wrapping_sub(sys_uptime_ms) as i32) * NS_PER_MS as i64;
    export_ns.checked_add_signed(offset_ns).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v9_uptime_before_the_wrap_resolves_before_export() {
        let base = UptimeBase::Header { export_ms: 1_000_000, sys_uptime_ms: 500 };
        // The flow started 1000 ms before the export, before the uptime wrapped.
        let start = u32::MAX - 499;
        assert_eq!(base.to_unix_ns(start), Some(999_000 * NS_PER_MS));
        assert_eq!(base.to_unix_ns(400), Some(999_900 * NS_PER_MS));
    }

    #[test]
    fn ipfix_uptime_needs_system_init_time() {
        let base = UptimeBase::SystemInit { init_ms: 1_000 };
        assert_eq!(base.to_unix_ns(250), Some(1_250 * NS_PER_MS));
    }

    #[test]
    fn record_uptimes_count_only_with_a_base() {
        let record = RecordTimes {
            times: FlowTimes::default(),
            export_ms: 9_000,
            uptime_start: Some(100),
            uptime_end: Some(300),
        };
        assert!(record.has_uptimes());
        assert_eq!(record.resolve(None), (None, None));
        let base = UptimeBase::SystemInit { init_ms: 1_000 };
        assert_eq!(record.resolve(Some(base)), (Some(1_100 * NS_PER_MS), Some(1_300 * NS_PER_MS)));
    }

    #[test]
    fn ntp_microseconds_convert_to_unix() {
        let secs = (NTP_UNIX_OFFSET_S + 10) << 32;
        let half = 1u64 << 31;
        assert_eq!(ntp_to_unix_ns(secs | half, Some(0)), Some(10 * NS_PER_S + NS_PER_S / 2));
    }

    #[test]
    fn ntp_era_follows_the_export_time_past_2036() {
        // 2040-01-01T00:00:00Z is Unix 2_208_988_800 s; NTP seconds wrap in Feb 2036.
        let unix_2040_s = 2_208_988_800u64;
        let raw = (unix_2040_s + NTP_UNIX_OFFSET_S - NTP_ERA_S) << 32;
        let reference = Some(unix_2040_s * NS_PER_S);
        assert_eq!(ntp_to_unix_ns(raw, reference), Some(unix_2040_s * NS_PER_S));
    }

    #[test]
    fn unix_epoch_micro_and_nanoseconds_are_recognised() {
        let export_ms = 1_700_000_000_000u64;
        let mut t = FlowTimes::default();
        // Written as Unix microseconds / nanoseconds instead of NTP.
        t.set(TimeField::StartMicroseconds, &(1_699_999_999_000_000u64).to_be_bytes());
        t.set(TimeField::EndNanoseconds, &(1_699_999_999_500_000_000u64).to_be_bytes());
        let (start, end) = t.resolve(export_ms, None, None);
        assert_eq!(start, Some(1_699_999_999 * NS_PER_S));
        assert_eq!(end, Some(1_699_999_999_500 * NS_PER_MS));
    }

    #[test]
    fn observation_time_fills_a_missing_end() {
        let mut t = FlowTimes::default();
        t.set(TimeField::StartMilliseconds, &1_000u64.to_be_bytes());
        t.set(TimeField::ObservationMilliseconds, &4_000u64.to_be_bytes());
        assert_eq!(t.resolve(9, None, None), (Some(1_000 * NS_PER_MS), Some(4_000 * NS_PER_MS)));
        let mut only = FlowTimes::default();
        only.set(TimeField::ObservationSeconds, &7u32.to_be_bytes());
        assert_eq!(only.resolve(9, None, None), (Some(7 * NS_PER_S), Some(7 * NS_PER_S)));
        let mut ended = FlowTimes::default();
        ended.set(TimeField::EndSeconds, &8u32.to_be_bytes());
        ended.set(TimeField::ObservationSeconds, &7u32.to_be_bytes());
        assert_eq!(ended.resolve(9, None, None), (None, Some(8 * NS_PER_S)));
    }

    #[test]
    fn delta_microseconds_count_back_from_export() {
        let mut t = FlowTimes::default();
        t.set(TimeField::StartDeltaMicroseconds, &2_000_000u32.to_be_bytes());
        let (start, end) = t.resolve(10_000, None, Some(7));
        assert_eq!(start, Some(8_000 * NS_PER_MS));
        assert_eq!(end, Some(7));
    }

    #[test]
    fn duration_derives_the_missing_end() {
        let mut t = FlowTimes::default();
        t.set(TimeField::StartMilliseconds, &5_000u64.to_be_bytes());
        t.set(TimeField::DurationMilliseconds, &250u32.to_be_bytes());
        assert_eq!(t.resolve(0, None, None), (Some(5_000 * NS_PER_MS), Some(5_250 * NS_PER_MS)));
    }

    #[test]
    fn v5_times_use_header_nanoseconds() {
        assert_eq!(v5_time_ns(10, 5, 2_000, 1_000), 9 * NS_PER_S + 5);
    }
}
