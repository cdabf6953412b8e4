//! WebAssembly GC allocation and collection cost: `run(n, live)`
//! allocates `n` structs (an i32 and a reference to the previous one,
//! 24 bytes each) and keeps the last `live` of them reachable through a
//! ring array, so the live set is `live` structs (plus the ring's
//! `8 * live` bytes) and everything older is garbage.
//!
//! ```sh
//! cargo build --release -p faaslet-benches --example gc_alloc
//! target/release/examples/gc_alloc faaslet 20000000 100000
//! python3 benches/examples/gc_alloc_wasmtime.py 20000000 100000   # the peer
//! ```
//!
//! Prints nanoseconds per allocation (wall clock, collections included)
//! and faaslet's collection count and pauses. The wat is
//! [`WAT`]; the Python peer runs the same text.

use std::time::Instant;

/// The benchmark module (`gc_alloc_wasmtime.py` embeds the same text).
pub const WAT: &str = r#"(module
  (type $node (struct (field $v i32) (field $prev anyref)))
  (type $ring (array (mut anyref)))
  (func (export "run") (param $n i32) (param $live i32) (result i32)
    (local $r (ref $ring)) (local $i i32) (local $last anyref)
    (local.set $r (array.new_default $ring (local.get $live)))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $last (struct.new $node (local.get $i) (local.get $last)))
        (array.set $ring (local.get $r) (i32.rem_u (local.get $i) (local.get $live))
          (local.get $last))
        ;; Cut the chain so only the ring keeps nodes alive.
        (local.set $last (ref.null any))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (struct.get $node $v
      (ref.cast (ref $node)
        (array.get $ring (local.get $r)
          (i32.rem_u (i32.sub (local.get $n) (i32.const 1)) (local.get $live)))))))"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (n, live) = match &args[..] {
        [_, e, n, live] if e == "faaslet" => (
            n.parse::<i32>().expect("a number of allocations"),
            live.parse::<i32>().expect("a live set size"),
        ),
        _ => {
            eprintln!("usage: gc_alloc faaslet ALLOCATIONS LIVE");
            std::process::exit(2);
        }
    };
    let config = faaslet::Config {
        wasm_gc: true,
        ..faaslet::Config::default()
    };
    let engine = faaslet::Engine::new(&config).expect("engine");
    let module = faaslet::Module::new(&engine, WAT).expect("compile");
    let mut store = faaslet::Store::new(&engine, ());
    let inst = faaslet::Instance::new(&mut store, &module, &[]).expect("instantiate");
    let run = inst
        .get_typed_func::<(i32, i32), i32, _>(&mut store, "run")
        .expect("run");
    let t = Instant::now();
    let last = run.call(&mut store, (n, live)).expect("run");
    let elapsed = t.elapsed();
    assert_eq!(last, n - 1);
    let s = store.gc_stats();
    let collections = s.collections.max(1);
    println!(
        "faaslet: {n} allocations, live set {live} structs: {:.1} ns/allocation; \
         {} collections, mean pause {:.3} ms, max pause {:.3} ms, live after last {} KiB, \
         heap {} KiB, GC time {:.1}% of the run",
        elapsed.as_nanos() as f64 / f64::from(n),
        s.collections,
        s.total_pause.as_secs_f64() * 1e3 / collections as f64,
        s.max_pause.as_secs_f64() * 1e3,
        s.live_bytes >> 10,
        s.heap_bytes >> 10,
        100.0 * s.total_pause.as_secs_f64() / elapsed.as_secs_f64(),
    );
}
