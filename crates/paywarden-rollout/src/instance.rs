//! One supervised gateway child process: start, readiness, `/metrics` scrape, leak report, stop.
//!
//! An [`Instance`] owns one `paywarden serve` child of a release binary and three tasks:
//!
//! - the **supervisor**, which owns the [`tokio::process::Child`], waits on it, delivers the
//!   signals [`Instance::stop`] asks for (by pid, with `nix`, only while the child is not yet
//!   reaped, so a recycled pid is never signalled), and publishes the exit description
//!   (`exit status: 0`, `signal: 9 (SIGKILL)`) on a [`tokio::sync::watch`] channel that any
//!   number of callers wait on ([`Instance::exited`], [`Instance::exit_status`]);
//! - two **readers**, one per pipe, which read the child's stdout and stderr for as long as they
//!   are open (a full pipe would block the child) and forward every line to the controller's
//!   stderr as `[NAME] line`. Words starting with `sk_` (secret API keys) are redacted in what
//!   is forwarded; the stdout lines an operator must see (`test secret key ...`,
//!   `fault injected: ...`) are kept whole in [`Instance::announcements`] instead.
//!
//! Dropping an `Instance` aborts those tasks, which kills the child (SIGKILL, `kill_on_drop`);
//! call [`Instance::stop`] first for a graceful exit.
//!
//! # The contract with the child
//!
//! - **Command line**: `BINARY serve --listen 127.0.0.1:0 --data-dir DIR [ARGS...]`, stdin
//!   null, stdout and stderr piped, the spec's `env` added to the controller's environment. The
//!   admin token goes in the environment as `PAYWARDEN_ADMIN_TOKEN`, never on the command line
//!   (where `ps` shows it); an empty token removes that variable, so the admin endpoints are off.
//! - **stdout**: once bound, the line `paywarden listening on http://127.0.0.1:PORT` gives the
//!   address; further lines may be `fault injected: ...` and
//!   `test secret key for merchant 'default' (shown once): sk_test_...`. Logs go to stderr.
//! - **`GET /readyz`**: 200 when ready for traffic. [`Instance::start`] polls it every 100 ms
//!   after the listening line; the start timeout covers both phases, and a child that exits
//!   first, or is not ready in time, is killed and reported with its last stderr lines.
//! - **`GET /metrics`**: Prometheus text; [`parse_scrape`] reads `paywarden_heap_allocated_bytes`,
//!   `process_resident_memory_bytes`, `memguard_leak_state`, and sums `http_requests_total` and
//!   `paywarden_payments_total` over their labels.
//! - **`GET /admin/memory/leak-report`** with `Authorization: Bearer TOKEN`: JSON.
//! - **`PAYWARDEN_SUPERVISOR_PID`** (set by the controller in the spec's `env`): the gateway
//!   shuts down gracefully once that process is no longer its parent, so a controller killed
//!   with `kill -9` leaves no orphan instance behind.
//! - **SIGTERM**: the child finishes in-flight requests and exits. [`Instance::stop`] sends it,
//!   waits up to a grace period, then sends SIGKILL.
//!
//! # Limits
//!
//! | what | limit |
//! |---|---|
//! | one `/readyz`, `/metrics` or leak-report request, connect to last body byte | [`REQUEST_TIMEOUT`] (2 s) |
//! | `/metrics` body | [`METRICS_BYTES_MAX`] (4 MiB), else [`InstanceError::BadMetrics`] |
//! | leak-report body | [`LEAK_REPORT_BYTES_MAX`] (1 MiB), else [`InstanceError::Http`] |
//! | a line read from the child (the rest of a longer line is dropped) | [`LINE_BYTES_MAX`] (4 KiB) |
//! | stderr lines kept for errors and [`Instance::stderr_tail`] | [`STDERR_TAIL_LINES`] (20) |
//! | announcements kept | [`ANNOUNCEMENTS_MAX`] (16) |
//! | characters kept of one stderr-tail or announcement line | [`KEPT_LINE_CHARS_MAX`] (500) |
//! | after SIGKILL, the wait for the exit in `start`'s failures and in `stop` | [`KILL_WAIT`] (5 s) |
//!
//! The `reqwest::Client` passed to [`Instance::ready`], [`Instance::scrape`] and
//! [`Instance::leak_report`] should be built with `no_proxy()`: the instances are on loopback.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The stdout line the child prints once bound, followed by its address.
pub const LISTENING_PREFIX: &str = "paywarden listening on http://";
/// Stdout lines that start so are kept in [`Instance::announcements`].
pub const ANNOUNCEMENT_PREFIXES: &[&str] = &["test secret key ", "test publishable key ", "fault injected: "];
/// The environment variable that carries the admin token to the child.
pub const ADMIN_TOKEN_ENV: &str = "PAYWARDEN_ADMIN_TOKEN";
/// Longest a `/readyz`, `/metrics` or leak-report request may take, body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two `/readyz` polls while starting.
pub const READY_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Largest `/metrics` body read.
pub const METRICS_BYTES_MAX: usize = 4 << 20;
/// Largest leak-report body read.
pub const LEAK_REPORT_BYTES_MAX: usize = 1 << 20;
/// Longest line read from the child's stdout or stderr; the rest of a longer line is dropped.
pub const LINE_BYTES_MAX: usize = 4 << 10;
/// Last stderr lines kept.
pub const STDERR_TAIL_LINES: usize = 20;
/// Announcement lines kept (the last ones).
pub const ANNOUNCEMENTS_MAX: usize = 16;
/// Characters kept of one stderr-tail or announcement line (longer ones end with `…`).
pub const KEPT_LINE_CHARS_MAX: usize = 500;
/// How long to wait for the exit after SIGKILL before giving up on it.
pub const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long a failed start waits for the stderr reader to reach the end of the pipe, so the
/// error carries the child's last words.
const STDERR_DRAIN_WAIT: Duration = Duration::from_secs(1);

/// What to run. `Debug` shows neither the admin token nor the environment's values.
#[derive(Clone)]
pub struct InstanceSpec {
    /// E.g. `v2 canary`; prefixes the child's forwarded log lines.
    pub name: String,
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    /// Extra arguments after `serve --listen 127.0.0.1:0 --data-dir DIR`.
    pub args: Vec<String>,
    /// Passed as the environment variable `PAYWARDEN_ADMIN_TOKEN`; empty: not passed (and
    /// removed if the controller's environment has it), so the admin endpoints are off.
    pub admin_token: String,
    /// Added to the controller's environment.
    pub env: Vec<(String, String)>,
}

impl fmt::Debug for InstanceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceSpec")
            .field("name", &self.name)
            .field("binary", &self.binary)
            .field("data_dir", &self.data_dir)
            .field("args", &self.args)
            .field("admin_token", &if self.admin_token.is_empty() { "<none>" } else { "<redacted>" })
            .field("env", &self.env.iter().map(|(k, _)| format!("{k}=<redacted>")).collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The binary is missing or not executable.
    #[error("cannot run {}: {source}", path.display())]
    Spawn { path: PathBuf, source: std::io::Error },
    /// The child exited before it was ready.
    #[error("exited before it was ready ({status}){}", tail_text(.stderr_tail))]
    Exited { status: String, stderr_tail: Vec<String> },
    /// The child did not print its address and answer `/readyz` with 200 in time; it was killed.
    #[error("not ready within {waited:?}, killed{}", tail_text(.stderr_tail))]
    NotReady { waited: Duration, stderr_tail: Vec<String> },
    /// A request failed: no connection, timeout, unexpected status, oversized or unreadable body.
    #[error("GET {url}: {reason}")]
    Http { url: String, reason: String },
    /// `/metrics` answered, but not with a readable Prometheus exposition.
    #[error("GET {url}: bad metrics: {reason}")]
    BadMetrics { url: String, reason: String },
}

fn tail_text(lines: &[String]) -> String {
    if lines.is_empty() {
        "; nothing on stderr".to_string()
    } else {
        format!("; last stderr lines:\n    {}", lines.join("\n    "))
    }
}

/// A few figures from one `/metrics` scrape. Counters are cumulative since the child started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Scrape {
    /// `paywarden_heap_allocated_bytes` (absent when the memory guard is off).
    pub heap_allocated_bytes: Option<f64>,
    /// `process_resident_memory_bytes`.
    pub resident_bytes: Option<f64>,
    /// `memguard_leak_state`: 0 ok, 1 suspect, 2 leaking.
    pub leak_state: Option<u8>,
    /// `http_requests_total`, summed over its labels (0 before the first request).
    pub requests_total: f64,
    /// `paywarden_payments_total`, summed over its labels.
    pub payments_total: f64,
}

/// Reads a Prometheus (or OpenMetrics) text exposition into a [`Scrape`].
///
/// Comments, blank lines, malformed lines and non-finite values (`NaN`, `+Inf`) are ignored,
/// as are negative values and a leak state that is not a whole number in 0..=255. A gauge
/// that appears more than once keeps its last value; counters are summed. Timestamps and
/// exemplars after the value are ignored. A series that is absent stays `None` (or 0 for the
/// counters).
pub fn parse_scrape(text: &str) -> Scrape {
    parse(text).0
}

/// The scrape, and how many well-formed samples the text had (of any series).
fn parse(text: &str) -> (Scrape, usize) {
    let mut s = Scrape::default();
    let mut samples = 0;
    for line in text.lines() {
        let Some((name, v)) = memguard::exposition::sample(line) else { continue };
        samples += 1;
        match name {
            "paywarden_heap_allocated_bytes" if v >= 0.0 => s.heap_allocated_bytes = Some(v),
            "process_resident_memory_bytes" if v >= 0.0 => s.resident_bytes = Some(v),
            "memguard_leak_state" if v.fract() == 0.0 && (0.0..=255.0).contains(&v) => s.leak_state = Some(v as u8),
            "http_requests_total" if v >= 0.0 => s.requests_total += v,
            "paywarden_payments_total" if v >= 0.0 => s.payments_total += v,
            _ => {}
        }
    }
    (s, samples)
}

/// The last lines of something, each cut to [`KEPT_LINE_CHARS_MAX`] characters.
struct Tail {
    lines: VecDeque<String>,
    max: usize,
}

impl Tail {
    fn new(max: usize) -> Arc<Mutex<Tail>> {
        Arc::new(Mutex::new(Tail { lines: VecDeque::with_capacity(max), max }))
    }

    fn push(&mut self, line: &str) {
        if self.lines.len() >= self.max {
            self.lines.pop_front();
        }
        self.lines.push_back(cut(line, KEPT_LINE_CHARS_MAX));
    }
}

fn lock(t: &Mutex<Tail>) -> MutexGuard<'_, Tail> {
    t.lock().unwrap_or_else(PoisonError::into_inner)
}

fn snapshot(t: &Mutex<Tail>) -> Vec<String> {
    lock(t).lines.iter().cloned().collect()
}

/// `s` cut to at most `max` characters, the last one `…` when cut.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some(_) => {
            let end = s.char_indices().nth(max.saturating_sub(1)).map_or(s.len(), |(i, _)| i);
            format!("{}…", &s[..end])
        }
    }
}

/// `line` with every word that starts with `sk_` (a secret API key) redacted.
fn redact(line: &str) -> Cow<'_, str> {
    if !line.contains("sk_") {
        return Cow::Borrowed(line);
    }
    let words: Vec<&str> = line.split(' ').map(|w| if w.starts_with("sk_") { "sk_<redacted>" } else { w }).collect();
    Cow::Owned(words.join(" "))
}

/// Reads one line into `buf` (without its `\n`), keeping at most [`LINE_BYTES_MAX`] bytes of
/// it; `false` at the end of the stream.
async fn read_line_bounded<R: AsyncBufRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.clear();
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(!buf.is_empty());
        }
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        let room = LINE_BYTES_MAX.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        r.consume(used);
        if done {
            return Ok(true);
        }
    }
}

/// Reads `reader` to its end, handing each line to `on_line` and forwarding it (redacted) to
/// the controller's stderr as `[NAME] line`.
async fn pump<R: AsyncRead + Unpin>(reader: R, name: String, stream: &'static str, mut on_line: impl FnMut(&str)) {
    let mut r = BufReader::new(reader);
    let mut buf = Vec::with_capacity(256);
    loop {
        match read_line_bounded(&mut r, &mut buf).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(instance = %name, stream, error = %e, "reading the instance's output failed");
                return;
            }
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        on_line(line);
        // Not eprintln!: a closed stderr must not panic the reader (and stop draining the pipe).
        let _ = writeln!(std::io::stderr().lock(), "[{name}] {}", redact(line));
    }
}

/// Owns the child: waits on it, delivers signals while it is not reaped, publishes the exit.
async fn supervise(mut child: Child, name: String, mut signals: mpsc::Receiver<Signal>, exit: watch::Sender<Option<String>>) {
    let status = loop {
        tokio::select! {
            r = child.wait() => break match r {
                Ok(s) => s.to_string(),
                Err(e) => format!("unknown (waiting for it failed: {e})"),
            },
            Some(sig) = signals.recv() => {
                // `id()` is None once the child is reaped: its pid may then belong to another process.
                if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok())
                    && let Err(e) = kill(Pid::from_raw(pid), sig)
                {
                    tracing::warn!(instance = %name, pid, signal = %sig, error = %e, "signalling the instance failed");
                }
            }
        }
    };
    tracing::info!(instance = %name, %status, "instance exited");
    exit.send_replace(Some(status));
    // `child` is dropped here; if waiting failed, `kill_on_drop` kills it.
}

/// The instance's tasks, aborted on drop (which kills the child: `kill_on_drop`).
struct Tasks {
    supervise: JoinHandle<()>,
    stdout: JoinHandle<()>,
    stderr: JoinHandle<()>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.supervise.abort();
        self.stdout.abort();
        self.stderr.abort();
    }
}

/// Why a start failed.
enum Failure {
    Exited,
    NotReady,
}

/// One running gateway child. `Send + Sync`: share it in an `Arc`.
pub struct Instance {
    name: String,
    addr: SocketAddr,
    pid: u32,
    admin_token: String,
    exit: watch::Receiver<Option<String>>,
    signals: mpsc::Sender<Signal>,
    announcements: Arc<Mutex<Tail>>,
    stderr_tail: Arc<Mutex<Tail>>,
    tasks: Tasks,
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("pid", &self.pid)
            .field("exit_status", &self.exit_status())
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Spawns the child (stdin null, stdout and stderr piped, `kill_on_drop`), waits for the
    /// listening line, then polls `/readyz` every 100 ms until 200. If the child exits first,
    /// or `ready_timeout` (which covers both phases) passes, the child is killed and waited for
    /// (up to [`KILL_WAIT`]), and the error carries its last stderr lines.
    ///
    /// Cancel-safe: dropping the future kills the child.
    pub async fn start(spec: InstanceSpec, ready_timeout: Duration) -> Result<Instance, InstanceError> {
        let deadline = Instant::now() + ready_timeout;
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| InstanceError::Http { url: "(readiness client)".into(), reason: error_chain(&e) })?;

        let mut cmd = Command::new(&spec.binary);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        if spec.admin_token.is_empty() {
            cmd.env_remove(ADMIN_TOKEN_ENV);
        } else {
            cmd.env(ADMIN_TOKEN_ENV, &spec.admin_token);
        }
        let mut child = cmd.spawn().map_err(|source| InstanceError::Spawn { path: spec.binary.clone(), source })?;
        let pid = child.id().unwrap_or(0);
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            // Both are piped above; `child` is dropped, which kills it.
            let source = std::io::Error::other("the child's stdout or stderr is not piped");
            return Err(InstanceError::Spawn { path: spec.binary.clone(), source });
        };
        tracing::info!(instance = %spec.name, pid, binary = %spec.binary.display(), "instance started; waiting until ready");

        let announcements = Tail::new(ANNOUNCEMENTS_MAX);
        let stderr_tail = Tail::new(STDERR_TAIL_LINES);
        let (addr_tx, addr_rx) = oneshot::channel::<SocketAddr>();
        let (sig_tx, sig_rx) = mpsc::channel(8);
        let (exit_tx, exit_rx) = watch::channel(None);

        let stdout_task = {
            let kept = announcements.clone();
            let mut addr_tx = Some(addr_tx);
            tokio::spawn(pump(stdout, spec.name.clone(), "stdout", move |line| {
                if let Some(rest) = line.strip_prefix(LISTENING_PREFIX) {
                    if let Ok(addr) = rest.trim().trim_end_matches('/').parse::<SocketAddr>()
                        && let Some(tx) = addr_tx.take()
                    {
                        let _ = tx.send(addr);
                    }
                } else if ANNOUNCEMENT_PREFIXES.iter().any(|p| line.starts_with(p)) {
                    lock(&kept).push(line);
                }
            }))
        };
        let stderr_task = {
            let kept = stderr_tail.clone();
            tokio::spawn(pump(stderr, spec.name.clone(), "stderr", move |line| lock(&kept).push(line)))
        };
        let supervise_task = tokio::spawn(supervise(child, spec.name.clone(), sig_rx, exit_tx));

        let mut inst = Instance {
            name: spec.name,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            pid,
            admin_token: spec.admin_token,
            exit: exit_rx,
            signals: sig_tx,
            announcements,
            stderr_tail,
            tasks: Tasks { supervise: supervise_task, stdout: stdout_task, stderr: stderr_task },
        };

        let outcome = tokio::select! {
            biased;
            () = inst.exited() => Err(Failure::Exited),
            addr = listening_then_ready(addr_rx, &client) => Ok(addr),
            () = tokio::time::sleep_until(deadline) => Err(Failure::NotReady),
        };
        match outcome {
            Ok(addr) => {
                inst.addr = addr;
                tracing::info!(instance = %inst.name, pid, %addr, "instance ready");
                Ok(inst)
            }
            Err(failure) => {
                inst.signal(Signal::SIGKILL).await;
                let _ = tokio::time::timeout(KILL_WAIT, inst.exited()).await;
                let _ = tokio::time::timeout(STDERR_DRAIN_WAIT, &mut inst.tasks.stderr).await;
                let stderr_tail = inst.stderr_tail();
                Err(match failure {
                    Failure::Exited => InstanceError::Exited {
                        status: inst.exit_status().unwrap_or_else(|| "unknown".into()),
                        stderr_tail,
                    },
                    Failure::NotReady => InstanceError::NotReady { waited: ready_timeout, stderr_tail },
                })
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address the child listens on (loopback).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The stdout lines an operator must see (`test secret key ...`, `fault injected: ...`),
    /// the last [`ANNOUNCEMENTS_MAX`] of them, unredacted.
    pub fn announcements(&self) -> Vec<String> {
        snapshot(&self.announcements)
    }

    /// The last [`STDERR_TAIL_LINES`] lines the child wrote on stderr.
    pub fn stderr_tail(&self) -> Vec<String> {
        snapshot(&self.stderr_tail)
    }

    /// `Some("exit status: 1")`, `Some("signal: 9 (SIGKILL)")`... once the process has exited.
    pub fn exit_status(&self) -> Option<String> {
        self.exit.borrow().clone()
    }

    /// Resolves when the process has exited. Cancel-safe; any number of callers may wait.
    pub async fn exited(&self) {
        let mut rx = self.exit.clone();
        // Err: the supervisor is gone, so is the child.
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// SIGTERM, then up to `grace` for the child to finish its in-flight requests and exit,
    /// then SIGKILL (and up to [`KILL_WAIT`] more). Returns the exit description. Idempotent:
    /// once the child has exited, returns at once.
    pub async fn stop(&self, grace: Duration) -> String {
        if let Some(s) = self.exit_status() {
            return s;
        }
        tracing::info!(instance = %self.name, pid = self.pid, ?grace, "stopping instance (SIGTERM)");
        self.signal(Signal::SIGTERM).await;
        if tokio::time::timeout(grace, self.exited()).await.is_err() {
            tracing::warn!(instance = %self.name, pid = self.pid, ?grace, "instance still running after its grace period: SIGKILL");
            self.signal(Signal::SIGKILL).await;
            if tokio::time::timeout(KILL_WAIT, self.exited()).await.is_err() {
                return format!("unknown: still running {KILL_WAIT:?} after SIGKILL");
            }
        }
        self.exit_status().unwrap_or_else(|| "unknown".into())
    }

    /// `GET /readyz` answers 200 within [`REQUEST_TIMEOUT`].
    pub async fn ready(&self, client: &reqwest::Client) -> bool {
        probe_ready(client, &self.url("/readyz")).await
    }

    /// `GET /metrics`, read into a [`Scrape`]. The body is at most [`METRICS_BYTES_MAX`] and
    /// must hold at least one well-formed sample.
    pub async fn scrape(&self, client: &reqwest::Client) -> Result<Scrape, InstanceError> {
        let url = self.url("/metrics");
        let bad = |reason: String| InstanceError::BadMetrics { url: url.clone(), reason };
        let body = match get_bounded(client, &url, None, METRICS_BYTES_MAX).await {
            Ok(b) => b,
            Err(Fetch::TooLarge) => return Err(bad(format!("body over {METRICS_BYTES_MAX} bytes"))),
            Err(Fetch::Failed(reason)) => return Err(InstanceError::Http { url, reason }),
        };
        let text = std::str::from_utf8(&body).map_err(|e| bad(format!("not UTF-8: {e}")))?;
        match parse(text) {
            (_, 0) => Err(bad("no samples in the body".into())),
            (scrape, _) => Ok(scrape),
        }
    }

    /// `GET /admin/memory/leak-report` with the admin token; the body is at most
    /// [`LEAK_REPORT_BYTES_MAX`].
    pub async fn leak_report(&self, client: &reqwest::Client) -> Result<serde_json::Value, InstanceError> {
        self.admin_json(client, reqwest::Method::GET, "/admin/memory/leak-report").await
    }

    /// `POST /admin/memory/profile/reference`: the instance keeps a heap profile taken now as
    /// the reference for [`Instance::heap_diff`].
    pub async fn mark_heap(&self, client: &reqwest::Client) -> Result<serde_json::Value, InstanceError> {
        self.admin_json(client, reqwest::Method::POST, "/admin/memory/profile/reference").await
    }

    /// `GET /admin/memory/profile/diff`: the allocation sites that grew since the reference.
    pub async fn heap_diff(&self, client: &reqwest::Client) -> Result<serde_json::Value, InstanceError> {
        self.admin_json(client, reqwest::Method::GET, "/admin/memory/profile/diff").await
    }

    /// One of the instance's memory-guard endpoints, answered as the instance answered it
    /// (status, content type, body of at most `max` bytes), for `up`'s admin API. `timeout`
    /// covers the whole exchange (a heap diff symbolizes, which takes seconds).
    pub async fn forward(&self, client: &reqwest::Client, method: reqwest::Method, path: &str, max: usize, timeout: Duration) -> Result<Forwarded, InstanceError> {
        let url = self.url(path);
        let failed = |reason: String| InstanceError::Http { url: url.clone(), reason };
        if self.admin_token.is_empty() {
            return Err(failed("the instance has no admin token, so its admin endpoints are off".into()));
        }
        let exchange = async {
            let mut resp = client.request(method, &url).bearer_auth(&self.admin_token).send().await.map_err(|e| failed(error_chain(&e)))?;
            let status = resp.status().as_u16();
            let content_type = resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/octet-stream").to_string();
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| failed(error_chain(&e)))? {
                if body.len() + chunk.len() > max {
                    return Err(failed(format!("body over {max} bytes")));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Forwarded { status, content_type, body })
        };
        tokio::time::timeout(timeout, exchange).await.unwrap_or_else(|_| Err(failed(format!("no complete answer within {timeout:?}"))))
    }

    /// An admin endpoint's JSON answer, with the admin token; at most
    /// [`LEAK_REPORT_BYTES_MAX`].
    async fn admin_json(&self, client: &reqwest::Client, method: reqwest::Method, path: &str) -> Result<serde_json::Value, InstanceError> {
        let url = self.url(path);
        let failed = |reason: String| InstanceError::Http { url: url.clone(), reason };
        if self.admin_token.is_empty() {
            return Err(failed("the instance has no admin token, so its admin endpoints are off".into()));
        }
        let body = match fetch_bounded(client, method, &url, Some(&self.admin_token), LEAK_REPORT_BYTES_MAX).await {
            Ok(b) => b,
            Err(Fetch::TooLarge) => return Err(failed(format!("body over {LEAK_REPORT_BYTES_MAX} bytes"))),
            Err(Fetch::Failed(reason)) => return Err(failed(reason)),
        };
        serde_json::from_slice(&body).map_err(|e| failed(format!("not JSON: {e}")))
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Asks the supervisor to signal the child (a no-op once it has exited).
    async fn signal(&self, sig: Signal) {
        let _ = self.signals.send(sig).await;
    }
}

/// Waits for the listening line (forever if stdout closes without one: the caller's deadline
/// or the child's exit ends the wait), then polls `/readyz` until 200.
async fn listening_then_ready(addr_rx: oneshot::Receiver<SocketAddr>, client: &reqwest::Client) -> SocketAddr {
    let Ok(addr) = addr_rx.await else {
        return std::future::pending().await;
    };
    let url = format!("http://{addr}/readyz");
    loop {
        if probe_ready(client, &url).await {
            return addr;
        }
        tokio::time::sleep(READY_POLL_INTERVAL).await;
    }
}

async fn probe_ready(client: &reqwest::Client, url: &str) -> bool {
    matches!(
        tokio::time::timeout(REQUEST_TIMEOUT, client.get(url).send()).await,
        Ok(Ok(r)) if r.status() == reqwest::StatusCode::OK
    )
}

/// An instance's answer, passed on by [`Instance::forward`].
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

pub(crate) enum Fetch {
    Failed(String),
    TooLarge,
}

/// GET `url` within [`REQUEST_TIMEOUT`] (body included); a 2xx body of at most `max` bytes.
async fn get_bounded(client: &reqwest::Client, url: &str, bearer: Option<&str>, max: usize) -> Result<Vec<u8>, Fetch> {
    fetch_bounded(client, reqwest::Method::GET, url, bearer, max).await
}

pub(crate) async fn fetch_bounded(client: &reqwest::Client, method: reqwest::Method, url: &str, bearer: Option<&str>, max: usize) -> Result<Vec<u8>, Fetch> {
    let fetch = async {
        let mut req = client.request(method, url);
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        let mut resp = req.send().await.map_err(|e| Fetch::Failed(error_chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Fetch::Failed(format!("status {status}")));
        }
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(Fetch::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| Fetch::Failed(error_chain(&e)))? {
            if body.len() + chunk.len() > max {
                return Err(Fetch::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, fetch).await {
        Ok(r) => r,
        Err(_) => Err(Fetch::Failed(format!("no complete answer within {REQUEST_TIMEOUT:?}"))),
    }
}

/// An error and its sources, `: `-separated (reqwest's own message omits the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_at_most_max_chars() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("abcde", 5), "abcde");
        assert_eq!(cut("abcdef", 5), "abcd…");
        assert_eq!(cut("ééééééé", 3).chars().count(), 3);
    }

    #[test]
    fn redact_hides_secret_keys_only() {
        assert_eq!(redact("listening on http://x"), "listening on http://x");
        assert_eq!(
            redact("test secret key for merchant 'default' (shown once): sk_test_abc123"),
            "test secret key for merchant 'default' (shown once): sk_<redacted>"
        );
        assert_eq!(redact("task_count=3 risk_level=low"), "task_count=3 risk_level=low");
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_the_stream_goes_on() {
        let mut input = vec![b'a'; LINE_BYTES_MAX * 3];
        input.extend_from_slice(b"\nshort\r\nlast");
        let mut r = BufReader::with_capacity(1024, &input[..]);
        let mut buf = Vec::new();
        assert!(read_line_bounded(&mut r, &mut buf).await.unwrap());
        assert_eq!(buf.len(), LINE_BYTES_MAX);
        assert!(read_line_bounded(&mut r, &mut buf).await.unwrap());
        assert_eq!(buf, b"short\r");
        assert!(read_line_bounded(&mut r, &mut buf).await.unwrap());
        assert_eq!(buf, b"last");
        assert!(!read_line_bounded(&mut r, &mut buf).await.unwrap());
    }
}
