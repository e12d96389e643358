//! Opening a port: validation, libxdp UMEM and socket creation, the copy-mode TX
//! budget, and the ring views over the kernel's (or the fake) rings.

use super::*;

/// The kernel objects behind a real port.
#[derive(Debug)]
pub(super) struct RealXsk {
    xsk: NonNull<libxdp_sys::xsk_socket>,
    umem: NonNull<libxdp_sys::xsk_umem>,
    // libxdp keeps pointers to these and reads them again in xsk_socket__delete, so
    // they live in boxes that outlive the socket (dropped after Drop::drop runs).
    _fill: Box<libxdp_sys::xsk_ring_prod>,
    _comp: Box<libxdp_sys::xsk_ring_cons>,
    _rx: Box<libxdp_sys::xsk_ring_cons>,
    _tx: Box<libxdp_sys::xsk_ring_prod>,
    /// Owned by libxdp (closed by `xsk_socket__delete`), so kept raw and lent out only
    /// as a `BorrowedFd` bound to the port.
    pub(super) fd: RawFd,
}

// SAFETY: the socket and UMEM handles are only used by the owning worker (and deleted
// by it on drop); libxdp has no thread affinity for them.
unsafe impl Send for RealXsk {}

impl Drop for RealXsk {
    fn drop(&mut self) {
        // SAFETY: both pointers came from successful libxdp create calls and are
        // deleted exactly once, socket first (it holds a UMEM reference).
        unsafe {
            libxdp_sys::xsk_socket__delete(self.xsk.as_ptr());
            libxdp_sys::xsk_umem__delete(self.umem.as_ptr());
        }
    }
}

fn ring_raw_prod<T>(r: &libxdp_sys::xsk_ring_prod) -> Option<RingRaw<T>> {
    Some(RingRaw {
        producer: NonNull::new(r.producer.cast())?,
        consumer: NonNull::new(r.consumer.cast())?,
        flags: NonNull::new(r.flags.cast())?,
        ring: NonNull::new(r.ring.cast())?,
        size: r.size,
    })
}

fn ring_raw_cons<T>(r: &libxdp_sys::xsk_ring_cons) -> Option<RingRaw<T>> {
    Some(RingRaw {
        producer: NonNull::new(r.producer.cast())?,
        consumer: NonNull::new(r.consumer.cast())?,
        flags: NonNull::new(r.flags.cast())?,
        ring: NonNull::new(r.ring.cast())?,
        size: r.size,
    })
}

impl Port {
    fn validate(ifname: &str, cfg: &PortConfig) -> Result<(), PortError> {
        let bad = |what| {
            Err(PortError::Config {
                ifname: ifname.to_string(),
                what,
            })
        };
        if !cfg.ring_size.is_power_of_two() || cfg.ring_size < 64 {
            return bad("ring size must be a power of two ≥ 64");
        }
        if cfg.frames < cfg.ring_size * 2 - cfg.ring_size / 16 {
            return bad("frames must be at least twice the ring size (fill ring + TX)");
        }
        if !cfg.frame_size.is_power_of_two() || !(2048..=4096).contains(&cfg.frame_size) {
            return bad("frame size must be 2048 or 4096");
        }
        Ok(())
    }

    /// Open a real AF_XDP socket (copy mode, need_wakeup) on `ifname` queue `queue`.
    /// No XDP program is loaded here: the loader attaches ours and registers the fd.
    pub fn open(
        id: PortId,
        ifname: &str,
        queue: u32,
        cfg: &PortConfig,
        counters: Arc<[PortCounters]>,
    ) -> Result<Port, PortError> {
        Self::open_bound(id, ifname, queue, cfg, counters, false)
    }

    /// [`open`](Self::open), in zero-copy mode when `zero_copy` (the driver must
    /// support it for this queue, or the bind fails and says so).
    pub fn open_bound(
        id: PortId,
        ifname: &str,
        queue: u32,
        cfg: &PortConfig,
        counters: Arc<[PortCounters]>,
        zero_copy: bool,
    ) -> Result<Port, PortError> {
        let copy_flag = if zero_copy {
            libxdp_sys::XDP_ZEROCOPY
        } else {
            libxdp_sys::XDP_COPY
        };
        Self::validate(ifname, cfg)?;
        let name = CString::new(ifname).map_err(|_| PortError::Config {
            ifname: ifname.to_string(),
            what: "interface name contains NUL",
        })?;
        let area =
            FrameArea::new(cfg.frames, cfg.frame_size).map_err(|source| PortError::Umem {
                ifname: ifname.to_string(),
                source,
            })?;
        // SAFETY: plain C structs of integers and pointers; all-zero is their
        // documented "not yet created" state.
        let (mut fill, mut comp, mut rx, mut tx) = unsafe {
            (
                Box::new(std::mem::zeroed::<libxdp_sys::xsk_ring_prod>()),
                Box::new(std::mem::zeroed::<libxdp_sys::xsk_ring_cons>()),
                Box::new(std::mem::zeroed::<libxdp_sys::xsk_ring_cons>()),
                Box::new(std::mem::zeroed::<libxdp_sys::xsk_ring_prod>()),
            )
        };
        let ucfg = libxdp_sys::xsk_umem_config {
            fill_size: cfg.ring_size,
            comp_size: cfg.ring_size,
            frame_size: cfg.frame_size,
            frame_headroom: 0,
            flags: 0,
        };
        let mut umem: *mut libxdp_sys::xsk_umem = std::ptr::null_mut();
        // SAFETY: the area is a live mapping of area.len() bytes that outlives the UMEM
        // (field order in Port); fill/comp are boxed and outlive it too (RealXsk).
        let rc = unsafe {
            libxdp_sys::xsk_umem__create(
                &mut umem,
                area.as_ptr().cast(),
                area.len() as u64,
                &mut *fill,
                &mut *comp,
                &ucfg,
            )
        };
        let umem = match NonNull::new(umem) {
            Some(u) if rc == 0 => u,
            _ => {
                return Err(PortError::UmemRegister {
                    ifname: ifname.to_string(),
                    source: io::Error::from_raw_os_error(-rc.min(-1)),
                })
            }
        };
        let scfg = libxdp_sys::xsk_socket_config {
            rx_size: cfg.ring_size,
            tx_size: cfg.ring_size,
            __bindgen_anon_1: libxdp_sys::xsk_socket_config__bindgen_ty_1 {
                libxdp_flags: libxdp_sys::XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
            },
            xdp_flags: 0,
            bind_flags: (libxdp_sys::XDP_USE_NEED_WAKEUP | copy_flag) as u16
                | if cfg.multi_buffer { XDP_USE_SG } else { 0 },
        };
        let mut xsk: *mut libxdp_sys::xsk_socket = std::ptr::null_mut();
        // SAFETY: umem is live; rx/tx are boxed and outlive the socket.
        let rc = unsafe {
            libxdp_sys::xsk_socket__create(
                &mut xsk,
                name.as_ptr(),
                queue,
                umem.as_ptr(),
                &mut *rx,
                &mut *tx,
                &scfg,
            )
        };
        let Some(xsk) = NonNull::new(xsk).filter(|_| rc == 0) else {
            // SAFETY: created above, no socket uses it.
            unsafe { libxdp_sys::xsk_umem__delete(umem.as_ptr()) };
            return Err(PortError::Socket {
                ifname: ifname.to_string(),
                queue,
                source: io::Error::from_raw_os_error(-rc.min(-1)),
            });
        };
        // SAFETY: xsk is live.
        let fd = unsafe { libxdp_sys::xsk_socket__fd(xsk.as_ptr()) };
        if cfg.tx_budget > 0 {
            set_tx_budget(ifname, fd, cfg.tx_budget);
        }
        let rings = (
            ring_raw_prod(&fill),
            ring_raw_cons(&comp),
            ring_raw_cons(&rx),
            ring_raw_prod(&tx),
        );
        let backing = RealXsk {
            xsk,
            umem,
            _fill: fill,
            _comp: comp,
            _rx: rx,
            _tx: tx,
            fd,
        };
        let (Some(f), Some(c), Some(r), Some(t)) = rings else {
            drop(backing);
            return Err(PortError::Socket {
                ifname: ifname.to_string(),
                queue,
                source: io::Error::other("libxdp returned an unmapped ring"),
            });
        };
        // SAFETY: the rings are mapped until `backing` drops, which happens after the
        // ring views (field order); this port is their only user.
        let (fill, comp, rx, tx) = unsafe {
            (
                RingProd::new(f),
                RingCons::new(c),
                RingCons::new(r),
                RingProd::new(t),
            )
        };
        Ok(Self::assemble(
            id,
            fill,
            comp,
            rx,
            tx,
            cfg,
            counters,
            Backing::Real(backing),
            Arc::new(area),
        ))
    }

    /// A port over in-memory rings (see [`crate::xsk::fake`]).
    pub(crate) fn with_fake_rings(
        id: PortId,
        cfg: &PortConfig,
        counters: Arc<[PortCounters]>,
        rings: Arc<crate::xsk::fake::FakeRings>,
        area: Arc<FrameArea>,
    ) -> Result<Port, PortError> {
        Self::validate("fake", cfg)?;
        // SAFETY: `rings` is kept alive by the Backing for as long as the views; the
        // fake kernel holds the other ends.
        let (fill, comp, rx, tx) = unsafe {
            (
                RingProd::new(rings.fill.raw()),
                RingCons::new(rings.comp.raw()),
                RingCons::new(rings.rx.raw()),
                RingProd::new(rings.tx.raw()),
            )
        };
        Ok(Self::assemble(
            id,
            fill,
            comp,
            rx,
            tx,
            cfg,
            counters,
            Backing::Fake(rings),
            area,
        ))
    }

    #[allow(clippy::too_many_arguments, reason = "private constructor tail")]
    fn assemble(
        id: PortId,
        fill: RingProd<u64>,
        comp: RingCons<u64>,
        rx: RingCons<XdpDesc>,
        tx: RingProd<XdpDesc>,
        cfg: &PortConfig,
        counters: Arc<[PortCounters]>,
        backing: Backing,
        area: Arc<FrameArea>,
    ) -> Port {
        let mut pool = Vec::with_capacity(cfg.frames as usize);
        for i in (0..cfg.frames as u64).rev() {
            pool.push(i * cfg.frame_size as u64);
        }
        let mut port = Port {
            id,
            fill,
            comp,
            rx,
            tx,
            pool,
            staged: [XdpDesc::default(); TX_STAGE],
            staged_len: 0,
            staged_bytes: 0,
            staged_chain: false,
            ring_size: cfg.ring_size,
            counters,
            chain: [XdpDesc::default(); CHAIN_STORE],
            chain_used: 0,
            backing,
            area,
        };
        port.refill();
        port
    }
}

/// `XDP_MAX_TX_SKB_BUDGET` (uapi `if_xdp.h`, Linux 6.17+).
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// Raise the copy-mode TX budget of a socket. A kernel without the option (or one that
/// refuses the value) keeps its default of 32; that is logged, not an error.
fn set_tx_budget(ifname: &str, fd: RawFd, budget: u32) {
    // SAFETY: setsockopt reads size_of::<u32>() bytes from `budget`.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            (&budget as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::warn!(
            ifname,
            budget,
            error = %io::Error::last_os_error(),
            "XDP_MAX_TX_SKB_BUDGET not applied; the kernel's default TX budget stays"
        );
    }
}
