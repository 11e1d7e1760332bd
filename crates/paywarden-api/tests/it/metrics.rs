//! `/metrics`: Prometheus names and labels, and counters that move with traffic.

use crate::support::*;

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' ')).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_and_payment_outcomes_with_the_version_label() {
    let h = Harness::new().await;
    h.post("/v1/payment_intents", "amount=100&currency=usd&payment_method=pm_card_visa&confirm=true").await.ok();
    h.post("/v1/payment_intents", "amount=100&currency=usd&payment_method=pm_card_visa&confirm=true").await.ok();
    assert_eq!(h.post("/v1/payment_intents", "amount=100&currency=usd&payment_method=pm_card_chargeDeclined&confirm=true").await.status, 402);
    assert_eq!(h.post("/v1/payment_intents", "amount=0&currency=usd").await.status, 400);
    let r = h.call("GET", "/metrics", &[("authorization", NO_AUTH)], "").await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = r.text();
    let v = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert_eq!(value(&text, &format!("paywarden_payments_total{{{v},outcome=\"ok\"}}")), Some(2.0), "{text}");
    assert_eq!(value(&text, &format!("paywarden_payments_total{{{v},outcome=\"declined\"}}")), Some(1.0));
    assert_eq!(value(&text, &format!("paywarden_payments_total{{{v},outcome=\"rejected\"}}")), Some(1.0));
    assert_eq!(value(&text, &format!("http_requests_total{{{v},route=\"/v1/payment_intents\",status=\"200\"}}")), Some(2.0));
    assert_eq!(value(&text, &format!("http_request_duration_seconds_count{{{v},route=\"/v1/payment_intents\"}}")), Some(4.0));
    assert!(value(&text, &format!("process_resident_memory_bytes{{{v}}}")).unwrap() > 1e6);
    assert_eq!(value(&text, &format!("paywarden_build_info{{{v}}}")), Some(1.0));
    assert_eq!(value(&text, &format!("paywarden_component_limit{{{v},component=\"writer_queue\"}}")), Some(1024.0));
    // The writer's commits: three payments wrote (two approved, one declined), one at a time.
    let commits = value(&text, &format!("paywarden_store_commits_total{{{v}}}")).expect("store commits");
    let batches = value(&text, &format!("paywarden_store_batches_committed_total{{{v}}}")).expect("store batches");
    assert!(commits >= 3.0 && batches >= commits, "commits {commits}, batches {batches}");
    // Route templates, never raw ids: the label set stays bounded.
    let id = h.post("/v1/payment_intents", "amount=100&currency=usd").await.ok().id();
    h.get(&format!("/v1/payment_intents/{id}")).await.ok();
    let text = h.call("GET", "/metrics", &[], "").await.text();
    assert!(text.contains("route=\"/v1/payment_intents/{id}\""), "{text}");
    assert!(!text.contains(&id));
    // Every sample line carries the version label.
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        assert!(line.contains(&v), "{line}");
    }
    assert!(text.trim_end().ends_with("# EOF"));
}
