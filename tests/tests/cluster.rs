//! Workers in a cluster through one Redis (a private `redis-server`): they
//! see each other, an upload to one is callable on every other without
//! compiling it again, a new upload replaces the old everywhere, and a
//! worker that stops heartbeating drops out.

use faaslet::Engine;
use faaslet_cli::client::{request, Response};
use faaslet_platform::worker::cluster::{Cluster, MEMBER_TTL};
use faaslet_platform::worker::{Server, Worker, WorkerConfig};
use faaslet_state::{LocalStateStore, RedisTier, StateLimits};
use faaslet_tests::RedisServer;
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
        .map(|n| Node::start_with(n, &redis, |c| c.threads = 1))
        .collect();
    let r = nodes[0].req("PUT", "/f/demo/sleeper", SLEEPER.as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    // Every worker learns of the others at its next heartbeat.
    std::thread::sleep(faaslet_platform::worker::cluster::HEARTBEAT + Duration::from_millis(500));
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
