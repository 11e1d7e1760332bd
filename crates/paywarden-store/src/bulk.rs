//! The writer's fast path: a whole group of batches in a fixed number of statements.
//!
//! Issuing every row of every batch as its own statement costs a round trip to SQLite's
//! worker thread per row; at a few dozen rows per payment that, not the fsync, bounds
//! throughput. Here the writer first checks each batch against the stored state (intent
//! versions, live idempotency keys, balanced postings) and against the batches before it in
//! the group, in memory; a batch that fails is left out whole and answered with its error.
//! Then every table gets one multi-row statement (`VALUES (?, ..), (?, ..)`, chunked under
//! SQLite's bound-value limit) that inserts or updates all accepted rows at once; the two
//! look-ups that feed the checks take their keys as one JSON array (`json_each`). The
//! statement count per group is constant, so a group of 64 payments costs about what one did.
//!
//! Anything the checks did not foresee (a unique id that collides, a charge id owned by another
//! merchant) makes a statement fail or change fewer rows than expected; the caller then rolls
//! the group back and replays it batch by batch under savepoints, which gives each batch its
//! own exact outcome. Both paths run in one transaction and commit with one fsync.
//!
//! The bulk statements are `INSERT OR ROLLBACK` / `UPDATE OR ROLLBACK`: a constraint that fails
//! ends the whole transaction, which the fallback above does anyway. With the default `ABORT`,
//! SQLite must be able to undo just the failing statement, so it copies every page a
//! multi-row statement touches into a statement journal first (a temporary file once it
//! passes 64 KiB): work on the writer's serial path that this design never uses.

use std::collections::HashMap;

use paywarden_core::{Charge, PaymentIntent};
use serde_json::{Value, json};
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
            Fallback::Unexpected(table) => {
                write!(f, "{table} changed another number of rows than checked")
            }
        }
    }
}

impl From<sqlx::Error> for Fallback {
    fn from(e: sqlx::Error) -> Self {
        Fallback::Sql(e)
    }
}

/// Groups with merchants, keys, webhook endpoint changes or delivery claims are rare (`keys
/// create`, the endpoints API, the delivery loop as it has room to send) and take the slow path.
pub(crate) fn eligible(batches: &[WriteBatch]) -> bool {
    batches.iter().flat_map(|b| &b.ops).all(|op| {
        !matches!(
            op,
            Write::Merchant(_)
                | Write::ApiKey(_)
                | Write::WebhookEndpoint(_)
                | Write::DeleteWebhookEndpoint { .. }
                | Write::ClaimDeliveries { .. }
        )
    })
}

/// One value bound to a statement.
enum Arg {
    Text(String),
    Int(i64),
    Blob(Vec<u8>),
    Null,
}

impl From<&str> for Arg {
    fn from(s: &str) -> Arg {
        Arg::Text(s.to_string())
    }
}
impl From<String> for Arg {
    fn from(s: String) -> Arg {
        Arg::Text(s)
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::Int(v)
    }
}

/// Converts a stored count to a column value; a count past i64 is a corrupt object.
fn int(what: &str, v: u64) -> Result<Arg, WriteError> {
    i64::try_from(v).map(Arg::Int).map_err(|_| {
        WriteError::Store(StoreError::Corrupt(format!(
            "{what} {v} does not fit a signed 64-bit column"
        )))
    })
}

#[derive(Default)]
struct Rows {
    payment_methods: Vec<Vec<Arg>>,
    /// Intents in first-seen order, with whether the group inserts them, and their last state.
    intent_order: Vec<String>,
    intents: HashMap<String, (bool, PaymentIntent)>,
    charge_order: Vec<String>,
    charges: HashMap<String, Charge>,
    refunds: Vec<Vec<Arg>>,
    ledger: Vec<Vec<Arg>>,
    idempotency: HashMap<(String, String), Vec<Arg>>,
    idempotency_order: Vec<(String, String)>,
    events: Vec<Vec<Arg>>,
    deliveries: Vec<Vec<Arg>>,
}

/// Stored state the checks need: intent (merchant, version), idempotency key creation time.
struct Known {
    intents: HashMap<String, (String, u64)>,
    keys: HashMap<(String, String), i64>,
}

pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    batches: &[WriteBatch],
) -> Result<Vec<Result<(), WriteError>>, Fallback> {
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

async fn load_known(
    conn: &mut SqliteConnection,
    batches: &[WriteBatch],
) -> Result<Known, Fallback> {
    let mut intent_ids = Vec::new();
    let mut keys = Vec::new();
    for op in batches.iter().flat_map(|b| &b.ops) {
        match op {
            Write::InsertIntent(pi) | Write::UpdateIntent(pi) => intent_ids.push(json!(pi.id)),
            Write::Idempotency { record, .. } => keys.push(json!([record.merchant, record.key])),
            _ => {}
        }
    }
    let mut known = Known {
        intents: HashMap::new(),
        keys: HashMap::new(),
    };
    if !intent_ids.is_empty() {
        let found = sqlx::query(
            "SELECT id, merchant_id, version FROM payment_intents WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(Value::Array(intent_ids).to_string())
        .fetch_all(&mut *conn)
        .await?;
        for r in found {
            let version: i64 = r.try_get(2)?;
            known
                .intents
                .insert(r.try_get(0)?, (r.try_get(1)?, version as u64));
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
            known
                .keys
                .insert((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?);
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
                    None => known
                        .intents
                        .get(&pi.id)
                        .filter(|(m, _)| *m == pi.merchant)
                        .map(|(_, v)| *v),
                };
                if pi.version == 0 || current != Some(pi.version - 1) {
                    return Err(WriteError::Conflict(ConflictKind::IntentVersion));
                }
                local.insert(&pi.id, pi.version);
            }
            Write::Idempotency {
                record,
                replaces_before,
            } => {
                if let Some(created) = known
                    .keys
                    .get(&(record.merchant.clone(), record.key.clone()))
                    && *created >= *replaces_before
                {
                    return Err(WriteError::Conflict(ConflictKind::IdempotencyKey));
                }
            }
            Write::Postings(ps) => {
                for p in ps {
                    crate::sqlite::check_posting(p)?;
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
                known
                    .intents
                    .insert(pi.id.clone(), (pi.merchant.clone(), pi.version));
            }
            Write::Idempotency { record, .. } => {
                known.keys.insert(
                    (record.merchant.clone(), record.key.clone()),
                    record.created,
                );
            }
            _ => {}
        }
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Result<String, WriteError> {
    serde_json::to_string(v)
        .map_err(|e| WriteError::Store(StoreError::Corrupt(format!("cannot encode: {e}"))))
}

/// Adds an accepted batch's rows, whole or not at all: its payment methods and refunds are
/// encoded before anything is staged. Intents and charges are encoded in [`write`], once per
/// group for their last state; an encoding failure there sends the group to the slow path.
fn stage(batch: &WriteBatch, rows: &mut Rows) -> Result<(), WriteError> {
    let mut pms = Vec::new();
    let mut refunds = Vec::new();
    let mut ledger = Vec::new();
    let mut keys = Vec::new();
    let mut events = Vec::new();
    let mut deliveries = Vec::new();
    for op in &batch.ops {
        match op {
            Write::Event(e) => {
                events.push(vec![
                    e.id.as_str().into(),
                    e.merchant.as_str().into(),
                    e.kind.as_str().into(),
                    e.created.into(),
                    e.json.as_str().into(),
                ]);
            }
            Write::Delivery(d) => deliveries.push(vec![
                d.endpoint.as_str().into(),
                d.event.as_str().into(),
                d.merchant.as_str().into(),
                d.state.as_str().into(),
                i64::from(d.attempts).into(),
                d.next_attempt_ms.into(),
                d.last_attempt_ms.map_or(Arg::Null, Arg::Int),
                d.last_status.map_or(Arg::Null, |s| Arg::Int(i64::from(s))),
                d.last_error.clone().map_or(Arg::Null, Arg::Text),
            ]),
            // Not eligible for this path (see `eligible`).
            Write::WebhookEndpoint(_)
            | Write::DeleteWebhookEndpoint { .. }
            | Write::ClaimDeliveries { .. } => {}
            Write::PaymentMethod(pm) => pms.push(vec![
                pm.id.as_str().into(),
                pm.merchant.as_str().into(),
                pm.created.into(),
                encode(pm)?.into(),
            ]),
            Write::InsertRefund(r) => refunds.push(vec![
                r.id.as_str().into(),
                r.merchant.as_str().into(),
                r.payment_intent.as_str().into(),
                int("refund amount", r.amount)?,
                r.created.into(),
                encode(r)?.into(),
            ]),
            Write::Postings(ps) => {
                for p in ps {
                    for (i, leg) in p.legs.iter().enumerate() {
                        ledger.push(vec![
                            p.id.as_str().into(),
                            (i as i64).into(),
                            p.merchant.as_str().into(),
                            p.currency.code().into(),
                            leg.account.as_str().into(),
                            leg.amount.into(),
                            p.payment_intent.as_str().into(),
                            p.kind.as_str().into(),
                            p.created.into(),
                        ]);
                    }
                }
            }
            Write::Idempotency { record, .. } => keys.push((
                (record.merchant.clone(), record.key.clone()),
                vec![
                    record.merchant.as_str().into(),
                    record.key.as_str().into(),
                    Arg::Blob(record.request_hash.to_vec()),
                    i64::from(record.status).into(),
                    Arg::Blob(record.body.clone()),
                    record.created.into(),
                ],
            )),
            // Encoded in `write`, once per group for their last state.
            Write::InsertIntent(_)
            | Write::UpdateIntent(_)
            | Write::Charge(_)
            | Write::Merchant(_)
            | Write::ApiKey(_) => {}
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
            Write::Charge(c) if rows.charges.insert(c.id.clone(), c.clone()).is_none() => {
                rows.charge_order.push(c.id.clone());
            }
            _ => {}
        }
    }
    rows.payment_methods.extend(pms);
    rows.events.extend(events);
    rows.deliveries.extend(deliveries);
    rows.refunds.extend(refunds);
    rows.ledger.extend(ledger);
    for (k, v) in keys {
        if rows.idempotency.insert(k.clone(), v).is_none() {
            rows.idempotency_order.push(k);
        }
    }
    Ok(())
}

/// SQLite's limit on bound values in one statement (SQLITE_MAX_VARIABLE_NUMBER).
const BOUND_VALUES_MAX: usize = 32_766;

/// Runs `head (?,..),(?,..) tail` over all rows, in chunks that respect [`BOUND_VALUES_MAX`],
/// and checks that every row was written.
async fn run(
    conn: &mut SqliteConnection,
    head: &str,
    tail: &str,
    cols: usize,
    rows: Vec<Vec<Arg>>,
    what: &'static str,
) -> Result<(), Fallback> {
    let per_statement = (BOUND_VALUES_MAX / cols).max(1);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Arg>> = rows.by_ref().take(per_statement).collect();
        let tuple = format!("({})", vec!["?"; cols].join(","));
        let sql = format!(
            "{head}{}{tail}",
            vec![tuple.as_str(); chunk.len()].join(",")
        );
        let n = chunk.len() as u64;
        let mut q = sqlx::query(&sql);
        for arg in chunk.into_iter().flatten() {
            q = match arg {
                Arg::Text(s) => q.bind(s),
                Arg::Int(v) => q.bind(v),
                Arg::Blob(b) => q.bind(b),
                Arg::Null => q.bind(None::<i64>),
            };
        }
        if q.execute(&mut *conn).await?.rows_affected() != n {
            return Err(Fallback::Unexpected(what));
        }
    }
    Ok(())
}

async fn write(conn: &mut SqliteConnection, mut rows: Rows) -> Result<(), Fallback> {
    let enc = |r: Result<String, WriteError>| r.map_err(|_| Fallback::Unexpected("encoding"));
    let mut inserts = Vec::new();
    let mut updates = Vec::new();
    for id in &rows.intent_order {
        let Some((insert, pi)) = rows.intents.remove(id) else {
            continue;
        };
        let version =
            i64::try_from(pi.version).map_err(|_| Fallback::Unexpected("intent version"))?;
        let data = enc(encode(&pi))?;
        if insert {
            inserts.push(vec![
                pi.id.into(),
                pi.merchant.into(),
                pi.created.into(),
                version.into(),
                pi.status.as_str().into(),
                data.into(),
            ]);
        } else {
            updates.push(vec![
                pi.id.into(),
                pi.merchant.into(),
                version.into(),
                pi.status.as_str().into(),
                data.into(),
            ]);
        }
    }
    let mut charges = Vec::new();
    for id in &rows.charge_order {
        if let Some(c) = rows.charges.remove(id) {
            let data = enc(encode(&c))?;
            charges.push(vec![
                c.id.into(),
                c.merchant.into(),
                c.created.into(),
                data.into(),
            ]);
        }
    }
    let keys: Vec<Vec<Arg>> = rows
        .idempotency_order
        .iter()
        .filter_map(|k| rows.idempotency.remove(k))
        .collect();

    run(
        conn,
        "INSERT OR ROLLBACK INTO payment_methods (id, merchant_id, created, data) VALUES ",
        "",
        4,
        rows.payment_methods,
        "payment_methods",
    )
    .await?;
    run(
        conn,
        "INSERT OR ROLLBACK INTO payment_intents (id, merchant_id, created, version, status, data) VALUES ",
        "",
        6,
        inserts,
        "payment_intents insert",
    )
    .await?;
    run(
        conn,
        "UPDATE OR ROLLBACK payment_intents SET version = v.column3, status = v.column4, data = v.column5 FROM (VALUES ",
        ") AS v WHERE payment_intents.id = v.column1 AND payment_intents.merchant_id = v.column2",
        5,
        updates,
        "payment_intents update",
    )
    .await?;
    run(
        conn,
        "INSERT OR ROLLBACK INTO charges (id, merchant_id, created, data) VALUES ",
        " ON CONFLICT (id) DO UPDATE SET data = excluded.data WHERE charges.merchant_id = excluded.merchant_id",
        4,
        charges,
        "charges",
    )
    .await?;
    run(
        conn,
        "INSERT OR ROLLBACK INTO refunds (id, merchant_id, payment_intent, amount, created, data) VALUES ",
        "",
        6,
        rows.refunds,
        "refunds",
    )
    .await?;
    run(
        conn,
        "INSERT OR ROLLBACK INTO ledger_entries (posting_id, leg, merchant_id, currency, account, amount, payment_intent, kind, created) VALUES ",
        "",
        9,
        rows.ledger,
        "ledger_entries",
    )
    .await?;
    run(
        conn,
        "INSERT OR ROLLBACK INTO idempotency_keys (merchant_id, key, request_hash, status, body, created) VALUES ",
        " ON CONFLICT (merchant_id, key) DO UPDATE SET request_hash = excluded.request_hash, status = excluded.status, \
           body = excluded.body, created = excluded.created",
        6,
        keys,
        "idempotency_keys",
    )
    .await?;
    run(
        conn,
        "INSERT OR ROLLBACK INTO events (id, merchant_id, type, created, data) VALUES ",
        "",
        5,
        rows.events,
        "events",
    )
    .await?;
    // A delivery whose endpoint was deleted meanwhile changes no row: the check sends the
    // group to the slow path, where that is no error.
    run(
        conn,
        "UPDATE OR ROLLBACK webhook_deliveries SET state = v.column4, attempts = v.column5, next_attempt_at = v.column6,            last_attempt_at = v.column7, last_status = v.column8, last_error = v.column9 FROM (VALUES ",
        ") AS v WHERE webhook_deliveries.endpoint_id = v.column1 AND webhook_deliveries.event_id = v.column2            AND webhook_deliveries.merchant_id = v.column3",
        9,
        rows.deliveries,
        "webhook_deliveries update",
    )
    .await?;
    Ok(())
}
