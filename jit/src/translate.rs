//! Translation of one function body from wasm operators to Cranelift IR.

use crate::abi;
use crate::environ::val_type;
use crate::error::CompileError;
use crate::types::{FuncType, ModuleInfo, ValType};
use crate::{BoundsChecks, CompileConfig};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    self, types, AbiParam, ArgumentPurpose, Block, BlockArg, FuncRef, Function, GlobalValueData,
    InstBuilder, JumpTableData, MemFlagsData, SigRef, Signature, SourceLoc, TrapCode, Type, Value,
};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use std::collections::HashMap;
use wasmparser::{BlockType, FunctionBody, MemArg, Operator};

#[path = "atomics.rs"]
mod atomics;
#[path = "exceptions.rs"]
mod exceptions;
#[path = "gc.rs"]
mod gc;
#[path = "tail_call.rs"]
mod tail_call;

/// Cranelift type of a wasm value type.
pub(crate) fn ir_type(t: ValType) -> Type {
    match t {
        ValType::I32 => types::I32,
        ValType::I64 => types::I64,
        ValType::F32 => types::F32,
        ValType::F64 => types::F64,
        ValType::V128 => types::I8X16,
        ValType::FuncRef | ValType::ExternRef | ValType::ExnRef | ValType::AnyRef => types::I64,
    }
}

/// The wasm-ABI signature of a function of type `ty`.
pub(crate) fn wasm_signature(ty: &FuncType) -> Signature {
    let mut sig = Signature::new(CallConv::Tail);
    sig.params
        .push(AbiParam::special(types::I64, ArgumentPurpose::VMContext));
    sig.params.push(AbiParam::new(types::I64));
    sig.params
        .extend(ty.params.iter().map(|t| AbiParam::new(ir_type(*t))));
    sig.returns
        .extend(ty.results.iter().map(|t| AbiParam::new(ir_type(*t))));
    sig
}

// ---- memory flags and alias regions ---------------------------------------
//
// Issue 14, the main cause of our code being up to 2.4x slower than
// wasmtime's on loop kernels: Cranelift only moves or merges a load when
// its flags say it may. Before, every linear-memory access reloaded the
// `VMMemory` pointer from the vmctx and the memory's base from it (two
// dependent loads per access), and none of them was hoisted out of loops:
//
// * the vmctx-derived pointers were `readonly` but not `can_move`, and
//   Cranelift's egraph treats a load as pure (GVN, LICM) only with
//   `readonly + notrap + can_move` (`is_pure_for_egraph`);
// * every heap access had no alias region, and a store without a region is
//   a fence for alias analysis: after each `i32.store`, the next access
//   reloaded the base, the length (explicit mode), the global pointers...
//
// Now the immutable runtime words (see `ro`) are pure loads: GVN merges
// them and LICM hoists them out of loops, so a hot loop keeps the memory
// base in a register. Mutable runtime words and wasm-visible state are
// split into disjoint alias regions, so a heap store no longer forces a
// reload of a global, a table bound or the memory length.

// The flags and alias regions themselves live in `crate::flags`, below
// both this module and `simd`.
use crate::flags::{declare_alias_regions, globals, heap, ro, rw, table_elems};

fn args(vals: &[Value]) -> Vec<BlockArg> {
    vals.iter().map(|v| BlockArg::Value(*v)).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    Block,
    Loop,
    If,
    Function,
}

struct Frame {
    kind: FrameKind,
    /// Block after the construct; its params are the results.
    dest: Block,
    /// Loop header (branch target of loops).
    header: Option<Block>,
    /// Else block of an `if` not yet consumed by `else`.
    else_block: Option<Block>,
    params: Vec<Type>,
    results: Vec<Type>,
    /// Stack height below the block's params.
    height: usize,
    /// Whether anything branches to `dest`.
    dest_used: bool,
    /// Frame was opened while unreachable: only nesting bookkeeping.
    dead: bool,
    /// For a live `try_table`: its handlers (see `exceptions.rs`).
    try_table: Option<exceptions::TryTable>,
}

/// Static context for translating the functions of one module.
pub(crate) struct ModuleEnv<'m> {
    pub info: &'m ModuleInfo,
    pub config: &'m CompileConfig,
}

struct Translator<'m, 'b> {
    env: &'m ModuleEnv<'m>,
    b: FunctionBuilder<'b>,
    vmctx: Value,
    locals: Vec<(Variable, Type)>,
    stack: Vec<Value>,
    control: Vec<Frame>,
    reachable: bool,
    func_refs: HashMap<u32, FuncRef>,
    sig_refs: HashMap<u32, SigRef>,
    builtin_sigs: HashMap<usize, SigRef>,
    declare: &'m mut dyn FnMut(u32, &mut Function) -> FuncRef,
    /// Each memory's length as last loaded (see `refresh_memory_lengths`).
    mem_lens: Vec<Variable>,
    /// The function's result types.
    func_results: Vec<Type>,
    /// The block that returns with an exception pending (zero results),
    /// once something needs it (see `exceptions.rs`).
    propagate: Option<Block>,
    /// The stack array GC operations of few operands share (`gc.rs`).
    gc_slot: Option<ir::StackSlot>,
}

fn block_type(info: &ModuleInfo, bt: BlockType) -> Result<(Vec<Type>, Vec<Type>), CompileError> {
    Ok(match bt {
        BlockType::Empty => (vec![], vec![]),
        BlockType::Type(t) => {
            let t = val_type(t)?;
            (vec![], vec![ir_type(t)])
        }
        BlockType::FuncType(i) => {
            let ty = &info.types[i as usize];
            (
                ty.params.iter().map(|t| ir_type(*t)).collect(),
                ty.results.iter().map(|t| ir_type(*t)).collect(),
            )
        }
    })
}

/// Translates the body of defined function `func_index` into `func`, whose
/// signature must already be set.
pub(crate) fn translate_function(
    env: &ModuleEnv<'_>,
    func_index: u32,
    body: &FunctionBody<'_>,
    func: &mut Function,
    fctx: &mut FunctionBuilderContext,
    declare: &mut dyn FnMut(u32, &mut Function) -> FuncRef,
    frontend: cranelift_codegen::isa::TargetFrontendConfig,
) -> Result<(), CompileError> {
    let info = env.info;
    let ty = info.func_type(func_index);
    declare_alias_regions(func);
    let mut b = FunctionBuilder::new(func, fctx);

    // Stack limit: vmctx -> store -> stack_limit.
    let vmctx_gv = b.create_global_value(GlobalValueData::VMContext);
    let ro_flags = b.func.dfg.mem_flags.insert_unchecked(ro());
    let store_gv = b.create_global_value(GlobalValueData::Load {
        base: vmctx_gv,
        offset: abi::VMCTX_STORE.into(),
        global_type: types::I64,
        flags: ro_flags,
    });
    let limit_gv = b.create_global_value(GlobalValueData::Load {
        base: store_gv,
        offset: abi::STORE_STACK_LIMIT.into(),
        global_type: types::I64,
        flags: ro_flags,
    });
    b.func.stack_limit = Some(limit_gv);

    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let params = b.block_params(entry).to_vec();
    let vmctx = params[0];

    let mut locals = Vec::new();
    for (i, t) in ty.params.iter().enumerate() {
        let t = ir_type(*t);
        let var = b.declare_var(t);
        b.def_var(var, params[i + 2]);
        locals.push((var, t));
    }
    let mut lr = body.get_locals_reader().map_err(CompileError::malformed)?;
    for _ in 0..lr.get_count() {
        let (count, t) = lr.read().map_err(CompileError::malformed)?;
        let t = ir_type(val_type(t)?);
        for _ in 0..count {
            let var = b.declare_var(t);
            let zero = match t {
                types::F32 => b.ins().f32const(0.0),
                types::F64 => b.ins().f64const(0.0),
                types::I8X16 => crate::simd::zero(&mut b),
                _ => b.ins().iconst(t, 0),
            };
            b.def_var(var, zero);
            locals.push((var, t));
        }
    }

    let results: Vec<Type> = ty.results.iter().map(|t| ir_type(*t)).collect();
    let ret = b.create_block();
    for t in &results {
        b.append_block_param(ret, *t);
    }
    let mut tr = Translator {
        env,
        b,
        vmctx,
        locals,
        stack: Vec::new(),
        control: vec![Frame {
            kind: FrameKind::Function,
            dest: ret,
            header: None,
            else_block: None,
            params: vec![],
            results: results.clone(),
            height: 0,
            dest_used: false,
            dead: false,
            try_table: None,
        }],
        reachable: true,
        func_refs: HashMap::new(),
        sig_refs: HashMap::new(),
        builtin_sigs: HashMap::new(),
        declare,
        mem_lens: Vec::new(),
        propagate: None,
        gc_slot: None,
        func_results: results,
    };
    for _ in 0..info.memories.len() {
        let v = tr.b.declare_var(types::I64);
        tr.mem_lens.push(v);
    }
    tr.refresh_memory_lengths();
    tr.epoch_check();

    let mut ops = body
        .get_operators_reader()
        .map_err(CompileError::malformed)?;
    while !ops.eof() {
        let (op, offset) = ops.read_with_offset().map_err(CompileError::malformed)?;
        tr.b.set_srcloc(SourceLoc::new(offset as u32));
        tr.op(&op).map_err(|e| e.at(offset as usize))?;
    }
    // The final `end` switched to the return block.
    if tr.reachable {
        let n = tr.stack.len();
        let vals = tr.stack[..n].to_vec();
        tr.b.ins().return_(&vals);
    }
    tr.finish_propagate();
    tr.b.finalize(frontend);
    Ok(())
}

impl<'m, 'b> Translator<'m, 'b> {
    fn info(&self) -> &'m ModuleInfo {
        self.env.info
    }

    fn pop(&mut self) -> Value {
        self.stack.pop().expect("validated: value stack underflow")
    }
    fn pop2(&mut self) -> (Value, Value) {
        let y = self.pop();
        let x = self.pop();
        (x, y)
    }
    fn pop3(&mut self) -> (Value, Value, Value) {
        let z = self.pop();
        let (x, y) = self.pop2();
        (x, y, z)
    }
    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }
    fn peekn(&self, n: usize) -> Vec<Value> {
        self.stack[self.stack.len() - n..].to_vec()
    }
    fn popn(&mut self, n: usize) -> Vec<Value> {
        self.stack.split_off(self.stack.len() - n)
    }

    fn load_ro(&mut self, base: Value, offset: i32) -> Value {
        self.b.ins().load(types::I64, ro(), base, offset)
    }

    fn vmctx_ptr(&mut self, offset: u32) -> Value {
        let v = self.vmctx;
        self.load_ro(v, offset as i32)
    }

    fn epoch_check(&mut self) {
        if !self.env.config.epoch_interruption {
            return;
        }
        let store = self.vmctx_ptr(abi::VMCTX_STORE as u32);
        let epoch_ptr = self.load_ro(store, abi::STORE_EPOCH_PTR);
        // Atomic loads: both words are written by other threads, and a plain
        // load would let Cranelift's redundant-load elimination reuse the
        // value read at function entry in every loop iteration (there is no
        // store in between), so a spinning loop would never see the
        // deadline. On x86-64 and aarch64 these are ordinary loads.
        let epoch = self.b.ins().atomic_load(types::I64, rw(), epoch_ptr);
        let deadline_addr = self
            .b
            .ins()
            .iadd_imm_s(store, abi::STORE_EPOCH_DEADLINE as i64);
        let deadline = self.b.ins().atomic_load(types::I64, rw(), deadline_addr);
        let c = self
            .b
            .ins()
            .icmp(IntCC::UnsignedGreaterThanOrEqual, epoch, deadline);
        self.b.ins().trapnz(c, abi::TRAP_INTERRUPTED);
    }

    // ---- control flow -------------------------------------------------

    fn push_frame(&mut self, kind: FrameKind, bt: BlockType) -> Result<Frame, CompileError> {
        let (params, results) = block_type(self.info(), bt)?;
        let dest = self.b.create_block();
        for t in &results {
            self.b.append_block_param(dest, *t);
        }
        let height = self.stack.len() - params.len();
        Ok(Frame {
            kind,
            dest,
            header: None,
            else_block: None,
            params,
            results,
            height,
            dest_used: false,
            dead: false,
            try_table: None,
        })
    }

    fn dead_frame(&mut self) {
        let dest = self.b.create_block();
        self.control.push(Frame {
            kind: FrameKind::Block,
            dest,
            header: None,
            else_block: None,
            params: vec![],
            results: vec![],
            height: self.stack.len(),
            dest_used: false,
            dead: true,
            try_table: None,
        });
    }

    /// Branch target and argument count for relative depth `depth`; marks
    /// the target used.
    fn branch_target(&mut self, depth: u32) -> (Block, usize) {
        let i = self.control.len() - 1 - depth as usize;
        let f = &mut self.control[i];
        if f.kind == FrameKind::Loop {
            (f.header.unwrap(), f.params.len())
        } else {
            f.dest_used = true;
            (f.dest, f.results.len())
        }
    }

    fn end_frame(&mut self) {
        let f = self.control.pop().expect("validated: control stack");
        if f.dead {
            return;
        }
        if self.reachable {
            let vals = self.peekn(f.results.len());
            self.b.ins().jump(f.dest, &args(&vals));
        }
        let mut dest_used = f.dest_used || self.reachable;
        if let Some(else_block) = f.else_block {
            // `if` without `else`: the params flow straight to the results.
            self.b.switch_to_block(else_block);
            self.b.seal_block(else_block);
            let vals = self.b.block_params(else_block).to_vec();
            self.b.ins().jump(f.dest, &args(&vals));
            dest_used = true;
        }
        if let Some(h) = f.header {
            self.b.seal_block(h);
        }
        self.stack.truncate(f.height);
        self.b.switch_to_block(f.dest);
        self.b.seal_block(f.dest);
        let vals = self.b.block_params(f.dest).to_vec();
        self.stack.extend(vals);
        self.reachable = dest_used;
    }

    fn call_results(&mut self, inst: ir::Inst) {
        let r = self.b.inst_results(inst).to_vec();
        self.stack.extend(r);
        // The callee may have grown any memory (memory.grow, a host
        // function mapping state).
        self.refresh_memory_lengths();
        // Or thrown.
        self.check_pending_exception();
    }

    /// Loads every memory's current length into its variable, which the
    /// explicit bounds checks read (issue 14, explicit mode: the length
    /// used to be reloaded from the `VMMemory` at every access, and
    /// Cranelift cannot hoist that load out of a loop, as the length is
    /// not immutable). Called at function entry, after every call (the
    /// only way this thread's memories grow: `memory.grow` and the host
    /// are calls) and after every atomic operation (the only way to
    /// synchronise with another thread that grew a shared memory). In
    /// between, the SSA variable keeps the length in a register, and
    /// loops that do not call anything check against it without a load.
    ///
    /// Sound because a memory never shrinks while code runs: a length
    /// read earlier is at most the current one, so a check against it
    /// never lets an access through that the current length would refuse.
    /// Loads nobody reads are removed by Cranelift.
    fn refresh_memory_lengths(&mut self) {
        for mem in 0..self.mem_lens.len() {
            let mp = self.memory_ptr(mem as u32);
            let len = self.b.ins().load(types::I64, rw(), mp, abi::MEMORY_LENGTH);
            let var = self.mem_lens[mem];
            self.b.def_var(var, len);
        }
    }

    fn sig_ref(&mut self, type_index: u32) -> SigRef {
        if let Some(s) = self.sig_refs.get(&type_index) {
            return *s;
        }
        let sig = wasm_signature(&self.info().types[type_index as usize]);
        let s = self.b.import_signature(sig);
        self.sig_refs.insert(type_index, s);
        s
    }

    fn call(&mut self, function_index: u32) -> Result<(), CompileError> {
        let info = self.info();
        let ty = info.func_type(function_index);
        let n = ty.params.len();
        let mut a = vec![self.vmctx, self.vmctx];
        a.extend(self.popn(n));
        let inst = if function_index < info.num_imported_funcs {
            let fr = self.vmctx;
            let off = info.offsets.funcref(function_index) as i32;
            let fptr = self.load_ro(fr, off + abi::FUNCREF_FUNC_PTR);
            let callee = self.load_ro(fr, off + abi::FUNCREF_VMCTX);
            a[0] = callee;
            let sig = self.sig_ref(info.funcs[function_index as usize]);
            self.b.ins().call_indirect(sig, fptr, &a)
        } else {
            let fref = match self.func_refs.get(&function_index) {
                Some(f) => *f,
                None => {
                    let f = (self.declare)(function_index, self.b.func);
                    self.func_refs.insert(function_index, f);
                    f
                }
            };
            self.b.ins().call(fref, &a)
        };
        self.call_results(inst);
        Ok(())
    }

    /// Table pointer, base and length for table `t`.
    fn table(&mut self, t: u32) -> (Value, Value) {
        let off = self.info().offsets.table(t);
        let tp = self.vmctx_ptr(off);
        let base = self.b.ins().load(types::I64, rw(), tp, abi::TABLE_BASE);
        let len = self.b.ins().load(types::I64, rw(), tp, abi::TABLE_LENGTH);
        (base, len)
    }

    /// Address of element `index` (an i32) of table `t`, bounds-checked.
    fn table_elem_addr(&mut self, t: u32, index: Value) -> Value {
        self.table_elem_addr_or(t, index, abi::TRAP_TABLE_OOB)
    }

    /// As [`Self::table_elem_addr`], trapping with `code` when out of bounds.
    fn table_elem_addr_or(&mut self, t: u32, index: Value, code: TrapCode) -> Value {
        let (base, len) = self.table(t);
        // A 64-bit table's index is already an i64 (table64, part of
        // memory64): compared whole with the length, it cannot wrap.
        let idx = if self.b.func.dfg.value_type(index) == types::I64 {
            index
        } else {
            self.b.ins().uextend(types::I64, index)
        };
        let oob = self
            .b
            .ins()
            .icmp(IntCC::UnsignedGreaterThanOrEqual, idx, len);
        self.b.ins().trapnz(oob, code);
        let scaled = self.b.ins().ishl_imm_u(idx, 3);
        let addr = self.b.ins().iadd(base, scaled);
        // A speculated `call_indirect` past the check must not load a
        // "funcref" from beyond the table and call through it.
        self.spectre_guard(Some(oob), addr)
    }

    fn call_indirect(&mut self, type_index: u32, table: u32) -> Result<(), CompileError> {
        let info = self.info();
        let ty = &info.types[type_index as usize];
        let index = self.pop();
        let n = ty.params.len();
        let call_args = self.popn(n);
        let (fptr, callee) = self.indirect_callee(type_index, table, index);
        let mut a = vec![callee, self.vmctx];
        a.extend(call_args);
        let sig = self.sig_ref(type_index);
        let inst = self.b.ins().call_indirect(sig, fptr, &a);
        self.call_results(inst);
        Ok(())
    }

    /// The checks of `call_indirect` and `return_call_indirect`, the one
    /// copy of them: element `index` (an i32) of table `table` must exist
    /// ([`abi::TRAP_INDIRECT_OOB`]), be non-null
    /// ([`abi::TRAP_INDIRECT_NULL`]), and point at a [`abi::VMFuncRef`]
    /// whose type id is that of `type_index` ([`abi::TRAP_BAD_SIGNATURE`]).
    /// Returns the callee's code pointer and vmctx.
    ///
    /// Both call forms go through here because a copy that drifted (a
    /// check lost, a trap code swapped) would let one of them call code
    /// with the wrong signature or through a null or foreign pointer: a
    /// sandbox escape. The emitted sequence, and its order, is exactly what
    /// each form emitted before they shared it.
    fn indirect_callee(&mut self, type_index: u32, table: u32, index: Value) -> (Value, Value) {
        let addr = self.table_elem_addr_or(table, index, abi::TRAP_INDIRECT_OOB);
        let fr = self.b.ins().load(types::I64, table_elems(), addr, 0);
        self.funcref_callee(type_index, fr, abi::TRAP_INDIRECT_NULL)
    }

    /// The checks every call through a function reference makes, the one
    /// copy of them (`call_indirect`, `return_call_indirect`, `call_ref`,
    /// `return_call_ref`): `fr` must be non-null (else trap with
    /// `null_code`) and point at a [`abi::VMFuncRef`] whose type id is that
    /// of `type_index` ([`abi::TRAP_BAD_SIGNATURE`]). Returns the callee's
    /// code pointer and vmctx.
    ///
    /// For `call_ref` both checks are also implied by validation (the
    /// operand has type `(ref null $t)`); they are made anyway, so that
    /// nothing the static types might get wrong (a validator bug, a host
    /// passing null for a non-nullable parameter, a table imported with a
    /// coarser element type) can make this code jump through a null or
    /// mistyped reference: the sandbox does not rest on the type system.
    fn funcref_callee(
        &mut self,
        type_index: u32,
        fr: Value,
        null_code: TrapCode,
    ) -> (Value, Value) {
        self.b.ins().trapz(fr, null_code);
        let tid = self
            .b
            .ins()
            .load(types::I32, rw(), fr, abi::FUNCREF_TYPE_ID);
        let expected = self.info().type_ids[type_index as usize];
        let bad = self
            .b
            .ins()
            .icmp_imm_s(IntCC::NotEqual, tid, i64::from(expected as i32));
        if self.may_have_subtypes(type_index) {
            // GC: a function of a declared subtype passes too (checked by
            // the runtime, off the fast path).
            self.funcref_subtype_check(type_index, fr, bad);
        } else {
            self.b.ins().trapnz(bad, abi::TRAP_BAD_SIGNATURE);
        }
        let fptr = self
            .b
            .ins()
            .load(types::I64, rw(), fr, abi::FUNCREF_FUNC_PTR);
        let callee = self.b.ins().load(types::I64, rw(), fr, abi::FUNCREF_VMCTX);
        (fptr, callee)
    }

    /// `call_ref $t`: the reference on top of the stack, checked by
    /// [`Self::funcref_callee`], called with the arguments below it.
    fn call_ref(&mut self, type_index: u32) -> Result<(), CompileError> {
        let n = self.info().types[type_index as usize].params.len();
        let fr = self.pop();
        let call_args = self.popn(n);
        let (fptr, callee) = self.funcref_callee(type_index, fr, abi::TRAP_NULL_FUNC_REF);
        let mut a = vec![callee, self.vmctx];
        a.extend(call_args);
        let sig = self.sig_ref(type_index);
        let inst = self.b.ins().call_indirect(sig, fptr, &a);
        self.call_results(inst);
        Ok(())
    }

    /// A table index or length operand as the i32 the table builtins take.
    /// An i64 operand (of a 64-bit table) of 2^32 or more traps as out of
    /// bounds: tables never hold that many elements
    /// (`Config::max_table_elements` is at most `u32::MAX`), so every
    /// operation it takes part in (`table.fill`, `copy`, `init`) is out of
    /// bounds anyway.
    fn table_operand32(&mut self, v: Value) -> Value {
        if self.b.func.dfg.value_type(v) != types::I64 {
            return v;
        }
        let big = self
            .b
            .ins()
            .icmp_imm_u(IntCC::UnsignedGreaterThan, v, i64::from(u32::MAX));
        self.b.ins().trapnz(big, abi::TRAP_TABLE_OOB);
        self.b.ins().ireduce(types::I32, v)
    }

    /// `table.grow` of a 64-bit table: a delta of 2^32 or more fails (-1)
    /// without calling the builtin, which takes an i32; otherwise the
    /// builtin's i32 result, -1 kept as -1.
    fn table64_grow(&mut self, table: u32, init: Value, delta: Value) {
        let big = self
            .b
            .ins()
            .icmp_imm_u(IntCC::UnsignedGreaterThan, delta, i64::from(u32::MAX));
        let grow = self.b.create_block();
        let join = self.b.create_block();
        self.b.append_block_param(join, types::I64);
        let minus_one = self.b.ins().iconst(types::I64, -1);
        self.b
            .ins()
            .brif(big, join, &[BlockArg::Value(minus_one)], grow, &[]);
        self.b.switch_to_block(grow);
        self.b.seal_block(grow);
        let t = self.i32c(table);
        let d = self.b.ins().ireduce(types::I32, delta);
        let r = self
            .builtin(
                abi::builtins::TABLE_GROW,
                &[types::I32, types::I64, types::I32],
                Some(types::I32),
                &[t, init, d],
            )
            .expect("TABLE_GROW returns a size");
        let failed = self.b.ins().icmp_imm_s(IntCC::Equal, r, -1);
        let wide = self.b.ins().uextend(types::I64, r);
        let minus_one = self.b.ins().iconst(types::I64, -1);
        let v = self.b.ins().select(failed, minus_one, wide);
        self.b.ins().jump(join, &[BlockArg::Value(v)]);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
        let v = self.b.block_params(join)[0];
        self.push(v);
    }

    /// Calls builtin `idx` with SystemV ABI; `params` excludes the vmctx.
    fn builtin(
        &mut self,
        idx: usize,
        params: &[Type],
        ret: Option<Type>,
        a: &[Value],
    ) -> Option<Value> {
        let sig = match self.builtin_sigs.get(&idx) {
            Some(s) => *s,
            None => {
                let mut sig = Signature::new(CallConv::SystemV);
                sig.params.push(AbiParam::new(types::I64));
                sig.params.extend(params.iter().map(|t| AbiParam::new(*t)));
                if let Some(r) = ret {
                    sig.returns.push(AbiParam::new(r));
                }
                let s = self.b.import_signature(sig);
                self.builtin_sigs.insert(idx, s);
                s
            }
        };
        let table = self.vmctx_ptr(abi::VMCTX_BUILTINS as u32);
        let f = self.load_ro(table, (idx * 8) as i32);
        let mut all = vec![self.vmctx];
        all.extend_from_slice(a);
        let inst = self.b.ins().call_indirect(sig, f, &all);
        let r = self.b.inst_results(inst).first().copied();
        self.refresh_memory_lengths();
        r
    }

    fn i32c(&mut self, v: u32) -> Value {
        self.b.ins().iconst(types::I32, i64::from(v as i32))
    }
    fn zext64(&mut self, v: Value) -> Value {
        self.b.ins().uextend(types::I64, v)
    }

    // ---- memory ---------------------------------------------------------

    fn memory_ptr(&mut self, mem: u32) -> Value {
        let off = self.info().offsets.memory(mem);
        self.vmctx_ptr(off)
    }

    /// Whether memory `mem` is indexed by i64 (memory64).
    fn is_memory64(&self, mem: u32) -> bool {
        self.info().memories[mem as usize].memory64
    }

    /// `v`, an index or length operand of memory `mem`, as an i64.
    fn mem_index64(&mut self, mem: u32, v: Value) -> Value {
        if self.is_memory64(mem) {
            v
        } else {
            self.zext64(v)
        }
    }

    /// Memory index of an access.
    fn memarg_memory(memarg: &MemArg) -> u32 {
        match memarg.target {
            wasmparser::MemArgTarget::Memory(m) => m,
            wasmparser::MemArgTarget::Array(_) => 0,
        }
    }

    /// The bounds check of every linear-memory access, the one copy of it:
    /// plain, SIMD and atomic loads and stores, and the atomic builtins'
    /// addresses all go through here. Returns the memory's `VMMemory`
    /// pointer, its base address if `load_base`, and the index
    /// zero-extended to i64; the access covers
    /// `[index + memarg.offset, index + memarg.offset + size)`, which is
    /// then known to be within the memory or (for `BoundsCheck::Configured`
    /// with guard pages) within its reservation's guard region.
    ///
    /// Why one function: a bounds check that drifts between two copies is
    /// a sandbox escape, so the decisions that make an access safe live
    /// here only: which memory (`memarg.target`, for both the length
    /// checked and the base returned), the end computation
    /// (`index + offset + size`, which cannot overflow in 64 bits for a
    /// 32-bit memory: the index is a zero-extended i32 and validation
    /// limits 32-bit memories' offsets to below 2^32; for a 64-bit memory
    /// it can, so the carry counts as out of bounds and the offset sum
    /// saturates), the comparison
    /// against the current length (`end > length` traps), the trap code
    /// ([`abi::TRAP_MEMORY_OOB`]), and when the check may be left to the
    /// guard pages.
    ///
    /// A 64-bit memory (memory64) is always checked explicitly, whatever
    /// the bounds mode: no guard region covers a 64-bit index. With guard
    /// pages, an access the guard covers checks only that the index fits
    /// in 32 bits (the memory is reserved, and capped, as a 32-bit one);
    /// otherwise, and always in explicit mode and for atomics, against the
    /// length, the carry of `index + offset` counting as out of bounds.
    ///
    /// That last one is the one difference between callers, `check`:
    /// ordinary accesses may skip the check under
    /// [`BoundsChecks::GuardPages`] when `offset + size` fits in the guard
    /// (the access then faults in the guard, at a trap site); atomics must
    /// not (`BoundsCheck::Always`), because their instructions are emitted
    /// with trusted, non-trapping flags and no trap metadata, so a fault
    /// there would not be recognised as a wasm trap. Atomics add their
    /// alignment check after this one.
    ///
    /// `load_base` only places the base load (a trusted load of the
    /// `VMMemory`, which cannot fault) where each caller had it, so that
    /// the generated code did not change when the copies were merged:
    /// ordinary accesses load it before the check; atomics after their
    /// alignment check (or not at all: the wait and notify builtins take
    /// the effective address).
    fn bounds_checked(
        &mut self,
        memarg: &MemArg,
        index: Value,
        size: u32,
        check: BoundsCheck,
        load_base: bool,
    ) -> CheckedIndex {
        let mem = Self::memarg_memory(memarg);
        let is64 = self.is_memory64(mem);
        let mp = self.memory_ptr(mem);
        let base = load_base.then(|| self.load_ro(mp, abi::MEMORY_BASE));
        let idx = if is64 { index } else { self.zext64(index) };
        // At most 2^32 - 1 + 16 for a 32-bit memory. A 64-bit memory's
        // offset may be anything: saturated, the sum still exceeds every
        // length, so the check below traps.
        let end_off = memarg.offset.saturating_add(u64::from(size));
        if let (true, BoundsCheck::Configured, BoundsChecks::GuardPages { guard_size }) =
            (is64, check, self.env.config.bounds)
        {
            if end_off <= guard_size {
                // A 64-bit memory is reserved as a 32-bit one (4 GiB +
                // guard, inaccessible beyond its length, which never
                // exceeds 4 GiB), so once the index is known to fit in 32
                // bits the access is exactly a 32-bit memory's and the
                // guard region covers it. The one explicit check: the
                // index's high half is zero. It also feeds the Spectre
                // guard, so a speculated access with a huge index goes to
                // address 0.
                let oob =
                    self.b
                        .ins()
                        .icmp_imm_u(IntCC::UnsignedGreaterThan, idx, i64::from(u32::MAX));
                self.b.ins().trapnz(oob, abi::TRAP_MEMORY_OOB);
                return CheckedIndex {
                    mem_ptr: mp,
                    base,
                    index: idx,
                    oob: Some(oob),
                };
            }
        }
        let need_check = match (check, self.env.config.bounds) {
            // The guard region covers a 32-bit index only.
            _ if is64 => true,
            (BoundsCheck::Always, _) => true,
            (BoundsCheck::Configured, BoundsChecks::GuardPages { guard_size }) => {
                end_off > guard_size
            }
            (BoundsCheck::Configured, BoundsChecks::Explicit) => true,
        };
        let oob = need_check.then(|| {
            let len = match check {
                // Atomics read the length afresh (and refresh it after).
                BoundsCheck::Always => self.b.ins().load(types::I64, rw(), mp, abi::MEMORY_LENGTH),
                BoundsCheck::Configured => {
                    let var = self.mem_lens[Self::memarg_memory(memarg) as usize];
                    self.b.use_var(var)
                }
            };
            let oob = if is64 {
                // A 64-bit index plus the offset may wrap around 2^64 and
                // come out small: the carry is out of bounds too. It is
                // part of the one condition both the trap and the Spectre
                // guard test, so a speculated access past a wrapped sum is
                // sent to address 0 as well.
                let off = self.b.ins().iconst(types::I64, end_off as i64);
                let (end, carry) = self.b.ins().uadd_overflow(idx, off);
                let beyond = self.b.ins().icmp(IntCC::UnsignedGreaterThan, end, len);
                self.b.ins().bor(beyond, carry)
            } else {
                let end = self.b.ins().iadd_imm_s(idx, end_off as i64);
                self.b.ins().icmp(IntCC::UnsignedGreaterThan, end, len)
            };
            self.b.ins().trapnz(oob, abi::TRAP_MEMORY_OOB);
            oob
        });
        CheckedIndex {
            mem_ptr: mp,
            base,
            index: idx,
            oob,
        }
    }

    /// The Spectre v1 guard (issue 13, item 1): `addr` if `oob` is false,
    /// else 0, by `select_spectre_guard`, a conditional move that the CPU
    /// does not predict. The caller has already emitted the conditional
    /// trap on `oob`; a mispredicted trap branch lets the following access
    /// execute speculatively, and this makes that access read or write
    /// address 0 (never mapped) instead of whatever lies past the bounds:
    /// in explicit mode, a neighbouring tenant's memory. `addr` must be
    /// the full address accessed (static offset included), or a large
    /// offset would carry the speculative access away from 0 again.
    /// Without `oob` (no check emitted) or with the guard configured off,
    /// `addr` as it is.
    fn spectre_guard(&mut self, oob: Option<Value>, addr: Value) -> Value {
        match oob {
            Some(oob) if self.env.config.spectre_guard => {
                let null = self.b.ins().iconst(types::I64, 0);
                self.b.ins().select_spectre_guard(oob, null, addr)
            }
            _ => addr,
        }
    }

    /// Computes the native address for an access of `size` bytes, with the
    /// bounds check the configuration requires. Returns (address, static offset).
    fn heap_addr(&mut self, memarg: &MemArg, index: Value, size: u32) -> (Value, i32) {
        let c = self.bounds_checked(memarg, index, size, BoundsCheck::Configured, true);
        let base = c.base.expect("base requested");
        let addr = self.b.ins().iadd(base, c.index);
        if c.oob.is_some() && self.env.config.spectre_guard {
            // The guard selects the whole address, offset included.
            let addr = if memarg.offset == 0 {
                addr
            } else {
                self.b.ins().iadd_imm_s(addr, memarg.offset as i64)
            };
            (self.spectre_guard(c.oob, addr), 0)
        } else if memarg.offset <= i32::MAX as u64 {
            (addr, memarg.offset as i32)
        } else {
            (self.b.ins().iadd_imm_s(addr, memarg.offset as i64), 0)
        }
    }

    fn load(&mut self, memarg: &MemArg, ty: Type, size: u32, kind: LoadKind) {
        let index = self.pop();
        let (addr, off) = self.heap_addr(memarg, index, size);
        let ins = self.b.ins();
        let v = match kind {
            LoadKind::Plain => ins.load(ty, heap(), addr, off),
            LoadKind::U8 => ins.uload8(ty, heap(), addr, off),
            LoadKind::S8 => ins.sload8(ty, heap(), addr, off),
            LoadKind::U16 => ins.uload16(ty, heap(), addr, off),
            LoadKind::S16 => ins.sload16(ty, heap(), addr, off),
            LoadKind::U32 => ins.uload32(heap(), addr, off),
            LoadKind::S32 => ins.sload32(heap(), addr, off),
        };
        self.push(v);
    }

    fn store(&mut self, memarg: &MemArg, size: u32, narrow: bool) {
        let (index, val) = self.pop2();
        let (addr, off) = self.heap_addr(memarg, index, size);
        let ins = self.b.ins();
        if !narrow {
            ins.store(heap(), val, addr, off);
        } else {
            match size {
                1 => ins.istore8(heap(), val, addr, off),
                2 => ins.istore16(heap(), val, addr, off),
                _ => ins.istore32(heap(), val, addr, off),
            };
        }
    }

    // ---- helpers for numeric ops ----------------------------------------

    fn binop(&mut self, f: impl FnOnce(&mut FunctionBuilder<'b>, Value, Value) -> Value) {
        let (x, y) = self.pop2();
        let v = f(&mut self.b, x, y);
        self.push(v);
    }
    fn unop(&mut self, f: impl FnOnce(&mut FunctionBuilder<'b>, Value) -> Value) {
        let x = self.pop();
        let v = f(&mut self.b, x);
        self.push(v);
    }
    fn icmp(&mut self, cc: IntCC) {
        let (x, y) = self.pop2();
        let c = self.b.ins().icmp(cc, x, y);
        let v = self.b.ins().uextend(types::I32, c);
        self.push(v);
    }
    fn fcmp(&mut self, cc: FloatCC) {
        let (x, y) = self.pop2();
        let c = self.b.ins().fcmp(cc, x, y);
        let v = self.b.ins().uextend(types::I32, c);
        self.push(v);
    }
    fn eqz(&mut self) {
        let x = self.pop();
        let c = self.b.ins().icmp_imm_s(IntCC::Equal, x, 0);
        let v = self.b.ins().uextend(types::I32, c);
        self.push(v);
    }
    fn sext(&mut self, from: Type, to: Type) {
        let x = self.pop();
        let n = self.b.ins().ireduce(from, x);
        let v = self.b.ins().sextend(to, n);
        self.push(v);
    }
    fn trap_if(&mut self, c: Value, code: TrapCode) {
        self.b.ins().trapnz(c, code);
    }

    // ---- the operator dispatch ------------------------------------------

    fn op(&mut self, op: &Operator<'_>) -> Result<(), CompileError> {
        use Operator as O;
        if !self.reachable {
            match op {
                O::Block { .. } | O::Loop { .. } | O::If { .. } | O::TryTable { .. } => {
                    self.dead_frame();
                    return Ok(());
                }
                O::Else => {
                    let f = self.control.last_mut().unwrap();
                    if f.dead {
                        return Ok(());
                    }
                    let else_block = f.else_block.take().unwrap();
                    let height = f.height;
                    self.stack.truncate(height);
                    self.b.switch_to_block(else_block);
                    self.b.seal_block(else_block);
                    let vals = self.b.block_params(else_block).to_vec();
                    self.stack.extend(vals);
                    self.reachable = true;
                    return Ok(());
                }
                O::End => {
                    self.end();
                    return Ok(());
                }
                _ => return Ok(()),
            }
        }
        use types::{F32, F64, I32, I64};
        match *op {
            O::Unreachable => {
                self.b.ins().trap(abi::TRAP_UNREACHABLE);
                self.reachable = false;
            }
            O::Nop => {}
            O::Block { blockty } => {
                let f = self.push_frame(FrameKind::Block, blockty)?;
                self.control.push(f);
            }
            O::Loop { blockty } => {
                let mut f = self.push_frame(FrameKind::Loop, blockty)?;
                let header = self.b.create_block();
                for t in &f.params {
                    self.b.append_block_param(header, *t);
                }
                let vals = self.popn(f.params.len());
                self.b.ins().jump(header, &args(&vals));
                self.b.switch_to_block(header);
                let hp = self.b.block_params(header).to_vec();
                self.stack.extend(hp);
                f.header = Some(header);
                self.control.push(f);
                self.epoch_check();
            }
            O::If { blockty } => {
                let cond = self.pop();
                let mut f = self.push_frame(FrameKind::If, blockty)?;
                let then_block = self.b.create_block();
                let else_block = self.b.create_block();
                for t in &f.params {
                    self.b.append_block_param(else_block, *t);
                }
                let vals = self.peekn(f.params.len());
                self.b
                    .ins()
                    .brif(cond, then_block, &[], else_block, &args(&vals));
                self.b.switch_to_block(then_block);
                self.b.seal_block(then_block);
                f.else_block = Some(else_block);
                self.control.push(f);
            }
            O::Else => {
                let f = self.control.last_mut().unwrap();
                let else_block = f.else_block.take().unwrap();
                f.dest_used = true;
                let (dest, nres, height) = (f.dest, f.results.len(), f.height);
                let vals = self.peekn(nres);
                self.b.ins().jump(dest, &args(&vals));
                self.stack.truncate(height);
                self.b.switch_to_block(else_block);
                self.b.seal_block(else_block);
                let vals = self.b.block_params(else_block).to_vec();
                self.stack.extend(vals);
            }
            O::End => self.end(),
            O::TryTable { ref try_table } => self.try_table(try_table)?,
            O::Throw { tag_index } => self.throw(tag_index),
            O::ThrowRef => self.throw_ref(),
            O::Br { relative_depth } => {
                let (target, n) = self.branch_target(relative_depth);
                let vals = self.peekn(n);
                self.b.ins().jump(target, &args(&vals));
                self.reachable = false;
            }
            O::BrIf { relative_depth } => {
                let cond = self.pop();
                let (target, n) = self.branch_target(relative_depth);
                let vals = self.peekn(n);
                let next = self.b.create_block();
                self.b.ins().brif(cond, target, &args(&vals), next, &[]);
                self.b.switch_to_block(next);
                self.b.seal_block(next);
            }
            O::BrTable { ref targets } => {
                let index = self.pop();
                let mut depths = Vec::with_capacity(targets.len() as usize);
                for t in targets.targets() {
                    depths.push(t.map_err(CompileError::malformed)?);
                }
                let default = targets.default();
                // Each distinct depth gets one block: the target itself if
                // it takes no arguments, else an edge block passing them.
                let mut edge: HashMap<u32, Block> = HashMap::new();
                let mut pending = Vec::new();
                let mut block_for = |tr: &mut Self, d: u32| -> Block {
                    if let Some(b) = edge.get(&d) {
                        return *b;
                    }
                    let (target, n) = tr.branch_target(d);
                    let blk = if n == 0 {
                        target
                    } else {
                        let e = tr.b.create_block();
                        pending.push((e, target, n));
                        e
                    };
                    edge.insert(d, blk);
                    blk
                };
                let def = block_for(self, default);
                let table: Vec<Block> = depths.iter().map(|d| block_for(self, *d)).collect();
                let pool = &mut self.b.func.dfg.value_lists;
                let def_call = ir::BlockCall::new(def, [], pool);
                let calls: Vec<ir::BlockCall> = table
                    .iter()
                    .map(|b| ir::BlockCall::new(*b, [], pool))
                    .collect();
                let jt = self
                    .b
                    .create_jump_table(JumpTableData::new(def_call, &calls));
                self.b.ins().br_table(index, jt);
                for (e, target, n) in pending {
                    self.b.switch_to_block(e);
                    self.b.seal_block(e);
                    let vals = self.peekn(n);
                    self.b.ins().jump(target, &args(&vals));
                }
                self.reachable = false;
            }
            O::Return => {
                let n = self.control[0].results.len();
                let vals = self.peekn(n);
                self.b.ins().return_(&vals);
                self.reachable = false;
            }
            O::Call { function_index } => self.call(function_index)?,
            O::CallIndirect {
                type_index,
                table_index,
            } => self.call_indirect(type_index, table_index)?,
            O::Drop => {
                self.pop();
            }
            O::Select | O::TypedSelect { .. } => {
                let (x, y, c) = self.pop3();
                let v = self.b.ins().select(c, x, y);
                self.push(v);
            }
            O::LocalGet { local_index } => {
                let v = self.b.use_var(self.locals[local_index as usize].0);
                self.push(v);
            }
            O::LocalSet { local_index } => {
                let v = self.pop();
                self.b.def_var(self.locals[local_index as usize].0, v);
            }
            O::LocalTee { local_index } => {
                let v = *self.stack.last().unwrap();
                self.b.def_var(self.locals[local_index as usize].0, v);
            }
            O::GlobalGet { global_index } => {
                let info = self.info();
                let t = info.globals[global_index as usize].content;
                let off = info.offsets.global(global_index);
                let p = self.vmctx_ptr(off);
                let v = self.b.ins().load(ir_type(t), globals(), p, 0);
                self.push(v);
            }
            O::GlobalSet { global_index } => {
                let off = self.info().offsets.global(global_index);
                let v = self.pop();
                let p = self.vmctx_ptr(off);
                self.b.ins().store(globals(), v, p, 0);
            }
            O::I32Load { ref memarg } => self.load(memarg, I32, 4, LoadKind::Plain),
            O::I64Load { ref memarg } => self.load(memarg, I64, 8, LoadKind::Plain),
            O::F32Load { ref memarg } => self.load(memarg, F32, 4, LoadKind::Plain),
            O::F64Load { ref memarg } => self.load(memarg, F64, 8, LoadKind::Plain),
            O::I32Load8S { ref memarg } => self.load(memarg, I32, 1, LoadKind::S8),
            O::I32Load8U { ref memarg } => self.load(memarg, I32, 1, LoadKind::U8),
            O::I32Load16S { ref memarg } => self.load(memarg, I32, 2, LoadKind::S16),
            O::I32Load16U { ref memarg } => self.load(memarg, I32, 2, LoadKind::U16),
            O::I64Load8S { ref memarg } => self.load(memarg, I64, 1, LoadKind::S8),
            O::I64Load8U { ref memarg } => self.load(memarg, I64, 1, LoadKind::U8),
            O::I64Load16S { ref memarg } => self.load(memarg, I64, 2, LoadKind::S16),
            O::I64Load16U { ref memarg } => self.load(memarg, I64, 2, LoadKind::U16),
            O::I64Load32S { ref memarg } => self.load(memarg, I64, 4, LoadKind::S32),
            O::I64Load32U { ref memarg } => self.load(memarg, I64, 4, LoadKind::U32),
            O::I32Store { ref memarg } | O::F32Store { ref memarg } => self.store(memarg, 4, false),
            O::I64Store { ref memarg } | O::F64Store { ref memarg } => self.store(memarg, 8, false),
            O::I32Store8 { ref memarg } | O::I64Store8 { ref memarg } => {
                self.store(memarg, 1, true)
            }
            O::I32Store16 { ref memarg } | O::I64Store16 { ref memarg } => {
                self.store(memarg, 2, true)
            }
            O::I64Store32 { ref memarg } => self.store(memarg, 4, true),
            O::MemorySize { mem } => {
                let mp = self.memory_ptr(mem);
                let len = self.b.ins().load(I64, rw(), mp, abi::MEMORY_LENGTH);
                let pages = self.b.ins().ushr_imm_u(len, 16);
                let v = if self.is_memory64(mem) {
                    pages
                } else {
                    self.b.ins().ireduce(I32, pages)
                };
                self.push(v);
            }
            O::MemoryGrow { mem } => {
                let delta = self.pop();
                let m = self.i32c(mem);
                let d = self.mem_index64(mem, delta);
                let r = self
                    .builtin(abi::builtins::MEMORY_GROW, &[I32, I64], Some(I64), &[m, d])
                    .unwrap();
                // The builtin returns the old size or u64::MAX (-1).
                let v = if self.is_memory64(mem) {
                    r
                } else {
                    self.b.ins().ireduce(I32, r)
                };
                self.push(v);
            }
            O::MemoryCopy { dst_mem, src_mem } => {
                let (d, s, n) = self.pop3();
                let dm = self.i32c(dst_mem);
                let sm = self.i32c(src_mem);
                let d = self.mem_index64(dst_mem, d);
                let s = self.mem_index64(src_mem, s);
                // The length is i64 only if both memories are 64-bit.
                let n = if self.is_memory64(dst_mem) && self.is_memory64(src_mem) {
                    n
                } else {
                    self.zext64(n)
                };
                let r = self
                    .builtin(
                        abi::builtins::MEMORY_COPY,
                        &[I32, I64, I32, I64, I64],
                        Some(I32),
                        &[dm, d, sm, s, n],
                    )
                    .unwrap();
                self.trap_if(r, abi::TRAP_MEMORY_OOB);
            }
            O::MemoryFill { mem } => {
                let (d, val, n) = self.pop3();
                let m = self.i32c(mem);
                let d = self.mem_index64(mem, d);
                let n = self.mem_index64(mem, n);
                let r = self
                    .builtin(
                        abi::builtins::MEMORY_FILL,
                        &[I32, I64, I32, I64],
                        Some(I32),
                        &[m, d, val, n],
                    )
                    .unwrap();
                self.trap_if(r, abi::TRAP_MEMORY_OOB);
            }
            O::MemoryInit { data_index, mem } => {
                let (d, s, n) = self.pop3();
                let m = self.i32c(mem);
                let di = self.i32c(data_index);
                let d = self.mem_index64(mem, d);
                let r = self
                    .builtin(
                        abi::builtins::MEMORY_INIT,
                        &[I32, I32, I64, I32, I32],
                        Some(I32),
                        &[m, di, d, s, n],
                    )
                    .unwrap();
                self.trap_if(r, abi::TRAP_MEMORY_OOB);
            }
            O::DataDrop { data_index } => {
                let di = self.i32c(data_index);
                self.builtin(abi::builtins::DATA_DROP, &[I32], None, &[di]);
            }
            O::TableInit { elem_index, table } => {
                let (d, s, n) = self.pop3();
                let d = self.table_operand32(d);
                let t = self.i32c(table);
                let e = self.i32c(elem_index);
                let r = self
                    .builtin(
                        abi::builtins::TABLE_INIT,
                        &[I32, I32, I32, I32, I32],
                        Some(I32),
                        &[t, e, d, s, n],
                    )
                    .unwrap();
                self.trap_if(r, abi::TRAP_TABLE_OOB);
            }
            O::ElemDrop { elem_index } => {
                let e = self.i32c(elem_index);
                self.builtin(abi::builtins::ELEM_DROP, &[I32], None, &[e]);
            }
            O::TableCopy {
                dst_table,
                src_table,
            } => {
                let (d, s, n) = self.pop3();
                let (d, s, n) = (
                    self.table_operand32(d),
                    self.table_operand32(s),
                    self.table_operand32(n),
                );
                let dt = self.i32c(dst_table);
                let st = self.i32c(src_table);
                let r = self
                    .builtin(
                        abi::builtins::TABLE_COPY,
                        &[I32, I32, I32, I32, I32],
                        Some(I32),
                        &[dt, st, d, s, n],
                    )
                    .unwrap();
                self.trap_if(r, abi::TRAP_TABLE_OOB);
            }
            O::TableFill { table } => {
                let (d, val, n) = self.pop3();
                let (d, n) = (self.table_operand32(d), self.table_operand32(n));
                let t = self.i32c(table);
                let r = self
                    .builtin(
                        abi::builtins::TABLE_FILL,
                        &[I32, I32, I64, I32],
                        Some(I32),
                        &[t, d, val, n],
                    )
                    .unwrap();
                self.trap_if(r, abi::TRAP_TABLE_OOB);
            }
            O::TableGrow { table } => {
                let (init, delta) = self.pop2();
                if self.info().tables[table as usize].table64 {
                    self.table64_grow(table, init, delta);
                } else {
                    let t = self.i32c(table);
                    let r = self
                        .builtin(
                            abi::builtins::TABLE_GROW,
                            &[I32, I64, I32],
                            Some(I32),
                            &[t, init, delta],
                        )
                        .unwrap();
                    self.push(r);
                }
            }
            O::TableGet { table } => {
                let i = self.pop();
                let addr = self.table_elem_addr(table, i);
                let v = self.b.ins().load(I64, table_elems(), addr, 0);
                self.push(v);
            }
            O::TableSet { table } => {
                let (i, v) = self.pop2();
                let addr = self.table_elem_addr(table, i);
                self.b.ins().store(table_elems(), v, addr, 0);
            }
            O::TableSize { table } => {
                let (_, len) = self.table(table);
                let v = if self.info().tables[table as usize].table64 {
                    len
                } else {
                    self.b.ins().ireduce(I32, len)
                };
                self.push(v);
            }
            O::RefNull { .. } => {
                let v = self.b.ins().iconst(I64, 0);
                self.push(v);
            }
            O::RefIsNull => self.eqz(),
            O::RefFunc { function_index } => {
                let off = self.info().offsets.funcref(function_index);
                let v = self.b.ins().iadd_imm_s(self.vmctx, i64::from(off));
                self.push(v);
            }
            O::I32Const { value } => {
                let v = self.b.ins().iconst(I32, i64::from(value));
                self.push(v);
            }
            O::I64Const { value } => {
                let v = self.b.ins().iconst(I64, value);
                self.push(v);
            }
            O::F32Const { value } => {
                let v = self
                    .b
                    .ins()
                    .f32const(ir::immediates::Ieee32::with_bits(value.bits()));
                self.push(v);
            }
            O::F64Const { value } => {
                let v = self
                    .b
                    .ins()
                    .f64const(ir::immediates::Ieee64::with_bits(value.bits()));
                self.push(v);
            }
            O::I32Eqz | O::I64Eqz => self.eqz(),
            O::I32Eq | O::I64Eq => self.icmp(IntCC::Equal),
            O::I32Ne | O::I64Ne => self.icmp(IntCC::NotEqual),
            O::I32LtS | O::I64LtS => self.icmp(IntCC::SignedLessThan),
            O::I32LtU | O::I64LtU => self.icmp(IntCC::UnsignedLessThan),
            O::I32GtS | O::I64GtS => self.icmp(IntCC::SignedGreaterThan),
            O::I32GtU | O::I64GtU => self.icmp(IntCC::UnsignedGreaterThan),
            O::I32LeS | O::I64LeS => self.icmp(IntCC::SignedLessThanOrEqual),
            O::I32LeU | O::I64LeU => self.icmp(IntCC::UnsignedLessThanOrEqual),
            O::I32GeS | O::I64GeS => self.icmp(IntCC::SignedGreaterThanOrEqual),
            O::I32GeU | O::I64GeU => self.icmp(IntCC::UnsignedGreaterThanOrEqual),
            O::F32Eq | O::F64Eq => self.fcmp(FloatCC::Equal),
            O::F32Ne | O::F64Ne => self.fcmp(FloatCC::NotEqual),
            O::F32Lt | O::F64Lt => self.fcmp(FloatCC::LessThan),
            O::F32Gt | O::F64Gt => self.fcmp(FloatCC::GreaterThan),
            O::F32Le | O::F64Le => self.fcmp(FloatCC::LessThanOrEqual),
            O::F32Ge | O::F64Ge => self.fcmp(FloatCC::GreaterThanOrEqual),
            O::I32Clz | O::I64Clz => self.unop(|b, x| b.ins().clz(x)),
            O::I32Ctz | O::I64Ctz => self.unop(|b, x| b.ins().ctz(x)),
            O::I32Popcnt | O::I64Popcnt => self.unop(|b, x| b.ins().popcnt(x)),
            O::I32Add | O::I64Add => self.binop(|b, x, y| b.ins().iadd(x, y)),
            O::I32Sub | O::I64Sub => self.binop(|b, x, y| b.ins().isub(x, y)),
            O::I32Mul | O::I64Mul => self.binop(|b, x, y| b.ins().imul(x, y)),
            O::I32DivS | O::I64DivS => self.binop(|b, x, y| b.ins().sdiv(x, y)),
            O::I32DivU | O::I64DivU => self.binop(|b, x, y| b.ins().udiv(x, y)),
            O::I32RemS | O::I64RemS => self.binop(|b, x, y| b.ins().srem(x, y)),
            O::I32RemU | O::I64RemU => self.binop(|b, x, y| b.ins().urem(x, y)),
            O::I32And | O::I64And => self.binop(|b, x, y| b.ins().band(x, y)),
            O::I32Or | O::I64Or => self.binop(|b, x, y| b.ins().bor(x, y)),
            O::I32Xor | O::I64Xor => self.binop(|b, x, y| b.ins().bxor(x, y)),
            O::I32Shl | O::I64Shl => self.binop(|b, x, y| b.ins().ishl(x, y)),
            O::I32ShrS | O::I64ShrS => self.binop(|b, x, y| b.ins().sshr(x, y)),
            O::I32ShrU | O::I64ShrU => self.binop(|b, x, y| b.ins().ushr(x, y)),
            O::I32Rotl | O::I64Rotl => self.binop(|b, x, y| b.ins().rotl(x, y)),
            O::I32Rotr | O::I64Rotr => self.binop(|b, x, y| b.ins().rotr(x, y)),
            O::F32Abs | O::F64Abs => self.unop(|b, x| b.ins().fabs(x)),
            O::F32Neg | O::F64Neg => self.unop(|b, x| b.ins().fneg(x)),
            O::F32Ceil | O::F64Ceil => self.unop(|b, x| b.ins().ceil(x)),
            O::F32Floor | O::F64Floor => self.unop(|b, x| b.ins().floor(x)),
            O::F32Trunc | O::F64Trunc => self.unop(|b, x| b.ins().trunc(x)),
            O::F32Nearest | O::F64Nearest => self.unop(|b, x| b.ins().nearest(x)),
            O::F32Sqrt | O::F64Sqrt => self.unop(|b, x| b.ins().sqrt(x)),
            O::F32Add | O::F64Add => self.binop(|b, x, y| b.ins().fadd(x, y)),
            O::F32Sub | O::F64Sub => self.binop(|b, x, y| b.ins().fsub(x, y)),
            O::F32Mul | O::F64Mul => self.binop(|b, x, y| b.ins().fmul(x, y)),
            O::F32Div | O::F64Div => self.binop(|b, x, y| b.ins().fdiv(x, y)),
            O::F32Min | O::F64Min => self.binop(|b, x, y| b.ins().fmin(x, y)),
            O::F32Max | O::F64Max => self.binop(|b, x, y| b.ins().fmax(x, y)),
            O::F32Copysign | O::F64Copysign => self.binop(|b, x, y| b.ins().fcopysign(x, y)),
            O::I32WrapI64 => self.unop(|b, x| b.ins().ireduce(I32, x)),
            O::I32TruncF32S | O::I32TruncF64S => self.unop(|b, x| b.ins().fcvt_to_sint(I32, x)),
            O::I32TruncF32U | O::I32TruncF64U => self.unop(|b, x| b.ins().fcvt_to_uint(I32, x)),
            O::I64TruncF32S | O::I64TruncF64S => self.unop(|b, x| b.ins().fcvt_to_sint(I64, x)),
            O::I64TruncF32U | O::I64TruncF64U => self.unop(|b, x| b.ins().fcvt_to_uint(I64, x)),
            O::I32TruncSatF32S | O::I32TruncSatF64S => {
                self.unop(|b, x| b.ins().fcvt_to_sint_sat(I32, x))
            }
            O::I32TruncSatF32U | O::I32TruncSatF64U => {
                self.unop(|b, x| b.ins().fcvt_to_uint_sat(I32, x))
            }
            O::I64TruncSatF32S | O::I64TruncSatF64S => {
                self.unop(|b, x| b.ins().fcvt_to_sint_sat(I64, x))
            }
            O::I64TruncSatF32U | O::I64TruncSatF64U => {
                self.unop(|b, x| b.ins().fcvt_to_uint_sat(I64, x))
            }
            O::I64ExtendI32S => self.unop(|b, x| b.ins().sextend(I64, x)),
            O::I64ExtendI32U => self.unop(|b, x| b.ins().uextend(I64, x)),
            O::F32ConvertI32S | O::F32ConvertI64S => {
                self.unop(|b, x| b.ins().fcvt_from_sint(F32, x))
            }
            O::F32ConvertI32U | O::F32ConvertI64U => {
                self.unop(|b, x| b.ins().fcvt_from_uint(F32, x))
            }
            O::F64ConvertI32S | O::F64ConvertI64S => {
                self.unop(|b, x| b.ins().fcvt_from_sint(F64, x))
            }
            O::F64ConvertI32U | O::F64ConvertI64U => {
                self.unop(|b, x| b.ins().fcvt_from_uint(F64, x))
            }
            O::F32DemoteF64 => self.unop(|b, x| b.ins().fdemote(F32, x)),
            O::F64PromoteF32 => self.unop(|b, x| b.ins().fpromote(F64, x)),
            O::I32ReinterpretF32 => self.unop(|b, x| b.ins().bitcast(I32, MemFlagsData::new(), x)),
            O::I64ReinterpretF64 => self.unop(|b, x| b.ins().bitcast(I64, MemFlagsData::new(), x)),
            O::F32ReinterpretI32 => self.unop(|b, x| b.ins().bitcast(F32, MemFlagsData::new(), x)),
            O::F64ReinterpretI64 => self.unop(|b, x| b.ins().bitcast(F64, MemFlagsData::new(), x)),
            O::I32Extend8S => self.sext(types::I8, I32),
            O::I32Extend16S => self.sext(types::I16, I32),
            O::I64Extend8S => self.sext(types::I8, I64),
            O::I64Extend16S => self.sext(types::I16, I64),
            O::I64Extend32S => self.sext(I32, I64),
            O::ReturnCall { function_index } => self.return_call(function_index)?,
            O::CallRef { type_index } => self.call_ref(type_index)?,
            O::ReturnCallRef { type_index } => self.return_call_ref(type_index)?,
            O::RefAsNonNull => {
                let v = *self.stack.last().expect("validated: operand");
                self.b.ins().trapz(v, abi::TRAP_NULL_REFERENCE);
            }
            O::BrOnNull { relative_depth } => {
                // Null: branch with the values below the reference.
                // Otherwise continue with the reference on the stack.
                let r = self.pop();
                let (target, n) = self.branch_target(relative_depth);
                let vals = self.peekn(n);
                let next = self.b.create_block();
                self.b.ins().brif(r, next, &[], target, &args(&vals));
                self.b.switch_to_block(next);
                self.b.seal_block(next);
                self.push(r);
            }
            O::BrOnNonNull { relative_depth } => {
                // Non-null: branch with the reference as the last value.
                // Otherwise drop it and continue.
                let r = self.pop();
                let (target, n) = self.branch_target(relative_depth);
                let mut vals = self.peekn(n - 1);
                vals.push(r);
                let next = self.b.create_block();
                self.b.ins().brif(r, target, &args(&vals), next, &[]);
                self.b.switch_to_block(next);
                self.b.seal_block(next);
            }
            O::ReturnCallIndirect {
                type_index,
                table_index,
            } => self.return_call_indirect(type_index, table_index)?,
            ref other => {
                if self.atomic_op(other)? {
                    // (A wait on an unshared memory ends in a trap.)
                    if self.reachable {
                        self.refresh_memory_lengths();
                    }
                    return Ok(());
                }
                if crate::simd::translate(self, other)? {
                    return Ok(());
                }
                if self.gc_op(other)? {
                    return Ok(());
                }
                return Err(CompileError::unsupported(format!(
                    "operator {other:?} is not supported"
                )));
            }
        }
        Ok(())
    }
}

impl<'m, 'b> crate::simd::SimdEnv<'b> for Translator<'m, 'b> {
    fn builder(&mut self) -> &mut FunctionBuilder<'b> {
        &mut self.b
    }
    fn stack(&mut self) -> &mut Vec<Value> {
        &mut self.stack
    }
    fn heap_addr(&mut self, memarg: &MemArg, index: Value, size: u32) -> (Value, i32) {
        Translator::heap_addr(self, memarg, index, size)
    }
}

/// Whether an access's bounds check may be left to the guard pages (see
/// `Translator::bounds_checked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BoundsCheck {
    /// As the [`BoundsChecks`] configuration says: explicit, or left to the
    /// guard region when it covers the access.
    Configured,
    /// Always explicit, whatever the configuration.
    Always,
}

/// An access after its bounds check.
#[derive(Debug, Clone, Copy)]
struct CheckedIndex {
    /// The memory's `VMMemory` pointer.
    mem_ptr: Value,
    /// The memory's base address, if it was asked for.
    base: Option<Value>,
    /// The wasm index, zero-extended to i64.
    index: Value,
    /// The out-of-bounds condition the access traps on, if a check was
    /// emitted (for the Spectre guard).
    oob: Option<Value>,
}

#[derive(Clone, Copy)]
enum LoadKind {
    Plain,
    U8,
    S8,
    U16,
    S16,
    U32,
    S32,
}
