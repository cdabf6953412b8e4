//! Random loads, stores, grows and bulk operations against a model of
//! linear memory, in both bounds modes; the canary page in front of each
//! reservation stays inaccessible and no fault escapes as a signal.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|p: faaslet_fuzz::sandbox::Program| {
    faaslet_fuzz::sandbox::run(&p);
});
