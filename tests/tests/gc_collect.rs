//! Issue 16, item 5: the WebAssembly GC collector. A store allocating
//! garbage without end runs in a bounded heap, and everything reachable
//! survives collections with its contents: references in wasm locals and
//! on the operand stack (across calls, host calls and several frames up),
//! in globals, tables, other objects, exception payloads, and held by the
//! host. Each root test keeps objects only through that root, forces
//! collections by allocating far more garbage than the threshold, and reads
//! the objects back: a root the collector missed would leave its objects
//! freed and their bytes reused, and the read-back (or the object-start
//! check behind every access) would fail.

use faaslet::{AnyKind, Caller, Config, Engine, Instance, Linker, Module, Store, StoreLimits, Val};

fn engine() -> Engine {
    Engine::new(&Config {
        wasm_gc: true,
        ..Config::default()
    })
    .unwrap()
}

/// A store with a 32 MiB memory limit (so garbage far beyond it must be
/// collected) and its instance of `wat`.
fn instance(engine: &Engine, wat: &str) -> (Store<()>, Instance) {
    let module = Module::new(engine, wat).unwrap();
    let mut store = Store::new(engine, ());
    store.set_limits(StoreLimits {
        memory_bytes: 32 << 20,
        ..store.limits()
    });
    let mut linker = Linker::new(engine);
    linker
        .func_wrap(
            "host",
            "reenter",
            |mut caller: Caller<'_, ()>, n: i32| -> i32 {
                // A host frame between wasm frames: call back into wasm, which
                // makes garbage and collects while the outer wasm frames hold
                // their objects only in locals and on the operand stack.
                let churn = caller.get_export("churn").unwrap().into_func().unwrap();
                let mut out = [Val::I32(0)];
                caller.call(churn, &[Val::I32(n)], &mut out).unwrap();
                out[0].i32().unwrap()
            },
        )
        .unwrap();
    let inst = linker.instantiate(&mut store, &module).unwrap();
    (store, inst)
}

/// The module every test uses: `$pair` structs (an i32 and a reference),
/// `churn` (garbage: `n` thousand short-lived structs and arrays, returning
/// how many it made) and readers that check objects' contents.
const MODULE: &str = r#"(module
  (import "host" "reenter" (func $reenter (param i32) (result i32)))
  (type $pair (struct (field $v (mut i32)) (field $next (mut anyref))))
  (type $ints (array (mut i64)))
  (type $refs (array (mut anyref)))
  (tag $boxed (param anyref))
  (global $g (mut anyref) (ref.null any))
  (global $exn (mut exnref) (ref.null exn))
  (table $t 8 anyref)

  ;; n thousand garbage structs and arrays.
  (func $churn (export "churn") (param $n i32) (result i32)
    (local $i i32) (local $x anyref)
    (local.set $n (i32.mul (local.get $n) (i32.const 1000)))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $x (struct.new $pair (local.get $i) (ref.null any)))
        (local.set $x (array.new $ints (i64.const 7) (i32.const 6)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (local.get $i))

  ;; A list v, v-1, ..., 1 (each node's value is its position from the end).
  (func $list (export "list") (param $v i32) (result anyref)
    (local $l anyref) (local $i i32)
    (block $done
      (loop $k
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (local.set $l (struct.new $pair (local.get $i) (local.get $l)))
        (br_if $k (i32.lt_u (local.get $i) (local.get $v)))))
    (local.get $l))

  ;; Checks list $l holds v, v-1, ..., 1: returns v, or -1.
  (func $check (export "check") (param $l anyref) (param $v i32) (result i32)
    (local $p (ref null $pair)) (local $want i32)
    (local.set $want (local.get $v))
    (local.set $p (ref.cast (ref null $pair) (local.get $l)))
    (block $bad
      (loop $k
        (br_if $bad (i32.ne (struct.get $pair $v (local.get $p)) (local.get $want)))
        (local.set $want (i32.sub (local.get $want) (i32.const 1)))
        (local.set $p (ref.cast (ref null $pair) (struct.get $pair $next (local.get $p))))
        (br_if $k (i32.gt_s (local.get $want) (i32.const 0))))
      (br_if $bad (i32.eqz (ref.is_null (local.get $p))))
      (return (local.get $v)))
    (i32.const -1))

  ;; Locals and the operand stack across a call, `depth` frames deep: each
  ;; frame keeps a list in a local and one on the operand stack while the
  ;; innermost frame churns (through the host when `via_host`). Returns
  ;; how many lists were intact afterwards: 2 per frame.
  (func $deep (export "deep") (param $depth i32) (param $via_host i32) (result i32)
    (local $mine anyref) (local $inner i32)
    (local.set $mine (call $list (i32.add (local.get $depth) (i32.const 3))))
    (call $list (i32.add (local.get $depth) (i32.const 10)))  ;; stays on the operand stack
    (local.set $inner
      (if (result i32) (local.get $depth)
        (then (call $deep (i32.sub (local.get $depth) (i32.const 1)) (local.get $via_host)))
        (else
          (drop (if (result i32) (local.get $via_host)
            (then (call $reenter (i32.const 300)))
            (else (call $churn (i32.const 300)))))
          (i32.const 0))))
    (i32.add (local.get $depth) (i32.const 10))
    (call $check)
    (i32.eq (i32.add (local.get $depth) (i32.const 10)))
    (i32.eq (call $check (local.get $mine) (i32.add (local.get $depth) (i32.const 3)))
            (i32.add (local.get $depth) (i32.const 3)))
    (i32.add)
    (local.get $inner)
    (i32.add))

  (func (export "set_global") (param anyref) (global.set $g (local.get 0)))
  (func (export "get_global") (result anyref) (global.get $g))
  (func (export "set_table") (param i32 anyref) (table.set $t (local.get 0) (local.get 1)))
  (func (export "get_table") (param i32) (result anyref) (table.get $t (local.get 0)))

  ;; An array holding lists (references in array elements).
  (func (export "array_of_lists") (param $n i32) (result anyref)
    (local $a (ref null $refs)) (local $i i32)
    (local.set $a (array.new_default $refs (local.get $n)))
    (block $done
      (loop $k
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (array.set $refs (local.get $a) (local.get $i)
          (call $list (i32.add (local.get $i) (i32.const 1))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $k)))
    (local.get $a))
  (func (export "check_array") (param $a anyref) (param $n i32) (result i32)
    (local $i i32) (local $ok i32)
    (block $done
      (loop $k
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $ok (i32.add (local.get $ok)
          (i32.eq
            (call $check (array.get $refs (ref.cast (ref $refs) (local.get $a)) (local.get $i))
                         (i32.add (local.get $i) (i32.const 1)))
            (i32.add (local.get $i) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $k)))
    (local.get $ok))

  ;; An exception carrying a list, kept only as an exnref in a global.
  (func (export "throw_list") (param $v i32)
    (block $h (result anyref exnref)
      (try_table (catch_ref $boxed $h)
        (throw $boxed (call $list (local.get $v))))
      (unreachable))
    (global.set $exn)
    (drop))
  (func (export "check_thrown") (param $v i32) (result i32)
    (block $h (result anyref)
      (try_table (catch $boxed $h)
        (throw_ref (global.get $exn)))
      (unreachable))
    (local.get $v)
    (call $check))

  ;; A list behind extern.convert_any.
  (func (export "list_extern") (param $v i32) (result externref)
    (extern.convert_any (call $list (local.get $v))))
  (func (export "check_extern") (param externref) (param i32) (result i32)
    (call $check (any.convert_extern (local.get 0)) (local.get 1)))
)"#;

fn churn(store: &mut Store<()>, inst: &Instance, thousands: i32) {
    let f = inst
        .get_typed_func::<i32, i32, _>(&mut *store, "churn")
        .unwrap();
    assert_eq!(f.call(&mut *store, thousands).unwrap(), thousands * 1000);
}

fn call1(store: &mut Store<()>, inst: &Instance, name: &str, params: &[Val]) -> Val {
    let f = inst.get_func(&mut *store, name).unwrap();
    let n = f.ty(&*store).results.len();
    let mut out = vec![Val::I32(0); n];
    f.call(&mut *store, params, &mut out).unwrap();
    out.pop().unwrap_or(Val::I32(0))
}

fn check(store: &mut Store<()>, inst: &Instance, l: Val, v: i32) -> i32 {
    call1(store, inst, "check", &[l, Val::I32(v)])
        .i32()
        .unwrap()
}

/// Item 1: 10 million garbage structs and 10 million garbage arrays (about
/// 400 MB) in a store limited to 32 MiB: no `GcHeapExhausted`, and the heap
/// stays near the collection threshold.
#[test]
fn garbage_loop_runs_in_a_bounded_heap() {
    let engine = engine();
    let (mut store, inst) = instance(&engine, MODULE);
    churn(&mut store, &inst, 10_000);
    let stats = store.gc_stats();
    assert!(stats.allocated_objects >= 20_000_000, "{stats:?}");
    assert!(stats.allocated_bytes > 300 << 20, "{stats:?}");
    assert!(stats.collections > 10, "{stats:?}");
    assert!(stats.heap_bytes < 4 << 20, "{stats:?}");
    assert!(store.memory_bytes() < 8 << 20, "{}", store.memory_bytes());
}

/// Locals and operand-stack values of wasm frames several levels up, with
/// the collection deep below them (directly, and through a host function
/// that calls back into wasm).
#[test]
fn frames_up_the_stack_are_roots() {
    let engine = engine();
    let (mut store, inst) = instance(&engine, MODULE);
    for via_host in [0, 1] {
        let before = store.gc_stats().collections;
        let depth = 6;
        let got = call1(
            &mut store,
            &inst,
            "deep",
            &[Val::I32(depth), Val::I32(via_host)],
        )
        .i32()
        .unwrap();
        assert_eq!(got, 2 * (depth + 1), "via_host {via_host}");
        assert!(store.gc_stats().collections > before);
    }
}

/// Globals, tables, array elements and object fields.
#[test]
fn globals_tables_and_fields_are_roots() {
    let engine = engine();
    let (mut store, inst) = instance(&engine, MODULE);
    // Made in a root scope: once it ends, only wasm-side roots remain.
    store.with_root_scope(|store| {
        let l = call1(store, &inst, "list", &[Val::I32(50)]);
        call1(store, &inst, "set_global", &[l]);
        let l = call1(store, &inst, "list", &[Val::I32(60)]);
        call1(store, &inst, "set_table", &[Val::I32(5), l]);
        let a = call1(store, &inst, "array_of_lists", &[Val::I32(40)]);
        call1(store, &inst, "set_table", &[Val::I32(2), a]);
        assert_eq!(store.gc_host_roots(), 3);
    });
    assert_eq!(store.gc_host_roots(), 0);
    // A collection outside any call sees no stack at all: only the roots
    // under test keep the lists; the garbage after it reuses what it freed.
    let before = store.gc_stats().collections;
    store.gc();
    churn(&mut store, &inst, 2000);
    assert!(store.gc_stats().collections > before);
    let g = call1(&mut store, &inst, "get_global", &[]);
    assert_eq!(check(&mut store, &inst, g, 50), 50);
    let t = call1(&mut store, &inst, "get_table", &[Val::I32(5)]);
    assert_eq!(check(&mut store, &inst, t, 60), 60);
    let a = call1(&mut store, &inst, "get_table", &[Val::I32(2)]);
    assert_eq!(
        call1(&mut store, &inst, "check_array", &[a, Val::I32(40)]).i32(),
        Some(40)
    );
}

/// An exception payload kept only as an `exnref`.
#[test]
fn exception_payloads_are_roots() {
    let engine = engine();
    let (mut store, inst) = instance(&engine, MODULE);
    call1(&mut store, &inst, "throw_list", &[Val::I32(70)]);
    store.gc();
    churn(&mut store, &inst, 2000);
    assert!(store.gc_stats().collections > 0);
    assert_eq!(
        call1(&mut store, &inst, "check_thrown", &[Val::I32(70)]).i32(),
        Some(70)
    );
}

/// References the host holds: `AnyRef`s, and `ExternRef`s made by
/// `extern.convert_any`; a collection in between leaves them intact. A
/// handle the host released is refused afterwards, even once its object's
/// bytes were reused, and never reaches another object.
#[test]
fn host_handles_are_roots_and_stale_ones_are_refused() {
    let engine = engine();
    let (mut store, inst) = instance(&engine, MODULE);
    let l = call1(&mut store, &inst, "list", &[Val::I32(80)]);
    let e = call1(&mut store, &inst, "list_extern", &[Val::I32(90)]);
    assert!(matches!(e, Val::ExternRef(Some(_))));
    store.gc();
    churn(&mut store, &inst, 2000);
    assert_eq!(check(&mut store, &inst, l.clone(), 80), 80);
    assert_eq!(
        call1(&mut store, &inst, "check_extern", &[e, Val::I32(90)]).i32(),
        Some(90)
    );
    let Val::AnyRef(Some(r)) = l else { panic!() };
    assert_eq!(r.kind(&store), Some(AnyKind::Struct));
    assert!(r.unroot(&mut store));
    assert!(!r.unroot(&mut store));
    store.gc();
    // New objects reuse the freed bytes; the stale handle is refused.
    let _fresh = call1(&mut store, &inst, "list", &[Val::I32(80)]);
    assert_eq!(r.kind(&store), None);
    let f = inst.get_func(&mut store, "check").unwrap();
    let mut out = [Val::I32(0)];
    let err = f
        .call(&mut store, &[Val::AnyRef(Some(r)), Val::I32(80)], &mut out)
        .unwrap_err();
    assert!(err.to_string().contains("stale"), "{err}");
}

/// Roots made in a root scope are released when it ends; the host loop
/// calling wasm does not accumulate them.
#[test]
fn root_scopes_release_handles() {
    let engine = engine();
    let (mut store, inst) = instance(&engine, MODULE);
    let kept = call1(&mut store, &inst, "list", &[Val::I32(5)]);
    let inside = store.with_root_scope(|store| {
        for _ in 0..1000 {
            call1(store, &inst, "list", &[Val::I32(5)]);
        }
        assert_eq!(store.gc_host_roots(), 1001);
        call1(store, &inst, "list", &[Val::I32(5)])
    });
    assert_eq!(store.gc_host_roots(), 1);
    let Val::AnyRef(Some(inside)) = inside else {
        panic!()
    };
    assert_eq!(inside.kind(&store), None);
    assert_eq!(check(&mut store, &inst, kept, 5), 5);
}

/// The collector runs on its own when an allocation would pass the
/// store's memory limit, not only at the threshold: live data close to
/// the limit plus garbage still fits.
#[test]
fn collects_before_trapping_at_the_limit() {
    let engine = engine();
    let (mut store, inst) = instance(&engine, MODULE);
    // About 20 MiB live in a global (32 MiB limit), then garbage.
    store.with_root_scope(|store| {
        let a = call1(store, &inst, "array_of_lists", &[Val::I32(1200)]);
        call1(store, &inst, "set_global", &[a]);
    });
    assert_eq!(store.gc_host_roots(), 0);
    churn(&mut store, &inst, 3000);
    let g = call1(&mut store, &inst, "get_global", &[]);
    assert_eq!(
        call1(&mut store, &inst, "check_array", &[g, Val::I32(1200)]).i32(),
        Some(1200)
    );
    assert!(store.memory_bytes() <= 32 << 20);
}
