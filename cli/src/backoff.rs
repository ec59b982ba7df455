//! Exponential backoff with full jitter: the delay before retry `n` is uniform in
//! `[0, min(max, base · 2^n)]`, so clients cut off together do not come back together.

use std::time::Duration;

/// The default first ceiling and cap, as in the browser client.
pub const BASE: Duration = Duration::from_millis(500);
pub const MAX: Duration = Duration::from_secs(30);

/// The delay for retry number `attempt` (0 for the first), `r` a random number in [0, 1).
pub fn full_jitter(attempt: u32, base: Duration, max: Duration, r: f64) -> Duration {
    let ceiling = base.saturating_mul(1 << attempt.min(30)).min(max);
    ceiling.mul_f64(r.clamp(0.0, 1.0))
}

/// Consecutive failed attempts since the last good connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next delay; each call doubles the ceiling, up to the cap.
    pub fn next_delay(&mut self, r: f64) -> Duration {
        let d = full_jitter(self.attempt, self.base, self.max, r);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// After a rate-limit close (4029): in the upper half of the cap.
    pub fn slow_delay(&mut self, r: f64) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        self.max.mul_f64(0.5 + r.clamp(0.0, 1.0) / 2.0)
    }

    /// A session was established: the next failure starts from the first ceiling again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays were handed out since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let delays: Vec<_> = (0..6).map(|_| b.next_delay(0.5)).collect();
        assert_eq!(
            delays,
            [50 * MS, 100 * MS, 200 * MS, 400 * MS, 500 * MS, 500 * MS]
        );
        b.reset();
        assert_eq!(b.next_delay(0.5), 50 * MS);
    }

    #[test]
    fn delays_stay_within_zero_and_the_ceiling() {
        for attempt in 0..40 {
            let ceiling = (BASE * 2u32.pow(attempt.min(20))).min(MAX);
            for r in [0.0, 0.3, 0.999_999, 1.0, -1.0, 2.0] {
                let d = full_jitter(attempt, BASE, MAX, r);
                assert!(d <= ceiling, "attempt {attempt} r {r}: {d:?} > {ceiling:?}");
            }
            assert_eq!(full_jitter(attempt, BASE, MAX, 0.0), Duration::ZERO);
        }
    }

    #[test]
    fn rate_limited_waits_in_the_upper_half() {
        let mut b = Backoff::new(BASE, MAX);
        assert_eq!(b.slow_delay(0.0), MAX / 2);
        assert!(b.slow_delay(0.99) <= MAX);
    }
}
