//! WASI preview1 (`wasi_snapshot_preview1`), independent of the engine.
//!
//! [`WasiCtx`] holds one guest's WASI state: arguments, environment, the
//! descriptor table, and the virtual file system — host directories
//! mounted read-only or read-write at guest paths, plus a private writable
//! scratch directory. Each host call is a plain function taking the context,
//! a [`GuestMemory`](crate::memory::GuestMemory) and the call's wasm
//! arguments, and returning the [`Errno`] to give the guest, or a
//! [`WasiTrap`] (`proc_exit`, or a fatal host error) that ends the call.
//!
//! Paths never leave their mount: each lookup is done by the kernel with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` relative to the
//! directory descriptor, so `..`, absolute paths and symlinks that would
//! escape fail with `EPERM` (as under wasmtime), whatever the guest tries.
//!
//! Rights follow the preview1 specification: a directory holds only the
//! rights that apply to directories, rights only shrink
//! (`fd_fdstat_set_rights`), and a call that needs a dropped right is
//! [`Errno::NotCapable`]. Sockets are listeners the host hands in
//! ([`WasiCtxBuilder::tcp_listener`], wasmtime's `--tcplisten`) and the
//! connections accepted on them; `sock_*` on anything else is
//! [`Errno::NotSock`].

mod calls;
mod ctx;
mod fs;
mod types;

pub use calls::*;
pub use ctx::{
    default_max_open_fds, Input, InterruptProbe, MountMode, Output, WasiCtx, WasiCtxBuilder,
    WasiSetupError, WasiTrap, DEFAULT_CAPTURE_LIMIT,
};
pub use fs::force_manual_resolution;
pub use types::{clockid, fdflags, filetype, fstflags, oflags, rights, Errno};
