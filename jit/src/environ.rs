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

pub(crate) fn val_type(t: wasmparser::ValType) -> Result<ValType, CompileError> {
    Ok(match t {
        wasmparser::ValType::I32 => ValType::I32,
        wasmparser::ValType::I64 => ValType::I64,
        wasmparser::ValType::F32 => ValType::F32,
        wasmparser::ValType::F64 => ValType::F64,
        wasmparser::ValType::V128 => ValType::V128,
        wasmparser::ValType::Ref(r) => ref_type(r)?.into(),
    })
}

pub(crate) fn ref_type(r: wasmparser::RefType) -> Result<RefType, CompileError> {
    // Every reference to a function (`funcref`, `(ref $t)`, `nofunc`,
    // nullable or not) is a `VMFuncRef` pointer at run time, 0 for null;
    // every external reference a host handle. Nullability and concrete
    // types matter only to validation (wasmparser's) and to function type
    // identity (`FuncType::ref_key`).
    heap_ref_type(r.heap_type())
}

pub(crate) fn heap_ref_type(h: wasmparser::HeapType) -> Result<RefType, CompileError> {
    use wasmparser::{AbstractHeapType, HeapType};
    match h {
        HeapType::Abstract {
            shared: false,
            ty: AbstractHeapType::Func | AbstractHeapType::NoFunc,
        } => Ok(RefType::Func),
        HeapType::Abstract {
            shared: false,
            ty: AbstractHeapType::Extern | AbstractHeapType::NoExtern,
        } => Ok(RefType::Extern),
        HeapType::Abstract {
            shared: false,
            ty: AbstractHeapType::Exn | AbstractHeapType::NoExn,
        } => Ok(RefType::Exn),
        // Only function types are accepted in the type section (GC's
        // struct and array types are refused there), so a concrete heap
        // type is a function type.
        HeapType::Concrete(_) => Ok(RefType::Func),
        other => Err(CompileError::unsupported(format!(
            "heap type {other:?} is not supported"
        ))),
    }
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

/// The `FuncType::ref_key` of each type of recursion group `group`, whose
/// first type has module index `group_start`: `None` for every type of a
/// group of one plain type, else the whole group's structure followed by
/// the type's position in it.
fn rec_group_keys(
    group: &wasmparser::RecGroup,
    group_start: u32,
    type_ids: &[u32],
) -> Result<Vec<Option<Arc<[u32]>>>, CompileError> {
    let n = group.types().len() as u32;
    if group.types().any(|t| !t.supertype_idxs.is_empty()) {
        return Err(CompileError::unsupported(
            "declared subtypes of function types (GC)",
        ));
    }
    let funcs: Vec<&wasmparser::FuncType> = group
        .types()
        .filter_map(|t| match &t.composite_type.inner {
            wasmparser::CompositeInnerType::Func(f) => Some(f),
            _ => None,
        })
        .collect();
    // `(rec (type $t ...))` is the same group as `(type $t ...)`.
    let plain = n == 1
        && group.types().all(|t| t.is_final)
        && funcs
            .iter()
            .all(|f| f.params().iter().chain(f.results()).all(is_plain));
    if plain {
        return Ok(vec![None; n as usize]);
    }
    let mut structure = vec![n];
    for (f, sub) in funcs.iter().zip(group.types()) {
        structure.push(u32::from(sub.is_final));
        structure.push(f.params().len() as u32);
        structure.push(f.results().len() as u32);
        for t in f.params().iter().chain(f.results()) {
            key_val_type(*t, group_start, n, type_ids, &mut structure)?;
        }
    }
    Ok((0..n)
        .map(|k| {
            let mut key = structure.clone();
            key.push(k);
            Some(Arc::from(key))
        })
        .collect())
}

/// The [`TypedRef`] of `r` if it is not plain `funcref` / `externref`.
/// `type_ids` are the engine-wide ids of the module's types; an index
/// beyond them is invalid, and the validator (which sees the section
/// next) reports it.
fn typed_ref(r: wasmparser::RefType, type_ids: &[u32]) -> Result<Option<TypedRef>, CompileError> {
    use wasmparser::{AbstractHeapType as A, HeapType};
    let plain = TypedRef::plain(ref_type(r)?);
    let heap = match r.heap_type() {
        HeapType::Abstract { ty: A::Func, .. } => HeapKind::Func,
        HeapType::Abstract { ty: A::NoFunc, .. } => HeapKind::NoFunc,
        HeapType::Abstract { ty: A::Extern, .. } => HeapKind::Extern,
        HeapType::Abstract {
            ty: A::NoExtern, ..
        } => HeapKind::NoExtern,
        HeapType::Abstract { ty: A::Exn, .. } => HeapKind::Exn,
        HeapType::Abstract { ty: A::NoExn, .. } => HeapKind::NoExn,
        HeapType::Concrete(i) => {
            let id = i
                .as_module_index()
                .and_then(|i| type_ids.get(i as usize).copied())
                .ok_or_else(|| CompileError::new(CompileErrorKind::Invalid, "unknown type"))?;
            HeapKind::Concrete(id)
        }
        _ => return Ok(None),
    };
    let t = TypedRef {
        nullable: r.is_nullable(),
        heap,
    };
    Ok((t != plain).then_some(t))
}

fn table_type(t: &wasmparser::TableType, type_ids: &[u32]) -> Result<TableType, CompileError> {
    if t.shared {
        return Err(CompileError::unsupported("shared tables"));
    }
    Ok(TableType {
        element: ref_type(t.element_type)?,
        minimum: t.initial,
        maximum: t.maximum,
        ref_type: typed_ref(t.element_type, type_ids)?,
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

fn global_type(t: &wasmparser::GlobalType, type_ids: &[u32]) -> Result<GlobalType, CompileError> {
    if t.shared {
        return Err(CompileError::unsupported("shared globals"));
    }
    Ok(GlobalType {
        content: val_type(t.content_type)?,
        mutable: t.mutable,
        ref_type: match t.content_type {
            wasmparser::ValType::Ref(r) => typed_ref(r, type_ids)?,
            _ => None,
        },
    })
}

/// Converts a constant expression. Parse errors are `Malformed`.
fn const_expr(e: &wasmparser::ConstExpr<'_>) -> Result<ConstExpr, CompileError> {
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
            O::RefNull { hty } => ConstOp::RefNull(heap_ref_type(hty)?),
            O::RefFunc { function_index } => ConstOp::RefFunc(function_index),
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

/// Parses one section's payload into `info`/`bodies`. Errors from
/// wasmparser's readers are `Malformed`; anything this crate cannot
/// represent is `Unsupported`; semantic problems are left to the validator.
fn parse_payload<'a>(
    wasm: &'a [u8],
    payload: &Payload<'a>,
    info: &mut ModuleInfo,
    type_id: &mut dyn FnMut(&FuncType) -> u32,
) -> Result<(), CompileError> {
    let m = CompileError::malformed;
    match payload {
        Payload::TypeSection(reader) => {
            for group in reader.clone() {
                let group = group.map_err(m)?;
                let keys = rec_group_keys(&group, info.types.len() as u32, &info.type_ids)?;
                for (sub, ref_key) in group.into_types().zip(keys) {
                    match &sub.composite_type.inner {
                        wasmparser::CompositeInnerType::Func(ft) => {
                            let mut ty = FuncType::new(
                                ft.params()
                                    .iter()
                                    .map(|t| val_type(*t))
                                    .collect::<Result<Vec<_>, _>>()?,
                                ft.results()
                                    .iter()
                                    .map(|t| val_type(*t))
                                    .collect::<Result<Vec<_>, _>>()?,
                            );
                            ty.ref_key = ref_key;
                            info.type_ids.push(type_id(&ty));
                            info.types.push(ty);
                        }
                        _ => return Err(CompileError::unsupported("non-function types (GC)")),
                    }
                }
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
                        let t = table_type(&t, &info.type_ids)?;
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
                        let t = global_type(&t, &info.type_ids)?;
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
                    wasmparser::TableInit::Expr(e) => Some(const_expr(e)?),
                });
                info.tables.push(table_type(&t.ty, &info.type_ids)?);
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
                info.globals.push(global_type(&g.ty, &info.type_ids)?);
                info.global_inits.push(const_expr(&g.init_expr)?);
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
                        offset: const_expr(offset_expr)?,
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
                            items.push(const_expr(&x.map_err(m)?)?);
                        }
                        (ref_type(*rt)?, items)
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
                        offset: const_expr(offset_expr)?,
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
        let parsed = parse_payload(wasm, &payload, &mut info, type_id);
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
