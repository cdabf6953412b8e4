//! [`Config`] and [`Engine`]: compilation settings, the type registry and
//! the epoch counter shared by every store.

use crate::trap::{ConfigError, Error};
use faaslet_jit::{BoundsChecks, CompileConfig, CompiledStub, Compiler, FuncType, ValType};
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
    /// Calls can be interrupted: by their store's epoch deadline
    /// ([`Store::set_epoch_deadline`](crate::Store::set_epoch_deadline),
    /// advanced by [`Engine::increment_epoch`]) and by an
    /// [`InterruptHandle`](crate::InterruptHandle). How, see
    /// [`signal_interruption`](Self::signal_interruption).
    pub epoch_interruption: bool,
    /// With [`epoch_interruption`](Self::epoch_interruption): interrupt by
    /// signalling the thread that runs an expired call (see
    /// `faaslet_sfi::interrupt`) instead of compiling an epoch check into
    /// every function entry and loop header. Code runs without the checks
    /// (in loop kernels a third fewer instructions); the engine installs a
    /// handler for a real-time signal (`SIGRTMIN + 3`), refused if the
    /// process has one there already. An expired call ends at the next
    /// [`Engine::increment_epoch`] (every tick while it runs on), or as
    /// soon as [`InterruptHandle::interrupt`](crate::InterruptHandle::interrupt)
    /// is called; a call inside a host function ends when the host
    /// function returns. Off by default.
    pub signal_interruption: bool,
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
    /// Accept the relaxed SIMD operators (a WebAssembly 3.0 feature). Each
    /// is lowered to one of the results the specification allows, the
    /// same on every host (the non-relaxed operator where there is one,
    /// fused multiply-add, signed dot products), so a snapshot taken on
    /// one host computes the same bits on another. On by default.
    pub wasm_relaxed_simd: bool,
    /// Accept typed function references (a WebAssembly 3.0 feature):
    /// `call_ref`, `return_call_ref`, `ref.as_non_null`, `br_on_null`,
    /// `br_on_non_null`, non-nullable and concrete reference types, tables
    /// with initialisers. Whatever the static types say, `call_ref` checks
    /// at run time that its reference is not null and has the expected
    /// type id, as `call_indirect` does, so neither a bug in validation nor
    /// a host passing null for a non-nullable parameter can make JIT code
    /// jump through a null or mistyped reference. On by default.
    pub wasm_function_references: bool,
    /// Accept 64-bit memories and tables (memory64, a WebAssembly 3.0
    /// feature). Every access to a 64-bit memory is bounds-checked
    /// explicitly in both bounds modes (guard pages cannot cover a 64-bit
    /// index), with the Spectre guard of [`Config::spectre_guard`]: with
    /// guard pages, that the index fits in 32 bits (the guard then covers
    /// the access as for a 32-bit memory); in explicit mode, against the
    /// length, the 64-bit `index + offset` trapping on overflow. A 64-bit memory is reserved like a 32-bit
    /// one, so it holds at most 4 GiB (guard pages) or
    /// [`Config::explicit_reservation_cap`] (explicit): `memory.grow` past
    /// that returns -1. On by default.
    pub wasm_memory64: bool,
    /// Accept exception handling (a WebAssembly 3.0 feature): tags
    /// (imported and exported), `throw`, `throw_ref`, `try_table`,
    /// `exnref`. Exceptions unwind by checked returns: every call in code
    /// compiled with this on is followed by a load and a branch on the
    /// store's pending exception, which is what it costs when nothing is
    /// thrown (not measurable on a call-bound kernel: recursive fib(35),
    /// 30 million calls, 53.2 ms with and without). An exception that
    /// reaches the host is reported as
    /// [`TrapKind::UncaughtException`](crate::TrapKind); exceptions do not
    /// pass through host functions. Exception objects live as long as
    /// their store (at most [`MAX_EXCEPTION_BYTES`](crate::MAX_EXCEPTION_BYTES)
    /// of them; a `throw` past that traps). On by default.
    pub wasm_exceptions: bool,
    /// Accept WebAssembly GC (WebAssembly 3.0): struct and array types,
    /// declared subtypes, `anyref`/`eqref`/`i31ref`/`structref`/`arrayref`,
    /// casts and the GC instructions, with a per-store heap (see
    /// `docs/gc.md`). Needs `wasm_function_references`. On by default.
    ///
    /// The heap is a bump allocator that frees nothing while its store
    /// lives (a store is usually one call, or one Faaslet reset to its
    /// snapshot between calls): it counts against
    /// [`StoreLimits::memory_bytes`], and an allocation past that traps
    /// with [`TrapKind::GcHeapExhausted`](crate::TrapKind). Heap operations
    /// and casts are runtime calls (correct and bounds-checked, not fast).
    pub wasm_gc: bool,
    /// The resource limits every new [`Store`](crate::Store) starts with
    /// ([`Store::set_limits`](crate::Store::set_limits) changes one store's).
    pub store_limits: StoreLimits,
}

/// Limits on what the guests of one [`Store`](crate::Store) can make the
/// host allocate, in the spirit of wasmtime's `StoreLimits`.
///
/// They are checked when an instance, memory or table is created (an
/// instantiation over a limit fails with [`Error::Limit`] naming it, before
/// anything of the instance is allocated) and when a memory or table grows
/// (`memory.grow` and `table.grow` then return -1, as the specification
/// allows; [`Memory::grow`](crate::Memory::grow) and
/// [`Table::grow`](crate::Table::grow) return [`Error::Limit`]).
///
/// Memory bytes count the current size of every memory the store created
/// (and growth of shared memories it imported, charged to the store that
/// grows them) and of the store's GC heap (WebAssembly GC); table elements
/// count every table's current length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Total bytes of linear memory and GC heap (default 1 GiB).
    pub memory_bytes: u64,
    /// Total elements of all tables (default 10,000,000: 80 MB of entries).
    pub table_elements: u64,
    /// Number of memories (default 1,000).
    pub memories: u32,
    /// Number of tables (default 1,000).
    pub tables: u32,
    /// Number of instances (default 10,000).
    pub instances: u32,
}

impl StoreLimits {
    /// The default limit on a store's linear memory: 1 GiB.
    pub const DEFAULT_MEMORY_BYTES: u64 = 1 << 30;
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            table_elements: 10_000_000,
            memories: 1_000,
            tables: 1_000,
            instances: 10_000,
        }
    }
}

/// The largest [`Bounds::GuardPages`] guard accepted: 8 GiB. A guard of
/// 4 GiB + 16 bytes already covers every static offset (at most
/// `u32::MAX`) plus the widest access (16 bytes), so a larger one removes
/// no further bounds check; refusing more keeps `4 GiB + guard` far from
/// wrapping and the reservation within the address space.
pub const MAX_GUARD_SIZE: u64 = 8 << 30;

/// The largest `max_wasm_stack` accepted: 1 GiB.
pub const MAX_WASM_STACK: usize = 1 << 30;

/// The smallest `max_wasm_stack` accepted: 16 KiB.
pub const MIN_WASM_STACK: usize = 16 << 10;

impl Config {
    /// Checks every size and mode combination; [`Engine::new`] calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Bounds::GuardPages { guard_size } = self.bounds {
            if guard_size > MAX_GUARD_SIZE {
                return Err(ConfigError::GuardTooLarge {
                    guard_size,
                    max: MAX_GUARD_SIZE,
                });
            }
            let page_size = faaslet_sfi::host_page_size() as u64;
            if !guard_size.is_multiple_of(page_size) {
                return Err(ConfigError::GuardUnaligned {
                    guard_size,
                    page_size,
                });
            }
        }
        if self.signal_interruption && !self.epoch_interruption {
            return Err(ConfigError::SignalsWithoutInterruption);
        }
        let cap = self.explicit_reservation_cap;
        if cap > 4 << 30 || !cap.is_multiple_of(faaslet_sfi::WASM_PAGE as u64) {
            return Err(ConfigError::ReservationCap { cap });
        }
        if self.max_table_elements > u64::from(u32::MAX) {
            return Err(ConfigError::TableElements {
                n: self.max_table_elements,
                max: u64::from(u32::MAX),
            });
        }
        if !(MIN_WASM_STACK..=MAX_WASM_STACK).contains(&self.max_wasm_stack) {
            return Err(ConfigError::WasmStack {
                n: self.max_wasm_stack,
                min: MIN_WASM_STACK,
                max: MAX_WASM_STACK,
            });
        }
        // A store's memories together: at most 1,000 full 4 GiB memories'
        // worth (the sum stays far from u64 overflow); its tables: at most
        // 1,000 full 32-bit tables.
        let l = &self.store_limits;
        for (field, value, max) in [
            ("memory_bytes", l.memory_bytes, 1000u64 << 32),
            ("table_elements", l.table_elements, 1000u64 << 32),
        ] {
            if value > max {
                return Err(ConfigError::StoreLimit { field, value, max });
            }
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bounds: Bounds::GuardPages {
                guard_size: 2 << 30,
            },
            max_wasm_stack: 1 << 20,
            epoch_interruption: true,
            signal_interruption: false,
            optimize: true,
            explicit_reservation_cap: 256 << 20,
            max_table_elements: 10_000_000,
            explicit_canaries: true,
            wasm_multi_memory: false,
            spectre_guard: true,
            wasm_relaxed_simd: true,
            wasm_function_references: true,
            wasm_memory64: true,
            wasm_exceptions: true,
            wasm_gc: true,
            store_limits: StoreLimits::default(),
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

/// Canonical function type ids.
///
/// `call_indirect` checks a callee's type by comparing two ids, and the
/// caller's id is an immediate in its machine code, so an id must mean one
/// type for as long as code using it lives, and (for the code cache,
/// which refuses code compiled under other ids) preferably the same type
/// in every engine. Hence two kinds:
///
/// * A type of at most 8 values, at most 3 of them results, is *encoded*:
///   its id is a pure function of the type (parameter count << 26 |
///   result count << 24 | a 3-bit code per value), the same in every
///   engine and process, needing no registry entry at all. Injective: the
///   counts fix where each code sits, and every code is non-zero.
/// * Any other type is *registered*: its id (bit 31 set, so never equal to
///   an encoded one) is handed out by this registry and reference-counted;
///   a module holds a reference per type it declares and returns them
///   when dropped, so compiling and dropping modules does not grow it.
///   Host function types (the embedder's, not a guest's) are held for the
///   engine's life. A freed id is reused only when no code that holds it
///   remains (every module using it has been dropped), lowest first (so
///   types registered again in the same order get their old ids back),
///   and artefacts carry the ids they were compiled with, so reuse cannot
///   confuse them.
#[derive(Default)]
struct TypeRegistry {
    ids: HashMap<FuncType, (u32, usize)>,
    by_id: HashMap<u32, FuncType>,
    /// Freed ids, lowest reused first: types registered again in the same
    /// order after their modules were dropped get the same ids again, so
    /// an artefact made before still loads.
    free: std::collections::BTreeSet<u32>,
    next: u32,
}

/// Set in every registered (not encoded) type id.
const REGISTERED: u32 = 1 << 31;

/// Whether `id` was handed out by the registry (not encoded).
pub(crate) fn is_registered_type(id: u32) -> bool {
    id & REGISTERED != 0
}

/// The encoded id of a small type (see [`TypeRegistry`]).
fn encoded_type_id(ty: &FuncType) -> Option<u32> {
    let (np, nr) = (ty.params.len(), ty.results.len());
    // Types with typed references are told apart by their `ref_key`,
    // which the 3-bit codes cannot hold.
    if nr > 3 || np + nr > 8 || ty.ref_key.is_some() {
        return None;
    }
    // A wasm type with an exnref or anyref always has a `ref_key`; a host
    // type with one (no key) is registered, so that it is told apart from
    // a host type with the other.
    let values = ty.params.iter().chain(ty.results.iter());
    if values
        .clone()
        .any(|v| matches!(v, ValType::ExnRef | ValType::AnyRef))
    {
        return None;
    }
    let code = |v: &ValType| match v {
        ValType::I32 => 1u32,
        ValType::I64 => 2,
        ValType::F32 => 3,
        ValType::F64 => 4,
        ValType::V128 => 5,
        ValType::FuncRef => 6,
        ValType::ExternRef => 7,
        ValType::ExnRef | ValType::AnyRef => 0,
    };
    let codes = values
        .enumerate()
        .fold(0u32, |a, (i, v)| a | (code(v) << (3 * i)));
    Some(((np as u32) << 26) | ((nr as u32) << 24) | codes)
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
    ///
    /// Refuses a configuration that could break the sandbox or cannot work
    /// with [`Error::Config`] (see [`Config::validate`]).
    pub fn new(config: &Config) -> Result<Engine, Error> {
        config.validate()?;
        faaslet_sfi::init_traps().map_err(|e| Error::Resource(e.to_string()))?;
        if config.signal_interruption {
            faaslet_sfi::init_interrupts().map_err(|e| Error::Resource(e.to_string()))?;
        }
        let compile = CompileConfig {
            bounds: match config.bounds {
                Bounds::GuardPages { guard_size } => BoundsChecks::GuardPages { guard_size },
                Bounds::Explicit => BoundsChecks::Explicit,
            },
            // With signals, no checks in the code.
            epoch_interruption: config.epoch_interruption && !config.signal_interruption,
            optimize: config.optimize,
            multi_memory: config.wasm_multi_memory,
            spectre_guard: config.spectre_guard,
            relaxed_simd: config.wasm_relaxed_simd,
            function_references: config.wasm_function_references,
            memory64: config.wasm_memory64,
            exceptions: config.wasm_exceptions,
            gc: config.wasm_gc && config.wasm_function_references,
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
    /// at their next function entry or loop header (with
    /// [`Config::signal_interruption`]: the threads running them are
    /// signalled now, and at every later increment while they run on).
    pub fn increment_epoch(&self) {
        let now = self.inner.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        if self.inner.config.signal_interruption {
            faaslet_sfi::interrupt_expired(&self.inner.epoch, now);
        }
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

    /// The canonical id of a host function type (see [`TypeRegistry`]),
    /// held for the engine's life.
    pub(crate) fn type_id(&self, ty: &FuncType) -> u32 {
        self.acquire_type(ty)
    }

    /// The canonical id of `ty`, taking a reference on it if it is
    /// registered (give it back with [`release_types`](Self::release_types)).
    pub(crate) fn acquire_type(&self, ty: &FuncType) -> u32 {
        if let Some(id) = encoded_type_id(ty) {
            return id;
        }
        let mut reg = self.inner.types.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((id, refs)) = reg.ids.get_mut(ty) {
            *refs += 1;
            return *id;
        }
        let id = match reg.free.pop_first() {
            Some(id) => id,
            None => {
                // 2^31 registered types alive at once cannot happen (each
                // is a declaration in some live module); saturate rather
                // than wrap into the encoded range.
                let id = REGISTERED | reg.next.min(u32::MAX >> 1);
                reg.next = reg.next.saturating_add(1);
                id
            }
        };
        reg.ids.insert(ty.clone(), (id, 1));
        reg.by_id.insert(id, ty.clone());
        id
    }

    /// Gives back one reference per id in `ids` (encoded ids are ignored);
    /// a type whose last reference goes is forgotten and its id reused.
    pub(crate) fn release_types(&self, ids: &[u32]) {
        if !ids.iter().any(|id| id & REGISTERED != 0) {
            return;
        }
        let mut reg = self.inner.types.lock().unwrap_or_else(|e| e.into_inner());
        let reg = &mut *reg;
        for &id in ids.iter().filter(|id| *id & REGISTERED != 0) {
            let Some(ty) = reg.by_id.get(&id) else {
                continue;
            };
            let Some(entry) = reg.ids.get_mut(ty) else {
                continue;
            };
            entry.1 -= 1;
            if entry.1 == 0 {
                let ty = reg.by_id.remove(&id).expect("present above");
                reg.ids.remove(&ty);
                reg.free.insert(id);
            }
        }
    }

    /// Registered (not encoded) function types alive in this engine.
    pub fn registered_types(&self) -> usize {
        self.inner
            .types
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ids
            .len()
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
