//! WebAssembly GC operators (structs, arrays, i31, casts, conversions
//! between `any` and `extern`).
//!
//! A submodule of `translate` (it extends `Translator`), kept apart so the
//! translator's hot paths stay as they were. References of the `any`
//! hierarchy are i64s encoded as `types::gc_ref` says: `i31`, `ref.eq` and
//! the `any`/`extern` conversions are inline arithmetic; everything that
//! reads or writes the heap, and every cast, is one call of the `GC`
//! builtin (`crate::gc_layout`), which bounds-checks every access, so no
//! reference, forged or stale, can make this code touch memory outside
//! the store's heap.

use super::{args, Translator};
use crate::abi;
use crate::error::CompileError;
use crate::gc_layout::{heap, op};
use crate::types::{gc_ref, CompositeKind, StorageType};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, StackSlotData, StackSlotKind, Type, Value};
use wasmparser::{AbstractHeapType as A, HeapType, Operator, RefType};

impl<'m, 'b> Translator<'m, 'b> {
    /// Calls the `GC` builtin with `op`, immediates `a` and `b` and the
    /// operands `vals`; traps with [`abi::TRAP_GC`] if it fails. Returns
    /// slot 0 afterwards as a value of type `result`, if asked for.
    fn gc_call(
        &mut self,
        gc_op: u32,
        a: u32,
        b: u32,
        vals: &[Value],
        result: Option<Type>,
    ) -> Option<Value> {
        // Operations of at most `SHARED_SLOTS` operands share one array
        // per function; `struct.new` and `array.new_fixed` of more get
        // their own.
        const SHARED_SLOTS: usize = 5;
        let new_slot = |b: &mut cranelift_frontend::FunctionBuilder<'_>, n: usize| {
            b.create_sized_stack_slot(StackSlotData::new(
                StackSlotKind::ExplicitSlot,
                16 * n as u32,
                4,
            ))
        };
        let slot = if vals.len() <= SHARED_SLOTS {
            match self.gc_slot {
                Some(s) => s,
                None => {
                    let s = new_slot(&mut self.b, SHARED_SLOTS);
                    self.gc_slot = Some(s);
                    s
                }
            }
        } else {
            new_slot(&mut self.b, vals.len())
        };
        for (i, v) in vals.iter().enumerate() {
            self.b
                .ins()
                .stack_store(types::I64, *v, slot, (16 * i) as i32);
        }
        let values = self.b.ins().stack_addr(types::I64, slot, 0);
        let (opv, av, bv) = (self.i32c(gc_op), self.i32c(a), self.i32c(b));
        let status = self
            .builtin(
                abi::builtins::GC,
                &[types::I32, types::I32, types::I32, types::I64],
                Some(types::I32),
                &[opv, av, bv, values],
            )
            .expect("GC returns a status");
        self.b.ins().trapnz(status, abi::TRAP_GC);
        result.map(|t| self.b.ins().stack_load(types::I64, t, slot, 0))
    }

    /// The Cranelift type of an operand or result of storage type `s`.
    fn storage_ir(s: StorageType) -> Type {
        super::ir_type(s.unpacked())
    }

    /// The field type of struct `ty`'s field `field`, or of array `ty`'s
    /// elements (`field` ignored).
    fn gc_field(&self, ty: u32, field: u32) -> Result<StorageType, CompileError> {
        match self.info().type_defs.get(ty as usize).map(|d| &d.kind) {
            Some(CompositeKind::Struct { fields, .. }) => fields
                .get(field as usize)
                .map(|f| f.storage)
                .ok_or_else(|| CompileError::unsupported("unknown field")),
            Some(CompositeKind::Array(f)) => Ok(f.storage),
            _ => Err(CompileError::unsupported("not a struct or array type")),
        }
    }

    fn struct_len(&self, ty: u32) -> usize {
        match self.info().type_defs.get(ty as usize).map(|d| &d.kind) {
            Some(CompositeKind::Struct { fields, .. }) => fields.len(),
            _ => 0,
        }
    }

    /// The `REF_TEST` immediates of target `to`, or `None` if the answer
    /// needs no heap access: then `Some(answer for non-null)` is returned
    /// in the second position.
    fn test_imms(&self, to: RefType) -> ((u32, u32), Option<bool>) {
        let nullable = if to.is_nullable() {
            op::TEST_NULLABLE
        } else {
            0
        };
        let code = match to.heap_type() {
            HeapType::Concrete(i) => {
                let idx = i.as_module_index().unwrap_or(0);
                return ((idx, nullable | op::TEST_CONCRETE), None);
            }
            HeapType::Abstract { ty, .. } => match ty {
                A::Any | A::Func | A::Extern | A::Exn => return ((0, nullable), Some(true)),
                A::None | A::NoFunc | A::NoExtern | A::NoExn => {
                    return ((0, nullable), Some(false))
                }
                A::Eq => heap::EQ,
                A::I31 => heap::I31,
                A::Struct => heap::STRUCT,
                A::Array => heap::ARRAY,
                _ => heap::NONE,
            },
            _ => heap::NONE,
        };
        ((0, nullable | (code << 8)), None)
    }

    /// Whether `v` is of reference type `to`, as an i32 0 or 1.
    fn ref_test(&mut self, v: Value, to: RefType) -> Value {
        let ((a, b), trivial) = self.test_imms(to);
        match trivial {
            Some(non_null) => {
                let answer = if to.is_nullable() {
                    self.b.ins().iconst(types::I32, 1)
                } else if non_null {
                    let c = self.b.ins().icmp_imm_s(IntCC::NotEqual, v, 0);
                    self.b.ins().uextend(types::I32, c)
                } else {
                    self.b.ins().iconst(types::I32, 0)
                };
                if non_null || !to.is_nullable() {
                    answer
                } else {
                    // Nullable bottom: only null passes.
                    let c = self.b.ins().icmp_imm_s(IntCC::Equal, v, 0);
                    self.b.ins().uextend(types::I32, c)
                }
            }
            None => self
                .gc_call(op::REF_TEST, a, b, &[v], Some(types::I32))
                .expect("asked for"),
        }
    }

    /// Whether a function of another type than `type_index` may pass a
    /// `call_indirect` / `call_ref` type check against it: with GC on, a
    /// non-final type may have declared subtypes.
    pub(super) fn may_have_subtypes(&self, type_index: u32) -> bool {
        self.env.config.gc
            && self
                .info()
                .type_defs
                .get(type_index as usize)
                .is_some_and(|d| !d.is_final)
    }

    /// The type check of a call through funcref `fr` expecting non-final
    /// type `type_index`, when the ids differ (`bad`): the runtime says
    /// whether the callee's type is a declared subtype, else the call
    /// traps with [`abi::TRAP_BAD_SIGNATURE`].
    pub(super) fn funcref_subtype_check(&mut self, type_index: u32, fr: Value, bad: Value) {
        let slow = self.b.create_block();
        let cont = self.b.create_block();
        self.b.set_cold_block(slow);
        self.b.ins().brif(bad, slow, &[], cont, &[]);
        self.b.switch_to_block(slow);
        self.b.seal_block(slow);
        let ok = self
            .gc_call(
                op::REF_TEST,
                type_index,
                op::TEST_CONCRETE,
                &[fr],
                Some(types::I32),
            )
            .expect("asked for");
        self.b.ins().trapz(ok, abi::TRAP_BAD_SIGNATURE);
        self.b.ins().jump(cont, &[]);
        self.b.switch_to_block(cont);
        self.b.seal_block(cont);
    }

    /// Translates `op` if it is a GC operator; `Ok(false)` if it is not
    /// one (or GC is off).
    pub(super) fn gc_op(&mut self, o: &Operator<'_>) -> Result<bool, CompileError> {
        use Operator as O;
        if !self.env.config.gc {
            return Ok(false);
        }
        match *o {
            O::RefI31 => {
                let x = self.pop();
                let s = self.b.ins().ishl_imm_u(x, 1);
                let t = self.b.ins().bor_imm_u(s, gc_ref::I31_TAG as i64);
                let v = self.b.ins().uextend(types::I64, t);
                self.push(v);
            }
            O::I31GetS | O::I31GetU => {
                let x = self.pop();
                self.b.ins().trapz(x, abi::TRAP_NULL_I31);
                let low = self.b.ins().ireduce(types::I32, x);
                let v = if matches!(o, O::I31GetS) {
                    self.b.ins().sshr_imm_u(low, 1)
                } else {
                    self.b.ins().ushr_imm_u(low, 1)
                };
                self.push(v);
            }
            O::RefEq => self.icmp(IntCC::Equal),
            O::AnyConvertExtern => {
                // null stays null; a wrapped internal reference is
                // unwrapped; a host handle is tagged.
                let e = self.pop();
                let wrapped = self.b.ins().band_imm_u(e, gc_ref::WRAPPED_ANY as i64);
                let unwrapped = self.b.ins().band_imm_u(e, !gc_ref::WRAPPED_ANY as i64);
                let shifted = self.b.ins().ishl_imm_u(e, 2);
                let tagged = self.b.ins().bor_imm_u(shifted, gc_ref::EXTERN_TAG as i64);
                let host = self.b.ins().select(e, tagged, e);
                let v = self.b.ins().select(wrapped, unwrapped, host);
                self.push(v);
            }
            O::ExternConvertAny => {
                let a = self.pop();
                let tag = self.b.ins().band_imm_u(a, gc_ref::TAG_MASK as i64);
                let is_host = self
                    .b
                    .ins()
                    .icmp_imm_u(IntCC::Equal, tag, gc_ref::EXTERN_TAG as i64);
                let handle = self.b.ins().ushr_imm_u(a, 2);
                let wrapped = self.b.ins().bor_imm_u(a, gc_ref::WRAPPED_ANY as i64);
                let internal = self.b.ins().select(a, wrapped, a);
                let v = self.b.ins().select(is_host, handle, internal);
                self.push(v);
            }
            O::StructNew { struct_type_index } => {
                let n = self.struct_len(struct_type_index);
                let vals = self.popn(n);
                let r = self.gc_call(
                    op::STRUCT_NEW,
                    struct_type_index,
                    0,
                    &vals,
                    Some(types::I64),
                );
                self.push(r.expect("asked for"));
            }
            O::StructNewDefault { struct_type_index } => {
                let r = self.gc_call(
                    op::STRUCT_NEW_DEFAULT,
                    struct_type_index,
                    0,
                    &[],
                    Some(types::I64),
                );
                self.push(r.expect("asked for"));
            }
            O::StructGet {
                struct_type_index,
                field_index,
            }
            | O::StructGetS {
                struct_type_index,
                field_index,
            }
            | O::StructGetU {
                struct_type_index,
                field_index,
            } => {
                let ext = match o {
                    O::StructGetS { .. } => op::EXT_S,
                    O::StructGetU { .. } => op::EXT_U,
                    _ => 0,
                };
                let t = Self::storage_ir(self.gc_field(struct_type_index, field_index)?);
                let r = self.pop();
                let v = self.gc_call(
                    op::STRUCT_GET,
                    struct_type_index,
                    field_index | (ext << 16),
                    &[r],
                    Some(t),
                );
                self.push(v.expect("asked for"));
            }
            O::StructSet {
                struct_type_index,
                field_index,
            } => {
                let (r, v) = self.pop2();
                self.gc_call(
                    op::STRUCT_SET,
                    struct_type_index,
                    field_index,
                    &[r, v],
                    None,
                );
            }
            O::ArrayNew { array_type_index } => {
                let (init, len) = self.pop2();
                let r = self.gc_call(
                    op::ARRAY_NEW,
                    array_type_index,
                    0,
                    &[init, len],
                    Some(types::I64),
                );
                self.push(r.expect("asked for"));
            }
            O::ArrayNewDefault { array_type_index } => {
                let len = self.pop();
                let r = self.gc_call(
                    op::ARRAY_NEW_DEFAULT,
                    array_type_index,
                    0,
                    &[len],
                    Some(types::I64),
                );
                self.push(r.expect("asked for"));
            }
            O::ArrayNewFixed {
                array_type_index,
                array_size,
            } => {
                let vals = self.popn(array_size as usize);
                let r = self.gc_call(
                    op::ARRAY_NEW_FIXED,
                    array_type_index,
                    array_size,
                    &vals,
                    Some(types::I64),
                );
                self.push(r.expect("asked for"));
            }
            O::ArrayNewData {
                array_type_index,
                array_data_index,
            }
            | O::ArrayNewElem {
                array_type_index,
                array_elem_index: array_data_index,
            } => {
                let gc_op = if matches!(o, O::ArrayNewData { .. }) {
                    op::ARRAY_NEW_DATA
                } else {
                    op::ARRAY_NEW_ELEM
                };
                let (off, len) = self.pop2();
                let r = self.gc_call(
                    gc_op,
                    array_type_index,
                    array_data_index,
                    &[off, len],
                    Some(types::I64),
                );
                self.push(r.expect("asked for"));
            }
            O::ArrayGet { array_type_index }
            | O::ArrayGetS { array_type_index }
            | O::ArrayGetU { array_type_index } => {
                let ext = match o {
                    O::ArrayGetS { .. } => op::EXT_S,
                    O::ArrayGetU { .. } => op::EXT_U,
                    _ => 0,
                };
                let t = Self::storage_ir(self.gc_field(array_type_index, 0)?);
                let (r, i) = self.pop2();
                let v = self.gc_call(op::ARRAY_GET, array_type_index, ext, &[r, i], Some(t));
                self.push(v.expect("asked for"));
            }
            O::ArraySet { array_type_index } => {
                let (r, i, v) = self.pop3();
                self.gc_call(op::ARRAY_SET, array_type_index, 0, &[r, i, v], None);
            }
            O::ArrayLen => {
                let r = self.pop();
                let v = self.gc_call(op::ARRAY_LEN, 0, 0, &[r], Some(types::I32));
                self.push(v.expect("asked for"));
            }
            O::ArrayFill { array_type_index } => {
                let vals = self.popn(4);
                self.gc_call(op::ARRAY_FILL, array_type_index, 0, &vals, None);
            }
            O::ArrayCopy {
                array_type_index_dst,
                array_type_index_src,
            } => {
                let vals = self.popn(5);
                self.gc_call(
                    op::ARRAY_COPY,
                    array_type_index_dst,
                    array_type_index_src,
                    &vals,
                    None,
                );
            }
            O::ArrayInitData {
                array_type_index,
                array_data_index,
            } => {
                let vals = self.popn(4);
                self.gc_call(
                    op::ARRAY_INIT_DATA,
                    array_type_index,
                    array_data_index,
                    &vals,
                    None,
                );
            }
            O::ArrayInitElem {
                array_type_index,
                array_elem_index,
            } => {
                let vals = self.popn(4);
                self.gc_call(
                    op::ARRAY_INIT_ELEM,
                    array_type_index,
                    array_elem_index,
                    &vals,
                    None,
                );
            }
            O::RefTestNonNull { hty } | O::RefTestNullable { hty } => {
                let to = RefType::new(matches!(o, O::RefTestNullable { .. }), hty)
                    .ok_or_else(|| CompileError::unsupported("heap type"))?;
                let v = self.pop();
                let r = self.ref_test(v, to);
                self.push(r);
            }
            O::RefCastNonNull { hty } | O::RefCastNullable { hty } => {
                let to = RefType::new(matches!(o, O::RefCastNullable { .. }), hty)
                    .ok_or_else(|| CompileError::unsupported("heap type"))?;
                let v = self.pop();
                let r = self.ref_test(v, to);
                self.b.ins().trapz(r, abi::TRAP_CAST);
                self.push(v);
            }
            O::BrOnCast {
                relative_depth,
                to_ref_type,
                ..
            }
            | O::BrOnCastFail {
                relative_depth,
                to_ref_type,
                ..
            } => {
                let v = self.pop();
                let ok = self.ref_test(v, to_ref_type);
                let (target, n) = self.branch_target(relative_depth);
                let mut vals = self.peekn(n - 1);
                vals.push(v);
                let next = self.b.create_block();
                if matches!(o, O::BrOnCast { .. }) {
                    self.b.ins().brif(ok, target, &args(&vals), next, &[]);
                } else {
                    self.b.ins().brif(ok, next, &[], target, &args(&vals));
                }
                self.b.switch_to_block(next);
                self.b.seal_block(next);
                self.push(v);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}
