//! The official stripe-python SDK against a real server (tests/sdk/scenario.py), on SQLite
//! and on PostgreSQL.

use std::process::Command;

use crate::server::Server;

/// Runs tests/sdk/scenario.py against a fresh `serve` (with `extra` arguments); false when
/// the SDK is missing outside CI (the test is skipped).
async fn scenario(test: &str, dir: &std::path::Path, extra: &[&str]) -> bool {
    let has_sdk = Command::new("python3").args(["-c", "import stripe"]).status().map(|s| s.success()).unwrap_or(false);
    if !has_sdk {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have the stripe package: python3 -m pip install -r tests/requirements.txt"
        );
        eprintln!("SKIPPED {test}: `pip install -r tests/requirements.txt` to run it");
        return false;
    }
    let srv = Server::spawn(dir, None, extra).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/scenario.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .env("PAYWARDEN_URL", &srv.url)
        .env("PAYWARDEN_KEY", &srv.key)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scenario failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
    true
}

#[tokio::test]
async fn stripe_python_sdk_scenario() {
    let dir = tempfile::tempdir().unwrap();
    if !scenario("stripe_python_sdk_scenario", dir.path(), &[]).await {
        return;
    }
    let out = crate::server::paywarden(&["ledger", "verify", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test]
async fn stripe_python_sdk_scenario_on_postgresql() {
    let Some(db) = paywarden_store::testing::PgDb::create("stripe_python_sdk_scenario_on_postgresql").await else { return };
    let dir = tempfile::tempdir().unwrap();
    if !scenario("stripe_python_sdk_scenario_on_postgresql", dir.path(), &["--database", &db.url]).await {
        return;
    }
    assert!(!dir.path().join(paywarden_store::sqlite::DB_FILE).exists(), "no SQLite database beside PostgreSQL");
    let out = crate::server::paywarden(&["ledger", "verify", "--database", &db.url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
