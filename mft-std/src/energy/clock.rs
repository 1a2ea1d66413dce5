//! Time for the energy scheduler, injectable: [`Clock`] gives a monotonic time (for integrating
//! power), the wall-clock time (for quiet hours) and sleeping (for waiting out a pause).
//! [`SystemClock`] is the real one; [`ManualClock`] only moves when told to (or when something
//! sleeps on it), so tests run a whole afternoon of pauses in microseconds.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the scheduler and the energy meter get the time from.
pub trait Clock: Send + Sync {
    /// Monotonic time since some fixed start (never goes back).
    fn now(&self) -> Duration;
    /// Seconds since 1970-01-01 00:00 UTC (for quiet hours).
    fn unix_seconds(&self) -> u64;
    /// Waits `duration` (a manual clock advances by it instead).
    fn sleep(&self, duration: Duration);
}

/// The machine's clocks: [`Instant`] and [`SystemTime`], and [`std::thread::sleep`].
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    /// A clock whose [`Clock::now`] counts from this call.
    pub fn new() -> SystemClock {
        SystemClock { start: Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn unix_seconds(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// A clock for tests: it moves only through [`ManualClock::advance`] and [`Clock::sleep`]
/// (which advances it at once instead of waiting); the wall clock moves with it.
#[derive(Debug, Default)]
pub struct ManualClock {
    /// (monotonic time, wall-clock seconds at monotonic zero)
    inner: Mutex<(Duration, u64)>,
}

impl ManualClock {
    /// A clock at monotonic zero whose wall clock reads `unix_seconds`.
    pub fn new(unix_seconds: u64) -> ManualClock {
        ManualClock { inner: Mutex::new((Duration::ZERO, unix_seconds)) }
    }

    /// Moves the clock (and the wall clock) forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0 += by;
    }

    /// Sets the wall clock (the monotonic time stays).
    pub fn set_unix_seconds(&self, unix_seconds: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.1 = unix_seconds.saturating_sub(inner.0.as_secs());
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    fn unix_seconds(&self) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.1 + inner.0.as_secs()
    }

    fn sleep(&self, duration: Duration) {
        self.advance(duration);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now(), Duration::ZERO);
        clock.sleep(Duration::from_millis(1_500));
        assert_eq!(clock.now(), Duration::from_millis(1_500));
        assert_eq!(clock.unix_seconds(), 1_001);
        clock.set_unix_seconds(5_000);
        assert_eq!(clock.unix_seconds(), 5_000);
        assert_eq!(clock.now(), Duration::from_millis(1_500));
    }
}
