//! paywarden-rollout's integration tests, one binary.

mod instance;
mod judge;
mod kubernetes;
mod proxy;
