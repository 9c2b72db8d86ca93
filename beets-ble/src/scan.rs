//! The scanner's bookkeeping: turns what the OS stack reports about a device (name, UUID set,
//! RSSI) into frames for the engine, and decides when to make the stack forget a device.
//! Sans-IO and shared by every backend (BlueZ via bluer, btleplug, the simulated radio).
//!
//! # What BlueZ really does, and what this does about it
//! Each point names where the behaviour comes from.
//! - **UUIDs arrive as a set, and stale UUIDs persist.** bluer hands `Device1.UUIDs` over as a
//!   `HashSet<Uuid>`; BlueZ only ever *adds* to a device's advertised UUIDs
//!   (`device_add_eir_uuids` in `src/device.c` appends new ones and emits `UUIDs` only when
//!   something was added), so a sender that changes frames under one address accumulates the
//!   UUIDs of all its earlier frames. The frame format copes (slot index + CRC, spec §6); after a
//!   decoded frame, and after a frame that the accumulated UUIDs make ambiguous, the tracker asks
//!   the backend to forget the device ([`ScanOutcome::forget`], BlueZ `Adapter1.RemoveDevice`),
//!   once per distinct frame per address, so the next report starts from a clean set.
//! - **The name arrives in the scan response**, so it may reach the host before or after the
//!   UUIDs (BlueZ emits `Name` and `UUIDs` in separate `PropertiesChanged` signals, and a lost
//!   scan response leaves the previous frame's name beside the new frame's UUIDs). The tracker
//!   re-evaluates whenever either changes and hands the engine every candidate; the engine's
//!   dedup (spec §8, key = address, seq, CRC) absorbs repeats and its decoder rejects mixtures.
//!   A 29-character name whose UUID slots are not all present yet is held back
//!   ([`ScanStats::incomplete`]) instead of being counted as malformed.
//! - **Repeated identical advertisements produce no `Name` or `UUIDs` change** (BlueZ emits
//!   them only when they change, `device_set_name` and `device_add_eir_uuids` in
//!   `src/device.c`; the `DuplicateData` filter only makes it re-emit `ManufacturerData` and
//!   `ServiceData`, which BeeTS does not use). Repeats carry nothing new, so only name and UUID
//!   changes are evaluated; a controller may also filter repeats itself (see
//!   [`ScanConfig::restart_every`]).
//! - **Foreign advertisements** are dropped quietly and counted: no name
//!   ([`ScanStats::no_name`]), a name that cannot be BeeTS — longer than 29 characters, shorter
//!   than the 7 of the smallest frame, or with a character outside ASCII85's `!`..=`u`
//!   ([`ScanStats::not_beets`]). Everything else goes to the engine, which counts what it cannot
//!   decode as `dropped_malformed`.
//!
//! ```
//! use beets_ble::scan::{DeviceUpdate, ScanConfig, ScanTracker};
//! use beets_core::{ble, Time};
//!
//! let mut tracker = ScanTracker::new(ScanConfig::default(), None);
//! let adv = ble::pack(7, &[0x48, 0x40, 0x00, 0x01])?; // OUT (1), name-only frame
//! let addr = [0xC0, 0xBE, 0x75, 0, 0, 1];
//! let out = tracker.update(Time::ZERO, addr, DeviceUpdate::name(adv.local_name.as_str()));
//! assert!(out.frame.is_some()); // goes to the engine
//! assert!(out.forget);          // and BlueZ may forget the device now
//! // The same name again (a repeated report) is not a change: nothing to do.
//! let again = tracker.update(Time::ZERO, addr, DeviceUpdate::name(adv.local_name.as_str()));
//! assert!(again.frame.is_none() && !again.forget);
//! // A phone's advertisement is dropped quietly and counted.
//! let phone = tracker.update(Time::ZERO, [1, 2, 3, 4, 5, 6], DeviceUpdate::name("Pixel 7 Pro (Anna)"));
//! assert!(phone.frame.is_none());
//! assert_eq!(tracker.stats().not_beets, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::time::Duration;

use beets_core::ble::{self, FrameError, MAX_NAME_LEN};
use beets_core::driver::{OwnedFrame, ReceivedFrame};
use beets_core::{FpeKey, PeerAddr, Time};

use crate::uuid::uuid16_from_u128;

/// Fewest characters of a BeeTS name: A85 of the smallest (5-byte) frame.
pub const MIN_NAME_LEN: usize = 7;

/// Scanner knobs shared by the backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanConfig {
    /// Ask the stack to forget a device after each distinct decoded frame (spec §6 "SHOULD").
    /// Default true. Backends that cannot (btleplug) ignore it.
    pub forget_decoded: bool,
    /// Restart discovery this often (BlueZ backend). Linux's discovery scan asks the controller
    /// to filter duplicate reports ("Default is to enable duplicates filter",
    /// `hci_active_scan_sync` in `net/bluetooth/hci_sync.c`, Linux 6.1), and nothing BeeTS can
    /// ask for over D-Bus turns that off: the discovery filter's `DuplicateData = true` only makes
    /// bluetoothd pass on the repeated reports it does get. A controller that treats "same
    /// address" as a duplicate then reports a sender's later frames (a connectable node keeps its
    /// address) only after a scan restart, which clears its filter; the kernel itself restarts
    /// the scan periodically only for controllers flagged `HCI_QUIRK_STRICT_DUPLICATE_FILTER`.
    /// Default `Some(30 s)`; `None` never restarts.
    pub restart_every: Option<Duration>,
    /// Most devices tracked at once; the least recently updated is forgotten first. Default 1024.
    pub max_devices: usize,
    /// How long "already forgotten once for this frame" is remembered per address (stops a
    /// forget/re-create loop while one frame is still on air). Default 10 s, the dedup window.
    pub forget_memory: Duration,
}

impl Default for ScanConfig {
    fn default() -> ScanConfig {
        ScanConfig {
            forget_decoded: true,
            restart_every: Some(Duration::from_secs(30)),
            max_devices: 1024,
            forget_memory: beets_core::dedup::DEFAULT_WINDOW,
        }
    }
}

/// What changed on one device, as the stack reports it. `None` fields did not change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceUpdate {
    /// The local name (complete or shortened), if it changed.
    pub name: Option<String>,
    /// The whole UUID set as 128-bit values, if it changed.
    pub uuids: Option<Vec<u128>>,
    /// RSSI in dBm, if reported.
    pub rssi: Option<i16>,
}

impl DeviceUpdate {
    /// A name change.
    pub fn name(name: &str) -> DeviceUpdate {
        DeviceUpdate {
            name: Some(name.to_owned()),
            ..DeviceUpdate::default()
        }
    }

    /// A UUID-set change.
    pub fn uuids(uuids: impl IntoIterator<Item = u128>) -> DeviceUpdate {
        DeviceUpdate {
            uuids: Some(uuids.into_iter().collect()),
            ..DeviceUpdate::default()
        }
    }

    /// Everything known about a device (e.g. when it first appears).
    pub fn full(
        name: Option<String>,
        uuids: impl IntoIterator<Item = u128>,
        rssi: Option<i16>,
    ) -> DeviceUpdate {
        DeviceUpdate {
            name,
            uuids: Some(uuids.into_iter().collect()),
            rssi,
        }
    }

    /// Sets the RSSI.
    pub fn with_rssi(mut self, rssi: Option<i16>) -> DeviceUpdate {
        self.rssi = rssi;
        self
    }
}

/// What to do after an update.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanOutcome {
    /// A frame for the engine.
    pub frame: Option<ReceivedFrame>,
    /// Make the stack forget this device now (BlueZ `RemoveDevice`), then call
    /// [`ScanTracker::removed`].
    pub forget: bool,
}

/// Scanner counters (all since start). Evaluations happen when a device's name or UUID set
/// changes, so each counter counts device states, not radio packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanStats {
    /// Property updates seen.
    pub updates: u64,
    /// Name or UUID changes evaluated.
    pub evaluations: u64,
    /// Evaluations of devices without a local name (not BeeTS, or its scan response has not
    /// arrived yet).
    pub no_name: u64,
    /// Evaluations of names that cannot be BeeTS names (foreign devices).
    pub not_beets: u64,
    /// 29-character names whose UUID slots were not all present yet (held back).
    pub incomplete: u64,
    /// Candidates handed to the engine (it dedups repeats and counts what it cannot decode).
    pub forwarded: u64,
    /// Forwarded candidates that decoded as valid frames here.
    pub decoded: u64,
    /// Forget requests issued.
    pub forgets: u64,
    /// Forget requests the stack failed (backend).
    pub forget_errors: u64,
    /// Discovery (re)starts (backend).
    pub discovery_starts: u64,
    /// Property reads or event subscriptions that failed (backend).
    pub stack_errors: u64,
    /// Frames the engine's channel could not take (closed).
    pub channel_closed: u64,
}

#[derive(Clone, Debug, Default)]
struct Device {
    name: Option<String>,
    uuids: Vec<u16>,
    rssi: Option<i16>,
    touched: Time,
}

/// What a scanner checks frames with before it forgets a device (a frame it can read is
/// complete, so the device's stale UUIDs can go): the space's FPE key (spec §5) or sealing key
/// (spec §12), or none for an open space. Build it from a node's configuration with
/// [`FrameKey::of`]; `Option<FpeKey>` converts too.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
// One per scanner, built once: the size of the key schedules does not matter here.
#[allow(clippy::large_enum_variant)]
pub enum FrameKey {
    /// An open space.
    #[default]
    Open,
    /// An FPE-keyed space.
    Fpe(FpeKey),
    /// A sealed space: frames are checked with spec §12 steps 1, 2 and 4.
    Sealed(beets_core::sealed::SealKey),
}

impl FrameKey {
    /// The key of the space `config` describes.
    pub fn of(config: &beets_core::NodeConfig) -> FrameKey {
        match (&config.seal, &config.key) {
            (Some(seal), _) => FrameKey::Sealed(seal.key().clone()),
            (None, Some(k)) => FrameKey::Fpe(k.clone()),
            (None, None) => FrameKey::Open,
        }
    }

    fn check(&self, name: &str, uuids: &[u16]) -> Result<(), FrameError> {
        match self {
            FrameKey::Sealed(k) => ble::unpack_sealed(name, uuids, k).map(|_| ()),
            FrameKey::Fpe(k) => ble::unpack(name, uuids, Some(k)).map(|_| ()),
            FrameKey::Open => ble::unpack(name, uuids, None).map(|_| ()),
        }
    }
}

impl From<Option<FpeKey>> for FrameKey {
    fn from(key: Option<FpeKey>) -> FrameKey {
        key.map_or(FrameKey::Open, FrameKey::Fpe)
    }
}

/// Per-device state between reports. See the [module docs](self).
#[derive(Clone)]
pub struct ScanTracker {
    config: ScanConfig,
    key: FrameKey,
    devices: HashMap<[u8; 6], Device>,
    /// Address → (name hash, when) of the last frame the device was forgotten for.
    forgotten: HashMap<[u8; 6], (u32, Time)>,
    stats: ScanStats,
}

impl std::fmt::Debug for ScanTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanTracker")
            .field("devices", &self.devices.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl ScanTracker {
    /// A tracker; `key` is the space's key (to recognise encrypted or sealed frames as valid
    /// before forgetting a device): a [`FrameKey`], or `None` / `Some(FpeKey)`.
    pub fn new(config: ScanConfig, key: impl Into<FrameKey>) -> ScanTracker {
        ScanTracker {
            config,
            key: key.into(),
            devices: HashMap::new(),
            forgotten: HashMap::new(),
            stats: ScanStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> ScanStats {
        self.stats
    }

    /// Mutable counters, for backends that count stack events here.
    pub fn stats_mut(&mut self) -> &mut ScanStats {
        &mut self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &ScanConfig {
        &self.config
    }

    /// Devices tracked now.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// `true` when no device is tracked.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Whether `addr` is tracked.
    pub fn contains(&self, addr: [u8; 6]) -> bool {
        self.devices.contains_key(&addr)
    }

    /// Whether `addr` is a known device whose current name cannot be BeeTS (backends that poll
    /// may skip it).
    pub fn is_foreign(&self, addr: [u8; 6]) -> bool {
        self.devices
            .get(&addr)
            .and_then(|d| d.name.as_deref())
            .is_some_and(|n| !plausible_name(n))
    }

    /// The stack no longer has this device (removed by us or by its own timeout); the next
    /// report of that address starts from nothing.
    pub fn removed(&mut self, addr: [u8; 6]) {
        self.devices.remove(&addr);
    }

    /// Applies one report about `addr` and says what to do.
    pub fn update(&mut self, now: Time, addr: [u8; 6], update: DeviceUpdate) -> ScanOutcome {
        self.stats.updates += 1;
        if !self.devices.contains_key(&addr) && self.devices.len() >= self.config.max_devices.max(1)
        {
            self.evict_oldest();
        }
        let is_new = !self.devices.contains_key(&addr);
        let dev = self.devices.entry(addr).or_default();
        dev.touched = now;
        if update.rssi.is_some() {
            dev.rssi = update.rssi;
        }
        // A device seen for the first time is evaluated even with nothing in it, so every
        // foreign advertiser is counted once.
        let mut changed = is_new && (update.name.is_some() || update.uuids.is_some());
        if let Some(name) = update.name
            && dev.name.as_deref() != Some(name.as_str())
        {
            dev.name = Some(name);
            changed = true;
        }
        if let Some(uuids) = update.uuids {
            let mut u16s: Vec<u16> = uuids.into_iter().filter_map(uuid16_from_u128).collect();
            u16s.sort_unstable();
            u16s.dedup();
            if u16s != dev.uuids {
                dev.uuids = u16s;
                changed = true;
            }
        }
        if !changed {
            return ScanOutcome::default();
        }
        let dev = dev.clone();
        self.evaluate(now, addr, &dev)
    }

    fn evaluate(&mut self, now: Time, addr: [u8; 6], dev: &Device) -> ScanOutcome {
        self.stats.evaluations += 1;
        let Some(name) = dev.name.as_deref() else {
            self.stats.no_name += 1;
            return ScanOutcome::default();
        };
        if !plausible_name(name) {
            self.stats.not_beets += 1;
            return ScanOutcome::default();
        }
        let checked = self.key.check(name, &dev.uuids);
        let forget_now = match &checked {
            Err(FrameError::MissingSlot { .. }) => {
                self.stats.incomplete += 1;
                return ScanOutcome::default();
            }
            Ok(_) => {
                self.stats.decoded += 1;
                true
            }
            // Stale UUIDs made the frame unreadable: start the device over.
            Err(FrameError::Ambiguous { .. } | FrameError::TooManyCombinations { .. }) => true,
            Err(_) => false,
        };
        self.stats.forwarded += 1;
        let frame = ReceivedFrame {
            from: PeerAddr::Ble(addr),
            frame: OwnedFrame::Advertisement {
                local_name: name.to_owned(),
                service_uuids: dev.uuids.clone(),
            },
            rssi: dev.rssi,
        };
        let forget =
            self.config.forget_decoded && forget_now && self.mark_forgotten(now, addr, name);
        if forget {
            self.stats.forgets += 1;
        }
        ScanOutcome {
            frame: Some(frame),
            forget,
        }
    }

    /// Records that `addr` is forgotten for the frame named `name`; `false` if it already was
    /// within [`ScanConfig::forget_memory`]. (The name identifies the frame: it carries the seq
    /// and the first 22 bytes.)
    fn mark_forgotten(&mut self, now: Time, addr: [u8; 6], name: &str) -> bool {
        let memory = self.config.forget_memory;
        let id = fnv1a(name.as_bytes());
        if self.forgotten.len() >= self.config.max_devices.max(1) {
            self.forgotten
                .retain(|_, (_, at)| now.saturating_since(*at) < memory);
        }
        match self.forgotten.get(&addr) {
            Some(&(h, at)) if h == id && now.saturating_since(at) < memory => false,
            _ => {
                if self.forgotten.len() < 4 * self.config.max_devices.max(1) {
                    self.forgotten.insert(addr, (id, now));
                }
                true
            }
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(oldest) = self
            .devices
            .iter()
            .min_by_key(|(_, d)| d.touched)
            .map(|(a, _)| *a)
        {
            self.devices.remove(&oldest);
        }
    }
}

/// Whether `name` could be a BeeTS name: 7..=29 characters, all in ASCII85's `!`..=`u`.
pub fn plausible_name(name: &str) -> bool {
    (MIN_NAME_LEN..=MAX_NAME_LEN).contains(&name.len())
        && name.bytes().all(|b| (b'!'..=b'u').contains(&b))
}

/// 32-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests;
