//! [`StateStore`] and its implementation [`LocalStateStore`]: the local
//! tier in front of a [`GlobalTier`].

use crate::error::StateError;
use crate::global::{ByteSource, GlobalTier, InProcessTier, LockMode};
use crate::limits::{Quota, StateLimits};
use crate::value::{lock, StateValue};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Bytes moved per round trip when a pull is split.
const PULL_CHUNK: usize = 4 << 20;
/// How long a global lock is leased for (renewed by nothing: a holder that
/// outlives it loses the lock; see the crate docs).
pub const LOCK_LEASE: Duration = Duration::from_secs(10);
/// How long a lock waits when the call has no deadline.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(30);

/// A global lock held by one call: released with
/// [`StateStore::unlock_global`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalLock {
    name: String,
    mode: LockMode,
    token: String,
}

impl GlobalLock {
    /// The qualified name of the locked value.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The lock mode.
    pub fn mode(&self) -> LockMode {
        self.mode
    }
}

/// Where state values live; shared by the Faaslets of a process.
pub trait StateStore: Send + Sync {
    /// The value `key` of `user`, created empty if new.
    fn value(&self, user: &str, key: &str) -> Result<Arc<StateValue>, StateError>;
    /// Sends `ranges` of the value (all of it if `None`) to the global tier
    /// and clears the dirty marks of what it sent.
    fn push(&self, value: &StateValue, ranges: Option<&[Range<usize>]>) -> Result<(), StateError>;
    /// Refreshes bytes `range` (all of the value if `None`) from the global
    /// tier.
    fn pull(&self, value: &StateValue, range: Option<Range<usize>>) -> Result<(), StateError>;
    /// Appends one element to `user`'s list `key`.
    fn append(&self, user: &str, key: &str, data: &[u8]) -> Result<(), StateError>;
    /// Hands the first `n` elements of the list to `f`, in order (a few at
    /// a time from the global tier, so the host holds at most a small
    /// batch); fails if the list has fewer than `n` elements, or with the
    /// first error `f` returns.
    fn each_appended(
        &self,
        user: &str,
        key: &str,
        n: usize,
        f: &mut dyn FnMut(&[u8]) -> Result<(), StateError>,
    ) -> Result<(), StateError>;
    /// Concatenates the first `n` elements of the list into `buf`; returns
    /// the bytes written.
    fn read_appended(
        &self,
        user: &str,
        key: &str,
        buf: &mut [u8],
        n: usize,
    ) -> Result<usize, StateError> {
        let mut at = 0usize;
        self.each_appended(user, key, n, &mut |e| {
            let buf_len = buf.len() as u64;
            let dst = buf
                .get_mut(at..at + e.len())
                .ok_or(StateError::BufferTooSmall {
                    needed: at as u64 + e.len() as u64,
                    len: buf_len,
                })?;
            dst.copy_from_slice(e);
            at += e.len();
            Ok(())
        })?;
        Ok(at)
    }
    /// Empties the list.
    fn clear_appended(&self, user: &str, key: &str) -> Result<(), StateError>;
    /// Takes the global lock of `value`, waiting until `deadline` (or
    /// [`DEFAULT_LOCK_WAIT`]).
    fn lock_global(
        &self,
        value: &StateValue,
        mode: LockMode,
        deadline: Option<Instant>,
    ) -> Result<GlobalLock, StateError>;
    /// Releases a global lock.
    fn unlock_global(&self, lock: &GlobalLock) -> Result<(), StateError>;
    /// The limits in force.
    fn limits(&self) -> &StateLimits;
    /// How much state this process holds now (for metrics).
    fn usage(&self) -> StateUsage;
}

/// What a process's local tier holds (see [`StateStore::usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateUsage {
    /// Values (keys with a local copy).
    pub values: u64,
    /// Their bytes: the sum of the values' lengths.
    pub bytes: u64,
}

fn check_user(user: &str) -> Result<(), StateError> {
    if user.is_empty() || user.len() > 64 || user.contains('/') {
        return Err(StateError::BadUser(user.to_string()));
    }
    Ok(())
}

/// The random token that owns a global lock: 16 bytes from the kernel.
fn token() -> Result<String, StateError> {
    let mut b = [0u8; 16];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        return Err(StateError::Os("getrandom failed".into()));
    }
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The local tier: one copy of each value per process, in shared memory,
/// in front of a global tier (in-process unless one is given).
///
/// ```
/// use faaslet_state::{LocalStateStore, StateStore};
/// let store = LocalStateStore::new();
/// store.value("alice", "k").unwrap().set(b"hello").unwrap();
/// let mut buf = [0u8; 5];
/// assert_eq!(store.value("alice", "k").unwrap().read_at(0, &mut buf), 5);
/// assert_eq!(&buf, b"hello");
/// assert_eq!(store.value("bob", "k").unwrap().len(), 0);
/// ```
#[derive(Debug)]
pub struct LocalStateStore {
    limits: StateLimits,
    global: Arc<dyn GlobalTier>,
    values: RwLock<HashMap<String, Arc<StateValue>>>,
    quotas: Mutex<HashMap<String, Arc<Quota>>>,
}

impl Default for LocalStateStore {
    fn default() -> LocalStateStore {
        LocalStateStore::new()
    }
}

impl LocalStateStore {
    /// A store with default limits and an in-process global tier.
    pub fn new() -> LocalStateStore {
        LocalStateStore::with_global(Arc::new(InProcessTier::new()), StateLimits::default())
    }

    /// A store in front of `global` with `limits`.
    pub fn with_global(global: Arc<dyn GlobalTier>, limits: StateLimits) -> LocalStateStore {
        LocalStateStore {
            limits,
            global,
            values: RwLock::new(HashMap::new()),
            quotas: Mutex::new(HashMap::new()),
        }
    }

    /// The global tier.
    pub fn global(&self) -> &Arc<dyn GlobalTier> {
        &self.global
    }

    /// `user`'s quota account.
    pub fn quota(&self, user: &str) -> Arc<Quota> {
        lock(&self.quotas)
            .entry(user.to_string())
            .or_insert_with(|| Arc::new(Quota::new(user, &self.limits)))
            .clone()
    }

    fn check_key(&self, user: &str, key: &str) -> Result<(), StateError> {
        check_user(user)?;
        if key.len() > self.limits.max_key_len {
            return Err(StateError::KeyTooLong {
                len: key.len(),
                max: self.limits.max_key_len,
            });
        }
        Ok(())
    }
}

fn value_key(name: &str) -> String {
    format!("faaslet:v:{name}")
}
fn list_key(user: &str, key: &str) -> String {
    format!("faaslet:a:{user}/{key}")
}
fn lock_key(name: &str) -> String {
    format!("faaslet:l:{name}")
}

impl StateStore for LocalStateStore {
    fn value(&self, user: &str, key: &str) -> Result<Arc<StateValue>, StateError> {
        self.check_key(user, key)?;
        let name = format!("{user}/{key}");
        if let Some(v) = self
            .values
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name)
        {
            return Ok(v.clone());
        }
        let mut map = self.values.write().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = map.get(&name) {
            return Ok(v.clone());
        }
        let quota = self.quota(user);
        quota.add_key()?;
        let v = Arc::new(StateValue::new(name.clone(), quota)?);
        map.insert(name, v.clone());
        Ok(v)
    }

    fn push(&self, value: &StateValue, ranges: Option<&[Range<usize>]>) -> Result<(), StateError> {
        let key = value_key(value.name());
        match ranges {
            None => {
                self.global.set(&key, &value.bytes(0..value.len()))?;
            }
            Some(rs) => {
                // At most MAX_DIRTY_RUNS runs (dirty and mask runs merge
                // beyond that), each copied from the segment by the tier.
                let bytes: Vec<_> = rs
                    .iter()
                    .map(|r| (r.start, value.bytes(r.clone())))
                    .filter(|(_, b)| !b.is_empty())
                    .collect();
                let runs: Vec<(usize, &dyn ByteSource)> = bytes
                    .iter()
                    .map(|(o, b)| (*o, b as &dyn ByteSource))
                    .collect();
                self.global.set_ranges(&key, &runs)?;
                value.clear_dirty_in(rs);
                return Ok(());
            }
        }
        value.clear_dirty();
        Ok(())
    }

    fn pull(&self, value: &StateValue, range: Option<Range<usize>>) -> Result<(), StateError> {
        let key = value_key(value.name());
        let (range, mut at) = match range {
            Some(r) => (r.clone(), r.start),
            None => {
                // Length and first chunk in one round trip.
                let (glen, head) = self.global.get_head(&key, PULL_CHUNK)?;
                value.ensure_len(glen)?;
                // The global copy is authoritative: what it lacks is zero.
                value.zero_from(glen);
                value.fill_at(0, &head);
                if head.len() < glen.min(PULL_CHUNK) {
                    // Shortened between the two reads: nothing more to get.
                    return Ok(());
                }
                (0..glen, head.len())
            }
        };
        value.ensure_len(range.end)?;
        while at < range.end {
            let end = range.end.min(at + PULL_CHUNK);
            let bytes = self.global.get_range(&key, at..end)?;
            value.fill_at(at, &bytes);
            if bytes.len() < end - at {
                break;
            }
            at = end;
        }
        Ok(())
    }

    fn append(&self, user: &str, key: &str, data: &[u8]) -> Result<(), StateError> {
        self.check_key(user, key)?;
        let l = &self.limits;
        if data.len() as u64 > l.max_append_bytes {
            return Err(StateError::AppendTooLarge {
                len: data.len() as u64,
                max: l.max_append_bytes,
            });
        }
        let quota = self.quota(user);
        quota.charge(data.len() as u64)?;
        match self
            .global
            .append(&list_key(user, key), data, l.max_appends)
        {
            Ok(true) => Ok(()),
            Ok(false) => {
                quota.credit(data.len() as u64);
                Err(StateError::TooManyAppends {
                    key: key.to_string(),
                    max: l.max_appends,
                })
            }
            Err(e) => {
                quota.credit(data.len() as u64);
                Err(e)
            }
        }
    }

    fn each_appended(
        &self,
        user: &str,
        key: &str,
        n: usize,
        f: &mut dyn FnMut(&[u8]) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        self.check_key(user, key)?;
        let lk = list_key(user, key);
        let have = self.global.appended_len(&lk)?;
        if n as u64 > have {
            return Err(StateError::NotEnoughAppended {
                wanted: n as u64,
                have,
            });
        }
        // In batches, so the host holds at most a batch at a time.
        let mut done = 0u64;
        while done < n as u64 {
            let batch = (n as u64 - done).min(16);
            let elems = self.global.appended(&lk, done, batch)?;
            if elems.is_empty() {
                return Err(StateError::NotEnoughAppended {
                    wanted: n as u64,
                    have: done,
                });
            }
            for e in &elems {
                f(e)?;
            }
            done += elems.len() as u64;
        }
        Ok(())
    }

    fn clear_appended(&self, user: &str, key: &str) -> Result<(), StateError> {
        self.check_key(user, key)?;
        self.global.clear_appended(&list_key(user, key))
    }

    fn lock_global(
        &self,
        value: &StateValue,
        mode: LockMode,
        deadline: Option<Instant>,
    ) -> Result<GlobalLock, StateError> {
        let token = token()?;
        let key = lock_key(value.name());
        let deadline = deadline.unwrap_or_else(|| Instant::now() + DEFAULT_LOCK_WAIT);
        let mut wait = Duration::from_micros(200);
        loop {
            if self.global.try_lock(&key, mode, &token, LOCK_LEASE)? {
                return Ok(GlobalLock {
                    name: value.name().to_string(),
                    mode,
                    token,
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StateError::LockTimeout {
                    key: value.name().to_string(),
                    kind: mode.name(),
                });
            }
            std::thread::sleep(wait.min(deadline - now));
            wait = (wait * 2).min(Duration::from_millis(20));
        }
    }

    fn unlock_global(&self, lock: &GlobalLock) -> Result<(), StateError> {
        self.global
            .unlock(&lock_key(&lock.name), lock.mode, &lock.token)
    }

    fn limits(&self) -> &StateLimits {
        &self.limits
    }

    fn usage(&self) -> StateUsage {
        let values = self.values.read().unwrap_or_else(|e| e.into_inner());
        StateUsage {
            values: values.len() as u64,
            bytes: values.values().map(|v| v.len() as u64).sum(),
        }
    }
}
