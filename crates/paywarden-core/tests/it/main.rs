//! Property tests for `paywarden-core`: money parsing and arithmetic, metadata limits, the
//! PaymentIntent state machine against a small model, and the ledger audit (positive and
//! negative).

mod audit;
mod metadata;
mod money;
mod sim;
mod state_machine;
mod support;
