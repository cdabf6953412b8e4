//! The GC heap of a store (WebAssembly GC): structs and arrays, addressed
//! by 32-bit offsets, the `GC` builtin's operations on them, and the
//! collector.
//!
//! As built (see `docs/gc.md`): one growable byte vector per store, never
//! dereferenced by JIT code (JIT code only ever holds offsets and calls the
//! `GC` builtin, see `faaslet_jit::gc_layout`). The collector is a
//! **non-moving mark-sweep** collector with **conservative stack roots**:
//!
//! - Allocation bumps a pointer through the free runs the last sweep found
//!   (first fit for large objects), then grows the vector's end. Before
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
//! Every access is bounds-checked against the vector and checked to name
//! an object start, so a forged or stale reference reads or writes bytes
//! of the same store's heap at worst, never anything else.
//!
//! Object layout: an 8-byte header (engine-wide type id, u32; array
//! length, u32), then the fields at the offsets the type's
//! [`CompositeKind::Struct`] gives, or the array's elements packed at their
//! storage size. Objects are 8-byte aligned and offset 0 is never an
//! object, so an offset is a valid GC reference (`types::gc_ref`).
//! Offsets make the heap position-independent: a snapshot copies its
//! bytes, a restore copies them back, no pointer needs fixing.

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
#[derive(Clone)]
pub(crate) struct GcHeap {
    /// The objects and free blocks, tiling the bytes from `HEADER_BYTES`;
    /// bytes `0..HEADER_BYTES` are never an object.
    bytes: Vec<u8>,
    /// One bit per 8-byte granule of `bytes`: set where an allocated
    /// object starts (never for a free block).
    starts: Vec<u64>,
    /// Every type of the store's instances by engine-wide id (for casts,
    /// which compare an object's type with a target's).
    types: HashMap<u32, Arc<TypeDef>>,
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
            bytes: Vec::new(),
            starts: Vec::new(),
            types: HashMap::new(),
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

impl GcHeap {
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
    /// type `type_id` and array length `len`; `budget` is what the
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
            self.bytes.resize(HEADER_BYTES as usize, 0);
            self.starts.resize(bitmap_words(self.bytes.len()), 0);
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
            if self.bytes.try_reserve(size).is_err() {
                return Err(TrapKind::GcHeapExhausted);
            }
            let at = self.bytes.len();
            self.bytes.resize(end as usize, 0);
            self.starts.resize(bitmap_words(self.bytes.len()), 0);
            break at;
        };
        let obj = &mut self.bytes[at..at + size];
        obj.fill(0);
        obj[..4].copy_from_slice(&type_id.to_le_bytes());
        obj[4..8].copy_from_slice(&len.to_le_bytes());
        set_bit(&mut self.starts, at);
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

    /// The size in bytes (a multiple of 8) of the allocated object at
    /// `at`, from its type.
    fn object_size(&self, at: usize) -> Option<usize> {
        Self::size_of(self.type_of(at)?, self.read_u32(at + 4))
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
        let mut marks = vec![0u64; self.starts.len()];
        let mut gray: Vec<u32> = Vec::new();
        {
            let starts = &self.starts;
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
        // The last type looked up (objects of one type tend to come
        // together; this saves most of the map lookups).
        let mut last: Option<(u32, Arc<TypeDef>)> = None;
        let mut def_of = |types: &HashMap<u32, Arc<TypeDef>>, id: u32| match &last {
            Some((l, d)) if *l == id => Some(d.clone()),
            _ => {
                let d = types.get(&id)?.clone();
                last = Some((id, d.clone()));
                Some(d)
            }
        };
        while let Some(at) = gray.pop() {
            let at = at as usize;
            refs.clear();
            if let Some(def) = def_of(&self.types, self.read_u32(at)) {
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
                    && bit(&self.starts, r)
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
                let size = def_of(&self.types, self.read_u32(at))
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
        if self.bytes.capacity() > 2 * self.bytes.len() + MIN_THRESHOLD as usize {
            self.bytes
                .shrink_to(self.bytes.len() + self.bytes.len() / 2);
        }
        marks.truncate(bitmap_words(self.bytes.len()));
        self.starts = marks;
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

    /// Rebuilds the object-start bitmap and the free runs from the bytes
    /// (after they were replaced by an image).
    fn rebuild(&mut self) {
        self.starts = vec![0; bitmap_words(self.bytes.len())];
        self.runs.clear();
        (self.next_run, self.bump, self.bump_end) = (0, 0, 0);
        let mut at = HEADER_BYTES as usize;
        let mut live = 0u64;
        while at + HEADER_BYTES as usize <= self.bytes.len() {
            let size = if self.read_u32(at) == FREE_ID {
                let size = self.read_u32(at + 4) as usize;
                match self.runs.last_mut() {
                    Some(r) if r.1 as usize == at => r.1 = (at + size) as u32,
                    _ => self.runs.push((at as u32, (at + size) as u32)),
                }
                size
            } else {
                set_bit(&mut self.starts, at);
                let size = self.object_size(at).unwrap_or(8);
                live += size as u64;
                size
            };
            at += size.max(8);
        }
        for i in 0..self.runs.len() {
            let (s, e) = self.runs[i];
            self.free_block(s as usize, e as usize);
        }
        self.stats.live_bytes = live;
        self.threshold = (2 * live).max(MIN_THRESHOLD);
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
            || !bit(&self.starts, at)
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
            _ => raw,
        })
    }

    /// Writes `v` as storage type `s` at `at`, bounds-checked.
    fn write(&mut self, at: usize, s: StorageType, v: ValRaw) -> GcResult<()> {
        let n = s.size() as usize;
        let dst = at
            .checked_add(n)
            .and_then(|e| self.bytes.get_mut(at..e))
            .ok_or(TrapKind::ArrayOutOfBounds)?;
        dst.copy_from_slice(&v.to_le_bytes()[..n]);
        Ok(())
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
        self.types.get(&self.read_u32(at)).map(|d| &**d)
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
                    Ok(at) => self.is_subtype_id(self.read_u32(at), target, depth),
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
        let id = info.type_ids[ty as usize];
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
        let id = info.type_ids[ty as usize];
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
// Heap images (Proto-Faaslet snapshots). Object references inside the heap
// are offsets, so the bytes need no relocation; what is not position- or
// process-independent is rewritten: each object's header holds the
// engine-wide type id, which becomes the module's type index in an image
// (registered ids differ between engines and processes), and function
// references held in fields become function index + 1 (0 null), as in
// globals and tables. Host and exception references cannot be named by an
// image and are refused.
// ---------------------------------------------------------------------------

/// Rewrites every object of heap image `bytes` in place: its header's type
/// word through `map_type` (which also says the object's layout), and
/// every reference field or element through `map_ref`. Checks the image's
/// structure as it goes (objects tile the bytes exactly).
fn rewrite(
    bytes: &mut [u8],
    map_type: &dyn Fn(u32) -> Option<(CompositeKind, u32)>,
    map_ref: &mut dyn FnMut(faaslet_jit::ValType, u64) -> Result<u64, String>,
) -> Result<(), String> {
    if bytes.is_empty() {
        return Ok(());
    }
    if !bytes.len().is_multiple_of(8) || bytes.len() as u64 > MAX_HEAP_BYTES {
        return Err(format!("a GC heap of {} bytes", bytes.len()));
    }
    let word = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut at = HEADER_BYTES as usize;
    while at < bytes.len() {
        if bytes.len() - at < HEADER_BYTES as usize {
            return Err("a GC object cut short".into());
        }
        let (id, len) = (word(bytes, at), word(bytes, at + 4));
        if id == FREE_ID {
            // A free block: kept as it is (its size in the second word).
            let size = len as usize;
            if size < 8 || !size.is_multiple_of(8) || size > bytes.len() - at {
                return Err("a free GC block of a bad size".into());
            }
            at += size;
            continue;
        }
        let (kind, new_id) = map_type(id).ok_or("a GC object of an unknown type")?;
        bytes[at..at + 4].copy_from_slice(&new_id.to_le_bytes());
        let mut slots: Vec<(StorageType, usize)> = Vec::new();
        let size = match &kind {
            CompositeKind::Struct {
                fields,
                offsets,
                size,
            } => {
                slots.extend(
                    fields
                        .iter()
                        .zip(offsets.iter())
                        .map(|(f, o)| (f.storage, at + *o as usize)),
                );
                *size as usize
            }
            CompositeKind::Array(f) => {
                let elem = f.storage.size() as usize;
                if matches!(f.storage, StorageType::Val(v) if v.is_ref()) {
                    slots.extend((0..len as usize).map(|i| (f.storage, at + 8 + i * elem)));
                }
                (8 + len as usize * elem + 7) & !7
            }
            CompositeKind::Func => return Err("a GC object of a function type".into()),
        };
        if at.checked_add(size).is_none_or(|e| e > bytes.len()) {
            return Err("a GC object beyond the heap".into());
        }
        for (s, p) in slots {
            if let StorageType::Val(v) = s {
                if v.is_ref() {
                    let raw = u64::from_le_bytes(bytes[p..p + 8].try_into().expect("8 bytes"));
                    let new = map_ref(v, raw)?;
                    bytes[p..p + 8].copy_from_slice(&new.to_le_bytes());
                }
            }
        }
        at += size;
    }
    Ok(())
}

/// Checks a reference of type `v` an image may hold as it is: null, an
/// `i31` or an object offset (any hierarchy). Function references are
/// handled by the caller.
fn portable_ref(v: faaslet_jit::ValType, raw: u64) -> Result<u64, String> {
    use faaslet_jit::ValType;
    match v {
        ValType::AnyRef if raw & gc_ref::TAG_MASK == gc_ref::EXTERN_TAG => {
            Err("a GC object holds an externalised host reference".into())
        }
        ValType::ExternRef | ValType::ExnRef if raw != 0 => {
            Err(format!("a GC object holds a non-null {v}"))
        }
        _ => Ok(raw),
    }
}

impl GcHeap {
    /// The heap as a position- and process-independent image for an
    /// instance of the module `info` describes: headers hold the module's
    /// type indices, function references `func_index(raw)` + 1.
    pub(crate) fn image(
        &self,
        info: &ModuleInfo,
        func_index: &dyn Fn(u64) -> Option<u32>,
    ) -> Result<Vec<u8>, String> {
        let mut bytes = self.bytes.clone();
        let index_of: HashMap<u32, usize> = info
            .type_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i))
            .collect();
        let map_type = |id: u32| {
            let index = *index_of.get(&id)?;
            Some((info.type_defs.get(index)?.kind.clone(), index as u32))
        };
        let mut map_ref = |v: faaslet_jit::ValType, raw: u64| match v {
            faaslet_jit::ValType::FuncRef if raw != 0 => func_index(raw)
                .map(|i| u64::from(i) + 1)
                .ok_or_else(|| "a GC object holds another instance's function".to_string()),
            _ => portable_ref(v, raw),
        };
        rewrite(&mut bytes, &map_type, &mut map_ref)?;
        Ok(bytes)
    }

    /// Checks that `image` is a heap image [`Self::image`] could have made
    /// for the module `info` describes (types and function indices in
    /// range, objects tiling the bytes).
    pub(crate) fn check_image(info: &ModuleInfo, image: &[u8]) -> Result<(), String> {
        let mut bytes = image.to_vec();
        let map_type = |index: u32| Some((info.type_defs.get(index as usize)?.kind.clone(), index));
        let funcs = info.funcs.len() as u64;
        let mut map_ref = |v: faaslet_jit::ValType, raw: u64| match v {
            faaslet_jit::ValType::FuncRef if raw > funcs => {
                Err("a GC object's function index is out of range".to_string())
            }
            faaslet_jit::ValType::FuncRef => Ok(raw),
            _ => portable_ref(v, raw),
        };
        rewrite(&mut bytes, &map_type, &mut map_ref)
    }

    /// Makes this heap hold `image` (checked by [`Self::check_image`]) for
    /// an instance of `info` whose function `i` has reference
    /// `funcref(i)`. The heap must hold no object yet: offsets are kept as
    /// they are, so the image is placed at the start of the heap.
    pub(crate) fn restore_image(
        &mut self,
        info: &ModuleInfo,
        image: &[u8],
        funcref: &dyn Fn(u32) -> u64,
    ) -> Result<(), String> {
        let mut bytes = image.to_vec();
        let map_type = |index: u32| {
            Some((
                info.type_defs.get(index as usize)?.kind.clone(),
                *info.type_ids.get(index as usize)?,
            ))
        };
        let mut map_ref = |v: faaslet_jit::ValType, raw: u64| match v {
            faaslet_jit::ValType::FuncRef if raw != 0 => Ok(funcref(raw as u32 - 1)),
            _ => portable_ref(v, raw),
        };
        rewrite(&mut bytes, &map_type, &mut map_ref)?;
        self.bytes = bytes;
        self.rebuild();
        Ok(())
    }

    /// Drops every object (a reset to an image).
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.starts.clear();
        self.runs.clear();
        (self.next_run, self.bump, self.bump_end) = (0, 0, 0);
        self.threshold = MIN_THRESHOLD;
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
