//! The BLE sender scheduler: a queue of frames, each advertised for Δt on one advertising instance
//! (spec wire-v1 §6 "Sending", paper §5). Sans-IO: no radio, no clock; time is a [`Time`] passed
//! in.
//!
//! This one [`Scheduler`] is what every BLE sender runs: `beets-ble`'s BlueZ backend on a
//! Raspberry Pi, its simulated radio (`beets_ble::sim`), and the seeded medium of [`crate::sim`]
//! that the README's capacity tables come from. So what a test or a capacity study sees here is
//! what a Raspberry Pi does.
//!
//! ```text
//!  push(adv) ──▶ queue (bounded, QueuePolicy) ──▶ instance 0: frame A for Δt, then the next …
//!                                            └──▶ instance 1: frame B for Δt …   (≤ controller's)
//!  poll(now) ──▶ [Stop(0), Start(0, C), Start(1, D), …]   next_wake() ──▶ when to poll again
//! ```
//!
//! # Call contract
//! 1. Build with [`Scheduler::new`] from a [`SchedulerConfig`] and the controller's
//!    [`AdvertisingLimits`] (instances and the advertising / scan-response lengths).
//! 2. [`Scheduler::push`] every frame the engine wants sent; it is checked against the limits and
//!    queued (or refused, see [`QueuePolicy`]).
//! 3. After a push, and whenever [`Scheduler::next_wake`] has come, call [`Scheduler::poll`] with
//!    the current time and apply every [`InstanceAction`] in order. `now` must never go back.
//! 4. To shut down, apply [`Scheduler::stop_all`].
//!
//! # Rotation
//! An instance whose Δt is over takes the next queued frame (a [`InstanceAction::Stop`] then a
//! [`InstanceAction::Start`] on the same instance) or, with an empty queue, stops advertising.
//! Idle instances take queued frames at once. Frames go on air in the order they were pushed. A
//! frame stays on air from the poll that started it until the first poll at or after
//! `start + Δt`; the next period is measured from that poll, so a late poll never makes later
//! frames shorter.
//!
//! ```
//! use beets_core::ble::scheduler::{AdvertisingLimits, InstanceAction, Scheduler, SchedulerConfig};
//! use beets_core::{ble, Time};
//!
//! let mut s = Scheduler::new(SchedulerConfig::default(), AdvertisingLimits::LEGACY);
//! let a = ble::pack(1, &[0x48, 0x40, 0x00, 0x01])?; // OUT (1): seq 1
//! let b = ble::pack(2, &[0x48, 0x40, 0x00, 0x02])?; // OUT (2): seq 2
//! s.push(a.clone())?;
//! s.push(b.clone())?;
//! let t0 = Time::ZERO;
//! assert_eq!(s.poll(t0), vec![InstanceAction::Start { instance: 0, adv: a }]);
//! assert_eq!(s.next_wake(), Some(Time::from_millis(500))); // Δt = 500 ms
//! let t1 = Time::from_millis(500);
//! assert_eq!(
//!     s.poll(t1),
//!     vec![InstanceAction::Stop { instance: 0 }, InstanceAction::Start { instance: 0, adv: b }]
//! );
//! assert_eq!(s.poll(Time::from_millis(1_000)), vec![InstanceAction::Stop { instance: 0 }]);
//! assert_eq!(s.next_wake(), None); // idle until the next push
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use crate::ble::BleAdvertisement;
use crate::time::Time;

/// Default Δt: 500 ms, the paper's value (spec §6).
pub const DEFAULT_DELTA_T: Duration = Duration::from_millis(500);
/// Default sender queue bound: 16 frames (8 s of traffic at Δt = 500 ms on one instance).
pub const DEFAULT_QUEUE_CAPACITY: usize = 16;
/// Legacy advertising: 31 bytes of advertising data and 31 of scan response (Bluetooth Core
/// spec v5.x, Vol 6, Part B, §2.3.1.4 ADV_SCAN_IND and §2.3.2.2 SCAN_RSP).
pub const LEGACY_DATA_LEN: usize = 31;
/// Bytes of an AD structure's header: length and type.
const AD_HEADER: usize = 2;

/// What a full sender queue does with one more frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QueuePolicy {
    /// Drop the oldest waiting frame to make room (counted in
    /// [`SchedulerStats::dropped_oldest`]). The default: a fresh sensor reading matters more than
    /// a stale one. The engine is not told; the caller's `out` already returned.
    #[default]
    DropOldest,
    /// Refuse the new frame with [`SchedulerError::QueueFull`] and keep the waiting ones (counted
    /// in [`SchedulerStats::refused`]).
    Refuse,
}

/// What the controller allows, read from BlueZ's `LEAdvertisingManager1` (or chosen for a
/// simulated radio).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct AdvertisingLimits {
    /// Advertising instances this node may use at once (0: receive-only, nothing can be sent).
    pub instances: usize,
    /// Longest advertising data, bytes (BlueZ `SupportedCapabilities["MaxAdvLen"]`).
    pub max_adv_len: usize,
    /// Longest scan response, bytes (BlueZ `SupportedCapabilities["MaxScnRspLen"]`).
    pub max_scan_rsp_len: usize,
}

impl AdvertisingLimits {
    /// One legacy advertising instance: 31 bytes of advertising data, 31 of scan response.
    pub const LEGACY: AdvertisingLimits = AdvertisingLimits {
        instances: 1,
        max_adv_len: LEGACY_DATA_LEN,
        max_scan_rsp_len: LEGACY_DATA_LEN,
    };

    /// A receive-only node (a scan-only backend such as btleplug): every push is refused with
    /// [`SchedulerError::ReceiveOnly`].
    pub const RECEIVE_ONLY: AdvertisingLimits = AdvertisingLimits {
        instances: 0,
        max_adv_len: LEGACY_DATA_LEN,
        max_scan_rsp_len: LEGACY_DATA_LEN,
    };

    /// Limits with `instances` legacy instances.
    pub const fn legacy(instances: usize) -> AdvertisingLimits {
        AdvertisingLimits {
            instances,
            max_adv_len: LEGACY_DATA_LEN,
            max_scan_rsp_len: LEGACY_DATA_LEN,
        }
    }

    /// Limits with explicit lengths (e.g. read from a controller).
    pub const fn new(
        instances: usize,
        max_adv_len: usize,
        max_scan_rsp_len: usize,
    ) -> AdvertisingLimits {
        AdvertisingLimits {
            instances,
            max_adv_len,
            max_scan_rsp_len,
        }
    }

    /// Checks that `adv` fits: its UUID list in the advertising data, its local name in the scan
    /// response (spec §6 "Placement"; BlueZ would otherwise truncate the name to a short name,
    /// `serialize_name` in `src/shared/ad.c`, and corrupt the frame silently).
    ///
    /// # Errors
    /// [`SchedulerError::FrameTooLarge`] naming what the frame needs and what the controller
    /// allows, for both.
    pub fn check(&self, adv: &BleAdvertisement) -> Result<(), SchedulerError> {
        let adv_len = adv_data_len(adv);
        let scan_rsp_len = scan_rsp_len(adv);
        if adv_len > self.max_adv_len || scan_rsp_len > self.max_scan_rsp_len {
            return Err(SchedulerError::FrameTooLarge {
                adv_len,
                max_adv_len: self.max_adv_len,
                scan_rsp_len,
                max_scan_rsp_len: self.max_scan_rsp_len,
            });
        }
        Ok(())
    }
}

impl Default for AdvertisingLimits {
    /// [`AdvertisingLimits::LEGACY`].
    fn default() -> AdvertisingLimits {
        AdvertisingLimits::LEGACY
    }
}

/// Bytes `adv` takes in the advertising data: one "complete list of 16-bit service UUIDs" AD
/// structure (type 0x03), 2 + 2·m bytes, or nothing for a name-only frame. A broadcast
/// advertisement carries no Flags AD (BlueZ `parse_discoverable` adds none for broadcast).
pub fn adv_data_len(adv: &BleAdvertisement) -> usize {
    if adv.service_uuids.is_empty() {
        0
    } else {
        AD_HEADER + 2 * adv.service_uuids.len()
    }
}

/// Bytes `adv` takes in the scan response: one "complete local name" AD structure (type 0x09),
/// 2 + name length (at most 31 for a 29-character BeeTS name).
pub fn scan_rsp_len(adv: &BleAdvertisement) -> usize {
    AD_HEADER + adv.local_name.len()
}

/// Why the scheduler refused a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The queue is full and the policy is [`QueuePolicy::Refuse`].
    #[error(
        "BLE sender queue is full ({capacity} frames waiting for {instances} advertising \
         instance(s), each frame on air for {delta_t:?}); frame refused — send less often, raise \
         the queue capacity, shorten Δt or use QueuePolicy::DropOldest"
    )]
    QueueFull {
        /// [`SchedulerConfig::queue_capacity`].
        capacity: usize,
        /// Instances in use.
        instances: usize,
        /// [`SchedulerConfig::delta_t`].
        delta_t: Duration,
    },
    /// The frame does not fit the controller's advertising data or scan response.
    #[error(
        "frame needs {adv_len} bytes of advertising data and {scan_rsp_len} bytes of scan \
         response; the controller allows {max_adv_len} and {max_scan_rsp_len} (MaxAdvLen, \
         MaxScnRspLen)"
    )]
    FrameTooLarge {
        /// Advertising data the frame needs.
        adv_len: usize,
        /// The controller's advertising data length.
        max_adv_len: usize,
        /// Scan response the frame needs.
        scan_rsp_len: usize,
        /// The controller's scan response length.
        max_scan_rsp_len: usize,
    },
    /// The node has no advertising instance (a scan-only backend, or a controller whose
    /// instances are all taken).
    #[error("this BLE node is receive-only (no advertising instance): it cannot send frames")]
    ReceiveOnly,
}

/// Sender knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Δt: how long each frame is advertised before the next replaces it. Default 500 ms.
    /// Values under 1 ms act as 1 ms.
    pub delta_t: Duration,
    /// Frames waiting for an instance (those on air excluded). Default 16. Values under 1 act
    /// as 1.
    pub queue_capacity: usize,
    /// What a full queue does. Default [`QueuePolicy::DropOldest`].
    pub queue_policy: QueuePolicy,
}

impl Default for SchedulerConfig {
    fn default() -> SchedulerConfig {
        SchedulerConfig {
            delta_t: DEFAULT_DELTA_T,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            queue_policy: QueuePolicy::DropOldest,
        }
    }
}

/// What the caller must do to the radio, from [`Scheduler::poll`]. Apply in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceAction {
    /// Advertise `adv` on `instance` (idle before: a `Stop` precedes every replacement).
    Start {
        /// 0-based instance index, `< limits.instances`.
        instance: usize,
        /// The frame.
        adv: BleAdvertisement,
    },
    /// Stop advertising on `instance`.
    Stop {
        /// 0-based instance index.
        instance: usize,
    },
}

/// Counters of a [`Scheduler`]. All count since it was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerStats {
    /// Frames accepted by [`Scheduler::push`] (queued).
    pub queued: u64,
    /// Frames refused by a full queue ([`QueuePolicy::Refuse`]).
    pub refused: u64,
    /// Waiting frames dropped to make room ([`QueuePolicy::DropOldest`]).
    pub dropped_oldest: u64,
    /// Frames refused because they do not fit the controller.
    pub too_large: u64,
    /// Frames refused because the node is receive-only.
    pub receive_only: u64,
    /// Advertising periods started (frames put on air).
    pub started: u64,
    /// Instances stopped because the queue was empty.
    pub idled: u64,
    /// Waiting frames discarded by [`Scheduler::stop_all`].
    pub discarded: u64,
    /// Longest queue seen (frames waiting).
    pub max_queue: u64,
    /// Frames put back in the queue because the controller refused an instance
    /// ([`Scheduler::reduce_instances`]).
    pub requeued: u64,
}

#[derive(Clone, Debug)]
struct OnAir {
    adv: BleAdvertisement,
    since: Time,
    until: Time,
}

/// The Δt scheduler. See the [module docs](self) for the call contract.
#[derive(Clone, Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    limits: AdvertisingLimits,
    queue: VecDeque<BleAdvertisement>,
    instances: Vec<Option<OnAir>>,
    stats: SchedulerStats,
}

impl Scheduler {
    /// A scheduler with no frame queued or on air.
    pub fn new(config: SchedulerConfig, limits: AdvertisingLimits) -> Scheduler {
        Scheduler {
            config,
            queue: VecDeque::new(),
            instances: vec![None; limits.instances],
            limits,
            stats: SchedulerStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The controller limits.
    pub fn limits(&self) -> &AdvertisingLimits {
        &self.limits
    }

    /// Δt as used (at least 1 ms).
    pub fn delta_t(&self) -> Duration {
        self.config.delta_t.max(Duration::from_millis(1))
    }

    /// The counters.
    pub fn stats(&self) -> SchedulerStats {
        self.stats
    }

    /// Frames waiting for an instance.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// The frames on air now: (instance, frame, since).
    pub fn on_air(&self) -> impl Iterator<Item = (usize, &BleAdvertisement, Time)> + '_ {
        self.instances
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|o| (i, &o.adv, o.since)))
    }

    /// Queues `adv`. Returns the waiting frame dropped to make room, if any
    /// ([`QueuePolicy::DropOldest`]). Call [`Scheduler::poll`] afterwards.
    ///
    /// # Errors
    /// [`SchedulerError::FrameTooLarge`] when `adv` does not fit the controller,
    /// [`SchedulerError::QueueFull`] under [`QueuePolicy::Refuse`],
    /// [`SchedulerError::ReceiveOnly`] with no instance.
    pub fn push(
        &mut self,
        adv: BleAdvertisement,
    ) -> Result<Option<BleAdvertisement>, SchedulerError> {
        if self.limits.instances == 0 {
            self.stats.receive_only += 1;
            return Err(SchedulerError::ReceiveOnly);
        }
        if let Err(e) = self.limits.check(&adv) {
            self.stats.too_large += 1;
            return Err(e);
        }
        let capacity = self.config.queue_capacity.max(1);
        let mut dropped = None;
        if self.queue.len() >= capacity {
            match self.config.queue_policy {
                QueuePolicy::Refuse => {
                    self.stats.refused += 1;
                    return Err(SchedulerError::QueueFull {
                        capacity,
                        instances: self.limits.instances,
                        delta_t: self.delta_t(),
                    });
                }
                QueuePolicy::DropOldest => {
                    dropped = self.queue.pop_front();
                    self.stats.dropped_oldest += 1;
                }
            }
        }
        self.queue.push_back(adv);
        self.stats.queued += 1;
        self.stats.max_queue = self.stats.max_queue.max(self.queue.len() as u64);
        Ok(dropped)
    }

    /// Rotates what is due at `now`: expired instances take the next frame or stop, idle
    /// instances take waiting frames. Returns what to do to the radio, in order.
    #[must_use = "the actions must be applied to the radio"]
    pub fn poll(&mut self, now: Time) -> Vec<InstanceAction> {
        let mut actions = Vec::new();
        let delta_t = self.delta_t();
        let mut stopped = 0u64;
        for (instance, slot) in self.instances.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|o| o.until <= now) {
                actions.push(InstanceAction::Stop { instance });
                *slot = None;
                stopped += 1;
            }
        }
        let mut restarted = 0u64;
        for (instance, slot) in self.instances.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let Some(adv) = self.queue.pop_front() else {
                break;
            };
            restarted += 1;
            *slot = Some(OnAir {
                adv: adv.clone(),
                since: now,
                until: now + delta_t,
            });
            actions.push(InstanceAction::Start { instance, adv });
        }
        self.stats.started += restarted;
        self.stats.idled += stopped.saturating_sub(restarted);
        actions
    }

    /// When [`Scheduler::poll`] has something to do next: the earliest end of an advertising
    /// period. `None` when nothing is on air (a push needs a poll, not a timer).
    #[must_use]
    pub fn next_wake(&self) -> Option<Time> {
        self.instances.iter().flatten().map(|o| o.until).min()
    }

    /// Uses only `instances` instances from now on: the controller refused an instance it had
    /// announced (seen in tier 3: a 5.x controller announcing 3 advertising sets refused the
    /// third with `Memory Capacity Exceeded`). The frame of `failed` (whose start failed, so it
    /// was never on air) and the frames on instances `>= instances` go back to the front of the
    /// queue in the order they were started, to be sent first; the latter are stopped. Counted in
    /// [`SchedulerStats::requeued`]. Asking for more instances than in use changes nothing.
    #[must_use = "the actions must be applied to the radio"]
    pub fn reduce_instances(
        &mut self,
        instances: usize,
        failed: Option<usize>,
    ) -> Vec<InstanceAction> {
        if instances >= self.instances.len() {
            return Vec::new();
        }
        let mut back: Vec<OnAir> = Vec::new();
        if let Some(f) = failed
            && let Some(on) = self.instances.get_mut(f).and_then(Option::take)
        {
            back.push(on);
        }
        let mut actions = Vec::new();
        for (instance, slot) in self.instances.iter_mut().enumerate().skip(instances) {
            if let Some(on) = slot.take() {
                actions.push(InstanceAction::Stop { instance });
                back.push(on);
            }
        }
        back.sort_by_key(|o| o.since);
        for on in back.into_iter().rev() {
            self.queue.push_front(on.adv);
            self.stats.requeued += 1;
        }
        self.instances.truncate(instances);
        self.limits.instances = instances;
        actions
    }

    /// Stops every instance and discards waiting frames (shutdown).
    #[must_use = "the actions must be applied to the radio"]
    pub fn stop_all(&mut self) -> Vec<InstanceAction> {
        self.stats.discarded += self.queue.len() as u64;
        self.queue.clear();
        let mut actions = Vec::new();
        for (instance, slot) in self.instances.iter_mut().enumerate() {
            if slot.take().is_some() {
                actions.push(InstanceAction::Stop { instance });
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests;
