//! `paywarden judge`: the canary judge for pods something else runs (Kubernetes), against real
//! gateway processes: it reads their `/metrics`, passes a good canary, fails a leaking one,
//! guards its verdict with the admin token, and runs with deploy/kubernetes/judge.yaml's own
//! arguments.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::{Server, BIN};
use crate::HEAVY;

const TOKEN: &str = "judge-test-admin-token-0123";
const PAY: &str = "amount=1000&currency=usd&payment_method=pm_card_visa&confirm=true";
/// As instances under `up` and the Kubernetes manifests run: exact heap figures.
const MALLOC_CONF: (&str, &str) = ("_RJEM_MALLOC_CONF", "tcache:false,lg_prof_sample:14");

struct Judge {
    child: Child,
    verdict_url: String,
}

impl Judge {
    fn start(args: &[String]) -> Judge {
        let mut child = Command::new(BIN)
            .arg("judge")
            .args(args)
            .env("PAYWARDEN_ADMIN_TOKEN", TOKEN)
            .env("PAYWARDEN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn paywarden judge");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = lines.next().expect("judge printed nothing").expect("stdout");
        std::thread::spawn(move || for _ in lines {});
        let verdict_url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("no URL in {line:?}")).trim_end_matches(';').to_string();
        Judge { child, verdict_url }
    }

    async fn verdict(&self, client: &reqwest::Client) -> Value {
        let r = client.get(&self.verdict_url).bearer_auth(TOKEN).send().await.expect("verdict");
        assert_eq!(r.status(), 200);
        r.json().await.expect("verdict JSON")
    }
}

impl Drop for Judge {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").trim_end_matches('/').to_string()
}

/// Sends confirmed payments to both gateways, as many to each, until `done` says so of the
/// judge's verdict or `limit` passes; the last verdict.
async fn drive_until(judge: &Judge, gateways: [&Server; 2], limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let client = reqwest::Client::new();
    let started = Instant::now();
    for round in 0u64.. {
        let sends = gateways.iter().flat_map(|g| (0..4).map(move |i| (*g, i))).map(|(g, i)| {
            let client = client.clone();
            // Keys unique to this canary: a replayed key is answered without a write, faster.
            async move { g.create_intent(&client, &g.key, &format!("judge-{}-{round}-{i}", judge.verdict_url), PAY).await }
        });
        for (status, body) in futures::future::join_all(sends).await {
            assert_eq!(status, 200, "{body}");
        }
        if round % 5 == 4 {
            let v = judge.verdict(&client).await;
            if done(&v) || started.elapsed() > limit {
                return v;
            }
        }
    }
    unreachable!()
}

#[tokio::test]
async fn judge_passes_a_good_canary_and_fails_a_leaking_one_from_their_metrics() {
    let _heavy = HEAVY.lock().await;
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let admin = ["--admin-token", TOKEN];
    let stable = Server::spawn_with_env(dirs[0].path(), None, &admin, &[MALLOC_CONF]).await;
    let good = Server::spawn_with_env(dirs[1].path(), None, &admin, &[MALLOC_CONF]).await;
    let args = |canary: &Server| -> Vec<String> {
        ["--admin-listen", "127.0.0.1:0", "--canary", &host_port(&canary.url), "--stable", &host_port(&stable.url), "--interval", "200ms", "--latency-window", "5s", "--plan", "fast"]
            .map(String::from)
            .to_vec()
    };
    let judge = Judge::start(&args(&good));
    let client = reqwest::Client::new();

    // The verdict needs the admin token; a merchant key never works there.
    let r = client.get(&judge.verdict_url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client.get(&judge.verdict_url).bearer_auth(&stable.key).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("merchant keys"));

    // Before traffic: inconclusive, never a pass.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v = judge.verdict(&client).await;
    assert_eq!(v["score"], "inconclusive", "{v}");
    assert_eq!(v["mode"], "pods");

    let v = drive_until(&judge, [&good, &stable], Duration::from_secs(60), |v| v["score"] == "pass").await;
    assert_eq!(v["score"], "pass", "the same build against itself: {v:#}");
    assert_eq!(v["canary"]["pods"], 1);
    let (c, s) = (v["canary"]["requests"].as_u64().unwrap(), v["stable"]["requests"].as_u64().unwrap());
    assert!(c >= 50 && s >= 50, "both sides were judged on traffic: {c} and {s}");
    drop(judge);
    drop(good);

    // As on Kubernetes: a fresh canary against a stable that has served for a while.
    let fresh = Server::spawn_with_env(dirs[3].path(), None, &admin, &[MALLOC_CONF]).await;
    let judge = Judge::start(&args(&fresh));
    let v = drive_until(&judge, [&fresh, &stable], Duration::from_secs(60), |v| v["score"] == "pass").await;
    assert_eq!(v["score"], "pass", "a fresh canary of the same build against a warm stable: {v:#}");
    drop(judge);
    drop(fresh);

    // A canary that keeps 4 KiB per confirmed payment, as the 2024-08-12 update did.
    let leaky = Server::spawn_with_env(dirs[2].path(), None, &["--admin-token", TOKEN, "--fault", "leak=4096"], &[MALLOC_CONF]).await;
    let judge = Judge::start(&args(&leaky));
    let v = drive_until(&judge, [&leaky, &stable], Duration::from_secs(60), |v| {
        v["metrics"].as_array().is_some_and(|ms| ms.iter().any(|m| m["metric"] == "heap_growth_per_request" && m["score"] == "fail"))
    })
    .await;
    assert_eq!(v["score"], "fail", "a leaking canary: {v:#}");
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.contains("heap_growth_per_request") || reason.contains("leak"), "{reason}");
    let heap = v["metrics"].as_array().unwrap().iter().find(|m| m["metric"] == "heap_growth_per_request").unwrap();
    assert!(heap["canary"].as_f64().unwrap() > 2048.0, "the canary keeps about 4 KiB a payment: {heap}");
}

/// deploy/kubernetes/judge.yaml's container arguments, in order.
fn manifest_args() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/kubernetes/judge.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines().skip_while(|l| l.trim() != "args:").skip(1);
    let mut args = Vec::new();
    for l in lines.by_ref() {
        let Some(item) = l.trim().strip_prefix("- ") else { break };
        args.push(item.trim().trim_matches('"').to_string());
    }
    assert!(args.len() >= 3, "no args in judge.yaml: {args:?}");
    args
}

#[tokio::test]
async fn judge_runs_with_the_kubernetes_manifests_arguments() {
    let mut args = manifest_args();
    assert_eq!(args.remove(0), "judge", "judge.yaml must run `paywarden judge`");
    // Only the listening address changes (a free port on loopback).
    for a in args.iter_mut() {
        if a.starts_with("--admin-listen") {
            *a = "--admin-listen=127.0.0.1:0".into();
        }
    }
    let judge = Judge::start(&args);
    let client = reqwest::Client::new();
    let r = client.get(judge.verdict_url.replace("/admin/canary/verdict", "/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the probes' /healthz needs no token");
    // Outside a cluster the Services' names do not resolve: no canary, inconclusive.
    let v = judge.verdict(&client).await;
    assert_eq!(v["score"], "inconclusive", "{v}");
    assert_eq!(v["phase"], "no canary pods", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("paywarden-canary-pods:4242"), "{v}");
}

#[test]
fn judge_refuses_bad_arguments_before_it_listens() {
    let run = |args: &[&str], token: &str| {
        let out = Command::new(BIN).arg("judge").args(args).env("PAYWARDEN_ADMIN_TOKEN", token).env("PAYWARDEN_LOG", "warn").output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let ok = ["--admin-listen", "127.0.0.1:0", "--canary", "127.0.0.1:1", "--stable", "127.0.0.1:2"];
    let cases: [(&[&str], &str, &str); 9] = [
        (&ok, "short", "at least 16 characters"),
        (&ok, "sk_test_0123456789abcdef", "merchant key"),
        (&["--admin-listen", "127.0.0.1:0", "--canary", "pods", "--stable", "127.0.0.1:2"], TOKEN, "not host:port"),
        (&["--admin-listen", "127.0.0.1:0", "--canary", "127.0.0.1:1", "--stable", "x:0"], TOKEN, "not host:port"),
        (&["--admin-listen", "127.0.0.1:0", "--canary", "127.0.0.1:1", "--stable", "127.0.0.1:2", "--interval", "50ms"], TOKEN, "--interval"),
        (&["--admin-listen", "127.0.0.1:0", "--canary", "127.0.0.1:1", "--stable", "127.0.0.1:2", "--interval", "61s"], TOKEN, "--interval"),
        (&["--admin-listen", "127.0.0.1:0", "--canary", "127.0.0.1:1", "--stable", "127.0.0.1:2", "--plan", "/nonexistent.toml"], TOKEN, "--plan"),
        (&["--admin-listen", "127.0.0.1:0", "--canary", "127.0.0.1:1", "--stable", "127.0.0.1:2", "--latency-window", "9s"], TOKEN, "--latency-window"),
        (&["--admin-listen", "127.0.0.1:0", "--canary", "127.0.0.1:1", "--stable", "127.0.0.1:2", "--latency-window", "3601s"], TOKEN, "--latency-window"),
    ];
    for (args, token, says) in cases {
        let (code, err) = run(args, token);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: expected {says:?} in {err}");
    }
    // The limits' edges are accepted: --interval 100ms and 60s, --latency-window twice the
    // interval and an hour.
    for (interval, window) in [("100ms", "200ms"), ("60s", "3600s")] {
        let mut child = Command::new(BIN)
            .arg("judge")
            .args(ok)
            .args(["--interval", interval, "--latency-window", window])
            .env("PAYWARDEN_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let line = BufReader::new(child.stdout.take().unwrap()).lines().next().unwrap().unwrap();
        assert!(line.starts_with("paywarden judge: verdict on"), "{interval}: {line}");
        child.kill().ok();
        child.wait().ok();
    }
}
