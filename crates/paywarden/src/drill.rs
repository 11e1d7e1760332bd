//! `paywarden drill` and `paywarden review`.
//!
//! A drill replays an incident on a sandbox: on a temporary data dir it starts `paywarden up`
//! (this binary, a child process), drives steady payment traffic through its proxy with the
//! load generator (in this process), deploys a bad release (this binary with a `--fault`), and
//! lets paywarden detect, diagnose and roll back: or, with `--manual`, waits for a person to
//! do it. Then it scores the run beside the 2024-08-12 figures and writes `scorecard.json`, the
//! HTML and Markdown review, the incident report and the load report into `--out`.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use paywarden_review::scorecard::{self, LoadFigures, Scenario, SCENARIOS};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::rollout::{random_token, Admin, AdminArgs};

/// Longest a whole drill may take before it gives up (the load stops by itself too).
pub const DRILL_DURATION_MAX: Duration = Duration::from_secs(20 * 60);
/// Longest `up` may take to print its addresses and key.
const UP_START_MAX: Duration = Duration::from_secs(60);
/// Load after the rollout ended, so the review shows the recovery.
const AFTER_S: u64 = 2;
/// Highest drill rate (payment flows per second).
pub const DRILL_RATE_MAX: f64 = 2_000.0;

#[derive(clap::Args)]
pub struct DrillArgs {
    /// aug12 (the 2024 leak), slow-leak, error-spike, latency, or good (must promote).
    #[arg(long)]
    scenario: String,
    /// Where the scorecard, the review, the incident report and the load report go.
    #[arg(long)]
    out: PathBuf,
    /// The rollout plan: default (30 s bakes), fast (3 s, for CI) or a TOML plan file.
    #[arg(long, default_value = "default")]
    plan: String,
    /// Payment flows per second through the proxy (open loop).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Traffic on the stable release alone before the deploy.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Training: automatic rollback off; you get the alert and roll back by hand
    /// (`paywarden status`, `paywarden rollback` with the admin URL and token printed).
    #[arg(long)]
    manual: bool,
    /// In training, how long the drill waits for your rollback before it rolls back itself
    /// (and scores the drill failed).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    manual_timeout: Duration,
    /// Keep the temporary data dir (its path is printed) instead of deleting it.
    #[arg(long)]
    keep_data: bool,
}

#[derive(clap::Args)]
pub struct ReviewArgs {
    /// The deployment (`paywarden history` lists them).
    deployment_id: String,
    /// Where review.html, review.md and (for an incident) incident.md go.
    #[arg(long)]
    out: PathBuf,
    /// The data dir `paywarden up` runs on.
    #[arg(long, env = "PAYWARDEN_DATA_DIR", default_value = "./paywarden-data")]
    data_dir: PathBuf,
}

pub fn review(a: ReviewArgs) -> anyhow::Result<ExitCode> {
    let dir = paywarden_rollout::release::rollout_dir(&a.data_dir);
    if !dir.join("deployments.jsonl").exists() {
        bail!("{} has no deployment history: pass the data dir `paywarden up` runs on (--data-dir)", a.data_dir.display());
    }
    let (review, w) = paywarden_review::write_review(&dir, &a.deployment_id, &a.out)?;
    println!("deployment {} of {}: {}", review.id, review.version, review.outcome.replace('_', " "));
    println!("wrote {} and {}", w.html.display(), w.markdown.display());
    if let Some(i) = &w.incident {
        println!("wrote {} (incident report draft)", i.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `up` as a child process, killed with the drill.
struct Up {
    child: tokio::process::Child,
    proxy: String,
    admin: String,
    key: String,
    data_dir: PathBuf,
}

async fn start_up(data_dir: &Path, token: &str, log: &Path) -> anyhow::Result<Up> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let log = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = tokio::process::Command::new(exe)
        .args(["up", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--stop-grace", "5s", "--data-dir"])
        .arg(data_dir)
        .env("PAYWARDEN_ADMIN_TOKEN", token)
        .env_remove("PAYWARDEN_ADMIN")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .context("starting paywarden up")?;
    let stdout = child.stdout.take().context("up's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut proxy, mut admin, mut key) = (None, None, None);
    let read = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix("paywarden up: proxy on ") {
                let mut parts = rest.split(", admin API on ");
                proxy = parts.next().map(String::from);
                admin = parts.next().map(String::from);
            }
            if line.starts_with("test secret key") {
                key = line.rsplit(": ").next().map(String::from);
            }
            if proxy.is_some() && key.is_some() {
                return Ok::<_, std::io::Error>(true);
            }
        }
        Ok(false)
    };
    let ok = tokio::time::timeout(UP_START_MAX, read).await.map_err(|_| anyhow::anyhow!("paywarden up did not start within {UP_START_MAX:?}"))??;
    if !ok {
        bail!("paywarden up exited at start; see its log");
    }
    // Keep draining its stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Up { child, proxy: proxy.unwrap_or_default(), admin: admin.unwrap_or_default(), key: key.unwrap_or_default(), data_dir: data_dir.to_path_buf() })
}

impl Up {
    /// SIGTERM (up rolls back anything in progress, drains and stops its instances), then
    /// SIGKILL after a while.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

fn mib(v: &Value) -> String {
    v.as_f64().map(|b| format!("{:.0}", b / 1048576.0)).unwrap_or_else(|| "?".into())
}

/// One progress line: phase, request rate, memory per version.
fn progress_line(t0: Instant, phase: &str, rate: f64, status: &Value) -> String {
    let mut mem = String::new();
    for i in status["instances"].as_array().into_iter().flatten() {
        mem.push_str(&format!(
            "  {} {}: heap {} MiB, RSS {} MiB",
            i["role"].as_str().unwrap_or("?"),
            i["version"].as_str().unwrap_or("?"),
            mib(&i["heap_allocated_bytes"]),
            mib(&i["resident_bytes"])
        ));
    }
    format!("[{:>5.1}s] {phase} | {rate:.0} req/s{mem}", t0.elapsed().as_secs_f64())
}

pub async fn drill(a: DrillArgs) -> anyhow::Result<ExitCode> {
    let Some(sc) = scorecard::scenario(&a.scenario) else {
        let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        bail!("--scenario {}: use one of {}", a.scenario, names.join(", "));
    };
    if !(a.rate.is_finite() && a.rate > 0.0 && a.rate <= DRILL_RATE_MAX) {
        bail!("--rate must be above 0 and at most {DRILL_RATE_MAX} payment flows per second");
    }
    let mut body = json!({"version": format!("{}-drill", sc.name), "auto_rollback": !a.manual,
                          "args": sc.fault.map(|f| vec!["--fault".to_string(), f.to_string()]).unwrap_or_default()});
    crate::rollout::set_plan(&mut body, &a.plan)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating --out {}", a.out.display()))?;
    let tmp = tempfile::Builder::new().prefix("paywarden-drill-").tempdir().context("creating a temporary data dir")?;
    let data_dir = tmp.path().join("data");
    let token = random_token("pwdrill_");
    let t0 = Instant::now();
    println!("drill {}: {} (plan {}, {} payments/s{})", sc.name, sc.description, a.plan, a.rate, if a.manual { ", MANUAL: you roll back" } else { "" });
    let up = start_up(&data_dir, &token, &a.out.join("up.log")).await?;
    println!("[{:>5.1}s] paywarden up on {} (data {})", t0.elapsed().as_secs_f64(), up.proxy, data_dir.display());
    let result = run(&a, sc, &up, &token, body, t0).await;
    up.stop().await;
    if a.keep_data {
        println!("kept the data dir: {}", tmp.keep().join("data").display());
    }
    let card = result?;
    print!("\n{}", scorecard::render_text(&card));
    println!("wrote {}", a.out.display());
    Ok(if card.passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn run(a: &DrillArgs, sc: &'static Scenario, up: &Up, token: &str, body: Value, t0: Instant) -> anyhow::Result<scorecard::Scorecard> {
    let admin = Admin::new(&AdminArgs { admin: up.admin.clone(), token: token.to_string() })?;
    // Steady payment traffic through the proxy until the rollout is over.
    let stop = Arc::new(AtomicBool::new(false));
    let scenario = paywarden_load::scenario::builtin("payments", a.rate, DRILL_DURATION_MAX).context("the payments scenario")?;
    let load = tokio::spawn(paywarden_load::run(paywarden_load::LoadConfig {
        target: up.proxy.clone(),
        key: up.key.clone(),
        scenario,
        timeout: Duration::from_secs(10),
        connections: paywarden_load::run::CONNECTIONS_DEFAULT,
        sample_memory: false,
        progress: false,
        stop: Some(stop.clone()),
    }));
    let stop_load = || stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(a.warmup).await;

    let deployed = match admin.call(reqwest::Method::POST, "/admin/deployments", Some(body)).await {
        Ok(v) => v,
        Err(e) => {
            stop_load();
            return Err(e.context("deploying the drill's release"));
        }
    };
    let id = deployed["id"].as_str().unwrap_or("").to_string();
    let deployed_at = Instant::now();
    println!("[{:>5.1}s] deployed {} as {id}", t0.elapsed().as_secs_f64(), sc.fault.map(|f| format!("a release with --fault {f}")).unwrap_or_else(|| "a good release".into()));

    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let bar = tty.then(indicatif::ProgressBar::new_spinner);
    let (mut last_requests, mut last_tick) = (None::<u64>, Instant::now());
    let mut announced_hold = false;
    let mut drill_rolled_back = false;
    let mut last_phase = String::new();
    let outcome = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let status = match admin.call(reqwest::Method::GET, "/admin/status", None).await {
            Ok(s) => s,
            Err(e) => {
                stop_load();
                return Err(e.context("reading the controller's status"));
            }
        };
        let d = &status["last_deployment"];
        let requests = status["proxy"]["requests"].as_u64().unwrap_or(0);
        let rate = last_requests.map_or(0.0, |l| requests.saturating_sub(l) as f64 / last_tick.elapsed().as_secs_f64().max(0.001));
        (last_requests, last_tick) = (Some(requests), Instant::now());
        let phase = match d["outcome"].as_str() {
            Some("in_progress") if d["held"].is_string() => "HELD for the operator".to_string(),
            Some("in_progress") if d["step"].as_u64().unwrap_or(0) == 0 => "starting canary and baseline".into(),
            Some("in_progress") => format!("step {} (canary {} %)", d["step"], d["canary_weight_pct"]),
            Some(o) => o.replace('_', " "),
            None => "?".into(),
        };
        let line = progress_line(t0, &phase, rate, &status);
        match &bar {
            Some(b) => b.set_message(line),
            None if phase != last_phase => println!("{line}"),
            None => {}
        }
        last_phase = phase;
        if a.manual && d["held"].is_string() && !announced_hold {
            announced_hold = true;
            let say = format!(
                "\nALERT [{:.1}s after the deploy]: the canary's analysis failed and automatic rollback is OFF.\n  {}\n  Find the cause:  paywarden status --admin {} --token {token}\n  Roll back:       paywarden rollback --admin {} --token {token}\n",
                deployed_at.elapsed().as_secs_f64(),
                d["held"].as_str().unwrap_or(""),
                up.admin,
                up.admin
            );
            match &bar {
                Some(b) => b.println(say),
                None => println!("{say}"),
            }
        }
        match d["outcome"].as_str() {
            Some("in_progress") | None => {}
            Some(o) => break o.to_string(),
        }
        let limit = if a.manual { a.manual_timeout } else { DRILL_DURATION_MAX };
        if deployed_at.elapsed() > limit && !drill_rolled_back {
            drill_rolled_back = true;
            println!("[{:>5.1}s] no outcome after {}: the drill rolls back itself", t0.elapsed().as_secs_f64(), humantime::format_duration(limit));
            let _ = admin.call(reqwest::Method::POST, "/admin/rollback", None).await;
        }
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    println!("[{:>5.1}s] {outcome}", t0.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(AFTER_S)).await;
    stop_load();
    let summary = load.await.context("the load task")??;
    let load_dir = a.out.join("load");
    std::fs::create_dir_all(&load_dir)?;
    std::fs::write(load_dir.join("summary.json"), serde_json::to_vec_pretty(&summary)?)?;
    std::fs::write(load_dir.join("report.html"), paywarden_load::report::html(&summary))?;

    let rollout_dir = paywarden_rollout::release::rollout_dir(&up.data_dir);
    let (review, _) = paywarden_review::write_review(&rollout_dir, &id, &a.out)?;
    let figures = LoadFigures {
        rate: a.rate,
        duration_s: summary.duration_s,
        requests: summary.requests_total,
        requests_per_second: summary.requests_per_second,
        errors: summary.errors_total,
        checks_mismatched: summary.checks_mismatched,
        verification_requests: summary.verification.requests,
        verification_errors: summary.verification.errors,
    };
    let mut card = scorecard::score(sc, &review, figures, a.manual);
    if drill_rolled_back {
        card.checks.push(scorecard::Check {
            name: "rolled back by the trainee".into(),
            passed: false,
            detail: format!("no rollback within {}; the drill rolled back itself", humantime::format_duration(a.manual_timeout)),
        });
        card.passed = false;
    }
    std::fs::write(a.out.join("scorecard.json"), serde_json::to_vec_pretty(&card)?)?;
    Ok(card)
}

