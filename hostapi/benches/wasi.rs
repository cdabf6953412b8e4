//! WASI host-call cost, each against a peer in the same run:
//!
//! * `fd_write/discard` vs `noop_host_call`: a guest loop calling
//!   `fd_write` (one 64-byte iovec, stdout discarded) against the same loop
//!   calling a host function of the same signature that does nothing: the
//!   cost of the WASI layer (memory checks, iovec walk, errno plumbing).
//! * `fd_write/file` vs `native_write`: 64-byte writes to a scratch file from
//!   the guest against `write(2)` of 64 bytes from Rust.
//!
//! Run: `cargo bench -p faaslet-hostapi --bench wasi`.

// `criterion_main!` defines an undocumented `pub fn main`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use faaslet::{Caller, Engine, Linker, Module, Store, TypedFunc};
use faaslet_hostapi::wasi::{Output, WasiCtx};
use faaslet_platform::wasi::{self, WasiView};
use std::io::Write;

const CALLS: u32 = 1000;

struct Host(WasiCtx);
impl WasiView for Host {
    fn wasi(&mut self) -> &mut WasiCtx {
        &mut self.0
    }
}

const WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "bench" "noop" (func $noop (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "\10\00\00\00\40\00\00\00")
  (data (i32.const 100) "bench.out")
  (func (export "open") (result i32)
    (drop (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 9)
      (i32.const 9) (i64.const 0x40) (i64.const 0) (i32.const 0) (i32.const 200)))
    (i32.load (i32.const 200)))
  (func (export "wasi") (param $fd i32) (param $n i32)
    (loop $l
      (drop (call $w (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1))))))
  (func (export "noop") (param $fd i32) (param $n i32)
    (loop $l
      (drop (call $noop (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))))"#;

fn bench(c: &mut Criterion) {
    let engine = Engine::default();
    let module = Module::new(&engine, WAT).unwrap();
    let mut linker = Linker::new(&engine);
    wasi::add_to_linker(&mut linker).unwrap();
    linker
        .func_wrap(
            "bench",
            "noop",
            |_c: Caller<'_, Host>, _a: u32, _b: u32, _d: u32, _e: u32| 0i32,
        )
        .unwrap();
    let ctx = WasiCtx::builder()
        .stdout(Output::Discard)
        .scratch("/tmp")
        .build()
        .unwrap();
    let mut store = Store::new(&engine, Host(ctx));
    let inst = linker.instantiate(&mut store, &module).unwrap();
    let wasi: TypedFunc<(i32, i32), ()> = inst.get_typed_func(&mut store, "wasi").unwrap();
    let noop: TypedFunc<(i32, i32), ()> = inst.get_typed_func(&mut store, "noop").unwrap();
    let open: TypedFunc<(), i32> = inst.get_typed_func(&mut store, "open").unwrap();
    let file_fd = open.call(&mut store, ()).unwrap();
    assert!(file_fd > 3, "guest opened its scratch file");

    let mut g = c.benchmark_group("host_call");
    g.throughput(Throughput::Elements(CALLS as u64));
    g.bench_function("fd_write/discard", |b| {
        b.iter(|| wasi.call(&mut store, (1, CALLS as i32)).unwrap())
    });
    g.bench_function("noop_host_call", |b| {
        b.iter(|| noop.call(&mut store, (1, CALLS as i32)).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("file_write_64B");
    g.throughput(Throughput::Elements(CALLS as u64));
    // Files are truncated between batches so the benchmark does not fill
    // the disk (the guest's offset keeps growing: the file stays sparse).
    let dir = store.data_mut().0.scratch_dir().unwrap().to_owned();
    let guest_file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("bench.out"))
        .unwrap();
    g.bench_function("fd_write/file", |b| {
        b.iter_batched(
            || guest_file.set_len(0).unwrap(),
            |()| wasi.call(&mut store, (file_fd, CALLS as i32)).unwrap(),
            BatchSize::PerIteration,
        )
    });
    let f = std::fs::File::create(dir.join("native.out")).unwrap();
    let buf = [0u8; 64];
    g.bench_function("native_write", |b| {
        b.iter_batched(
            || f.set_len(0).unwrap(),
            |()| {
                for _ in 0..CALLS {
                    (&f).write_all(std::hint::black_box(&buf)).unwrap();
                }
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
