//! IPv4 header view (RFC 791).
//!
//! The forward stage's view of a packet: it validates the header once (version, IHL,
//! total length against the bytes present), verifies the header checksum, and rewrites
//! the TTL with an O(1) incremental checksum update (RFC 1624) on the way out. It also
//! writes the fresh headers of the replies the gateway originates (ICMP echo reply,
//! time exceeded).
//!
//! Invariant after `new_checked`: the buffer holds `20 <= header_len <= total_len <=
//! buffer.len()`, so every accessor, [`Packet::payload`] and every setter is in bounds.
//! Bytes past `total_len` (Ethernet padding) are left alone.

use super::{checksum, read_u16, read_u32, write_u16, write_u32, WireError};

/// Byte offsets of the IPv4 header fields.
mod field {
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// IP protocol numbers the pipeline looks at (defined in [`super::protocol`]).
pub use super::protocol;

/// More-fragments flag in the flags/offset word.
const FLAG_MF: u16 = 0x2000;
/// Fragment offset mask in the flags/offset word.
const OFFSET_MASK: u16 = 0x1fff;

/// A read/write view over an IPv4 packet (the Ethernet payload).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checking; accessors panic if the lengths do not hold.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wrap after checking, in this order: 20 bytes present (`Truncated`), version 4
    /// (`BadVersion`), `5 <= IHL` and header within the buffer (`BadHeaderLength`),
    /// `header_len <= total_len <= buffer.len()` (`BadTotalLength`). The checksum is
    /// not verified here; see [`Packet::verify_checksum`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if hl < MIN_HEADER_LEN || hl > b.len() {
            return Err(WireError::BadHeaderLength);
        }
        let total = usize::from(read_u16(b, field::LENGTH));
        if total < hl || total > b.len() {
            return Err(WireError::BadTotalLength);
        }
        Ok(Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    #[inline]
    pub fn total_len(&self) -> usize {
        usize::from(read_u16(self.buffer.as_ref(), field::LENGTH))
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// Fragment offset in 8-byte units.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Neither a later fragment nor followed by more: the payload is the whole datagram.
    #[inline]
    pub fn is_unfragmented(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & (FLAG_MF | OFFSET_MASK) == 0
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address, host order.
    #[inline]
    pub fn src_addr(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SRC)
    }

    /// Destination address, host order.
    #[inline]
    pub fn dst_addr(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::DST)
    }

    /// The header bytes (options included).
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// True when the header (options included) sums to all ones.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(self.header())
    }

    /// The payload up to `total_len` (Ethernet padding excluded), or up to the end of
    /// the buffer when the packet goes on past it (the head buffer of a multi-buffer
    /// packet, issue 11).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = self.total_len().min(b.len());
        b.get(self.header_len()..end).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Version 4 and the given header length (a multiple of 4, 20..=60).
    #[inline]
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    #[inline]
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// The whole flags/fragment-offset word.
    #[inline]
    pub fn set_flags_and_offset(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::FLG_OFF, v);
    }

    /// Set the TTL without touching the checksum (for headers being built).
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    #[inline]
    pub fn set_protocol(&mut self, p: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = p;
    }

    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    #[inline]
    pub fn set_src_addr(&mut self, a: u32) {
        write_u32(self.buffer.as_mut(), field::SRC, a);
    }

    #[inline]
    pub fn set_dst_addr(&mut self, a: u32) {
        write_u32(self.buffer.as_mut(), field::DST, a);
    }

    /// Recompute the header checksum from scratch (for headers being built).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    /// Decrement the TTL by one and patch the checksum incrementally (RFC 1624): the
    /// forwarding path's only header change. The caller has checked `ttl() > 1`; a TTL
    /// of 0 wraps to 255 rather than panicking.
    ///
    /// `inline(always)`: with plain `#[inline]` LLVM kept it out of line in `process`
    /// (a call per forwarded packet, ~10% of the forward bench's samples in perf).
    #[inline(always)]
    pub fn decrement_ttl(&mut self) {
        let b = self.buffer.as_mut();
        let old = read_u16(b, field::TTL); // TTL and protocol share one 16-bit word
        b[field::TTL] = b[field::TTL].wrapping_sub(1);
        let new = read_u16(b, field::TTL);
        let c = checksum::update_word(read_u16(b, field::CHECKSUM), old, new);
        write_u16(b, field::CHECKSUM, c);
    }

    /// The payload up to `total_len`, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, total) = (self.header_len(), self.total_len());
        &mut self.buffer.as_mut()[hl..total]
    }
}

/// A read-only view over an IPv4 header quoted in an ICMP error (RFC 792: the
/// offending datagram's header and its first 8 payload bytes). The quoted total length
/// names the original datagram, usually longer than what was quoted, so this view checks
/// only what lies before the quoted payload: 20 bytes present (`Truncated`), version 4
/// (`BadVersion`), `5 <= IHL` and the header within the buffer (`BadHeaderLength`).
/// Every accessor is then in bounds; [`Quoted::payload`] is whatever follows the header.
#[derive(Debug, Clone)]
pub struct Quoted<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Quoted<T> {
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if hl < MIN_HEADER_LEN || hl > b.len() {
            return Err(WireError::BadHeaderLength);
        }
        Ok(Quoted { buffer })
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Fragment offset in 8-byte units (0: the quote holds the transport header).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK
    }

    /// Source address, host order.
    #[inline]
    pub fn src_addr(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SRC)
    }

    /// Destination address, host order.
    #[inline]
    pub fn dst_addr(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::DST)
    }

    /// The quoted bytes after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP/IPv4 header from 10.244.0.5 to 10.244.0.6, TTL 64, checksum filled.
    fn header() -> [u8; 28] {
        let mut b = [0u8; 28];
        b[0] = 0x45;
        b[2..4].copy_from_slice(&28u16.to_be_bytes());
        b[8] = 64;
        b[9] = protocol::UDP;
        b[12..16].copy_from_slice(&[10, 244, 0, 5]);
        b[16..20].copy_from_slice(&[10, 244, 0, 6]);
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.fill_checksum();
        b
    }

    #[test]
    fn reads_fields_and_verifies() {
        let b = header();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), protocol::UDP);
        assert_eq!(p.src_addr(), 0x0af4_0005);
        assert_eq!(p.dst_addr(), 0x0af4_0006);
        assert!(p.is_unfragmented());
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 8);
        let eh = etherparse::Ipv4HeaderSlice::from_slice(&b).unwrap();
        assert_eq!(eh.header_checksum(), eh.to_header().calc_header_checksum());
    }

    #[test]
    fn each_length_error_in_order() {
        let b = header();
        assert_eq!(
            Packet::new_checked(&b[..19]).unwrap_err(),
            WireError::Truncated
        );
        let mut v = b;
        v[0] = 0x65;
        assert_eq!(
            Packet::new_checked(&v[..]).unwrap_err(),
            WireError::BadVersion
        );
        let mut h = b;
        h[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&h[..]).unwrap_err(),
            WireError::BadHeaderLength
        );
        h[0] = 0x48; // 32-byte header in a 28-byte buffer
        assert_eq!(
            Packet::new_checked(&h[..]).unwrap_err(),
            WireError::BadHeaderLength
        );
        let mut t = b;
        t[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&t[..]).unwrap_err(),
            WireError::BadTotalLength
        );
        t[2..4].copy_from_slice(&29u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&t[..]).unwrap_err(),
            WireError::BadTotalLength
        );
        // Trailing padding past total_len is fine and excluded from the payload.
        let mut padded = [0u8; 46];
        padded[..28].copy_from_slice(&b);
        assert_eq!(Packet::new_checked(&padded[..]).unwrap().payload().len(), 8);
    }

    #[test]
    fn decrement_ttl_keeps_checksum_valid() {
        let mut b = header();
        for ttl in (1..64u8).rev() {
            let mut p = Packet::new_checked(&mut b[..]).unwrap();
            p.decrement_ttl();
            assert_eq!(p.ttl(), ttl);
            assert!(p.verify_checksum());
        }
        let eh = etherparse::Ipv4HeaderSlice::from_slice(&b).unwrap();
        assert_eq!(eh.ttl(), 1);
        assert_eq!(eh.header_checksum(), eh.to_header().calc_header_checksum());
    }

    #[test]
    fn quoted_header_ignores_the_total_length() {
        let b = header();
        // An ICMP error quotes the header and 8 bytes; the total length (28) is what
        // the original datagram had, more than the quote in a shorter example.
        let mut quote = [0u8; 24];
        quote.copy_from_slice(&b[..24]);
        assert!(Packet::new_checked(&quote[..]).is_err());
        let q = Quoted::new_checked(&quote[..]).unwrap();
        assert_eq!((q.src_addr(), q.dst_addr()), (0x0af4_0005, 0x0af4_0006));
        assert_eq!(
            (q.protocol(), q.header_len(), q.frag_offset()),
            (protocol::UDP, 20, 0)
        );
        assert_eq!(q.payload().len(), 4);
        for n in 0..MIN_HEADER_LEN {
            assert_eq!(
                Quoted::new_checked(&b[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        let mut v = b;
        v[0] = 0x65;
        assert_eq!(
            Quoted::new_checked(&v[..]).unwrap_err(),
            WireError::BadVersion
        );
        v[0] = 0x44;
        assert_eq!(
            Quoted::new_checked(&v[..]).unwrap_err(),
            WireError::BadHeaderLength
        );
        v[0] = 0x48; // 32-byte header in 28 bytes
        assert_eq!(
            Quoted::new_checked(&v[..]).unwrap_err(),
            WireError::BadHeaderLength
        );
    }

    #[test]
    fn fragment_fields() {
        let mut b = header();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_flags_and_offset(0x4000); // DF only
        assert!(p.is_unfragmented());
        p.set_flags_and_offset(0x2000);
        assert!(p.more_frags() && !p.is_unfragmented());
        p.set_flags_and_offset(0x0010);
        assert_eq!(p.frag_offset(), 16);
        assert!(!p.is_unfragmented());
    }
}
