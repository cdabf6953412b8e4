//! `faaslet run`'s exit status (see `faaslet_cli::exit`) and
//! `--memory-limit`, through the binary.

use std::path::PathBuf;
use std::process::Command;

fn wat_file(name: &str, wat: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faaslet-run-exit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.wat"));
    std::fs::write(&path, wat).unwrap();
    path
}

/// Runs `faaslet run ARGS... FILE`: (exit status, stderr).
fn run(file: &PathBuf, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_faaslet"))
        .arg("run")
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn exits_with(code: i64) -> String {
    format!(
        r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
             (memory (export "memory") 1)
             (func (export "_start") i32.const {code} call $exit))"#
    )
}

#[test]
fn guest_exit_codes_and_traps_are_told_apart() {
    for (code, status) in [
        (0, 0),
        (7, 7),
        (125, 125),
        (256, 125),
        (134, 125),
        (255, 125),
    ] {
        let f = wat_file(&format!("exit{code}"), &exits_with(code));
        let (got, stderr) = run(&f, &[]);
        assert_eq!(got, status, "proc_exit({code}); stderr: {stderr}");
        if code > 125 {
            assert!(
                stderr.contains(&format!("guest exit code {code} is outside 0..=125")),
                "{stderr}"
            );
        }
    }
    let f = wat_file(
        "trap",
        r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
    );
    let (got, stderr) = run(&f, &[]);
    assert_eq!(got, 134, "{stderr}");
    assert!(stderr.contains("trap: unreachable"), "{stderr}");
}

#[test]
fn proc_exit_in_the_start_function_is_a_normal_exit() {
    let f = wat_file(
        "start_exit",
        r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
             (memory (export "memory") 1)
             (func $init i32.const 3 call $exit)
             (start $init)
             (func (export "_start") unreachable))"#,
    );
    let (got, stderr) = run(&f, &[]);
    assert_eq!(got, 3, "{stderr}");
    assert!(!stderr.contains("trap"), "{stderr}");
}

#[test]
fn memory_limit_bounds_the_guests_memory() {
    // main: 1 if growing by 32 pages (2 MiB) is refused, else 0.
    let f = wat_file(
        "grow",
        r#"(module (memory (export "memory") 1)
             (func (export "main") (result i32)
               i32.const 32 memory.grow i32.const -1 i32.eq))"#,
    );
    assert_eq!(run(&f, &[]).0, 0);
    let (got, stderr) = run(&f, &["--memory-limit", "2097152"]);
    assert_eq!(got, 1, "{stderr}");
    assert!(!stderr.contains("isolation"), "{stderr}");
    // A minimum above the limit: a clear error naming it.
    let big = wat_file(
        "big",
        r#"(module (memory (export "memory") 64) (func (export "main") (result i32) i32.const 0))"#,
    );
    let (got, stderr) = run(&big, &["--memory-limit", "2097152"]);
    assert_eq!(got, 2, "{stderr}");
    assert!(
        stderr.contains("store limit memory_bytes exceeded"),
        "{stderr}"
    );
}
