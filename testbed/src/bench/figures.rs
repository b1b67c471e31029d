//! How every section turns its measurements into table text: seconds, medians, min / median /
//! max spreads of times and counts, mean / min / max, and the "met" / "missed" verdict printed
//! beside a target. Shared by all the sections; nothing here measures.

use std::time::Duration;

/// "≤ 10 s: met" or "≤ 10 s: missed".
pub(super) fn verdict(met: bool, target: &str) -> String {
    format!("{target}: {}", if met { "met" } else { "missed" })
}

pub(super) fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// The median of `values` (0 for none).
pub(super) fn median_of(mut sorted: Vec<f64>) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

/// The median duration in seconds.
pub(super) fn median(values: &[Duration]) -> f64 {
    median_of(values.iter().map(Duration::as_secs_f64).collect())
}

pub(super) fn spread(values: &[Duration]) -> String {
    if values.is_empty() {
        return "–".into();
    }
    let mut sorted: Vec<f64> = values.iter().map(|d| d.as_secs_f64()).collect();
    sorted.sort_by(f64::total_cmp);
    format!(
        "{:.2} / {:.2} / {:.2} s",
        sorted[0],
        median_of(sorted.clone()),
        sorted[sorted.len() - 1]
    )
}

/// Counts over the runs: one figure when they agree, else min / median / max.
pub(super) fn count_spread(values: &[f64]) -> String {
    let (Some(min), Some(max)) = (
        values.iter().copied().reduce(f64::min),
        values.iter().copied().reduce(f64::max),
    ) else {
        return "–".into();
    };
    if min == max {
        format!("{min:.0}")
    } else {
        format!("{min:.0} / {:.0} / {max:.0}", median_of(values.to_vec()))
    }
}

pub(super) fn stats(values: &[f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_one_figure_when_the_runs_agree() {
        assert_eq!(count_spread(&[7.0, 7.0]), "7");
        assert_eq!(count_spread(&[9.0, 7.0, 8.0]), "7 / 8 / 9");
        assert_eq!(count_spread(&[]), "–");
    }
}
