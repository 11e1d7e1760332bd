//! The schema runner's SQL on PostgreSQL: the step is one transaction (PostgreSQL's DDL is
//! transactional) that first takes a transaction-scoped advisory lock, so replicas starting
//! together on one database migrate once, one after the other.

use sqlx::{Executor, PgConnection};

use super::{AppliedMigration, HistoryRow, Kind, Migration, SchemaDb, SqlxRow, HISTORY_INSERT, HISTORY_SELECT, SQLX_INSERT};

/// The advisory lock key of the schema step (an arbitrary constant: "pw schema").
const SCHEMA_LOCK: i64 = 0x7077_2073_6368_656d;

pub(crate) struct Postgres<'c>(pub(crate) &'c mut PgConnection);

#[async_trait::async_trait]
impl SchemaDb for Postgres<'_> {
    async fn begin(&mut self) -> Result<(), sqlx::Error> {
        self.0.execute("BEGIN").await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SCHEMA_LOCK).execute(&mut *self.0).await.map(drop)
    }

    async fn commit(&mut self) -> Result<(), sqlx::Error> {
        self.0.execute("COMMIT").await.map(drop)
    }

    async fn rollback(&mut self) -> Result<(), sqlx::Error> {
        self.0.execute("ROLLBACK").await.map(drop)
    }

    async fn table_exists(&mut self, name: &str) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(name).fetch_one(&mut *self.0).await
    }

    async fn create_history(&mut self) -> Result<(), sqlx::Error> {
        self.0.execute(
            "CREATE TABLE IF NOT EXISTS paywarden_schema_history (
                version         BIGINT PRIMARY KEY,
                description     TEXT NOT NULL,
                kind            TEXT CHECK (kind IN ('expand', 'contract')),
                checksum        BYTEA NOT NULL,
                release         TEXT NOT NULL,
                applied_unix_ms BIGINT NOT NULL,
                execution_ms    BIGINT NOT NULL
            )",
        )
        .await
        .map(drop)
    }

    async fn history(&mut self) -> Result<Vec<AppliedMigration>, sqlx::Error> {
        let rows: Vec<HistoryRow> = sqlx::query_as(HISTORY_SELECT).fetch_all(&mut *self.0).await?;
        Ok(rows.into_iter().map(AppliedMigration::from).collect())
    }

    async fn sqlx_rows(&mut self) -> Result<Vec<SqlxRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT version, description, checksum, (extract(epoch FROM installed_on) * 1000)::BIGINT AS installed_unix_ms \
             FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&mut *self.0)
        .await
    }

    async fn execute(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        self.0.execute(sql).await.map(drop)
    }

    async fn insert_history(&mut self, row: &AppliedMigration, execution_ms: i64) -> Result<(), sqlx::Error> {
        sqlx::query(HISTORY_INSERT)
            .bind(row.version)
            .bind(&row.description)
            .bind(row.kind.map(Kind::as_str))
            .bind(&row.checksum)
            .bind(&row.release)
            .bind(row.applied_unix_ms)
            .bind(execution_ms)
            .execute(&mut *self.0)
            .await
            .map(drop)
    }

    async fn insert_sqlx_row(&mut self, m: &Migration, execution_ns: i64) -> Result<(), sqlx::Error> {
        // sqlx 0.8's own table, as its migrator makes it.
        self.0.execute(
            "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
)",
        )
        .await?;
        sqlx::query(SQLX_INSERT)
            .bind(m.version)
            .bind(&m.description)
            .bind(&m.checksum)
            .bind(execution_ns)
            .execute(&mut *self.0)
            .await
            .map(drop)
    }
}


/// The history as the pool sees it (empty before the first start of a release that keeps it).
pub(crate) async fn history(conn: &mut PgConnection) -> Result<Vec<AppliedMigration>, sqlx::Error> {
    let mut db = Postgres(conn);
    if !db.table_exists("paywarden_schema_history").await? {
        return Ok(Vec::new());
    }
    db.history().await
}
