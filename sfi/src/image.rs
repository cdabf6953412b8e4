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

use crate::memory::{host_page_size, round_up_to_page, MemoryError, Reservation};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
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
        Ok(MemoryImage { id, fd, len })
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
        // SAFETY: the range [base, base + len) lies inside the reservation,
        // which we were handed by reference from its owner (a LinearMemory
        // being built or reset with `&mut`), so no Rust reference into those
        // bytes is live; MAP_FIXED replaces only that range.
        let p = unsafe {
            libc::mmap(
                reservation.base().cast(),
                self.len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                self.fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(MemoryError::Mmap {
                len: self.len,
                errno: errno(),
            });
        }
        Ok(())
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

/// Replaces `[offset, offset + len)` of `reservation` with fresh,
/// inaccessible, zero anonymous memory: one `mmap(MAP_FIXED)`, whatever was
/// mapped there (image pages, private copies, grown pages).
pub fn wipe(reservation: &Reservation, offset: usize, len: usize) -> Result<(), MemoryError> {
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
        reserved: reservation.len(),
    };
    let rounded = round_up_to_page(len).ok_or(oob.clone())?;
    if offset
        .checked_add(rounded)
        .is_none_or(|e| e > reservation.len())
    {
        return Err(oob);
    }
    if rounded == 0 {
        return Ok(());
    }
    // SAFETY: the range is page-aligned and inside the reservation (checked
    // above); callers own the reservation and hold no references into it.
    let p = unsafe {
        libc::mmap(
            reservation.base().add(offset).cast(),
            rounded,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
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
