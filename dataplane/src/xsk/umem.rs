//! A port's UMEM: one anonymous mapping divided into equal power-of-two frames.
//!
//! Frames are identified by their base offset; a descriptor's `addr` may point inside a
//! frame (the kernel adds XDP headroom on RX), and `addr & !(frame_size-1)` gives the
//! frame back. Access is checked here once so that regions handed out can never cross a
//! frame or the mapping.
//!
//! Every packet has [`HEADROOM`] bytes of its frame in front of it: the kernel leaves
//! `XDP_PACKET_HEADROOM` before received data, and frames the dataplane builds start at
//! the same offset, so a stage can write an outer header (VXLAN) in place.
//!
//! This type hands out raw regions only ([`FrameArea::region`]): which side (the port,
//! or the fake kernel) may touch a frame is decided by ring ownership, not by Rust
//! borrows of the area, so the slices are built by the owner of the frame (`Port`
//! through `&mut self` for writes) with its own `SAFETY` argument.

use std::io;
use std::ptr::NonNull;

/// Bytes in front of every packet: the kernel's `XDP_PACKET_HEADROOM` on RX, and where
/// the dataplane writes the frames it builds. Room for an outer Ethernet/IPv4/UDP/VXLAN
/// header (50 bytes) with plenty to spare.
pub const HEADROOM: usize = 256;

/// The mapping behind a UMEM.
#[derive(Debug)]
pub struct FrameArea {
    base: NonNull<u8>,
    len: usize,
    frame_size: u32,
    frames: u32,
}

// SAFETY: the mapping is plain memory owned by this value; the worker that owns the
// port is the only thread touching it (the kernel side synchronises through rings).
unsafe impl Send for FrameArea {}
// SAFETY: shared (Arc) between a port and its fake kernel only; which side may touch a
// frame is decided by ring ownership, so no frame is accessed from two threads at once.
unsafe impl Sync for FrameArea {}

impl FrameArea {
    /// Map `frames` frames of `frame_size` bytes (a power of two), populated.
    pub fn new(frames: u32, frame_size: u32) -> io::Result<Self> {
        if !frame_size.is_power_of_two() || frame_size < 2048 || frames == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame size must be a power of two ≥ 2048",
            ));
        }
        let len = frames as usize * frame_size as usize;
        // SAFETY: anonymous private mapping; no file or existing memory is involved.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(FrameArea {
            base,
            len,
            frame_size,
            frames,
        })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Base offset of the frame holding `addr`.
    #[inline]
    pub fn frame_of(&self, addr: u64) -> u64 {
        addr & !(self.frame_size as u64 - 1)
    }

    /// Bytes from `addr` to the end of its frame, or `None` if `addr` is outside.
    #[inline]
    pub fn room(&self, addr: u64) -> Option<usize> {
        if addr >= self.len as u64 {
            return None;
        }
        Some((self.frame_of(addr) + self.frame_size as u64 - addr) as usize)
    }

    /// The region of the frame holding `addr`: a pointer to its first byte and the
    /// frame size, plus the offset of `addr` inside it. An `addr` outside the mapping
    /// yields an empty region at the base (offset 0, length 0).
    #[inline]
    pub fn region(&self, addr: u64) -> (NonNull<u8>, usize, usize) {
        if self.room(addr).is_none() {
            return (self.base, 0, 0);
        }
        let base = self.frame_of(addr);
        // SAFETY: base < len (room() checked addr, and base <= addr), so the offset
        // stays inside the mapping; pointer arithmetic only, nothing is dereferenced.
        let ptr = unsafe { self.base.add(base as usize) };
        (ptr, self.frame_size as usize, (addr - base) as usize)
    }
}

impl Drop for FrameArea {
    fn drop(&mut self) {
        // SAFETY: we own the mapping; nothing refers to it once the port (which drops
        // its socket and UMEM registration first) is gone.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
