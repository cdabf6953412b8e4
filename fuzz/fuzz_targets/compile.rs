//! Arbitrary bytes into `Module::new`: a typed error or a module, never a
//! crash or a hang. Odd first bytes get the wasm header prepended so that
//! most inputs reach the section parser and the validator; the rest go in
//! raw (and so also exercise the text-format path).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [flags, rest @ ..] = data else { return };
    let mut bytes = Vec::with_capacity(rest.len() + 8);
    if flags & 1 == 1 {
        bytes.extend_from_slice(b"\0asm\x01\0\0\0");
    }
    bytes.extend_from_slice(rest);
    let engine = &faaslet_fuzz::engines()[(flags >> 1 & 1) as usize];
    if let Ok(module) = faaslet::Module::new(engine, &bytes) {
        // A module that compiled describes itself consistently.
        assert_eq!(module.exports().count(), module.info().exports.len());
    }
});
