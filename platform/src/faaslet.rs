//! The [`Faaslet`]: one function's sandbox. A compiled module instance, its
//! private linear memory, the host interface it may call (WASI and the
//! Faasm API, nothing else), and the thread that runs it.
//!
//! Faaslets on one host share the services that travel in their
//! [`FaasletConfig`]: the state store (the local tier), the
//! [`FunctionRegistry`] in which chained calls find other functions by
//! name, and the WASI setup (mounts, output streams). A chained call runs
//! in a new Faaslet on its own thread, concurrently with its caller, which
//! may await it.
//!
//! ```no_run
//! use faaslet_platform::{Faaslet, FaasletConfig, FunctionRegistry};
//! use faaslet::{Engine, Module};
//!
//! let engine = Engine::default();
//! let module = Module::new(&engine, std::fs::read("fanout.wasm").unwrap()).unwrap();
//! let config = FaasletConfig {
//!     functions: Some(FunctionRegistry::new(&engine, "functions/")),
//!     ..FaasletConfig::new("fanout")
//! };
//! let mut faaslet = Faaslet::new(&engine, &module, config).unwrap();
//! let out = faaslet.call(b"100").unwrap();
//! println!("{} (exit {})", String::from_utf8_lossy(&out.output), out.return_code);
//! ```

use crate::at_input::{AtInput, AtInputError, InputPoint};
use crate::error::FaasletError;
use crate::executor::Executor;
use crate::faasm::FaasmView;
use crate::registry::FunctionRegistry;
use crate::scheduler::{ChainEntry, ChainScheduler, ChainedCall, Complete, RunHere};
use crate::wasi::WasiView;
use faaslet::{Engine, Error, Extern, Func, Instance, Linker, Module, Store, Val, ValType};
use faaslet_hostapi::faasm::{waits, CallResult, Chainer, FaasmCtx, FaasmError};
use faaslet_hostapi::wasi::{MountMode, Output, WasiCtx};
use faaslet_snapshot::Snapshot;
use faaslet_state::{LocalStateStore, StateStore};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Native stack of a chained call's thread: the wasm stack limit plus room
/// for host frames.
const CHAINED_THREAD_STACK: usize = 8 << 20;

/// How to set up a Faaslet. Chained calls inherit their caller's config
/// (with their own function name), so they share its state store,
/// function registry, mounts and output streams.
#[derive(Clone)]
pub struct FaasletConfig {
    /// The function's name (`argv[0]`).
    pub name: String,
    /// Further command-line arguments (`argv[1..]`); not passed on to
    /// chained calls.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Host directories mounted in the guest: (host, guest, mode).
    pub mounts: Vec<(PathBuf, String, MountMode)>,
    /// Listening TCP sockets handed to the guest (descriptors 3, 4, ...,
    /// before the mounts), as wasmtime's `--tcplisten`; each call gets its
    /// own duplicate of each. Chained calls get none.
    pub tcp_listeners: Vec<Arc<std::net::TcpListener>>,
    /// Where the guest's standard output goes.
    pub stdout: Output,
    /// Where the guest's standard error goes.
    pub stderr: Output,
    /// The flags `__faasm_conf_flag` reports.
    pub conf_flags: Arc<HashMap<String, u32>>,
    /// Where chained calls find functions by name (none: the
    /// [`scheduler`](Self::scheduler) finds them, and without one chaining
    /// by name returns call id 0).
    pub functions: Option<FunctionRegistry>,
    /// The state store (the local tier, in front of the global one).
    pub state: Arc<dyn StateStore>,
    /// The user the function runs as: its state keys live in this user's
    /// namespace (and count against this user's quota). Default `"default"`.
    pub user: String,
    /// Resource isolation around every call: the calling thread joins a
    /// CPU cgroup with these limits and a pooled network namespace for the
    /// duration of the call (see `faaslet_netns`). `None` runs unisolated.
    pub isolation: Option<FaasletIsolation>,
    /// Each call (chained calls too) traps as interrupted once the
    /// engine's epoch has advanced this many ticks past its start (the
    /// worker's ticker advances it); `None`: no deadline.
    pub deadline_ticks: Option<u64>,
    /// Where chained calls run: queued on this pool (an awaiting parent
    /// runs queued jobs meanwhile; a full queue runs the child inline), or
    /// `None`: each on a new thread.
    pub executor: Option<Arc<Executor>>,
    /// How deep in a chain this Faaslet is (0: called from outside);
    /// chaining past [`MAX_CHAIN_DEPTH`] fails.
    pub chain_depth: u32,
    /// The host interface linked once ([`HostLinker::new`]) and shared by
    /// every Faaslet made with this configuration (and its chained
    /// calls); `None`: each Faaslet links its own, which costs a few
    /// hundred allocations, more than the rest of a warm call.
    pub host: Option<HostLinker>,
    /// Bytes of linear memory each call's store may hold (its
    /// [`StoreLimits::memory_bytes`](faaslet::StoreLimits::memory_bytes):
    /// `memory.grow` past it returns -1, an instantiation or restore
    /// needing more fails naming the limit). `None`: the engine's
    /// [`Config::store_limits`](faaslet::Config::store_limits) (1 GiB by
    /// default). Chained calls inherit it.
    pub memory_limit: Option<u64>,
    /// Where chained calls run and how functions chained by name are
    /// found, when [`functions`](Self::functions) is `None` (the worker's
    /// cluster scheduler); `None`: every chained call runs on this host.
    /// Only consulted with an [`executor`](Self::executor).
    pub scheduler: Option<Arc<dyn ChainScheduler>>,
    /// Calls resume the program where its Proto-Faaslet was captured, at
    /// its first read of input ([`Faaslet::snapshot_at_input`]), instead
    /// of entering `_start` afresh. Only for Faaslets made from that
    /// snapshot; chained calls do not inherit it.
    pub resume: Option<Arc<InputPoint>>,
    /// The most bytes of chained calls' outputs one call holds at once
    /// (results are kept until the call ends, so a parent may await them
    /// in any order, more than once). A child whose output would pass it
    /// fails ([`FAILED_CALL`], no output) instead: without a bound, a guest
    /// chaining many calls with large outputs makes the host allocate
    /// without limit. Default [`CHAINED_OUTPUT_LIMIT`].
    pub chained_output_limit: usize,
    /// The most bytes a call may write with `__faasm_write_output` (more
    /// is a trap naming the limit, before the host copies anything);
    /// `None`: no cap beyond the guest's memory. Chained calls inherit it.
    pub max_output: Option<usize>,
    /// Whether a fresh instance (a Faaslet without a snapshot, and its
    /// chained calls) runs the module's initialisation export, the first
    /// of [`DEFAULT_INIT_EXPORTS`](faaslet_snapshot::DEFAULT_INIT_EXPORTS)
    /// it has, before each call, as a Proto-Faaslet would have run it once
    /// before its snapshot. Default `false` (a fresh instance runs only its
    /// start function). The worker sets it when it runs without
    /// Proto-Faaslets ([`WorkerConfig::proto_faaslets`]), so a function
    /// behaves the same either way.
    ///
    /// [`WorkerConfig::proto_faaslets`]: crate::worker::WorkerConfig::proto_faaslets
    pub init_fresh: bool,
}

/// WASI and the Faasm API linked once, for any number of Faaslets of one
/// engine (see [`FaasletConfig::host`]). Cloning it is cheap.
#[derive(Clone, Debug)]
pub struct HostLinker {
    linker: Linker<FaasletData>,
}

impl HostLinker {
    /// Links the Faaslet host interface for `engine`.
    pub fn new(engine: &Engine) -> Result<HostLinker, FaasletError> {
        let mut linker = Linker::new(engine);
        crate::wasi::add_to_linker(&mut linker)?;
        crate::faasm::add_to_linker(&mut linker)?;
        Ok(HostLinker { linker })
    }
}

/// The linker a Faaslet of `engine` uses: a clone of the configured one,
/// or a new one.
fn host_linker(
    engine: &Engine,
    config: &FaasletConfig,
) -> Result<Linker<FaasletData>, FaasletError> {
    match &config.host {
        Some(h) if h.linker.engine().same(engine) => Ok(h.linker.clone()),
        Some(_) => {
            Err(Error::Type("FaasletConfig::host was linked for another engine".into()).into())
        }
        None => Ok(HostLinker::new(engine)?.linker),
    }
}

/// How long one epoch tick lasts where faaslet advances the epoch (the
/// worker's ticker, `faaslet run --timeout`):
/// [`FaasletConfig::deadline_ticks`] are this long.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How deep chained calls may nest.
pub const MAX_CHAIN_DEPTH: u32 = 16;

/// Resource isolation for a Faaslet: the engine-wide [`Isolation`] layer
/// (created once, shared by every Faaslet) and this function's limits.
///
/// [`Isolation`]: faaslet_netns::Isolation
#[derive(Clone, Debug)]
pub struct FaasletIsolation {
    /// The isolation layer.
    pub isolation: Arc<faaslet_netns::Isolation>,
    /// This function's cgroup limits.
    pub limits: faaslet_netns::CgroupLimits,
}

impl std::fmt::Debug for FaasletConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaasletConfig")
            .field("name", &self.name)
            .field("args", &self.args)
            .field("mounts", &self.mounts)
            .field("functions", &self.functions)
            .finish()
    }
}

impl FaasletConfig {
    /// Defaults for function `name`: no mounts, inherited output streams, a
    /// fresh local state store, no function registry.
    pub fn new(name: impl Into<String>) -> FaasletConfig {
        FaasletConfig {
            name: name.into(),
            args: Vec::new(),
            env: Vec::new(),
            mounts: Vec::new(),
            tcp_listeners: Vec::new(),
            stdout: Output::Inherit,
            stderr: Output::Inherit,
            conf_flags: Arc::new(HashMap::new()),
            functions: None,
            state: Arc::new(LocalStateStore::new()),
            user: "default".to_string(),
            isolation: None,
            deadline_ticks: None,
            executor: None,
            chain_depth: 0,
            host: None,
            memory_limit: None,
            scheduler: None,
            resume: None,
            chained_output_limit: CHAINED_OUTPUT_LIMIT,
            max_output: None,
            init_fresh: false,
        }
    }

    fn for_chained(&self, name: &str) -> FaasletConfig {
        FaasletConfig {
            name: name.to_string(),
            args: Vec::new(),
            tcp_listeners: Vec::new(),
            resume: None,
            chain_depth: self.chain_depth + 1,
            ..self.clone()
        }
    }
}

/// The result of a call.
#[derive(Debug, Clone)]
pub struct CallOutput {
    /// What the function wrote with `__faasm_write_output`.
    pub output: Vec<u8>,
    /// Its return code: the `proc_exit` code, `main`'s result, or 0.
    pub return_code: i32,
    /// Its standard output, if [`FaasletConfig::stdout`] is `Capture`.
    pub stdout: Vec<u8>,
    /// Its standard error, if [`FaasletConfig::stderr`] is `Capture`.
    pub stderr: Vec<u8>,
}

/// The store data of a Faaslet.
pub struct FaasletData {
    wasi: WasiCtx,
    faasm: FaasmCtx,
    at_input: AtInput,
}

impl WasiView for FaasletData {
    fn wasi(&mut self) -> &mut WasiCtx {
        &mut self.wasi
    }

    fn at_input(&mut self) -> Option<&mut AtInput> {
        Some(&mut self.at_input)
    }
}

impl FaasmView for FaasletData {
    fn faasm(&mut self) -> &mut FaasmCtx {
        &mut self.faasm
    }
}

/// An instantiation, made ahead of a call.
enum Ready {
    /// An instance to call.
    Instance(Store<FaasletData>, Instance),
    /// The start function called `proc_exit` with this code: the call is
    /// over before it began, as a normal exit (not an instantiation error).
    Exited(Store<FaasletData>, i32),
}

/// The store and instance a call ran in.
struct Spent {
    store: Store<FaasletData>,
    instance: Instance,
    /// The store's census before the call: a call that left objects in
    /// the store (an exception, an externref) is not reused.
    census: faaslet::StoreCensus,
    /// The call ended by returning or exiting (`proc_exit`): the store
    /// can be put back to the Proto-Faaslet. Any other trap (an
    /// interrupted call among them) leaves it to be dropped.
    reusable: bool,
}

/// One function's sandbox. Each [`call`](Faaslet::call) runs in a fresh
/// instance with fresh memory, so nothing leaks from one call to the next.
/// A Faaslet made with [`from_snapshot`](Faaslet::from_snapshot) starts
/// every call from its Proto-Faaslet instead (restored copy-on-write, no
/// initialisation run again).
pub struct Faaslet {
    engine: Engine,
    module: Module,
    /// The Proto-Faaslet every call starts from, if any.
    snapshot: Option<Snapshot>,
    config: FaasletConfig,
    linker: Linker<FaasletData>,
    /// An instance made ahead of the next call.
    ready: Option<Ready>,
    /// The store and instance of the last call, kept for
    /// [`prepare`](Faaslet::prepare): it puts them back to the
    /// Proto-Faaslet in place, or drops them, after the call has answered
    /// rather than in the call itself.
    spent: Option<Spent>,
    /// This Faaslet's cgroup, when isolation is configured.
    cgroup: Option<faaslet_netns::FunctionCgroup>,
}

impl std::fmt::Debug for Faaslet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faaslet")
            .field("config", &self.config)
            .finish()
    }
}

impl Faaslet {
    /// A Faaslet of `module`: links it against WASI and the Faasm API and
    /// instantiates it, so link errors surface here.
    pub fn new(
        engine: &Engine,
        module: &Module,
        config: FaasletConfig,
    ) -> Result<Faaslet, FaasletError> {
        Faaslet::build(engine, module.clone(), None, config)
    }

    /// Links the host interface, sets up isolation and makes the first
    /// instance (fresh, or restored from `snapshot`).
    fn build(
        engine: &Engine,
        module: Module,
        snapshot: Option<Snapshot>,
        config: FaasletConfig,
    ) -> Result<Faaslet, FaasletError> {
        let linker = host_linker(engine, &config)?;
        let mut f = Faaslet {
            engine: engine.clone(),
            module,
            snapshot,
            config,
            linker,
            ready: None,
            spent: None,
            cgroup: None,
        };
        if let Some(iso) = &f.config.isolation {
            f.cgroup = Some(iso.isolation.cgroup_for(&f.config.name, &iso.limits)?);
        }
        let inst = f.instantiate(Vec::new())?;
        f.ready = Some(inst);
        Ok(f)
    }

    /// A Faaslet whose every call starts from `snapshot` (a Proto-Faaslet
    /// of its module, made by [`Faaslet::snapshot`] or
    /// [`Snapshot::create`]): the instance is restored copy-on-write, so
    /// the state the initialisation left is there and no data segment,
    /// start function or initialisation export runs again. Chained calls
    /// by pointer into the same module start from it too.
    ///
    /// ```
    /// use faaslet_platform::{Faaslet, FaasletConfig};
    /// use faaslet::{Engine, Module};
    ///
    /// let engine = Engine::default();
    /// let module = Module::new(&engine, r#"(module
    ///     (global $n (mut i32) (i32.const 0))
    ///     (func (export "_initialize") (global.set $n (i32.const 42)))
    ///     (func (export "main") (result i32) (global.get $n)))"#).unwrap();
    /// let snap = Faaslet::snapshot(&engine, &module, FaasletConfig::new("f"), None).unwrap();
    /// let mut f = Faaslet::from_snapshot(&engine, &snap, FaasletConfig::new("f")).unwrap();
    /// assert_eq!(f.call(b"").unwrap().return_code, 42);
    /// // Fresh, `_initialize` never runs: the global is 0.
    /// let mut g = Faaslet::new(&engine, &module, FaasletConfig::new("f")).unwrap();
    /// assert_eq!(g.call(b"").unwrap().return_code, 0);
    /// ```
    pub fn from_snapshot(
        engine: &Engine,
        snapshot: &Snapshot,
        config: FaasletConfig,
    ) -> Result<Faaslet, FaasletError> {
        Faaslet::build(
            engine,
            snapshot.module().clone(),
            Some(snapshot.clone()),
            config,
        )
    }

    /// Makes a Proto-Faaslet of `module`: instantiates it linked against
    /// the Faaslet host interface (WASI and the Faasm API, set up from
    /// `config`), runs its initialisation export (`init`, else the first of
    /// [`DEFAULT_INIT_EXPORTS`](faaslet_snapshot::DEFAULT_INIT_EXPORTS) it
    /// has) and captures the result. Only the guest's state is kept; the
    /// host-side context of the initialisation (its input, output, open
    /// files) is not.
    pub fn snapshot(
        engine: &Engine,
        module: &Module,
        config: FaasletConfig,
        init: Option<&str>,
    ) -> Result<Snapshot, FaasletError> {
        let linker = host_linker(engine, &config)?;
        let f = Faaslet {
            engine: engine.clone(),
            module: module.clone(),
            snapshot: None,
            config,
            linker,
            ready: None,
            spent: None,
            cgroup: None,
        };
        let mut store = f.new_store(Vec::new())?;
        let mut linker = f.linker;
        let imports = resolve_imports(&mut linker, &mut store, module)?;
        Ok(Snapshot::create(&mut store, module, &imports, init)?)
    }

    /// Makes a Proto-Faaslet of an unmodified program at its first read of
    /// input: runs `module` (transformed by
    /// [`at_input::asyncify`](crate::at_input::asyncify)) from `_start`
    /// with an empty stdin until it first reads descriptor 0, and captures
    /// it there. Calls of a Faaslet made from the snapshot with
    /// [`FaasletConfig::resume`] set to the returned point resume there,
    /// each with its own input, and behave as a fresh run with that input
    /// (see [`at_input`](crate::at_input) for what is not replayed).
    pub fn snapshot_at_input(
        engine: &Engine,
        module: &Module,
        config: FaasletConfig,
    ) -> Result<(Snapshot, InputPoint), AtInputError> {
        let reads_input = module
            .info()
            .imports
            .iter()
            .any(|i| i.module == crate::wasi::MODULE && i.name == "fd_read");
        if !reads_input {
            return Err(AtInputError::NoInputImport);
        }
        let linker = host_linker(engine, &config)?;
        let f = Faaslet {
            engine: engine.clone(),
            module: module.clone(),
            snapshot: None,
            config: FaasletConfig {
                stdout: Output::Capture,
                stderr: Output::Capture,
                ..config
            },
            linker,
            ready: None,
            spent: None,
            cgroup: None,
        };
        let mut store = f.new_store(Vec::new())?;
        store.data_mut().at_input = AtInput::Capture(None);
        store
            .data_mut()
            .wasi
            .set_stdin(faaslet_hostapi::wasi::Input::Bytes(Vec::new()));
        let mut linker = f.linker;
        let instance = linker
            .instantiate(&mut store, module)
            .map_err(FaasletError::from)?;
        let start = instance
            .get_func(&mut store, "_start")
            .ok_or(FaasletError::NoEntry)?;
        let ran = start.call(&mut store, &[], &mut []);
        let buffer = match (&store.data().at_input, ran) {
            (AtInput::Capture(Some(buffer)), Ok(())) => *buffer,
            (_, Err(Error::Trap(trap))) => {
                return Err(match crate::wasi::exit_code(&trap) {
                    Some(code) => AtInputError::EndedFirst(code),
                    None => FaasletError::Trap {
                        trap,
                        output: Vec::new(),
                    }
                    .into(),
                })
            }
            (_, Err(e)) => return Err(FaasletError::from(e).into()),
            (_, Ok(())) => return Err(AtInputError::EndedFirst(0)),
        };
        let stop = instance
            .get_func(&mut store, "asyncify_stop_unwind")
            .ok_or_else(|| {
                FaasletError::from(Error::Link(
                    "the module does not export asyncify_stop_unwind (not asyncified?)".into(),
                ))
            })?;
        stop.call(&mut store, &[], &mut [])
            .map_err(FaasletError::from)?;
        store.data_mut().at_input = AtInput::Off;
        let snapshot = Snapshot::capture(&mut store, instance).map_err(FaasletError::from)?;
        let data = store.data_mut();
        Ok((
            snapshot,
            InputPoint {
                buffer,
                stdout: data.wasi.take_stdout(),
                stderr: data.wasi.take_stderr(),
            },
        ))
    }

    /// Makes the instance the next call runs in now, if it is not made
    /// yet (a call consumes its instance; the next makes a new one, fresh
    /// or restored from the Proto-Faaslet). For pools of idle Faaslets:
    /// prepare one off the critical path, and the call that takes it only
    /// runs.
    ///
    /// A Faaslet made from a Proto-Faaslet puts the instance its last call
    /// ran in back to the Proto-Faaslet in place
    /// ([`Snapshot::reset`]: the pages the call wrote get the snapshot's
    /// bytes again, globals, tables and segments are set back) and gives
    /// it a fresh WASI and Faasm context, which is all a new store would
    /// differ in; that avoids building the store and instance again (for
    /// CPython, 11,000 function references and 5,900 table elements).
    /// After a trap other than an exit it makes a new one.
    pub fn prepare(&mut self) -> Result<(), FaasletError> {
        if self.ready.is_some() {
            self.spent = None;
            return Ok(());
        }
        if let Some(ready) = self.reuse_spent() {
            self.ready = Some(ready);
            return Ok(());
        }
        // Dropped first, so its memory is parked for the new instance.
        self.spent = None;
        self.ready = Some(self.instantiate(Vec::new())?);
        Ok(())
    }

    /// The last call's store and instance put back to the Proto-Faaslet,
    /// if there are any and that works.
    fn reuse_spent(&mut self) -> Option<Ready> {
        let spent = self.spent.take()?;
        let snapshot = self.snapshot.as_ref()?;
        if !spent.reusable {
            return None;
        }
        let Spent {
            mut store,
            instance,
            census,
            ..
        } = spent;
        if store.census() != census {
            return None;
        }
        snapshot.reset(&mut store, instance).ok()?;
        let data = self.new_data(Vec::new()).ok()?;
        // The last call's WASI context (its open files, sockets and
        // output) and Faasm context go here.
        *store.data_mut() = data;
        Some(Ready::Instance(store, instance))
    }

    /// The Proto-Faaslet calls start from, if any.
    pub fn snapshot_of(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &FaasletConfig {
        &self.config
    }

    fn instantiate(&mut self, input: Vec<u8>) -> Result<Ready, FaasletError> {
        let mut store = self.new_store(input)?;
        let instance = match &self.snapshot {
            Some(snap) => {
                let imports = resolve_imports(&mut self.linker, &mut store, &self.module)?;
                snap.restore(&mut store, &imports)?
            }
            None => match self.linker.instantiate(&mut store, &self.module) {
                Ok(instance) if self.config.init_fresh => {
                    // Under the call's deadline, as the call will be.
                    if let Some(ticks) = self.config.deadline_ticks {
                        store.set_epoch_deadline(ticks);
                    }
                    match run_init_export(&mut store, instance) {
                        Ok(()) => instance,
                        Err(Error::Trap(trap)) => {
                            return match crate::wasi::exit_code(&trap) {
                                Some(code) => Ok(Ready::Exited(store, code)),
                                None => Err(Error::Trap(trap).into()),
                            }
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(instance) => instance,
                // `proc_exit` in the start function ends the program there.
                Err(Error::Trap(trap)) => {
                    return match crate::wasi::exit_code(&trap) {
                        Some(code) => Ok(Ready::Exited(store, code)),
                        None => Err(Error::Trap(trap).into()),
                    }
                }
                Err(e) => return Err(e.into()),
            },
        };
        Ok(Ready::Instance(store, instance))
    }

    /// A store holding a fresh WASI and Faasm context for one call.
    fn new_store(&self, input: Vec<u8>) -> Result<Store<FaasletData>, FaasletError> {
        let mut store = Store::new(&self.engine, self.new_data(input)?);
        if let Some(bytes) = self.config.memory_limit {
            store.set_limits(faaslet::StoreLimits {
                memory_bytes: bytes,
                ..store.limits()
            });
        }
        Ok(store)
    }

    /// A fresh WASI and Faasm context for one call.
    fn new_data(&self, input: Vec<u8>) -> Result<FaasletData, FaasletError> {
        let c = &self.config;
        let mut b = WasiCtx::builder()
            .arg(c.name.clone())
            .args(c.args.iter().cloned())
            .stdout(c.stdout)
            .stderr(c.stderr);
        for (k, v) in &c.env {
            b = b.env(k.clone(), v.clone());
        }
        for l in &c.tcp_listeners {
            let dup = l.try_clone().map_err(|e| FaasletError::Io {
                path: l
                    .local_addr()
                    .map_or_else(|_| "tcp listener".into(), |a| format!("tcp listener {a}")),
                message: e.to_string(),
            })?;
            b = b.tcp_listener(dup);
        }
        for (host, guest, mode) in &c.mounts {
            b = b.mount(host.clone(), guest.clone(), *mode);
        }
        let wasi = b.build()?;
        let chainer = FaasletChainer {
            engine: self.engine.clone(),
            module: self.module.clone(),
            snapshot: self.snapshot.clone(),
            config: c.clone(),
            calls: HashMap::new(),
            nodes: HashMap::new(),
            names: HashMap::new(),
            deadline: None,
            held: Arc::new(AtomicUsize::new(0)),
        };
        let mut faasm = FaasmCtx::new(input, c.state.clone(), Box::new(chainer))
            .with_conf_flags(c.conf_flags.clone())
            .with_user(&c.user);
        if let Some(limit) = c.max_output {
            faasm = faasm.with_max_output(limit);
        }
        Ok(FaasletData {
            wasi,
            faasm,
            at_input: AtInput::Off,
        })
    }

    /// Runs the function's entry point (`_start`, or `main` returning the
    /// return code) with `input`.
    pub fn call(&mut self, input: &[u8]) -> Result<CallOutput, FaasletError> {
        self.run(ChainEntry::Main, input)
    }

    /// Runs the function at index `func` of the module's function table
    /// (as `__faasm_chain_ptr` does), through the module's exported
    /// `__faasm_call_ptr(i32) -> i32` (the C SDK defines it) or else its
    /// exported table. The function's result is the return code.
    pub fn call_ptr(&mut self, func: u32, input: &[u8]) -> Result<CallOutput, FaasletError> {
        self.run(ChainEntry::Ptr(func), input)
    }

    fn run(&mut self, entry: ChainEntry, input: &[u8]) -> Result<CallOutput, FaasletError> {
        self.run_as(waits::new_call_id(), entry, input)
    }

    /// [`run`](Self::run) as call `id` of the wait-for graph (a chained
    /// call runs as the id its parent gave it, so the parent can await it
    /// by identity: see `faaslet_hostapi::faasm::waits`).
    fn run_as(
        &mut self,
        id: waits::CallId,
        entry: ChainEntry,
        input: &[u8],
    ) -> Result<CallOutput, FaasletError> {
        // This call runs on this thread until it returns; a call below it
        // on the same thread (a parent running it inline) waits for it.
        let _running = waits::enter(id);
        let ready = match self.ready.take() {
            Some(r) => r,
            None => match self.reuse_spent() {
                Some(ready) => ready,
                None => {
                    self.spent = None;
                    self.instantiate(Vec::new())?
                }
            },
        };
        let (mut store, instance) = match ready {
            Ready::Instance(store, instance) => (store, instance),
            Ready::Exited(mut store, return_code) => {
                let data = store.data_mut();
                return Ok(CallOutput {
                    output: data.faasm.take_output(),
                    return_code,
                    stdout: data.wasi.take_stdout(),
                    stderr: data.wasi.take_stderr(),
                });
            }
        };
        let census = store.census();
        if let Some(ticks) = self.config.deadline_ticks {
            store.set_epoch_deadline(ticks);
        }
        let resume = match (&self.config.resume, entry) {
            (Some(point), ChainEntry::Main) => Some(point.clone()),
            _ => None,
        };
        // Host-side waits (state locks, awaits of chained calls) end at
        // the same deadline, as an Instant.
        // (A deadline too far to represent is none.)
        let deadline = self.config.deadline_ticks.and_then(|ticks| {
            let after = EPOCH_TICK.saturating_mul(u32::try_from(ticks).unwrap_or(u32::MAX));
            Instant::now().checked_add(after)
        });
        store.data_mut().faasm.set_deadline(deadline);
        store.data_mut().faasm.set_input(input.to_vec());
        // A WASI program reads the call's input as its standard input.
        store
            .data_mut()
            .wasi
            .set_stdin(faaslet_hostapi::wasi::Input::Bytes(input.to_vec()));
        // The thread joins the cgroup and network namespace for the call
        // only; the guard's drop puts it back, whatever the call did.
        let guard = match &self.config.isolation {
            Some(iso) => Some(iso.isolation.enter(self.cgroup.as_ref())?),
            None => None,
        };
        let result = match &resume {
            // Rewind to the first input read, then continue `_start` from
            // there (the read ends the rewind: `at_input`).
            Some(point) => {
                if self.config.stdout == Output::Inherit {
                    use std::io::Write;
                    let _ = std::io::stdout().write_all(&point.stdout);
                }
                if self.config.stderr == Output::Inherit {
                    use std::io::Write;
                    let _ = std::io::stderr().write_all(&point.stderr);
                }
                store.data_mut().at_input = AtInput::Resume;
                match instance.get_func(&mut store, "asyncify_start_rewind") {
                    Some(rewind) => rewind
                        .call(&mut store, &[Val::I32(point.buffer as i32)], &mut [])
                        .map_err(FaasletError::from)
                        .and_then(|()| invoke(&mut store, instance, entry)),
                    None => Err(FaasletError::from(Error::Link(
                        "the snapshot's module does not export asyncify_start_rewind".into(),
                    ))),
                }
            }
            None => invoke(&mut store, instance, entry),
        };
        drop(guard);
        crate::faasm::harvest_writes(&mut store, instance);
        let data = store.data_mut();
        data.faasm.release_locks();
        let output = data.faasm.take_output();
        let exit = data.wasi.exit_code();
        let mut stdout = data.wasi.take_stdout();
        let mut stderr = data.wasi.take_stderr();
        if let Some(point) = &resume {
            // What a fresh run writes before its first read.
            stdout.splice(0..0, point.stdout.iter().copied());
            stderr.splice(0..0, point.stderr.iter().copied());
        }
        let reusable = match &result {
            Ok(_) => true,
            Err(FaasletError::Engine(Error::Trap(trap))) => {
                exit.or_else(|| crate::wasi::exit_code(trap)).is_some()
            }
            Err(_) => false,
        };
        // Put back or dropped by `prepare` (or the next call), after this
        // one answered.
        self.spent = Some(Spent {
            store,
            instance,
            census,
            reusable,
        });
        let return_code = match result {
            Ok(rc) => rc,
            Err(FaasletError::Engine(Error::Trap(trap))) => {
                match exit.or_else(|| crate::wasi::exit_code(&trap)) {
                    Some(code) => code,
                    None => return Err(FaasletError::Trap { trap, output }),
                }
            }
            Err(e) => return Err(e),
        };
        Ok(CallOutput {
            output,
            return_code,
            stdout,
            stderr,
        })
    }
}

/// Runs `instance`'s initialisation export (the first of
/// [`DEFAULT_INIT_EXPORTS`](faaslet_snapshot::DEFAULT_INIT_EXPORTS) it has,
/// as [`Snapshot::create`] does), if it has one.
fn run_init_export(store: &mut Store<FaasletData>, instance: Instance) -> Result<(), Error> {
    let Some(f) = faaslet_snapshot::DEFAULT_INIT_EXPORTS
        .into_iter()
        .find_map(|n| instance.get_func(&mut *store, n))
    else {
        return Ok(());
    };
    let ty = f.ty(&*store);
    if !ty.params.is_empty() {
        return Err(Error::Type(
            "the initialisation export takes parameters".into(),
        ));
    }
    let mut results = vec![Val::I32(0); ty.results.len()];
    f.call(&mut *store, &[], &mut results)
}

/// `module`'s imports, resolved by `linker` as externs of `store`.
fn resolve_imports(
    linker: &mut Linker<FaasletData>,
    store: &mut Store<FaasletData>,
    module: &Module,
) -> Result<Vec<Extern>, FaasletError> {
    let mut imports = Vec::with_capacity(module.info().imports.len());
    for imp in &module.info().imports {
        let ext = linker.get(store, &imp.module, &imp.name).ok_or_else(|| {
            Error::Link(format!("unknown import `{}`.`{}`", imp.module, imp.name))
        })?;
        imports.push(ext);
    }
    Ok(imports)
}

/// Calls `entry` of `instance`; returns the return code.
fn invoke(
    store: &mut Store<FaasletData>,
    instance: Instance,
    entry: ChainEntry,
) -> Result<i32, FaasletError> {
    match entry {
        ChainEntry::Main => {
            if let Some(f) = instance.get_func(store, "_start") {
                let f = f.typed::<(), (), _>(store)?;
                f.call(store, ()).map_err(Error::Trap)?;
                Ok(0)
            } else if let Some(f) = instance.get_func(store, "main") {
                let f = f.typed::<(), i32, _>(store)?;
                Ok(f.call(store, ()).map_err(Error::Trap)?)
            } else {
                Err(FaasletError::NoEntry)
            }
        }
        ChainEntry::Ptr(index) => {
            if let Some(f) = instance.get_func(store, "__faasm_call_ptr") {
                let f = f.typed::<i32, i32, _>(store)?;
                return Ok(f.call(store, index as i32).map_err(Error::Trap)?);
            }
            let bad = |m: &str| FaasletError::BadFuncPtr(index, m.to_string());
            let table = instance
                .exports(store)
                .into_iter()
                .find_map(|(_, e)| e.into_table())
                .ok_or_else(|| bad("module exports neither `__faasm_call_ptr` nor a table"))?;
            let func: Func = match table.get(store, index as u64) {
                Some(Val::FuncRef(Some(f))) => f,
                Some(_) => return Err(bad("null or non-function entry")),
                None => return Err(bad("index out of the table")),
            };
            let ty = func.ty(store);
            if !ty.params.is_empty() || ty.results.len() > 1 {
                return Err(bad("function must take no parameters"));
            }
            if ty.results.first() == Some(&ValType::I32) {
                Ok(func
                    .typed::<(), i32, _>(store)?
                    .call(store, ())
                    .map_err(Error::Trap)?)
            } else if ty.results.is_empty() {
                func.typed::<(), (), _>(store)?
                    .call(store, ())
                    .map_err(Error::Trap)?;
                Ok(0)
            } else {
                Err(bad("function must return nothing or an i32"))
            }
        }
    }
}

/// Ids of chained calls, unique per process; 0 is never used.
static NEXT_CALL_ID: AtomicU32 = AtomicU32::new(1);

enum Slot {
    Running(JoinHandle<CallResult>),
    /// Queued or running on the executor; the result lands here.
    Pooled(Arc<Mutex<Option<CallResult>>>),
    Done(CallResult),
}

/// The [`Chainer`] of one Faaslet: starts chained calls on new threads and
/// keeps their results until the Faaslet's call ends.
struct FaasletChainer {
    engine: Engine,
    module: Module,
    /// The caller's Proto-Faaslet: calls by pointer start from it.
    snapshot: Option<Snapshot>,
    config: FaasletConfig,
    calls: HashMap<u32, Slot>,
    /// Each call's identity in the wait-for graph.
    nodes: HashMap<u32, waits::CallId>,
    /// The function each call runs, for errors.
    names: HashMap<u32, String>,
    /// The calling function's deadline: awaits give up then.
    deadline: Option<Instant>,
    /// Bytes of chained calls' outputs this Faaslet holds (see
    /// [`FaasletConfig::chained_output_limit`]).
    held: Arc<AtomicUsize>,
}

/// The return code of a chained call that failed to run or trapped.
pub const FAILED_CALL: i32 = -1;

/// The default [`FaasletConfig::chained_output_limit`]: 256 MiB.
pub const CHAINED_OUTPUT_LIMIT: usize = 256 << 20;

/// `r`, if its output fits in what `held` may still take under `limit`;
/// else a failed result (logged), its output dropped.
fn admit(held: &AtomicUsize, limit: usize, name: &str, r: CallResult) -> CallResult {
    let len = r.output.len();
    let before = held.fetch_add(len, Ordering::Relaxed);
    if before.saturating_add(len) <= limit {
        return r;
    }
    held.fetch_sub(len, Ordering::Relaxed);
    crate::guest_log::line(format_args!(
        "chained call to {name} failed: its output ({len} bytes) is past what its caller may hold ({limit} bytes of results at once)"
    ));
    CallResult {
        return_code: FAILED_CALL,
        output: Arc::from(&[][..]),
    }
}

fn run_chained(
    node: waits::CallId,
    engine: Engine,
    module: Module,
    snapshot: Option<Snapshot>,
    config: FaasletConfig,
    entry: ChainEntry,
    input: &[u8],
) -> CallResult {
    let name = config.name.clone();
    let faaslet = match &snapshot {
        Some(snap) => Faaslet::from_snapshot(&engine, snap, config),
        None => Faaslet::new(&engine, &module, config),
    };
    let result = faaslet.and_then(|mut f| f.run_as(node, entry, input));
    match result {
        Ok(out) => CallResult {
            return_code: out.return_code,
            output: out.output.into(),
        },
        Err(e) => {
            crate::guest_log::line(format_args!("chained call to {name} failed: {e}"));
            let output = match e {
                FaasletError::Trap { output, .. } => output,
                _ => Vec::new(),
            };
            CallResult {
                return_code: FAILED_CALL,
                output: output.into(),
            }
        }
    }
}

/// Chained calls that were given a thread or an executor job, since the
/// process started (a call refused up front is not counted).
static CHAINED_STARTED: AtomicU64 = AtomicU64::new(0);

/// How many chained calls this process has started (given a thread or an
/// executor job); calls refused before that, like a call by a function
/// pointer that is not in the table, are not counted.
pub fn chained_calls_started() -> u64 {
    CHAINED_STARTED.load(Ordering::Relaxed)
}

/// Why a call by pointer to `func` must fail, if that is known without
/// making an instance: what [`invoke`] would find in the callee's table.
/// A module exporting `__faasm_call_ptr` decides for itself. The table a
/// callee starts with is its snapshot's, or else the module's declared
/// one (exact when no start function can grow it first).
fn bad_func_ptr(module: &Module, snapshot: Option<&Snapshot>, func: u32) -> Option<&'static str> {
    let info = module.info();
    let mut table = None;
    for e in &info.exports {
        match e.index {
            _ if e.name == "__faasm_call_ptr" => return None,
            faaslet::ExportIndex::Table(t) if table.is_none() => table = Some(t),
            _ => {}
        }
    }
    let Some(t) = table else {
        return Some("module exports neither `__faasm_call_ptr` nor a table");
    };
    if let Some(snap) = snapshot {
        return match snap.image().table_holds_func(t, u64::from(func)) {
            None => Some("index out of the table"),
            Some(false) => Some("null or non-function entry"),
            Some(true) => None,
        };
    }
    let ty = info.tables.get(t as usize)?;
    if info.start.is_some() {
        // The start function may grow or fill the table first.
        return (u64::from(func) >= ty.maximum.unwrap_or(u64::MAX))
            .then_some("index out of the table");
    }
    if u64::from(func) >= ty.minimum {
        return Some("index out of the table");
    }
    // The entry after the active segments (later ones overwrite earlier
    // ones); any offset or item that is not a constant: unknown.
    use faaslet::ConstOp;
    let mut holds_func = false;
    for seg in &info.elements {
        let faaslet::ElemMode::Active { table, offset } = &seg.mode else {
            continue;
        };
        if *table != t {
            continue;
        }
        let [ConstOp::I32Const(at)] = offset.ops[..] else {
            return None;
        };
        let Some(i) = func.checked_sub(at as u32).map(|i| i as usize) else {
            continue;
        };
        match seg.items.get(i).map(|e| &e.ops[..]) {
            None => {}
            Some([ConstOp::RefFunc(_)]) => holds_func = true,
            Some([ConstOp::RefNull(_)]) => holds_func = false,
            Some(_) => return None,
        }
    }
    (!holds_func).then_some("null or non-function entry")
}

impl FaasletChainer {
    fn spawn(
        &mut self,
        module: Module,
        snapshot: Option<Snapshot>,
        name: &str,
        entry: ChainEntry,
        input: &[u8],
    ) -> Result<u32, FaasmError> {
        if self.config.chain_depth >= MAX_CHAIN_DEPTH {
            return Err(FaasmError::Chain(format!(
                "chain depth limit ({MAX_CHAIN_DEPTH}) reached"
            )));
        }
        let mut id = NEXT_CALL_ID.fetch_add(1, Ordering::Relaxed);
        if id == 0 {
            id = NEXT_CALL_ID.fetch_add(1, Ordering::Relaxed);
        }
        self.names.insert(id, name.to_string());
        if let ChainEntry::Ptr(func) = entry {
            // Fails before a thread and an instance are made for it.
            if let Some(why) = bad_func_ptr(&module, snapshot.as_ref(), func) {
                crate::guest_log::line(format_args!(
                    "chained call to {name} failed: {}",
                    FaasletError::BadFuncPtr(func, why.to_string())
                ));
                let failed = CallResult {
                    return_code: FAILED_CALL,
                    output: Arc::from(&[][..]),
                };
                self.calls.insert(id, Slot::Done(failed));
                return Ok(id);
            }
        }
        CHAINED_STARTED.fetch_add(1, Ordering::Relaxed);
        let node = waits::new_call_id();
        self.nodes.insert(id, node);
        let engine = self.engine.clone();
        let config = self.config.for_chained(name);
        if let Some(exec) = self.config.executor.clone() {
            let slot = Arc::new(Mutex::new(None));
            let out = slot.clone();
            let depth = config.chain_depth;
            let input: Arc<[u8]> = input.into();
            let job_input = input.clone();
            let held = self.held.clone();
            let limit = self.config.chained_output_limit;
            let job_name = name.to_string();
            let job: RunHere = Box::new(move || {
                let r = run_chained(node, engine, module, snapshot, config, entry, &job_input);
                let r = admit(&held, limit, &job_name, r);
                *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            });
            // The scheduler may place the call on another host; its result
            // lands in the same slot, and the executor's waiters (a parent
            // awaiting in `run_until_deadline`) are woken to see it.
            let job = match &self.config.scheduler {
                Some(scheduler) => {
                    let prefix = format!("{}/", self.config.user);
                    let call = ChainedCall {
                        user: self.config.user.clone(),
                        function: name.strip_prefix(&prefix).unwrap_or(name).to_string(),
                        entry,
                        input,
                        depth,
                    };
                    let out = slot.clone();
                    let waiters = exec.clone();
                    let held = self.held.clone();
                    let limit = self.config.chained_output_limit;
                    let remote_name = name.to_string();
                    let complete: Complete = Box::new(move |r| {
                        let r = admit(&held, limit, &remote_name, r);
                        *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                        waiters.wake_waiters();
                    });
                    // Handed back: it runs here.
                    scheduler.offload(call, complete, job).err()
                }
                None => Some(job),
            };
            if let Some(job) = job {
                // A full queue runs the child here and now: slower, never lost.
                if let Err(job) = exec.try_submit(job) {
                    job();
                }
            }
            self.calls.insert(id, Slot::Pooled(slot));
            return Ok(id);
        }
        let input = input.to_vec();
        let handle = std::thread::Builder::new()
            .name(format!("faaslet-{name}-{id}"))
            .stack_size(CHAINED_THREAD_STACK)
            .spawn(move || run_chained(node, engine, module, snapshot, config, entry, &input))
            .map_err(|e| FaasmError::Chain(format!("cannot start a thread: {e}")))?;
        self.calls.insert(id, Slot::Running(handle));
        Ok(id)
    }
}

impl Chainer for FaasletChainer {
    fn chain_name(&mut self, name: &str, input: &[u8]) -> Result<u32, FaasmError> {
        let unknown = |e: FaasletError| match e {
            FaasletError::BadName(_) | FaasletError::NoSuchFunction { .. } => {
                FaasmError::UnknownFunction(name.to_string())
            }
            other => FaasmError::Chain(other.to_string()),
        };
        let (module, snapshot) = match (&self.config.functions, &self.config.scheduler) {
            (Some(registry), _) => (registry.get(name).map_err(unknown)?, None),
            (None, Some(scheduler)) => scheduler
                .function(&self.config.user, name)
                .map_err(unknown)?,
            (None, None) => return Err(FaasmError::UnknownFunction(name.to_string())),
        };
        self.spawn(module, snapshot, name, ChainEntry::Main, input)
    }

    fn chain_ptr(&mut self, func: u32, input: &[u8]) -> Result<u32, FaasmError> {
        let name = self.config.name.clone();
        let snapshot = self.snapshot.clone();
        self.spawn(
            self.module.clone(),
            snapshot,
            &name,
            ChainEntry::Ptr(func),
            input,
        )
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    fn await_call(&mut self, id: u32) -> Result<CallResult, FaasmError> {
        // Every await ends by the caller's deadline, whatever the child
        // does (it may be blocked on a lock this caller holds: without a
        // bound the two would wait for each other forever). The child runs
        // on, to its own deadline; awaiting it again waits again.
        let deadline = self.deadline;
        let timed_out = |names: &HashMap<u32, String>| {
            FaasmError::Chain(format!(
                "await of chained call {id} ({}) did not end before the caller's deadline",
                names.get(&id).map_or("?", String::as_str)
            ))
        };
        let slot = self.calls.get_mut(&id).ok_or(FaasmError::UnknownCall(id))?;
        if let Slot::Done(r) = slot {
            return Ok(r.clone());
        }
        // A wait for a child that waits (maybe through others) for this
        // call would never end: refused at once, naming the cycle, rather
        // than at the deadline. (Declared even if the child finishes in a
        // moment: the graph only refuses waits that close a cycle.)
        let _waiting = match (waits::current(), self.nodes.get(&id)) {
            (Some(me), Some(child)) => Some(waits::wait_for_call(me, *child)?),
            _ => None,
        };
        let slot = self.calls.get_mut(&id).ok_or(FaasmError::UnknownCall(id))?;
        if let Slot::Pooled(cell) = slot {
            let cell = cell.clone();
            let taken =
                |c: &Mutex<Option<CallResult>>| c.lock().unwrap_or_else(|e| e.into_inner()).take();
            let result = match taken(&cell) {
                Some(r) => r,
                None => {
                    let exec = self
                        .config
                        .executor
                        .clone()
                        .ok_or(FaasmError::UnknownCall(id))?;
                    let done = exec.run_until_deadline(
                        || cell.lock().unwrap_or_else(|e| e.into_inner()).is_some(),
                        deadline,
                    );
                    if !done {
                        return Err(timed_out(&self.names));
                    }
                    taken(&cell).unwrap_or(CallResult {
                        return_code: FAILED_CALL,
                        output: Arc::from(&[][..]),
                    })
                }
            };
            self.calls.insert(id, Slot::Done(result.clone()));
            return Ok(result);
        }
        let Some(Slot::Running(handle)) = self.calls.remove(&id) else {
            unreachable!("slot checked above");
        };
        if let Some(deadline) = deadline {
            // No join with a timeout in std: poll.
            while !handle.is_finished() {
                let now = Instant::now();
                if now >= deadline {
                    self.calls.insert(id, Slot::Running(handle));
                    return Err(timed_out(&self.names));
                }
                std::thread::sleep((deadline - now).min(Duration::from_millis(2)));
            }
        }
        let result = handle.join().unwrap_or(CallResult {
            return_code: FAILED_CALL,
            output: Arc::from(&[][..]),
        });
        let name = self.names.get(&id).map_or("?", String::as_str);
        let result = admit(&self.held, self.config.chained_output_limit, name, result);
        self.calls.insert(id, Slot::Done(result.clone()));
        Ok(result)
    }
}
