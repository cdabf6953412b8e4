//! Compilation in a child process, within a time and a memory budget.
//!
//! An uploaded module is attacker-written, and compiling it is the one
//! step of an upload whose cost the module chooses: a single function of a
//! million nested loops (3 MB of wasm) needs more than 4 GiB and minutes
//! to compile, a 1 MB chain of multiplies 600 MB. The engine's own time
//! budget ([`Module::from_binary_with_artifact_within`]) is checked only
//! between functions, and nothing in a process can take memory back from
//! a compilation that is still allocating. So the worker compiles
//! uploads in a child process ([`CompileChild`]) that it can stop:
//!
//! * **memory**: the child limits its own data segment with
//!   `RLIMIT_DATA` (which since Linux 4.7 counts every private writable
//!   mapping, heap and anonymous `mmap` alike, but not the address space
//!   merely reserved) before it reads the module; past it an allocation
//!   fails, the child aborts and the upload is refused with a
//!   [`CompileErrorKind::Budget`] error naming the memory budget;
//! * **time**: the parent kills the child at the time budget, even in
//!   the middle of one function, and the error names the time budget.
//!
//! The child is the worker's own program run with [`CHILD_ARG`] (the CLI's
//! hidden `faaslet __compile-child`), the engine's configuration on its
//! command line ([`encode_config`]), the wasm on its stdin; it writes the
//! artefact ([`Module::from_binary_with_artifact`]) on its stdout. The
//! parent loads the artefact with [`Module::from_artifact`], which checks
//! that it was made from exactly this wasm by an engine configured like
//! its own, so a child that misunderstood the configuration produces an
//! error, never code compiled for another sandbox.
//!
//! Spawning the child costs about 2–5 ms, which only compilations pay: a
//! module found in the code cache is loaded in the worker itself.
//!
//! ```no_run
//! use faaslet::Engine;
//! use faaslet_platform::compile_child::CompileChild;
//! use std::time::Duration;
//!
//! let engine = Engine::default();
//! let child = CompileChild::new(std::env::current_exe().unwrap(), Duration::from_secs(30), 1 << 30);
//! let wasm = faaslet::wat_to_wasm("(module (func (export \"f\")))").unwrap();
//! let artifact = child.compile(&engine, &wasm).unwrap();
//! let module = faaslet::Module::from_artifact(&engine, &wasm, &artifact).unwrap();
//! # let _ = module;
//! ```

use faaslet::{Bounds, CompileError, CompileErrorKind, Config, Engine, Error, Module};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The first argument that makes a worker's program a compile child (the
/// CLI dispatches it to [`child_main`]).
pub const CHILD_ARG: &str = "__compile-child";

/// Exit status of a child whose module failed to compile (its stderr then
/// holds the error: see [`child_main`]).
const EXIT_COMPILE_ERROR: i32 = 3;
/// Exit status of a child that could not do its job (bad arguments,
/// stdin or stdout failed, the limit could not be set).
const EXIT_USAGE: i32 = 2;

/// Most bytes of stderr the parent keeps from a child, for its error.
const STDERR_KEEP: u64 = 16 * 1024;

/// How the worker compiles modules in a child process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileChild {
    /// The program to run; it must dispatch [`CHILD_ARG`] to
    /// [`child_main`] (the `faaslet` CLI does).
    pub program: PathBuf,
    /// Longest a compilation may take; the child is killed then.
    pub time: Duration,
    /// Most bytes of data (heap and anonymous mappings) the child may
    /// hold while compiling.
    pub memory: u64,
}

impl CompileChild {
    /// Compiles with `program` within `time` and `memory` bytes.
    pub fn new(program: impl Into<PathBuf>, time: Duration, memory: u64) -> CompileChild {
        CompileChild {
            program: program.into(),
            time,
            memory,
        }
    }

    /// Compiles `wasm` (a binary module) for `engine` in a child process,
    /// returning the artefact (load it with [`Module::from_artifact`]).
    ///
    /// A module the engine refuses is the same [`Error::Compile`] the
    /// engine would return; a compilation past a budget is a compile
    /// error of kind [`CompileErrorKind::Budget`] naming the budget; a
    /// child that cannot be started or dies otherwise is
    /// [`Error::Resource`].
    pub fn compile(&self, engine: &Engine, wasm: &[u8]) -> Result<Vec<u8>, Error> {
        let start = Instant::now();
        let mut child = Command::new(&self.program)
            .arg(CHILD_ARG)
            .arg(encode_config(engine.config()))
            .arg(self.memory.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::Resource(format!(
                    "cannot start the compile process {}: {e}",
                    self.program.display()
                ))
            })?;
        // Both pipes are drained on threads of their own, so neither a
        // large artefact nor a chatty child can block on a full pipe while
        // this thread waits for its exit.
        let stdout = child.stdout.take().map(|mut out| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                out.read_to_end(&mut v).map(|_| v)
            })
        });
        let stderr = child.stderr.take().map(|err| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = err.take(STDERR_KEEP).read_to_end(&mut v);
                String::from_utf8_lossy(&v).into_owned()
            })
        });
        // The child reads all of stdin before it writes anything, so this
        // cannot deadlock; a child that died early makes it fail, and its
        // exit status says why.
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(wasm);
        }
        let status = wait_within(&mut child, self.time.saturating_sub(start.elapsed()));
        let out = stdout.and_then(|t| t.join().ok()).and_then(Result::ok);
        let err = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
        let status = match status {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(budget_error(format!(
                "compilation ran past its time budget of {:?} (the compile process was stopped)",
                self.time
            )))
            }
            Err(e) => return Err(Error::Resource(format!("compile process: {e}"))),
        };
        if status.success() {
            return out.ok_or_else(|| {
                Error::Resource("compile process: its artefact could not be read".into())
            });
        }
        if status.code() == Some(EXIT_COMPILE_ERROR) {
            if let Some(e) = parse_compile_error(&err) {
                return Err(Error::Compile(e));
            }
        }
        // An allocation refused by RLIMIT_DATA aborts the child (Rust's
        // allocation-failure handler) with this message on stderr.
        if err.contains("memory allocation of") || err.contains("out of memory") {
            return Err(budget_error(format!(
                "compilation needed more than its memory budget of {} MiB",
                self.memory >> 20
            )));
        }
        Err(Error::Resource(format!(
            "compile process failed ({}): {}",
            describe_status(&status),
            err.trim().lines().last().unwrap_or("no message")
        )))
    }
}

fn budget_error(message: String) -> Error {
    Error::Compile(CompileError {
        kind: CompileErrorKind::Budget,
        message,
        section: None,
        func_index: None,
        offset: None,
    })
}

fn describe_status(s: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => s.to_string(),
    }
}

/// Waits for `child` at most `limit`; `Ok(None)` (the child killed and
/// reaped) if it had not exited by then.
fn wait_within(
    child: &mut std::process::Child,
    limit: Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + limit;
    // Short sleeps first: most compilations take milliseconds.
    let mut nap = Duration::from_micros(200);
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(nap.min(deadline - now));
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}

/// The child's way of reporting a compile error on stderr: one line,
/// `faaslet-compile-error\tKIND\tFUNC\tOFFSET\tMESSAGE` (FUNC and OFFSET
/// `-` when unknown).
const ERROR_TAG: &str = "faaslet-compile-error";

fn kind_name(k: CompileErrorKind) -> &'static str {
    match k {
        CompileErrorKind::Malformed => "malformed",
        CompileErrorKind::Invalid => "invalid",
        CompileErrorKind::Unsupported => "unsupported",
        CompileErrorKind::Codegen => "codegen",
        CompileErrorKind::Budget => "budget",
    }
}

fn format_compile_error(e: &CompileError) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    format!(
        "{ERROR_TAG}\t{}\t{}\t{}\t{}",
        kind_name(e.kind),
        opt(e.func_index.map(|v| v.to_string())),
        opt(e.offset.map(|v| v.to_string())),
        e.message.replace(['\n', '\t'], " ")
    )
}

fn parse_compile_error(stderr: &str) -> Option<CompileError> {
    let line = stderr.lines().find(|l| l.starts_with(ERROR_TAG))?;
    let mut parts = line.splitn(5, '\t').skip(1);
    let kind = match parts.next()? {
        "malformed" => CompileErrorKind::Malformed,
        "invalid" => CompileErrorKind::Invalid,
        "unsupported" => CompileErrorKind::Unsupported,
        "codegen" => CompileErrorKind::Codegen,
        "budget" => CompileErrorKind::Budget,
        _ => return None,
    };
    let func_index = parts.next()?.parse().ok();
    let offset = parts.next()?.parse().ok();
    Some(CompileError {
        kind,
        message: parts.next()?.to_string(),
        // The section is a `&'static str` the child cannot send: the
        // function index and offset locate the error.
        section: None,
        func_index,
        offset,
    })
}

/// The code-changing part of `config`, as one command-line argument
/// (`key=value` pairs separated by commas), for [`decode_config`].
///
/// Every field is named here (the destructuring lists them all), so a
/// field added to [`Config`] does not compile until it is encoded or
/// deliberately left out.
pub fn encode_config(config: &Config) -> String {
    let Config {
        bounds,
        max_wasm_stack,
        epoch_interruption,
        signal_interruption,
        optimize,
        explicit_reservation_cap,
        max_table_elements,
        explicit_canaries,
        wasm_multi_memory,
        spectre_guard,
        wasm_relaxed_simd,
        wasm_function_references,
        wasm_memory64,
        wasm_exceptions,
        wasm_gc,
        // Limits of stores; compiling creates none.
        store_limits: _,
    } = config;
    let bounds = match bounds {
        Bounds::GuardPages { guard_size } => format!("guard:{guard_size}"),
        Bounds::Explicit => "explicit".into(),
    };
    format!(
        "bounds={bounds},max_wasm_stack={max_wasm_stack},epoch_interruption={epoch_interruption},\
         signal_interruption={signal_interruption},\
         optimize={optimize},explicit_reservation_cap={explicit_reservation_cap},\
         max_table_elements={max_table_elements},explicit_canaries={explicit_canaries},\
         wasm_multi_memory={wasm_multi_memory},spectre_guard={spectre_guard},\
         wasm_relaxed_simd={wasm_relaxed_simd},wasm_function_references={wasm_function_references},\
         wasm_memory64={wasm_memory64},wasm_exceptions={wasm_exceptions},wasm_gc={wasm_gc}"
    )
}

/// The [`Config`] [`encode_config`] encoded (other fields default), or
/// what is wrong with `text`.
pub fn decode_config(text: &str) -> Result<Config, String> {
    let mut c = Config::default();
    for pair in text.split(',') {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("not key=value: {pair:?}"))?;
        let flag = || -> Result<bool, String> {
            v.parse().map_err(|_| format!("{k}: not true/false: {v:?}"))
        };
        let num = || -> Result<u64, String> {
            v.parse().map_err(|_| format!("{k}: not a number: {v:?}"))
        };
        match k {
            "bounds" => {
                c.bounds = match v.strip_prefix("guard:") {
                    Some(g) => Bounds::GuardPages {
                        guard_size: g.parse().map_err(|_| format!("bad guard size {g:?}"))?,
                    },
                    None if v == "explicit" => Bounds::Explicit,
                    None => return Err(format!("unknown bounds mode {v:?}")),
                }
            }
            "max_wasm_stack" => {
                c.max_wasm_stack = usize::try_from(num()?).map_err(|e| e.to_string())?
            }
            "epoch_interruption" => c.epoch_interruption = flag()?,
            "signal_interruption" => c.signal_interruption = flag()?,
            "optimize" => c.optimize = flag()?,
            "explicit_reservation_cap" => c.explicit_reservation_cap = num()?,
            "max_table_elements" => c.max_table_elements = num()?,
            "explicit_canaries" => c.explicit_canaries = flag()?,
            "wasm_multi_memory" => c.wasm_multi_memory = flag()?,
            "spectre_guard" => c.spectre_guard = flag()?,
            "wasm_relaxed_simd" => c.wasm_relaxed_simd = flag()?,
            "wasm_function_references" => c.wasm_function_references = flag()?,
            "wasm_memory64" => c.wasm_memory64 = flag()?,
            "wasm_exceptions" => c.wasm_exceptions = flag()?,
            "wasm_gc" => c.wasm_gc = flag()?,
            _ => return Err(format!("unknown configuration key {k:?}")),
        }
    }
    Ok(c)
}

/// The compile child: `args` are what follows [`CHILD_ARG`] (the encoded
/// configuration and the memory budget in bytes). Reads the wasm from
/// stdin, writes the artefact to stdout; returns the exit status.
pub fn child_main(args: &[String]) -> i32 {
    let [config, memory] = args else {
        eprintln!("usage: {CHILD_ARG} CONFIG MEMORY_BYTES < module.wasm > module.code");
        return EXIT_USAGE;
    };
    let config = match decode_config(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{CHILD_ARG}: bad configuration: {e}");
            return EXIT_USAGE;
        }
    };
    let Ok(memory) = memory.parse::<u64>() else {
        eprintln!("{CHILD_ARG}: bad memory budget {memory:?}");
        return EXIT_USAGE;
    };
    if let Err(e) = limit_self(memory) {
        eprintln!("{CHILD_ARG}: cannot set the memory budget: {e}");
        return EXIT_USAGE;
    }
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut wasm) {
        eprintln!("{CHILD_ARG}: cannot read the module: {e}");
        return EXIT_USAGE;
    }
    let engine = match Engine::new(&config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{CHILD_ARG}: {e}");
            return EXIT_USAGE;
        }
    };
    match Module::from_binary_with_artifact(&engine, &wasm) {
        Ok((_, Ok(artifact))) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(&artifact).and_then(|()| out.flush()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("{CHILD_ARG}: cannot write the artefact: {e}");
                    EXIT_USAGE
                }
            }
        }
        Ok((_, Err(e))) => {
            eprintln!("{CHILD_ARG}: no artefact: {e}");
            EXIT_USAGE
        }
        Err(Error::Compile(e)) => {
            eprintln!("{}", format_compile_error(&e));
            EXIT_COMPILE_ERROR
        }
        Err(e) => {
            eprintln!("{CHILD_ARG}: {e}");
            EXIT_USAGE
        }
    }
}

/// Limits this process's data to `bytes` and turns off core dumps (an
/// allocation past the limit aborts, and a core of a compiler that hit
/// its budget is of no use to anyone).
fn limit_self(bytes: u64) -> std::io::Result<()> {
    let set = |resource, value: u64| {
        let lim = libc::rlimit {
            rlim_cur: value as libc::rlim_t,
            rlim_max: value as libc::rlim_t,
        };
        // SAFETY: setrlimit reads the struct we pass; no memory is shared.
        if unsafe { libc::setrlimit(resource, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    set(libc::RLIMIT_CORE, 0)?;
    set(libc::RLIMIT_DATA, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips() {
        let c = Config {
            bounds: Bounds::Explicit,
            spectre_guard: false,
            epoch_interruption: true,
            wasm_memory64: false,
            wasm_gc: false,
            max_wasm_stack: 123_456,
            ..Config::default()
        };
        let back = decode_config(&encode_config(&c)).unwrap();
        assert!(!back.wasm_gc);
        assert_eq!(encode_config(&back), encode_config(&c));
        let engine_a = Engine::new(&c).unwrap();
        let engine_b = Engine::new(&back).unwrap();
        assert_eq!(
            engine_a.artifact_key(b"\0asm\x01\0\0\0"),
            engine_b.artifact_key(b"\0asm\x01\0\0\0")
        );
        let d = Config::default();
        assert_eq!(
            encode_config(&decode_config(&encode_config(&d)).unwrap()),
            encode_config(&d)
        );
    }

    #[test]
    fn bad_configs_are_refused_by_name() {
        assert!(decode_config("bounds=sideways")
            .unwrap_err()
            .contains("sideways"));
        assert!(decode_config("colour=blue").unwrap_err().contains("colour"));
        assert!(decode_config("optimize=maybe")
            .unwrap_err()
            .contains("optimize"));
    }

    #[test]
    fn compile_errors_cross_the_pipe() {
        let e = CompileError {
            kind: CompileErrorKind::Invalid,
            message: "type mismatch:\texpected i32".into(),
            section: Some("code"),
            func_index: Some(7),
            offset: Some(42),
        };
        let back = parse_compile_error(&format!("noise\n{}\n", format_compile_error(&e))).unwrap();
        assert_eq!(back.kind, CompileErrorKind::Invalid);
        assert_eq!(back.func_index, Some(7));
        assert_eq!(back.offset, Some(42));
        assert_eq!(back.message, "type mismatch: expected i32");
        assert!(parse_compile_error("faaslet-compile-error\tnonsense\t-\t-\tx").is_none());
    }
}
