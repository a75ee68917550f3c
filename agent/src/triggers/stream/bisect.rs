//! Which records of a batch to try next, as a plain state machine (no I/O): the whole batch
//! first, with the mapping's retries; if it still fails, halves (one attempt each, left before
//! right so the partition's order holds) until a failing range is one record, which gets the
//! mapping's retries again before it is declared poison (sent to the on-failure destination or
//! a dead letter, and passed). Every range that succeeds moves the checkpoint to its end.
//!
//! Sub-ranges get one attempt because a record that fails deterministically would otherwise
//! cost the retries and their backoff at every level; the single record's retries keep a
//! transient failure during the search from condemning a good record.

use std::ops::Range;

/// One range to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// Indexes into the batch.
    pub range: Range<usize>,
    /// Attempts allowed (1 + retries for the whole batch and for a single record).
    pub tries: u32,
}

/// What a failed range leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failed {
    /// It was split; try the next [`Bisect::current`].
    Split,
    /// This record (index into the batch) fails on its own: give it up and go on.
    Poison(usize),
}

/// The bisection of one batch.
#[derive(Clone, Debug)]
pub struct Bisect {
    /// Ranges still to try, the next on top.
    stack: Vec<Range<usize>>,
    /// Length of the batch: its whole range gets the retries.
    len: usize,
    retries: u32,
}

impl Bisect {
    /// A batch of `len` records (at least 1) and the mapping's retries.
    pub fn new(len: usize, retries: u32) -> Bisect {
        let mut stack = Vec::with_capacity(16);
        if len > 0 {
            stack.push(0..len);
        }
        Bisect {
            stack,
            len,
            retries,
        }
    }

    /// The range to try now; `None` once the batch is done.
    pub fn current(&self) -> Option<Attempt> {
        let range = self.stack.last()?.clone();
        let whole = range == (0..self.len);
        let tries = if whole || range.len() == 1 {
            1 + self.retries
        } else {
            1
        };
        Some(Attempt { range, tries })
    }

    /// The current range succeeded (its records are done).
    pub fn succeeded(&mut self) {
        self.stack.pop();
    }

    /// The current range failed its tries.
    pub fn failed(&mut self) -> Failed {
        let Some(range) = self.stack.pop() else {
            return Failed::Split;
        };
        if range.len() == 1 {
            return Failed::Poison(range.start);
        }
        let mid = range.start + range.len() / 2;
        self.stack.push(mid..range.end);
        self.stack.push(range.start..mid);
        Failed::Split
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a batch of `len` records whose poison indexes make any range containing them fail;
    /// returns (records done in order, poison found, attempts made).
    fn run(len: usize, retries: u32, poison: &[usize]) -> (Vec<usize>, Vec<usize>, u32) {
        let mut b = Bisect::new(len, retries);
        let (mut done, mut found, mut attempts) = (Vec::new(), Vec::new(), 0);
        while let Some(a) = b.current() {
            assert!(a.range.start < a.range.end && a.range.end <= len);
            let fails = poison.iter().any(|p| a.range.contains(p));
            attempts += if fails { a.tries } else { 1 };
            if fails {
                if let Failed::Poison(i) = b.failed() {
                    found.push(i);
                    done.push(i);
                }
            } else {
                done.extend(a.range.clone());
                b.succeeded();
            }
        }
        (done, found, attempts)
    }

    #[test]
    fn a_good_batch_is_one_attempt() {
        let (done, found, attempts) = run(100, 2, &[]);
        assert_eq!(done, (0..100).collect::<Vec<_>>());
        assert!(found.is_empty());
        assert_eq!(attempts, 1);
    }

    #[test]
    fn every_poison_record_is_isolated_and_order_is_kept() {
        for len in 1..40 {
            for p in 0..len {
                let (done, found, _) = run(len, 1, &[p]);
                assert_eq!(found, [p], "len {len}");
                // Every record is passed exactly once, in order (poison included, as given up).
                assert_eq!(done, (0..len).collect::<Vec<_>>(), "len {len} poison {p}");
            }
        }
        let (done, found, attempts) = run(100, 2, &[3, 4, 97]);
        assert_eq!(found, [3, 4, 97]);
        assert_eq!(done, (0..100).collect::<Vec<_>>());
        // 3 tries of the whole, one per failing half on the way down, 3 per poison record.
        assert!(attempts < 40, "{attempts}");
    }

    #[test]
    fn tries_are_retries_for_the_whole_and_single_records_only() {
        let mut b = Bisect::new(4, 2);
        assert_eq!(
            b.current(),
            Some(Attempt {
                range: 0..4,
                tries: 3
            })
        );
        assert_eq!(b.failed(), Failed::Split);
        assert_eq!(
            b.current().unwrap(),
            Attempt {
                range: 0..2,
                tries: 1
            }
        );
        assert_eq!(b.failed(), Failed::Split);
        assert_eq!(
            b.current().unwrap(),
            Attempt {
                range: 0..1,
                tries: 3
            }
        );
        b.succeeded();
        assert_eq!(
            b.current().unwrap(),
            Attempt {
                range: 1..2,
                tries: 3
            }
        );
        assert_eq!(b.failed(), Failed::Poison(1));
        assert_eq!(
            b.current().unwrap(),
            Attempt {
                range: 2..4,
                tries: 1
            }
        );
        b.succeeded();
        assert_eq!(b.current(), None);
        assert_eq!(Bisect::new(0, 2).current(), None);
    }
}
