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
#![warn(missing_docs)]

pub mod bench;
mod engine;
mod externals;
pub mod faaslet;
pub mod faasm;
mod func;
mod instance;
mod linker;
mod module;
mod shared_memory;
pub mod snapshot;
mod store;
mod trap;
mod values;
pub mod wasi;
pub mod wast;

pub use engine::{Bounds, Config, Engine};
pub use externals::{Extern, Global, Memory, Table};
pub use faaslet_jit::{
    CompileError, CompileErrorKind, FuncType, GlobalType, MemoryType, RefType, TableType, ValType,
};
pub use func::{Caller, Func, IntoFunc, TypedFunc, WasmParams, WasmResults, WasmRet, WasmTy};
pub use instance::Instance;
pub use linker::Linker;
pub use module::{wat_to_wasm, ExternType, Module};
pub use shared_memory::{SharedMemory, WaitResult};
pub use store::{InterruptHandle, Store};
pub use trap::{Error, Trap, TrapKind};
pub use values::{ExternRef, Val};

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
