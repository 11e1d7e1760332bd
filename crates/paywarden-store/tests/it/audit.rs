//! The ledger audit over books written by the core state machine, and over tampered ones.

use paywarden_core::{
    Account, Amount, AuthOutcome, CancellationReason, CaptureMethod, Currency, Decline, Metadata,
};
use paywarden_store::{Store, Write};
use tempfile::TempDir;

use crate::common::*;

fn approved() -> AuthOutcome {
    AuthOutcome::Approved {
        authorization: "auth".into(),
    }
}

/// Five payments through the state machine, each step its own batch as the API writes them.
/// Returns the number of postings written.
async fn books(store: &dyn Store) -> u64 {
    let mut postings = 0u64;
    write(
        store,
        vec![
            Write::Merchant(merchant("acct_1")),
            Write::Merchant(merchant("acct_2")),
        ],
    )
    .await
    .unwrap();

    // A: automatic capture, then a partial refund.
    let pi = intent(
        "pi_a",
        "acct_1",
        1000,
        Currency::USD,
        CaptureMethod::Automatic,
    );
    write(store, vec![Write::InsertIntent(pi.clone())])
        .await
        .unwrap();
    let c = pi.confirm("pm_1", approved(), "ch_a".into(), 10).unwrap();
    postings += c.postings.len() as u64;
    write(
        store,
        vec![
            Write::UpdateIntent(c.intent.clone()),
            Write::Charge(c.charge.clone()),
            Write::Postings(c.postings),
        ],
    )
    .await
    .unwrap();
    let (pi, ch, re, p) = c
        .intent
        .refund(
            &c.charge,
            Some(Amount::new(300).unwrap()),
            "re_a".into(),
            None,
            Metadata::default(),
            11,
        )
        .unwrap();
    postings += 1;
    write(
        store,
        vec![
            Write::UpdateIntent(pi),
            Write::Charge(ch),
            Write::InsertRefund(re),
            Write::Postings(vec![p]),
        ],
    )
    .await
    .unwrap();

    // B: manual, partial capture (the rest released), then the rest refunded.
    let pi = intent("pi_b", "acct_1", 1000, Currency::USD, CaptureMethod::Manual);
    write(store, vec![Write::InsertIntent(pi.clone())])
        .await
        .unwrap();
    let c = pi.confirm("pm_1", approved(), "ch_b".into(), 20).unwrap();
    postings += c.postings.len() as u64;
    write(
        store,
        vec![
            Write::UpdateIntent(c.intent.clone()),
            Write::Charge(c.charge.clone()),
            Write::Postings(c.postings),
        ],
    )
    .await
    .unwrap();
    let (pi, ch, ps) = c
        .intent
        .capture(Some(Amount::new(600).unwrap()), &c.charge, 21)
        .unwrap();
    postings += ps.len() as u64;
    write(
        store,
        vec![
            Write::UpdateIntent(pi.clone()),
            Write::Charge(ch.clone()),
            Write::Postings(ps),
        ],
    )
    .await
    .unwrap();
    let (pi, ch, re, p) = pi
        .refund(
            &ch,
            None,
            "re_b".into(),
            Some("requested_by_customer".into()),
            Metadata::default(),
            22,
        )
        .unwrap();
    postings += 1;
    write(
        store,
        vec![
            Write::UpdateIntent(pi),
            Write::Charge(ch),
            Write::InsertRefund(re),
            Write::Postings(vec![p]),
        ],
    )
    .await
    .unwrap();

    // C: manual, then canceled (the hold released).
    let pi = intent("pi_c", "acct_1", 250, Currency::USD, CaptureMethod::Manual);
    write(store, vec![Write::InsertIntent(pi.clone())])
        .await
        .unwrap();
    let c = pi.confirm("pm_1", approved(), "ch_c".into(), 30).unwrap();
    postings += c.postings.len() as u64;
    write(
        store,
        vec![
            Write::UpdateIntent(c.intent.clone()),
            Write::Charge(c.charge.clone()),
            Write::Postings(c.postings),
        ],
    )
    .await
    .unwrap();
    let (pi, ch, ps) = c
        .intent
        .cancel(Some(CancellationReason::Abandoned), Some(&c.charge), 31)
        .unwrap();
    postings += ps.len() as u64;
    let mut ops = vec![Write::UpdateIntent(pi), Write::Postings(ps)];
    ops.extend(ch.map(Write::Charge));
    write(store, ops).await.unwrap();

    // D: declined (no money moves).
    let pi = intent(
        "pi_d",
        "acct_1",
        999,
        Currency::USD,
        CaptureMethod::Automatic,
    );
    write(store, vec![Write::InsertIntent(pi.clone())])
        .await
        .unwrap();
    let decline = Decline {
        code: "card_declined".into(),
        decline_code: Some("insufficient_funds".into()),
        message: "no".into(),
    };
    let c = pi
        .confirm("pm_1", AuthOutcome::Declined(decline), "ch_d".into(), 40)
        .unwrap();
    assert!(c.postings.is_empty());
    write(
        store,
        vec![Write::UpdateIntent(c.intent), Write::Charge(c.charge)],
    )
    .await
    .unwrap();

    // E: another merchant, another currency.
    let pi = intent(
        "pi_e",
        "acct_2",
        5000,
        Currency::JPY,
        CaptureMethod::Automatic,
    );
    write(store, vec![Write::InsertIntent(pi.clone())])
        .await
        .unwrap();
    let c = pi.confirm("pm_2", approved(), "ch_e".into(), 50).unwrap();
    postings += c.postings.len() as u64;
    write(
        store,
        vec![
            Write::UpdateIntent(c.intent),
            Write::Charge(c.charge),
            Write::Postings(c.postings),
        ],
    )
    .await
    .unwrap();

    postings
}

fn balance(
    report: &paywarden_core::ledger::AuditReport,
    merchant: &str,
    currency: Currency,
    account: Account,
) -> i128 {
    report
        .accounts
        .iter()
        .find(|((m, c, a), _)| m == merchant && *c == currency && *a == account)
        .map(|(_, b)| *b)
        .unwrap_or(0)
}

async fn audit_passes_on_books_from_the_state_machine(backend: Backend) {
    within(async {
        let dir = TempDir::new().unwrap();
        let Some(store) = open_backend(backend, &dir).await else {
            return;
        };
        let postings = books(&*store).await;
        let report = store.audit().await.unwrap();
        assert!(report.balanced(), "{report}");
        assert_eq!(report.postings, postings);
        assert_eq!(postings, 3 + 4 + 2 + 2);
        assert_eq!((report.payments, report.refunds), (5, 2));
        assert!(report.currency_totals.iter().all(|(_, t)| *t == 0));
        // acct_1 captured 1000 + 600 and refunded 300 + 600: it is owed 700.
        assert_eq!(
            balance(&report, "acct_1", Currency::USD, Account::MerchantBalance),
            -700
        );
        assert_eq!(
            balance(
                &report,
                "acct_1",
                Currency::USD,
                Account::AcquirerReceivable
            ),
            700
        );
        assert_eq!(
            balance(
                &report,
                "acct_1",
                Currency::USD,
                Account::AuthorizationHolds
            ),
            0
        );
        assert_eq!(
            balance(&report, "acct_2", Currency::JPY, Account::MerchantBalance),
            -5000
        );
        assert!(report.to_string().contains("BALANCED"));
        store.close().await;
    })
    .await
}

async fn audit_reports_a_tampered_ledger_row(backend: Backend) {
    within(async {
        let dir = TempDir::new().unwrap();
        let Some(store) = open_backend(backend, &dir).await else { return };
        books(&*store).await;
        // One extra leg on pi_a's first posting: 5 cents from nowhere.
        store
            .tamper(
            "INSERT INTO ledger_entries \
             (posting_id, leg, merchant_id, currency, account, amount, payment_intent, kind, created) \
             VALUES ('pi_a:0', 9, 'acct_1', 'usd', 'merchant_balance', 5, 'pi_a', 'authorize', 12)",
            )
            .await;
        let report = store.audit().await.unwrap();
        assert!(!report.balanced(), "{report}");
        let texts: Vec<&str> = report.violations.iter().map(|v| v.0.as_str()).collect();
        assert!(texts.iter().any(|t| t.contains("posting pi_a:0 does not balance")), "{texts:?}");
        assert!(texts.iter().any(|t| t.starts_with("pi_a: merchant_balance")), "{texts:?}");
        assert!(texts.iter().any(|t| t.contains("usd: all accounts sum to 0.05 USD")), "{texts:?}");
        assert!(report.to_string().contains("VIOLATION"));
        store.close().await;
    })
    .await
}

async fn audit_reports_entries_of_unknown_payments(backend: Backend) {
    within(async {
        let dir = TempDir::new().unwrap();
        let Some(store) = open_backend(backend, &dir).await else { return };
        books(&*store).await;
        // A balanced posting, but for a payment that does not exist; and one of pi_a's
        // entries moved to another merchant.
        store
            .tamper(
            "INSERT INTO ledger_entries \
             (posting_id, leg, merchant_id, currency, account, amount, payment_intent, kind, created) \
             VALUES ('pi_ghost:0', 0, 'acct_1', 'usd', 'authorization_holds', 100, 'pi_ghost', 'authorize', 1), \
                    ('pi_ghost:0', 1, 'acct_1', 'usd', 'merchant_pending', -100, 'pi_ghost', 'authorize', 1)",
            )
            .await;
        let report = store.audit().await.unwrap();
        assert!(!report.balanced(), "{report}");
        let texts: Vec<&str> = report.violations.iter().map(|v| v.0.as_str()).collect();
        assert_eq!(texts, ["2 ledger entries of acct_1 for unknown payment pi_ghost"]);

        store.tamper("UPDATE refunds SET amount = amount + 1 WHERE id = 're_b'").await;
        let report = store.audit().await.unwrap();
        let texts: Vec<&str> = report.violations.iter().map(|v| v.0.as_str()).collect();
        assert!(texts.iter().any(|t| t.starts_with("pi_b: refund objects total")), "{texts:?}");
        store.close().await;
    })
    .await
}

async fn audit_reports_a_payment_whose_postings_changed_currency(backend: Backend) {
    within(async {
        let dir = TempDir::new().unwrap();
        let Some(store) = open_backend(backend, &dir).await else {
            return;
        };
        books(&*store).await;
        // A whole posting moved to another currency still balances on its own: only the
        // per-payment check can see it.
        store
            .tamper("UPDATE ledger_entries SET currency = 'eur' WHERE posting_id = 'pi_a:0'")
            .await;
        let report = store.audit().await.unwrap();
        let texts: Vec<&str> = report.violations.iter().map(|v| v.0.as_str()).collect();
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("pi_a: ") && t.contains("currency other than")),
            "{texts:?}"
        );
        store.close().await;
    })
    .await
}

crate::on_both_backends!(
    audit_passes_on_books_from_the_state_machine,
    audit_reports_a_tampered_ledger_row,
    audit_reports_entries_of_unknown_payments,
    audit_reports_a_payment_whose_postings_changed_currency,
);
