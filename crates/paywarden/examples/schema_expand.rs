//! paywarden with one extra expand migration (`tests/schema/*/9001_loyalty_accounts.sql`: a new
//! table and a new nullable column): the second release of the schema rollout tests, built from
//! the same sources by `cargo test`. Not shipped.

paywarden::main!(paywarden_store::ExtraMigrations {
    sqlite: &[("9001_loyalty_accounts.sql", include_str!("../tests/schema/sqlite/9001_loyalty_accounts.sql"))],
    postgres: &[("9001_loyalty_accounts.sql", include_str!("../tests/schema/postgres/9001_loyalty_accounts.sql"))],
});
