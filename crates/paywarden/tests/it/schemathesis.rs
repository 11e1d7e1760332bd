//! schemathesis (PyPI) against a real `serve`: every operation in /v1/openapi.json fuzzed
//! from its schema, with and without valid data, and the payment flow driven through the
//! document's OpenAPI links (create -> confirm -> capture -> refund). Every response must be
//! a non-5xx whose status, content type, headers and body the document declares; then the
//! ledger must still balance; on SQLite and on PostgreSQL. tests/schemathesis/ holds the configuration and Stripe's form
//! encoding; RELIABILITY.md ("API fuzzing") the long run.

use std::path::Path;
use std::process::Command;

use crate::server::{paywarden, Server};

const ADMIN_TOKEN: &str = "schemathesis-admin-token";

fn dir() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/schemathesis")
}

fn has_schemathesis() -> bool {
    let ok = Command::new("python3").args(["-c", "import schemathesis"]).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "CI must have schemathesis: python3 -m pip install -r tests/requirements.txt");
        eprintln!("SKIPPED schemathesis: `pip install -r tests/requirements.txt` to run it");
    }
    ok
}

/// One `schemathesis run` against `url`'s document; returns its report. Fails the test on a
/// non-zero exit (any failed check, error or unreachable operation).
async fn run(url: &str, token: &str, args: &[&str], report: &Path) -> String {
    // CI's sizes are in schemathesis.toml; PAYWARDEN_SCHEMATHESIS_EXAMPLES makes a long run.
    let examples = std::env::var("PAYWARDEN_SCHEMATHESIS_EXAMPLES").map(|n| vec!["--max-examples".to_string(), n]).unwrap_or_default();
    // A fixed seed keeps CI repeatable; a long run may pick its own.
    let seed = std::env::var("PAYWARDEN_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20240812".into());
    let out = tokio::process::Command::new("python3")
        .args(["-c", "import sys; sys.argv[0] = 'schemathesis'; from schemathesis.cli import schemathesis; schemathesis()"])
        .args(["--config-file", &format!("{}/schemathesis.toml", dir()), "run", &format!("{url}/v1/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(&examples)
        .args(["--seed", &seed, "--no-color", "--workers", "1"])
        .args(["--report", "junit", "--report-junit-path"])
        .arg(report)
        .args(args)
        .env("SCHEMATHESIS_HOOKS", format!("{}/hooks.py", dir()))
        // schemathesis keeps a cache of past failures in .schemathesis/ under its working directory.
        .current_dir(report.parent().expect("report in the test's directory"))
        .output()
        .await
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success(), "schemathesis found failures\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    stdout
}

/// "N generated, N passed" from the summary: every generated case passed every check.
fn cases(report: &str) -> u64 {
    let line = report.lines().skip_while(|l| !l.starts_with("Test cases:")).nth(1).unwrap_or_else(|| panic!("no summary:\n{report}"));
    let numbers: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
    assert!(numbers.len() >= 2 && numbers[0] == numbers[1], "not every case passed: {line}");
    assert!(line.contains("passed") && !line.contains("fail"), "{line}");
    numbers[0]
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    if !has_schemathesis() {
        return;
    }
    let _heavy = crate::HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (merchant, admin) = fuzz(dir.path(), &[]).await;
    let verify = paywarden(&["ledger", "verify", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    eprintln!("schemathesis on SQLite: {merchant} merchant API cases and {admin} operator cases, all checks passed; ledger balanced");
}

/// The same against PostgreSQL: another store behind the same API, with its own errors to map.
#[tokio::test]
async fn schemathesis_on_postgresql() {
    if !has_schemathesis() {
        return;
    }
    let Some(db) = paywarden_store::testing::PgDb::create("schemathesis_on_postgresql").await else { return };
    let _heavy = crate::HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (merchant, admin) = fuzz(dir.path(), &["--database", &db.url]).await;
    let verify = paywarden(&["ledger", "verify", "--database", &db.url]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    eprintln!("schemathesis on PostgreSQL: {merchant} merchant API cases and {admin} operator cases, all checks passed; ledger balanced");
}

/// Runs the three passes against a fresh `serve` (with `extra` arguments) and stops it;
/// returns the merchant and operator case counts.
async fn fuzz(dir: &Path, extra: &[&str]) -> (u64, u64) {
    let mut args = vec!["--admin-token", ADMIN_TOKEN];
    args.extend_from_slice(extra);
    let srv = Server::spawn(dir, None, &args).await;

    // The merchant API: the schema's examples, the edges of each schema (coverage), random
    // valid and invalid requests (fuzzing).
    let merchant = run(
        &srv.url,
        &srv.key,
        &["--exclude-path-regex", "^/(admin|debug)/", "--phases", "examples,coverage,fuzzing"],
        &dir.join("merchant.xml"),
    )
    .await;
    let mut merchant_cases = cases(&merchant);
    // Then flows through the document's links (create -> confirm -> capture -> refund), in a
    // run of their own: after the other phases schemathesis gives this one only a few scenarios.
    let flows = run(&srv.url, &srv.key, &["--exclude-path-regex", "^/(admin|debug)/", "--phases", "stateful"], &dir.join("flows.xml")).await;
    merchant_cases += cases(&flows);
    let links = flows.lines().find(|l| l.contains("API Links:")).unwrap_or_else(|| panic!("no stateful phase:\n{flows}"));
    let covered: u64 = links.split_whitespace().find_map(|w| w.parse().ok()).expect("links covered");
    assert!(covered >= 15, "the stateful phase followed the document's links: {links}");

    // The operator's endpoints with the admin token (links are only between merchant operations).
    let admin = run(
        &srv.url,
        ADMIN_TOKEN,
        &["--include-path-regex", "^/(admin|debug|healthz|readyz|metrics)", "--phases", "examples,coverage,fuzzing"],
        &dir.join("admin.xml"),
    )
    .await;
    // Whatever was thrown at it, the money must still add up: the caller verifies the ledger
    // once the server has stopped.
    drop(srv);
    (merchant_cases, cases(&admin))
}
