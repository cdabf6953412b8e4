//! The sandbox target's program, its wasm encoding and its model.
//!
//! A [`Program`] is a memory declaration plus up to [`MAX_OPS`] operations:
//! loads and stores of every width at chosen addresses and static offsets,
//! `memory.grow`, `memory.size`, `memory.fill` and `memory.copy`. Addresses
//! are chosen relative to the memory's size *at that point* (just below or
//! across the end, near `u32::MAX`, on page edges), so most inputs probe the
//! bounds. [`Program::lower`] runs the program on a plain `Vec<u8>` model
//! and yields concrete operations with their expected outcomes;
//! [`encode`] turns them into a module with one exported function per
//! operation; [`check`] runs that module in an engine and compares with the
//! model, then checks the memory's surroundings: in guard-page mode the
//! canary page in front of the reservation and the page after the
//! accessible end are still inaccessible; in explicit mode (whose
//! reservation is mapped accessible, with no canary) the page after the
//! end still reads as zero.

use crate::{engines, DEADLINE_TICKS};
use arbitrary::Arbitrary;
use faaslet::{Error, Instance, Module, Store, TrapKind, Val};
use wasm_encoder::{
    CodeSection, ExportKind, ExportSection, Function, FunctionSection, Instruction as I, MemArg,
    MemorySection, MemoryType, TypeSection, ValType,
};

/// At most this many operations run per input.
pub const MAX_OPS: usize = 32;
const PAGE: u64 = 65536;
/// The engine's page limit for a memory without a maximum (both modes
/// allow at least this many; the program never gets near it).
const NO_MAX_LIMIT: u64 = 65536;

/// An address, resolved against the memory's size when the op runs.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Addr {
    /// Exactly this address.
    Raw(u32),
    /// `size - k` (wrapping): just inside or across the end.
    FromEnd(u8),
    /// `u32::MAX - k`: where sign-extension or wrap-around bugs live.
    FromTop(u8),
    /// `page * 64 KiB + k - 8`: page edges.
    Page(u8, u8),
}

/// A static offset (the `offset=` immediate).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Offset {
    /// No offset.
    Zero,
    /// A small offset.
    Small(u8),
    /// Any 32-bit offset.
    Raw(u32),
    /// `u32::MAX - k`.
    FromTop(u8),
    /// A whole number of pages, minus a few bytes.
    Pages(u8, u8),
}

/// Loads: (bytes, signed, produces i64, float).
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum LoadKind {
    I32Load8S,
    I32Load8U,
    I32Load16S,
    I32Load16U,
    I32Load,
    I64Load8S,
    I64Load8U,
    I64Load16S,
    I64Load16U,
    I64Load32S,
    I64Load32U,
    I64Load,
    F32Load,
    F64Load,
}

/// Stores.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum StoreKind {
    I32Store8,
    I32Store16,
    I32Store,
    I64Store8,
    I64Store16,
    I64Store32,
    I64Store,
    F32Store,
    F64Store,
}

/// A `memory.grow` delta.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Delta {
    /// 0..=4 pages.
    Small(u8),
    /// More than 65536 pages: always fails.
    Huge(u32),
}

/// A length for `memory.fill`/`memory.copy`.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Len {
    /// Up to 64 KiB.
    Small(u16),
    /// Any length.
    Raw(u32),
    /// Up to the end of memory from the destination, plus `k - 2`.
    ToEnd(u8),
}

/// One operation as generated.
#[derive(Arbitrary, Debug, Clone, Copy)]
#[allow(missing_docs)]
pub enum Op {
    Load {
        kind: LoadKind,
        addr: Addr,
        offset: Offset,
        aligned: bool,
    },
    Store {
        kind: StoreKind,
        addr: Addr,
        offset: Offset,
        aligned: bool,
        value: u64,
    },
    Grow(Delta),
    Size,
    Fill {
        dst: Addr,
        val: u8,
        len: Len,
    },
    Copy {
        dst: Addr,
        src: Addr,
        len: Len,
    },
}

/// A generated program.
#[derive(Arbitrary, Debug, Clone)]
pub struct Program {
    /// Initial pages (mod 5).
    pub initial: u8,
    /// Maximum pages (mod 17, at least `initial`), if any.
    pub maximum: Option<u8>,
    /// The operations (the first [`MAX_OPS`]).
    pub ops: Vec<Op>,
}

/// An operation with concrete immediates.
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)]
pub enum Concrete {
    Load {
        kind: LoadKind,
        addr: u32,
        offset: u32,
        aligned: bool,
    },
    Store {
        kind: StoreKind,
        addr: u32,
        offset: u32,
        aligned: bool,
        value: u64,
    },
    Grow(u32),
    Size,
    Fill {
        dst: u32,
        val: u8,
        len: u32,
    },
    Copy {
        dst: u32,
        src: u32,
        len: u32,
    },
}

/// What an operation's export must return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Returns this i64.
    Value(i64),
    /// Traps with `MemoryOutOfBounds`.
    OutOfBounds,
}

/// A lowered program: memory type, operations, expectations, final memory.
#[derive(Debug, Clone)]
pub struct Lowered {
    /// Initial pages.
    pub initial: u64,
    /// Maximum pages.
    pub maximum: Option<u64>,
    /// Operations with their expected outcomes.
    pub ops: Vec<(Concrete, Expect)>,
    /// The model's memory after all operations.
    pub final_memory: Vec<u8>,
}

fn resolve(a: Addr, size: u64) -> u32 {
    match a {
        Addr::Raw(x) => x,
        Addr::FromEnd(k) => (size as u32).wrapping_sub(k as u32),
        Addr::FromTop(k) => u32::MAX - k as u32,
        Addr::Page(p, k) => ((p as u32 % 20) * PAGE as u32)
            .wrapping_add(k as u32)
            .wrapping_sub(8),
    }
}

fn offset(o: Offset) -> u32 {
    match o {
        Offset::Zero => 0,
        Offset::Small(k) => k as u32,
        Offset::Raw(x) => x,
        Offset::FromTop(k) => u32::MAX - k as u32,
        Offset::Pages(p, k) => ((p as u32 % 20) * PAGE as u32).wrapping_sub(k as u32 % 16),
    }
}

impl LoadKind {
    fn bytes(self) -> u64 {
        use LoadKind::*;
        match self {
            I32Load8S | I32Load8U | I64Load8S | I64Load8U => 1,
            I32Load16S | I32Load16U | I64Load16S | I64Load16U => 2,
            I32Load | I64Load32S | I64Load32U | F32Load => 4,
            I64Load | F64Load => 8,
        }
    }
    /// The export's i64 result for the little-endian `raw` bytes read.
    fn result(self, raw: u64) -> i64 {
        use LoadKind::*;
        match self {
            I32Load8S => raw as u8 as i8 as i32 as u32 as i64,
            I32Load16S => raw as u16 as i16 as i32 as u32 as i64,
            I32Load8U | I32Load16U | I32Load | F32Load => raw as u32 as i64,
            I64Load8S => raw as u8 as i8 as i64,
            I64Load16S => raw as u16 as i16 as i64,
            I64Load32S => raw as u32 as i32 as i64,
            I64Load8U | I64Load16U | I64Load32U | I64Load | F64Load => raw as i64,
        }
    }
}

impl StoreKind {
    fn bytes(self) -> u64 {
        use StoreKind::*;
        match self {
            I32Store8 | I64Store8 => 1,
            I32Store16 | I64Store16 => 2,
            I32Store | I64Store32 | F32Store => 4,
            I64Store | F64Store => 8,
        }
    }
}

impl Program {
    /// Runs the program on the model, resolving addresses.
    pub fn lower(&self) -> Lowered {
        let initial = (self.initial % 5) as u64;
        let maximum = self.maximum.map(|m| ((m % 17) as u64).max(initial));
        let limit = maximum.unwrap_or(NO_MAX_LIMIT);
        let mut mem = vec![0u8; (initial * PAGE) as usize];
        let mut ops = Vec::new();
        for op in self.ops.iter().take(MAX_OPS) {
            let size = mem.len() as u64;
            let in_bounds = |ea: u64, n: u64| ea.checked_add(n).is_some_and(|e| e <= size);
            let c = match *op {
                Op::Load {
                    kind,
                    addr,
                    offset: o,
                    aligned,
                } => {
                    let (addr, offset) = (resolve(addr, size), offset(o));
                    let ea = addr as u64 + offset as u64;
                    let n = kind.bytes();
                    let e = if in_bounds(ea, n) {
                        let mut b = [0u8; 8];
                        b[..n as usize].copy_from_slice(&mem[ea as usize..(ea + n) as usize]);
                        Expect::Value(kind.result(u64::from_le_bytes(b)))
                    } else {
                        Expect::OutOfBounds
                    };
                    (
                        Concrete::Load {
                            kind,
                            addr,
                            offset,
                            aligned,
                        },
                        e,
                    )
                }
                Op::Store {
                    kind,
                    addr,
                    offset: o,
                    aligned,
                    value,
                } => {
                    let (addr, offset) = (resolve(addr, size), offset(o));
                    let ea = addr as u64 + offset as u64;
                    let n = kind.bytes();
                    let e = if in_bounds(ea, n) {
                        mem[ea as usize..(ea + n) as usize]
                            .copy_from_slice(&value.to_le_bytes()[..n as usize]);
                        Expect::Value(0)
                    } else {
                        Expect::OutOfBounds
                    };
                    (
                        Concrete::Store {
                            kind,
                            addr,
                            offset,
                            aligned,
                            value,
                        },
                        e,
                    )
                }
                Op::Grow(d) => {
                    let delta = match d {
                        Delta::Small(k) => (k % 5) as u32,
                        Delta::Huge(x) => 65537 + x % (u32::MAX - 65537),
                    };
                    let old = size / PAGE;
                    let e = if old + delta as u64 <= limit {
                        mem.resize(((old + delta as u64) * PAGE) as usize, 0);
                        Expect::Value(old as i64)
                    } else {
                        Expect::Value(-1)
                    };
                    (Concrete::Grow(delta), e)
                }
                Op::Size => (Concrete::Size, Expect::Value((size / PAGE) as i64)),
                Op::Fill { dst, val, len } => {
                    let dst = resolve(dst, size);
                    let len = length(len, dst, size);
                    let e = if in_bounds(dst as u64, len as u64) {
                        mem[dst as usize..dst as usize + len as usize].fill(val);
                        Expect::Value(0)
                    } else {
                        Expect::OutOfBounds
                    };
                    (Concrete::Fill { dst, val, len }, e)
                }
                Op::Copy { dst, src, len } => {
                    let (dst, src) = (resolve(dst, size), resolve(src, size));
                    let len = length(len, dst, size);
                    let e = if in_bounds(dst as u64, len as u64)
                        && in_bounds(src as u64, len as u64)
                    {
                        mem.copy_within(src as usize..src as usize + len as usize, dst as usize);
                        Expect::Value(0)
                    } else {
                        Expect::OutOfBounds
                    };
                    (Concrete::Copy { dst, src, len }, e)
                }
            };
            ops.push(c);
        }
        Lowered {
            initial,
            maximum,
            ops,
            final_memory: mem,
        }
    }
}

fn length(l: Len, dst: u32, size: u64) -> u32 {
    match l {
        Len::Small(k) => k as u32,
        Len::Raw(x) => x,
        Len::ToEnd(k) => (size as u32)
            .wrapping_sub(dst)
            .wrapping_add(k as u32 % 4)
            .wrapping_sub(2),
    }
}

fn memarg(offset: u32, natural_log2: u32, aligned: bool) -> MemArg {
    MemArg {
        offset: offset as u64,
        align: if aligned { natural_log2 } else { 0 },
        target: wasm_encoder::MemArgTarget::Memory(0),
        ordering: None,
    }
}

/// Encodes a lowered program: memory 0 (exported as "mem") and one
/// function `opN: [] -> [i64]` per operation.
pub fn encode(p: &Lowered) -> Vec<u8> {
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I64]);
    let mut funcs = FunctionSection::new();
    let mut mems = MemorySection::new();
    mems.memory(MemoryType {
        minimum: p.initial,
        maximum: p.maximum,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    let mut exports = ExportSection::new();
    exports.export("mem", ExportKind::Memory, 0);
    let mut code = CodeSection::new();
    for (i, (op, _)) in p.ops.iter().enumerate() {
        funcs.function(0);
        exports.export(&format!("op{i}"), ExportKind::Func, i as u32);
        let mut f = Function::new([]);
        match *op {
            Concrete::Load {
                kind,
                addr,
                offset,
                aligned,
            } => {
                use LoadKind::*;
                f.instruction(&I::I32Const(addr as i32));
                let log2 = kind.bytes().trailing_zeros();
                let m = memarg(offset, log2, aligned);
                let (load, widen): (I, &[I]) = match kind {
                    I32Load8S => (I::I32Load8S(m), &[I::I64ExtendI32U]),
                    I32Load8U => (I::I32Load8U(m), &[I::I64ExtendI32U]),
                    I32Load16S => (I::I32Load16S(m), &[I::I64ExtendI32U]),
                    I32Load16U => (I::I32Load16U(m), &[I::I64ExtendI32U]),
                    I32Load => (I::I32Load(m), &[I::I64ExtendI32U]),
                    I64Load8S => (I::I64Load8S(m), &[]),
                    I64Load8U => (I::I64Load8U(m), &[]),
                    I64Load16S => (I::I64Load16S(m), &[]),
                    I64Load16U => (I::I64Load16U(m), &[]),
                    I64Load32S => (I::I64Load32S(m), &[]),
                    I64Load32U => (I::I64Load32U(m), &[]),
                    I64Load => (I::I64Load(m), &[]),
                    F32Load => (I::F32Load(m), &[I::I32ReinterpretF32, I::I64ExtendI32U]),
                    F64Load => (I::F64Load(m), &[I::I64ReinterpretF64]),
                };
                f.instruction(&load);
                for w in widen {
                    f.instruction(w);
                }
            }
            Concrete::Store {
                kind,
                addr,
                offset,
                aligned,
                value,
            } => {
                use StoreKind::*;
                f.instruction(&I::I32Const(addr as i32));
                let log2 = kind.bytes().trailing_zeros();
                let m = memarg(offset, log2, aligned);
                match kind {
                    I32Store8 | I32Store16 | I32Store | F32Store => {
                        f.instruction(&I::I32Const(value as u32 as i32));
                    }
                    _ => {
                        f.instruction(&I::I64Const(value as i64));
                    }
                }
                let store = match kind {
                    I32Store8 => I::I32Store8(m),
                    I32Store16 => I::I32Store16(m),
                    I32Store => I::I32Store(m),
                    I64Store8 => I::I64Store8(m),
                    I64Store16 => I::I64Store16(m),
                    I64Store32 => I::I64Store32(m),
                    I64Store => I::I64Store(m),
                    F32Store => {
                        f.instruction(&I::F32ReinterpretI32);
                        I::F32Store(m)
                    }
                    F64Store => {
                        f.instruction(&I::F64ReinterpretI64);
                        I::F64Store(m)
                    }
                };
                f.instruction(&store);
                f.instruction(&I::I64Const(0));
            }
            Concrete::Grow(d) => {
                f.instruction(&I::I32Const(d as i32));
                f.instruction(&I::MemoryGrow(0));
                f.instruction(&I::I64ExtendI32S);
            }
            Concrete::Size => {
                f.instruction(&I::MemorySize(0));
                f.instruction(&I::I64ExtendI32U);
            }
            Concrete::Fill { dst, val, len } => {
                f.instruction(&I::I32Const(dst as i32));
                f.instruction(&I::I32Const(val as i32));
                f.instruction(&I::I32Const(len as i32));
                f.instruction(&I::MemoryFill(0));
                f.instruction(&I::I64Const(0));
            }
            Concrete::Copy { dst, src, len } => {
                f.instruction(&I::I32Const(dst as i32));
                f.instruction(&I::I32Const(src as i32));
                f.instruction(&I::I32Const(len as i32));
                f.instruction(&I::MemoryCopy {
                    src_mem: 0,
                    dst_mem: 0,
                });
                f.instruction(&I::I64Const(0));
            }
        }
        f.instruction(&I::End);
        code.function(&f);
    }
    let mut m = wasm_encoder::Module::new();
    m.section(&types);
    m.section(&funcs);
    m.section(&mems);
    m.section(&exports);
    m.section(&code);
    m.finish()
}

/// Whether the byte at `addr` can be read by this process, asked of the
/// kernel (so an inaccessible page is reported, not faulted on).
pub fn readable(addr: usize) -> bool {
    read_into(addr, &mut [0u8])
}

/// Copies `buf.len()` bytes from `addr` into `buf` through the kernel;
/// false (and `buf` unspecified) if any of them is not readable.
pub fn read_into(addr: usize, buf: &mut [u8]) -> bool {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: process_vm_readv copies from `remote` in our own address
    // space into `buf` (valid for `buf.len()` bytes) with kernel-checked
    // access; an unmapped or PROT_NONE source makes it fail with EFAULT
    // (or copy fewer bytes) instead of faulting.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    n == buf.len() as isize
}

/// Runs `p` in engine `explicit` (0 = guard pages, 1 = explicit checks)
/// and panics on any difference from the model or on a touched canary.
pub fn check(p: &Lowered, explicit: bool) {
    let engine = &engines()[explicit as usize];
    let wasm = encode(p);
    let module = Module::new(engine, &wasm).expect("sandbox module compiles");
    let mut store = Store::new(engine, ());
    let inst = Instance::new(&mut store, &module, &[]).expect("sandbox module instantiates");
    let mem = inst.get_memory(&mut store, "mem").expect("memory export");
    let mode = if explicit { "explicit" } else { "guard" };
    for (i, (op, expect)) in p.ops.iter().enumerate() {
        let f = inst
            .get_func(&mut store, &format!("op{i}"))
            .expect("op export");
        let mut out = [Val::I64(0)];
        store.set_epoch_deadline(DEADLINE_TICKS);
        let got = match f.call(&mut store, &[], &mut out) {
            Ok(()) => Expect::Value(out[0].i64().expect("i64 result")),
            Err(Error::Trap(t)) if t.kind == TrapKind::MemoryOutOfBounds => Expect::OutOfBounds,
            Err(e) => panic!("[{mode}] op{i} {op:?}: unexpected error {e}"),
        };
        assert_eq!(got, *expect, "[{mode}] op{i} {op:?}: engine vs model");
    }
    let data = mem.data(&store).expect("a private memory");
    assert_eq!(data.len(), p.final_memory.len(), "[{mode}] final size");
    if data != p.final_memory.as_slice() {
        let i = data
            .iter()
            .zip(&p.final_memory)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "[{mode}] final memory differs at {i:#x}: engine {:#04x}, model {:#04x}",
            data[i], p.final_memory[i]
        );
    }
    let base = data.as_ptr() as usize;
    let len = data.len();
    let page = faaslet_sfi_page();
    let pages = len as u64 / PAGE;
    if len > 0 {
        assert!(
            readable(base + len - 1),
            "[{mode}] last byte not accessible"
        );
    }
    if explicit && !engine.config().explicit_canaries {
        // Explicit bounds without canaries: the engine maps the whole
        // reservation readable and writable (sfi `new_unguarded`), unless
        // the kernel refused that. Nothing past the end may have been
        // written: bytes there must still read as zero.
        let mut tail = vec![0u8; page];
        // (Only below the maximum: at it, the next mapping is someone else's.)
        if p.maximum.is_none_or(|m| pages < m) && read_into(base + len, &mut tail) {
            assert!(
                tail.iter().all(|&b| b == 0),
                "[{mode}] bytes past the memory's end ({pages} pages) were written"
            );
        }
    } else {
        assert!(
            !readable(base - page),
            "[{mode}] canary page before the memory is accessible"
        );
        assert!(
            !readable(base - 1),
            "[{mode}] byte before the memory is accessible"
        );
        if p.maximum.is_none_or(|m| pages < m) {
            assert!(
                !readable(base + len),
                "[{mode}] byte after the memory's end ({pages} pages) is accessible"
            );
        }
    }
}

fn faaslet_sfi_page() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// Runs a generated program in both bounds modes.
pub fn run(p: &Program) {
    let lowered = p.lower();
    check(&lowered, false);
    check(&lowered, true);
}
