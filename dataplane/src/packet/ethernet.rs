//! Ethernet II frame view.
//!
//! The first view on every frame the pipeline sees: it owns the 14-byte header
//! (destination MAC, source MAC, EtherType) and hands the rest to the ARP or IPv4 view.
//! No 802.1Q tags: the pod side of a veth never sends them, and anything that is not
//! plain ARP/IPv4 is dropped by the pipeline as an unsupported EtherType.

use super::{read_mac, read_u16, write_mac, write_u16, WireError};

/// Byte offsets of the Ethernet II header fields.
mod field {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
    pub const PAYLOAD: usize = 14;
}

/// Length of the Ethernet II header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// EtherType values the pipeline dispatches on.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const IPV6: u16 = 0x86dd;
}

/// A read/write view over an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wrap without checking; accessors panic if the buffer is under 14 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Wrap after checking the header fits.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Frame { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn dst_addr(&self) -> [u8; 6] {
        read_mac(self.buffer.as_ref(), field::DST)
    }

    #[inline]
    pub fn src_addr(&self) -> [u8; 6] {
        read_mac(self.buffer.as_ref(), field::SRC)
    }

    #[inline]
    pub fn ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Everything after the header (including any trailing padding).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    #[inline]
    pub fn set_dst_addr(&mut self, mac: [u8; 6]) {
        write_mac(self.buffer.as_mut(), field::DST, mac);
    }

    #[inline]
    pub fn set_src_addr(&mut self, mac: [u8; 6]) {
        write_mac(self.buffer.as_mut(), field::SRC, mac);
    }

    #[inline]
    pub fn set_ethertype(&mut self, ty: u16) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE, ty);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_fields() {
        let mut b = [0u8; 20];
        b[..6].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        b[6..12].copy_from_slice(&[7, 8, 9, 10, 11, 12]);
        b[12] = 0x08;
        b[13] = 0x06;
        let mut f = Frame::new_checked(&mut b[..]).unwrap();
        assert_eq!(f.dst_addr(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(f.src_addr(), [7, 8, 9, 10, 11, 12]);
        assert_eq!(f.ethertype(), ethertype::ARP);
        assert_eq!(f.payload().len(), 6);
        f.set_dst_addr([0xaa; 6]);
        f.set_src_addr([0xbb; 6]);
        f.set_ethertype(ethertype::IPV4);
        assert_eq!(
            &b[..14],
            &[0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 8, 0]
        );
    }

    #[test]
    fn short_buffers_are_refused() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                Frame::new_checked(&[0u8; 14][..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        assert!(Frame::new_checked(&[0u8; 14][..])
            .unwrap()
            .payload()
            .is_empty());
    }
}
