//! `faaslet bench code-cache`: what the code cache saves. For each module:
//! compiling it against loading its artefact (the ratio is the point), the
//! artefact's size, and, through a real [`Worker`], an upload that compiles
//! against one that hits the cache, and a worker restart up to the end of
//! the first call with the cache against without it.
//!
//! With no files it measures a generated module of many small functions;
//! give it a real program (`faaslet bench code-cache python.wasm --input
//! 'print(1)'`) for the figure that matters.

use faaslet::{Engine, Module};
use faaslet_platform::worker::{Worker, WorkerConfig};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One module's figures.
#[derive(Debug, Clone)]
pub struct CacheFigures {
    /// The module's name.
    pub name: String,
    /// Bytes of wasm.
    pub wasm_bytes: usize,
    /// Bytes of artefact.
    pub artifact_bytes: usize,
    /// Compiling (median).
    pub compile: Duration,
    /// Loading the artefact (median), SHA-256 key and placement included.
    pub load: Duration,
    /// Of that: computing the key (SHA-256 of the wasm and the settings).
    pub key: Duration,
    /// Worker upload that compiles.
    pub upload_miss: Duration,
    /// Worker upload of the same bytes under another name (cache hit).
    pub upload_hit: Duration,
    /// Worker start over the data directory and first call, code cached.
    pub restart_cached: Duration,
    /// The same with the code cache emptied first (everything compiles).
    pub restart_uncached: Duration,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A module of `n` small functions calling each other, as a stand-in for a
/// real program when none is given.
fn generated(n: usize) -> Vec<u8> {
    let mut wat =
        String::from("(module (memory 1) (func $f0 (param i32) (result i32) (local.get 0))\n");
    for i in 1..n {
        wat.push_str(&format!(
            "(func $f{i} (param i32) (result i32) (i32.add (call $f{} (local.get 0)) (i32.load (i32.and (local.get 0) (i32.const 0xfff)))))\n",
            i - 1
        ));
    }
    wat.push_str(&format!(
        "(func (export \"main\") (result i32) (drop (call $f{} (i32.const 1))) (i32.const 0)))",
        n - 1
    ));
    faaslet::wat_to_wasm(&wat).expect("the generated module is valid")
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let r = f();
    (r, start.elapsed())
}

/// Measures one module; `input` is the first call's input (for a WASI
/// program, its standard input).
pub fn measure(name: &str, wasm: &[u8], input: &[u8], runs: usize) -> Result<CacheFigures, String> {
    let engine = Engine::default();
    let runs = runs.max(1);
    let mut compiles = Vec::new();
    let mut artifact = Vec::new();
    for _ in 0..runs {
        let (r, took) = time(|| Module::from_binary_with_artifact(&engine, wasm));
        let (_, a) = r.map_err(|e| format!("{name}: {e}"))?;
        artifact = a.map_err(|e| format!("{name}: {e}"))?;
        compiles.push(took);
    }
    let mut loads = Vec::new();
    let mut keys = Vec::new();
    for _ in 0..runs.max(5) {
        let (m, took) = time(|| Module::from_artifact(&engine, wasm, &artifact));
        m.map_err(|e| format!("{name}: loading: {e}"))?;
        loads.push(took);
        keys.push(time(|| engine.artifact_key(wasm)).1);
    }

    let dir = std::env::temp_dir().join(format!(
        "faaslet-bench-cache-{}-{}",
        std::process::id(),
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let worker =
        |dir: &Path| Worker::new(&engine, WorkerConfig::new(dir)).map_err(|e| e.to_string());
    let w = worker(&dir)?;
    let (r, upload_miss) = time(|| w.upload("bench", "f", wasm));
    r.map_err(|e| format!("{name}: upload: {e}"))?;
    let (r, upload_hit) = time(|| w.upload("bench", "g", wasm));
    r.map_err(|e| format!("{name}: upload: {e}"))?;
    drop(w);
    let restart = |dir: &Path| -> Result<Duration, String> {
        let (r, took) = time(|| {
            let w = worker(dir)?;
            w.call("bench", "f", input).map_err(|e| e.to_string())
        });
        r.map_err(|e| format!("{name}: first call: {e}"))?;
        Ok(took)
    };
    let restart_cached = restart(&dir)?;
    std::fs::remove_dir_all(dir.join("code")).map_err(|e| e.to_string())?;
    // Both functions recompile on this start (same bytes: the second hits).
    let restart_uncached = restart(&dir)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(CacheFigures {
        name: name.to_string(),
        wasm_bytes: wasm.len(),
        artifact_bytes: artifact.len(),
        compile: median(compiles),
        load: median(loads),
        key: median(keys),
        upload_miss,
        upload_hit,
        restart_cached,
        restart_uncached,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the benchmark over `files` (or the generated module) and prints a
/// table, or JSON with `json`.
pub fn bench_code_cache(
    json: bool,
    files: &[PathBuf],
    input: &str,
    runs: usize,
) -> Result<(), String> {
    let mut modules = Vec::new();
    if files.is_empty() {
        modules.push(("generated-2000-funcs".to_string(), generated(2000)));
    }
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let name = f.file_name().map_or_else(
            || f.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        modules.push((name, bytes));
    }
    let mut all = Vec::new();
    for (name, wasm) in &modules {
        if !json {
            eprintln!("measuring {name} ({} KiB of wasm) ...", wasm.len() >> 10);
        }
        all.push(measure(name, wasm, input.as_bytes(), runs)?);
    }
    if json {
        let rows: Vec<String> = all
            .iter()
            .map(|f| {
                format!(
                    "{{\"module\": {:?}, \"wasm_bytes\": {}, \"artifact_bytes\": {}, \"compile_ms\": {:.3}, \"load_ms\": {:.3}, \"key_ms\": {:.3}, \"load_over_compile\": {:.5}, \"upload_miss_ms\": {:.3}, \"upload_hit_ms\": {:.3}, \"restart_first_call_cached_ms\": {:.3}, \"restart_first_call_uncached_ms\": {:.3}}}",
                    f.name,
                    f.wasm_bytes,
                    f.artifact_bytes,
                    ms(f.compile),
                    ms(f.load),
                    ms(f.key),
                    f.load.as_secs_f64() / f.compile.as_secs_f64(),
                    ms(f.upload_miss),
                    ms(f.upload_hit),
                    ms(f.restart_cached),
                    ms(f.restart_uncached)
                )
            })
            .collect();
        println!("[{}]", rows.join(", "));
        return Ok(());
    }
    println!(
        "{:<24} {:>9} {:>9} {:>10} {:>9} {:>8} {:>8} {:>11} {:>10} {:>12} {:>14}",
        "module",
        "wasm KiB",
        "code KiB",
        "compile",
        "load",
        "(key)",
        "load/c",
        "upload",
        "upload hit",
        "restart+call",
        "uncached"
    );
    for f in &all {
        println!(
            "{:<24} {:>9} {:>9} {:>8.1}ms {:>7.2}ms {:>6.2}ms {:>8.4} {:>9.1}ms {:>8.1}ms {:>10.1}ms {:>12.1}ms",
            f.name,
            f.wasm_bytes >> 10,
            f.artifact_bytes >> 10,
            ms(f.compile),
            ms(f.load),
            ms(f.key),
            f.load.as_secs_f64() / f.compile.as_secs_f64(),
            ms(f.upload_miss),
            ms(f.upload_hit),
            ms(f.restart_cached),
            ms(f.restart_uncached)
        );
    }
    println!("compile/load: medians; upload and restart+call (a new worker over the same data directory, up to the end of its first call): one run each; uncached: the same with the code directory removed");
    Ok(())
}
