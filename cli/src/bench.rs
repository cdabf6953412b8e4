//! Cold-start measurement: how long a Faaslet takes to start fresh or be
//! restored from a Proto-Faaslet, what an idle one costs in memory, how
//! many can start per second and how many fit in one process.
//!
//! The building blocks ([`measure`], [`rate`], [`smaps_rollup`],
//! [`per_idle`]) are shared by `faaslet bench cold-start` and the
//! `cold_start` bench of `faaslet-benches`, which runs the same
//! measurements next to wasmtime. [`ColdStartReport::run`] does the whole
//! engine-only set and prints as a table or JSON; its "large function"
//! section is [`LargeInitReport`] (a C function building 50 MB of tables
//! in `_initialize`: first start against restore).
//!
//! ```
//! use faaslet_cli::bench::measure;
//!
//! let mut n = 0u64;
//! let stat = measure(1_000, || n += 1);
//! assert!(stat.median_ns <= stat.p99_ns);
//! assert_eq!(n, 1_100); // 100 warm-up runs, then 1,000 timed ones
//! ```

use faaslet::{Bounds, Config, Engine, Error, Instance, Module, Store};
use faaslet_snapshot::Snapshot;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The module every cold-start figure uses: one page of memory and an
/// exported no-op function.
pub const NOOP_WAT: &str = r#"(module (memory (export "memory") 1 1) (func (export "noop")))"#;

/// The large function: `benches/fixtures/large_init.c` built with clang
/// (the command is at the top of the `.c`). Its `_initialize` fills a
/// 50 MB table with pi(i) for i < 12,500,000 (a sieve, then prefix
/// counts); `lookup(key)` returns a checksum of 16 entries hashed from
/// `key`; `prime_count(n)` returns pi(n). No imports; 820 pages of memory.
pub const LARGE_INIT_WASM: &[u8] = include_bytes!("../../benches/fixtures/large_init.wasm");

/// The time-stamp counter (0 where there is none).
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc has no preconditions on x86_64; it only reads the
        // time-stamp counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// Distribution of one operation's cost over many runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// Median wall time, ns.
    pub median_ns: f64,
    /// 99th percentile wall time, ns.
    pub p99_ns: f64,
    /// Median time-stamp-counter cycles.
    pub median_cycles: u64,
    /// 99th percentile time-stamp-counter cycles.
    pub p99_cycles: u64,
}

/// Runs `f` `iters / 10` times to warm up, then `iters` times timed
/// (wall clock and time-stamp counter per run).
pub fn measure(iters: usize, mut f: impl FnMut()) -> Stat {
    let iters = iters.max(1);
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
        cy.push(c2.wrapping_sub(c));
    }
    ns.sort_by(f64::total_cmp);
    cy.sort_unstable();
    let p99 = ((iters * 99) / 100).min(iters - 1);
    Stat {
        median_ns: ns[iters / 2],
        p99_ns: ns[p99],
        median_cycles: cy[iters / 2],
        p99_cycles: cy[p99],
    }
}

/// Runs `f` in batches of 100 for about `dur`; returns runs per second.
pub fn rate(dur: Duration, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < dur {
        for _ in 0..100 {
            f();
        }
        n += 100;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// The process's (PSS, RSS) in KiB from `/proc/self/smaps_rollup`
/// ((0, 0) where it cannot be read).
pub fn smaps_rollup() -> (u64, u64) {
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

/// (PSS KiB, RSS KiB) per idle instance with `n` of them alive, each made
/// by `make`: the growth of [`smaps_rollup`] divided by `n`.
pub fn per_idle<T>(n: usize, mut make: impl FnMut() -> T) -> (f64, f64) {
    let n = n.max(1);
    // Memory freed by earlier work but still held by the allocator would
    // be handed back (or reused) while the Faaslets are made, and the
    // difference would come out too small, or clamped to 0 (as it did
    // after the Python cold starts): give it back to the kernel first.
    trim_heap();
    let (p0, r0) = smaps_rollup();
    let alive: Vec<T> = (0..n).map(|_| make()).collect();
    trim_heap();
    let (p1, r1) = smaps_rollup();
    drop(black_box(alive));
    // Signed: a negative figure says the measurement was disturbed, which
    // a clamped 0 would hide.
    (
        (p1 as f64 - p0 as f64) / n as f64,
        (r1 as f64 - r0 as f64) / n as f64,
    )
}

/// Returns the allocator's free memory to the kernel (glibc's
/// `malloc_trim`; elsewhere nothing).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory; no pointers of
    // ours are involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How many restored, idle Faaslets of `snap` one thread keeps alive:
/// restores until `limit` or the first error. Returns the count and the
/// error, if one stopped it.
pub fn density(snap: &Snapshot, limit: usize) -> (usize, Option<Error>) {
    let engine = snap.module().engine().clone();
    let mut alive = Vec::new();
    while alive.len() < limit {
        let mut store = Store::new(&engine, ());
        match snap.restore(&mut store, &[]) {
            Ok(i) => alive.push((store, i)),
            Err(e) => return (alive.len(), Some(e)),
        }
    }
    (alive.len(), None)
}

/// Memory per idle Faaslet with some number alive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleMemory {
    /// How many were alive.
    pub alive: usize,
    /// PSS per Faaslet, KiB.
    pub pss_kib: f64,
    /// RSS per Faaslet, KiB.
    pub rss_kib: f64,
}

/// The engine-only cold-start figures of `faaslet bench cold-start`.
#[derive(Debug, Clone, PartialEq)]
pub struct ColdStartReport {
    /// Timed runs per start figure.
    pub iterations: usize,
    /// Fresh instantiation of the compiled no-op module (store + instance).
    pub fresh: Stat,
    /// Restore from its Proto-Faaslet (store + instance).
    pub restore: Stat,
    /// Fresh starts plus a call of the no-op, per second, over ~1 s.
    pub fresh_rate: f64,
    /// Restores plus a call of the no-op, per second, over ~1 s.
    pub restore_rate: f64,
    /// Memory per idle restored Faaslet, at 1,000 and 10,000 alive.
    pub idle: Vec<IdleMemory>,
    /// Restored idle Faaslets held at once in explicit-bounds mode.
    pub density: usize,
    /// The density target (the run stops there).
    pub density_target: usize,
    /// What stopped the density run short of the target, if anything.
    pub density_error: Option<String>,
    /// The large function: first start against restore.
    pub large: LargeInitReport,
}

impl ColdStartReport {
    /// Measures everything, `iterations` timed runs per start figure.
    pub fn run(iterations: usize) -> Result<ColdStartReport, Error> {
        // First, so that its idle-memory figure is not flattered by heap
        // the no-op runs freed.
        let large = LargeInitReport::run(LARGE_FIRST_START_RUNS, iterations.min(2_000))?;
        let wasm = faaslet::wat_to_wasm(NOOP_WAT)?;
        let engine = Engine::default();
        let module = Module::new(&engine, &wasm)?;
        let mut s = Store::new(&engine, ());
        let snap = Snapshot::create(&mut s, &module, &[], None).map_err(snapshot_error)?;
        drop(s);
        // Surface errors once, outside the timed loops (which unwrap).
        Instance::new(&mut Store::new(&engine, ()), &module, &[])?;
        snap.restore(&mut Store::new(&engine, ()), &[])?;

        let fresh = measure(iterations, || {
            let mut store = Store::new(&engine, ());
            black_box(Instance::new(&mut store, &module, &[]).expect("checked above"));
        });
        let restore = measure(iterations, || {
            let mut store = Store::new(&engine, ());
            black_box(snap.restore(&mut store, &[]).expect("checked above"));
        });
        let call = |store: &mut Store<()>, inst: Instance| {
            let f = inst
                .get_typed_func::<(), (), _>(&mut *store, "noop")
                .expect("the no-op module exports noop");
            f.call(&mut *store, ()).expect("noop does not trap");
        };
        let second = Duration::from_secs(1);
        let fresh_rate = rate(second, || {
            let mut store = Store::new(&engine, ());
            let i = Instance::new(&mut store, &module, &[]).expect("checked above");
            call(&mut store, i);
        });
        let restore_rate = rate(second, || {
            let mut store = Store::new(&engine, ());
            let i = snap.restore(&mut store, &[]).expect("checked above");
            call(&mut store, i);
        });
        let idle = [1_000usize, 10_000]
            .into_iter()
            .map(|n| {
                let (pss_kib, rss_kib) = per_idle(n, || {
                    let mut store = Store::new(&engine, ());
                    let i = snap.restore(&mut store, &[]).expect("checked above");
                    (store, i)
                });
                IdleMemory {
                    alive: n,
                    pss_kib,
                    rss_kib,
                }
            })
            .collect();

        // Density mode: explicit checks without canary pages, so memories
        // merge into few kernel mappings (see `Config::explicit_canaries`).
        let dengine = Engine::new(&Config {
            bounds: Bounds::Explicit,
            explicit_canaries: false,
            ..Config::default()
        })?;
        let dmodule = Module::new(&dengine, &wasm)?;
        let mut s = Store::new(&dengine, ());
        let dsnap = Snapshot::create(&mut s, &dmodule, &[], None).map_err(snapshot_error)?;
        drop(s);
        let density_target = 100_000;
        let (density, err) = density(&dsnap, density_target);
        drop(dsnap);
        Ok(ColdStartReport {
            iterations,
            fresh,
            restore,
            fresh_rate,
            restore_rate,
            idle,
            density,
            density_target,
            density_error: err.map(|e| e.to_string()),
            large,
        })
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let n = self.iterations;
        let _ = writeln!(o, "cold start of a no-op function ({n} timed runs each):");
        let _ = writeln!(
            o,
            "{:<34} {:>11} {:>11} {:>10} {:>10} {:>12}",
            "", "median", "p99", "med cyc", "p99 cyc", "rate (/s)"
        );
        for (name, st, r) in [
            (
                "faaslet fresh (compiled module)",
                &self.fresh,
                self.fresh_rate,
            ),
            (
                "faaslet restore (Proto-Faaslet)",
                &self.restore,
                self.restore_rate,
            ),
        ] {
            let _ = writeln!(
                o,
                "{:<34} {:>8.2} us {:>8.2} us {:>10} {:>10} {:>12.0}",
                name,
                st.median_ns / 1e3,
                st.p99_ns / 1e3,
                st.median_cycles,
                st.p99_cycles,
                r
            );
        }
        let _ = writeln!(
            o,
            "memory per idle restored Faaslet (smaps_rollup delta / N):"
        );
        for m in &self.idle {
            let _ = writeln!(
                o,
                "  N={:<6} PSS {:>6.1} KiB  RSS {:>6.1} KiB",
                m.alive, m.pss_kib, m.rss_kib
            );
        }
        let _ = writeln!(
            o,
            "density (explicit bounds, restored, one process): {} idle Faaslets ({})",
            self.density,
            match &self.density_error {
                None => format!("reached the {} target", self.density_target),
                Some(e) => format!("stopped by: {e}"),
            }
        );
        o.push_str(&self.large.table());
        o
    }

    /// The report as a JSON object.
    pub fn json(&self) -> String {
        let stat = |s: &Stat| {
            format!(
                r#"{{"median_ns":{:.1},"p99_ns":{:.1},"median_cycles":{},"p99_cycles":{}}}"#,
                s.median_ns, s.p99_ns, s.median_cycles, s.p99_cycles
            )
        };
        let idle: Vec<String> = self
            .idle
            .iter()
            .map(|m| {
                format!(
                    r#"{{"alive":{},"pss_kib":{:.2},"rss_kib":{:.2}}}"#,
                    m.alive, m.pss_kib, m.rss_kib
                )
            })
            .collect();
        format!(
            r#"{{"iterations":{},"fresh":{},"restore":{},"fresh_rate_per_s":{:.0},"restore_rate_per_s":{:.0},"idle":[{}],"density":{{"alive":{},"target":{},"error":{}}},"large":{}}}"#,
            self.iterations,
            stat(&self.fresh),
            stat(&self.restore),
            self.fresh_rate,
            self.restore_rate,
            idle.join(","),
            self.density,
            self.density_target,
            match &self.density_error {
                None => "null".to_string(),
                Some(e) => json_string(e),
            },
            self.large.json()
        )
    }
}

/// Timed first starts of the large function in `faaslet bench cold-start`
/// (each runs its ~50 MB initialisation, so few).
pub const LARGE_FIRST_START_RUNS: usize = 10;

/// The large function ([`LARGE_INIT_WASM`]) started fresh against restored
/// from its Proto-Faaslet, in the default (guard-page) bounds mode.
#[derive(Debug, Clone, PartialEq)]
pub struct LargeInitReport {
    /// Bytes of linear memory the snapshot holds.
    pub memory_bytes: usize,
    /// Timed runs of the first-start figure.
    pub first_start_runs: usize,
    /// Timed runs of the restore figures.
    pub restore_runs: usize,
    /// First start: store + instantiate + `_initialize` (+ drop).
    pub first_start: Stat,
    /// Restore from the Proto-Faaslet: store + instance (+ drop).
    pub restore: Stat,
    /// Restore plus one `lookup` call (touches 16 table entries, so up to
    /// 16 first-touch page faults on the image).
    pub restore_call: Stat,
    /// One `lookup` call on a warm restored instance (pages already
    /// mapped): the call alone.
    pub warm_call: Stat,
    /// What `lookup(1)` returned, first start and restored (must agree).
    pub checksums: (u32, u32),
    /// Memory per idle restored instance.
    pub idle_restored: IdleMemory,
    /// Memory per idle freshly initialised instance, for contrast.
    pub idle_fresh: IdleMemory,
}

/// A fresh store and instance of `module` with `_initialize` run.
fn first_start(engine: &Engine, module: &Module) -> Result<(Store<()>, Instance), Error> {
    let mut store = Store::new(engine, ());
    let inst = Instance::new(&mut store, module, &[])?;
    inst.get_typed_func::<(), (), _>(&mut store, "_initialize")?
        .call(&mut store, ())?;
    Ok((store, inst))
}

/// `lookup(key)` on `inst`.
fn lookup(store: &mut Store<()>, inst: Instance, key: i32) -> Result<u32, Error> {
    let f = inst.get_typed_func::<i32, i32, _>(&mut *store, "lookup")?;
    Ok(f.call(&mut *store, key)? as u32)
}

impl LargeInitReport {
    /// Measures `first_start_runs` timed first starts and `restore_runs`
    /// timed restores (each after a tenth as many warm-up runs).
    pub fn run(first_start_runs: usize, restore_runs: usize) -> Result<LargeInitReport, Error> {
        let engine = Engine::default();
        let module = Module::new(&engine, LARGE_INIT_WASM)?;
        let mut s = Store::new(&engine, ());
        let snap =
            Snapshot::create(&mut s, &module, &[], Some("_initialize")).map_err(snapshot_error)?;
        drop(s);
        // Surface errors (and check the answers agree) outside the timed loops.
        let (mut store, inst) = first_start(&engine, &module)?;
        let fresh_sum = lookup(&mut store, inst, 1)?;
        drop(store);
        let mut store = Store::new(&engine, ());
        let inst = snap.restore(&mut store, &[])?;
        let restored_sum = lookup(&mut store, inst, 1)?;
        drop(store);
        if fresh_sum != restored_sum {
            return Err(Error::Resource(format!(
                "restored lookup(1) = {restored_sum:#x}, fresh = {fresh_sum:#x}"
            )));
        }

        let first = measure(first_start_runs, || {
            black_box(first_start(&engine, &module).expect("checked above"));
        });
        let restore = measure(restore_runs, || {
            let mut store = Store::new(&engine, ());
            black_box(snap.restore(&mut store, &[]).expect("checked above"));
        });
        let mut key = 0;
        let restore_call = measure(restore_runs, || {
            let mut store = Store::new(&engine, ());
            let i = snap.restore(&mut store, &[]).expect("checked above");
            key += 1;
            black_box(lookup(&mut store, i, key).expect("checked above"));
        });
        let mut store = Store::new(&engine, ());
        let warm = snap.restore(&mut store, &[])?;
        let warm_call = measure(restore_runs, || {
            key += 1;
            black_box(lookup(&mut store, warm, key).expect("checked above"));
        });
        drop(store);
        let idle = |n: usize, make: &mut dyn FnMut() -> (Store<()>, Instance)| {
            let (pss_kib, rss_kib) = per_idle(n, make);
            IdleMemory {
                alive: n,
                pss_kib,
                rss_kib,
            }
        };
        let idle_restored = idle(1_000, &mut || {
            let mut store = Store::new(&engine, ());
            let i = snap.restore(&mut store, &[]).expect("checked above");
            (store, i)
        });
        let idle_fresh = idle(4, &mut || {
            first_start(&engine, &module).expect("checked above")
        });
        Ok(LargeInitReport {
            memory_bytes: snap.memory_bytes(),
            first_start_runs,
            restore_runs,
            first_start: first,
            restore,
            restore_call,
            warm_call,
            checksums: (fresh_sum, restored_sum),
            idle_restored,
            idle_fresh,
        })
    }

    /// Median first start over median restore.
    pub fn ratio(&self) -> f64 {
        self.first_start.median_ns / self.restore.median_ns
    }

    /// Median first start over median restore plus one call.
    pub fn ratio_with_call(&self) -> f64 {
        self.first_start.median_ns / self.restore_call.median_ns
    }

    /// The section as a table.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "large function (_initialize builds {:.1} MB of tables; {} first starts, {} restores):",
            self.memory_bytes as f64 / 1e6,
            self.first_start_runs,
            self.restore_runs
        );
        let _ = writeln!(
            o,
            "{:<34} {:>11} {:>11} {:>12} {:>12}",
            "", "median", "p99", "med cyc", "p99 cyc"
        );
        for (name, st) in [
            ("first start (instantiate + init)", &self.first_start),
            ("restore (Proto-Faaslet)", &self.restore),
            ("restore + one lookup call", &self.restore_call),
            ("lookup call, warm instance", &self.warm_call),
        ] {
            let _ = writeln!(
                o,
                "{:<34} {:>8.2} us {:>8.2} us {:>12} {:>12}",
                name,
                st.median_ns / 1e3,
                st.p99_ns / 1e3,
                st.median_cycles,
                st.p99_cycles
            );
        }
        let _ = writeln!(
            o,
            "first start / restore: {:.0}x (with the call: {:.0}x); lookup(1) = {:#010x} both ways",
            self.ratio(),
            self.ratio_with_call(),
            self.checksums.0
        );
        for (what, m) in [
            ("restored", &self.idle_restored),
            ("freshly initialised", &self.idle_fresh),
        ] {
            let _ = writeln!(
                o,
                "  per idle {what} instance, N={:<5} PSS {:>9.1} KiB  RSS {:>9.1} KiB",
                m.alive, m.pss_kib, m.rss_kib
            );
        }
        o
    }

    /// The section as a JSON object.
    pub fn json(&self) -> String {
        let stat = |s: &Stat| {
            format!(
                r#"{{"median_ns":{:.1},"p99_ns":{:.1},"median_cycles":{},"p99_cycles":{}}}"#,
                s.median_ns, s.p99_ns, s.median_cycles, s.p99_cycles
            )
        };
        let idle = |m: &IdleMemory| {
            format!(
                r#"{{"alive":{},"pss_kib":{:.2},"rss_kib":{:.2}}}"#,
                m.alive, m.pss_kib, m.rss_kib
            )
        };
        format!(
            r#"{{"memory_bytes":{},"first_start_runs":{},"restore_runs":{},"first_start":{},"restore":{},"restore_call":{},"warm_call":{},"ratio":{:.1},"ratio_with_call":{:.1},"checksum":{},"idle_restored":{},"idle_fresh":{}}}"#,
            self.memory_bytes,
            self.first_start_runs,
            self.restore_runs,
            stat(&self.first_start),
            stat(&self.restore),
            stat(&self.restore_call),
            stat(&self.warm_call),
            self.ratio(),
            self.ratio_with_call(),
            self.checksums.0,
            idle(&self.idle_restored),
            idle(&self.idle_fresh)
        )
    }
}

fn snapshot_error(e: faaslet_snapshot::SnapshotError) -> Error {
    match e {
        faaslet_snapshot::SnapshotError::Engine(e) => e,
        other => Error::Resource(other.to_string()),
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
    }

    #[test]
    fn percentiles_come_from_the_sorted_runs() {
        let mut i = 0u64;
        // Every 50th timed run sleeps: the median stays fast, the p99 does not.
        let s = measure(1_000, || {
            i += 1;
            if i > 100 && i.is_multiple_of(50) {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        assert!(s.median_ns < 500_000.0, "{s:?}");
        assert!(s.p99_ns >= 1_000_000.0, "{s:?}");
    }
}
