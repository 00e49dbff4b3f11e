//! The integer-valued fields of a data record, a slot each.
//!
//! Most Information Elements a flow takes are unsigned integers that go to one place,
//! first occurrence winning. Keeping them in one array indexed by [`Slot`] lets a
//! compiled template ([`super::plan::Plan`]) read them with no per-field dispatch, and
//! a record is reset by clearing one bit mask.

/// Where an integer Information Element goes. Counters, ports, interfaces and the like
/// are unsigned big-endian values of 1 to 8 bytes (reduced-size encoding); the MAC
/// slots take exactly 6 bytes. A slot keeps the full 64-bit value; readers narrow it to
/// their field's width, keeping the low bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Slot {
    OctetDelta,
    PacketDelta,
    OctetTotal,
    PacketTotal,
    PostOctetDelta,
    PostPacketDelta,
    InitiatorOctets,
    ResponderOctets,
    InitiatorPackets,
    ResponderPackets,
    ReverseOctets,
    ReversePackets,
    Protocol,
    Tos,
    TcpFlags,
    SrcPort,
    DstPort,
    SrcMask4,
    DstMask4,
    SrcMask6,
    DstMask6,
    InIf,
    OutIf,
    SrcAs,
    DstAs,
    NextHopAs,
    FlowEndUptime,
    FlowStartUptime,
    FlowLabel,
    IcmpTypeCode,
    IcmpType,
    IcmpCode,
    MinTtl,
    MaxTtl,
    IpTtl,
    FragmentId,
    FragmentOffset,
    FragmentFlags,
    Vlan,
    PostVlan,
    Dot1qVlan,
    IpVersion,
    EthernetType,
    ForwardingStatus,
    ObservationPointId,
    PostNatSrcPort,
    PostNatDstPort,
    FirewallEvent,
    FlowId,
    SystemInit,
    SrhSegmentsLeft,
    SrcMac,
    PostSrcMac,
    DstMac,
    PostDstMac,
}

/// A set of slots as a mask of their bits, for [`Ints::any`].
pub(crate) const fn slot_set(slots: &[Slot]) -> u64 {
    let mut mask = 0;
    let mut index = 0;
    while index < slots.len() {
        mask |= 1 << slots[index] as u8;
        index += 1;
    }
    mask
}

/// Number of slots (the last variant's index + 1); the presence mask has a bit each.
const SLOTS: usize = Slot::PostDstMac as usize + 1;
const _: () = assert!(SLOTS <= u64::BITS as usize);

impl Slot {
    /// Whether a value of `len` bytes counts for this slot: 1 to 8 bytes (reduced-size
    /// encoding), exactly 6 for a MAC address.
    pub fn fits(self, len: usize) -> bool {
        match self {
            Slot::SrcMac | Slot::PostSrcMac | Slot::DstMac | Slot::PostDstMac => len == 6,
            _ => (1..=8).contains(&len),
        }
    }

    /// This slot's value in `bytes`, or `None` when the length does not fit it.
    pub fn value(self, bytes: &[u8]) -> Option<u64> {
        if self.fits(bytes.len()) { be_uint(bytes) } else { None }
    }

    fn bit(self) -> u64 {
        1 << self as u8
    }
}

/// An unsigned big-endian integer of 1 to 8 bytes (reduced-size encoding of any
/// width, including the 5–7 byte widths netflow_parser leaves raw).
pub(crate) fn be_uint(bytes: &[u8]) -> Option<u64> {
    match *bytes {
        [a] => Some(u64::from(a)),
        [a, b] => Some(u64::from(u16::from_be_bytes([a, b]))),
        [a, b, c, d] => Some(u64::from(u32::from_be_bytes([a, b, c, d]))),
        [a, b, c, d, e, f, g, h] => Some(u64::from_be_bytes([a, b, c, d, e, f, g, h])),
        _ if bytes.is_empty() || bytes.len() > 8 => None,
        _ => Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))),
    }
}

/// The integer fields of one record: a value per slot, valid where its bit is set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ints {
    present: u64,
    values: [u64; SLOTS],
}

impl Default for Ints {
    fn default() -> Self {
        Self { present: 0, values: [0; SLOTS] }
    }
}

impl Ints {
    /// Sets `slot` to `value` unless an earlier occurrence already did.
    pub fn first(&mut self, slot: Slot, value: u64) {
        if self.present & slot.bit() == 0 {
            self.present |= slot.bit();
            self.values[slot as usize] = value;
        }
    }

    /// Takes the values of the slots of `set` (made by [`slot_set`]), which `values`
    /// gives once each, when none of them has one yet: no first-occurrence check per
    /// value. `false`, taking nothing, when one has.
    pub fn fill_unset(&mut self, set: u64, values: impl Iterator<Item = (Slot, u64)>) -> bool {
        if self.any(set) {
            return false;
        }
        for (slot, value) in values {
            self.values[slot as usize] = value;
        }
        self.present |= set;
        true
    }

    /// Marks every slot unset, keeping the values: for the next record of a template
    /// that writes all its slots in every record. The slots it never writes keep 0,
    /// which [`Ints::or_zero`] relies on.
    pub fn forget(&mut self) {
        self.present = 0;
    }

    /// Whether any slot of `set` (made by [`slot_set`]) has a value.
    pub fn any(&self, set: u64) -> bool {
        self.present & set != 0
    }

    pub fn get(&self, slot: Slot) -> Option<u64> {
        (self.present & slot.bit() != 0).then(|| self.values[slot as usize])
    }

    /// The slot's value, 0 when absent (only [`Ints::first`] writes a value, and it
    /// sets the slot's bit with it).
    pub fn or_zero(&self, slot: Slot) -> u64 {
        self.values[slot as usize]
    }

    /// [`Ints::or_zero`] narrowed to 32 bits, as a message's field of that width.
    pub fn u32_or_zero(&self, slot: Slot) -> u32 {
        self.or_zero(slot) as u32
    }

    /// [`Ints::or_zero`] narrowed to 16 bits, in a message's 32-bit field.
    pub fn u16_or_zero(&self, slot: Slot) -> u32 {
        u32::from(self.or_zero(slot) as u16)
    }

    /// [`Ints::or_zero`] narrowed to 8 bits, in a message's 32-bit field.
    pub fn u8_or_zero(&self, slot: Slot) -> u32 {
        u32::from(self.or_zero(slot) as u8)
    }

    pub fn u32(&self, slot: Slot) -> Option<u32> {
        self.get(slot).map(|v| v as u32)
    }

    pub fn u16(&self, slot: Slot) -> Option<u16> {
        self.get(slot).map(|v| v as u16)
    }

    pub fn u8(&self, slot: Slot) -> Option<u8> {
        self.get(slot).map(|v| v as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_of_every_width_decode_big_endian() {
        assert_eq!(be_uint(&[7]), Some(7));
        assert_eq!(be_uint(&[1, 2]), Some(0x0102));
        assert_eq!(be_uint(&[1, 2, 3]), Some(0x01_0203));
        assert_eq!(be_uint(&[1, 2, 3, 4]), Some(0x0102_0304));
        assert_eq!(be_uint(&[1, 2, 3, 4, 5]), Some(0x01_0203_0405));
        assert_eq!(be_uint(&[1, 2, 3, 4, 5, 6]), Some(0x0102_0304_0506));
        assert_eq!(be_uint(&[1, 2, 3, 4, 5, 6, 7]), Some(0x01_0203_0405_0607));
        assert_eq!(be_uint(&[1, 2, 3, 4, 5, 6, 7, 8]), Some(0x0102_0304_0506_0708));
        assert_eq!(be_uint(&[]), None);
        assert_eq!(be_uint(&[0; 9]), None);
    }

    #[test]
    fn the_first_value_of_a_slot_wins_and_narrowing_keeps_low_bits() {
        let mut ints = Ints::default();
        assert_eq!(ints.get(Slot::SrcPort), None);
        ints.first(Slot::SrcPort, 0x1_0050);
        ints.first(Slot::SrcPort, 22);
        assert_eq!(ints.get(Slot::SrcPort), Some(0x1_0050));
        assert_eq!(ints.u16(Slot::SrcPort), Some(80));
        assert_eq!(ints.u16(Slot::DstPort), None);
        assert_eq!((ints.u16_or_zero(Slot::SrcPort), ints.u16_or_zero(Slot::DstPort)), (80, 0));
        ints.first(Slot::InIf, 0x1_0000_0007);
        assert_eq!((ints.or_zero(Slot::InIf), ints.u32_or_zero(Slot::InIf)), (0x1_0000_0007, 7));
        assert_eq!(ints.u8_or_zero(Slot::SrcPort), 0x50);
    }

    #[test]
    fn mac_slots_take_six_bytes_only() {
        assert_eq!(Slot::SrcMac.value(&[0, 1, 2, 3, 4, 5]), Some(0x0001_0203_0405));
        assert_eq!(Slot::SrcMac.value(&[0, 1, 2, 3]), None);
        assert_eq!(Slot::InIf.value(&[0, 1, 2, 3]), Some(0x0001_0203));
    }
}
