//! jemalloc's sampling heap profiler, read as [`HeapProfile`]s and pprof files (feature
//! `profiler`).
//!
//! jemalloc samples one allocation per `2^lg_prof_sample` bytes allocated on average
//! (paywarden sets `lg_prof_sample:19`, 512 KiB) and records its call stack; a dump lists,
//! per stack, the sampled live allocations, from which [`jemalloc_pprof`] estimates the live
//! bytes. Profiling must be compiled into jemalloc (`tikv-jemallocator`'s `profiling` feature)
//! and switched on before the first allocation, through the `malloc_conf` symbol or the
//! `_RJEM_MALLOC_CONF` environment variable (`prof:true,prof_active:true,lg_prof_sample:19`);
//! [`HeapProfiler::get`] returns `None` otherwise.
//!
//! Dumps write a temporary file and parse it: a few milliseconds for a few thousand stacks,
//! done on a blocking thread. Symbolization reads the binary's debug information once (the
//! first call takes a while and keeps tens of MiB; call [`HeapProfiler::warm_up`] at start so
//! that step is not mistaken for a leak) and caches names per address, at most
//! [`SYMBOL_CACHE_MAX`] addresses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jemalloc_pprof::{JemallocProfCtl, PROF_CTL};

use crate::sites::{HeapProfile, ProfiledStack};

/// Addresses whose names are cached; past it the cache is cleared (names are re-read).
pub const SYMBOL_CACHE_MAX: usize = 65_536;

/// Why a profile could not be taken.
#[derive(Debug, thiserror::Error)]
#[error("heap profile: {0}")]
pub struct ProfilerError(String);

/// Reads the process's shared-object mappings now, if jemalloc profiles; call it from `main`
/// before any other thread starts (before a tokio runtime is built).
///
/// jemalloc_pprof reads them lazily, on the first dump, through the `mappings` crate, which
/// calls `dladdr` from inside a `dl_iterate_phdr` callback: it takes glibc's two loader locks in
/// the opposite order to `dlopen`. If that first dump runs while another thread's first
/// `getaddrinfo` loads an NSS module (`dlopen`), each thread waits for the lock the other
/// holds, and every thread started after them blocks on the loader lock too: the process hangs
/// for good. Seen in paywarden: a gateway restarted with webhook deliveries pending (the
/// dispatcher resolves the endpoints' hosts at once) while the memory guard took its first
/// profile never accepted a connection. Read once here, single-threaded, the mappings are
/// never read again.
pub fn read_mappings_before_threads() {
    if PROF_CTL.is_some() {
        let _ = mappings::MAPPINGS.is_some();
    }
}

/// Handle to the process's heap profiler; cheap to clone.
#[derive(Clone)]
pub struct HeapProfiler {
    ctl: Arc<tokio::sync::Mutex<JemallocProfCtl>>,
    symbols: Arc<Mutex<HashMap<u64, Vec<String>>>>,
}

impl std::fmt::Debug for HeapProfiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapProfiler").finish_non_exhaustive()
    }
}

impl HeapProfiler {
    /// The profiler, if jemalloc was started with `prof:true`.
    pub fn get() -> Option<HeapProfiler> {
        let ctl = PROF_CTL.as_ref()?.clone();
        Some(HeapProfiler { ctl, symbols: Arc::new(Mutex::new(HashMap::new())) })
    }

    /// Whether allocations are being sampled now, and the sampling interval (log2 bytes).
    pub async fn status(&self) -> (bool, usize) {
        let ctl = self.ctl.lock().await;
        (ctl.activated(), ctl.lg_sample())
    }

    /// Dumps the live heap profile. `at_ms` is stamped on it (the caller's clock).
    pub async fn profile(&self, at_ms: u64) -> Result<HeapProfile, ProfilerError> {
        let ctl = self.ctl.clone();
        let stacks = tokio::task::spawn_blocking(move || {
            let mut ctl = ctl.blocking_lock();
            if !ctl.activated() {
                return Err(ProfilerError("jemalloc profiling is not active (prof_active:false)".into()));
            }
            let p = ctl.dump_profile().map_err(|e| ProfilerError(format!("{e:#}")))?;
            Ok(p
                .stacks
                .into_iter()
                // jemalloc lists the outermost frame first; sites want the allocation first.
                .map(|(s, _)| ProfiledStack { frames: s.addrs.iter().rev().map(|a| *a as u64).collect(), bytes: s.weight })
                .collect::<Vec<_>>())
        })
        .await
        .map_err(|e| ProfilerError(format!("profile task: {e}")))??;
        Ok(HeapProfile { at_ms, stacks })
    }

    /// The live heap profile in pprof's format (gzipped protobuf, `inuse_space` in bytes),
    /// symbolized: `go tool pprof` or Polar Signals read it without the binary.
    pub async fn pprof(&self) -> Result<Vec<u8>, ProfilerError> {
        let ctl = self.ctl.clone();
        tokio::task::spawn_blocking(move || {
            let mut ctl = ctl.blocking_lock();
            if !ctl.activated() {
                return Err(ProfilerError("jemalloc profiling is not active (prof_active:false)".into()));
            }
            ctl.dump_pprof().map_err(|e| ProfilerError(format!("{e:#}")))
        })
        .await
        .map_err(|e| ProfilerError(format!("pprof task: {e}")))?
    }

    /// Function names at a return address from a profile, innermost inlined frame first,
    /// without Rust's hash suffixes; empty if unknown.
    pub fn symbolize(&self, addr: u64) -> Vec<String> {
        if let Some(names) = self.symbols.lock().ok().and_then(|c| c.get(&addr).cloned()) {
            return names;
        }
        let mut names = Vec::new();
        // A return address points past the call; one byte back is inside it.
        let pc = addr.saturating_sub(1) as usize as *mut std::ffi::c_void;
        backtrace::resolve(pc, |symbol| {
            if let Some(name) = symbol.name() {
                names.push(format!("{name:#}"));
            }
        });
        if let Ok(mut cache) = self.symbols.lock() {
            if cache.len() >= SYMBOL_CACHE_MAX {
                cache.clear();
            }
            cache.insert(addr, names.clone());
        }
        names
    }

    /// Diffs two profiles of this process and names the allocation sites that grew between
    /// them (symbolized here, on a blocking thread; see [`crate::sites::growing_sites`]).
    pub async fn growing_sites(&self, before: HeapProfile, after: HeapProfile, config: crate::sites::SiteConfig) -> Result<crate::sites::SiteReport, ProfilerError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || crate::sites::growing_sites(&before, &after, &config, &mut |addr| this.symbolize(addr)))
            .await
            .map_err(|e| ProfilerError(format!("diff task: {e}")))
    }

    /// Reads the binary's debug information now, by symbolizing every address of a profile
    /// of the running process, so the memory the symbolizer keeps (parsed line programs, per
    /// compilation unit, read on first use) joins the start-up heap rather than appearing as
    /// a step while a leak is investigated. Returns the addresses symbolized.
    pub async fn warm_up(&self) -> usize {
        let Ok(profile) = self.profile(0).await else { return 0 };
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut addrs: Vec<u64> = profile.stacks.iter().flat_map(|s| s.frames.iter().copied()).collect();
            addrs.push(HeapProfiler::symbolize as fn(&HeapProfiler, u64) -> Vec<String> as usize as u64 + 1);
            addrs.sort_unstable();
            addrs.dedup();
            for a in &addrs {
                this.symbolize(*a);
            }
            addrs.len()
        })
        .await
        .unwrap_or(0)
    }
}
