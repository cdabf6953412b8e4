//! [`Module`]: validated, compiled code plus its description.

use crate::{Engine, Error};
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
    /// Checksum of the wasm bytes: which module a snapshot belongs to.
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
                fingerprint: faaslet_snapshot::fingerprint(wasm),
            }),
        })
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
