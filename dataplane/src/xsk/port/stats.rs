//! Kernel ring statistics of an AF_XDP socket (`XDP_STATISTICS`).

use super::*;

/// Kernel ring statistics of an AF_XDP socket (`struct xdp_statistics`). The control
/// protocol has a same-shaped serde type; the daemon converts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// Kernel ring statistics of an AF_XDP socket fd (XDP_STATISTICS).
pub fn xdp_statistics(fd: BorrowedFd<'_>) -> io::Result<RingStats> {
    #[repr(C)]
    #[derive(Default)]
    struct Raw {
        rx_dropped: u64,
        rx_invalid_descs: u64,
        tx_invalid_descs: u64,
        rx_ring_full: u64,
        rx_fill_ring_empty_descs: u64,
        tx_ring_empty_descs: u64,
    }
    let mut raw = Raw::default();
    let mut len = std::mem::size_of::<Raw>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `raw`, which is that large.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SOL_XDP,
            libxdp_sys::XDP_STATISTICS as i32,
            (&mut raw as *mut Raw).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(RingStats {
        rx_dropped: raw.rx_dropped,
        rx_invalid_descs: raw.rx_invalid_descs,
        tx_invalid_descs: raw.tx_invalid_descs,
        rx_ring_full: raw.rx_ring_full,
        rx_fill_ring_empty_descs: raw.rx_fill_ring_empty_descs,
        tx_ring_empty_descs: raw.tx_ring_empty_descs,
    })
}
