//! Address-space reservations and the linear memories that live in them.
//!
//! A [`Reservation`] is a large range of virtual address space mapped
//! `PROT_NONE` and `MAP_NORESERVE`: it costs page-table entries only when
//! parts of it are made accessible and touched. A [`LinearMemory`] is a
//! WebAssembly linear memory placed at the start of a reservation: its
//! accessible prefix grows with `mprotect`, and everything after it stays
//! `PROT_NONE`, so that JIT code which elides bounds checks faults (and is
//! caught by [`catch_traps`](crate::catch_traps)) instead of touching
//! anything else. A linear memory never moves, so JIT code may cache its
//! base address.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The size of a WebAssembly page: 64 KiB.
pub const WASM_PAGE: usize = 65536;

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
    /// A linear memory was asked to shrink.
    #[error("cannot shrink a linear memory from {current} to {requested} bytes")]
    Shrink {
        /// The current accessible length.
        current: usize,
        /// The requested length.
        requested: usize,
    },
}

fn errno() -> i32 {
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

/// A range of virtual address space, mapped `PROT_NONE` (and
/// `MAP_NORESERVE`, so it costs no commit charge until made accessible).
///
/// One extra `PROT_NONE` "canary" page sits directly in front of
/// [`base`](Self::base), so that an access just below the reservation also
/// faults rather than landing in a neighbouring mapping.
///
/// The whole mapping (canary included) is unmapped on drop.
#[derive(Debug)]
pub struct Reservation {
    /// Start of the mapping (the canary page).
    pub(crate) mapping: *mut u8,
    /// Length of the mapping including the canary page.
    pub(crate) mapping_len: usize,
    /// Usable bytes after the canary page (page-rounded).
    pub(crate) len: usize,
    /// Bytes of canary in front of the usable range: one page, or 0 for an
    /// [unguarded](Self::new_unguarded) reservation.
    pub(crate) front: usize,
    /// High-water mark, in bytes from [`base`](Self::base), of what was
    /// made accessible (by `make_accessible` or by mapping a memory image)
    /// since the reservation was mapped or last wiped for reuse. Beyond it
    /// everything is still untouched `PROT_NONE`, so recycling only has to
    /// wipe `[0, touched)`.
    pub(crate) touched: AtomicUsize,
    /// The pool this reservation goes back to on drop, if any.
    pub(crate) recycle: Option<std::sync::Arc<crate::pool::PoolShared>>,
}

// SAFETY: a Reservation is just an owned address range; nothing about it is
// tied to the creating thread, and all its methods are system calls which
// are thread-safe. Access to the *bytes* is governed by whoever hands out
// pointers into it (e.g. `LinearMemory` with `&`/`&mut`).
unsafe impl Send for Reservation {}
// SAFETY: see above; `&Reservation` methods only make system calls.
unsafe impl Sync for Reservation {}

impl Reservation {
    /// Reserves `len` bytes (rounded up to the host page size, and at least
    /// one page) of inaccessible address space. An idle reservation of the
    /// same size from the process-wide pool is reused when there is one
    /// (see [`pool`](crate::pool)); it goes back there when dropped.
    pub fn new(len: usize) -> Result<Self, MemoryError> {
        if let Some(r) = crate::pool::take_global(len) {
            return Ok(r);
        }
        Self::map_new(len)
    }

    /// Maps a brand-new reservation (never from a pool).
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
}

impl Reservation {
    /// Records that `[0, end)` may have been made accessible.
    pub(crate) fn note_touched(&self, end: usize) {
        self.touched.fetch_max(end, Ordering::Relaxed);
    }

    /// How many bytes from [`base`](Self::base) may have been made
    /// accessible since the reservation was mapped (or wiped for reuse);
    /// everything beyond is untouched and inaccessible.
    pub fn touched(&self) -> usize {
        self.touched.load(Ordering::Relaxed)
    }
}

impl Reservation {
    /// Moves the mapping into a new owner; `self` is left empty (its drop
    /// does nothing).
    fn take_mapping(&mut self) -> Reservation {
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

/// A linear memory inside a [`Reservation`] that never moves.
///
/// Bytes `[0, len)` are readable and writable (the accessible region is
/// rounded up to the host page size), the rest of the reservation is
/// `PROT_NONE`. Growing only changes protections, so
/// [`base`](Self::base) is stable for the memory's whole life and JIT code
/// may bake it in or cache it.
#[derive(Debug)]
pub struct LinearMemory {
    reservation: Reservation,
    len: usize,
    /// Page-rounded length of the currently accessible prefix.
    accessible: usize,
    /// Effective maximum: min(declared maximum, reservation).
    limit: usize,
    /// Id of the [`MemoryImage`](crate::MemoryImage) mapped at the start,
    /// if any.
    image: Option<u64>,
    /// The warm slots of that image, if the reservation goes back there
    /// on drop (see [`from_image_pooled`](Self::from_image_pooled)).
    warm: Option<std::sync::Arc<crate::image::WarmSlots>>,
}

impl LinearMemory {
    /// Creates a linear memory of `initial_bytes` accessible bytes in a fresh
    /// reservation of `reserve_bytes` (which must be at least
    /// `initial_bytes`). It can later grow up to `maximum_bytes` (if given)
    /// but never past the reservation.
    pub fn new(
        initial_bytes: usize,
        maximum_bytes: Option<usize>,
        reserve_bytes: usize,
    ) -> Result<Self, MemoryError> {
        if initial_bytes > reserve_bytes {
            return Err(MemoryError::TooLarge {
                requested: initial_bytes,
                limit: reserve_bytes,
            });
        }
        if let Some(max) = maximum_bytes {
            if initial_bytes > max {
                return Err(MemoryError::TooLarge {
                    requested: initial_bytes,
                    limit: max,
                });
            }
        }
        let reservation = Reservation::new(reserve_bytes)?;
        let limit = maximum_bytes.map_or(reserve_bytes, |m| m.min(reserve_bytes));
        let mut mem = LinearMemory {
            reservation,
            len: 0,
            accessible: 0,
            limit,
            image: None,
            warm: None,
        };
        mem.grow_to(initial_bytes)?;
        Ok(mem)
    }

    /// Creates a linear memory of `initial_bytes` in a fresh
    /// [unguarded](Reservation::new_unguarded) reservation of
    /// `reserve_bytes`: all of it is readable and writable from the start,
    /// nothing faults past [`len`](Self::len), and growing only changes the
    /// length (no system call). For memories whose every access is checked
    /// explicitly; bytes past the length still read as zero until written.
    pub fn new_unguarded(
        initial_bytes: usize,
        maximum_bytes: Option<usize>,
        reserve_bytes: usize,
    ) -> Result<Self, MemoryError> {
        if initial_bytes > reserve_bytes || maximum_bytes.is_some_and(|m| initial_bytes > m) {
            return Err(MemoryError::TooLarge {
                requested: initial_bytes,
                limit: maximum_bytes.map_or(reserve_bytes, |m| m.min(reserve_bytes)),
            });
        }
        let reservation = Reservation::new_unguarded(reserve_bytes)?;
        let accessible = reservation.len();
        Ok(LinearMemory {
            limit: maximum_bytes.map_or(reserve_bytes, |m| m.min(reserve_bytes)),
            reservation,
            len: initial_bytes,
            accessible,
            image: None,
            warm: None,
        })
    }

    /// [`new_unguarded`](Self::new_unguarded) holding `image`: its non-zero
    /// pages are copied in when they are few (at most
    /// [`COPY_RESTORE_LIMIT`](crate::image::COPY_RESTORE_LIMIT) bytes; the
    /// memory stays one plain anonymous mapping, which merges with its
    /// neighbours), else it is mapped copy-on-write. Its length is the
    /// image's.
    ///
    /// ```
    /// use faaslet_sfi::{LinearMemory, MemoryImage, WASM_PAGE};
    ///
    /// let mut bytes = vec![0u8; 2 * WASM_PAGE];
    /// bytes[WASM_PAGE + 3] = 3;
    /// let image = MemoryImage::new(&bytes)?;
    /// let mut mem = LinearMemory::from_image_unguarded(&image, 4 * WASM_PAGE, None)?;
    /// assert_eq!(mem.as_slice(), &bytes[..]);
    /// mem.grow_to(3 * WASM_PAGE)?; // no system call
    /// mem.as_mut_slice()[0] = 1;
    /// mem.reset_to_image(&image)?;
    /// assert_eq!(mem.as_slice(), &bytes[..]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_image_unguarded(
        image: &crate::MemoryImage,
        reserve_bytes: usize,
        maximum_bytes: Option<usize>,
    ) -> Result<Self, MemoryError> {
        let mut mem = LinearMemory::new_unguarded(0, maximum_bytes, reserve_bytes)?;
        if image.len() > mem.limit {
            return Err(MemoryError::TooLarge {
                requested: image.len(),
                limit: mem.limit,
            });
        }
        // Fresh: every byte reads zero already.
        mem.fill_unguarded(image, false)?;
        Ok(mem)
    }

    /// Makes an unguarded memory hold exactly `image` (zeroing everything
    /// first unless it is known to be zero).
    fn fill_unguarded(
        &mut self,
        image: &crate::MemoryImage,
        dirty: bool,
    ) -> Result<(), MemoryError> {
        if dirty {
            crate::image::zero_accessible(&self.reservation, 0, self.accessible)?;
        }
        if image.nonzero_bytes() <= crate::image::COPY_RESTORE_LIMIT {
            image.copy_into(&self.reservation)?;
        } else {
            image.map_into(&self.reservation)?;
        }
        self.len = image.len();
        self.image = Some(image.id());
        Ok(())
    }

    /// Creates a linear memory of `initial_bytes` in `reservation`, which
    /// must be entirely inaccessible (as from [`Reservation::new`] or a
    /// [`ReservationPool`](crate::ReservationPool)).
    pub fn in_reservation(
        reservation: Reservation,
        initial_bytes: usize,
        maximum_bytes: Option<usize>,
    ) -> Result<Self, MemoryError> {
        let reserve_bytes = reservation.len();
        if initial_bytes > reserve_bytes || maximum_bytes.is_some_and(|m| initial_bytes > m) {
            return Err(MemoryError::TooLarge {
                requested: initial_bytes,
                limit: maximum_bytes.map_or(reserve_bytes, |m| m.min(reserve_bytes)),
            });
        }
        let limit = maximum_bytes.map_or(reserve_bytes, |m| m.min(reserve_bytes));
        let mut mem = LinearMemory {
            reservation,
            len: 0,
            accessible: 0,
            limit,
            image: None,
            warm: None,
        };
        mem.grow_to(initial_bytes)?;
        Ok(mem)
    }

    /// Creates a linear memory whose contents are `image`, mapped
    /// copy-on-write over the start of `reservation` (which must be
    /// entirely inaccessible) in one system call. Its length is the
    /// image's length.
    pub fn from_image(
        reservation: Reservation,
        image: &crate::MemoryImage,
        maximum_bytes: Option<usize>,
    ) -> Result<Self, MemoryError> {
        let reserve_bytes = reservation.len();
        let limit = maximum_bytes.map_or(reserve_bytes, |m| m.min(reserve_bytes));
        if image.len() > limit {
            return Err(MemoryError::TooLarge {
                requested: image.len(),
                limit,
            });
        }
        image.map_into(&reservation)?;
        Ok(LinearMemory {
            reservation,
            len: image.len(),
            accessible: image.len(),
            limit,
            image: Some(image.id()),
            warm: None,
        })
    }

    /// Like [`from_image`](Self::from_image) in a reservation of
    /// `reserve_bytes`, but drawn from the image's warm slots when one is
    /// parked (no system call: the image is still mapped there, its
    /// private pages already dropped), else a new reservation. When the
    /// memory is dropped it is put back to the image (one `madvise` over
    /// the image, plus a wipe of anything grown past it) and parked in a
    /// warm slot for the next one.
    ///
    /// ```
    /// use faaslet_sfi::{LinearMemory, MemoryImage, WASM_PAGE};
    ///
    /// let mut bytes = vec![0u8; WASM_PAGE];
    /// bytes[1] = 1;
    /// let image = MemoryImage::new(&bytes)?;
    /// let mut mem = LinearMemory::from_image_pooled(&image, 1 << 20, None)?;
    /// mem.as_mut_slice()[1] = 99;
    /// mem.grow_to(2 * WASM_PAGE)?;
    /// mem.as_mut_slice()[WASM_PAGE] = 5;
    /// let base = mem.base();
    /// drop(mem);
    /// assert_eq!(image.warm_slots(), 1);
    /// let mem = LinearMemory::from_image_pooled(&image, 1 << 20, None)?;
    /// assert_eq!(mem.base(), base); // the warm slot
    /// assert_eq!(mem.as_slice(), &bytes[..]); // back to the image
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_image_pooled(
        image: &crate::MemoryImage,
        reserve_bytes: usize,
        maximum_bytes: Option<usize>,
    ) -> Result<Self, MemoryError> {
        let reserve = round_up_to_page(reserve_bytes.max(1)).ok_or(MemoryError::TooLarge {
            requested: reserve_bytes,
            limit: isize::MAX as usize,
        })?;
        let limit = maximum_bytes.map_or(reserve, |m| m.min(reserve));
        if image.len() > limit {
            return Err(MemoryError::TooLarge {
                requested: image.len(),
                limit,
            });
        }
        let mut mem = match image.warm().take(reserve) {
            Some(reservation) => LinearMemory {
                reservation,
                len: image.len(),
                accessible: image.len(),
                limit,
                image: Some(image.id()),
                warm: None,
            },
            None => LinearMemory::from_image(Reservation::new(reserve)?, image, Some(limit))?,
        };
        mem.warm = Some(image.warm().clone());
        Ok(mem)
    }

    /// Replaces the whole memory with `image`, mapped copy-on-write (and
    /// anything beyond it made inaccessible): at most two system calls.
    pub fn map_image(&mut self, image: &crate::MemoryImage) -> Result<(), MemoryError> {
        if image.len() > self.limit {
            return Err(MemoryError::TooLarge {
                requested: image.len(),
                limit: self.limit,
            });
        }
        if self.reservation.is_unguarded() {
            self.warm = None;
            return self.fill_unguarded(image, true);
        }
        if self.accessible > image.len() {
            crate::image::wipe(
                &self.reservation,
                image.len(),
                self.accessible - image.len(),
            )?;
        }
        // Going to another image: this reservation no longer belongs in
        // the old one's warm slots.
        self.warm = None;
        image.map_into(&self.reservation)?;
        self.len = image.len();
        self.accessible = image.len();
        self.image = Some(image.id());
        Ok(())
    }

    /// Puts the memory back to `image`: written pages are dropped, pages
    /// grown since are discarded and made inaccessible, and the length
    /// becomes the image's. At most two system calls, whatever the size;
    /// the kernel's work grows with the pages touched. (If another image,
    /// or none, is mapped, this is [`map_image`](Self::map_image).)
    pub fn reset_to_image(&mut self, image: &crate::MemoryImage) -> Result<(), MemoryError> {
        if self.image != Some(image.id()) || self.reservation.is_unguarded() {
            return self.map_image(image);
        }
        if self.accessible > image.len() {
            crate::image::wipe(
                &self.reservation,
                image.len(),
                self.accessible - image.len(),
            )?;
        }
        if self.accessible < image.len() {
            // Never mapped from this image (or smaller): map it afresh.
            image.map_into(&self.reservation)?;
        } else {
            image.reset_mapping(&self.reservation)?;
        }
        self.len = image.len();
        self.accessible = image.len();
        Ok(())
    }

    /// The address of byte 0. Never changes.
    pub fn base(&self) -> *mut u8 {
        self.reservation.base()
    }

    /// Accessible bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no bytes are accessible.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of address space reserved (the most this memory could ever be
    /// given, and the extent of its guard region).
    pub fn reserved(&self) -> usize {
        self.reservation.len()
    }

    /// The effective maximum size: the declared maximum clamped to the
    /// reservation.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Grows the accessible prefix to `new_len` bytes. New bytes read as
    /// zero. Fails (leaving the memory unchanged) if `new_len` is below the
    /// current length, or beyond the maximum or the reservation. The memory
    /// never moves.
    pub fn grow_to(&mut self, new_len: usize) -> Result<(), MemoryError> {
        if new_len < self.len {
            return Err(MemoryError::Shrink {
                current: self.len,
                requested: new_len,
            });
        }
        if new_len > self.limit {
            return Err(MemoryError::TooLarge {
                requested: new_len,
                limit: self.limit,
            });
        }
        let rounded = round_up_to_page(new_len).ok_or(MemoryError::TooLarge {
            requested: new_len,
            limit: self.limit,
        })?;
        if rounded > self.accessible {
            self.reservation
                .make_accessible(self.accessible, rounded - self.accessible)?;
            self.accessible = rounded;
        }
        self.len = new_len;
        Ok(())
    }

    /// Puts the memory back to its image and parks the reservation in the
    /// image's warm slots. Gives the memory back on failure (it is then
    /// dropped the ordinary way).
    fn park(&mut self, warm: &crate::image::WarmSlots) -> bool {
        // Only with exactly that image mapped over the start.
        if self.image != Some(warm.image_id) || self.accessible < warm.image_len {
            return false;
        }
        let img = warm.image_len;
        // Anything grown past the image goes back to fresh PROT_NONE.
        if self.accessible > img
            && crate::image::wipe(&self.reservation, img, self.accessible - img).is_err()
        {
            return false;
        }
        // Drop the private copies: the image's pages show through again.
        if img > 0 && self.reservation.discard(0, img).is_err() {
            return false;
        }
        let r = self.reservation.take_mapping();
        match warm.put(r) {
            Ok(()) => true,
            Err(mut r) => {
                // Full: give the mapping back so it is dropped as usual.
                self.reservation = r.take_mapping();
                false
            }
        }
    }

    /// The accessible bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: [base, base+len) is mapped RW for as long as `self` lives
        // (it only ever grows), `base` is non-null, and `&self` excludes
        // writes through `as_mut_slice`. JIT code writing concurrently is the
        // engine's responsibility not to allow while this borrow is alive.
        unsafe { std::slice::from_raw_parts(self.base(), self.len) }
    }

    /// The accessible bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as for `as_slice`, and `&mut self` makes this borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.base(), self.len) }
    }
}

impl Drop for LinearMemory {
    fn drop(&mut self) {
        if let Some(warm) = self.warm.take() {
            // Parked, or else the reservation drops as usual (wiped back
            // to its pool, or unmapped).
            self.park(&warm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryImage;

    fn mappings() -> usize {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .count()
    }

    #[test]
    fn unguarded_memories_merge_into_few_mappings() {
        let before = mappings();
        let mut mems: Vec<_> = (0..1000)
            .map(|_| LinearMemory::new_unguarded(WASM_PAGE, None, 2 * WASM_PAGE).unwrap())
            .collect();
        let added = mappings().saturating_sub(before);
        // Guarded, each would be at least two (accessible prefix + tail).
        assert!(
            added < 500,
            "1000 unguarded memories added {added} mappings"
        );
        for m in &mut mems {
            m.as_mut_slice()[WASM_PAGE - 1] = 1;
            m.grow_to(2 * WASM_PAGE).unwrap();
            assert_eq!(m.as_slice()[WASM_PAGE], 0);
            assert!(m.grow_to(2 * WASM_PAGE + 1).is_err());
        }
    }

    #[test]
    fn unguarded_images_copied_or_mapped_reset_exactly() {
        // One small image (copied in) and one above the copy limit (mapped).
        let small = {
            let mut b = vec![0u8; 2 * WASM_PAGE];
            b[5] = 5;
            b
        };
        let big = vec![7u8; crate::image::COPY_RESTORE_LIMIT + WASM_PAGE];
        for bytes in [small, big] {
            let image = MemoryImage::new(&bytes).unwrap();
            let reserve = bytes.len() + 2 * WASM_PAGE;
            let mut mem = LinearMemory::from_image_unguarded(&image, reserve, None).unwrap();
            assert!(mem.reservation.is_unguarded());
            assert_eq!(mem.as_slice(), &bytes[..]);
            mem.as_mut_slice()[5] = 99;
            mem.grow_to(reserve).unwrap();
            mem.as_mut_slice()[reserve - 1] = 99;
            mem.reset_to_image(&image).unwrap();
            assert_eq!(mem.len(), bytes.len());
            assert_eq!(mem.as_slice(), &bytes[..]);
            // The grown page was zeroed too.
            mem.grow_to(reserve).unwrap();
            assert_eq!(mem.as_slice()[reserve - 1], 0);
        }
    }
}
