//! PostgreSQL only: two stores (as two replicas would have) racing on one database, and
//! events delivered in commit order, not insertion order.

use std::sync::Arc;

use paywarden_store::{
    ConflictKind, EndpointStatus, EventRecord, PgOptions, PgStore, Store, WebhookEndpointRecord,
    Write, WriteBatch, WriteError,
};
use sqlx::Connection;

use crate::common::*;

async fn two_replicas(test: &str) -> Option<(PgDb, Arc<PgStore>, Arc<PgStore>)> {
    let db = PgDb::create(test).await?;
    let a = PgStore::open(&db.url, PgOptions::default())
        .await
        .expect("replica a");
    let b = PgStore::open(&db.url, PgOptions::default())
        .await
        .expect("replica b (its migrations are a no-op)");
    Some((db, Arc::new(a), Arc::new(b)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_on_one_intent_or_one_key_have_exactly_one_winner() {
    within(async {
        let Some((_db, a, b)) = two_replicas("replicas_racing").await else {
            return;
        };
        let pi = usd_intent("pi_1", "acct_1");
        write(&*a, vec![Write::InsertIntent(pi.clone())])
            .await
            .unwrap();
        // 16 updates of version 0 -> 1 (as 16 captures of one payment), half through each store.
        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let mut next = pi.clone();
            next.version = 1;
            next.description = Some(format!("winner {i}"));
            tasks.push(tokio::spawn(async move {
                store
                    .write(WriteBatch {
                        ops: vec![Write::UpdateIntent(next)],
                    })
                    .await
            }));
        }
        let mut won = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => won += 1,
                Err(WriteError::Conflict(ConflictKind::IntentVersion)) => {}
                Err(e) => panic!("a loser must get a version conflict, not {e:?}"),
            }
        }
        assert_eq!(won, 1);
        assert_eq!(
            a.payment_intent("acct_1", "pi_1")
                .await
                .unwrap()
                .unwrap()
                .version,
            1
        );

        // 16 first uses of one Idempotency-Key, each with the intent it would create.
        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let record = paywarden_store::IdempotencyRecord {
                merchant: "acct_1".into(),
                key: "order-7".into(),
                request_hash: [1; 32],
                status: 200,
                body: format!("{{\"id\":\"pi_k{i}\"}}").into_bytes(),
                created: 1_700_000_000,
            };
            let ops = vec![
                Write::InsertIntent(usd_intent(&format!("pi_k{i}"), "acct_1")),
                Write::Idempotency {
                    record,
                    replaces_before: 0,
                },
            ];
            tasks.push(tokio::spawn(async move {
                store.write(WriteBatch { ops }).await
            }));
        }
        let mut won = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => won += 1,
                Err(WriteError::Conflict(ConflictKind::IdempotencyKey)) => {}
                Err(e) => panic!("a loser must get an idempotency conflict, not {e:?}"),
            }
        }
        assert_eq!(won, 1);
        let intents = a
            .list_payment_intents("acct_1", &page(100, None, None))
            .await
            .unwrap()
            .data;
        assert_eq!(
            intents.len(),
            2,
            "pi_1 and the one winner's intent: the losers' batches wrote nothing"
        );
        let rec = b.idempotency("acct_1", "order-7").await.unwrap().unwrap();
        let winner = intents.iter().find(|p| p.id != "pi_1").unwrap();
        assert_eq!(
            rec.body,
            format!("{{\"id\":\"{}\"}}", winner.id).into_bytes(),
            "the record is the winner's"
        );
    })
    .await
}

fn event(id: &str, created: i64) -> EventRecord {
    let json = serde_json::json!({"id": id, "object": "event", "type": "refund.created", "created": created}).to_string();
    EventRecord {
        id: id.into(),
        merchant: "acct_1".into(),
        kind: "refund.created".into(),
        created,
        json,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_late_is_still_delivered() {
    within(async {
        let Some((db, a, b)) = two_replicas("committed_late").await else { return };
        let ep = WebhookEndpointRecord {
            id: "we_1".into(),
            merchant: "acct_1".into(),
            url: "https://example.com/h".into(),
            enabled_events: vec!["*".into()],
            description: None,
            status: EndpointStatus::Enabled,
            disabled_reason: None,
            failing_since_ms: None,
            created: 1_700_000_000,
        };
        write(&*a, vec![Write::WebhookEndpoint(ep)]).await.unwrap();
        // A transaction inserts evt_slow first (the lower seq) and is still open when evt_fast
        // commits; a cursor over insertion order would move past evt_slow for good.
        let mut slow = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut slow).await.unwrap();
        sqlx::query("INSERT INTO events (id, merchant_id, type, created, data) VALUES ('evt_slow', 'acct_1', 'refund.created', 1700000100, '{}')")
            .execute(&mut slow)
            .await
            .unwrap();
        write(&*b, vec![Write::Event(event("evt_fast", 1_700_000_101))]).await.unwrap();
        let claim = |store: Arc<PgStore>| async move {
            let mut got = Vec::new();
            for u in store.unclaimed(10, 1000).await.unwrap() {
                got.extend(u.events.iter().map(|(_, e)| e.id.clone()));
                let op = Write::ClaimDeliveries { endpoint: u.endpoint, merchant: u.merchant, after_seq: u.cursor_seq, through_seq: u.through_seq, deliveries: vec![] };
                store.write(WriteBatch { ops: vec![op] }).await.unwrap();
            }
            got
        };
        assert_eq!(claim(a.clone()).await, ["evt_fast"]);
        assert_eq!(a.pending_webhooks("acct_1", "evt_fast").await.unwrap(), 0, "claimed (no row: the test sends nothing)");
        sqlx::query("COMMIT").execute(&mut slow).await.unwrap();
        assert_eq!(a.pending_webhooks("acct_1", "evt_slow").await.unwrap(), 1, "committed late, pending all the same");
        assert_eq!(claim(b.clone()).await, ["evt_slow"], "the other replica's loop finds it");
        assert!(claim(a).await.is_empty());
    })
    .await
}
