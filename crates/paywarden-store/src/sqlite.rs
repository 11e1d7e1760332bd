//! The SQLite [`Store`]: one database file, `paywarden.db`, in the data directory.
//!
//! # Pragmas
//!
//! Set explicitly on every connection at open (defaults differ between SQLite builds and
//! sqlx versions, so none is trusted), then read back on the writer and on a reader and
//! checked; a value that did not take is an error at open, never a surprise in production.
//!
//! | pragma | value | why |
//! |---|---|---|
//! | `journal_mode` | `WAL` | readers never block the writer nor the writer them; one fsync per commit |
//! | `synchronous` | `FULL` | the WAL is fsynced at every commit: a commit that returned survives power loss |
//! | `foreign_keys` | `ON` | declared references (an API key's merchant) are enforced |
//! | `busy_timeout` | [`SqliteOptions::busy_timeout`] (5 s) | another process holding the lock is waited for, not an instant error |
//!
//! Reader connections are opened read-only, so nothing but the writer can change the
//! database through this store.
//!
//! # Group commit
//!
//! Every [`WriteBatch`] goes through one bounded queue ([`SqliteOptions::writer_queue_max`])
//! to one writer task that owns the only writing connection. [`Store::write`] never waits
//! for room: a full queue is refused at once with [`WriteError::QueueFull`].
//!
//! The writer waits for one batch, then takes whatever else is already queued, up to
//! [`SqliteOptions::batch_max`] batches in all, and applies the group in one transaction:
//!
//! ```text
//! BEGIN IMMEDIATE
//!   SAVEPOINT b; <batch 1 ops>; RELEASE b            -- batch 1 ok
//!   SAVEPOINT b; <batch 2 ops fail>; ROLLBACK TO b; RELEASE b   -- batch 2 gets its error
//!   ...
//! COMMIT                                             -- one fsync for the whole group
//! ```
//!
//! A batch is atomic (its savepoint), and one bad batch never fails its neighbours. Each
//! request is answered only after `COMMIT` has returned, so an `Ok` means durable. If the
//! transaction as a whole fails (`BEGIN`, a savepoint statement, or `COMMIT` itself), it is
//! rolled back and every batch of the group gets that error. Under load the queue fills
//! while a commit is in flight and the next group is larger: throughput grows with
//! concurrency while the number of fsyncs does not.
//!
//! Purging expired idempotency records also goes through the writer (the single-writer
//! rule has no exception): it deletes at most [`PURGE_CHUNK_ROWS`] rows per statement, each
//! its own transaction, and serves queued batches between chunks so a large purge never
//! stalls the payment path.
//!
//! When every handle to the queue is dropped, the writer finishes what is queued, closes
//! its connection and exits; [`SqliteStore::close`] does this and waits for it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use paywarden_core::ledger::{Audit, AuditReport};
use paywarden_core::{Charge, PaymentIntent, PaymentMethod, Posting, Refund, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::schema::{self, AppliedMigration, Backend, MigrationRun, SchemaOptions, SchemaPlan};
use crate::rows::{BacklogRow, DeliveryRow, DueRow, EventRow, IdempotencyRow, MerchantRow, ScannedRow};
use crate::{
    ApiKeyRecord, ConflictKind, Delivery, DueDelivery, EventRecord, IdempotencyRecord, Merchant,
    Page, PageOf, Store, StoreError, StoreStats, Unclaimed, WebhookEndpointRecord, Write,
    WriteBatch, WriteError,
};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "paywarden.db";

/// Most idempotency records one purge statement deletes.
pub const PURGE_CHUNK_ROWS: i64 = 1000;

/// Most rows a list returns ([`Page::limit`] is clamped to `1..=PAGE_LIMIT_MAX`).
pub(crate) const PAGE_LIMIT_MAX: u32 = 100;

/// Limits of the SQLite store. Zeroes are raised to 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Batches that may wait for the writer; one more is refused with
    /// [`WriteError::QueueFull`]. Default 1024.
    pub writer_queue_max: usize,
    /// Most batches applied in one transaction (one group commit). Default 256.
    pub batch_max: usize,
    /// Size of the read connection pool. Default 4.
    pub readers_max: u32,
    /// How long a connection waits for a lock held by another connection or process
    /// (SQLite's `busy_timeout`). Default 5 s.
    pub busy_timeout: Duration,
    /// Page cache of the writer connection, in KiB (SQLite's `cache_size`). Default 8 MiB:
    /// with time-ordered ids the writer touches the right-hand ends of its indexes, a few
    /// hundred pages. Larger is slower, not faster: every commit ends by truncating the page
    /// cache (`pager_end_transaction` -> `pcache1TruncateUnsafe`), and that walk grew with the
    /// cache (64 MiB: a quarter of the writer's CPU, by perf; 8 MiB: out of the profile, and
    /// 55 MiB less RSS; payments/s see BENCHMARKS.md "Payments core").
    pub writer_cache_kib: u32,
    /// Page cache of each reader connection, in KiB. Default 16 MiB.
    pub reader_cache_kib: u32,
    /// How often a background connection copies the WAL back into the database
    /// (a PASSIVE checkpoint, which never blocks the writer). Default 50 ms: small, frequent
    /// checkpoints keep each one short (p99 at 2,800 payments/s: 250 ms -> 10-12 ms,
    /// 50 ms -> 5.4-6.0 ms, 5 s -> 17.6-18.8 ms).
    pub checkpoint_interval: Duration,
    /// WAL pages past which the writer checkpoints by itself, on its own commit path: a
    /// backstop that bounds the WAL should the background checkpointer fall behind. Default
    /// 16384 pages (64 MiB).
    pub wal_autocheckpoint_pages: u32,
    /// The release label recorded with the migrations this store applies, and any extra
    /// migrations the build carries ([`crate::schema`]).
    pub schema: SchemaOptions,
}

impl Default for SqliteOptions {
    fn default() -> SqliteOptions {
        SqliteOptions {
            writer_queue_max: 1024,
            batch_max: 256,
            readers_max: 4,
            busy_timeout: Duration::from_secs(5),
            writer_cache_kib: 8 * 1024,
            reader_cache_kib: 16 * 1024,
            checkpoint_interval: Duration::from_millis(50),
            wal_autocheckpoint_pages: 16_384,
            schema: SchemaOptions::default(),
        }
    }
}

/// Pragma values as read back from a connection after they were set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlitePragmas {
    /// e.g. `wal`.
    pub journal_mode: String,
    /// `off`, `normal`, `full` or `extra`.
    pub synchronous: String,
    pub foreign_keys: bool,
    pub busy_timeout_ms: i64,
    /// `memory`: temporary files (statement journals, ephemeral tables) never touch disk.
    pub temp_store: String,
}

#[derive(Debug, Default)]
struct Counters {
    batches_committed: AtomicU64,
    commits: AtomicU64,
    bulk_commits: AtomicU64,
}

type BatchReply = oneshot::Sender<Result<(), WriteError>>;
type PurgeReply = oneshot::Sender<Result<u64, StoreError>>;

/// What the writer task is asked to do.
enum Job {
    Batch {
        batch: WriteBatch,
        reply: BatchReply,
    },
    Purge {
        before: Timestamp,
        reply: PurgeReply,
    },
}

/// A purge in progress: it advances one chunk per writer turn.
struct PurgeJob {
    before: Timestamp,
    deleted: u64,
    reply: PurgeReply,
}

/// The SQLite store: a pool of read-only readers and one group-committing writer task.
pub struct SqliteStore {
    path: PathBuf,
    /// Read-only connections, opened at start. Not a `sqlx::Pool`: that pings a connection
    /// (a round trip to its thread) on every release, which cannot be turned off, and a
    /// payment's idempotency look-up would pay it. A query cut off by a dropped future needs
    /// no ping either: the connection runs its commands in order, so whatever the cut-off
    /// query left (an open statement, a rollback) is done before the next user's first one.
    readers: deadpool::unmanaged::Pool<SqliteConnection>,
    jobs: mpsc::Sender<Job>,
    writer: JoinHandle<()>,
    /// The checkpointer stops once this is dropped (it holds only a `Weak`).
    _alive: Arc<()>,
    queue_max: usize,
    readers_max: u32,
    counters: Arc<Counters>,
    pragmas: SqlitePragmas,
    /// What the schema step at open found and applied (boxed: read once, kept small).
    schema_run: Box<MigrationRun>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("readers", &self.readers.status())
            .field("queue_max", &self.queue_max)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Batch { batch, .. } => write!(f, "Batch({} ops)", batch.ops.len()),
            Job::Purge { before, .. } => write!(f, "Purge(before {before})"),
        }
    }
}

impl SqliteStore {
    /// Opens (creating if missing) `data_dir/paywarden.db`, sets and checks the pragmas,
    /// runs the embedded migrations and starts the writer task. Must be called inside a
    /// Tokio runtime.
    pub async fn open(data_dir: &Path, opts: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let queue_max = opts.writer_queue_max.max(1);
        let batch_max = opts.batch_max.max(1);
        let readers_max = opts.readers_max.max(1);
        let busy = opts.busy_timeout;

        tokio::fs::create_dir_all(data_dir).await?;
        let path = data_dir.join(DB_FILE);

        let writer_opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(busy);
        let mut conn = SqliteConnection::connect_with(&writer_opts).await?;
        // sqlx applied these at connect; set them again ourselves so that what we check
        // below is what we asked for, whatever the driver's defaults become.
        let busy_ms = busy_timeout_ms(busy);
        for pragma in [
            "PRAGMA journal_mode = WAL".to_string(),
            "PRAGMA synchronous = FULL".to_string(),
            "PRAGMA foreign_keys = ON".to_string(),
            format!("PRAGMA busy_timeout = {busy_ms}"),
            format!("PRAGMA cache_size = -{}", opts.writer_cache_kib),
            // Temporary files (the statement journal some statements still keep, ephemeral
            // tables) in memory: with the default, a group commit created, wrote about 20
            // pages to and unlinked a file in /var/tmp every time. Bounded by the group:
            // at most the pages one group's statements change.
            "PRAGMA temp_store = MEMORY".to_string(),
            format!(
                "PRAGMA wal_autocheckpoint = {}",
                opts.wal_autocheckpoint_pages
            ),
        ] {
            sqlx::query(&pragma).execute(&mut conn).await?;
        }
        let pragmas = read_pragmas(&mut conn).await?;
        check_pragmas("writer", &pragmas, busy_ms)?;
        info!(
            path = %path.display(),
            journal_mode = %pragmas.journal_mode,
            synchronous = %pragmas.synchronous,
            foreign_keys = pragmas.foreign_keys,
            busy_timeout_ms = pragmas.busy_timeout_ms,
            temp_store = %pragmas.temp_store,
            "sqlite writer connection open"
        );

        let migrations = opts.schema.migrations(Backend::Sqlite)?;
        let run = schema::migrate(&mut schema::sqlite::Sqlite(&mut conn), &migrations, &opts.schema.release).await?;
        log_schema(&run);

        let reader_opts = SqliteConnectOptions::new()
            .filename(&path)
            .read_only(true)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(busy)
            .pragma("cache_size", format!("-{}", opts.reader_cache_kib))
            .pragma("temp_store", "memory");
        let readers = deadpool::unmanaged::Pool::new(readers_max as usize);
        for _ in 0..readers_max {
            let conn = SqliteConnection::connect_with(&reader_opts).await?;
            // The pool was made with room for exactly these.
            readers
                .add(conn)
                .await
                .map_err(|(_, e)| reader_pool_error(e))?;
        }
        {
            let mut reader = readers.get().await.map_err(reader_pool_error)?;
            let rp = read_pragmas(&mut reader).await?;
            check_pragmas("reader", &rp, busy_ms)?;
            info!(
                readers_max,
                journal_mode = %rp.journal_mode,
                synchronous = %rp.synchronous,
                foreign_keys = rp.foreign_keys,
                busy_timeout_ms = rp.busy_timeout_ms,
                "sqlite reader pool open (read-only connections)"
            );
        }

        let alive = Arc::new(());
        let checkpoint_conn = SqliteConnection::connect_with(&writer_opts).await?;
        tokio::spawn(checkpoint_loop(
            checkpoint_conn,
            opts.checkpoint_interval,
            Arc::downgrade(&alive),
        ));

        let (jobs, rx) = mpsc::channel(queue_max);
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            conn,
            rx,
            batch_max,
            counters: counters.clone(),
            purges: VecDeque::new(),
        };
        let writer = tokio::spawn(writer.run());
        info!(
            writer_queue_max = queue_max,
            batch_max, "sqlite group-commit writer started"
        );

        Ok(SqliteStore {
            path,
            readers,
            jobs,
            writer,
            _alive: alive,
            queue_max,
            readers_max,
            counters,
            pragmas,
            schema_run: Box::new(run),
        })
    }

    /// What this release would find and do on the SQLite database in `data_dir` (the
    /// migrations it would apply, those it does not know, whether it may run there), without
    /// writing anything: a missing database is planned as an empty one and not created.
    pub async fn schema_plan(data_dir: &Path, schema: &SchemaOptions) -> Result<SchemaPlan, StoreError> {
        let migrations = schema.migrations(Backend::Sqlite)?;
        let path = data_dir.join(DB_FILE);
        if !path.exists() {
            return Ok(schema::plan(&migrations, Vec::new(), &schema.release));
        }
        let opts = SqliteConnectOptions::new().filename(&path).busy_timeout(SqliteOptions::default().busy_timeout);
        let mut conn = SqliteConnection::connect_with(&opts).await?;
        let plan = schema::inspect(&mut schema::sqlite::Sqlite(&mut conn), &migrations, &schema.release).await;
        let _ = conn.close().await;
        Ok(plan?)
    }

    /// What the schema step at open found and applied.
    pub fn schema_run(&self) -> &MigrationRun {
        &self.schema_run
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writer connection's pragmas, as read back at open.
    pub fn pragmas(&self) -> &SqlitePragmas {
        &self.pragmas
    }

    /// Closes the readers, lets the writer finish every queued batch, and waits until its
    /// connection is closed.
    pub async fn close(self) {
        let SqliteStore {
            readers,
            jobs,
            writer,
            _alive,
            ..
        } = self;
        drop(_alive);
        // Idle readers are taken out and closed first: `close` drops whatever is still in the
        // pool. A reader in use now closes when its user drops it.
        while let Ok(conn) = readers.try_remove() {
            if let Err(e) = conn.close().await {
                debug!(error = %e, "closing a reader connection failed");
            }
        }
        readers.close();
        drop(jobs);
        if let Err(e) = writer.await {
            warn!(error = %e, "sqlite writer task ended abnormally");
        }
    }

    /// A reader connection, waiting for one to be free.
    async fn reader(&self) -> Result<deadpool::unmanaged::Object<SqliteConnection>, StoreError> {
        self.readers.get().await.map_err(reader_pool_error)
    }

    async fn get_object<T: DeserializeOwned>(
        &self,
        table: Table,
        merchant: &str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        let sql = format!(
            "SELECT data FROM {} WHERE id = ?1 AND merchant_id = ?2",
            table.name
        );
        let data: Option<String> = sqlx::query_scalar(&sql)
            .bind(id)
            .bind(merchant)
            .fetch_optional(&mut *self.reader().await?)
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

    /// A page of the stored `data` texts; `filter` is a (column, value) pair, the column one
    /// of our constants.
    async fn list_raw(
        &self,
        table: Table,
        merchant: &str,
        filter: Option<(&'static str, &str)>,
        page: &Page,
    ) -> Result<PageOf<String>, StoreError> {
        let limit = page.limit.clamp(1, PAGE_LIMIT_MAX) as usize;
        let mut conn = self.reader().await?;
        let after = match &page.starting_after {
            Some(id) => Some(cursor_seq(&mut conn, table, merchant, id).await?),
            None => None,
        };
        let before = match &page.ending_before {
            Some(id) => Some(cursor_seq(&mut conn, table, merchant, id).await?),
            None => None,
        };
        // `table.name` is one of our constants, never input.
        let mut sql = format!("SELECT data FROM {} WHERE merchant_id = ?", table.name);
        if let Some((column, _)) = filter {
            sql.push_str(&format!(" AND {column} = ?"));
        }
        if after.is_some() {
            sql.push_str(" AND seq < ?");
        }
        if before.is_some() {
            sql.push_str(" AND seq > ?");
        }
        // ending_before walks towards newer objects: take the `limit` closest to the cursor
        // (ascending), then turn them round to newest first.
        let ascending = before.is_some();
        sql.push_str(if ascending {
            " ORDER BY seq ASC LIMIT ?"
        } else {
            " ORDER BY seq DESC LIMIT ?"
        });
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
        let mut rows = q.bind(limit as i64 + 1).fetch_all(&mut *conn).await?;
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
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Table {
    pub(crate) name: &'static str,
    /// The object's name in errors (Stripe's `object`).
    pub(crate) object: &'static str,
}

pub(crate) const PAYMENT_METHODS: Table = Table {
    name: "payment_methods",
    object: "payment_method",
};
pub(crate) const PAYMENT_INTENTS: Table = Table {
    name: "payment_intents",
    object: "payment_intent",
};
pub(crate) const CHARGES: Table = Table {
    name: "charges",
    object: "charge",
};
pub(crate) const REFUNDS: Table = Table {
    name: "refunds",
    object: "refund",
};
pub(crate) const EVENTS: Table = Table {
    name: "events",
    object: "event",
};
pub(crate) const WEBHOOK_ENDPOINTS: Table = Table {
    name: "webhook_endpoints",
    object: "webhook_endpoint",
};

pub(crate) fn decode<T: DeserializeOwned>(table: Table, data: &str) -> Result<T, StoreError> {
    serde_json::from_str(data)
        .map_err(|e| StoreError::Corrupt(format!("a stored {} does not parse: {e}", table.object)))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Corrupt(format!("cannot serialize an object: {e}")))
}

async fn cursor_seq(
    conn: &mut SqliteConnection,
    table: Table,
    merchant: &str,
    id: &str,
) -> Result<i64, StoreError> {
    let sql = format!(
        "SELECT seq FROM {} WHERE id = ?1 AND merchant_id = ?2",
        table.name
    );
    let seq: Option<i64> = sqlx::query_scalar(&sql)
        .bind(id)
        .bind(merchant)
        .fetch_optional(&mut *conn)
        .await?;
    seq.ok_or_else(|| StoreError::CursorNotFound {
        object: table.object,
        id: id.to_string(),
    })
}

/// The reader pool only fails once closed.
fn reader_pool_error(_: deadpool::unmanaged::PoolError) -> StoreError {
    StoreError::Database(sqlx::Error::PoolClosed)
}

fn busy_timeout_ms(d: Duration) -> i64 {
    d.as_millis().min(i32::MAX as u128) as i64
}

/// Logs what the schema step at open found and did.
pub(crate) fn log_schema(run: &MigrationRun) {
    let names = |v: &[AppliedMigration]| v.iter().map(|a| schema::display_name(a.version, &a.description)).collect::<Vec<_>>().join(", ");
    info!(
        migrations = run.plan.applied.len() + run.applied_now.len(),
        applied_now = %names(&run.applied_now),
        release = %run.plan.release,
        "schema ready"
    );
    if !run.plan.unknown.is_empty() {
        info!(
            unknown = %names(&run.plan.unknown),
            "the database has expand migrations a newer release applied; this release runs on them (expand/contract, ARCHITECTURE.md)"
        );
    }
}

async fn read_pragmas(conn: &mut SqliteConnection) -> Result<SqlitePragmas, StoreError> {
    let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await?;
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await?;
    let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(&mut *conn)
        .await?;
    let busy_timeout_ms: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(&mut *conn)
        .await?;
    let temp_store: i64 = sqlx::query_scalar("PRAGMA temp_store")
        .fetch_one(&mut *conn)
        .await?;
    let synchronous = match synchronous {
        0 => "off".to_string(),
        1 => "normal".to_string(),
        2 => "full".to_string(),
        3 => "extra".to_string(),
        n => n.to_string(),
    };
    Ok(SqlitePragmas {
        journal_mode: journal_mode.to_ascii_lowercase(),
        synchronous,
        foreign_keys: foreign_keys == 1,
        busy_timeout_ms,
        temp_store: match temp_store {
            0 => "default".to_string(),
            1 => "file".to_string(),
            2 => "memory".to_string(),
            n => n.to_string(),
        },
    })
}

fn check_pragmas(who: &str, p: &SqlitePragmas, busy_ms: i64) -> Result<(), StoreError> {
    let ok = p.journal_mode == "wal"
        && p.synchronous == "full"
        && p.foreign_keys
        && p.busy_timeout_ms == busy_ms
        && p.temp_store == "memory";
    if ok {
        Ok(())
    } else {
        Err(StoreError::Database(sqlx::Error::Configuration(
            format!(
                "sqlite {who} connection refused its pragmas: wanted journal_mode=wal synchronous=full \
                 foreign_keys=1 busy_timeout={busy_ms} temp_store=memory, got {p:?}"
            )
            .into(),
        )))
    }
}

/// Copies committed WAL frames back into the database off the writer's commit path, so a
/// commit never waits for a checkpoint's writes and fsync (SQLite's automatic checkpoint runs
/// inside the commit that crosses the threshold: a latency spike every few hundred payments).
/// PASSIVE: it copies what no reader still needs and never blocks the writer.
async fn checkpoint_loop(mut conn: SqliteConnection, every: Duration, alive: std::sync::Weak<()>) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if alive.upgrade().is_none() {
            break;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            debug!(error = %e, "background checkpoint failed; the next tick retries");
        }
    }
    let _ = conn.close().await;
}

/// The writer task: owns the only writing connection.
struct Writer {
    conn: SqliteConnection,
    rx: mpsc::Receiver<Job>,
    batch_max: usize,
    counters: Arc<Counters>,
    purges: VecDeque<PurgeJob>,
}

impl Writer {
    async fn run(mut self) {
        loop {
            // With a purge under way, don't wait: take what is queued, then do a chunk.
            let first = if self.purges.is_empty() {
                match self.rx.recv().await {
                    Some(job) => Some(job),
                    None => break,
                }
            } else {
                self.rx.try_recv().ok()
            };
            let mut group: Vec<(WriteBatch, BatchReply)> = Vec::new();
            if let Some(job) = first {
                self.route(job, &mut group);
                while group.len() < self.batch_max {
                    match self.rx.try_recv() {
                        Ok(job) => self.route(job, &mut group),
                        Err(_) => break,
                    }
                }
            }
            if !group.is_empty() {
                self.commit_group(group).await;
            }
            self.purge_step().await;
        }
        debug!("sqlite writer: queue closed, closing the connection");
        if let Err(e) = self.conn.close().await {
            warn!(error = %e, "sqlite writer: closing the connection failed");
        }
    }

    fn route(&mut self, job: Job, group: &mut Vec<(WriteBatch, BatchReply)>) {
        match job {
            Job::Batch { batch, reply } => group.push((batch, reply)),
            Job::Purge { before, reply } => self.purges.push_back(PurgeJob {
                before,
                deleted: 0,
                reply,
            }),
        }
    }

    async fn commit_group(&mut self, group: Vec<(WriteBatch, BatchReply)>) {
        let size = group.len();
        let (batches, replies): (Vec<WriteBatch>, Vec<BatchReply>) = group.into_iter().unzip();
        match self.apply_group(&batches).await {
            Ok(results) => {
                let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .batches_committed
                    .fetch_add(ok, Ordering::Relaxed);
                debug!(batches = size, ok, "sqlite group committed");
                for (reply, result) in replies.into_iter().zip(results) {
                    // The requester may have gone away; the write is durable all the same.
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                warn!(error = %e, batches = size, "sqlite group commit failed; rolling back the whole group");
                if let Err(rb) = sqlx::query("ROLLBACK").execute(&mut self.conn).await {
                    debug!(error = %rb, "sqlite rollback after a failed group (no transaction left is expected)");
                }
                for reply in replies {
                    let _ = reply.send(Err(group_failure(&e)));
                }
            }
        }
    }

    /// Applies a group in one transaction. `Err` means the transaction as a whole failed
    /// (nothing of it is committed); `Ok` holds each batch's own outcome, after `COMMIT`.
    async fn apply_group(
        &mut self,
        batches: &[WriteBatch],
    ) -> Result<Vec<Result<(), WriteError>>, sqlx::Error> {
        let conn = &mut self.conn;
        if crate::bulk::eligible(batches) {
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
            match crate::bulk::apply(conn, batches).await {
                Ok(results) => {
                    sqlx::query("COMMIT").execute(&mut *conn).await?;
                    self.counters.bulk_commits.fetch_add(1, Ordering::Relaxed);
                    return Ok(results);
                }
                Err(why) => {
                    debug!(%why, batches = batches.len(), "bulk group path gave up; replaying batch by batch");
                    // A bulk statement that failed (`OR ROLLBACK`) has ended the transaction
                    // already; a row count the checks did not predict has not.
                    if let Err(e) = sqlx::query("ROLLBACK").execute(&mut *conn).await
                        && !no_transaction_active(&e)
                    {
                        return Err(e);
                    }
                }
            }
        }
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let mut results = Vec::with_capacity(batches.len());
        for batch in batches {
            sqlx::query("SAVEPOINT b").execute(&mut *conn).await?;
            match apply_batch(conn, batch).await {
                Ok(()) => {
                    sqlx::query("RELEASE b").execute(&mut *conn).await?;
                    results.push(Ok(()));
                }
                Err(e) => {
                    sqlx::query("ROLLBACK TO b").execute(&mut *conn).await?;
                    sqlx::query("RELEASE b").execute(&mut *conn).await?;
                    results.push(Err(e));
                }
            }
        }
        sqlx::query("COMMIT").execute(&mut *conn).await?;
        Ok(results)
    }

    /// Deletes one chunk for the oldest purge request; answers it when it is done.
    async fn purge_step(&mut self) {
        let Some(job) = self.purges.front_mut() else {
            return;
        };
        let result = sqlx::query(
            "DELETE FROM idempotency_keys WHERE (merchant_id, key) IN \
             (SELECT merchant_id, key FROM idempotency_keys WHERE created < ?1 LIMIT ?2)",
        )
        .bind(job.before)
        .bind(PURGE_CHUNK_ROWS)
        .execute(&mut self.conn)
        .await;
        let done = match result {
            Ok(r) => {
                job.deleted += r.rows_affected();
                if r.rows_affected() < PURGE_CHUNK_ROWS as u64 {
                    Some(Ok(job.deleted))
                } else {
                    None
                }
            }
            Err(e) => Some(Err(StoreError::from(e))),
        };
        let Some(result) = done else { return };
        if let Some(job) = self.purges.pop_front() {
            if let Ok(n) = &result {
                info!(
                    deleted = n,
                    before = job.before,
                    "purged expired idempotency records"
                );
            }
            let _ = job.reply.send(result);
        }
    }
}

/// `ROLLBACK` found no transaction to end (SQLite's "cannot rollback - no transaction is active").
fn no_transaction_active(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.message().contains("no transaction is active"))
}

/// The error every batch of a failed group gets (sqlx errors do not clone).
fn group_failure(e: &sqlx::Error) -> WriteError {
    WriteError::Store(StoreError::Io(std::io::Error::other(format!(
        "group commit failed, nothing written: {e}"
    ))))
}

/// A statement's error as a batch outcome: a unique constraint is a conflict.
pub(crate) fn write_err(e: sqlx::Error) -> WriteError {
    if matches!(&e, sqlx::Error::Database(d) if d.is_unique_violation()) {
        return WriteError::Conflict(ConflictKind::Duplicate);
    }
    WriteError::Store(StoreError::Database(e))
}

pub(crate) fn to_i64(what: &str, v: u64) -> Result<i64, WriteError> {
    i64::try_from(v).map_err(|_| {
        WriteError::Store(StoreError::Corrupt(format!(
            "{what} {v} does not fit a signed 64-bit column"
        )))
    })
}

async fn apply_batch(conn: &mut SqliteConnection, batch: &WriteBatch) -> Result<(), WriteError> {
    for op in &batch.ops {
        apply_op(conn, op).await?;
    }
    Ok(())
}

async fn apply_op(conn: &mut SqliteConnection, op: &Write) -> Result<(), WriteError> {
    match op {
        Write::Merchant(m) => insert_merchant(conn, m).await,
        Write::ApiKey(k) => insert_api_key(conn, k).await,
        Write::PaymentMethod(pm) => insert_payment_method(conn, pm).await,
        Write::InsertIntent(pi) => insert_intent(conn, pi).await,
        Write::UpdateIntent(pi) => update_intent(conn, pi).await,
        Write::Charge(ch) => upsert_charge(conn, ch).await,
        Write::InsertRefund(r) => insert_refund(conn, r).await,
        Write::Postings(ps) => {
            for p in ps {
                insert_posting(conn, p).await?;
            }
            Ok(())
        }
        Write::Idempotency {
            record,
            replaces_before,
        } => upsert_idempotency(conn, record, *replaces_before).await,
        Write::Event(e) => insert_event(conn, e).await,
        Write::WebhookEndpoint(w) => upsert_endpoint(conn, w).await,
        Write::DeleteWebhookEndpoint { merchant, id } => delete_endpoint(conn, merchant, id).await,
        Write::Delivery(d) => update_delivery(conn, d).await,
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
            .await
        }
    }
}

async fn claim(
    conn: &mut SqliteConnection,
    endpoint: &str,
    merchant: &str,
    after_seq: i64,
    through_seq: i64,
    deliveries: &[Delivery],
) -> Result<(), WriteError> {
    let r = sqlx::query("UPDATE webhook_endpoints SET cursor_seq = ?1 WHERE id = ?2 AND merchant_id = ?3 AND cursor_seq = ?4")
        .bind(through_seq)
        .bind(endpoint)
        .bind(merchant)
        .bind(after_seq)
        .execute(&mut *conn)
        .await
        .map_err(write_err)?;
    if r.rows_affected() == 0 {
        let exists: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM webhook_endpoints WHERE id = ?1 AND merchant_id = ?2",
        )
        .bind(endpoint)
        .bind(merchant)
        .fetch_optional(&mut *conn)
        .await
        .map_err(write_err)?;
        // Deleted meanwhile: nothing to queue. Moved: claimed by another loop.
        return if exists.is_some() {
            Err(WriteError::Conflict(ConflictKind::Claimed))
        } else {
            Ok(())
        };
    }
    for d in deliveries {
        sqlx::query(
            "INSERT INTO webhook_deliveries (endpoint_id, event_id, merchant_id, state, attempts, next_attempt_at, created) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (endpoint_id, event_id) DO NOTHING",
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

/// `?` (an endpoint's `events_filter`) matches the event type in `type_col`.
fn wants(filter: &str, type_col: &str) -> String {
    format!("({filter} = ',*,' OR instr({filter}, ',' || {type_col} || ',') > 0)")
}

async fn insert_event(conn: &mut SqliteConnection, e: &EventRecord) -> Result<(), WriteError> {
    sqlx::query(
        "INSERT INTO events (id, merchant_id, type, created, data) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(&e.id)
    .bind(&e.merchant)
    .bind(&e.kind)
    .bind(e.created)
    .bind(&e.json)
    .execute(&mut *conn)
    .await
    .map_err(write_err)?;
    Ok(())
}

async fn upsert_endpoint(
    conn: &mut SqliteConnection,
    w: &WebhookEndpointRecord,
) -> Result<(), WriteError> {
    let r = sqlx::query(
        "INSERT INTO webhook_endpoints (id, merchant_id, created, url, status, events_filter, data, cursor_seq) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, (SELECT coalesce(max(seq), 0) FROM events)) \
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
    Ok(())
}

async fn delete_endpoint(
    conn: &mut SqliteConnection,
    merchant: &str,
    id: &str,
) -> Result<(), WriteError> {
    let r = sqlx::query("DELETE FROM webhook_endpoints WHERE id = ?1 AND merchant_id = ?2")
        .bind(id)
        .bind(merchant)
        .execute(&mut *conn)
        .await
        .map_err(write_err)?;
    if r.rows_affected() > 0 {
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = ?1 AND merchant_id = ?2")
            .bind(id)
            .bind(merchant)
            .execute(&mut *conn)
            .await
            .map_err(write_err)?;
    }
    Ok(())
}

async fn update_delivery(conn: &mut SqliteConnection, d: &Delivery) -> Result<(), WriteError> {
    // The endpoint may have been deleted meanwhile: then there is nothing to update.
    sqlx::query(
        "UPDATE webhook_deliveries SET state = ?1, attempts = ?2, next_attempt_at = ?3, last_attempt_at = ?4,            last_status = ?5, last_error = ?6 WHERE endpoint_id = ?7 AND event_id = ?8 AND merchant_id = ?9",
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
    Ok(())
}

/// An event from its stored JSON (a listed page holds only that).
pub(crate) fn event_from_json(merchant: &str, json: String) -> Result<EventRecord, StoreError> {
    let v: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| StoreError::Corrupt(format!("a stored event does not parse: {e}")))?;
    Ok(EventRecord {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        merchant: merchant.to_string(),
        kind: v["type"].as_str().unwrap_or_default().to_string(),
        created: v["created"].as_i64().unwrap_or_default(),
        json,
    })
}

async fn insert_merchant(conn: &mut SqliteConnection, m: &Merchant) -> Result<(), WriteError> {
    sqlx::query("INSERT INTO merchants (id, name, created) VALUES (?1, ?2, ?3)")
        .bind(&m.id)
        .bind(&m.name)
        .bind(m.created)
        .execute(&mut *conn)
        .await
        .map_err(write_err)?;
    Ok(())
}

async fn insert_api_key(conn: &mut SqliteConnection, k: &ApiKeyRecord) -> Result<(), WriteError> {
    sqlx::query(
        "INSERT INTO api_keys (hash, merchant_id, prefix, created) VALUES (?1, ?2, ?3, ?4)",
    )
    .bind(&k.hash[..])
    .bind(&k.merchant)
    .bind(&k.prefix)
    .bind(k.created)
    .execute(&mut *conn)
    .await
    .map_err(write_err)?;
    Ok(())
}

async fn insert_payment_method(
    conn: &mut SqliteConnection,
    pm: &PaymentMethod,
) -> Result<(), WriteError> {
    sqlx::query(
        "INSERT INTO payment_methods (id, merchant_id, created, data) VALUES (?1, ?2, ?3, ?4)",
    )
    .bind(&pm.id)
    .bind(&pm.merchant)
    .bind(pm.created)
    .bind(encode(pm)?)
    .execute(&mut *conn)
    .await
    .map_err(write_err)?;
    Ok(())
}

async fn insert_intent(conn: &mut SqliteConnection, pi: &PaymentIntent) -> Result<(), WriteError> {
    sqlx::query(
        "INSERT INTO payment_intents (id, merchant_id, created, version, status, data) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(&pi.id)
    .bind(&pi.merchant)
    .bind(pi.created)
    .bind(to_i64("intent version", pi.version)?)
    .bind(pi.status.as_str())
    .bind(encode(pi)?)
    .execute(&mut *conn)
    .await
    .map_err(write_err)?;
    Ok(())
}

async fn update_intent(conn: &mut SqliteConnection, pi: &PaymentIntent) -> Result<(), WriteError> {
    let Some(expected) = pi.version.checked_sub(1) else {
        // Version 0 is a new intent: there is no earlier version to replace.
        return Err(WriteError::Conflict(ConflictKind::IntentVersion));
    };
    let r = sqlx::query(
        "UPDATE payment_intents SET version = ?1, status = ?2, data = ?3 \
         WHERE id = ?4 AND merchant_id = ?5 AND version = ?6",
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
    Ok(())
}

async fn upsert_charge(conn: &mut SqliteConnection, ch: &Charge) -> Result<(), WriteError> {
    // Replacing keeps the row (and its seq); a charge id of another merchant is never
    // overwritten.
    let r = sqlx::query(
        "INSERT INTO charges (id, merchant_id, created, data) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (id) DO UPDATE SET data = excluded.data \
         WHERE charges.merchant_id = excluded.merchant_id",
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
    Ok(())
}

async fn insert_refund(conn: &mut SqliteConnection, r: &Refund) -> Result<(), WriteError> {
    sqlx::query(
        "INSERT INTO refunds (id, merchant_id, payment_intent, amount, created, data) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(&r.id)
    .bind(&r.merchant)
    .bind(&r.payment_intent)
    .bind(to_i64("refund amount", r.amount)?)
    .bind(r.created)
    .bind(encode(r)?)
    .execute(&mut *conn)
    .await
    .map_err(write_err)?;
    Ok(())
}

/// Posting::new checks this too; a posting built some other way must not reach the books.
pub(crate) fn check_posting(p: &Posting) -> Result<(), WriteError> {
    let sum: i128 = p.legs.iter().map(|l| l.amount as i128).sum();
    if sum != 0 || p.legs.len() < 2 {
        return Err(WriteError::Store(StoreError::Corrupt(format!(
            "refusing posting {}: {} leg(s) summing to {sum}; a posting needs two or more legs summing to zero",
            p.id,
            p.legs.len()
        ))));
    }
    Ok(())
}

async fn insert_posting(conn: &mut SqliteConnection, p: &Posting) -> Result<(), WriteError> {
    check_posting(p)?;
    for (i, leg) in p.legs.iter().enumerate() {
        sqlx::query(
            "INSERT INTO ledger_entries \
             (posting_id, leg, merchant_id, currency, account, amount, payment_intent, kind, created) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
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

async fn upsert_idempotency(
    conn: &mut SqliteConnection,
    rec: &IdempotencyRecord,
    replaces_before: Timestamp,
) -> Result<(), WriteError> {
    let r = sqlx::query(
        "INSERT INTO idempotency_keys (merchant_id, key, request_hash, status, body, created) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (merchant_id, key) DO UPDATE SET \
           request_hash = excluded.request_hash, status = excluded.status, \
           body = excluded.body, created = excluded.created \
         WHERE idempotency_keys.created < ?7",
    )
    .bind(&rec.merchant)
    .bind(&rec.key)
    .bind(&rec.request_hash[..])
    .bind(i64::from(rec.status))
    .bind(&rec.body[..])
    .bind(rec.created)
    .bind(replaces_before)
    .execute(&mut *conn)
    .await
    .map_err(write_err)?;
    if r.rows_affected() == 0 {
        return Err(WriteError::Conflict(ConflictKind::IdempotencyKey));
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn merchant_by_key_hash(&self, hash: &[u8; 32]) -> Result<Option<Merchant>, StoreError> {
        let row: Option<MerchantRow> = sqlx::query_as(
            "SELECT m.id, m.name, m.created FROM api_keys k JOIN merchants m ON m.id = k.merchant_id \
             WHERE k.hash = ?1",
        )
        .bind(&hash[..])
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        Ok(row.map(Merchant::from))
    }

    async fn merchant_by_name(&self, name: &str) -> Result<Option<Merchant>, StoreError> {
        let row: Option<MerchantRow> =
            sqlx::query_as("SELECT id, name, created FROM merchants WHERE name = ?1")
                .bind(name)
                .fetch_optional(&mut *self.reader().await?)
                .await?;
        Ok(row.map(Merchant::from))
    }

    async fn merchants_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM merchants")
            .fetch_one(&mut *self.reader().await?)
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

    async fn event(&self, merchant: &str, id: &str) -> Result<Option<EventRecord>, StoreError> {
        let row: Option<EventRow> = sqlx::query_as("SELECT id, merchant_id, type, created, data FROM events WHERE id = ?1 AND merchant_id = ?2")
            .bind(id)
            .bind(merchant)
            .fetch_optional(&mut *self.reader().await?)
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

    async fn due_deliveries(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let rows: Vec<DueRow> = sqlx::query_as(
            "SELECT d.*, w.url AS url, e.data AS body FROM webhook_deliveries AS d              JOIN webhook_endpoints AS w ON w.id = d.endpoint_id AND w.status = 'enabled'              JOIN events AS e ON e.id = d.event_id              WHERE d.state = 'pending' AND d.next_attempt_at <= ?1 ORDER BY d.next_attempt_at LIMIT ?2",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *self.reader().await?)
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
        let rows: Vec<DeliveryRow> = sqlx::query_as(
            "SELECT * FROM webhook_deliveries WHERE merchant_id = ?1 AND (?2 IS NULL OR event_id = ?2)                AND (?3 IS NULL OR endpoint_id = ?3) ORDER BY created DESC, event_id DESC LIMIT ?4",
        )
        .bind(merchant)
        .bind(event)
        .bind(endpoint)
        .bind(i64::from(limit.clamp(1, PAGE_LIMIT_MAX)))
        .fetch_all(&mut *self.reader().await?)
        .await?;
        rows.into_iter().map(Delivery::try_from).collect()
    }

    async fn pending_deliveries(&self) -> Result<u64, StoreError> {
        let sql = format!(
            "SELECT (SELECT count(*) FROM webhook_deliveries WHERE state = 'pending') \
               + (SELECT count(*) FROM webhook_endpoints AS w JOIN events AS e \
                    ON e.merchant_id = w.merchant_id AND e.seq > w.cursor_seq AND {} \
                  WHERE w.status = 'enabled')",
            wants("w.events_filter", "e.type")
        );
        let n: i64 = sqlx::query_scalar(&sql)
            .fetch_one(&mut *self.reader().await?)
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn pending_webhooks(&self, merchant: &str, event: &str) -> Result<u64, StoreError> {
        let sql = format!(
            "SELECT (SELECT count(*) FROM webhook_deliveries WHERE event_id = ?2 AND merchant_id = ?1 AND state = 'pending') \
               + (SELECT count(*) FROM events AS e JOIN webhook_endpoints AS w \
                    ON w.merchant_id = e.merchant_id AND w.status = 'enabled' AND w.cursor_seq < e.seq AND {} \
                  WHERE e.id = ?2 AND e.merchant_id = ?1)",
            wants("w.events_filter", "e.type")
        );
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(merchant)
            .bind(event)
            .fetch_one(&mut *self.reader().await?)
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn unclaimed(
        &self,
        per_endpoint: u32,
        scan_max: u32,
    ) -> Result<Vec<Unclaimed>, StoreError> {
        let endpoints: Vec<BacklogRow> = sqlx::query_as(
            "SELECT id, merchant_id, url, events_filter, cursor_seq FROM webhook_endpoints AS w \
             WHERE status = 'enabled' AND EXISTS (SELECT 1 FROM events AS e WHERE e.merchant_id = w.merchant_id AND e.seq > w.cursor_seq) \
             ORDER BY seq",
        )
        .fetch_all(&mut *self.reader().await?)
        .await?;
        let sql = format!(
            "SELECT seq, id, merchant_id, type, created, CASE WHEN {} THEN data END AS data FROM events \
             WHERE merchant_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?4",
            wants("?3", "type")
        );
        let mut out = Vec::new();
        for w in endpoints {
            let scanned: Vec<ScannedRow> = sqlx::query_as(&sql)
                .bind(&w.merchant_id)
                .bind(w.cursor_seq)
                .bind(&w.events_filter)
                .bind(i64::from(scan_max))
                .fetch_all(&mut *self.reader().await?)
                .await?;
            out.extend(crate::rows::unclaimed(w, scanned, per_endpoint));
        }
        Ok(out)
    }

    async fn idempotency(
        &self,
        merchant: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row: Option<IdempotencyRow> = sqlx::query_as(
            "SELECT request_hash, status, body, created FROM idempotency_keys WHERE merchant_id = ?1 AND key = ?2",
        )
        .bind(merchant)
        .bind(key)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        row.map(|r| r.into_record(merchant, key)).transpose()
    }

    async fn write(&self, batch: WriteBatch) -> Result<(), WriteError> {
        let (reply, answer) = oneshot::channel();
        match self.jobs.try_send(Job::Batch { batch, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(WriteError::QueueFull {
                    limit: self.queue_max,
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(WriteError::Closed),
        }
        answer.await.map_err(|_| WriteError::Closed)?
    }

    async fn purge_idempotency(&self, before: Timestamp) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        // A purge is background work: it may wait for room in the queue rather than fail.
        self.jobs
            .send(Job::Purge { before, reply })
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        answer
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?
    }

    async fn audit(&self) -> Result<AuditReport, StoreError> {
        let mut audit = Audit::new();
        // One read transaction: every pass sees the same snapshot while writes go on.
        let mut conn = self.reader().await?;
        let mut tx = conn.begin().await?;
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
        let mut conn = self.reader().await?;
        Ok(schema::sqlite::history(&mut conn).await?)
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            writer_queue_len: self.jobs.max_capacity() - self.jobs.capacity(),
            writer_queue_max: self.queue_max,
            batches_committed: self.counters.batches_committed.load(Ordering::Relaxed),
            commits: self.counters.commits.load(Ordering::Relaxed),
            bulk_commits: self.counters.bulk_commits.load(Ordering::Relaxed),
            readers_busy: {
                let st = self.readers.status();
                st.size.saturating_sub(st.available)
            },
            readers_max: self.readers_max as usize,
        }
    }
}
