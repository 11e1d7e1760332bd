//! paywarden-rollout's integration tests, one binary.

mod instance;
mod kubernetes;
mod proxy;
