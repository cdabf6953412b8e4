//! The GC heap of a store (WebAssembly GC): structs and arrays, addressed
//! by 32-bit offsets, the `GC` builtin's operations on them, and the
//! collector.
//!
//! As built (see `docs/gc.md`): one heap per store, its bytes at the start
//! of a reservation they grow within (`HeapMem`), never
//! dereferenced by JIT code (JIT code only ever holds offsets and calls the
//! `GC` builtin, see `faaslet_jit::gc_layout`). The collector is a
//! **non-moving mark-sweep** collector with **conservative stack roots**:
//!
//! - Allocation bumps a pointer through the free runs the last sweep found
//!   (first fit for large objects), then grows the heap's end. Before
//!   the heap grows past a threshold (twice the live bytes after the last
//!   collection, at least [`MIN_THRESHOLD`]) or past what the store's
//!   `memory_bytes` limit and [`MAX_HEAP_BYTES`] allow, it collects and
//!   retries; only then does an allocation trap with
//!   [`TrapKind::GcHeapExhausted`].
//! - Roots: the store's globals, tables, element segments, exception
//!   payloads and host handles ([`HostRoots`]) precisely or word by word,
//!   and, while wasm runs, every 8-byte word of the native stack between
//!   the collection point and the outermost wasm entry plus the
//!   callee-saved registers (`scan_native_stack`). A word counts as a
//!   reference only if (bit 63 masked off, for `extern.convert_any`) it
//!   is exactly the start of an allocated object (`starts`, a bitmap with
//!   one bit per 8-byte granule); why that is sound for this JIT is argued
//!   at `scan_native_stack`.
//! - Marking traces objects precisely by their types; sweeping turns the
//!   gaps between marked objects into free blocks (a header with
//!   [`FREE_ID`] and the block's size, so the heap still tiles for
//!   snapshots) and gives back a free tail.
//!
//! Every access is bounds-checked against the heap's length and checked to name
//! an object start, so a forged or stale reference reads or writes bytes
//! of the same store's heap at worst, never anything else.
//!
//! Object layout: an 8-byte header (heap-local type number, u32, an index
//! into `GcHeap::local_types`; array length, u32), then the fields at the
//! offsets the type's [`CompositeKind::Struct`] gives, or the array's
//! elements packed at their storage size. Objects are 8-byte aligned and
//! offset 0 is never an object, so an offset is a valid GC reference
//! (`types::gc_ref`). A function reference field holds a heap-local
//! function number (`GcHeap::funcs`). Offsets and the two heap-local
//! numberings make the bytes engine-, process- and position-independent:
//! a snapshot keeps them as they are and a restore maps them
//! copy-on-write ([`HeapImage`]), rewriting nothing.

use crate::trap::TrapKind;
use faaslet_jit::abi::{VMFuncRef, ValRaw};
use faaslet_jit::gc_layout::{heap, op, HEADER_BYTES};
use faaslet_jit::{gc_ref, CompositeKind, FieldType, ModuleInfo, StorageType, TypeDef};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest a store's GC heap may grow (offsets are 32-bit, and the
/// top bit is kept clear): 1 GiB, below the store's `memory_bytes` limit
/// if that is lower.
pub const MAX_HEAP_BYTES: u64 = 1 << 30;

/// The most elements one array may have (so its size fits the heap).
const MAX_ARRAY_LEN: u64 = MAX_HEAP_BYTES;

/// The type word of a free block's header (never an engine-wide type id:
/// the registry hands out ids from 0 upwards, far below this). The block's
/// size in bytes is its header's second word.
pub(crate) const FREE_ID: u32 = u32::MAX;

/// The least heap size at which allocation collects before growing the
/// heap further: 1 MiB.
pub const MIN_THRESHOLD: u64 = 1 << 20;

/// Objects of at least this many bytes are placed first-fit in any free
/// run; smaller ones bump through the runs in address order.
const LARGE_OBJECT: usize = 1024;

/// Collects before the native stack range is trusted only if it is at
/// most this large (a wasm stack is at most `max_wasm_stack` deep; this
/// bounds a scan if a recorded stack top were ever wrong).
const MAX_SCANNED_STACK: usize = 1 << 30;

/// What the collector has done in a store, as [`crate::Store::gc_stats`]
/// reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Collections run.
    pub collections: u64,
    /// Bytes the heap holds now (live objects, free blocks, header).
    pub heap_bytes: u64,
    /// Bytes of objects found live by the last collection.
    pub live_bytes: u64,
    /// Bytes of objects allocated since the store was made.
    pub allocated_bytes: u64,
    /// Objects allocated since the store was made.
    pub allocated_objects: u64,
    /// The longest collection pause.
    pub max_pause: Duration,
    /// All collection pauses together.
    pub total_pause: Duration,
}

/// Enumerates the roots outside the native stack: calls its argument with
/// every word that may be a GC reference. Returns `false` if it could not
/// see all of them (then nothing may be collected).
pub(crate) type Roots<'a> = &'a dyn Fn(&mut dyn FnMut(u64)) -> bool;

/// Whether every allocation that may collect does (`FAASLET_GC_STRESS=1`):
/// the strongest test that roots are found.
fn stress_from_env() -> bool {
    static STRESS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STRESS.get_or_init(|| std::env::var_os("FAASLET_GC_STRESS").is_some_and(|v| v != "0"))
}

/// A store's GC heap.
pub(crate) struct GcHeap {
    /// The objects and free blocks, tiling the bytes from `HEADER_BYTES`;
    /// bytes `0..HEADER_BYTES` are never an object.
    bytes: HeapMem,
    /// One bit per 8-byte granule of `bytes`: set where an allocated
    /// object starts (never for a free block). Empty while
    /// `image_starts` stands in for it.
    starts: Vec<u64>,
    /// After a restore, the image's bitmap, shared (no copy at restore)
    /// until the first allocation copies it into `starts`
    /// (`starts_mut`); `None` otherwise.
    image_starts: Option<Arc<Vec<u64>>>,
    /// Every type of the store's instances by engine-wide id (for casts,
    /// which compare an object's type with a target's).
    types: HashMap<u32, Arc<TypeDef>>,
    /// The heap-local type numbers object headers hold: number `n` is the
    /// type `local_types[n]` (engine-wide id, definition). Numbered in the
    /// order types are first allocated; a restore sets the table from the
    /// image (one entry per type), so the image's headers stay valid as
    /// they are in any engine.
    local_types: Vec<(u32, Arc<TypeDef>)>,
    /// Engine-wide id → heap-local type number + 1 (0: none yet).
    local_of: HashMap<u32, u32>,
    /// The last `(engine-wide id, heap-local number)` looked up
    /// (allocations of one type tend to come together; this saves most of
    /// the map lookups). `u32::MAX` as id: none.
    last_local: (u32, u32),
    /// The heap-local function numbers fields of function reference type
    /// hold: number `n` (≥ 1) is the `VMFuncRef` pointer `funcs[n - 1]`
    /// (0 is null). The `GC` builtin translates on every store and load,
    /// so wasm code only ever sees pointers; a restore sets the table from
    /// the image (one entry per function), so no field is rewritten.
    funcs: Vec<u64>,
    /// `VMFuncRef` pointer → heap-local function number.
    func_of: HashMap<u64, u32>,
    /// The trap the last failed operation asked for.
    pub(crate) trap: Option<TrapKind>,
    /// Free runs (start, end) not yet bumped through, in address order.
    runs: Vec<(u32, u32)>,
    /// The next of `runs` to bump through.
    next_run: usize,
    /// The free run being bumped through: `bump..bump_end` (empty: none).
    bump: usize,
    bump_end: usize,
    /// The heap length past which allocation collects before growing.
    threshold: u64,
    /// The native stack address just above the outermost wasm frame of the
    /// call running in the store (0: no wasm runs, no stack to scan).
    pub(crate) stack_top: usize,
    /// Collect at every allocation that may (`FAASLET_GC_STRESS`).
    stress: bool,
    stats: GcStats,
}

impl Default for GcHeap {
    fn default() -> GcHeap {
        GcHeap {
            bytes: HeapMem::default(),
            starts: Vec::new(),
            image_starts: None,
            types: HashMap::new(),
            local_types: Vec::new(),
            local_of: HashMap::new(),
            last_local: (u32::MAX, 0),
            funcs: Vec::new(),
            func_of: HashMap::new(),
            trap: None,
            runs: Vec::new(),
            next_run: 0,
            bump: 0,
            bump_end: 0,
            threshold: MIN_THRESHOLD,
            stack_top: 0,
            stress: stress_from_env(),
            stats: GcStats::default(),
        }
    }
}

fn bit(map: &[u64], at: usize) -> bool {
    let g = at / 8;
    map.get(g / 64).is_some_and(|w| w & (1 << (g % 64)) != 0)
}

fn set_bit(map: &mut [u64], at: usize) {
    let g = at / 8;
    if let Some(w) = map.get_mut(g / 64) {
        *w |= 1 << (g % 64);
    }
}

/// Words of a granule bitmap covering `len` bytes.
fn bitmap_words(len: usize) -> usize {
    len.div_ceil(8).div_ceil(64)
}

type GcResult<T> = Result<T, TrapKind>;

/// How much more of the reservation a growing heap makes accessible at
/// once (fewer `mprotect` calls; untouched pages cost nothing).
const COMMIT_STEP: usize = 1 << 20;

/// The bytes of a GC heap: the first `len` bytes of a reservation of
/// [`MAX_HEAP_BYTES`] (`faaslet_sfi::Reservation`, inaccessible beyond
/// what was made accessible, with a canary page in front), so the heap
/// grows in place by `mprotect`, never moves, and a restore can map an
/// image's memfd copy-on-write over its start
/// ([`HeapMem::from_image`]): pages a restored store never writes stay
/// shared with the image. No reservation until the first allocation.
///
/// Only the runtime touches these bytes (JIT code never dereferences a GC
/// reference), always through the slice `Deref` gives, so every access is
/// bounds-checked against `len` as it was against a `Vec`.
#[derive(Default)]
struct HeapMem {
    res: Option<faaslet_sfi::Reservation>,
    /// `res`'s base address (0 without one), kept here so that every
    /// access does not call into the reservation.
    base: usize,
    /// Bytes in use (the heap's length).
    len: usize,
    /// Bytes from the base that are accessible (a multiple of the page
    /// size, at least `len`).
    committed: usize,
}

impl std::ops::Deref for HeapMem {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        if self.base == 0 {
            return &[];
        }
        // SAFETY: `base` is the base of `res` (set with it), and
        // `base..base + len` lies in the reservation and is readable and
        // writable (`len <= committed`, which `grow_to` and `from_image`
        // made accessible, and `truncate` keeps accessible); only this
        // value hands out references into it, borrowed from `&self`, so no
        // `&mut` aliases them.
        unsafe { std::slice::from_raw_parts(self.base as *const u8, self.len) }
    }
}

impl std::ops::DerefMut for HeapMem {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        if self.base == 0 {
            return &mut [];
        }
        // SAFETY: as for `deref`; borrowed from `&mut self`, so this is
        // the only reference into the bytes.
        unsafe { std::slice::from_raw_parts_mut(self.base as *mut u8, self.len) }
    }
}

impl HeapMem {
    /// Grows the heap to `new_len` bytes (at most [`MAX_HEAP_BYTES`]),
    /// making more of the reservation accessible if needed. The new bytes
    /// are not zeroed (a page given back and taken again may read the
    /// image it was mapped from): the allocator zeroes every object.
    fn grow_to(&mut self, new_len: usize) -> Result<(), faaslet_sfi::MemoryError> {
        if new_len as u64 > MAX_HEAP_BYTES {
            return Err(faaslet_sfi::MemoryError::TooLarge {
                requested: new_len,
                limit: MAX_HEAP_BYTES as usize,
            });
        }
        if self.res.is_none() {
            let r = faaslet_sfi::Reservation::new(MAX_HEAP_BYTES as usize)?;
            self.base = r.base() as usize;
            self.res = Some(r);
        }
        let r = self.res.as_ref().expect("reserved above");
        if new_len > self.committed {
            let want = new_len
                .next_multiple_of(COMMIT_STEP)
                .min(MAX_HEAP_BYTES as usize);
            r.make_accessible(self.committed, want - self.committed)?;
            self.committed = want;
        }
        self.len = self.len.max(new_len);
        Ok(())
    }

    /// Shortens the heap to `new_len` bytes; gives the pages well past the
    /// end back (discarded and made inaccessible) when many are.
    fn truncate(&mut self, new_len: usize) {
        self.len = self.len.min(new_len);
        let keep = self.len.next_multiple_of(COMMIT_STEP);
        if let Some(r) = &self.res {
            if self.committed > 2 * keep + MIN_THRESHOLD as usize
                && r.make_inaccessible(keep, self.committed - keep).is_ok()
            {
                self.committed = keep;
            }
        }
    }

    /// A heap of `len` bytes holding `image` (at least `len` bytes long),
    /// mapped copy-on-write: one `mmap`, whatever the size; no byte is
    /// read or written.
    fn from_image(
        image: &faaslet_sfi::MemoryImage,
        len: usize,
    ) -> Result<HeapMem, faaslet_sfi::MemoryError> {
        if len > image.len() || len as u64 > MAX_HEAP_BYTES {
            return Err(faaslet_sfi::MemoryError::OutOfBounds {
                offset: 0,
                len,
                reserved: image.len(),
            });
        }
        let res = faaslet_sfi::Reservation::new(MAX_HEAP_BYTES as usize)?;
        image.map_into(&res)?;
        Ok(HeapMem {
            base: res.base() as usize,
            res: Some(res),
            len,
            committed: image.len(),
        })
    }

    /// The address range of the heap's reservation (empty if none), for
    /// tests that count the resident pages of a restored heap.
    fn range(&self) -> std::ops::Range<usize> {
        self.base..self.base + self.len
    }
}

impl GcHeap {
    /// The object-start bitmap (the image's, until the first allocation
    /// after a restore).
    #[inline]
    fn starts(&self) -> &[u64] {
        match &self.image_starts {
            Some(s) => s,
            None => &self.starts,
        }
    }

    /// The object-start bitmap to change: copies the image's first if a
    /// restore left it shared (once, heap/64 bytes).
    #[inline]
    fn starts_mut(&mut self) -> &mut Vec<u64> {
        if let Some(s) = self.image_starts.take() {
            self.starts = (*s).clone();
        }
        &mut self.starts
    }

    /// Bytes the heap holds now (counted against `memory_bytes`).
    pub(crate) fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Makes the types of `info` known to casts.
    pub(crate) fn register_types(&mut self, info: &ModuleInfo) {
        for (def, id) in info.type_defs.iter().zip(&info.type_ids) {
            self.types
                .entry(*id)
                .or_insert_with(|| Arc::new(def.clone()));
        }
    }

    /// What the collector has done.
    pub(crate) fn stats(&self) -> GcStats {
        GcStats {
            heap_bytes: self.len(),
            ..self.stats
        }
    }

    /// Allocates `size` zeroed bytes (header included) for an object of
    /// heap-local type number `type_id` and array length `len`; `budget` is what the
    /// store's limit still allows. With `roots`, it collects before
    /// growing the heap past its threshold or its limits.
    fn alloc(
        &mut self,
        size: u64,
        type_id: u32,
        len: u32,
        budget: u64,
        roots: Option<Roots<'_>>,
    ) -> GcResult<u64> {
        if self.bytes.is_empty() {
            if self.bytes.grow_to(HEADER_BYTES as usize).is_err() {
                return Err(TrapKind::GcHeapExhausted);
            }
            self.bytes[..HEADER_BYTES as usize].fill(0);
            let words = bitmap_words(self.bytes.len());
            self.starts_mut().resize(words, 0);
        }
        let size = size.checked_add(7).ok_or(TrapKind::GcHeapExhausted)? & !7;
        if size > MAX_HEAP_BYTES {
            return Err(TrapKind::GcHeapExhausted);
        }
        // The longest the heap may become: what the store's limit allows
        // (the budget was computed with the heap at its present length;
        // a collection that shrinks the heap gives the difference back).
        let limit = (self.len().saturating_add(budget)).min(MAX_HEAP_BYTES);
        let size = size as usize;
        let mut collected = false;
        if let Some(roots) = roots.filter(|_| self.stress) {
            collected = self.collect(roots, self.stack_top);
        }
        let at = loop {
            if let Some(at) = self.take_free(size) {
                break at;
            }
            let end = self.bytes.len() as u64 + size as u64;
            if !collected && (end > self.threshold || end > limit) {
                if let Some(roots) = roots {
                    collected = self.collect(roots, self.stack_top);
                    if collected {
                        continue;
                    }
                }
            }
            if end > limit {
                return Err(TrapKind::GcHeapExhausted);
            }
            let at = self.bytes.len();
            if self.bytes.grow_to(end as usize).is_err() {
                return Err(TrapKind::GcHeapExhausted);
            }
            let words = bitmap_words(self.bytes.len());
            self.starts_mut().resize(words, 0);
            break at;
        };
        let obj = &mut self.bytes[at..at + size];
        obj.fill(0);
        obj[..4].copy_from_slice(&type_id.to_le_bytes());
        obj[4..8].copy_from_slice(&len.to_le_bytes());
        set_bit(self.starts_mut(), at);
        self.stats.allocated_bytes += size as u64;
        self.stats.allocated_objects += 1;
        Ok(at as u64)
    }

    /// Writes a free block header at `at` covering `at..end`.
    fn free_block(&mut self, at: usize, end: usize) {
        if at < end {
            self.bytes[at..at + 4].copy_from_slice(&FREE_ID.to_le_bytes());
            self.bytes[at + 4..at + 8].copy_from_slice(&((end - at) as u32).to_le_bytes());
        }
    }

    /// `size` bytes of the free runs, if some run has them. Small objects
    /// bump through the runs in address order (a run too short for the
    /// next object is left to the next collection); large ones take the
    /// first run that fits.
    fn take_free(&mut self, size: usize) -> Option<usize> {
        if size >= LARGE_OBJECT {
            let i = self.runs[self.next_run..]
                .iter()
                .position(|&(s, e)| (e - s) as usize >= size)?
                + self.next_run;
            let (s, e) = self.runs[i];
            let at = s as usize;
            self.runs[i].0 = (at + size) as u32;
            self.free_block(at + size, e as usize);
            return Some(at);
        }
        loop {
            if self.bump + size <= self.bump_end {
                let at = self.bump;
                self.bump += size;
                let (b, e) = (self.bump, self.bump_end);
                self.free_block(b, e);
                return Some(at);
            }
            let &(s, e) = self.runs.get(self.next_run)?;
            self.next_run += 1;
            (self.bump, self.bump_end) = (s as usize, e as usize);
        }
    }

    /// The size in bytes (a multiple of 8) of an object of type `def` and
    /// array length `len`.
    fn size_of(def: &TypeDef, len: u32) -> Option<usize> {
        let len = len as usize;
        match &def.kind {
            CompositeKind::Struct { size, .. } => Some((*size as usize + 7) & !7),
            CompositeKind::Array(f) => {
                Some((HEADER_BYTES as usize + len * f.storage.size() as usize + 7) & !7)
            }
            CompositeKind::Func => None,
        }
    }

    /// Runs a full collection: marks from `roots` and (if `stack_top` is
    /// not 0) the native stack, then sweeps. Returns `false`, collecting
    /// nothing, if `roots` could not see every root.
    pub(crate) fn collect(&mut self, roots: Roots<'_>, stack_top: usize) -> bool {
        if self.bytes.len() <= HEADER_BYTES as usize {
            return true;
        }
        let started = Instant::now();
        let len = self.bytes.len();
        let mut marks = vec![0u64; self.starts().len()];
        let mut gray: Vec<u32> = Vec::new();
        {
            let starts = self.starts();
            let mut mark = |raw: u64| {
                let r = (raw & !gc_ref::WRAPPED_ANY) as usize;
                if r != 0 && r.is_multiple_of(8) && r < len && bit(starts, r) && !bit(&marks, r) {
                    set_bit(&mut marks, r);
                    gray.push(r as u32);
                }
            };
            if !roots(&mut mark) {
                return false;
            }
            if stack_top != 0 && !scan_native_stack(stack_top, &mut mark) {
                return false;
            }
        }
        // Trace: precise, by each object's type.
        let mut live = 0u64;
        let mut refs: Vec<u64> = Vec::new();
        let def_of = |types: &[(u32, Arc<TypeDef>)], local: u32| {
            types.get(local as usize).map(|(_, d)| d.clone())
        };
        while let Some(at) = gray.pop() {
            let at = at as usize;
            refs.clear();
            if let Some(def) = def_of(&self.local_types, self.read_u32(at)) {
                let mut push = |s: StorageType, p: usize| {
                    if let StorageType::Val(v) = s {
                        let raw = self
                            .bytes
                            .get(p..p + 8)
                            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
                        match v {
                            // An `anyref`: an object unless tagged.
                            faaslet_jit::ValType::AnyRef if raw & gc_ref::TAG_MASK == 0 => {
                                refs.push(raw)
                            }
                            // An `externref` made by `extern.convert_any`.
                            faaslet_jit::ValType::ExternRef if raw & gc_ref::WRAPPED_ANY != 0 => {
                                refs.push(raw)
                            }
                            _ => {}
                        }
                    }
                };
                match &def.kind {
                    CompositeKind::Struct {
                        fields, offsets, ..
                    } => {
                        for (f, o) in fields.iter().zip(offsets.iter()) {
                            push(f.storage, at + *o as usize);
                        }
                    }
                    CompositeKind::Array(f) => {
                        if matches!(f.storage, StorageType::Val(v) if v.is_ref()) {
                            let n = self.read_u32(at + 4) as usize;
                            for i in 0..n {
                                push(f.storage, at + HEADER_BYTES as usize + 8 * i);
                            }
                        }
                    }
                    CompositeKind::Func => {}
                }
            }
            for &raw in &refs {
                let r = (raw & !gc_ref::WRAPPED_ANY) as usize;
                if r != 0
                    && r.is_multiple_of(8)
                    && r < len
                    && bit(self.starts(), r)
                    && !bit(&marks, r)
                {
                    set_bit(&mut marks, r);
                    gray.push(r as u32);
                }
            }
        }
        // Sweep: the gaps between marked objects become free runs; a free
        // tail is given back.
        self.runs.clear();
        let mut free_from = HEADER_BYTES as usize;
        for (w, &word) in marks.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                let at = (w * 64 + word.trailing_zeros() as usize) * 8;
                word &= word - 1;
                let size = def_of(&self.local_types, self.read_u32(at))
                    .and_then(|d| Self::size_of(&d, self.read_u32(at + 4)))
                    .unwrap_or(8);
                if at > free_from {
                    self.free_block(free_from, at);
                    self.runs.push((free_from as u32, at as u32));
                }
                free_from = at + size;
                live += size as u64;
            }
        }
        self.bytes.truncate(free_from.max(HEADER_BYTES as usize));
        marks.truncate(bitmap_words(self.bytes.len()));
        self.starts = marks;
        self.image_starts = None;
        (self.next_run, self.bump, self.bump_end) = (0, 0, 0);
        // Relative to what is live, not to the heap's length: a live
        // object near the end keeps the heap long (nothing moves), and the
        // free runs below it are used before the heap grows again.
        self.threshold = (2 * live).max(MIN_THRESHOLD);
        let pause = started.elapsed();
        self.stats.collections += 1;
        self.stats.live_bytes = live;
        self.stats.max_pause = self.stats.max_pause.max(pause);
        self.stats.total_pause += pause;
        true
    }

    /// The heap offset of object reference `r`, or the trap for null (or
    /// a reference that is not an object).
    fn object(&self, r: u64, null: TrapKind) -> GcResult<usize> {
        if r == 0 || r & gc_ref::TAG_MASK != 0 {
            return Err(null);
        }
        let at = usize::try_from(r).map_err(|_| null)?;
        if at
            .checked_add(HEADER_BYTES as usize)
            .is_none_or(|e| e > self.bytes.len())
            || !at.is_multiple_of(8)
            || !bit(self.starts(), at)
        {
            return Err(null);
        }
        Ok(at)
    }

    fn read_u32(&self, at: usize) -> u32 {
        let mut b = [0u8; 4];
        if let Some(s) = self.bytes.get(at..at + 4) {
            b.copy_from_slice(s);
        }
        u32::from_le_bytes(b)
    }

    /// Reads a value of storage type `s` at `at`, bounds-checked.
    fn read(&self, at: usize, s: StorageType, ext: u32) -> GcResult<ValRaw> {
        let n = s.size() as usize;
        let bytes = at
            .checked_add(n)
            .and_then(|e| self.bytes.get(at..e))
            .ok_or(TrapKind::ArrayOutOfBounds)?;
        let mut b = [0u8; 16];
        b[..n].copy_from_slice(bytes);
        let raw = u128::from_le_bytes(b);
        Ok(match (s, ext) {
            (StorageType::I8, op::EXT_S) => raw as u8 as i8 as i32 as u32 as ValRaw,
            (StorageType::I16, op::EXT_S) => raw as u16 as i16 as i32 as u32 as ValRaw,
            // A function reference field holds a heap-local function
            // number (see `funcs`); wasm code gets the pointer. A number
            // with no entry (only a corrupt image could hold one, and
            // images are checked) reads as a trap, never as a pointer.
            (StorageType::Val(faaslet_jit::ValType::FuncRef), _) if raw != 0 => ValRaw::from(
                *self
                    .funcs
                    .get(raw as usize - 1)
                    .ok_or(TrapKind::NullReference)?,
            ),
            _ => raw,
        })
    }

    /// Writes `v` as storage type `s` at `at`, bounds-checked.
    fn write(&mut self, at: usize, s: StorageType, v: ValRaw) -> GcResult<()> {
        let n = s.size() as usize;
        let v = self.stored(s, v);
        let dst = at
            .checked_add(n)
            .and_then(|e| self.bytes.get_mut(at..e))
            .ok_or(TrapKind::ArrayOutOfBounds)?;
        dst.copy_from_slice(&v.to_le_bytes()[..n]);
        Ok(())
    }

    /// What a field of storage type `s` holds for value `v`: `v`, except
    /// that a function reference becomes its heap-local number.
    #[inline(always)]
    fn stored(&mut self, s: StorageType, v: ValRaw) -> ValRaw {
        if s == StorageType::Val(faaslet_jit::ValType::FuncRef) && v != 0 {
            ValRaw::from(self.func_number(v as u64))
        } else {
            v
        }
    }

    /// Whether the object or funcref type `tid` is `target` or a declared
    /// subtype of it; `depth` is `target`'s position in its own display.
    fn is_subtype_id(&self, tid: u32, target: u32, depth: usize) -> bool {
        tid == target
            || self
                .types
                .get(&tid)
                .is_some_and(|d| d.display.get(depth) == Some(&target))
    }

    /// Whether type `a` is `b` or a declared (transitive) subtype of it,
    /// by engine-wide ids of registered types.
    pub(crate) fn is_declared_subtype(&self, a: u32, b: u32) -> bool {
        let depth = self
            .types
            .get(&b)
            .map_or(0, |d| d.display.len().saturating_sub(1));
        self.is_subtype_id(a, b, depth)
    }

    /// The type of the object at `at`.
    fn type_of(&self, at: usize) -> Option<&TypeDef> {
        self.local_types
            .get(self.read_u32(at) as usize)
            .map(|(_, d)| &**d)
    }

    /// The heap-local type number of module type `ty` (engine-wide id
    /// `info.type_ids[ty]`), numbering it if it has none yet.
    #[inline]
    fn local_type(&mut self, info: &ModuleInfo, ty: u32) -> GcResult<u32> {
        let Some(&id) = info.type_ids.get(ty as usize) else {
            return Err(TrapKind::NullStructReference);
        };
        if self.last_local.0 == id {
            return Ok(self.last_local.1);
        }
        self.local_type_slow(info, ty, id)
    }

    /// [`Self::local_type`] past its one-entry cache.
    fn local_type_slow(&mut self, info: &ModuleInfo, ty: u32, id: u32) -> GcResult<u32> {
        let Some(def) = info.type_defs.get(ty as usize) else {
            return Err(TrapKind::NullStructReference);
        };
        if let Some(&n) = self.local_of.get(&id) {
            self.last_local = (id, n - 1);
            return Ok(n - 1);
        }
        let def = self
            .types
            .get(&id)
            .cloned()
            .unwrap_or_else(|| Arc::new(def.clone()));
        let n = self.local_types.len() as u32;
        if n >= FREE_ID - 1 {
            return Err(TrapKind::GcHeapExhausted);
        }
        self.local_types.push((id, def));
        self.local_of.insert(id, n + 1);
        Ok(n)
    }

    /// The heap-local function number a function reference field holds for
    /// `VMFuncRef` pointer `raw` (0 for null), numbering it if needed. The
    /// table holds at most one entry per function reference of the store,
    /// which the store made (no guest-chosen count).
    fn func_number(&mut self, raw: u64) -> u64 {
        if raw == 0 {
            return 0;
        }
        if let Some(&n) = self.func_of.get(&raw) {
            return u64::from(n);
        }
        self.funcs.push(raw);
        let n = self.funcs.len() as u32;
        self.func_of.insert(raw, n);
        u64::from(n)
    }

    /// `ref.test`: whether `v` is of the target `a`/`b` describe (see
    /// `gc_layout::op::REF_TEST`).
    fn ref_test(&self, info: &ModuleInfo, v: u64, a: u32, b: u32) -> bool {
        if v == 0 {
            return b & op::TEST_NULLABLE != 0;
        }
        if b & op::TEST_CONCRETE != 0 {
            let (Some(def), Some(&target)) = (
                info.type_defs.get(a as usize),
                info.type_ids.get(a as usize),
            ) else {
                return false;
            };
            let depth = def.display.len().saturating_sub(1);
            return match def.kind {
                CompositeKind::Func => {
                    // SAFETY: validation types `v` as a function
                    // reference, and every non-null function reference
                    // wasm code holds is a live `VMFuncRef` of its store
                    // (`ref.func`, tables, globals and host values all
                    // come from `StoreCore::funcs`); function references
                    // are never made from integers.
                    let tid = unsafe { (*(v as *const VMFuncRef)).type_id };
                    self.is_subtype_id(tid, target, depth)
                }
                _ => match self.object(v, TrapKind::NullReference) {
                    Ok(at) => self
                        .local_types
                        .get(self.read_u32(at) as usize)
                        .is_some_and(|(id, d)| {
                            *id == target || d.display.get(depth) == Some(&target)
                        }),
                    Err(_) => false,
                },
            };
        }
        let kind_is = |want_struct: bool| match self.object(v, TrapKind::NullReference) {
            Ok(at) => match self.type_of(at).map(|d| &d.kind) {
                Some(CompositeKind::Struct { .. }) => want_struct,
                Some(CompositeKind::Array(_)) => !want_struct,
                _ => false,
            },
            Err(_) => false,
        };
        match b >> 8 {
            heap::EQ => v & gc_ref::TAG_MASK != gc_ref::EXTERN_TAG,
            heap::I31 => v & gc_ref::I31_TAG != 0,
            heap::STRUCT => kind_is(true),
            heap::ARRAY => kind_is(false),
            heap::NONE => false,
            _ => true,
        }
    }

    /// Allocates a struct of module type `ty` with field values `vals`
    /// (`None`: the defaults).
    pub(crate) fn struct_new(
        &mut self,
        info: &ModuleInfo,
        ty: u32,
        vals: Option<&[ValRaw]>,
        budget: u64,
        roots: Option<Roots<'_>>,
    ) -> GcResult<u64> {
        let (fields, offsets, size) = struct_def(info, ty)?;
        let id = self.local_type(info, ty)?;
        let at = self.alloc(u64::from(size), id, 0, budget, roots)?;
        if let Some(vals) = vals {
            for ((f, off), v) in fields.iter().zip(offsets.iter()).zip(vals) {
                self.write(at as usize + *off as usize, f.storage, *v)?;
            }
        }
        Ok(at)
    }

    /// Writes `v` as storage type `s` into `n` consecutive elements from
    /// `at` (bounds-checked once, then copied as a byte pattern: a guest
    /// filling a large array costs a memset-like loop, not a checked write
    /// per element).
    fn fill(&mut self, at: usize, s: StorageType, v: ValRaw, n: usize) -> GcResult<()> {
        let size = s.size() as usize;
        let v = self.stored(s, v);
        let dst = n
            .checked_mul(size)
            .and_then(|len| at.checked_add(len))
            .and_then(|end| self.bytes.get_mut(at..end))
            .ok_or(TrapKind::ArrayOutOfBounds)?;
        let pattern = &v.to_le_bytes()[..size];
        if pattern.iter().all(|b| *b == 0) {
            dst.fill(0);
        } else {
            for chunk in dst.chunks_exact_mut(size) {
                chunk.copy_from_slice(pattern);
            }
        }
        Ok(())
    }

    /// Allocates an array of module type `ty` with `len` elements, each
    /// `init(i)`.
    pub(crate) fn array_new(
        &mut self,
        info: &ModuleInfo,
        ty: u32,
        len: u64,
        budget: u64,
        roots: Option<Roots<'_>>,
        mut init: impl FnMut(u64) -> GcResult<ValRaw>,
    ) -> GcResult<u64> {
        let f = array_def(info, ty)?;
        if len > MAX_ARRAY_LEN {
            return Err(TrapKind::GcHeapExhausted);
        }
        let elem = u64::from(f.storage.size());
        let size = u64::from(HEADER_BYTES) + elem * len;
        let id = self.local_type(info, ty)?;
        let at = self.alloc(size, id, len as u32, budget, roots)?;
        for i in 0..len {
            let v = init(i)?;
            if v != 0 {
                let p = at + u64::from(HEADER_BYTES) + elem * i;
                self.write(p as usize, f.storage, v)?;
            }
        }
        Ok(at)
    }

    /// The offset and length of array `r`'s elements, and the element
    /// size, for an array of module type `ty`.
    fn array(&self, info: &ModuleInfo, ty: u32, r: u64) -> GcResult<(usize, u64, FieldType)> {
        let f = array_def(info, ty)?;
        let at = self.object(r, TrapKind::NullArrayReference)?;
        let len = u64::from(self.read_u32(at + 4));
        Ok((at + HEADER_BYTES as usize, len, f))
    }

    /// The address of elements `i..i + n` of an array, checked.
    fn elems(base: usize, len: u64, f: FieldType, i: u64, n: u64) -> GcResult<usize> {
        if i.checked_add(n).is_none_or(|e| e > len) {
            return Err(TrapKind::ArrayOutOfBounds);
        }
        Ok(base + (i * u64::from(f.storage.size())) as usize)
    }
}

/// Calls `mark` with every 8-byte word of the native stack from this
/// frame up to `top` (exclusive), and with the callee-saved registers;
/// `false` (nothing scanned) if it cannot.
///
/// Why a conservative scan finds every GC reference wasm code holds (the
/// soundness argument; `docs/gc.md` has it at length):
///
/// - A collection runs only inside the `GC` builtin (an allocation), which
///   JIT code calls; every wasm frame of the running call, and every host
///   or engine frame between them, lies on this thread's stack between the
///   builtin's frame and the outermost wasm entry (`StoreCore::call_raw`
///   records `top` there before entering JIT code, on the same stack:
///   faaslet never switches stacks for wasm).
/// - Cranelift keeps a value live across a call either in a callee-saved
///   register or in a spill slot of its frame. Callee-saved registers are
///   either still in the register at this point (read below, in a frame
///   below every frame that can hold one) or were saved by some frame in
///   between, on the stack. Caller-saved registers (including every vector
///   register under System V) hold nothing live across the call.
/// - JIT code never derives anything from a GC reference: it never
///   dereferences one, never adds an offset to one (every field or element
///   access passes the reference itself to the builtin), and keeps it as a
///   whole, naturally aligned i64 in spill slots and in the builtin's
///   operand array. The only transformation is `extern.convert_any`, which
///   sets bit 63; the scan masks it off. So a reference always appears as
///   an exact, aligned word equal to its object's start offset, which the
///   `starts` bitmap recognises exactly; an interior or misaligned value
///   never has to be.
/// - A word that merely looks like an object start (an integer, a pointer
///   below 1 GiB, a dead spill) keeps that object and what it reaches
///   alive until the word changes: false retention, never a freed live
///   object. The collector never moves objects, so a misidentified word is
///   never rewritten.
#[inline(never)]
fn scan_native_stack(top: usize, mark: &mut dyn FnMut(u64)) -> bool {
    let (regs, sp) = registers_and_sp();
    if sp == 0 || top <= sp || top - sp > MAX_SCANNED_STACK {
        // Not a stack this scan understands (or an architecture it cannot
        // read registers on): the caller must not collect.
        return false;
    }
    for r in regs {
        mark(r);
    }
    let mut at = sp & !7;
    while at + 8 <= top {
        // SAFETY: `sp..top` is part of this thread's stack: `sp` is this
        // frame's stack pointer, `top` was taken in a frame of the
        // outermost call into wasm, which is still running (we are called
        // from inside it), and the stack is one contiguous mapping in
        // between. The read is aligned and volatile (the compiler may
        // assume nothing about other frames' words); each word is only
        // compared with object starts, never used as a pointer. Some of
        // these words are also reachable through references live in the
        // frames above (the `GC` builtin's operand slice); they are only
        // read here, and nothing writes them while the scan runs.
        let word = unsafe { std::ptr::read_volatile(at as *const u64) };
        mark(word);
        at += 8;
    }
    true
}

/// The callee-saved general registers and the stack pointer of this
/// point of the program. Inlined into `scan_native_stack` (one frame):
/// any callee-saved register that frame overwrote before reading them was
/// saved in its prologue, at or above the stack pointer read here, so the
/// scan from that stack pointer sees it.
#[inline(always)]
fn registers_and_sp() -> ([u64; 12], usize) {
    let mut r = [0u64; 12];
    #[allow(unused_mut)]
    let mut sp = 0usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: only moves registers into the local array `r` (12 words,
    // written at offsets 0..48, through `rax`, a caller-saved register, so
    // no callee-saved one is used as an operand) and the stack pointer
    // into `sp`; touches no other memory, the stack or the flags.
    unsafe {
        std::arch::asm!(
            "mov [rax], rbx",
            "mov [rax + 8], rbp",
            "mov [rax + 16], r12",
            "mov [rax + 24], r13",
            "mov [rax + 32], r14",
            "mov [rax + 40], r15",
            "mov {sp}, rsp",
            in("rax") r.as_mut_ptr(),
            sp = out(reg) sp,
            options(nostack, preserves_flags),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: only stores registers into the local array `r` (12 words,
    // at offsets 0..88, through `x9`, a caller-saved register) and the
    // stack pointer into `sp`; touches no other memory or the stack.
    unsafe {
        std::arch::asm!(
            "stp x19, x20, [x9]",
            "stp x21, x22, [x9, #16]",
            "stp x23, x24, [x9, #32]",
            "stp x25, x26, [x9, #48]",
            "stp x27, x28, [x9, #64]",
            "str x29, [x9, #80]",
            "mov {sp}, sp",
            in("x9") r.as_mut_ptr(),
            sp = out(reg) sp,
            options(nostack, preserves_flags),
        );
    }
    (r, sp)
}

fn struct_def(info: &ModuleInfo, ty: u32) -> GcResult<(&[FieldType], &[u32], u32)> {
    match info.type_defs.get(ty as usize).map(|d| &d.kind) {
        Some(CompositeKind::Struct {
            fields,
            offsets,
            size,
        }) => Ok((fields, offsets, *size)),
        _ => Err(TrapKind::NullStructReference),
    }
}

fn array_def(info: &ModuleInfo, ty: u32) -> GcResult<FieldType> {
    match info.type_defs.get(ty as usize).map(|d| &d.kind) {
        Some(CompositeKind::Array(f)) => Ok(*f),
        _ => Err(TrapKind::NullArrayReference),
    }
}

/// Whether the store's heap must know `info`'s types: it declares struct
/// or array types, or types with a declared supertype. (A final function
/// type without supertypes is only ever a subtype of itself, which casts
/// and calls tell by comparing ids; a module of only such types, as every
/// module without GC, costs instantiation nothing here.)
pub(crate) fn needs_registration(info: &ModuleInfo) -> bool {
    info.type_defs
        .iter()
        .any(|d| d.display.len() > 1 || !matches!(d.kind, CompositeKind::Func))
}

/// How many operand slots `GC` operation `op` reads (see
/// `gc_layout::op`); at least one slot always exists (results go there).
pub(crate) fn operand_count(info: &ModuleInfo, gc_op: u32, a: u32, b: u32) -> usize {
    match gc_op {
        op::STRUCT_NEW => struct_def(info, a).map_or(0, |(f, _, _)| f.len()),
        op::STRUCT_NEW_DEFAULT => 0,
        op::STRUCT_GET | op::ARRAY_LEN | op::REF_TEST | op::ARRAY_NEW_DEFAULT => 1,
        op::STRUCT_SET
        | op::ARRAY_NEW
        | op::ARRAY_NEW_DATA
        | op::ARRAY_NEW_ELEM
        | op::ARRAY_GET => 2,
        op::ARRAY_NEW_FIXED => b as usize,
        op::ARRAY_SET => 3,
        op::ARRAY_FILL | op::ARRAY_INIT_DATA | op::ARRAY_INIT_ELEM => 4,
        op::ARRAY_COPY => 5,
        _ => 0,
    }
}

/// What a `GC` operation needs of its instance besides the heap.
pub(crate) struct GcEnv<'a> {
    /// The module's description.
    pub info: &'a ModuleInfo,
    /// Its data segments, `None` once dropped.
    pub data: &'a dyn Fn(u32) -> Option<&'a [u8]>,
    /// Its element segments' items (raw references), empty once dropped.
    pub elems: &'a dyn Fn(u32) -> Option<Arc<[u64]>>,
    /// Bytes the store's `memory_bytes` limit still allows.
    pub budget: u64,
    /// The roots besides the native stack, when a collection may run.
    pub roots: Option<Roots<'a>>,
}

impl GcHeap {
    /// Runs `GC` operation `gc_op` on the operand slots `v` (results go to
    /// slot 0). The trap on failure.
    pub(crate) fn run(
        &mut self,
        env: &GcEnv<'_>,
        gc_op: u32,
        a: u32,
        b: u32,
        v: &mut [ValRaw],
    ) -> GcResult<()> {
        let info = env.info;
        let u32v = |x: ValRaw| x as u32 as u64;
        let r64 = |x: ValRaw| x as u64;
        match gc_op {
            op::STRUCT_NEW => {
                v[0] = self.struct_new(info, a, Some(v), env.budget, env.roots)? as ValRaw;
            }
            op::STRUCT_NEW_DEFAULT => {
                v[0] = self.struct_new(info, a, None, env.budget, env.roots)? as ValRaw;
            }
            op::STRUCT_GET | op::STRUCT_SET => {
                let field = b & 0xffff;
                let (fields, offsets, _) = struct_def(info, a)?;
                let (Some(f), Some(off)) =
                    (fields.get(field as usize), offsets.get(field as usize))
                else {
                    return Err(TrapKind::NullStructReference);
                };
                let at = self.object(r64(v[0]), TrapKind::NullStructReference)? + *off as usize;
                if gc_op == op::STRUCT_GET {
                    v[0] = self.read(at, f.storage, b >> 16)?;
                } else {
                    self.write(at, f.storage, v[1])?;
                }
            }
            op::ARRAY_NEW => {
                let (init, len) = (v[0], u32v(v[1]));
                let at = self.array_new(info, a, len, env.budget, env.roots, |_| Ok(0))?;
                let f = array_def(info, a)?;
                self.fill(
                    at as usize + HEADER_BYTES as usize,
                    f.storage,
                    init,
                    len as usize,
                )?;
                v[0] = at as ValRaw;
            }
            op::ARRAY_NEW_DEFAULT => {
                v[0] = self.array_new(info, a, u32v(v[0]), env.budget, env.roots, |_| Ok(0))?
                    as ValRaw;
            }
            op::ARRAY_NEW_FIXED => {
                let vals: Vec<ValRaw> = v[..b as usize].to_vec();
                v[0] = self.array_new(info, a, u64::from(b), env.budget, env.roots, |i| {
                    Ok(vals[i as usize])
                })? as ValRaw;
            }
            op::ARRAY_NEW_DATA => {
                let f = array_def(info, a)?;
                let bytes = (env.data)(b).unwrap_or(&[]);
                let (off, len) = (u32v(v[0]), u32v(v[1]));
                let size = u64::from(f.storage.size());
                let src = Self::segment_range(bytes.len() as u64, off, len, size)
                    .ok_or(TrapKind::MemoryOutOfBounds)?;
                let src = &bytes[src];
                v[0] = self.array_new(info, a, len, env.budget, env.roots, |i| {
                    let mut b = [0u8; 16];
                    let s = (i * size) as usize;
                    b[..size as usize].copy_from_slice(&src[s..s + size as usize]);
                    Ok(u128::from_le_bytes(b))
                })? as ValRaw;
            }
            op::ARRAY_NEW_ELEM => {
                let items = (env.elems)(b).unwrap_or_else(|| Arc::from(vec![]));
                let (off, len) = (u32v(v[0]), u32v(v[1]));
                let src = Self::segment_range(items.len() as u64, off, len, 1)
                    .ok_or(TrapKind::TableOutOfBounds)?;
                let src = &items[src];
                v[0] = self.array_new(info, a, len, env.budget, env.roots, |i| {
                    Ok(ValRaw::from(src[i as usize]))
                })? as ValRaw;
            }
            op::ARRAY_GET | op::ARRAY_SET => {
                let (base, len, f) = self.array(info, a, r64(v[0]))?;
                let at = Self::elems(base, len, f, u32v(v[1]), 1)?;
                if gc_op == op::ARRAY_GET {
                    v[0] = self.read(at, f.storage, b)?;
                } else {
                    self.write(at, f.storage, v[2])?;
                }
            }
            op::ARRAY_LEN => {
                let at = self.object(r64(v[0]), TrapKind::NullArrayReference)?;
                v[0] = ValRaw::from(self.read_u32(at + 4));
            }
            op::ARRAY_FILL => {
                let (base, len, f) = self.array(info, a, r64(v[0]))?;
                let (i, x, n) = (u32v(v[1]), v[2], u32v(v[3]));
                let at = Self::elems(base, len, f, i, n)?;
                self.fill(at, f.storage, x, n as usize)?;
            }
            op::ARRAY_COPY => {
                let (dbase, dlen, df) = self.array(info, a, r64(v[0]))?;
                let (sbase, slen, sf) = self.array(info, b, r64(v[2]))?;
                let n = u32v(v[4]);
                let d = Self::elems(dbase, dlen, df, u32v(v[1]), n)?;
                let s = Self::elems(sbase, slen, sf, u32v(v[3]), n)?;
                // Validation makes the element types match; the sizes are
                // checked anyway, and each range lies in the heap.
                let size = df.storage.size().min(sf.storage.size()) as usize;
                let bytes = n as usize * size;
                if s.checked_add(bytes).is_none_or(|e| e > self.bytes.len())
                    || d.checked_add(bytes).is_none_or(|e| e > self.bytes.len())
                {
                    return Err(TrapKind::ArrayOutOfBounds);
                }
                self.bytes.copy_within(s..s + bytes, d);
            }
            op::ARRAY_INIT_DATA => {
                let (base, len, f) = self.array(info, a, r64(v[0]))?;
                let (d, s, n) = (u32v(v[1]), u32v(v[2]), u32v(v[3]));
                let at = Self::elems(base, len, f, d, n)?;
                let bytes = (env.data)(b).unwrap_or(&[]);
                let size = u64::from(f.storage.size());
                let src = Self::segment_range(bytes.len() as u64, s, n, size)
                    .ok_or(TrapKind::MemoryOutOfBounds)?;
                let total = (n * size) as usize;
                self.bytes
                    .get_mut(at..at + total)
                    .ok_or(TrapKind::ArrayOutOfBounds)?
                    .copy_from_slice(&bytes[src]);
            }
            op::ARRAY_INIT_ELEM => {
                let (base, len, f) = self.array(info, a, r64(v[0]))?;
                let (d, s, n) = (u32v(v[1]), u32v(v[2]), u32v(v[3]));
                let at = Self::elems(base, len, f, d, n)?;
                let items = (env.elems)(b).unwrap_or_else(|| Arc::from(vec![]));
                let src = Self::segment_range(items.len() as u64, s, n, 1)
                    .ok_or(TrapKind::TableOutOfBounds)?;
                let size = f.storage.size() as usize;
                for (k, item) in items[src].iter().enumerate() {
                    self.write(at + k * size, f.storage, ValRaw::from(*item))?;
                }
            }
            op::REF_TEST => {
                v[0] = ValRaw::from(self.ref_test(info, r64(v[0]), a, b));
            }
            _ => return Err(TrapKind::Unreachable),
        }
        Ok(())
    }

    /// The range of `len` items of `size` units each starting at unit
    /// `off` (a byte offset into a data segment, or an item index with
    /// `size` 1) in a segment of `total` units, if in bounds.
    fn segment_range(total: u64, off: u64, len: u64, size: u64) -> Option<std::ops::Range<usize>> {
        let end = off.checked_add(len.checked_mul(size)?)?;
        (end <= total).then_some(off as usize..end as usize)
    }
}

/// What a host sees of a reference of the `any` hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnyKind {
    /// An `i31` with its (sign-extended) value.
    I31(i32),
    /// A struct.
    Struct,
    /// An array.
    Array,
    /// An externalised host reference (`any.convert_extern`), by its raw
    /// `externref` handle.
    Extern(u64),
}

impl GcHeap {
    /// What raw reference `r` (non-null) is.
    pub(crate) fn kind(&self, r: u64) -> Option<AnyKind> {
        if r & gc_ref::I31_TAG != 0 {
            return Some(AnyKind::I31((r as u32 as i32) >> 1));
        }
        if r & gc_ref::TAG_MASK == gc_ref::EXTERN_TAG {
            return Some(AnyKind::Extern(r >> 2));
        }
        let at = self.object(r, TrapKind::NullReference).ok()?;
        match self.type_of(at)?.kind {
            CompositeKind::Struct { .. } => Some(AnyKind::Struct),
            CompositeKind::Array(_) => Some(AnyKind::Array),
            CompositeKind::Func => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Heap images (Proto-Faaslet snapshots). Nothing in the heap's bytes
// depends on the engine, the process or the store: references between
// objects are heap offsets, object headers hold heap-local type numbers
// and function reference fields heap-local function numbers. An image is
// those bytes as they are, in a sealed memfd (`faaslet_sfi::MemoryImage`,
// as a linear memory's image), plus two small tables that name each local
// type by the module's type index and each local function by the
// module's function index, plus the object-start bitmap and free runs. A
// restore maps the bytes copy-on-write and rebuilds the two tables: its
// cost is per type and per function, not per object or per page. Host and
// exception references cannot be named by an image and are refused.
// ---------------------------------------------------------------------------

/// A GC heap captured for an instance of one module (what
/// `InstanceImage` holds): restored copy-on-write by
/// [`GcHeap::restore_image`].
#[derive(Debug)]
pub(crate) struct HeapImage {
    /// The heap's bytes from offset 0 (page-rounded; zero past `len`).
    mem: faaslet_sfi::MemoryImage,
    /// The heap's length.
    len: usize,
    /// Heap-local type number → the module's type index (`u32::MAX`: a
    /// type no object of the image has).
    types: Vec<u32>,
    /// Heap-local function number - 1 → the module's function index
    /// (`u32::MAX`: a function no field of the image holds).
    funcs: Vec<u32>,
    /// The object-start bitmap of the bytes.
    starts: Arc<Vec<u64>>,
    /// The free runs of the bytes, in address order.
    runs: Vec<(u32, u32)>,
    /// Bytes of objects.
    live: u64,
}

/// A heap image as plain values: bytes, type table, function table (see
/// [`HeapImage::to_parts`]).
pub(crate) type HeapParts = (Vec<u8>, Vec<u32>, Vec<u32>);

/// What [`scan_image`] learns of heap bytes.
struct ImageIndex {
    starts: Vec<u64>,
    runs: Vec<(u32, u32)>,
    live: u64,
}

/// Walks heap bytes as an image holds them, checking their structure
/// (objects and free blocks tile the bytes exactly from `HEADER_BYTES`,
/// every header names a type of `kinds` (by heap-local number) that is a
/// struct or array type, every object lies inside the bytes) and every
/// reference field with `check_ref`; returns the object-start bitmap,
/// the free runs and the bytes of objects. Reads the bytes, writes none.
fn scan_image(
    bytes: &[u8],
    kinds: &[Option<&CompositeKind>],
    check_ref: &mut dyn FnMut(faaslet_jit::ValType, u64) -> Result<(), String>,
) -> Result<ImageIndex, String> {
    if !bytes.len().is_multiple_of(8)
        || bytes.len() as u64 > MAX_HEAP_BYTES
        || bytes.len() < HEADER_BYTES as usize
    {
        return Err(format!("a GC heap of {} bytes", bytes.len()));
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let mut index = ImageIndex {
        starts: vec![0; bitmap_words(bytes.len())],
        runs: Vec::new(),
        live: 0,
    };
    let mut at = HEADER_BYTES as usize;
    while at < bytes.len() {
        if bytes.len() - at < HEADER_BYTES as usize {
            return Err("a GC object cut short".into());
        }
        let (id, len) = (word(at), word(at + 4));
        if id == FREE_ID {
            let size = len as usize;
            if size < 8 || !size.is_multiple_of(8) || size > bytes.len() - at {
                return Err("a free GC block of a bad size".into());
            }
            match index.runs.last_mut() {
                Some(r) if r.1 as usize == at => r.1 = (at + size) as u32,
                _ => index.runs.push((at as u32, (at + size) as u32)),
            }
            at += size;
            continue;
        }
        let kind = kinds
            .get(id as usize)
            .copied()
            .flatten()
            .ok_or("a GC object of an unknown type")?;
        let size = match kind {
            CompositeKind::Struct { size, .. } => (*size as usize + 7) & !7,
            CompositeKind::Array(f) => {
                (HEADER_BYTES as usize + len as usize * f.storage.size() as usize + 7) & !7
            }
            CompositeKind::Func => return Err("a GC object of a function type".into()),
        };
        if at.checked_add(size).is_none_or(|e| e > bytes.len()) {
            return Err("a GC object beyond the heap".into());
        }
        let mut check = |s: StorageType, p: usize| -> Result<(), String> {
            if let StorageType::Val(v) = s {
                if v.is_ref() {
                    check_ref(
                        v,
                        u64::from_le_bytes(bytes[p..p + 8].try_into().expect("8 bytes")),
                    )?;
                }
            }
            Ok(())
        };
        match kind {
            CompositeKind::Struct {
                fields, offsets, ..
            } => {
                for (f, o) in fields.iter().zip(offsets.iter()) {
                    check(f.storage, at + *o as usize)?;
                }
            }
            CompositeKind::Array(f) => {
                if matches!(f.storage, StorageType::Val(v) if v.is_ref()) {
                    for i in 0..len as usize {
                        check(f.storage, at + HEADER_BYTES as usize + 8 * i)?;
                    }
                }
            }
            CompositeKind::Func => {}
        }
        set_bit(&mut index.starts, at);
        index.live += size as u64;
        at += size;
    }
    Ok(index)
}

/// Checks a reference of type `v` an image may hold as it is: null, an
/// `i31` or an object offset (any hierarchy). Function references are
/// handled by the caller.
fn portable_ref(v: faaslet_jit::ValType, raw: u64) -> Result<(), String> {
    use faaslet_jit::ValType;
    match v {
        ValType::AnyRef if raw & gc_ref::TAG_MASK == gc_ref::EXTERN_TAG => {
            Err("a GC object holds an externalised host reference".into())
        }
        ValType::ExternRef | ValType::ExnRef if raw != 0 => {
            Err(format!("a GC object holds a non-null {v}"))
        }
        _ => Ok(()),
    }
}

impl HeapImage {
    /// The heap's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The image as plain values: the heap's bytes, the module type index
    /// of each heap-local type number, the function index of each
    /// heap-local function number - 1 (`u32::MAX` where unused).
    pub(crate) fn to_parts(&self) -> Result<HeapParts, String> {
        let mut bytes = self
            .mem
            .read()
            .map_err(|e| format!("reading the GC heap image: {e}"))?;
        bytes.truncate(self.len);
        Ok((bytes, self.types.clone(), self.funcs.clone()))
    }

    /// An image for an instance of `info` from plain values (as
    /// [`Self::to_parts`] gives them), checked before anything is trusted:
    /// every used type index names a struct or array type of the module,
    /// every used function index a function of it, every function
    /// reference field a heap-local function number the table has, and
    /// the bytes' structure (see [`scan_image`]); the start bitmap and
    /// free runs are computed here, once, from the checked bytes.
    pub(crate) fn from_parts(
        info: &ModuleInfo,
        bytes: &[u8],
        types: Vec<u32>,
        funcs: Vec<u32>,
    ) -> Result<HeapImage, String> {
        if types.len() >= FREE_ID as usize || funcs.len() >= u32::MAX as usize {
            return Err("GC heap tables too long".into());
        }
        let mut kinds = Vec::with_capacity(types.len());
        for &t in &types {
            kinds.push(match t {
                u32::MAX => None,
                t => match info.type_defs.get(t as usize).map(|d| &d.kind) {
                    Some(k @ (CompositeKind::Struct { .. } | CompositeKind::Array(_))) => Some(k),
                    _ => return Err(format!("GC heap type index {t} out of range")),
                },
            });
        }
        let num_funcs = info.funcs.len() as u64;
        if funcs
            .iter()
            .any(|&f| f != u32::MAX && u64::from(f) >= num_funcs)
        {
            return Err("a GC heap function index out of range".into());
        }
        let mut check_ref = |v: faaslet_jit::ValType, raw: u64| match v {
            faaslet_jit::ValType::FuncRef if raw == 0 => Ok(()),
            faaslet_jit::ValType::FuncRef => match funcs.get(raw as usize - 1) {
                Some(&f) if f != u32::MAX => Ok(()),
                _ => Err("a GC object's function number is out of range".to_string()),
            },
            _ => portable_ref(v, raw),
        };
        let index = scan_image(bytes, &kinds, &mut check_ref)?;
        let mem =
            faaslet_sfi::MemoryImage::new(bytes).map_err(|e| format!("GC heap image: {e}"))?;
        Ok(HeapImage {
            mem,
            len: bytes.len(),
            types,
            funcs,
            starts: Arc::new(index.starts),
            runs: index.runs,
            live: index.live,
        })
    }
}

impl GcHeap {
    /// The heap as an image for an instance of the module `info`
    /// describes (`None` if it holds no object): its bytes as they are,
    /// each heap-local type named by the module's type index and each
    /// heap-local function by `func_index(pointer)`. Refused if a live
    /// object's type or a function a field holds is not the module's, or a
    /// field holds a reference an image cannot name.
    pub(crate) fn image(
        &self,
        info: &ModuleInfo,
        func_index: &dyn Fn(u64) -> Option<u32>,
    ) -> Result<Option<HeapImage>, String> {
        if self.is_empty() {
            return Ok(None);
        }
        let index_of: HashMap<u32, usize> = info
            .type_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i))
            .collect();
        let types: Vec<u32> = self
            .local_types
            .iter()
            .map(|(id, _)| index_of.get(id).map_or(u32::MAX, |&i| i as u32))
            .collect();
        let kinds: Vec<Option<&CompositeKind>> = self
            .local_types
            .iter()
            .zip(&types)
            .map(|((_, d), &t)| (t != u32::MAX).then_some(&d.kind))
            .collect();
        let funcs: Vec<u32> = self
            .funcs
            .iter()
            .map(|&p| func_index(p).unwrap_or(u32::MAX))
            .collect();
        let mut check_ref = |v: faaslet_jit::ValType, raw: u64| match v {
            faaslet_jit::ValType::FuncRef if raw == 0 => Ok(()),
            faaslet_jit::ValType::FuncRef => match funcs.get(raw as usize - 1) {
                Some(&f) if f != u32::MAX => Ok(()),
                _ => Err("a GC object holds another instance's function".to_string()),
            },
            _ => portable_ref(v, raw),
        };
        let index = scan_image(&self.bytes, &kinds, &mut check_ref).map_err(|e| {
            if e == "a GC object of an unknown type" {
                "a GC object of a type of another module".to_string()
            } else {
                e
            }
        })?;
        let mem = faaslet_sfi::MemoryImage::new(&self.bytes)
            .map_err(|e| format!("GC heap image: {e}"))?;
        Ok(Some(HeapImage {
            mem,
            len: self.bytes.len(),
            types,
            funcs,
            starts: Arc::new(index.starts),
            runs: index.runs,
            live: index.live,
        }))
    }

    /// Makes this heap hold `image` for an instance of `info` whose
    /// function `i` has reference `funcref(i)`: maps the image's bytes
    /// copy-on-write (one `mmap`; no byte is read or written), shares its
    /// start bitmap until the first allocation, and rebuilds the local
    /// type and function tables (one entry per type and per function).
    /// The heap must hold no object yet: offsets are kept as they are.
    pub(crate) fn restore_image(
        &mut self,
        info: &ModuleInfo,
        image: &HeapImage,
        funcref: &dyn Fn(u32) -> u64,
    ) -> Result<(), String> {
        let mut local_types = Vec::with_capacity(image.types.len());
        let mut local_of = HashMap::new();
        for (n, &t) in image.types.iter().enumerate() {
            let (id, def) = match (
                info.type_ids.get(t as usize),
                info.type_defs.get(t as usize),
            ) {
                (Some(&id), Some(def)) => (
                    id,
                    self.types
                        .get(&id)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(def.clone())),
                ),
                // A type no object has (checked when the image was made):
                // an entry no header names, which no allocation reuses.
                _ => (u32::MAX, Arc::new(TypeDef::default())),
            };
            if id != u32::MAX {
                local_of.entry(id).or_insert(n as u32 + 1);
            }
            local_types.push((id, def));
        }
        let funcs: Vec<u64> = image
            .funcs
            .iter()
            .map(|&f| if f == u32::MAX { 0 } else { funcref(f) })
            .collect();
        let func_of = funcs
            .iter()
            .enumerate()
            .filter(|(_, &p)| p != 0)
            .map(|(i, &p)| (p, i as u32 + 1))
            .collect();
        self.bytes = HeapMem::from_image(&image.mem, image.len)
            .map_err(|e| format!("mapping the GC heap image: {e}"))?;
        self.local_types = local_types;
        self.local_of = local_of;
        self.last_local = (u32::MAX, 0);
        self.funcs = funcs;
        self.func_of = func_of;
        self.starts = Vec::new();
        self.image_starts = Some(image.starts.clone());
        self.runs = image.runs.clone();
        (self.next_run, self.bump, self.bump_end) = (0, 0, 0);
        self.stats.live_bytes = image.live;
        self.threshold = (2 * image.live).max(MIN_THRESHOLD);
        Ok(())
    }

    /// Drops every object (a reset to an image).
    pub(crate) fn clear(&mut self) {
        self.bytes = HeapMem::default();
        self.starts = Vec::new();
        self.image_starts = None;
        self.local_types.clear();
        self.local_of.clear();
        self.last_local = (u32::MAX, 0);
        self.funcs.clear();
        self.func_of.clear();
        self.runs.clear();
        (self.next_run, self.bump, self.bump_end) = (0, 0, 0);
        self.threshold = MIN_THRESHOLD;
    }

    /// The address range of the heap's bytes in this process (for tests
    /// that count a restored heap's resident pages).
    pub(crate) fn address_range(&self) -> std::ops::Range<usize> {
        self.bytes.range()
    }

    /// Whether the heap holds no object.
    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.len() <= HEADER_BYTES as usize
    }
}

// ---------------------------------------------------------------------------
// Host roots: what an `AnyRef` (or an `ExternRef` made by
// `extern.convert_any`) the host holds names. The host never holds a heap
// offset: it holds a handle into this table, and the table's entries are
// roots, so an object a handle names is never freed while the handle is
// rooted. A released handle's slot is refused (its generation no longer
// matches), so a stale handle can never reach another object.
// ---------------------------------------------------------------------------

/// The most host roots one store may hold at once.
const MAX_HOST_ROOTS: usize = 1 << 29;

/// A store's table of host-held GC references.
#[derive(Default)]
pub(crate) struct HostRoots {
    /// Each slot's reference and generation (0: free).
    slots: Vec<(u64, u32)>,
    /// Free slots, released at the top level (below every open scope).
    free: Vec<u32>,
    /// The starts of the open scopes (host calls from wasm), innermost
    /// last: slots from there up are released when the scope ends.
    scopes: Vec<usize>,
    /// The generation the next root gets (never 0).
    next_gen: u32,
}

impl HostRoots {
    /// A handle rooting heap object `raw`: slot index + 1 in bits 2..32,
    /// generation in bits 32..63 (so the low two bits are 0, like an
    /// object reference's, and bit 63 is free for `extern.convert_any`).
    pub(crate) fn root(&mut self, raw: u64) -> u64 {
        self.next_gen = (self.next_gen % 0x7fff_ffff) + 1;
        let gen = self.next_gen;
        let reuse = if self.scopes.is_empty() {
            self.free.pop()
        } else {
            None
        };
        let index = match reuse {
            Some(i) => {
                self.slots[i as usize] = (raw, gen);
                i as usize
            }
            None => {
                assert!(
                    self.slots.len() < MAX_HOST_ROOTS,
                    "more than {MAX_HOST_ROOTS} GC references rooted by the host at once"
                );
                self.slots.push((raw, gen));
                self.slots.len() - 1
            }
        };
        (u64::from(gen) << 32) | ((index as u64 + 1) << 2)
    }

    fn slot(handle: u64) -> (usize, u32) {
        (
            ((handle as u32) >> 2) as usize,
            ((handle >> 32) & 0x7fff_ffff) as u32,
        )
    }

    /// The reference `handle` roots, if it is still rooted.
    pub(crate) fn get(&self, handle: u64) -> Option<u64> {
        let (i, gen) = Self::slot(handle);
        match self.slots.get(i.checked_sub(1)?) {
            Some(&(raw, g)) if g == gen && g != 0 => Some(raw),
            _ => None,
        }
    }

    /// Releases `handle`; `false` if it was not rooted.
    pub(crate) fn unroot(&mut self, handle: u64) -> bool {
        if self.get(handle).is_none() {
            return false;
        }
        let i = Self::slot(handle).0 - 1;
        self.slots[i] = (0, 0);
        // Reused only from the top level, so every free slot lies below
        // any scope opened later and a scope's end never has to search the
        // free list. (A slot below an open scope released inside it stays
        // unused: a few bytes, until `release_all`.)
        if self.scopes.is_empty() {
            self.free.push(i as u32);
        }
        true
    }

    /// Opens a scope: roots made until [`Self::exit`] are released then.
    pub(crate) fn enter(&mut self) -> usize {
        self.scopes.push(self.slots.len());
        self.slots.len()
    }

    /// Closes the scope [`Self::enter`] returned `start` for.
    pub(crate) fn exit(&mut self, start: usize) {
        while self.scopes.last().is_some_and(|&s| s >= start) {
            self.scopes.pop();
        }
        // Every free slot is below `start` (see `unroot`).
        self.slots.truncate(start);
    }

    /// Releases every root (the heap they pointed into was replaced by a
    /// snapshot's): every existing handle is refused from now on.
    pub(crate) fn release_all(&mut self) {
        let bound = self.scopes.first().copied().unwrap_or(self.slots.len());
        for s in &mut self.slots {
            *s = (0, 0);
        }
        self.free = (0..bound as u32).rev().collect();
    }

    /// Calls `mark` with every rooted reference.
    pub(crate) fn for_each(&self, mark: &mut dyn FnMut(u64)) {
        for &(raw, gen) in &self.slots {
            if gen != 0 {
                mark(raw);
            }
        }
    }

    /// How many references are rooted now.
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.1 != 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::HostRoots;

    #[test]
    fn host_roots_refuse_released_and_out_of_scope_handles() {
        let mut r = HostRoots::default();
        let a = r.root(8);
        let b = r.root(16);
        assert_eq!((r.get(a), r.get(b)), (Some(8), Some(16)));
        assert_eq!(a & 3, 0, "low bits clear, like an object reference");
        assert!(r.unroot(a));
        assert!(!r.unroot(a));
        assert_eq!(r.get(a), None);
        // The slot is reused with a new generation: the old handle stays
        // refused.
        let c = r.root(24);
        assert_eq!(r.get(c), Some(24));
        assert_eq!(r.get(a), None);
        // A scope releases what was rooted in it, nothing else.
        let start = r.enter();
        let d = r.root(32);
        assert!(
            r.unroot(b),
            "an outer handle can be released inside a scope"
        );
        let e = r.root(40);
        r.exit(start);
        assert_eq!((r.get(d), r.get(e), r.get(b)), (None, None, None));
        assert_eq!(r.get(c), Some(24));
        // A later root at a truncated index has a new generation.
        let f = r.root(48);
        assert_eq!(r.get(f), Some(48));
        assert_eq!((r.get(d), r.get(e)), (None, None));
        let mut seen = Vec::new();
        r.for_each(&mut |raw| seen.push(raw));
        seen.sort();
        assert_eq!(seen, [24, 48]);
        r.release_all();
        assert_eq!((r.get(c), r.get(f), r.len()), (None, None, 0));
    }
}
