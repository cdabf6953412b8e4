//! [`SharedMemory`]: a memory used by several stores, one per thread, at
//! once, as the wasm threads proposal's `(memory min max shared)`.

use crate::engine::Engine;
use crate::handles::Memory;
use crate::memory::MemoryData;
use crate::store::Store;
use crate::trap::Error;
use faaslet_jit::MemoryType;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
            AtomicU32::from_ptr(self.data.base().add(addr as usize) as *mut u32)
                .load(Ordering::SeqCst)
        })
    }

    /// Writes the little-endian u32 at `addr` atomically.
    pub fn write_u32(&self, addr: u64, val: u32) -> Result<(), Error> {
        self.check(addr, 4)?;
        // SAFETY: in bounds and aligned (checked); memories never shrink.
        unsafe {
            AtomicU32::from_ptr(self.data.base().add(addr as usize) as *mut u32)
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
