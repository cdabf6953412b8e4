//! Script functions: a script uploaded in a language whose interpreter is
//! an unmodified WASI command ([`Language`]: Python on CPython,
//! JavaScript on QuickJS), run by that interpreter, every call resumed
//! from a Proto-Faaslet captured where the script first reads its input
//! (see [`at_input`](crate::at_input)): the interpreter has started and
//! the script has run up to that read.
//!
//! A call's input is the script's stdin and its output the script's
//! stdout; an uncaught exception (a nonzero exit) is a failed call whose
//! error carries what the script wrote to stderr, the traceback or stack
//! ([`WorkerError::Exception`]). A script that ends without reading stdin
//! is captured nowhere: its calls run it from the start (correct, only
//! slower), and the upload says so in the log.
//!
//! Each interpreter is prepared once per worker data directory: the
//! asyncify transform (CPython 3.12: about 90 s on two cores; QuickJS:
//! about 35 s) is kept as `DATA/runtimes/{python,js}-{SHA-256 prefix}.wasm`,
//! and its code in the code cache, so a restart loads both. Functions are
//! stored as `DATA/functions/USER/FUNCTION.{py,js}` with their `.snap` and
//! `.point`. [`python`](super::python) and [`js`](super::js) describe each
//! language's functions and give their entry points.

use crate::at_input::{asyncify, AtInputError, InputPoint};
use crate::worker::cluster::{script_version, version_of};
use crate::worker::core::{
    check_name, io_err, remove_other_forms, Function, Worker, WorkerConfig, WorkerError,
};
use crate::worker::language::Language;
use crate::Faaslet;
use faaslet::Module;
use faaslet_snapshot::Snapshot;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

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

/// `argv` after the interpreter's name: the script's source itself.
fn js_args(script: &str) -> Vec<String> {
    vec![script.to_string()]
}

impl Language {
    /// `argv` after the interpreter's name that runs `script`.
    pub(crate) fn args(self, script: &str) -> Vec<String> {
        match self {
            Language::Python => python_args(script),
            Language::JavaScript => js_args(script),
        }
    }

    /// The error for "cannot run this language here".
    pub(crate) fn unavailable(self, message: String) -> WorkerError {
        match self {
            Language::Python => WorkerError::Python(message),
            Language::JavaScript => WorkerError::Js(message),
        }
    }

    /// The interpreter configured for it.
    fn interpreter(self, config: &WorkerConfig) -> Option<&PathBuf> {
        match self {
            Language::Python => config.python.as_ref(),
            Language::JavaScript => config.js.as_ref(),
        }
    }

    /// How to give a worker its interpreter (for error messages).
    fn how_to_configure(self) -> &'static str {
        match self {
            Language::Python => "--python PATH/python.wasm",
            Language::JavaScript => "--js PATH/qjs-faaslet.wasm (built by sdk/js/build.sh)",
        }
    }
}

impl Worker {
    fn runtime_slot(&self, language: Language) -> &Mutex<Option<Module>> {
        match language {
            Language::Python => &self.inner.python,
            Language::JavaScript => &self.inner.js,
        }
    }

    /// The interpreter `language`'s functions run on: the configured WASI
    /// command, asyncified (once: kept under `DATA/runtimes/`) and
    /// compiled (once: the code cache). Blocking, and slow the very first
    /// time.
    pub fn script_runtime(&self, language: Language) -> Result<Module, WorkerError> {
        let mut slot = self
            .runtime_slot(language)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(m) = &*slot {
            return Ok(m.clone());
        }
        let path = language
            .interpreter(self.config())
            .cloned()
            .ok_or_else(|| {
                language.unavailable(format!(
                    "this worker runs no {language} functions (start it with {})",
                    language.how_to_configure()
                ))
            })?;
        let wasm = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        let dir = self.config().data.join("runtimes");
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let prepared = dir.join(format!(
            "{}-{}.wasm",
            language.key(),
            &version_of(&wasm, false)[..16]
        ));
        let bytes = match std::fs::read(&prepared) {
            Ok(b) => b,
            Err(_) => {
                tracing::info!(
                    "preparing {} for {language} functions (asyncify: up to a minute or two, once)",
                    path.display()
                );
                let t = std::time::Instant::now();
                let b = asyncify(&wasm, &dir).map_err(|e| language.unavailable(e.to_string()))?;
                let tmp = prepared.with_extension("tmp");
                std::fs::write(&tmp, &b).map_err(|e| io_err(&tmp, e))?;
                std::fs::rename(&tmp, &prepared).map_err(|e| io_err(&prepared, e))?;
                tracing::info!("{language} interpreter prepared in {:?}", t.elapsed());
                b
            }
        };
        // The operator's interpreter, not an upload: no compile budget.
        let what = format!("{} runtime", language.key());
        let module = self.module_within(&what, &bytes, None)?;
        *slot = Some(module.clone());
        Ok(module)
    }

    /// Uploads the `language` script `script` as `user/function`: captures
    /// the interpreter at the script's first read of stdin, stores the
    /// script, the snapshot and the point, and makes it callable.
    /// Blocking: call it on an executor thread.
    pub fn upload_script(
        &self,
        language: Language,
        user: &str,
        function: &str,
        script: &[u8],
    ) -> Result<(), WorkerError> {
        self.install_script(language, user, function, script, true)
    }

    /// [`upload_script`](Self::upload_script), publishing it to the
    /// cluster only if `publish` (a function fetched from the cluster is
    /// not published again: that could overwrite a newer upload).
    pub(crate) fn install_script(
        &self,
        language: Language,
        user: &str,
        function: &str,
        script: &[u8],
        publish: bool,
    ) -> Result<(), WorkerError> {
        check_name("user", user)?;
        check_name("function", function)?;
        let text = std::str::from_utf8(script)
            .map_err(|e| language.unavailable(format!("the script is not UTF-8: {e}")))?;
        if text.contains('\0') {
            return Err(language.unavailable("the script contains a NUL byte".into()));
        }
        let f = self.make_script(language, user, function, text)?;
        let dir = self.config().data.join("functions").join(user);
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let snap = dir.join(format!("{function}.snap"));
        let point = dir.join(format!("{function}.point"));
        let source = dir.join(format!("{function}.{}", language.extension()));
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
        std::fs::write(tmp(&source), script).map_err(|e| io_err(&source, e))?;
        // The script last: reloading finds a script only with its files.
        for p in [&snap, &point, &source] {
            std::fs::rename(tmp(p), p).map_err(|e| io_err(p, e))?;
        }
        // A function of the same name in another form is replaced.
        remove_other_forms(&dir, function, Some(language));
        self.insert_function(user, function, f);
        if let Some(c) = self.cluster() {
            // Every worker of the cluster can call it now: each captures
            // its own Proto-Faaslet from the script on its first call.
            let name = format!("{user}/{function}");
            if publish {
                c.publish_script(language, &name, script)
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
    fn make_script(
        &self,
        language: Language,
        user: &str,
        function: &str,
        script: &str,
    ) -> Result<Function, WorkerError> {
        let module = self.script_runtime(language)?;
        let args = language.args(script);
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
                        "{user}/{function}: the {language} script ended (exit {code}) without reading stdin; its calls run it from the start"
                    );
                let s = Faaslet::snapshot(self.engine(), &module, config, None)
                    .map_err(WorkerError::Init)?;
                (s, None)
            }
            Err(AtInputError::Faaslet(e)) => return Err(WorkerError::Init(e)),
            Err(e) => return Err(language.unavailable(e.to_string())),
        };
        Ok(script_function(language, script, args, resume, snapshot))
    }

    /// Loads a stored script function (`FUNCTION.py` or `.js` with its
    /// `.snap` and `.point`), capturing it again if those do not load.
    pub(crate) fn load_script(
        &self,
        language: Language,
        user: &str,
        function: &str,
        source: &Path,
    ) -> Result<Function, WorkerError> {
        let script = std::fs::read(source).map_err(|e| io_err(source, e))?;
        let text = String::from_utf8(script)
            .map_err(|e| language.unavailable(format!("{}: not UTF-8: {e}", source.display())))?;
        let module = self.script_runtime(language)?;
        let snap = Snapshot::load(&module, source.with_extension("snap"));
        let point = std::fs::read(source.with_extension("point")).ok();
        match (snap, point) {
            (Ok(snapshot), Some(p)) => {
                let resume = if p.is_empty() {
                    None
                } else {
                    Some(Arc::new(InputPoint::from_bytes(&p).ok_or_else(|| {
                        language.unavailable(format!(
                            "{}: damaged",
                            source.with_extension("point").display()
                        ))
                    })?))
                };
                let args = language.args(&text);
                Ok(script_function(language, &text, args, resume, snapshot))
            }
            _ => {
                tracing::warn!("{user}/{function}: snapshot missing or stale; capturing it again");
                self.make_script(language, user, function, &text)
            }
        }
    }
}

/// The [`Function`] of a script captured as `snapshot` (resuming at
/// `resume`, if it reads its input).
fn script_function(
    language: Language,
    script: &str,
    args: Vec<String>,
    resume: Option<Arc<InputPoint>>,
    snapshot: Snapshot,
) -> Function {
    Function {
        version: script_version(language, script.as_bytes()),
        idempotent: false,
        args,
        resume,
        script: true,
        restore_ns: AtomicU64::new(0),
        wasm: script.as_bytes().into(),
        snapshot,
        called: AtomicBool::new(false),
    }
}
