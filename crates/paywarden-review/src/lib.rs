//! paywarden's post-deployment reviews, incident reports and drill scorecards.
//!
//! Everything here is built from what the rollout controller recorded in `DATA_DIR/rollout`
//! (the deployment history, the event log, the per-second samples): nothing is measured,
//! estimated or remembered here, so a review written a year later says what it said on the
//! day.
//!
//! - [`model`]: the [`Review`] gathered from those files.
//! - [`markdown`]: the review as Markdown.
//! - [`html`]: the review as one self-contained HTML file (inline CSS, SVG charts, no script).
//! - [`incident`]: a postmortem draft in the shape of the 2024-08-12 incident report, when a
//!   deployment was rolled back or an alert fired.
//! - [`scorecard`]: a drill's scores beside the 2024 incident's figures.
//! - [`words`]: the sentences all three renderings share (heap growth from the samples, the
//!   verdict's score, which signal caught a leak and why the other did not).
//!
//! This crate reads the rollout's files; it does not know the controller, the proxy, or any
//! network.

pub mod html;
pub mod incident;
pub mod markdown;
pub mod model;
pub mod scorecard;
pub mod words;

use std::path::{Path, PathBuf};

pub use model::{Review, ReviewError};

/// What [`write_review`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub html: PathBuf,
    pub markdown: PathBuf,
    /// `incident.md`, when the deployment was rolled back or held, or an alert fired.
    pub incident: Option<PathBuf>,
}

/// Where `up` keeps a deployment's review: `DATA_DIR/rollout/reviews/ID/`.
pub fn reviews_dir(rollout_dir: &Path, id: &str) -> PathBuf {
    rollout_dir.join("reviews").join(id)
}

/// Loads deployment `id` from `rollout_dir` and writes `review.html`, `review.md` and, for an
/// incident, `incident.md` into `out` (created).
pub fn write_review(rollout_dir: &Path, id: &str, out: &Path) -> Result<(Review, Written), ReviewError> {
    let review = Review::load(rollout_dir, id)?;
    let written = write_files(&review, out)?;
    Ok((review, written))
}

/// Writes a loaded review's files into `out` (created).
pub fn write_files(review: &Review, out: &Path) -> Result<Written, ReviewError> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |source| ReviewError::Io { what: what.clone(), source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let html = out.join("review.html");
    std::fs::write(&html, html::render(review)).map_err(io(&html))?;
    let markdown = out.join("review.md");
    std::fs::write(&markdown, markdown::render(review)).map_err(io(&markdown))?;
    let incident = if review.is_incident() {
        let p = out.join("incident.md");
        std::fs::write(&p, incident::render(review)).map_err(io(&p))?;
        Some(p)
    } else {
        None
    };
    Ok(Written { html, markdown, incident })
}
