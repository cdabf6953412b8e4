//! Linear memory storage ([`MemoryData`]), [`SharedMemory`] (a memory used
//! by several stores, one per thread, at once) and the parking lot behind
//! `memory.atomic.wait` / `memory.atomic.notify`.
//!
//! # Design
//!
//! Every linear memory's storage is a [`MemoryData`] behind an `Arc`: the
//! sfi reservation, its fixed base address, and the [`VMMemory`] that JIT
//! code reads (base and current length). A store's memory entry holds the
//! `Arc`, and every vmctx that uses the memory points at the one `VMMemory`
//! inside it. For an ordinary memory the `Arc` is unique. For a shared
//! memory (`(memory 1 2 shared)`) the same `MemoryData` is entered into as
//! many stores as import it (see [`SharedMemory::to_memory`]), so all of
//! them see the same bytes and the same length:
//!
//! * The base never changes: memories grow in place inside their
//!   reservation (4 GiB + guard in guard-page mode; the declared maximum,
//!   which shared memories must have, in explicit mode).
//! * Growth is serialised by a mutex; the new length is published with an
//!   atomic store after the pages are made accessible, so a thread that sees
//!   the new length can use the pages. The length only ever increases.
//!
//! `memory.atomic.wait` parks the calling thread in a process-wide table
//! keyed by the *absolute* address of the waited-on word. A shared memory
//! has one mapping, so the absolute address identifies (memory, offset)
//! across all stores; `notify` wakes waiters in FIFO order.

use crate::{Bounds, Engine, Error, Memory, MemoryType, Store};
use faaslet_jit::abi::VMMemory;
use std::cell::UnsafeCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

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
    pub(crate) fn new(config: &crate::Config, ty: MemoryType) -> Result<MemoryData, Error> {
        Self::new_with(config, ty, None)
    }

    /// Reserves a memory of type `ty` whose contents are `image`, mapped
    /// copy-on-write straight into the reservation (one system call, or
    /// none when a warm slot of the image is parked; no accessible prefix
    /// is made first). Its length is the image's.
    pub(crate) fn from_image(
        config: &crate::Config,
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
        config: &crate::Config,
        ty: MemoryType,
        image: Option<&faaslet_sfi::MemoryImage>,
    ) -> Result<MemoryData, Error> {
        let page = faaslet_sfi::WASM_PAGE as u64;
        if ty.memory64 {
            return Err(Error::Resource("64-bit memories are not supported".into()));
        }
        if ty.shared && ty.maximum.is_none() {
            return Err(Error::Type("a shared memory must have a maximum".into()));
        }
        let spec_max = ty.maximum.unwrap_or(65536).min(65536);
        let (reserve, limit_pages) = match config.bounds {
            Bounds::GuardPages { guard_size } => ((4u64 << 30) + guard_size, spec_max),
            Bounds::Explicit => {
                let cap_pages = config.explicit_reservation_cap / page;
                let pages = spec_max.min(cap_pages).max(ty.minimum);
                (pages * page, pages)
            }
        };
        if ty.minimum > limit_pages {
            return Err(Error::Resource(format!(
                "memory of {} pages exceeds the limit of {limit_pages} pages",
                ty.minimum
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
            None if unguarded => faaslet_sfi::LinearMemory::new_unguarded(
                (ty.minimum * page) as usize,
                max,
                reserve as usize,
            )
            .or_else(|_| {
                faaslet_sfi::LinearMemory::new((ty.minimum * page) as usize, max, reserve as usize)
            })
            .map_err(|e| Error::Resource(format!("memory reservation failed: {e}")))?,
            None => faaslet_sfi::LinearMemory::new(
                (ty.minimum * page) as usize,
                Some((limit_pages * page) as usize),
                reserve as usize,
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
                let pooled =
                    || faaslet_sfi::LinearMemory::from_image_pooled(image, reserve as usize, max);
                if unguarded {
                    faaslet_sfi::LinearMemory::from_image_unguarded(image, reserve as usize, max)
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

    /// Whether `[addr, addr + size)` lies inside the memory.
    fn in_bounds(&self, addr: u64, size: u64) -> bool {
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
    /// [`WAIT_INTERRUPTED`] if `interrupted()` became true while waiting
    /// (checked every [`WAIT_POLL`]). A negative timeout waits forever.
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

/// The result of [`SharedMemory::atomic_wait32`] and
/// [`SharedMemory::atomic_wait64`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitResult {
    /// Woken by a notify (wasm result 0).
    Ok,
    /// The value was not the expected one (wasm result 1).
    Mismatch,
    /// The timeout passed (wasm result 2).
    TimedOut,
}

/// A shared linear memory: one set of bytes that several stores (typically
/// one per thread) use at once, as the wasm threads proposal's
/// `(memory min max shared)`.
///
/// `SharedMemory` is `Send + Sync` and cheap to clone. Enter it into a store
/// with [`to_memory`](Self::to_memory) to import it into that store's
/// instances; a shared memory exported by an instance is reached with
/// [`Memory::to_shared`].
///
/// ```
/// use faaslet::{Engine, Linker, Module, SharedMemory, Store, MemoryType, Extern};
/// let engine = Engine::default();
/// let shared = SharedMemory::new(&engine, MemoryType {
///     minimum: 1, maximum: Some(1), shared: true, memory64: false,
/// }).unwrap();
/// let module = Module::new(&engine, r#"(module
///     (import "env" "mem" (memory 1 1 shared))
///     (func (export "bump") (result i32)
///       (i32.atomic.rmw.add (i32.const 0) (i32.const 1))))"#).unwrap();
/// let handles: Vec<_> = (0..2).map(|_| {
///     let (engine, module, shared) = (engine.clone(), module.clone(), shared.clone());
///     std::thread::spawn(move || {
///         let mut store = Store::new(&engine, ());
///         let mem = shared.to_memory(&mut store).unwrap();
///         let mut linker = Linker::new(&engine);
///         linker.define("env", "mem", Extern::Memory(mem)).unwrap();
///         let inst = linker.instantiate(&mut store, &module).unwrap();
///         let bump = inst.get_typed_func::<(), i32, _>(&mut store, "bump").unwrap();
///         for _ in 0..1000 { bump.call(&mut store, ()).unwrap(); }
///     })
/// }).collect();
/// for h in handles { h.join().unwrap(); }
/// assert_eq!(shared.read_u32(0).unwrap(), 2000);
/// ```
#[derive(Clone)]
pub struct SharedMemory {
    pub(crate) data: Arc<MemoryData>,
}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemory")
            .field("ty", &self.data.ty)
            .field("pages", &self.data.pages())
            .finish()
    }
}

impl SharedMemory {
    /// Creates a shared memory for stores of `engine`. `ty.shared` must be
    /// set and `ty.maximum` given.
    pub fn new(engine: &Engine, ty: MemoryType) -> Result<SharedMemory, Error> {
        if !ty.shared {
            return Err(Error::Type(
                "SharedMemory::new needs a shared memory type".into(),
            ));
        }
        Ok(SharedMemory {
            data: Arc::new(MemoryData::new(engine.config(), ty)?),
        })
    }

    /// The memory's type, with its current size as the minimum.
    pub fn ty(&self) -> MemoryType {
        MemoryType {
            minimum: self.size(),
            ..self.data.ty
        }
    }

    /// Current size in 64 KiB pages.
    pub fn size(&self) -> u64 {
        self.data.pages()
    }

    /// Grows by `delta` pages, returning the old size. Every store using
    /// the memory sees the new size.
    pub fn grow(&self, delta: u64) -> Result<u64, Error> {
        self.data.grow(delta).ok_or_else(|| {
            Error::Resource(format!(
                "cannot grow memory by {delta} pages (limit {} pages)",
                self.data.limit_pages
            ))
        })
    }

    /// Enters this memory into `store`, returning the store's handle for it
    /// (the same handle each time for the same store). Fails if the store's
    /// engine uses a different bounds mode than the one the memory was
    /// reserved for.
    pub fn to_memory<T>(&self, store: &mut Store<T>) -> Result<Memory, Error> {
        let core = store.core_mut();
        if core.engine.config().bounds != self.data.bounds {
            return Err(Error::Type(
                "shared memory was reserved for a different bounds mode".into(),
            ));
        }
        let index = core.push_memory_data(self.data.clone());
        Ok(Memory {
            store: core.id,
            index,
        })
    }

    /// Reads the little-endian u32 at `addr` atomically.
    pub fn read_u32(&self, addr: u64) -> Result<u32, Error> {
        self.check(addr, 4)?;
        // SAFETY: in bounds and aligned (checked); memories never shrink.
        Ok(unsafe {
            AtomicU32::from_ptr(self.data.base.add(addr as usize) as *mut u32)
                .load(Ordering::SeqCst)
        })
    }

    /// Writes the little-endian u32 at `addr` atomically.
    pub fn write_u32(&self, addr: u64, val: u32) -> Result<(), Error> {
        self.check(addr, 4)?;
        // SAFETY: in bounds and aligned (checked); memories never shrink.
        unsafe {
            AtomicU32::from_ptr(self.data.base.add(addr as usize) as *mut u32)
                .store(val, Ordering::SeqCst)
        };
        Ok(())
    }

    /// `memory.atomic.notify` from the host: wakes up to `count` waiters on
    /// `addr`, returning how many were woken.
    pub fn atomic_notify(&self, addr: u64, count: u32) -> Result<u32, Error> {
        self.check(addr, 4)?;
        Ok(self.data.notify(addr, count))
    }

    /// `memory.atomic.wait32` from the host: blocks while the u32 at
    /// `addr` equals `expected`, until notified or `timeout` passes.
    pub fn atomic_wait32(
        &self,
        addr: u64,
        expected: u32,
        timeout: Option<Duration>,
    ) -> Result<WaitResult, Error> {
        self.check(addr, 4)?;
        let t = timeout.map_or(-1, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Ok(
            match self
                .data
                .wait(addr, u64::from(expected), false, t, &|| false)
            {
                0 => WaitResult::Ok,
                1 => WaitResult::Mismatch,
                _ => WaitResult::TimedOut,
            },
        )
    }

    /// `memory.atomic.wait64` from the host (see
    /// [`atomic_wait32`](Self::atomic_wait32)).
    pub fn atomic_wait64(
        &self,
        addr: u64,
        expected: u64,
        timeout: Option<Duration>,
    ) -> Result<WaitResult, Error> {
        self.check(addr, 8)?;
        let t = timeout.map_or(-1, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Ok(match self.data.wait(addr, expected, true, t, &|| false) {
            0 => WaitResult::Ok,
            1 => WaitResult::Mismatch,
            _ => WaitResult::TimedOut,
        })
    }

    fn check(&self, addr: u64, size: u64) -> Result<(), Error> {
        if !self.data.in_bounds(addr, size) {
            return Err(Error::Resource(format!(
                "access of {size} bytes at {addr} is out of bounds"
            )));
        }
        if !addr.is_multiple_of(size) {
            return Err(Error::Resource(format!(
                "unaligned atomic access of {size} bytes at {addr}"
            )));
        }
        Ok(())
    }
}

impl Memory {
    /// The [`SharedMemory`] behind this memory, if it is shared (for
    /// example a shared memory an instance exports), so other stores can
    /// import it.
    pub fn to_shared<T>(&self, store: &Store<T>) -> Option<SharedMemory> {
        let core = store.core();
        core.check(self.store).ok()?;
        let data = &core.memories[self.index as usize].data;
        data.ty.shared.then(|| SharedMemory { data: data.clone() })
    }
}

// ---------------------------------------------------------------------------
// The parking lot.
// ---------------------------------------------------------------------------

#[derive(Default)]
struct LotState {
    /// Waiter ids per absolute address, in arrival order.
    queues: HashMap<usize, VecDeque<u64>>,
    /// Waiters notified but not yet returned.
    woken: HashSet<u64>,
    next_id: u64,
}

/// What the wait builtins return when the call was interrupted while
/// waiting; the generated code turns it into an `Interrupted` trap.
pub(crate) const WAIT_INTERRUPTED: u32 = faaslet_jit::abi::WAIT_INTERRUPTED;

/// How often a blocked waiter checks for interruption.
const WAIT_POLL: Duration = Duration::from_millis(5);

struct ParkingLot {
    state: Mutex<LotState>,
    cv: Condvar,
}

fn parking_lot() -> &'static ParkingLot {
    static LOT: OnceLock<ParkingLot> = OnceLock::new();
    LOT.get_or_init(|| ParkingLot {
        state: Mutex::new(LotState::default()),
        cv: Condvar::new(),
    })
}

impl ParkingLot {
    /// Parks until notified or timed out, if `still_expected()` holds when
    /// checked under the lot's lock (notifiers take the same lock, so a
    /// notify after the value changed cannot be missed).
    ///
    /// A waiter wakes at least every [`WAIT_POLL`] to ask `interrupted()`,
    /// so an epoch deadline or an `InterruptHandle` ends a wait that nobody
    /// will ever notify (the call then traps as interrupted).
    fn wait(
        &self,
        addr: usize,
        timeout: Option<Duration>,
        interrupted: &dyn Fn() -> bool,
        still_expected: impl Fn() -> bool,
    ) -> u32 {
        let mut st = lock(&self.state);
        if !still_expected() {
            return 1;
        }
        let id = st.next_id;
        st.next_id += 1;
        st.queues.entry(addr).or_default().push_back(id);
        // `None`: no timeout, or one too large to represent.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if st.woken.remove(&id) {
                return 0;
            }
            let now = Instant::now();
            let outcome = if deadline.is_some_and(|d| now >= d) {
                Some(2)
            } else if interrupted() {
                Some(WAIT_INTERRUPTED)
            } else {
                None
            };
            if let Some(code) = outcome {
                // Leave the queue (unless notified meanwhile).
                if st.woken.remove(&id) {
                    return 0;
                }
                if let Some(q) = st.queues.get_mut(&addr) {
                    q.retain(|w| *w != id);
                    if q.is_empty() {
                        st.queues.remove(&addr);
                    }
                }
                return code;
            }
            let slice = deadline.map_or(WAIT_POLL, |d| (d - now).min(WAIT_POLL));
            st = self
                .cv
                .wait_timeout(st, slice)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Wakes up to `count` waiters on `addr`; returns how many.
    fn notify(&self, addr: usize, count: u32) -> u32 {
        let mut st = lock(&self.state);
        let mut woken = Vec::new();
        if let Some(q) = st.queues.get_mut(&addr) {
            while woken.len() < count as usize {
                match q.pop_front() {
                    Some(id) => woken.push(id),
                    None => break,
                }
            }
            if q.is_empty() {
                st.queues.remove(&addr);
            }
        }
        let n = woken.len() as u32;
        st.woken.extend(woken);
        drop(st);
        if n > 0 {
            self.cv.notify_all();
        }
        n
    }
}

// Snapshot support (`crate::snapshot`): reset a private memory to a memory
// image after a call (restoring maps it in `MemoryData::from_image`).
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
