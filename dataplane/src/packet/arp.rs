//! ARP packet view (RFC 826), laid out for Ethernet/IPv4.
//!
//! Pods route everything through a link-local gateway, so the only ARP the dataplane
//! sees is a pod (or the host port) asking for a MAC; the pipeline's ARP stage answers
//! it in place through this view. The fixed 8-byte part is generic; the address fields
//! are read at their Ethernet/IPv4 offsets (hlen 6, plen 4) and are meaningful only
//! when [`Packet::is_ethernet_ipv4`] holds.
//!
//! Invariant after `new_checked`: the buffer holds at least the 8-byte fixed part, the
//! `8 + 2·(hlen + plen)` bytes the packet claims, and the 28 bytes of the
//! Ethernet/IPv4 layout, so every accessor and setter is in bounds.

use super::{read_mac, read_u16, read_u32, write_mac, write_u16, write_u32, WireError};

/// Byte offsets of the ARP fields (addresses at their Ethernet/IPv4 positions).
mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
}

/// Length of the fixed part (before the addresses).
pub const FIXED_LEN: usize = 8;
/// Length of an Ethernet/IPv4 ARP packet.
pub const ETHERNET_IPV4_LEN: usize = 28;

pub const HTYPE_ETHERNET: u16 = 1;
pub const PTYPE_IPV4: u16 = 0x0800;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// A read/write view over an ARP packet (the Ethernet payload).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checking; accessors panic on a buffer under 28 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wrap after checking the fixed part, the claimed address lengths and the
    /// Ethernet/IPv4 layout all fit.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < FIXED_LEN {
            return Err(WireError::Truncated);
        }
        let claimed = FIXED_LEN + 2 * (usize::from(b[field::HLEN]) + usize::from(b[field::PLEN]));
        if b.len() < claimed.max(ETHERNET_IPV4_LEN) {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HTYPE)
    }

    #[inline]
    pub fn protocol_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PTYPE)
    }

    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    #[inline]
    pub fn operation(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OPER)
    }

    /// Hardware Ethernet (1), protocol IPv4 (0x0800), lengths 6 and 4: the only kind
    /// whose address accessors mean anything.
    #[inline]
    pub fn is_ethernet_ipv4(&self) -> bool {
        self.hardware_type() == HTYPE_ETHERNET
            && self.protocol_type() == PTYPE_IPV4
            && self.hardware_len() == 6
            && self.protocol_len() == 4
    }

    #[inline]
    pub fn sender_hardware_addr(&self) -> [u8; 6] {
        read_mac(self.buffer.as_ref(), field::SHA)
    }

    /// Sender IPv4 address, host order.
    #[inline]
    pub fn sender_protocol_addr(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SPA)
    }

    #[inline]
    pub fn target_hardware_addr(&self) -> [u8; 6] {
        read_mac(self.buffer.as_ref(), field::THA)
    }

    /// Target IPv4 address, host order.
    #[inline]
    pub fn target_protocol_addr(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_operation(&mut self, op: u16) {
        write_u16(self.buffer.as_mut(), field::OPER, op);
    }

    #[inline]
    pub fn set_sender_hardware_addr(&mut self, mac: [u8; 6]) {
        write_mac(self.buffer.as_mut(), field::SHA, mac);
    }

    #[inline]
    pub fn set_sender_protocol_addr(&mut self, ip: u32) {
        write_u32(self.buffer.as_mut(), field::SPA, ip);
    }

    #[inline]
    pub fn set_target_hardware_addr(&mut self, mac: [u8; 6]) {
        write_mac(self.buffer.as_mut(), field::THA, mac);
    }

    #[inline]
    pub fn set_target_protocol_addr(&mut self, ip: u32) {
        write_u32(self.buffer.as_mut(), field::TPA, ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: [u8; 28] = [
        0, 1, 8, 0, 6, 4, 0, 1, // Ethernet, IPv4, 6, 4, request
        2, 0, 0, 0, 0, 1, 10, 244, 0, 5, // sha, spa 10.244.0.5
        0, 0, 0, 0, 0, 0, 169, 254, 1, 1, // tha, tpa 169.254.1.1
    ];

    #[test]
    fn reads_a_request() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        assert!(p.is_ethernet_ipv4());
        assert_eq!(p.operation(), OP_REQUEST);
        assert_eq!(p.sender_hardware_addr(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(p.sender_protocol_addr(), 0x0af4_0005);
        assert_eq!(p.target_hardware_addr(), [0; 6]);
        assert_eq!(p.target_protocol_addr(), 0xa9fe_0101);
    }

    #[test]
    fn refuses_short_and_overclaiming_buffers() {
        for n in 0..ETHERNET_IPV4_LEN {
            assert_eq!(
                Packet::new_checked(&REQUEST[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        let mut big = REQUEST;
        big[4] = 255; // hlen 255 claims 8 + 2*(255+4) bytes
        assert_eq!(
            Packet::new_checked(&big[..]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn setters_write_at_ethernet_ipv4_offsets() {
        let mut b = REQUEST;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_operation(OP_REPLY);
        p.set_sender_hardware_addr([0xaa; 6]);
        p.set_sender_protocol_addr(0x0102_0304);
        p.set_target_hardware_addr([0xbb; 6]);
        p.set_target_protocol_addr(0x0506_0708);
        assert_eq!(b[6..8], [0, 2]);
        assert_eq!(b[8..14], [0xaa; 6]);
        assert_eq!(b[14..18], [1, 2, 3, 4]);
        assert_eq!(b[18..24], [0xbb; 6]);
        assert_eq!(b[24..28], [5, 6, 7, 8]);
    }
}
