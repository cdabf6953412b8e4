//! Runs compiled code against a minimal hand-built runtime (no traps: a
//! trap would kill the test process without the engine's signal handler).

use faaslet_jit::abi::{self, VMFuncRef, VMGlobal, VMMemory, VMStoreContext, VMTable, ValRaw};
use faaslet_jit::{BoundsChecks, CompileConfig, CompiledModule, Compiler};

fn wat(src: &str) -> Vec<u8> {
    let buf = wast::parser::ParseBuffer::new(src).unwrap();
    wast::parser::parse::<wast::Wat>(&buf)
        .unwrap()
        .encode()
        .unwrap()
}

struct Instance {
    module: CompiledModule,
    vmctx: Vec<u64>,
    _store: Box<VMStoreContext>,
    _epoch: Box<u64>,
    _mem: Box<VMMemory>,
    _bytes: Vec<u8>,
    _table: Box<VMTable>,
    _elems: Vec<u64>,
    _global: Box<VMGlobal>,
}

impl Instance {
    fn new(config: &CompileConfig, src: &str) -> Instance {
        let compiler = Compiler::new(config).unwrap();
        let module = compiler
            .compile_module(&wat(src), &mut |ty| {
                ty.params.len() as u32 * 10 + ty.results.len() as u32
            })
            .unwrap();
        let off = module.info.offsets;
        let mut vmctx = vec![0u64; off.size() as usize / 8 + 1];
        let epoch = Box::new(0u64);
        let mut store = Box::new(VMStoreContext {
            stack_limit: 0,
            epoch_ptr: &*epoch,
            epoch_deadline: u64::MAX,
            pending_exception: 0,
        });
        let mut bytes = vec![0u8; 65536];
        let mut mem = Box::new(VMMemory {
            base: bytes.as_mut_ptr(),
            length: 65536,
        });
        let mut elems = vec![0u64; 4];
        let mut table = Box::new(VMTable {
            base: elems.as_mut_ptr(),
            length: 4,
        });
        let mut global = Box::new(VMGlobal { bits: 0 });
        vmctx[0] = &mut *store as *mut _ as u64;
        if off.num_memories > 0 {
            vmctx[off.memory(0) as usize / 8] = &mut *mem as *mut _ as u64;
        }
        if off.num_tables > 0 {
            vmctx[off.table(0) as usize / 8] = &mut *table as *mut _ as u64;
        }
        if off.num_globals > 0 {
            vmctx[off.global(0) as usize / 8] = &mut *global as *mut _ as u64;
        }
        let base = vmctx.as_mut_ptr() as *mut u8;
        for f in 0..off.num_funcs {
            let fr = VMFuncRef {
                func_ptr: module.function(f),
                vmctx: base,
                type_id: {
                    let ty = module.info.func_type(f);
                    ty.params.len() as u32 * 10 + ty.results.len() as u32
                },
                _pad: 0,
            };
            // SAFETY: the funcref slot lies inside `vmctx` (size from offsets).
            unsafe {
                std::ptr::write_unaligned(base.add(off.funcref(f) as usize) as *mut VMFuncRef, fr)
            };
        }
        // Table: element i = funcref of function i.
        for (i, e) in elems.iter_mut().enumerate().take(off.num_funcs as usize) {
            *e = base as u64 + u64::from(off.funcref(i as u32));
        }
        Instance {
            module,
            vmctx,
            _store: store,
            _epoch: epoch,
            _mem: mem,
            _bytes: bytes,
            _table: table,
            _elems: elems,
            _global: global,
        }
    }

    fn call(&mut self, name: &str, args: &[u64]) -> Vec<u64> {
        let f = self
            .module
            .info
            .exports
            .iter()
            .find(|e| e.name == name)
            .map(|e| match e.index {
                faaslet_jit::ExportIndex::Func(f) => f,
                _ => panic!(),
            })
            .unwrap();
        let ty = self.module.info.funcs[f as usize];
        let nres = self.module.info.types[ty as usize].results.len();
        let mut vals: Vec<ValRaw> = args.iter().map(|a| *a as ValRaw).collect();
        vals.resize(args.len().max(nres).max(1), 0);
        let tramp = self.module.array_trampoline(ty);
        let vm = self.vmctx.as_mut_ptr() as *mut u8;
        // SAFETY: the trampoline matches the function's type, `vals` has
        // enough slots, and the vmctx is fully initialised above.
        unsafe { tramp(self.module.function(f), vm, vm, vals.as_mut_ptr()) };
        vals[..nres].iter().map(|v| *v as u64).collect()
    }
}

const SRC: &str = r#"(module
  (type $ii (func (param i32) (result i32)))
  (memory 1)
  (table 4 funcref)
  (global $g (mut i64) (i64.const 0))
  (func $fac (export "fac") (param i64) (result i64)
    (if (result i64) (i64.eqz (local.get 0)) (then (i64.const 1))
      (else (i64.mul (local.get 0) (call $fac (i64.sub (local.get 0) (i64.const 1)))))))
  (func (export "srem") (param i32 i32) (result i32) (i32.rem_s (local.get 0) (local.get 1)))
  (func (export "sw") (param i32) (result i32)
    (block (block (block (br_table 0 1 2 (local.get 0))) (return (i32.const 10)))
      (return (i32.const 11)))
    (i32.const 12))
  (func (export "multi") (param i32 i32) (result i32 i32 i32)
    (local.get 1) (local.get 0) (i32.add (local.get 0) (local.get 1)))
  (func (export "mem") (param i32 i64) (result i64)
    (i64.store offset=3 (local.get 0) (local.get 1))
    (global.set $g (i64.load8_u offset=3 (local.get 0)))
    (i64.add (global.get $g) (i64.load offset=3 (local.get 0))))
  (func (export "ind") (param i32 i32) (result i32)
    (call_indirect (type $ii) (local.get 1) (local.get 0)))
  (func $dbl (param i32) (result i32) (i32.shl (local.get 0) (i32.const 1)))
  (func (export "loop") (param i32) (result i32) (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (local.get $acc) (local.get 0)))
      (br_if $l (local.tee 0 (i32.sub (local.get 0) (i32.const 1)))))
    (local.get $acc))
  (func (export "f") (param f64) (result f64 i32 i64)
    (f64.nearest (local.get 0)) (i32.trunc_sat_f64_s (local.get 0)) (i64.trunc_f64_s (local.get 0)))
)"#;

fn check(config: &CompileConfig) {
    let mut i = Instance::new(config, SRC);
    assert_eq!(i.call("fac", &[10]), vec![3628800]);
    assert_eq!(
        i.call("srem", &[i32::MIN as u32 as u64, u32::MAX as u64])[0] as u32,
        0
    );
    assert_eq!(i.call("srem", &[7, (-3i32) as u32 as u64])[0] as u32, 1);
    assert_eq!(i.call("sw", &[0]), vec![10]);
    assert_eq!(i.call("sw", &[1]), vec![11]);
    assert_eq!(i.call("sw", &[2]), vec![12]);
    assert_eq!(i.call("sw", &[99]), vec![12]);
    assert_eq!(i.call("multi", &[3, 4]), vec![4, 3, 7]);
    assert_eq!(
        i.call("mem", &[100, 0x1_0000_00ff]),
        vec![0x1_0000_00ff + 0xff]
    );
    assert_eq!(i.call("loop", &[4]), vec![10]);
    let r = i.call("f", &[2.5f64.to_bits()]);
    assert_eq!(f64::from_bits(r[0]), 2.0);
    assert_eq!(r[1] as u32, 2);
    assert_eq!(r[2], 2);
}

#[test]
fn run_guard_pages() {
    check(&CompileConfig::default());
}

#[test]
fn run_explicit_unoptimized() {
    check(&CompileConfig {
        bounds: BoundsChecks::Explicit,
        epoch_interruption: true,
        optimize: false,
        multi_memory: false,
        spectre_guard: true,
        relaxed_simd: true,
        function_references: true,
        memory64: true,
        exceptions: true,
        gc: true,
    });
}

#[test]
fn run_call_indirect() {
    let src = r#"(module
      (type $ii (func (param i32) (result i32)))
      (table 4 funcref)
      (elem declare func $a)
      (func $a (param i32) (result i32) (i32.add (local.get 0) (i32.const 100)))
      (func $b (param i32) (result i32) (i32.mul (local.get 0) (i32.const 3)))
      (func (export "ind") (param i32 i32) (result i32)
        (call_indirect (type $ii) (local.get 1) (local.get 0)))
      (func (export "rf") (result i32) (ref.is_null (ref.func $a)))
      (func (export "tsize") (result i32) (table.size 0))
    )"#;
    let mut i = Instance::new(&CompileConfig::default(), src);
    assert_eq!(i.call("ind", &[0, 5]), vec![105]);
    assert_eq!(i.call("ind", &[1, 5]), vec![15]);
    assert_eq!(i.call("rf", &[]), vec![0]);
    assert_eq!(i.call("tsize", &[]), vec![4]);
    let _ = abi::TRAP_HOST;
}

unsafe extern "C" fn dispatch(
    _ctx: *mut abi::VMHostFuncContext,
    _caller: *mut u8,
    values: *mut ValRaw,
    len: usize,
) -> u32 {
    assert_eq!(len, 2);
    // SAFETY: the stub passes `len` valid slots.
    unsafe {
        let a = *values as u32;
        let b = f64::from_bits(*values.add(1) as u64);
        *values = (u64::from(a) * 2) as ValRaw;
        *values.add(1) = (b + 1.0).to_bits() as ValRaw;
    }
    0
}

#[test]
fn run_host_stub() {
    use faaslet_jit::{FuncType, ValType};
    let compiler = Compiler::new(&CompileConfig::default()).unwrap();
    let ty = FuncType::new([ValType::I32, ValType::F64], [ValType::I64, ValType::F64]);
    let stub = compiler.compile_stub(&ty).unwrap();
    let mut ctx = abi::VMHostFuncContext {
        dispatch,
        data: std::ptr::null_mut(),
    };
    let mut vals: [ValRaw; 2] = [21, 1.5f64.to_bits() as ValRaw];
    let tramp = stub.array_trampoline();
    // SAFETY: the trampoline and stub are for `ty`; `ctx` is a valid host context.
    unsafe {
        tramp(
            stub.host_stub(),
            &mut ctx as *mut _ as *mut u8,
            std::ptr::null_mut(),
            vals.as_mut_ptr(),
        )
    };
    assert_eq!(vals[0], 42);
    assert_eq!(f64::from_bits(vals[1] as u64), 2.5);
    // The stub's `trapnz` is a recorded trap site.
    let n = stub
        .code_ranges()
        .iter()
        .flat_map(|&(s, e)| s..e)
        .filter(|pc| stub.lookup_trap(*pc) == Some(abi::TRAP_HOST))
        .count();
    assert_eq!(n, 1);
}
