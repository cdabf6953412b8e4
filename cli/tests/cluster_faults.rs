//! `faaslet serve` processes in a cluster on a `redis-server` of the
//! test's own, killed with SIGKILL in the middle of work:
//!
//! - a worker whose only thread is busy forwards a call to another, which
//!   is killed during the call: the caller gets an error naming the lost
//!   worker (at once, not after a deadline), and later calls no longer go
//!   there;
//! - one of three workers is killed in the middle of a fan-out of chained
//!   calls: the calls that were on it fail, naming it, the parent ends
//!   without waiting for its deadline, and the next fan-out runs whole on
//!   the two left.

use faaslet_cli::client::request;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sleeps `ms` milliseconds (WASI `poll_oneoff`), then outputs "slept".
fn sleeper(ms: u64) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "env" "__faasm_write_output" (func $out (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 200) "slept")
  (func (export "main") (result i32)
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const {}))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (call $out (i32.const 200) (i32.const 5))
    (i32.const 0)))"#,
        ms * 1_000_000
    )
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A worker process and what it has written to stderr so far.
struct Worker {
    proc: Proc,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    fn log_has(&self, what: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(what))
    }
}

/// `faaslet serve` with `threads` executor threads in the cluster at
/// `url`, once it listens.
fn worker(name: &str, url: &str, threads: u32) -> Worker {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("faults-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_faaslet"))
        .args(["serve", "--listen", "127.0.0.1:0", "--state", url])
        .args(["--threads", &threads.to_string()])
        .arg("--data")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
            lines.lock().unwrap().push(line);
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the worker did not start");
    Worker {
        proc: Proc(child),
        addr,
        log,
    }
}

fn metric(addr: &str, name: &str) -> u64 {
    request(addr, "GET", "/metrics", b"")
        .unwrap()
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_worker_killed_mid_call_fails_the_call_naming_it() {
    let (url, _redis) = faaslet_cli::bench_state::start_redis().unwrap();
    let a_worker = worker("a", &url, 1);
    let a = a_worker.addr.clone();
    let Worker {
        proc: mut b_proc,
        addr: b,
        ..
    } = worker("b", &url, 1);
    let r = request(&a, "PUT", "/f/demo/slow", sleeper(3000).as_bytes()).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let r = request(&a, "PUT", "/f/demo/short", sleeper(50).as_bytes()).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    // b fetches the function once, so the call below starts at once there.
    let r = request(&b, "POST", "/f/demo/short", b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // a's only thread: busy for 3 s. Then a knows b (next heartbeat).
    let r = request(&a, "POST", "/f/demo/slow?async=1", b"").unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    std::thread::sleep(Duration::from_millis(1500));
    // Forwarded to b; b is killed while it runs.
    let call = {
        let a = a.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            (
                request(&a, "POST", "/f/demo/slow", b"").unwrap(),
                t.elapsed(),
            )
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&b, "faaslet_executor_running ") == 0 {
        assert!(Instant::now() < deadline, "the call never reached b");
        std::thread::sleep(Duration::from_millis(10));
    }
    b_proc.0.kill().unwrap();
    b_proc.0.wait().unwrap();
    let (r, took) = call.join().unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    let body = r.text();
    assert!(body.contains("worker_lost") && body.contains(&b), "{body}");
    assert!(took < Duration::from_secs(3), "the caller waited {took:?}");
    // b is gone: a runs the next call itself (after its busy thread frees).
    let r = request(&a, "POST", "/f/demo/short", b"").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "slept"));
}

/// Chains 24 calls of `slow` by name (input: one byte, the call's index),
/// awaits them all and outputs how many succeeded (4 bytes, little
/// endian).
const PARENT: &str = r#"(module
  (import "env" "__faasm_chain_name" (func $chain (param i32 i32 i32) (result i32)))
  (import "env" "__faasm_await_call" (func $await (param i32) (result i32)))
  (import "env" "__faasm_write_output" (func $out (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "slow\00")
  (func (export "main") (result i32) (local $i i32) (local $ok i32)
    (loop $start
      (i32.store8 (i32.const 64) (local.get $i))
      (i32.store (i32.add (i32.const 1024) (i32.shl (local.get $i) (i32.const 2)))
        (call $chain (i32.const 0) (i32.const 64) (i32.const 1)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $start (i32.lt_u (local.get $i) (i32.const 24))))
    (local.set $i (i32.const 0))
    (loop $wait
      (if (i32.eqz (call $await
            (i32.load (i32.add (i32.const 1024) (i32.shl (local.get $i) (i32.const 2))))))
        (then (local.set $ok (i32.add (local.get $ok) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $wait (i32.lt_u (local.get $i) (i32.const 24))))
    (i32.store (i32.const 128) (local.get $ok))
    (call $out (i32.const 128) (i32.const 4))
    (i32.const 0)))"#;

fn succeeded(r: &faaslet_cli::client::Response) -> u32 {
    assert_eq!(r.status, 200, "{}", r.text());
    u32::from_le_bytes(r.body[..4].try_into().unwrap())
}

#[test]
fn a_worker_killed_mid_fan_out_fails_only_its_calls() {
    let (url, _redis) = faaslet_cli::bench_state::start_redis().unwrap();
    let a = worker("fa", &url, 2);
    let b = worker("fb", &url, 2);
    let mut c = worker("fc", &url, 2);
    let r = request(&a.addr, "PUT", "/f/demo/slow", sleeper(400).as_bytes()).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let r = request(&a.addr, "PUT", "/f/demo/parent", PARENT.as_bytes()).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    // b and c fetch `slow` once; a learns of them at its next heartbeat.
    for w in [&b, &c] {
        let r = request(&w.addr, "POST", "/f/demo/slow", b"").unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    std::thread::sleep(Duration::from_millis(1500));

    let fan_out = {
        let a = a.addr.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let r = request(&a, "POST", "/f/demo/parent", b"").unwrap();
            (succeeded(&r), t.elapsed())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&c.addr, "faaslet_executor_running ") == 0 {
        assert!(Instant::now() < deadline, "no call reached c");
        std::thread::sleep(Duration::from_millis(10));
    }
    c.proc.0.kill().unwrap();
    c.proc.0.wait().unwrap();
    let (ok, took) = fan_out.join().unwrap();
    eprintln!("c killed mid fan-out: {ok} of 24 calls succeeded; the parent took {took:?}");
    // c held a third of the calls (two running, the rest queued there):
    // they were sent, so they are not run again.
    assert!((1..24).contains(&ok), "{ok} of 24 succeeded");
    assert!(took < Duration::from_secs(15), "the parent waited {took:?}");
    assert!(
        a.log_has(&format!("lost worker {}", c.addr)),
        "a's log names c"
    );
    // The next fan-out: c cannot be reached, so what would go there runs
    // on a or b, and every call succeeds.
    let r = request(&a.addr, "POST", "/f/demo/parent", b"").unwrap();
    assert_eq!(succeeded(&r), 24);
    assert!(
        metric(
            &b.addr,
            "faaslet_calls_total{function=\"demo/slow\",outcome=\"success\"} "
        ) > 1
    );
}
