//! Cold-start comparison: faaslet fresh start, faaslet restore from a
//! Proto-Faaslet snapshot, and wasmtime (pooling allocator + copy-on-write
//! memory images), measured side by side in one run, plus memory per idle
//! Faaslet (PSS/RSS from /proc/self/smaps_rollup), sustained start rate and
//! density. Prints a table.
//!
//! Run with `cargo bench -p faaslet-benches --bench cold_start`.

use faaslet::snapshot::Snapshot;
use faaslet::{Bounds, Config, Engine, Instance, Module, Store};
use std::hint::black_box;
use std::time::{Duration, Instant};

const NOOP: &str = r#"(module (memory (export "memory") 1 1) (func (export "noop")))"#;

fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

struct Stat {
    median_ns: f64,
    median_cycles: u64,
}

fn measure(iters: usize, mut f: impl FnMut()) -> Stat {
    for _ in 0..iters / 10 {
        f();
    }
    let mut ns = Vec::with_capacity(iters);
    let mut cy = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        let c = rdtsc();
        f();
        let c2 = rdtsc();
        ns.push(t.elapsed().as_nanos() as f64);
        cy.push(c2 - c);
    }
    ns.sort_by(|a, b| a.partial_cmp(b).unwrap());
    cy.sort();
    Stat {
        median_ns: ns[iters / 2],
        median_cycles: cy[iters / 2],
    }
}

fn rate(mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < Duration::from_secs(1) {
        for _ in 0..100 {
            f();
        }
        n += 100;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn smaps() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("Pss:"), field("Rss:"))
}

/// (PSS KiB, RSS KiB) per idle Faaslet with `n` alive.
fn per_idle(n: usize, mut make: impl FnMut() -> Box<dyn std::any::Any>) -> (f64, f64) {
    let (p0, r0) = smaps();
    let alive: Vec<_> = (0..n).map(|_| make()).collect();
    let (p1, r1) = smaps();
    drop(alive);
    (
        (p1.saturating_sub(p0)) as f64 / n as f64,
        (r1.saturating_sub(r0)) as f64 / n as f64,
    )
}

fn main() {
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
    let rate_fresh = rate(|| {
        let mut store = Store::new(&engine, ());
        let i = Instance::new(&mut store, &module, &[]).unwrap();
        noop_call(&mut store, i);
    });
    let rate_restore = rate(|| {
        let mut store = Store::new(&engine, ());
        let i = snap.restore(&mut store, &[]).unwrap();
        noop_call(&mut store, i);
    });
    let rate_wt = rate(|| {
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
            Box::new((store, i))
        });
        let theirs = per_idle(n, || {
            let mut store = wasmtime::Store::new(&wengine, ());
            let i = pre.instantiate(&mut store).unwrap();
            Box::new((store, i))
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
    let mut alive = Vec::new();
    let mut density_err = String::new();
    while alive.len() < 100_000 {
        let mut store = Store::new(&dengine, ());
        match dsnap.restore(&mut store, &[]) {
            Ok(i) => alive.push((store, i)),
            Err(e) => {
                density_err = e.to_string();
                break;
            }
        }
    }
    let density = alive.len();
    drop(alive);

    println!("\ncold start of a no-op function (median of {iters}), same run:");
    println!(
        "{:<44} {:>12} {:>12} {:>14}",
        "measure", "time", "cycles", "rate (/s)"
    );
    for (name, st, r) in [
        ("faaslet fresh (compiled module)", &fresh, rate_fresh),
        ("faaslet restore (Proto-Faaslet)", &restore, rate_restore),
        ("wasmtime 48 pooling + CoW image", &wt, rate_wt),
    ] {
        println!(
            "{:<44} {:>9.2} us {:>12} {:>14.0}",
            name,
            st.median_ns / 1e3,
            st.median_cycles,
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
        if density_err.is_empty() {
            " (stopped at the 100,000 target)".to_string()
        } else {
            format!(" (stopped: {density_err})")
        }
    );
    println!("targets: restore <= 5 us, fresh <= 20 us, <= 32 KiB PSS, >= 100,000 idle");
}
