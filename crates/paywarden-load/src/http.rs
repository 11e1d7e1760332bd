//! The generator's HTTP/1.1 client: hyper's connection API over a bounded set of kept-alive
//! loopback connections, nothing else per request.
//!
//! A general client (reqwest, hyper-util's pool) parses the URL, looks the host up, checks its
//! pool and clones its connector for every request; at tens of thousands of requests a second
//! on one thread that was most of the generator's own CPU (BENCHMARKS.md). Here the target is
//! resolved once, the headers that never change are built once, and a request takes an idle
//! connection from a stack (or opens one), sends, reads the body while polling the connection
//! itself, and puts the connection back: no task per connection and no channel to cross.
//!
//! Bounds: at most `max_connections` connections (the run's in-flight cap), responses of at
//! most [`BODY_BYTES_MAX`], every request within the run's timeout.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest response body read.
pub const BODY_BYTES_MAX: usize = 1 << 20;

/// Why a request failed, as the summary counts it.
pub type FailKind = &'static str;

pub struct Response {
    pub status: u16,
    pub replayed: bool,
    pub body: Bytes,
}

/// A kept-alive connection: the handle requests go through and the connection itself, which
/// the request's own task polls while it waits (no task per connection, no channel between
/// two tasks to cross).
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    conn: Connection<TokioIo<TcpStream>, Full<Bytes>>,
    idle_since: Instant,
}

/// A connection idle longer than this is closed rather than reused: the server may have timed
/// it out, and a request written to it then would fail.
pub const IDLE_MAX: Duration = Duration::from_secs(5);

pub struct Client {
    addr: SocketAddr,
    host: HeaderValue,
    auth: HeaderValue,
    timeout: Duration,
    /// Boxed: a connection is large, and it moves out of and back into this stack with
    /// every request (moving it by value showed as memmove in profiles).
    #[allow(clippy::vec_box)] // the point: a pointer moves, not the connection
    idle: Mutex<Vec<Box<Conn>>>,
    max_idle: usize,
}

impl Client {
    /// `base` is `http://host:port` (resolved now, once); `key` goes in every request's
    /// Authorization header.
    pub async fn new(base: &str, key: &str, timeout: Duration, max_connections: usize) -> Result<Client, String> {
        let authority = base
            .strip_prefix("http://")
            .ok_or_else(|| format!("{base}: the target must be an http:// URL (TLS is not spoken by the generator)"))?
            .trim_end_matches('/');
        if authority.contains('/') {
            return Err(format!("{base}: give the target's origin only (http://host:port), without a path"));
        }
        let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) { authority.to_string() } else { format!("{authority}:80") };
        let addr = tokio::net::lookup_host(with_port.as_str())
            .await
            .map_err(|e| format!("{base}: {e}"))?
            .next()
            .ok_or_else(|| format!("{base}: the name has no address"))?;
        Ok(Client {
            addr,
            host: HeaderValue::from_str(authority).map_err(|_| format!("{base}: not a valid host"))?,
            auth: HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| "--key: not a valid header value".to_string())?,
            timeout,
            idle: Mutex::new(Vec::new()),
            max_idle: max_connections.max(1),
        })
    }

    /// GET `path`, or POST it with a form body (and an Idempotency-Key).
    pub async fn send(&self, path: &str, form: Option<String>, idem: Option<&str>) -> Result<Response, FailKind> {
        let mut req = Request::builder().uri(path).header(HOST, self.host.clone()).header(AUTHORIZATION, self.auth.clone());
        let body = match form {
            Some(f) => {
                req = req.method(Method::POST).header(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
                if let Some(k) = idem {
                    req = req.header("idempotency-key", k);
                }
                Full::new(Bytes::from(f))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|_| "body")?;
        match tokio::time::timeout(self.timeout, self.exchange(req)).await {
            Ok(r) => r,
            Err(_) => Err("timeout"),
        }
    }

    async fn exchange(&self, req: Request<Full<Bytes>>) -> Result<Response, FailKind> {
        let mut c = match self.take_idle() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let Conn { sender, conn, .. } = &mut *c;
        let response = async {
            // Ready once the connection has been polled past the previous response.
            sender.ready().await.map_err(|_| "body")?;
            let res = sender.send_request(req).await.map_err(|_| "body")?;
            let status = res.status().as_u16();
            let replayed = res.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
            let body = Limited::new(res.into_body(), BODY_BYTES_MAX).collect().await.map_err(|_| "body")?.to_bytes();
            Ok::<_, FailKind>(Response { status, replayed, body })
        };
        // The connection moves the bytes while the request waits for them; if it ends first,
        // the request has failed.
        let out = tokio::select! {
            biased;
            r = response => r?,
            _ = conn => return Err("body"),
        };
        c.idle_since = Instant::now();
        self.put_idle(c);
        Ok(out)
    }

    fn take_idle(&self) -> Option<Box<Conn>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = idle.pop() {
            if c.idle_since.elapsed() < IDLE_MAX && !c.sender.is_closed() {
                return Some(c);
            }
        }
        None
    }

    fn put_idle(&self, c: Box<Conn>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push(c);
        }
    }

    async fn connect(&self) -> Result<Box<Conn>, FailKind> {
        let stream = TcpStream::connect(self.addr).await.map_err(|_| "connect")?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|_| "connect")?;
        Ok(Box::new(Conn { sender, conn, idle_since: Instant::now() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn targets_must_be_http_origins() {
        for bad in ["https://127.0.0.1:1", "127.0.0.1:1", "http://127.0.0.1:1/v1"] {
            assert!(Client::new(bad, "sk_test_x", Duration::from_secs(1), 1).await.is_err(), "{bad}");
        }
        let c = Client::new("http://127.0.0.1:4242/", "sk_test_x", Duration::from_secs(1), 1).await.unwrap();
        assert_eq!(c.addr, SocketAddr::from(([127, 0, 0, 1], 4242)));
        assert_eq!(c.host, "127.0.0.1:4242");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_failure_and_a_silent_one_a_timeout() {
        // A port nobody listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let c = Client::new(&format!("http://127.0.0.1:{port}"), "k", Duration::from_secs(1), 1).await.unwrap();
        assert_eq!(c.send("/healthz", None, None).await.err(), Some("connect"));
        // A listener that accepts and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let c = Client::new(&format!("http://{addr}"), "k", Duration::from_millis(200), 1).await.unwrap();
        assert_eq!(c.send("/healthz", None, None).await.err(), Some("timeout"));
    }
}
