//! paywarden-rollout's integration tests.

mod judge;
