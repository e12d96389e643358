//! AF_XDP TX with the dataplane's own port (`xsknet_dataplane::xsk::Port`): copy mode,
//! queue 0, no XDP program (TX needs none; the RX and fill rings stay idle).
//!
//! Frame budget: the port parks `ring_size` frames on the fill ring at open; the rest
//! (`frames - ring_size`, fewer than the TX ring holds) are the TX frames, so the TX
//! ring can never be full when a batch is flushed and the port never drops a staged
//! frame: back-pressure shows up as "no free frame" (counted as `ring_full`), which
//! the loop answers by kicking the kernel and reaping completions.
//!
//! Every TX frame is primed with the template once at open; per packet the loop only
//! stamps it ([`Frame::stamp`]) and stages its descriptor: no allocation, and syscalls
//! only as ring wakeups (the port's `sendto` kicks, per batch).

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xsknet_dataplane::counters::{DropReason, PortCounters};
use xsknet_dataplane::xsk::port::xdp_statistics;
use xsknet_dataplane::xsk::{Port, PortConfig, XdpDesc, HEADROOM};

use super::{monotonic_ns, wait_for_tokens, Frame, Limits, Pacer, PktgenError, Stamp, TxReport};

/// Entries of each ring.
pub const RING_SIZE: u32 = 2048;

/// The port geometry for frames of `len` bytes: 2 KiB UMEM frames when the frame and
/// the headroom fit, else 4 KiB; the smallest frame count the port accepts.
pub fn port_config(len: usize) -> PortConfig {
    let frame_size = if len + HEADROOM <= 2048 { 2048 } else { 4096 };
    PortConfig {
        frames: RING_SIZE * 2 - RING_SIZE / 16,
        frame_size,
        ring_size: RING_SIZE,
        // The kernel's copy-mode default (32 frames per wakeup), as the datapaths get.
        tx_budget: 0,
        // One frame per packet: larger frames go by sendmmsg (see the module contract).
        multi_buffer: false,
    }
}

/// An open AF_XDP sender.
#[derive(Debug)]
pub struct XdpSender {
    port: Port,
    counters: Arc<[PortCounters]>,
    /// Frames available for TX (the pool after the fill ring took its share).
    tx_frames: usize,
    kick_errors: u64,
}

impl XdpSender {
    /// Open the socket on `dev` queue 0 and prime every TX frame with the template.
    pub fn open(dev: &str, frame: &Frame) -> Result<XdpSender, PktgenError> {
        let cfg = port_config(frame.len());
        if frame.len() + HEADROOM > cfg.frame_size as usize {
            return Err(PktgenError::Args(super::ArgError::XdpFrameTooBig {
                size: frame.len(),
            }));
        }
        let counters: Arc<[PortCounters]> = Arc::from(vec![PortCounters::default()]);
        let mut port = Port::open(0, dev, 0, &cfg, Arc::clone(&counters)).map_err(|source| {
            PktgenError::Xdp {
                ifname: dev.to_string(),
                source,
            }
        })?;
        let n = port.pool_len();
        let mut addrs = Vec::with_capacity(n);
        while let Some(a) = port.alloc() {
            addrs.push(a);
        }
        for &a in &addrs {
            let (chunk, off) = port.chunk_mut(a);
            chunk[off..off + frame.len()].copy_from_slice(frame.template());
        }
        for a in addrs {
            port.recycle(a);
        }
        Ok(XdpSender {
            port,
            counters,
            tx_frames: n,
            kick_errors: 0,
        })
    }

    /// Wake the kernel's copy-mode TX (it transmits only inside this call).
    fn kick(&mut self) {
        let Some(fd) = self.port.fd() else { return };
        // SAFETY: sendto with no buffer on our own AF_XDP socket is the documented TX
        // wakeup; nothing is read or written through the null pointers.
        let rc = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error().raw_os_error();
            // back-pressure answers, not errors
            if !matches!(
                e,
                Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR)
            ) {
                self.kick_errors += 1;
            }
        }
    }

    /// Send until `limits` say stop; then wait (≤ 1 s) for the kernel to complete what
    /// is in flight. Returns the counts and the instant the send loop ended.
    pub fn run(
        &mut self,
        frame: &Frame,
        pacer: &mut Pacer,
        limits: &Limits<'_>,
        batch: usize,
    ) -> (TxReport, Instant) {
        let len = frame.len() as u32;
        let flows = frame.flows();
        let mut seq = 0u64;
        let mut flow = 0u16;
        let mut ring_full = 0u64;
        loop {
            let now = Instant::now();
            if limits.done(now, seq) {
                break;
            }
            self.port.reap();
            let want = (batch as u64).min(limits.remaining(seq));
            let g = pacer.grant(now, want);
            if g == 0 {
                wait_for_tokens(pacer, now);
                continue;
            }
            let ts_ns = monotonic_ns();
            let mut n = 0;
            while n < g {
                let Some(addr) = self.port.alloc() else { break };
                let (chunk, off) = self.port.chunk_mut(addr);
                frame.stamp(&mut chunk[off..], Stamp { seq, ts_ns, flow });
                self.port.stage_tx(XdpDesc {
                    addr,
                    len,
                    options: 0,
                });
                seq += 1;
                flow += 1;
                if flow == flows {
                    flow = 0;
                }
                n += 1;
            }
            self.port.flush_tx();
            if n < g {
                pacer.refund(g - n);
                ring_full += 1;
                self.kick();
            }
        }
        let end = Instant::now();
        let deadline = end + Duration::from_secs(1);
        loop {
            self.port.reap();
            if self.port.pool_len() >= self.tx_frames || Instant::now() >= deadline {
                break;
            }
            self.kick();
            std::thread::yield_now();
        }
        let c = &self.counters[0];
        let in_flight = self.tx_frames.saturating_sub(self.port.pool_len()) as u64;
        let put = c.tx_packets.load(std::sync::atomic::Ordering::Relaxed);
        let packets = put.saturating_sub(in_flight);
        let invalid = self
            .port
            .fd()
            .and_then(|fd| xdp_statistics(fd).ok())
            .map_or(0, |s| s.tx_invalid_descs);
        let dropped =
            c.drops[DropReason::TxRingFull as usize].load(std::sync::atomic::Ordering::Relaxed);
        (
            TxReport {
                packets,
                bytes: packets * u64::from(len),
                tx_errors: invalid + dropped + self.kick_errors + in_flight,
                ring_full,
            },
            end,
        )
    }
}
