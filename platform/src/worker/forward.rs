//! Forwarding a call to another worker of the cluster over HTTP (hyper's
//! HTTP/1 client on a kept-alive connection), and relaying its answer as
//! it is.
//!
//! A forwarded request carries [`HOPS_HEADER`]; a worker that receives a
//! call with hops runs it itself (or queues it), so a call moves at most
//! once and never bounces between busy workers.

use crate::scheduler::ChainEntry;
use axum::body::{Body, Bytes};
use axum::response::Response;
use http_body_util::BodyExt;
use std::time::Duration;

/// The header counting how many times a call was forwarded.
pub const HOPS_HEADER: &str = "x-faaslet-hops";

/// How long connecting to another worker may take before it is given up
/// (and the call tried elsewhere, or run here).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a forward failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The request never reached the other worker (no connection, no
    /// handshake): the call did not start there and can run elsewhere.
    #[error("could not reach worker {addr}: {why}")]
    NotDelivered {
        /// The worker it was sent to.
        addr: String,
        /// What failed.
        why: String,
    },
    /// The request was sent but no complete answer came back: the call
    /// may have run there, so it is not run again.
    #[error("lost worker {addr} during the call: {why}")]
    Lost {
        /// The worker it was sent to.
        addr: String,
        /// What failed.
        why: String,
    },
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>;

/// Idle keep-alive connections to other workers, by address (at most
/// [`IDLE_PER_PEER`] each): a forward reuses one instead of connecting.
static IDLE: std::sync::Mutex<Vec<(String, Sender)>> = std::sync::Mutex::new(Vec::new());

/// Idle connections kept per worker.
pub const IDLE_PER_PEER: usize = 32;

fn idle() -> std::sync::MutexGuard<'static, Vec<(String, Sender)>> {
    IDLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// An idle connection to `addr` that can take a request, or a new one.
async fn connection(addr: &str) -> Result<Sender, ForwardError> {
    let fail = |why: String| ForwardError::NotDelivered {
        addr: addr.to_string(),
        why,
    };
    loop {
        let found = {
            let mut pool = idle();
            pool.iter()
                .rposition(|(a, _)| a == addr)
                .map(|i| pool.swap_remove(i).1)
        };
        match found {
            Some(s) if s.is_ready() => return Ok(s),
            // Closed by the other side: drop it, try the next.
            Some(_) => continue,
            None => break,
        }
    }
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| fail(format!("no connection within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The header carrying a call's return code.
pub const RETURN_CODE_HEADER: &str = "x-faaslet-return-code";

/// The headers of a call forwarded with `hops`, entering `entry` at `depth`.
pub fn forwarded_headers(hops: u32, entry: ChainEntry, depth: u32) -> Vec<(&'static str, String)> {
    let mut h = vec![
        (HOPS_HEADER, hops.to_string()),
        (CHAIN_DEPTH_HEADER, depth.to_string()),
    ];
    if let ChainEntry::Ptr(func) = entry {
        h.push((FUNC_PTR_HEADER, func.to_string()));
    }
    h
}

/// The header naming the table index a forwarded chained call by pointer
/// enters (absent: the function's entry point).
pub const FUNC_PTR_HEADER: &str = "x-faaslet-func-ptr";

/// The header carrying a forwarded chained call's depth in its chain.
pub const CHAIN_DEPTH_HEADER: &str = "x-faaslet-chain-depth";

/// Sends `POST path` with `body` and `headers` to the worker at `addr`,
/// and returns its response (status, headers and body as the worker sent
/// them). Keep-alive connections are reused. No complete answer within
/// `timeout` is [`ForwardError::Lost`].
pub async fn forward(
    addr: &str,
    path: &str,
    body: Bytes,
    headers: &[(&'static str, String)],
    timeout: Duration,
) -> Result<Response, ForwardError> {
    send(addr, hyper::Method::POST, path, body, headers, timeout).await
}

/// `GET path` from the worker at `addr` (as [`forward`] sends a `POST`).
pub async fn get(addr: &str, path: &str, timeout: Duration) -> Result<Response, ForwardError> {
    send(addr, hyper::Method::GET, path, Bytes::new(), &[], timeout).await
}

async fn send(
    addr: &str,
    method: hyper::Method,
    path: &str,
    body: Bytes,
    headers: &[(&'static str, String)],
    timeout: Duration,
) -> Result<Response, ForwardError> {
    let fail = |why: String| ForwardError::NotDelivered {
        addr: addr.to_string(),
        why,
    };
    let lost = |why: String| ForwardError::Lost {
        addr: addr.to_string(),
        why,
    };
    let mut sender = connection(addr).await?;
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let req = req
        .body(http_body_util::Full::new(body))
        .map_err(|e| fail(e.to_string()))?;
    let exchange = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| lost(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        // The other worker has answered: from here a failure is its answer's.
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| lost(format!("reading the answer: {e}")))?;
        Ok::<_, ForwardError>((parts, bytes))
    };
    let (parts, bytes) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| lost(format!("no answer within {timeout:?}")))??;
    {
        let mut pool = idle();
        if pool.iter().filter(|(a, _)| a == addr).count() < IDLE_PER_PEER {
            pool.push((addr.to_string(), sender));
        }
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}
