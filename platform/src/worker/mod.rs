//! The worker: uploaded functions served over HTTP.
//!
//! * [`Executor`](crate::executor::Executor): the bounded pool of threads
//!   guest code (chained calls too) runs on.
//! * [`metrics`]: counters in the Prometheus text format.
//! * [`core`]: the [`Worker`] (functions, Proto-Faaslets on disk,
//!   deadlines, asynchronous results, per-user state).
//! * [`http`]: the HTTP API; [`server`]: serving it.
//! * [`script`]: script functions, resumed where the script reads stdin;
//!   [`language`]: their languages; [`python`] and [`js`]: Python
//!   (CPython) and JavaScript (QuickJS) functions.
//! * [`cluster`]: membership and shared functions through Redis;
//!   [`forward`]: calls sent to other workers; [`chain`]: chained calls
//!   placed over the cluster.

pub mod chain;
pub mod cluster;
pub mod core;
pub mod forward;
pub mod http;
pub mod js;
pub mod language;
pub mod metrics;
pub mod python;
pub mod script;
pub mod server;

pub use self::core::{CallReply, CallStatus, Worker, WorkerConfig, WorkerError};
pub use self::language::Language;
pub use self::server::{serve_until_signal, Server};
