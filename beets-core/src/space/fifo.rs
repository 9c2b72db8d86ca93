//! The insertion order of one arity's sub-space: a log of slot ids with holes.
//!
//! A doubly linked list through the slots would give O(1) removal too, but unlinking writes the
//! two neighbours, and in a large space the neighbours in insertion order are two unrelated slots:
//! two more cache misses per removal (they were a third of the time of an `out` + `inp` pair at
//! 1M tuples). Here a removal overwrites its own entry with [`NIL`] (one store, which the CPU does
//! not wait for) at the position its slot remembers, and pushes rewrite the log without the holes
//! once they outnumber the live entries, updating the positions of the live slots: O(1) amortised,
//! and the log stays under 2 × live + [`SLACK`] entries.
//!
//! Removal never compacts, so a walk by position (`first`, `next`) stays valid while it removes
//! the entries it visits.

use super::NIL;

/// Holes tolerated beyond the live entries before a push compacts. Small in tests, so that the
/// space's model test (at most 8 tuples) compacts too.
const SLACK: usize = if cfg!(test) { 2 } else { 64 };

/// Slot ids in the order they were stored; removed ones are [`NIL`].
#[derive(Debug, Default)]
pub(super) struct Fifo {
    entries: Vec<u32>,
    /// Every entry before `head` is a hole; `entries[head]` is live or `head == entries.len()`.
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

    /// Appends `slot` and returns its position. Before that, compacts the log if holes have come to
    /// outnumber the live entries, calling `moved(slot, new_position)` for each live entry.
    pub(super) fn push(&mut self, slot: u32, mut moved: impl FnMut(u32, usize)) -> usize {
        if self.head == self.entries.len() {
            self.entries.clear();
            self.head = 0;
        } else if self.entries.len() > 2 * self.live + SLACK {
            let mut w = 0;
            for r in self.head..self.entries.len() {
                let s = self.entries[r];
                if s != NIL {
                    self.entries[w] = s;
                    moved(s, w);
                    w += 1;
                }
            }
            debug_assert_eq!(w, self.live);
            self.entries.truncate(w);
            self.head = 0;
        }
        self.entries.push(slot);
        self.live += 1;
        self.entries.len() - 1
    }

    /// Removes the entry at `pos` (a position `push` returned or `moved` reported).
    pub(super) fn remove(&mut self, pos: usize) {
        debug_assert_ne!(self.entries[pos], NIL);
        self.entries[pos] = NIL;
        self.live -= 1;
        while self.head < self.entries.len() && self.entries[self.head] == NIL {
            self.head += 1;
        }
    }

    /// The oldest live slot, [`NIL`] if none.
    pub(super) fn oldest(&self) -> u32 {
        self.entries.get(self.head).copied().unwrap_or(NIL)
    }

    /// The position to start a walk at.
    pub(super) fn start(&self) -> usize {
        self.head
    }

    /// The live slot at `*at` or after it, oldest first, advancing `*at` past it; `None` at the
    /// end.
    #[inline]
    pub(super) fn next(&self, at: &mut usize) -> Option<u32> {
        while let Some(&s) = self.entries.get(*at) {
            *at += 1;
            if s != NIL {
                return Some(s);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, VecDeque};

    /// Random pushes and removals agree with a `VecDeque`, positions stay right across
    /// compactions, and the log stays bounded.
    #[test]
    fn agrees_with_a_deque_and_stays_bounded() {
        let mut f = Fifo::default();
        let mut model: VecDeque<u32> = VecDeque::new();
        let mut pos: BTreeMap<u32, usize> = BTreeMap::new();
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next_id = 0u32;
        let mut compactions = 0;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Grow to a few hundred entries, then churn around that size.
            let push = if model.len() < 300 { x % 5 < 3 } else { x % 2 == 0 };
            if push || model.is_empty() {
                let before = f.entries.len();
                let id = next_id;
                next_id += 1;
                let p = f.push(id, |s, p| {
                    pos.insert(s, p);
                });
                if f.entries.len() <= before {
                    compactions += 1;
                }
                pos.insert(id, p);
                model.push_back(id);
                // Removals leave holes; a push bounds them.
                assert!(f.entries.len() <= 2 * f.len() + SLACK + 1);
            } else {
                // Mostly from the middle, sometimes the oldest.
                let i = if x % 7 == 0 {
                    0
                } else {
                    (x >> 20) as usize % model.len()
                };
                let id = model.remove(i).unwrap();
                f.remove(pos.remove(&id).unwrap());
            }
            assert_eq!(f.len(), model.len());
            assert_eq!(f.oldest(), model.front().copied().unwrap_or(NIL));
        }
        assert!(compactions > 100, "compacted {compactions} times");
        let mut at = f.start();
        let walked: Vec<u32> = std::iter::from_fn(|| f.next(&mut at)).collect();
        assert_eq!(walked, Vec::from(model));
        f.clear();
        assert_eq!((f.len(), f.oldest()), (0, NIL));
    }

    /// A walk that removes what it visits still sees every entry once, in order.
    #[test]
    fn walk_survives_removals() {
        let mut f = Fifo::default();
        let positions: Vec<usize> = (0..10).map(|s| f.push(s, |_, _| {})).collect();
        f.remove(positions[3]);
        let mut at = f.start();
        let mut seen = Vec::new();
        while let Some(s) = f.next(&mut at) {
            seen.push(s);
            if s % 2 == 0 {
                f.remove(positions[s as usize]);
            }
        }
        assert_eq!(seen, vec![0, 1, 2, 4, 5, 6, 7, 8, 9]);
        assert_eq!(f.oldest(), 1);
        assert_eq!(f.len(), 4);
    }
}
