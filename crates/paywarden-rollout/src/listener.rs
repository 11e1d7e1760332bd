//! The accept loop `up`'s proxy and `paywarden serve` share: HTTP/1.1 over TCP, or over rustls;
//! a task per connection (the TLS handshake inside it, bounded by
//! [`crate::tls::HANDSHAKE_TIMEOUT`]), at most `connections_max` connections (accepting pauses
//! at the cap), and on shutdown every connection finishes the request under way and closes,
//! within `grace`; those still open then are closed.
//!
//! # Lingering close
//!
//! A server may answer before it has read the whole request: a 413 for a body over its limit,
//! a 401 before the body is looked at. Closing a socket whose receive buffer still holds
//! unread bytes makes the kernel send a reset, and a client still writing its body then sees
//! `Broken pipe` or `Connection reset` instead of the answer it was sent. So when paywarden
//! closes a connection the client had not closed, the socket is half-closed (the answer is
//! complete) and whatever the client still sends is read and discarded, at most
//! [`LINGER_BYTES_MAX`] bytes for at most [`LINGER_TIMEOUT`], before it is closed: what web
//! servers call a lingering close. At most [`LINGERING_MAX`] sockets linger at once; past
//! that a socket is closed at once.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1::Builder;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Most bytes read and discarded from a client after paywarden closed its connection (see
/// "Lingering close"): a body up to this size still being sent gets its answer.
pub const LINGER_BYTES_MAX: u64 = 16 << 20;
/// Longest a closed connection lingers for the client to finish sending.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(5);
/// Most sockets lingering at once, per listener; past it a socket is closed at once.
pub const LINGERING_MAX: usize = 1024;

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
    let lingering = Arc::new(Semaphore::new(LINGERING_MAX));
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
        let stream = Lingering { stream: Some(stream), peer_closed: false, permits: Arc::clone(&lingering) };
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

/// A TCP stream that lingers when dropped before its peer closed (see "Lingering close").
struct Lingering {
    stream: Option<TcpStream>,
    /// The client closed its side (a read returned end of file): nothing left to drain.
    peer_closed: bool,
    permits: Arc<Semaphore>,
}

impl Lingering {
    fn inner(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.stream.as_mut().expect("the stream is taken only on drop"))
    }
}

impl AsyncRead for Lingering {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.inner().poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() == before && buf.remaining() > 0 {
            self.peer_closed = true;
        }
        polled
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.inner().poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner().poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.inner().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(TcpStream::is_write_vectored)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else { return };
        if self.peer_closed {
            return;
        }
        let (Ok(runtime), Ok(permit)) = (tokio::runtime::Handle::try_current(), Arc::clone(&self.permits).try_acquire_owned()) else {
            return;
        };
        runtime.spawn(async move {
            linger(stream).await;
            drop(permit);
        });
    }
}

/// Half-closes `stream` and discards what the client still sends, within the bounds.
async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 8192];
        let mut left = LINGER_BYTES_MAX;
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            let Some(l) = left.checked_sub(n as u64) else { break };
            left = l;
        }
    };
    let _ = tokio::time::timeout(LINGER_TIMEOUT, drain).await;
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// A server that answers 413 at once, without reading the body, and closes.
    async fn early_413() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let svc = hyper::service::service_fn(|_req: hyper::Request<Incoming>| async {
            let mut res = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"too large")));
            *res.status_mut() = hyper::StatusCode::PAYLOAD_TOO_LARGE;
            Ok::<_, std::convert::Infallible>(res)
        });
        let how = Listening { http: Builder::new(), tls: None, connections_max: 16, grace: Duration::from_secs(1), name: "test" };
        tokio::spawn(serve(listener, how, move |_| svc, async { stopped.await.ok(); }));
        (addr, stop)
    }

    /// As a client that sends its whole body before it reads (Python's requests does): the
    /// answer arrives whatever the body's size up to the bound.
    fn post_then_read(addr: SocketAddr, body_len: usize) -> io::Result<String> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "POST /v1/payment_intents HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {body_len}\r\n\r\n")?;
        let chunk = vec![b'a'; 64 * 1024];
        let mut left = body_len;
        while left > 0 {
            let n = left.min(chunk.len());
            s.write_all(&chunk[..n])?;
            left -= n;
        }
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_still_sending_its_body_gets_the_early_answer_not_a_reset() {
        let (addr, _stop) = early_413().await;
        for size in [1 << 20, 8 << 20] {
            for i in 0..10 {
                let answer = tokio::task::spawn_blocking(move || post_then_read(addr, size)).await.unwrap();
                let answer = answer.unwrap_or_else(|e| panic!("try {i} with {size} bytes: {e}"));
                assert!(answer.starts_with("HTTP/1.1 413"), "try {i} with {size} bytes: {answer}");
            }
        }
    }
}
