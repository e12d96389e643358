//! AF_XDP ports: rings ([`ring`]), a port's UMEM ([`umem`]), the port itself with its
//! frame pool ([`port`]), multi-buffer packets as descriptor chains ([`chain`]), in-memory ports for tests and benches ([`fake`]), and the
//! lock-free single-producer single-consumer ring that hands packets between workers
//! ([`handoff`]), and XDP links with explicit attach flags ([`link`]). All unsafe code that touches shared ring memory lives here.
//!
//! Below the pipeline in the layering: this module imports only
//! [`counters`](crate::counters) (port ids, the ring drops it counts, the burst size),
//! never `pipeline/`, `tables/` or `control/`.

pub mod chain;
pub mod fake;
pub mod handoff;
pub mod link;
pub mod port;
pub mod ring;
pub mod umem;
pub mod wake;

pub use chain::{is_chain, MAX_CHAIN, XDP_PKT_CONTD};
pub use port::{Port, PortConfig, PortError, RingStats};

/// Fills `dst` from the rest of the current segment `seg`, then from `segments` in
/// order; returns the bytes written (fewer than `dst.len()` only when the segments ran
/// out). `seg` keeps what was not consumed, so successive calls cut one packet's
/// segments into consecutive buffers (UMEM frames of a chain, handoff slots).
#[inline]
pub(crate) fn gather<'a>(
    dst: &mut [u8],
    seg: &mut &'a [u8],
    segments: &mut impl Iterator<Item = &'a [u8]>,
) -> usize {
    let mut used = 0;
    while used < dst.len() {
        if seg.is_empty() {
            match segments.next() {
                Some(s) => *seg = s,
                None => break,
            }
            continue;
        }
        let take = seg.len().min(dst.len() - used);
        dst[used..used + take].copy_from_slice(&seg[..take]);
        *seg = &seg[take..];
        used += take;
    }
    used
}

pub use ring::XdpDesc;
pub use umem::HEADROOM;

#[cfg(test)]
mod gather_tests {
    #[test]
    fn gather_cuts_segments_into_consecutive_buffers() {
        let parts: [&[u8]; 3] = [b"abc", b"", b"defgh"];
        let mut it = parts.into_iter();
        let mut seg: &[u8] = &[];
        let (mut a, mut b, mut c) = ([0u8; 4], [0u8; 3], [0u8; 4]);
        assert_eq!(super::gather(&mut a, &mut seg, &mut it), 4);
        assert_eq!(super::gather(&mut b, &mut seg, &mut it), 3);
        assert_eq!(super::gather(&mut c, &mut seg, &mut it), 1);
        assert_eq!((&a, &b, &c[..1]), (b"abcd", b"efg", &b"h"[..]));
    }
}
