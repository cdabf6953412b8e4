//! WASI preview1 for faaslet guests: links `wasi_snapshot_preview1` to the
//! engine-agnostic implementation in [`faaslet_hostapi::wasi`].
//!
//! The store's data gives access to a [`WasiCtx`] through [`WasiView`];
//! [`add_to_linker`] defines every preview1 function. A guest's `proc_exit`
//! ends the call with a [`TrapKind::Host`] trap whose code [`exit_code`]
//! recovers.
//!
//! ```
//! use faaslet::{Engine, Linker, Module, Store};
//! use faaslet_platform::wasi::{self, WasiCtx, WasiView};
//! use faaslet_hostapi::wasi::Output;
//!
//! struct Host { wasi: WasiCtx }
//! impl WasiView for Host { fn wasi(&mut self) -> &mut WasiCtx { &mut self.wasi } }
//!
//! let engine = Engine::default();
//! let module = Module::new(&engine, r#"(module
//!   (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
//!   (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
//!   (memory (export "memory") 1)
//!   (data (i32.const 16) "hello\n")
//!   (func (export "_start")
//!     (i32.store (i32.const 0) (i32.const 16))
//!     (i32.store (i32.const 4) (i32.const 6))
//!     (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
//!     (call $exit (i32.const 3))))"#).unwrap();
//! let mut linker = Linker::new(&engine);
//! wasi::add_to_linker(&mut linker).unwrap();
//! let ctx = WasiCtx::builder().stdout(Output::Capture).build().unwrap();
//! let mut store = Store::new(&engine, Host { wasi: ctx });
//! let instance = linker.instantiate(&mut store, &module).unwrap();
//! let start = instance.get_typed_func::<(), (), _>(&mut store, "_start").unwrap();
//! let trap = start.call(&mut store, ()).unwrap_err();
//! assert_eq!(wasi::exit_code(&trap), Some(3));
//! assert_eq!(store.data().wasi.stdout_bytes(), b"hello\n");
//! ```

use faaslet::{Caller, Error, Linker, Trap, TrapKind};
use faaslet_hostapi::memory::GuestMemory;
use faaslet_hostapi::wasi as w;
pub use faaslet_hostapi::wasi::WasiCtx;
use faaslet_hostapi::wasi::{Errno, WasiTrap};

/// Store data that holds a [`WasiCtx`].
pub trait WasiView {
    /// The WASI context of this store.
    fn wasi(&mut self) -> &mut WasiCtx;

    /// What the host does at the store's first read of stdin (see
    /// [`at_input`](crate::at_input)); `None`: nothing special.
    fn at_input(&mut self) -> Option<&mut crate::at_input::AtInput> {
        None
    }
}

/// The module name of WASI preview1.
pub const MODULE: &str = "wasi_snapshot_preview1";

const EXIT_PREFIX: &str = "wasi exit: ";

/// The exit code if `trap` is a guest's `proc_exit`.
pub fn exit_code(trap: &Trap) -> Option<i32> {
    if trap.kind != TrapKind::Host {
        return None;
    }
    trap.message
        .as_deref()?
        .strip_prefix(EXIT_PREFIX)?
        .parse()
        .ok()
}

fn to_trap(t: WasiTrap) -> Trap {
    match t {
        WasiTrap::Exit(code) => Trap::host(format!("{EXIT_PREFIX}{code}")),
        WasiTrap::Fatal(m) => Trap::host(format!("wasi: {m}")),
        WasiTrap::Interrupted => Trap::new(faaslet::TrapKind::Interrupted),
    }
}

fn finish(r: Result<Errno, WasiTrap>) -> Result<i32, Trap> {
    match r {
        Ok(e) => Ok(e.raw() as i32),
        Err(t) => Err(to_trap(t)),
    }
}

/// Runs a WASI call with the store's context and the caller's memory 0. A
/// guest without a memory gets `EFAULT` for calls that touch memory (an
/// empty memory has no valid pointer).
#[inline]
fn with<T: WasiView>(
    caller: &mut Caller<'_, T>,
    f: impl FnOnce(&mut WasiCtx, &mut GuestMemory<'_>) -> Result<Errno, WasiTrap>,
) -> Result<i32, Trap> {
    let (data, mem) = caller.data_and_memory_raw();
    let mut gm = guest_memory(mem);
    finish(f(data.wasi(), &mut gm))
}

/// The host calls' view of a caller's memory 0 (or an empty one): raw, as
/// other threads may write it (shared memories, mapped state).
pub(crate) fn guest_memory<'a>(raw: Option<(*mut u8, usize)>) -> GuestMemory<'a> {
    match raw {
        // SAFETY: the engine's memory base never moves, its first `len`
        // bytes stay mapped read-write while the store lives, and the
        // view lives only inside one host call, during which the store
        // (borrowed by the `Caller`) cannot be reset or dropped; the view
        // accesses the bytes only by raw copies.
        Some((base, len)) => unsafe { GuestMemory::from_raw(base, len) },
        None => GuestMemory::new(&mut []),
    }
}

/// `fd_read`, where a program is captured at its first read of stdin, or
/// resumed there (see [`at_input`](crate::at_input)).
fn fd_read<T: WasiView>(
    mut c: Caller<'_, T>,
    fd: u32,
    iovs: u32,
    n: u32,
    nread: u32,
) -> Result<i32, Trap> {
    use crate::at_input::{self, AtInput};
    if fd == 0 {
        match c.data_mut().at_input().map(|a| a.clone()) {
            Some(AtInput::Capture(None)) => {
                let buffer = at_input::start_unwind(&mut c)?;
                if let Some(a) = c.data_mut().at_input() {
                    *a = AtInput::Capture(Some(buffer));
                }
                // Ignored: the code is unwinding.
                return Ok(0);
            }
            Some(AtInput::Resume) => {
                at_input::stop_rewind(&mut c)?;
                if let Some(a) = c.data_mut().at_input() {
                    *a = AtInput::Off;
                }
            }
            _ => {}
        }
    }
    with(&mut c, |ctx, mem| w::fd_read(ctx, mem, fd, iovs, n, nread))
}

/// `poll_oneoff` may block: it asks the store's deadline every few
/// milliseconds, so epoch timeouts and interrupt handles end a sleeping
/// guest too.
fn poll_oneoff<T: WasiView>(
    mut c: Caller<'_, T>,
    a: u32,
    b: u32,
    n: u32,
    d: u32,
) -> Result<i32, Trap> {
    if !c.data_mut().wasi().has_interrupt_probe() {
        let handle = c.interrupt_handle();
        c.data_mut()
            .wasi()
            .set_interrupt_probe(Some(std::sync::Arc::new(move || handle.deadline_reached())));
    }
    with(&mut c, |ctx, mem| w::poll_oneoff(ctx, mem, a, b, n, d))
}

macro_rules! link {
    ($linker:ident; $($name:ident($($a:ident: $t:ty),*);)*) => {$(
        $linker.func_wrap(MODULE, stringify!($name),
            |mut c: Caller<'_, T>, $($a: $t),*| -> Result<i32, Trap> {
                with(&mut c, |ctx, mem| w::$name(ctx, mem, $($a),*))
            })?;
    )*};
}

/// Defines every `wasi_snapshot_preview1` function in `linker`.
pub fn add_to_linker<T: WasiView + 'static>(linker: &mut Linker<T>) -> Result<(), Error> {
    linker.func_wrap(MODULE, "poll_oneoff", poll_oneoff::<T>)?;
    linker.func_wrap(MODULE, "fd_read", fd_read::<T>)?;
    link!(linker;
        args_get(a: u32, b: u32);
        args_sizes_get(a: u32, b: u32);
        environ_get(a: u32, b: u32);
        environ_sizes_get(a: u32, b: u32);
        clock_res_get(a: u32, b: u32);
        clock_time_get(a: u32, b: u64, c: u32);
        fd_advise(a: u32, b: u64, c: u64, d: u32);
        fd_allocate(a: u32, b: u64, c: u64);
        fd_close(a: u32);
        fd_datasync(a: u32);
        fd_fdstat_get(a: u32, b: u32);
        fd_fdstat_set_flags(a: u32, b: u32);
        fd_fdstat_set_rights(a: u32, b: u64, c: u64);
        fd_filestat_get(a: u32, b: u32);
        fd_filestat_set_size(a: u32, b: u64);
        fd_filestat_set_times(a: u32, b: u64, c: u64, d: u32);
        fd_pread(a: u32, b: u32, c: u32, d: u64, e: u32);
        fd_prestat_get(a: u32, b: u32);
        fd_prestat_dir_name(a: u32, b: u32, c: u32);
        fd_pwrite(a: u32, b: u32, c: u32, d: u64, e: u32);
        fd_readdir(a: u32, b: u32, c: u32, d: u64, e: u32);
        fd_renumber(a: u32, b: u32);
        fd_seek(a: u32, b: i64, c: u32, d: u32);
        fd_sync(a: u32);
        fd_tell(a: u32, b: u32);
        fd_write(a: u32, b: u32, c: u32, d: u32);
        path_create_directory(a: u32, b: u32, c: u32);
        path_filestat_get(a: u32, b: u32, c: u32, d: u32, e: u32);
        path_filestat_set_times(a: u32, b: u32, c: u32, d: u32, e: u64, f: u64, g: u32);
        path_link(a: u32, b: u32, c: u32, d: u32, e: u32, f: u32, g: u32);
        path_open(a: u32, b: u32, c: u32, d: u32, e: u32, f: u64, g: u64, h: u32, i: u32);
        path_readlink(a: u32, b: u32, c: u32, d: u32, e: u32, f: u32);
        path_remove_directory(a: u32, b: u32, c: u32);
        path_rename(a: u32, b: u32, c: u32, d: u32, e: u32, f: u32);
        path_symlink(a: u32, b: u32, c: u32, d: u32, e: u32);
        path_unlink_file(a: u32, b: u32, c: u32);
        proc_raise(a: u32);
        sched_yield();
        random_get(a: u32, b: u32);
        sock_accept(a: u32, b: u32, c: u32);
        sock_recv(a: u32, b: u32, c: u32, d: u32, e: u32, f: u32);
        sock_send(a: u32, b: u32, c: u32, d: u32, e: u32);
        sock_shutdown(a: u32, b: u32);
    );
    // proc_exit returns nothing.
    linker.func_wrap(
        MODULE,
        "proc_exit",
        |mut c: Caller<'_, T>, code: u32| -> Result<(), Trap> {
            with(&mut c, |ctx, mem| w::proc_exit(ctx, mem, code)).map(|_| ())
        },
    )?;
    Ok(())
}
