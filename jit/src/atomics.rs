//! Translation of the threads proposal's operators: atomic loads, stores,
//! read-modify-write and compare-exchange, `atomic.fence`, and
//! `memory.atomic.wait32/wait64/notify` (which call builtins).
//!
//! This is a child module of `translate` so it can extend the private
//! `Translator` without widening its visibility.
//!
//! Every atomic access is bounds-checked explicitly against the memory's
//! current length (whatever the [`BoundsChecks`](crate::BoundsChecks) mode)
//! and then checked for natural alignment, trapping with
//! [`abi::TRAP_MEMORY_OOB`] or [`abi::TRAP_UNALIGNED_ATOMIC`]. After both
//! checks the access cannot fault, so the Cranelift atomic instructions are
//! emitted with trusted (non-trapping, aligned) flags and need no trap-site
//! metadata.

use super::{BoundsCheck, Translator};
use crate::abi;
use crate::error::CompileError;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, AtomicRmwOp, InstBuilder, MemFlagsData, Type, Value};
use wasmparser::{MemArg, Operator};

/// Flags for an atomic access already checked for bounds and alignment.
fn checked() -> MemFlagsData {
    MemFlagsData::trusted()
}

impl<'m, 'b> Translator<'m, 'b> {
    /// Effective address (i64, `index + offset`, cannot overflow) of an
    /// access of `size` bytes, bounds-checked against the current length
    /// whatever the bounds mode (by `Translator::bounds_checked`, the
    /// check every memory access shares) and then checked for natural
    /// alignment. Returns (memory pointer, effective address).
    ///
    /// Since the check became shared, the end is computed as
    /// `index + (offset + size)` rather than `(index + offset) + size`:
    /// the same value, as neither sum can overflow.
    /// Also returns the out-of-bounds condition, for the Spectre guard.
    fn atomic_ea(&mut self, memarg: &MemArg, index: Value, size: u32) -> (Value, Value, Value) {
        let c = self.bounds_checked(memarg, index, size, BoundsCheck::Always, false);
        let ea = if memarg.offset == 0 {
            c.index
        } else {
            // index < 2^32 and offset < 2^32 (32-bit memories): no overflow.
            self.b.ins().iadd_imm_s(c.index, memarg.offset as i64)
        };
        self.check_aligned(ea, size);
        let oob = c.oob.expect("BoundsCheck::Always emits the check");
        (c.mem_ptr, ea, oob)
    }

    /// Native address of a checked, aligned atomic access of `size` bytes
    /// (Spectre-guarded like every explicitly checked access).
    fn atomic_addr(&mut self, memarg: &MemArg, index: Value, size: u32) -> Value {
        let (mp, ea, oob) = self.atomic_ea(memarg, index, size);
        let base = self.load_ro(mp, abi::MEMORY_BASE);
        let addr = self.b.ins().iadd(base, ea);
        self.spectre_guard(Some(oob), addr)
    }

    fn check_aligned(&mut self, ea: Value, size: u32) {
        if size > 1 {
            let low = self.b.ins().band_imm_s(ea, i64::from(size - 1));
            self.b.ins().trapnz(low, abi::TRAP_UNALIGNED_ATOMIC);
        }
    }

    /// Zero-extends a narrow loaded value to the operator's result type.
    fn widen(&mut self, v: Value, mem_ty: Type, ty: Type) -> Value {
        if mem_ty == ty {
            v
        } else {
            self.b.ins().uextend(ty, v)
        }
    }

    /// Narrows an operand to the access width.
    fn narrow(&mut self, v: Value, mem_ty: Type, ty: Type) -> Value {
        if mem_ty == ty {
            v
        } else {
            self.b.ins().ireduce(mem_ty, v)
        }
    }

    fn atomic_load(&mut self, memarg: &MemArg, ty: Type, mem_ty: Type) {
        let index = self.pop();
        let addr = self.atomic_addr(memarg, index, mem_ty.bytes());
        let v = self.b.ins().atomic_load(mem_ty, checked(), addr);
        let v = self.widen(v, mem_ty, ty);
        self.push(v);
    }

    fn atomic_store(&mut self, memarg: &MemArg, ty: Type, mem_ty: Type) {
        let (index, val) = self.pop2();
        let addr = self.atomic_addr(memarg, index, mem_ty.bytes());
        let val = self.narrow(val, mem_ty, ty);
        self.b.ins().atomic_store(checked(), val, addr);
    }

    fn atomic_rmw(&mut self, memarg: &MemArg, ty: Type, mem_ty: Type, op: AtomicRmwOp) {
        let (index, val) = self.pop2();
        let addr = self.atomic_addr(memarg, index, mem_ty.bytes());
        let val = self.narrow(val, mem_ty, ty);
        let old = self.b.ins().atomic_rmw(mem_ty, checked(), op, addr, val);
        let old = self.widen(old, mem_ty, ty);
        self.push(old);
    }

    fn atomic_cmpxchg(&mut self, memarg: &MemArg, ty: Type, mem_ty: Type) {
        let (index, expected, replacement) = self.pop3();
        let addr = self.atomic_addr(memarg, index, mem_ty.bytes());
        // The loaded (narrow) value is compared with `expected` wrapped to
        // the access width, which is what a narrow CAS does.
        let expected = self.narrow(expected, mem_ty, ty);
        let replacement = self.narrow(replacement, mem_ty, ty);
        let old = self
            .b
            .ins()
            .atomic_cas(checked(), addr, expected, replacement);
        let old = self.widen(old, mem_ty, ty);
        self.push(old);
    }

    /// `memory.atomic.wait32/64`: checks bounds and alignment here, then
    /// calls the builtin. Waiting on a memory that is not shared traps.
    fn atomic_wait(&mut self, memarg: &MemArg, wide: bool) {
        let (index, expected, timeout) = self.pop3();
        let size = if wide { 8 } else { 4 };
        let mem = Self::memarg_memory(memarg);
        let (_, ea, _) = self.atomic_ea(memarg, index, size);
        if !self.info().memories[mem as usize].shared {
            self.b.ins().trap(abi::TRAP_ATOMIC_WAIT_NON_SHARED);
            self.reachable = false;
            return;
        }
        let m = self.i32c(mem);
        let (idx, ety) = if wide {
            (abi::builtins::MEMORY_ATOMIC_WAIT64, types::I64)
        } else {
            (abi::builtins::MEMORY_ATOMIC_WAIT32, types::I32)
        };
        let r = self
            .builtin(
                idx,
                &[types::I32, types::I64, ety, types::I64],
                Some(types::I32),
                &[m, ea, expected, timeout],
            )
            .expect("wait builtin returns a value");
        // A wait the store's deadline cut short is an interruption.
        let cut = self
            .b
            .ins()
            .icmp_imm_s(IntCC::Equal, r, i64::from(abi::WAIT_INTERRUPTED));
        self.b.ins().trapnz(cut, abi::TRAP_INTERRUPTED);
        self.push(r);
    }

    /// `memory.atomic.notify`: checks bounds and alignment, then calls the
    /// builtin (which returns 0 at once for a memory that is not shared).
    fn atomic_notify(&mut self, memarg: &MemArg) {
        let (index, count) = self.pop2();
        let mem = Self::memarg_memory(memarg);
        let (_, ea, _) = self.atomic_ea(memarg, index, 4);
        let m = self.i32c(mem);
        let r = self
            .builtin(
                abi::builtins::MEMORY_ATOMIC_NOTIFY,
                &[types::I32, types::I64, types::I32],
                Some(types::I32),
                &[m, ea, count],
            )
            .expect("notify builtin returns a value");
        self.push(r);
    }

    /// Translates `op` if it is a threads-proposal operator; returns whether
    /// it was one.
    pub(super) fn atomic_op(&mut self, op: &Operator<'_>) -> Result<bool, CompileError> {
        use types::{I16, I32, I64, I8};
        use AtomicRmwOp as R;
        use Operator as O;
        match *op {
            O::AtomicFence { .. } => {
                self.b.ins().fence();
            }
            O::MemoryAtomicNotify { ref memarg } => self.atomic_notify(memarg),
            O::MemoryAtomicWait32 { ref memarg } => self.atomic_wait(memarg, false),
            O::MemoryAtomicWait64 { ref memarg } => self.atomic_wait(memarg, true),

            O::I32AtomicLoad { ref memarg } => self.atomic_load(memarg, I32, I32),
            O::I64AtomicLoad { ref memarg } => self.atomic_load(memarg, I64, I64),
            O::I32AtomicLoad8U { ref memarg } => self.atomic_load(memarg, I32, I8),
            O::I32AtomicLoad16U { ref memarg } => self.atomic_load(memarg, I32, I16),
            O::I64AtomicLoad8U { ref memarg } => self.atomic_load(memarg, I64, I8),
            O::I64AtomicLoad16U { ref memarg } => self.atomic_load(memarg, I64, I16),
            O::I64AtomicLoad32U { ref memarg } => self.atomic_load(memarg, I64, I32),

            O::I32AtomicStore { ref memarg } => self.atomic_store(memarg, I32, I32),
            O::I64AtomicStore { ref memarg } => self.atomic_store(memarg, I64, I64),
            O::I32AtomicStore8 { ref memarg } => self.atomic_store(memarg, I32, I8),
            O::I32AtomicStore16 { ref memarg } => self.atomic_store(memarg, I32, I16),
            O::I64AtomicStore8 { ref memarg } => self.atomic_store(memarg, I64, I8),
            O::I64AtomicStore16 { ref memarg } => self.atomic_store(memarg, I64, I16),
            O::I64AtomicStore32 { ref memarg } => self.atomic_store(memarg, I64, I32),

            O::I32AtomicRmwAdd { ref memarg } => self.atomic_rmw(memarg, I32, I32, R::Add),
            O::I64AtomicRmwAdd { ref memarg } => self.atomic_rmw(memarg, I64, I64, R::Add),
            O::I32AtomicRmw8AddU { ref memarg } => self.atomic_rmw(memarg, I32, I8, R::Add),
            O::I32AtomicRmw16AddU { ref memarg } => self.atomic_rmw(memarg, I32, I16, R::Add),
            O::I64AtomicRmw8AddU { ref memarg } => self.atomic_rmw(memarg, I64, I8, R::Add),
            O::I64AtomicRmw16AddU { ref memarg } => self.atomic_rmw(memarg, I64, I16, R::Add),
            O::I64AtomicRmw32AddU { ref memarg } => self.atomic_rmw(memarg, I64, I32, R::Add),

            O::I32AtomicRmwSub { ref memarg } => self.atomic_rmw(memarg, I32, I32, R::Sub),
            O::I64AtomicRmwSub { ref memarg } => self.atomic_rmw(memarg, I64, I64, R::Sub),
            O::I32AtomicRmw8SubU { ref memarg } => self.atomic_rmw(memarg, I32, I8, R::Sub),
            O::I32AtomicRmw16SubU { ref memarg } => self.atomic_rmw(memarg, I32, I16, R::Sub),
            O::I64AtomicRmw8SubU { ref memarg } => self.atomic_rmw(memarg, I64, I8, R::Sub),
            O::I64AtomicRmw16SubU { ref memarg } => self.atomic_rmw(memarg, I64, I16, R::Sub),
            O::I64AtomicRmw32SubU { ref memarg } => self.atomic_rmw(memarg, I64, I32, R::Sub),

            O::I32AtomicRmwAnd { ref memarg } => self.atomic_rmw(memarg, I32, I32, R::And),
            O::I64AtomicRmwAnd { ref memarg } => self.atomic_rmw(memarg, I64, I64, R::And),
            O::I32AtomicRmw8AndU { ref memarg } => self.atomic_rmw(memarg, I32, I8, R::And),
            O::I32AtomicRmw16AndU { ref memarg } => self.atomic_rmw(memarg, I32, I16, R::And),
            O::I64AtomicRmw8AndU { ref memarg } => self.atomic_rmw(memarg, I64, I8, R::And),
            O::I64AtomicRmw16AndU { ref memarg } => self.atomic_rmw(memarg, I64, I16, R::And),
            O::I64AtomicRmw32AndU { ref memarg } => self.atomic_rmw(memarg, I64, I32, R::And),

            O::I32AtomicRmwOr { ref memarg } => self.atomic_rmw(memarg, I32, I32, R::Or),
            O::I64AtomicRmwOr { ref memarg } => self.atomic_rmw(memarg, I64, I64, R::Or),
            O::I32AtomicRmw8OrU { ref memarg } => self.atomic_rmw(memarg, I32, I8, R::Or),
            O::I32AtomicRmw16OrU { ref memarg } => self.atomic_rmw(memarg, I32, I16, R::Or),
            O::I64AtomicRmw8OrU { ref memarg } => self.atomic_rmw(memarg, I64, I8, R::Or),
            O::I64AtomicRmw16OrU { ref memarg } => self.atomic_rmw(memarg, I64, I16, R::Or),
            O::I64AtomicRmw32OrU { ref memarg } => self.atomic_rmw(memarg, I64, I32, R::Or),

            O::I32AtomicRmwXor { ref memarg } => self.atomic_rmw(memarg, I32, I32, R::Xor),
            O::I64AtomicRmwXor { ref memarg } => self.atomic_rmw(memarg, I64, I64, R::Xor),
            O::I32AtomicRmw8XorU { ref memarg } => self.atomic_rmw(memarg, I32, I8, R::Xor),
            O::I32AtomicRmw16XorU { ref memarg } => self.atomic_rmw(memarg, I32, I16, R::Xor),
            O::I64AtomicRmw8XorU { ref memarg } => self.atomic_rmw(memarg, I64, I8, R::Xor),
            O::I64AtomicRmw16XorU { ref memarg } => self.atomic_rmw(memarg, I64, I16, R::Xor),
            O::I64AtomicRmw32XorU { ref memarg } => self.atomic_rmw(memarg, I64, I32, R::Xor),

            O::I32AtomicRmwXchg { ref memarg } => self.atomic_rmw(memarg, I32, I32, R::Xchg),
            O::I64AtomicRmwXchg { ref memarg } => self.atomic_rmw(memarg, I64, I64, R::Xchg),
            O::I32AtomicRmw8XchgU { ref memarg } => self.atomic_rmw(memarg, I32, I8, R::Xchg),
            O::I32AtomicRmw16XchgU { ref memarg } => self.atomic_rmw(memarg, I32, I16, R::Xchg),
            O::I64AtomicRmw8XchgU { ref memarg } => self.atomic_rmw(memarg, I64, I8, R::Xchg),
            O::I64AtomicRmw16XchgU { ref memarg } => self.atomic_rmw(memarg, I64, I16, R::Xchg),
            O::I64AtomicRmw32XchgU { ref memarg } => self.atomic_rmw(memarg, I64, I32, R::Xchg),

            O::I32AtomicRmwCmpxchg { ref memarg } => self.atomic_cmpxchg(memarg, I32, I32),
            O::I64AtomicRmwCmpxchg { ref memarg } => self.atomic_cmpxchg(memarg, I64, I64),
            O::I32AtomicRmw8CmpxchgU { ref memarg } => self.atomic_cmpxchg(memarg, I32, I8),
            O::I32AtomicRmw16CmpxchgU { ref memarg } => self.atomic_cmpxchg(memarg, I32, I16),
            O::I64AtomicRmw8CmpxchgU { ref memarg } => self.atomic_cmpxchg(memarg, I64, I8),
            O::I64AtomicRmw16CmpxchgU { ref memarg } => self.atomic_cmpxchg(memarg, I64, I16),
            O::I64AtomicRmw32CmpxchgU { ref memarg } => self.atomic_cmpxchg(memarg, I64, I32),

            _ => return Ok(false),
        }
        Ok(true)
    }
}
