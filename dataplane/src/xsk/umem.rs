//! A port's UMEM: one anonymous mapping divided into equal power-of-two frames.
//!
//! Frames are identified by their base offset; a descriptor's `addr` may point inside a
//! frame (the kernel adds XDP headroom on RX), and `addr & !(frame_size-1)` gives the
//! frame back. Access is checked here once so that slices handed out can never cross a
//! frame or the mapping.

use std::io;
use std::ptr::NonNull;

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

    /// The writable bytes of a frame from `addr` to its end.
    ///
    /// # Safety
    /// The frame must be owned by userspace (not in the fill or TX ring), and no other
    /// slice of the same frame may be alive.
    #[inline]
    #[allow(
        clippy::mut_from_ref,
        reason = "frames are handed out by ring ownership, not by borrows"
    )]
    pub unsafe fn frame_mut(&self, addr: u64) -> &mut [u8] {
        let room = self.room(addr).unwrap_or(0);
        let addr = if room == 0 { 0 } else { addr as usize };
        // SAFETY: [addr, addr+room) lies inside one frame of the mapping (room()
        // checked it); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(addr), room) }
    }
}

impl Drop for FrameArea {
    fn drop(&mut self) {
        // SAFETY: we own the mapping; nothing refers to it once the port (which drops
        // its socket and UMEM registration first) is gone.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
