//! [`Snapshot`]: an [`InstanceImage`] taken after initialisation, with the
//! file I/O of [`format`](mod@crate::format).

use crate::format::{FormatError, MemoryRecord, SnapshotFile};
use faaslet::{
    Error, Extern, ImageError, ImageParts, Instance, InstanceImage, Module, Source, Store, Val,
};
use std::path::Path;

/// Why a snapshot could not be made, written, read or restored.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
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

impl From<ImageError> for SnapshotError {
    fn from(e: ImageError) -> SnapshotError {
        match e {
            ImageError::Unsupported(m) => SnapshotError::Unsupported(m),
            ImageError::Mismatch(m) => SnapshotError::Format(FormatError::Malformed(m)),
            ImageError::Engine(e) => SnapshotError::Engine(e),
            other => SnapshotError::Engine(Error::Resource(other.to_string())),
        }
    }
}

/// Names of initialisation exports looked for by [`Snapshot::create`] when
/// none is given, in order: WASI reactors' `_initialize`, then Faasm's
/// zygote.
pub const DEFAULT_INIT_EXPORTS: [&str; 2] = ["_initialize", "_faasm_zygote"];

/// A captured instance of one module (a Proto-Faaslet). `Send + Sync`:
/// restore it in any number of stores and threads.
#[derive(Debug, Clone)]
pub struct Snapshot {
    image: InstanceImage,
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
            let mut results = vec![Val::I32(0); ty.results.len()];
            f.call(&mut *store, &[], &mut results)?;
        }
        Snapshot::capture(store, instance)
    }

    /// Captures `instance` as it is now (see [`InstanceImage::capture`] for
    /// what is refused).
    pub fn capture<T>(store: &mut Store<T>, instance: Instance) -> Result<Snapshot, SnapshotError> {
        Ok(Snapshot {
            image: InstanceImage::capture(store, instance)?,
        })
    }

    /// The engine's image this snapshot holds.
    pub fn image(&self) -> &InstanceImage {
        &self.image
    }

    /// The module this is a snapshot of.
    pub fn module(&self) -> &Module {
        self.image.module()
    }

    /// Bytes of linear memory held (the sum of the memories' sizes).
    pub fn memory_bytes(&self) -> usize {
        self.image.memory_bytes()
    }

    /// A new instance in `store` that resumes where the snapshot was taken.
    /// `imports` are the module's imports, as for [`Instance::new`] (host
    /// functions; imported globals are taken as given).
    pub fn restore<T>(&self, store: &mut Store<T>, imports: &[Extern]) -> Result<Instance, Error> {
        Instance::from_source(store, Source::Image(&self.image), imports)
    }

    /// Puts `instance` (restored from, or captured as, this snapshot) back
    /// to the snapshot (see [`InstanceImage::reset`]).
    pub fn reset<T>(&self, store: &mut Store<T>, instance: Instance) -> Result<(), Error> {
        self.image.reset(store, instance)
    }

    /// Serialises the snapshot (see [`format`](mod@crate::format)).
    pub fn to_bytes(&self) -> Result<Vec<u8>, SnapshotError> {
        let parts = self.image.to_parts()?;
        Ok(SnapshotFile {
            module_fingerprint: self.module().fingerprint(),
            memories: parts
                .memories
                .into_iter()
                .map(|bytes| MemoryRecord { bytes })
                .collect(),
            globals: parts.globals,
            tables: parts.tables,
            data_dropped: parts.data_dropped,
            elem_dropped: parts.elem_dropped,
            gc_heap: parts.gc_heap,
            gc_types: parts.gc_types,
            gc_funcs: parts.gc_funcs,
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
        if fp != module.fingerprint() {
            return Err(FormatError::ModuleMismatch {
                expected: module.fingerprint(),
                found: fp,
            }
            .into());
        }
        let file = SnapshotFile::decode(bytes)?;
        file.check_module(module.fingerprint())?;
        let parts = ImageParts {
            memories: file.memories.into_iter().map(|m| m.bytes).collect(),
            globals: file.globals,
            tables: file.tables,
            data_dropped: file.data_dropped,
            elem_dropped: file.elem_dropped,
            gc_heap: file.gc_heap,
            gc_types: file.gc_types,
            gc_funcs: file.gc_funcs,
        };
        Ok(Snapshot {
            image: InstanceImage::from_parts(module, parts)?,
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
}
