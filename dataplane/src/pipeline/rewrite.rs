//! Rewrite stage: what every forwarded IPv4 frame gets, in place and at its length.
//!
//! TTL minus one with an O(1) incremental checksum patch (RFC 1624, no re-sum), then
//! the Ethernet addresses of the next hop: for a port, destination = the egress port's
//! peer and source = the egress port's own MAC; for a tunnel, the inner frame is
//! addressed from our VTEP MAC to the remote VTEP's MAC (the [`encap`](super::encap)
//! stage then writes the outer headers in front).
//!
//! The caller has checked the IPv4 header (so the TTL and checksum are in bounds) and
//! that the TTL is above one. Measured cost: part of the ~15 ns/pkt IPv4 forward
//! (bench/RESULTS.md); a handful of stores.

use crate::packet::ethernet::{self, Frame};
use crate::packet::ipv4::Packet as Ipv4Packet;

use super::route::Egress;

/// Rewrite the checked IPv4 frame `frame` (exactly the packet) for `eg`.
///
/// `inline(always)`: with plain `#[inline]` LLVM kept it out of line in `forward`, at
/// ~14 instructions per packet for the call and the `Egress` passed through memory
/// (callgrind, bench/examples/callgrind.rs).
#[inline(always)]
pub fn rewrite(frame: &mut [u8], eg: &Egress<'_>) {
    let (dst, src) = match &eg.tunnel {
        None => (eg.out.peer_mac, eg.out.mac),
        Some(t) => (t.vtep.vtep_mac, t.overlay.vtep_mac),
    };
    if let Some(l3) = frame.get_mut(ethernet::HEADER_LEN..) {
        Ipv4Packet::new_unchecked(l3).decrement_ttl();
    }
    let mut eth = Frame::new_unchecked(frame);
    eth.set_dst_addr(dst);
    eth.set_src_addr(src);
}
