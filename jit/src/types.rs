//! WebAssembly types and the parsed description of a module ([`ModuleInfo`]),
//! shared by the translator and the runtime.

use crate::abi::VMOffsets;
use std::fmt;
use std::sync::Arc;

/// A value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValType {
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// 128-bit vector.
    V128,
    /// Nullable function reference.
    FuncRef,
    /// Nullable external (host) reference.
    ExternRef,
    /// Nullable exception reference (exception handling, WebAssembly 3.0).
    ExnRef,
    /// A reference of WebAssembly GC's `any` hierarchy (`anyref`, `eqref`,
    /// `i31ref`, `structref`, `arrayref`, concrete struct and array types,
    /// `none`): an i64 holding 0 (null), an `i31` (low bit 1), an
    /// externalised host reference (low bits `10`) or a heap offset (see
    /// [`gc_ref`]).
    AnyRef,
}

impl ValType {
    /// Whether this is a reference type.
    pub fn is_ref(self) -> bool {
        matches!(
            self,
            ValType::FuncRef | ValType::ExternRef | ValType::ExnRef | ValType::AnyRef
        )
    }
}

impl fmt::Display for ValType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValType::I32 => "i32",
            ValType::I64 => "i64",
            ValType::F32 => "f32",
            ValType::F64 => "f64",
            ValType::V128 => "v128",
            ValType::FuncRef => "funcref",
            ValType::ExternRef => "externref",
            ValType::ExnRef => "exnref",
            ValType::AnyRef => "anyref",
        })
    }
}

/// A reference type: the element type of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefType {
    /// `funcref`.
    Func,
    /// `externref`.
    Extern,
    /// `exnref`.
    Exn,
    /// `anyref` (WebAssembly GC's `any` hierarchy).
    Any,
}

impl From<RefType> for ValType {
    fn from(r: RefType) -> ValType {
        match r {
            RefType::Func => ValType::FuncRef,
            RefType::Extern => ValType::ExternRef,
            RefType::Exn => ValType::ExnRef,
            RefType::Any => ValType::AnyRef,
        }
    }
}

/// A reference type with everything WebAssembly 3.0 says about it
/// (nullability, concrete heap type), for matching the imports of globals
/// and tables. [`GlobalType::ref_type`] and [`TableType::ref_type`] hold
/// one only when it differs from the plain `funcref` / `externref` its
/// [`RefType`] already says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TypedRef {
    /// Whether null is a value of the type.
    pub nullable: bool,
    /// The heap type.
    pub heap: HeapKind,
}

/// The heap type of a [`TypedRef`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeapKind {
    /// `func`: any function.
    Func,
    /// `nofunc`: no function (only null).
    NoFunc,
    /// `extern`: any host reference.
    Extern,
    /// `noextern`: no host reference (only null).
    NoExtern,
    /// `exn`: any exception.
    Exn,
    /// `noexn`: no exception (only null).
    NoExn,
    /// A function type, by its engine-wide canonical id.
    Concrete(u32),
    /// `any` (GC): every internal reference.
    Any,
    /// `eq` (GC): i31s, structs and arrays.
    Eq,
    /// `i31` (GC).
    I31,
    /// `struct` (GC): any struct.
    Struct,
    /// `array` (GC): any array.
    Array,
    /// `none` (GC): no internal reference (only null).
    None,
    /// A struct type, by its engine-wide canonical id.
    ConcreteStruct(u32),
    /// An array type, by its engine-wide canonical id.
    ConcreteArray(u32),
}

impl TypedRef {
    /// The plain, nullable reference type `r` (`funcref` or `externref`).
    pub fn plain(r: RefType) -> TypedRef {
        TypedRef {
            nullable: true,
            heap: match r {
                RefType::Func => HeapKind::Func,
                RefType::Extern => HeapKind::Extern,
                RefType::Exn => HeapKind::Exn,
                RefType::Any => HeapKind::Any,
            },
        }
    }

    /// Whether every value of `self` is a value of `other` (WebAssembly
    /// 3.0 subtyping, without GC's declared subtypes: a concrete type is a
    /// subtype only of itself and of the abstract types above it).
    pub fn is_subtype_of(self, other: TypedRef) -> bool {
        self.is_subtype_with(other, |_, _| false)
    }

    /// As [`Self::is_subtype_of`], with `declared(a, b)` saying whether
    /// concrete type `a` is a declared (transitive) subtype of concrete
    /// type `b`, by engine-wide ids (GC).
    pub fn is_subtype_with(self, other: TypedRef, declared: impl Fn(u32, u32) -> bool) -> bool {
        use HeapKind::*;
        let heap = match (self.heap, other.heap) {
            (a, b) if a == b => true,
            (NoFunc | Concrete(_), Func)
            | (NoFunc, Concrete(_))
            | (NoExtern, Extern)
            | (NoExn, Exn) => true,
            (Concrete(a), Concrete(b))
            | (ConcreteStruct(a), ConcreteStruct(b))
            | (ConcreteArray(a), ConcreteArray(b)) => declared(a, b),
            (None, Any | Eq | I31 | Struct | Array | ConcreteStruct(_) | ConcreteArray(_)) => true,
            (Eq | I31 | Struct | Array | ConcreteStruct(_) | ConcreteArray(_), Any) => true,
            (I31 | Struct | Array | ConcreteStruct(_) | ConcreteArray(_), Eq) => true,
            (ConcreteStruct(_), Struct) | (ConcreteArray(_), Array) => true,
            _ => false,
        };
        heap && (other.nullable || !self.nullable)
    }
}

/// How WebAssembly GC references are encoded in their i64 slot.
pub mod gc_ref {
    /// The low bit of an `i31ref` (its value sits in bits 1..32).
    pub const I31_TAG: u64 = 1;
    /// The low two bits of an externalised host reference in the `any`
    /// hierarchy (`any.convert_extern`); the handle sits in bits 2..64.
    pub const EXTERN_TAG: u64 = 2;
    /// The mask of the tag bits; a heap object's offset has them clear
    /// (objects are 8-byte aligned) and is never 0.
    pub const TAG_MASK: u64 = 3;
    /// The bit set in an `externref` that wraps an internal reference
    /// (`extern.convert_any`); host handles never reach it.
    pub const WRAPPED_ANY: u64 = 1 << 63;
}

/// A storage type of a struct field or array element (GC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageType {
    /// Packed 8-bit integer.
    I8,
    /// Packed 16-bit integer.
    I16,
    /// A value type.
    Val(ValType),
}

impl StorageType {
    /// Bytes the storage type takes in a heap object.
    pub fn size(self) -> u32 {
        match self {
            StorageType::I8 => 1,
            StorageType::I16 => 2,
            StorageType::Val(ValType::I32 | ValType::F32) => 4,
            StorageType::Val(ValType::V128) => 16,
            StorageType::Val(_) => 8,
        }
    }

    /// The value type an operand or result of this storage type has.
    pub fn unpacked(self) -> ValType {
        match self {
            StorageType::I8 | StorageType::I16 => ValType::I32,
            StorageType::Val(v) => v,
        }
    }
}

/// A struct field or array element type (GC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldType {
    /// What it stores.
    pub storage: StorageType,
    /// Whether `struct.set` / `array.set` may change it.
    pub mutable: bool,
}

/// What a type of the type section defines.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum CompositeKind {
    /// A function type.
    #[default]
    Func,
    /// A struct type: its fields, each at the byte offset `offsets` says.
    Struct {
        /// The fields in order.
        fields: Arc<[FieldType]>,
        /// Byte offset of each field from the object's start (after the
        /// header).
        offsets: Arc<[u32]>,
        /// Bytes of the object, header included.
        size: u32,
    },
    /// An array type.
    Array(FieldType),
}

/// A defined type with everything GC adds to it: kind, declared
/// supertype and the supertype display used for O(1) casts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TypeDef {
    /// Func, struct or array.
    pub kind: CompositeKind,
    /// Whether the type is `final` (no subtype may declare it).
    pub is_final: bool,
    /// The engine-wide ids of the type's supertypes, root first, ending
    /// with the type's own id: the type is a subtype of `U` exactly when
    /// `display[depth(U)] == id(U)`.
    pub display: Arc<[u32]>,
}

/// A function type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FuncType {
    /// Parameter types.
    pub params: Box<[ValType]>,
    /// Result types.
    pub results: Box<[ValType]>,
    /// What `params` and `results` cannot say about a type using typed
    /// function references (WebAssembly 3.0): nullability, concrete heap
    /// types (by the engine-wide id of the referenced type, or by position
    /// within the type's own recursion group) and the recursion group
    /// itself, so that two types are equal exactly when the specification
    /// calls them equivalent (iso-recursive canonicalisation). `None` for
    /// every type that only uses `funcref` and `externref` and is alone in
    /// its recursion group: all of WebAssembly 2.0, and host functions.
    pub ref_key: Option<Arc<[u32]>>,
}

impl FuncType {
    /// Builds a function type.
    pub fn new(
        params: impl IntoIterator<Item = ValType>,
        results: impl IntoIterator<Item = ValType>,
    ) -> FuncType {
        FuncType {
            params: params.into_iter().collect(),
            results: results.into_iter().collect(),
            ref_key: None,
        }
    }
}

impl fmt::Display for FuncType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[ValType]| {
            v.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        write!(
            f,
            "(func (param {}) (result {}))",
            list(&self.params),
            list(&self.results)
        )?;
        if let Some(key) = &self.ref_key {
            write!(f, " with typed references {key:?}")?;
        }
        Ok(())
    }
}

/// A table type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableType {
    /// Element type.
    pub element: RefType,
    /// Minimum (initial) number of elements.
    pub minimum: u64,
    /// Maximum number of elements, if bounded.
    pub maximum: Option<u64>,
    /// The precise element type, when it is not the plain nullable
    /// `element` (typed function references).
    pub ref_type: Option<TypedRef>,
    /// Whether the table is indexed by i64 (table64, part of memory64).
    pub table64: bool,
}

/// A memory type. Sizes are in 64 KiB pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemoryType {
    /// Minimum (initial) size in pages.
    pub minimum: u64,
    /// Maximum size in pages, if bounded.
    pub maximum: Option<u64>,
    /// Whether the memory is shared (threads proposal).
    pub shared: bool,
    /// Whether the memory is indexed by i64 (memory64 proposal).
    pub memory64: bool,
}

/// A global type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GlobalType {
    /// Value type.
    pub content: ValType,
    /// Whether `global.set` may change it.
    pub mutable: bool,
    /// The precise reference type of a reference global, when it is not
    /// the plain nullable `content` (typed function references).
    pub ref_type: Option<TypedRef>,
}

impl GlobalType {
    /// A global of type `content`, plain (no typed reference).
    pub fn new(content: ValType, mutable: bool) -> GlobalType {
        GlobalType {
            content,
            mutable,
            ref_type: None,
        }
    }
}

/// What an import or export refers to, with its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityType {
    /// A function, by index into [`ModuleInfo::types`].
    Func(u32),
    /// A table.
    Table(TableType),
    /// A memory.
    Memory(MemoryType),
    /// A global.
    Global(GlobalType),
    /// An exception tag, by the index into [`ModuleInfo::types`] of the
    /// function type of its payload (its params; no results).
    Tag(u32),
}

/// One import.
#[derive(Debug, Clone)]
pub struct Import {
    /// Module name.
    pub module: String,
    /// Field name.
    pub name: String,
    /// What is imported.
    pub ty: EntityType,
}

/// The kind and index of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportIndex {
    /// Function index.
    Func(u32),
    /// Table index.
    Table(u32),
    /// Memory index.
    Memory(u32),
    /// Global index.
    Global(u32),
    /// Tag index.
    Tag(u32),
}

/// One export.
#[derive(Debug, Clone)]
pub struct Export {
    /// Export name.
    pub name: String,
    /// What is exported.
    pub index: ExportIndex,
}

/// One operator of a constant expression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConstOp {
    /// `i32.const`.
    I32Const(i32),
    /// `i64.const`.
    I64Const(i64),
    /// `f32.const`, as bits.
    F32Const(u32),
    /// `f64.const`, as bits.
    F64Const(u64),
    /// `v128.const`.
    V128Const(u128),
    /// `global.get`.
    GlobalGet(u32),
    /// `ref.null`.
    RefNull(RefType),
    /// `ref.func`.
    RefFunc(u32),
    /// `ref.i31` (GC).
    RefI31,
    /// `struct.new $t`, by module type index (GC).
    StructNew(u32),
    /// `struct.new_default $t` (GC).
    StructNewDefault(u32),
    /// `array.new $t` (GC).
    ArrayNew(u32),
    /// `array.new_default $t` (GC).
    ArrayNewDefault(u32),
    /// `array.new_fixed $t n` (GC).
    ArrayNewFixed(u32, u32),
    /// `any.convert_extern` (GC).
    AnyConvertExtern,
    /// `extern.convert_any` (GC).
    ExternConvertAny,
    /// `i32.add` (extended constants).
    I32Add,
    /// `i32.sub`.
    I32Sub,
    /// `i32.mul`.
    I32Mul,
    /// `i64.add`.
    I64Add,
    /// `i64.sub`.
    I64Sub,
    /// `i64.mul`.
    I64Mul,
}

/// A constant expression, evaluated by the runtime at instantiation as a
/// little stack machine. Validation guarantees it leaves exactly one value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConstExpr {
    /// Operators in order.
    pub ops: Vec<ConstOp>,
}

/// How an element segment is used.
#[derive(Debug, Clone, PartialEq)]
pub enum ElemMode {
    /// Copied into a table at instantiation, then dropped.
    Active {
        /// Table index.
        table: u32,
        /// Offset expression.
        offset: ConstExpr,
    },
    /// Available to `table.init` until `elem.drop`.
    Passive,
    /// Only declares functions referenced by `ref.func`; dropped at once.
    Declared,
}

/// An element segment. Every item is a constant expression (a function index
/// item `f` is stored as `[RefFunc(f)]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ElemSegment {
    /// Mode.
    pub mode: ElemMode,
    /// Element type.
    pub ty: RefType,
    /// Items.
    pub items: Vec<ConstExpr>,
}

/// How a data segment is used.
#[derive(Debug, Clone, PartialEq)]
pub enum DataMode {
    /// Copied into a memory at instantiation, then dropped.
    Active {
        /// Memory index.
        memory: u32,
        /// Offset expression.
        offset: ConstExpr,
    },
    /// Available to `memory.init` until `data.drop`.
    Passive,
}

/// A data segment.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSegment {
    /// Mode.
    pub mode: DataMode,
    /// The bytes.
    pub bytes: Arc<[u8]>,
}

/// Everything the runtime needs to know about a module besides its code.
///
/// Index spaces (functions, tables, memories, globals) list imports first,
/// then definitions, as in the wasm spec.
#[derive(Debug, Clone, Default)]
pub struct ModuleInfo {
    /// The type section. A struct or array type (GC) is here as an empty
    /// function type with its `ref_key`; [`ModuleInfo::type_defs`] says
    /// what it is.
    pub types: Vec<FuncType>,
    /// What each entry of `types` defines (kind, supertypes), GC.
    pub type_defs: Vec<TypeDef>,
    /// Engine-wide canonical id of each entry of `types`.
    pub type_ids: Vec<u32>,
    /// Type index of every function.
    pub funcs: Vec<u32>,
    /// How many of `funcs` are imported.
    pub num_imported_funcs: u32,
    /// Every table.
    pub tables: Vec<TableType>,
    /// How many of `tables` are imported.
    pub num_imported_tables: u32,
    /// Every memory.
    pub memories: Vec<MemoryType>,
    /// How many of `memories` are imported.
    pub num_imported_memories: u32,
    /// Every global.
    pub globals: Vec<GlobalType>,
    /// How many of `globals` are imported.
    pub num_imported_globals: u32,
    /// Every exception tag (imported first), as the index into `types` of
    /// its payload's function type.
    pub tags: Vec<u32>,
    /// How many of `tags` are imported.
    pub num_imported_tags: u32,
    /// Initialisers of the defined globals (`globals[num_imported_globals..]`).
    pub global_inits: Vec<ConstExpr>,
    /// Initialisers of the defined tables (`tables[num_imported_tables..]`):
    /// `None` fills a table with null, `Some` with the expression's value
    /// (typed function references).
    pub table_inits: Vec<Option<ConstExpr>>,
    /// Imports in order.
    pub imports: Vec<Import>,
    /// Exports in order.
    pub exports: Vec<Export>,
    /// The start function.
    pub start: Option<u32>,
    /// Element segments.
    pub elements: Vec<ElemSegment>,
    /// Data segments.
    pub data: Vec<DataSegment>,
    /// Function names from the name section, by function index.
    pub func_names: Vec<(u32, String)>,
    /// Layout of this module's vmctx.
    pub offsets: VMOffsets,
}

impl ModuleInfo {
    /// The type of function `index`.
    pub fn func_type(&self, index: u32) -> &FuncType {
        &self.types[self.funcs[index as usize] as usize]
    }

    /// The name of function `index` from the name section, if any.
    pub fn func_name(&self, index: u32) -> Option<&str> {
        self.func_names
            .binary_search_by_key(&index, |(i, _)| *i)
            .ok()
            .map(|i| self.func_names[i].1.as_str())
    }
}
