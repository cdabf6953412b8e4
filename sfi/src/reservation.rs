//! The bottom layer: address-space reservations and the system calls on
//! them.
//!
//! A [`Reservation`] is a large range of virtual address space mapped
//! `PROT_NONE` and `MAP_NORESERVE`: it costs page-table entries only when
//! parts of it are made accessible and touched. This module owns every
//! `mmap`, `mprotect`, `madvise` and `munmap` on a reservation's range, and
//! the page arithmetic they need ([`host_page_size`], page rounding, range
//! checks); the layers above ([`pool`](crate::pool),
//! [`image`](crate::image), [`memory`](crate::memory)) only call the
//! methods and functions here.
//!
//! It knows nothing about what is built on top. A reservation taken from a
//! [`ReservationPool`](crate::ReservationPool) goes back there on drop
//! through the crate-private `Recycle` hook, which the pool implements;
//! [`Reservation::new`], which draws from the process-wide pool, is
//! therefore defined in [`pool`](crate::pool), and this module only
//! provides the unpooled constructors.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Errors from reserving, protecting or growing memory.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum MemoryError {
    /// `mmap` failed.
    #[error("mmap of {len} bytes failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Mmap {
        /// Bytes requested (including any guard page).
        len: usize,
        /// The OS error number.
        errno: i32,
    },
    /// `mprotect` failed.
    #[error("mprotect of {len} bytes at offset {offset:#x} failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Protect {
        /// Offset into the reservation.
        offset: usize,
        /// Length of the range.
        len: usize,
        /// The OS error number.
        errno: i32,
    },
    /// `madvise` failed.
    #[error("madvise of {len} bytes at offset {offset:#x} failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Advise {
        /// Offset into the reservation.
        offset: usize,
        /// Length of the range.
        len: usize,
        /// The OS error number.
        errno: i32,
    },
    /// A size exceeds a limit (a memory's maximum or its reservation).
    #[error("requested {requested} bytes, limit is {limit}")]
    TooLarge {
        /// The size that was asked for.
        requested: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// A range does not lie within the reservation (or overflows).
    #[error(
        "range at offset {offset:#x} of {len} bytes is outside a reservation of {reserved} bytes"
    )]
    OutOfBounds {
        /// Offset into the reservation.
        offset: usize,
        /// Length of the range.
        len: usize,
        /// Size of the reservation.
        reserved: usize,
    },
    /// An offset is not aligned to the host page size.
    #[error("offset {offset:#x} is not aligned to the host page size {page_size}")]
    Unaligned {
        /// The offending offset.
        offset: usize,
        /// The host page size.
        page_size: usize,
    },
    /// A linear memory was asked to shrink. (The one variant only the
    /// [`memory`](crate::memory) layer returns; it lives here because the
    /// error type is shared by every layer.)
    #[error("cannot shrink a linear memory from {current} to {requested} bytes")]
    Shrink {
        /// The current accessible length.
        current: usize,
        /// The requested length.
        requested: usize,
    },
    /// A file to be mapped shared is shorter than the mapping would be
    /// (touching a page past its end would raise `SIGBUS`).
    #[error("a shared mapping of {len} bytes needs a file that long; it has {file_len} bytes")]
    FileTooShort {
        /// Bytes the mapping covers (page-rounded).
        len: usize,
        /// The file's size.
        file_len: u64,
    },
    /// A shared mapping must lie within the accessible part of a memory.
    #[error("a shared mapping at {offset:#x} of {len} bytes lies outside the {accessible} accessible bytes")]
    NotAccessible {
        /// Offset into the memory.
        offset: usize,
        /// Bytes the mapping covers (page-rounded).
        len: usize,
        /// Accessible bytes of the memory.
        accessible: usize,
    },
    /// Write tracking of a shared mapping failed or is unavailable
    /// (errno 0: this kernel does not track; see `writes::available`).
    #[error("write tracking of {len} bytes failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Track {
        /// Bytes of the range.
        len: usize,
        /// The OS error number (0: not available).
        errno: i32,
    },
    /// `fstat` of a file to be mapped failed.
    #[error("fstat failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Stat {
        /// The OS error number.
        errno: i32,
    },
}

/// The calling thread's last OS error number (0 if none).
pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The host's page size (usually 4 KiB on x86_64; 4, 16 or 64 KiB on aarch64).
pub fn host_page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let p = PAGE.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let p = if p > 0 { p as usize } else { 4096 };
    PAGE.store(p, Ordering::Relaxed);
    p
}

/// Rounds `n` up to a multiple of the host page size, or `None` on overflow.
pub(crate) fn round_up_to_page(n: usize) -> Option<usize> {
    let page = host_page_size();
    n.checked_add(page - 1).map(|x| x & !(page - 1))
}

/// Where a reservation is handed back when dropped, instead of being
/// unmapped: implemented by the pool layer, so that this layer need not
/// know about pools.
pub(crate) trait Recycle: Send + Sync + std::fmt::Debug {
    /// Takes over the mapping of `r`, which is being dropped (with its
    /// recycler already taken off). Returns false if it did not, in which
    /// case `r` is unmapped as usual.
    fn recycle(&self, r: &mut Reservation) -> bool;
}

/// What [`Reservation::map_fixed`] maps over a range.
#[derive(Debug, Clone, Copy)]
pub(crate) enum MapSource<'a> {
    /// Fresh zero anonymous memory (`MAP_PRIVATE | MAP_ANONYMOUS |
    /// MAP_NORESERVE`).
    Anonymous,
    /// The file `fd` from its offset 0, copy-on-write (`MAP_PRIVATE`).
    PrivateFile(BorrowedFd<'a>),
    /// The file `fd` from its offset 0, shared (`MAP_SHARED`): writes
    /// through the mapping go to the file, and every other mapping of it
    /// sees them at once. A shared segment (function state) mapped into a
    /// linear memory.
    SharedFile(BorrowedFd<'a>),
}

/// A range of virtual address space, mapped `PROT_NONE` (and
/// `MAP_NORESERVE`, so it costs no commit charge until made accessible).
///
/// One extra `PROT_NONE` "canary" page sits directly in front of
/// [`base`](Self::base), so that an access just below the reservation also
/// faults rather than landing in a neighbouring mapping.
///
/// The whole mapping (canary included) is unmapped on drop, unless it came
/// from a [`ReservationPool`](crate::ReservationPool), which takes it back.
#[derive(Debug)]
pub struct Reservation {
    /// Start of the mapping (the canary page); null once moved out by
    /// [`take_mapping`](Self::take_mapping).
    mapping: *mut u8,
    /// Length of the mapping including the canary page.
    mapping_len: usize,
    /// Usable bytes after the canary page (page-rounded).
    len: usize,
    /// Bytes of canary in front of the usable range: one page, or 0 for an
    /// [unguarded](Self::new_unguarded) reservation.
    front: usize,
    /// High-water mark, in bytes from [`base`](Self::base), of what was
    /// made accessible (by `make_accessible` or by mapping a memory image)
    /// since the reservation was mapped or last wiped for reuse. Beyond it
    /// everything is still untouched `PROT_NONE`, so recycling only has to
    /// wipe `[0, touched)`.
    touched: AtomicUsize,
    /// Where this reservation goes back to on drop, if anywhere.
    recycle: Option<Arc<dyn Recycle>>,
}

// SAFETY: a Reservation is just an owned address range; nothing about it is
// tied to the creating thread, and all its methods are system calls which
// are thread-safe (its recycler is `Send + Sync`). Access to the *bytes* is
// governed by whoever hands out pointers into it (e.g. `LinearMemory` with
// `&`/`&mut`).
unsafe impl Send for Reservation {}
// SAFETY: see above; `&Reservation` methods only make system calls.
unsafe impl Sync for Reservation {}

impl Reservation {
    /// Maps a brand-new guarded reservation (never from a pool): `len`
    /// bytes rounded up to the host page size, at least one page, after a
    /// canary page.
    pub(crate) fn map_new(len: usize) -> Result<Self, MemoryError> {
        let page = host_page_size();
        let too_large = MemoryError::TooLarge {
            requested: len,
            limit: isize::MAX as usize - page,
        };
        let len = round_up_to_page(len.max(1)).ok_or(too_large.clone())?;
        let mapping_len = len.checked_add(page).ok_or(too_large.clone())?;
        if mapping_len > isize::MAX as usize {
            return Err(too_large);
        }
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address cannot
        // alias any existing Rust object; arguments are valid.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapping_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(MemoryError::Mmap {
                len: mapping_len,
                errno: errno(),
            });
        }
        Ok(Reservation {
            mapping: ptr.cast(),
            mapping_len,
            len,
            front: page,
            touched: AtomicUsize::new(0),
            recycle: None,
        })
    }

    /// Maps `len` bytes (rounded up to the host page size, at least one
    /// page) readable and writable from the start (`MAP_NORESERVE`: only
    /// pages touched cost memory), with no canary page and no guard: for
    /// memories whose every access is checked explicitly. Such mappings
    /// next to each other merge into one kernel mapping, so very many of
    /// them fit under `vm.max_map_count`. Never pooled; unmapped on drop.
    pub fn new_unguarded(len: usize) -> Result<Self, MemoryError> {
        let too_large = MemoryError::TooLarge {
            requested: len,
            limit: isize::MAX as usize,
        };
        let len = round_up_to_page(len.max(1)).ok_or(too_large.clone())?;
        if len > isize::MAX as usize {
            return Err(too_large);
        }
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address cannot
        // alias any existing Rust object; arguments are valid.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(MemoryError::Mmap {
                len,
                errno: errno(),
            });
        }
        Ok(Reservation {
            mapping: ptr.cast(),
            mapping_len: len,
            len,
            front: 0,
            touched: AtomicUsize::new(len),
            recycle: None,
        })
    }

    /// True if the reservation was made by
    /// [`new_unguarded`](Self::new_unguarded) (accessible throughout).
    pub fn is_unguarded(&self) -> bool {
        self.front == 0
    }

    /// The first usable byte (just after the canary page, if any).
    pub fn base(&self) -> *mut u8 {
        // SAFETY: the mapping is `front + len` bytes, so `mapping + front`
        // is in bounds of the same allocation.
        unsafe { self.mapping.add(self.front) }
    }

    /// Usable bytes (a multiple of the host page size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// The whole mapping: the canary page (if any) and the usable bytes,
    /// guard regions included. A memory-access fault of code running in
    /// this reservation's memory has its address here.
    pub fn mapped_range(&self) -> std::ops::Range<usize> {
        let start = self.mapping as usize;
        start..start + self.mapping_len
    }

    /// Always false: a reservation has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Checks that `[offset, offset + len)` lies within the reservation with
    /// `offset` page-aligned, and returns `len` rounded up to whole pages.
    fn check_range(&self, offset: usize, len: usize) -> Result<usize, MemoryError> {
        let page = host_page_size();
        if !offset.is_multiple_of(page) {
            return Err(MemoryError::Unaligned {
                offset,
                page_size: page,
            });
        }
        let oob = MemoryError::OutOfBounds {
            offset,
            len,
            reserved: self.len,
        };
        let rounded = round_up_to_page(len).ok_or(oob.clone())?;
        match offset.checked_add(rounded) {
            Some(end) if end <= self.len => Ok(rounded),
            _ => Err(oob),
        }
    }

    /// Makes `[offset, offset + len)` readable and writable. `offset` must be
    /// page-aligned; `len` is rounded up to whole pages.
    pub fn make_accessible(&self, offset: usize, len: usize) -> Result<(), MemoryError> {
        self.protect(offset, len, libc::PROT_READ | libc::PROT_WRITE)
    }

    /// Discards the contents of `[offset, offset + len)` and makes it
    /// inaccessible again. `offset` must be page-aligned; `len` is rounded up
    /// to whole pages.
    pub fn make_inaccessible(&self, offset: usize, len: usize) -> Result<(), MemoryError> {
        self.discard(offset, len)?;
        self.protect(offset, len, libc::PROT_NONE)
    }

    /// Throws away the contents of `[offset, offset + len)`: the pages read
    /// as zero again and their memory is returned to the OS. Protection is
    /// unchanged. `offset` must be page-aligned; `len` is rounded up to whole
    /// pages.
    pub fn discard(&self, offset: usize, len: usize) -> Result<(), MemoryError> {
        let rounded = self.check_range(offset, len)?;
        if rounded == 0 {
            return Ok(());
        }
        // SAFETY: the range is page-aligned and inside our own mapping
        // (checked above). MADV_DONTNEED on a private anonymous mapping only
        // zero-fills those pages; callers holding references into them are
        // the caller's concern (`LinearMemory` only calls this with `&mut`).
        let rc =
            unsafe { libc::madvise(self.base().add(offset).cast(), rounded, libc::MADV_DONTNEED) };
        if rc != 0 {
            return Err(MemoryError::Advise {
                offset,
                len,
                errno: errno(),
            });
        }
        Ok(())
    }

    fn protect(&self, offset: usize, len: usize, prot: libc::c_int) -> Result<(), MemoryError> {
        let rounded = self.check_range(offset, len)?;
        if rounded == 0 {
            return Ok(());
        }
        if prot != libc::PROT_NONE {
            // Before the call: a failing mprotect may have applied in part.
            self.note_touched(offset + rounded);
        }
        // SAFETY: the range is page-aligned and inside our own mapping
        // (checked above), so this cannot change the protection of memory
        // owned by anyone else.
        let rc = unsafe { libc::mprotect(self.base().add(offset).cast(), rounded, prot) };
        if rc != 0 {
            return Err(MemoryError::Protect {
                offset,
                len,
                errno: errno(),
            });
        }
        Ok(())
    }

    /// Replaces `[offset, offset + len)` with a new mapping of `source`
    /// with protection `prot`: one `mmap(MAP_FIXED)`, whatever was mapped
    /// there before. `offset` must be page-aligned; `len` is rounded up to
    /// whole pages (a file mapping should cover whole pages of its file).
    ///
    /// This is the one place that maps over part of a reservation; the
    /// range check here is what keeps such a mapping from replacing
    /// anything outside it.
    pub(crate) fn map_fixed(
        &self,
        offset: usize,
        len: usize,
        prot: libc::c_int,
        source: MapSource<'_>,
    ) -> Result<(), MemoryError> {
        let rounded = self.check_range(offset, len)?;
        if rounded == 0 {
            return Ok(());
        }
        if prot != libc::PROT_NONE {
            // Before the call: a failing mmap may have replaced the range
            // anyway.
            self.note_touched(offset + rounded);
        }
        let (flags, fd) = match source {
            MapSource::Anonymous => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
            ),
            MapSource::PrivateFile(fd) => (libc::MAP_PRIVATE, fd.as_raw_fd()),
            MapSource::SharedFile(fd) => (libc::MAP_SHARED, fd.as_raw_fd()),
        };
        // SAFETY: the range is page-aligned and inside our own mapping
        // (checked above), so MAP_FIXED replaces nothing owned by anyone
        // else; callers own the reservation and hold no Rust references
        // into that range (a `LinearMemory` calls this with `&mut`, a pool
        // on a reservation being dropped). A file descriptor, if any, is
        // borrowed and so open for the duration of the call.
        let p = unsafe {
            libc::mmap(
                self.base().add(offset).cast(),
                rounded,
                prot,
                flags | libc::MAP_FIXED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(MemoryError::Mmap {
                len: rounded,
                errno: errno(),
            });
        }
        Ok(())
    }
}

impl Reservation {
    /// Records that `[0, end)` may have been made accessible.
    fn note_touched(&self, end: usize) {
        self.touched.fetch_max(end, Ordering::Relaxed);
    }

    /// How many bytes from [`base`](Self::base) may have been made
    /// accessible since the reservation was mapped (or wiped for reuse);
    /// everything beyond is untouched and inaccessible.
    pub fn touched(&self) -> usize {
        self.touched.load(Ordering::Relaxed)
    }

    /// Has the reservation handed to `to` when dropped, instead of being
    /// unmapped.
    pub(crate) fn recycle_to(&mut self, to: Arc<dyn Recycle>) {
        self.recycle = Some(to);
    }

    /// Moves the mapping into a new owner; `self` is left empty (its drop
    /// does nothing).
    pub(crate) fn take_mapping(&mut self) -> Reservation {
        let r = Reservation {
            mapping: self.mapping,
            mapping_len: self.mapping_len,
            len: self.len,
            front: self.front,
            touched: AtomicUsize::new(self.touched()),
            recycle: self.recycle.take(),
        };
        self.mapping = std::ptr::null_mut();
        r
    }

    /// Wipes everything that was ever made accessible (see
    /// [`touched`](Self::touched)) and moves the mapping into a new owner
    /// that is as good as freshly mapped: entirely inaccessible, nothing
    /// touched, going nowhere on drop. `self` is left empty on success and
    /// unchanged on failure.
    pub(crate) fn take_wiped(&mut self) -> Result<Reservation, MemoryError> {
        // Only `[0, touched)` was ever accessible (and so writable).
        wipe(self, 0, self.touched())?;
        let mut r = self.take_mapping();
        r.touched = AtomicUsize::new(0);
        r.recycle = None;
        Ok(r)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.mapping.is_null() {
            return; // moved out by `take_mapping`
        }
        if let Some(pool) = self.recycle.take() {
            if pool.recycle(self) {
                return;
            }
        }
        // SAFETY: we own this mapping and nobody can use it after drop
        // (pointers handed out by `base` must not outlive the reservation,
        // as documented on the owning types).
        unsafe {
            libc::munmap(self.mapping.cast(), self.mapping_len);
        }
    }
}

/// Replaces `[offset, offset + len)` of `reservation` with fresh,
/// inaccessible, zero anonymous memory: one `mmap(MAP_FIXED)`, whatever was
/// mapped there (image pages, private copies, grown pages).
pub fn wipe(reservation: &Reservation, offset: usize, len: usize) -> Result<(), MemoryError> {
    reservation.map_fixed(offset, len, libc::PROT_NONE, MapSource::Anonymous)
}

/// Like [`wipe`], but the fresh zero memory is readable and writable (for
/// [unguarded](Reservation::new_unguarded) reservations).
pub(crate) fn zero_accessible(
    reservation: &Reservation,
    offset: usize,
    len: usize,
) -> Result<(), MemoryError> {
    reservation.map_fixed(
        offset,
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        MapSource::Anonymous,
    )
}
