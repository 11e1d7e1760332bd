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
//! The accept loop is `paywarden_rollout::listener`'s, which `up`'s proxy uses too: every
//! connection runs in its own task (the TLS handshake too), so none waits for another; on
//! shutdown each connection finishes the request under way and closes, within [`DRAIN_MAX`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioTimer;
use hyper_util::service::TowerToHyperService;
use paywarden_rollout::listener::{self, Listening};
use tokio::net::TcpListener;

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
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(HEAD_BYTES_MAX)
        .max_headers(HEADERS_MAX)
        .keep_alive(true);
    let how = Listening { http, tls, connections_max, grace: DRAIN_MAX, name: "api" };
    listener::serve(listener, how, |_| TowerToHyperService::new(router.clone()), shutdown).await?;
    Ok(())
}
