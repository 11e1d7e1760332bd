//! A generator of synthetic telemetry: a steady rate of work, a base heap, shapes added on top
//! (leak, warm-up, sawtooth, step) and uniform noise from a seeded PRNG.

use memguard::{Assessment, LeakConfig, LeakDetector, LeakState, Sample};

pub const MIB: f64 = 1024.0 * 1024.0;

/// SplitMix64: small, seeded, good enough for noise.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [-1, 1).
    pub fn symmetric(&mut self) -> f64 {
        2.0 * self.unit() - 1.0
    }
}

/// Something added to the base heap.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// `per_work` bytes kept for every unit of work from `from_s` on.
    Leak { per_work: f64, from_s: u64 },
    /// A cache filling from `from_s`: `cap · (1 − e^(−t/τ))`.
    WarmupExp { cap: f64, tau_s: f64, from_s: u64 },
    /// A cache filling by `per_work` bytes per unit of work from `from_s` until `cap`.
    WarmupLinear {
        per_work: f64,
        cap: f64,
        from_s: u64,
    },
    /// `amp` bytes allocated for the first `duty` fraction of every `period_s`, then freed.
    SquareSawtooth { amp: f64, period_s: u64, duty: f64 },
    /// A buffer growing linearly to `amp` over each `period_s`, then freed at once.
    RampSawtooth { amp: f64, period_s: u64 },
    /// `bytes` allocated once at `at_s` and kept.
    Step { bytes: f64, at_s: u64 },
    /// Slowly wandering noise: AR(1) with coefficient `phi` and stationary deviation `sd`.
    Ar1 { phi: f64, sd: f64 },
}

/// A synthetic process.
#[derive(Debug, Clone)]
pub struct Process {
    /// Units of work a second (requests; payments are half of them).
    pub rate_per_s: u64,
    /// Jitter of the work rate, as a fraction (uniform ±).
    pub rate_jitter: f64,
    /// Heap before any shape.
    pub base_heap: f64,
    /// Uniform noise, as a fraction of `base_heap` (±).
    pub noise: f64,
    pub shapes: Vec<Shape>,
    pub seed: u64,
    /// Seconds during which no work is done (idle periods), as `[from, to)`.
    pub idle: Vec<(u64, u64)>,
    /// Traffic alternating between two rates: (low, high, period in s); overrides `rate_per_s`.
    pub rate_wave: Option<(u64, u64, u64)>,
}

impl Process {
    /// 200 requests/s ± 10 %, a 128 MiB heap with ± 5 % noise, no shapes.
    pub fn clean(seed: u64) -> Self {
        Self {
            rate_per_s: 200,
            rate_jitter: 0.1,
            base_heap: 128.0 * MIB,
            noise: 0.05,
            shapes: Vec::new(),
            seed,
            idle: Vec::new(),
            rate_wave: None,
        }
    }

    pub fn with(mut self, shape: Shape) -> Self {
        self.shapes.push(shape);
        self
    }

    /// One sample a second for `seconds` seconds, the first at t = 0.
    pub fn samples(&self, seconds: u64) -> Vec<Sample> {
        let mut rng = Rng::new(self.seed);
        let mut out = Vec::with_capacity(seconds as usize);
        let mut work: u64 = 0;
        let mut starts: Vec<Option<u64>> = vec![None; self.shapes.len()];
        let mut ar = vec![0.0; self.shapes.len()];
        for t in 0..seconds {
            if t > 0 && !self.idle.iter().any(|&(a, b)| (a..b).contains(&t)) {
                let jitter = 1.0 + self.rate_jitter * rng.symmetric();
                let rate = match self.rate_wave {
                    Some((low, high, period)) if period > 0 => {
                        if (t / period) % 2 == 0 {
                            low
                        } else {
                            high
                        }
                    }
                    _ => self.rate_per_s,
                };
                work += (rate as f64 * jitter).round().max(0.0) as u64;
            }
            let mut heap = self.base_heap + self.noise * self.base_heap * rng.symmetric();
            for (i, shape) in self.shapes.iter().enumerate() {
                heap += match *shape {
                    Shape::Leak { per_work, from_s } => {
                        if t < from_s {
                            0.0
                        } else {
                            let w0 = *starts[i].get_or_insert(work);
                            per_work * (work - w0) as f64
                        }
                    }
                    Shape::WarmupExp { cap, tau_s, from_s } => {
                        if t < from_s {
                            0.0
                        } else {
                            cap * (1.0 - (-((t - from_s) as f64) / tau_s).exp())
                        }
                    }
                    Shape::WarmupLinear {
                        per_work,
                        cap,
                        from_s,
                    } => {
                        if t < from_s {
                            0.0
                        } else {
                            let w0 = *starts[i].get_or_insert(work);
                            (per_work * (work - w0) as f64).min(cap)
                        }
                    }
                    Shape::SquareSawtooth {
                        amp,
                        period_s,
                        duty,
                    } => {
                        if ((t % period_s) as f64) < duty * period_s as f64 {
                            amp
                        } else {
                            0.0
                        }
                    }
                    Shape::RampSawtooth { amp, period_s } => {
                        amp * (t % period_s) as f64 / period_s as f64
                    }
                    Shape::Step { bytes, at_s } => {
                        if t >= at_s {
                            bytes
                        } else {
                            0.0
                        }
                    }
                    Shape::Ar1 { phi, sd } => {
                        let innovation =
                            sd * (1.0 - phi * phi).sqrt() * 3f64.sqrt() * rng.symmetric();
                        ar[i] = phi * ar[i] + innovation;
                        ar[i]
                    }
                };
            }
            let heap = heap.max(0.0) as u64;
            out.push(Sample {
                at_ms: t * 1000,
                heap_allocated_bytes: heap,
                resident_bytes: heap + heap / 5 + (16 << 20),
                requests_total: work,
                payments_total: work / 2,
            });
        }
        out
    }
}

/// Everything a run of the detector went through.
#[derive(Debug, Clone)]
pub struct Run {
    pub assessments: Vec<Assessment>,
}

impl Run {
    /// Runs a fresh detector with the default configuration over `samples`.
    pub fn default_over(samples: &[Sample]) -> Self {
        Self::new(LeakConfig::default(), samples)
    }

    /// Runs a fresh detector with `config` over `samples`.
    pub fn new(config: LeakConfig, samples: &[Sample]) -> Self {
        let mut d = LeakDetector::new(config).expect("valid config");
        Self {
            assessments: samples.iter().map(|s| d.observe(*s)).collect(),
        }
    }

    /// First second (index) at which the state is at least `state`, at or after `from`.
    pub fn first_at_least(&self, state: LeakState, from: usize) -> Option<usize> {
        self.assessments
            .iter()
            .skip(from)
            .position(|a| a.state >= state)
            .map(|i| i + from)
    }

    /// First second at or after `from` at which the state is exactly `ok`.
    pub fn first_ok(&self, from: usize) -> Option<usize> {
        self.assessments
            .iter()
            .skip(from)
            .position(|a| a.state == LeakState::Ok)
            .map(|i| i + from)
    }

    /// Seconds at or after `from` spent at `state` or worse.
    pub fn seconds_at_least_from(&self, state: LeakState, from: usize) -> usize {
        self.assessments
            .iter()
            .skip(from)
            .filter(|a| a.state >= state)
            .count()
    }

    /// Seconds spent at `state` or worse.
    pub fn seconds_at_least(&self, state: LeakState) -> usize {
        self.assessments.iter().filter(|a| a.state >= state).count()
    }

    /// Longest run of consecutive seconds at `state` or worse.
    pub fn longest_at_least(&self, state: LeakState) -> usize {
        let (mut best, mut cur) = (0, 0);
        for a in &self.assessments {
            cur = if a.state >= state { cur + 1 } else { 0 };
            best = best.max(cur);
        }
        best
    }

    /// A one-line summary for failure messages.
    pub fn worst(&self) -> String {
        let worst = self.assessments.iter().enumerate().max_by(|a, b| {
            a.1.state
                .cmp(&b.1.state)
                .then(a.1.bytes_per_work.total_cmp(&b.1.bytes_per_work))
        });
        match worst {
            Some((t, a)) => format!("t={t}s {a}"),
            None => "no assessments".into(),
        }
    }
}
