//! The group-commit writer: isolation of batches in a group, the bounded queue, grouping.

use std::sync::Arc;
use std::time::Duration;

use paywarden_store::{ConflictKind, SqliteOptions, Store, Write, WriteError};
use tempfile::TempDir;

use crate::common::*;

fn slow_lock_opts(writer_queue_max: usize) -> SqliteOptions {
    SqliteOptions {
        writer_queue_max,
        busy_timeout: Duration::from_secs(30),
        ..SqliteOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_does_not_fail_its_group() {
    within(async {
        let dir = TempDir::new().unwrap();
        let store = Arc::new(open_with(&dir, slow_lock_opts(1024)).await);
        let lock = hold_write_lock(&store).await;
        let parked = park_writer(&store, "pi_parked").await;

        // 50 batches queue up behind the lock; they will be one group.
        let mut handles = Vec::new();
        for i in 0..50 {
            let ops = if i == 17 {
                // Its first op would succeed; its second duplicates the parked intent.
                vec![
                    Write::InsertIntent(usd_intent("pi_partial", "acct_1")),
                    Write::InsertIntent(usd_intent("pi_parked", "acct_1")),
                ]
            } else if i == 33 {
                let mut stale = usd_intent("pi_parked", "acct_1");
                stale.version = 5;
                vec![Write::UpdateIntent(stale)]
            } else {
                vec![Write::InsertIntent(usd_intent(
                    &format!("pi_{i}"),
                    "acct_1",
                ))]
            };
            handles.push(spawn_write(&store, ops));
        }
        wait_until(|| store.stats().writer_queue_len == 50).await;
        assert_eq!(store.stats().commits, 0);
        release(lock).await;

        parked.await.unwrap().unwrap();
        for (i, h) in handles.into_iter().enumerate() {
            let result = h.await.unwrap();
            match i {
                17 => assert!(
                    matches!(result, Err(WriteError::Conflict(ConflictKind::Duplicate))),
                    "{result:?}"
                ),
                33 => assert!(
                    matches!(
                        result,
                        Err(WriteError::Conflict(ConflictKind::IntentVersion))
                    ),
                    "{result:?}"
                ),
                _ => result.unwrap(),
            }
        }
        let stats = store.stats();
        assert_eq!(
            stats.commits, 2,
            "the parked batch, then the 50 queued ones in one group"
        );
        assert_eq!(
            stats.bulk_commits, 2,
            "conflicts the checks foresee keep the group on the bulk path"
        );
        assert_eq!(stats.batches_committed, 1 + 48);
        let all = store
            .list_payment_intents("acct_1", &page(100, None, None))
            .await
            .unwrap();
        assert_eq!(all.data.len(), 49);
        assert_eq!(
            store.payment_intent("acct_1", "pi_partial").await.unwrap(),
            None,
            "a failed batch is undone whole"
        );
        assert_eq!(
            store
                .payment_intent("acct_1", "pi_parked")
                .await
                .unwrap()
                .unwrap()
                .version,
            0
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_refused_at_once() {
    within(async {
        let dir = TempDir::new().unwrap();
        let store = Arc::new(open_with(&dir, slow_lock_opts(2)).await);
        let lock = hold_write_lock(&store).await;
        let parked = park_writer(&store, "pi_parked").await;

        let queued = [
            spawn_write(
                &store,
                vec![Write::InsertIntent(usd_intent("pi_1", "acct_1"))],
            ),
            spawn_write(
                &store,
                vec![Write::InsertIntent(usd_intent("pi_2", "acct_1"))],
            ),
        ];
        wait_until(|| store.stats().writer_queue_len == 2).await;
        let stats = store.stats();
        assert_eq!((stats.writer_queue_len, stats.writer_queue_max), (2, 2));

        let refused = tokio::time::timeout(
            Duration::from_secs(1),
            write(
                &*store,
                vec![Write::InsertIntent(usd_intent("pi_3", "acct_1"))],
            ),
        )
        .await
        .expect("a full queue must answer at once, not wait");
        assert!(
            matches!(refused, Err(WriteError::QueueFull { limit: 2 })),
            "{refused:?}"
        );
        assert_eq!(
            refused.unwrap_err().to_string(),
            "the writer queue is full (2 batches waiting); retry shortly"
        );

        release(lock).await;
        parked.await.unwrap().unwrap();
        for h in queued {
            h.await.unwrap().unwrap();
        }
        assert_eq!(store.stats().writer_queue_len, 0);
        assert_eq!(store.payment_intent("acct_1", "pi_3").await.unwrap(), None);
        // Room again.
        write(
            &*store,
            vec![Write::InsertIntent(usd_intent("pi_3", "acct_1"))],
        )
        .await
        .unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits() {
    within(async {
        let dir = TempDir::new().unwrap();
        let store = Arc::new(open(&dir).await);
        let handles: Vec<_> = (0..200)
            .map(|i| {
                spawn_write(
                    &store,
                    vec![Write::InsertIntent(usd_intent(
                        &format!("pi_{i}"),
                        "acct_1",
                    ))],
                )
            })
            .collect();
        for h in handles {
            h.await.unwrap().unwrap();
        }
        let stats = store.stats();
        assert_eq!(stats.batches_committed, 200);
        assert!(
            stats.commits < 200,
            "200 concurrent writes took {} commits",
            stats.commits
        );
        assert!(stats.commits >= 1);
        let all = store
            .list_payment_intents("acct_1", &page(100, None, None))
            .await
            .unwrap();
        assert!(all.has_more);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_max_bounds_a_group() {
    within(async {
        let dir = TempDir::new().unwrap();
        let opts = SqliteOptions {
            batch_max: 4,
            ..slow_lock_opts(64)
        };
        let store = Arc::new(open_with(&dir, opts).await);
        let lock = hold_write_lock(&store).await;
        let parked = park_writer(&store, "pi_parked").await;
        let handles: Vec<_> = (0..10)
            .map(|i| {
                spawn_write(
                    &store,
                    vec![Write::InsertIntent(usd_intent(
                        &format!("pi_{i}"),
                        "acct_1",
                    ))],
                )
            })
            .collect();
        wait_until(|| store.stats().writer_queue_len == 10).await;
        release(lock).await;
        parked.await.unwrap().unwrap();
        for h in handles {
            h.await.unwrap().unwrap();
        }
        // 1 (parked) + groups of 4, 4, 2.
        assert_eq!(store.stats().commits, 4);
        assert_eq!(store.stats().batches_committed, 11);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unforeseen_duplicate_falls_back_to_batch_by_batch() {
    within(async {
        let dir = TempDir::new().unwrap();
        let store = Arc::new(open_with(&dir, slow_lock_opts(1024)).await);
        let lock = hold_write_lock(&store).await;
        let parked = park_writer(&store, "pi_parked").await;
        let mut handles = Vec::new();
        for i in 0..20 {
            let ops = if i == 3 {
                vec![
                    Write::InsertIntent(usd_intent("pi_3", "acct_1")),
                    Write::PaymentMethod(payment_method("pm_taken", "acct_1")),
                ]
            } else if i == 7 {
                // The bulk checks do not look up payment method ids: the insert fails, and the
                // group is replayed under savepoints.
                vec![
                    Write::InsertIntent(usd_intent("pi_with_dup", "acct_1")),
                    Write::PaymentMethod(payment_method("pm_taken", "acct_1")),
                ]
            } else {
                vec![Write::InsertIntent(usd_intent(
                    &format!("pi_{i}"),
                    "acct_1",
                ))]
            };
            handles.push(spawn_write(&store, ops));
        }
        wait_until(|| store.stats().writer_queue_len == 20).await;
        release(lock).await;
        parked.await.unwrap().unwrap();
        // Tasks may reach the queue in any order: whichever of the two pm_taken batches comes
        // second is the one refused.
        let mut refused = Vec::new();
        for (i, h) in handles.into_iter().enumerate() {
            match h.await.unwrap() {
                Ok(()) => {}
                Err(WriteError::Conflict(ConflictKind::Duplicate)) if i == 3 || i == 7 => {
                    refused.push(i)
                }
                Err(e) => panic!("batch {i}: {e:?}"),
            }
        }
        assert_eq!(
            refused.len(),
            1,
            "exactly one of the two duplicates is refused"
        );
        let stats = store.stats();
        assert_eq!(stats.commits, 2);
        assert_eq!(
            stats.bulk_commits, 1,
            "the parked write; the group of 20 fell back"
        );
        let refused_intent = if refused[0] == 3 {
            "pi_3"
        } else {
            "pi_with_dup"
        };
        assert_eq!(
            store
                .payment_intent("acct_1", refused_intent)
                .await
                .unwrap(),
            None,
            "a refused batch is undone whole"
        );
        let all = store
            .list_payment_intents("acct_1", &page(100, None, None))
            .await
            .unwrap();
        assert_eq!(all.data.len(), 20, "the parked intent and 19 of the group");
    })
    .await
}
