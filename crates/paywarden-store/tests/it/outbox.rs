//! The webhook outbox: an event's deliveries are queued in the event's own transaction, to
//! the matching enabled endpoints only, on the bulk path as on the slow one; due deliveries
//! come out soonest first and an attempt's outcome is recorded.

use std::sync::Arc;

use paywarden_store::{
    DeliveryState, EndpointStatus, EventRecord, SqliteOptions, Store, WebhookEndpointRecord, Write,
};
use tempfile::TempDir;

use crate::common::*;

fn endpoint(id: &str, merchant: &str, events: &[&str], status: EndpointStatus) -> WebhookEndpointRecord {
    WebhookEndpointRecord {
        id: id.into(),
        merchant: merchant.into(),
        url: format!("https://example.com/{id}"),
        enabled_events: events.iter().map(|e| e.to_string()).collect(),
        description: None,
        status,
        disabled_reason: None,
        failing_since_ms: None,
        created: 1_700_000_000,
    }
}

fn event(id: &str, merchant: &str, kind: &str, created: i64) -> EventRecord {
    let json = serde_json::json!({"id": id, "object": "event", "type": kind, "created": created, "data": {"object": {}}}).to_string();
    EventRecord { id: id.into(), merchant: merchant.into(), kind: kind.into(), created, json }
}

async fn setup(store: &impl Store) {
    let w = |e| Write::WebhookEndpoint(e);
    write_to(store, vec![
        w(endpoint("we_all", "acct_1", &["*"], EndpointStatus::Enabled)),
        w(endpoint("we_paid", "acct_1", &["payment_intent.succeeded"], EndpointStatus::Enabled)),
        w(endpoint("we_off", "acct_1", &["*"], EndpointStatus::Disabled)),
        w(endpoint("we_other", "acct_2", &["*"], EndpointStatus::Enabled)),
    ])
    .await;
}

async fn write_to(store: &impl Store, ops: Vec<Write>) {
    store.write(paywarden_store::WriteBatch { ops }).await.expect("write");
}

#[tokio::test]
async fn an_event_fans_out_to_matching_enabled_endpoints_of_its_merchant() {
    within(async {
        let dir = TempDir::new().unwrap();
        let store = open(&dir).await;
        setup(&store).await;
        write_to(&store, vec![Write::Event(event("evt_1", "acct_1", "payment_intent.succeeded", 1_700_000_100))]).await;
        write_to(&store, vec![Write::Event(event("evt_2", "acct_1", "payment_intent.created", 1_700_000_101))]).await;
        let d1 = store.deliveries("acct_1", Some("evt_1"), None, 100).await.unwrap();
        let mut to: Vec<&str> = d1.iter().map(|d| d.endpoint.as_str()).collect();
        to.sort();
        assert_eq!(to, ["we_all", "we_paid"], "not the disabled one, not the other merchant's");
        let d2 = store.deliveries("acct_1", Some("evt_2"), None, 100).await.unwrap();
        assert_eq!(d2.iter().map(|d| d.endpoint.as_str()).collect::<Vec<_>>(), ["we_all"], "the filter");
        assert!(d1.iter().all(|d| d.state == DeliveryState::Pending && d.attempts == 0 && d.next_attempt_ms == 1_700_000_100_000));
        assert!(store.deliveries("acct_2", None, None, 100).await.unwrap().is_empty());
        assert_eq!(store.pending_deliveries().await.unwrap(), 3);

        // Due soonest first; the disabled endpoint's (none) and undue ones are not.
        let due = store.due_deliveries(1_700_000_100_500, 10).await.unwrap();
        assert_eq!(due.len(), 2, "evt_2 is due later");
        assert!(due.iter().all(|d| d.delivery.event == "evt_1"));
        assert!(due[0].body.contains("\"evt_1\""));
        assert_eq!(store.due_deliveries(1_800_000_000_000, 1).await.unwrap().len(), 1, "the limit");

        // An attempt's outcome is recorded, on the slow path (a lone batch)...
        let mut d = due[0].delivery.clone();
        d.state = DeliveryState::Delivered;
        d.attempts = 1;
        d.last_status = Some(200);
        d.last_attempt_ms = Some(1_700_000_100_600);
        write_to(&store, vec![Write::Delivery(d.clone())]).await;
        let back = store.deliveries("acct_1", Some("evt_1"), Some(&d.endpoint), 10).await.unwrap();
        assert_eq!(back, vec![d]);
        assert_eq!(store.pending_deliveries().await.unwrap(), 2);

        // Deleting an endpoint drops its queue; its events stay.
        write_to(&store, vec![Write::DeleteWebhookEndpoint { merchant: "acct_1".into(), id: "we_all".into() }]).await;
        assert_eq!(store.pending_deliveries().await.unwrap(), 1);
        assert!(store.event("acct_1", "evt_2").await.unwrap().is_some());
        assert_eq!(store.event("acct_2", "evt_2").await.unwrap(), None, "isolated");
        // Another merchant cannot overwrite an endpoint id.
        let r = store.write(paywarden_store::WriteBatch { ops: vec![Write::WebhookEndpoint(endpoint("we_paid", "acct_2", &["*"], EndpointStatus::Enabled))] }).await;
        assert!(r.is_err());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_events_and_attempts_commits_on_the_bulk_path() {
    within(async {
        let dir = TempDir::new().unwrap();
        let store = Arc::new(open_with(&dir, SqliteOptions { busy_timeout: std::time::Duration::from_secs(30), ..SqliteOptions::default() }).await);
        setup(&*store).await;
        write_to(&*store, vec![Write::Event(event("evt_0", "acct_1", "refund.created", 1_700_000_000))]).await;
        let first = store.deliveries("acct_1", Some("evt_0"), None, 10).await.unwrap().remove(0);
        let bulk_before = store.stats().bulk_commits;
        // 30 batches queue behind a held lock and commit as one group: events with intents,
        // and one attempt's outcome.
        let lock = hold_write_lock(&store).await;
        let mut handles = Vec::new();
        for i in 0..30 {
            let ops = vec![
                Write::InsertIntent(usd_intent(&format!("pi_{i}"), "acct_1")),
                Write::Event(event(&format!("evt_g{i}"), "acct_1", "payment_intent.created", 1_700_000_200 + i)),
            ];
            handles.push(spawn_write(&store, ops));
        }
        let mut attempt = first.clone();
        attempt.attempts = 1;
        attempt.last_error = Some("the endpoint answered 500".into());
        attempt.last_status = Some(500);
        attempt.next_attempt_ms += 5_000;
        handles.push(spawn_write(&store, vec![Write::Delivery(attempt.clone())]));
        wait_until(|| store.stats().writer_queue_len >= 30).await;
        release(lock).await;
        for h in handles {
            h.await.unwrap().unwrap();
        }
        assert_eq!(store.stats().bulk_commits - bulk_before, 2, "the parked batch, then the group: events and attempts stay on the bulk path");
        for i in 0..30 {
            let d = store.deliveries("acct_1", Some(&format!("evt_g{i}")), None, 10).await.unwrap();
            assert_eq!(d.len(), 1, "evt_g{i} fanned out to we_all only");
        }
        let back = store.deliveries("acct_1", Some("evt_0"), Some(&first.endpoint), 1).await.unwrap();
        assert_eq!(back, vec![attempt]);
        let listed = store.list_events("acct_1", Some("payment_intent.created"), &page(100, None, None)).await.unwrap();
        assert_eq!(listed.data.len(), 30);
        assert_eq!(listed.data[0].id, "evt_g29", "newest first");
    })
    .await
}
