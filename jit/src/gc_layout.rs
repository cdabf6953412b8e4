//! The contract between JIT code and the runtime's GC heap (WebAssembly
//! GC): object layout, and the operations of the [`GC`](crate::abi::builtins::GC)
//! builtin.
//!
//! Every GC operation that touches the heap is a call of one builtin,
//! `GC(vmctx, op, a, b, values) -> status`: `op` is one of [`op`], `a` and
//! `b` its immediates (module type indices, field, segment), `values` a
//! stack array of [`ValRaw`](crate::abi::ValRaw) slots holding the
//! operands in order; the result, if any, is written back to slot 0. A
//! non-zero status means the code must trap with
//! [`TRAP_GC`](crate::abi::TRAP_GC): the runtime has recorded which trap
//! it is. JIT code never dereferences a GC reference itself, so a forged
//! or stale reference can at worst name bytes of the store's own heap,
//! which the runtime bounds-checks on every access.

/// Bytes of an object's header: the engine-wide type id (u32) and, for an
/// array, its length (u32).
pub const HEADER_BYTES: u32 = 8;

/// The largest struct object (header included); bigger struct types are
/// refused at compile time. Validation bounds a struct to 10,000 fields,
/// at most 16 bytes each.
pub const MAX_OBJECT_BYTES: u32 = 1 << 20;

/// The operations of the `GC` builtin. Operands are listed in stack order
/// (slot 0 first); `->` names what slot 0 holds afterwards.
pub mod op {
    /// `struct.new a`: the fields -> the reference.
    pub const STRUCT_NEW: u32 = 0;
    /// `struct.new_default a`: -> the reference.
    pub const STRUCT_NEW_DEFAULT: u32 = 1;
    /// `struct.get a (b & 0xffff)`, `b >> 16` the extension (see
    /// [`EXT_S`], [`EXT_U`]): ref -> value.
    pub const STRUCT_GET: u32 = 2;
    /// `struct.set a b`: ref, value.
    pub const STRUCT_SET: u32 = 3;
    /// `array.new a`: init, len -> ref.
    pub const ARRAY_NEW: u32 = 4;
    /// `array.new_default a`: len -> ref.
    pub const ARRAY_NEW_DEFAULT: u32 = 5;
    /// `array.new_fixed a b`: b elements -> ref.
    pub const ARRAY_NEW_FIXED: u32 = 6;
    /// `array.new_data a b`: offset, len -> ref.
    pub const ARRAY_NEW_DATA: u32 = 7;
    /// `array.new_elem a b`: offset, len -> ref.
    pub const ARRAY_NEW_ELEM: u32 = 8;
    /// `array.get a`, extension `b`: ref, index -> value.
    pub const ARRAY_GET: u32 = 9;
    /// `array.set a`: ref, index, value.
    pub const ARRAY_SET: u32 = 10;
    /// `array.len`: ref -> len (i32).
    pub const ARRAY_LEN: u32 = 11;
    /// `array.fill a`: ref, offset, value, len.
    pub const ARRAY_FILL: u32 = 12;
    /// `array.copy a b`: dst ref, dst offset, src ref, src offset, len.
    pub const ARRAY_COPY: u32 = 13;
    /// `array.init_data a b`: ref, dst offset, src offset, len.
    pub const ARRAY_INIT_DATA: u32 = 14;
    /// `array.init_elem a b`: ref, dst offset, src offset, len.
    pub const ARRAY_INIT_ELEM: u32 = 15;
    /// `ref.test`: ref -> 1 or 0 (i32). `a` is the module type index of a
    /// concrete target, `b` the [`TEST_NULLABLE`] and [`TEST_CONCRETE`]
    /// flags plus, for an abstract target, its [`heap`](super::heap) code `<< 8`.
    pub const REF_TEST: u32 = 16;
    /// Extension of a packed field or element: sign-extend.
    pub const EXT_S: u32 = 1;
    /// Extension of a packed field or element: zero-extend.
    pub const EXT_U: u32 = 2;
    /// `ref.test` flag: null passes.
    pub const TEST_NULLABLE: u32 = 1;
    /// `ref.test` flag: the target is the concrete type `a`.
    pub const TEST_CONCRETE: u32 = 2;
}

/// Abstract heap type codes of `ref.test` targets.
pub mod heap {
    /// `any`.
    pub const ANY: u32 = 1;
    /// `eq`.
    pub const EQ: u32 = 2;
    /// `i31`.
    pub const I31: u32 = 3;
    /// `struct`.
    pub const STRUCT: u32 = 4;
    /// `array`.
    pub const ARRAY: u32 = 5;
    /// `none`, `nofunc`, `noextern`, `noexn`: only null.
    pub const NONE: u32 = 6;
    /// `func`.
    pub const FUNC: u32 = 7;
    /// `extern`.
    pub const EXTERN: u32 = 8;
    /// `exn`.
    pub const EXN: u32 = 9;
}
