//! Robust, distribution-free statistics used by the leak detector: the median, the Theil–Sen
//! slope and its confidence bound, the Mann–Kendall trend test and the standard normal CDF.
//!
//! Every function takes its scratch space from the caller so that the detector allocates
//! nothing after construction, and none of them panics: empty or degenerate input gives `None`
//! or a neutral result.

/// The median of `v`, reordering `v` (O(n) selection). `None` if `v` is empty. For an even
/// count, the mean of the two middle values.
pub fn median_in_place(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mid = v.len() / 2;
    let m = select(v, mid);
    if v.len().is_multiple_of(2) {
        let below = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some((below + m) / 2.0)
    } else {
        Some(m)
    }
}

/// Quickselect with a median-of-three pivot and branch-free partitions (one pass for "less
/// than the pivot", a second for "equal to it", so many equal values, as a flat heap's slopes
/// are, cost no more than distinct ones): puts the `k`-th smallest value at `v[k]`, values
/// not above it before it, values not below it after it, and returns it. After
/// `SELECT_ROUNDS_MAX` rounds it hands over to the standard library's selection, which bounds
/// the worst case. `k` is clamped to the last index.
// Swaps are spelled out: `slice::swap` is several times slower in unoptimised builds, where
// the tests run.
#[allow(clippy::manual_swap)]
fn select(v: &mut [f64], k: usize) -> f64 {
    const SELECT_ROUNDS_MAX: u32 = 64;
    if v.is_empty() {
        return f64::NAN;
    }
    let k = k.min(v.len() - 1);
    let (mut lo, mut hi) = (0, v.len() - 1);
    let mut rounds = 0;
    while lo < hi {
        rounds += 1;
        if rounds > SELECT_ROUNDS_MAX {
            v[lo..=hi].select_nth_unstable_by(k - lo, f64::total_cmp);
            return v[k];
        }
        let quarter = (hi - lo) / 4;
        let pivot = median3(v[lo + quarter], v[lo + 2 * quarter], v[hi - quarter]);
        // Pass 1: [lo, a) < pivot.
        let mut a = lo;
        for i in lo..=hi {
            let x = v[i];
            v[i] = v[a];
            v[a] = x;
            a += usize::from(x < pivot);
        }
        if k < a {
            hi = a - 1;
            continue;
        }
        // Pass 2: [a, b) == pivot (nothing left is below it; NaN counts as equal, so that
        // every round makes progress), [b, hi] > pivot.
        let mut b = a;
        for i in a..=hi {
            let x = v[i];
            v[i] = v[b];
            v[b] = x;
            b += usize::from(x.partial_cmp(&pivot) != Some(std::cmp::Ordering::Greater));
        }
        if k < b {
            return v[k];
        }
        lo = b;
    }
    v[k]
}

fn median3(a: f64, b: f64, c: f64) -> f64 {
    if (a <= b) == (b <= c) {
        b
    } else if (b <= a) == (a <= c) {
        a
    } else {
        c
    }
}

/// The Theil–Sen estimate of the slope of `ys` against `xs`: the median of the slopes of all
/// pairs of points with distinct x. O(n²) time; `slopes` is the caller's scratch buffer (it
/// needs n(n−1)/2 capacity to avoid allocating). `None` if no pair has distinct x.
///
/// It is robust: up to 29 % of the points can be arbitrary outliers without moving the
/// estimate arbitrarily far, and symmetric noise (or a symmetric sawtooth) does not bias it.
pub fn theil_sen(xs: &[f64], ys: &[f64], slopes: &mut Vec<f64>) -> Option<f64> {
    slopes.clear();
    let n = xs.len().min(ys.len());
    for i in 0..n {
        for j in (i + 1)..n {
            let dx = xs[j] - xs[i];
            if dx != 0.0 {
                let s = (ys[j] - ys[i]) / dx;
                if s.is_finite() {
                    slopes.push(s);
                }
            }
        }
    }
    median_in_place(slopes)
}

/// A Theil–Sen slope with Sen's (1968) one-sided confidence bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SenSlope {
    pub estimate: f64,
    /// The true slope lies above this with the confidence asked for; `None` when the points
    /// are too few for the rank to exist.
    pub low: Option<f64>,
    /// ... and below this, with the same confidence.
    pub high: Option<f64>,
}

/// The Theil–Sen slope with Sen's (1968) one-sided confidence bounds. The lower bound is the
/// slope of rank `⌊(N − z_low·√Var S)/2⌋` among the N pairwise slopes (0-based, ascending), the
/// upper one that of rank `⌈(N + z_high·√Var S)/2⌉ − 1`, with Var S = n(n−1)(2n+5)/18 for n
/// points, so the true slope lies above the first with the normal confidence of `z_low` and
/// below the second with that of `z_high` (1.645: 95 %). Noise and a warm-up step spread the
/// pairwise slopes and push both bounds away from the estimate; a steady slope keeps them
/// together. `slopes` is scratch, as for [`theil_sen`].
pub fn theil_sen_with_bounds(xs: &[f64], ys: &[f64], z_low: f64, z_high: f64, slopes: &mut Vec<f64>) -> Option<SenSlope> {
    let estimate = theil_sen(xs, ys, slopes)?;
    let n = xs.len().min(ys.len()) as f64;
    let sd = (n * (n - 1.0) * (2.0 * n + 5.0) / 18.0).sqrt();
    // Finite: a slope exists, so n ≥ 2.
    let count = slopes.len() as f64;
    let low_rank = (count - z_low * sd) / 2.0;
    if low_rank < 0.0 {
        return Some(SenSlope { estimate, low: None, high: None });
    }
    let half_width = z_high * sd;
    let high_rank = ((count + half_width) / 2.0).ceil() - 1.0;
    let low = select(slopes, low_rank.floor() as usize);
    let high = (high_rank < count).then(|| select(slopes, high_rank as usize));
    Some(SenSlope { estimate, low: Some(low), high })
}

/// The result of a Mann–Kendall trend test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannKendall {
    /// Kendall's S: the number of later-higher pairs minus later-lower pairs.
    pub s: i64,
    /// Var(S) under "no trend", corrected for tied values.
    pub variance: f64,
    /// The continuity-corrected normal score (S ∓ 1)/√Var(S); 0 when S = 0 or Var(S) = 0.
    pub z: f64,
}

impl MannKendall {
    /// The one-sided confidence that the series trends upward: Φ(z), in [0, 1]. It is
    /// 1 − p, with p the one-sided p-value of "no upward trend".
    pub fn upward_confidence(&self) -> f64 {
        normal_cdf(self.z)
    }
}

/// The Mann–Kendall test on `ys` in the order given (time order). O(n²) time; `sorted` is the
/// caller's scratch buffer for counting ties.
///
/// Var(S) = [n(n−1)(2n+5) − Σ t(t−1)(2t+5)] / 18 where t runs over the sizes of groups of
/// equal values. The normal approximation is good from about n = 10.
pub fn mann_kendall(ys: &[f64], sorted: &mut Vec<f64>) -> MannKendall {
    let n = ys.len();
    let mut s: i64 = 0;
    for i in 0..n {
        for j in (i + 1)..n {
            match ys[j].total_cmp(&ys[i]) {
                std::cmp::Ordering::Greater => s += 1,
                std::cmp::Ordering::Less => s -= 1,
                std::cmp::Ordering::Equal => {}
            }
        }
    }
    mann_kendall_from_s(s, ys, sorted)
}

/// Var(S) with ties and the z score, given S.
fn mann_kendall_from_s(s: i64, ys: &[f64], sorted: &mut Vec<f64>) -> MannKendall {
    let n = ys.len();
    sorted.clear();
    sorted.extend_from_slice(ys);
    sorted.sort_unstable_by(f64::total_cmp);
    let mut ties = 0.0;
    let mut run = 1.0_f64;
    for k in 1..=sorted.len() {
        if k < sorted.len() && sorted[k].total_cmp(&sorted[k - 1]).is_eq() {
            run += 1.0;
        } else {
            ties += run * (run - 1.0) * (2.0 * run + 5.0);
            run = 1.0;
        }
    }
    let nf = n as f64;
    let variance = ((nf * (nf - 1.0) * (2.0 * nf + 5.0) - ties) / 18.0).max(0.0);
    let z = if variance <= 0.0 || s == 0 {
        0.0
    } else {
        let corrected = if s > 0 { s - 1 } else { s + 1 };
        corrected as f64 / variance.sqrt()
    };
    MannKendall {
        s,
        variance,
        z: if z.is_finite() { z } else { 0.0 },
    }
}

/// What [`trend`] finds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    /// Theil–Sen slope of y against x; `None` if no two x differ.
    pub slope_x: Option<f64>,
    /// One-sided upper confidence bound of `slope_x` at normal score `upper_z` (1.645: 95 %),
    /// from the distribution of Kendall's S (Sen 1968): the slope of rank
    /// ⌈(N + z·√Var(S)) / 2⌉ among the N pair slopes.
    pub slope_x_upper: Option<f64>,
    /// Theil–Sen slope of y against t.
    pub slope_t: Option<f64>,
    /// Mann–Kendall test of y in order.
    pub mk: MannKendall,
}

/// Theil–Sen slopes of `ys` against `xs` (with an upper confidence bound at normal score
/// `upper_z`) and against `ts`, and the Mann–Kendall test of `ys`, in one pass over the pairs:
/// the same results as [`theil_sen`] twice and [`mann_kendall`], at about half the cost.
/// `xs`, `ts` and `ys` are in time order.
pub fn trend(
    xs: &[f64],
    ts: &[f64],
    ys: &[f64],
    upper_z: f64,
    scratch: &mut TrendScratch,
) -> Trend {
    let n = xs.len().min(ts.len()).min(ys.len());
    scratch.by_x.clear();
    scratch.by_t.clear();
    let mut s: i64 = 0;
    for i in 0..n {
        let (xi, ti, yi) = (xs[i], ts[i], ys[i]);
        for j in (i + 1)..n {
            let dy = ys[j] - yi;
            s += i64::from(dy > 0.0) - i64::from(dy < 0.0);
            let dx = xs[j] - xi;
            if dx != 0.0 {
                scratch.by_x.push(dy / dx);
            }
            let dt = ts[j] - ti;
            if dt != 0.0 {
                scratch.by_t.push(dy / dt);
            }
        }
    }
    scratch.by_x.retain(|v| v.is_finite());
    scratch.by_t.retain(|v| v.is_finite());
    let mk = mann_kendall_from_s(s, &ys[..n], &mut scratch.sorted);
    let slope_x = median_in_place(&mut scratch.by_x);
    // After the median's selection every slope from `mid` on is at least the median, so the
    // upper bound's rank is found among them.
    let count = scratch.by_x.len();
    let slope_x_upper = slope_x.map(|median| {
        let mid = count / 2;
        let half_width = if upper_z.is_finite() {
            upper_z.max(0.0) * mk.variance.sqrt()
        } else {
            0.0
        };
        let rank = ((count as f64 + half_width) / 2.0).ceil();
        let index = if rank.is_finite() {
            (rank as usize)
                .saturating_sub(1)
                .min(count.saturating_sub(1))
        } else {
            count - 1
        };
        if index <= mid {
            median.max(scratch.by_x[mid])
        } else {
            select(&mut scratch.by_x[mid..], index - mid)
        }
    });
    Trend {
        slope_x,
        slope_x_upper,
        slope_t: median_in_place(&mut scratch.by_t),
        mk,
    }
}

/// Scratch space for [`trend`]; [`TrendScratch::with_points`] sizes it so that `trend` on up
/// to that many points never allocates.
#[derive(Debug, Clone, Default)]
pub struct TrendScratch {
    by_x: Vec<f64>,
    by_t: Vec<f64>,
    sorted: Vec<f64>,
}

impl TrendScratch {
    /// Room for `points` points.
    pub fn with_points(points: usize) -> Self {
        let pairs = points * points.saturating_sub(1) / 2;
        Self {
            by_x: Vec::with_capacity(pairs),
            by_t: Vec::with_capacity(pairs),
            sorted: Vec::with_capacity(points),
        }
    }

    /// The slope buffer, for a separate [`theil_sen`] call.
    pub fn slopes(&mut self) -> &mut Vec<f64> {
        &mut self.by_x
    }
}

/// The standard normal CDF Φ(z), accurate to about 1e-7, clamped to [0, 1]. NaN gives 0.5.
pub fn normal_cdf(z: f64) -> f64 {
    if z.is_nan() || z == 0.0 {
        return 0.5;
    }
    (0.5 * erfc(-z / std::f64::consts::SQRT_2)).clamp(0.0, 1.0)
}

/// The complementary error function (Numerical Recipes' `erfcc`, fractional error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let ans = t * poly.exp();
    if x >= 0.0 { ans } else { 2.0 - ans }
}

/// The largest fall of `ys` below an earlier value: max over i ≤ j of `ys[i] − ys[j]`
/// (the maximum drawdown), 0 for a non-decreasing series. O(n).
pub fn max_drawdown(ys: &[f64]) -> f64 {
    let mut peak = f64::NEG_INFINITY;
    let mut worst = 0.0_f64;
    for &y in ys {
        peak = peak.max(y);
        worst = worst.max(peak - y);
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median_in_place(&mut []), None);
        assert_eq!(median_in_place(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median_in_place(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median_in_place(&mut [7.0]), Some(7.0));
    }

    #[test]
    fn select_matches_sorting() {
        let mut rng = 12345u64;
        for len in 1..60usize {
            for round in 0..20 {
                let mut v: Vec<f64> = (0..len)
                    .map(|_| {
                        rng = rng
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        // Few distinct values in some rounds, to exercise ties.
                        let m = if round % 2 == 0 { 5 } else { 1000 };
                        ((rng >> 33) % m) as f64
                    })
                    .collect();
                let mut sorted = v.clone();
                sorted.sort_by(f64::total_cmp);
                let k = (rng as usize) % len;
                assert_eq!(select(&mut v, k), sorted[k]);
                assert!(v[..k].iter().all(|x| *x <= sorted[k]));
                assert!(v[k + 1..].iter().all(|x| *x >= sorted[k]));
            }
        }
    }

    #[test]
    fn the_bounds_are_close_for_a_steady_slope_and_far_for_a_step() {
        let mut scratch = Vec::new();
        // A steady 800 B per request over 60 requests with ±4 KB of jitter.
        let xs: Vec<f64> = (0..60).map(|i| i as f64).collect();
        let jitter = |i: usize| [0.0, 4000.0, -3000.0, 2500.0, -4000.0, 1000.0][i % 6];
        let steady: Vec<f64> = (0..60).map(|i| 800.0 * i as f64 + jitter(i)).collect();
        let SenSlope { estimate: est, low, high } = theil_sen_with_bounds(&xs, &steady, 1.645, 1.645, &mut scratch).unwrap();
        let (low, high) = (low.unwrap(), high.unwrap());
        assert!((est - 800.0).abs() < 150.0, "{est}");
        assert!(low > 550.0 && low <= est, "{low} {est}");
        assert!(high < 1050.0 && high >= est, "{high} {est}");
        // Flat, with one 30-KB step two thirds of the way (a cache filling): the estimate says
        // 571 B per request, the bound only 308.
        let step: Vec<f64> = (0..60).map(|i| if i < 40 { 0.0 } else { 30_000.0 } + jitter(i)).collect();
        let SenSlope { estimate: est, low, high } = theil_sen_with_bounds(&xs, &step, 1.645, 1.645, &mut scratch).unwrap();
        assert!(est > 512.0, "{est}");
        assert!(low.unwrap() < 0.6 * est, "{low:?} {est}");
        assert!(high.unwrap() > 1.2 * est, "{high:?} {est}"); // 714 against 571
        // Three points: no rank is far enough from the median for 95 %.
        assert_eq!(theil_sen_with_bounds(&[0.0, 1.0, 2.0], &[0.0, 1.0, 2.0], 1.645, 1.645, &mut scratch), Some(SenSlope { estimate: 1.0, low: None, high: None }));
        assert_eq!(theil_sen_with_bounds(&[1.0, 1.0], &[0.0, 5.0], 1.645, 1.645, &mut scratch), None);
    }

    #[test]
    fn theil_sen_ignores_an_outlier() {
        let xs: Vec<f64> = (0..20).map(f64::from).collect();
        let mut ys: Vec<f64> = xs.iter().map(|x| 3.0 * x + 1.0).collect();
        ys[7] = 1e9;
        let mut scratch = Vec::new();
        assert_eq!(theil_sen(&xs, &ys, &mut scratch), Some(3.0));
        assert_eq!(theil_sen(&[1.0, 1.0], &[0.0, 5.0], &mut scratch), None);
        assert_eq!(theil_sen(&[], &[], &mut scratch), None);
    }

    #[test]
    fn mann_kendall_trend_and_ties() {
        let mut scratch = Vec::new();
        let up: Vec<f64> = (0..30).map(f64::from).collect();
        let mk = mann_kendall(&up, &mut scratch);
        assert_eq!(mk.s, 435);
        assert!(mk.upward_confidence() > 0.9999);
        let flat = vec![5.0; 30];
        let mk = mann_kendall(&flat, &mut scratch);
        assert_eq!(mk.s, 0);
        assert_eq!(mk.variance, 0.0);
        assert_eq!(mk.upward_confidence(), 0.5);
        let down: Vec<f64> = up.iter().rev().copied().collect();
        assert!(mann_kendall(&down, &mut scratch).upward_confidence() < 1e-4);
        // n = 4 with one pair tied: Var = [4·3·13 − 2·1·9]/18 = 138/18.
        let mk = mann_kendall(&[1.0, 2.0, 2.0, 3.0], &mut scratch);
        assert_eq!(mk.s, 5);
        assert!((mk.variance - 138.0 / 18.0).abs() < 1e-12);
    }

    #[test]
    fn fused_trend_matches_separate() {
        let xs: Vec<f64> = (0..40).map(|i| f64::from(i * 3 + i % 4)).collect();
        let ts: Vec<f64> = (0..40).map(f64::from).collect();
        let ys: Vec<f64> = (0..40)
            .map(|i| f64::from(i * 7 % 11) + f64::from(i) * 0.5)
            .collect();
        let mut sc = TrendScratch::with_points(40);
        let t = trend(&xs, &ts, &ys, 1.645, &mut sc);
        let mut v = Vec::new();
        assert_eq!(t.slope_x, theil_sen(&xs, &ys, &mut v));
        assert_eq!(t.slope_t, theil_sen(&ts, &ys, &mut v));
        assert_eq!(t.mk, mann_kendall(&ys, &mut v));
        let upper = t.slope_x_upper.unwrap_or(f64::NAN);
        assert!(upper >= t.slope_x.unwrap_or(f64::INFINITY));
        // The bound is the slope of the stated rank.
        let mut all = Vec::new();
        theil_sen(&xs, &ys, &mut all);
        all.sort_by(f64::total_cmp);
        let rank = ((all.len() as f64 + 1.645 * t.mk.variance.sqrt()) / 2.0).ceil() as usize;
        assert_eq!(upper, all[rank - 1]);
    }

    #[test]
    fn normal_cdf_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
        assert!((normal_cdf(-2.326_348) - 0.01).abs() < 1e-6);
        assert!((normal_cdf(3.090_232) - 0.999).abs() < 1e-6);
        assert_eq!(normal_cdf(f64::INFINITY), 1.0);
        assert_eq!(normal_cdf(f64::NEG_INFINITY), 0.0);
        assert_eq!(normal_cdf(f64::NAN), 0.5);
    }

    #[test]
    fn drawdown() {
        assert_eq!(max_drawdown(&[]), 0.0);
        assert_eq!(max_drawdown(&[1.0, 2.0, 3.0]), 0.0);
        assert_eq!(max_drawdown(&[1.0, 5.0, 2.0, 4.0, 0.5]), 4.5);
    }
}
