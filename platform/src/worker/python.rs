//! Python functions: a script uploaded with `PUT /p/{user}/{function}` runs
//! in CPython (a WASI build of the interpreter, [`WorkerConfig::python`]),
//! and every call resumes a Proto-Faaslet of the interpreter captured where
//! the script first reads its input (see [`at_input`](crate::at_input)):
//! the interpreter has started and the script's imports have run.
//!
//! A call's input is the script's stdin and its output the script's
//! stdout; an uncaught exception (a nonzero exit) is a failed call whose
//! error carries the traceback ([`WorkerError::Exception`]). A script that
//! ends without reading stdin is captured nowhere: its calls run it from
//! the start (correct, only slower), and the upload says so in the log.
//!
//! The interpreter is prepared once per worker data directory: the
//! asyncify transform (about 90 s for CPython 3.12 on two cores) is kept as
//! `DATA/runtimes/python-{SHA-256 prefix}.wasm`, and its code in the code
//! cache, so a restart loads both. Functions are stored as
//! `DATA/functions/USER/FUNCTION.py` with their `.snap` and `.point`.
//!
//! [`WorkerConfig::python`]: super::WorkerConfig::python

use crate::at_input::{asyncify, AtInputError, InputPoint};
use crate::worker::cluster::{version_of, PYTHON_SUFFIX};
use crate::worker::core::{check_name, io_err, Function, Worker, WorkerError};
use crate::Faaslet;
use faaslet::Module;
use faaslet_snapshot::Snapshot;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

/// The program CPython runs (`python -c DRIVER SCRIPT`): it runs the
/// script as `python -c SCRIPT` would (`__name__ == "__main__"`,
/// `sys.argv == ["-c"]`, the same traceback and exit code for an uncaught
/// exception or `sys.exit`), then runs the `atexit` functions, flushes
/// stdout and stderr and leaves with `os._exit`. That skips the
/// interpreter's finalisation (tearing down every module and object),
/// which nothing outside can observe and which cost 9 of a no-op call's
/// 12 ms.
const DRIVER: &str = r#"import sys as _s, os as _o, atexit as _a
_src = _s.argv.pop(1)
def _run():
    g = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(_src, "<string>", "exec"), g)
        return 0
    except SystemExit as e:
        c = e.code
        if c is None:
            return 0
        if isinstance(c, int):
            return c
        print(c, file=_s.stderr)
        return 1
    except BaseException as e:
        import traceback
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        return 1
_c = _run()
_a._run_exitfuncs()
for _f in (_s.stdout, _s.stderr):
    try:
        _f.flush()
    except Exception:
        pass
_o._exit(_c & 0xFF)
"#;

/// `argv` after `python`: the driver, then the script.
fn python_args(script: &str) -> Vec<String> {
    vec!["-c".to_string(), DRIVER.to_string(), script.to_string()]
}

impl Worker {
    /// The interpreter Python functions run on: the configured CPython,
    /// asyncified (once: kept under `DATA/runtimes/`) and compiled (once:
    /// the code cache). Blocking, and slow the very first time.
    pub fn python_runtime(&self) -> Result<Module, WorkerError> {
        let mut slot = self.inner.python.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = &*slot {
            return Ok(m.clone());
        }
        let path = self.config().python.clone().ok_or_else(|| {
            WorkerError::Python(
                "this worker runs no Python functions (start it with --python PATH/python.wasm)"
                    .into(),
            )
        })?;
        let wasm = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        let dir = self.config().data.join("runtimes");
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let prepared = dir.join(format!("python-{}.wasm", &version_of(&wasm, false)[..16]));
        let bytes = match std::fs::read(&prepared) {
            Ok(b) => b,
            Err(_) => {
                tracing::info!(
                    "preparing {} for Python functions (asyncify: about a minute and a half, once)",
                    path.display()
                );
                let t = std::time::Instant::now();
                let b = asyncify(&wasm, &dir).map_err(|e| WorkerError::Python(e.to_string()))?;
                let tmp = prepared.with_extension("tmp");
                std::fs::write(&tmp, &b).map_err(|e| io_err(&tmp, e))?;
                std::fs::rename(&tmp, &prepared).map_err(|e| io_err(&prepared, e))?;
                tracing::info!("interpreter prepared in {:?}", t.elapsed());
                b
            }
        };
        // The operator's interpreter, not an upload: no compile budget.
        let module = self.module_within("python runtime", &bytes, None)?;
        *slot = Some(module.clone());
        Ok(module)
    }

    /// Uploads the Python script `script` as `user/function`: captures the
    /// interpreter at the script's first read of stdin (its imports done),
    /// stores the script, the snapshot and the point, and makes it
    /// callable. Blocking: call it on an executor thread.
    pub fn upload_python(
        &self,
        user: &str,
        function: &str,
        script: &[u8],
    ) -> Result<(), WorkerError> {
        self.install_python(user, function, script, true)
    }

    /// [`upload_python`](Self::upload_python), publishing it to the
    /// cluster only if `publish` (a function fetched from the cluster is
    /// not published again: that could overwrite a newer upload).
    pub(crate) fn install_python(
        &self,
        user: &str,
        function: &str,
        script: &[u8],
        publish: bool,
    ) -> Result<(), WorkerError> {
        check_name("user", user)?;
        check_name("function", function)?;
        let text = std::str::from_utf8(script)
            .map_err(|e| WorkerError::Python(format!("the script is not UTF-8: {e}")))?;
        if text.contains('\0') {
            return Err(WorkerError::Python("the script contains a NUL byte".into()));
        }
        let f = self.make_python(user, function, text)?;
        let dir = self.config().data.join("functions").join(user);
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let snap = dir.join(format!("{function}.snap"));
        let point = dir.join(format!("{function}.point"));
        let py = dir.join(format!("{function}.py"));
        let tmp = |p: &Path| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            p.with_file_name(format!(".{}.tmp", name.unwrap_or_default()))
        };
        f.snapshot.save(tmp(&snap)).map_err(|e| WorkerError::Io {
            path: snap.display().to_string(),
            message: e.to_string(),
        })?;
        match &f.resume {
            Some(p) => std::fs::write(tmp(&point), p.to_bytes()),
            None => std::fs::write(tmp(&point), b""),
        }
        .map_err(|e| io_err(&point, e))?;
        std::fs::write(tmp(&py), script).map_err(|e| io_err(&py, e))?;
        // The script last: reloading finds a script only with its files.
        for p in [&snap, &point, &py] {
            std::fs::rename(tmp(p), p).map_err(|e| io_err(p, e))?;
        }
        // A wasm function of the same name is replaced.
        let _ = std::fs::remove_file(dir.join(format!("{function}.wasm")));
        self.insert_function(user, function, f);
        if let Some(c) = self.cluster() {
            // Every worker of the cluster can call it now: each captures
            // its own Proto-Faaslet from the script on its first call.
            let name = format!("{user}/{function}");
            if publish {
                c.publish_python(&name, script)
                    .map_err(WorkerError::Cluster)?;
            }
            if let Err(e) = c.hold(std::slice::from_ref(&name)) {
                tracing::warn!("{name}: not added to its warm set: {e}");
            }
        }
        Ok(())
    }

    /// The function for `script`: the interpreter captured at the
    /// script's first read of stdin. A script that ends without reading
    /// stdin has no such point; its snapshot is then the interpreter
    /// before it starts, and every call runs it from the start.
    fn make_python(
        &self,
        user: &str,
        function: &str,
        script: &str,
    ) -> Result<Function, WorkerError> {
        let module = self.python_runtime()?;
        let args = python_args(script);
        let config = crate::FaasletConfig {
            args: args.clone(),
            ..self.faaslet_config(user, function)
        };
        let (snapshot, resume) = match Faaslet::snapshot_at_input(
            self.engine(),
            &module,
            config.clone(),
        ) {
            Ok((s, p)) => (s, Some(Arc::new(p))),
            Err(AtInputError::EndedFirst(code)) => {
                tracing::info!(
                        "{user}/{function}: the script ended (exit {code}) without reading stdin; its calls run it from the start"
                    );
                let s = Faaslet::snapshot(self.engine(), &module, config, None)
                    .map_err(WorkerError::Init)?;
                (s, None)
            }
            Err(AtInputError::Faaslet(e)) => return Err(WorkerError::Init(e)),
            Err(e) => return Err(WorkerError::Python(e.to_string())),
        };
        Ok(Function {
            version: format!("{}{PYTHON_SUFFIX}", version_of(script.as_bytes(), false)),
            idempotent: false,
            args,
            resume,
            script: true,
            restore_ns: AtomicU64::new(0),
            wasm: script.as_bytes().into(),
            snapshot,
            called: AtomicBool::new(false),
        })
    }

    /// Loads a stored Python function (`FUNCTION.py` with its `.snap` and
    /// `.point`), capturing it again if those do not load.
    pub(crate) fn load_python(
        &self,
        user: &str,
        function: &str,
        py: &Path,
    ) -> Result<Function, WorkerError> {
        let script = std::fs::read(py).map_err(|e| io_err(py, e))?;
        let text = String::from_utf8(script)
            .map_err(|e| WorkerError::Python(format!("{}: not UTF-8: {e}", py.display())))?;
        let module = self.python_runtime()?;
        let snap = Snapshot::load(&module, py.with_extension("snap"));
        let point = std::fs::read(py.with_extension("point")).ok();
        match (snap, point) {
            (Ok(snapshot), Some(p)) => {
                let resume = if p.is_empty() {
                    None
                } else {
                    Some(Arc::new(InputPoint::from_bytes(&p).ok_or_else(|| {
                        WorkerError::Python(format!(
                            "{}: damaged",
                            py.with_extension("point").display()
                        ))
                    })?))
                };
                Ok(Function {
                    version: format!("{}{PYTHON_SUFFIX}", version_of(text.as_bytes(), false)),
                    idempotent: false,
                    args: python_args(&text),
                    resume,
                    script: true,
                    restore_ns: AtomicU64::new(0),
                    wasm: text.as_bytes().into(),
                    snapshot,
                    called: AtomicBool::new(false),
                })
            }
            _ => {
                tracing::warn!("{user}/{function}: snapshot missing or stale; capturing it again");
                self.make_python(user, function, &text)
            }
        }
    }
}
