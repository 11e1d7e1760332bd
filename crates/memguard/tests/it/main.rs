//! memguard's integration tests, all on synthetic series from a seeded generator
//! (`support`): leaks that must be found (`leaks`), clean processes that must not alarm
//! (`clean`), the burn-rate alert (`burn`), properties over arbitrary input (`props`), and the
//! survey behind the crate documentation's numbers (`survey`, ignored: run it in release), and
//! the symbolizer helper (`symbolizer`, feature `profiler`: `cargo test -p memguard --features
//! profiler`; a workspace test run has it through paywarden).

mod alerts;
mod burn;
mod clean;
mod leaks;
mod props;
mod sites;
mod support;
mod survey;
#[cfg(feature = "profiler")]
mod symbolizer;

// jemalloc, so that the symbolizer's end-to-end test can profile a child of this binary; with
// profiling off (no `_RJEM_MALLOC_CONF`) it is only the allocator.
#[cfg(feature = "profiler")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
