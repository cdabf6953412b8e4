//! WebAssembly SIMD against scalar code on faaslet: the same C kernels
//! (`tests/fixtures/simd_kernels.c`) built by clang with `-msimd128`
//! (`simd_kernels.wasm`) and without (`simd_kernels_scalar.wasm`), each run
//! on faaslet's JIT in the same process.
//!
//! * `simd/dot/{simd,scalar}`: an `i32` dot product of 1000 elements.
//! * `simd/sum_u8/{simd,scalar}`: a widening sum of 1000 bytes.
//! * `simd/saxpy/{simd,scalar}`: `x = k*x + y` over 1000 `f32` plus a hash.
//!
//! Run with `cargo bench -p faaslet-benches --bench simd`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use faaslet::{Engine, Instance, Module, Store, TypedFunc};

const SIMD: &[u8] = include_bytes!("../tests/fixtures/simd_kernels.wasm");
const SCALAR: &[u8] = include_bytes!("../tests/fixtures/simd_kernels_scalar.wasm");

struct Kernels {
    store: Store<()>,
    dot: TypedFunc<(), i32>,
    sum_u8: TypedFunc<(), u32>,
    saxpy: TypedFunc<f32, u32>,
}

fn load(engine: &Engine, wasm: &[u8]) -> Kernels {
    let module = Module::new(engine, wasm).expect("compiles");
    let mut store = Store::new(engine, ());
    let inst = Instance::new(&mut store, &module, &[]).expect("instantiates");
    let init = inst
        .get_typed_func::<(), (), _>(&mut store, "init")
        .unwrap();
    init.call(&mut store, ()).unwrap();
    Kernels {
        dot: inst.get_typed_func(&mut store, "dot").unwrap(),
        sum_u8: inst.get_typed_func(&mut store, "sum_u8").unwrap(),
        saxpy: inst.get_typed_func(&mut store, "saxpy").unwrap(),
        store,
    }
}

fn bench(c: &mut Criterion) {
    let engine = Engine::default();
    let mut simd = load(&engine, SIMD);
    let mut scalar = load(&engine, SCALAR);
    // Both builds compute the same thing.
    assert_eq!(
        simd.dot.call(&mut simd.store, ()).unwrap(),
        scalar.dot.call(&mut scalar.store, ()).unwrap()
    );
    let mut g = c.benchmark_group("simd");
    for (name, k) in [("simd", &mut simd), ("scalar", &mut scalar)] {
        g.bench_function(format!("dot/{name}"), |b| {
            b.iter(|| black_box(k.dot.call(&mut k.store, ()).unwrap()))
        });
        g.bench_function(format!("sum_u8/{name}"), |b| {
            b.iter(|| black_box(k.sum_u8.call(&mut k.store, ()).unwrap()))
        });
        g.bench_function(format!("saxpy/{name}"), |b| {
            b.iter(|| black_box(k.saxpy.call(&mut k.store, black_box(1.0)).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
