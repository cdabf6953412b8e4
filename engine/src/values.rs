//! Values that cross between the host and wasm.

use crate::gc::AnyKind;
use crate::handles::{AnyRef, ExnRef, ExternRef, Func};
use crate::store::{Store, StoreCore};
use faaslet_jit::abi::ValRaw;
use faaslet_jit::ValType;
use std::any::Any;

/// A WebAssembly value.
#[derive(Debug, Clone)]
pub enum Val {
    /// `i32`.
    I32(i32),
    /// `i64`.
    I64(i64),
    /// `f32`, as its bits (so NaN payloads survive).
    F32(u32),
    /// `f64`, as its bits.
    F64(u64),
    /// `v128`.
    V128(u128),
    /// A nullable function reference.
    FuncRef(Option<Func>),
    /// A nullable host reference.
    ExternRef(Option<ExternRef>),
    /// A nullable exception reference.
    ExnRef(Option<ExnRef>),
    /// A nullable reference of the GC `any` hierarchy.
    AnyRef(Option<AnyRef>),
}

impl Val {
    /// The value's type.
    pub fn ty(&self) -> ValType {
        match self {
            Val::I32(_) => ValType::I32,
            Val::I64(_) => ValType::I64,
            Val::F32(_) => ValType::F32,
            Val::F64(_) => ValType::F64,
            Val::V128(_) => ValType::V128,
            Val::FuncRef(_) => ValType::FuncRef,
            Val::ExternRef(_) => ValType::ExternRef,
            Val::ExnRef(_) => ValType::ExnRef,
            Val::AnyRef(_) => ValType::AnyRef,
        }
    }

    /// The zero value (or null reference) of `ty`.
    pub fn default_for(ty: ValType) -> Val {
        match ty {
            ValType::I32 => Val::I32(0),
            ValType::I64 => Val::I64(0),
            ValType::F32 => Val::F32(0),
            ValType::F64 => Val::F64(0),
            ValType::V128 => Val::V128(0),
            ValType::FuncRef => Val::FuncRef(None),
            ValType::ExternRef => Val::ExternRef(None),
            ValType::ExnRef => Val::ExnRef(None),
            ValType::AnyRef => Val::AnyRef(None),
        }
    }

    /// The `i32`, if this is one.
    pub fn i32(&self) -> Option<i32> {
        if let Val::I32(v) = self {
            Some(*v)
        } else {
            None
        }
    }
    /// The `i64`, if this is one.
    pub fn i64(&self) -> Option<i64> {
        if let Val::I64(v) = self {
            Some(*v)
        } else {
            None
        }
    }
    /// The `f32`, if this is one.
    pub fn f32(&self) -> Option<f32> {
        if let Val::F32(v) = self {
            Some(f32::from_bits(*v))
        } else {
            None
        }
    }
    /// The `f64`, if this is one.
    pub fn f64(&self) -> Option<f64> {
        if let Val::F64(v) = self {
            Some(f64::from_bits(*v))
        } else {
            None
        }
    }
}

impl From<i32> for Val {
    fn from(v: i32) -> Val {
        Val::I32(v)
    }
}
impl From<i64> for Val {
    fn from(v: i64) -> Val {
        Val::I64(v)
    }
}
impl From<f32> for Val {
    fn from(v: f32) -> Val {
        Val::F32(v.to_bits())
    }
}
impl From<f64> for Val {
    fn from(v: f64) -> Val {
        Val::F64(v.to_bits())
    }
}

impl ExternRef {
    /// Wraps `data` in a new reference owned by `store`.
    pub fn new<T, D: Any + Send + Sync>(store: &mut Store<T>, data: D) -> ExternRef {
        store.core_mut().new_externref(Box::new(data))
    }

    /// The data this reference wraps.
    ///
    /// # Panics
    ///
    /// If the reference belongs to another store.
    pub fn data<'a, T>(&self, store: &'a Store<T>) -> &'a (dyn Any + Send + Sync) {
        let core = store.core();
        assert_eq!(
            self.store, core.id,
            "ExternRef used with a store that did not create it"
        );
        // An `externref` made by `extern.convert_any` wraps a GC
        // reference and holds no host data.
        match core.externs.get((self.raw as usize).wrapping_sub(1)) {
            Some(d) => &**d,
            None => &(),
        }
    }

    /// The GC reference this `externref` wraps, if `extern.convert_any`
    /// made it.
    pub fn as_any<T>(&self, store: &Store<T>) -> Option<AnyRef> {
        let core = store.core();
        (self.store == core.id && self.raw & faaslet_jit::gc_ref::WRAPPED_ANY != 0).then_some(
            AnyRef {
                store: core.id,
                raw: self.raw & !faaslet_jit::gc_ref::WRAPPED_ANY,
            },
        )
    }
}

impl AnyRef {
    /// The encoded reference this handle stands for, if it is still
    /// rooted in `core`.
    pub(crate) fn resolve(&self, core: &StoreCore) -> Result<u64, crate::trap::Error> {
        core.check(self.store)?;
        resolve_any(core, self.raw)
    }

    /// What the reference is: an `i31` (with its value), a struct, an
    /// array, or an externalised host reference. `None` for a reference of
    /// another store, or one unrooted (see [`AnyRef::unroot`]).
    pub fn kind<T>(&self, store: &Store<T>) -> Option<AnyKind> {
        let core = store.core();
        let raw = self.resolve(core).ok()?;
        core.gc.borrow().kind(raw)
    }

    /// Whether `self` and `other` name the same object (wasm's `ref.eq`;
    /// two handles to one object are different handles). `false` if
    /// either is stale or of another store.
    pub fn ref_eq<T>(&self, store: &Store<T>, other: &AnyRef) -> bool {
        let core = store.core();
        matches!((self.resolve(core), other.resolve(core)), (Ok(a), Ok(b)) if a == b)
    }

    /// Releases the host's root: the object may be collected once nothing
    /// else reaches it, and this handle (and its copies) is refused from
    /// now on. Returns `false` if it was not rooted (an `i31` or
    /// externalised host reference needs no root; a released or foreign
    /// handle). Results of calls, and global and table reads, stay rooted
    /// until released (or until the [`Store::with_root_scope`] or host
    /// call they were made in ends).
    pub fn unroot<T>(self, store: &mut Store<T>) -> bool {
        let core = store.core_mut();
        self.store == core.id
            && self.raw & faaslet_jit::gc_ref::TAG_MASK == 0
            && core.any_roots.unroot(self.raw)
    }

    /// The host reference an `any.convert_extern` made this from, if so.
    pub fn as_extern<T>(&self, store: &Store<T>) -> Option<ExternRef> {
        match self.kind(store)? {
            AnyKind::Extern(raw) => Some(ExternRef {
                store: self.store,
                raw,
            }),
            _ => None,
        }
    }

    /// `host` internalised (`any.convert_extern`): a reference of the
    /// `any` hierarchy wrapping a host reference (or unwrapping one that
    /// `extern.convert_any` made, which shares its root).
    pub fn from_extern<T>(store: &Store<T>, host: &ExternRef) -> AnyRef {
        use faaslet_jit::gc_ref;
        let raw = if host.raw & gc_ref::WRAPPED_ANY != 0 {
            host.raw & !gc_ref::WRAPPED_ANY
        } else {
            (host.raw << 2) | gc_ref::EXTERN_TAG
        };
        let _ = store;
        AnyRef {
            store: host.store,
            raw,
        }
    }

    /// A new `i31` reference holding the low 31 bits of `value`.
    pub fn i31<T>(store: &Store<T>, value: i32) -> AnyRef {
        AnyRef {
            store: store.core().id,
            raw: u64::from(((value as u32) << 1) | faaslet_jit::gc_ref::I31_TAG as u32),
        }
    }
}

/// The encoded reference behind `raw`, an `AnyRef`'s field: an `i31` or
/// externalised host reference as it is, a heap object through its root.
fn resolve_any(core: &StoreCore, raw: u64) -> Result<u64, crate::trap::Error> {
    if raw & faaslet_jit::gc_ref::TAG_MASK != 0 {
        return Ok(raw);
    }
    core.any_roots.get(raw).ok_or_else(|| {
        crate::trap::Error::Type("AnyRef used after it was unrooted (a stale GC handle)".into())
    })
}

/// The `AnyRef` field for encoded reference `raw` (non-zero): heap
/// objects are rooted.
fn handle_any(core: &mut StoreCore, raw: u64) -> u64 {
    if raw & faaslet_jit::gc_ref::TAG_MASK != 0 {
        raw
    } else {
        core.any_roots.root(raw)
    }
}

/// Converts a value to its raw form, checking it belongs to `core`.
pub(crate) fn to_raw(core: &StoreCore, v: &Val) -> Result<ValRaw, crate::trap::Error> {
    Ok(match v {
        Val::I32(x) => *x as u32 as ValRaw,
        Val::I64(x) => *x as u64 as ValRaw,
        Val::F32(x) => *x as ValRaw,
        Val::F64(x) => *x as ValRaw,
        Val::V128(x) => *x,
        Val::FuncRef(None) | Val::ExternRef(None) | Val::ExnRef(None) | Val::AnyRef(None) => 0,
        Val::AnyRef(Some(r)) => r.resolve(core)? as ValRaw,
        Val::ExnRef(Some(r)) => {
            core.check(r.store)?;
            // Only an exception of this store's, never a made-up pointer:
            // wasm code dereferences it.
            if !core.exceptions.borrow().contains(r.raw) {
                return Err(crate::trap::Error::Type(
                    "exnref is not an exception of this store".into(),
                ));
            }
            r.raw as ValRaw
        }
        Val::FuncRef(Some(f)) => {
            core.check(f.store)?;
            core.funcs[f.index as usize].funcref as usize as ValRaw
        }
        Val::ExternRef(Some(r)) => {
            core.check(r.store)?;
            let wrapped = faaslet_jit::gc_ref::WRAPPED_ANY;
            if r.raw & wrapped != 0 {
                (resolve_any(core, r.raw & !wrapped)? | wrapped) as ValRaw
            } else {
                r.raw as ValRaw
            }
        }
    })
}

/// Converts a raw value of type `ty` back to a [`Val`].
pub(crate) fn from_raw(core: &mut StoreCore, ty: ValType, raw: ValRaw) -> Val {
    match ty {
        ValType::I32 => Val::I32(raw as u32 as i32),
        ValType::I64 => Val::I64(raw as u64 as i64),
        ValType::F32 => Val::F32(raw as u32),
        ValType::F64 => Val::F64(raw as u64),
        ValType::V128 => Val::V128(raw),
        ValType::FuncRef => Val::FuncRef(core.func_from_raw(raw as u64)),
        ValType::ExternRef => Val::ExternRef(match raw as u64 {
            0 => None,
            r if r & faaslet_jit::gc_ref::WRAPPED_ANY != 0 => Some(ExternRef {
                store: core.id,
                raw: handle_any(core, r & !faaslet_jit::gc_ref::WRAPPED_ANY)
                    | faaslet_jit::gc_ref::WRAPPED_ANY,
            }),
            r => Some(ExternRef {
                store: core.id,
                raw: r,
            }),
        }),
        ValType::AnyRef => Val::AnyRef(match raw as u64 {
            0 => None,
            r => Some(AnyRef {
                store: core.id,
                raw: handle_any(core, r),
            }),
        }),
        ValType::ExnRef => Val::ExnRef(match raw as u64 {
            0 => None,
            r => Some(ExnRef {
                store: core.id,
                raw: r,
            }),
        }),
    }
}
