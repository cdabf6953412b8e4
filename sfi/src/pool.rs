//! A pool of reservations, reused instead of mapped and unmapped for every
//! sandbox.
//!
//! A reservation taken from a [`ReservationPool`] goes back to it when
//! dropped: the part of its usable range that was ever made accessible
//! ([`Reservation::touched`]; the rest is still untouched `PROT_NONE`) is
//! replaced by fresh inaccessible memory in one `mmap(MAP_FIXED)` (so
//! nothing the last user wrote survives, and a 6 GiB reservation of which
//! one page was used costs a one-page wipe), and it waits
//! for the next [`take`](ReservationPool::take). Past `max_idle` idle
//! reservations, dropped ones are unmapped as usual.
//!
//! ```
//! use faaslet_sfi::{LinearMemory, ReservationPool, WASM_PAGE};
//!
//! let pool = ReservationPool::new(1 << 20, 16);
//! let mut mem = LinearMemory::in_reservation(pool.take()?, WASM_PAGE, None)?;
//! let base = mem.base();
//! mem.as_mut_slice()[0] = 1;
//! drop(mem);
//! assert_eq!(pool.idle(), 1);
//! let mem = LinearMemory::in_reservation(pool.take()?, WASM_PAGE, None)?;
//! assert_eq!(mem.base(), base); // the same range, reused
//! assert_eq!(mem.as_slice()[0], 0); // and wiped
//! # Ok::<(), faaslet_sfi::MemoryError>(())
//! ```
//!
//! Layering: this module is built on [`reservation`](crate::reservation)
//! alone. Reservations know nothing about pools; a pooled one carries the
//! pool as its crate-private recycler, which its drop calls.

use crate::reservation::{round_up_to_page, MemoryError, Recycle, Reservation};
use std::sync::{Arc, Mutex};

/// Reservations of one size, kept for reuse. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct ReservationPool {
    shared: Arc<PoolShared>,
}

/// The shared part of a pool, which pooled reservations point back to.
#[derive(Debug)]
pub struct PoolShared {
    len: usize,
    max_idle: usize,
    idle: Mutex<Vec<Reservation>>,
}

impl ReservationPool {
    /// A pool of reservations of `len` usable bytes, keeping at most
    /// `max_idle` of them when unused.
    pub fn new(len: usize, max_idle: usize) -> ReservationPool {
        ReservationPool {
            shared: Arc::new(PoolShared {
                len,
                max_idle,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The usable size of every reservation of this pool (as asked for).
    pub fn reservation_len(&self) -> usize {
        self.shared.len
    }

    /// An inaccessible reservation: an idle one if there is one, else a new
    /// one. It returns to this pool when dropped.
    pub fn take(&self) -> Result<Reservation, MemoryError> {
        let reused = self
            .shared
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let mut r = match reused {
            Some(r) => r,
            None => Reservation::map_new(self.shared.len)?,
        };
        r.recycle_to(self.shared.clone());
        Ok(r)
    }

    /// How many reservations wait for reuse.
    pub fn idle(&self) -> usize {
        self.shared
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

impl Recycle for PoolShared {
    /// Takes back the mapping of a dropping reservation. Returns false if
    /// the pool is full or the range could not be wiped, in which case the
    /// caller unmaps it.
    fn recycle(&self, r: &mut Reservation) -> bool {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= self.max_idle {
            return false;
        }
        // Wiped, then moved into a new owner; the dropping one gives it up.
        match r.take_wiped() {
            Ok(taken) => {
                idle.push(taken);
                true
            }
            Err(_) => false,
        }
    }
}

/// How many idle reservations of each size the process-wide pool keeps.
pub const GLOBAL_MAX_IDLE: usize = 256;

fn global() -> &'static Mutex<std::collections::HashMap<usize, ReservationPool>> {
    static GLOBAL: std::sync::OnceLock<Mutex<std::collections::HashMap<usize, ReservationPool>>> =
        std::sync::OnceLock::new();
    GLOBAL.get_or_init(Default::default)
}

/// The process-wide pool for reservations of `len` bytes, which
/// [`Reservation::new`] draws from and returns to.
pub fn global_pool(len: usize) -> ReservationPool {
    let len = round_up_to_page(len.max(1)).unwrap_or(len);
    global()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(len)
        .or_insert_with(|| ReservationPool::new(len, GLOBAL_MAX_IDLE))
        .clone()
}

/// A reservation of `len` bytes from the process-wide pool (reused or new),
/// or `None` if `len` is invalid (the caller then reports the error).
fn take_global(len: usize) -> Option<Reservation> {
    round_up_to_page(len.max(1))?;
    global_pool(len).take().ok()
}

// `Reservation::new` lives here rather than in `reservation`: it is the
// pooled constructor, and the reservation layer does not know about pools.
impl Reservation {
    /// Reserves `len` bytes (rounded up to the host page size, and at least
    /// one page) of inaccessible address space. An idle reservation of the
    /// same size from the process-wide pool is reused when there is one
    /// (see [`pool`](crate::pool)); it goes back there when dropped.
    pub fn new(len: usize) -> Result<Self, MemoryError> {
        if let Some(r) = take_global(len) {
            return Ok(r);
        }
        Self::map_new(len)
    }
}
