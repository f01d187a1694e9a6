//! Latency percentiles and error counts, gathered without per-message sharing:
//! each device keeps its own samples and the run merges them at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

use crate::report::LatencyReport;

/// Highest latency the histogram tracks exactly: one hour, in microseconds.
const MAX_TRACKED_MICROS: u64 = 3_600_000_000;

/// Send→receive latencies of a whole run, in microseconds.
pub(crate) struct Latencies {
    histogram: Histogram<u64>,
}

impl Latencies {
    /// An empty set, 3 significant digits from 1 µs to an hour.
    pub(crate) fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, 3)
            .expect("constant bounds within hdrhistogram's limits");
        Self { histogram }
    }

    /// Adds one device's samples; values past an hour count as an hour.
    pub(crate) fn add_all(&mut self, micros: &[u32]) {
        for &value in micros {
            self.histogram.saturating_record(u64::from(value).max(1));
        }
    }

    /// How many samples were added.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.histogram.len()
    }

    /// p50, p90, p99, p99.9, max and mean; `None` when nothing was recorded.
    pub(crate) fn report(&self) -> Option<LatencyReport> {
        if self.histogram.is_empty() {
            return None;
        }
        let at = |q: f64| self.histogram.value_at_quantile(q);
        Some(LatencyReport {
            p50_micros: at(0.50),
            p90_micros: at(0.90),
            p99_micros: at(0.99),
            p999_micros: at(0.999),
            max_micros: self.histogram.max(),
            mean_micros: self.histogram.mean(),
        })
    }
}

/// Errors by kind, shared by every task of a run; errors are rare, so a
/// mutex is cheaper than anything cleverer.
#[derive(Default)]
pub(crate) struct ErrorCounts {
    total: AtomicU64,
    by_kind: Mutex<BTreeMap<String, u64>>,
}

impl ErrorCounts {
    /// Counts one error of `kind` (a short label such as `send: HTTP 404 DeviceNotFound`).
    pub(crate) fn add(&self, kind: impl Into<String>, count: u64) {
        if count == 0 {
            return;
        }
        self.total.fetch_add(count, Ordering::Relaxed);
        if let Ok(mut map) = self.by_kind.lock() {
            *map.entry(kind.into()).or_default() += count;
        }
    }

    /// Errors so far.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The counts by kind, most frequent first.
    pub(crate) fn snapshot(&self) -> Vec<(String, u64)> {
        let mut counts: Vec<(String, u64)> = self
            .by_kind
            .lock()
            .map(|map| map.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_all_devices_samples() {
        let mut latencies = Latencies::new();
        let first: Vec<u32> = (1..=500).collect();
        let second: Vec<u32> = (501..=1000).collect();
        latencies.add_all(&first);
        latencies.add_all(&second);
        assert_eq!(latencies.len(), 1000);
        let report = latencies.report().unwrap();
        assert_eq!(report.p50_micros, 500);
        assert_eq!(report.p90_micros, 900);
        assert_eq!(report.p99_micros, 990);
        assert_eq!(report.p999_micros, 999);
        assert_eq!(report.max_micros, 1000);
        assert!((report.mean_micros - 500.5).abs() < 1.0);
    }

    #[test]
    fn large_values_keep_three_significant_digits() {
        let mut latencies = Latencies::new();
        latencies.add_all(&[1_234_567, 0]);
        let report = latencies.report().unwrap();
        let max = report.max_micros;
        assert!((1_234_000..=1_235_500).contains(&max), "{max}");
        assert_eq!(latencies.report().unwrap().p50_micros, 1);
    }

    #[test]
    fn no_samples_no_percentiles() {
        assert!(Latencies::new().report().is_none());
    }

    #[test]
    fn errors_are_counted_by_kind_most_frequent_first() {
        let errors = ErrorCounts::default();
        errors.add("send: transport", 1);
        errors.add("mqtt: closed", 2);
        errors.add("send: transport", 2);
        errors.add("ignored", 0);
        assert_eq!(errors.total(), 5);
        assert_eq!(
            errors.snapshot(),
            vec![
                ("send: transport".to_owned(), 3),
                ("mqtt: closed".to_owned(), 2)
            ]
        );
    }
}
