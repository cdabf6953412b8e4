//! `faaslet snapshot --at-input` and `faaslet run --from-snapshot`: a C
//! program captured at its first read of stdin resumes there, printing
//! and exiting as a fresh run with the same input and arguments; a
//! snapshot given with another module is refused, naming the snapshot.
//!
//! Needs clang (wasm32-wasi) and binaryen's `wasm-opt`; skipped without
//! them unless `FAASLET_REQUIRE_CLANG` is set (CI installs both).

use std::path::PathBuf;
use std::process::{Command, Output};

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
static long table[4096];
int main(int argc, char **argv) {
    for (int i = 0; i < 4096; i++) table[i] = (long)i * i + argc;
    printf("ready (%s, %d args)\n", argv[0], argc);
    fflush(stdout);
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf - 1, stdin);
    buf[n] = 0;
    long k = atol(buf);
    printf("%s -> %ld\n", buf, table[k % 4096]);
    return (int)(k % 7);
}
"#;

fn missing(what: &str) {
    if std::env::var_os("FAASLET_REQUIRE_CLANG").is_some() {
        panic!("FAASLET_REQUIRE_CLANG is set but {what} is missing");
    }
    eprintln!("skipping: {what} is missing");
}

fn faaslet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faaslet"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_snapshot_at_the_first_input_read_resumes_as_a_fresh_run() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("snapshot-at-input");
    std::fs::create_dir_all(&dir).unwrap();
    let (c, wasm, snap) = (
        dir.join("prog.c"),
        dir.join("prog.wasm"),
        dir.join("prog.snap"),
    );
    std::fs::write(&c, PROGRAM).unwrap();
    let built = Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2"])
        .arg(&c)
        .arg("-o")
        .arg(&wasm)
        .status()
        .is_ok_and(|s| s.success());
    if !built {
        return missing("clang for wasm32-wasi");
    }
    if Command::new("wasm-opt").arg("--version").output().is_err() {
        return missing("wasm-opt (binaryen)");
    }
    let (w, s) = (wasm.to_str().unwrap(), snap.to_str().unwrap());
    let out = faaslet(&["snapshot", "--at-input", "-o", s, w, "--", "x", "y"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for input in ["12", "4095", ""] {
        let fresh = faaslet(&["run", w, "--input", input, "--", "x", "y"]);
        let resumed = faaslet(&[
            "run",
            w,
            "--from-snapshot",
            s,
            "--input",
            input,
            "--",
            "x",
            "y",
        ]);
        assert_eq!(
            String::from_utf8_lossy(&resumed.stdout),
            String::from_utf8_lossy(&fresh.stdout),
            "input {input:?}"
        );
        assert_eq!(
            resumed.status.code(),
            fresh.status.code(),
            "input {input:?}"
        );
    }
    // Another module with this snapshot: refused, naming it.
    let other = dir.join("other.wat");
    std::fs::write(&other, "(module (func (export \"_start\")))").unwrap();
    let out = faaslet(&["run", other.to_str().unwrap(), "--from-snapshot", s]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("taken from another module"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
