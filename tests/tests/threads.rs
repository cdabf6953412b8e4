//! Threads (shared memories, atomics, wait/notify across host threads) and
//! tail calls, through the embedding API.

use faaslet::{
    Bounds, Config, Engine, Extern, Linker, MemoryType, Module, SharedMemory, Store, TrapKind,
    WaitResult,
};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const GUEST: &str = r#"(module
  (import "env" "mem" (memory 1 4 shared))
  (func (export "wait32") (param $addr i32) (param $expected i32) (param $timeout i64) (result i32)
    (memory.atomic.wait32 (local.get $addr) (local.get $expected) (local.get $timeout)))
  (func (export "notify") (param $addr i32) (param $count i32) (result i32)
    (memory.atomic.notify (local.get $addr) (local.get $count)))
  ;; n times: i32 counter at 64 += 1, i64 counter at 72 += 3, u8 counter at 80 += 1
  (func (export "bump") (param $n i32)
    (loop $l
      (drop (i32.atomic.rmw.add (i32.const 64) (i32.const 1)))
      (drop (i64.atomic.rmw.add (i32.const 72) (i64.const 3)))
      (drop (i32.atomic.rmw8.add_u (i32.const 80) (i32.const 1)))
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1))))))
  ;; a spin lock at 96 guarding a non-atomic counter at 104
  (func (export "locked_bump") (param $n i32)
    (loop $l
      (loop $spin
        (br_if $spin (i32.atomic.rmw.cmpxchg (i32.const 96) (i32.const 0) (i32.const 1))))
      (i32.store (i32.const 104) (i32.add (i32.load (i32.const 104)) (i32.const 1)))
      (i32.atomic.store (i32.const 96) (i32.const 0))
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1))))))
  (func (export "load32") (param i32) (result i32) (i32.atomic.load (local.get 0)))
  (func (export "size") (result i32) (memory.size))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"#;

fn shared_type(min: u64, max: u64) -> MemoryType {
    MemoryType {
        minimum: min,
        maximum: Some(max),
        shared: true,
        memory64: false,
    }
}

/// One guest instance in its own store, importing `shared`.
struct Guest {
    store: Store<()>,
    instance: faaslet::Instance,
}

impl Guest {
    fn new(engine: &Engine, module: &Module, shared: &SharedMemory) -> Guest {
        let mut store = Store::new(engine, ());
        let mem = shared.to_memory(&mut store).unwrap();
        let mut linker = Linker::new(engine);
        linker.define("env", "mem", Extern::Memory(mem)).unwrap();
        let instance = linker.instantiate(&mut store, module).unwrap();
        Guest { store, instance }
    }

    fn wait32(&mut self, addr: i32, expected: i32, timeout: i64) -> i32 {
        let f = self
            .instance
            .get_typed_func::<(i32, i32, i64), i32, _>(&mut self.store, "wait32")
            .unwrap();
        f.call(&mut self.store, (addr, expected, timeout)).unwrap()
    }

    fn notify(&mut self, addr: i32, count: i32) -> i32 {
        let f = self
            .instance
            .get_typed_func::<(i32, i32), i32, _>(&mut self.store, "notify")
            .unwrap();
        f.call(&mut self.store, (addr, count)).unwrap()
    }

    fn call_n(&mut self, name: &str, n: i32) {
        let f = self
            .instance
            .get_typed_func::<i32, (), _>(&mut self.store, name)
            .unwrap();
        f.call(&mut self.store, n).unwrap();
    }

    fn call_i32(&mut self, name: &str) -> i32 {
        let f = self
            .instance
            .get_typed_func::<(), i32, _>(&mut self.store, name)
            .unwrap();
        f.call(&mut self.store, ()).unwrap()
    }
}

fn setup(bounds: Bounds) -> (Engine, Module, SharedMemory) {
    let engine = Engine::new(&Config {
        bounds,
        ..Config::default()
    })
    .unwrap();
    let module = Module::new(&engine, GUEST).unwrap();
    let shared = SharedMemory::new(&engine, shared_type(1, 4)).unwrap();
    (engine, module, shared)
}

fn wait_and_notify_across_threads(bounds: Bounds) {
    let (engine, module, shared) = setup(bounds);
    let waiter = {
        let (engine, module, shared) = (engine.clone(), module.clone(), shared.clone());
        thread::spawn(move || {
            let mut g = Guest::new(&engine, &module, &shared);
            // Infinite timeout: only a notify ends this.
            g.wait32(0, 0, -1)
        })
    };
    let mut g = Guest::new(&engine, &module, &shared);
    let start = Instant::now();
    let woken = loop {
        // The waiter may not be parked yet: retry until it is woken.
        let n = g.notify(0, 1);
        if n > 0 {
            break n;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "waiter never parked"
        );
        thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(woken, 1);
    assert_eq!(waiter.join().unwrap(), 0, "wait returns 0 (woken)");
    // Nobody is waiting any more.
    assert_eq!(g.notify(0, 1), 0);
}

#[test]
fn wait_notify_across_threads_guard_pages() {
    wait_and_notify_across_threads(Config::default().bounds);
}

#[test]
fn wait_notify_across_threads_explicit_bounds() {
    wait_and_notify_across_threads(Bounds::Explicit);
}

#[test]
fn wait_results_not_equal_and_timeout() {
    let (engine, module, shared) = setup(Config::default().bounds);
    let mut g = Guest::new(&engine, &module, &shared);
    shared.write_u32(8, 5).unwrap();
    assert_eq!(g.wait32(8, 4, -1), 1, "value differs: not-equal at once");
    let t = Instant::now();
    assert_eq!(g.wait32(8, 5, 20_000_000), 2, "20 ms timeout");
    assert!(t.elapsed() >= Duration::from_millis(20));
}

#[test]
fn host_waits_wasm_notifies() {
    let (engine, module, shared) = setup(Config::default().bounds);
    let host = {
        let shared = shared.clone();
        thread::spawn(move || shared.atomic_wait32(16, 0, None).unwrap())
    };
    let mut g = Guest::new(&engine, &module, &shared);
    let start = Instant::now();
    while g.notify(16, 1) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "host never parked"
        );
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(host.join().unwrap(), WaitResult::Ok);
    assert_eq!(
        shared
            .atomic_wait32(16, 0, Some(Duration::from_millis(1)))
            .unwrap(),
        WaitResult::TimedOut
    );
    assert_eq!(
        shared.atomic_wait32(16, 1, None).unwrap(),
        WaitResult::Mismatch
    );
}

fn counters_from_two_threads(bounds: Bounds) {
    const N: i32 = 50_000;
    let (engine, module, shared) = setup(bounds);
    let engine = Arc::new(engine);
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (engine, module, shared) = (engine.clone(), module.clone(), shared.clone());
            thread::spawn(move || {
                let mut g = Guest::new(&engine, &module, &shared);
                g.call_n("bump", N);
                g.call_n("locked_bump", N);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut g = Guest::new(&engine, &module, &shared);
    let mut word = |addr: i32| {
        let f = g
            .instance
            .get_typed_func::<i32, i32, _>(&mut g.store, "load32")
            .unwrap();
        f.call(&mut g.store, addr).unwrap()
    };
    assert_eq!(word(64), 2 * N, "i32 counter");
    assert_eq!(word(72), 3 * 2 * N, "i64 counter (low word)");
    assert_eq!(word(76), 0, "i64 counter (high word)");
    assert_eq!(word(80), (2 * N) & 0xff, "u8 counter wraps in its byte");
    assert_eq!(word(104), 2 * N, "counter under the cmpxchg spin lock");
}

#[test]
fn atomic_counters_exact_guard_pages() {
    counters_from_two_threads(Config::default().bounds);
}

#[test]
fn atomic_counters_exact_explicit_bounds() {
    counters_from_two_threads(Bounds::Explicit);
}

#[test]
fn shared_memory_growth_is_seen_by_every_store() {
    let (engine, module, shared) = setup(Bounds::Explicit);
    let mut a = Guest::new(&engine, &module, &shared);
    let mut b = Guest::new(&engine, &module, &shared);
    assert_eq!(a.call_i32("size"), 1);
    let grow = a
        .instance
        .get_typed_func::<i32, i32, _>(&mut a.store, "grow")
        .unwrap();
    assert_eq!(grow.call(&mut a.store, 2).unwrap(), 1);
    assert_eq!(b.call_i32("size"), 3);
    assert_eq!(shared.size(), 3);
    // Past the maximum of 4 pages.
    assert_eq!(grow.call(&mut a.store, 2).unwrap(), -1);
    // The new pages are usable from the other store.
    shared.write_u32(2 * 65536 + 4, 77).unwrap();
    let load = b
        .instance
        .get_typed_func::<i32, i32, _>(&mut b.store, "load32")
        .unwrap();
    assert_eq!(load.call(&mut b.store, 2 * 65536 + 4).unwrap(), 77);
}

#[test]
fn exported_shared_memory_can_be_imported_by_another_store() {
    let engine = Engine::default();
    let exporter = Module::new(&engine, r#"(module (memory (export "m") 1 1 shared))"#).unwrap();
    let mut s1 = Store::new(&engine, ());
    let inst = Linker::new(&engine)
        .instantiate(&mut s1, &exporter)
        .unwrap();
    let mem = inst.get_memory(&mut s1, "m").unwrap();
    let shared = mem.to_shared(&s1).expect("the export is shared");
    let module = Module::new(&engine, GUEST.replace("1 4 shared", "1 1 shared")).unwrap();
    let mut g = Guest::new(&engine, &module, &shared);
    g.call_n("bump", 7);
    let mut b = [0u8];
    mem.read(&s1, 64, &mut b).unwrap();
    assert_eq!(b[0], 7);
    // Other threads write a shared memory: no Rust slice of it is handed out.
    assert!(mem.data(&s1).is_none());
    assert!(mem.data_mut(&mut s1).is_none());
    // An unshared memory has no SharedMemory.
    let plain = faaslet::Memory::new(
        &mut s1,
        MemoryType {
            shared: false,
            ..shared_type(1, 1)
        },
    )
    .unwrap();
    assert!(plain.to_shared(&s1).is_none());
}

#[test]
fn shared_memory_type_rules() {
    let engine = Engine::default();
    // Unshared type, or no maximum: refused.
    assert!(SharedMemory::new(
        &engine,
        MemoryType {
            shared: false,
            ..shared_type(1, 1)
        }
    )
    .is_err());
    assert!(SharedMemory::new(
        &engine,
        MemoryType {
            maximum: None,
            ..shared_type(1, 1)
        }
    )
    .is_err());
    // Importing a shared memory where an unshared one is expected: unlinkable.
    let shared = SharedMemory::new(&engine, shared_type(1, 1)).unwrap();
    let module = Module::new(&engine, r#"(module (import "env" "mem" (memory 1 1)))"#).unwrap();
    let mut store = Store::new(&engine, ());
    let mem = shared.to_memory(&mut store).unwrap();
    assert_eq!(shared.to_memory(&mut store).unwrap(), mem, "same handle");
    let mut linker = Linker::new(&engine);
    linker.define("env", "mem", Extern::Memory(mem)).unwrap();
    assert!(matches!(
        linker.instantiate(&mut store, &module),
        Err(faaslet::Error::Link(_))
    ));
    // A store of an engine with another bounds mode cannot take it.
    let explicit = Engine::new(&Config {
        bounds: Bounds::Explicit,
        ..Config::default()
    })
    .unwrap();
    let mut other = Store::new(&explicit, ());
    assert!(shared.to_memory(&mut other).is_err());
    // Host accessors check bounds and alignment.
    assert!(shared.read_u32(65536).is_err());
    assert!(shared.read_u32(2).is_err());
}

#[test]
fn atomic_traps() {
    for bounds in [Config::default().bounds, Bounds::Explicit] {
        let engine = Engine::new(&Config {
            bounds,
            ..Config::default()
        })
        .unwrap();
        let module = Module::new(
            &engine,
            r#"(module
              (memory 1 1)
              (func (export "unaligned") (result i32) (i32.atomic.load (i32.const 2)))
              (func (export "unaligned_rmw") (result i64)
                (i64.atomic.rmw.add (i32.const 4) (i64.const 1)))
              (func (export "oob") (result i32) (i32.atomic.load (i32.const 65536)))
              (func (export "oob_offset") (result i32)
                (i32.atomic.rmw.add offset=4294967292 (i32.const 8) (i32.const 1)))
              (func (export "wait_unshared") (result i32)
                (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const 0)))
              (func (export "notify_unshared") (result i32)
                (memory.atomic.notify (i32.const 0) (i32.const 1))))"#,
        )
        .unwrap();
        let mut store = Store::new(&engine, ());
        let inst = Linker::new(&engine)
            .instantiate(&mut store, &module)
            .unwrap();
        let mut trap = |name: &str| {
            let f = inst.get_func(&mut store, name).unwrap();
            let mut out = [faaslet::Val::I64(0)];
            let n = f.ty(&store).results.len();
            f.call(&mut store, &[], &mut out[..n])
                .unwrap_err()
                .as_trap()
                .unwrap()
                .kind
        };
        assert_eq!(trap("unaligned"), TrapKind::UnalignedAtomic);
        assert_eq!(trap("unaligned_rmw"), TrapKind::UnalignedAtomic);
        assert_eq!(trap("oob"), TrapKind::MemoryOutOfBounds);
        assert_eq!(trap("oob_offset"), TrapKind::MemoryOutOfBounds);
        assert_eq!(trap("wait_unshared"), TrapKind::AtomicWaitNonShared);
        let notify = inst
            .get_typed_func::<(), i32, _>(&mut store, "notify_unshared")
            .unwrap();
        assert_eq!(notify.call(&mut store, ()).unwrap(), 0);
    }
}

#[test]
fn deep_return_call_loops_do_not_exhaust_the_stack() {
    const N: i64 = 1_000_000;
    let engine = Engine::default();
    let module = Module::new(
        &engine,
        r#"(module
          (import "env" "id" (func $id (param i64 i64) (result i64)))
          (type $t (func (param i64 i64) (result i64)))
          (table funcref (elem $count_indirect))
          ;; counts n down to 0, adding 1 to acc each step
          (func $count (export "count") (param $n i64) (param $acc i64) (result i64)
            (if (result i64) (i64.eqz (local.get $n))
              (then (local.get $acc))
              (else (return_call $count (i64.sub (local.get $n) (i64.const 1))
                                        (i64.add (local.get $acc) (i64.const 1))))))
          (func $count_indirect (export "count_indirect") (param $n i64) (param $acc i64) (result i64)
            (if (result i64) (i64.eqz (local.get $n))
              (then (local.get $acc))
              (else (return_call_indirect (type $t)
                      (i64.sub (local.get $n) (i64.const 1))
                      (i64.add (local.get $acc) (i64.const 1))
                      (i32.const 0)))))
          ;; ping-pong between two functions
          (func $even (export "even") (param $n i64) (param $acc i64) (result i64)
            (if (result i64) (i64.eqz (local.get $n))
              (then (local.get $acc))
              (else (return_call $odd (i64.sub (local.get $n) (i64.const 1)) (local.get $acc)))))
          (func $odd (param $n i64) (param $acc i64) (result i64)
            (if (result i64) (i64.eqz (local.get $n))
              (then (i64.add (local.get $acc) (i64.const 1000)))
              (else (return_call $even (i64.sub (local.get $n) (i64.const 1)) (local.get $acc)))))
          ;; tail call to an imported (host) function
          (func (export "to_host") (param i64 i64) (result i64)
            (return_call $id (local.get 0) (local.get 1))))"#,
    )
    .unwrap();
    let mut linker = Linker::new(&engine);
    linker
        .func_new(
            "env",
            "id",
            faaslet::FuncType::new(
                [faaslet::ValType::I64, faaslet::ValType::I64],
                [faaslet::ValType::I64],
            ),
            |_c, p, r| {
                r[0] = faaslet::Val::I64(p[0].i64().unwrap() * 10 + p[1].i64().unwrap());
                Ok(())
            },
        )
        .unwrap();
    let mut store = Store::new(&engine, ());
    let inst = linker.instantiate(&mut store, &module).unwrap();
    for name in ["count", "count_indirect"] {
        let f = inst
            .get_typed_func::<(i64, i64), i64, _>(&mut store, name)
            .unwrap();
        assert_eq!(f.call(&mut store, (N, 0)).unwrap(), N, "{name}");
    }
    let even = inst
        .get_typed_func::<(i64, i64), i64, _>(&mut store, "even")
        .unwrap();
    assert_eq!(even.call(&mut store, (N, 0)).unwrap(), 0, "N even");
    assert_eq!(even.call(&mut store, (N + 1, 0)).unwrap(), 1000, "N+1 odd");
    let to_host = inst
        .get_typed_func::<(i64, i64), i64, _>(&mut store, "to_host")
        .unwrap();
    assert_eq!(to_host.call(&mut store, (4, 2)).unwrap(), 42);
}

/// A `memory.atomic.wait` that nobody will ever notify, with no timeout,
/// is ended by an [`faaslet::InterruptHandle`] and by an epoch deadline:
/// the call traps as interrupted and the store works again afterwards.
#[test]
fn blocked_wait_is_interruptible() {
    let (engine, module, shared) = setup(Config::default().bounds);
    let mut g = Guest::new(&engine, &module, &shared);
    shared.write_u32(32, 7).unwrap();
    let wait = g
        .instance
        .get_typed_func::<(i32, i32, i64), i32, _>(&mut g.store, "wait32")
        .unwrap();

    let handle = g.store.interrupt_handle();
    let stopper = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        handle.interrupt();
    });
    let err = wait.call(&mut g.store, (32, 7, -1)).unwrap_err();
    assert_eq!(err.kind, faaslet::TrapKind::Interrupted, "{err}");
    stopper.join().unwrap();

    g.store.set_epoch_deadline(1);
    let e2 = engine.clone();
    let ticker = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        e2.increment_epoch();
    });
    let err = wait.call(&mut g.store, (32, 7, -1)).unwrap_err();
    assert_eq!(err.kind, faaslet::TrapKind::Interrupted, "{err}");
    ticker.join().unwrap();

    // Not left queued: a later wait with a timeout behaves normally.
    g.store.set_epoch_deadline(u64::MAX / 2);
    assert_eq!(g.wait32(32, 7, 1_000_000), 2);
}
