//! Checked zero-copy views over packet bytes: Ethernet II, ARP (Ethernet/IPv4), IPv4,
//! ICMPv4, the transport headers connection tracking reads (UDP, TCP, SCTP, and the
//! port pair they share), VXLAN, the Internet checksum, the IP protocol numbers
//! ([`protocol`]), and the address-family keys tables use ([`addr`]).
//!
//! This is the "knows bytes" layer of a packet's way: the pipeline stages read and
//! rewrite frames in the UMEM through these views and nothing else. Each view wraps a
//! buffer `T: AsRef<[u8]>` (setters need `T: AsMut<[u8]>`), in the style of smoltcp's
//! `wire` module:
//!
//! * `new_checked` validates every length the accessors rely on, once. After it
//!   succeeds, no accessor or setter of that view can panic.
//! * `new_unchecked` skips the check; only for buffers the caller has already checked
//!   (or built); accessors on a short buffer would panic.
//! * Fields live at named offsets and are read with explicit big-endian conversions;
//!   bytes are never cast to structs, so alignment and padding never matter.
//!
//! Nothing here allocates, logs or decides: a malformed header is a [`WireError`], and
//! the pipeline maps it to a counted drop reason.
//!
//! Cost: checking an Ethernet + IPv4 header and verifying its checksum (the
//! `parse_only` bench) is ~5.5 ns/pkt at burst 64, see bench/RESULTS.md.

pub mod addr;
pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ports;
pub mod sctp;
pub mod tcp;
pub mod udp;
pub mod vxlan;

/// IP protocol numbers (IPv4 protocol field, IPv6 next header) the packet path looks
/// at, as the packet path names them; the numbers are defined once, in
/// `xsknet_proto::consts`, and `ipv4::protocol` and the policy contract re-export them.
pub mod protocol {
    pub use xsknet_proto::consts::{
        PROTO_ICMP as ICMP, PROTO_SCTP as SCTP, PROTO_TCP as TCP, PROTO_UDP as UDP,
    };
}

/// Why a view refused a buffer. The pipeline turns these into `DropReason`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The buffer is shorter than the fixed header.
    Truncated,
    /// A version or format field holds a value the view does not speak: IPv4 version
    /// not 4; VXLAN flags other than exactly I, or reserved bits set.
    BadVersion,
    /// A header-length field below its minimum, or the header it claims would run past
    /// the buffer: IPv4 IHL, TCP data offset, SCTP first chunk length.
    BadHeaderLength,
    /// A total-length field below the header length or past the buffer: IPv4 total
    /// length, UDP length.
    BadTotalLength,
}

/// Big-endian u16 at `off`. Callers guarantee `off + 2 <= b.len()` (a view's check).
#[inline(always)]
pub(crate) fn read_u16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// Big-endian u32 at `off`. Callers guarantee `off + 4 <= b.len()`.
#[inline(always)]
pub(crate) fn read_u32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[inline(always)]
pub(crate) fn write_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn write_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// A MAC address (6 bytes) at `off`. Callers guarantee `off + 6 <= b.len()`.
#[inline(always)]
pub(crate) fn read_mac(b: &[u8], off: usize) -> [u8; 6] {
    [
        b[off],
        b[off + 1],
        b[off + 2],
        b[off + 3],
        b[off + 4],
        b[off + 5],
    ]
}

#[inline(always)]
pub(crate) fn write_mac(b: &mut [u8], off: usize, mac: [u8; 6]) {
    b[off..off + 6].copy_from_slice(&mac);
}
