//! `faaslet serve` (a worker with its HTTP API), `faaslet upload` and
//! `faaslet invoke` (its clients).

use crate::client::{request, split_url};
use faaslet_platform::worker::{serve_until_signal, Language, Worker, WorkerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How `faaslet serve` was asked to run.
#[derive(Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The data directory.
    pub data: PathBuf,
    /// Executor threads (0: one per core).
    pub threads: usize,
    /// Executor queue capacity.
    pub queue: usize,
    /// Call deadline.
    pub timeout: Duration,
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Largest call output, bytes.
    pub max_output: usize,
    /// The state store (see [`WorkerConfig::state`]).
    pub state: std::sync::Arc<dyn faaslet_state::StateStore>,
    /// The Redis of the state tier, if any: the worker joins the cluster
    /// there once it listens.
    pub cluster: Option<std::sync::Arc<faaslet_state::RedisTier>>,
    /// The address the cluster knows this worker by (default: the bound
    /// address).
    pub advertise: Option<String>,
    /// Bytes of linear memory each call may hold.
    pub memory_limit: u64,
    /// Longest an upload may compile.
    pub compile_budget: Duration,
    /// Most bytes one upload's compilation may use (in a child process
    /// running this very program: see [`WorkerConfig::compile_program`]).
    pub compile_memory: u64,
    /// See [`WorkerConfig::forward_after`].
    pub forward_after: Duration,
    /// See [`WorkerConfig::python`].
    pub python: Option<PathBuf>,
    /// See [`WorkerConfig::js`].
    pub js: Option<PathBuf>,
    /// Whether calls start from Proto-Faaslets (see
    /// [`WorkerConfig::proto_faaslets`]).
    pub proto_faaslets: bool,
}

/// Makes glibc's malloc hand allocations of 1 MiB or more straight to
/// `mmap` and give them back on `free`, and trim its heaps past 1 MiB of
/// free space. A worker moves state values and request bodies through
/// big transient buffers (a 100 MB upload, 4 MiB pull chunks) on many
/// threads; with glibc's defaults (a mmap threshold that rises to the
/// largest buffer freed, per-thread arenas) each thread's arena kept what
/// it had freed, and a worker that had pulled a 100 MB value held some
/// 50-100 MB more than the value itself (found by `benches/paper`).
fn return_big_buffers_to_the_kernel() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets two of glibc's allocation thresholds; it is
    // called before the worker starts its threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
    }
}

/// Runs a worker until SIGINT or SIGTERM.
pub fn serve(engine: &faaslet::Engine, a: ServeArgs) -> Result<(), String> {
    let _ = tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
    return_big_buffers_to_the_kernel();
    let mut config = WorkerConfig::new(&a.data);
    if a.threads > 0 {
        config.threads = a.threads;
    }
    config.queue = a.queue;
    config.timeout = a.timeout;
    config.max_body = a.max_body;
    config.max_output = a.max_output;
    config.state = Some(a.state.clone());
    config.memory_limit = a.memory_limit;
    config.compile_budget = a.compile_budget;
    config.compile_memory = a.compile_memory;
    config.compile_program =
        Some(std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?);
    config.forward_after = a.forward_after;
    config.python = a.python.clone();
    config.js = a.js.clone();
    config.proto_faaslets = a.proto_faaslets;
    let worker = Worker::new(engine, config).map_err(|e| e.to_string())?;
    for (language, configured) in [
        (Language::Python, a.python.is_some()),
        (Language::JavaScript, a.js.is_some()),
    ] {
        if !configured {
            continue;
        }
        // Prepared in the background: the first upload waits for it.
        let w = worker.clone();
        std::thread::Builder::new()
            .name(format!("faaslet-{}", language.key()))
            .spawn(move || match w.script_runtime(language) {
                Ok(_) => tracing::info!("{language} functions ready"),
                Err(e) => tracing::error!("{language} functions unavailable: {e}"),
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
    }
    let joining = worker.clone();
    let mut joined = Ok(());
    serve_until_signal(worker, a.listen, |addr| {
        // Joined before it says it listens: an upload from then on is
        // published to the cluster.
        if let Some(redis) = &a.cluster {
            joined = joining
                .join_cluster(
                    redis.clone(),
                    &a.advertise.clone().unwrap_or_else(|| addr.to_string()),
                )
                .map(|_| ());
            if let Err(e) = &joined {
                tracing::error!("not in the cluster: {e}");
            }
        }
        tracing::info!(
            "faaslet worker listening on http://{addr} (data {})",
            a.data.display()
        );
    })
    .map_err(|e| format!("serve: {e}"))?;
    if let Some(c) = joining.cluster() {
        c.leave();
    }
    joined.map_err(|e| e.to_string())
}

/// `faaslet upload URL USER FUNC FILE [--idempotent | --python | --js]`:
/// `script` is the language of FILE if it is a script (uploaded to `/p/`
/// or `/js/`), `None` for a module (`/f/`).
pub fn upload(
    url: &str,
    user: &str,
    function: &str,
    file: &PathBuf,
    idempotent: bool,
    script: Option<Language>,
) -> Result<(), String> {
    let wasm = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let (host, prefix) = split_url(url)?;
    let query = if idempotent { "?idempotent=1" } else { "" };
    let kind = match script {
        None => "f",
        Some(Language::Python) => "p",
        Some(Language::JavaScript) => "js",
    };
    let r = request(
        &host,
        "PUT",
        &format!("{prefix}/{kind}/{user}/{function}{query}"),
        &wasm,
    )?;
    if r.status / 100 != 2 {
        return Err(format!("upload failed ({}): {}", r.status, r.text()));
    }
    println!("uploaded {user}/{function}");
    Ok(())
}

/// `faaslet invoke URL USER FUNC [--input DATA] [--async]`: prints the
/// output (or the call id); returns the function's return code.
pub fn invoke(
    url: &str,
    user: &str,
    function: &str,
    input: &[u8],
    asynchronous: bool,
) -> Result<i32, String> {
    use std::io::Write;
    let (host, prefix) = split_url(url)?;
    let q = if asynchronous { "?async=1" } else { "" };
    let r = request(
        &host,
        "POST",
        &format!("{prefix}/f/{user}/{function}{q}"),
        input,
    )?;
    if r.status / 100 != 2 {
        return Err(format!("call failed ({}): {}", r.status, r.text()));
    }
    let mut out = std::io::stdout();
    let _ = out.write_all(&r.body);
    if asynchronous {
        let _ = writeln!(out);
    }
    let _ = out.flush();
    Ok(r.header("x-faaslet-return-code")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

/// Starts a thread that advances `engine`'s epoch every
/// [`TICK`](faaslet_platform::worker::core::TICK) for the rest of the
/// process; returns the ticks in `secs` seconds (a deadline for
/// [`FaasletConfig::deadline_ticks`](faaslet_platform::FaasletConfig::deadline_ticks)).
pub fn start_ticker(engine: &faaslet::Engine, secs: f64) -> Result<u64, String> {
    use faaslet_platform::worker::core::TICK;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!(
            "bad --timeout {secs}: must be a positive number of seconds"
        ));
    }
    let engine = engine.clone();
    std::thread::Builder::new()
        .name("faaslet-ticker".into())
        .spawn(move || loop {
            std::thread::sleep(TICK);
            engine.increment_epoch();
        })
        .map_err(|e| format!("cannot start the ticker: {e}"))?;
    Ok(((secs * 1000.0) / TICK.as_millis() as f64).ceil().max(1.0) as u64)
}
