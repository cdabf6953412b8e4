//! [`MemoryData`]: the storage of every linear memory, private or shared.
//!
//! Every linear memory's storage is a [`MemoryData`] behind an `Arc`: the
//! sfi reservation, its fixed base address, and the [`VMMemory`] that JIT
//! code reads (base and current length). A store's memory entry holds the
//! `Arc`, and every vmctx that uses the memory points at the one `VMMemory`
//! inside it. For an ordinary memory the `Arc` is unique. For a shared
//! memory (`(memory 1 2 shared)`) the same `MemoryData` is entered into as
//! many stores as import it (see `SharedMemory::to_memory`), so all of
//! them see the same bytes and the same length:
//!
//! * The base never changes: memories grow in place inside their
//!   reservation (4 GiB + guard in guard-page mode; the declared maximum,
//!   which shared memories must have, in explicit mode).
//! * Growth is serialised by a mutex; the new length is published with an
//!   atomic store after the pages are made accessible, so a thread that sees
//!   the new length can use the pages. The length only ever increases.
//!
//! `memory.atomic.wait` and `notify` on a memory go to the process-wide
//! parking lot (`crate::parking_lot`), keyed by absolute address.

use crate::engine::{Bounds, Config};
use crate::parking_lot::parking_lot;
use crate::trap::Error;
use faaslet_jit::abi::VMMemory;
use faaslet_jit::MemoryType;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The storage of one linear memory (see the [module docs](self)).
pub(crate) struct MemoryData {
    /// Touched only under `grow_lock` (to grow) and on drop.
    mem: UnsafeCell<faaslet_sfi::LinearMemory>,
    /// What JIT code reads. `base` is fixed; `length` is written atomically
    /// under `grow_lock` and read atomically (or by aligned 8-byte loads in
    /// JIT code).
    vm: UnsafeCell<VMMemory>,
    base: *mut u8,
    pub(crate) ty: MemoryType,
    /// Largest size in pages this memory may reach.
    pub(crate) limit_pages: u64,
    /// The bounds mode the reservation was made for.
    pub(crate) bounds: Bounds,
    grow_lock: Mutex<()>,
}

// SAFETY: `mem` is only accessed under `grow_lock` (or with unique access
// on drop); `vm.base` and `base` never change after construction; `vm.length`
// is only accessed atomically from Rust (JIT code reads it with aligned
// 8-byte loads, which are atomic on the supported targets). The bytes of the
// memory itself are raw shared memory, as in the wasm threads proposal.
unsafe impl Send for MemoryData {}
// SAFETY: as above.
unsafe impl Sync for MemoryData {}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Never panic in a builtin: a poisoned lock still guards valid data
    // (every critical section below leaves it consistent at each step).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryData {
    /// Reserves a memory of type `ty` for an engine configured with `config`.
    pub(crate) fn new(config: &Config, ty: MemoryType) -> Result<MemoryData, Error> {
        Self::new_with(config, ty, None)
    }

    /// Reserves a memory of type `ty` whose contents are `image`, mapped
    /// copy-on-write straight into the reservation (one system call, or
    /// none when a warm slot of the image is parked; no accessible prefix
    /// is made first). Its length is the image's.
    pub(crate) fn from_image(
        config: &Config,
        ty: MemoryType,
        image: &faaslet_sfi::MemoryImage,
    ) -> Result<MemoryData, Error> {
        if ty.shared {
            return Err(Error::Type(
                "a shared memory cannot be restored from a snapshot".into(),
            ));
        }
        Self::new_with(config, ty, Some(image))
    }

    fn new_with(
        config: &Config,
        ty: MemoryType,
        image: Option<&faaslet_sfi::MemoryImage>,
    ) -> Result<MemoryData, Error> {
        let page = faaslet_sfi::WASM_PAGE as u64;
        if ty.shared && ty.maximum.is_none() {
            return Err(Error::Type("a shared memory must have a maximum".into()));
        }
        // A 64-bit memory too is held to 4 GiB (65,536 pages): its
        // reservation is a 32-bit memory's, and every access to it is
        // checked against its length (the JIT never leaves a 64-bit index
        // to the guard pages).
        let spec_max = ty.maximum.unwrap_or(65536).min(65536);
        // Checked, although `Config::validate` bounds every input: the
        // JIT elides bounds checks on the promise that this reservation
        // really is 4 GiB + guard long, so a wrapped sum must never reach
        // the mmap.
        let too_large = || Error::Resource("memory reservation size overflows".into());
        let (reserve, limit_pages) = match config.bounds {
            Bounds::GuardPages { guard_size } => (
                (4u64 << 30).checked_add(guard_size).ok_or_else(too_large)?,
                spec_max,
            ),
            Bounds::Explicit => {
                // The cap bounds the declared minimum as well as growth.
                let cap_pages = config.explicit_reservation_cap / page;
                let pages = spec_max.min(cap_pages);
                (pages.checked_mul(page).ok_or_else(too_large)?, pages)
            }
        };
        let reserve = usize::try_from(reserve).map_err(|_| too_large())?;
        if ty.minimum > limit_pages {
            return Err(Error::Resource(format!(
                "memory of {} pages exceeds the limit of {limit_pages} pages{}",
                ty.minimum,
                if matches!(config.bounds, Bounds::Explicit) {
                    " (explicit_reservation_cap)"
                } else {
                    ""
                }
            )));
        }
        // Explicit bounds without canaries: every access is checked, so the
        // reservation needs no guard and no inaccessible tail. It is mapped
        // accessible throughout (growing is then free), and neighbouring
        // memories merge into one kernel mapping, so very many fit under
        // vm.max_map_count. If such a mapping is refused (strict
        // overcommit), a guarded one is made instead. With canaries (the
        // default) explicit memories are guarded like the others, only
        // smaller.
        let unguarded = matches!(config.bounds, Bounds::Explicit) && !config.explicit_canaries;
        let max = Some((limit_pages * page) as usize);
        let mem = match image {
            None if unguarded => {
                faaslet_sfi::LinearMemory::new_unguarded((ty.minimum * page) as usize, max, reserve)
                    .or_else(|_| {
                        faaslet_sfi::LinearMemory::new((ty.minimum * page) as usize, max, reserve)
                    })
                    .map_err(|e| Error::Resource(format!("memory reservation failed: {e}")))?
            }
            None => faaslet_sfi::LinearMemory::new(
                (ty.minimum * page) as usize,
                Some((limit_pages * page) as usize),
                reserve,
            )
            .map_err(|e| Error::Resource(format!("memory reservation failed: {e}")))?,
            Some(image) => {
                if (image.len() as u64) < ty.minimum * page {
                    return Err(Error::Resource(format!(
                        "snapshot memory of {} bytes is below the minimum of {} pages",
                        image.len(),
                        ty.minimum
                    )));
                }
                // Unguarded: small images are copied in. Guarded: a warm
                // slot of the image when one is parked (no system call; the
                // memory parks there again when dropped).
                let pooled = || faaslet_sfi::LinearMemory::from_image_pooled(image, reserve, max);
                if unguarded {
                    faaslet_sfi::LinearMemory::from_image_unguarded(image, reserve, max)
                        .or_else(|_| pooled())
                } else {
                    pooled()
                }
                .map_err(|e| Error::Resource(format!("mapping snapshot memory failed: {e}")))?
            }
        };
        let base = mem.base();
        let length = mem.len() as u64;
        Ok(MemoryData {
            mem: UnsafeCell::new(mem),
            vm: UnsafeCell::new(VMMemory { base, length }),
            base,
            ty,
            limit_pages,
            bounds: config.bounds,
            grow_lock: Mutex::new(()),
        })
    }

    /// The `VMMemory` JIT code reads; lives as long as `self`.
    pub(crate) fn vm_ptr(&self) -> *mut VMMemory {
        self.vm.get()
    }

    fn length_atomic(&self) -> &AtomicU64 {
        // SAFETY: `length` is an aligned u64 inside `self`, and every Rust
        // access to it goes through this atomic view.
        unsafe { AtomicU64::from_ptr(std::ptr::addr_of_mut!((*self.vm.get()).length)) }
    }

    /// Current size in bytes.
    pub(crate) fn length(&self) -> u64 {
        self.length_atomic().load(Ordering::SeqCst)
    }

    /// The whole reservation, canary and guard included.
    pub(crate) fn mapped_range(&self) -> std::ops::Range<usize> {
        let _guard = lock(&self.grow_lock);
        // SAFETY: `mem` is only touched under `grow_lock`, which we hold.
        unsafe { &*self.mem.get() }.mapped_range()
    }

    /// Address of byte 0.
    pub(crate) fn base(&self) -> *mut u8 {
        self.base
    }

    /// Current size in pages.
    pub(crate) fn pages(&self) -> u64 {
        self.length() / faaslet_sfi::WASM_PAGE as u64
    }

    /// Grows by `delta` pages; returns the old size, or None on failure.
    pub(crate) fn grow(&self, delta: u64) -> Option<u64> {
        let _guard = lock(&self.grow_lock);
        let page = faaslet_sfi::WASM_PAGE as u64;
        let old = self.length() / page;
        let new = old.checked_add(delta)?;
        if new > self.limit_pages {
            return None;
        }
        if delta > 0 {
            // SAFETY: `mem` is only touched under `grow_lock`, which we hold.
            let mem = unsafe { &mut *self.mem.get() };
            mem.grow_to(new as usize * faaslet_sfi::WASM_PAGE).ok()?;
            self.length_atomic().store(new * page, Ordering::SeqCst);
        }
        Some(old)
    }

    /// Grows the memory by enough pages for `len` bytes and maps the first
    /// `len` bytes of `fd` over them, shared (see
    /// `faaslet_sfi::LinearMemory::map_shared`); returns the address of
    /// the first mapped byte (the old length).
    ///
    /// # Safety
    ///
    /// `fd` must not be truncated below `len` (page-rounded) while the
    /// mapping lasts (until the memory is reset, re-imaged or dropped).
    pub(crate) unsafe fn map_shared(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        len: usize,
    ) -> Result<u64, Error> {
        if self.ty.shared {
            return Err(Error::Resource(
                "state cannot be mapped into a shared memory".into(),
            ));
        }
        let page = faaslet_sfi::WASM_PAGE as u64;
        let pages = (len as u64).div_ceil(page).max(1);
        let _guard = lock(&self.grow_lock);
        let old = self.length() / page;
        let full = || {
            Error::Resource(format!(
                "memory of {old} pages cannot grow by {pages} pages for a {len}-byte mapping (limit {} pages)",
                self.limit_pages
            ))
        };
        let new = old
            .checked_add(pages)
            .filter(|&n| n <= self.limit_pages)
            .ok_or_else(full)?;
        // SAFETY: `mem` is only touched under `grow_lock`, which we hold;
        // the memory is not shared, so no other thread runs in it.
        let mem = unsafe { &mut *self.mem.get() };
        mem.grow_to(new as usize * faaslet_sfi::WASM_PAGE)
            .map_err(|_| full())?;
        self.length_atomic().store(new * page, Ordering::SeqCst);
        let at = (old * page) as usize;
        // SAFETY: the caller keeps `fd` long enough (our own contract).
        unsafe { mem.map_shared(at, len, fd) }
            .map_err(|e| Error::Resource(format!("mapping state into memory failed: {e}")))?;
        Ok(at as u64)
    }

    /// A handle on the tracked shared mapping at byte `at` that other
    /// threads can take its writes through while it exists.
    pub(crate) fn written_pages(&self, at: u64) -> Option<faaslet_sfi::writes::WrittenPages> {
        let _guard = lock(&self.grow_lock);
        // SAFETY: `mem` is only touched under `grow_lock`, which we hold.
        let mem = unsafe { &*self.mem.get() };
        mem.written_pages(usize::try_from(at).ok()?)
    }

    /// The pages written since the last take in the tracked shared mapping
    /// that starts at byte `at` (see
    /// `faaslet_sfi::LinearMemory::take_written`).
    pub(crate) fn take_written(&self, at: u64) -> Result<Option<Vec<std::ops::Range<u64>>>, Error> {
        let _guard = lock(&self.grow_lock);
        // SAFETY: `mem` is only touched under `grow_lock`, which we hold.
        let mem = unsafe { &*self.mem.get() };
        let Ok(at) = usize::try_from(at) else {
            return Ok(None);
        };
        mem.take_written(at)
            .map(|o| {
                o.map(|v| {
                    v.into_iter()
                        .map(|r| r.start as u64..r.end as u64)
                        .collect()
                })
            })
            .map_err(|e| Error::Resource(format!("write tracking failed: {e}")))
    }

    /// The page-rounded byte ranges where files are mapped shared.
    pub(crate) fn shared_segments(&self) -> Vec<std::ops::Range<usize>> {
        let _guard = lock(&self.grow_lock);
        // SAFETY: `mem` is only touched under `grow_lock`, which we hold.
        let mem = unsafe { &*self.mem.get() };
        mem.shared_segments().to_vec()
    }

    /// Whether a file is mapped shared anywhere in the memory (so other
    /// threads may write its bytes).
    pub(crate) fn has_shared_segments(&self) -> bool {
        let _guard = lock(&self.grow_lock);
        // SAFETY: `mem` is only touched under `grow_lock`, which we hold.
        let mem = unsafe { &*self.mem.get() };
        !mem.shared_segments().is_empty()
    }

    /// Whether `[addr, addr + size)` lies inside the memory.
    pub(crate) fn in_bounds(&self, addr: u64, size: u64) -> bool {
        addr.checked_add(size).is_some_and(|e| e <= self.length())
    }

    /// `memory.atomic.notify` at byte `addr`: wakes up to `count` waiters.
    /// The caller has checked bounds and alignment.
    pub(crate) fn notify(&self, addr: u64, count: u32) -> u32 {
        if !self.ty.shared || !self.in_bounds(addr, 4) {
            return 0;
        }
        parking_lot().notify(self.base as usize + addr as usize, count)
    }

    /// `memory.atomic.wait32/64` at byte `addr` (bounds and alignment
    /// already checked by the caller): 0 woken, 1 not equal, 2 timed out,
    /// `WAIT_INTERRUPTED` if `interrupted()` became true while waiting
    /// (checked every `WAIT_POLL`). A negative timeout waits forever.
    pub(crate) fn wait(
        &self,
        addr: u64,
        expected: u64,
        wide: bool,
        timeout_ns: i64,
        interrupted: &dyn Fn() -> bool,
    ) -> u32 {
        let size = if wide { 8 } else { 4 };
        if !self.in_bounds(addr, size) || !addr.is_multiple_of(size) {
            // Unreachable from JIT code (it checks first); be conservative.
            return 1;
        }
        let ptr = self.base as usize + addr as usize;
        let timeout = u64::try_from(timeout_ns).ok().map(Duration::from_nanos);
        parking_lot().wait(ptr, timeout, interrupted, || {
            // SAFETY: `ptr` is in bounds of accessible memory (checked
            // above; memories never shrink) and naturally aligned.
            unsafe {
                if wide {
                    AtomicU64::from_ptr(ptr as *mut u64).load(Ordering::SeqCst) == expected
                } else {
                    AtomicU32::from_ptr(ptr as *mut u32).load(Ordering::SeqCst) == expected as u32
                }
            }
        })
    }
}

// Images (`crate::image`): reset a private memory to a memory image after a
// call (restoring maps it in `MemoryData::from_image`).
impl MemoryData {
    /// Puts the memory back to `image`: only written pages cost anything.
    pub(crate) fn reset_to_image(&self, image: &faaslet_sfi::MemoryImage) -> Result<(), Error> {
        self.with_image(image, true)
    }

    fn with_image(&self, image: &faaslet_sfi::MemoryImage, reset: bool) -> Result<(), Error> {
        if self.ty.shared {
            return Err(Error::Type(
                "a shared memory cannot be restored from a snapshot".into(),
            ));
        }
        if image.len() as u64 > self.limit_pages * faaslet_sfi::WASM_PAGE as u64 {
            return Err(Error::Resource(format!(
                "snapshot memory of {} bytes exceeds the limit of {} pages",
                image.len(),
                self.limit_pages
            )));
        }
        let _guard = lock(&self.grow_lock);
        // SAFETY: `mem` is only touched under `grow_lock`, which we hold;
        // the memory is not shared, so no other thread runs in it.
        let mem = unsafe { &mut *self.mem.get() };
        let r = if reset {
            mem.reset_to_image(image)
        } else {
            mem.map_image(image)
        };
        r.map_err(|e| Error::Resource(format!("mapping snapshot memory failed: {e}")))?;
        self.length_atomic()
            .store(image.len() as u64, Ordering::SeqCst);
        Ok(())
    }
}
