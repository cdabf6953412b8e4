//! WebAssembly SIMD (`v128`) through the embedding API, in both bounds
//! modes: v128 parameters and results across the host boundary (array
//! trampolines and host stubs), v128 globals, locals and block values,
//! bounds checks on v128 accesses, and a module that clang auto-vectorised.
//! (The spec's `simd` proposal files run in `spec.rs`.)

use faaslet::{
    Bounds, Caller, Config, Engine, Instance, Linker, Module, Store, Trap, TrapKind, Val,
};

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

/// Packs four i32 lanes (lane 0 first) into a v128.
fn i32x4(l: [i32; 4]) -> u128 {
    l.iter()
        .rev()
        .fold(0u128, |acc, x| (acc << 32) | u128::from(*x as u32))
}

const V128_WAT: &str = r#"
(module
  (import "host" "rev" (func $rev (param v128) (result v128)))
  (import "host" "add" (func $hadd (param v128 i32 v128) (result v128 i32)))
  (memory (export "mem") 1 1)
  (global $g (export "g") (mut v128) (v128.const i32x4 1 2 3 4))
  ;; (a + b) reversed by the host, then stored in and reloaded from $g.
  (func (export "add_rev") (param $a v128) (param $b v128) (result v128)
    (global.set $g (call $rev (i32x4.add (local.get $a) (local.get $b))))
    (global.get $g))
  ;; Sum of the i32 lanes of n splats of x, accumulated in a v128 local
  ;; carried around a loop and through a block result.
  (func (export "splat_sum") (param $x i32) (param $n i32) (result i32)
    (local $acc v128) (local $v v128)
    (local.set $v (i32x4.splat (local.get $x)))
    (block $done
      (loop $l
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $acc (i32x4.add (local.get $acc) (local.get $v)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $l)))
    (local.set $acc
      (block (result v128) (i64x2.add (local.get $acc) (v128.const i64x2 0 0))))
    (i32.add
      (i32.add (i32x4.extract_lane 0 (local.get $acc)) (i32x4.extract_lane 1 (local.get $acc)))
      (i32.add (i32x4.extract_lane 2 (local.get $acc)) (i32x4.extract_lane 3 (local.get $acc)))))
  ;; Calls a host function taking and returning a mix of v128 and i32.
  (func (export "host_mix") (param v128 v128) (result v128 i32)
    (call $hadd (local.get 0) (i32.const 5) (local.get 1)))
  (func (export "load") (param i32) (result v128) (v128.load (local.get 0)))
  (func (export "load_lane") (param i32) (result v128)
    (v128.load64_lane 1 (local.get 0) (v128.const i64x2 0 0)))
  (func (export "store") (param i32 v128) (v128.store offset=16 (local.get 0) (local.get 1)))
)
"#;

fn instantiate(engine: &Engine) -> (Store<u32>, Instance) {
    let module = Module::new(engine, V128_WAT).expect("compiles");
    let mut linker = Linker::<u32>::new(engine);
    linker
        .func_wrap("host", "rev", |mut c: Caller<'_, u32>, v: u128| -> u128 {
            *c.data_mut() += 1;
            let l = v.to_le_bytes();
            let mut lanes = [0i32; 4];
            for (i, lane) in lanes.iter_mut().enumerate() {
                *lane = i32::from_le_bytes(l[4 * (3 - i)..4 * (3 - i) + 4].try_into().unwrap());
            }
            i32x4(lanes)
        })
        .unwrap();
    linker
        .func_wrap(
            "host",
            "add",
            |_c: Caller<'_, u32>, a: u128, k: i32, b: u128| -> (u128, i32) {
                (a.wrapping_add(b), k * 2)
            },
        )
        .unwrap();
    let mut store = Store::new(engine, 0u32);
    let instance = linker.instantiate(&mut store, &module).expect("links");
    (store, instance)
}

#[test]
fn v128_crosses_the_host_boundary_both_ways() {
    for (mode, engine) in engines() {
        let (mut store, inst) = instantiate(&engine);
        let add_rev = inst
            .get_typed_func::<(u128, u128), u128, _>(&mut store, "add_rev")
            .unwrap();
        let r = add_rev
            .call(
                &mut store,
                (i32x4([1, 2, 3, 4]), i32x4([10, -20, 30, i32::MAX])),
            )
            .unwrap();
        assert_eq!(r, i32x4([i32::MIN + 3, 33, -18, 11]), "{mode}");
        assert_eq!(*store.data(), 1, "{mode}: host function ran once");
        let g = inst.get_global(&mut store, "g").unwrap();
        match g.get(&mut store) {
            Val::V128(bits) => assert_eq!(bits, i32x4([i32::MIN + 3, 33, -18, 11]), "{mode}"),
            other => panic!("{mode}: global holds {other:?}"),
        }

        // The untyped path, with v128 and i32 results mixed.
        let f = inst.get_func(&mut store, "host_mix").unwrap();
        let mut results = [Val::I32(0), Val::I32(0)];
        f.call(
            &mut store,
            &[Val::V128(u128::MAX - 1), Val::V128(5)],
            &mut results,
        )
        .unwrap();
        assert!(
            matches!(results, [Val::V128(3), Val::I32(10)]),
            "{mode}: {results:?}"
        );
    }
}

#[test]
fn v128_locals_loops_and_blocks() {
    for (mode, engine) in engines() {
        let (mut store, inst) = instantiate(&engine);
        let f = inst
            .get_typed_func::<(i32, i32), i32, _>(&mut store, "splat_sum")
            .unwrap();
        assert_eq!(f.call(&mut store, (7, 0)).unwrap(), 0, "{mode}");
        assert_eq!(f.call(&mut store, (7, 10)).unwrap(), 280, "{mode}");
        assert_eq!(f.call(&mut store, (-3, 1000)).unwrap(), -12_000, "{mode}");
    }
}

#[test]
fn v128_accesses_are_bounds_checked() {
    for (mode, engine) in engines() {
        let (mut store, inst) = instantiate(&engine);
        let store_fn = inst
            .get_typed_func::<(i32, u128), (), _>(&mut store, "store")
            .unwrap();
        let load = inst
            .get_typed_func::<i32, u128, _>(&mut store, "load")
            .unwrap();
        let load_lane = inst
            .get_typed_func::<i32, u128, _>(&mut store, "load_lane")
            .unwrap();
        let v = 0x0f0e0d0c_0b0a0908_07060504_03020100u128;
        // The last 16 bytes of the single page: offset=16 + 65504.
        store_fn.call(&mut store, (65504, v)).unwrap();
        assert_eq!(load.call(&mut store, 65520).unwrap(), v, "{mode}");
        assert_eq!(
            load_lane.call(&mut store, 65528).unwrap(),
            (v >> 64) << 64,
            "{mode}: lane 1 is the high 8 bytes"
        );
        let oob = |r: Result<(), Trap>| match r {
            Err(t) => t.kind,
            Ok(()) => panic!("{mode}: expected a trap"),
        };
        assert_eq!(
            oob(load.call(&mut store, 65521).map(|_| ())),
            TrapKind::MemoryOutOfBounds
        );
        assert_eq!(
            oob(load.call(&mut store, -1).map(|_| ())),
            TrapKind::MemoryOutOfBounds
        );
        assert_eq!(
            oob(load_lane.call(&mut store, 65529).map(|_| ())),
            TrapKind::MemoryOutOfBounds
        );
        assert_eq!(
            oob(store_fn.call(&mut store, (65505, v))),
            TrapKind::MemoryOutOfBounds
        );
        // The failed store wrote nothing.
        assert_eq!(load.call(&mut store, 65520).unwrap(), v, "{mode}");
    }
}

/// `tests/fixtures/simd_kernels.wasm`, built from `simd_kernels.c` by
/// clang 14 with `-msimd128 -O2` (the command is in the C file).
const KERNELS: &[u8] = include_bytes!("../fixtures/simd_kernels.wasm");

#[test]
fn clang_vectorised_kernels_match_native_results() {
    // The module really is vectorised: its code section holds the SIMD
    // prefix byte followed by i32x4.add (0xfd 0xae 0x01).
    assert!(
        KERNELS.windows(3).any(|w| w == [0xfd, 0xae, 0x01]),
        "fixture contains i32x4.add"
    );
    for (mode, engine) in engines() {
        let module = Module::new(&engine, KERNELS).expect("compiles");
        let mut store = Store::new(&engine, ());
        let inst = Instance::new(&mut store, &module, &[]).expect("instantiates");
        let init = inst
            .get_typed_func::<(), (), _>(&mut store, "init")
            .unwrap();
        let dot = inst
            .get_typed_func::<(), i32, _>(&mut store, "dot")
            .unwrap();
        let saxpy = inst
            .get_typed_func::<f32, u32, _>(&mut store, "saxpy")
            .unwrap();
        let sum_u8 = inst
            .get_typed_func::<(), u32, _>(&mut store, "sum_u8")
            .unwrap();
        let bc = inst
            .get_typed_func::<(i32, i32, i32), u32, _>(&mut store, "brighten_clamp")
            .unwrap();
        init.call(&mut store, ()).unwrap();
        // Expected values: the same C compiled natively (x86-64, clang -O0
        // and -O2 agree).
        assert_eq!(dot.call(&mut store, ()).unwrap(), 5_101_292, "{mode}");
        assert_eq!(saxpy.call(&mut store, 1.5).unwrap(), 372_774_406, "{mode}");
        assert_eq!(sum_u8.call(&mut store, ()).unwrap(), 127_572, "{mode}");
        assert_eq!(
            bc.call(&mut store, (40, -1000, 1000)).unwrap(),
            1_027_850_868,
            "{mode}"
        );
        assert_eq!(sum_u8.call(&mut store, ()).unwrap(), 164_334, "{mode}");
    }
}
