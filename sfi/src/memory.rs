//! Linear memories: the top layer.
//!
//! A [`LinearMemory`] is a WebAssembly linear memory placed at the start of
//! a [`Reservation`]: its accessible prefix grows with `mprotect`, and
//! everything after it stays `PROT_NONE`, so that JIT code which elides
//! bounds checks faults (and is caught by
//! [`catch_traps`](crate::catch_traps)) instead of touching anything else.
//! A linear memory never moves, so JIT code may cache its base address.
//!
//! Layering: built on [`reservation`](crate::reservation) (the
//! reservations and system calls), [`image`](crate::image) (memory images
//! and their warm slots) and [`pool`](crate::pool) (through
//! [`Reservation::new`], which draws from the process-wide pool); none of
//! those uses this module.

use crate::image::{MemoryImage, WarmSlots, COPY_RESTORE_LIMIT};
/// Reservations, their errors and the host page size (now in
/// [`reservation`](crate::reservation); kept here under their old paths).
pub use crate::reservation::{host_page_size, MemoryError, Reservation};
use crate::reservation::{round_up_to_page, wipe, zero_accessible, MapSource};
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;

/// The size of a WebAssembly page: 64 KiB.
pub const WASM_PAGE: usize = 65536;

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
    /// Bytes of that image from the start (meaningful only with `image`).
    image_len: usize,
    /// The warm slots of that image, if the reservation goes back there
    /// on drop (see [`from_image_pooled`](Self::from_image_pooled)).
    warm: Option<Arc<WarmSlots>>,
    /// Page-rounded ranges where a file is mapped `MAP_SHARED` (see
    /// [`map_shared`](Self::map_shared)). Everything that puts the memory
    /// back (reset, re-imaging, parking, recycling) first replaces them
    /// with fresh private memory, so shared pages are never zeroed,
    /// discarded over or handed to the next user.
    shared: Vec<Range<usize>>,
    /// Those of `shared` whose writes are tracked ([`crate::writes`]),
    /// with the handle other threads scan them through (closed before the
    /// mapping is replaced).
    tracked: Vec<(Range<usize>, crate::writes::WrittenPages)>,
}

/// Most files one memory may have mapped shared at once: each is a kernel
/// mapping, and mappings are a process-wide resource (`vm.max_map_count`),
/// so one guest must not be able to use them up.
pub const MAX_SHARED_SEGMENTS: usize = 1024;

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
            image_len: 0,
            warm: None,
            shared: Vec::new(),
            tracked: Vec::new(),
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
            image_len: 0,
            warm: None,
            shared: Vec::new(),
            tracked: Vec::new(),
        })
    }

    /// [`new_unguarded`](Self::new_unguarded) holding `image`: its non-zero
    /// pages are copied in when they are few (at most
    /// [`COPY_RESTORE_LIMIT`] bytes; the
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
        image: &MemoryImage,
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
    fn fill_unguarded(&mut self, image: &MemoryImage, dirty: bool) -> Result<(), MemoryError> {
        if dirty {
            zero_accessible(&self.reservation, 0, self.accessible)?;
        }
        if image.nonzero_bytes() <= COPY_RESTORE_LIMIT {
            image.copy_into(&self.reservation)?;
        } else {
            image.map_into(&self.reservation)?;
        }
        self.len = image.len();
        self.image = Some(image.id());
        self.image_len = image.len();
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
            image_len: 0,
            warm: None,
            shared: Vec::new(),
            tracked: Vec::new(),
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
        image: &MemoryImage,
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
            image_len: image.len(),
            warm: None,
            shared: Vec::new(),
            tracked: Vec::new(),
        })
    }

    /// Like [`from_image`](Self::from_image) in a reservation of
    /// `reserve_bytes`, but drawn from the image's warm slots when one is
    /// parked (no system call: the image is still mapped there, its
    /// pages it wrote already back to the image's contents), else a new
    /// reservation. When the memory is dropped it is put back to the image
    /// and parked in a warm slot for the next one: anything grown past the
    /// image is wiped, and the pages written are copied back from the
    /// image and stay mapped, so the next memory from the slot takes no
    /// page fault on them (up to [`KEEP_WRITTEN_LIMIT`](crate::KEEP_WRITTEN_LIMIT)
    /// bytes; beyond it, without `PAGEMAP_SCAN`, or after
    /// [`set_keep_written(false)`](crate::set_keep_written), they are
    /// dropped with one `madvise` instead).
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
        image: &MemoryImage,
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
                image_len: image.len(),
                warm: None,
                shared: Vec::new(),
                tracked: Vec::new(),
            },
            None => LinearMemory::from_image(Reservation::new(reserve)?, image, Some(limit))?,
        };
        mem.warm = Some(image.warm().clone());
        Ok(mem)
    }

    /// Replaces the whole memory with `image`, mapped copy-on-write (and
    /// anything beyond it made inaccessible): at most two system calls.
    pub fn map_image(&mut self, image: &MemoryImage) -> Result<(), MemoryError> {
        self.unmap_shared()?;
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
            wipe(
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
        self.image_len = image.len();
        Ok(())
    }

    /// Puts the memory back to `image`: written pages get the image's
    /// bytes again (copied back and kept mapped, or dropped, as a parked
    /// memory's: see [`from_image_pooled`](Self::from_image_pooled)),
    /// pages grown since are discarded and made inaccessible, and the
    /// length becomes the image's. A few system calls, whatever the size;
    /// the work grows with the pages touched. (If another image, or none,
    /// is mapped, this is [`map_image`](Self::map_image).)
    pub fn reset_to_image(&mut self, image: &MemoryImage) -> Result<(), MemoryError> {
        self.unmap_shared()?;
        if self.image != Some(image.id()) || self.reservation.is_unguarded() {
            return self.map_image(image);
        }
        if self.accessible > image.len() {
            wipe(
                &self.reservation,
                image.len(),
                self.accessible - image.len(),
            )?;
        }
        if self.accessible < image.len() {
            // Never mapped from this image (or smaller): map it afresh.
            image.map_into(&self.reservation)?;
        } else {
            image.warm().put_back(&self.reservation)?;
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

    /// The address range of the whole reservation, canary and guard
    /// included (see [`Reservation::mapped_range`]): what a store declares
    /// to [`catch_traps_in`](crate::traps::catch_traps_in) as a region where
    /// its code may fault.
    pub fn mapped_range(&self) -> std::ops::Range<usize> {
        self.reservation.mapped_range()
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

    /// Maps the first `len` bytes of the file `fd` (rounded up to whole
    /// host pages) over bytes `[offset, offset + len)` of this memory,
    /// `MAP_SHARED | MAP_FIXED`: from then on those bytes *are* the file's
    /// pages, so writes through any other shared mapping of the file
    /// (another memory, the host's own view) are seen here at once and the
    /// other way round. This is how a state value is shared by the
    /// Faaslets of a host.
    ///
    /// `offset` must be host-page-aligned and the range must lie within
    /// the memory's current length (grow it first); the file must be at
    /// least the rounded length long. At most [`MAX_SHARED_SEGMENTS`]
    /// files are mapped at once. The mapping lasts until the memory is put
    /// back ([`reset_to_image`](Self::reset_to_image),
    /// [`map_image`](Self::map_image), [`unmap_shared`](Self::unmap_shared),
    /// or drop), which replaces it with fresh zero pages and never touches
    /// the file.
    ///
    /// # Safety
    ///
    /// The file must not be truncated below the mapped length while it is
    /// mapped: an access to a page past a file's end raises `SIGBUS`,
    /// which host code reading the memory would not survive.
    ///
    /// ```
    /// use faaslet_sfi::{LinearMemory, WASM_PAGE};
    /// use std::io::{Read, Seek, Write};
    ///
    /// let mut file = tempfile_of(4096);
    /// let mut mem = LinearMemory::new(WASM_PAGE, None, 4 * WASM_PAGE)?;
    /// mem.grow_to(2 * WASM_PAGE)?;
    /// // SAFETY: the file is not truncated while mapped.
    /// unsafe { mem.map_shared(WASM_PAGE, 4096, std::os::fd::AsFd::as_fd(&file))? };
    /// mem.as_mut_slice()[WASM_PAGE] = 42; // a write to the file
    /// let mut b = [0u8; 1];
    /// file.rewind()?;
    /// file.read_exact(&mut b)?;
    /// assert_eq!(b[0], 42);
    /// mem.unmap_shared()?;
    /// assert_eq!(mem.as_slice()[WASM_PAGE], 0); // fresh zero page again
    /// # fn tempfile_of(n: usize) -> std::fs::File {
    /// #     let p = std::env::temp_dir().join(format!("sfi-doc-{}", std::process::id()));
    /// #     let mut f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
    /// #     f.write_all(&vec![0u8; n]).unwrap();
    /// #     std::fs::remove_file(&p).unwrap();
    /// #     f
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub unsafe fn map_shared(
        &mut self,
        offset: usize,
        len: usize,
        fd: BorrowedFd<'_>,
    ) -> Result<(), MemoryError> {
        let rounded = round_up_to_page(len).ok_or(MemoryError::TooLarge {
            requested: len,
            limit: self.limit,
        })?;
        let page = crate::host_page_size();
        if !offset.is_multiple_of(page) {
            return Err(MemoryError::Unaligned {
                offset,
                page_size: page,
            });
        }
        let accessible = round_up_to_page(self.len).unwrap_or(self.len);
        if offset.checked_add(rounded).is_none_or(|e| e > accessible) {
            return Err(MemoryError::NotAccessible {
                offset,
                len: rounded,
                accessible,
            });
        }
        if self.shared.len() >= MAX_SHARED_SEGMENTS {
            return Err(MemoryError::TooLarge {
                requested: self.shared.len() + 1,
                limit: MAX_SHARED_SEGMENTS,
            });
        }
        // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is a borrowed, open descriptor; `st` is writable.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(MemoryError::Stat {
                errno: crate::reservation::errno(),
            });
        }
        if (st.st_size as u64) < rounded as u64 {
            return Err(MemoryError::FileTooShort {
                len: rounded,
                file_len: st.st_size as u64,
            });
        }
        let r = self.reservation.map_fixed(
            offset,
            rounded,
            libc::PROT_READ | libc::PROT_WRITE,
            MapSource::SharedFile(fd),
        );
        // Recorded even on failure: a failed MAP_FIXED may have replaced
        // the range anyway, and putting it back is harmless.
        self.shared.push(offset..offset + rounded);
        if let Err(e) = r {
            let _ = self.unmap_shared();
            return Err(e);
        }
        // Writes are tracked where the kernel can; elsewhere the range is
        // still shared, only its writes go unreported.
        if crate::writes::available()
            // SAFETY: `offset..offset + rounded` is inside our reservation
            // (checked above) and is the shared mapping just made.
            && crate::writes::track(unsafe { self.base().add(offset) }, rounded).is_ok()
        {
            let handle =
                crate::writes::WrittenPages::new(self.base().wrapping_add(offset), rounded);
            self.tracked.push((offset..offset + rounded, handle));
        }
        Ok(())
    }

    /// The pages of the shared mapping at `offset` written since it was
    /// mapped or since the last call (byte ranges of this memory, page
    /// granular, merged), or `None` if no tracked shared mapping starts at
    /// `offset`. Each write is reported once: the pages are protected
    /// again, atomically with the scan. See [`crate::writes`].
    pub fn take_written(&self, offset: usize) -> Result<Option<Vec<Range<usize>>>, MemoryError> {
        let Some((r, _)) = self.tracked.iter().find(|(r, _)| r.start == offset) else {
            return Ok(None);
        };
        let mut out = Vec::new();
        // SAFETY: `r` is inside our reservation (recorded by `map_shared`).
        crate::writes::take_written(unsafe { self.base().add(r.start) }, r.len(), &mut out)?;
        for w in &mut out {
            *w = w.start + r.start..w.end + r.start;
        }
        Ok(Some(out))
    }

    /// A handle other threads can take the writes of the tracked shared
    /// mapping at `offset` through, while it exists (see
    /// [`WrittenPages`](crate::writes::WrittenPages)); `None` if no
    /// tracked mapping starts there.
    pub fn written_pages(&self, offset: usize) -> Option<crate::writes::WrittenPages> {
        self.tracked
            .iter()
            .find(|(r, _)| r.start == offset)
            .map(|(_, h)| h.clone())
    }

    /// The page-rounded byte ranges where files are mapped shared (see
    /// [`map_shared`](Self::map_shared)), in the order they were mapped.
    pub fn shared_segments(&self) -> &[Range<usize>] {
        &self.shared
    }

    /// Replaces every shared mapping with fresh, zero, private memory (as
    /// accessible as before); the files are not touched. On failure the
    /// ranges not yet replaced stay recorded (and the memory is not parked
    /// or reused until they are).
    pub fn unmap_shared(&mut self) -> Result<(), MemoryError> {
        while let Some(r) = self.shared.last().cloned() {
            // Nobody may scan the range once it is no longer this mapping.
            for (_, h) in self.tracked.iter().filter(|(t, _)| t.start == r.start) {
                h.close();
            }
            zero_accessible(&self.reservation, r.start, r.len())?;
            if r.start < self.image_len {
                // The image no longer shows through there: re-map it on
                // the next reset instead of resetting its mapping.
                self.image = None;
            }
            self.shared.pop();
            self.tracked.retain(|(t, _)| t.start != r.start);
        }
        Ok(())
    }

    /// Puts the memory back to its image and parks the reservation in the
    /// image's warm slots. Gives the memory back on failure (it is then
    /// dropped the ordinary way).
    fn park(&mut self, warm: &WarmSlots) -> bool {
        // Only with exactly that image mapped over the start.
        if self.image != Some(warm.image_id) || self.accessible < warm.image_len {
            return false;
        }
        let img = warm.image_len;
        // Anything grown past the image goes back to fresh PROT_NONE.
        if self.accessible > img && wipe(&self.reservation, img, self.accessible - img).is_err() {
            return false;
        }
        // The written pages go back to the image's contents (copied back
        // and kept mapped, or dropped: `WarmSlots::put_back`).
        if warm.put_back(&self.reservation).is_err() {
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
    ///
    /// Only for a memory no other thread writes: a slice promises that the
    /// bytes do not change while it lives, which is false for a range
    /// [mapped shared](Self::map_shared) from a file that other mappings
    /// write, or for a memory wasm threads share. The engine never takes
    /// these slices for such memories; it copies through raw pointers
    /// from [`base`](Self::base) instead.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: [base, base+len) is mapped RW for as long as `self` lives
        // (it only ever grows), `base` is non-null, and `&self` excludes
        // writes through `as_mut_slice`. JIT code writing concurrently is the
        // engine's responsibility not to allow while this borrow is alive.
        unsafe { std::slice::from_raw_parts(self.base(), self.len) }
    }

    /// The accessible bytes, mutably (with the caveat of
    /// [`as_slice`](Self::as_slice)).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as for `as_slice`, and `&mut self` makes this borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.base(), self.len) }
    }
}

impl Drop for LinearMemory {
    fn drop(&mut self) {
        // Shared mappings go first. If that fails the memory is not parked:
        // dropping the reservation then wipes or unmaps the whole range, and
        // neither keeps a shared mapping.
        let unshared = self.unmap_shared().is_ok();
        if let Some(warm) = self.warm.take() {
            // Parked, or else the reservation drops as usual (wiped back
            // to its pool, or unmapped).
            if unshared {
                self.park(&warm);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReservationPool;

    fn mappings() -> usize {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .count()
    }

    /// A memfd of `len` zero bytes.
    fn memfd(len: usize) -> std::os::fd::OwnedFd {
        use std::os::fd::FromRawFd;
        // SAFETY: a NUL-terminated name; the result is checked.
        let fd = unsafe { libc::memfd_create(c"sfi-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: `fd` is ours, open and otherwise unowned.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate of our own memfd.
        assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), len as i64) }, 0);
        fd
    }

    fn file_byte(fd: &std::os::fd::OwnedFd, at: usize) -> u8 {
        let mut b = [0u8; 1];
        // SAFETY: reads one byte into `b`.
        let n = unsafe { libc::pread(fd.as_raw_fd(), b.as_mut_ptr().cast(), 1, at as i64) };
        assert_eq!(n, 1);
        b[0]
    }

    /// Guarded, unguarded and image-backed memories, each grown to three
    /// wasm pages.
    fn memories(image: &MemoryImage) -> Vec<LinearMemory> {
        let mut v = vec![
            LinearMemory::new(WASM_PAGE, None, 16 * WASM_PAGE).unwrap(),
            LinearMemory::new_unguarded(WASM_PAGE, None, 16 * WASM_PAGE).unwrap(),
            LinearMemory::from_image_pooled(image, 16 * WASM_PAGE, None).unwrap(),
        ];
        for m in &mut v {
            m.grow_to(3 * WASM_PAGE).unwrap();
        }
        v
    }

    #[test]
    fn shared_mappings_are_the_same_pages_everywhere() {
        use std::os::fd::AsFd;
        let image = MemoryImage::new(&[1u8; WASM_PAGE]).unwrap();
        let fd = memfd(2 * WASM_PAGE);
        let mut mems = memories(&image);
        for (i, m) in mems.iter_mut().enumerate() {
            let at = WASM_PAGE + i * 8;
            // SAFETY: the memfd is not truncated while mapped.
            unsafe { m.map_shared(WASM_PAGE, 2 * WASM_PAGE, fd.as_fd()) }.unwrap();
            assert_eq!(m.shared_segments().to_vec(), vec![WASM_PAGE..3 * WASM_PAGE]);
            m.as_mut_slice()[at] = 10 + i as u8;
        }
        for m in &mems {
            for i in 0..mems.len() {
                assert_eq!(m.as_slice()[WASM_PAGE + i * 8], 10 + i as u8);
            }
        }
        assert_eq!(file_byte(&fd, 16), 12);
        // Putting the memories back leaves the file alone and drops the
        // mapping: the pages read zero again.
        mems[0].unmap_shared().unwrap();
        mems[1].reset_to_image(&image).unwrap();
        mems[2].reset_to_image(&image).unwrap();
        for m in &mut mems {
            assert!(m.shared_segments().is_empty());
            m.grow_to(3 * WASM_PAGE).unwrap();
            assert!(m.as_slice()[WASM_PAGE..].iter().all(|&b| b == 0));
        }
        assert_eq!(mems[2].as_slice()[0], 1);
        assert_eq!((file_byte(&fd, 0), file_byte(&fd, 8)), (10, 11));
    }

    /// Bytes of `m`'s first `len` bytes that are private copies (`None`
    /// without `PAGEMAP_SCAN`).
    fn private_bytes(m: &LinearMemory, len: usize) -> Option<usize> {
        let mut runs = Vec::new();
        crate::writes::private_copies(m.base(), len, &mut runs).ok()?;
        Some(runs.iter().map(|r| r.len()).sum())
    }

    #[test]
    fn parked_memories_copy_written_pages_back_and_keep_them() {
        let page = host_page_size();
        // Distinct bytes on every page, and an all-zero page (a hole).
        let mut bytes: Vec<u8> = (0..2 * WASM_PAGE).map(|i| (i / page + 1) as u8).collect();
        bytes[3 * page..4 * page].fill(0);
        let image = MemoryImage::new(&bytes).unwrap();
        let mut m = LinearMemory::from_image_pooled(&image, 16 * WASM_PAGE, None).unwrap();
        for p in [1, 3, 7] {
            m.as_mut_slice()[p * page + 5] = 0xEE;
        }
        m.grow_to(3 * WASM_PAGE).unwrap();
        m.as_mut_slice()[2 * WASM_PAGE] = 0xEE;
        let scan_works = private_bytes(&m, bytes.len()).is_some();
        let base = m.base();
        drop(m);
        let m = LinearMemory::from_image_pooled(&image, 16 * WASM_PAGE, None).unwrap();
        assert_eq!(m.base(), base, "the warm slot");
        assert_eq!(m.len(), bytes.len());
        assert!(m.as_slice() == &bytes[..], "back to the image");
        if scan_works {
            // The three written pages are still private copies, holding
            // the image's bytes again.
            assert_eq!(private_bytes(&m, bytes.len()), Some(3 * page));
        }
        // And again: writes of the second life are undone as well.
        let mut m = m;
        m.as_mut_slice()[page] = 1;
        m.as_mut_slice()[5 * page] = 2;
        drop(m);
        let m = LinearMemory::from_image_pooled(&image, 16 * WASM_PAGE, None).unwrap();
        assert!(m.as_slice() == &bytes[..]);
        if scan_works {
            // Kept (the four pages ever written), or all dropped if the
            // first scan cost more than the faults it saved: never some.
            let kept = private_bytes(&m, bytes.len());
            assert!(kept == Some(4 * page) || kept == Some(0), "{kept:?}");
        }
    }

    #[test]
    fn parked_memories_drop_written_pages_past_the_limit() {
        let page = host_page_size();
        let len = crate::KEEP_WRITTEN_LIMIT + 4 * WASM_PAGE;
        let bytes: Vec<u8> = (0..len).map(|i| (i / page) as u8 | 1).collect();
        let image = MemoryImage::new(&bytes).unwrap();
        let mut m = LinearMemory::from_image_pooled(&image, 2 * len, None).unwrap();
        m.as_mut_slice().fill(0);
        drop(m);
        let m = LinearMemory::from_image_pooled(&image, 2 * len, None).unwrap();
        assert!(m.as_slice() == &bytes[..]);
        // Dropped, not kept: no page is a private copy any more.
        if let Some(b) = private_bytes(&m, len) {
            assert_eq!(b, 0);
        }
    }

    #[test]
    fn a_parked_memory_keeps_no_shared_mapping() {
        use std::os::fd::AsFd;
        let image = MemoryImage::new(&[0u8; WASM_PAGE]).unwrap();
        let fd = memfd(WASM_PAGE);
        let mut m = LinearMemory::from_image_pooled(&image, 16 * WASM_PAGE, None).unwrap();
        m.grow_to(2 * WASM_PAGE).unwrap();
        // SAFETY: the memfd is not truncated while mapped.
        unsafe { m.map_shared(WASM_PAGE, WASM_PAGE, fd.as_fd()) }.unwrap();
        m.as_mut_slice()[WASM_PAGE] = 7;
        let base = m.base();
        drop(m);
        let mut m = LinearMemory::from_image_pooled(&image, 16 * WASM_PAGE, None).unwrap();
        assert_eq!(m.base(), base, "the warm slot");
        m.grow_to(2 * WASM_PAGE).unwrap();
        assert_eq!(m.as_slice()[WASM_PAGE], 0);
        m.as_mut_slice()[WASM_PAGE] = 9;
        assert_eq!(file_byte(&fd, 0), 7);
    }

    #[test]
    fn written_pages_handles_scan_from_other_threads_until_unmapped() {
        use std::os::fd::AsFd;
        if !crate::writes::available() {
            eprintln!("skipping: no write tracking on this kernel");
            return;
        }
        let page = host_page_size();
        let fd = memfd(WASM_PAGE);
        let image = MemoryImage::new(&[0u8; WASM_PAGE]).unwrap();
        for mut m in memories(&image) {
            // SAFETY: the memfd is not truncated while mapped.
            unsafe { m.map_shared(WASM_PAGE, WASM_PAGE, fd.as_fd()) }.unwrap();
            assert!(m.written_pages(0).is_none());
            let h = m.written_pages(WASM_PAGE).unwrap();
            m.as_mut_slice()[WASM_PAGE + 2 * page] = 1;
            // Another thread takes the write (relative to the mapping)...
            let taken = std::thread::scope(|s| s.spawn(|| h.take()).join().unwrap());
            assert_eq!(taken.unwrap().unwrap(), vec![2 * page..3 * page]);
            // ...once: the memory's own take finds nothing more.
            assert_eq!(m.take_written(WASM_PAGE).unwrap(), Some(vec![]));
            assert!(h.is_open());
            // Once the mapping is replaced the handle scans nothing.
            m.unmap_shared().unwrap();
            assert!(!h.is_open());
            assert!(h.take().is_none());
        }
    }

    #[test]
    fn writes_through_shared_mappings_are_reported_once() {
        use std::os::fd::AsFd;
        if !crate::writes::available() {
            eprintln!("skipping: no write tracking on this kernel");
            return;
        }
        let page = host_page_size();
        let fd = memfd(2 * WASM_PAGE);
        let image = MemoryImage::new(&[0u8; WASM_PAGE]).unwrap();
        for mut m in memories(&image) {
            // SAFETY: the memfd is not truncated while mapped.
            unsafe { m.map_shared(WASM_PAGE, 2 * WASM_PAGE, fd.as_fd()) }.unwrap();
            assert_eq!(m.take_written(WASM_PAGE).unwrap(), Some(vec![]));
            assert_eq!(m.take_written(0).unwrap(), None);
            let _ = m.as_slice()[WASM_PAGE + 9 * page]; // reads do not count
            m.as_mut_slice()[WASM_PAGE + 1] = 1;
            m.as_mut_slice()[WASM_PAGE + 3 * page] = 1;
            m.as_mut_slice()[WASM_PAGE + 4 * page + 7] = 1;
            let w = WASM_PAGE;
            assert_eq!(
                m.take_written(WASM_PAGE).unwrap(),
                Some(vec![w..w + page, w + 3 * page..w + 5 * page])
            );
            assert_eq!(m.take_written(WASM_PAGE).unwrap(), Some(vec![]));
            m.as_mut_slice()[WASM_PAGE + 1] = 2;
            let again = m.take_written(WASM_PAGE).unwrap().unwrap();
            assert_eq!((again.len(), again.first()), (1, Some(&(w..w + page))));
            // The kernel writing into a protected page (a WASI fd_read into
            // mapped state) neither blocks nor faults, and is reported.
            let mut pipe = [0i32; 2];
            // SAFETY: `pipe` has room for the two descriptors.
            assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
            // SAFETY: writes 5 bytes from a literal into our pipe.
            let wrote = unsafe { libc::write(pipe[1], b"hello".as_ptr().cast(), 5) };
            assert_eq!(wrote, 5);
            // SAFETY: reads 5 bytes into page 6 of the mapping, which is
            // inside the memory (`&mut` access is ours).
            let n = unsafe { libc::read(pipe[0], m.base().add(w + 6 * page).cast(), 5) };
            assert_eq!(n, 5);
            // SAFETY: closing our own descriptors once.
            unsafe {
                libc::close(pipe[0]);
                libc::close(pipe[1]);
            }
            assert_eq!(&m.as_slice()[w + 6 * page..w + 6 * page + 5], b"hello");
            let k = m.take_written(WASM_PAGE).unwrap().unwrap();
            assert_eq!(
                (k.len(), k.first()),
                (1, Some(&(w + 6 * page..w + 7 * page)))
            );
            m.unmap_shared().unwrap();
            assert_eq!(m.take_written(WASM_PAGE).unwrap(), None);
        }
    }

    #[test]
    fn shared_mappings_are_checked() {
        use std::os::fd::AsFd;
        let fd = memfd(4096);
        let mut m = LinearMemory::new(WASM_PAGE, None, 4 * WASM_PAGE).unwrap();
        // SAFETY: refused before anything is mapped (as are the next two).
        let r = unsafe { m.map_shared(WASM_PAGE, 4096, fd.as_fd()) };
        assert!(matches!(r, Err(MemoryError::NotAccessible { .. })), "{r:?}");
        // SAFETY: as above.
        let r = unsafe { m.map_shared(0, 2 * 4096, fd.as_fd()) };
        assert!(matches!(r, Err(MemoryError::FileTooShort { .. })), "{r:?}");
        // SAFETY: as above.
        let r = unsafe { m.map_shared(8, 4096, fd.as_fd()) };
        assert!(matches!(r, Err(MemoryError::Unaligned { .. })), "{r:?}");
        assert!(m.shared_segments().is_empty());
        m.unmap_shared().unwrap();
        assert!(m.as_slice().iter().all(|&b| b == 0));
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
        let big = vec![7u8; COPY_RESTORE_LIMIT + WASM_PAGE];
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

    #[test]
    fn recycling_wipes_everything_ever_made_accessible() {
        let pool = ReservationPool::new(64 * WASM_PAGE, 4);
        let mut mem = LinearMemory::in_reservation(pool.take().unwrap(), WASM_PAGE, None).unwrap();
        let base = mem.base();
        mem.grow_to(5 * WASM_PAGE).unwrap();
        assert_eq!(mem.reserved(), 64 * WASM_PAGE);
        mem.as_mut_slice()[5 * WASM_PAGE - 1] = 9;
        mem.as_mut_slice()[0] = 8;
        drop(mem);
        let r = pool.take().unwrap();
        assert_eq!(r.base(), base);
        assert_eq!(r.touched(), 0);
        let mem = LinearMemory::in_reservation(r, 5 * WASM_PAGE, None).unwrap();
        assert_eq!(mem.as_slice()[0], 0);
        assert_eq!(mem.as_slice()[5 * WASM_PAGE - 1], 0);
        assert_eq!(mem.reserved(), 64 * WASM_PAGE);
        drop(mem);

        // An image mapping, then growth past it: both are wiped.
        let mut bytes = vec![0u8; 2 * WASM_PAGE];
        bytes[7] = 7;
        let image = MemoryImage::new(&bytes).unwrap();
        let mut mem = LinearMemory::from_image(pool.take().unwrap(), &image, None).unwrap();
        assert_eq!(mem.as_slice()[7], 7);
        mem.grow_to(3 * WASM_PAGE).unwrap();
        mem.as_mut_slice()[3 * WASM_PAGE - 1] = 1;
        drop(mem);
        let mem = LinearMemory::in_reservation(pool.take().unwrap(), 3 * WASM_PAGE, None).unwrap();
        assert_eq!(mem.base(), base);
        assert!(mem.as_slice().iter().all(|&b| b == 0));
    }
}
