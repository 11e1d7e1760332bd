//! Starts `paywarden serve` as a child process and talks to it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_paywarden");

pub struct Server {
    pub url: String,
    pub key: String,
    /// The publishable key a fresh data dir's first start prints.
    pub publishable: Option<String>,
    child: Child,
    reaped: bool,
}

impl Server {
    /// Starts on a fresh data dir and takes the printed key of the default merchant.
    pub async fn start(dir: &Path) -> Server {
        Server::spawn(dir, None, &[]).await
    }

    /// Starts on an existing data dir (no key is printed then).
    pub async fn restart(dir: &Path, key: &str) -> Server {
        Server::spawn(dir, Some(key.to_string()), &[]).await
    }

    pub async fn spawn(dir: &Path, key: Option<String>, extra: &[&str]) -> Server {
        Server::spawn_with_env(dir, key, extra, &[]).await
    }

    pub async fn spawn_with_env(dir: &Path, key: Option<String>, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::spawn_full(dir, key, extra, env, Stdio::inherit()).await
    }

    /// As [`Server::spawn`], its log (stderr) written to `log`.
    pub async fn spawn_logging_to(dir: &Path, extra: &[&str], env: &[(&str, &str)], log: &Path) -> Server {
        let file = std::fs::File::create(log).expect("log file");
        Server::spawn_full(dir, None, extra, env, Stdio::from(file)).await
    }

    async fn spawn_full(dir: &Path, key: Option<String>, extra: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("PAYWARDEN_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn paywarden serve");
        let stdout = child.stdout.take().expect("stdout");
        let fresh = key.is_none();
        let (url, key, publishable) = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut url = None;
            let mut key = key;
            let mut publishable = None;
            while let Some(Ok(line)) = lines.next() {
                if let Some(u) = line.strip_prefix("paywarden listening on ") {
                    url = Some(u.trim().to_string());
                    if !fresh {
                        break;
                    }
                }
                if let Some(k) = line.split("(shown once): ").nth(1) {
                    key = Some(k.trim().to_string());
                    // The publishable key follows on the next line.
                    if let Some(Ok(next)) = lines.next() {
                        publishable = next.rsplit(": ").next().filter(|k| k.starts_with("pk_test_")).map(str::to_string);
                    }
                    break;
                }
            }
            // Keep draining so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            (url.expect("serve printed no URL"), key.expect("serve printed no key"), publishable)
        })
        .await
        .unwrap();
        Server { url, key, publishable, child, reaped: false }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        self.reaped = true;
    }

    pub async fn create_intent(&self, client: &reqwest::Client, key: &str, idem: &str, body: &str) -> (u16, serde_json::Value) {
        let res = client
            .post(format!("{}/v1/payment_intents", self.url))
            .bearer_auth(key)
            .header("Idempotency-Key", idem)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.to_string())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(serde_json::Value::Null))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // SIGTERM first, so a normal test exercises the graceful path.
        terminate(self.child.id());
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn terminate(pid: u32) {
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
}

pub fn paywarden(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("PAYWARDEN_LOG", "warn").output().expect("run paywarden")
}

pub fn create_key(dir: &Path, merchant: &str) -> String {
    let out = paywarden(&["keys", "create", "--data-dir", dir.to_str().unwrap(), "--merchant", merchant]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("sk_test_"), "{key}");
    key
}
