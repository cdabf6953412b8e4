//! [`InstanceImage`]: an instance captured as data (its memories, globals,
//! tables and dropped segments), from which new instances start where the
//! captured one was, and to which a running instance can be put back.
//!
//! This is the engine half of a Proto-Faaslet. The engine knows nothing of
//! files: `faaslet-snapshot` turns an image into a versioned file and back
//! (through [`InstanceImage::to_parts`] and [`InstanceImage::from_parts`]),
//! and the platform decides when to capture.
//!
//! * [`InstanceImage::capture`] records each defined memory in a sealed
//!   memfd (`faaslet_sfi::MemoryImage`), globals and tables with function
//!   references as function indices, and which passive segments were
//!   dropped.
//! * [`Instance::from_source`] with [`Source::Image`] builds the vmctx as
//!   usual, maps each memory `MAP_PRIVATE` over its reservation (one
//!   `mmap`, whatever its size), sets globals and tables, and runs no
//!   segment and no start function.
//! * [`InstanceImage::reset`] puts a warm instance back after a call: only
//!   pages it wrote cost anything, and nothing it wrote survives.
//!
//! ```
//! use faaslet::{Engine, Instance, InstanceImage, Module, Source, Store};
//!
//! let engine = Engine::default();
//! let module = Module::new(&engine, r#"(module
//!     (memory (export "memory") 1)
//!     (global $n (mut i32) (i32.const 0))
//!     (func (export "init") (global.set $n (i32.const 40)) (i32.store (i32.const 8) (i32.const 2)))
//!     (func (export "get") (result i32) (i32.add (global.get $n) (i32.load (i32.const 8))))
//!     (func (export "clobber") (global.set $n (i32.const 0)) (i32.store (i32.const 8) (i32.const 0))))"#).unwrap();
//!
//! let mut store = Store::new(&engine, ());
//! let inst = Instance::new(&mut store, &module, &[]).unwrap();
//! inst.get_typed_func::<(), (), _>(&mut store, "init").unwrap().call(&mut store, ()).unwrap();
//! let image = InstanceImage::capture(&mut store, inst).unwrap();
//!
//! let mut store = Store::new(&engine, ());
//! let inst = Instance::from_source(&mut store, Source::Image(&image), &[]).unwrap();
//! let get = inst.get_typed_func::<(), i32, _>(&mut store, "get").unwrap();
//! assert_eq!(get.call(&mut store, ()).unwrap(), 42);
//! inst.get_typed_func::<(), (), _>(&mut store, "clobber").unwrap().call(&mut store, ()).unwrap();
//! assert_eq!(get.call(&mut store, ()).unwrap(), 0);
//! image.reset(&mut store, inst).unwrap();
//! assert_eq!(get.call(&mut store, ()).unwrap(), 42);
//! ```
//!
//! [`Instance::from_source`]: crate::Instance::from_source

use crate::entries::InstanceEntry;
use crate::handles::Instance;
use crate::module::Module;
use crate::store::{Store, StoreCore};
use crate::trap::Error;
use faaslet_jit::{MemoryType, RefType, ValType};
use faaslet_sfi::MemoryImage;
use std::sync::Arc;

/// Where a new instance comes from (see [`Instance::from_source`]).
///
/// [`Instance::from_source`]: crate::Instance::from_source
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A fresh instance of a module: memories and tables from the active
    /// segments, then the start function.
    Module(&'a Module),
    /// An instance resumed from an image: memories, globals and tables as
    /// captured; no segment and no start function runs.
    Image(&'a InstanceImage),
}

impl Source<'_> {
    /// The module the new instance is of.
    pub fn module(&self) -> &Module {
        match self {
            Source::Module(m) => m,
            Source::Image(i) => &i.module,
        }
    }
}

/// Why an image could not be captured or rebuilt.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum ImageError {
    /// The instance holds something an image cannot carry.
    #[error("cannot capture: {0}")]
    Unsupported(String),
    /// Parts given to [`InstanceImage::from_parts`] do not fit the module.
    #[error("image does not fit the module: {0}")]
    Mismatch(String),
    /// The engine refused (memory images could not be made or read).
    #[error(transparent)]
    Engine(#[from] Error),
}

/// An instance captured as data. `Send + Sync`, cheap to clone: start any
/// number of instances from it, in any stores and threads.
#[derive(Debug, Clone)]
pub struct InstanceImage {
    module: Module,
    memories: Vec<Arc<MemoryImage>>,
    /// Defined globals; funcrefs as function index + 1 (0 null).
    globals: Vec<u128>,
    /// Defined tables: function index + 1 per element (0 null); for a
    /// table of GC references, the reference (`i31` or heap offset).
    tables: Vec<Vec<u32>>,
    data_dropped: Vec<bool>,
    elem_dropped: Vec<bool>,
    /// The store's GC heap in image form (`crate::gc::HeapImage`, its
    /// bytes in a memfd restored copy-on-write): `None` if it held no
    /// object.
    gc_heap: Option<Arc<crate::gc::HeapImage>>,
}

/// Whether the module declares struct or array types (WebAssembly GC).
fn uses_gc(info: &faaslet_jit::ModuleInfo) -> bool {
    info.type_defs
        .iter()
        .any(|d| !matches!(d.kind, faaslet_jit::CompositeKind::Func))
}

/// An image as plain values, for serialisation ([`InstanceImage::to_parts`],
/// [`InstanceImage::from_parts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageParts {
    /// Every byte of each defined memory, in order (a memory's length is
    /// its size, a multiple of 64 KiB).
    pub memories: Vec<Vec<u8>>,
    /// Each defined global's bits, in order; a funcref as function index +
    /// 1, 0 for null.
    pub globals: Vec<u128>,
    /// Each defined table: function index + 1 per element, 0 for null; for
    /// a table of GC references (`anyref`, ...), the reference itself (an
    /// `i31` or an offset into `gc_heap`).
    pub tables: Vec<Vec<u32>>,
    /// For each data segment, whether it was dropped.
    pub data_dropped: Vec<bool>,
    /// For each element segment, whether it was dropped.
    pub elem_dropped: Vec<bool>,
    /// The store's GC heap (WebAssembly GC), empty if it held no object:
    /// its bytes from offset 0 as the heap holds them. Each object's
    /// header holds a heap-local type number (an index into `gc_types`),
    /// each function reference field a heap-local function number (0
    /// null, else an index + 1 into `gc_funcs`); references between
    /// objects are heap offsets. Nothing in the bytes depends on the
    /// engine or process, so a restore maps them as they are.
    pub gc_heap: Vec<u8>,
    /// For each heap-local type number, the module's type index
    /// (`u32::MAX`: a number no object of the image has).
    pub gc_types: Vec<u32>,
    /// For each heap-local function number - 1, the module's function
    /// index (`u32::MAX`: a number no field of the image holds).
    pub gc_funcs: Vec<u32>,
}

fn memory_image(bytes: &[u8]) -> Result<Arc<MemoryImage>, Error> {
    MemoryImage::new(bytes)
        .map(Arc::new)
        .map_err(|e| Error::Resource(format!("memory image: {e}")))
}

impl InstanceImage {
    /// Captures `instance` as it is now.
    ///
    /// Refused ([`ImageError::Unsupported`]) for instances with imported
    /// or shared memories or tables, and for references an image cannot
    /// name (non-null externrefs, functions of other instances).
    pub fn capture<T>(
        store: &mut Store<T>,
        instance: Instance,
    ) -> Result<InstanceImage, ImageError> {
        let core = store.core_mut();
        core.check(instance.store)?;
        // The image holds only what is reachable (the heap is not
        // compacted: free blocks between live objects stay, as free
        // blocks, and a free tail is dropped).
        core.collect_garbage();
        let entry = &core.instances[instance.index as usize];
        let module = entry.module.clone();
        let info = module.info();
        if info.num_imported_memories > 0 || info.num_imported_tables > 0 {
            return Err(ImageError::Unsupported(
                "imported memories and tables are not captured".into(),
            ));
        }
        let mut memories = Vec::new();
        for &id in &entry.memory_ids {
            let m = &core.memories[id as usize];
            if m.ty.shared {
                return Err(ImageError::Unsupported(
                    "shared memories are not captured".into(),
                ));
            }
            // State mapped into the memory is not the instance's: it is
            // captured as zero (and unmapped on reset), never copied.
            if let Some(bytes) = m.bytes() {
                memories.push(memory_image(bytes)?);
            } else {
                let segments = m.data.shared_segments();
                let len = m.length() as usize;
                let mut bytes = Vec::new();
                bytes.try_reserve_exact(len).map_err(|_| {
                    Error::Resource(format!("no memory for a {len}-byte copy of a memory"))
                })?;
                bytes.resize(len, 0);
                // A raw copy: other Faaslets write the mapped pages.
                m.read(0, &mut bytes);
                for r in segments {
                    let end = r.end.min(bytes.len());
                    if r.start < end {
                        bytes[r.start..end].fill(0);
                    }
                }
                memories.push(memory_image(&bytes)?);
            }
        }
        let to_index = |raw: u64, what: &str| -> Result<u32, ImageError> {
            if raw == 0 {
                return Ok(0);
            }
            entry
                .func_index_of(raw as usize)
                .map(|i| i + 1)
                .ok_or_else(|| {
                    ImageError::Unsupported(format!("{what} refers to another instance's function"))
                })
        };
        let mut globals = Vec::new();
        for &id in &entry.global_ids[info.num_imported_globals as usize..] {
            let g = &core.globals[id as usize];
            let bits = g.vm.bits;
            globals.push(match g.ty.content {
                ValType::FuncRef => to_index(bits as u64, "a global")? as u128,
                ValType::ExternRef if bits != 0 => {
                    return Err(ImageError::Unsupported(
                        "a global holds an externref".into(),
                    ))
                }
                ValType::ExnRef if bits != 0 => {
                    return Err(ImageError::Unsupported("a global holds an exnref".into()))
                }
                ValType::AnyRef
                    if bits as u64 & faaslet_jit::gc_ref::TAG_MASK
                        == faaslet_jit::gc_ref::EXTERN_TAG =>
                {
                    return Err(ImageError::Unsupported(
                        "a global holds an externref".into(),
                    ))
                }
                _ => bits,
            });
        }
        let mut tables = Vec::new();
        for &id in &entry.table_ids {
            let t = &core.tables[id as usize];
            let mut items = Vec::with_capacity(t.elems.len());
            for &e in &t.elems {
                items.push(match t.ty.element {
                    RefType::Func => to_index(e, "a table")?,
                    RefType::Extern if e != 0 => {
                        return Err(ImageError::Unsupported("a table holds an externref".into()))
                    }
                    RefType::Exn if e != 0 => {
                        return Err(ImageError::Unsupported("a table holds an exnref".into()))
                    }
                    RefType::Extern | RefType::Exn => 0,
                    // A GC reference is an `i31` or a heap offset below
                    // `gc::MAX_HEAP_BYTES`: 32 bits, kept as is (the heap
                    // is captured with its offsets). An externalised host
                    // reference is refused as an externref is.
                    RefType::Any => u32::try_from(e)
                        .ok()
                        .filter(|v| {
                            u64::from(*v) & faaslet_jit::gc_ref::TAG_MASK
                                != faaslet_jit::gc_ref::EXTERN_TAG
                        })
                        .ok_or_else(|| {
                            ImageError::Unsupported(
                                "a table holds an externalised host reference".into(),
                            )
                        })?,
                });
            }
            tables.push(items);
        }
        let heap = core.gc.borrow();
        let gc_heap = heap
            .image(info, &|raw| entry.func_index_of(raw as usize))
            .map_err(ImageError::Unsupported)?
            .map(Arc::new);
        Ok(InstanceImage {
            memories,
            globals,
            tables,
            data_dropped: entry.data_dropped.clone(),
            elem_dropped: entry.elements.iter().map(Option::is_none).collect(),
            gc_heap,
            module,
        })
    }

    /// The module this is an image of.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Bytes of linear memory held (the sum of the memories' sizes).
    pub fn memory_bytes(&self) -> usize {
        self.memories.iter().map(|m| m.len()).sum()
    }

    /// Whether element segment `i` was dropped when the image was taken
    /// (false for a segment the module does not have).
    pub(crate) fn elem_dropped(&self, i: usize) -> bool {
        self.elem_dropped.get(i).copied().unwrap_or(false)
    }

    /// Entry `index` of table `table` (the module's table index space) as
    /// captured: `None` if there is no such table or entry, else whether
    /// it holds a function (not null; for a table of GC references,
    /// whether it holds one).
    pub fn table_holds_func(&self, table: u32, index: u64) -> Option<bool> {
        let items = self.tables.get(table as usize)?;
        let item = items.get(usize::try_from(index).ok()?)?;
        Some(*item != 0)
    }

    /// Puts `instance` (started from, or captured as, this image) back to
    /// the image: memories drop the pages written since (one system call
    /// each, whatever their size; pages grown since are discarded),
    /// globals, tables and dropped segments are set back.
    pub fn reset<T>(&self, store: &mut Store<T>, instance: Instance) -> Result<(), Error> {
        let core = store.core_mut();
        core.check(instance.store)?;
        let id = instance.index;
        let entry = &core.instances[id as usize];
        if !Arc::ptr_eq(&entry.module.inner, &self.module.inner) {
            return Err(Error::Type("instance is not of the image's module".into()));
        }
        for (k, &mid) in entry.memory_ids.iter().enumerate() {
            core.memories[mid as usize]
                .data
                .reset_to_image(&self.memories[k])?;
        }
        let info = self.module.info();
        let defined = &entry.global_ids[info.num_imported_globals as usize..];
        for (i, &gid) in defined.iter().enumerate() {
            let bits = self.global_bits(entry, i);
            core.globals[gid as usize].vm.bits = bits;
        }
        if self.gc_heap.is_some() || uses_gc(info) {
            // The store's heap goes back to the image's (a store holding a
            // restored Faaslet holds only it).
            let entry = &core.instances[id as usize];
            let mut heap = core.gc.borrow_mut();
            heap.clear();
            // Host handles named objects of the heap just dropped: the
            // offsets they hold would name the image's objects now.
            core.any_roots.release_all();
            self.restore_gc_heap_into(&mut heap, entry)?;
        }
        self.restore_tables_and_segments(core, id)
    }

    /// The image as plain values (reads every memory image back).
    pub fn to_parts(&self) -> Result<ImageParts, Error> {
        let mut memories = Vec::with_capacity(self.memories.len());
        for m in &self.memories {
            memories.push(
                m.read()
                    .map_err(|e| Error::Resource(format!("reading memory image: {e}")))?,
            );
        }
        let (gc_heap, gc_types, gc_funcs) = match &self.gc_heap {
            Some(h) => h.to_parts().map_err(Error::Resource)?,
            None => Default::default(),
        };
        Ok(ImageParts {
            memories,
            globals: self.globals.clone(),
            tables: self.tables.clone(),
            data_dropped: self.data_dropped.clone(),
            elem_dropped: self.elem_dropped.clone(),
            gc_heap,
            gc_types,
            gc_funcs,
        })
    }

    /// An image of `module` from plain values, checked against the module
    /// before anything is trusted: counts, memory sizes against the memory
    /// types, global values against their types, table lengths against
    /// the table types and the engine's limit, function indices against
    /// the module's functions ([`ImageError::Mismatch`] names what does not
    /// fit).
    pub fn from_parts(module: &Module, parts: ImageParts) -> Result<InstanceImage, ImageError> {
        let info = module.info();
        let bad = |m: String| ImageError::Mismatch(m);
        let defined_mems = &info.memories[info.num_imported_memories as usize..];
        if parts.memories.len() != defined_mems.len() {
            return Err(bad(format!(
                "{} memories, the module defines {}",
                parts.memories.len(),
                defined_mems.len()
            )));
        }
        let page = faaslet_sfi::WASM_PAGE as u64;
        let mut memories = Vec::new();
        for (m, ty) in parts.memories.iter().zip(defined_mems) {
            let len = m.len() as u64;
            let max = ty.maximum.unwrap_or(65536).min(65536) * page;
            if !len.is_multiple_of(page) || len < ty.minimum * page || len > max {
                return Err(bad(format!("memory of {len} bytes does not fit its type")));
            }
            memories.push(memory_image(m)?);
        }
        let num_funcs = info.funcs.len() as u64;
        let defined_globals = &info.globals[info.num_imported_globals as usize..];
        if parts.globals.len() != defined_globals.len() {
            return Err(bad(format!(
                "{} globals, the module defines {}",
                parts.globals.len(),
                defined_globals.len()
            )));
        }
        for (g, ty) in parts.globals.iter().zip(defined_globals) {
            let ok = match ty.content {
                ValType::I32 | ValType::F32 => *g <= u32::MAX as u128,
                ValType::I64 | ValType::F64 => *g <= u64::MAX as u128,
                ValType::V128 => true,
                ValType::FuncRef => *g <= num_funcs as u128,
                // An `i31` or a heap offset (never an externalised host
                // reference; an offset is only ever used bounds-checked).
                ValType::AnyRef => {
                    *g <= u64::MAX as u128
                        && *g as u64 & faaslet_jit::gc_ref::TAG_MASK
                            != faaslet_jit::gc_ref::EXTERN_TAG
                }
                _ => *g == 0,
            };
            if !ok {
                return Err(bad(format!("global value {g:#x} does not fit its type")));
            }
        }
        if parts.tables.len() != info.tables.len() {
            return Err(bad(format!(
                "{} tables, the module defines {}",
                parts.tables.len(),
                info.tables.len()
            )));
        }
        for (t, ty) in parts.tables.iter().zip(&info.tables) {
            let limit = ty
                .maximum
                .unwrap_or(u64::MAX)
                .min(module.engine().config().max_table_elements);
            if (t.len() as u64) < ty.minimum || t.len() as u64 > limit {
                return Err(bad(format!(
                    "table of {} elements does not fit its type",
                    t.len()
                )));
            }
            let fits = |e: u32| match ty.element {
                RefType::Func => u64::from(e) <= num_funcs,
                RefType::Any => {
                    u64::from(e) & faaslet_jit::gc_ref::TAG_MASK != faaslet_jit::gc_ref::EXTERN_TAG
                }
                RefType::Extern | RefType::Exn => e == 0,
            };
            if !t.iter().all(|&e| fits(e)) {
                return Err(bad("table element out of range".into()));
            }
        }
        if parts.data_dropped.len() != info.data.len()
            || parts.elem_dropped.len() != info.elements.len()
        {
            return Err(bad("segment counts differ from the module".into()));
        }
        let gc_heap = if parts.gc_heap.is_empty() {
            if !parts.gc_types.is_empty() || !parts.gc_funcs.is_empty() {
                return Err(bad("GC heap tables without a GC heap".into()));
            }
            None
        } else {
            Some(Arc::new(
                crate::gc::HeapImage::from_parts(
                    info,
                    &parts.gc_heap,
                    parts.gc_types,
                    parts.gc_funcs,
                )
                .map_err(bad)?,
            ))
        };
        Ok(InstanceImage {
            module: module.clone(),
            memories,
            globals: parts.globals,
            tables: parts.tables,
            data_dropped: parts.data_dropped,
            elem_dropped: parts.elem_dropped,
            gc_heap,
        })
    }

    // --- what instantiation from an image uses -----------------------------

    /// A new store memory of type `ty` holding memory image `k` (mapped
    /// straight into its reservation); returns its index.
    pub(crate) fn restore_memory(
        &self,
        core: &mut StoreCore,
        ty: MemoryType,
        k: usize,
    ) -> Result<u32, Error> {
        core.push_memory_image(ty, &self.memories[k])
    }

    /// Puts the image's GC heap into the store of `entry` (a new instance
    /// being made from the image), whose heap must hold no object yet.
    pub(crate) fn restore_gc_heap(
        &self,
        core: &StoreCore,
        entry: &InstanceEntry,
    ) -> Result<(), Error> {
        let Some(image) = &self.gc_heap else {
            return Ok(());
        };
        if image.len() as u64 > core.gc_budget() {
            return Err(Error::Resource(format!(
                "the image's GC heap of {} bytes is over the store's memory limit",
                image.len()
            )));
        }
        let mut heap = core.gc.borrow_mut();
        if !heap.is_empty() {
            return Err(Error::Resource(
                "an image with GC objects needs a store whose GC heap is empty".into(),
            ));
        }
        self.restore_gc_heap_into(&mut heap, entry)
    }

    fn restore_gc_heap_into(
        &self,
        heap: &mut crate::gc::GcHeap,
        entry: &InstanceEntry,
    ) -> Result<(), Error> {
        let Some(image) = &self.gc_heap else {
            return Ok(());
        };
        heap.restore_image(entry.module.info(), image, &|i| entry.funcref_ptr(i) as u64)
            .map_err(|e| Error::Resource(format!("GC heap image: {e}")))
    }

    /// The bits of defined global `i` for instance `entry`.
    pub(crate) fn global_bits(&self, entry: &InstanceEntry, i: usize) -> u128 {
        let info = entry.module.info();
        let ty = info.globals[info.num_imported_globals as usize + i];
        let bits = self.globals[i];
        if matches!(ty.content, ValType::FuncRef) && bits != 0 {
            entry.funcref_ptr(bits as u32 - 1) as usize as u128
        } else {
            bits
        }
    }

    /// Sets the tables and dropped segments of instance `id`.
    pub(crate) fn restore_tables_and_segments(
        &self,
        core: &mut StoreCore,
        id: u32,
    ) -> Result<(), Error> {
        let budget = core.gc_budget();
        let entry = &mut core.instances[id as usize];
        for (k, items) in self.tables.iter().enumerate() {
            // SAFETY: table pointers of an instance are live store entries,
            // and no wasm code runs while we hold `&mut StoreCore`.
            let t = unsafe { &mut *entry.tables[k] };
            let gc = t.ty.element == RefType::Any;
            t.elems.clear();
            t.elems.extend(items.iter().map(|&e| {
                if gc {
                    u64::from(e)
                } else if e == 0 {
                    0
                } else {
                    entry.funcref_ptr(e - 1) as u64
                }
            }));
            t.sync();
        }
        let module = entry.module.clone();
        let info = module.info();
        entry.data_dropped.copy_from_slice(&self.data_dropped);
        for (i, &dropped) in self.elem_dropped.iter().enumerate() {
            if dropped {
                entry.elements[i] = None;
            } else if entry.elements[i].is_none() {
                // Dropped during a call: evaluate its items again.
                let items: Arc<[u64]> = info.elements[i]
                    .items
                    .iter()
                    .map(|e| {
                        crate::entries::eval_const(&core.globals, &core.gc, budget, entry, e)
                            .map(|v| v as u64)
                    })
                    .collect::<Result<_, _>>()?;
                entry.elements[i] = Some(items);
            }
        }
        Ok(())
    }
}
