//! Proto-Faaslets: snapshots of an initialised instance, restored
//! copy-on-write.
//!
//! [`Snapshot::capture`] records an instance after its initialisation (the
//! exported `_initialize`, a Faasm-style zygote, or any export): each
//! defined memory goes into a sealed memfd ([`faaslet_sfi::MemoryImage`]),
//! globals and tables are recorded with function references as function
//! indices, and so is which passive segments were dropped.
//! [`Snapshot::restore`] makes a new instance that resumes exactly there:
//! its vmctx is built as usual, each memory is the image mapped
//! `MAP_PRIVATE` over its reservation (one `mmap`, whatever its size),
//! globals and tables are set from the snapshot, and no data or element
//! segment and no start function runs. [`Snapshot::reset`] puts a warm
//! instance back to the snapshot after a call; only pages it wrote cost
//! anything, and nothing it wrote survives.
//!
//! A snapshot serialises to a versioned, checksummed file bound to its
//! module ([`Snapshot::to_bytes`], [`Snapshot::from_bytes`]; the format is
//! the `faaslet-snapshot` crate), so another process can restore it.
//!
//! ```
//! use faaslet::{Engine, Instance, Module, Store};
//! use faaslet::snapshot::Snapshot;
//!
//! let engine = Engine::default();
//! let module = Module::new(&engine, r#"(module
//!     (memory (export "memory") 1)
//!     (global $n (mut i32) (i32.const 0))
//!     (func (export "_initialize") (global.set $n (i32.const 40)) (i32.store (i32.const 8) (i32.const 2)))
//!     (func (export "get") (result i32) (i32.add (global.get $n) (i32.load (i32.const 8))))
//!     (func (export "clobber") (global.set $n (i32.const 0)) (i32.store (i32.const 8) (i32.const 0))))"#).unwrap();
//!
//! let mut store = Store::new(&engine, ());
//! let snap = Snapshot::create(&mut store, &module, &[], Some("_initialize")).unwrap();
//!
//! let mut store = Store::new(&engine, ());
//! let inst = snap.restore(&mut store, &[]).unwrap();
//! let get = inst.get_typed_func::<(), i32, _>(&mut store, "get").unwrap();
//! assert_eq!(get.call(&mut store, ()).unwrap(), 42);
//! inst.get_typed_func::<(), (), _>(&mut store, "clobber").unwrap().call(&mut store, ()).unwrap();
//! assert_eq!(get.call(&mut store, ()).unwrap(), 0);
//! snap.reset(&mut store, inst).unwrap();
//! assert_eq!(get.call(&mut store, ()).unwrap(), 42);
//!
//! // Across processes: bytes out, bytes in (checked against the module).
//! let again = Snapshot::from_bytes(&module, &snap.to_bytes().unwrap()).unwrap();
//! let mut store = Store::new(&engine, ());
//! let inst = again.restore(&mut store, &[]).unwrap();
//! assert_eq!(inst.get_typed_func::<(), i32, _>(&mut store, "get").unwrap().call(&mut store, ()).unwrap(), 42);
//! ```

use crate::instance::InstanceEntry;
use crate::store::StoreCore;
use crate::{Error, Extern, Instance, Module, Store, ValType};
use faaslet_jit::RefType;
use faaslet_sfi::MemoryImage;
use faaslet_snapshot::{FormatError, MemoryRecord, SnapshotFile};
use std::path::Path;
use std::sync::Arc;

/// Why a snapshot could not be made, written, read or restored.
#[derive(thiserror::Error, Debug)]
pub enum SnapshotError {
    /// The file is not a valid snapshot of this module (corrupt, truncated,
    /// another version, another module, or contents that do not fit).
    #[error("invalid snapshot: {0}")]
    Format(#[from] FormatError),
    /// The instance holds something a snapshot cannot carry.
    #[error("cannot snapshot: {0}")]
    Unsupported(String),
    /// The engine refused (instantiation, memory mapping, a trap in the
    /// initialisation function).
    #[error(transparent)]
    Engine(#[from] Error),
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Names of initialisation exports looked for by [`Snapshot::create`] when
/// none is given, in order: WASI reactors' `_initialize`, then Faasm's
/// zygote.
pub const DEFAULT_INIT_EXPORTS: [&str; 2] = ["_initialize", "_faasm_zygote"];

/// A captured instance of one module (a Proto-Faaslet). `Send + Sync`:
/// restore it in any number of stores and threads.
#[derive(Debug, Clone)]
pub struct Snapshot {
    module: Module,
    memories: Vec<Arc<MemoryImage>>,
    /// Defined globals; funcrefs as function index + 1 (0 null).
    globals: Vec<u128>,
    /// Defined tables: function index + 1 per element (0 null).
    tables: Vec<Vec<u32>>,
    data_dropped: Vec<bool>,
    elem_dropped: Vec<bool>,
}

fn is_funcref(ty: ValType) -> bool {
    matches!(ty, ValType::FuncRef)
}

impl Snapshot {
    /// Instantiates `module` in `store`, runs its initialisation export and
    /// captures the result. `init` names the export; `None` runs the first
    /// of [`DEFAULT_INIT_EXPORTS`] the module has (or nothing).
    pub fn create<T>(
        store: &mut Store<T>,
        module: &Module,
        imports: &[Extern],
        init: Option<&str>,
    ) -> Result<Snapshot, SnapshotError> {
        let instance = Instance::new(store, module, imports)?;
        let name = match init {
            Some(n) => Some(n),
            None => DEFAULT_INIT_EXPORTS
                .into_iter()
                .find(|n| instance.get_func(&mut *store, n).is_some()),
        };
        if let Some(name) = name {
            let f = instance.get_func(&mut *store, name).ok_or_else(|| {
                SnapshotError::Unsupported(format!("no exported function {name:?}"))
            })?;
            let ty = f.ty(&*store);
            if !ty.params.is_empty() {
                return Err(SnapshotError::Unsupported(format!(
                    "initialisation function {name:?} takes parameters"
                )));
            }
            let mut results = vec![crate::Val::I32(0); ty.results.len()];
            f.call(&mut *store, &[], &mut results)?;
        }
        Snapshot::capture(store, instance)
    }

    /// Captures `instance` as it is now.
    ///
    /// Refused ([`SnapshotError::Unsupported`]) for instances with imported
    /// or shared memories or tables, and for references a snapshot cannot
    /// name (non-null externrefs, functions of other instances).
    pub fn capture<T>(store: &mut Store<T>, instance: Instance) -> Result<Snapshot, SnapshotError> {
        let core = store.core_mut();
        core.check(instance.store)?;
        let entry = &core.instances[instance.index as usize];
        let module = entry.module.clone();
        let info = module.info();
        if info.num_imported_memories > 0 || info.num_imported_tables > 0 {
            return Err(SnapshotError::Unsupported(
                "imported memories and tables are not captured".into(),
            ));
        }
        let mut memories = Vec::new();
        for &id in &entry.memory_ids {
            let m = &core.memories[id as usize];
            if m.ty.shared {
                return Err(SnapshotError::Unsupported(
                    "shared memories are not captured".into(),
                ));
            }
            let image = MemoryImage::new(m.bytes())
                .map_err(|e| Error::Resource(format!("memory image: {e}")))?;
            memories.push(Arc::new(image));
        }
        let to_index = |raw: u64, what: &str| -> Result<u32, SnapshotError> {
            if raw == 0 {
                return Ok(0);
            }
            entry
                .func_index_of(raw as usize)
                .map(|i| i + 1)
                .ok_or_else(|| {
                    SnapshotError::Unsupported(format!(
                        "{what} refers to another instance's function"
                    ))
                })
        };
        let mut globals = Vec::new();
        for &id in &entry.global_ids[info.num_imported_globals as usize..] {
            let g = &core.globals[id as usize];
            let bits = g.vm.bits;
            globals.push(match g.ty.content {
                ValType::FuncRef => to_index(bits as u64, "a global")? as u128,
                ValType::ExternRef if bits != 0 => {
                    return Err(SnapshotError::Unsupported(
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
                        return Err(SnapshotError::Unsupported(
                            "a table holds an externref".into(),
                        ))
                    }
                    RefType::Extern => 0,
                });
            }
            tables.push(items);
        }
        Ok(Snapshot {
            memories,
            globals,
            tables,
            data_dropped: entry.data.iter().map(Option::is_none).collect(),
            elem_dropped: entry.elements.iter().map(Option::is_none).collect(),
            module,
        })
    }

    /// The module this is a snapshot of.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Bytes of linear memory held (the sum of the memories' sizes).
    pub fn memory_bytes(&self) -> usize {
        self.memories.iter().map(|m| m.len()).sum()
    }

    /// A new instance in `store` that resumes where the snapshot was taken.
    /// `imports` are the module's imports, as for [`Instance::new`] (host
    /// functions; imported globals are taken as given).
    pub fn restore<T>(&self, store: &mut Store<T>, imports: &[Extern]) -> Result<Instance, Error> {
        Instance::instantiate(store, &self.module, imports, Some(self))
    }

    /// Puts `instance` (restored from, or captured as, this snapshot) back
    /// to the snapshot: memories drop the pages written since (one system
    /// call each, whatever their size; pages grown since are discarded),
    /// globals, tables and dropped segments are set back.
    pub fn reset<T>(&self, store: &mut Store<T>, instance: Instance) -> Result<(), Error> {
        let core = store.core_mut();
        core.check(instance.store)?;
        let id = instance.index;
        let entry = &core.instances[id as usize];
        if !Arc::ptr_eq(&entry.module.inner, &self.module.inner) {
            return Err(Error::Type(
                "instance is not of the snapshot's module".into(),
            ));
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
        self.restore_tables_and_segments(core, id)
    }

    /// Serialises the snapshot (see the `faaslet-snapshot` crate).
    pub fn to_bytes(&self) -> Result<Vec<u8>, SnapshotError> {
        let mut memories = Vec::new();
        for m in &self.memories {
            let bytes = m
                .read()
                .map_err(|e| Error::Resource(format!("reading memory image: {e}")))?;
            memories.push(MemoryRecord { bytes });
        }
        Ok(SnapshotFile {
            module_fingerprint: self.module.inner.fingerprint,
            memories,
            globals: self.globals.clone(),
            tables: self.tables.clone(),
            data_dropped: self.data_dropped.clone(),
            elem_dropped: self.elem_dropped.clone(),
        }
        .encode())
    }

    /// Reads a snapshot of `module` from bytes made by [`to_bytes`](Self::to_bytes),
    /// in this process or another. Refuses, with a typed error, files that
    /// are corrupt, truncated, of another format version or of another
    /// module, and contents that do not fit the module.
    pub fn from_bytes(module: &Module, bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        // Check the header (and which module) before the costly payload.
        let fp = SnapshotFile::peek_fingerprint(bytes)?;
        if fp != module.inner.fingerprint {
            return Err(FormatError::ModuleMismatch {
                expected: module.inner.fingerprint,
                found: fp,
            }
            .into());
        }
        let file = SnapshotFile::decode(bytes)?;
        file.check_module(module.inner.fingerprint)?;
        let info = module.info();
        let bad = |m: String| SnapshotError::Format(FormatError::Malformed(m));
        let defined_mems = &info.memories[info.num_imported_memories as usize..];
        if file.memories.len() != defined_mems.len() {
            return Err(bad(format!(
                "{} memories, the module defines {}",
                file.memories.len(),
                defined_mems.len()
            )));
        }
        let page = faaslet_sfi::WASM_PAGE as u64;
        let mut memories = Vec::new();
        for (m, ty) in file.memories.iter().zip(defined_mems) {
            let len = m.bytes.len() as u64;
            let max = ty.maximum.unwrap_or(65536).min(65536) * page;
            if !len.is_multiple_of(page) || len < ty.minimum * page || len > max {
                return Err(bad(format!("memory of {len} bytes does not fit its type")));
            }
            memories.push(Arc::new(
                MemoryImage::new(&m.bytes)
                    .map_err(|e| Error::Resource(format!("memory image: {e}")))?,
            ));
        }
        let num_funcs = info.funcs.len() as u64;
        let defined_globals = &info.globals[info.num_imported_globals as usize..];
        if file.globals.len() != defined_globals.len() {
            return Err(bad(format!(
                "{} globals, the module defines {}",
                file.globals.len(),
                defined_globals.len()
            )));
        }
        for (g, ty) in file.globals.iter().zip(defined_globals) {
            let ok = match ty.content {
                ValType::I32 | ValType::F32 => *g <= u32::MAX as u128,
                ValType::I64 | ValType::F64 => *g <= u64::MAX as u128,
                ValType::V128 => true,
                ValType::FuncRef => *g <= num_funcs as u128,
                _ => *g == 0,
            };
            if !ok {
                return Err(bad(format!("global value {g:#x} does not fit its type")));
            }
        }
        if file.tables.len() != info.tables.len() {
            return Err(bad(format!(
                "{} tables, the module defines {}",
                file.tables.len(),
                info.tables.len()
            )));
        }
        for (t, ty) in file.tables.iter().zip(&info.tables) {
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
            if t.iter().any(|&e| e as u64 > num_funcs)
                || (ty.element == RefType::Extern && t.iter().any(|&e| e != 0))
            {
                return Err(bad("table element out of range".into()));
            }
        }
        if file.data_dropped.len() != info.data.len()
            || file.elem_dropped.len() != info.elements.len()
        {
            return Err(bad("segment counts differ from the module".into()));
        }
        Ok(Snapshot {
            module: module.clone(),
            memories,
            globals: file.globals,
            tables: file.tables,
            data_dropped: file.data_dropped,
            elem_dropped: file.elem_dropped,
        })
    }

    /// Writes [`to_bytes`](Self::to_bytes) to `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), SnapshotError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()?).map_err(|source| SnapshotError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Reads a snapshot of `module` from `path` (see [`from_bytes`](Self::from_bytes)).
    pub fn load(module: &Module, path: impl AsRef<Path>) -> Result<Snapshot, SnapshotError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| SnapshotError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Snapshot::from_bytes(module, &bytes)
    }

    // --- hooks used by `Instance::instantiate` -----------------------------

    /// A new store memory of type `ty` holding memory image `k` (mapped
    /// straight into its reservation); returns its index.
    pub(crate) fn restore_memory(
        &self,
        core: &mut StoreCore,
        ty: crate::MemoryType,
        k: usize,
    ) -> Result<u32, Error> {
        core.push_memory_image(ty, &self.memories[k])
    }

    /// The bits of defined global `i` for instance `entry`.
    pub(crate) fn global_bits(&self, entry: &InstanceEntry, i: usize) -> u128 {
        let info = entry.module.info();
        let ty = info.globals[info.num_imported_globals as usize + i];
        let bits = self.globals[i];
        if is_funcref(ty.content) && bits != 0 {
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
        let entry = &mut core.instances[id as usize];
        for (k, items) in self.tables.iter().enumerate() {
            let t = entry.tables[k];
            let refs: Vec<u64> = items
                .iter()
                .map(|&e| {
                    if e == 0 {
                        0
                    } else {
                        entry.funcref_ptr(e - 1) as u64
                    }
                })
                .collect();
            // SAFETY: table pointers of an instance are live store entries,
            // and no wasm code runs while we hold `&mut StoreCore`.
            let t = unsafe { &mut *t };
            t.elems.clear();
            t.elems.extend_from_slice(&refs);
            t.sync();
        }
        let module = entry.module.clone();
        let info = module.info();
        for (i, &dropped) in self.data_dropped.iter().enumerate() {
            entry.data[i] = if dropped {
                None
            } else {
                Some(info.data[i].bytes.clone())
            };
        }
        for (i, &dropped) in self.elem_dropped.iter().enumerate() {
            if dropped {
                entry.elements[i] = None;
            } else if entry.elements[i].is_none() {
                // Dropped during a call: evaluate its items again.
                let items: Arc<[u64]> = info.elements[i]
                    .items
                    .iter()
                    .map(|e| crate::instance::eval_const_entry(entry, e) as u64)
                    .collect();
                entry.elements[i] = Some(items);
            }
        }
        Ok(())
    }
}
