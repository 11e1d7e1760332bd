//! Slow and idle clients against `serve`'s listener: a client that opens connections and
//! never finishes a request head holds them at most `--header-read-timeout` (2 s here), and while
//! it holds every allowed connection (`--connections-max`) a new client waits, then is served
//! as soon as one is freed; a finished request is never disturbed by the stalled ones.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::server::Server;

#[tokio::test]
async fn stalled_heads_are_cut_off_and_hold_no_connection_for_long() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::spawn(dir.path(), None, &["--connections-max", "3", "--header-read-timeout", "2s"]).await;
    let addr = srv.url.trim_start_matches("http://").to_string();
    // A served client keeps its connection (keep-alive) while the others stall.
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{}/healthz", srv.url)).send().await.unwrap().status(), 200);
    // Two connections that send half a head and stop: with the client's, all three allowed.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A new client's request waits for a free connection; the first is freed when the
    // server's head timeout (2 s) cuts the stalled ones off.
    let started = Instant::now();
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let r = fresh.get(format!("{}/healthz", srv.url)).timeout(Duration::from_secs(30)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1500), "served after {waited:?}: the connection cap did not hold");
    assert!(waited < Duration::from_secs(10), "served after {waited:?}: stalled heads held their connections too long");
    // The stalled connections were closed by the server.
    for mut s in stalled {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("closed, not still open").unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "a stalled head gets nothing or a 408: {text:?}");
    }
}
