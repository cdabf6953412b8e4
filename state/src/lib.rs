//! Function state: the [`StateStore`] trait and its local tier.
//!
//! This crate knows nothing of WebAssembly: it keeps byte arrays named by
//! keys, their locks and dirty marks. The host interface (`faaslet-hostapi`)
//! implements the Faasm state calls on top of it, and the platform decides
//! which store a host uses.
//!
//! A state value is a byte array named by a key. The local tier keeps one
//! copy of each value per host ([`LocalStateStore`]); Faaslets on the host
//! read and write it under short internal locks, and may additionally take
//! the value's explicit read/write lock ([`StateValue::lock`]) across several
//! host calls, as Faasm's `__faasm_lock_state_*` calls do. Writes mark bytes
//! dirty, so a partial push knows what changed.
//!
//! The global tier (the authoritative copy in a distributed store) comes in
//! a later issue; here [`StateStore::push`] and [`StateStore::pull`] of the
//! local store only account for dirty bytes.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

/// Why a state operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A value would exceed [`MAX_VALUE_LEN`].
    #[error("state value of {len} bytes is too large")]
    ValueTooLarge {
        /// The requested length.
        len: u64,
    },
    /// Fewer appended elements than asked for.
    #[error("{wanted} appended elements requested, {have} present")]
    NotEnoughAppended {
        /// Requested.
        wanted: u64,
        /// Present.
        have: u64,
    },
    /// A buffer too small for the data.
    #[error("buffer of {len} bytes is too small, {needed} needed")]
    BufferTooSmall {
        /// Needed.
        needed: u64,
        /// Given.
        len: u64,
    },
}

/// Largest state value, in bytes (a guard against a guest asking the host
/// to allocate without bound).
pub const MAX_VALUE_LEN: usize = 1 << 30;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data in a
    // state that breaks memory safety; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A read/write lock that is taken and released by separate calls (the
/// guest's `lock`/`unlock` pairs), so it cannot be a guard-based lock.
#[derive(Debug, Default)]
pub struct ExplicitRwLock {
    state: Mutex<(u32, bool)>,
    cond: Condvar,
}

impl ExplicitRwLock {
    /// Blocks until no writer holds the lock, then takes a read share.
    pub fn lock_read(&self) {
        let mut s = lock(&self.state);
        while s.1 {
            s = self.cond.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.0 += 1;
    }
    /// Releases a read share.
    pub fn unlock_read(&self) {
        let mut s = lock(&self.state);
        s.0 = s.0.saturating_sub(1);
        if s.0 == 0 {
            self.cond.notify_all();
        }
    }
    /// Blocks until nobody holds the lock, then takes it exclusively.
    pub fn lock_write(&self) {
        let mut s = lock(&self.state);
        while s.1 || s.0 > 0 {
            s = self.cond.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.1 = true;
    }
    /// Releases the exclusive hold.
    pub fn unlock_write(&self) {
        let mut s = lock(&self.state);
        s.1 = false;
        self.cond.notify_all();
    }
}

/// Which of a value's two explicit locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockTier {
    /// The per-host lock (`__faasm_lock_state_read/write`).
    Local,
    /// The global lock (`__faasm_lock_state_global_*`); in this issue it is
    /// a second per-host lock standing in for the global tier's.
    Global,
}

#[derive(Debug, Default)]
struct ValueData {
    bytes: Vec<u8>,
    /// One byte per byte of `bytes` (nonzero = dirty); empty when clean.
    dirty: Vec<u8>,
}

/// One state value of the local tier.
#[derive(Debug, Default)]
pub struct StateValue {
    data: Mutex<ValueData>,
    local_lock: ExplicitRwLock,
    global_lock: ExplicitRwLock,
}

fn check_len(len: usize) -> Result<(), StateError> {
    if len > MAX_VALUE_LEN {
        return Err(StateError::ValueTooLarge { len: len as u64 });
    }
    Ok(())
}

impl ValueData {
    fn ensure_len(&mut self, len: usize) -> Result<(), StateError> {
        if self.bytes.len() < len {
            check_len(len)?;
            self.bytes.resize(len, 0);
            if !self.dirty.is_empty() {
                self.dirty.resize(len, 0);
            }
        }
        Ok(())
    }
    fn mark(&mut self, r: Range<usize>) {
        if r.is_empty() {
            return;
        }
        if self.dirty.len() != self.bytes.len() {
            self.dirty.resize(self.bytes.len(), 0);
        }
        self.dirty[r].fill(1);
    }
}

impl StateValue {
    /// An empty value.
    pub fn new() -> StateValue {
        StateValue::default()
    }

    /// The explicit lock of `tier`.
    pub fn lock(&self, tier: LockTier) -> &ExplicitRwLock {
        match tier {
            LockTier::Local => &self.local_lock,
            LockTier::Global => &self.global_lock,
        }
    }

    /// Current length in bytes.
    pub fn len(&self) -> usize {
        lock(&self.data).bytes.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Extends the value with zeros to at least `len` bytes.
    pub fn ensure_len(&self, len: usize) -> Result<(), StateError> {
        lock(&self.data).ensure_len(len)
    }

    /// Replaces the whole value with `data` and marks all of it dirty.
    pub fn set(&self, data: &[u8]) -> Result<(), StateError> {
        check_len(data.len())?;
        let mut d = lock(&self.data);
        d.bytes.clear();
        d.bytes.extend_from_slice(data);
        d.dirty.clear();
        let n = d.bytes.len();
        d.mark(0..n);
        Ok(())
    }

    /// Copies `data` in at `offset`, extending the value if needed, and
    /// marks those bytes dirty.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<(), StateError> {
        let end = offset
            .checked_add(data.len())
            .ok_or(StateError::ValueTooLarge { len: u64::MAX })?;
        let mut d = lock(&self.data);
        d.ensure_len(end)?;
        d.bytes[offset..end].copy_from_slice(data);
        d.mark(offset..end);
        Ok(())
    }

    /// Copies bytes from `offset` into `buf`; bytes past the end of the
    /// value read as zero. Returns the value's length.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize {
        let d = lock(&self.data);
        let avail = d.bytes.get(offset..).unwrap_or(&[]);
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        buf[n..].fill(0);
        d.bytes.len()
    }

    /// Calls `f` with the value's bytes.
    pub fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&lock(&self.data).bytes)
    }

    /// Marks `offset..offset+len` dirty (clamped to the value).
    pub fn mark_dirty(&self, offset: usize, len: usize) {
        let mut d = lock(&self.data);
        let end = offset.saturating_add(len).min(d.bytes.len());
        let start = offset.min(end);
        d.mark(start..end);
    }

    /// The dirty byte ranges, merged, in order.
    pub fn dirty_ranges(&self) -> Vec<Range<usize>> {
        ranges_of_mask(&lock(&self.data).dirty)
    }

    /// Forgets which bytes are dirty.
    pub fn clear_dirty(&self) {
        lock(&self.data).dirty.clear();
    }
}

/// The runs of nonzero bytes in `mask`, as ranges.
pub fn ranges_of_mask(mask: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < mask.len() {
        match mask[i..].iter().position(|&b| b != 0) {
            None => break,
            Some(s) => {
                let start = i + s;
                let len = mask[start..]
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(mask.len() - start);
                out.push(start..start + len);
                i = start + len;
            }
        }
    }
    out
}

/// A list of appended elements (`__faasm_append_state`).
#[derive(Debug, Default)]
pub struct AppendedState {
    elems: Mutex<Vec<Vec<u8>>>,
}

impl AppendedState {
    /// Appends one element.
    pub fn append(&self, data: &[u8]) -> Result<(), StateError> {
        check_len(data.len())?;
        lock(&self.elems).push(data.to_vec());
        Ok(())
    }

    /// Concatenates the first `n` elements into `buf`. Fails if there are
    /// fewer than `n` elements or they do not fit in `buf`; returns the
    /// number of bytes written.
    pub fn read(&self, buf: &mut [u8], n: usize) -> Result<usize, StateError> {
        let elems = lock(&self.elems);
        if n > elems.len() {
            return Err(StateError::NotEnoughAppended {
                wanted: n as u64,
                have: elems.len() as u64,
            });
        }
        let mut at = 0;
        for e in &elems[..n] {
            let buf_len = buf.len() as u64;
            let dst = buf
                .get_mut(at..at + e.len())
                .ok_or(StateError::BufferTooSmall {
                    needed: at as u64 + e.len() as u64,
                    len: buf_len,
                })?;
            dst.copy_from_slice(e);
            at += e.len();
        }
        Ok(at)
    }

    /// Number of elements.
    pub fn count(&self) -> usize {
        lock(&self.elems).len()
    }

    /// Removes every element.
    pub fn clear(&self) {
        lock(&self.elems).clear();
    }
}

/// Where state values live. Implementations must be shareable between
/// Faaslets on different threads.
pub trait StateStore: Send + Sync {
    /// The value named `key`, created empty if new.
    fn value(&self, key: &str) -> Arc<StateValue>;
    /// The appended-state list named `key`, created empty if new.
    fn appended(&self, key: &str) -> Arc<AppendedState>;
    /// Sends `ranges` of the value (all of it if `None`) to the global tier
    /// and clears its dirty marks.
    fn push(
        &self,
        key: &str,
        value: &StateValue,
        ranges: Option<&[Range<usize>]>,
    ) -> Result<(), StateError>;
    /// Refreshes the local copy of `key` from the global tier.
    fn pull(&self, key: &str, value: &StateValue) -> Result<(), StateError>;
}

/// The local tier: one copy of each value per host, in this process.
///
/// ```
/// use faaslet_state::{LocalStateStore, StateStore};
/// let store = LocalStateStore::new();
/// store.value("k").set(b"hello").unwrap();
/// let mut buf = [0u8; 5];
/// assert_eq!(store.value("k").read_at(0, &mut buf), 5);
/// assert_eq!(&buf, b"hello");
/// ```
#[derive(Debug, Default)]
pub struct LocalStateStore {
    values: RwLock<HashMap<String, Arc<StateValue>>>,
    appended: RwLock<HashMap<String, Arc<AppendedState>>>,
}

impl LocalStateStore {
    /// An empty store.
    pub fn new() -> LocalStateStore {
        LocalStateStore::default()
    }
}

fn get_or_insert<V: Default>(map: &RwLock<HashMap<String, Arc<V>>>, key: &str) -> Arc<V> {
    if let Some(v) = map.read().unwrap_or_else(|e| e.into_inner()).get(key) {
        return v.clone();
    }
    map.write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.to_string())
        .or_default()
        .clone()
}

impl StateStore for LocalStateStore {
    fn value(&self, key: &str) -> Arc<StateValue> {
        get_or_insert(&self.values, key)
    }
    fn appended(&self, key: &str) -> Arc<AppendedState> {
        get_or_insert(&self.appended, key)
    }
    fn push(
        &self,
        _key: &str,
        value: &StateValue,
        _ranges: Option<&[Range<usize>]>,
    ) -> Result<(), StateError> {
        // No global tier yet: the local copy is authoritative.
        value.clear_dirty();
        Ok(())
    }
    fn pull(&self, _key: &str, _value: &StateValue) -> Result<(), StateError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_mark_dirty_and_push_clears() {
        let s = LocalStateStore::new();
        let v = s.value("a");
        v.ensure_len(16).unwrap();
        assert!(v.dirty_ranges().is_empty());
        v.write_at(2, b"xy").unwrap();
        v.mark_dirty(10, 100);
        assert_eq!(v.dirty_ranges(), vec![2..4, 10..16]);
        s.push("a", &v, None).unwrap();
        assert!(v.dirty_ranges().is_empty());
        assert!(Arc::ptr_eq(&v, &s.value("a")));
    }

    #[test]
    fn read_pads_with_zeros() {
        let v = StateValue::new();
        v.set(b"abc").unwrap();
        let mut buf = [9u8; 5];
        assert_eq!(v.read_at(1, &mut buf), 3);
        assert_eq!(&buf, b"bc\0\0\0");
        assert_eq!(v.read_at(10, &mut buf), 3);
        assert_eq!(buf, [0; 5]);
    }

    #[test]
    fn appended_reads_in_order_and_checks_space() {
        let a = AppendedState::default();
        a.append(b"ab").unwrap();
        a.append(b"cde").unwrap();
        let mut buf = [0u8; 5];
        assert_eq!(a.read(&mut buf, 2).unwrap(), 5);
        assert_eq!(&buf, b"abcde");
        assert!(a.read(&mut buf[..4], 2).is_err());
        assert!(a.read(&mut buf, 3).is_err());
        a.clear();
        assert_eq!(a.count(), 0);
    }

    #[test]
    fn huge_values_are_refused() {
        let v = StateValue::new();
        assert!(v.ensure_len(MAX_VALUE_LEN + 1).is_err());
    }

    #[test]
    fn write_lock_excludes_readers() {
        let l = Arc::new(ExplicitRwLock::default());
        l.lock_write();
        let l2 = l.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            l2.lock_read();
            tx.send(()).unwrap();
            l2.unlock_read();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(50))
            .is_err());
        l.unlock_write();
        rx.recv().unwrap();
        t.join().unwrap();
    }
}
