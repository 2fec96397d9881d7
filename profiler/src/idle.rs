//! The idle-time histogram of the hybrid keep-alive policy ("Serverless in the Wild", ATC'20).
//!
//! For each app, the policy records every *idle time*: from the end of one use of the app's
//! contexts to the next arrival. Over a fixed range (ATC'20: 1-minute bins over 4 hours, 240
//! bins) the histogram's head gives the pre-warm window (unload after use, load again just before
//! the 5th percentile idle time) and its tail the keep-alive window (keep until the 99th
//! percentile). Idle times beyond the range are counted as out of bounds: when too many are, or
//! when the bin counts are too even to be representative (low coefficient of variation), the
//! policy falls back to a time-series forecast or a fixed keep-alive.
//!
//! Bin `i` covers idle times in `[i * width, (i + 1) * width)`. Counts are a fixed `Vec<u32>`
//! (saturating), so recording is an index and an increment, with no allocation.

use thiserror::Error;

/// ATC'20's bin width: one minute.
pub const ATC20_BIN_WIDTH_US: u64 = 60_000_000;
/// ATC'20's range: 4 hours of 1-minute bins.
pub const ATC20_BINS: usize = 240;
/// The largest number of bins accepted (a guard against a configuration typo allocating
/// gigabytes): a week of 1-second bins.
pub const MAX_BINS: usize = 7 * 24 * 3_600;

/// Why an idle-time histogram could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum IdleHistogramError {
    /// Bins must be at least 1 us wide.
    #[error("idle-time histogram bin width must be at least 1 us, got 0")]
    ZeroBinWidth,
    /// At least one bin is needed.
    #[error("idle-time histogram needs at least 1 bin, got 0")]
    ZeroBins,
    /// More bins than [`MAX_BINS`].
    #[error("idle-time histogram asks for {bins} bins, more than the limit of {max}")]
    TooManyBins { bins: usize, max: usize },
    /// `bin_width_us * bins` does not fit in u64 microseconds.
    #[error("idle-time histogram range of {bins} bins of {bin_width_us} us overflows u64")]
    RangeOverflow { bin_width_us: u64, bins: usize },
}

/// Counts of idle times in fixed-width bins, plus the count of those beyond the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleTimeHistogram {
    bin_width_us: u64,
    counts: Vec<u32>,
    in_bounds: u64,
    out_of_bounds: u64,
}

impl IdleTimeHistogram {
    /// `bins` bins of `bin_width_us` each.
    pub fn new(bin_width_us: u64, bins: usize) -> Result<Self, IdleHistogramError> {
        if bin_width_us == 0 {
            return Err(IdleHistogramError::ZeroBinWidth);
        }
        if bins == 0 {
            return Err(IdleHistogramError::ZeroBins);
        }
        if bins > MAX_BINS {
            return Err(IdleHistogramError::TooManyBins {
                bins,
                max: MAX_BINS,
            });
        }
        if u64::try_from(bins)
            .ok()
            .and_then(|b| b.checked_mul(bin_width_us))
            .is_none()
        {
            return Err(IdleHistogramError::RangeOverflow { bin_width_us, bins });
        }
        Ok(Self {
            bin_width_us,
            counts: vec![0; bins],
            in_bounds: 0,
            out_of_bounds: 0,
        })
    }

    /// ATC'20's configuration: 240 bins of 1 minute (4 hours).
    pub fn atc20() -> Self {
        Self {
            bin_width_us: ATC20_BIN_WIDTH_US,
            counts: vec![0; ATC20_BINS],
            in_bounds: 0,
            out_of_bounds: 0,
        }
    }

    /// Counts one idle time.
    pub fn record(&mut self, idle_us: u64) {
        let bin = idle_us / self.bin_width_us;
        match usize::try_from(bin)
            .ok()
            .and_then(|b| self.counts.get_mut(b))
        {
            Some(count) => {
                *count = count.saturating_add(1);
                self.in_bounds += 1;
            }
            None => self.out_of_bounds += 1,
        }
    }

    /// Idle times recorded, in bounds or not.
    pub fn total(&self) -> u64 {
        self.in_bounds + self.out_of_bounds
    }

    pub fn in_bounds(&self) -> u64 {
        self.in_bounds
    }

    pub fn out_of_bounds(&self) -> u64 {
        self.out_of_bounds
    }

    /// The count of bin `i` (0 past the last bin).
    pub fn bin_count(&self, i: usize) -> u32 {
        self.counts.get(i).copied().unwrap_or(0)
    }

    /// All bin counts.
    pub fn counts(&self) -> &[u32] {
        &self.counts
    }

    /// The first bin at which the cumulative in-bounds count reaches `q` (0..=1, clamped) of
    /// the in-bounds total, i.e. reaches `max(1, ceil(q * in_bounds))`; `None` when no idle time
    /// is in bounds or `q` is NaN. `q = 0` gives the first non-empty bin, `q = 1` the last.
    pub fn percentile_bin(&self, q: f64) -> Option<usize> {
        if self.in_bounds == 0 || q.is_nan() {
            return None;
        }
        let total: u64 = self.counts.iter().map(|&c| u64::from(c)).sum();
        // f64 represents every count below 2^53 exactly; ceil keeps "reaches q" exact for the
        // usual q = 0.05 / 0.99 and small totals.
        let target = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        let mut cumulative = 0u64;
        self.counts.iter().position(|&c| {
            cumulative += u64::from(c);
            cumulative >= target
        })
    }

    /// Lower edge of bin `i`, microseconds (ATC'20 pre-warms at the lower edge of the head bin).
    pub fn bin_start_us(&self, i: usize) -> u64 {
        self.bin_width_us.saturating_mul(i as u64)
    }

    /// Upper edge of bin `i`, microseconds (ATC'20 keeps alive to the upper edge of the tail bin).
    pub fn bin_end_us(&self, i: usize) -> u64 {
        self.bin_width_us.saturating_mul(i as u64 + 1)
    }

    /// Coefficient of variation of the bin counts (population standard deviation / mean over all
    /// bins), ATC'20's measure of whether the histogram is representative: near 0 when idle
    /// times are spread evenly, large when they concentrate in few bins. 0 when empty.
    pub fn bin_counts_cv(&self) -> f64 {
        let n = self.counts.len() as f64;
        let sum: f64 = self.counts.iter().map(|&c| f64::from(c)).sum();
        if sum == 0.0 {
            return 0.0;
        }
        let mean = sum / n;
        let var = self
            .counts
            .iter()
            .map(|&c| (f64::from(c) - mean).powi(2))
            .sum::<f64>()
            / n;
        var.sqrt() / mean
    }

    pub fn bin_width_us(&self) -> u64 {
        self.bin_width_us
    }

    /// Number of bins.
    pub fn bins(&self) -> usize {
        self.counts.len()
    }

    /// Forgets every count, keeping the bins.
    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.in_bounds = 0;
        self.out_of_bounds = 0;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MIN: u64 = 60_000_000;

    #[test]
    fn construction_rejects_nonsense() {
        let table = [
            (
                IdleTimeHistogram::new(0, 10),
                "idle-time histogram bin width must be at least 1 us, got 0",
            ),
            (
                IdleTimeHistogram::new(5, 0),
                "idle-time histogram needs at least 1 bin, got 0",
            ),
            (
                IdleTimeHistogram::new(1, MAX_BINS + 1),
                "idle-time histogram asks for 604801 bins, more than the limit of 604800",
            ),
            (
                IdleTimeHistogram::new(u64::MAX / 2, 3),
                "idle-time histogram range of 3 bins of 9223372036854775807 us overflows u64",
            ),
        ];
        for (got, message) in table {
            assert_eq!(
                got.map(|_| ()).map_err(|e| e.to_string()),
                Err(message.to_string())
            );
        }
        let h = IdleTimeHistogram::atc20();
        assert_eq!((h.bin_width_us(), h.bins()), (MIN, 240));
        assert_eq!(IdleTimeHistogram::new(MIN, 240), Ok(h));
    }

    #[test]
    fn records_fall_into_bins() {
        let mut h = IdleTimeHistogram::atc20();
        // (idle time, bin it lands in or None for out of bounds)
        let table = [
            (0, Some(0)),
            (MIN - 1, Some(0)),         // 59.999999 s: still the first minute
            (MIN, Some(1)),             // exactly 1 min opens bin 1
            (239 * MIN + 5, Some(239)), // the last minute of 4 h
            (240 * MIN, None),          // 4 h is past the range
            (u64::MAX, None),
        ];
        for (idle, bin) in table {
            let before = bin.map(|b| h.bin_count(b));
            h.record(idle);
            if let (Some(b), Some(c)) = (bin, before) {
                assert_eq!(h.bin_count(b), c + 1, "{idle} us -> bin {b}");
            }
        }
        assert_eq!((h.in_bounds(), h.out_of_bounds(), h.total()), (4, 2, 6));
        assert_eq!(
            (h.bin_count(0), h.bin_count(1), h.bin_count(999)),
            (2, 1, 0)
        );
        h.clear();
        assert_eq!((h.total(), h.percentile_bin(0.5)), (0, None));
    }

    #[test]
    fn percentile_bins() {
        let mut h = IdleTimeHistogram::new(10, 10).expect("valid");
        // Counts: bin 2 x 1, bin 3 x 18, bin 7 x 1 -> 20 in bounds (plus 5 out of bounds,
        // which do not count).
        h.record(25);
        for _ in 0..18 {
            h.record(31);
        }
        h.record(79);
        for _ in 0..5 {
            h.record(1_000);
        }
        let table = [
            (0.0, Some(2)),  // target max(1, 0) = 1: the first non-empty bin
            (0.05, Some(2)), // ceil(0.05 * 20) = 1 -> bin 2 (cumulative 1)
            (0.06, Some(3)), // ceil(1.2) = 2 -> bin 3 (cumulative 19)
            (0.95, Some(3)), // ceil(19) = 19 -> bin 3
            (0.96, Some(7)), // ceil(19.2) = 20 -> bin 7
            (0.99, Some(7)),
            (1.0, Some(7)),
            (2.0, Some(7)),  // clamped to 1
            (-1.0, Some(2)), // clamped to 0
            (f64::NAN, None),
        ];
        for (q, bin) in table {
            assert_eq!(h.percentile_bin(q), bin, "q = {q}");
        }
        // ATC'20 windows: pre-warm at the head's lower edge, keep alive to the tail's upper edge.
        assert_eq!((h.bin_start_us(2), h.bin_end_us(7)), (20, 80));
    }

    #[test]
    fn coefficient_of_variation_of_bin_counts() {
        // (counts per bin, cv): population sd / mean over all bins.
        let table: [(&[u32], f64); 4] = [
            (&[0, 0, 0, 0], 0.0),                   // empty: defined as 0
            (&[1, 1, 1, 1], 0.0),                   // even
            (&[4, 0, 0, 0], 3f64.sqrt()),           // mean 1, var (9 + 1 + 1 + 1) / 4 = 3
            (&[1, 3, 0, 0], 1.224_744_871_391_589), // mean 1, var (0 + 4 + 1 + 1) / 4 = 1.5
        ];
        for (counts, cv) in table {
            let mut h = IdleTimeHistogram::new(1, counts.len()).expect("valid");
            for (bin, &c) in counts.iter().enumerate() {
                for _ in 0..c {
                    h.record(bin as u64);
                }
            }
            assert!(
                (h.bin_counts_cv() - cv).abs() < 1e-12,
                "{counts:?}: {}",
                h.bin_counts_cv()
            );
        }
    }

    proptest! {
        /// Counts add up, percentiles are monotone in q and land on non-empty bins.
        #[test]
        fn counts_and_percentiles_are_consistent(
            width in 1u64..1_000,
            bins in 1usize..50,
            idles in proptest::collection::vec(0u64..60_000, 0..300),
        ) {
            let mut h = IdleTimeHistogram::new(width, bins).expect("valid");
            for &i in &idles {
                h.record(i);
            }
            let in_range = idles.iter().filter(|&&i| i < width * bins as u64).count() as u64;
            prop_assert_eq!(h.in_bounds(), in_range);
            prop_assert_eq!(h.total(), idles.len() as u64);
            prop_assert_eq!(h.counts().iter().map(|&c| u64::from(c)).sum::<u64>(), in_range);
            let qs = [0.0, 0.05, 0.25, 0.5, 0.75, 0.99, 1.0];
            let got: Vec<Option<usize>> = qs.iter().map(|&q| h.percentile_bin(q)).collect();
            if in_range == 0 {
                prop_assert!(got.iter().all(Option::is_none));
            } else {
                let got: Vec<usize> = got.into_iter().flatten().collect();
                prop_assert_eq!(got.len(), qs.len());
                prop_assert!(got.windows(2).all(|w| w[0] <= w[1]));
                prop_assert!(got.iter().all(|&b| h.bin_count(b) > 0));
                let last = h.counts().iter().rposition(|&c| c > 0);
                prop_assert_eq!(got.last().copied(), last);
            }
            prop_assert!(h.bin_counts_cv() >= 0.0 && h.bin_counts_cv().is_finite());
        }
    }
}
