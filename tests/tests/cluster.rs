//! Workers in a cluster through one Redis (a private `redis-server`): they
//! see each other, an upload to one is callable on every other without
//! compiling it again, a new upload replaces the old everywhere, and a
//! worker that stops heartbeating drops out. Chained calls spread over
//! the cluster; the global lock holds across workers; a Redis outage fails
//! calls fast and the cluster recovers when it returns.

use faaslet::Engine;
use faaslet_cli::client::{request, Response};
use faaslet_platform::worker::cluster::{Cluster, MEMBER_TTL};
use faaslet_platform::worker::{Language, Server, Worker, WorkerConfig};
use faaslet_state::{LocalStateStore, RedisTier, StateLimits};
use faaslet_tests::{c_wasm, have_wasm_opt, sdk_wasm, RedisServer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Outputs its input after a one-byte tag (`A` or `B` below).
fn echo(tag: char) -> String {
    format!(
        r#"(module
  (import "env" "__faasm_read_input" (func $in (param i32 i32) (result i32)))
  (import "env" "__faasm_write_output" (func $out (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 99) "{tag}")
  (func (export "main") (result i32) (local $n i32)
    (local.set $n (call $in (i32.const 100) (i32.const 1000)))
    (call $out (i32.const 99) (i32.add (local.get $n) (i32.const 1)))
    (i32.const 0)))"#
    )
}

/// Sleeps 300 ms in WASI `poll_oneoff`, then outputs "slept".
const SLEEPER: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "env" "__faasm_write_output" (func $out (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 200) "slept")
  (func (export "main") (result i32)
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 300000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (call $out (i32.const 200) (i32.const 5))
    (i32.const 0)))"#;

struct Node {
    worker: Worker,
    server: Server,
}

impl Node {
    fn start(name: &str, redis: &Arc<RedisTier>) -> Node {
        Node::start_with(name, redis, |_| {})
    }

    fn start_with(
        name: &str,
        redis: &Arc<RedisTier>,
        tune: impl FnOnce(&mut WorkerConfig),
    ) -> Node {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cluster-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = WorkerConfig::new(&dir);
        tune(&mut config);
        config.state = Some(Arc::new(LocalStateStore::with_global(
            redis.clone(),
            StateLimits::default(),
        )));
        let worker = Worker::new(&Engine::default(), config).unwrap();
        let server = Server::start(worker.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
        worker
            .join_cluster(redis.clone(), &server.addr().to_string())
            .unwrap();
        Node { worker, server }
    }

    fn req(&self, method: &str, path: &str, body: &[u8]) -> Response {
        request(&self.server.addr().to_string(), method, path, body).unwrap()
    }

    fn metric(&self, line: &str) -> Option<u64> {
        let m = self.req("GET", "/metrics", b"").text();
        m.lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
    }
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_upload_to_one_worker_is_callable_on_all() {
    let redis_server = RedisServer::spawn();
    let redis = Arc::new(RedisTier::connect(redis_server.url()).unwrap());
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| Node::start(n, &redis))
        .collect();

    // Membership: every worker sees all three.
    let mut addrs: Vec<String> = nodes.iter().map(|n| n.server.addr().to_string()).collect();
    addrs.sort();
    for n in &nodes {
        let seen: Vec<String> = n
            .worker
            .cluster()
            .unwrap()
            .members()
            .unwrap()
            .into_iter()
            .map(|m| m.addr)
            .collect();
        assert_eq!(seen, addrs);
    }

    // Uploaded (and compiled) on a; called on b and c, which load a's
    // code from the store instead of compiling.
    let r = nodes[0].req("PUT", "/f/alice/echo", echo('A').as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    for n in &nodes[1..] {
        assert_eq!(
            n.req("GET", "/f/alice/echo", b"").body,
            echo('A').as_bytes()
        );
        let r = n.req("POST", "/f/alice/echo", b"hi");
        assert_eq!((r.status, r.text().as_str()), (200, "Ahi"));
        assert_eq!(
            n.metric("faaslet_code_cache_total{outcome=\"hit\"}"),
            Some(1)
        );
        assert_eq!(
            n.metric("faaslet_code_cache_total{outcome=\"miss\"}"),
            Some(0)
        );
    }
    assert_eq!(
        nodes[0].metric("faaslet_code_cache_total{outcome=\"miss\"}"),
        Some(1),
        "{}",
        nodes[0].req("GET", "/metrics", b"").text()
    );
    // Asynchronous calls of a function held elsewhere are accepted too.
    let r = nodes[2].req("POST", "/f/alice/echo?async=1", b"x");
    assert_eq!(r.status, 202, "{}", r.text());

    // Uploaded again on c: a and b serve the new version within a couple
    // of heartbeats.
    let r = nodes[2].req("PUT", "/f/alice/echo", echo('B').as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    for n in &nodes[..2] {
        wait_until("the new version", Duration::from_secs(10), || {
            n.req("POST", "/f/alice/echo", b"hi").text() == "Bhi"
        });
    }

    // Unknown everywhere: 404 everywhere.
    for n in &nodes {
        assert_eq!(n.req("POST", "/f/alice/nope", b"").status, 404);
    }

    // A worker that stops cleanly leaves at once...
    let gone = nodes.pop().unwrap();
    let gone_addr = gone.server.addr().to_string();
    let Node { worker, server } = gone;
    server.stop().unwrap();
    drop(worker);
    let probe = Cluster::join(redis.clone(), "127.0.0.1:9", 1).unwrap();
    let live =
        |c: &Cluster| -> Vec<String> { c.members().unwrap().into_iter().map(|m| m.addr).collect() };
    assert!(!live(&probe).contains(&gone_addr));
    assert_eq!(live(&probe).len(), 3, "a, b and the probe");
    drop(nodes);
    // ...and one that dies (never heartbeats again) drops out when its
    // registration expires.
    drop(probe);
    let watcher = Cluster::join(redis.clone(), "127.0.0.1:10", 1).unwrap();
    wait_until(
        "the dead worker expires",
        MEMBER_TTL + Duration::from_secs(3),
        || !live(&watcher).iter().any(|a| a == "127.0.0.1:9"),
    );
    watcher.leave();
}

/// A worker whose only thread is busy forwards calls to the workers with a
/// free slot (one hop: they run it even when full), and queues the rest.
#[test]
fn a_busy_worker_forwards_to_free_ones() {
    let redis_server = RedisServer::spawn();
    let redis = Arc::new(RedisTier::connect(redis_server.url()).unwrap());
    let nodes: Vec<Node> = ["fa", "fb", "fc"]
        .iter()
        .map(|n| {
            Node::start_with(n, &redis, |c| {
                c.threads = 1;
                c.forward_after = Duration::ZERO;
            })
        })
        .collect();
    let r = nodes[0].req("PUT", "/f/demo/sleeper", SLEEPER.as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    // a learns of the others at its next heartbeat.
    wait_until("a sees b and c", Duration::from_secs(10), || {
        peers(&nodes[0]) == 2
    });
    let addr = nodes[0].server.addr().to_string();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || request(&addr, "POST", "/f/demo/sleeper", b"").unwrap())
        })
        .collect();
    for c in calls {
        let r = c.join().unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "slept"));
    }
    let ran = |n: &Node| {
        n.metric("faaslet_calls_total{function=\"demo/sleeper\",outcome=\"success\"}")
            .unwrap_or(0)
    };
    let counts: Vec<u64> = nodes.iter().map(ran).collect();
    assert_eq!(counts.iter().sum::<u64>(), 6, "{counts:?}");
    assert!(
        counts.iter().all(|&n| n >= 1),
        "every worker ran some: {counts:?}"
    );
    assert_eq!(
        nodes[0].metric("faaslet_calls_forwarded_total"),
        Some(counts[1] + counts[2])
    );
}

fn peers(n: &Node) -> usize {
    n.worker.cluster().map_or(0, |c| c.peers().len())
}

/// A fan-out of 300 chained calls started on one worker (two threads,
/// like its peers) runs on all three: the first child here, then the
/// free slots elsewhere, then queued evenly. The parent awaits children
/// on other workers as it awaits its own, outputs included.
#[test]
fn a_fan_out_of_300_chained_calls_spreads_over_three_workers() {
    let (Some(fanout), Some(echo)) = (sdk_wasm("fanout"), sdk_wasm("echo")) else {
        return;
    };
    let redis_server = RedisServer::spawn();
    let redis = Arc::new(RedisTier::connect(redis_server.url()).unwrap());
    let nodes: Vec<Node> = ["xa", "xb", "xc"]
        .iter()
        .map(|n| {
            Node::start_with(n, &redis, |c| {
                c.threads = 2;
                c.queue = 4096;
                // Spread whenever every thread is busy, however short
                // the calls (by default a short wait here beats a hop).
                c.forward_after = Duration::ZERO;
            })
        })
        .collect();
    for (name, wasm) in [("fanout", &fanout), ("echo", &echo)] {
        let r = nodes[0].req("PUT", &format!("/f/demo/{name}"), wasm);
        assert_eq!(r.status, 201, "{}", r.text());
    }
    wait_until("a sees b and c", Duration::from_secs(10), || {
        peers(&nodes[0]) == 2
    });

    // By pointer: each child squares its input.
    let r = nodes[0].req("POST", "/f/demo/fanout", b"300");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text().trim(), "8955050", "0^2 + ... + 299^2");
    assert_eq!(r.header("x-faaslet-return-code"), Some("0"));
    let chained = |n: &Node, placed: &str| {
        n.metric(&format!(
            "faaslet_chained_calls_total{{placed=\"{placed}\"}}"
        ))
        .unwrap_or(0)
    };
    let ran = |n: &Node, f: &str| {
        n.metric(&format!(
            "faaslet_calls_total{{function=\"demo/{f}\",outcome=\"success\"}}"
        ))
        .unwrap_or(0)
    };
    let (here, sent) = (chained(&nodes[0], "here"), chained(&nodes[0], "forwarded"));
    let (b, c) = (ran(&nodes[1], "fanout"), ran(&nodes[2], "fanout"));
    eprintln!("300 chained calls by pointer: {here} on a, {b} on b, {c} on c");
    assert_eq!(here + sent, 300);
    assert!(here > 0 && b > 0 && c > 0, "here {here}, b {b}, c {c}");
    assert_eq!(b + c, sent, "every forwarded call ran once");

    // By name: the children are `echo`, which b and c fetch from the
    // cluster on their first call.
    let r = nodes[0].req("POST", "/f/demo/fanout", b"300 echo");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text().trim(), "44850", "0 + ... + 299");
    let (b, c) = (ran(&nodes[1], "echo"), ran(&nodes[2], "echo"));
    assert!(b > 0 && c > 0, "b {b}, c {c}");
    assert_eq!(
        chained(&nodes[0], "here") + chained(&nodes[0], "forwarded"),
        600
    );
}

/// Increments the 4-byte state value "counter" under the global write
/// lock (pull, +1, push) and outputs the new count (4 bytes, little
/// endian).
const COUNTER: &str = r#"(module
  (import "env" "__faasm_read_state" (func $read (param i32 i32 i32) (result i32)))
  (import "env" "__faasm_write_state" (func $write (param i32 i32 i32)))
  (import "env" "__faasm_push_state" (func $push (param i32)))
  (import "env" "__faasm_pull_state" (func $pull (param i32 i32)))
  (import "env" "__faasm_lock_state_global_write" (func $lock (param i32)))
  (import "env" "__faasm_unlock_state_global_write" (func $unlock (param i32)))
  (import "env" "__faasm_write_output" (func $out (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "counter\00")
  (func (export "main") (result i32)
    (call $lock (i32.const 0))
    (call $pull (i32.const 0) (i32.const 4))
    (drop (call $read (i32.const 0) (i32.const 16) (i32.const 4)))
    (i32.store (i32.const 16) (i32.add (i32.load (i32.const 16)) (i32.const 1)))
    (call $write (i32.const 0) (i32.const 16) (i32.const 4))
    (call $push (i32.const 0))
    (call $unlock (i32.const 0))
    (call $out (i32.const 16) (i32.const 4))
    (i32.const 0)))"#;

fn count_of(r: &Response) -> u32 {
    assert_eq!(r.status, 200, "{}", r.text());
    u32::from_le_bytes(r.body[..4].try_into().unwrap())
}

/// The shared counter, counted by four callers spread over three workers:
/// the global lock serialises them across hosts, so every call sees a
/// distinct count and none is lost.
#[test]
fn four_callers_count_on_three_workers_under_the_global_lock() {
    let redis_server = RedisServer::spawn();
    let redis = Arc::new(RedisTier::connect(redis_server.url()).unwrap());
    let nodes: Vec<Node> = ["ca", "cb", "cc"]
        .iter()
        .map(|n| Node::start(n, &redis))
        .collect();
    let r = nodes[0].req("PUT", "/f/shared/counter", COUNTER.as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    let addrs: Vec<String> = nodes.iter().map(|n| n.server.addr().to_string()).collect();
    let callers: Vec<_> = (0..4)
        .map(|i| {
            let addrs = addrs.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|j| {
                        let addr = &addrs[(i + j) % 3];
                        count_of(&request(addr, "POST", "/f/shared/counter", b"").unwrap())
                    })
                    .collect::<Vec<u32>>()
            })
        })
        .collect();
    let mut seen: Vec<u32> = callers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=100).collect::<Vec<u32>>());
    for n in &nodes {
        let calls = n
            .metric("faaslet_calls_total{function=\"shared/counter\",outcome=\"success\"}")
            .unwrap_or(0);
        assert!(calls > 0, "every worker counted");
    }
}

/// Redis goes away: calls that need it fail at once with an error naming
/// it, uploads are refused, calls of functions held here still run; when
/// Redis is back the cluster works again without restarting a worker.
#[test]
fn a_redis_outage_fails_fast_and_the_cluster_recovers() {
    let mut redis_server = RedisServer::spawn();
    let redis = Arc::new(RedisTier::connect(redis_server.url()).unwrap());
    let nodes: Vec<Node> = ["oa", "ob"]
        .iter()
        .map(|n| Node::start(n, &redis))
        .collect();
    let r = nodes[0].req("PUT", "/f/alice/counter", COUNTER.as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    let r = nodes[0].req("PUT", "/f/alice/echo", echo('A').as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(count_of(&nodes[1].req("POST", "/f/alice/counter", b"")), 1);

    redis_server.stop();
    let t = Instant::now();
    let r = nodes[0].req("POST", "/f/alice/counter", b"");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("global state tier"), "{}", r.text());
    let r = nodes[0].req("PUT", "/f/alice/other", echo('B').as_bytes());
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("cluster_unavailable"), "{}", r.text());
    // b never called `echo`: looking it up needs Redis.
    let r = nodes[1].req("POST", "/f/alice/echo", b"x");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "failing took {:?}",
        t.elapsed()
    );
    // Held here: runs without Redis.
    let r = nodes[0].req("POST", "/f/alice/echo", b"x");
    assert_eq!((r.status, r.text().as_str()), (200, "Ax"));

    redis_server.restart();
    // The connections come back on their own: uploads are published again,
    // heartbeats register the workers again, and the other worker fetches.
    wait_until("uploads work again", Duration::from_secs(15), || {
        nodes[0]
            .req("PUT", "/f/alice/other", echo('B').as_bytes())
            .status
            == 201
    });
    let r = nodes[1].req("POST", "/f/alice/other", b"y");
    assert_eq!((r.status, r.text().as_str()), (200, "By"));
    wait_until("both registered again", Duration::from_secs(10), || {
        nodes[0].worker.cluster().unwrap().members().unwrap().len() == 2
    });
    // Redis lost the count (no persistence): counting starts again.
    assert_eq!(count_of(&nodes[0].req("POST", "/f/alice/counter", b"")), 1);
    assert_eq!(count_of(&nodes[1].req("POST", "/f/alice/counter", b"")), 2);
}

/// A worker with no free thread forwards to a worker that already holds
/// the function (its warm set: no fetch there) over a less loaded one
/// that would have to fetch it.
#[test]
fn forwarded_calls_prefer_the_warm_set() {
    let redis_server = RedisServer::spawn();
    let redis = Arc::new(RedisTier::connect(redis_server.url()).unwrap());
    let tune = |threads: usize| {
        move |c: &mut WorkerConfig| {
            c.threads = threads;
            c.forward_after = Duration::ZERO;
        }
    };
    let a = Node::start_with("wa", &redis, tune(1));
    // b: one thread, will hold `echo`; c: two threads (preferred when both
    // are idle and neither is warm), never holds it.
    let b = Node::start_with("wb", &redis, tune(1));
    let c = Node::start_with("wc", &redis, tune(2));
    let long = SLEEPER.replace("300000000", "5000000000");
    for (f, wasm) in [("hold", long), ("echo", echo('A'))] {
        let r = a.req("PUT", &format!("/f/alice/{f}"), wasm.as_bytes());
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r = b.req("POST", "/f/alice/echo", b"warm");
    assert_eq!((r.status, r.text().as_str()), (200, "Awarm"));
    wait_until("a sees b and c", Duration::from_secs(10), || peers(&a) == 2);
    let cluster = a.worker.cluster().unwrap();
    // Without a warm set, a free worker is chosen by load, then capacity:
    // c. Asking marks `echo` wanted, so a's next heartbeat reads its warm
    // set.
    let first = cluster.place("alice/echo", 1, 1).unwrap();
    cluster.done(&first.id);
    assert_eq!(first.addr, c.server.addr().to_string());
    std::thread::sleep(faaslet_platform::worker::cluster::HEARTBEAT + Duration::from_millis(300));
    // a's only thread is busy for 5 s: every call below is forwarded, to b.
    assert_eq!(a.req("POST", "/f/alice/hold?async=1", b"").status, 202);
    std::thread::sleep(Duration::from_millis(100));
    for i in 0..5 {
        let input = format!("{i}");
        let r = a.req("POST", "/f/alice/echo", input.as_bytes());
        assert_eq!((r.status, r.text()), (200, format!("A{i}")));
    }
    let ran = |n: &Node| {
        n.metric("faaslet_calls_total{function=\"alice/echo\",outcome=\"success\"}")
            .unwrap_or(0)
    };
    assert_eq!((ran(&b), ran(&c)), (6, 0), "b: 1 to warm it + 5 forwarded");
}

/// Stands in for CPython (a Python function runs `python -c DRIVER
/// SCRIPT`): prints the script (argv[3]) applied to its stdin.
const FAKE_PYTHON: &str = r#"
#include <stdio.h>
int main(int argc, char **argv) {
    const char *script = argc > 3 ? argv[3] : "?";
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf - 1, stdin);
    buf[n] = 0;
    printf("%s(%s)\n", script, buf);
    return 0;
}
"#;

/// A Python function uploaded to one worker is callable on another, which
/// captures its own Proto-Faaslet from the published script; uploaded
/// again, the other worker serves the new script.
#[test]
fn a_python_function_uploaded_to_one_worker_runs_on_another() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cluster-python");
    let Some(interp) = c_wasm(&dir, "fake-python", FAKE_PYTHON) else {
        return;
    };
    if !have_wasm_opt() {
        return;
    }
    let interp_path = dir.join("fake-python.wasm");
    std::fs::write(&interp_path, interp).unwrap();
    let redis_server = RedisServer::spawn();
    let redis = Arc::new(RedisTier::connect(redis_server.url()).unwrap());
    let with_python = |c: &mut WorkerConfig| c.python = Some(interp_path.clone());
    let a = Node::start_with("pa", &redis, with_python);
    let b = Node::start_with("pb", &redis, with_python);
    let r = a.req("PUT", "/p/alice/greet", b"hello");
    assert_eq!(r.status, 201, "{}", r.text());
    let r = a.req("POST", "/p/alice/greet", b"a");
    assert_eq!((r.status, r.text().as_str()), (200, "hello(a)\n"));
    let r = b.req("POST", "/p/alice/greet", b"b");
    assert_eq!((r.status, r.text().as_str()), (200, "hello(b)\n"));
    let r = b.req("PUT", "/p/alice/greet", b"bye");
    assert_eq!(r.status, 201, "{}", r.text());
    wait_until("a serves the new script", Duration::from_secs(10), || {
        a.req("POST", "/p/alice/greet", b"c").text() == "bye(c)\n"
    });
}

/// Stands in for QuickJS (a JavaScript function runs `qjs-faaslet
/// SCRIPT`): prints the script (argv[1]) applied to its stdin.
const FAKE_JS: &str = r#"
#include <stdio.h>
int main(int argc, char **argv) {
    const char *script = argc > 1 ? argv[1] : "?";
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf - 1, stdin);
    buf[n] = 0;
    printf("js:%s(%s)\n", script, buf);
    return 0;
}
"#;

/// A JavaScript function uploaded to one worker is published with a `+js`
/// version and callable on another, which captures its own Proto-Faaslet
/// from the script on its interpreter; a worker with no JavaScript
/// interpreter says so.
#[test]
fn a_js_function_uploaded_to_one_worker_runs_on_another() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cluster-js");
    let Some(interp) = c_wasm(&dir, "fake-js", FAKE_JS) else {
        return;
    };
    if !have_wasm_opt() {
        return;
    }
    let interp_path = dir.join("fake-js.wasm");
    std::fs::write(&interp_path, interp).unwrap();
    let redis_server = RedisServer::spawn();
    let redis = Arc::new(RedisTier::connect(redis_server.url()).unwrap());
    let with_js = |c: &mut WorkerConfig| c.js = Some(interp_path.clone());
    let a = Node::start_with("ja", &redis, with_js);
    let b = Node::start_with("jb", &redis, with_js);
    let c = Node::start_with("jc", &redis, |_| {});
    let r = a.req("PUT", "/js/alice/greet", b"hello");
    assert_eq!(r.status, 201, "{}", r.text());
    let published = a
        .worker
        .cluster()
        .unwrap()
        .fetch("alice/greet")
        .unwrap()
        .unwrap();
    assert!(published.version.ends_with("+js"), "{}", published.version);
    assert_eq!(published.language, Some(Language::JavaScript));
    assert!(!published.python);
    assert_eq!(published.wasm, b"hello");
    let r = b.req("POST", "/js/alice/greet", b"b");
    assert_eq!((r.status, r.text().as_str()), (200, "js:hello(b)\n"));
    let data = &b.worker.config().data;
    assert!(data.join("functions/alice/greet.js").exists());
    let r = c.req("POST", "/f/alice/greet", b"c");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("js_unavailable"), "{}", r.text());
}

/// An asynchronous call to a worker with no free thread is accepted by
/// another one; its status, asked where it was sent, comes from there
/// (output included), and names that worker; once that worker is gone the
/// status says so instead of waiting.
#[test]
fn asynchronous_calls_are_forwarded_and_their_status_follows_them() {
    let redis_server = RedisServer::spawn();
    let redis = Arc::new(RedisTier::connect(redis_server.url()).unwrap());
    let tune = |c: &mut WorkerConfig| {
        c.threads = 1;
        c.forward_after = Duration::ZERO;
    };
    let a = Node::start_with("aa", &redis, tune);
    let b = Node::start_with("ab", &redis, tune);
    let long = SLEEPER.replace("300000000", "5000000000");
    for (f, wasm) in [("hold", long), ("echo", echo('A'))] {
        let r = a.req("PUT", &format!("/f/alice/{f}"), wasm.as_bytes());
        assert_eq!(r.status, 201, "{}", r.text());
    }
    wait_until("a sees b", Duration::from_secs(10), || peers(&a) == 1);
    // a's only thread: busy for 5 s.
    assert_eq!(a.req("POST", "/f/alice/hold?async=1", b"").status, 202);
    std::thread::sleep(Duration::from_millis(100));
    let r = a.req("POST", "/f/alice/echo?async=1", b"x");
    assert_eq!(r.status, 202, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let id = v["id"].as_u64().unwrap();
    let b_addr = b.server.addr().to_string();
    let mut last = serde_json::Value::Null;
    wait_until("the forwarded call ends", Duration::from_secs(10), || {
        last = serde_json::from_slice(&a.req("GET", &format!("/status/{id}"), b"").body).unwrap();
        last["status"] != "running"
    });
    assert_eq!(last["status"], "success", "{last}");
    assert_eq!(last["output"], "Ax", "{last}");
    assert_eq!(last["id"], id, "{last}");
    assert_eq!(last["worker"], b_addr.as_str(), "{last}");
    // b stops: its calls' status is no longer known, and says why.
    let Node { worker, server } = b;
    server.stop().unwrap();
    drop(worker);
    let v: serde_json::Value =
        serde_json::from_slice(&a.req("GET", &format!("/status/{id}"), b"").body).unwrap();
    assert_eq!(v["status"], "failed", "{v}");
    assert!(v["message"].as_str().unwrap().contains(&b_addr), "{v}");
}
