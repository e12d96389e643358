//! VXLAN header view (RFC 7348): the 8 bytes between the outer UDP header and the
//! inner Ethernet frame of an overlay packet.
//!
//! ```text
//!  0                   1                   2                   3
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```
//!
//! The decapsulation stage checks a packet from another node through this view; the
//! encapsulation stage writes the header in the frame's headroom with
//! [`Packet::fill`]. Outer packets travel to UDP port [`UDP_PORT`].
//!
//! Invariant after `new_checked`: the 8 bytes are present, the flags byte is exactly
//! `I` (0x08) and every reserved bit is zero. RFC 7348 tells receivers to ignore the
//! reserved bits; this view is stricter on purpose: the only VXLAN sender xsknet
//! accepts is another xsknet node, which writes zeros, and a packet with other bits
//! set (a VXLAN-GPE or GBP header, or garbage on the port) is not one of its own.

use super::{read_u32, write_u32, WireError};

/// Byte offsets of the two 32-bit words.
mod field {
    /// Flags (8 bits) and 24 reserved bits.
    pub const FLAGS_WORD: usize = 0;
    /// VNI (24 bits) and 8 reserved bits.
    pub const VNI_WORD: usize = 4;
    pub const PAYLOAD: usize = 8;
}

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// IANA-assigned UDP destination port.
pub const UDP_PORT: u16 = 4789;

/// The I flag: the VNI is valid. The only flag a valid header carries.
pub const FLAG_I: u8 = 0x08;

/// The first word of a valid header: I set, everything else zero.
const FLAGS_WORD_VALID: u32 = (FLAG_I as u32) << 24;

/// Largest VNI (24 bits).
pub const VNI_MAX: u32 = 0x00ff_ffff;

/// A read/write view over a VXLAN header and the inner frame after it.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checking; accessors panic on a buffer under 8 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wrap after checking, in this order: 8 bytes present (`Truncated`); flags
    /// exactly `I` and all reserved bits zero (`BadVersion`: not a VXLAN header this
    /// dataplane speaks).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if read_u32(b, field::FLAGS_WORD) != FLAGS_WORD_VALID
            || read_u32(b, field::VNI_WORD) & 0xff != 0
        {
            return Err(WireError::BadVersion);
        }
        Ok(Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The flags byte (`FLAG_I` after `new_checked`).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS_WORD]
    }

    /// The VXLAN Network Identifier (24 bits).
    #[inline]
    pub fn vni(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VNI_WORD) >> 8
    }

    /// The inner Ethernet frame.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Write a complete valid header for `vni` (masked to 24 bits): flags `I`,
    /// reserved bits zero. After this, `new_checked` accepts the buffer.
    #[inline]
    pub fn fill(&mut self, vni: u32) {
        let b = self.buffer.as_mut();
        write_u32(b, field::FLAGS_WORD, FLAGS_WORD_VALID);
        write_u32(b, field::VNI_WORD, (vni & VNI_MAX) << 8);
    }

    /// Set the VNI (masked to 24 bits), keeping the low reserved byte.
    #[inline]
    pub fn set_vni(&mut self, vni: u32) {
        let b = self.buffer.as_mut();
        let low = read_u32(b, field::VNI_WORD) & 0xff;
        write_u32(b, field::VNI_WORD, ((vni & VNI_MAX) << 8) | low);
    }

    /// Set the flags byte (leaving the reserved bytes alone).
    #[inline]
    pub fn set_flags(&mut self, f: u8) {
        self.buffer.as_mut()[field::FLAGS_WORD] = f;
    }

    /// The inner Ethernet frame, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_writes_the_rfc_layout() {
        let mut b = [0xffu8; 10];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.fill(0x12_3456);
        assert_eq!(&b[..8], &[0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.flags(), p.vni()), (FLAG_I, 0x12_3456));
        assert_eq!(p.payload(), &[0xff, 0xff]);
        // VNIs are 24 bits: higher bits are dropped, not spilled into the flags.
        Packet::new_unchecked(&mut b[..]).fill(0xab12_3456);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.flags(), p.vni()), (FLAG_I, 0x12_3456));
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_vni(VNI_MAX);
        assert_eq!(p.vni(), VNI_MAX);
        assert!(Packet::new_checked(&b[..]).is_ok());
        // Agrees with an independent reading of the wire format.
        let mut v = [0u8; 8];
        Packet::new_unchecked(&mut v[..]).fill(4242);
        assert_eq!(u32::from_be_bytes([0, v[4], v[5], v[6]]), 4242);
    }

    #[test]
    fn only_flag_i_with_zero_reserved_bits_is_accepted() {
        let mut good = [0u8; 8];
        Packet::new_unchecked(&mut good[..]).fill(7);
        for n in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&good[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        // Every single bit outside the VNI flips the header to refused, except I
        // itself, whose absence is refused too.
        for byte in [0usize, 1, 2, 3, 7] {
            for bit in 0..8 {
                let mut v = good;
                v[byte] ^= 1 << bit;
                assert_eq!(
                    Packet::new_checked(&v[..]).unwrap_err(),
                    WireError::BadVersion,
                    "byte {byte} bit {bit}"
                );
            }
        }
        // VNI bits never make a header invalid.
        for byte in 4..7 {
            let mut v = good;
            v[byte] = 0xff;
            assert!(Packet::new_checked(&v[..]).is_ok());
        }
        // set_flags can build a wrong one (for tests of the decap stage).
        let mut v = good;
        Packet::new_unchecked(&mut v[..]).set_flags(0x0c);
        assert!(Packet::new_checked(&v[..]).is_err());
    }
}
