//! A large function through its Proto-Faaslet: `large_init.wasm`
//! (benches/fixtures/large_init.c) builds a 50 MB table of pi(i) in its
//! `_initialize`; a restore from the snapshot answers exactly as a freshly
//! initialised instance does, in both bounds modes, without running the
//! initialisation again.

use faaslet::{Bounds, Config, Engine, Instance, Module, Store};
use faaslet_snapshot::Snapshot;

const WASM: &[u8] = include_bytes!("../../benches/fixtures/large_init.wasm");

/// Answers of the same C compiled natively (clang -O2, x86_64):
/// `prime_count(10_000_000)`, `prime_count(12_499_999)`, `lookup(0)`,
/// `lookup(12345)`.
const NATIVE: [u32; 4] = [664_579, 818_703, 1_984_039_111, 3_131_452_562];

/// `prime_count` and `lookup` at the points of [`NATIVE`], plus `lookup`
/// at a few more keys.
fn answers(store: &mut Store<()>, inst: Instance) -> Vec<u32> {
    let pc = inst
        .get_typed_func::<i32, i32, _>(&mut *store, "prime_count")
        .unwrap();
    let lookup = inst
        .get_typed_func::<i32, i32, _>(&mut *store, "lookup")
        .unwrap();
    let mut v = vec![
        pc.call(&mut *store, 10_000_000).unwrap() as u32,
        pc.call(&mut *store, 12_499_999).unwrap() as u32,
        lookup.call(&mut *store, 0).unwrap() as u32,
        lookup.call(&mut *store, 12345).unwrap() as u32,
    ];
    for key in [1, 7, 99, 1_000_000, -1] {
        v.push(lookup.call(&mut *store, key).unwrap() as u32);
    }
    v
}

fn check(bounds: Bounds) {
    let engine = Engine::new(&Config {
        bounds,
        ..Config::default()
    })
    .unwrap();
    let module = Module::new(&engine, WASM).unwrap();

    // Before initialisation the entry points say so.
    let mut store = Store::new(&engine, ());
    let raw = Instance::new(&mut store, &module, &[]).unwrap();
    assert_eq!(answers(&mut store, raw)[..4], [u32::MAX; 4]);

    // First start: instantiate and run `_initialize`.
    let mut store = Store::new(&engine, ());
    let fresh = Instance::new(&mut store, &module, &[]).unwrap();
    fresh
        .get_typed_func::<(), (), _>(&mut store, "_initialize")
        .unwrap()
        .call(&mut store, ())
        .unwrap();
    let want = answers(&mut store, fresh);
    assert_eq!(want[..4], NATIVE, "fresh instance disagrees with native C");

    // Proto-Faaslet: `create` finds `_initialize` by itself.
    let mut s = Store::new(&engine, ());
    let snap = Snapshot::create(&mut s, &module, &[], None).unwrap();
    drop(s);
    assert_eq!(snap.memory_bytes(), 53_739_520);
    for _ in 0..3 {
        let mut store = Store::new(&engine, ());
        let inst = snap.restore(&mut store, &[]).unwrap();
        assert_eq!(answers(&mut store, inst), want);
        // And after a reset of the warm instance.
        snap.reset(&mut store, inst).unwrap();
        assert_eq!(answers(&mut store, inst), want);
    }

    // Across a file, as another process would.
    let again = Snapshot::from_bytes(&module, &snap.to_bytes().unwrap()).unwrap();
    let mut store = Store::new(&engine, ());
    let inst = again.restore(&mut store, &[]).unwrap();
    assert_eq!(answers(&mut store, inst), want);
}

#[test]
fn restored_large_function_matches_fresh_guard_pages() {
    check(Config::default().bounds);
}

#[test]
fn restored_large_function_matches_fresh_explicit_bounds() {
    check(Bounds::Explicit);
}
