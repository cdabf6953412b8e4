//! Chaining: the [`Chainer`] trait through which a function starts other
//! function calls and awaits them. The engine implements it (it owns the
//! modules, threads and Faaslets); the host calls only see this interface.

use super::error::FaasmError;
use std::sync::Arc;

/// The outcome of a finished chained call.
#[derive(Debug, Clone)]
pub struct CallResult {
    /// The callee's return code (its exit code, or its function's return
    /// value for calls by pointer); nonzero when it failed or trapped.
    pub return_code: i32,
    /// What the callee wrote with `__faasm_write_output`.
    pub output: Arc<[u8]>,
}

/// Starts and awaits chained calls for one Faaslet. Call ids are nonzero;
/// a Faaslet can only await the calls it started.
pub trait Chainer: Send {
    /// Starts function `name` (another module on this host) with `input`;
    /// returns the call's id.
    fn chain_name(&mut self, name: &str, input: &[u8]) -> Result<u32, FaasmError>;
    /// Starts the function at index `func` of the caller's own function
    /// table, in a new Faaslet of the caller's module; returns the call's id.
    fn chain_ptr(&mut self, func: u32, input: &[u8]) -> Result<u32, FaasmError>;
    /// Blocks until call `id` has finished and returns its result (again on
    /// later awaits of the same id).
    fn await_call(&mut self, id: u32) -> Result<CallResult, FaasmError>;
    /// The calling function's deadline: an await still waiting then gives
    /// up with an error naming the call (default: ignored).
    fn set_deadline(&mut self, _deadline: Option<std::time::Instant>) {}
}

/// A [`Chainer`] that refuses every call, for Faaslets without a host.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoChaining;

impl Chainer for NoChaining {
    fn chain_name(&mut self, name: &str, _input: &[u8]) -> Result<u32, FaasmError> {
        Err(FaasmError::UnknownFunction(name.to_string()))
    }
    fn chain_ptr(&mut self, func: u32, _input: &[u8]) -> Result<u32, FaasmError> {
        Err(FaasmError::UnknownFunction(format!("table entry {func}")))
    }
    fn await_call(&mut self, id: u32) -> Result<CallResult, FaasmError> {
        Err(FaasmError::UnknownCall(id))
    }
}
