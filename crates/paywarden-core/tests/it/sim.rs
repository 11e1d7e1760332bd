//! A tiny in-memory "store" driving the core, a model it is checked against after every
//! operation, and the way a store feeds the ledger audit.

use std::collections::{BTreeMap, HashSet};

use paywarden_core::ledger::{Audit, AuditReport, PaymentBalances};
use paywarden_core::payment::{IntentUpdate, NewIntent};
use paywarden_core::{
    Account, Amount, AuthOutcome, CancellationReason, CaptureMethod, Charge, ChargeStatus, Currency, Decline,
    Metadata, PaymentIntent, Posting, PostingKind, Refund, StateError, Status, Timestamp,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::support::{check, check_eq};

pub const MAX_INTENTS: usize = 5;
pub const MERCHANTS: [&str; 2] = ["acct_a", "acct_b"];

pub fn currencies() -> [Currency; 3] {
    [Currency::USD, Currency::JPY, Currency::KWD]
}

/// How an op chooses the amount to capture or refund, relative to what is available.
#[derive(Debug, Clone, Copy)]
pub enum Pick {
    /// No amount: the core's default (all that is capturable / refundable).
    Default,
    /// Something in 1..available (1 when only 1 is available).
    Partial(u32),
    /// Exactly what is available.
    Full,
    /// What is available plus this much (clamped to Amount::MAX).
    TooMuch(u64),
}

#[derive(Debug, Clone)]
pub enum Op {
    Create { merchant: usize, currency: usize, amount: u64, capture: CaptureMethod, with_pm: bool },
    Update { pi: usize, amount: Option<u64>, capture: Option<CaptureMethod>, attach_pm: bool, metadata: Vec<(String, String)> },
    Confirm { pi: usize, pass_pm: bool, approved: bool },
    Capture { pi: usize, pick: Pick },
    Cancel { pi: usize, reason: Option<CancellationReason> },
    Refund { pi: usize, pick: Pick },
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 1u64..=20_000,
        1 => Just(1u64),
        1 => Just(Amount::MAX),
        1 => 1u64..=Amount::MAX,
    ]
}

fn capture_method() -> impl Strategy<Value = CaptureMethod> {
    prop_oneof![Just(CaptureMethod::Automatic), Just(CaptureMethod::Manual)]
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        Just(Pick::Default),
        any::<u32>().prop_map(Pick::Partial),
        Just(Pick::Full),
        (1u64..=1_000).prop_map(Pick::TooMuch),
    ]
}

fn reason() -> impl Strategy<Value = Option<CancellationReason>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(CancellationReason::Duplicate)),
        1 => Just(Some(CancellationReason::Fraudulent)),
        1 => Just(Some(CancellationReason::RequestedByCustomer)),
        1 => Just(Some(CancellationReason::Abandoned)),
    ]
}

/// A few small metadata pairs (an empty value unsets), now and then with one pair past a limit.
fn metadata_update() -> impl Strategy<Value = Vec<(String, String)>> {
    let pair = (
        prop_oneof![Just("a".to_string()), Just("b".to_string()), Just("order_id".to_string())],
        prop_oneof![Just(String::new()), "[a-z0-9]{1,8}"],
    );
    let bad = prop_oneof![
        6 => Just(None),
        1 => Just(Some(("k".repeat(41), "v".to_string()))),
        1 => Just(Some(("k".to_string(), "v".repeat(501)))),
        1 => Just(Some((String::new(), "v".to_string()))),
    ];
    (prop::collection::vec(pair, 0..3), bad, any::<prop::sample::Index>()).prop_map(|(mut pairs, bad, at)| {
        if let Some(b) = bad {
            let i = at.index(pairs.len() + 1);
            pairs.insert(i, b);
        }
        pairs
    })
}

pub fn op() -> impl Strategy<Value = Op> {
    let pi = 0usize..MAX_INTENTS;
    prop_oneof![
        1 => (0..MERCHANTS.len(), 0..3usize, amount(), capture_method(), any::<bool>()).prop_map(
            |(merchant, currency, amount, capture, with_pm)| Op::Create { merchant, currency, amount, capture, with_pm }
        ),
        2 => (pi.clone(), prop::option::weighted(0.3, amount()), prop::option::weighted(0.3, capture_method()), any::<bool>(), metadata_update())
            .prop_map(|(pi, amount, capture, attach_pm, metadata)| Op::Update { pi, amount, capture, attach_pm, metadata }),
        3 => (pi.clone(), any::<bool>(), prop::bool::weighted(0.75))
            .prop_map(|(pi, pass_pm, approved)| Op::Confirm { pi, pass_pm, approved }),
        2 => (pi.clone(), pick()).prop_map(|(pi, pick)| Op::Capture { pi, pick }),
        1 => (pi.clone(), reason()).prop_map(|(pi, reason)| Op::Cancel { pi, reason }),
        3 => (pi, pick()).prop_map(|(pi, pick)| Op::Refund { pi, pick }),
    ]
}

/// Up to `max` random ops; the runner always starts with one intent.
pub fn ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..=max)
}

/// Why the model expects the core to refuse an op (the `StateError` variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnexpectedState,
    MissingPaymentMethod,
    CaptureTooLarge,
    RefundTooLarge,
    AlreadyRefunded,
    NothingToRefund,
    Metadata,
    Overflow,
}

pub fn refusal(e: &StateError) -> Refusal {
    match e {
        StateError::UnexpectedState { .. } => Refusal::UnexpectedState,
        StateError::MissingPaymentMethod => Refusal::MissingPaymentMethod,
        StateError::CaptureTooLarge { .. } => Refusal::CaptureTooLarge,
        StateError::RefundTooLarge { .. } => Refusal::RefundTooLarge,
        StateError::AlreadyRefunded { .. } => Refusal::AlreadyRefunded,
        StateError::NothingToRefund { .. } => Refusal::NothingToRefund,
        StateError::Metadata(_) => Refusal::Metadata,
        StateError::Overflow => Refusal::Overflow,
    }
}

/// The model of one intent: just enough to predict the core.
#[derive(Debug, Clone)]
pub struct Model {
    pub merchant: String,
    pub currency: Currency,
    pub amount: u64,
    pub capture: CaptureMethod,
    pub has_pm: bool,
    pub status: Status,
    pub capturable: u64,
    pub received: u64,
    pub refunded: u64,
    pub released: bool,
    pub reason: Option<CancellationReason>,
    pub metadata: BTreeMap<String, String>,
}

/// What one intent looks like in the store.
#[derive(Debug, Clone)]
pub struct Stored {
    pub intent: PaymentIntent,
    /// The latest charge, as a store keeps it (replaced by confirm, updated by the others).
    pub charge: Option<Charge>,
    pub refunds: Vec<Refund>,
}

#[derive(Debug, Default)]
pub struct Sim {
    pub intents: Vec<Stored>,
    pub models: Vec<Model>,
    /// Every posting written, in order.
    pub postings: Vec<Posting>,
    posting_ids: HashSet<String>,
    charges: u64,
    refunds: u64,
    pms: u64,
    now: Timestamp,
    /// How often each (op, outcome) happened, to show the generator reaches every branch.
    pub stats: BTreeMap<String, u64>,
}

/// What an accepted op produced, before the store commits it.
struct Accepted {
    intent: PaymentIntent,
    charge: Option<Charge>,
    refund: Option<Refund>,
    postings: Vec<Posting>,
}

fn valid_pair(k: &str, v: &str) -> bool {
    let k = k.chars().count();
    k > 0 && k <= Metadata::KEY_CHARS_MAX && v.chars().count() <= Metadata::VALUE_CHARS_MAX
}

/// The amount an op asks for, given what is available (`base`, at least 1).
fn resolve(pick: Pick, base: u64) -> Option<Amount> {
    let v = match pick {
        Pick::Default => return None,
        Pick::Full => base,
        Pick::Partial(s) if base > 1 => 1 + u64::from(s) % (base - 1),
        Pick::Partial(_) => 1,
        Pick::TooMuch(x) => (base + x).min(Amount::MAX),
    };
    Some(Amount::new(v).expect("resolved amounts are in 1..=MAX"))
}

/// A charge to hand the core when the store has none (the op must be refused anyway).
fn placeholder_charge(pi: &PaymentIntent) -> Charge {
    Charge {
        id: "ch_none".into(),
        merchant: pi.merchant.clone(),
        payment_intent: pi.id.clone(),
        payment_method: "pm_none".into(),
        amount: pi.amount.get(),
        currency: pi.currency,
        status: ChargeStatus::Failed,
        captured: false,
        amount_captured: 0,
        amount_refunded: 0,
        released: false,
        authorization: None,
        failure: None,
        created: 0,
    }
}

impl Sim {
    /// Runs `ops` (after one initial intent), checking every invariant after every op.
    pub fn run(ops: &[Op]) -> Result<Sim, TestCaseError> {
        let mut sim = Sim::default();
        let first = Op::Create { merchant: 0, currency: 0, amount: 1_000, capture: CaptureMethod::Manual, with_pm: true };
        for op in std::iter::once(&first).chain(ops) {
            sim.step(op)?;
        }
        Ok(sim)
    }

    pub fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        self.now += 1;
        let now = self.now;
        let (i, expected, outcome) = match op {
            Op::Create { merchant, currency, amount, capture, with_pm } => {
                if self.intents.len() < MAX_INTENTS {
                    self.create(*merchant, *currency, *amount, *capture, *with_pm)?;
                }
                return self.check_all(op);
            }
            _ if self.intents.is_empty() => return Ok(()),
            Op::Update { pi, amount, capture, attach_pm, metadata } => {
                let i = pi % self.intents.len();
                let m = &self.models[i];
                let expected = if !matches!(m.status, Status::RequiresPaymentMethod | Status::RequiresConfirmation) {
                    Err(Refusal::UnexpectedState)
                } else if !metadata.iter().all(|(k, v)| valid_pair(k, v)) {
                    Err(Refusal::Metadata)
                } else {
                    Ok(vec![])
                };
                let pm = attach_pm.then(|| {
                    self.pms += 1;
                    format!("pm_{}", self.pms)
                });
                let update = IntentUpdate {
                    amount: amount.map(|a| Amount::new(a).unwrap()),
                    currency: None,
                    capture_method: *capture,
                    payment_method: pm,
                    description: None,
                    metadata: metadata.clone(),
                };
                let s = &self.intents[i];
                let outcome = s.intent.update(update).map(|intent| Accepted { intent, charge: s.charge.clone(), refund: None, postings: vec![] });
                (i, expected, outcome)
            }
            Op::Confirm { pi, pass_pm, approved } => {
                let i = pi % self.intents.len();
                let m = &self.models[i];
                let expected = if !matches!(m.status, Status::RequiresPaymentMethod | Status::RequiresConfirmation) {
                    Err(Refusal::UnexpectedState)
                } else if !pass_pm && !m.has_pm {
                    Err(Refusal::MissingPaymentMethod)
                } else if !approved {
                    Ok(vec![])
                } else if m.capture == CaptureMethod::Manual {
                    Ok(vec![PostingKind::Authorize])
                } else {
                    Ok(vec![PostingKind::Authorize, PostingKind::Capture])
                };
                let pm = pass_pm.then(|| "pm_card_visa".to_string());
                let outcome = self.confirm(i, pm.as_deref(), *approved, now)?;
                (i, expected, outcome)
            }
            Op::Capture { pi, pick } => {
                let i = pi % self.intents.len();
                let m = &self.models[i];
                let amount = resolve(*pick, if m.capturable > 0 { m.capturable } else { m.amount });
                let take = amount.map_or(m.capturable, Amount::get);
                let expected = if m.status != Status::RequiresCapture {
                    Err(Refusal::UnexpectedState)
                } else if take > m.capturable {
                    Err(Refusal::CaptureTooLarge)
                } else if take < m.capturable {
                    Ok(vec![PostingKind::Capture, PostingKind::Release])
                } else {
                    Ok(vec![PostingKind::Capture])
                };
                let s = &self.intents[i];
                let charge = s.charge.clone().unwrap_or_else(|| placeholder_charge(&s.intent));
                let outcome = s.intent.capture(amount, &charge, now).map(|(intent, charge, postings)| Accepted {
                    intent,
                    charge: Some(charge),
                    refund: None,
                    postings,
                });
                (i, expected, outcome)
            }
            Op::Cancel { pi, reason } => {
                let i = pi % self.intents.len();
                let m = &self.models[i];
                let expected = if matches!(m.status, Status::Succeeded | Status::Canceled) {
                    Err(Refusal::UnexpectedState)
                } else if m.capturable > 0 {
                    Ok(vec![PostingKind::Release])
                } else {
                    Ok(vec![])
                };
                let s = &self.intents[i];
                let outcome = s.intent.cancel(*reason, s.charge.as_ref(), now).map(|(intent, released, postings)| Accepted {
                    intent,
                    charge: released.or_else(|| s.charge.clone()),
                    refund: None,
                    postings,
                });
                (i, expected, outcome)
            }
            Op::Refund { pi, pick } => {
                let i = pi % self.intents.len();
                let m = &self.models[i];
                let refundable = m.received - m.refunded;
                let amount = resolve(*pick, if refundable > 0 { refundable } else { m.amount });
                let take = amount.map_or(refundable, Amount::get);
                let expected = if m.status != Status::Succeeded {
                    Err(Refusal::NothingToRefund)
                } else if refundable == 0 {
                    Err(Refusal::AlreadyRefunded)
                } else if take > refundable {
                    Err(Refusal::RefundTooLarge)
                } else {
                    Ok(vec![PostingKind::Refund])
                };
                self.refunds += 1;
                let s = &self.intents[i];
                let charge = s.charge.clone().unwrap_or_else(|| placeholder_charge(&s.intent));
                let reason = (self.refunds % 2 == 1).then(|| "requested_by_customer".to_string());
                let outcome = s
                    .intent
                    .refund(&charge, amount, format!("re_{}", self.refunds), reason, Metadata::default(), now)
                    .map(|(intent, charge, refund, posting)| Accepted {
                        intent,
                        charge: Some(charge),
                        refund: Some(refund),
                        postings: vec![posting],
                    });
                (i, expected, outcome)
            }
        };
        self.commit(op, i, expected, outcome, now)?;
        self.check_all(op)
    }

    fn create(&mut self, merchant: usize, currency: usize, amount: u64, capture: CaptureMethod, with_pm: bool) -> Result<(), TestCaseError> {
        let n = self.intents.len();
        let metadata = Metadata::from_pairs([("order_id".to_string(), format!("o{n}"))]).unwrap();
        let pm = with_pm.then(|| {
            self.pms += 1;
            format!("pm_{}", self.pms)
        });
        let intent = PaymentIntent::new(NewIntent {
            id: format!("pi_{n}"),
            merchant: MERCHANTS[merchant].to_string(),
            amount: Amount::new(amount).unwrap(),
            currency: currencies()[currency],
            capture_method: capture,
            payment_method: pm,
            description: None,
            metadata: metadata.clone(),
            created: self.now,
        });
        check_eq(intent.version, 0, || "a new intent starts at version 0".into())?;
        check_eq(intent.postings, 0, || "a new intent has no postings".into())?;
        self.models.push(Model {
            merchant: MERCHANTS[merchant].to_string(),
            currency: currencies()[currency],
            amount,
            capture,
            has_pm: with_pm,
            status: if with_pm { Status::RequiresConfirmation } else { Status::RequiresPaymentMethod },
            capturable: 0,
            received: 0,
            refunded: 0,
            released: false,
            reason: None,
            metadata: metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        });
        self.intents.push(Stored { intent, charge: None, refunds: vec![] });
        Ok(())
    }

    /// Confirms as a store would: `confirm_target` names the method, then the acquirer's
    /// answer is applied.
    fn confirm(&mut self, i: usize, pm: Option<&str>, approved: bool, now: Timestamp) -> Result<Result<Accepted, StateError>, TestCaseError> {
        let s = &self.intents[i];
        let target = match s.intent.confirm_target(pm) {
            Ok(t) => t.to_string(),
            Err(e) => {
                if let StateError::UnexpectedState { .. } = e {
                    // `confirm` itself must refuse the same states, whatever the store did first.
                    let direct = s.intent.confirm("pm_x", AuthOutcome::Approved { authorization: "a".into() }, "ch_x".into(), now);
                    check(matches!(direct, Err(StateError::UnexpectedState { .. })), || {
                        format!("confirm accepted a {:?} intent that confirm_target refused", s.intent.status)
                    })?;
                }
                return Ok(Err(e));
            }
        };
        check_eq(Some(target.as_str()), pm.or(s.intent.payment_method.as_deref()), || "confirm_target picks the given method first".into())?;
        self.charges += 1;
        let charge_id = format!("ch_{}", self.charges);
        let outcome = if approved {
            AuthOutcome::Approved { authorization: format!("auth_{}", self.charges) }
        } else {
            AuthOutcome::Declined(Decline {
                code: "card_declined".into(),
                decline_code: Some("insufficient_funds".into()),
                message: "Your card has insufficient funds.".into(),
            })
        };
        let confirmed = match s.intent.confirm(&target, outcome, charge_id.clone(), now) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        check_eq(confirmed.declined().is_some(), !approved, || "Confirmed::declined reports the decline".into())?;
        let c = &confirmed.charge;
        check_eq(
            (c.id.as_str(), c.amount, c.currency, c.payment_method.as_str()),
            (charge_id.as_str(), s.intent.amount.get(), s.intent.currency, target.as_str()),
            || "the new charge".into(),
        )?;
        check_eq(c.status, if approved { ChargeStatus::Succeeded } else { ChargeStatus::Failed }, || "charge status".into())?;
        if let Some(err) = &confirmed.intent.last_payment_error {
            check_eq((err.charge.as_str(), err.payment_method.as_str()), (charge_id.as_str(), target.as_str()), || "last_payment_error".into())?;
        }
        Ok(Ok(Accepted { intent: confirmed.intent, charge: Some(confirmed.charge), refund: None, postings: confirmed.postings }))
    }

    /// Compares the core's answer to the model's prediction, then commits an accepted op to
    /// the store and the model.
    fn commit(
        &mut self,
        op: &Op,
        i: usize,
        expected: Result<Vec<PostingKind>, Refusal>,
        outcome: Result<Accepted, StateError>,
        now: Timestamp,
    ) -> Result<(), TestCaseError> {
        let before = self.intents[i].clone();
        let tag = match op {
            Op::Create { .. } => "create",
            Op::Update { .. } => "update",
            Op::Confirm { approved: true, .. } => "confirm_approved",
            Op::Confirm { approved: false, .. } => "confirm_declined",
            Op::Capture { .. } => "capture",
            Op::Cancel { .. } => "cancel",
            Op::Refund { .. } => "refund",
        };
        let result = match &expected {
            Ok(kinds) => format!("{kinds:?}"),
            Err(r) => format!("{r:?}"),
        };
        *self.stats.entry(format!("{tag}:{result}")).or_default() += 1;
        let kinds = match (expected, outcome) {
            (Err(want), Err(got)) => {
                check_eq(refusal(&got), want, || format!("{op:?} refused for the wrong reason ({got})"))?;
                // The store keeps what it had: nothing the core returned was committed, and the
                // core (which only borrowed the intent) changed nothing either.
                let after = &self.intents[i];
                check(after.intent == before.intent && after.charge == before.charge, || format!("{op:?} was refused but changed the intent"))?;
                return Ok(());
            }
            (Err(want), Ok(a)) => {
                return Err(TestCaseError::fail(format!("{op:?} on {:?}: model expects {want:?}, core accepted -> {:?}", before.intent, a.intent)));
            }
            (Ok(_), Err(got)) => {
                return Err(TestCaseError::fail(format!("{op:?} on {:?}: model accepts, core refused: {got}", before.intent)));
            }
            (Ok(kinds), Ok(a)) => (kinds, a),
        };
        let (kinds, a) = kinds;
        let old = &before.intent;
        check(a.intent.version > old.version, || format!("{op:?}: version {} -> {} did not increase", old.version, a.intent.version))?;
        check_eq(&a.intent.id, &old.id, || "intent id".into())?;
        check_eq(a.postings.iter().map(|p| p.kind).collect::<Vec<_>>(), kinds, || format!("{op:?}: posting kinds"))?;
        check_eq(a.intent.postings as usize, old.postings as usize + a.postings.len(), || format!("{op:?}: posting counter"))?;
        for (k, p) in a.postings.iter().enumerate() {
            let sum: i128 = p.legs.iter().map(|l| i128::from(l.amount)).sum();
            check(sum == 0, || format!("posting {} does not balance: {:?}", p.id, p.legs))?;
            check(p.legs.len() >= 2 && p.legs.iter().all(|l| l.amount != 0), || format!("posting {} legs {:?}", p.id, p.legs))?;
            check_eq(&p.id, &format!("{}:{}", old.id, old.postings as usize + k), || "posting id".into())?;
            check_eq(
                (p.merchant.as_str(), p.currency, p.payment_intent.as_str(), p.created),
                (old.merchant.as_str(), old.currency, old.id.as_str(), now),
                || format!("posting {} header", p.id),
            )?;
            check(self.posting_ids.insert(p.id.clone()), || format!("posting id {} used twice", p.id))?;
        }
        let m = &mut self.models[i];
        match op {
            Op::Update { amount, capture, attach_pm, metadata, .. } => {
                if let Some(a) = amount {
                    m.amount = *a;
                }
                if let Some(c) = capture {
                    m.capture = *c;
                }
                if *attach_pm {
                    m.has_pm = true;
                    m.status = Status::RequiresConfirmation;
                }
                for (k, v) in metadata {
                    if v.is_empty() {
                        m.metadata.remove(k);
                    } else {
                        m.metadata.insert(k.clone(), v.clone());
                    }
                }
            }
            Op::Confirm { approved: false, .. } => {
                m.status = Status::RequiresPaymentMethod;
                m.has_pm = false;
            }
            Op::Confirm { approved: true, .. } => {
                m.has_pm = true;
                match m.capture {
                    CaptureMethod::Manual => {
                        m.status = Status::RequiresCapture;
                        m.capturable = m.amount;
                    }
                    CaptureMethod::Automatic => {
                        m.status = Status::Succeeded;
                        m.received = m.amount;
                    }
                }
            }
            Op::Capture { .. } => {
                m.status = Status::Succeeded;
                m.received = a.intent.amount_received;
                check(m.received > 0 && m.received <= m.capturable, || format!("captured {} of {}", m.received, m.capturable))?;
                m.capturable = 0;
            }
            Op::Cancel { reason, .. } => {
                m.released = m.capturable > 0;
                m.status = Status::Canceled;
                m.capturable = 0;
                m.reason = *reason;
                check_eq(a.intent.canceled_at, Some(now), || "canceled_at".into())?;
            }
            Op::Refund { .. } => {
                let r = a.refund.as_ref().expect("a refund op yields a refund");
                check(r.amount > 0 && r.amount <= m.received - m.refunded, || format!("refund {} of {} left", r.amount, m.received - m.refunded))?;
                m.refunded += r.amount;
                let ch = a.charge.as_ref().unwrap();
                check_eq(
                    (r.charge.as_str(), r.payment_intent.as_str(), r.currency, r.merchant.as_str()),
                    (ch.id.as_str(), old.id.as_str(), old.currency, old.merchant.as_str()),
                    || "refund header".into(),
                )?;
            }
            Op::Create { .. } => unreachable!(),
        }
        let s = &mut self.intents[i];
        s.intent = a.intent;
        s.charge = a.charge;
        s.refunds.extend(a.refund);
        self.postings.extend(a.postings);
        Ok(())
    }

    /// Invariants of every intent, and agreement with the model.
    fn check_all(&self, op: &Op) -> Result<(), TestCaseError> {
        for (s, m) in self.intents.iter().zip(&self.models) {
            let pi = &s.intent;
            let ctx = || format!("after {op:?}: {pi:?}");
            // The status is legal on its own.
            check(!matches!(pi.status, Status::RequiresAction | Status::Processing), || format!("unreachable status; {}", ctx()))?;
            check(pi.amount_refunded <= pi.amount_received && pi.amount_received <= pi.amount.get(), || format!("refunded <= received <= amount; {}", ctx()))?;
            check(pi.amount_capturable <= pi.amount.get(), || format!("capturable <= amount; {}", ctx()))?;
            check((pi.amount_capturable > 0) == (pi.status == Status::RequiresCapture), || format!("capturable > 0 iff requires_capture; {}", ctx()))?;
            check((pi.amount_received > 0) == (pi.status == Status::Succeeded), || format!("received > 0 iff succeeded; {}", ctx()))?;
            check(pi.canceled_at.is_some() == (pi.status == Status::Canceled), || format!("canceled_at iff canceled; {}", ctx()))?;
            check(pi.cancellation_reason.is_none() || pi.status == Status::Canceled, || format!("reason only when canceled; {}", ctx()))?;
            check(pi.status != Status::RequiresConfirmation || pi.payment_method.is_some(), || format!("requires_confirmation without a method; {}", ctx()))?;
            // The model agrees.
            check_eq(
                (pi.status, pi.amount.get(), pi.amount_capturable, pi.amount_received, pi.amount_refunded),
                (m.status, m.amount, m.capturable, m.received, m.refunded),
                || format!("core vs model (status, amount, capturable, received, refunded); {}", ctx()),
            )?;
            check_eq(
                (pi.currency, pi.merchant.as_str(), pi.capture_method, pi.payment_method.is_some(), pi.cancellation_reason),
                (m.currency, m.merchant.as_str(), m.capture, m.has_pm, m.reason),
                || format!("core vs model (currency, merchant, capture, has pm, reason); {}", ctx()),
            )?;
            let meta: BTreeMap<String, String> = pi.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            check_eq(&meta, &m.metadata, || format!("metadata; {}", ctx()))?;
            // The latest charge agrees with the intent.
            match &s.charge {
                None => check(pi.latest_charge.is_none() && pi.status != Status::RequiresCapture && pi.status != Status::Succeeded, || format!("no charge; {}", ctx()))?,
                Some(c) => {
                    check_eq(Some(&c.id), pi.latest_charge.as_ref(), || format!("latest charge; {}", ctx()))?;
                    check_eq((c.payment_intent.as_str(), c.currency), (pi.id.as_str(), pi.currency), || format!("charge header; {}", ctx()))?;
                    check_eq(c.captured, pi.status == Status::Succeeded, || format!("charge captured; {}", ctx()))?;
                    check_eq((c.amount_captured, c.amount_refunded), (pi.amount_received, pi.amount_refunded), || format!("charge amounts; {}", ctx()))?;
                    check_eq(c.released, m.released, || format!("charge released; {}", ctx()))?;
                    let refunded = (pi.amount_received > 0 && pi.amount_refunded == pi.amount_received) || m.released;
                    check_eq(c.refunded(), refunded, || format!("charge refunded(); {}", ctx()))?;
                    if c.status == ChargeStatus::Failed {
                        check(pi.amount_received == 0 && pi.amount_capturable == 0, || format!("failed charge moved money; {}", ctx()))?;
                    }
                }
            }
            let refunds: u64 = s.refunds.iter().map(|r| r.amount).sum();
            check_eq(refunds, pi.amount_refunded, || format!("refund objects total; {}", ctx()))?;
            // The intent's own postings match its state, as the audit will recompute.
            let b = balances(self.postings.iter().filter(|p| p.payment_intent == pi.id));
            let net = i128::from(pi.amount_received) - i128::from(pi.amount_refunded);
            check_eq(
                (b.authorization_holds, b.merchant_pending, b.acquirer_receivable, b.merchant_balance, b.postings),
                (i128::from(pi.amount_capturable), -i128::from(pi.amount_capturable), net, -net, u64::from(pi.postings)),
                || format!("ledger balances (holds, pending, receivable, balance, count); {}", ctx()),
            )?;
        }
        Ok(())
    }
}

/// One payment's balances, recomputed from its postings as a store would.
pub fn balances<'a>(postings: impl IntoIterator<Item = &'a Posting>) -> PaymentBalances {
    let mut b = PaymentBalances::default();
    for p in postings {
        b.postings += 1;
        for l in &p.legs {
            b.add(l.account, i128::from(l.amount));
        }
    }
    b
}

/// Per (merchant, currency, account) balances over all postings.
pub fn account_balances(postings: &[Posting]) -> BTreeMap<(String, Currency, Account), i128> {
    let mut out = BTreeMap::new();
    for p in postings {
        for l in &p.legs {
            *out.entry((p.merchant.clone(), p.currency, l.account)).or_default() += i128::from(l.amount);
        }
    }
    out
}

/// Feeds stored facts to the audit exactly as a store would: every posting, every account
/// balance, every payment with its recomputed balances and refund objects.
pub fn audit(intents: &[Stored], postings: &[Posting]) -> AuditReport {
    let mut audit = Audit::new();
    for p in postings {
        let sum: i128 = p.legs.iter().map(|l| i128::from(l.amount)).sum();
        audit.posting(&p.id, p.currency, p.legs.len() as u64, sum);
    }
    for ((merchant, currency, account), balance) in account_balances(postings) {
        audit.account(&merchant, currency, account, balance);
    }
    for s in intents {
        let b = balances(postings.iter().filter(|p| p.payment_intent == s.intent.id));
        let total: u64 = s.refunds.iter().map(|r| r.amount).sum();
        audit.payment(&s.intent, &b, total, s.refunds.len() as u64);
    }
    audit.finish()
}
