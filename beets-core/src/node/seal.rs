//! Sealed spaces in the engine (spec §12): what [`NodeConfig::with_seal`] sets up and how the
//! node seals what it sends and opens what it receives.
//!
//! A sealed space has one key K and, per node, a source id. Everything the node sends is sealed
//! with the next counter of its (K, transport, source id) stream; everything it receives must
//! pass §12's receiving steps, each failure dropped and counted under its reason
//! ([`SealedDrops`]). The replay window replaces the §8 duplicate cache for sealed messages (its
//! keys are authenticated; the cache's are not).
//!
//! **I/O inside the engine.** Counter reservations (every 1024 counters) and replay-window saves
//! (on [`Node::save_seal_state`] and every [`SealConfig::save_every`]) go through the
//! [`CounterStore`]; with a [`FileCounterStore`](crate::sealed::FileCounterStore) that is a small
//! file write and an fsync, done inline. That is the one place the engine does I/O: a counter
//! must be durable before it is used.
//!
//! [`NodeConfig::with_seal`]: crate::NodeConfig::with_seal
//! [`Node::save_seal_state`]: crate::Node::save_seal_state

use std::fmt;
use std::num::NonZeroU16;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::message::Message;
use crate::node::Transport;
use crate::sealed::{
    CounterStore, CounterStream, KeyId, OpenError, Opened, ReplayWindow, SealKey, Sealer,
    SealerError, StoreError, WindowEntry,
};
use crate::time::Time;

/// Default [`SealConfig::save_every`]: the replay window is persisted every 60 s.
pub const DEFAULT_WINDOW_SAVE: Duration = Duration::from_secs(60);

/// A counter store shared by the nodes of one [`SealConfig`] (a BLE and a UDP node of one device
/// share K and the source id; their counter streams differ by transport).
#[derive(Clone)]
pub(crate) struct SharedStore(Arc<Mutex<dyn CounterStore + Send>>);

impl SharedStore {
    fn with<R>(&self, f: impl FnOnce(&mut dyn CounterStore) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-call; the store's own
        // write-then-rename keeps its files whole, so go on with it.
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut *g)
    }
}

impl CounterStore for SharedStore {
    fn load_bound(&mut self, stream: &CounterStream) -> Result<Option<u64>, StoreError> {
        self.with(|s| s.load_bound(stream))
    }
    fn save_bound(&mut self, stream: &CounterStream, bound: u64) -> Result<(), StoreError> {
        self.with(|s| s.save_bound(stream, bound))
    }
    fn load_window(&mut self, key_id: KeyId) -> Result<Vec<WindowEntry>, StoreError> {
        self.with(|s| s.load_window(key_id))
    }
    fn save_window(&mut self, key_id: KeyId, entries: &[WindowEntry]) -> Result<(), StoreError> {
        self.with(|s| s.save_window(key_id, entries))
    }
}

/// How a node seals its space (spec §12): the key, this node's source id, where counters and
/// the replay window persist. Clones share the store and the replay window, so a device's BLE
/// and UDP nodes built from one `SealConfig` keep one window and never reuse a counter.
///
/// ```
/// use std::num::NonZeroU16;
/// use beets_core::node::SealConfig;
/// use beets_core::sealed::{MemoryCounterStore, SealKey};
/// use beets_core::{NodeConfig, Transport};
/// let key = SealKey::from_hex("000102030405060708090a0b0c0d0e0f")?;
/// // A real node uses FileCounterStore::open(state_dir): counters must survive restarts.
/// let seal = SealConfig::new(key, NonZeroU16::new(0x0102).unwrap(), MemoryCounterStore::default());
/// let config = NodeConfig::new(Transport::Udp, "door")?.with_seal(seal);
/// assert!(config.seal.is_some() && config.key.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SealConfig {
    key: SealKey,
    source_id: NonZeroU16,
    store: SharedStore,
    window: Arc<Mutex<Option<ReplayWindow>>>,
    /// Sources the replay window remembers (spec §12 S, default 4096); the least recently
    /// updated goes first.
    pub window_sources: usize,
    /// How often the replay window is persisted besides [`Node::save_seal_state`] (default 60 s).
    /// A receiver that loses its window accepts replays of messages captured before, in
    /// increasing counter order, until the sources' own traffic moves past them (spec §12).
    ///
    /// [`Node::save_seal_state`]: crate::Node::save_seal_state
    pub save_every: Duration,
}

impl fmt::Debug for SealConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealConfig")
            .field("key", &self.key)
            .field("source_id", &self.source_id)
            .field("window_sources", &self.window_sources)
            .finish_non_exhaustive()
    }
}

impl SealConfig {
    /// A sealed space with key `key`, this node's `source_id` (unique among all nodes sealing
    /// with K, on any transport: assign it like a Mesh unicast address) and the store its
    /// counters and replay window persist in.
    pub fn new(
        key: SealKey,
        source_id: NonZeroU16,
        store: impl CounterStore + Send + 'static,
    ) -> SealConfig {
        SealConfig {
            key,
            source_id,
            store: SharedStore(Arc::new(Mutex::new(store))),
            window: Arc::new(Mutex::new(None)),
            window_sources: crate::sealed::DEFAULT_WINDOW_SOURCES,
            save_every: DEFAULT_WINDOW_SAVE,
        }
    }

    /// The key.
    pub fn key(&self) -> &SealKey {
        &self.key
    }

    /// This node's source id.
    pub fn source_id(&self) -> NonZeroU16 {
        self.source_id
    }
}

/// Sealed messages dropped, by the reason of spec §12 "Receiving" (and the two filters of §12
/// "Key"). Counted by the receiving node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SealedDrops {
    /// Step 1: fewer than 7 + 2 + M bytes.
    pub too_short: u64,
    /// Step 1: more than the transport carries.
    pub too_long: u64,
    /// Step 1: op code 0.
    pub bad_op: u64,
    /// Step 1: E = 1.
    pub e_set: u64,
    /// Step 1: R or L on an op that does not allow it.
    pub flag_not_allowed: u64,
    /// Step 2: the MIC did not verify (forged, damaged, another key or transport).
    pub bad_mic: u64,
    /// Step 2: source id 0.
    pub bad_source_id: u64,
    /// Step 3: a counter already in the window (repeats and replays inside it).
    pub duplicate: u64,
    /// Step 3: a counter below the window.
    pub replay: u64,
    /// Step 4: the decrypted body is not a valid version-1 body.
    pub parse: u64,
    /// A version-1 message (plain or FPE) in a sealed space.
    pub not_sealed: u64,
    /// A sealed message in a space without K.
    pub sealed_no_key: u64,
}

impl SealedDrops {
    /// Counts `e` under its reason.
    pub(crate) fn count(&mut self, e: &OpenError) {
        let c = match e {
            OpenError::TooShort { .. } | OpenError::BufferTooSmall { .. } => &mut self.too_short,
            OpenError::TooLong { .. } => &mut self.too_long,
            OpenError::BadOp { .. } => &mut self.bad_op,
            OpenError::ESet { .. } => &mut self.e_set,
            OpenError::FlagNotAllowed { .. } => &mut self.flag_not_allowed,
            OpenError::BadMic => &mut self.bad_mic,
            OpenError::BadSourceId => &mut self.bad_source_id,
            OpenError::Duplicate { .. } => &mut self.duplicate,
            OpenError::Replay { .. } => &mut self.replay,
            OpenError::Parse(_) => &mut self.parse,
            OpenError::NotSealed | OpenError::UnknownVersion { .. } => &mut self.not_sealed,
        };
        *c += 1;
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.too_short
            + self.too_long
            + self.bad_op
            + self.e_set
            + self.flag_not_allowed
            + self.bad_mic
            + self.bad_source_id
            + self.duplicate
            + self.replay
            + self.parse
            + self.not_sealed
            + self.sealed_no_key
    }
}

/// The sealer of a node, shared with its datagram encoders (a UDP `out` seals in the caller's
/// task): `Err` when the counter bound could not be read at start (every send fails with it).
pub(crate) type SharedSealer = Arc<Mutex<Result<Sealer<SharedStore>, StoreError>>>;

/// Seals `msg` with `sealer`'s next counter into `out`; the sealed length.
pub(crate) fn seal_shared(
    sealer: &SharedSealer,
    msg: &Message,
    out: &mut [u8],
) -> Result<usize, SealerError> {
    let mut g = sealer.lock().unwrap_or_else(|p| p.into_inner());
    match &mut *g {
        Ok(s) => Ok(s.seal_message(msg, out)?.len),
        Err(e) => Err(SealerError::Counter(clone_store_error(e).into())),
    }
}

/// A node's sealing state.
pub(crate) struct SealState {
    config: SealConfig,
    sealer: SharedSealer,
    next_save: Time,
}

impl fmt::Debug for SealState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealState")
            .field("config", &self.config)
            .field(
                "sealer_ok",
                &self.sealer.lock().map(|s| s.is_ok()).unwrap_or(false),
            )
            .finish_non_exhaustive()
    }
}

impl SealState {
    pub(crate) fn new(config: SealConfig, transport: Transport, now: Time) -> SealState {
        let sealer = Sealer::new(
            config.key.clone(),
            transport,
            config.source_id,
            config.store.clone(),
        );
        {
            let mut w = config.window.lock().unwrap_or_else(|p| p.into_inner());
            if w.is_none() {
                let mut store = config.store.clone();
                // An unreadable window starts empty (replays of old messages are then accepted
                // until the sources move on, spec §12); the counters are what must not fail.
                *w = Some(
                    ReplayWindow::load(&mut store, config.key.id(), config.window_sources)
                        .unwrap_or_else(|_| ReplayWindow::new(config.window_sources)),
                );
            }
        }
        SealState {
            next_save: now + config.save_every,
            config,
            sealer: Arc::new(Mutex::new(sealer)),
        }
    }

    pub(crate) fn key(&self) -> &SealKey {
        &self.config.key
    }

    /// Seals `msg` (with the next counter) into `out` and returns the sealed length; allocates
    /// nothing (a [`MAX_MESSAGE_LEN`](crate::udp::MAX_MESSAGE_LEN)-byte `out` holds any).
    pub(crate) fn seal_into(
        &mut self,
        msg: &Message,
        out: &mut [u8],
    ) -> Result<usize, SealerError> {
        seal_shared(&self.sealer, msg, out)
    }

    /// The sealer, for the node's datagram encoders.
    #[cfg(feature = "tokio")]
    pub(crate) fn sealer(&self) -> SharedSealer {
        Arc::clone(&self.sealer)
    }

    /// Spec §12 receiving steps 1–4, in order, for a whole message.
    pub(crate) fn receive(
        &mut self,
        transport: Transport,
        message: &[u8],
    ) -> Result<(Opened, Message), OpenError> {
        let mut w = self.config.window.lock().unwrap_or_else(|p| p.into_inner());
        let window = w.get_or_insert_with(|| ReplayWindow::new(self.config.window_sources));
        self.config.key.receive(window, transport, message)
    }

    /// Step 3 for an opened message: `Ok` if its counter is new.
    pub(crate) fn accept(&mut self, opened: &Opened) -> Result<(), OpenError> {
        let mut w = self.config.window.lock().unwrap_or_else(|p| p.into_inner());
        let window = w.get_or_insert_with(|| ReplayWindow::new(self.config.window_sources));
        window.accept(opened).map_err(Into::into)
    }

    /// Persists the replay window now.
    pub(crate) fn save(&mut self, now: Time) -> Result<(), StoreError> {
        self.next_save = now + self.config.save_every;
        let entries = {
            let w = self.config.window.lock().unwrap_or_else(|p| p.into_inner());
            w.as_ref().map(ReplayWindow::export).unwrap_or_default()
        };
        let mut store = self.config.store.clone();
        store.save_window(self.config.key.id(), &entries)
    }

    pub(crate) fn next_save(&self) -> Time {
        self.next_save
    }
}

fn clone_store_error(e: &StoreError) -> StoreError {
    StoreError::Corrupt {
        path: std::path::PathBuf::from("counter store"),
        line: 0,
        reason: format!("the counter bound could not be read when the node started: {e}"),
    }
}
