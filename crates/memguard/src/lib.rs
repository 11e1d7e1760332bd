//! memguard: a memory guard for long-running services — on-line leak detection and a
//! failure-rate alert — built so that a leak is seen while it is still small.
//!
//! In the 2024-08-12 incident a payment gateway update leaked memory; the alert came after 5
//! minutes, finding the cause took 3 hours. This crate is the part that decides, from numbers a
//! service already has, whether its heap is leaking and whether its payments are failing.
//!
//! **This part is pure (sans-I/O).** It reads no clock, calls no allocator statistics, spawns
//! nothing and allocates nothing after construction: the caller takes a [`Sample`] (from
//! jemalloc's `stats.allocated`, the process's RSS and its own request counters) once a second
//! and passes it in. Any Rust service — a tokio service samples from an interval task — can
//! use it; paywarden samples jemalloc. The I/O half is optional: feature `sampler` gives a
//! tokio task that reads jemalloc and the RSS every second, feeds the detector and the
//! failure-rate alert, raises alerts and POSTs them to a webhook; feature `profiler` adds
//! jemalloc heap profiles, diffed to name the allocation sites that grow.
//!
//! ```
//! use memguard::{LeakConfig, LeakDetector, LeakState, Sample, WorkCounter};
//!
//! let config = LeakConfig {
//!     work_counter: WorkCounter::Payments,
//!     memory_limit_bytes: Some(2 << 30),
//!     ..LeakConfig::default()
//! };
//! let mut detector = LeakDetector::new(config)?;
//! // Once a second:
//! let a = detector.observe(Sample {
//!     at_ms: 1_000,
//!     heap_allocated_bytes: 128 << 20,
//!     resident_bytes: 160 << 20,
//!     requests_total: 400,
//!     payments_total: 200,
//! });
//! if a.state == LeakState::Leaking {
//!     eprintln!("{a}"); // rate, confidence, time to exhaustion and why
//! }
//! # Ok::<(), memguard::ConfigError>(())
//! ```
//!
//! `cargo run -p memguard --release --example detect [BYTES_PER_REQUEST [RATE [SECONDS]]]`
//! runs the detector on a synthetic leak and prints its timeline (`examples/detect.rs`).
//!
//! # The leak detector ([`LeakDetector`])
//!
//! **The signal** is heap-allocated bytes against cumulative work done (requests by default,
//! payments if [`WorkCounter::Payments`]): a leak keeps bytes per unit of work, so its slope
//! is the same at night and at peak, while bytes per second swing with traffic. Work, not
//! time, is the x axis of every statistic; bytes per second are reported for time to
//! exhaustion only.
//!
//! **Nested windows.** The detector keeps the last `window_samples` (3600) samples in a fixed
//! [`Ring`] and evaluates nested windows of the last 60, 240, 960 and 3600 samples
//! (`shortest_window_samples` × `scale_factor`ⁿ): short windows catch fast leaks within a
//! minute, long ones catch slow leaks whose growth is buried in noise over a minute. A window
//! longer than `max_points` (120) samples is reduced to the medians of equal consecutive blocks
//! (2, 8 and 30 samples), which also divides the noise by about √block, and is re-evaluated
//! each time a block completes. Until the ring is full, the longest windows use what there is.
//!
//! **Statistics, per window** (all robust and distribution-free; see [`stats`]):
//! - *Theil–Sen slope*: the median of the slopes of all pairs of points — bytes per unit of
//!   work (`bytes_per_work`) and bytes per second. Up to 29 % of the points can be outliers;
//!   symmetric noise and a symmetric sawtooth do not bias it. O(p²) for p ≤ 120 points: at most
//!   7140 pairs. Its one-sided 95 % upper bound comes from the distribution of Kendall's S.
//! - *Mann–Kendall test*: S = Σ sign(yⱼ − yᵢ) over pairs in time order, Var(S) = [n(n−1)(2n+5)
//!   − Σ t(t−1)(2t+5)]/18 corrected for groups of t tied values, z = (S ∓ 1)/√Var(S);
//!   `confidence` = Φ(z), one-sided: the confidence that the heap trends upward, in [0, 1].
//! - *Growth* = bytes per work × work in the window; *released* = the largest fall of the
//!   heap (maximum drawdown of the points); *floors* = the minima of the window's thirds;
//!   slopes over the middle and the last third.
//!
//! **A window's verdict** is `leaking` if every check below holds with the leaking limits,
//! `suspect` if they hold with the suspect limits, `ok` otherwise ([`Reason`] names the first
//! that failed):
//!
//! | check | leaking | suspect | what it rejects |
//! |---|---|---|---|
//! | samples in the window, work in it (and a third of that in its last third) | ≥ 30, ≥ 1000 | same | no evidence: no verdict at all |
//! | Mann–Kendall confidence | ≥ 0.999 | ≥ 0.99 | noise |
//! | Theil–Sen bytes per work | ≥ 32 | ≥ 16 | slow drift (fragmentation) |
//! | growth over the window | ≥ max(16 MiB, largest fall in this and the next longer window) | ≥ max(8 MiB, same) | sawtooth, noise, small caches |
//! | slope of the last third ÷ max(window's, middle third's) | ≥ 0.5 | same | warm-up, steps: growth that levelled off |
//! | a shorter window's 95 % upper bound on its slope ÷ this window's slope | ≥ 0.75 | same | growth that has stopped |
//! | floor rise, first → last third and middle → last third, ÷ growth | ≥ 0.25 and ≥ 0.125 | same | sawtooth, steps: a leak raises the floor |
//!
//! **The detector's state** follows the worst window's verdict with hysteresis: `suspect`
//! after 3 consecutive assessments at `suspect` or worse (`suspect_after`), `leaking` after
//! 10 consecutive at `leaking` (`leaking_after`), back to `ok` after 30 consecutive at `ok`
//! (`clear_after`). The [`Assessment`] reports the worst window's numbers (the fastest growing
//! among equals; the longest window when all are ok), the verdict before hysteresis
//! (`instant`), and `time_to_exhaustion_s` = (limit − max(resident, allocated)) ÷ bytes per
//! second when the state is not ok and a `memory_limit_bytes` is set.
//!
//! **No work, no verdict change.** A window with too little work gives no verdict; if no window
//! has one, the state and the hysteresis counters are kept ([`Reason::Idle`]). An idle process
//! with a stable heap stays `ok`; a leaking process that goes idle stays `leaking`: it still
//! holds what it leaked, no evidence says otherwise, and an alert that resolves because
//! traffic drained would flap. Heap that grows with time but no work is therefore not judged:
//! a timer-driven leak in an idle process is outside this detector (its `bytes_per_second` is
//! what to watch). A counter or the clock going backwards (a restart) clears the window and
//! keeps the state ([`Reason::Reset`]); 30 samples later the new window is judged.
//!
//! **Cost and bounds.** Memory is allocated once: the ring (3600 × 40 B = 141 KiB) and the
//! slope buffers (2 × 7140 × 8 B = 112 KiB). One `observe` takes about 75 µs in a release
//! build on the development machine (`examples/detect.rs` prints it), about 1 ms unoptimised.
//! Inputs are `u64`; statistics are `f64`; no input panics (property-tested).
//!
//! ## Measured behaviour
//!
//! Synthetic series from `tests/it/support.rs`: 200 requests/s ± 10 %, a 128 MiB heap with
//! ± 5 % uniform noise drawn independently every second (± 6.4 MiB), one sample a second,
//! default configuration. Latencies are from the leak's start; 20 seeds each
//! (`cargo test -p memguard --release --test it survey -- --ignored --nocapture`; the tests
//! assert bounds on fewer seeds).
//!
//! | leak per request | suspect after (min / median / max) | leaking after (min / median / max) |
//! |---|---|---|
//! | 4 KiB, from process start | 31 / 31 / 44 s | 38 / 39 / 53 s |
//! | 4 KiB, after 10 clean minutes | 19 / 23 / 28 s | 30 / 34 / 36 s |
//! | 4 KiB at 100 requests/s, from start | 31 / 36 / 47 s | 45 / 56 / 66 s |
//! | 4 KiB at 100 requests/s, after 10 min | 25 / 31 / 36 s | 42 / 50 / 63 s |
//! | 1 KiB, after 10 min | 40 / 56 / 93 s | 102 / 106 / 116 s |
//! | 256 B, after 10 min | 153 / 193 / 293 s | 384 / 400 / 416 s |
//! | 64 B, after 10 min | 529 / 633 / 688 s | 1103 / 1178 / 1216 s |
//!
//! A 4 KiB/request leak that stops after 5 minutes (the memory stays) is `ok` again 51–70 s
//! later and stays `ok`. At 100 requests/s, 16 MiB of growth alone takes 41 s; setting
//! `leaking_after: 5` brings the worst case to 54 s at the price of the fast mid-run refill
//! below being reported in 20 runs of 20 instead of 4 (and the 10 s warm-up in 2).
//!
//! **False positives** (same generator; "suspect" counts `suspect` or worse):
//!
//! | clean process | leaking | longest stretch at suspect |
//! |---|---|---|
//! | flat, noise ± 5 %, 2 hours × 20 seeds | never | never suspect |
//! | warm-up at start: a 64 MiB cache filling as 1 − e^(−t/10 s) | never (0/20) | 61 s |
//! | a cache filling by 1 KiB/request up to 12 MiB | never | 99 s |
//! | sawtooth: 2 MiB held 15 s of every 30 s; or growing to 2 MiB over 60 s, then freed | never | never suspect |
//! | a one-time step of 50 MiB | never | 37 s |
//! | slow wander, AR(1) φ = 0.99, σ = 1 or 2 MiB, 2 hours | never | never suspect |
//! | idle (no work), 1 hour; idle with the heap drifting up | never | never suspect |
//!
//! **Known limits** — growth that is, for as long as the detector must take to catch a
//! 4 KiB/request leak, the same as one:
//! - A large cache filled mid-run at leak-like speed: 64 MiB as 1 − e^(−t/τ) from the tenth
//!   minute is reported `leaking` in 4/20 runs for τ = 10 s and 19/20 for τ = 20 s (it grows
//!   by 3–16 KiB/request for half a minute), for 45–80 s, then clears; the same at start
//!   for τ = 20 s (4/20) and always for τ ≥ 30 s. Caches that fill by more than
//!   `leaking_growth_bytes` (16 MiB) at more than 32 B per unit of work are leaks until they
//!   stop: a 16 MiB linear fill at 1 KiB/request was reported in 13/20 runs, 32 MiB in 20/20.
//! - The first ramp of a large, slow sawtooth (a buffer growing to 32 MiB over 2 minutes) is
//!   reported; once the process has given memory back, growth must exceed what it gives back,
//!   and the sawtooth is never reported again.
//! - Mann–Kendall assumes independent noise; slowly wandering (autocorrelated) heaps inflate
//!   its confidence, and the growth threshold is then the guard: with AR(1) wander of σ = 4 MiB
//!   (excursions of ± 12 MiB over minutes), 4 of 20 two-hour runs had one `leaking` episode
//!   (31 s on average).
//!
//! # The failure-rate alert ([`BurnRateAlert`])
//!
//! Google SRE's multiwindow burn-rate rule on cumulative success and failure counters: the
//! failure ratio over a short (60 s) and a long (600 s) window, divided by the error budget
//! 1 − `slo_target` (0.999: one failure in a thousand), is the burn rate; the alert fires when
//! both windows burn at ≥ 14.4× (a failure ratio ≥ 1.44 %) and the short window holds at least
//! `min_events` (100); it resolves once the short window has stayed below 14.4× for
//! `resolve_after_s` (60 s). Too few events is no evidence and changes nothing, so an outage
//! that stops traffic keeps the alert firing. The long window makes a blip not fire (every
//! payment failing for 5 s does not); the short window makes it resolve soon after recovery.
//! Memory: one bucket per second of the long window.
//!
//! The reference is a fixed SLO budget, not a learned baseline: a learned baseline adapts to a
//! slow degradation and, during a long incident, learns the incident as normal; the budget is a
//! product decision and makes the alert deterministic. Time to fire for a failure ratio e is
//! about long window × 14.4 × budget ÷ e: for 20 % failures, 43 s (measured: 41 s); at 0.1 %,
//! 0.5 % or 1 % (up to 10× the budget) it never fires — that slower burn is for a second,
//! longer-window tier (Google's 6× over 6 h), not included here.
//!
//! # Where the leak comes from ([`sites`], `profiler`)
//!
//! A leak's rate says how bad it is; its allocation site says what to revert. With jemalloc's
//! sampling heap profiler on (`prof:true,prof_active:true,lg_prof_sample:19`: one sample per
//! 512 KiB allocated on average, compiled in through `tikv-jemallocator`'s `profiling`
//! feature), the sampler takes a heap profile every `profile_window` (10 s) while the
//! detector's verdict is not `ok`, and diffs each with the one before: the stacks that hold
//! more, attributed to the innermost frame that is the program's own code (not jemalloc, the
//! standard library, hashbrown, the symbolizer or memguard: [`sites::DEFAULT_SKIP_PREFIXES`]),
//! summed per function, largest first, with bytes per second and share. Growth under 1 MiB
//! over the window is sampling noise and not reported. Names come from the binary's debug
//! information (paywarden's release profile keeps line tables, `debug = 1`), read by a
//! short-lived helper process ([`symbolizer`]: the service's own binary again), never by the
//! service itself: parsed debug information is about 115 MB that a symbolizer keeps for good.
//! Names are cached per address.
//!
//! Call `symbolizer::serve_if_helper` first thing in `main` (in the helper it answers and
//! exits; in the service it returns at once), then
//! [`profiler::read_mappings_before_threads`] before a runtime starts: the first profile
//! otherwise reads the process's shared objects in a way that can deadlock with another
//! thread's first DNS lookup (glibc's loader locks, taken in opposite orders).
//!
//! Measured on `paywarden serve --fault leak=4096` at 150 payments/s (the end-to-end test):
//! `leaking` after 38 s and the site `paywarden_api::faults::leak_on_confirmed_payment`
//! named 1 s later, its rate within 25 % of the injected one. Profiling's cost is in
//! BENCHMARKS.md.
//!
//! # Alerts ([`alerts`], `notify`)
//!
//! The sampler raises two alerts into an [`alerts::AlertBook`]: `MemoryLeak` while the
//! detector says `leaking` (annotations: the rate, time to exhaustion, and the top sites once
//! the heap diff has them) and `PaymentFailureBurnRate` while the [`BurnRateAlert`] fires.
//! Only transitions are events (firing, resolved): an alert that stays firing is one event,
//! not one per sample. Events go to a log hook and, if configured, to a webhook in the body
//! Alertmanager sends its receivers (version 4), with bounded retries
//! (`notify::WebhookNotifier`); a firing `MemoryLeak` is sent once more, with the same
//! fingerprint, when the heap diff first names (or changes) its site.
//!
//! `cargo run -p memguard --release --features profiler --example service` shows the whole
//! I/O half in a small tokio service (`examples/service.rs`).

pub mod alerts;
pub mod burn;
pub mod exposition;
pub mod leak;
#[cfg(feature = "sampler")]
pub mod notify;
#[cfg(feature = "profiler")]
pub mod profiler;
pub mod ring;
#[cfg(feature = "sampler")]
pub mod sampler;
pub mod sites;
pub mod stats;
#[cfg(feature = "profiler")]
pub mod symbolizer;

pub use burn::{AlertState, BurnRateAlert, BurnRateConfig, BurnRateStatus, WindowRate};
pub use leak::{
    Assessment, Bytes, LeakConfig, LeakDetector, LeakState, Reason, Sample, WindowReport,
    WorkCounter,
};
pub use ring::Ring;

/// A configuration limit out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid memguard configuration: {field} {problem}")]
pub struct ConfigError {
    /// The field.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}
