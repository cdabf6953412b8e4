//! Parsing and validating a module into a [`ModuleInfo`] plus its function
//! bodies.

use crate::abi::VMOffsets;
use crate::error::{CompileError, CompileErrorKind};
use crate::types::*;
use std::sync::Arc;
use wasmparser::{
    BinaryReaderError, ExternalKind, FunctionBody, Parser, Payload, TypeRef, ValidPayload,
    Validator, WasmFeatures,
};

/// A parsed, validated module: its description and the bodies of its
/// defined functions (in order).
pub(crate) struct ParsedModule<'a> {
    pub info: ModuleInfo,
    pub bodies: Vec<FunctionBody<'a>>,
}

/// The features faaslet accepts: WebAssembly 2.0 (SIMD included), plus
/// extended constant expressions.
pub(crate) fn features() -> WasmFeatures {
    WasmFeatures::WASM2
        .union(WasmFeatures::EXTENDED_CONST)
        .union(WasmFeatures::TAIL_CALL)
        .union(WasmFeatures::THREADS)
}

/// The features a compiler with `config` accepts: [`features`] plus the
/// WebAssembly 3.0 proposals the configuration switches on.
pub(crate) fn config_features(config: &crate::CompileConfig) -> WasmFeatures {
    let mut features = features();
    if config.multi_memory {
        features |= WasmFeatures::MULTI_MEMORY;
    }
    if config.relaxed_simd {
        features |= WasmFeatures::RELAXED_SIMD;
    }
    if config.function_references {
        // Also wasmparser's GC feature, for the parts of WebAssembly 3.0's
        // type system that typed function references use: explicit
        // recursion groups, `sub final` declarations, and `global.get` of
        // an immutable defined global in constant expressions. What GC
        // adds beyond that is refused when the module is parsed or
        // translated, as unsupported: struct and array types, declared
        // subtypes, heap types other than func/extern (`any`, `eq`, `i31`,
        // ...), and the GC instructions.
        features |= WasmFeatures::FUNCTION_REFERENCES | WasmFeatures::GC;
    }
    if config.memory64 {
        features |= WasmFeatures::MEMORY64;
    }
    if config.exceptions {
        features |= WasmFeatures::EXCEPTIONS;
    }
    features
}

/// The value type of `t` as far as code generation needs it: every
/// reference is an i64, so a concrete heap type is reported as `funcref`
/// whatever it names. The parser, which must tell function references from
/// GC ones (the host sees them as different values), uses [`TypeCtx`].
pub(crate) fn val_type(t: wasmparser::ValType) -> Result<ValType, CompileError> {
    TypeCtx::CODEGEN.val_type(t)
}

/// What the parser knows of the module's types when it converts a value
/// type: which type indices are function types.
#[derive(Clone, Copy)]
pub(crate) struct TypeCtx<'a> {
    /// The definitions of the module's earlier types.
    defs: &'a [TypeDef],
    /// The recursion group being parsed (only its kinds are set), whose
    /// first type has module index `group_start`.
    group: &'a [TypeDef],
    /// Module index of the first type of the group being parsed.
    group_start: u32,
    /// Whether GC types and heap types are accepted.
    gc: bool,
}

impl<'a> TypeCtx<'a> {
    /// For code generation only (see [`val_type`]).
    const CODEGEN: TypeCtx<'static> = TypeCtx {
        defs: &[],
        group: &[],
        group_start: 0,
        gc: true,
    };

    /// The definition of module type `i`, if known.
    fn def(&self, i: u32) -> Option<&'a TypeDef> {
        match i.checked_sub(self.group_start) {
            Some(rel) if !self.group.is_empty() => self.group.get(rel as usize),
            _ => self.defs.get(i as usize),
        }
    }

    /// Whether type index `idx` names a struct or array type.
    fn is_gc_index(&self, idx: wasmparser::UnpackedIndex) -> bool {
        let i = match idx {
            wasmparser::UnpackedIndex::Module(i) => i,
            wasmparser::UnpackedIndex::RecGroup(i) => self.group_start + i,
            _ => return false,
        };
        self.def(i)
            .is_some_and(|d| !matches!(d.kind, CompositeKind::Func))
    }

    pub(crate) fn val_type(&self, t: wasmparser::ValType) -> Result<ValType, CompileError> {
        Ok(match t {
            wasmparser::ValType::I32 => ValType::I32,
            wasmparser::ValType::I64 => ValType::I64,
            wasmparser::ValType::F32 => ValType::F32,
            wasmparser::ValType::F64 => ValType::F64,
            wasmparser::ValType::V128 => ValType::V128,
            wasmparser::ValType::Ref(r) => self.ref_type(r)?.into(),
        })
    }

    pub(crate) fn ref_type(&self, r: wasmparser::RefType) -> Result<RefType, CompileError> {
        // Every reference to a function (`funcref`, `(ref $t)`, `nofunc`,
        // nullable or not) is a `VMFuncRef` pointer at run time, 0 for
        // null; every external reference a host handle; every reference of
        // GC's `any` hierarchy a tagged i64 (`types::gc_ref`). Nullability
        // and concrete types matter only to validation (wasmparser's), to
        // type identity (`FuncType::ref_key`) and to casts.
        self.heap_ref_type(r.heap_type())
    }

    pub(crate) fn heap_ref_type(&self, h: wasmparser::HeapType) -> Result<RefType, CompileError> {
        use wasmparser::{AbstractHeapType as A, HeapType};
        match h {
            HeapType::Abstract {
                shared: false,
                ty: A::Func | A::NoFunc,
            } => Ok(RefType::Func),
            HeapType::Abstract {
                shared: false,
                ty: A::Extern | A::NoExtern,
            } => Ok(RefType::Extern),
            HeapType::Abstract {
                shared: false,
                ty: A::Exn | A::NoExn,
            } => Ok(RefType::Exn),
            HeapType::Abstract {
                shared: false,
                ty: A::Any | A::Eq | A::I31 | A::Struct | A::Array | A::None,
            } if self.gc => Ok(RefType::Any),
            HeapType::Concrete(i) if self.is_gc_index(i) => Ok(RefType::Any),
            HeapType::Concrete(_) => Ok(RefType::Func),
            other => Err(CompileError::unsupported(format!(
                "heap type {other:?} is not supported"
            ))),
        }
    }

    fn storage(&self, t: wasmparser::StorageType) -> Result<StorageType, CompileError> {
        Ok(match t {
            wasmparser::StorageType::I8 => StorageType::I8,
            wasmparser::StorageType::I16 => StorageType::I16,
            wasmparser::StorageType::Val(v) => StorageType::Val(self.val_type(v)?),
        })
    }

    fn field(&self, f: &wasmparser::FieldType) -> Result<FieldType, CompileError> {
        Ok(FieldType {
            storage: self.storage(f.element_type)?,
            mutable: f.mutable,
        })
    }
}

/// Lays out a struct's fields after the 8-byte object header: each at the
/// next offset aligned to its size (at most 8), the whole rounded up to 8.
/// `None` if the object would exceed [`crate::gc_layout::MAX_OBJECT_BYTES`].
fn struct_layout(fields: &[FieldType]) -> Option<(Vec<u32>, u32)> {
    let mut offsets = Vec::with_capacity(fields.len());
    let mut at: u32 = crate::gc_layout::HEADER_BYTES;
    for f in fields {
        let size = f.storage.size();
        let align = size.min(8);
        at = at.checked_add(align - 1)? & !(align - 1);
        offsets.push(at);
        at = at.checked_add(size)?;
    }
    let size = at.checked_add(7)? & !7;
    (size <= crate::gc_layout::MAX_OBJECT_BYTES).then_some((offsets, size))
}

/// Appends the `FuncType::ref_key` code of value type `t` to `out`. The
/// recursion group being keyed starts at module type index `group_start`
/// and holds `group_len` types; `type_ids` are the engine-wide ids of the
/// module's earlier types.
fn key_val_type(
    t: wasmparser::ValType,
    group_start: u32,
    group_len: u32,
    type_ids: &[u32],
    out: &mut Vec<u32>,
) -> Result<(), CompileError> {
    use wasmparser::{AbstractHeapType as A, HeapType, UnpackedIndex};
    let number = match t {
        wasmparser::ValType::I32 => Some(1),
        wasmparser::ValType::I64 => Some(2),
        wasmparser::ValType::F32 => Some(3),
        wasmparser::ValType::F64 => Some(4),
        wasmparser::ValType::V128 => Some(5),
        wasmparser::ValType::Ref(_) => None,
    };
    let r = match (t, number) {
        (wasmparser::ValType::Ref(r), _) => r,
        (_, code) => {
            out.extend(code);
            return Ok(());
        }
    };
    let nullable = u32::from(r.is_nullable()) << 8;
    let concrete = |idx: UnpackedIndex, out: &mut Vec<u32>| -> Result<(), CompileError> {
        let in_group = |i: u32| i.checked_sub(group_start).filter(|r| *r < group_len);
        match idx {
            UnpackedIndex::RecGroup(i) => out.extend([0x2000 | nullable, i]),
            UnpackedIndex::Module(i) => match in_group(i) {
                Some(rel) => out.extend([0x2000 | nullable, rel]),
                None => {
                    // A forward reference out of the group is invalid:
                    // the validator, which sees this section next,
                    // reports it.
                    let id = type_ids.get(i as usize).copied().ok_or_else(|| {
                        CompileError::new(CompileErrorKind::Invalid, "unknown type")
                    })?;
                    out.extend([0x3000 | nullable, id]);
                }
            },
            _ => return Err(CompileError::unsupported("type identifiers")),
        }
        Ok(())
    };
    match r.heap_type() {
        HeapType::Abstract { shared: false, ty } => {
            let code = match ty {
                A::Func => 1,
                A::Extern => 2,
                A::NoFunc => 3,
                A::NoExtern => 4,
                A::Exn => 5,
                A::NoExn => 6,
                A::Any => 7,
                A::Eq => 8,
                A::I31 => 9,
                A::Struct => 10,
                A::Array => 11,
                A::None => 12,
                other => {
                    return Err(CompileError::unsupported(format!(
                        "heap type {other:?} is not supported"
                    )))
                }
            };
            out.push(0x1000 | nullable | code);
        }
        HeapType::Concrete(idx) => concrete(idx, out)?,
        other => {
            return Err(CompileError::unsupported(format!(
                "heap type {other:?} is not supported"
            )))
        }
    }
    Ok(())
}

/// Whether `t` is a WebAssembly 2.0 value type (no typed reference).
fn is_plain(t: &wasmparser::ValType) -> bool {
    match t {
        wasmparser::ValType::Ref(r) => {
            *r == wasmparser::RefType::FUNCREF || *r == wasmparser::RefType::EXTERNREF
        }
        _ => true,
    }
}

/// Appends the key code of a field type.
fn key_field(
    f: &wasmparser::FieldType,
    group_start: u32,
    group_len: u32,
    type_ids: &[u32],
    out: &mut Vec<u32>,
) -> Result<(), CompileError> {
    out.push(u32::from(f.mutable));
    match f.element_type {
        wasmparser::StorageType::I8 => out.push(6),
        wasmparser::StorageType::I16 => out.push(7),
        wasmparser::StorageType::Val(v) => key_val_type(v, group_start, group_len, type_ids, out)?,
    }
    Ok(())
}

/// The `FuncType::ref_key` of each type of recursion group `group`, whose
/// first type has module index `group_start`: `None` for every type of a
/// group of one plain, final function type without a declared supertype,
/// else the whole group's structure (kinds, finality, supertypes, fields,
/// parameters and results) followed by the type's position in it
/// (iso-recursive canonicalisation: two types get the same key exactly
/// when the specification calls them equivalent).
fn rec_group_keys(
    group: &wasmparser::RecGroup,
    group_start: u32,
    type_ids: &[u32],
    gc: bool,
) -> Result<Vec<Option<Arc<[u32]>>>, CompileError> {
    use wasmparser::CompositeInnerType as C;
    let n = group.types().len() as u32;
    if !gc {
        if group.types().any(|t| !t.supertype_idxs.is_empty()) {
            return Err(CompileError::unsupported(
                "declared subtypes of function types (GC)",
            ));
        }
        if group
            .types()
            .any(|t| !matches!(t.composite_type.inner, C::Func(_)))
        {
            return Err(CompileError::unsupported("non-function types (GC)"));
        }
    }
    // `(rec (type $t ...))` is the same group as `(type $t ...)`.
    let plain = n == 1
        && group.types().all(|t| {
            t.is_final
                && t.supertype_idxs.is_empty()
                && match &t.composite_type.inner {
                    C::Func(f) => f.params().iter().chain(f.results()).all(is_plain),
                    _ => false,
                }
        });
    if plain {
        return Ok(vec![None; n as usize]);
    }
    let mut s = vec![n];
    for sub in group.types() {
        s.push(u32::from(sub.is_final));
        match sub.supertype_idxs.first().and_then(|i| i.as_module_index()) {
            None => s.push(0),
            Some(i) => match i.checked_sub(group_start).filter(|r| *r < n) {
                Some(rel) => s.extend([1, rel]),
                None => {
                    let id = type_ids.get(i as usize).copied().ok_or_else(|| {
                        CompileError::new(CompileErrorKind::Invalid, "unknown type")
                    })?;
                    s.extend([2, id]);
                }
            },
        }
        match &sub.composite_type.inner {
            C::Func(f) => {
                s.push(0);
                s.push(f.params().len() as u32);
                s.push(f.results().len() as u32);
                for t in f.params().iter().chain(f.results()) {
                    key_val_type(*t, group_start, n, type_ids, &mut s)?;
                }
            }
            C::Struct(st) => {
                s.push(1);
                s.push(st.fields.len() as u32);
                for f in st.fields.iter() {
                    key_field(f, group_start, n, type_ids, &mut s)?;
                }
            }
            C::Array(a) => {
                s.push(2);
                key_field(&a.0, group_start, n, type_ids, &mut s)?;
            }
            _ => return Err(CompileError::unsupported("continuation types")),
        }
    }
    Ok((0..n)
        .map(|k| {
            let mut key = s.clone();
            key.push(k);
            Some(Arc::from(key))
        })
        .collect())
}

/// The [`TypedRef`] of `r` if it is not plain `funcref` / `externref`.
/// `type_ids` are the engine-wide ids of the module's types; an index
/// beyond them is invalid, and the validator (which sees the section
/// next) reports it.
fn typed_ref(
    r: wasmparser::RefType,
    type_ids: &[u32],
    ctx: TypeCtx<'_>,
) -> Result<Option<TypedRef>, CompileError> {
    use wasmparser::{AbstractHeapType as A, HeapType};
    let plain = TypedRef::plain(ctx.ref_type(r)?);
    let heap = match r.heap_type() {
        HeapType::Abstract { ty: A::Func, .. } => HeapKind::Func,
        HeapType::Abstract { ty: A::NoFunc, .. } => HeapKind::NoFunc,
        HeapType::Abstract { ty: A::Extern, .. } => HeapKind::Extern,
        HeapType::Abstract {
            ty: A::NoExtern, ..
        } => HeapKind::NoExtern,
        HeapType::Abstract { ty: A::Exn, .. } => HeapKind::Exn,
        HeapType::Abstract { ty: A::NoExn, .. } => HeapKind::NoExn,
        HeapType::Abstract { ty: A::Any, .. } => HeapKind::Any,
        HeapType::Abstract { ty: A::Eq, .. } => HeapKind::Eq,
        HeapType::Abstract { ty: A::I31, .. } => HeapKind::I31,
        HeapType::Abstract { ty: A::Struct, .. } => HeapKind::Struct,
        HeapType::Abstract { ty: A::Array, .. } => HeapKind::Array,
        HeapType::Abstract { ty: A::None, .. } => HeapKind::None,
        HeapType::Concrete(i) => {
            let index = i
                .as_module_index()
                .filter(|i| (*i as usize) < type_ids.len())
                .ok_or_else(|| CompileError::new(CompileErrorKind::Invalid, "unknown type"))?;
            let id = type_ids[index as usize];
            match ctx.defs.get(index as usize).map(|d| &d.kind) {
                Some(CompositeKind::Struct { .. }) => HeapKind::ConcreteStruct(id),
                Some(CompositeKind::Array(_)) => HeapKind::ConcreteArray(id),
                _ => HeapKind::Concrete(id),
            }
        }
        _ => return Ok(None),
    };
    let t = TypedRef {
        nullable: r.is_nullable(),
        heap,
    };
    Ok((t != plain).then_some(t))
}

fn table_type(
    t: &wasmparser::TableType,
    type_ids: &[u32],
    ctx: TypeCtx<'_>,
) -> Result<TableType, CompileError> {
    if t.shared {
        return Err(CompileError::unsupported("shared tables"));
    }
    Ok(TableType {
        element: ctx.ref_type(t.element_type)?,
        minimum: t.initial,
        maximum: t.maximum,
        ref_type: typed_ref(t.element_type, type_ids, ctx)?,
        table64: t.table64,
    })
}

fn memory_type(t: &wasmparser::MemoryType) -> Result<MemoryType, CompileError> {
    if t.page_size_log2.is_some_and(|p| p != 16) {
        return Err(CompileError::unsupported("custom page sizes"));
    }
    Ok(MemoryType {
        minimum: t.initial,
        maximum: t.maximum,
        shared: t.shared,
        memory64: t.memory64,
    })
}

fn global_type(
    t: &wasmparser::GlobalType,
    type_ids: &[u32],
    ctx: TypeCtx<'_>,
) -> Result<GlobalType, CompileError> {
    if t.shared {
        return Err(CompileError::unsupported("shared globals"));
    }
    Ok(GlobalType {
        content: ctx.val_type(t.content_type)?,
        mutable: t.mutable,
        ref_type: match t.content_type {
            wasmparser::ValType::Ref(r) => typed_ref(r, type_ids, ctx)?,
            _ => None,
        },
    })
}

/// Converts a constant expression. Parse errors are `Malformed`.
fn const_expr(e: &wasmparser::ConstExpr<'_>, ctx: TypeCtx<'_>) -> Result<ConstExpr, CompileError> {
    use wasmparser::Operator as O;
    let mut reader = e.get_operators_reader();
    let mut ops = Vec::new();
    loop {
        let (op, offset) = reader.read_with_offset().map_err(CompileError::malformed)?;
        let c = match op {
            O::End => {
                // Trailing bytes after `end` are reported by the validator.
                return Ok(ConstExpr { ops });
            }
            O::I32Const { value } => ConstOp::I32Const(value),
            O::I64Const { value } => ConstOp::I64Const(value),
            O::F32Const { value } => ConstOp::F32Const(value.bits()),
            O::F64Const { value } => ConstOp::F64Const(value.bits()),
            O::V128Const { value } => ConstOp::V128Const(u128::from_le_bytes(*value.bytes())),
            O::GlobalGet { global_index } => ConstOp::GlobalGet(global_index),
            O::RefNull { hty } => ConstOp::RefNull(ctx.heap_ref_type(hty)?),
            O::RefFunc { function_index } => ConstOp::RefFunc(function_index),
            O::RefI31 if ctx.gc => ConstOp::RefI31,
            O::StructNew { struct_type_index } if ctx.gc => ConstOp::StructNew(struct_type_index),
            O::StructNewDefault { struct_type_index } if ctx.gc => {
                ConstOp::StructNewDefault(struct_type_index)
            }
            O::ArrayNew { array_type_index } if ctx.gc => ConstOp::ArrayNew(array_type_index),
            O::ArrayNewDefault { array_type_index } if ctx.gc => {
                ConstOp::ArrayNewDefault(array_type_index)
            }
            O::ArrayNewFixed {
                array_type_index,
                array_size,
            } if ctx.gc => ConstOp::ArrayNewFixed(array_type_index, array_size),
            O::AnyConvertExtern if ctx.gc => ConstOp::AnyConvertExtern,
            O::ExternConvertAny if ctx.gc => ConstOp::ExternConvertAny,
            O::I32Add => ConstOp::I32Add,
            O::I32Sub => ConstOp::I32Sub,
            O::I32Mul => ConstOp::I32Mul,
            O::I64Add => ConstOp::I64Add,
            O::I64Sub => ConstOp::I64Sub,
            O::I64Mul => ConstOp::I64Mul,
            // Not constant: the validator, which sees the section next,
            // rejects it (its error is the one reported). If it accepts
            // it, it is a constant operator of a proposal faaslet does not
            // implement (GC's `ref.i31`, `struct.new`, ...).
            other => {
                return Err(CompileError::unsupported(format!(
                    "constant expression operator {other:?}"
                ))
                .at(offset as usize));
            }
        };
        ops.push(c);
    }
}

/// Parses one recursion group of the type section into `info`: its types
/// (struct and array types as empty function types with their key), their
/// engine-wide ids and their [`TypeDef`]s.
fn parse_rec_group(
    group: &wasmparser::RecGroup,
    info: &mut ModuleInfo,
    type_id: &mut dyn FnMut(&FuncType) -> u32,
    gc: bool,
) -> Result<(), CompileError> {
    use wasmparser::CompositeInnerType as C;
    let group_start = info.types.len() as u32;
    let keys = rec_group_keys(group, group_start, &info.type_ids, gc)?;
    // The group's kinds first: its types may refer to each other.
    let mut group_defs = Vec::with_capacity(group.types().len());
    for sub in group.types() {
        group_defs.push(TypeDef {
            kind: match &sub.composite_type.inner {
                C::Func(_) => CompositeKind::Func,
                C::Struct(_) => CompositeKind::Struct {
                    fields: Arc::from(vec![]),
                    offsets: Arc::from(vec![]),
                    size: 0,
                },
                C::Array(_) => CompositeKind::Array(FieldType {
                    storage: StorageType::I8,
                    mutable: false,
                }),
                _ => return Err(CompileError::unsupported("continuation types")),
            },
            ..TypeDef::default()
        });
    }
    let earlier = std::mem::take(&mut info.type_defs);
    let ctx = TypeCtx {
        defs: &earlier,
        group: &group_defs,
        group_start,
        gc,
    };
    let mut parsed = Vec::with_capacity(group_defs.len());
    // (Every error of the group is returned after `type_defs` is put back.)
    let result = (|| -> Result<(), CompileError> {
        for (sub, ref_key) in group.types().zip(keys) {
            if sub.composite_type.shared {
                return Err(CompileError::unsupported("shared types"));
            }
            let (mut ty, kind) = match &sub.composite_type.inner {
                C::Func(ft) => (
                    FuncType::new(
                        ft.params()
                            .iter()
                            .map(|t| ctx.val_type(*t))
                            .collect::<Result<Vec<_>, _>>()?,
                        ft.results()
                            .iter()
                            .map(|t| ctx.val_type(*t))
                            .collect::<Result<Vec<_>, _>>()?,
                    ),
                    CompositeKind::Func,
                ),
                C::Struct(st) => {
                    let fields = st
                        .fields
                        .iter()
                        .map(|f| ctx.field(f))
                        .collect::<Result<Vec<_>, _>>()?;
                    let (offsets, size) = struct_layout(&fields)
                        .ok_or_else(|| CompileError::unsupported("struct type too large"))?;
                    (
                        FuncType::default(),
                        CompositeKind::Struct {
                            fields: fields.into(),
                            offsets: offsets.into(),
                            size,
                        },
                    )
                }
                C::Array(a) => (FuncType::default(), CompositeKind::Array(ctx.field(&a.0)?)),
                _ => return Err(CompileError::unsupported("continuation types")),
            };
            ty.ref_key = ref_key;
            let id = type_id(&ty);
            // A supertype precedes its subtypes (the validator, which sees
            // the section next, refuses anything else).
            let mut display: Vec<u32> = sub
                .supertype_idxs
                .first()
                .and_then(|i| i.as_module_index())
                .and_then(|i| match i.checked_sub(group_start) {
                    Some(rel) => parsed.get(rel as usize),
                    None => earlier.get(i as usize),
                })
                .map(|d: &TypeDef| d.display.to_vec())
                .unwrap_or_default();
            display.push(id);
            info.type_ids.push(id);
            info.types.push(ty);
            parsed.push(TypeDef {
                kind,
                is_final: sub.is_final,
                display: display.into(),
            });
        }
        Ok(())
    })();
    info.type_defs = earlier;
    info.type_defs.extend(parsed);
    result
}

/// Parses one section's payload into `info`/`bodies`. Errors from
/// wasmparser's readers are `Malformed`; anything this crate cannot
/// represent is `Unsupported`; semantic problems are left to the validator.
fn parse_payload<'a>(
    wasm: &'a [u8],
    payload: &Payload<'a>,
    info: &mut ModuleInfo,
    type_id: &mut dyn FnMut(&FuncType) -> u32,
    gc: bool,
) -> Result<(), CompileError> {
    let m = CompileError::malformed;
    // (A copy of the definitions, so `info` can be changed meanwhile:
    // one per section, and the type section does not use it.)
    let defs = match payload {
        Payload::TypeSection(_) => Vec::new(),
        _ => info.type_defs.clone(),
    };
    let ctx = TypeCtx {
        defs: &defs,
        group: &[],
        group_start: 0,
        gc,
    };
    match payload {
        Payload::TypeSection(reader) => {
            for group in reader.clone() {
                let group = group.map_err(m)?;
                parse_rec_group(&group, info, type_id, gc)?;
            }
        }
        Payload::ImportSection(reader) => {
            for import in reader.clone().into_imports() {
                let import = import.map_err(m)?;
                let ty = match import.ty {
                    TypeRef::Func(t) => {
                        info.funcs.push(t);
                        info.num_imported_funcs += 1;
                        EntityType::Func(t)
                    }
                    TypeRef::Table(t) => {
                        let t = table_type(&t, &info.type_ids, ctx)?;
                        info.tables.push(t);
                        info.num_imported_tables += 1;
                        EntityType::Table(t)
                    }
                    TypeRef::Memory(t) => {
                        let t = memory_type(&t)?;
                        info.memories.push(t);
                        info.num_imported_memories += 1;
                        EntityType::Memory(t)
                    }
                    TypeRef::Tag(t) => {
                        info.tags.push(t.func_type_idx);
                        info.num_imported_tags += 1;
                        EntityType::Tag(t.func_type_idx)
                    }
                    TypeRef::Global(t) => {
                        let t = global_type(&t, &info.type_ids, ctx)?;
                        info.globals.push(t);
                        info.num_imported_globals += 1;
                        EntityType::Global(t)
                    }
                    other => {
                        return Err(CompileError::unsupported(format!(
                            "import of kind {other:?}"
                        )));
                    }
                };
                info.imports.push(Import {
                    module: import.module.to_string(),
                    name: import.name.to_string(),
                    ty,
                });
            }
        }
        Payload::FunctionSection(reader) => {
            for f in reader.clone() {
                info.funcs.push(f.map_err(m)?);
            }
        }
        Payload::TableSection(reader) => {
            for t in reader.clone() {
                let t = t.map_err(m)?;
                info.table_inits.push(match &t.init {
                    wasmparser::TableInit::RefNull => None,
                    wasmparser::TableInit::Expr(e) => Some(const_expr(e, ctx)?),
                });
                info.tables.push(table_type(&t.ty, &info.type_ids, ctx)?);
            }
        }
        Payload::MemorySection(reader) => {
            check_memory_limits(wasm, reader.range()).map_err(m)?;
            for t in reader.clone() {
                info.memories.push(memory_type(&t.map_err(m)?)?);
            }
        }
        Payload::UnknownSection { id, range, .. } => {
            return Err(CompileError::new(
                CompileErrorKind::Malformed,
                format!("malformed section id: {id}"),
            )
            .at(range.start as usize));
        }
        Payload::TagSection(reader) => {
            for t in reader.clone() {
                info.tags.push(t.map_err(m)?.func_type_idx);
            }
        }
        Payload::GlobalSection(reader) => {
            for g in reader.clone() {
                let g = g.map_err(m)?;
                info.globals.push(global_type(&g.ty, &info.type_ids, ctx)?);
                info.global_inits.push(const_expr(&g.init_expr, ctx)?);
            }
        }
        Payload::ExportSection(reader) => {
            for e in reader.clone() {
                let e = e.map_err(m)?;
                let index = match e.kind {
                    ExternalKind::Func => ExportIndex::Func(e.index),
                    ExternalKind::Table => ExportIndex::Table(e.index),
                    ExternalKind::Memory => ExportIndex::Memory(e.index),
                    ExternalKind::Global => ExportIndex::Global(e.index),
                    ExternalKind::Tag => ExportIndex::Tag(e.index),
                    other => {
                        return Err(CompileError::unsupported(format!(
                            "export of kind {other:?}"
                        )));
                    }
                };
                info.exports.push(Export {
                    name: e.name.to_string(),
                    index,
                });
            }
        }
        Payload::StartSection { func, .. } => info.start = Some(*func),
        Payload::ElementSection(reader) => {
            for e in reader.clone() {
                let e = e.map_err(m)?;
                let mode = match &e.kind {
                    wasmparser::ElementKind::Passive => ElemMode::Passive,
                    wasmparser::ElementKind::Declared => ElemMode::Declared,
                    wasmparser::ElementKind::Active {
                        table_index,
                        offset_expr,
                    } => ElemMode::Active {
                        table: table_index.unwrap_or(0),
                        offset: const_expr(offset_expr, ctx)?,
                    },
                };
                let (ty, items) = match &e.items {
                    wasmparser::ElementItems::Functions(r) => {
                        let mut items = Vec::new();
                        for f in r.clone() {
                            items.push(ConstExpr {
                                ops: vec![ConstOp::RefFunc(f.map_err(m)?)],
                            });
                        }
                        (RefType::Func, items)
                    }
                    wasmparser::ElementItems::Expressions(rt, r) => {
                        let mut items = Vec::new();
                        for x in r.clone() {
                            items.push(const_expr(&x.map_err(m)?, ctx)?);
                        }
                        (ctx.ref_type(*rt)?, items)
                    }
                };
                info.elements.push(ElemSegment { mode, ty, items });
            }
        }
        Payload::DataSection(reader) => {
            for d in reader.clone() {
                let d = d.map_err(m)?;
                let mode = match &d.kind {
                    wasmparser::DataKind::Passive => DataMode::Passive,
                    wasmparser::DataKind::Active {
                        memory_index,
                        offset_expr,
                    } => DataMode::Active {
                        memory: *memory_index,
                        offset: const_expr(offset_expr, ctx)?,
                    },
                };
                info.data.push(DataSegment {
                    mode,
                    bytes: Arc::from(d.data),
                });
            }
        }
        Payload::CustomSection(reader) => {
            // Custom sections never make a module fail: ignore bad names.
            if let wasmparser::KnownCustom::Name(names) = reader.as_known() {
                for name in names {
                    let Ok(wasmparser::Name::Function(map)) = name else {
                        continue;
                    };
                    for naming in map.into_iter().flatten() {
                        info.func_names
                            .push((naming.index, naming.name.to_string()));
                    }
                }
            }
        }
        Payload::CodeSectionEntry(body) => {
            // Decode every operator up front so encoding errors are
            // reported as malformed rather than invalid.
            let mut locals = body.get_locals_reader().map_err(m)?;
            for _ in 0..locals.get_count() {
                locals.read().map_err(m)?;
            }
            let mut ops = body.get_operators_reader().map_err(m)?;
            while !ops.eof() {
                ops.read().map_err(m)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// wasmparser reads the limits of 32-bit memories as u64 LEBs and so
/// accepts over-long encodings; the spec requires at most 5 bytes (u32).
fn check_memory_limits(wasm: &[u8], range: std::ops::Range<u64>) -> Result<(), BinaryReaderError> {
    let bytes = &wasm[range.start as usize..range.end as usize];
    let mut r = wasmparser::BinaryReader::new(bytes, range.start);
    let count = r.read_var_u32()?;
    for _ in 0..count {
        let flags = r.read_var_u32()?;
        let is64 = flags & 0x4 != 0;
        let limit = |r: &mut wasmparser::BinaryReader<'_>| -> Result<(), BinaryReaderError> {
            if is64 {
                r.read_var_u64()?;
            } else {
                r.read_var_u32()?;
            }
            Ok(())
        };
        limit(&mut r)?;
        if flags & 0x1 != 0 {
            limit(&mut r)?;
        }
        if flags & 0x8 != 0 {
            r.read_var_u32()?;
        }
    }
    Ok(())
}

fn section_name(p: &Payload<'_>) -> Option<&'static str> {
    Some(match p {
        Payload::Version { .. } => "header",
        Payload::TypeSection(_) => "type",
        Payload::ImportSection(_) => "import",
        Payload::FunctionSection(_) => "function",
        Payload::TableSection(_) => "table",
        Payload::MemorySection(_) => "memory",
        Payload::TagSection(_) => "tag",
        Payload::GlobalSection(_) => "global",
        Payload::ExportSection(_) => "export",
        Payload::StartSection { .. } => "start",
        Payload::ElementSection(_) => "element",
        Payload::DataCountSection { .. } => "data count",
        Payload::DataSection(_) => "data",
        Payload::CodeSectionStart { .. } | Payload::CodeSectionEntry(_) => "code",
        Payload::CustomSection(_) => "custom",
        _ => return None,
    })
}

/// The validator reports some encoding errors that the spec calls
/// malformed: reclassify by message.
fn classify(e: BinaryReaderError) -> CompileError {
    let msg = e.message();
    const MALFORMED: &[&str] = &[
        "malformed",
        "zero byte expected",
        "integer too large",
        "integer representation too long",
        "data count section required",
        "control frames remain at end of function body",
        "unexpected end",
        "section size mismatch",
    ];
    if MALFORMED.iter().any(|m| msg.contains(m)) {
        CompileError::malformed(e)
    } else {
        CompileError::invalid(e)
    }
}

/// Parses and validates `wasm`. With `validate_bodies` off, function
/// bodies are not validated (only the module's structure is): for wasm
/// whose code was compiled, after full validation, into an artefact that
/// is being loaded instead.
pub(crate) fn parse_module<'a>(
    wasm: &'a [u8],
    config: &crate::CompileConfig,
    validate_bodies: bool,
    type_id: &mut dyn FnMut(&FuncType) -> u32,
) -> Result<ParsedModule<'a>, CompileError> {
    let mut info = ModuleInfo::default();
    let mut bodies = Vec::new();
    let features = config_features(config);
    let mut validator = Validator::new_with_features(features);
    let mut allocs = wasmparser::FuncValidatorAllocations::default();
    let mut last_section = None;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e: BinaryReaderError| {
            let err = CompileError::malformed(e);
            match last_section {
                Some(s) => err.in_section(s),
                None => err,
            }
        })?;
        let section = section_name(&payload);
        last_section = section.or(last_section);
        let func_index = if let Payload::CodeSectionEntry(_) = payload {
            Some(info.num_imported_funcs + bodies.len() as u32)
        } else {
            None
        };
        let locate = |e: CompileError| {
            let e = match section {
                Some(s) => e.in_section(s),
                None => e,
            };
            match func_index {
                Some(f) => e.in_func(f),
                None => e,
            }
        };
        let parsed = parse_payload(wasm, &payload, &mut info, type_id, config.gc);
        if let Err(e) = &parsed {
            if e.kind == CompileErrorKind::Malformed && !e.message.contains("atomic ordering") {
                return Err(locate(e.clone()));
            }
        }
        let valid = validator
            .payload(&payload)
            .map_err(|e| locate(classify(e)))?;
        parsed.map_err(|mut e| {
            if e.message.contains("atomic ordering") {
                // An alignment exponent >= 32 decodes as an ordering flag;
                // the spec calls the alignment invalid.
                e.kind = CompileErrorKind::Invalid;
            }
            locate(e)
        })?;
        match valid {
            ValidPayload::Func(_, body) if !validate_bodies => bodies.push(body),
            ValidPayload::Func(func, body) => {
                let mut fv = func.into_validator(std::mem::take(&mut allocs));
                fv.validate(&body).map_err(|e| locate(classify(e)))?;
                allocs = fv.into_allocations();
                bodies.push(body);
            }
            ValidPayload::End(_) => break,
            _ => {}
        }
    }
    if info.funcs.len() != info.num_imported_funcs as usize + bodies.len() {
        return Err(CompileError::new(
            CompileErrorKind::Malformed,
            "function and code section have inconsistent lengths",
        ));
    }
    info.func_names.sort_by_key(|(i, _)| *i);
    info.func_names.dedup_by_key(|(i, _)| *i);
    info.offsets = VMOffsets {
        num_memories: info.memories.len() as u32,
        num_tables: info.tables.len() as u32,
        num_globals: info.globals.len() as u32,
        num_funcs: info.funcs.len() as u32,
        num_tags: info.tags.len() as u32,
    };
    Ok(ParsedModule { info, bodies })
}
