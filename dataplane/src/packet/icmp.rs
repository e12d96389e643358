//! ICMPv4 message view (RFC 792): echo request/reply and time exceeded.
//!
//! The gateway (169.254.1.1) is the dataplane itself: the forward stage answers pods'
//! pings to it in place and turns a packet whose TTL runs out into a time-exceeded
//! error, both through this view. The checksum covers the whole ICMP message, so the
//! buffer this view wraps must end where the message ends (the IPv4 payload, not the
//! frame with its padding).
//!
//! Invariant after `new_checked`: at least the 8-byte header (type, code, checksum and
//! the rest-of-header word: echo id/sequence, or unused for time exceeded) is present.

use super::{checksum, read_u16, write_u16, WireError};

/// Byte offsets of the ICMP header fields.
mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQ: usize = 6;
    pub const REST: usize = 4;
    pub const DATA: usize = 8;
}

/// Length of the ICMP header (type, code, checksum, rest-of-header word).
pub const HEADER_LEN: usize = field::DATA;

/// Message types the pipeline handles or must recognise.
pub mod msg_type {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const REDIRECT: u8 = 5;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETER_PROBLEM: u8 = 12;
}

/// Time exceeded code: TTL reached zero in transit.
pub const CODE_TTL_EXCEEDED_IN_TRANSIT: u8 = 0;

/// True for the error messages that must never trigger another ICMP error (RFC 1122
/// §3.2.2): answering an error with an error can loop.
#[inline]
pub fn is_error(ty: u8) -> bool {
    matches!(
        ty,
        msg_type::DEST_UNREACHABLE
            | msg_type::SOURCE_QUENCH
            | msg_type::REDIRECT
            | msg_type::TIME_EXCEEDED
            | msg_type::PARAMETER_PROBLEM
    )
}

/// A read/write view over one ICMPv4 message.
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

    /// Wrap after checking the 8-byte header fits.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQ)
    }

    /// The message body after the 8-byte header (echo data, or the quoted datagram).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// True when the whole message sums to all ones.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_msg_type(&mut self, ty: u8) {
        self.buffer.as_mut()[field::TYPE] = ty;
    }

    #[inline]
    pub fn set_msg_code(&mut self, code: u8) {
        self.buffer.as_mut()[field::CODE] = code;
    }

    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// The rest-of-header word (echo id + sequence; zero for time exceeded).
    #[inline]
    pub fn set_rest_of_header(&mut self, v: [u8; 4]) {
        self.buffer.as_mut()[field::REST..field::DATA].copy_from_slice(&v);
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }

    /// Recompute the checksum over the whole message.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Turn a (verified) echo request into an echo reply: only the type/code word
    /// changes, so the checksum is patched incrementally instead of re-summing the data.
    /// A patched checksum of 0x0000 on an otherwise all-zero reply (id 0, sequence 0,
    /// zero data) is the one case the patch gets wrong: only 0xFFFF verifies there.
    /// That case is checked for and fixed, without re-summing into a valid checksum a
    /// request that did not verify (the fuzz target checks validity is preserved both
    /// ways).
    #[inline]
    pub fn make_echo_reply(&mut self) {
        let b = self.buffer.as_mut();
        let old = read_u16(b, field::TYPE);
        b[field::TYPE] = msg_type::ECHO_REPLY;
        b[field::CODE] = 0;
        let new = read_u16(b, field::TYPE);
        let c = checksum::update_word(read_u16(b, field::CHECKSUM), old, new);
        write_u16(b, field::CHECKSUM, c);
        // Summing is needed only in the rare 0x0000 case; with the checksum field 0,
        // the message sums to 0 exactly when it is all zeros.
        if c == 0 && checksum::sum(b) == 0 {
            write_u16(b, field::CHECKSUM, 0xffff);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_to_reply_keeps_checksum_valid() {
        let mut b = [0u8; 64];
        b[0] = msg_type::ECHO_REQUEST;
        b[4..8].copy_from_slice(&[0x12, 0x34, 0x00, 0x07]);
        for (i, x) in b[8..].iter_mut().enumerate() {
            *x = i as u8;
        }
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq_no(), 7);
        p.make_echo_reply();
        assert_eq!(p.msg_type(), msg_type::ECHO_REPLY);
        assert!(p.verify_checksum());
        let s = etherparse::Icmpv4Slice::from_slice(&b).unwrap();
        let want = etherparse::Icmpv4Header::with_checksum(s.icmp_type(), s.payload());
        assert_eq!(s.checksum(), want.checksum);
    }

    /// Regression for the `views` fuzz crash: an echo request that becomes an all-zero
    /// reply (id 0, seq 0, no data) must get checksum 0xFFFF, not eqn. 3's 0x0000.
    #[test]
    fn all_zero_echo_reply_gets_ffff() {
        let mut b = [8, 0, 0, 0, 0, 0, 0, 0];
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum();
        assert_eq!(p.checksum(), 0xf7ff);
        p.make_echo_reply();
        assert!(p.verify_checksum());
        assert_eq!(p.checksum(), 0xffff);
        // The fuzzer's input: a nonzero code also zeroes out.
        let mut c = [8, 0x0a, 0xf7, 0xf5, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut p = Packet::new_checked(&mut c[..]).unwrap();
        assert!(p.verify_checksum());
        p.make_echo_reply();
        assert!(p.verify_checksum());
    }

    /// Second fuzz finding: the fix must not turn a request that failed verification
    /// into a reply that passes (it would hide corruption from the pod).
    #[test]
    fn invalid_request_stays_invalid() {
        for hc in [0xf7fe_u16, 0x0000, 0xffff, 0x1234] {
            let mut b = [8, 0, 0, 0, 0, 0, 0, 0];
            b[2..4].copy_from_slice(&hc.to_be_bytes());
            let mut p = Packet::new_checked(&mut b[..]).unwrap();
            assert!(!p.verify_checksum());
            p.make_echo_reply();
            assert!(!p.verify_checksum(), "checksum {hc:#06x} laundered");
        }
    }

    #[test]
    fn short_buffers_are_refused() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&[0u8; 8][..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        assert!(Packet::new_checked(&[0u8; 8][..])
            .unwrap()
            .data()
            .is_empty());
    }

    #[test]
    fn error_types() {
        assert!(is_error(msg_type::TIME_EXCEEDED));
        assert!(is_error(msg_type::DEST_UNREACHABLE));
        assert!(!is_error(msg_type::ECHO_REQUEST));
        assert!(!is_error(msg_type::ECHO_REPLY));
    }
}
