//! [`Module`]: validated, compiled code plus its description.

use crate::engine::Engine;
use crate::trap::Error;
use faaslet_jit::{ArtifactError, CompiledModule, EntityType, ExportIndex, ModuleInfo};
use std::sync::Arc;

/// A compiled WebAssembly module. Compile once, instantiate many times, in
/// any number of stores and threads: `Send + Sync`, cheap to clone.
#[derive(Clone)]
pub struct Module {
    pub(crate) inner: Arc<ModuleInner>,
}

pub(crate) struct ModuleInner {
    pub(crate) engine: Engine,
    pub(crate) compiled: Arc<CompiledModule>,
    _registrations: Vec<faaslet_sfi::CodeRegistration>,
    /// [`checksum`] of the wasm bytes: which module an image belongs to.
    pub(crate) fingerprint: u64,
    /// The registered type ids the module holds a reference on (one per
    /// declared type whose id is not encoded), given back when dropped.
    type_refs: Vec<u32>,
}

impl Drop for ModuleInner {
    fn drop(&mut self) {
        // No code of this module remains callable: stores and images keep
        // their modules alive, so the last `Module` going means the last
        // funcref holding these ids has gone too.
        self.engine.release_types(&self.type_refs);
    }
}

/// Runs `f` with a canonical-type-id callback that takes a reference on
/// each registered type it hands out; returns them with `f`'s result, or
/// gives them back if `f` fails.
fn with_type_refs<R, E>(
    engine: &Engine,
    f: impl FnOnce(&mut dyn FnMut(&faaslet_jit::FuncType) -> u32) -> Result<R, E>,
) -> Result<(R, Vec<u32>), E> {
    let mut held = Vec::new();
    let r = f(&mut |ty| {
        let id = engine.acquire_type(ty);
        held.push(id);
        id
    });
    held.retain(|&id| crate::engine::is_registered_type(id));
    match r {
        Ok(r) => Ok((r, held)),
        Err(e) => {
            engine.release_types(&held);
            Err(e)
        }
    }
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("imports", &self.info().imports.len())
            .field("exports", &self.info().exports.len())
            .finish()
    }
}

struct ModuleLookup(Arc<CompiledModule>);

impl faaslet_sfi::CodeLookup for ModuleLookup {
    fn is_trap_site(&self, pc: usize) -> bool {
        self.0.lookup_trap(pc).is_some()
    }
}

/// What an import or export is, with its type.
pub type ExternType = EntityType;

impl Module {
    /// Validates and compiles a module given as a wasm binary, or as WAT
    /// text (anything not starting with the `\0asm` magic is parsed as text).
    pub fn new(engine: &Engine, bytes: impl AsRef<[u8]>) -> Result<Module, Error> {
        let bytes = bytes.as_ref();
        if bytes.starts_with(b"\0asm") {
            return Module::from_binary(engine, bytes);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| {
            Error::Compile(faaslet_jit::CompileError {
                kind: faaslet_jit::CompileErrorKind::Malformed,
                message: "neither a wasm binary (no \\0asm magic) nor UTF-8 text".into(),
                section: None,
                func_index: None,
                offset: Some(0),
            })
        })?;
        let wasm = wat_to_wasm(text)?;
        Module::from_binary(engine, &wasm)
    }

    /// Validates and compiles a wasm binary.
    pub fn from_binary(engine: &Engine, wasm: &[u8]) -> Result<Module, Error> {
        let (compiled, refs) = with_type_refs(engine, |ids| {
            engine.inner.compiler.compile_module(wasm, ids)
        })?;
        Ok(Module::wrap(engine, compiled, wasm, refs))
    }

    /// Validates and compiles a wasm binary, and also returns its machine
    /// code as an artefact that [`Module::from_artifact`] loads later, in
    /// this process or another, without compiling again (the code cache of
    /// a worker keeps these; the format is in [`faaslet_jit::artifact`]).
    /// The inner result fails only if the code cannot be recorded; the
    /// module works either way.
    ///
    /// ```
    /// # fn main() -> Result<(), faaslet::Error> {
    /// let engine = faaslet::Engine::default();
    /// let wasm = faaslet::wat_to_wasm(r#"(module (func (export "f") (result i32) i32.const 7))"#)?;
    /// let (_, artifact) = faaslet::Module::from_binary_with_artifact(&engine, &wasm)?;
    /// let artifact = artifact.expect("x86-64 code is always serialisable");
    /// let module = faaslet::Module::from_artifact(&engine, &wasm, &artifact)
    ///     .expect("same wasm, same engine configuration");
    /// let mut store = faaslet::Store::new(&engine, ());
    /// let instance = faaslet::Instance::new(&mut store, &module, &[])?;
    /// let f = instance.get_typed_func::<(), i32, _>(&mut store, "f")?;
    /// assert_eq!(f.call(&mut store, ())?, 7);
    ///
    /// // Another configuration must not run this code.
    /// let explicit = faaslet::Engine::new(&faaslet::Config {
    ///     bounds: faaslet::Bounds::Explicit,
    ///     ..Default::default()
    /// })?;
    /// assert!(matches!(
    ///     faaslet::Module::from_artifact(&explicit, &wasm, &artifact),
    ///     Err(faaslet::ArtifactError::Foreign { .. })
    /// ));
    /// # Ok(()) }
    /// ```
    #[allow(clippy::type_complexity)]
    pub fn from_binary_with_artifact(
        engine: &Engine,
        wasm: &[u8],
    ) -> Result<(Module, Result<Vec<u8>, ArtifactError>), Error> {
        let ((compiled, artifact), refs) = with_type_refs(engine, |ids| {
            engine.inner.compiler.compile_module_artifact(wasm, ids)
        })?;
        Ok((Module::wrap(engine, compiled, wasm, refs), artifact))
    }

    /// [`Module::from_binary_with_artifact`] within a time budget: past
    /// `budget`, compilation stops with a
    /// [`CompileErrorKind::Budget`](faaslet_jit::CompileErrorKind) error
    /// (checked before each function, so it may overshoot by one
    /// function's compile time).
    #[allow(clippy::type_complexity)]
    pub fn from_binary_with_artifact_within(
        engine: &Engine,
        wasm: &[u8],
        budget: std::time::Duration,
    ) -> Result<(Module, Result<Vec<u8>, ArtifactError>), Error> {
        let deadline = std::time::Instant::now().checked_add(budget);
        let ((compiled, artifact), refs) = with_type_refs(engine, |ids| {
            engine
                .inner
                .compiler
                .compile_module_artifact_until(wasm, ids, deadline)
        })
        .map_err(|mut e| {
            if e.kind == faaslet_jit::CompileErrorKind::Budget {
                e.message = format!("compilation ran past its budget of {budget:?}");
            }
            e
        })?;
        Ok((Module::wrap(engine, compiled, wasm, refs), artifact))
    }

    /// Loads a module from its wasm and the artefact
    /// [`Module::from_binary_with_artifact`] made of it, without compiling.
    /// The artefact must have been made from exactly `wasm` by an engine
    /// with the same code-changing configuration on the same kind of CPU
    /// (see [`Engine::artifact_key`]); anything else, and any damage, is a
    /// typed [`ArtifactError`]: compile the wasm instead.
    pub fn from_artifact(
        engine: &Engine,
        wasm: &[u8],
        artifact: &[u8],
    ) -> Result<Module, ArtifactError> {
        let (compiled, refs) = with_type_refs(engine, |ids| {
            engine.inner.compiler.load_module(wasm, artifact, ids)
        })?;
        Ok(Module::wrap(engine, compiled, wasm, refs))
    }

    /// Registers `compiled`'s code with the trap handler: one range for
    /// the whole module. Each registration copies the handler's registry
    /// (it is read lock-free from the signal handler), so registering every
    /// function on its own made loading a module of n functions cost
    /// O(n × functions registered): 2,000 functions took 60 ms to load
    /// from the code cache, and 100,000 did not compile in a minute.
    fn wrap(engine: &Engine, compiled: CompiledModule, wasm: &[u8], type_refs: Vec<u32>) -> Module {
        let compiled = Arc::new(compiled);
        let lookup: Arc<dyn faaslet_sfi::CodeLookup> = Arc::new(ModuleLookup(compiled.clone()));
        let registrations = compiled
            .code_span()
            .into_iter()
            .map(|(s, e)| faaslet_sfi::register_code(s, e, lookup.clone()))
            .collect();
        Module {
            inner: Arc::new(ModuleInner {
                engine: engine.clone(),
                compiled,
                _registrations: registrations,
                fingerprint: checksum(wasm),
                type_refs,
            }),
        }
    }

    /// The module's fingerprint: the [`checksum`] of its wasm bytes. Images
    /// and snapshot files record it, so one taken from another module is
    /// refused instead of resumed.
    pub fn fingerprint(&self) -> u64 {
        self.inner.fingerprint
    }

    /// The parsed description of the module.
    pub fn info(&self) -> &ModuleInfo {
        &self.inner.compiled.info
    }

    /// The engine that compiled it.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Imports: (module, name, type).
    pub fn imports(&self) -> impl Iterator<Item = (&str, &str, &ExternType)> {
        self.info()
            .imports
            .iter()
            .map(|i| (i.module.as_str(), i.name.as_str(), &i.ty))
    }

    /// Exports: (name, type).
    pub fn exports(&self) -> impl Iterator<Item = (&str, ExternType)> + '_ {
        let info = self.info();
        info.exports.iter().map(move |e| {
            let ty = match e.index {
                ExportIndex::Func(i) => EntityType::Func(info.funcs[i as usize]),
                ExportIndex::Table(i) => EntityType::Table(info.tables[i as usize]),
                ExportIndex::Memory(i) => EntityType::Memory(info.memories[i as usize]),
                ExportIndex::Global(i) => EntityType::Global(info.globals[i as usize]),
                ExportIndex::Tag(i) => EntityType::Tag(info.tags[i as usize]),
            };
            (e.name.as_str(), ty)
        })
    }
}

/// Parses WAT text into a wasm binary.
pub fn wat_to_wasm(text: &str) -> Result<Vec<u8>, Error> {
    let malformed = |e: wast::Error| {
        Error::Compile(faaslet_jit::CompileError {
            kind: faaslet_jit::CompileErrorKind::Malformed,
            message: format!("text format: {e}"),
            section: None,
            func_index: None,
            offset: None,
        })
    };
    let buf = wast::parser::ParseBuffer::new(text).map_err(malformed)?;
    let mut wat = wast::parser::parse::<wast::Wat>(&buf).map_err(malformed)?;
    wat.encode().map_err(malformed)
}

/// A 64-bit checksum of `bytes`: fast, not cryptographic (it detects
/// accidental corruption and tells modules apart, it does not resist an
/// adversary). [`Module::fingerprint`] is this of the module's wasm.
///
/// ```
/// assert_eq!(faaslet::checksum(b"abc"), faaslet::checksum(b"abc"));
/// assert_ne!(faaslet::checksum(b"abc"), faaslet::checksum(b"abd"));
/// ```
pub fn checksum(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    for &b in chunks.remainder() {
        h = (h.rotate_left(23) ^ b as u64).wrapping_mul(K);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}
