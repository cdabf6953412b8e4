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

/// A live mapping of a value (a Faaslet's, made by the platform) that
/// reports, when asked, which bytes were written through it: so a partial
/// push collects writes of Faaslets that are still running, not only of
/// those whose calls ended.
pub trait LiveWrites: Send + Sync {
    /// The byte ranges of the value written through the mapping since the
    /// last call, or `None` once the mapping is gone (the value then
    /// forgets it).
    fn take(&self) -> Option<Vec<Range<usize>>>;
    /// Whether the mapping still exists.
    fn is_live(&self) -> bool;
}

/// One state value of the local tier.
pub struct StateValue {
    name: String,
    quota: Arc<Quota>,
    data: Mutex<ValueData>,
    local_lock: ExplicitRwLock,
    /// Live mappings to collect writes from (see [`LiveWrites`]): at most
    /// one per mapping in existence, pruned as mappings go.
    writers: Mutex<Vec<Box<dyn LiveWrites>>>,
}

impl std::fmt::Debug for StateValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateValue")
            .field("name", &self.name)
            .field("data", &self.data)
            .field("local_lock", &self.local_lock)
            .field("writers", &lock(&self.writers).len())
            .finish()
    }
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
            writers: Mutex::new(Vec::new()),
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
        // SAFETY: a Rust slice is readable host memory, not the segment.
        unsafe { self.set_raw(data.as_ptr(), data.len()) }
    }

    /// [`set`](Self::set) from the `len` bytes at `src`, which other
    /// threads may be writing (guest memory): copied without ever making a
    /// Rust slice of them.
    ///
    /// # Safety
    /// `src .. src + len` must be readable for the duration of the call.
    /// It may be a Faaslet's mapping of this very value (a guest passing
    /// its own mapped pointer): the copy is then of the pages onto
    /// themselves, which leaves them as they were.
    pub unsafe fn set_raw(&self, src: *const u8, len: usize) -> Result<(), StateError> {
        let mut d = lock(&self.data);
        d.ensure_len(len, &self.quota)?;
        let old = d.len;
        if old > len {
            d.seg.zero(len, old - len);
            self.quota.credit((old - len) as u64);
            d.len = len;
            d.dirty.retain(|r| r.start < len);
            if let Some(last) = d.dirty.last_mut() {
                last.end = last.end.min(len);
            }
        }
        // SAFETY: the caller vouches for `src`; it is never the host's own
        // mapping of the segment, which nothing outside this crate sees.
        unsafe { d.seg.write_raw(0, src, len) };
        d.mark(0..len);
        Ok(())
    }

    /// Copies `data` in at `offset`, extending the value if needed, and
    /// marks those bytes dirty.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<(), StateError> {
        // SAFETY: a Rust slice is readable host memory, not the segment.
        unsafe { self.write_at_raw(offset, data.as_ptr(), data.len()) }
    }

    /// [`write_at`](Self::write_at) from the `len` bytes at `src` (see
    /// [`set_raw`](Self::set_raw)).
    ///
    /// # Safety
    /// As for [`set_raw`](Self::set_raw).
    pub unsafe fn write_at_raw(
        &self,
        offset: usize,
        src: *const u8,
        len: usize,
    ) -> Result<(), StateError> {
        let end = offset
            .checked_add(len)
            .ok_or(StateError::ValueTooLarge { len: u64::MAX })?;
        let mut d = lock(&self.data);
        d.ensure_len(end, &self.quota)?;
        // SAFETY: the caller vouches for `src` (never the host's own
        // mapping of the segment).
        unsafe { d.seg.write_raw(offset, src, len) };
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
        // SAFETY: a Rust slice is writable host memory, not the segment.
        unsafe { self.read_at_raw(offset, buf.as_mut_ptr(), buf.len()) }
    }

    /// [`read_at`](Self::read_at) into the `len` bytes at `dst`, which
    /// other threads may be reading or writing (guest memory).
    ///
    /// # Safety
    /// `dst .. dst + len` must be writable for the duration of the call
    /// (it may be a Faaslet's mapping of this very value).
    pub unsafe fn read_at_raw(&self, offset: usize, dst: *mut u8, len: usize) -> usize {
        let d = lock(&self.data);
        let avail = d.len.saturating_sub(offset);
        let n = avail.min(len);
        // SAFETY: the caller vouches for `dst .. dst + len`, and n <= len.
        unsafe {
            d.seg.read_raw(offset.min(d.len), dst, n);
            std::ptr::write_bytes(dst.add(n), 0, len - n);
        }
        d.len
    }

    /// Bytes `range` of the value (clamped to its current length) as a
    /// [`ByteSource`](crate::global::ByteSource): a global tier copies them
    /// straight from the shared segment, under the value's lock, in
    /// chunks, with no whole copy of the range first.
    pub fn bytes(&self, range: Range<usize>) -> ValueBytes<'_> {
        let len = self.len();
        let end = range.end.min(len);
        ValueBytes {
            value: self,
            range: range.start.min(end)..end,
        }
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

    /// Registers a live mapping whose writes [`collect_writes`](Self::collect_writes)
    /// gathers (and forgets the mappings that are gone).
    pub fn add_writer(&self, writer: Box<dyn LiveWrites>) {
        let mut w = lock(&self.writers);
        w.retain(|w| w.is_live());
        w.push(writer);
    }

    /// Marks dirty every byte written through the live mappings since they
    /// last reported, whichever Faaslets (running or not) made them.
    pub fn collect_writes(&self) {
        let mut written = Vec::new();
        lock(&self.writers).retain(|w| match w.take() {
            Some(r) => {
                written.extend(r);
                true
            }
            None => false,
        });
        let mut d = lock(&self.data);
        for r in written {
            d.mark(r);
        }
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

/// Bytes of a [`StateValue`], read from its segment when a global tier
/// asks for them (see [`StateValue::bytes`]).
#[derive(Debug)]
pub struct ValueBytes<'a> {
    value: &'a StateValue,
    range: Range<usize>,
}

/// What a push copies at a time from a segment: small enough to stay in
/// the cache between the segment and the tier's buffer.
const PUSH_CHUNK: usize = 256 * 1024;

impl crate::global::ByteSource for ValueBytes<'_> {
    fn len(&self) -> usize {
        self.range.len()
    }
    fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let d = lock(&self.value.data);
        // A shared segment is written by Faaslets through their mappings
        // while we read it: it is copied, never borrowed as a slice. The
        // segment never shrinks, so the range (within the length the
        // value had when `bytes` was called) stays inside it; bytes past
        // a length that has shrunk since are zero.
        let mut chunk = vec![0u8; PUSH_CHUNK.min(self.range.len())];
        let mut at = self.range.start;
        while at < self.range.end {
            let n = chunk.len().min(self.range.end - at);
            d.seg.read(at, &mut chunk[..n]);
            out.write_all(&chunk[..n])?;
            at += n;
        }
        Ok(())
    }
}
