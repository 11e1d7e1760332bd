//! Random op sequences over a handful of intents, checked against the model after every op,
//! then audited as a store would.

use std::collections::BTreeMap;

use paywarden_core::Currency;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

use crate::sim::{self, Sim};
use crate::support::{check, check_eq};

proptest! {
    #![proptest_config(crate::support::cases(256))]

    #[test]
    fn state_machine_agrees_with_model_and_audit_balances(ops in sim::ops(60)) {
        let sim = Sim::run(&ops)?;
        let report = sim::audit(&sim.intents, &sim.postings);
        check(report.balanced(), || format!("audit of a clean history failed:\n{report}"))?;
        let refunds: usize = sim.intents.iter().map(|s| s.refunds.len()).sum();
        check_eq(
            (report.postings, report.payments, report.refunds),
            (sim.postings.len() as u64, sim.intents.len() as u64, refunds as u64),
            || "audit counts (postings, payments, refunds)".into(),
        )?;
        // Per currency, all accounts of all merchants sum to zero (recomputed here, and as the
        // audit reports it).
        let accounts = sim::account_balances(&sim.postings);
        let mut totals: BTreeMap<Currency, i128> = BTreeMap::new();
        for ((_, c, _), b) in &accounts {
            *totals.entry(*c).or_default() += b;
        }
        check(totals.values().all(|t| *t == 0), || format!("currency totals {totals:?}"))?;
        check(report.currency_totals.iter().all(|(_, t)| *t == 0), || format!("reported totals {:?}", report.currency_totals))?;
        check_eq(report.accounts.clone(), accounts.into_iter().collect::<Vec<_>>(), || "reported account balances".into())?;
    }
}

/// The generator is not vacuous: over a few hundred sequences it reaches every accepted and
/// refused branch of every op, in every currency and both capture methods.
#[test]
fn generator_reaches_every_branch() {
    let mut runner = TestRunner::new(Config { cases: 1, ..Config::default() });
    let strategy = sim::ops(60);
    let mut stats: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..300 {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        let sim = Sim::run(&ops).unwrap_or_else(|e| panic!("{e}"));
        for (k, v) in sim.stats {
            *stats.entry(k).or_default() += v;
        }
        for s in &sim.intents {
            seen.insert(format!("{}:{:?}:{}", s.intent.currency, s.intent.capture_method, s.intent.status.as_str()));
        }
    }
    let wanted = [
        "update:[]",
        "update:Metadata",
        "update:UnexpectedState",
        "confirm_approved:[Authorize]",
        "confirm_approved:[Authorize, Capture]",
        "confirm_approved:MissingPaymentMethod",
        "confirm_approved:UnexpectedState",
        "confirm_declined:[]",
        "capture:[Capture]",
        "capture:[Capture, Release]",
        "capture:CaptureTooLarge",
        "capture:UnexpectedState",
        "cancel:[]",
        "cancel:[Release]",
        "cancel:UnexpectedState",
        "refund:[Refund]",
        "refund:AlreadyRefunded",
        "refund:RefundTooLarge",
        "refund:NothingToRefund",
    ];
    for w in wanted {
        assert!(stats.get(w).copied().unwrap_or(0) > 0, "never reached {w}; stats {stats:#?}");
    }
    for c in ["usd", "jpy", "kwd"] {
        for m in ["Automatic", "Manual"] {
            for s in ["succeeded", "canceled"] {
                let k = format!("{c}:{m}:{s}");
                assert!(seen.contains(&k), "never ended in {k}; seen {seen:?}");
            }
        }
    }
}
