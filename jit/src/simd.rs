//! Translation of the WebAssembly SIMD operators (`v128`, WebAssembly 2.0)
//! to Cranelift IR.
//!
//! Wasm has one 128-bit vector type; Cranelift types vectors by their lanes
//! (`I8X16`, `I16X8`, `I32X4`, `I64X2`, `F32X4`, `F64X2`). Every v128 value
//! the translator keeps (on its value stack, in locals, globals, block
//! parameters, call arguments and results) has the canonical type `I8X16`.
//! An operator working on other lanes bitcasts its operands to its lane type
//! (little-endian, so byte `i` of the wasm value stays byte `i`) and its
//! result back to `I8X16` before it is pushed. Between vector types these
//! casts are no-ops: the value stays in the same register.
//!
//! Almost every wasm SIMD operator is one Cranelift instruction with the
//! same semantics; the exceptions (`pmin`/`pmax`, dot products, extended
//! multiplies, pairwise additions and the `_zero` conversions) are short
//! sequences of them.
//!
//! # Relaxed SIMD
//!
//! The relaxed SIMD operators (WebAssembly 3.0) are lowered each to one
//! fixed result among those the specification permits, identical on every
//! host (`CompileConfig::relaxed_simd` accepts them).
//!
//! | operator | lowering | relaxed freedom given up |
//! |---|---|---|
//! | `i8x16.relaxed_swizzle` | `i8x16.swizzle` (index ≥ 16 gives 0) | x86 `pshufb` without the saturating add |
//! | `i32x4.relaxed_trunc_*` | the `trunc_sat` operators | x86 `cvttps2dq` without the NaN/overflow fix-up |
//! | `f32x4/f64x2.relaxed_madd`, `nmadd` | fused multiply-add, one rounding (`nmadd` negates `a`): `vfmadd`/`vfnmadd` with FMA, `fmla` on aarch64, else Cranelift's libcall to libm's correctly rounded `fma` | the unfused result (two roundings) |
//! | `*.relaxed_laneselect` | `v128.bitselect` (bitwise) | x86 `blendv` (top bit of each lane) |
//! | `f32x4/f64x2.relaxed_min/max` | `f32x4.min` etc. (NaN-propagating, -0 < +0) | x86 `minps`/`maxps` |
//! | `i16x8.relaxed_q15mulr_s` | `i16x8.q15mulr_sat_s` | x86 `pmulhrsw` without the overflow fix-up |
//! | `i16x8.relaxed_dot_i8x16_i7x16_s` | signed × signed products, wrapping pairwise sum (aarch64 `sdot` semantics) | x86 `pmaddubsw` (unsigned × signed, saturating) |
//! | `i32x4.relaxed_dot_i8x16_i7x16_add_s` | the i16x8 dot above, sign-extended pairwise sum, plus the accumulator | as above |
//!
//! Every row but multiply-add and the dot products is exactly the
//! non-relaxed operator, so relaxed code is never slower than its portable
//! spelling; multiply-add is one instruction on every FMA host. The
//! choices are those of wasmi, the differential fuzzer's reference.

use crate::error::CompileError;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{
    F32, F32X4, F64X2, I16, I16X8, I32, I32X4, I64, I64X2, I8, I8X16,
};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;
use wasmparser::{MemArg, Operator};

/// What the SIMD translation needs from the function translator.
pub(crate) trait SimdEnv<'b> {
    /// The function builder.
    fn builder(&mut self) -> &mut FunctionBuilder<'b>;
    /// The wasm value stack.
    fn stack(&mut self) -> &mut Vec<Value>;
    /// Native address and static offset for an access of `size` bytes at
    /// wasm address `index` (an `i32`), after the configured bounds check.
    fn heap_addr(&mut self, memarg: &MemArg, index: Value, size: u32) -> (Value, i32);
}

/// Flags for bitcasts between vector types (lane order is little-endian).
fn le() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

/// Flags for linear-memory accesses: untrusted (may trap), little-endian,
/// in the heap's alias region (the scalar accesses' flags).
fn heap() -> MemFlagsData {
    crate::flags::heap()
}

/// `v` as a vector of type `ty` (a no-op when it already is).
pub(crate) fn cast(b: &mut FunctionBuilder<'_>, ty: Type, v: Value) -> Value {
    if b.func.dfg.value_type(v) == ty {
        v
    } else {
        b.ins().bitcast(ty, le(), v)
    }
}

/// A vector constant of type `ty` with the given bytes.
fn vconst_of(b: &mut FunctionBuilder<'_>, ty: Type, bytes: &[u8; 16]) -> Value {
    let c = b.func.dfg.constants.insert(ConstantData::from(&bytes[..]));
    b.ins().vconst(ty, c)
}

/// The all-zero v128, as `I8X16` (the initial value of v128 locals).
pub(crate) fn zero(b: &mut FunctionBuilder<'_>) -> Value {
    vconst_of(b, I8X16, &[0; 16])
}

/// Pops a value and casts it to vector type `ty`.
fn pop<'b>(e: &mut impl SimdEnv<'b>, ty: Type) -> Value {
    let v = e.stack().pop().expect("validated: value stack underflow");
    cast(e.builder(), ty, v)
}

/// Pops a scalar.
fn pop_scalar<'b>(e: &mut impl SimdEnv<'b>) -> Value {
    e.stack().pop().expect("validated: value stack underflow")
}

/// Pushes a value, canonicalising vectors to `I8X16`.
fn push<'b>(e: &mut impl SimdEnv<'b>, v: Value) {
    let b = e.builder();
    let v = if b.func.dfg.value_type(v).is_vector() {
        cast(b, I8X16, v)
    } else {
        v
    };
    e.stack().push(v);
}

/// Pops one operand of type `ty`, applies `f`, pushes the result.
fn unary<'b, E: SimdEnv<'b>>(
    e: &mut E,
    ty: Type,
    f: impl FnOnce(&mut FunctionBuilder<'b>, Value) -> Value,
) {
    let x = pop(e, ty);
    let r = f(e.builder(), x);
    push(e, r);
}

/// Pops two operands of type `ty`, applies `f`, pushes the result.
fn binary<'b, E: SimdEnv<'b>>(
    e: &mut E,
    ty: Type,
    f: impl FnOnce(&mut FunctionBuilder<'b>, Value, Value) -> Value,
) {
    let y = pop(e, ty);
    let x = pop(e, ty);
    let r = f(e.builder(), x, y);
    push(e, r);
}

/// Lane-wise integer comparison producing an all-ones/all-zeros mask.
fn icmp<'b>(e: &mut impl SimdEnv<'b>, ty: Type, cc: IntCC) {
    binary(e, ty, |b, x, y| b.ins().icmp(cc, x, y));
}

/// Lane-wise float comparison producing an all-ones/all-zeros mask.
fn fcmp<'b>(e: &mut impl SimdEnv<'b>, ty: Type, cc: FloatCC) {
    binary(e, ty, |b, x, y| b.ins().fcmp(cc, x, y));
}

/// A shift: vector operand of type `ty`, scalar `i32` amount. Cranelift's
/// vector shifts take the amount modulo the lane width, as wasm requires.
fn shift<'b, E: SimdEnv<'b>>(
    e: &mut E,
    ty: Type,
    f: impl FnOnce(&mut FunctionBuilder<'b>, Value, Value) -> Value,
) {
    let amount = pop_scalar(e);
    let x = pop(e, ty);
    let r = f(e.builder(), x, amount);
    push(e, r);
}

/// Which half of a vector a widening operator reads.
#[derive(Clone, Copy)]
enum Half {
    Low,
    High,
}

/// Sign- or zero-extends the `half` of `x` to lanes twice as wide.
fn widen(b: &mut FunctionBuilder<'_>, x: Value, signed: bool, half: Half) -> Value {
    match (signed, half) {
        (true, Half::Low) => b.ins().swiden_low(x),
        (true, Half::High) => b.ins().swiden_high(x),
        (false, Half::Low) => b.ins().uwiden_low(x),
        (false, Half::High) => b.ins().uwiden_high(x),
    }
}

/// `extmul_{low,high}`: widen both operands' halves, then multiply.
fn extmul<'b>(e: &mut impl SimdEnv<'b>, ty: Type, signed: bool, half: Half) {
    binary(e, ty, |b, x, y| {
        let x = widen(b, x, signed, half);
        let y = widen(b, y, signed, half);
        b.ins().imul(x, y)
    });
}

/// `extadd_pairwise`: widen both halves, then add adjacent lanes.
fn extadd_pairwise<'b>(e: &mut impl SimdEnv<'b>, ty: Type, signed: bool) {
    unary(e, ty, |b, x| {
        let lo = widen(b, x, signed, Half::Low);
        let hi = widen(b, x, signed, Half::High);
        b.ins().iadd_pairwise(lo, hi)
    });
}

/// How a load fills the vector.
#[derive(Clone, Copy)]
enum LoadShape {
    /// All 16 bytes.
    Full,
    /// 8 bytes, each lane extended to twice its width (`ty` is the result).
    Extend { ty: Type, signed: bool },
    /// One lane of scalar type `ty`, copied to every lane.
    Splat(Type),
    /// One lane of scalar type `ty` into lane 0, the rest zero.
    Zero(Type),
}

fn load<'b>(e: &mut impl SimdEnv<'b>, memarg: &MemArg, shape: LoadShape) {
    let index = pop_scalar(e);
    let size = match shape {
        LoadShape::Full => 16,
        LoadShape::Extend { .. } => 8,
        LoadShape::Splat(t) | LoadShape::Zero(t) => t.bytes(),
    };
    let (addr, off) = e.heap_addr(memarg, index, size);
    let b = e.builder();
    let v = match shape {
        LoadShape::Full => b.ins().load(I8X16, heap(), addr, off),
        LoadShape::Extend { ty, signed } => match (ty, signed) {
            (I16X8, true) => b.ins().sload8x8(heap(), addr, off),
            (I16X8, false) => b.ins().uload8x8(heap(), addr, off),
            (I32X4, true) => b.ins().sload16x4(heap(), addr, off),
            (I32X4, false) => b.ins().uload16x4(heap(), addr, off),
            (I64X2, true) => b.ins().sload32x2(heap(), addr, off),
            _ => b.ins().uload32x2(heap(), addr, off),
        },
        LoadShape::Splat(t) => {
            let x = b.ins().load(t, heap(), addr, off);
            b.ins().splat(vector_of(t), x)
        }
        LoadShape::Zero(t) => {
            let x = b.ins().load(t, heap(), addr, off);
            b.ins().scalar_to_vector(vector_of(t), x)
        }
    };
    push(e, v);
}

/// `v128.loadN_lane`: replaces lane `lane` of the vector operand.
fn load_lane<'b>(e: &mut impl SimdEnv<'b>, memarg: &MemArg, lane_ty: Type, lane: u8) {
    let v = pop(e, vector_of(lane_ty));
    let index = pop_scalar(e);
    let (addr, off) = e.heap_addr(memarg, index, lane_ty.bytes());
    let b = e.builder();
    let x = b.ins().load(lane_ty, heap(), addr, off);
    let r = b.ins().insertlane(v, x, lane);
    push(e, r);
}

/// `v128.storeN_lane`: stores lane `lane` of the vector operand.
fn store_lane<'b>(e: &mut impl SimdEnv<'b>, memarg: &MemArg, lane_ty: Type, lane: u8) {
    let v = pop(e, vector_of(lane_ty));
    let index = pop_scalar(e);
    let (addr, off) = e.heap_addr(memarg, index, lane_ty.bytes());
    let b = e.builder();
    let x = b.ins().extractlane(v, lane);
    b.ins().store(heap(), x, addr, off);
}

/// The 128-bit vector type whose lanes are `lane`.
fn vector_of(lane: Type) -> Type {
    match lane {
        I8 => I8X16,
        I16 => I16X8,
        I32 => I32X4,
        I64 => I64X2,
        F32 => F32X4,
        _ => F64X2,
    }
}

/// Translates `op` if it is a SIMD operator. Returns `Ok(false)` for any
/// other operator (the caller handles it); the operand types have been
/// checked by the validator.
pub(crate) fn translate<'b>(
    e: &mut impl SimdEnv<'b>,
    op: &Operator<'_>,
) -> Result<bool, CompileError> {
    use Operator as O;
    match *op {
        // ---- memory ---------------------------------------------------
        O::V128Load { ref memarg } => load(e, memarg, LoadShape::Full),
        O::V128Load8x8S { ref memarg } => load(
            e,
            memarg,
            LoadShape::Extend {
                ty: I16X8,
                signed: true,
            },
        ),
        O::V128Load8x8U { ref memarg } => load(
            e,
            memarg,
            LoadShape::Extend {
                ty: I16X8,
                signed: false,
            },
        ),
        O::V128Load16x4S { ref memarg } => load(
            e,
            memarg,
            LoadShape::Extend {
                ty: I32X4,
                signed: true,
            },
        ),
        O::V128Load16x4U { ref memarg } => load(
            e,
            memarg,
            LoadShape::Extend {
                ty: I32X4,
                signed: false,
            },
        ),
        O::V128Load32x2S { ref memarg } => load(
            e,
            memarg,
            LoadShape::Extend {
                ty: I64X2,
                signed: true,
            },
        ),
        O::V128Load32x2U { ref memarg } => load(
            e,
            memarg,
            LoadShape::Extend {
                ty: I64X2,
                signed: false,
            },
        ),
        O::V128Load8Splat { ref memarg } => load(e, memarg, LoadShape::Splat(I8)),
        O::V128Load16Splat { ref memarg } => load(e, memarg, LoadShape::Splat(I16)),
        O::V128Load32Splat { ref memarg } => load(e, memarg, LoadShape::Splat(I32)),
        O::V128Load64Splat { ref memarg } => load(e, memarg, LoadShape::Splat(I64)),
        O::V128Load32Zero { ref memarg } => load(e, memarg, LoadShape::Zero(I32)),
        O::V128Load64Zero { ref memarg } => load(e, memarg, LoadShape::Zero(I64)),
        O::V128Store { ref memarg } => {
            let v = pop(e, I8X16);
            let index = pop_scalar(e);
            let (addr, off) = e.heap_addr(memarg, index, 16);
            e.builder().ins().store(heap(), v, addr, off);
        }
        O::V128Load8Lane { ref memarg, lane } => load_lane(e, memarg, I8, lane),
        O::V128Load16Lane { ref memarg, lane } => load_lane(e, memarg, I16, lane),
        O::V128Load32Lane { ref memarg, lane } => load_lane(e, memarg, I32, lane),
        O::V128Load64Lane { ref memarg, lane } => load_lane(e, memarg, I64, lane),
        O::V128Store8Lane { ref memarg, lane } => store_lane(e, memarg, I8, lane),
        O::V128Store16Lane { ref memarg, lane } => store_lane(e, memarg, I16, lane),
        O::V128Store32Lane { ref memarg, lane } => store_lane(e, memarg, I32, lane),
        O::V128Store64Lane { ref memarg, lane } => store_lane(e, memarg, I64, lane),

        // ---- constants, lanes, shuffles ------------------------------------
        O::V128Const { ref value } => {
            let v = vconst_of(e.builder(), I8X16, value.bytes());
            push(e, v);
        }
        O::I8x16Shuffle { ref lanes } => {
            let y = pop(e, I8X16);
            let x = pop(e, I8X16);
            let b = e.builder();
            let mask = b.func.dfg.immediates.push(ConstantData::from(&lanes[..]));
            let r = b.ins().shuffle(x, y, mask);
            push(e, r);
        }
        O::I8x16Swizzle => binary(e, I8X16, |b, x, y| b.ins().swizzle(x, y)),
        O::I8x16Splat | O::I16x8Splat => {
            let ty = if matches!(op, O::I8x16Splat) {
                I8X16
            } else {
                I16X8
            };
            let x = pop_scalar(e);
            let b = e.builder();
            let x = b.ins().ireduce(ty.lane_type(), x);
            let r = b.ins().splat(ty, x);
            push(e, r);
        }
        O::I32x4Splat | O::I64x2Splat | O::F32x4Splat | O::F64x2Splat => {
            let ty = match op {
                O::I32x4Splat => I32X4,
                O::I64x2Splat => I64X2,
                O::F32x4Splat => F32X4,
                _ => F64X2,
            };
            let x = pop_scalar(e);
            let r = e.builder().ins().splat(ty, x);
            push(e, r);
        }
        O::I8x16ExtractLaneS { lane } => extract(e, I8X16, lane, Some(true)),
        O::I8x16ExtractLaneU { lane } => extract(e, I8X16, lane, Some(false)),
        O::I16x8ExtractLaneS { lane } => extract(e, I16X8, lane, Some(true)),
        O::I16x8ExtractLaneU { lane } => extract(e, I16X8, lane, Some(false)),
        O::I32x4ExtractLane { lane } => extract(e, I32X4, lane, None),
        O::I64x2ExtractLane { lane } => extract(e, I64X2, lane, None),
        O::F32x4ExtractLane { lane } => extract(e, F32X4, lane, None),
        O::F64x2ExtractLane { lane } => extract(e, F64X2, lane, None),
        O::I8x16ReplaceLane { lane } => replace(e, I8X16, lane),
        O::I16x8ReplaceLane { lane } => replace(e, I16X8, lane),
        O::I32x4ReplaceLane { lane } => replace(e, I32X4, lane),
        O::I64x2ReplaceLane { lane } => replace(e, I64X2, lane),
        O::F32x4ReplaceLane { lane } => replace(e, F32X4, lane),
        O::F64x2ReplaceLane { lane } => replace(e, F64X2, lane),

        // ---- comparisons ------------------------------------------------
        O::I8x16Eq => icmp(e, I8X16, IntCC::Equal),
        O::I16x8Eq => icmp(e, I16X8, IntCC::Equal),
        O::I32x4Eq => icmp(e, I32X4, IntCC::Equal),
        O::I64x2Eq => icmp(e, I64X2, IntCC::Equal),
        O::I8x16Ne => icmp(e, I8X16, IntCC::NotEqual),
        O::I16x8Ne => icmp(e, I16X8, IntCC::NotEqual),
        O::I32x4Ne => icmp(e, I32X4, IntCC::NotEqual),
        O::I64x2Ne => icmp(e, I64X2, IntCC::NotEqual),
        O::I8x16LtS => icmp(e, I8X16, IntCC::SignedLessThan),
        O::I16x8LtS => icmp(e, I16X8, IntCC::SignedLessThan),
        O::I32x4LtS => icmp(e, I32X4, IntCC::SignedLessThan),
        O::I64x2LtS => icmp(e, I64X2, IntCC::SignedLessThan),
        O::I8x16LtU => icmp(e, I8X16, IntCC::UnsignedLessThan),
        O::I16x8LtU => icmp(e, I16X8, IntCC::UnsignedLessThan),
        O::I32x4LtU => icmp(e, I32X4, IntCC::UnsignedLessThan),
        O::I8x16GtS => icmp(e, I8X16, IntCC::SignedGreaterThan),
        O::I16x8GtS => icmp(e, I16X8, IntCC::SignedGreaterThan),
        O::I32x4GtS => icmp(e, I32X4, IntCC::SignedGreaterThan),
        O::I64x2GtS => icmp(e, I64X2, IntCC::SignedGreaterThan),
        O::I8x16GtU => icmp(e, I8X16, IntCC::UnsignedGreaterThan),
        O::I16x8GtU => icmp(e, I16X8, IntCC::UnsignedGreaterThan),
        O::I32x4GtU => icmp(e, I32X4, IntCC::UnsignedGreaterThan),
        O::I8x16LeS => icmp(e, I8X16, IntCC::SignedLessThanOrEqual),
        O::I16x8LeS => icmp(e, I16X8, IntCC::SignedLessThanOrEqual),
        O::I32x4LeS => icmp(e, I32X4, IntCC::SignedLessThanOrEqual),
        O::I64x2LeS => icmp(e, I64X2, IntCC::SignedLessThanOrEqual),
        O::I8x16LeU => icmp(e, I8X16, IntCC::UnsignedLessThanOrEqual),
        O::I16x8LeU => icmp(e, I16X8, IntCC::UnsignedLessThanOrEqual),
        O::I32x4LeU => icmp(e, I32X4, IntCC::UnsignedLessThanOrEqual),
        O::I8x16GeS => icmp(e, I8X16, IntCC::SignedGreaterThanOrEqual),
        O::I16x8GeS => icmp(e, I16X8, IntCC::SignedGreaterThanOrEqual),
        O::I32x4GeS => icmp(e, I32X4, IntCC::SignedGreaterThanOrEqual),
        O::I64x2GeS => icmp(e, I64X2, IntCC::SignedGreaterThanOrEqual),
        O::I8x16GeU => icmp(e, I8X16, IntCC::UnsignedGreaterThanOrEqual),
        O::I16x8GeU => icmp(e, I16X8, IntCC::UnsignedGreaterThanOrEqual),
        O::I32x4GeU => icmp(e, I32X4, IntCC::UnsignedGreaterThanOrEqual),
        O::F32x4Eq => fcmp(e, F32X4, FloatCC::Equal),
        O::F64x2Eq => fcmp(e, F64X2, FloatCC::Equal),
        O::F32x4Ne => fcmp(e, F32X4, FloatCC::NotEqual),
        O::F64x2Ne => fcmp(e, F64X2, FloatCC::NotEqual),
        O::F32x4Lt => fcmp(e, F32X4, FloatCC::LessThan),
        O::F64x2Lt => fcmp(e, F64X2, FloatCC::LessThan),
        O::F32x4Gt => fcmp(e, F32X4, FloatCC::GreaterThan),
        O::F64x2Gt => fcmp(e, F64X2, FloatCC::GreaterThan),
        O::F32x4Le => fcmp(e, F32X4, FloatCC::LessThanOrEqual),
        O::F64x2Le => fcmp(e, F64X2, FloatCC::LessThanOrEqual),
        O::F32x4Ge => fcmp(e, F32X4, FloatCC::GreaterThanOrEqual),
        O::F64x2Ge => fcmp(e, F64X2, FloatCC::GreaterThanOrEqual),

        // ---- bitwise ----------------------------------------------------
        O::V128Not => unary(e, I8X16, |b, x| b.ins().bnot(x)),
        O::V128And => binary(e, I8X16, |b, x, y| b.ins().band(x, y)),
        O::V128AndNot => binary(e, I8X16, |b, x, y| b.ins().band_not(x, y)),
        O::V128Or => binary(e, I8X16, |b, x, y| b.ins().bor(x, y)),
        O::V128Xor => binary(e, I8X16, |b, x, y| b.ins().bxor(x, y)),
        O::V128Bitselect => {
            let c = pop(e, I8X16);
            let y = pop(e, I8X16);
            let x = pop(e, I8X16);
            let r = e.builder().ins().bitselect(c, x, y);
            push(e, r);
        }
        O::V128AnyTrue => {
            let x = pop(e, I8X16);
            let b = e.builder();
            let t = b.ins().vany_true(x);
            let r = b.ins().uextend(I32, t);
            push(e, r);
        }
        O::I8x16AllTrue => all_true(e, I8X16),
        O::I16x8AllTrue => all_true(e, I16X8),
        O::I32x4AllTrue => all_true(e, I32X4),
        O::I64x2AllTrue => all_true(e, I64X2),
        O::I8x16Bitmask => bitmask(e, I8X16),
        O::I16x8Bitmask => bitmask(e, I16X8),
        O::I32x4Bitmask => bitmask(e, I32X4),
        O::I64x2Bitmask => bitmask(e, I64X2),

        // ---- integer arithmetic -------------------------------------------
        O::I8x16Abs => unary(e, I8X16, |b, x| b.ins().iabs(x)),
        O::I16x8Abs => unary(e, I16X8, |b, x| b.ins().iabs(x)),
        O::I32x4Abs => unary(e, I32X4, |b, x| b.ins().iabs(x)),
        O::I64x2Abs => unary(e, I64X2, |b, x| b.ins().iabs(x)),
        O::I8x16Neg => unary(e, I8X16, |b, x| b.ins().ineg(x)),
        O::I16x8Neg => unary(e, I16X8, |b, x| b.ins().ineg(x)),
        O::I32x4Neg => unary(e, I32X4, |b, x| b.ins().ineg(x)),
        O::I64x2Neg => unary(e, I64X2, |b, x| b.ins().ineg(x)),
        O::I8x16Popcnt => unary(e, I8X16, |b, x| b.ins().popcnt(x)),
        O::I8x16Add => binary(e, I8X16, |b, x, y| b.ins().iadd(x, y)),
        O::I16x8Add => binary(e, I16X8, |b, x, y| b.ins().iadd(x, y)),
        O::I32x4Add => binary(e, I32X4, |b, x, y| b.ins().iadd(x, y)),
        O::I64x2Add => binary(e, I64X2, |b, x, y| b.ins().iadd(x, y)),
        O::I8x16Sub => binary(e, I8X16, |b, x, y| b.ins().isub(x, y)),
        O::I16x8Sub => binary(e, I16X8, |b, x, y| b.ins().isub(x, y)),
        O::I32x4Sub => binary(e, I32X4, |b, x, y| b.ins().isub(x, y)),
        O::I64x2Sub => binary(e, I64X2, |b, x, y| b.ins().isub(x, y)),
        O::I16x8Mul => binary(e, I16X8, |b, x, y| b.ins().imul(x, y)),
        O::I32x4Mul => binary(e, I32X4, |b, x, y| b.ins().imul(x, y)),
        O::I64x2Mul => binary(e, I64X2, |b, x, y| b.ins().imul(x, y)),
        O::I8x16AddSatS => binary(e, I8X16, |b, x, y| b.ins().sadd_sat(x, y)),
        O::I16x8AddSatS => binary(e, I16X8, |b, x, y| b.ins().sadd_sat(x, y)),
        O::I8x16AddSatU => binary(e, I8X16, |b, x, y| b.ins().uadd_sat(x, y)),
        O::I16x8AddSatU => binary(e, I16X8, |b, x, y| b.ins().uadd_sat(x, y)),
        O::I8x16SubSatS => binary(e, I8X16, |b, x, y| b.ins().ssub_sat(x, y)),
        O::I16x8SubSatS => binary(e, I16X8, |b, x, y| b.ins().ssub_sat(x, y)),
        O::I8x16SubSatU => binary(e, I8X16, |b, x, y| b.ins().usub_sat(x, y)),
        O::I16x8SubSatU => binary(e, I16X8, |b, x, y| b.ins().usub_sat(x, y)),
        O::I8x16MinS => binary(e, I8X16, |b, x, y| b.ins().smin(x, y)),
        O::I16x8MinS => binary(e, I16X8, |b, x, y| b.ins().smin(x, y)),
        O::I32x4MinS => binary(e, I32X4, |b, x, y| b.ins().smin(x, y)),
        O::I8x16MinU => binary(e, I8X16, |b, x, y| b.ins().umin(x, y)),
        O::I16x8MinU => binary(e, I16X8, |b, x, y| b.ins().umin(x, y)),
        O::I32x4MinU => binary(e, I32X4, |b, x, y| b.ins().umin(x, y)),
        O::I8x16MaxS => binary(e, I8X16, |b, x, y| b.ins().smax(x, y)),
        O::I16x8MaxS => binary(e, I16X8, |b, x, y| b.ins().smax(x, y)),
        O::I32x4MaxS => binary(e, I32X4, |b, x, y| b.ins().smax(x, y)),
        O::I8x16MaxU => binary(e, I8X16, |b, x, y| b.ins().umax(x, y)),
        O::I16x8MaxU => binary(e, I16X8, |b, x, y| b.ins().umax(x, y)),
        O::I32x4MaxU => binary(e, I32X4, |b, x, y| b.ins().umax(x, y)),
        O::I8x16AvgrU => binary(e, I8X16, |b, x, y| b.ins().avg_round(x, y)),
        O::I16x8AvgrU => binary(e, I16X8, |b, x, y| b.ins().avg_round(x, y)),
        O::I16x8Q15MulrSatS => binary(e, I16X8, |b, x, y| b.ins().sqmul_round_sat(x, y)),
        O::I32x4DotI16x8S => binary(e, I16X8, |b, x, y| {
            let xl = b.ins().swiden_low(x);
            let yl = b.ins().swiden_low(y);
            let lo = b.ins().imul(xl, yl);
            let xh = b.ins().swiden_high(x);
            let yh = b.ins().swiden_high(y);
            let hi = b.ins().imul(xh, yh);
            b.ins().iadd_pairwise(lo, hi)
        }),
        O::I8x16Shl => shift(e, I8X16, |b, x, n| b.ins().ishl(x, n)),
        O::I16x8Shl => shift(e, I16X8, |b, x, n| b.ins().ishl(x, n)),
        O::I32x4Shl => shift(e, I32X4, |b, x, n| b.ins().ishl(x, n)),
        O::I64x2Shl => shift(e, I64X2, |b, x, n| b.ins().ishl(x, n)),
        O::I8x16ShrS => shift(e, I8X16, |b, x, n| b.ins().sshr(x, n)),
        O::I16x8ShrS => shift(e, I16X8, |b, x, n| b.ins().sshr(x, n)),
        O::I32x4ShrS => shift(e, I32X4, |b, x, n| b.ins().sshr(x, n)),
        O::I64x2ShrS => shift(e, I64X2, |b, x, n| b.ins().sshr(x, n)),
        O::I8x16ShrU => shift(e, I8X16, |b, x, n| b.ins().ushr(x, n)),
        O::I16x8ShrU => shift(e, I16X8, |b, x, n| b.ins().ushr(x, n)),
        O::I32x4ShrU => shift(e, I32X4, |b, x, n| b.ins().ushr(x, n)),
        O::I64x2ShrU => shift(e, I64X2, |b, x, n| b.ins().ushr(x, n)),

        // ---- narrowing and widening ---------------------------------------
        O::I8x16NarrowI16x8S => binary(e, I16X8, |b, x, y| b.ins().snarrow(x, y)),
        O::I8x16NarrowI16x8U => binary(e, I16X8, |b, x, y| b.ins().unarrow(x, y)),
        O::I16x8NarrowI32x4S => binary(e, I32X4, |b, x, y| b.ins().snarrow(x, y)),
        O::I16x8NarrowI32x4U => binary(e, I32X4, |b, x, y| b.ins().unarrow(x, y)),
        O::I16x8ExtendLowI8x16S => unary(e, I8X16, |b, x| widen(b, x, true, Half::Low)),
        O::I16x8ExtendHighI8x16S => unary(e, I8X16, |b, x| widen(b, x, true, Half::High)),
        O::I16x8ExtendLowI8x16U => unary(e, I8X16, |b, x| widen(b, x, false, Half::Low)),
        O::I16x8ExtendHighI8x16U => unary(e, I8X16, |b, x| widen(b, x, false, Half::High)),
        O::I32x4ExtendLowI16x8S => unary(e, I16X8, |b, x| widen(b, x, true, Half::Low)),
        O::I32x4ExtendHighI16x8S => unary(e, I16X8, |b, x| widen(b, x, true, Half::High)),
        O::I32x4ExtendLowI16x8U => unary(e, I16X8, |b, x| widen(b, x, false, Half::Low)),
        O::I32x4ExtendHighI16x8U => unary(e, I16X8, |b, x| widen(b, x, false, Half::High)),
        O::I64x2ExtendLowI32x4S => unary(e, I32X4, |b, x| widen(b, x, true, Half::Low)),
        O::I64x2ExtendHighI32x4S => unary(e, I32X4, |b, x| widen(b, x, true, Half::High)),
        O::I64x2ExtendLowI32x4U => unary(e, I32X4, |b, x| widen(b, x, false, Half::Low)),
        O::I64x2ExtendHighI32x4U => unary(e, I32X4, |b, x| widen(b, x, false, Half::High)),
        O::I16x8ExtAddPairwiseI8x16S => extadd_pairwise(e, I8X16, true),
        O::I16x8ExtAddPairwiseI8x16U => extadd_pairwise(e, I8X16, false),
        O::I32x4ExtAddPairwiseI16x8S => extadd_pairwise(e, I16X8, true),
        O::I32x4ExtAddPairwiseI16x8U => extadd_pairwise(e, I16X8, false),
        O::I16x8ExtMulLowI8x16S => extmul(e, I8X16, true, Half::Low),
        O::I16x8ExtMulHighI8x16S => extmul(e, I8X16, true, Half::High),
        O::I16x8ExtMulLowI8x16U => extmul(e, I8X16, false, Half::Low),
        O::I16x8ExtMulHighI8x16U => extmul(e, I8X16, false, Half::High),
        O::I32x4ExtMulLowI16x8S => extmul(e, I16X8, true, Half::Low),
        O::I32x4ExtMulHighI16x8S => extmul(e, I16X8, true, Half::High),
        O::I32x4ExtMulLowI16x8U => extmul(e, I16X8, false, Half::Low),
        O::I32x4ExtMulHighI16x8U => extmul(e, I16X8, false, Half::High),
        O::I64x2ExtMulLowI32x4S => extmul(e, I32X4, true, Half::Low),
        O::I64x2ExtMulHighI32x4S => extmul(e, I32X4, true, Half::High),
        O::I64x2ExtMulLowI32x4U => extmul(e, I32X4, false, Half::Low),
        O::I64x2ExtMulHighI32x4U => extmul(e, I32X4, false, Half::High),

        // ---- floating point -----------------------------------------------
        O::F32x4Abs => unary(e, F32X4, |b, x| b.ins().fabs(x)),
        O::F64x2Abs => unary(e, F64X2, |b, x| b.ins().fabs(x)),
        O::F32x4Neg => unary(e, F32X4, |b, x| b.ins().fneg(x)),
        O::F64x2Neg => unary(e, F64X2, |b, x| b.ins().fneg(x)),
        O::F32x4Sqrt => unary(e, F32X4, |b, x| b.ins().sqrt(x)),
        O::F64x2Sqrt => unary(e, F64X2, |b, x| b.ins().sqrt(x)),
        O::F32x4Ceil => unary(e, F32X4, |b, x| b.ins().ceil(x)),
        O::F64x2Ceil => unary(e, F64X2, |b, x| b.ins().ceil(x)),
        O::F32x4Floor => unary(e, F32X4, |b, x| b.ins().floor(x)),
        O::F64x2Floor => unary(e, F64X2, |b, x| b.ins().floor(x)),
        O::F32x4Trunc => unary(e, F32X4, |b, x| b.ins().trunc(x)),
        O::F64x2Trunc => unary(e, F64X2, |b, x| b.ins().trunc(x)),
        O::F32x4Nearest => unary(e, F32X4, |b, x| b.ins().nearest(x)),
        O::F64x2Nearest => unary(e, F64X2, |b, x| b.ins().nearest(x)),
        O::F32x4Add => binary(e, F32X4, |b, x, y| b.ins().fadd(x, y)),
        O::F64x2Add => binary(e, F64X2, |b, x, y| b.ins().fadd(x, y)),
        O::F32x4Sub => binary(e, F32X4, |b, x, y| b.ins().fsub(x, y)),
        O::F64x2Sub => binary(e, F64X2, |b, x, y| b.ins().fsub(x, y)),
        O::F32x4Mul => binary(e, F32X4, |b, x, y| b.ins().fmul(x, y)),
        O::F64x2Mul => binary(e, F64X2, |b, x, y| b.ins().fmul(x, y)),
        O::F32x4Div => binary(e, F32X4, |b, x, y| b.ins().fdiv(x, y)),
        O::F64x2Div => binary(e, F64X2, |b, x, y| b.ins().fdiv(x, y)),
        O::F32x4Min => binary(e, F32X4, |b, x, y| b.ins().fmin(x, y)),
        O::F64x2Min => binary(e, F64X2, |b, x, y| b.ins().fmin(x, y)),
        O::F32x4Max => binary(e, F32X4, |b, x, y| b.ins().fmax(x, y)),
        O::F64x2Max => binary(e, F64X2, |b, x, y| b.ins().fmax(x, y)),
        // pmin(x, y) = y < x ? y : x; pmax(x, y) = x < y ? y : x. The
        // operand order matches what the x64 backend turns into minps/maxps.
        O::F32x4PMin => pminmax(e, F32X4, true),
        O::F64x2PMin => pminmax(e, F64X2, true),
        O::F32x4PMax => pminmax(e, F32X4, false),
        O::F64x2PMax => pminmax(e, F64X2, false),

        // ---- conversions ------------------------------------------------
        O::F32x4ConvertI32x4S => unary(e, I32X4, |b, x| b.ins().fcvt_from_sint(F32X4, x)),
        O::F32x4ConvertI32x4U => unary(e, I32X4, |b, x| b.ins().fcvt_from_uint(F32X4, x)),
        O::F64x2ConvertLowI32x4S => unary(e, I32X4, |b, x| {
            let w = b.ins().swiden_low(x);
            b.ins().fcvt_from_sint(F64X2, w)
        }),
        O::F64x2ConvertLowI32x4U => unary(e, I32X4, |b, x| {
            let w = b.ins().uwiden_low(x);
            b.ins().fcvt_from_uint(F64X2, w)
        }),
        O::F64x2PromoteLowF32x4 => unary(e, F32X4, |b, x| b.ins().fvpromote_low(x)),
        O::F32x4DemoteF64x2Zero => unary(e, F64X2, |b, x| b.ins().fvdemote(x)),
        O::I32x4TruncSatF32x4S => unary(e, F32X4, |b, x| b.ins().fcvt_to_sint_sat(I32X4, x)),
        O::I32x4TruncSatF32x4U => unary(e, F32X4, |b, x| b.ins().fcvt_to_uint_sat(I32X4, x)),
        O::I32x4TruncSatF64x2SZero => unary(e, F64X2, |b, x| {
            // The x64 backend matches exactly this pattern (a zero `vconst`
            // of type I64X2) for cvttpd2dq.
            let c = b.ins().fcvt_to_sint_sat(I64X2, x);
            let z = vconst_of(b, I64X2, &[0; 16]);
            b.ins().snarrow(c, z)
        }),
        O::I32x4TruncSatF64x2UZero => unary(e, F64X2, |b, x| {
            let c = b.ins().fcvt_to_uint_sat(I64X2, x);
            let z = vconst_of(b, I64X2, &[0; 16]);
            b.ins().uunarrow(c, z)
        }),

        // ---- relaxed SIMD (WebAssembly 3.0) ----------------------------
        //
        // Every relaxed operator is lowered to one fixed choice among the
        // results the specification allows, the same on every host: the
        // non-relaxed operator where there is one, fused multiply-add, and
        // signed-by-signed dot products. So a module computes the
        // same bits on x86-64 and aarch64, with or without FMA, which a
        // Proto-Faaslet snapshot restored on another host and the
        // differential fuzzer both rely on. See the module docs for the
        // per-operator table.
        O::I8x16RelaxedSwizzle => return translate(e, &O::I8x16Swizzle),
        O::I32x4RelaxedTruncF32x4S => return translate(e, &O::I32x4TruncSatF32x4S),
        O::I32x4RelaxedTruncF32x4U => return translate(e, &O::I32x4TruncSatF32x4U),
        O::I32x4RelaxedTruncF64x2SZero => return translate(e, &O::I32x4TruncSatF64x2SZero),
        O::I32x4RelaxedTruncF64x2UZero => return translate(e, &O::I32x4TruncSatF64x2UZero),
        O::F32x4RelaxedMadd => madd(e, F32X4, false),
        O::F32x4RelaxedNmadd => madd(e, F32X4, true),
        O::F64x2RelaxedMadd => madd(e, F64X2, false),
        O::F64x2RelaxedNmadd => madd(e, F64X2, true),
        O::I8x16RelaxedLaneselect
        | O::I16x8RelaxedLaneselect
        | O::I32x4RelaxedLaneselect
        | O::I64x2RelaxedLaneselect => return translate(e, &O::V128Bitselect),
        O::F32x4RelaxedMin => return translate(e, &O::F32x4Min),
        O::F32x4RelaxedMax => return translate(e, &O::F32x4Max),
        O::F64x2RelaxedMin => return translate(e, &O::F64x2Min),
        O::F64x2RelaxedMax => return translate(e, &O::F64x2Max),
        O::I16x8RelaxedQ15mulrS => return translate(e, &O::I16x8Q15MulrSatS),
        O::I16x8RelaxedDotI8x16I7x16S => binary(e, I8X16, dot_i8x16_s),
        O::I32x4RelaxedDotI8x16I7x16AddS => {
            let acc = pop(e, I32X4);
            let y = pop(e, I8X16);
            let x = pop(e, I8X16);
            let b = e.builder();
            let d = dot_i8x16_s(b, x, y);
            let lo = b.ins().swiden_low(d);
            let hi = b.ins().swiden_high(d);
            let sum = b.ins().iadd_pairwise(lo, hi);
            let r = b.ins().iadd(sum, acc);
            push(e, r);
        }

        _ => return Ok(false),
    }
    Ok(true)
}

/// `a * b + c` (`negate`: `-a * b + c`), fused: one rounding, the same
/// bits on every host (a native FMA instruction where the CPU has one,
/// else libm's correctly rounded `fma` through a Cranelift libcall).
fn madd<'b>(e: &mut impl SimdEnv<'b>, ty: Type, negate: bool) {
    let c = pop(e, ty);
    let y = pop(e, ty);
    let x = pop(e, ty);
    let b = e.builder();
    let x = if negate { b.ins().fneg(x) } else { x };
    let r = b.ins().fma(x, y, c);
    push(e, r);
}

/// The `i16x8` dot product of two `i8x16`s, both read as signed: lane `i`
/// is `x[2i]*y[2i] + x[2i+1]*y[2i+1]`, wrapping (only reachable when
/// `y` is outside the `i7` range the operator promises).
fn dot_i8x16_s(b: &mut FunctionBuilder<'_>, x: Value, y: Value) -> Value {
    let xl = b.ins().swiden_low(x);
    let yl = b.ins().swiden_low(y);
    let lo = b.ins().imul(xl, yl);
    let xh = b.ins().swiden_high(x);
    let yh = b.ins().swiden_high(y);
    let hi = b.ins().imul(xh, yh);
    b.ins().iadd_pairwise(lo, hi)
}

fn extract<'b>(e: &mut impl SimdEnv<'b>, ty: Type, lane: u8, signed: Option<bool>) {
    let v = pop(e, ty);
    let b = e.builder();
    let x = b.ins().extractlane(v, lane);
    let r = match signed {
        Some(true) => b.ins().sextend(I32, x),
        Some(false) => b.ins().uextend(I32, x),
        None => x,
    };
    push(e, r);
}

fn replace<'b>(e: &mut impl SimdEnv<'b>, ty: Type, lane: u8) {
    let x = pop_scalar(e);
    let v = pop(e, ty);
    let b = e.builder();
    let x = if ty.lane_bits() < 32 {
        b.ins().ireduce(ty.lane_type(), x)
    } else {
        x
    };
    let r = b.ins().insertlane(v, x, lane);
    push(e, r);
}

fn all_true<'b>(e: &mut impl SimdEnv<'b>, ty: Type) {
    let x = pop(e, ty);
    let b = e.builder();
    let t = b.ins().vall_true(x);
    let r = b.ins().uextend(I32, t);
    push(e, r);
}

fn bitmask<'b>(e: &mut impl SimdEnv<'b>, ty: Type) {
    unary(e, ty, |b, x| b.ins().vhigh_bits(I32, x));
}

fn pminmax<'b>(e: &mut impl SimdEnv<'b>, ty: Type, min: bool) {
    binary(e, ty, |b, x, y| {
        let c = if min {
            b.ins().fcmp(FloatCC::LessThan, y, x)
        } else {
            b.ins().fcmp(FloatCC::LessThan, x, y)
        };
        let c = cast(b, ty, c);
        b.ins().bitselect(c, y, x)
    });
}
