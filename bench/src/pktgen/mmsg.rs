//! sendmmsg on an AF_PACKET socket: the fallback path, and the only one for frames
//! larger than one UMEM frame.
//!
//! The socket bypasses the qdisc (`PACKET_QDISC_BYPASS`, as AF_XDP does), gets a
//! 16 MiB send buffer through `SO_SNDBUFFORCE` (this socket only, no global sysctl;
//! the default buffer when that is refused) and blocks when the buffer is full, so
//! back-pressure waits instead of failing. All `batch` frame buffers, iovecs and
//! message headers are set up at open; per packet the loop stamps a buffer.
//! A partial send re-stamps the unsent tail with the same sequence numbers, so the
//! sink never sees a gap the network did not make.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use super::{
    ifindex, monotonic_ns, mtu, wait_for_tokens, Frame, Limits, Pacer, PktgenError, Stamp, TxReport,
};

/// Per-socket send buffer asked for.
const SNDBUF: libc::c_int = 16 << 20;

/// An open AF_PACKET sender. The message headers point into the boxed buffers below;
/// none of them is resized after open, so the pointers stay valid when this moves.
pub struct MmsgSender {
    dev: String,
    fd: OwnedFd,
    len: usize,
    bufs: Vec<u8>,
    _iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    _addr: Box<libc::sockaddr_ll>,
}

impl std::fmt::Debug for MmsgSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmsgSender")
            .field("fd", &self.fd)
            .field("len", &self.len)
            .field("batch", &self.msgs.len())
            .finish()
    }
}

fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl MmsgSender {
    pub fn open(dev: &str, frame: &Frame, batch: usize) -> Result<MmsgSender, PktgenError> {
        let io_err = |what| {
            move |source| PktgenError::Io {
                what,
                ifname: dev.to_string(),
                source,
            }
        };
        let index = ifindex(dev)?;
        let m = mtu(dev)?;
        if frame.len() > m as usize + 14 {
            return Err(PktgenError::OverMtu {
                size: frame.len(),
                ifname: dev.to_string(),
                mtu: m,
            });
        }
        // protocol 0: a send-only packet socket (receives nothing)
        // SAFETY: plain socket(2) call.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io_err("AF_PACKET socket")(io::Error::last_os_error()));
        }
        // SAFETY: a fresh fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
            .map_err(io_err("PACKET_QDISC_BYPASS"))?;
        if setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, SNDBUF).is_err() {
            let _ = setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUF, SNDBUF);
        }
        // SAFETY: all-zero is a valid sockaddr_ll; the fields used are set below.
        let mut addr: Box<libc::sockaddr_ll> = Box::new(unsafe { std::mem::zeroed() });
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame.template()[0..6]);
        let len = frame.len();
        let mut bufs = Vec::with_capacity(len * batch);
        for _ in 0..batch {
            bufs.extend_from_slice(frame.template());
        }
        let mut iov: Vec<libc::iovec> = (0..batch)
            .map(|i| libc::iovec {
                // SAFETY: i * len is inside bufs (batch × len bytes).
                iov_base: unsafe { bufs.as_mut_ptr().add(i * len) }.cast(),
                iov_len: len,
            })
            .collect();
        let addr_ptr: *mut libc::sockaddr_ll = &mut *addr;
        let msgs: Vec<libc::mmsghdr> = (0..batch)
            .map(|i| {
                // SAFETY: all-zero is a valid msghdr (no control data, no flags).
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = addr_ptr.cast();
                h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                // SAFETY: i < batch = iov.len().
                h.msg_hdr.msg_iov = unsafe { iov.as_mut_ptr().add(i) };
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        Ok(MmsgSender {
            dev: dev.to_string(),
            fd,
            len,
            bufs,
            _iov: iov,
            msgs,
            _addr: addr,
        })
    }

    /// Send until `limits` say stop. Returns the counts and when the loop ended, or an
    /// error the send cannot go on after (EMSGSIZE, ENXIO, ENETDOWN, ...).
    pub fn run(
        &mut self,
        frame: &Frame,
        pacer: &mut Pacer,
        limits: &Limits<'_>,
    ) -> Result<(TxReport, Instant), PktgenError> {
        let batch = self.msgs.len() as u64;
        let flows = u64::from(frame.flows());
        let mut seq = 0u64;
        let mut r = TxReport::default();
        loop {
            let now = Instant::now();
            if limits.done(now, seq) {
                break;
            }
            let want = batch.min(limits.remaining(seq));
            let g = pacer.grant(now, want);
            if g == 0 {
                wait_for_tokens(pacer, now);
                continue;
            }
            let ts_ns = monotonic_ns();
            for i in 0..g as usize {
                let s = seq + i as u64;
                frame.stamp(
                    &mut self.bufs[i * self.len..(i + 1) * self.len],
                    Stamp {
                        seq: s,
                        ts_ns,
                        flow: (s % flows) as u16,
                    },
                );
            }
            // SAFETY: msgs[..g] are valid headers pointing at live buffers (see open).
            let rc =
                unsafe { libc::sendmmsg(self.fd.as_raw_fd(), self.msgs.as_mut_ptr(), g as u32, 0) };
            if rc >= 0 {
                let sent = rc as u64;
                seq += sent;
                if sent < g {
                    pacer.refund(g - sent);
                    r.ring_full += 1;
                }
                continue;
            }
            pacer.refund(g);
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::ENOBUFS | libc::EAGAIN) => {
                    r.ring_full += 1;
                    std::thread::yield_now();
                }
                Some(
                    libc::EMSGSIZE | libc::ENXIO | libc::ENETDOWN | libc::EINVAL | libc::EPERM,
                ) => {
                    return Err(PktgenError::Io {
                        what: "sendmmsg",
                        ifname: self.dev.clone(),
                        source: e,
                    })
                }
                _ => r.tx_errors += 1,
            }
        }
        let end = Instant::now();
        r.packets = seq;
        r.bytes = seq * self.len as u64;
        Ok((r, end))
    }
}
