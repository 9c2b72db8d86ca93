//! The insertion order of one arity's sub-space: a log of (slot, seq) entries, removed lazily.
//!
//! A doubly linked list through the slots gives O(1) removal too, but unlinking writes the two
//! neighbours, and in a large space the neighbours in insertion order are two unrelated slots:
//! two more cache misses per removal. Here a removal writes nothing: an entry is live while its
//! slot still holds the tuple it names (the slot's `seq`, which no other tuple shares). Dead
//! entries are skipped by walks and dropped from the front as they reach it, and a push rewrites
//! the log without them once they outnumber the live ones: O(1) amortised, and after a push the
//! log holds at most 2 × live + [`SLACK`] + 1 entries. The rewrite reads the slot of every entry,
//! but those reads do not depend on each other, so the CPU overlaps their misses (the removal's
//! neighbour writes were on the path of every `inp`).
//!
//! Nothing but a push changes positions, so a walk (`start`, `next`) stays valid while it removes
//! the entries it visits.

/// Dead entries tolerated beyond the live ones before a push compacts. Small in tests, so that
/// the space's model test (at most 8 tuples) compacts too.
const SLACK: usize = if cfg!(test) { 2 } else { 64 };

/// One stored tuple: its slot and its sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) slot: u32,
    pub(super) seq: u64,
}

/// Tuples in the order they were stored, some of them gone.
#[derive(Debug, Default)]
pub(super) struct Fifo {
    entries: Vec<Entry>,
    /// Every entry before `head` is dead.
    head: usize,
    live: usize,
}

impl Fifo {
    /// Live entries.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Forgets every entry; keeps the memory.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.head = 0;
        self.live = 0;
    }

    /// Appends `entry`. Before that, drops the dead entries if they have come to outnumber the
    /// live ones (`live(entry)` tells).
    pub(super) fn push(&mut self, entry: Entry, live: impl Fn(Entry) -> bool) {
        if self.live == 0 {
            self.entries.clear();
            self.head = 0;
        } else if self.entries.len() > 2 * self.live + SLACK {
            let mut w = 0;
            for r in self.head..self.entries.len() {
                let e = self.entries[r];
                if live(e) {
                    self.entries[w] = e;
                    w += 1;
                }
            }
            debug_assert_eq!(w, self.live);
            self.entries.truncate(w);
            self.head = 0;
        }
        self.entries.push(entry);
        self.live += 1;
    }

    /// Counts one entry as removed: its slot no longer holds its tuple.
    pub(super) fn removed(&mut self) {
        self.live -= 1;
    }

    /// The oldest live entry, `None` if none. Drops the dead entries before it.
    pub(super) fn oldest(&mut self, live: impl Fn(Entry) -> bool) -> Option<Entry> {
        if self.live == 0 {
            return None;
        }
        while let Some(&e) = self.entries.get(self.head) {
            if live(e) {
                return Some(e);
            }
            self.head += 1;
        }
        debug_assert!(false, "{} live entries not found", self.live);
        None
    }

    /// The position to start a walk at.
    pub(super) fn start(&self) -> usize {
        self.head
    }

    /// The entry at `*at`, advancing `*at` past it; `None` at the end. Dead entries are returned
    /// too: the caller checks (it reads the slot anyway).
    #[inline]
    pub(super) fn next(&self, at: &mut usize) -> Option<Entry> {
        let e = self.entries.get(*at).copied();
        *at += 1;
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, VecDeque};

    /// Random pushes and removals agree with a `VecDeque`, across compactions, and the log stays
    /// bounded.
    #[test]
    fn agrees_with_a_deque_and_stays_bounded() {
        let mut f = Fifo::default();
        let mut model: VecDeque<u64> = VecDeque::new();
        let mut alive: BTreeSet<u64> = BTreeSet::new();
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next_seq = 0u64;
        let mut compactions = 0;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let live = |e: Entry| alive.contains(&e.seq);
            // Grow to a few hundred entries, then churn around that size.
            let push = if model.len() < 300 { x % 5 < 3 } else { x % 2 == 0 };
            if push || model.is_empty() {
                let before = f.entries.len();
                let seq = next_seq;
                next_seq += 1;
                f.push(
                    Entry {
                        slot: seq as u32,
                        seq,
                    },
                    live,
                );
                if f.entries.len() <= before {
                    compactions += 1;
                }
                alive.insert(seq);
                model.push_back(seq);
                // Removals leave dead entries; a push bounds them.
                assert!(f.entries.len() <= 2 * f.len() + SLACK + 1);
            } else {
                // Mostly from the middle, sometimes the oldest.
                let i = if x % 7 == 0 {
                    0
                } else {
                    (x >> 20) as usize % model.len()
                };
                let seq = model.remove(i).unwrap();
                alive.remove(&seq);
                f.removed();
            }
            let live = |e: Entry| alive.contains(&e.seq);
            assert_eq!(f.len(), model.len());
            assert_eq!(f.oldest(live).map(|e| e.seq), model.front().copied());
        }
        assert!(compactions > 100, "compacted {compactions} times");
        let mut at = f.start();
        let walked: Vec<u64> = std::iter::from_fn(|| f.next(&mut at))
            .filter(|e| alive.contains(&e.seq))
            .map(|e| e.seq)
            .collect();
        assert_eq!(walked, Vec::from(model));
        f.clear();
        assert_eq!((f.len(), f.oldest(|_| true)), (0, None));
    }
}
