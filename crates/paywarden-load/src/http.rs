//! The generator's HTTP/1.1 client: one write per request and httparse on the answer, over
//! a bounded stack of kept-alive loopback connections.
//!
//! Why not a general client. reqwest parses the URL, looks the host up, checks its pool and
//! clones its connector for every request; hyper's own connection API, next tried, still
//! passes each request through a channel to the connection's dispatcher and reads until
//! `WouldBlock`. At the rates the generator must reach on one thread (its ceiling is measured
//! against wrk, BENCHMARKS.md) those layers were most of its CPU. The generator needs little
//! of HTTP: it talks to one origin, sends small GETs and form POSTs it builds itself, and reads
//! answers with `Content-Length` or chunked bodies. So a request is written in one `write`,
//! the status line and headers are parsed by httparse (the parser hyper uses) as soon as they
//! are in, and the body is read to its announced end, no further.
//!
//! Connections: at most `connections` at once (a request waits for a free one; its latency
//! counts from its scheduled start all the same), taken from a stack (or opened), returned
//! after a complete answer unless the server said `Connection: close`. The cap matters: with
//! one connection per request in flight (up to the in-flight cap, 1,024) the generator's
//! ceiling against `/healthz` was 130,000/s, with 256 it was 150,000/s (BENCHMARKS.md): a
//! thousand sockets cost the kernel more per request than a few hundred. One idle longer than [`IDLE_MAX`] is closed rather than
//! reused; a reused one that the server had closed (no byte of an answer, then end of
//! stream) gets the request again on a new connection: nothing was processed, and every POST
//! the generator sends carries an Idempotency-Key.
//!
//! Bounds: at most `connections` connections, a header section of at most
//! [`HEAD_BYTES_MAX`] and [`HEADERS_MAX`] headers, a body of at most [`BODY_BYTES_MAX`], every
//! request within the run's timeout.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest response body read.
pub const BODY_BYTES_MAX: usize = 1 << 20;
/// Largest response header section.
pub const HEAD_BYTES_MAX: usize = 64 << 10;
/// Most response headers.
pub const HEADERS_MAX: usize = 64;
/// A connection idle longer than this is closed rather than reused: the server may have timed
/// it out.
pub const IDLE_MAX: Duration = Duration::from_secs(5);
/// Read buffer per connection; it grows for larger answers.
const READ_CHUNK: usize = 8 << 10;

/// Why a request failed, as the summary counts it.
pub type FailKind = &'static str;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub replayed: bool,
    pub body: Bytes,
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    idle_since: Instant,
}

pub struct Client {
    addr: SocketAddr,
    /// `Host: ...\r\nAuthorization: Bearer ...\r\n`, the lines every request carries.
    fixed: String,
    timeout: Duration,
    idle: Mutex<Vec<Conn>>,
    /// One permit per connection that may exist.
    slots: tokio::sync::Semaphore,
}

/// How a failed exchange ended: `Stale` (a reused connection closed before any byte of an
/// answer: safe to send again) or a failure to count.
enum Failure {
    Stale,
    Failed(FailKind),
}

impl From<FailKind> for Failure {
    fn from(k: FailKind) -> Failure {
        Failure::Failed(k)
    }
}

impl Client {
    /// `base` is `http://host:port` (resolved now, once); `key` goes in every request's
    /// Authorization header.
    pub async fn new(base: &str, key: &str, timeout: Duration, connections: usize) -> Result<Client, String> {
        let authority = base
            .strip_prefix("http://")
            .ok_or_else(|| format!("{base}: the target must be an http:// URL (TLS is not spoken by the generator)"))?
            .trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!("{base}: give the target's origin only (http://host:port), without a path"));
        }
        let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if !printable(authority) {
            return Err(format!("{base}: not a valid host"));
        }
        if key.is_empty() || !printable(key) {
            return Err("--key: not a valid header value (printable ASCII, no spaces)".into());
        }
        let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) { authority.to_string() } else { format!("{authority}:80") };
        let addr = tokio::net::lookup_host(with_port.as_str())
            .await
            .map_err(|e| format!("{base}: {e}"))?
            .next()
            .ok_or_else(|| format!("{base}: the name has no address"))?;
        Ok(Client {
            addr,
            fixed: format!("Host: {authority}\r\nAuthorization: Bearer {key}\r\n"),
            timeout,
            idle: Mutex::new(Vec::new()),
            slots: tokio::sync::Semaphore::new(connections.max(1)),
        })
    }

    /// GET `path`, or POST it with a form body (and an Idempotency-Key).
    pub async fn send(&self, path: &str, form: Option<String>, idem: Option<&str>) -> Result<Response, FailKind> {
        if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) || idem.is_some_and(|k| !k.bytes().all(|b| b.is_ascii_graphic())) {
            return Err("request");
        }
        let mut req = Vec::with_capacity(256 + form.as_ref().map_or(0, String::len));
        let method = if form.is_some() { "POST" } else { "GET" };
        req.extend_from_slice(method.as_bytes());
        req.push(b' ');
        req.extend_from_slice(path.as_bytes());
        req.extend_from_slice(b" HTTP/1.1\r\n");
        req.extend_from_slice(self.fixed.as_bytes());
        if let Some(f) = &form {
            req.extend_from_slice(b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ");
            req.extend_from_slice(f.len().to_string().as_bytes());
            req.extend_from_slice(b"\r\n");
            if let Some(k) = idem {
                req.extend_from_slice(b"Idempotency-Key: ");
                req.extend_from_slice(k.as_bytes());
                req.extend_from_slice(b"\r\n");
            }
        }
        req.extend_from_slice(b"\r\n");
        if let Some(f) = &form {
            req.extend_from_slice(f.as_bytes());
        }
        match tokio::time::timeout(self.timeout, self.exchange(&req)).await {
            Ok(r) => r,
            Err(_) => Err("timeout"),
        }
    }

    async fn exchange(&self, req: &[u8]) -> Result<Response, FailKind> {
        // Held until the connection is back on the stack or closed.
        let _slot = self.slots.acquire().await.map_err(|_| "connect")?;
        if let Some(mut c) = self.take_idle() {
            match round_trip(&mut c, req).await {
                Ok((res, keep)) => {
                    self.finish(c, keep);
                    return Ok(res);
                }
                Err(Failure::Failed(k)) => return Err(k),
                // Closed by the server while idle: nothing was processed; once more, anew.
                Err(Failure::Stale) => {}
            }
        }
        let mut c = self.connect().await?;
        match round_trip(&mut c, req).await {
            Ok((res, keep)) => {
                self.finish(c, keep);
                Ok(res)
            }
            Err(Failure::Failed(k)) => Err(k),
            Err(Failure::Stale) => Err("body"),
        }
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = idle.pop() {
            if c.idle_since.elapsed() < IDLE_MAX {
                return Some(c);
            }
        }
        None
    }

    fn finish(&self, mut c: Conn, keep: bool) {
        if !keep {
            return;
        }
        c.idle_since = Instant::now();
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(c);
    }

    async fn connect(&self) -> Result<Conn, FailKind> {
        let stream = TcpStream::connect(self.addr).await.map_err(|_| "connect")?;
        let _ = stream.set_nodelay(true);
        Ok(Conn { stream, buf: BytesMut::with_capacity(READ_CHUNK), idle_since: Instant::now() })
    }
}

/// Writes the request and reads one complete answer; whether the connection can be reused.
async fn round_trip(c: &mut Conn, req: &[u8]) -> Result<(Response, bool), Failure> {
    c.buf.clear();
    c.stream.write_all(req).await.map_err(|_| Failure::Stale)?;
    // The head: status line and headers.
    let (head_len, status, replayed, framing, keep) = loop {
        if let Some(head) = parse_head(&c.buf)? {
            break head;
        }
        if c.buf.len() > HEAD_BYTES_MAX {
            return Err(Failure::Failed("body"));
        }
        fill(c).await.map_err(|n| if n == 0 && c.buf.is_empty() { Failure::Stale } else { Failure::Failed("body") })?;
    };
    c.buf.advance(head_len);
    let body = match framing {
        Framing::Length(n) => {
            if n > BODY_BYTES_MAX {
                return Err(Failure::Failed("body"));
            }
            while c.buf.len() < n {
                fill(c).await.map_err(|_| Failure::Failed("body"))?;
            }
            c.buf.split_to(n).freeze()
        }
        Framing::Chunked => read_chunked(c).await?,
    };
    // Bytes past the answer (none is expected: requests are not pipelined) make the
    // connection unusable for the next one.
    Ok((Response { status, replayed, body }, keep && c.buf.is_empty()))
}

enum Framing {
    Length(usize),
    Chunked,
}

type Head = (usize, u16, bool, Framing, bool);

/// The answer's head if it is all in `buf`: its length, status, `Idempotent-Replayed: true`,
/// how the body is framed, and whether the connection stays open.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut res = httparse::Response::new(&mut headers);
    let len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Failure::Failed("body")),
    };
    let status = res.code.ok_or(Failure::Failed("body"))?;
    let mut keep = res.version == Some(1);
    let (mut replayed, mut length, mut chunked) = (false, None, false);
    for h in res.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| Failure::Failed("body"))?.trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| Failure::Failed("body"))?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
            if !chunked {
                return Err(Failure::Failed("body"));
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            keep = keep && !value.eq_ignore_ascii_case("close");
        } else if h.name.eq_ignore_ascii_case("idempotent-replayed") {
            replayed = value == "true";
        }
    }
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        // No length: 1xx, 204 and 304 have no body; anything else would end at close, which a
        // kept-alive client cannot read.
        (false, None) if status == 204 || status == 304 || (100..200).contains(&status) => Framing::Length(0),
        (false, None) => return Err(Failure::Failed("body")),
    };
    Ok(Some((len, status, replayed, framing, keep)))
}

/// A chunked body, decoded.
async fn read_chunked(c: &mut Conn) -> Result<Bytes, Failure> {
    let mut body = BytesMut::new();
    loop {
        let (size_len, size) = loop {
            match httparse::parse_chunk_size(&c.buf) {
                Ok(httparse::Status::Complete((n, size))) => break (n, usize::try_from(size).map_err(|_| Failure::Failed("body"))?),
                Ok(httparse::Status::Partial) => fill(c).await.map_err(|_| Failure::Failed("body"))?,
                Err(_) => return Err(Failure::Failed("body")),
            }
        };
        c.buf.advance(size_len);
        if body.len() + size > BODY_BYTES_MAX {
            return Err(Failure::Failed("body"));
        }
        if size == 0 {
            // No trailers expected: the final CRLF.
            while c.buf.len() < 2 {
                fill(c).await.map_err(|_| Failure::Failed("body"))?;
            }
            if &c.buf[..2] != b"\r\n" {
                return Err(Failure::Failed("body"));
            }
            c.buf.advance(2);
            return Ok(body.freeze());
        }
        while c.buf.len() < size + 2 {
            fill(c).await.map_err(|_| Failure::Failed("body"))?;
        }
        body.extend_from_slice(&c.buf[..size]);
        if &c.buf[size..size + 2] != b"\r\n" {
            return Err(Failure::Failed("body"));
        }
        c.buf.advance(size + 2);
    }
}

/// Reads more into the connection's buffer; `Err(n)` at the end of the stream or an error
/// (`n` bytes read: 0).
async fn fill(c: &mut Conn) -> Result<(), usize> {
    if c.buf.capacity() - c.buf.len() < READ_CHUNK / 2 {
        c.buf.reserve(READ_CHUNK);
    }
    match c.stream.read_buf(&mut c.buf).await {
        Ok(0) | Err(_) => Err(0),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn targets_must_be_http_origins() {
        for bad in ["https://127.0.0.1:1", "127.0.0.1:1", "http://127.0.0.1:1/v1", "http://"] {
            assert!(Client::new(bad, "sk_test_x", Duration::from_secs(1), 1).await.is_err(), "{bad}");
        }
        assert!(Client::new("http://127.0.0.1:1", "sk test", Duration::from_secs(1), 1).await.is_err(), "a key with a space");
        let c = Client::new("http://127.0.0.1:4242/", "sk_test_x", Duration::from_secs(1), 1).await.unwrap();
        assert_eq!(c.addr, SocketAddr::from(([127, 0, 0, 1], 4242)));
        assert_eq!(c.fixed, "Host: 127.0.0.1:4242\r\nAuthorization: Bearer sk_test_x\r\n");
    }

    /// A server that answers each request it reads (up to its blank line and any
    /// Content-Length body) with the next canned answer, then closes after the last; what it
    /// received comes back on the channel.
    async fn canned(answers: Vec<&'static [u8]>) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else { continue };
                    let len = text.lines().find_map(|l| l.strip_prefix("Content-Length: ")).map_or(0, |v| v.trim().parse().unwrap());
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    tx.send(text[..end + 4 + len].to_string()).unwrap();
                    buf.drain(..end + 4 + len);
                    match answers.next() {
                        Some(a) => s.write_all(a).await.unwrap(),
                        None => return,
                    }
                }
            }
        });
        (url, rx)
    }

    #[tokio::test]
    async fn sends_one_request_and_reads_length_and_chunked_answers_on_one_connection() {
        let (url, mut seen) = canned(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n",
            b"HTTP/1.1 200 OK\r\nIdempotent-Replayed: true\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
            b"HTTP/1.1 402 Payment Required\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        ])
        .await;
        let c = Client::new(&url, "sk_test_k", Duration::from_secs(2), 4).await.unwrap();
        let r = c.send("/healthz", None, None).await.unwrap();
        assert_eq!((r.status, r.replayed, &r.body[..]), (200, false, &b"ok\n"[..]));
        assert_eq!(seen.recv().await.unwrap(), "GET /healthz HTTP/1.1\r\nHost: ".to_string() + &url[7..] + "\r\nAuthorization: Bearer sk_test_k\r\n\r\n");
        let r = c.send("/v1/payment_intents", Some("amount=100&currency=usd".into()), Some("key-1")).await.unwrap();
        assert_eq!((r.status, r.replayed, &r.body[..]), (200, true, &b"{\"a\":1}"[..]));
        let sent = seen.recv().await.unwrap();
        assert!(sent.starts_with("POST /v1/payment_intents HTTP/1.1\r\n"), "{sent}");
        assert!(sent.contains("Content-Length: 23\r\nIdempotency-Key: key-1\r\n\r\namount=100&currency=usd"), "{sent}");
        // The same connection served both: the server accepted once.
        assert_eq!(c.idle.lock().unwrap().len(), 1);
        let r = c.send("/v1/x", Some(String::new()), Some("key-2")).await.unwrap();
        assert_eq!(r.status, 402);
        assert_eq!(c.idle.lock().unwrap().len(), 0, "connection: close is not kept");
    }

    #[tokio::test]
    async fn requests_beyond_the_connection_cap_wait_for_a_free_connection() {
        // Counts connections; answers every request after 50 ms.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while s.read(&mut buf).await.unwrap_or(0) > 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                    }
                });
            }
        });
        let c = std::sync::Arc::new(Client::new(&url, "k", Duration::from_secs(5), 3).await.unwrap());
        let started = std::time::Instant::now();
        let all = futures::future::join_all((0..9).map(|_| {
            let c = c.clone();
            async move { c.send("/healthz", None, None).await.map(|r| r.status) }
        }))
        .await;
        assert!(all.iter().all(|r| *r == Ok(200)), "{all:?}");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3, "three connections at most");
        assert!(started.elapsed() >= Duration::from_millis(150), "nine requests on three connections take three rounds");
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced_and_the_request_goes_again() {
        // Answers one request per connection, then closes it without a word.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
            }
        });
        let c = Client::new(&url, "k", Duration::from_secs(2), 4).await.unwrap();
        for _ in 0..3 {
            let r = c.send("/healthz", None, None).await.unwrap();
            assert_eq!(&r.body[..], b"ok");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn malformed_oversized_and_unframed_answers_are_body_errors() {
        let big: &'static [u8] = Box::leak(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", BODY_BYTES_MAX + 1).into_bytes().into_boxed_slice());
        for answer in [&b"HTTP/1.1 200 OK\r\n\r\nno length, no close"[..], b"NOPE\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", big] {
            let (url, _seen) = canned(vec![answer]).await;
            let c = Client::new(&url, "k", Duration::from_secs(2), 1).await.unwrap();
            assert_eq!(c.send("/healthz", None, None).await.err(), Some("body"), "{}", String::from_utf8_lossy(&answer[..answer.len().min(40)]));
        }
        let (url, _seen) = canned(vec![]).await;
        let c = Client::new(&url, "k", Duration::from_secs(2), 1).await.unwrap();
        assert_eq!(c.send("/a b", None, None).await.err(), Some("request"), "a path with a space is refused before it is sent");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_failure_and_a_silent_one_a_timeout() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let c = Client::new(&format!("http://127.0.0.1:{port}"), "k", Duration::from_secs(1), 1).await.unwrap();
        assert_eq!(c.send("/healthz", None, None).await.err(), Some("connect"));
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
