//! An XDP bpf_link with explicit attach flags (`bpf_link_create` with `BPF_XDP`), for
//! the modes libbpf-rs's `attach_xdp` cannot ask for (generic/skb XDP). The link is an
//! fd: closing it detaches the program, like every other attachment of the daemon.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `XDP_FLAGS_SKB_MODE`: generic XDP whatever the driver has.
pub const XDP_FLAGS_SKB_MODE: u32 = libbpf_sys::XDP_FLAGS_SKB_MODE;

/// Attach the XDP program `prog` to `ifindex` with `flags`; the returned fd is the link.
pub fn xdp_link_create(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let ifindex = i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: all-zero is the documented "no options" value of this plain C struct;
    // `sz` and `flags` are set before use.
    let mut opts: libbpf_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _;
    opts.flags = flags;
    // SAFETY: a program fd borrowed for the call, an ifindex, and options that live
    // across the call; libbpf reads nothing else.
    let fd = unsafe {
        libbpf_sys::bpf_link_create(prog.as_raw_fd(), ifindex, libbpf_sys::BPF_XDP, &opts)
    };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: bpf_link_create returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
