//! `paywarden up`, `deploy`, `rollback`, `status` and `history`: the command line of the
//! rollout controller (`paywarden-rollout`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use paywarden_rollout::admin;
use paywarden_rollout::controller::{Controller, ControllerConfig};
use paywarden_rollout::proxy::{Proxy, ProxyConfig};
use paywarden_rollout::release::{self, Release};
use rand::RngCore;
use paywarden_rollout::schema::{SchemaGate, SchemaReport};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct UpArgs {
    /// The public address: the proxy that splits traffic between instances.
    #[arg(long, default_value = "127.0.0.1:4242")]
    listen: SocketAddr,
    /// The admin API (deploy, rollback, status, verdict); loopback only.
    #[arg(long, default_value = "127.0.0.1:4243")]
    admin_listen: SocketAddr,
    /// Directory shared by every instance (SQLite database, keys) and the controller's
    /// `rollout/` (stable release, deployment history, event log).
    #[arg(long)]
    data_dir: PathBuf,
    /// Every instance on this PostgreSQL database instead of SQLite in --data-dir (which then
    /// keeps the keys and `rollout/`); passed to them in their environment, not their arguments.
    #[command(flatten)]
    db: crate::DatabaseArgs,
    /// Admin token (at least 16 characters). Without one, `up` generates one at first start and
    /// prints it once; only its SHA-256 is stored, in DATA_DIR/rollout/admin-token.sha256 (0600).
    #[arg(long, env = "PAYWARDEN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The first stable release's binary (default: this executable). Once a deployment is
    /// promoted, the data dir's stable release wins.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// The first stable release's version label.
    #[arg(long = "release-version", default_value = concat!("v", env!("CARGO_PKG_VERSION")))]
    release_version: String,
    /// How long a stopping instance gets between SIGTERM and SIGKILL.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    stop_grace: Duration,
    /// TLS on the public listener (the proxy); the instances behind it stay on loopback HTTP.
    #[command(flatten)]
    tls: crate::TlsArgs,
    /// Arguments for the stable release's instances (after `serve --listen --data-dir`).
    #[arg(last = true)]
    instance_args: Vec<String>,
}

#[derive(clap::Args)]
pub struct AdminArgs {
    /// The controller's admin URL.
    #[arg(long, env = "PAYWARDEN_ADMIN", default_value = "http://127.0.0.1:4243")]
    pub(crate) admin: String,
    /// The admin token `paywarden up` printed.
    #[arg(long, env = "PAYWARDEN_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) token: String,
}

#[derive(clap::Args)]
pub struct DeployArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The new release's version label (letters, digits, . _ - +).
    #[arg(long)]
    version: String,
    /// The new release's binary (default: the stable release's).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// `default` (1, 5, 25, 50, 100 %, 30 s each), `fast` (3 s each) or a TOML plan file.
    #[arg(long, default_value = "default")]
    plan: String,
    /// Return once the deployment started instead of following it.
    #[arg(long)]
    detach: bool,
    /// Training: a failed analysis holds the deployment at its step (the canary keeps its
    /// traffic) until someone runs `paywarden rollback`.
    #[arg(long)]
    no_auto_rollback: bool,
    /// Deploy even if the release applies a contract migration, which the stable release (the
    /// rollback target) cannot run on: the schema gate's override (the plan's
    /// `allow_contract = true`), recorded in the event log and the review.
    #[arg(long)]
    allow_contract: bool,
    /// Arguments for the new release's instances, e.g. `-- --fault leak=4096`.
    #[arg(last = true)]
    instance_args: Vec<String>,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Print the controller's JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct JudgeArgs {
    /// Where the verdict is served (`GET /admin/canary/verdict`, bearer token). Unlike `up`'s
    /// admin API it may listen beyond loopback (in a cluster, Argo Rollouts asks it): it only
    /// reads.
    #[arg(long, default_value = "127.0.0.1:4243")]
    admin_listen: SocketAddr,
    /// The canary's pods, as host:port: a headless Service's name resolves to each ready pod
    /// (e.g. paywarden-canary-pods:4242); an address is one pod. Resolved at every tick.
    /// Repeatable.
    #[arg(long, required = true)]
    canary: Vec<String>,
    /// The stable's pods (the baseline), as --canary.
    #[arg(long, required = true)]
    stable: Vec<String>,
    /// The token for the verdict, also sent to a leaking canary pod for its leak report (the
    /// gateways' own --admin-token). At least 16 characters.
    #[arg(long, env = "PAYWARDEN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// How often every pod's /metrics is read.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Latencies are compared over the last this long (a fresh canary's warm-up is forgotten
    /// after it); the other metrics over everything since the canary appeared.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    latency_window: Duration,
    /// The judge's settings (minimum requests, tolerances) from a plan: `default`, `fast` or a
    /// TOML plan file; its steps are Argo Rollouts' to walk.
    #[arg(long, default_value = "default")]
    plan: String,
}

/// Shortest and longest `judge --interval`.
const JUDGE_INTERVAL_MIN: Duration = Duration::from_millis(100);
const JUDGE_INTERVAL_MAX: Duration = Duration::from_secs(60);
/// Longest `judge --latency-window`.
const JUDGE_LATENCY_WINDOW_MAX: Duration = Duration::from_secs(3600);

/// `paywarden judge`: the canary judge for pods something else runs (Kubernetes).
pub async fn judge(a: JudgeArgs) -> anyhow::Result<ExitCode> {
    use paywarden_rollout::pods::{self, PodJudge};
    if a.admin_token.chars().count() < ADMIN_TOKEN_CHARS_MIN {
        bail!("--admin-token (or PAYWARDEN_ADMIN_TOKEN) must be at least {ADMIN_TOKEN_CHARS_MIN} characters");
    }
    if a.admin_token.starts_with("sk_") {
        bail!("--admin-token must not look like a merchant key (sk_...)");
    }
    if !(JUDGE_INTERVAL_MIN..=JUDGE_INTERVAL_MAX).contains(&a.interval) {
        bail!("--interval must be between {JUDGE_INTERVAL_MIN:?} and {JUDGE_INTERVAL_MAX:?}, got {:?}", a.interval);
    }
    if a.latency_window < 2 * a.interval || a.latency_window > JUDGE_LATENCY_WINDOW_MAX {
        bail!(
            "--latency-window must be at least twice --interval ({:?}) and at most {JUDGE_LATENCY_WINDOW_MAX:?}, got {:?}",
            2 * a.interval,
            a.latency_window
        );
    }
    for (flag, targets) in [("--canary", &a.canary), ("--stable", &a.stable)] {
        if targets.len() > pods::TARGETS_MAX {
            bail!("at most {} {flag} targets, got {}", pods::TARGETS_MAX, targets.len());
        }
        for t in targets {
            pods::check_target(t).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
        }
    }
    let plan = read_plan(&a.plan)?.0;
    let listener = tokio::net::TcpListener::bind(a.admin_listen).await.with_context(|| format!("binding --admin-listen {}", a.admin_listen))?;
    let judge = std::sync::Arc::new(std::sync::Mutex::new(PodJudge::new(plan.judge, a.latency_window, a.canary.clone(), a.stable.clone())));
    let router = admin::judge_router(judge.clone(), &release::hash_token(&a.admin_token))?;
    let client = reqwest::Client::builder().connect_timeout(Duration::from_secs(2)).build()?;
    println!(
        "paywarden judge: verdict on http://{}/admin/canary/verdict; canary {}, stable {}, every {}",
        listener.local_addr()?,
        a.canary.join(", "),
        a.stable.join(", "),
        humantime::format_duration(a.interval)
    );
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let scraper = tokio::spawn(pods::run(judge, a.interval, client, a.admin_token.clone()));
    axum::serve(listener, router).with_graceful_shutdown(crate::shutdown_signal()).await?;
    scraper.abort();
    Ok(ExitCode::SUCCESS)
}

/// Shortest admin token.
const ADMIN_TOKEN_CHARS_MIN: usize = 16;

pub async fn up(a: UpArgs) -> anyhow::Result<ExitCode> {
    if !a.admin_listen.ip().is_loopback() {
        bail!("--admin-listen {} is not a loopback address; the admin API binds to loopback only (e.g. 127.0.0.1:4243)", a.admin_listen);
    }
    if a.listen.port() != 0 && a.listen == a.admin_listen {
        bail!("--listen and --admin-listen must differ");
    }
    if let Some(url) = &a.db.database {
        crate::check_database_url(url)?;
    }
    let tls = a.tls.config()?;
    // Bind before anything is written: a port in use must not leave a data dir whose admin
    // token and first key were never shown.
    let listener = tokio::net::TcpListener::bind(a.listen).await.with_context(|| format!("binding --listen {}", a.listen))?;
    let admin_listener = tokio::net::TcpListener::bind(a.admin_listen).await.with_context(|| format!("binding --admin-listen {}", a.admin_listen))?;
    std::fs::create_dir_all(&a.data_dir).with_context(|| format!("creating --data-dir {}", a.data_dir.display()))?;
    let _lock = crate::datadir::lock(&a.data_dir, "paywarden up")?;
    let dir = release::rollout_dir(&a.data_dir);
    std::fs::create_dir_all(&dir)?;
    // The admin token: given, stored, or new.
    let mut new_token = None;
    let token_hash = match &a.admin_token {
        Some(t) if t.chars().count() < ADMIN_TOKEN_CHARS_MIN => bail!("--admin-token must be at least {ADMIN_TOKEN_CHARS_MIN} characters"),
        Some(t) if t.starts_with("sk_") => bail!("--admin-token must not look like a merchant key (sk_...)"),
        Some(t) => {
            let h = release::hash_token(t);
            release::save_admin_token_hash(&dir, &h)?;
            h
        }
        None => match release::load_admin_token_hash(&dir)? {
            Some(h) => h,
            None => {
                let t = random_token("pwadm_");
                let h = release::hash_token(&t);
                release::save_admin_token_hash(&dir, &h)?;
                new_token = Some(t);
                h
            }
        },
    };
    let binary = match &a.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("finding this executable")?,
    };
    let initial = Release::new(&a.release_version, &binary, a.instance_args.clone()).map_err(anyhow::Error::msg)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let proxy = Proxy::new(ProxyConfig { tls, ..ProxyConfig::default() });
    let (public, admin_addr) = (listener.local_addr()?, admin_listener.local_addr()?);
    let cfg = ControllerConfig {
        data_dir: a.data_dir.clone(),
        initial,
        instance_token: random_token("pwinst_"),
        stop_grace: a.stop_grace,
        ready_timeout: Duration::from_secs(60),
        instance_env: instance_env(&a.db),
        deployment_env: deployment_env(),
    };
    let controller = Controller::start(cfg, proxy.clone()).await?;
    // The post-deployment review (and, for an incident, the report draft), after every rollout.
    controller.on_finished(std::sync::Arc::new(|dir: &std::path::Path, id: &str| {
        let out = paywarden_review::reviews_dir(dir, id);
        match paywarden_review::write_review(dir, id, &out) {
            Ok((_, w)) => tracing::info!(deployment = id, review = %w.html.display(), incident = ?w.incident, "post-deployment review written"),
            Err(e) => tracing::error!(deployment = id, error = %e, "could not write the post-deployment review"),
        }
    }));
    let status = controller.status();
    println!("paywarden up: proxy on {scheme}://{public}, admin API on http://{admin_addr}");
    println!(
        "stable release {} (sha256 {}…), pid {}",
        status["stable"]["version"].as_str().unwrap_or("?"),
        status["stable"]["sha256"].as_str().unwrap_or("?").chars().take(12).collect::<String>(),
        status["stable"]["pid"]
    );
    for line in controller.announcements() {
        println!("{line}");
    }
    match new_token {
        Some(t) => println!("admin token (shown once; stored only as its SHA-256 in {}): {t}", release::admin_token_path(&dir).display()),
        None if a.admin_token.is_some() => println!("admin token: the one given with --admin-token"),
        None => println!("admin token: the one printed when this data dir was first used (pass --admin-token to set a new one)"),
    }
    println!("events: {}", controller.events().path().display());
    let _ = std::io::Write::flush(&mut std::io::stdout());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let router = admin::router(controller.clone(), &token_hash)?;
    let mut admin_stop = stop_rx.clone();
    let admin_task = tokio::spawn(async move {
        axum::serve(admin_listener, router)
            .with_graceful_shutdown(async move {
                let _ = admin_stop.wait_for(|s| *s).await;
            })
            .await
    });
    let mut proxy_stop = stop_rx.clone();
    let proxy_task = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            proxy
                .serve(
                    listener,
                    async move {
                        let _ = proxy_stop.wait_for(|s| *s).await;
                    },
                    Duration::from_secs(10),
                )
                .await
        })
    };
    crate::shutdown_signal().await;
    tracing::info!("stopping: rolling back any deployment in progress, draining and stopping instances");
    // Instances first (their in-flight requests finish through the proxy), then the listeners.
    controller.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = proxy_task.await;
    let _ = admin_task.await;
    tracing::info!("paywarden up stopped");
    Ok(ExitCode::SUCCESS)
}

/// jemalloc's thread caches hold freed memory that `stats.allocated` still counts, so a quiet
/// instance's heap drifts by tens of KiB a second as they fill and flush: more than a canary at
/// 1 % of traffic leaks. Instances under `up` run without them (`tcache:false`), which makes the
/// heap figures the judge compares exact, for 5–8 % of throughput (BENCHMARKS.md). An
/// operator's own `_RJEM_MALLOC_CONF` wins.
fn instance_env(db: &crate::DatabaseArgs) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some(url) = &db.database {
        env.push(("PAYWARDEN_DATABASE".to_string(), url.clone()));
        env.push(("PAYWARDEN_POOL_MAX".to_string(), db.pool_max.to_string()));
    }
    if std::env::var_os("_RJEM_MALLOC_CONF").is_none() {
        env.push(("_RJEM_MALLOC_CONF".to_string(), "tcache:false".to_string()));
    }
    env
}

/// jemalloc's heap sampling interval (log2 bytes) for a deployment's canary and baseline: one
/// sample per 16 KiB instead of the default 512 KiB, so the canary's heap diff names a leak's
/// allocation site after a few hundred KiB (at 1 % of traffic that is tens of seconds, not
/// hours). Both sides pay the same (about 4 % of throughput, BENCHMARKS.md), so the comparison
/// stays fair; a promoted canary keeps it until its next restart.
pub const DEPLOYMENT_LG_PROF_SAMPLE: u8 = 14;

fn deployment_env() -> Vec<(String, String)> {
    if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
        return Vec::new();
    }
    vec![("_RJEM_MALLOC_CONF".to_string(), format!("tcache:false,lg_prof_sample:{DEPLOYMENT_LG_PROF_SAMPLE}"))]
}

pub(crate) fn random_token(prefix: &str) -> String {
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}{hex}")
}

/// A small client of the admin API.
pub(crate) struct Admin {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Admin {
    pub(crate) fn new(a: &AdminArgs) -> anyhow::Result<Admin> {
        let base = a.admin.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            bail!("--admin {}: give the controller's admin URL, e.g. http://127.0.0.1:4243", a.admin);
        }
        let http = reqwest::Client::builder().timeout(Duration::from_secs(90)).no_proxy().build()?;
        Ok(Admin { base, token: a.token.clone(), http })
    }

    pub(crate) async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("reaching the controller at {} (is `paywarden up` running?)", self.base))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = v["error"]["message"].as_str().unwrap_or("no message");
            bail!("{status}: {msg}");
        }
        Ok(v)
    }
}

pub async fn deploy(a: DeployArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&a.admin)?;
    let mut body = json!({"version": a.version, "args": a.instance_args});
    if a.no_auto_rollback {
        body["auto_rollback"] = json!(false);
    }
    if a.allow_contract {
        body["allow_contract"] = json!(true);
    }
    if let Some(b) = &a.binary {
        let abs = std::fs::canonicalize(b).with_context(|| format!("--binary {}", b.display()))?;
        body["binary"] = json!(abs);
    }
    set_plan(&mut body, &a.plan)?;
    let started = admin.call(reqwest::Method::POST, "/admin/deployments", Some(body)).await?;
    let id = started["id"].as_str().unwrap_or("").to_string();
    println!("deployment {id}: {} with plan {}", a.version, a.plan);
    let s = admin.call(reqwest::Method::GET, "/admin/status", None).await?;
    if let Ok(gate) = serde_json::from_value::<SchemaGate>(s["last_deployment"]["schema"].clone()) {
        println!("schema gate {}: {}", gate.outcome.as_str(), gate.reason);
    }
    if a.detach {
        return Ok(ExitCode::SUCCESS);
    }
    follow(&admin, &id).await
}

/// `--plan`: a built-in plan's name or a TOML plan file, and the file's text. Checked here,
/// so an error names the file.
pub(crate) fn read_plan(arg: &str) -> anyhow::Result<(paywarden_rollout::plan::Plan, Option<String>)> {
    if let Some(plan) = paywarden_rollout::plan::Plan::builtin(arg) {
        return Ok((plan, None));
    }
    let text = std::fs::read_to_string(arg).with_context(|| format!("--plan {arg}: not `default` or `fast`, and not a readable plan file"))?;
    let plan = paywarden_rollout::plan::Plan::from_toml(&text, arg).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((plan, Some(text)))
}

/// Puts `--plan` in a deployment request: `plan` for a built-in one, `plan_toml` for a file.
pub(crate) fn set_plan(body: &mut Value, arg: &str) -> anyhow::Result<()> {
    match read_plan(arg)? {
        (_, None) => body["plan"] = json!(arg),
        (_, Some(text)) => body["plan_toml"] = json!(text),
    }
    Ok(())
}

/// Prints a deployment's progress until it ends; exit 0 if promoted, 1 if rolled back.
async fn follow(admin: &Admin, id: &str) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let (mut last_step, mut last_score, mut held_said) = (usize::MAX, String::new(), false);
    loop {
        let s = admin.call(reqwest::Method::GET, "/admin/status", None).await?;
        let d = &s["last_deployment"];
        if d["id"].as_str() != Some(id) {
            bail!("the controller no longer reports deployment {id}");
        }
        let step = d["step"].as_u64().unwrap_or(0) as usize;
        if step != last_step {
            last_step = step;
            if step > 0 {
                println!(
                    "[{:>6.1}s] step {step}/{}: canary {} % of traffic",
                    t0.elapsed().as_secs_f64(),
                    d["plan"]["steps"].as_array().map(|v| v.len()).unwrap_or(0),
                    d["canary_weight_pct"]
                );
            }
        }
        if let (Some(h), false) = (d["held"].as_str(), held_said) {
            held_said = true;
            println!("[{:>6.1}s] HELD (automatic rollback is off): {h}\n  find the cause (`paywarden status`), then `paywarden rollback`", t0.elapsed().as_secs_f64());
        }
        let score = d["verdict"]["score"].as_str().unwrap_or("").to_string();
        if !score.is_empty() && score != last_score {
            println!("[{:>6.1}s]   verdict {score}: {}", t0.elapsed().as_secs_f64(), d["verdict"]["reason"].as_str().unwrap_or(""));
            last_score = score;
        }
        match d["outcome"].as_str() {
            Some("in_progress") => {}
            Some(outcome) => {
                println!(
                    "[{:>6.1}s] {outcome}: {}\n  requests {} (to the canary {}, failed {})",
                    t0.elapsed().as_secs_f64(),
                    d["reason"].as_str().unwrap_or(""),
                    d["requests_total"],
                    d["requests_to_canary"],
                    d["failed_requests"]
                );
                return Ok(if outcome == "promoted" { ExitCode::SUCCESS } else { ExitCode::from(1) });
            }
            None => bail!("the controller's status has no outcome for {id}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn rollback(a: AdminArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&a)?;
    let t0 = Instant::now();
    let r = admin.call(reqwest::Method::POST, "/admin/rollback", None).await?;
    let d = &r["rolled_back"];
    println!(
        "rolled back deployment {} ({}) in {:.1} s: {}; the stable release serves all traffic",
        d["id"].as_str().unwrap_or("?"),
        d["version"].as_str().unwrap_or("?"),
        t0.elapsed().as_secs_f64(),
        d["reason"].as_str().unwrap_or("")
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn status(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&a.admin)?;
    let s = admin.call(reqwest::Method::GET, "/admin/status", None).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(["instance", "version", "weight", "pid", "address", "memory guard"]);
    for role in ["stable", "canary", "baseline"] {
        let v = &s[role];
        if v.is_null() {
            continue;
        }
        let memory = match (&v["memory"]["leak_state"], &v["memory"]["error"]) {
            (Value::String(state), _) => match v["memory"]["summary"].as_str() {
                // The summary opens with the state itself (`ok: 0.0 B/work, ...`).
                Some(summary) if summary.starts_with(state.as_str()) => summary.to_string(),
                Some(summary) => format!("{state}: {summary}"),
                None => state.clone(),
            },
            (_, Value::String(e)) => format!("unknown ({e})"),
            _ => "-".to_string(),
        };
        t.add_row([
            role.to_string(),
            v["version"].as_str().unwrap_or("?").to_string(),
            v["weight_pct"].as_f64().map(|w| format!("{w} %")).unwrap_or_default(),
            v["pid"].as_u64().map(|p| p.to_string()).unwrap_or_default(),
            v["addr"].as_str().unwrap_or("starting").to_string(),
            memory,
        ]);
    }
    println!("{t}");
    let d = &s["last_deployment"];
    if !d.is_null() {
        println!(
            "\ndeployment {} of {}: {}{}; requests {} (canary {}, failed {}); verdict {}",
            d["id"].as_str().unwrap_or("?"),
            d["version"].as_str().unwrap_or("?"),
            d["outcome"].as_str().unwrap_or("?"),
            if d["outcome"] == "in_progress" { format!(" at step {} ({} %)", d["step"], d["canary_weight_pct"]) } else { String::new() },
            d["requests_total"],
            d["requests_to_canary"],
            d["failed_requests"],
            d["verdict"]["score"].as_str().unwrap_or("none")
        );
        if let Some(r) = d["reason"].as_str() {
            println!("  {r}");
        }
        if let Some(h) = d["held"].as_str().filter(|_| d["outcome"] == "in_progress") {
            println!("  HELD, automatic rollback is off: {h}\n  roll back with `paywarden rollback`");
        }
        if d["outcome"] == "in_progress" {
            let mut m = table(["metric", "score", "canary", "baseline", "detail"]);
            for x in d["verdict"]["metrics"].as_array().into_iter().flatten() {
                m.add_row([
                    x["metric"].as_str().unwrap_or("?").to_string(),
                    x["score"].as_str().unwrap_or("?").to_string(),
                    fmt_figure(&x["canary"]),
                    fmt_figure(&x["baseline"]),
                    x["detail"].as_str().unwrap_or("").to_string(),
                ]);
            }
            println!("{m}");
        }
        print_diagnosis(&d["diagnosis"]);
        if let Ok(gate) = serde_json::from_value::<SchemaGate>(d["schema"].clone()) {
            println!("  schema gate {}: {}", gate.outcome.as_str(), gate.reason);
        }
    }
    if let Ok(report) = serde_json::from_value::<SchemaReport>(s["schema"].clone()) {
        print!("\n{}", schema_text(&report));
    }
    if let Some(list) = s["instances"].as_array() {
        let mut t = table(["instance", "version", "heap MiB", "RSS MiB", "leak", "requests", "p99 ms"]);
        let mib = |v: &Value| v.as_f64().map(|b| format!("{:.1}", b / 1048576.0)).unwrap_or_else(|| "?".into());
        for i in list {
            t.add_row([
                i["role"].as_str().unwrap_or("?").to_string(),
                i["version"].as_str().unwrap_or("?").to_string(),
                mib(&i["heap_allocated_bytes"]),
                mib(&i["resident_bytes"]),
                match i["leak_state"].as_u64() {
                    Some(0) => "ok",
                    Some(1) => "suspect",
                    Some(2) => "LEAKING",
                    _ => "?",
                }
                .to_string(),
                i["requests"].to_string(),
                i["latency_p99_ms"].as_f64().map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into()),
            ]);
        }
        println!("\n{t}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A borderless table whose columns line up whatever their contents (comfy-table).
fn table<const N: usize>(header: [&str; N]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING).set_header(header);
    t
}

/// The schema's history, what a release would apply, what it does not know, and whether it
/// can run there (`migrate`, `status`).
pub(crate) fn schema_text(r: &SchemaReport) -> String {
    let mut out = String::new();
    let mut t = table(["migration", "kind", "applied by", "at (UTC)"]);
    for m in &r.applied {
        let at = m.applied_unix_ms.map(paywarden_store::schema::format_unix_ms).unwrap_or_default();
        t.add_row([m.name.as_str(), m.kind.as_str(), m.release.as_deref().unwrap_or("?"), at.as_str()]);
    }
    for m in &r.pending {
        t.add_row([m.name.as_str(), m.kind.as_str(), "(pending: this release applies it at start)", ""]);
    }
    out.push_str(&format!("schema: {} migrations applied\n{t}\n", r.applied.len()));
    if !r.unknown.is_empty() {
        let names: Vec<String> = r.unknown.iter().map(|m| format!("{} ({})", m.name, m.kind.as_str())).collect();
        out.push_str(&format!("{} does not know {}: applied by a newer release\n", r.release, names.join(", ")));
    }
    if let Some(why) = &r.refused {
        out.push_str(&format!("REFUSED: {why}\n"));
    }
    out
}

fn fmt_figure(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.abs() >= 100.0 || x == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.4}"),
        None => "-".into(),
    }
}

/// The canary's heap diff: the allocation sites that grew, largest first.
fn print_diagnosis(d: &Value) {
    if d.is_null() {
        return;
    }
    if let Some(e) = d["error"].as_str() {
        println!("  heap diff of the canary: none ({e})");
        return;
    }
    let sites = d["sites"].as_array().cloned().unwrap_or_default();
    if sites.is_empty() {
        println!("  heap diff of the canary: no allocation site grew over {:.0} s", d["window_s"].as_f64().unwrap_or(0.0));
        return;
    }
    println!("  heap diff of the canary over {:.0} s, the sites that grew:", d["window_s"].as_f64().unwrap_or(0.0));
    for site in sites {
        println!(
            "    {:>9.0} KiB  {:>8.0} B/s  {:>3.0} %  {}",
            site["growth_bytes"].as_f64().unwrap_or(0.0) / 1024.0,
            site["bytes_per_second"].as_f64().unwrap_or(0.0),
            site["share"].as_f64().unwrap_or(0.0) * 100.0,
            site["function"].as_str().unwrap_or("?")
        );
    }
}

pub async fn history(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&a.admin)?;
    let h = admin.call(reqwest::Method::GET, "/admin/history", None).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&h)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = h["deployments"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no deployments yet");
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(["id", "version", "restored / baseline", "outcome", "requests", "canary", "failed", "reason"]);
    for d in list {
        t.add_row([
            d["id"].as_str().unwrap_or("?").to_string(),
            d["version"].as_str().unwrap_or("?").to_string(),
            d["baseline_version"].as_str().unwrap_or("").to_string(),
            d["outcome"].as_str().unwrap_or("?").to_string(),
            d["requests_total"].to_string(),
            d["requests_to_canary"].to_string(),
            d["failed_requests"].to_string(),
            d["reason"].as_str().unwrap_or("").to_string(),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}
