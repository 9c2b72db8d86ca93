//! Duplicate suppression (spec wire-v1 §8).
//!
//! BLE repeats every frame for its whole advertising period Δt, and UDP senders may repeat a
//! datagram on purpose or it may arrive by several paths. A receiver remembers the keys it has
//! processed for a window W (default 10 s) and processes each key once. The cache is bounded: when
//! full, the oldest keys go first, so a flood of distinct keys costs a fixed amount of memory (at
//! worst, a message older than the flood may be processed again).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use crate::time::Time;

/// Default window W: 10 s (spec §8).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Default bound on remembered keys: 4096 (spec §8).
pub const DEFAULT_CAPACITY: usize = 4096;

/// A bounded, time-windowed set of seen keys.
///
/// Cost: [`check`](DedupCache::check) is O(1) expected (one hash lookup, one queue push) plus the
/// expiry of old keys, each paid once. Memory: at most `capacity` keys.
///
/// ```
/// use beets_core::dedup::DedupCache;
/// use beets_core::Time;
/// use std::time::Duration;
/// let mut seen = DedupCache::new(Duration::from_secs(10), 4096);
/// assert!(seen.check(Time::from_millis(0), (7u32, 1u32)));      // new: process it
/// assert!(!seen.check(Time::from_millis(500), (7u32, 1u32)));   // repeat: drop it
/// assert!(seen.check(Time::from_millis(10_001), (7u32, 1u32))); // outside the window: new again
/// ```
#[derive(Debug)]
pub struct DedupCache<K> {
    window: Duration,
    capacity: usize,
    /// Key → time first seen.
    seen: HashMap<K, Time>,
    /// Keys in the order first seen, for expiry and eviction.
    order: VecDeque<(Time, K)>,
    evicted: u64,
}

impl<K: Hash + Eq + Clone> DedupCache<K> {
    /// A cache remembering keys for `window`, at most `capacity` of them (at least 1).
    pub fn new(window: Duration, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        DedupCache {
            window,
            capacity,
            seen: HashMap::with_capacity(capacity.min(1024)),
            order: VecDeque::with_capacity(capacity.min(1024)),
            evicted: 0,
        }
    }

    /// Records `key` at `now`; `true` if it is new (process the message), `false` if it was seen
    /// within the window (drop it). `now` must not go backwards; if it does, keys simply live
    /// longer.
    pub fn check(&mut self, now: Time, key: K) -> bool {
        self.expire(now);
        if self.seen.contains_key(&key) {
            return false;
        }
        if self.seen.len() >= self.capacity
            && let Some((_, old)) = self.order.pop_front()
        {
            self.seen.remove(&old);
            self.evicted += 1;
        }
        self.seen.insert(key.clone(), now);
        self.order.push_back((now, key));
        true
    }

    /// Whether `key` is remembered (without recording it).
    pub fn contains(&self, key: &K) -> bool {
        self.seen.contains_key(key)
    }

    /// Whether `key` was recorded within the window before `now` (forgets older keys first;
    /// records nothing).
    pub fn seen(&mut self, now: Time, key: &K) -> bool {
        self.expire(now);
        self.seen.contains_key(key)
    }

    /// Forgets keys older than the window.
    pub fn expire(&mut self, now: Time) {
        while let Some((t, _)) = self.order.front() {
            if now.saturating_since(*t) < self.window {
                break;
            }
            if let Some((_, k)) = self.order.pop_front() {
                self.seen.remove(&k);
            }
        }
    }

    /// Keys remembered now (≤ capacity).
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// The bound on remembered keys.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keys forgotten early because the cache was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    #[test]
    fn repeats_within_window_are_dropped() {
        let mut c = DedupCache::new(Duration::from_secs(10), 16);
        assert!(c.check(t(0), 1));
        assert!(!c.check(t(1), 1));
        assert!(!c.check(t(9_999), 1));
        assert!(c.check(t(10_000), 1));
    }

    #[test]
    fn seen_looks_without_recording_and_respects_the_window() {
        let mut c = DedupCache::new(Duration::from_secs(10), 16);
        assert!(!c.seen(t(0), &1));
        assert!(c.check(t(0), 1));
        assert!(c.seen(t(9_999), &1));
        assert!(!c.seen(t(10_000), &1));
        assert!(c.is_empty());
    }

    #[test]
    fn full_cache_forgets_oldest_first() {
        let mut c = DedupCache::new(Duration::from_secs(10), 3);
        for k in 0..3 {
            assert!(c.check(t(0), k));
        }
        assert!(c.check(t(1), 3));
        assert_eq!(c.len(), 3);
        assert_eq!(c.evicted(), 1);
        assert!(!c.contains(&0));
        assert!(c.contains(&1) && c.contains(&3));
    }

    #[test]
    fn flood_stays_bounded() {
        let mut c = DedupCache::new(Duration::from_secs(10), 100);
        for k in 0..100_000u32 {
            c.check(t(u64::from(k)), k);
            assert!(c.len() <= 100);
        }
        assert!(c.order.len() <= 100);
    }
}
