//! Tick labels without spurious decimals: a linear axis gets as many decimals as the step
//! between two of its ticks needs (`1600`, not `1600.0`; `89.6`, `89.8`, not `90`, `90`), a
//! logarithmic one as many as each value needs.

use std::ops::Range;

use plotters::coord::ranged1d::{BoldPoints, Ranged};
use plotters::coord::types::RangedCoordf64;

/// Most decimals a tick label gets.
pub const DECIMALS_MAX: usize = 6;

/// The ticks plotters draws on a linear axis over `range` with at most `labels` labels.
pub fn key_points(range: &Range<f64>, labels: usize) -> Vec<f64> {
    if !(range.start.is_finite() && range.end.is_finite()) || range.end <= range.start {
        return Vec::new();
    }
    RangedCoordf64::from(range.clone()).key_points(BoldPoints(labels))
}

/// Decimals that tell the ticks of a linear axis over `range` (at most `labels` labels) apart:
/// 0 for a step of 5 or 200, 1 for 0.2, 2 for 0.25.
pub fn decimals(range: &Range<f64>, labels: usize) -> usize {
    let points = key_points(range, labels);
    let step = points
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .filter(|s| s.is_finite() && *s > 0.0)
        .fold(f64::INFINITY, f64::min);
    if !step.is_finite() {
        return 0;
    }
    (0..=DECIMALS_MAX)
        .find(|d| {
            let scaled = step * 10f64.powi(*d as i32);
            (scaled - scaled.round()).abs() <= scaled.abs() * 1e-6
        })
        .unwrap_or(DECIMALS_MAX)
}

/// A linear axis's tick with `decimals` decimals; never `-0`.
pub fn linear(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return String::new();
    }
    let s = format!("{v:.decimals$}");
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => s,
    }
}

/// A logarithmic axis's tick: `1000`, `20`, `2.5`, `0.05`.
pub fn log(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    let a = v.abs();
    let s = if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The numeric tick labels of each chart (`<svg>`) of an HTML page whose labels carry a
/// decimal that no label of the chart needs (`100.0` beside `50.0`, where `0.5` beside `1.0`
/// is right): what a test asserts is empty.
pub fn spurious_decimals(page: &str) -> Vec<Vec<String>> {
    page.split("<svg")
        .skip(1)
        .map(|chart| {
            chart
                .split("</text>")
                .filter_map(|t| t.rsplit('>').next())
                .map(str::trim)
                .filter(|t| t.parse::<f64>().is_ok())
                .map(str::to_string)
                .collect::<Vec<String>>()
        })
        .filter(|labels| labels.iter().any(|t| t.ends_with(".0")) && !labels.iter().any(|t| t.contains('.') && !t.ends_with(".0")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(range: Range<f64>, n: usize) -> Vec<String> {
        let d = decimals(&range, n);
        key_points(&range, n).into_iter().map(|v| linear(v, d)).collect()
    }

    #[test]
    fn whole_steps_get_no_decimals_and_fractional_steps_just_enough() {
        assert_eq!(labels(0.0..2000.0, 5), ["0", "500", "1000", "1500", "2000"]);
        let fine = labels(89.5..90.5, 6);
        assert!(fine.iter().all(|l| l.contains('.')), "{fine:?}");
        let mut distinct = fine.clone();
        distinct.dedup();
        assert_eq!(distinct, fine, "every tick tells itself apart");
        assert_eq!(decimals(&(0.0..1.0), 5), 1);
        assert!(labels(0.0..1600.0, 8).iter().all(|l| !l.contains('.')));
    }

    #[test]
    fn no_negative_zero_and_nothing_for_non_numbers() {
        assert_eq!(linear(-0.000_01, 2), "0.00");
        assert_eq!(linear(-0.0, 0), "0");
        assert_eq!(linear(f64::NAN, 1), "");
        assert_eq!(log(1000.0), "1000");
        assert_eq!(log(2.5), "2.5");
        assert_eq!(log(0.05), "0.05");
        assert_eq!(decimals(&(1.0..1.0), 5), 0);
        assert_eq!(decimals(&(f64::NAN..1.0), 5), 0);
    }

    #[test]
    fn a_decimal_only_where_a_tick_of_the_chart_needs_it() {
        let chart = |labels: &[&str]| format!("<svg>{}</svg>", labels.iter().map(|l| format!("<text x=\"1\">\n{l}\n</text>")).collect::<String>());
        assert!(spurious_decimals(&chart(&["0.0", "0.5", "1.0", "0", "5", "10"])).is_empty());
        assert!(spurious_decimals(&chart(&["0", "500", "1000"])).is_empty());
        assert_eq!(spurious_decimals(&format!("{}{}", chart(&["0", "1"]), chart(&["50.0", "100.0", "MiB"]))), vec![vec!["50.0".to_string(), "100.0".to_string()]]);
    }
}
