//! The bounded [`Executor`]: a fixed pool of threads that run wasm, fed by
//! a bounded queue. Async (HTTP) threads never run guest code; they submit
//! a job here and await its result. A full queue is refused at once (the
//! HTTP layer answers 429) instead of growing without bound.
//!
//! Chained calls run here too: a parent that awaits a child which has not
//! finished runs queued jobs on its own thread meanwhile
//! ([`run_until`](Executor::run_until)), so a fan-out far wider than the
//! pool completes on the pool's threads without deadlock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Native stack of a pool thread: the wasm stack limit plus host frames.
const WORKER_THREAD_STACK: usize = 8 << 20;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The queue was full: the job was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("executor queue full ({capacity} calls waiting)")]
pub struct QueueFull {
    /// The queue's capacity.
    pub capacity: usize,
}

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    capacity: usize,
    running: AtomicUsize,
    /// Moving average of how long a job holds its thread, nanoseconds
    /// (see [`Executor::mean_job`]).
    mean_job_ns: AtomicU64,
}

thread_local! {
    /// Nanoseconds this thread spent in jobs run inside the job it is
    /// running (an awaiting parent runs queued jobs itself): taken off
    /// that job's own time.
    static NESTED_NS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fixed pool of threads and a bounded queue of jobs. Dropping it (or
/// [`shutdown`](Executor::shutdown)) lets queued jobs finish and joins the
/// threads.
pub struct Executor {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// How many threads it started with.
    width: usize,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("capacity", &self.shared.capacity)
            .field("queued", &self.queued())
            .finish()
    }
}

impl Executor {
    /// `threads` pool threads (at least one) and room for `capacity`
    /// waiting jobs.
    pub fn new(threads: usize, capacity: usize) -> std::io::Result<Executor> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::with_capacity(capacity.min(4096)),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity,
            running: AtomicUsize::new(0),
            mean_job_ns: AtomicU64::new(0),
        });
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let s = shared.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("faaslet-exec-{i}"))
                    .stack_size(WORKER_THREAD_STACK)
                    .spawn(move || work(&s))?,
            );
        }
        Ok(Executor {
            shared,
            width: handles.len(),
            threads: Mutex::new(handles),
        })
    }

    /// Queues `job`, or refuses it if the queue is full or shut down.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) -> Result<(), QueueFull> {
        self.try_submit(Box::new(job)).map_err(|_| QueueFull {
            capacity: self.shared.capacity,
        })
    }

    /// Queues a boxed `job`, or hands it back if the queue is full or shut
    /// down (for a caller that then runs it itself).
    pub fn try_submit(
        &self,
        job: Box<dyn FnOnce() + Send + 'static>,
    ) -> Result<(), Box<dyn FnOnce() + Send + 'static>> {
        let mut q = self.shared.lock();
        if q.closed || q.jobs.len() >= self.shared.capacity {
            return Err(job);
        }
        q.jobs.push_back(job);
        drop(q);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Wakes every thread waiting in [`run_until`](Self::run_until) to
    /// check its condition again: for a condition made true outside this
    /// executor (a result that came from another host).
    pub fn wake_waiters(&self) {
        // Taking the lock orders this after their check: no lost wake-up.
        drop(self.shared.lock());
        self.shared.ready.notify_all();
    }

    /// Runs queued jobs on this thread until `done()` holds. `done` must
    /// become true through a job of this executor (a job's end wakes
    /// waiters), e.g. a chained call's result being stored, or be followed
    /// by [`wake_waiters`](Self::wake_waiters).
    pub fn run_until(&self, done: impl Fn() -> bool) {
        self.run_until_deadline(done, None);
    }

    /// [`run_until`](Self::run_until), giving up at `deadline` (waiting
    /// stops then; a job already running here runs to its end): whether
    /// `done()` held.
    pub fn run_until_deadline(&self, done: impl Fn() -> bool, deadline: Option<Instant>) -> bool {
        loop {
            let job = {
                let mut q = self.shared.lock();
                loop {
                    if done() {
                        return true;
                    }
                    if let Some(job) = q.jobs.pop_front() {
                        break job;
                    }
                    // Time spent blocked here is not the enclosing job's
                    // work: it is taken off its own time, as nested jobs are.
                    let blocked = Instant::now();
                    q = match deadline {
                        None => self.shared.ready.wait(q).unwrap_or_else(|e| e.into_inner()),
                        Some(d) => {
                            let now = Instant::now();
                            if now >= d {
                                return false;
                            }
                            self.shared
                                .ready
                                .wait_timeout(q, d - now)
                                .unwrap_or_else(|e| e.into_inner())
                                .0
                        }
                    };
                    let ns = u64::try_from(blocked.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    NESTED_NS.with(|n| n.set(n.get().saturating_add(ns)));
                }
            };
            run(&self.shared, job);
        }
    }

    /// Jobs waiting for a thread.
    pub fn queued(&self) -> usize {
        self.shared.lock().jobs.len()
    }

    /// How long a job has held its thread lately: a moving average (each
    /// job weighs 1/16) of each job's own time, which leaves out the jobs
    /// it ran and the time it slept while awaiting others ([`run_until`](Self::run_until)).
    /// Zero before any job ran.
    pub fn mean_job(&self) -> Duration {
        Duration::from_nanos(self.shared.mean_job_ns.load(Ordering::Relaxed))
    }

    /// How long a job queued now would wait for a thread, by
    /// [`mean_job`](Self::mean_job): nothing while a thread is free (more
    /// threads than jobs running or queued), else the mean job times the
    /// jobs that must end before it gets a thread, over the threads
    /// ([`Duration::MAX`] before any job has finished: unknown).
    pub fn expected_wait(&self) -> Duration {
        // Jobs queued count even while a thread is idle: it may not have
        // woken up to take them yet (a parent queues a whole fan-out in
        // microseconds).
        let busy = self.running() + self.queued();
        if busy < self.width {
            return Duration::ZERO;
        }
        let mean = self.shared.mean_job_ns.load(Ordering::Relaxed);
        if mean == 0 {
            // No job has finished yet: how long one takes is unknown.
            return Duration::MAX;
        }
        // The jobs that must end before this one gets a thread.
        let ahead = u32::try_from(busy + 1 - self.width).unwrap_or(u32::MAX);
        Duration::from_nanos(mean).saturating_mul(ahead)
            / u32::try_from(self.width.max(1)).unwrap_or(u32::MAX)
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.shared.running.load(Ordering::Relaxed)
    }

    /// Stops accepting jobs, lets the queued ones run, joins the threads.
    pub fn shutdown(&self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let me = std::thread::current().id();
        for t in threads {
            // The last owner may be a job on a pool thread: never join it.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn work(shared: &Shared) {
    loop {
        let job = {
            let mut q = shared.lock();
            loop {
                if let Some(job) = q.jobs.pop_front() {
                    break job;
                }
                if q.closed {
                    return;
                }
                q = shared.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        run(shared, job);
    }
}

fn run(shared: &Shared, job: Job) {
    shared.running.fetch_add(1, Ordering::Relaxed);
    let outer = NESTED_NS.with(|n| n.replace(0));
    let start = Instant::now();
    // A panicking job must not take the pool thread with it.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    let took = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let nested = NESTED_NS.with(|n| n.replace(outer.saturating_add(took)));
    let own = took.saturating_sub(nested);
    // Racy read-modify-write: a lost update only delays the average.
    let mean = shared.mean_job_ns.load(Ordering::Relaxed);
    let next = if mean == 0 {
        own
    } else {
        mean - mean / 16 + own / 16
    };
    shared.mean_job_ns.store(next, Ordering::Relaxed);
    shared.running.fetch_sub(1, Ordering::Relaxed);
    // Wake threads in `run_until` to check their condition. Taking the
    // lock first orders this after their check: no lost wake-up.
    drop(shared.lock());
    shared.ready.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_job_is_each_jobs_own_time() {
        // Timing-robust: every bound is relative to how long the jobs
        // really took on this (possibly loaded) machine.
        let ex = Arc::new(Executor::new(1, 64).unwrap());
        assert_eq!(ex.mean_job(), Duration::ZERO);
        let done = Arc::new(AtomicUsize::new(0));
        // The longest any job took, in nanoseconds, measured inside it.
        let longest = Arc::new(AtomicU64::new(0));
        let job = |d: Arc<AtomicUsize>, longest: Arc<AtomicU64>| {
            move || {
                let t = Instant::now();
                std::thread::sleep(Duration::from_millis(5));
                longest.fetch_max(t.elapsed().as_nanos() as u64, Ordering::SeqCst);
                d.fetch_add(1, Ordering::SeqCst);
            }
        };
        for _ in 0..8 {
            ex.submit(job(done.clone(), longest.clone())).unwrap();
        }
        ex.run_until(|| done.load(Ordering::SeqCst) == 8);
        let mean = ex.mean_job();
        assert!(mean >= Duration::from_millis(5), "{mean:?}");
        // A parent that runs 8 queued 5 ms jobs while it awaits them: its
        // own time leaves theirs out. Counted in, it would weigh as the 8
        // together and lift the mean (a moving average) above the longest
        // job; left out, the mean of jobs no longer than the longest cannot
        // exceed it.
        let inner = ex.clone();
        let (done2, longest2) = (done.clone(), longest.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        ex.submit(move || {
            for _ in 0..8 {
                inner.submit(job(done2.clone(), longest2.clone())).unwrap();
            }
            inner.run_until(|| done2.load(Ordering::SeqCst) == 16);
            tx.send(()).unwrap();
        })
        .unwrap();
        rx.recv().unwrap();
        // The parent's job is counted when it returns, just after its send.
        let idle = Instant::now() + Duration::from_secs(10);
        while ex.running() > 0 {
            assert!(Instant::now() < idle, "the parent job never ended");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mean = ex.mean_job();
        // Slack for what the executor times around each job's body.
        let bound = Duration::from_nanos(longest.load(Ordering::SeqCst)) + Duration::from_millis(2);
        assert!(mean <= bound, "{mean:?} > {bound:?}");
        assert_eq!(ex.expected_wait(), Duration::ZERO, "nothing queued");
    }
}
