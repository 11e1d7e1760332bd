//! The audit can fail: tampering with one stored posting of a real history is reported.

use paywarden_core::ledger::{Audit, PaymentBalances};
use paywarden_core::payment::NewIntent;
use paywarden_core::{Account, Amount, CaptureMethod, Currency, PaymentIntent};
use proptest::prelude::*;
use proptest::sample::Index;

use crate::sim::{self, Op, Sim};
use crate::support::check;

#[derive(Debug, Clone)]
enum Tamper {
    /// Add `delta` to one leg: the posting no longer balances.
    Leg { posting: Index, leg: Index, delta: i64 },
    /// Lose one posting.
    Drop { posting: Index },
    /// Move `delta` from one leg to another: the posting still balances, but the payment's
    /// accounts no longer match its state.
    Shift { posting: Index, from: Index, to: Index, delta: i64 },
    /// Lose one refund object (histories without refunds lose a posting instead).
    DropRefund { refund: Index, posting: Index },
}

fn delta() -> impl Strategy<Value = i64> {
    prop_oneof![-1_000i64..=-1, 1i64..=1_000, Just(i64::from(u32::MAX))]
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        (any::<Index>(), any::<Index>(), delta()).prop_map(|(posting, leg, delta)| Tamper::Leg { posting, leg, delta }),
        any::<Index>().prop_map(|posting| Tamper::Drop { posting }),
        (any::<Index>(), any::<Index>(), any::<Index>(), delta())
            .prop_map(|(posting, from, to, delta)| Tamper::Shift { posting, from, to, delta }),
        (any::<Index>(), any::<Index>()).prop_map(|(refund, posting)| Tamper::DropRefund { refund, posting }),
    ]
}

proptest! {
    #![proptest_config(crate::support::cases(128))]

    #[test]
    fn tampered_history_is_reported(ops in sim::ops(40), tamper in tamper()) {
        // The first intent is manual with a payment method: confirming it writes a posting, so
        // the history is never empty.
        let ops: Vec<Op> = std::iter::once(Op::Confirm { pi: 0, pass_pm: true, approved: true }).chain(ops).collect();
        let sim = Sim::run(&ops)?;
        prop_assert!(!sim.postings.is_empty());
        let clean = sim::audit(&sim.intents, &sim.postings);
        check(clean.balanced(), || format!("clean history:\n{clean}"))?;

        let mut postings = sim.postings.clone();
        let mut intents = sim.intents.clone();
        let refunds: Vec<(usize, usize)> = intents
            .iter()
            .enumerate()
            .flat_map(|(i, s)| (0..s.refunds.len()).map(move |r| (i, r)))
            .collect();
        let tamper = match tamper {
            Tamper::DropRefund { posting, .. } if refunds.is_empty() => Tamper::Drop { posting },
            t => t,
        };
        // What the report must name: the broken posting itself, or the payment it belongs to.
        let named = match &tamper {
            Tamper::Leg { posting, leg, delta } => {
                let p = &mut postings[posting.index(sim.postings.len())];
                let n = p.legs.len();
                p.legs[leg.index(n)].amount += delta;
                format!("posting {} ", p.id)
            }
            Tamper::Drop { posting } => {
                let p = postings.remove(posting.index(sim.postings.len()));
                format!("{}: ", p.payment_intent)
            }
            Tamper::Shift { posting, from, to, delta } => {
                let p = &mut postings[posting.index(sim.postings.len())];
                let n = p.legs.len();
                let f = from.index(n);
                let t = (f + 1 + to.index(n - 1)) % n;
                p.legs[f].amount -= delta;
                p.legs[t].amount += delta;
                format!("{}: ", p.payment_intent)
            }
            Tamper::DropRefund { refund, .. } => {
                let (i, r) = refunds[refund.index(refunds.len())];
                intents[i].refunds.remove(r);
                format!("{}: refund objects total", intents[i].intent.id)
            }
        };
        let report = sim::audit(&intents, &postings);
        check(
            !report.balanced() && report.violations_total >= 1 && !report.violations.is_empty(),
            || format!("{tamper:?} went unnoticed:\n{report}"),
        )?;
        check(
            report.violations.iter().any(|v| v.0.starts_with(&named)),
            || format!("{tamper:?}: no violation names `{named}`:\n{report}"),
        )?;
        if let Tamper::Drop { .. } = tamper {
            check(
                report.violations.iter().any(|v| v.0.starts_with(&named) && v.0.contains("posting(s) stored")),
                || format!("a lost posting is not reported as such:\n{report}"),
            )?;
        }
    }
}

/// The checks that the random histories above cannot reach on their own: a one-legged posting,
/// and accounts that do not sum to zero per currency.
#[test]
fn audit_reports_short_postings_and_unbalanced_currencies() {
    let mut a = Audit::new();
    a.posting("p1", Currency::USD, 1, 0);
    a.account("acct_a", Currency::USD, Account::MerchantBalance, -5);
    a.account("acct_a", Currency::USD, Account::AcquirerReceivable, 5);
    a.account("acct_b", Currency::KWD, Account::MerchantBalance, -7);
    let r = a.finish();
    assert_eq!(r.violations_total, 2, "{r}");
    assert!(r.violations[0].0.contains("p1"), "{r}");
    assert!(r.violations[1].0.starts_with("kwd"), "{r}");
    assert_eq!(r.currency_totals, vec![(Currency::KWD, -7), (Currency::USD, 0)]);
    assert!(Audit::new().finish().balanced());
}

/// A payment whose `merchant_pending` alone is off (holds still match the intent) is reported.
#[test]
fn audit_reports_pending_that_does_not_mirror_holds() {
    let pi = PaymentIntent::new(NewIntent {
        id: "pi_x".into(),
        merchant: "acct_a".into(),
        amount: Amount::new(100).unwrap(),
        currency: Currency::USD,
        capture_method: CaptureMethod::Manual,
        payment_method: None,
        description: None,
        metadata: Default::default(),
        created: 0,
    });
    let mut b = PaymentBalances::default();
    let mut a = Audit::new();
    a.payment(&pi, &b, 0, 0);
    assert!(a.finish().balanced());
    b.add(Account::MerchantPending, 1);
    let mut a = Audit::new();
    a.payment(&pi, &b, 0, 0);
    let r = a.finish();
    assert_eq!(r.violations_total, 1, "{r}");
    assert!(r.violations[0].0.starts_with("pi_x: merchant_pending"), "{r}");
}
