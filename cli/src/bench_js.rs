//! `faaslet bench cold-start --js WASM`: a JavaScript no-op call from its
//! Proto-Faaslet (QuickJS captured where the script first reads stdin:
//! `faaslet_platform::at_input`) against a cold QuickJS start in faaslet
//! (a fresh instance of the same command running the same script) and
//! against native starts: the same driver and QuickJS built for the host
//! (`qjs-faaslet-native` beside WASM, from `sdk/js/build.sh --native`)
//! running the same script, and `node -e ''`; in one run, with the
//! memory an idle JavaScript Faaslet costs.
//!
//! WASM is the command JavaScript functions run on, `qjs-faaslet.wasm`
//! (`sdk/js/build.sh`). The worker's data directory is kept in the
//! system's temporary directory (`faaslet-bench-js`), so the command is
//! asyncified (about half a minute) and compiled only on the first run.

use crate::bench::{measure, per_idle, Stat};
use crate::bench_python::{median_of, ms};
use faaslet_platform::worker::js::JS_WASM_STACK;
use faaslet_platform::worker::{Worker, WorkerConfig};
use faaslet_platform::{Faaslet, FaasletConfig, Output};
use std::path::Path;
use std::time::Instant;

/// The no-op function: reads its input, writes nothing.
const NOOP: &str = "readInput();\n";

/// A CPU-bound function: the interpreter's own speed, where asyncify's
/// instrumentation would show (it made such code about 3.5x slower when
/// the interpreter was on the path to the read).
const CPU_BOUND: &str = "readInput();
function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
const xs = [];
for (let i = 0; i < 200000; i++) xs.push({ k: (i * 7919) % 100003, i });
xs.sort((a, b) => a.k - b.k);
print(fib(25), xs[0].k, xs[xs.length - 1].k);
";

fn progress(what: &str) {
    eprintln!("bench cold-start --js: {what}");
}

/// User plus system CPU time, in ns, of this process (`who` =
/// `RUSAGE_SELF`) or of its children that have been waited for
/// (`RUSAGE_CHILDREN`). CPU time, not wall time, for the CPU-bound rows:
/// on a shared machine a wall clock also counts the time spent waiting
/// for a core.
fn cpu_ns(who: libc::c_int) -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `rusage` through the pointer, which
    // points at one we own; `who` is RUSAGE_SELF or RUSAGE_CHILDREN.
    if unsafe { libc::getrusage(who, u.as_mut_ptr()) } != 0 {
        return f64::NAN;
    }
    // SAFETY: all-zero bytes are a valid `rusage` (plain integers), and
    // getrusage has filled it in.
    let u = unsafe { u.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e9 + t.tv_usec as f64 * 1e3;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// The median CPU time (`cpu_ns(who)` before and after) of `runs` runs of `f`.
fn cpu_median_of(
    runs: usize,
    who: libc::c_int,
    mut f: impl FnMut() -> Result<(), String>,
) -> Result<f64, String> {
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = cpu_ns(who);
        f()?;
        v.push(cpu_ns(who) - t);
    }
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}

/// The median time of the process `program args` natively (10 runs,
/// stdin empty), if it runs.
fn native(program: &Path, args: &[&str]) -> Option<f64> {
    median_of(10, || run_native(program, args)).ok()
}

/// Runs the process `program args` once natively (stdin empty, stdout
/// discarded); an error if it cannot start or fails.
fn run_native(program: &Path, args: &[&str]) -> Result<(), String> {
    let s = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    s.success()
        .then_some(())
        .ok_or_else(|| format!("{} failed", program.display()))
}

/// Runs the measurement and prints a table (or JSON).
pub fn bench_js(js: &Path, json: bool, iterations: usize) -> Result<(), String> {
    let data = std::env::temp_dir().join("faaslet-bench-js");
    let mut config = WorkerConfig::new(&data);
    config.js = Some(js.to_path_buf());
    config.threads = 1;
    // As `faaslet serve --js` makes it (see JS_WASM_STACK).
    let engine = faaslet::Engine::new(&faaslet::Config {
        max_wasm_stack: JS_WASM_STACK,
        ..faaslet::Config::default()
    })
    .map_err(|e| e.to_string())?;
    // From here: a worker reloading an earlier run's function prepares
    // the interpreter while it starts.
    progress("preparing QuickJS (asyncify and compile: a minute the first time, then cached)");
    let prepare_start = Instant::now();
    let worker = Worker::new(&engine, config).map_err(|e| e.to_string())?;
    let runtime = worker.js_runtime().map_err(|e| e.to_string())?;
    let prepare_s = prepare_start.elapsed().as_secs_f64();
    progress("capturing the no-op function at its first stdin read");
    let t = Instant::now();
    worker
        .upload_js("bench", "noop", NOOP.as_bytes())
        .map_err(|e| e.to_string())?;
    let upload_ms = t.elapsed().as_secs_f64() * 1e3;

    progress("calls from the Proto-Faaslet");
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
        let wasm = std::fs::read(js).map_err(|e| format!("{}: {e}", js.display()))?;
        let cache = faaslet_platform::code_cache::CodeCache::new(data.join("code"))
            .map_err(|e| e.to_string())?;
        cache
            .module_within(&engine, &wasm, None)
            .map_err(|e| e.to_string())?
            .0
    };
    let cold_config = FaasletConfig {
        args: vec![NOOP.into()],
        stdout: Output::Capture,
        stderr: Output::Capture,
        ..FaasletConfig::new("qjs-faaslet")
    };
    // A fresh instance of the plain command running `script`.
    let fresh = |script: &str| -> Result<(), String> {
        let config = FaasletConfig {
            args: vec![script.into()],
            ..cold_config.clone()
        };
        let out = Faaslet::new(&engine, &plain, config)
            .and_then(|mut f| f.call(b""))
            .map_err(|e| e.to_string())?;
        match out.return_code {
            0 => Ok(()),
            rc => Err(format!("a fresh run exited {rc}")),
        }
    };
    let cold = median_of(20, || fresh(NOOP))?;
    progress("a CPU-bound function: from its Proto-Faaslet, fresh, native");
    worker
        .upload_js("bench", "cpu", CPU_BOUND.as_bytes())
        .map_err(|e| e.to_string())?;
    let cpu_resumed = cpu_median_of(5, libc::RUSAGE_SELF, || {
        worker
            .call("bench", "cpu", b"")
            .map(|_| ())
            .map_err(|e| e.to_string())
    })?;
    let cpu_fresh = cpu_median_of(5, libc::RUSAGE_SELF, || fresh(CPU_BOUND))?;
    progress("native starts (qjs-faaslet-native, node -e '')");
    let host_build = js.with_file_name("qjs-faaslet-native");
    let cpu_native = cpu_median_of(5, libc::RUSAGE_CHILDREN, || {
        run_native(&host_build, &[CPU_BOUND])
    })
    .ok();
    let qjs = native(&host_build, &[NOOP]);
    let node = native(Path::new("node"), &["-e", ""]);
    progress("memory per idle JavaScript Faaslet");
    let mut idle_failed = None;
    let (pss, rss) = per_idle(200, || {
        worker
            .faaslet("bench", "noop")
            .map_err(|e| idle_failed = Some(e.to_string()))
            .ok()
    });
    if let Some(e) = idle_failed {
        return Err(format!("an idle Faaslet could not be made: {e}"));
    }
    drop(runtime);
    let json_ns = |n: Option<f64>| n.map_or("null".to_string(), |n| format!("{n:.0}"));
    if json {
        println!(
            "{{\"proto_faaslet_call_ns\": {{\"median\": {:.0}, \"p99\": {:.0}}}, \"restore_ns\": {:.0}, \"cold_start_ns\": {cold:.0}, \"native_qjs_faaslet_ns\": {}, \"native_node_ns\": {}, \"idle_faaslet_pss_kib\": {pss:.0}, \"idle_faaslet_rss_kib\": {rss:.0}, \"capture_ms\": {upload_ms:.1}, \"prepare_s\": {prepare_s:.1}, \"cpu_bound_cpu_ns\": {{\"proto_faaslet\": {cpu_resumed:.0}, \"fresh\": {cpu_fresh:.0}, \"native\": {}}}}}",
            warm.median_ns,
            warm.p99_ns,
            restore.median_ns,
            json_ns(qjs),
            json_ns(node),
            json_ns(cpu_native),
        );
    } else {
        println!(
            "JavaScript no-op function (QuickJS-NG, WASI), {iterations} calls from the Proto-Faaslet"
        );
        println!("{:<50} {:>12} {:>12}", "", "median", "p99");
        println!(
            "{:<50} {:>12} {:>12}",
            "call from its Proto-Faaslet (worker, no HTTP)",
            ms(warm.median_ns),
            ms(warm.p99_ns)
        );
        println!(
            "{:<50} {:>12} {:>12}",
            "restoring an instance (ahead of the call: pooled)",
            ms(restore.median_ns),
            ms(restore.p99_ns)
        );
        println!(
            "{:<50} {:>12}",
            "cold start in faaslet (fresh instance)",
            ms(cold)
        );
        println!(
            "{:<50} {:>12}",
            "the same script, QuickJS built for the host",
            qjs.map_or("n/a (sdk/js/build.sh --native)".to_string(), ms)
        );
        println!(
            "{:<50} {:>12}",
            "node -e '' (native Node.js process)",
            node.map_or("n/a (no node)".to_string(), ms)
        );
        println!(
            "{:<50} {:>12}",
            "CPU-bound call, CPU time, from its Proto-Faaslet",
            ms(cpu_resumed)
        );
        println!(
            "{:<50} {:>12}",
            "the same, a fresh instance of the plain command",
            ms(cpu_fresh)
        );
        println!(
            "{:<50} {:>12}",
            "the same, QuickJS built for the host",
            cpu_native.map_or("n/a (sdk/js/build.sh --native)".to_string(), ms)
        );
        println!(
            "CPU-bound: Proto-Faaslet / fresh {:.2}x{}",
            cpu_resumed / cpu_fresh,
            cpu_native.map_or(String::new(), |n| format!(
                ", Proto-Faaslet / native {:.2}x",
                cpu_resumed / n
            ))
        );
        println!(
            "cold / Proto-Faaslet: {:.0}x; idle JavaScript Faaslet: PSS {pss:.0} KiB, RSS {rss:.0} KiB; capture at upload {upload_ms:.0} ms; QuickJS prepared in {prepare_s:.1} s",
            cold / warm.median_ns
        );
    }
    Ok(())
}
