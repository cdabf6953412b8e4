//! Proto-Faaslets of unmodified programs, taken where the program first
//! reads its input.
//!
//! A WASI command (CPython, QuickJS, any `main` that reads stdin)
//! initialises itself inside `_start` and then reads its input; there is no
//! export to call "after initialisation", so a snapshot taken after an
//! init export (what [`Faaslet::snapshot`](crate::Faaslet::snapshot) does)
//! captures nothing useful. Here the program runs until its first read of
//! standard input (`fd_read` of descriptor 0) and is captured *there*, in
//! the middle of `_start`; every call then resumes from that point with its
//! own input.
//!
//! # Why asyncify
//!
//! At that point the program's call stack is on the native stack of the
//! thread running it, in frames of our JIT's code that point at this
//! store's context, its other frames and return addresses: none of it can
//! be copied into another store. So the stack has to move into linear
//! memory first, where a snapshot captures it like any other data.
//! Binaryen's asyncify transform (`wasm-opt --asyncify`, Debian package
//! `binaryen`) does exactly that, in the module itself: every function that
//! may be on the stack when an input import is called learns to save its
//! locals and position into a buffer and return ("unwind"), and to come
//! back to the same position from the buffer ("rewind"). The transform is
//! limited to functions that can reach an input import
//! ([`INPUT_IMPORTS`]), and is done once per module (the result is cached
//! like any upload).
//!
//! "Can reach" counts indirect calls, which may reach anything: in an
//! interpreter that reads its input under its own loop (CPython's
//! `sys.stdin.read()`) that is nearly every function, and each
//! instrumented call site costs a check on every call. A program that
//! knows its path to the read can say so: a custom section
//! [`ONLYLIST_SECTION`] holding the comma-separated names (from its name
//! section) of the functions on that path makes the transform instrument
//! those alone. Our QuickJS driver reads stdin in `main` before running
//! the script and names `main`'s path, so its interpreter runs
//! untransformed (`sdk/js/qjs-faaslet.c`). A listed name the module does
//! not have fails the transform ([`AtInputError::Asyncify`] naming it). A
//! list that leaves out a function that *is* on the path at the read makes
//! the unwind go wrong inside the program's own sandbox, like any other
//! bug of the program: the host only ever sees guest memory. Capturing our own JIT frames instead would tie a
//! snapshot to one process, one store and one code address layout; an
//! asyncified module's snapshot is a plain Proto-Faaslet, restorable in any
//! store, saved to a file, shipped to another worker.
//!
//! The protocol, with the `asyncify_*` exports the transform adds:
//!
//! 1. **Capture.** The program runs with an empty stdin. At its first
//!    `fd_read(0, ...)` the host grows memory by [`BUFFER_PAGES`], writes
//!    asyncify's two-word header (where the saved stack starts and ends)
//!    there, calls `asyncify_start_unwind` and returns: the instrumented
//!    code unwinds every frame into the buffer and `_start` returns to the
//!    host, which calls `asyncify_stop_unwind` and captures the instance.
//!    Whatever the program wrote to stdout or stderr before is kept and
//!    given back at the start of every call's output, as a fresh run
//!    would write it.
//! 2. **Resume.** Each call restores the instance, calls
//!    `asyncify_start_rewind(buffer)` and `_start`: the code rewinds
//!    straight to the `fd_read` it was in, which the host now answers by
//!    calling `asyncify_stop_rewind` and reading the call's own input.
//!
//! What a fresh run does before its first read and a resumed one does not
//! do again: side effects outside the sandbox (files written to host
//! mounts), and host state other than the standard streams and the
//! preopened directories (a file the program opened before reading stdin
//! is not open in the resumed call). The clock and random numbers read
//! before the first input are those of the capture.

use crate::error::FaasletError;
use faaslet::{Caller, Trap, Val};
use std::path::Path;
use std::process::Command;

/// The imports whose first call is the "first read of input": WASI's
/// `fd_read` (descriptor 0 only triggers the capture).
pub const INPUT_IMPORTS: [&str; 1] = ["wasi_snapshot_preview1.fd_read"];

/// The custom section in which a module names the functions on its path
/// to the input read (comma-separated names from its name section; see the
/// [module docs](self)). Its names may use only `A-Za-z0-9_.$-` and `*`
/// (binaryen's wildcard), so nothing in it reaches `wasm-opt` as an option
/// or a file name (binaryen reads a list from the file `@NAME`).
pub const ONLYLIST_SECTION: &str = "faaslet.asyncify-onlylist";

/// The most names [`ONLYLIST_SECTION`] may hold, and its longest length.
const ONLYLIST_MAX_NAMES: usize = 1024;
const ONLYLIST_MAX_BYTES: usize = 64 << 10;

/// The functions `wasm` names in its [`ONLYLIST_SECTION`], checked, or
/// `None` without one (every function that may reach an input import is
/// then instrumented).
pub fn asyncify_onlylist(wasm: &[u8]) -> Result<Option<Vec<String>>, AtInputError> {
    let bad = |m: String| AtInputError::Asyncify(format!("custom section {ONLYLIST_SECTION}: {m}"));
    let mut found: Option<&[u8]> = None;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| AtInputError::Asyncify(format!("not a module: {e}")))?;
        if let wasmparser::Payload::CustomSection(c) = payload {
            if c.name() == ONLYLIST_SECTION {
                if found.is_some() {
                    return Err(bad("appears twice".into()));
                }
                found = Some(c.data());
            }
        }
    }
    let Some(data) = found else {
        return Ok(None);
    };
    if data.len() > ONLYLIST_MAX_BYTES {
        return Err(bad(format!(
            "{} bytes, more than the {ONLYLIST_MAX_BYTES} allowed",
            data.len()
        )));
    }
    let text = std::str::from_utf8(data).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    let names: Vec<String> = text.split(',').map(|n| n.trim().to_string()).collect();
    if names.len() > ONLYLIST_MAX_NAMES {
        return Err(bad(format!(
            "{} names, more than the {ONLYLIST_MAX_NAMES} allowed",
            names.len()
        )));
    }
    for n in &names {
        let ok = !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.$-*".contains(c));
        if !ok {
            return Err(bad(format!(
                "{n:?} is not a function name (only A-Za-z0-9_.$-* are allowed)"
            )));
        }
    }
    Ok(Some(names))
}

/// Pages of linear memory added at the capture to hold the unwound stack
/// (1 MiB: CPython at its first `sys.stdin.read()` needs about 20 KB).
pub const BUFFER_PAGES: u64 = 16;

/// Bytes in a wasm page.
const PAGE: u64 = 65536;

/// Where a program was captured: what a resumed call needs besides the
/// snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPoint {
    /// Guest address of asyncify's data structure (the saved stack).
    pub buffer: u32,
    /// What the program wrote to stdout before its first read.
    pub stdout: Vec<u8>,
    /// What it wrote to stderr before its first read.
    pub stderr: Vec<u8>,
}

impl InputPoint {
    /// The point as bytes (for saving beside the snapshot): the buffer
    /// address, then the lengths and bytes of stdout and stderr, all
    /// little endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(12 + self.stdout.len() + self.stderr.len());
        v.extend_from_slice(&self.buffer.to_le_bytes());
        for s in [&self.stdout, &self.stderr] {
            v.extend_from_slice(&(s.len() as u32).to_le_bytes());
            v.extend_from_slice(s);
        }
        v
    }

    /// Reads what [`to_bytes`](Self::to_bytes) wrote; `None` if it does
    /// not parse.
    pub fn from_bytes(b: &[u8]) -> Option<InputPoint> {
        let word = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
        };
        let buffer = word(0)?;
        let n = word(4)? as usize;
        let stdout = b.get(8..8usize.checked_add(n)?)?.to_vec();
        let at = 8 + n;
        let m = word(at)? as usize;
        let stderr = b.get(at + 4..(at + 4).checked_add(m)?)?.to_vec();
        (b.len() == at + 4 + m).then_some(InputPoint {
            buffer,
            stdout,
            stderr,
        })
    }
}

/// The files of an at-input snapshot saved beside `snap` (the snapshot
/// itself, written with [`Snapshot::save`](faaslet_snapshot::Snapshot::save)):
/// `SNAP.wasm`, the asyncified module the snapshot belongs to, and
/// `SNAP.atinput`, the SHA-256 (hex) of the module it was made from, a
/// newline, then the [`InputPoint`] bytes.
pub fn sidecar_paths(snap: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let with = |ext: &str| {
        let mut name = snap.as_os_str().to_owned();
        name.push(ext);
        std::path::PathBuf::from(name)
    };
    (with(".wasm"), with(".atinput"))
}

/// Writes the sidecar files of an at-input snapshot (see
/// [`sidecar_paths`]): `transformed` is the asyncified module, `original`
/// the module it was made from.
pub fn save_sidecars(
    snap: &Path,
    original: &[u8],
    transformed: &[u8],
    point: &InputPoint,
) -> std::io::Result<()> {
    let (wasm, meta) = sidecar_paths(snap);
    std::fs::write(&wasm, transformed)?;
    let mut m = sha256_hex(original).into_bytes();
    m.push(b'\n');
    m.extend_from_slice(&point.to_bytes());
    std::fs::write(meta, m)
}

/// Reads the sidecars of the at-input snapshot `snap`, if it is one:
/// `Ok(None)` for a plain snapshot; the asyncified module's bytes and the
/// point otherwise. `original` must be the module the snapshot was made
/// from (its hash is checked).
pub fn load_sidecars(
    snap: &Path,
    original: &[u8],
) -> Result<Option<(Vec<u8>, InputPoint)>, String> {
    let (wasm, meta) = sidecar_paths(snap);
    let m = match std::fs::read(&meta) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", meta.display())),
    };
    let bad = || {
        format!(
            "{}: damaged (not an at-input snapshot's sidecar)",
            meta.display()
        )
    };
    let nl = m.iter().position(|&b| b == b'\n').ok_or_else(bad)?;
    if m[..nl] != *sha256_hex(original).as_bytes() {
        return Err(format!(
            "{} was taken from another module than the one given",
            snap.display()
        ));
    }
    let point = InputPoint::from_bytes(&m[nl + 1..]).ok_or_else(bad)?;
    let module = std::fs::read(&wasm).map_err(|e| format!("{}: {e}", wasm.display()))?;
    Ok(Some((module, point)))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the host does at a store's first read of stdin.
#[derive(Debug, Clone, Default)]
pub enum AtInput {
    /// Nothing special.
    #[default]
    Off,
    /// Capturing: unwind at the first read; `Some(buffer)` once done.
    Capture(Option<u32>),
    /// Resuming: the first read ends the rewind (then reads for real).
    Resume,
}

/// Why a program could not be captured at its first input read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AtInputError {
    /// `wasm-opt` (binaryen) is not installed or failed.
    #[error("the asyncify transform failed: {0}")]
    Asyncify(String),
    /// The module does not import `fd_read`, so it never reads stdin.
    #[error("the program never reads its input (it imports no fd_read): snapshot it with an init export instead, or run it from the start")]
    NoInputImport,
    /// The program ended without reading stdin.
    #[error("the program ended (exit code {0}) before reading its input: nothing to resume, run it from the start")]
    EndedFirst(i32),
    /// Running it up to the read failed.
    #[error("running the program up to its first input read: {0}")]
    Faaslet(#[from] FaasletError),
}

/// `wasm` transformed by `wasm-opt --asyncify` for [`INPUT_IMPORTS`]
/// (binaryen must be installed: `apt-get install binaryen`), limited to
/// the functions its [`ONLYLIST_SECTION`] names if it has one. Slow for a
/// large module (CPython: about 90 s and 1.2 GB): cache the result.
pub fn asyncify(wasm: &[u8], scratch: &Path) -> Result<Vec<u8>, AtInputError> {
    let fail = |m: String| AtInputError::Asyncify(m);
    let onlylist = asyncify_onlylist(wasm)?;
    std::fs::create_dir_all(scratch).map_err(|e| fail(format!("{}: {e}", scratch.display())))?;
    let tag = format!("{}-{:?}", std::process::id(), std::thread::current().id())
        .replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let input = scratch.join(format!("asyncify-in-{tag}.wasm"));
    let output = scratch.join(format!("asyncify-out-{tag}.wasm"));
    std::fs::write(&input, wasm).map_err(|e| fail(format!("{}: {e}", input.display())))?;
    let run = Command::new("wasm-opt")
        .arg(&input)
        .arg("--asyncify")
        .arg(format!(
            "--pass-arg=asyncify-imports@{}",
            INPUT_IMPORTS.join(",")
        ))
        .args(
            onlylist
                .iter()
                .map(|names| format!("--pass-arg=asyncify-onlylist@{}", names.join(","))),
        )
        .args([
            "-O1",
            "--enable-bulk-memory",
            "--enable-sign-ext",
            "--enable-mutable-globals",
        ])
        .args(["--enable-nontrapping-float-to-int", "--enable-simd", "-o"])
        .arg(&output)
        .output();
    let _ = std::fs::remove_file(&input);
    let out = run.map_err(|e| {
        fail(format!(
            "cannot run wasm-opt (apt-get install binaryen): {e}"
        ))
    })?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&output);
        return Err(fail(format!(
            "wasm-opt: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // binaryen only warns about a listed name the module does not have
    // ("Asyncify onlylist contained a non-existing function name"); the
    // function that name meant would then run uninstrumented on the path
    // to the read, so that is an error here.
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(line) = stderr.lines().find(|l| l.contains("non-existing function")) {
        let _ = std::fs::remove_file(&output);
        return Err(fail(format!(
            "the module's {ONLYLIST_SECTION} names a function it does not have: {}",
            line.trim()
        )));
    }
    let bytes = std::fs::read(&output).map_err(|e| fail(format!("{}: {e}", output.display())));
    let _ = std::fs::remove_file(&output);
    bytes
}

/// The export `name` of the calling instance, as a function.
fn export(c: &mut Caller<'_, impl Sized>, name: &str) -> Result<faaslet::Func, Trap> {
    c.get_export(name)
        .and_then(|e| e.into_func())
        .ok_or_else(|| {
            Trap::host(format!(
                "at-input: the module does not export {name} (not asyncified?)"
            ))
        })
}

/// The capture, inside the first `fd_read(0)`: grows memory for the saved
/// stack, writes asyncify's header and starts the unwind. Returns the
/// buffer's address.
pub(crate) fn start_unwind(c: &mut Caller<'_, impl Sized>) -> Result<u32, Trap> {
    let mem = c
        .memory()
        .ok_or_else(|| Trap::host("at-input: the module has no memory"))?;
    let pages = c
        .grow_memory(mem, BUFFER_PAGES)
        .ok_or_else(|| Trap::host("at-input: no memory left for the saved stack"))?;
    let start = u32::try_from(pages * PAGE)
        .map_err(|_| Trap::host("at-input: the saved stack would lie past 4 GiB"))?;
    let end = start
        .checked_add((BUFFER_PAGES * PAGE) as u32)
        .ok_or_else(|| Trap::host("at-input: the saved stack would lie past 4 GiB"))?;
    let (_, raw) = c.data_and_memory_raw();
    let (base, len) = raw.ok_or_else(|| Trap::host("at-input: the module has no memory"))?;
    if (end as usize) > len {
        return Err(Trap::host("at-input: the grown memory is not there"));
    }
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&(start + 8).to_le_bytes());
    header[4..].copy_from_slice(&end.to_le_bytes());
    // SAFETY: `base..base + len` is the calling instance's memory, mapped
    // read-write for this host call (see `Caller::data_and_memory_raw`),
    // and `start + 8 <= end <= len` (checked above).
    unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), base.add(start as usize), 8) };
    let f = export(c, "asyncify_start_unwind")?;
    c.call(f, &[Val::I32(start as i32)], &mut [])
        .map_err(|e| Trap::host(format!("at-input: asyncify_start_unwind: {e}")))?;
    Ok(start)
}

/// The resume, inside the first `fd_read(0)` of a resumed call: the rewind
/// has reached the read; end it so the read proceeds for real.
pub(crate) fn stop_rewind(c: &mut Caller<'_, impl Sized>) -> Result<(), Trap> {
    let f = export(c, "asyncify_stop_rewind")?;
    c.call(f, &[], &mut [])
        .map_err(|e| Trap::host(format!("at-input: asyncify_stop_rewind: {e}")))
}
