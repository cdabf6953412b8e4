//! A smoke run of wasm-smith modules with WebAssembly GC (and every other
//! 3.0 feature faaslet accepts) through compile, instantiate and a call of
//! every export, in both bounds modes: a typed error, a trap or a result,
//! never a panic or a crash. Not a cargo-fuzz target (the `compile` and
//! `sandbox` targets do not enable GC yet, see `docs/gc.md`); run it as
//! `cargo run --manifest-path fuzz/Cargo.toml --example gc_smoke -- N [SEED]`.

use arbitrary::Unstructured;
use faaslet::{Extern, Instance, Module, Store, Val};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let mut config = faaslet_fuzz::smith_config(None);
    config.gc_enabled = true;
    config.reference_types_enabled = true;
    config.exceptions_enabled = true;
    config.max_type_size = 100;
    config.max_types = 30;
    let mut seed: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let (mut compiled, mut ran, mut traps, mut with_gc_types) = (0u64, 0u64, 0u64, 0u64);
    for i in 0..n {
        let mut bytes = vec![0u8; 4096];
        for b in bytes.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        let mut u = Unstructured::new(&bytes);
        let Ok(m) = wasm_smith::Module::new(config.clone(), &mut u) else {
            continue;
        };
        let wasm = m.to_bytes();
        for engine in faaslet_fuzz::engines() {
            let module = match Module::new(engine, &wasm) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("module {i}: {e}");
                    continue;
                }
            };
            compiled += 1;
            if module
                .info()
                .type_defs
                .iter()
                .any(|d| !matches!(d.kind, faaslet::CompositeKind::Func))
            {
                with_gc_types += 1;
            }
            let mut store = Store::new(engine, ());
            store.set_epoch_deadline(faaslet_fuzz::DEADLINE_TICKS);
            let Ok(inst) = Instance::new(&mut store, &module, &[]) else {
                continue;
            };
            let exports = inst.exports(&mut store);
            for (_, ext) in exports {
                if let Extern::Func(f) = ext {
                    let ty = f.ty(&store);
                    let args: Vec<Val> = ty.params.iter().map(|t| Val::default_for(*t)).collect();
                    let mut results: Vec<Val> =
                        ty.results.iter().map(|t| Val::default_for(*t)).collect();
                    match f.call(&mut store, &args, &mut results) {
                        Ok(()) => ran += 1,
                        Err(_) => traps += 1,
                    }
                    store.set_epoch_deadline(faaslet_fuzz::DEADLINE_TICKS);
                }
            }
        }
    }
    println!(
        "{n} inputs: {compiled} modules compiled ({with_gc_types} with struct or array types), {ran} calls returned, {traps} trapped"
    );
}
