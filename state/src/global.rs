//! [`GlobalTier`]: the authoritative copy of every value, behind the local
//! tier, and [`InProcessTier`], the one that serves without Redis.

use crate::error::StateError;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Which global lock mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Shared with other readers.
    Read,
    /// Exclusive.
    Write,
}

impl LockMode {
    /// `read` or `write`.
    pub fn name(self) -> &'static str {
        match self {
            LockMode::Read => "read",
            LockMode::Write => "write",
        }
    }
}

/// Bytes handed to a global tier without a whole copy first: the tier
/// pulls them in order into its own buffer (a Redis command, a `Vec`),
/// so a push of a large value from its shared segment copies it once,
/// as a plain `SET` of a host buffer would, instead of twice.
pub trait ByteSource {
    /// Number of bytes.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes exactly [`len`](Self::len) bytes to `out`, in order.
    fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()>;
}

impl ByteSource for &[u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(self)
    }
}

/// The global tier's operations, on fully qualified keys (see the crate
/// docs for the layout). Byte counts are bounded by the caller.
pub trait GlobalTier: Send + Sync + std::fmt::Debug {
    /// Length of the value (0 if absent).
    fn len(&self, key: &str) -> Result<usize, StateError>;
    /// Bytes `range` of the value (shorter if the value is).
    fn get_range(&self, key: &str, range: Range<usize>) -> Result<Vec<u8>, StateError>;
    /// The value's length and its first `max` bytes (fewer if it is
    /// shorter), read together: one round trip where the tier can, so a
    /// small value is pulled as fast as a plain `GET`.
    fn get_head(&self, key: &str, max: usize) -> Result<(usize, Vec<u8>), StateError> {
        let len = self.len(key)?;
        Ok((len, self.get_range(key, 0..max.min(len))?))
    }
    /// Replaces the value.
    fn set(&self, key: &str, data: &dyn ByteSource) -> Result<(), StateError>;
    /// Writes each `(offset, bytes)` run, all or nothing, in one round trip.
    fn set_ranges(&self, key: &str, runs: &[(usize, &dyn ByteSource)]) -> Result<(), StateError>;
    /// Appends one element unless the list already has `max` (returns
    /// `false` then).
    fn append(&self, key: &str, data: &[u8], max: u64) -> Result<bool, StateError>;
    /// Elements `start..start+n` of the list.
    fn appended(&self, key: &str, start: u64, n: u64) -> Result<Vec<Vec<u8>>, StateError>;
    /// Number of appended elements.
    fn appended_len(&self, key: &str) -> Result<u64, StateError>;
    /// Removes the list.
    fn clear_appended(&self, key: &str) -> Result<(), StateError>;
    /// One attempt to take the lock `key` for `token`, leased for `lease`.
    fn try_lock(
        &self,
        key: &str,
        mode: LockMode,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StateError>;
    /// Releases `token`'s hold (nothing if it no longer holds it).
    fn unlock(&self, key: &str, mode: LockMode, token: &str) -> Result<(), StateError>;
}

#[derive(Debug, Default)]
struct Locks {
    writer: Option<(String, Instant)>,
    readers: Vec<(String, Instant)>,
}

#[derive(Debug, Default)]
struct Inner {
    values: HashMap<String, Vec<u8>>,
    lists: HashMap<String, Vec<Vec<u8>>>,
    locks: HashMap<String, Locks>,
}

/// A global tier inside this process (used when no Redis is configured):
/// the same semantics as Redis, shared by the Faaslets of this process.
#[derive(Debug, Default)]
pub struct InProcessTier {
    inner: Mutex<Inner>,
}

impl InProcessTier {
    /// An empty tier.
    pub fn new() -> InProcessTier {
        InProcessTier::default()
    }
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn try_vec(n: usize) -> Result<Vec<u8>, StateError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| StateError::OutOfMemory { bytes: n as u64 })?;
    Ok(v)
}

fn io_error(e: std::io::Error) -> StateError {
    StateError::Os(format!("copying a value: {e}"))
}

impl GlobalTier for InProcessTier {
    fn len(&self, key: &str) -> Result<usize, StateError> {
        Ok(self.inner().values.get(key).map_or(0, Vec::len))
    }
    fn get_range(&self, key: &str, range: Range<usize>) -> Result<Vec<u8>, StateError> {
        let i = self.inner();
        let v = i.values.get(key).map_or(&[][..], |v| v.as_slice());
        let end = range.end.min(v.len());
        let start = range.start.min(end);
        let mut out = try_vec(end - start)?;
        out.extend_from_slice(&v[start..end]);
        Ok(out)
    }
    fn set(&self, key: &str, data: &dyn ByteSource) -> Result<(), StateError> {
        let mut v = try_vec(data.len())?;
        data.write_to(&mut v).map_err(io_error)?;
        self.inner().values.insert(key.to_string(), v);
        Ok(())
    }
    fn set_ranges(&self, key: &str, runs: &[(usize, &dyn ByteSource)]) -> Result<(), StateError> {
        let mut i = self.inner();
        let v = i.values.entry(key.to_string()).or_default();
        let end = runs.iter().map(|(o, d)| o + d.len()).max().unwrap_or(0);
        if end > v.len() {
            v.try_reserve(end - v.len())
                .map_err(|_| StateError::OutOfMemory { bytes: end as u64 })?;
            v.resize(end, 0);
        }
        for (o, d) in runs {
            d.write_to(&mut &mut v[*o..o + d.len()]).map_err(io_error)?;
        }
        Ok(())
    }
    fn append(&self, key: &str, data: &[u8], max: u64) -> Result<bool, StateError> {
        let mut i = self.inner();
        let l = i.lists.entry(key.to_string()).or_default();
        if l.len() as u64 >= max {
            return Ok(false);
        }
        let mut v = try_vec(data.len())?;
        v.extend_from_slice(data);
        l.push(v);
        Ok(true)
    }
    fn appended(&self, key: &str, start: u64, n: u64) -> Result<Vec<Vec<u8>>, StateError> {
        let i = self.inner();
        let l = i.lists.get(key).map_or(&[][..], |l| l.as_slice());
        let s = (start as usize).min(l.len());
        let e = s.saturating_add(n as usize).min(l.len());
        Ok(l[s..e].to_vec())
    }
    fn appended_len(&self, key: &str) -> Result<u64, StateError> {
        Ok(self.inner().lists.get(key).map_or(0, |l| l.len() as u64))
    }
    fn clear_appended(&self, key: &str) -> Result<(), StateError> {
        self.inner().lists.remove(key);
        Ok(())
    }
    fn try_lock(
        &self,
        key: &str,
        mode: LockMode,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StateError> {
        let now = Instant::now();
        let mut i = self.inner();
        let l = i.locks.entry(key.to_string()).or_default();
        if l.writer.as_ref().is_some_and(|(_, exp)| *exp <= now) {
            l.writer = None;
        }
        l.readers.retain(|(_, exp)| *exp > now);
        let ok = match mode {
            LockMode::Write => l.writer.is_none() && l.readers.is_empty(),
            LockMode::Read => l.writer.is_none(),
        };
        if ok {
            let held = (token.to_string(), now + lease);
            match mode {
                LockMode::Write => l.writer = Some(held),
                LockMode::Read => l.readers.push(held),
            }
        }
        Ok(ok)
    }
    fn unlock(&self, key: &str, mode: LockMode, token: &str) -> Result<(), StateError> {
        let mut i = self.inner();
        if let Some(l) = i.locks.get_mut(key) {
            match mode {
                LockMode::Write => {
                    if l.writer.as_ref().is_some_and(|(t, _)| t == token) {
                        l.writer = None;
                    }
                }
                LockMode::Read => l.readers.retain(|(t, _)| t != token),
            }
        }
        Ok(())
    }
}
