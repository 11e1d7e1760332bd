//! `paywarden load` end to end against a real `serve`: the payments mix at a fixed rate with
//! every check passing, summary.json and report.html written, the HTML loading in headless
//! Chromium without console errors, thresholds gating the exit code, and scenario file errors
//! pointing at the line and column.

use std::process::Command;

use crate::server::{Server, BIN};

fn load(srv: &Server, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["load", "--target", &srv.url, "--key", &srv.key])
        .args(extra)
        .output()
        .expect("run paywarden load")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payments_mix_runs_on_schedule_checks_out_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path()).await;
    let out = tempfile::tempdir().unwrap();
    let o = tokio::task::spawn_blocking({
        let (url, key, path) = (srv.url.clone(), srv.key.clone(), out.path().to_path_buf());
        move || {
            Command::new(BIN)
                .args(["load", "--target", &url, "--key", &key, "--rate", "100", "--duration", "6s"])
                .args(["--threshold", "error_rate<1%", "--threshold", "dropped<1%", "--out"])
                .arg(&path)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    // Open loop: 600 iterations scheduled, all started, none dropped, none failed.
    assert_eq!(s["iterations_scheduled"], 600, "{s}");
    assert_eq!(s["iterations_started"], 600);
    assert_eq!(s["dropped_iterations"], 0);
    assert_eq!(s["error_rate"], 0.0, "{}", s["errors"]);
    // Every created payment was retrieved at the end and is in the state its flow left.
    assert!(s["checks_verified"].as_u64().unwrap() > 400, "{s}");
    assert_eq!(s["checks_mismatched"], 0);
    // The end-of-run reads are the verification's, reported apart from the scenario's load.
    let v = &s["verification"];
    assert!(v["requests"].as_u64().unwrap() >= s["checks_verified"].as_u64().unwrap(), "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{v}");
    assert!(s["latency_ms"]["retrieve"].is_null() || s["latency_ms"]["retrieve"]["count"] == 0, "no scenario flow retrieves: {}", s["latency_ms"]);
    for op in ["create", "confirm", "capture", "refund", "all"] {
        let p = &s["latency_ms"][op];
        assert!(p["count"].as_u64().unwrap() > 0, "{op}: {p}");
        assert!(p["p50"].as_f64().unwrap() <= p["p99"].as_f64().unwrap());
    }
    // The target's memory was sampled and judged.
    assert!(s["memory"]["rss_end_bytes"].as_u64().unwrap() > 0, "{}", s["memory"]);
    assert!(s["thresholds"].as_array().unwrap().iter().all(|t| t["passed"] == true));
    assert!(stdout.contains("p99"), "{stdout}");

    // The HTML report is one file that a browser loads without a console error.
    let html = out.path().join("report.html");
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(text.contains("<svg"), "charts inline");
    let Some(chromium) = ["chromium", "/usr/bin/chromium"].into_iter().find(|c| Command::new(c).arg("--version").output().is_ok()) else {
        panic!("chromium is missing: apt-get install chromium (.ci/run installs it)");
    };
    let profile = tempfile::tempdir().unwrap();
    let b = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&b.stdout);
    let log = String::from_utf8_lossy(&b.stderr);
    assert!(dom.contains("<svg"), "Chromium rendered the report: {log}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE(") || l.contains("Uncaught")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_threshold_fails_the_run_and_a_bad_scenario_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path()).await;
    let o = tokio::task::block_in_place(|| load(&srv, &["--scenario", "noop", "--rate", "50", "--duration", "2s", "--threshold", "p99<1us"]));
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8_lossy(&o.stdout).contains("p99<1us"));

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "name = \"x\"\n[executor]\nkind = \"constant-arrival-rate\"\nrate = -5\nduration = \"10s\"\n").unwrap();
    let o = tokio::task::block_in_place(|| load(&srv, &["--scenario", file.path().to_str().unwrap()]));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(":4:"), "line 4 is the bad rate: {err}");

    let o = tokio::task::block_in_place(|| {
        Command::new(BIN).args(["load", "--target", &srv.url, "--key", "sk_test_not_a_key", "--duration", "1s"]).output().unwrap()
    });
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refused --key"), "{}", String::from_utf8_lossy(&o.stderr));

    // --duration shortens a file's closed loop and keeps it closed.
    let vus = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(vus.path(), "[executor]\nkind = \"constant-vus\"\nvus = 2\nduration = \"1h\"\n").unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = tokio::task::block_in_place(|| {
        load(&srv, &["--scenario", vus.path().to_str().unwrap(), "--duration", "1s", "--out", out.path().to_str().unwrap()])
    });
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    assert!(s["executor"].as_str().unwrap().contains("constant-vus"), "{}", s["executor"]);
    assert!(s["duration_s"].as_f64().unwrap() < 30.0);
    assert!(s["iterations_completed"].as_u64().unwrap() > 0);

    let o = tokio::task::block_in_place(|| load(&srv, &["--threshold", "p99<50"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unit"), "{}", String::from_utf8_lossy(&o.stderr));

    // --connections: 1 to 10000, named at both edges; one connection still serves a run.
    for bad in ["0", "10001"] {
        let o = tokio::task::block_in_place(|| load(&srv, &["--scenario", "noop", "--rate", "10", "--duration", "1s", "--connections", bad]));
        assert_eq!(o.status.code(), Some(2), "--connections {bad}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("--connections must be 1 to 10000"), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for good in ["1", "10000"] {
        let out = tempfile::tempdir().unwrap();
        let o = tokio::task::block_in_place(|| {
            load(&srv, &["--scenario", "noop", "--rate", "50", "--duration", "1s", "--connections", good, "--out", out.path().to_str().unwrap()])
        });
        assert!(o.status.success(), "--connections {good}: {}", String::from_utf8_lossy(&o.stderr));
        let s: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
        assert_eq!(s["errors_total"], 0, "--connections {good}: {s}");
        assert!(s["iterations_completed"].as_u64().unwrap() >= 45, "--connections {good}: {s}");
    }
}
