//! paywarden's staged rollouts, in Argo Rollouts' and Kayenta's vocabulary.
//!
//! - [`controller`]: `paywarden up`'s brain: the stable release, one deployment at a time
//!   (canary and a fresh baseline started together, steps with weights and bake times, the
//!   judge at every step, promotion or rollback), the admin API's state.
//! - [`proxy`]: the public listener; splits requests between instances by weight, retries only
//!   when it is safe, counts requests, errors and latencies per instance, drains.
//! - [`instance`]: one gateway child process: start, readiness, `/metrics` scrape, stop.
//! - [`plan`]: the steps (`default`, `fast`, or a TOML file).
//! - [`judge`]: the canary judge (pure).
//! - [`pods`]: the same judge for pods something else runs (`paywarden judge`, Kubernetes):
//!   finds them by DNS, scrapes their `/metrics`, keeps the window.
//! - [`events`]: the append-only event log (JSON lines) that reviews are built from.
//! - [`samples`]: each deployment's per-second figures per instance (memory, traffic,
//!   latency), for reviews.
//! - [`schema`]: the schema gate: what a release would migrate, asked of its binary before
//!   anything of it starts; contract migrations refused while the stable is the rollback target.
//! - [`release`]: releases (binary, hash, arguments, version) and the deployment history.
//! - [`admin`]: the admin HTTP API (loopback, bearer token).
//! - [`tls`]: TLS termination (rustls) for `serve` and the proxy; [`listener`]: the accept
//!   loop they share (connection cap, a task per connection, graceful drain).
//!
//! This crate knows the gateway only through its command line (`serve --listen --data-dir`),
//! `/readyz`, and the names of a few `/metrics` series; it knows nothing of payments or of
//! Stripe's wire format.

pub mod admin;
pub mod controller;
pub mod events;
pub mod instance;
pub mod judge;
pub mod listener;
pub mod plan;
pub mod pods;
pub mod proxy;
pub mod release;
pub mod samples;
pub mod schema;
pub mod tls;

pub use judge::{judge, JudgeConfig, MetricVerdict, Score, Verdict, Window};
