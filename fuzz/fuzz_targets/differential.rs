//! wasm-smith modules run in faaslet and in wasmi; every export's results
//! and traps, and the final memories, globals and table sizes, must agree.
//! Set `FAASLET_FUZZ_STATS=1` to print how inputs were classified.
#![no_main]

use faaslet_fuzz::differential::{run, Outcome};
use libfuzzer_sys::{fuzz_target, Corpus};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

fuzz_target!(|data: &[u8]| -> Corpus {
    let outcome = run(data);
    let i = outcome as usize;
    let n = COUNTS[i].fetch_add(1, Ordering::Relaxed) + 1;
    if std::env::var_os("FAASLET_FUZZ_STATS").is_some() && n.is_power_of_two() {
        let c: Vec<u64> = COUNTS.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        eprintln!(
            "differential: no-module {} wasmi-rejected {} inconclusive {} agreed {}",
            c[0], c[1], c[2], c[3]
        );
    }
    match outcome {
        Outcome::NoModule => Corpus::Reject,
        _ => Corpus::Keep,
    }
});
