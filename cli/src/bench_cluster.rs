//! `faaslet bench cluster`: what a hop between workers costs. Two workers
//! join a cluster on a `redis-server` of the run's own: A with one
//! executor thread, kept busy by a long call, and B with two. The same
//! no-op function is called with `wrk` directly on B, then on A, which
//! forwards every call to B (one hop); the difference is the hop.
//! Sequential calls (one connection) give the latency a hop adds;
//! concurrent ones (8 connections) the throughput a forwarding worker
//! sustains. Both workers share this machine's cores, so the figures are
//! the overhead of forwarding, not a speed-up.

use crate::bench_serve::{wrk_threads, WrkFigures};
use crate::bench_state::start_redis;
use faaslet_platform::worker::cluster::HEARTBEAT;
use faaslet_platform::worker::{Server, Worker, WorkerConfig};
use faaslet_state::{LocalStateStore, RedisTier, StateLimits};
use std::sync::Arc;
use std::time::Duration;

const NOOP: &str = r#"(module (func (export "main") (result i32) (i32.const 0)))"#;

/// Sleeps `ns` nanoseconds in WASI `poll_oneoff`.
fn sleeper(ns: u64) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "main") (result i32)
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const {ns}))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (i32.const 0)))"#
    )
}

fn progress(what: &str) {
    eprintln!("bench cluster: {what}");
}

/// Runs the measurement and prints a table (or JSON).
pub fn bench_cluster(json: bool, secs: u32) -> Result<(), String> {
    progress("starting redis-server and two workers");
    let (url, _redis) = start_redis()?;
    let redis = Arc::new(RedisTier::connect(&url).map_err(|e| e.to_string())?);
    let base = std::env::temp_dir().join(format!("faaslet-bench-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let hold = Duration::from_secs(4 * secs as u64 + 10);
    let start = |name: &str, threads: usize| -> Result<(Worker, Server), String> {
        let mut config = WorkerConfig::new(base.join(name));
        config.threads = threads;
        config.timeout = hold + Duration::from_secs(10);
        config.state = Some(Arc::new(LocalStateStore::with_global(
            redis.clone(),
            StateLimits::default(),
        )));
        let engine = faaslet::Engine::default();
        let w = Worker::new(&engine, config).map_err(|e| e.to_string())?;
        let s = Server::start(w.clone(), "127.0.0.1:0".parse().expect("an address"))
            .map_err(|e| e.to_string())?;
        w.join_cluster(redis.clone(), &s.addr().to_string())
            .map_err(|e| e.to_string())?;
        Ok((w, s))
    };
    let (a, a_server) = start("a", 1)?;
    let (b, b_server) = start("b", 2)?;
    a.upload("bench", "noop", NOOP.as_bytes())
        .map_err(|e| e.to_string())?;
    a.upload("bench", "hold", sleeper(hold.as_nanos() as u64).as_bytes())
        .map_err(|e| e.to_string())?;
    // B fetches the function once (not part of the figures).
    b.call("bench", "noop", b"").map_err(|e| e.to_string())?;
    // A's only thread is taken for the whole run.
    a.call_async("bench", "hold", Vec::new())
        .map_err(|e| e.to_string())?;
    // A learns of B at its next heartbeat.
    let known = std::time::Instant::now() + 5 * HEARTBEAT;
    while a.cluster().is_none_or(|c| c.peers().is_empty()) {
        if std::time::Instant::now() > known {
            return Err("worker A never saw worker B in the cluster".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let script = base.join("post.lua");
    std::fs::write(&script, "wrk.method = \"POST\"\n").map_err(|e| e.to_string())?;
    let run = |addr: std::net::SocketAddr, c: u32| {
        wrk_threads(&format!("http://{addr}/f/bench/noop"), &script, secs, c, 2)
    };
    progress("sequential calls: direct, then forwarded");
    let direct1 = run(b_server.addr(), 1)?;
    let hop1 = run(a_server.addr(), 1)?;
    progress("8 connections: direct, then forwarded");
    let direct8 = run(b_server.addr(), 8)?;
    let hop8 = run(a_server.addr(), 8)?;
    progress("heartbeat cost with 100 workers and 1,000 functions registered");
    let (hb_ms, hb_bytes) = heartbeat_at_scale(&redis, 100, 1000)?;
    let forwarded = a
        .metrics()
        .render(0, 0, Default::default())
        .lines()
        .find_map(|l| {
            l.strip_prefix("faaslet_calls_forwarded_total ")?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    drop((a_server, b_server));
    let _ = std::fs::remove_dir_all(&base);
    let added_us = hop1.p50_us - direct1.p50_us;
    if json {
        let f = |w: &WrkFigures| {
            format!(
                "{{\"calls_per_s\": {:.0}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \"errors\": {}}}",
                w.rps, w.p50_us, w.p99_us, w.errors
            )
        };
        println!(
            "{{\"seconds\": {secs}, \"direct_1\": {}, \"forwarded_1\": {}, \"direct_8\": {}, \"forwarded_8\": {}, \"hop_p50_us\": {added_us:.1}, \"forwarded_calls\": {forwarded}, \"heartbeat_ms_100_workers_1000_functions\": {hb_ms:.3}, \"heartbeat_reply_bytes\": {hb_bytes}}}",
            f(&direct1),
            f(&hop1),
            f(&direct8),
            f(&hop8)
        );
    } else {
        println!(
            "no-op calls, {secs} s per row (A forwards each call to B: its only thread is busy)"
        );
        println!(
            "{:<34} {:>10} {:>10} {:>10} {:>7}",
            "", "calls/s", "p50", "p99", "errors"
        );
        for (name, w) in [
            ("1 connection, direct to B", &direct1),
            ("1 connection, via A (one hop)", &hop1),
            ("8 connections, direct to B", &direct8),
            ("8 connections, via A (one hop)", &hop8),
        ] {
            println!(
                "{name:<34} {:>10.0} {:>8.1}us {:>8.1}us {:>7}",
                w.rps, w.p50_us, w.p99_us, w.errors
            );
        }
        println!(
            "a hop adds {added_us:.1}us at p50; forwarded throughput {:.2}x of direct; A forwarded {forwarded} calls",
            hop8.rps / direct8.rps
        );
        println!(
            "one heartbeat with 100 workers and 1,000 functions registered: {hb_ms:.3} ms, {hb_bytes} bytes read (every worker, every second)"
        );
    }
    Ok(())
}

/// Registers `workers` members (that never heartbeat again) and
/// `functions` published versions, then times a heartbeat of one more
/// worker: milliseconds (median of 50) and the bytes its replies carry.
fn heartbeat_at_scale(
    redis: &Arc<RedisTier>,
    workers: usize,
    functions: usize,
) -> Result<(f64, usize), String> {
    use faaslet_platform::worker::cluster::Cluster;
    let fakes: Vec<Cluster> = (0..workers)
        .map(|i| {
            Cluster::join(
                redis.clone(),
                &format!("10.0.{}.{}:8080", i / 250, i % 250),
                4,
            )
        })
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    redis
        .with("bench", |c| {
            let mut p = redis::pipe();
            for i in 0..functions {
                p.cmd("HSET")
                    .arg("faaslet:functions")
                    .arg(format!("user{}/function{i}", i % 10))
                    .arg(format!("{:064x}", i))
                    .ignore();
            }
            p.query::<()>(c)
        })
        .map_err(|e| e.to_string())?;
    let me = Cluster::join(redis.clone(), "10.1.0.1:8080", 4).map_err(|e| e.to_string())?;
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..50 {
        let t = std::time::Instant::now();
        let versions = me.heartbeat(0).map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        let members = me.members().map_err(|e| e.to_string())?;
        bytes = versions
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
            + members
                .iter()
                .map(|m| serde_json::to_string(m).map_or(0, |s| s.len()))
                .sum::<usize>();
    }
    for f in &fakes {
        f.leave();
    }
    me.leave();
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], bytes))
}
