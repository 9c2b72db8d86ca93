//! The replay window of spec §12 (step 3 of "Receiving"), after RFC 4303 §3.4.3.

use std::collections::HashMap;
use std::num::NonZeroU16;

use super::Opened;
use crate::node::Transport;

/// Counters each source's window tracks below and including its highest: 64 (spec §12).
pub const WINDOW_BITS: u32 = 64;
/// Default bound S on the sources a [`ReplayWindow`] remembers: 4096 (spec §12).
pub const DEFAULT_WINDOW_SOURCES: usize = 4096;

/// One source's window, as exported by [`ReplayWindow::export`] and persisted by a
/// [`CounterStore`](super::CounterStore).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WindowEntry {
    /// The transport (windows are per transport and source id).
    pub transport: Transport,
    /// The source id.
    pub source_id: NonZeroU16,
    /// H, the highest counter accepted.
    pub highest: u32,
    /// Bit i set ⇔ counter H − i was accepted (bit 0, H itself, is always set).
    pub bitmap: u64,
}

/// Why step 3 dropped a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The counter is marked in the window: a deliberate repeat (BLE Δt, UDP repetition) or a
    /// replay inside the window; the two look alike.
    #[error("duplicate: counter {counter} of source id {source_id} was already accepted")]
    Duplicate {
        /// The transport.
        transport: Transport,
        /// The source id.
        source_id: NonZeroU16,
        /// The counter.
        counter: u32,
    },
    /// The counter is below the window (more than 63 below the highest accepted).
    #[error(
        "replay: counter {counter} of source id {source_id} is below its window (lowest {lowest})"
    )]
    Replay {
        /// The transport.
        transport: Transport,
        /// The source id.
        source_id: NonZeroU16,
        /// The counter.
        counter: u32,
        /// The lowest counter the window still tracks (H − 63).
        lowest: u32,
    },
}

/// An invalid [`WindowEntry`] given to [`ReplayWindow::import`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("window entry of source id {source_id} has bit 0 (its highest counter) unset")]
pub struct BadWindowEntry {
    /// The entry's source id.
    pub source_id: NonZeroU16,
}

const NIL: usize = usize::MAX;

type SourceKey = (Transport, NonZeroU16);

#[derive(Clone, Debug)]
struct Slot {
    key: SourceKey,
    highest: u32,
    bitmap: u64,
    /// Toward the most recently updated.
    prev: usize,
    /// Toward the least recently updated.
    next: usize,
}

/// The replay protection list of a sealed space (spec §12, RFC 4303 §3.4.3): per (transport,
/// source id), the highest counter H accepted and a 64-bit map of H − 63..=H.
///
/// Counter c is accepted if c > H (the window moves), or H − 63 ≤ c ≤ H and its bit is unset;
/// otherwise it is a [`ReplayError::Duplicate`] (bit set) or a [`ReplayError::Replay`] (below the
/// window). The first message of an unknown source is accepted. At most
/// [`capacity`](Self::capacity) sources (S, default 4096) are remembered; when full, the least
/// recently updated one is forgotten ([`evicted`](Self::evicted) counts them), and a forgotten
/// source's old messages would be accepted again — persist and size the window accordingly.
///
/// **Feed it only authenticated counters** (spec §12: entries are created and updated only after
/// step 2, so a forger cannot fill the table): [`accept`](Self::accept) takes the [`Opened`] that
/// only [`SealKey::open`](super::SealKey::open) returns. For sealed messages this window is the
/// duplicate filter; the §8 cache ([`dedup`](crate::dedup)) is not consulted for them.
///
/// Cost: one hash lookup and O(1) list moves per message; memory is at most S slots of 40 bytes
/// plus the index, and nothing is allocated once S sources have been seen.
///
/// Persistence: [`export`](Self::export) / [`import`](Self::import) give the state as
/// [`WindowEntry`]s, least recently updated first;
/// [`CounterStore::save_window`](super::CounterStore::save_window) writes them.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    capacity: usize,
    index: HashMap<SourceKey, usize>,
    slots: Vec<Slot>,
    /// Most recently updated slot.
    head: usize,
    /// Least recently updated slot.
    tail: usize,
    evicted: u64,
}

impl Default for ReplayWindow {
    /// A window of [`DEFAULT_WINDOW_SOURCES`] sources.
    fn default() -> Self {
        ReplayWindow::new(DEFAULT_WINDOW_SOURCES)
    }
}

/// Where a counter falls relative to a source's window.
enum Place {
    /// Above H, by this many.
    Ahead(u32),
    /// Inside the window, at bit i, unset.
    Inside(u32),
}

fn place(key: SourceKey, highest: u32, bitmap: u64, counter: u32) -> Result<Place, ReplayError> {
    let (transport, source_id) = key;
    if counter > highest {
        return Ok(Place::Ahead(counter - highest));
    }
    let offset = highest - counter;
    if offset >= WINDOW_BITS {
        return Err(ReplayError::Replay {
            transport,
            source_id,
            counter,
            lowest: highest - (WINDOW_BITS - 1),
        });
    }
    if bitmap & (1 << offset) != 0 {
        Err(ReplayError::Duplicate {
            transport,
            source_id,
            counter,
        })
    } else {
        Ok(Place::Inside(offset))
    }
}

impl ReplayWindow {
    /// A window for at most `sources` (transport, source id) pairs (at least 1).
    #[must_use]
    pub fn new(sources: usize) -> Self {
        let capacity = sources.max(1);
        ReplayWindow {
            capacity,
            index: HashMap::with_capacity(capacity.min(1024)),
            slots: Vec::with_capacity(capacity.min(1024)),
            head: NIL,
            tail: NIL,
            evicted: 0,
        }
    }

    /// Step 3 of spec §12 for an opened message: accepts its counter (marking it, moving the
    /// window or creating the source's entry) or reports why not, changing nothing.
    ///
    /// # Errors
    /// [`ReplayError::Duplicate`] when the counter is marked in the window,
    /// [`ReplayError::Replay`] when it is below it.
    pub fn accept(&mut self, opened: &Opened) -> Result<(), ReplayError> {
        self.accept_counter(opened.transport(), opened.source_id(), opened.counter())
    }

    /// Whether [`accept`](Self::accept) would accept `opened`, without recording anything.
    ///
    /// # Errors
    /// As [`accept`](Self::accept).
    pub fn check(&self, opened: &Opened) -> Result<(), ReplayError> {
        let key = (opened.transport(), opened.source_id());
        match self.index.get(&key) {
            None => Ok(()),
            Some(&i) => {
                let s = &self.slots[i];
                place(key, s.highest, s.bitmap, opened.counter()).map(|_| ())
            }
        }
    }

    fn accept_counter(
        &mut self,
        transport: Transport,
        source_id: NonZeroU16,
        counter: u32,
    ) -> Result<(), ReplayError> {
        let key = (transport, source_id);
        let Some(&i) = self.index.get(&key) else {
            self.insert(key, counter, 1);
            return Ok(());
        };
        let slot = &mut self.slots[i];
        match place(key, slot.highest, slot.bitmap, counter)? {
            Place::Ahead(shift) => {
                slot.bitmap = if shift >= WINDOW_BITS {
                    1
                } else {
                    (slot.bitmap << shift) | 1
                };
                slot.highest = counter;
            }
            Place::Inside(offset) => slot.bitmap |= 1 << offset,
        }
        self.touch(i);
        Ok(())
    }

    /// Adds a source (or overwrites it) as the most recently updated, evicting the least
    /// recently updated when full.
    fn insert(&mut self, key: SourceKey, highest: u32, bitmap: u64) {
        if let Some(&i) = self.index.get(&key) {
            self.slots[i].highest = highest;
            self.slots[i].bitmap = bitmap;
            self.touch(i);
            return;
        }
        let i = if self.slots.len() < self.capacity {
            self.slots.push(Slot {
                key,
                highest,
                bitmap,
                prev: NIL,
                next: NIL,
            });
            self.slots.len() - 1
        } else {
            // Full: reuse the least recently updated slot.
            let i = self.tail;
            self.unlink(i);
            self.index.remove(&self.slots[i].key);
            self.evicted += 1;
            let s = &mut self.slots[i];
            s.key = key;
            s.highest = highest;
            s.bitmap = bitmap;
            i
        };
        self.index.insert(key, i);
        self.push_front(i);
    }

    fn touch(&mut self, i: usize) {
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.slots[i].prev, self.slots[i].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next].prev = prev;
        }
    }

    fn push_front(&mut self, i: usize) {
        self.slots[i].prev = NIL;
        self.slots[i].next = self.head;
        if self.head == NIL {
            self.tail = i;
        } else {
            self.slots[self.head].prev = i;
        }
        self.head = i;
    }

    /// The window of one source, if remembered.
    #[must_use]
    pub fn entry(&self, transport: Transport, source_id: NonZeroU16) -> Option<WindowEntry> {
        self.index
            .get(&(transport, source_id))
            .map(|&i| self.entry_at(i))
    }

    fn entry_at(&self, i: usize) -> WindowEntry {
        let s = &self.slots[i];
        WindowEntry {
            transport: s.key.0,
            source_id: s.key.1,
            highest: s.highest,
            bitmap: s.bitmap,
        }
    }

    /// Every remembered source's window, least recently updated first (so that
    /// [`import`](Self::import) of the result restores the eviction order too).
    #[must_use]
    pub fn export(&self) -> Vec<WindowEntry> {
        let mut out = Vec::with_capacity(self.slots.len());
        let mut i = self.tail;
        while i != NIL {
            out.push(self.entry_at(i));
            i = self.slots[i].prev;
        }
        out
    }

    /// Adds `entries` in order, each as the most recently updated (overwriting a source already
    /// remembered; beyond the capacity the oldest go). Meant for a new window at start, with what
    /// [`export`](Self::export) gave before the restart.
    ///
    /// # Errors
    /// [`BadWindowEntry`] for an entry whose bit 0 is unset (its highest counter must have been
    /// accepted); the entries before it were added.
    pub fn import(
        &mut self,
        entries: impl IntoIterator<Item = WindowEntry>,
    ) -> Result<(), BadWindowEntry> {
        for e in entries {
            if e.bitmap & 1 == 0 {
                return Err(BadWindowEntry {
                    source_id: e.source_id,
                });
            }
            self.insert((e.transport, e.source_id), e.highest, e.bitmap);
        }
        Ok(())
    }

    /// Sources remembered now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no source is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The bound S on remembered sources.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sources forgotten to make room since the window was made.
    #[must_use]
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap as Map, HashSet};

    fn src(n: u16) -> NonZeroU16 {
        NonZeroU16::new(n).unwrap()
    }

    fn acc(w: &mut ReplayWindow, t: Transport, s: u16, c: u32) -> Result<(), ReplayError> {
        w.accept(&Opened::for_test(t, src(s), c))
    }

    #[test]
    fn first_message_of_a_source_is_accepted_at_any_counter() {
        let mut w = ReplayWindow::default();
        assert_eq!(acc(&mut w, Transport::Ble, 1, 1_000_000), Ok(()));
        assert_eq!(acc(&mut w, Transport::Ble, 2, 0), Ok(()));
        assert_eq!(acc(&mut w, Transport::Udp, 1, 0), Ok(()), "per transport");
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn duplicate_inside_and_replay_below_the_window() {
        let mut w = ReplayWindow::default();
        acc(&mut w, Transport::Ble, 7, 100).unwrap();
        assert!(matches!(
            acc(&mut w, Transport::Ble, 7, 100),
            Err(ReplayError::Duplicate { counter: 100, .. })
        ));
        // 37..=99 are inside the window and unset: accepted once each, in any order.
        assert_eq!(acc(&mut w, Transport::Ble, 7, 37), Ok(()));
        assert_eq!(acc(&mut w, Transport::Ble, 7, 99), Ok(()));
        assert!(matches!(
            acc(&mut w, Transport::Ble, 7, 37),
            Err(ReplayError::Duplicate { .. })
        ));
        assert_eq!(
            acc(&mut w, Transport::Ble, 7, 36),
            Err(ReplayError::Replay {
                transport: Transport::Ble,
                source_id: src(7),
                counter: 36,
                lowest: 37
            })
        );
        // Moving the window by more than 64 clears it.
        acc(&mut w, Transport::Ble, 7, 1000).unwrap();
        assert!(matches!(
            acc(&mut w, Transport::Ble, 7, 100),
            Err(ReplayError::Replay { lowest: 937, .. })
        ));
        assert_eq!(acc(&mut w, Transport::Ble, 7, 999), Ok(()));
        assert_eq!(
            w.entry(Transport::Ble, src(7)),
            Some(WindowEntry {
                transport: Transport::Ble,
                source_id: src(7),
                highest: 1000,
                bitmap: 0b11
            })
        );
    }

    #[test]
    fn counter_extremes() {
        let mut w = ReplayWindow::default();
        acc(&mut w, Transport::Udp, 1, u32::MAX).unwrap();
        assert!(matches!(
            acc(&mut w, Transport::Udp, 1, u32::MAX),
            Err(ReplayError::Duplicate { .. })
        ));
        assert_eq!(acc(&mut w, Transport::Udp, 1, u32::MAX - 63), Ok(()));
        assert!(matches!(
            acc(&mut w, Transport::Udp, 1, u32::MAX - 64),
            Err(ReplayError::Replay { .. })
        ));
        acc(&mut w, Transport::Udp, 2, 0).unwrap();
        assert!(matches!(
            acc(&mut w, Transport::Udp, 2, 0),
            Err(ReplayError::Duplicate { .. })
        ));
    }

    #[test]
    fn check_records_nothing() {
        let mut w = ReplayWindow::default();
        let o = Opened::for_test(Transport::Ble, src(3), 5);
        assert_eq!(w.check(&o), Ok(()));
        assert_eq!(w.check(&o), Ok(()));
        assert!(w.is_empty());
        w.accept(&o).unwrap();
        assert!(matches!(w.check(&o), Err(ReplayError::Duplicate { .. })));
    }

    #[test]
    fn least_recently_updated_source_is_evicted() {
        let mut w = ReplayWindow::new(3);
        for s in 1..=3 {
            acc(&mut w, Transport::Ble, s, 10).unwrap();
        }
        // Source 1 updated again: source 2 is now the least recently updated.
        acc(&mut w, Transport::Ble, 1, 11).unwrap();
        acc(&mut w, Transport::Ble, 4, 10).unwrap();
        assert_eq!(w.len(), 3);
        assert_eq!(w.evicted(), 1);
        assert!(w.entry(Transport::Ble, src(2)).is_none());
        // Forgotten: its old counter is accepted again (the documented cost of eviction).
        assert_eq!(acc(&mut w, Transport::Ble, 2, 10), Ok(()));
        assert!(w.entry(Transport::Ble, src(3)).is_none());
        let order: Vec<u16> = w.export().iter().map(|e| e.source_id.get()).collect();
        assert_eq!(order, [1, 4, 2]);
    }

    #[test]
    fn export_import_round_trip_keeps_order_and_state() {
        let mut w = ReplayWindow::new(8);
        for (s, c) in [(1, 5), (2, 70), (1, 3), (3, 1), (2, 9)] {
            let _ = acc(&mut w, Transport::Udp, s, c);
        }
        let state = w.export();
        let mut back = ReplayWindow::new(8);
        back.import(state.clone()).unwrap();
        assert_eq!(back.export(), state);
        assert!(matches!(
            acc(&mut back, Transport::Udp, 1, 3),
            Err(ReplayError::Duplicate { .. })
        ));
        let bad = WindowEntry {
            bitmap: 0b10,
            ..state[0]
        };
        assert_eq!(
            back.import([bad]),
            Err(BadWindowEntry {
                source_id: bad.source_id
            })
        );
    }

    /// The model: every counter accepted so far, and the highest, per source.
    #[derive(Default)]
    struct Model {
        seen: Map<(bool, u16), (HashSet<u32>, u32)>,
    }

    impl Model {
        fn accept(&mut self, udp: bool, s: u16, c: u32) -> Result<(), &'static str> {
            match self.seen.get_mut(&(udp, s)) {
                None => {
                    self.seen.insert((udp, s), (HashSet::from([c]), c));
                    Ok(())
                }
                Some((set, h)) => {
                    if c.checked_add(63).is_some_and(|x| x < *h) {
                        Err("replay")
                    } else if set.contains(&c) {
                        Err("duplicate")
                    } else {
                        set.insert(c);
                        *h = (*h).max(c);
                        Ok(())
                    }
                }
            }
        }
    }

    proptest! {
        /// Against a model with unbounded memory (a set of every accepted counter and the
        /// highest): same verdict for every message, with few enough sources that none is
        /// evicted.
        #[test]
        fn window_matches_model(
            ops in proptest::collection::vec((any::<bool>(), 1u16..4, 0u32..300), 1..400),
            base in prop_oneof![Just(0u32), Just(u32::MAX - 300), any::<u32>().prop_map(|x| x / 2)],
        ) {
            let mut w = ReplayWindow::new(8);
            let mut model = Model::default();
            for (udp, s, c) in ops {
                let c = base.saturating_add(c);
                let t = if udp { Transport::Udp } else { Transport::Ble };
                let got = acc(&mut w, t, s, c).map_err(|e| match e {
                    ReplayError::Duplicate { .. } => "duplicate",
                    ReplayError::Replay { .. } => "replay",
                });
                prop_assert_eq!(got, model.accept(udp, s, c), "source {} counter {}", s, c);
            }
            let restored = {
                let mut r = ReplayWindow::new(8);
                r.import(w.export()).unwrap();
                r.export()
            };
            prop_assert_eq!(restored, w.export());
        }

        /// With many sources the table stays within its bound.
        #[test]
        fn window_stays_bounded(sources in proptest::collection::vec(1u16.., 1..200)) {
            let mut w = ReplayWindow::new(16);
            for s in sources {
                let _ = acc(&mut w, Transport::Ble, s, 1);
                prop_assert!(w.len() <= 16);
            }
            prop_assert_eq!(w.export().len(), w.len());
        }
    }
}
