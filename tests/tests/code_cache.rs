//! Compiled code kept as an artefact (`Module::from_binary_with_artifact`,
//! `Module::from_artifact`): loaded code behaves exactly as compiled code
//! (calls between functions, indirect calls, memory, traps with their
//! location, interruption, in both bounds modes), and an artefact that is
//! damaged, truncated, from another wasm or from another configuration is
//! refused with a typed error.

use faaslet::{ArtifactError, Bounds, Config, Engine, Instance, Module, Store, TrapKind};

/// Exercises what relocation and the trap tables must get right.
const WAT: &str = r#"(module
  (type $ii (func (param i32) (result i32)))
  (memory (export "memory") 1)
  (table 3 funcref)
  (elem (i32.const 0) $double $inc $fact)
  (global $g (mut i32) (i32.const 5))
  (data (i32.const 16) "cached")
  (func $double (type $ii) (i32.mul (local.get 0) (i32.const 2)))
  (func $inc (type $ii) (i32.add (local.get 0) (i32.const 1)))
  (func $fact (type $ii)
    (if (result i32) (i32.le_s (local.get 0) (i32.const 1))
      (then (i32.const 1))
      (else (i32.mul (local.get 0) (call $fact (i32.sub (local.get 0) (i32.const 1)))))))
  (func (export "direct") (param i32) (result i32)
    (call $inc (call $double (local.get 0))))
  (func (export "indirect") (param i32 i32) (result i32)
    (call_indirect (type $ii) (local.get 0) (local.get 1)))
  (func (export "fact") (param i32) (result i32) (call $fact (local.get 0)))
  (func (export "load") (param i32) (result i32) (i32.load8_u offset=16 (local.get 0)))
  (func (export "bump") (result i32)
    (global.set $g (i32.add (global.get $g) (i32.const 1))) (global.get $g))
  (func (export "ceil") (param f64) (result f64) (f64.ceil (local.get 0)))
  (func $deep (param i32) (result i32) (i32.div_u (i32.const 1) (local.get 0)))
  (func (export "div") (param i32) (result i32) (call $deep (local.get 0)))
  (func (export "spin") (loop $l (br $l)))
  (func (export "recurse") (param i32) (result i32)
    (i32.add (call 12 (i32.add (local.get 0) (i32.const 1))) (i32.const 1))))"#;

fn engines() -> Vec<(&'static str, Engine)> {
    vec![
        ("guard pages", Engine::default()),
        (
            "explicit",
            Engine::new(&Config {
                bounds: Bounds::Explicit,
                ..Default::default()
            })
            .unwrap(),
        ),
    ]
}

fn wasm() -> Vec<u8> {
    faaslet::wat_to_wasm(WAT).unwrap()
}

/// Runs every export of `module` and checks the answers.
fn check_behaviour(what: &str, engine: &Engine, module: &Module) {
    let mut store = Store::new(engine, ());
    let i = Instance::new(&mut store, module, &[]).unwrap();
    let direct = i
        .get_typed_func::<i32, i32, _>(&mut store, "direct")
        .unwrap();
    assert_eq!(direct.call(&mut store, 20).unwrap(), 41, "{what}");
    let indirect = i
        .get_typed_func::<(i32, i32), i32, _>(&mut store, "indirect")
        .unwrap();
    assert_eq!(indirect.call(&mut store, (7, 0)).unwrap(), 14, "{what}");
    assert_eq!(indirect.call(&mut store, (7, 1)).unwrap(), 8, "{what}");
    assert_eq!(indirect.call(&mut store, (5, 2)).unwrap(), 120, "{what}");
    let t = indirect.call(&mut store, (5, 3)).unwrap_err();
    assert_eq!(t.kind, TrapKind::UndefinedElement, "{what}");
    let fact = i.get_typed_func::<i32, i32, _>(&mut store, "fact").unwrap();
    assert_eq!(fact.call(&mut store, 10).unwrap(), 3_628_800, "{what}");
    let load = i.get_typed_func::<i32, i32, _>(&mut store, "load").unwrap();
    assert_eq!(load.call(&mut store, 0).unwrap(), i32::from(b'c'), "{what}");
    let t = load.call(&mut store, 65_536).unwrap_err();
    assert_eq!(t.kind, TrapKind::MemoryOutOfBounds, "{what}");
    let bump = i.get_typed_func::<(), i32, _>(&mut store, "bump").unwrap();
    assert_eq!(bump.call(&mut store, ()).unwrap(), 6, "{what}");
    let ceil = i.get_typed_func::<f64, f64, _>(&mut store, "ceil").unwrap();
    assert_eq!(ceil.call(&mut store, 1.25).unwrap(), 2.0, "{what}");
    // A trap deep in a callee names the function and the instruction.
    let div = i.get_typed_func::<i32, i32, _>(&mut store, "div").unwrap();
    assert_eq!(div.call(&mut store, 1).unwrap(), 1, "{what}");
    let t = div.call(&mut store, 0).unwrap_err();
    assert_eq!(t.kind, TrapKind::IntegerDivisionByZero, "{what}");
    assert_eq!(t.func_index, Some(9), "{what}: {t}");
    assert!(t.wasm_offset.is_some(), "{what}: {t}");
    let recurse = i
        .get_typed_func::<i32, i32, _>(&mut store, "recurse")
        .unwrap();
    let t = recurse.call(&mut store, 0).unwrap_err();
    assert_eq!(t.kind, TrapKind::StackOverflow, "{what}");
    // Interruption: the epoch checks are in the loaded code too.
    let spin = i.get_typed_func::<(), (), _>(&mut store, "spin").unwrap();
    store.set_epoch_deadline(1);
    let ticker = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            for _ in 0..50 {
                std::thread::sleep(std::time::Duration::from_millis(10));
                engine.increment_epoch();
            }
        })
    };
    let t = spin.call(&mut store, ()).unwrap_err();
    assert_eq!(t.kind, TrapKind::Interrupted, "{what}");
    ticker.join().unwrap();
}

#[test]
fn loaded_code_behaves_as_compiled_code() {
    let wasm = wasm();
    for (what, engine) in engines() {
        let (compiled, artifact) = Module::from_binary_with_artifact(&engine, &wasm).unwrap();
        let artifact = artifact.unwrap();
        check_behaviour(&format!("{what}, compiled"), &engine, &compiled);
        drop(compiled);
        let loaded = Module::from_artifact(&engine, &wasm, &artifact).unwrap();
        check_behaviour(&format!("{what}, loaded"), &engine, &loaded);
        // The same artefact loads again, beside the first load.
        let again = Module::from_artifact(&engine, &wasm, &artifact).unwrap();
        check_behaviour(&format!("{what}, loaded twice"), &engine, &again);
        assert_eq!(loaded.fingerprint(), faaslet::checksum(&wasm));
        // Compiling again gives the same artefact: the format records
        // only what the code is, nothing of where it was placed.
        let (_, second) = Module::from_binary_with_artifact(&engine, &wasm).unwrap();
        assert!(second.unwrap() == artifact, "{what}: artefacts differ");
    }
}

#[test]
fn foreign_artefacts_are_refused() {
    let wasm = wasm();
    let engine = Engine::default();
    let (_, artifact) = Module::from_binary_with_artifact(&engine, &wasm).unwrap();
    let artifact = artifact.unwrap();
    // Every setting that changes the code changes the key. Guard-page code
    // in an explicit-bounds engine would be an escape.
    let others = [
        Config {
            bounds: Bounds::Explicit,
            ..Default::default()
        },
        Config {
            bounds: Bounds::GuardPages {
                guard_size: 64 << 10,
            },
            ..Default::default()
        },
        Config {
            epoch_interruption: false,
            ..Default::default()
        },
        Config {
            optimize: false,
            ..Default::default()
        },
        Config {
            wasm_multi_memory: true,
            ..Default::default()
        },
        // Unguarded code (Spectre v1) must never load into a guarded engine.
        Config {
            spectre_guard: false,
            ..Default::default()
        },
    ];
    for config in &others {
        let other = Engine::new(config).unwrap();
        assert_ne!(other.artifact_key(&wasm), engine.artifact_key(&wasm));
        match Module::from_artifact(&other, &wasm, &artifact) {
            Err(ArtifactError::Foreign { found, expected }) => {
                assert_eq!(found, engine.artifact_key(&wasm));
                assert_eq!(expected, other.artifact_key(&wasm));
            }
            Err(e) => panic!("{config:?}: wrong error {e}"),
            Ok(_) => panic!("{config:?}: loaded code compiled for another configuration"),
        }
    }
    // Settings that do not reach the compiler keep the key.
    let roomy = Engine::new(&Config {
        max_wasm_stack: 2 << 20,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(roomy.artifact_key(&wasm), engine.artifact_key(&wasm));
    assert!(Module::from_artifact(&roomy, &wasm, &artifact).is_ok());
    // Another wasm (one byte of a data segment differs).
    let mut other_wasm = wasm.clone();
    let at = other_wasm.windows(6).position(|w| w == b"cached").unwrap();
    other_wasm[at] = b'C';
    assert!(matches!(
        Module::from_artifact(&engine, &other_wasm, &artifact),
        Err(ArtifactError::Foreign { .. })
    ));
}

/// Header layout (see faaslet_jit::artifact): magic 8, format 4, key 32,
/// payload length 8, checksum 32.
const HEADER: usize = 84;

#[test]
fn damaged_artefacts_are_typed_errors() {
    let wasm = wasm();
    let engine = Engine::default();
    let (_, artifact) = Module::from_binary_with_artifact(&engine, &wasm).unwrap();
    let artifact = artifact.unwrap();
    assert!(artifact.len() > HEADER + 100);
    let load = |bytes: &[u8]| Module::from_artifact(&engine, &wasm, bytes).map(|_| ());

    assert!(matches!(load(b""), Err(ArtifactError::BadMagic)));
    assert!(matches!(
        load(b"\0asm\x01\0\0\0"),
        Err(ArtifactError::BadMagic)
    ));
    let mut v = artifact.clone();
    v[8] = 99;
    assert!(matches!(
        load(&v),
        Err(ArtifactError::Version {
            found: 99,
            expected: 2
        })
    ));
    // Every truncation is refused, none panics.
    for len in (0..artifact.len()).step_by(7).chain([artifact.len() - 1]) {
        match load(&artifact[..len]) {
            Err(ArtifactError::BadMagic | ArtifactError::Truncated(_)) => {}
            other => panic!("truncated to {len}: {other:?}"),
        }
    }
    // Bytes after the payload.
    let mut long = artifact.clone();
    long.push(0);
    assert!(matches!(load(&long), Err(ArtifactError::Malformed(_))));
    // Any flipped bit in the payload breaks the checksum.
    for at in (HEADER..artifact.len()).step_by(97) {
        let mut v = artifact.clone();
        v[at] ^= 0x10;
        assert!(
            matches!(load(&v), Err(ArtifactError::Checksum)),
            "flip at {at}"
        );
    }
    // A flipped key bit makes it foreign.
    let mut v = artifact.clone();
    v[20] ^= 1;
    assert!(matches!(load(&v), Err(ArtifactError::Foreign { .. })));

    // Damage behind a valid checksum (as a buggy writer would make) is
    // caught by the decoder: a wrong function count, an oversized length.
    let reseal = |mut v: Vec<u8>| {
        use sha2::Digest;
        let sum = sha2::Sha256::digest(&v[HEADER..]);
        v[52..84].copy_from_slice(&sum);
        v
    };
    // The payload starts with the canonical type ids it was compiled with
    // (count, then one u32 each); the functions follow at `f`.
    let types = u32::from_le_bytes(artifact[HEADER..HEADER + 4].try_into().unwrap()) as usize;
    assert!(types > 0);
    let f = HEADER + 4 + 4 * types;
    let mut v = artifact.clone();
    v[HEADER] = v[HEADER].wrapping_add(1);
    assert!(
        matches!(
            load(&reseal(v)),
            Err(ArtifactError::Malformed(_) | ArtifactError::Truncated(_))
        ),
        "type count"
    );
    let mut v = artifact.clone();
    v[HEADER + 4] ^= 0x40;
    assert!(
        matches!(
            load(&reseal(v)),
            Err(ArtifactError::TypeIds { index: 0, .. })
        ),
        "type id"
    );
    let mut v = artifact.clone();
    v[f] = v[f].wrapping_add(1);
    assert!(
        matches!(
            load(&reseal(v)),
            Err(ArtifactError::Malformed(_) | ArtifactError::Truncated(_))
        ),
        "function count"
    );
    // The first function's code length (after count 4, index 4, align 1).
    let mut v = artifact.clone();
    v[f + 9..f + 13].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(load(&reseal(v)), Err(ArtifactError::Truncated(_))));
    // Its function index.
    let mut v = artifact.clone();
    v[f + 4] ^= 0x40;
    assert!(matches!(load(&reseal(v)), Err(ArtifactError::Malformed(_))));
    // Its alignment.
    let mut v = artifact.clone();
    v[f + 8] = 200;
    assert!(matches!(load(&reseal(v)), Err(ArtifactError::Malformed(_))));
    // The wasm beside the artefact must still parse.
    assert!(matches!(
        Module::from_artifact(&engine, b"\0asm\x01\0\0\0\x01", &artifact),
        Err(ArtifactError::Foreign { .. })
    ));
}
