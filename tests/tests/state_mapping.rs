//! State values mapped into Faaslets' memories: `__faasm_read_state_ptr`
//! maps the value's own pages (`MAP_SHARED`), so Faaslets of one host
//! share them; resets, pools and snapshots never keep, zero or copy them.

use faaslet::{Bounds, Config, Engine, Module};
use faaslet_platform::{Faaslet, FaasletConfig};
use faaslet_state::{GlobalTier, LocalStateStore, StateStore};
use std::sync::Arc;

const IMPORTS: &str = r#"
  (import "env" "__faasm_write_output" (func $out (param i32 i32)))
  (import "env" "__faasm_read_input" (func $in (param i32 i32) (result i32)))
  (import "env" "__faasm_read_state_ptr" (func $ptr (param i32 i32) (result i32)))
  (import "env" "__faasm_read_state" (func $read (param i32 i32 i32) (result i32)))
  (import "env" "__faasm_push_state_partial" (func $push_partial (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "shared\00")
"#;

/// Maps `shared` (4096 bytes). Input byte `r` is this Faaslet's role: it
/// writes `r` at byte `r - 'a'` through the pointer, then spins (without any
/// host call in between) until the other role's byte appears, and outputs
/// the first two bytes it sees. A copy could never see the other's write.
const PINGPONG: &str = r#"
  (func (export "main") (result i32) (local $p i32) (local $me i32) (local $n i32)
    (drop (call $in (i32.const 100) (i32.const 1)))
    (local.set $me (i32.load8_u (i32.const 100)))
    (local.set $p (call $ptr (i32.const 0) (i32.const 4096)))
    (i32.store8 (i32.add (local.get $p) (i32.sub (local.get $me) (i32.const 97))) (local.get $me))
    (block $done
      (loop $spin
        ;; both bytes set?
        (br_if $done (i32.and
          (i32.ne (i32.load8_u (local.get $p)) (i32.const 0))
          (i32.ne (i32.load8_u offset=1 (local.get $p)) (i32.const 0))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br_if $spin (i32.lt_u (local.get $n) (i32.const 2000000000)))))
    (call $out (local.get $p) (i32.const 2))
    (i32.const 0))
"#;

/// Guard pages, explicit bounds (guarded), explicit bounds unguarded.
fn engines() -> Vec<(&'static str, Engine)> {
    let explicit = Config {
        bounds: Bounds::Explicit,
        ..Config::default()
    };
    [
        ("guard pages", Config::default()),
        ("explicit", explicit.clone()),
        (
            "explicit, no canaries",
            Config {
                explicit_canaries: false,
                ..explicit
            },
        ),
    ]
    .into_iter()
    .map(|(name, c)| (name, Engine::new(&c).unwrap()))
    .collect()
}

fn module(engine: &Engine, body: &str) -> Module {
    Module::new(engine, format!("(module {IMPORTS} {body})")).unwrap()
}

fn config(state: &Arc<dyn StateStore>) -> FaasletConfig {
    FaasletConfig {
        state: state.clone(),
        ..FaasletConfig::new("mapped")
    }
}

#[test]
fn two_faaslets_write_the_same_pages() {
    for (bounds, engine) in engines() {
        let m = module(&engine, PINGPONG);
        let state: Arc<dyn StateStore> = Arc::new(LocalStateStore::new());
        let threads: Vec<_> = [b"a", b"b"]
            .into_iter()
            .map(|role| {
                let mut f = Faaslet::new(&engine, &m, config(&state)).unwrap();
                std::thread::spawn(move || f.call(role).unwrap().output)
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), b"ab", "{bounds}");
        }
        // The host's copy is the same pages.
        let v = state.value("default", "shared").unwrap();
        assert_eq!(v.copy_range(0..2).unwrap(), b"ab", "{bounds}");
    }
}

#[test]
fn the_next_call_starts_without_the_mapping_and_the_value_survives() {
    // Call 1 maps the value and writes through the pointer; every call
    // reports the memory's size in pages on entry and the byte at the
    // pointer afterwards.
    let body = r#"
      (func (export "main") (result i32) (local $p i32)
        (i32.store8 (i32.const 200) (i32.add (i32.const 48) (memory.size)))
        (local.set $p (call $ptr (i32.const 0) (i32.const 100)))
        (i32.store8 (i32.const 201) (i32.load8_u (local.get $p)))
        (i32.store8 (local.get $p) (i32.add (i32.load8_u (local.get $p)) (i32.const 1)))
        (call $out (i32.const 200) (i32.const 2))
        (i32.const 0))
    "#;
    for (bounds, engine) in engines() {
        let m = module(&engine, body);
        let state: Arc<dyn StateStore> = Arc::new(LocalStateStore::new());
        state.value("default", "shared").unwrap().set(b"A").unwrap();
        let snap = Faaslet::snapshot(&engine, &m, config(&state), None).unwrap();
        let mut proto = Faaslet::from_snapshot(&engine, &snap, config(&state)).unwrap();
        let mut fresh = Faaslet::new(&engine, &m, config(&state)).unwrap();
        // Alternate between a Proto-Faaslet (reset to its snapshot) and a
        // fresh Faaslet (new instance each call): each call starts at one
        // page and sees the increments of all the calls before it.
        for i in 0..4u8 {
            let f = if i % 2 == 0 { &mut proto } else { &mut fresh };
            let out = f.call(b"").unwrap().output;
            assert_eq!(out, [b'1', b'A' + i], "{bounds} call {i}");
        }
        let v = state.value("default", "shared").unwrap();
        assert_eq!(v.copy_range(0..1).unwrap(), b"E");
    }
}

#[test]
fn a_snapshot_captures_mapped_state_as_zero() {
    // `_initialize` maps the value and writes through it; the Proto-Faaslet
    // keeps the memory's size and the pointer, but not the value's bytes
    // and not the mapping.
    let body = r#"
      (global $p (mut i32) (i32.const 0))
      (func (export "_initialize")
        (global.set $p (call $ptr (i32.const 0) (i32.const 100)))
        (i32.store8 (global.get $p) (i32.const 83)))
      (func (export "main") (result i32)
        (i32.store8 (i32.const 200) (i32.add (i32.const 48) (memory.size)))
        (i32.store8 (i32.const 201) (i32.add (i32.const 48) (i32.load8_u (global.get $p))))
        ;; writes here are private to this call
        (i32.store8 (global.get $p) (i32.const 1))
        (call $out (i32.const 200) (i32.const 2))
        (i32.const 0))
    "#;
    for (bounds, engine) in engines() {
        let m = module(&engine, body);
        let state: Arc<dyn StateStore> = Arc::new(LocalStateStore::new());
        let snap = Faaslet::snapshot(&engine, &m, config(&state), None).unwrap();
        let v = state.value("default", "shared").unwrap();
        assert_eq!(v.copy_range(0..1).unwrap(), b"S");
        let mut f = Faaslet::from_snapshot(&engine, &snap, config(&state)).unwrap();
        for _ in 0..2 {
            assert_eq!(f.call(b"").unwrap().output, b"20", "{bounds}");
        }
        assert_eq!(v.copy_range(0..1).unwrap(), b"S", "{bounds}");
    }
}

/// A global tier that records what partial pushes send.
#[derive(Debug, Default)]
struct Recording {
    inner: faaslet_state::InProcessTier,
    runs: std::sync::Mutex<Vec<std::ops::Range<usize>>>,
}

impl GlobalTier for Recording {
    fn len(&self, key: &str) -> Result<usize, faaslet_state::StateError> {
        self.inner.len(key)
    }
    fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<u8>, faaslet_state::StateError> {
        self.inner.get_range(key, range)
    }
    fn set(
        &self,
        key: &str,
        data: &dyn faaslet_state::ByteSource,
    ) -> Result<(), faaslet_state::StateError> {
        self.inner.set(key, data)
    }
    fn set_ranges(
        &self,
        key: &str,
        runs: &[(usize, &dyn faaslet_state::ByteSource)],
    ) -> Result<(), faaslet_state::StateError> {
        let mut r = self.runs.lock().unwrap();
        r.extend(runs.iter().map(|(o, d)| *o..*o + d.len()));
        self.inner.set_ranges(key, runs)
    }
    fn append(&self, key: &str, data: &[u8], max: u64) -> Result<bool, faaslet_state::StateError> {
        self.inner.append(key, data, max)
    }
    fn appended(
        &self,
        key: &str,
        start: u64,
        n: u64,
    ) -> Result<Vec<Vec<u8>>, faaslet_state::StateError> {
        self.inner.appended(key, start, n)
    }
    fn appended_len(&self, key: &str) -> Result<u64, faaslet_state::StateError> {
        self.inner.appended_len(key)
    }
    fn clear_appended(&self, key: &str) -> Result<(), faaslet_state::StateError> {
        self.inner.clear_appended(key)
    }
    fn try_lock(
        &self,
        key: &str,
        mode: faaslet_state::LockMode,
        token: &str,
        lease: std::time::Duration,
    ) -> Result<bool, faaslet_state::StateError> {
        self.inner.try_lock(key, mode, token, lease)
    }
    fn unlock(
        &self,
        key: &str,
        mode: faaslet_state::LockMode,
        token: &str,
    ) -> Result<(), faaslet_state::StateError> {
        self.inner.unlock(key, mode, token)
    }
}

#[test]
fn a_partial_push_finds_pointer_writes_without_flags() {
    if !faaslet_sfi::writes::available() {
        eprintln!(
            "skipping: this kernel does not track writes (userfaultfd WP_ASYNC, PAGEMAP_SCAN)"
        );
        return;
    }
    // Writes byte 0 and byte 10 * 4096 + 5 through the pointer; pushes
    // partially if the input says so, else just returns.
    let body = r#"
      (func (export "main") (result i32) (local $p i32)
        (local.set $p (call $ptr (i32.const 0) (i32.const 65536)))
        (i32.store8 (local.get $p) (i32.const 88))
        (i32.store8 offset=40965 (local.get $p) (i32.const 89))
        (if (call $in (i32.const 100) (i32.const 1)) (then (call $push_partial (i32.const 0))))
        (i32.const 0))
    "#;
    for (bounds, engine) in engines() {
        let global = Arc::new(Recording::default());
        let local = Arc::new(LocalStateStore::with_global(
            global.clone(),
            faaslet_state::StateLimits::default(),
        ));
        let state: Arc<dyn StateStore> = local.clone();
        let v = state.value("default", "shared").unwrap();
        v.set(&vec![b'.'; 65536]).unwrap();
        state.push(&v, None).unwrap();
        let m = module(&engine, body);
        let mut f = Faaslet::new(&engine, &m, config(&state)).unwrap();
        f.call(b"p").unwrap();
        // Exactly the two written pages were sent, without a flag call.
        assert_eq!(
            *global.runs.lock().unwrap(),
            vec![0..4096, 40960..45056],
            "{bounds}"
        );
        assert!(v.dirty_ranges().is_empty(), "{bounds}");
        global.runs.lock().unwrap().clear();
        // A call that writes and does not push leaves the pages dirty in
        // the value when it ends, for a later partial push.
        f.call(b"").unwrap();
        assert_eq!(v.dirty_ranges(), vec![0..4096, 40960..45056], "{bounds}");
        state.push(&v, Some(&v.dirty_ranges())).unwrap();
        assert_eq!(
            *global.runs.lock().unwrap(),
            vec![0..4096, 40960..45056],
            "{bounds}"
        );
        let got = global
            .get_range("faaslet:v:default/shared", 0..65536)
            .unwrap();
        assert_eq!((got[0], got[40965], got[1]), (b'X', b'Y', b'.'), "{bounds}");
    }
}

#[test]
fn writes_through_a_replaced_mapping_are_not_lost() {
    if !faaslet_sfi::writes::available() {
        eprintln!("skipping: this kernel does not track writes");
        return;
    }
    // Maps 4 KiB and writes byte 0; maps the value again, longer (a new
    // address), writes byte 40965 there; pushes partially.
    let body = r#"
      (func (export "main") (result i32) (local $p i32) (local $q i32)
        (local.set $p (call $ptr (i32.const 0) (i32.const 4096)))
        (i32.store8 (local.get $p) (i32.const 88))
        (local.set $q (call $ptr (i32.const 0) (i32.const 65536)))
        (if (i32.eq (local.get $p) (local.get $q)) (then unreachable))
        (i32.store8 offset=40965 (local.get $q) (i32.const 89))
        (call $push_partial (i32.const 0))
        (i32.const 0))
    "#;
    for (bounds, engine) in engines() {
        let global = Arc::new(Recording::default());
        let state: Arc<dyn StateStore> = Arc::new(LocalStateStore::with_global(
            global.clone(),
            faaslet_state::StateLimits::default(),
        ));
        let m = module(&engine, body);
        Faaslet::new(&engine, &m, config(&state))
            .unwrap()
            .call(b"")
            .unwrap();
        assert_eq!(
            *global.runs.lock().unwrap(),
            vec![0..4096, 40960..45056],
            "{bounds}"
        );
    }
}

/// A memory with state mapped into it is written by other threads: the
/// engine hands out no Rust slice of it (that would be unsound), but raw
/// copies see the other writers at once, and host calls that take guest
/// pointers into mapped pages (output, state writes from a mapped pointer
/// back into the same value) work on copies.
#[test]
fn mapped_memories_give_no_slices_and_host_calls_copy() {
    use faaslet::{Caller, Linker, Store, Trap};
    use faaslet_state::StateValue;
    for (bounds, engine) in engines() {
        let state: Arc<dyn StateStore> = Arc::new(LocalStateStore::new());
        let v = state.value("default", "k").unwrap();
        v.ensure_len(4096).unwrap();
        let m = Module::new(
            &engine,
            r#"(module (import "h" "map" (func $map (result i32)))
                 (memory (export "memory") 1)
                 (func (export "run") (result i32) (call $map)))"#,
        )
        .unwrap();
        let mut linker = Linker::<Arc<StateValue>>::new(&engine);
        linker
            .func_wrap("h", "map", |mut c: Caller<'_, Arc<StateValue>>| {
                let mem = c.memory().ok_or_else(|| Trap::host("no memory"))?;
                let v = c.data().clone();
                let addr = v.with_segment(|fd, _| {
                    // SAFETY: the value's memfd is open under its lock and
                    // 4096 bytes long (ensure_len above); it never shrinks.
                    unsafe { c.map_shared(mem, std::os::fd::BorrowedFd::borrow_raw(fd), 4096) }
                });
                let addr = addr.map_err(|e| Trap::host(e.to_string()))?;
                // Inside the host call too, the memory is raw only.
                assert!(c.data_and_memory_mut().1.is_none());
                assert!(c.data_and_memory_raw().1.is_some());
                Ok(addr as i32)
            })
            .unwrap();
        let mut store = Store::new(&engine, v.clone());
        let inst = linker.instantiate(&mut store, &m).unwrap();
        let mem = inst.get_memory(&mut store, "memory").unwrap();
        assert!(mem.data(&store).is_some(), "{bounds}: private until mapped");
        let run = inst
            .get_typed_func::<(), i32, _>(&mut store, "run")
            .unwrap();
        let addr = run.call(&mut store, ()).unwrap() as usize;
        assert_eq!(addr, 65536, "{bounds}: mapped over the grown page");
        assert!(mem.data(&store).is_none(), "{bounds}");
        assert!(mem.data_mut(&mut store).is_none(), "{bounds}");
        // Written through another mapping (the host's), read by a copy.
        v.write_at(10, b"hi").unwrap();
        let mut b = [0u8; 2];
        mem.read(&store, addr + 10, &mut b).unwrap();
        assert_eq!(&b, b"hi", "{bounds}");
        mem.write(&mut store, addr + 20, b"yo").unwrap();
        assert_eq!(v.copy_range(20..22).unwrap(), b"yo", "{bounds}");
    }

    // Host calls reading from and writing into mapped pages: the output is
    // taken from the mapping, and a write_state of the value from its own
    // mapped pointer (source and destination the same physical pages)
    // leaves it as it was.
    let write_import = r#"(import "env" "__faasm_write_state" (func $write (param i32 i32 i32)))"#;
    let body = r#"
      (func (export "main") (result i32) (local $p i32)
        (local.set $p (call $ptr (i32.const 0) (i32.const 8)))
        (i32.store (local.get $p) (i32.const 0x64636261))
        (call $write (i32.const 0) (local.get $p) (i32.const 8))
        (drop (call $read (i32.const 0) (i32.add (local.get $p) (i32.const 4)) (i32.const 4)))
        (call $out (local.get $p) (i32.const 8))
        (i32.const 0))
    "#;
    for (bounds, engine) in engines() {
        let state: Arc<dyn StateStore> = Arc::new(LocalStateStore::new());
        // Imports come before the memory that IMPORTS defines.
        let m = Module::new(&engine, format!("(module {write_import} {IMPORTS} {body})")).unwrap();
        let out = Faaslet::new(&engine, &m, config(&state))
            .unwrap()
            .call(b"")
            .unwrap()
            .output;
        // `read_state` copied bytes 0..4 of the value over bytes 4..8 of
        // the same pages.
        assert_eq!(out, b"abcdabcd", "{bounds}");
        let v = state.value("default", "shared").unwrap();
        assert_eq!(v.copy_range(0..8).unwrap(), b"abcdabcd", "{bounds}");
    }
}

/// A partial push collects what *another* Faaslet, still running, wrote
/// through its own mapping of the value: A writes page 2 and spins (no host
/// call) until B has pushed; B waits to see A's byte, pushes partially and
/// releases A. The push must send A's page, and nothing else.
#[test]
fn a_partial_push_collects_writes_of_running_faaslets() {
    if !faaslet_sfi::writes::available() {
        eprintln!("skipping: this kernel does not track writes");
        return;
    }
    let body = r#"
      (func (export "main") (result i32) (local $p i32) (local $n i32)
        (drop (call $in (i32.const 100) (i32.const 1)))
        (local.set $p (call $ptr (i32.const 0) (i32.const 16384)))
        (if (i32.eq (i32.load8_u (i32.const 100)) (i32.const 97))
          (then
            ;; A: write page 2, then wait for B's release byte.
            (i32.store8 offset=8192 (local.get $p) (i32.const 65))
            (block $done (loop $spin
              (br_if $done (i32.load8_u (local.get $p)))
              (local.set $n (i32.add (local.get $n) (i32.const 1)))
              (br_if $spin (i32.lt_u (local.get $n) (i32.const 2000000000)))))
            (return (i32.const 0))))
        ;; B: wait for A's write, push, release A.
        (block $seen (loop $wait
          (br_if $seen (i32.load8_u offset=8192 (local.get $p)))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (br_if $wait (i32.lt_u (local.get $n) (i32.const 2000000000)))))
        (call $push_partial (i32.const 0))
        (i32.store8 (local.get $p) (i32.const 1))
        (i32.const 0))
    "#;
    for (bounds, engine) in engines() {
        let global = Arc::new(Recording::default());
        let state: Arc<dyn StateStore> = Arc::new(LocalStateStore::with_global(
            global.clone(),
            faaslet_state::StateLimits::default(),
        ));
        let m = module(&engine, body);
        let threads: Vec<_> = [b"a", b"b"]
            .into_iter()
            .map(|role| {
                let mut f = Faaslet::new(&engine, &m, config(&state)).unwrap();
                std::thread::spawn(move || f.call(role).unwrap().return_code)
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 0, "{bounds}");
        }
        assert_eq!(
            *global.runs.lock().unwrap(),
            vec![8192..12288],
            "{bounds}: B's push sends the page A wrote while running"
        );
        let v = state.value("default", "shared").unwrap();
        assert_eq!(v.copy_range(8192..8193).unwrap(), b"A", "{bounds}");
    }
}

/// Pages grown for a state mapping count against the store's memory limit
/// (found by the `hostcalls` fuzz target): a value larger than what is
/// left is refused with an error naming the limit, and the store stays
/// within it.
#[test]
fn state_mappings_count_against_the_memory_limit() {
    let body = r#"
      (func (export "main") (result i32)
        (drop (call $ptr (i32.const 0) (i32.const 2097152)))
        (i32.const 0))
    "#;
    for (bounds, engine) in engines() {
        let m = module(&engine, body);
        let state: Arc<dyn StateStore> = Arc::new(LocalStateStore::new());
        let config = FaasletConfig {
            memory_limit: Some(1 << 20),
            ..config(&state)
        };
        let err = Faaslet::new(&engine, &m, config)
            .unwrap()
            .call(b"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("memory_bytes"), "{bounds}: {err}");
    }
}
