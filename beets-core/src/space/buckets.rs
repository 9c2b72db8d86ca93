//! The (arity, first value) index: an open-addressing table from a bucket key to its list.
//!
//! Keys are already keyed SipHash values ([`Space::key`](super::Space::key), never 0), so the
//! table uses their low bits as the home slot and stores key and list side by side in one
//! 16-byte entry: a lookup in a large space costs one cache miss where a `HashMap` (control
//! bytes, then the entry) costs two. Linear probing, at most 3/4 full, backward-shift deletion
//! (no tombstones, so probe lengths do not grow with churn).

use super::{EMPTY, List};

/// An empty entry's key (bucket keys are never 0).
const VACANT: u64 = 0;

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: u64,
    list: List,
}

const VACANT_ENTRY: Entry = Entry {
    key: VACANT,
    list: EMPTY,
};

/// Bucket key → list of the slots with that key.
#[derive(Debug, Default)]
pub(super) struct Buckets {
    entries: Vec<Entry>,
    len: usize,
}

impl Buckets {
    /// Buckets in use.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every bucket; keeps the memory.
    pub(super) fn clear(&mut self) {
        self.entries.fill(VACANT_ENTRY);
        self.len = 0;
    }

    fn mask(&self) -> usize {
        self.entries.len().wrapping_sub(1)
    }

    /// The index of `key`'s entry, or of the vacant entry where it would go.
    #[inline]
    fn probe(&self, key: u64) -> usize {
        debug_assert_ne!(key, VACANT);
        let mask = self.mask();
        let mut i = key as usize & mask;
        loop {
            let k = self.entries[i].key;
            if k == key || k == VACANT {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    /// The list of `key`, if it has one.
    #[inline]
    pub(super) fn get(&self, key: u64) -> Option<&List> {
        if self.entries.is_empty() {
            return None;
        }
        let e = &self.entries[self.probe(key)];
        (e.key == key).then_some(&e.list)
    }

    /// The list of `key`, if it has one, to change.
    #[inline]
    pub(super) fn get_mut(&mut self, key: u64) -> Option<&mut List> {
        if self.entries.is_empty() {
            return None;
        }
        let i = self.probe(key);
        let e = &mut self.entries[i];
        (e.key == key).then_some(&mut e.list)
    }

    /// The list of `key`, added empty if it has none.
    #[inline]
    pub(super) fn get_or_insert(&mut self, key: u64) -> &mut List {
        if 4 * (self.len + 1) > 3 * self.entries.len() {
            self.grow();
        }
        let i = self.probe(key);
        if self.entries[i].key == VACANT {
            self.entries[i] = Entry { key, list: EMPTY };
            self.len += 1;
        }
        &mut self.entries[i].list
    }

    /// Removes `key`'s bucket (if any), shifting later entries of its probe run back.
    pub(super) fn remove(&mut self, key: u64) {
        if self.entries.is_empty() {
            return;
        }
        let mask = self.mask();
        let mut hole = self.probe(key);
        if self.entries[hole].key != key {
            return;
        }
        self.len -= 1;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let k = self.entries[j].key;
            if k == VACANT {
                break;
            }
            let home = k as usize & mask;
            // Entry j may move into the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.entries[hole] = self.entries[j];
                hole = j;
            }
        }
        self.entries[hole] = VACANT_ENTRY;
    }

    fn grow(&mut self) {
        let cap = (self.entries.len() * 2).max(16);
        let old = std::mem::replace(&mut self.entries, vec![VACANT_ENTRY; cap]);
        for e in old.into_iter().filter(|e| e.key != VACANT) {
            let i = self.probe(e.key);
            self.entries[i] = e;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn list(n: u32) -> List {
        List { head: n, tail: n }
    }

    /// Random inserts and removals, with keys crowded into few home slots, agree with a HashMap.
    #[test]
    fn agrees_with_a_hash_map_under_churn() {
        let mut t = Buckets::default();
        let mut m: HashMap<u64, u32> = HashMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for step in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct low bits: long probe runs that wrap around.
            let key = (((x >> 40) % 512 + 1) << ((x % 3) as u32 * 8)) | 1;
            if x.is_multiple_of(3) {
                t.remove(key);
                m.remove(&key);
            } else {
                *t.get_or_insert(key) = list(step);
                m.insert(key, step);
            }
            assert_eq!(t.len(), m.len());
            if step % 1000 == 0 {
                for (&k, &v) in &m {
                    assert_eq!(t.get(k).map(|l| l.head), Some(v));
                }
            }
        }
        for (&k, &v) in &m {
            assert_eq!(t.get_mut(k).map(|l| l.tail), Some(v));
        }
        t.clear();
        assert!(t.is_empty() && t.get(1).is_none());
    }
}
