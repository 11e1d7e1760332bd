//! `serve --tls-cert --tls-key`: the API behind rustls. Each accepted connection does its
//! handshake in its own task (bounded by `paywarden_rollout::tls::HANDSHAKE_TIMEOUT`), then
//! hyper serves it; on shutdown every connection finishes its request under way and closes,
//! within [`DRAIN_MAX`].

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// How long connections get to finish after shutdown begins.
pub const DRAIN_MAX: Duration = Duration::from_secs(10);

pub async fn serve(listener: TcpListener, router: axum::Router, tls: Arc<rustls::ServerConfig>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, router, mut stop) = (acceptor.clone(), router.clone(), stop_rx.clone());
        conns.spawn(async move {
            let tls = match paywarden_rollout::tls::accept(&acceptor, stream).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS");
                    return;
                }
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(router));
            let mut conn = pin!(conn);
            let res = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = res {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(DRAIN_MAX, async { while conns.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!(left = conns.len(), "connections still open after {DRAIN_MAX:?}; closing them");
    }
    Ok(())
}
