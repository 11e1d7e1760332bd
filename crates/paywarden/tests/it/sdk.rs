//! The official stripe-python SDK against a real server (tests/sdk/scenario.py), on SQLite
//! and on PostgreSQL.

use std::process::Command;

use crate::server::Server;

/// Runs tests/sdk/scenario.py against a fresh `serve` (with `extra` arguments); false when
/// the SDK is missing outside CI (the test is skipped).
async fn scenario(test: &str, dir: &std::path::Path, extra: &[&str]) -> bool {
    scenario_on(test, dir, extra, None).await
}

/// The same; with `log`, the server logs at debug level into that file.
async fn scenario_on(test: &str, dir: &std::path::Path, extra: &[&str], log: Option<&std::path::Path>) -> bool {
    let has_sdk = Command::new("python3").args(["-c", "import stripe"]).status().map(|s| s.success()).unwrap_or(false);
    if !has_sdk {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have the stripe package: python3 -m pip install -r tests/requirements.txt"
        );
        eprintln!("SKIPPED {test}: `pip install -r tests/requirements.txt` to run it");
        return false;
    }
    let srv = match log {
        Some(log) => Server::spawn_logging_to(dir, extra, &[("PAYWARDEN_LOG", "debug")], log).await,
        None => Server::spawn(dir, None, extra).await,
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/scenario.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .env("PAYWARDEN_URL", &srv.url)
        .env("PAYWARDEN_KEY", &srv.key)
        .env("PAYWARDEN_PUBLISHABLE_KEY", srv.publishable.as_deref().expect("a fresh serve prints its publishable key"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scenario failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
    // The server stops (SIGTERM) and flushes its log before the caller looks.
    drop(srv);
    true
}

/// Digit runs of 13 to 19 that pass the Luhn check and start as card numbers do (2 to 6), in
/// `bytes`: what a leaked card number looks like. Timestamps (1...) and shorter numbers are
/// not candidates.
fn card_like_numbers(bytes: &[u8]) -> Vec<String> {
    let luhn = |d: &[u8]| {
        let sum: u32 = d.iter().rev().enumerate().map(|(i, c)| {
            let v = u32::from(c - b'0');
            if i % 2 == 1 { if v * 2 > 9 { v * 2 - 9 } else { v * 2 } } else { v }
        }).sum();
        sum.is_multiple_of(10)
    };
    bytes
        .split(|b| !b.is_ascii_digit())
        .filter(|run| (13..=19).contains(&run.len()) && (b'2'..=b'6').contains(&run[0]) && luhn(run))
        .map(|run| String::from_utf8_lossy(run).into_owned())
        .collect()
}

/// After the SDK scenario (which tokenizes 4242424242424242 with CVC 123, among the test
/// cards it pays with) and `ledger verify`, no card number and no CVC is in any file of the
/// data dir (the database, its WAL, the keys), in the server's debug log, or in the verify
/// report.
#[tokio::test]
async fn no_card_number_or_cvc_reaches_the_disk_the_log_or_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("serve.log");
    if !scenario_on("no_card_number_or_cvc_reaches_the_disk_the_log_or_a_report", dir.path(), &[], Some(&log)).await {
        return;
    }
    let verify = crate::server::paywarden(&["ledger", "verify", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(verify.status.success());
    assert!(std::fs::metadata(&log).unwrap().len() > 0, "the debug log is empty: nothing was scanned");
    let mut scanned = vec![(log.display().to_string(), std::fs::read(&log).unwrap()), ("ledger verify".to_string(), verify.stdout)];
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            scanned.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    assert!(scanned.iter().any(|(p, _)| p.ends_with("paywarden.db")), "the database was scanned");
    for (what, bytes) in &scanned {
        let found = card_like_numbers(bytes);
        assert!(found.is_empty(), "{what}: card-like numbers {found:?}");
        let text = String::from_utf8_lossy(bytes);
        for cvc in ["cvc=123", "cvc]=123", "\"cvc\":\"123\"", "\"cvc\": \"123\"", "'cvc': '123'"] {
            assert!(!text.contains(cvc), "{what}: contains {cvc}");
        }
    }
    // The scanner itself finds what it looks for.
    assert_eq!(card_like_numbers(b"x 4242424242424242,4000000000000002 1764000000000 y"), vec!["4242424242424242", "4000000000000002"]);
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
