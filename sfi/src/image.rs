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

/// Most bytes of written pages a memory parked in a warm slot keeps as
/// private copies (put back to the image's contents by copying, see
/// [`set_keep_written`]); a memory that wrote more drops them all.
pub const KEEP_WRITTEN_LIMIT: usize = 1 << 20;

static KEEP_WRITTEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether a memory parked in a warm slot keeps the pages it wrote as
/// private copies, put back to the image's bytes by copying (the default,
/// `true`), or drops them with `madvise(MADV_DONTNEED)` (`false`).
///
/// Keeping them means the next memory made from the slot takes no page
/// fault on those pages: in a virtual machine a copy-on-write fault costs
/// about 2 µs and dropping a private page about as much again, copying a
/// page back about 0.1 µs. The cost is memory: a parked slot holds up to
/// [`KEEP_WRITTEN_LIMIT`] bytes of private pages instead of none. Which
/// pages are private copies is read from the page tables
/// (`PAGEMAP_SCAN`, Linux 6.7); without it, or past the limit, pages are
/// dropped as before. Finding those pages walks the page table of the
/// whole image (every page mapped, read or written), so an image whose
/// put-backs find the walk dearer than the faults it saves (a large image
/// of which calls read much and write little) drops them instead, trying
/// again every 64 put-backs. A process-wide switch, for comparing the two.
pub fn set_keep_written(keep: bool) {
    KEEP_WRITTEN.store(keep, std::sync::atomic::Ordering::Relaxed);
}

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
    /// The image's bytes, read-only, for copying written pages back.
    view: ImageView,
    /// Put-backs so far.
    put_backs: std::sync::atomic::AtomicU32,
    /// Whether the last put-back that kept written pages found the
    /// `PAGEMAP_SCAN` cheaper than the faults the kept pages save.
    keep_pays: std::sync::atomic::AtomicBool,
}

/// What keeping one written page mapped saves the next call, roughly: a
/// copy-on-write fault (0.5 µs on bare metal, 2 µs in a virtual machine)
/// and dropping the page.
const KEPT_PAGE_SAVES_NS: u128 = 1000;

/// An image whose put-backs stopped keeping written pages tries again
/// every this many put-backs.
const KEEP_RETRY_EVERY: u32 = 64;

/// A read-only shared mapping of an image's memfd, made on first use.
#[derive(Debug)]
struct ImageView {
    fd: OwnedFd,
    len: usize,
    /// The mapping's address (0: it could not be made).
    addr: std::sync::OnceLock<usize>,
}

impl ImageView {
    /// The image's `len` bytes, or `None` if they cannot be mapped.
    fn bytes(&self) -> Option<*const u8> {
        let addr = *self.addr.get_or_init(|| {
            // SAFETY: a new read-only shared mapping of our own sealed
            // memfd (write-sealed: no writable shared mapping may exist,
            // a read-only one may), placed by the kernel.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    self.len,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    self.fd.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                0
            } else {
                p as usize
            }
        });
        (addr != 0).then_some(addr as *const u8)
    }
}

impl Drop for ImageView {
    fn drop(&mut self) {
        if let Some(&addr) = self.addr.get() {
            if addr != 0 {
                // SAFETY: our own mapping of `len` bytes, unmapped once;
                // nothing borrows it past `put_back`.
                unsafe { libc::munmap(addr as *mut libc::c_void, self.len) };
            }
        }
    }
}

impl WarmSlots {
    /// Puts the first `image_len` bytes of `r` (the image mapped
    /// copy-on-write over them, written since) back to the image's
    /// contents: by copying the image's bytes over the pages that hold
    /// private copies, which stay mapped (see [`set_keep_written`]), or
    /// else by dropping them.
    pub(crate) fn put_back(&self, r: &Reservation) -> Result<(), MemoryError> {
        let len = self.image_len;
        if len == 0 {
            return Ok(());
        }
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.put_backs.fetch_add(1, Relaxed);
        // Try keeping the pages while it pays, and every so often anyway
        // (what a call writes, and so what keeping saves, may change).
        let try_keep = KEEP_WRITTEN.load(Relaxed)
            && (self.keep_pays.load(Relaxed) || n.is_multiple_of(KEEP_RETRY_EVERY));
        if try_keep {
            let t = std::time::Instant::now();
            let mut runs = Vec::new();
            let listed = crate::writes::private_copies(r.base(), len, &mut runs).is_ok();
            let scan = t.elapsed();
            let bytes: usize = runs.iter().map(|x| x.len()).sum();
            // The scan walks every mapped page of the image (pages only
            // ever read stay mapped too, so this grows over calls); it pays
            // while it costs less than the faults the kept pages save.
            let saves = (bytes / crate::host_page_size()) as u128 * KEPT_PAGE_SAVES_NS;
            self.keep_pays.store(scan.as_nanos() <= saves, Relaxed);
            if let (true, true, Some(src)) =
                (listed, bytes <= KEEP_WRITTEN_LIMIT, self.view.bytes())
            {
                for run in runs {
                    if run.end > len {
                        return r.discard(0, len);
                    }
                    // SAFETY: `run` lies inside `[0, len)` (checked), which
                    // is inside both the image view (`len` bytes) and the
                    // reservation's accessible start (the image is mapped
                    // there read-write; the caller owns the memory and no
                    // reference into it is alive). The two mappings never
                    // overlap.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            src.add(run.start),
                            r.base().add(run.start),
                            run.len(),
                        )
                    };
                }
                return Ok(());
            }
        }
        // Drop the private copies: the image's pages show through again.
        r.discard(0, len)
    }

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
        let view_fd = fd.try_clone().map_err(|e| ImageError::Os {
            op: "dup",
            errno: e.raw_os_error().unwrap_or(0),
        })?;
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
                view: ImageView {
                    fd: view_fd,
                    len,
                    addr: std::sync::OnceLock::new(),
                },
                put_backs: std::sync::atomic::AtomicU32::new(0),
                keep_pays: std::sync::atomic::AtomicBool::new(true),
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
