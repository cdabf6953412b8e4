//! Proto-Faaslet behaviour through the engine: restore, reset between
//! calls (no leaks), files across processes, and refused files.

use faaslet::{Engine, Module, Store};
use faaslet_snapshot::FormatError;
use faaslet_snapshot::{Snapshot, SnapshotError};

/// A module whose `_initialize` sets memory, a global and a table entry,
/// and whose `write_secret` overwrites all three (and grows memory).
const MODULE: &str = r#"(module
  (memory (export "memory") 1 100)
  (global $g (mut i32) (i32.const 0))
  (table $t 2 funcref)
  (data $d "passive")
  (func $a (result i32) (i32.const 11))
  (func $b (result i32) (i32.const 22))
  (elem declare func $a $b)
  (func (export "_initialize")
    (i32.store (i32.const 1024) (i32.const 7))
    (global.set $g (i32.const 5))
    (table.set $t (i32.const 0) (ref.func $a)))
  (func (export "write_secret") (param $s i32)
    (i32.store (i32.const 1024) (local.get $s))
    (i32.store (i32.const 60000) (local.get $s))
    (global.set $g (local.get $s))
    (table.set $t (i32.const 0) (ref.func $b))
    (table.set $t (i32.const 1) (ref.func $b))
    (drop (memory.grow (i32.const 2)))
    (i32.store (i32.const 131072) (local.get $s))
    (data.drop $d))
  (func (export "read_mem") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "read_global") (result i32) (global.get $g))
  (func (export "pages") (result i32) (memory.size))
  (func (export "call_slot") (param i32) (result i32)
    (call_indirect (result i32) (local.get 0)))
  (func (export "init_data") (memory.init $d (i32.const 0) (i32.const 0) (i32.const 7)))
)"#;

fn setup() -> (Engine, Module, Snapshot) {
    let engine = Engine::default();
    let module = Module::new(&engine, MODULE).unwrap();
    let mut store = Store::new(&engine, ());
    let snap = Snapshot::create(&mut store, &module, &[], None).unwrap();
    (engine, module, snap)
}

fn call(
    store: &mut Store<()>,
    inst: faaslet::Instance,
    name: &str,
    arg: Option<i32>,
) -> Result<Option<i32>, faaslet::Error> {
    let f = inst.get_func(&mut *store, name).unwrap();
    let ty = f.ty(&*store);
    let params: Vec<_> = arg.into_iter().map(faaslet::Val::I32).collect();
    let mut results = vec![faaslet::Val::I32(0); ty.results.len()];
    f.call(&mut *store, &params, &mut results)?;
    Ok(results.first().and_then(|v| v.i32()))
}

/// The state right after `_initialize`, as seen by the guest.
fn assert_initial(store: &mut Store<()>, inst: faaslet::Instance) {
    assert_eq!(call(store, inst, "read_mem", Some(1024)).unwrap(), Some(7));
    assert_eq!(call(store, inst, "read_mem", Some(60000)).unwrap(), Some(0));
    assert_eq!(call(store, inst, "read_global", None).unwrap(), Some(5));
    assert_eq!(call(store, inst, "pages", None).unwrap(), Some(1));
    assert_eq!(call(store, inst, "call_slot", Some(0)).unwrap(), Some(11));
    assert!(
        call(store, inst, "call_slot", Some(1)).is_err(),
        "slot 1 is null"
    );
    call(store, inst, "init_data", None).expect("passive segment still there");
}

#[test]
fn restore_resumes_after_initialisation() {
    let (engine, _module, snap) = setup();
    let mut store = Store::new(&engine, ());
    let inst = snap.restore(&mut store, &[]).unwrap();
    assert_initial(&mut store, inst);
}

#[test]
fn secret_from_call_one_is_gone_in_call_two() {
    let (engine, _module, snap) = setup();
    let mut store = Store::new(&engine, ());
    let inst = snap.restore(&mut store, &[]).unwrap();
    let secret = 0x5ec2e7;
    // Call 1 writes the secret to memory (old and newly grown pages), a
    // global and the table, and drops a segment.
    call(&mut store, inst, "write_secret", Some(secret)).unwrap();
    assert_eq!(
        call(&mut store, inst, "read_mem", Some(1024)).unwrap(),
        Some(secret)
    );
    assert_eq!(
        call(&mut store, inst, "read_mem", Some(131072)).unwrap(),
        Some(secret)
    );
    assert_eq!(
        call(&mut store, inst, "read_global", None).unwrap(),
        Some(secret)
    );
    snap.reset(&mut store, inst).unwrap();
    // Call 2 sees only the snapshot: no secret anywhere, grown pages gone.
    assert_initial(&mut store, inst);
    assert!(
        call(&mut store, inst, "read_mem", Some(131072)).is_err(),
        "grown page is gone"
    );
    // And again, many times, still exact.
    for i in 0..20 {
        call(&mut store, inst, "write_secret", Some(secret + i)).unwrap();
        snap.reset(&mut store, inst).unwrap();
    }
    assert_initial(&mut store, inst);
}

#[test]
fn reset_of_the_captured_instance_itself() {
    let engine = Engine::default();
    let module = Module::new(&engine, MODULE).unwrap();
    let mut store = Store::new(&engine, ());
    let inst = faaslet::Instance::new(&mut store, &module, &[]).unwrap();
    call(&mut store, inst, "_initialize", None).unwrap();
    let snap = Snapshot::capture(&mut store, inst).unwrap();
    call(&mut store, inst, "write_secret", Some(99)).unwrap();
    snap.reset(&mut store, inst).unwrap();
    assert_initial(&mut store, inst);
}

#[test]
fn restores_are_independent() {
    let (engine, _module, snap) = setup();
    let mut s1 = Store::new(&engine, ());
    let mut s2 = Store::new(&engine, ());
    let a = snap.restore(&mut s1, &[]).unwrap();
    let b = snap.restore(&mut s2, &[]).unwrap();
    call(&mut s1, a, "write_secret", Some(1234)).unwrap();
    assert_initial(&mut s2, b);
}

#[test]
fn corrupt_truncated_and_foreign_files_are_refused() {
    let (engine, module, snap) = setup();
    let bytes = snap.to_bytes().unwrap();
    Snapshot::from_bytes(&module, &bytes).unwrap();

    let mut corrupt = bytes.clone();
    let n = corrupt.len();
    corrupt[n - 3] ^= 0xff;
    match Snapshot::from_bytes(&module, &corrupt) {
        Err(SnapshotError::Format(FormatError::ChecksumMismatch {
            part: "payload", ..
        })) => {}
        other => panic!("corrupt file: {other:?}"),
    }
    let mut bad_header = bytes.clone();
    bad_header[30] ^= 1;
    assert!(matches!(
        Snapshot::from_bytes(&module, &bad_header),
        Err(SnapshotError::Format(FormatError::ChecksumMismatch {
            part: "header",
            ..
        }))
    ));
    assert!(matches!(
        Snapshot::from_bytes(&module, &bytes[..bytes.len() - 10]),
        Err(SnapshotError::Format(FormatError::Truncated { .. }))
    ));
    assert!(matches!(
        Snapshot::from_bytes(&module, &bytes[..12]),
        Err(SnapshotError::Format(FormatError::Truncated { .. }))
    ));
    assert!(matches!(
        Snapshot::from_bytes(
            &module,
            b"\x7fELF this is not a snapshot at all, no no no no no"
        ),
        Err(SnapshotError::Format(FormatError::BadMagic))
    ));
    let other = Module::new(&engine, "(module (memory 1))").unwrap();
    let err = Snapshot::from_bytes(&other, &bytes).unwrap_err();
    assert!(matches!(
        err,
        SnapshotError::Format(FormatError::ModuleMismatch { .. })
    ));
    assert!(err.to_string().contains("another module"), "{err}");
}

const CHILD_ENV: &str = "FAASLET_SNAPSHOT_CHILD_FILE";

/// Run by `snapshot_restores_in_another_process` in a child process.
#[test]
fn child_restore_from_file() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return; // only meaningful when spawned by the test below
    };
    let engine = Engine::default();
    let module = Module::new(&engine, MODULE).unwrap();
    let snap = Snapshot::load(&module, &path).unwrap();
    let mut store = Store::new(&engine, ());
    let inst = snap.restore(&mut store, &[]).unwrap();
    assert_initial(&mut store, inst);
    println!("CHILD-RESTORED-OK");
}

#[test]
fn snapshot_restores_in_another_process() {
    let (_engine, _module, snap) = setup();
    let path = std::env::temp_dir().join(format!("faaslet-snap-{}.snap", std::process::id()));
    snap.save(&path).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_restore_from_file",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("CHILD-RESTORED-OK"),
        "child did not restore: {stdout}"
    );
}

#[test]
fn secret_is_gone_when_a_dropped_restore_is_restored_again() {
    // A dropped restored memory parks in a warm slot of the image (still
    // mapped, private pages dropped); the next restore reuses it. Nothing
    // written, grown or set by the last one may show, in either bounds mode.
    for bounds in [None, Some(faaslet::Bounds::Explicit)] {
        let mut config = faaslet::Config::default();
        if let Some(b) = bounds {
            config.bounds = b;
        }
        let engine = Engine::new(&config).unwrap();
        let module = Module::new(&engine, MODULE).unwrap();
        let mut store = Store::new(&engine, ());
        let snap = Snapshot::create(&mut store, &module, &[], None).unwrap();
        drop(store);
        let mut bases = Vec::new();
        for round in 0..4 {
            let mut store = Store::new(&engine, ());
            let inst = snap.restore(&mut store, &[]).unwrap();
            let memory = inst.get_memory(&mut store, "memory").unwrap();
            bases.push(memory.data_ptr(&store) as usize);
            assert_initial(&mut store, inst);
            assert!(
                call(&mut store, inst, "read_mem", Some(131072)).is_err(),
                "round {round}: a page grown last time is accessible"
            );
            call(&mut store, inst, "write_secret", Some(0x5ec2e7 + round)).unwrap();
            snap.reset(&mut store, inst).unwrap();
            assert_initial(&mut store, inst);
            call(&mut store, inst, "write_secret", Some(0x5ec2e7 + round)).unwrap();
            assert_eq!(call(&mut store, inst, "pages", None).unwrap(), Some(3));
        }
        // Guard pages: the warm slot was reused (the path under test was
        // taken). Explicit bounds: the image is copied into a fresh
        // unguarded mapping each time.
        if bounds.is_none() {
            assert!(bases[1..].contains(&bases[0]), "{bases:x?}");
        }
    }
}

/// WebAssembly GC: a Proto-Faaslet captures the store's GC heap. Its
/// `_initialize` builds a linked list of structs (each holding an i31,
/// a packed i8 and a funcref) and an array in globals, and puts the list
/// and an i31 in an `anyref` table; a restored
/// instance (in a new store, and from the snapshot's bytes in another
/// engine, where type ids are assigned anew) sees the same objects,
/// calls through the funcref the heap holds, and a reset undoes a
/// mutation and drops the objects allocated since.
#[test]
fn restored_instance_sees_its_gc_objects() {
    const GC_MODULE: &str = r#"(module
      (type $f (func (result i32)))
      (type $node (struct (field $v (mut i32)) (field $b i8) (field $fn (ref null $f))
                          (field $tag i31ref) (field $next (ref null $node))))
      (type $arr (array (mut i64)))
      (global $list (mut (ref null $node)) (ref.null $node))
      (global $nums (mut (ref null $arr)) (ref.null $arr))
      (table $t 2 anyref)
      (func $seven (type $f) (i32.const 7))
      (elem declare func $seven)
      (func (export "_initialize")
        (global.set $list
          (struct.new $node (i32.const 1) (i32.const -1) (ref.null $f) (ref.i31 (i32.const 10))
            (struct.new $node (i32.const 2) (i32.const 200) (ref.func $seven)
              (ref.i31 (i32.const -20)) (ref.null $node))))
        (global.set $nums (array.new_fixed $arr 3 (i64.const 5) (i64.const 6) (i64.const 7)))
        (table.set $t (i32.const 0) (global.get $list))
        (table.set $t (i32.const 1) (ref.i31 (i32.const 77))))
      (func (export "table_sum") (result i32)
        (i32.add
          (struct.get $node $v (ref.cast (ref $node) (table.get $t (i32.const 0))))
          (i31.get_s (ref.cast (ref i31) (table.get $t (i32.const 1))))))
      (func (export "sum") (result i32)
        (local $n (ref null $node)) (local $s i32)
        (local.set $n (global.get $list))
        (block $done
          (loop $l
            (br_if $done (ref.is_null (local.get $n)))
            (local.set $s (i32.add (local.get $s) (struct.get $node $v (local.get $n))))
            (local.set $n (struct.get $node $next (local.get $n)))
            (br $l)))
        (local.get $s))
      (func (export "second_b") (result i32)
        (struct.get_s $node $b (struct.get $node $next (global.get $list))))
      (func (export "second_tag") (result i32)
        (i31.get_s (struct.get $node $tag (struct.get $node $next (global.get $list)))))
      (func (export "call_second") (result i32)
        (call_ref $f (struct.get $node $fn (struct.get $node $next (global.get $list)))))
      (func (export "nums") (result i64)
        (i64.add (array.get $arr (global.get $nums) (i32.const 2))
                 (i64.extend_i32_u (array.len (global.get $nums)))))
      (func (export "mutate")
        (struct.set $node $v (global.get $list) (i32.const 100))
        (global.set $nums (array.new_default $arr (i32.const 1000))))
    )"#;
    let config = faaslet::Config {
        wasm_gc: true,
        ..faaslet::Config::default()
    };
    let engine = Engine::new(&config).unwrap();
    let module = Module::new(&engine, GC_MODULE).unwrap();
    let mut store = Store::new(&engine, ());
    let snap = Snapshot::create(&mut store, &module, &[], None).unwrap();
    let check = |store: &mut Store<()>, inst: faaslet::Instance| {
        let i32_of = |store: &mut Store<()>, name: &str| {
            inst.get_typed_func::<(), i32, _>(&mut *store, name)
                .unwrap()
                .call(&mut *store, ())
                .unwrap()
        };
        assert_eq!(i32_of(store, "sum"), 3);
        assert_eq!(
            i32_of(store, "second_b"),
            -56,
            "packed i8 200, sign-extended"
        );
        assert_eq!(i32_of(store, "second_tag"), -20);
        assert_eq!(i32_of(store, "call_second"), 7, "funcref held in the heap");
        assert_eq!(i32_of(store, "table_sum"), 78, "GC references in a table");
        let nums = inst
            .get_typed_func::<(), i64, _>(&mut *store, "nums")
            .unwrap();
        assert_eq!(nums.call(&mut *store, ()).unwrap(), 10);
    };

    // Restored in a new store of the same engine.
    let mut s2 = Store::new(&engine, ());
    let inst = snap.restore(&mut s2, &[]).unwrap();
    check(&mut s2, inst);
    let heap_bytes = s2.memory_bytes();
    assert!(
        heap_bytes > 0,
        "the restored heap counts against the limits"
    );

    // Mutated, then reset: the mutation and the new array are gone.
    let mutate = inst.get_typed_func::<(), (), _>(&mut s2, "mutate").unwrap();
    mutate.call(&mut s2, ()).unwrap();
    assert!(s2.memory_bytes() > heap_bytes + 8000);
    snap.reset(&mut s2, inst).unwrap();
    check(&mut s2, inst);
    assert_eq!(s2.memory_bytes(), heap_bytes);

    // Through the file format, in another engine (whose registered type
    // ids differ: another module with other types registers first).
    let bytes = snap.to_bytes().unwrap();
    let engine2 = Engine::new(&config).unwrap();
    let _other = Module::new(
        &engine2,
        "(module (type (struct (field i64) (field f32))) (type (array i8)))",
    )
    .unwrap();
    let module2 = Module::new(&engine2, GC_MODULE).unwrap();
    let snap2 = Snapshot::from_bytes(&module2, &bytes).unwrap();
    let mut s3 = Store::new(&engine2, ());
    let inst = snap2.restore(&mut s3, &[]).unwrap();
    check(&mut s3, inst);

    // A store whose heap already holds objects cannot take the image
    // (offsets are kept as they are).
    let mut s4 = Store::new(&engine, ());
    snap.restore(&mut s4, &[]).unwrap();
    assert!(snap.restore(&mut s4, &[]).is_err());
}

/// WebAssembly GC with the collector: a Proto-Faaslet whose init made
/// garbage among its live objects (so its heap has free blocks between
/// them when captured) restores in a new store and through a file, keeps
/// running and collecting there (its live objects intact), and resets.
#[test]
fn gc_snapshot_after_collections_restores_and_keeps_collecting() {
    const MODULE: &str = r#"(module
      (type $pair (struct (field $v i32) (field $next (ref null $pair))))
      (type $junk (array (mut i64)))
      (global $list (mut (ref null $pair)) (ref.null $pair))
      (func $churn (export "churn") (param $n i32)
        (local $x anyref)
        (loop $l
          (local.set $x (array.new $junk (i64.const 1) (i32.const 10)))
          (local.set $n (i32.sub (local.get $n) (i32.const 1)))
          (br_if $l (i32.gt_s (local.get $n) (i32.const 0)))))
      (func (export "_initialize")
        (local $i i32)
        ;; A list of 1000 nodes, with garbage allocated between them.
        (loop $l
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (global.set $list (struct.new $pair (local.get $i) (global.get $list)))
          (call $churn (i32.const 100))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 1000)))))
      (func (export "head") (result anyref) (global.get $list))
      (func (export "sum") (result i32)
        (local $n (ref null $pair)) (local $s i32)
        (local.set $n (global.get $list))
        (block $done
          (loop $l
            (br_if $done (ref.is_null (local.get $n)))
            (local.set $s (i32.add (local.get $s) (struct.get $pair $v (local.get $n))))
            (local.set $n (struct.get $pair $next (local.get $n)))
            (br $l)))
        (local.get $s)))"#;
    let config = faaslet::Config {
        wasm_gc: true,
        ..faaslet::Config::default()
    };
    let engine = Engine::new(&config).unwrap();
    let module = Module::new(&engine, MODULE).unwrap();
    let mut store = Store::new(&engine, ());
    let snap = Snapshot::create(&mut store, &module, &[], None).unwrap();
    let stats = store.gc_stats();
    assert!(stats.collections > 0, "{stats:?}");
    // The capture collected: about the list's 1000 nodes of 24 bytes live.
    assert!(stats.live_bytes < 64 << 10, "{stats:?}");
    let want = 1000 * 1001 / 2;
    let run = |store: &mut Store<()>, inst: faaslet::Instance| {
        let sum = inst
            .get_typed_func::<(), i32, _>(&mut *store, "sum")
            .unwrap();
        let churn = inst
            .get_typed_func::<i32, (), _>(&mut *store, "churn")
            .unwrap();
        assert_eq!(sum.call(&mut *store, ()).unwrap(), want);
        let before = store.gc_stats().collections;
        churn.call(&mut *store, 50_000).unwrap();
        assert!(store.gc_stats().collections > before);
        assert_eq!(sum.call(&mut *store, ()).unwrap(), want);
    };
    let mut s2 = Store::new(&engine, ());
    let inst = snap.restore(&mut s2, &[]).unwrap();
    run(&mut s2, inst);
    // A host handle from before a reset names the dropped heap: refused.
    let head = inst.get_func(&mut s2, "head").unwrap();
    let mut out = [faaslet::Val::AnyRef(None)];
    head.call(&mut s2, &[], &mut out).unwrap();
    let faaslet::Val::AnyRef(Some(h)) = out[0].clone() else {
        panic!("{:?}", out[0])
    };
    assert_eq!(h.kind(&s2), Some(faaslet::AnyKind::Struct));
    snap.reset(&mut s2, inst).unwrap();
    assert_eq!(h.kind(&s2), None);
    run(&mut s2, inst);

    let bytes = snap.to_bytes().unwrap();
    let snap2 = Snapshot::from_bytes(&module, &bytes).unwrap();
    let mut s3 = Store::new(&engine, ());
    let inst = snap2.restore(&mut s3, &[]).unwrap();
    run(&mut s3, inst);
    // A snapshot of the restored store after its collections.
    let inst_image = faaslet::InstanceImage::capture(&mut s3, inst).unwrap();
    let mut s4 = Store::new(&engine, ());
    let inst4 =
        faaslet::Instance::from_source(&mut s4, faaslet::Source::Image(&inst_image), &[]).unwrap();
    run(&mut s4, inst4);
}

/// Kilobytes of `range` resident in this process and, of those, private
/// copies made by writes (`Rss`, `Anonymous` of `/proc/self/smaps`: a
/// page of a private file mapping becomes anonymous when it is written;
/// `Private_Dirty` would also count the memfd's own pages, which are
/// always dirty), summed over the mappings that overlap it (a mapping
/// that extends past the range is counted whole, which only over-counts).
fn resident_kib(range: std::ops::Range<usize>) -> (u64, u64) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let (mut rss, mut dirty, mut inside) = (0, 0, false);
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = a < range.end && range.start < b;
                continue;
            }
        }
        let kib = || {
            words
                .clone()
                .next()
                .and_then(|w| w.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match first {
            "Rss:" if inside => rss += kib(),
            "Anonymous:" if inside => dirty += kib(),
            _ => {}
        }
    }
    (rss, dirty)
}

/// Issue 16's copy-on-write restore of a GC heap: a Proto-Faaslet whose
/// init built 2 million objects (a 64 MB heap) restores without touching
/// the heap's pages (its mapping has almost nothing resident after the
/// restore: nothing was copied or rewritten), reads every object back
/// (also through a file), keeps allocating and collecting, and writes
/// after a restore reach neither the image nor other restored stores.
#[test]
fn large_gc_heap_restores_copy_on_write() {
    for bounds in [faaslet::Config::default().bounds, faaslet::Bounds::Explicit] {
        cow_restore_in(bounds);
    }
}

fn cow_restore_in(bounds: faaslet::Bounds) {
    const N: u32 = 2_000_000;
    let module_text = format!(
        r#"(module
      (type $f (func (result i32)))
      (type $node (struct (field $v (mut i64)) (field $fn (ref null $f))))
      (type $nodes (array (mut (ref null $node))))
      (type $junk (array (mut i64)))
      (global $all (mut (ref null $nodes)) (ref.null $nodes))
      (func $seven (type $f) (i32.const 7))
      (func $eight (type $f) (i32.const 8))
      (elem declare func $seven $eight)
      (func (export "_initialize")
        (local $i i32)
        (global.set $all (array.new_default $nodes (i32.const {N})))
        (loop $l
          (array.set $nodes (global.get $all) (local.get $i)
            (struct.new $node (i64.extend_i32_u (local.get $i))
              (select (result (ref null $f)) (ref.func $seven) (ref.func $eight)
                (i32.and (local.get $i) (i32.const 1)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const {N})))))
      (func (export "sum") (result i64)
        (local $i i32) (local $s i64)
        (loop $l
          (local.set $s (i64.add (local.get $s)
            (struct.get $node $v (array.get $nodes (global.get $all) (local.get $i)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const {N}))))
        (local.get $s))
      (func (export "get") (param i32) (result i64)
        (struct.get $node $v (array.get $nodes (global.get $all) (local.get 0))))
      (func (export "set") (param i32 i64)
        (struct.set $node $v (array.get $nodes (global.get $all) (local.get 0)) (local.get 1)))
      (func (export "call_fn") (param i32) (result i32)
        (call_ref $f (struct.get $node $fn (array.get $nodes (global.get $all) (local.get 0)))))
      (func (export "replace") (param i32)
        (array.set $nodes (global.get $all) (local.get 0)
          (struct.new $node (i64.const -5) (ref.func $eight))))
      (func (export "churn") (param $n i32)
        (local $x anyref)
        (loop $l
          (local.set $x (array.new $junk (i64.const 1) (i32.const 100)))
          (local.set $n (i32.sub (local.get $n) (i32.const 1)))
          (br_if $l (i32.gt_s (local.get $n) (i32.const 0))))))"#
    );
    let config = faaslet::Config {
        wasm_gc: true,
        bounds,
        ..faaslet::Config::default()
    };
    let engine = Engine::new(&config).unwrap();
    let module = Module::new(&engine, &module_text).unwrap();
    let mut store = Store::new(&engine, ());
    let snap = Snapshot::create(&mut store, &module, &[], None).unwrap();
    let heap = store.gc_stats().heap_bytes;
    assert!(heap > 60 << 20, "a heap of {heap} bytes");
    let want: i64 = (0..i64::from(N)).sum();
    let get = |s: &mut Store<()>, inst: faaslet::Instance, i: i32| -> i64 {
        inst.get_typed_func::<i32, i64, _>(&mut *s, "get")
            .unwrap()
            .call(&mut *s, i)
            .unwrap()
    };
    let call_fn = |s: &mut Store<()>, inst: faaslet::Instance, i: i32| -> i32 {
        inst.get_typed_func::<i32, i32, _>(&mut *s, "call_fn")
            .unwrap()
            .call(&mut *s, i)
            .unwrap()
    };
    let sum = |s: &mut Store<()>, inst: faaslet::Instance| -> i64 {
        inst.get_typed_func::<(), i64, _>(&mut *s, "sum")
            .unwrap()
            .call(&mut *s, ())
            .unwrap()
    };

    // Restored: the heap is mapped, not copied.
    let mut s2 = Store::new(&engine, ());
    let inst2 = snap.restore(&mut s2, &[]).unwrap();
    let range = s2.gc_heap_address_range();
    assert_eq!(range.len() as u64, heap);
    let (rss, dirty) = resident_kib(range.clone());
    assert!(
        rss < 256 && dirty < 256,
        "restoring touched the heap: {rss} KiB resident, {dirty} KiB dirty of {} KiB",
        heap >> 10
    );
    // Objects read back (by value, and funcrefs through the heap-local
    // function table).
    assert_eq!(get(&mut s2, inst2, 12345), 12345);
    assert_eq!(call_fn(&mut s2, inst2, 4), 8);
    assert_eq!(call_fn(&mut s2, inst2, 5), 7);
    // Reading writes nothing: after a walk over every object the pages
    // are resident (the image's) but none was copied.
    assert_eq!(sum(&mut s2, inst2), want);
    let (rss, dirty) = resident_kib(range.clone());
    assert!(rss > (heap >> 10) / 2, "{rss} KiB resident after reading");
    assert!(dirty < 1024, "reading dirtied {dirty} KiB");

    // Writes in one restored store: private pages of that store only.
    let set = inst2
        .get_typed_func::<(i32, i64), (), _>(&mut s2, "set")
        .unwrap();
    set.call(&mut s2, (12345, -1)).unwrap();
    inst2
        .get_typed_func::<i32, (), _>(&mut s2, "replace")
        .unwrap()
        .call(&mut s2, 4)
        .unwrap();
    assert_eq!(get(&mut s2, inst2, 12345), -1);
    assert_eq!(get(&mut s2, inst2, 4), -5);
    let (_, dirty) = resident_kib(range.clone());
    assert!(dirty < 2048, "two writes dirtied {dirty} KiB");
    let mut s3 = Store::new(&engine, ());
    let inst3 = snap.restore(&mut s3, &[]).unwrap();
    assert_ne!(s3.gc_heap_address_range(), range);
    assert_eq!(
        get(&mut s3, inst3, 12345),
        12345,
        "another store saw a write"
    );
    assert_eq!(get(&mut s3, inst3, 4), 4);
    assert_eq!(sum(&mut s3, inst3), want);
    // The writing store still sees its own writes.
    assert_eq!(get(&mut s2, inst2, 12345), -1);

    // The restored store keeps allocating and collecting (the free runs
    // and start bitmap came with the image); its objects survive.
    let churn = inst2
        .get_typed_func::<i32, (), _>(&mut s2, "churn")
        .unwrap();
    let before = s2.gc_stats().collections;
    churn.call(&mut s2, 200_000).unwrap();
    assert!(s2.gc_stats().collections > before, "{:?}", s2.gc_stats());
    assert_eq!(get(&mut s2, inst2, 12345), -1);
    assert_eq!(get(&mut s2, inst2, 4), -5);
    assert_eq!(call_fn(&mut s2, inst2, 4), 8);
    assert_eq!(sum(&mut s2, inst2), want - 12345 - 1 - 4 - 5);

    // A reset maps the image again: the writes are gone.
    snap.reset(&mut s2, inst2).unwrap();
    let (rss, _) = resident_kib(s2.gc_heap_address_range());
    assert!(rss < 256, "a reset touched {rss} KiB");
    assert_eq!(get(&mut s2, inst2, 12345), 12345);
    assert_eq!(sum(&mut s2, inst2), want);

    // Through a file: loaded once (checked, indexed), restored by mapping.
    let bytes = snap.to_bytes().unwrap();
    let snap2 = Snapshot::from_bytes(&module, &bytes).unwrap();
    let mut s4 = Store::new(&engine, ());
    let inst4 = snap2.restore(&mut s4, &[]).unwrap();
    let (rss, _) = resident_kib(s4.gc_heap_address_range());
    assert!(rss < 256, "restoring from a file touched {rss} KiB");
    assert_eq!(get(&mut s4, inst4, 1_999_999), 1_999_999);
    assert_eq!(call_fn(&mut s4, inst4, 1), 7);
    assert_eq!(sum(&mut s4, inst4), want);
}
