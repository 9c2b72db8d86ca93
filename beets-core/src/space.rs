//! The local tuple space: storage, matching, lifetimes and listeners (paper §3, spec wire-v1 §9).
//!
//! A [`Space`] is what a node's engine stores OUT tuples in and answers RD, INP and TEST from. It
//! does no I/O and reads no clock: every operation that depends on time takes a [`Time`].
//!
//! # Why it is built this way
//! - **Sub-spaces by arity.** The paper splits a space into ts1..ts4, one per arity, because a
//!   template only ever matches tuples of its own arity. Each stored tuple is linked into the list
//!   of its arity, so a template whose first field is a formal scans its sub-space only.
//! - **An index on the first field.** Most templates name their first field (`("SENSOR", ?, ?)`),
//!   so the space keeps a hash index keyed by (arity, first value) and `rd`/`inp` by a first-field
//!   actual visit only the tuples that share that value, however large the space is. The key
//!   follows spec §3 equality: `-0.0` and `+0.0` share a key, `int16 5` and `float32 5.0` do not,
//!   and a string and a byte string with the same bytes do not.
//! - **First in, first out.** Among several matches, `rd` and `inp` take the oldest, so a space
//!   behaves like a queue per template and producers are served in order.
//! - **Lifetimes.** Radio tuples are sensor readings that go stale; an OUT may carry a lifetime
//!   (spec §4 `L`) and a space may have a default. Expired tuples are never returned, even before
//!   [`Space::expire`] removes them, and [`Space::next_expiry`] tells an engine when to set its
//!   timer. Tuples without a lifetime cost nothing here.
//! - **A capacity and a policy.** A node's memory is finite and its neighbours can send without
//!   limit, so a space holds at most [`SpaceConfig::capacity`] tuples; when full it either refuses
//!   new tuples or evicts the oldest ([`CapacityPolicy`]). Either way the engine can count it.
//! - **Listeners, polled.** Tuples stored by `out` and tuples only passed through by
//!   [`Space::notify`] (spec §9: TUPLE with R=0) are queued for matching listeners and drained
//!   with [`Space::poll_delivery`], in the sans-IO style of the engine: no callbacks, no locks.
//!   A listener may ask for removals too ([`Space::subscribe_to`] with
//!   [`DeliveryKinds::REMOVALS`]): tuples taken by `inp`, removed by `rm` or a cancelled lease,
//!   expired or evicted, each delivery saying which ([`DeliveryKind`]).
//! - **Leases.** `out` names the stored tuple ([`OutReport::id`], a [`TupleId`]); its lifetime
//!   can be renewed ([`Space::renew`]) or the tuple removed ([`Space::cancel`]) while it lives,
//!   as JavaSpaces' `Lease`.
//!
//! # What it does not do
//! No networking, no replies, no agents: the engine turns RD/INP/TEST messages into calls here and
//! the results into TUPLE replies. The space is not shared between threads; wrap it if you must.
//!
//! # Example
//! ```
//! use beets_core::space::{DeliveryKind, Space, SpaceConfig};
//! use beets_core::{Field, Template, Time, Tuple, TypeCode, Value};
//! use std::time::Duration;
//!
//! let mut space = Space::new(SpaceConfig { capacity: 100, ..SpaceConfig::default() });
//! let sensors = Template::new([
//!     Field::Actual(Value::Str("SENSOR".into())),
//!     Field::Formal(Some(TypeCode::Int16)),
//! ])?;
//! let listener = space.subscribe(sensors.clone());
//!
//! let t0 = Time::ZERO;
//! let reading = Tuple::new([Value::Str("SENSOR".into()), Value::Int16(512)])?;
//! space.out(t0, reading.clone(), Some(Duration::from_secs(10)))?;
//!
//! // The listener sees the stored tuple; the engine drains deliveries after each call.
//! let d = space.poll_delivery().unwrap();
//! assert_eq!((d.listener, d.kind, &d.tuple), (listener, DeliveryKind::Out, &reading));
//!
//! assert_eq!(space.rd(t0, &sensors), Some(reading.clone()));
//! assert_eq!(space.next_expiry(), Some(Time::from_millis(10_000)));
//! // Ten seconds later the reading has expired: reads skip it even before `expire` runs.
//! let later = t0 + Duration::from_secs(10);
//! assert_eq!(space.inp(later, &sensors), None);
//! assert!(space.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::time::Duration;

use crate::time::Time;
use crate::tuple::{MAX_ARITY, Template, Tuple};
use crate::value::Value;

mod buckets;
use buckets::Buckets;

/// Default [`SpaceConfig::capacity`]: 4096 tuples.
pub const DEFAULT_CAPACITY: usize = 4096;

/// Default [`SpaceConfig::delivery_queue`]: 1024 pending deliveries.
pub const DEFAULT_DELIVERY_QUEUE: usize = 1024;

/// "No slot" in the intrusive lists.
const NIL: u32 = u32::MAX;
/// Most tuples a space can hold whatever its configured capacity: slot ids are `u32` and
/// [`NIL`] is reserved.
const MAX_SLOTS: usize = NIL as usize;
/// Which of a slot's links: its (arity, first value) bucket, the insertion order of the whole
/// space, the insertion order of its arity's sub-space. The free list reuses `ORDER`.
const BUCKET: usize = 0;
const ORDER: usize = 1;
const SUB: usize = 2;

/// What a full space does with one more tuple.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CapacityPolicy {
    /// `out` fails with [`SpaceError::Full`]; stored tuples are kept. Choose it when losing an old
    /// tuple silently is worse than refusing a new one (local bookkeeping tuples).
    Refuse,
    /// The oldest stored tuple (first stored, whatever its arity) is removed to make room and
    /// handed back in [`OutReport::evicted`]. The default: on a radio network new readings matter
    /// more than old ones, and a full space must not stop accepting OUTs for good.
    #[default]
    EvictOldest,
}

/// How a [`Space`] is sized and how long its tuples live. Build it with
/// `SpaceConfig { capacity: 100, ..SpaceConfig::default() }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaceConfig {
    /// Most tuples stored at once, expired-but-not-yet-removed ones included (they are removed
    /// first when the space is full). Default [`DEFAULT_CAPACITY`]. 0 makes every `out` fail;
    /// values beyond `u32::MAX` act as `u32::MAX`.
    pub capacity: usize,
    /// Lifetime of a tuple stored without one; `None` keeps it until it is taken or evicted.
    /// Default `None`. Like a per-`out` lifetime it must be at least 1 ms.
    pub default_lifetime: Option<Duration>,
    /// What `out` does when the space is full. Default [`CapacityPolicy::EvictOldest`].
    pub policy: CapacityPolicy,
    /// Most deliveries waiting for [`Space::poll_delivery`]. When one more is queued the oldest is
    /// dropped and counted in [`SpaceStats::deliveries_dropped`]. Default
    /// [`DEFAULT_DELIVERY_QUEUE`]; 0 drops every delivery.
    pub delivery_queue: usize,
    /// Largest tuple `out` accepts, in bytes of its wire encoding ([`Tuple::wire_len`]: the
    /// signature byte and the values, spec §2). `None` (the default for a bare `Space`): no
    /// limit. A [`Node`](crate::Node) sets it to what one reply can carry on its transport (the
    /// message limit less the control byte: 30 bytes on BLE, 1220 on UDP), so that no stored tuple
    /// is one the node could not send when a remote `rd` or `inp` asks for it.
    pub max_tuple_len: Option<usize>,
}

impl Default for SpaceConfig {
    fn default() -> SpaceConfig {
        SpaceConfig {
            capacity: DEFAULT_CAPACITY,
            default_lifetime: None,
            policy: CapacityPolicy::default(),
            delivery_queue: DEFAULT_DELIVERY_QUEUE,
            max_tuple_len: None,
        }
    }
}

/// Why an `out` was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SpaceError {
    /// The space holds `capacity` live tuples and its policy is [`CapacityPolicy::Refuse`] (or the
    /// capacity is 0).
    #[error(
        "tuple space is full: it holds its capacity of {capacity} tuples and its policy refuses \
         new ones (raise SpaceConfig::capacity, take tuples, or use CapacityPolicy::EvictOldest)"
    )]
    Full {
        /// The configured capacity, [`SpaceConfig::capacity`].
        capacity: usize,
    },
    /// A lifetime shorter than 1 ms was given to `out` or set as the space default. Time counts
    /// whole milliseconds and the wire forbids a lifetime of 0 (spec wire-v1 §4), so such a tuple
    /// could never be read; pass `None` for the default or "forever".
    #[error(
        "a tuple lifetime must be at least 1 ms, got {lifetime:?} (spec wire-v1 §4: lifetime 0 is invalid)"
    )]
    ZeroLifetime {
        /// The lifetime given.
        lifetime: Duration,
    },
    /// The tuple is longer than [`SpaceConfig::max_tuple_len`]: the node could not send it in a
    /// reply, so it is not stored (a remote `inp` would otherwise remove a tuple that never
    /// arrives).
    #[error(
        "tuple needs {len} bytes, this space stores at most {max} (what one reply on its transport \
         carries; spec wire-v1 §6: 31-byte BLE messages, §7: 1221-byte UDP messages)"
    )]
    TooLong {
        /// Encoded length of the tuple in bytes ([`Tuple::wire_len`]).
        len: usize,
        /// The limit, [`SpaceConfig::max_tuple_len`].
        max: usize,
    },
    /// The tuple a lease names is no longer stored: taken, removed, evicted or expired
    /// ([`Space::renew`]).
    #[error("the leased tuple is no longer in the space (taken, removed, evicted or expired)")]
    Gone,
}

/// What a successful [`Space::out`] did besides storing the tuple.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct OutReport {
    /// The stored tuple, for [`Space::renew`], [`Space::cancel`] and [`Space::take`] (its lease).
    pub id: TupleId,
    /// The tuple evicted to make room ([`CapacityPolicy::EvictOldest`] on a full space).
    pub evicted: Option<Tuple>,
    /// Expired tuples removed to make room before deciding the space was full.
    pub expired: usize,
    /// Listeners whose template matched; each got a delivery, subject to
    /// [`SpaceConfig::delivery_queue`].
    pub delivered: usize,
}

/// Counters since the space was created (never reset, not even by [`Space::clear`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpaceStats {
    /// Tuples stored by `out`.
    pub stored: u64,
    /// Tuples removed because their lifetime ended (by `expire`, by reads that met them, by a full
    /// `out`).
    pub expired: u64,
    /// Tuples evicted by [`CapacityPolicy::EvictOldest`].
    pub evicted: u64,
    /// `out` calls refused with [`SpaceError::Full`] or [`SpaceError::TooLong`].
    pub refused: u64,
    /// Deliveries dropped because the delivery queue was full.
    pub deliveries_dropped: u64,
}

/// Names a listener registered with [`Space::subscribe`]. Ids are never reused within a space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(u64);

/// Why a tuple was delivered to a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryKind {
    /// The tuple was stored by [`Space::out`]; it is still in the space.
    Out,
    /// The tuple was passed to [`Space::notify`] (spec §9: TUPLE with R=0); it was not stored.
    Notify,
    /// The tuple was taken by an `inp` (local, or a remote INP answered); it is gone.
    Inp,
    /// The tuple was removed by `rm` or its lease was cancelled ([`Space::cancel`]); it is gone.
    Rm,
    /// The tuple's lifetime ended; it is gone.
    Expired,
    /// The tuple was evicted to make room ([`CapacityPolicy::EvictOldest`]); it is gone.
    Evicted,
}

impl DeliveryKind {
    const fn bit(self) -> u8 {
        1 << self as u8
    }

    /// Whether the tuple left the space (every kind but `Out` and `Notify`).
    pub const fn is_removal(self) -> bool {
        !matches!(self, DeliveryKind::Out | DeliveryKind::Notify)
    }
}

/// Which [`DeliveryKind`]s a listener hears ([`Space::subscribe_to`]); combine with `|`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeliveryKinds(u8);

impl DeliveryKinds {
    /// Nothing.
    pub const NONE: DeliveryKinds = DeliveryKinds(0);
    /// What [`Space::subscribe`] hears: stored outs and notifications.
    pub const DEFAULT: DeliveryKinds =
        DeliveryKinds(DeliveryKind::Out.bit() | DeliveryKind::Notify.bit());
    /// Every removal: `Inp`, `Rm`, `Expired`, `Evicted`.
    pub const REMOVALS: DeliveryKinds = DeliveryKinds(
        DeliveryKind::Inp.bit()
            | DeliveryKind::Rm.bit()
            | DeliveryKind::Expired.bit()
            | DeliveryKind::Evicted.bit(),
    );
    /// Everything.
    pub const ALL: DeliveryKinds = DeliveryKinds(Self::DEFAULT.0 | Self::REMOVALS.0);

    /// Just `kind`.
    pub const fn only(kind: DeliveryKind) -> DeliveryKinds {
        DeliveryKinds(kind.bit())
    }

    /// Whether `kind` is in the set.
    pub const fn contains(self, kind: DeliveryKind) -> bool {
        self.0 & kind.bit() != 0
    }
}

impl std::ops::BitOr for DeliveryKinds {
    type Output = DeliveryKinds;
    fn bitor(self, rhs: DeliveryKinds) -> DeliveryKinds {
        DeliveryKinds(self.0 | rhs.0)
    }
}

impl std::ops::BitOr<DeliveryKind> for DeliveryKinds {
    type Output = DeliveryKinds;
    fn bitor(self, rhs: DeliveryKind) -> DeliveryKinds {
        DeliveryKinds(self.0 | rhs.bit())
    }
}

/// Names one stored tuple (from [`OutReport::id`]): its lease. Never names another tuple, even
/// after this one is gone and its slot reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TupleId {
    seq: u64,
    slot: u32,
}

/// A tuple for a listener, drained with [`Space::poll_delivery`].
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// The listener whose template matched.
    pub listener: ListenerId,
    /// A copy of the tuple.
    pub tuple: Tuple,
    /// Stored, notified, or how it left the space.
    pub kind: DeliveryKind,
}

#[derive(Clone, Copy, Debug)]
struct Links {
    prev: u32,
    next: u32,
}

const UNLINKED: Links = Links {
    prev: NIL,
    next: NIL,
};

#[derive(Clone, Copy, Debug)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

/// One entry of the slab. `tuple` is `None` while the slot is on the free list.
#[derive(Debug)]
struct Slot {
    tuple: Option<Tuple>,
    links: [Links; 3],
    /// The bucket key, kept so removal does not hash again.
    key: u64,
    /// [`Time::MAX`] = never.
    expires: Time,
    /// Unique per stored tuple; lets the expiry heap recognise entries whose tuple is gone.
    seq: u64,
}

/// A local tuple space: tuples of arity 1..=4 in FIFO order, indexed by (arity, first value),
/// with lifetimes, a capacity and listeners.
///
/// Call order for an engine: feed it with [`out`](Space::out) / [`notify`](Space::notify) and
/// query it with [`rd`](Space::rd), [`inp`](Space::inp), [`rm`](Space::rm),
/// [`count`](Space::count); after each call drain [`poll_delivery`](Space::poll_delivery); arm a
/// timer at [`next_expiry`](Space::next_expiry) and call [`expire`](Space::expire) when it fires.
/// Costs below: *n* tuples stored, *nₐ* of the template's arity, *b* sharing its (arity, first
/// value) key, *L* listeners of the tuple's arity.
pub struct Space {
    config: SpaceConfig,
    slots: Vec<Slot>,
    free: u32,
    len: usize,
    order: List,
    sub: [List; MAX_ARITY],
    buckets: Buckets,
    hasher: RandomState,
    /// Min-heap of (expiry, seq, slot) with lazy deletion; its top is always a live tuple.
    heap: BinaryHeap<Reverse<(Time, u64, u32)>>,
    /// Live tuples that have an expiry (the heap's live entries).
    timed: usize,
    next_seq: u64,
    listeners: [Vec<(ListenerId, Template, DeliveryKinds)>; MAX_ARITY],
    next_listener: u64,
    deliveries: VecDeque<Delivery>,
    stats: SpaceStats,
}

impl Default for Space {
    fn default() -> Space {
        Space::new(SpaceConfig::default())
    }
}

impl fmt::Debug for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Space")
            .field("config", &self.config)
            .field("len", &self.len)
            .field("buckets", &self.buckets.len())
            .field(
                "listeners",
                &self.listeners.iter().map(Vec::len).sum::<usize>(),
            )
            .field("pending_deliveries", &self.deliveries.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Space {
    /// An empty space. Allocates nothing until the first tuple is stored.
    pub fn new(config: SpaceConfig) -> Space {
        Space {
            config,
            slots: Vec::new(),
            free: NIL,
            len: 0,
            order: EMPTY,
            sub: [EMPTY; MAX_ARITY],
            buckets: Buckets::default(),
            hasher: RandomState::new(),
            heap: BinaryHeap::new(),
            timed: 0,
            next_seq: 0,
            listeners: Default::default(),
            next_listener: 0,
            deliveries: VecDeque::new(),
            stats: SpaceStats::default(),
        }
    }

    /// The configuration the space was built with.
    pub fn config(&self) -> &SpaceConfig {
        &self.config
    }

    /// Counters since creation.
    pub fn stats(&self) -> SpaceStats {
        self.stats
    }

    /// Stores `tuple`, living `lifetime` from `now` (`None`: the space default; the default
    /// `None`: until taken or evicted). Lifetimes count whole milliseconds, rounded down. Once the
    /// tuple is stored, listeners whose template matches get a [`DeliveryKind::Out`] delivery.
    ///
    /// When the space is full, expired tuples are removed first; if it is still full,
    /// [`CapacityPolicy::Refuse`] fails and [`CapacityPolicy::EvictOldest`] removes the oldest
    /// tuple and returns it in [`OutReport::evicted`].
    ///
    /// Cost: O(1) expected (one hash of the first value, a slab slot, three list links), plus
    /// O(log n) with a lifetime (expiry heap), plus O(L) template checks for listeners. A full space
    /// adds the removal of its expired tuples, each paid once.
    ///
    /// # Errors
    /// [`SpaceError::ZeroLifetime`] for a lifetime under 1 ms (nothing is changed);
    /// [`SpaceError::Full`] when full under [`CapacityPolicy::Refuse`] or with capacity 0;
    /// [`SpaceError::TooLong`] for a tuple over [`SpaceConfig::max_tuple_len`].
    pub fn out(
        &mut self,
        now: Time,
        tuple: Tuple,
        lifetime: Option<Duration>,
    ) -> Result<OutReport, SpaceError> {
        if let Some(max) = self.config.max_tuple_len {
            let len = tuple.wire_len();
            if len > max {
                self.stats.refused += 1;
                return Err(SpaceError::TooLong { len, max });
            }
        }
        let expires = match lifetime.or(self.config.default_lifetime) {
            None => Time::MAX,
            Some(d) if d < Duration::from_millis(1) => {
                return Err(SpaceError::ZeroLifetime { lifetime: d });
            }
            Some(d) => now + d,
        };
        let capacity = self.config.capacity.min(MAX_SLOTS);
        let mut expired = 0;
        let mut evicted = None;
        if self.len >= capacity {
            expired = self.expire(now);
        }
        if self.len >= capacity {
            let oldest = self.order.head;
            if self.config.policy == CapacityPolicy::Refuse || oldest == NIL {
                self.stats.refused += 1;
                return Err(SpaceError::Full {
                    capacity: self.config.capacity,
                });
            }
            evicted = self.remove_as(oldest, DeliveryKind::Evicted);
            self.stats.evicted += 1;
        }
        let delivered = self.deliver(&tuple, DeliveryKind::Out);
        let id = self.insert(tuple, expires);
        self.stats.stored += 1;
        Ok(OutReport {
            id,
            evicted,
            expired,
            delivered,
        })
    }

    /// A copy of the oldest live tuple matching `template` (the `rd` operation), or `None`.
    ///
    /// Cost: with a first-field actual, O(1) expected to find the (arity, first value) bucket, then
    /// O(b) at worst walking it oldest first; with a first-field formal, O(nₐ) at worst walking the
    /// arity's sub-space. The walk stops at the first match; expired tuples it meets are removed,
    /// which is why `rd` takes `&mut self` ([`count`](Space::count) is the read-only check).
    pub fn rd(&mut self, now: Time, template: &Template) -> Option<Tuple> {
        let idx = self.find(now, template)?;
        self.slots[idx as usize].tuple.clone()
    }

    /// Removes and returns the oldest live tuple matching `template` (the `inp` operation).
    ///
    /// Cost: as [`rd`](Space::rd), plus O(1) to unlink it (O(log n) amortised if it had a
    /// lifetime).
    pub fn inp(&mut self, now: Time, template: &Template) -> Option<Tuple> {
        let idx = self.find(now, template)?;
        self.remove_as(idx, DeliveryKind::Inp)
    }

    /// Removes every live tuple matching `template` and returns how many (the `rm` operation).
    /// Listeners of removals hear [`DeliveryKind::Rm`].
    ///
    /// Cost: O(b) with a first-field actual, O(nₐ) with a first-field formal; expired tuples met
    /// are removed too (not counted).
    pub fn rm(&mut self, now: Time, template: &Template) -> usize {
        self.remove_matching(now, template, DeliveryKind::Rm, |_| {})
    }

    /// As [`rm`](Space::rm), returning the removed tuples, oldest first.
    pub fn rm_all(&mut self, now: Time, template: &Template) -> Vec<Tuple> {
        let mut out = Vec::new();
        self.remove_matching(now, template, DeliveryKind::Rm, |t| out.push(t));
        out
    }

    /// Takes every live tuple matching `template`, oldest first, in one step (the bulk `inp`):
    /// no other operation sees a part of them. Listeners of removals hear
    /// [`DeliveryKind::Inp`]. Cost as [`rm`](Space::rm).
    pub fn inp_all(&mut self, now: Time, template: &Template) -> Vec<Tuple> {
        let mut out = Vec::new();
        self.remove_matching(now, template, DeliveryKind::Inp, |t| out.push(t));
        out
    }

    /// Copies of every live tuple matching `template`, oldest first (the bulk `rd`); expired
    /// tuples met are removed. Cost as [`rm`](Space::rm).
    pub fn rd_all(&mut self, now: Time, template: &Template) -> Vec<Tuple> {
        let (mut cur, which) = self.candidates(template);
        let mut out = Vec::new();
        while cur != NIL {
            let slot = &self.slots[cur as usize];
            let next = slot.links[which].next;
            if is_expired(slot.expires, now) {
                self.remove_as(cur, DeliveryKind::Expired);
                self.stats.expired += 1;
            } else if let Some(t) = slot.tuple.as_ref().filter(|t| template.matches(t)) {
                out.push(t.clone());
            }
            cur = next;
        }
        out
    }

    fn remove_matching(
        &mut self,
        now: Time,
        template: &Template,
        kind: DeliveryKind,
        mut keep: impl FnMut(Tuple),
    ) -> usize {
        let (mut cur, which) = self.candidates(template);
        let mut removed = 0;
        while cur != NIL {
            let slot = &self.slots[cur as usize];
            let next = slot.links[which].next;
            let expired = is_expired(slot.expires, now);
            let hit = !expired && slot.tuple.as_ref().is_some_and(|t| template.matches(t));
            if expired {
                self.remove_as(cur, DeliveryKind::Expired);
                self.stats.expired += 1;
            } else if hit {
                if let Some(t) = self.remove_as(cur, kind) {
                    keep(t);
                }
                removed += 1;
            }
            cur = next;
        }
        removed
    }

    /// The live tuple `id` names, `None` once it is gone or expired. O(1).
    pub fn get(&self, now: Time, id: TupleId) -> Option<&Tuple> {
        let slot = self.slots.get(id.slot as usize)?;
        (slot.seq == id.seq && !is_expired(slot.expires, now))
            .then_some(slot.tuple.as_ref())
            .flatten()
    }

    /// Removes the tuple `id` names as an `inp` would ([`DeliveryKind::Inp`]); `None` once it is
    /// gone or expired. O(1) (O(log n) amortised with a lifetime).
    pub fn take(&mut self, now: Time, id: TupleId) -> Option<Tuple> {
        self.get(now, id)?;
        self.remove_as(id.slot, DeliveryKind::Inp)
    }

    /// Cancels the lease of tuple `id`: removes it ([`DeliveryKind::Rm`] for listeners) and
    /// returns it; `None` once it is gone or expired.
    pub fn cancel(&mut self, now: Time, id: TupleId) -> Option<Tuple> {
        self.get(now, id)?;
        self.remove_as(id.slot, DeliveryKind::Rm)
    }

    /// Renews the lease of tuple `id`: it now lives `lifetime` from `now` (`None`: until taken
    /// or evicted), whatever it had before. Returns when it now expires ([`Time::MAX`]: never).
    ///
    /// # Errors
    /// [`SpaceError::Gone`] when the tuple is no longer stored (taken, removed, evicted or
    /// expired); [`SpaceError::ZeroLifetime`] for a lifetime under 1 ms. Nothing changes then.
    pub fn renew(
        &mut self,
        now: Time,
        id: TupleId,
        lifetime: Option<Duration>,
    ) -> Result<Time, SpaceError> {
        if self.get(now, id).is_none() {
            return Err(SpaceError::Gone);
        }
        let expires = match lifetime {
            None => Time::MAX,
            Some(d) if d < Duration::from_millis(1) => {
                return Err(SpaceError::ZeroLifetime { lifetime: d });
            }
            Some(d) => now + d,
        };
        let slot = &mut self.slots[id.slot as usize];
        let before = std::mem::replace(&mut slot.expires, expires);
        // The old heap entry no longer names the slot's expiry: it is dead (see `heap_live`).
        match (before == Time::MAX, expires == Time::MAX) {
            (true, false) => self.timed += 1,
            (false, true) => self.timed -= 1,
            _ => {}
        }
        if expires != Time::MAX {
            self.heap.push(Reverse((expires, id.seq, id.slot)));
        }
        self.settle_heap();
        Ok(expires)
    }

    /// How many live tuples match `template` (the `test` operation counts; a TEST reply needs
    /// only `count(..) > 0` or [`rd`](Space::rd)).
    ///
    /// Cost: O(b) with a first-field actual, O(nₐ) with a first-field formal. Changes nothing.
    pub fn count(&self, now: Time, template: &Template) -> usize {
        let (mut cur, which) = self.candidates(template);
        let mut n = 0;
        while cur != NIL {
            let slot = &self.slots[cur as usize];
            if !is_expired(slot.expires, now)
                && slot.tuple.as_ref().is_some_and(|t| template.matches(t))
            {
                n += 1;
            }
            cur = slot.links[which].next;
        }
        n
    }

    /// The live tuples, oldest first, all arities interleaved in the order they were stored.
    ///
    /// Cost: O(1) per tuple visited (expired ones are skipped, not removed).
    pub fn iter(&self, now: Time) -> impl Iterator<Item = &Tuple> + '_ {
        let mut cur = self.order.head;
        std::iter::from_fn(move || {
            while cur != NIL {
                let slot = &self.slots[cur as usize];
                cur = slot.links[ORDER].next;
                if !is_expired(slot.expires, now) {
                    return slot.tuple.as_ref();
                }
            }
            None
        })
    }

    /// Tuples stored, counting expired ones not yet removed (call [`expire`](Space::expire) first
    /// for the live count). O(1).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no tuple is stored. O(1).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every tuple. Listeners, pending deliveries and [`stats`](Space::stats) stay.
    /// O(n) to drop the tuples; the memory is kept for reuse.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.free = NIL;
        self.len = 0;
        self.order = EMPTY;
        self.sub = [EMPTY; MAX_ARITY];
        self.buckets.clear();
        self.heap.clear();
        self.timed = 0;
    }

    /// Removes the tuples whose lifetime has ended at `now` (a tuple stored at `t` with lifetime
    /// `d` is live while `now < t + d`) and returns how many.
    ///
    /// Cost: O((k + s) log n) for k expired tuples and s heap entries of tuples already taken;
    /// O(1) when nothing has expired. Tuples without a lifetime are never looked at.
    pub fn expire(&mut self, now: Time) -> usize {
        let mut n = 0;
        while let Some(&Reverse((at, seq, idx))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self.heap_live(at, seq, idx) {
                self.remove_as(idx, DeliveryKind::Expired);
                n += 1;
            }
        }
        self.settle_heap();
        self.stats.expired += n as u64;
        n
    }

    /// When the next stored tuple expires, `None` if none has a lifetime. Arm a timer for it and
    /// call [`expire`](Space::expire) then. O(1).
    pub fn next_expiry(&self) -> Option<Time> {
        self.heap.peek().map(|&Reverse((at, _, _))| at)
    }

    /// Registers a listener: every later [`out`](Space::out) or [`notify`](Space::notify) of a
    /// tuple matching `template` queues a [`Delivery`] for it. O(1). As
    /// [`subscribe_to`](Space::subscribe_to) with [`DeliveryKinds::DEFAULT`].
    pub fn subscribe(&mut self, template: Template) -> ListenerId {
        self.subscribe_to(template, DeliveryKinds::DEFAULT)
    }

    /// Registers a listener of the `kinds` of deliveries of tuples matching `template`: stored
    /// outs, notifications, and removals (taken by `inp`, removed by `rm` or [`cancel`](Space::cancel),
    /// expired, evicted). O(1).
    pub fn subscribe_to(&mut self, template: Template, kinds: DeliveryKinds) -> ListenerId {
        let id = ListenerId(self.next_listener);
        self.next_listener += 1;
        if let Some(list) = self.listeners.get_mut(template.arity() - 1) {
            list.push((id, template, kinds));
        }
        id
    }

    /// Removes a listener and drops its pending deliveries; `false` if it was not registered.
    /// O(L + queued deliveries).
    pub fn unsubscribe(&mut self, id: ListenerId) -> bool {
        for list in &mut self.listeners {
            if let Some(pos) = list.iter().position(|(l, _, _)| *l == id) {
                list.remove(pos);
                self.deliveries.retain(|d| d.listener != id);
                return true;
            }
        }
        false
    }

    /// Hands `tuple` to the listeners whose template matches, as [`DeliveryKind::Notify`], without
    /// storing it (the paper's `notify`, spec §9 TUPLE with R=0). Returns how many listeners
    /// matched; each got a delivery, subject to [`SpaceConfig::delivery_queue`]. O(L) template
    /// checks.
    pub fn notify(&mut self, tuple: &Tuple) -> usize {
        self.deliver(tuple, DeliveryKind::Notify)
    }

    /// The oldest pending delivery. Drain it after every call that can queue one (`out`,
    /// `notify`); at most [`SpaceConfig::delivery_queue`] wait, older ones are dropped. O(1).
    #[must_use]
    pub fn poll_delivery(&mut self) -> Option<Delivery> {
        self.deliveries.pop_front()
    }

    /// Deliveries waiting for [`poll_delivery`](Space::poll_delivery). O(1).
    pub fn pending_deliveries(&self) -> usize {
        self.deliveries.len()
    }

    /// The bucket key of a first value: a keyed hash of (arity, kind, value) following spec §3
    /// equality. Buckets are found by this key and every candidate is still checked with
    /// [`Template::matches`], so a hash collision costs a longer walk, never a wrong answer.
    fn key(&self, arity: usize, first: Option<&Value>) -> u64 {
        let mut h = self.hasher.build_hasher();
        let arity = (arity as u8) << 4;
        match first {
            None => h.write_u8(arity),
            Some(Value::Int16(i)) => {
                h.write_u8(arity | 1);
                h.write_i16(*i);
            }
            Some(Value::Float32(f)) => {
                h.write_u8(arity | 2);
                // IEEE equality: -0.0 == +0.0, so both get +0.0's bits. NaN never gets here.
                h.write_u32(if *f == 0.0 { 0 } else { f.to_bits() });
            }
            Some(Value::Str(s)) => {
                h.write_u8(arity | 3);
                h.write(s.as_bytes());
            }
            Some(Value::Bytes(b)) => {
                h.write_u8(arity | 4);
                h.write(b);
            }
        }
        // Never 0: the bucket table's mark of a vacant entry.
        h.finish().max(1)
    }

    /// The list to walk for `template` and which links walk it.
    fn candidates(&self, template: &Template) -> (u32, usize) {
        let arity = template.arity();
        match template.first_actual() {
            Some(v) => {
                let key = self.key(arity, Some(v));
                (self.buckets.get(key).map_or(NIL, |l| l.head), BUCKET)
            }
            None => (self.sub.get(arity - 1).map_or(NIL, |l| l.head), SUB),
        }
    }

    /// The oldest live match, removing expired tuples met on the way.
    fn find(&mut self, now: Time, template: &Template) -> Option<u32> {
        let (mut cur, which) = self.candidates(template);
        while cur != NIL {
            let slot = &self.slots[cur as usize];
            let next = slot.links[which].next;
            if is_expired(slot.expires, now) {
                self.remove_as(cur, DeliveryKind::Expired);
                self.stats.expired += 1;
            } else if slot.tuple.as_ref().is_some_and(|t| template.matches(t)) {
                return Some(cur);
            }
            cur = next;
        }
        None
    }

    fn deliver(&mut self, tuple: &Tuple, kind: DeliveryKind) -> usize {
        let Some(list) = self.listeners.get(tuple.arity() - 1) else {
            return 0;
        };
        let mut n = 0;
        for (listener, template, kinds) in list {
            if !kinds.contains(kind) || !template.matches(tuple) {
                continue;
            }
            n += 1;
            if self.deliveries.len() >= self.config.delivery_queue {
                self.stats.deliveries_dropped += 1;
                if self.deliveries.pop_front().is_none() {
                    continue; // a queue bound of 0
                }
            }
            self.deliveries.push_back(Delivery {
                listener: *listener,
                tuple: tuple.clone(),
                kind,
            });
        }
        n
    }

    fn insert(&mut self, tuple: Tuple, expires: Time) -> TupleId {
        let arity = tuple.arity();
        let key = self.key(arity, tuple.values().first());
        let seq = self.next_seq;
        self.next_seq += 1;
        let idx = if self.free != NIL {
            // Written field by field: building a `Slot` and assigning it would copy the tuple twice.
            let idx = self.free;
            let slot = &mut self.slots[idx as usize];
            self.free = slot.links[ORDER].next;
            slot.tuple = Some(tuple);
            slot.key = key;
            slot.expires = expires;
            slot.seq = seq;
            idx
        } else {
            // `out` keeps len below MAX_SLOTS, so the index fits and is not NIL.
            self.slots.push(Slot {
                tuple: Some(tuple),
                links: [UNLINKED; 3],
                key,
                expires,
                seq,
            });
            (self.slots.len() - 1) as u32
        };
        let bucket = self.buckets.get_or_insert(key);
        push_back(&mut self.slots, bucket, idx, BUCKET);
        push_back(&mut self.slots, &mut self.order, idx, ORDER);
        push_back(&mut self.slots, &mut self.sub[arity - 1], idx, SUB);
        if expires != Time::MAX {
            self.heap.push(Reverse((expires, seq, idx)));
            self.timed += 1;
        }
        self.len += 1;
        TupleId { seq, slot: idx }
    }

    /// [`remove`](Self::remove), then a delivery of `kind` to the listeners of removals.
    fn remove_as(&mut self, idx: u32, kind: DeliveryKind) -> Option<Tuple> {
        let tuple = self.remove(idx)?;
        if !self.listeners[tuple.arity() - 1].is_empty() {
            self.deliver(&tuple, kind);
        }
        Some(tuple)
    }

    /// Unlinks slot `idx` from its lists, frees it and returns its tuple.
    fn remove(&mut self, idx: u32) -> Option<Tuple> {
        let i = idx as usize;
        let tuple = self.slots[i].tuple.take()?;
        let key = self.slots[i].key;
        if let Some(bucket) = self.buckets.get_mut(key) {
            unlink(&mut self.slots, bucket, idx, BUCKET);
            if bucket.head == NIL {
                self.buckets.remove(key);
            }
        }
        unlink(&mut self.slots, &mut self.order, idx, ORDER);
        unlink(&mut self.slots, &mut self.sub[tuple.arity() - 1], idx, SUB);
        self.slots[i].links[ORDER].next = self.free;
        self.free = idx;
        self.len -= 1;
        if self.slots[i].expires != Time::MAX {
            self.timed -= 1;
            self.settle_heap();
        }
        Some(tuple)
    }

    fn is_live(&self, seq: u64, idx: u32) -> bool {
        let slot = &self.slots[idx as usize];
        slot.seq == seq && slot.tuple.is_some()
    }

    /// Whether the heap entry (at, seq, idx) is the live expiry of its tuple (a renewed lease
    /// leaves its old entry dead).
    fn heap_live(&self, at: Time, seq: u64, idx: u32) -> bool {
        self.is_live(seq, idx) && self.slots[idx as usize].expires == at
    }

    /// Restores the heap invariants after a removal: the top is a live tuple, and dead entries are
    /// at most about as many as live ones (so the heap stays O(live timed tuples)).
    fn settle_heap(&mut self) {
        while let Some(&Reverse((at, seq, idx))) = self.heap.peek() {
            if self.heap_live(at, seq, idx) {
                break;
            }
            self.heap.pop();
        }
        if self.heap.len() > 2 * self.timed + 64 {
            let slots = &self.slots;
            self.heap.retain(|&Reverse((at, seq, idx))| {
                let slot = &slots[idx as usize];
                slot.seq == seq && slot.tuple.is_some() && slot.expires == at
            });
        }
    }
}

/// Whether a tuple expiring at `expires` is dead at `now`.
#[inline]
fn is_expired(expires: Time, now: Time) -> bool {
    expires <= now && expires != Time::MAX
}

fn push_back(slots: &mut [Slot], list: &mut List, idx: u32, which: usize) {
    let tail = list.tail;
    slots[idx as usize].links[which] = Links {
        prev: tail,
        next: NIL,
    };
    if tail == NIL {
        list.head = idx;
    } else {
        slots[tail as usize].links[which].next = idx;
    }
    list.tail = idx;
}

fn unlink(slots: &mut [Slot], list: &mut List, idx: u32, which: usize) {
    let Links { prev, next } = slots[idx as usize].links[which];
    if prev == NIL {
        list.head = next;
    } else {
        slots[prev as usize].links[which].next = next;
    }
    if next == NIL {
        list.tail = prev;
    } else {
        slots[next as usize].links[which].prev = prev;
    }
    slots[idx as usize].links[which] = UNLINKED;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuple::Field;
    use crate::value::TypeCode;

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    fn tup(values: impl IntoIterator<Item = Value>) -> Tuple {
        Tuple::new(values).unwrap()
    }

    fn tpl(fields: impl IntoIterator<Item = Field>) -> Template {
        Template::new(fields).unwrap()
    }

    fn act(v: Value) -> Field {
        Field::Actual(v)
    }

    fn at(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    fn space(capacity: usize, policy: CapacityPolicy) -> Space {
        Space::new(SpaceConfig {
            capacity,
            policy,
            ..SpaceConfig::default()
        })
    }

    fn kv(k: &str, v: i16) -> Tuple {
        tup([s(k), Value::Int16(v)])
    }

    fn key_any(k: &str) -> Template {
        tpl([act(s(k)), Field::ANY])
    }

    fn all(space: &Space, now: Time) -> Vec<Tuple> {
        space.iter(now).cloned().collect()
    }

    #[test]
    fn rd_returns_a_copy_and_keeps_the_tuple() {
        let mut sp = Space::default();
        sp.out(Time::ZERO, kv("A", 1), None).unwrap();
        assert_eq!(sp.rd(Time::ZERO, &key_any("A")), Some(kv("A", 1)));
        assert_eq!(sp.rd(Time::ZERO, &key_any("A")), Some(kv("A", 1)));
        assert_eq!(sp.len(), 1);
        assert_eq!(sp.rd(Time::ZERO, &key_any("B")), None);
    }

    #[test]
    fn inp_removes_the_tuple() {
        let mut sp = Space::default();
        sp.out(Time::ZERO, kv("A", 1), None).unwrap();
        assert_eq!(sp.inp(Time::ZERO, &key_any("A")), Some(kv("A", 1)));
        assert_eq!(sp.inp(Time::ZERO, &key_any("A")), None);
        assert!(sp.is_empty());
        assert!(sp.buckets.is_empty(), "empty buckets are dropped");
    }

    #[test]
    fn rd_and_inp_take_the_oldest_match_first() {
        let mut sp = Space::default();
        for v in 0..5 {
            sp.out(Time::ZERO, kv("Q", v), None).unwrap();
            sp.out(Time::ZERO, kv("other", v), None).unwrap();
        }
        let q = key_any("Q");
        assert_eq!(sp.rd(Time::ZERO, &q), Some(kv("Q", 0)));
        for v in 0..5 {
            assert_eq!(sp.inp(Time::ZERO, &q), Some(kv("Q", v)));
        }
        // A formal first field walks the arity's sub-space, also oldest first.
        let any2 = tpl([Field::ANY, Field::ANY]);
        for v in 0..5 {
            assert_eq!(sp.inp(Time::ZERO, &any2), Some(kv("other", v)));
        }
    }

    #[test]
    fn fifo_skips_non_matching_older_tuples_in_a_bucket() {
        let mut sp = Space::default();
        sp.out(Time::ZERO, kv("Q", 1), None).unwrap();
        sp.out(Time::ZERO, tup([s("Q"), s("x")]), None).unwrap();
        sp.out(Time::ZERO, kv("Q", 2), None).unwrap();
        let q_str = tpl([act(s("Q")), Field::Formal(Some(TypeCode::Str))]);
        assert_eq!(sp.inp(Time::ZERO, &q_str), Some(tup([s("Q"), s("x")])));
        assert_eq!(sp.inp(Time::ZERO, &key_any("Q")), Some(kv("Q", 1)));
        assert_eq!(sp.inp(Time::ZERO, &key_any("Q")), Some(kv("Q", 2)));
    }

    #[test]
    fn rm_removes_every_match_and_counts_them() {
        let mut sp = Space::default();
        for v in 0..4 {
            sp.out(Time::ZERO, kv("R", v), None).unwrap();
        }
        sp.out(Time::ZERO, kv("S", 0), None).unwrap();
        sp.out(Time::ZERO, tup([s("R")]), None).unwrap();
        assert_eq!(sp.rm(Time::ZERO, &key_any("R")), 4);
        assert_eq!(sp.rm(Time::ZERO, &key_any("R")), 0);
        assert_eq!(all(&sp, Time::ZERO), vec![kv("S", 0), tup([s("R")])]);
        assert_eq!(sp.rm(Time::ZERO, &tpl([Field::ANY, Field::ANY])), 1);
        assert_eq!(sp.len(), 1);
    }

    #[test]
    fn count_is_the_test_operation() {
        let mut sp = Space::default();
        let c = tpl([act(s("C")), Field::Formal(Some(TypeCode::Int16))]);
        assert_eq!(sp.count(Time::ZERO, &c), 0);
        sp.out(Time::ZERO, kv("C", 1), None).unwrap();
        sp.out(Time::ZERO, kv("C", 2), ms(5)).unwrap();
        sp.out(Time::ZERO, tup([s("C"), Value::Float32(1.0)]), None)
            .unwrap();
        assert_eq!(sp.count(Time::ZERO, &c), 2);
        assert_eq!(sp.count(at(5), &c), 1, "expired tuples are not counted");
        assert_eq!(sp.len(), 3, "count changes nothing");
    }

    #[test]
    fn iter_is_insertion_order_across_arities_and_skips_expired() {
        let mut sp = Space::default();
        sp.out(Time::ZERO, tup([Value::Int16(1)]), None).unwrap();
        sp.out(Time::ZERO, kv("two", 2), ms(10)).unwrap();
        sp.out(Time::ZERO, tup([s("3"), s("3"), s("3")]), None)
            .unwrap();
        sp.inp(Time::ZERO, &tpl([Field::ANY])).unwrap();
        sp.out(Time::ZERO, tup([Value::Int16(4)]), None).unwrap();
        assert_eq!(
            all(&sp, at(9)),
            vec![
                kv("two", 2),
                tup([s("3"), s("3"), s("3")]),
                tup([Value::Int16(4)])
            ]
        );
        assert_eq!(
            all(&sp, at(10)),
            vec![tup([s("3"), s("3"), s("3")]), tup([Value::Int16(4)])]
        );
    }

    #[test]
    fn templates_match_only_their_arity() {
        let mut sp = Space::default();
        sp.out(Time::ZERO, tup([s("A")]), None).unwrap();
        sp.out(Time::ZERO, tup([s("A"), s("A"), s("A")]), None)
            .unwrap();
        assert_eq!(sp.rd(Time::ZERO, &key_any("A")), None);
        assert_eq!(sp.count(Time::ZERO, &tpl([Field::ANY, Field::ANY])), 0);
        assert_eq!(sp.rd(Time::ZERO, &tpl([act(s("A"))])), Some(tup([s("A")])));
    }

    #[test]
    fn clear_removes_tuples_but_keeps_listeners() {
        let mut sp = Space::default();
        let id = sp.subscribe(key_any("A"));
        sp.out(Time::ZERO, kv("A", 1), ms(10)).unwrap();
        sp.clear();
        assert!(sp.is_empty());
        assert_eq!(sp.next_expiry(), None);
        assert_eq!(sp.rd(Time::ZERO, &key_any("A")), None);
        sp.out(Time::ZERO, kv("A", 2), None).unwrap();
        assert_eq!(sp.rd(Time::ZERO, &key_any("A")), Some(kv("A", 2)));
        let listeners: Vec<_> = std::iter::from_fn(|| sp.poll_delivery())
            .map(|d| d.listener)
            .collect();
        assert_eq!(listeners, vec![id, id]);
    }

    #[test]
    fn default_lifetime_applies_when_out_has_none() {
        let mut sp = Space::new(SpaceConfig {
            default_lifetime: ms(100),
            ..SpaceConfig::default()
        });
        sp.out(at(50), kv("D", 1), None).unwrap();
        assert_eq!(sp.next_expiry(), Some(at(150)));
        assert!(sp.rd(at(149), &key_any("D")).is_some());
        assert!(sp.rd(at(150), &key_any("D")).is_none());
    }

    #[test]
    fn per_out_lifetime_overrides_the_default() {
        let mut sp = Space::new(SpaceConfig {
            default_lifetime: ms(100),
            ..SpaceConfig::default()
        });
        sp.out(Time::ZERO, kv("L", 1), ms(1000)).unwrap();
        assert_eq!(sp.next_expiry(), Some(at(1000)));
        assert_eq!(sp.expire(at(500)), 0);
        assert_eq!(sp.len(), 1);
    }

    #[test]
    fn reads_skip_expired_tuples_without_expire() {
        let mut sp = Space::default();
        sp.out(Time::ZERO, kv("E", 1), ms(10)).unwrap();
        sp.out(Time::ZERO, kv("E", 2), ms(20)).unwrap();
        sp.out(Time::ZERO, kv("E", 3), None).unwrap();
        let now = at(10);
        assert_eq!(sp.count(now, &key_any("E")), 2);
        assert_eq!(sp.rd(now, &key_any("E")), Some(kv("E", 2)));
        assert_eq!(sp.rd(now, &tpl([Field::ANY, Field::ANY])), Some(kv("E", 2)));
        assert_eq!(sp.inp(at(20), &key_any("E")), Some(kv("E", 3)));
        assert!(sp.is_empty(), "reads removed the expired tuples they met");
        assert_eq!(sp.stats().expired, 2);
        assert_eq!(sp.next_expiry(), None);
    }

    #[test]
    fn expire_removes_due_tuples_and_next_expiry_follows() {
        let mut sp = Space::default();
        assert_eq!(sp.next_expiry(), None);
        sp.out(Time::ZERO, kv("X", 3), ms(30)).unwrap();
        sp.out(Time::ZERO, kv("X", 1), ms(10)).unwrap();
        sp.out(Time::ZERO, kv("X", 2), ms(20)).unwrap();
        sp.out(Time::ZERO, kv("X", 0), None).unwrap();
        assert_eq!(sp.next_expiry(), Some(at(10)));
        assert_eq!(sp.expire(at(9)), 0);
        assert_eq!(sp.expire(at(20)), 2);
        assert_eq!(sp.next_expiry(), Some(at(30)));
        assert_eq!(all(&sp, at(20)), vec![kv("X", 3), kv("X", 0)]);
        assert_eq!(sp.expire(Time::MAX), 1);
        assert_eq!(sp.next_expiry(), None);
        assert_eq!(
            all(&sp, Time::MAX),
            vec![kv("X", 0)],
            "no lifetime, never expires"
        );
    }

    #[test]
    fn next_expiry_forgets_tuples_taken_before_they_expire() {
        let mut sp = Space::default();
        sp.out(Time::ZERO, kv("A", 1), ms(10)).unwrap();
        sp.out(Time::ZERO, kv("B", 1), ms(20)).unwrap();
        sp.inp(Time::ZERO, &key_any("A")).unwrap();
        assert_eq!(sp.next_expiry(), Some(at(20)));
        sp.rm(Time::ZERO, &key_any("B"));
        assert_eq!(sp.next_expiry(), None);
    }

    #[test]
    fn expiry_heap_stays_bounded_when_timed_tuples_are_taken() {
        let mut sp = Space::default();
        sp.out(Time::ZERO, kv("keep", 0), Some(Duration::from_secs(3600)))
            .unwrap();
        for i in 0..10_000 {
            sp.out(
                Time::ZERO,
                kv("K", i as i16),
                Some(Duration::from_secs(3600)),
            )
            .unwrap();
            sp.inp(Time::ZERO, &key_any("K")).unwrap();
        }
        assert!(
            sp.heap.len() <= 2 * sp.timed + 64,
            "heap has {}",
            sp.heap.len()
        );
        assert!(
            sp.slots.len() <= 2,
            "slots are reused, got {}",
            sp.slots.len()
        );
        assert_eq!(sp.next_expiry(), Some(at(3_600_000)));
    }

    #[test]
    fn zero_lifetime_is_refused() {
        let mut sp = Space::default();
        let e = sp
            .out(Time::ZERO, kv("Z", 0), Some(Duration::ZERO))
            .unwrap_err();
        assert_eq!(
            e,
            SpaceError::ZeroLifetime {
                lifetime: Duration::ZERO
            }
        );
        assert!(e.to_string().contains("at least 1 ms"), "{e}");
        let sub_ms = Duration::from_micros(999);
        assert!(sp.out(Time::ZERO, kv("Z", 0), Some(sub_ms)).is_err());
        let mut sp = Space::new(SpaceConfig {
            default_lifetime: Some(Duration::ZERO),
            ..SpaceConfig::default()
        });
        assert!(sp.out(Time::ZERO, kv("Z", 0), None).is_err());
        assert!(sp.out(Time::ZERO, kv("Z", 0), ms(1)).is_ok());
        assert_eq!(sp.len(), 1);
    }

    #[test]
    fn refuse_policy_fails_when_full_and_names_the_capacity() {
        let mut sp = space(2, CapacityPolicy::Refuse);
        sp.out(Time::ZERO, kv("F", 1), None).unwrap();
        sp.out(Time::ZERO, kv("F", 2), None).unwrap();
        let e = sp.out(Time::ZERO, kv("F", 3), None).unwrap_err();
        assert_eq!(e, SpaceError::Full { capacity: 2 });
        assert!(e.to_string().contains("capacity of 2 tuples"), "{e}");
        assert_eq!(all(&sp, Time::ZERO), vec![kv("F", 1), kv("F", 2)]);
        assert_eq!(sp.stats().refused, 1);
        sp.inp(Time::ZERO, &key_any("F")).unwrap();
        assert!(sp.out(Time::ZERO, kv("F", 3), None).is_ok());
    }

    #[test]
    fn full_space_removes_expired_tuples_before_refusing() {
        let mut sp = space(2, CapacityPolicy::Refuse);
        sp.out(Time::ZERO, kv("F", 1), ms(5)).unwrap();
        sp.out(Time::ZERO, kv("F", 2), None).unwrap();
        assert!(sp.out(at(4), kv("F", 3), None).is_err());
        let report = sp.out(at(5), kv("F", 3), None).unwrap();
        assert_eq!((report.expired, report.evicted), (1, None));
        assert_eq!(all(&sp, at(5)), vec![kv("F", 2), kv("F", 3)]);
    }

    #[test]
    fn evict_oldest_makes_room_and_reports_the_evicted_tuple() {
        let mut sp = space(2, CapacityPolicy::EvictOldest);
        sp.out(Time::ZERO, kv("A", 1), None).unwrap();
        sp.out(Time::ZERO, tup([Value::Int16(2)]), ms(50)).unwrap();
        let r = sp.out(Time::ZERO, kv("C", 3), None).unwrap();
        assert_eq!(r.evicted, Some(kv("A", 1)));
        let r = sp.out(Time::ZERO, kv("D", 4), None).unwrap();
        assert_eq!(r.evicted, Some(tup([Value::Int16(2)])));
        assert_eq!(sp.next_expiry(), None, "the evicted tuple left the heap");
        assert_eq!(all(&sp, Time::ZERO), vec![kv("C", 3), kv("D", 4)]);
        assert_eq!(sp.rd(Time::ZERO, &key_any("A")), None);
        assert_eq!(sp.stats().evicted, 2);
    }

    #[test]
    fn capacity_zero_refuses_under_every_policy() {
        for policy in [CapacityPolicy::Refuse, CapacityPolicy::EvictOldest] {
            let mut sp = space(0, policy);
            assert_eq!(
                sp.out(Time::ZERO, kv("A", 1), None),
                Err(SpaceError::Full { capacity: 0 })
            );
        }
    }

    #[test]
    fn negative_and_positive_zero_share_a_bucket() {
        let mut sp = Space::default();
        assert_eq!(
            sp.key(1, Some(&Value::Float32(-0.0))),
            sp.key(1, Some(&Value::Float32(0.0)))
        );
        sp.out(
            Time::ZERO,
            tup([Value::Float32(-0.0), Value::Int16(1)]),
            None,
        )
        .unwrap();
        let pos = tpl([act(Value::Float32(0.0)), Field::ANY]);
        assert_eq!(sp.count(Time::ZERO, &pos), 1);
        let got = sp.inp(Time::ZERO, &pos).unwrap();
        assert!(got.values()[0].as_f32().unwrap().is_sign_negative());
        sp.out(
            Time::ZERO,
            tup([Value::Float32(0.0), Value::Int16(1)]),
            None,
        )
        .unwrap();
        let neg = tpl([act(Value::Float32(-0.0)), Field::ANY]);
        assert!(sp.rd(Time::ZERO, &neg).is_some());
    }

    #[test]
    fn str_and_bytes_with_equal_bytes_are_different_keys() {
        let mut sp = Space::default();
        let (st, by) = (s("AB"), Value::Bytes(b"AB".to_vec()));
        assert_ne!(sp.key(1, Some(&st)), sp.key(1, Some(&by)));
        sp.out(Time::ZERO, tup([by.clone()]), None).unwrap();
        assert_eq!(sp.rd(Time::ZERO, &tpl([act(st.clone())])), None);
        sp.out(Time::ZERO, tup([st.clone()]), None).unwrap();
        assert_eq!(sp.inp(Time::ZERO, &tpl([act(st)])), Some(tup([s("AB")])));
        assert_eq!(sp.inp(Time::ZERO, &tpl([act(by.clone())])), Some(tup([by])));
    }

    #[test]
    fn int16_and_float32_first_values_do_not_match() {
        let mut sp = Space::default();
        sp.out(Time::ZERO, tup([Value::Int16(5)]), None).unwrap();
        assert_eq!(sp.rd(Time::ZERO, &tpl([act(Value::Float32(5.0))])), None);
        assert!(sp.rd(Time::ZERO, &tpl([act(Value::Int16(5))])).is_some());
    }

    #[test]
    fn formal_first_template_scans_its_arity() {
        let mut sp = Space::default();
        sp.out(Time::ZERO, tup([s("a"), Value::Int16(1)]), None)
            .unwrap();
        sp.out(Time::ZERO, tup([Value::Int16(7), Value::Int16(2)]), None)
            .unwrap();
        sp.out(Time::ZERO, tup([Value::Int16(7)]), None).unwrap();
        let typed = tpl([Field::Formal(Some(TypeCode::Int16)), Field::ANY]);
        assert_eq!(
            sp.rd(Time::ZERO, &typed),
            Some(tup([Value::Int16(7), Value::Int16(2)]))
        );
        let second = tpl([Field::ANY, act(Value::Int16(1))]);
        assert_eq!(
            sp.inp(Time::ZERO, &second),
            Some(tup([s("a"), Value::Int16(1)]))
        );
        assert_eq!(sp.count(Time::ZERO, &tpl([Field::ANY, Field::ANY])), 1);
        assert_eq!(sp.count(Time::ZERO, &tpl([Field::ANY])), 1);
    }

    #[test]
    fn listeners_get_matching_outs() {
        let mut sp = Space::default();
        let a = sp.subscribe(key_any("A"));
        let any = sp.subscribe(tpl([Field::ANY, Field::ANY]));
        let r = sp.out(Time::ZERO, kv("A", 1), None).unwrap();
        assert_eq!(r.delivered, 2);
        sp.out(Time::ZERO, kv("B", 2), None).unwrap();
        sp.out(Time::ZERO, tup([s("A")]), None).unwrap();
        let got: Vec<_> = std::iter::from_fn(|| sp.poll_delivery()).collect();
        let want = [(a, kv("A", 1)), (any, kv("A", 1)), (any, kv("B", 2))];
        assert_eq!(got.len(), want.len());
        for (d, (id, t)) in got.iter().zip(want) {
            assert_eq!((d.listener, &d.tuple, d.kind), (id, &t, DeliveryKind::Out));
        }
        assert_eq!(sp.len(), 3, "out still stores");
    }

    #[test]
    fn notify_delivers_without_storing() {
        let mut sp = Space::default();
        let id = sp.subscribe(key_any("N"));
        assert_eq!(sp.notify(&kv("N", 1)), 1);
        assert_eq!(sp.notify(&kv("M", 1)), 0);
        assert_eq!(
            sp.poll_delivery(),
            Some(Delivery {
                listener: id,
                tuple: kv("N", 1),
                kind: DeliveryKind::Notify
            })
        );
        assert_eq!(sp.poll_delivery(), None);
        assert!(sp.is_empty());
        assert_eq!(sp.rd(Time::ZERO, &key_any("N")), None);
    }

    #[test]
    fn unsubscribe_stops_deliveries_and_drops_pending_ones() {
        let mut sp = Space::default();
        let a = sp.subscribe(key_any("U"));
        let b = sp.subscribe(key_any("U"));
        sp.notify(&kv("U", 1));
        assert_eq!(sp.pending_deliveries(), 2);
        assert!(sp.unsubscribe(a));
        assert!(!sp.unsubscribe(a));
        assert_eq!(sp.pending_deliveries(), 1);
        sp.out(Time::ZERO, kv("U", 2), None).unwrap();
        let got: Vec<_> = std::iter::from_fn(|| sp.poll_delivery())
            .map(|d| d.listener)
            .collect();
        assert_eq!(got, vec![b, b]);
        assert!(sp.unsubscribe(b));
        assert_eq!(sp.notify(&kv("U", 3)), 0);
        let c = sp.subscribe(key_any("U"));
        assert!(c != a && c != b, "ids are not reused");
    }

    #[test]
    fn delivery_queue_drops_the_oldest_when_full() {
        let mut sp = Space::new(SpaceConfig {
            delivery_queue: 3,
            ..SpaceConfig::default()
        });
        sp.subscribe(tpl([Field::ANY]));
        for i in 0..5 {
            sp.notify(&tup([Value::Int16(i)]));
        }
        assert_eq!(sp.pending_deliveries(), 3);
        assert_eq!(sp.stats().deliveries_dropped, 2);
        let got: Vec<_> = std::iter::from_fn(|| sp.poll_delivery())
            .map(|d| d.tuple)
            .collect();
        assert_eq!(
            got,
            (2..5).map(|i| tup([Value::Int16(i)])).collect::<Vec<_>>()
        );
    }

    #[test]
    fn delivery_queue_of_zero_drops_everything() {
        let mut sp = Space::new(SpaceConfig {
            delivery_queue: 0,
            ..SpaceConfig::default()
        });
        sp.subscribe(tpl([Field::ANY]));
        assert_eq!(sp.notify(&tup([Value::Int16(1)])), 1);
        assert_eq!(sp.poll_delivery(), None);
        assert_eq!(sp.stats().deliveries_dropped, 1);
    }

    #[test]
    fn space_can_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Space>();
        send_sync::<SpaceError>();
    }

    #[test]
    fn stats_count_stored_tuples() {
        let mut sp = Space::default();
        for i in 0..3 {
            sp.out(Time::ZERO, tup([Value::Int16(i)]), None).unwrap();
        }
        assert_eq!(sp.stats().stored, 3);
        assert!(format!("{sp:?}").contains("len: 3"));
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            Out(Tuple, Option<u64>),
            Rd(Template),
            Inp(Template),
            Rm(Template),
            Count(Template),
            Notify(Tuple),
            Expire,
            Advance(u64),
        }

        fn value() -> impl Strategy<Value = Value> {
            prop_oneof![
                (0i16..3).prop_map(Value::Int16),
                prop::sample::select(vec![0.0f32, -0.0, 1.5]).prop_map(Value::Float32),
                prop::sample::select(vec!["a", "b"]).prop_map(|x| Value::Str(x.into())),
                prop::sample::select(vec!["a", "b"]).prop_map(|x| Value::Bytes(x.into())),
            ]
        }

        fn tuple() -> impl Strategy<Value = Tuple> {
            prop::collection::vec(value(), 1..=3).prop_map(|v| Tuple::new(v).unwrap())
        }

        fn template() -> impl Strategy<Value = Template> {
            let field = prop_oneof![
                3 => value().prop_map(Field::Actual),
                1 => Just(Field::ANY),
                1 => prop::sample::select(vec![TypeCode::Int16, TypeCode::Float32, TypeCode::Str])
                    .prop_map(|c| Field::Formal(Some(c))),
            ];
            prop::collection::vec(field, 1..=3).prop_map(|f| Template::new(f).unwrap())
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                5 => (tuple(), prop::option::of(1u64..50)).prop_map(|(t, l)| Op::Out(t, l)),
                2 => template().prop_map(Op::Rd),
                2 => template().prop_map(Op::Inp),
                1 => template().prop_map(Op::Rm),
                1 => template().prop_map(Op::Count),
                1 => tuple().prop_map(Op::Notify),
                1 => Just(Op::Expire),
                2 => (0u64..30).prop_map(Op::Advance),
            ]
        }

        /// The naive reference: a Vec in insertion order, scanned in full.
        struct Model {
            entries: Vec<(Tuple, Time)>,
        }

        impl Model {
            fn live(&self, now: Time) -> impl Iterator<Item = (usize, &Tuple)> {
                self.entries
                    .iter()
                    .enumerate()
                    .filter(move |(_, (_, e))| !is_expired(*e, now))
                    .map(|(i, (t, _))| (i, t))
            }
            fn first(&self, now: Time, p: &Template) -> Option<usize> {
                self.live(now).find(|(_, t)| p.matches(t)).map(|(i, _)| i)
            }
            fn purge(&mut self, now: Time) {
                self.entries.retain(|(_, e)| !is_expired(*e, now));
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            #[test]
            fn space_agrees_with_a_naive_model(
                capacity in 0usize..8,
                evict in any::<bool>(),
                default_lifetime in prop::option::of(1u64..40),
                listen in prop::collection::vec(template(), 0..3),
                ops in prop::collection::vec(op(), 1..80),
            ) {
                let policy = if evict { CapacityPolicy::EvictOldest } else { CapacityPolicy::Refuse };
                let mut sp = Space::new(SpaceConfig {
                    capacity,
                    policy,
                    default_lifetime: default_lifetime.map(Duration::from_millis),
                    ..SpaceConfig::default()
                });
                let ids: Vec<_> = listen.iter().map(|p| sp.subscribe(p.clone())).collect();
                let mut model = Model { entries: Vec::new() };
                let mut now = Time::from_millis(1000);
                for op in ops {
                    let mut expect_deliveries = Vec::new();
                    match op {
                        Op::Out(t, l) => {
                            let life = l.or(default_lifetime);
                            let exp = life.map_or(Time::MAX, |l| now + Duration::from_millis(l));
                            let got = sp.out(now, t.clone(), l.map(Duration::from_millis));
                            if model.entries.len() >= capacity {
                                model.purge(now);
                            }
                            if model.entries.len() >= capacity && (!evict || capacity == 0) {
                                prop_assert_eq!(got, Err(SpaceError::Full { capacity }));
                            } else {
                                let evicted = (model.entries.len() >= capacity)
                                    .then(|| model.entries.remove(0).0);
                                let report = got.unwrap();
                                prop_assert_eq!(report.evicted, evicted);
                                model.entries.push((t.clone(), exp));
                                for (id, p) in ids.iter().zip(&listen) {
                                    if p.matches(&t) {
                                        expect_deliveries.push((*id, t.clone(), DeliveryKind::Out));
                                    }
                                }
                            }
                        }
                        Op::Rd(p) => {
                            let want = model.first(now, &p).map(|i| model.entries[i].0.clone());
                            prop_assert_eq!(sp.rd(now, &p), want);
                        }
                        Op::Inp(p) => {
                            let want = model.first(now, &p).map(|i| model.entries.remove(i).0);
                            prop_assert_eq!(sp.inp(now, &p), want);
                        }
                        Op::Rm(p) => {
                            let before = model.live(now).count();
                            model.entries.retain(|(t, e)| is_expired(*e, now) || !p.matches(t));
                            let want = before - model.live(now).count();
                            prop_assert_eq!(sp.rm(now, &p), want);
                        }
                        Op::Count(p) => {
                            let want = model.live(now).filter(|(_, t)| p.matches(t)).count();
                            prop_assert_eq!(sp.count(now, &p), want);
                        }
                        Op::Notify(t) => {
                            for (id, p) in ids.iter().zip(&listen) {
                                if p.matches(&t) {
                                    expect_deliveries.push((*id, t.clone(), DeliveryKind::Notify));
                                }
                            }
                            prop_assert_eq!(sp.notify(&t), expect_deliveries.len());
                        }
                        Op::Expire => {
                            sp.expire(now);
                            model.purge(now);
                            prop_assert_eq!(sp.len(), model.entries.len());
                            let want = model.entries.iter().map(|e| e.1).filter(|e| *e != Time::MAX).min();
                            prop_assert_eq!(sp.next_expiry(), want);
                        }
                        Op::Advance(d) => now = now + Duration::from_millis(d),
                    }
                    let got: Vec<_> = std::iter::from_fn(|| sp.poll_delivery())
                        .map(|d| (d.listener, d.tuple, d.kind))
                        .collect();
                    prop_assert_eq!(got, expect_deliveries);
                    let want: Vec<Tuple> = model.live(now).map(|(_, t)| t.clone()).collect();
                    let have: Vec<Tuple> = sp.iter(now).cloned().collect();
                    prop_assert_eq!(have, want);
                    prop_assert!(sp.len() <= capacity);
                    if let Some(at) = sp.next_expiry() {
                        prop_assert!(sp.slots.iter().any(|s| s.tuple.is_some() && s.expires == at));
                    }
                }
            }
        }
    }
}
