//! Inputs found by the cargo-fuzz targets in `fuzz/`, kept as tests.
//!
//! Most pin down the cases the fuzzers flagged while their harnesses were
//! being tuned, so the engine's behaviour there stays as the spec (and
//! wasmi) require; the last two were engine bugs of the WebAssembly 3.0
//! work (issue 16).

use faaslet::{Bounds, Config, Engine, Error, Instance, Module, Store, TrapKind, Val};

fn engines() -> [Engine; 2] {
    [
        Engine::default(),
        Engine::new(&Config {
            bounds: Bounds::Explicit,
            ..Config::default()
        })
        .unwrap(),
    ]
}

/// differential: an active element segment at an offset near `u32::MAX`
/// (wasm-smith input; wasmi reports it as an instantiation error rather
/// than a trap code). faaslet must trap with `TableOutOfBounds` at
/// instantiation, not wrap the offset around or crash.
#[test]
fn elem_segment_at_huge_offset_traps_table_out_of_bounds() {
    let wat = r#"(module
        (table 0 10 funcref)
        (func $f)
        (elem (i32.const -64373) func $f))"#;
    for engine in engines() {
        let module = Module::new(&engine, wat).unwrap();
        let mut store = Store::new(&engine, ());
        let err = Instance::new(&mut store, &module, &[]).unwrap_err();
        match err {
            Error::Trap(t) => assert_eq!(t.kind, TrapKind::TableOutOfBounds),
            other => panic!("expected a trap, got {other}"),
        }
    }
}

/// sandbox: accesses whose address plus static offset crosses the end of
/// memory, or wraps past `u32::MAX` if computed in 32 bits, trap in both
/// bounds modes; a zero-page memory traps on every access; and the byte
/// just below the end is still accessible.
#[test]
fn accesses_across_the_end_and_near_u32_max_trap() {
    let wat = r#"(module
        (memory (export "mem") 1 4)
        (func (export "load_at") (param i32) (result i64)
            local.get 0
            i64.load offset=4)
        (func (export "store_at") (param i32)
            local.get 0
            i32.const -1
            i32.store8 offset=65535)
        (func (export "grow") (param i32) (result i32)
            local.get 0
            memory.grow))"#;
    for engine in engines() {
        let module = Module::new(&engine, wat).unwrap();
        let mut store = Store::new(&engine, ());
        let inst = Instance::new(&mut store, &module, &[]).unwrap();
        let load = inst.get_func(&mut store, "load_at").unwrap();
        let store8 = inst.get_func(&mut store, "store_at").unwrap();
        let mut out = [Val::I64(0)];
        // 65524 + 4 + 8 = 65536: the last 8 bytes, in bounds.
        load.call(&mut store, &[Val::I32(65524)], &mut out).unwrap();
        // One further crosses the end.
        for addr in [65525, -4, -5, -1, i32::MIN] {
            let e = load
                .call(&mut store, &[Val::I32(addr)], &mut out)
                .unwrap_err();
            assert_eq!(
                e.as_trap().map(|t| t.kind),
                Some(TrapKind::MemoryOutOfBounds),
                "{addr}"
            );
        }
        // offset 65535 + 0 is the last byte; + 1 is out.
        store8.call(&mut store, &[Val::I32(0)], &mut []).unwrap();
        let e = store8
            .call(&mut store, &[Val::I32(1)], &mut [])
            .unwrap_err();
        assert_eq!(
            e.as_trap().map(|t| t.kind),
            Some(TrapKind::MemoryOutOfBounds)
        );
        let mem = inst.get_memory(&mut store, "mem").unwrap();
        assert_eq!(mem.data(&store).unwrap()[65535], 0xff);
        // After growing, the same access is in bounds; a huge grow fails.
        let grow = inst.get_func(&mut store, "grow").unwrap();
        let mut old = [Val::I32(0)];
        grow.call(&mut store, &[Val::I32(1)], &mut old).unwrap();
        assert_eq!(old[0].i32(), Some(1));
        store8.call(&mut store, &[Val::I32(1)], &mut []).unwrap();
        grow.call(&mut store, &[Val::I32(65537)], &mut old).unwrap();
        assert_eq!(old[0].i32(), Some(-1));
    }
}

/// sandbox: a memory of zero pages with no maximum (in explicit mode its
/// reservation is mapped accessible) still traps on every access.
#[test]
fn zero_page_memory_traps_on_every_access() {
    let wat = r#"(module
        (memory 0)
        (func (export "load_at") (param i32) (result i32)
            local.get 0
            i32.load8_u))"#;
    for engine in engines() {
        let module = Module::new(&engine, wat).unwrap();
        let mut store = Store::new(&engine, ());
        let inst = Instance::new(&mut store, &module, &[]).unwrap();
        let load = inst.get_func(&mut store, "load_at").unwrap();
        let mut out = [Val::I32(0)];
        for addr in [0, 1, 4095, 65535, -1] {
            let e = load
                .call(&mut store, &[Val::I32(addr)], &mut out)
                .unwrap_err();
            assert_eq!(
                e.as_trap().map(|t| t.kind),
                Some(TrapKind::MemoryOutOfBounds),
                "{addr}"
            );
        }
    }
}

/// The engines of [`engines`] with WebAssembly GC off.
fn engines_without_gc() -> [Engine; 2] {
    [Config::default().bounds, Bounds::Explicit].map(|bounds| {
        Engine::new(&Config {
            bounds,
            wasm_gc: false,
            ..Config::default()
        })
        .unwrap()
    })
}

/// wasm-smith with GC on (a local harness over every WebAssembly 3.0
/// feature), before faaslet had GC: a function using a GC instruction,
/// which validation accepts and faaslet (with `Config::wasm_gc` off)
/// refuses as unsupported, left the shared Cranelift builder context
/// half-used, and translating the next function panicked (`assertion
/// failed: func_ctx.is_empty()`). It must be a typed error; with GC on,
/// the module compiles.
#[test]
fn unsupported_operator_mid_module_is_an_error_not_a_panic() {
    let wat = r#"(module
        (func (drop (ref.i31 (i32.const 1))))
        (func (result i32) (i32.const 2))
        (func (result i32) (i32.const 3)))"#;
    for engine in engines() {
        Module::new(&engine, wat).unwrap();
    }
    for engine in engines_without_gc() {
        match Module::new(&engine, wat) {
            Err(Error::Compile(e)) => assert!(e.to_string().contains("not supported"), "{e}"),
            other => panic!("expected an unsupported-feature error, got {other:?}"),
        }
    }
}

/// wasm-smith with GC on: a table initialiser using a GC constant operator
/// was reported as an invalid module; it is a valid one faaslet refuses as
/// unsupported with `Config::wasm_gc` off, and runs with it on.
#[test]
fn gc_constant_expression_is_unsupported_not_invalid() {
    let wat = r#"(module
        (table 1 externref (extern.convert_any (ref.i31 (i32.const 1)))))"#;
    for engine in engines() {
        let module = Module::new(&engine, wat).unwrap();
        let mut store = faaslet::Store::new(&engine, ());
        faaslet::Instance::new(&mut store, &module, &[]).unwrap();
    }
    for engine in engines_without_gc() {
        match Module::new(&engine, wat) {
            Err(Error::Compile(e)) => {
                assert_eq!(e.kind, faaslet::CompileErrorKind::Unsupported, "{e}");
                assert!(e.to_string().contains("constant expression"), "{e}");
            }
            other => panic!("expected an unsupported-feature error, got {other:?}"),
        }
    }
}
