//! Profiling aid for Python no-op calls from their Proto-Faaslet (issue 17):
//!
//! ```text
//! cargo build --release -p faaslet-cli --example py_calls
//! target/release/examples/py_calls DATA PYTHON [N] [pool|restore|worker]
//! ```
//!
//! uses the worker data directory `DATA` (as `faaslet bench cold-start
//! --python` leaves it: `$TMPDIR/faaslet-bench-python`, so the interpreter
//! is not asyncified again), uploads the no-op script if it is not there,
//! then runs N rounds on this thread alone and prints the median time and
//! page faults of each step:
//!
//! * `pool` (default): one Faaslet, as the worker's pool uses it:
//!   `prepare` (drop the last call's store, restore the next instance),
//!   then `call`;
//! * `restore`: a new Faaslet per round (the restore alone);
//! * `worker`: `Worker::call`, each once the pool holds a prepared
//!   Faaslet (the warm-pool row of the bench).
//!
//! `DISCARD=1` parks memories by dropping their written pages instead of
//! copying them back (`faaslet_sfi::set_keep_written(false)`). Run it under
//! `perf record -e cpu-clock -g` to see where the time goes.

use faaslet_platform::worker::{Worker, WorkerConfig};
use std::time::Instant;

/// Minor page faults of this thread so far.
fn minflt() -> u64 {
    // SAFETY: getrusage writes one `rusage` we own.
    let r = unsafe {
        let mut r: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut r);
        r
    };
    r.ru_minflt as u64
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(data), Some(python)) = (args.get(1), args.get(2)) else {
        return Err("usage: py_calls DATA PYTHON [N] [pool|restore|worker]".into());
    };
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let mode = args.get(4).map_or("pool", String::as_str);
    if std::env::var_os("DISCARD").is_some() {
        faaslet_sfi::set_keep_written(false);
    }
    let mut config = WorkerConfig::new(data);
    config.python = Some(python.into());
    config.threads = 1;
    let engine = faaslet::Engine::default();
    let worker = Worker::new(&engine, config).map_err(|e| e.to_string())?;
    worker.python_runtime().map_err(|e| e.to_string())?;
    if worker.function("bench", "noop").is_err() {
        worker
            .upload_python("bench", "noop", b"import sys\nsys.stdin.read()\n")
            .map_err(|e| e.to_string())?;
    }
    let mut faaslet = worker.faaslet("bench", "noop").map_err(|e| e.to_string())?;
    let (mut prep, mut prep_faults, mut call, mut call_faults) = (vec![], vec![], vec![], vec![]);
    for _ in 0..n {
        if mode == "worker" {
            // As `faaslet bench cold-start --python` measures a call from
            // the warm pool.
            let w = Instant::now();
            while worker.pooled("bench", "noop") == 0 && w.elapsed().as_secs() < 1 {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
            let (f0, t) = (minflt(), Instant::now());
            worker
                .call("bench", "noop", b"")
                .map_err(|e| e.to_string())?;
            call.push(t.elapsed().as_nanos() as f64);
            call_faults.push((minflt() - f0) as f64);
            continue;
        }
        let (f0, t) = (minflt(), Instant::now());
        if mode == "restore" {
            let f = worker.faaslet("bench", "noop").map_err(|e| e.to_string())?;
            prep.push(t.elapsed().as_nanos() as f64);
            prep_faults.push((minflt() - f0) as f64);
            drop(f);
            continue;
        }
        faaslet.prepare().map_err(|e| e.to_string())?;
        prep.push(t.elapsed().as_nanos() as f64);
        prep_faults.push((minflt() - f0) as f64);
        let (f0, t) = (minflt(), Instant::now());
        let out = faaslet.call(b"").map_err(|e| e.to_string())?;
        call.push(t.elapsed().as_nanos() as f64);
        call_faults.push((minflt() - f0) as f64);
        if out.return_code != 0 {
            return Err(format!("the call exited {}", out.return_code));
        }
    }
    println!(
        "prepare/restore: median {:.1} us, {:.0} page faults",
        median(prep) / 1e3,
        median(prep_faults)
    );
    if !call.is_empty() {
        println!(
            "call:            median {:.1} us, {:.0} page faults",
            median(call) / 1e3,
            median(call_faults)
        );
    }
    Ok(())
}
