//! The HTTP API of a worker (axum over hyper). Every handler validates
//! what the client sent and answers a typed JSON error (`{"error": KIND,
//! "message": ...}`) with a 4xx status for a bad request; guest code runs
//! on the [`Executor`](crate::executor::Executor), never here.
//!
//! | method and path | what |
//! |---|---|
//! | `PUT /f/{user}/{function}[?idempotent=1]` | upload wasm (compiled, Proto-Faaslet made, stored); idempotent: a call lost with another worker may run again |
//! | `GET /f/{user}/{function}` | the uploaded wasm |
//! | `POST /f/{user}/{function}[?async=1]` | call: body = input, response = output |
//! | `POST /` | Faasm's JSON message (`user`, `function`, `input_data`, `async`) |
//! | `PUT /p/{user}/{function}` | upload a Python script (run by CPython, resumed where it first reads stdin); `POST` calls it as `/f/` does: input = stdin, output = stdout, an exception = 500 `exception` with the traceback |
//! | `PUT /js/{user}/{function}` | upload a JavaScript script (run by QuickJS, resumed with the runtime started and the script compiled); `POST` calls it as `/f/` does: input = stdin, output = stdout, an uncaught exception = 500 `exception` with the message and stack in `traceback` |
//! | `GET /status/{id}` | an asynchronous call's status and output (asked of the worker that took it, if another) |
//! | `PUT/GET /s/{user}/{key}` | a state value (PUT sets it here and pushes it to the global tier; GET returns this worker's copy, pulled first if the worker holds none) |
//! | `GET /ping`, `GET /metrics` | liveness; Prometheus metrics |

use crate::faaslet::MAX_CHAIN_DEPTH;
use crate::scheduler::ChainEntry;
use crate::worker::core::{check_name, CallReply, CallStatus, Worker, WorkerError};
use crate::worker::forward::{
    forward, forwarded_headers, ForwardError, CHAIN_DEPTH_HEADER, FUNC_PTR_HEADER, HOPS_HEADER,
};
use crate::worker::language::Language;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde_json::json;
use std::collections::HashMap;
use std::time::Instant;

pub use crate::worker::forward::RETURN_CODE_HEADER;

/// An error answer: a status and a JSON body naming what is wrong.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
}

impl ApiError {
    fn new(status: StatusCode, kind: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": kind, "message": message.to_string() }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

impl From<WorkerError> for ApiError {
    fn from(e: WorkerError) -> ApiError {
        let msg = e.to_string();
        let (status, kind) = match &e {
            WorkerError::BadName { .. } => (StatusCode::BAD_REQUEST, "bad_name"),
            WorkerError::NoSuchFunction { .. } => (StatusCode::NOT_FOUND, "no_such_function"),
            // Past a compile budget the module may well be valid: too
            // costly to compile here is not the same answer as invalid.
            WorkerError::Compile(faaslet::Error::Compile(c))
                if c.kind == faaslet::CompileErrorKind::Budget =>
            {
                (StatusCode::UNPROCESSABLE_ENTITY, "compile_budget")
            }
            // The compile process could not be started or died of
            // something other than its budgets: the worker's fault.
            WorkerError::Compile(faaslet::Error::Resource(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "compile_failed")
            }
            WorkerError::Compile(_) => (StatusCode::BAD_REQUEST, "invalid_module"),
            WorkerError::Init(_) => (StatusCode::BAD_REQUEST, "init_failed"),
            WorkerError::Busy(_) => (StatusCode::TOO_MANY_REQUESTS, "busy"),
            WorkerError::Trap { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "trap"),
            WorkerError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            WorkerError::OutputTooLarge { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "output_too_large")
            }
            WorkerError::Call { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "call_failed"),
            WorkerError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "io"),
            WorkerError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            WorkerError::Cluster(_) => (StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable"),
            WorkerError::Exception { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "exception"),
            WorkerError::Python(_) => (StatusCode::BAD_REQUEST, "python_unavailable"),
            WorkerError::Js(_) => (StatusCode::BAD_REQUEST, "js_unavailable"),
        };
        let mut err = ApiError::new(status, kind, msg);
        match e {
            WorkerError::Trap {
                function,
                kind,
                detail,
                ..
            } => {
                err.body["function"] = json!(function);
                err.body["trap"] = json!(kind);
                err.body["detail"] = json!(detail);
            }
            WorkerError::Timeout { function, timeout } => {
                err.body["function"] = json!(function);
                err.body["timeout_ms"] = json!(timeout.as_millis() as u64);
            }
            WorkerError::BadName { what, name } => {
                err.body["field"] = json!(what);
                err.body["value"] = json!(name);
            }
            WorkerError::Exception {
                function,
                code,
                stderr,
                output,
            } => {
                err.body["function"] = json!(function);
                err.body["exit_code"] = json!(code);
                err.body["traceback"] = json!(stderr);
                err.body["output"] = json!(String::from_utf8_lossy(&output));
            }
            _ => {}
        }
        err
    }
}

fn body_error(r: BytesRejection) -> ApiError {
    let kind = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        "body_too_large"
    } else {
        "bad_body"
    };
    ApiError::new(r.status(), kind, r.body_text())
}

/// The router of `worker`'s API.
pub fn router(worker: Worker) -> Router {
    let limit = worker.config().max_body;
    Router::new()
        .route("/ping", get(|| async { "PONG" }))
        .route("/metrics", get(metrics))
        .route("/", post(faasm_message))
        .route(
            "/f/{user}/{function}",
            put(upload).get(download).post(invoke),
        )
        .route("/p/{user}/{function}", put(upload_python).post(invoke))
        .route("/js/{user}/{function}", put(upload_js).post(invoke))
        .route("/status/{id}", get(status))
        .route("/s/{user}/{key}", put(state_put).get(state_get))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(log))
        .with_state(worker)
}

/// One log line per request.
async fn log(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    tracing::info!(
        %method,
        path,
        status = resp.status().as_u16(),
        micros = start.elapsed().as_micros() as u64,
        "request"
    );
    resp
}

/// Runs `job` on the worker's executor and awaits its result.
async fn on_executor<T: Send + 'static>(
    worker: &Worker,
    job: impl FnOnce(&Worker) -> Result<T, WorkerError> + Send + 'static,
) -> Result<T, WorkerError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let w = worker.clone();
    if let Err(e) = worker.executor().submit(move || {
        let _ = tx.send(job(&w));
    }) {
        worker.metrics().rejected();
        return Err(e.into());
    }
    rx.await.unwrap_or(Err(WorkerError::ShuttingDown))
}

async fn metrics(State(w): State<Worker>) -> Response {
    let text = w.metrics().render(
        w.executor().queued(),
        w.executor().running(),
        w.state().usage(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn upload(
    State(w): State<Worker>,
    Path((user, function)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    check_name("user", &user)?;
    check_name("function", &function)?;
    let idempotent = flag(&q, "idempotent")?;
    let (u, f) = (user.clone(), function.clone());
    on_executor(&w, move |w| w.upload_with(&u, &f, &body, idempotent)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "user": user, "function": function, "idempotent": idempotent })),
    )
        .into_response())
}

async fn upload_python(
    State(w): State<Worker>,
    Path((user, function)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    upload_script(w, Language::Python, user, function, body).await
}

async fn upload_js(
    State(w): State<Worker>,
    Path((user, function)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    upload_script(w, Language::JavaScript, user, function, body).await
}

/// `PUT /p/...` and `PUT /js/...`: a script of `language`, captured on the
/// executor (it runs the interpreter up to the script's first input read).
async fn upload_script(
    w: Worker,
    language: Language,
    user: String,
    function: String,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    check_name("user", &user)?;
    check_name("function", &function)?;
    let (u, f) = (user.clone(), function.clone());
    on_executor(&w, move |w| w.upload_script(language, &u, &f, &body)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "user": user, "function": function, "language": language.key() })),
    )
        .into_response())
}

/// A boolean query parameter: absent, `0` or `false`; `1`, `true` or empty.
fn flag(q: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match q.get(name).map(String::as_str) {
        None | Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") | Some("") => Ok(true),
        Some(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!("{name} must be 0, 1, true or false, not {other:?}"),
        )),
    }
}

async fn download(
    State(w): State<Worker>,
    Path((user, function)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let wasm = blocking_unless_local(&w, &user, &function, || w.wasm(&user, &function))?;
    Ok((
        [(header::CONTENT_TYPE, "application/wasm")],
        Body::from(Bytes::from(wasm)),
    )
        .into_response())
}

fn reply(r: CallReply) -> Response {
    let mut resp = Response::new(Body::from(r.output));
    resp.headers_mut()
        .insert(RETURN_CODE_HEADER, HeaderValue::from(r.return_code));
    resp
}

fn accepted(id: u64) -> Response {
    (StatusCode::ACCEPTED, axum::Json(json!({ "id": id }))).into_response()
}

/// Runs `f` here when `user/function` is held by this worker (no Redis
/// round trip can happen), else in `block_in_place`, since looking it up
/// in the cluster blocks on Redis. `block_in_place` hands this thread's
/// other tasks to another thread: far too costly for every call (it cut a
/// no-op call's throughput by half), so only the rare miss pays it.
fn blocking_unless_local<R>(w: &Worker, user: &str, function: &str, f: impl FnOnce() -> R) -> R {
    if w.cluster().is_none() || w.function(user, function).is_ok() {
        f()
    } else {
        tokio::task::block_in_place(f)
    }
}

/// What a forwarded chained call enters, and its depth in its chain
/// (the entry point at depth 0 for a call from a client).
fn chained(headers: &HeaderMap) -> Result<(ChainEntry, u32), ApiError> {
    let num = |name: &str| -> Result<Option<u32>, ApiError> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Some)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_header",
                        format!("{name} must be a number"),
                    )
                }),
        }
    };
    let entry = num(FUNC_PTR_HEADER)?.map_or(ChainEntry::Main, ChainEntry::Ptr);
    let depth = num(CHAIN_DEPTH_HEADER)?.unwrap_or(0);
    if depth > MAX_CHAIN_DEPTH {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "chain_too_deep",
            format!("chain depth {depth} is past the limit of {MAX_CHAIN_DEPTH}"),
        ));
    }
    Ok((entry, depth))
}

/// How many times a request says it was forwarded (0 without the header).
fn hops(headers: &HeaderMap) -> u32 {
    headers
        .get(HOPS_HEADER)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0)
}

async fn call(
    w: Worker,
    user: String,
    function: String,
    input: Vec<u8>,
    asynchronous: bool,
    hops: u32,
    (entry, depth): (ChainEntry, u32),
) -> Result<Response, ApiError> {
    check_name("user", &user)?;
    check_name("function", &function)?;
    // Every thread here busy: another worker of the cluster takes the
    // call, by the rule of `Cluster::place` (at most one hop; one that
    // cannot be reached is skipped, and with none left the call queues
    // here).
    if hops == 0 {
        let mut body: Option<Bytes> = None;
        while let Some(peer) = w.pick_remote(&user, &function) {
            let path = match asynchronous {
                true => format!("/f/{user}/{function}?async=1"),
                false => format!("/f/{user}/{function}"),
            };
            let body = body
                .get_or_insert_with(|| Bytes::from(input.clone()))
                .clone();
            let sent = forward(
                &peer.addr,
                &path,
                body,
                &forwarded_headers(hops + 1, entry, depth),
                w.forward_timeout(),
            )
            .await;
            if let Some(c) = w.cluster() {
                c.done(&peer.id);
            }
            match sent {
                Ok(resp) if asynchronous && resp.status() == StatusCode::ACCEPTED => {
                    // Accepted there: its status is asked there, through
                    // an id of this worker's.
                    w.metrics().forwarded();
                    let body = axum::body::to_bytes(resp.into_body(), 4096)
                        .await
                        .unwrap_or_default();
                    let remote = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["id"].as_u64())
                        .ok_or_else(|| {
                            ApiError::new(
                                StatusCode::BAD_GATEWAY,
                                "bad_gateway",
                                format!("worker {} accepted the call without an id", peer.addr),
                            )
                        })?;
                    return Ok(accepted(w.remote_call(&peer.addr, remote)));
                }
                Ok(resp) => {
                    w.metrics().forwarded();
                    return Ok(resp);
                }
                Err(e @ ForwardError::NotDelivered { .. }) => {
                    tracing::warn!("{e}; trying elsewhere");
                    if let Some(c) = w.cluster() {
                        c.unreachable(&peer.id);
                    }
                }
                Err(e @ ForwardError::Lost { .. }) => {
                    // Sent, so it may have run there: run again only what
                    // its uploader said may run twice.
                    if !w.idempotent(&user, &function) {
                        return Err(ApiError::new(StatusCode::BAD_GATEWAY, "worker_lost", e));
                    }
                    tracing::warn!("{e}; {user}/{function} is idempotent: running it here");
                    break;
                }
            }
        }
    }
    if asynchronous {
        let id = blocking_unless_local(&w, &user, &function, || {
            w.call_async(&user, &function, input)
        })?;
        return Ok(accepted(id));
    }
    // Fail fast (404, 400) before queueing (a Redis round trip if the
    // function is not held here but may be in the cluster).
    blocking_unless_local(&w, &user, &function, || w.known(&user, &function))?;
    let r = on_executor(&w, move |w| {
        w.call_chained(&user, &function, entry, depth, &input)
    })
    .await?;
    Ok(reply(r))
}

async fn invoke(
    State(w): State<Worker>,
    Path((user, function)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let asynchronous = flag(&q, "async")?;
    call(
        w,
        user,
        function,
        body.to_vec(),
        asynchronous,
        hops(&headers),
        chained(&headers)?,
    )
    .await
}

/// Faasm's invocation message.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    user: String,
    function: String,
    #[serde(default)]
    input_data: String,
    #[serde(default, rename = "async")]
    asynchronous: bool,
}

async fn faasm_message(
    State(w): State<Worker>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let m: Message = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e))?;
    call(
        w,
        m.user,
        m.function,
        m.input_data.into_bytes(),
        m.asynchronous,
        hops(&headers),
        (ChainEntry::Main, 0),
    )
    .await
}

async fn status(State(w): State<Worker>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id: u64 = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_id",
            format!("call id must be a number, not {id:?}"),
        )
    })?;
    let st = w.status(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_call",
            format!("no call {id} (unknown, or its result was dropped)"),
        )
    })?;
    let body = match st {
        CallStatus::Running => json!({ "id": id, "status": "running" }),
        CallStatus::Success(r) => json!({
            "id": id, "status": "success", "return_code": r.return_code,
            "output": String::from_utf8_lossy(&r.output),
        }),
        CallStatus::Failed(msg, out) => json!({
            "id": id, "status": "failed", "message": msg,
            "output": String::from_utf8_lossy(&out),
        }),
        CallStatus::Remote { addr, id: remote } => {
            return remote_status(&w, id, &addr, remote).await;
        }
    };
    Ok(axum::Json(body).into_response())
}

/// The status of this worker's call `id`, which worker `addr` runs as its
/// call `remote`: asked there, and answered with this worker's id.
async fn remote_status(w: &Worker, id: u64, addr: &str, remote: u64) -> Result<Response, ApiError> {
    let lost = |why: String| {
        axum::Json(json!({
            "id": id, "status": "failed", "worker": addr,
            "message": format!("worker {addr}, which took the call, cannot tell its status: {why}"),
            "output": "",
        }))
        .into_response()
    };
    let path = format!("/status/{remote}");
    let asked = crate::worker::forward::get(addr, &path, w.forward_timeout());
    let resp = match asked.await {
        Ok(r) => r,
        Err(e) => return Ok(lost(e.to_string())),
    };
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), w.config().max_output + 4096)
        .await
        .unwrap_or_default();
    let mut v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) if status == StatusCode::OK => v,
        _ => {
            return Ok(lost(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )))
        }
    };
    v["id"] = json!(id);
    v["worker"] = json!(addr);
    Ok(axum::Json(v).into_response())
}

async fn state_put(
    State(w): State<Worker>,
    Path((user, key)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    check_name("user", &user)?;
    check_name("key", &key)?;
    let bad = |e| ApiError::new(StatusCode::BAD_REQUEST, "bad_state", e);
    let state = w.state();
    let value = state.value(&user, &key).map_err(bad)?;
    value.set(&body).map_err(bad)?;
    // The global tier holds the authoritative copy.
    state
        .push(&value, None)
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "state_unavailable", e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn state_get(
    State(w): State<Worker>,
    Path((user, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_name("user", &user)?;
    check_name("key", &key)?;
    let state = w.state();
    let value = state
        .value(&user, &key)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_state", e))?;
    // This worker's copy is what its functions see, pushed or not; a value
    // the worker has never held is fetched from the global tier first.
    if value.is_empty() {
        state
            .pull(&value, None)
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "state_unavailable", e))?;
    }
    let mut bytes = vec![0u8; value.len()];
    let n = value.read_at(0, &mut bytes);
    bytes.truncate(n);
    Ok(bytes.into_response())
}
