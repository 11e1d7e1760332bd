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
//! done on a blocking thread. **This process never reads its own debug information**: that
//! costs about 100 MB that the symbolizer keeps for good, ten times an idle service's heap.
//! Names for a heap diff come from a short-lived helper process ([`crate::symbolizer`]),
//! one per diff for the addresses not named before, and are cached per address (at most
//! [`SYMBOL_CACHE_MAX`] addresses; names are small). The pprof output is not symbolized: it
//! carries each object's path and build id and file-relative addresses, and is symbolized
//! offline against the binary (`go tool pprof ./paywarden heap.pb.gz`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jemalloc_pprof::{JemallocProfCtl, PROF_CTL};

use crate::sites::{HeapProfile, ProfiledStack};
use crate::symbolizer::HelperCommand;

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
///
/// In a symbolizer helper started by such a service this answers and exits instead
/// ([`crate::symbolizer::serve_if_helper`], which a service should call before anything else:
/// this call is the safety net for one that calls this first).
pub fn read_mappings_before_threads() {
    crate::symbolizer::serve_if_helper();
    if PROF_CTL.is_some() {
        let _ = mappings::MAPPINGS.is_some();
    }
}

/// Handle to the process's heap profiler; cheap to clone.
#[derive(Clone)]
pub struct HeapProfiler {
    ctl: Arc<tokio::sync::Mutex<JemallocProfCtl>>,
    symbols: Arc<Mutex<HashMap<u64, Vec<String>>>>,
    helper: Arc<HelperCommand>,
    /// One symbolizer helper at a time per process.
    helper_turn: Arc<tokio::sync::Mutex<()>>,
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
        Some(HeapProfiler {
            ctl,
            symbols: Arc::new(Mutex::new(HashMap::new())),
            helper: Arc::new(HelperCommand::default()),
            helper_turn: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Starts symbolizer helpers with `command` (default: this binary, `/proc/self/exe`, whose
    /// `main` calls [`crate::symbolizer::serve_if_helper`] first). A test points it at its own
    /// test binary with the arguments that run the test calling `serve_if_helper`.
    pub fn with_symbolizer(mut self, command: HelperCommand) -> HeapProfiler {
        self.helper = Arc::new(command);
        self
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

    /// The live heap profile in pprof's format (gzipped protobuf, `inuse_space` in bytes), not
    /// symbolized: its mappings carry each object's path and GNU build id, its locations
    /// file-relative addresses; `go tool pprof BINARY FILE` names them offline.
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

    /// Function names at each return address of `addrs` (as profiles record them), innermost
    /// inlined frame first, without Rust's hash suffixes; empty if unknown. Cached addresses
    /// are answered from the cache; the others are named by one symbolizer helper process
    /// (per [`crate::symbolizer::ADDRESSES_PER_REQUEST_MAX`]), whose failure is the error.
    pub async fn symbolize(&self, addrs: &[u64]) -> Result<HashMap<u64, Vec<String>>, ProfilerError> {
        let _turn = self.helper_turn.lock().await;
        let mut names: HashMap<u64, Vec<String>> = HashMap::with_capacity(addrs.len());
        let mut misses = Vec::new();
        {
            let cache = self.symbols.lock().unwrap_or_else(|p| p.into_inner());
            for &a in addrs {
                match cache.get(&a) {
                    Some(n) => {
                        names.insert(a, n.clone());
                    }
                    None => misses.push(a),
                }
            }
        }
        misses.sort_unstable();
        misses.dedup();
        if misses.is_empty() {
            return Ok(names);
        }
        let found = crate::symbolizer::symbolize(&self.helper, &crate::symbolizer::process_mappings(), &misses)
            .await
            .map_err(|e| ProfilerError(e.to_string()))?;
        assert_eq!(found.len(), misses.len(), "one answer per address");
        let mut cache = self.symbols.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() + misses.len() > SYMBOL_CACHE_MAX {
            cache.clear();
        }
        for (a, n) in misses.into_iter().zip(found) {
            if cache.len() < SYMBOL_CACHE_MAX {
                cache.insert(a, n.clone());
            }
            names.insert(a, n);
        }
        Ok(names)
    }

    /// Diffs two profiles of this process and names the allocation sites that grew between
    /// them (see [`crate::sites::growing_sites`]). Every frame of `after` not named before is
    /// named first, in one symbolizer helper call: the diff only names frames of stacks of
    /// `after` (a stack only in `before` shrank), and it may need any of them.
    pub async fn growing_sites(&self, before: HeapProfile, after: HeapProfile, config: crate::sites::SiteConfig) -> Result<crate::sites::SiteReport, ProfilerError> {
        let mut addrs: Vec<u64> = after.stacks.iter().flat_map(|s| s.frames.iter().copied()).collect();
        addrs.sort_unstable();
        addrs.dedup();
        let names = self.symbolize(&addrs).await?;
        tokio::task::spawn_blocking(move || {
            crate::sites::growing_sites(&before, &after, &config, &mut |addr| names.get(&addr).cloned().unwrap_or_default())
        })
        .await
        .map_err(|e| ProfilerError(format!("diff task: {e}")))
    }
}
