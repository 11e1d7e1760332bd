//! The accept loop `up`'s proxy and `paywarden serve` share: HTTP/1.1 over TCP, or over rustls;
//! a task per connection (the TLS handshake inside it, bounded by
//! [`crate::tls::HANDSHAKE_TIMEOUT`]), at most `connections_max` connections (accepting pauses
//! at the cap), and on shutdown every connection finishes the request under way and closes,
//! within `grace`; those still open then are closed.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1::Builder;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How connections are served.
pub struct Listening {
    /// hyper's HTTP/1.1 settings (timer, head read timeout, limits).
    pub http: Builder,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub connections_max: usize,
    /// How long connections get to finish after shutdown begins.
    pub grace: Duration,
    /// Names this listener in logs (`proxy`, `api`).
    pub name: &'static str,
}

/// Serves `listener` until `shutdown` resolves; `service` makes each connection's service
/// from the client's address.
pub async fn serve<S, F>(listener: TcpListener, how: Listening, service: F, shutdown: impl Future<Output = ()>) -> std::io::Result<()>
where
    F: Fn(SocketAddr) -> S,
    S: HttpService<Incoming> + Send + 'static,
    S::Future: Send,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    <S::ResBody as hyper::body::Body>::Data: Send,
{
    let Listening { http, tls, connections_max, grace, name } = how;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    // Every connection task watches this and asks its connection to finish.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let permits = Arc::new(Semaphore::new(connections_max.max(1)));
    let mut conns = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            p = Arc::clone(&permits).acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: don't spin.
                tracing::warn!(error = %e, listener = name, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let svc = service(peer);
        let (http, stop, acceptor) = (http.clone(), stop_rx.clone(), acceptor.clone());
        conns.spawn(async move {
            match acceptor {
                None => drive(&http, stream, svc, stop, name).await,
                // The handshake in the connection's own task: a slow one holds one permit,
                // never the accept loop.
                Some(acceptor) => match crate::tls::accept(&acceptor, stream).await {
                    Ok(tls) => drive(&http, tls, svc, stop, name).await,
                    Err(e) => tracing::debug!(%peer, error = %e, listener = name, "TLS"),
                },
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!(open = conns.len(), ?grace, listener = name, "grace expired; closing remaining connections");
    }
    conns.shutdown().await;
    Ok(())
}

/// Serves one connection until it ends, or until `stop` says so (then the request under way,
/// if any, is finished first).
async fn drive<IO, S>(http: &Builder, io: IO, svc: S, mut stop: tokio::sync::watch::Receiver<bool>, name: &'static str)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming> + Send,
    S::Future: Send,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    <S::ResBody as hyper::body::Body>::Data: Send,
{
    let conn = http.serve_connection(TokioIo::new(io), svc);
    let mut conn = pin!(conn);
    let res = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, listener = name, "connection ended with an error");
    }
}
