//! Property tests for `paywarden-core`: money parsing and arithmetic, metadata limits, the
//! PaymentIntent state machine against a small model, and the ledger audit (positive and
//! negative).

mod audit;
mod metadata;
mod money;
mod sim;
mod state_machine;
mod support;
mod valgrind;

#[test]
fn memcheck_under_valgrind_finds_no_leak_or_memory_error() {
    valgrind::rerun_under_valgrind(&["sim::"]);
}
