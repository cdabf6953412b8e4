//! The GC heap of a store (WebAssembly GC): structs and arrays, addressed
//! by 32-bit offsets, and the `GC` builtin's operations on them.
//!
//! As built (see `docs/gc.md`): one growable byte vector per store, never
//! moved-from by JIT code (JIT code only ever holds offsets and calls the
//! `GC` builtin, see `faaslet_jit::gc_layout`), allocated by bumping its
//! end. Nothing is ever freed while the store lives: the collector is the
//! design's "null collector" (step 1), and the heap is bounded by the
//! store's `memory_bytes` limit (it counts against it) and by
//! [`MAX_HEAP_BYTES`]; an allocation past either traps with
//! [`TrapKind::GcHeapExhausted`]. Every access is bounds-checked against
//! the vector, so a forged or stale reference reads or writes bytes of the
//! same store's heap at worst, never anything else.
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

/// The largest a store's GC heap may grow (offsets are 32-bit, and the
/// top bit is kept clear): 1 GiB, below the store's `memory_bytes` limit
/// if that is lower.
pub const MAX_HEAP_BYTES: u64 = 1 << 30;

/// The most elements one array may have (so its size fits the heap).
const MAX_ARRAY_LEN: u64 = MAX_HEAP_BYTES;

/// A store's GC heap.
#[derive(Default, Clone)]
pub(crate) struct GcHeap {
    /// The objects; bytes `0..HEADER_BYTES` are never an object.
    bytes: Vec<u8>,
    /// Every type of the store's instances by engine-wide id (for casts,
    /// which compare an object's type with a target's).
    types: HashMap<u32, Arc<TypeDef>>,
    /// The trap the last failed operation asked for.
    pub(crate) trap: Option<TrapKind>,
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

    /// Allocates `size` zeroed bytes (header included) for an object of
    /// type `type_id` and array length `len`; `budget` is what the
    /// store's limit still allows.
    fn alloc(&mut self, size: u64, type_id: u32, len: u32, budget: u64) -> GcResult<u64> {
        if self.bytes.is_empty() {
            self.bytes.resize(HEADER_BYTES as usize, 0);
        }
        let at = self.bytes.len() as u64;
        let size = size.checked_add(7).ok_or(TrapKind::GcHeapExhausted)? & !7;
        let end = at.checked_add(size).ok_or(TrapKind::GcHeapExhausted)?;
        if end > MAX_HEAP_BYTES || size > budget {
            return Err(TrapKind::GcHeapExhausted);
        }
        if self.bytes.try_reserve(size as usize).is_err() {
            return Err(TrapKind::GcHeapExhausted);
        }
        self.bytes.resize(end as usize, 0);
        let h = at as usize;
        self.bytes[h..h + 4].copy_from_slice(&type_id.to_le_bytes());
        self.bytes[h + 4..h + 8].copy_from_slice(&len.to_le_bytes());
        Ok(at)
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
    ) -> GcResult<u64> {
        let (fields, offsets, size) = struct_def(info, ty)?;
        let id = info.type_ids[ty as usize];
        let at = self.alloc(u64::from(size), id, 0, budget)?;
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
        mut init: impl FnMut(u64) -> GcResult<ValRaw>,
    ) -> GcResult<u64> {
        let f = array_def(info, ty)?;
        if len > MAX_ARRAY_LEN {
            return Err(TrapKind::GcHeapExhausted);
        }
        let elem = u64::from(f.storage.size());
        let size = u64::from(HEADER_BYTES) + elem * len;
        let id = info.type_ids[ty as usize];
        let at = self.alloc(size, id, len as u32, budget)?;
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
                v[0] = self.struct_new(info, a, Some(v), env.budget)? as ValRaw;
            }
            op::STRUCT_NEW_DEFAULT => {
                v[0] = self.struct_new(info, a, None, env.budget)? as ValRaw;
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
                let at = self.array_new(info, a, len, env.budget, |_| Ok(0))?;
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
                v[0] = self.array_new(info, a, u32v(v[0]), env.budget, |_| Ok(0))? as ValRaw;
            }
            op::ARRAY_NEW_FIXED => {
                let vals: Vec<ValRaw> = v[..b as usize].to_vec();
                v[0] =
                    self.array_new(info, a, u64::from(b), env.budget, |i| Ok(vals[i as usize]))?
                        as ValRaw;
            }
            op::ARRAY_NEW_DATA => {
                let f = array_def(info, a)?;
                let bytes = (env.data)(b).unwrap_or(&[]);
                let (off, len) = (u32v(v[0]), u32v(v[1]));
                let size = u64::from(f.storage.size());
                let src = Self::segment_range(bytes.len() as u64, off, len, size)
                    .ok_or(TrapKind::MemoryOutOfBounds)?;
                let src = &bytes[src];
                v[0] = self.array_new(info, a, len, env.budget, |i| {
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
                v[0] = self.array_new(info, a, len, env.budget, |i| {
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
        Ok(())
    }

    /// Drops every object (a reset to an image).
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
    }

    /// Whether the heap holds no object.
    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.len() <= HEADER_BYTES as usize
    }
}
