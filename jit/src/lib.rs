//! faaslet's WebAssembly JIT: wasmparser validates, our own translator emits
//! Cranelift IR, and cranelift-jit turns it into machine code.
//!
//! This crate knows wasm semantics and the VM ABI ([`abi`]); it does not
//! know how memories are reserved or how traps are caught (that is
//! `faaslet-sfi`), nor how instances are linked (that is the `faaslet`
//! engine crate).
//!
//! ```
//! use faaslet_jit::{CompileConfig, Compiler};
//! let wasm = wast::parser::parse::<wast::Wat>(
//!     &wast::parser::ParseBuffer::new("(module (func (export \"f\") (result i32) i32.const 7))").unwrap(),
//! ).unwrap().encode().unwrap();
//! let compiler = Compiler::new(&CompileConfig::default()).unwrap();
//! let mut next_id = 0;
//! let module = compiler.compile_module(&wasm, &mut |_ty| { next_id += 1; next_id }).unwrap();
//! assert_eq!(module.info.exports[0].name, "f");
//! ```

pub mod abi;
pub mod artifact;
pub mod gc_layout;
pub mod types;

mod compile;
mod environ;
mod error;
mod flags;
mod simd;
mod translate;

pub use artifact::{ArtifactError, ArtifactKey};
pub use compile::{CompiledModule, CompiledStub, Compiler, Emit, TrapSite};
pub use error::{CompileError, CompileErrorKind};
pub use types::*;

/// How memory accesses are bounds-checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundsChecks {
    /// The runtime reserves 4 GiB plus `guard_size` bytes for every 32-bit
    /// memory, all inaccessible beyond the current length. An access whose
    /// static offset plus width is at most `guard_size` needs no explicit
    /// check: it either hits accessible memory or faults in the guard.
    GuardPages {
        /// Bytes of guard after the 4 GiB index space.
        guard_size: u64,
    },
    /// Every access is compared with the memory's current length. The
    /// runtime may reserve no more than the memory's maximum.
    Explicit,
}

impl Default for BoundsChecks {
    fn default() -> Self {
        BoundsChecks::GuardPages {
            guard_size: 2 << 30,
        }
    }
}

/// Code generation settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileConfig {
    /// How memory accesses are bounds-checked.
    pub bounds: BoundsChecks,
    /// Emit an epoch check at every function entry and loop header, so a
    /// call can be interrupted (see [`abi::VMStoreContext`]).
    pub epoch_interruption: bool,
    /// Let Cranelift optimise (`speed`); off means `none`, for fast compiles.
    pub optimize: bool,
    /// Accept modules with several memories (the multi-memory proposal,
    /// part of WebAssembly 3.0). Off by default: WebAssembly 2.0 requires
    /// rejecting them.
    pub multi_memory: bool,
    /// Spectre v1 guard: every explicit bounds check of a linear-memory
    /// access and every table-index check also selects the address it
    /// guards with `select_spectre_guard` (a conditional move, which the
    /// CPU does not predict), so that code executed speculatively past a
    /// mispredicted check dereferences address 0 (never mapped) instead
    /// of memory beyond the bounds. The conditional trap stays. Part of
    /// the artefact key (the whole config is), so guarded and unguarded
    /// code never mix in a code cache.
    pub spectre_guard: bool,
    /// Accept the relaxed SIMD operators (WebAssembly 3.0), lowered to
    /// results that are the same on every host (see the `simd` module's
    /// table). On by default.
    pub relaxed_simd: bool,
    /// Accept typed function references (WebAssembly 3.0): `call_ref`,
    /// `return_call_ref`, `ref.as_non_null`, `br_on_null`,
    /// `br_on_non_null`, non-nullable and concrete reference types, and
    /// tables with initialiser expressions.
    pub function_references: bool,
    /// Accept 64-bit memories and tables (memory64, WebAssembly 3.0).
    /// Their accesses are always checked explicitly (with the Spectre
    /// guard if configured), in both bounds modes, since no guard region
    /// covers a 64-bit index: with guard pages, that the index fits in 32
    /// bits (the rest is a 32-bit memory's access); in explicit mode,
    /// against the length, with the carry of `index + offset` out of
    /// bounds.
    pub memory64: bool,
    /// Accept exception handling (WebAssembly 3.0): tags, `throw`,
    /// `throw_ref`, `try_table`, `exnref`. Exceptions unwind by checked
    /// returns (see [`abi::VMStoreContext::pending_exception`]), so code
    /// compiled with this on checks a word after every call (no measurable
    /// cost on a call-bound kernel: fib(35), 30 million calls, 53.2 ms
    /// either way). On by default.
    pub exceptions: bool,
    /// Accept WebAssembly GC: struct and array types, declared subtypes,
    /// the `any` hierarchy (`anyref`, `eqref`, `i31ref`, `structref`,
    /// `arrayref`, `none`), casts and the GC instructions. Heap operations
    /// call the runtime (see [`gc_layout`]). Needs `function_references`.
    pub gc: bool,
}

impl Default for CompileConfig {
    fn default() -> Self {
        CompileConfig {
            bounds: BoundsChecks::default(),
            epoch_interruption: true,
            optimize: true,
            multi_memory: false,
            spectre_guard: true,
            relaxed_simd: true,
            function_references: true,
            memory64: true,
            exceptions: true,
            gc: true,
        }
    }
}
