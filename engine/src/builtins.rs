//! The builtins: runtime functions JIT code calls for what it does not
//! inline (memory.grow, bulk memory and table operations, atomic
//! wait/notify). Their table is written into every vmctx header; the
//! signatures and order are fixed by `faaslet_jit::abi::builtins`.

use crate::entries::{copy_into_memory, copy_into_table, InstanceEntry};
use crate::store::StoreCore;
use faaslet_jit::abi::{self, builtins, VMBuiltins};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The builtin table every vmctx points at.
pub(crate) static BUILTINS: BuiltinTable = BuiltinTable(VMBuiltins {
    funcs: [
        memory_grow as *const u8,
        memory_copy as *const u8,
        memory_fill as *const u8,
        memory_init as *const u8,
        data_drop as *const u8,
        table_grow as *const u8,
        table_fill as *const u8,
        table_copy as *const u8,
        table_init as *const u8,
        elem_drop as *const u8,
        memory_atomic_notify as *const u8,
        memory_atomic_wait32 as *const u8,
        memory_atomic_wait64 as *const u8,
        throw as *const u8,
        gc as *const u8,
    ],
});

pub(crate) struct BuiltinTable(pub(crate) VMBuiltins);
// SAFETY: the table holds immutable function pointers.
unsafe impl Sync for BuiltinTable {}

const _: () = assert!(builtins::COUNT == 15);

/// `GC`: every GC heap operation (see `faaslet_jit::gc_layout`). Returns 1
/// (the code traps with `TRAP_GC`) after recording the trap in the heap.
unsafe extern "C" fn gc(vmctx: *mut u8, op: u32, a: u32, b: u32, values: *mut abi::ValRaw) -> u32 {
    // SAFETY: as in memory_grow. Only read here: a GC operation changes
    // nothing of the instance (segments are read, never dropped).
    let inst: &InstanceEntry = unsafe { instance(vmctx) };
    // SAFETY: `inst` is live (above).
    let core = unsafe { store_core(inst) };
    let info = inst.module.info();
    let count = crate::gc::operand_count(info, op, a, b).max(1);
    // SAFETY: JIT code passes a 16-byte-slot stack array with one slot per
    // operand of `op` (at least one), as `operand_count` counts them from
    // the same module's types and the same immediates.
    let vals = unsafe { std::slice::from_raw_parts_mut(values, count) };
    let budget = core.gc_budget();
    let data = |d: u32| match inst.data_dropped.get(d as usize) {
        Some(false) => info.data.get(d as usize).map(|s| &*s.bytes),
        _ => None,
    };
    let elements = &inst.elements;
    let elems = |e: u32| elements.get(e as usize).cloned().flatten();
    // The roots besides the native stack, for a collection the operation
    // may run (the heap is borrowed below; the roots are other fields).
    let roots = |mark: &mut dyn FnMut(u64)| core.gc_roots(mark);
    let env = crate::gc::GcEnv {
        info,
        data: &data,
        elems: &elems,
        budget,
        roots: Some(&roots),
    };
    let Ok(mut heap) = core.gc.try_borrow_mut() else {
        return 1;
    };
    match heap.run(&env, op, a, b, vals) {
        Ok(()) => 0,
        Err(kind) => {
            heap.trap = Some(kind);
            1
        }
    }
}

/// `throw`: a new exception of `tag` with the `count` payload values at
/// `values`, made pending in the store context. Returns 1 (the code traps)
/// past the store's exception limit.
unsafe extern "C" fn throw(
    vmctx: *mut u8,
    tag: *const abi::VMTag,
    values: *const abi::ValRaw,
    count: u32,
) -> u32 {
    // SAFETY: as in memory_grow.
    let inst = unsafe { instance(vmctx) };
    // SAFETY: `inst` is live (above).
    let core = unsafe { store_core(inst) };
    // SAFETY: JIT code passes a 16-byte aligned stack array of `count`
    // slots (at least one slot's worth of bytes when `count` is 0).
    let payload: Box<[abi::ValRaw]> =
        unsafe { std::slice::from_raw_parts(values, count as usize) }.into();
    let Ok(mut heap) = core.exceptions.try_borrow_mut() else {
        return 1;
    };
    match heap.alloc(tag, payload) {
        Some(exn) => {
            // SAFETY: the store's context is live while its code runs, and
            // only this thread writes `pending_exception`.
            unsafe { (*core.ctx.ptr()).pending_exception = exn };
            0
        }
        None => 1,
    }
}

// ---------------------------------------------------------------------------
// Builtins. Called by JIT code with its own vmctx; the signatures are fixed
// by `faaslet_jit::abi::builtins`. They must not panic (a panic cannot
// unwind through JIT frames): every index from the guest is checked, and
// indices fixed by validation (memory, table, segment numbers) are trusted
// only after `get`.
// ---------------------------------------------------------------------------

/// The instance behind a vmctx.
///
/// # Safety
///
/// `vmctx` must be the vmctx of a live instance, passed by JIT code.
unsafe fn instance<'a>(vmctx: *mut u8) -> &'a mut InstanceEntry {
    // SAFETY: per the contract above, the header holds the entry pointer.
    unsafe { &mut **(vmctx.add(abi::VMCTX_INSTANCE as usize) as *mut *mut InstanceEntry) }
}

/// The store core behind an instance, for limit checks.
///
/// # Safety
///
/// `inst` must be a live instance entry; its store (which owns it) is then
/// live too. Only shared references are made: builtins run while JIT code
/// of the store runs, and no `&mut StoreCore` is in use meanwhile
/// (`StoreCore::call_raw` re-derives its own after the guest returns).
unsafe fn store_core(inst: &InstanceEntry) -> &StoreCore {
    // SAFETY: per the contract; `core` was set at instantiation from the
    // store's boxed core, whose address never changes.
    unsafe { &*inst.core.cast::<StoreCore>() }
}

unsafe extern "C" fn memory_grow(vmctx: *mut u8, mem: u32, delta: u64) -> u64 {
    // SAFETY: called by JIT code with its vmctx; memory entries are live.
    let inst = unsafe { instance(vmctx) };
    // The store's memory_bytes limit: over it, grow fails (-1), as the
    // specification allows any grow to.
    let bytes = delta.saturating_mul(faaslet_sfi::WASM_PAGE as u64);
    // SAFETY: `inst` is live (above).
    if unsafe { store_core(inst) }
        .check_memory_growth(bytes)
        .is_err()
    {
        return u64::MAX;
    }
    match inst.memories.get(mem as usize) {
        // SAFETY: as above.
        Some(&m) => unsafe { (*m).grow(delta) }.unwrap_or(u64::MAX),
        None => u64::MAX,
    }
}

unsafe extern "C" fn memory_copy(
    vmctx: *mut u8,
    dst_mem: u32,
    dst: u64,
    src_mem: u32,
    src: u64,
    len: u64,
) -> u32 {
    // SAFETY: as in memory_grow.
    let inst = unsafe { instance(vmctx) };
    let (Some(&d), Some(&s)) = (
        inst.memories.get(dst_mem as usize),
        inst.memories.get(src_mem as usize),
    ) else {
        return 1;
    };
    // SAFETY: both entries are live; we only form raw pointers, so d == s is fine.
    let (dlen, slen) = unsafe { ((*d).length(), (*s).length()) };
    if dst.checked_add(len).is_none_or(|e| e > dlen)
        || src.checked_add(len).is_none_or(|e| e > slen)
    {
        return 1;
    }
    // SAFETY: both ranges are inside accessible memory (checked above);
    // `copy` handles overlap.
    unsafe {
        std::ptr::copy(
            (*s).base().add(src as usize),
            (*d).base().add(dst as usize),
            len as usize,
        )
    };
    0
}

unsafe extern "C" fn memory_fill(vmctx: *mut u8, mem: u32, dst: u64, val: u32, len: u64) -> u32 {
    // SAFETY: as in memory_grow.
    let inst = unsafe { instance(vmctx) };
    let Some(&m) = inst.memories.get(mem as usize) else {
        return 1;
    };
    // SAFETY: live entry.
    let m = unsafe { &*m };
    // A raw fill: other threads may be using a shared memory, or mapped
    // state inside this one.
    if m.fill(dst, len, val as u8) {
        0
    } else {
        1
    }
}

unsafe extern "C" fn memory_init(
    vmctx: *mut u8,
    mem: u32,
    data: u32,
    dst: u64,
    src: u32,
    len: u32,
) -> u32 {
    // SAFETY: as in memory_grow.
    let inst = unsafe { instance(vmctx) };
    // A dropped segment is empty; its bytes live in the module.
    let module = inst.module.clone();
    let bytes: &[u8] = match inst.data_dropped.get(data as usize) {
        Some(false) => &module.info().data[data as usize].bytes,
        Some(true) => &[],
        None => return 1,
    };
    let Some(&m) = inst.memories.get(mem as usize) else {
        return 1;
    };
    // SAFETY: live entry.
    copy_into_memory(unsafe { &mut *m }, dst, bytes, src as u64, len as u64).map_or(1, |_| 0)
}

unsafe extern "C" fn data_drop(vmctx: *mut u8, data: u32) {
    // SAFETY: as in memory_grow.
    let inst = unsafe { instance(vmctx) };
    if let Some(d) = inst.data_dropped.get_mut(data as usize) {
        *d = true;
    }
}

unsafe extern "C" fn table_grow(vmctx: *mut u8, table: u32, init: u64, delta: u32) -> u32 {
    // SAFETY: as in memory_grow.
    let inst = unsafe { instance(vmctx) };
    let Some(&t) = inst.tables.get(table as usize) else {
        return u32::MAX;
    };
    // SAFETY: `inst` is live (above).
    if unsafe { store_core(inst) }
        .check_table_growth(u64::from(delta))
        .is_err()
    {
        return u32::MAX;
    }
    // SAFETY: live entry.
    match unsafe { (*t).grow(delta as u64, init) } {
        Some(old) if old <= u32::MAX as u64 => old as u32,
        _ => u32::MAX,
    }
}

unsafe extern "C" fn table_fill(vmctx: *mut u8, table: u32, dst: u32, val: u64, len: u32) -> u32 {
    // SAFETY: as in memory_grow.
    let inst = unsafe { instance(vmctx) };
    let Some(&t) = inst.tables.get(table as usize) else {
        return 1;
    };
    // SAFETY: live entry.
    let t = unsafe { &mut *t };
    let Some(slice) = dst
        .checked_add(len)
        .and_then(|e| t.elems.get_mut(dst as usize..e as usize))
    else {
        return 1;
    };
    slice.fill(val);
    0
}

unsafe extern "C" fn table_copy(
    vmctx: *mut u8,
    dst_t: u32,
    src_t: u32,
    dst: u32,
    src: u32,
    len: u32,
) -> u32 {
    // SAFETY: as in memory_grow.
    let inst = unsafe { instance(vmctx) };
    let (Some(&d), Some(&s)) = (
        inst.tables.get(dst_t as usize),
        inst.tables.get(src_t as usize),
    ) else {
        return 1;
    };
    // SAFETY: live entries; raw pointers so d == s is fine.
    let (dlen, slen) = unsafe { ((*d).elems.len() as u64, (*s).elems.len() as u64) };
    let (dst, src, len) = (dst as u64, src as u64, len as u64);
    if dst + len > dlen || src + len > slen {
        return 1;
    }
    // SAFETY: in bounds (checked above); `copy` handles overlap.
    unsafe {
        std::ptr::copy(
            (*s).elems.as_ptr().add(src as usize),
            (*d).elems.as_mut_ptr().add(dst as usize),
            len as usize,
        )
    };
    0
}

unsafe extern "C" fn table_init(
    vmctx: *mut u8,
    table: u32,
    elem: u32,
    dst: u32,
    src: u32,
    len: u32,
) -> u32 {
    // SAFETY: as in memory_grow.
    let inst = unsafe { instance(vmctx) };
    let items = match inst.elements.get(elem as usize) {
        Some(Some(i)) => i.clone(),
        Some(None) => Arc::from(vec![]),
        None => return 1,
    };
    let Some(&t) = inst.tables.get(table as usize) else {
        return 1;
    };
    // SAFETY: live entry.
    copy_into_table(unsafe { &mut *t }, dst, &items, src, len).map_or(1, |_| 0)
}

unsafe extern "C" fn elem_drop(vmctx: *mut u8, elem: u32) {
    // SAFETY: as in memory_grow.
    let inst = unsafe { instance(vmctx) };
    if let Some(e) = inst.elements.get_mut(elem as usize) {
        *e = None;
    }
}

unsafe extern "C" fn memory_atomic_notify(vmctx: *mut u8, mem: u32, addr: u64, count: u32) -> u32 {
    // SAFETY: as in memory_grow.
    let inst = unsafe { instance(vmctx) };
    match inst.memories.get(mem as usize) {
        // SAFETY: live entry; `notify` re-checks bounds.
        Some(&m) => unsafe { (*m).data.notify(addr, count) },
        None => 0,
    }
}

/// Whether the call running on `vmctx`'s store has reached its epoch
/// deadline (or was interrupted through an `InterruptHandle`): the same test
/// the generated code makes at loop headers.
fn interrupted(vmctx: *mut u8) -> bool {
    // SAFETY: `vmctx` is the live vmctx of the calling instance; its header
    // points at the store context, whose `epoch_ptr` points at the engine's
    // epoch counter. Both words may be written by other threads, so they are
    // read atomically (they are naturally aligned u64s).
    unsafe {
        let ctx = *(vmctx.add(abi::VMCTX_STORE as usize) as *const *mut abi::VMStoreContext);
        let epoch = AtomicU64::from_ptr((*ctx).epoch_ptr as *mut u64).load(Ordering::Relaxed);
        let deadline = AtomicU64::from_ptr(std::ptr::addr_of_mut!((*ctx).epoch_deadline))
            .load(Ordering::Relaxed);
        epoch >= deadline
    }
}

unsafe extern "C" fn memory_atomic_wait32(
    vmctx: *mut u8,
    mem: u32,
    addr: u64,
    expected: u32,
    timeout: i64,
) -> u32 {
    // SAFETY: as in memory_grow.
    let inst = unsafe { instance(vmctx) };
    match inst.memories.get(mem as usize) {
        // SAFETY: live entry; `wait` re-checks bounds and alignment. It
        // blocks this thread, by design of `memory.atomic.wait`.
        Some(&m) => unsafe {
            (*m).data
                .wait(addr, u64::from(expected), false, timeout, &|| {
                    interrupted(vmctx)
                })
        },
        None => 1,
    }
}

unsafe extern "C" fn memory_atomic_wait64(
    vmctx: *mut u8,
    mem: u32,
    addr: u64,
    expected: u64,
    timeout: i64,
) -> u32 {
    // SAFETY: as in memory_atomic_wait32.
    let inst = unsafe { instance(vmctx) };
    match inst.memories.get(mem as usize) {
        // SAFETY: as in memory_atomic_wait32.
        Some(&m) => unsafe {
            (*m).data
                .wait(addr, expected, true, timeout, &|| interrupted(vmctx))
        },
        None => 1,
    }
}
