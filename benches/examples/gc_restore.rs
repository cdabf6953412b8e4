//! Restore cost of a Proto-Faaslet with a large WebAssembly GC heap: the
//! init builds `n` structs (an i64 and a funcref, 24 bytes each) reachable
//! from an array of `n` references, so the heap is about `32 * n` bytes;
//! the program then restores the snapshot `restores` times into fresh
//! stores (each dropped after one call reading one object) and prints the
//! median and minimum time of a restore, next to the same figures for the
//! same module whose init built nothing (the peer in the same run).
//!
//! ```sh
//! cargo build -p faaslet-benches --example gc_restore
//! target/debug/examples/gc_restore 2000000 50
//! # instructions per restore (load-independent): the difference of two runs
//! for r in 10 20; do valgrind --tool=cachegrind --cache-sim=no \
//!   --cachegrind-out-file=/dev/null target/debug/examples/gc_restore 500000 $r; done
//! ```
//!
//! The same file builds against the engine before copy-on-write GC
//! restores (it uses only `Snapshot` and `Store` calls both have), which is
//! how `docs/gc.md` compares the two.

use std::time::{Duration, Instant};

fn module_text(n: u32) -> String {
    format!(
        r#"(module
      (type $f (func (result i32)))
      (type $node (struct (field $v (mut i64)) (field $fn (ref null $f))))
      (type $nodes (array (mut (ref null $node))))
      (global $all (mut (ref null $nodes)) (ref.null $nodes))
      (func $seven (type $f) (i32.const 7))
      (elem declare func $seven)
      (func (export "_initialize")
        (local $i i32)
        (global.set $all (array.new_default $nodes (i32.const {n})))
        (block $done
          (loop $l
            (br_if $done (i32.ge_u (local.get $i) (i32.const {n})))
            (array.set $nodes (global.get $all) (local.get $i)
              (struct.new $node (i64.extend_i32_u (local.get $i)) (ref.func $seven)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $l))))
      (func (export "get") (param i32) (result i64)
        (if (result i64) (i32.ge_u (local.get 0) (array.len (global.get $all)))
          (then (i64.const -1))
          (else (struct.get $node $v
            (array.get $nodes (global.get $all) (local.get 0)))))))"#
    )
}

/// Median and minimum of `restores` restores of a snapshot of the module
/// with `n` objects, and the heap's size.
fn measure(n: u32, restores: usize) -> (Duration, Duration, u64) {
    let config = faaslet::Config {
        wasm_gc: true,
        ..faaslet::Config::default()
    };
    let engine = faaslet::Engine::new(&config).expect("engine");
    let module = faaslet::Module::new(&engine, module_text(n)).expect("compile");
    let mut store = faaslet::Store::new(&engine, ());
    let snap =
        faaslet_snapshot::Snapshot::create(&mut store, &module, &[], None).expect("snapshot");
    let heap = store.gc_stats().heap_bytes;
    let mut times = Vec::with_capacity(restores);
    for k in 0..restores {
        let mut s = faaslet::Store::new(&engine, ());
        let started = Instant::now();
        let inst = snap.restore(&mut s, &[]).expect("restore");
        times.push(started.elapsed());
        let i = if n == 0 { 0 } else { (k as u32 * 7919) % n };
        let got = inst
            .get_typed_func::<i32, i64, _>(&mut s, "get")
            .expect("get")
            .call(&mut s, i as i32)
            .expect("call");
        assert_eq!(got, if n == 0 { -1 } else { i64::from(i) });
    }
    times.sort();
    (times[times.len() / 2], times[0], heap)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (n, restores) = match &args[..] {
        [_, n, r] => (
            n.parse::<u32>().expect("a number of objects"),
            r.parse::<usize>().expect("a number of restores"),
        ),
        _ => {
            eprintln!("usage: gc_restore OBJECTS RESTORES");
            std::process::exit(2);
        }
    };
    let (med0, min0, heap0) = measure(0, restores);
    let (med, min, heap) = measure(n, restores);
    println!("objects heap_bytes restore_median_us restore_min_us");
    println!(
        "0 {heap0} {:.1} {:.1}",
        med0.as_secs_f64() * 1e6,
        min0.as_secs_f64() * 1e6
    );
    println!(
        "{n} {heap} {:.1} {:.1}",
        med.as_secs_f64() * 1e6,
        min.as_secs_f64() * 1e6
    );
}
