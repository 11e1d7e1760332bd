//! `deploy/kubernetes`: the Argo Rollouts manifests. Every YAML document parses and names its
//! apiVersion, kind and name; the objects agree with each other and with this crate (the
//! Rollout's weights are `Plan::default_plan()`'s, the template maps the judge's `Score`s as
//! deploy/kubernetes/README.md says, Services select the pods they serve and reach their
//! ports, probes ask /healthz and /readyz); and `every_check_catches_a_broken_copy` shows that
//! each check fails when the manifests are broken in the way it guards against.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use paywarden_rollout::plan::Plan;
use paywarden_rollout::Score;
use serde::Deserialize;
use serde_json::{json, Value};

const NAMESPACE: &str = "paywarden";
const ROLLOUT: &str = "paywarden";
const TEMPLATE: &str = "paywarden-canary-verdict";
const VERDICT_PATH: &str = "/admin/canary/verdict";
const GATEWAY_PLUGIN: &str = "argoproj-labs/gatewayAPI";
/// The kinds and names the README describes.
const EXPECTED: [(&str, &str, &str); 7] = [
    ("argoproj.io/v1alpha1", "Rollout", ROLLOUT),
    ("argoproj.io/v1alpha1", "AnalysisTemplate", TEMPLATE),
    ("v1", "Service", "paywarden-stable"),
    ("v1", "Service", "paywarden-canary"),
    ("v1", "Service", "paywarden-admin"),
    ("apps/v1", "Deployment", "paywarden-judge"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute", "paywarden"),
];
const WORKLOAD_KINDS: [&str; 4] = ["Rollout", "Deployment", "StatefulSet", "DaemonSet"];

type Problems = Vec<String>;

/// Every document of deploy/kubernetes/*.yaml, with where it came from (`file#index`).
#[derive(Clone)]
struct Manifests {
    docs: Vec<(String, Value)>,
}

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn load() -> Manifests {
    let dir = manifests_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML in {}", dir.display());
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let short = file.file_name().expect("file name").to_string_lossy().into_owned();
        for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{short}: document {i} is not valid YAML: {e}"));
            if !value.is_null() {
                docs.push((format!("{short}#{i}"), value));
            }
        }
    }
    Manifests { docs }
}

impl Manifests {
    fn all(&self, kind: &str) -> impl Iterator<Item = &Value> + '_ {
        let kind = kind.to_owned();
        self.docs.iter().map(|(_, v)| v).filter(move |v| str_at(v, "/kind") == Some(kind.as_str()))
    }

    fn get(&self, kind: &str, name: &str) -> Option<&Value> {
        self.all(kind).find(|v| str_at(v, "/metadata/name") == Some(name))
    }

    /// For breaking a copy: the object, which must exist.
    fn get_mut(&mut self, kind: &str, name: &str) -> &mut Value {
        self.docs
            .iter_mut()
            .map(|(_, v)| v)
            .find(|v| str_at(v, "/kind") == Some(kind) && str_at(v, "/metadata/name") == Some(name))
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    fn rollout(&self) -> Result<&Value, Problems> {
        self.get("Rollout", ROLLOUT).ok_or_else(|| vec![format!("no Rollout named {ROLLOUT}")])
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)?.as_str()
}

fn array_at<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn id(v: &Value) -> String {
    format!("{} {}", str_at(v, "/kind").unwrap_or("?"), str_at(v, "/metadata/name").unwrap_or("?"))
}

fn labels(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default()
}

/// A selector selects a set of labels when it is not empty and every pair is in the set.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn assert_clean(what: &str, problems: Problems) {
    assert!(problems.is_empty(), "deploy/kubernetes, {what}:\n  {}", problems.join("\n  "));
}

/// A Rollout or a Deployment (or another pod controller): its pods and their containers.
struct Workload<'a> {
    id: String,
    selector: BTreeMap<String, String>,
    pod_labels: BTreeMap<String, String>,
    /// Labels Argo Rollouts adds to the pods of a role while they hold it (a Rollout's
    /// canaryMetadata and stableMetadata), by role.
    role_labels: BTreeMap<&'static str, BTreeMap<String, String>>,
    containers: &'a [Value],
}

impl Workload<'_> {
    /// The role whose pods `selector` selects: `Some(None)` for every pod of the workload,
    /// `Some(Some(role))` for the pods holding that role only.
    fn selected_role(&self, selector: &BTreeMap<String, String>) -> Option<Option<&'static str>> {
        if selects(selector, &self.pod_labels) {
            return Some(None);
        }
        self.role_labels.iter().find_map(|(role, extra)| {
            let mut with = self.pod_labels.clone();
            with.extend(extra.clone());
            selects(selector, &with).then_some(Some(*role))
        })
    }
}

fn workloads(m: &Manifests) -> Vec<Workload<'_>> {
    WORKLOAD_KINDS
        .iter()
        .flat_map(|kind| m.all(kind))
        .map(|v| Workload {
            id: id(v),
            selector: labels(v.pointer("/spec/selector/matchLabels")),
            pod_labels: labels(v.pointer("/spec/template/metadata/labels")),
            role_labels: [("canary", "canaryMetadata"), ("stable", "stableMetadata")]
                .into_iter()
                .map(|(role, field)| (role, labels(v.pointer(&format!("/spec/strategy/canary/{field}/labels")))))
                .filter(|(_, l)| !l.is_empty())
                .collect(),
            containers: array_at(v, "/spec/template/spec/containers"),
        })
        .collect()
}

/// The one workload whose pods `selector` selects.
fn selected<'a, 'm>(all: &'a [Workload<'m>], selector: &BTreeMap<String, String>) -> Result<&'a Workload<'m>, String> {
    let hits: Vec<&Workload<'_>> = all.iter().filter(|w| w.selected_role(selector).is_some()).collect();
    match hits.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("selector {selector:?} selects no pod template")),
        many => Err(format!("selector {selector:?} selects the pods of {}", many.iter().map(|w| w.id.as_str()).collect::<Vec<_>>().join(", "))),
    }
}

/// The container port a Service's `targetPort` (a number or a port name) reaches.
fn container_port(containers: &[Value], target: &Value) -> Option<i64> {
    containers.iter().flat_map(|c| array_at(c, "/ports")).find_map(|p| {
        let number = p.get("containerPort")?.as_i64()?;
        let hit = match target {
            Value::Number(n) => n.as_i64() == Some(number),
            Value::String(name) => p.get("name").and_then(Value::as_str) == Some(name.as_str()),
            _ => false,
        };
        hit.then_some(number)
    })
}

fn container<'a>(m: &'a Manifests, kind: &str, name: &str) -> Result<&'a Value, Problems> {
    let object = m.get(kind, name).ok_or_else(|| vec![format!("no {kind} {name}")])?;
    let containers = array_at(object, "/spec/template/spec/containers");
    match containers {
        [one] => Ok(one),
        _ => Err(vec![format!("{kind} {name}: expected one container, found {}", containers.len())]),
    }
}

fn args_of(container: &Value) -> Vec<String> {
    array_at(container, "/args").iter().filter_map(Value::as_str).map(str::to_owned).collect()
}

/// `--flag=VALUE` or `--flag VALUE`.
fn flag(args: &[String], name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if let Some(v) = a.strip_prefix(&prefix) {
            Some(v.to_owned())
        } else if a == name {
            args.get(i + 1).cloned()
        } else {
            None
        }
    })
}

fn port_of_address(address: &str) -> Option<i64> {
    address.rsplit_once(':')?.1.parse().ok()
}

/// An env var's `secretKeyRef` (name, key), if it is read from a Secret.
fn env_secret(container: &Value, var: &str) -> Option<(String, String)> {
    let env = array_at(container, "/env").iter().find(|e| e.get("name").and_then(Value::as_str) == Some(var))?;
    Some((str_at(env, "/valueFrom/secretKeyRef/name")?.to_owned(), str_at(env, "/valueFrom/secretKeyRef/key")?.to_owned()))
}

/// Kubernetes' duration forms for a pause: a number of seconds, or Go's `90s`, `5m`, `1h30m`.
fn duration(v: &Value) -> Option<Duration> {
    if let Some(n) = v.as_u64() {
        return Some(Duration::from_secs(n));
    }
    let s = v.as_str()?;
    if let Ok(n) = s.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    let (mut total, mut digits) = (0u64, String::new());
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total += digits.parse::<u64>().ok()? * unit;
        digits.clear();
    }
    digits.is_empty().then_some(Duration::from_secs(total))
}

/// A Kubernetes memory quantity in bytes: `512Mi`, `1Gi`, `500M`, `1073741824`.
fn bytes(q: &str) -> Option<u64> {
    const UNITS: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, unit) in UNITS {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().ok().map(|n| n * unit);
        }
    }
    q.parse().ok()
}

// ---- Analysis args: what an AnalysisRun made from the template gets. ----

#[derive(Clone, Debug, PartialEq)]
enum Arg {
    Value(String),
    Secret { name: String, key: String },
}

/// The args of an AnalysisRun that `analysis` (a step's or the background's) makes from
/// `template`: the template's defaults, overridden by the Rollout's, `fieldRef`s read from the
/// Rollout. Argo refuses a Rollout that leaves a template arg without a value.
fn run_args(rollout: &Value, analysis: &Value, template: &Value, at: &str) -> Result<BTreeMap<String, Arg>, Problems> {
    let mut problems = Vec::new();
    let mut args: BTreeMap<String, Option<Arg>> = BTreeMap::new();
    for a in array_at(template, "/spec/args") {
        let name = a.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let arg = if let Some(v) = a.get("value").and_then(Value::as_str) {
            Some(Arg::Value(v.to_owned()))
        } else if let (Some(n), Some(k)) = (str_at(a, "/valueFrom/secretKeyRef/name"), str_at(a, "/valueFrom/secretKeyRef/key")) {
            Some(Arg::Secret { name: n.to_owned(), key: k.to_owned() })
        } else {
            None
        };
        args.insert(name, arg);
    }
    for a in array_at(analysis, "/args") {
        let name = a.get("name").and_then(Value::as_str).unwrap_or_default();
        if !args.contains_key(name) {
            problems.push(format!("{at}: passes arg {name}, which {} does not declare", id(template)));
            continue;
        }
        let value = if let Some(v) = a.get("value").and_then(Value::as_str) {
            v.to_owned()
        } else if let Some(path) = str_at(a, "/valueFrom/fieldRef/fieldPath") {
            match path {
                "metadata.namespace" => str_at(rollout, "/metadata/namespace").unwrap_or_default().to_owned(),
                "metadata.name" => str_at(rollout, "/metadata/name").unwrap_or_default().to_owned(),
                other => {
                    problems.push(format!("{at}: arg {name}: this test reads only metadata.namespace and metadata.name, not {other}"));
                    continue;
                }
            }
        } else if a.pointer("/valueFrom/podTemplateHashValue").is_some() {
            "<pod-template-hash>".to_owned()
        } else {
            problems.push(format!("{at}: arg {name} has neither value nor valueFrom"));
            continue;
        };
        args.insert(name.to_owned(), Some(Arg::Value(value)));
    }
    let mut resolved = BTreeMap::new();
    for (name, arg) in args {
        match arg {
            Some(arg) => {
                resolved.insert(name, arg);
            }
            None => problems.push(format!("{at}: {} arg {name} gets no value (Argo refuses the Rollout)", id(template))),
        }
    }
    if problems.is_empty() {
        Ok(resolved)
    } else {
        Err(problems)
    }
}

/// The `{{args.NAME}}` (or `{{ args.NAME }}`) placeholders in `s`.
fn placeholders(s: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else { break };
        if let Some(name) = rest[start + 2..start + len].trim().strip_prefix("args.") {
            names.push(name.to_owned());
        }
        rest = &rest[start + len + 2..];
    }
    names
}

/// `s` with its placeholders replaced by plain values (a Secret's stays a placeholder: this
/// test never reads Secrets).
fn resolve(s: &str, args: &BTreeMap<String, Arg>) -> Result<String, String> {
    let mut out = s.to_owned();
    for name in placeholders(s) {
        match args.get(&name) {
            Some(Arg::Value(v)) => {
                out = out.replace(&format!("{{{{args.{name}}}}}"), v).replace(&format!("{{{{ args.{name} }}}}"), v);
            }
            Some(Arg::Secret { .. }) => {}
            None => return Err(format!("{{{{args.{name}}}}} names no arg")),
        }
    }
    Ok(out)
}

/// An int-or-string metric field after the args are resolved; absent is None.
fn resolve_int(v: Option<&Value>, args: &BTreeMap<String, Arg>) -> Result<Option<i64>, String> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| format!("{n} is not an integer")),
        Some(Value::String(s)) => {
            let r = resolve(s, args)?;
            r.parse().map(Some).map_err(|_| format!("{s:?} resolves to {r:?}, not an integer"))
        }
        Some(other) => Err(format!("{other} is not an integer")),
    }
}

/// Every analysis the Rollout runs: (where, the analysis object, is it the background one).
fn analyses(rollout: &Value) -> Vec<(String, &Value, bool)> {
    let mut all: Vec<(String, &Value, bool)> = array_at(rollout, "/spec/strategy/canary/steps")
        .iter()
        .enumerate()
        .filter_map(|(i, step)| step.get("analysis").map(|a| (format!("steps[{i}].analysis"), a, false)))
        .collect();
    if let Some(background) = rollout.pointer("/spec/strategy/canary/analysis") {
        all.push(("canary.analysis (background)".to_owned(), background, true));
    }
    all
}

// ---- Argo's measurement outcome for the judge's scores. ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Successful,
    Failed,
    Inconclusive,
}

/// The scores a condition of the form `result == "a" || result == 'b'` accepts; any other
/// form is refused, so the mapping below is exact.
fn condition_scores(condition: &str) -> Result<BTreeSet<String>, String> {
    condition
        .split("||")
        .map(|term| {
            let value = term.trim().strip_prefix("result").map(str::trim_start).and_then(|t| t.strip_prefix("==")).map(str::trim);
            value
                .filter(|v| v.len() >= 2 && (v.starts_with('"') && v.ends_with('"') || v.starts_with('\'') && v.ends_with('\'')))
                .map(|v| v[1..v.len() - 1].to_owned())
                .ok_or_else(|| format!("cannot read condition {condition:?}: write `result == \"SCORE\"` terms joined by ||"))
        })
        .collect()
}

/// What Argo makes of a measurement whose `result` is `score`: a failure condition that holds
/// fails it; else a success condition that holds succeeds it; with both conditions set and
/// neither holding it is inconclusive; with only one set, the other is its negation.
fn outcome(success: Option<&BTreeSet<String>>, failure: Option<&BTreeSet<String>>, score: &str) -> Outcome {
    let succeeds = success.map(|s| s.contains(score));
    let fails = failure.map(|f| f.contains(score));
    match (succeeds, fails) {
        (_, Some(true)) => Outcome::Failed,
        (Some(true), _) => Outcome::Successful,
        (Some(false), Some(false)) | (None, None) => Outcome::Inconclusive,
        (Some(false), None) => Outcome::Failed,
        (None, Some(false)) => Outcome::Successful,
    }
}

/// README.md's mapping, one arm per score so a new `Score` must be placed here.
fn expected_outcome(score: Score) -> Outcome {
    match score {
        Score::Pass => Outcome::Successful,
        Score::Fail => Outcome::Failed,
        Score::Marginal | Score::Inconclusive => Outcome::Inconclusive,
    }
}

// ---- The checks. Each returns what is wrong, empty when nothing is. ----

/// Every document has apiVersion, kind and metadata.name; (kind, name) is unique; everything
/// lives in one namespace; the README's objects exist with their apiVersions; RoleBindings
/// bind Roles and ServiceAccounts that exist here (or Argo Rollouts' own account).
fn check_documents(m: &Manifests) -> Problems {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (at, v) in &m.docs {
        for field in ["/apiVersion", "/kind", "/metadata/name"] {
            if str_at(v, field).is_none_or(str::is_empty) {
                problems.push(format!("{at}: no {}", field.trim_start_matches('/').replace('/', ".")));
            }
        }
        if !seen.insert(id(v)) {
            problems.push(format!("{at}: a second {}", id(v)));
        }
        if str_at(v, "/metadata/namespace") != Some(NAMESPACE) {
            problems.push(format!("{at}: {} is not in namespace {NAMESPACE}", id(v)));
        }
    }
    for (api_version, kind, name) in EXPECTED {
        match m.get(kind, name) {
            None => problems.push(format!("no {kind} named {name}")),
            Some(v) if str_at(v, "/apiVersion") != Some(api_version) => {
                problems.push(format!("{kind} {name}: apiVersion {:?}, expected {api_version}", str_at(v, "/apiVersion")));
            }
            Some(_) => {}
        }
    }
    if m.all("Service").count() < 3 {
        problems.push(format!("expected the stable, canary and admin Services, found {}", m.all("Service").count()));
    }
    for binding in m.all("RoleBinding") {
        let role = str_at(binding, "/roleRef/name").unwrap_or_default();
        if str_at(binding, "/roleRef/kind") == Some("Role") && m.get("Role", role).is_none() {
            problems.push(format!("{}: binds Role {role}, which is not here", id(binding)));
        }
        for subject in array_at(binding, "/subjects") {
            let name = str_at(subject, "/name").unwrap_or_default();
            let ns = str_at(subject, "/namespace").unwrap_or_default();
            if str_at(subject, "/kind") == Some("ServiceAccount") && ns == NAMESPACE && m.get("ServiceAccount", name).is_none() {
                problems.push(format!("{}: binds ServiceAccount {name}, which is not here", id(binding)));
            }
        }
    }
    for w in m.all("Deployment") {
        if let Some(sa) = str_at(w, "/spec/template/spec/serviceAccountName")
            && m.get("ServiceAccount", sa).is_none()
        {
            problems.push(format!("{}: runs as ServiceAccount {sa}, which is not here", id(w)));
        }
    }
    problems
}

/// The Rollout's steps walk `Plan::default_plan()`: its weights, strictly increasing to 100,
/// each held at least the plan's bake by a pause and then gated by an analysis step; a
/// background analysis watches from the first step; an abort scales the canary down and finds
/// the stable at full size.
fn check_steps(m: &Manifests) -> Problems {
    let rollout = match m.rollout() {
        Ok(r) => r,
        Err(p) => return p,
    };
    let mut problems = Vec::new();
    let plan = Plan::default_plan();
    let steps = array_at(rollout, "/spec/strategy/canary/steps");
    // Argo's setWeight is an integer percent.
    let mut weights: Vec<(usize, i64)> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        match step.get("setWeight").map(Value::as_i64) {
            None => {}
            Some(Some(w)) => weights.push((i, w)),
            Some(None) => problems.push(format!("steps[{i}].setWeight is not an integer percent")),
        }
    }
    if weights.is_empty() {
        problems.push("the Rollout has no setWeight step".to_owned());
        return problems;
    }
    for pair in weights.windows(2) {
        if pair[1].1 <= pair[0].1 {
            problems.push(format!("steps[{}].setWeight {} does not exceed the previous {}", pair[1].0, pair[1].1, pair[0].1));
        }
    }
    if weights[0].1 <= 0 {
        problems.push("the first setWeight must be above 0".to_owned());
    }
    if weights[weights.len() - 1].1 != 100 {
        problems.push(format!("the last setWeight is {}, it must be 100", weights[weights.len() - 1].1));
    }
    let plan_weights: Vec<f64> = plan.steps.iter().map(|s| s.weight_pct).collect();
    let ours: Vec<f64> = weights.iter().map(|w| w.1 as f64).collect();
    if ours != plan_weights {
        problems.push(format!("setWeight steps {ours:?} differ from the default plan's {plan_weights:?}"));
    }
    let bake = plan.steps.iter().map(|s| s.bake).max().unwrap_or_default();
    for (n, &(start, weight)) in weights.iter().enumerate() {
        let end = weights.get(n + 1).map_or(steps.len(), |w| w.0);
        let segment = &steps[start + 1..end];
        let pause = segment.iter().position(|s| s.get("pause").is_some());
        let gate = segment.iter().position(|s| s.get("analysis").is_some());
        match pause.map(|i| segment[i].pointer("/pause/duration").and_then(duration)) {
            None => problems.push(format!("weight {weight}: no pause (the bake) after setWeight")),
            Some(None) => problems.push(format!("weight {weight}: the pause has no duration: it would wait for a person, not bake")),
            Some(Some(d)) if d < bake => problems.push(format!("weight {weight}: bakes {d:?}, less than the default plan's {bake:?}")),
            Some(Some(_)) => {}
        }
        match (pause, gate) {
            (_, None) => problems.push(format!("weight {weight}: no analysis step gates it")),
            (Some(p), Some(g)) if g < p => problems.push(format!("weight {weight}: the analysis runs before the bake")),
            _ => {}
        }
    }
    let canary = rollout.pointer("/spec/strategy/canary").unwrap_or(&Value::Null);
    match canary.get("analysis") {
        None => problems.push("no background analysis (strategy.canary.analysis)".to_owned()),
        Some(bg) => {
            if bg.get("startingStep").and_then(Value::as_i64).unwrap_or(0) != 0 {
                problems.push("the background analysis starts after the first step: a fail at 1 % would go unwatched".to_owned());
            }
        }
    }
    if canary.get("abortScaleDownDelaySeconds").and_then(Value::as_i64) == Some(0) {
        problems.push("abortScaleDownDelaySeconds 0 keeps an aborted canary's pods running".to_owned());
    }
    if canary.get("dynamicStableScale").and_then(Value::as_bool) == Some(true) {
        problems.push("dynamicStableScale shrinks the stable during the rollout: an abort would not be instant".to_owned());
    }
    problems
}

/// Each analysis names AnalysisTemplates that exist and gives every arg a value; after the args
/// are resolved, one `fail` fails a run (failureLimit 0), a step's gate ends and cannot pass
/// on inconclusive verdicts alone (inconclusiveLimit below its count), and the background run
/// lasts until the rollout completes.
fn check_analyses(m: &Manifests) -> Problems {
    let rollout = match m.rollout() {
        Ok(r) => r,
        Err(p) => return p,
    };
    let mut problems = Vec::new();
    let all = analyses(rollout);
    if !all.iter().any(|(_, _, background)| !background) {
        problems.push("no analysis step: nothing gates a step on the verdict".to_owned());
    }
    for (at, analysis, background) in all {
        let templates = array_at(analysis, "/templates");
        if templates.is_empty() {
            problems.push(format!("{at}: names no template"));
        }
        for t in templates {
            let name = str_at(t, "/templateName").unwrap_or_default();
            let Some(template) = m.get("AnalysisTemplate", name) else {
                problems.push(format!("{at}: AnalysisTemplate {name:?} is not in deploy/kubernetes"));
                continue;
            };
            let args = match run_args(rollout, analysis, template, &at) {
                Ok(a) => a,
                Err(p) => {
                    problems.extend(p);
                    continue;
                }
            };
            let metrics = array_at(template, "/spec/metrics");
            if metrics.is_empty() {
                problems.push(format!("{}: no metrics", id(template)));
            }
            for metric in metrics {
                let here = format!("{at} -> {}/{}", id(template), str_at(metric, "/name").unwrap_or("?"));
                let text = metric.to_string();
                for p in placeholders(&text) {
                    if !args.contains_key(&p) {
                        problems.push(format!("{here}: {{{{args.{p}}}}} is not an arg"));
                    }
                }
                let field = |f: &str| resolve_int(metric.get(f), &args).map_err(|e| format!("{here}: {f}: {e}"));
                let (count, failure_limit, inconclusive_limit) = match (field("count"), field("failureLimit"), field("inconclusiveLimit")) {
                    (Ok(c), Ok(f), Ok(i)) => (c.unwrap_or(0), f.unwrap_or(0), i.unwrap_or(0)),
                    (c, f, i) => {
                        problems.extend([c.err(), f.err(), i.err()].into_iter().flatten());
                        continue;
                    }
                };
                let interval = metric.get("interval").and_then(duration);
                if metric.get("interval").is_some() && interval.is_none() {
                    problems.push(format!("{here}: interval is not a duration"));
                }
                if failure_limit != 0 {
                    problems.push(format!("{here}: failureLimit {failure_limit}: one fail must fail the run"));
                }
                if count > 0 && count < inconclusive_limit {
                    problems.push(format!("{here}: count {count} below inconclusiveLimit {inconclusive_limit} (Argo refuses it)"));
                }
                let runs_until_stopped = count == 0 && interval.is_some();
                if background {
                    if !runs_until_stopped {
                        problems.push(format!("{here}: the background run must last until the rollout completes (count 0 and an interval), not {count} measurements"));
                    }
                } else {
                    let count = if count == 0 && interval.is_none() { 1 } else { count };
                    if runs_until_stopped {
                        problems.push(format!("{here}: a step's analysis that never ends blocks the rollout (Argo refuses it)"));
                    } else if inconclusive_limit >= count {
                        problems.push(format!("{here}: inconclusiveLimit {inconclusive_limit} with count {count}: a gate of only inconclusive verdicts would pass"));
                    }
                    if count > 1 && interval.is_none() {
                        problems.push(format!("{here}: count {count} needs an interval"));
                    }
                }
            }
        }
    }
    problems
}

/// The template asks the judge: the Web provider, `GET http://SERVICE.NAMESPACE.svc:PORT
/// /admin/canary/verdict` where SERVICE is a Service here with that port, a bearer token from
/// the same Secret the gateway and the judge read, `jsonPath: "{$.score}"`, and conditions that
/// map pass, fail, marginal and inconclusive as README.md says.
fn check_template(m: &Manifests) -> Problems {
    let Some(template) = m.get("AnalysisTemplate", TEMPLATE) else {
        return vec![format!("no AnalysisTemplate {TEMPLATE}")];
    };
    let rollout = match m.rollout() {
        Ok(r) => r,
        Err(p) => return p,
    };
    let mut problems = Vec::new();
    let admin_secret = container(m, "Rollout", ROLLOUT).ok().and_then(|c| env_secret(c, "PAYWARDEN_ADMIN_TOKEN"));
    let judge_secret = container(m, "Deployment", "paywarden-judge").ok().and_then(|c| env_secret(c, "PAYWARDEN_ADMIN_TOKEN"));
    if admin_secret.is_none() || admin_secret != judge_secret {
        problems.push(format!("the gateway ({admin_secret:?}) and the judge ({judge_secret:?}) must read PAYWARDEN_ADMIN_TOKEN from the same Secret"));
    }
    let users: Vec<(String, &Value)> = analyses(rollout)
        .into_iter()
        .filter(|(_, a, _)| array_at(a, "/templates").iter().any(|t| str_at(t, "/templateName") == Some(TEMPLATE)))
        .map(|(at, a, _)| (at, a))
        .collect();
    if users.is_empty() {
        problems.push(format!("the Rollout never uses {TEMPLATE}"));
    }
    let metrics = array_at(template, "/spec/metrics");
    if metrics.is_empty() {
        problems.push(format!("{TEMPLATE}: no metrics"));
    }
    for metric in metrics {
        let here = format!("{TEMPLATE}/{}", str_at(metric, "/name").unwrap_or("?"));
        let provider = metric.get("provider").and_then(Value::as_object);
        let Some(web) = provider.filter(|p| p.len() == 1).and_then(|p| p.get("web")) else {
            problems.push(format!("{here}: the provider must be `web` alone, found {:?}", provider.map(|p| p.keys().collect::<Vec<_>>())));
            continue;
        };
        if !matches!(str_at(web, "/method"), None | Some("GET")) {
            problems.push(format!("{here}: the verdict is a GET"));
        }
        if str_at(web, "/jsonPath") != Some("{$.score}") {
            problems.push(format!("{here}: jsonPath must be \"{{$.score}}\", found {:?}", str_at(web, "/jsonPath")));
        }
        // The token: `Authorization: Bearer {{args.X}}`, X from the admin token's Secret.
        let auth = array_at(web, "/headers")
            .iter()
            .find(|h| str_at(h, "/key").is_some_and(|k| k.eq_ignore_ascii_case("authorization")))
            .and_then(|h| str_at(h, "/value"));
        let token_arg = auth.and_then(|a| a.strip_prefix("Bearer ")).map(placeholders).and_then(|p| p.into_iter().next());
        let secret = token_arg.as_ref().and_then(|name| {
            array_at(template, "/spec/args").iter().find(|a| str_at(a, "/name") == Some(name.as_str())).and_then(|a| {
                Some((str_at(a, "/valueFrom/secretKeyRef/name")?.to_owned(), str_at(a, "/valueFrom/secretKeyRef/key")?.to_owned()))
            })
        });
        if secret.is_none() || secret != admin_secret {
            problems.push(format!("{here}: Authorization must be `Bearer {{{{args.X}}}}` with X from the admin token's Secret {admin_secret:?}, found {auth:?} -> {secret:?}"));
        }
        // The URL, as each run that uses the template resolves it.
        for (at, analysis) in &users {
            let Ok(args) = run_args(rollout, analysis, template, at) else { continue }; // check_analyses reports it
            let url = match resolve(str_at(web, "/url").unwrap_or_default(), &args) {
                Ok(u) => u,
                Err(e) => {
                    problems.push(format!("{here}: url: {e}"));
                    continue;
                }
            };
            problems.extend(check_verdict_url(m, &url).err().map(|e| format!("{here} ({at}): {url}: {e}")));
        }
        // The conditions, for every score the judge gives.
        let read = |f: &str| metric.get(f).and_then(Value::as_str).map(condition_scores).transpose();
        match (read("successCondition"), read("failureCondition")) {
            (Ok(success), Ok(failure)) => {
                if success.is_none() || failure.is_none() {
                    problems.push(format!("{here}: set both successCondition and failureCondition, so marginal and inconclusive are neither"));
                }
                for score in [Score::Pass, Score::Marginal, Score::Inconclusive, Score::Fail] {
                    let got = outcome(success.as_ref(), failure.as_ref(), score.as_str());
                    if got != expected_outcome(score) {
                        problems.push(format!("{here}: score {:?} would be {got:?}, README.md says {:?}", score.as_str(), expected_outcome(score)));
                    }
                }
            }
            (s, f) => problems.extend([s.err(), f.err()].into_iter().flatten().map(|e| format!("{here}: {e}"))),
        }
    }
    problems
}

/// `http://SERVICE.NAMESPACE.svc[.cluster.local]:PORT/admin/canary/verdict`, SERVICE a Service
/// here that has PORT.
fn check_verdict_url(m: &Manifests, url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or("not an http:// URL")?;
    let (authority, path) = rest.split_once('/').ok_or("no path")?;
    if !format!("/{path}").ends_with(VERDICT_PATH) {
        return Err(format!("the path must end with {VERDICT_PATH}"));
    }
    let (host, port) = authority.rsplit_once(':').ok_or("no port")?;
    let port: i64 = port.parse().map_err(|_| "the port is not a number")?;
    let labels: Vec<&str> = host.split('.').collect();
    let (service, namespace) = match labels.as_slice() {
        [s, ns, "svc"] | [s, ns, "svc", "cluster", "local"] => (*s, *ns),
        _ => return Err("the host must be SERVICE.NAMESPACE.svc".to_owned()),
    };
    if namespace != NAMESPACE {
        return Err(format!("namespace {namespace}, the manifests are in {NAMESPACE}"));
    }
    let svc = m.get("Service", service).ok_or_else(|| format!("no Service {service}"))?;
    if !array_at(svc, "/spec/ports").iter().any(|p| p.get("port").and_then(Value::as_i64) == Some(port)) {
        return Err(format!("Service {service} has no port {port}"));
    }
    Ok(())
}

/// Workloads' selectors select their own pod templates and no other workload's; every Service
/// selects the pods of exactly one workload; the Rollout's stable and canary Services are two
/// Services that select the Rollout's pods, and the judge's Service selects the judge.
fn check_selectors(m: &Manifests) -> Problems {
    let mut problems = Vec::new();
    let all = workloads(m);
    for w in &all {
        if !selects(&w.selector, &w.pod_labels) {
            problems.push(format!("{}: selector {:?} does not select its pod labels {:?}", w.id, w.selector, w.pod_labels));
        }
        for other in all.iter().filter(|o| o.id != w.id) {
            if selects(&w.selector, &other.pod_labels) {
                problems.push(format!("{}: its selector also selects the pods of {}", w.id, other.id));
            }
        }
    }
    let mut selected_by: BTreeMap<String, String> = BTreeMap::new();
    for svc in m.all("Service") {
        let selector = labels(svc.pointer("/spec/selector"));
        match selected(&all, &selector) {
            Ok(w) => {
                selected_by.insert(str_at(svc, "/metadata/name").unwrap_or_default().to_owned(), w.id.clone());
            }
            Err(e) => problems.push(format!("{}: {e}", id(svc))),
        }
    }
    if let Ok(rollout) = m.rollout() {
        let canary = str_at(rollout, "/spec/strategy/canary/canaryService");
        let stable = str_at(rollout, "/spec/strategy/canary/stableService");
        if canary.is_none() || canary == stable {
            problems.push(format!("canaryService {canary:?} and stableService {stable:?} must be two Services"));
        }
        for (role, name) in [("canaryService", canary), ("stableService", stable)] {
            let name = name.unwrap_or_default();
            if selected_by.get(name) != Some(&id(rollout)) {
                problems.push(format!("{role} {name:?} must be a Service here that selects the Rollout's pods"));
            }
        }
    }
    if selected_by.get("paywarden-admin").map(String::as_str) != Some("Deployment paywarden-judge") {
        problems.push("Service paywarden-admin must select the judge's pods".to_owned());
    }
    problems
}

/// Every Service port's targetPort is a port of the containers it selects; the stable and
/// canary Services expose the same ports; the processes listen where the ports say; the
/// HTTPRoute the Rollout names sends to the stable and canary Services on their ports.
fn check_ports(m: &Manifests) -> Problems {
    let mut problems = Vec::new();
    let all = workloads(m);
    for svc in m.all("Service") {
        let Ok(w) = selected(&all, &labels(svc.pointer("/spec/selector"))) else { continue }; // check_selectors reports it
        let ports = array_at(svc, "/spec/ports");
        if ports.is_empty() {
            problems.push(format!("{}: no ports", id(svc)));
        }
        for p in ports {
            let target = p.get("targetPort").or_else(|| p.get("port")).unwrap_or(&Value::Null);
            if container_port(w.containers, target).is_none() {
                problems.push(format!("{}: targetPort {target} is no container port of {}", id(svc), w.id));
            }
        }
    }
    let ports_of = |name: &str| m.get("Service", name).map(|s| s.pointer("/spec/ports").cloned());
    if ports_of("paywarden-stable") != ports_of("paywarden-canary") {
        problems.push("Services paywarden-stable and paywarden-canary must expose the same ports".to_owned());
    }
    let listeners = [("Rollout", ROLLOUT, "--listen", "http"), ("Deployment", "paywarden-judge", "--admin-listen", "admin")];
    for (kind, name, flag_name, port_name) in listeners {
        match container(m, kind, name) {
            Ok(c) => {
                let listen = flag(&args_of(c), flag_name).and_then(|a| port_of_address(&a));
                let port = container_port(std::slice::from_ref(c), &json!(port_name));
                if listen.is_none() || listen != port {
                    problems.push(format!("{kind} {name}: {flag_name} port {listen:?} differs from container port {port_name:?} {port:?}"));
                }
            }
            Err(p) => problems.extend(p),
        }
    }
    if let Ok(rollout) = m.rollout() {
        let canary = rollout.pointer("/spec/strategy/canary").unwrap_or(&Value::Null);
        let route_name = canary.pointer("/trafficRouting/plugins").and_then(|p| p.get(GATEWAY_PLUGIN)).and_then(|p| str_at(p, "/httpRoute"));
        match route_name.and_then(|n| m.get("HTTPRoute", n)) {
            None => problems.push(format!("trafficRouting must name, through the {GATEWAY_PLUGIN} plugin, an HTTPRoute here (found {route_name:?})")),
            Some(route) => {
                let backends: Vec<&Value> = array_at(route, "/spec/rules").iter().flat_map(|r| array_at(r, "/backendRefs")).collect();
                let names: BTreeSet<&str> = backends.iter().filter_map(|b| str_at(b, "/name")).collect();
                let wanted: BTreeSet<&str> =
                    ["canaryService", "stableService"].iter().filter_map(|f| canary.get(*f).and_then(Value::as_str)).collect();
                if names != wanted {
                    problems.push(format!("{}: backends {names:?}, expected the stable and canary Services {wanted:?}", id(route)));
                }
                for b in backends {
                    let name = str_at(b, "/name").unwrap_or_default();
                    let port = b.get("port").and_then(Value::as_i64);
                    let has = m
                        .get("Service", name)
                        .is_some_and(|s| array_at(s, "/spec/ports").iter().any(|p| p.get("port").and_then(Value::as_i64) == port));
                    if !has {
                        problems.push(format!("{}: backend {name} port {port:?} is not a port of that Service", id(route)));
                    }
                }
            }
        }
    }
    problems
}

/// The gateway's liveness probe asks /healthz and its readiness probe /readyz, on the port it
/// serves; the judge's liveness probe asks its admin API's /healthz.
fn check_probes(m: &Manifests) -> Problems {
    let mut problems = Vec::new();
    let wanted = [
        ("Rollout", ROLLOUT, "livenessProbe", "/healthz"),
        ("Rollout", ROLLOUT, "readinessProbe", "/readyz"),
        ("Deployment", "paywarden-judge", "livenessProbe", "/healthz"),
    ];
    for (kind, name, probe, path) in wanted {
        let c = match container(m, kind, name) {
            Ok(c) => c,
            Err(p) => {
                problems.extend(p);
                continue;
            }
        };
        let got = str_at(c, &format!("/{probe}/httpGet/path"));
        if got != Some(path) {
            problems.push(format!("{kind} {name}: {probe} must GET {path}, found {got:?}"));
        }
        let port = c.pointer(&format!("/{probe}/httpGet/port")).unwrap_or(&Value::Null);
        if container_port(std::slice::from_ref(c), port).is_none() {
            problems.push(format!("{kind} {name}: {probe} port {port} is not a container port"));
        }
    }
    problems
}

/// The gateway container runs `serve` with --listen and --data-dir; its memory limit exists
/// (the memory guard forecasts against it) and covers its request; the admin token and the
/// database URL come from Secrets in the environment (`PAYWARDEN_DATABASE`), never in the
/// arguments, which other processes can read; every `$(VAR)` in its args is defined.
fn check_gateway(m: &Manifests) -> Problems {
    let c = match container(m, "Rollout", ROLLOUT) {
        Ok(c) => c,
        Err(p) => return p,
    };
    let mut problems = Vec::new();
    let args = args_of(c);
    if args.first().map(String::as_str) != Some("serve") {
        problems.push(format!("the gateway must run `serve`, args are {args:?}"));
    }
    for f in ["--listen", "--data-dir"] {
        if flag(&args, f).is_none_or(|v| v.is_empty()) {
            problems.push(format!("the gateway's args lack {f}"));
        }
    }
    if flag(&args, "--database").is_some() {
        problems.push("the database URL (and its password) must come in PAYWARDEN_DATABASE, not in --database".to_owned());
    }
    let limit = str_at(c, "/resources/limits/memory").map(|q| (q, bytes(q)));
    match limit {
        None => problems.push("the gateway has no memory limit: the memory guard would forecast against the node's memory".to_owned()),
        Some((q, None)) => problems.push(format!("memory limit {q:?} is not a quantity")),
        Some((_, Some(limit))) => {
            if limit < 64 << 20 {
                problems.push(format!("memory limit {limit} bytes is below 64 MiB"));
            }
            if str_at(c, "/resources/requests/memory").and_then(bytes).is_some_and(|request| request > limit) {
                problems.push("the memory request exceeds the limit".to_owned());
            }
        }
    }
    for var in ["PAYWARDEN_ADMIN_TOKEN", "PAYWARDEN_DATABASE"] {
        if env_secret(c, var).is_none() {
            problems.push(format!("{var} must come from a Secret (env valueFrom.secretKeyRef)"));
        }
    }
    let defined: BTreeSet<&str> = array_at(c, "/env").iter().filter_map(|e| str_at(e, "/name")).collect();
    for a in &args {
        let mut rest = a.as_str();
        while let Some(start) = rest.find("$(") {
            let Some(len) = rest[start..].find(')') else { break };
            let var = &rest[start + 2..start + len];
            if !defined.contains(var) {
                problems.push(format!("arg {a:?} uses $({var}), which env does not define"));
            }
            rest = &rest[start + len + 1..];
        }
    }
    problems
}

/// The judge's `--canary` and `--stable` name, with a port, headless Services here that select
/// the Rollout's pods of that role only (by the role's ephemeral labels), on a port reaching
/// the gateway's `http` port: a DNS lookup of each is then the list of that role's pods.
fn check_judge_targets(m: &Manifests) -> Problems {
    let c = match container(m, "Deployment", "paywarden-judge") {
        Ok(c) => c,
        Err(p) => return p,
    };
    let args = args_of(c);
    let all = workloads(m);
    let mut problems = Vec::new();
    if args.first().map(String::as_str) != Some("judge") {
        problems.push(format!("the judge must run `judge`, args are {args:?}"));
    }
    for (flag_name, role) in [("--canary", "canary"), ("--stable", "stable")] {
        let Some(target) = flag(&args, flag_name) else {
            problems.push(format!("the judge's args lack {flag_name}"));
            continue;
        };
        let Some((host, port)) = target.rsplit_once(':') else {
            problems.push(format!("{flag_name} {target:?} is not SERVICE:PORT"));
            continue;
        };
        let Some(svc) = m.get("Service", host) else {
            problems.push(format!("{flag_name} names Service {host:?}, which is not here"));
            continue;
        };
        if str_at(svc, "/spec/clusterIP") != Some("None") {
            problems.push(format!("{}: must be headless (clusterIP: None) so that its name resolves to each pod", id(svc)));
        }
        let selector = labels(svc.pointer("/spec/selector"));
        match selected(&all, &selector) {
            Ok(w) if w.id == format!("Rollout {ROLLOUT}") && w.selected_role(&selector) == Some(Some(role)) => {}
            Ok(w) => problems.push(format!("{}: must select the {role} pods of Rollout {ROLLOUT} only, selects {:?} of {}", id(svc), w.selected_role(&selector), w.id)),
            Err(e) => problems.push(format!("{}: {e}", id(svc))),
        }
        let reaches = array_at(svc, "/spec/ports").iter().any(|p| {
            p.get("port").and_then(Value::as_i64).map(|n| n.to_string()).as_deref() == Some(port)
                && m.rollout().is_ok_and(|r| {
                    let target = p.get("targetPort").or_else(|| p.get("port")).unwrap_or(&Value::Null);
                    container_port(array_at(r, "/spec/template/spec/containers"), target)
                        == container_port(array_at(r, "/spec/template/spec/containers"), &json!("http"))
                })
        });
        if !reaches {
            problems.push(format!("{flag_name} port {port} is no port of {} that reaches the gateway's http port", id(svc)));
        }
    }
    problems
}

// ---- Tests. ----

#[test]
fn every_document_parses_and_names_itself() {
    let m = load();
    assert!(m.docs.len() >= EXPECTED.len(), "only {} documents", m.docs.len());
    assert_clean("documents", check_documents(&m));
}

#[test]
fn canary_steps_walk_the_default_plan() {
    assert_clean("canary steps", check_steps(&load()));
}

#[test]
fn analyses_resolve_their_template_and_args() {
    assert_clean("analyses", check_analyses(&load()));
}

#[test]
fn template_asks_the_judge_and_maps_its_scores() {
    assert_clean("the verdict template", check_template(&load()));
}

#[test]
fn services_select_the_pods_they_serve() {
    assert_clean("selectors", check_selectors(&load()));
}

#[test]
fn service_ports_reach_container_ports() {
    assert_clean("ports", check_ports(&load()));
}

#[test]
fn probes_use_healthz_and_readyz() {
    assert_clean("probes", check_probes(&load()));
}

#[test]
fn gateway_container_has_memory_limit_and_secrets() {
    assert_clean("the gateway container", check_gateway(&load()));
}

/// The checks' own test: each breakage must be reported by the check that guards against it.
#[test]
fn the_judge_finds_each_roles_pods_by_dns() {
    assert_clean("judge targets", check_judge_targets(&load()));
}

#[test]
fn every_check_catches_a_broken_copy() {
    type Check = fn(&Manifests) -> Problems;
    type Break = fn(&mut Manifests);
    fn rollout(m: &mut Manifests) -> &mut Value {
        m.get_mut("Rollout", ROLLOUT)
    }
    fn template(m: &mut Manifests) -> &mut Value {
        m.get_mut("AnalysisTemplate", TEMPLATE)
    }
    fn at<'a>(v: &'a mut Value, pointer: &str) -> &'a mut Value {
        v.pointer_mut(pointer).unwrap_or_else(|| panic!("no {pointer}"))
    }
    fn step_index(m: &mut Manifests, weight: i64) -> usize {
        array_at(rollout(m), "/spec/strategy/canary/steps")
            .iter()
            .position(|s| s.get("setWeight").and_then(Value::as_i64) == Some(weight))
            .unwrap_or_else(|| panic!("no setWeight {weight}"))
    }
    fn set_template_arg(m: &mut Manifests, name: &str, value: &str) {
        let args = at(template(m), "/spec/args").as_array_mut().expect("args");
        let arg = args.iter_mut().find(|a| str_at(a, "/name") == Some(name)).unwrap_or_else(|| panic!("no arg {name}"));
        arg["value"] = json!(value);
    }
    let cases: [(&str, Check, Break); 32] = [
        ("a document without kind", check_documents, |m| {
            m.docs[0].1.as_object_mut().expect("object").remove("kind");
        }),
        ("the admin Service renamed", check_documents, |m| {
            *at(m.get_mut("Service", "paywarden-admin"), "/metadata/name") = json!("paywarden-judge-api");
        }),
        ("a Rollout in the wrong apiVersion", check_documents, |m| {
            *at(rollout(m), "/apiVersion") = json!("apps/v1");
        }),
        ("weights out of order", check_steps, |m| {
            let (i, j) = (step_index(m, 5), step_index(m, 25));
            *at(rollout(m), &format!("/spec/strategy/canary/steps/{i}/setWeight")) = json!(25);
            *at(rollout(m), &format!("/spec/strategy/canary/steps/{j}/setWeight")) = json!(5);
        }),
        ("a last weight below 100", check_steps, |m| {
            let i = step_index(m, 100);
            *at(rollout(m), &format!("/spec/strategy/canary/steps/{i}/setWeight")) = json!(90);
        }),
        ("a pause without duration", check_steps, |m| {
            let i = step_index(m, 1) + 1;
            *at(rollout(m), &format!("/spec/strategy/canary/steps/{i}")) = json!({"pause": {}});
        }),
        ("a step without its gate", check_steps, |m| {
            let i = step_index(m, 25) + 2;
            at(rollout(m), "/spec/strategy/canary/steps").as_array_mut().expect("steps").remove(i);
        }),
        ("no background analysis", check_steps, |m| {
            at(rollout(m), "/spec/strategy/canary").as_object_mut().expect("canary").remove("analysis");
        }),
        ("an aborted canary kept running", check_steps, |m| {
            *at(rollout(m), "/spec/strategy/canary/abortScaleDownDelaySeconds") = json!(0);
        }),
        ("a step naming a template that does not exist", check_analyses, |m| {
            let i = step_index(m, 5) + 2;
            *at(rollout(m), &format!("/spec/strategy/canary/steps/{i}/analysis/templates/0/templateName")) = json!("paywarden-canary-verdicts");
        }),
        ("the background naming a template that does not exist", check_analyses, |m| {
            *at(rollout(m), "/spec/strategy/canary/analysis/templates/0/templateName") = json!("canary-verdict");
        }),
        ("a required arg not passed", check_analyses, |m| {
            let i = step_index(m, 1) + 2;
            *at(rollout(m), &format!("/spec/strategy/canary/steps/{i}/analysis/args")) = json!([]);
        }),
        ("a failure limit above 0", check_analyses, |m| {
            *at(template(m), "/spec/metrics/0/failureLimit") = json!(2);
        }),
        ("a gate that passes on inconclusive verdicts alone", check_analyses, |m| set_template_arg(m, "inconclusive-limit", "4")),
        ("a gate that never ends", check_analyses, |m| set_template_arg(m, "count", "0")),
        ("a background run that stops early", check_analyses, |m| {
            let args = at(rollout(m), "/spec/strategy/canary/analysis/args").as_array_mut().expect("args");
            args.retain(|a| str_at(a, "/name") != Some("count"));
        }),
        ("the prometheus provider", check_template, |m| {
            let web = at(template(m), "/spec/metrics/0/provider/web").take();
            *at(template(m), "/spec/metrics/0/provider") = json!({"prometheus": web});
        }),
        ("another URL path", check_template, |m| {
            let url = at(template(m), "/spec/metrics/0/provider/web/url");
            *url = json!(url.as_str().expect("url").replace("/admin/canary/verdict", "/admin/status"));
        }),
        ("the judge's Service on another port", check_template, |m| {
            *at(m.get_mut("Service", "paywarden-admin"), "/spec/ports/0/port") = json!(4244);
        }),
        ("no jsonPath", check_template, |m| {
            at(template(m), "/spec/metrics/0/provider/web").as_object_mut().expect("web").remove("jsonPath");
        }),
        ("marginal counted as a success", check_template, |m| {
            *at(template(m), "/spec/metrics/0/successCondition") = json!("result == \"pass\" || result == \"marginal\"");
        }),
        ("no failure condition", check_template, |m| {
            at(template(m), "/spec/metrics/0").as_object_mut().expect("metric").remove("failureCondition");
        }),
        ("the stable Service selecting other pods", check_selectors, |m| {
            *at(m.get_mut("Service", "paywarden-stable"), "/spec/selector/app.kubernetes.io~1component") = json!("api");
        }),
        ("the admin Service selecting the gateway", check_selectors, |m| {
            *at(m.get_mut("Service", "paywarden-admin"), "/spec/selector/app.kubernetes.io~1component") = json!("gateway");
        }),
        ("a targetPort no container has", check_ports, |m| {
            *at(m.get_mut("Service", "paywarden-canary"), "/spec/ports/0/targetPort") = json!(8080);
        }),
        ("readiness asking /healthz", check_probes, |m| {
            *at(rollout(m), "/spec/template/spec/containers/0/readinessProbe/httpGet/path") = json!("/healthz");
        }),
        ("the database URL in the arguments", check_gateway, |m| {
            let args = at(rollout(m), "/spec/template/spec/containers/0/args").as_array_mut().expect("args");
            args.push(json!("--database=$(PAYWARDEN_DATABASE)"));
        }),
        ("the canary pods' Service with a cluster IP", check_judge_targets, |m| {
            at(m.get_mut("Service", "paywarden-canary-pods"), "/spec").as_object_mut().expect("spec").remove("clusterIP");
        }),
        ("the stable pods' Service selecting every gateway pod", check_judge_targets, |m| {
            at(m.get_mut("Service", "paywarden-stable-pods"), "/spec/selector").as_object_mut().expect("selector").remove("paywarden.dev/role");
        }),
        ("no canaryMetadata on the Rollout", check_judge_targets, |m| {
            at(rollout(m), "/spec/strategy/canary").as_object_mut().expect("canary").remove("canaryMetadata");
        }),
        ("the judge scraping the stable pods on the wrong port", check_judge_targets, |m| {
            let args = at(m.get_mut("Deployment", "paywarden-judge"), "/spec/template/spec/containers/0/args").as_array_mut().expect("args");
            for a in args.iter_mut() {
                if a.as_str().is_some_and(|s| s.starts_with("--stable=")) {
                    *a = json!("--stable=paywarden-stable-pods:8080");
                }
            }
        }),
        ("no memory limit", check_gateway, |m| {
            at(rollout(m), "/spec/template/spec/containers/0/resources").as_object_mut().expect("resources").remove("limits");
        }),
    ];
    let base = load();
    let mut missed = Vec::new();
    for (what, check, breaking) in cases {
        let mut broken = base.clone();
        breaking(&mut broken);
        if check(&broken).is_empty() {
            missed.push(what);
        }
    }
    assert!(missed.is_empty(), "checks that missed a breakage: {missed:?}");
}

#[test]
fn condition_reader_refuses_what_it_cannot_map() {
    let read = condition_scores("result == \"pass\" || result == 'marginal'").expect("readable");
    assert_eq!(read, BTreeSet::from(["pass".to_owned(), "marginal".to_owned()]));
    assert!(condition_scores("result != \"fail\"").is_err());
    assert!(condition_scores("result == pass").is_err());
    let pass = BTreeSet::from(["pass".to_owned()]);
    let fail = BTreeSet::from(["fail".to_owned()]);
    assert_eq!(outcome(Some(&pass), Some(&fail), "marginal"), Outcome::Inconclusive);
    assert_eq!(outcome(Some(&pass), None, "marginal"), Outcome::Failed);
    assert_eq!(outcome(None, Some(&fail), "marginal"), Outcome::Successful);
    assert_eq!(duration(&json!("1m30s")), Some(Duration::from_secs(90)));
    assert_eq!(duration(&json!(60)), Some(Duration::from_secs(60)));
    assert_eq!(bytes("512Mi"), Some(512 << 20));
}
