//! [`Instance`]: a module linked to its imports, with its vmctx, made from
//! a [`Source`]: a fresh module (segments and start function run) or an
//! [`InstanceImage`] (memories, globals and tables resumed as captured).

use crate::builtins::BUILTINS;
use crate::entries::{
    copy_into_memory, copy_into_table, eval_const, eval_const_entry, InstanceEntry, MemoryEntry,
    TableEntry,
};
use crate::func::{TypedFunc, WasmParams, WasmResults};
use crate::handles::{Extern, Func, Global, Instance, Memory, Table};
use crate::image::Source;
use crate::module::Module;
use crate::store::{Store, StoreCore};
use crate::trap::{Error, Trap, TrapKind};
use faaslet_jit::abi::{self, VMBuiltins, VMFuncRef};
use faaslet_jit::{DataMode, ElemMode, EntityType};
use std::sync::Arc;

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
        Self::from_source(store, Source::Module(module), imports)
    }

    /// A new instance from `source`: [`Source::Module`] is
    /// [`Instance::new`]; [`Source::Image`] resumes an
    /// [`InstanceImage`](crate::InstanceImage): memories, globals and tables
    /// come from it, and no segment or start function runs. `imports` are
    /// the module's imports in order (host functions; imported globals are
    /// taken as given).
    pub fn from_source<T>(
        store: &mut Store<T>,
        source: Source<'_>,
        imports: &[Extern],
    ) -> Result<Instance, Error> {
        let module = source.module();
        let snap = match source {
            Source::Module(_) => None,
            Source::Image(image) => Some(image),
        };
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
        // 2a. Limits, before anything is allocated: a module declaring
        // 100 tables of 10,000,000 elements fails here, naming the limit.
        let defined_memories = &info.memories[info.num_imported_memories as usize..];
        let defined_tables = &info.tables[info.num_imported_tables as usize..];
        let memory_pages = match snap {
            // A restored memory is as long as its image.
            Some(image) => image.memory_bytes() as u64 / faaslet_sfi::WASM_PAGE as u64,
            None => defined_memories
                .iter()
                .fold(0u64, |a, m| a.saturating_add(m.minimum)),
        };
        core.check_instance(
            defined_memories.len() as u64,
            memory_pages,
            defined_tables.len() as u64,
            defined_tables
                .iter()
                .fold(0u64, |a, t| a.saturating_add(t.minimum)),
        )?;
        core.modules.push(module.clone());
        if core.engine.config().wasm_gc && crate::gc::needs_registration(info) {
            // Casts look up the types of objects and function references
            // by engine-wide id.
            core.gc.get_mut().register_types(info);
        }
        let offsets = info.offsets;
        let id = core.instances.len() as u32;
        let core_ptr = &*core as *const StoreCore as *const ();
        let mut entry = Box::new(InstanceEntry {
            module: module.clone(),
            core: core_ptr,
            id,
            vmctx: vec![0u128; (offsets.size() as usize).div_ceil(16)].into_boxed_slice(),
            memories: Vec::new(),
            tables: Vec::new(),
            memory_ids: Vec::new(),
            table_ids: Vec::new(),
            global_ids: Vec::new(),
            tag_ids: Vec::new(),
            imported_funcs: Vec::new(),
            elements: Vec::new(),
            data_dropped: vec![false; info.data.len()],
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
                Extern::Tag(t) => entry.tag_ids.push(t.index),
            }
        }
        // Defined tags: each a new identity.
        for &ty in &info.tags[info.num_imported_tags as usize..] {
            core.tags.push(Box::new(abi::VMTag {
                type_id: info.type_ids[ty as usize],
                _pad: 0,
            }));
            entry.tag_ids.push(core.tags.len() as u32 - 1);
        }
        for (i, id) in entry.tag_ids.iter().enumerate() {
            let tag: *const abi::VMTag = &*core.tags[*id as usize];
            write_ptr(offsets.tag(i as u32), tag as *const u8);
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
        // 4b. An image's GC heap, before anything below allocates in it
        // (its objects keep their offsets, which its globals hold).
        if let Some(snap) = snap {
            snap.restore_gc_heap(core, &entry)?;
        }
        // 5. Globals, in order (initialisers may read earlier globals).
        for (i, ty) in info.globals[info.num_imported_globals as usize..]
            .iter()
            .enumerate()
        {
            let bits = match snap {
                Some(snap) => snap.global_bits(&entry, i),
                None => eval_const(
                    &core.globals,
                    &core.gc,
                    core.gc_budget(),
                    &entry,
                    &info.global_inits[i],
                )?,
            };
            let id = core.push_global(*ty, bits);
            entry.global_ids.push(id);
        }
        for (i, id) in entry.global_ids.iter().enumerate() {
            let g = &mut core.globals[*id as usize].vm as *mut abi::VMGlobal;
            write_ptr(offsets.global(i as u32), g as *const u8);
        }
        // 5b. Tables with an initialiser (typed function references): every
        // element gets its value (the initialiser may read imported globals
        // and take function references, both in place now). Filling the
        // existing elements in place keeps the `VMTable` base valid.
        for (i, init) in info.table_inits.iter().enumerate() {
            if let Some(init) = init {
                let value =
                    eval_const(&core.globals, &core.gc, core.gc_budget(), &entry, init)? as u64;
                let id = entry.table_ids[info.num_imported_tables as usize + i];
                let t = &mut core.tables[id as usize];
                t.elems.fill(value);
            }
        }
        // 6. Element segments evaluated to raw references (not those an
        // image says were dropped: a large module's table segment, CPython's
        // 5,900 functions, was evaluated on every restore only to be
        // dropped again).
        entry.elements = info
            .elements
            .iter()
            .enumerate()
            .map(|(i, seg)| {
                if snap.is_some_and(|s| s.elem_dropped(i)) {
                    return Ok(None);
                }
                let items: Arc<[u64]> = seg
                    .items
                    .iter()
                    .map(|e| {
                        eval_const(&core.globals, &core.gc, core.gc_budget(), &entry, e)
                            .map(|v| v as u64)
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Some(items))
            })
            .collect::<Result<_, Trap>>()?;
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
                    // A 64-bit table's offset is an i64: one past u32 is out
                    // of bounds of any table.
                    let dst = if info.tables[*table as usize].table64 {
                        u32::try_from(eval_const_entry(entry, offset) as u64)
                            .map_err(|_| Trap::new(TrapKind::TableOutOfBounds))?
                    } else {
                        eval_const_entry(entry, offset) as u32
                    };
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
                // A 32-bit memory's offset is an i32, a 64-bit one's an i64.
                let dst = if info.memories[*memory as usize].memory64 {
                    eval_const_entry(entry, offset) as u64
                } else {
                    eval_const_entry(entry, offset) as u32 as u64
                };
                // SAFETY: memory pointers are live store entries.
                let m = unsafe { &mut *entry.memories[*memory as usize] };
                copy_into_memory(m, dst, &seg.bytes, 0, seg.bytes.len() as u64)
                    .map_err(|_| Trap::new(TrapKind::MemoryOutOfBounds))?;
                entry.data_dropped[i] = true;
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
        core.export(self.index, name)
    }

    /// The exported function `name`.
    pub fn get_func<T>(&self, store: &mut Store<T>, name: &str) -> Option<Func> {
        self.get_export(store, name)?.into_func()
    }

    /// The exported function `name`, with its type checked.
    pub fn get_typed_func<P: WasmParams, R: WasmResults, T>(
        &self,
        store: &mut Store<T>,
        name: &str,
    ) -> Result<TypedFunc<P, R>, Error> {
        let f = self
            .get_func(store, name)
            .ok_or_else(|| Error::Link(format!("no exported function `{name}`")))?;
        f.typed(store)
    }

    /// The instance's memory 0, exported or not (the one host calls see
    /// through [`Caller::memory`](crate::Caller::memory)).
    pub fn memory0<T>(&self, store: &Store<T>) -> Option<Memory> {
        let core = store.core();
        if self.store != core.id {
            return None;
        }
        let inst = core.instances.get(self.index as usize)?;
        Some(Memory {
            store: core.id,
            index: *inst.memory_ids.first()?,
        })
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
        Extern::Tag(t) => t.store,
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
            // SAFETY: a function entry's funcref points at its live
            // `VMFuncRef` (in its instance's vmctx or host context).
            let have_id = unsafe { (*core.funcs[f.index as usize].funcref).type_id };
            let want_id = info.type_ids[*t as usize];
            if want != have && !core.gc.borrow().is_declared_subtype(have_id, want_id) {
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
                || want.memory64 != e.ty.memory64
            {
                return Err(Error::Link(format!(
                    "{}: incompatible memory limits",
                    what()
                )));
            }
        }
        (EntityType::Table(want), Extern::Table(t)) => {
            let e = &core.tables[t.index as usize];
            let typed = |t: &faaslet_jit::TableType| {
                t.ref_type
                    .unwrap_or_else(|| faaslet_jit::TypedRef::plain(t.element))
            };
            // Tables are mutable: element types must be equal.
            if e.ty.element != want.element
                || e.ty.table64 != want.table64
                || typed(&e.ty) != typed(want)
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
            let heap = core.gc.borrow();
            let declared = |a, b| heap.is_declared_subtype(a, b);
            if !global_matches(&core.globals[g.index as usize].ty, want, declared) {
                return Err(Error::Link(format!("{}: incompatible global type", what())));
            }
        }
        (EntityType::Tag(want), Extern::Tag(t)) => {
            // Tag types are function types: equal ids, equal types.
            if core.tags[t.index as usize].type_id != info.type_ids[*want as usize] {
                return Err(Error::Link(format!("{}: incompatible tag type", what())));
            }
        }
        _ => return Err(Error::Link(format!("{}: wrong kind of import", what()))),
    }
    Ok(())
}

/// Whether a global of type `have` may be imported as `want`: the same
/// mutability and value type, and for a reference global the same precise
/// type if mutable (it can be written through either side) or a subtype
/// if immutable.
fn global_matches(
    have: &faaslet_jit::GlobalType,
    want: &faaslet_jit::GlobalType,
    declared: impl Fn(u32, u32) -> bool,
) -> bool {
    if have.mutable != want.mutable || have.content != want.content {
        return false;
    }
    if !have.content.is_ref() {
        return true;
    }
    let typed = |t: &faaslet_jit::GlobalType| {
        t.ref_type.unwrap_or_else(|| {
            faaslet_jit::TypedRef::plain(match t.content {
                faaslet_jit::ValType::ExternRef => faaslet_jit::RefType::Extern,
                faaslet_jit::ValType::ExnRef => faaslet_jit::RefType::Exn,
                faaslet_jit::ValType::AnyRef => faaslet_jit::RefType::Any,
                _ => faaslet_jit::RefType::Func,
            })
        })
    };
    let (h, w) = (typed(have), typed(want));
    if have.mutable {
        h == w
    } else {
        h.is_subtype_with(w, declared)
    }
}
