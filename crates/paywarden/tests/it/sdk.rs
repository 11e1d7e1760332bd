//! The official stripe-python SDK against a real server (tests/sdk/scenario.py).

use std::process::Command;

use crate::server::Server;

#[tokio::test]
async fn stripe_python_sdk_scenario() {
    let has_sdk = Command::new("python3").args(["-c", "import stripe"]).status().map(|s| s.success()).unwrap_or(false);
    if !has_sdk {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have the stripe package: python3 -m pip install -r tests/requirements.txt"
        );
        eprintln!("SKIPPED stripe_python_sdk_scenario: `pip install -r tests/requirements.txt` to run it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path()).await;
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
    drop(srv);
    let out = crate::server::paywarden(&["ledger", "verify", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
