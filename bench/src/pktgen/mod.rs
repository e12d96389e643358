//! `pktgen`: the e2e bench's own UDP/IPv4 generator and sink (issue 11 point 4).
//!
//! Contract:
//! - The sender builds one frame template ([`frame`]) and, per packet, stamps only the
//!   UDP source port (flow), a sequence number, a send timestamp and the UDP checksum
//!   (incrementally, O(1)); IPv4 and UDP checksums are always valid.
//! - Two transmit paths: AF_XDP TX through the dataplane's own [`Port`]
//!   (`xsknet_dataplane::xsk::Port`, copy mode, no XDP program: TX only) in [`xdp`], and
//!   `sendmmsg` on an AF_PACKET socket with qdisc bypass in [`mmsg`]. `--mode auto` tries
//!   AF_XDP and falls back to sendmmsg with a logged, reported reason. Frames larger than
//!   one UMEM frame (minus headroom) go by sendmmsg only.
//! - Rate: max-rate, or `--pps N` paced per batch by a token bucket on the monotonic
//!   clock ([`pace`]): the allowance is computed from absolute elapsed time, so sleeping
//!   never accumulates drift.
//! - The send loops allocate nothing per packet: buffers, descriptors and message
//!   headers are set up before the first packet; per packet they write into them.
//! - Output: one JSON object on stdout (offered packets/bytes, seconds, pps, mode, tx
//!   errors, ring-full events); diagnostics on stderr. The [`sink`] receives with
//!   `recvmmsg` and counts datagrams, bytes and sequence gaps per sender stream.
//! - Errors are typed ([`PktgenError`]); bad arguments are rejected before any socket is
//!   opened, with the accepted range in the message.

#![allow(unsafe_code)]

pub mod args;
pub mod frame;
pub mod mmsg;
pub mod pace;
pub mod sink;
pub mod xdp;

use std::io;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

pub use args::{ArgError, Mode, SendArgs, SendSpec, SinkArgs, SinkSpec};
pub use frame::{Frame, FrameError, Stamp};
pub use pace::Pacer;

/// Errors of the generator and the sink.
#[derive(Debug, thiserror::Error)]
pub enum PktgenError {
    #[error(transparent)]
    Args(#[from] ArgError),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("AF_XDP port on {ifname}: {source}")]
    Xdp {
        ifname: String,
        source: xsknet_dataplane::xsk::PortError,
    },
    #[error("{what} on {ifname}: {source}")]
    Io {
        what: &'static str,
        ifname: String,
        source: io::Error,
    },
    #[error("interface {0} not found (run pktgen inside the pod's namespace: ip netns exec NS pktgen ...)")]
    NoSuchInterface(String),
    #[error("frame of {size} bytes exceeds {ifname}'s MTU {mtu} + 14 (raise the MTU or use a smaller --size)")]
    OverMtu {
        size: usize,
        ifname: String,
        mtu: u32,
    },
}

/// What a send loop reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxReport {
    /// Frames the kernel accepted (AF_XDP: put on the TX ring and completed; mmsg:
    /// counted by sendmmsg).
    pub packets: u64,
    pub bytes: u64,
    /// Failed sends (errno other than back-pressure; AF_XDP invalid descriptors).
    pub tx_errors: u64,
    /// Back-pressure events: no free UMEM frame / full socket buffer (ENOBUFS, EAGAIN).
    pub ring_full: u64,
}

/// When a send loop stops: a deadline, a packet count, or a signal (whichever first).
#[derive(Debug)]
pub struct Limits<'a> {
    pub deadline: Option<Instant>,
    pub count: Option<u64>,
    pub stop: &'a AtomicBool,
}

impl Limits<'_> {
    /// Packets still allowed by `--count` after `sent` (u64::MAX without a count).
    #[inline]
    pub fn remaining(&self, sent: u64) -> u64 {
        self.count.map_or(u64::MAX, |c| c.saturating_sub(sent))
    }

    /// True when the loop must end (checked once per batch).
    #[inline]
    pub fn done(&self, now: Instant, sent: u64) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
            || self.deadline.is_some_and(|d| now >= d)
            || self.remaining(sent) == 0
    }
}

/// CLOCK_MONOTONIC in nanoseconds (the clock `Instant` uses; the vDSO serves it without
/// a syscall). Shared by sender and sink on one machine, whatever their netns.
#[inline]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Index of interface `name` in the current network namespace.
pub fn ifindex(name: &str) -> Result<u32, PktgenError> {
    let c = std::ffi::CString::new(name).map_err(|_| PktgenError::NoSuchInterface(name.into()))?;
    // SAFETY: a NUL-terminated string that lives across the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(PktgenError::NoSuchInterface(name.into()));
    }
    Ok(i)
}

/// MTU of interface `name` (sysfs of the current netns: `ip netns exec` remounts /sys).
pub fn mtu(name: &str) -> Result<u32, PktgenError> {
    let p = format!("/sys/class/net/{name}/mtu");
    let s = std::fs::read_to_string(&p).map_err(|_| PktgenError::NoSuchInterface(name.into()))?;
    s.trim()
        .parse()
        .map_err(|_| PktgenError::NoSuchInterface(name.into()))
}

/// MAC address of interface `name` (sysfs).
pub fn mac_of(name: &str) -> Result<[u8; 6], PktgenError> {
    let p = format!("/sys/class/net/{name}/address");
    let s = std::fs::read_to_string(&p).map_err(|_| PktgenError::NoSuchInterface(name.into()))?;
    args::parse_mac(s.trim()).ok_or_else(|| PktgenError::NoSuchInterface(name.into()))
}

/// Pin the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sleep until `pacer` allows the next packet (short waits spin, longer ones sleep;
/// the pacer works from absolute time, so an oversleep is caught up, not lost).
pub fn wait_for_tokens(pacer: &Pacer, now: Instant) {
    let d = pacer.next_token_in(now);
    if d > std::time::Duration::from_micros(50) {
        std::thread::sleep(d);
    } else {
        std::hint::spin_loop();
    }
}
