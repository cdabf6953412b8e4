//! [`ChainScheduler`]: where a Faaslet's chained calls run.
//!
//! A Faaslet on its own runs every chained call on its host (on the
//! [`Executor`](crate::executor::Executor), or a thread of its own). A
//! Faaslet configured with a scheduler ([`FaasletConfig::scheduler`])
//! asks it first: the scheduler finds functions chained by name, and may
//! send a call to another host, where it runs from that host's copy of the
//! function, and hand its result back when it ends. The worker's
//! scheduler is its cluster's (see `worker::chain`); awaiting a call on
//! another host looks the same to the guest as awaiting a local one.
//!
//! ```
//! use faaslet_platform::scheduler::{ChainScheduler, ChainedCall, Complete, RunHere};
//! use faaslet_platform::FaasletError;
//! use faaslet::Module;
//! use faaslet_snapshot::Snapshot;
//!
//! /// Runs every call here and knows no function by name.
//! struct Local;
//!
//! impl ChainScheduler for Local {
//!     fn function(&self, _user: &str, name: &str) -> Result<(Module, Option<Snapshot>), FaasletError> {
//!         Err(FaasletError::BadName(name.to_string()))
//!     }
//!     fn offload(&self, _call: ChainedCall, _complete: Complete, here: RunHere) -> Result<(), RunHere> {
//!         Err(here)
//!     }
//! }
//! ```
//!
//! [`FaasletConfig::scheduler`]: crate::FaasletConfig::scheduler

use crate::error::FaasletError;
use faaslet::Module;
use faaslet_hostapi::faasm::CallResult;
use faaslet_snapshot::Snapshot;
use std::sync::Arc;

/// What a chained call enters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainEntry {
    /// The function's entry point (a call by name).
    Main,
    /// The function at this index of the module's table (a call by
    /// pointer, into the caller's own function).
    Ptr(u32),
}

/// A chained call, as offered to a [`ChainScheduler`].
#[derive(Debug, Clone)]
pub struct ChainedCall {
    /// The user the call runs as (the caller's).
    pub user: String,
    /// The function: the callee's name, or the caller's own for a call by
    /// pointer.
    pub function: String,
    /// What it enters.
    pub entry: ChainEntry,
    /// Its input.
    pub input: Arc<[u8]>,
    /// Its depth in the chain (the caller's plus one): a host that runs
    /// it refuses chains deeper than [`MAX_CHAIN_DEPTH`](crate::faaslet::MAX_CHAIN_DEPTH).
    pub depth: u32,
}

/// Delivers a call's result to the Faaslet awaiting it.
pub type Complete = Box<dyn FnOnce(CallResult) + Send>;

/// Runs a call on this host (queued on its executor) and delivers its
/// result itself.
pub type RunHere = Box<dyn FnOnce() + Send>;

/// Where a Faaslet's chained calls run, and how functions chained by name
/// are found.
pub trait ChainScheduler: Send + Sync {
    /// `user`'s function `name`, for a call by name: its module and the
    /// Proto-Faaslet its calls start from, if it has one. An unknown or
    /// invalid name is an error (the guest's chain call then fails).
    fn function(&self, user: &str, name: &str) -> Result<(Module, Option<Snapshot>), FaasletError>;

    /// Offers `call` to another host. `Err(here)` hands the call back to
    /// run on this host as usual. `Ok(())` means the scheduler took it and
    /// will, exactly once, either call `complete` with its result (from
    /// the other host, or a failed result naming why it was lost) or, if
    /// the call never started elsewhere, run `here` on this host (which
    /// delivers the result itself). Must not block on the network: it is
    /// called from guest code.
    fn offload(&self, call: ChainedCall, complete: Complete, here: RunHere) -> Result<(), RunHere>;
}
