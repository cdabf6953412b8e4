//! Issue 13 (hardening): configurations that could break the sandbox are
//! refused; the signal handler refuses faults at foreign addresses; per-store
//! limits stop hostile modules within seconds and bounded memory.

use faaslet::{
    Bounds, Config, ConfigError, Engine, Error, Instance, Limit, LimitError, Module, Store,
    StoreLimits, TrapKind, Val,
};
use std::time::{Duration, Instant};

fn config_error(config: Config) -> ConfigError {
    match Engine::new(&config) {
        Err(Error::Config(e)) => e,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn engine_new_refuses_sizes_that_break_the_sandbox() {
    // A guard so large that 4 GiB + guard wraps: the JIT would drop every
    // bounds check while the reservation came out tiny.
    let wrap = u64::MAX - (4 << 30) + 1;
    for guard_size in [wrap, u64::MAX, (8 << 30) + 4096] {
        assert!(
            matches!(
                config_error(Config {
                    bounds: Bounds::GuardPages { guard_size },
                    ..Config::default()
                }),
                ConfigError::GuardTooLarge { .. }
            ),
            "guard {guard_size:#x}"
        );
    }
    assert!(matches!(
        config_error(Config {
            bounds: Bounds::GuardPages { guard_size: 12345 },
            ..Config::default()
        }),
        ConfigError::GuardUnaligned { .. }
    ));
    for cap in [(4u64 << 30) + 65536, 100_000, u64::MAX] {
        let e = config_error(Config {
            bounds: Bounds::Explicit,
            explicit_reservation_cap: cap,
            ..Config::default()
        });
        assert_eq!(e, ConfigError::ReservationCap { cap });
        assert!(e.to_string().contains("explicit_reservation_cap"), "{e}");
    }
    assert!(matches!(
        config_error(Config {
            max_table_elements: 1 << 40,
            ..Config::default()
        }),
        ConfigError::TableElements { .. }
    ));
    for max_wasm_stack in [0, 4096, 2 << 30] {
        assert!(matches!(
            config_error(Config {
                max_wasm_stack,
                ..Config::default()
            }),
            ConfigError::WasmStack { .. }
        ));
    }
    let e = config_error(Config {
        store_limits: StoreLimits {
            memory_bytes: u64::MAX,
            ..StoreLimits::default()
        },
        ..Config::default()
    });
    assert!(e.to_string().contains("memory_bytes"), "{e}");

    // What is accepted: the defaults, the largest guard, no guard at all
    // (every access then checked), a 4 GiB explicit cap.
    for config in [
        Config::default(),
        Config {
            bounds: Bounds::GuardPages {
                guard_size: faaslet::MAX_GUARD_SIZE,
            },
            ..Config::default()
        },
        Config {
            bounds: Bounds::GuardPages { guard_size: 0 },
            ..Config::default()
        },
        Config {
            bounds: Bounds::Explicit,
            explicit_reservation_cap: 4 << 30,
            ..Config::default()
        },
    ] {
        let engine = Engine::new(&config).unwrap();
        let module = Module::new(
            &engine,
            r#"(module (memory 1) (func (export "far") (param i32) (result i32)
                 local.get 0 i32.load offset=4294967295))"#,
        )
        .unwrap();
        let mut store = Store::new(&engine, ());
        let inst = Instance::new(&mut store, &module, &[]).unwrap();
        let far = inst
            .get_typed_func::<i32, i32, _>(&mut store, "far")
            .unwrap();
        assert_eq!(
            far.call(&mut store, -1).unwrap_err().kind,
            TrapKind::MemoryOutOfBounds,
            "{config:?}"
        );
    }
}

#[test]
fn explicit_cap_bounds_the_declared_minimum() {
    let engine = Engine::new(&Config {
        bounds: Bounds::Explicit,
        explicit_reservation_cap: 16 << 20,
        store_limits: StoreLimits {
            memory_bytes: 4 << 30,
            ..StoreLimits::default()
        },
        ..Config::default()
    })
    .unwrap();
    // 300 pages = 18.75 MiB > 16 MiB: refused, not silently reserved.
    let module = Module::new(&engine, "(module (memory 300))").unwrap();
    let mut store = Store::new(&engine, ());
    let e = Instance::new(&mut store, &module, &[]).unwrap_err();
    assert!(e.to_string().contains("explicit_reservation_cap"), "{e}");
    let module = Module::new(&engine, "(module (memory 256))").unwrap();
    Instance::new(&mut store, &module, &[]).unwrap();
}

/// Forks; the child runs `f` with its stderr captured. Returns how the
/// child ended (`Ok(exit code)` or `Err(signal)`) and its stderr.
fn in_child_stderr(f: impl FnOnce()) -> (Result<i32, i32>, String) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors; fork in a test process:
    // the child only runs `f` (everything it needs was built before the
    // fork) and leaves with `_exit`; the parent reads the pipe and waits.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::close(fds[0]);
            libc::dup2(fds[1], 2);
            f();
            libc::_exit(0);
        }
        libc::close(fds[1]);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        libc::close(fds[0]);
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        let how = if libc::WIFSIGNALED(status) {
            Err(libc::WTERMSIG(status))
        } else {
            Ok(libc::WEXITSTATUS(status))
        };
        (how, String::from_utf8_lossy(&out).into_owned())
    }
}

/// Generated code faulting at a trap site at an address outside the
/// store's reservations is an engine crash, not a trap. The test hook makes
/// the store forget its reservations, so an ordinary out-of-bounds access
/// into the guard looks exactly like a JIT bug touching a foreign address.
#[test]
fn fault_at_a_foreign_address_is_an_engine_crash() {
    let engine = Engine::default();
    let module = Module::new(
        &engine,
        r#"(module (memory 1) (func (export "load") (param i32) (result i32)
             local.get 0 i32.load))"#,
    )
    .unwrap();
    let mut store = Store::new(&engine, ());
    let inst = Instance::new(&mut store, &module, &[]).unwrap();
    let load = inst
        .get_typed_func::<i32, i32, _>(&mut store, "load")
        .unwrap();
    // With its reservations known: a clean trap, and the store goes on.
    let addr = 3 << 20;
    assert_eq!(
        load.call(&mut store, addr).unwrap_err().kind,
        TrapKind::MemoryOutOfBounds
    );
    assert_eq!(load.call(&mut store, 0).unwrap(), 0);

    store.forget_fault_regions_for_test();
    let (how, stderr) = in_child_stderr(|| {
        let r = load.call(&mut store, addr);
        eprintln!("returned: {r:?}");
    });
    assert_eq!(how, Err(libc::SIGSEGV), "stderr: {stderr}");
    assert!(
        stderr.contains("engine crash: SIGSEGV at trap site pc 0x")
            && stderr.contains("outside the running store's memory"),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("returned"), "stderr: {stderr}");
}

fn limit_error(e: Error) -> LimitError {
    match e {
        Error::Limit(l) => l,
        other => panic!("expected a limit error, got {other:?}"),
    }
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// 641 bytes asking for 8 GB: 100 tables of 10,000,000 elements each.
#[test]
fn hundred_huge_tables_fail_at_instantiation_before_allocating() {
    let engine = Engine::default();
    let mut wat = String::from("(module");
    for _ in 0..100 {
        wat.push_str(" (table 10000000 funcref)");
    }
    wat.push(')');
    let module = Module::new(&engine, &wat).unwrap();
    let mut store = Store::new(&engine, ());
    let t = Instant::now();
    let before = rss();
    let e = limit_error(Instance::new(&mut store, &module, &[]).unwrap_err());
    assert_eq!(e.limit, Limit::TableElements);
    assert_eq!((e.requested, e.max), (1_000_000_000, 10_000_000));
    assert!(e.to_string().contains("table_elements"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(rss() < before + (64 << 20), "nothing of it was allocated");

    // One table of 10,000,000 fits the default limit; it is zeroed lazily,
    // so it costs address space rather than 80 MB of resident memory.
    let one = Module::new(&engine, "(module (table 10000000 funcref))").unwrap();
    let mut store = Store::new(&engine, ());
    let before = rss();
    Instance::new(&mut store, &one, &[]).unwrap();
    let grew = rss().saturating_sub(before);
    assert!(
        grew < 40 << 20,
        "a 10M-element table made RSS grow by {grew} bytes"
    );
}

/// The same 8 GB asked for at run time, by `table.grow`.
#[test]
fn table_grow_past_the_store_limit_returns_minus_one() {
    let engine = Engine::default();
    let mut wat = String::from("(module");
    wat.push_str(r#" (table (export "t0") 0 funcref)"#);
    for _ in 1..100 {
        wat.push_str(" (table 0 funcref)");
    }
    wat.push_str(r#" (func (export "grow_all") (result i32) (local $failed i32)"#);
    for i in 0..100 {
        wat.push_str(&format!(
            " ref.null func i32.const 10000000 table.grow {i} i32.const -1 i32.eq local.get $failed i32.add local.set $failed"
        ));
    }
    wat.push_str(" local.get $failed))");
    let module = Module::new(&engine, &wat).unwrap();
    let mut store = Store::new(&engine, ());
    let inst = Instance::new(&mut store, &module, &[]).unwrap();
    let grow = inst
        .get_typed_func::<(), i32, _>(&mut store, "grow_all")
        .unwrap();
    let t = Instant::now();
    // The first table gets its 10,000,000; the 99 others are refused.
    assert_eq!(grow.call(&mut store, ()).unwrap(), 99);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Table::grow from the host names the limit.
    let table = inst.get_table(&mut store, "t0").unwrap();
    let e = limit_error(table.grow(&mut store, 1, Val::FuncRef(None)).unwrap_err());
    assert_eq!(
        (e.limit, e.requested, e.max),
        (Limit::TableElements, 10_000_001, 10_000_000)
    );
}

#[test]
fn memory_is_bounded_per_store() {
    let engine = Engine::default();
    let module = Module::new(
        &engine,
        r#"(module (memory (export "mem") 1)
             (func (export "grow") (param i32) (result i32) local.get 0 memory.grow)
             (func (export "fill") (param i32 i32) local.get 0 i32.const 7 local.get 1 memory.fill))"#,
    )
    .unwrap();
    let mut store = Store::new(&engine, ());
    let inst = Instance::new(&mut store, &module, &[]).unwrap();
    let grow = inst
        .get_typed_func::<i32, i32, _>(&mut store, "grow")
        .unwrap();
    let fill = inst
        .get_typed_func::<(i32, i32), (), _>(&mut store, "fill")
        .unwrap();
    // Default: 1 GiB per store = 16,384 pages, one already in use.
    assert_eq!(grow.call(&mut store, 16_384).unwrap(), -1);
    assert_eq!(grow.call(&mut store, 0xffff).unwrap(), -1);
    assert_eq!(grow.call(&mut store, 16_383).unwrap(), 1);
    assert_eq!(grow.call(&mut store, 1).unwrap(), -1);
    assert_eq!(store.memory_bytes(), 1 << 30);
    // memory.fill of "4 GiB" (0xffffffff bytes) traps at once.
    let t = Instant::now();
    let before = rss();
    assert_eq!(
        fill.call(&mut store, (0, -1)).unwrap_err().kind,
        TrapKind::MemoryOutOfBounds
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(rss() < before + (16 << 20));
    // Memory::grow from the host names the limit.
    let mem = inst.get_memory(&mut store, "mem").unwrap();
    let e = limit_error(mem.grow(&mut store, 1).unwrap_err());
    assert_eq!((e.limit, e.max), (Limit::MemoryBytes, 1 << 30));

    // A smaller limit for one store: instantiation over it fails, naming it.
    let mut small = Store::new(&engine, ());
    small.set_limits(StoreLimits {
        memory_bytes: 16 << 20,
        ..StoreLimits::default()
    });
    let big = Module::new(&engine, "(module (memory 257))").unwrap();
    let e = limit_error(Instance::new(&mut small, &big, &[]).unwrap_err());
    assert_eq!(e.limit, Limit::MemoryBytes);
    assert_eq!(e.requested, 257 << 16);
    let fits = Module::new(&engine, "(module (memory 256))").unwrap();
    Instance::new(&mut small, &fits, &[]).unwrap();
}

#[test]
fn counts_of_instances_tables_and_memories_are_bounded() {
    let engine = Engine::new(&Config {
        wasm_multi_memory: true,
        ..Config::default()
    })
    .unwrap();
    let limits = StoreLimits {
        instances: 3,
        tables: 4,
        memories: 2,
        ..StoreLimits::default()
    };
    let plain = Module::new(&engine, "(module)").unwrap();
    let mut store = Store::new(&engine, ());
    store.set_limits(limits);
    for _ in 0..3 {
        Instance::new(&mut store, &plain, &[]).unwrap();
    }
    let e = limit_error(Instance::new(&mut store, &plain, &[]).unwrap_err());
    assert_eq!((e.limit, e.requested, e.max), (Limit::Instances, 4, 3));

    let five_tables = Module::new(
        &engine,
        "(module (table 1 funcref) (table 1 funcref) (table 1 funcref) (table 1 funcref) (table 1 funcref))",
    )
    .unwrap();
    let mut store = Store::new(&engine, ());
    store.set_limits(limits);
    let e = limit_error(Instance::new(&mut store, &five_tables, &[]).unwrap_err());
    assert_eq!((e.limit, e.requested), (Limit::Tables, 5));

    let three_memories = Module::new(&engine, "(module (memory 1) (memory 1) (memory 1))").unwrap();
    let e = limit_error(Instance::new(&mut store, &three_memories, &[]).unwrap_err());
    assert_eq!((e.limit, e.requested), (Limit::Memories, 3));
}

/// Compiled code compares `call_indirect` signatures with the engine's
/// canonical type ids as immediates. An artefact made by one engine and
/// loaded by another (a worker restarting on its code cache) must not run
/// with ids the loading engine assigned differently: a function of type
/// `(i32) -> ()` called as `() -> i32` would be a type confusion. Small
/// types have the same ids everywhere, so their code loads; registered
/// types may not, and then the artefact is refused.
#[test]
fn cached_code_never_runs_with_another_engines_type_ids() {
    let confuse = |params: &str| {
        faaslet::wat_to_wasm(&format!(
            r#"(module
              (type $v_i (func (param {params}) (result i32)))
              (type $i_v (func (param i32 {params})))
              (table 1 funcref)
              (elem (i32.const 0) $f)
              (func $f (type $i_v))
              (func (export "confuse") (result i32)
                {args} (call_indirect (type $v_i) (i32.const 0))))"#,
            args = "i64.const 0 ".repeat(params.split_whitespace().count())
        ))
        .unwrap()
    };
    // Engine A sees other types first, so registered ids differ there.
    let a = Engine::default();
    let nine = "i64 i64 i64 i64 i64 i64 i64 i64 i64";
    let _keep = Module::new(&a, format!("(module (func (param {nine} i32)))")).unwrap();
    let b = Engine::default();
    // Small types: the same ids in both engines; the code loads and the
    // signature check still holds.
    let wasm = confuse("");
    let (_, artifact) = Module::from_binary_with_artifact(&a, &wasm).unwrap();
    let module = Module::from_artifact(&b, &wasm, &artifact.unwrap()).unwrap();
    let mut store = Store::new(&b, ());
    let inst = Instance::new(&mut store, &module, &[]).unwrap();
    let f = inst
        .get_typed_func::<(), i32, _>(&mut store, "confuse")
        .unwrap();
    match f.call(&mut store, ()) {
        Err(t) if t.kind == TrapKind::BadSignature => {}
        other => panic!("type confusion: call_indirect returned {other:?}"),
    }
    // Registered types, given other ids by B: refused.
    let wasm = confuse(nine);
    let (_, artifact) = Module::from_binary_with_artifact(&a, &wasm).unwrap();
    match Module::from_artifact(&b, &wasm, &artifact.unwrap()) {
        Err(faaslet::ArtifactError::TypeIds { .. }) => {}
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("loaded code compiled under other type ids"),
    }
}

/// The engine's type registry holds only types still declared by a live
/// module (small types need no entry at all): an upload server compiling
/// and dropping modules does not grow it.
#[test]
fn the_type_registry_does_not_grow_with_modules_compiled_and_dropped() {
    let engine = Engine::default();
    assert_eq!(engine.registered_types(), 0);
    let big = |n: usize, t: &str| {
        let params = vec![t; n].join(" ");
        format!(
            r#"(module (type (func (param {params}))) (type (func (param {params}))) (func (export "f") (type 0)))"#
        )
    };
    let small = Module::new(
        &engine,
        "(module (func (param i32 i64) (result f32) f32.const 0))",
    )
    .unwrap();
    assert_eq!(engine.registered_types(), 0, "small types are encoded");
    let a = Module::new(&engine, big(9, "i32")).unwrap();
    let b = Module::new(&engine, big(9, "i32")).unwrap();
    let c = Module::new(&engine, big(20, "f64")).unwrap();
    assert_eq!(engine.registered_types(), 2);
    drop((a, c));
    assert_eq!(engine.registered_types(), 1, "b still holds its type");
    // Instances keep their module (and so its types) alive.
    let mut store = Store::new(&engine, ());
    Instance::new(&mut store, &b, &[]).unwrap();
    drop(b);
    assert_eq!(engine.registered_types(), 1);
    drop(store);
    assert_eq!(engine.registered_types(), 0);
    for i in 0..1000 {
        let m = Module::new(&engine, big(9 + i % 50, "i64")).unwrap();
        let (m2, art) = Module::from_binary_with_artifact(
            &engine,
            &faaslet::wat_to_wasm(&big(9 + i % 50, "i64")).unwrap(),
        )
        .unwrap();
        drop((m, m2, art));
    }
    // A module that fails to compile gives its references back too.
    assert!(Module::new(
        &engine,
        format!(
            "(module (type (func (param {}))) (func unreachable i32.add))",
            ["i32"; 12].join(" ")
        )
    )
    .is_err());
    assert_eq!(engine.registered_types(), 0);
    drop(small);
}

/// A module declaring the same `() -> ()` type 1,000,000 times (3 MB)
/// gets one trampoline, not a million.
#[test]
fn a_million_identical_types_compile_quickly() {
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    let n = 1_000_000u32;
    let mut section = Vec::new();
    leb(&mut section, n);
    for _ in 0..n {
        section.extend_from_slice(&[0x60, 0, 0]);
    }
    wasm.push(1);
    leb(&mut wasm, section.len() as u32);
    wasm.extend_from_slice(&section);
    assert!(wasm.len() > 3_000_000);
    let engine = Engine::default();
    let t = Instant::now();
    let module = Module::new(&engine, &wasm).unwrap();
    let took = t.elapsed();
    assert_eq!(module.info().types.len(), 1_000_000);
    assert!(took < Duration::from_secs(10), "{took:?}");
}

fn leb(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A compile budget stops compilation between functions: 100,000
/// functions within a millisecond fail naming the budget; within a minute
/// they compile.
#[test]
fn compilation_stops_at_its_budget() {
    let n = 100_000u32;
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    let mut section = |id: u8, body: Vec<u8>| {
        wasm.push(id);
        leb(&mut wasm, body.len() as u32);
        wasm.extend_from_slice(&body);
    };
    section(1, vec![1, 0x60, 0, 0]);
    let mut funcs = Vec::new();
    leb(&mut funcs, n);
    funcs.extend(std::iter::repeat_n(0u8, n as usize));
    section(3, funcs);
    let mut code = Vec::new();
    leb(&mut code, n);
    for _ in 0..n {
        code.extend_from_slice(&[2, 0, 0x0b]);
    }
    section(10, code);
    let engine = Engine::default();
    let t = Instant::now();
    let e = match Module::from_binary_with_artifact_within(&engine, &wasm, Duration::from_millis(1))
    {
        Err(Error::Compile(e)) => e,
        other => panic!("expected a compile error, got {:?}", other.map(|_| ())),
    };
    assert_eq!(e.kind, faaslet::CompileErrorKind::Budget);
    assert!(e.to_string().contains("budget of 1ms"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let (module, _) =
        Module::from_binary_with_artifact_within(&engine, &wasm, Duration::from_secs(60)).unwrap();
    assert_eq!(module.info().funcs.len(), n as usize);
}

/// WebAssembly GC: the heap counts against the store's `memory_bytes`
/// and cannot grow past it; an allocation over the limit (one huge array,
/// or many small ones kept alive) traps with `GcHeapExhausted` without the
/// host allocating it, and the store stays usable. A GC reference of
/// another store is refused before it reaches wasm code.
#[test]
fn gc_heap_is_bounded_per_store() {
    let engine = Engine::new(&Config {
        wasm_gc: true,
        ..Config::default()
    })
    .unwrap();
    let module = Module::new(
        &engine,
        r#"(module
          (type $bytes (array (mut i8)))
          (type $keep (array (mut (ref null $bytes))))
          (global $kept (mut (ref null $keep)) (ref.null $keep))
          (func (export "huge") (result i32)
            (array.len (array.new_default $bytes (i32.const -1))))
          (func (export "fill_up")
            (local $i i32)
            (global.set $kept (array.new_default $keep (i32.const 100000)))
            (loop $l
              (array.set $keep (global.get $kept) (local.get $i)
                (array.new_default $bytes (i32.const 65536)))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $l)))
          (func (export "small") (result i32)
            (array.len (array.new_default $bytes (i32.const 16))))
          (func (export "id") (param anyref) (result anyref) (local.get 0)))"#,
    )
    .unwrap();
    let mut store = Store::new(&engine, ());
    store.set_limits(StoreLimits {
        memory_bytes: 16 << 20,
        ..store.limits()
    });
    let inst = Instance::new(&mut store, &module, &[]).unwrap();
    let huge = inst
        .get_typed_func::<(), i32, _>(&mut store, "huge")
        .unwrap();
    let before = rss();
    assert_eq!(
        huge.call(&mut store, ()).unwrap_err().kind,
        TrapKind::GcHeapExhausted
    );
    let fill = inst
        .get_typed_func::<(), (), _>(&mut store, "fill_up")
        .unwrap();
    let t = Instant::now();
    assert_eq!(
        fill.call(&mut store, ()).unwrap_err().kind,
        TrapKind::GcHeapExhausted
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(store.memory_bytes() <= 16 << 20, "{}", store.memory_bytes());
    assert!(store.memory_bytes() > 15 << 20, "{}", store.memory_bytes());
    assert!(rss().saturating_sub(before) < 64 << 20);
    // Nothing left to allocate, but the store still runs code.
    let small = inst
        .get_typed_func::<(), i32, _>(&mut store, "small")
        .unwrap();
    match small.call(&mut store, ()) {
        Ok(n) => assert_eq!(n, 16),
        Err(t) => assert_eq!(t.kind, TrapKind::GcHeapExhausted),
    }

    // A reference from another store is refused at the boundary.
    let mut other = Store::new(&engine, ());
    let foreign = faaslet::AnyRef::i31(&other, 5);
    let id = inst.get_func(&mut store, "id").unwrap();
    let mut out = [Val::AnyRef(None)];
    assert!(id
        .call(&mut store, &[Val::AnyRef(Some(foreign))], &mut out)
        .is_err());
    let mine = faaslet::AnyRef::i31(&store, -3);
    id.call(&mut store, &[Val::AnyRef(Some(mine))], &mut out)
        .unwrap();
    match &out[0] {
        Val::AnyRef(Some(r)) => assert_eq!(r.kind(&store), Some(faaslet::AnyKind::I31(-3))),
        v => panic!("{v:?}"),
    }
    let _ = &mut other;
}
