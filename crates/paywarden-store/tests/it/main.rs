//! Integration tests of the SQLite store: one binary, one temporary directory per test.

mod audit;
mod common;
mod objects;
mod outbox;
mod pagination;
mod writer;
