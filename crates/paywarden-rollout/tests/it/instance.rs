//! `instance`: one supervised gateway child, against a fake gateway (a Python 3 script: these
//! tests cannot count on `target/*/paywarden` being built) and `parse_scrape` unit cases.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use paywarden_rollout::instance::{parse_scrape, Instance, InstanceError, InstanceSpec, Scrape, KEPT_LINE_CHARS_MAX, STDERR_TAIL_LINES};

const TOKEN: &str = "fake-admin-token-0123456789";
const START: Duration = Duration::from_secs(10);

/// The fake gateway. `serve --listen 127.0.0.1:0 --data-dir D [flags]`; writes its pid, argv
/// and `FAKE_MARK` into D; prints the listening line, a fault line per `--fault X` and a secret
/// key line; serves /healthz, /readyz, /metrics, /admin/memory/leak-report (bearer token from
/// `PAYWARDEN_ADMIN_TOKEN`); exits 0 on SIGTERM. Misbehaviour: `--exit-now` (exits 3 after 30
/// stderr lines and one of 2000 characters), `--never-ready` (/readyz 503), `--ignore-term`,
/// `--slow-start S` (sleeps before binding), `--chatty` (writes 512 KiB on stderr and stdout
/// before answering /metrics: blocks unless the pipes are drained).
const FAKE: &str = r##"
import http.server, json, os, signal, sys, threading, time

args = sys.argv[1:]
if not args or args[0] != "serve":
    print("usage: fake serve --listen ADDR --data-dir DIR", file=sys.stderr)
    sys.exit(2)
listen = args[args.index("--listen") + 1]
data_dir = args[args.index("--data-dir") + 1]
with open(os.path.join(data_dir, "pid"), "w") as f:
    f.write(str(os.getpid()))
with open(os.path.join(data_dir, "argv"), "w") as f:
    f.write("\n".join(args))
with open(os.path.join(data_dir, "mark"), "w") as f:
    f.write(os.environ.get("FAKE_MARK", ""))

if "--exit-now" in args:
    for i in range(30):
        print(f"log line {i}", file=sys.stderr)
    print("x" * 2000, file=sys.stderr)
    print("error: cannot open the store: disk on fire", file=sys.stderr, flush=True)
    sys.exit(3)
if "--slow-start" in args:
    time.sleep(float(args[args.index("--slow-start") + 1]))
if "--ignore-term" in args:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

TOKEN = os.environ.get("PAYWARDEN_ADMIN_TOKEN", "")
METRICS = """# HELP http_requests HTTP requests answered, by route template and status.
# TYPE http_requests counter
http_requests_total{route="/v1/payment_intents",status="200",version="9.9.9"} 120
http_requests_total{route="/v1/payment_intents",status="500",version="9.9.9"} 3
http_requests_total{route="/readyz",status="200",version="9.9.9"} 7
# TYPE paywarden_payments counter
paywarden_payments_total{outcome="ok",version="9.9.9"} 100
paywarden_payments_total{outcome="declined",version="9.9.9"} 20
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes{version="9.9.9"} 52428800
paywarden_heap_allocated_bytes{version="9.9.9"} 1.5e7
memguard_leak_state{version="9.9.9"} 1
http_request_duration_seconds_bucket{le="+Inf",route="/v1/payment_intents",version="9.9.9"} 123
# EOF
"""

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        sys.stderr.write("access: " + (fmt % a) + "\n")

    def answer(self, code, body, ctype="text/plain"):
        b = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def do_GET(self):
        if self.path == "/healthz":
            self.answer(200, "ok")
        elif self.path == "/readyz":
            self.answer(503 if "--never-ready" in args else 200, "ready?")
        elif self.path == "/metrics":
            if "--chatty" in args:
                for _ in range(4):
                    sys.stderr.write("e" * 131072 + "\n")
                    sys.stdout.write("o" * 131072 + "\n")
                sys.stderr.flush()
                sys.stdout.flush()
            self.answer(200, METRICS, "application/openmetrics-text; version=1.0.0; charset=utf-8")
        elif self.path == "/admin/memory/leak-report":
            if TOKEN and self.headers.get("Authorization") == "Bearer " + TOKEN:
                self.answer(200, json.dumps({"state": "suspect", "growth_bytes_per_second": 1234.5}), "application/json")
            else:
                self.answer(401, "unauthorized")
        else:
            self.answer(404, "not found")

host, port = listen.rsplit(":", 1)
srv = http.server.ThreadingHTTPServer((host, int(port)), Handler)
print(f"paywarden listening on http://{host}:{srv.server_address[1]}", flush=True)
i = 0
while "--fault" in args[i:]:
    i = args.index("--fault", i) + 1
    print(f"fault injected: {args[i]}", flush=True)
print("test secret key for merchant 'default' (shown once): sk_test_fake0123456789", flush=True)

def on_term(*_):
    threading.Thread(target=srv.shutdown).start()
if "--ignore-term" not in args:
    signal.signal(signal.SIGTERM, on_term)
srv.serve_forever()
srv.server_close()
print("graceful shutdown", file=sys.stderr, flush=True)
sys.exit(0)
"##;

/// The Python interpreter's real path (not a pyenv shim), for the fake's shebang.
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("these tests need python3 on PATH");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

struct Fake {
    _dir: tempfile::TempDir,
    script: PathBuf,
    data: PathBuf,
}

fn fake() -> Fake {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fake-paywarden");
    std::fs::write(&script, format!("#!{}\n{FAKE}", python())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    Fake { _dir: dir, script, data }
}

fn spec(f: &Fake, name: &str, args: &[&str]) -> InstanceSpec {
    InstanceSpec {
        name: name.into(),
        binary: f.script.clone(),
        data_dir: f.data.clone(),
        args: args.iter().map(|a| a.to_string()).collect(),
        admin_token: TOKEN.into(),
        env: vec![("FAKE_MARK".into(), "marked".into())],
    }
}

/// `Instance::start`, retried while the script is "text file busy" (a child another test forks
/// at the moment the script is written may briefly hold it open for writing).
async fn start(spec: InstanceSpec, timeout: Duration) -> Result<Instance, InstanceError> {
    for _ in 0..20 {
        match Instance::start(spec.clone(), timeout).await {
            Err(InstanceError::Spawn { source, .. }) if source.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r => return r,
        }
    }
    panic!("{} stayed busy", spec.binary.display());
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn pid_of(data: &Path) -> u32 {
    std::fs::read_to_string(data.join("pid")).unwrap().trim().parse().unwrap()
}

/// No such process, or a zombie.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn starts_and_reports_its_address_announcements_and_figures() {
    let f = fake();
    let inst = start(spec(&f, "v2 canary", &["--fault", "latency=50ms"]), START).await.unwrap();
    assert_eq!(inst.name(), "v2 canary");
    assert!(inst.addr().ip().is_loopback());
    assert_ne!(inst.addr().port(), 0);
    assert_eq!(inst.pid(), pid_of(&f.data));
    assert_eq!(inst.exit_status(), None);

    let argv = std::fs::read_to_string(f.data.join("argv")).unwrap();
    let expected = ["serve", "--listen", "127.0.0.1:0", "--data-dir", f.data.to_str().unwrap(), "--fault", "latency=50ms"];
    assert_eq!(argv.lines().collect::<Vec<_>>(), expected);
    assert!(!argv.contains(TOKEN), "the admin token must not be on the command line");
    assert_eq!(std::fs::read_to_string(f.data.join("mark")).unwrap(), "marked");

    assert_eq!(
        inst.announcements(),
        [
            "fault injected: latency=50ms",
            "test secret key for merchant 'default' (shown once): sk_test_fake0123456789",
        ]
    );

    let c = client();
    assert!(inst.ready(&c).await);
    let s = inst.scrape(&c).await.unwrap();
    assert_eq!(
        s,
        Scrape {
            heap_allocated_bytes: Some(1.5e7),
            resident_bytes: Some(52_428_800.0),
            leak_state: Some(1),
            requests_total: 130.0,
            payments_total: 120.0,
        }
    );
    assert_eq!(inst.stop(Duration::from_secs(5)).await, "exit status: 0");
}

#[tokio::test]
async fn leak_report_sends_the_admin_token() {
    let f = fake();
    let inst = start(spec(&f, "stable", &[]), START).await.unwrap();
    let report = inst.leak_report(&client()).await.unwrap();
    assert_eq!(report["state"], "suspect");
    inst.stop(Duration::from_secs(5)).await;

    // Without a token the fake answers 401: the token above came from the environment.
    let f = fake();
    let inst = start(InstanceSpec { admin_token: String::new(), ..spec(&f, "no token", &[]) }, START).await.unwrap();
    let err = inst.leak_report(&client()).await.unwrap_err();
    assert!(matches!(err, InstanceError::Http { .. }), "{err}");
    inst.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_child_that_exits_before_ready_is_reported_with_its_stderr_tail() {
    let f = fake();
    let err = start(spec(&f, "broken", &["--exit-now"]), START).await.unwrap_err();
    let InstanceError::Exited { status, stderr_tail } = &err else { panic!("{err:?}") };
    assert_eq!(status, "exit status: 3");
    assert_eq!(stderr_tail.len(), STDERR_TAIL_LINES, "{stderr_tail:?}");
    assert_eq!(stderr_tail.last().unwrap(), "error: cannot open the store: disk on fire");
    assert_eq!(stderr_tail[0], "log line 12");
    let long = &stderr_tail[STDERR_TAIL_LINES - 2];
    assert!(long.starts_with("xxx") && long.chars().count() == KEPT_LINE_CHARS_MAX, "{long}");
    assert!(err.to_string().contains("disk on fire"), "{err}");
    assert!(gone(pid_of(&f.data)));
}

#[tokio::test]
async fn a_child_that_is_never_ready_times_out_and_is_killed() {
    let f = fake();
    let t0 = Instant::now();
    let err = start(spec(&f, "stuck", &["--never-ready"]), Duration::from_secs(1)).await.unwrap_err();
    let elapsed = t0.elapsed();
    let InstanceError::NotReady { waited, stderr_tail } = &err else { panic!("{err:?}") };
    assert_eq!(*waited, Duration::from_secs(1));
    assert!(elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert!(stderr_tail.iter().any(|l| l.contains("/readyz") && l.contains("503")), "{stderr_tail:?}");
    assert!(gone(pid_of(&f.data)), "the child must be killed and reaped");
}

#[tokio::test]
async fn a_child_that_never_prints_its_address_times_out_and_is_killed() {
    let f = fake();
    let err = start(spec(&f, "silent", &["--slow-start", "30"]), Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(err, InstanceError::NotReady { .. }), "{err:?}");
    assert!(gone(pid_of(&f.data)), "the child must be killed and reaped");
}

#[tokio::test]
async fn stop_sends_sigterm_and_the_child_exits_gracefully() {
    let f = fake();
    let inst = start(spec(&f, "v1 stable", &[]), START).await.unwrap();
    let t0 = Instant::now();
    assert_eq!(inst.stop(Duration::from_secs(5)).await, "exit status: 0");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(inst.exit_status().as_deref(), Some("exit status: 0"));
    tokio::time::timeout(Duration::from_secs(1), inst.exited()).await.expect("exited() resolves once exited");
    // Idempotent.
    assert_eq!(inst.stop(Duration::from_secs(5)).await, "exit status: 0");
    assert!(!inst.ready(&client()).await);
    assert!(gone(inst.pid()));
}

#[tokio::test]
async fn a_child_that_ignores_sigterm_gets_sigkill_after_the_grace_period() {
    let f = fake();
    let inst = start(spec(&f, "stubborn", &["--ignore-term"]), START).await.unwrap();
    let t0 = Instant::now();
    let status = inst.stop(Duration::from_millis(500)).await;
    let elapsed = t0.elapsed();
    assert!(status.contains("signal: 9") && status.contains("SIGKILL"), "{status}");
    assert!(elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert!(gone(inst.pid()));
}

#[tokio::test]
async fn many_callers_can_wait_for_the_exit() {
    let f = fake();
    let inst = std::sync::Arc::new(start(spec(&f, "waited", &[]), START).await.unwrap());
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let i = inst.clone();
            tokio::spawn(async move { i.exited().await })
        })
        .collect();
    // A waiter dropped early does not disturb the others.
    assert!(tokio::time::timeout(Duration::from_millis(100), inst.exited()).await.is_err());
    inst.stop(Duration::from_secs(5)).await;
    for w in waiters {
        tokio::time::timeout(Duration::from_secs(2), w).await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn output_keeps_being_drained_after_start() {
    let f = fake();
    let inst = start(spec(&f, "chatty", &["--chatty"]), START).await.unwrap();
    let c = client();
    // Each scrape makes the fake write 512 KiB on each pipe first, far beyond a pipe's buffer.
    for _ in 0..2 {
        assert_eq!(inst.scrape(&c).await.unwrap().requests_total, 130.0);
    }
    let tail = inst.stderr_tail();
    assert!(tail.len() <= STDERR_TAIL_LINES);
    assert!(tail.iter().all(|l| l.chars().count() <= KEPT_LINE_CHARS_MAX), "stderr tail lines are cut");
    inst.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn dropping_an_instance_kills_the_child() {
    let f = fake();
    let inst = start(spec(&f, "dropped", &[]), START).await.unwrap();
    let pid = inst.pid();
    drop(inst);
    let t0 = Instant::now();
    while !gone(pid) {
        assert!(t0.elapsed() < Duration::from_secs(3), "pid {pid} still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_missing_binary_is_a_spawn_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("no-such-paywarden");
    let s = InstanceSpec {
        name: "ghost".into(),
        binary: binary.clone(),
        data_dir: dir.path().into(),
        args: vec![],
        admin_token: TOKEN.into(),
        env: vec![],
    };
    let err = Instance::start(s, START).await.unwrap_err();
    let InstanceError::Spawn { path, source } = &err else { panic!("{err:?}") };
    assert_eq!(path, &binary);
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(err.to_string().contains(binary.to_str().unwrap()), "{err}");
}

#[tokio::test]
async fn a_file_that_is_not_executable_is_a_spawn_error() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("paywarden");
    std::fs::write(&binary, "not a program").unwrap();
    let s = InstanceSpec {
        name: "plain file".into(),
        binary: binary.clone(),
        data_dir: dir.path().into(),
        args: vec![],
        admin_token: String::new(),
        env: vec![],
    };
    let err = Instance::start(s, START).await.unwrap_err();
    assert!(matches!(&err, InstanceError::Spawn { path, .. } if path == &binary), "{err:?}");
}

#[test]
fn spec_debug_hides_the_token_and_env_values() {
    let s = InstanceSpec {
        name: "x".into(),
        binary: "/bin/paywarden".into(),
        data_dir: "/tmp/d".into(),
        args: vec![],
        admin_token: TOKEN.into(),
        env: vec![("SECRETISH".into(), "hunter2".into())],
    };
    let d = format!("{s:?}");
    assert!(!d.contains(TOKEN) && !d.contains("hunter2"), "{d}");
    assert!(d.contains("SECRETISH"), "{d}");
}

#[test]
fn parse_scrape_sums_counters_over_labels() {
    let text = r#"
# HELP http_requests HTTP requests answered.
# TYPE http_requests counter
http_requests_total{route="/v1/payment_intents",status="200"} 10
http_requests_total{route="/v1/payment_intents",status="402"} 2.5
http_requests_total 1
http_requests_created{route="/v1/payment_intents",status="200"} 1700000000
paywarden_payments_total{outcome="ok"} 4
paywarden_payments_total{outcome="error"} 1 1700000000000
"#;
    let s = parse_scrape(text);
    assert_eq!(s.requests_total, 13.5);
    assert_eq!(s.payments_total, 5.0);
}

#[test]
fn parse_scrape_reads_gauges() {
    let text = "process_resident_memory_bytes 1048576\n\
                paywarden_heap_allocated_bytes{version=\"1.0\"} 2.5e6\n\
                memguard_leak_state{version=\"1.0\"} 2\n";
    let s = parse_scrape(text);
    assert_eq!(s.resident_bytes, Some(1_048_576.0));
    assert_eq!(s.heap_allocated_bytes, Some(2.5e6));
    assert_eq!(s.leak_state, Some(2));
}

#[test]
fn parse_scrape_missing_series_are_none() {
    assert_eq!(parse_scrape(""), Scrape::default());
    let s = parse_scrape("# TYPE http_requests counter\n# EOF\npaywarden_build_info 1\n");
    assert_eq!(s, Scrape::default());
    assert_eq!(s.heap_allocated_bytes, None);
    assert_eq!(s.leak_state, None);
    assert_eq!(s.requests_total, 0.0);
}

#[test]
fn parse_scrape_ignores_comments_nan_and_garbage() {
    let text = r#"
# http_requests_total 1000
#http_requests_total 1000
http_requests_total{route="/a",status="200"} NaN
http_requests_total{route="/b",status="200"} +Inf
http_requests_total{route="/c",status="200"} -3
http_requests_total{route="/d",status="200"} twelve
http_requests_total{route="/e",status="200"
http_requests_total{route="/f",status="200"}7
http_requests_total
<html>http_requests_total 99</html>
process_resident_memory_bytes NaN
paywarden_heap_allocated_bytes -1
memguard_leak_state 1.5
memguard_leak_state 300
http_requests_total{route="/ok",status="200"} 2
"#;
    let s = parse_scrape(text);
    assert_eq!(s.requests_total, 2.0);
    assert_eq!(s.resident_bytes, None);
    assert_eq!(s.heap_allocated_bytes, None);
    assert_eq!(s.leak_state, None);
}

#[test]
fn parse_scrape_handles_awkward_label_values_and_exemplars() {
    let text = r#"http_requests_total{route="/x} 1000",status="2\"00"} 3
http_requests_total{route="a\\",status="b"} 4 # {trace_id="abc"} 1.0 1700000000
paywarden_payments_total{outcome="ok"}	6
memguard_leak_state 0
memguard_leak_state 1
"#;
    let s = parse_scrape(text);
    assert_eq!(s.requests_total, 7.0);
    assert_eq!(s.payments_total, 6.0);
    assert_eq!(s.leak_state, Some(1), "the last value of a repeated gauge counts");
}

/// Compile-time: the controller shares instances between tasks and spawns these futures.
#[allow(dead_code)]
fn instance_and_its_futures_are_send(spec: InstanceSpec, inst: &Instance, c: &reqwest::Client) {
    fn send<T: Send>(_: T) {}
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Instance>();
    send(Instance::start(spec, START));
    send(inst.stop(START));
    send(inst.exited());
    send(inst.ready(c));
    send(inst.scrape(c));
    send(inst.leak_report(c));
}
