//! `--tls-cert` and `--tls-key` on `serve` and on `up`'s proxy: HTTPS with a certificate made
//! by openssl for the test, payments over it, plain HTTP refused on that port, and bad files
//! refused before anything is written.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::rollout::Up;
use crate::server::{Server, BIN};

/// A self-signed certificate for 127.0.0.1 and localhost, and its key: (cert, key).
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (Debian's openssl package) makes the test certificate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

fn client_trusting(cert: &Path) -> reqwest::Client {
    let pem = std::fs::read(cert).unwrap();
    reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap()).build().unwrap()
}

const PAY: &str = "amount=1000&currency=usd&payment_method=pm_card_visa&confirm=true";

async fn pay(client: &reqwest::Client, url: &str, key: &str, idem: &str) -> serde_json::Value {
    let r = client
        .post(format!("{url}/v1/payment_intents"))
        .bearer_auth(key)
        .header("Idempotency-Key", idem)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(PAY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn serve_speaks_https_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "a");
    let data = dir.path().join("data");
    let srv = Server::spawn(&data, None, &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]).await;
    assert!(srv.url.starts_with("https://127.0.0.1:"), "{}", srv.url);
    let client = client_trusting(&cert);
    let v = pay(&client, &srv.url, &srv.key, "tls-1").await;
    assert_eq!(v["status"], "succeeded");
    // A replay over a second connection.
    let again = pay(&client_trusting(&cert), &srv.url, &srv.key, "tls-1").await;
    assert_eq!(again["id"], v["id"]);
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = srv.url.replace("https://", "http://");
    assert!(reqwest::Client::new().get(format!("{plain}/healthz")).send().await.is_err(), "plain HTTP must not be served");
    // A client that does not trust the certificate refuses it.
    assert!(reqwest::Client::new().get(format!("{}/healthz", srv.url)).send().await.is_err());
}

#[test]
fn bad_certificate_files_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed(dir.path(), "a");
    let (_, other_key) = self_signed(dir.path(), "b");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "-----BEGIN NOTHING-----\n").unwrap();
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        let o = Command::new(BIN).args(["serve", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()]).args(args).env("PAYWARDEN_LOG", "warn").output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (c, k, j) = (cert.to_str().unwrap(), other_key.to_str().unwrap(), junk.to_str().unwrap());
    let cases: [(&[&str], &str); 4] = [
        (&["--tls-cert", c, "--tls-key", k], "do not make a usable pair"),
        (&["--tls-cert", j, "--tls-key", k], "--tls-cert"),
        (&["--tls-cert", c, "--tls-key", j], "--tls-key"),
        (&["--tls-cert", c], "--tls-key"),
    ];
    for (args, says) in cases {
        let (code, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: expected {says:?} in {err}");
        assert!(!data.exists(), "{args:?}: nothing may be written");
    }
}

#[tokio::test]
async fn up_terminates_tls_on_its_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "a");
    let data = dir.path().join("data");
    let (up, lines) = Up::start_with(&data, Some("tls-admin-token-0123456789"), &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]).await;
    assert!(up.proxy.starts_with("https://127.0.0.1:"), "{lines:?}");
    let v = pay(&client_trusting(&cert), &up.proxy, &up.key, "up-tls-1").await;
    assert_eq!(v["status"], "succeeded");
    let plain = up.proxy.replace("https://", "http://");
    assert!(reqwest::Client::new().get(format!("{plain}/healthz")).send().await.is_err(), "plain HTTP must not be served");
}
