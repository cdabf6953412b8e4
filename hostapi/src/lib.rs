//! Host interfaces for faaslet guests, independent of the engine.
//!
//! This crate sees a guest's linear memory as a byte slice (through the
//! bounds-checked [`memory::GuestMemory`]) and implements host calls on top
//! of it: [`wasi`] is WASI preview1 (`wasi_snapshot_preview1`) over a
//! virtual file system of mounted host directories. The engine (`faaslet`)
//! registers these functions with its linker; this crate never depends on
//! the engine or the JIT.
//!
//! ```
//! use faaslet_hostapi::memory::GuestMemory;
//! use faaslet_hostapi::wasi::{self, Errno, Output, WasiCtx};
//!
//! let mut ctx = WasiCtx::builder().stdout(Output::Capture).build().unwrap();
//! let mut bytes = vec![0u8; 64];
//! let mut mem = GuestMemory::new(&mut bytes);
//! // "hi\n" at 16, one iovec {16, 3} at 0.
//! mem.write_bytes(16, b"hi\n").unwrap();
//! mem.write_u32(0, 16).unwrap();
//! mem.write_u32(4, 3).unwrap();
//! assert_eq!(wasi::fd_write(&mut ctx, &mut mem, 1, 0, 1, 8).unwrap(), Errno::Success);
//! assert_eq!(mem.read_u32(8).unwrap(), 3);
//! assert_eq!(ctx.stdout_bytes(), b"hi\n");
//! // A garbage pointer is an errno, not a fault.
//! assert_eq!(wasi::fd_write(&mut ctx, &mut mem, 1, 0xffff_fff0, 1, 8).unwrap(), Errno::Fault);
//! ```
#![warn(missing_docs)]

pub mod faasm;
pub mod memory;
pub mod wasi;
