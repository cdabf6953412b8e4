//! Page-granular write tracking of shared mappings.
//!
//! A state value mapped into a Faaslet's memory is written by plain guest
//! stores: no host call sees them. To push only what changed without the
//! guest flagging it (Faasm's `__faasm_flag_state_dirty`), the pages of a
//! shared mapping are write-protected with a userfaultfd in *asynchronous*
//! write-protect mode (`UFFD_FEATURE_WP_ASYNC`, Linux 6.7): the first write
//! to a protected page is resolved by the kernel itself, no handler thread
//! and no signal, and the page is left marked as written. `PAGEMAP_SCAN`
//! on `/proc/self/pagemap` then lists the written pages of a range and
//! write-protects them again in the same call (`PM_SCAN_WP_MATCHING`), so
//! a scan is a "take": each write is reported once.
//!
//! Cost: one minor fault per page on its first write after each scan, and
//! a page-table walk per scan (about 10 µs for 16 MiB here); no copy of
//! the value and no memory.
//!
//! Where the kernel lacks either feature (older than 6.7, or userfaultfd
//! forbidden), [`available`] is false, nothing is tracked and callers fall
//! back to explicit dirty flags.
//!
//! Soundness: write-protecting a range changes no contents and is only
//! ever applied to shared mappings this crate made inside reservations it
//! owns; a write to a protected page never blocks, because the descriptor
//! is only used in asynchronous mode (the handshake fails otherwise, and
//! then nothing is registered).

use crate::reservation::{errno, MemoryError};
use std::fs::File;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

// From linux/userfaultfd.h and linux/fs.h (newer than this system's
// headers): ioctl numbers are _IOWR(type, nr, size).
const fn iowr(ty: u8, nr: u8, size: usize) -> libc::c_ulong {
    ((3u64 << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64) as libc::c_ulong
}
const UFFD_API: u64 = 0xAA;
const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
const PAGE_IS_WRITTEN: u64 = 1 << 1;
const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}
#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}
#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}
#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}
#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

const UFFDIO_API: libc::c_ulong = iowr(0xAA, 0x3F, std::mem::size_of::<UffdioApi>());
const UFFDIO_REGISTER: libc::c_ulong = iowr(0xAA, 0x00, std::mem::size_of::<UffdioRegister>());
const UFFDIO_WRITEPROTECT: libc::c_ulong =
    iowr(0xAA, 0x06, std::mem::size_of::<UffdioWriteprotect>());
const PAGEMAP_SCAN: libc::c_ulong = iowr(b'f', 16, std::mem::size_of::<PmScanArg>());

struct Tracker {
    uffd: OwnedFd,
    pagemap: File,
}

fn tracker() -> Option<&'static Tracker> {
    static T: OnceLock<Option<Tracker>> = OnceLock::new();
    T.get_or_init(|| {
        if std::env::var_os("FAASLET_NO_WRITE_TRACKING").is_some() {
            return None;
        }
        // SAFETY: the userfaultfd system call takes only flags.
        let fd =
            unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a fresh descriptor returned by the kernel, owned here.
        let uffd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: UFFD_FEATURE_WP_ASYNC
                | UFFD_FEATURE_WP_HUGETLBFS_SHMEM
                | UFFD_FEATURE_WP_UNPOPULATED,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes one `UffdioApi`.
        if unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, &mut api) } != 0 {
            return None;
        }
        let pagemap = File::open("/proc/self/pagemap").ok()?;
        let t = Tracker { uffd, pagemap };
        probe(&t).then_some(t)
    })
    .as_ref()
}

/// Checks, on a scratch shared mapping, that a write to a protected page
/// completes and is reported exactly once.
fn probe(t: &Tracker) -> bool {
    let page = crate::host_page_size();
    // SAFETY: a fresh anonymous shared mapping, placed by the kernel.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    let base = p as *mut u8;
    let ok = (|| {
        protect(t, base, 2 * page).ok()?;
        // SAFETY: inside the scratch mapping; resolved asynchronously.
        unsafe { base.add(page).write_volatile(1) };
        let mut out = Vec::new();
        scan(t, base, 2 * page, &mut out).ok()?;
        let mut again = Vec::new();
        scan(t, base, 2 * page, &mut again).ok()?;
        (out.len() == 1 && out[0] == (page..2 * page) && again.is_empty()).then_some(())
    })()
    .is_some();
    // SAFETY: our scratch mapping, unmapped once.
    unsafe { libc::munmap(p, 2 * page) };
    ok
}

fn protect(t: &Tracker, addr: *mut u8, len: usize) -> Result<(), MemoryError> {
    let range = || UffdioRange {
        start: addr as u64,
        len: len as u64,
    };
    let mut reg = UffdioRegister {
        range: range(),
        mode: UFFDIO_REGISTER_MODE_WP,
        ioctls: 0,
    };
    let fail = |len| MemoryError::Track {
        len,
        errno: errno(),
    };
    // SAFETY: UFFDIO_REGISTER reads and writes one `UffdioRegister`; the
    // range is a shared mapping the caller owns.
    if unsafe { libc::ioctl(t.uffd.as_raw_fd(), UFFDIO_REGISTER, &mut reg) } != 0 {
        return Err(fail(len));
    }
    let mut wp = UffdioWriteprotect {
        range: range(),
        mode: UFFDIO_WRITEPROTECT_MODE_WP,
    };
    // SAFETY: UFFDIO_WRITEPROTECT reads one `UffdioWriteprotect`.
    if unsafe { libc::ioctl(t.uffd.as_raw_fd(), UFFDIO_WRITEPROTECT, &mut wp) } != 0 {
        return Err(fail(len));
    }
    Ok(())
}

fn scan(
    t: &Tracker,
    addr: *mut u8,
    len: usize,
    out: &mut Vec<Range<usize>>,
) -> Result<(), MemoryError> {
    scan_pages(&t.pagemap, Query::WrittenProtectAgain, addr, len, out)
}

/// What a [`scan_pages`] lists.
#[derive(Clone, Copy)]
enum Query {
    /// Pages written since they were last protected, protecting them again
    /// (userfaultfd asynchronous write-protect).
    WrittenProtectAgain,
    /// Pages of a private file mapping that hold private copies (written
    /// since mapped): present or swapped, and not the file's own page.
    PrivateCopies,
}

fn scan_pages(
    pagemap: &File,
    query: Query,
    addr: *mut u8,
    len: usize,
    out: &mut Vec<Range<usize>>,
) -> Result<(), MemoryError> {
    let mut regions = [PageRegion::default(); 256];
    let base = addr as u64;
    let end = base + len as u64;
    let mut at = base;
    while at < end {
        // A page matches when `(categories ^ inverted) & mask == mask`
        // and, if `anyof` is set, `(categories ^ inverted) & anyof != 0`.
        let (flags, inverted, mask, anyof, ret) = match query {
            Query::WrittenProtectAgain => (
                PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                0,
                PAGE_IS_WRITTEN,
                0,
                PAGE_IS_WRITTEN,
            ),
            // Not the file's page, and present or swapped out.
            Query::PrivateCopies => (
                0,
                PAGE_IS_FILE,
                PAGE_IS_FILE,
                PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            ),
        };
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags,
            start: at,
            end,
            walk_end: 0,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            max_pages: 0,
            category_inverted: inverted,
            category_mask: mask,
            category_anyof_mask: anyof,
            return_mask: ret,
        };
        // SAFETY: PAGEMAP_SCAN reads `arg` and writes at most `vec_len`
        // regions into `regions`; the range is inside a mapping the caller
        // owns.
        let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
        if n < 0 {
            return Err(MemoryError::Track {
                len,
                errno: errno(),
            });
        }
        for r in &regions[..n as usize] {
            let r = (r.start - base) as usize..(r.end - base) as usize;
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
        }
        if arg.walk_end <= at {
            break;
        }
        at = arg.walk_end;
    }
    Ok(())
}

/// `/proc/self/pagemap`, opened once (`None` where it cannot be).
fn pagemap() -> Option<&'static File> {
    static P: OnceLock<Option<File>> = OnceLock::new();
    P.get_or_init(|| File::open("/proc/self/pagemap").ok())
        .as_ref()
}

/// Appends to `out` the page ranges of `[addr, addr + len)` (relative to
/// `addr`, merged) that hold private copies: in a private (copy-on-write)
/// mapping of a file, the pages written since they were mapped, present
/// or swapped out. One `PAGEMAP_SCAN` (Linux 6.7) per 256 ranges; an
/// error where the kernel lacks it. The range must be a mapping the
/// caller owns and nobody else changes during the scan.
pub(crate) fn private_copies(
    addr: *mut u8,
    len: usize,
    out: &mut Vec<Range<usize>>,
) -> Result<(), MemoryError> {
    let p = pagemap().ok_or(MemoryError::Track { len, errno: 0 })?;
    scan_pages(p, Query::PrivateCopies, addr, len, out)
}

/// Whether this kernel tracks writes to shared mappings (userfaultfd
/// asynchronous write-protect and `PAGEMAP_SCAN`, Linux 6.7). Setting
/// `FAASLET_NO_WRITE_TRACKING` turns it off.
pub fn available() -> bool {
    tracker().is_some()
}

/// Starts tracking writes to `[addr, addr + len)`, a shared mapping the
/// caller owns. Errors if tracking is unavailable or refused.
pub(crate) fn track(addr: *mut u8, len: usize) -> Result<(), MemoryError> {
    let t = tracker().ok_or(MemoryError::Track { len, errno: 0 })?;
    protect(t, addr, len)
}

/// Appends to `out` the page ranges of `[addr, addr + len)` (relative to
/// `addr`) written since tracking began or the last take, and protects
/// them again.
pub(crate) fn take_written(
    addr: *mut u8,
    len: usize,
    out: &mut Vec<Range<usize>>,
) -> Result<(), MemoryError> {
    let t = tracker().ok_or(MemoryError::Track { len, errno: 0 })?;
    scan(t, addr, len, out)
}

/// A handle on one tracked shared mapping of a [`LinearMemory`](crate::LinearMemory)
/// that any thread may use, for as long as the mapping exists, to take
/// the pages written through it. This is how a push by one Faaslet finds
/// what another Faaslet, still running, wrote through its own mapping of
/// the same value: each write is taken once, by whichever side scans
/// first.
///
/// Soundness: the scan is an `ioctl` on an address range of this process,
/// which would touch whatever mapping lives there at the time. The memory
/// therefore closes the handle (under its lock, waiting for a scan in
/// progress) *before* it replaces the shared mapping; a closed handle
/// scans nothing.
#[derive(Debug, Clone)]
pub struct WrittenPages {
    range: std::sync::Arc<std::sync::Mutex<Option<(usize, usize)>>>,
}

impl WrittenPages {
    /// A handle on the tracked mapping at `[addr, addr + len)`.
    pub(crate) fn new(addr: *mut u8, len: usize) -> WrittenPages {
        WrittenPages {
            range: std::sync::Arc::new(std::sync::Mutex::new(Some((addr as usize, len)))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(usize, usize)>> {
        self.range.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pages written since the last take (byte ranges relative to the
    /// mapping's start, page granular, merged), protecting them again; or
    /// `None` once the mapping is gone.
    pub fn take(&self) -> Option<Result<Vec<Range<usize>>, MemoryError>> {
        let guard = self.lock();
        let (addr, len) = (*guard)?;
        let mut out = Vec::new();
        // The lock stays held during the scan: the owner cannot close the
        // handle (and then unmap) until it is done.
        Some(take_written(addr as *mut u8, len, &mut out).map(|()| out))
    }

    /// Whether the mapping still exists.
    pub fn is_open(&self) -> bool {
        self.lock().is_some()
    }

    /// Closes the handle; waits for a scan in progress. Called by the
    /// memory before the mapping is replaced.
    pub(crate) fn close(&self) {
        *self.lock() = None;
    }
}
