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
use crate::reservation::{round_up_to_page, wipe, zero_accessible};
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
    /// The warm slots of that image, if the reservation goes back there
    /// on drop (see [`from_image_pooled`](Self::from_image_pooled)).
    warm: Option<Arc<WarmSlots>>,
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
                warm: None,
            },
            None => LinearMemory::from_image(Reservation::new(reserve)?, image, Some(limit))?,
        };
        mem.warm = Some(image.warm().clone());
        Ok(mem)
    }

    /// Replaces the whole memory with `image`, mapped copy-on-write (and
    /// anything beyond it made inaccessible): at most two system calls.
    pub fn map_image(&mut self, image: &MemoryImage) -> Result<(), MemoryError> {
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
        Ok(())
    }

    /// Puts the memory back to `image`: written pages are dropped, pages
    /// grown since are discarded and made inaccessible, and the length
    /// becomes the image's. At most two system calls, whatever the size;
    /// the kernel's work grows with the pages touched. (If another image,
    /// or none, is mapped, this is [`map_image`](Self::map_image).)
    pub fn reset_to_image(&mut self, image: &MemoryImage) -> Result<(), MemoryError> {
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
    use crate::ReservationPool;

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
