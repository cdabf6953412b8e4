//! Proto-Faaslets captured at the first read of input
//! (`faaslet_platform::at_input`): a C program that initialises, writes a
//! line and then reads stdin is asyncified, captured at the read, and every
//! call resumed there must behave exactly as a fresh run with the same
//! input (same stdout, same exit code), call after call.
//!
//! Needs clang (wasm32-wasi) and binaryen's `wasm-opt`; skipped without
//! them unless `FAASLET_REQUIRE_CLANG` is set (CI installs both).

use faaslet::{Engine, Module};
use faaslet_platform::at_input::{asyncify, AtInputError};
use faaslet_platform::{Faaslet, FaasletConfig, Output};
use faaslet_tests::{c_wasm, have_wasm_opt};
use std::path::PathBuf;
use std::sync::Arc;

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static long table[4096];
static int init_runs;
int main(int argc, char **argv) {
    init_runs++;
    for (int i = 0; i < 4096; i++) table[i] = (long)i * i + argc;
    printf("ready (%s)\n", argv[0]);
    fflush(stdout);
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf - 1, stdin);
    buf[n] = 0;
    long k = atol(buf);
    printf("%s -> %ld, init ran %d time(s)\n", buf, table[k % 4096], init_runs);
    char *heap = malloc(100000);
    memset(heap, (int)k, 100000);
    printf("heap %d\n", heap[99999]);
    return (int)(k % 7);
}
"#;

const NO_READ: &str = r#"
#include <stdio.h>
int main(void) { puts("never reads"); return 3; }
"#;

/// The C program `src` built for wasm32-wasi, and the same asyncified;
/// `None` (skipped) without clang or wasm-opt.
fn build(name: &str, src: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("at-input");
    let wasm = c_wasm(&dir, name, src)?;
    if !have_wasm_opt() {
        return None;
    }
    let transformed = asyncify(&wasm, &dir).unwrap();
    Some((wasm, transformed))
}

fn config() -> FaasletConfig {
    FaasletConfig {
        stdout: Output::Capture,
        stderr: Output::Capture,
        ..FaasletConfig::new("prog")
    }
}

#[test]
fn resumed_calls_behave_as_fresh_runs() {
    let Some((wasm, transformed)) = build("prog", PROGRAM) else {
        return;
    };
    let engine = Engine::default();
    let plain = Module::new(&engine, &wasm).unwrap();
    let resumable = Module::new(&engine, &transformed).unwrap();
    let (snap, point) = Faaslet::snapshot_at_input(&engine, &resumable, config()).unwrap();
    assert_eq!(point.stdout, b"ready (prog)\n", "written before the read");
    let mut resumed = Faaslet::from_snapshot(
        &engine,
        &snap,
        FaasletConfig {
            resume: Some(Arc::new(point)),
            ..config()
        },
    )
    .unwrap();
    for input in ["3", "12", "4095", "", "100000"] {
        let fresh = Faaslet::new(&engine, &plain, config())
            .unwrap()
            .call(input.as_bytes())
            .unwrap();
        let again = resumed.call(input.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&again.stdout),
            String::from_utf8_lossy(&fresh.stdout),
            "input {input:?}"
        );
        assert_eq!(again.return_code, fresh.return_code, "input {input:?}");
        assert!(
            String::from_utf8_lossy(&again.stdout).contains("init ran 1 time(s)"),
            "each call starts from the captured state"
        );
    }
}

#[test]
fn a_program_that_never_reads_input_is_refused_with_a_reason() {
    let Some((_, transformed)) = build("noread", NO_READ) else {
        return;
    };
    let engine = Engine::default();
    let m = Module::new(&engine, &transformed).unwrap();
    match Faaslet::snapshot_at_input(&engine, &m, config()) {
        Err(e @ AtInputError::EndedFirst(3)) => {
            assert!(e.to_string().contains("before reading its input"), "{e}")
        }
        Err(AtInputError::NoInputImport) => {}
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}
