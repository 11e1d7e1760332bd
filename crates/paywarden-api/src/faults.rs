//! Injected faults, for tests and drills: the classic regressions of a bad deploy, on purpose.
//!
//! - `leak=BYTES`: every confirmed payment keeps BYTES alive forever, as the 2024-08-12 update
//!   did. The memory is allocated in [`leak_on_confirmed_payment`] (kept out of line, so heap
//!   profiles name it) and written to, so it is resident, not just reserved.
//! - `errors=RATE`: that fraction of payment requests (POSTs under `/v1/payment_intents`) is
//!   answered with a 500 before anything is read or written.
//! - `latency=DURATION`: payment requests wait that long before they are handled.
//!
//! And two benign memory patterns a leak detector must *not* report, for false-alarm tests:
//!
//! - `cache=BYTES`: every confirmed payment adds a [`PATTERN_CHUNK_BYTES`] entry to a cache
//!   that evicts its oldest entry once it holds BYTES: growth with traffic that plateaus.
//! - `sawtooth=BYTES`: every confirmed payment appends a chunk to a buffer that is freed
//!   whole when it reaches BYTES: periodic allocate and release.
//!
//! All are off unless named on the command line; `serve` announces them at start-up.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;

/// One `--fault KIND=VALUE`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    Leak { bytes: usize },
    Errors { rate: f64 },
    Latency { delay: Duration },
    Cache { bytes: usize },
    Sawtooth { bytes: usize },
}

/// Bytes per confirmed payment of the `cache` and `sawtooth` patterns.
pub const PATTERN_CHUNK_BYTES: usize = 1024;
/// Largest `cache` or `sawtooth` size accepted.
pub const PATTERN_BYTES_MAX: usize = 1 << 30;

/// Largest leak per payment accepted (a fault is a drill, not a way to crash the host at once).
pub const LEAK_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest injected latency.
pub const LATENCY_MAX: Duration = Duration::from_secs(60);

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Fault, String> {
        let (kind, value) = s.split_once('=').ok_or_else(|| format!("'{s}': write KIND=VALUE, e.g. leak=4096, errors=0.2 or latency=200ms"))?;
        match kind {
            "leak" => {
                let bytes: usize = value.parse().map_err(|_| format!("leak={value}: give a whole number of bytes, e.g. leak=4096"))?;
                if bytes == 0 || bytes > LEAK_BYTES_MAX {
                    return Err(format!("leak={value}: must be 1 to {LEAK_BYTES_MAX} bytes per payment"));
                }
                Ok(Fault::Leak { bytes })
            }
            "errors" => {
                let rate: f64 = value.parse().map_err(|_| format!("errors={value}: give a fraction from 0 to 1, e.g. errors=0.2"))?;
                if !(rate > 0.0 && rate <= 1.0) {
                    return Err(format!("errors={value}: the rate must be above 0 and at most 1"));
                }
                Ok(Fault::Errors { rate })
            }
            "latency" => {
                let delay = humantime::parse_duration(value).map_err(|_| format!("latency={value}: give a duration such as 200ms or 2s"))?;
                if delay.is_zero() || delay > LATENCY_MAX {
                    return Err(format!("latency={value}: must be above 0 and at most {}s", LATENCY_MAX.as_secs()));
                }
                Ok(Fault::Latency { delay })
            }
            "cache" | "sawtooth" => {
                let bytes: usize = value.parse().map_err(|_| format!("{kind}={value}: give a whole number of bytes, e.g. {kind}=12582912"))?;
                if !(PATTERN_CHUNK_BYTES..=PATTERN_BYTES_MAX).contains(&bytes) {
                    return Err(format!("{kind}={value}: must be {PATTERN_CHUNK_BYTES} to {PATTERN_BYTES_MAX} bytes"));
                }
                Ok(if kind == "cache" { Fault::Cache { bytes } } else { Fault::Sawtooth { bytes } })
            }
            other => Err(format!(
                "unknown fault kind '{other}': use leak=BYTES, errors=RATE, latency=DURATION, cache=BYTES or sawtooth=BYTES"
            )),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Leak { bytes } => write!(f, "leak={bytes}"),
            Fault::Errors { rate } => write!(f, "errors={rate}"),
            Fault::Latency { delay } => write!(f, "latency={}ms", delay.as_millis()),
            Fault::Cache { bytes } => write!(f, "cache={bytes}"),
            Fault::Sawtooth { bytes } => write!(f, "sawtooth={bytes}"),
        }
    }
}

/// The faults in force, and what the leak has kept so far.
#[derive(Debug, Default)]
pub struct Faults {
    leak_bytes: Option<usize>,
    error_rate: Option<f64>,
    latency: Option<Duration>,
    leaked: Mutex<Vec<Box<[u8]>>>,
    leaked_bytes: AtomicU64,
    injected_errors: AtomicU64,
    cache_bytes: Option<usize>,
    sawtooth_bytes: Option<usize>,
    patterns: Mutex<Patterns>,
}

/// The benign patterns' memory.
#[derive(Debug, Default)]
struct Patterns {
    /// The `cache` pattern's entries, oldest first.
    cache: VecDeque<Box<[u8]>>,
    /// The `sawtooth` pattern's buffer.
    saw: Vec<Box<[u8]>>,
}

impl Faults {
    pub fn new(faults: &[Fault]) -> Faults {
        let mut f = Faults::default();
        for fault in faults {
            match *fault {
                Fault::Leak { bytes } => f.leak_bytes = Some(bytes),
                Fault::Errors { rate } => f.error_rate = Some(rate),
                Fault::Latency { delay } => f.latency = Some(delay),
                Fault::Cache { bytes } => f.cache_bytes = Some(bytes),
                Fault::Sawtooth { bytes } => f.sawtooth_bytes = Some(bytes),
            }
        }
        f
    }

    pub fn active(&self) -> Vec<Fault> {
        let mut v = Vec::new();
        if let Some(bytes) = self.leak_bytes {
            v.push(Fault::Leak { bytes });
        }
        if let Some(rate) = self.error_rate {
            v.push(Fault::Errors { rate });
        }
        if let Some(delay) = self.latency {
            v.push(Fault::Latency { delay });
        }
        if let Some(bytes) = self.cache_bytes {
            v.push(Fault::Cache { bytes });
        }
        if let Some(bytes) = self.sawtooth_bytes {
            v.push(Fault::Sawtooth { bytes });
        }
        v
    }

    pub fn leaked_bytes(&self) -> u64 {
        self.leaked_bytes.load(Ordering::Relaxed)
    }

    pub fn injected_errors(&self) -> u64 {
        self.injected_errors.load(Ordering::Relaxed)
    }

    /// Before a payment request: wait, then maybe fail it. `true` means answer with a 500.
    pub async fn before_payment_request(&self) -> bool {
        if let Some(d) = self.latency {
            tokio::time::sleep(d).await;
        }
        match self.error_rate {
            Some(rate) if rand::rng().random_bool(rate) => {
                self.injected_errors.fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// After a payment was confirmed and made durable.
    pub fn after_confirmed_payment(&self) {
        if let Some(bytes) = self.leak_bytes {
            let kept = leak_on_confirmed_payment(bytes);
            if let Ok(mut leaked) = self.leaked.lock() {
                leaked.push(kept);
                self.leaked_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            }
        }
        if self.cache_bytes.is_none() && self.sawtooth_bytes.is_none() {
            return;
        }
        if let Ok(mut p) = self.patterns.lock() {
            let Patterns { cache, saw } = &mut *p;
            if let Some(cap) = self.cache_bytes {
                if (cache.len() + 1) * PATTERN_CHUNK_BYTES > cap {
                    cache.pop_front();
                }
                cache.push_back(pattern_chunk());
            }
            if let Some(peak) = self.sawtooth_bytes {
                if (saw.len() + 1) * PATTERN_CHUNK_BYTES > peak {
                    *saw = Vec::new();
                }
                saw.push(pattern_chunk());
            }
        }
    }

    /// Bytes held by the `cache` and `sawtooth` patterns now.
    pub fn pattern_bytes(&self) -> (usize, usize) {
        self.patterns.lock().map(|p| (p.cache.len() * PATTERN_CHUNK_BYTES, p.saw.len() * PATTERN_CHUNK_BYTES)).unwrap_or((0, 0))
    }
}

/// One chunk of a benign pattern, written so it is resident.
fn pattern_chunk() -> Box<[u8]> {
    std::hint::black_box(vec![0x5Au8; PATTERN_CHUNK_BYTES].into_boxed_slice())
}

/// The injected leak's allocation site: the function a heap-profile diff must name.
#[inline(never)]
pub fn leak_on_confirmed_payment(bytes: usize) -> Box<[u8]> {
    // Written, so the pages are resident and RSS shows the leak as a real one would.
    let v = vec![0xA5u8; bytes].into_boxed_slice();
    std::hint::black_box(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_and_refuses_bad_values() {
        assert_eq!("leak=4096".parse::<Fault>(), Ok(Fault::Leak { bytes: 4096 }));
        assert_eq!("errors=0.2".parse::<Fault>(), Ok(Fault::Errors { rate: 0.2 }));
        assert_eq!("latency=200ms".parse::<Fault>(), Ok(Fault::Latency { delay: Duration::from_millis(200) }));
        assert_eq!("latency=1.5s".parse::<Fault>(), Ok(Fault::Latency { delay: Duration::from_millis(1500) }));
        for bad in ["leak", "leak=0", "leak=-1", "leak=16777217", "errors=0", "errors=1.5", "errors=x", "latency=0ms", "latency=61s", "latency=5x", "cpu=1"] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
        assert!("leak=16777216".parse::<Fault>().is_ok());
        assert_eq!("cache=12582912".parse::<Fault>(), Ok(Fault::Cache { bytes: 12 << 20 }));
        assert_eq!("sawtooth=1024".parse::<Fault>(), Ok(Fault::Sawtooth { bytes: 1024 }));
        for bad in ["cache=1023", "cache=1073741825", "sawtooth=x", "sawtooth="] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
        for f in ["cache=2048", "sawtooth=4096", "leak=10", "errors=0.5", "latency=200ms"] {
            assert_eq!(f.parse::<Fault>().unwrap().to_string(), f, "shown as written");
        }
    }

    #[test]
    fn the_cache_plateaus_at_its_cap_and_the_sawtooth_falls_back() {
        let f = Faults::new(&[Fault::Cache { bytes: 10 * PATTERN_CHUNK_BYTES }, Fault::Sawtooth { bytes: 4 * PATTERN_CHUNK_BYTES }]);
        let mut saw = Vec::new();
        for i in 1..=25 {
            f.after_confirmed_payment();
            let (cache, s) = f.pattern_bytes();
            assert_eq!(cache, i.min(10) * PATTERN_CHUNK_BYTES, "cache after {i}");
            saw.push(s / PATTERN_CHUNK_BYTES);
        }
        assert_eq!(&saw[..9], &[1, 2, 3, 4, 1, 2, 3, 4, 1]);
        assert_eq!(f.leaked_bytes(), 0, "patterns are not leaks");
    }

    #[test]
    fn the_leak_keeps_what_it_is_told() {
        let f = Faults::new(&[Fault::Leak { bytes: 1000 }]);
        for _ in 0..10 {
            f.after_confirmed_payment();
        }
        assert_eq!(f.leaked_bytes(), 10_000);
        assert_eq!(Faults::default().active(), vec![]);
    }
}
