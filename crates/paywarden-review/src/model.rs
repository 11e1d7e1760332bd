//! What a review shows, gathered from the rollout directory: the deployment's last history
//! record, its events, alerts and samples. Loading reads files only; nothing here talks to a
//! controller or an instance.

use std::path::Path;

use paywarden_rollout::events::read_events;
use paywarden_rollout::release::read_history;
use paywarden_rollout::samples::{check_deployment_id, read_samples, Sample};
use paywarden_rollout::schema::SchemaGate;
use serde::Serialize;
use serde_json::Value;

/// Why a review cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("{0}")]
    BadId(String),
    #[error("no deployment {id} in {dir}: see `paywarden history` for the ids")]
    NotFound { id: String, dir: String },
    #[error("reading {what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// A metric's verdict, as the judge gave it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricView {
    pub metric: String,
    pub critical: bool,
    pub score: String,
    pub canary: Option<f64>,
    pub baseline: Option<f64>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerdictView {
    pub score: String,
    pub score_pct: f64,
    pub reason: String,
    pub metrics: Vec<MetricView>,
}

/// One step of the plan as it ran.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepSpan {
    /// 1-based.
    pub step: usize,
    pub weight_pct: f64,
    pub baseline_weight_pct: f64,
    pub start_ms: u64,
    /// None while it runs.
    pub end_ms: Option<u64>,
    /// `passed`, `passed (marginal)`, `failed`, `held`, `aborted`, `running`.
    pub result: String,
}

/// An alert transition an instance reported during the deployment.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertView {
    pub at_ms: u64,
    /// `firing` or `resolved`.
    pub status: String,
    pub name: String,
    /// `canary`, `baseline` or `stable`.
    pub instance: String,
    pub version: String,
    pub severity: String,
    pub summary: String,
}

/// A growing allocation site from the canary's heap diff.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SiteView {
    pub function: String,
    /// Net of the baseline's growth at the same function.
    pub growth_bytes: f64,
    pub bytes_per_second: f64,
    pub share: f64,
    /// The site and its callers, outward.
    pub stack: Vec<String>,
    /// Enough heap-profile samples back it to name it a cause (see the controller's
    /// `SITE_EVIDENCE_SAMPLES`); a weak site is shown, never blamed.
    pub confident: bool,
    /// Its net growth in sampling intervals, when known.
    pub evidence_samples: Option<f64>,
}

/// The canary's heap diff.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Diagnosis {
    pub at_ms: u64,
    pub window_s: f64,
    /// The heap profiles' estimate of each side's growth between the reference profile and
    /// the diff, including what the symbolizer itself allocated on the way: kept as recorded,
    /// never put in words. How much an instance's heap grew is what its samples say
    /// ([`Review::heap_growth`]), as the charts show.
    pub heap_growth_bytes: Option<f64>,
    pub baseline_heap_growth_bytes: Option<f64>,
    pub sites: Vec<SiteView>,
    /// Why there is no diff, when there is none.
    pub error: Option<String>,
}

/// The canary's memguard verdict at rollback.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LeakView {
    pub at_ms: u64,
    pub state: String,
    pub summary: Option<String>,
    /// Samples the canary's detector held.
    pub samples: Option<u64>,
    /// Why the detector said what it said, in its words (`warming up: 13 of 30 samples`): the
    /// summary's part after its dash.
    pub reason: Option<String>,
}

/// One instance's heap over the judged window, from the deployment's samples: its first and
/// last sample with a heap figure. What the charts show and the sentences say.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HeapGrowth {
    pub role: String,
    pub version: String,
    pub first_ms: u64,
    pub last_ms: u64,
    pub first_bytes: f64,
    pub last_bytes: f64,
    /// Samples with a heap figure in the window.
    pub samples: usize,
    /// Requests the instance served by its last sample in the window (cumulative).
    pub requests: u64,
}

impl HeapGrowth {
    /// Last minus first, bytes (negative when the heap shrank).
    pub fn growth_bytes(&self) -> f64 {
        self.last_bytes - self.first_bytes
    }
}

/// One line of the timeline.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimelineEntry {
    pub at_ms: u64,
    pub kind: String,
    pub text: String,
}

/// One instance's figures over the deployment, from the samples.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InstanceStats {
    pub role: String,
    pub version: String,
    pub requests: u64,
    pub errors: u64,
    /// errors ÷ requests; None without requests.
    pub error_rate: Option<f64>,
    /// Median of the per-second medians.
    pub latency_p50_ms: Option<f64>,
    /// The worst second's p99.
    pub latency_p99_ms: Option<f64>,
    pub heap_first_bytes: Option<f64>,
    pub heap_last_bytes: Option<f64>,
    pub rss_first_bytes: Option<f64>,
    pub rss_last_bytes: Option<f64>,
    pub rss_peak_bytes: Option<f64>,
}

/// The traffic figures the controller counted.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Traffic {
    pub requests_total: u64,
    pub requests_to_canary: u64,
    pub requests_to_baseline: u64,
    pub failed_requests: u64,
    pub failed_canary_requests: u64,
    pub failed_payment_requests: u64,
    pub merchants_to_canary: u64,
}

impl Traffic {
    /// Share of requests the canary served, percent; None without requests.
    pub fn exposed_pct(&self) -> Option<f64> {
        (self.requests_total > 0).then(|| self.requests_to_canary as f64 * 100.0 / self.requests_total as f64)
    }
}

/// Everything a review shows.
#[derive(Debug, Clone, Serialize)]
pub struct Review {
    pub id: String,
    pub version: String,
    pub sha256: String,
    pub binary: String,
    pub args: Vec<String>,
    pub baseline_version: String,
    pub baseline_sha256: Option<String>,
    pub plan_name: String,
    /// (weight %, bake) per planned step.
    pub plan_steps: Vec<(f64, String)>,
    pub step_timeout: String,
    pub auto_rollback: bool,
    /// The plan's judge threshold: extra heap per request that fails the canary, bytes.
    pub heap_growth_fail_bytes: Option<f64>,
    /// `promoted`, `rolled_back` or `in_progress`.
    pub outcome: String,
    pub reason: Option<String>,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub traffic: Traffic,
    pub steps: Vec<StepSpan>,
    /// The last verdict the judge gave.
    pub verdict: Option<VerdictView>,
    /// The first verdict that failed (detection), if any.
    pub first_failure: Option<(u64, VerdictView)>,
    /// When the analysis failed with automatic rollback off.
    pub held_ms: Option<u64>,
    /// When traffic left the canary (`rollback_started`) and when the rollback completed.
    pub rollback_started_ms: Option<u64>,
    pub rollback_completed_ms: Option<u64>,
    pub alerts: Vec<AlertView>,
    pub diagnosis: Option<Diagnosis>,
    pub leak_report: Option<LeakView>,
    pub timeline: Vec<TimelineEntry>,
    pub samples: Vec<Sample>,
    pub instances: Vec<InstanceStats>,
    /// The schema gate's verdict: what the release migrated and the history before it.
    /// `None` for a rollback to the previous release (and for records from before the gate).
    pub schema: Option<SchemaGate>,
}

fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}
fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}
fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

fn verdict_view(v: &Value) -> Option<VerdictView> {
    if !v.is_object() {
        return None;
    }
    Some(VerdictView {
        score: s(v, "score"),
        score_pct: f(v, "score_pct").unwrap_or(0.0),
        reason: s(v, "reason"),
        metrics: v
            .get("metrics")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|m| MetricView {
                metric: s(m, "metric"),
                critical: m.get("critical").and_then(Value::as_bool).unwrap_or(false),
                score: s(m, "score"),
                canary: f(m, "canary"),
                baseline: f(m, "baseline"),
                detail: s(m, "detail"),
            })
            .collect(),
    })
}

fn diagnosis_view(e: &Value) -> Diagnosis {
    Diagnosis {
        at_ms: u(e, "unix_ms"),
        window_s: f(e, "window_s").unwrap_or(0.0),
        heap_growth_bytes: f(e, "heap_growth_bytes"),
        baseline_heap_growth_bytes: f(e, "baseline_heap_growth_bytes"),
        sites: e
            .get("sites")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|x| SiteView {
                function: s(x, "function"),
                growth_bytes: f(x, "growth_bytes").unwrap_or(0.0),
                bytes_per_second: f(x, "bytes_per_second").unwrap_or(0.0),
                share: f(x, "share").unwrap_or(0.0),
                stack: x.get("stack").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(String::from).collect(),
                confident: x.get("confident").and_then(Value::as_bool).unwrap_or(true),
                evidence_samples: f(x, "evidence_samples"),
            })
            .collect(),
        error: e.get("error").and_then(Value::as_str).map(String::from),
    }
}

/// A traffic weight without needless decimals: `1`, `0.5`.
pub fn format_weight(x: f64) -> String {
    if x == x.trunc() { format!("{x:.0}") } else { format!("{x}") }
}

/// Per-instance figures from the samples (requests and errors are cumulative per instance:
/// the last sample's are the deployment's).
pub fn instance_stats(samples: &[Sample]) -> Vec<InstanceStats> {
    let mut roles: Vec<(String, String)> = Vec::new();
    for smp in samples {
        for i in &smp.instances {
            if !roles.iter().any(|(r, v)| *r == i.role && *v == i.version) {
                roles.push((i.role.clone(), i.version.clone()));
            }
        }
    }
    roles
        .into_iter()
        .map(|(role, version)| {
            let series: Vec<_> = samples.iter().filter_map(|smp| smp.instances.iter().find(|i| i.role == role && i.version == version)).collect();
            let last = series.last();
            let requests = last.map_or(0, |i| i.requests);
            let errors = last.map_or(0, |i| i.errors);
            let mut p50s: Vec<f64> = series.iter().filter_map(|i| i.latency_p50_ms).collect();
            let p99 = series.iter().filter_map(|i| i.latency_p99_ms).fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
            let heap: Vec<f64> = series.iter().filter_map(|i| i.heap_allocated_bytes).collect();
            let rss: Vec<f64> = series.iter().filter_map(|i| i.resident_bytes).collect();
            InstanceStats {
                role,
                version,
                requests,
                errors,
                error_rate: (requests > 0).then(|| errors as f64 / requests as f64),
                latency_p50_ms: paywarden_rollout::samples::quantile(&mut p50s, 0.5),
                latency_p99_ms: p99,
                heap_first_bytes: heap.first().copied(),
                heap_last_bytes: heap.last().copied(),
                rss_first_bytes: rss.first().copied(),
                rss_last_bytes: rss.last().copied(),
                rss_peak_bytes: rss.iter().copied().reduce(f64::max),
            }
        })
        .collect()
}

impl Diagnosis {
    /// The site to name as the cause: the largest that enough samples back.
    pub fn cause(&self) -> Option<&SiteView> {
        self.sites.iter().find(|s| s.confident)
    }
}

impl Review {
    /// Loads deployment `id` from `rollout_dir` (`DATA_DIR/rollout`).
    pub fn load(rollout_dir: &Path, id: &str) -> Result<Review, ReviewError> {
        check_deployment_id(id).map_err(ReviewError::BadId)?;
        let io = |what: &str| {
            let what = what.to_string();
            move |source| ReviewError::Io { what: what.clone(), source }
        };
        let history = read_history(rollout_dir).map_err(io("the deployment history"))?;
        let Some(record) = history.iter().rev().find(|r| r.get("id").and_then(Value::as_str) == Some(id)).cloned() else {
            return Err(ReviewError::NotFound { id: id.to_string(), dir: rollout_dir.display().to_string() });
        };
        let events = read_events(&rollout_dir.join("events.jsonl"), Some(id)).map_err(io("the event log"))?;
        let samples = read_samples(rollout_dir, id).map_err(io("the deployment's samples"))?;
        Ok(Review::build(&record, &events, samples))
    }

    /// Builds the review from a history record, the deployment's events and its samples.
    pub fn build(record: &Value, events: &[Value], samples: Vec<Sample>) -> Review {
        let plan = record.get("plan").cloned().unwrap_or(Value::Null);
        let started = events.iter().find(|e| e["kind"] == "deployment_started");
        let mut steps: Vec<StepSpan> = Vec::new();
        let mut timeline = Vec::new();
        let mut alerts = Vec::new();
        let mut first_failure = None;
        let mut diagnosis = None;
        let mut leak_report = None;
        let (mut held_ms, mut rb_started, mut rb_done) = (None, None, None);
        let close = |steps: &mut Vec<StepSpan>, at: u64, result: &str| {
            if let Some(last) = steps.last_mut().filter(|x| x.end_ms.is_none()) {
                last.end_ms = Some(at);
                last.result = result.to_string();
            }
        };
        for e in events {
            let at = u(e, "unix_ms");
            let kind = s(e, "kind");
            let text = match kind.as_str() {
                "deployment_started" => format!(
                    "deployment of {} started (baseline {}, plan {})",
                    s(e, "version"),
                    s(e, "baseline_version"),
                    e["plan"]["name"].as_str().unwrap_or("?")
                ),
                "instances_ready" => format!("canary and baseline ready after {} ms", u(e, "elapsed_ms")),
                "heap_reference" => "reference heap profiles of canary and baseline taken".to_string(),
                "step_started" => {
                    close(&mut steps, at, "passed");
                    steps.push(StepSpan {
                        step: u(e, "step") as usize,
                        weight_pct: f(e, "weight_pct").unwrap_or(0.0),
                        baseline_weight_pct: f(e, "baseline_weight_pct").unwrap_or(0.0),
                        start_ms: at,
                        end_ms: None,
                        result: "running".into(),
                    });
                    format!("step {}: canary at {} % of traffic (baseline {} %)", u(e, "step"), format_weight(f(e, "weight_pct").unwrap_or(0.0)), format_weight(f(e, "baseline_weight_pct").unwrap_or(0.0)))
                }
                "verdict" => {
                    let v = verdict_view(&e["verdict"]);
                    if let Some(v) = v.as_ref().filter(|v| v.score == "fail") {
                        first_failure.get_or_insert((at, v.clone()));
                    }
                    format!("verdict {}: {}", e["verdict"]["score"].as_str().unwrap_or("?"), e["verdict"]["reason"].as_str().unwrap_or(""))
                }
                "step_passed" => {
                    let marginal = e.get("marginal").and_then(Value::as_bool).unwrap_or(false);
                    close(&mut steps, at, if marginal { "passed (marginal)" } else { "passed" });
                    format!("step {} passed{}", u(e, "step"), if marginal { " (marginal, at the step timeout)" } else { "" })
                }
                "analysis_failed" => {
                    held_ms.get_or_insert(at);
                    if let Some(v) = verdict_view(&e["verdict"]) {
                        first_failure.get_or_insert((at, v));
                    }
                    if let Some(last) = steps.last_mut() {
                        last.result = "held".into();
                    }
                    format!("analysis failed, automatic rollback off, deployment held: {}", s(e, "reason"))
                }
                "rollback_started" => {
                    rb_started.get_or_insert(at);
                    if let Some(v) = verdict_view(&e["verdict"]).filter(|v| v.score == "fail") {
                        first_failure.get_or_insert((at, v));
                    }
                    let manual = s(e, "reason").starts_with("manual");
                    close(&mut steps, at, if manual { "aborted" } else { "failed" });
                    format!("rollback started, canary weight 0: {}", s(e, "reason"))
                }
                "diagnosis" => {
                    let d = diagnosis_view(e);
                    let text = match (&d.error, d.cause()) {
                        (Some(err), _) => format!("heap diff of the canary failed: {err}"),
                        (None, Some(top)) => format!("heap diff names {} ({:.0} KiB over {:.0} s)", top.function, top.growth_bytes / 1024.0, d.window_s),
                        (None, None) if !d.sites.is_empty() => format!(
                            "heap diff of the canary: {} site(s) grew more than on the baseline over {:.0} s, none by enough samples to name a cause",
                            d.sites.len(),
                            d.window_s
                        ),
                        (None, None) => format!("heap diff of the canary: no allocation site grew more than on the baseline over {:.0} s", d.window_s),
                    };
                    diagnosis.get_or_insert(d);
                    text
                }
                "leak_report" => {
                    let r = &e["report"];
                    let state = s(r, "state");
                    let summary = r["assessment"]["summary"].as_str().map(String::from);
                    let reason = summary.as_deref().and_then(|x| x.split_once(" \u{2014} ")).map(|(_, why)| why.trim().to_string()).filter(|x| !x.is_empty());
                    leak_report = Some(LeakView { at_ms: at, state: state.clone(), summary: summary.clone(), samples: r.get("samples").and_then(Value::as_u64), reason });
                    format!("canary's memguard verdict: {state}{}", summary.map(|x| format!(" ({x})")).unwrap_or_default())
                }
                "alert" => {
                    let a = &e["alert"];
                    let view = AlertView {
                        at_ms: at,
                        status: e["status"].as_str().unwrap_or("").to_string(),
                        name: a["name"].as_str().or(a["labels"]["alertname"].as_str()).unwrap_or("?").to_string(),
                        instance: s(e, "instance"),
                        version: s(e, "version"),
                        severity: a["labels"]["severity"].as_str().unwrap_or("").to_string(),
                        summary: a["annotations"]["summary"].as_str().unwrap_or("").to_string(),
                    };
                    let t = format!("alert {} {} on the {} ({}): {}", view.name, view.status, view.instance, view.version, view.summary);
                    alerts.push(view);
                    t
                }
                "promoting" => format!("promoting {}: the canary takes all traffic", s(e, "version")),
                "promoted" => {
                    close(&mut steps, at, "passed");
                    format!("promoted: {}", s(e, "reason"))
                }
                "rolled_back" => {
                    rb_done.get_or_insert(at);
                    close(&mut steps, at, "failed");
                    format!("rollback complete: {}", s(e, "reason"))
                }
                "release_rollback_started" => format!("manual rollback from {} to {}: {}", s(e, "from"), s(e, "to"), s(e, "reason")),
                "release_rollback_failed" => format!("rollback failed: {}", s(e, "error")),
                "schema_gate" => format!("schema gate {}: {}", s(e, "outcome"), s(e, "reason")),
                _ => kind.replace('_', " "),
            };
            timeline.push(TimelineEntry { at_ms: at, kind, text });
        }
        let instances = instance_stats(&samples);
        Review {
            id: s(record, "id"),
            version: s(record, "version"),
            sha256: s(record, "sha256"),
            binary: s(record, "binary"),
            args: record.get("args").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(String::from).collect(),
            baseline_version: s(record, "baseline_version"),
            baseline_sha256: started.and_then(|e| e.get("baseline_sha256")).and_then(Value::as_str).map(String::from),
            plan_name: s(&plan, "name"),
            plan_steps: plan
                .get("steps")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|x| (f(x, "weight_pct").unwrap_or(0.0), s(x, "bake")))
                .collect(),
            step_timeout: s(&plan, "step_timeout"),
            heap_growth_fail_bytes: plan.get("judge").and_then(|j| f(j, "heap_growth_fail")),
            auto_rollback: plan.get("auto_rollback").and_then(Value::as_bool).unwrap_or(true),
            outcome: s(record, "outcome"),
            reason: record.get("reason").and_then(Value::as_str).map(String::from),
            started_ms: u(record, "started_unix_ms"),
            ended_ms: record.get("ended_unix_ms").and_then(Value::as_u64),
            traffic: Traffic {
                requests_total: u(record, "requests_total"),
                requests_to_canary: u(record, "requests_to_canary"),
                requests_to_baseline: u(record, "requests_to_baseline"),
                failed_requests: u(record, "failed_requests"),
                failed_canary_requests: u(record, "failed_canary_requests"),
                failed_payment_requests: u(record, "failed_payment_requests"),
                merchants_to_canary: u(record, "merchants_to_canary"),
            },
            steps,
            verdict: verdict_view(&record["verdict"]),
            first_failure,
            held_ms,
            rollback_started_ms: rb_started,
            rollback_completed_ms: rb_done,
            alerts,
            diagnosis,
            leak_report,
            timeline,
            samples,
            instances,
            schema: record.get("schema").cloned().and_then(|v| serde_json::from_value(v).ok()),
        }
    }

    /// Whether an incident report is due: the deployment was rolled back or held, or an
    /// alert fired.
    pub fn is_incident(&self) -> bool {
        self.outcome == "rolled_back" || self.held_ms.is_some() || self.alerts.iter().any(|a| a.status == "firing")
    }

    /// Seconds from the deployment's start to `at_ms`.
    pub fn since_start_s(&self, at_ms: u64) -> f64 {
        at_ms.saturating_sub(self.started_ms) as f64 / 1000.0
    }

    /// When the judge stopped judging: the rollback's start, the hold, the last step's end,
    /// or the deployment's end; None while it still runs.
    pub fn judged_until_ms(&self) -> Option<u64> {
        self.rollback_started_ms.or(self.held_ms).or_else(|| self.steps.last().and_then(|s| s.end_ms)).or(self.ended_ms)
    }

    /// Each instance's heap over the judged window (the deployment's samples up to
    /// [`Review::judged_until_ms`]), in the order the samples name them; an instance without
    /// a heap figure in the window is absent.
    pub fn heap_growth(&self) -> Vec<HeapGrowth> {
        let until = self.judged_until_ms().unwrap_or(u64::MAX);
        let window: Vec<&Sample> = self.samples.iter().filter(|x| x.unix_ms <= until).collect();
        let mut out: Vec<HeapGrowth> = Vec::new();
        for smp in &window {
            for i in &smp.instances {
                let Some(h) = i.heap_allocated_bytes.filter(|h| h.is_finite()) else { continue };
                match out.iter_mut().find(|g| g.role == i.role && g.version == i.version) {
                    Some(g) => {
                        g.last_ms = smp.unix_ms;
                        g.last_bytes = h;
                        g.samples += 1;
                        g.requests = i.requests;
                    }
                    None => out.push(HeapGrowth {
                        role: i.role.clone(),
                        version: i.version.clone(),
                        first_ms: smp.unix_ms,
                        last_ms: smp.unix_ms,
                        first_bytes: h,
                        last_bytes: h,
                        samples: 1,
                        requests: i.requests,
                    }),
                }
            }
        }
        out
    }

    /// [`Review::heap_growth`] of the first instance in `role`.
    pub fn heap_growth_of(&self, role: &str) -> Option<HeapGrowth> {
        self.heap_growth().into_iter().find(|g| g.role == role)
    }
}

/// `1.5 MiB`, `512 KiB`, `900 B`.
pub fn format_bytes(b: f64) -> String {
    let a = b.abs();
    if a >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if a >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if a >= 1024.0 {
        format!("{:.0} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// `2026-11-24 11:41:44 UTC`, from Unix milliseconds: it names its zone, so nothing around
/// it should.
pub fn format_time(unix_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.replace('T', " ").replace('Z', " UTC")
}

/// `2026-11-24` (UTC), from Unix milliseconds.
pub fn format_date(unix_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.get(..10).unwrap_or(&s).to_string()
}

/// `HH:MM:SS.mmm` (UTC, not said: tables say it in their heading), for timelines.
pub fn format_clock(unix_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    let s = humantime::format_rfc3339_millis(t).to_string();
    s.get(11..23).unwrap_or(&s).to_string()
}
