//! Faaslets and the Faasm API with real guests: the C SDK examples (built
//! here with clang for wasm32-wasi) and WAT modules for the edge cases a
//! hostile guest can reach. Every bad pointer, huge length, unterminated
//! string or escaping name must come back as an error or a trap, and the
//! host must keep serving calls afterwards.

use faaslet::{Engine, Module};
use faaslet_platform::{
    CallOutput, Faaslet, FaasletConfig, FaasletError, FunctionRegistry, LocalStateStore, MountMode,
    Output, StateStore,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(Engine::default)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

const EXAMPLES: [&str; 5] = ["hello", "echo", "fanout", "counter", "wordcount"];

/// Builds the C examples of `sdk/` with clang into a directory of
/// `NAME.wasm` files, once per test run. `None` (with the reason printed)
/// if clang cannot target wasm32-wasi here, unless FAASLET_REQUIRE_CLANG is
/// set, in which case that is a failure (CI sets it).
fn examples() -> Option<&'static Path> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = DIR.get_or_init(|| {
        let sdk = workspace().join("sdk");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faasm-examples");
        std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
        for name in EXAMPLES {
            let wasm = out.join(format!("{name}.wasm"));
            let res = Command::new("clang")
                .args(["--target=wasm32-wasi", "-O2", "-Wall", "-Werror", "-I"])
                .arg(sdk.join("include"))
                .arg(sdk.join("src/faasm.c"))
                .arg(sdk.join(format!("examples/{name}.c")))
                .arg("-o")
                .arg(&wasm)
                .output()
                .map_err(|e| format!("cannot run clang: {e}"))?;
            if !res.status.success() {
                return Err(format!(
                    "clang failed on {name}.c: {}",
                    String::from_utf8_lossy(&res.stderr)
                ));
            }
        }
        Ok(out)
    });
    match r {
        Ok(p) => Some(p),
        Err(e) if std::env::var_os("FAASLET_REQUIRE_CLANG").is_none() => {
            eprintln!("skipping: the C examples cannot be built ({e}); install clang lld wasi-libc libclang-rt-dev-wasm32");
            None
        }
        Err(e) => panic!("FAASLET_REQUIRE_CLANG is set but the C examples cannot be built: {e}"),
    }
}

/// A config whose chained calls find the C examples by name.
fn c_config(dir: &Path, name: &str, state: Arc<dyn StateStore>) -> FaasletConfig {
    FaasletConfig {
        functions: Some(FunctionRegistry::new(engine(), dir)),
        state,
        stdout: Output::Capture,
        stderr: Output::Capture,
        ..FaasletConfig::new(name)
    }
}

fn run_c(name: &str, input: &[u8], config: FaasletConfig) -> CallOutput {
    let module = config.functions.as_ref().unwrap().get(name).unwrap();
    let mut f = Faaslet::new(engine(), &module, config).unwrap();
    f.call(input).unwrap()
}

fn wat_module(wat: &str) -> Module {
    Module::new(engine(), wat).unwrap()
}

/// Runs `main` of a WAT module with `input`.
fn run_wat(wat: &str, input: &[u8], config: FaasletConfig) -> Result<CallOutput, FaasletError> {
    Faaslet::new(engine(), &wat_module(wat), config)?.call(input)
}

fn trap_message(r: Result<CallOutput, FaasletError>) -> String {
    match r {
        Err(FaasletError::Trap { trap, .. }) => trap.to_string(),
        Err(e) => panic!("expected a trap, got error {e}"),
        Ok(o) => panic!("expected a trap, got return code {}", o.return_code),
    }
}

/// The Faasm imports WAT guests use, and a memory with some fixed data.
const PRELUDE: &str = r#"
  (import "env" "__faasm_read_input" (func $read_input (param i32 i32) (result i32)))
  (import "env" "__faasm_write_output" (func $write_output (param i32 i32)))
  (import "env" "__faasm_chain_name" (func $chain_name (param i32 i32 i32) (result i32)))
  (import "env" "__faasm_chain_ptr" (func $chain_ptr (param i32 i32 i32) (result i32)))
  (import "env" "__faasm_await_call" (func $await (param i32) (result i32)))
  (import "env" "__faasm_await_call_output" (func $await_output (param i32 i32 i32) (result i32)))
  (import "env" "__faasm_read_state" (func $read_state (param i32 i32 i32) (result i32)))
  (import "env" "__faasm_read_state_ptr" (func $read_state_ptr (param i32 i32) (result i32)))
  (import "env" "__faasm_write_state" (func $write_state (param i32 i32 i32)))
  (import "env" "__faasm_write_state_offset" (func $write_state_offset (param i32 i32 i32 i32 i32)))
  (import "env" "__faasm_read_state_offset" (func $read_state_offset (param i32 i32 i32 i32 i32)))
  (import "env" "__faasm_read_state_offset_ptr" (func $read_state_offset_ptr (param i32 i32 i32 i32) (result i32)))
  (import "env" "__faasm_flag_state_offset_dirty" (func $flag_offset_dirty (param i32 i32 i32 i32)))
  (import "env" "__faasm_append_state" (func $append (param i32 i32 i32)))
  (import "env" "__faasm_read_appended_state" (func $read_appended (param i32 i32 i32 i32)))
  (import "env" "__faasm_clear_appended_state" (func $clear_appended (param i32)))
  (import "env" "__faasm_push_state" (func $push (param i32)))
  (import "env" "__faasm_push_state_partial" (func $push_partial (param i32)))
  (import "env" "__faasm_pull_state" (func $pull (param i32 i32)))
  (import "env" "__faasm_lock_state_write" (func $lock_write (param i32)))
  (import "env" "__faasm_unlock_state_write" (func $unlock_write (param i32)))
  (import "env" "__faasm_lock_state_read" (func $lock_read (param i32)))
  (import "env" "__faasm_unlock_state_read" (func $unlock_read (param i32)))
  (import "env" "__faasm_conf_flag" (func $conf_flag (param i32) (result i32)))
  (memory 1)
  (data (i32.const 0) "key\00")
  (data (i32.const 16) "mask\00")
  (data (i32.const 32) "../escape\00")
  (data (i32.const 48) "FLAG\00")
  (data (i32.const 64) "0123456789")
"#;

fn wat(body: &str) -> String {
    format!("(module {PRELUDE} {body})")
}

fn fresh() -> FaasletConfig {
    FaasletConfig::new("wat")
}

// ---------------------------------------------------------- C examples

#[test]
fn c_hello_and_echo() {
    let Some(dir) = examples() else { return };
    let state: Arc<dyn StateStore> = Arc::new(LocalStateStore::new());
    let out = run_c("hello", b"", c_config(dir, "hello", state.clone()));
    assert_eq!(out.output, b"Hello from a Faaslet!\n");
    assert_eq!(out.return_code, 0);
    let input: Vec<u8> = (0..=255u8).chain(b"tail".iter().copied()).collect();
    let out = run_c("echo", &input, c_config(dir, "echo", state.clone()));
    assert_eq!(out.output, input);
    let out = run_c("echo", b"", c_config(dir, "echo", state));
    assert_eq!(out.output, b"");
}

#[test]
fn c_fanout_by_pointer_of_100_calls() {
    let Some(dir) = examples() else { return };
    let state: Arc<dyn StateStore> = Arc::new(LocalStateStore::new());
    let out = run_c("fanout", b"100", c_config(dir, "fanout", state));
    // Sum of i*i for i in 0..100.
    assert_eq!(String::from_utf8_lossy(&out.output), "328350\n");
    assert_eq!(out.return_code, 0);
}

#[test]
fn c_fanout_by_name_of_100_calls() {
    let Some(dir) = examples() else { return };
    let state: Arc<dyn StateStore> = Arc::new(LocalStateStore::new());
    let out = run_c("fanout", b"100 echo", c_config(dir, "fanout", state));
    assert_eq!(String::from_utf8_lossy(&out.output), "4950\n");
    assert_eq!(out.return_code, 0);
}

#[test]
fn c_fanout_to_a_missing_function_fails_cleanly() {
    let Some(dir) = examples() else { return };
    let state: Arc<dyn StateStore> = Arc::new(LocalStateStore::new());
    for name in ["nosuch", "../fanout", "/etc/passwd"] {
        let input = format!("3 {name}");
        let out = run_c(
            "fanout",
            input.as_bytes(),
            c_config(dir, "fanout", state.clone()),
        );
        // fanout returns 3 when a chain call gives id 0.
        assert_eq!(out.return_code, 3, "chaining {name:?}");
    }
}

#[test]
fn c_counters_under_a_write_lock_count_exactly() {
    let Some(dir) = examples() else { return };
    let state: Arc<dyn StateStore> = Arc::new(LocalStateStore::new());
    // 100 concurrent counters: each sees a distinct value 1..=100.
    let out = run_c(
        "fanout",
        b"100 counter",
        c_config(dir, "fanout", state.clone()),
    );
    assert_eq!(String::from_utf8_lossy(&out.output), "5050\n");
    let mut v = [0u8; 4];
    state
        .value("default", "counter")
        .unwrap()
        .read_at(0, &mut v);
    assert_eq!(u32::from_le_bytes(v), 100);
    let out = run_c("counter", b"", c_config(dir, "counter", state.clone()));
    assert_eq!(out.output, b"101");
}

#[test]
fn c_wordcount_over_a_mounted_file() {
    let Some(dir) = examples() else { return };
    let data = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faasm-wordcount");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("input.txt"), "one two  three\nfour\n\nfive six\n").unwrap();
    let mut config = c_config(dir, "wordcount", Arc::new(LocalStateStore::new()));
    config
        .mounts
        .push((data.clone(), "/data".into(), MountMode::ReadOnly));
    let out = run_c("wordcount", b"", config.clone());
    assert_eq!(
        String::from_utf8_lossy(&out.output),
        "4 6 30 /data/input.txt\n"
    );
    // A path outside the mount is not reachable.
    let out = run_c("wordcount", b"/data/../../etc/passwd", config.clone());
    assert_eq!(out.return_code, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
    // Without the mount the file is not there either.
    config.mounts.clear();
    let out = run_c("wordcount", b"", config);
    assert_eq!(out.return_code, 1);
}

/// The `faaslet` binary, built if needed.
fn faaslet_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("faaslet");
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "faaslet-cli", "--bin", "faaslet"])
        .current_dir(workspace())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(bin.exists(), "{} not built", bin.display());
    bin
}

#[test]
fn cli_runs_the_examples() {
    let Some(dir) = examples() else { return };
    let bin = faaslet_bin();
    let run = |args: &[&str]| {
        let out = Command::new(&bin).arg("run").args(args).output().unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.code(),
        )
    };
    let wasm = |n: &str| dir.join(format!("{n}.wasm")).display().to_string();
    assert_eq!(
        run(&[&wasm("hello")]),
        ("Hello from a Faaslet!\n".into(), Some(0))
    );
    assert_eq!(
        run(&[&wasm("echo"), "--input", "abc"]),
        ("abc".into(), Some(0))
    );
    let f = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faasm-cli-input");
    std::fs::write(&f, "from a file").unwrap();
    let fs = f.display().to_string();
    assert_eq!(
        run(&[&wasm("echo"), "--input-file", &fs]),
        ("from a file".into(), Some(0))
    );
    assert_eq!(
        run(&[&wasm("fanout"), "--input", "100"]),
        ("328350\n".into(), Some(0))
    );
    let d = dir.display().to_string();
    assert_eq!(
        run(&[&wasm("fanout"), "--input", "100 echo", "--functions", &d]),
        ("4950\n".into(), Some(0))
    );
    let data = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faasm-cli-data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("words.txt"), "a b c\nd\n").unwrap();
    let mount = format!("{}:/in:ro", data.display());
    assert_eq!(
        run(&[&wasm("wordcount"), "--mount", &mount, "--", "/in/words.txt"]),
        ("2 4 8 /in/words.txt\n".into(), Some(0))
    );
    // The exit code follows the guest's.
    assert_eq!(run(&[&wasm("wordcount"), "--", "/missing"]).1, Some(1));
}

// ------------------------------------------------------ WAT: the API

#[test]
fn input_output_and_return_code() {
    let m = wat(r#"
      (func (export "main") (result i32)
        ;; length only
        (if (i32.ne (call $read_input (i32.const 0) (i32.const 0)) (i32.const 5)) (then unreachable))
        (drop (call $read_input (i32.const 1000) (i32.const 3)))
        (call $write_output (i32.const 64) (i32.const 2))
        ;; a second write replaces the first, as in Faasm
        (call $write_output (i32.const 1000) (i32.const 3))
        i32.const 7)
    "#);
    let out = run_wat(&m, b"hello", fresh()).unwrap();
    assert_eq!(out.output, b"hel");
    assert_eq!(out.return_code, 7);
}

#[test]
fn bad_pointers_and_lengths_trap_and_the_host_keeps_running() {
    let cases: &[(&str, &str)] = &[
        ("(call $write_output (i32.const 65530) (i32.const 100))", "__faasm_write_output"),
        ("(call $write_output (i32.const 0) (i32.const 0x7fffffff))", "outside the guest memory"),
        ("(call $write_output (i32.const 0) (i32.const -1))", "negative length"),
        ("(drop (call $read_input (i32.const -16) (i32.const 32)))", "__faasm_read_input"),
        ("(drop (call $read_state (i32.const -1) (i32.const 0) (i32.const 0)))", "state key"),
        ("(call $write_state (i32.const 0) (i32.const 64) (i32.const 65536))", "write_state data"),
        ("(call $write_state_offset (i32.const 0) (i32.const 10) (i32.const 8) (i32.const 64) (i32.const 4))", "past the value's length"),
        ("(call $write_state_offset (i32.const 0) (i32.const 0x7fffffff) (i32.const 0) (i32.const 64) (i32.const 4))", "too large"),
        ("(call $read_state_offset (i32.const 0) (i32.const 10) (i32.const -4) (i32.const 64) (i32.const 4))", "negative"),
        ("(drop (call $chain_name (i32.const 70000) (i32.const 0) (i32.const 0)))", "chain_name name"),
        ("(drop (call $chain_name (i32.const 32) (i32.const 0) (i32.const 99999)))", "chain_name input"),
        ("(drop (call $await_output (i32.const 1) (i32.const 65535) (i32.const 0)))", "await_call_output out"),
        ("(call $append (i32.const 0) (i32.const 65000) (i32.const 1000))", "append_state data"),
        ("(call $read_appended (i32.const 0) (i32.const 0) (i32.const 0x10000000) (i32.const 1))", "read_appended_state buffer"),
        ("(drop (call $read_state_ptr (i32.const 0) (i32.const -1)))", "negative"),
        ("(drop (call $conf_flag (i32.const 65536)))", "conf flag"),
    ];
    for (call, needle) in cases {
        let m = wat(&format!(
            r#"(func (export "main") (result i32) {call} i32.const 0)"#
        ));
        let msg = trap_message(run_wat(&m, b"", fresh()));
        assert!(msg.contains(needle), "{call}: {msg:?} lacks {needle:?}");
    }
    // The same engine still runs guests.
    let ok = wat(
        r#"(func (export "main") (result i32) (call $write_output (i32.const 64) (i32.const 3)) i32.const 0)"#,
    );
    assert_eq!(run_wat(&ok, b"", fresh()).unwrap().output, b"012");
}

#[test]
fn unterminated_and_non_utf8_keys_trap() {
    // A key running to the end of memory: fill the last page with 'a'.
    let m = wat(r#"
      (func (export "main") (result i32)
        (memory.fill (i32.const 60000) (i32.const 97) (i32.const 5536))
        (call $write_state (i32.const 60000) (i32.const 64) (i32.const 1))
        i32.const 0)
    "#);
    assert!(trap_message(run_wat(&m, b"", fresh())).contains("not NUL-terminated"));
    // A key longer than the limit, though terminated.
    let m = wat(r#"
      (func (export "main") (result i32)
        (memory.fill (i32.const 1000) (i32.const 97) (i32.const 10000))
        (call $write_state (i32.const 1000) (i32.const 64) (i32.const 1))
        i32.const 0)
    "#);
    assert!(trap_message(run_wat(&m, b"", fresh())).contains("not NUL-terminated"));
    let m = wat(r#"
      (data (i32.const 200) "\ff\fe\00")
      (func (export "main") (result i32)
        (call $write_state (i32.const 200) (i32.const 64) (i32.const 1))
        i32.const 0)
    "#);
    assert!(trap_message(run_wat(&m, b"", fresh())).contains("not UTF-8"));
}

#[test]
fn chaining_escaping_or_unknown_names_returns_id_zero() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faasm-empty-fns");
    std::fs::create_dir_all(&dir).unwrap();
    let config = FaasletConfig {
        functions: Some(FunctionRegistry::new(engine(), &dir)),
        ..fresh()
    };
    // "../escape" is refused; await of id 0 (or any foreign id) is -1.
    let m = wat(r#"
      (func (export "main") (result i32)
        (if (call $chain_name (i32.const 32) (i32.const 0) (i32.const 0)) (then unreachable))
        (if (i32.ne (call $await (i32.const 0)) (i32.const -1)) (then unreachable))
        (if (i32.ne (call $await (i32.const 123456)) (i32.const -1)) (then unreachable))
        i32.const 0)
    "#);
    assert_eq!(run_wat(&m, b"", config).unwrap().return_code, 0);
}

#[test]
fn chain_by_table_index_and_await_output() {
    // Calls its own table entry 1 five times with input "i"; each callee
    // echoes its input and returns 10 + the input's length.
    let m = wat(r#"
      (table (export "table") 2 funcref)
      (elem (i32.const 1) $worker)
      (func $worker (result i32)
        (local $n i32)
        (local.set $n (call $read_input (i32.const 2000) (i32.const 100)))
        (call $write_output (i32.const 2000) (local.get $n))
        (i32.add (i32.const 10) (local.get $n)))
      (func (export "main") (result i32)
        (local $id i32) (local $rc i32)
        (local.set $id (call $chain_ptr (i32.const 1) (i32.const 64) (i32.const 4)))
        (local.set $rc (call $await_output (local.get $id) (i32.const 3000) (i32.const 3004)))
        (if (i32.ne (local.get $rc) (i32.const 14)) (then unreachable))
        ;; the output was copied into our memory at *3000, length *3004
        (call $write_output (i32.load (i32.const 3000)) (i32.load (i32.const 3004)))
        ;; awaiting again gives the same result
        (if (i32.ne (call $await (local.get $id)) (i32.const 14)) (then unreachable))
        ;; a null table entry: the call fails, its await reports -1
        (local.set $id (call $chain_ptr (i32.const 0) (i32.const 0) (i32.const 0)))
        (if (i32.ne (call $await (local.get $id)) (i32.const -1)) (then unreachable))
        ;; out of the table
        (local.set $id (call $chain_ptr (i32.const 99) (i32.const 0) (i32.const 0)))
        (call $await (local.get $id)))
    "#);
    let mut config = fresh();
    config.stderr = Output::Capture;
    let out = run_wat(&m, b"", config).unwrap();
    assert_eq!(out.output, b"0123");
    assert_eq!(out.return_code, -1);
}

#[test]
fn state_whole_offsets_and_ptr() {
    let local = Arc::new(LocalStateStore::new());
    let state: Arc<dyn StateStore> = local.clone();
    let config = FaasletConfig {
        state: state.clone(),
        ..fresh()
    };
    let m = wat(r#"
      (func (export "main") (result i32)
        (local $p i32)
        (call $write_state (i32.const 0) (i32.const 64) (i32.const 10))
        (if (i32.ne (call $read_state (i32.const 0) (i32.const 0) (i32.const 0)) (i32.const 10)) (then unreachable))
        ;; offset write and read back
        (call $write_state_offset (i32.const 0) (i32.const 10) (i32.const 2) (i32.const 64) (i32.const 2))
        (call $read_state_offset (i32.const 0) (i32.const 10) (i32.const 1) (i32.const 500) (i32.const 4))
        ;; the _ptr call maps the value and returns the same address again
        (local.set $p (call $read_state_ptr (i32.const 0) (i32.const 10)))
        (if (i32.ne (local.get $p) (call $read_state_ptr (i32.const 0) (i32.const 10))) (then unreachable))
        (if (i32.ne (i32.add (local.get $p) (i32.const 3))
                    (call $read_state_offset_ptr (i32.const 0) (i32.const 10) (i32.const 3) (i32.const 2))) (then unreachable))
        ;; the mapping is above the module's own page
        (if (i32.lt_u (local.get $p) (i32.const 65536)) (then unreachable))
        (memory.copy (i32.const 504) (local.get $p) (i32.const 10))
        (call $write_output (i32.const 500) (i32.const 14))
        ;; change bytes 0 and 9 through the pointer; flag only byte 0
        (i32.store8 (local.get $p) (i32.const 65))
        (i32.store8 (i32.add (local.get $p) (i32.const 9)) (i32.const 90))
        (call $flag_offset_dirty (i32.const 0) (i32.const 10) (i32.const 0) (i32.const 1))
        (call $push_partial (i32.const 0))
        i32.const 0)
    "#);
    let out = run_wat(&m, b"", config.clone()).unwrap();
    assert_eq!(out.output, b"10140101456789");
    // The pointer is the value's own pages: both writes are in the value at
    // once...
    assert_eq!(
        state
            .value("default", "key")
            .unwrap()
            .copy_range(0..usize::MAX)
            .unwrap(),
        b"A10145678Z"
    );
    // ...and the partial push sent the dirty runs: all of it, since
    // write_state had marked the whole value dirty.
    let global = local.global();
    assert_eq!(
        global.get_range("faaslet:v:default/key", 0..10).unwrap(),
        b"A10145678Z"
    );
    assert!(state
        .value("default", "key")
        .unwrap()
        .dirty_ranges()
        .is_empty());

    // A full push sends the whole value; write_state_offset shows through
    // the pointer at once.
    let m = wat(r#"
      (func (export "main") (result i32)
        (local $p i32)
        (local.set $p (call $read_state_ptr (i32.const 0) (i32.const 10)))
        (i32.store8 (i32.add (local.get $p) (i32.const 9)) (i32.const 90))
        (call $push (i32.const 0))
        (call $write_state_offset (i32.const 0) (i32.const 10) (i32.const 1) (i32.const 64) (i32.const 1))
        ;; the pointer sees host-side writes at once
        (call $write_output (local.get $p) (i32.const 10))
        i32.const 0)
    "#);
    let out = run_wat(&m, b"", config).unwrap();
    assert_eq!(out.output, b"A00145678Z");
    assert_eq!(
        state
            .value("default", "key")
            .unwrap()
            .copy_range(0..usize::MAX)
            .unwrap(),
        b"A00145678Z"
    );
}

#[test]
fn appended_state_and_conf_flags() {
    let mut config = fresh();
    config.conf_flags = Arc::new([("FLAG".to_string(), 3u32)].into_iter().collect());
    let m = wat(r#"
      (func (export "main") (result i32)
        (call $append (i32.const 0) (i32.const 64) (i32.const 2))
        (call $append (i32.const 0) (i32.const 66) (i32.const 3))
        (call $read_appended (i32.const 0) (i32.const 800) (i32.const 5) (i32.const 2))
        (call $write_output (i32.const 800) (i32.const 5))
        (call $clear_appended (i32.const 0))
        (call $conf_flag (i32.const 48)))
    "#);
    let out = run_wat(&m, b"", config).unwrap();
    assert_eq!(out.output, b"01234");
    assert_eq!(out.return_code, 3);
    // Reading more elements than exist is an error.
    let m = wat(r#"
      (func (export "main") (result i32)
        (call $read_appended (i32.const 0) (i32.const 800) (i32.const 5) (i32.const 1))
        i32.const 0)
    "#);
    assert!(trap_message(run_wat(&m, b"", fresh())).contains("appended elements"));
}

#[test]
fn lock_misuse_traps_instead_of_deadlocking() {
    let m = wat(r#"
      (func (export "main") (result i32)
        (call $lock_write (i32.const 0))
        (call $lock_write (i32.const 0))
        i32.const 0)
    "#);
    assert!(trap_message(run_wat(&m, b"", fresh())).contains("already held"));
    let m = wat(r#"
      (func (export "main") (result i32)
        (call $unlock_read (i32.const 0))
        i32.const 0)
    "#);
    assert!(trap_message(run_wat(&m, b"", fresh())).contains("not held"));
}

#[test]
fn locks_held_by_a_trapping_guest_are_released() {
    let state: Arc<dyn StateStore> = Arc::new(LocalStateStore::new());
    let config = FaasletConfig {
        state: state.clone(),
        ..fresh()
    };
    let crash = wat(r#"
      (func (export "main") (result i32)
        (call $lock_write (i32.const 0))
        unreachable)
    "#);
    assert!(trap_message(run_wat(&crash, b"", config.clone())).contains("unreachable"));
    // If the lock leaked this would block forever; run it on a thread with
    // a deadline.
    let take = wat(r#"
      (func (export "main") (result i32)
        (call $lock_read (i32.const 0))
        (call $unlock_read (i32.const 0))
        i32.const 5)
    "#);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tx.send(run_wat(&take, b"", config).map(|o| o.return_code).ok())
            .unwrap();
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), Some(5));
}

#[test]
fn a_faaslet_is_fresh_for_every_call() {
    let m = wat(r#"
      (global $calls (mut i32) (i32.const 0))
      (func (export "main") (result i32)
        (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
        (i32.store8 (i32.const 900) (i32.add (i32.load8_u (i32.const 900)) (i32.const 1)))
        (i32.add (global.get $calls) (i32.load8_u (i32.const 900))))
    "#);
    let mut f = Faaslet::new(engine(), &wat_module(&m), fresh()).unwrap();
    assert_eq!(f.call(b"").unwrap().return_code, 2);
    assert_eq!(f.call(b"").unwrap().return_code, 2);
}

/// A parent holds its children's outputs until its call ends; what it may
/// hold is bounded (`FaasletConfig::chained_output_limit`): past it a
/// child fails instead of its output being kept.
#[test]
fn chained_outputs_a_caller_holds_are_bounded() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faasm-wat-big-outputs");
    std::fs::create_dir_all(&dir).unwrap();
    // 40,000 bytes of output each.
    std::fs::write(
        dir.join("big.wat"),
        wat(r#"(func (export "main") (result i32)
                 (call $write_output (i32.const 0) (i32.const 40000)) (i32.const 0))"#),
    )
    .unwrap();
    // Chains 10, awaits them all, returns how many succeeded.
    let m = wat(r#"
      (data (i32.const 300) "big\00")
      (func (export "main") (result i32)
        (local $i i32) (local $ok i32)
        (loop $start
          (i32.store (i32.add (i32.const 1000) (i32.shl (local.get $i) (i32.const 2)))
            (call $chain_name (i32.const 300) (i32.const 64) (i32.const 0)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $start (i32.lt_u (local.get $i) (i32.const 10))))
        (local.set $i (i32.const 0))
        (loop $wait
          (if (i32.eqz (call $await (i32.load (i32.add (i32.const 1000) (i32.shl (local.get $i) (i32.const 2))))))
            (then (local.set $ok (i32.add (local.get $ok) (i32.const 1)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $wait (i32.lt_u (local.get $i) (i32.const 10))))
        local.get $ok)
    "#);
    let config = FaasletConfig {
        functions: Some(FunctionRegistry::new(engine(), &dir)),
        chained_output_limit: 100_000,
        ..fresh()
    };
    // Two outputs fit in 100,000 bytes; the other eight fail.
    assert_eq!(run_wat(&m, b"", config).unwrap().return_code, 2);
    let unbounded = FaasletConfig {
        functions: Some(FunctionRegistry::new(engine(), &dir)),
        ..fresh()
    };
    assert_eq!(run_wat(&m, b"", unbounded).unwrap().return_code, 10);
}

#[test]
fn chained_fanout_of_100_wat_calls() {
    // A WAT fan-out through the registry: 100 calls of "leaf", each
    // returning its input length; the caller sums the return codes.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faasm-wat-fns");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("leaf.wat"),
        wat(
            r#"(func (export "main") (result i32) (call $read_input (i32.const 0) (i32.const 0)))"#,
        ),
    )
    .unwrap();
    let m = wat(r#"
      (data (i32.const 300) "leaf\00")
      (func (export "main") (result i32)
        (local $i i32) (local $sum i32)
        (loop $start
          (i32.store (i32.add (i32.const 1000) (i32.shl (local.get $i) (i32.const 2)))
            (call $chain_name (i32.const 300) (i32.const 64) (i32.rem_u (local.get $i) (i32.const 10))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $start (i32.lt_u (local.get $i) (i32.const 100))))
        (local.set $i (i32.const 0))
        (loop $wait
          (local.set $sum (i32.add (local.get $sum)
            (call $await (i32.load (i32.add (i32.const 1000) (i32.shl (local.get $i) (i32.const 2)))))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $wait (i32.lt_u (local.get $i) (i32.const 100))))
        local.get $sum)
    "#);
    let config = FaasletConfig {
        functions: Some(FunctionRegistry::new(engine(), &dir)),
        ..fresh()
    };
    let start = Instant::now();
    let out = run_wat(&m, b"", config).unwrap();
    // 10 rounds of 0+1+...+9.
    assert_eq!(out.return_code, 450);
    eprintln!("100 chained WAT calls in {:?}", start.elapsed());
}

#[test]
fn cli_runs_from_a_snapshot() {
    // `_initialize` leaves "hi!\n" in memory and 7 in a global; `main`
    // writes the memory out and returns the global. Fresh, neither is set.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faasm-cli-snapshot");
    std::fs::create_dir_all(&dir).unwrap();
    let module = dir.join("init.wat");
    std::fs::write(
        &module,
        wat(r#"
      (global $n (mut i32) (i32.const 0))
      (func (export "_initialize")
        (i32.store (i32.const 2000) (i32.const 0x0a216968))
        (global.set $n (i32.const 7)))
      (func (export "main") (result i32)
        (call $write_output (i32.const 2000) (i32.const 4))
        (i32.store (i32.const 2000) (i32.const 0))
        (global.get $n))
    "#),
    )
    .unwrap();
    let snap = dir.join("init.snap");
    let bin = faaslet_bin();
    let m = module.display().to_string();
    let s = snap.display().to_string();
    let out = Command::new(&bin)
        .args(["snapshot", &m, "-o", &s])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = |args: &[&str]| {
        let out = Command::new(&bin).arg("run").args(args).output().unwrap();
        (out.stdout, out.status.code())
    };
    assert_eq!(
        run(&[&m, "--from-snapshot", &s]),
        (b"hi!\n".to_vec(), Some(7))
    );
    // The other bounds mode restores the same file.
    assert_eq!(
        run(&["--bounds", "explicit", &m, "--from-snapshot", &s]),
        (b"hi!\n".to_vec(), Some(7))
    );
    assert_eq!(run(&[&m]), (vec![0u8; 4], Some(0)));
    // A corrupt snapshot is a clear error, not a crash.
    let bad = dir.join("bad.snap");
    let mut bytes = std::fs::read(&snap).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&bad, &bytes).unwrap();
    let out = Command::new(&bin)
        .args(["run", &m, "--from-snapshot", &bad.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid snapshot"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn faaslet_from_snapshot_restores_every_call() {
    // Each call starts from the snapshot: what a call writes does not
    // survive into the next, and initialised state is there every time.
    let m = wat(r#"
      (global $n (mut i32) (i32.const 0))
      (func (export "_initialize") (global.set $n (i32.const 40))
        (i32.store (i32.const 2000) (i32.const 2)))
      (func (export "main") (result i32)
        (global.set $n (i32.add (global.get $n) (i32.load (i32.const 2000))))
        (i32.store (i32.const 2000) (i32.const 100))
        (global.get $n))
    "#);
    let module = wat_module(&m);
    let snap = Faaslet::snapshot(engine(), &module, fresh(), None).unwrap();
    let mut f = Faaslet::from_snapshot(engine(), &snap, fresh()).unwrap();
    for _ in 0..3 {
        assert_eq!(f.call(b"").unwrap().return_code, 42);
    }
    let mut plain = Faaslet::new(engine(), &module, fresh()).unwrap();
    assert_eq!(plain.call(b"").unwrap().return_code, 0);
    // An init export that does not exist is a typed error.
    let err = Faaslet::snapshot(engine(), &module, fresh(), Some("nope")).unwrap_err();
    assert!(matches!(err, FaasletError::Snapshot(_)), "{err}");
}

/// A Faaslet from a snapshot puts the instance of its last call back to
/// the snapshot in place (`prepare`, or the next call): what a call
/// changed (globals, memory bytes and size, tables, dropped segments,
/// output) is gone every time, also after a call that trapped.
#[test]
fn a_reused_instance_is_as_the_snapshot_left_it() {
    let m = wat(r#"
      (global $n (mut i32) (i32.const 0))
      (table $t 2 funcref)
      (elem declare func $one)
      (func $one (result i32) (i32.const 1))
      (data $d "xy")
      (func (export "_initialize") (global.set $n (i32.const 40))
        (i32.store (i32.const 2000) (i32.const 2)))
      (func (export "main") (result i32)
        (local $r i32)
        ;; Traps if a call before dropped the segment.
        (memory.init $d (i32.const 3000) (i32.const 0) (i32.const 2))
        (local.set $r (i32.add (i32.add (global.get $n) (i32.load (i32.const 2000)))
          (i32.mul (memory.size) (i32.const 1000))))
        (if (i32.eqz (ref.is_null (table.get $t (i32.const 1))))
          (then (local.set $r (i32.add (local.get $r) (i32.const 500)))))
        (call $write_output (i32.const 3000) (i32.const 2))
        (global.set $n (i32.const 0))
        (i32.store (i32.const 2000) (i32.const 100))
        (drop (memory.grow (i32.const 1)))
        (i32.store (i32.const 70000) (i32.const 7))
        (table.set $t (i32.const 1) (ref.func $one))
        (data.drop $d)
        (drop (call $read_input (i32.const 4000) (i32.const 1)))
        (if (i32.eq (i32.load8_u (i32.const 4000)) (i32.const 116))
          (then unreachable))
        (local.get $r))
    "#);
    let module = wat_module(&m);
    let snap = Faaslet::snapshot(engine(), &module, fresh(), None).unwrap();
    let mut f = Faaslet::from_snapshot(engine(), &snap, fresh()).unwrap();
    for round in 0..6 {
        if round % 2 == 0 {
            f.prepare().unwrap();
        }
        for _ in 0..2 {
            let out = f.call(b"-").unwrap();
            assert_eq!(
                (out.return_code, &out.output[..]),
                (1042, &b"xy"[..]),
                "{round}"
            );
        }
        // A call that traps after changing everything.
        assert!(f.call(b"t").is_err(), "{round}");
    }
}

#[test]
fn cli_bench_cold_start_prints_table_and_json() {
    let bin = faaslet_bin();
    let out = Command::new(&bin)
        .args(["bench", "cold-start", "--json", "--iterations", "50"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8(out.stdout).unwrap();
    let json = json.trim();
    assert!(json.starts_with("{\"iterations\":50,") && json.ends_with('}'));
    for key in [
        "\"fresh\":{\"median_ns\":",
        "\"restore\":{\"median_ns\":",
        "\"p99_cycles\":",
        "\"restore_rate_per_s\":",
        "{\"alive\":1000,\"pss_kib\":",
        "{\"alive\":10000,\"pss_kib\":",
        "\"density\":{\"alive\":",
        "\"large\":{\"memory_bytes\":53739520,",
        "\"warm_call\":{\"median_ns\":",
    ] {
        assert!(json.contains(key), "{key} missing from {json}");
    }
    // Explicit-bounds Faaslets merge into few mappings: the 100,000 target
    // is reached under the default vm.max_map_count.
    assert!(
        json.contains("\"density\":{\"alive\":100000,\"target\":100000,\"error\":null}"),
        "{json}"
    );
    let out = Command::new(&bin)
        .args(["bench", "cold-start", "--iterations", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Regression (found running CPython-on-WASI under `faaslet run --input`):
/// a WASI program reads the call's input as its standard input, every call.
#[test]
fn call_input_is_the_wasi_programs_stdin() {
    let m = r#"(module
      (import "wasi_snapshot_preview1" "fd_read" (func $r (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        ;; iovec at 0: buf 64, len 32; read stdin, write what was read to stdout
        (i32.store (i32.const 0) (i32.const 64))
        (i32.store (i32.const 4) (i32.const 32))
        (drop (call $r (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (i32.store (i32.const 4) (i32.load (i32.const 8)))
        (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
    let mut config = fresh();
    config.stdout = Output::Capture;
    let mut f = Faaslet::new(engine(), &wat_module(m), config).unwrap();
    assert_eq!(f.call(b"first input").unwrap().stdout, b"first input");
    assert_eq!(f.call(b"second").unwrap().stdout, b"second");
    assert_eq!(f.call(b"").unwrap().stdout, b"");
}

/// `faaslet run --env NAME=VALUE` reaches the guest's environment, and a
/// malformed flag is a usage error.
#[test]
fn cli_passes_environment_variables() {
    let bin = faaslet_bin();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-env");
    std::fs::create_dir_all(&dir).unwrap();
    let wat = dir.join("env.wat");
    // Writes its whole environment block ("K=V\0...") to stdout.
    std::fs::write(
        &wat,
        r#"(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (drop (call $get (i32.const 64) (i32.const 1024)))
    (i32.store (i32.const 16) (i32.const 1024))
    (i32.store (i32.const 20) (i32.load (i32.const 4)))
    (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))"#,
    )
    .unwrap();
    let out = Command::new(&bin)
        .args(["run", "--env", "GREETING=hola", "--env", "EMPTY="])
        .arg(&wat)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"GREETING=hola\0EMPTY=\0");
    let bad = Command::new(&bin)
        .args(["run", "--env", "=x"])
        .arg(&wat)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad --env"));
}

// ------------------------------------------------------- state limits

/// Resident memory of this process, from /proc/self/statm.
fn resident_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn declared_state_sizes_count_against_the_quota() {
    // 30 keys ("k" + one byte), each declaring a total length of 1 GiB.
    let m = wat(r#"
      (data (i32.const 200) "k\00\00")
      (func (export "main") (result i32)
        (local $i i32)
        (loop $l
          (i32.store8 (i32.const 201) (i32.add (i32.const 65) (local.get $i)))
          (call $write_state_offset (i32.const 200) (i32.const 1073741824)
                (i32.const 0) (i32.const 64) (i32.const 4))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 30))))
        i32.const 0)
    "#);
    let config = fresh();
    let state = config.state.clone();
    let msg = trap_message(run_wat(&m, b"", config));
    assert!(msg.contains("__faasm_write_state_offset"), "{msg}");
    assert!(msg.contains("limit: state quota"), "{msg}");
    // The first key took the whole quota, sparsely: nothing near 1 GiB is resident.
    assert_eq!(state.value("default", "kA").unwrap().len(), 1 << 30);
    let rss = resident_bytes();
    assert!(rss < 512 << 20, "resident {rss} bytes");
}

#[test]
fn state_is_namespaced_by_user() {
    let m = wat(r#"
      (func (export "main") (result i32)
        (call $write_state (i32.const 0) (i32.const 64) (call $read_input (i32.const 100) (i32.const 10)))
        i32.const 0)
    "#);
    let mut alice = fresh();
    alice.user = "alice".into();
    let mut bob = alice.clone();
    bob.user = "bob".into();
    run_wat(&m, b"0123", alice.clone()).unwrap();
    run_wat(&m, b"01", bob).unwrap();
    let s = &alice.state;
    assert_eq!(s.value("alice", "key").unwrap().len(), 4);
    assert_eq!(s.value("bob", "key").unwrap().len(), 2);
    assert_eq!(s.value("default", "key").unwrap().len(), 0);
}
