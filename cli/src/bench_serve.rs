//! `faaslet bench serve`: HTTP throughput and latency of a worker calling
//! a no-op function, measured with `wrk` over keep-alive connections,
//! next to a bare hello-world server on the same HTTP stack in the same
//! run (the ratio is what the worker costs on top of the stack); and,
//! before that, the server side of a call without HTTP: the function's
//! cold first call and warm calls (each restored from the Proto-Faaslet,
//! run and discarded), from request to reply.

use faaslet_platform::worker::{Server, Worker, WorkerConfig};
use std::path::Path;
use std::process::Command;

/// A no-op function: returns 0 at once.
const NOOP: &str = r#"(module (func (export "main") (result i32) (i32.const 0)))"#;

/// One `wrk` run's figures.
#[derive(Debug, Clone, Copy)]
pub struct WrkFigures {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Non-2xx responses or socket errors reported.
    pub errors: u64,
}

fn parse_latency(s: &str) -> Option<f64> {
    let (num, mul) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * mul)
}

/// Parses `wrk --latency` output.
pub fn parse_wrk(out: &str) -> Option<WrkFigures> {
    let mut f = WrkFigures {
        rps: 0.0,
        p50_us: 0.0,
        p99_us: 0.0,
        errors: 0,
    };
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["Requests/sec:", v] => f.rps = v.parse().ok()?,
            ["50%", v] => f.p50_us = parse_latency(v)?,
            ["99%", v] => f.p99_us = parse_latency(v)?,
            ["Non-2xx", "or", "3xx", "responses:", n] => f.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                f.errors += rest
                    .iter()
                    .filter_map(|t| t.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    (f.rps > 0.0).then_some(f)
}

fn wrk(url: &str, script: &Path, secs: u32, connections: u32) -> Result<WrkFigures, String> {
    wrk_threads(url, script, secs, connections, 2)
}

/// `wrk` with `threads` threads (at most `connections`).
pub(crate) fn wrk_threads(
    url: &str,
    script: &Path,
    secs: u32,
    connections: u32,
    threads: u32,
) -> Result<WrkFigures, String> {
    let out = Command::new("wrk")
        .args([
            &format!("-t{}", threads.min(connections).max(1)),
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run wrk (apt install wrk): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).ok_or_else(|| format!("cannot read wrk's output: {text}"))
}

/// Runs the benchmark; prints a table, or JSON with `json`.
pub fn bench_serve(json: bool, secs: u32, connections: u32) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("faaslet-bench-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = faaslet::Engine::default();
    let mut config = WorkerConfig::new(&dir);
    config.queue = 4096;
    let worker = Worker::new(&engine, config).map_err(|e| e.to_string())?;
    worker
        .upload("bench", "noop", NOOP.as_bytes())
        .map_err(|e| e.to_string())?;
    // Server side, without HTTP: a call from request to reply on this
    // thread (restore from the Proto-Faaslet, run, discard). The first is
    // the function's cold start in this process; then warm calls.
    let timed = || -> Result<f64, String> {
        let t = std::time::Instant::now();
        worker
            .call("bench", "noop", b"")
            .map_err(|e| e.to_string())?;
        Ok(t.elapsed().as_secs_f64() * 1e6)
    };
    let cold_us = timed()?;
    let mut warm: Vec<f64> = (0..10_000).map(|_| timed()).collect::<Result<_, _>>()?;
    warm.sort_by(f64::total_cmp);
    let (warm_p50, warm_p99) = (warm[warm.len() / 2], warm[warm.len() * 99 / 100]);
    let any = "127.0.0.1:0".parse().expect("a socket address");
    let server = Server::start(worker, any).map_err(|e| e.to_string())?;
    let hello = Server::hello(any).map_err(|e| e.to_string())?;
    let script = dir.join("post.lua");
    std::fs::write(&script, "wrk.method = \"POST\"\n").map_err(|e| e.to_string())?;
    let base = wrk(
        &format!("http://{}/", hello.addr()),
        &script,
        secs,
        connections,
    )?;
    let work = wrk(
        &format!("http://{}/f/bench/noop", server.addr()),
        &script,
        secs,
        connections,
    )?;
    let _ = server.stop();
    let _ = hello.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let ratio = work.rps / base.rps;
    if json {
        let one = |f: &WrkFigures| {
            format!(
                "{{\"calls_per_s\": {:.0}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \"errors\": {}}}",
                f.rps, f.p50_us, f.p99_us, f.errors
            )
        };
        println!(
            "{{\"connections\": {connections}, \"seconds\": {secs}, \"worker_noop\": {}, \"bare_hello\": {}, \"throughput_ratio\": {ratio:.3}, \"server_cold_us\": {cold_us:.1}, \"server_warm_p50_us\": {warm_p50:.1}, \"server_warm_p99_us\": {warm_p99:.1}}}",
            one(&work),
            one(&base)
        );
    } else {
        println!("{connections} keep-alive connections, {secs} s each, wrk -t2");
        println!(
            "{:<28} {:>12} {:>10} {:>10} {:>7}",
            "", "calls/s", "p50", "p99", "errors"
        );
        for (name, f) in [
            ("worker, no-op function", &work),
            ("bare hello (same stack)", &base),
        ] {
            println!(
                "{name:<28} {:>12.0} {:>8.1}us {:>8.1}us {:>7}",
                f.rps, f.p50_us, f.p99_us, f.errors
            );
        }
        println!("worker / bare throughput: {ratio:.3}");
        println!(
            "server side, request to reply without HTTP (restore from the Proto-Faaslet, run, discard): cold {cold_us:.1}us, warm p50 {warm_p50:.1}us, p99 {warm_p99:.1}us"
        );
    }
    Ok(())
}
