//! Handles: what the API hands out for the objects a [`Store`] owns.
//!
//! Each handle is a store id and an index into one of the store's tables,
//! `Copy` and cheap; using one with another store is an error, never a
//! memory-safety problem. The handles are declared here, at the bottom of
//! the crate, and their behaviour lives with what they reach: memories,
//! tables and globals in `externals`, functions in `func`, instances in
//! `instance`, host references in `values`.
//!
//! [`Store`]: crate::Store

/// Identifies a store, so handles from one store are refused by another.
pub(crate) type StoreId = u64;

/// A function in a store: exported by an instance or defined by the host.
/// A cheap handle (`Copy`); using it with another store is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Func {
    pub(crate) store: StoreId,
    pub(crate) index: u32,
}

/// A linear memory, living in a guarded reservation (see [`crate::Bounds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Memory {
    pub(crate) store: StoreId,
    pub(crate) index: u32,
}

/// A table of references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Table {
    pub(crate) store: StoreId,
    pub(crate) index: u32,
}

/// A global variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Global {
    pub(crate) store: StoreId,
    pub(crate) index: u32,
}

/// An instantiated module. A cheap handle into its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Instance {
    pub(crate) store: StoreId,
    pub(crate) index: u32,
}

/// A reference to host data, passed to wasm as an `externref`.
///
/// The data lives as long as the store that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExternRef {
    pub(crate) store: StoreId,
    /// Non-zero handle: index into the store's extern table plus one.
    pub(crate) raw: u64,
}

/// An exception tag (exception handling): its identity is what `catch`
/// compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag {
    pub(crate) store: StoreId,
    pub(crate) index: u32,
}

/// A reference to an exception thrown in a store (an `exnref`), as the
/// host sees it. The host can pass it back to wasm code of the same store
/// (it is checked to be one of the store's exceptions), not make one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExnRef {
    pub(crate) store: StoreId,
    /// The `*const VMException`, non-zero.
    pub(crate) raw: u64,
}

/// A non-null reference of WebAssembly GC's `any` hierarchy (a struct, an
/// array, an `i31`, or an externalised host reference), as the host sees
/// it. [`AnyRef::kind`] says what it is.
///
/// A struct or array is held through a **root**: a slot of the store's
/// host root table, which the collector treats as a root, so the object
/// lives at least as long as the handle is rooted. Handles the host
/// receives are rooted until [`AnyRef::unroot`], or until the host call
/// or [`Store::with_root_scope`](crate::Store::with_root_scope) they were
/// made in ends; a handle used after that is refused as stale (it never
/// reaches another object). Equality compares handles; use
/// [`AnyRef::ref_eq`] for wasm's `ref.eq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AnyRef {
    pub(crate) store: StoreId,
    /// Non-zero: an `i31` or an externalised host reference as encoded
    /// (`faaslet_jit::gc_ref`), or a root handle (`gc::HostRoots::root`).
    pub(crate) raw: u64,
}

/// Anything an instance can import or export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extern {
    /// A function.
    Func(Func),
    /// A table.
    Table(Table),
    /// A linear memory.
    Memory(Memory),
    /// A global.
    Global(Global),
    /// An exception tag.
    Tag(Tag),
}

impl Extern {
    /// The function, if this is one.
    pub fn into_func(self) -> Option<Func> {
        if let Extern::Func(f) = self {
            Some(f)
        } else {
            None
        }
    }
    /// The memory, if this is one.
    pub fn into_memory(self) -> Option<Memory> {
        if let Extern::Memory(m) = self {
            Some(m)
        } else {
            None
        }
    }
    /// The table, if this is one.
    pub fn into_table(self) -> Option<Table> {
        if let Extern::Table(t) = self {
            Some(t)
        } else {
            None
        }
    }
    /// The global, if this is one.
    pub fn into_global(self) -> Option<Global> {
        if let Extern::Global(g) = self {
            Some(g)
        } else {
            None
        }
    }
}
