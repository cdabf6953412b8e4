//! A guest sleeping in WASI `poll_oneoff` is ended by the store's
//! interrupt handle and by an epoch deadline, like a guest spinning in a
//! loop: serverless timeouts hold whatever the guest does.

use faaslet::{Engine, Linker, Module, Store, TrapKind};
use faaslet_hostapi::wasi::WasiCtx;
use faaslet_platform::wasi::{add_to_linker, WasiView};
use std::time::{Duration, Instant};

struct Host {
    wasi: WasiCtx,
}

impl WasiView for Host {
    fn wasi(&mut self) -> &mut WasiCtx {
        &mut self.wasi
    }
}

/// Sleeps for `ns` nanoseconds with one relative clock subscription.
const SLEEPER: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "sleep") (param $ns i64) (result i32)
    (i64.store (i32.const 0) (i64.const 42))   ;; userdata
    (i32.store8 (i32.const 8) (i32.const 0))   ;; tag: clock
    (i32.store (i32.const 16) (i32.const 1))   ;; clock id: monotonic
    (i64.store (i32.const 24) (local.get $ns)) ;; timeout
    (i64.store (i32.const 32) (i64.const 0))   ;; precision
    (i32.store16 (i32.const 40) (i32.const 0)) ;; flags: relative
    (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))))"#;

fn setup() -> (Engine, Store<Host>, faaslet::TypedFunc<i64, i32>) {
    let engine = Engine::default();
    let module = Module::new(&engine, SLEEPER).unwrap();
    let mut linker = Linker::new(&engine);
    add_to_linker(&mut linker).unwrap();
    let wasi = WasiCtx::builder().build().unwrap();
    let mut store = Store::new(&engine, Host { wasi });
    let inst = linker.instantiate(&mut store, &module).unwrap();
    let sleep = inst
        .get_typed_func::<i64, i32, _>(&mut store, "sleep")
        .unwrap();
    (engine, store, sleep)
}

#[test]
fn short_sleeps_complete() {
    let (_engine, mut store, sleep) = setup();
    let t = Instant::now();
    assert_eq!(sleep.call(&mut store, 20_000_000).unwrap(), 0);
    assert!(t.elapsed() >= Duration::from_millis(20));
}

#[test]
fn an_hour_long_sleep_is_interrupted() {
    let (engine, mut store, sleep) = setup();
    let handle = store.interrupt_handle();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        handle.interrupt();
    });
    let t = Instant::now();
    let err = sleep.call(&mut store, 3_600_000_000_000).unwrap_err();
    assert_eq!(err.kind, TrapKind::Interrupted, "{err}");
    assert!(t.elapsed() < Duration::from_secs(10));
    stopper.join().unwrap();

    // An epoch deadline does the same.
    store.set_epoch_deadline(1);
    let ticker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        engine.increment_epoch();
    });
    let err = sleep.call(&mut store, 3_600_000_000_000).unwrap_err();
    assert_eq!(err.kind, TrapKind::Interrupted, "{err}");
    ticker.join().unwrap();

    // And the store still works.
    store.set_epoch_deadline(1 << 40);
    assert_eq!(sleep.call(&mut store, 1_000_000).unwrap(), 0);
}
