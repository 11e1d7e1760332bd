//! Pragmas, every object's round trip, conflicts, idempotency records, reopen.

use std::time::Duration;

use paywarden_core::{AuthOutcome, CaptureMethod, Currency, Metadata, Status};
use paywarden_store::{
    ApiKeyRecord, ConflictKind, IdempotencyRecord, SqliteOptions, Store, StoreError, Write,
    WriteError,
};
use tempfile::TempDir;

use crate::common::*;

#[tokio::test]
async fn pragmas_are_wal_and_full_after_open() {
    let dir = TempDir::new().unwrap();
    let opts = SqliteOptions {
        busy_timeout: Duration::from_millis(1234),
        ..SqliteOptions::default()
    };
    let store = within(open_with(&dir, opts)).await;
    let p = store.pragmas();
    assert_eq!(p.journal_mode, "wal");
    assert_eq!(p.synchronous, "full");
    assert!(p.foreign_keys);
    assert_eq!(p.busy_timeout_ms, 1234);
    assert_eq!(p.temp_store, "memory", "no temporary file on the writer's path");
    assert_eq!(store.path(), dir.path().join("paywarden.db"));

    // WAL is a property of the file: any other connection sees it.
    let mut other = raw(store.path()).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert_eq!(mode.to_ascii_lowercase(), "wal");
    store.close().await;
}

#[tokio::test]
async fn open_creates_a_missing_directory() {
    let dir = TempDir::new().unwrap();
    let nested = dir.path().join("a").join("b");
    let store = within(paywarden_store::SqliteStore::open(
        &nested,
        SqliteOptions::default(),
    ))
    .await
    .unwrap();
    assert!(nested.join("paywarden.db").exists());
    store.close().await;
}

async fn every_object_kind_round_trips(backend: Backend) {
    within(async {
        let dir = TempDir::new().unwrap();
        let Some(store) = open_backend(backend, &dir).await else {
            return;
        };
        let m = merchant("acct_1");
        let key = ApiKeyRecord {
            hash: [7; 32],
            merchant: m.id.clone(),
            prefix: "sk_test_abcd".into(),
            created: 5,
        };
        let pm = payment_method("pm_1", "acct_1");
        let pi = intent(
            "pi_1",
            "acct_1",
            1000,
            Currency::USD,
            CaptureMethod::Automatic,
        );
        write(
            &*store,
            vec![
                Write::Merchant(m.clone()),
                Write::ApiKey(key),
                Write::PaymentMethod(pm.clone()),
            ],
        )
        .await
        .unwrap();
        write(&*store, vec![Write::InsertIntent(pi.clone())])
            .await
            .unwrap();

        assert_eq!(
            store.merchant_by_key_hash(&[7; 32]).await.unwrap(),
            Some(m.clone())
        );
        assert_eq!(store.merchant_by_key_hash(&[8; 32]).await.unwrap(), None);
        assert_eq!(
            store.merchant_by_name("acct_1 inc").await.unwrap(),
            Some(m.clone())
        );
        assert_eq!(store.merchant_by_name("nobody").await.unwrap(), None);
        assert_eq!(store.merchants_count().await.unwrap(), 1);
        assert_eq!(
            store.payment_method("acct_1", "pm_1").await.unwrap(),
            Some(pm)
        );
        assert_eq!(
            store.payment_intent("acct_1", "pi_1").await.unwrap(),
            Some(pi.clone())
        );

        // Confirm: intent v1, a charge and two postings in one batch.
        let approved = AuthOutcome::Approved {
            authorization: "auth_1".into(),
        };
        let c = pi.confirm("pm_1", approved, "ch_1".into(), 10).unwrap();
        assert_eq!(c.postings.len(), 2);
        write(
            &*store,
            vec![
                Write::UpdateIntent(c.intent.clone()),
                Write::Charge(c.charge.clone()),
                Write::Postings(c.postings.clone()),
            ],
        )
        .await
        .unwrap();
        assert_eq!(
            store.payment_intent("acct_1", "pi_1").await.unwrap(),
            Some(c.intent.clone())
        );
        assert_eq!(
            store.charge("acct_1", "ch_1").await.unwrap(),
            Some(c.charge.clone())
        );

        // A refund: the charge is replaced in place (same row, same seq).
        let seq_before = store
            .scalar("SELECT seq FROM charges WHERE id = 'ch_1'")
            .await;
        let (pi2, ch2, re, posting) = c
            .intent
            .refund(
                &c.charge,
                None,
                "re_1".into(),
                None,
                Metadata::default(),
                11,
            )
            .unwrap();
        write(
            &*store,
            vec![
                Write::UpdateIntent(pi2.clone()),
                Write::Charge(ch2.clone()),
                Write::InsertRefund(re.clone()),
                Write::Postings(vec![posting]),
            ],
        )
        .await
        .unwrap();
        assert_eq!(store.charge("acct_1", "ch_1").await.unwrap(), Some(ch2));
        assert_eq!(store.refund("acct_1", "re_1").await.unwrap(), Some(re));
        assert_eq!(
            store
                .payment_intent("acct_1", "pi_1")
                .await
                .unwrap()
                .unwrap()
                .amount_refunded,
            1000
        );
        let (seq_after, charges) = (
            store.scalar("SELECT MAX(seq) FROM charges").await,
            store.scalar("SELECT COUNT(*) FROM charges").await,
        );
        assert_eq!((seq_after, charges), (seq_before, 1));

        // Postings: one row per leg, and the books balance.
        let legs = store.scalar("SELECT COUNT(*) FROM ledger_entries").await;
        assert_eq!(legs, 2 + 4 + 2);
        let report = store.audit().await.unwrap();
        assert!(report.balanced(), "{report}");
        assert_eq!(
            (report.postings, report.payments, report.refunds),
            (3, 1, 1)
        );

        let rec = IdempotencyRecord {
            merchant: "acct_1".into(),
            key: "k1".into(),
            request_hash: [3; 32],
            status: 200,
            body: b"{\"id\":\"pi_1\"}".to_vec(),
            created: 100,
        };
        write(
            &*store,
            vec![Write::Idempotency {
                record: rec.clone(),
                replaces_before: 0,
            }],
        )
        .await
        .unwrap();
        assert_eq!(store.idempotency("acct_1", "k1").await.unwrap(), Some(rec));
        assert_eq!(store.idempotency("acct_2", "k1").await.unwrap(), None);
        store.close().await;
    })
    .await
}

async fn stale_intent_version_is_refused_and_keeps_the_stored_row(backend: Backend) {
    within(async {
        let dir = TempDir::new().unwrap();
        let Some(store) = open_backend(backend, &dir).await else {
            return;
        };
        let pi = usd_intent("pi_1", "acct_1");
        write(&*store, vec![Write::InsertIntent(pi.clone())])
            .await
            .unwrap();

        let mut first = pi.clone();
        first.version = 1;
        first.description = Some("first".into());
        let mut second = pi.clone();
        second.version = 1;
        second.description = Some("second".into());
        write(&*store, vec![Write::UpdateIntent(first.clone())])
            .await
            .unwrap();
        let err = write(&*store, vec![Write::UpdateIntent(second)])
            .await
            .unwrap_err();
        assert!(
            matches!(err, WriteError::Conflict(ConflictKind::IntentVersion)),
            "{err:?}"
        );
        assert_eq!(
            store.payment_intent("acct_1", "pi_1").await.unwrap(),
            Some(first.clone())
        );

        // Skipping a version, version 0 and an unknown intent are refused the same way.
        let mut skip = first.clone();
        skip.version = 3;
        let mut zero = first.clone();
        zero.version = 0;
        let mut unknown = usd_intent("pi_404", "acct_1");
        unknown.version = 1;
        for bad in [skip, zero, unknown] {
            let err = write(&*store, vec![Write::UpdateIntent(bad)])
                .await
                .unwrap_err();
            assert!(
                matches!(err, WriteError::Conflict(ConflictKind::IntentVersion)),
                "{err:?}"
            );
        }
        // Another merchant cannot update it either.
        let mut foreign = first.clone();
        foreign.version = 2;
        foreign.merchant = "acct_2".into();
        let err = write(&*store, vec![Write::UpdateIntent(foreign)])
            .await
            .unwrap_err();
        assert!(
            matches!(err, WriteError::Conflict(ConflictKind::IntentVersion)),
            "{err:?}"
        );
        assert_eq!(
            store.payment_intent("acct_1", "pi_1").await.unwrap(),
            Some(first)
        );
        store.close().await;
    })
    .await
}

async fn duplicates_are_conflicts_and_change_nothing(backend: Backend) {
    within(async {
        let dir = TempDir::new().unwrap();
        let Some(store) = open_backend(backend, &dir).await else {
            return;
        };
        write(&*store, vec![Write::Merchant(merchant("acct_1"))])
            .await
            .unwrap();

        let mut same_name = merchant("acct_2");
        same_name.name = "acct_1 inc".into();
        let err = write(&*store, vec![Write::Merchant(same_name)])
            .await
            .unwrap_err();
        assert!(
            matches!(err, WriteError::Conflict(ConflictKind::Duplicate)),
            "{err:?}"
        );
        let err = write(&*store, vec![Write::Merchant(merchant("acct_1"))])
            .await
            .unwrap_err();
        assert!(
            matches!(err, WriteError::Conflict(ConflictKind::Duplicate)),
            "{err:?}"
        );

        // The batch is atomic: the new merchant in front of the duplicate intent is rolled back.
        write(
            &*store,
            vec![Write::InsertIntent(usd_intent("pi_1", "acct_1"))],
        )
        .await
        .unwrap();
        let err = write(
            &*store,
            vec![
                Write::Merchant(merchant("acct_3")),
                Write::InsertIntent(usd_intent("pi_1", "acct_1")),
            ],
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, WriteError::Conflict(ConflictKind::Duplicate)),
            "{err:?}"
        );
        assert_eq!(store.merchants_count().await.unwrap(), 1);

        // A charge id belonging to another merchant is never overwritten.
        let pi = usd_intent("pi_1", "acct_1");
        let c = pi
            .confirm(
                "pm_1",
                AuthOutcome::Approved {
                    authorization: "a".into(),
                },
                "ch_1".into(),
                2,
            )
            .unwrap();
        write(&*store, vec![Write::Charge(c.charge.clone())])
            .await
            .unwrap();
        let mut foreign = c.charge.clone();
        foreign.merchant = "acct_2".into();
        foreign.amount = 1;
        let err = write(&*store, vec![Write::Charge(foreign)])
            .await
            .unwrap_err();
        assert!(
            matches!(err, WriteError::Conflict(ConflictKind::Duplicate)),
            "{err:?}"
        );
        assert_eq!(
            store.charge("acct_1", "ch_1").await.unwrap(),
            Some(c.charge)
        );

        // An API key needs its merchant (foreign key).
        let orphan_key = ApiKeyRecord {
            hash: [1; 32],
            merchant: "acct_404".into(),
            prefix: "sk_test_x".into(),
            created: 1,
        };
        let err = write(&*store, vec![Write::ApiKey(orphan_key)])
            .await
            .unwrap_err();
        assert!(
            matches!(err, WriteError::Store(StoreError::Database(_))),
            "{err:?}"
        );
        store.close().await;
    })
    .await
}

async fn unbalanced_postings_never_reach_the_books(backend: Backend) {
    within(async {
        let dir = TempDir::new().unwrap();
        let Some(store) = open_backend(backend, &dir).await else {
            return;
        };
        let pi = usd_intent("pi_1", "acct_1");
        let c = pi
            .confirm(
                "pm_1",
                AuthOutcome::Approved {
                    authorization: "a".into(),
                },
                "ch_1".into(),
                2,
            )
            .unwrap();
        let mut bad = c.postings[0].clone();
        bad.legs[0].amount += 1;
        let err = write(&*store, vec![Write::Postings(vec![bad])])
            .await
            .unwrap_err();
        assert!(
            matches!(err, WriteError::Store(StoreError::Corrupt(_))),
            "{err:?}"
        );
        let mut lonely = c.postings[0].clone();
        lonely.legs.truncate(1);
        lonely.legs[0].amount = 0;
        assert!(
            write(&*store, vec![Write::Postings(vec![lonely])])
                .await
                .is_err()
        );
        let report = store.audit().await.unwrap();
        assert_eq!(report.postings, 0);
        store.close().await;
    })
    .await
}

fn record(key: &str, body: &str, created: i64) -> IdempotencyRecord {
    IdempotencyRecord {
        merchant: "acct_1".into(),
        key: key.into(),
        request_hash: [body.len() as u8; 32],
        status: 201,
        body: body.as_bytes().to_vec(),
        created,
    }
}

async fn idempotency_insert_conflict_and_replace_after_expiry(backend: Backend) {
    within(async {
        let dir = TempDir::new().unwrap();
        let Some(store) = open_backend(backend, &dir).await else {
            return;
        };
        let day = 86_400;
        let first = record("k", "first", 1_000_000);
        write(
            &*store,
            vec![Write::Idempotency {
                record: first.clone(),
                replaces_before: 1_000_000 - day,
            }],
        )
        .await
        .unwrap();

        // Still live: refused, the first record stays.
        let retry = record("k", "second", 1_000_010);
        let err = write(
            &*store,
            vec![Write::Idempotency {
                record: retry,
                replaces_before: 1_000_010 - day,
            }],
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, WriteError::Conflict(ConflictKind::IdempotencyKey)),
            "{err:?}"
        );
        assert_eq!(
            store.idempotency("acct_1", "k").await.unwrap(),
            Some(first.clone())
        );

        // Created exactly at the cut-off is still live.
        let edge = record("k", "edge", 1_000_000 + day);
        let err = write(
            &*store,
            vec![Write::Idempotency {
                record: edge,
                replaces_before: 1_000_000,
            }],
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, WriteError::Conflict(ConflictKind::IdempotencyKey)),
            "{err:?}"
        );

        // The store returns a record regardless of age; the caller judges expiry.
        assert!(store.idempotency("acct_1", "k").await.unwrap().is_some());

        // Expired: replaced.
        let later = record("k", "third", 1_000_000 + day + 1);
        write(
            &*store,
            vec![Write::Idempotency {
                record: later.clone(),
                replaces_before: 1_000_001,
            }],
        )
        .await
        .unwrap();
        assert_eq!(store.idempotency("acct_1", "k").await.unwrap(), Some(later));

        // The same key under another merchant is another record.
        let mut other = record("k", "other", 1_000_000);
        other.merchant = "acct_2".into();
        write(
            &*store,
            vec![Write::Idempotency {
                record: other.clone(),
                replaces_before: 0,
            }],
        )
        .await
        .unwrap();
        assert_eq!(store.idempotency("acct_2", "k").await.unwrap(), Some(other));
        store.close().await;
    })
    .await
}

async fn purge_deletes_old_records_in_chunks(backend: Backend) {
    within(async {
        let dir = TempDir::new().unwrap();
        let Some(store) = open_backend(backend, &dir).await else {
            return;
        };
        for chunk in 0..5 {
            let ops = (0..500)
                .map(|i| {
                    let n = chunk * 500 + i;
                    Write::Idempotency {
                        record: record(&format!("k{n}"), "b", n),
                        replaces_before: 0,
                    }
                })
                .collect();
            write(&*store, ops).await.unwrap();
        }
        let writes_meanwhile = async {
            for i in 0..20 {
                write(
                    &*store,
                    vec![Write::InsertIntent(usd_intent(
                        &format!("pi_{i}"),
                        "acct_1",
                    ))],
                )
                .await
                .unwrap();
            }
        };
        let (purged, ()) = tokio::join!(store.purge_idempotency(2100), writes_meanwhile);
        assert_eq!(purged.unwrap(), 2100);
        assert_eq!(store.idempotency("acct_1", "k2099").await.unwrap(), None);
        assert!(
            store
                .idempotency("acct_1", "k2100")
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(store.purge_idempotency(2100).await.unwrap(), 0);
        assert_eq!(store.purge_idempotency(i64::MAX).await.unwrap(), 400);
        assert_eq!(
            store
                .list_payment_intents("acct_1", &page(100, None, None))
                .await
                .unwrap()
                .data
                .len(),
            20
        );
        store.close().await;
    })
    .await
}

async fn data_survives_reopen(backend: Backend) {
    within(async {
        let dir = TempDir::new().unwrap();
        let Some(store) = open_backend(backend, &dir).await else { return };
        let pi = intent("pi_1", "acct_1", 500, Currency::JPY, CaptureMethod::Manual);
        write(
            &*store,
            vec![
                Write::Merchant(merchant("acct_1")),
                Write::InsertIntent(pi.clone()),
            ],
        )
        .await
        .unwrap();
        let c = pi
            .confirm(
                "pm_1",
                AuthOutcome::Approved {
                    authorization: "a".into(),
                },
                "ch_1".into(),
                2,
            )
            .unwrap();
        write(
            &*store,
            vec![
                Write::UpdateIntent(c.intent.clone()),
                Write::Charge(c.charge.clone()),
                Write::Postings(c.postings),
            ],
        )
        .await
        .unwrap();

        // Reopening runs the migrations again (a no-op) and finds everything.
        let store = store.reopen(&dir).await;
        let stored = store
            .payment_intent("acct_1", "pi_1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, c.intent);
        assert_eq!(stored.status, Status::RequiresCapture);
        assert_eq!(
            store.charge("acct_1", "ch_1").await.unwrap(),
            Some(c.charge)
        );
        assert_eq!(store.merchants_count().await.unwrap(), 1);
        let report = store.audit().await.unwrap();
        assert!(report.balanced(), "{report}");
        assert_eq!(report.postings, 1);
        assert_eq!(store.stats().commits, 0, "counters are per process");
        store.close().await;
    })
    .await
}

crate::on_both_backends!(
    data_survives_reopen,
    every_object_kind_round_trips,
    stale_intent_version_is_refused_and_keeps_the_stored_row,
    duplicates_are_conflicts_and_change_nothing,
    unbalanced_postings_never_reach_the_books,
    idempotency_insert_conflict_and_replace_after_expiry,
    purge_deletes_old_records_in_chunks,
);

/// Migration 0004 moves idempotency records from a WITHOUT ROWID table to a rowid table with a
/// unique key index: a data dir written before it keeps every record, live keys still refuse a
/// second request, and expired ones are still replaced.
#[tokio::test]
async fn idempotency_records_written_before_migration_4_survive_it() {
    within(async {
        let dir = TempDir::new().unwrap();
        let db = dir.path().join("paywarden.db");
        {
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&db)
                .create_if_missing(true);
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&opts)
                .await
                .unwrap();
            // A release from before migration 4 (and before the schema history).
            let before = paywarden_store::testing::migrator_before_history(paywarden_store::schema::Backend::Sqlite, 3);
            before.run(&mut conn).await.unwrap();
            for (key, created) in [("live", 1_000_000_i64), ("old", 10)] {
                sqlx::query(
                    "INSERT INTO idempotency_keys (merchant_id, key, request_hash, status, body, created) \
                     VALUES ('acct_1', ?1, ?2, 201, ?3, ?4)",
                )
                .bind(key)
                .bind(vec![key.len() as u8; 32])
                .bind(key.as_bytes().to_vec())
                .bind(created)
                .execute(&mut conn)
                .await
                .unwrap();
            }
            let pk: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM sqlite_master WHERE name = 'idempotency_keys' AND sql LIKE '%WITHOUT ROWID%'",
            )
            .fetch_optional(&mut conn)
            .await
            .unwrap();
            assert_eq!(pk, Some(1), "the old layout is what this test starts from");
        }

        let store = open(&dir).await;
        let live = store.idempotency("acct_1", "live").await.unwrap().unwrap();
        assert_eq!(live.body, b"live".to_vec());
        assert_eq!(live.created, 1_000_000);
        assert_eq!(live.request_hash, [4; 32]);
        let day = 86_400;
        let err = write(
            &store,
            vec![Write::Idempotency {
                record: record("live", "again", 1_000_010),
                replaces_before: 1_000_010 - day,
            }],
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, WriteError::Conflict(ConflictKind::IdempotencyKey)),
            "{err:?}"
        );
        let fresh = record("old", "replaced", 2_000_000);
        write(
            &store,
            vec![Write::Idempotency {
                record: fresh.clone(),
                replaces_before: 2_000_000 - day,
            }],
        )
        .await
        .unwrap();
        assert_eq!(store.idempotency("acct_1", "old").await.unwrap(), Some(fresh));
        let mut conn = raw(store.path()).await;
        let layout: String =
            sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'idempotency_keys'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert!(!layout.contains("WITHOUT ROWID"), "{layout}");
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(rows, 2);
        store.close().await;
    })
    .await
}

/// Readers are handed back without a check (no ping): a read cut off by a dropped future must
/// leave its connection fit for the next one, and the busy count must come back to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_cut_off_mid_query_leave_every_reader_usable() {
    within(async {
        let dir = TempDir::new().unwrap();
        let store = std::sync::Arc::new(
            open_with(
                &dir,
                SqliteOptions {
                    readers_max: 2,
                    ..SqliteOptions::default()
                },
            )
            .await,
        );
        let ops: Vec<Write> = (0..200)
            .map(|i| Write::InsertIntent(usd_intent(&format!("pi_{i:03}"), "acct_1")))
            .collect();
        write(&*store, ops).await.unwrap();

        // Many lists at once, most of them abandoned after a moment: some while waiting for a
        // reader, some inside their query.
        let mut tasks = Vec::new();
        for i in 0..40 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let hundred = page(100, None, None);
                let list = store.list_payment_intents("acct_1", &hundred);
                if i % 4 == 0 {
                    list.await.map(|p| p.data.len()).ok()
                } else {
                    tokio::time::timeout(Duration::from_micros(50 * i), list)
                        .await
                        .ok()
                        .and_then(|r| r.ok())
                        .map(|p| p.data.len())
                }
            }));
        }
        for t in tasks {
            if let Some(n) = t.await.unwrap() {
                assert_eq!(n, 100);
            }
        }
        wait_until(|| store.stats().readers_busy == 0).await;
        // Every reader answers, in turn and at once, with the right rows.
        let three = page(3, Some("pi_150"), None);
        for _ in 0..4 {
            let (a, b) = tokio::join!(
                store.payment_intent("acct_1", "pi_007"),
                store.list_payment_intents("acct_1", &three),
            );
            assert_eq!(a.unwrap().unwrap().id, "pi_007");
            let ids: Vec<String> = b.unwrap().data.into_iter().map(|p| p.id).collect();
            assert_eq!(ids, vec!["pi_149", "pi_148", "pi_147"]);
        }
        // No reader was left inside an old snapshot: a write made now is seen by both.
        write(&*store, vec![Write::InsertIntent(usd_intent("pi_200", "acct_1"))]).await.unwrap();
        for _ in 0..4 {
            let (a, b) = tokio::join!(store.payment_intent("acct_1", "pi_200"), store.payment_intent("acct_1", "pi_200"));
            assert_eq!(a.unwrap().map(|p| p.id), Some("pi_200".to_string()), "a reader read an old snapshot");
            assert_eq!(b.unwrap().map(|p| p.id), Some("pi_200".to_string()), "a reader read an old snapshot");
        }
        let stats = store.stats();
        assert_eq!((stats.readers_busy, stats.readers_max), (0, 2));
    })
    .await
}
