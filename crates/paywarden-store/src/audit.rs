//! The ledger audit's passes over streamed rows, shared by the backends: each backend runs the
//! queries below (the same SQL on SQLite and PostgreSQL) in one read transaction and hands the
//! row streams here; the checks themselves live in `paywarden_core::ledger::Audit`.

use std::collections::{BTreeMap, BTreeSet};

use futures::{Stream, TryStreamExt};
use paywarden_core::ledger::{Audit, PaymentBalances};
use paywarden_core::{Account, Currency, PaymentIntent};

use crate::StoreError;

/// Every leg in posting order: (posting, merchant, currency, account, amount).
pub(crate) const POSTINGS_SQL: &str = "SELECT posting_id, merchant_id, currency, account, amount FROM ledger_entries ORDER BY posting_id, leg";
type LegRow = (String, String, String, String, i64);

/// Every intent with its refund objects' total and count and each of its legs (NULLs for an
/// intent without legs): (seq, data, refunds total, refunds, posting, account, amount, currency).
pub(crate) const INTENTS_SQL: &str = "SELECT p.seq, p.data, \
       CAST((SELECT COALESCE(SUM(r.amount), 0) FROM refunds r \
         WHERE r.merchant_id = p.merchant_id AND r.payment_intent = p.id) AS BIGINT) AS refunds_total, \
       (SELECT COUNT(*) FROM refunds r \
         WHERE r.merchant_id = p.merchant_id AND r.payment_intent = p.id) AS refunds, \
       e.posting_id, e.account, e.amount, e.currency \
     FROM payment_intents p \
     LEFT JOIN ledger_entries e ON e.payment_intent = p.id AND e.merchant_id = p.merchant_id \
     ORDER BY p.seq";
type IntentRow = (
    i64,
    String,
    i64,
    i64,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
);

/// Legs of unknown payments: (merchant, payment, count).
pub(crate) const ORPHAN_ENTRIES_SQL: &str = "SELECT e.merchant_id, e.payment_intent, COUNT(*) FROM ledger_entries e \
     WHERE NOT EXISTS (SELECT 1 FROM payment_intents p \
                       WHERE p.id = e.payment_intent AND p.merchant_id = e.merchant_id) \
     GROUP BY e.merchant_id, e.payment_intent";

/// Refunds of unknown payments: (refund, merchant, payment).
pub(crate) const ORPHAN_REFUNDS_SQL: &str = "SELECT r.id, r.merchant_id, r.payment_intent FROM refunds r \
     WHERE NOT EXISTS (SELECT 1 FROM payment_intents p \
                       WHERE p.id = r.payment_intent AND p.merchant_id = r.merchant_id)";

/// One posting's legs, accumulated while entries stream past in posting order.
struct PostingSum {
    id: String,
    currency: Option<Currency>,
    mixed_currencies: bool,
    legs: u64,
    sum: i128,
}

impl PostingSum {
    fn new(id: String) -> PostingSum {
        PostingSum {
            id,
            currency: None,
            mixed_currencies: false,
            legs: 0,
            sum: 0,
        }
    }

    fn finish(self, audit: &mut Audit) {
        if self.mixed_currencies {
            audit.orphan(format!(
                "posting {} mixes currencies across its legs",
                self.id
            ));
        }
        match self.currency {
            Some(c) => audit.posting(&self.id, c, self.legs, self.sum),
            None => audit.orphan(format!(
                "posting {} has no leg in a known currency",
                self.id
            )),
        }
    }
}

/// One intent and its entries, accumulated while the joined rows stream past.
struct IntentSum {
    seq: i64,
    intent: Option<PaymentIntent>,
    balances: PaymentBalances,
    postings: BTreeSet<String>,
    refunds_total: i64,
    refunds: i64,
}

impl IntentSum {
    fn finish(mut self, audit: &mut Audit) {
        let Some(pi) = self.intent else { return };
        self.balances.postings = self.postings.len() as u64;
        let refunds_total = u64::try_from(self.refunds_total).unwrap_or_else(|_| {
            audit.orphan(format!(
                "{}: its refund objects total a negative {}",
                pi.id, self.refunds_total
            ));
            0
        });
        let refunds = u64::try_from(self.refunds).unwrap_or(0);
        audit.payment(&pi, &self.balances, refunds_total, refunds);
    }
}

/// Pass 1: every posting's legs, and every account's balance.
pub(crate) async fn postings<S>(mut rows: S, audit: &mut Audit) -> Result<(), StoreError>
where
    S: Stream<Item = Result<LegRow, sqlx::Error>> + Unpin,
{
    let mut accounts: BTreeMap<(String, Currency, Account), i128> = BTreeMap::new();
    let mut current: Option<PostingSum> = None;
    while let Some((posting_id, merchant, code, account_name, amount)) = rows.try_next().await? {
        if current.as_ref().is_none_or(|c| c.id != posting_id)
            && let Some(done) = current.replace(PostingSum::new(posting_id.clone())) {
                done.finish(audit);
            }
        let Some(p) = current.as_mut() else { continue };
        p.legs += 1;
        p.sum += amount as i128;
        let currency = match Currency::parse(&code) {
            Ok(c) => c,
            Err(_) => {
                audit.orphan(format!(
                    "posting {posting_id} has a leg in unknown currency '{code}'"
                ));
                continue;
            }
        };
        match p.currency {
            None => p.currency = Some(currency),
            Some(c) if c != currency => p.mixed_currencies = true,
            Some(_) => {}
        }
        match Account::parse(&account_name) {
            Some(account) => {
                *accounts.entry((merchant, currency, account)).or_default() += amount as i128
            }
            None => audit.orphan(format!(
                "posting {posting_id} has a leg on unknown account '{account_name}'"
            )),
        }
    }
    if let Some(done) = current.take() {
        done.finish(audit);
    }
    for ((merchant, currency, account), balance) in &accounts {
        audit.account(merchant, *currency, *account, *balance);
    }
    Ok(())
}

/// Pass 2: every intent with its entries and the sum of its refund objects.
pub(crate) async fn intents<S>(mut rows: S, audit: &mut Audit) -> Result<(), StoreError>
where
    S: Stream<Item = Result<IntentRow, sqlx::Error>> + Unpin,
{
    let mut current: Option<IntentSum> = None;
    while let Some((
        seq,
        data,
        refunds_total,
        refunds,
        posting_id,
        account_name,
        amount,
        currency,
    )) = rows.try_next().await?
    {
        if current.as_ref().is_none_or(|c| c.seq != seq) {
            let intent = match serde_json::from_str::<PaymentIntent>(&data) {
                Ok(pi) => Some(pi),
                Err(e) => {
                    audit.orphan(format!(
                        "payment intent row {seq}: a stored payment_intent does not parse: {e}"
                    ));
                    None
                }
            };
            let next = IntentSum {
                seq,
                intent,
                balances: PaymentBalances::default(),
                postings: BTreeSet::new(),
                refunds_total,
                refunds,
            };
            if let Some(done) = current.replace(next) {
                done.finish(audit);
            }
        }
        let Some(cur) = current.as_mut() else {
            continue;
        };
        let (Some(posting_id), Some(account_name), Some(amount), Some(currency)) =
            (posting_id, account_name, amount, currency)
        else {
            continue;
        };
        if cur
            .intent
            .as_ref()
            .is_some_and(|pi| pi.currency.code() != currency)
        {
            cur.balances.other_currency_legs += 1;
        }
        // Unknown accounts were reported in pass 1.
        if let Some(account) = Account::parse(&account_name) {
            cur.balances.add(account, amount as i128);
        }
        cur.postings.insert(posting_id);
    }
    if let Some(done) = current.take() {
        done.finish(audit);
    }
    Ok(())
}

/// Pass 3a: ledger entries of payments that do not exist.
pub(crate) async fn orphan_entries<S>(mut rows: S, audit: &mut Audit) -> Result<(), StoreError>
where
    S: Stream<Item = Result<(String, String, i64), sqlx::Error>> + Unpin,
{
    while let Some((merchant, pi, n)) = rows.try_next().await? {
        audit.orphan(format!(
            "{n} ledger entr{} of {merchant} for unknown payment {pi}",
            if n == 1 { "y" } else { "ies" }
        ));
    }
    Ok(())
}

/// Pass 3b: refunds of payments that do not exist.
pub(crate) async fn orphan_refunds<S>(mut rows: S, audit: &mut Audit) -> Result<(), StoreError>
where
    S: Stream<Item = Result<(String, String, String), sqlx::Error>> + Unpin,
{
    while let Some((id, merchant, pi)) = rows.try_next().await? {
        audit.orphan(format!(
            "refund {id} of {merchant} is for unknown payment {pi}"
        ));
    }
    Ok(())
}
