//! Cold-start comparison: faaslet fresh start, faaslet restore from a
//! Proto-Faaslet snapshot, and wasmtime (pooling allocator + copy-on-write
//! memory images), measured side by side in one run, plus memory per idle
//! Faaslet (PSS/RSS from /proc/self/smaps_rollup), sustained start rate and
//! density. Prints a table. Then the large function
//! (`benches/fixtures/large_init.c`, whose `_initialize` builds 50 MB of
//! tables): faaslet's first start against its restore, beside wasmtime
//! instantiating and running `_initialize` (wasmtime has no snapshots, so
//! its every cold start runs the initialisation).
//!
//! Run with `cargo bench -p faaslet-benches --bench cold_start`.
//!
//! The measurement code is `faaslet_cli::bench` (shared with
//! `faaslet bench cold-start`, which prints the engine-only figures).

use faaslet::{Bounds, Config, Engine, Instance, Module, Store};
use faaslet_cli::bench::{
    density, measure, per_idle, rate, LargeInitReport, LARGE_FIRST_START_RUNS, LARGE_INIT_WASM,
    NOOP_WAT as NOOP,
};
use faaslet_snapshot::Snapshot;
use std::hint::black_box;
use std::time::Duration;

fn main() {
    // First, so that its idle-memory figure is not flattered by heap the
    // no-op runs freed; printed last.
    let large = large_function();
    let wasm = faaslet::wat_to_wasm(NOOP).unwrap();
    let engine = Engine::default();
    let module = Module::new(&engine, &wasm).unwrap();
    let mut s = Store::new(&engine, ());
    let snap = Snapshot::create(&mut s, &module, &[], None).unwrap();
    drop(s);

    let iters = 20_000;
    let fresh = measure(iters, || {
        let mut store = Store::new(&engine, ());
        black_box(Instance::new(&mut store, &module, &[]).unwrap());
    });
    let restore = measure(iters, || {
        let mut store = Store::new(&engine, ());
        black_box(snap.restore(&mut store, &[]).unwrap());
    });

    // wasmtime peer.
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_memories(11_000)
        .total_core_instances(11_000)
        .total_tables(11_000);
    pool.max_memory_size(1 << 16);
    let mut wc = wasmtime::Config::new();
    wc.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    wc.memory_init_cow(true);
    let wengine = wasmtime::Engine::new(&wc).unwrap();
    let wmodule = wasmtime::Module::new(&wengine, &wasm).unwrap();
    let wlinker = wasmtime::Linker::<()>::new(&wengine);
    let pre = wlinker.instantiate_pre(&wmodule).unwrap();
    let wt = measure(iters, || {
        let mut store = wasmtime::Store::new(&wengine, ());
        black_box(pre.instantiate(&mut store).unwrap());
    });

    let noop_call = |store: &mut Store<()>, inst: Instance| {
        let f = inst
            .get_typed_func::<(), (), _>(&mut *store, "noop")
            .unwrap();
        f.call(&mut *store, ()).unwrap();
    };
    let rate_fresh = rate(Duration::from_secs(1), || {
        let mut store = Store::new(&engine, ());
        let i = Instance::new(&mut store, &module, &[]).unwrap();
        noop_call(&mut store, i);
    });
    let rate_restore = rate(Duration::from_secs(1), || {
        let mut store = Store::new(&engine, ());
        let i = snap.restore(&mut store, &[]).unwrap();
        noop_call(&mut store, i);
    });
    let rate_wt = rate(Duration::from_secs(1), || {
        let mut store = wasmtime::Store::new(&wengine, ());
        let i = pre.instantiate(&mut store).unwrap();
        i.get_typed_func::<(), ()>(&mut store, "noop")
            .unwrap()
            .call(&mut store, ())
            .unwrap();
    });

    let mut mem = Vec::new();
    for n in [1_000usize, 10_000] {
        let ours = per_idle(n, || {
            let mut store = Store::new(&engine, ());
            let i = snap.restore(&mut store, &[]).unwrap();
            (store, i)
        });
        let theirs = per_idle(n, || {
            let mut store = wasmtime::Store::new(&wengine, ());
            let i = pre.instantiate(&mut store).unwrap();
            (store, i)
        });
        mem.push((n, ours, theirs));
    }

    // Density: explicit-bounds mode, restored Faaslets until failure or 100k.
    let dconfig = Config {
        bounds: Bounds::Explicit,
        ..Config::default()
    };
    let dengine = Engine::new(&dconfig).unwrap();
    let dmodule = Module::new(&dengine, &wasm).unwrap();
    let mut s = Store::new(&dengine, ());
    let dsnap = Snapshot::create(&mut s, &dmodule, &[], None).unwrap();
    drop(s);
    let (density, density_err) = density(&dsnap, 100_000);

    println!("\ncold start of a no-op function (median of {iters}), same run:");
    println!(
        "{:<34} {:>11} {:>11} {:>10} {:>10} {:>12}",
        "measure", "median", "p99", "med cyc", "p99 cyc", "rate (/s)"
    );
    for (name, st, r) in [
        ("faaslet fresh (compiled module)", &fresh, rate_fresh),
        ("faaslet restore (Proto-Faaslet)", &restore, rate_restore),
        ("wasmtime 48 pooling + CoW image", &wt, rate_wt),
    ] {
        println!(
            "{:<34} {:>8.2} us {:>8.2} us {:>10} {:>10} {:>12.0}",
            name,
            st.median_ns / 1e3,
            st.p99_ns / 1e3,
            st.median_cycles,
            st.p99_cycles,
            r
        );
    }
    println!("\nmemory per idle instance (smaps_rollup delta / N):");
    for (n, o, t) in &mem {
        println!(
            "  N={n:<6} faaslet PSS {:>6.1} KiB RSS {:>6.1} KiB | wasmtime PSS {:>6.1} KiB RSS {:>6.1} KiB",
            o.0, o.1, t.0, t.1
        );
    }
    println!(
        "\ndensity (explicit bounds, restored, one process): {density} idle Faaslets{}",
        match density_err {
            None => " (stopped at the 100,000 target)".to_string(),
            Some(e) => format!(" (stopped: {e})"),
        }
    );
    println!("targets: restore <= 5 us, fresh <= 20 us, <= 32 KiB PSS, >= 100,000 idle");
    print!("{large}");
}

/// The large function: faaslet first start and restore (the same
/// measurements as `faaslet bench cold-start`) beside wasmtime's cold
/// start, which must run `_initialize` every time. Returns the table.
fn large_function() -> String {
    let ours = LargeInitReport::run(LARGE_FIRST_START_RUNS, 2_000).unwrap();

    let mut wc = wasmtime::Config::new();
    wc.memory_init_cow(true);
    let wengine = wasmtime::Engine::new(&wc).unwrap();
    let wmodule = wasmtime::Module::new(&wengine, LARGE_INIT_WASM).unwrap();
    let pre = wasmtime::Linker::<()>::new(&wengine)
        .instantiate_pre(&wmodule)
        .unwrap();
    let start = || {
        let mut store = wasmtime::Store::new(&wengine, ());
        let i = pre.instantiate(&mut store).unwrap();
        i.get_typed_func::<(), ()>(&mut store, "_initialize")
            .unwrap()
            .call(&mut store, ())
            .unwrap();
        (store, i)
    };
    // Same answer as faaslet's (fresh and restored agree already).
    let (mut store, i) = start();
    let sum = i
        .get_typed_func::<i32, i32>(&mut store, "lookup")
        .unwrap()
        .call(&mut store, 1)
        .unwrap() as u32;
    assert_eq!(sum, ours.checksums.0, "wasmtime and faaslet disagree");
    drop(store);
    let wt = measure(LARGE_FIRST_START_RUNS, || {
        black_box(start());
    });

    format!(
        "\n{}{:<34} {:>8.2} us {:>8.2} us {:>12} {:>12}\n\
         wasmtime cold start / faaslet restore: {:.0}x (with the call: {:.0}x)\n",
        ours.table(),
        "wasmtime 48 instantiate + init",
        wt.median_ns / 1e3,
        wt.p99_ns / 1e3,
        wt.median_cycles,
        wt.p99_cycles,
        wt.median_ns / ours.restore.median_ns,
        wt.median_ns / ours.restore_call.median_ns
    )
}
