//! The double-entry ledger: chart of accounts, balanced postings, and the audit that
//! `paywarden ledger verify` runs.
//!
//! Every account is kept per merchant and currency. Amounts are signed minor units, debit
//! positive, credit negative, so a posting balances when its legs sum to zero and the whole
//! ledger balances when every currency sums to zero.
//!
//! | movement | legs |
//! |---|---|
//! | authorize A | `authorization_holds` +A, `merchant_pending` −A |
//! | capture C | `authorization_holds` −C, `merchant_pending` +C, `acquirer_receivable` +C, `merchant_balance` −C |
//! | release R (uncaptured rest, cancel) | `authorization_holds` −R, `merchant_pending` +R |
//! | refund F | `merchant_balance` +F, `acquirer_receivable` −F |

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::money::Currency;
use crate::payment::{PaymentIntent, Status};
use crate::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Account {
    /// Funds the issuer has reserved for us, not yet captured.
    AuthorizationHolds,
    /// What the merchant will be owed if the holds are captured.
    MerchantPending,
    /// Captured funds the acquirer owes us, net of refunds.
    AcquirerReceivable,
    /// What we owe the merchant for captured payments, net of refunds.
    MerchantBalance,
}

impl Account {
    pub const ALL: [Account; 4] =
        [Account::AuthorizationHolds, Account::MerchantPending, Account::AcquirerReceivable, Account::MerchantBalance];

    pub fn as_str(self) -> &'static str {
        match self {
            Account::AuthorizationHolds => "authorization_holds",
            Account::MerchantPending => "merchant_pending",
            Account::AcquirerReceivable => "acquirer_receivable",
            Account::MerchantBalance => "merchant_balance",
        }
    }

    pub fn parse(s: &str) -> Option<Account> {
        Account::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostingKind {
    Authorize,
    Capture,
    Release,
    Refund,
}

impl PostingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PostingKind::Authorize => "authorize",
            PostingKind::Capture => "capture",
            PostingKind::Release => "release",
            PostingKind::Refund => "refund",
        }
    }

    pub fn parse(s: &str) -> Option<PostingKind> {
        [PostingKind::Authorize, PostingKind::Capture, PostingKind::Release, PostingKind::Refund]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    pub account: Account,
    pub amount: i64,
}

/// One balanced money movement for one payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub id: String,
    pub merchant: String,
    pub currency: Currency,
    pub payment_intent: String,
    pub kind: PostingKind,
    pub legs: Vec<Leg>,
    pub created: Timestamp,
}

impl Posting {
    /// Builds a posting; its legs must balance (checked here, and again by the audit after
    /// every read, so a bug on either side of the store is caught).
    pub fn new(
        id: String,
        merchant: &str,
        currency: Currency,
        payment_intent: &str,
        kind: PostingKind,
        legs: &[(Account, i64)],
        created: Timestamp,
    ) -> Posting {
        let sum: i128 = legs.iter().map(|(_, a)| *a as i128).sum();
        assert_eq!(sum, 0, "unbalanced posting {id}: {legs:?}");
        assert!(legs.iter().all(|(_, a)| *a != 0), "zero leg in posting {id}");
        Posting {
            id,
            merchant: merchant.to_string(),
            currency,
            payment_intent: payment_intent.to_string(),
            kind,
            legs: legs.iter().map(|&(account, amount)| Leg { account, amount }).collect(),
            created,
        }
    }
}

/// Sums of one payment's legs per account, as recomputed from stored entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PaymentBalances {
    pub authorization_holds: i128,
    pub merchant_pending: i128,
    pub acquirer_receivable: i128,
    pub merchant_balance: i128,
    /// Distinct postings recorded for the payment.
    pub postings: u64,
    /// Legs recorded in a currency other than the payment's (always a corruption).
    pub other_currency_legs: u64,
}

impl PaymentBalances {
    pub fn add(&mut self, account: Account, amount: i128) {
        match account {
            Account::AuthorizationHolds => self.authorization_holds += amount,
            Account::MerchantPending => self.merchant_pending += amount,
            Account::AcquirerReceivable => self.acquirer_receivable += amount,
            Account::MerchantBalance => self.merchant_balance += amount,
        }
    }
}

/// One broken invariant, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

/// Recomputes every invariant from stored facts; fed by the store, one fact at a time, so
/// memory stays bounded by the number of accounts, not of entries.
#[derive(Debug, Default)]
pub struct Audit {
    violations: Vec<Violation>,
    violations_total: u64,
    postings: u64,
    payments: u64,
    refunds: u64,
    currency_totals: BTreeMap<Currency, i128>,
    accounts: BTreeMap<(String, Currency, Account), i128>,
}

impl Audit {
    /// Violations kept verbatim for the report; the rest are counted.
    pub const VIOLATIONS_SHOWN_MAX: usize = 100;

    pub fn new() -> Audit {
        Audit::default()
    }

    fn violate(&mut self, text: String) {
        self.violations_total += 1;
        if self.violations.len() < Self::VIOLATIONS_SHOWN_MAX {
            self.violations.push(Violation(text));
        }
    }

    /// A posting's legs summed: must be zero, and it must have at least two legs.
    pub fn posting(&mut self, id: &str, currency: Currency, legs: u64, sum: i128) {
        self.postings += 1;
        if sum != 0 {
            self.violate(format!("posting {id} does not balance: its legs sum to {}", currency.display(sum)));
        }
        if legs < 2 {
            self.violate(format!("posting {id} has {legs} leg(s); a posting needs at least two"));
        }
    }

    /// An account's balance for one merchant and currency.
    pub fn account(&mut self, merchant: &str, currency: Currency, account: Account, balance: i128) {
        *self.currency_totals.entry(currency).or_default() += balance;
        *self.accounts.entry((merchant.to_string(), currency, account)).or_default() += balance;
    }

    /// One payment, its recomputed balances and the sum of its refund objects.
    pub fn payment(&mut self, pi: &PaymentIntent, b: &PaymentBalances, refunds_total: u64, refunds: u64) {
        self.payments += 1;
        self.refunds += refunds;
        let id = &pi.id;
        let c = pi.currency;
        let net = pi.amount_received as i128 - pi.amount_refunded as i128;
        let mut check = |ok: bool, what: String| {
            if !ok {
                self.violations_total += 1;
                if self.violations.len() < Self::VIOLATIONS_SHOWN_MAX {
                    self.violations.push(Violation(format!("{id}: {what}")));
                }
            }
        };
        check(
            b.authorization_holds == pi.amount_capturable as i128,
            format!("holds {} but amount_capturable is {}", c.display(b.authorization_holds), c.display(pi.amount_capturable as i128)),
        );
        check(
            b.merchant_pending == -b.authorization_holds,
            format!("merchant_pending {} does not mirror holds {}", c.display(b.merchant_pending), c.display(b.authorization_holds)),
        );
        check(
            b.acquirer_receivable == net,
            format!("acquirer_receivable {} but captured minus refunded is {}", c.display(b.acquirer_receivable), c.display(net)),
        );
        check(
            b.merchant_balance == -net,
            format!("merchant_balance {} but the merchant is owed {}", c.display(b.merchant_balance), c.display(net)),
        );
        check(
            pi.amount_refunded <= pi.amount_received,
            format!("refunded {} exceeds captured {}", c.display(pi.amount_refunded as i128), c.display(pi.amount_received as i128)),
        );
        check(
            refunds_total == pi.amount_refunded,
            format!("refund objects total {} but the intent records {}", c.display(refunds_total as i128), c.display(pi.amount_refunded as i128)),
        );
        check(
            b.postings == pi.postings as u64,
            format!("{} posting(s) stored but the intent records {}", b.postings, pi.postings),
        );
        check(
            b.other_currency_legs == 0,
            format!("{} ledger leg(s) in a currency other than the payment's {c}", b.other_currency_legs),
        );
        check(pi.amount_received <= pi.amount.get(), format!("received {} exceeds the amount {}", pi.amount_received, pi.amount.get()));
        let state_ok = match pi.status {
            Status::Succeeded => pi.amount_received > 0 && pi.amount_capturable == 0,
            Status::RequiresCapture => pi.amount_capturable > 0 && pi.amount_received == 0,
            _ => pi.amount_capturable == 0 && pi.amount_received == 0,
        };
        check(
            state_ok,
            format!(
                "status {} with amount_capturable {} and amount_received {}",
                pi.status.as_str(),
                pi.amount_capturable,
                pi.amount_received
            ),
        );
    }

    /// A stored fact that has no place in the books (an entry for an unknown payment, say).
    pub fn orphan(&mut self, what: String) {
        self.violate(what);
    }

    pub fn finish(mut self) -> AuditReport {
        let totals: Vec<(Currency, i128)> = self.currency_totals.iter().map(|(c, t)| (*c, *t)).collect();
        for (c, t) in &totals {
            if *t != 0 {
                self.violate(format!("{c}: all accounts sum to {}, not zero", c.display(*t)));
            }
        }
        AuditReport {
            postings: self.postings,
            payments: self.payments,
            refunds: self.refunds,
            currency_totals: totals,
            accounts: self.accounts.into_iter().collect(),
            violations: self.violations,
            violations_total: self.violations_total,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuditReport {
    pub postings: u64,
    pub payments: u64,
    pub refunds: u64,
    pub currency_totals: Vec<(Currency, i128)>,
    pub accounts: Vec<((String, Currency, Account), i128)>,
    pub violations: Vec<Violation>,
    pub violations_total: u64,
}

impl AuditReport {
    pub fn balanced(&self) -> bool {
        self.violations_total == 0
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "ledger: {} postings, {} payments, {} refunds checked", self.postings, self.payments, self.refunds)?;
        for (c, t) in &self.currency_totals {
            writeln!(f, "  {c}: sum of all accounts {} {}", c.display(*t), if *t == 0 { "ok" } else { "UNBALANCED" })?;
        }
        let merchants: std::collections::BTreeSet<&String> = self.accounts.iter().map(|((m, _, _), _)| m).collect();
        writeln!(f, "  {} merchant(s), {} account balance(s)", merchants.len(), self.accounts.len())?;
        for ((m, c, a), b) in self.accounts.iter().take(40) {
            writeln!(f, "    {m} {c} {:<20} {}", a.as_str(), c.display(*b))?;
        }
        if self.accounts.len() > 40 {
            writeln!(f, "    ... {} more", self.accounts.len() - 40)?;
        }
        if self.balanced() {
            writeln!(f, "result: BALANCED (every posting sums to zero, every currency sums to zero, every payment's postings match its state)")
        } else {
            writeln!(f, "result: {} VIOLATION(S)", self.violations_total)?;
            for v in &self.violations {
                writeln!(f, "  - {}", v.0)?;
            }
            if self.violations_total > self.violations.len() as u64 {
                writeln!(f, "  ... and {} more", self.violations_total - self.violations.len() as u64)?;
            }
            Ok(())
        }
    }
}
