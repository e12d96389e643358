//! The node-local MTU limits of a UMEM frame size (one frame, a multi-buffer chain) and
//! whether the kernel has multi-buffer AF_XDP.

/// The largest `localMtu` for a UMEM frame size: a multi-buffer packet is at most
/// [`MAX_CHAIN`](crate::xsk::MAX_CHAIN) buffers of a frame less its headroom (what the
/// kernel's copy-mode RX fills and TX takes), and IPv4 at most 65535 bytes: 32242 for
/// 2 KiB frames, 65535 for 4 KiB.
pub const fn max_local_mtu(frame_size: u32) -> u32 {
    let chain =
        crate::xsk::MAX_CHAIN as u32 * (frame_size - crate::xsk::umem::HEADROOM as u32) - 14;
    if chain < 65535 {
        chain
    } else {
        65535
    }
}

/// The default `localMtu` for a frame size: the multi-buffer limit (65535 with 4 KiB
/// frames, 32242 with 2 KiB). Measured on a quiet machine (bench/RESULTS.md "Node-local
/// TCP"): 65535 gave 8.2 Gbit/s between two pods against 6.0 at 32768 (four runs each).
pub const fn default_local_mtu(frame_size: u32) -> u32 {
    max_local_mtu(frame_size)
}

/// Whether a kernel release (`6.18.44-fc`, `6.1.0-28-amd64`) has multi-buffer AF_XDP
/// (`XDP_USE_SG`, Linux 6.6). Unparseable: assumed recent.
pub fn kernel_has_xdp_sg(release: &str) -> bool {
    let mut it = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (it.next().flatten(), it.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (6, 6),
        _ => true,
    }
}

/// The largest `localMtu` one UMEM frame holds: the IP packet plus its Ethernet
/// header must fit one frame behind [`HEADROOM`](crate::xsk::umem::HEADROOM), and a
/// veth with a single-buffer XDP program attached refuses a peer MTU above
/// one page − XDP headroom − `skb_shared_info` − Ethernet header (3506 on 4 KiB pages).
pub const fn max_single_buffer_mtu(frame_size: u32) -> u32 {
    const VETH_XDP_MAX: u32 = 4096 - 256 - 320 - 14;
    let frame = frame_size - crate::xsk::umem::HEADROOM as u32 - 14;
    if frame < VETH_XDP_MAX {
        frame
    } else {
        VETH_XDP_MAX
    }
}
