//! [`Segment`]: the storage of one local-tier value, a memfd mapped
//! `MAP_SHARED` into the host, page-aligned and sparse until touched.
//!
//! The memfd only ever grows: Faaslets map its pages into their linear
//! memories, and a page past the end of a truncated file would raise
//! `SIGBUS` there.
//!
//! Other mappings of the same memfd (a Faaslet's view of the value inside
//! its linear memory) may write these pages at any time, so the host never
//! forms a Rust reference over them: every access is a raw-pointer copy.

use crate::error::StateError;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The host page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

fn os_err(what: &str) -> StateError {
    StateError::Os(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// A memfd of `cap` bytes (a multiple of the page size) mapped at `ptr`.
#[derive(Debug)]
pub struct Segment {
    fd: OwnedFd,
    ptr: *mut u8,
    cap: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; access
// is by raw-pointer copies under the owner's lock.
unsafe impl Send for Segment {}
// SAFETY: as above; `&Segment` only allows raw copies, which tolerate
// concurrent writers through other mappings.
unsafe impl Sync for Segment {}

impl Segment {
    /// An empty segment (no pages yet).
    pub fn new() -> Result<Segment, StateError> {
        // SAFETY: the name is a NUL-terminated literal.
        let fd = unsafe { libc::memfd_create(c"faaslet-state".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(os_err("memfd_create"));
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Segment {
            fd,
            ptr: std::ptr::null_mut(),
            cap: 0,
        })
    }

    /// The memfd, for mapping the value elsewhere.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Bytes mapped (a multiple of the page size).
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Makes the segment at least `len` bytes (rounded up to pages). New
    /// pages read as zero and take no memory until written.
    pub fn grow(&mut self, len: usize) -> Result<(), StateError> {
        if len <= self.cap {
            return Ok(());
        }
        let page = page_size();
        let cap = len
            .checked_next_multiple_of(page)
            .ok_or(StateError::ValueTooLarge { len: len as u64 })?;
        // SAFETY: ftruncate on a memfd we own.
        if unsafe { libc::ftruncate(self.fd.as_raw_fd(), cap as libc::off_t) } != 0 {
            return Err(os_err("ftruncate"));
        }
        let p = if self.ptr.is_null() {
            // SAFETY: a fresh shared mapping of our memfd, placed by the kernel.
            unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    cap,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    self.fd.as_raw_fd(),
                    0,
                )
            }
        } else {
            // SAFETY: `ptr..ptr+cap` is our own mapping; MAYMOVE lets the
            // kernel move it, and nothing holds references into it.
            unsafe { libc::mremap(self.ptr.cast(), self.cap, cap, libc::MREMAP_MAYMOVE) }
        };
        if p == libc::MAP_FAILED {
            return Err(StateError::OutOfMemory { bytes: cap as u64 });
        }
        self.ptr = p.cast();
        self.cap = cap;
        Ok(())
    }

    /// Copies `buf.len()` bytes from `offset` into `buf`.
    ///
    /// # Panics
    /// Never for in-range arguments; the caller checks the range (an
    /// out-of-range copy is refused with an assertion, not performed).
    pub fn read(&self, offset: usize, buf: &mut [u8]) {
        // SAFETY: `buf` is writable host memory of `buf.len()` bytes that
        // no mapping of the segment overlaps (it is a Rust slice).
        unsafe { self.read_raw(offset, buf.as_mut_ptr(), buf.len()) }
    }

    /// Copies `len` bytes from `offset` to `dst`, by a raw copy that
    /// tolerates other threads writing either side (the destination is
    /// typically guest memory).
    ///
    /// # Safety
    /// `dst .. dst + len` must be writable for the duration of the call,
    /// and must not be this segment's own host mapping.
    ///
    /// # Panics
    /// If `offset + len` is past the segment's capacity (the caller checks
    /// the range; an out-of-range copy is refused, never performed).
    pub unsafe fn read_raw(&self, offset: usize, dst: *mut u8, len: usize) {
        assert!(offset.checked_add(len).is_some_and(|e| e <= self.cap));
        if len == 0 {
            return;
        }
        // SAFETY: the source range is inside our mapping (checked above);
        // it may be written concurrently through another mapping, which a
        // byte copy tolerates; the caller vouches for `dst`, which is not
        // our own mapping, so the two virtual ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), dst, len) }
    }

    /// Copies `data` in at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) {
        // SAFETY: `data` is readable host memory, not our own mapping.
        unsafe { self.write_raw(offset, data.as_ptr(), data.len()) }
    }

    /// Copies `len` bytes at `src` in at `offset` (see
    /// [`read_raw`](Self::read_raw)).
    ///
    /// # Safety
    /// `src .. src + len` must be readable for the duration of the call,
    /// and must not be this segment's own host mapping.
    ///
    /// # Panics
    /// If `offset + len` is past the segment's capacity.
    pub unsafe fn write_raw(&self, offset: usize, src: *const u8, len: usize) {
        assert!(offset.checked_add(len).is_some_and(|e| e <= self.cap));
        if len == 0 {
            return;
        }
        // SAFETY: the destination range is inside our mapping (checked
        // above); the caller vouches for `src`, which is not our mapping.
        unsafe { std::ptr::copy_nonoverlapping(src, self.ptr.add(offset), len) }
    }

    /// Zeroes `offset..offset+len` (releasing whole pages to the kernel).
    pub fn zero(&self, offset: usize, len: usize) {
        assert!(offset.checked_add(len).is_some_and(|e| e <= self.cap));
        if len == 0 {
            return;
        }
        let page = page_size();
        let first = offset.next_multiple_of(page);
        let last = (offset + len) / page * page;
        if first < last {
            // SAFETY: punching a hole in our memfd inside its size.
            unsafe {
                libc::fallocate(
                    self.fd.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    first as libc::off_t,
                    (last - first) as libc::off_t,
                );
            }
        }
        let head_end = first.min(offset + len);
        // SAFETY: inside our mapping (checked above).
        unsafe { std::ptr::write_bytes(self.ptr.add(offset), 0, head_end - offset) };
        if last >= first && last < offset + len {
            // SAFETY: inside our mapping (checked above).
            unsafe { std::ptr::write_bytes(self.ptr.add(last), 0, offset + len - last) };
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: our own mapping, unmapped once.
            unsafe { libc::munmap(self.ptr.cast(), self.cap) };
        }
    }
}
