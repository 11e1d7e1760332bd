//! paywarden-load's integration tests: one binary, one module per source module.

mod report;
mod scenario;
mod schedule;
mod summary;
mod threshold;
