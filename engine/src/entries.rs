//! The store's entries: the runtime state behind each handle. Memories,
//! tables, globals, functions and instances, as the store owns them and as
//! JIT code sees them (through the raw pointers in each vmctx).
//!
//! Entries are plain data with the few operations that touch one entry
//! alone (growing a table, evaluating an instance's constant expressions,
//! copying a segment in); the store (`crate::store`) owns and indexes
//! them, instantiation (`crate::instance`) builds them, and the builtins
//! (`crate::builtins`) reach them from JIT code.

use crate::handles::Func;
use crate::memory::MemoryData;
use crate::module::Module;
use crate::trap::Trap;
use faaslet_jit::abi::{self, VMFuncRef, VMGlobal, VMMemory, VMTable, ValRaw};
use faaslet_jit::{ConstExpr, ConstOp, FuncType, GlobalType, MemoryType, TableType};
use std::sync::Arc;

/// A store's handle on a linear memory's storage. Shared memories have one
/// [`MemoryData`] entered into several stores.
pub(crate) struct MemoryEntry {
    pub(crate) data: Arc<MemoryData>,
    pub(crate) ty: MemoryType,
    /// Largest size in pages this memory may reach.
    pub(crate) limit_pages: u64,
}

impl MemoryEntry {
    /// Grows by `delta` pages; returns the old size, or None on failure.
    pub(crate) fn grow(&self, delta: u64) -> Option<u64> {
        self.data.grow(delta)
    }

    /// Current size in bytes.
    pub(crate) fn length(&self) -> u64 {
        self.data.length()
    }

    /// Address of byte 0 (fixed for the memory's life).
    pub(crate) fn base(&self) -> *mut u8 {
        self.data.base()
    }

    /// The `VMMemory` vmctxs point at.
    pub(crate) fn vm_ptr(&self) -> *mut VMMemory {
        self.data.vm_ptr()
    }

    /// Whether only the thread that holds the store can write the bytes:
    /// not a shared (threads) memory, and no file mapped into it shared
    /// (`Caller::map_shared`: other Faaslets write those pages). Only then
    /// may Rust hold a slice of them; everything else copies through raw
    /// pointers ([`read`](Self::read), [`write`](Self::write)).
    pub(crate) fn is_private(&self) -> bool {
        !self.ty.shared && !self.data.has_shared_segments()
    }

    /// The accessible bytes, if the memory [is private](Self::is_private).
    pub(crate) fn bytes(&self) -> Option<&[u8]> {
        if !self.is_private() {
            return None;
        }
        // SAFETY: [base, base + length) is mapped read-write for as long as
        // the data lives (memories only grow), `self` keeps it alive, and a
        // private memory is written only by the thread holding the store,
        // which this shared borrow keeps from running wasm.
        Some(unsafe { std::slice::from_raw_parts(self.base(), self.length() as usize) })
    }

    /// The accessible bytes, mutably (see [`Self::bytes`]).
    pub(crate) fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        if !self.is_private() {
            return None;
        }
        // SAFETY: as in `bytes`; `&mut self` excludes other borrows through
        // this store, and nobody else writes a private memory.
        Some(unsafe { std::slice::from_raw_parts_mut(self.base(), self.length() as usize) })
    }

    /// The host address of `offset .. offset + len`, if inside the memory.
    fn range_ptr(&self, offset: u64, len: u64) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        // The base never moves and the length only grows, so a range
        // inside the length now stays mapped for the memory's life.
        (end <= self.length()).then(|| self.base().wrapping_add(offset as usize))
    }

    /// Copies `dst.len()` bytes at `offset` into `dst` (raw: other threads
    /// may write them). False if out of bounds.
    pub(crate) fn read(&self, offset: u64, dst: &mut [u8]) -> bool {
        let Some(src) = self.range_ptr(offset, dst.len() as u64) else {
            return false;
        };
        // SAFETY: the source range is inside the memory (checked above);
        // `dst` is host memory, which no linear memory overlaps.
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// Copies `src` into the memory at `offset` (raw). False if out of
    /// bounds.
    pub(crate) fn write(&self, offset: u64, src: &[u8]) -> bool {
        let Some(dst) = self.range_ptr(offset, src.len() as u64) else {
            return false;
        };
        // SAFETY: the destination range is inside the memory (checked
        // above); `src` is host memory, which no linear memory overlaps.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        true
    }

    /// Sets `len` bytes at `offset` to `byte` (raw). False if out of bounds.
    pub(crate) fn fill(&self, offset: u64, len: u64, byte: u8) -> bool {
        let Some(dst) = self.range_ptr(offset, len) else {
            return false;
        };
        // SAFETY: the range is inside the memory (checked above).
        unsafe { std::ptr::write_bytes(dst, byte, len as usize) };
        true
    }
}

/// `n` table elements set to `init`, or `None` if the allocation fails.
///
/// Null references (`init == 0`, what instantiation and most growth
/// use) come from a zeroed allocation: for large tables the allocator
/// takes fresh anonymous pages from the kernel, which are zero until
/// touched, so a declared-but-unused table costs address space, not
/// resident memory (the store's `table_elements` limit bounds both).
pub(crate) fn table_elems(n: usize, init: u64) -> Option<Vec<u64>> {
    if n == 0 {
        return Some(Vec::new());
    }
    if init != 0 {
        let mut v = Vec::new();
        v.try_reserve_exact(n).ok()?;
        v.resize(n, init);
        return Some(v);
    }
    let layout = std::alloc::Layout::array::<u64>(n).ok()?;
    // SAFETY: `layout` has a non-zero size (n > 0, checked above).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<u64>();
    if ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` was allocated by the global allocator with the layout
    // of `[u64; n]` (so capacity n, as `Vec` expects), and all n elements
    // are initialised: zero bytes are a valid `u64`.
    Some(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

pub(crate) struct TableEntry {
    pub(crate) elems: Vec<u64>,
    pub(crate) vm: VMTable,
    pub(crate) ty: TableType,
    pub(crate) limit: u64,
}

impl TableEntry {
    pub(crate) fn sync(&mut self) {
        self.vm.base = self.elems.as_mut_ptr();
        self.vm.length = self.elems.len() as u64;
    }

    /// Grows by `delta` elements set to `init`; returns the old size.
    pub(crate) fn grow(&mut self, delta: u64, init: u64) -> Option<u64> {
        let old = self.elems.len() as u64;
        let new = old.checked_add(delta)?;
        if new > self.limit {
            return None;
        }
        if init == 0 && self.elems.capacity() < new as usize {
            // Null references into fresh zeroed memory: only the old
            // elements are written (see `table_elems`).
            let mut elems = table_elems(new as usize, 0)?;
            elems[..old as usize].copy_from_slice(&self.elems);
            self.elems = elems;
        } else {
            self.elems.try_reserve_exact(delta as usize).ok()?;
            self.elems.resize(new as usize, init);
        }
        self.sync();
        Some(old)
    }
}

pub(crate) struct GlobalEntry {
    pub(crate) vm: VMGlobal,
    pub(crate) ty: GlobalType,
}

/// Type-erased host function: takes the store pointer and raw values.
pub(crate) type HostCall =
    dyn Fn(*mut u8, Option<u32>, &mut [ValRaw]) -> Result<(), Trap> + Send + Sync;

pub(crate) struct HostFuncEntry {
    pub(crate) vmctx: faaslet_jit::abi::VMHostFuncContext,
    pub(crate) funcref: VMFuncRef,
    pub(crate) call: Arc<HostCall>,
    pub(crate) store: *mut u8,
    pub(crate) _stub: Arc<faaslet_jit::CompiledStub>,
}

pub(crate) enum FuncKind {
    /// A function defined by a wasm instance.
    Wasm {
        trampoline: faaslet_jit::abi::ArrayTrampoline,
    },
    /// A host function; index into `StoreCore::host_funcs`.
    Host(u32),
}

pub(crate) struct FuncEntry {
    pub(crate) funcref: *const VMFuncRef,
    pub(crate) ty: FuncType,
    pub(crate) kind: FuncKind,
}

/// The runtime side of an instance. Boxed in the store so its address (and
/// that of its vmctx) never changes; `vmctx[VMCTX_INSTANCE]` points here.
pub(crate) struct InstanceEntry {
    pub(crate) module: Module,
    /// The `StoreCore` of the store that owns this instance, for the
    /// builtins' limit checks (its address is fixed: the store boxes it).
    /// Type-erased because this module sits below `store`.
    pub(crate) core: *const (),
    pub(crate) id: u32,
    /// The vmctx, 16-byte aligned.
    pub(crate) vmctx: Box<[u128]>,
    pub(crate) memories: Vec<*mut MemoryEntry>,
    pub(crate) tables: Vec<*mut TableEntry>,
    pub(crate) memory_ids: Vec<u32>,
    pub(crate) table_ids: Vec<u32>,
    pub(crate) global_ids: Vec<u32>,
    /// Store indices of the instance's tags (imported first).
    pub(crate) tag_ids: Vec<u32>,
    /// Imported functions, in import order.
    pub(crate) imported_funcs: Vec<Func>,
    /// Element segments as raw references; `None` once dropped.
    pub(crate) elements: Vec<Option<Arc<[u64]>>>,
    /// Which data segments were dropped (`data.drop`, or active ones
    /// after instantiation); the bytes of the others are the module's.
    /// A flag each rather than a reference to the bytes: a module may
    /// have tens of thousands of segments (CPython: 24,171), and an
    /// instance is made and restored for every call.
    pub(crate) data_dropped: Vec<bool>,
}

impl InstanceEntry {
    pub(crate) fn vmctx_ptr(&self) -> *mut u8 {
        self.vmctx.as_ptr() as *mut u8
    }

    pub(crate) fn funcref_ptr(&self, func_index: u32) -> *const VMFuncRef {
        let off = self.module.info().offsets.funcref(func_index);
        self.vmctx_ptr().wrapping_add(off as usize) as *const VMFuncRef
    }

    /// If `ptr` is the funcref of one of this instance's functions, which.
    pub(crate) fn func_index_of(&self, ptr: usize) -> Option<u32> {
        let offsets = &self.module.info().offsets;
        if offsets.num_funcs == 0 {
            return None;
        }
        let start = self.vmctx_ptr() as usize + offsets.funcref(0) as usize;
        let end = start + (abi::FUNCREF_SIZE * offsets.num_funcs) as usize;
        if ptr < start || ptr >= end || !(ptr - start).is_multiple_of(abi::FUNCREF_SIZE as usize) {
            return None;
        }
        Some(((ptr - start) / abi::FUNCREF_SIZE as usize) as u32)
    }
}

/// The instance id stored in a vmctx's header.
pub(crate) fn instance_id_of_vmctx(vmctx: *mut u8) -> Option<u32> {
    if vmctx.is_null() {
        return None;
    }
    // SAFETY: JIT code passes its own vmctx as the caller vmctx, and every
    // vmctx header holds a pointer to its live InstanceEntry.
    unsafe {
        let inst = *(vmctx.add(abi::VMCTX_INSTANCE as usize) as *const *const InstanceEntry);
        inst.as_ref().map(|i| i.id)
    }
}

/// Evaluates a constant expression during instantiation. GC
/// operators allocate in `gc`, within `budget` bytes.
pub(crate) fn eval_const(
    globals: &[Box<GlobalEntry>],
    gc: &std::cell::RefCell<crate::gc::GcHeap>,
    budget: u64,
    entry: &InstanceEntry,
    expr: &ConstExpr,
) -> Result<u128, crate::trap::Trap> {
    let info = entry.module.info();
    let mut heap = gc.borrow_mut();
    eval(
        expr,
        |g| globals[entry.global_ids[g as usize] as usize].vm.bits,
        |f| entry.funcref_ptr(f) as u128,
        Some((&mut heap, info, budget)),
    )
}

/// Evaluates a constant expression once the instance is in place (globals
/// are reached through the vmctx). Only for offsets (no GC operators).
pub(crate) fn eval_const_entry(entry: &InstanceEntry, expr: &ConstExpr) -> u128 {
    let offsets = entry.module.info().offsets;
    eval(
        expr,
        |g| {
            // SAFETY: the vmctx holds a live global pointer at this offset.
            unsafe {
                (**(entry.vmctx_ptr().add(offsets.global(g) as usize)
                    as *const *const abi::VMGlobal))
                    .bits
            }
        },
        |f| entry.funcref_ptr(f) as u128,
        None,
    )
    .unwrap_or(0)
}

type GcParts<'a> = (&'a mut crate::gc::GcHeap, &'a faaslet_jit::ModuleInfo, u64);

fn eval(
    expr: &ConstExpr,
    global: impl Fn(u32) -> u128,
    func: impl Fn(u32) -> u128,
    mut gc: Option<GcParts<'_>>,
) -> Result<u128, crate::trap::Trap> {
    use crate::trap::{Trap, TrapKind};
    use faaslet_jit::gc_ref;
    // Validation guarantees a well-typed expression leaving one value.
    let mut stack: Vec<u128> = Vec::with_capacity(4);
    let no_gc = || Trap::new(TrapKind::Unreachable);
    for op in &expr.ops {
        let v = match *op {
            ConstOp::I32Const(v) => v as u32 as u128,
            ConstOp::I64Const(v) => v as u64 as u128,
            ConstOp::F32Const(v) => v as u128,
            ConstOp::F64Const(v) => v as u128,
            ConstOp::V128Const(v) => v,
            ConstOp::GlobalGet(g) => global(g),
            ConstOp::RefNull(_) => 0,
            ConstOp::RefFunc(f) => func(f),
            ConstOp::I32Add | ConstOp::I32Sub | ConstOp::I32Mul => {
                let b = stack.pop().unwrap_or(0) as u32;
                let a = stack.pop().unwrap_or(0) as u32;
                (match op {
                    ConstOp::I32Add => a.wrapping_add(b),
                    ConstOp::I32Sub => a.wrapping_sub(b),
                    _ => a.wrapping_mul(b),
                }) as u128
            }
            ConstOp::I64Add | ConstOp::I64Sub | ConstOp::I64Mul => {
                let b = stack.pop().unwrap_or(0) as u64;
                let a = stack.pop().unwrap_or(0) as u64;
                (match op {
                    ConstOp::I64Add => a.wrapping_add(b),
                    ConstOp::I64Sub => a.wrapping_sub(b),
                    _ => a.wrapping_mul(b),
                }) as u128
            }
            ConstOp::RefI31 => {
                let x = stack.pop().unwrap_or(0) as u32;
                u128::from((x << 1) | gc_ref::I31_TAG as u32)
            }
            ConstOp::AnyConvertExtern => {
                let e = stack.pop().unwrap_or(0) as u64;
                u128::from(match e {
                    0 => 0,
                    e if e & gc_ref::WRAPPED_ANY != 0 => e & !gc_ref::WRAPPED_ANY,
                    e => (e << 2) | gc_ref::EXTERN_TAG,
                })
            }
            ConstOp::ExternConvertAny => {
                let a = stack.pop().unwrap_or(0) as u64;
                u128::from(match a {
                    0 => 0,
                    a if a & gc_ref::TAG_MASK == gc_ref::EXTERN_TAG => a >> 2,
                    a => a | gc_ref::WRAPPED_ANY,
                })
            }
            ConstOp::StructNew(t) | ConstOp::StructNewDefault(t) => {
                let (heap, info, budget) = gc.as_mut().ok_or_else(no_gc)?;
                let vals = match *op {
                    ConstOp::StructNew(_) => {
                        let n = crate::gc::operand_count(
                            info,
                            faaslet_jit::gc_layout::op::STRUCT_NEW,
                            t,
                            0,
                        );
                        Some(stack.split_off(stack.len().saturating_sub(n)))
                    }
                    _ => None,
                };
                heap.struct_new(info, t, vals.as_deref(), *budget, None)
                    .map_err(Trap::new)? as u128
            }
            ConstOp::ArrayNew(t) | ConstOp::ArrayNewDefault(t) => {
                let (heap, info, budget) = gc.as_mut().ok_or_else(no_gc)?;
                let len = stack.pop().unwrap_or(0) as u32 as u64;
                let init = match *op {
                    ConstOp::ArrayNew(_) => stack.pop().unwrap_or(0),
                    _ => 0,
                };
                heap.array_new(info, t, len, *budget, None, |_| Ok(init))
                    .map_err(Trap::new)? as u128
            }
            ConstOp::ArrayNewFixed(t, n) => {
                let (heap, info, budget) = gc.as_mut().ok_or_else(no_gc)?;
                let vals = stack.split_off(stack.len().saturating_sub(n as usize));
                heap.array_new(info, t, u64::from(n), *budget, None, |i| {
                    Ok(vals.get(i as usize).copied().unwrap_or(0))
                })
                .map_err(Trap::new)? as u128
            }
        };
        stack.push(v);
    }
    Ok(stack.pop().unwrap_or(0))
}
/// Copies `len` items of `src` starting at `src_off` into the table at `dst`.
pub(crate) fn copy_into_table(
    t: &mut TableEntry,
    dst: u32,
    src: &[u64],
    src_off: u32,
    len: u32,
) -> Result<(), ()> {
    let (dst, src_off, len) = (dst as usize, src_off as usize, len as usize);
    if src_off.checked_add(len).is_none_or(|e| e > src.len())
        || dst.checked_add(len).is_none_or(|e| e > t.elems.len())
    {
        return Err(());
    }
    t.elems[dst..dst + len].copy_from_slice(&src[src_off..src_off + len]);
    Ok(())
}

/// Copies `len` bytes of `src` starting at `src_off` into memory `m` at `dst`.
pub(crate) fn copy_into_memory(
    m: &MemoryEntry,
    dst: u64,
    src: &[u8],
    src_off: u64,
    len: u64,
) -> Result<(), ()> {
    let src = src_off
        .checked_add(len)
        .and_then(|e| src.get(src_off as usize..e as usize))
        .ok_or(())?;
    if m.write(dst, src) {
        Ok(())
    } else {
        Err(())
    }
}
