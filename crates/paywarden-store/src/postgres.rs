//! The PostgreSQL [`Store`]: for several gateway replicas over one database.
//!
//! # Sessions
//!
//! Every pooled connection sets `synchronous_commit = on` (a commit returns once its WAL is
//! flushed: an acknowledged payment survives a crash of the server) and a `lock_timeout`, and
//! the first one reads `synchronous_commit` back and refuses to start if it did not take. The
//! pool is bounded ([`PgOptions::pool_max`], 10 by default): budget `replicas x pool_max` under
//! the server's `max_connections`.
//!
//! # Writes
//!
//! Each [`WriteBatch`] is one transaction (READ COMMITTED). Correctness across replicas rests
//! on the same conditional writes as on SQLite, which PostgreSQL evaluates against the latest
//! committed row after waiting for its lock: an intent update applies only over the version it
//! was read at ([`ConflictKind::IntentVersion`] otherwise), an idempotency record only where no
//! live one exists ([`ConflictKind::IdempotencyKey`]), ids are unique. So two replicas racing on
//! one capture, one Idempotency-Key or refunds past the captured amount see exactly one win.
//! A deadlock or serialization failure is retried (at most [`RETRIES`] times). Batches in flight
//! are bounded ([`PgOptions::writes_max`]; one more is refused at once with
//! [`WriteError::QueueFull`]); PostgreSQL itself groups concurrent commits into one WAL flush.
//!
//! # Events and delivery order
//!
//! `events.seq` is assigned at insert, and transactions commit in another order than they
//! insert: a delivery cursor over `seq` could pass an event whose transaction commits late. So
//! deliveries follow `events.dseq`, assigned by a sequencer in commit order: one transaction
//! at a time (a transaction-scoped advisory lock; a replica that finds it taken skips its turn)
//! numbers the events it can see that have none yet. A later run only sees events committed
//! later, and numbers them higher; endpoint cursors point into `dseq`.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use paywarden_core::ledger::{Audit, AuditReport};
use paywarden_core::{Charge, PaymentIntent, PaymentMethod, Posting, Refund, Timestamp};
use serde::de::DeserializeOwned;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::schema::{self, AppliedMigration, Backend, MigrationRun, SchemaOptions, SchemaPlan};
use crate::rows::{BacklogRow, DeliveryRow, DueRow, EventRow, IdempotencyRow, MerchantRow, ScannedRow};
use crate::sqlite::{
    CHARGES, EVENTS, PAGE_LIMIT_MAX, PAYMENT_INTENTS, PAYMENT_METHODS, PURGE_CHUNK_ROWS, REFUNDS,
    Table, WEBHOOK_ENDPOINTS, check_posting, decode, encode, event_from_json, to_i64, write_err,
};
use crate::{
    ConflictKind, Delivery, DueDelivery, EventRecord, IdempotencyRecord, Merchant, Page, PageOf,
    Store, StoreError, StoreStats, Unclaimed, WebhookEndpointRecord, Write, WriteBatch, WriteError,
};

/// How many times a batch that hit a deadlock or a serialization failure is tried again.
pub const RETRIES: u32 = 3;

/// The advisory lock key of the events sequencer (an arbitrary constant: "paywarden events").
const SEQUENCER_LOCK: i64 = 0x7061_7977_6172_6465;

/// Most events one sequencer run numbers.
const SEQUENCE_CHUNK: i64 = 10_000;

/// Limits of the PostgreSQL store. Zeroes are raised to 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// Connections this process opens at most (reads and writes). Default 10.
    pub pool_max: u32,
    /// Write batches in flight or waiting for a connection; one more is refused with
    /// [`WriteError::QueueFull`]. Default 1024.
    pub writes_max: usize,
    /// How long a request waits for a pooled connection. Default 10 s.
    pub acquire_timeout: Duration,
    /// How long a statement waits for a row lock before it fails. Default 5 s.
    pub lock_timeout: Duration,
    /// The release label recorded with the migrations this store applies, and any extra
    /// migrations the build carries ([`crate::schema`]).
    pub schema: SchemaOptions,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            pool_max: 10,
            writes_max: 1024,
            acquire_timeout: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(5),
            schema: SchemaOptions::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    batches_committed: AtomicU64,
}

/// The PostgreSQL store: one bounded pool, a transaction per batch.
#[derive(Debug)]
pub struct PgStore {
    pool: PgPool,
    writes: Arc<Semaphore>,
    writes_max: usize,
    pool_max: u32,
    counters: Counters,
}

/// The schema step on a connection of its own, with the pool's `lock_timeout`: a migration
/// that waits on a table lock held by running replicas fails after it instead of queueing
/// every payment behind it.
async fn migrate_with(connect: &PgConnectOptions, opts: &PgOptions) -> Result<MigrationRun, StoreError> {
    let migrations = opts.schema.migrations(Backend::Postgres)?;
    let mut conn = PgConnection::connect_with(connect).await?;
    let lock_ms = opts.lock_timeout.as_millis().clamp(1, i32::MAX as u128);
    conn.execute(format!("SET synchronous_commit = on; SET lock_timeout = {lock_ms}").as_str()).await?;
    let run = schema::migrate(&mut schema::postgres::Postgres(&mut conn), &migrations, &opts.schema.release).await;
    let _ = conn.close().await;
    Ok(run?)
}

/// `postgres://user@host:port/db` without the password, for logs and errors.
pub fn redacted(url: &str) -> String {
    match PgConnectOptions::from_str(url) {
        Ok(o) => format!(
            "postgres://{}@{}:{}/{}",
            o.get_username(),
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("")
        ),
        Err(_) => "postgres://(unparsable URL)".to_string(),
    }
}

impl PgStore {
    /// Connects, checks the session settings and runs the schema step ([`crate::schema`]: one
    /// transaction under an advisory lock, so replicas starting together migrate once). Must
    /// be called inside a Tokio runtime.
    pub async fn open(url: &str, opts: PgOptions) -> Result<PgStore, StoreError> {
        let connect = PgConnectOptions::from_str(url)?;
        let lock_ms = opts.lock_timeout.as_millis().clamp(1, i32::MAX as u128);
        let pool_max = opts.pool_max.max(1);
        let pool = PgPoolOptions::new()
            .max_connections(pool_max)
            .acquire_timeout(opts.acquire_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    conn.execute(
                        format!("SET synchronous_commit = on; SET lock_timeout = {lock_ms}")
                            .as_str(),
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_with(connect.clone())
            .await?;
        let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&pool)
            .await?;
        if sync != "on" {
            return Err(StoreError::Database(sqlx::Error::Configuration(
                format!("postgres refused synchronous_commit=on (it is {sync:?}); acknowledged payments could be lost").into(),
            )));
        }
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&pool)
            .await?;
        info!(database = %redacted(url), server_version = %version, synchronous_commit = %sync, pool_max, lock_timeout_ms = lock_ms as u64, "postgres pool open");
        let run = migrate_with(&connect, &opts).await?;
        crate::sqlite::log_schema(&run);
        let writes_max = opts.writes_max.max(1);
        Ok(PgStore {
            pool,
            writes: Arc::new(Semaphore::new(writes_max)),
            writes_max,
            pool_max,
            counters: Counters::default(),
        })
    }

    /// Runs the schema step only (`paywarden migrate --database`).
    pub async fn migrate(url: &str, opts: &PgOptions) -> Result<MigrationRun, StoreError> {
        migrate_with(&PgConnectOptions::from_str(url)?, opts).await
    }

    /// What this release would find and do on the database (the migrations it would apply,
    /// those it does not know, whether it may run there), without writing anything.
    pub async fn schema_plan(url: &str, schema: &SchemaOptions) -> Result<SchemaPlan, StoreError> {
        let migrations = schema.migrations(Backend::Postgres)?;
        let mut conn = PgConnection::connect_with(&PgConnectOptions::from_str(url)?).await?;
        let plan = schema::inspect(&mut schema::postgres::Postgres(&mut conn), &migrations, &schema.release).await;
        let _ = conn.close().await;
        Ok(plan?)
    }

    /// Closes the pool (waits for connections in use to come back).
    pub async fn close(self) {
        self.pool.close().await;
    }

    async fn get_object<T: DeserializeOwned>(
        &self,
        table: Table,
        merchant: &str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        if !storable(id) {
            return Ok(None);
        }
        let sql = format!(
            "SELECT data FROM {} WHERE id = $1 AND merchant_id = $2",
            table.name
        );
        let data: Option<String> = sqlx::query_scalar(&sql)
            .bind(id)
            .bind(merchant)
            .fetch_optional(&self.pool)
            .await?;
        data.map(|d| decode(table, &d)).transpose()
    }

    async fn list<T: DeserializeOwned>(
        &self,
        table: Table,
        merchant: &str,
        filter: Option<(&'static str, &str)>,
        page: &Page,
    ) -> Result<PageOf<T>, StoreError> {
        let raw = self.list_raw(table, merchant, filter, page).await?;
        let data = raw
            .data
            .iter()
            .map(|d| decode(table, d))
            .collect::<Result<Vec<T>, _>>()?;
        Ok(PageOf {
            data,
            has_more: raw.has_more,
        })
    }

    async fn cursor_seq(&self, table: Table, merchant: &str, id: &str) -> Result<i64, StoreError> {
        if !storable(id) {
            return Err(StoreError::CursorNotFound { object: table.object, id: id.to_string() });
        }
        let sql = format!(
            "SELECT seq FROM {} WHERE id = $1 AND merchant_id = $2",
            table.name
        );
        let seq: Option<i64> = sqlx::query_scalar(&sql)
            .bind(id)
            .bind(merchant)
            .fetch_optional(&self.pool)
            .await?;
        seq.ok_or_else(|| StoreError::CursorNotFound {
            object: table.object,
            id: id.to_string(),
        })
    }

    /// As the SQLite store's: newest first, `filter` a (column constant, value) pair.
    async fn list_raw(
        &self,
        table: Table,
        merchant: &str,
        filter: Option<(&'static str, &str)>,
        page: &Page,
    ) -> Result<PageOf<String>, StoreError> {
        if filter.is_some_and(|(_, v)| !storable(v)) {
            return Ok(PageOf { data: Vec::new(), has_more: false });
        }
        let limit = page.limit.clamp(1, PAGE_LIMIT_MAX) as usize;
        let after = match &page.starting_after {
            Some(id) => Some(self.cursor_seq(table, merchant, id).await?),
            None => None,
        };
        let before = match &page.ending_before {
            Some(id) => Some(self.cursor_seq(table, merchant, id).await?),
            None => None,
        };
        let mut n = 1;
        let mut sql = format!("SELECT data FROM {} WHERE merchant_id = $1", table.name);
        if let Some((column, _)) = filter {
            n += 1;
            sql.push_str(&format!(" AND {column} = ${n}"));
        }
        if after.is_some() {
            n += 1;
            sql.push_str(&format!(" AND seq < ${n}"));
        }
        if before.is_some() {
            n += 1;
            sql.push_str(&format!(" AND seq > ${n}"));
        }
        let ascending = before.is_some();
        n += 1;
        sql.push_str(&format!(
            " ORDER BY seq {} LIMIT ${n}",
            if ascending { "ASC" } else { "DESC" }
        ));
        let mut q = sqlx::query_scalar::<_, String>(&sql).bind(merchant);
        if let Some((_, value)) = filter {
            q = q.bind(value);
        }
        if let Some(seq) = after {
            q = q.bind(seq);
        }
        if let Some(seq) = before {
            q = q.bind(seq);
        }
        let mut rows = q.bind(limit as i64 + 1).fetch_all(&self.pool).await?;
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        if ascending {
            rows.reverse();
        }
        Ok(PageOf {
            data: rows,
            has_more,
        })
    }

    /// Numbers, in commit order, the events that have no delivery number yet (see the module
    /// docs). Skips its turn when another replica is at it.
    async fn sequence_events(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(SEQUENCER_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if mine {
            sequence(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn try_write(&self, batch: &WriteBatch) -> Result<(), WriteError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| WriteError::Store(e.into()))?;
        for op in &batch.ops {
            if let Err(e) = apply_op(&mut tx, op).await {
                // Dropping the transaction rolls it back; say so explicitly to free the
                // connection at once.
                let _ = tx.rollback().await;
                return Err(e);
            }
        }
        tx.commit().await.map_err(write_err)
    }
}

/// Numbers the events without a delivery number that this transaction can see (the caller
/// holds the sequencer's advisory lock).
async fn sequence(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE events SET dseq = nextval('events_dseq') WHERE seq IN (SELECT seq FROM events WHERE dseq IS NULL ORDER BY seq LIMIT $1)")
        .bind(SEQUENCE_CHUNK)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// PostgreSQL's text cannot hold a NUL character: no stored id or key has one, so a lookup by
/// one finds nothing (and must not reach the server, which would refuse the statement).
fn storable(s: &str) -> bool {
    !s.contains('\0')
}

/// A deadlock (40P01) or serialization failure (40001): the batch can simply be run again.
fn retryable(e: &WriteError) -> bool {
    matches!(e, WriteError::Store(StoreError::Database(sqlx::Error::Database(d))) if matches!(d.code().as_deref(), Some("40P01") | Some("40001")))
}

/// `filter` (an endpoint's `events_filter`) matches the event type in `type_col`.
fn wants(filter: &str, type_col: &str) -> String {
    format!("({filter} = ',*,' OR strpos({filter}, ',' || {type_col} || ',') > 0)")
}

async fn apply_op(conn: &mut PgConnection, op: &Write) -> Result<(), WriteError> {
    match op {
        Write::Merchant(m) => {
            sqlx::query("INSERT INTO merchants (id, name, created) VALUES ($1, $2, $3)")
                .bind(&m.id)
                .bind(&m.name)
                .bind(m.created)
                .execute(&mut *conn)
                .await
                .map_err(write_err)?;
        }
        Write::ApiKey(k) => {
            sqlx::query(
                "INSERT INTO api_keys (hash, merchant_id, prefix, created) VALUES ($1, $2, $3, $4)",
            )
            .bind(&k.hash[..])
            .bind(&k.merchant)
            .bind(&k.prefix)
            .bind(k.created)
            .execute(&mut *conn)
            .await
            .map_err(write_err)?;
        }
        Write::PaymentMethod(pm) => {
            insert_object(
                conn,
                PAYMENT_METHODS,
                &pm.id,
                &pm.merchant,
                pm.created,
                &encode(pm)?,
            )
            .await?
        }
        Write::InsertIntent(pi) => {
            sqlx::query("INSERT INTO payment_intents (id, merchant_id, created, version, status, data) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(&pi.id)
                .bind(&pi.merchant)
                .bind(pi.created)
                .bind(to_i64("intent version", pi.version)?)
                .bind(pi.status.as_str())
                .bind(encode(pi)?)
                .execute(&mut *conn)
                .await
                .map_err(write_err)?;
        }
        Write::UpdateIntent(pi) => {
            let expected = pi
                .version
                .checked_sub(1)
                .ok_or(WriteError::Conflict(ConflictKind::IntentVersion))?;
            let r = sqlx::query(
                "UPDATE payment_intents SET version = $1, status = $2, data = $3 WHERE id = $4 AND merchant_id = $5 AND version = $6",
            )
            .bind(to_i64("intent version", pi.version)?)
            .bind(pi.status.as_str())
            .bind(encode(pi)?)
            .bind(&pi.id)
            .bind(&pi.merchant)
            .bind(to_i64("intent version", expected)?)
            .execute(&mut *conn)
            .await
            .map_err(write_err)?;
            if r.rows_affected() == 0 {
                return Err(WriteError::Conflict(ConflictKind::IntentVersion));
            }
        }
        Write::Charge(ch) => {
            let r = sqlx::query(
                "INSERT INTO charges (id, merchant_id, created, data) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET data = excluded.data WHERE charges.merchant_id = excluded.merchant_id",
            )
            .bind(&ch.id)
            .bind(&ch.merchant)
            .bind(ch.created)
            .bind(encode(ch)?)
            .execute(&mut *conn)
            .await
            .map_err(write_err)?;
            if r.rows_affected() == 0 {
                return Err(WriteError::Conflict(ConflictKind::Duplicate));
            }
        }
        Write::InsertRefund(r) => {
            sqlx::query("INSERT INTO refunds (id, merchant_id, payment_intent, amount, created, data) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(&r.id)
                .bind(&r.merchant)
                .bind(&r.payment_intent)
                .bind(to_i64("refund amount", r.amount)?)
                .bind(r.created)
                .bind(encode(r)?)
                .execute(&mut *conn)
                .await
                .map_err(write_err)?;
        }
        Write::Postings(ps) => {
            for p in ps {
                insert_posting(conn, p).await?;
            }
        }
        Write::Idempotency {
            record,
            replaces_before,
        } => {
            let r = sqlx::query(
                "INSERT INTO idempotency_keys (merchant_id, key, request_hash, status, body, created) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (merchant_id, key) DO UPDATE SET request_hash = excluded.request_hash, status = excluded.status, \
                   body = excluded.body, created = excluded.created \
                 WHERE idempotency_keys.created < $7",
            )
            .bind(&record.merchant)
            .bind(&record.key)
            .bind(&record.request_hash[..])
            .bind(i64::from(record.status))
            .bind(&record.body[..])
            .bind(record.created)
            .bind(*replaces_before)
            .execute(&mut *conn)
            .await
            .map_err(write_err)?;
            if r.rows_affected() == 0 {
                return Err(WriteError::Conflict(ConflictKind::IdempotencyKey));
            }
        }
        Write::Event(e) => {
            sqlx::query("INSERT INTO events (id, merchant_id, type, created, data) VALUES ($1, $2, $3, $4, $5)")
                .bind(&e.id)
                .bind(&e.merchant)
                .bind(&e.kind)
                .bind(e.created)
                .bind(&e.json)
                .execute(&mut *conn)
                .await
                .map_err(write_err)?;
        }
        Write::WebhookEndpoint(w) => {
            // The cursor starts at the newest event: number every committed event first, so one
            // made before the endpoint is not numbered after its cursor (and sent to it).
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(SEQUENCER_LOCK)
                .execute(&mut *conn)
                .await
                .map_err(write_err)?;
            sequence(conn).await.map_err(write_err)?;
            let r = sqlx::query(
                "INSERT INTO webhook_endpoints (id, merchant_id, created, url, status, events_filter, data, cursor_seq) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, (SELECT COALESCE(MAX(dseq), 0) FROM events)) \
                 ON CONFLICT (id) DO UPDATE SET url = excluded.url, status = excluded.status, \
                   events_filter = excluded.events_filter, data = excluded.data, \
                   cursor_seq = CASE WHEN webhook_endpoints.status <> 'enabled' AND excluded.status = 'enabled' \
                     THEN excluded.cursor_seq ELSE webhook_endpoints.cursor_seq END \
                 WHERE webhook_endpoints.merchant_id = excluded.merchant_id",
            )
            .bind(&w.id)
            .bind(&w.merchant)
            .bind(w.created)
            .bind(&w.url)
            .bind(w.status.as_str())
            .bind(w.events_filter())
            .bind(encode(w)?)
            .execute(&mut *conn)
            .await
            .map_err(write_err)?;
            if r.rows_affected() == 0 {
                return Err(WriteError::Conflict(ConflictKind::Duplicate));
            }
        }
        Write::DeleteWebhookEndpoint { merchant, id } => {
            let r = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2")
                .bind(id)
                .bind(merchant)
                .execute(&mut *conn)
                .await
                .map_err(write_err)?;
            if r.rows_affected() > 0 {
                sqlx::query(
                    "DELETE FROM webhook_deliveries WHERE endpoint_id = $1 AND merchant_id = $2",
                )
                .bind(id)
                .bind(merchant)
                .execute(&mut *conn)
                .await
                .map_err(write_err)?;
            }
        }
        Write::Delivery(d) => {
            sqlx::query(
                "UPDATE webhook_deliveries SET state = $1, attempts = $2, next_attempt_at = $3, last_attempt_at = $4, \
                   last_status = $5, last_error = $6 WHERE endpoint_id = $7 AND event_id = $8 AND merchant_id = $9",
            )
            .bind(d.state.as_str())
            .bind(i64::from(d.attempts))
            .bind(d.next_attempt_ms)
            .bind(d.last_attempt_ms)
            .bind(d.last_status.map(i64::from))
            .bind(&d.last_error)
            .bind(&d.endpoint)
            .bind(&d.event)
            .bind(&d.merchant)
            .execute(&mut *conn)
            .await
            .map_err(write_err)?;
        }
        Write::ClaimDeliveries {
            endpoint,
            merchant,
            after_seq,
            through_seq,
            deliveries,
        } => {
            claim(
                conn,
                endpoint,
                merchant,
                *after_seq,
                *through_seq,
                deliveries,
            )
            .await?;
        }
    }
    Ok(())
}

/// Payment methods: id, merchant, created, data.
async fn insert_object(
    conn: &mut PgConnection,
    table: Table,
    id: &str,
    merchant: &str,
    created: Timestamp,
    data: &str,
) -> Result<(), WriteError> {
    let sql = format!(
        "INSERT INTO {} (id, merchant_id, created, data) VALUES ($1, $2, $3, $4)",
        table.name
    );
    sqlx::query(&sql)
        .bind(id)
        .bind(merchant)
        .bind(created)
        .bind(data)
        .execute(&mut *conn)
        .await
        .map_err(write_err)?;
    Ok(())
}

async fn insert_posting(conn: &mut PgConnection, p: &Posting) -> Result<(), WriteError> {
    check_posting(p)?;
    for (i, leg) in p.legs.iter().enumerate() {
        sqlx::query(
            "INSERT INTO ledger_entries (posting_id, leg, merchant_id, currency, account, amount, payment_intent, kind, created) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&p.id)
        .bind(i as i64)
        .bind(&p.merchant)
        .bind(p.currency.code())
        .bind(leg.account.as_str())
        .bind(leg.amount)
        .bind(&p.payment_intent)
        .bind(p.kind.as_str())
        .bind(p.created)
        .execute(&mut *conn)
        .await
        .map_err(write_err)?;
    }
    Ok(())
}

async fn claim(
    conn: &mut PgConnection,
    endpoint: &str,
    merchant: &str,
    after_seq: i64,
    through_seq: i64,
    deliveries: &[Delivery],
) -> Result<(), WriteError> {
    let r = sqlx::query("UPDATE webhook_endpoints SET cursor_seq = $1 WHERE id = $2 AND merchant_id = $3 AND cursor_seq = $4")
        .bind(through_seq)
        .bind(endpoint)
        .bind(merchant)
        .bind(after_seq)
        .execute(&mut *conn)
        .await
        .map_err(write_err)?;
    if r.rows_affected() == 0 {
        let exists: Option<i64> = sqlx::query_scalar(
            "SELECT 1::BIGINT FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2",
        )
        .bind(endpoint)
        .bind(merchant)
        .fetch_optional(&mut *conn)
        .await
        .map_err(write_err)?;
        return if exists.is_some() {
            Err(WriteError::Conflict(ConflictKind::Claimed))
        } else {
            Ok(())
        };
    }
    for d in deliveries {
        sqlx::query(
            "INSERT INTO webhook_deliveries (endpoint_id, event_id, merchant_id, state, attempts, next_attempt_at, created) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (endpoint_id, event_id) DO NOTHING",
        )
        .bind(&d.endpoint)
        .bind(&d.event)
        .bind(&d.merchant)
        .bind(d.state.as_str())
        .bind(i64::from(d.attempts))
        .bind(d.next_attempt_ms)
        .bind(d.created_ms)
        .execute(&mut *conn)
        .await
        .map_err(write_err)?;
    }
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    async fn merchant_by_key_hash(&self, hash: &[u8; 32]) -> Result<Option<Merchant>, StoreError> {
        let row: Option<MerchantRow> =
            sqlx::query_as("SELECT m.id, m.name, m.created FROM api_keys k JOIN merchants m ON m.id = k.merchant_id WHERE k.hash = $1")
                .bind(&hash[..])
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(Merchant::from))
    }

    async fn merchant_by_name(&self, name: &str) -> Result<Option<Merchant>, StoreError> {
        if !storable(name) {
            return Ok(None);
        }
        let row: Option<MerchantRow> =
            sqlx::query_as("SELECT id, name, created FROM merchants WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(Merchant::from))
    }

    async fn merchants_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM merchants")
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn payment_method(
        &self,
        merchant: &str,
        id: &str,
    ) -> Result<Option<PaymentMethod>, StoreError> {
        self.get_object(PAYMENT_METHODS, merchant, id).await
    }

    async fn list_payment_methods(
        &self,
        merchant: &str,
        page: &Page,
    ) -> Result<PageOf<PaymentMethod>, StoreError> {
        self.list(PAYMENT_METHODS, merchant, None, page).await
    }

    async fn payment_intent(
        &self,
        merchant: &str,
        id: &str,
    ) -> Result<Option<PaymentIntent>, StoreError> {
        self.get_object(PAYMENT_INTENTS, merchant, id).await
    }

    async fn list_payment_intents(
        &self,
        merchant: &str,
        page: &Page,
    ) -> Result<PageOf<PaymentIntent>, StoreError> {
        self.list(PAYMENT_INTENTS, merchant, None, page).await
    }

    async fn charge(&self, merchant: &str, id: &str) -> Result<Option<Charge>, StoreError> {
        self.get_object(CHARGES, merchant, id).await
    }

    async fn refund(&self, merchant: &str, id: &str) -> Result<Option<Refund>, StoreError> {
        self.get_object(REFUNDS, merchant, id).await
    }

    async fn list_refunds(
        &self,
        merchant: &str,
        payment_intent: Option<&str>,
        page: &Page,
    ) -> Result<PageOf<Refund>, StoreError> {
        self.list(
            REFUNDS,
            merchant,
            payment_intent.map(|pi| ("payment_intent", pi)),
            page,
        )
        .await
    }

    async fn idempotency(
        &self,
        merchant: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        if !storable(key) {
            return Ok(None);
        }
        let row: Option<IdempotencyRow> = sqlx::query_as(
            "SELECT request_hash, status, body, created FROM idempotency_keys WHERE merchant_id = $1 AND key = $2",
        )
        .bind(merchant)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.into_record(merchant, key)).transpose()
    }

    async fn event(&self, merchant: &str, id: &str) -> Result<Option<EventRecord>, StoreError> {
        if !storable(id) {
            return Ok(None);
        }
        let row: Option<EventRow> = sqlx::query_as("SELECT id, merchant_id, type, created, data FROM events WHERE id = $1 AND merchant_id = $2")
            .bind(id)
            .bind(merchant)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(EventRecord::from))
    }

    async fn list_events(
        &self,
        merchant: &str,
        kind: Option<&str>,
        page: &Page,
    ) -> Result<PageOf<EventRecord>, StoreError> {
        let raw = self
            .list_raw(EVENTS, merchant, kind.map(|k| ("type", k)), page)
            .await?;
        let data = raw
            .data
            .into_iter()
            .map(|j| event_from_json(merchant, j))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PageOf {
            data,
            has_more: raw.has_more,
        })
    }

    async fn webhook_endpoint(
        &self,
        merchant: &str,
        id: &str,
    ) -> Result<Option<WebhookEndpointRecord>, StoreError> {
        self.get_object(WEBHOOK_ENDPOINTS, merchant, id).await
    }

    async fn list_webhook_endpoints(
        &self,
        merchant: &str,
        page: &Page,
    ) -> Result<PageOf<WebhookEndpointRecord>, StoreError> {
        self.list(WEBHOOK_ENDPOINTS, merchant, None, page).await
    }

    async fn unclaimed(
        &self,
        per_endpoint: u32,
        scan_max: u32,
    ) -> Result<Vec<Unclaimed>, StoreError> {
        self.sequence_events().await?;
        let endpoints: Vec<BacklogRow> = sqlx::query_as(
            "SELECT id, merchant_id, url, events_filter, cursor_seq FROM webhook_endpoints AS w \
             WHERE status = 'enabled' AND EXISTS (SELECT 1 FROM events AS e WHERE e.merchant_id = w.merchant_id AND e.dseq > w.cursor_seq) \
             ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        let sql = format!(
            "SELECT dseq AS seq, id, merchant_id, type, created, CASE WHEN {} THEN data END AS data FROM events \
             WHERE merchant_id = $1 AND dseq > $2 ORDER BY dseq LIMIT $4",
            wants("$3", "type")
        );
        let mut out = Vec::new();
        for w in endpoints {
            let scanned: Vec<ScannedRow> = sqlx::query_as(&sql)
                .bind(&w.merchant_id)
                .bind(w.cursor_seq)
                .bind(&w.events_filter)
                .bind(i64::from(scan_max))
                .fetch_all(&self.pool)
                .await?;
            out.extend(crate::rows::unclaimed(w, scanned, per_endpoint));
        }
        Ok(out)
    }

    async fn pending_webhooks(&self, merchant: &str, event: &str) -> Result<u64, StoreError> {
        if !storable(event) {
            return Ok(0);
        }
        // An event not numbered yet is pending for the endpoints that existed when it was made.
        let sql = format!(
            "SELECT (SELECT COUNT(*) FROM webhook_deliveries WHERE event_id = $2 AND merchant_id = $1 AND state = 'pending') \
               + (SELECT COUNT(*) FROM events AS e JOIN webhook_endpoints AS w \
                    ON w.merchant_id = e.merchant_id AND w.status = 'enabled' \
                   AND (w.cursor_seq < e.dseq OR (e.dseq IS NULL AND w.created <= e.created)) AND {} \
                  WHERE e.id = $2 AND e.merchant_id = $1)",
            wants("w.events_filter", "e.type")
        );
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(merchant)
            .bind(event)
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn due_deliveries(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let rows: Vec<DueRow> = sqlx::query_as(
            "SELECT d.*, w.url AS url, e.data AS body FROM webhook_deliveries AS d \
             JOIN webhook_endpoints AS w ON w.id = d.endpoint_id AND w.status = 'enabled' \
             JOIN events AS e ON e.id = d.event_id \
             WHERE d.state = 'pending' AND d.next_attempt_at <= $1 ORDER BY d.next_attempt_at LIMIT $2",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(DueDelivery {
                    delivery: r.delivery.try_into()?,
                    url: r.url,
                    body: r.body,
                })
            })
            .collect()
    }

    async fn deliveries(
        &self,
        merchant: &str,
        event: Option<&str>,
        endpoint: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        if !event.into_iter().chain(endpoint).all(storable) {
            return Ok(Vec::new());
        }
        let rows: Vec<DeliveryRow> = sqlx::query_as(
            "SELECT * FROM webhook_deliveries WHERE merchant_id = $1 AND ($2::TEXT IS NULL OR event_id = $2) \
               AND ($3::TEXT IS NULL OR endpoint_id = $3) ORDER BY created DESC, event_id DESC LIMIT $4",
        )
        .bind(merchant)
        .bind(event)
        .bind(endpoint)
        .bind(i64::from(limit.clamp(1, PAGE_LIMIT_MAX)))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Delivery::try_from).collect()
    }

    async fn pending_deliveries(&self) -> Result<u64, StoreError> {
        let sql = format!(
            "SELECT (SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'pending') \
               + (SELECT COUNT(*) FROM webhook_endpoints AS w JOIN events AS e \
                    ON e.merchant_id = w.merchant_id \
                   AND (e.dseq > w.cursor_seq OR (e.dseq IS NULL AND e.created >= w.created)) AND {} \
                  WHERE w.status = 'enabled')",
            wants("w.events_filter", "e.type")
        );
        let n: i64 = sqlx::query_scalar(&sql).fetch_one(&self.pool).await?;
        Ok(n.max(0) as u64)
    }

    async fn write(&self, batch: WriteBatch) -> Result<(), WriteError> {
        let _slot = self
            .writes
            .try_acquire()
            .map_err(|_| WriteError::QueueFull {
                limit: self.writes_max,
            })?;
        let mut tries = 0;
        loop {
            match self.try_write(&batch).await {
                Ok(()) => {
                    self.counters
                        .batches_committed
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) if retryable(&e) && tries < RETRIES => {
                    tries += 1;
                    warn!(error = %e, tries, "postgres: deadlock or serialization failure; running the batch again");
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn purge_idempotency(&self, before: Timestamp) -> Result<u64, StoreError> {
        let mut deleted = 0u64;
        loop {
            let r = sqlx::query(
                "DELETE FROM idempotency_keys WHERE (merchant_id, key) IN \
                 (SELECT merchant_id, key FROM idempotency_keys WHERE created < $1 LIMIT $2)",
            )
            .bind(before)
            .bind(PURGE_CHUNK_ROWS)
            .execute(&self.pool)
            .await?;
            deleted += r.rows_affected();
            if r.rows_affected() < PURGE_CHUNK_ROWS as u64 {
                if deleted > 0 {
                    info!(deleted, before, "purged expired idempotency records");
                }
                return Ok(deleted);
            }
        }
    }

    async fn audit(&self) -> Result<AuditReport, StoreError> {
        let mut audit = Audit::new();
        // One snapshot for every pass while writes go on.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        crate::audit::postings(
            sqlx::query_as(crate::audit::POSTINGS_SQL).fetch(&mut *tx),
            &mut audit,
        )
        .await?;
        crate::audit::intents(
            sqlx::query_as(crate::audit::INTENTS_SQL).fetch(&mut *tx),
            &mut audit,
        )
        .await?;
        crate::audit::orphan_entries(
            sqlx::query_as(crate::audit::ORPHAN_ENTRIES_SQL).fetch(&mut *tx),
            &mut audit,
        )
        .await?;
        crate::audit::orphan_refunds(
            sqlx::query_as(crate::audit::ORPHAN_REFUNDS_SQL).fetch(&mut *tx),
            &mut audit,
        )
        .await?;
        tx.rollback().await?;
        Ok(audit.finish())
    }

    async fn schema_history(&self) -> Result<Vec<AppliedMigration>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(schema::postgres::history(&mut conn).await?)
    }

    fn stats(&self) -> StoreStats {
        let busy = (self.pool.size() as usize).saturating_sub(self.pool.num_idle());
        let committed = self.counters.batches_committed.load(Ordering::Relaxed);
        StoreStats {
            writer_queue_len: self.writes_max - self.writes.available_permits(),
            writer_queue_max: self.writes_max,
            batches_committed: committed,
            commits: committed,
            bulk_commits: 0,
            readers_busy: busy,
            readers_max: self.pool_max as usize,
        }
    }
}
