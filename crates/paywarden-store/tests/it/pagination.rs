//! Lists: newest first, cursors both ways, has_more, unknown cursors, merchant scoping.

use paywarden_core::{AuthOutcome, Metadata, PaymentIntent};
use paywarden_store::{Store, StoreError, Write};
use tempfile::TempDir;

use crate::common::*;

fn ids(page: &[PaymentIntent]) -> Vec<&str> {
    page.iter().map(|pi| pi.id.as_str()).collect()
}

/// pi_0 .. pi_6 for acct_1 (pi_6 newest), interleaved with two intents of acct_2.
async fn seven_intents(store: &dyn Store) {
    for i in 0..7 {
        let mut ops = vec![Write::InsertIntent(usd_intent(
            &format!("pi_{i}"),
            "acct_1",
        ))];
        if i % 3 == 0 && i > 0 {
            ops.push(Write::InsertIntent(usd_intent(
                &format!("pi_other_{i}"),
                "acct_2",
            )));
        }
        write(store, ops).await.unwrap();
    }
}

async fn intents_page_newest_first_in_both_directions(backend: Backend) {
    within(async {
        let dir = TempDir::new().unwrap();
        let Some(store) = open_backend(backend, &dir).await else {
            return;
        };
        seven_intents(&*store).await;
        let list = |p| {
            let store = &store;
            async move { store.list_payment_intents("acct_1", &p).await.unwrap() }
        };

        let p = list(page(3, None, None)).await;
        assert_eq!(
            (ids(&p.data), p.has_more),
            (vec!["pi_6", "pi_5", "pi_4"], true)
        );
        let p = list(page(3, Some("pi_4"), None)).await;
        assert_eq!(
            (ids(&p.data), p.has_more),
            (vec!["pi_3", "pi_2", "pi_1"], true)
        );
        let p = list(page(3, Some("pi_1"), None)).await;
        assert_eq!((ids(&p.data), p.has_more), (vec!["pi_0"], false));
        let p = list(page(3, Some("pi_0"), None)).await;
        assert_eq!((ids(&p.data), p.has_more), (Vec::<&str>::new(), false));
        let p = list(page(100, None, None)).await;
        assert_eq!(p.data.len(), 7);
        assert!(!p.has_more);
        let p = list(page(7, None, None)).await;
        assert!(!p.has_more, "exactly `limit` objects left is not more");

        // ending_before: the `limit` objects just newer than the cursor, still newest first.
        let p = list(page(3, None, Some("pi_0"))).await;
        assert_eq!(
            (ids(&p.data), p.has_more),
            (vec!["pi_3", "pi_2", "pi_1"], true)
        );
        let p = list(page(3, None, Some("pi_3"))).await;
        assert_eq!(
            (ids(&p.data), p.has_more),
            (vec!["pi_6", "pi_5", "pi_4"], false)
        );
        let p = list(page(3, None, Some("pi_4"))).await;
        assert_eq!((ids(&p.data), p.has_more), (vec!["pi_6", "pi_5"], false));
        let p = list(page(3, None, Some("pi_6"))).await;
        assert_eq!((ids(&p.data), p.has_more), (Vec::<&str>::new(), false));
        store.close().await;
    })
    .await
}

async fn unknown_or_foreign_cursor_is_cursor_not_found(backend: Backend) {
    within(async {
        let dir = TempDir::new().unwrap();
        let Some(store) = open_backend(backend, &dir).await else {
            return;
        };
        seven_intents(&*store).await;
        for (after, before) in [
            (Some("pi_nope"), None),
            (None, Some("pi_nope")),
            (Some("pi_other_3"), None),
        ] {
            let err = store
                .list_payment_intents("acct_1", &page(3, after, before))
                .await
                .unwrap_err();
            match err {
                StoreError::CursorNotFound { object, id } => {
                    assert_eq!(object, "payment_intent");
                    assert_eq!(Some(id.as_str()), after.or(before));
                }
                other => panic!("expected CursorNotFound, got {other:?}"),
            }
        }
        let err = store
            .list_refunds("acct_1", None, &page(3, Some("re_nope"), None))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::CursorNotFound {
                    object: "refund",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = store
            .list_payment_methods("acct_1", &page(3, None, Some("pm_nope")))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::CursorNotFound {
                    object: "payment_method",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "No such payment_method: 'pm_nope'");
        store.close().await;
    })
    .await
}

async fn every_read_is_scoped_to_its_merchant(backend: Backend) {
    within(async {
        let dir = TempDir::new().unwrap();
        let Some(store) = open_backend(backend, &dir).await else {
            return;
        };
        seven_intents(&*store).await;
        let pi = store
            .payment_intent("acct_1", "pi_0")
            .await
            .unwrap()
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
        let (pi2, ch2, re, posting) = c
            .intent
            .refund(&c.charge, None, "re_1".into(), None, Metadata::default(), 3)
            .unwrap();
        write(
            &*store,
            vec![
                Write::PaymentMethod(payment_method("pm_1", "acct_1")),
                Write::UpdateIntent(c.intent.clone()),
                Write::Charge(c.charge.clone()),
                Write::Postings(c.postings.clone()),
            ],
        )
        .await
        .unwrap();
        write(
            &*store,
            vec![
                Write::UpdateIntent(pi2),
                Write::Charge(ch2),
                Write::InsertRefund(re),
                Write::Postings(vec![posting]),
            ],
        )
        .await
        .unwrap();

        assert!(
            store
                .payment_intent("acct_1", "pi_0")
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(store.payment_intent("acct_2", "pi_0").await.unwrap(), None);
        assert_eq!(
            store.payment_intent("acct_1", "pi_other_3").await.unwrap(),
            None
        );
        assert_eq!(store.charge("acct_2", "ch_1").await.unwrap(), None);
        assert_eq!(store.refund("acct_2", "re_1").await.unwrap(), None);
        assert_eq!(store.payment_method("acct_2", "pm_1").await.unwrap(), None);

        let theirs = store
            .list_payment_intents("acct_2", &page(10, None, None))
            .await
            .unwrap();
        assert_eq!(ids(&theirs.data), vec!["pi_other_6", "pi_other_3"]);
        assert!(
            store
                .list_refunds("acct_2", None, &page(10, None, None))
                .await
                .unwrap()
                .data
                .is_empty()
        );
        assert!(
            store
                .list_payment_methods("acct_2", &page(10, None, None))
                .await
                .unwrap()
                .data
                .is_empty()
        );
        assert!(
            store
                .list_payment_intents("acct_3", &page(10, None, None))
                .await
                .unwrap()
                .data
                .is_empty()
        );
        assert_eq!(
            store
                .list_payment_methods("acct_1", &page(10, None, None))
                .await
                .unwrap()
                .data
                .len(),
            1
        );
        store.close().await;
    })
    .await
}

async fn refunds_list_by_intent(backend: Backend) {
    within(async {
        let dir = TempDir::new().unwrap();
        let Some(store) = open_backend(backend, &dir).await else {
            return;
        };
        let mut intents = Vec::new();
        for id in ["pi_a", "pi_b"] {
            let pi = intent(
                id,
                "acct_1",
                1000,
                paywarden_core::Currency::USD,
                paywarden_core::CaptureMethod::Automatic,
            );
            let c = pi
                .confirm(
                    "pm_1",
                    AuthOutcome::Approved {
                        authorization: "a".into(),
                    },
                    format!("ch_{id}"),
                    2,
                )
                .unwrap();
            write(
                &*store,
                vec![
                    Write::InsertIntent(pi),
                    Write::Charge(c.charge.clone()),
                    Write::Postings(c.postings.clone()),
                ],
            )
            .await
            .unwrap();
            // The confirmed intent is version 1: an update, as the API would write it.
            write(&*store, vec![Write::UpdateIntent(c.intent.clone())])
                .await
                .unwrap();
            intents.push((c.intent, c.charge));
        }
        // Alternate refunds of 100 between the two intents: re_0 (a), re_1 (b), re_2 (a), ...
        for n in 0..6 {
            let (pi, ch) = &mut intents[n % 2];
            let amount = paywarden_core::Amount::new(100).unwrap();
            let (pi2, ch2, re, posting) = pi
                .refund(
                    ch,
                    Some(amount),
                    format!("re_{n}"),
                    None,
                    Metadata::default(),
                    5,
                )
                .unwrap();
            write(
                &*store,
                vec![
                    Write::UpdateIntent(pi2.clone()),
                    Write::Charge(ch2.clone()),
                    Write::InsertRefund(re),
                    Write::Postings(vec![posting]),
                ],
            )
            .await
            .unwrap();
            *pi = pi2;
            *ch = ch2;
        }
        let refund_ids = |p: &paywarden_store::PageOf<paywarden_core::Refund>| {
            p.data.iter().map(|r| r.id.clone()).collect::<Vec<_>>()
        };
        let all = store
            .list_refunds("acct_1", None, &page(10, None, None))
            .await
            .unwrap();
        assert_eq!(
            refund_ids(&all),
            ["re_5", "re_4", "re_3", "re_2", "re_1", "re_0"]
        );
        let a = store
            .list_refunds("acct_1", Some("pi_a"), &page(2, None, None))
            .await
            .unwrap();
        assert_eq!(
            (refund_ids(&a), a.has_more),
            (vec!["re_4".to_string(), "re_2".to_string()], true)
        );
        let a = store
            .list_refunds("acct_1", Some("pi_a"), &page(2, Some("re_2"), None))
            .await
            .unwrap();
        assert_eq!(
            (refund_ids(&a), a.has_more),
            (vec!["re_0".to_string()], false)
        );
        let b = store
            .list_refunds("acct_1", Some("pi_b"), &page(10, None, Some("re_1")))
            .await
            .unwrap();
        assert_eq!(
            (refund_ids(&b), b.has_more),
            (vec!["re_5".to_string(), "re_3".to_string()], false)
        );
        assert!(
            store
                .list_refunds("acct_1", Some("pi_none"), &page(10, None, None))
                .await
                .unwrap()
                .data
                .is_empty()
        );

        let report = store.audit().await.unwrap();
        assert!(report.balanced(), "{report}");
        assert_eq!((report.payments, report.refunds), (2, 6));
        store.close().await;
    })
    .await
}

crate::on_both_backends!(
    intents_page_newest_first_in_both_directions,
    unknown_or_foreign_cursor_is_cursor_not_found,
    every_read_is_scoped_to_its_merchant,
    refunds_list_by_intent,
);
