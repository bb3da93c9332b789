//! How fast recent jobs went: the dry run's estimate of a copy's duration
//! when the request sets no rate limit.

use std::collections::VecDeque;
use std::sync::Mutex;

/// How many recent jobs the estimate looks at.
const KEPT: usize = 32;

/// Jobs smaller than this say more about their start-up than their rate.
const MEANINGFUL_BYTES: u64 = 1 << 20;

/// Throughputs (bytes per second) of the last completed jobs.
#[derive(Debug, Default)]
pub struct RecentRates(Mutex<VecDeque<u64>>);

impl RecentRates {
    /// Notes a completed job that moved `bytes` in `micros` µs.
    pub fn note(&self, bytes: u64, micros: u64) {
        if bytes < MEANINGFUL_BYTES || micros == 0 {
            return;
        }
        let rate = (u128::from(bytes) * 1_000_000 / u128::from(micros)) as u64;
        let mut rates = self.0.lock().unwrap();
        if rates.len() == KEPT {
            rates.pop_front();
        }
        rates.push_back(rate);
    }

    /// The median rate of the jobs noted, if any was.
    pub fn median(&self) -> Option<u64> {
        let mut rates: Vec<u64> = self.0.lock().unwrap().iter().copied().collect();
        rates.sort_unstable();
        rates.get(rates.len() / 2).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_meaningful_jobs() {
        let rates = RecentRates::default();
        assert_eq!(rates.median(), None);
        rates.note(10, 1); // too small to say anything
        assert_eq!(rates.median(), None);
        for mib_per_s in [10, 30, 20] {
            rates.note(mib_per_s << 20, 1_000_000);
        }
        assert_eq!(rates.median(), Some(20 << 20));
    }
}
