//! paywarden with the second release's expand migration and then a contract
//! (`tests/schema/*/9002_drop_loyalty_note.sql`: a dropped column): the third release of the
//! schema rollout tests, built from the same sources by `cargo test`. Not shipped.

paywarden::main!(paywarden_store::ExtraMigrations {
    sqlite: &[
        ("9001_loyalty_accounts.sql", include_str!("../tests/schema/sqlite/9001_loyalty_accounts.sql")),
        ("9002_drop_loyalty_note.sql", include_str!("../tests/schema/sqlite/9002_drop_loyalty_note.sql")),
    ],
    postgres: &[
        ("9001_loyalty_accounts.sql", include_str!("../tests/schema/postgres/9001_loyalty_accounts.sql")),
        ("9002_drop_loyalty_note.sql", include_str!("../tests/schema/postgres/9002_drop_loyalty_note.sql")),
    ],
});
