//! [`Store`]: owns instances and everything they create, and runs calls.

use crate::engine::{Engine, StoreLimits};
use crate::entries::{
    FuncEntry, FuncKind, GlobalEntry, HostFuncEntry, InstanceEntry, MemoryEntry, TableEntry,
};
use crate::handles::{Extern, ExternRef, Func, Global, Memory, StoreId, Table, Tag};
use crate::memory::MemoryData;
use crate::module::Module;
use crate::trap::{Error, Limit, LimitError, Trap, TrapKind};
use faaslet_jit::abi::{self, VMGlobal, VMStoreContext, VMTable, ValRaw};
use faaslet_jit::{ExportIndex, GlobalType, MemoryType, TableType};
use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

/// The store context, shared with [`InterruptHandle`]s on other threads.
pub(crate) struct SharedCtx {
    ctx: std::cell::UnsafeCell<VMStoreContext>,
    /// The kernel thread id of the thread running a call in the store (0:
    /// none), for [`InterruptHandle::interrupt`] under signal interruption.
    running_tid: std::sync::atomic::AtomicI32,
}

// SAFETY: the only field touched from other threads is `epoch_deadline`, and
// only through `AtomicU64` (see `deadline()`); JIT code reads it with a plain
// aligned 8-byte load, which is atomic on the targets we support. The other
// fields are written only by the thread that owns the store.
unsafe impl Send for SharedCtx {}
// SAFETY: as above.
unsafe impl Sync for SharedCtx {}

impl SharedCtx {
    pub(crate) fn ptr(&self) -> *mut VMStoreContext {
        self.ctx.get()
    }
    fn deadline(&self) -> &AtomicU64 {
        // SAFETY: `epoch_deadline` is an aligned u64 inside a live
        // allocation, and every concurrent access to it goes through this
        // atomic view.
        unsafe { AtomicU64::from_ptr(std::ptr::addr_of_mut!((*self.ptr()).epoch_deadline)) }
    }
}

/// Interrupts calls running in a store, from any thread.
#[derive(Clone)]
pub struct InterruptHandle {
    ctx: Arc<SharedCtx>,
    /// Keeps the epoch counter the context points at alive.
    engine: Engine,
}

impl std::fmt::Debug for InterruptHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InterruptHandle")
    }
}

impl InterruptHandle {
    /// Makes the running call (or the next one) trap with
    /// [`TrapKind::Interrupted`] at its next function entry or loop header.
    /// Needs [`Config::epoch_interruption`](crate::Config::epoch_interruption).
    pub fn interrupt(&self) {
        self.ctx.deadline().store(0, Ordering::SeqCst);
        if self.engine.config().signal_interruption {
            // The handler re-checks the deadline of whatever that thread
            // runs when the signal lands, so a call that ended meanwhile is
            // not harmed, and the next call of the store still starts with
            // the deadline at 0 (as with epoch checks).
            let tid = self.ctx.running_tid.load(Ordering::SeqCst);
            if tid != 0 {
                faaslet_sfi::signal_thread(tid);
            }
        }
    }

    /// Whether a call in the store would now trap as interrupted: the
    /// engine's epoch has reached the store's deadline (or
    /// [`interrupt`](Self::interrupt) was called). Host functions that
    /// block ask this to give up in time.
    pub fn deadline_reached(&self) -> bool {
        self.engine.current_epoch() >= self.ctx.deadline().load(Ordering::SeqCst)
    }
}

/// The part of a store that does not depend on its data type.
///
/// Entries are boxed inside their vectors on purpose: JIT code and vmctx
/// headers hold raw pointers into them (`VMMemory`, `VMTable`, `VMGlobal`,
/// host contexts, instances), which must not move when a vector grows.
#[allow(clippy::vec_box)]
pub(crate) struct StoreCore {
    pub(crate) id: StoreId,
    pub(crate) engine: Engine,
    pub(crate) ctx: Arc<SharedCtx>,
    /// The deadline restored after an interruption.
    pub(crate) deadline: u64,
    pub(crate) funcs: Vec<FuncEntry>,
    pub(crate) func_by_ptr: HashMap<usize, u32>,
    pub(crate) host_funcs: Vec<Box<HostFuncEntry>>,
    pub(crate) memories: Vec<Box<MemoryEntry>>,
    pub(crate) tables: Vec<Box<TableEntry>>,
    pub(crate) globals: Vec<Box<GlobalEntry>>,
    pub(crate) instances: Vec<Box<InstanceEntry>>,
    pub(crate) externs: Vec<Box<dyn Any + Send + Sync>>,
    pub(crate) modules: Vec<Module>,
    /// Why the last host call failed, taken when its trap is resolved.
    pub(crate) pending_trap: Option<Trap>,
    /// A panic caught in a host function, resumed once wasm has unwound.
    pub(crate) pending_panic: Option<Box<dyn Any + Send>>,
    /// Nesting depth of host-to-wasm calls.
    pub(crate) depth: u32,
    /// What the store's guests may make the host allocate.
    pub(crate) limits: StoreLimits,
    /// The reservations of the store's memories: the only addresses at
    /// which the signal handler accepts a memory-access fault of this
    /// store's code as a wasm trap (see `faaslet_sfi::FaultRegions`).
    /// Behind an `Rc` so a call can hand the handler a pointer that no
    /// `&mut StoreCore` made by host code during the call invalidates
    /// (the store moves between threads only whole, with no clone of it
    /// left behind: clones live for one call on the store's thread).
    pub(crate) fault_regions: std::rc::Rc<faaslet_sfi::FaultRegions>,
    /// Every exception tag of the store's instances, boxed: a tag's
    /// identity is its address.
    pub(crate) tags: Vec<Box<abi::VMTag>>,
    /// The exceptions thrown in this store (a `RefCell`: the `THROW`
    /// builtin reaches the store through a shared reference).
    pub(crate) exceptions: std::cell::RefCell<ExceptionHeap>,
    /// The GC heap (WebAssembly GC; a `RefCell` as `exceptions` is).
    pub(crate) gc: std::cell::RefCell<crate::gc::GcHeap>,
    /// The GC references the host holds (`AnyRef`s), roots of the heap.
    pub(crate) any_roots: crate::gc::HostRoots,
}

/// The most bytes of exception objects (32 bytes plus 16 per payload
/// value each) one store may hold: 64 MiB. Exceptions live as long as
/// their store (an `exnref` may be kept anywhere), so a guest throwing in
/// a loop would otherwise grow the host without bound; a `throw` past the
/// limit traps ([`TrapKind::ExceptionLimit`]).
pub const MAX_EXCEPTION_BYTES: u64 = 64 << 20;

/// The number of objects of each kind in a store ([`Store::census`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreCensus {
    /// Host functions.
    pub host_funcs: usize,
    /// Memories.
    pub memories: usize,
    /// Tables.
    pub tables: usize,
    /// Globals.
    pub globals: usize,
    /// Instances.
    pub instances: usize,
    /// Exception tags.
    pub tags: usize,
    /// Host objects behind externrefs.
    pub externs: usize,
    /// Exception objects (each `throw` makes one; none is ever freed).
    pub exceptions: usize,
}

/// The exception objects of one store.
#[derive(Default)]
pub(crate) struct ExceptionHeap {
    /// Each exception and its payload; the `VMException` points into the
    /// payload's heap allocation, which never moves.
    objects: Vec<(Box<abi::VMException>, Box<[ValRaw]>)>,
    /// The addresses of `objects`' exceptions, to check an exnref the host
    /// passes in.
    live: std::collections::HashSet<u64>,
    bytes: u64,
}

impl ExceptionHeap {
    /// A new exception of `tag` with `payload`; its address (the exnref),
    /// or `None` past [`MAX_EXCEPTION_BYTES`].
    pub(crate) fn alloc(&mut self, tag: *const abi::VMTag, payload: Box<[ValRaw]>) -> Option<u64> {
        let cost = 32 + 16 * payload.len() as u64;
        if self.bytes.saturating_add(cost) > MAX_EXCEPTION_BYTES {
            return None;
        }
        self.bytes += cost;
        let exn = Box::new(abi::VMException {
            tag,
            values: payload.as_ptr(),
        });
        let raw = &*exn as *const abi::VMException as u64;
        self.objects.push((exn, payload));
        self.live.insert(raw);
        Some(raw)
    }

    /// Whether `raw` is one of these exceptions.
    pub(crate) fn contains(&self, raw: u64) -> bool {
        self.live.contains(&raw)
    }

    /// Calls `mark` with every word of every payload (exceptions live as
    /// long as the store, so each is a root of the GC heap; payload types
    /// are not kept, so every word is offered, which the collector's
    /// object-start check makes harmless).
    pub(crate) fn for_each_word(&self, mark: &mut dyn FnMut(u64)) {
        for (_, payload) in &self.objects {
            for v in payload.iter() {
                mark(*v as u64);
                mark((*v >> 64) as u64);
            }
        }
    }
}

/// A store: the instances, memories, tables, globals and functions of one
/// sandbox, plus host data `T` that host functions can reach.
///
/// Every call into wasm takes `&mut Store`, so a store runs one call at a
/// time; use one store per thread (a store is `Send` if `T` is).
pub struct Store<T> {
    pub(crate) inner: Box<StoreInner<T>>,
}

#[repr(C)]
pub(crate) struct StoreInner<T> {
    pub(crate) core: StoreCore,
    pub(crate) data: T,
}

// SAFETY: the raw pointers inside a store point into allocations the store
// owns (or into modules it keeps alive); nothing is shared with another
// thread except `SharedCtx`, which is Sync. Moving the store moves all of it.
unsafe impl<T: Send> Send for Store<T> {}

impl<T> std::fmt::Debug for Store<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("id", &self.inner.core.id)
            .finish()
    }
}

impl<T> Store<T> {
    /// A new, empty store.
    pub fn new(engine: &Engine, data: T) -> Store<T> {
        let ctx = Arc::new(SharedCtx {
            ctx: std::cell::UnsafeCell::new(VMStoreContext {
                stack_limit: usize::MAX,
                epoch_ptr: engine.inner.epoch.as_ptr() as *const u64,
                epoch_deadline: u64::MAX,
                pending_exception: 0,
            }),
            running_tid: std::sync::atomic::AtomicI32::new(0),
        });
        let fault_regions = std::rc::Rc::new(faaslet_sfi::FaultRegions::new());
        if engine.config().signal_interruption {
            // SAFETY: the epoch counter lives in the engine and the deadline
            // in `ctx`, both kept alive by the store (its core holds the
            // engine and the context) as long as its fault regions, which
            // only the store's calls use.
            unsafe {
                fault_regions.set_deadline_words(&engine.inner.epoch, ctx.deadline());
            }
        }
        Store {
            inner: Box::new(StoreInner {
                core: StoreCore {
                    id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
                    engine: engine.clone(),
                    ctx,
                    deadline: u64::MAX,
                    funcs: Vec::new(),
                    func_by_ptr: HashMap::new(),
                    host_funcs: Vec::new(),
                    memories: Vec::new(),
                    tables: Vec::new(),
                    globals: Vec::new(),
                    instances: Vec::new(),
                    externs: Vec::new(),
                    modules: Vec::new(),
                    pending_trap: None,
                    pending_panic: None,
                    depth: 0,
                    limits: engine.config().store_limits,
                    fault_regions,
                    tags: Vec::new(),
                    exceptions: Default::default(),
                    gc: Default::default(),
                    any_roots: Default::default(),
                },
                data,
            }),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.core.engine
    }

    /// The host data.
    pub fn data(&self) -> &T {
        &self.inner.data
    }

    /// The host data, mutably.
    pub fn data_mut(&mut self) -> &mut T {
        &mut self.inner.data
    }

    /// Replaces this store's resource limits (initially the engine's
    /// [`Config::store_limits`](crate::Config::store_limits)). Lowering a
    /// limit below what the store already uses refuses further growth; it
    /// frees nothing.
    pub fn set_limits(&mut self, limits: StoreLimits) {
        self.inner.core.limits = limits;
    }

    /// This store's resource limits.
    pub fn limits(&self) -> StoreLimits {
        self.inner.core.limits
    }

    /// How many objects of each kind the store holds now. Two equal
    /// censuses taken before and after a call say the call left no new
    /// object in the store (no host function, memory, table, global,
    /// instance, tag, externref or exception; handles on an instance's own
    /// functions, made once per function when first looked up, are not
    /// counted): with its instance put back to a
    /// snapshot ([`InstanceImage::reset`](crate::InstanceImage::reset)),
    /// the store is then as the snapshot left it.
    pub fn census(&self) -> StoreCensus {
        let c = &self.inner.core;
        StoreCensus {
            host_funcs: c.host_funcs.len(),
            memories: c.memories.len(),
            tables: c.tables.len(),
            globals: c.globals.len(),
            instances: c.instances.len(),
            tags: c.tags.len(),
            externs: c.externs.len(),
            exceptions: c.exceptions.borrow().objects.len(),
        }
    }

    /// Bytes of linear memory the store's memories hold now, plus the
    /// bytes of its GC heap (the sum the `memory_bytes` limit bounds).
    pub fn memory_bytes(&self) -> u64 {
        self.inner.core.memory_bytes()
    }

    /// Test hook: forgets where this store's memories are, so that the
    /// next out-of-bounds access faulting in a guard region looks to the
    /// signal handler like JIT code touching a foreign address (which it
    /// must report as an engine crash, not as a trap). Only with the
    /// `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    pub fn forget_fault_regions_for_test(&mut self) {
        self.inner.core.fault_regions.clear();
    }

    /// Runs a full collection of the store's GC heap now (allocation
    /// also collects on its own, see `docs/gc.md`).
    pub fn gc(&mut self) {
        self.inner.core.collect_garbage();
    }

    /// What the collector has done in this store, and the heap's size.
    pub fn gc_stats(&self) -> crate::gc::GcStats {
        self.inner.core.gc.borrow().stats()
    }

    /// The address range of this store's GC heap in the process (empty
    /// while it has none): for diagnostics, e.g. counting how many of a
    /// heap restored copy-on-write from an image are resident or private
    /// (`/proc/self/smaps`, `mincore`). The heap is never read or written
    /// through it by the engine's callers.
    pub fn gc_heap_address_range(&self) -> std::ops::Range<usize> {
        self.inner.core.gc.borrow().address_range()
    }

    /// How many GC references the host holds rooted now ([`AnyRef`]s and
    /// `ExternRef`s made by `extern.convert_any`, until
    /// [`AnyRef::unroot`] or the end of their scope).
    ///
    /// [`AnyRef`]: crate::AnyRef
    /// [`AnyRef::unroot`]: crate::AnyRef::unroot
    pub fn gc_host_roots(&self) -> usize {
        self.inner.core.any_roots.len()
    }

    /// Runs `f` in a root scope: every GC reference handed to the host
    /// while it runs ([`AnyRef`](crate::AnyRef) results, global and table
    /// reads) is unrooted when it returns, so a host loop calling wasm
    /// does not accumulate roots. A handle used after its scope is refused
    /// as stale, never read.
    pub fn with_root_scope<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let start = self.inner.core.any_roots.enter();
        let r = f(self);
        self.inner.core.any_roots.exit(start);
        r
    }

    /// Consumes the store, returning its data.
    pub fn into_data(self) -> T {
        self.inner.data
    }

    /// A handle other threads can use to interrupt calls in this store.
    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle {
            ctx: self.inner.core.ctx.clone(),
            engine: self.inner.core.engine.clone(),
        }
    }

    /// Calls trap with [`TrapKind::Interrupted`] once the engine's epoch has
    /// advanced `ticks` beyond its current value.
    pub fn set_epoch_deadline(&mut self, ticks: u64) {
        let d = self.inner.core.engine.current_epoch().saturating_add(ticks);
        self.inner.core.deadline = d;
        self.inner.core.ctx.deadline().store(d, Ordering::SeqCst);
        if self.inner.core.depth > 0 && self.inner.core.engine.config().signal_interruption {
            // Called from a host function during a call: the published
            // deadline of this thread's call changes too.
            faaslet_sfi::CallSlot::set_deadline(d);
        }
    }

    pub(crate) fn core(&self) -> &StoreCore {
        &self.inner.core
    }

    pub(crate) fn core_mut(&mut self) -> &mut StoreCore {
        &mut self.inner.core
    }

    /// Raw pointer to the store's inner part, as host functions receive it.
    pub(crate) fn inner_ptr(&mut self) -> *mut StoreInner<T> {
        &mut *self.inner
    }
}

/// Clears the store's running thread when an outermost call ends.
struct RunningTid(Arc<SharedCtx>);

impl Drop for RunningTid {
    fn drop(&mut self) {
        self.0.running_tid.store(0, Ordering::SeqCst);
    }
}

/// The interrupt handle of a store, from its core.
pub(crate) fn interrupt_handle_of(core: &StoreCore) -> InterruptHandle {
    InterruptHandle {
        ctx: core.ctx.clone(),
        engine: core.engine.clone(),
    }
}

thread_local! {
    /// Lowest usable stack address of this thread, computed once.
    static STACK_LOW: Cell<usize> = const { Cell::new(0) };
}

/// Bytes of native stack kept free below the wasm stack limit for host
/// functions, builtins and the engine's own frames.
const HOST_STACK_HEADROOM: usize = 256 << 10;

#[inline]
fn thread_stack_low() -> usize {
    match STACK_LOW.get() {
        0 => {
            let low = query_stack_low().unwrap_or(1);
            STACK_LOW.set(low);
            low
        }
        low => low,
    }
}

#[cold]
fn query_stack_low() -> Option<usize> {
    // SAFETY: pthread_getattr_np fills a zeroed attr for the calling thread;
    // we read the stack bounds and destroy the attr. No pointers escape.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            return None;
        }
        Some(addr as usize)
    }
}

/// `Ok` if `used + delta` stays within `max`.
fn within(limit: Limit, used: u64, delta: u64, max: u64) -> Result<(), LimitError> {
    match used.checked_add(delta) {
        Some(n) if n <= max => Ok(()),
        n => Err(LimitError {
            limit,
            requested: n.unwrap_or(u64::MAX),
            max,
        }),
    }
}

// Limits (see `StoreLimits`). Usage is summed when asked rather than
// counted as it changes: memories and tables are few per store, and a
// reset to a snapshot shrinks a memory behind the store's back, so a sum
// is never stale. For a shared memory imported by several stores, each
// counts its full size; two threads growing it at once can pass the check
// together and overshoot by one growth.
impl StoreCore {
    /// Bytes of all the store's memories now.
    pub(crate) fn memory_bytes(&self) -> u64 {
        // (The GC heap is counted only when not borrowed: the `GC`
        // builtin computes its budget before borrowing it.)
        let heap = self.gc.try_borrow().map_or(0, |h| h.len());
        self.memories
            .iter()
            .fold(heap, |a, m| a.saturating_add(m.length()))
    }

    /// Elements of all the store's tables now.
    pub(crate) fn table_elements(&self) -> u64 {
        self.tables
            .iter()
            .fold(0u64, |a, t| a.saturating_add(t.elems.len() as u64))
    }

    /// May the store's memories grow by `bytes` more?
    /// Bytes the GC heap may still grow by under the `memory_bytes` limit
    /// (asked before the heap is borrowed).
    pub(crate) fn gc_budget(&self) -> u64 {
        self.limits.memory_bytes.saturating_sub(self.memory_bytes())
    }

    pub(crate) fn check_memory_growth(&self, bytes: u64) -> Result<(), LimitError> {
        within(
            Limit::MemoryBytes,
            self.memory_bytes(),
            bytes,
            self.limits.memory_bytes,
        )
    }

    /// May the store's tables grow by `elements` more?
    pub(crate) fn check_table_growth(&self, elements: u64) -> Result<(), LimitError> {
        within(
            Limit::TableElements,
            self.table_elements(),
            elements,
            self.limits.table_elements,
        )
    }

    /// May an instance defining `memories` memories of `memory_pages`
    /// pages and `tables` tables of `table_elements` elements in all be
    /// added? Checked before anything of it is allocated.
    pub(crate) fn check_instance(
        &self,
        memories: u64,
        memory_pages: u64,
        tables: u64,
        table_elements: u64,
    ) -> Result<(), LimitError> {
        let l = &self.limits;
        within(
            Limit::Instances,
            self.instances.len() as u64,
            1,
            u64::from(l.instances),
        )?;
        within(
            Limit::Memories,
            self.memories.len() as u64,
            memories,
            u64::from(l.memories),
        )?;
        within(
            Limit::Tables,
            self.tables.len() as u64,
            tables,
            u64::from(l.tables),
        )?;
        self.check_memory_growth(memory_pages.saturating_mul(faaslet_sfi::WASM_PAGE as u64))?;
        self.check_table_growth(table_elements)
    }
}

impl StoreCore {
    /// Calls `mark` with every root of the GC heap besides the native
    /// stack: reference globals and tables, element segments, exception
    /// payloads and host handles. `false` if some could not be seen (the
    /// exception heap is borrowed), so nothing may be collected.
    pub(crate) fn gc_roots(&self, mark: &mut dyn FnMut(u64)) -> bool {
        use faaslet_jit::{RefType, ValType};
        for g in &self.globals {
            if matches!(g.ty.content, ValType::AnyRef | ValType::ExternRef) {
                mark(g.vm.bits as u64);
            }
        }
        for t in &self.tables {
            if matches!(t.ty.element, RefType::Any | RefType::Extern) {
                for e in t.elems.iter() {
                    mark(*e);
                }
            }
        }
        for inst in &self.instances {
            for seg in inst.elements.iter().flatten() {
                for e in seg.iter() {
                    mark(*e);
                }
            }
        }
        let Ok(exceptions) = self.exceptions.try_borrow() else {
            return false;
        };
        exceptions.for_each_word(mark);
        self.any_roots.for_each(mark);
        true
    }

    /// Runs a full collection now, if the heap is not in use. Outside a
    /// call no wasm frame can hold a reference; inside one (a host
    /// function), the native stack up to the call's entry is scanned.
    pub(crate) fn collect_garbage(&self) {
        let Ok(mut heap) = self.gc.try_borrow_mut() else {
            return;
        };
        let top = if self.depth > 0 { heap.stack_top } else { 0 };
        heap.collect(&|mark| self.gc_roots(mark), top);
    }

    /// The export `name` of instance `inst`.
    pub(crate) fn export(&mut self, inst: u32, name: &str) -> Option<Extern> {
        let entry = &self.instances[inst as usize];
        let info = entry.module.info();
        let export = info.exports.iter().find(|e| e.name == name)?;
        Some(match export.index {
            ExportIndex::Func(i) => {
                if i < info.num_imported_funcs {
                    Extern::Func(entry.imported_funcs[i as usize])
                } else {
                    Extern::Func(self.instance_func(inst, i))
                }
            }
            ExportIndex::Memory(i) => Extern::Memory(Memory {
                store: self.id,
                index: entry.memory_ids[i as usize],
            }),
            ExportIndex::Table(i) => Extern::Table(Table {
                store: self.id,
                index: entry.table_ids[i as usize],
            }),
            ExportIndex::Global(i) => Extern::Global(Global {
                store: self.id,
                index: entry.global_ids[i as usize],
            }),
            ExportIndex::Tag(i) => Extern::Tag(Tag {
                store: self.id,
                index: entry.tag_ids[i as usize],
            }),
        })
    }

    pub(crate) fn check(&self, id: StoreId) -> Result<(), Error> {
        if id == self.id {
            Ok(())
        } else {
            Err(Error::Type("object belongs to a different store".into()))
        }
    }

    pub(crate) fn new_externref(&mut self, data: Box<dyn Any + Send + Sync>) -> ExternRef {
        self.externs.push(data);
        ExternRef {
            store: self.id,
            raw: self.externs.len() as u64,
        }
    }

    pub(crate) fn push_func(&mut self, entry: FuncEntry) -> Func {
        let index = self.funcs.len() as u32;
        self.func_by_ptr.insert(entry.funcref as usize, index);
        self.funcs.push(entry);
        Func {
            store: self.id,
            index,
        }
    }

    /// The [`Func`] a raw funcref points at, registering it on first sight.
    pub(crate) fn func_from_raw(&mut self, raw: u64) -> Option<Func> {
        if raw == 0 {
            return None;
        }
        if let Some(&index) = self.func_by_ptr.get(&(raw as usize)) {
            return Some(Func {
                store: self.id,
                index,
            });
        }
        // A funcref inside some instance's vmctx that has not been handed
        // to the host yet.
        let (inst, func_index) = self
            .instances
            .iter()
            .enumerate()
            .find_map(|(i, inst)| inst.func_index_of(raw as usize).map(|f| (i, f)))?;
        Some(self.instance_func(inst as u32, func_index))
    }

    /// The [`Func`] for function `func_index` of instance `inst`.
    pub(crate) fn instance_func(&mut self, inst: u32, func_index: u32) -> Func {
        let entry = &self.instances[inst as usize];
        let ptr = entry.funcref_ptr(func_index);
        if let Some(&index) = self.func_by_ptr.get(&(ptr as usize)) {
            return Func {
                store: self.id,
                index,
            };
        }
        let module = entry.module.clone();
        let info = module.info();
        let type_index = info.funcs[func_index as usize];
        let trampoline = module.inner.compiled.array_trampoline(type_index);
        self.push_func(FuncEntry {
            funcref: ptr,
            ty: info.types[type_index as usize].clone(),
            kind: FuncKind::Wasm { trampoline },
        })
    }

    pub(crate) fn push_memory(&mut self, ty: MemoryType) -> Result<u32, Error> {
        self.check_new_memory(ty.minimum.saturating_mul(faaslet_sfi::WASM_PAGE as u64))?;
        let data = MemoryData::new(self.engine.config(), ty)?;
        Ok(self.push_memory_data(Arc::new(data)))
    }

    /// A memory of type `ty` holding `image` (a snapshot's), mapped
    /// copy-on-write.
    pub(crate) fn push_memory_image(
        &mut self,
        ty: MemoryType,
        image: &faaslet_sfi::MemoryImage,
    ) -> Result<u32, Error> {
        self.check_new_memory(image.len() as u64)?;
        let data = MemoryData::from_image(self.engine.config(), ty, image)?;
        Ok(self.push_memory_data(Arc::new(data)))
    }

    /// May one more memory of `bytes` bytes be created?
    fn check_new_memory(&self, bytes: u64) -> Result<(), LimitError> {
        within(
            Limit::Memories,
            self.memories.len() as u64,
            1,
            u64::from(self.limits.memories),
        )?;
        self.check_memory_growth(bytes)
    }

    /// Enters `data` into this store; a shared memory already entered gets
    /// its existing index back.
    pub(crate) fn push_memory_data(&mut self, data: Arc<MemoryData>) -> u32 {
        if data.ty.shared {
            if let Some(i) = self
                .memories
                .iter()
                .position(|m| Arc::ptr_eq(&m.data, &data))
            {
                return i as u32;
            }
        }
        let (ty, limit_pages) = (data.ty, data.limit_pages);
        self.fault_regions.add(data.mapped_range());
        self.memories.push(Box::new(MemoryEntry {
            data,
            ty,
            limit_pages,
        }));
        self.memories.len() as u32 - 1
    }

    pub(crate) fn push_table(&mut self, ty: TableType, init: u64) -> Result<u32, Error> {
        let limit = ty
            .maximum
            .unwrap_or(u64::MAX)
            .min(self.engine.config().max_table_elements);
        if ty.minimum > limit {
            return Err(Error::Resource(format!(
                "table of {} elements exceeds the limit of {limit}",
                ty.minimum
            )));
        }
        within(
            Limit::Tables,
            self.tables.len() as u64,
            1,
            u64::from(self.limits.tables),
        )?;
        self.check_table_growth(ty.minimum)?;
        let elems = crate::entries::table_elems(ty.minimum as usize, init)
            .ok_or_else(|| Error::Resource("out of memory for table".into()))?;
        let mut entry = Box::new(TableEntry {
            elems,
            vm: VMTable {
                base: std::ptr::null_mut(),
                length: 0,
            },
            ty,
            limit,
        });
        entry.sync();
        self.tables.push(entry);
        Ok(self.tables.len() as u32 - 1)
    }

    pub(crate) fn push_global(&mut self, ty: GlobalType, bits: ValRaw) -> u32 {
        self.globals.push(Box::new(GlobalEntry {
            vm: VMGlobal { bits },
            ty,
        }));
        self.globals.len() as u32 - 1
    }

    /// Turns a fault caught by the trap guard into a [`Trap`].
    fn resolve_fault(&mut self, fault: faaslet_sfi::Fault) -> Trap {
        let pc = fault.pc;
        if fault.signal == faaslet_sfi::interrupt_signal() {
            // Signal interruption: stopped at any instruction of JIT code,
            // named if it is a function's (not a trampoline's).
            let mut trap = Trap::new(TrapKind::Interrupted);
            for m in &self.modules {
                if let Some((func, offset)) = m.inner.compiled.lookup_func(pc) {
                    trap.func_index = Some(func);
                    trap.func_name = m.info().func_name(func).map(str::to_owned);
                    trap.wasm_offset = offset;
                    break;
                }
            }
            return trap;
        }
        for m in &self.modules {
            if let Some(site) = m.inner.compiled.lookup_trap(pc) {
                let mut trap =
                    Trap::new(TrapKind::from_code(site.code).unwrap_or(TrapKind::Unreachable));
                if trap.kind == TrapKind::Host {
                    if let Some(t) = self.pending_trap.take() {
                        trap = t;
                    }
                }
                if site.code == abi::TRAP_GC {
                    if let Some(kind) = self.gc.get_mut().trap.take() {
                        trap.kind = kind;
                    }
                }
                trap.func_index = Some(site.func_index);
                trap.func_name = m.info().func_name(site.func_index).map(str::to_owned);
                trap.wasm_offset = site.wasm_offset;
                return trap;
            }
        }
        if let Some(code) = self.engine.stub_trap(pc) {
            let kind = TrapKind::from_code(code).unwrap_or(TrapKind::Host);
            if kind == TrapKind::Host {
                if let Some(t) = self.pending_trap.take() {
                    return t;
                }
            }
            return Trap::new(kind);
        }
        // The sfi registry said this pc is a trap site, so one of the
        // above must know it; if a module was dropped meanwhile, report it
        // plainly rather than guessing.
        Trap {
            message: Some(format!(
                "trap at unknown site {pc:#x} (signal {})",
                fault.signal
            )),
            ..Trap::new(TrapKind::Unreachable)
        }
    }

    /// Calls function `func` with `values` (parameters in, results out).
    ///
    /// # Safety
    ///
    /// `store` must point at the live inner part of a store, with no other
    /// live references into it; `values` must have
    /// `max(params, results)` slots holding parameters of the right types.
    pub(crate) unsafe fn call_raw(
        store: *mut u8,
        core: *mut StoreCore,
        func: u32,
        values: &mut [ValRaw],
    ) -> Result<(), Trap> {
        // SAFETY: the caller guarantees `core` is live and unaliased; we
        // only keep copies of what we need before running guest code, which
        // may re-enter the store through host functions.
        let (funcref, kind) = unsafe {
            let e = &(&(*core).funcs)[func as usize];
            (
                *e.funcref,
                match e.kind {
                    FuncKind::Wasm { trampoline } => Ok(trampoline),
                    FuncKind::Host(h) => Err(h),
                },
            )
        };
        let trampoline = match kind {
            Ok(t) => t,
            Err(h) => {
                // SAFETY: as above; the host function gets the store pointer.
                let call = unsafe { (&(*core).host_funcs)[h as usize].call.clone() };
                return call(store, None, values);
            }
        };
        // SAFETY: as above.
        let c = unsafe { &mut *core };
        let ctx = c.ctx.ptr();
        let outermost = c.depth == 0;
        if outermost {
            // The top of the native stack the collector scans: a word of
            // this frame, above every frame of the call (see
            // `gc::scan_native_stack`).
            let marker = 0u64;
            c.gc.get_mut().stack_top = std::hint::black_box(&marker) as *const u64 as usize + 8;
            let sp = faaslet_sfi::approximate_stack_pointer();
            let floor = thread_stack_low().saturating_add(HOST_STACK_HEADROOM);
            let limit = sp
                .saturating_sub(c.engine.config().max_wasm_stack)
                .max(floor);
            // SAFETY: ctx points at this store's context; only this thread
            // writes stack_limit.
            unsafe { (*ctx).stack_limit = limit };
        }
        // Under signal interruption, the outermost call publishes this
        // thread as running a call of this engine until its deadline (see
        // `faaslet_sfi::interrupt`), and the store which thread that is.
        let _published = (outermost && c.engine.config().signal_interruption).then(|| {
            c.ctx
                .running_tid
                .store(faaslet_sfi::current_tid(), Ordering::SeqCst);
            (
                faaslet_sfi::CallSlot::enter(
                    &c.engine.inner.epoch,
                    c.ctx.deadline().load(Ordering::SeqCst),
                ),
                RunningTid(c.ctx.clone()),
            )
        });
        c.depth += 1;
        let values_ptr = values.as_mut_ptr();
        // Borrowed through a pointer rather than a clone of the `Rc` (two
        // reference-count updates on every call): the regions live in the
        // store's core, which outlives the call, and are never replaced
        // (only added to, or cleared by `forget_fault_regions_for_test`).
        let regions: *const faaslet_sfi::FaultRegions = &*c.fault_regions;
        // SAFETY: `regions` as just said; the trampoline is JIT code
        // compiled for this function's type (it neither panics nor unwinds:
        // host functions and builtins it reaches catch their panics),
        // `funcref` comes from a live instance or host function of this
        // store, and `values` has room for parameters and results. Traps
        // inside come back as Err.
        let result = unsafe {
            faaslet_sfi::call_jit_in(
                &*regions,
                trampoline,
                funcref.func_ptr,
                funcref.vmctx,
                funcref.vmctx,
                values_ptr,
            )
        };
        // SAFETY: guest code has returned; we are the only user again.
        let c = unsafe { &mut *core };
        c.depth -= 1;
        if outermost {
            c.gc.get_mut().stack_top = 0;
        }
        // An exception still pending here was thrown and not caught (after
        // a trap, it is stale): clear it either way, for the next call.
        // SAFETY: ctx is this store's live context; only this thread
        // writes pending_exception.
        let uncaught = unsafe { std::mem::take(&mut (*ctx).pending_exception) } != 0;
        if let Some(p) = c.pending_panic.take() {
            if outermost {
                std::panic::resume_unwind(p);
            }
            // Let the outer host frame see it and re-raise.
            c.pending_panic = Some(p);
        }
        match result {
            Ok(()) if uncaught => Err(Trap::new(TrapKind::UncaughtException)),
            Ok(()) => Ok(()),
            Err(fault) => {
                let trap = c.resolve_fault(fault);
                if trap.kind == TrapKind::Interrupted {
                    c.ctx.deadline().store(c.deadline, Ordering::SeqCst);
                }
                Err(trap)
            }
        }
    }
}
