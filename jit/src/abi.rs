//! The contract between generated code and the runtime: the layout of the VM
//! context, the runtime structures it points at, the builtin functions the
//! code calls, and the trap codes it raises.
//!
//! Everything here is `#[repr(C)]` and read by JIT code at fixed offsets, so a
//! change to any struct in this file is a change of ABI: the translator and
//! the engine must move together.
//!
//! # Calling conventions
//!
//! * **Wasm functions** use Cranelift's `Tail` calling convention with the
//!   signature `(callee_vmctx: i64, caller_vmctx: i64, params...) -> results`.
//!   `Tail` lets later work add `return_call` without changing the ABI.
//! * **Array trampolines**, one per function type, are `extern "C"` (SystemV):
//!   [`ArrayTrampoline`] `(func_ptr, callee_vmctx, caller_vmctx, values)`.
//!   They load the parameters from `values` (one [`ValRaw`] slot each),
//!   call `func_ptr` and store the results back into `values` starting at
//!   slot 0. `values` has `max(params, results)` slots.
//! * **Host stubs**, one per function type, have the wasm signature. Their
//!   `callee_vmctx` is a pointer to a [`VMHostFuncContext`]; they spill the
//!   parameters into a stack array of [`ValRaw`], call
//!   `VMHostFuncContext::dispatch`, trap with [`TRAP_HOST`] if it returns
//!   non-zero, and otherwise load the results from the array.
//!
//! # Values
//!
//! `i32`, `i64`, `f32`, `f64` are themselves. `funcref` is an `i64` holding a
//! `*const VMFuncRef` (0 is null). `externref` is an `i64` holding an opaque
//! non-zero handle chosen by the runtime (0 is null).

/// One value as it crosses between host and JIT code: 16 bytes, little
/// endian, the value in the low bytes and the rest zero.
pub type ValRaw = u128;

/// Signature of an array trampoline (see the module docs).
pub type ArrayTrampoline = unsafe extern "C" fn(
    func_ptr: *const u8,
    callee_vmctx: *mut u8,
    caller_vmctx: *mut u8,
    values: *mut ValRaw,
);

/// Signature of [`VMHostFuncContext::dispatch`]: returns 0 on success, or
/// non-zero after the runtime has recorded why the call must trap.
pub type HostDispatch = unsafe extern "C" fn(
    host_ctx: *mut VMHostFuncContext,
    caller_vmctx: *mut u8,
    values: *mut ValRaw,
    len: usize,
) -> u32;

/// The `callee_vmctx` of a host function.
#[repr(C)]
#[derive(Debug)]
pub struct VMHostFuncContext {
    /// Called by the host stub. Offset 0.
    pub dispatch: HostDispatch,
    /// Runtime data: the host function's closure and its store.
    pub data: *mut u8,
}

/// Offset of [`VMHostFuncContext::dispatch`].
pub const HOST_CTX_DISPATCH: i32 = 0;

/// A function reference: what a `funcref` value points at, what table
/// elements of type funcref point at, and how imported functions are called.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VMFuncRef {
    /// Native code with the wasm calling convention.
    pub func_ptr: *const u8,
    /// The `callee_vmctx` to pass.
    pub vmctx: *mut u8,
    /// The engine-wide canonical id of the function's type.
    pub type_id: u32,
    /// Padding, always 0.
    pub _pad: u32,
}

/// Offset of [`VMFuncRef::func_ptr`].
pub const FUNCREF_FUNC_PTR: i32 = 0;
/// Offset of [`VMFuncRef::vmctx`].
pub const FUNCREF_VMCTX: i32 = 8;
/// Offset of [`VMFuncRef::type_id`].
pub const FUNCREF_TYPE_ID: i32 = 16;
/// Size of a [`VMFuncRef`].
pub const FUNCREF_SIZE: u32 = 24;

/// A linear memory as the code sees it. The base never changes for the life
/// of the memory (memories grow in place); `length` does.
#[repr(C)]
#[derive(Debug)]
pub struct VMMemory {
    /// Address of byte 0.
    pub base: *mut u8,
    /// Current size in bytes (a multiple of the page size).
    pub length: u64,
}

/// Offset of [`VMMemory::base`].
pub const MEMORY_BASE: i32 = 0;
/// Offset of [`VMMemory::length`].
pub const MEMORY_LENGTH: i32 = 8;

/// A table as the code sees it. Elements are 8 bytes each (see module docs).
/// The base may move when the table grows, so code reloads it every access.
#[repr(C)]
#[derive(Debug)]
pub struct VMTable {
    /// Address of element 0.
    pub base: *mut u64,
    /// Current number of elements.
    pub length: u64,
}

/// Offset of [`VMTable::base`].
pub const TABLE_BASE: i32 = 0;
/// Offset of [`VMTable::length`].
pub const TABLE_LENGTH: i32 = 8;

/// A global's storage: 16 bytes, value at offset 0 in its natural width.
#[repr(C, align(16))]
#[derive(Debug, Clone, Copy, Default)]
pub struct VMGlobal {
    /// The value's bits.
    pub bits: u128,
}

/// State shared by every instance of one store, reached from each vmctx.
#[repr(C)]
#[derive(Debug)]
pub struct VMStoreContext {
    /// Lowest stack address wasm code may use; checked in every prologue.
    pub stack_limit: usize,
    /// Points at the current epoch (an `AtomicU64`).
    pub epoch_ptr: *const u64,
    /// The call is interrupted once `*epoch_ptr >= epoch_deadline`. Written
    /// by other threads (atomically) to interrupt a running call.
    pub epoch_deadline: u64,
    /// The exception being thrown (a `*const VMException`, the exnref), or
    /// 0. Exception handling unwinds by checked returns: `throw` and
    /// `throw_ref` set it and branch to the innermost enclosing
    /// `try_table`'s dispatch, or return; after every call, code compiled
    /// with exceptions checks it and does the same; a catching handler
    /// clears it. The runtime clears it when a call from the host returns
    /// and turns a non-zero value into an uncaught-exception error.
    pub pending_exception: u64,
}

/// An exception tag: its identity is its address. `throw` records the
/// address in the exception, and a `catch` compares it with the address of
/// the tag it names (imported tags are the exporter's `VMTag`).
#[repr(C)]
#[derive(Debug)]
pub struct VMTag {
    /// The engine-wide canonical id of the payload's function type.
    pub type_id: u32,
    /// Padding, always 0.
    pub _pad: u32,
}

/// An exception object: what an `exnref` points at. Owned by the store
/// that created it, alive as long as the store.
#[repr(C)]
#[derive(Debug)]
pub struct VMException {
    /// The tag it was thrown with.
    pub tag: *const VMTag,
    /// Its payload: one [`ValRaw`] per parameter of the tag's type.
    pub values: *const ValRaw,
}

/// Offset of [`VMException::tag`].
pub const EXN_TAG: i32 = 0;
/// Offset of [`VMException::values`].
pub const EXN_VALUES: i32 = 8;

/// Offset of [`VMStoreContext::stack_limit`].
pub const STORE_STACK_LIMIT: i32 = 0;
/// Offset of [`VMStoreContext::epoch_ptr`].
pub const STORE_EPOCH_PTR: i32 = 8;
/// Offset of [`VMStoreContext::epoch_deadline`].
pub const STORE_EPOCH_DEADLINE: i32 = 16;
/// Offset of [`VMStoreContext::pending_exception`].
pub const STORE_PENDING_EXCEPTION: i32 = 24;

/// Builtin functions the code calls through the table at
/// [`VMCTX_BUILTINS`]. All are `extern "C"` (SystemV) and take the caller's
/// vmctx first. Indices into [`VMBuiltins`].
///
/// Signatures (`u32` for wasm `i32`, `u64` for `i64`/references):
///
/// | builtin | signature | returns |
/// |---|---|---|
/// | `MEMORY_GROW` | `(vmctx, mem: u32, delta: u64) -> u64` | old size in pages, or `u64::MAX` |
/// | `MEMORY_COPY` | `(vmctx, dst_mem: u32, dst: u64, src_mem: u32, src: u64, len: u64) -> u32` | 0, or 1 if out of bounds |
/// | `MEMORY_FILL` | `(vmctx, mem: u32, dst: u64, val: u32, len: u64) -> u32` | 0, or 1 if out of bounds |
/// | `MEMORY_INIT` | `(vmctx, mem: u32, data: u32, dst: u64, src: u32, len: u32) -> u32` | 0, or 1 if out of bounds |
/// | `DATA_DROP` | `(vmctx, data: u32)` | |
/// | `TABLE_GROW` | `(vmctx, table: u32, init: u64, delta: u32) -> u32` | old size, or `u32::MAX` |
/// | `TABLE_FILL` | `(vmctx, table: u32, dst: u32, val: u64, len: u32) -> u32` | 0, or 1 if out of bounds |
/// | `TABLE_COPY` | `(vmctx, dst_table: u32, src_table: u32, dst: u32, src: u32, len: u32) -> u32` | 0, or 1 if out of bounds |
/// | `TABLE_INIT` | `(vmctx, table: u32, elem: u32, dst: u32, src: u32, len: u32) -> u32` | 0, or 1 if out of bounds |
/// | `ELEM_DROP` | `(vmctx, elem: u32)` | |
/// | `MEMORY_ATOMIC_NOTIFY` | `(vmctx, mem: u32, addr: u64, count: u32) -> u32` | waiters woken |
/// | `MEMORY_ATOMIC_WAIT32` | `(vmctx, mem: u32, addr: u64, expected: u32, timeout_ns: i64) -> u32` | 0 woken, 1 not equal, 2 timed out |
/// | `MEMORY_ATOMIC_WAIT64` | `(vmctx, mem: u32, addr: u64, expected: u64, timeout_ns: i64) -> u32` | as `WAIT32` |
/// | `GC` | `(vmctx, op: u32, a: u32, b: u32, values: *mut ValRaw) -> u32` | 0, or 1 if the code must trap with [`TRAP_GC`] (see [`crate::gc_layout`]) |
/// | `THROW` | `(vmctx, tag: *const VMTag, values: *const ValRaw, count: u32) -> u32` | 0 (the exception is pending), or 1 if the store's exception limit is reached |
///
/// For the atomic builtins the code has already checked `addr` (the
/// effective address) against the memory's bounds and alignment, and only
/// calls the wait builtins on shared memories (a wait on an unshared memory
/// traps with [`TRAP_ATOMIC_WAIT_NON_SHARED`]). A negative timeout waits
/// forever; the wait builtins block the calling thread.
///
/// A builtin returning 1 for "out of bounds" means the code must trap with
/// [`TRAP_MEMORY_OOB`] (memory builtins) or [`TRAP_TABLE_OOB`] (table
/// builtins).
pub mod builtins {
    /// `memory.grow`.
    pub const MEMORY_GROW: usize = 0;
    /// `memory.copy`.
    pub const MEMORY_COPY: usize = 1;
    /// `memory.fill`.
    pub const MEMORY_FILL: usize = 2;
    /// `memory.init`.
    pub const MEMORY_INIT: usize = 3;
    /// `data.drop`.
    pub const DATA_DROP: usize = 4;
    /// `table.grow`.
    pub const TABLE_GROW: usize = 5;
    /// `table.fill`.
    pub const TABLE_FILL: usize = 6;
    /// `table.copy`.
    pub const TABLE_COPY: usize = 7;
    /// `table.init`.
    pub const TABLE_INIT: usize = 8;
    /// `elem.drop`.
    pub const ELEM_DROP: usize = 9;
    /// `memory.atomic.notify`.
    pub const MEMORY_ATOMIC_NOTIFY: usize = 10;
    /// `memory.atomic.wait32`.
    pub const MEMORY_ATOMIC_WAIT32: usize = 11;
    /// `memory.atomic.wait64`.
    pub const MEMORY_ATOMIC_WAIT64: usize = 12;
    /// `throw`: allocates the exception and makes it pending.
    pub const THROW: usize = 13;
    /// Every GC heap operation (see [`crate::gc_layout`]).
    pub const GC: usize = 14;
    /// Number of builtins.
    pub const COUNT: usize = 15;
}

/// The table of builtin function pointers, indexed by [`builtins`].
#[repr(C)]
#[derive(Debug)]
pub struct VMBuiltins {
    /// Function pointers; their signatures are listed in [`builtins`].
    pub funcs: [*const u8; builtins::COUNT],
}

// ---------------------------------------------------------------------------
// VM context layout.
//
// A vmctx is one allocation per instance:
//
//   0   store: *mut VMStoreContext
//   8   builtins: *const VMBuiltins
//   16  instance: *mut u8          (runtime's own instance pointer)
//   24  reserved (0)
//   32  memories: [*mut VMMemory; num_memories]       (imported first)
//       tables:   [*mut VMTable; num_tables]          (imported first)
//       globals:  [*mut VMGlobal; num_globals]        (imported first)
//       tags:     [*const VMTag; num_tags]            (imported first)
//       funcrefs: [VMFuncRef; num_funcs]              (imported first)
//
// Every memory, table and global, imported or defined, is reached through a
// pointer, so one code path serves both. `funcrefs[i]` is the reference of
// function i: `ref.func i` yields its address, and calls to imported
// functions go through its func_ptr and vmctx.
// ---------------------------------------------------------------------------

/// The fixed header at the start of every vmctx, as a Rust struct: the
/// layout the `VMCTX_*` offsets describe (the engine writes the header
/// through those offsets; this struct is what they are checked against).
#[repr(C)]
#[derive(Debug)]
pub struct VMContextHeader {
    /// The store's shared context. At [`VMCTX_STORE`].
    pub store: *mut VMStoreContext,
    /// The builtin function table. At [`VMCTX_BUILTINS`].
    pub builtins: *const VMBuiltins,
    /// The runtime's own instance pointer. At [`VMCTX_INSTANCE`].
    pub instance: *mut u8,
    /// Reserved, always 0.
    pub _reserved: u64,
}

/// Offset of the `*mut VMStoreContext` in a vmctx.
pub const VMCTX_STORE: i32 = 0;
/// Offset of the `*const VMBuiltins` in a vmctx.
pub const VMCTX_BUILTINS: i32 = 8;
/// Offset of the runtime's instance pointer in a vmctx.
pub const VMCTX_INSTANCE: i32 = 16;
/// Size of the fixed vmctx header.
pub const VMCTX_HEADER_SIZE: u32 = 32;

/// Offsets of the variable parts of one module's vmctx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VMOffsets {
    /// Number of memories (imported and defined).
    pub num_memories: u32,
    /// Number of tables (imported and defined).
    pub num_tables: u32,
    /// Number of globals (imported and defined).
    pub num_globals: u32,
    /// Number of functions (imported and defined).
    pub num_funcs: u32,
    /// Number of exception tags (imported and defined).
    pub num_tags: u32,
}

impl VMOffsets {
    /// Offset of the pointer to memory `index`.
    pub fn memory(&self, index: u32) -> u32 {
        debug_assert!(index < self.num_memories);
        VMCTX_HEADER_SIZE + 8 * index
    }
    /// Offset of the pointer to table `index`.
    pub fn table(&self, index: u32) -> u32 {
        debug_assert!(index < self.num_tables);
        VMCTX_HEADER_SIZE + 8 * self.num_memories + 8 * index
    }
    /// Offset of the pointer to global `index`.
    pub fn global(&self, index: u32) -> u32 {
        debug_assert!(index < self.num_globals);
        VMCTX_HEADER_SIZE + 8 * (self.num_memories + self.num_tables + index)
    }
    /// Offset of the pointer to tag `index`.
    pub fn tag(&self, index: u32) -> u32 {
        debug_assert!(index < self.num_tags);
        VMCTX_HEADER_SIZE + 8 * (self.num_memories + self.num_tables + self.num_globals + index)
    }
    /// Offset of the [`VMFuncRef`] of function `index`.
    pub fn funcref(&self, index: u32) -> u32 {
        debug_assert!(index < self.num_funcs);
        self.funcrefs_start() + FUNCREF_SIZE * index
    }
    fn funcrefs_start(&self) -> u32 {
        VMCTX_HEADER_SIZE
            + 8 * (self.num_memories + self.num_tables + self.num_globals + self.num_tags)
    }
    /// Total size of the vmctx in bytes.
    pub fn size(&self) -> u32 {
        self.funcrefs_start() + FUNCREF_SIZE * self.num_funcs
    }
}

// ---------------------------------------------------------------------------
// Layout checks. Generated code reads these structures at the offsets above;
// if a field moves or a type changes size, the build fails here instead of
// the code silently reading the wrong bytes.
// ---------------------------------------------------------------------------

/// `offset_of!` as the `i32` the offset constants are.
macro_rules! offset_i32 {
    ($t:ty, $f:ident) => {
        core::mem::offset_of!($t, $f) as i32
    };
}

const _: () = assert!(offset_i32!(VMHostFuncContext, dispatch) == HOST_CTX_DISPATCH);

const _: () = assert!(offset_i32!(VMFuncRef, func_ptr) == FUNCREF_FUNC_PTR);
const _: () = assert!(offset_i32!(VMFuncRef, vmctx) == FUNCREF_VMCTX);
const _: () = assert!(offset_i32!(VMFuncRef, type_id) == FUNCREF_TYPE_ID);
const _: () = assert!(core::mem::size_of::<VMFuncRef>() == FUNCREF_SIZE as usize);
// Code loads func_ptr and vmctx as i64.
const _: () = assert!(core::mem::size_of::<*const u8>() == 8);

const _: () = assert!(offset_i32!(VMMemory, base) == MEMORY_BASE);
const _: () = assert!(offset_i32!(VMMemory, length) == MEMORY_LENGTH);

const _: () = assert!(offset_i32!(VMTable, base) == TABLE_BASE);
const _: () = assert!(offset_i32!(VMTable, length) == TABLE_LENGTH);

// A global's value is at offset 0 of its 16-byte, 16-aligned storage.
const _: () = assert!(core::mem::offset_of!(VMGlobal, bits) == 0);
const _: () = assert!(core::mem::size_of::<VMGlobal>() == 16);
const _: () = assert!(core::mem::align_of::<VMGlobal>() == 16);

const _: () = assert!(offset_i32!(VMStoreContext, stack_limit) == STORE_STACK_LIMIT);
const _: () = assert!(offset_i32!(VMStoreContext, epoch_ptr) == STORE_EPOCH_PTR);
const _: () = assert!(offset_i32!(VMStoreContext, epoch_deadline) == STORE_EPOCH_DEADLINE);
// The prologue's stack-limit check and the epoch check load them as i64.
const _: () = assert!(core::mem::size_of::<usize>() == 8);

// Code calls builtin `i` through the pointer at byte `8 * i` of the table.
const _: () = assert!(core::mem::offset_of!(VMBuiltins, funcs) == 0);
const _: () = assert!(core::mem::size_of::<VMBuiltins>() == 8 * builtins::COUNT);

const _: () = assert!(offset_i32!(VMContextHeader, store) == VMCTX_STORE);
const _: () = assert!(offset_i32!(VMContextHeader, builtins) == VMCTX_BUILTINS);
const _: () = assert!(offset_i32!(VMContextHeader, instance) == VMCTX_INSTANCE);
const _: () = assert!(core::mem::size_of::<VMContextHeader>() == VMCTX_HEADER_SIZE as usize);
// `VMOffsets` lays memories, tables and globals out as 8-byte pointers.
const _: () = assert!(core::mem::size_of::<*mut VMMemory>() == 8);
const _: () = assert!(core::mem::size_of::<*mut VMTable>() == 8);
const _: () = assert!(core::mem::size_of::<*mut VMGlobal>() == 8);
// Trampolines and host stubs step through `ValRaw` slots 16 bytes apart.
const _: () = assert!(core::mem::size_of::<ValRaw>() == 16);

// ---------------------------------------------------------------------------
// Trap codes. Cranelift's reserved codes are used where they fit; the rest
// are user codes.
// ---------------------------------------------------------------------------

pub use cranelift_codegen::ir::TrapCode;
/// The trap code type used in trap sites (Cranelift's).
pub type TrapCodeRepr = TrapCode;

/// Stack exhausted (Cranelift's prologue stack-limit check).
pub const TRAP_STACK_OVERFLOW: TrapCode = TrapCode::STACK_OVERFLOW;
/// Out-of-bounds memory access: guard-page fault, explicit check or builtin.
pub const TRAP_MEMORY_OOB: TrapCode = TrapCode::HEAP_OUT_OF_BOUNDS;
/// Integer overflow (`INT_MIN / -1`) or float-to-int out of range.
pub const TRAP_INTEGER_OVERFLOW: TrapCode = TrapCode::INTEGER_OVERFLOW;
/// Integer divide by zero.
pub const TRAP_DIVIDE_BY_ZERO: TrapCode = TrapCode::INTEGER_DIVISION_BY_ZERO;
/// NaN converted to an integer.
pub const TRAP_BAD_CONVERSION: TrapCode = TrapCode::BAD_CONVERSION_TO_INTEGER;
/// `unreachable` executed.
pub const TRAP_UNREACHABLE: TrapCode = TrapCode::unwrap_user(1);
/// Table index out of bounds (`table.get/set`, table builtins, segments).
pub const TRAP_TABLE_OOB: TrapCode = TrapCode::unwrap_user(2);
/// `call_indirect` through a null entry.
pub const TRAP_INDIRECT_NULL: TrapCode = TrapCode::unwrap_user(3);
/// `call_indirect` with a signature mismatch.
pub const TRAP_BAD_SIGNATURE: TrapCode = TrapCode::unwrap_user(4);
/// The epoch deadline passed: the call was interrupted.
pub const TRAP_INTERRUPTED: TrapCode = TrapCode::unwrap_user(5);
/// A host function returned an error (the runtime holds the reason).
pub const TRAP_HOST: TrapCode = TrapCode::unwrap_user(6);
/// `call_indirect` index beyond the end of its table.
pub const TRAP_INDIRECT_OOB: TrapCode = TrapCode::unwrap_user(8);
/// What the `MEMORY_ATOMIC_WAIT*` builtins return when the call was
/// interrupted while blocked; the code traps with [`TRAP_INTERRUPTED`].
pub const WAIT_INTERRUPTED: u32 = 3;
/// Misaligned atomic access (threads proposal).
pub const TRAP_UNALIGNED_ATOMIC: TrapCode = TrapCode::unwrap_user(7);
/// `memory.atomic.wait32/64` on a memory that is not shared.
pub const TRAP_ATOMIC_WAIT_NON_SHARED: TrapCode = TrapCode::unwrap_user(9);
/// `call_ref` / `return_call_ref` through a null reference.
pub const TRAP_NULL_FUNC_REF: TrapCode = TrapCode::unwrap_user(10);
/// `ref.as_non_null` of a null reference.
pub const TRAP_NULL_REFERENCE: TrapCode = TrapCode::unwrap_user(11);
/// `throw_ref` of a null reference.
pub const TRAP_NULL_EXNREF: TrapCode = TrapCode::unwrap_user(12);
/// `throw` past the store's limit on exception objects.
pub const TRAP_EXCEPTION_LIMIT: TrapCode = TrapCode::unwrap_user(13);
/// An exception reached the host uncaught (the runtime raises it; no code
/// site traps with it).
pub const TRAP_UNCAUGHT_EXCEPTION: TrapCode = TrapCode::unwrap_user(14);

/// A GC operation failed (null reference, out-of-bounds array access,
/// cast failure, heap exhausted): the runtime recorded which.
pub const TRAP_GC: TrapCode = TrapCode::unwrap_user(15);
/// `ref.cast` of a reference not of the target type (GC).
pub const TRAP_CAST: TrapCode = TrapCode::unwrap_user(16);
/// `i31.get_s` / `i31.get_u` of null (GC).
pub const TRAP_NULL_I31: TrapCode = TrapCode::unwrap_user(17);

const _: () = assert!(offset_i32!(VMStoreContext, pending_exception) == STORE_PENDING_EXCEPTION);
const _: () = assert!(offset_i32!(VMException, tag) == EXN_TAG);
const _: () = assert!(offset_i32!(VMException, values) == EXN_VALUES);
