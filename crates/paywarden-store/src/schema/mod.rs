//! Expand/contract migrations: which migrations a release carries, what each is, which
//! release applied which, and whether a release may run on a database that another release
//! migrated.
//!
//! # The rules
//!
//! Every migration file starts with `-- paywarden: expand` or `-- paywarden: contract`
//! ([`file`]; `build.rs` refuses to build without it). An **expand** migration is additive:
//! the release before it keeps working on the migrated schema. A **contract** migration is
//! not. A release starts on a database that has migrations it does not know (a newer release
//! applied them) when every one of them is an expand, and refuses to start, naming the
//! migration and the release that applied it, when one is a contract. So a canary that
//! migrates never strands its rollback target, and `paywarden deploy` refuses a release whose
//! pending migrations include a contract (the schema gate, in the rollout controller).
//!
//! # The record
//!
//! `paywarden_schema_history` holds one row per applied migration: its version, description,
//! kind, checksum, the release that applied it and when. It is made by the runner itself
//! (not by a migration), so a release from before it can still run where it exists.
//! Migrations up to [`Backend::sqlx_legacy_max`] were applied by releases that used sqlx's
//! migrator and its `_sqlx_migrations` table, which refuses to run on a database with a
//! migration it does not know: they are still recorded there too (with sqlx's checksum of
//! the same SQL), so such a release runs on whatever expand migrations came later, and later
//! migrations are recorded only in the history. Rows found in `_sqlx_migrations` without a
//! history row are recorded as applied "before schema history".
//!
//! # Applying
//!
//! One transaction for the whole step (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: `BEGIN` and a
//! transaction-scoped advisory lock), so processes starting together on one database migrate
//! once and a crash leaves the schema as it was: read the history, plan ([`plan`], pure),
//! refuse or apply the pending migrations in version order with their history rows, commit.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha384};

pub mod file;
pub(crate) mod postgres;
pub(crate) mod sqlite;

pub use file::{Kind, HOW_TO_MARK, MARKER_CONTRACT, MARKER_EXPAND};

include!(concat!(env!("OUT_DIR"), "/shipped_migrations.rs"));

/// The release label recorded for migrations found in `_sqlx_migrations` without a history row.
pub const BEFORE_HISTORY: &str = "before schema history";
/// Most migrations one set may hold.
pub const MIGRATIONS_MAX: usize = 10_000;

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        let s = String::deserialize(d)?;
        Kind::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("kind {s:?}: expand or contract")))
    }
}

/// Which database a migration set is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The last version releases before the schema history applied through sqlx's migrator
    /// (SQLite 0001..0004, PostgreSQL 0001): recorded in `_sqlx_migrations` too.
    pub fn sqlx_legacy_max(self) -> i64 {
        match self {
            Backend::Sqlite => 4,
            Backend::Postgres => 1,
        }
    }

    fn shipped(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Backend::Sqlite => SHIPPED_SQLITE,
            Backend::Postgres => SHIPPED_POSTGRES,
        }
    }
}

/// One migration this release carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: i64,
    pub description: String,
    pub file: String,
    pub kind: Kind,
    /// The SQL after the marker line.
    pub sql: String,
    /// SHA-384 of `sql` (sqlx's checksum, so the migrations from before the markers keep
    /// theirs).
    pub checksum: Vec<u8>,
}

/// Migrations a build adds to the shipped ones: none in a shipped binary. The tests' second
/// builds (`crates/paywarden/examples/schema_*.rs`) carry one or two, to show a rollout
/// across a schema change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExtraMigrations {
    /// `(file name, text)`, as a migration directory would hold them.
    pub sqlite: &'static [(&'static str, &'static str)],
    pub postgres: &'static [(&'static str, &'static str)],
}

/// The schema settings of a store: the label recorded with what this release applies, and
/// any migrations the build adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaOptions {
    /// e.g. `v2 (sha256 0123456789ab)` under `paywarden up`; default `paywarden 0.1.0`.
    pub release: String,
    pub extra: ExtraMigrations,
}

impl Default for SchemaOptions {
    fn default() -> SchemaOptions {
        SchemaOptions { release: format!("paywarden {}", env!("CARGO_PKG_VERSION")), extra: ExtraMigrations::default() }
    }
}

impl SchemaOptions {
    /// The migrations this release carries for `backend`, oldest first.
    pub fn migrations(&self, backend: Backend) -> Result<Migrations, SchemaError> {
        let extra = match backend {
            Backend::Sqlite => self.extra.sqlite,
            Backend::Postgres => self.extra.postgres,
        };
        Migrations::parse(backend, backend.shipped().iter().chain(extra))
    }
}

/// A release's migrations for one backend, in version order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrations {
    pub backend: Backend,
    pub list: Vec<Migration>,
}

impl Migrations {
    /// Parses `(file name, text)` pairs: each must be marked and versions must be distinct.
    pub fn parse<'a>(backend: Backend, files: impl IntoIterator<Item = &'a (&'a str, &'a str)>) -> Result<Migrations, SchemaError> {
        let mut list: Vec<Migration> = Vec::new();
        for (name, text) in files {
            let p = file::parse(name, text).map_err(|message| SchemaError::BadFile { file: name.to_string(), message })?;
            if let Some(other) = list.iter().find(|m| m.version == p.version) {
                return Err(SchemaError::BadFile {
                    file: name.to_string(),
                    message: format!("version {} is also {}'s; give the newer one the next free number", p.version, other.file),
                });
            }
            if list.len() == MIGRATIONS_MAX {
                return Err(SchemaError::BadFile { file: name.to_string(), message: format!("more than {MIGRATIONS_MAX} migrations") });
            }
            list.push(Migration {
                version: p.version,
                description: p.description,
                file: name.to_string(),
                kind: p.kind,
                sql: p.sql.to_string(),
                checksum: checksum(p.sql),
            });
        }
        list.sort_by_key(|m| m.version);
        Ok(Migrations { backend, list })
    }
}

/// sqlx's migration checksum: SHA-384 of the SQL.
pub fn checksum(sql: &str) -> Vec<u8> {
    Sha384::digest(sql.as_bytes()).to_vec()
}

/// One applied migration, as the database records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedMigration {
    pub version: i64,
    pub description: String,
    /// `None`: found in `_sqlx_migrations` and unknown to this release, so of unknown kind.
    pub kind: Option<Kind>,
    /// The release that applied it, or [`BEFORE_HISTORY`].
    pub release: String,
    pub applied_unix_ms: i64,
    #[serde(skip)]
    pub checksum: Vec<u8>,
}

/// A migration this release would apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMigration {
    pub version: i64,
    pub description: String,
    pub kind: Kind,
}

/// What a release finds on a database, and what it would do there. Pure data: [`plan`] makes
/// it from the release's migrations and the database's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaPlan {
    /// The release looking.
    pub release: String,
    /// Every applied migration, oldest first (the schema's history).
    pub applied: Vec<AppliedMigration>,
    /// Migrations this release carries that the database lacks; applied at its start.
    pub pending: Vec<PendingMigration>,
    /// Applied migrations this release does not know (a newer release applied them).
    pub unknown: Vec<AppliedMigration>,
    /// Why this release cannot run on the database; `None` if it can.
    pub refused: Option<String>,
}

impl SchemaPlan {
    /// The pending migrations that are contracts.
    pub fn pending_contracts(&self) -> impl Iterator<Item = &PendingMigration> {
        self.pending.iter().filter(|m| m.kind == Kind::Contract)
    }
}

/// A migration's name as operators see it: `0005_customers`-like, from version and description.
pub fn display_name(version: i64, description: &str) -> String {
    format!("{version:04}_{}", description.replace(' ', "_"))
}

/// Plans `release`'s start on a database whose history is `applied`: what it would apply, what
/// it does not know, and whether it may run at all (every unknown migration an expand, every
/// known one applied from the same SQL).
pub fn plan(known: &Migrations, applied: Vec<AppliedMigration>, release: &str) -> SchemaPlan {
    let mut refusals = Vec::new();
    let mut unknown = Vec::new();
    for a in &applied {
        match known.list.iter().find(|m| m.version == a.version) {
            Some(m) if m.checksum != a.checksum && !a.checksum.is_empty() => refusals.push(format!(
                "migration {} was applied by {} from other SQL than this release carries: a shipped migration must \
                 never change once applied; restore its file and put the change in a new migration",
                display_name(a.version, &a.description),
                a.release
            )),
            Some(_) => {}
            None => {
                match a.kind {
                    Some(Kind::Expand) => {}
                    Some(Kind::Contract) => refusals.push(format!(
                        "migration {} is a contract migration applied by {} at {}, which {release} does not know: \
                         {release} cannot run on this schema; run {} (or a later release) instead",
                        display_name(a.version, &a.description),
                        a.release,
                        format_unix_ms(a.applied_unix_ms),
                        a.release
                    )),
                    None => refusals.push(format!(
                        "migration {} was applied {} and {release} does not know it, nor whether it is an expand \
                         or a contract: run the release that applied it",
                        display_name(a.version, &a.description),
                        a.release
                    )),
                }
                unknown.push(a.clone());
            }
        }
    }
    let pending = known
        .list
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .map(|m| PendingMigration { version: m.version, description: m.description.clone(), kind: m.kind })
        .collect();
    let refused = if refusals.is_empty() { None } else { Some(refusals.join("; ")) };
    SchemaPlan { release: release.to_string(), applied, pending, unknown, refused }
}

/// `2026-12-05T10:11:12Z` (UTC, seconds).
pub fn format_unix_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub(crate) fn now_unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("migration {file} is refused: {message}")]
    BadFile { file: String, message: String },
    /// This release cannot run on the database (the plan's `refused`).
    #[error("{0}")]
    Refused(String),
    #[error("migration {name} failed: {source}")]
    Failed { name: String, source: sqlx::Error },
    #[error("database error while migrating: {0}")]
    Database(#[from] sqlx::Error),
}

/// A row of sqlx's `_sqlx_migrations`, as both backends select it (`installed_unix_ms` from
/// each one's own timestamp arithmetic).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct SqlxRow {
    pub version: i64,
    pub description: String,
    pub checksum: Vec<u8>,
    pub installed_unix_ms: Option<i64>,
}

/// A row of `paywarden_schema_history`, as both backends read it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct HistoryRow {
    version: i64,
    description: String,
    kind: Option<String>,
    checksum: Vec<u8>,
    release: String,
    applied_unix_ms: i64,
}

impl From<HistoryRow> for AppliedMigration {
    fn from(r: HistoryRow) -> AppliedMigration {
        AppliedMigration {
            version: r.version,
            description: r.description,
            kind: r.kind.as_deref().and_then(Kind::parse),
            release: r.release,
            applied_unix_ms: r.applied_unix_ms,
            checksum: r.checksum,
        }
    }
}

/// The statements both backends share (`$N` parameters: sqlx binds them on SQLite too).
pub(crate) const HISTORY_SELECT: &str =
    "SELECT version, description, kind, checksum, release, applied_unix_ms FROM paywarden_schema_history ORDER BY version";
pub(crate) const HISTORY_INSERT: &str = "INSERT INTO paywarden_schema_history \
     (version, description, kind, checksum, release, applied_unix_ms, execution_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub(crate) const SQLX_INSERT: &str =
    "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES ($1, $2, TRUE, $3, $4)";

/// What the runner needs of a database connection; one implementation per backend.
#[async_trait::async_trait]
pub(crate) trait SchemaDb: Send {
    /// Starts the schema step's transaction, holding the schema lock until it ends.
    async fn begin(&mut self) -> Result<(), sqlx::Error>;
    async fn commit(&mut self) -> Result<(), sqlx::Error>;
    async fn rollback(&mut self) -> Result<(), sqlx::Error>;
    async fn table_exists(&mut self, name: &str) -> Result<bool, sqlx::Error>;
    async fn create_history(&mut self) -> Result<(), sqlx::Error>;
    async fn history(&mut self) -> Result<Vec<AppliedMigration>, sqlx::Error>;
    async fn sqlx_rows(&mut self) -> Result<Vec<SqlxRow>, sqlx::Error>;
    async fn execute(&mut self, sql: &str) -> Result<(), sqlx::Error>;
    async fn insert_history(&mut self, row: &AppliedMigration, execution_ms: i64) -> Result<(), sqlx::Error>;
    /// Records `m` in `_sqlx_migrations` (made if missing) as sqlx's migrator would.
    async fn insert_sqlx_row(&mut self, m: &Migration, execution_ns: i64) -> Result<(), sqlx::Error>;
}

/// The history as recorded plus, in memory, the `_sqlx_migrations` rows it lacks.
async fn read_history<D: SchemaDb>(db: &mut D, known: &Migrations) -> Result<(Vec<AppliedMigration>, Vec<AppliedMigration>), sqlx::Error> {
    let recorded = if db.table_exists("paywarden_schema_history").await? { db.history().await? } else { Vec::new() };
    let mut missing = Vec::new();
    if db.table_exists("_sqlx_migrations").await? {
        for r in db.sqlx_rows().await? {
            if recorded.iter().any(|a| a.version == r.version) {
                continue;
            }
            let kind = known.list.iter().find(|m| m.version == r.version).map(|m| m.kind);
            missing.push(AppliedMigration {
                version: r.version,
                description: r.description,
                kind,
                release: BEFORE_HISTORY.to_string(),
                applied_unix_ms: r.installed_unix_ms.unwrap_or(0),
                checksum: r.checksum,
            });
        }
    }
    Ok((recorded, missing))
}

fn merged(mut recorded: Vec<AppliedMigration>, missing: &[AppliedMigration]) -> Vec<AppliedMigration> {
    recorded.extend(missing.iter().cloned());
    recorded.sort_by_key(|a| a.version);
    recorded
}

/// Reads the database's history and plans `release`'s start on it. Writes nothing.
pub(crate) async fn inspect<D: SchemaDb>(db: &mut D, known: &Migrations, release: &str) -> Result<SchemaPlan, SchemaError> {
    let (recorded, missing) = read_history(db, known).await?;
    Ok(plan(known, merged(recorded, &missing), release))
}

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRun {
    /// The plan it followed (its `pending` are now applied).
    pub plan: SchemaPlan,
    /// The migrations it applied, oldest first.
    pub applied_now: Vec<AppliedMigration>,
}

/// The schema step at start: in one transaction, records what the history lacks, refuses if
/// this release cannot run on the database, applies the pending migrations.
pub(crate) async fn migrate<D: SchemaDb>(db: &mut D, known: &Migrations, release: &str) -> Result<MigrationRun, SchemaError> {
    db.begin().await?;
    match migrate_in_transaction(db, known, release).await {
        Ok(run) => {
            db.commit().await?;
            Ok(run)
        }
        Err(e) => {
            let _ = db.rollback().await;
            Err(e)
        }
    }
}

async fn migrate_in_transaction<D: SchemaDb>(db: &mut D, known: &Migrations, release: &str) -> Result<MigrationRun, SchemaError> {
    db.create_history().await?;
    let (recorded, missing) = read_history(db, known).await?;
    for a in &missing {
        db.insert_history(a, 0).await?;
    }
    let plan = plan(known, merged(recorded, &missing), release);
    if let Some(why) = &plan.refused {
        return Err(SchemaError::Refused(why.clone()));
    }
    let mut applied_now = Vec::new();
    for p in &plan.pending {
        let Some(m) = known.list.iter().find(|m| m.version == p.version) else { continue };
        let t0 = std::time::Instant::now();
        db.execute(&m.sql).await.map_err(|source| SchemaError::Failed { name: display_name(m.version, &m.description), source })?;
        let took = t0.elapsed();
        if m.version <= known.backend.sqlx_legacy_max() {
            db.insert_sqlx_row(m, took.as_nanos().min(i64::MAX as u128) as i64).await?;
        }
        let row = AppliedMigration {
            version: m.version,
            description: m.description.clone(),
            kind: Some(m.kind),
            release: release.to_string(),
            applied_unix_ms: now_unix_ms(),
            checksum: m.checksum.clone(),
        };
        db.insert_history(&row, took.as_millis().min(i64::MAX as u128) as i64).await?;
        tracing::info!(migration = %display_name(m.version, &m.description), kind = m.kind.as_str(), release, took_ms = took.as_millis() as u64, "migration applied");
        applied_now.push(row);
    }
    Ok(MigrationRun { plan, applied_now })
}

/// Statements that make a migration other than additive, each as its first words; empty for
/// an additive migration. A contributor's check (the shipped migrations' markers are tested
/// against it), not a parser: it reads statements split at `;` outside comments and quotes.
pub fn non_additive_statements(sql: &str) -> Vec<String> {
    statements(sql)
        .into_iter()
        .filter_map(|s| {
            let words: Vec<String> = s.split_whitespace().map(|w| w.to_ascii_uppercase()).collect();
            let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
            let additive = match w(0) {
                "CREATE" => matches!(w(1), "TABLE" | "INDEX" | "SEQUENCE") || (w(1) == "UNIQUE" && w(2) == "INDEX"),
                // Backfills of new columns and tables.
                "INSERT" | "UPDATE" => true,
                "ALTER" if w(1) == "TABLE" => {
                    // ALTER TABLE [IF EXISTS] name ADD [COLUMN] ...: additive unless NOT NULL
                    // without a default (the previous release's inserts would fail).
                    let rest: Vec<&str> = words.iter().skip(2).map(String::as_str).skip_while(|x| matches!(*x, "IF" | "EXISTS" | "ONLY")).skip(1).collect();
                    let adds_column = rest.first() == Some(&"ADD") && !matches!(rest.get(1).copied(), Some("CONSTRAINT" | "PRIMARY" | "UNIQUE" | "FOREIGN" | "CHECK"));
                    let text = rest.join(" ");
                    adds_column && (!text.contains("NOT NULL") || text.contains("DEFAULT"))
                }
                _ => false,
            };
            (!additive).then(|| words.iter().take(6).cloned().collect::<Vec<_>>().join(" "))
        })
        .collect()
}

/// The statements of `sql`, comments removed, split at `;` outside quotes.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    cur.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    for n in chars.by_ref() {
                        if n == '\n' {
                            break;
                        }
                    }
                    cur.push(' ');
                }
                '/' if chars.peek() == Some(&'*') => {
                    chars.next();
                    let mut prev = ' ';
                    for n in chars.by_ref() {
                        if prev == '*' && n == '/' {
                            break;
                        }
                        prev = n;
                    }
                    cur.push(' ');
                }
                ';' => {
                    if !cur.trim().is_empty() {
                        out.push(cur.trim().to_string());
                    }
                    cur.clear();
                }
                _ => cur.push(c),
            },
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(files: &[(&'static str, &'static str)]) -> Migrations {
        Migrations::parse(Backend::Sqlite, files).unwrap()
    }

    fn applied(version: i64, kind: Option<Kind>, sql: &str, release: &str) -> AppliedMigration {
        AppliedMigration { version, description: format!("m{version}"), kind, release: release.into(), applied_unix_ms: 0, checksum: checksum(sql) }
    }

    #[test]
    fn every_shipped_migration_is_marked_and_its_marker_matches_its_statements() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let set = SchemaOptions::default().migrations(backend).unwrap();
            assert!(!set.list.is_empty());
            for mig in &set.list {
                let found = non_additive_statements(&mig.sql);
                match mig.kind {
                    Kind::Expand => assert!(found.is_empty(), "{backend:?} {} is marked expand but has {found:?}", mig.file),
                    Kind::Contract => assert!(!found.is_empty(), "{backend:?} {} is marked contract but is additive", mig.file),
                }
            }
        }
        // The one shipped contract: 0004 rebuilt the idempotency table (drop and rename).
        let sqlite = SchemaOptions::default().migrations(Backend::Sqlite).unwrap();
        let kinds: Vec<_> = sqlite.list.iter().map(|m| (m.version, m.kind)).collect();
        assert_eq!(kinds, [(1, Kind::Expand), (2, Kind::Expand), (3, Kind::Expand), (4, Kind::Contract)]);
    }

    #[test]
    fn the_classifier_tells_additive_statements_from_the_rest() {
        let additive = "CREATE TABLE a (x INTEGER); CREATE UNIQUE INDEX i ON a (x); ALTER TABLE a ADD COLUMN y TEXT; \
                        ALTER TABLE a ADD COLUMN z INTEGER NOT NULL DEFAULT 0; UPDATE a SET z = 1; INSERT INTO a (x) VALUES (1);\
                        -- DROP TABLE a; in a comment\n /* ALTER TABLE a RENAME TO b; */ INSERT INTO a (y) VALUES ('DROP TABLE a; ')";
        assert_eq!(non_additive_statements(additive), Vec::<String>::new());
        for (sql, first) in [
            ("DROP TABLE a", "DROP TABLE A"),
            ("alter table a rename to b", "ALTER TABLE A RENAME TO B"),
            ("ALTER TABLE a DROP COLUMN y", "ALTER TABLE A DROP COLUMN Y"),
            ("ALTER TABLE a ADD COLUMN w TEXT NOT NULL", "ALTER TABLE A ADD COLUMN W"),
            ("ALTER TABLE a ADD CONSTRAINT c CHECK (x > 0)", "ALTER TABLE A ADD CONSTRAINT C"),
            ("ALTER TABLE a ALTER COLUMN x TYPE BIGINT", "ALTER TABLE A ALTER COLUMN X"),
            ("DELETE FROM a", "DELETE FROM A"),
            ("CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1", "CREATE TRIGGER T AFTER INSERT ON"),
        ] {
            assert_eq!(non_additive_statements(sql), [first.to_string()], "{sql}");
        }
    }

    #[test]
    fn a_file_without_its_marker_is_refused_with_how_to_mark_it() {
        for (name, text, want) in [
            ("0005_customers.sql", "CREATE TABLE c (x INTEGER);\n", "`-- paywarden: expand`"),
            ("0005_customers.sql", "-- paywarden: additive\nCREATE TABLE c (x INTEGER);\n", "`-- paywarden: contract`"),
            ("0005_customers.sql", "-- paywarden: expand\n", "no SQL"),
            ("customers.sql", "-- paywarden: expand\nCREATE TABLE c (x INTEGER);\n", "<version>_<description>.sql"),
            ("0005_customers.txt", "-- paywarden: expand\nCREATE TABLE c (x INTEGER);\n", "ends in .sql"),
            ("0_zero.sql", "-- paywarden: expand\nCREATE TABLE c (x INTEGER);\n", "positive"),
        ] {
            let e = Migrations::parse(Backend::Sqlite, &[(name, text)]).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(want), "{name}: {e}");
        }
        let e = Migrations::parse(Backend::Sqlite, &[("0005_a.sql", "-- paywarden: expand\nSELECT 1;\n"), ("0005_b.sql", "-- paywarden: contract\nSELECT 1;\n")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("0005_b.sql") && e.contains("0005_a.sql") && e.contains("next free number"), "{e}");
        // CRLF and trailing blanks on the marker line are fine; the checksum covers the rest.
        let set = m(&[("0007_x_y.sql", "-- paywarden: contract \r\nDROP TABLE x;\n")]);
        assert_eq!((set.list[0].version, set.list[0].description.as_str(), set.list[0].kind), (7, "x y", Kind::Contract));
        assert_eq!(set.list[0].checksum, checksum("DROP TABLE x;\n"));
    }

    #[test]
    fn a_release_runs_on_unknown_expands_and_refuses_unknown_contracts() {
        let known = m(&[("0001_init.sql", "-- paywarden: expand\nCREATE TABLE a (x INTEGER);\n"), ("0002_more.sql", "-- paywarden: expand\nCREATE TABLE b (x INTEGER);\n")]);
        // Fresh database: everything pending.
        let p = plan(&known, vec![], "v1");
        assert_eq!(p.pending.len(), 2);
        assert!(p.refused.is_none() && p.unknown.is_empty());
        // v2 applied an expand v1 does not know: v1 runs, and says what it does not know.
        let mut history = vec![applied(1, Some(Kind::Expand), "CREATE TABLE a (x INTEGER);\n", "v1"), applied(2, Some(Kind::Expand), "CREATE TABLE b (x INTEGER);\n", "v1")];
        history.push(applied(3, Some(Kind::Expand), "CREATE TABLE c (x INTEGER);\n", "v2 (sha256 0123)"));
        let p = plan(&known, history.clone(), "v1");
        assert!(p.refused.is_none(), "{:?}", p.refused);
        assert!(p.pending.is_empty());
        assert_eq!(p.unknown.iter().map(|a| a.version).collect::<Vec<_>>(), [3]);
        // A contract it does not know: refused, naming the migration and the release.
        history.push(AppliedMigration { applied_unix_ms: 1_764_930_672_000, ..applied(4, Some(Kind::Contract), "DROP TABLE a;\n", "v3 (sha256 4567)") });
        let why = plan(&known, history.clone(), "v1").refused.unwrap();
        for want in ["0004_m4", "contract", "v3 (sha256 4567)", "2025-12-05T10:31:12Z", "v1 cannot run"] {
            assert!(why.contains(want), "{want}: {why}");
        }
        // Of unknown kind (a legacy row nobody knows): refused too.
        let why = plan(&known, vec![applied(9, None, "", BEFORE_HISTORY)], "v1").refused.unwrap();
        assert!(why.contains("0009_m9") && why.contains("nor whether"), "{why}");
        // A known migration applied from other SQL: refused, saying never to edit one.
        let why = plan(&known, vec![applied(1, Some(Kind::Expand), "CREATE TABLE a (x TEXT);\n", "v0")], "v1").refused.unwrap();
        assert!(why.contains("0001_m1") && why.contains("must never change"), "{why}");
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(format_unix_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_ms(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_unix_ms(1_798_761_599_999), "2026-12-31T23:59:59Z");
    }
}
