//! The parking lot behind `memory.atomic.wait` / `memory.atomic.notify`.
//!
//! `memory.atomic.wait` parks the calling thread in a process-wide table
//! keyed by the *absolute* address of the waited-on word. A shared memory
//! has one mapping, so the absolute address identifies (memory, offset)
//! across all stores; `notify` wakes waiters in FIFO order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Never panic in a builtin: a poisoned lock still guards valid data
    // (every critical section below leaves it consistent at each step).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct LotState {
    /// Waiter ids per absolute address, in arrival order.
    queues: HashMap<usize, VecDeque<u64>>,
    /// Waiters notified but not yet returned.
    woken: HashSet<u64>,
    next_id: u64,
}

/// What the wait builtins return when the call was interrupted while
/// waiting; the generated code turns it into an `Interrupted` trap.
pub(crate) const WAIT_INTERRUPTED: u32 = faaslet_jit::abi::WAIT_INTERRUPTED;

/// How often a blocked waiter checks for interruption.
const WAIT_POLL: Duration = Duration::from_millis(5);

pub(crate) struct ParkingLot {
    state: Mutex<LotState>,
    cv: Condvar,
}

pub(crate) fn parking_lot() -> &'static ParkingLot {
    static LOT: OnceLock<ParkingLot> = OnceLock::new();
    LOT.get_or_init(|| ParkingLot {
        state: Mutex::new(LotState::default()),
        cv: Condvar::new(),
    })
}

impl ParkingLot {
    /// Parks until notified or timed out, if `still_expected()` holds when
    /// checked under the lot's lock (notifiers take the same lock, so a
    /// notify after the value changed cannot be missed).
    ///
    /// A waiter wakes at least every [`WAIT_POLL`] to ask `interrupted()`,
    /// so an epoch deadline or an `InterruptHandle` ends a wait that nobody
    /// will ever notify (the call then traps as interrupted).
    pub(crate) fn wait(
        &self,
        addr: usize,
        timeout: Option<Duration>,
        interrupted: &dyn Fn() -> bool,
        still_expected: impl Fn() -> bool,
    ) -> u32 {
        let mut st = lock(&self.state);
        if !still_expected() {
            return 1;
        }
        let id = st.next_id;
        st.next_id += 1;
        st.queues.entry(addr).or_default().push_back(id);
        // `None`: no timeout, or one too large to represent.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if st.woken.remove(&id) {
                return 0;
            }
            let now = Instant::now();
            let outcome = if deadline.is_some_and(|d| now >= d) {
                Some(2)
            } else if interrupted() {
                Some(WAIT_INTERRUPTED)
            } else {
                None
            };
            if let Some(code) = outcome {
                // Leave the queue (unless notified meanwhile).
                if st.woken.remove(&id) {
                    return 0;
                }
                if let Some(q) = st.queues.get_mut(&addr) {
                    q.retain(|w| *w != id);
                    if q.is_empty() {
                        st.queues.remove(&addr);
                    }
                }
                return code;
            }
            let slice = deadline.map_or(WAIT_POLL, |d| (d - now).min(WAIT_POLL));
            st = self
                .cv
                .wait_timeout(st, slice)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Wakes up to `count` waiters on `addr`; returns how many.
    pub(crate) fn notify(&self, addr: usize, count: u32) -> u32 {
        let mut st = lock(&self.state);
        let mut woken = Vec::new();
        if let Some(q) = st.queues.get_mut(&addr) {
            while woken.len() < count as usize {
                match q.pop_front() {
                    Some(id) => woken.push(id),
                    None => break,
                }
            }
            if q.is_empty() {
                st.queues.remove(&addr);
            }
        }
        let n = woken.len() as u32;
        st.woken.extend(woken);
        drop(st);
        if n > 0 {
            self.cv.notify_all();
        }
        n
    }
}
