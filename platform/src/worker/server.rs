//! Serving a [`Worker`]'s HTTP API: in the foreground until SIGINT or
//! SIGTERM ([`serve_until_signal`]), or in the background ([`Server`],
//! for tests and benchmarks).

use crate::worker::core::Worker;
use crate::worker::http::router;
use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("faaslet-http")
        .enable_all()
        .build()
}

/// Serves `worker` on `listener` until `shutdown` completes, then lets
/// requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    worker: Worker,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(worker))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

/// Binds `addr` and serves `worker` until SIGINT or SIGTERM; `ready` is
/// called with the bound address once it listens.
pub fn serve_until_signal(
    worker: Worker,
    addr: SocketAddr,
    ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        ready(listener.local_addr()?);
        serve(listener, worker.clone(), signal()).await?;
        worker.executor().shutdown();
        Ok(())
    })
}

/// A worker served on a background thread; [`stop`](Server::stop) (or
/// dropping it) shuts it down.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Binds `addr` (port 0: an ephemeral port) and serves `worker`.
    pub fn start(worker: Worker, addr: SocketAddr) -> std::io::Result<Server> {
        Server::start_router(router(worker), addr)
    }

    /// A bare server on the same HTTP stack (runtime, axum, hyper) that
    /// answers every `GET` or `POST /` with `hello`: the peer benchmarks
    /// compare the worker with.
    pub fn hello(addr: SocketAddr) -> std::io::Result<Server> {
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(|| async { "hello" }).post(|| async { "hello" }),
        );
        Server::start_router(app, addr)
    }

    fn start_router(app: axum::Router, addr: SocketAddr) -> std::io::Result<Server> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rt = runtime()?;
        let thread = std::thread::Builder::new()
            .name("faaslet-server".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener)?;
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await
                })
            })?;
        Ok(Server {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish, joins the thread.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
