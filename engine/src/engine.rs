//! [`Config`] and [`Engine`]: compilation settings, the type registry and
//! the epoch counter shared by every store.

use crate::trap::Error;
use faaslet_jit::{BoundsChecks, CompileConfig, CompiledStub, Compiler, FuncType};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How linear memories are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounds {
    /// Each memory sits in a 4 GiB reservation followed by `guard_size`
    /// bytes of PROT_NONE guard, so most accesses need no explicit check.
    GuardPages {
        /// Guard after the 4 GiB index space, in bytes (default 2 GiB).
        guard_size: u64,
    },
    /// Every access is checked against the memory's length, and the
    /// reservation is no larger than the memory's maximum (capped by
    /// [`Config::explicit_reservation_cap`]). For hosts packing very many
    /// sandboxes. By default each reservation still has a PROT_NONE canary
    /// page in front and an inaccessible tail beyond the length, as defence
    /// in depth; with [`Config::explicit_canaries`] off it has neither and
    /// is accessible throughout (`MAP_NORESERVE`), so neighbouring memories
    /// merge into one kernel mapping and 100,000 fit under the default
    /// `vm.max_map_count` — the explicit checks are then the only barrier.
    Explicit,
}

/// Engine configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// How memories are bounds-checked.
    pub bounds: Bounds,
    /// Bytes of native stack wasm code may use per outermost call.
    pub max_wasm_stack: usize,
    /// Emit epoch checks so calls can be interrupted.
    pub epoch_interruption: bool,
    /// Optimise generated code.
    pub optimize: bool,
    /// In [`Bounds::Explicit`] mode, the largest reservation made for a
    /// memory without a maximum (or with a larger one); growing past it fails.
    pub explicit_reservation_cap: u64,
    /// Largest number of elements any table may grow to.
    pub max_table_elements: u64,
    /// In [`Bounds::Explicit`] mode, keep a canary page in front of each
    /// memory and its unused tail inaccessible (default). Turning it off
    /// trades that defence in depth for density: each memory then costs no
    /// kernel mapping of its own (see [`Bounds::Explicit`]).
    pub explicit_canaries: bool,
    /// Accept modules with several memories (multi-memory, a WebAssembly
    /// 3.0 feature). Off by default, as WebAssembly 2.0 requires.
    pub wasm_multi_memory: bool,
    /// Guard explicit bounds checks and table-index checks against
    /// Spectre v1 (on by default): the checked address is selected with a
    /// conditional move that a mispredicted branch cannot skip, so a
    /// speculatively executed out-of-bounds access reads address 0
    /// instead of whatever lies beyond. The trap stays as it is. Turning
    /// it off saves a few instructions per explicit check; code compiled
    /// with and without it never shares a code-cache entry.
    pub spectre_guard: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bounds: Bounds::GuardPages {
                guard_size: 2 << 30,
            },
            max_wasm_stack: 1 << 20,
            epoch_interruption: true,
            optimize: true,
            explicit_reservation_cap: 256 << 20,
            max_table_elements: 10_000_000,
            explicit_canaries: true,
            wasm_multi_memory: false,
            spectre_guard: true,
        }
    }
}

pub(crate) struct EngineInner {
    pub(crate) config: Config,
    pub(crate) compiler: Compiler,
    pub(crate) epoch: AtomicU64,
    types: Mutex<TypeRegistry>,
    stubs: Mutex<HashMap<u32, Arc<StubEntry>>>,
}

pub(crate) struct StubEntry {
    pub(crate) stub: Arc<CompiledStub>,
    _registrations: Vec<faaslet_sfi::CodeRegistration>,
}

#[derive(Default)]
struct TypeRegistry {
    ids: HashMap<FuncType, u32>,
    types: Vec<FuncType>,
}

/// Compiles modules and owns what all stores built from it share. Cheap to
/// clone; `Send + Sync`.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new(&Config::default()).expect("the default configuration is valid on this host")
    }
}

struct StubLookup(Arc<CompiledStub>);

impl faaslet_sfi::CodeLookup for StubLookup {
    fn is_trap_site(&self, pc: usize) -> bool {
        self.0.lookup_trap(pc).is_some()
    }
}

impl Engine {
    /// Builds an engine for this host's CPU.
    pub fn new(config: &Config) -> Result<Engine, Error> {
        faaslet_sfi::init_traps().map_err(|e| Error::Resource(e.to_string()))?;
        if config.max_wasm_stack < 16 << 10 {
            return Err(Error::Resource(
                "max_wasm_stack must be at least 16 KiB".into(),
            ));
        }
        let compile = CompileConfig {
            bounds: match config.bounds {
                Bounds::GuardPages { guard_size } => BoundsChecks::GuardPages { guard_size },
                Bounds::Explicit => BoundsChecks::Explicit,
            },
            epoch_interruption: config.epoch_interruption,
            optimize: config.optimize,
            multi_memory: config.wasm_multi_memory,
            spectre_guard: config.spectre_guard,
        };
        let compiler = Compiler::new(&compile)?;
        Ok(Engine {
            inner: Arc::new(EngineInner {
                config: config.clone(),
                compiler,
                epoch: AtomicU64::new(0),
                types: Mutex::default(),
                stubs: Mutex::default(),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Advances the epoch by one. Calls in stores whose deadline is now
    /// reached trap with [`TrapKind::Interrupted`](crate::TrapKind::Interrupted)
    /// at their next function entry or loop header.
    pub fn increment_epoch(&self) {
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The key an artefact of `wasm` made by this engine carries: the
    /// SHA-256 of the wasm and of everything that changes the code (the
    /// bounds mode and guard size, every option of [`Config`] that reaches
    /// the compiler, the JIT's version and sources, the CPU features).
    /// [`Module::from_artifact`](crate::Module::from_artifact) loads only
    /// artefacts with this key; a code cache names its files by it.
    pub fn artifact_key(&self, wasm: &[u8]) -> faaslet_jit::ArtifactKey {
        self.inner.compiler.artifact_key(wasm)
    }

    /// The code this engine's compiler makes of `wasm`'s defined
    /// functions, as text: Cranelift IR before or after optimisation, or
    /// the machine instructions (see [`Emit`](crate::Emit)). `only`
    /// keeps the function of that index or name. For reading generated
    /// code (`faaslet compile --emit`); nothing is instantiated.
    pub fn emit(
        &self,
        wasm: &[u8],
        what: crate::Emit,
        only: Option<&str>,
    ) -> Result<String, Error> {
        Ok(self.inner.compiler.emit(wasm, what, only)?)
    }

    /// The current epoch.
    pub fn current_epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::SeqCst)
    }

    /// The canonical id of a function type, shared by every module of this engine.
    pub(crate) fn type_id(&self, ty: &FuncType) -> u32 {
        let mut reg = self.inner.types.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&id) = reg.ids.get(ty) {
            return id;
        }
        let id = reg.types.len() as u32;
        reg.types.push(ty.clone());
        reg.ids.insert(ty.clone(), id);
        id
    }

    /// The host stub and array trampoline for a function type, compiled once.
    pub(crate) fn stub(&self, ty: &FuncType) -> Result<Arc<CompiledStub>, Error> {
        let id = self.type_id(ty);
        let mut stubs = self.inner.stubs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = stubs.get(&id) {
            return Ok(s.stub.clone());
        }
        let stub = Arc::new(self.inner.compiler.compile_stub(ty)?);
        let lookup: Arc<dyn faaslet_sfi::CodeLookup> = Arc::new(StubLookup(stub.clone()));
        let regs = stub
            .code_ranges()
            .into_iter()
            .map(|(s, e)| faaslet_sfi::register_code(s, e, lookup.clone()))
            .collect();
        stubs.insert(
            id,
            Arc::new(StubEntry {
                stub: stub.clone(),
                _registrations: regs,
            }),
        );
        Ok(stub)
    }

    /// Finds the trap code at `pc` in the engine's stubs.
    pub(crate) fn stub_trap(&self, pc: usize) -> Option<faaslet_jit::abi::TrapCode> {
        let stubs = self.inner.stubs.lock().unwrap_or_else(|e| e.into_inner());
        stubs.values().find_map(|s| s.stub.lookup_trap(pc))
    }

    /// Whether `other` is this engine (a clone of the same handle).
    pub fn same(&self, other: &Engine) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}
