//! A mergeable log-linear histogram of non-negative integers (the agent records microseconds).
//! Part of the sync protocol: uploaded stats buckets carry its binary form and the cloud merges
//! them (docs/cloud-api.md, "Telemetry upload"), so both sides share this one definition.
//!
//! Layout, fixed for every histogram so that any two merge by adding counts:
//!
//! - values `0..32` get one bucket each (exact);
//! - every power of two `[2^e, 2^(e+1))` above that is split into 32 equally wide buckets.
//!
//! A bucket is therefore at most 1/32 (3.1%) of its lower bound wide. A quantile is reported as
//! the midpoint of the bucket holding the sample of that rank, so it is within 1/64 (1.6%) of the
//! exact sample quantile (and exact below 32). 60 blocks of 32 buckets cover all of `u64`
//! ([`BUCKETS`]), but only buckets up to the largest recorded value are allocated, and only
//! non-empty ones are serialized.
//!
//! Percentiles over a window are computed by merging the window's histograms and asking the merged
//! one, never by averaging per-bucket percentiles (which is meaningless).

use serde::{Deserialize, Serialize};

/// log2 of the number of sub-buckets per power of two.
const SUB_BITS: u32 = 5;
/// Sub-buckets per power of two; also the first value that is no longer stored exactly.
const SUB: u64 = 1 << SUB_BITS;
/// Number of buckets needed to cover all of `u64`.
pub const BUCKETS: usize = ((64 - SUB_BITS + 1) as usize) << SUB_BITS;
/// Version of the bucket layout in the serialized form. A different layout must not be merged.
const LAYOUT: u8 = 1;

/// Why a serialized histogram could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistogramDecodeError {
    #[error("histogram encoding: {0}")]
    Encoding(#[from] postcard::Error),
    #[error("histogram layout {0} is not supported (expected {LAYOUT})")]
    Layout(u8),
    #[error("histogram bucket index out of range")]
    Index,
    #[error("histogram count overflows")]
    Overflow,
}

/// A log-linear histogram; see the module docs for the layout and precision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Count per bucket index. Only allocated up to the largest bucket in use, so a histogram of
    /// millisecond latencies stays a few hundred entries instead of [`BUCKETS`].
    counts: Vec<u64>,
    /// Sum of `counts`, kept so quantile ranks need no extra pass.
    total: u64,
    /// Exact smallest recorded value (meaningless while `total == 0`). Estimates are clamped into
    /// `[min, max]`, which makes p0, p100 and single-valued histograms exact.
    min: u64,
    /// Exact largest recorded value (meaningless while `total == 0`).
    max: u64,
}

/// The serialized form: delta-coded indices of the non-empty buckets, so a typical histogram
/// costs 2-4 bytes per non-empty bucket.
#[derive(Serialize, Deserialize)]
struct Wire {
    layout: u8,
    min: u64,
    max: u64,
    /// `(index - previous index, count)` for every non-empty bucket, in index order.
    buckets: Vec<(u16, u64)>,
}

/// The bucket a value falls into.
pub fn bucket_index(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros(); // >= SUB_BITS
    let shift = exponent - SUB_BITS;
    let block = (shift + 1) as usize;
    let offset = ((value >> shift) - SUB) as usize; // 0..SUB
    (block << SUB_BITS) + offset
}

/// The smallest and the largest value (both inclusive) of bucket `index`.
///
/// # Panics
/// If `index >= BUCKETS`.
pub fn bucket_bounds(index: usize) -> (u64, u64) {
    assert!(index < BUCKETS, "bucket index {index} out of range");
    let block = (index >> SUB_BITS) as u32;
    let offset = (index as u64) & (SUB - 1);
    if block == 0 {
        return (offset, offset);
    }
    let shift = block - 1;
    let low = (SUB + offset) << shift;
    (low, low + ((1u64 << shift) - 1))
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one value.
    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    /// Records `n` occurrences of `value`.
    pub fn record_n(&mut self, value: u64, n: u64) {
        if n == 0 {
            return;
        }
        let index = bucket_index(value);
        if self.counts.len() <= index {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] = self.counts[index].saturating_add(n);
        self.note_range(value, value);
        self.total = self.total.saturating_add(n);
    }

    /// Adds every count of `other` to this histogram. Merging is exact: the result equals the
    /// histogram of both sample sets recorded into one.
    pub fn merge(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
        self.note_range(other.min, other.max);
        self.total = self.total.saturating_add(other.total);
    }

    fn note_range(&mut self, min: u64, max: u64) {
        if self.total == 0 {
            self.min = min;
            self.max = max;
        } else {
            self.min = self.min.min(min);
            self.max = self.max.max(max);
        }
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The exact smallest recorded value.
    pub fn min(&self) -> Option<u64> {
        (self.total > 0).then_some(self.min)
    }

    /// The exact largest recorded value.
    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    /// The `q` quantile (`0.0..=1.0`; `0.5` = median), `None` when empty or `q` is NaN.
    ///
    /// Uses the nearest-rank definition: the value of rank `ceil(q * count)` (at least 1) in
    /// sorted order, estimated as the midpoint of its bucket and clamped to `[min, max]`.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 || q.is_nan() {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (index, &count) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(count);
            if seen >= rank {
                let (low, high) = bucket_bounds(index);
                let mid = low + (high - low) / 2;
                return Some(mid.clamp(self.min, self.max));
            }
        }
        Some(self.max) // unreachable while counts and total agree
    }

    /// The non-empty buckets as `(smallest value, largest value, count)`, in value order (e.g. to
    /// re-bucket into Prometheus `le` buckets).
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(index, &count)| {
                let (low, high) = bucket_bounds(index);
                (low, high, count)
            })
    }

    /// Compact binary form (postcard of the non-empty buckets).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut previous = 0usize;
        let buckets = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(index, &count)| {
                let delta = (index - previous) as u16; // < BUCKETS < u16::MAX
                previous = index;
                (delta, count)
            })
            .collect();
        let wire = Wire {
            layout: LAYOUT,
            min: self.min,
            max: self.max,
            buckets,
        };
        postcard::to_allocvec(&wire).expect("serializing to a Vec cannot fail")
    }

    /// Reads the form written by [`Histogram::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HistogramDecodeError> {
        let wire: Wire = postcard::from_bytes(bytes)?;
        if wire.layout != LAYOUT {
            return Err(HistogramDecodeError::Layout(wire.layout));
        }
        let mut histogram = Histogram::new();
        let mut index = 0usize;
        for (n, (delta, count)) in wire.buckets.iter().enumerate() {
            if n > 0 && *delta == 0 {
                return Err(HistogramDecodeError::Index); // indices must increase
            }
            index += *delta as usize;
            if index >= BUCKETS {
                return Err(HistogramDecodeError::Index);
            }
            if histogram.counts.len() <= index {
                histogram.counts.resize(index + 1, 0);
            }
            histogram.counts[index] = *count;
            histogram.total = histogram
                .total
                .checked_add(*count)
                .ok_or(HistogramDecodeError::Overflow)?;
        }
        if histogram.total > 0 {
            histogram.min = wire.min;
            histogram.max = wire.max;
        }
        Ok(histogram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a tiny deterministic generator, so the tests need no `rand` dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    #[test]
    fn every_value_lands_in_a_bucket_that_contains_it() {
        let mut rng = Rng(7);
        let mut values: Vec<u64> = (0..200).collect();
        values.extend([u64::MAX, u64::MAX - 1, 1 << 63, (1 << 40) + 12345]);
        values.extend((0..10_000).map(|_| rng.next() >> (rng.next() % 64)));
        for v in values {
            let i = bucket_index(v);
            assert!(i < BUCKETS, "{v}");
            let (low, high) = bucket_bounds(i);
            assert!(
                low <= v && v <= high,
                "{v} not in bucket {i} [{low}, {high}]"
            );
        }
    }

    #[test]
    fn buckets_tile_u64_without_gaps_and_are_narrow() {
        assert_eq!(bucket_bounds(0), (0, 0));
        assert_eq!(bucket_bounds(BUCKETS - 1).1, u64::MAX);
        for i in 1..BUCKETS {
            let (_, previous_high) = bucket_bounds(i - 1);
            let (low, high) = bucket_bounds(i);
            assert_eq!(previous_high + 1, low, "gap before bucket {i}");
            // Width is at most 1/32 of the lower bound (exact buckets have width 1).
            assert!(
                high - low < low.max(1).div_ceil(32).max(1),
                "bucket {i} too wide"
            );
        }
    }

    #[test]
    fn quantiles_match_exact_sorted_quantiles_within_the_precision_bound() {
        let mut rng = Rng(0x5eed);
        // Three shapes: log-uniform 1 µs..100 s, exponential around 2 ms, and small integers.
        let shapes: [&dyn Fn(&mut Rng) -> u64; 3] = [
            &|r| 10f64.powf(r.unit() * 8.0) as u64,
            &|r| (-(1.0 - r.unit()).ln() * 2_000.0) as u64,
            &|r| r.next() % 50,
        ];
        for shape in shapes {
            let mut values: Vec<u64> = (0..50_000).map(|_| shape(&mut rng)).collect();
            let mut histogram = Histogram::new();
            for &v in &values {
                histogram.record(v);
            }
            values.sort_unstable();
            assert_eq!(histogram.count(), values.len() as u64);
            assert_eq!(histogram.min(), values.first().copied());
            assert_eq!(histogram.max(), values.last().copied());
            for q in [0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0] {
                let exact = exact_quantile(&values, q);
                let estimate = histogram.quantile(q).unwrap();
                let error = (estimate as f64 - exact as f64).abs();
                assert!(
                    error <= exact as f64 / 64.0,
                    "q={q}: estimate {estimate} vs exact {exact}"
                );
            }
        }
    }

    #[test]
    fn merging_equals_recording_everything_into_one() {
        let mut rng = Rng(99);
        let mut parts = vec![Histogram::new(); 5];
        let mut all = Histogram::new();
        for _ in 0..20_000 {
            let v = rng.next() >> (rng.next() % 64);
            parts[(rng.next() % 5) as usize].record(v);
            all.record(v);
        }
        let mut merged = Histogram::new();
        for part in &parts {
            merged.merge(part);
        }
        assert_eq!(merged, all);
        // Merging an empty histogram changes nothing, in either direction.
        let before = merged.clone();
        merged.merge(&Histogram::new());
        assert_eq!(merged, before);
        let mut empty = Histogram::new();
        empty.merge(&before);
        assert_eq!(empty, before);
    }

    #[test]
    fn empty_histogram_has_no_quantiles() {
        let h = Histogram::new();
        assert!(h.is_empty());
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.min(), None);
        assert_eq!(h.max(), None);
        assert_eq!(Histogram::from_bytes(&h.to_bytes()).unwrap(), h);
    }

    #[test]
    fn single_value_is_exact() {
        let mut h = Histogram::new();
        h.record_n(123_456, 10);
        for q in [0.0, 0.5, 1.0] {
            assert_eq!(h.quantile(q), Some(123_456));
        }
        assert_eq!(h.quantile(f64::NAN), None);
    }

    #[test]
    fn serialization_round_trips_and_is_compact() {
        let mut rng = Rng(3);
        let mut h = Histogram::new();
        for _ in 0..10_000 {
            h.record(1_000 + rng.next() % 50_000); // 1..51 ms
        }
        let bytes = h.to_bytes();
        assert_eq!(Histogram::from_bytes(&bytes).unwrap(), h);
        let nonempty = h.buckets().count();
        assert!(
            bytes.len() <= 20 + nonempty * 4,
            "{} bytes for {nonempty} buckets",
            bytes.len()
        );
        let extremes = {
            let mut h = Histogram::new();
            h.record(0);
            h.record(u64::MAX);
            h
        };
        assert_eq!(
            Histogram::from_bytes(&extremes.to_bytes()).unwrap(),
            extremes
        );
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(Histogram::from_bytes(&[]).is_err());
        let mut bytes = Histogram::new().to_bytes();
        bytes[0] = 9;
        assert!(matches!(
            Histogram::from_bytes(&bytes),
            Err(HistogramDecodeError::Layout(9))
        ));
        let out_of_range = postcard::to_allocvec(&Wire {
            layout: LAYOUT,
            min: 0,
            max: 0,
            buckets: vec![(BUCKETS as u16, 1)],
        })
        .unwrap();
        assert!(matches!(
            Histogram::from_bytes(&out_of_range),
            Err(HistogramDecodeError::Index)
        ));
    }
}
