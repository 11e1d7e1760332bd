//! The webhook outbox: an event is written in its change's own transaction, on the bulk path
//! as on the slow one; the matching enabled endpoints claim it through their cursors; due
//! deliveries come out soonest first and an attempt's outcome is recorded.

use std::sync::Arc;

use paywarden_store::{
    ConflictKind, Delivery, DeliveryState, EndpointStatus, EventRecord, SqliteOptions, Store,
    WebhookEndpointRecord, Write, WriteError,
};
use tempfile::TempDir;

use crate::common::*;

fn endpoint(
    id: &str,
    merchant: &str,
    events: &[&str],
    status: EndpointStatus,
) -> WebhookEndpointRecord {
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
    EventRecord {
        id: id.into(),
        merchant: merchant.into(),
        kind: kind.into(),
        created,
        json,
    }
}

async fn setup(store: &dyn Store) {
    let w = |e| Write::WebhookEndpoint(e);
    write_to(
        store,
        vec![
            w(endpoint(
                "we_all",
                "acct_1",
                &["*"],
                EndpointStatus::Enabled,
            )),
            w(endpoint(
                "we_paid",
                "acct_1",
                &["payment_intent.succeeded"],
                EndpointStatus::Enabled,
            )),
            w(endpoint(
                "we_off",
                "acct_1",
                &["*"],
                EndpointStatus::Disabled,
            )),
            w(endpoint(
                "we_other",
                "acct_2",
                &["*"],
                EndpointStatus::Enabled,
            )),
        ],
    )
    .await;
}

async fn write_to(store: &dyn Store, ops: Vec<Write>) {
    store
        .write(paywarden_store::WriteBatch { ops })
        .await
        .expect("write");
}

/// Claims what `unclaimed` offers, due at `due_ms`, as the delivery loop does.
async fn claim_all(store: &dyn Store, per_endpoint: u32, due_ms: i64) -> Vec<(String, String)> {
    let mut claimed = Vec::new();
    let mut ops = Vec::new();
    for u in store.unclaimed(per_endpoint, 1000).await.unwrap() {
        let rows: Vec<Delivery> = u
            .events
            .iter()
            .map(|(_, e)| Delivery {
                endpoint: u.endpoint.clone(),
                event: e.id.clone(),
                merchant: u.merchant.clone(),
                state: DeliveryState::Pending,
                attempts: 0,
                next_attempt_ms: due_ms,
                created_ms: e.created * 1000,
                last_attempt_ms: None,
                last_status: None,
                last_error: None,
            })
            .collect();
        claimed.extend(rows.iter().map(|d| (d.endpoint.clone(), d.event.clone())));
        ops.push(Write::ClaimDeliveries {
            endpoint: u.endpoint,
            merchant: u.merchant,
            after_seq: u.cursor_seq,
            through_seq: u.through_seq,
            deliveries: rows,
        });
    }
    if !ops.is_empty() {
        write_to(store, ops).await;
    }
    claimed.sort();
    claimed
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

async fn events_are_claimed_by_the_matching_enabled_endpoints_of_their_merchant(backend: Backend) {
    within(async {
        let dir = TempDir::new().unwrap();
        let Some(store) = open_backend(backend, &dir).await else {
            return;
        };
        setup(&*store).await;
        write_to(
            &*store,
            vec![Write::Event(event(
                "evt_1",
                "acct_1",
                "payment_intent.succeeded",
                1_700_000_100,
            ))],
        )
        .await;
        write_to(
            &*store,
            vec![Write::Event(event(
                "evt_2",
                "acct_1",
                "payment_intent.created",
                1_700_000_101,
            ))],
        )
        .await;
        // Written with the change; nothing queued yet, but pending all the same.
        assert!(
            store
                .deliveries("acct_1", None, None, 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.pending_deliveries().await.unwrap(),
            3,
            "evt_1 to we_all and we_paid, evt_2 to we_all"
        );
        assert_eq!(store.pending_webhooks("acct_1", "evt_1").await.unwrap(), 2);
        assert_eq!(store.pending_webhooks("acct_1", "evt_2").await.unwrap(), 1);
        assert_eq!(
            store.pending_webhooks("acct_2", "evt_1").await.unwrap(),
            0,
            "isolated"
        );

        // One event per endpoint at a time: the oldest first.
        let first = store.unclaimed(1, 1000).await.unwrap();
        let mut offered: Vec<(&str, Vec<&str>)> = first
            .iter()
            .map(|u| {
                (
                    u.endpoint.as_str(),
                    u.events.iter().map(|(_, e)| e.id.as_str()).collect(),
                )
            })
            .collect();
        offered.sort();
        assert_eq!(
            offered,
            [("we_all", vec!["evt_1"]), ("we_paid", vec!["evt_1"])],
            "not the disabled one, not the other merchant's"
        );
        // Claimed twice (two loops racing): the first wins, the second is told and queues nothing.
        let claims: Vec<Write> = first
            .iter()
            .map(|u| Write::ClaimDeliveries {
                endpoint: u.endpoint.clone(),
                merchant: u.merchant.clone(),
                after_seq: u.cursor_seq,
                through_seq: u.through_seq,
                deliveries: u
                    .events
                    .iter()
                    .map(|(_, e)| Delivery {
                        endpoint: u.endpoint.clone(),
                        event: e.id.clone(),
                        merchant: u.merchant.clone(),
                        state: DeliveryState::Pending,
                        attempts: 0,
                        next_attempt_ms: 1_700_000_100_000,
                        created_ms: e.created * 1000,
                        last_attempt_ms: None,
                        last_status: None,
                        last_error: None,
                    })
                    .collect(),
            })
            .collect();
        for c in &claims {
            write_to(&*store, vec![c.clone()]).await;
        }
        for c in claims {
            let r = store
                .write(paywarden_store::WriteBatch { ops: vec![c] })
                .await;
            assert!(
                matches!(r, Err(WriteError::Conflict(ConflictKind::Claimed))),
                "{r:?}"
            );
        }
        assert_eq!(
            store
                .deliveries("acct_1", Some("evt_1"), None, 100)
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            store.pending_deliveries().await.unwrap(),
            3,
            "claiming moves a delivery from the events to the queue"
        );
        // we_paid's cursor went past evt_1; evt_2 is not its type and is skipped without a row.
        assert_eq!(
            claim_all(&*store, 10, 1_700_000_101_000).await,
            pairs(&[("we_all", "evt_2")])
        );
        assert!(
            store.unclaimed(10, 1000).await.unwrap().is_empty(),
            "every cursor at the end"
        );
        let d2 = store
            .deliveries("acct_1", Some("evt_2"), None, 100)
            .await
            .unwrap();
        assert_eq!(
            d2.iter().map(|d| d.endpoint.as_str()).collect::<Vec<_>>(),
            ["we_all"],
            "the filter"
        );
        assert_eq!(store.pending_deliveries().await.unwrap(), 3);

        // Due soonest first; undue ones are not.
        let due = store.due_deliveries(1_700_000_100_500, 10).await.unwrap();
        assert_eq!(due.len(), 2, "evt_2 is due later");
        assert!(due.iter().all(|d| d.delivery.event == "evt_1"));
        assert!(due[0].body.contains("\"evt_1\""));
        assert_eq!(
            store
                .due_deliveries(1_800_000_000_000, 1)
                .await
                .unwrap()
                .len(),
            1,
            "the limit"
        );

        // An attempt's outcome is recorded, on the slow path (a lone batch)...
        let mut d = due[0].delivery.clone();
        d.state = DeliveryState::Delivered;
        d.attempts = 1;
        d.last_status = Some(200);
        d.last_attempt_ms = Some(1_700_000_100_600);
        write_to(&*store, vec![Write::Delivery(d.clone())]).await;
        let back = store
            .deliveries("acct_1", Some("evt_1"), Some(&d.endpoint), 10)
            .await
            .unwrap();
        assert_eq!(back, vec![d]);
        assert_eq!(store.pending_deliveries().await.unwrap(), 2);
        assert_eq!(store.pending_webhooks("acct_1", "evt_1").await.unwrap(), 1);

        // Deleting an endpoint drops its queue; its events stay; a late claim for it queues nothing.
        write_to(
            &*store,
            vec![Write::DeleteWebhookEndpoint {
                merchant: "acct_1".into(),
                id: "we_all".into(),
            }],
        )
        .await;
        assert_eq!(store.pending_deliveries().await.unwrap(), 1);
        write_to(
            &*store,
            vec![Write::ClaimDeliveries {
                endpoint: "we_all".into(),
                merchant: "acct_1".into(),
                after_seq: 0,
                through_seq: 99,
                deliveries: d2,
            }],
        )
        .await;
        assert!(
            store
                .deliveries("acct_1", None, Some("we_all"), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.event("acct_1", "evt_2").await.unwrap().is_some());
        assert_eq!(
            store.event("acct_2", "evt_2").await.unwrap(),
            None,
            "isolated"
        );
        // Another merchant cannot overwrite an endpoint id.
        let r = store
            .write(paywarden_store::WriteBatch {
                ops: vec![Write::WebhookEndpoint(endpoint(
                    "we_paid",
                    "acct_2",
                    &["*"],
                    EndpointStatus::Enabled,
                ))],
            })
            .await;
        assert!(r.is_err());
    })
    .await
}

async fn an_endpoint_gets_what_happens_after_it_is_created_or_enabled_again(backend: Backend) {
    within(async {
        let dir = TempDir::new().unwrap();
        let Some(store) = open_backend(backend, &dir).await else {
            return;
        };
        setup(&*store).await;
        write_to(
            &*store,
            vec![Write::Event(event(
                "evt_old",
                "acct_1",
                "refund.created",
                1_700_000_100,
            ))],
        )
        .await;
        // Created after evt_old: nothing for it.
        write_to(
            &*store,
            vec![Write::WebhookEndpoint(endpoint(
                "we_new",
                "acct_1",
                &["*"],
                EndpointStatus::Enabled,
            ))],
        )
        .await;
        assert_eq!(
            claim_all(&*store, 10, 0).await,
            pairs(&[("we_all", "evt_old")])
        );
        // Disabled, an event passes it by; enabled again, it gets only the next one.
        let mut off = endpoint("we_new", "acct_1", &["*"], EndpointStatus::Disabled);
        write_to(&*store, vec![Write::WebhookEndpoint(off.clone())]).await;
        write_to(
            &*store,
            vec![Write::Event(event(
                "evt_while_off",
                "acct_1",
                "refund.created",
                1_700_000_101,
            ))],
        )
        .await;
        assert_eq!(
            store
                .pending_webhooks("acct_1", "evt_while_off")
                .await
                .unwrap(),
            1,
            "we_all only"
        );
        off.status = EndpointStatus::Enabled;
        write_to(&*store, vec![Write::WebhookEndpoint(off.clone())]).await;
        // An update that leaves it enabled keeps its place.
        off.url = "https://example.com/moved".into();
        write_to(
            &*store,
            vec![Write::Event(event(
                "evt_after",
                "acct_1",
                "refund.created",
                1_700_000_102,
            ))],
        )
        .await;
        write_to(&*store, vec![Write::WebhookEndpoint(off)]).await;
        assert_eq!(
            claim_all(&*store, 10, 0).await,
            pairs(&[
                ("we_all", "evt_after"),
                ("we_all", "evt_while_off"),
                ("we_new", "evt_after")
            ])
        );
    })
    .await
}

async fn a_claim_skips_past_unwanted_events_and_never_goes_back(backend: Backend) {
    within(async {
        let dir = TempDir::new().unwrap();
        let Some(store) = open_backend(backend, &dir).await else {
            return;
        };
        setup(&*store).await;
        write_to(
            &*store,
            vec![Write::DeleteWebhookEndpoint {
                merchant: "acct_1".into(),
                id: "we_all".into(),
            }],
        )
        .await;
        // 5 events we_paid does not want, then one it does: a scan of 3 moves its cursor by 3.
        for i in 0..5 {
            write_to(
                &*store,
                vec![Write::Event(event(
                    &format!("evt_c{i}"),
                    "acct_1",
                    "payment_intent.created",
                    1_700_000_100 + i,
                ))],
            )
            .await;
        }
        write_to(
            &*store,
            vec![Write::Event(event(
                "evt_s",
                "acct_1",
                "payment_intent.succeeded",
                1_700_000_200,
            ))],
        )
        .await;
        let u = store.unclaimed(10, 3).await.unwrap();
        assert_eq!(u.len(), 1);
        assert!(u[0].events.is_empty());
        let (cursor, third) = (u[0].cursor_seq, u[0].through_seq);
        let skip = |after_seq, through_seq| Write::ClaimDeliveries {
            endpoint: "we_paid".into(),
            merchant: "acct_1".into(),
            after_seq,
            through_seq,
            deliveries: vec![],
        };
        write_to(&*store, vec![skip(cursor, third)]).await;
        let u = store.unclaimed(10, 3).await.unwrap();
        assert_eq!(
            u[0].events
                .iter()
                .map(|(_, e)| e.id.as_str())
                .collect::<Vec<_>>(),
            ["evt_s"]
        );
        // A stale claim (from the older cursor) is refused and moves nothing back.
        let r = store
            .write(paywarden_store::WriteBatch {
                ops: vec![skip(cursor, 1)],
            })
            .await;
        assert!(
            matches!(r, Err(WriteError::Conflict(ConflictKind::Claimed))),
            "{r:?}"
        );
        assert_eq!(store.unclaimed(10, 3).await.unwrap()[0].events.len(), 1);
        assert_eq!(
            claim_all(&*store, 10, 0).await,
            pairs(&[("we_paid", "evt_s")])
        );
        assert!(store.unclaimed(10, 3).await.unwrap().is_empty());
        assert_eq!(store.pending_deliveries().await.unwrap(), 1);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_events_and_attempts_commits_on_the_bulk_path() {
    within(async {
        let dir = TempDir::new().unwrap();
        let store = Arc::new(
            open_with(
                &dir,
                SqliteOptions {
                    busy_timeout: std::time::Duration::from_secs(30),
                    ..SqliteOptions::default()
                },
            )
            .await,
        );
        setup(&*store).await;
        write_to(
            &*store,
            vec![Write::Event(event(
                "evt_0",
                "acct_1",
                "refund.created",
                1_700_000_000,
            ))],
        )
        .await;
        claim_all(&*store, 10, 1_700_000_000_000).await;
        let first = store
            .deliveries("acct_1", Some("evt_0"), None, 10)
            .await
            .unwrap()
            .remove(0);
        let bulk_before = store.stats().bulk_commits;
        // With the writer parked behind a held lock, 30 batches queue and commit as one group:
        // events with intents, and one attempt's outcome. (Parking one batch first keeps the
        // writer from taking the first few of them as a group of their own.)
        let lock = hold_write_lock(&store).await;
        let parked = park_writer(&store, "pi_parked").await;
        let mut handles = Vec::new();
        for i in 0..30 {
            let ops = vec![
                Write::InsertIntent(usd_intent(&format!("pi_{i}"), "acct_1")),
                Write::Event(event(
                    &format!("evt_g{i}"),
                    "acct_1",
                    "payment_intent.created",
                    1_700_000_200 + i,
                )),
            ];
            handles.push(spawn_write(&store, ops));
        }
        let mut attempt = first.clone();
        attempt.attempts = 1;
        attempt.last_error = Some("the endpoint answered 500".into());
        attempt.last_status = Some(500);
        attempt.next_attempt_ms += 5_000;
        handles.push(spawn_write(&store, vec![Write::Delivery(attempt.clone())]));
        wait_until(|| store.stats().writer_queue_len == 31).await;
        release(lock).await;
        parked.await.unwrap().unwrap();
        for h in handles {
            h.await.unwrap().unwrap();
        }
        assert_eq!(
            store.stats().bulk_commits - bulk_before,
            2,
            "the parked batch, then the group: events and attempts stay on the bulk path"
        );
        let offered = store.unclaimed(100, 1000).await.unwrap();
        let in_commit_order: Vec<String> = offered[0]
            .events
            .iter()
            .map(|(_, e)| e.id.clone())
            .collect();
        let expected: Vec<(String, String)> = (0..30)
            .map(|i| ("we_all".to_string(), format!("evt_g{i}")))
            .collect();
        let mut claimed = claim_all(&*store, 100, 0).await;
        claimed.sort_by_key(|(_, e)| e[5..].parse::<u32>().unwrap());
        assert_eq!(claimed, expected, "each for we_all only");
        let back = store
            .deliveries("acct_1", Some("evt_0"), Some(&first.endpoint), 1)
            .await
            .unwrap();
        assert_eq!(back, vec![attempt]);
        let listed = store
            .list_events(
                "acct_1",
                Some("payment_intent.created"),
                &page(100, None, None),
            )
            .await
            .unwrap();
        assert_eq!(listed.data.len(), 30);
        let newest_first: Vec<String> = in_commit_order.into_iter().rev().collect();
        assert_eq!(
            listed.data.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            newest_first
        );
    })
    .await
}

crate::on_both_backends!(
    events_are_claimed_by_the_matching_enabled_endpoints_of_their_merchant,
    an_endpoint_gets_what_happens_after_it_is_created_or_enabled_again,
    a_claim_skips_past_unwanted_events_and_never_goes_back,
);
