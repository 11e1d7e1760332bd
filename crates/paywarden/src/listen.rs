//! `serve`'s listener: HTTP/1.1 over TCP, or over rustls with `--tls-cert --tls-key`, with
//! the limits that keep slow or idle clients from holding the server:
//!
//! | limit | default | past it |
//! |---|---|---|
//! | connections at once (`--connections-max`) | 10,000 | accepting pauses until one closes |
//! | a request head's arrival, idle keep-alive included (`--header-read-timeout`) | 65 s | the connection is closed |
//! | a request head's size ([`HEAD_BYTES_MAX`], [`HEADERS_MAX`] headers) | 64 KiB, 100 | `431` / closed |
//! | a TLS handshake (`paywarden_rollout::tls::HANDSHAKE_TIMEOUT`) | 10 s | the connection is closed |
//! | a body's arrival (`ApiConfig::body_read_timeout`, in the API) | 10 s | `408` |
//!
//! Every connection runs in its own task (the TLS handshake too), so none waits for another.
//! On shutdown each connection finishes the request under way and closes, within
//! [`DRAIN_MAX`].

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Longest `--header-read-timeout` (the wait for a request head, and between requests on a
/// kept-alive connection). Its default, 65 s, is longer than the idle timeout of the load
/// balancers in front (AWS ALB: 60 s), which must close an idle connection first, or they may
/// send a request on one `serve` is closing.
pub const HEADER_READ_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
/// Largest request head (the read buffer's limit).
pub const HEAD_BYTES_MAX: usize = 64 << 10;
/// Most request headers.
pub const HEADERS_MAX: usize = 100;
/// How long connections get to finish after shutdown begins.
pub const DRAIN_MAX: Duration = Duration::from_secs(10);
/// Default and largest `--connections-max`.
pub const CONNECTIONS_DEFAULT: usize = 10_000;
pub const CONNECTIONS_MAX: usize = 1_000_000;

pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    connections_max: usize,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(HEAD_BYTES_MAX)
        .max_headers(HEADERS_MAX)
        .keep_alive(true);
    let permits = Arc::new(Semaphore::new(connections_max.max(1)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            p = Arc::clone(&permits).acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, router, stop, http) = (acceptor.clone(), router.clone(), stop_rx.clone(), http.clone());
        conns.spawn(async move {
            let svc = TowerToHyperService::new(router);
            match acceptor {
                None => drive(&http, stream, svc, stop).await,
                Some(acceptor) => match paywarden_rollout::tls::accept(&acceptor, stream).await {
                    Ok(tls) => drive(&http, tls, svc, stop).await,
                    Err(e) => tracing::debug!(%peer, error = %e, "TLS"),
                },
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(DRAIN_MAX, async { while conns.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!(left = conns.len(), "connections still open after {DRAIN_MAX:?}; closing them");
    }
    Ok(())
}

async fn drive<IO>(http: &hyper::server::conn::http1::Builder, io: IO, svc: TowerToHyperService<axum::Router>, mut stop: tokio::sync::watch::Receiver<bool>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = http.serve_connection(TokioIo::new(io), svc);
    let mut conn = pin!(conn);
    let res = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            // Finish the request under way (if any), then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
