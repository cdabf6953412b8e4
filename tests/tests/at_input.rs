//! Proto-Faaslets captured at the first read of input
//! (`faaslet_platform::at_input`): a C program that initialises, writes a
//! line and then reads stdin is asyncified, captured at the read, and every
//! call resumed there must behave exactly as a fresh run with the same
//! input (same stdout, same exit code), call after call.
//!
//! Needs clang (wasm32-wasi) and binaryen's `wasm-opt`; skipped without
//! them unless `FAASLET_REQUIRE_CLANG` is set (CI installs both).

use faaslet::{Engine, Module};
use faaslet_platform::at_input::{asyncify, asyncify_onlylist, AtInputError, ONLYLIST_SECTION};
use faaslet_platform::{Faaslet, FaasletConfig, Output};
use faaslet_tests::{c_wasm, c_wasm_named, have_wasm_opt, with_custom_section};
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

/// A program shaped like our QuickJS driver: `main` reads stdin with
/// read(2) itself, then runs a "hot" part (`work`, reached through a
/// function pointer, as an interpreter's calls are) that never reads.
const READS_IN_MAIN: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
static long table[1024];
__attribute__((noinline)) long work(long k) {
    long s = 0;
    for (long i = 0; i < 1000; i++) s += table[(i * k) % 1024] ^ i;
    return s;
}
long (*volatile hot)(long) = work;
int main(int argc, char **argv) {
    (void)argv;
    for (int i = 0; i < 1024; i++) table[i] = (long)i * 7 + argc;
    puts("ready");
    fflush(stdout);
    char buf[64];
    ssize_t n = read(0, buf, sizeof buf - 1);
    buf[n < 0 ? 0 : n] = 0;
    long k = atol(buf);
    printf("%ld -> %ld\n", k, hot(k));
    return 0;
}
"#;

/// The path from the entry point to `read` in [`READS_IN_MAIN`] as
/// wasi-libc and clang name it.
const MAIN_PATH: &str =
    "_start,_start.command_export,__original_main,__main_void,main,read,__wasi_fd_read";

#[test]
fn an_onlylist_section_limits_the_transform_to_the_path_it_names() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("at-input");
    let Some(wasm) = c_wasm_named(&dir, "reads-in-main", READS_IN_MAIN) else {
        return;
    };
    if !have_wasm_opt() {
        return;
    }
    let listed = with_custom_section(&wasm, ONLYLIST_SECTION, MAIN_PATH.as_bytes());
    let whole = asyncify(&wasm, &dir).unwrap();
    let limited = asyncify(&listed, &dir).unwrap();
    // Only main's path is instrumented: at most the 7 functions named
    // (binaryen may inline some of them into others afterwards), where
    // without the list everything an indirect call might reach is (`work`,
    // the stdio behind printf...).
    let (n_limited, n_whole) = (instrumented(&limited), instrumented(&whole));
    eprintln!("instrumented functions: {n_limited} with the list, {n_whole} without");
    assert!(
        (1..=7).contains(&n_limited) && n_whole > 2 * n_limited,
        "instrumented functions: {n_limited} with the list, {n_whole} without"
    );

    // And it still captures at the read and resumes as a fresh run.
    let engine = Engine::default();
    let plain = Module::new(&engine, &wasm).unwrap();
    let resumable = Module::new(&engine, &limited).unwrap();
    let (snap, point) = Faaslet::snapshot_at_input(&engine, &resumable, config()).unwrap();
    assert_eq!(point.stdout, b"ready\n");
    for input in ["3", "17", "1000"] {
        let mut resumed = Faaslet::from_snapshot(
            &engine,
            &snap,
            FaasletConfig {
                resume: Some(Arc::new(point.clone())),
                ..config()
            },
        )
        .unwrap();
        let got = resumed.call(input.as_bytes()).unwrap();
        let want = Faaslet::new(&engine, &plain, config())
            .unwrap()
            .call(input.as_bytes())
            .unwrap();
        assert_eq!(got.stdout, want.stdout, "input {input}");
        assert_eq!(got.return_code, want.return_code);
        assert!(String::from_utf8_lossy(&got.stdout).contains(&format!("{input} -> ")));
    }

    // A listed name the module does not have is an error naming it, not
    // binaryen's warning and a transform that would unwind wrongly.
    let wrong = with_custom_section(
        &wasm,
        ONLYLIST_SECTION,
        format!("{MAIN_PATH},no_such_function").as_bytes(),
    );
    match asyncify(&wrong, &dir) {
        Err(e @ AtInputError::Asyncify(_)) => {
            let m = e.to_string();
            assert!(
                m.contains("no_such_function") && m.contains(ONLYLIST_SECTION),
                "{m}"
            );
        }
        other => panic!(
            "expected an asyncify error, got {:?}",
            other.map(|w| w.len())
        ),
    }
}

/// How many functions of an asyncified module are instrumented: those
/// that read asyncify's state global (the one its `asyncify_get_state`
/// export returns), besides the `asyncify_*` exports themselves.
fn instrumented(wasm: &[u8]) -> usize {
    use wasmparser::{ExternalKind, Operator, Parser, Payload};
    let mut imported = 0u32;
    let mut exports = std::collections::HashMap::new();
    let mut bodies = Vec::new();
    for p in Parser::new(0).parse_all(wasm) {
        match p.unwrap() {
            Payload::ImportSection(r) => {
                for i in r.into_imports() {
                    if matches!(i.unwrap().ty, wasmparser::TypeRef::Func(_)) {
                        imported += 1;
                    }
                }
            }
            Payload::ExportSection(r) => {
                for e in r {
                    let e = e.unwrap();
                    if e.kind == ExternalKind::Func {
                        exports.insert(e.index, e.name.to_string());
                    }
                }
            }
            Payload::CodeSectionEntry(body) => bodies.push(body),
            _ => {}
        }
    }
    let globals_read = |body: &wasmparser::FunctionBody<'_>| -> Vec<u32> {
        let mut ops = body.get_operators_reader().unwrap();
        let mut out = Vec::new();
        while !ops.eof() {
            if let Operator::GlobalGet { global_index } = ops.read().unwrap() {
                out.push(global_index);
            }
        }
        out
    };
    let get_state = exports
        .iter()
        .find(|(_, n)| n.as_str() == "asyncify_get_state")
        .map(|(i, _)| *i)
        .expect("an asyncified module exports asyncify_get_state");
    let state = globals_read(&bodies[(get_state - imported) as usize])[0];
    bodies
        .iter()
        .enumerate()
        .filter(|(i, b)| {
            let index = *i as u32 + imported;
            !exports
                .get(&index)
                .is_some_and(|n| n.starts_with("asyncify_"))
                && globals_read(b).contains(&state)
        })
        .count()
}

#[test]
fn onlylist_sections_are_checked_before_reaching_wasm_opt() {
    let module = b"\0asm\x01\0\0\0".to_vec();
    assert_eq!(asyncify_onlylist(&module).unwrap(), None);
    let ok = with_custom_section(
        &module,
        ONLYLIST_SECTION,
        b"main, read ,_start.command_export,js_*",
    );
    assert_eq!(
        asyncify_onlylist(&ok).unwrap().unwrap(),
        ["main", "read", "_start.command_export", "js_*"]
    );
    // Anything binaryen could read as an option or a file (`@/etc/passwd`
    // makes it read a list from that file), empty names, bad UTF-8, two
    // sections, and oversized lists are refused with what is wrong.
    let cases: [(Vec<u8>, &str); 6] = [
        (
            with_custom_section(&module, ONLYLIST_SECTION, b"main,@/etc/passwd"),
            "not a function name",
        ),
        (
            with_custom_section(&module, ONLYLIST_SECTION, b"main,,read"),
            "not a function name",
        ),
        (
            with_custom_section(&module, ONLYLIST_SECTION, b"main;rm -rf"),
            "not a function name",
        ),
        (
            with_custom_section(&module, ONLYLIST_SECTION, b"ma\xffin"),
            "not UTF-8",
        ),
        (
            with_custom_section(
                &with_custom_section(&module, ONLYLIST_SECTION, b"main"),
                ONLYLIST_SECTION,
                b"main",
            ),
            "appears twice",
        ),
        (
            with_custom_section(&module, ONLYLIST_SECTION, "f,".repeat(2000).as_bytes()),
            "names, more than",
        ),
    ];
    for (wasm, want) in cases {
        let e = asyncify_onlylist(&wasm).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains(ONLYLIST_SECTION), "{e}");
    }
}
