//! The rollout controller: the stable release, one deployment at a time, and the routes.
//!
//! **A deployment** (Argo Rollouts' canary strategy with Kayenta's baseline):
//! 1. The canary (the new release) and a fresh **baseline** (the stable release) start together,
//!    on their own loopback ports, sharing the data dir; both must answer `/readyz` within the
//!    plan's `ready_timeout`, or the deployment is rolled back.
//! 2. Each step sets the canary's weight; the baseline gets the same share while it fits and
//!    the stable the rest ([`Plan::split`]). Every `judge_interval` the controller scrapes both
//!    instances and runs the [judge](crate::judge) on their **cumulative** windows since the
//!    deployment started (canary and baseline always get equal traffic, so the comparison stays
//!    fair, and evidence from early steps still counts at 100 %).
//! 3. A critical metric (leak, error rate) that fails rolls back at once; after the bake time a
//!    pass advances, any fail rolls back, and marginal or inconclusive extend the step up to
//!    `step_timeout`, where marginal advances and inconclusive rolls back: no data is never a
//!    pass.
//! 4. **Rollback**: the stable takes all traffic at once, the canary's leak report goes to the
//!    event log, in-flight requests to canary and baseline drain (bounded), both stop.
//!    **Promotion** after the 100 % step: the canary takes all traffic, the old stable and the
//!    baseline drain and stop, and the release is saved as the new stable.
//!
//! A canary that exits (crash loop) or never gets ready is rolled back; a stable that exits is
//! restarted with back-off. Every step, verdict, alert, rollback and promotion goes to the
//! [event log](crate::events); each deployment's record to the history.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::events::EventLog;
use crate::instance::{Instance, InstanceSpec, Scrape};
use crate::judge::{judge, judge_schema_change, Score, Verdict, Window};
use crate::plan::Plan;
use crate::proxy::{Proxy, ProxyTotals, Route};
use crate::release::{self, Release, StableState};
use crate::samples::{quantile, InstanceSample, Sample, SampleWriter};
use crate::schema::{self, GateOutcome, SchemaGate, SchemaReport};

/// Most (requests, heap) points kept per instance for the heap-growth slope; past it, every
/// other point is dropped (the series keeps its span at half the resolution).
pub const HEAP_POINTS_MAX: usize = 300;
/// Requests an instance serves before its heap points count (warm-up: caches, pools).
pub const HEAP_WARMUP_REQUESTS: f64 = 10.0;
/// Normal quantile of the heap-growth lower bound the judge fails a canary on: 3.09, one-sided
/// 99.9 %. The judge looks every second at a growing window, so a bound is tried many times
/// over; at 99 % (2.326) two CI runs rolled back good builds at the first step, both by a
/// hair: 837 B/request with its bound 611 against a baseline of 96, and 811 (bound 537)
/// against 0, a fresh process's buffers growing in steps over its first hundred requests.
/// Real leaks clear it by far: leak=4096 measured 1,643-2,092 B/request, its 95 % bound at
/// 85-89 % of that; a 2 KiB-per-payment leak holds the step (marginal) until enough requests
/// lift its bound.
pub const HEAP_GROWTH_Z: f64 = 3.09;
/// Normal quantile of the upper bound a passing canary's heap growth must stay under: 2.326,
/// one-sided 99 % (a pass needs a leak the size of the threshold ruled out, see the judge).
pub const HEAP_GROWTH_PASS_Z: f64 = 2.326;
/// Longest wait for a stable restart's back-off.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A site is named as a cause only when its growth net of the baseline is worth at least this
/// many heap-profile samples: fewer can be a buffer that one side happened to have sampled.
pub const SITE_EVIDENCE_SAMPLES: f64 = 8.0;
/// Allocation sites kept in a diagnosis (largest growth first).
pub const DIAGNOSIS_SITES_MAX: usize = 5;
/// Longest a manual rollback request waits for the rollback to complete.
pub const ROLLBACK_WAIT_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub data_dir: PathBuf,
    /// The stable release when the data dir has none yet.
    pub initial: Release,
    /// Given to instances (env `PAYWARDEN_ADMIN_TOKEN`) so the controller can read their leak
    /// reports and alerts.
    pub instance_token: String,
    /// SIGTERM to SIGKILL.
    pub stop_grace: Duration,
    /// How long the stable gets to become ready.
    pub ready_timeout: Duration,
    /// Extra environment for instances.
    pub instance_env: Vec<(String, String)>,
    /// Extra environment for a deployment's canary and baseline (after `instance_env`):
    /// `up` asks jemalloc for finer heap sampling there, so a diff names a leak's site after
    /// a few hundred KiB.
    pub deployment_env: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    InProgress,
    Promoted,
    RolledBack,
}

/// One deployment, as `status` and `history` show it.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentRecord {
    pub id: String,
    pub version: String,
    pub binary: PathBuf,
    pub sha256: String,
    pub args: Vec<String>,
    pub baseline_version: String,
    pub plan: Plan,
    /// 1-based; 0 before the first step.
    pub step: usize,
    pub canary_weight_pct: f64,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub started_unix_ms: u64,
    pub ended_unix_ms: Option<u64>,
    /// Requests through the proxy since the deployment started.
    pub requests_total: u64,
    pub requests_to_canary: u64,
    pub requests_to_baseline: u64,
    /// Client requests answered 5xx (by an instance or the proxy) since it started.
    pub failed_requests: u64,
    pub failed_canary_requests: u64,
    /// Failed client requests to `/v1/payment_intents...` since it started.
    pub failed_payment_requests: u64,
    /// Distinct merchant keys whose requests reached the canary (counted by keyed hash).
    pub merchants_to_canary: u64,
    pub verdict: Option<Verdict>,
    /// The canary's heap diff (allocation sites that grew since it was warm), taken when its
    /// analysis failed or it was rolled back.
    pub diagnosis: Option<Value>,
    /// With automatic rollback off (training): why the deployment is held for an operator.
    pub held: Option<String>,
    /// The schema gate's verdict: what the release migrates, and whether the rollback target
    /// runs on it. `None` for a rollback to the previous release.
    pub schema: Option<SchemaGate>,
}

impl DeploymentRecord {
    /// A deployment of `release` just started, compared with (or replacing) `baseline_version`.
    fn start(id: &str, release: &Release, baseline_version: &str, plan: Plan) -> DeploymentRecord {
        DeploymentRecord {
            id: id.to_string(),
            version: release.version.clone(),
            binary: release.binary.clone(),
            sha256: release.sha256.clone(),
            args: release.args.clone(),
            baseline_version: baseline_version.to_string(),
            plan,
            step: 0,
            canary_weight_pct: 0.0,
            outcome: Outcome::InProgress,
            reason: None,
            started_unix_ms: unix_ms(),
            ended_unix_ms: None,
            requests_total: 0,
            requests_to_canary: 0,
            requests_to_baseline: 0,
            failed_requests: 0,
            failed_canary_requests: 0,
            failed_payment_requests: 0,
            merchants_to_canary: 0,
            verdict: None,
            diagnosis: None,
            held: None,
            schema: None,
        }
    }
}

struct Running {
    id: u64,
    release: Release,
    instance: Instance,
}

struct Live {
    record: DeploymentRecord,
    canary: Option<Arc<Running>>,
    baseline: Option<Arc<Running>>,
    /// Canary and baseline weights, basis points.
    weights: (u32, u32),
    abort: watch::Sender<Option<String>>,
    done: watch::Receiver<bool>,
    totals_at_start: ProxyTotals,
    /// The last tick's figures per instance, for `status`.
    last_sample: Option<Sample>,
}

struct State {
    stable: Option<Arc<Running>>,
    previous: Option<Release>,
    live: Option<Live>,
    last: Option<DeploymentRecord>,
    /// The schema as the stable release's binary last reported it (`migrate --plan`), read
    /// after every instance start that may have migrated.
    schema: Option<SchemaReport>,
}

struct Inner {
    cfg: ControllerConfig,
    dir: PathBuf,
    proxy: Proxy,
    http: reqwest::Client,
    events: EventLog,
    state: Mutex<State>,
    next_backend: AtomicU64,
    shutting_down: AtomicBool,
    /// Called with a deployment's id once it has ended and its record is on disk.
    on_finished: std::sync::OnceLock<FinishedHook>,
}

/// See [`Controller::on_finished`].
pub type FinishedHook = Arc<dyn Fn(&std::path::Path, &str) + Send + Sync>;

/// The controller; cheap to clone.
#[derive(Clone)]
pub struct Controller(Arc<Inner>);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Failed(String),
}

/// Largest answer of an instance's memory-guard endpoint passed on (a pprof of a big heap).
pub const INSTANCE_ANSWER_BYTES_MAX: usize = 64 << 20;
/// Longest wait for one (a heap diff symbolizes its sites, which takes seconds).
pub const INSTANCE_ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The memory-guard endpoints of an instance that `up`'s admin API passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceEndpoint {
    /// `GET memory/leak-report`
    LeakReport,
    /// `GET alerts`
    Alerts,
    /// `POST memory/profile/reference`
    MarkHeap,
    /// `GET memory/profile/diff`
    HeapDiff,
    /// `GET pprof/heap`
    PprofHeap,
}

impl InstanceEndpoint {
    /// The endpoints, as `(method, path under /admin/instances/ROLE/)`.
    pub const ALL: [(InstanceEndpoint, &'static str, &'static str); 5] = [
        (InstanceEndpoint::LeakReport, "GET", "memory/leak-report"),
        (InstanceEndpoint::Alerts, "GET", "alerts"),
        (InstanceEndpoint::MarkHeap, "POST", "memory/profile/reference"),
        (InstanceEndpoint::HeapDiff, "GET", "memory/profile/diff"),
        (InstanceEndpoint::PprofHeap, "GET", "pprof/heap"),
    ];

    fn method(self) -> reqwest::Method {
        if self == InstanceEndpoint::MarkHeap { reqwest::Method::POST } else { reqwest::Method::GET }
    }

    /// The instance's own path.
    fn path(self) -> &'static str {
        match self {
            InstanceEndpoint::LeakReport => "/admin/memory/leak-report",
            InstanceEndpoint::Alerts => "/admin/alerts",
            InstanceEndpoint::MarkHeap => "/admin/memory/profile/reference",
            InstanceEndpoint::HeapDiff => "/admin/memory/profile/diff",
            InstanceEndpoint::PprofHeap => "/debug/pprof/heap",
        }
    }
}

/// What `deploy` asks for.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub version: String,
    /// None: the stable release's binary.
    pub binary: Option<PathBuf>,
    pub plan: Plan,
    pub args: Vec<String>,
}

const BASELINE_FIRST: &str = "baseline, then canary";
const CANARY_FIRST: &str = "canary, then baseline";

/// In which order a deployment starts its canary and baseline ([`Controller::start_pair`]).
fn start_order(gate: &SchemaGate) -> &'static str {
    if gate.outcome == GateOutcome::Overridden {
        BASELINE_FIRST
    } else if gate.changes_schema() {
        CANARY_FIRST
    } else {
        "together"
    }
}

/// How a release is named in the schema's history: `v2 (sha256 0123456789ab)`.
pub fn release_label(r: &Release) -> String {
    format!("{} (sha256 {})", r.version, r.sha256.chars().take(12).collect::<String>())
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn new_deployment_id() -> String {
    use rand::Rng;
    let suffix: String = (0..10).map(|_| char::from(b"0123456789abcdefghijklmnopqrstuvwxyz"[rand::rng().random_range(0..36)])).collect();
    format!("dep_{}{suffix}", unix_ms())
}

impl Controller {
    /// Starts the stable release (the data dir's, else `cfg.initial`) and routes all traffic
    /// to it. The proxy is the caller's to serve.
    pub async fn start(cfg: ControllerConfig, proxy: Proxy) -> anyhow::Result<Controller> {
        let dir = release::rollout_dir(&cfg.data_dir);
        std::fs::create_dir_all(&dir)?;
        let events = EventLog::open(&dir)?;
        let saved = release::load_stable(&dir).map_err(anyhow::Error::msg)?;
        let (stable_release, previous) = match saved {
            Some(s) => (s.stable, s.previous),
            None => (cfg.initial.clone(), None),
        };
        if release::hash_file(&stable_release.binary).is_ok_and(|h| h != stable_release.sha256) {
            tracing::warn!(binary = %stable_release.binary.display(), "the stable binary changed on disk since it was released");
        }
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).no_proxy().build()?;
        let inner = Arc::new(Inner {
            cfg,
            dir,
            proxy,
            http,
            events,
            state: Mutex::new(State { stable: None, previous, live: None, last: None, schema: None }),
            next_backend: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            on_finished: std::sync::OnceLock::new(),
        });
        let c = Controller(inner);
        // A deployment the previous controller left unfinished.
        if let Ok(h) = release::read_history(&c.0.dir) {
            for rec in h.iter().filter(|r| r.get("outcome").and_then(Value::as_str) == Some("in_progress")) {
                let mut rec = rec.clone();
                rec["outcome"] = json!("rolled_back");
                rec["reason"] = json!("the controller stopped during the deployment; the stable release was kept");
                rec["ended_unix_ms"] = json!(unix_ms());
                let _ = release::append_history(&c.0.dir, &rec);
            }
        }
        let running = c.start_instance(&stable_release, "stable", c.0.cfg.ready_timeout).await.map_err(anyhow::Error::msg)?;
        c.0.events.append(
            "stable_started",
            None,
            json!({"version": stable_release.version, "sha256": stable_release.sha256, "addr": running.instance.addr().to_string(), "pid": running.instance.pid()}),
        );
        c.lock().stable = Some(running.clone());
        c.apply_routes();
        c.supervise_stable(running);
        c.spawn_alert_watch();
        c.refresh_schema().await;
        Ok(c)
    }

    /// Reads the schema's history through the stable release's binary, for `status`.
    async fn refresh_schema(&self) {
        let Some(stable) = self.lock().stable.as_ref().map(|s| s.release.clone()) else { return };
        match schema::read_plan(&stable.binary, &self.0.cfg.data_dir, &self.plan_env(&stable), &release_label(&stable)).await {
            Ok(report) => self.lock().schema = Some(report),
            Err(e) => tracing::warn!(error = %e, "could not read the schema's history"),
        }
    }

    /// The environment `migrate --plan` gets: the instances' (their database), and a
    /// `--database` among the release's own arguments.
    fn plan_env(&self, release: &Release) -> Vec<(String, String)> {
        let mut env = self.0.cfg.instance_env.clone();
        let mut args = release.args.iter();
        while let Some(a) = args.next() {
            let url = match a.strip_prefix("--database=") {
                Some(u) => Some(u.to_string()),
                None if a == "--database" => args.next().cloned(),
                None => None,
            };
            if let Some(u) = url {
                env.push(("PAYWARDEN_DATABASE".into(), u));
            }
        }
        env
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `hook(rollout_dir, deployment_id)`, run on a blocking thread after every
    /// deployment (promoted or rolled back) has its last event and history record on disk:
    /// `up` writes the post-deployment review with it. One hook; later calls are ignored.
    pub fn on_finished(&self, hook: FinishedHook) {
        let _ = self.0.on_finished.set(hook);
    }

    /// The rollout directory (`DATA_DIR/rollout`).
    pub fn dir(&self) -> &std::path::Path {
        &self.0.dir
    }

    pub fn events(&self) -> &EventLog {
        &self.0.events
    }

    pub fn proxy(&self) -> &Proxy {
        &self.0.proxy
    }

    /// Lines the stable instance printed for the operator (a first secret key).
    pub fn announcements(&self) -> Vec<String> {
        self.lock().stable.as_ref().map(|s| s.instance.announcements()).unwrap_or_default()
    }

    async fn start_instance(&self, release: &Release, role: &str, ready: Duration) -> Result<Arc<Running>, String> {
        let spec = InstanceSpec {
            name: format!("{} {role}", release.version),
            binary: release.binary.clone(),
            data_dir: self.0.cfg.data_dir.clone(),
            args: release.args.clone(),
            admin_token: self.0.cfg.instance_token.clone(),
            env: {
                // The instance exits when its supervisor is gone (even after kill -9).
                let mut env = self.0.cfg.instance_env.clone();
                if role != "stable" {
                    env.extend(self.0.cfg.deployment_env.iter().cloned());
                }
                // Recorded with the migrations the instance applies.
                env.push(("PAYWARDEN_RELEASE".into(), release_label(release)));
                env.push(("PAYWARDEN_SUPERVISOR_PID".into(), std::process::id().to_string()));
                env
            },
        };
        let instance = Instance::start(spec, ready).await.map_err(|e| format!("{} {role}: {e}", release.version))?;
        let id = self.0.next_backend.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(Running { id, release: release.clone(), instance }))
    }

    /// Routes from the state: stable, and canary/baseline at their weights.
    fn apply_routes(&self) {
        let st = self.lock();
        let mut routes = Vec::with_capacity(3);
        let (cw, bw) = st.live.as_ref().map(|l| l.weights).unwrap_or((0, 0));
        if let Some(s) = &st.stable {
            routes.push(Route { id: s.id, addr: s.instance.addr(), weight: 10_000 - cw - bw, label: format!("{} stable", s.release.version).into() });
        }
        if let Some(l) = &st.live {
            if let Some(c) = &l.canary {
                routes.push(Route { id: c.id, addr: c.instance.addr(), weight: cw, label: format!("{} canary", c.release.version).into() });
            }
            if let Some(b) = &l.baseline {
                routes.push(Route { id: b.id, addr: b.instance.addr(), weight: bw, label: format!("{} baseline", b.release.version).into() });
            }
        }
        drop(st);
        self.0.proxy.set_routes(routes);
    }

    /// Restarts the stable instance when it exits, with back-off, until shutdown.
    fn supervise_stable(&self, running: Arc<Running>) {
        let c = self.clone();
        tokio::spawn(async move {
            let mut current = running;
            let mut backoff = Duration::from_secs(1);
            loop {
                current.instance.exited().await;
                if c.0.shutting_down.load(Ordering::Relaxed) {
                    return;
                }
                // Replaced by a promotion: its successor has its own supervisor.
                if c.lock().stable.as_ref().map(|s| s.id) != Some(current.id) {
                    return;
                }
                let status = current.instance.exit_status().unwrap_or_default();
                tracing::error!(version = %current.release.version, %status, "the stable instance exited; restarting it");
                c.0.events.append("stable_exited", None, json!({"version": current.release.version, "status": status}));
                loop {
                    tokio::time::sleep(backoff).await;
                    if c.0.shutting_down.load(Ordering::Relaxed) {
                        return;
                    }
                    match c.start_instance(&current.release, "stable", c.0.cfg.ready_timeout).await {
                        Ok(r) => {
                            let replaced = {
                                let mut st = c.lock();
                                let replaced = st.stable.as_ref().map(|s| s.id) != Some(current.id);
                                if !replaced {
                                    st.stable = Some(r.clone());
                                }
                                replaced
                            };
                            if replaced {
                                r.instance.stop(c.0.cfg.stop_grace).await;
                                return;
                            }
                            c.apply_routes();
                            c.0.proxy.forget(current.id);
                            c.0.events.append("stable_started", None, json!({"version": r.release.version, "addr": r.instance.addr().to_string(), "pid": r.instance.pid(), "restart": true}));
                            current = r;
                            backoff = Duration::from_secs(1);
                            break;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "restarting the stable instance failed");
                            c.0.events.append("stable_restart_failed", None, json!({"error": e}));
                            backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
                        }
                    }
                }
            }
        });
    }

    /// Polls every instance's alerts every 2 s and logs new transitions as `alert` events.
    fn spawn_alert_watch(&self) {
        let c = self.clone();
        tokio::spawn(async move {
            let mut seen: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                if c.0.shutting_down.load(Ordering::Relaxed) {
                    return;
                }
                let (instances, deployment) = {
                    let st = c.lock();
                    let mut v: Vec<(Arc<Running>, &'static str)> = st.stable.iter().map(|s| (s.clone(), "stable")).collect();
                    if let Some(l) = &st.live {
                        v.extend(l.canary.iter().map(|x| (x.clone(), "canary")));
                        v.extend(l.baseline.iter().map(|x| (x.clone(), "baseline")));
                    }
                    (v, st.live.as_ref().map(|l| l.record.id.clone()))
                };
                let live_ids: Vec<u64> = instances.iter().map(|(r, _)| r.id).collect();
                seen.retain(|id, _| live_ids.contains(id));
                for (r, role) in instances {
                    let url = format!("http://{}/admin/alerts", r.instance.addr());
                    let Ok(resp) = c.0.http.get(&url).bearer_auth(&c.0.cfg.instance_token).send().await else { continue };
                    let Ok(body) = resp.json::<Value>().await else { continue };
                    let last = seen.entry(r.id).or_insert(0);
                    for ev in body.get("events").and_then(Value::as_array).into_iter().flatten() {
                        let seq = ev.get("seq").and_then(Value::as_u64).unwrap_or(0);
                        if seq > *last {
                            *last = seq;
                            c.0.events.append(
                                "alert",
                                deployment.as_deref(),
                                json!({"instance": role, "version": r.release.version, "status": ev.get("status"), "alert": ev.get("alert")}),
                            );
                        }
                    }
                }
            }
        });
    }

    /// Starts a deployment; returns its id once the schema gate has let it through (the
    /// rollout runs in the background). Refused (409), with nothing started, when the release
    /// would apply a contract migration and the plan does not allow it, or cannot run on the
    /// database at all ([`crate::schema`]).
    pub async fn deploy(&self, req: DeployRequest) -> Result<String, ControlError> {
        req.plan.validate().map_err(|e| ControlError::BadRequest(format!("plan: {e}")))?;
        let stable = self.deployable()?;
        let binary = req.binary.clone().unwrap_or_else(|| stable.release.binary.clone());
        let release = Release::new(&req.version, &binary, req.args.clone()).map_err(ControlError::BadRequest)?;
        let gate = match schema::read_plan(&release.binary, &self.0.cfg.data_dir, &self.plan_env(&release), &release_label(&release)).await {
            Ok(report) => schema::gate(&report, req.plan.allow_contract, &release.version, &stable.release.version),
            Err(e) => schema::gate_unreadable(&e, req.plan.allow_contract),
        };
        if gate.outcome == GateOutcome::Refused {
            tracing::warn!(version = %release.version, reason = %gate.reason, "deploy refused by the schema gate; nothing started");
            return Err(ControlError::Conflict(format!("deploy refused by the schema gate: {}", gate.reason)));
        }
        let mut st = self.lock();
        // Another deploy may have started while the gate ran.
        if let Some(l) = &st.live {
            return Err(ControlError::Conflict(format!("deployment {} of {} is in progress; wait for it or roll it back", l.record.id, l.record.version)));
        }
        if st.stable.as_ref().map(|s| s.id) != Some(stable.id) {
            return Err(ControlError::Conflict("the stable release changed while the deployment was checked; try again".into()));
        }
        let id = new_deployment_id();
        let (abort, abort_rx) = watch::channel(None);
        let (done_tx, done) = watch::channel(false);
        let mut record = DeploymentRecord::start(&id, &release, &stable.release.version, req.plan.clone());
        record.schema = Some(gate.clone());
        let _ = release::append_history(&self.0.dir, &serde_json::to_value(&record).unwrap_or_default());
        st.live = Some(Live { record, canary: None, baseline: None, weights: (0, 0), abort, done, totals_at_start: self.0.proxy.totals(), last_sample: None });
        drop(st);
        self.0.events.append(
            "deployment_started",
            Some(&id),
            json!({"version": release.version, "binary": release.binary, "sha256": release.sha256, "args": release.args,
                   "baseline_version": stable.release.version, "baseline_sha256": stable.release.sha256, "plan": req.plan}),
        );
        if gate.outcome == GateOutcome::Overridden {
            tracing::warn!(deployment = %id, reason = %gate.reason, "schema gate overridden by the plan (allow_contract = true)");
        }
        self.0.events.append("schema_gate", Some(&id), json!(gate));
        let c = self.clone();
        tokio::spawn(async move {
            c.run(release, stable, req.plan, gate, abort_rx).await;
            let _ = done_tx.send(true);
        });
        Ok(id)
    }

    /// The stable instance, if a deployment may start now.
    fn deployable(&self) -> Result<Arc<Running>, ControlError> {
        let st = self.lock();
        if let Some(l) = &st.live {
            return Err(ControlError::Conflict(format!("deployment {} of {} is in progress; wait for it or roll it back", l.record.id, l.record.version)));
        }
        st.stable.clone().ok_or_else(|| ControlError::Conflict("the stable instance is restarting; try again in a few seconds".into()))
    }

    /// Rolls back the deployment in progress and waits (bounded) until it is done. With none in
    /// progress, goes back to the release before the last promotion (see
    /// [`Controller::rollback_release`]).
    pub async fn rollback(&self, reason: &str) -> Result<DeploymentRecord, ControlError> {
        let done = {
            let st = self.lock();
            st.live.as_ref().map(|l| {
                let _ = l.abort.send(Some(reason.to_string()));
                l.done.clone()
            })
        };
        let Some(mut done) = done else {
            return self.rollback_release(reason).await;
        };
        let _ = tokio::time::timeout(ROLLBACK_WAIT_MAX, done.wait_for(|d| *d)).await;
        self.lock().last.clone().ok_or_else(|| ControlError::Failed("the rollback did not finish in time".into()))
    }

    /// Puts the release before the last promotion back: it starts, gets ready, takes all
    /// traffic at once, and the current stable drains and stops. Recorded as a deployment of
    /// the current version (the one rolled back) with outcome `rolled_back`, its
    /// `baseline_version` the release restored.
    pub async fn rollback_release(&self, reason: &str) -> Result<DeploymentRecord, ControlError> {
        let (id, current, target, started) = {
            let mut st = self.lock();
            if st.live.is_some() {
                return Err(ControlError::Conflict("a deployment is in progress; roll it back first".into()));
            }
            let Some(current) = st.stable.clone() else {
                return Err(ControlError::Conflict("the stable instance is restarting; try again in a few seconds".into()));
            };
            let Some(target) = st.previous.clone() else {
                return Err(ControlError::Conflict(format!(
                    "no deployment in progress and no earlier release to go back to; {} is the stable release",
                    current.release.version
                )));
            };
            let id = new_deployment_id();
            let plan = Plan { name: "rollback".into(), steps: vec![crate::plan::Step { weight_pct: 100.0, bake: Duration::ZERO }], ..Plan::fast() };
            let (abort, _) = watch::channel(None);
            let (_, done) = watch::channel(false);
            // Recorded under the release that is rolled back (the one the operator regrets),
            // with the restored one as its baseline.
            let record = DeploymentRecord::start(&id, &current.release, &target.version, plan);
            st.live = Some(Live { record, canary: None, baseline: None, weights: (0, 0), abort, done, totals_at_start: self.0.proxy.totals(), last_sample: None });
            (id, current, target, Instant::now())
        };
        self.0.events.append(
            "release_rollback_started",
            Some(&id),
            json!({"from": current.release.version, "to": target.version, "sha256": target.sha256, "reason": reason}),
        );
        // A release that says it cannot run on the schema (a contract it does not know) is
        // not started: the current stable keeps serving, and the operator is told why.
        if let Ok(report) = schema::read_plan(&target.binary, &self.0.cfg.data_dir, &self.plan_env(&target), &release_label(&target)).await
            && let Some(why) = report.refused
        {
            let why = format!("cannot roll back to {}: {why}; {} stays the stable release", target.version, current.release.version);
            self.lock().live.take();
            self.0.events.append("release_rollback_failed", Some(&id), json!({"error": why}));
            return Err(ControlError::Conflict(why));
        }
        let next = match self.start_instance(&target, "stable", self.0.cfg.ready_timeout).await {
            Ok(r) => r,
            Err(e) => {
                let why = format!("{} did not get ready, {} stays the stable release: {e}", target.version, current.release.version);
                self.lock().live.take();
                self.0.events.append("release_rollback_failed", Some(&id), json!({"error": why}));
                return Err(ControlError::Failed(why));
            }
        };
        {
            let mut st = self.lock();
            st.stable = Some(next.clone());
            st.previous = Some(current.release.clone());
        }
        self.apply_routes();
        let state = StableState { stable: target.clone(), previous: Some(current.release.clone()) };
        if let Err(e) = release::save_stable(&self.0.dir, &state) {
            tracing::error!(error = %e, "could not save the stable release after the rollback");
        }
        self.supervise_stable(next.clone());
        self.refresh_schema().await;
        self.0.proxy.drain(current.id, Duration::from_secs(10)).await;
        current.instance.stop(self.0.cfg.stop_grace).await;
        self.0.proxy.forget(current.id);
        self.finish(&id, Outcome::RolledBack, format!("manual rollback from {} to {}: {reason}", current.release.version, target.version), started);
        self.lock().last.clone().ok_or_else(|| ControlError::Failed("the rollback left no record".into()))
    }

    /// The deployment in progress or the last one, with live figures.
    fn current_record(&self) -> Option<DeploymentRecord> {
        let st = self.lock();
        match &st.live {
            Some(l) => Some(self.live_figures(l)),
            None => st.last.clone(),
        }
    }

    fn live_figures(&self, l: &Live) -> DeploymentRecord {
        let mut r = l.record.clone();
        let t = self.0.proxy.totals();
        r.requests_total = t.requests.saturating_sub(l.totals_at_start.requests);
        r.failed_requests = t.failed.saturating_sub(l.totals_at_start.failed);
        r.failed_payment_requests = t.failed_payment_requests.saturating_sub(l.totals_at_start.failed_payment_requests);
        if let Some(c) = l.canary.as_ref().and_then(|c| self.0.proxy.stats(c.id)) {
            r.requests_to_canary = c.requests;
            r.failed_canary_requests = c.errors;
            r.merchants_to_canary = c.distinct_keys;
        }
        if let Some(b) = l.baseline.as_ref().and_then(|b| self.0.proxy.stats(b.id)) {
            r.requests_to_baseline = b.requests;
        }
        r
    }

    /// `GET /admin/status`.
    pub fn status(&self) -> Value {
        let st = self.lock();
        let inst = |r: &Arc<Running>| {
            json!({"version": r.release.version, "binary": r.release.binary, "sha256": r.release.sha256, "args": r.release.args,
                   "addr": r.instance.addr().to_string(), "pid": r.instance.pid()})
        };
        let mut canary = Value::Null;
        let mut baseline = Value::Null;
        if let Some(l) = &st.live {
            if let Some(c) = &l.canary {
                canary = inst(c);
                canary["weight_pct"] = json!(l.weights.0 as f64 / 100.0);
            } else {
                canary = json!({"version": l.record.version, "weight_pct": 0.0, "starting": true});
            }
            if let Some(b) = &l.baseline {
                baseline = inst(b);
                baseline["weight_pct"] = json!(l.weights.1 as f64 / 100.0);
            }
        }
        let last = match &st.live {
            Some(l) => Some(self.live_figures(l)),
            None => st.last.clone(),
        };
        let stable_weight = 100.0 - st.live.as_ref().map(|l| (l.weights.0 + l.weights.1) as f64 / 100.0).unwrap_or(0.0);
        let mut stable = st.stable.as_ref().map(inst).unwrap_or(Value::Null);
        if !stable.is_null() {
            stable["weight_pct"] = json!(stable_weight);
        }
        // Heap, RSS, leak state and the last second's latency per instance.
        let instances = st.live.as_ref().and_then(|l| l.last_sample.as_ref()).map(|s| json!(s.instances)).unwrap_or(Value::Null);
        json!({
            "stable": stable,
            "instances": instances,
            "previous_version": st.previous.as_ref().map(|p| p.version.clone()),
            "canary": canary,
            "baseline": baseline,
            "last_deployment": last,
            "proxy": self.0.proxy.totals(),
            "schema": st.schema,
        })
    }

    /// The instances running now by role (`stable`, `canary`, `baseline`).
    fn instances_by_role(&self) -> Vec<(&'static str, Arc<Running>)> {
        let st = self.lock();
        let mut v: Vec<(&'static str, Arc<Running>)> = st.stable.iter().map(|s| ("stable", s.clone())).collect();
        if let Some(l) = &st.live {
            v.extend(l.canary.iter().map(|c| ("canary", c.clone())));
            v.extend(l.baseline.iter().map(|b| ("baseline", b.clone())));
        }
        v
    }

    /// `GET /admin/instances`: every instance running now.
    pub fn instances(&self) -> Value {
        let list: Vec<Value> = self
            .instances_by_role()
            .into_iter()
            .map(|(role, r)| json!({"role": role, "version": r.release.version, "pid": r.instance.pid(), "addr": r.instance.addr().to_string()}))
            .collect();
        json!({"instances": list})
    }

    /// One of an instance's memory-guard endpoints (`/admin/instances/ROLE/...` on the admin
    /// API), asked with the instances' own token and answered as the instance answered.
    pub async fn ask_instance(&self, role: &str, endpoint: InstanceEndpoint) -> Result<crate::instance::Forwarded, ControlError> {
        let running = self.instances_by_role();
        let Some((_, r)) = running.iter().find(|(x, _)| *x == role) else {
            let roles: Vec<&str> = running.iter().map(|(x, _)| *x).collect();
            return Err(ControlError::NotFound(format!("no {role} instance runs now; the instances are: {}", roles.join(", "))));
        };
        r.instance
            .forward(&self.0.http, endpoint.method(), endpoint.path(), INSTANCE_ANSWER_BYTES_MAX, INSTANCE_ANSWER_TIMEOUT)
            .await
            .map_err(|e| ControlError::Failed(format!("the {role} instance ({}): {e}", r.release.version)))
    }

    /// `status` with each instance's memory-guard verdict (its leak report's state and
    /// summary), asked of every instance at once, each within [`crate::instance::REQUEST_TIMEOUT`].
    pub async fn status_with_memory(&self) -> Value {
        let mut status = self.status();
        let running = self.instances_by_role();
        let reports = futures::future::join_all(running.iter().map(|(_, r)| r.instance.leak_report(&self.0.http))).await;
        for ((role, _), report) in running.iter().zip(reports) {
            let memory = match report {
                Ok(r) => json!({"leak_state": r.get("state"), "summary": r.pointer("/assessment/summary"), "reading": r.get("memory")}),
                Err(e) => json!({"error": e.to_string()}),
            };
            if status[*role].is_object() {
                status[*role]["memory"] = memory;
            }
        }
        status
    }

    /// `GET /admin/canary/verdict`: the verdict of the deployment in progress, or the last one.
    pub fn verdict(&self) -> Value {
        match self.current_record() {
            None => json!({"deployment": null, "phase": "no deployment", "score": "inconclusive", "score_pct": 0.0,
                           "reason": "no deployment has run", "metrics": []}),
            Some(r) => {
                let phase = match r.outcome {
                    Outcome::InProgress if r.step == 0 => "starting canary and baseline".to_string(),
                    Outcome::InProgress => format!("step {} of {}", r.step, r.plan.steps.len()),
                    Outcome::Promoted => "promoted".into(),
                    Outcome::RolledBack => "rolled back".into(),
                };
                let v = r.verdict.clone();
                json!({
                    "deployment": r.id, "version": r.version, "phase": phase, "outcome": r.outcome,
                    "step": r.step, "canary_weight_pct": r.canary_weight_pct,
                    "score": v.as_ref().map(|v| v.score.as_str()).unwrap_or("inconclusive"),
                    "score_pct": v.as_ref().map(|v| v.score_pct).unwrap_or(0.0),
                    "reason": v.as_ref().map(|v| v.reason.clone()).unwrap_or_else(|| "not judged yet".into()),
                    "metrics": v.map(|v| v.metrics).unwrap_or_default(),
                })
            }
        }
    }

    /// `GET /admin/history`: every deployment's last record, oldest first.
    pub fn history(&self) -> Vec<Value> {
        release::read_history(&self.0.dir).unwrap_or_default()
    }

    /// Stops everything: a deployment in progress is rolled back first, then instances get
    /// SIGTERM (graceful drain) and the proxy is the caller's to stop.
    pub async fn shutdown(&self) {
        if self.lock().live.is_some() {
            let _ = self.rollback("the controller is shutting down").await;
        }
        self.0.shutting_down.store(true, Ordering::Relaxed);
        let stable = self.lock().stable.clone();
        if let Some(s) = stable {
            s.instance.stop(self.0.cfg.stop_grace).await;
        }
    }

    fn with_live(&self, f: impl FnOnce(&mut Live)) {
        if let Some(l) = self.lock().live.as_mut() {
            f(l);
        }
    }

    /// The rollout itself.
    async fn run(&self, release: Release, stable: Arc<Running>, plan: Plan, gate: SchemaGate, mut abort: watch::Receiver<Option<String>>) {
        let id = self.lock().live.as_ref().map(|l| l.record.id.clone()).unwrap_or_default();
        let started = Instant::now();
        let (canary, baseline) = self.start_pair(&release, &stable.release, &plan, &gate).await;
        let (canary, baseline) = match (canary, baseline) {
            (Ok(c), Ok(b)) => (c, b),
            (c, b) => {
                let mut reasons = Vec::new();
                for r in [&c, &b] {
                    match r {
                        Ok(r) => {
                            r.instance.stop(self.0.cfg.stop_grace).await;
                        }
                        Err(e) => reasons.push(e.clone()),
                    }
                }
                let reason = format!("did not get ready: {}", reasons.join("; "));
                self.finish(&id, Outcome::RolledBack, reason, started);
                return;
            }
        };
        self.with_live(|l| {
            l.canary = Some(canary.clone());
            l.baseline = Some(baseline.clone());
        });
        if gate.changes_schema() {
            self.refresh_schema().await;
        }
        let schema_change = gate.changes_schema().then(|| format!("{} ({})", release.version, gate.pending_names()));
        self.0.events.append(
            "instances_ready",
            Some(&id),
            json!({"canary": {"addr": canary.instance.addr().to_string(), "pid": canary.instance.pid()},
                   "baseline": {"addr": baseline.instance.addr().to_string(), "pid": baseline.instance.pid()},
                   "start_order": start_order(&gate), "elapsed_ms": started.elapsed().as_millis() as u64}),
        );
        let mut series = Series::default();
        // The latencies of the last tick at which both sides were routed traffic: at a step
        // that gives the baseline none (the last, 100 %), the canary's latencies would be
        // compared with the baseline's from another time and another load.
        let mut shared_latencies: Option<(Vec<f64>, Vec<f64>)> = None;
        let mut last_score: Option<Score> = None;
        let mut samples = SampleWriter::open(&self.0.dir, &id);
        // Canary's and baseline's reference heap profiles, taken together before either gets
        // traffic: the profile an instance keeps is itself a step in its heap, and inside the
        // judged window that step would read as growth per request. Warm-up growth after it
        // shows in both diffs and cancels out.
        match tokio::join!(canary.instance.mark_heap(&self.0.http), baseline.instance.mark_heap(&self.0.http)) {
            (Ok(c), Ok(b)) => {
                self.0.events.append("heap_reference", Some(&id), json!({"canary": {"profile": c}, "baseline": {"profile": b}}));
            }
            (c, b) => {
                let e = c.err().or(b.err()).map(|e| e.to_string()).unwrap_or_default();
                tracing::warn!(error = %e, "could not take the reference heap profiles; a rollback will name no allocation site");
            }
        }
        // With automatic rollback off: why the deployment waits for an operator.
        let mut held: Option<String> = None;
        for (i, step) in plan.steps.iter().enumerate() {
            let (cw, bw, _) = Plan::split(step.weight_pct);
            self.with_live(|l| {
                l.weights = (cw, bw);
                l.record.step = i + 1;
                l.record.canary_weight_pct = step.weight_pct;
            });
            self.apply_routes();
            self.0.events.append(
                "step_started",
                Some(&id),
                json!({"step": i + 1, "steps": plan.steps.len(), "weight_pct": step.weight_pct, "baseline_weight_pct": bw as f64 / 100.0,
                       "bake": humantime::format_duration(step.bake).to_string()}),
            );
            let step_start = Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(plan.judge_interval) => {}
                    _ = abort.changed() => {}
                    _ = canary.instance.exited() => {}
                    _ = baseline.instance.exited() => {}
                }
                let manual = abort.borrow().clone();
                if let Some(reason) = manual {
                    self.roll_back(&id, &canary, &baseline, &plan, format!("manual rollback: {reason}"), None, started).await;
                    return;
                }
                if let Some(s) = canary.instance.exit_status() {
                    self.roll_back(&id, &canary, &baseline, &plan, format!("the canary exited ({s})"), None, started).await;
                    return;
                }
                if let Some(s) = baseline.instance.exit_status() {
                    self.roll_back(&id, &canary, &baseline, &plan, format!("the baseline exited ({s}); the comparison is impossible"), None, started).await;
                    return;
                }
                let stable_now = self.lock().stable.clone();
                let (cs, bs, ss) = tokio::join!(canary.instance.scrape(&self.0.http), baseline.instance.scrape(&self.0.http), async {
                    match &stable_now {
                        Some(s) => s.instance.scrape(&self.0.http).await.ok(),
                        None => None,
                    }
                });
                let (cs, bs) = (cs.ok(), bs.ok());
                let cstats = self.0.proxy.stats(canary.id).unwrap_or_default();
                let bstats = self.0.proxy.stats(baseline.id).unwrap_or_default();
                let mut sample = Sample {
                    unix_ms: unix_ms(),
                    step: i + 1,
                    canary_weight_pct: step.weight_pct,
                    instances: vec![
                        self.instance_sample("canary", &canary, cs.as_ref(), cstats.requests, cstats.errors),
                        self.instance_sample("baseline", &baseline, bs.as_ref(), bstats.requests, bstats.errors),
                    ],
                };
                if let Some(st) = &stable_now {
                    let s = self.0.proxy.stats(st.id).unwrap_or_default();
                    sample.instances.push(self.instance_sample("stable", st, ss.as_ref(), s.requests, s.errors));
                }
                samples.append(&sample);
                self.with_live(|l| l.last_sample = Some(sample));
                series.observe(cs, bs, cstats.requests as f64, bstats.requests as f64);
                let (c_growth, b_growth) = (series.canary.growth_with_bounds(), series.baseline.growth_with_bounds());
                let (c_latencies, b_latencies) = if bw > 0 || shared_latencies.is_none() {
                    shared_latencies = Some((cstats.latencies_ms.clone(), bstats.latencies_ms.clone()));
                    (cstats.latencies_ms, bstats.latencies_ms)
                } else {
                    shared_latencies.clone().unwrap_or_default()
                };
                let cw_ = Window {
                    requests: cstats.requests,
                    errors: cstats.errors,
                    latencies_ms: c_latencies,
                    heap_growth_per_request: c_growth.map(|g| g.estimate),
                    heap_growth_per_request_low: c_growth.and_then(|g| g.low),
                    heap_growth_per_request_high: c_growth.and_then(|g| g.high),
                    leak_state: series.canary_leak,
                };
                let bw_ = Window {
                    requests: bstats.requests,
                    errors: bstats.errors,
                    latencies_ms: b_latencies,
                    heap_growth_per_request: b_growth.map(|g| g.estimate),
                    heap_growth_per_request_low: b_growth.and_then(|g| g.low),
                    heap_growth_per_request_high: b_growth.and_then(|g| g.high),
                    leak_state: series.baseline_leak,
                };
                let verdict = match &schema_change {
                    Some(change) => judge_schema_change(&cw_, &bw_, &plan.judge, change),
                    None => judge(&cw_, &bw_, &plan.judge),
                };
                self.with_live(|l| l.record.verdict = Some(verdict.clone()));
                if last_score != Some(verdict.score) {
                    last_score = Some(verdict.score);
                    self.0.events.append("verdict", Some(&id), json!({"step": i + 1, "weight_pct": step.weight_pct, "verdict": verdict}));
                }
                let elapsed = step_start.elapsed();
                let critical_fail = verdict.metrics.iter().any(|m| m.critical && m.score == Score::Fail);
                let failed = match verdict.score {
                    Score::Fail if critical_fail || elapsed >= step.bake => Some(format!("step {} ({} %): {}", i + 1, step.weight_pct, verdict.reason)),
                    Score::Pass if elapsed >= step.bake && held.is_none() => {
                        self.0.events.append("step_passed", Some(&id), json!({"step": i + 1, "weight_pct": step.weight_pct, "elapsed_ms": elapsed.as_millis() as u64, "verdict": verdict}));
                        break;
                    }
                    Score::Marginal if elapsed >= plan.step_timeout && held.is_none() => {
                        self.0.events.append("step_passed", Some(&id), json!({"step": i + 1, "weight_pct": step.weight_pct, "elapsed_ms": elapsed.as_millis() as u64, "marginal": true, "verdict": verdict}));
                        break;
                    }
                    Score::Inconclusive if elapsed >= plan.step_timeout => Some(format!(
                        "step {} ({} %): still inconclusive after {} ({}); no data is never a pass",
                        i + 1,
                        step.weight_pct,
                        humantime::format_duration(plan.step_timeout),
                        verdict.reason
                    )),
                    _ => None,
                };
                let Some(reason) = failed else { continue };
                if plan.auto_rollback {
                    self.roll_back(&id, &canary, &baseline, &plan, reason, Some(verdict), started).await;
                    return;
                }
                // Training: the analysis failed, the canary keeps its weight, and an operator
                // must find the cause and roll back (`paywarden rollback`).
                if held.is_none() {
                    tracing::error!(deployment = %id, %reason, "analysis failed; automatic rollback is off: roll back with `paywarden rollback`");
                    self.with_live(|l| l.record.held = Some(reason.clone()));
                    self.0.events.append(
                        "analysis_failed",
                        Some(&id),
                        json!({"reason": reason, "verdict": verdict, "auto_rollback": false, "elapsed_ms": started.elapsed().as_millis() as u64}),
                    );
                    held = Some(reason);
                    self.diagnose(&id, &canary, &baseline).await;
                }
            }
        }
        self.promote(&id, &canary, &baseline, &stable, &plan, started).await;
    }

    /// Starts the canary and the baseline. Together when the release migrates nothing. When it
    /// applies expand migrations, the canary first: the baseline then starts on the migrated
    /// schema, as a rollback would. When it applies a contract (the gate overridden), the
    /// baseline first, while the previous release can still start: it then serves on the
    /// contracted schema and the `schema` line shows how it fares.
    async fn start_pair(&self, release: &Release, stable: &Release, plan: &Plan, gate: &SchemaGate) -> (Result<Arc<Running>, String>, Result<Arc<Running>, String>) {
        let canary = || self.start_instance(release, "canary", plan.ready_timeout);
        let baseline = || self.start_instance(stable, "baseline", plan.ready_timeout);
        let not_started = |first: &str| Err(format!("not started: the {first} did not get ready"));
        match start_order(gate) {
            BASELINE_FIRST => {
                let b = baseline().await;
                let c = if b.is_ok() { canary().await } else { not_started("baseline") };
                (c, b)
            }
            CANARY_FIRST => {
                let c = canary().await;
                let b = if c.is_ok() { baseline().await } else { not_started("canary") };
                (c, b)
            }
            _ => tokio::join!(canary(), baseline()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn roll_back(&self, id: &str, canary: &Arc<Running>, baseline: &Arc<Running>, plan: &Plan, reason: String, verdict: Option<Verdict>, started: Instant) {
        // First the traffic: the stable takes everything at once.
        self.with_live(|l| l.weights = (0, 0));
        self.apply_routes();
        tracing::warn!(deployment = id, %reason, "rolling back");
        self.0.events.append("rollback_started", Some(id), json!({"reason": reason, "verdict": verdict, "elapsed_ms": started.elapsed().as_millis() as u64}));
        // Then the evidence, while the canary still runs: what its heap kept, and its leak
        // report.
        if self.lock().live.as_ref().is_some_and(|l| l.record.diagnosis.is_none()) {
            self.diagnose(id, canary, baseline).await;
        }
        if canary.instance.exit_status().is_none() {
            match canary.instance.leak_report(&self.0.http).await {
                Ok(report) => {
                    self.0.events.append("leak_report", Some(id), json!({"instance": "canary", "version": canary.release.version, "report": report}));
                }
                Err(e) => tracing::warn!(error = %e, "could not read the canary's leak report"),
            }
        }
        let (dc, db) = tokio::join!(self.0.proxy.drain(canary.id, plan.drain_timeout), self.0.proxy.drain(baseline.id, plan.drain_timeout));
        // The record's figures before the instances and their stats go.
        let record = self.lock().live.as_ref().map(|l| self.live_figures(l));
        tokio::join!(canary.instance.stop(self.0.cfg.stop_grace), baseline.instance.stop(self.0.cfg.stop_grace));
        if !(dc && db) {
            tracing::warn!(deployment = id, "in-flight requests to the canary or baseline did not drain in time");
        }
        if let Some(r) = record {
            self.with_live(|l| l.record = r);
        }
        self.with_live(|l| {
            l.canary = None;
            l.baseline = None;
        });
        self.0.proxy.forget(canary.id);
        self.0.proxy.forget(baseline.id);
        self.finish(id, Outcome::RolledBack, reason, started);
    }

    async fn promote(&self, id: &str, canary: &Arc<Running>, baseline: &Arc<Running>, old: &Arc<Running>, plan: &Plan, started: Instant) {
        {
            let mut st = self.lock();
            st.stable = Some(canary.clone());
            st.previous = Some(old.release.clone());
            if let Some(l) = st.live.as_mut() {
                l.weights = (0, 0);
                l.canary = None;
            }
        }
        self.apply_routes();
        self.0.events.append("promoting", Some(id), json!({"version": canary.release.version, "elapsed_ms": started.elapsed().as_millis() as u64}));
        let state = StableState { stable: canary.release.clone(), previous: Some(old.release.clone()) };
        if let Err(e) = release::save_stable(&self.0.dir, &state) {
            tracing::error!(error = %e, "could not save the new stable release; a restart of `up` would bring back the old one");
        }
        let (_, _) = tokio::join!(self.0.proxy.drain(old.id, plan.drain_timeout), self.0.proxy.drain(baseline.id, plan.drain_timeout));
        let mut record = self.lock().live.as_ref().map(|l| self.live_figures(l));
        if let (Some(r), Some(s)) = (record.as_mut(), self.0.proxy.stats(canary.id)) {
            r.requests_to_canary = s.requests;
            r.failed_canary_requests = s.errors;
            r.merchants_to_canary = s.distinct_keys;
        }
        tokio::join!(old.instance.stop(self.0.cfg.stop_grace), baseline.instance.stop(self.0.cfg.stop_grace));
        if let Some(r) = record {
            self.with_live(|l| l.record = r);
        }
        self.with_live(|l| l.baseline = None);
        self.0.proxy.forget(old.id);
        self.0.proxy.forget(baseline.id);
        self.supervise_stable(canary.clone());
        self.refresh_schema().await;
        self.finish(id, Outcome::Promoted, format!("every step passed; {} is the stable release", canary.release.version), started);
    }

    /// One instance's figures for the deployment's samples. Takes its recent latencies.
    fn instance_sample(&self, role: &str, r: &Running, scrape: Option<&Scrape>, requests: u64, errors: u64) -> InstanceSample {
        let mut lat = self.0.proxy.take_recent_latencies(r.id);
        InstanceSample {
            role: role.to_string(),
            version: r.release.version.clone(),
            heap_allocated_bytes: scrape.and_then(|s| s.heap_allocated_bytes),
            resident_bytes: scrape.and_then(|s| s.resident_bytes),
            leak_state: scrape.and_then(|s| s.leak_state),
            requests,
            errors,
            latency_p50_ms: quantile(&mut lat, 0.5),
            latency_p99_ms: quantile(&mut lat, 0.99),
            latency_samples: lat.len(),
        }
    }

    /// Asks canary and baseline which allocation sites grew since their reference heap
    /// profiles and records the sites that grew more on the canary (`diagnosis` event, the
    /// record's `diagnosis`); a failure is recorded too, with its reason.
    async fn diagnose(&self, id: &str, canary: &Running, baseline: &Running) {
        if canary.instance.exit_status().is_some() {
            return;
        }
        let t0 = Instant::now();
        let (c, b) = tokio::join!(canary.instance.heap_diff(&self.0.http), baseline.instance.heap_diff(&self.0.http));
        let diagnosis = match c {
            Ok(report) => {
                let base = b.as_ref().ok();
                let sites = canary_sites(&report, base, DIAGNOSIS_SITES_MAX);
                json!({"instance": "canary", "version": canary.release.version, "window_s": report.get("window_s"),
                       "heap_growth_bytes": report.get("heap_growth_bytes"),
                       "baseline_heap_growth_bytes": base.and_then(|r| r.get("heap_growth_bytes")),
                       "baseline_error": b.as_ref().err().map(|e| e.to_string()),
                       "sites": sites, "took_ms": t0.elapsed().as_millis() as u64})
            }
            Err(e) => json!({"instance": "canary", "version": canary.release.version, "sites": [], "error": e.to_string()}),
        };
        self.0.events.append("diagnosis", Some(id), diagnosis.clone());
        self.with_live(|l| l.record.diagnosis = Some(diagnosis));
    }

    fn finish(&self, id: &str, outcome: Outcome, reason: String, started: Instant) {
        let record = {
            let mut st = self.lock();
            let Some(mut l) = st.live.take() else { return };
            // Figures were frozen before instances stopped; only fill what is missing.
            if l.record.requests_total == 0 {
                l.record = self.live_figures(&l);
            }
            l.record.outcome = outcome;
            l.record.reason = Some(reason.clone());
            l.record.ended_unix_ms = Some(unix_ms());
            st.last = Some(l.record.clone());
            l.record
        };
        self.apply_routes();
        let kind = match outcome {
            Outcome::Promoted => "promoted",
            _ => "rolled_back",
        };
        self.0.events.append(
            kind,
            Some(id),
            json!({"reason": reason, "duration_ms": started.elapsed().as_millis() as u64, "requests_total": record.requests_total,
                   "requests_to_canary": record.requests_to_canary, "failed_requests": record.failed_requests}),
        );
        let _ = release::append_history(&self.0.dir, &serde_json::to_value(&record).unwrap_or_default());
        tracing::info!(deployment = id, outcome = kind, %reason, "deployment finished");
        if let Some(hook) = self.0.on_finished.get().cloned() {
            let (dir, id) = (self.0.dir.clone(), id.to_string());
            tokio::task::spawn_blocking(move || hook(&dir, &id));
        }
    }
}

/// The canary's growing allocation sites net of the baseline's growth at the same function
/// (both diffs cover the same time and equal traffic): what the new build keeps that the old
/// one does not. Largest net growth first, at most `max`; each site keeps the canary's stack
/// and gains `canary_growth_bytes`, `baseline_growth_bytes`, `evidence_samples` (net growth
/// in sampling intervals, when the report says its interval) and `confident` (at least
/// [`SITE_EVIDENCE_SAMPLES`] of them). Without a baseline diff the canary's sites are
/// returned as they are.
pub fn canary_sites(canary: &Value, baseline: Option<&Value>, max: usize) -> Vec<Value> {
    let window = canary.get("window_s").and_then(Value::as_f64).unwrap_or(0.0);
    let interval = canary.get("sample_interval_bytes").and_then(Value::as_f64).filter(|i| *i > 0.0);
    let growth_of = |report: Option<&Value>, function: &str| -> f64 {
        report
            .and_then(|r| r.get("sites"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|s| s.get("function").and_then(Value::as_str) == Some(function))
            .filter_map(|s| s.get("growth_bytes").and_then(Value::as_f64))
            .sum()
    };
    let mut out: Vec<Value> = Vec::new();
    for site in canary.get("sites").and_then(Value::as_array).into_iter().flatten() {
        let Some(function) = site.get("function").and_then(Value::as_str) else { continue };
        let grew = site.get("growth_bytes").and_then(Value::as_f64).unwrap_or(0.0);
        let base = growth_of(baseline, function);
        let net = grew - base;
        if net.is_nan() || net <= 0.0 {
            continue;
        }
        let mut s = site.clone();
        s["growth_bytes"] = json!(net);
        s["canary_growth_bytes"] = json!(grew);
        s["baseline_growth_bytes"] = json!(base);
        s["bytes_per_second"] = json!(if window > 0.0 { net / window } else { 0.0 });
        let evidence = interval.map(|i| net / i);
        s["evidence_samples"] = json!(evidence);
        s["confident"] = json!(evidence.is_none_or(|e| e >= SITE_EVIDENCE_SAMPLES));
        out.push(s);
    }
    out.sort_by(|a, b| {
        let g = |v: &Value| v.get("growth_bytes").and_then(Value::as_f64).unwrap_or(0.0);
        g(b).total_cmp(&g(a))
    });
    out.truncate(max);
    let total: f64 = out.iter().filter_map(|s| s.get("growth_bytes").and_then(Value::as_f64)).sum();
    for s in &mut out {
        let g = s.get("growth_bytes").and_then(Value::as_f64).unwrap_or(0.0);
        s["share"] = json!(if total > 0.0 { g / total } else { 0.0 });
    }
    out
}

/// Heap against requests served, per instance, for the heap-growth slope.
#[derive(Default)]
pub(crate) struct Points {
    xs: Vec<f64>,
    ys: Vec<f64>,
}

impl Points {
    pub(crate) fn push(&mut self, requests: f64, heap: f64) {
        if self.xs.len() >= HEAP_POINTS_MAX {
            let keep = |v: &mut Vec<f64>| {
                let mut i = 0;
                v.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
            };
            keep(&mut self.xs);
            keep(&mut self.ys);
        }
        self.xs.push(requests);
        self.ys.push(heap);
    }

    /// Theil–Sen slope of heap bytes against requests, after the warm-up requests: bytes each
    /// request leaves behind. None until 5 points span at least 10 requests.
    #[cfg(test)]
    pub(crate) fn growth_per_request(&self) -> Option<f64> {
        self.growth_with_bounds().map(|g| g.estimate)
    }

    /// [`Self::growth_per_request`] and its one-sided bounds: the lower at 99.9 %
    /// ([`HEAP_GROWTH_Z`]), the upper at 99 % ([`HEAP_GROWTH_PASS_Z`]).
    pub(crate) fn growth_with_bounds(&self) -> Option<memguard::stats::SenSlope> {
        let first = *self.xs.first()?;
        let start = self.xs.iter().position(|x| *x >= first + HEAP_WARMUP_REQUESTS)?;
        let (xs, ys) = (&self.xs[start..], &self.ys[start..]);
        if xs.len() < 5 || xs[xs.len() - 1] - xs[0] < 10.0 {
            return None;
        }
        let mut scratch = Vec::with_capacity(xs.len() * (xs.len() - 1) / 2);
        memguard::stats::theil_sen_with_bounds(xs, ys, HEAP_GROWTH_Z, HEAP_GROWTH_PASS_Z, &mut scratch)
    }
}

#[derive(Default)]
struct Series {
    canary: Points,
    baseline: Points,
    canary_leak: Option<u8>,
    baseline_leak: Option<u8>,
}

impl Series {
    fn observe(&mut self, c: Option<Scrape>, b: Option<Scrape>, c_requests: f64, b_requests: f64) {
        if let Some(c) = c {
            if let Some(h) = c.heap_allocated_bytes {
                self.canary.push(c_requests, h);
            }
            self.canary_leak = c.leak_state.or(self.canary_leak);
        }
        if let Some(b) = b {
            if let Some(h) = b.heap_allocated_bytes {
                self.baseline.push(b_requests, h);
            }
            self.baseline_leak = b.leak_state.or(self.baseline_leak);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_per_request_sees_a_leak_past_warm_up_and_noise() {
        let mut p = Points::default();
        // Warm-up: 200 KiB in the first 5 requests, then 1.5 KiB per request with noise.
        for i in 0..40 {
            let req = (i * 3) as f64;
            let warm = if req >= 5.0 { 200_000.0 } else { 0.0 };
            let noise = if i % 3 == 0 { 20_000.0 } else { -5_000.0 };
            p.push(req, 10_000_000.0 + warm + 1_536.0 * req + noise);
        }
        let g = p.growth_per_request().unwrap();
        assert!((1_300.0..1_800.0).contains(&g), "{g}");
    }

    #[test]
    fn flat_heap_grows_nothing_and_too_little_data_is_unknown() {
        let mut p = Points::default();
        for i in 0..4 {
            p.push(i as f64 * 100.0, 1e7);
        }
        assert_eq!(p.growth_per_request(), None);
        for i in 4..30 {
            p.push(i as f64 * 100.0, 1e7 + if i % 2 == 0 { 4096.0 } else { 0.0 });
        }
        assert!(p.growth_per_request().unwrap().abs() < 5.0);
    }

    #[test]
    fn canary_sites_are_net_of_the_baseline() {
        let site = |f: &str, g: f64| json!({"function": f, "growth_bytes": g, "stack": [f]});
        let canary = json!({"window_s": 10.0, "sites": [site("warm::pool", 60_000.0), site("app::leak", 400_000.0), site("app::cache", 50_000.0)]});
        let baseline = json!({"window_s": 10.0, "sites": [site("warm::pool", 58_000.0), site("app::cache", 70_000.0)]});
        let s = canary_sites(&canary, Some(&baseline), 5);
        let names: Vec<&str> = s.iter().map(|x| x["function"].as_str().unwrap()).collect();
        assert_eq!(names, ["app::leak", "warm::pool"], "the cache grew as much on the baseline");
        assert_eq!(s[0]["growth_bytes"], 400_000.0);
        assert_eq!(s[0]["bytes_per_second"], 40_000.0);
        assert_eq!(s[1]["baseline_growth_bytes"], 58_000.0);
        assert!((s[0]["share"].as_f64().unwrap() - 400.0 / 402.0).abs() < 1e-9);
        assert_eq!(s[0]["confident"], true, "no interval given: nothing to weigh");
        // With 16 KiB samples, 8 samples' worth (128 KiB) names a site; less is weak.
        let site = |f: &str, g: f64| json!({"function": f, "growth_bytes": g});
        let c = json!({"window_s": 5.0, "sample_interval_bytes": 16384, "sites": [site("a", 131_072.0), site("b", 131_071.0)]});
        let s = canary_sites(&c, Some(&json!({"sites": []})), 5);
        assert_eq!((s[0]["confident"].clone(), s[1]["confident"].clone()), (json!(true), json!(false)));
        assert_eq!(s[0]["evidence_samples"], 8.0);
        // No baseline diff: the canary's own sites; at most `max`.
        assert_eq!(canary_sites(&canary, None, 1).len(), 1);
        assert!(canary_sites(&json!({}), None, 5).is_empty());
    }

    #[test]
    fn points_stay_bounded() {
        let mut p = Points::default();
        for i in 0..(HEAP_POINTS_MAX * 3) {
            p.push(i as f64, i as f64 * 2.0);
        }
        assert!(p.xs.len() <= HEAP_POINTS_MAX);
        assert_eq!(p.xs.len(), p.ys.len());
        assert!((p.growth_per_request().unwrap() - 2.0).abs() < 1e-9);
    }
}
