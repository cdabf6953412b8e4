//! `faaslet bench cold-start --python WASM`: a Python no-op call from its
//! Proto-Faaslet (the interpreter captured where the script first reads
//! stdin: `faaslet_platform::at_input`) against a cold CPython start in
//! faaslet (a fresh instance of the same interpreter running the same
//! script) and against `python3 -c pass` natively, in one run, and the
//! memory an idle Python Faaslet costs.
//!
//! The worker's data directory is kept in the system's temporary
//! directory (`faaslet-bench-python`), so the interpreter is asyncified
//! (about 90 s) and compiled only on the first run.

use crate::bench::{measure, per_idle, Stat};
use faaslet_platform::worker::{Worker, WorkerConfig};
use faaslet_platform::{Faaslet, FaasletConfig, Output};
use std::path::Path;
use std::time::Instant;

/// The no-op function: reads its input, writes nothing.
const NOOP: &str = "import sys\nsys.stdin.read()\n";

fn progress(what: &str) {
    eprintln!("bench cold-start --python: {what}");
}

pub(crate) fn ms(ns: f64) -> String {
    format!("{:.3} ms", ns / 1e6)
}

/// Median of `runs` timings of `f`, nanoseconds.
pub(crate) fn median_of(
    runs: usize,
    mut f: impl FnMut() -> Result<(), String>,
) -> Result<f64, String> {
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_nanos() as f64);
    }
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}

/// Calls taken from a warm pool: latency, and the CPU each costs.
pub(crate) struct PoolCalls {
    /// Median latency of a call, ns.
    pub median_ns: f64,
    /// 99th percentile latency, ns.
    pub p99_ns: f64,
    /// CPU time (user + system, every thread of the process) per call,
    /// ns: the call itself and the preparation of the Faaslet that
    /// replaces it in the pool.
    pub cpu_ns: f64,
}

/// CPU time (user + system) the whole process has used, ns.
fn process_cpu_ns() -> f64 {
    // SAFETY: getrusage writes one `rusage` we own.
    let r = unsafe {
        let mut r: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut r);
        r
    };
    let t = |v: libc::timeval| v.tv_sec as f64 * 1e9 + v.tv_usec as f64 * 1e3;
    t(r.ru_utime) + t(r.ru_stime)
}

/// Waits (at most a second) until the pool holds a prepared Faaslet of
/// `user/function`.
fn wait_pooled(worker: &Worker, user: &str, function: &str) -> Result<(), String> {
    let t = Instant::now();
    while worker.pooled(user, function) == 0 {
        if t.elapsed().as_secs() >= 1 {
            return Err(format!(
                "{user}/{function}: the pool did not refill within a second"
            ));
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
    Ok(())
}

/// `iterations` calls of `user/function`, each made once the pool holds a
/// prepared Faaslet (after a tenth as many unmeasured), and the process's
/// CPU time over them (waiting for the last refill too).
pub(crate) fn warm_pool_calls(
    worker: &Worker,
    user: &str,
    function: &str,
    iterations: usize,
) -> Result<PoolCalls, String> {
    let iterations = iterations.max(1);
    let call = || -> Result<f64, String> {
        wait_pooled(worker, user, function)?;
        let t = Instant::now();
        worker
            .call(user, function, b"")
            .map_err(|e| format!("a call failed: {e}"))?;
        Ok(t.elapsed().as_nanos() as f64)
    };
    // The worker pools a function once it has seen one restore (the
    // first call): two calls without waiting start the pool.
    for _ in 0..2 {
        worker
            .call(user, function, b"")
            .map_err(|e| format!("a call failed: {e}"))?;
    }
    for _ in 0..iterations / 10 {
        call()?;
    }
    wait_pooled(worker, user, function)?;
    let cpu0 = process_cpu_ns();
    let mut ns = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        ns.push(call()?);
    }
    wait_pooled(worker, user, function)?;
    let cpu = process_cpu_ns() - cpu0;
    ns.sort_by(f64::total_cmp);
    Ok(PoolCalls {
        median_ns: ns[iterations / 2],
        p99_ns: ns[((iterations * 99) / 100).min(iterations - 1)],
        cpu_ns: cpu / iterations as f64,
    })
}

/// Runs the measurement and prints a table (or JSON).
pub fn bench_python(python: &Path, json: bool, iterations: usize) -> Result<(), String> {
    let data = std::env::temp_dir().join("faaslet-bench-python");
    let mut config = WorkerConfig::new(&data);
    config.python = Some(python.to_path_buf());
    config.threads = 1;
    let engine = faaslet::Engine::default();
    // From here: a worker reloading an earlier run's function prepares
    // the interpreter while it starts.
    progress(
        "preparing the interpreter (asyncify and compile: minutes the first time, then cached)",
    );
    let prepare_start = Instant::now();
    let worker = Worker::new(&engine, config).map_err(|e| e.to_string())?;
    let runtime = worker.python_runtime().map_err(|e| e.to_string())?;
    let prepare_s = prepare_start.elapsed().as_secs_f64();
    progress("capturing the no-op function at its first stdin read");
    let t = Instant::now();
    worker
        .upload_python("bench", "noop", NOOP.as_bytes())
        .map_err(|e| e.to_string())?;
    let upload_ms = t.elapsed().as_secs_f64() * 1e3;

    progress("calls from the warm pool (each call finds a prepared Faaslet)");
    let from_pool = warm_pool_calls(&worker, "bench", "noop", iterations)?;
    progress("the same, memories parked by dropping their written pages (as before)");
    faaslet_sfi::set_keep_written(false);
    let dropped = warm_pool_calls(&worker, "bench", "noop", iterations);
    faaslet_sfi::set_keep_written(true);
    let dropped = dropped?;
    progress("calls back to back (the pool refills as it can)");
    let mut failed = None;
    let warm: Stat = measure(iterations, || {
        if let Err(e) = worker.call("bench", "noop", b"") {
            failed = Some(e.to_string());
        }
    });
    if let Some(e) = failed {
        return Err(format!("a call failed: {e}"));
    }
    // What making an instance costs (the pool does it ahead of a call).
    let restore: Stat = measure(iterations, || {
        std::hint::black_box(worker.faaslet("bench", "noop").ok());
    });
    progress("cold starts in faaslet (a fresh instance per call)");
    let plain = {
        let wasm = std::fs::read(python).map_err(|e| format!("{}: {e}", python.display()))?;
        let cache = faaslet_platform::code_cache::CodeCache::new(data.join("code"))
            .map_err(|e| e.to_string())?;
        cache
            .module_within(&engine, &wasm, None)
            .map_err(|e| e.to_string())?
            .0
    };
    let cold_config = FaasletConfig {
        args: vec!["-c".into(), NOOP.into()],
        stdout: Output::Capture,
        stderr: Output::Capture,
        ..FaasletConfig::new("python")
    };
    let cold = median_of(5, || {
        let out = Faaslet::new(&engine, &plain, cold_config.clone())
            .and_then(|mut f| f.call(b""))
            .map_err(|e| e.to_string())?;
        match out.return_code {
            0 => Ok(()),
            rc => Err(format!("cold start exited {rc}")),
        }
    })?;
    progress("python3 -c pass, natively");
    let native = median_of(10, || {
        let s = std::process::Command::new("python3")
            .args(["-c", "pass"])
            .status()
            .map_err(|e| format!("python3: {e}"))?;
        s.success()
            .then_some(())
            .ok_or_else(|| "python3 -c pass failed".to_string())
    })
    .ok();
    progress("memory per idle Python Faaslet");
    let mut idle_failed = None;
    let (pss, rss) = per_idle(100, || {
        worker
            .faaslet("bench", "noop")
            .map_err(|e| idle_failed = Some(e.to_string()))
            .ok()
    });
    if let Some(e) = idle_failed {
        return Err(format!("an idle Faaslet could not be made: {e}"));
    }
    // A Faaslet as the pool holds it: after a call, prepared again in
    // place, the pages the call wrote kept (with the snapshot's bytes).
    let (pooled_pss, pooled_rss) = per_idle(100, || {
        let mut f = worker
            .faaslet("bench", "noop")
            .map_err(|e| idle_failed = Some(e.to_string()))
            .ok()?;
        f.call(b"")
            .and_then(|_| f.prepare())
            .map_err(|e| idle_failed = Some(e.to_string()))
            .ok()?;
        Some(f)
    });
    if let Some(e) = idle_failed {
        return Err(format!("a pooled Faaslet could not be made: {e}"));
    }
    drop(runtime);
    let native_s = native.map_or("n/a (no python3)".to_string(), ms);
    if json {
        println!(
            "{{\"warm_pool_call_ns\": {{\"median\": {:.0}, \"p99\": {:.0}, \"cpu_per_call\": {:.0}}}, \"warm_pool_call_pages_dropped_ns\": {{\"median\": {:.0}, \"p99\": {:.0}, \"cpu_per_call\": {:.0}}}, \"proto_faaslet_call_ns\": {{\"median\": {:.0}, \"p99\": {:.0}}}, \"restore_ns\": {:.0}, \"cold_start_ns\": {cold:.0}, \"native_python3_ns\": {}, \"idle_faaslet_pss_kib\": {pss:.0}, \"idle_faaslet_rss_kib\": {rss:.0}, \"pooled_faaslet_pss_kib\": {pooled_pss:.0}, \"pooled_faaslet_rss_kib\": {pooled_rss:.0}, \"capture_ms\": {upload_ms:.1}, \"prepare_s\": {prepare_s:.1}}}",
            from_pool.median_ns,
            from_pool.p99_ns,
            from_pool.cpu_ns,
            dropped.median_ns,
            dropped.p99_ns,
            dropped.cpu_ns,
            warm.median_ns,
            warm.p99_ns,
            restore.median_ns,
            native.map_or("null".to_string(), |n| format!("{n:.0}"))
        );
    } else {
        println!(
            "Python no-op function (CPython 3.12, WASI), {iterations} calls from the Proto-Faaslet per row"
        );
        println!(
            "{:<58} {:>10} {:>10} {:>13}",
            "", "median", "p99", "CPU per call"
        );
        let row = |what: &str, c: &PoolCalls| {
            println!(
                "{:<58} {:>10} {:>10} {:>13}",
                what,
                ms(c.median_ns),
                ms(c.p99_ns),
                ms(c.cpu_ns)
            )
        };
        row("call from the warm pool (worker, no HTTP)", &from_pool);
        row(
            "  the same, written pages dropped at reset (before)",
            &dropped,
        );
        println!(
            "{:<58} {:>10} {:>10}",
            "calls back to back (the pool refills as it can)",
            ms(warm.median_ns),
            ms(warm.p99_ns)
        );
        println!(
            "{:<58} {:>10} {:>10}",
            "restoring an instance (the pool does it ahead of a call)",
            ms(restore.median_ns),
            ms(restore.p99_ns)
        );
        println!(
            "{:<58} {:>10}",
            "cold start in faaslet (fresh instance)",
            ms(cold)
        );
        println!(
            "{:<58} {:>10}",
            "python3 -c pass (native process)", native_s
        );
        println!(
            "cold / warm-pool call: {:.0}x; pages dropped / kept: {:.1}x latency, {:.1}x CPU; idle Python Faaslet: PSS {pss:.0} KiB, RSS {rss:.0} KiB (pooled, after a call: PSS {pooled_pss:.0} KiB, RSS {pooled_rss:.0} KiB); capture at upload {upload_ms:.0} ms; interpreter prepared in {prepare_s:.1} s",
            cold / from_pool.median_ns,
            dropped.median_ns / from_pool.median_ns,
            dropped.cpu_ns / from_pool.cpu_ns,
        );
        println!(
            "(CPU per call: the process's user + system time over the calls, all threads: the call and the preparation of the Faaslet that replaces it in the pool.)"
        );
    }
    Ok(())
}
