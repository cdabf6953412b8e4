//! The worker's [`ChainScheduler`]: chained calls go through the same
//! placement rule as calls from clients ([`Cluster::place`]), so a fan-out
//! spreads over the cluster, and a parent awaits a call on another worker
//! as it awaits a local one, output included.
//!
//! A call placed elsewhere is sent as `POST /f/{user}/{function}` with
//! [`HOPS_HEADER`] 1 (the worker that gets it runs it, never forwards it
//! again), [`CHAIN_DEPTH_HEADER`] (so the chain's depth limit holds
//! across hosts) and, for a call by pointer, [`FUNC_PTR_HEADER`]. The
//! request goes out on the worker's forwarding runtime (one thread of
//! tokio, made when the worker joins a cluster): the guest's thread never
//! blocks on the network.
//!
//! What happens when the other worker fails:
//!
//! | what | the call |
//! |---|---|
//! | no connection, or 429 / 503 (queue full, shutting down) | never started there: runs here |
//! | sent, then the worker died or did not answer within the deadline | failed (return code [`FAILED_CALL`]), logged naming the lost worker; not run again, since it may have run there, unless the function was uploaded as idempotent: then it runs again here |
//! | the worker answered with an error (trap, timeout, no such function) | failed, logged with the worker's message |
//!
//! [`Cluster::place`]: super::cluster::Cluster::place
//! [`HOPS_HEADER`]: super::forward::HOPS_HEADER
//! [`CHAIN_DEPTH_HEADER`]: super::forward::CHAIN_DEPTH_HEADER
//! [`FUNC_PTR_HEADER`]: super::forward::FUNC_PTR_HEADER
//! [`FAILED_CALL`]: crate::FAILED_CALL

use crate::error::FaasletError;
use crate::executor::Executor;
use crate::scheduler::{ChainScheduler, ChainedCall, Complete, RunHere};
use crate::worker::cluster::{Cluster, Member};
use crate::worker::forward::{forward, forwarded_headers, ForwardError, RETURN_CODE_HEADER};
use axum::body::Bytes;
use faaslet::Module;
use faaslet_hostapi::faasm::CallResult;
use faaslet_snapshot::Snapshot;
use http_body_util::BodyExt;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// What the scheduler needs of its worker (the worker implements it; the
/// scheduler holds it weakly, since the worker's Faaslet template holds
/// the scheduler).
pub(crate) trait ChainHost: Send + Sync {
    /// `user/name` as chained by name: held here or fetched from the
    /// cluster.
    fn lookup(
        self: Arc<Self>,
        user: &str,
        name: &str,
    ) -> Result<(Module, Option<Snapshot>), FaasletError>;
    /// Where a call that would run here goes instead, if anywhere, with
    /// the cluster and the runtime to send it on.
    fn place(
        &self,
        user: &str,
        function: &str,
    ) -> Option<(Member, Arc<Cluster>, tokio::runtime::Handle)>;
    /// Counts a chained call placed here or forwarded.
    fn record(&self, forwarded: bool);
    /// Whether `user/function` is marked idempotent.
    fn idempotent(&self, user: &str, function: &str) -> bool;
    /// The executor calls run on.
    fn executor(&self) -> &Arc<Executor>;
    /// How long a forwarded call may take (see `Worker::forward_timeout`).
    fn forward_timeout(&self) -> Duration;
}

/// The scheduler of one worker's Faaslets.
pub(crate) struct WorkerScheduler {
    pub(crate) host: Weak<dyn ChainHost>,
}

fn failed() -> CallResult {
    CallResult {
        return_code: crate::FAILED_CALL,
        output: Arc::from(&[][..]),
    }
}

impl ChainScheduler for WorkerScheduler {
    fn function(&self, user: &str, name: &str) -> Result<(Module, Option<Snapshot>), FaasletError> {
        if !crate::valid_function_name(name) {
            return Err(FaasletError::BadName(name.to_string()));
        }
        let host = self.host.upgrade().ok_or_else(|| FaasletError::Lookup {
            name: name.to_string(),
            message: "the worker is shutting down".into(),
        })?;
        host.lookup(user, name)
    }

    fn offload(&self, call: ChainedCall, complete: Complete, here: RunHere) -> Result<(), RunHere> {
        let Some(host) = self.host.upgrade() else {
            return Err(here);
        };
        let Some((peer, cluster, rt)) = host.place(&call.user, &call.function) else {
            host.record(false);
            return Err(here);
        };
        host.record(true);
        let headers = forwarded_headers(1, call.entry, call.depth);
        let path = format!("/f/{}/{}", call.user, call.function);
        let what = format!("chained call to {}/{}", call.user, call.function);
        let body = Bytes::copy_from_slice(&call.input);
        let timeout = host.forward_timeout();
        rt.spawn(async move {
            let sent = forward(&peer.addr, &path, body, &headers, timeout).await;
            cluster.done(&peer.id);
            let resp = match sent {
                Ok(resp) => resp,
                Err(e @ ForwardError::NotDelivered { .. }) => {
                    tracing::warn!("{what}: {e}; running it here");
                    cluster.unreachable(&peer.id);
                    return run_here(host.executor(), here);
                }
                Err(e @ ForwardError::Lost { .. }) => {
                    if host.idempotent(&call.user, &call.function) {
                        tracing::warn!("{what}: {e}; idempotent, so running it again here");
                        return run_here(host.executor(), here);
                    }
                    tracing::error!("{what} failed: {e}");
                    return complete(failed());
                }
            };
            let status = resp.status();
            let rc = resp
                .headers()
                .get(RETURN_CODE_HEADER)
                .and_then(|v| v.to_str().ok()?.parse::<i32>().ok());
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            match (status.as_u16(), rc) {
                (200, Some(rc)) => complete(CallResult {
                    return_code: rc,
                    output: Arc::from(&bytes[..]),
                }),
                // Refused before it started: the queue there was full, or
                // that worker is stopping.
                (429 | 503, _) => {
                    tracing::warn!(
                        "{what}: worker {} refused it ({status}); running it here",
                        peer.addr
                    );
                    run_here(host.executor(), here)
                }
                _ => {
                    tracing::warn!(
                        "{what} failed on worker {} ({status}): {}",
                        peer.addr,
                        String::from_utf8_lossy(&bytes[..bytes.len().min(512)])
                    );
                    complete(failed())
                }
            }
        });
        Ok(())
    }
}

/// Runs `here` on the worker's executor (on a thread of its own if the
/// queue is full: the call is never dropped).
fn run_here(executor: &Executor, here: RunHere) {
    if let Err(here) = executor.try_submit(here) {
        let spawned = std::thread::Builder::new()
            .name("faaslet-chained".into())
            .stack_size(8 << 20)
            .spawn(here);
        if let Err(e) = spawned {
            tracing::error!("cannot run a chained call here: {e}");
        }
    }
}
