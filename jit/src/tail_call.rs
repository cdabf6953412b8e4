//! Translation of the tail-call proposal's `return_call` and
//! `return_call_indirect`, and of typed function references'
//! `return_call_ref`. Wasm functions use Cranelift's `Tail` calling
//! convention, so these map onto Cranelift's `return_call` and
//! `return_call_indirect`; calls to imported functions go through
//! `return_call_indirect` with the funcref's code pointer and vmctx.
//!
//! A child module of `translate` so it can extend the private `Translator`.

use super::Translator;
use crate::abi;
use crate::error::CompileError;
use cranelift_codegen::ir::InstBuilder;

impl<'m, 'b> Translator<'m, 'b> {
    /// `return_call f`: a Cranelift `return_call` for defined functions;
    /// imported functions go through `return_call_indirect` with the
    /// funcref's code pointer and vmctx.
    pub(super) fn return_call(&mut self, function_index: u32) -> Result<(), CompileError> {
        let info = self.info();
        let ty = info.func_type(function_index);
        let n = ty.params.len();
        let mut a = vec![self.vmctx, self.vmctx];
        a.extend(self.popn(n));
        if function_index < info.num_imported_funcs {
            let off = info.offsets.funcref(function_index) as i32;
            let v = self.vmctx;
            let fptr = self.load_ro(v, off + abi::FUNCREF_FUNC_PTR);
            let callee = self.load_ro(v, off + abi::FUNCREF_VMCTX);
            a[0] = callee;
            let sig = self.sig_ref(info.funcs[function_index as usize]);
            self.b.ins().return_call_indirect(sig, fptr, &a);
        } else {
            let fref = match self.func_refs.get(&function_index) {
                Some(f) => *f,
                None => {
                    let f = (self.declare)(function_index, self.b.func);
                    self.func_refs.insert(function_index, f);
                    f
                }
            };
            self.b.ins().return_call(fref, &a);
        }
        self.reachable = false;
        Ok(())
    }

    /// `return_call_indirect`: the checks of `call_indirect`, then a tail
    /// call.
    pub(super) fn return_call_indirect(
        &mut self,
        type_index: u32,
        table: u32,
    ) -> Result<(), CompileError> {
        let info = self.info();
        let ty = &info.types[type_index as usize];
        let index = self.pop();
        let n = ty.params.len();
        let call_args = self.popn(n);
        let (fptr, callee) = self.indirect_callee(type_index, table, index);
        let mut a = vec![callee, self.vmctx];
        a.extend(call_args);
        let sig = self.sig_ref(type_index);
        self.b.ins().return_call_indirect(sig, fptr, &a);
        self.reachable = false;
        Ok(())
    }

    /// `return_call_ref $t`: the checks of `call_ref`, then a tail call.
    pub(super) fn return_call_ref(&mut self, type_index: u32) -> Result<(), CompileError> {
        let n = self.info().types[type_index as usize].params.len();
        let fr = self.pop();
        let call_args = self.popn(n);
        let (fptr, callee) = self.funcref_callee(type_index, fr, abi::TRAP_NULL_FUNC_REF);
        let mut a = vec![callee, self.vmctx];
        a.extend(call_args);
        let sig = self.sig_ref(type_index);
        self.b.ins().return_call_indirect(sig, fptr, &a);
        self.reachable = false;
        Ok(())
    }
}
