//! The Faasm function API, independent of the engine.
//!
//! Faasm functions import these calls from module `env` (see
//! `sdk/include/faasm/faasm.h`). Each `pub fn` here implements one of them
//! over a [`FaasmEnv`]: the calling Faaslet's [`FaasmCtx`] plus its linear
//! memory. The engine registers thin wrappers around them in its linker
//! (`faaslet_platform::faasm`). Every guest pointer and length is checked against the
//! memory first ([`mem`]); a bad one is a [`FaasmError`], which the engine
//! turns into a trap, so a hostile guest can never make the host touch
//! memory outside its sandbox.
//!
//! State lives in a [`StateStore`] (the per-process [`LocalStateStore`](faaslet_state::LocalStateStore)
//! in front of a global tier), namespaced by the context's user; chained calls go through a [`Chainer`] the engine provides.
//!
//! The `_ptr` calls (`__faasm_read_state_ptr`, `__faasm_read_state_offset_ptr`)
//! map the value itself into the guest: the engine grows the memory and
//! maps the value's shared segment over the new pages
//! ([`FaasmEnv::map_state`]), so every Faaslet of the host that maps a key
//! reads and writes the same physical pages, and a write through the
//! pointer is seen by the others (and by pushes) at once. The same address
//! is returned for the rest of the call. An environment that cannot map
//! (the default of [`FaasmEnv::map_state`]) gets a copy instead, in pages
//! the host grows at the top of the memory; `__faasm_pull_state` refreshes
//! the copy and the flag/push calls write it back.
//!
//! ```
//! use faaslet_hostapi::faasm::{self, FaasmCtx, FaasmEnv, NoChaining};
//! use faaslet_hostapi::memory::GuestMemory;
//! use faaslet_state::LocalStateStore;
//! use std::sync::Arc;
//!
//! // A guest memory and context, as the engine would hand them over.
//! struct Env { ctx: FaasmCtx, mem: Vec<u8> }
//! impl FaasmEnv for Env {
//!     fn parts(&mut self) -> (&mut FaasmCtx, GuestMemory<'_>) {
//!         (&mut self.ctx, GuestMemory::new(&mut self.mem))
//!     }
//!     fn grow_memory(&mut self, _pages: u32) -> Option<u32> { None }
//! }
//! let ctx = FaasmCtx::new(b"hi".to_vec(), Arc::new(LocalStateStore::new()), Box::new(NoChaining));
//! let mut env = Env { ctx, mem: vec![0; 64] };
//! assert_eq!(faasm::read_input(&mut env, 8, 16).unwrap(), 2);
//! assert_eq!(&env.mem[8..10], b"hi");
//! faasm::write_output(&mut env, 8, 2).unwrap();
//! assert_eq!(env.ctx.output(), b"hi");
//! // A pointer past the end is an error, not a host fault.
//! assert!(faasm::read_input(&mut env, 60, 16).is_err());
//! ```

mod chain;
mod error;
pub mod mem;
pub mod waits;

pub use chain::{CallResult, Chainer, NoChaining};
pub use error::FaasmError;
use faaslet_state::{GlobalLock, LockMode, StateStore, StateValue};

/// Which of a value's two explicit locks a lock call takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockTier {
    /// The per-process lock (`__faasm_lock_state_read/write`).
    Local,
    /// The global tier's lock (`__faasm_lock_state_global_*`).
    Global,
}

use crate::memory::GuestMemory;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

/// A state value placed in the guest's memory by a `_ptr` call.
#[derive(Debug)]
struct Mapping {
    addr: u32,
    len: u32,
    value: Arc<StateValue>,
    /// The value's own pages (mapped shared), not a copy: nothing to write
    /// back or refresh.
    shared: bool,
}

/// Wasm page size.
const PAGE: u64 = 65536;

#[derive(Debug)]
struct HeldLock {
    value: Arc<StateValue>,
    tier: LockTier,
    write: bool,
    global: Option<GlobalLock>,
    /// The holder in the wait-for graph (see [`waits`]), while held.
    _holding: Option<waits::Holding>,
}

/// The Faasm side of one Faaslet: its input and output, its view of state
/// and its chained calls.
pub struct FaasmCtx {
    input: Vec<u8>,
    output: Vec<u8>,
    state: Arc<dyn StateStore>,
    chainer: Box<dyn Chainer>,
    conf: Arc<HashMap<String, u32>>,
    mappings: HashMap<String, Mapping>,
    held: Vec<HeldLock>,
    user: String,
    deadline: Option<std::time::Instant>,
    /// Free space in host-grown pages: `arena.start..arena.end`.
    arena: Range<u64>,
    /// The most bytes `__faasm_write_output` may write.
    max_output: usize,
}

impl std::fmt::Debug for FaasmCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaasmCtx")
            .field("input_len", &self.input.len())
            .field("output_len", &self.output.len())
            .field("mappings", &self.mappings.len())
            .field("held_locks", &self.held.len())
            .finish()
    }
}

impl FaasmCtx {
    /// A context for one call with `input`.
    pub fn new(input: Vec<u8>, state: Arc<dyn StateStore>, chainer: Box<dyn Chainer>) -> FaasmCtx {
        FaasmCtx {
            input,
            output: Vec::new(),
            state,
            chainer,
            conf: Arc::new(HashMap::new()),
            mappings: HashMap::new(),
            held: Vec::new(),
            user: "default".to_string(),
            deadline: None,
            arena: 0..0,
            max_output: usize::MAX,
        }
    }

    /// Caps what `__faasm_write_output` may write (default: no cap beyond
    /// the guest's memory): past it the call fails naming the limit, before
    /// the host copies anything.
    pub fn with_max_output(mut self, bytes: usize) -> FaasmCtx {
        self.max_output = bytes;
        self
    }

    /// Sets the flags `__faasm_conf_flag` reports (absent flags are 0).
    pub fn with_conf_flags(mut self, conf: Arc<HashMap<String, u32>>) -> FaasmCtx {
        self.conf = conf;
        self
    }

    /// Sets the user whose state namespace the calls use (default
    /// `"default"`).
    pub fn with_user(mut self, user: &str) -> FaasmCtx {
        self.user = user.to_string();
        self
    }

    /// The user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Sets the deadline global lock waits give up at.
    pub fn set_deadline(&mut self, deadline: Option<std::time::Instant>) {
        self.deadline = deadline;
        self.chainer.set_deadline(deadline);
    }

    /// Replaces the call's input.
    pub fn set_input(&mut self, input: Vec<u8>) {
        self.input = input;
    }

    /// The call's input.
    pub fn input(&self) -> &[u8] {
        &self.input
    }

    /// What the function has written so far.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Takes the output, leaving it empty.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// The state store.
    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    /// The shared mappings of this call, as (guest address, value): for
    /// the engine to collect their tracked writes when the call ends (see
    /// [`FaasmCtx::mark_written`]).
    pub fn shared_mappings(&self) -> Vec<(u32, Arc<StateValue>)> {
        self.mappings
            .values()
            .filter(|m| m.shared)
            .map(|m| (m.addr, m.value.clone()))
            .collect()
    }

    /// Marks dirty in `value` the guest ranges `written` of its mapping at
    /// `addr` (as [`FaasmEnv::written`] reports them).
    pub fn mark_written(value: &StateValue, addr: u32, written: &[Range<u64>]) {
        for w in written {
            let start = w.start.saturating_sub(addr as u64) as usize;
            let end = w.end.saturating_sub(addr as u64) as usize;
            value.mark_dirty(start, end.saturating_sub(start));
        }
    }

    /// Releases every state lock the function still holds (called when a
    /// call ends, normally or by a trap, so a crashed function cannot
    /// leave other Faaslets blocked).
    pub fn release_locks(&mut self) {
        for h in std::mem::take(&mut self.held) {
            // A global tier that is down cannot take the release; the
            // lease expires the lock instead.
            let _ = self.release(h);
        }
    }

    fn release(&self, h: HeldLock) -> Result<(), FaasmError> {
        match h.global {
            Some(g) => self.state.unlock_global(&g)?,
            None if h.write => h.value.local_lock().unlock_write(),
            None => h.value.local_lock().unlock_read(),
        }
        Ok(())
    }

    /// Number of state locks currently held.
    pub fn held_locks(&self) -> usize {
        self.held.len()
    }
}

impl Drop for FaasmCtx {
    fn drop(&mut self) {
        self.release_locks();
    }
}

/// What a Faasm host call needs from the engine: the calling Faaslet's
/// context and memory together, and a way to grow that memory.
pub trait FaasmEnv {
    /// The context and a view of the guest's memory 0 (its current
    /// length; raw, since other Faaslets may write mapped pages of it).
    fn parts(&mut self) -> (&mut FaasmCtx, GuestMemory<'_>);
    /// Grows memory 0 by `pages` wasm pages; returns the old size in pages.
    fn grow_memory(&mut self, pages: u32) -> Option<u32>;
    /// Grows memory 0 by enough pages for the first `len` bytes of
    /// `value` (which is at least that long) and maps the value's segment
    /// over them, shared; returns the guest address. `None` if this
    /// environment cannot map (the `_ptr` calls then copy the value).
    fn map_state(&mut self, value: &StateValue, len: usize) -> Option<Result<u32, FaasmError>> {
        let _ = (value, len);
        None
    }
    /// The guest address ranges written since the last call in the shared
    /// mapping that [`map_state`](Self::map_state) returned `addr` for
    /// (each write reported once), or `None` if writes there are not
    /// tracked (the flag calls are then the only record).
    fn written(&mut self, addr: u32) -> Option<Result<Vec<Range<u64>>, FaasmError>> {
        let _ = addr;
        None
    }
}

/// Marks dirty, in the value, what the guest wrote through `key`'s shared
/// mapping since the last harvest (nothing if not mapped or not tracked).
fn harvest(env: &mut impl FaasmEnv, key: &str) -> Result<(), FaasmError> {
    let (ctx, _) = env.parts();
    let Some(map) = ctx.mappings.get(key).filter(|m| m.shared) else {
        return Ok(());
    };
    let (addr, value) = (map.addr, map.value.clone());
    if let Some(written) = env.written(addr) {
        FaasmCtx::mark_written(&value, addr, &written?);
    }
    Ok(())
}

fn nonneg(v: i32, what: &'static str) -> Result<usize, FaasmError> {
    mem::len(v, what).map(|v| v as usize)
}

/// Allocates `len` bytes (16-aligned) in host-grown pages of the guest.
fn arena_alloc(env: &mut impl FaasmEnv, len: u64) -> Result<u32, FaasmError> {
    let (ctx, _) = env.parts();
    let start = (ctx.arena.start + 15) & !15;
    if start + len <= ctx.arena.end {
        ctx.arena.start = start + len;
        return Ok(start as u32);
    }
    let pages = len.div_ceil(PAGE).max(1);
    let p32 = u32::try_from(pages).map_err(|_| FaasmError::MemoryFull { pages })?;
    let old = env
        .grow_memory(p32)
        .ok_or(FaasmError::MemoryFull { pages })? as u64;
    let base = old * PAGE;
    let end = base + pages * PAGE;
    if end > 1 << 32 {
        return Err(FaasmError::MemoryFull { pages });
    }
    let (ctx, _) = env.parts();
    ctx.arena = base + len..end;
    Ok(base as u32)
}

/// `long __faasm_read_input(unsigned char *buf, long len)`: copies up to
/// `len` bytes of the input to `buf`; returns the input's length.
pub fn read_input(env: &mut impl FaasmEnv, buf: u32, len: i32) -> Result<i32, FaasmError> {
    let len = mem::len(len, "read_input len")?;
    let (ctx, mut m) = env.parts();
    mem::check(&m, buf, len, "read_input buffer")?;
    let n = (len as usize).min(ctx.input.len());
    mem::write(&mut m, buf, &ctx.input[..n], "read_input buffer")?;
    Ok(ctx.input.len() as i32)
}

/// `void __faasm_write_output(const unsigned char *out, long len)`: sets
/// the output, replacing what an earlier call wrote (as Faasm does). The
/// output buffer is reused, so this allocates only when it must grow.
pub fn write_output(env: &mut impl FaasmEnv, ptr: u32, len: i32) -> Result<(), FaasmError> {
    let len = mem::len(len, "write_output len")?;
    let (ctx, m) = env.parts();
    mem::check(&m, ptr, len, "write_output buffer")?;
    if len as usize > ctx.max_output {
        return Err(FaasmError::OutputTooLarge {
            len: len as u64,
            limit: ctx.max_output as u64,
        });
    }
    ctx.output.clear();
    m.extend_vec(ptr, len, &mut ctx.output)
        .map_err(|_| FaasmError::NoHostMemory {
            what: "write_output buffer",
            len: len as u64,
        })
}

/// `unsigned int __faasm_chain_name(const char *name, const unsigned char
/// *input, long len)`: starts function `name`; returns its call id, or 0
/// if there is no such function.
pub fn chain_name(
    env: &mut impl FaasmEnv,
    name: u32,
    input: u32,
    len: i32,
) -> Result<u32, FaasmError> {
    let len = mem::len(len, "chain_name input len")?;
    let (ctx, m) = env.parts();
    let name = mem::cstr(&m, name, "chain_name name")?;
    let input = mem::to_vec(&m, input, len, "chain_name input")?;
    match ctx.chainer.chain_name(&name, &input) {
        Ok(id) => Ok(id),
        Err(FaasmError::UnknownFunction(_)) => Ok(0),
        Err(e) => Err(e),
    }
}

/// `unsigned int __faasm_chain_ptr(int (*func)(), const unsigned char
/// *input, long len)`: starts the function at table index `func` of this
/// module in a new Faaslet; returns its call id.
pub fn chain_ptr(
    env: &mut impl FaasmEnv,
    func: u32,
    input: u32,
    len: i32,
) -> Result<u32, FaasmError> {
    let len = mem::len(len, "chain_ptr input len")?;
    let (ctx, m) = env.parts();
    let input = mem::to_vec(&m, input, len, "chain_ptr input")?;
    match ctx.chainer.chain_ptr(func, &input) {
        Ok(id) => Ok(id),
        Err(FaasmError::UnknownFunction(_)) => Ok(0),
        Err(e) => Err(e),
    }
}

/// `int __faasm_await_call(unsigned int id)`: the callee's return code, or
/// -1 if `id` is not a call this function started.
pub fn await_call(env: &mut impl FaasmEnv, id: u32) -> Result<i32, FaasmError> {
    let (ctx, _) = env.parts();
    match ctx.chainer.await_call(id) {
        Ok(r) => Ok(r.return_code),
        Err(FaasmError::UnknownCall(_)) => Ok(-1),
        Err(e) => Err(e),
    }
}

/// `int __faasm_await_call_output(unsigned int id, char **out, int *len)`:
/// awaits the call, copies its output into host-grown pages of this
/// function's memory, stores the address in `*out` and the length in
/// `*len`, and returns the callee's return code (-1 for an unknown id, with
/// `*out`/`*len` set to 0). The copy lives as long as the Faaslet.
pub fn await_call_output(
    env: &mut impl FaasmEnv,
    id: u32,
    out: u32,
    len: u32,
) -> Result<i32, FaasmError> {
    {
        let (_, m) = env.parts();
        mem::check(&m, out, 4, "await_call_output out")?;
        mem::check(&m, len, 4, "await_call_output len")?;
    }
    let (ctx, _) = env.parts();
    let result = match ctx.chainer.await_call(id) {
        Ok(r) => r,
        Err(FaasmError::UnknownCall(_)) => {
            let (_, mut m) = env.parts();
            mem::write_u32(&mut m, out, 0, "await_call_output out")?;
            mem::write_u32(&mut m, len, 0, "await_call_output len")?;
            return Ok(-1);
        }
        Err(e) => return Err(e),
    };
    let n = result.output.len();
    let n32 = u32::try_from(n).map_err(|_| FaasmError::BufferTooSmall {
        needed: n as u64,
        len: u32::MAX as u64,
    })?;
    let addr = arena_alloc(env, n as u64)?;
    let (_, mut m) = env.parts();
    mem::write(&mut m, addr, &result.output, "await_call_output copy")?;
    mem::write_u32(&mut m, out, addr, "await_call_output out")?;
    mem::write_u32(&mut m, len, n32, "await_call_output len")?;
    Ok(result.return_code)
}

/// The value for the key string at `key`.
fn value_at(ctx: &FaasmCtx, m: &GuestMemory<'_>, key: u32) -> Result<Arc<StateValue>, FaasmError> {
    Ok(ctx
        .state
        .value(&ctx.user, &mem::cstr(m, key, "state key")?)?)
}

/// Copies `ranges` of a mapped value's guest copy back into the value.
fn write_back(
    ctx: &FaasmCtx,
    m: &GuestMemory<'_>,
    key: &str,
    ranges: Option<&[Range<usize>]>,
) -> Result<(), FaasmError> {
    let Some(map) = ctx.mappings.get(key).filter(|m| !m.shared) else {
        return Ok(());
    };
    let copy = mem::ptr(m, map.addr, map.len, "mapped state")?;
    let len = map.len as usize;
    match ranges {
        // SAFETY: `copy .. copy + len` was checked to lie inside the guest
        // memory, which lives for the whole host call.
        None => unsafe { map.value.write_at_raw(0, copy, len)? },
        Some(rs) => {
            for r in rs {
                let end = r.end.min(len);
                if r.start < end {
                    // SAFETY: r.start < end <= len: inside the checked range.
                    unsafe {
                        map.value
                            .write_at_raw(r.start, copy.add(r.start), end - r.start)?
                    };
                }
            }
        }
    }
    Ok(())
}

/// Refreshes `key`'s guest copy (if mapped) from the value.
fn refresh(ctx: &FaasmCtx, m: &GuestMemory<'_>, key: &str) -> Result<(), FaasmError> {
    if let Some(map) = ctx.mappings.get(key).filter(|m| !m.shared) {
        let copy = mem::ptr(m, map.addr, map.len, "mapped state")?;
        // SAFETY: the range was checked to lie inside the guest memory,
        // which lives for the whole host call.
        unsafe { map.value.read_at_raw(0, copy, map.len as usize) };
    }
    Ok(())
}

/// `long __faasm_read_state(const char *key, unsigned char *buf, long len)`:
/// copies up to `len` bytes of the value to `buf` (zero-padded); returns
/// the value's length.
pub fn read_state(
    env: &mut impl FaasmEnv,
    key: u32,
    buf: u32,
    len: i32,
) -> Result<i32, FaasmError> {
    let len = mem::len(len, "read_state len")?;
    let (ctx, m) = env.parts();
    let v = value_at(ctx, &m, key)?;
    let dst = mem::ptr(&m, buf, len, "read_state buffer")?;
    // SAFETY: `dst .. dst + len` was checked to lie inside the guest
    // memory, which lives for the whole host call.
    let total = unsafe { v.read_at_raw(0, dst, len as usize) };
    Ok(i32::try_from(total).unwrap_or(i32::MAX))
}

/// `void __faasm_write_state(const char *key, const unsigned char *data,
/// long len)`: replaces the value.
pub fn write_state(
    env: &mut impl FaasmEnv,
    key: u32,
    data: u32,
    len: i32,
) -> Result<(), FaasmError> {
    let len = mem::len(len, "write_state len")?;
    let (ctx, m) = env.parts();
    let key = mem::cstr(&m, key, "state key")?;
    let v = ctx.state.value(&ctx.user, &key)?;
    let src = mem::ptr(&m, data, len, "write_state data")?;
    // SAFETY: `src .. src + len` was checked to lie inside the guest
    // memory, which lives for the whole host call.
    unsafe { v.set_raw(src, len as usize)? };
    refresh(ctx, &m, &key)
}

fn check_range(total: usize, offset: usize, len: usize) -> Result<(), FaasmError> {
    if offset.checked_add(len).is_none_or(|e| e > total) {
        return Err(FaasmError::StateRange {
            offset: offset as u64,
            len: len as u64,
            total: total as u64,
        });
    }
    Ok(())
}

/// `void __faasm_write_state_offset(const char *key, long total_len, long
/// offset, const unsigned char *data, long len)`.
pub fn write_state_offset(
    env: &mut impl FaasmEnv,
    key: u32,
    total: i32,
    offset: i32,
    data: u32,
    len: i32,
) -> Result<(), FaasmError> {
    let total = nonneg(total, "total_len")?;
    let offset = nonneg(offset, "offset")?;
    let len32 = mem::len(len, "write_state_offset len")?;
    check_range(total, offset, len32 as usize)?;
    let (ctx, m) = env.parts();
    let key = mem::cstr(&m, key, "state key")?;
    let v = ctx.state.value(&ctx.user, &key)?;
    let src = mem::ptr(&m, data, len32, "write_state_offset data")?;
    v.ensure_len(total)?;
    // SAFETY: `src .. src + len32` was checked to lie inside the guest
    // memory, which lives for the whole host call.
    unsafe { v.write_at_raw(offset, src, len32 as usize)? };
    refresh(ctx, &m, &key)
}

/// `void __faasm_read_state_offset(const char *key, long total_len, long
/// offset, unsigned char *buf, long len)`.
pub fn read_state_offset(
    env: &mut impl FaasmEnv,
    key: u32,
    total: i32,
    offset: i32,
    buf: u32,
    len: i32,
) -> Result<(), FaasmError> {
    let total = nonneg(total, "total_len")?;
    let offset = nonneg(offset, "offset")?;
    let len32 = mem::len(len, "read_state_offset len")?;
    check_range(total, offset, len32 as usize)?;
    let (ctx, m) = env.parts();
    let v = value_at(ctx, &m, key)?;
    let dst = mem::ptr(&m, buf, len32, "read_state_offset buffer")?;
    v.ensure_len(total)?;
    // SAFETY: `dst .. dst + len32` was checked to lie inside the guest
    // memory, which lives for the whole host call.
    unsafe { v.read_at_raw(offset, dst, len32 as usize) };
    Ok(())
}

/// Maps the value of `key`, at least `total` bytes long, into the guest
/// (or copies it, if the environment cannot map); returns the guest
/// address of its first byte. A key already mapped at least that long in
/// this call keeps its address.
fn map_value(env: &mut impl FaasmEnv, key: u32, total: usize) -> Result<u32, FaasmError> {
    let (ctx, m) = env.parts();
    let key_owned = mem::cstr(&m, key, "state key")?;
    if let Some(map) = ctx.mappings.get(&key_owned) {
        if map.len as usize >= total {
            return Ok(map.addr);
        }
    }
    // A longer mapping replaces a shorter one: take what was written
    // through the old one first (its pages stay mapped, and shared, until
    // the call ends, but only the newest mapping is harvested later).
    harvest(env, &key_owned)?;
    let (ctx, _) = env.parts();
    let v = ctx.state.value(&ctx.user, &key_owned)?;
    v.ensure_len(total)?;
    let len = v.len().max(total);
    let len32 = u32::try_from(len).map_err(|_| FaasmError::ValueTooLarge { len: len as u64 })?;
    let (addr, shared) = match env.map_state(&v, len) {
        Some(r) => (r?, true),
        None => {
            let addr = arena_alloc(env, len as u64)?;
            let (_, m) = env.parts();
            let dst = mem::ptr(&m, addr, len32, "mapped state")?;
            // SAFETY: the range was checked to lie inside the guest memory,
            // which lives for the whole host call.
            unsafe { v.read_at_raw(0, dst, len) };
            (addr, false)
        }
    };
    let (ctx, _) = env.parts();
    ctx.mappings.insert(
        key_owned,
        Mapping {
            addr,
            len: len32,
            value: v,
            shared,
        },
    );
    Ok(addr)
}

/// `unsigned char *__faasm_read_state_ptr(const char *key, long total_len)`:
/// the address of the value's copy in this function's memory.
pub fn read_state_ptr(env: &mut impl FaasmEnv, key: u32, total: i32) -> Result<u32, FaasmError> {
    let total = nonneg(total, "total_len")?;
    map_value(env, key, total)
}

/// `unsigned char *__faasm_read_state_offset_ptr(const char *key, long
/// total_len, long offset, long len)`: the address of byte `offset` of the
/// value's copy.
pub fn read_state_offset_ptr(
    env: &mut impl FaasmEnv,
    key: u32,
    total: i32,
    offset: i32,
    len: i32,
) -> Result<u32, FaasmError> {
    let total = nonneg(total, "total_len")?;
    let offset = nonneg(offset, "offset")?;
    let len = nonneg(len, "len")?;
    check_range(total, offset, len)?;
    Ok(map_value(env, key, total)? + offset as u32)
}

/// `void __faasm_flag_state_dirty(const char *key, long total_len)`: the
/// whole value changed (through its mapped copy).
pub fn flag_state_dirty(env: &mut impl FaasmEnv, key: u32, total: i32) -> Result<(), FaasmError> {
    let total = nonneg(total, "total_len")?;
    flag_dirty(env, key, 0, total)
}

/// `void __faasm_flag_state_offset_dirty(const char *key, long total_len,
/// long offset, long len)`.
pub fn flag_state_offset_dirty(
    env: &mut impl FaasmEnv,
    key: u32,
    total: i32,
    offset: i32,
    len: i32,
) -> Result<(), FaasmError> {
    let total = nonneg(total, "total_len")?;
    let offset = nonneg(offset, "offset")?;
    let len = nonneg(len, "len")?;
    check_range(total, offset, len)?;
    flag_dirty(env, key, offset, len)
}

fn flag_dirty(
    env: &mut impl FaasmEnv,
    key: u32,
    offset: usize,
    len: usize,
) -> Result<(), FaasmError> {
    let (ctx, m) = env.parts();
    let key = mem::cstr(&m, key, "state key")?;
    let v = ctx.state.value(&ctx.user, &key)?;
    let r = offset..offset + len;
    write_back(ctx, &m, &key, Some(std::slice::from_ref(&r)))?;
    v.mark_dirty(offset, len);
    Ok(())
}

/// `void __faasm_append_state(const char *key, const unsigned char *data, long len)`.
pub fn append_state(
    env: &mut impl FaasmEnv,
    key: u32,
    data: u32,
    len: i32,
) -> Result<(), FaasmError> {
    let len = mem::len(len, "append_state len")?;
    let (ctx, m) = env.parts();
    let key = mem::cstr(&m, key, "state key")?;
    // Checked against the append limit before anything is copied.
    let max = ctx.state.limits().max_append_bytes;
    if len as u64 > max {
        return Err(faaslet_state::StateError::AppendTooLarge {
            len: len as u64,
            max,
        }
        .into());
    }
    let data = mem::to_vec(&m, data, len, "append_state data")?;
    Ok(ctx.state.append(&ctx.user, &key, &data)?)
}

/// `void __faasm_read_appended_state(const char *key, unsigned char *buf,
/// long len, long n_elems)`: the first `n_elems` appended elements,
/// concatenated.
pub fn read_appended_state(
    env: &mut impl FaasmEnv,
    key: u32,
    buf: u32,
    len: i32,
    n: i32,
) -> Result<(), FaasmError> {
    let len = mem::len(len, "read_appended_state len")?;
    let n = nonneg(n, "n_elems")?;
    let (ctx, mut m) = env.parts();
    let key = mem::cstr(&m, key, "state key")?;
    mem::check(&m, buf, len, "read_appended_state buffer")?;
    // Element by element, straight into the guest's buffer.
    let mut at = 0u64;
    ctx.state.each_appended(&ctx.user, &key, n, &mut |e| {
        let end = at + e.len() as u64;
        if end > len as u64 {
            return Err(faaslet_state::StateError::BufferTooSmall {
                needed: end,
                len: len as u64,
            });
        }
        m.write_bytes(buf + at as u32, e)
            .expect("inside the buffer checked above");
        at = end;
        Ok(())
    })?;
    Ok(())
}

/// `void __faasm_clear_appended_state(const char *key)`.
pub fn clear_appended_state(env: &mut impl FaasmEnv, key: u32) -> Result<(), FaasmError> {
    let (ctx, m) = env.parts();
    let key = mem::cstr(&m, key, "state key")?;
    Ok(ctx.state.clear_appended(&ctx.user, &key)?)
}

/// The key string at `key`, owned (at most [`MAX_NAME_LEN`](mem::MAX_NAME_LEN) bytes).
fn owned_key(env: &mut impl FaasmEnv, key: u32, what: &'static str) -> Result<String, FaasmError> {
    let (_, m) = env.parts();
    mem::cstr(&m, key, what)
}

/// `void __faasm_push_state(const char *key)`: pushes the whole value
/// (writing a copied mapping back first).
pub fn push_state(env: &mut impl FaasmEnv, key: u32) -> Result<(), FaasmError> {
    let key = owned_key(env, key, "state key")?;
    // Taken, so they are not reported again; the push sends everything.
    harvest(env, &key)?;
    let (ctx, m) = env.parts();
    let v = ctx.state.value(&ctx.user, &key)?;
    write_back(ctx, &m, &key, None)?;
    Ok(ctx.state.push(&v, None)?)
}

/// `void __faasm_push_state_partial(const char *key)`: pushes only the
/// bytes that changed: those written by host calls or flagged dirty, and
/// the pages written through a mapped pointer (found by write tracking,
/// no flag needed, where the kernel supports it).
pub fn push_state_partial(env: &mut impl FaasmEnv, key: u32) -> Result<(), FaasmError> {
    let key = owned_key(env, key, "state key")?;
    harvest(env, &key)?;
    let (ctx, _) = env.parts();
    let v = ctx.state.value(&ctx.user, &key)?;
    // What other Faaslets, still running, wrote through their mappings.
    v.collect_writes();
    let ranges = v.dirty_ranges();
    Ok(ctx.state.push(&v, Some(&ranges))?)
}

/// `void __faasm_push_state_partial_mask(const char *key, const char
/// *mask_key)`: pushes the bytes where the value `mask_key` is nonzero,
/// taking them from the mapped copy if there is one.
pub fn push_state_partial_mask(
    env: &mut impl FaasmEnv,
    key: u32,
    mask_key: u32,
) -> Result<(), FaasmError> {
    let key = owned_key(env, key, "state key")?;
    let mask_key = owned_key(env, mask_key, "mask key")?;
    // Writes through the pointers stay dirty for a later partial push.
    harvest(env, &key)?;
    harvest(env, &mask_key)?;
    let (ctx, m) = env.parts();
    // The mask may itself be mapped and changed in place.
    let mask_v = ctx.state.value(&ctx.user, &mask_key)?;
    write_back(ctx, &m, &mask_key, None)?;
    let ranges = mask_v.mask_ranges();
    let v = ctx.state.value(&ctx.user, &key)?;
    write_back(ctx, &m, &key, Some(&ranges))?;
    Ok(ctx.state.push(&v, Some(&ranges))?)
}

/// `void __faasm_pull_state(const char *key, long len)`: refreshes the
/// value (and its mapped copy) from the global tier.
pub fn pull_state(env: &mut impl FaasmEnv, key: u32, len: i32) -> Result<(), FaasmError> {
    let len = nonneg(len, "pull_state len")?;
    let (ctx, m) = env.parts();
    let key = mem::cstr(&m, key, "state key")?;
    let v = ctx.state.value(&ctx.user, &key)?;
    v.ensure_len(len)?;
    ctx.state.pull(&v, None)?;
    refresh(ctx, &m, &key)
}

/// The `__faasm_lock_state_*` calls: takes the value's `tier` lock for
/// reading or writing. Taking a lock this function already holds in a
/// conflicting way would deadlock, so it is an error.
pub fn lock_state(
    env: &mut impl FaasmEnv,
    key: u32,
    tier: LockTier,
    write: bool,
) -> Result<(), FaasmError> {
    let (ctx, m) = env.parts();
    let key = mem::cstr(&m, key, "state key")?;
    let v = ctx.state.value(&ctx.user, &key)?;
    if ctx
        .held
        .iter()
        .any(|h| Arc::ptr_eq(&h.value, &v) && h.tier == tier && (h.write || write))
    {
        return Err(FaasmError::LockMisuse {
            key: key.clone(),
            problem: "lock already held by this function",
        });
    }
    // The calls holding this lock, and whoever waits for this one, are
    // known to the wait-for graph when the call is (it runs in a Faaslet).
    let me = waits::current();
    let lock_id = match tier {
        LockTier::Local => waits::LockId::Local(Arc::as_ptr(&v) as usize, v.name().to_string()),
        LockTier::Global => waits::LockId::Global(v.name().to_string()),
    };
    let global = match tier {
        LockTier::Local => {
            let l = v.local_lock();
            let take = |until| {
                if write {
                    l.lock_write_until(until)
                } else {
                    l.lock_read_until(until)
                }
            };
            // Free: taken without a wait. Else the wait is declared first,
            // and refused if it would never end (see `waits`).
            if !take(std::time::Instant::now()) {
                let _waiting = match me {
                    Some(me) => Some(waits::wait_for_lock(me, &lock_id, write)?),
                    None => None,
                };
                // Bounded like every host-side wait: by the call's deadline.
                let until = ctx.deadline.unwrap_or_else(|| {
                    std::time::Instant::now() + faaslet_state::DEFAULT_LOCK_WAIT
                });
                if !take(until) {
                    let kind = if write { "write" } else { "read" };
                    let key = key.to_string();
                    return Err(faaslet_state::StateError::LocalLockTimeout { key, kind }.into());
                }
            }
            None
        }
        LockTier::Global => {
            let mode = if write {
                LockMode::Write
            } else {
                LockMode::Read
            };
            // The global tier has no separate try; a lock held by a call of
            // this process is known here, so the wait is declared (and
            // refused if it would never end) only when one is.
            let _waiting = match me {
                Some(me) => Some(waits::wait_for_lock(me, &lock_id, write)?),
                None => None,
            };
            Some(ctx.state.lock_global(&v, mode, ctx.deadline)?)
        }
    };
    ctx.held.push(HeldLock {
        value: v,
        tier,
        write,
        global,
        _holding: me.map(|me| waits::hold(me, &lock_id, write)),
    });
    Ok(())
}

/// The `__faasm_unlock_state_*` calls.
pub fn unlock_state(
    env: &mut impl FaasmEnv,
    key: u32,
    tier: LockTier,
    write: bool,
) -> Result<(), FaasmError> {
    let (ctx, m) = env.parts();
    let key = mem::cstr(&m, key, "state key")?;
    let v = ctx.state.value(&ctx.user, &key)?;
    let i = ctx
        .held
        .iter()
        .position(|h| Arc::ptr_eq(&h.value, &v) && h.tier == tier && h.write == write)
        .ok_or_else(|| FaasmError::LockMisuse {
            key: key.clone(),
            problem: "unlock of a lock not held",
        })?;
    let h = ctx.held.swap_remove(i);
    ctx.release(h)
}

/// `unsigned int __faasm_conf_flag(const char *key)`: the configured flag,
/// 0 if unset.
pub fn conf_flag(env: &mut impl FaasmEnv, key: u32) -> Result<u32, FaasmError> {
    let (ctx, m) = env.parts();
    let key = mem::cstr(&m, key, "conf flag")?;
    Ok(ctx.conf.get(&key).copied().unwrap_or(0))
}
