//! What a new operator trips on in the first hour (issue 20), each as it was seen: a first
//! start on a busy port, two servers on one data dir, a mistyped data dir or flag, one-shot
//! commands that bury their result in logs, a rollback recorded under the wrong version, and
//! the memory guard out of reach under `up`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::rollout::{text, Up, TOKEN};
use crate::server::{Server, BIN};

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env_remove("PAYWARDEN_LOG").env_remove("PAYWARDEN_ADMIN_TOKEN").output().expect("run paywarden")
}

/// Runs a long-running command that must fail at start (within 30 s).
fn run_refused(args: &[&str], dir: &Path) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("PAYWARDEN_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..300 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().ok();
    panic!("paywarden {args:?} did not exit: it should have refused to start");
}

#[test]
fn a_first_start_on_a_busy_port_writes_nothing_so_the_next_start_prints_the_key() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = run_refused(&["serve", "--listen", &addr], &data);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains(&format!("binding {addr}")), "{}", text(&o));
    assert!(!data.exists(), "serve created {} before it could listen", data.display());
    let o = run_refused(&["up", "--listen", &addr, "--admin-listen", "127.0.0.1:0"], &data);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("binding --listen"), "{}", text(&o));
    assert!(!data.exists(), "up created {} (and an admin token nobody saw) before it could listen", data.display());
}

#[tokio::test]
async fn a_second_server_on_one_data_dir_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path()).await;
    let o = run_refused(&["serve", "--listen", "127.0.0.1:0"], dir.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("is in use by paywarden serve (pid ") && t.contains("another --data-dir"), "{t}");
    let o = run_refused(&["up", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"], dir.path());
    assert!(text(&o).contains("is in use by paywarden serve"), "{}", text(&o));
    assert!(!dir.path().join("rollout").exists(), "the refused up wrote its rollout dir");
    // Keys and the books stay reachable while it serves.
    let k = run(&["keys", "create", "--merchant", "shop", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(k.status.success(), "{}", text(&k));
    drop(first);
    // Free again once the holder has stopped (a kill -9 frees it too: the kernel drops the lock).
    let again = Server::spawn(dir.path(), Some("unused".into()), &[]).await;
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_up_on_one_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_up, _) = Up::start(dir.path(), Some(TOKEN)).await;
    let o = run_refused(&["up", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--admin-token", TOKEN], dir.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("is in use by paywarden up (pid "), "{t}");
}

#[tokio::test]
async fn one_shot_commands_refuse_a_data_dir_without_a_database_and_print_only_their_result() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("paywarden-dta");
    for args in [vec!["keys", "create", "--merchant", "shop"], vec!["ledger", "verify"]] {
        let mut a = args.clone();
        a.extend(["--data-dir", typo.to_str().unwrap()]);
        let o = run(&a);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("no paywarden database in") && text(&o).contains("serve"), "{}", text(&o));
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
    let srv = Server::start(dir.path()).await;
    let data = dir.path().to_str().unwrap();
    for args in [vec!["keys", "create", "--merchant", "shop", "--data-dir", data], vec!["ledger", "verify", "--data-dir", data], vec!["migrate", "--plan", "--data-dir", data]] {
        let o = run(&args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!stderr.contains(" INFO "), "{args:?} logged at info without being asked:\n{stderr}");
    }
    drop(srv);
}

/// The usage line `--help` prints for `paywarden SUB`.
fn usage_of(sub: &[&str]) -> String {
    let mut args = sub.to_vec();
    args.push("--help");
    let o = run(&args);
    String::from_utf8_lossy(&o.stdout).lines().find(|l| l.starts_with("Usage: ")).unwrap_or_else(|| panic!("no usage for {sub:?}")).to_string()
}

#[test]
fn a_mistyped_flag_gets_a_useful_tip_and_the_commands_own_usage_line() {
    let o = run(&["up", "--port", "4242"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("tip: --listen takes an address and port"), "{t}");
    assert!(!t.contains("stop-grace"), "a far-fetched suggestion: {t}");
    assert!(t.contains(&usage_of(&["up"])), "{t}");
    // A near miss keeps clap's suggestion; a far one gets none.
    let t = text(&run(&["deploy", "--versoin", "v2"]));
    assert!(t.contains("a similar flag exists: --version"), "{t}");
    let t = text(&run(&["serve", "--xyzzy"]));
    assert!(!t.contains("tip:"), "{t}");
    // Every command's usage line, after a wrong flag, is the one its --help shows: no
    // suggested flag shown as if it were required.
    for sub in [
        vec!["serve"],
        vec!["up"],
        vec!["deploy"],
        vec!["rollback"],
        vec!["status"],
        vec!["history"],
        vec!["load"],
        vec!["judge"],
        vec!["review"],
        vec!["drill"],
        vec!["migrate"],
        vec!["keys", "create"],
        vec!["ledger", "verify"],
    ] {
        let mut args = sub.clone();
        args.push("--nonsense-flag-x");
        let t = text(&run(&args));
        let want = usage_of(&sub);
        assert!(t.contains(&want), "{sub:?}: wanted {want:?} in:\n{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_up_every_instances_memory_guard_answers_with_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let (up, _) = Up::start(dir.path(), Some(TOKEN)).await;
    let admin = up.admin.clone();
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{admin}{path}")).bearer_auth(TOKEN).send();
    let list: Value = get("/admin/instances").await.unwrap().json().await.unwrap();
    assert_eq!(list["instances"][0]["role"], "stable", "{list}");
    let r = get("/admin/instances/stable/memory/leak-report").await.unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert!(report["state"].is_string(), "{report}");
    let alerts: Value = get("/admin/instances/stable/alerts").await.unwrap().json().await.unwrap();
    assert!(alerts.get("active").is_some(), "{alerts}");
    let r = http.post(format!("{admin}/admin/instances/stable/memory/profile/reference")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = get("/admin/instances/stable/memory/profile/diff").await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = get("/admin/instances/stable/pprof/heap").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.unwrap()[..2], &[0x1f, 0x8b], "a gzipped pprof");
    // Clear errors: no canary now, an unknown endpoint, no token.
    let r = get("/admin/instances/canary/memory/leak-report").await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("no canary instance runs now; the instances are: stable"));
    let r = get("/admin/instances/stable/admin/payments").await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("memory/leak-report"));
    let r = http.get(format!("{admin}/admin/instances/stable/memory/leak-report")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // `status` shows each instance's memory guard verdict.
    let s = up.status();
    assert!(s["stable"]["memory"]["leak_state"].is_string(), "{s}");
    let t = text(&up.cli(&["status"]));
    assert!(t.contains("memory guard") && t.lines().any(|l| l.trim_start().starts_with("stable") && l.contains(" ok")), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_after_a_promotion_is_recorded_under_the_release_rolled_back_and_tables_line_up() {
    let _g = crate::HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (up, _) = Up::start(dir.path(), Some(TOKEN)).await;
    let out = tempfile::tempdir().unwrap();
    let load = up.load(100, 75, out.path());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let o = up.cli_async(&["deploy", "--version", "v2", "--plan", "fast"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = up.cli_async(&["rollback"]).await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("(v2)"), "the rollback names the release rolled back: {}", text(&o));
    crate::rollout::finish_load(load, out.path()).await;
    let h: Value = serde_json::from_slice(&up.cli(&["history", "--json"]).stdout).unwrap();
    let last = h["deployments"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["version"].as_str(), last["baseline_version"].as_str(), last["outcome"].as_str()), (Some("v2"), Some("v0.1.0"), Some("rolled_back")), "{last}");
    // Columns line up: every row's fields start where the header's do.
    let t = String::from_utf8_lossy(&up.cli(&["history"]).stdout).to_string();
    let lines: Vec<&str> = t.lines().filter(|l| !l.trim().is_empty()).collect();
    let col = |line: &str, word: &str| line.find(word).unwrap_or_else(|| panic!("{word} in {line}"));
    let outcome_at = col(lines[0], "outcome");
    for l in &lines[1..] {
        let found = ["promoted", "rolled_back"].iter().find_map(|w| l.find(w));
        assert_eq!(found, Some(outcome_at), "misaligned:\n{t}");
    }
}
