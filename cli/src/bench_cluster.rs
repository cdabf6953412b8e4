//! `faaslet bench cluster`: what a hop between workers costs. Two workers
//! join a cluster on a `redis-server` of the run's own: A with one
//! executor thread, kept busy by a long call, and B with two. The same
//! no-op function is called with `wrk` directly on B, then on A, which
//! forwards every call to B (one hop); the difference is the hop.
//! Sequential calls (one connection) give the latency a hop adds;
//! concurrent ones (8 connections) the throughput a forwarding worker
//! sustains. Both workers share this machine's cores, so the figures are
//! the overhead of forwarding, not a speed-up.
//!
//! Then three workers (two threads each) against one: no-op calls with 8
//! connections sent to one worker of each; a fan-out of 300 chained
//! no-op calls (which the cluster spreads over its three workers, each
//! child an HTTP round trip, and the lone worker runs on its own pool);
//! and how long a worker started while the cluster is saturated takes to
//! run its first call (joining, being seen at the others' next heartbeat,
//! fetching the function).

use crate::bench_serve::{wrk_threads, WrkFigures};
use crate::bench_state::start_redis;
use faaslet_platform::worker::cluster::HEARTBEAT;
use faaslet_platform::worker::{Server, Worker, WorkerConfig};
use faaslet_state::{LocalStateStore, RedisTier, StateLimits};
use std::sync::Arc;
use std::time::Duration;

const NOOP: &str = r#"(module (func (export "main") (result i32) (i32.const 0)))"#;

/// Chains `n` calls of `noop` by name, awaits them all, outputs how many
/// succeeded (4 bytes, little endian).
fn fan_out(n: u32) -> String {
    format!(
        r#"(module
  (import "env" "__faasm_chain_name" (func $chain (param i32 i32 i32) (result i32)))
  (import "env" "__faasm_await_call" (func $await (param i32) (result i32)))
  (import "env" "__faasm_write_output" (func $out (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "noop\00")
  (func (export "main") (result i32) (local $i i32) (local $ok i32)
    (loop $start
      (i32.store (i32.add (i32.const 1024) (i32.shl (local.get $i) (i32.const 2)))
        (call $chain (i32.const 0) (i32.const 64) (i32.const 0)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $start (i32.lt_u (local.get $i) (i32.const {n}))))
    (local.set $i (i32.const 0))
    (loop $wait
      (if (i32.eqz (call $await
            (i32.load (i32.add (i32.const 1024) (i32.shl (local.get $i) (i32.const 2))))))
        (then (local.set $ok (i32.add (local.get $ok) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $wait (i32.lt_u (local.get $i) (i32.const {n}))))
    (i32.store (i32.const 128) (local.get $ok))
    (call $out (i32.const 128) (i32.const 4))
    (i32.const 0)))"#
    )
}

/// The value of the metric line starting with `prefix`, 0 if none.
fn metric(w: &Worker, prefix: &str) -> u64 {
    w.metrics()
        .render(0, 0, Default::default())
        .lines()
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Calls of any function this worker has run (its `faaslet_calls_total`).
fn calls_run(w: &Worker) -> u64 {
    w.metrics()
        .render(0, 0, Default::default())
        .lines()
        .filter(|l| l.starts_with("faaslet_calls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

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
    let start_in = |name: &str, threads: usize, join: bool| -> Result<(Worker, Server), String> {
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
        if join {
            w.join_cluster(redis.clone(), &s.addr().to_string())
                .map_err(|e| e.to_string())?;
        }
        Ok((w, s))
    };
    let start = |name: &str, threads: usize| start_in(name, threads, true);
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
    let hb = heartbeat_at_scale(&redis, 100, 1000)?;
    let forwarded_by_a = metric(&a, "faaslet_calls_forwarded_total ");
    // A and B leave: the cluster below is three other workers.
    for w in [&a, &b] {
        if let Some(c) = w.cluster() {
            c.leave();
        }
    }
    drop((a_server, b_server));
    let forwarded = forwarded_by_a;

    progress("one worker against a cluster of three (two threads each)");
    let (lone, lone_server) = start_in("lone", 2, false)?;
    let cluster: Vec<(Worker, Server)> = (1..=3)
        .map(|i| start(&format!("c{i}"), 2))
        .collect::<Result<_, _>>()?;
    const FAN: u32 = 300;
    for w in [&lone, &cluster[0].0] {
        w.upload("bench", "noop", NOOP.as_bytes())
            .map_err(|e| e.to_string())?;
        w.upload("bench", "fan", fan_out(FAN).as_bytes())
            .map_err(|e| e.to_string())?;
        w.upload("bench", "busy", sleeper(2_000_000).as_bytes())
            .map_err(|e| e.to_string())?;
    }
    for (w, _) in &cluster[1..] {
        w.call("bench", "noop", b"").map_err(|e| e.to_string())?;
        w.call("bench", "busy", b"").map_err(|e| e.to_string())?;
    }
    let seen = std::time::Instant::now() + 5 * HEARTBEAT;
    while cluster[0].0.cluster().is_none_or(|c| c.peers().len() < 2) {
        if std::time::Instant::now() > seen {
            return Err("the first worker never saw the other two".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let lone8 = run(lone_server.addr(), 8)?;
    let sent_before = metric(&cluster[0].0, "faaslet_calls_forwarded_total ");
    let cluster8 = run(cluster[0].1.addr(), 8)?;
    let cluster8_forwarded = metric(&cluster[0].0, "faaslet_calls_forwarded_total ") - sent_before;
    let time_fan = |w: &Worker| -> Result<f64, String> {
        let mut ms = Vec::new();
        for _ in 0..9 {
            let t = std::time::Instant::now();
            let r = w.call("bench", "fan", b"").map_err(|e| e.to_string())?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            let ok = r
                .output
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            if ok != Some(FAN) {
                return Err(format!("a fan-out ended with {ok:?} of {FAN} calls done"));
            }
        }
        ms.sort_by(f64::total_cmp);
        Ok(ms[ms.len() / 2])
    };
    progress("fan-outs of 300 chained calls");
    let lone_fan = time_fan(&lone)?;
    let before: Vec<u64> = cluster.iter().map(|(w, _)| calls_run(w)).collect();
    let cluster_fan = time_fan(&cluster[0].0)?;
    // Children run on the first worker count as its chained calls placed
    // here; those on the others as calls they ran.
    let mut spread: Vec<u64> = cluster
        .iter()
        .zip(&before)
        .map(|((w, _), b)| calls_run(w) - b)
        .collect();
    spread[0] = metric(
        &cluster[0].0,
        "faaslet_chained_calls_total{placed=\"here\"} ",
    );

    progress("a new worker joining a saturated cluster");
    let busy_script = base.join("busy.lua");
    std::fs::write(&busy_script, "wrk.method = \"POST\"\n").map_err(|e| e.to_string())?;
    let target = format!("http://{}/f/bench/busy", cluster[0].1.addr());
    let load = std::thread::spawn(move || wrk_threads(&target, &busy_script, 6, 16, 2));
    std::thread::sleep(Duration::from_millis(1500));
    let t = std::time::Instant::now();
    let (fresh, fresh_server) = start("c4", 2)?;
    let mut took_load = None;
    while t.elapsed() < Duration::from_secs(4) {
        if calls_run(&fresh) > 0 {
            took_load = Some(t.elapsed().as_secs_f64() * 1e3);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = load.join();
    for w in cluster.iter().map(|(w, _)| w).chain([&fresh]) {
        if let Some(c) = w.cluster() {
            c.leave();
        }
    }
    let took_load = took_load.ok_or("the new worker ran no call within 4 s")?;
    drop((lone_server, cluster, fresh_server));
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
            "{{\"seconds\": {secs}, \"direct_1\": {}, \"forwarded_1\": {}, \"direct_8\": {}, \"forwarded_8\": {}, \"hop_p50_us\": {added_us:.1}, \"forwarded_calls\": {forwarded}, \"heartbeat_ms_100_workers_1000_functions\": {:.3}, \"heartbeat_reply_bytes\": {}, \"heartbeat_after_publish_ms\": {:.3}, \"heartbeat_after_publish_bytes\": {}, \"one_worker_8\": {}, \"cluster_of_3_8\": {}, \"cluster_of_3_8_forwarded\": {cluster8_forwarded}, \"fan_out_300_ms_one_worker\": {lone_fan:.1}, \"fan_out_300_ms_cluster_of_3\": {cluster_fan:.1}, \"fan_out_calls_per_worker\": {spread:?}, \"new_worker_first_call_ms\": {took_load:.0}}}",
            f(&direct1),
            f(&hop1),
            f(&direct8),
            f(&hop8),
            hb.steady_ms,
            hb.steady_bytes,
            hb.after_publish_ms,
            hb.after_publish_bytes,
            f(&lone8),
            f(&cluster8)
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
            "one heartbeat with 100 workers and 1,000 functions registered: {:.3} ms, {} bytes read (every worker, every second); the first after an upload: {:.3} ms, {} bytes",
            hb.steady_ms, hb.steady_bytes, hb.after_publish_ms, hb.after_publish_bytes
        );
        println!();
        println!("one worker against a cluster of three on the same cores (two threads each), 8 connections, {secs} s");
        for (name, w) in [
            ("one worker", &lone8),
            ("cluster of three, via one", &cluster8),
        ] {
            println!(
                "{name:<34} {:>10.0} {:>8.1}us {:>8.1}us {:>7}",
                w.rps, w.p50_us, w.p99_us, w.errors
            );
        }
        println!(
            "cluster / one worker: {:.2}x the calls/s ({cluster8_forwarded} calls forwarded: a short queue waits less than a hop)",
            cluster8.rps / lone8.rps
        );
        println!(
            "fan-out of {FAN} chained no-op calls (median of 9): one worker {lone_fan:.1} ms, cluster of three {cluster_fan:.1} ms ({:.2}x); calls run per worker {spread:?}",
            cluster_fan / lone_fan
        );
        println!(
            "a worker started while the cluster is saturated ran its first call {took_load:.0} ms after it started (heartbeat {} ms)",
            HEARTBEAT.as_millis()
        );
    }
    Ok(())
}

/// Registers `workers` members (that never heartbeat again) and
/// `functions` published versions, then times heartbeats of one more
/// worker, with and without a publish before each.
fn heartbeat_at_scale(
    redis: &Arc<RedisTier>,
    workers: usize,
    functions: usize,
) -> Result<Heartbeat, String> {
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
    let members_bytes = |me: &Cluster| -> Result<usize, String> {
        Ok(me
            .members()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|m| serde_json::to_string(m).map_or(0, |s| s.len()))
            .sum())
    };
    // Every heartbeat right after a publish reads the whole version map;
    // the others only the epoch.
    let mut steady = (Vec::new(), 0);
    let mut after = (Vec::new(), 0);
    for i in 0..60 {
        let publish = i % 3 == 0;
        if publish {
            redis
                .with("bench", |c| {
                    redis::cmd("INCR")
                        .arg("faaslet:functions:epoch")
                        .query::<()>(c)
                })
                .map_err(|e| e.to_string())?;
        }
        let t = std::time::Instant::now();
        let versions = me.heartbeat(0).map_err(|e| e.to_string())?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let map_bytes: usize = versions
            .iter()
            .flatten()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        let slot = if publish { &mut after } else { &mut steady };
        slot.0.push(ms);
        slot.1 = map_bytes + members_bytes(&me)?;
    }
    for f in &fakes {
        f.leave();
    }
    me.leave();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(Heartbeat {
        steady_ms: median(steady.0),
        steady_bytes: steady.1,
        after_publish_ms: median(after.0),
        after_publish_bytes: after.1,
    })
}

/// What a heartbeat costs at scale.
struct Heartbeat {
    /// Median time, no publish since the last heartbeat, ms.
    steady_ms: f64,
    /// Bytes its replies carry then (the member list).
    steady_bytes: usize,
    /// Median time of the first heartbeat after a publish, ms.
    after_publish_ms: f64,
    /// Bytes its replies carry (the member list and the version map).
    after_publish_bytes: usize,
}
