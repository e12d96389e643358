//! The port pair TCP, UDP and SCTP headers all begin with (source port, destination
//! port: 16 bits each, big-endian).
//!
//! Connection tracking needs the ports of transport headers that are not whole: the
//! datagram an ICMP error quotes (RFC 792 promises only the IP header and 8 bytes), or
//! a malformed header whose own view ([`super::tcp`], [`super::udp`], [`super::sctp`])
//! refuses it. This view asks for the 4 bytes it reads and nothing more.
//!
//! Invariant after `new_checked`: at least 4 bytes are present.

use super::{read_u16, WireError};

/// Byte offsets of the two ports.
mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const END: usize = 4;
}

/// Bytes this view reads.
pub const LEN: usize = field::END;

/// A read-only view over the first 4 bytes of a TCP, UDP or SCTP header.
#[derive(Debug, Clone)]
pub struct Ports<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ports<T> {
    /// Wrap after checking 4 bytes are present.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < LEN {
            return Err(WireError::Truncated);
        }
        Ok(Ports { buffer })
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ports_and_refuses_short_buffers() {
        let b = [0x9c, 0x40, 0x00, 0x50];
        let p = Ports::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (40000, 80));
        for n in 0..LEN {
            assert_eq!(
                Ports::new_checked(&b[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
    }
}
