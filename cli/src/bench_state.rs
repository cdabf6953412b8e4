//! `faaslet bench state`: what sharing state through memory buys, measured
//! next to the alternatives in the same run.
//!
//! * **Memory**: N Faaslets (instances in N stores) each map one value of
//!   `size` bytes with `__faasm_read_state_ptr` and read every page of it;
//!   the process's PSS and RSS with all N alive, against the copying path
//!   (each Faaslet `__faasm_read_state`s the value into its own pages).
//! * **Reading** the whole value through the mapped pointer against
//!   copying it in with `__faasm_read_state` and reading the copy.
//! * **Tier**: pull and push of 1 KB, 1 MB and `size` bytes against plain
//!   `GET`/`SET` of the same bytes with the `redis` crate, on the same
//!   server (one given with `--redis`, else a `redis-server` started for
//!   the run on a free port).
//! * **Partial push** of 1% of the value (one page in a hundred dirty)
//!   against a full push.
//!
//! ```no_run
//! let report = faaslet_cli::bench_state::StateReport::run(&Default::default()).unwrap();
//! println!("{}", report.table());
//! ```

use faaslet::{Engine, Instance, Linker, Module, Store};
use faaslet_hostapi::faasm::{FaasmCtx, NoChaining};
use faaslet_platform::faasm::{add_to_linker, FaasmView};
use faaslet_state::{LocalStateStore, RedisTier, StateLimits, StateStore};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Debug, Clone)]
pub struct StateBenchConfig {
    /// Bytes of the large value (default 100 MB).
    pub size: usize,
    /// How many Faaslets map it at once, one row each (default 1, 10, 100).
    pub counts: Vec<usize>,
    /// A Redis to measure against (`redis://HOST:PORT`); else one is
    /// started for the run.
    pub redis: Option<String>,
    /// The copying path is skipped for a row whose copies would take more
    /// than this many bytes (default 4 GiB).
    pub copy_limit: usize,
}

impl Default for StateBenchConfig {
    fn default() -> StateBenchConfig {
        StateBenchConfig {
            size: 100_000_000,
            counts: vec![1, 10, 100],
            redis: None,
            copy_limit: 4 << 30,
        }
    }
}

/// One row of the memory table.
#[derive(Debug, Clone, Copy)]
pub struct MemoryRow {
    /// Faaslets alive, each holding the value.
    pub faaslets: usize,
    /// Process PSS and RSS (KiB) with the value mapped into each.
    pub mapped_pss_kib: u64,
    /// RSS (KiB), mapped (counts shared pages once per mapping).
    pub mapped_rss_kib: u64,
    /// Process PSS (KiB) with a private copy in each, if measured.
    pub copied_pss_kib: Option<u64>,
}

/// One row of the tier table: seconds per operation.
#[derive(Debug, Clone, Copy)]
pub struct TierRow {
    /// Value size in bytes.
    pub bytes: usize,
    /// Our pull (full).
    pub pull_s: f64,
    /// Plain `GET` of the same bytes.
    pub get_s: f64,
    /// Our push (full).
    pub push_s: f64,
    /// Plain `SET` of the same bytes.
    pub set_s: f64,
}

/// Everything `faaslet bench state` measures.
#[derive(Debug, Clone)]
pub struct StateReport {
    /// The value size.
    pub size: usize,
    /// Process PSS/RSS (KiB) before any Faaslet exists (value filled).
    pub baseline_pss_kib: u64,
    /// One row per Faaslet count.
    pub memory: Vec<MemoryRow>,
    /// Median seconds to read the value through the mapped pointer (map
    /// call included).
    pub read_mapped_s: f64,
    /// Median seconds to copy it in with `__faasm_read_state` and read it.
    pub read_copied_s: f64,
    /// Where the tier rows were measured.
    pub redis: String,
    /// Pull/push against plain GET/SET.
    pub tier: Vec<TierRow>,
    /// Seconds for a push of 1% dirty pages of the value.
    pub partial_push_s: f64,
    /// Seconds for a full push of the value.
    pub full_push_s: f64,
    /// Dirty runs in the partial push.
    pub partial_runs: usize,
    /// What write tracking costs, if this kernel tracks writes.
    pub tracking: Option<TrackingCost>,
}

/// What page-granular write tracking of a mapped value costs (medians).
#[derive(Debug, Clone, Copy)]
pub struct TrackingCost {
    /// Seconds for the guest to write one byte in every page right after
    /// a take (every page write-protected: one minor fault each).
    pub write_protected_s: f64,
    /// The same pass again (pages already writable: no faults).
    pub write_unprotected_s: f64,
    /// Seconds for one take (scan of the mapping, all pages written).
    pub take_s: f64,
    /// Pages in the mapping.
    pub pages: usize,
}

/// The guest: `map(len)` maps `big` and sums every 8-byte word;
/// `copy(len)` grows its memory, reads `big` into it and sums the same.
const GUEST: &str = r#"(module
  (import "env" "__faasm_read_state_ptr" (func $ptr (param i32 i32) (result i32)))
  (import "env" "__faasm_read_state" (func $read (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "big\00")
  (func $sum (param $p i32) (param $len i32) (result i64) (local $s i64) (local $end i32)
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
      (local.set $s (i64.add (local.get $s) (i64.load (local.get $p))))
      (local.set $p (i32.add (local.get $p) (i32.const 8)))
      (br $l)))
    (local.get $s))
  (func (export "ptr") (param $len i32) (result i32) (call $ptr (i32.const 0) (local.get $len)))
  ;; writes one byte in every 4 KiB page of [p, p + len)
  (func (export "touch") (param $p i32) (param $len i32) (local $end i32)
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
      (i32.store8 (local.get $p) (i32.const 7))
      (local.set $p (i32.add (local.get $p) (i32.const 4096)))
      (br $l))))
  (func (export "map") (param $len i32) (result i64)
    (call $sum (call $ptr (i32.const 0) (local.get $len)) (local.get $len)))
  (func (export "copy") (param $len i32) (result i64) (local $at i32)
    (local.set $at (i32.mul (memory.grow (i32.add (i32.shr_u (local.get $len) (i32.const 16)) (i32.const 1)))
                            (i32.const 65536)))
    (if (i32.lt_s (local.get $at) (i32.const 0)) (then unreachable))
    (drop (call $read (i32.const 0) (local.get $at) (local.get $len)))
    (call $sum (local.get $at) (local.get $len))))"#;

struct Data {
    faasm: FaasmCtx,
}

impl FaasmView for Data {
    fn faasm(&mut self) -> &mut FaasmCtx {
        &mut self.faasm
    }
}

struct Guest {
    engine: Engine,
    module: Module,
    linker: Linker<Data>,
    state: Arc<dyn StateStore>,
}

impl Guest {
    fn new(state: Arc<dyn StateStore>) -> Result<Guest, String> {
        let engine = Engine::default();
        let module = Module::new(&engine, GUEST).map_err(|e| e.to_string())?;
        let mut linker = Linker::new(&engine);
        add_to_linker(&mut linker).map_err(|e| e.to_string())?;
        Ok(Guest {
            engine,
            module,
            linker,
            state,
        })
    }

    fn instance(&mut self) -> Result<(Store<Data>, Instance), String> {
        let faasm = FaasmCtx::new(Vec::new(), self.state.clone(), Box::new(NoChaining));
        let mut store = Store::new(&self.engine, Data { faasm });
        let inst = self
            .linker
            .instantiate(&mut store, &self.module)
            .map_err(|e| e.to_string())?;
        Ok((store, inst))
    }

    fn call(
        store: &mut Store<Data>,
        inst: Instance,
        name: &str,
        len: usize,
    ) -> Result<i64, String> {
        let f = inst
            .get_func(&mut *store, name)
            .ok_or_else(|| format!("no export {name}"))?
            .typed::<i32, i64, _>(&*store)
            .map_err(|e| e.to_string())?;
        f.call(store, len as i32).map_err(|e| e.to_string())
    }
}

/// A `redis-server` of the run's own, killed on drop.
pub struct OwnRedis(Child);

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a `redis-server` on a free loopback port (no persistence) and
/// waits until it answers; its URL and handle (the benches and the CLI's
/// process tests use it).
pub fn start_redis() -> Result<(String, OwnRedis), String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server (apt-get install redis-server): {e}"))?;
    let own = OwnRedis(child);
    let url = format!("redis://127.0.0.1:{port}");
    let start = Instant::now();
    while RedisTier::connect(&url).is_err() {
        if start.elapsed() > Duration::from_secs(20) {
            return Err("redis-server did not answer within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((url, own))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds per run of `f`, the median of `runs`.
fn time(runs: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64());
    }
    Ok(median(v))
}

fn progress(msg: &str) {
    eprintln!("bench state: {msg}");
}

impl StateReport {
    /// Runs every measurement (a minute or two at the default size; the
    /// copying rows need `N x size` bytes of memory).
    pub fn run(c: &StateBenchConfig) -> Result<StateReport, String> {
        if c.size == 0 || c.size > i32::MAX as usize / 2 {
            return Err(format!("size {} is out of range (1 B .. 1 GiB)", c.size));
        }
        let st = |e: faaslet_state::StateError| e.to_string();
        // Memory and reading: an in-process tier (no network in the way).
        let local = Arc::new(LocalStateStore::new());
        let state: Arc<dyn StateStore> = local.clone();
        let value = state.value("default", "big").map_err(st)?;
        let fill: Vec<u8> = (0..c.size).map(|i| (i % 251) as u8).collect();
        value.set(&fill).map_err(st)?;
        drop(fill);
        let mut guest = Guest::new(state.clone())?;
        // Warm up the engine's code and the allocator, then measure.
        {
            let (mut s, i) = guest.instance()?;
            Guest::call(&mut s, i, "map", 4096)?;
        }
        let (baseline_pss_kib, _) = crate::bench::smaps_rollup();
        let mut memory = Vec::new();
        let mut expect = None;
        for &n in &c.counts {
            progress(&format!("{n} Faaslets mapping {} bytes", c.size));
            let mut live = Vec::with_capacity(n);
            for _ in 0..n {
                let (mut s, i) = guest.instance()?;
                let sum = Guest::call(&mut s, i, "map", c.size)?;
                if *expect.get_or_insert(sum) != sum {
                    return Err("a mapped Faaslet read different bytes".into());
                }
                live.push(s);
            }
            let (mapped_pss_kib, mapped_rss_kib) = crate::bench::smaps_rollup();
            drop(live);
            let copied_pss_kib = if n.saturating_mul(c.size) <= c.copy_limit {
                progress(&format!("{n} Faaslets copying {} bytes", c.size));
                let mut live = Vec::with_capacity(n);
                for _ in 0..n {
                    let (mut s, i) = guest.instance()?;
                    if Guest::call(&mut s, i, "copy", c.size)? != expect.unwrap_or(0) {
                        return Err("a copying Faaslet read different bytes".into());
                    }
                    live.push(s);
                }
                let (pss, _) = crate::bench::smaps_rollup();
                Some(pss)
            } else {
                None
            };
            memory.push(MemoryRow {
                faaslets: n,
                mapped_pss_kib,
                mapped_rss_kib,
                copied_pss_kib,
            });
        }
        progress("reading through the pointer and by copy");
        let read_mapped_s = time(5, || {
            let (mut s, i) = guest.instance()?;
            Guest::call(&mut s, i, "map", c.size).map(drop)
        })?;
        let read_copied_s = time(5, || {
            let (mut s, i) = guest.instance()?;
            Guest::call(&mut s, i, "copy", c.size).map(drop)
        })?;
        progress("write tracking: writes after a take, writes without, the take");
        let tracking = if faaslet_sfi::writes::available() {
            let (mut s, i) = guest.instance()?;
            let ptr = i
                .get_typed_func::<i32, i32, _>(&mut s, "ptr")
                .map_err(|e| e.to_string())?
                .call(&mut s, c.size as i32)
                .map_err(|e| e.to_string())?;
            let touch = i
                .get_typed_func::<(i32, i32), (), _>(&mut s, "touch")
                .map_err(|e| e.to_string())?;
            let mem = i.memory0(&s).ok_or("no memory")?;
            let mut rows = (Vec::new(), Vec::new(), Vec::new());
            touch
                .call(&mut s, (ptr, c.size as i32))
                .map_err(|e| e.to_string())?;
            for _ in 0..5 {
                let t = Instant::now();
                let w = mem
                    .take_written(&mut s, ptr as u64)
                    .map_err(|e| e.to_string())?;
                rows.2.push(t.elapsed().as_secs_f64());
                if w.is_none() {
                    return Err("the mapping is not tracked".into());
                }
                let t = Instant::now();
                touch
                    .call(&mut s, (ptr, c.size as i32))
                    .map_err(|e| e.to_string())?;
                rows.0.push(t.elapsed().as_secs_f64());
                let t = Instant::now();
                touch
                    .call(&mut s, (ptr, c.size as i32))
                    .map_err(|e| e.to_string())?;
                rows.1.push(t.elapsed().as_secs_f64());
            }
            Some(TrackingCost {
                write_protected_s: median(rows.0),
                write_unprotected_s: median(rows.1),
                take_s: median(rows.2),
                pages: c.size.div_ceil(4096),
            })
        } else {
            None
        };
        drop(guest);
        drop(value);
        drop(state);
        drop(local);

        // The tier, against plain GET/SET on the same server.
        let (url, _own) = match &c.redis {
            Some(u) => (u.clone(), None),
            None => {
                progress("starting redis-server");
                let (u, o) = start_redis()?;
                (u, Some(o))
            }
        };
        let tier = Arc::new(RedisTier::connect(&url).map_err(st)?);
        let store = LocalStateStore::with_global(tier.clone(), StateLimits::default());
        let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
        let mut plain = client.get_connection().map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        for (bytes, runs) in [(1000usize, 200usize), (1_000_000, 20), (c.size, 3)] {
            progress(&format!("pull/push of {bytes} bytes against GET/SET"));
            let v = store.value("bench", &format!("tier-{bytes}")).map_err(st)?;
            let data: Vec<u8> = (0..bytes).map(|i| (i % 253) as u8).collect();
            v.set(&data).map_err(st)?;
            let key = format!("faaslet-bench-plain-{bytes}");
            let push_s = time(runs, || store.push(&v, None).map_err(st))?;
            let pull_s = time(runs, || store.pull(&v, None).map_err(st))?;
            let set_s = time(runs, || {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&data[..])
                    .query::<()>(&mut plain)
                    .map_err(|e| e.to_string())
            })?;
            let get_s = time(runs, || {
                let got: Vec<u8> = redis::cmd("GET")
                    .arg(&key)
                    .query(&mut plain)
                    .map_err(|e| e.to_string())?;
                if got.len() != bytes {
                    return Err("GET returned the wrong length".into());
                }
                Ok(())
            })?;
            let _: () = redis::cmd("DEL")
                .arg(&key)
                .query(&mut plain)
                .map_err(|e| e.to_string())?;
            rows.push(TierRow {
                bytes,
                pull_s,
                get_s,
                push_s,
                set_s,
            });
        }

        progress("partial push of 1% against a full push");
        let v = store
            .value("bench", &format!("tier-{}", c.size))
            .map_err(st)?;
        let page = faaslet_state::page_size();
        let pages = c.size.div_ceil(page);
        let mut partial = Vec::new();
        for _ in 0..3 {
            for p in (0..pages).step_by(100) {
                v.write_at(p * page, &[1]).map_err(st)?;
                v.mark_dirty(p * page, page);
            }
            let runs = v.dirty_ranges();
            let t = Instant::now();
            store.push(&v, Some(&runs)).map_err(st)?;
            partial.push((t.elapsed().as_secs_f64(), runs.len()));
        }
        let partial_runs = partial[0].1;
        let partial_push_s = median(partial.iter().map(|p| p.0).collect());
        let full_push_s = time(3, || store.push(&v, None).map_err(st))?;
        // Leave the server as we found it.
        for bytes in [1000usize, 1_000_000, c.size] {
            let _: redis::RedisResult<()> = redis::cmd("DEL")
                .arg(format!("faaslet:v:bench/tier-{bytes}"))
                .query(&mut plain);
        }
        Ok(StateReport {
            tracking,
            size: c.size,
            baseline_pss_kib,
            memory,
            read_mapped_s,
            read_copied_s,
            redis: url,
            tier: rows,
            partial_push_s,
            full_push_s,
            partial_runs,
        })
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        let mib = |k: u64| k as f64 / 1024.0;
        let one = self.memory.first();
        let mut s = format!(
            "state of {} bytes; process PSS before any Faaslet: {:.1} MiB\n\n",
            self.size,
            mib(self.baseline_pss_kib)
        );
        s += "Faaslets  mapped PSS  (x one)  mapped RSS  copied PSS  (x one)\n";
        for r in &self.memory {
            let x = |v: u64, o: Option<u64>| o.map_or(0.0, |o| v as f64 / o as f64);
            s += &format!(
                "{:>8}  {:>8.1} MiB  {:>6.2}x  {:>7.1} MiB  {}\n",
                r.faaslets,
                mib(r.mapped_pss_kib),
                x(r.mapped_pss_kib, one.map(|o| o.mapped_pss_kib)),
                mib(r.mapped_rss_kib),
                match (r.copied_pss_kib, one.and_then(|o| o.copied_pss_kib)) {
                    (Some(c), o) => format!("{:>7.1} MiB  {:>6.2}x", mib(c), x(c, o)),
                    (None, _) => "skipped (needs N x size bytes)".into(),
                }
            );
        }
        s += &format!(
            "\nreading {} bytes: mapped pointer {:.2} ms, __faasm_read_state copy {:.2} ms ({:.2}x)\n",
            self.size,
            self.read_mapped_s * 1e3,
            self.read_copied_s * 1e3,
            self.read_copied_s / self.read_mapped_s
        );
        s += &format!(
            "\nglobal tier {} (ms per operation; ratio = plain / ours, goal >= 0.90)\n",
            self.redis
        );
        s += "   bytes      pull       GET  ratio      push       SET  ratio\n";
        for r in &self.tier {
            s += &format!(
                "{:>8}  {:>8.3}  {:>8.3}  {:>5.2}  {:>8.3}  {:>8.3}  {:>5.2}\n",
                r.bytes,
                r.pull_s * 1e3,
                r.get_s * 1e3,
                r.get_s / r.pull_s,
                r.push_s * 1e3,
                r.set_s * 1e3,
                r.set_s / r.push_s
            );
        }
        if let Some(t) = &self.tracking {
            let per = |x: f64| x * 1e9 / t.pages as f64;
            s += &format!(
                "\nwrite tracking, {} pages: first writes after a take {:.2} ms ({:.0} ns/page), \
                 writes to writable pages {:.2} ms ({:.0} ns/page), take {:.2} ms ({:.0} ns/page)\n",
                t.pages,
                t.write_protected_s * 1e3,
                per(t.write_protected_s),
                t.write_unprotected_s * 1e3,
                per(t.write_unprotected_s),
                t.take_s * 1e3,
                per(t.take_s)
            );
        } else {
            s += "\nwrite tracking: not available on this kernel\n";
        }
        s += &format!(
            "\npartial push of 1% ({} runs): {:.2} ms, full push {:.2} ms ({:.1}x faster)\n",
            self.partial_runs,
            self.partial_push_s * 1e3,
            self.full_push_s * 1e3,
            self.full_push_s / self.partial_push_s
        );
        s
    }

    /// The report as a JSON object.
    pub fn json(&self) -> String {
        let memory: Vec<String> = self
            .memory
            .iter()
            .map(|r| {
                format!(
                    r#"{{"faaslets":{},"mapped_pss_kib":{},"mapped_rss_kib":{},"copied_pss_kib":{}}}"#,
                    r.faaslets,
                    r.mapped_pss_kib,
                    r.mapped_rss_kib,
                    r.copied_pss_kib.map_or("null".into(), |v| v.to_string())
                )
            })
            .collect();
        let tier: Vec<String> = self
            .tier
            .iter()
            .map(|r| {
                format!(
                    r#"{{"bytes":{},"pull_s":{},"get_s":{},"push_s":{},"set_s":{}}}"#,
                    r.bytes, r.pull_s, r.get_s, r.push_s, r.set_s
                )
            })
            .collect();
        format!(
            r#"{{"tracking":{},"size":{},"baseline_pss_kib":{},"memory":[{}],"read_mapped_s":{},"read_copied_s":{},"tier":[{}],"partial_push_s":{},"full_push_s":{},"partial_runs":{}}}"#,
            self.tracking.map_or("null".into(), |t| format!(
                r#"{{"pages":{},"write_protected_s":{},"write_unprotected_s":{},"take_s":{}}}"#,
                t.pages, t.write_protected_s, t.write_unprotected_s, t.take_s
            )),
            self.size,
            self.baseline_pss_kib,
            memory.join(","),
            self.read_mapped_s,
            self.read_copied_s,
            tier.join(","),
            self.partial_push_s,
            self.full_push_s,
            self.partial_runs
        )
    }
}
