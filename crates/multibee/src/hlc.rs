//! The hybrid logical clock (Kulkarni et al., 2014): 48 bits of milliseconds and a 16-bit
//! counter in one `u64`, so timestamps compare as integers.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A hybrid logical timestamp: physical milliseconds in the high 48 bits, a counter in the low
/// 16. Diffs are ordered by `(Hlc, writer key)`, so no two diffs ever tie.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc(pub u64);

impl Hlc {
    /// The largest physical time a timestamp can hold (2^48 - 1 ms: the year 10889).
    pub const MAX_MILLIS: u64 = (1 << 48) - 1;

    /// A timestamp from its parts; `millis` is capped at [`Hlc::MAX_MILLIS`].
    pub fn new(millis: u64, counter: u16) -> Hlc {
        Hlc((millis.min(Self::MAX_MILLIS) << 16) | u64::from(counter))
    }

    /// The physical part, in milliseconds since the Unix epoch.
    pub fn millis(self) -> u64 {
        self.0 >> 16
    }

    /// The logical counter.
    pub fn counter(self) -> u16 {
        // Masked to 16 bits, so the cast is exact.
        (self.0 & 0xFFFF) as u16
    }

    /// The next timestamp after `self` at physical time `now_ms`: the physical time if it is
    /// ahead, otherwise one more tick of the counter (which carries into the milliseconds when
    /// it overflows, so the clock never repeats or goes backwards). `None` at the end of time:
    /// `self` is the largest timestamp and the physical time is not ahead of it.
    pub fn tick(self, now_ms: u64) -> Option<Hlc> {
        let now = Hlc::new(now_ms, 0);
        if now > self {
            Some(now)
        } else {
            self.0.checked_add(1).map(Hlc)
        }
    }

    /// The smallest timestamp after `self`; `None` if `self` is the largest.
    pub fn next(self) -> Option<Hlc> {
        self.0.checked_add(1).map(Hlc)
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.millis(), self.counter())
    }
}

/// A source of physical time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that shows what it is told (for tests and simulations): set it, move it forwards
/// or backwards. Clones share the time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock showing `ms`.
    pub fn new(ms: u64) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(ms)))
    }

    /// Shows `ms` from now on.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// Moves the clock by `delta` milliseconds (negative: backwards).
    pub fn advance(&self, delta: i64) {
        let now = self.0.load(Ordering::SeqCst);
        self.set(now.saturating_add_signed(delta));
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_strictly_increasing_even_when_the_clock_stalls_or_goes_back() {
        let mut t = Hlc::new(1000, 0);
        for now in [1000, 999, 0, 1000, 1001, 5] {
            let next = t.tick(now).unwrap();
            assert!(next > t);
            t = next;
        }
        assert_eq!(t, Hlc::new(1001, 1));
    }

    #[test]
    fn counter_overflow_carries_into_the_milliseconds() {
        let t = Hlc::new(7, u16::MAX);
        assert_eq!(t.tick(7), Some(Hlc::new(8, 0)));
        assert_eq!(Hlc::new(u64::MAX, 3).millis(), Hlc::MAX_MILLIS);
    }

    #[test]
    fn the_end_of_time_gives_no_timestamp_rather_than_a_repeated_one() {
        let end = Hlc(u64::MAX);
        assert_eq!(end.tick(u64::MAX), None);
        assert_eq!(end.next(), None);
        let almost = Hlc(u64::MAX - 1);
        assert_eq!(almost.tick(Hlc::MAX_MILLIS), Some(end));
        assert_eq!(end.tick(0), None);
    }
}
