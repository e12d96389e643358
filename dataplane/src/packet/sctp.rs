//! SCTP common header and first chunk header view (RFC 9260).
//!
//! Connection tracking reads an SCTP packet's ports and the type of its first chunk
//! (INIT opens an association, ABORT and SHUTDOWN COMPLETE end one) through this view;
//! the control side builds synthetic probes with the setters. Later chunks are not
//! walked, and the CRC32c checksum is neither verified nor filled here.
//!
//! Invariant after `new_checked`: the 12-byte common header and the 4-byte header of a
//! first chunk are present, and that chunk's length field is at least 4 and ends
//! within the buffer, so every accessor, [`Packet::first_chunk_value`] and every setter
//! is in bounds. (Every SCTP packet carries at least one chunk.) An SCTP header quoted
//! in an ICMP error (8 bytes) fails the check; read its ports through
//! [`super::ports::Ports`].

use super::{read_u16, read_u32, write_u16, write_u32, WireError};

/// Byte offsets of the common header and of the first chunk's header.
mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const VERIFICATION_TAG: usize = 4;
    pub const CHECKSUM: usize = 8;
    pub const CHUNK_TYPE: usize = 12;
    pub const CHUNK_FLAGS: usize = 13;
    pub const CHUNK_LENGTH: usize = 14;
    pub const CHUNK_VALUE: usize = 16;
}

/// Length of the common header.
pub const COMMON_HEADER_LEN: usize = field::CHUNK_TYPE;

/// Length of a chunk header (type, flags, length).
pub const CHUNK_HEADER_LEN: usize = 4;

/// Bytes `new_checked` requires: the common header and the first chunk's header.
pub const MIN_LEN: usize = field::CHUNK_VALUE;

/// Chunk types connection tracking tells apart.
pub mod chunk_type {
    pub const DATA: u8 = 0;
    pub const INIT: u8 = 1;
    pub const INIT_ACK: u8 = 2;
    pub const SACK: u8 = 3;
    pub const HEARTBEAT: u8 = 4;
    pub const HEARTBEAT_ACK: u8 = 5;
    pub const ABORT: u8 = 6;
    pub const SHUTDOWN: u8 = 7;
    pub const SHUTDOWN_ACK: u8 = 8;
    pub const ERROR: u8 = 9;
    pub const COOKIE_ECHO: u8 = 10;
    pub const COOKIE_ACK: u8 = 11;
    pub const SHUTDOWN_COMPLETE: u8 = 14;
}

/// A read/write view over an SCTP packet (the IP payload).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checking; accessors panic on a buffer under 16 bytes,
    /// `first_chunk_value` on one shorter than the chunk length says.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wrap after checking, in this order: common header and first chunk header present
    /// (`Truncated`), the chunk's length at least 4 and within the buffer
    /// (`BadHeaderLength`).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < MIN_LEN {
            return Err(WireError::Truncated);
        }
        let chunk_len = usize::from(read_u16(b, field::CHUNK_LENGTH));
        if chunk_len < CHUNK_HEADER_LEN || COMMON_HEADER_LEN + chunk_len > b.len() {
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
    pub fn verification_tag(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VERIFICATION_TAG)
    }

    /// The checksum field (CRC32c), its four bytes read big-endian; not verified here.
    #[inline]
    pub fn checksum(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Type of the first chunk (see [`chunk_type`]).
    #[inline]
    pub fn first_chunk_type(&self) -> u8 {
        self.buffer.as_ref()[field::CHUNK_TYPE]
    }

    #[inline]
    pub fn first_chunk_flags(&self) -> u8 {
        self.buffer.as_ref()[field::CHUNK_FLAGS]
    }

    /// Length of the first chunk, its 4-byte header included, padding excluded.
    #[inline]
    pub fn first_chunk_len(&self) -> usize {
        usize::from(read_u16(self.buffer.as_ref(), field::CHUNK_LENGTH))
    }

    /// The first chunk's value (after its header, up to its length).
    #[inline]
    pub fn first_chunk_value(&self) -> &[u8] {
        &self.buffer.as_ref()[field::CHUNK_VALUE..COMMON_HEADER_LEN + self.first_chunk_len()]
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
    pub fn set_verification_tag(&mut self, v: u32) {
        write_u32(self.buffer.as_mut(), field::VERIFICATION_TAG, v);
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u32) {
        write_u32(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    #[inline]
    pub fn set_first_chunk_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::CHUNK_TYPE] = t;
    }

    #[inline]
    pub fn set_first_chunk_flags(&mut self, f: u8) {
        self.buffer.as_mut()[field::CHUNK_FLAGS] = f;
    }

    /// Set the first chunk's length (header included). Building a packet: wrap with
    /// `new_unchecked` over at least `12 + len` bytes.
    #[inline]
    pub fn set_first_chunk_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::CHUNK_LENGTH, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An INIT from 7000 to 80 whose chunk carries 4 value bytes.
    fn init() -> [u8; 20] {
        let mut b = [0u8; 20];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_src_port(7000);
        p.set_dst_port(80);
        p.set_verification_tag(0);
        p.set_checksum(0xdead_beef);
        p.set_first_chunk_type(chunk_type::INIT);
        p.set_first_chunk_flags(0);
        p.set_first_chunk_len(8);
        b[16..20].copy_from_slice(&[1, 2, 3, 4]);
        b
    }

    #[test]
    fn reads_what_the_setters_wrote() {
        let b = init();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (7000, 80));
        assert_eq!((p.verification_tag(), p.checksum()), (0, 0xdead_beef));
        assert_eq!(p.first_chunk_type(), chunk_type::INIT);
        assert_eq!((p.first_chunk_flags(), p.first_chunk_len()), (0, 8));
        assert_eq!(p.first_chunk_value(), &[1, 2, 3, 4]);
        // The raw layout RFC 9260 §3 draws.
        assert_eq!(&b[..4], &[0x1b, 0x58, 0x00, 0x50]);
        assert_eq!(&b[12..16], &[1, 0, 0, 8]);
    }

    #[test]
    fn truncated_and_bad_chunk_lengths_are_refused() {
        let b = init();
        for n in 0..MIN_LEN {
            assert_eq!(
                Packet::new_checked(&b[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        // The chunk (8 bytes) runs past a 19-byte buffer.
        assert_eq!(
            Packet::new_checked(&b[..19]).unwrap_err(),
            WireError::BadHeaderLength
        );
        for bad in [0u16, 3, 9, 0xffff] {
            let mut v = b;
            v[14..16].copy_from_slice(&bad.to_be_bytes());
            assert_eq!(
                Packet::new_checked(&v[..]).unwrap_err(),
                WireError::BadHeaderLength,
                "chunk length {bad}"
            );
        }
        // A bare chunk header (length 4) has an empty value.
        let mut h = b;
        h[14..16].copy_from_slice(&4u16.to_be_bytes());
        assert!(Packet::new_checked(&h[..16])
            .unwrap()
            .first_chunk_value()
            .is_empty());
    }
}
