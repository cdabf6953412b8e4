//! Trap, interruption and isolation paths of the engine, in both bounds modes.

use faaslet::{
    Bounds, Config, Engine, Error, FuncType, Instance, Linker, Module, Store, Trap, TrapKind, Val,
    ValType,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TRAPS_WAT: &str = r#"
(module
  (memory (export "mem") 1 4)
  (table 4 funcref)
  (type $v_i (func (result i32)))
  (type $i_i (func (param i32) (result i32)))
  (func $seven (type $v_i) i32.const 7)
  (elem (i32.const 0) $seven)
  (func (export "oob_load") (param i32) (result i32) local.get 0 i32.load)
  (func (export "oob_store_far") (param i32) local.get 0 i32.const 1 i32.store offset=4000000000)
  (func (export "unreachable") unreachable)
  (func (export "div") (param i32 i32) (result i32) local.get 0 local.get 1 i32.div_s)
  (func (export "trunc") (param f32) (result i32) local.get 0 i32.trunc_f32_s)
  (func (export "call_indirect") (param i32) (result i32) local.get 0 call_indirect (type $v_i))
  (func (export "call_indirect_badsig") (param i32) (result i32) i32.const 1 local.get 0 call_indirect (type $i_i))
  (func $recurse (export "recurse") (param i32) (result i32) local.get 0 i32.const 1 i32.add call $recurse)
  (func (export "spin") (loop $l br $l))
  (func (export "grow") (param i32) (result i32) local.get 0 memory.grow)
  (func (export "load8") (param i32) (result i32) local.get 0 i32.load8_u)
)
"#;

fn engines() -> Vec<(&'static str, Engine)> {
    vec![
        ("guard", Engine::new(&Config::default()).unwrap()),
        (
            "explicit",
            Engine::new(&Config {
                bounds: Bounds::Explicit,
                ..Config::default()
            })
            .unwrap(),
        ),
    ]
}

fn setup(engine: &Engine) -> (Store<()>, Instance) {
    let module = Module::new(engine, TRAPS_WAT).unwrap();
    let mut store = Store::new(engine, ());
    let instance = Instance::new(&mut store, &module, &[]).unwrap();
    (store, instance)
}

fn call(
    store: &mut Store<()>,
    inst: Instance,
    name: &str,
    args: &[Val],
) -> Result<Vec<Val>, Error> {
    let f = inst.get_func(store, name).unwrap();
    let mut results = vec![Val::I32(0); f.ty(store).results.len()];
    f.call(store, args, &mut results)?;
    Ok(results)
}

fn trap_kind(r: Result<Vec<Val>, Error>) -> TrapKind {
    match r {
        Err(Error::Trap(t)) => t.kind,
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn every_trap_kind_is_reported_and_the_store_survives() {
    for (mode, engine) in engines() {
        let (mut store, inst) = setup(&engine);
        let s = &mut store;
        let cases: Vec<(&str, Vec<Val>, TrapKind)> = vec![
            (
                "oob_load",
                vec![Val::I32(65536)],
                TrapKind::MemoryOutOfBounds,
            ),
            ("oob_load", vec![Val::I32(-1)], TrapKind::MemoryOutOfBounds),
            (
                "oob_store_far",
                vec![Val::I32(0)],
                TrapKind::MemoryOutOfBounds,
            ),
            ("unreachable", vec![], TrapKind::Unreachable),
            (
                "div",
                vec![Val::I32(1), Val::I32(0)],
                TrapKind::IntegerDivisionByZero,
            ),
            (
                "div",
                vec![Val::I32(i32::MIN), Val::I32(-1)],
                TrapKind::IntegerOverflow,
            ),
            (
                "trunc",
                vec![Val::F32(f32::NAN.to_bits())],
                TrapKind::BadConversionToInteger,
            ),
            (
                "trunc",
                vec![Val::F32(3e9f32.to_bits())],
                TrapKind::IntegerOverflow,
            ),
            (
                "call_indirect",
                vec![Val::I32(1)],
                TrapKind::IndirectCallToNull,
            ),
            (
                "call_indirect",
                vec![Val::I32(100)],
                TrapKind::UndefinedElement,
            ),
            (
                "call_indirect_badsig",
                vec![Val::I32(0)],
                TrapKind::BadSignature,
            ),
            ("recurse", vec![Val::I32(0)], TrapKind::StackOverflow),
        ];
        for (name, args, kind) in cases {
            assert_eq!(
                trap_kind(call(s, inst, name, &args)),
                kind,
                "{mode}: {name}({args:?})"
            );
            // The next call works.
            assert_eq!(
                call(s, inst, "call_indirect", &[Val::I32(0)]).unwrap()[0].i32(),
                Some(7),
                "{mode}"
            );
        }
    }
}

#[test]
fn traps_name_the_function_and_offset() {
    let engine = Engine::default();
    let module = Module::new(&engine, "(module (func $f (export \"f\") nop unreachable))").unwrap();
    let mut store = Store::new(&engine, ());
    let inst = Instance::new(&mut store, &module, &[]).unwrap();
    let f = inst.get_typed_func::<(), (), _>(&mut store, "f").unwrap();
    let trap = f.call(&mut store, ()).unwrap_err();
    assert_eq!(trap.kind, TrapKind::Unreachable);
    assert_eq!(trap.func_index, Some(0));
    assert_eq!(trap.func_name.as_deref(), Some("f"));
    assert!(trap.wasm_offset.is_some(), "{trap}");
}

#[test]
fn memory_grows_in_place_within_its_maximum() {
    for (mode, engine) in engines() {
        let (mut store, inst) = setup(&engine);
        let mem = inst.get_memory(&mut store, "mem").unwrap();
        let base = mem.data_ptr(&store);
        assert_eq!(
            call(&mut store, inst, "grow", &[Val::I32(1)]).unwrap()[0].i32(),
            Some(1),
            "{mode}"
        );
        assert_eq!(mem.data_ptr(&store), base, "{mode}: memory moved");
        assert_eq!(mem.size(&store), 2);
        // The new page is usable, the one after it is not.
        assert_eq!(
            call(&mut store, inst, "load8", &[Val::I32(2 * 65536 - 1)]).unwrap()[0].i32(),
            Some(0)
        );
        assert_eq!(
            trap_kind(call(&mut store, inst, "load8", &[Val::I32(2 * 65536)])),
            TrapKind::MemoryOutOfBounds
        );
        // Beyond the maximum of 4 pages growth fails with -1.
        assert_eq!(
            call(&mut store, inst, "grow", &[Val::I32(3)]).unwrap()[0].i32(),
            Some(-1),
            "{mode}"
        );
        assert_eq!(
            call(&mut store, inst, "grow", &[Val::I32(2)]).unwrap()[0].i32(),
            Some(2),
            "{mode}"
        );
    }
}

#[test]
fn host_errors_and_panics_cross_back_cleanly() {
    let engine = Engine::default();
    let module = Module::new(
        &engine,
        r#"(module (import "h" "f" (func $f (param i32) (result i32)))
                   (func (export "run") (param i32) (result i32) local.get 0 call $f))"#,
    )
    .unwrap();
    let mut linker = Linker::<u32>::new(&engine);
    linker
        .func_new(
            "h",
            "f",
            FuncType::new([ValType::I32], [ValType::I32]),
            |mut caller, p, r| {
                *caller.data_mut() += 1;
                match p[0].i32().unwrap() {
                    0 => Err(Trap::host("no zeroes")),
                    1 => panic!("host panic"),
                    x => {
                        r[0] = Val::I32(x * 10);
                        Ok(())
                    }
                }
            },
        )
        .unwrap();
    let mut store = Store::new(&engine, 0u32);
    let inst = linker.instantiate(&mut store, &module).unwrap();
    let run = inst
        .get_typed_func::<i32, i32, _>(&mut store, "run")
        .unwrap();
    assert_eq!(run.call(&mut store, 4).unwrap(), 40);
    let err = run.call(&mut store, 0).unwrap_err();
    assert_eq!(err.kind, TrapKind::Host);
    assert_eq!(err.message.as_deref(), Some("no zeroes"));
    let panicked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run.call(&mut store, 1)));
    assert!(
        panicked.is_err(),
        "the host panic propagates to the embedder"
    );
    assert_eq!(run.call(&mut store, 5).unwrap(), 50);
    assert_eq!(*store.data(), 4);
}

#[test]
fn interrupt_handle_stops_an_infinite_loop() {
    let engine = Engine::default();
    let (mut store, inst) = setup(&engine);
    let handle = store.interrupt_handle();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        handle.interrupt();
    });
    assert_eq!(
        trap_kind(call(&mut store, inst, "spin", &[])),
        TrapKind::Interrupted
    );
    stopper.join().unwrap();
    // The interruption was consumed: the store works again.
    assert_eq!(
        call(&mut store, inst, "call_indirect", &[Val::I32(0)]).unwrap()[0].i32(),
        Some(7)
    );
}

#[test]
fn epoch_deadline_stops_deep_recursion_and_loops() {
    let engine = Engine::default();
    let module = Module::new(
        &engine,
        r#"(module (func $f (export "f") (param i32) (result i32)
              local.get 0 i32.eqz if (result i32) (loop $l br $l) i32.const 0
              else local.get 0 i32.const 1 i32.sub call $f end))"#,
    )
    .unwrap();
    let mut store = Store::new(&engine, ());
    let inst = Instance::new(&mut store, &module, &[]).unwrap();
    store.set_epoch_deadline(1);
    let f = inst.get_typed_func::<i32, i32, _>(&mut store, "f").unwrap();
    let e2 = engine.clone();
    let ticker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        e2.increment_epoch();
    });
    assert_eq!(
        f.call(&mut store, 100).unwrap_err().kind,
        TrapKind::Interrupted
    );
    ticker.join().unwrap();
}

#[test]
fn traps_on_one_thread_do_not_disturb_others() {
    let engine = Engine::default();
    let module = Module::new(&engine, TRAPS_WAT).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Two threads run well-behaved wasm continuously...
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (engine, module, stop) = (engine.clone(), module.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut store = Store::new(&engine, ());
                let inst = Instance::new(&mut store, &module, &[]).unwrap();
                let f = inst
                    .get_typed_func::<i32, i32, _>(&mut store, "call_indirect")
                    .unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(f.call(&mut store, 0).unwrap(), 7);
                    n += 1;
                }
                n
            })
        })
        .collect();
    // ...while two others trap in every way, many times.
    let trappers: Vec<_> = (0..2)
        .map(|_| {
            let (engine, module) = (engine.clone(), module.clone());
            std::thread::spawn(move || {
                let mut store = Store::new(&engine, ());
                let inst = Instance::new(&mut store, &module, &[]).unwrap();
                for i in 0..300 {
                    let (name, args) = match i % 4 {
                        0 => ("oob_load", vec![Val::I32(-4)]),
                        1 => ("unreachable", vec![]),
                        2 => ("div", vec![Val::I32(1), Val::I32(0)]),
                        _ => ("recurse", vec![Val::I32(0)]),
                    };
                    assert!(call(&mut store, inst, name, &args).is_err());
                }
            })
        })
        .collect();
    for t in trappers {
        t.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        assert!(w.join().unwrap() > 0);
    }
}

#[test]
fn malformed_and_invalid_modules_are_typed_errors() {
    let engine = Engine::default();
    for bytes in [
        &b"\0asm\x01\0\0\0\x01"[..],
        b"\0asm\x02\0\0\0",
        b"",
        b"\0asm\x01\0\0\0\x0a\x05\x01\x03\0\x0b",
    ] {
        match Module::new(&engine, bytes) {
            Err(Error::Compile(e)) => assert!(!e.message.is_empty()),
            other => panic!("{bytes:?}: expected a compile error, got {other:?}"),
        }
    }
    // Invalid: type mismatch in a body.
    let err = Module::new(&engine, "(module (func (result i32) i64.const 1))").unwrap_err();
    assert!(
        matches!(err, Error::Compile(ref e) if e.kind == faaslet::CompileErrorKind::Invalid),
        "{err}"
    );
}

#[test]
fn typed_host_functions_reach_data_and_memory() {
    let engine = Engine::default();
    let module = Module::new(
        &engine,
        r#"(module (import "h" "sum" (func $sum (param i32 i32) (result i64)))
                   (import "h" "fail" (func $fail))
                   (memory (export "memory") 1)
                   (data (i32.const 8) "\01\02\03\04")
                   (func (export "run") (result i64) i32.const 8 i32.const 4 call $sum)
                   (func (export "oob") (result i64) i32.const 65534 i32.const 4 call $sum)
                   (func (export "fail") call $fail))"#,
    )
    .unwrap();
    let mut linker = Linker::<Vec<u8>>::new(&engine);
    linker
        .func_wrap(
            "h",
            "sum",
            |mut caller: faaslet::Caller<'_, Vec<u8>>, ptr: u32, len: u32| {
                let (seen, mem) = caller.data_and_memory_mut();
                let mem = mem.ok_or_else(|| Trap::host("no memory"))?;
                let bytes = mem
                    .get(ptr as usize..ptr as usize + len as usize)
                    .ok_or_else(|| Trap::host("bad pointer"))?;
                seen.extend_from_slice(bytes);
                Ok(bytes.iter().map(|b| *b as i64).sum::<i64>())
            },
        )
        .unwrap()
        .func_wrap(
            "h",
            "fail",
            |_caller: faaslet::Caller<'_, Vec<u8>>| -> Result<(), Trap> {
                Err(Trap::host("typed failure"))
            },
        )
        .unwrap();
    let mut store = Store::new(&engine, Vec::new());
    let inst = linker.instantiate(&mut store, &module).unwrap();
    let run = inst
        .get_typed_func::<(), i64, _>(&mut store, "run")
        .unwrap();
    assert_eq!(run.call(&mut store, ()).unwrap(), 10);
    assert_eq!(store.data(), &[1, 2, 3, 4]);
    let oob = inst
        .get_typed_func::<(), i64, _>(&mut store, "oob")
        .unwrap();
    assert_eq!(
        oob.call(&mut store, ()).unwrap_err().message.as_deref(),
        Some("bad pointer")
    );
    let fail = inst
        .get_typed_func::<(), (), _>(&mut store, "fail")
        .unwrap();
    assert_eq!(
        fail.call(&mut store, ()).unwrap_err().message.as_deref(),
        Some("typed failure")
    );
    assert_eq!(run.call(&mut store, ()).unwrap(), 10);
}

/// Issue 14: explicit bounds checks compare against each memory's length
/// kept in a register (reloaded after calls and atomics, not at every
/// access). Growing the memory inside a loop, directly or in a callee,
/// must make the new pages accessible at once, and the byte past the end
/// must still trap, in both bounds modes.
#[test]
fn memory_grown_in_a_loop_is_usable_at_once() {
    let wat = r#"(module (memory 1 12)
      (func $grow_one (result i32) i32.const 1 memory.grow)
      (func $last (result i32)
        (i32.sub (i32.mul (memory.size) (i32.const 65536)) (i32.const 1)))
      (func (export "direct") (param $n i32) (result i32) (local $i i32)
        (loop $l
          (drop (memory.grow (i32.const 1)))
          (i32.store8 (call $last) (i32.const 7))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
        (i32.load8_u (call $last)))
      (func (export "via_call") (param $n i32) (result i32) (local $i i32) (local $end i32)
        (local.set $end (i32.mul (memory.size) (i32.const 65536)))
        (loop $l
          (drop (call $grow_one))
          (local.set $end (i32.add (local.get $end) (i32.const 65536)))
          (i32.store8 (i32.sub (local.get $end) (i32.const 1)) (i32.const 9))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
        (i32.load8_u (i32.sub (local.get $end) (i32.const 1))))
      (func (export "past_end") (result i32) (i32.load8_u (i32.add (call $last) (i32.const 1)))))"#;
    for (mode, engine) in engines() {
        let module = Module::new(&engine, wat).unwrap();
        let mut store = Store::new(&engine, ());
        let inst = Instance::new(&mut store, &module, &[]).unwrap();
        let direct = inst
            .get_typed_func::<i32, i32, _>(&mut store, "direct")
            .unwrap();
        assert_eq!(direct.call(&mut store, 5).unwrap(), 7, "{mode}");
        let via_call = inst
            .get_typed_func::<i32, i32, _>(&mut store, "via_call")
            .unwrap();
        assert_eq!(via_call.call(&mut store, 5).unwrap(), 9, "{mode}");
        let past_end = inst
            .get_typed_func::<(), i32, _>(&mut store, "past_end")
            .unwrap();
        match past_end.call(&mut store, ()) {
            Err(t) => assert_eq!(t.kind, TrapKind::MemoryOutOfBounds, "{mode}"),
            Ok(v) => panic!("{mode}: read {v} past the end of memory"),
        }
    }
}

/// A host function calls back into the instance that called it
/// (`Caller::call`): the nested call sees and changes the same memory and
/// globals, a trap in it comes back to the host function as `Err` (the
/// guest frames below survive it), and the outer call goes on.
#[test]
fn a_host_function_calls_back_into_wasm() {
    for (mode, engine) in engines() {
        let module = Module::new(
            &engine,
            r#"(module
                 (import "h" "call_back" (func $cb (param i32) (result i32)))
                 (global $g (export "g") (mut i32) (i32.const 0))
                 (func (export "bump") (param i32) (result i32)
                   (global.set $g (i32.add (global.get $g) (local.get 0)))
                   (global.get $g))
                 (func (export "boom") unreachable)
                 (func (export "run") (result i32)
                   (drop (call $cb (i32.const 5)))
                   (drop (call $cb (i32.const -1)))
                   (i32.add (global.get $g) (call $cb (i32.const 10)))))"#,
        )
        .unwrap();
        let mut linker = Linker::<Vec<String>>::new(&engine);
        linker
            .func_wrap(
                "h",
                "call_back",
                |mut caller: faaslet::Caller<'_, Vec<String>>, n: i32| -> Result<i32, Trap> {
                    if n < 0 {
                        let boom = caller
                            .get_export("boom")
                            .and_then(|e| e.into_func())
                            .unwrap();
                        let err = caller.call(boom, &[], &mut []).unwrap_err();
                        caller.data_mut().push(err.to_string());
                        return Ok(0);
                    }
                    let bump = caller
                        .get_export("bump")
                        .and_then(|e| e.into_func())
                        .unwrap();
                    let mut out = [Val::I32(0)];
                    caller
                        .call(bump, &[Val::I32(n)], &mut out)
                        .map_err(|e| Trap::host(e.to_string()))?;
                    let Val::I32(v) = out[0] else { unreachable!() };
                    Ok(v)
                },
            )
            .unwrap();
        let mut store = Store::new(&engine, Vec::new());
        let inst = linker.instantiate(&mut store, &module).unwrap();
        let run = inst
            .get_typed_func::<(), i32, _>(&mut store, "run")
            .unwrap();
        // g is 5 when read (before the last call-back), then 15: 5 + 15.
        assert_eq!(run.call(&mut store, ()).unwrap(), 20, "{mode}");
        assert_eq!(store.data().len(), 1, "{mode}");
        assert!(
            store.data()[0].contains("unreachable"),
            "{mode}: {:?}",
            store.data()
        );
    }
}
