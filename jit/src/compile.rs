//! Driving Cranelift: the [`Compiler`], compiled modules and host stubs.

use crate::abi::{self, ArrayTrampoline};
use crate::artifact::{self, ArtifactError, ArtifactKey, Blob};
use crate::environ::parse_module;
use crate::error::CompileError;
use crate::translate::{ir_type, translate_function, wasm_signature, ModuleEnv};
use crate::types::{FuncType, ModuleInfo, ValType};
use crate::CompileConfig;
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{
    types, AbiParam, ExtFuncData, ExternalName, InstBuilder, MemFlagsData, Signature,
    StackSlotData, StackSlotKind, TrapCode, UserExternalName, UserFuncName,
};
use cranelift_codegen::isa::{CallConv, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, ModuleReloc};
use std::collections::HashMap;

/// What [`Compiler::emit`] prints of each function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// The Cranelift IR as the translator wrote it, before optimisation.
    Clif,
    /// The Cranelift IR after Cranelift's optimisations (GVN, LICM, alias
    /// analysis): where a load was hoisted out of a loop or not shows here.
    OptClif,
    /// The machine instructions Cranelift emitted (its own disassembly of
    /// the final code, before relocation).
    Asm,
}

/// Compiles WebAssembly modules and host stubs to native code for the host.
pub struct Compiler {
    isa: OwnedTargetIsa,
    config: CompileConfig,
}

/// A trap site found by [`CompiledModule::lookup_trap`].
#[derive(Debug, Clone, Copy)]
pub struct TrapSite {
    /// Why the code traps there.
    pub code: TrapCode,
    /// The function containing the site (full index space).
    pub func_index: u32,
    /// The wasm byte offset of the trapping instruction, if known.
    pub wasm_offset: Option<u32>,
}

/// Machine code of one function, with its trap and source-location tables.
struct FuncEntry {
    start: usize,
    end: usize,
    func_index: u32,
    /// (offset from start, code), sorted by offset.
    traps: Box<[(u32, TrapCode)]>,
    /// (start, end, wasm offset), sorted by start.
    srclocs: Box<[(u32, u32, u32)]>,
}

impl FuncEntry {
    fn srcloc(&self, off: u32) -> Option<u32> {
        let i = self.srclocs.partition_point(|(s, _, _)| *s <= off);
        if i == 0 {
            return None;
        }
        let (_, end, loc) = self.srclocs[i - 1];
        (off < end).then_some(loc)
    }

    fn trap(&self, off: u32) -> Option<TrapCode> {
        self.traps
            .binary_search_by_key(&off, |(o, _)| *o)
            .ok()
            .map(|i| self.traps[i].1)
    }
}

/// Signal-safe lookup of the entry containing `pc` in `entries` (sorted).
fn find_entry(entries: &[FuncEntry], pc: usize) -> Option<&FuncEntry> {
    let i = entries.partition_point(|e| e.start <= pc);
    if i == 0 {
        return None;
    }
    let e = &entries[i - 1];
    (pc < e.end).then_some(e)
}

/// The trap and source-location tables of the function just compiled in
/// `ctx`, and its code size.
#[allow(clippy::type_complexity)]
fn tables_of(ctx: &Context) -> (Box<[(u32, TrapCode)]>, Box<[(u32, u32, u32)]>, usize) {
    let code = ctx.compiled_code().expect("function was compiled");
    let mut traps = code
        .buffer
        .traps()
        .iter()
        .map(|t| (t.offset, t.code))
        .collect::<Vec<_>>();
    traps.sort_by_key(|t| t.0);
    let mut srclocs = code
        .buffer
        .get_srclocs_sorted()
        .iter()
        .filter(|s| !s.loc.is_default())
        .map(|s| (s.start, s.end, s.loc.bits()))
        .collect::<Vec<_>>();
    srclocs.sort_by_key(|s| s.0);
    (
        traps.into(),
        srclocs.into(),
        code.buffer.total_size() as usize,
    )
}

/// Records the trap and source-location tables of the function just
/// defined in `ctx`. The address is filled in after finalisation.
fn entry_of(ctx: &Context, func_index: u32) -> FuncEntry {
    let (traps, srclocs, end) = tables_of(ctx);
    FuncEntry {
        start: 0,
        end,
        func_index,
        traps,
        srclocs,
    }
}

/// The machine code (before relocation) and tables of the function just
/// compiled in `ctx` under `id`.
fn blob_of(ctx: &Context, func_index: u32, id: FuncId) -> Blob {
    let code = ctx.compiled_code().expect("function was compiled");
    let relocs = code
        .buffer
        .relocs()
        .iter()
        .map(|r| ModuleReloc::from_mach_reloc(r, &ctx.func, id))
        .collect();
    let (traps, srclocs, _) = tables_of(ctx);
    Blob {
        func_index,
        align: u64::from(code.buffer.alignment),
        bytes: code.code_buffer().to_vec(),
        relocs,
        traps,
        srclocs,
    }
}

/// The signature of every array trampoline: (callee code, callee vmctx,
/// caller vmctx, values).
fn trampoline_signature() -> Signature {
    let mut sig = Signature::new(CallConv::SystemV);
    for _ in 0..4 {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig
}

/// The largest code reservation of one module: PC-relative calls between
/// its functions must stay within ±2 GiB.
const MAX_CODE_RESERVATION: usize = 1536 << 20;

/// Modules with at least this many bytes of function bodies compile on
/// several threads; below it, spawning costs more than it saves.
const PARALLEL_COMPILE_BYTES: u64 = 32 << 10;

/// Stack of a compile thread: Cranelift recurses on deeply nested code.
const COMPILE_STACK: usize = 16 << 20;

/// Frees a JIT module's code memory.
fn free_module(module: &mut Option<JITModule>) {
    if let Some(m) = module.take() {
        // SAFETY: the owner of the code (a `CompiledModule`/`CompiledStub`)
        // is being dropped; the engine keeps it alive (through `Arc`) for as
        // long as any instance or stub may execute or refer to its code.
        unsafe { m.free_memory() };
    }
}

/// A compiled module: its description and its machine code.
pub struct CompiledModule {
    /// The parsed module.
    pub info: ModuleInfo,
    module: Option<JITModule>,
    /// Entry of each defined function, by defined index.
    funcs: Vec<*const u8>,
    /// One array trampoline per distinct function type.
    trampolines: Vec<ArrayTrampoline>,
    /// For each type of [`ModuleInfo::types`], its trampoline's index.
    trampoline_of: Vec<u32>,
    /// Defined functions sorted by address.
    entries: Vec<FuncEntry>,
}

// SAFETY: the JIT module's code and the tables are immutable after
// `finalize_definitions`; the raw pointers refer to that immutable code.
unsafe impl Send for CompiledModule {}
// SAFETY: as above, nothing is mutated through `&CompiledModule`.
unsafe impl Sync for CompiledModule {}

impl Drop for CompiledModule {
    fn drop(&mut self) {
        free_module(&mut self.module);
    }
}

impl CompiledModule {
    /// The wasm-ABI entry of defined function `defined_index` (function
    /// index minus the number of imported functions).
    pub fn function(&self, defined_index: u32) -> *const u8 {
        self.funcs[defined_index as usize]
    }

    /// The array trampoline of type `type_index` of [`ModuleInfo::types`].
    pub fn array_trampoline(&self, type_index: u32) -> ArrayTrampoline {
        self.trampolines[self.trampoline_of[type_index as usize] as usize]
    }

    /// `[start, end)` of each defined function's machine code.
    pub fn code_ranges(&self) -> Vec<(usize, usize)> {
        self.entries.iter().map(|e| (e.start, e.end)).collect()
    }

    /// `[start, end)` spanning all of the module's function code (`None`
    /// for a module without functions). Everything in it belongs to this
    /// module: its code lives in one reservation of its own, so the span
    /// can be registered with the trap handler as one range, whatever the
    /// number of functions, and [`lookup_trap`](Self::lookup_trap) tells
    /// the functions apart.
    pub fn code_span(&self) -> Option<(usize, usize)> {
        let first = self.entries.first()?;
        let end = self.entries.iter().map(|e| e.end).max()?;
        Some((first.start, end))
    }

    /// Whether `pc` is a trap site, and which. Signal-safe: no allocation,
    /// no locks.
    pub fn lookup_trap(&self, pc: usize) -> Option<TrapSite> {
        let e = find_entry(&self.entries, pc)?;
        let off = (pc - e.start) as u32;
        let code = e.trap(off)?;
        Some(TrapSite {
            code,
            func_index: e.func_index,
            wasm_offset: e.srcloc(off),
        })
    }

    /// The function containing `pc` (full index space) and the wasm byte
    /// offset of the instruction there, if known.
    pub fn lookup_func(&self, pc: usize) -> Option<(u32, Option<u32>)> {
        let e = find_entry(&self.entries, pc)?;
        Some((e.func_index, e.srcloc((pc - e.start) as u32)))
    }
}

/// The host stub and array trampoline of one function type.
pub struct CompiledStub {
    module: Option<JITModule>,
    host_stub: *const u8,
    trampoline: ArrayTrampoline,
    entries: Vec<FuncEntry>,
}

// SAFETY: the code is immutable after `finalize_definitions`; the raw
// pointers refer to it.
unsafe impl Send for CompiledStub {}
// SAFETY: as above, nothing is mutated through `&CompiledStub`.
unsafe impl Sync for CompiledStub {}

impl Drop for CompiledStub {
    fn drop(&mut self) {
        free_module(&mut self.module);
    }
}

impl CompiledStub {
    /// The host stub: wasm ABI, calls [`abi::VMHostFuncContext::dispatch`].
    pub fn host_stub(&self) -> *const u8 {
        self.host_stub
    }

    /// The array trampoline for this type.
    pub fn array_trampoline(&self) -> ArrayTrampoline {
        self.trampoline
    }

    /// `[start, end)` of the stub's and the trampoline's machine code.
    pub fn code_ranges(&self) -> Vec<(usize, usize)> {
        self.entries.iter().map(|e| (e.start, e.end)).collect()
    }

    /// Whether `pc` is a trap site, and which. Signal-safe.
    pub fn lookup_trap(&self, pc: usize) -> Option<TrapCode> {
        let e = find_entry(&self.entries, pc)?;
        e.trap((pc - e.start) as u32)
    }
}

/// The distinct function types among `types`: the index of each one's
/// first declaration, and for every declared type the position of its
/// distinct type in that list. Deterministic (first-seen order), so an
/// artefact's trampolines line up with the types on loading.
pub(crate) fn distinct_types(types: &[FuncType]) -> (Vec<u32>, Vec<u32>) {
    let mut seen: HashMap<&FuncType, u32> = HashMap::new();
    let mut distinct = Vec::new();
    let of = types
        .iter()
        .enumerate()
        .map(|(t, ty)| {
            *seen.entry(ty).or_insert_with(|| {
                distinct.push(t as u32);
                distinct.len() as u32 - 1
            })
        })
        .collect();
    (distinct, of)
}

fn codegen_err(what: &str, e: impl std::fmt::Display) -> CompileError {
    CompileError::codegen(format!("{what}: {e}"))
}

impl Compiler {
    /// Creates a compiler for the host machine.
    pub fn new(config: &CompileConfig) -> Result<Compiler, CompileError> {
        let mut flags = settings::builder();
        let set = |f: &mut settings::Builder, k: &str, v: &str| {
            f.set(k, v)
                .map_err(|e| codegen_err(&format!("setting {k}={v}"), e))
        };
        set(
            &mut flags,
            "opt_level",
            if config.optimize { "speed" } else { "none" },
        )?;
        set(
            &mut flags,
            "enable_verifier",
            if cfg!(debug_assertions) {
                "true"
            } else {
                "false"
            },
        )?;
        set(&mut flags, "unwind_info", "false")?;
        set(&mut flags, "preserve_frame_pointers", "true")?;
        set(&mut flags, "enable_multi_ret_implicit_sret", "true")?;
        set(&mut flags, "is_pic", "false")?;
        set(&mut flags, "enable_probestack", "false")?;
        let isa_builder =
            cranelift_native::builder().map_err(|e| codegen_err("host ISA unsupported", e))?;
        let isa = isa_builder
            .finish(settings::Flags::new(flags))
            .map_err(|e| codegen_err("building the host ISA", e))?;
        Ok(Compiler {
            isa,
            config: config.clone(),
        })
    }

    /// The configuration this compiler was created with.
    pub fn config(&self) -> &CompileConfig {
        &self.config
    }

    /// A JIT module whose code all lands in one contiguous reservation of
    /// `reserve` bytes.
    ///
    /// Calls between a module's functions are `colocated`, i.e. encoded as
    /// 32-bit PC-relative calls. cranelift-jit's default provider maps code
    /// in separate chunks wherever the kernel puts them, and with 6 GiB
    /// memory reservations being mapped by other threads, two chunks of one
    /// module can end up more than 2 GiB apart, so relocating the call
    /// overflows (cranelift-jit then panics). An arena keeps every chunk
    /// within `reserve` (< 2 GiB) of the others.
    fn new_module(&self, reserve: usize) -> Result<JITModule, CompileError> {
        let mut builder =
            JITBuilder::with_isa(self.isa.clone(), cranelift_module::default_libcall_names());
        for (name, ptr) in libcalls::ALL {
            builder.symbol(*name, *ptr);
        }
        let arena = cranelift_jit::ArenaMemoryProvider::new_with_size(reserve)
            .map_err(|e| codegen_err("reserving code memory", e))?;
        builder.memory_provider(Box::new(arena));
        Ok(JITModule::new(builder))
    }

    /// Validates, parses, translates and compiles `wasm`. `type_id` maps
    /// each entry of the type section, in order, to its engine-wide
    /// canonical id.
    pub fn compile_module(
        &self,
        wasm: &[u8],
        type_id: &mut dyn FnMut(&FuncType) -> u32,
    ) -> Result<CompiledModule, CompileError> {
        let parsed = parse_module(wasm, &self.config, true, type_id)?;
        let (funcs, trampolines) = self.compile_blobs(&parsed.info, &parsed.bodies, None)?;
        self.place(parsed.info, wasm.len(), funcs, trampolines)
    }

    /// [`compile_module`](Self::compile_module), also returning the
    /// module's code as an artefact for [`load_module`](Self::load_module)
    /// (the format is described in [`artifact`](crate::artifact)). The
    /// inner result is an error only if the code uses something the
    /// format cannot record; the module is usable either way.
    #[allow(clippy::type_complexity)]
    pub fn compile_module_artifact(
        &self,
        wasm: &[u8],
        type_id: &mut dyn FnMut(&FuncType) -> u32,
    ) -> Result<(CompiledModule, Result<Vec<u8>, ArtifactError>), CompileError> {
        self.compile_module_artifact_until(wasm, type_id, None)
    }

    /// [`compile_module_artifact`](Self::compile_module_artifact), giving
    /// up with a [`CompileErrorKind::Budget`](crate::CompileErrorKind)
    /// error once `deadline` has passed. The deadline is checked before
    /// each function is translated and compiled (on every compile thread),
    /// so the overshoot is at most one function's compile time.
    #[allow(clippy::type_complexity)]
    pub fn compile_module_artifact_until(
        &self,
        wasm: &[u8],
        type_id: &mut dyn FnMut(&FuncType) -> u32,
        deadline: Option<std::time::Instant>,
    ) -> Result<(CompiledModule, Result<Vec<u8>, ArtifactError>), CompileError> {
        let parsed = parse_module(wasm, &self.config, true, type_id)?;
        let (funcs, trampolines) = self.compile_blobs(&parsed.info, &parsed.bodies, deadline)?;
        let artifact = artifact::serialize(
            self.artifact_key(wasm),
            &parsed.info.type_ids,
            &funcs,
            &trampolines,
        );
        let module = self.place(parsed.info, wasm.len(), funcs, trampolines)?;
        Ok((module, artifact))
    }

    /// The [`ArtifactKey`] of `wasm` compiled by this compiler: the key an
    /// artefact must carry to be loaded beside `wasm` here.
    pub fn artifact_key(&self, wasm: &[u8]) -> ArtifactKey {
        artifact::key(wasm, &self.config, &*self.isa)
    }

    /// Loads a module from `wasm` and the `artifact` that
    /// [`compile_module_artifact`](Self::compile_module_artifact) made of
    /// it, without compiling. The artefact must carry this compiler's
    /// [`artifact_key`](Self::artifact_key) of `wasm`; its functions'
    /// bodies are not validated again (the artefact was made from exactly
    /// this wasm after validating it). Any damage is an [`ArtifactError`]
    /// and nothing stays allocated.
    pub fn load_module(
        &self,
        wasm: &[u8],
        artifact: &[u8],
        type_id: &mut dyn FnMut(&FuncType) -> u32,
    ) -> Result<CompiledModule, ArtifactError> {
        let key = self.artifact_key(wasm);
        // The header first: a foreign or damaged file is refused before
        // the wasm is even parsed.
        let payload = artifact::check_header(artifact, key)?;
        let parsed = parse_module(wasm, &self.config, false, type_id)?;
        let info = parsed.info;
        let (funcs, trampolines) = artifact::decode(
            payload,
            &info.type_ids,
            parsed.bodies.len(),
            distinct_types(&info.types).0.len(),
        )?;
        let nimp = info.num_imported_funcs;
        for (i, f) in funcs.iter().enumerate() {
            if f.func_index != nimp + i as u32 {
                return Err(ArtifactError::Malformed(format!(
                    "function {} stored as function {}",
                    nimp + i as u32,
                    f.func_index
                )));
            }
        }
        Ok(self.place(info, wasm.len(), funcs, trampolines)?)
    }

    /// Translates and compiles every function body and the array
    /// trampoline of every distinct type, into blobs not yet placed in
    /// memory. Function `nimp + i` gets id `i`, the trampoline of the
    /// `k`th distinct type (see [`distinct_types`]) id `bodies.len() + k`:
    /// [`place`](Self::place) declares them in that order.
    fn compile_blobs(
        &self,
        info: &ModuleInfo,
        bodies: &[wasmparser::FunctionBody<'_>],
        deadline: Option<std::time::Instant>,
    ) -> Result<(Vec<Blob>, Vec<Blob>), CompileError> {
        let nimp = info.num_imported_funcs;
        let env = ModuleEnv {
            info,
            config: &self.config,
        };
        let sigs: Vec<Signature> = (0..bodies.len() as u32)
            .map(|i| wasm_signature(info.func_type(nimp + i)))
            .collect();
        // Translating and compiling a function needs nothing from the
        // JITModule (callees are named by their FuncId, exactly as
        // `declare_func_in_func` would), so functions compile on several
        // threads; only placing the code in memory is sequential.
        let compile_one = |i: usize,
                           ctx: &mut Context,
                           fctx: &mut FunctionBuilderContext|
         -> Result<Blob, CompileError> {
            let index = nimp + i as u32;
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Err(CompileError::new(
                    crate::CompileErrorKind::Budget,
                    "compilation ran past its time budget",
                )
                .in_func(index));
            }
            self.translate_into(&env, &sigs, &bodies[i], i, ctx, fctx)?;
            ctx.compile(&*self.isa, &mut ControlPlane::default())
                .map_err(|e| {
                    codegen_err("compiling function", format!("{:?}", e.inner)).in_func(index)
                })?;
            Ok(blob_of(ctx, index, FuncId::from_u32(i as u32)))
        };
        let body_bytes: u64 = bodies
            .iter()
            .map(|b| {
                let r = b.range();
                r.end - r.start
            })
            .sum();
        let threads = if bodies.len() >= 4 && body_bytes >= PARALLEL_COMPILE_BYTES {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(bodies.len())
                .min(8)
        } else {
            1
        };
        let mut compiled: Vec<(usize, Result<Blob, CompileError>)> = if threads <= 1 {
            let mut fctx = FunctionBuilderContext::new();
            let mut ctx = Context::new();
            (0..bodies.len())
                .map(|i| (i, compile_one(i, &mut ctx, &mut fctx)))
                .collect()
        } else {
            let next = std::sync::atomic::AtomicUsize::new(0);
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads)
                    .map(|_| {
                        std::thread::Builder::new()
                            .name("faaslet-compile".into())
                            .stack_size(COMPILE_STACK)
                            .spawn_scoped(scope, || {
                                let mut fctx = FunctionBuilderContext::new();
                                let mut ctx = Context::new();
                                let mut out = Vec::new();
                                loop {
                                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    if i >= bodies.len() {
                                        break out;
                                    }
                                    out.push((i, compile_one(i, &mut ctx, &mut fctx)));
                                }
                            })
                    })
                    .collect();
                let mut all = Vec::with_capacity(bodies.len());
                for w in workers {
                    match w {
                        Ok(h) => {
                            all.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                        }
                        Err(e) => {
                            all.push((usize::MAX, Err(codegen_err("spawning a compile thread", e))))
                        }
                    }
                }
                all
            })
        };
        compiled.sort_by_key(|(i, _)| *i);
        let funcs = compiled
            .into_iter()
            .map(|(_, r)| r)
            .collect::<Result<Vec<_>, _>>()?;
        let mut fctx = FunctionBuilderContext::new();
        let mut ctx = Context::new();
        // One trampoline per distinct type, not per declared type: a
        // module may declare the same type a million times.
        let (distinct, _) = distinct_types(&info.types);
        let mut trampolines = Vec::with_capacity(distinct.len());
        for (k, &t) in distinct.iter().enumerate() {
            self.build_trampoline(&mut ctx, &mut fctx, &info.types[t as usize]);
            ctx.compile(&*self.isa, &mut ControlPlane::default())
                .map_err(|e| codegen_err("compiling trampoline", format!("{:?}", e.inner)))?;
            let id = FuncId::from_u32((bodies.len() + k) as u32);
            trampolines.push(blob_of(&ctx, t, id));
        }
        Ok((funcs, trampolines))
    }

    /// Translates defined function `i` (`sigs` holds every defined
    /// function's signature) into `ctx.func`, not yet compiled.
    fn translate_into(
        &self,
        env: &ModuleEnv<'_>,
        sigs: &[Signature],
        body: &wasmparser::FunctionBody<'_>,
        i: usize,
        ctx: &mut Context,
        fctx: &mut FunctionBuilderContext,
    ) -> Result<(), CompileError> {
        let nimp = env.info.num_imported_funcs;
        let index = nimp + i as u32;
        ctx.clear();
        ctx.func.signature = sigs[i].clone();
        ctx.func.name = UserFuncName::user(0, index);
        let mut declare = |callee: u32, func: &mut cranelift_codegen::ir::Function| {
            let k = callee - nimp;
            let signature = func.import_signature(sigs[k as usize].clone());
            let name = func.declare_imported_user_function(UserExternalName {
                namespace: 0,
                index: k,
            });
            func.import_function(ExtFuncData {
                name: ExternalName::user(name),
                signature,
                // Local linkage: the callee is in this same code object.
                colocated: true,
                patchable: false,
            })
        };
        let r = translate_function(
            env,
            index,
            body,
            &mut ctx.func,
            fctx,
            &mut declare,
            self.isa.frontend_config(),
        );
        if r.is_err() {
            // A translation that stopped half-way (an operator faaslet
            // does not implement, such as GC's, which validation accepts)
            // leaves its state in the builder context, and the next
            // function translated with it would trip cranelift-frontend's
            // assertion that it starts empty: a guest-triggered panic.
            // Start the next one afresh.
            *fctx = FunctionBuilderContext::new();
        }
        r.map_err(|e| e.in_func(index).in_section("code"))
    }

    /// The code of `wasm`'s defined functions as text, for reading what
    /// the translator and Cranelift make of a hot loop (`faaslet compile
    /// --emit`). `only` keeps the functions whose index (decimal) or name
    /// (from the name section) equals it. Each function is preceded by a
    /// `;; function INDEX NAME` line. Nothing is placed in memory.
    pub fn emit(
        &self,
        wasm: &[u8],
        what: Emit,
        only: Option<&str>,
    ) -> Result<String, CompileError> {
        use std::fmt::Write;
        let mut next = 0u32;
        let parsed = parse_module(wasm, &self.config, true, &mut |_| {
            next += 1;
            next
        })?;
        let info = &parsed.info;
        let nimp = info.num_imported_funcs;
        let env = ModuleEnv {
            info,
            config: &self.config,
        };
        let sigs: Vec<Signature> = (0..parsed.bodies.len() as u32)
            .map(|i| wasm_signature(info.func_type(nimp + i)))
            .collect();
        let mut out = String::new();
        let mut fctx = FunctionBuilderContext::new();
        let mut ctx = Context::new();
        for (i, body) in parsed.bodies.iter().enumerate() {
            let index = nimp + i as u32;
            let name = info.func_name(index);
            if let Some(only) = only {
                if only != index.to_string() && Some(only) != name {
                    continue;
                }
            }
            self.translate_into(&env, &sigs, body, i, &mut ctx, &mut fctx)?;
            let _ = writeln!(out, ";; function {index} {}", name.unwrap_or(""));
            match what {
                Emit::Clif => {
                    let _ = writeln!(out, "{}", ctx.func.display());
                }
                Emit::OptClif | Emit::Asm => {
                    ctx.set_disasm(what == Emit::Asm);
                    ctx.compile(&*self.isa, &mut ControlPlane::default())
                        .map_err(|e| {
                            codegen_err("compiling function", format!("{:?}", e.inner))
                                .in_func(index)
                        })?;
                    if what == Emit::OptClif {
                        let _ = writeln!(out, "{}", ctx.func.display());
                    } else {
                        let code = ctx.compiled_code().expect("function was compiled");
                        let _ = writeln!(out, "{}", code.vcode.as_deref().unwrap_or(""));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Places compiled (or loaded) blobs in a fresh JIT module, resolves
    /// their relocations and makes the code executable.
    fn place(
        &self,
        info: ModuleInfo,
        wasm_len: usize,
        funcs: Vec<Blob>,
        trampolines: Vec<Blob>,
    ) -> Result<CompiledModule, CompileError> {
        // Address space only (PROT_NONE until used): generously more than
        // Cranelift's code for any wasm, and far below the 2 GiB reach of
        // a PC-relative call.
        let code: usize = funcs
            .iter()
            .chain(&trampolines)
            .map(|b| b.bytes.len())
            .sum();
        let reserve = wasm_len
            .saturating_mul(16)
            .max(code.saturating_mul(2))
            .saturating_add(4 << 20)
            .min(MAX_CODE_RESERVATION);
        let (distinct, trampoline_of) = distinct_types(&info.types);
        if trampolines.len() != distinct.len() {
            return Err(codegen_err(
                "placing trampolines",
                format!(
                    "{} trampolines for {} distinct types",
                    trampolines.len(),
                    distinct.len()
                ),
            ));
        }
        let mut module = Some(self.new_module(reserve)?);
        match self.place_into(&info, funcs, trampolines, module.as_mut().unwrap()) {
            Ok((funcs, trampolines, entries)) => Ok(CompiledModule {
                info,
                module,
                funcs,
                trampolines,
                trampoline_of,
                entries,
            }),
            Err(e) => {
                free_module(&mut module);
                Err(e)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn place_into(
        &self,
        info: &ModuleInfo,
        funcs: Vec<Blob>,
        trampolines: Vec<Blob>,
        module: &mut JITModule,
    ) -> Result<(Vec<*const u8>, Vec<ArrayTrampoline>, Vec<FuncEntry>), CompileError> {
        let nimp = info.num_imported_funcs;
        let tramp_sig = trampoline_signature();
        let mut ids = Vec::with_capacity(funcs.len() + trampolines.len());
        for i in 0..funcs.len() as u32 {
            let index = nimp + i;
            let sig = wasm_signature(info.func_type(index));
            let id = module
                .declare_function(&format!("f{index}"), Linkage::Local, &sig)
                .map_err(|e| codegen_err("declaring function", e).in_func(index))?;
            ids.push(id);
        }
        for t in 0..trampolines.len() {
            let id = module
                .declare_function(&format!("t{t}"), Linkage::Local, &tramp_sig)
                .map_err(|e| codegen_err("declaring trampoline", e))?;
            ids.push(id);
        }
        // The blobs name callees by the ids `compile_blobs` assumed.
        if ids
            .iter()
            .enumerate()
            .any(|(i, id)| id.as_u32() != i as u32)
        {
            return Err(codegen_err("declaring functions", "ids out of order"));
        }
        let nfuncs = funcs.len();
        let mut entries = Vec::with_capacity(nfuncs);
        for (i, f) in funcs.into_iter().chain(trampolines).enumerate() {
            module
                .define_function_bytes(ids[i], f.align, &f.bytes, &f.relocs)
                .map_err(|e| codegen_err("placing function", format!("{e:?}")))?;
            if i < nfuncs {
                entries.push(FuncEntry {
                    start: 0,
                    end: f.bytes.len(),
                    func_index: f.func_index,
                    traps: f.traps,
                    srclocs: f.srclocs,
                });
            }
        }
        module
            .finalize_definitions()
            .map_err(|e| codegen_err("finalizing code", e))?;
        let funcs: Vec<*const u8> = ids[..nfuncs]
            .iter()
            .map(|id| module.get_finalized_function(*id))
            .collect();
        for (e, f) in entries.iter_mut().zip(&funcs) {
            e.start = *f as usize;
            e.end += e.start;
        }
        entries.sort_by_key(|e| e.start);
        let trampolines = ids[nfuncs..]
            .iter()
            .map(|id| {
                let p = module.get_finalized_function(*id);
                // SAFETY: `p` is the finalized code of a trampoline built
                // by `build_trampoline` with exactly this signature (or
                // loaded from an artefact that carries this compiler's key
                // for this wasm, so it was built so too).
                unsafe { std::mem::transmute::<*const u8, ArrayTrampoline>(p) }
            })
            .collect();
        Ok((funcs, trampolines, entries))
    }

    /// Builds the array trampoline for `ty` in `ctx.func` (not compiled).
    fn build_trampoline(
        &self,
        ctx: &mut Context,
        fctx: &mut FunctionBuilderContext,
        ty: &FuncType,
    ) {
        ctx.clear();
        ctx.func.signature = trampoline_signature();
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let p = b.block_params(entry).to_vec();
        let (fptr, callee, caller, values) = (p[0], p[1], p[2], p[3]);
        let mut args = vec![callee, caller];
        for (i, t) in ty.params.iter().enumerate() {
            let v = b.ins().load(
                ir_type(*t),
                MemFlagsData::trusted(),
                values,
                (i * 16) as i32,
            );
            args.push(v);
        }
        let wsig = b.import_signature(wasm_signature(ty));
        let call = b.ins().call_indirect(wsig, fptr, &args);
        let results = b.inst_results(call).to_vec();
        for (i, (v, t)) in results.iter().zip(ty.results.iter()).enumerate() {
            store_val(&mut b, *v, *t, values, (i * 16) as i32);
        }
        b.ins().return_(&[]);
        b.finalize(self.isa.frontend_config());
    }

    /// Defines the array trampoline for `ty` in `module`.
    fn define_trampoline(
        &self,
        module: &mut JITModule,
        ctx: &mut Context,
        fctx: &mut FunctionBuilderContext,
        ty: &FuncType,
        name: &str,
    ) -> Result<FuncId, CompileError> {
        let id = module
            .declare_function(name, Linkage::Local, &trampoline_signature())
            .map_err(|e| codegen_err("declaring trampoline", e))?;
        self.build_trampoline(ctx, fctx, ty);
        module
            .define_function(id, ctx)
            .map_err(|e| codegen_err("compiling trampoline", format!("{e:?}")))?;
        Ok(id)
    }

    /// Compiles the host stub and array trampoline for functions of type
    /// `ty`.
    pub fn compile_stub(&self, ty: &FuncType) -> Result<CompiledStub, CompileError> {
        let mut module = Some(self.new_module(1 << 20)?);
        match self.compile_stub_into(ty, module.as_mut().unwrap()) {
            Ok((host_stub, trampoline, entries)) => Ok(CompiledStub {
                module,
                host_stub,
                trampoline,
                entries,
            }),
            Err(e) => {
                free_module(&mut module);
                Err(e)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn compile_stub_into(
        &self,
        ty: &FuncType,
        module: &mut JITModule,
    ) -> Result<(*const u8, ArrayTrampoline, Vec<FuncEntry>), CompileError> {
        let sig = wasm_signature(ty);
        let id = module
            .declare_function("host_stub", Linkage::Local, &sig)
            .map_err(|e| codegen_err("declaring host stub", e))?;
        let mut ctx = module.make_context();
        let mut fctx = FunctionBuilderContext::new();
        ctx.func.signature = sig;
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let p = b.block_params(entry).to_vec();
            let (callee, caller) = (p[0], p[1]);
            let len = ty.params.len().max(ty.results.len());
            let slots = len.max(1);
            let ss = b.create_sized_stack_slot(StackSlotData::new(
                StackSlotKind::ExplicitSlot,
                (slots * 16) as u32,
                4,
            ));
            let values = b.ins().stack_addr(types::I64, ss, 0);
            for (i, t) in ty.params.iter().enumerate() {
                store_val(&mut b, p[i + 2], *t, values, (i * 16) as i32);
            }
            let dispatch = b.ins().load(
                types::I64,
                MemFlagsData::trusted(),
                callee,
                abi::HOST_CTX_DISPATCH,
            );
            let mut dsig = Signature::new(CallConv::SystemV);
            for _ in 0..4 {
                dsig.params.push(AbiParam::new(types::I64));
            }
            dsig.returns.push(AbiParam::new(types::I32));
            let dsig = b.import_signature(dsig);
            let n = b.ins().iconst(types::I64, len as i64);
            let call = b
                .ins()
                .call_indirect(dsig, dispatch, &[callee, caller, values, n]);
            let r = b.inst_results(call)[0];
            b.ins().trapnz(r, abi::TRAP_HOST);
            let mut rets = Vec::new();
            for (i, t) in ty.results.iter().enumerate() {
                let v = b.ins().load(
                    ir_type(*t),
                    MemFlagsData::trusted(),
                    values,
                    (i * 16) as i32,
                );
                rets.push(v);
            }
            b.ins().return_(&rets);
            b.finalize(self.isa.frontend_config());
        }
        module
            .define_function(id, &mut ctx)
            .map_err(|e| codegen_err("compiling host stub", format!("{e:?}")))?;
        let mut stub_entry = entry_of(&ctx, 0);
        let tid = self.define_trampoline(module, &mut ctx, &mut fctx, ty, "trampoline")?;
        let mut tramp_entry = entry_of(&ctx, 0);
        module
            .finalize_definitions()
            .map_err(|e| codegen_err("finalizing code", e))?;
        let stub = module.get_finalized_function(id);
        let tramp = module.get_finalized_function(tid);
        stub_entry.start = stub as usize;
        stub_entry.end += stub as usize;
        tramp_entry.start = tramp as usize;
        tramp_entry.end += tramp as usize;
        let mut entries = vec![stub_entry, tramp_entry];
        entries.sort_by_key(|e| e.start);
        // SAFETY: `tramp` is the finalized code of a trampoline built by
        // `define_trampoline` with exactly the `ArrayTrampoline` signature.
        let trampoline = unsafe { std::mem::transmute::<*const u8, ArrayTrampoline>(tramp) };
        Ok((stub, trampoline, entries))
    }
}

/// Stores `v` of wasm type `t` into the 16-byte `ValRaw` slot at
/// `base + off`, zeroing the unused bytes.
fn store_val(
    b: &mut FunctionBuilder<'_>,
    v: cranelift_codegen::ir::Value,
    t: ValType,
    base: cranelift_codegen::ir::Value,
    off: i32,
) {
    let zero = b.ins().iconst(types::I64, 0);
    b.ins().store(MemFlagsData::trusted(), zero, base, off + 8);
    if matches!(t, ValType::I32 | ValType::F32) {
        let z32 = b.ins().iconst(types::I32, 0);
        b.ins().store(MemFlagsData::trusted(), z32, base, off + 4);
    }
    b.ins().store(MemFlagsData::trusted(), v, base, off);
}

/// The pure functions Cranelift calls in place of an instruction the host
/// CPU lacks (its "libcalls": fused multiply-add without FMA, which relaxed
/// SIMD's `madd` needs; rounding without SSE4.1), resolved to these Rust
/// implementations by name. Left to the dynamic linker, a libcall may not
/// resolve at all (libm need not be loaded into the process), and
/// cranelift-jit panics on an unresolved one: a guest module could then
/// crash the host on a CPU without FMA. Each computes exactly what the
/// instruction would (`mul_add` is correctly rounded, one rounding), so
/// results do not depend on the host's CPU.
mod libcalls {
    // Rounding a NaN must give a quiet NaN (wasm's arithmetic NaN), which
    // the software fallbacks of `ceil` and friends do not promise for a
    // signalling one.
    fn quiet32(r: f32) -> f32 {
        if r.is_nan() {
            f32::from_bits(r.to_bits() | 0x0040_0000)
        } else {
            r
        }
    }
    fn quiet64(r: f64) -> f64 {
        if r.is_nan() {
            f64::from_bits(r.to_bits() | 0x0008_0000_0000_0000)
        } else {
            r
        }
    }
    extern "C" fn fmaf(a: f32, b: f32, c: f32) -> f32 {
        quiet32(a.mul_add(b, c))
    }
    extern "C" fn fma(a: f64, b: f64, c: f64) -> f64 {
        quiet64(a.mul_add(b, c))
    }
    extern "C" fn ceilf(a: f32) -> f32 {
        quiet32(a.ceil())
    }
    extern "C" fn ceil(a: f64) -> f64 {
        quiet64(a.ceil())
    }
    extern "C" fn floorf(a: f32) -> f32 {
        quiet32(a.floor())
    }
    extern "C" fn floor(a: f64) -> f64 {
        quiet64(a.floor())
    }
    extern "C" fn truncf(a: f32) -> f32 {
        quiet32(a.trunc())
    }
    extern "C" fn trunc(a: f64) -> f64 {
        quiet64(a.trunc())
    }
    extern "C" fn nearbyintf(a: f32) -> f32 {
        quiet32(a.round_ties_even())
    }
    extern "C" fn nearbyint(a: f64) -> f64 {
        quiet64(a.round_ties_even())
    }

    /// `(name, address)` of each, under the names of
    /// `cranelift_module::default_libcall_names`.
    pub(super) const ALL: &[(&str, *const u8)] = &[
        ("fmaf", fmaf as *const u8),
        ("fma", fma as *const u8),
        ("ceilf", ceilf as *const u8),
        ("ceil", ceil as *const u8),
        ("floorf", floorf as *const u8),
        ("floor", floor as *const u8),
        ("truncf", truncf as *const u8),
        ("trunc", trunc as *const u8),
        ("nearbyintf", nearbyintf as *const u8),
        ("nearbyint", nearbyint as *const u8),
    ];
}
