//! The trap guard: turning hardware faults in JIT code into `Err(Fault)`.
//!
//! JIT code faults on purpose. Out-of-bounds linear-memory accesses hit
//! `PROT_NONE` guard pages (SIGSEGV, or SIGBUS on some hosts), explicit
//! traps are `ud2`/`udf` instructions (SIGILL), and x86 integer division by
//! zero or overflow raises SIGFPE. The engine runs every call into JIT code
//! inside [`catch_traps`]; when such a fault happens at a PC that the code's
//! owner ([`CodeLookup`]) declares a trap site, the signal handler
//! `siglongjmp`s back into `catch_traps`, which returns `Err(Fault)`.
//! Any other fault is passed on to whatever handler was installed before us
//! (ultimately crashing the process, as it would without us).
//!
//! The pieces, each explained where it is defined:
//!
//! * `setjmp.c`: the C frame that owns the `sigjmp_buf` ([`catch_traps`]).
//! * Thread-locals holding the innermost active jump buffer and the fault
//!   slot (`ACTIVE_JMPBUF`).
//! * A lock-free registry of code ranges the handler can consult
//!   (the private `registry` module).
//! * The handler itself and how it chains to previous handlers
//!   (`trap_handler`, `chain_to_previous`).
//! * Per-thread alternate signal stacks (`ensure_alt_stack`).

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

/// Something that knows whether a PC is a trap site in machine code it owns.
///
/// [`is_trap_site`](Self::is_trap_site) is called **from a signal handler**:
/// it must not allocate, take locks, panic, or do anything else that is not
/// async-signal-safe. A binary search over an immutable, pre-built table is
/// the intended implementation.
pub trait CodeLookup: Send + Sync {
    /// Whether a fault at `pc` is an intentional trap that should be turned
    /// into an `Err(Fault)` by [`catch_traps`].
    fn is_trap_site(&self, pc: usize) -> bool;
}

/// A fault caught by [`catch_traps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The signal number (`libc::SIGSEGV`, `SIGBUS`, `SIGILL` or `SIGFPE`,
    /// or [`interrupt_signal`] for a call ended by
    /// its deadline).
    pub signal: i32,
    /// The program counter of the faulting instruction.
    pub pc: usize,
    /// `si_addr`: the faulting data address for SIGSEGV/SIGBUS, the
    /// faulting instruction for SIGILL/SIGFPE.
    pub fault_addr: usize,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.signal {
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGBUS => "SIGBUS",
            libc::SIGILL => "SIGILL",
            libc::SIGFPE => "SIGFPE",
            s if s == interrupt_signal() => "interrupt",
            _ => "signal",
        };
        write!(
            f,
            "{name} ({}) at pc {:#x}, address {:#x}",
            self.signal, self.pc, self.fault_addr
        )
    }
}

impl std::error::Error for Fault {}

/// Errors setting up the trap guard.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum TrapError {
    /// `sigaction` failed for `signal`.
    #[error("sigaction({signal}) failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Sigaction {
        /// The signal number.
        signal: i32,
        /// The OS error number.
        errno: i32,
    },
    /// Setting up this thread's alternate signal stack failed.
    #[error("setting up the alternate signal stack failed: {}", std::io::Error::from_raw_os_error(*errno))]
    AltStack {
        /// The OS error number.
        errno: i32,
    },
    /// The interrupt signal already has a handler that is not ours.
    #[error(
        "signal {signal} (used to interrupt calls) already has a handler; use epoch checks instead"
    )]
    SignalTaken {
        /// The signal number.
        signal: i32,
    },
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// An address inside the current stack frame: close to (and on x86_64 and
/// aarch64, slightly above) the stack pointer. Used for stack-limit checks.
#[inline(never)]
pub fn approximate_stack_pointer() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

// ---------------------------------------------------------------------------
// Thread-local state
// ---------------------------------------------------------------------------

thread_local! {
    /// The innermost active `sigjmp_buf` on this thread (null: no active
    /// `catch_traps` scope).
    ///
    /// Signal safety: these thread-locals are `const`-initialised and hold
    /// types without `Drop`. For such thread-locals Rust emits a plain
    /// `#[thread_local]` static: `with` is a TLS address computation and a
    /// load/store, with no lazy initialisation, no destructor registration
    /// and no "already destroyed" state that could panic. That is what makes
    /// them usable from the signal handler. (In the main executable, as
    /// here, the TLS access is a fixed offset from the thread pointer; it
    /// never calls into the dynamic loader.)
    static ACTIVE_JMPBUF: Cell<*mut c_void> = const { Cell::new(std::ptr::null_mut()) };

    /// The fault the handler recorded before jumping back to `catch_traps`.
    static FAULT: Cell<Option<Fault>> = const { Cell::new(None) };

    /// The [`FaultRegions`] of the innermost active `catch_traps_in` scope
    /// (null: none declared, as under plain [`catch_traps`]). Same signal
    /// safety as `ACTIVE_JMPBUF`.
    static ACTIVE_REGIONS: Cell<*const FaultRegions> = const { Cell::new(std::ptr::null()) };

    /// Set by the interrupt handler when the running call's deadline has
    /// passed but the signal landed outside JIT code (in a host function,
    /// a builtin or the engine), where jumping out is not safe: the host
    /// side then ends the call when it returns to wasm
    /// ([`take_interrupt_pending`]). Same signal safety as above.
    static INTERRUPT_PENDING: Cell<bool> = const { Cell::new(false) };

    /// The trap handlers are installed and this thread has its alternate
    /// signal stack (`prepare_thread` ran).
    static THREAD_READY: Cell<bool> = const { Cell::new(false) };
}

/// Whether an interrupt signal for the running call arrived while this
/// thread was outside JIT code, clearing the flag. Host-function glue asks
/// this when a host function returns, and ends the call with an interrupt
/// instead of returning to wasm.
pub fn take_interrupt_pending() -> bool {
    INTERRUPT_PENDING.with(|p| p.replace(false))
}

// ---------------------------------------------------------------------------
// Fault regions
// ---------------------------------------------------------------------------

/// The address ranges where a memory-access fault of the running code is
/// legitimate: the reservations (canary, accessible part and guard) of the
/// memories of the store whose code runs.
///
/// A SIGSEGV or SIGBUS at a recorded trap site is what an out-of-bounds
/// wasm access looks like, but only if the faulting address lies in one of
/// those reservations. Anywhere else, the generated code computed an
/// address it never should have (a JIT bug: a wrong base, a dropped bounds
/// check, a stale pointer), and the fault may be the first sign of a
/// sandbox escape that other executions of the same code would not notice;
/// reporting it as a tidy wasm trap would hide it. So under
/// [`catch_traps_in`] the handler catches such a fault only if its
/// `si_addr` is in these regions, and otherwise reports it on stderr
/// (signal, PC and address) and passes it to the previously installed
/// handler, which by default terminates the process with a core dump.
///
/// Ranges are only added, by the thread that owns them, in ordinary code;
/// the handler reads them on the same thread, and only when the PC is a
/// trap site in JIT code, so never in the middle of an `add`. That is why
/// this type is neither `Sync` nor meant to be shared between threads.
#[derive(Debug, Default)]
pub struct FaultRegions {
    ranges: std::cell::UnsafeCell<Vec<std::ops::Range<usize>>>,
    /// The running store's epoch counter and deadline, for the interrupt
    /// handler (see [`FaultRegions::set_deadline_words`]).
    deadline: Cell<Option<DeadlineWords>>,
}

#[derive(Debug, Clone, Copy)]
struct DeadlineWords {
    epoch: *const std::sync::atomic::AtomicU64,
    deadline: *const std::sync::atomic::AtomicU64,
}

impl FaultRegions {
    /// No regions: every memory-access fault is foreign.
    pub fn new() -> FaultRegions {
        FaultRegions::default()
    }

    /// Declares `range` a region where faults are expected.
    pub fn add(&self, range: std::ops::Range<usize>) {
        // SAFETY: see the type's docs: no reference into `ranges` is live
        // (`contains` and `clear` hold none across calls), and the handler
        // cannot run in the middle of this on this thread (it reads only
        // for faults at JIT trap sites), nor on another (not `Sync`).
        unsafe { (*self.ranges.get()).push(range) }
    }

    /// Forgets every region (then any memory-access fault is foreign).
    pub fn clear(&self) {
        // SAFETY: as in `add`.
        unsafe { (*self.ranges.get()).clear() }
    }

    /// Whether `addr` lies in a declared region. Async-signal-safe (reads
    /// only).
    pub fn contains(&self, addr: usize) -> bool {
        // SAFETY: as in `add`: nothing mutates `ranges` while this runs.
        unsafe { (*self.ranges.get()).iter().any(|r| r.contains(&addr)) }
    }

    /// Declares the epoch counter and the deadline of the code run under
    /// these regions: an interrupt signal (see
    /// [`init_interrupts`](crate::init_interrupts)) ends a
    /// call running under them only once `*epoch >= *deadline`, so a late
    /// signal never interrupts a call whose deadline has not passed.
    ///
    /// # Safety
    ///
    /// Both pointers must stay valid for as long as these regions are used
    /// by [`catch_traps_in`] (the store owning them keeps both alive).
    pub unsafe fn set_deadline_words(
        &self,
        epoch: *const std::sync::atomic::AtomicU64,
        deadline: *const std::sync::atomic::AtomicU64,
    ) {
        self.deadline.set(Some(DeadlineWords { epoch, deadline }));
    }

    /// Whether the declared deadline has passed (false if none was
    /// declared). Async-signal-safe: two atomic loads.
    fn deadline_passed(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        match self.deadline.get() {
            // SAFETY: `set_deadline_words`'s contract keeps both alive
            // while the regions are in use, which they are when the handler
            // finds them in `ACTIVE_REGIONS`.
            Some(w) => unsafe { (*w.epoch).load(SeqCst) >= (*w.deadline).load(SeqCst) },
            None => false,
        }
    }
}

// ---------------------------------------------------------------------------
// catch_traps
// ---------------------------------------------------------------------------

extern "C" {
    /// `sigsetjmp(buf, 0)`; on the direct return, `body(data, &buf)` and
    /// return 0; if `faaslet_sfi_longjmp(&buf)` jumps back, return 1.
    fn faaslet_sfi_call(
        body: unsafe extern "C" fn(data: *mut c_void, jmpbuf: *mut c_void),
        data: *mut c_void,
    ) -> libc::c_int;

    /// `siglongjmp(*buf, 1)`.
    fn faaslet_sfi_longjmp(buf: *mut c_void) -> !;

    /// Sets a jump buffer, makes it and `regions` the active ones through
    /// the two pointers, calls `f(a, b, c, d)`, restores them; 0, or 1 if
    /// a handler jumped back (the caller then restores them).
    fn faaslet_sfi_call_jit(
        active_jmpbuf: *mut *mut c_void,
        active_regions: *mut *const c_void,
        regions: *const c_void,
        f: JitEntry,
        a: *const u8,
        b: *mut u8,
        c: *mut u8,
        d: *mut u128,
    ) -> libc::c_int;
}

/// A function JIT code is entered through: the engine's array trampolines
/// (`func_ptr, callee_vmctx, caller_vmctx, values`).
pub type JitEntry = unsafe extern "C" fn(*const u8, *mut u8, *mut u8, *mut u128);

/// [`catch_traps_in`] for the engine's calls into JIT code: `f(a, b, c, d)`
/// is called straight from the C frame that catches traps, with no Rust
/// closure, payload or `catch_unwind` in between (a third of the cost of a
/// host-to-wasm call, counted with cachegrind). Nothing between here and
/// JIT code can panic: host functions and builtins that JIT code calls
/// catch their own panics.
///
/// # Safety
///
/// `f` must be JIT code's entry (or code that neither panics nor unwinds)
/// and safe to call with these arguments.
#[inline]
pub unsafe fn call_jit_in(
    regions: &FaultRegions,
    f: JitEntry,
    a: *const u8,
    b: *mut u8,
    c: *mut u8,
    d: *mut u128,
) -> Result<(), Fault> {
    if !THREAD_READY.get() {
        prepare_thread();
    }
    let prev = ACTIVE_JMPBUF.get();
    let prev_regions = ACTIVE_REGIONS.get();
    // SAFETY: the two pointers are this thread's own thread-locals, valid
    // for the call; the C frame deactivates its buffer before it returns
    // normally, and after a jump back we restore both below, as
    // `catch_traps_impl` does. `f`'s contract is the caller's.
    let rc = unsafe {
        faaslet_sfi_call_jit(
            ACTIVE_JMPBUF.with(Cell::as_ptr),
            ACTIVE_REGIONS.with(Cell::as_ptr).cast::<*const c_void>(),
            (regions as *const FaultRegions).cast::<c_void>(),
            f,
            a,
            b,
            c,
            d,
        )
    };
    // As in `catch_traps_impl`: an undelivered interrupt is moot now.
    INTERRUPT_PENDING.set(false);
    if rc != 0 {
        ACTIVE_JMPBUF.set(prev);
        ACTIVE_REGIONS.set(prev_regions);
        return Err(FAULT
            .take()
            .expect("faaslet-sfi: jumped back without recording a fault"));
    }
    Ok(())
}

/// What `catch_traps` passes to the trampoline through the C frame.
struct Payload<F> {
    /// The closure, taken (exactly once) by the trampoline.
    f: Option<F>,
    /// The jump buffer that was active before this scope, restored when the
    /// body finishes.
    prev: *mut c_void,
    /// This scope's fault regions, and the ones active before it.
    regions: *const FaultRegions,
    prev_regions: *const FaultRegions,
    /// A panic raised by `f`, to be resumed once we are out of the C frame.
    panic: Option<Box<dyn std::any::Any + Send + 'static>>,
}

/// The `extern "C"` body run inside the C `sigsetjmp` frame.
///
/// # Safety
///
/// `data` must point to a live `Payload<F>` and `jmpbuf` to the live
/// `sigjmp_buf` of the enclosing `faaslet_sfi_call` frame.
unsafe extern "C" fn trampoline<F: FnOnce()>(data: *mut c_void, jmpbuf: *mut c_void) {
    // SAFETY: `catch_traps` passes a pointer to its own `Payload<F>` local,
    // which outlives the C call, and nothing else accesses it meanwhile.
    let payload = unsafe { &mut *data.cast::<Payload<F>>() };
    let f = payload
        .f
        .take()
        .expect("catch_traps trampoline called twice");

    // From here on, a trap at a trap site on this thread jumps to `jmpbuf`.
    ACTIVE_REGIONS.set(payload.regions);
    ACTIVE_JMPBUF.set(jmpbuf);

    // Unwinding out of an `extern "C"` function aborts, and unwinding
    // through the C frame would be undefined behaviour anyway. So a panic in
    // `f` is caught here, carried across the C frame in the payload, and
    // resumed by `catch_traps` once `faaslet_sfi_call` has returned.
    let result = panic::catch_unwind(AssertUnwindSafe(f));

    // Deactivate our buffer *before* returning: once this function returns,
    // the `sigjmp_buf` in the C frame is dead, and it must never be the
    // target of a jump. (Nothing can trap between here and the return, but
    // keeping the window closed costs nothing.)
    ACTIVE_JMPBUF.set(payload.prev);
    ACTIVE_REGIONS.set(payload.prev_regions);

    if let Err(p) = result {
        payload.panic = Some(p);
    }
}

/// The handlers installed and this thread's alternate stack set up; the
/// slow path of `catch_traps`.
#[cold]
#[inline(never)]
fn prepare_thread() {
    if let Err(e) = init_traps() {
        panic!("faaslet-sfi: cannot install trap handlers: {e}");
    }
    if let Err(e) = ensure_alt_stack() {
        panic!("faaslet-sfi: {e}");
    }
    THREAD_READY.set(true);
}

/// Runs `f`, catching faults at registered trap sites.
///
/// Installs the signal handlers (once per process) and makes sure this
/// thread has a large enough alternate signal stack (once per thread), then
/// runs `f`. If JIT code faults at a PC inside a range registered with
/// [`register_code`] whose [`CodeLookup`] says it is a trap site, while `f`
/// runs on this thread, control returns here with `Err(fault)`. Nested calls
/// work: the innermost active `catch_traps` catches.
///
/// Any other fault (outside registered code, or not a trap site) is passed
/// to the previously installed handler, i.e. it crashes the process as it
/// would have without this crate (and Rust's stack-overflow report still
/// works).
///
/// A panic in `f` propagates out of `catch_traps` as a panic.
///
/// # Trap semantics: frames are discarded, not unwound
///
/// When a trap is caught, every frame between `catch_traps` and the
/// faulting instruction (the JIT frames, any host frames in between, and
/// `f`'s own frame) is discarded by `siglongjmp` **without running
/// destructors**: values alive in those frames (including `f`'s captures)
/// are leaked, locks they hold stay locked. So `f` should hold nothing but
/// plain data across calls into JIT code, and host functions called from
/// JIT code must not be on the stack when a trap is raised (they are not
/// JIT code, so their faults are not caught anyway).
///
/// # Panics
///
/// If the signal handlers or this thread's alternate signal stack cannot be
/// set up (see [`init_traps`]).
pub fn catch_traps<F: FnOnce()>(f: F) -> Result<(), Fault> {
    catch_traps_impl(std::ptr::null(), f)
}

/// [`catch_traps`], accepting a SIGSEGV or SIGBUS at a trap site only if
/// its faulting address lies in `regions` (see [`FaultRegions`]); any other
/// is reported on stderr as a crash of the engine and passed to the
/// previously installed handler. SIGILL and SIGFPE (explicit traps, whose
/// address is the instruction's) are caught as under `catch_traps`. The
/// engine runs every call into wasm this way, with the reservations of the
/// store's memories as the regions.
pub fn catch_traps_in<F: FnOnce()>(regions: &FaultRegions, f: F) -> Result<(), Fault> {
    catch_traps_impl(regions, f)
}

fn catch_traps_impl<F: FnOnce()>(regions: *const FaultRegions, f: F) -> Result<(), Fault> {
    // Once per thread (the handlers once per process): one thread-local
    // load on every later call, which is most of them.
    if !THREAD_READY.get() {
        prepare_thread();
    }

    let prev = ACTIVE_JMPBUF.get();
    let prev_regions = ACTIVE_REGIONS.get();
    let mut payload = Payload {
        f: Some(f),
        prev,
        regions,
        prev_regions,
        panic: None,
    };

    // Why this shape:
    //
    // `sigsetjmp` lives in C (see setjmp.c), so from Rust's point of view
    // `faaslet_sfi_call` is an ordinary call that returns once. All state
    // crosses it through memory (`payload`, whose address escapes, so the
    // compiler cannot keep it in registers across the call), and the
    // callee-saved registers of *this* frame are restored by the C
    // function's epilogue after `siglongjmp` lands in it, exactly as for a
    // normal return.
    //
    // SAFETY: `trampoline::<F>` matches the C body signature and expects a
    // `*mut Payload<F>`, which is what we pass; `payload` outlives the call.
    // If a trap jumps back, the frames skipped are those of `trampoline`,
    // `catch_unwind` and `f` (plus JIT code): see "Trap semantics" above for
    // why skipping them (leaking rather than dropping) is acceptable.
    let rc = unsafe {
        faaslet_sfi_call(
            trampoline::<F>,
            (&mut payload as *mut Payload<F>).cast::<c_void>(),
        )
    };

    // The call this scope ran is over: an interrupt that could not be
    // delivered to it is moot now, and must not end another call (an
    // enclosing call of another store, or the thread's next call). An
    // enclosing call whose own deadline has passed is signalled again.
    INTERRUPT_PENDING.set(false);
    if rc != 0 {
        // We arrived here by `siglongjmp` from the handler. The trampoline
        // never got to restore the previous jump buffer, so do it now: an
        // enclosing `catch_traps` becomes the innermost again.
        ACTIVE_JMPBUF.with(|c| c.set(prev));
        ACTIVE_REGIONS.with(|c| c.set(prev_regions));
        let fault = FAULT
            .with(Cell::take)
            .expect("faaslet-sfi: jumped back without recording a fault");
        return Err(fault);
    }
    if let Some(p) = payload.panic.take() {
        panic::resume_unwind(p);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Code registry
// ---------------------------------------------------------------------------

/// A registration of a code range with the trap handler; dropping it
/// unregisters the range.
///
/// Drop the registration *before* unmapping or reusing the code memory.
#[must_use = "the code range is unregistered when this is dropped"]
#[derive(Debug)]
pub struct CodeRegistration {
    id: u64,
    start: usize,
    end: usize,
}

impl CodeRegistration {
    /// The registered range `[start, end)`.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

impl Drop for CodeRegistration {
    fn drop(&mut self) {
        registry::remove(self.id);
    }
}

/// Registers machine code at `[start, end)`: faults at PCs in this range for
/// which `lookup.is_trap_site(pc)` is true are caught by [`catch_traps`].
///
/// # Panics
///
/// If `start > end`, or the range overlaps a range that is still registered
/// (which would mean code memory was reused while its old registration was
/// alive).
pub fn register_code(start: usize, end: usize, lookup: Arc<dyn CodeLookup>) -> CodeRegistration {
    assert!(
        start <= end,
        "register_code: start {start:#x} > end {end:#x}"
    );
    let id = registry::insert(start, end, lookup);
    CodeRegistration { id, start, end }
}

/// The registry of code ranges, readable from the signal handler without
/// locks.
///
/// Readers (the signal handler) see an immutable snapshot: a sorted,
/// non-overlapping `Vec` behind an `AtomicPtr`. Writers (register/drop, in
/// ordinary code) serialise on a `Mutex`, build a new snapshot, publish it
/// with an atomic swap, then wait until no reader can still be looking at
/// the old one before freeing it.
///
/// Why not an `RwLock`? Taking a read lock in the handler would be *almost*
/// fine (a thread faulting in JIT code cannot be holding the lock, and a
/// writer on another thread finishes without waiting on us), but a thread
/// that faults for some other reason while inside `catch_traps` (say, a
/// stack overflow in host code that is in the middle of `register_code`)
/// would deadlock on its own write lock instead of reporting the crash.
/// The scheme below never blocks a reader.
///
/// Reclamation is a minimal two-counter grace period (a userspace RCU):
///
/// * A reader reads `EPOCH = e`, increments `READERS[e & 1]`, re-reads
///   `EPOCH` (retrying if it changed), then loads the snapshot pointer, uses
///   it, and decrements `READERS[e & 1]`. It never waits.
/// * A writer swaps in the new snapshot, flips `EPOCH` from `e` to `e + 1`,
///   and waits for `READERS[e & 1]` to drain to zero before freeing the old
///   snapshot.
///
/// Correctness (all operations `SeqCst`): a reader that obtained the *old*
/// pointer loaded it before the writer's swap; its successful `EPOCH`
/// re-check came earlier still, hence before the flip, so it saw `e` (only
/// writers change `EPOCH`, one at a time under the mutex) and its increment
/// of `READERS[e & 1]` precedes the writer's wait. The writer therefore sees
/// it until it is done. Readers arriving after the flip count in the other
/// counter, so the wait cannot be starved by a stream of new readers.
/// Readers never run for long (a binary search plus one `is_trap_site`
/// call) and never block, so the wait is short; a reader interrupting the
/// writer on the writer's own thread (a signal during the wait) runs to
/// completion on top of it, so it cannot deadlock either.
///
/// The `Arc<dyn CodeLookup>`s are dropped by the writer, in ordinary code,
/// never in the handler.
mod registry {
    use super::CodeLookup;
    use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
    use std::sync::{Arc, Mutex};

    struct Entry {
        start: usize,
        end: usize,
        id: u64,
        lookup: Arc<dyn CodeLookup>,
    }

    /// An immutable snapshot: entries sorted by `start`, non-overlapping.
    struct Snapshot {
        entries: Vec<Entry>,
    }

    static SNAPSHOT: AtomicPtr<Snapshot> = AtomicPtr::new(std::ptr::null_mut());
    static EPOCH: AtomicUsize = AtomicUsize::new(0);
    static READERS: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
    static WRITER: Mutex<()> = Mutex::new(());
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);

    /// Is `pc` inside a registered range, and a trap site there?
    /// Async-signal-safe: no allocation, no locks, no waiting.
    pub(super) fn is_trap_site(pc: usize) -> bool {
        lookup(pc, true)
    }

    /// Is `pc` inside a registered range (JIT code), trap site or not?
    /// Async-signal-safe, as [`is_trap_site`].
    pub(super) fn in_code(pc: usize) -> bool {
        lookup(pc, false)
    }

    fn lookup(pc: usize, trap_site: bool) -> bool {
        let epoch = loop {
            let e = EPOCH.load(SeqCst);
            READERS[e & 1].fetch_add(1, SeqCst);
            if EPOCH.load(SeqCst) == e {
                break e;
            }
            READERS[e & 1].fetch_sub(1, SeqCst);
        };
        let snap = SNAPSHOT.load(SeqCst);
        let hit = if snap.is_null() {
            false
        } else {
            // SAFETY: the snapshot cannot be freed while we are counted in
            // READERS[epoch & 1] (see the module comment), and it is never
            // mutated after publication.
            let entries = unsafe { &(*snap).entries };
            let i = entries.partition_point(|e| e.start <= pc);
            i > 0 && {
                let e = &entries[i - 1];
                pc < e.end && (!trap_site || e.lookup.is_trap_site(pc))
            }
        };
        READERS[epoch & 1].fetch_sub(1, SeqCst);
        hit
    }

    /// Publishes `new` and returns the previous snapshot once no reader can
    /// be using it. Must be called with `WRITER` held.
    fn publish(new: Box<Snapshot>) -> Option<Box<Snapshot>> {
        let old = SNAPSHOT.swap(Box::into_raw(new), SeqCst);
        let e = EPOCH.load(SeqCst);
        EPOCH.store(e.wrapping_add(1), SeqCst);
        while READERS[e & 1].load(SeqCst) != 0 {
            std::thread::yield_now();
        }
        if old.is_null() {
            None
        } else {
            // SAFETY: `old` came from `Box::into_raw` in an earlier `publish`,
            // has been unpublished by the swap, and the grace period above
            // guarantees no reader still holds it.
            Some(unsafe { Box::from_raw(old) })
        }
    }

    /// Builds a new snapshot from the current one (cloning the `Arc`s).
    /// Must be called with `WRITER` held.
    fn current_entries() -> Vec<Entry> {
        let cur = SNAPSHOT.load(SeqCst);
        if cur.is_null() {
            return Vec::new();
        }
        // SAFETY: only writers free snapshots, and we hold the writer lock.
        let cur = unsafe { &*cur };
        cur.entries
            .iter()
            .map(|e| Entry {
                start: e.start,
                end: e.end,
                id: e.id,
                lookup: Arc::clone(&e.lookup),
            })
            .collect()
    }

    pub(super) fn insert(start: usize, end: usize, lookup: Arc<dyn CodeLookup>) -> u64 {
        let id = NEXT_ID.fetch_add(1, SeqCst);
        let old = {
            let _guard = WRITER.lock().unwrap_or_else(|p| p.into_inner());
            let mut entries = current_entries();
            let i = entries.partition_point(|e| e.start < start);
            // Empty ranges never match a PC, so they cannot conflict.
            if start < end {
                let overlaps_prev = i > 0 && entries[i - 1].end > start;
                let overlaps_next = i < entries.len() && entries[i].start < end;
                if overlaps_prev || overlaps_next {
                    drop(_guard);
                    panic!("register_code: [{start:#x}, {end:#x}) overlaps a registered range");
                }
            }
            entries.insert(
                i,
                Entry {
                    start,
                    end,
                    id,
                    lookup,
                },
            );
            publish(Box::new(Snapshot { entries }))
        };
        // Drop the old snapshot (and any `Arc`s it held last) outside the
        // lock, in case a `CodeLookup`'s destructor registers code itself.
        drop(old);
        id
    }

    pub(super) fn remove(id: u64) {
        let old = {
            let _guard = WRITER.lock().unwrap_or_else(|p| p.into_inner());
            let mut entries = current_entries();
            entries.retain(|e| e.id != id);
            publish(Box::new(Snapshot { entries }))
        };
        drop(old);
    }
}

// ---------------------------------------------------------------------------
// Signal handlers
// ---------------------------------------------------------------------------

/// The signals we handle, in the order of `PREVIOUS`.
const SIGNALS: [libc::c_int; 4] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE];

/// The handlers that were installed before ours, for chaining.
struct PreviousActions(std::cell::UnsafeCell<[MaybeUninit<libc::sigaction>; 4]>);

// SAFETY: each slot is written exactly once, inside `install_handlers`
// (serialised by `INIT`), *before* our handler for that signal is installed;
// afterwards it is only read. The `sigaction` system call that installs our
// handler orders the write before any invocation of the handler.
unsafe impl Sync for PreviousActions {}

static PREVIOUS: PreviousActions =
    PreviousActions(std::cell::UnsafeCell::new([MaybeUninit::uninit(); 4]));

static INIT: OnceLock<Result<(), TrapError>> = OnceLock::new();

/// Installs the trap signal handlers for SIGSEGV, SIGBUS, SIGILL and SIGFPE
/// (once per process; later calls return the first call's result). Called
/// implicitly by [`catch_traps`]; call it eagerly at startup to get a typed
/// error instead of a panic.
///
/// Handlers installed *after* this one must chain to ours for trapping to
/// keep working.
pub fn init_traps() -> Result<(), TrapError> {
    INIT.get_or_init(install_handlers).clone()
}

fn install_handlers() -> Result<(), TrapError> {
    for (i, &signal) in SIGNALS.iter().enumerate() {
        // SAFETY: `PREVIOUS` slot `i` is written only here, once (we run
        // inside `INIT`), and before our handler for `signal` exists, so the
        // handler cannot be reading it concurrently.
        let slot = unsafe { &mut (*PREVIOUS.0.get())[i] };

        // Record the previous action first, then install ours. (Installing
        // with the `oldact` argument would be one call, but the kernel writes
        // `oldact` only after switching handlers, leaving a window in which
        // our handler could run with nothing to chain to.)
        // SAFETY: a null `act` only queries; `slot` is valid for writes.
        if unsafe { libc::sigaction(signal, std::ptr::null(), slot.as_mut_ptr()) } != 0 {
            return Err(TrapError::Sigaction {
                signal,
                errno: errno(),
            });
        }

        // SAFETY: an all-zero `sigaction` is a valid value (empty fields);
        // we fill in what matters below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = trap_handler as *const () as usize;
        // SA_SIGINFO: we need `siginfo_t` (fault address) and the ucontext
        // (PC).
        //
        // SA_ONSTACK: run on the alternate signal stack. A fault can be a
        // stack overflow, with no stack left to run a handler on; and JIT
        // code may have its stack pointer anywhere.
        //
        // SA_NODEFER: normally the kernel blocks the signal being handled
        // while its handler runs and unblocks it when the handler *returns*
        // (via `rt_sigreturn`, which restores the saved mask). Our handler
        // does not return when it catches a trap: it `siglongjmp`s, and
        // with `savesigs = 0` (see setjmp.c; saving the mask would cost a
        // system call on every call into JIT code) nothing restores the
        // mask. Without SA_NODEFER the signal would stay blocked on this
        // thread after the first trap, and the next trap (a synchronous
        // fault with its signal blocked) would make the kernel kill the
        // whole process. With SA_NODEFER the mask is never changed, so
        // there is nothing to restore. `sa_mask` is empty for the same
        // reason: no other signal is blocked during the handler either.
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
        // SAFETY: `sa_mask` is a valid sigset_t to initialise.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };

        // SAFETY: `action` is fully initialised and `trap_handler` has the
        // SA_SIGINFO signature and is async-signal-safe.
        if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
            return Err(TrapError::Sigaction {
                signal,
                errno: errno(),
            });
        }
    }
    Ok(())
}

/// Reads the faulting PC out of the signal's ucontext.
///
/// # Safety
///
/// `ctx` must be the `ucontext_t *` passed to an SA_SIGINFO handler.
#[cfg(target_arch = "x86_64")]
unsafe fn pc_from_context(ctx: *mut c_void) -> usize {
    // SAFETY: per the contract, `ctx` points to the kernel-provided
    // ucontext_t for this signal.
    unsafe {
        let uc = &*ctx.cast::<libc::ucontext_t>();
        uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize
    }
}

/// Reads the faulting PC out of the signal's ucontext.
///
/// # Safety
///
/// `ctx` must be the `ucontext_t *` passed to an SA_SIGINFO handler.
#[cfg(target_arch = "aarch64")]
unsafe fn pc_from_context(ctx: *mut c_void) -> usize {
    // SAFETY: per the contract, `ctx` points to the kernel-provided
    // ucontext_t for this signal.
    unsafe {
        let uc = &*ctx.cast::<libc::ucontext_t>();
        uc.uc_mcontext.pc as usize
    }
}

/// The signal handler for SIGSEGV, SIGBUS, SIGILL and SIGFPE.
///
/// Runs on the alternate signal stack, possibly interrupting arbitrary
/// code, so it only does async-signal-safe things: thread-local `Cell`
/// accesses, the lock-free registry lookup, `sigaction`, `raise`, and
/// `siglongjmp`.
///
/// A trap is caught only if all of these hold:
/// 1. this thread is inside `catch_traps` (a jump buffer is active);
/// 2. the PC lies in a registered code range;
/// 3. that range's `CodeLookup` says the PC is a trap site;
/// 4. for SIGSEGV and SIGBUS inside [`catch_traps_in`], the faulting
///    address lies in that scope's [`FaultRegions`] (otherwise the fault is
///    reported on stderr as an engine crash and chained like any other).
///
/// Checking (1) first means threads that never enter `catch_traps` never
/// even look at the registry.
unsafe extern "C" fn trap_handler(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut c_void,
) {
    let jmpbuf = ACTIVE_JMPBUF.with(Cell::get);
    if !jmpbuf.is_null() {
        // SAFETY: we are an SA_SIGINFO handler, so `ctx` is our ucontext.
        let pc = unsafe { pc_from_context(ctx) };
        if registry::is_trap_site(pc) {
            // SAFETY: `info` is the kernel-provided siginfo for this signal;
            // for the four signals we handle `si_addr` is the valid field.
            let fault_addr = unsafe { (*info).si_addr() } as usize;
            // A memory-access fault must hit the running store's memory
            // (see `FaultRegions`); one anywhere else is the engine's own
            // bug, never to be reported as a wasm trap.
            let regions = ACTIVE_REGIONS.with(Cell::get);
            if (signal == libc::SIGSEGV || signal == libc::SIGBUS)
                && !regions.is_null()
                // SAFETY: a non-null `ACTIVE_REGIONS` points at the
                // `FaultRegions` borrowed by a `catch_traps_in` frame still
                // on this thread's stack (reset before that frame returns).
                && !unsafe { &*regions }.contains(fault_addr)
            {
                report_foreign_fault(signal, pc, fault_addr);
                // SAFETY: forwarding the handler's own arguments.
                unsafe { chain_to_previous(signal, info, ctx) };
                return;
            }
            FAULT.with(|f| {
                f.set(Some(Fault {
                    signal,
                    pc,
                    fault_addr,
                }))
            });
            // Jump back into `catch_traps`'s C frame.
            //
            // SAFETY: `jmpbuf` is the innermost active buffer on this
            // thread: it was set by the trampoline of a `catch_traps` frame
            // that is still on this thread's stack (buffers are deactivated
            // before their frame returns), and the faulting PC is in JIT code
            // called from within it. Jumping out of a signal handler is
            // allowed; leaving the alternate signal stack this way is fine
            // because the kernel decides "on the alternate stack" from the
            // stack pointer, not from a flag. The signal mask needs no
            // restoring thanks to SA_NODEFER (see `install_handlers`). The
            // discarded frames are JIT code and the `catch_traps` body,
            // whose destructors are documented not to run.
            unsafe { faaslet_sfi_longjmp(jmpbuf) };
        }
    }
    // SAFETY: forwarding the handler's own arguments.
    unsafe { chain_to_previous(signal, info, ctx) };
}

/// The signal used to interrupt calls (see [`crate::interrupt`]): the
/// fourth real-time signal glibc leaves to applications (`SIGRTMIN() + 3`).
pub fn interrupt_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

/// The handler of the interrupt signal ([`interrupt_signal`]).
///
/// Like `trap_handler` it runs on the alternate stack and does only
/// async-signal-safe things. It ends the running call only if all hold:
/// 1. this thread is inside `catch_traps_in` (a jump buffer and fault
///    regions are active);
/// 2. those regions' deadline has passed (so a signal meant for an
///    earlier call, delivered late to a thread now running another, does
///    nothing);
/// 3. the PC lies in JIT code. Anywhere else (a host function, a builtin,
///    the engine's own code) jumping out could leave host state half
///    updated, so the handler only sets `INTERRUPT_PENDING` for the host
///    side to act on when it returns to wasm.
///
/// In JIT code any instruction is a safe place to stop: wasm state lives
/// in linear memory, globals and tables, each updated by single stores,
/// and the frames jumped over hold no host resources (host calls and
/// builtins are not JIT code). Otherwise the signal is ignored; it is
/// never passed on, since its default action would end the process.
pub(crate) unsafe extern "C" fn interrupt_handler(
    signal: libc::c_int,
    _info: *mut libc::siginfo_t,
    ctx: *mut c_void,
) {
    let jmpbuf = ACTIVE_JMPBUF.with(Cell::get);
    let regions = ACTIVE_REGIONS.with(Cell::get);
    if jmpbuf.is_null() || regions.is_null() {
        return;
    }
    // SAFETY: a non-null `ACTIVE_REGIONS` points at the `FaultRegions` of
    // a `catch_traps_in` frame still on this thread's stack.
    if !unsafe { &*regions }.deadline_passed() {
        return;
    }
    // SAFETY: we are an SA_SIGINFO handler, so `ctx` is our ucontext.
    let pc = unsafe { pc_from_context(ctx) };
    if !registry::in_code(pc) {
        INTERRUPT_PENDING.with(|p| p.set(true));
        return;
    }
    FAULT.with(|f| {
        f.set(Some(Fault {
            signal,
            pc,
            fault_addr: 0,
        }))
    });
    // SAFETY: as in `trap_handler`: `jmpbuf` is the innermost active
    // buffer of a `catch_traps` frame on this thread's stack, the PC is in
    // JIT code called from within it, and the interrupt signal is
    // installed with SA_NODEFER, so no mask needs restoring.
    unsafe { faaslet_sfi_longjmp(jmpbuf) };
}

/// Writes "faaslet-sfi: engine crash: SIGSEGV at trap site pc 0x…,
/// address 0x… outside the running store's memory" to stderr, with
/// `write(2)` and no allocation (async-signal-safe).
fn report_foreign_fault(signal: libc::c_int, pc: usize, addr: usize) {
    struct Buf {
        b: [u8; 256],
        n: usize,
    }
    impl Buf {
        fn put(&mut self, s: &[u8]) {
            for &c in s {
                if self.n < self.b.len() {
                    self.b[self.n] = c;
                    self.n += 1;
                }
            }
        }
        fn hex(&mut self, v: usize) {
            self.put(b"0x");
            let mut digits = [0u8; 16];
            let mut i = digits.len();
            let mut v = v;
            loop {
                i -= 1;
                digits[i] = b"0123456789abcdef"[v & 15];
                v >>= 4;
                if v == 0 {
                    break;
                }
            }
            let d = digits;
            self.put(&d[i..]);
        }
    }
    let mut buf = Buf { b: [0; 256], n: 0 };
    buf.put(b"faaslet-sfi: engine crash: ");
    buf.put(if signal == libc::SIGBUS {
        b"SIGBUS"
    } else {
        b"SIGSEGV"
    });
    buf.put(b" at trap site pc ");
    buf.hex(pc);
    buf.put(b", address ");
    buf.hex(addr);
    buf.put(b" outside the running store's memory; not a wasm trap\n");
    // SAFETY: writing our own initialised stack buffer to fd 2; `write`
    // is async-signal-safe. A short or failed write loses only the report.
    unsafe { libc::write(2, buf.b.as_ptr().cast(), buf.n) };
}

/// Passes a signal we do not want to the handler that was installed before
/// ours.
///
/// # Safety
///
/// Must be called from `trap_handler` with its arguments, after
/// `install_handlers` has recorded the previous action for `signal`.
unsafe fn chain_to_previous(signal: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let Some(index) = SIGNALS.iter().position(|&s| s == signal) else {
        return;
    };
    // SAFETY: our handler is only installed for `signal` after slot `index`
    // was written, and it is never written again.
    let prev = unsafe { (*PREVIOUS.0.get())[index].assume_init_ref() };

    // Was this a real fault of the current instruction (returning re-runs
    // it), or a signal sent with kill/tgkill/sigqueue (si_code <= 0:
    // SI_USER, SI_QUEUE, SI_TKILL, ...), which returning just swallows?
    // SAFETY: `info` is the kernel-provided siginfo.
    let sent_by_process = unsafe { (*info).si_code } <= 0;

    let handler = prev.sa_sigaction;
    // An ignored hardware fault cannot really be ignored: returning re-runs
    // the instruction, which would fault again forever. The kernel itself
    // forces the default action for a fault whose signal is ignored, so do
    // the same.
    let ignore = handler == libc::SIG_IGN;
    if handler == libc::SIG_DFL || (ignore && !sent_by_process) {
        // Restore the default action and return. For a hardware fault the
        // instruction runs again, faults again, and the default action
        // (terminate, with a core dump) happens with the right signal and
        // the right faulting state. For a sent signal, re-raise it: it is
        // not blocked (SA_NODEFER), so it is delivered as we return.
        //
        // SAFETY: an all-zero sigaction with SIG_DFL is a valid "default"
        // action; sigaction and raise are async-signal-safe.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigemptyset(&mut dfl.sa_mask);
            libc::sigaction(signal, &dfl, std::ptr::null_mut());
            if sent_by_process {
                libc::raise(signal);
            }
        }
        return;
    }
    if ignore {
        return;
    }
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so
        // `sa_sigaction` is a three-argument handler; we pass it exactly
        // what the kernel passed us. This is how Rust's own stack-overflow
        // handler (installed on SIGSEGV/SIGBUS by std at startup) keeps
        // working under ours.
        unsafe {
            let f: unsafe extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
                std::mem::transmute(handler);
            f(signal, info, ctx);
        }
    } else {
        // SAFETY: without SA_SIGINFO, `sa_handler` (same union slot) is a
        // one-argument handler.
        unsafe {
            let f: unsafe extern "C" fn(libc::c_int) = std::mem::transmute(handler);
            f(signal);
        }
    }
}

// ---------------------------------------------------------------------------
// Alternate signal stacks
// ---------------------------------------------------------------------------

/// The alternate signal stack size we insist on. Our handler itself needs
/// little, but a handler we chain to may need more than the
/// `SIGSTKSZ`-sized stack Rust's std gives its threads (8 KiB, or less than
/// the signal frame itself on machines with large vector state).
const ALT_STACK_SIZE: usize = 64 * 1024;

/// An alternate signal stack we allocated for this thread.
struct AltStack {
    /// Start of the mapping: one PROT_NONE guard page, then the stack.
    mapping: *mut u8,
    mapping_len: usize,
    /// The usable stack (just above the guard page).
    stack: *mut u8,
}

impl Drop for AltStack {
    fn drop(&mut self) {
        // SAFETY: querying the current alternate stack into a local.
        let mut cur: libc::stack_t = unsafe { std::mem::zeroed() };
        // SAFETY: a null `ss` only queries.
        let rc = unsafe { libc::sigaltstack(std::ptr::null(), &mut cur) };
        if rc == 0 && cur.ss_flags & libc::SS_ONSTACK != 0 {
            // We are running on an alternate stack (thread exit from a
            // signal handler?). Freeing it now would pull the stack out
            // from under us; leak it.
            return;
        }
        if rc == 0 && cur.ss_sp == self.stack.cast() && cur.ss_flags & libc::SS_DISABLE == 0 {
            // Still installed: disable it. We do not re-install whatever was
            // there before ours: by thread exit its owner may have freed it
            // already (std frees its own when the thread's main function
            // returns, before thread-local destructors run, and disables
            // whatever stack is current, i.e. often ours, at that point).
            let disable = libc::stack_t {
                ss_sp: std::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: ALT_STACK_SIZE,
            };
            // SAFETY: disabling the alternate stack is always valid when not
            // running on it (checked above).
            unsafe { libc::sigaltstack(&disable, std::ptr::null_mut()) };
        }
        // SAFETY: the mapping is ours, and no longer installed as this
        // thread's alternate stack (nor could it be another thread's).
        unsafe { libc::munmap(self.mapping.cast(), self.mapping_len) };
    }
}

thread_local! {
    /// Whether this thread's alternate signal stack has been checked.
    static ALT_STACK_CHECKED: Cell<bool> = const { Cell::new(false) };
    /// The alternate stack we installed for this thread, freed at thread
    /// exit. Only touched outside signal handlers.
    static ALT_STACK: RefCell<Option<AltStack>> = const { RefCell::new(None) };
}

/// Makes sure this thread has an alternate signal stack of at least
/// `ALT_STACK_SIZE` bytes, allocating and installing our own if not (once
/// per thread).
fn ensure_alt_stack() -> Result<(), TrapError> {
    if ALT_STACK_CHECKED.with(Cell::get) {
        return Ok(());
    }
    // SAFETY: an all-zero stack_t is valid to overwrite.
    let mut cur: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: a null `ss` only queries.
    if unsafe { libc::sigaltstack(std::ptr::null(), &mut cur) } != 0 {
        return Err(TrapError::AltStack { errno: errno() });
    }
    let usable = cur.ss_flags & libc::SS_DISABLE == 0 && cur.ss_size >= ALT_STACK_SIZE;
    if usable || cur.ss_flags & libc::SS_ONSTACK != 0 {
        // Big enough already; or we are running on it (inside a signal
        // handler), where it cannot be replaced: make do.
        ALT_STACK_CHECKED.with(|c| c.set(true));
        return Ok(());
    }

    let page = crate::reservation::host_page_size();
    let mapping_len = ALT_STACK_SIZE + page;
    // SAFETY: a fresh anonymous mapping; arguments are valid.
    let mapping = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            mapping_len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mapping == libc::MAP_FAILED {
        return Err(TrapError::AltStack { errno: errno() });
    }
    let alt = AltStack {
        mapping: mapping.cast(),
        mapping_len,
        // SAFETY: `page` is within the `page + ALT_STACK_SIZE` mapping.
        stack: unsafe { mapping.cast::<u8>().add(page) },
    };
    // Keep the lowest page PROT_NONE as a guard: stacks grow down, so an
    // overflowing handler hits it instead of the neighbouring mapping.
    // SAFETY: the range is page-aligned and inside our fresh mapping.
    if unsafe {
        libc::mprotect(
            alt.stack.cast(),
            ALT_STACK_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    } != 0
    {
        let e = errno();
        drop(alt);
        return Err(TrapError::AltStack { errno: e });
    }
    let new = libc::stack_t {
        ss_sp: alt.stack.cast(),
        ss_flags: 0,
        ss_size: ALT_STACK_SIZE,
    };
    // SAFETY: `new` describes a live RW region we own, kept alive until
    // thread exit by `ALT_STACK` (whose destructor uninstalls it first).
    if unsafe { libc::sigaltstack(&new, std::ptr::null_mut()) } != 0 {
        let e = errno();
        drop(alt);
        return Err(TrapError::AltStack { errno: e });
    }
    // `try_with` fails only while this thread's TLS is being torn down; then
    // the stack cannot be kept until thread exit, and dropping `alt`
    // uninstalls and frees it (trapping still works, just without an
    // alternate stack of our own).
    let _ = ALT_STACK.try_with(|s| *s.borrow_mut() = Some(alt));
    ALT_STACK_CHECKED.with(|c| c.set(true));
    Ok(())
}
