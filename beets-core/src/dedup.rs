//! Duplicate suppression (spec wire-v1 §8).
//!
//! BLE repeats every frame for its whole advertising period Δt, and UDP senders may repeat a
//! datagram on purpose or it may arrive by several paths. A receiver remembers the keys it has
//! processed for a window W (default 10 s) and processes each key once. The cache is bounded: when
//! full, the oldest keys go first, so a flood of distinct keys costs a fixed amount of memory (at
//! worst, a message older than the flood may be processed again).

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, RandomState};
use std::time::Duration;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use crate::time::Time;

/// Default window W: 10 s (spec §8).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Default bound on remembered keys: 4096 (spec §8).
pub const DEFAULT_CAPACITY: usize = 4096;

/// A bounded, time-windowed set of seen keys.
///
/// Cost: [`check`](DedupCache::check) hashes the key once (SipHash with a random key per cache:
/// the keys come off the network) and is O(1) expected; a key is forgotten — by age or to make
/// room — with the hash it was stored under, never hashed again. Memory: at most `capacity` keys.
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
    hasher: RandomState,
    /// The keys remembered now.
    seen: HashTable<K>,
    /// The same keys in the order first seen, with that time and their hash, for expiry and
    /// eviction.
    order: VecDeque<(Time, u64, K)>,
    evicted: u64,
}

impl<K: Hash + Eq + Clone> DedupCache<K> {
    /// A cache remembering keys for `window`, at most `capacity` of them (at least 1).
    pub fn new(window: Duration, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        DedupCache {
            window,
            capacity,
            hasher: RandomState::new(),
            seen: HashTable::with_capacity(capacity.min(1024)),
            order: VecDeque::with_capacity(capacity.min(1024)),
            evicted: 0,
        }
    }

    /// Records `key` at `now`; `true` if it is new (process the message), `false` if it was seen
    /// within the window (drop it). `now` must not go backwards; if it does, keys simply live
    /// longer.
    pub fn check(&mut self, now: Time, key: K) -> bool {
        let hash = self.hash(&key);
        self.check_hashed(now, hash, key)
    }

    /// The hash [`check_hashed`](Self::check_hashed) and [`seen_hashed`](Self::seen_hashed)
    /// take, for a caller that looks a key up and then records it.
    pub(crate) fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// [`check`](Self::check) with `hash` = [`hash`](Self::hash)`(&key)`.
    pub(crate) fn check_hashed(&mut self, now: Time, hash: u64, key: K) -> bool {
        debug_assert_eq!(hash, self.hash(&key));
        self.expire(now);
        let hasher = &self.hasher;
        match self.seen.entry(hash, |k| *k == key, |k| hasher.hash_one(k)) {
            Entry::Occupied(_) => return false,
            Entry::Vacant(v) => {
                v.insert(key.clone());
            }
        }
        self.order.push_back((now, hash, key));
        // A full cache forgets its oldest key (never the one just added: it is the newest).
        if self.seen.len() > self.capacity
            && let Some((_, hash, old)) = self.order.pop_front()
        {
            self.forget(hash, &old);
            self.evicted += 1;
        }
        true
    }

    /// Whether `key` is remembered (without recording it).
    pub fn contains(&self, key: &K) -> bool {
        let hash = self.hasher.hash_one(key);
        self.seen.find(hash, |k| k == key).is_some()
    }

    /// Whether `key` was recorded within the window before `now` (forgets older keys first;
    /// records nothing).
    pub fn seen(&mut self, now: Time, key: &K) -> bool {
        let hash = self.hash(key);
        self.seen_hashed(now, hash, key)
    }

    /// [`seen`](Self::seen) with `hash` = [`hash`](Self::hash)`(key)`.
    pub(crate) fn seen_hashed(&mut self, now: Time, hash: u64, key: &K) -> bool {
        debug_assert_eq!(hash, self.hash(key));
        self.expire(now);
        self.seen.find(hash, |k| k == key).is_some()
    }

    /// Forgets keys older than the window.
    pub fn expire(&mut self, now: Time) {
        while let Some((t, _, _)) = self.order.front() {
            if now.saturating_since(*t) < self.window {
                break;
            }
            if let Some((_, hash, k)) = self.order.pop_front() {
                self.forget(hash, &k);
            }
        }
    }

    fn forget(&mut self, hash: u64, key: &K) {
        if let Ok(e) = self.seen.find_entry(hash, |k| k == key) {
            e.remove();
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

    proptest::proptest! {
        /// Against a plain model (a queue of (time, key), linear search): same answers, same
        /// size, same evictions, for any sequence of checks and lookups.
        #[test]
        fn matches_a_plain_model(
            capacity in 1usize..8,
            ops in proptest::collection::vec((0u8..3, 0u16..12, 0u64..4_000), 0..200),
        ) {
            let window = Duration::from_secs(2);
            let mut c = DedupCache::new(window, capacity);
            let mut model: VecDeque<(Time, u16)> = VecDeque::new();
            let mut evicted = 0u64;
            let mut now = 0u64;
            for (op, key, dt) in ops {
                now += dt;
                let at = t(now);
                while model.front().is_some_and(|(t0, _)| at.saturating_since(*t0) >= window) {
                    model.pop_front();
                }
                let known = model.iter().any(|(_, k)| *k == key);
                match op {
                    0 => {
                        proptest::prop_assert_eq!(c.check(at, key), !known);
                        if !known {
                            model.push_back((at, key));
                            if model.len() > capacity {
                                model.pop_front();
                                evicted += 1;
                            }
                        }
                    }
                    1 => proptest::prop_assert_eq!(c.seen(at, &key), known),
                    _ => {
                        c.expire(at);
                        proptest::prop_assert_eq!(c.contains(&key), known);
                    }
                }
                proptest::prop_assert_eq!(c.len(), model.len());
                proptest::prop_assert_eq!(c.evicted(), evicted);
            }
        }
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
