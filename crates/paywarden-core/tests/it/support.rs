//! Assertion helpers shared by every property.

use std::fmt::Debug;

use proptest::test_runner::TestCaseError;

/// Fails the current proptest case with `what()` unless `ok` holds.
pub fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if ok { Ok(()) } else { Err(TestCaseError::fail(what())) }
}

/// Fails the current case unless `left == right`, naming `what`.
pub fn check_eq<T: PartialEq + Debug>(left: T, right: T, what: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if left == right {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!("{}: left {left:?} != right {right:?}", what())))
    }
}

/// A property test's case count; a handful under valgrind (`valgrind.rs`), where every case
/// costs fifty times as much and the code paths are the same.
pub fn cases(n: u32) -> proptest::prelude::ProptestConfig {
    let n = if std::env::var_os("PAYWARDEN_UNDER_VALGRIND").is_some() { n.min(4) } else { n };
    proptest::prelude::ProptestConfig::with_cases(n)
}
