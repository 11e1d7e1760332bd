//! The Markdown review, the incident report and the drill scorecard, from two recorded
//! deployments: a leaking release rolled back at 1 % (`aug12`) and a good one promoted
//! (`good`), both recorded by `paywarden drill --plan fast --keep-data`.

use std::path::{Path, PathBuf};

use paywarden_review::scorecard::{score, scenario, LoadFigures};
use paywarden_review::{Review, ReviewError};

const AUG12: &str = "dep_17955233586369dycksm93a";
const GOOD: &str = "dep_17955233789820j2ijreycz";

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn load(name: &str, id: &str) -> Review {
    Review::load(&dir(name), id).expect("the fixture loads")
}

/// A time names its zone once: `format_time` says UTC itself, so nothing after it does, and a
/// table whose heading says (UTC) holds bare times. Markdown and HTML tables both.
fn assert_utc_once(name: &str, text: &str) {
    assert!(!text.contains("UTC UTC") && !text.contains("UTC) UTC"), "{name}: UTC twice");
    let mut utc_table = None;
    for line in text.lines() {
        if !line.starts_with('|') {
            utc_table = None;
            continue;
        }
        match utc_table {
            None => utc_table = Some(line.contains("(UTC)")),
            Some(true) if !line.starts_with("|---") => assert!(!line.contains("UTC"), "{name}: a (UTC) table's row says UTC again: {line}"),
            Some(_) => {}
        }
    }
    for table in text.split("<table>").skip(1) {
        let table = table.split("</table>").next().unwrap_or("");
        let (head, body) = table.split_once("</tr>").unwrap_or((table, ""));
        if head.contains("(UTC)") {
            assert!(!body.contains("UTC"), "{name}: a (UTC) table's cell says UTC again: {table}");
        }
    }
}

fn every_rendering(r: &Review) -> Vec<(&'static str, String)> {
    vec![
        ("review.md", paywarden_review::markdown::render(r)),
        ("review.html", paywarden_review::html::render(r)),
        ("incident.md", paywarden_review::incident::render(r)),
    ]
}

#[test]
fn times_name_their_zone_once() {
    for r in [load("aug12", AUG12), load("good", GOOD)] {
        for (name, text) in every_rendering(&r) {
            assert_utc_once(name, &text);
        }
        let md = paywarden_review::markdown::render(&r);
        assert!(md.contains("Started 2026-11-24 12:29:"), "{md}");
    }
    let md = paywarden_review::markdown::render(&load("aug12", AUG12));
    assert!(md.contains("Started 2026-11-24 12:29:18 UTC, ended after 13.3 s.\n"), "{md}");
}

fn quiet_load() -> LoadFigures {
    LoadFigures { rate: 200.0, duration_s: 20.0, requests: 9000, requests_per_second: 440.0, errors: 0, checks_mismatched: 0, verification_requests: 4000, verification_errors: 0 }
}

#[test]
fn the_incident_report_has_the_2024_reports_shape_filled_from_the_record() {
    let r = load("aug12", AUG12);
    assert!(r.is_incident());
    let md = paywarden_review::incident::render(&r);
    insta::assert_snapshot!("incident_aug12", md);
}

#[test]
fn the_review_has_every_section_in_order() {
    let r = load("aug12", AUG12);
    let md = paywarden_review::markdown::render(&r);
    let headings: Vec<&str> = md.lines().filter(|l| l.starts_with('#')).collect();
    insta::assert_snapshot!("review_headings", headings.join("\n"));
    assert!(md.contains("**Outcome: rolled back.**"), "{md}");
    assert!(md.contains("Last verdict: **fail**, 2 of 4 metrics passed (50 %): heap_growth_per_request failed"), "{md}");
    assert!(md.contains("| canary | aug12-drill |"), "{md}");
    assert!(md.contains(&r.sha256), "the canary's hash");
    assert!(md.contains(r.baseline_sha256.as_deref().unwrap()), "the baseline's hash");
    assert!(md.contains("`paywarden_api::faults::leak_on_confirmed_payment`"));
    // One row per step that ran, with its result.
    assert!(md.contains("| 1 | 1 % | 1 % |") && md.contains("| failed |"), "{md}");
}

#[test]
fn a_promoted_release_gets_a_review_and_no_incident_report() {
    let r = load("good", GOOD);
    assert_eq!(r.outcome, "promoted");
    assert!(!r.is_incident());
    assert_eq!(r.steps.len(), 5);
    assert!(r.steps.iter().all(|s| s.result.starts_with("passed")), "{:?}", r.steps);
    let md = paywarden_review::markdown::render(&r);
    assert!(md.contains("**Outcome: promoted.**"));
    assert!(md.contains("No alert fired."));
    let out = tempfile::tempdir().unwrap();
    let w = paywarden_review::write_files(&r, out.path()).unwrap();
    assert!(w.incident.is_none());
    assert!(w.html.exists() && w.markdown.exists());
    assert!(!out.path().join("incident.md").exists());
}

#[test]
fn the_scorecard_passes_the_recorded_drills_and_fails_what_breaks_a_limit() {
    let aug12 = scenario("aug12").unwrap();
    let r = load("aug12", AUG12);
    let card = score(aug12, &r, quiet_load(), false);
    assert!(card.passed, "{:?}", card.checks);
    assert_eq!(card.root_cause.as_deref(), Some("paywarden_api::faults::leak_on_confirmed_payment"));
    let (d, c, m) = (card.time_to_detect_s.unwrap(), card.time_to_root_cause_s.unwrap(), card.time_to_mitigate_s.unwrap());
    assert!(d > 0.0 && d <= m && c >= d && m < 120.0, "{d} {c} {m}");
    assert!(card.traffic_exposed_pct > 0.0 && card.traffic_exposed_pct <= 2.0);
    let json = serde_json::to_value(&card).unwrap();
    for field in ["time_to_detect_s", "time_to_root_cause_s", "time_to_mitigate_s", "payments_failed", "traffic_exposed_pct", "root_cause"] {
        assert!(json.get(field).is_some(), "{field}");
    }

    // A failed payment, or exposure past 2 %, or no site, fails the drill.
    let failing = score(aug12, &r, LoadFigures { errors: 1, ..quiet_load() }, false);
    assert!(!failing.passed);
    assert!(failing.checks.iter().any(|c| c.name == "payments failed" && !c.passed));
    let mut wide = r.clone();
    wide.traffic.requests_to_canary = wide.traffic.requests_total / 40; // 2.5 %
    assert!(!score(aug12, &wide, quiet_load(), false).passed);
    let mut blind = r.clone();
    blind.diagnosis = None;
    let card = score(aug12, &blind, quiet_load(), false);
    assert!(!card.passed);
    assert_eq!(card.root_cause.as_deref(), Some("heap_growth_per_request"), "the failing metric stands in");

    // The good release must be promoted: against the aug12 expectations it fails.
    let good = load("good", GOOD);
    assert!(score(scenario("good").unwrap(), &good, quiet_load(), false).passed);
    assert!(!score(aug12, &good, quiet_load(), false).passed);
    let text = paywarden_review::scorecard::render_text(&score(aug12, &r, quiet_load(), false));
    assert!(text.contains("2024-08-12") && text.contains("3 h 15 min") && text.contains("drill passed"), "{text}");
    // The offered load and the verification reads after it, apart (issue 20).
    assert!(text.contains("9000 requests (440/s), 0 errors\nverification: 4000 reads of the payments' final state, 0 errors"), "{text}");
}

#[test]
fn bad_ids_and_missing_deployments_are_clear_errors() {
    for bad in ["", "../deployments", "dep_a/b", "x"] {
        assert!(matches!(Review::load(&dir("aug12"), bad), Err(ReviewError::BadId(_))), "{bad}");
    }
    let e = Review::load(&dir("aug12"), "dep_0missing").unwrap_err();
    assert!(e.to_string().contains("paywarden history"), "{e}");
    // A directory with no history at all.
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(Review::load(empty.path(), AUG12), Err(ReviewError::NotFound { .. })));
}

#[test]
fn a_deployment_that_migrates_shows_the_schema_gate_and_history_in_both_reviews() {
    use paywarden_rollout::schema::{gate, MigrationKind, SchemaMigration, SchemaReport, REPORT_FORMAT};
    let rollout = dir("good");
    let mut record = paywarden_rollout::release::read_history(&rollout).unwrap().into_iter().find(|r| r["id"] == GOOD).unwrap();
    let events = paywarden_rollout::events::read_events(&rollout.join("events.jsonl"), Some(GOOD)).unwrap();
    let m = |v: i64, name: &str, kind, release: Option<&str>| SchemaMigration {
        version: v,
        name: name.into(),
        kind,
        release: release.map(String::from),
        applied_unix_ms: release.map(|_| 1_796_000_000_000),
    };
    let report = SchemaReport {
        format: REPORT_FORMAT,
        release: "v2".into(),
        applied: vec![m(1, "0001_init", MigrationKind::Expand, Some("v1 (sha256 0123456789ab)"))],
        pending: vec![m(9001, "9001_loyalty_accounts", MigrationKind::Expand, None)],
        unknown: vec![],
        refused: None,
    };
    record["schema"] = serde_json::to_value(gate(&report, false, "v2", "v1")).unwrap();
    let r = Review::build(&record, &events, vec![]);
    for (name, text) in every_rendering(&r) {
        assert_utc_once(name, &text);
    }
    let md = paywarden_review::markdown::render(&r);
    for want in ["## Schema", "**Schema gate: pass.**", "9001_loyalty_accounts (expand)", "| 0001_init | expand | v1 (sha256 0123456789ab) | 2026-", " UTC |", "| 9001_loyalty_accounts | expand |"] {
        assert!(md.contains(want), "{want:?} in {md}");
    }
    let html = paywarden_review::html::render(&r);
    assert!(html.contains("<h2 id=\"schema\">Schema</h2>") && html.contains("schema gate pass") && html.contains("<code>9001_loyalty_accounts</code>"), "{html}");
    // The override is called out.
    let report = SchemaReport { pending: vec![m(9002, "9002_drop_note", MigrationKind::Contract, None)], ..report };
    record["schema"] = serde_json::to_value(gate(&report, true, "v2", "v1")).unwrap();
    let md = paywarden_review::markdown::render(&Review::build(&record, &events, vec![]));
    assert!(md.contains("**Schema gate: overridden.**") && md.contains("`allow_contract = true`: the operator overrode the gate"), "{md}");
    // A record from before the gate has no schema section.
    assert!(!paywarden_review::markdown::render(&load("good", GOOD)).contains("## Schema"));
}
