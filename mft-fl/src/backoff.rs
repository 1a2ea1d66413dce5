//! Exponential backoff with jitter, for reconnecting to a SuperLink that is down or unreachable:
//! the n-th wait is `min(max, initial · 2ⁿ)`, less a random share of up to `jitter` of it (so
//! that many clients do not retry in step), and [`retry`] gives up after a total time.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The waits between attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// Share of a wait taken off at random, in `[0, 1)`.
    jitter: f64,
    attempt: u32,
    /// State of the jitter's generator (SplitMix64).
    state: u64,
}

impl Backoff {
    /// Waits from `initial`, doubling up to `max`, with up to 25 % jitter seeded by `seed`.
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff { initial, max: max.max(initial), jitter: 0.25, attempt: 0, state: seed }
    }

    /// The same schedule without jitter (exact waits: tests, logs).
    pub fn without_jitter(mut self) -> Backoff {
        self.jitter = 0.0;
        self
    }

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let doubled = self.initial.as_secs_f64() * 2f64.powi(self.attempt.min(60) as i32);
        let base = doubled.min(self.max.as_secs_f64());
        self.attempt = self.attempt.saturating_add(1);
        let cut = self.jitter * self.unit();
        Duration::from_secs_f64(base * (1.0 - cut))
    }

    /// Attempts made since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// A uniform number in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Calls `attempt` until it succeeds, fails for good (an error that is not
/// [`Error::is_transient`]), or `give_up_after` has passed since the first attempt; waits
/// `backoff`'s delays in between (cut short so as not to pass the limit) and tells `on_retry`
/// about each failure it retries. `sleep` waits (the real one, or a test's).
///
/// # Errors
/// The last error of `attempt`.
pub fn retry<T>(
    backoff: &mut Backoff,
    give_up_after: Duration,
    sleep: &mut dyn FnMut(Duration),
    on_retry: &mut dyn FnMut(&Error, Duration),
    attempt: &mut dyn FnMut() -> Result<T>,
) -> Result<T> {
    let start = Instant::now();
    let mut waited = Duration::ZERO;
    loop {
        match attempt() {
            Ok(value) => {
                backoff.reset();
                return Ok(value);
            }
            Err(e) if e.is_transient() => {
                // Time passes in `attempt` and in `sleep`; count both (tests' sleeps are free).
                let spent = start.elapsed().max(waited);
                let Some(left) = give_up_after.checked_sub(spent).filter(|d| !d.is_zero()) else {
                    return Err(e);
                };
                let delay = backoff.next_delay().min(left);
                on_retry(&e, delay);
                sleep(delay);
                waited += delay;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> Error {
        Error::Unreachable { address: "x:1".into(), rpc: "pull-messages", problem: "down".into() }
    }

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b =
            Backoff::new(Duration::from_millis(500), Duration::from_secs(4), 1).without_jitter();
        let waits: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(b.attempts(), 6);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }

    #[test]
    fn jitter_stays_within_a_quarter_below() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1), 7);
        let waits: Vec<f64> = (0..200).map(|_| b.next_delay().as_secs_f64()).collect();
        assert!(waits.iter().all(|&w| (0.75..=1.0).contains(&w)));
        let distinct: std::collections::HashSet<u64> = waits.iter().map(|w| w.to_bits()).collect();
        assert!(distinct.len() > 150, "jitter varies the waits");
    }

    #[test]
    fn retries_transient_errors_until_success() {
        let mut b =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 0).without_jitter();
        let mut slept = Vec::new();
        let mut calls = 0;
        let mut retried = 0;
        let out = retry(
            &mut b,
            Duration::from_secs(60),
            &mut |d| slept.push(d.as_millis()),
            &mut |_, _| retried += 1,
            &mut || {
                calls += 1;
                if calls < 4 { Err(unreachable()) } else { Ok(calls) }
            },
        );
        assert_eq!(out.unwrap(), 4);
        assert_eq!(slept, [100, 200, 400]);
        assert_eq!(retried, 3);
        assert_eq!(b.attempts(), 0, "a success resets the backoff");
    }

    #[test]
    fn gives_up_after_the_limit_and_at_once_on_lasting_errors() {
        let mut b =
            Backoff::new(Duration::from_secs(1), Duration::from_secs(8), 0).without_jitter();
        let mut slept = Vec::new();
        let err = retry(
            &mut b,
            Duration::from_secs(10),
            &mut |d| slept.push(d.as_secs_f64()),
            &mut |_, _| {},
            &mut || -> Result<()> { Err(unreachable()) },
        )
        .unwrap_err();
        assert!(err.is_transient());
        // 1 + 2 + 4 = 7 s, then the last wait is cut to the 3 s left.
        assert_eq!(slept, [1.0, 2.0, 4.0, 3.0]);
        let mut calls = 0;
        let err = retry(
            &mut Backoff::new(Duration::from_secs(1), Duration::from_secs(8), 0),
            Duration::from_secs(10),
            &mut |_| panic!("no wait for a lasting error"),
            &mut |_, _| {},
            &mut || -> Result<()> {
                calls += 1;
                Err(Error::Unauthorized {
                    address: "x:1".into(),
                    rpc: "pull-messages",
                    detail: "no".into(),
                })
            },
        )
        .unwrap_err();
        assert!(!err.is_transient());
        assert_eq!(calls, 1);
    }
}
