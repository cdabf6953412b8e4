//! The faaslet embedding API: compile WebAssembly once, instantiate it in
//! sandboxed stores, call it, and link host functions written in Rust.
//!
//! faaslet compiles with its own JIT (`faaslet-jit`, over Cranelift) and
//! runs guests in software-fault-isolated memories (`faaslet-sfi`): every
//! linear memory sits in its own guarded reservation, and every guest fault
//! comes back as an `Err(Trap)`, never a crash of the host.
//!
//! ```
//! use faaslet::{Engine, Linker, Module, Store, Val, ValType, FuncType, TrapKind};
//!
//! let engine = Engine::default();
//! let module = Module::new(&engine, r#"
//!     (module
//!       (import "host" "double" (func $double (param i32) (result i32)))
//!       (func (export "run") (param i32) (result i32)
//!         local.get 0
//!         call $double
//!         i32.const 1
//!         i32.add)
//!       (func (export "boom") unreachable))
//! "#).unwrap();
//!
//! let mut linker = Linker::new(&engine);
//! linker.func_new("host", "double", FuncType::new([ValType::I32], [ValType::I32]),
//!     |_caller, params, results| {
//!         results[0] = Val::I32(params[0].i32().unwrap() * 2);
//!         Ok(())
//!     }).unwrap();
//!
//! let mut store = Store::new(&engine, ());
//! let instance = linker.instantiate(&mut store, &module).unwrap();
//! let run = instance.get_typed_func::<i32, i32, _>(&mut store, "run").unwrap();
//! assert_eq!(run.call(&mut store, 20).unwrap(), 41);
//!
//! // A trap is an error value; the store stays usable.
//! let boom = instance.get_typed_func::<(), (), _>(&mut store, "boom").unwrap();
//! assert_eq!(boom.call(&mut store, ()).unwrap_err().kind, TrapKind::Unreachable);
//! assert_eq!(run.call(&mut store, 1).unwrap(), 3);
//! ```
//!
//! # Layout
//!
//! Modules form layers; each uses only those below it (CI checks this with
//! `.ci/module-cycles.py`):
//!
//! | layer | modules |
//! |---|---|
//! | API on top | `linker`, `instance` (instantiation from a [`Source`]) |
//! | images and builtins | `image` ([`InstanceImage`]), `builtins` (called by JIT code) |
//! | handle behaviour | `func`, `externals`, `shared_memory`, `values` |
//! | the store | `store` ([`Store`], [`InterruptHandle`]), `entries` (what it owns) |
//! | storage | `memory` (every linear memory), `parking_lot` (atomic wait/notify), `gc` (the GC heap) |
//! | foundations | `handles`, `module`, `engine`, `trap` |

mod builtins;
mod engine;
mod entries;
mod externals;
mod func;
mod gc;
mod handles;
mod image;
mod instance;
mod linker;
mod memory;
mod module;
mod parking_lot;
mod shared_memory;
mod store;
mod trap;
mod values;

pub use engine::{
    Bounds, Config, Engine, StoreLimits, MAX_GUARD_SIZE, MAX_WASM_STACK, MIN_WASM_STACK,
};
pub use faaslet_jit::{
    ArtifactError, ArtifactKey, CompileError, CompileErrorKind, CompositeKind, ConstExpr, ConstOp,
    ElemMode, ElemSegment, Emit, ExportIndex, FieldType, FuncType, GlobalType, MemoryType, RefType,
    StorageType, TableType, TypeDef, ValType,
};
pub use func::{
    Caller, IntoFunc, TypedFunc, WasmParams, WasmResults, WasmRet, WasmTy, WrittenPages,
};
pub use gc::{AnyKind, GcStats, MAX_HEAP_BYTES, MIN_THRESHOLD};
pub use handles::{AnyRef, ExnRef, Extern, ExternRef, Func, Global, Instance, Memory, Table, Tag};
pub use image::{ImageError, ImageParts, InstanceImage, Source};
pub use linker::Linker;
pub use module::{checksum, wat_to_wasm, ExternType, Module};
pub use shared_memory::{SharedMemory, WaitResult};
pub use store::{InterruptHandle, Store, StoreCensus, MAX_EXCEPTION_BYTES};
pub use trap::{ConfigError, Error, Limit, LimitError, Trap, TrapKind};
pub use values::Val;

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
