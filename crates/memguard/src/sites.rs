//! Allocation sites that grow: the diff of two heap profiles taken a window apart (sans-I/O).
//!
//! A sampling heap profiler (jemalloc's `prof`, see the `profiler` module) estimates, for
//! every call stack that allocated, the bytes it holds now. Two such profiles a window apart
//! say which stacks hold more than before; a leak is the stack whose holdings keep growing.
//! This module takes the two profiles and a symbolizer and returns the growing **sites**: the
//! innermost function of each stack that is the program's own code, not the allocator, the
//! standard library or a collection's growth path — the function a developer would open.
//!
//! **Attribution.** Frames are symbolized innermost first; the site is the first frame whose
//! name does not start with one of [`SiteConfig::skip_prefixes`] (allocator entry points,
//! `alloc::`, `core::`, `std::`, `hashbrown::` and trait impls on them). Growth of every stack
//! that reaches the same site is added up. A stack with no own frame is reported under its
//! innermost symbolized frame, or `"<unknown>"`.
//!
//! **Noise.** A sampling profiler estimates: with jemalloc's default sampling interval of
//! 512 KiB (`lg_prof_sample:19`) each sampled allocation stands for about that many bytes, so
//! growth below [`SiteConfig::min_growth_bytes`] (default 1 MiB, two samples) is not reported.
//! Stacks that shrank are ignored: a leak report lists what grows.
//!
//! **Bounds.** Work is O(stacks + frames symbolized); the report holds at most
//! [`SiteConfig::sites_max`] sites with at most [`STACK_FRAMES_MAX`] frames each.

use std::collections::HashMap;

use serde::Serialize;

/// Frames kept per site in a report: the site and its callers, outward.
pub const STACK_FRAMES_MAX: usize = 12;

/// One call stack of a heap profile and the live bytes it is estimated to hold.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfiledStack {
    /// Code addresses, innermost (the allocation call) first.
    pub frames: Vec<u64>,
    /// Estimated live bytes allocated from this stack.
    pub bytes: f64,
}

/// A heap profile: when it was taken and what each stack holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeapProfile {
    /// Milliseconds on the caller's clock (only differences are used).
    pub at_ms: u64,
    pub stacks: Vec<ProfiledStack>,
}

impl HeapProfile {
    /// Estimated live bytes over all stacks.
    pub fn total_bytes(&self) -> f64 {
        self.stacks.iter().map(|s| s.bytes).sum()
    }
}

/// How sites are attributed and which are reported.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// Frames whose function name starts with one of these are not the program's own code.
    pub skip_prefixes: Vec<String>,
    /// Growth below this many bytes over the window is sampling noise; not reported.
    pub min_growth_bytes: f64,
    /// At most this many sites, largest growth first.
    pub sites_max: usize,
    /// A stack with a frame (below its site) that starts with one of these is the diagnosis
    /// machinery's own memory (the profiler, the symbolizer's parsed debug information), not
    /// the program's: it is left out of the growth entirely. Without this, a process that
    /// profiles itself more (a leaking one) shows its symbolizer's caches as a growing site.
    pub exclude_prefixes: Vec<String>,
}

/// Frames that mark a stack as the diagnosis machinery's own (see
/// [`SiteConfig::exclude_prefixes`]). memguard's profiler no longer parses debug information
/// in the service's process (its helper process does, `symbolizer`), so `backtrace::` to
/// `object::` no longer match memguard's own work; they stay because anything else that
/// prints a backtrace in-process (a panic with `RUST_BACKTRACE`, `std::backtrace`, an error
/// library's captured backtraces) parses debug information with the same crates and keeps
/// it, which is not the program's leak either. Matching costs a few prefix comparisons.
pub const DEFAULT_EXCLUDE_PREFIXES: &[&str] = &["memguard::", "backtrace::", "gimli::", "addr2line::", "object::", "jemalloc_pprof::", "pprof_util::"];

/// Frames a leak is never attributed to: jemalloc's entry points and internals (its static
/// helpers carry no prefix), Rust's allocator shims, the standard library and hashbrown (a
/// growing collection is its caller's leak), the symbolizer's own parsing of debug
/// information (which allocates once per compilation unit the first time it is read), and
/// memguard itself.
pub const DEFAULT_SKIP_PREFIXES: &[&str] = &[
    "_rjem_",
    "je_",
    "prof_",
    "imalloc",
    "ialloc",
    "iralloc",
    "irallocx",
    "ixalloc",
    "isalloc",
    "arena_",
    "tcache_",
    "malloc",
    "mallocx",
    "calloc",
    "realloc",
    "rallocx",
    "do_rallocx",
    "posix_memalign",
    "aligned_alloc",
    "__rustc::",
    "__rust_alloc",
    "__rust_realloc",
    "__rust_alloc_zeroed",
    "__rdl_",
    "__rg_",
    "tikv_jemallocator::",
    "alloc::",
    "core::",
    "std::",
    "hashbrown::",
    "backtrace::",
    "gimli::",
    "addr2line::",
    "object::",
    "rustc_demangle::",
    "jemalloc_pprof::",
    "pprof_util::",
    "memguard::",
];

/// Whether `function` is not the program's own code: its path, or for a trait method
/// `<Type as Trait>::method` either the type or the trait, starts with a skipped prefix.
pub fn is_skipped(function: &str, skip_prefixes: &[String]) -> bool {
    let skip = |path: &str| {
        let path = path.trim_start_matches('&').trim_start_matches("mut ").trim_start_matches('<');
        skip_prefixes.iter().any(|p| path.starts_with(p.as_str()))
    };
    if let Some(inner) = function.strip_prefix('<') {
        // `<T as Trait>::m`: the impl is the standard library's if either side is.
        if let Some((ty, rest)) = inner.split_once(" as ") {
            return skip(ty) || skip(rest);
        }
        // `<T>::m`: an inherent method, judged by its type.
        return skip(inner);
    }
    skip(function)
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            skip_prefixes: DEFAULT_SKIP_PREFIXES.iter().map(|s| (*s).to_string()).collect(),
            min_growth_bytes: (1u64 << 20) as f64,
            sites_max: 10,
            exclude_prefixes: DEFAULT_EXCLUDE_PREFIXES.iter().map(|s| (*s).to_string()).collect(),
        }
    }
}

/// A growing allocation site.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GrowingSite {
    /// The function that allocates (symbolized, hash-free Rust path).
    pub function: String,
    /// Estimated growth over the window, bytes.
    pub growth_bytes: f64,
    pub bytes_per_second: f64,
    /// This site's part of all reported growth, in [0, 1].
    pub share: f64,
    /// Estimated live bytes from this site at the end of the window.
    pub live_bytes: f64,
    /// The site and its callers, outward, at most [`STACK_FRAMES_MAX`] frames (of the stack
    /// that grew most).
    pub stack: Vec<String>,
}

/// The result of diffing two profiles.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SiteReport {
    /// Seconds between the two profiles.
    pub window_s: f64,
    /// Growth of the whole profiled heap over the window (may be negative).
    pub heap_growth_bytes: f64,
    pub sites: Vec<GrowingSite>,
}

/// Diffs `before` and `after` and attributes the growth to sites. `symbolize` returns the
/// function names at a code address, innermost inlined frame first (empty if unknown); it is
/// called once per distinct address of a growing stack.
pub fn growing_sites(
    before: &HeapProfile,
    after: &HeapProfile,
    config: &SiteConfig,
    symbolize: &mut dyn FnMut(u64) -> Vec<String>,
) -> SiteReport {
    let window_s = after.at_ms.saturating_sub(before.at_ms) as f64 / 1000.0;
    let mut old: HashMap<&[u64], f64> = HashMap::with_capacity(before.stacks.len());
    for s in &before.stacks {
        *old.entry(s.frames.as_slice()).or_default() += s.bytes;
    }
    let mut new: HashMap<&[u64], f64> = HashMap::with_capacity(after.stacks.len());
    for s in &after.stacks {
        *new.entry(s.frames.as_slice()).or_default() += s.bytes;
    }

    let mut names: HashMap<u64, Vec<String>> = HashMap::new();
    struct Acc {
        growth: f64,
        live: f64,
        best_growth: f64,
        stack: Vec<String>,
    }
    let mut by_site: HashMap<String, Acc> = HashMap::new();
    for (frames, &live) in &new {
        let growth = live - old.get(frames).copied().unwrap_or(0.0);
        if growth.is_nan() || growth <= 0.0 {
            continue;
        }
        // Symbolize outward only as far as the report needs: up to the site and the frames
        // kept after it (symbolizing is the expensive part).
        let mut symbols: Vec<String> = Vec::new();
        let mut own = None;
        for addr in frames.iter() {
            let n = names.entry(*addr).or_insert_with(|| symbolize(*addr));
            for f in n.iter() {
                if own.is_none() && !is_skipped(f, &config.skip_prefixes) {
                    own = Some(symbols.len());
                }
                symbols.push(f.clone());
            }
            if own.is_some_and(|i| symbols.len() >= i + STACK_FRAMES_MAX) {
                break;
            }
        }
        // The diagnosis machinery's own allocations are not the program's growth.
        let inner = own.unwrap_or(symbols.len());
        if symbols[..inner].iter().any(|f| is_skipped(f, &config.exclude_prefixes)) {
            continue;
        }
        let (function, from) = match own {
            Some(i) => (symbols[i].clone(), i),
            None => (symbols.first().cloned().unwrap_or_else(|| "<unknown>".to_string()), 0),
        };
        let acc = by_site.entry(function).or_insert(Acc { growth: 0.0, live: 0.0, best_growth: 0.0, stack: Vec::new() });
        acc.growth += growth;
        acc.live += live;
        if growth > acc.best_growth {
            acc.best_growth = growth;
            acc.stack = symbols.iter().skip(from).take(STACK_FRAMES_MAX).cloned().collect();
        }
    }

    let mut sites: Vec<GrowingSite> = by_site
        .into_iter()
        .filter(|(_, a)| a.growth >= config.min_growth_bytes)
        .map(|(function, a)| GrowingSite {
            function,
            growth_bytes: a.growth,
            bytes_per_second: if window_s > 0.0 { a.growth / window_s } else { 0.0 },
            share: 0.0,
            live_bytes: a.live,
            stack: a.stack,
        })
        .collect();
    let total: f64 = sites.iter().map(|s| s.growth_bytes).sum();
    for s in &mut sites {
        s.share = if total > 0.0 { s.growth_bytes / total } else { 0.0 };
    }
    sites.sort_by(|a, b| b.growth_bytes.total_cmp(&a.growth_bytes).then_with(|| a.function.cmp(&b.function)));
    sites.truncate(config.sites_max);
    SiteReport { window_s, heap_growth_bytes: after.total_bytes() - before.total_bytes(), sites }
}
