//! [`Instance`]: a module linked to its imports, with its vmctx, plus the
//! builtin functions JIT code calls for bulk memory and table operations.

use crate::store::{MemoryEntry, StoreCore, TableEntry};
use crate::trap::{Trap, TrapKind};
use crate::{Error, Extern, Func, Global, Memory, Module, Store, Table};
use faaslet_jit::abi::{self, builtins, VMBuiltins, VMFuncRef};
use faaslet_jit::{ConstExpr, ConstOp, DataMode, ElemMode, EntityType, ExportIndex};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// An instantiated module. A cheap handle into its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Instance {
    pub(crate) store: crate::store::StoreId,
    pub(crate) index: u32,
}

/// The runtime side of an instance. Boxed in the store so its address (and
/// that of its vmctx) never changes; `vmctx[VMCTX_INSTANCE]` points here.
pub(crate) struct InstanceEntry {
    pub(crate) module: Module,
    pub(crate) id: u32,
    /// The vmctx, 16-byte aligned.
    vmctx: Box<[u128]>,
    pub(crate) memories: Vec<*mut MemoryEntry>,
    pub(crate) tables: Vec<*mut TableEntry>,
    pub(crate) memory_ids: Vec<u32>,
    pub(crate) table_ids: Vec<u32>,
    pub(crate) global_ids: Vec<u32>,
    /// Imported functions, in import order.
    pub(crate) imported_funcs: Vec<Func>,
    /// Element segments as raw references; `None` once dropped.
    pub(crate) elements: Vec<Option<Arc<[u64]>>>,
    /// Data segments; `None` once dropped.
    pub(crate) data: Vec<Option<Arc<[u8]>>>,
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

/// The export `name` of instance `inst`.
pub(crate) fn export_of(core: &mut StoreCore, inst: u32, name: &str) -> Option<Extern> {
    let entry = &core.instances[inst as usize];
    let info = entry.module.info();
    let export = info.exports.iter().find(|e| e.name == name)?;
    Some(match export.index {
        ExportIndex::Func(i) => {
            if i < info.num_imported_funcs {
                Extern::Func(entry.imported_funcs[i as usize])
            } else {
                Extern::Func(core.instance_func(inst, i))
            }
        }
        ExportIndex::Memory(i) => Extern::Memory(Memory {
            store: core.id,
            index: entry.memory_ids[i as usize],
        }),
        ExportIndex::Table(i) => Extern::Table(Table {
            store: core.id,
            index: entry.table_ids[i as usize],
        }),
        ExportIndex::Global(i) => Extern::Global(Global {
            store: core.id,
            index: entry.global_ids[i as usize],
        }),
    })
}

static BUILTINS: BuiltinTable = BuiltinTable(VMBuiltins {
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
    ],
});

struct BuiltinTable(VMBuiltins);
// SAFETY: the table holds immutable function pointers.
unsafe impl Sync for BuiltinTable {}

const _: () = assert!(builtins::COUNT == 13);

impl Instance {
    /// Instantiates `module` with `imports` given in the module's import
    /// order: links, allocates, initialises tables and memories from the
    /// active segments, and runs the start function.
    ///
    /// Errors: [`Error::Link`] when an import is missing or of the wrong
    /// type; [`Error::Trap`] when a segment is out of bounds or the start
    /// function traps (effects on imported memories and tables before that
    /// point remain, as the spec requires).
    pub fn new<T>(
        store: &mut Store<T>,
        module: &Module,
        imports: &[Extern],
    ) -> Result<Instance, Error> {
        Self::instantiate(store, module, imports, None)
    }

    /// [`Instance::new`], or with `snap`, an instance resumed from a
    /// snapshot: memories, globals and tables come from it, and no segment
    /// or start function runs.
    pub(crate) fn instantiate<T>(
        store: &mut Store<T>,
        module: &Module,
        imports: &[Extern],
        snap: Option<&crate::snapshot::Snapshot>,
    ) -> Result<Instance, Error> {
        if !module.engine().same(store.engine()) {
            return Err(Error::Type(
                "module was compiled by a different engine".into(),
            ));
        }
        let info = module.info();
        if imports.len() != info.imports.len() {
            return Err(Error::Link(format!(
                "module needs {} imports, {} given",
                info.imports.len(),
                imports.len()
            )));
        }
        let core = store.core_mut();
        // 1. Type-check imports.
        for (imp, ext) in info.imports.iter().zip(imports) {
            check_import(core, info, imp, ext)?;
        }
        core.modules.push(module.clone());
        let offsets = info.offsets;
        let id = core.instances.len() as u32;
        let mut entry = Box::new(InstanceEntry {
            module: module.clone(),
            id,
            vmctx: vec![0u128; (offsets.size() as usize).div_ceil(16)].into_boxed_slice(),
            memories: Vec::new(),
            tables: Vec::new(),
            memory_ids: Vec::new(),
            table_ids: Vec::new(),
            global_ids: Vec::new(),
            imported_funcs: Vec::new(),
            elements: Vec::new(),
            data: info.data.iter().map(|d| Some(d.bytes.clone())).collect(),
        });
        let vmctx = entry.vmctx_ptr();
        let entry_ptr: *mut InstanceEntry = &mut *entry;
        let vmctx_len = entry.vmctx.len() * std::mem::size_of::<u128>();
        let write_ptr = |off: u32, p: *const u8| {
            // Offsets come from this module's VMOffsets; the check makes the
            // write below sound even if they did not.
            assert!(
                (off as usize).is_multiple_of(8) && off as usize + 8 <= vmctx_len,
                "vmctx offset {off}"
            );
            // SAFETY: in bounds and 8-byte aligned (checked above) in the
            // live, 16-byte aligned vmctx allocation.
            unsafe { *(vmctx.add(off as usize) as *mut *const u8) = p }
        };
        write_ptr(abi::VMCTX_STORE as u32, core.ctx.ptr() as *const u8);
        write_ptr(
            abi::VMCTX_BUILTINS as u32,
            &BUILTINS.0 as *const VMBuiltins as *const u8,
        );
        write_ptr(abi::VMCTX_INSTANCE as u32, entry_ptr as *const u8);

        // 2. Imports.
        for ext in imports {
            match *ext {
                Extern::Func(f) => entry.imported_funcs.push(f),
                Extern::Memory(m) => entry.memory_ids.push(m.index),
                Extern::Table(t) => entry.table_ids.push(t.index),
                Extern::Global(g) => entry.global_ids.push(g.index),
            }
        }
        // 3. Defined memories, tables, globals.
        for (k, ty) in info.memories[info.num_imported_memories as usize..]
            .iter()
            .enumerate()
        {
            let id = match snap {
                Some(snap) => snap.restore_memory(core, *ty, k)?,
                None => core.push_memory(*ty)?,
            };
            entry.memory_ids.push(id);
        }
        for ty in &info.tables[info.num_imported_tables as usize..] {
            entry.table_ids.push(core.push_table(*ty, 0)?);
        }
        for (i, id) in entry.memory_ids.iter().enumerate() {
            let m: *mut MemoryEntry = &mut *core.memories[*id as usize];
            entry.memories.push(m);
            // SAFETY: `m` is boxed in the store and outlives the instance.
            let vm = unsafe { (*m).vm_ptr() };
            write_ptr(offsets.memory(i as u32), vm as *const u8);
        }
        for (i, id) in entry.table_ids.iter().enumerate() {
            let t: *mut TableEntry = &mut *core.tables[*id as usize];
            entry.tables.push(t);
            // SAFETY: `t` is boxed in the store and outlives the instance.
            let vm = unsafe { std::ptr::addr_of!((*t).vm) };
            write_ptr(offsets.table(i as u32), vm as *const u8);
        }
        // 4. Function references: imported ones copied, defined ones built.
        for (i, f) in entry.imported_funcs.iter().enumerate() {
            let src = core.funcs[f.index as usize].funcref;
            let dst = entry.funcref_ptr(i as u32) as *mut VMFuncRef;
            // SAFETY: src is a live funcref of this store; dst is inside the vmctx.
            unsafe { *dst = *src };
            core.func_by_ptr.insert(dst as usize, f.index);
        }
        for i in info.num_imported_funcs..info.funcs.len() as u32 {
            let dst = entry.funcref_ptr(i) as *mut VMFuncRef;
            let type_index = info.funcs[i as usize];
            // SAFETY: dst is inside the vmctx.
            unsafe {
                *dst = VMFuncRef {
                    func_ptr: module.inner.compiled.function(i - info.num_imported_funcs),
                    vmctx,
                    type_id: info.type_ids[type_index as usize],
                    _pad: 0,
                }
            };
        }
        // 5. Globals, in order (initialisers may read earlier globals).
        for (i, ty) in info.globals[info.num_imported_globals as usize..]
            .iter()
            .enumerate()
        {
            let bits = match snap {
                Some(snap) => snap.global_bits(&entry, i),
                None => eval_const(core, &entry, &info.global_inits[i]),
            };
            let id = core.push_global(*ty, bits);
            entry.global_ids.push(id);
        }
        for (i, id) in entry.global_ids.iter().enumerate() {
            let g = &mut core.globals[*id as usize].vm as *mut abi::VMGlobal;
            write_ptr(offsets.global(i as u32), g as *const u8);
        }
        // 6. Element segments evaluated to raw references.
        entry.elements = info
            .elements
            .iter()
            .map(|seg| {
                let items: Arc<[u64]> = seg
                    .items
                    .iter()
                    .map(|e| eval_const(core, &entry, e) as u64)
                    .collect();
                Some(items)
            })
            .collect();
        core.instances.push(entry);
        let instance = Instance {
            store: core.id,
            index: id,
        };

        if let Some(snap) = snap {
            snap.restore_tables_and_segments(core, id)?;
            return Ok(instance);
        }

        // 7. Active segments, then start. A trap leaves what was done.
        let entry = &mut core.instances[id as usize];
        for (i, seg) in info.elements.iter().enumerate() {
            match &seg.mode {
                ElemMode::Active { table, offset } => {
                    let items = entry.elements[i]
                        .clone()
                        .unwrap_or_else(|| Arc::from(vec![]));
                    let dst = eval_const_entry(entry, offset) as u32;
                    // SAFETY: table pointers are live store entries.
                    let t = unsafe { &mut *entry.tables[*table as usize] };
                    copy_into_table(t, dst, &items, 0, items.len() as u32)
                        .map_err(|_| Trap::new(TrapKind::TableOutOfBounds))?;
                    entry.elements[i] = None;
                }
                ElemMode::Declared => entry.elements[i] = None,
                ElemMode::Passive => {}
            }
        }
        for (i, seg) in info.data.iter().enumerate() {
            if let DataMode::Active { memory, offset } = &seg.mode {
                let dst = eval_const_entry(entry, offset) as u32 as u64;
                // SAFETY: memory pointers are live store entries.
                let m = unsafe { &mut *entry.memories[*memory as usize] };
                copy_into_memory(m, dst, &seg.bytes, 0, seg.bytes.len() as u64)
                    .map_err(|_| Trap::new(TrapKind::MemoryOutOfBounds))?;
                entry.data[i] = None;
            }
        }
        if let Some(start) = info.start {
            let f = core.instance_func(id, start);
            f.call(store, &[], &mut [])?;
        }
        Ok(instance)
    }

    /// The export called `name`.
    pub fn get_export<T>(&self, store: &mut Store<T>, name: &str) -> Option<Extern> {
        let core = store.core_mut();
        core.check(self.store).ok()?;
        export_of(core, self.index, name)
    }

    /// The exported function `name`.
    pub fn get_func<T>(&self, store: &mut Store<T>, name: &str) -> Option<Func> {
        self.get_export(store, name)?.into_func()
    }

    /// The exported function `name`, with its type checked.
    pub fn get_typed_func<P: crate::WasmParams, R: crate::WasmResults, T>(
        &self,
        store: &mut Store<T>,
        name: &str,
    ) -> Result<crate::TypedFunc<P, R>, Error> {
        let f = self
            .get_func(store, name)
            .ok_or_else(|| Error::Link(format!("no exported function `{name}`")))?;
        f.typed(store)
    }

    /// The exported memory `name`.
    pub fn get_memory<T>(&self, store: &mut Store<T>, name: &str) -> Option<Memory> {
        self.get_export(store, name)?.into_memory()
    }

    /// The exported global `name`.
    pub fn get_global<T>(&self, store: &mut Store<T>, name: &str) -> Option<Global> {
        self.get_export(store, name)?.into_global()
    }

    /// The exported table `name`.
    pub fn get_table<T>(&self, store: &mut Store<T>, name: &str) -> Option<Table> {
        self.get_export(store, name)?.into_table()
    }

    /// All exports, in order.
    pub fn exports<T>(&self, store: &mut Store<T>) -> Vec<(String, Extern)> {
        let names: Vec<String> = store.core().instances[self.index as usize]
            .module
            .info()
            .exports
            .iter()
            .map(|e| e.name.clone())
            .collect();
        names
            .into_iter()
            .filter_map(|n| {
                let e = self.get_export(store, &n)?;
                Some((n, e))
            })
            .collect()
    }

    /// The module this is an instance of.
    pub fn module<'a, T>(&self, store: &'a Store<T>) -> &'a Module {
        &store.core().instances[self.index as usize].module
    }
}

fn check_import(
    core: &StoreCore,
    info: &faaslet_jit::ModuleInfo,
    imp: &faaslet_jit::Import,
    ext: &Extern,
) -> Result<(), Error> {
    let what = || format!("import `{}`.`{}`", imp.module, imp.name);
    let id = match ext {
        Extern::Func(f) => f.store,
        Extern::Memory(m) => m.store,
        Extern::Table(t) => t.store,
        Extern::Global(g) => g.store,
    };
    core.check(id)
        .map_err(|_| Error::Link(format!("{}: value from another store", what())))?;
    let limits_ok = |min: u64, max: Option<u64>, want_min: u64, want_max: Option<u64>| {
        min >= want_min
            && match (want_max, max) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(w), Some(m)) => m <= w,
            }
    };
    match (&imp.ty, ext) {
        (EntityType::Func(t), Extern::Func(f)) => {
            let want = &info.types[*t as usize];
            let have = &core.funcs[f.index as usize].ty;
            if want != have {
                return Err(Error::Link(format!(
                    "{}: expected {want}, found {have}",
                    what()
                )));
            }
        }
        (EntityType::Memory(want), Extern::Memory(m)) => {
            let e = &core.memories[m.index as usize];
            let cur = e.length() / faaslet_sfi::WASM_PAGE as u64;
            if !limits_ok(cur, e.ty.maximum, want.minimum, want.maximum)
                || want.shared != e.ty.shared
            {
                return Err(Error::Link(format!(
                    "{}: incompatible memory limits",
                    what()
                )));
            }
        }
        (EntityType::Table(want), Extern::Table(t)) => {
            let e = &core.tables[t.index as usize];
            if e.ty.element != want.element
                || !limits_ok(
                    e.elems.len() as u64,
                    e.ty.maximum,
                    want.minimum,
                    want.maximum,
                )
            {
                return Err(Error::Link(format!("{}: incompatible table type", what())));
            }
        }
        (EntityType::Global(want), Extern::Global(g)) => {
            if core.globals[g.index as usize].ty != *want {
                return Err(Error::Link(format!("{}: incompatible global type", what())));
            }
        }
        _ => return Err(Error::Link(format!("{}: wrong kind of import", what()))),
    }
    Ok(())
}

/// Evaluates a constant expression during instantiation.
fn eval_const(core: &StoreCore, entry: &InstanceEntry, expr: &ConstExpr) -> u128 {
    eval(
        expr,
        |g| core.globals[entry.global_ids[g as usize] as usize].vm.bits,
        |f| entry.funcref_ptr(f) as u128,
    )
}

/// Evaluates a constant expression once the instance is in place (globals
/// are reached through the vmctx).
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
    )
}

fn eval(expr: &ConstExpr, global: impl Fn(u32) -> u128, func: impl Fn(u32) -> u128) -> u128 {
    // Validation guarantees a well-typed expression leaving one value.
    let mut stack: Vec<u128> = Vec::with_capacity(4);
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
        };
        stack.push(v);
    }
    stack.pop().unwrap_or(0)
}

/// Copies `len` items of `src` starting at `src_off` into the table at `dst`.
fn copy_into_table(
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

fn copy_into_memory(
    m: &mut MemoryEntry,
    dst: u64,
    src: &[u8],
    src_off: u64,
    len: u64,
) -> Result<(), ()> {
    let mem = m.bytes_mut();
    if src_off
        .checked_add(len)
        .is_none_or(|e| e > src.len() as u64)
        || dst.checked_add(len).is_none_or(|e| e > mem.len() as u64)
    {
        return Err(());
    }
    let (dst, src_off, len) = (dst as usize, src_off as usize, len as usize);
    mem[dst..dst + len].copy_from_slice(&src[src_off..src_off + len]);
    Ok(())
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

unsafe extern "C" fn memory_grow(vmctx: *mut u8, mem: u32, delta: u64) -> u64 {
    // SAFETY: called by JIT code with its vmctx; memory entries are live.
    let inst = unsafe { instance(vmctx) };
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
    let m = unsafe { &mut *m };
    let Some(slice) = dst
        .checked_add(len)
        .and_then(|e| m.bytes_mut().get_mut(dst as usize..e as usize))
    else {
        return 1;
    };
    slice.fill(val as u8);
    0
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
    let bytes = match inst.data.get(data as usize) {
        Some(Some(b)) => b.clone(),
        Some(None) => Arc::from(&[][..]),
        None => return 1,
    };
    let Some(&m) = inst.memories.get(mem as usize) else {
        return 1;
    };
    // SAFETY: live entry.
    copy_into_memory(unsafe { &mut *m }, dst, &bytes, src as u64, len as u64).map_or(1, |_| 0)
}

unsafe extern "C" fn data_drop(vmctx: *mut u8, data: u32) {
    // SAFETY: as in memory_grow.
    let inst = unsafe { instance(vmctx) };
    if let Some(d) = inst.data.get_mut(data as usize) {
        *d = None;
    }
}

unsafe extern "C" fn table_grow(vmctx: *mut u8, table: u32, init: u64, delta: u32) -> u32 {
    // SAFETY: as in memory_grow.
    let inst = unsafe { instance(vmctx) };
    let Some(&t) = inst.tables.get(table as usize) else {
        return u32::MAX;
    };
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
