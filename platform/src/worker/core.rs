//! The [`Worker`]: uploaded functions (each a compiled module and its
//! Proto-Faaslet, persisted under the data directory), the executor calls
//! run on, the deadline ticker, the bounded store of asynchronous results,
//! the state store and the metrics.

use crate::code_cache::{CacheOutcome, CodeCache};
use crate::compile_child::CompileChild;
use crate::error::FaasletError;
use crate::executor::{Executor, QueueFull};
use crate::faaslet::{Faaslet, FaasletConfig, HostLinker};
use crate::registry::valid_function_name;
use crate::scheduler::ChainEntry;
use crate::worker::chain::{ChainHost, WorkerScheduler};
use crate::worker::cluster::{version_of, Cluster};
use crate::worker::language::Language;
use crate::worker::metrics::Metrics;
use faaslet::{Engine, Error, Module, TrapKind};
use faaslet_hostapi::wasi::Output;
use faaslet_snapshot::Snapshot;
use faaslet_state::{LocalStateStore, StateStore};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How often the ticker advances the engine's epoch: the granularity of
/// call deadlines.
pub const TICK: Duration = crate::faaslet::EPOCH_TICK;

/// How much longer than the call's deadline a worker waits for another
/// worker's answer to a forwarded call before taking it for lost.
pub const FORWARD_GRACE: Duration = Duration::from_secs(5);

/// Default of [`WorkerConfig::compile_memory`]: 1 GiB. CPython (26 MB of
/// wasm, 11,448 functions) compiles within 400 MiB but not within 200.
pub const DEFAULT_COMPILE_MEMORY: u64 = 1 << 30;

/// A function whose Proto-Faaslet takes longer than this to restore has
/// prepared Faaslets kept in a pool ([`WorkerConfig::pool`]); below it
/// the pool's extra job per call costs more than it saves (a no-op wasm
/// function restores in a few microseconds, CPython in about 100).
pub const POOL_AFTER: Duration = Duration::from_micros(20);

/// About what forwarding a call costs the sending worker's CPU (a request
/// and its answer through hyper: `faaslet bench cluster` forwards at about
/// half the rate it runs no-op calls itself): calls whose mean job is
/// shorter stay here. Unknown (no job finished yet) counts as long.
pub const HOP_COST: Duration = Duration::from_micros(30);

/// The default [`WorkerConfig::forward_after`].
pub const DEFAULT_FORWARD_AFTER: Duration = Duration::from_micros(250);

/// How a worker is set up.
#[derive(Clone)]
pub struct WorkerConfig {
    /// Where uploaded functions are kept (`functions/USER/FUNCTION.wasm`
    /// and `.snap`) and their compiled code (`code/KEY.code`, see
    /// [`CodeCache`]).
    pub data: PathBuf,
    /// Executor threads.
    pub threads: usize,
    /// Calls that may wait for a thread before new ones get 429.
    pub queue: usize,
    /// Each call's deadline.
    pub timeout: Duration,
    /// Largest request body (upload or input), bytes.
    pub max_body: usize,
    /// Largest call output, bytes; a call writing more fails.
    pub max_output: usize,
    /// Asynchronous results kept for `/status` (oldest dropped first).
    pub results: usize,
    /// The state store calls and `/s/` use (its global tier: Redis, or
    /// in-process); `None`: a local tier over an in-process global tier,
    /// with default limits.
    pub state: Option<Arc<dyn StateStore>>,
    /// Bytes of linear memory each call may hold (see
    /// [`FaasletConfig::memory_limit`]); `memory.grow` past it returns -1.
    pub memory_limit: u64,
    /// Longest an upload (or a reload without cached code) may compile:
    /// past it the module is refused as invalid, naming the budget
    /// (checked between functions).
    pub compile_budget: Duration,
    /// Most bytes of memory one compilation may hold (see
    /// [`compile_program`](Self::compile_program); without a program only
    /// the time budget applies).
    pub compile_memory: u64,
    /// The program uploads are compiled in, as a child process stopped at
    /// [`compile_budget`](Self::compile_budget) and limited to
    /// [`compile_memory`](Self::compile_memory) (see
    /// [`compile_child`](crate::compile_child); `faaslet serve` sets its own
    /// executable). `None`: uploads compile on the worker's thread, bounded
    /// in time between functions only, and not in memory: a worker that
    /// takes modules from untrusted users must set it.
    pub compile_program: Option<PathBuf>,
    /// The CPython interpreter (a WASI build, e.g. `python-3.12.0.wasm`)
    /// Python functions (`PUT /p/...`) run on; `None`: Python functions
    /// are refused.
    pub python: Option<PathBuf>,
    /// The QuickJS command (`qjs-faaslet.wasm`, built by
    /// `sdk/js/build.sh`) JavaScript functions (`PUT /js/...`) run on;
    /// `None`: JavaScript functions are refused.
    pub js: Option<PathBuf>,
    /// In a cluster, a call this worker has no free thread for goes to
    /// another worker only if it would wait here longer than this (its
    /// [`Executor::expected_wait`]): a hop costs tens of microseconds of
    /// latency and CPU on both sides, more than a short queue of short
    /// calls; and calls whose mean job is shorter than [`HOP_COST`] stay
    /// here too. Zero: whenever every thread is busy, however short.
    pub forward_after: Duration,
    /// Whether calls start from the function's Proto-Faaslet (the
    /// default). `false` makes every call, chained calls included, a fresh
    /// instance of the module that runs its data segments, start function
    /// and initialisation export again (see [`FaasletConfig::init_fresh`]),
    /// as a Faaslet without Proto-Faaslets would: for
    /// measuring what Proto-Faaslets buy (`faaslet serve
    /// --no-proto-faaslets`, `benches/paper/`). Uploads still make and
    /// keep the snapshot.
    pub proto_faaslets: bool,
    /// Idle Faaslets kept ready per function whose restore is slow (past
    /// [`POOL_AFTER`]): their next instance already restored, so a call
    /// skips the restore, and its Faaslet is prepared again after it. 0:
    /// none, every call restores its own. Each costs about the pages its
    /// instance has touched, plus the pages its last call wrote, kept
    /// with the snapshot's bytes so the next call takes no page fault on
    /// them (a Python no-op: about 550 KiB of PSS in all).
    pub pool: usize,
    /// Functions are pooled once restoring one takes this long (default
    /// [`POOL_AFTER`]; zero: every function).
    pub pool_after: Duration,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("data", &self.data)
            .field("threads", &self.threads)
            .field("queue", &self.queue)
            .field("timeout", &self.timeout)
            .field("max_body", &self.max_body)
            .field("max_output", &self.max_output)
            .field("results", &self.results)
            .field("memory_limit", &self.memory_limit)
            .field("compile_budget", &self.compile_budget)
            .field("compile_memory", &self.compile_memory)
            .field("compile_program", &self.compile_program)
            .field("forward_after", &self.forward_after)
            .field("python", &self.python)
            .field("js", &self.js)
            .field("proto_faaslets", &self.proto_faaslets)
            .field("pool", &self.pool)
            .field("pool_after", &self.pool_after)
            .field("state", &self.state.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl WorkerConfig {
    /// Defaults over data directory `data`: one thread per core, a queue
    /// of 1,024, a 60 s deadline, 64 MiB bodies, 16 MiB outputs, 10,000
    /// results kept, 1 GiB of linear memory per call, 30 s and (with a
    /// compile program) 1 GiB to compile,
    /// forwarding past an expected wait of 250 µs.
    pub fn new(data: impl Into<PathBuf>) -> WorkerConfig {
        WorkerConfig {
            data: data.into(),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            queue: 1024,
            timeout: Duration::from_secs(60),
            max_body: 64 << 20,
            max_output: 16 << 20,
            results: 10_000,
            state: None,
            memory_limit: faaslet::StoreLimits::DEFAULT_MEMORY_BYTES,
            compile_budget: Duration::from_secs(30),
            compile_memory: DEFAULT_COMPILE_MEMORY,
            compile_program: None,
            forward_after: DEFAULT_FORWARD_AFTER,
            python: None,
            js: None,
            proto_faaslets: true,
            pool: 2,
            pool_after: POOL_AFTER,
        }
    }
}

/// Why a worker operation failed; the HTTP layer maps each to a status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A user or function name (or state key) that is not a plain name.
    #[error("invalid {what} {name:?}: use ASCII letters, digits, `_`, `-`, `.` (not first), at most 255 bytes")]
    BadName {
        /// `user`, `function` or `key`.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// No such function has been uploaded.
    #[error("no function {user}/{function}")]
    NoSuchFunction {
        /// The user.
        user: String,
        /// The function.
        function: String,
    },
    /// The upload is not a module this engine accepts.
    #[error("invalid module: {0}")]
    Compile(Error),
    /// Linking or initialising (the Proto-Faaslet) failed.
    #[error("cannot make the Proto-Faaslet: {0}")]
    Init(FaasletError),
    /// The executor's queue is full.
    #[error("{0}")]
    Busy(#[from] QueueFull),
    /// The guest trapped.
    #[error("{function} trapped: {kind}")]
    Trap {
        /// `user/function`.
        function: String,
        /// The trap kind (its message).
        kind: &'static str,
        /// The trap in full.
        detail: String,
        /// Output written before the trap.
        output: Vec<u8>,
    },
    /// The call ran past its deadline and was stopped.
    #[error("{function} ran past its deadline of {timeout:?}")]
    Timeout {
        /// `user/function`.
        function: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The call wrote more output than allowed.
    #[error("{function} wrote {len} bytes of output, more than the limit of {limit}")]
    OutputTooLarge {
        /// `user/function`.
        function: String,
        /// Bytes written.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The call could not be run (no entry point, WASI setup...).
    #[error("{function}: {error}")]
    Call {
        /// `user/function`.
        function: String,
        /// Why.
        error: FaasletError,
    },
    /// Reading or writing the data directory failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The worker is shutting down (the job was dropped).
    #[error("the worker is shutting down")]
    ShuttingDown,
    /// The cluster's shared store (Redis) failed.
    #[error("cluster: {0}")]
    Cluster(faaslet_state::StateError),
    /// A script function (Python, JavaScript) ended with a nonzero exit
    /// code: an uncaught exception, its traceback or stack on stderr.
    #[error("{function} failed with exit code {code}: {stderr}")]
    Exception {
        /// `user/function`.
        function: String,
        /// The exit code.
        code: i32,
        /// What it wrote to stderr (the traceback), lossily decoded.
        stderr: String,
        /// What it wrote to stdout.
        output: Vec<u8>,
    },
    /// Python functions cannot be made here (no interpreter configured,
    /// or preparing it failed).
    #[error("python: {0}")]
    Python(String),
    /// JavaScript functions cannot be made here (no QuickJS configured,
    /// preparing it failed, or the script is not UTF-8 text).
    #[error("js: {0}")]
    Js(String),
}

pub(crate) fn io_err(path: &Path, e: std::io::Error) -> WorkerError {
    WorkerError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The binary form of an upload (which may be WAT text), as the code
/// cache keys it; bytes that are neither are returned as they are.
fn binary(wasm: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if wasm.starts_with(b"\0asm") {
        return std::borrow::Cow::Borrowed(wasm);
    }
    std::str::from_utf8(wasm)
        .ok()
        .and_then(|t| faaslet::wat_to_wasm(t).ok())
        .map_or(std::borrow::Cow::Borrowed(wasm), std::borrow::Cow::Owned)
}

/// The extension of the (empty) file beside `FUNCTION.wasm` that marks
/// the function idempotent.
const IDEMPOTENT_MARK: &str = "idempotent";

/// Marks the function stored at `wasm_path` idempotent, or removes the mark.
fn mark_idempotent(wasm_path: &Path, idempotent: bool) -> Result<(), WorkerError> {
    let mark = wasm_path.with_extension(IDEMPOTENT_MARK);
    if idempotent {
        std::fs::write(&mark, b"").map_err(|e| io_err(&mark, e))
    } else {
        match std::fs::remove_file(&mark) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&mark, e)),
            _ => Ok(()),
        }
    }
}

/// Checks a user, function or key name (see [`valid_function_name`]).
pub fn check_name(what: &'static str, name: &str) -> Result<(), WorkerError> {
    if valid_function_name(name) {
        Ok(())
    } else {
        Err(WorkerError::BadName {
            what,
            name: name.to_string(),
        })
    }
}

/// An uploaded function.
pub struct Function {
    /// The uploaded bytes.
    pub wasm: Arc<[u8]>,
    /// Its Proto-Faaslet (module included): every call starts from it.
    pub snapshot: Snapshot,
    /// Set once the function has been called in this process.
    pub(crate) called: AtomicBool,
    /// Its version ([`version_of`]): compared with the version a cluster
    /// publishes.
    pub(crate) version: String,
    /// Marked idempotent at upload: a call of it lost with another
    /// worker runs again here instead of failing.
    pub idempotent: bool,
    /// Arguments after `argv[0]` (a Python function's `-c DRIVER SCRIPT`,
    /// a JavaScript function's `SCRIPT`).
    pub(crate) args: Vec<String>,
    /// Where its calls resume (a program captured at its first read of
    /// input), if that is how its Proto-Faaslet was made.
    pub(crate) resume: Option<Arc<crate::at_input::InputPoint>>,
    /// A script function (Python, JavaScript): a nonzero exit is a failed call whose
    /// error carries the program's stderr (the traceback).
    pub(crate) script: bool,
    /// How long the last restore of its Proto-Faaslet took, nanoseconds
    /// (0: not measured yet): it is pooled past [`POOL_AFTER`].
    pub(crate) restore_ns: AtomicU64,
}

/// The result of a call that ran.
#[derive(Debug, Clone)]
pub struct CallReply {
    /// The output: what `__faasm_write_output` wrote, or the guest's
    /// standard output if it never called it.
    pub output: Vec<u8>,
    /// The return code.
    pub return_code: i32,
}

/// An asynchronous call's status.
#[derive(Debug, Clone)]
pub enum CallStatus {
    /// Queued or running.
    Running,
    /// Finished with return code 0.
    Success(CallReply),
    /// Finished with a non-zero return code, or failed (the message).
    Failed(String, Vec<u8>),
    /// Sent to another worker of the cluster, which runs it as its call
    /// `id`: its status is asked there.
    Remote {
        /// The worker's address.
        addr: String,
        /// The call's id there.
        id: u64,
    },
}

struct Results {
    map: HashMap<u64, CallStatus>,
    order: VecDeque<u64>,
    capacity: usize,
}

pub(crate) struct Inner {
    engine: Engine,
    config: WorkerConfig,
    functions: RwLock<HashMap<(String, String), Arc<Function>>>,
    executor: Arc<Executor>,
    state: Arc<dyn StateStore>,
    results: Mutex<Results>,
    next_id: AtomicU64,
    metrics: Metrics,
    cache: CodeCache,
    stop_ticker: Arc<AtomicBool>,
    /// The cluster this worker joined ([`Worker::join_cluster`]).
    cluster: std::sync::OnceLock<Arc<Cluster>>,
    /// The runtime chained calls are forwarded on (made on joining a
    /// cluster): one thread, which only waits on sockets.
    forwarder: std::sync::OnceLock<tokio::runtime::Runtime>,
    /// Held while a function is fetched from the cluster.
    fetching: Mutex<()>,
    /// Idle Faaslets, their next instance already restored, by function:
    /// a call takes one instead of restoring on its critical path, and its
    /// Faaslet is prepared again and put back after the call, as a job of
    /// its own. Each entry remembers the upload it was made from.
    pool: Mutex<HashMap<(String, String), Vec<Pooled>>>,
    /// The interpreter Python functions run on, asyncified and compiled
    /// once (see `worker::python`).
    pub(crate) python: Mutex<Option<Module>>,
    /// The interpreter JavaScript functions run on (QuickJS), likewise
    /// (see `worker::js`).
    pub(crate) js: Mutex<Option<Module>>,
    /// What every call's Faaslet is configured with but its name and user
    /// (the host interface linked once, the state store, the executor, the
    /// deadline): cloned per call, which allocates next to nothing.
    template: FaasletConfig,
}

/// An idle Faaslet in the pool, with the upload it was made from.
type Pooled = (Arc<Function>, Faaslet);

/// A worker: cheap to clone, shared by every request handler.
#[derive(Clone)]
pub struct Worker {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
        if let Some(c) = self.cluster.get() {
            c.leave();
        }
        // Dropping a runtime blocks, which is not allowed if the last
        // reference goes away on a thread of another runtime (an HTTP
        // handler's): let it wind down in the background.
        if let Some(rt) = self.forwarder.take() {
            rt.shutdown_background();
        }
    }
}

impl Worker {
    /// A worker over `config.data` with `engine` (which must have epoch
    /// interruption on for deadlines to work): starts the executor and the
    /// ticker and reloads every function uploaded before (a function whose
    /// files no longer load is skipped with a warning).
    pub fn new(engine: &Engine, config: WorkerConfig) -> Result<Worker, WorkerError> {
        let dir = config.data.join("functions");
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let cache = CodeCache::new(config.data.join("code")).map_err(|e| WorkerError::Io {
            path: e.path,
            message: e.source.to_string(),
        })?;
        let executor = Arc::new(
            Executor::new(config.threads, config.queue).map_err(|e| io_err(&config.data, e))?,
        );
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("faaslet-ticker".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| io_err(&config.data, e))?;
        }
        let results = Results {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: config.results.max(1),
        };
        let state = config
            .state
            .clone()
            .unwrap_or_else(|| Arc::new(LocalStateStore::new()));
        let timeout = config.timeout;
        let template = FaasletConfig {
            stdout: Output::Capture,
            stderr: Output::Capture,
            state: state.clone(),
            executor: Some(executor.clone()),
            deadline_ticks: Some((timeout.as_millis() / TICK.as_millis()).max(1) as u64),
            host: Some(HostLinker::new(engine).map_err(WorkerError::Init)?),
            memory_limit: Some(config.memory_limit),
            max_output: Some(config.max_output),
            init_fresh: !config.proto_faaslets,
            ..FaasletConfig::new("")
        };
        let worker = Worker {
            inner: Arc::new_cyclic(|inner| Inner {
                engine: engine.clone(),
                config,
                functions: RwLock::new(HashMap::new()),
                executor,
                state,
                results: Mutex::new(results),
                next_id: AtomicU64::new(1),
                metrics: Metrics::default(),
                cache,
                stop_ticker,
                template: FaasletConfig {
                    // Chained calls by name find this worker's functions,
                    // and every chained call is placed by the cluster's rule.
                    scheduler: Some(Arc::new(WorkerScheduler {
                        host: inner.clone() as std::sync::Weak<dyn ChainHost>,
                    })),
                    ..template
                },
                cluster: std::sync::OnceLock::new(),
                forwarder: std::sync::OnceLock::new(),
                fetching: Mutex::new(()),
                pool: Mutex::new(HashMap::new()),
                python: Mutex::new(None),
                js: Mutex::new(None),
            }),
        };
        worker.reload(&dir);
        Ok(worker)
    }

    fn reload(&self, dir: &Path) {
        let Ok(users) = std::fs::read_dir(dir) else {
            return;
        };
        for user in users.flatten() {
            let uname = user.file_name().to_string_lossy().into_owned();
            let Ok(files) = std::fs::read_dir(user.path()) else {
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                let ext = path.extension().map(|e| e.to_string_lossy().into_owned());
                let language = ext.as_deref().and_then(Language::from_extension);
                if language.is_none() && ext.as_deref() != Some("wasm") {
                    continue;
                }
                let Some(fname) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                    continue;
                };
                if check_name("user", &uname).is_err() || check_name("function", &fname).is_err() {
                    continue;
                }
                let loaded = match language {
                    Some(l) => self.load_script(l, &uname, &fname, &path),
                    None => self.load(&uname, &fname, &path),
                };
                match loaded {
                    Ok(f) => {
                        self.functions_mut()
                            .insert((uname.clone(), fname), Arc::new(f));
                    }
                    Err(e) => tracing::warn!("not reloading {}: {e}", path.display()),
                }
            }
        }
    }

    /// `wasm` compiled: from the code cache, or compiled (in a child
    /// process, if [`WorkerConfig::compile_program`] is set) and cached.
    fn module(&self, what: &str, wasm: &[u8]) -> Result<Module, WorkerError> {
        let c = &self.inner.config;
        match &c.compile_program {
            Some(program) => {
                let child = CompileChild::new(program, c.compile_budget, c.compile_memory);
                let start = Instant::now();
                let got = self
                    .inner
                    .cache
                    .module_in_child(&self.inner.engine, wasm, &child);
                self.log_compile(what, got, start)
            }
            None => self.module_within(what, wasm, Some(c.compile_budget)),
        }
    }

    /// [`module`](Self::module) within `budget` (`None`: unbounded, for
    /// the runtimes the operator configures, as opposed to uploads).
    pub(crate) fn module_within(
        &self,
        what: &str,
        wasm: &[u8],
        budget: Option<Duration>,
    ) -> Result<Module, WorkerError> {
        let start = Instant::now();
        let got = self
            .inner
            .cache
            .module_within(&self.inner.engine, wasm, budget);
        self.log_compile(what, got, start)
    }

    fn log_compile(
        &self,
        what: &str,
        got: Result<(Module, CacheOutcome), faaslet::Error>,
        start: Instant,
    ) -> Result<Module, WorkerError> {
        let (module, outcome) = got.map_err(WorkerError::Compile)?;
        let took = start.elapsed();
        self.inner.metrics.cache(&outcome);
        match outcome {
            CacheOutcome::Hit => tracing::info!("{what}: code loaded from the cache in {took:?}"),
            CacheOutcome::Miss => tracing::info!("{what}: compiled in {took:?}"),
            CacheOutcome::Rejected(why) => {
                tracing::info!("{what}: compiled in {took:?} (cache entry refused: {why})")
            }
        }
        Ok(module)
    }

    /// Loads a stored function's code (from the code cache, compiling only
    /// if its entry is missing or refused) and its Proto-Faaslet (remade
    /// if the snapshot file is missing or does not match the module).
    fn load(&self, user: &str, function: &str, wasm_path: &Path) -> Result<Function, WorkerError> {
        let wasm = std::fs::read(wasm_path).map_err(|e| io_err(wasm_path, e))?;
        let module = self.module(&format!("{user}/{function}"), &wasm)?;
        let snap_path = wasm_path.with_extension("snap");
        let snapshot = match Snapshot::load(&module, &snap_path) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("{}: {e}; making it again", snap_path.display());
                let s = self.proto(user, function, &module)?;
                s.save(&snap_path).map_err(|e| WorkerError::Io {
                    path: snap_path.display().to_string(),
                    message: e.to_string(),
                })?;
                s
            }
        };
        let idempotent = wasm_path.with_extension(IDEMPOTENT_MARK).exists();
        Ok(Function {
            version: version_of(&wasm, idempotent),
            idempotent,
            args: Vec::new(),
            resume: None,
            script: false,
            restore_ns: AtomicU64::new(0),
            wasm: wasm.into(),
            snapshot,
            called: AtomicBool::new(false),
        })
    }

    fn functions_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<(String, String), Arc<Function>>> {
        self.inner
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The configuration.
    pub fn config(&self) -> &WorkerConfig {
        &self.inner.config
    }

    /// The executor calls run on.
    pub fn executor(&self) -> &Executor {
        &self.inner.executor
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The state store.
    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.inner.state
    }

    /// The function `user/function`.
    pub fn function(&self, user: &str, function: &str) -> Result<Arc<Function>, WorkerError> {
        check_name("user", user)?;
        check_name("function", function)?;
        self.inner
            .functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(user.to_string(), function.to_string()))
            .cloned()
            .ok_or_else(|| WorkerError::NoSuchFunction {
                user: user.to_string(),
                function: function.to_string(),
            })
    }

    /// `user/function`, from this worker or, if it is in a cluster and
    /// the function was published by another worker, fetched from the
    /// cluster's store (its wasm, Proto-Faaslet and, where the
    /// configuration matches, compiled code) into the data directory and
    /// loaded. Blocking (it may compile): call it on an executor thread.
    pub fn function_or_fetch(
        &self,
        user: &str,
        function: &str,
    ) -> Result<Arc<Function>, WorkerError> {
        let local = self.function(user, function);
        let Some(cluster) = self.inner.cluster.get() else {
            return local;
        };
        if local.is_ok() {
            return local;
        }
        // One fetch at a time: calls arriving together for a function not
        // held here (a fan-out's first calls) fetch and load it once, and
        // never write its files over each other.
        let _fetching = self
            .inner
            .fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Ok(f) = self.function(user, function) {
            return Ok(f);
        }
        let name = format!("{user}/{function}");
        let Some(p) = cluster.fetch(&name).map_err(WorkerError::Cluster)? else {
            return local;
        };
        if let Some(language) = p.language {
            // A script: captured here, on this worker's interpreter.
            self.install_script(language, user, function, &p.wasm, false)?;
            tracing::info!("{name}: {language} function fetched from the cluster and captured");
            return self.function(user, function);
        }
        let dir = self.inner.config.data.join("functions").join(user);
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let write = |path: &Path, bytes: &[u8]| -> Result<(), WorkerError> {
            let tmp = path.with_extension("fetch.tmp");
            std::fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, e))?;
            std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
        };
        let bin = binary(&p.wasm);
        let code_path = self.inner.cache.path_of(&self.inner.engine, &bin);
        if !code_path.exists() {
            let key = self.inner.engine.artifact_key(&bin).to_string();
            // Checked like any cache file when loaded: a foreign or
            // damaged artefact is refused and the code compiled here.
            if let Some(code) = cluster.fetch_code(&key).map_err(WorkerError::Cluster)? {
                write(&code_path, &code)?;
            }
        }
        let wasm_path = dir.join(format!("{function}.wasm"));
        match &p.snapshot {
            Some(s) => write(&dir.join(format!("{function}.snap")), s)?,
            None => {
                let _ = std::fs::remove_file(dir.join(format!("{function}.snap")));
            }
        }
        mark_idempotent(&wasm_path, p.idempotent)?;
        write(&wasm_path, &p.wasm)?;
        remove_other_forms(&dir, function, None);
        let f = Arc::new(self.load(user, function, &wasm_path)?);
        tracing::info!(
            "{name}: fetched from the cluster (version {})",
            &p.version[..12]
        );
        self.functions_mut()
            .insert((user.to_string(), function.to_string()), f.clone());
        if let Err(e) = cluster.hold(std::slice::from_ref(&name)) {
            tracing::warn!("{name}: not added to its warm set: {e}");
        }
        Ok(f)
    }

    /// The wasm of `user/function`: this worker's copy, or the one
    /// published in its cluster.
    pub fn wasm(&self, user: &str, function: &str) -> Result<Vec<u8>, WorkerError> {
        let local = self.function(user, function);
        match (local, self.inner.cluster.get()) {
            (Ok(f), _) => Ok(f.wasm.to_vec()),
            (Err(e), Some(c)) => match c
                .fetch(&format!("{user}/{function}"))
                .map_err(WorkerError::Cluster)?
            {
                Some(p) => Ok(p.wasm),
                None => Err(e),
            },
            (Err(e), None) => Err(e),
        }
    }

    /// Whether `user/function` can be called here: uploaded to this worker
    /// or published in its cluster (one Redis round trip when it is not
    /// held here). For failing fast before queueing a call.
    pub fn known(&self, user: &str, function: &str) -> Result<(), WorkerError> {
        let local = self.function(user, function).map(|_| ());
        match self.inner.cluster.get() {
            Some(c) if local.is_err() => {
                match c
                    .has(&format!("{user}/{function}"))
                    .map_err(WorkerError::Cluster)?
                {
                    true => Ok(()),
                    false => local,
                }
            }
            _ => local,
        }
    }

    /// Joins the cluster whose store is `redis` (the Redis of the state
    /// tier), registered as listening at `addr`: a heartbeat thread keeps
    /// the registration alive and drops local copies of functions whose
    /// published version changed; uploads are published from now on.
    pub fn join_cluster(
        &self,
        redis: Arc<faaslet_state::RedisTier>,
        addr: &str,
    ) -> Result<Arc<Cluster>, WorkerError> {
        let capacity = self.inner.config.threads as u32;
        let c = Arc::new(Cluster::join(redis, addr, capacity).map_err(WorkerError::Cluster)?);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("faaslet-forward")
            .enable_all()
            .build()
            .map_err(|e| io_err(&self.inner.config.data, e))?;
        let _ = self.inner.forwarder.set(rt);
        if self.inner.cluster.set(c.clone()).is_err() {
            c.leave();
            return Err(WorkerError::Cluster(faaslet_state::StateError::Os(
                "this worker is already in a cluster".into(),
            )));
        }
        let held: Vec<String> = self
            .inner
            .functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .map(|(u, f)| format!("{u}/{f}"))
            .collect();
        c.hold(&held).map_err(WorkerError::Cluster)?;
        let weak = Arc::downgrade(&self.inner);
        std::thread::Builder::new()
            .name("faaslet-heartbeat".into())
            .spawn(move || loop {
                std::thread::sleep(super::cluster::HEARTBEAT);
                let Some(inner) = weak.upgrade() else { return };
                let Some(c) = inner.cluster.get().cloned() else {
                    return;
                };
                if c.left() {
                    return;
                }
                let load = (inner.executor.running() + inner.executor.queued()) as u32;
                match c.heartbeat(load) {
                    Ok(Some(published)) => Worker { inner }.forget_changed(&published),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("cluster heartbeat failed: {e}"),
                }
            })
            .map_err(|e| io_err(&self.inner.config.data, e))?;
        tracing::info!("joined the cluster as {} ({addr})", c.me().id);
        Ok(c)
    }

    /// Where to forward a call rather than run it here, by the rule of
    /// [`Cluster::place`]: `None` when this worker has a free slot, is not
    /// in a cluster, would run the call within
    /// [`WorkerConfig::forward_after`], or no other worker is less busy
    /// (the call then queues here).
    pub fn pick_remote(&self, user: &str, function: &str) -> Option<super::cluster::Member> {
        self.inner.place(user, function).map(|(peer, _, _)| peer)
    }

    /// How long a forwarded call may take before the worker it went to
    /// is taken for lost: the call's deadline there, plus 5 s.
    pub fn forward_timeout(&self) -> Duration {
        self.inner.config.timeout + FORWARD_GRACE
    }

    /// Whether `user/function` is held here and marked idempotent.
    pub fn idempotent(&self, user: &str, function: &str) -> bool {
        ChainHost::idempotent(&*self.inner, user, function)
    }

    /// The cluster this worker joined, if any.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.inner.cluster.get()
    }

    /// Drops the local copies of functions whose published version is not
    /// theirs (uploaded again elsewhere): the next call fetches the new one.
    fn forget_changed(&self, published: &HashMap<String, String>) {
        let stale: Vec<(String, String)> = self
            .inner
            .functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((u, f), func)| {
                published
                    .get(&format!("{u}/{f}"))
                    .is_some_and(|v| *v != func.version)
            })
            .map(|(k, _)| k.clone())
            .collect();
        if !stale.is_empty() {
            let mut fs = self.functions_mut();
            for k in &stale {
                tracing::info!(
                    "{}/{}: uploaded again elsewhere; fetching on next call",
                    k.0,
                    k.1
                );
                fs.remove(k);
            }
            drop(fs);
            if let Some(c) = self.inner.cluster.get() {
                for (u, f) in stale {
                    let _ = c.release(&format!("{u}/{f}"));
                }
            }
        }
    }

    pub(crate) fn faaslet_config(&self, user: &str, function: &str) -> FaasletConfig {
        FaasletConfig {
            name: format!("{user}/{function}"),
            // Keys are namespaced by user in the store itself.
            user: user.to_string(),
            ..self.inner.template.clone()
        }
    }

    fn proto(&self, user: &str, function: &str, module: &Module) -> Result<Snapshot, WorkerError> {
        Faaslet::snapshot(
            &self.inner.engine,
            module,
            self.faaslet_config(user, function),
            None,
        )
        .map_err(WorkerError::Init)
    }

    /// The code cache.
    pub fn code_cache(&self) -> &CodeCache {
        &self.inner.cache
    }

    /// Uploads `user/function`: validates and compiles `wasm` (or loads
    /// its code from the cache, if these very bytes were compiled
    /// before), makes its Proto-Faaslet and writes the wasm, the code and
    /// the snapshot to the data directory, then makes it callable
    /// (replacing an earlier upload). Blocking: it runs guest code (the
    /// initialisation), so call it on an executor thread.
    pub fn upload(&self, user: &str, function: &str, wasm: &[u8]) -> Result<(), WorkerError> {
        self.upload_with(user, function, wasm, false)
    }

    /// [`upload`](Self::upload), marking the function `idempotent` or not:
    /// a call of an idempotent function that was sent to another worker
    /// which died before answering runs again here; any other such call
    /// fails (it may have run there).
    pub fn upload_with(
        &self,
        user: &str,
        function: &str,
        wasm: &[u8],
        idempotent: bool,
    ) -> Result<(), WorkerError> {
        check_name("user", user)?;
        check_name("function", function)?;
        let module = self.module(&format!("{user}/{function}"), wasm)?;
        let snapshot = self.proto(user, function, &module)?;
        let dir = self.inner.config.data.join("functions").join(user);
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let tmp_wasm = dir.join(format!(".{function}.wasm.tmp"));
        let tmp_snap = dir.join(format!(".{function}.snap.tmp"));
        std::fs::write(&tmp_wasm, wasm).map_err(|e| io_err(&tmp_wasm, e))?;
        snapshot.save(&tmp_snap).map_err(|e| WorkerError::Io {
            path: tmp_snap.display().to_string(),
            message: e.to_string(),
        })?;
        // The snapshot first: a crash between the renames leaves a wasm
        // whose snapshot does not match, which reloading detects and remakes.
        let snap = dir.join(format!("{function}.snap"));
        let wasm_path = dir.join(format!("{function}.wasm"));
        std::fs::rename(&tmp_snap, &snap).map_err(|e| io_err(&snap, e))?;
        mark_idempotent(&wasm_path, idempotent)?;
        std::fs::rename(&tmp_wasm, &wasm_path).map_err(|e| io_err(&wasm_path, e))?;
        // A script function of the same name is replaced.
        remove_other_forms(&dir, function, None);
        self.functions_mut().insert(
            (user.to_string(), function.to_string()),
            Arc::new(Function {
                version: version_of(wasm, idempotent),
                idempotent,
                args: Vec::new(),
                resume: None,
                script: false,
                restore_ns: AtomicU64::new(0),
                wasm: wasm.into(),
                snapshot,
                called: AtomicBool::new(false),
            }),
        );
        if let Some(c) = self.inner.cluster.get() {
            // Every worker of the cluster can call it now: the wasm, the
            // Proto-Faaslet and the code compiled here.
            let read = |p: &Path| std::fs::read(p).map_err(|e| io_err(p, e));
            let snap_bytes = read(&snap)?;
            let bin = binary(wasm);
            let code_path = self.inner.cache.path_of(&self.inner.engine, &bin);
            let code = std::fs::read(&code_path).ok();
            let key = self.inner.engine.artifact_key(&bin).to_string();
            c.publish(
                &format!("{user}/{function}"),
                wasm,
                idempotent,
                Some(&snap_bytes),
                code.as_deref().map(|b| (key.as_str(), b)),
            )
            .map_err(WorkerError::Cluster)?;
            let name = format!("{user}/{function}");
            if let Err(e) = c.hold(std::slice::from_ref(&name)) {
                tracing::warn!("{name}: not added to its warm set: {e}");
            }
        }
        Ok(())
    }

    /// An idle Faaslet of `user/function`, made as a call makes it (from
    /// its Proto-Faaslet, resuming where it was captured): for benchmarks
    /// and for holding instances ready.
    pub fn faaslet(&self, user: &str, function: &str) -> Result<Faaslet, WorkerError> {
        let f = self.function(user, function)?;
        let config = FaasletConfig {
            args: f.args.clone(),
            resume: f.resume.clone(),
            ..self.faaslet_config(user, function)
        };
        Faaslet::from_snapshot(&self.inner.engine, &f.snapshot, config).map_err(|error| {
            WorkerError::Call {
                function: format!("{user}/{function}"),
                error,
            }
        })
    }

    /// How many idle, prepared Faaslets of `user/function` the pool holds
    /// now (a call takes one and answers without restoring an instance).
    pub fn pooled(&self, user: &str, function: &str) -> usize {
        let pool = self.inner.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.get(&(user.to_string(), function.to_string()))
            .map_or(0, Vec::len)
    }

    /// An idle, prepared Faaslet of `user/function` made from upload `f`
    /// (entries of an earlier upload are dropped).
    fn take_pooled(&self, user: &str, function: &str, f: &Arc<Function>) -> Option<Faaslet> {
        let mut pool = self.inner.pool.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.get_mut(&(user.to_string(), function.to_string()))?;
        while let Some((made_from, faaslet)) = idle.pop() {
            if Arc::ptr_eq(&made_from, f) {
                return Some(faaslet);
            }
        }
        None
    }

    /// Prepares `faaslet` for its next call and puts it in the pool, as a
    /// job of its own after the call (dropped if the queue is full, the
    /// pool has enough, or preparing fails).
    fn give_back(&self, user: &str, function: &str, f: &Arc<Function>, mut faaslet: Faaslet) {
        let w = self.clone();
        let key = (user.to_string(), function.to_string());
        let f = f.clone();
        let _ = self.inner.executor.try_submit(Box::new(move || {
            let t = Instant::now();
            if faaslet.prepare().is_err() {
                return;
            }
            f.restore_ns
                .store(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            let cap = w.inner.config.pool;
            let mut pool = w.inner.pool.lock().unwrap_or_else(|e| e.into_inner());
            let idle = pool.entry(key).or_default();
            idle.retain(|(made_from, _)| Arc::ptr_eq(made_from, &f));
            if idle.len() < cap {
                idle.push((f, faaslet));
            }
        }));
    }

    /// Makes `f` the function `user/function` (replacing any other).
    pub(crate) fn insert_function(&self, user: &str, function: &str, f: Function) {
        self.functions_mut()
            .insert((user.to_string(), function.to_string()), Arc::new(f));
    }

    /// Calls `user/function` with `input` on this thread, from its
    /// Proto-Faaslet, under the deadline. Blocking: call it on an
    /// executor thread.
    pub fn call(&self, user: &str, function: &str, input: &[u8]) -> Result<CallReply, WorkerError> {
        self.call_chained(user, function, ChainEntry::Main, 0, input)
    }

    /// [`call`](Self::call) for a chained call that another worker placed
    /// here: entering `entry`, at `depth` in its chain (deeper chains are
    /// refused).
    pub fn call_chained(
        &self,
        user: &str,
        function: &str,
        entry: ChainEntry,
        depth: u32,
        input: &[u8],
    ) -> Result<CallReply, WorkerError> {
        let f = self.function_or_fetch(user, function)?;
        let name = format!("{user}/{function}");
        let cold = !f.called.swap(true, Ordering::Relaxed);
        let start = Instant::now();
        let result = self.run(&f, &name, entry, depth, input);
        let outcome = match &result {
            Ok(r) if r.return_code == 0 => "success",
            Ok(_) => "failed",
            Err(WorkerError::Trap { .. }) => "trap",
            Err(WorkerError::Timeout { .. }) => "timeout",
            Err(_) => "error",
        };
        self.inner
            .metrics
            .call(&name, outcome, start.elapsed(), cold);
        result
    }

    fn run(
        &self,
        f: &Arc<Function>,
        name: &str,
        entry: ChainEntry,
        depth: u32,
        input: &[u8],
    ) -> Result<CallReply, WorkerError> {
        let (user, function) = name.split_once('/').unwrap_or((name, name));
        let config = FaasletConfig {
            chain_depth: depth,
            args: f.args.clone(),
            resume: f.resume.clone(),
            ..self.faaslet_config(user, function)
        };
        let call_err = |error| WorkerError::Call {
            function: name.to_string(),
            error,
        };
        // Pooled Faaslets are the plain configuration (depth 0): a chained
        // call placed here from another worker makes its own.
        // Only functions whose restore costs more than the pool's own
        // bookkeeping (a job per call) are pooled.
        let pooled = self.inner.config.proto_faaslets
            && depth == 0
            && self.inner.config.pool > 0
            && f.restore_ns.load(Ordering::Relaxed)
                >= self.inner.config.pool_after.as_nanos() as u64;
        let from_pool = if pooled {
            self.take_pooled(user, function, f)
        } else {
            None
        };
        if pooled {
            self.inner.metrics.pool(from_pool.is_some());
        }
        // A Faaslet that hit its deadline is dropped, never reused.
        let mut faaslet = if let Some(f) = from_pool {
            Ok(f)
        } else if self.inner.config.proto_faaslets {
            let t = Instant::now();
            let made = Faaslet::from_snapshot(&self.inner.engine, &f.snapshot, config);
            f.restore_ns
                .store(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            made
        } else {
            // A fresh instance starts from `_start`: nothing to resume.
            let config = FaasletConfig {
                resume: None,
                ..config
            };
            Faaslet::new(&self.inner.engine, f.snapshot.module(), config)
        }
        .map_err(call_err)?;
        let called = match entry {
            ChainEntry::Main => faaslet.call(input),
            ChainEntry::Ptr(func) => faaslet.call_ptr(func, input),
        };
        let timed_out = matches!(&called, Err(FaasletError::Trap { trap, .. }) if trap.kind == TrapKind::Interrupted);
        if pooled && !timed_out {
            self.give_back(user, function, f, faaslet);
        }
        let out = match called {
            Ok(out) => out,
            Err(FaasletError::Trap { trap, output }) => {
                if trap.kind == TrapKind::Interrupted {
                    return Err(WorkerError::Timeout {
                        function: name.to_string(),
                        timeout: self.inner.config.timeout,
                    });
                }
                return Err(WorkerError::Trap {
                    function: name.to_string(),
                    kind: trap.kind.message(),
                    detail: trap.to_string(),
                    output,
                });
            }
            Err(e) => return Err(call_err(e)),
        };
        if f.script && out.return_code != 0 {
            return Err(WorkerError::Exception {
                function: name.to_string(),
                code: out.return_code,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                output: out.stdout,
            });
        }
        let output = if out.output.is_empty() {
            out.stdout
        } else {
            out.output
        };
        let limit = self.inner.config.max_output;
        if output.len() > limit {
            return Err(WorkerError::OutputTooLarge {
                function: name.to_string(),
                len: output.len(),
                limit,
            });
        }
        Ok(CallReply {
            output,
            return_code: out.return_code,
        })
    }

    /// Starts `user/function` on the executor and returns its call id at
    /// once; its outcome is kept for [`status`](Worker::status).
    pub fn call_async(
        &self,
        user: &str,
        function: &str,
        input: Vec<u8>,
    ) -> Result<u64, WorkerError> {
        self.known(user, function)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.set_status(id, CallStatus::Running);
        let w = self.clone();
        let (user, function) = (user.to_string(), function.to_string());
        let submitted = self.inner.executor.submit(move || {
            let status = match w.call(&user, &function, &input) {
                Ok(r) if r.return_code == 0 => CallStatus::Success(r),
                Ok(r) => CallStatus::Failed(format!("return code {}", r.return_code), r.output),
                Err(e) => CallStatus::Failed(e.to_string(), Vec::new()),
            };
            w.set_status(id, status);
        });
        if let Err(e) = submitted {
            self.results().map.remove(&id);
            self.inner.metrics.rejected();
            return Err(e.into());
        }
        Ok(id)
    }

    fn results(&self) -> std::sync::MutexGuard<'_, Results> {
        self.inner.results.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_status(&self, id: u64, status: CallStatus) {
        let mut r = self.results();
        if r.map.insert(id, status).is_none() {
            r.order.push_back(id);
            while r.order.len() > r.capacity {
                if let Some(old) = r.order.pop_front() {
                    r.map.remove(&old);
                }
            }
        }
    }

    /// Records an asynchronous call that another worker (at `addr`)
    /// accepted as its call `remote`; returns this worker's id for it.
    pub fn remote_call(&self, addr: &str, remote: u64) -> u64 {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.set_status(
            id,
            CallStatus::Remote {
                addr: addr.to_string(),
                id: remote,
            },
        );
        id
    }

    /// The status of asynchronous call `id`, if it is still kept.
    pub fn status(&self, id: u64) -> Option<CallStatus> {
        self.results().map.get(&id).cloned()
    }
}

impl ChainHost for Inner {
    fn lookup(
        self: Arc<Self>,
        user: &str,
        name: &str,
    ) -> Result<(Module, Option<Snapshot>), FaasletError> {
        match (Worker { inner: self }).function_or_fetch(user, name) {
            Ok(f) => Ok((f.snapshot.module().clone(), Some(f.snapshot.clone()))),
            Err(WorkerError::NoSuchFunction { .. }) => Err(FaasletError::NoSuchFunction {
                name: name.to_string(),
                dir: format!("the functions of user {user}"),
            }),
            Err(e) => Err(FaasletError::Lookup {
                name: name.to_string(),
                message: e.to_string(),
            }),
        }
    }

    fn place(
        &self,
        user: &str,
        function: &str,
    ) -> Option<(super::cluster::Member, Arc<Cluster>, tokio::runtime::Handle)> {
        let cluster = self.cluster.get()?;
        let rt = self.forwarder.get()?.handle().clone();
        let load =
            u32::try_from(self.executor.running() + self.executor.queued()).unwrap_or(u32::MAX);
        let threads = self.config.threads as u32;
        // A short wait here beats a hop; and a call shorter than what
        // sending it costs this worker is never worth sending (a fan-out
        // of no-op children ran 3x slower spread over three workers).
        let mean = self.executor.mean_job();
        let after = self.config.forward_after;
        if load >= threads
            && after > Duration::ZERO
            && (self.executor.expected_wait() < after || (mean > Duration::ZERO && mean < HOP_COST))
        {
            return None;
        }
        let peer = cluster.place(&format!("{user}/{function}"), load, threads)?;
        Some((peer, cluster.clone(), rt))
    }

    fn record(&self, forwarded: bool) {
        self.metrics.chained(forwarded);
    }

    fn idempotent(&self, user: &str, function: &str) -> bool {
        self.functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(user.to_string(), function.to_string()))
            .is_some_and(|f| f.idempotent)
    }

    fn executor(&self) -> &Arc<Executor> {
        &self.executor
    }

    fn forward_timeout(&self) -> Duration {
        self.config.timeout + FORWARD_GRACE
    }
}

/// Removes the files of `function` in `dir` (a user's directory) that
/// belong to another form of it than the one just stored: the wasm module
/// (and its idempotent mark) and the scripts of other languages, so that a
/// restart reloads only the function as last uploaded. `kept`: the
/// language just stored, `None` for a wasm module.
pub(crate) fn remove_other_forms(dir: &Path, function: &str, kept: Option<Language>) {
    let mut gone: Vec<String> = Language::ALL
        .into_iter()
        .filter(|l| Some(*l) != kept)
        .map(|l| l.extension().to_string())
        .collect();
    if kept.is_some() {
        gone.push("wasm".into());
        gone.push(IDEMPOTENT_MARK.into());
    } else {
        gone.push("point".into());
    }
    for ext in gone {
        let _ = std::fs::remove_file(dir.join(format!("{function}.{ext}")));
    }
}
