//! [`StateValue`]: one value of the local tier, in a [`Segment`], with its
//! dirty runs and its local explicit lock.

use crate::error::StateError;
use crate::limits::{Quota, MAX_VALUE_LEN};
use crate::segment::Segment;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Most dirty runs remembered per value; past it they merge into one
/// covering run (pushing more than changed is still correct).
pub const MAX_DIRTY_RUNS: usize = 1024;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
    /// [`lock_read`](Self::lock_read), giving up at `deadline`: false if
    /// a writer still held the lock then (nothing is taken).
    pub fn lock_read_until(&self, deadline: Instant) -> bool {
        self.take_until(deadline, |s| !s.1, |s| s.0 += 1)
    }
    /// [`lock_write`](Self::lock_write), giving up at `deadline`: false
    /// if anybody still held the lock then (nothing is taken).
    pub fn lock_write_until(&self, deadline: Instant) -> bool {
        self.take_until(deadline, |s| !s.1 && s.0 == 0, |s| s.1 = true)
    }
    fn take_until(
        &self,
        deadline: Instant,
        free: impl Fn(&(u32, bool)) -> bool,
        take: impl FnOnce(&mut (u32, bool)),
    ) -> bool {
        let mut s = lock(&self.state);
        while !free(&s) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self
                .cond
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        take(&mut s);
        true
    }
    /// Releases the exclusive hold.
    pub fn unlock_write(&self) {
        let mut s = lock(&self.state);
        s.1 = false;
        self.cond.notify_all();
    }
}

#[derive(Debug)]
struct ValueData {
    seg: Segment,
    len: usize,
    /// Sorted, disjoint, non-adjacent dirty runs.
    dirty: Vec<Range<usize>>,
}

/// One state value of the local tier.
#[derive(Debug)]
pub struct StateValue {
    name: String,
    quota: Arc<Quota>,
    data: Mutex<ValueData>,
    local_lock: ExplicitRwLock,
}

impl ValueData {
    fn ensure_len(&mut self, len: usize, quota: &Quota) -> Result<(), StateError> {
        if self.len >= len {
            return Ok(());
        }
        if len > MAX_VALUE_LEN {
            return Err(StateError::ValueTooLarge { len: len as u64 });
        }
        let delta = (len - self.len) as u64;
        quota.charge(delta)?;
        if let Err(e) = self.seg.grow(len) {
            quota.credit(delta);
            return Err(e);
        }
        self.len = len;
        Ok(())
    }
    fn mark(&mut self, r: Range<usize>) {
        let r = r.start.min(self.len)..r.end.min(self.len);
        add_run(&mut self.dirty, r);
    }
}

/// Adds `r` to sorted, merged `runs` (at most [`MAX_DIRTY_RUNS`]).
fn add_run(runs: &mut Vec<Range<usize>>, r: Range<usize>) {
    if r.is_empty() {
        return;
    }
    let mut merged = r;
    runs.retain(|d| {
        if d.end < merged.start || d.start > merged.end {
            true
        } else {
            merged = merged.start.min(d.start)..merged.end.max(d.end);
            false
        }
    });
    let at = runs.partition_point(|d| d.start < merged.start);
    runs.insert(at, merged);
    if runs.len() > MAX_DIRTY_RUNS {
        let all = runs[0].start..runs[runs.len() - 1].end;
        runs.clear();
        runs.push(all);
    }
}

impl StateValue {
    /// An empty value named `name` (`user/key`), charged to `quota`.
    pub fn new(name: String, quota: Arc<Quota>) -> Result<StateValue, StateError> {
        Ok(StateValue {
            name,
            quota,
            data: Mutex::new(ValueData {
                seg: Segment::new()?,
                len: 0,
                dirty: Vec::new(),
            }),
            local_lock: ExplicitRwLock::default(),
        })
    }

    /// The qualified name, `user/key`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The local explicit lock (`__faasm_lock_state_read/write`).
    pub fn local_lock(&self) -> &ExplicitRwLock {
        &self.local_lock
    }

    /// Current length in bytes.
    pub fn len(&self) -> usize {
        lock(&self.data).len
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Extends the value with zeros to at least `len` bytes, charging the
    /// growth to the user's quota.
    pub fn ensure_len(&self, len: usize) -> Result<(), StateError> {
        lock(&self.data).ensure_len(len, &self.quota)
    }

    /// Replaces the whole value with `data` and marks all of it dirty.
    pub fn set(&self, data: &[u8]) -> Result<(), StateError> {
        let mut d = lock(&self.data);
        d.ensure_len(data.len(), &self.quota)?;
        let old = d.len;
        if old > data.len() {
            d.seg.zero(data.len(), old - data.len());
            self.quota.credit((old - data.len()) as u64);
            d.len = data.len();
            d.dirty.retain(|r| r.start < data.len());
            if let Some(last) = d.dirty.last_mut() {
                last.end = last.end.min(data.len());
            }
        }
        d.seg.write(0, data);
        d.mark(0..data.len());
        Ok(())
    }

    /// Copies `data` in at `offset`, extending the value if needed, and
    /// marks those bytes dirty.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<(), StateError> {
        let end = offset
            .checked_add(data.len())
            .ok_or(StateError::ValueTooLarge { len: u64::MAX })?;
        let mut d = lock(&self.data);
        d.ensure_len(end, &self.quota)?;
        d.seg.write(offset, data);
        d.mark(offset..end);
        Ok(())
    }

    /// Copies `data` in at `offset` without marking it dirty (a pull).
    /// The value must already be long enough.
    pub(crate) fn fill_at(&self, offset: usize, data: &[u8]) {
        let d = lock(&self.data);
        let end = (offset + data.len()).min(d.len);
        if offset < end {
            d.seg.write(offset, &data[..end - offset]);
        }
    }

    /// Zeroes `offset..len` without marking it dirty (a pull of a shorter
    /// global value).
    pub(crate) fn zero_from(&self, offset: usize) {
        let d = lock(&self.data);
        if offset < d.len {
            d.seg.zero(offset, d.len - offset);
        }
    }

    /// Copies bytes from `offset` into `buf`; bytes past the end of the
    /// value read as zero. Returns the value's length.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize {
        let d = lock(&self.data);
        let avail = d.len.saturating_sub(offset);
        let n = avail.min(buf.len());
        d.seg.read(offset.min(d.len), &mut buf[..n]);
        buf[n..].fill(0);
        d.len
    }

    /// A copy of bytes `range` (clamped to the value), allocated fallibly.
    pub fn copy_range(&self, range: Range<usize>) -> Result<Vec<u8>, StateError> {
        let d = lock(&self.data);
        let end = range.end.min(d.len);
        let start = range.start.min(end);
        let mut v = Vec::new();
        v.try_reserve_exact(end - start)
            .map_err(|_| StateError::OutOfMemory {
                bytes: (end - start) as u64,
            })?;
        v.resize(end - start, 0);
        d.seg.read(start, &mut v);
        Ok(v)
    }

    /// The runs of nonzero bytes of this value (used as a push mask),
    /// merged as dirty runs are (at most [`MAX_DIRTY_RUNS`]).
    pub fn mask_ranges(&self) -> Vec<Range<usize>> {
        let d = lock(&self.data);
        let mut runs = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut at = 0;
        while at < d.len {
            let n = chunk.len().min(d.len - at);
            d.seg.read(at, &mut chunk[..n]);
            for r in ranges_of_mask(&chunk[..n]) {
                add_run(&mut runs, at + r.start..at + r.end);
            }
            at += n;
        }
        runs
    }

    /// Marks `offset..offset+len` dirty (clamped to the value).
    pub fn mark_dirty(&self, offset: usize, len: usize) {
        lock(&self.data).mark(offset..offset.saturating_add(len));
    }

    /// The dirty byte ranges, merged, in order.
    pub fn dirty_ranges(&self) -> Vec<Range<usize>> {
        lock(&self.data).dirty.clone()
    }

    /// Forgets which bytes are dirty.
    pub fn clear_dirty(&self) {
        lock(&self.data).dirty.clear();
    }

    /// Forgets that the bytes in `ranges` are dirty (the rest stay dirty).
    pub fn clear_dirty_in(&self, ranges: &[Range<usize>]) {
        let mut d = lock(&self.data);
        let mut out = Vec::with_capacity(d.dirty.len());
        for run in &d.dirty {
            let mut pieces = vec![run.clone()];
            for r in ranges {
                pieces = pieces
                    .into_iter()
                    .flat_map(|p| {
                        let left = p.start..p.end.min(r.start);
                        let right = p.start.max(r.end)..p.end;
                        [left, right].into_iter().filter(|x| !x.is_empty())
                    })
                    .collect();
            }
            out.extend(pieces);
        }
        d.dirty = out;
    }

    /// Calls `f` with the value's memfd and length, under the value's
    /// internal lock (for mapping it into a Faaslet).
    pub fn with_segment<R>(&self, f: impl FnOnce(std::os::fd::RawFd, usize) -> R) -> R {
        let d = lock(&self.data);
        f(d.seg.fd(), d.len)
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
