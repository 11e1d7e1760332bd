//! For tests (this crate's and the ones above it): a PostgreSQL database of its own per test.
//! Not part of the store's API.

use sqlx::Connection;

/// Where the PostgreSQL tests connect (a server and a database they may create others from):
/// `PAYWARDEN_TEST_POSTGRES`, by default the local server CI has.
pub fn postgres_admin_url() -> String {
    std::env::var("PAYWARDEN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// Whether a missing PostgreSQL server fails the run (in CI) rather than skipping.
pub fn postgres_required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("PAYWARDEN_REQUIRE_POSTGRES").is_some()
}

/// A database of its own for one test, dropped (connections and all) when this is.
pub struct PgDb {
    pub name: String,
    pub url: String,
}

impl PgDb {
    /// None (with a message) when no server answers and none is required.
    pub async fn create(test: &str) -> Option<PgDb> {
        let admin_url = postgres_admin_url();
        let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    !postgres_required(),
                    "PostgreSQL is required here but {admin_url} does not answer: {e}"
                );
                eprintln!("SKIPPED {test} on PostgreSQL: no server at {admin_url} ({e})");
                return None;
            }
        };
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "pw_test_{}_{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b.to_string())
            .unwrap_or(admin_url.clone());
        Some(PgDb {
            url: format!("{base}/{name}"),
            name,
        })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (admin_url, name) = (postgres_admin_url(), self.name.clone());
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            })
        })
        .join();
    }
}


/// sqlx's migrator as the releases before the schema history ran it: the shipped migrations
/// up to `max_version` (their SQL as it was before the marker lines), checked and applied the
/// way those releases did at start. Running it against a database is what such a release
/// does first; an error is what it would have exited with.
pub fn migrator_before_history(backend: crate::schema::Backend, max_version: i64) -> sqlx::migrate::Migrator {
    let set = crate::SchemaOptions::default().migrations(backend).expect("the shipped migrations parse");
    let migrations: Vec<sqlx::migrate::Migration> = set
        .list
        .into_iter()
        .filter(|m| m.version <= max_version)
        .map(|m| {
            sqlx::migrate::Migration::new(
                m.version,
                m.description.into(),
                sqlx::migrate::MigrationType::Simple,
                m.sql.into(),
                false,
            )
        })
        .collect();
    sqlx::migrate::Migrator { migrations: migrations.into(), ..sqlx::migrate::Migrator::DEFAULT }
}
