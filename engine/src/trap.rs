//! Traps and the engine's error type.

use faaslet_jit::abi;
use faaslet_jit::CompileError;
use std::fmt;

/// Why a call into wasm stopped abnormally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrapKind {
    /// A load, store or bulk memory operation fell outside the memory.
    MemoryOutOfBounds,
    /// A table access (`table.get/set/fill/copy/init`, an element segment)
    /// fell outside the table.
    TableOutOfBounds,
    /// A `call_indirect` index fell outside its table.
    UndefinedElement,
    /// `unreachable` was executed.
    Unreachable,
    /// Integer division or remainder by zero.
    IntegerDivisionByZero,
    /// Integer overflow (`INT_MIN / -1`, or a float too large for an integer).
    IntegerOverflow,
    /// NaN converted to an integer.
    BadConversionToInteger,
    /// `call_indirect` through a null table entry.
    IndirectCallToNull,
    /// `call_indirect` whose entry has a different signature.
    BadSignature,
    /// The wasm stack limit was reached (deep or infinite recursion).
    StackOverflow,
    /// The call was interrupted by an epoch deadline or an [`InterruptHandle`](crate::InterruptHandle).
    Interrupted,
    /// A host function returned an error.
    Host,
    /// An atomic access whose address is not a multiple of its size.
    UnalignedAtomic,
    /// `memory.atomic.wait32/64` on a memory that is not shared.
    AtomicWaitNonShared,
    /// `call_ref` or `return_call_ref` through a null reference.
    NullFunctionReference,
    /// `ref.as_non_null` of a null reference.
    NullReference,
    /// `throw_ref` of a null reference.
    NullExceptionReference,
    /// A `throw` past the store's limit on exception objects
    /// ([`MAX_EXCEPTION_BYTES`](crate::MAX_EXCEPTION_BYTES)).
    ExceptionLimit,
    /// A wasm exception reached the host without being caught.
    UncaughtException,
    /// `struct.get` / `struct.set` of null (GC).
    NullStructReference,
    /// An array operation on null (GC).
    NullArrayReference,
    /// An array access outside the array (GC).
    ArrayOutOfBounds,
    /// `i31.get_s` / `i31.get_u` of null (GC).
    NullI31Reference,
    /// `ref.cast` of a reference not of the target type (GC).
    CastFailure,
    /// An allocation past the store's GC heap limit (GC).
    GcHeapExhausted,
}

impl TrapKind {
    /// The spec interpreter's wording for this trap.
    pub fn message(self) -> &'static str {
        match self {
            TrapKind::MemoryOutOfBounds => "out of bounds memory access",
            TrapKind::TableOutOfBounds => "out of bounds table access",
            TrapKind::UndefinedElement => "undefined element",
            TrapKind::Unreachable => "unreachable",
            TrapKind::IntegerDivisionByZero => "integer divide by zero",
            TrapKind::IntegerOverflow => "integer overflow",
            TrapKind::BadConversionToInteger => "invalid conversion to integer",
            TrapKind::IndirectCallToNull => "uninitialized element",
            TrapKind::BadSignature => "indirect call type mismatch",
            TrapKind::StackOverflow => "call stack exhausted",
            TrapKind::Interrupted => "interrupted",
            TrapKind::Host => "host function error",
            TrapKind::UnalignedAtomic => "unaligned atomic",
            TrapKind::AtomicWaitNonShared => "expected shared memory",
            TrapKind::NullFunctionReference => "null function reference",
            TrapKind::NullReference => "null reference",
            TrapKind::NullExceptionReference => "null exception reference",
            TrapKind::ExceptionLimit => "too many exceptions",
            TrapKind::UncaughtException => "uncaught exception",
            TrapKind::NullStructReference => "null structure reference",
            TrapKind::NullArrayReference => "null array reference",
            TrapKind::ArrayOutOfBounds => "out of bounds array access",
            TrapKind::NullI31Reference => "null i31 reference",
            TrapKind::CastFailure => "cast failure",
            TrapKind::GcHeapExhausted => "allocation failed: GC heap exhausted",
        }
    }

    pub(crate) fn from_code(code: faaslet_jit::abi::TrapCodeRepr) -> Option<TrapKind> {
        Some(match code {
            c if c == abi::TRAP_MEMORY_OOB => TrapKind::MemoryOutOfBounds,
            c if c == abi::TRAP_TABLE_OOB => TrapKind::TableOutOfBounds,
            c if c == abi::TRAP_INDIRECT_OOB => TrapKind::UndefinedElement,
            c if c == abi::TRAP_UNREACHABLE => TrapKind::Unreachable,
            c if c == abi::TRAP_DIVIDE_BY_ZERO => TrapKind::IntegerDivisionByZero,
            c if c == abi::TRAP_INTEGER_OVERFLOW => TrapKind::IntegerOverflow,
            c if c == abi::TRAP_BAD_CONVERSION => TrapKind::BadConversionToInteger,
            c if c == abi::TRAP_INDIRECT_NULL => TrapKind::IndirectCallToNull,
            c if c == abi::TRAP_BAD_SIGNATURE => TrapKind::BadSignature,
            c if c == abi::TRAP_STACK_OVERFLOW => TrapKind::StackOverflow,
            c if c == abi::TRAP_INTERRUPTED => TrapKind::Interrupted,
            c if c == abi::TRAP_HOST => TrapKind::Host,
            c if c == abi::TRAP_UNALIGNED_ATOMIC => TrapKind::UnalignedAtomic,
            c if c == abi::TRAP_ATOMIC_WAIT_NON_SHARED => TrapKind::AtomicWaitNonShared,
            c if c == abi::TRAP_NULL_FUNC_REF => TrapKind::NullFunctionReference,
            c if c == abi::TRAP_NULL_REFERENCE => TrapKind::NullReference,
            c if c == abi::TRAP_NULL_EXNREF => TrapKind::NullExceptionReference,
            c if c == abi::TRAP_EXCEPTION_LIMIT => TrapKind::ExceptionLimit,
            c if c == abi::TRAP_UNCAUGHT_EXCEPTION => TrapKind::UncaughtException,
            c if c == abi::TRAP_CAST => TrapKind::CastFailure,
            c if c == abi::TRAP_NULL_I31 => TrapKind::NullI31Reference,
            // The GC builtin recorded the precise kind (`StoreCore::gc`);
            // this is only the fallback.
            c if c == abi::TRAP_GC => TrapKind::GcHeapExhausted,
            _ => return None,
        })
    }
}

/// A trap: its kind and, where known, where in the guest it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trap {
    /// What went wrong.
    pub kind: TrapKind,
    /// Index of the wasm function the trap happened in, if it happened in wasm.
    pub func_index: Option<u32>,
    /// That function's name from the name section, if any.
    pub func_name: Option<String>,
    /// Byte offset in the module of the instruction that trapped, if known.
    pub wasm_offset: Option<u32>,
    /// For [`TrapKind::Host`]: the host's message.
    pub message: Option<String>,
}

impl Trap {
    /// A trap of `kind` with no location.
    pub fn new(kind: TrapKind) -> Trap {
        Trap {
            kind,
            func_index: None,
            func_name: None,
            wasm_offset: None,
            message: None,
        }
    }

    /// A host error with a message, for host functions to return.
    pub fn host(message: impl Into<String>) -> Trap {
        Trap {
            message: Some(message.into()),
            ..Trap::new(TrapKind::Host)
        }
    }
}

impl fmt::Display for Trap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(m) => f.write_str(m)?,
            None => f.write_str(self.kind.message())?,
        }
        if let Some(i) = self.func_index {
            write!(f, " in wasm function {i}")?;
            if let Some(n) = &self.func_name {
                write!(f, " ({n})")?;
            }
            if let Some(o) = self.wasm_offset {
                write!(f, " at offset {o:#x}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Trap {}

/// A `Config` that `Engine::new` refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `signal_interruption` set without `epoch_interruption`.
    #[error("signal_interruption needs epoch_interruption (it is a way of interrupting calls)")]
    SignalsWithoutInterruption,
    /// `guard_size` above `MAX_GUARD_SIZE`.
    #[error(
        "guard_size of {guard_size:#x} bytes exceeds the largest supported guard ({max:#x} bytes)"
    )]
    GuardTooLarge {
        /// The configured guard.
        guard_size: u64,
        /// `MAX_GUARD_SIZE`.
        max: u64,
    },
    /// `guard_size` not a multiple of the host page size.
    #[error("guard_size of {guard_size:#x} bytes is not a multiple of the host page size ({page_size} bytes)")]
    GuardUnaligned {
        /// The configured guard.
        guard_size: u64,
        /// The host page size.
        page_size: u64,
    },
    /// `explicit_reservation_cap` above 4 GiB or not a whole number of
    /// wasm pages.
    #[error(
        "explicit_reservation_cap of {cap:#x} bytes must be a multiple of 64 KiB and at most 4 GiB"
    )]
    ReservationCap {
        /// The configured cap.
        cap: u64,
    },
    /// `max_table_elements` above `u32::MAX` (table indices are 32-bit).
    #[error("max_table_elements of {n} exceeds {max}")]
    TableElements {
        /// The configured value.
        n: u64,
        /// The largest accepted.
        max: u64,
    },
    /// `max_wasm_stack` outside `MIN_WASM_STACK`..=`MAX_WASM_STACK`.
    #[error("max_wasm_stack of {n} bytes is outside {min}..={max}")]
    WasmStack {
        /// The configured value.
        n: usize,
        /// `MIN_WASM_STACK`.
        min: usize,
        /// `MAX_WASM_STACK`.
        max: usize,
    },
    /// A store limit too large to be meant: above a thousand full 32-bit
    /// memories or tables (a unit mistake, and a sum that could overflow).
    #[error("store_limits.{field} of {value} exceeds {max}")]
    StoreLimit {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The largest accepted.
        max: u64,
    },
}

/// Which [`StoreLimits`](crate::StoreLimits) field an [`Error::Limit`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// `memory_bytes`: total bytes of linear memory.
    MemoryBytes,
    /// `table_elements`: total elements of all tables.
    TableElements,
    /// `memories`: number of memories.
    Memories,
    /// `tables`: number of tables.
    Tables,
    /// `instances`: number of instances.
    Instances,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::MemoryBytes => "memory_bytes",
            Limit::TableElements => "table_elements",
            Limit::Memories => "memories",
            Limit::Tables => "tables",
            Limit::Instances => "instances",
        })
    }
}

/// A store limit that an instantiation or a growth would exceed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store limit {limit} exceeded: {requested} requested, limit is {max}")]
pub struct LimitError {
    /// The limit.
    pub limit: Limit,
    /// What the store would have reached (bytes, elements or a count).
    pub requested: u64,
    /// The limit's value.
    pub max: u64,
}

/// Everything that can go wrong in the embedding API.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The module is malformed, invalid, or uses an unsupported feature.
    #[error("compile error: {0}")]
    Compile(#[from] CompileError),
    /// An import is missing or has the wrong type.
    #[error("unlinkable: {0}")]
    Link(String),
    /// Wasm code trapped (also during instantiation: segments, start function).
    #[error("trap: {0}")]
    Trap(#[from] Trap),
    /// A resource could not be obtained (memory reservation, table growth).
    #[error("resource: {0}")]
    Resource(String),
    /// A value or object of the wrong type, or from another store.
    #[error("type mismatch: {0}")]
    Type(String),
    /// The engine configuration is refused (`Engine::new`).
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A store limit would be exceeded (instantiation, `Memory::grow`,
    /// `Table::grow`).
    #[error("{0}")]
    Limit(#[from] LimitError),
}

impl Error {
    /// The trap, if this error is one.
    pub fn as_trap(&self) -> Option<&Trap> {
        match self {
            Error::Trap(t) => Some(t),
            _ => None,
        }
    }
}
