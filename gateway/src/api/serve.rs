//! Serving a port's HTTP service on a listener with the limits every port needs against hostile or broken clients,
//! and the phases of a graceful shutdown. (`axum::serve` has neither: a client that sends half a header, or idles on a
//! keep-alive connection, holds a file descriptor for ever, and enough of them take the process down.)
//!
//! - A header-read timeout: a request's head must arrive within `server.header_read_timeout_ms`, counted from the
//!   moment the connection waits for it, so a keep-alive connection idle that long is closed too. Its timer is a
//!   [`HeadTimer`]: one timer entry per connection, not one per request.
//! - A bound on open connections (`server.max_connections`). Past it a new connection is refused early and
//!   counted: it gets one short answer (`503`, or `200` for the live probe, so an orchestrator does not restart a
//!   replica that is only busy) and is closed. Those answers are themselves bounded; beyond, the socket is closed.
//! - Request heads are bounded in size; bodies are bounded by each route.
//! - With TLS, the handshake runs in the connection's own task under the header-read timeout, with the listener's
//!   config current at accept ([`ServerTls`]: rotated certificates apply to new connections). The gRPC port gets
//!   the same handshake through [`tls_incoming`], with a bound on handshakes in progress.
//! - Shutdown in [`Phase`]s: while `Draining`, every answer carries `Connection: close` so clients move to another
//!   replica (readiness already fails); at `Closing` the listener stops accepting and each connection is shut down
//!   gracefully: its request in flight finishes, then it closes.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::Request as HttpRequest;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower::Service;
use tower::util::MapResponse;

use crate::api::head_timer::HeadTimer;
use crate::metrics::TlsMetrics;
use crate::tls::{Reload, ServerTls};

/// Where the gateway is in its life; servers and probes watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    /// Shutdown requested: readiness fails and answers carry `Connection: close`; requests are still served.
    Draining,
    /// Stop accepting; finish what is in flight and close.
    Closing,
}

/// Connection limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// The listener's connection gauges.
#[derive(Debug, Clone)]
pub struct ConnMetrics {
    pub open: IntGauge,
    pub refused: IntCounter,
}

/// A listener's TLS and its metrics; `None` serves plain text.
pub type Tls = Option<(Arc<ServerTls>, TlsMetrics)>;

/// Largest request head (request line and headers) a connection may send.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Connections past the limit that may be waiting for their one refusal at once; beyond, they are closed at once.
const MAX_REFUSING: usize = 256;

/// How long a refused connection may take to send the one request it gets an answer to.
const REFUSAL_HEAD_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves `app` (an axum router, or the inference port's dispatcher in front of one) on `listener` until the phase
/// reaches `Closing` and every connection has finished. `draining` is set together with the `Draining` phase (the
/// core's flag, which readiness reads too).
pub async fn serve<A>(
    listener: TcpListener,
    app: A,
    limits: ConnLimits,
    phase: watch::Receiver<Phase>,
    draining: Arc<AtomicBool>,
    metrics: ConnMetrics,
    tls: Tls,
) -> std::io::Result<()>
where
    A: Service<HttpRequest<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    A::Future: Send + 'static,
{
    let addr = listener.local_addr()?;
    // Around the whole router rather than `Router::layer`, which would box every route once more per request. The
    // answers read the draining flag rather than the phase: borrowing a `watch` value takes its lock, a write to a
    // cache line every worker shares, on every answer.
    let app =
        MapResponse::new(app, move |r: Response| if draining.load(Ordering::Relaxed) { with_close(r) } else { r });
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let mut conns = JoinSet::new();
    let closing = {
        let mut phase = phase.clone();
        async move {
            let _ = phase.wait_for(|p| *p == Phase::Closing).await;
        }
    };
    tokio::pin!(closing);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut closing => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors (or a connection reset before accept): back off instead of spinning.
                tracing::warn!(%addr, error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match open.clone().try_acquire_owned() {
            Ok(permit) => {
                let (app, phase, gauge) = (app.clone(), phase.clone(), metrics.open.clone());
                let timeout = limits.header_read_timeout;
                let tls = tls.clone();
                conns.spawn(async move {
                    gauge.inc();
                    if let Some(stream) = handshake(stream, &tls, timeout).await {
                        match stream {
                            Stream::Plain(s) => connection(s, app, timeout, phase, permit).await,
                            Stream::Tls(s) => connection(*s, app, timeout, phase, permit).await,
                        }
                    }
                    gauge.dec();
                });
            }
            Err(_) => {
                metrics.refused.inc();
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    let (tls, max) = (tls.clone(), limits.max_connections);
                    conns.spawn(async move {
                        match handshake(stream, &tls, REFUSAL_HEAD_TIMEOUT).await {
                            Some(Stream::Plain(s)) => refuse(s, max, permit).await,
                            Some(Stream::Tls(s)) => refuse(*s, max, permit).await,
                            None => {}
                        }
                    });
                }
            }
        }
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
    Ok(())
}

fn builder(header_read_timeout: Duration) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(HeadTimer::default()).header_read_timeout(header_read_timeout).max_buf_size(MAX_HEAD_BYTES);
    b
}

/// A connection after its handshake.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// The TLS handshake, if the listener has TLS, within `timeout`; a failure is counted and closes the connection.
async fn handshake(stream: TcpStream, tls: &Tls, timeout: Duration) -> Option<Stream> {
    let Some((tls, metrics)) = tls else { return Some(Stream::Plain(stream)) };
    match tokio::time::timeout(timeout, tls.acceptor().accept(stream)).await {
        Ok(Ok(s)) => Some(Stream::Tls(Box::new(s))),
        Ok(Err(e)) => {
            metrics.handshake_failures.inc();
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            metrics.handshake_failures.inc();
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

async fn connection<S, A>(
    stream: S,
    app: A,
    header_read_timeout: Duration,
    mut phase: watch::Receiver<Phase>,
    _permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Service<HttpRequest<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    A::Future: Send + 'static,
{
    let conn = builder(header_read_timeout).serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let closing = async move {
        let _ = phase.wait_for(|p| *p == Phase::Closing).await;
    };
    tokio::select! {
        r = conn.as_mut() => log_end(r),
        _ = closing => {
            // Finishes the request in flight (if any), then closes; an idle connection closes at once.
            conn.as_mut().graceful_shutdown();
            log_end(conn.await);
        }
    }
}

fn log_end(r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        // Timeouts and resets are the client's business; nothing to act on here.
        tracing::debug!(error = %e, "connection ended");
    }
}

/// One answer for a connection past the limit: the live probe still answers, everything else is 503.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    max: usize,
    _permit: OwnedSemaphorePermit,
) {
    let app = Router::new()
        .route("/v2/health/live", axum::routing::get(|| async { axum::Json(serde_json::json!({ "live": true })) }))
        .fallback(move || async move {
            let msg = format!("too many open connections (server.max_connections = {max}); retry later");
            let mut r =
                (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({ "error": msg }))).into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        })
        .layer(middleware::from_fn(|req: Request, next: Next| async move { with_close(next.run(req).await) }));
    let conn = builder(REFUSAL_HEAD_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    let _ = tokio::time::timeout(REFUSAL_HEAD_TIMEOUT * 2, conn).await;
}

fn with_close(mut r: Response) -> Response {
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// TLS handshakes the gRPC port runs at once; connections beyond wait in the accept queue.
const MAX_HANDSHAKES: usize = 256;

/// The gRPC port's connections after their TLS handshake, for tonic (which serves HTTP/2 on them). Each handshake
/// runs in its own task within `timeout`, at most [`MAX_HANDSHAKES`] at once; the stream ends at `Closing`.
pub fn tls_incoming(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    metrics: TlsMetrics,
    timeout: Duration,
    mut phase: watch::Receiver<Phase>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(MAX_HANDSHAKES);
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        loop {
            // Waiting for a handshake slot first leaves the surplus in the kernel's accept queue.
            let permit = tokio::select! {
                p = handshakes.clone().acquire_owned() => p,
                _ = phase.wait_for(|p| *p == Phase::Closing) => break,
            };
            let Ok(permit) = permit else { break };
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = phase.wait_for(|p| *p == Phase::Closing) => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a gRPC connection");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (tx, acceptor, metrics) = (tx.clone(), tls.acceptor(), metrics.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok(s)).await;
                    }
                    Ok(Err(e)) => {
                        metrics.handshake_failures.inc();
                        tracing::debug!(error = %e, "TLS handshake failed (gRPC)");
                    }
                    Err(_) => metrics.handshake_failures.inc(),
                }
                drop(permit);
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Reads a listener's certificate files every `reload_interval_ms` until `Closing`, and swaps the config when
/// they changed: new connections get the new certificate, open ones keep theirs. A refused set is logged and
/// counted once, and the old certificate goes on serving.
pub async fn watch_certificates(
    listener: &'static str,
    tls: Arc<ServerTls>,
    metrics: TlsMetrics,
    phase: watch::Receiver<Phase>,
) {
    metrics.expiry.set(tls.validity().not_after);
    let mut closing = phase;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tls.reload_interval()) => {}
            _ = closing.wait_for(|p| *p == Phase::Closing) => return,
        }
        let t = tls.clone();
        match tokio::task::spawn_blocking(move || t.reload()).await {
            Ok(Ok(Reload::Unchanged)) | Err(_) => {}
            Ok(Ok(Reload::Reloaded)) => {
                let v = tls.validity();
                metrics.reloaded.inc();
                metrics.expiry.set(v.not_after);
                tracing::info!(listener, not_after = v.not_after, "TLS certificate reloaded");
            }
            Ok(Err(e)) => {
                metrics.refused.inc();
                tracing::error!(listener, error = %e, "new TLS files refused; the previous certificate stays in use");
            }
        }
    }
}

/// The soft limit on open files of this process (Linux), to keep `server.max_connections` below it.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Connections each side listener (metrics, admin) may hold: a scraper, a few consoles and an operator's CLI need a
/// handful, so a flood there cannot take the file descriptors the inference port needs.
pub const SIDE_CONNECTIONS: usize = 256;

/// `max_connections` for the HTTP inference listener, and for each of the two side listeners, so that together
/// they stay below the open-files limit with room for model files, the state file, upstream connections and the
/// gRPC port. The inference port gets what the side listeners do not need.
pub fn fit_connections(configured: usize, limit: Option<u64>) -> (usize, usize) {
    const RESERVE: u64 = 256;
    let side = configured.min(SIDE_CONNECTIONS);
    let others = RESERVE + 2 * side as u64;
    match limit {
        Some(l) if configured as u64 + others > l => {
            let fitted = (l.saturating_sub(others) as usize).max(16);
            tracing::warn!(
                configured,
                fitted,
                open_files_limit = l,
                "server.max_connections does not fit under the open-files limit; lowered"
            );
            (fitted.min(configured), side)
        }
        _ => (configured, side),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limits_fit_under_the_open_files_limit() {
        assert_eq!(fit_connections(1000, None), (1000, 256));
        assert_eq!(fit_connections(40, None), (40, 40), "a side listener never gets more than the inference port");
        assert_eq!(fit_connections(1000, Some(20_000)), (1000, 256));
        // 10,000 connections fit under 20,000 open files: the side listeners take 512, not two thirds.
        assert_eq!(fit_connections(12_000, Some(20_000)), (12_000, 256));
        assert_eq!(fit_connections(30_000, Some(20_000)), (20_000 - 256 - 512, 256));
        assert_eq!(fit_connections(10_000, Some(100)), (16, 256));
    }
}
