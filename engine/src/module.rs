//! [`Module`]: validated, compiled code plus its description.

use crate::engine::Engine;
use crate::trap::Error;
use faaslet_jit::{CompiledModule, EntityType, ExportIndex, ModuleInfo};
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
        let compiled = engine
            .inner
            .compiler
            .compile_module(wasm, &mut |ty| engine.type_id(ty))?;
        let compiled = Arc::new(compiled);
        let lookup: Arc<dyn faaslet_sfi::CodeLookup> = Arc::new(ModuleLookup(compiled.clone()));
        let registrations = compiled
            .code_ranges()
            .into_iter()
            .map(|(s, e)| faaslet_sfi::register_code(s, e, lookup.clone()))
            .collect();
        Ok(Module {
            inner: Arc::new(ModuleInner {
                engine: engine.clone(),
                compiled,
                _registrations: registrations,
                fingerprint: checksum(wasm),
            }),
        })
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
