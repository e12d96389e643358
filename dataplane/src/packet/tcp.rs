//! TCP header view (RFC 9293): ports, sequence numbers, data offset, flags, window.
//!
//! Connection tracking reads a segment's ports and flags through this view (the flags
//! drive its TCP state machine); the control side builds the segments of synthetic
//! probes with the setters. Options are not parsed, and the checksum (which needs the
//! IP pseudo-header) is neither verified nor filled here.
//!
//! Invariant after `new_checked`: the fixed 20-byte header is present and the data
//! offset names a header of `20..=60` bytes that fits the buffer, so every accessor,
//! [`Packet::options`], [`Packet::payload`] and every setter is in bounds. A TCP
//! header quoted in an ICMP error (8 bytes) fails the check; read its ports through
//! [`super::ports::Ports`].

use super::{read_u16, read_u32, write_u16, write_u32, WireError};

/// Byte offsets of the TCP header fields.
mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ_NUM: usize = 4;
    pub const ACK_NUM: usize = 8;
    /// Data offset (high 4 bits) and the reserved bits.
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
    pub const OPTIONS: usize = 20;
}

/// Length of the header without options.
pub const MIN_HEADER_LEN: usize = field::OPTIONS;

/// Longest header (data offset 15).
pub const MAX_HEADER_LEN: usize = 60;

/// Flag bits of the flags byte (byte 13).
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// A read/write view over a TCP segment (the IP payload).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checking; accessors panic on a buffer under 20 bytes, `options`
    /// and `payload` on one shorter than the data offset says.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wrap after checking, in this order: 20 bytes present (`Truncated`), data offset
    /// at least 5 words and the header within the buffer (`BadHeaderLength`).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hl = usize::from(b[field::DATA_OFF] >> 4) * 4;
        if hl < MIN_HEADER_LEN || hl > b.len() {
            return Err(WireError::BadHeaderLength);
        }
        Ok(Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    #[inline]
    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Header length in bytes (data offset × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The flags byte: FIN, SYN, RST, PSH, ACK, URG, ECE, CWR (see [`flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    #[inline]
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    #[inline]
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    #[inline]
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    #[inline]
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }

    #[inline]
    pub fn window_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn urgent_at(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// The option bytes (empty for a 20-byte header).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// Everything after the header (the caller bounds the buffer at the IP payload).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUM, v);
    }

    #[inline]
    pub fn set_ack_number(&mut self, v: u32) {
        write_u32(self.buffer.as_mut(), field::ACK_NUM, v);
    }

    /// Set the data offset from a header length in bytes (a multiple of 4, 20..=60);
    /// the reserved bits are cleared.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::DATA_OFF] = ((len / 4) as u8 & 0x0f) << 4;
    }

    #[inline]
    pub fn set_flags(&mut self, f: u8) {
        self.buffer.as_mut()[field::FLAGS] = f;
    }

    #[inline]
    pub fn set_window_len(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::WINDOW, v);
    }

    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    #[inline]
    pub fn set_urgent_at(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SYN from 40000 to 80 with one 4-byte option (MSS 1460) and 2 payload bytes.
    fn segment() -> [u8; 26] {
        let mut b = [0u8; 26];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_src_port(40000);
        p.set_dst_port(80);
        p.set_seq_number(0x0102_0304);
        p.set_ack_number(0);
        p.set_header_len(24);
        p.set_flags(flags::SYN);
        p.set_window_len(64240);
        p.set_checksum(0x1234);
        p.set_urgent_at(0);
        b[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
        b[24..26].copy_from_slice(b"hi");
        b
    }

    #[test]
    fn reads_what_the_setters_wrote() {
        let b = segment();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (40000, 80));
        assert_eq!((p.seq_number(), p.ack_number()), (0x0102_0304, 0));
        assert_eq!(p.header_len(), 24);
        assert!(p.syn() && !p.ack() && !p.fin() && !p.rst());
        assert_eq!(
            (p.window_len(), p.checksum(), p.urgent_at()),
            (64240, 0x1234, 0)
        );
        assert_eq!(p.options(), &[2, 4, 0x05, 0xb4]);
        assert_eq!(p.payload(), b"hi");
        let e = etherparse::TcpHeaderSlice::from_slice(&b).unwrap();
        assert_eq!((e.source_port(), e.destination_port()), (40000, 80));
        assert_eq!((e.sequence_number(), e.data_offset()), (0x0102_0304, 6));
        assert!(e.syn() && !e.ack());
        assert_eq!(e.window_size(), 64240);
    }

    #[test]
    fn flag_bits_match_the_rfc() {
        let mut b = segment();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_flags(flags::FIN | flags::ACK | flags::PSH | flags::URG | flags::ECE | flags::CWR);
        let e = etherparse::TcpHeaderSlice::from_slice(&b).unwrap();
        assert!(e.fin() && e.ack() && e.psh() && e.urg() && e.ece() && e.cwr());
        assert!(!e.syn() && !e.rst());
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_flags(flags::RST);
        assert!(p.rst());
        assert!(etherparse::TcpHeaderSlice::from_slice(&b).unwrap().rst());
    }

    #[test]
    fn truncated_and_bad_data_offsets_are_refused() {
        let b = segment();
        for n in 0..MIN_HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&b[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        // Data offset 6 (24 bytes) in a 22-byte buffer.
        assert_eq!(
            Packet::new_checked(&b[..22]).unwrap_err(),
            WireError::BadHeaderLength
        );
        for words in [0u8, 4, 15] {
            let mut v = b;
            v[12] = words << 4;
            assert_eq!(
                Packet::new_checked(&v[..]).unwrap_err(),
                WireError::BadHeaderLength,
                "data offset {words}"
            );
        }
        // The longest header, exactly filling the buffer.
        let mut long = [0u8; MAX_HEADER_LEN];
        long[12] = 15 << 4;
        let p = Packet::new_checked(&long[..]).unwrap();
        assert_eq!((p.options().len(), p.payload().len()), (40, 0));
    }
}
