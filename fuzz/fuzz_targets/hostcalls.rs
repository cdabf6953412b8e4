//! Every WASI and Faasm host call with arbitrary arguments, in arbitrary
//! order (see `faaslet_fuzz::hostcalls`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = faaslet_fuzz::hostcalls::run(data);
});
