//! Signal interruption (issue 14): with `Config::signal_interruption` the
//! code has no epoch checks, and calls past their deadline are stopped by
//! a signal, in JIT code at any instruction, in a host function when it
//! returns; calls whose deadline has not passed are never disturbed.

use faaslet::{Bounds, Config, Engine, Func, FuncType, Instance, Module, Store, TrapKind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAT: &str = r#"(module
  (import "host" "tick" (func $tick))
  (memory 1)
  (global $g (mut i32) (i32.const 0))
  ;; A loop with no calls and no memory traffic: only a signal stops it.
  (func (export "spin") (loop $l (global.set $g (i32.add (global.get $g) (i32.const 1))) (br $l)))
  ;; A loop that spends its time in a host function.
  (func (export "spin_host") (loop $l (call $tick) (br $l)))
  ;; Counts to n: finishes.
  (func (export "count") (param $n i32) (result i32) (local $i i32)
    (loop $l
      (i32.store (i32.const 0) (local.get $i))
      (br_if $l (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (local.get $n))))
    (local.get $i)))"#;

fn engines() -> Vec<(&'static str, Engine)> {
    [
        (
            "guard",
            Bounds::GuardPages {
                guard_size: 2 << 30,
            },
        ),
        ("explicit", Bounds::Explicit),
    ]
    .into_iter()
    .map(|(name, bounds)| {
        let config = Config {
            bounds,
            epoch_interruption: true,
            signal_interruption: true,
            ..Config::default()
        };
        (name, Engine::new(&config).unwrap())
    })
    .collect()
}

/// Advances `engine`'s epoch every 2 ms until dropped.
struct Ticker(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl Ticker {
    fn start(engine: &Engine) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (engine.clone(), stop.clone());
        let h = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(2));
                e.increment_epoch();
            }
        });
        Ticker(stop, Some(h))
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        if let Some(h) = self.1.take() {
            let _ = h.join();
        }
    }
}

fn instance(engine: &Engine, ticks: Arc<AtomicU64>) -> (Store<()>, Instance) {
    let module = Module::new(engine, WAT).unwrap();
    let mut store = Store::new(engine, ());
    let tick = Func::new(&mut store, FuncType::new([], []), move |_, _, _| {
        // Busy for a while in host code, where a signal cannot stop us.
        let t = Instant::now();
        while t.elapsed() < Duration::from_micros(200) {
            std::hint::spin_loop();
        }
        ticks.fetch_add(1, Ordering::Relaxed);
        Ok(())
    });
    let instance = Instance::new(&mut store, &module, &[tick.into()]).unwrap();
    (store, instance)
}

#[test]
fn the_code_has_no_epoch_checks() {
    let checks = Engine::new(&Config::default()).unwrap();
    let signals = &engines()[0].1;
    let ir = |e: &Engine| {
        let wasm = faaslet::wat_to_wasm(WAT).unwrap();
        e.emit(&wasm, faaslet::Emit::Clif, Some("1")).unwrap()
    };
    // `spin` (function 1): the epoch check is its only atomic load.
    assert!(ir(&checks).contains("atomic_load"), "{}", ir(&checks));
    assert!(!ir(signals).contains("atomic_load"), "{}", ir(signals));
}

#[test]
fn a_loop_in_jit_code_is_stopped_at_its_deadline() {
    for (mode, engine) in engines() {
        let (mut store, inst) = instance(&engine, Arc::default());
        let spin = inst
            .get_typed_func::<(), (), _>(&mut store, "spin")
            .unwrap();
        let _ticker = Ticker::start(&engine);
        for round in 0..3 {
            store.set_epoch_deadline(10);
            let t = Instant::now();
            let e = spin.call(&mut store, ()).unwrap_err();
            assert_eq!(e.kind, TrapKind::Interrupted, "{mode} round {round}: {e}");
            // 10 ticks of 2 ms, then a signal: well under a second.
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "{mode}: {:?}",
                t.elapsed()
            );
        }
        // A call with room to finish finishes, and its result is right.
        store.set_epoch_deadline(1_000_000);
        let count = inst
            .get_typed_func::<i32, i32, _>(&mut store, "count")
            .unwrap();
        assert_eq!(
            count.call(&mut store, 5_000_000).unwrap(),
            5_000_000,
            "{mode}"
        );
    }
}

#[test]
fn a_loop_spending_its_time_in_a_host_function_is_stopped_when_it_returns() {
    for (mode, engine) in engines() {
        let ticks = Arc::new(AtomicU64::new(0));
        let (mut store, inst) = instance(&engine, ticks.clone());
        let spin = inst
            .get_typed_func::<(), (), _>(&mut store, "spin_host")
            .unwrap();
        let _ticker = Ticker::start(&engine);
        store.set_epoch_deadline(10);
        let t = Instant::now();
        let e = spin.call(&mut store, ()).unwrap_err();
        assert_eq!(e.kind, TrapKind::Interrupted, "{mode}: {e}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{mode}: {:?}",
            t.elapsed()
        );
        assert!(ticks.load(Ordering::Relaxed) > 0, "{mode}");
    }
}

#[test]
fn an_interrupt_handle_stops_a_call_at_once_without_a_ticker() {
    for (mode, engine) in engines() {
        let (mut store, inst) = instance(&engine, Arc::default());
        let spin = inst
            .get_typed_func::<(), (), _>(&mut store, "spin")
            .unwrap();
        let handle = store.interrupt_handle();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            handle.interrupt();
        });
        let e = spin.call(&mut store, ()).unwrap_err();
        assert_eq!(e.kind, TrapKind::Interrupted, "{mode}: {e}");
        t.join().unwrap();
    }
}

/// Many threads, each running calls with deadlines far away, while another
/// store's calls are interrupted every few milliseconds on the same
/// engine: signals reach only the expired call's thread, and no other call
/// is disturbed.
#[test]
fn only_expired_calls_are_interrupted() {
    let (_, engine) = engines().remove(0);
    let _ticker = Ticker::start(&engine);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut store, inst) = instance(&engine, Arc::default());
                let count = inst
                    .get_typed_func::<i32, i32, _>(&mut store, "count")
                    .unwrap();
                let mut calls = 0;
                while !stop.load(Ordering::SeqCst) {
                    store.set_epoch_deadline(1_000_000);
                    assert_eq!(count.call(&mut store, 200_000).unwrap(), 200_000);
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let (mut store, inst) = instance(&engine, Arc::default());
    let spin = inst
        .get_typed_func::<(), (), _>(&mut store, "spin")
        .unwrap();
    for _ in 0..20 {
        store.set_epoch_deadline(2);
        assert_eq!(
            spin.call(&mut store, ()).unwrap_err().kind,
            TrapKind::Interrupted
        );
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        assert!(w.join().unwrap() > 0);
    }
}

#[test]
fn signals_need_interruption_enabled() {
    let e = Engine::new(&Config {
        epoch_interruption: false,
        signal_interruption: true,
        ..Config::default()
    })
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("signal_interruption needs epoch_interruption"),
        "{e}"
    );
}
