//! Integration tests of the stores: one binary; SQLite in a temporary directory, PostgreSQL in a
//! database of its own per test (`on_both_backends!` runs a test on each).

mod audit;
mod common;
mod objects;
mod outbox;
mod pagination;
mod postgres;
mod schema;
mod writer;
