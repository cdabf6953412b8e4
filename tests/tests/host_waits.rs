//! Issue 13: every host-side wait ends at the call's deadline, naming what
//! it waited for, and a wait that would never end fails at once; a chained call by a bad table index fails before a
//! thread and an instance are made for it.

use faaslet::{Engine, Module};
use faaslet_platform::{
    chained_calls_started, Faaslet, FaasletConfig, FaasletError, LocalStateStore, Output,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Held by every test here that chains, so that the count of chained calls
/// started is this file's alone at a time.
static CHAINING: Mutex<()> = Mutex::new(());

const PRELUDE: &str = r#"
  (import "env" "__faasm_chain_ptr" (func $chain_ptr (param i32 i32 i32) (result i32)))
  (import "env" "__faasm_await_call" (func $await (param i32) (result i32)))
  (import "env" "__faasm_lock_state_write" (func $lock_write (param i32)))
  (import "env" "__faasm_unlock_state_write" (func $unlock_write (param i32)))
  (import "env" "__faasm_lock_state_read" (func $lock_read (param i32)))
  (import "env" "__faasm_unlock_state_read" (func $unlock_read (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "key\00")
"#;

fn config(deadline_ticks: u64) -> FaasletConfig {
    FaasletConfig {
        state: Arc::new(LocalStateStore::new()),
        deadline_ticks: Some(deadline_ticks),
        stderr: Output::Capture,
        ..FaasletConfig::new("waits")
    }
}

/// The parent takes `key` (for writing, or reading when `parent_read`),
/// chains its table entry 1, which takes `key` for writing, and awaits it.
fn self_deadlock(parent_read: bool) -> (Result<i32, String>, Duration) {
    let take = if parent_read {
        "$lock_read"
    } else {
        "$lock_write"
    };
    let wat = format!(
        r#"(module {PRELUDE}
          (table (export "table") 2 funcref)
          (elem (i32.const 1) $child)
          (func $child (result i32)
            (call $lock_write (i32.const 0))
            (call $unlock_write (i32.const 0))
            (i32.const 7))
          (func (export "main") (result i32)
            (call {take} (i32.const 0))
            (call $await (call $chain_ptr (i32.const 1) (i32.const 0) (i32.const 0)))))"#
    );
    let engine = Engine::default();
    let module = Module::new(&engine, &wat).unwrap();
    let mut f = Faaslet::new(&engine, &module, config(1000)).unwrap();
    let _one = CHAINING.lock().unwrap_or_else(|e| e.into_inner());
    let t = Instant::now();
    let r = match f.call(b"") {
        Ok(out) => Ok(out.return_code),
        Err(FaasletError::Trap { trap, .. }) => Err(trap.to_string()),
        Err(e) => panic!("{e}"),
    };
    (r, t.elapsed())
}

/// A self-deadlock is found when its cycle closes, not at the deadline
/// (10 s here). Whoever closes it fails: the parent's await (the call
/// traps naming the cycle), or the child's lock wait (the child fails,
/// and the parent's await returns its -1), depending on which of the two
/// threads gets there first.
fn assert_detected_at_once(parent_read: bool) {
    let (r, took) = self_deadlock(parent_read);
    assert!(took < Duration::from_secs(3), "{took:?}: {r:?}");
    match r {
        Err(msg) => {
            assert!(msg.contains("deadlock: call"), "{msg}");
            assert!(msg.contains("awaits call"), "{msg}");
            let held = if parent_read {
                "read-held"
            } else {
                "write-held"
            };
            assert!(
                msg.contains(&format!(
                    "waits to write-lock the local lock of state \"default/key\", {held} by call"
                )),
                "{msg}"
            );
        }
        Ok(rc) => assert_eq!(rc, -1, "the child should have failed"),
    }
}

#[test]
fn awaiting_a_child_blocked_on_our_write_lock_is_a_deadlock_found_at_once() {
    assert_detected_at_once(false);
}

#[test]
fn awaiting_a_writer_while_holding_a_read_lock_is_a_deadlock_found_at_once() {
    assert_detected_at_once(true);
}

#[test]
fn a_local_lock_wait_ends_at_the_deadline_naming_the_key() {
    // Two Faaslets of one state store: the first keeps `key` locked (its
    // call is still running); the second waits for it until its deadline.
    let state = Arc::new(LocalStateStore::new());
    let wat = format!(
        r#"(module {PRELUDE}
          (func (export "main") (result i32)
            (call $lock_write (i32.const 0)) (i32.const 0)))"#
    );
    let engine = Engine::default();
    let module = Module::new(&engine, &wat).unwrap();
    let value = faaslet_platform::StateStore::value(&*state, "default", "key").unwrap();
    value.local_lock().lock_write();
    let mut f = Faaslet::new(
        &engine,
        &module,
        FaasletConfig {
            state: state.clone(),
            ..config(20)
        },
    )
    .unwrap();
    let t = Instant::now();
    let msg = match f.call(b"") {
        Err(FaasletError::Trap { trap, .. }) => trap.to_string(),
        other => panic!("expected a trap, got {other:?}"),
    };
    assert!(
        msg.contains("local write lock on \"key\" not granted before the call's deadline"),
        "{msg}"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    value.local_lock().unlock_write();
    // Free again: the same Faaslet gets it.
    assert_eq!(f.call(b"").unwrap().return_code, 0);
}

#[test]
fn a_chained_call_by_a_bad_index_makes_no_thread_and_no_instance() {
    let wat = format!(
        r#"(module {PRELUDE}
          (table (export "table") 2 funcref)
          (elem (i32.const 1) $one)
          (func $one (result i32) (i32.const 1))
          (func (export "main") (result i32)
            (local $i i32) (local $sum i32)
            (loop $l
              (local.set $sum (i32.add (local.get $sum)
                (call $await (call $chain_ptr (i32.const 99) (i32.const 0) (i32.const 0)))))
              (local.set $sum (i32.add (local.get $sum)
                (call $await (call $chain_ptr (i32.const 0) (i32.const 0) (i32.const 0)))))
              (br_if $l (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const 500))))
            ;; and one good call
            (i32.add (local.get $sum)
              (call $await (call $chain_ptr (i32.const 1) (i32.const 0) (i32.const 0))))))"#
    );
    let engine = Engine::default();
    let module = Module::new(&engine, &wat).unwrap();
    let mut f = Faaslet::new(&engine, &module, config(1000)).unwrap();
    let _one = CHAINING.lock().unwrap_or_else(|e| e.into_inner());
    let before = chained_calls_started();
    let out = f.call(b"").unwrap();
    // 1,000 failed calls (-1 each) and one returning 1.
    assert_eq!(out.return_code, -1000 + 1);
    assert_eq!(chained_calls_started() - before, 1);
}
