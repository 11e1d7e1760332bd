//! The schema gate: what a release would do to the shared database, decided before anything of
//! it starts.
//!
//! Every instance shares one database, and a canary applies its migrations when it starts. The
//! stable release is then already serving on the migrated schema, and it is the rollback
//! target: a migration it cannot run on (a **contract**: a drop, a rename, a type or constraint
//! change) would break both, and no rollback could undo it. So `deploy` first asks the new
//! release's binary what it would do (`BINARY migrate --plan --json`, the gateway's command
//! line; this crate knows nothing of SQL) and [`gate`] decides:
//!
//! | the release would apply | outcome |
//! |---|---|
//! | nothing | `unchanged` |
//! | expand migrations only | `pass`: the previous release keeps running on them; the verdict gets a `schema` line |
//! | a contract | `refused` (409): ship the expand first, the contract in a later release once the release before it is retired |
//! | a contract, with the plan's `allow_contract = true` | `overridden`: deployed, recorded in the event log and the review |
//! | a release that cannot run on the database (an unknown contract) | `refused` |
//!
//! [`SchemaReport`] is the wire format of `migrate --plan --json` (format [`REPORT_FORMAT`]):
//! written by the gateway binary with this type and read back by it, across releases.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The version of [`SchemaReport`]'s JSON.
pub const REPORT_FORMAT: u32 = 1;
/// Longest a release's `migrate --plan` may take (it opens the database and reads two tables).
pub const PLAN_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest `migrate --plan --json` output read.
pub const PLAN_OUTPUT_BYTES_MAX: usize = 4 * 1024 * 1024;

/// What a migration does to the releases before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationKind {
    /// Additive: the previous release keeps working.
    Expand,
    /// The previous release cannot run on it.
    Contract,
    /// Recorded before the schema history by a release that did not say.
    Unknown,
}

impl MigrationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationKind::Expand => "expand",
            MigrationKind::Contract => "contract",
            MigrationKind::Unknown => "unknown",
        }
    }
}

/// One migration, applied or pending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaMigration {
    pub version: i64,
    /// `0005_customers`.
    pub name: String,
    pub kind: MigrationKind,
    /// The release that applied it; `None` while pending.
    #[serde(default)]
    pub release: Option<String>,
    #[serde(default)]
    pub applied_unix_ms: Option<i64>,
}

/// What `BINARY migrate --plan --json` prints: the database's schema history as that release
/// sees it, what it would apply, what it does not know, and whether it may run there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReport {
    pub format: u32,
    /// The release label the binary would record (`PAYWARDEN_RELEASE`).
    pub release: String,
    /// Every applied migration, oldest first.
    pub applied: Vec<SchemaMigration>,
    /// Migrations the release carries that the database lacks.
    pub pending: Vec<SchemaMigration>,
    /// Applied migrations the release does not know.
    pub unknown: Vec<SchemaMigration>,
    /// Why the release cannot run on this database; `None` if it can.
    pub refused: Option<String>,
}

/// The gate's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateOutcome {
    /// The release applies no migration.
    Unchanged,
    /// Expand migrations only.
    Pass,
    /// A contract, deployed on the plan's `allow_contract = true`.
    Overridden,
    Refused,
}

impl GateOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            GateOutcome::Unchanged => "unchanged",
            GateOutcome::Pass => "pass",
            GateOutcome::Overridden => "overridden",
            GateOutcome::Refused => "refused",
        }
    }
}

/// The gate's verdict on one deployment, kept in its record, its events and its review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaGate {
    pub outcome: GateOutcome,
    /// In words, for operators.
    pub reason: String,
    /// The plan's override.
    pub allow_contract: bool,
    /// What the new release applies when its canary starts.
    pub pending: Vec<SchemaMigration>,
    /// The schema's history before the deployment.
    pub history: Vec<SchemaMigration>,
}

impl SchemaGate {
    /// Whether the deployment changes the schema (its verdict then has a `schema` line).
    pub fn changes_schema(&self) -> bool {
        !self.pending.is_empty()
    }

    /// `9001_loyalty_accounts (expand), 9002_drop_note (contract)`.
    pub fn pending_names(&self) -> String {
        names(&self.pending)
    }
}

fn names(list: &[SchemaMigration]) -> String {
    list.iter().map(|m| format!("{} ({})", m.name, m.kind.as_str())).collect::<Vec<_>>().join(", ")
}

/// Decides whether `new_version` may be deployed while `stable_version` is the stable release
/// (the rollback target), from what the new release's binary reported. Pure.
pub fn gate(report: &SchemaReport, allow_contract: bool, new_version: &str, stable_version: &str) -> SchemaGate {
    let contracts: Vec<SchemaMigration> = report.pending.iter().filter(|m| m.kind != MigrationKind::Expand).cloned().collect();
    let (outcome, reason) = if let Some(why) = &report.refused {
        (GateOutcome::Refused, format!("{new_version} cannot run on this database: {why}"))
    } else if report.pending.is_empty() {
        (GateOutcome::Unchanged, format!("{new_version} applies no migration"))
    } else if contracts.is_empty() {
        (
            GateOutcome::Pass,
            format!(
                "{new_version} applies {} when its canary starts; expand only, so {stable_version} (the rollback target) keeps running on the new schema",
                names(&report.pending)
            ),
        )
    } else if allow_contract {
        (
            GateOutcome::Overridden,
            format!(
                "{new_version} applies the contract migration {}, which {stable_version} (the rollback target) cannot run on; \
                 deployed because the plan sets allow_contract = true: from now on a rollback to {stable_version} cannot start",
                names(&contracts)
            ),
        )
    } else {
        (
            GateOutcome::Refused,
            format!(
                "{new_version} would apply the contract migration {}, and {stable_version}, the stable release and the rollback \
                 target, cannot run on the contracted schema. Ship the expand part first (new tables and columns {stable_version} \
                 ignores) and the contract in a later release, once no release before it will be rolled back to; to deploy it \
                 anyway, set allow_contract = true in the plan (deploy --allow-contract)",
                names(&contracts)
            ),
        )
    };
    SchemaGate { outcome, reason, allow_contract, pending: report.pending.clone(), history: report.applied.clone() }
}

/// Asks `binary` what it would do on the database its instances use
/// (`migrate --plan --json --data-dir DATA_DIR`, with the instances' environment: a
/// `PAYWARDEN_DATABASE` there means PostgreSQL). An error says what failed, in words.
pub async fn read_plan(binary: &Path, data_dir: &Path, env: &[(String, String)], release_label: &str) -> Result<SchemaReport, String> {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(["migrate", "--plan", "--json", "--data-dir"])
        .arg(data_dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("PAYWARDEN_RELEASE", release_label)
        .env("PAYWARDEN_LOG", "error")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(PLAN_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("running {} migrate --plan: {e}", binary.display())),
        Err(_) => return Err(format!("{} migrate --plan did not answer within {PLAN_TIMEOUT:?}", binary.display())),
    };
    if out.stdout.len() > PLAN_OUTPUT_BYTES_MAX {
        return Err(format!("{} migrate --plan printed more than {PLAN_OUTPUT_BYTES_MAX} bytes", binary.display()));
    }
    // Exit 1 with a report: the release cannot run there, and the report says why.
    let report: Result<SchemaReport, _> = serde_json::from_slice(&out.stdout);
    match report {
        Ok(r) if r.format == REPORT_FORMAT => Ok(r),
        Ok(r) => Err(format!("{} printed a schema report of format {}; this controller reads format {REPORT_FORMAT}", binary.display(), r.format)),
        Err(_) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
            Err(format!(
                "{} could not say which migrations it would apply (`migrate --plan --json` exited {}{}); a release from before \
                 the schema gate cannot be checked: deploy it with allow_contract = true if you know its schema is safe",
                binary.display(),
                out.status,
                if tail.is_empty() { String::new() } else { format!(": {}", tail.join(" / ")) }
            ))
        }
    }
}

/// The gate for a release whose plan could not be read: refused, unless the operator allows
/// contracts (then the schema change is unknown and recorded as such).
pub fn gate_unreadable(error: &str, allow_contract: bool) -> SchemaGate {
    SchemaGate {
        outcome: if allow_contract { GateOutcome::Overridden } else { GateOutcome::Refused },
        reason: if allow_contract { format!("{error}; deployed because the plan sets allow_contract = true") } else { error.to_string() },
        allow_contract,
        pending: Vec::new(),
        history: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(version: i64, kind: MigrationKind) -> SchemaMigration {
        SchemaMigration { version, name: format!("{version:04}_m{version}"), kind, release: None, applied_unix_ms: None }
    }

    fn report(pending: Vec<SchemaMigration>, refused: Option<&str>) -> SchemaReport {
        SchemaReport {
            format: REPORT_FORMAT,
            release: "v2".into(),
            applied: vec![SchemaMigration { release: Some("v1".into()), applied_unix_ms: Some(1), ..m(1, MigrationKind::Expand) }],
            pending,
            unknown: vec![],
            refused: refused.map(str::to_string),
        }
    }

    #[test]
    fn the_gate_passes_expands_and_refuses_contracts_unless_allowed() {
        let g = gate(&report(vec![], None), false, "v2", "v1");
        assert_eq!(g.outcome, GateOutcome::Unchanged);
        assert!(!g.changes_schema());

        let g = gate(&report(vec![m(5, MigrationKind::Expand)], None), false, "v2", "v1");
        assert_eq!(g.outcome, GateOutcome::Pass);
        assert!(g.changes_schema() && g.reason.contains("0005_m5 (expand)") && g.reason.contains("v1 (the rollback target) keeps running"), "{}", g.reason);
        assert_eq!(g.history.len(), 1);

        let pending = vec![m(5, MigrationKind::Expand), m(6, MigrationKind::Contract)];
        let g = gate(&report(pending.clone(), None), false, "v2", "v1");
        assert_eq!(g.outcome, GateOutcome::Refused);
        for want in ["0006_m6 (contract)", "v1, the stable release and the rollback target", "Ship the expand part first", "allow_contract = true"] {
            assert!(g.reason.contains(want), "{want}: {}", g.reason);
        }
        assert!(!g.reason.contains("0005"), "only the contract is named: {}", g.reason);

        let g = gate(&report(pending, None), true, "v2", "v1");
        assert_eq!(g.outcome, GateOutcome::Overridden);
        assert!(g.allow_contract && g.reason.contains("cannot start"), "{}", g.reason);
    }

    #[test]
    fn a_release_that_cannot_run_is_refused_even_with_the_override() {
        let g = gate(&report(vec![], Some("migration 0009_x is a contract migration applied by v3")), true, "v1", "v3");
        assert_eq!(g.outcome, GateOutcome::Refused);
        assert!(g.reason.contains("v1 cannot run on this database") && g.reason.contains("0009_x"), "{}", g.reason);
        assert_eq!(gate_unreadable("no plan", false).outcome, GateOutcome::Refused);
        assert_eq!(gate_unreadable("no plan", true).outcome, GateOutcome::Overridden);
    }

    #[test]
    fn the_report_reads_back_what_it_wrote() {
        let r = report(vec![m(5, MigrationKind::Contract)], Some("why"));
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"kind\":\"contract\""), "{text}");
        assert_eq!(serde_json::from_str::<SchemaReport>(&text).unwrap(), r);
    }
}
