//! Time as a value passed in (the sans-IO rule of the design notes).
//!
//! `beets-core` never reads a clock. Every call that depends on time takes a [`Time`]: a count of
//! milliseconds since an epoch the caller chooses (process start, boot, or 0 in a simulation).
//! Durations are [`std::time::Duration`].

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time, in milliseconds since an epoch chosen by the driver.
///
/// ```
/// use beets_core::Time;
/// use std::time::Duration;
/// let t = Time::from_millis(1_000) + Duration::from_secs(2);
/// assert_eq!(t.as_millis(), 3_000);
/// assert_eq!(t - Time::from_millis(500), Duration::from_millis(2_500));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// The epoch.
    pub const ZERO: Time = Time(0);
    /// The latest representable time (used for "never").
    pub const MAX: Time = Time(u64::MAX);

    /// A time `ms` milliseconds after the epoch.
    #[inline]
    pub const fn from_millis(ms: u64) -> Time {
        Time(ms)
    }

    /// Milliseconds since the epoch.
    #[inline]
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at [`Time::MAX`].
    #[inline]
    pub fn saturating_add(self, d: Duration) -> Time {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Time(self.0.saturating_add(ms))
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    #[inline]
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    /// Saturating addition (whole milliseconds).
    #[inline]
    fn add(self, d: Duration) -> Time {
        self.saturating_add(d)
    }
}

impl Sub<Time> for Time {
    type Output = Duration;
    /// Saturating difference.
    #[inline]
    fn sub(self, earlier: Time) -> Duration {
        self.saturating_since(earlier)
    }
}
