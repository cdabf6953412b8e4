//! Proto-Faaslets: snapshots of an initialised instance, restored
//! copy-on-write, and the file they are saved in.
//!
//! A [`Snapshot`] is a sandbox captured right after its initialisation
//! (the exported `_initialize`, a Faasm-style zygote, or any export): the
//! engine's [`InstanceImage`] of its memories, globals and tables. Every
//! later call can start from it in about a microsecond
//! ([`Snapshot::restore`]) instead of instantiating and initialising
//! again, and a warm instance goes back to it after a call
//! ([`Snapshot::reset`]). [`format`](mod@format) turns a snapshot into a versioned,
//! checksummed file bound to its module, so another process, on this host
//! or another, can restore it ([`Snapshot::save`], [`Snapshot::load`]).
//!
//! ```
//! use faaslet::{Engine, Module, Store};
//! use faaslet_snapshot::Snapshot;
//!
//! let engine = Engine::default();
//! let module = Module::new(&engine, r#"(module
//!     (memory (export "memory") 1)
//!     (global $n (mut i32) (i32.const 0))
//!     (func (export "_initialize") (global.set $n (i32.const 40)) (i32.store (i32.const 8) (i32.const 2)))
//!     (func (export "get") (result i32) (i32.add (global.get $n) (i32.load (i32.const 8))))
//!     (func (export "clobber") (global.set $n (i32.const 0)) (i32.store (i32.const 8) (i32.const 0))))"#).unwrap();
//!
//! let mut store = Store::new(&engine, ());
//! let snap = Snapshot::create(&mut store, &module, &[], Some("_initialize")).unwrap();
//!
//! let mut store = Store::new(&engine, ());
//! let inst = snap.restore(&mut store, &[]).unwrap();
//! let get = inst.get_typed_func::<(), i32, _>(&mut store, "get").unwrap();
//! assert_eq!(get.call(&mut store, ()).unwrap(), 42);
//! inst.get_typed_func::<(), (), _>(&mut store, "clobber").unwrap().call(&mut store, ()).unwrap();
//! assert_eq!(get.call(&mut store, ()).unwrap(), 0);
//! snap.reset(&mut store, inst).unwrap();
//! assert_eq!(get.call(&mut store, ()).unwrap(), 42);
//!
//! // Across processes: bytes out, bytes in (checked against the module).
//! let again = Snapshot::from_bytes(&module, &snap.to_bytes().unwrap()).unwrap();
//! let mut store = Store::new(&engine, ());
//! let inst = again.restore(&mut store, &[]).unwrap();
//! assert_eq!(inst.get_typed_func::<(), i32, _>(&mut store, "get").unwrap().call(&mut store, ()).unwrap(), 42);
//! ```
//!
//! [`InstanceImage`]: faaslet::InstanceImage

pub mod format;
mod proto;

pub use format::{fingerprint, FormatError, MemoryRecord, SnapshotFile};
pub use proto::{Snapshot, SnapshotError, DEFAULT_INIT_EXPORTS};
