//! `faaslet serve` as a process: it starts with its defaults (or a Redis
//! global tier), serves over loopback, and on SIGTERM stops accepting,
//! lets the call in flight finish and exits cleanly; an unreachable Redis
//! is a clear error at start.

use faaslet_cli::client::request;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Sleeps one second in WASI `poll_oneoff`, then outputs "slept".
const SLEEPER: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "env" "__faasm_write_output" (func $out (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 200) "slept")
  (func (export "main") (result i32)
    ;; one relative clock subscription: monotonic, 1 s
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 1000000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (call $out (i32.const 200) (i32.const 5))
    (i32.const 0)))"#;

fn data_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("serve-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A `faaslet serve` child, killed on drop if a failed assertion leaves it
/// running.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `faaslet serve` with `args`; returns the child, its address and
/// a channel of its stderr lines.
fn serve(args: &[&str]) -> (Serving, String, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_faaslet"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no 'listening' line; exit: {:?}", child.try_wait()));
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().to_string();
            return (Serving(child), addr, rx);
        }
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("faaslet serve did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_lets_the_call_in_flight_finish() {
    let dir = data_dir("sigterm");
    let mut args = vec!["--data", dir.to_str().unwrap()];
    // The global tier CI provides, if any: the worker runs on Redis then.
    let redis = std::env::var("FAASLET_TEST_REDIS").ok();
    if let Some(url) = &redis {
        args.extend(["--state", url.as_str()]);
    }
    let (mut serving, addr, stderr) = serve(&args);
    let child = &mut serving.0;
    let r = request(&addr, "PUT", "/f/demo/sleeper", SLEEPER.as_bytes()).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    // State through the worker's tier (Redis when given).
    let r = request(&addr, "PUT", "/s/demo/k", b"v").unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    // The upload's job may still be counted as running for a moment after
    // its reply: wait until the executor is idle, so "running 1" below is
    // the call.
    let idle = Instant::now() + Duration::from_secs(30);
    while !request(&addr, "GET", "/metrics", b"")
        .unwrap()
        .text()
        .contains("faaslet_executor_running 0")
    {
        assert!(Instant::now() < idle, "the executor never went idle");
        std::thread::sleep(Duration::from_millis(10));
    }
    let call = {
        let addr = addr.clone();
        std::thread::spawn(move || request(&addr, "POST", "/f/demo/sleeper", b"").unwrap())
    };
    // Wait until the call runs, then ask the worker to stop.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = request(&addr, "GET", "/metrics", b"").unwrap().text();
        if m.contains("faaslet_executor_running 1") {
            break;
        }
        assert!(Instant::now() < deadline, "the call never started: {m}");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let r = call.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "slept"));
    let status = wait_exit(child, Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let log: Vec<String> = stderr.try_iter().collect();
    assert!(log.iter().any(|l| l.contains("shutting down")), "{log:?}");
    // One line per request, naming method, path and status.
    assert!(
        log.iter()
            .any(|l| l.contains("POST") && l.contains("/f/demo/sleeper") && l.contains("200")),
        "{log:?}"
    );
    // No longer listening.
    assert!(request(&addr, "GET", "/ping", b"").is_err());
}

#[test]
fn an_unreachable_redis_is_a_clear_error() {
    let dir = data_dir("noredis");
    // Port 1 on loopback: nothing listens there.
    let out = Command::new(env!("CARGO_BIN_EXE_faaslet"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&dir)
        .args(["--state", "redis://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

fn leb(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A module of one exported `main: () -> i32` whose body is
/// `i32.const 3` then `body`, which must leave one more i32 (the result).
fn one_function(body: &[u8]) -> Vec<u8> {
    let mut code = vec![0u8, 0x41, 3]; // no locals; i32.const 3
    code.extend_from_slice(body);
    code.push(0x0b);
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend_from_slice(&[1, 5, 1, 0x60, 0, 1, 0x7f]); // type () -> i32
    m.extend_from_slice(&[3, 2, 1, 0]); // one function of type 0
    m.extend_from_slice(&[7, 8, 1, 4]); // export "main" func 0
    m.extend_from_slice(b"main");
    m.extend_from_slice(&[0, 0]);
    let mut section = Vec::new();
    section.push(1);
    leb(&mut section, code.len());
    section.extend_from_slice(&code);
    m.push(10);
    leb(&mut m, section.len());
    m.extend_from_slice(&section);
    m
}

/// Uploads compile in a child process that the worker stops at its
/// budgets, mid-function too: a chain of 100,000 multiplies (300 KB of
/// wasm, one function, about 70 MB to compile) is refused under a 40 MiB
/// budget and under a 50 ms one, each error naming its budget, and the
/// worker goes on serving. Errors of the module itself still come back
/// as `invalid_module`, through the child.
#[test]
fn uploads_compile_in_a_child_within_their_budgets() {
    // (i32.const 3) then (i32.const 3, i32.mul) x 100,000
    let chain = one_function(&[0x41, 3, 0x6c].repeat(100_000));
    let small = one_function(&[0x41, 4, 0x6c]);

    let dir = data_dir("compile-memory");
    let (_serving, addr, _log) =
        serve(&["--data", dir.to_str().unwrap(), "--compile-memory", "40"]);
    let r = request(&addr, "PUT", "/f/demo/chain", &chain).unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("\"compile_budget\""), "{}", r.text());
    assert!(r.text().contains("memory budget of 40 MiB"), "{}", r.text());
    // Still serving; a small module compiles in a child and runs.
    let r = request(&addr, "PUT", "/f/demo/small", &small).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let r = request(&addr, "POST", "/f/demo/small", b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // An invalid module: the child's typed error, unchanged.
    let mut invalid = small.clone();
    let at = invalid.len() - 2; // i32.mul -> i64.mul: a type mismatch
    assert_eq!(invalid[at], 0x6c);
    invalid[at] = 0x7e;
    let r = request(&addr, "PUT", "/f/demo/invalid", &invalid).unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("\"invalid_module\""), "{}", r.text());
    assert!(r.text().contains("type mismatch"), "{}", r.text());

    let dir = data_dir("compile-time");
    let (_serving, addr, _log) =
        serve(&["--data", dir.to_str().unwrap(), "--compile-budget", "0.05"]);
    let start = Instant::now();
    let r = request(&addr, "PUT", "/f/demo/chain", &chain).unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("time budget of 50ms"), "{}", r.text());
    // Stopped at the budget, not at the end of the (only) function.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let r = request(&addr, "PUT", "/f/demo/small", &small).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
}
