//! The stale-UUID model ([`StaleUuids`]), shared by the core medium and `beets-ble`'s simulated
//! air.

use std::collections::VecDeque;
use std::time::Duration;

use crate::time::Time;

/// Most earlier UUID sets one [`StaleUuids`] remembers, whatever [`StaleUuidConfig::frames`]
/// says: 64 frames are up to 448 UUIDs, far beyond what a frame's slot index and CRC can sort
/// out ([`MAX_COMBINATIONS`](crate::ble::MAX_COMBINATIONS)), so older ones change nothing a
/// decoder could use.
pub const MAX_REMEMBERED_FRAMES: usize = 64;

/// How long stale UUIDs linger at a receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StaleUuidConfig {
    /// UUID sets of this many earlier (distinct) frames are merged into what the receiver sees.
    /// 0 turns stale UUIDs off. At most [`MAX_REMEMBERED_FRAMES`] count.
    pub frames: usize,
    /// A frame's UUID set is gone once it has not been heard for longer than this.
    pub ttl: Duration,
}

impl StaleUuidConfig {
    /// BlueZ as it is: every UUID of every frame heard stays until the device is forgotten.
    pub const BLUEZ: StaleUuidConfig = StaleUuidConfig {
        frames: usize::MAX,
        ttl: Duration::MAX,
    };

    /// No stale UUIDs: a receiver sees exactly the frame's own.
    pub const NONE: StaleUuidConfig = StaleUuidConfig {
        frames: 0,
        ttl: Duration::ZERO,
    };
}

impl Default for StaleUuidConfig {
    /// [`StaleUuidConfig::BLUEZ`].
    fn default() -> StaleUuidConfig {
        StaleUuidConfig::BLUEZ
    }
}

/// The UUIDs one receiver's stack holds for one sender: the one model of BlueZ's stale service
/// UUIDs, shared by every simulated receiver, the core medium ([`Sim`](super::Sim)) and
/// `beets-ble`'s simulated air (`beets_ble::sim::SimAir`).
///
/// BlueZ keeps a device object per sender address and only ever *adds* to its advertised UUIDs
/// (`device_add_eir_uuids` in `src/device.c`), so a scanner sees a frame's UUIDs merged with
/// those of the sender's earlier frames, as a set. [`StaleUuids`] is that object's UUID list for
/// one (receiver, sender) pair: it remembers the UUID sets of the frames heard, and each
/// [`StaleUuids::hear`] returns the set a scanner would see now. How much lingers is a
/// [`StaleUuidConfig`]: [`StaleUuidConfig::BLUEZ`] keeps everything until the device is forgotten
/// ([`StaleUuids::forget`], what `Adapter1.RemoveDevice` does; `beets-ble`'s scanner asks for it
/// after each decoded frame), while a medium without a scanner that forgets (the core
/// [`Sim`](super::Sim)) keeps a few earlier frames for a while instead.
///
/// ```
/// use beets_core::sim::{StaleUuidConfig, StaleUuids};
/// use beets_core::Time;
///
/// let mut device = StaleUuids::default();
/// let keep_one = StaleUuidConfig { frames: 1, ..StaleUuidConfig::BLUEZ };
/// assert_eq!(device.hear(Time::ZERO, &[0x2001, 0x4002], &keep_one), [0x2001, 0x4002]);
/// // The next frame's UUIDs arrive merged with the previous frame's.
/// let seen = device.hear(Time::from_millis(500), &[0x2003], &keep_one);
/// assert_eq!(seen, [0x2001, 0x2003, 0x4002]);
/// device.forget();
/// assert_eq!(device.hear(Time::from_millis(900), &[0x2003], &keep_one), [0x2003]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaleUuids {
    /// Distinct UUID sets heard, oldest first, with when each was last heard.
    heard: VecDeque<(Time, Vec<u16>)>,
}

impl StaleUuids {
    /// A device with nothing heard.
    pub fn new() -> StaleUuids {
        StaleUuids::default()
    }

    /// Hears a frame whose advertisement carries `current`; returns the UUID set the receiver's
    /// stack reports now, sorted and without repeats: `current` merged with the sets of up to
    /// `config.frames` earlier distinct frames heard within `config.ttl`, newest first. `now`
    /// must not go back.
    pub fn hear(&mut self, now: Time, current: &[u16], config: &StaleUuidConfig) -> Vec<u16> {
        let keep = config.frames.min(MAX_REMEMBERED_FRAMES);
        let mut set = current.to_vec();
        if keep > 0 {
            self.heard
                .retain(|(t, _)| now.saturating_since(*t) <= config.ttl);
            for (_, u) in self
                .heard
                .iter()
                .rev()
                .filter(|(_, u)| u != current)
                .take(keep)
            {
                set.extend_from_slice(u);
            }
            if !current.is_empty() {
                if let Some(p) = self.heard.iter().position(|(_, u)| u == current) {
                    self.heard.remove(p);
                }
                self.heard.push_back((now, current.to_vec()));
                while self.heard.len() > keep + 1 {
                    self.heard.pop_front();
                }
            }
        }
        set.sort_unstable();
        set.dedup();
        set
    }

    /// The stack forgets the device (BlueZ `Adapter1.RemoveDevice`): the next frame starts from
    /// its own UUIDs.
    pub fn forget(&mut self) {
        self.heard.clear();
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.heard.is_empty()
    }
}
