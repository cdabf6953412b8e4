//! The worker's HTTP API over real loopback sockets (ephemeral ports):
//! upload, synchronous and asynchronous calls, typed errors, deadlines,
//! back-pressure, isolation between users and reloading after a restart.

use faaslet::Engine;
use faaslet_cli::client::{request, Response};
use faaslet_platform::worker::{Server, Worker, WorkerConfig};
use faaslet_tests::sdk_wasm;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Echoes its input and returns 3.
const ECHO: &str = r#"(module
  (import "env" "__faasm_read_input" (func $in (param i32 i32) (result i32)))
  (import "env" "__faasm_write_output" (func $out (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "main") (result i32) (local $n i32)
    (local.set $n (call $in (i32.const 100) (i32.const 1000)))
    (call $out (i32.const 100) (local.get $n))
    (i32.const 3)))"#;

/// Input "w...": stores the input at 0x1000 and in a global. Otherwise
/// outputs 8 bytes at 0x1000 and the global's low byte: what an earlier
/// call (of any user) left behind, if anything leaked.
const SCRATCH: &str = r#"(module
  (import "env" "__faasm_read_input" (func $in (param i32 i32) (result i32)))
  (import "env" "__faasm_write_output" (func $out (param i32 i32)))
  (memory (export "memory") 1)
  (global $g (mut i32) (i32.const 0))
  (func (export "main") (result i32) (local $n i32)
    (local.set $n (call $in (i32.const 0x1000) (i32.const 8)))
    (if (i32.eq (i32.load8_u (i32.const 0x1000)) (i32.const 0x77))
      (then (global.set $g (i32.const 0x41)) (return (i32.const 0))))
    (i32.store8 (i32.const 0x1008) (global.get $g))
    (call $out (i32.const 0x1000) (i32.const 9))
    (i32.const 0)))"#;

/// Input non-empty: writes it to state key "k". Empty: outputs "k".
const STATE: &str = r#"(module
  (import "env" "__faasm_read_input" (func $in (param i32 i32) (result i32)))
  (import "env" "__faasm_write_output" (func $out (param i32 i32)))
  (import "env" "__faasm_read_state" (func $rs (param i32 i32 i32) (result i32)))
  (import "env" "__faasm_write_state" (func $ws (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "k\00")
  (func (export "main") (result i32) (local $n i32)
    (local.set $n (call $in (i32.const 100) (i32.const 100)))
    (if (local.get $n)
      (then (call $ws (i32.const 0) (i32.const 100) (local.get $n)) (return (i32.const 0))))
    (local.set $n (call $rs (i32.const 0) (i32.const 200) (i32.const 100)))
    (if (i32.gt_u (local.get $n) (i32.const 100)) (then (local.set $n (i32.const 100))))
    (call $out (i32.const 200) (local.get $n))
    (i32.const 0)))"#;

const SPIN: &str =
    r#"(module (func (export "main") (result i32) (loop $l (br $l)) (i32.const 0)))"#;
const TRAP: &str = r#"(module (func $boom (unreachable)) (func (export "main") (result i32) (call $boom) (i32.const 0)))"#;
/// Sets a global in `_initialize`: calls see it (they start from the
/// Proto-Faaslet made after initialisation).
const INIT: &str = r#"(module
  (import "env" "__faasm_write_output" (func $out (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "_initialize") (i32.store8 (i32.const 0) (i32.const 0x49)))
  (func (export "main") (result i32) (call $out (i32.const 0) (i32.const 1)) (i32.const 0)))"#;

fn engine() -> Engine {
    Engine::default()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("worker-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start(config: WorkerConfig) -> Server {
    let w = Worker::new(&engine(), config).unwrap();
    Server::start(w, "127.0.0.1:0".parse().unwrap()).unwrap()
}

fn req(s: &Server, method: &str, path: &str, body: &[u8]) -> Response {
    request(&s.addr().to_string(), method, path, body).unwrap()
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

fn upload(s: &Server, user: &str, f: &str, wasm: &[u8]) {
    let r = req(s, "PUT", &format!("/f/{user}/{f}"), wasm);
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn upload_call_download() {
    let s = start(WorkerConfig::new(tmpdir("basic")));
    assert_eq!(req(&s, "GET", "/ping", b"").text(), "PONG");
    upload(&s, "alice", "echo", ECHO.as_bytes());
    let r = req(&s, "POST", "/f/alice/echo", b"hello");
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_eq!(r.header("x-faaslet-return-code"), Some("3"));
    assert_eq!(req(&s, "GET", "/f/alice/echo", b"").body, ECHO.as_bytes());
    // Faasm's JSON message.
    let r = req(
        &s,
        "POST",
        "/",
        br#"{"user":"alice","function":"echo","input_data":"from json"}"#,
    );
    assert_eq!((r.status, r.text().as_str()), (200, "from json"));
    // The Proto-Faaslet is made after `_initialize`.
    upload(&s, "alice", "init", INIT.as_bytes());
    assert_eq!(req(&s, "POST", "/f/alice/init", b"").text(), "I");
    let m = req(&s, "GET", "/metrics", b"").text();
    assert!(
        m.contains(r#"faaslet_calls_total{function="alice/echo",outcome="failed"} 2"#),
        "{m}"
    );
    assert!(m.contains("faaslet_executor_queue_depth 0"), "{m}");
    s.stop().unwrap();
}

#[test]
fn bad_requests_get_typed_errors() {
    let mut c = WorkerConfig::new(tmpdir("errors"));
    c.max_body = 64 << 10;
    let s = start(c);
    let r = req(&s, "PUT", "/f/alice/bad", b"\0asm\x01\0\0\0\x05");
    assert_eq!(
        (r.status, json(&r)["error"].as_str()),
        (400, Some("invalid_module"))
    );
    let r = req(&s, "PUT", "/f/..%2F..%2Fetc/x", ECHO.as_bytes());
    let j = json(&r);
    assert_eq!((r.status, j["error"].as_str()), (400, Some("bad_name")));
    assert_eq!(j["field"], "user");
    let r = req(&s, "PUT", "/f/alice/.hidden", ECHO.as_bytes());
    assert_eq!(
        (r.status, json(&r)["field"].as_str()),
        (400, Some("function"))
    );
    let r = req(&s, "POST", "/f/alice/nope", b"");
    assert_eq!(
        (r.status, json(&r)["error"].as_str()),
        (404, Some("no_such_function"))
    );
    let r = req(&s, "POST", "/", b"{\"user\": 1}");
    assert_eq!(
        (r.status, json(&r)["error"].as_str()),
        (400, Some("bad_json"))
    );
    let r = req(&s, "GET", "/status/abc", b"");
    assert_eq!(
        (r.status, json(&r)["error"].as_str()),
        (400, Some("bad_id"))
    );
    let r = req(&s, "GET", "/status/999999", b"");
    assert_eq!(r.status, 404);
    let r = req(&s, "PUT", "/f/alice/big", &vec![0u8; 100 << 10]);
    assert_eq!(
        (r.status, json(&r)["error"].as_str()),
        (413, Some("body_too_large"))
    );
    let r = req(&s, "GET", "/nowhere", b"");
    assert_eq!(
        (r.status, json(&r)["error"].as_str()),
        (404, Some("not_found"))
    );
    upload(&s, "alice", "echo", ECHO.as_bytes());
    let r = req(&s, "POST", "/f/alice/echo?async=maybe", b"");
    assert_eq!(
        (r.status, json(&r)["error"].as_str()),
        (400, Some("bad_query"))
    );
    s.stop().unwrap();
}

#[test]
fn traps_and_deadlines() {
    let mut c = WorkerConfig::new(tmpdir("limits"));
    c.timeout = Duration::from_millis(200);
    c.threads = 1;
    let s = start(c);
    upload(&s, "alice", "trap", TRAP.as_bytes());
    let r = req(&s, "POST", "/f/alice/trap", b"");
    let j = json(&r);
    assert_eq!(r.status, 500);
    assert_eq!(
        (j["error"].as_str(), j["trap"].as_str()),
        (Some("trap"), Some("unreachable"))
    );
    assert_eq!(j["function"], "alice/trap");
    upload(&s, "alice", "spin", SPIN.as_bytes());
    let r = req(&s, "POST", "/f/alice/spin", b"");
    assert_eq!(
        (r.status, json(&r)["error"].as_str()),
        (504, Some("timeout"))
    );
    // The single executor thread is free again: the spinning Faaslet was
    // stopped and discarded.
    upload(&s, "alice", "echo", ECHO.as_bytes());
    assert_eq!(req(&s, "POST", "/f/alice/echo", b"after").text(), "after");
    s.stop().unwrap();
}

fn wait_status(s: &Server, id: u64) -> serde_json::Value {
    loop {
        let j = json(&req(s, "GET", &format!("/status/{id}"), b""));
        if j["status"] != "running" {
            return j;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn async_calls_and_back_pressure() {
    let mut c = WorkerConfig::new(tmpdir("async"));
    c.threads = 1;
    c.queue = 1;
    c.timeout = Duration::from_secs(2);
    let s = start(c);
    upload(&s, "alice", "echo", ECHO.as_bytes());
    let r = req(&s, "POST", "/f/alice/echo?async=1", b"later");
    assert_eq!(r.status, 202);
    let id = json(&r)["id"].as_u64().unwrap();
    let j = wait_status(&s, id);
    assert_eq!(
        (j["status"].as_str(), j["output"].as_str()),
        (Some("failed"), Some("later"))
    );
    // One thread, one queue slot: a spinning call occupies the thread, a
    // second waits, a third is refused with 429.
    upload(&s, "alice", "spin", SPIN.as_bytes());
    let a = json(&req(&s, "POST", "/f/alice/spin?async=1", b""))["id"]
        .as_u64()
        .unwrap();
    // Until the spinning call (not the tail of the upload's job) holds
    // the thread: one running, none queued.
    loop {
        let m = req(&s, "GET", "/metrics", b"").text();
        if m.contains("faaslet_executor_running 1") && m.contains("faaslet_executor_queue_depth 0")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let b = req(&s, "POST", "/f/alice/spin?async=1", b"");
    assert_eq!(b.status, 202);
    let r = req(&s, "POST", "/f/alice/echo", b"x");
    assert_eq!((r.status, json(&r)["error"].as_str()), (429, Some("busy")));
    let j = wait_status(&s, a);
    assert_eq!(j["status"], "failed");
    assert!(j["message"].as_str().unwrap().contains("deadline"), "{j}");
    s.stop().unwrap();
}

#[test]
fn users_are_isolated() {
    let s = start(WorkerConfig::new(tmpdir("isolation")));
    for user in ["alice", "bob"] {
        upload(&s, user, "scratch", SCRATCH.as_bytes());
        upload(&s, user, "state", STATE.as_bytes());
    }
    // Memory and globals: nothing one call wrote is seen by the next call,
    // of the same user or another.
    assert_eq!(req(&s, "POST", "/f/alice/scratch", b"wsecret!").status, 200);
    for user in ["alice", "bob"] {
        let r = req(&s, "POST", &format!("/f/{user}/scratch"), b"");
        assert_eq!(r.body, [0u8; 9], "{user}");
    }
    // State: keys are per user.
    assert_eq!(req(&s, "POST", "/f/alice/state", b"alice's").status, 200);
    assert_eq!(req(&s, "POST", "/f/bob/state", b"").body, b"");
    assert_eq!(req(&s, "POST", "/f/alice/state", b"").body, b"alice's");
    assert_eq!(req(&s, "GET", "/s/alice/k", b"").body, b"alice's");
    assert_eq!(req(&s, "GET", "/s/bob/k", b"").body, b"");
    // ...and the HTTP state API writes the same per-user keys.
    assert_eq!(req(&s, "PUT", "/s/bob/k", b"bob's").status, 204);
    assert_eq!(req(&s, "POST", "/f/bob/state", b"").body, b"bob's");
    assert_eq!(req(&s, "POST", "/f/alice/state", b"").body, b"alice's");
    let r = req(&s, "PUT", "/s/bob/..", b"x");
    assert_eq!((r.status, json(&r)["field"].as_str()), (400, Some("key")));
    // Two values ("k" of each user), 7 + 5 bytes, in the local tier.
    let m = req(&s, "GET", "/metrics", b"").text();
    assert!(m.contains("faaslet_state_values 2\n"), "{m}");
    assert!(m.contains("faaslet_state_bytes 12\n"), "{m}");
    s.stop().unwrap();
}

#[test]
fn functions_survive_a_restart() {
    let dir = tmpdir("restart");
    let s = start(WorkerConfig::new(&dir));
    upload(&s, "alice", "init", INIT.as_bytes());
    s.stop().unwrap();
    // A corrupt snapshot is detected and remade.
    upload_then_corrupt(&dir);
    let s = start(WorkerConfig::new(&dir));
    assert_eq!(req(&s, "POST", "/f/alice/init", b"").text(), "I");
    assert_eq!(req(&s, "POST", "/f/alice/echo", b"again").text(), "again");
    s.stop().unwrap();
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("code"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "code"))
        .collect();
    v.sort();
    v
}

fn cache_counter(s: &Server, outcome: &str) -> u64 {
    let m = req(s, "GET", "/metrics", b"").text();
    let line = format!("faaslet_code_cache_total{{outcome=\"{outcome}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line} in {m}"))
        .parse()
        .unwrap()
}

/// Uploaded code is compiled once: a restart loads it from the code cache;
/// a truncated or foreign cache entry is refused, recompiled and replaced.
#[test]
fn restart_loads_code_from_the_cache() {
    let dir = tmpdir("code-cache");
    let s = start(WorkerConfig::new(&dir));
    upload(&s, "alice", "echo", ECHO.as_bytes());
    assert_eq!(cache_counter(&s, "miss"), 1);
    // The same bytes again (any user, any name): no compilation.
    upload(&s, "bob", "echo2", ECHO.as_bytes());
    assert_eq!(cache_counter(&s, "hit"), 1);
    s.stop().unwrap();
    let files = cache_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");

    // Restart: both functions' code comes from the cache.
    let s = start(WorkerConfig::new(&dir));
    assert_eq!(cache_counter(&s, "hit"), 2);
    assert_eq!(cache_counter(&s, "miss"), 0);
    assert_eq!(req(&s, "POST", "/f/alice/echo", b"warm").text(), "warm");
    s.stop().unwrap();

    // A truncated entry is refused and replaced by a good one.
    let good = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &good[..good.len() / 2]).unwrap();
    let s = start(WorkerConfig::new(&dir));
    assert_eq!(cache_counter(&s, "rejected"), 1);
    assert_eq!(req(&s, "POST", "/f/bob/echo2", b"again").text(), "again");
    s.stop().unwrap();
    assert_eq!(std::fs::read(&files[0]).unwrap(), good);

    // Code compiled by an engine with other bounds checks, put under this
    // engine's key, is refused: it must never run here.
    let explicit = Engine::new(&faaslet::Config {
        bounds: faaslet::Bounds::Explicit,
        ..Default::default()
    })
    .unwrap();
    let wasm = faaslet::wat_to_wasm(ECHO).unwrap();
    let (_, foreign) = faaslet::Module::from_binary_with_artifact(&explicit, &wasm).unwrap();
    std::fs::write(&files[0], foreign.unwrap()).unwrap();
    let s = start(WorkerConfig::new(&dir));
    assert_eq!(cache_counter(&s, "rejected"), 1);
    assert_eq!(req(&s, "POST", "/f/alice/echo", b"safe").text(), "safe");
    s.stop().unwrap();
    assert_eq!(std::fs::read(&files[0]).unwrap(), good);
}

fn upload_then_corrupt(dir: &Path) {
    let s = start(WorkerConfig::new(dir));
    upload(&s, "alice", "echo", ECHO.as_bytes());
    s.stop().unwrap();
    std::fs::write(dir.join("functions/alice/echo.snap"), b"not a snapshot").unwrap();
}

#[test]
fn sdk_examples_over_http() {
    let Some(echo) = sdk_wasm("echo") else { return };
    let Some(hello) = sdk_wasm("hello") else {
        return;
    };
    let s = start(WorkerConfig::new(tmpdir("sdk")));
    upload(&s, "demo", "echo", &echo);
    upload(&s, "demo", "hello", &hello);
    let r = req(&s, "POST", "/f/demo/echo", b"over http");
    assert_eq!((r.status, r.text().as_str()), (200, "over http"));
    assert_eq!(r.header("x-faaslet-return-code"), Some("0"));
    let r = req(&s, "POST", "/f/demo/hello", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.body.is_empty());
    s.stop().unwrap();
}

#[test]
fn chained_fan_out_runs_on_the_pool() {
    let Some(fanout) = sdk_wasm("fanout") else {
        return;
    };
    let mut c = WorkerConfig::new(tmpdir("fanout"));
    // Two pool threads for 1,000 chained calls whose parent awaits them
    // all: the parent runs queued children itself while it waits.
    c.threads = 2;
    c.queue = 4096;
    let s = start(c);
    upload(&s, "demo", "fanout", &fanout);
    let r = req(&s, "POST", "/f/demo/fanout", b"1000");
    assert_eq!(r.status, 200, "{}", r.text());
    // 0^2 + 1^2 + ... + 999^2
    assert_eq!(r.text().trim(), "332833500");
    assert_eq!(r.header("x-faaslet-return-code"), Some("0"));
    // Two parents at once on two threads, each awaiting 300 children.
    let addr = s.addr().to_string();
    let t = std::thread::spawn(move || request(&addr, "POST", "/f/demo/fanout", b"300").unwrap());
    let r = req(&s, "POST", "/f/demo/fanout", b"300");
    let r2 = t.join().unwrap();
    assert_eq!((r.text().trim(), r2.text().trim()), ("8955050", "8955050"));
    s.stop().unwrap();
}

/// Counts its initialisations: `_initialize` increments the one-byte
/// state value "n"; a call outputs it as a digit.
const INIT_COUNT: &str = r#"(module
  (import "env" "__faasm_write_output" (func $out (param i32 i32)))
  (import "env" "__faasm_read_state" (func $rs (param i32 i32 i32) (result i32)))
  (import "env" "__faasm_write_state" (func $ws (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "n\00")
  (func (export "_initialize")
    (drop (call $rs (i32.const 0) (i32.const 16) (i32.const 1)))
    (i32.store8 (i32.const 16) (i32.add (i32.load8_u (i32.const 16)) (i32.const 1)))
    (call $ws (i32.const 0) (i32.const 16) (i32.const 1)))
  (func (export "main") (result i32)
    (drop (call $rs (i32.const 0) (i32.const 16) (i32.const 1)))
    (i32.store8 (i32.const 16) (i32.add (i32.load8_u (i32.const 16)) (i32.const 0x30)))
    (call $out (i32.const 16) (i32.const 1))
    (i32.const 0)))"#;

#[test]
fn without_proto_faaslets_every_call_is_a_fresh_initialised_instance() {
    // With Proto-Faaslets `_initialize` ran once, at upload; without, it
    // runs again in every call's fresh instance, so calls see what it set
    // either way.
    for proto in [true, false] {
        let mut c = WorkerConfig::new(tmpdir(&format!("proto-{proto}")));
        c.proto_faaslets = proto;
        let s = start(c);
        upload(&s, "alice", "init", INIT.as_bytes());
        upload(&s, "alice", "count", INIT_COUNT.as_bytes());
        for i in 0..3 {
            assert_eq!(req(&s, "POST", "/f/alice/init", b"").text(), "I");
            let inits = if proto { 1 } else { 2 + i };
            assert_eq!(
                req(&s, "POST", "/f/alice/count", b"").text(),
                inits.to_string(),
                "proto_faaslets = {proto}, call {i}"
            );
        }
        s.stop().unwrap();
    }
}

/// Output past `WorkerConfig::max_output` fails the call: written with
/// `__faasm_write_output`, before the host copies it (a trap naming the
/// limit); written to stdout, when the call ends (`output_too_large`).
#[test]
fn output_past_the_limit_fails_the_call() {
    let mut c = WorkerConfig::new(tmpdir("max-output"));
    c.max_output = 1000;
    let s = start(c);
    let by_output = |n: u32| {
        format!(
            r#"(module
  (import "env" "__faasm_write_output" (func $out (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "main") (result i32) (call $out (i32.const 0) (i32.const {n})) (i32.const 0)))"#
        )
    };
    upload(&s, "demo", "small", by_output(1000).as_bytes());
    upload(&s, "demo", "big", by_output(2000).as_bytes());
    let r = req(&s, "POST", "/f/demo/small", b"");
    assert_eq!((r.status, r.body.len()), (200, 1000));
    let r = req(&s, "POST", "/f/demo/big", b"");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.text().contains("more than the limit of 1000"),
        "{}",
        r.text()
    );
    let stdout = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 3000))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
    upload(&s, "demo", "chatty", stdout.as_bytes());
    let r = req(&s, "POST", "/f/demo/chatty", b"");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("output_too_large"), "{}", r.text());
    s.stop().unwrap();
}

/// With a pool, calls take Faaslets prepared ahead (the metrics count the
/// hits), and an upload replaces them: no call after it runs the old code.
#[test]
fn pooled_faaslets_serve_calls_and_never_outlive_an_upload() {
    let mut c = WorkerConfig::new(tmpdir("pool"));
    c.pool_after = Duration::ZERO;
    c.threads = 1;
    let s = start(c);
    let answer =
        |n: i32| format!(r#"(module (func (export "main") (result i32) (i32.const {n})))"#);
    upload(&s, "demo", "f", answer(1).as_bytes());
    for _ in 0..20 {
        let r = req(&s, "POST", "/f/demo/f", b"");
        assert_eq!(r.header("x-faaslet-return-code"), Some("1"));
    }
    let metrics = req(&s, "GET", "/metrics", b"").text();
    let hits: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("faaslet_pool_total{outcome=\"hit\"} ")?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(hits > 0, "{metrics}");
    upload(&s, "demo", "f", answer(2).as_bytes());
    for _ in 0..20 {
        let r = req(&s, "POST", "/f/demo/f", b"");
        assert_eq!(r.header("x-faaslet-return-code"), Some("2"));
    }
    s.stop().unwrap();
}

/// Takes `key` for writing, chains its table entry 1 (which takes `key`
/// too) and awaits it.
const SELF_DEADLOCK: &str = r#"(module
  (import "env" "__faasm_chain_ptr" (func $chain_ptr (param i32 i32 i32) (result i32)))
  (import "env" "__faasm_await_call" (func $await (param i32) (result i32)))
  (import "env" "__faasm_lock_state_write" (func $lock_write (param i32)))
  (import "env" "__faasm_unlock_state_write" (func $unlock_write (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "key\00")
  (table (export "table") 2 funcref)
  (elem (i32.const 1) $child)
  (func $child (result i32)
    (call $lock_write (i32.const 0))
    (call $unlock_write (i32.const 0))
    (i32.const 7))
  (func (export "main") (result i32)
    (call $lock_write (i32.const 0))
    (call $await (call $chain_ptr (i32.const 1) (i32.const 0) (i32.const 0)))))"#;

/// On a worker's executor a parent runs its queued child on its own
/// thread while it awaits it (one thread here, so always): the child's
/// wait for the parent's lock closes a cycle through that thread and
/// fails at once, not at the 20 s deadline, and the worker goes on.
#[test]
fn a_self_deadlock_on_the_executor_fails_at_once() {
    let mut c = WorkerConfig::new(tmpdir("self-deadlock"));
    c.threads = 1;
    c.timeout = Duration::from_secs(20);
    let s = start(c);
    upload(&s, "demo", "deadlock", SELF_DEADLOCK.as_bytes());
    let t = Instant::now();
    let r = req(&s, "POST", "/f/demo/deadlock", b"");
    // The child failed (its await returns -1), the parent returned that.
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-faaslet-return-code"), Some("-1"));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // The lock was released with the call: the next one gets as far.
    let r = req(&s, "POST", "/f/demo/deadlock", b"");
    assert_eq!(r.header("x-faaslet-return-code"), Some("-1"));
    s.stop().unwrap();
}
