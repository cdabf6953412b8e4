//! The faaslet platform: everything above the embedding API that turns a
//! WebAssembly module into a serverless function.
//!
//! * [`Faaslet`] ([`faaslet`](mod@faaslet)): one function's sandbox, linked
//!   against WASI preview1 and the Faasm API, with chained calls on other
//!   threads and optional resource isolation around each call.
//! * [`FunctionRegistry`] ([`registry`]): the functions chained calls may
//!   name, each compiled once.
//! * [`scheduler`]: where chained calls run (the worker's places them on
//!   other hosts of its cluster).
//! * [`wasi`] and [`faasm`]: the glue that registers the engine-independent
//!   host interfaces of `faaslet-hostapi` with a [`Linker`](::faaslet::Linker).
//!
//! * [`at_input`]: Proto-Faaslets of unmodified programs (CPython),
//!   captured at their first read of input and resumed there.
//! * [`guest_log`]: the host log lines guests cause, rate-limited.
//! * [`code_cache`]: compiled code kept on disk, keyed by the wasm and the
//!   engine configuration, so nothing compiles twice.
//! * [`compile_child`]: compilation of modules written by others in a
//!   child process, within a time and a memory budget.
//! * [`worker`]: the worker behind `faaslet serve`: uploads, the executor,
//!   calls from Proto-Faaslets under deadlines, the HTTP API and metrics.
//!
//! ```
//! use faaslet::{Engine, Module};
//! use faaslet_platform::{Faaslet, FaasletConfig};
//!
//! let engine = Engine::default();
//! let module = Module::new(&engine, r#"(module
//!   (import "env" "__faasm_write_output" (func $out (param i32 i32)))
//!   (memory (export "memory") 1)
//!   (data (i32.const 0) "hello")
//!   (func (export "main") (result i32)
//!     (call $out (i32.const 0) (i32.const 5))
//!     (i32.const 0)))"#).unwrap();
//! let mut faaslet = Faaslet::new(&engine, &module, FaasletConfig::new("hello")).unwrap();
//! let out = faaslet.call(b"").unwrap();
//! assert_eq!(out.output, b"hello");
//! assert_eq!(out.return_code, 0);
//! ```

pub mod at_input;
pub mod code_cache;
pub mod compile_child;
pub mod error;
pub mod executor;
pub mod faaslet;
pub mod faasm;
pub mod guest_log;
pub mod registry;
pub mod scheduler;
pub mod wasi;
pub mod worker;

pub use error::FaasletError;
pub use faaslet::{
    chained_calls_started, CallOutput, Faaslet, FaasletConfig, FaasletData, FaasletIsolation,
    EPOCH_TICK, FAILED_CALL,
};
pub use faaslet_hostapi::wasi::{MountMode, Output};
pub use faaslet_state::{LocalStateStore, StateStore, StateValue};
pub use registry::{valid_function_name, FunctionRegistry};
