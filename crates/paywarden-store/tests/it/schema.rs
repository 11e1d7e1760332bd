//! Expand/contract migrations on both backends: a release runs on a database whose expand
//! migrations it does not know, refuses one with an unknown contract (naming it and the release
//! that applied it), releases from before the schema history run on what this one leaves,
//! processes starting together migrate once, a failed migration leaves nothing behind, and a
//! plan writes nothing.

use paywarden_store::schema::{Backend as Db, ExtraMigrations, Kind, SchemaOptions, BEFORE_HISTORY};
use paywarden_store::{PgOptions, PgStore, SqliteOptions, SqliteStore, Store, StoreError};
use sqlx::Connection;
use tempfile::TempDir;

use crate::common::{merchant, within, write, Backend, PgDb};
use crate::on_both_backends;

/// A second release: a new table and a new nullable column on an existing one.
const EXPAND: ExtraMigrations = ExtraMigrations {
    sqlite: &[(
        "9001_loyalty_accounts.sql",
        "-- paywarden: expand\nCREATE TABLE loyalty_accounts (id TEXT PRIMARY KEY, points INTEGER NOT NULL DEFAULT 0, note TEXT) STRICT;\n\
         ALTER TABLE payment_intents ADD COLUMN loyalty_account TEXT;\n",
    )],
    postgres: &[(
        "9001_loyalty_accounts.sql",
        "-- paywarden: expand\nCREATE TABLE loyalty_accounts (id TEXT PRIMARY KEY, points BIGINT NOT NULL DEFAULT 0, note TEXT);\n\
         ALTER TABLE payment_intents ADD COLUMN loyalty_account TEXT;\n",
    )],
};

/// A third release: the second's expand, then a contract.
const CONTRACT: ExtraMigrations = ExtraMigrations {
    sqlite: &[EXPAND.sqlite[0], ("9002_drop_loyalty_note.sql", "-- paywarden: contract\nALTER TABLE loyalty_accounts DROP COLUMN note;\n")],
    postgres: &[EXPAND.postgres[0], ("9002_drop_loyalty_note.sql", "-- paywarden: contract\nALTER TABLE loyalty_accounts DROP COLUMN note;\n")],
};

/// A merchant id no other start used: every start writes one, to show the release runs.
fn next_merchant() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("acct_start_{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// One database, SQLite in a directory or PostgreSQL, opened by any release.
struct Target {
    dir: TempDir,
    pg: Option<PgDb>,
}

impl Target {
    async fn new(backend: Backend, name: &str) -> Option<Target> {
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgDb::create(name).await?),
        };
        Some(Target { dir: TempDir::new().unwrap(), pg })
    }

    fn schema(release: &str, extra: ExtraMigrations) -> SchemaOptions {
        SchemaOptions { release: release.to_string(), extra }
    }

    /// Opens the store as `release` with `extra` migrations; closes it again.
    async fn start(&self, release: &str, extra: ExtraMigrations) -> Result<Vec<paywarden_store::schema::AppliedMigration>, StoreError> {
        let schema = Target::schema(release, extra);
        match &self.pg {
            None => {
                let s = SqliteStore::open(self.dir.path(), SqliteOptions { schema, ..SqliteOptions::default() }).await?;
                write(&s, vec![paywarden_store::Write::Merchant(merchant(&next_merchant()))]).await.unwrap();
                let h = s.schema_history().await?;
                s.close().await;
                Ok(h)
            }
            Some(db) => {
                let s = PgStore::open(&db.url, PgOptions { schema, ..PgOptions::default() }).await?;
                write(&s, vec![paywarden_store::Write::Merchant(merchant(&next_merchant()))]).await.unwrap();
                let h = s.schema_history().await?;
                s.close().await;
                Ok(h)
            }
        }
    }

    async fn plan(&self, release: &str, extra: ExtraMigrations) -> paywarden_store::SchemaPlan {
        let schema = Target::schema(release, extra);
        match &self.pg {
            None => SqliteStore::schema_plan(self.dir.path(), &schema).await.unwrap(),
            Some(db) => PgStore::schema_plan(&db.url, &schema).await.unwrap(),
        }
    }

    /// What a release from before the schema history does first: sqlx's migrator.
    async fn start_before_history(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match &self.pg {
            None => {
                let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(self.dir.path().join("paywarden.db")).create_if_missing(true);
                let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
                paywarden_store::testing::migrator_before_history(Db::Sqlite, Db::Sqlite.sqlx_legacy_max()).run(&mut conn).await
            }
            Some(db) => {
                let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
                paywarden_store::testing::migrator_before_history(Db::Postgres, Db::Postgres.sqlx_legacy_max()).run(&mut conn).await
            }
        }
    }

    async fn scalar(&self, sql: &str) -> i64 {
        match &self.pg {
            None => {
                let mut c = crate::common::raw(&self.dir.path().join("paywarden.db")).await;
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
            Some(db) => {
                let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
        }
    }

    async fn table_exists(&self, name: &str) -> bool {
        let sql = match &self.pg {
            None => format!("SELECT count(*) FROM sqlite_master WHERE name = '{name}'"),
            Some(_) => format!("SELECT count(*) FROM pg_tables WHERE tablename = '{name}'"),
        };
        self.scalar(&sql).await > 0
    }
}

async fn a_release_runs_on_expand_migrations_it_does_not_know(backend: Backend) {
    within(async {
        let Some(t) = Target::new(backend, "schema_expand_unknown").await else { return };
        t.start("v1", ExtraMigrations::default()).await.unwrap();
        let h = t.start("v2 (sha256 0123456789ab)", EXPAND).await.unwrap();
        let last = h.last().unwrap();
        assert_eq!((last.version, last.kind, last.release.as_str()), (9001, Some(Kind::Expand), "v2 (sha256 0123456789ab)"));
        // v1 again (a rollback, a restart): it starts, writes, and sees v2's migration as unknown.
        let h = t.start("v1", ExtraMigrations::default()).await.unwrap();
        assert_eq!(h.iter().filter(|a| a.version == 9001).count(), 1, "{h:?}");
        let plan = t.plan("v1", ExtraMigrations::default()).await;
        assert!(plan.refused.is_none() && plan.pending.is_empty(), "{plan:?}");
        assert_eq!(plan.unknown.iter().map(|a| a.version).collect::<Vec<_>>(), [9001]);
        assert_eq!(t.scalar("SELECT count(*) FROM merchants").await, 3, "each start wrote");
        // v2 after v1: nothing to apply, the column is there.
        t.start("v2", EXPAND).await.unwrap();
        assert_eq!(t.scalar("SELECT count(*) FROM payment_intents WHERE loyalty_account IS NULL").await, 0);
    })
    .await
}

async fn a_release_refuses_a_contract_it_does_not_know_and_names_it(backend: Backend) {
    within(async {
        let Some(t) = Target::new(backend, "schema_contract_unknown").await else { return };
        t.start("v1", ExtraMigrations::default()).await.unwrap();
        t.start("v3 (sha256 4567)", CONTRACT).await.unwrap();
        let before = t.scalar("SELECT count(*) FROM merchants").await;
        for (release, extra) in [("v1", ExtraMigrations::default()), ("v2", EXPAND)] {
            let e = t.start(release, extra).await.unwrap_err().to_string();
            for want in ["9002_drop_loyalty_note", "contract", "v3 (sha256 4567)", &format!("{release} cannot run on this schema")] {
                assert!(e.contains(want), "{release}: {want:?} in {e}");
            }
            let plan = t.plan(release, extra).await;
            assert!(plan.refused.as_deref().is_some_and(|r| r.contains("9002")), "{plan:?}");
        }
        assert_eq!(t.scalar("SELECT count(*) FROM merchants").await, before, "a refused start writes nothing");
        // The release that applied it still runs.
        t.start("v3", CONTRACT).await.unwrap();
    })
    .await
}

async fn releases_before_the_history_run_on_what_this_one_leaves(backend: Backend) {
    within(async {
        // A database this release made, then a newer release's expand: the old migrator accepts it.
        let Some(t) = Target::new(backend, "schema_legacy_after").await else { return };
        t.start("v1", ExtraMigrations::default()).await.unwrap();
        t.start("v2", EXPAND).await.unwrap();
        t.start_before_history().await.expect("a release from before the history starts on it");
        assert!(t.table_exists("loyalty_accounts").await);
        let legacy = backend_db(backend).sqlx_legacy_max();
        assert_eq!(t.scalar("SELECT count(*) FROM _sqlx_migrations").await, legacy, "later migrations are recorded in the history only");
        drop(t);

        // A database an old release made: this release records its history and applies nothing.
        let Some(t) = Target::new(backend, "schema_legacy_before").await else { return };
        t.start_before_history().await.unwrap();
        let h = t.start("v1", ExtraMigrations::default()).await.unwrap();
        assert_eq!(h.len() as i64, legacy, "{h:?}");
        assert!(h.iter().all(|a| a.release == BEFORE_HISTORY && a.kind.is_some() && a.applied_unix_ms > 1_600_000_000_000), "{h:?}");
        let plan = t.plan("v1", ExtraMigrations::default()).await;
        assert!(plan.pending.is_empty() && plan.refused.is_none(), "{plan:?}");
        // And the old release still starts after this one did.
        t.start_before_history().await.expect("the old release starts again");
    })
    .await
}

fn backend_db(b: Backend) -> Db {
    match b {
        Backend::Sqlite => Db::Sqlite,
        Backend::Postgres => Db::Postgres,
    }
}

async fn processes_starting_together_migrate_once(backend: Backend) {
    within(async {
        let Some(t) = Target::new(backend, "schema_together").await else { return };
        let t = std::sync::Arc::new(t);
        let starts: Vec<_> = (0..4)
            .map(|i| {
                let t = t.clone();
                tokio::spawn(async move { t.start(&format!("v2 replica {i}"), EXPAND).await })
            })
            .collect();
        for s in starts {
            s.await.unwrap().expect("every replica starts");
        }
        let h = t.plan("v2", EXPAND).await.applied;
        let versions: Vec<i64> = h.iter().map(|a| a.version).collect();
        let mut unique = versions.clone();
        unique.dedup();
        assert_eq!(versions, unique, "each migration applied once");
        assert!(versions.contains(&9001));
        assert_eq!(h.iter().map(|a| a.release.as_str()).collect::<std::collections::HashSet<_>>().len(), 1, "one replica applied them all: {h:?}");
    })
    .await
}

async fn a_failed_migration_leaves_the_schema_and_its_history_as_they_were(backend: Backend) {
    within(async {
        let Some(t) = Target::new(backend, "schema_failed").await else { return };
        t.start("v1", ExtraMigrations::default()).await.unwrap();
        const BROKEN: ExtraMigrations = ExtraMigrations {
            sqlite: &[EXPAND.sqlite[0], ("9003_broken.sql", "-- paywarden: expand\nCREATE TABLE half_done (x INTEGER);\nALTER TABLE no_such_table ADD COLUMN y TEXT;\n")],
            postgres: &[EXPAND.postgres[0], ("9003_broken.sql", "-- paywarden: expand\nCREATE TABLE half_done (x BIGINT);\nALTER TABLE no_such_table ADD COLUMN y TEXT;\n")],
        };
        let broken = BROKEN;
        let e = t.start("v2-broken", broken).await.unwrap_err().to_string();
        assert!(e.contains("9003_broken") && e.contains("failed"), "{e}");
        assert!(!t.table_exists("half_done").await, "the failed migration's first statement was rolled back");
        assert!(!t.table_exists("loyalty_accounts").await, "the step is one transaction: 9001 went too");
        let plan = t.plan("v1", ExtraMigrations::default()).await;
        assert!(plan.unknown.is_empty(), "{plan:?}");
        t.start("v1", ExtraMigrations::default()).await.unwrap();
    })
    .await
}

async fn a_migration_changed_after_it_was_applied_is_refused(backend: Backend) {
    within(async {
        let Some(t) = Target::new(backend, "schema_changed").await else { return };
        t.start("v2", EXPAND).await.unwrap();
        const EDITED: ExtraMigrations = ExtraMigrations {
            sqlite: &[("9001_loyalty_accounts.sql", "-- paywarden: expand\nCREATE TABLE loyalty_accounts (id TEXT PRIMARY KEY) STRICT;\n")],
            postgres: &[("9001_loyalty_accounts.sql", "-- paywarden: expand\nCREATE TABLE loyalty_accounts (id TEXT PRIMARY KEY);\n")],
        };
        let e = t.start("v2-edited", EDITED).await.unwrap_err().to_string();
        assert!(e.contains("9001_loyalty_accounts") && e.contains("must never change"), "{e}");
    })
    .await
}

async fn a_plan_writes_nothing(backend: Backend) {
    within(async {
        let Some(t) = Target::new(backend, "schema_plan").await else { return };
        // Nothing there yet: everything pending, and no database file made.
        let plan = t.plan("v2", EXPAND).await;
        assert!(plan.applied.is_empty() && plan.refused.is_none());
        assert_eq!(plan.pending.last().map(|p| (p.version, p.kind)), Some((9001, Kind::Expand)));
        if backend == Backend::Sqlite {
            assert!(!t.dir.path().join("paywarden.db").exists(), "a plan made the database file");
        } else {
            assert!(!t.table_exists("merchants").await);
        }
        t.start("v1", ExtraMigrations::default()).await.unwrap();
        let plan = t.plan("v3", CONTRACT).await;
        assert_eq!(plan.pending.iter().map(|p| (p.version, p.kind)).collect::<Vec<_>>(), [(9001, Kind::Expand), (9002, Kind::Contract)]);
        assert_eq!(plan.pending_contracts().count(), 1);
        assert!(!t.table_exists("loyalty_accounts").await, "a plan applies nothing");
        assert_eq!(t.plan("v1", ExtraMigrations::default()).await.applied.len(), plan.applied.len());
    })
    .await
}

on_both_backends!(
    a_release_runs_on_expand_migrations_it_does_not_know,
    a_release_refuses_a_contract_it_does_not_know_and_names_it,
    releases_before_the_history_run_on_what_this_one_leaves,
    processes_starting_together_migrate_once,
    a_failed_migration_leaves_the_schema_and_its_history_as_they_were,
    a_migration_changed_after_it_was_applied_is_refused,
    a_plan_writes_nothing,
);
