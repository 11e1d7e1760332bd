//! The writer's fast path: a whole group of batches in a fixed number of statements.
//!
//! Issuing every row of every batch as its own statement costs a round trip to SQLite's
//! worker thread per row; at a few dozen rows per payment that, not the fsync, bounds
//! throughput. Here the writer first checks each batch against the stored state (intent
//! versions, live idempotency keys, balanced postings) and against the batches before it in
//! the group, in memory; a batch that fails is left out whole and answered with its error.
//! Then every table gets one statement that inserts or updates all accepted rows at once from a
//! JSON array (`json_each`). The statement count per group is constant, so a group of 64
//! payments costs about what one did.
//!
//! Anything the checks did not foresee (a unique id that collides, a charge id owned by another
//! merchant) makes a statement fail or change fewer rows than expected; the caller then rolls
//! the group back and replays it batch by batch under savepoints, which gives each batch its
//! own exact outcome. Both paths run in one transaction and commit with one fsync.

use std::collections::HashMap;

use paywarden_core::{Charge, PaymentIntent};
use serde_json::{json, Value};
use sqlx::{Row, SqliteConnection};

use crate::{ConflictKind, StoreError, Write, WriteBatch, WriteError};

/// Why the fast path gave up on a group (the slow path takes over).
#[derive(Debug)]
pub(crate) enum Fallback {
    Sql(sqlx::Error),
    /// A statement changed another number of rows than the checks predicted.
    Unexpected(&'static str),
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fallback::Sql(e) => write!(f, "a statement failed: {e}"),
            Fallback::Unexpected(table) => write!(f, "{table} changed another number of rows than checked"),
        }
    }
}

impl From<sqlx::Error> for Fallback {
    fn from(e: sqlx::Error) -> Self {
        Fallback::Sql(e)
    }
}

/// Groups with merchants or keys are rare (`keys create`) and take the slow path.
pub(crate) fn eligible(batches: &[WriteBatch]) -> bool {
    batches.iter().flat_map(|b| &b.ops).all(|op| !matches!(op, Write::Merchant(_) | Write::ApiKey(_)))
}

#[derive(Default)]
struct Rows {
    payment_methods: Vec<Value>,
    /// Intents in first-seen order, with whether the group inserts them, and their last state.
    intent_order: Vec<String>,
    intents: HashMap<String, (bool, PaymentIntent)>,
    charge_order: Vec<String>,
    charges: HashMap<String, Charge>,
    refunds: Vec<Value>,
    ledger: Vec<Value>,
    idempotency: HashMap<(String, String), Value>,
    idempotency_order: Vec<(String, String)>,
}

/// Stored state the checks need: intent (merchant, version), idempotency key creation time.
struct Known {
    intents: HashMap<String, (String, u64)>,
    keys: HashMap<(String, String), i64>,
}

pub(crate) async fn apply(conn: &mut SqliteConnection, batches: &[WriteBatch]) -> Result<Vec<Result<(), WriteError>>, Fallback> {
    let mut known = load_known(conn, batches).await?;
    let mut rows = Rows::default();
    let mut results = Vec::with_capacity(batches.len());
    for batch in batches {
        let outcome = check(batch, &known).and_then(|()| stage(batch, &mut rows));
        if outcome.is_ok() {
            remember(batch, &mut known);
        }
        results.push(outcome);
    }
    write(conn, rows).await?;
    Ok(results)
}

async fn load_known(conn: &mut SqliteConnection, batches: &[WriteBatch]) -> Result<Known, Fallback> {
    let mut intent_ids = Vec::new();
    let mut keys = Vec::new();
    for op in batches.iter().flat_map(|b| &b.ops) {
        match op {
            Write::InsertIntent(pi) | Write::UpdateIntent(pi) => intent_ids.push(json!(pi.id)),
            Write::Idempotency { record, .. } => keys.push(json!([record.merchant, record.key])),
            _ => {}
        }
    }
    let mut known = Known { intents: HashMap::new(), keys: HashMap::new() };
    if !intent_ids.is_empty() {
        let found = sqlx::query(
            "SELECT id, merchant_id, version FROM payment_intents WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(Value::Array(intent_ids).to_string())
        .fetch_all(&mut *conn)
        .await?;
        for r in found {
            let version: i64 = r.try_get(2)?;
            known.intents.insert(r.try_get(0)?, (r.try_get(1)?, version as u64));
        }
    }
    if !keys.is_empty() {
        let found = sqlx::query(
            "SELECT merchant_id, key, created FROM idempotency_keys \
             WHERE (merchant_id, key) IN (SELECT j.value ->> 0, j.value ->> 1 FROM json_each(?1) AS j)",
        )
        .bind(Value::Array(keys).to_string())
        .fetch_all(&mut *conn)
        .await?;
        for r in found {
            known.keys.insert((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?);
        }
    }
    Ok(known)
}

/// Checks one batch against stored state and the accepted batches before it.
fn check(batch: &WriteBatch, known: &Known) -> Result<(), WriteError> {
    // Within one batch an intent may be inserted and then updated.
    let mut local: HashMap<&str, u64> = HashMap::new();
    for op in &batch.ops {
        match op {
            Write::InsertIntent(pi) => {
                if known.intents.contains_key(&pi.id) || local.contains_key(pi.id.as_str()) {
                    return Err(WriteError::Conflict(ConflictKind::Duplicate));
                }
                local.insert(&pi.id, pi.version);
            }
            Write::UpdateIntent(pi) => {
                let current = match local.get(pi.id.as_str()) {
                    Some(v) => Some(*v),
                    None => known.intents.get(&pi.id).filter(|(m, _)| *m == pi.merchant).map(|(_, v)| *v),
                };
                if pi.version == 0 || current != Some(pi.version - 1) {
                    return Err(WriteError::Conflict(ConflictKind::IntentVersion));
                }
                local.insert(&pi.id, pi.version);
            }
            Write::Idempotency { record, replaces_before } => {
                if let Some(created) = known.keys.get(&(record.merchant.clone(), record.key.clone())) {
                    if *created >= *replaces_before {
                        return Err(WriteError::Conflict(ConflictKind::IdempotencyKey));
                    }
                }
            }
            Write::Postings(ps) => {
                for p in ps {
                    let sum: i128 = p.legs.iter().map(|l| l.amount as i128).sum();
                    if sum != 0 || p.legs.len() < 2 {
                        return Err(WriteError::Store(StoreError::Corrupt(format!(
                            "refusing posting {}: {} leg(s) summing to {sum}; a posting needs two or more legs summing to zero",
                            p.id,
                            p.legs.len()
                        ))));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Records what an accepted batch changed, for the checks of the batches after it.
fn remember(batch: &WriteBatch, known: &mut Known) {
    for op in &batch.ops {
        match op {
            Write::InsertIntent(pi) | Write::UpdateIntent(pi) => {
                known.intents.insert(pi.id.clone(), (pi.merchant.clone(), pi.version));
            }
            Write::Idempotency { record, .. } => {
                known.keys.insert((record.merchant.clone(), record.key.clone()), record.created);
            }
            _ => {}
        }
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Result<String, WriteError> {
    serde_json::to_string(v).map_err(|e| WriteError::Store(StoreError::Corrupt(format!("cannot encode: {e}"))))
}

/// Adds an accepted batch's rows. Encoding happens first, so a batch is staged whole or not at all.
fn stage(batch: &WriteBatch, rows: &mut Rows) -> Result<(), WriteError> {
    let mut pms = Vec::new();
    let mut refunds = Vec::new();
    let mut ledger = Vec::new();
    let mut keys = Vec::new();
    for op in &batch.ops {
        match op {
            Write::PaymentMethod(pm) => pms.push(json!([pm.id, pm.merchant, pm.created, encode(pm)?])),
            Write::InsertRefund(r) => refunds.push(json!([r.id, r.merchant, r.payment_intent, r.amount, r.created, encode(r)?])),
            Write::Postings(ps) => {
                for p in ps {
                    for (i, leg) in p.legs.iter().enumerate() {
                        ledger.push(json!([
                            p.id,
                            i,
                            p.merchant,
                            p.currency.code(),
                            leg.account.as_str(),
                            leg.amount,
                            p.payment_intent,
                            p.kind.as_str(),
                            p.created
                        ]));
                    }
                }
            }
            Write::Idempotency { record, .. } => keys.push((
                (record.merchant.clone(), record.key.clone()),
                json!([record.merchant, record.key, hex::encode(record.request_hash), record.status, hex::encode(&record.body), record.created]),
            )),
            Write::InsertIntent(pi) | Write::UpdateIntent(pi) => {
                encode(pi)?;
            }
            Write::Charge(c) => {
                encode(c)?;
            }
            Write::Merchant(_) | Write::ApiKey(_) => {}
        }
    }
    for op in &batch.ops {
        match op {
            Write::InsertIntent(pi) => {
                rows.intent_order.push(pi.id.clone());
                rows.intents.insert(pi.id.clone(), (true, pi.clone()));
            }
            Write::UpdateIntent(pi) => match rows.intents.get_mut(&pi.id) {
                // Updated again later in the group: only the last state is written.
                Some(entry) => entry.1 = pi.clone(),
                None => {
                    rows.intent_order.push(pi.id.clone());
                    rows.intents.insert(pi.id.clone(), (false, pi.clone()));
                }
            },
            Write::Charge(c) => {
                if rows.charges.insert(c.id.clone(), c.clone()).is_none() {
                    rows.charge_order.push(c.id.clone());
                }
            }
            _ => {}
        }
    }
    rows.payment_methods.extend(pms);
    rows.refunds.extend(refunds);
    rows.ledger.extend(ledger);
    for (k, v) in keys {
        if rows.idempotency.insert(k.clone(), v).is_none() {
            rows.idempotency_order.push(k);
        }
    }
    Ok(())
}

async fn run(conn: &mut SqliteConnection, sql: &str, rows: Vec<Value>, what: &'static str) -> Result<(), Fallback> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len() as u64;
    let done = sqlx::query(sql).bind(Value::Array(rows).to_string()).execute(&mut *conn).await?;
    if done.rows_affected() != n {
        return Err(Fallback::Unexpected(what));
    }
    Ok(())
}

async fn write(conn: &mut SqliteConnection, mut rows: Rows) -> Result<(), Fallback> {
    let enc = |r: serde_json::Result<String>| r.map_err(|_| Fallback::Unexpected("encoding"));
    let mut inserts = Vec::new();
    let mut updates = Vec::new();
    for id in &rows.intent_order {
        let Some((insert, pi)) = rows.intents.remove(id) else { continue };
        let row = json!([pi.id, pi.merchant, pi.created, pi.version, pi.status.as_str(), enc(serde_json::to_string(&pi))?]);
        if insert { inserts.push(row) } else { updates.push(row) }
    }
    let mut charges = Vec::new();
    for id in &rows.charge_order {
        if let Some(c) = rows.charges.remove(id) {
            charges.push(json!([c.id, c.merchant, c.created, enc(serde_json::to_string(&c))?]));
        }
    }
    let keys: Vec<Value> = rows.idempotency_order.iter().filter_map(|k| rows.idempotency.remove(k)).collect();

    run(
        conn,
        "INSERT INTO payment_methods (id, merchant_id, created, data) \
         SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3 FROM json_each(?1) AS j ORDER BY j.key",
        rows.payment_methods,
        "payment_methods",
    )
    .await?;
    run(
        conn,
        "INSERT INTO payment_intents (id, merchant_id, created, version, status, data) \
         SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5 \
         FROM json_each(?1) AS j ORDER BY j.key",
        inserts,
        "payment_intents insert",
    )
    .await?;
    run(
        conn,
        "UPDATE payment_intents SET version = j.value ->> 3, status = j.value ->> 4, data = j.value ->> 5 \
         FROM json_each(?1) AS j WHERE payment_intents.id = j.value ->> 0 AND payment_intents.merchant_id = j.value ->> 1",
        updates,
        "payment_intents update",
    )
    .await?;
    run(
        conn,
        "INSERT INTO charges (id, merchant_id, created, data) \
         SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3 FROM json_each(?1) AS j WHERE true ORDER BY j.key \
         ON CONFLICT (id) DO UPDATE SET data = excluded.data WHERE charges.merchant_id = excluded.merchant_id",
        charges,
        "charges",
    )
    .await?;
    run(
        conn,
        "INSERT INTO refunds (id, merchant_id, payment_intent, amount, created, data) \
         SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5 \
         FROM json_each(?1) AS j ORDER BY j.key",
        rows.refunds,
        "refunds",
    )
    .await?;
    run(
        conn,
        "INSERT INTO ledger_entries (posting_id, leg, merchant_id, currency, account, amount, payment_intent, kind, created) \
         SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5, j.value ->> 6, \
                j.value ->> 7, j.value ->> 8 \
         FROM json_each(?1) AS j ORDER BY j.key",
        rows.ledger,
        "ledger_entries",
    )
    .await?;
    run(
        conn,
        "INSERT INTO idempotency_keys (merchant_id, key, request_hash, status, body, created) \
         SELECT j.value ->> 0, j.value ->> 1, unhex(j.value ->> 2), j.value ->> 3, unhex(j.value ->> 4), j.value ->> 5 \
         FROM json_each(?1) AS j WHERE true ORDER BY j.key \
         ON CONFLICT (merchant_id, key) DO UPDATE SET request_hash = excluded.request_hash, status = excluded.status, \
           body = excluded.body, created = excluded.created",
        keys,
        "idempotency_keys",
    )
    .await?;
    Ok(())
}
