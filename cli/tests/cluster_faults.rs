//! Two `faaslet serve` processes in a cluster on a `redis-server` of the
//! test's own. A worker whose only thread is busy forwards a call to the
//! other; that one is killed with SIGKILL in the middle of the call: the
//! caller gets an error naming the lost worker (at once, not after a
//! deadline), and later calls no longer go there.

use faaslet_cli::client::request;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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

fn redis() -> (Proc, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Proc(child), format!("redis://127.0.0.1:{port}"))
}

/// `faaslet serve` with one executor thread in the cluster at `url`; its
/// address once it listens.
fn worker(name: &str, url: &str) -> (Proc, String) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("faults-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_faaslet"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--state",
            url,
        ])
        .arg("--data")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the worker did not start");
    (Proc(child), addr)
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
    let (_redis, url) = redis();
    let (_a, a) = worker("a", &url);
    let (mut b_proc, b) = worker("b", &url);
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
