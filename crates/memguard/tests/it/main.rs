//! memguard's integration tests, all on synthetic series from a seeded generator
//! (`support`): leaks that must be found (`leaks`), clean processes that must not alarm
//! (`clean`), the burn-rate alert (`burn`), properties over arbitrary input (`props`), and the
//! survey behind the crate documentation's numbers (`survey`, ignored: run it in release).

mod alerts;
mod burn;
mod clean;
mod leaks;
mod props;
mod sites;
mod support;
mod survey;
