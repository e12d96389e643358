//! `pktgen sink`: receive on one UDP socket with `recvmmsg` and count.
//!
//! Counts datagrams and bytes, and per sender stream (the stamp's stream id, up to
//! [`MAX_STREAMS`]) the sequence gaps: a datagram whose sequence number is past the next
//! expected one adds the difference to `gaps`; one below it (reordered or duplicated)
//! counts as `late`. Datagrams without a stamp, or from streams past the table, count
//! as `unstamped`. The one-way delay (receive batch time minus the stamp's send time,
//! both CLOCK_MONOTONIC: meaningful only with sender and sink on one machine) is kept
//! as a mean and a maximum; it includes the time a datagram waited in the socket.
//!
//! Bounded work: one socket, fixed buffers (`batch` × 64 KiB) allocated before the
//! first datagram, a fixed stream table; the receive timeout (100 ms) bounds how late
//! a stop signal, deadline or idle limit is noticed.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::frame::read_stamp;
use super::{monotonic_ns, PktgenError, SinkSpec};

/// Streams tracked for gaps.
pub const MAX_STREAMS: usize = 256;
/// Receive buffer per datagram: the largest UDP payload.
const SLOT: usize = 65536;
const RCVBUF: libc::c_int = 32 << 20;

/// Per-stream gap accounting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gaps {
    next: Vec<Option<u64>>,
    pub gaps: u64,
    pub late: u64,
    pub unstamped: u64,
}

impl Gaps {
    pub fn new() -> Gaps {
        Gaps {
            next: vec![None; MAX_STREAMS],
            ..Gaps::default()
        }
    }

    /// Account one datagram's UDP payload.
    #[inline]
    pub fn see(&mut self, payload: &[u8]) -> Option<u64> {
        let Some((seq, ts, stream)) = read_stamp(payload) else {
            self.unstamped += 1;
            return None;
        };
        let Some(slot) = self.next.get_mut(usize::from(stream)) else {
            self.unstamped += 1;
            return None;
        };
        let expect = slot.unwrap_or(0);
        if seq >= expect {
            self.gaps += seq - expect;
            *slot = Some(seq.saturating_add(1));
        } else {
            self.late += 1;
        }
        Some(ts)
    }

    /// Streams that sent anything.
    pub fn streams(&self) -> usize {
        self.next.iter().filter(|s| s.is_some()).count()
    }
}

/// What the sink saw.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkReport {
    pub datagrams: u64,
    pub bytes: u64,
    /// First to last datagram.
    pub seconds: f64,
    pub gaps: Gaps,
    pub one_way_mean_us: f64,
    pub one_way_max_us: f64,
    pub recv_errors: u64,
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: passes a pointer to a live T and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Run the sink until the spec's limits or `stop`.
pub fn run(spec: &SinkSpec, stop: &AtomicBool) -> Result<SinkReport, PktgenError> {
    let name = spec.bind.to_string();
    let io_err = |what| {
        let name = name.clone();
        move |source| PktgenError::Io {
            what,
            ifname: name,
            source,
        }
    };
    // SAFETY: plain socket(2) call.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io_err("UDP socket")(io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &RCVBUF).is_err() {
        let _ = setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &RCVBUF);
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv).map_err(io_err("SO_RCVTIMEO"))?;
    bind(&fd, spec.bind).map_err(io_err("bind"))?;
    eprintln!("pktgen sink: listening on {}", spec.bind);

    let batch = spec.batch;
    let mut bufs = vec![0u8; batch * SLOT];
    let mut iov: Vec<libc::iovec> = (0..batch)
        .map(|i| libc::iovec {
            // SAFETY: i * SLOT is inside bufs.
            iov_base: unsafe { bufs.as_mut_ptr().add(i * SLOT) }.cast(),
            iov_len: SLOT,
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = (0..batch)
        .map(|i| {
            // SAFETY: all-zero is a valid msghdr.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            // SAFETY: i < iov.len().
            h.msg_hdr.msg_iov = unsafe { iov.as_mut_ptr().add(i) };
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();

    let start = Instant::now();
    let deadline = spec.duration.map(|d| start + d);
    let mut gaps = Gaps::new();
    let (mut datagrams, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    let (mut lat_sum, mut lat_n, mut lat_max) = (0u128, 0u64, 0u64);
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed)
            || deadline.is_some_and(|d| now >= d)
            || spec.count.is_some_and(|c| datagrams >= c)
            || spec
                .idle
                .zip(last)
                .is_some_and(|(idle, l)| now.duration_since(l) >= idle)
        {
            break;
        }
        for m in msgs.iter_mut() {
            m.msg_len = 0;
        }
        // SAFETY: msgs are valid headers over live buffers; no timeout pointer.
        let rc = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                batch as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => continue,
                _ => {
                    errors += 1;
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
        }
        let t = Instant::now();
        let now_ns = monotonic_ns();
        first.get_or_insert(t);
        last = Some(t);
        for (i, m) in msgs.iter().take(rc as usize).enumerate() {
            let len = m.msg_len as usize;
            datagrams += 1;
            bytes += len as u64;
            let payload = &bufs[i * SLOT..i * SLOT + len.min(SLOT)];
            if let Some(ts) = gaps.see(payload) {
                let d = now_ns.saturating_sub(ts);
                lat_sum += u128::from(d);
                lat_n += 1;
                lat_max = lat_max.max(d);
            }
        }
    }
    let seconds = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    Ok(SinkReport {
        datagrams,
        bytes,
        seconds,
        gaps,
        one_way_mean_us: if lat_n > 0 {
            (lat_sum / u128::from(lat_n)) as f64 / 1e3
        } else {
            0.0
        },
        one_way_max_us: lat_max as f64 / 1e3,
        recv_errors: errors,
    })
}

fn bind(fd: &OwnedFd, a: SocketAddrV4) -> io::Result<()> {
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a live sockaddr_in and its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(seq: u64, stream: u16) -> Vec<u8> {
        let mut p = vec![0u8; 18];
        p[0..8].copy_from_slice(&seq.to_be_bytes());
        p[8..16].copy_from_slice(&5u64.to_be_bytes());
        p[16..18].copy_from_slice(&stream.to_be_bytes());
        p
    }

    #[test]
    fn gaps_per_stream() {
        let mut g = Gaps::new();
        for s in [0u64, 1, 2, 5, 6, 4, 9] {
            assert_eq!(g.see(&payload(s, 0)), Some(5));
        }
        // stream 1 interleaved, starting late (first two lost)
        for s in [2u64, 3] {
            g.see(&payload(s, 1));
        }
        assert_eq!(
            g.gaps,
            2 + 2 + 2,
            "3,4 and 7,8 of stream 0; 0,1 of stream 1"
        );
        assert_eq!(g.late, 1, "4 came after 6");
        assert_eq!(g.streams(), 2);
        g.see(&[1, 2, 3]);
        g.see(&payload(1, 300));
        assert_eq!(g.unstamped, 2);
    }
}
