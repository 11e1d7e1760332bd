//! paywarden's one chart and page style, shared by the post-deployment review
//! (`paywarden-review`) and the load report (`paywarden-load`), so both read alike: the same
//! fonts at the size they are shown, tick labels without spurious decimals, legends below the
//! plot (never over the data), vertical marks labelled where there is room, and the same CSS
//! for tables and charts.
//!
//! - [`chart`]: a line chart over seconds as an SVG string (plotters' SVG backend).
//! - [`ticks`]: tick labels with as many decimals as the step between ticks needs.
//! - [`page`]: the CSS both pages start from, escaping, and a chart with its legend as HTML.
//!
//! This crate knows nothing of deployments, load runs or memory: it draws lines.
//! The two reports depend on it; it depends on neither (nor on anything of paywarden's).

pub mod chart;
pub mod page;
pub mod ticks;

#[cfg(feature = "browser")]
#[doc(hidden)]
pub mod browser;

pub use plotters::style::RGBColor;
