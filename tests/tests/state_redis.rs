//! The global state tier on a real Redis (see `faaslet_tests::RedisServer`
//! for how the tests find one).

use faaslet_state::{
    GlobalTier, LocalStateStore, LockMode, RedisTier, StateError, StateLimits, StateStore,
};
use faaslet_tests::{unique_user, RedisServer};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

fn store(url: &str) -> LocalStateStore {
    let tier: Arc<dyn GlobalTier> = Arc::new(RedisTier::connect(url).unwrap());
    LocalStateStore::with_global(tier, StateLimits::default())
}

#[test]
fn push_pull_partial_append_and_locks_between_two_hosts() {
    let r = RedisServer::get();
    let u = unique_user("ops");
    let (a, b) = (store(r.url()), store(r.url()));
    let va = a.value(&u, "k").unwrap();
    va.set(b"hello world").unwrap();
    a.push(&va, None).unwrap();
    let vb = b.value(&u, "k").unwrap();
    b.pull(&vb, None).unwrap();
    assert_eq!(vb.copy_range(0..100).unwrap(), b"hello world");
    // Partial push: only the dirty runs travel (checked by changing the
    // global copy elsewhere in between).
    vb.write_at(0, b"J").unwrap();
    vb.write_at(6, b"W").unwrap();
    va.write_at(3, b"L").unwrap();
    a.push(&va, Some(&va.dirty_ranges())).unwrap();
    b.push(&vb, Some(&vb.dirty_ranges())).unwrap();
    a.pull(&va, None).unwrap();
    assert_eq!(va.copy_range(0..100).unwrap(), b"JelLo World");
    // Partial pull of a range.
    let vc = store(r.url()).value(&u, "k").unwrap();
    let c = store(r.url());
    c.pull(&vc, Some(6..11)).unwrap();
    assert_eq!(vc.copy_range(0..100).unwrap(), b"\0\0\0\0\0\0World");
    drop(c);
    // Appends are shared, in order.
    a.append(&u, "log", b"ab").unwrap();
    b.append(&u, "log", b"cde").unwrap();
    let mut buf = [0u8; 5];
    assert_eq!(a.read_appended(&u, "log", &mut buf, 2).unwrap(), 5);
    assert_eq!(&buf, b"abcde");
    b.clear_appended(&u, "log").unwrap();
    assert!(matches!(
        a.read_appended(&u, "log", &mut buf, 1),
        Err(StateError::NotEnoughAppended { .. })
    ));
    // Global locks exclude across hosts; only the owner's token releases.
    let w = a.lock_global(&va, LockMode::Write, None).unwrap();
    let now = Some(std::time::Instant::now());
    assert!(matches!(
        b.lock_global(&vb, LockMode::Read, now),
        Err(StateError::LockTimeout { .. })
    ));
    a.unlock_global(&w).unwrap();
    let r1 = b.lock_global(&vb, LockMode::Read, None).unwrap();
    let r2 = a.lock_global(&va, LockMode::Read, None).unwrap();
    assert!(a.lock_global(&va, LockMode::Write, now).is_err());
    b.unlock_global(&r1).unwrap();
    a.unlock_global(&r2).unwrap();
    a.unlock_global(&w).unwrap(); // stale token: no effect
    let w2 = b.lock_global(&vb, LockMode::Write, None).unwrap();
    b.unlock_global(&w2).unwrap();
}

#[test]
fn unreachable_redis_at_start_names_the_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let e = RedisTier::connect(&url).unwrap_err().to_string();
    assert!(e.contains(&url) && e.contains("unreachable"), "{e}");
}

#[test]
fn redis_restart_fails_calls_then_reconnects() {
    let mut r = RedisServer::spawn();
    let s = store(r.url());
    let v = s.value("u", "k").unwrap();
    v.set(b"x").unwrap();
    s.push(&v, None).unwrap();
    r.stop();
    let e = s.push(&v, None).unwrap_err();
    assert!(matches!(e, StateError::Global { op: "push", .. }), "{e}");
    r.restart();
    // The server lost everything (no persistence); the store serves again.
    s.push(&v, None).unwrap();
    let v2 = store(r.url()).value("u", "k").unwrap();
    store(r.url()).pull(&v2, None).unwrap();
    assert_eq!(v2.copy_range(0..10).unwrap(), b"x");
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn faaslet_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("faaslet");
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "faaslet-cli", "--bin", "faaslet"])
        .current_dir(workspace())
        .status()
        .unwrap();
    assert!(status.success());
    bin
}

/// 250 times: lock global write, pull, +1, push, unlock.
const COUNTER: &str = r#"(module
  (import "env" "__faasm_read_state" (func $read (param i32 i32 i32) (result i32)))
  (import "env" "__faasm_write_state" (func $write (param i32 i32 i32)))
  (import "env" "__faasm_push_state" (func $push (param i32)))
  (import "env" "__faasm_pull_state" (func $pull (param i32 i32)))
  (import "env" "__faasm_lock_state_global_write" (func $lock (param i32)))
  (import "env" "__faasm_unlock_state_global_write" (func $unlock (param i32)))
  (memory 1)
  (data (i32.const 0) "counter\00")
  (func (export "main") (result i32)
    (local $i i32)
    (loop $l
      (call $lock (i32.const 0))
      (call $pull (i32.const 0) (i32.const 4))
      (drop (call $read (i32.const 0) (i32.const 16) (i32.const 4)))
      (i32.store (i32.const 16) (i32.add (i32.load (i32.const 16)) (i32.const 1)))
      (call $write (i32.const 0) (i32.const 16) (i32.const 4))
      (call $push (i32.const 0))
      (call $unlock (i32.const 0))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 250))))
    i32.const 0))"#;

#[test]
fn four_processes_count_to_1000_under_the_global_lock() {
    let r = RedisServer::get();
    let user = unique_user("counter");
    let dir = std::env::temp_dir().join(format!("faaslet-counter-{user}"));
    std::fs::create_dir_all(&dir).unwrap();
    let wat = dir.join("counter.wat");
    std::fs::write(&wat, COUNTER).unwrap();
    let bin = faaslet_bin();
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(&bin)
                .args(["run", "--state", r.url(), "--user", &user])
                .arg(&wat)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let s = store(r.url());
    let v = s.value(&user, "counter").unwrap();
    s.pull(&v, None).unwrap();
    let b = v.copy_range(0..4).unwrap();
    assert_eq!(u32::from_le_bytes(b.try_into().unwrap()), 1000);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn faaslet_run_with_unreachable_redis_is_a_clear_error() {
    let bin = faaslet_bin();
    let dir = std::env::temp_dir().join(format!("faaslet-unreach-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wat = dir.join("f.wat");
    std::fs::write(&wat, COUNTER).unwrap();
    let out = Command::new(&bin)
        .args(["run", "--state", "redis://127.0.0.1:1"])
        .arg(&wat)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("redis://127.0.0.1:1"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One locked increment (the body of [`COUNTER`] run once).
const ONE_INCREMENT: &str = r#"(module
  (import "env" "__faasm_read_state" (func $read (param i32 i32 i32) (result i32)))
  (import "env" "__faasm_write_state" (func $write (param i32 i32 i32)))
  (import "env" "__faasm_push_state" (func $push (param i32)))
  (import "env" "__faasm_pull_state" (func $pull (param i32 i32)))
  (import "env" "__faasm_lock_state_global_write" (func $lock (param i32)))
  (memory 1)
  (data (i32.const 0) "counter\00")
  (func (export "main") (result i32)
    (call $lock (i32.const 0))
    (call $pull (i32.const 0) (i32.const 4))
    (drop (call $read (i32.const 0) (i32.const 16) (i32.const 4)))
    (i32.store (i32.const 16) (i32.add (i32.load (i32.const 16)) (i32.const 1)))
    (call $write (i32.const 0) (i32.const 16) (i32.const 4))
    (call $push (i32.const 0))
    ;; no unlock: the end of the call releases the lock
    i32.const 0))"#;

#[test]
fn faaslet_host_calls_trap_while_redis_is_down_and_recover() {
    use faaslet_platform::{Faaslet, FaasletConfig, FaasletError};
    let mut r = RedisServer::spawn();
    let engine = faaslet::Engine::default();
    let module = faaslet::Module::new(&engine, ONE_INCREMENT).unwrap();
    let mut config = FaasletConfig::new("inc");
    config.state = Arc::new(store(r.url()));
    let mut f = Faaslet::new(&engine, &module, config.clone()).unwrap();
    // Two calls: the lock left held by the first was released at its end.
    f.call(b"").unwrap();
    f.call(b"").unwrap();
    r.stop();
    match f.call(b"") {
        Err(FaasletError::Trap { trap, .. }) => {
            let m = trap.to_string();
            assert!(m.contains("__faasm_lock_state_global_write"), "{m}");
            assert!(m.contains("global state tier"), "{m}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    r.restart();
    // Redis lost the counter (no persistence): counting starts again.
    f.call(b"").unwrap();
    let v = config.state.value("default", "counter").unwrap();
    assert_eq!(v.copy_range(0..4).unwrap(), 1u32.to_le_bytes());
}
