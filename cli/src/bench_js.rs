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

fn progress(what: &str) {
    eprintln!("bench cold-start --js: {what}");
}

/// The median time of the process `program args` natively (10 runs,
/// stdin empty), if it runs.
fn native(program: &Path, args: &[&str]) -> Option<f64> {
    median_of(10, || {
        let s = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        s.success()
            .then_some(())
            .ok_or_else(|| format!("{} failed", program.display()))
    })
    .ok()
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
    let cold = median_of(20, || {
        let out = Faaslet::new(&engine, &plain, cold_config.clone())
            .and_then(|mut f| f.call(b""))
            .map_err(|e| e.to_string())?;
        match out.return_code {
            0 => Ok(()),
            rc => Err(format!("cold start exited {rc}")),
        }
    })?;
    progress("native starts (qjs-faaslet-native, node -e '')");
    let host_build = js.with_file_name("qjs-faaslet-native");
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
            "{{\"proto_faaslet_call_ns\": {{\"median\": {:.0}, \"p99\": {:.0}}}, \"restore_ns\": {:.0}, \"cold_start_ns\": {cold:.0}, \"native_qjs_faaslet_ns\": {}, \"native_node_ns\": {}, \"idle_faaslet_pss_kib\": {pss:.0}, \"idle_faaslet_rss_kib\": {rss:.0}, \"capture_ms\": {upload_ms:.1}, \"prepare_s\": {prepare_s:.1}}}",
            warm.median_ns,
            warm.p99_ns,
            restore.median_ns,
            json_ns(qjs),
            json_ns(node),
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
            "cold / Proto-Faaslet: {:.0}x; idle JavaScript Faaslet: PSS {pss:.0} KiB, RSS {rss:.0} KiB; capture at upload {upload_ms:.0} ms; QuickJS prepared in {prepare_s:.1} s",
            cold / warm.median_ns
        );
    }
    Ok(())
}
