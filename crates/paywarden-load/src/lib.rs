//! paywarden load: open-loop payment traffic with k6's executors, latency from the scheduled
//! start (no coordinated omission), HDR histograms per operation, thresholds that gate CI, and
//! the target's memory sampled from its `/metrics` and judged by memguard's leak detector.

pub mod report;
pub mod scenario;
pub mod schedule;
pub mod summary;
pub mod threshold;
pub mod flows;
pub mod http;
pub mod run;
pub mod target;

pub use run::{run, LoadConfig, LoadError};
