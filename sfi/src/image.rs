//! Memory images: the contents of a linear memory held in a sealed `memfd`,
//! mapped copy-on-write into reservations.
//!
//! A [`MemoryImage`] is how a snapshot (a Proto-Faaslet) keeps a memory.
//! Restoring it is one `mmap(MAP_PRIVATE | MAP_FIXED)` of the memfd over the
//! start of a [`Reservation`], whatever the memory's size: pages are shared
//! with the image until written, and a write copies just that page.
//! Resetting a memory to its image is one `madvise(MADV_DONTNEED)` over the
//! mapping, which drops the private copies (only the pages that were
//! touched cost anything) so the pages read the image's contents again.
//!
//! An image also keeps a few *warm slots*: reservations that still have it
//! mapped. A memory made with [`LinearMemory::from_image_pooled`] is put
//! back to the image when dropped (that `madvise`, plus a wipe of anything
//! grown past the image) and parked in a slot, so the next one starts with
//! no system call at all.
//!
//! [`LinearMemory::from_image_pooled`]: crate::LinearMemory::from_image_pooled
//!
//! ```
//! use faaslet_sfi::{LinearMemory, MemoryImage, Reservation, WASM_PAGE};
//!
//! let mut bytes = vec![0u8; 2 * WASM_PAGE];
//! bytes[10] = 7;
//! let image = MemoryImage::new(&bytes)?;
//!
//! let mut mem = LinearMemory::from_image(Reservation::new(1 << 20)?, &image, None)?;
//! assert_eq!(mem.as_slice()[10], 7);
//! mem.as_mut_slice()[10] = 99; // copies one page
//! mem.grow_to(3 * WASM_PAGE)?;
//! mem.reset_to_image(&image)?;
//! assert_eq!(mem.as_slice()[10], 7);
//! assert_eq!(mem.len(), 2 * WASM_PAGE);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Layering: this module is built on [`reservation`](crate::reservation)
//! alone; [`memory`](crate::memory) builds on it.

use crate::reservation::{
    errno, host_page_size, round_up_to_page, MapSource, MemoryError, Reservation,
};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// Images with at most this many bytes in non-zero pages are copied into
/// [unguarded](crate::Reservation::new_unguarded) memories rather than
/// mapped (see [`LinearMemory::from_image_unguarded`](crate::LinearMemory::from_image_unguarded)).
pub const COPY_RESTORE_LIMIT: usize = 256 << 10;

/// How many warm slots (reservations with the image still mapped) an image
/// keeps at most.
pub const MAX_WARM_SLOTS: usize = 64;

/// How many warm slots all images of the process keep at most together (a
/// guard-page reservation is 6 GiB of address space).
pub const MAX_WARM_SLOTS_TOTAL: usize = 256;

/// Warm slots parked, over all images.
static WARM_TOTAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Reservations with one image mapped copy-on-write over their start and
/// nothing else accessible, every private page dropped: ready to be a
/// memory holding exactly the image.
#[derive(Debug)]
pub(crate) struct WarmSlots {
    /// The image's id and length.
    pub(crate) image_id: u64,
    pub(crate) image_len: usize,
    slots: Mutex<Vec<Reservation>>,
}

impl WarmSlots {
    /// A warm reservation of `len` usable bytes, if one is parked.
    pub(crate) fn take(&self, len: usize) -> Option<Reservation> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let i = slots.iter().rposition(|r| r.len() == len)?;
        WARM_TOTAL.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        Some(slots.swap_remove(i))
    }

    /// Parks `r` (already put back to the image); hands it back if full.
    pub(crate) fn put(&self, r: Reservation) -> Result<(), Reservation> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() >= MAX_WARM_SLOTS {
            return Err(r);
        }
        let total = WARM_TOTAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if total >= MAX_WARM_SLOTS_TOTAL {
            WARM_TOTAL.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return Err(r);
        }
        slots.push(r);
        Ok(())
    }
}

impl Drop for WarmSlots {
    fn drop(&mut self) {
        let slots = self.slots.get_mut().unwrap_or_else(|e| e.into_inner());
        WARM_TOTAL.fetch_sub(slots.len(), std::sync::atomic::Ordering::Relaxed);
        // The reservations drop now: wiped back to their pool or unmapped.
    }
}

/// Errors from creating a memory image.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// A system call on the memfd failed.
    #[error("{op} failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Os {
        /// The call that failed.
        op: &'static str,
        /// The OS error number.
        errno: i32,
    },
    /// A mapping could not be made.
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

/// The contents of a linear memory in a sealed, anonymous in-memory file.
///
/// Cheap to share between threads (`Send + Sync`); every memory restored
/// from it maps the same physical pages until it writes to them.
#[derive(Debug)]
pub struct MemoryImage {
    id: u64,
    fd: OwnedFd,
    /// Length in bytes, a multiple of the host page size.
    len: usize,
    /// Reservations that still have this image mapped.
    warm: Arc<WarmSlots>,
    /// The runs of non-zero pages, as byte ranges (the rest are holes).
    runs: Vec<(usize, usize)>,
}

impl MemoryImage {
    /// Builds an image holding `bytes` (its length is rounded up to the
    /// host page size; the tail reads as zero). Pages that are entirely
    /// zero are not written, so they take no memory in the image.
    pub fn new(bytes: &[u8]) -> Result<MemoryImage, ImageError> {
        let len = round_up_to_page(bytes.len()).ok_or(MemoryError::TooLarge {
            requested: bytes.len(),
            limit: isize::MAX as usize,
        })?;
        // SAFETY: memfd_create takes a NUL-terminated name and flags; it
        // returns a new descriptor we own, or -1.
        let fd = unsafe {
            libc::memfd_create(
                c"faaslet-image".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(ImageError::Os {
                op: "memfd_create",
                errno: errno(),
            });
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate on our own descriptor.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(ImageError::Os {
                op: "ftruncate",
                errno: errno(),
            });
        }
        // Write runs of non-zero pages; zero pages stay holes.
        let page = host_page_size();
        let is_zero = |p: usize| {
            let end = ((p + 1) * page).min(bytes.len());
            bytes[p * page..end].iter().all(|&b| b == 0)
        };
        let pages = bytes.len().div_ceil(page);
        let mut runs = Vec::new();
        let mut p = 0;
        while p < pages {
            if is_zero(p) {
                p += 1;
                continue;
            }
            let start = p;
            while p < pages && !is_zero(p) {
                p += 1;
            }
            let from = start * page;
            let to = (p * page).min(bytes.len());
            runs.push((from, to));
            let mut done = from;
            while done < to {
                // SAFETY: writes from a live slice range into our descriptor.
                let n = unsafe {
                    libc::pwrite(
                        fd.as_raw_fd(),
                        bytes[done..to].as_ptr().cast(),
                        to - done,
                        done as libc::off_t,
                    )
                };
                if n <= 0 {
                    return Err(ImageError::Os {
                        op: "pwrite",
                        errno: errno(),
                    });
                }
                done += n as usize;
            }
        }
        // Seal it: nobody can change an image once made.
        let seals =
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on our own descriptor with an int argument.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(ImageError::Os {
                op: "fcntl(F_ADD_SEALS)",
                errno: errno(),
            });
        }
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(MemoryImage {
            id,
            fd,
            len,
            warm: Arc::new(WarmSlots {
                image_id: id,
                image_len: len,
                slots: Mutex::new(Vec::new()),
            }),
            runs,
        })
    }

    /// A process-unique id of this image.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Length in bytes (a multiple of the host page size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the image holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes in the image's non-zero pages (what copying it costs).
    pub fn nonzero_bytes(&self) -> usize {
        self.runs.iter().map(|(a, b)| b - a).sum()
    }

    /// Copies the image's non-zero pages into the start of `reservation`,
    /// which must be accessible over the image's length and read zero
    /// elsewhere (one `pread` per run of non-zero pages; none for an
    /// all-zero image).
    pub fn copy_into(&self, reservation: &Reservation) -> Result<(), MemoryError> {
        if self.len > reservation.len() {
            return Err(MemoryError::OutOfBounds {
                offset: 0,
                len: self.len,
                reserved: reservation.len(),
            });
        }
        for &(from, to) in &self.runs {
            let mut done = from;
            while done < to {
                // SAFETY: [from, to) lies inside the image and so inside the
                // reservation (checked above); the caller owns the
                // reservation, made it accessible there and holds no Rust
                // references into it (a LinearMemory being built or reset
                // with `&mut`). pread only writes that range.
                let n = unsafe {
                    libc::pread(
                        self.fd.as_raw_fd(),
                        reservation.base().add(done).cast(),
                        to - done,
                        done as libc::off_t,
                    )
                };
                if n <= 0 {
                    return Err(MemoryError::Mmap {
                        len: to - done,
                        errno: errno(),
                    });
                }
                done += n as usize;
            }
        }
        Ok(())
    }

    /// How many warm slots (reservations with this image still mapped,
    /// see the [module docs](self)) are parked.
    pub fn warm_slots(&self) -> usize {
        self.warm
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub(crate) fn warm(&self) -> &Arc<WarmSlots> {
        &self.warm
    }

    /// Copies the image's contents out (e.g. to serialise it).
    pub fn read(&self) -> Result<Vec<u8>, ImageError> {
        let mut out = vec![0u8; self.len];
        let mut done = 0;
        while done < self.len {
            // SAFETY: reads into a live buffer range from our descriptor.
            let n = unsafe {
                libc::pread(
                    self.fd.as_raw_fd(),
                    out[done..].as_mut_ptr().cast(),
                    self.len - done,
                    done as libc::off_t,
                )
            };
            if n <= 0 {
                return Err(ImageError::Os {
                    op: "pread",
                    errno: errno(),
                });
            }
            done += n as usize;
        }
        Ok(out)
    }

    /// Maps the image read-write, copy-on-write, over the first
    /// [`len`](Self::len) bytes of `reservation`, replacing whatever was
    /// there. One system call.
    pub fn map_into(&self, reservation: &Reservation) -> Result<(), MemoryError> {
        if self.len == 0 {
            return Ok(());
        }
        if self.len > reservation.len() {
            return Err(MemoryError::OutOfBounds {
                offset: 0,
                len: self.len,
                reserved: reservation.len(),
            });
        }
        reservation.map_fixed(
            0,
            self.len,
            libc::PROT_READ | libc::PROT_WRITE,
            MapSource::PrivateFile(self.fd.as_fd()),
        )
    }

    /// Drops every private (written) page of a mapping made by
    /// [`map_into`](Self::map_into), so it reads the image again. One
    /// system call; its cost grows with the pages touched, not the size.
    pub fn reset_mapping(&self, reservation: &Reservation) -> Result<(), MemoryError> {
        if self.len == 0 {
            return Ok(());
        }
        // MADV_DONTNEED on a private file mapping discards the private
        // copies; the next access maps the file's page again.
        reservation.discard(0, self.len)
    }
}

/// Replaces part of a reservation with fresh inaccessible memory (now in
/// [`reservation`](crate::reservation); kept here under its old path).
pub use crate::reservation::wipe;
