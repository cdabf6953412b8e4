//! [`FaasletError`]: why a Faaslet could not be created or run.

use faaslet::{Error, Trap};
use faaslet_hostapi::wasi::WasiSetupError;
use faaslet_snapshot::SnapshotError;

/// Why a Faaslet could not be created or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FaasletError {
    /// Compiling, linking or instantiating failed.
    #[error("{0}")]
    Engine(#[from] Error),
    /// Making, reading or restoring a snapshot (Proto-Faaslet) failed.
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    /// The guest trapped (other than by `proc_exit`).
    #[error("trap: {trap}")]
    Trap {
        /// The trap.
        trap: Trap,
        /// Output written before the trap.
        output: Vec<u8>,
    },
    /// The WASI context could not be set up (a mount is missing...).
    #[error("wasi setup: {0}")]
    Wasi(#[from] WasiSetupError),
    /// Resource isolation could not be applied (only in strict mode, or when
    /// the namespace pool is exhausted).
    #[error("isolation: {0}")]
    Isolation(#[from] faaslet_netns::IsolationError),
    /// The module has no entry point this Faaslet knows how to call.
    #[error("module has no entry point: export `_start` () -> () or `main` () -> i32")]
    NoEntry,
    /// A chained call by pointer into a module without `__faasm_call_ptr`
    /// or an exported function table, or to an unusable table entry.
    #[error("cannot call table entry {0}: {1}")]
    BadFuncPtr(u32, String),
    /// A function name that is not a plain file name.
    #[error("invalid function name {0:?}")]
    BadName(String),
    /// No `NAME.wasm` in the function directory.
    #[error("no function {name:?} in {dir}")]
    NoSuchFunction {
        /// The name.
        name: String,
        /// The directory searched.
        dir: String,
    },
    /// A function chained by name could not be looked up (the store it
    /// is published in failed, or its files did not load).
    #[error("looking up function {name:?}: {message}")]
    Lookup {
        /// The name.
        name: String,
        /// What failed.
        message: String,
    },
    /// Reading a function's file failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
}
