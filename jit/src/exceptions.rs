//! Translation of exception handling (WebAssembly 3.0): `try_table`,
//! `throw`, `throw_ref`.
//!
//! Exceptions unwind by *checked returns*, not by walking native frames:
//!
//! * `throw` asks the runtime (builtin `THROW`) to allocate the exception
//!   (tag address and payload) and make it pending in
//!   [`abi::VMStoreContext::pending_exception`]; `throw_ref` makes its
//!   operand pending directly. Either then branches to the *throw target*:
//!   the dispatch block of the innermost enclosing `try_table` of this
//!   function, or the function's propagate block, which returns (with zero
//!   results) to the caller.
//! * After every call, code compiled with exceptions checks the pending
//!   word and, if set, branches to its throw target (`call_results`).
//! * A `try_table`'s dispatch block compares the pending exception's tag
//!   with each `catch` clause's in order; the first match clears the
//!   pending word and branches to the clause's label with the payload (and,
//!   for `catch_ref` / `catch_all_ref`, the exnref); no match goes on to
//!   the enclosing throw target.
//! * The runtime clears the pending word when a call from the host
//!   returns, and reports a non-zero one as an uncaught exception.
//!
//! So no unwinder, no exception tables, nothing per host or in the code
//! cache format: the cost is one load and one predicted branch after every
//! call, paid only by code compiled with `CompileConfig::exceptions`. A
//! `return_call` leaves its frame (and its handlers) before the callee
//! runs, as the specification says, so it is not followed by a check.
//!
//! A child module of `translate` so it can extend the private `Translator`.

use super::{args, ir_type, Translator};
use crate::abi;
use crate::error::CompileError;
use crate::flags::rw;
use cranelift_codegen::ir::{
    types, Block, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value,
};
use wasmparser::{Catch, TryTable as WasmTryTable};

/// The handlers of a live `try_table` frame.
pub(super) struct TryTable {
    /// Where a throw inside its body goes.
    dispatch: Block,
    /// Whether anything branches to `dispatch`.
    used: bool,
    /// Its clauses, in order.
    catches: Vec<Catch>,
}

/// Trusted flags for exception objects (runtime-owned, always valid while
/// the store lives, never written by wasm code).
fn exn_flags() -> MemFlagsData {
    MemFlagsData::trusted().with_readonly()
}

impl<'m, 'b> Translator<'m, 'b> {
    /// `try_table`: a block whose body's throws go to its dispatch block.
    pub(super) fn try_table(&mut self, t: &WasmTryTable) -> Result<(), CompileError> {
        let mut f = self.push_frame(super::FrameKind::Block, t.ty)?;
        f.try_table = Some(TryTable {
            dispatch: self.b.create_block(),
            used: false,
            catches: t.catches.clone(),
        });
        self.control.push(f);
        Ok(())
    }

    /// `end`: of a `try_table`, the frame ends as a block's does, then its
    /// dispatch block is emitted (if anything threw into it).
    pub(super) fn end(&mut self) {
        let handlers =
            self.control
                .last_mut()
                .and_then(|f| if f.dead { None } else { f.try_table.take() });
        self.end_frame();
        if let Some(h) = handlers.filter(|h| h.used) {
            let resume = self.b.current_block();
            self.emit_dispatch(h);
            if let Some(resume) = resume {
                self.b.switch_to_block(resume);
            }
        }
    }

    /// Where an exception thrown here goes: the innermost enclosing live
    /// `try_table`'s dispatch block, else the propagate block.
    fn throw_target(&mut self) -> Block {
        for f in self.control.iter_mut().rev() {
            if let Some(h) = &mut f.try_table {
                h.used = true;
                return h.dispatch;
            }
        }
        match self.propagate {
            Some(b) => b,
            None => {
                let b = self.b.create_block();
                self.propagate = Some(b);
                b
            }
        }
    }

    /// After a call: if the callee left an exception pending, go to the
    /// throw target. Nothing without `CompileConfig::exceptions`.
    pub(super) fn check_pending_exception(&mut self) {
        if !self.env.config.exceptions {
            return;
        }
        let store = self.vmctx_ptr(abi::VMCTX_STORE as u32);
        let pending = self
            .b
            .ins()
            .load(types::I64, rw(), store, abi::STORE_PENDING_EXCEPTION);
        let target = self.throw_target();
        let cont = self.b.create_block();
        self.b.ins().brif(pending, target, &[], cont, &[]);
        self.b.switch_to_block(cont);
        self.b.seal_block(cont);
    }

    /// `throw $tag`: the payload goes to the runtime through a stack
    /// array of 16-byte slots; the runtime makes the exception pending.
    pub(super) fn throw(&mut self, tag_index: u32) {
        let info = self.info();
        let n = info.types[info.tags[tag_index as usize] as usize]
            .params
            .len();
        let vals = self.popn(n);
        let size = 16 * (n.max(1) as u32);
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            size,
            4,
        ));
        for (i, v) in vals.iter().enumerate() {
            self.b
                .ins()
                .stack_store(types::I64, *v, slot, (16 * i) as i32);
        }
        let values = self.b.ins().stack_addr(types::I64, slot, 0);
        let off = info.offsets.tag(tag_index);
        let tag = self.vmctx_ptr(off);
        let count = self.i32c(n as u32);
        let r = self
            .builtin(
                abi::builtins::THROW,
                &[types::I64, types::I64, types::I32],
                Some(types::I32),
                &[tag, values, count],
            )
            .expect("THROW returns a status");
        self.b.ins().trapnz(r, abi::TRAP_EXCEPTION_LIMIT);
        let target = self.throw_target();
        self.b.ins().jump(target, &[]);
        self.reachable = false;
    }

    /// `throw_ref`: a null reference traps; any other becomes pending.
    pub(super) fn throw_ref(&mut self) {
        let exn = self.pop();
        self.b.ins().trapz(exn, abi::TRAP_NULL_EXNREF);
        self.set_pending(exn);
        let target = self.throw_target();
        self.b.ins().jump(target, &[]);
        self.reachable = false;
    }

    fn set_pending(&mut self, exn: Value) {
        let store = self.vmctx_ptr(abi::VMCTX_STORE as u32);
        self.b
            .ins()
            .store(rw(), exn, store, abi::STORE_PENDING_EXCEPTION);
    }

    /// The dispatch block of a `try_table` whose frame has just been
    /// popped (so catch labels resolve in the context around it).
    fn emit_dispatch(&mut self, h: TryTable) {
        self.b.switch_to_block(h.dispatch);
        self.b.seal_block(h.dispatch);
        let store = self.vmctx_ptr(abi::VMCTX_STORE as u32);
        let exn = self
            .b
            .ins()
            .load(types::I64, rw(), store, abi::STORE_PENDING_EXCEPTION);
        let tag = self
            .b
            .ins()
            .load(types::I64, exn_flags(), exn, abi::EXN_TAG);
        for c in &h.catches {
            let (tag_index, label, with_ref) = match *c {
                Catch::One { tag, label } => (Some(tag), label, false),
                Catch::OneRef { tag, label } => (Some(tag), label, true),
                Catch::All { label } => (None, label, false),
                Catch::AllRef { label } => (None, label, true),
            };
            let next = tag_index.map(|t| {
                let want = self.vmctx_ptr(self.info().offsets.tag(t));
                let eq =
                    self.b
                        .ins()
                        .icmp(cranelift_codegen::ir::condcodes::IntCC::Equal, tag, want);
                let matched = self.b.create_block();
                let next = self.b.create_block();
                self.b.ins().brif(eq, matched, &[], next, &[]);
                self.b.switch_to_block(matched);
                self.b.seal_block(matched);
                next
            });
            // Caught: no longer pending.
            let zero = self.b.ins().iconst(types::I64, 0);
            self.set_pending(zero);
            let mut vals = Vec::new();
            if let Some(t) = tag_index {
                let info = self.info();
                let params = &info.types[info.tags[t as usize] as usize].params;
                if !params.is_empty() {
                    let base = self
                        .b
                        .ins()
                        .load(types::I64, exn_flags(), exn, abi::EXN_VALUES);
                    for (i, p) in params.iter().enumerate() {
                        let v = self
                            .b
                            .ins()
                            .load(ir_type(*p), exn_flags(), base, (16 * i) as i32);
                        vals.push(v);
                    }
                }
            }
            if with_ref {
                vals.push(exn);
            }
            let (target, _) = self.branch_target(label);
            self.b.ins().jump(target, &args(&vals));
            match next {
                Some(next) => {
                    self.b.switch_to_block(next);
                    self.b.seal_block(next);
                }
                // A catch_all catches everything: later clauses are dead.
                None => return,
            }
        }
        // No clause matched: on to the enclosing handler.
        let outer = self.throw_target();
        self.b.ins().jump(outer, &[]);
    }

    /// Emits the propagate block, if used: return zero results with the
    /// exception still pending (the caller checks it).
    pub(super) fn finish_propagate(&mut self) {
        let Some(b) = self.propagate else {
            return;
        };
        self.b.switch_to_block(b);
        self.b.seal_block(b);
        let results = self.func_results.clone();
        let vals: Vec<Value> = results
            .iter()
            .map(|t| match *t {
                types::F32 => self.b.ins().f32const(0.0),
                types::F64 => self.b.ins().f64const(0.0),
                types::I8X16 => crate::simd::zero(&mut self.b),
                t => self.b.ins().iconst(t, 0),
            })
            .collect();
        self.b.ins().return_(&vals);
    }
}
