//! [`Func`]: wasm and host functions, calls in both directions, [`Caller`]
//! and [`TypedFunc`].

use crate::entries::{FuncEntry, FuncKind, HostCall, HostFuncEntry};
use crate::handles::{Extern, Func, Memory};
use crate::store::{InterruptHandle, Store, StoreCore, StoreInner};
use crate::trap::{Error, Trap};
use crate::values::{from_raw, to_raw, Val};
use faaslet_jit::abi::{VMFuncRef, VMHostFuncContext, ValRaw};
use faaslet_jit::{FuncType, ValType};
pub use faaslet_sfi::writes::WrittenPages;
use std::marker::PhantomData;
use std::sync::Arc;

/// What a host function sees of its caller: the store's data and the
/// calling instance's exports.
pub struct Caller<'a, T> {
    pub(crate) inner: &'a mut StoreInner<T>,
    pub(crate) instance: Option<u32>,
}

impl<T> Caller<'_, T> {
    /// The store's host data.
    pub fn data(&self) -> &T {
        &self.inner.data
    }

    /// The store's host data, mutably.
    pub fn data_mut(&mut self) -> &mut T {
        &mut self.inner.data
    }

    /// An export of the calling instance (for example its `memory`).
    pub fn get_export(&mut self, name: &str) -> Option<Extern> {
        let inst = self.instance?;
        self.inner.core.export(inst, name)
    }

    /// Calls `func` (a function of this store, for example an export of
    /// the calling instance) from inside this host call: the guest frames
    /// below stay where they are, and a trap in `func` comes back here as
    /// `Err`, the host call then deciding what to do with it. Nested calls
    /// share the stack limit and the deadline of the outermost call.
    pub fn call(&mut self, func: Func, params: &[Val], results: &mut [Val]) -> Result<(), Error> {
        let inner: *mut StoreInner<T> = &mut *self.inner;
        // SAFETY: `self.inner` is the store's live inner part and this
        // Caller holds its only mutable borrow while `func` runs; the
        // guest frames below this host call touch the store only through
        // host calls, which run inside `func` on this thread.
        unsafe { func.call_in(inner, params, results) }
    }

    /// A handle to interrupt this store's calls, or to ask whether the
    /// running call has reached its deadline (for host functions that
    /// block).
    pub fn interrupt_handle(&self) -> InterruptHandle {
        crate::store::interrupt_handle_of(&self.inner.core)
    }

    /// The calling instance's memory 0, if it has one.
    pub fn memory(&self) -> Option<Memory> {
        let inst = &self.inner.core.instances[self.instance? as usize];
        let index = *inst.memory_ids.first()?;
        Some(Memory {
            store: self.inner.core.id,
            index,
        })
    }

    /// The store data and the calling instance's memory 0 at once, for host
    /// functions that move bytes between the two. No lookup by name, no
    /// allocation. The memory is `None` if the instance has none, and
    /// also if other threads may write it (a shared memory, or one with
    /// state mapped into it: see [`Memory::data`]); host functions that
    /// must work on every memory use
    /// [`data_and_memory_raw`](Self::data_and_memory_raw).
    pub fn data_and_memory_mut(&mut self) -> (&mut T, Option<&mut [u8]>) {
        let mem = self.memory();
        let inner = &mut *self.inner;
        let bytes = mem.and_then(|m| inner.core.memories[m.index as usize].bytes_mut());
        (&mut inner.data, bytes)
    }

    /// The store data and the base address and current length of the
    /// calling instance's memory 0: the raw view for host functions that
    /// serve memories other threads write (shared memories, mapped state).
    /// The base never moves and the first `length` bytes stay readable and
    /// writable at least until this host call returns; access them only
    /// through raw pointers (copies), never as a Rust slice.
    pub fn data_and_memory_raw(&mut self) -> (&mut T, Option<(*mut u8, usize)>) {
        let mem = self.memory();
        let inner = &mut *self.inner;
        let raw = mem.map(|m| {
            let e = &inner.core.memories[m.index as usize];
            (e.base(), e.length() as usize)
        });
        (&mut inner.data, raw)
    }

    /// The bytes of memory `mem`, if it belongs to this store and only this
    /// thread can write it (see [`Memory::data`]).
    pub fn memory_data(&self, mem: Memory) -> Option<&[u8]> {
        (mem.store == self.inner.core.id)
            .then(|| self.inner.core.memories[mem.index as usize].bytes())
            .flatten()
    }

    /// The bytes of memory `mem`, mutably (see [`memory_data`](Self::memory_data)).
    pub fn memory_data_mut(&mut self, mem: Memory) -> Option<&mut [u8]> {
        (mem.store == self.inner.core.id)
            .then(|| self.inner.core.memories[mem.index as usize].bytes_mut())
            .flatten()
    }

    /// Grows memory `mem` by `delta` pages from inside a host call (as
    /// `memory.grow` would); returns the old size in pages, or None if the
    /// memory is not this store's or cannot grow. The memory never moves.
    pub fn grow_memory(&mut self, mem: Memory, delta: u64) -> Option<u64> {
        if mem.store != self.inner.core.id {
            return None;
        }
        // Host-driven growth counts against the store's memory limit as
        // `memory.grow` does.
        let bytes = delta.checked_mul(faaslet_sfi::WASM_PAGE as u64)?;
        self.inner.core.check_memory_growth(bytes).ok()?;
        self.inner.core.memories[mem.index as usize].grow(delta)
    }

    /// Grows memory `mem` by enough pages for `len` bytes and maps the
    /// first `len` bytes of the file `fd` over them, `MAP_SHARED`: the
    /// guest then reads and writes the file's pages themselves, and sees
    /// at once what other mappings of the file write. Returns the guest
    /// address of the first mapped byte. The mapping ends when the memory
    /// is reset to a snapshot or dropped (the file is never touched); a
    /// snapshot of the memory captures those bytes as zero.
    ///
    /// Refused for shared (threads) memories, for a memory that cannot
    /// grow that far, and for a file shorter than `len` rounded up to host
    /// pages.
    ///
    /// # Safety
    ///
    /// The file must not be truncated below `len` (rounded up to host
    /// pages) while the mapping lasts: touching a page past a file's end
    /// raises `SIGBUS`.
    pub unsafe fn map_shared(
        &mut self,
        mem: Memory,
        fd: std::os::fd::BorrowedFd<'_>,
        len: usize,
    ) -> Result<u64, Error> {
        if mem.store != self.inner.core.id {
            return Err(Error::Resource("memory belongs to another store".into()));
        }
        // The pages grown for the mapping count against the store's memory
        // limit, as `memory.grow` does (the mapped value is charged to its
        // user's state quota as well: it is the same bytes, seen twice).
        let page = faaslet_sfi::WASM_PAGE as u64;
        let bytes = (len as u64).div_ceil(page).max(1) * page;
        self.inner
            .core
            .check_memory_growth(bytes)
            .map_err(Error::Limit)?;
        // SAFETY: forwarded contract.
        unsafe {
            self.inner.core.memories[mem.index as usize]
                .data
                .map_shared(fd, len)
        }
    }

    /// A handle through which any thread can take the pages written in the
    /// tracked shared mapping that starts at guest address `addr` (made by
    /// [`map_shared`](Self::map_shared)), for as long as that mapping
    /// exists: so that a push elsewhere collects what this instance's
    /// guest writes while it still runs. `None` if no tracked mapping
    /// starts there (or the memory is not this store's).
    pub fn written_pages(&self, mem: Memory, addr: u64) -> Option<WrittenPages> {
        if mem.store != self.inner.core.id {
            return None;
        }
        self.inner.core.memories[mem.index as usize]
            .data
            .written_pages(addr)
    }

    /// See [`Memory::take_written`].
    pub fn take_written(
        &mut self,
        mem: Memory,
        addr: u64,
    ) -> Result<Option<Vec<std::ops::Range<u64>>>, Error> {
        if mem.store != self.inner.core.id {
            return Err(Error::Resource("memory belongs to another store".into()));
        }
        self.inner.core.memories[mem.index as usize]
            .data
            .take_written(addr)
    }
}

/// The signature of host functions as stored: caller, params, results.
pub(crate) type HostFn<T> =
    dyn Fn(Caller<'_, T>, &[Val], &mut [Val]) -> Result<(), Trap> + Send + Sync + 'static;

/// The dispatch function of host functions whose store data is `T`: called
/// by a host stub with the spilled arguments.
///
/// # Safety
///
/// Called only by JIT host stubs, with `host_ctx` pointing at a live
/// [`HostFuncEntry`]'s `vmctx` field, `caller_vmctx` the calling instance's
/// vmctx, and `values` holding `len` slots.
unsafe extern "C" fn dispatch(
    host_ctx: *mut VMHostFuncContext,
    caller_vmctx: *mut u8,
    values: *mut ValRaw,
    len: usize,
) -> u32 {
    // SAFETY: host_ctx is the first field of a #[repr(C)]-free struct, so
    // we go through the `data` pointer, which points at the entry itself.
    let entry = unsafe { &*((*host_ctx).data as *const HostFuncEntry) };
    let call = entry.call.clone();
    let store = entry.store;
    // SAFETY: the stub passes a live array of `len` slots.
    let values = unsafe { std::slice::from_raw_parts_mut(values, len) };
    let instance = crate::entries::instance_id_of_vmctx(caller_vmctx);
    // Host code must not unwind into JIT frames: catch, record, trap.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        call(store, instance, values)
    })) {
        // An interrupt signal that landed while the host function ran (see
        // `faaslet_sfi::interrupt`) ends the call now, before wasm resumes.
        Ok(Ok(())) if faaslet_sfi::take_interrupt_pending() => {
            // SAFETY: as below.
            unsafe { core_of(store).pending_trap = Some(Trap::new(crate::TrapKind::Interrupted)) };
            1
        }
        Ok(Ok(())) => 0,
        Ok(Err(trap)) => {
            // SAFETY: `store` is the live store inner part of this host
            // function; no other reference to its core is active while the
            // guest is suspended in this host call.
            unsafe { core_of(store).pending_trap = Some(trap) };
            1
        }
        Err(panic) => {
            // SAFETY: as above.
            unsafe { core_of(store).pending_panic = Some(panic) };
            1
        }
    }
}

/// The [`StoreCore`] at the start of a `StoreInner<T>` for any `T`.
///
/// # Safety
///
/// `store` must point at a live `StoreInner<T>`.
pub(crate) unsafe fn core_of<'a>(store: *mut u8) -> &'a mut StoreCore {
    // SAFETY: StoreInner is #[repr(C)] with `core` first, so the pointer to
    // the struct is a pointer to its core whatever T is.
    unsafe { &mut *(store as *mut StoreCore) }
}

impl Func {
    /// Defines a host function of type `ty`.
    pub fn new<T: 'static>(
        store: &mut Store<T>,
        ty: FuncType,
        func: impl Fn(Caller<'_, T>, &[Val], &mut [Val]) -> Result<(), Trap> + Send + Sync + 'static,
    ) -> Func {
        Func::new_arc(store, ty, Arc::new(func))
            .expect("host stubs compile for every function type")
    }

    pub(crate) fn new_arc<T: 'static>(
        store: &mut Store<T>,
        ty: FuncType,
        func: Arc<HostFn<T>>,
    ) -> Result<Func, Error> {
        let sig = ty.clone();
        let call: Arc<HostCall> = Arc::new(
            move |store_ptr: *mut u8, instance: Option<u32>, raw: &mut [ValRaw]| {
                // SAFETY: store_ptr is the `StoreInner<T>` this function was
                // created in (host functions never leave their store).
                let inner = unsafe { &mut *(store_ptr as *mut StoreInner<T>) };
                // GC references handed to the host function are rooted for
                // the call only: the scope ends once its results are raw
                // values again (see `gc::HostRoots`).
                let scope = inner.core.any_roots.enter();
                let r = (|| {
                    let params: Vec<Val> = sig
                        .params
                        .iter()
                        .zip(raw.iter())
                        .map(|(t, r)| from_raw(&mut inner.core, *t, *r))
                        .collect();
                    let mut results: Vec<Val> =
                        sig.results.iter().map(|t| Val::default_for(*t)).collect();
                    func(
                        Caller {
                            inner: &mut *inner,
                            instance,
                        },
                        &params,
                        &mut results,
                    )?;
                    for (i, (v, t)) in results.iter().zip(sig.results.iter()).enumerate() {
                        if v.ty() != *t {
                            return Err(Trap::host(format!(
                                "host function returned {} for result {i} of type {t}",
                                v.ty()
                            )));
                        }
                        raw[i] = to_raw(&inner.core, v).map_err(|e| Trap::host(e.to_string()))?;
                    }
                    Ok(())
                })();
                inner.core.any_roots.exit(scope);
                r
            },
        );
        Func::new_raw(store, ty, call)
    }

    /// Defines a host function from a type-erased raw call.
    pub(crate) fn new_raw<T: 'static>(
        store: &mut Store<T>,
        ty: FuncType,
        call: Arc<HostCall>,
    ) -> Result<Func, Error> {
        let stub = store.core().engine.stub(&ty)?;
        let type_id = store.core().engine.type_id(&ty);
        let store_ptr = store.inner_ptr() as *mut u8;
        let core = store.core_mut();
        let mut entry = Box::new(HostFuncEntry {
            vmctx: VMHostFuncContext {
                dispatch,
                data: std::ptr::null_mut(),
            },
            funcref: VMFuncRef {
                func_ptr: stub.host_stub(),
                vmctx: std::ptr::null_mut(),
                type_id,
                _pad: 0,
            },
            call,
            store: store_ptr,
            _stub: stub,
        });
        let entry_ptr: *mut HostFuncEntry = &mut *entry;
        entry.vmctx.data = entry_ptr as *mut u8;
        entry.funcref.vmctx = std::ptr::addr_of_mut!(entry.vmctx) as *mut u8;
        let funcref = &entry.funcref as *const VMFuncRef;
        core.host_funcs.push(entry);
        let h = core.host_funcs.len() as u32 - 1;
        Ok(core.push_func(FuncEntry {
            funcref,
            ty,
            kind: FuncKind::Host(h),
        }))
    }

    /// Defines a host function from a Rust closure whose parameters and
    /// results are wasm number types, e.g.
    /// `|caller: Caller<'_, T>, a: i32, b: i64| -> Result<i32, Trap>`.
    /// Calls convert no [`Val`]s and allocate nothing.
    pub fn wrap<T: 'static, Params, Results>(
        store: &mut Store<T>,
        func: impl IntoFunc<T, Params, Results>,
    ) -> Func {
        let (ty, call) = func.into_host();
        Func::new_raw(store, ty, call).expect("host stubs compile for every function type")
    }

    /// The function's type.
    pub fn ty<T>(&self, store: &Store<T>) -> FuncType {
        store.core().funcs[self.index as usize].ty.clone()
    }

    /// Calls the function. `results` must have one slot per result.
    pub fn call<T>(
        &self,
        store: &mut Store<T>,
        params: &[Val],
        results: &mut [Val],
    ) -> Result<(), Error> {
        let inner = store.inner_ptr();
        // SAFETY: `inner` is this store's live inner part, and `store`
        // stays mutably borrowed for the whole call.
        unsafe { self.call_in(inner, params, results) }
    }

    /// Calls the function in the store behind `inner`, checking the
    /// function's store and the parameters' count and types.
    ///
    /// # Safety
    ///
    /// `inner` must point at a live store's inner part that nothing else
    /// accesses for the duration of the call (the caller holds the only
    /// mutable borrow of the store, or of the [`Caller`] over it).
    unsafe fn call_in<T>(
        &self,
        inner: *mut StoreInner<T>,
        params: &[Val],
        results: &mut [Val],
    ) -> Result<(), Error> {
        // SAFETY: the caller guarantees `inner` is live and unaliased.
        let core = unsafe { &(*inner).core };
        core.check(self.store)?;
        let ty = core.funcs[self.index as usize].ty.clone();
        if params.len() != ty.params.len() || results.len() != ty.results.len() {
            return Err(Error::Type(format!(
                "{ty} called with {} params and {} result slots",
                params.len(),
                results.len()
            )));
        }
        let mut raw = vec![0 as ValRaw; ty.params.len().max(ty.results.len()).max(1)];
        for (i, (p, t)) in params.iter().zip(ty.params.iter()).enumerate() {
            if p.ty() != *t {
                return Err(Error::Type(format!(
                    "parameter {i} is {} but {ty} expects {t}",
                    p.ty()
                )));
            }
            raw[i] = to_raw(core, p)?;
        }
        // SAFETY: `inner` is live and unaliased (see above) and `raw` is
        // sized and typed for the function (checked above).
        unsafe {
            StoreCore::call_raw(
                inner as *mut u8,
                std::ptr::addr_of_mut!((*inner).core),
                self.index,
                &mut raw,
            )?
        };
        // SAFETY: guest code has returned; the borrow is ours again.
        let core = unsafe { &mut (*inner).core };
        for (i, t) in ty.results.iter().enumerate() {
            results[i] = from_raw(core, *t, raw[i]);
        }
        Ok(())
    }

    /// A statically typed view of the function, checked against its type.
    pub fn typed<P: WasmParams, R: WasmResults, T>(
        &self,
        store: &Store<T>,
    ) -> Result<TypedFunc<P, R>, Error> {
        store.core().check(self.store)?;
        let ty = &store.core().funcs[self.index as usize].ty;
        if *ty.params != *P::types() || *ty.results != *R::types() {
            return Err(Error::Type(format!(
                "function is {ty}, not {}",
                FuncType::new(P::types(), R::types())
            )));
        }
        Ok(TypedFunc {
            func: *self,
            _marker: PhantomData,
        })
    }
}

/// A Rust type that is a wasm number type.
pub trait WasmTy: Copy + 'static {
    /// The wasm type.
    const TYPE: ValType;
    /// To the raw form.
    fn to_raw(self) -> ValRaw;
    /// From the raw form.
    fn from_raw(raw: ValRaw) -> Self;
}

macro_rules! wasm_ty {
    ($t:ty, $v:ident, |$x:ident| $to:expr, |$r:ident| $from:expr) => {
        impl WasmTy for $t {
            const TYPE: ValType = ValType::$v;
            fn to_raw(self) -> ValRaw {
                let $x = self;
                $to
            }
            fn from_raw($r: ValRaw) -> Self {
                $from
            }
        }
    };
}
wasm_ty!(i32, I32, |x| x as u32 as ValRaw, |r| r as u32 as i32);
wasm_ty!(u32, I32, |x| x as ValRaw, |r| r as u32);
wasm_ty!(i64, I64, |x| x as u64 as ValRaw, |r| r as u64 as i64);
wasm_ty!(u64, I64, |x| x as ValRaw, |r| r as u64);
wasm_ty!(f32, F32, |x| x.to_bits() as ValRaw, |r| f32::from_bits(
    r as u32
));
wasm_ty!(f64, F64, |x| x.to_bits() as ValRaw, |r| f64::from_bits(
    r as u64
));
// `v128` as its 16 little-endian bytes: lane 0 is the low bits.
wasm_ty!(u128, V128, |x| x, |r| r);

/// Parameters of a [`TypedFunc`]: `()`, a [`WasmTy`], or a tuple of them.
pub trait WasmParams {
    /// Number of values.
    const COUNT: usize;
    /// The wasm types.
    fn types() -> Vec<ValType>;
    /// Writes the raw values.
    fn store(self, raw: &mut [ValRaw]);
}

/// Results of a [`TypedFunc`]: `()`, a [`WasmTy`], or a tuple of them.
pub trait WasmResults: Sized {
    /// Number of values.
    const COUNT: usize;
    /// The wasm types.
    fn types() -> Vec<ValType>;
    /// Reads the raw values.
    fn load(raw: &[ValRaw]) -> Self;
    /// Writes the raw values.
    fn store_into(self, raw: &mut [ValRaw]);
}

impl<A: WasmTy> WasmParams for A {
    const COUNT: usize = 1;
    fn types() -> Vec<ValType> {
        vec![A::TYPE]
    }
    fn store(self, raw: &mut [ValRaw]) {
        raw[0] = self.to_raw();
    }
}

impl<A: WasmTy> WasmResults for A {
    const COUNT: usize = 1;
    fn types() -> Vec<ValType> {
        vec![A::TYPE]
    }
    fn load(raw: &[ValRaw]) -> Self {
        A::from_raw(raw[0])
    }
    fn store_into(self, raw: &mut [ValRaw]) {
        raw[0] = self.to_raw();
    }
}

macro_rules! tuples {
    ($($n:ident $i:tt),*) => {
        impl<$($n: WasmTy),*> WasmParams for ($($n,)*) {
            const COUNT: usize = 0 $(+ { let _ = $i; 1 })*;
            fn types() -> Vec<ValType> { vec![$($n::TYPE),*] }
            #[allow(unused_variables)]
            fn store(self, raw: &mut [ValRaw]) { $(raw[$i] = self.$i.to_raw();)* }
        }
        impl<$($n: WasmTy),*> WasmResults for ($($n,)*) {
            const COUNT: usize = 0 $(+ { let _ = $i; 1 })*;
            fn types() -> Vec<ValType> { vec![$($n::TYPE),*] }
            #[allow(unused_variables, clippy::unused_unit)]
            fn load(raw: &[ValRaw]) -> Self { ($($n::from_raw(raw[$i]),)*) }
            #[allow(unused_variables)]
            fn store_into(self, raw: &mut [ValRaw]) { $(raw[$i] = self.$i.to_raw();)* }
        }
    };
}
tuples!();
tuples!(A 0);
tuples!(A 0, B 1);
tuples!(A 0, B 1, C 2);
tuples!(A 0, B 1, C 2, D 3);
tuples!(A 0, B 1, C 2, D 3, E 4);

/// A function whose type was checked once, called without per-call type
/// checks or allocation.
#[derive(Debug)]
pub struct TypedFunc<P, R> {
    func: Func,
    _marker: PhantomData<fn(P) -> R>,
}

impl<P, R> Clone for TypedFunc<P, R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P, R> Copy for TypedFunc<P, R> {}

impl<P: WasmParams, R: WasmResults> TypedFunc<P, R> {
    /// Calls the function.
    pub fn call<T>(&self, store: &mut Store<T>, params: P) -> Result<R, Trap> {
        assert_eq!(
            self.func.store,
            store.core().id,
            "TypedFunc used with another store"
        );
        let n = P::COUNT.max(R::COUNT).max(1);
        let mut raw = std::mem::MaybeUninit::<[ValRaw; 16]>::uninit();
        let mut heap;
        let slots: &mut [ValRaw] = if n <= 16 {
            // Only the `n` slots the call uses are zeroed (not all 256
            // bytes: this is the hot path of every typed call).
            let p = raw.as_mut_ptr().cast::<ValRaw>();
            // SAFETY: `p` points at 16 slots of `raw`, `n <= 16` of which
            // are written here before the slice over them is made.
            unsafe {
                std::ptr::write_bytes(p, 0, n);
                std::slice::from_raw_parts_mut(p, n)
            }
        } else {
            heap = vec![0; n];
            &mut heap
        };
        params.store(slots);
        let inner = store.inner_ptr();
        // SAFETY: the types were checked in `Func::typed`; see `Func::call`.
        unsafe {
            StoreCore::call_raw(
                inner as *mut u8,
                std::ptr::addr_of_mut!((*inner).core),
                self.func.index,
                slots,
            )?
        };
        Ok(R::load(slots))
    }

    /// The untyped function.
    pub fn func(&self) -> Func {
        self.func
    }
}

/// What a host closure given to [`Func::wrap`] or
/// [`Linker::func_wrap`](crate::Linker::func_wrap) may return: results, or
/// `Result<results, Trap>`.
pub trait WasmRet {
    /// The results.
    type Results: WasmResults;
    /// Splits off the trap.
    fn into_result(self) -> Result<Self::Results, Trap>;
}

impl<R: WasmResults> WasmRet for R {
    type Results = R;
    fn into_result(self) -> Result<R, Trap> {
        Ok(self)
    }
}

impl<R: WasmResults> WasmRet for Result<R, Trap> {
    type Results = R;
    fn into_result(self) -> Result<R, Trap> {
        self
    }
}

/// A Rust closure usable as a host function:
/// `Fn(Caller<'_, T>, A1, ..., An) -> R` with each `Ai` a [`WasmTy`] and `R`
/// a [`WasmRet`], for up to 12 parameters.
pub trait IntoFunc<T, Params, Results>: Send + Sync + 'static {
    /// The function type and the type-erased raw call.
    #[doc(hidden)]
    fn into_host(self) -> (FuncType, Arc<HostCall>);
}

macro_rules! into_func {
    ($($a:ident $i:tt),*) => {
        impl<T, F, R, $($a,)*> IntoFunc<T, ($($a,)*), R> for F
        where
            T: 'static,
            F: Fn(Caller<'_, T>, $($a),*) -> R + Send + Sync + 'static,
            R: WasmRet,
            $($a: WasmTy,)*
        {
            fn into_host(self) -> (FuncType, Arc<HostCall>) {
                let ty = FuncType::new([$($a::TYPE),*], R::Results::types());
                let call: Arc<HostCall> = Arc::new(
                    move |store: *mut u8, instance: Option<u32>, raw: &mut [ValRaw]| {
                        // SAFETY: `store` is the `StoreInner<T>` the function
                        // was created in; host functions never leave it.
                        let inner = unsafe { &mut *(store as *mut StoreInner<T>) };
                        let results = (self)(
                            Caller { inner, instance },
                            $($a::from_raw(raw[$i]),)*
                        ).into_result()?;
                        results.store_into(raw);
                        Ok(())
                    },
                );
                (ty, call)
            }
        }
    };
}
into_func!();
into_func!(A0 0);
into_func!(A0 0, A1 1);
into_func!(A0 0, A1 1, A2 2);
into_func!(A0 0, A1 1, A2 2, A3 3);
into_func!(A0 0, A1 1, A2 2, A3 3, A4 4);
into_func!(A0 0, A1 1, A2 2, A3 3, A4 4, A5 5);
into_func!(A0 0, A1 1, A2 2, A3 3, A4 4, A5 5, A6 6);
into_func!(A0 0, A1 1, A2 2, A3 3, A4 4, A5 5, A6 6, A7 7);
into_func!(A0 0, A1 1, A2 2, A3 3, A4 4, A5 5, A6 6, A7 7, A8 8);
into_func!(A0 0, A1 1, A2 2, A3 3, A4 4, A5 5, A6 6, A7 7, A8 8, A9 9);
into_func!(A0 0, A1 1, A2 2, A3 3, A4 4, A5 5, A6 6, A7 7, A8 8, A9 9, A10 10);
into_func!(A0 0, A1 1, A2 2, A3 3, A4 4, A5 5, A6 6, A7 7, A8 8, A9 9, A10 10, A11 11);
