//! The library half of the `faaslet` command-line tool: what the binary's
//! subcommands are made of, kept out of the embedding API so that an
//! embedder who links `faaslet` pulls in neither a spec-test runner nor a
//! benchmark harness.
//!
//! * [`wast`](mod@wast): a runner for `.wast` spec scripts (`faaslet wast`), also used
//!   by the spec-suite tests.
//! * [`serve`](mod@serve) and [`client`]: `faaslet serve`, `upload`,
//!   `invoke` (the worker's HTTP API and a minimal client of it).
//! * [`bench_serve`]: `faaslet bench serve` (wrk against a worker and a
//!   bare server on the same HTTP stack).
//! * [`bench_state`]: `faaslet bench state` (state mapped into N Faaslets
//!   against copies; the tier against plain Redis GET/SET).
//! * [`bench_cluster`]: `faaslet bench cluster` (the cost of a hop between
//!   workers of a cluster).
//! * [`bench_python`]: `faaslet bench cold-start --python WASM` (a Python
//!   call from its Proto-Faaslet against a cold start and native Python).
//! * [`bench_js`]: `faaslet bench cold-start --js WASM` (the same for
//!   JavaScript on QuickJS, against native `node -e ''`).
//! * [`bench_cache`]: `faaslet bench code-cache` (compiling against
//!   loading cached code; worker upload and restart with and without it).
//! * [`exit`]: what `faaslet run`'s exit status means (guest codes,
//!   traps).
//! * [`bench`](mod@bench): the cold-start measurements (`faaslet bench cold-start`),
//!   also used by the `cold_start` criterion bench.
//!
//! ```
//! use faaslet_cli::wast::WastRunner;
//!
//! let mut runner = WastRunner::new(faaslet::Engine::default());
//! let report = runner.run_file("t.wast", r#"(module (func (export "one") (result i32) i32.const 1))
//!     (assert_return (invoke "one") (i32.const 1))"#);
//! assert_eq!((report.passed, report.failed), (1, 0));
//! ```

pub mod bench;
pub mod bench_cache;
pub mod bench_cluster;
pub mod bench_js;
pub mod bench_python;
pub mod bench_serve;
pub mod bench_state;
pub mod client;
pub mod exit;
pub mod serve;
pub mod wast;
