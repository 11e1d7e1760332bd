//! paywarden's staged rollouts (issue 5). This release has the canary judge: the pure
//! comparison of a canary with a baseline started at the same time (Kayenta's method). The
//! controller, the weighted proxy and the `up` / `deploy` / `rollback` commands follow.

pub mod judge;

pub use judge::{judge, JudgeConfig, MetricVerdict, Score, Verdict, Window};
