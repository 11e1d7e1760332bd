//! paywarden-review's tests, one binary.
mod html;
mod markdown;
