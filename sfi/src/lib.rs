//! Software-fault isolation for faaslet.
//!
//! faaslet runs WebAssembly through its own JIT. The generated code relies
//! on the hardware for two kinds of safety, and this crate provides the
//! runtime half of both:
//!
//! * **Guard-page memories** ([`memory`]): each linear memory lives at the
//!   start of a large `PROT_NONE` [`Reservation`]. Only its current size is
//!   accessible ([`LinearMemory`]); growing changes protections, never the
//!   address. JIT code can therefore skip most bounds checks: an
//!   out-of-bounds access lands in the reservation's inaccessible tail and
//!   faults.
//! * **The trap guard** ([`traps`]): [`catch_traps`] runs a call into JIT
//!   code so that a fault (SIGSEGV/SIGBUS from a guard page, SIGILL from a
//!   trap instruction, SIGFPE from x86 division) at a PC the code's owner
//!   declares a trap site ([`CodeLookup`], registered with
//!   [`register_code`]) becomes an `Err(`[`Fault`]`)` instead of a crash.
//!   Faults anywhere else still crash the process, as they would without
//!   this crate.
//! * **Signal interruption** ([`interrupt`]): a deadline enforced by
//!   signalling the thread that runs an expired call, instead of checks
//!   compiled into every loop.
//!
//! # Layers
//!
//! The memory side is three layers, each module using only those below it:
//!
//! ```text
//!   memory        LinearMemory: a wasm memory in a reservation
//!     |    \
//!   image  pool   MemoryImage (memfd, copy-on-write, warm slots) | ReservationPool
//!     |    /
//!   reservation   Reservation, MemoryError, mmap/mprotect/madvise, page rounding, wipe
//! ```
//!
//! * [`reservation`] is the bottom: it owns every system call on a
//!   reservation's range and the range checks in front of them, so that a
//!   mapping made by any layer above is checked in one place. It knows no
//!   other module. Anything that maps into a reservation (memory images
//!   today; shared segments next) goes through its `map_fixed`.
//! * [`pool`] and [`image`] each build on [`reservation`] alone and not on
//!   each other. A pooled reservation goes back to its pool on drop through
//!   a crate-private `Recycle` hook that the pool implements, so the
//!   reservation layer needs no knowledge of pools; [`Reservation::new`],
//!   the constructor that draws from the process-wide pool, is therefore
//!   defined in [`pool`]. Warm slots (reservations parked with an image
//!   still mapped) belong to the image, which holds them.
//! * [`memory`] is the top: a [`LinearMemory`] takes reservations (new,
//!   pooled or warm) and images, and puts reservations back to pools or
//!   warm slots when it drops. Nothing below refers to it.
//! * [`traps`] stands apart; it uses [`reservation`] only for the page
//!   size.
//!
//! The crate knows nothing about WebAssembly operators or the JIT's code
//! layout; the JIT supplies that knowledge through [`CodeLookup`].
//!
//! Linux only (x86_64 and aarch64).
//!
//! # Example
//!
//! ```
//! use faaslet_sfi::{catch_traps, LinearMemory, WASM_PAGE};
//!
//! // One wasm page now, at most 4, inside a 1 GiB reservation.
//! let mut mem = LinearMemory::new(WASM_PAGE, Some(4 * WASM_PAGE), 1 << 30)?;
//! let base = mem.base();
//! mem.as_mut_slice()[0] = 42;
//! mem.grow_to(2 * WASM_PAGE)?;
//! assert_eq!(mem.base(), base); // never moves
//! assert!(mem.grow_to(5 * WASM_PAGE).is_err()); // beyond the maximum
//!
//! // Calls into JIT code go inside `catch_traps`. (Here there is no JIT
//! // code, so nothing traps.) The JIT registers its code with
//! // `register_code(start, end, lookup)` beforehand.
//! let mut seen = 0;
//! let result = catch_traps(|| seen = mem.as_slice()[0]);
//! assert!(result.is_ok());
//! assert_eq!(seen, 42);
//! # Ok::<(), faaslet_sfi::MemoryError>(())
//! ```

#[cfg(not(target_os = "linux"))]
compile_error!("faaslet-sfi supports Linux only");

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("faaslet-sfi supports x86_64 and aarch64 only");

pub mod image;
pub mod interrupt;
pub mod memory;
pub mod pool;
pub mod reservation;
pub mod traps;
pub mod writes;

pub use image::{set_keep_written, ImageError, MemoryImage, KEEP_WRITTEN_LIMIT};
pub use interrupt::{
    current_tid, init_interrupts, interrupt_expired, interrupt_signal, signal_thread, CallSlot,
};
pub use memory::{LinearMemory, MAX_SHARED_SEGMENTS, WASM_PAGE};
pub use pool::ReservationPool;
pub use reservation::{host_page_size, MemoryError, Reservation};
pub use traps::{
    approximate_stack_pointer, call_jit_in, catch_traps, catch_traps_in, init_traps, register_code,
    take_interrupt_pending, CodeLookup, CodeRegistration, Fault, FaultRegions, JitEntry, TrapError,
};
