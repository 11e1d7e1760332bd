//! Integration tests of paywarden's HTTP API, driven in-process through the axum router.

/// jemalloc, as in `paywarden serve`: its statistics measure what payments leave on the heap
/// (`heap.rs`).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod admin;
mod auth;
mod browser;
mod card_data;
mod declines;
mod expand;
mod fuzz;
mod heap;
mod idempotency;
mod limits;
mod metrics;
mod lists;
mod routes;
mod state;
mod support;
mod validation;
mod webhooks;

/// Every test above, again on PostgreSQL: this binary runs itself with `PAYWARDEN_TEST_BACKEND=
/// postgres` (each harness then opens a database of its own). Skipped with a message when no
/// server answers, unless CI requires one.
#[tokio::test]
async fn every_api_test_runs_on_postgresql_too() {
    if support::postgres_mode() {
        return;
    }
    let Some(probe) = paywarden_store::testing::PgDb::create("every_api_test_runs_on_postgresql_too").await else { return };
    drop(probe);
    let exe = std::env::current_exe().unwrap();
    let out = tokio::process::Command::new(exe)
        .env(support::BACKEND_ENV, "postgres")
        .args(["--skip", "every_api_test_runs_on_postgresql_too", "--test-threads", "4"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout.lines().filter(|l| l.starts_with("test result")).collect::<Vec<_>>().join("\n");
    eprintln!("on PostgreSQL: {summary}");
    assert!(out.status.success(), "API tests failed on PostgreSQL:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
}
