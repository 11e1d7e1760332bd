//! Rollbacks across a schema change, end to end: `paywarden up` with the shipped release, then
//! a second build from the same sources that carries one extra expand migration (a new table
//! and a new nullable column on `payment_intents`, `examples/schema_expand.rs`) deployed under
//! payment load, promoted, rolled back with `paywarden rollback`, and `up` restarted: every step
//! serves payments with no failed request and the books balance, on SQLite and on PostgreSQL.
//! A stable that crashes during a rollout restarts on the migrated schema. A third build with a
//! contract migration (`examples/schema_contract.rs`) is refused by the schema gate before
//! anything starts; deployed with the override, the previous release can no longer be rolled
//! back to, and says why.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::rollout::{finish_load, text, Up, TOKEN};
use crate::server::BIN;
use crate::HEAVY;

/// A second build of paywarden, made by `cargo test` from `examples/` (next to the binary).
fn example(name: &str) -> String {
    let path: PathBuf = Path::new(BIN).parent().expect("the binary's directory").join("examples").join(name);
    assert!(path.exists(), "{} is missing: `cargo test --workspace` builds it (or `cargo build -p paywarden --examples`)", path.display());
    path.display().to_string()
}

fn migration_names(list: &Value) -> Vec<String> {
    list.as_array().into_iter().flatten().filter_map(|m| m["name"].as_str()).map(String::from).collect()
}

/// Polls `status` until `cond` holds (at most `secs`).
async fn wait_status(up: &Up, secs: u64, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = up.status();
        if cond(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A payment through the proxy; its status code.
async fn pay(up: &Up, key: &str, n: usize) -> u16 {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/payment_intents", up.proxy))
        .bearer_auth(key)
        .header("Idempotency-Key", format!("schema-{n}-{}", std::process::id()))
        .body("amount=1000&currency=usd&payment_method=pm_card_visa&confirm=true")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

/// The post-deployment review `up` writes after deployment `id`.
async fn review_md(dir: &Path, id: &str) -> String {
    let path = paywarden_review::reviews_dir(&dir.join("rollout"), id).join("review.md");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < deadline, "no review at {}", path.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::read_to_string(path).unwrap()
}

/// Deploy the expand build under load, promote it, roll back, restart `up`; `extra` selects
/// the database (`--database URL` or nothing for SQLite).
async fn expand_rollout_round_trip(dir: &Path, extra: &[&str]) -> (Up, String) {
    let expand = example("schema_expand");
    let (up, _) = Up::start_with(dir, Some(TOKEN), extra).await;
    let key = up.key.clone();
    assert!(key.starts_with("sk_test_"));
    let s = up.status();
    assert_eq!(s["schema"]["refused"], Value::Null, "{s}");
    assert!(!migration_names(&s["schema"]["applied"]).contains(&"9001_loyalty_accounts".to_string()));
    assert!(s["schema"]["applied"][0]["release"].as_str().unwrap().starts_with("v0.1.0 (sha256 "), "the stable's label: {s}");

    // Deploy under load, promote.
    let out = tempfile::tempdir().unwrap();
    let load = up.load(100, 75, out.path());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    let o = up.cli_async(&["deploy", "--version", "v2", "--binary", &expand, "--plan", "fast"]).await;
    eprintln!("v2 with an expand migration promoted in {:?}", t0.elapsed());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("schema gate pass") && t.contains("9001_loyalty_accounts (expand)"), "{t}");
    let s = up.status();
    assert_eq!(s["stable"]["version"], "v2", "{s}");
    let d = &s["last_deployment"];
    assert_eq!(d["schema"]["outcome"], "pass", "{d}");
    let line = d["verdict"]["metrics"].as_array().unwrap().iter().find(|m| m["metric"] == "schema").cloned().expect("a schema line in the verdict");
    assert_eq!(line["score"], "pass", "{line}");
    assert!(line["detail"].as_str().unwrap().contains("previous release serves on the schema v2"), "{line}");
    assert!(line["baseline"].is_number(), "the baseline's error rate: {line}");
    let applied = &s["schema"]["applied"];
    let row = applied.as_array().unwrap().iter().find(|m| m["name"] == "9001_loyalty_accounts").cloned().expect("9001 in the history");
    assert_eq!(row["kind"], "expand");
    assert!(row["release"].as_str().unwrap().starts_with("v2 (sha256 "), "{row}");
    let deployment = d["id"].as_str().unwrap().to_string();

    // Regret: the previous release starts on the migrated schema and takes all traffic.
    let o = up.cli_async(&["rollback"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let s = up.status();
    assert_eq!(s["stable"]["version"], "v0.1.0", "{s}");
    assert_eq!(migration_names(&s["schema"]["unknown"]), ["9001_loyalty_accounts"], "v0.1.0 runs on v2's expand: {s}");
    let summary = finish_load(load, out.path()).await;
    assert_eq!(summary["errors_total"], 0, "deploy, promotion and rollback failed requests: {}", summary["errors"]);
    assert_eq!(summary["checks_mismatched"], 0);
    assert!(summary["checks_verified"].as_u64().unwrap() > 1000, "{summary}");

    // The review shows the gate and the history.
    let md = review_md(dir, &deployment).await;
    assert!(md.contains("## Schema") && md.contains("**Schema gate: pass.**") && md.contains("9001_loyalty_accounts"), "{md}");
    assert!(md.contains("The previous release on the new schema"), "{md}");
    let status_text = text(&up.cli(&["status"]));
    assert!(status_text.contains("9001_loyalty_accounts") && status_text.contains("does not know"), "{status_text}");

    // `up` restarted after the rollback: the previous release starts on the migrated schema.
    drop(up);
    let (mut up, lines) = Up::start_with(dir, Some(TOKEN), extra).await;
    assert!(lines.iter().any(|l| l.starts_with("stable release v0.1.0")), "{lines:?}");
    up.key = key.clone();
    let out = tempfile::tempdir().unwrap();
    let load = up.load(100, 8, out.path());
    let summary = finish_load(load, out.path()).await;
    assert_eq!(summary["errors_total"], 0, "after the restart: {}", summary["errors"]);
    assert!(summary["checks_verified"].as_u64().unwrap() > 100, "{summary}");
    (up, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expand_migration_rolls_out_and_back_on_sqlite_and_a_crashed_stable_restarts_on_it() {
    let _g = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (up, key) = expand_rollout_round_trip(dir.path(), &[]).await;

    // A stable that crashes while a release's canary runs on the migrated schema restarts on it.
    let plan = dir.path().join("hold.toml");
    std::fs::write(&plan, "name = \"hold\"\n[[steps]]\nweight = 20\nbake = \"10m\"\n[[steps]]\nweight = 100\nbake = \"10m\"\n").unwrap();
    let o = up.cli_async(&["deploy", "--version", "v2", "--binary", &example("schema_expand"), "--plan", plan.to_str().unwrap(), "--detach"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let s = wait_status(&up, 60, "the canary never got ready", |s| s["canary"]["pid"].is_u64()).await;
    let pid = s["stable"]["pid"].as_u64().unwrap();
    assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    wait_status(&up, 60, "the stable was not restarted", |s| s["stable"]["pid"].as_u64().is_some_and(|p| p != pid)).await;
    let ev = up.events();
    assert!(ev.iter().any(|e| e["kind"] == "stable_started" && e["restart"] == true), "no restart event");
    for n in 0..20 {
        assert_eq!(pay(&up, &key, n).await, 200, "payment {n} after the stable's restart");
    }
    let o = up.cli_async(&["rollback"]).await;
    assert!(o.status.success(), "{}", text(&o));
    drop(up);

    let v = Command::new(BIN).args(["ledger", "verify", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(v.status.success(), "{}", text(&v));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expand_migration_rolls_out_and_back_on_postgresql() {
    let Some(db) = paywarden_store::testing::PgDb::create("an_expand_migration_rolls_out_and_back_on_postgresql").await else { return };
    let _g = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (up, _) = expand_rollout_round_trip(dir.path(), &["--database", &db.url]).await;
    drop(up);
    assert!(!dir.path().join(paywarden_store::sqlite::DB_FILE).exists(), "everything was on PostgreSQL");
    let v = Command::new(BIN).args(["ledger", "verify", "--database", &db.url]).output().unwrap();
    assert!(v.status.success(), "{}", text(&v));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_migration_is_refused_by_the_schema_gate_and_the_override_is_recorded() {
    let _g = HEAVY.lock().await;
    let contract = example("schema_contract");
    let dir = tempfile::tempdir().unwrap();
    let (up, _) = Up::start(dir.path(), Some(TOKEN)).await;
    let plan_before = Command::new(BIN).args(["migrate", "--plan", "--json", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(plan_before.status.success(), "{}", text(&plan_before));
    let events_before = up.events().len();

    // Refused before anything starts, naming the migration and saying what to do.
    let o = up.cli_async(&["deploy", "--version", "v3", "--binary", &contract, "--plan", "fast"]).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    for want in ["409", "schema gate", "9002_drop_loyalty_note (contract)", "v0.1.0, the stable release and the rollback target", "Ship the expand part first", "allow_contract = true"] {
        assert!(t.contains(want), "{want:?} in {t}");
    }
    let s = up.status();
    assert!(s["canary"].is_null() && s["baseline"].is_null() && s["last_deployment"].is_null(), "nothing started: {s}");
    assert_eq!(up.events().len(), events_before, "nothing written to the event log");
    let plan_after = Command::new(BIN).args(["migrate", "--plan", "--json", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(plan_after.stdout, plan_before.stdout, "nothing written to the database");
    let h: Value = serde_json::from_slice(&up.cli(&["history", "--json"]).stdout).unwrap();
    assert_eq!(h["deployments"].as_array().unwrap().len(), 0);

    // The override: deployed, the baseline started first, the gate's verdict recorded.
    let out = tempfile::tempdir().unwrap();
    let load = up.load(100, 40, out.path());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let o = up.cli_async(&["deploy", "--version", "v3", "--binary", &contract, "--plan", "fast", "--allow-contract"]).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("schema gate overridden"), "{t}");
    let summary = finish_load(load, out.path()).await;
    assert_eq!(summary["errors_total"], 0, "{}", summary["errors"]);
    let s = up.status();
    let id = s["last_deployment"]["id"].as_str().unwrap().to_string();
    assert_eq!(s["last_deployment"]["schema"]["outcome"], "overridden");
    let ev = up.events();
    let gate = ev.iter().find(|e| e["kind"] == "schema_gate").expect("the gate in the event log");
    assert_eq!((gate["outcome"].as_str(), gate["allow_contract"].as_bool()), (Some("overridden"), Some(true)), "{gate}");
    let ready = ev.iter().find(|e| e["kind"] == "instances_ready").expect("instances_ready");
    assert_eq!(ready["start_order"], "baseline, then canary", "the previous release started before the contract: {ready}");
    let md = review_md(dir.path(), &id).await;
    assert!(md.contains("**Schema gate: overridden.**") && md.contains("allow_contract = true"), "{md}");

    // The previous release cannot run on the contracted schema: the rollback says so and the
    // stable keeps serving.
    let o = up.cli_async(&["rollback"]).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    for want in ["cannot roll back to v0.1.0", "9002_drop_loyalty_note", "contract", "v3 (sha256 ", "v3 stays the stable release"] {
        assert!(t.contains(want), "{want:?} in {t}");
    }
    assert_eq!(up.status()["stable"]["version"], "v3");
    // And the old binary refuses to start on it by itself (once `up` is stopped and its data-dir
    // lock released), naming the migration and the release that applied it.
    drop(up);
    let o = Command::new(BIN).args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir.path()).output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("9002_drop_loyalty_note is a contract migration applied by v3 (sha256 ") && t.contains("cannot run on this schema"), "{t}");
}
