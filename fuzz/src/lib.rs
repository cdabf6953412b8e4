//! Shared code for faaslet's cargo-fuzz targets.
//!
//! * [`smith_config`]: a `wasm-smith` configuration that generates exactly
//!   the WebAssembly features faaslet accepts (mirrors
//!   `faaslet_jit::environ::features()`).
//! * [`differential`]: runs a module in faaslet and in wasmi and compares
//!   every export's results and traps, plus final memories and globals.
//! * [`sandbox`]: a tiny program of loads, stores, grows and bulk ops, its
//!   wasm encoding, a Rust model of linear memory, and the canary checks.
//! * [`hostcalls`]: every WASI and Faasm host call with arbitrary
//!   arguments, through the platform's linking glue.
//!
//! ```no_run
//! let cfg = faaslet_fuzz::smith_config(None);
//! assert!(cfg.simd_enabled && !cfg.gc_enabled);
//! ```
#![warn(missing_docs)]

pub mod differential;
pub mod hostcalls;
pub mod sandbox;

use faaslet::{Bounds, Config, Engine};
use std::sync::OnceLock;
use std::time::Duration;

/// How often the background thread advances every fuzz engine's epoch.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Epoch ticks a single call may run before it is interrupted (~2 s): a
/// backstop against hangs, far below libFuzzer's `-timeout`.
pub const DEADLINE_TICKS: u64 = 200;

/// The two shared engines (guard pages, explicit checks), created once per
/// process with a ticker thread advancing their epochs.
pub fn engines() -> &'static [Engine; 2] {
    static ENGINES: OnceLock<[Engine; 2]> = OnceLock::new();
    ENGINES.get_or_init(|| {
        let guard = Engine::new(&Config::default()).expect("guard-page engine");
        let explicit = Engine::new(&Config {
            bounds: Bounds::Explicit,
            ..Config::default()
        })
        .expect("explicit-bounds engine");
        let (g, e) = (guard.clone(), explicit.clone());
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                g.increment_epoch();
                e.increment_epoch();
            })
            .expect("spawn epoch ticker");
        [guard, explicit]
    })
}

/// The `wasm-smith` configuration for faaslet's feature set.
///
/// faaslet accepts (see `jit/src/environ.rs::features()`, which at the time
/// of writing is `WASM2 | EXTENDED_CONST | TAIL_CALL | THREADS`, plus the
/// WebAssembly 3.0 features `Config` switches on by default):
/// WebAssembly 2.0 (mutable globals, sign extension, saturating
/// float-to-int, multi-value, bulk memory, reference types with multiple
/// tables, SIMD), extended constant expressions, tail calls, threads,
/// relaxed SIMD and memory64. Everything but threads is enabled here. Threads (shared
/// memories, atomics) stay off because wasmi, the reference this
/// configuration feeds, cannot run them. Relaxed SIMD is compared exactly:
/// faaslet's lowering picks, for every relaxed operator, the result wasmi
/// computes (see `jit/src/simd.rs`). Off: typed function references
/// (wasmi has none), and as in faaslet: GC, exceptions, multi-memory,
/// custom page sizes, wide arithmetic, compact imports.
///
/// The generated modules are made deterministic for differential testing:
/// NaNs are canonicalised (scalar and SIMD), there are no imports,
/// everything is exported, memories and tables have small declared maxima
/// (so growth stays cheap in both engines). `max_memory_pages` overrides the
/// memory cap (default 16).
pub fn smith_config(max_memory_pages: Option<u64>) -> wasm_smith::Config {
    wasm_smith::Config {
        // --- features: keep in sync with faaslet_jit::environ::features() ---
        bulk_memory_enabled: true,
        reference_types_enabled: true,
        multi_value_enabled: true,
        saturating_float_to_int_enabled: true,
        sign_extension_ops_enabled: true,
        extended_const_enabled: true,
        simd_enabled: true,
        relaxed_simd_enabled: true,
        tail_call_enabled: true,
        // Not in wasmi: see above.
        threads_enabled: false,
        shared_everything_threads_enabled: false,
        gc_enabled: false,
        exceptions_enabled: false,
        memory64_enabled: true,
        custom_page_sizes_enabled: false,
        wide_arithmetic_enabled: false,
        compact_imports_enabled: false,
        custom_descriptors_enabled: false,
        acquire_release_atomics_enabled: false,
        multibyte_array_access_enabled: false,
        max_memories: 1,
        max_tables: 4,
        allow_floats: true,
        // --- determinism and cost ---
        canonicalize_nans: true,
        max_imports: 0,
        export_everything: true,
        memory_max_size_required: true,
        max_memory32_bytes: max_memory_pages.unwrap_or(16) * 65536,
        max_memory64_bytes: u128::from(max_memory_pages.unwrap_or(16) * 65536),
        table_max_size_required: true,
        max_table_elements: 1000,
        max_funcs: 20,
        max_instructions: 200,
        max_data_segments: 10,
        max_element_segments: 10,
        max_elements: 50,
        max_globals: 20,
        ..wasm_smith::Config::default()
    }
}
