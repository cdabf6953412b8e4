//! Interrupting calls with a signal instead of checks in the code.
//!
//! Epoch interruption compiles a check into every function entry and loop
//! header: two loads, a compare and a branch, run whether or not anyone
//! ever interrupts. In a loop kernel that is a third more instructions
//! (PolyBench's gemm: 102 M instructions for the kernel without checks,
//! 139 M with). Signal interruption compiles no checks. Instead:
//!
//! * each thread running a call publishes, in a slot of its own, which
//!   epoch counter it runs under and its deadline ([`CallSlot::enter`],
//!   two relaxed stores at the start of an outermost call);
//! * whoever advances the epoch ([`interrupt_expired`], from the engine's
//!   `increment_epoch`) sends the interrupt signal ([`interrupt_signal`])
//!   to every thread whose deadline the epoch has reached, and again at
//!   every later tick until its call has ended;
//! * the handler (`traps::interrupt_handler`) checks the running call's
//!   own deadline (from its [`FaultRegions`](crate::FaultRegions)), so a
//!   stale signal never ends the wrong call, and jumps out of the call if
//!   the thread is in JIT code, or sets a flag the host side acts on when
//!   a host function returns ([`take_interrupt_pending`](crate::take_interrupt_pending)).
//!
//! Threads are signalled with `tgkill` by kernel thread id, which is safe
//! even if the thread has exited meanwhile (the id may then name nothing,
//! or a newer thread of this process, whose handler finds no expired call
//! and ignores the signal).
//!
//! ```
//! use faaslet_sfi::{init_interrupts, interrupt_signal};
//! init_interrupts().unwrap();
//! assert!(interrupt_signal() >= libc::SIGRTMIN());
//! ```

pub use crate::traps::interrupt_signal;
use crate::traps::{interrupt_handler, TrapError};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

static INIT: OnceLock<Result<(), TrapError>> = OnceLock::new();

/// Installs the interrupt signal's handler (once per process; later calls
/// return the first call's result). Refused if another handler is already
/// installed for [`interrupt_signal`]: replacing it would break whoever
/// installed it.
pub fn init_interrupts() -> Result<(), TrapError> {
    INIT.get_or_init(install).clone()
}

fn install() -> Result<(), TrapError> {
    crate::traps::init_traps()?;
    let signal = interrupt_signal();
    // SAFETY: an all-zero sigaction is a valid value to be overwritten by
    // the query below.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null `act` only queries into `old`, valid for writes.
    if unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) } != 0 {
        return Err(TrapError::Sigaction {
            signal,
            errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        });
    }
    if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
        return Err(TrapError::SignalTaken { signal });
    }
    // SAFETY: as above.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = interrupt_handler as *const () as usize;
    // As for the trap signals (see `install_handlers`): SA_SIGINFO for the
    // ucontext, SA_ONSTACK since JIT code may have its stack pointer
    // anywhere, SA_NODEFER because the handler may `siglongjmp` without
    // restoring the mask. And SA_RESTART: a signal landing in a host
    // function's system call restarts it where the kernel can.
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER | libc::SA_RESTART;
    // SAFETY: `sa_mask` is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: `action` is fully initialised; the handler has the
    // SA_SIGINFO signature and is async-signal-safe.
    if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
        return Err(TrapError::Sigaction {
            signal,
            errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        });
    }
    Ok(())
}

/// One thread's published call: the epoch counter it runs under (its
/// address, 0: none) and its deadline.
#[derive(Debug)]
struct Slot {
    tid: libc::pid_t,
    owner: AtomicUsize,
    deadline: AtomicU64,
}

/// Every live thread's slot (threads that ever ran a call).
static SLOTS: Mutex<Vec<Arc<Slot>>> = Mutex::new(Vec::new());

/// Removes the thread's slot from `SLOTS` when the thread exits.
struct Registered(Arc<Slot>);

impl Drop for Registered {
    fn drop(&mut self) {
        let mut slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|s| !Arc::ptr_eq(s, &self.0));
    }
}

thread_local! {
    static MY_SLOT: Registered = {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let slot = Arc::new(Slot {
            tid,
            owner: AtomicUsize::new(0),
            deadline: AtomicU64::new(u64::MAX),
        });
        SLOTS.lock().unwrap_or_else(|e| e.into_inner()).push(slot.clone());
        Registered(slot)
    };
    static TID: Cell<libc::pid_t> = const { Cell::new(0) };
}

/// This thread's kernel thread id (cached).
pub fn current_tid() -> libc::pid_t {
    TID.with(|t| {
        if t.get() == 0 {
            // SAFETY: gettid has no preconditions.
            t.set(unsafe { libc::gettid() });
        }
        t.get()
    })
}

/// Sends the interrupt signal to thread `tid` of this process. Harmless if
/// the thread has exited or runs no expired call (see the module docs).
pub fn signal_thread(tid: libc::pid_t) {
    // SAFETY: tgkill only sends a signal; a stale tid fails with ESRCH or
    // reaches a thread of ours whose handler ignores it.
    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, interrupt_signal()) };
}

/// The call this thread runs, published for [`interrupt_expired`] until
/// dropped (which restores what the thread published before: a call of
/// another store nested in a host function of this one).
#[derive(Debug)]
#[must_use = "the call is unpublished when this is dropped"]
pub struct CallSlot {
    prev_owner: usize,
    prev_deadline: u64,
}

impl CallSlot {
    /// Publishes that this thread runs a call under the epoch counter
    /// `epoch` (its address identifies it) until `deadline`.
    pub fn enter(epoch: *const AtomicU64, deadline: u64) -> CallSlot {
        MY_SLOT.with(|r| {
            let s = &r.0;
            let prev_owner = s.owner.swap(epoch as usize, Ordering::Relaxed);
            let prev_deadline = s.deadline.swap(deadline, Ordering::Relaxed);
            CallSlot {
                prev_owner,
                prev_deadline,
            }
        })
    }

    /// The running call's deadline changed.
    pub fn set_deadline(deadline: u64) {
        MY_SLOT.with(|r| r.0.deadline.store(deadline, Ordering::Relaxed));
    }
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        // `try_with`: a store dropped during thread teardown.
        let _ = MY_SLOT.try_with(|r| {
            r.0.owner.store(self.prev_owner, Ordering::Relaxed);
            r.0.deadline.store(self.prev_deadline, Ordering::Relaxed);
        });
    }
}

/// Signals every thread running a call under `epoch` (the counter's
/// address) whose deadline `now` (the counter's value) has reached.
/// Returns how many were signalled.
pub fn interrupt_expired(epoch: *const AtomicU64, now: u64) -> usize {
    let slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut n = 0;
    for s in slots.iter() {
        if s.owner.load(Ordering::Relaxed) == epoch as usize
            && s.deadline.load(Ordering::Relaxed) <= now
        {
            signal_thread(s.tid);
            n += 1;
        }
    }
    n
}
