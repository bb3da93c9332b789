//! Transfer rate from a sliding window of samples, as udisks does: no
//! estimate until a few samples span a useful time, so the first figures a
//! user sees are not wild guesses.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(5);
const MIN_SAMPLES: usize = 3;
const MIN_SPAN: Duration = Duration::from_millis(500);

pub struct RateWindow {
    samples: VecDeque<(Instant, u64)>,
}

impl RateWindow {
    pub fn new() -> Self {
        RateWindow {
            samples: VecDeque::new(),
        }
    }

    pub fn add(&mut self, at: Instant, bytes_done: u64) {
        self.samples.push_back((at, bytes_done));
        while self
            .samples
            .front()
            .is_some_and(|(first, _)| at.duration_since(*first) > WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over the window; 0 until there is enough to say.
    pub fn rate(&self) -> u64 {
        let (Some((t0, b0)), Some((t1, b1))) = (self.samples.front(), self.samples.back()) else {
            return 0;
        };
        let span = t1.duration_since(*t0);
        if self.samples.len() < MIN_SAMPLES || span < MIN_SPAN {
            return 0;
        }
        ((b1 - b0) as f64 / span.as_secs_f64()) as u64
    }

    /// How long `remaining` bytes take at the current rate, if known.
    pub fn remaining_time(&self, remaining: u64) -> Option<Duration> {
        match self.rate() {
            0 => None,
            rate => Some(Duration::from_secs_f64(remaining as f64 / rate as f64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_estimate_before_enough_samples_then_the_slope() {
        let start = Instant::now();
        let mut window = RateWindow::new();
        window.add(start, 0);
        window.add(start + Duration::from_millis(250), 250);
        assert_eq!(window.rate(), 0, "two samples are too few");
        window.add(start + Duration::from_millis(1000), 1000);
        assert_eq!(window.rate(), 1000);
        assert_eq!(window.remaining_time(3000), Some(Duration::from_secs(3)));
    }
}
