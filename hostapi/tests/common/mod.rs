//! Shared helpers: run a WASI guest in faaslet and collect its outcome.
#![allow(dead_code)]

use faaslet::{Engine, Linker, Module, Store};
use faaslet_hostapi::wasi::{Output, WasiCtx, WasiCtxBuilder};
use faaslet_platform::wasi::{self, WasiView};
use std::path::{Path, PathBuf};

pub struct Host {
    pub wasi: WasiCtx,
}

impl WasiView for Host {
    fn wasi(&mut self) -> &mut WasiCtx {
        &mut self.wasi
    }
}

/// What a guest run produced.
#[derive(Debug)]
pub struct Outcome {
    /// `Some(code)` from proc_exit (or 0 when `_start` returned), None on a trap.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub trap: Option<String>,
}

/// Runs `_start` of `wasm` (binary or text) with `builder`'s context,
/// capturing stdout and stderr.
pub fn run(wasm: impl AsRef<[u8]>, builder: WasiCtxBuilder) -> Outcome {
    let engine = Engine::default();
    let module = Module::new(&engine, wasm.as_ref()).expect("module compiles");
    let ctx = builder
        .stdout(Output::Capture)
        .stderr(Output::Capture)
        .build()
        .expect("wasi ctx");
    let mut linker = Linker::new(&engine);
    wasi::add_to_linker(&mut linker).unwrap();
    let mut store = Store::new(&engine, Host { wasi: ctx });
    let instance = linker
        .instantiate(&mut store, &module)
        .expect("instantiates");
    let start = instance
        .get_typed_func::<(), (), _>(&mut store, "_start")
        .expect("_start");
    let (code, trap) = match start.call(&mut store, ()) {
        Ok(()) => (Some(0), None),
        Err(t) => match wasi::exit_code(&t) {
            Some(c) => (Some(c), None),
            None => (None, Some(t.to_string())),
        },
    };
    let w = &mut store.data_mut().wasi;
    Outcome {
        code,
        stdout: String::from_utf8_lossy(&w.take_stdout()).into_owned(),
        stderr: String::from_utf8_lossy(&w.take_stderr()).into_owned(),
        trap,
    }
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "faaslet-wasi-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compiles a C file from tests/guests with clang for wasm32-wasi, or
/// returns None (printing why) when the toolchain is missing — unless
/// `FAASLET_REQUIRE_WASM_TARGETS` is set (as in CI), where that is a failure.
pub fn build_c(name: &str) -> Option<Vec<u8>> {
    let r = try_build_c(name);
    if r.is_none() && std::env::var_os("FAASLET_REQUIRE_WASM_TARGETS").is_some() {
        panic!("FAASLET_REQUIRE_WASM_TARGETS is set but {name} could not be built");
    }
    r
}

fn try_build_c(name: &str) -> Option<Vec<u8>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/guests")
        .join(name);
    let out = std::env::temp_dir().join(format!(
        "faaslet-wasi-{}-{}.wasm",
        name.trim_end_matches(".c"),
        std::process::id()
    ));
    let status = std::process::Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .output();
    match status {
        Ok(o) if o.status.success() => {
            let bytes = std::fs::read(&out).unwrap();
            let _ = std::fs::remove_file(&out);
            Some(bytes)
        }
        Ok(o) => {
            eprintln!(
                "SKIPPED: clang --target=wasm32-wasi failed (install clang lld wasi-libc libclang-rt-dev-wasm32):\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("SKIPPED: clang not found ({e}); install clang lld wasi-libc libclang-rt-dev-wasm32");
            None
        }
    }
}

/// Compiles a Rust file from tests/guests with `rustc --target
/// wasm32-wasip1`, or returns None (printing why) when that target is not
/// installed — unless `FAASLET_REQUIRE_WASM_TARGETS` is set.
pub fn build_rust(name: &str) -> Option<Vec<u8>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/guests")
        .join(name);
    let out = std::env::temp_dir().join(format!(
        "faaslet-wasi-{}-{}.wasm",
        name.trim_end_matches(".rs"),
        std::process::id()
    ));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let r = std::process::Command::new(rustc)
        .args(["--target", "wasm32-wasip1", "-O", "-o"])
        .arg(&out)
        .arg(&src)
        .output();
    let bytes = match r {
        Ok(o) if o.status.success() => {
            let b = std::fs::read(&out).ok();
            let _ = std::fs::remove_file(&out);
            b
        }
        Ok(o) => {
            eprintln!(
                "SKIPPED: rustc --target wasm32-wasip1 failed (run `rustup target add wasm32-wasip1`):\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("SKIPPED: rustc not runnable: {e}");
            None
        }
    };
    if bytes.is_none() && std::env::var_os("FAASLET_REQUIRE_WASM_TARGETS").is_some() {
        panic!("FAASLET_REQUIRE_WASM_TARGETS is set but {name} could not be built");
    }
    bytes
}
