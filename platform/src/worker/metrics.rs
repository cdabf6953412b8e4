//! [`Metrics`]: counters of a worker, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the call latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 10.0,
];

#[derive(Default)]
struct Inner {
    /// (user/function, outcome) → calls.
    calls: BTreeMap<(String, &'static str), u64>,
    /// Cumulative counts per bucket, plus +Inf.
    buckets: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
    cold: u64,
    warm: u64,
    rejected: u64,
    /// Calls forwarded to other workers of the cluster.
    forwarded: u64,
    /// Chained calls started by this worker's Faaslets: run here, placed
    /// on another worker.
    chained: [u64; 2],
    /// Calls that found a prepared Faaslet in the pool, and that did not.
    pool: [u64; 2],
    /// Code cache lookups: hit, miss, rejected.
    cache: [u64; 3],
}

/// A worker's counters.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a finished call of `function` (`user/function`) with its
    /// outcome (`success`, `failed`, `trap`, `timeout`), duration, and
    /// whether it was the function's first call in this process (cold).
    pub fn call(&self, function: &str, outcome: &'static str, took: Duration, cold: bool) {
        let mut m = self.lock();
        *m.calls.entry((function.to_string(), outcome)).or_default() += 1;
        let s = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                m.buckets[i] += 1;
            }
        }
        m.buckets[BUCKETS.len()] += 1;
        m.sum += s;
        m.count += 1;
        if cold {
            m.cold += 1;
        } else {
            m.warm += 1;
        }
    }

    /// Records how a module's code was obtained (upload or reload).
    pub fn cache(&self, outcome: &crate::code_cache::CacheOutcome) {
        use crate::code_cache::CacheOutcome;
        let i = match outcome {
            CacheOutcome::Hit => 0,
            CacheOutcome::Miss => 1,
            CacheOutcome::Rejected(_) => 2,
        };
        self.lock().cache[i] += 1;
    }

    /// Records a call forwarded to another worker.
    pub fn forwarded(&self) {
        self.lock().forwarded += 1;
    }

    /// Records a chained call started here: placed on another worker
    /// (`forwarded`), or run here.
    pub fn chained(&self, forwarded: bool) {
        self.lock().chained[usize::from(forwarded)] += 1;
    }

    /// Records whether a call found a prepared Faaslet in the pool.
    pub fn pool(&self, hit: bool) {
        self.lock().pool[usize::from(hit)] += 1;
    }

    /// Records a call refused because the executor queue was full.
    pub fn rejected(&self) {
        self.lock().rejected += 1;
    }

    /// The Prometheus text exposition, with the executor's queue depth
    /// and running calls and what the local state tier holds.
    pub fn render(
        &self,
        queued: usize,
        running: usize,
        state: faaslet_state::StateUsage,
    ) -> String {
        let m = self.lock();
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP faaslet_calls_total Calls by function and outcome."
        );
        let _ = writeln!(o, "# TYPE faaslet_calls_total counter");
        for ((f, outcome), n) in &m.calls {
            let f = f.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                o,
                "faaslet_calls_total{{function=\"{f}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP faaslet_call_duration_seconds Call latency on the executor."
        );
        let _ = writeln!(o, "# TYPE faaslet_call_duration_seconds histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "faaslet_call_duration_seconds_bucket{{le=\"{b}\"}} {}",
                m.buckets[i]
            );
        }
        let _ = writeln!(
            o,
            "faaslet_call_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            m.buckets[BUCKETS.len()]
        );
        let _ = writeln!(o, "faaslet_call_duration_seconds_sum {}", m.sum);
        let _ = writeln!(o, "faaslet_call_duration_seconds_count {}", m.count);
        let _ = writeln!(o, "# HELP faaslet_calls_start_total Calls by start kind (cold: first call of a function in this process).");
        let _ = writeln!(o, "# TYPE faaslet_calls_start_total counter");
        let _ = writeln!(o, "faaslet_calls_start_total{{start=\"cold\"}} {}", m.cold);
        let _ = writeln!(o, "faaslet_calls_start_total{{start=\"warm\"}} {}", m.warm);
        let _ = writeln!(
            o,
            "# HELP faaslet_calls_rejected_total Calls refused with 429 (queue full)."
        );
        let _ = writeln!(o, "# TYPE faaslet_calls_rejected_total counter");
        let _ = writeln!(o, "faaslet_calls_rejected_total {}", m.rejected);
        let _ = writeln!(
            o,
            "# HELP faaslet_calls_forwarded_total Calls sent to another worker of the cluster (this one was full)."
        );
        let _ = writeln!(o, "# TYPE faaslet_calls_forwarded_total counter");
        let _ = writeln!(o, "faaslet_calls_forwarded_total {}", m.forwarded);
        let _ = writeln!(
            o,
            "# HELP faaslet_pool_total Calls by whether a prepared Faaslet was waiting in the pool (miss: the call restored its own)."
        );
        let _ = writeln!(o, "# TYPE faaslet_pool_total counter");
        for (i, what) in ["miss", "hit"].iter().enumerate() {
            let _ = writeln!(o, "faaslet_pool_total{{outcome=\"{what}\"}} {}", m.pool[i]);
        }
        let _ = writeln!(
            o,
            "# HELP faaslet_chained_calls_total Chained calls started by this worker's Faaslets, by where they were placed."
        );
        let _ = writeln!(o, "# TYPE faaslet_chained_calls_total counter");
        for (i, placed) in ["here", "forwarded"].iter().enumerate() {
            let _ = writeln!(
                o,
                "faaslet_chained_calls_total{{placed=\"{placed}\"}} {}",
                m.chained[i]
            );
        }
        let _ = writeln!(
            o,
            "# HELP faaslet_code_cache_total Modules by how their code was obtained (hit: loaded without compiling; rejected: a corrupt or foreign entry, recompiled)."
        );
        let _ = writeln!(o, "# TYPE faaslet_code_cache_total counter");
        for (i, what) in ["hit", "miss", "rejected"].iter().enumerate() {
            let _ = writeln!(
                o,
                "faaslet_code_cache_total{{outcome=\"{what}\"}} {}",
                m.cache[i]
            );
        }
        let _ = writeln!(
            o,
            "# HELP faaslet_executor_queue_depth Calls waiting for an executor thread."
        );
        let _ = writeln!(o, "# TYPE faaslet_executor_queue_depth gauge");
        let _ = writeln!(o, "faaslet_executor_queue_depth {queued}");
        let _ = writeln!(
            o,
            "# HELP faaslet_executor_running Calls running on executor threads."
        );
        let _ = writeln!(o, "# TYPE faaslet_executor_running gauge");
        let _ = writeln!(o, "faaslet_executor_running {running}");
        let _ = writeln!(
            o,
            "# HELP faaslet_state_values State values held in this worker's local tier."
        );
        let _ = writeln!(o, "# TYPE faaslet_state_values gauge");
        let _ = writeln!(o, "faaslet_state_values {}", state.values);
        let _ = writeln!(
            o,
            "# HELP faaslet_state_bytes Bytes of the state values held in this worker's local tier."
        );
        let _ = writeln!(o, "# TYPE faaslet_state_bytes gauge");
        let _ = writeln!(o, "faaslet_state_bytes {}", state.bytes);
        o
    }
}
