//! UDP header view (RFC 768).
//!
//! Connection tracking reads a datagram's ports through this view, and the VXLAN
//! encapsulation writes its outer UDP header with it (destination port
//! [`super::vxlan::UDP_PORT`], checksum 0 as RFC 7348 allows over IPv4). The
//! checksum needs the IP pseudo-header and is neither verified nor filled here.
//!
//! Invariant after `new_checked`: the 8-byte header is present and `8 <= length <=
//! buffer.len()`, so every accessor, [`Packet::payload`] and every setter is in
//! bounds. Bytes past `length` are left alone. A UDP header quoted in an ICMP error
//! usually fails the length check (only 8 bytes are quoted); read its ports through
//! [`super::ports::Ports`].

use super::{read_u16, write_u16, WireError};

/// Byte offsets of the UDP header fields.
mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
    pub const PAYLOAD: usize = 8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A read/write view over a UDP datagram (the IP payload).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checking; accessors panic on a buffer under 8 bytes, `payload` on
    /// one shorter than the length field.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wrap after checking, in this order: 8 bytes present (`Truncated`), `8 <=
    /// length <= buffer.len()` (`BadTotalLength`).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = usize::from(read_u16(b, field::LENGTH));
        if len < HEADER_LEN || len > b.len() {
            return Err(WireError::BadTotalLength);
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

    /// Header plus payload, in bytes (the length field).
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(read_u16(self.buffer.as_ref(), field::LENGTH))
    }

    /// Never true after `new_checked` (the length covers at least the header).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload up to the length field (padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.len()]
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

    /// Set the length field. Building a header: wrap with `new_unchecked` over at
    /// least `len` bytes, set it, and the view is then valid for `new_checked`.
    #[inline]
    pub fn set_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// 0 means "no checksum" over IPv4.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// The payload up to the length field, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.len();
        &mut self.buffer.as_mut()[HEADER_LEN..len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram() -> [u8; 12] {
        let mut b = [0u8; 12];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_src_port(5353);
        p.set_dst_port(53);
        p.set_len(12);
        p.set_checksum(0xbeef);
        p.payload_mut().copy_from_slice(b"abcd");
        b
    }

    #[test]
    fn reads_what_the_setters_wrote() {
        let b = datagram();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (5353, 53));
        assert_eq!((p.len(), p.checksum()), (12, 0xbeef));
        assert_eq!(p.payload(), b"abcd");
        assert!(!p.is_empty());
        let e = etherparse::UdpHeaderSlice::from_slice(&b).unwrap();
        assert_eq!((e.source_port(), e.destination_port()), (5353, 53));
        assert_eq!((e.length(), e.checksum()), (12, 0xbeef));
    }

    #[test]
    fn truncated_and_bad_lengths_are_refused() {
        let b = datagram();
        for n in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&b[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        // The length field claims more than the buffer holds.
        assert_eq!(
            Packet::new_checked(&b[..11]).unwrap_err(),
            WireError::BadTotalLength
        );
        for bad in [0u16, 7, 13, 0xffff] {
            let mut v = b;
            v[4..6].copy_from_slice(&bad.to_be_bytes());
            assert_eq!(
                Packet::new_checked(&v[..]).unwrap_err(),
                WireError::BadTotalLength,
                "length {bad}"
            );
        }
        // Padding after the datagram is excluded from the payload.
        let mut padded = [0u8; 20];
        padded[..12].copy_from_slice(&b);
        assert_eq!(Packet::new_checked(&padded[..]).unwrap().payload(), b"abcd");
        // An empty payload is fine.
        let mut h = b;
        h[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert!(Packet::new_checked(&h[..8]).unwrap().payload().is_empty());
    }
}
