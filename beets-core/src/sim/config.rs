//! Knobs of the simulated medium: [`SimConfig`] (shared and UDP), [`BleSimConfig`] (BLE).

use std::cmp::Ordering;
use std::time::Duration;

use crate::ble::scheduler::{AdvertisingLimits, QueuePolicy, SchedulerConfig};

use super::stale::StaleUuidConfig;

/// The BLE part of the medium (paper §5, spec wire-v1 §6). Build with
/// `BleSimConfig { delta_t: Duration::from_millis(300), ..BleSimConfig::default() }`.
///
/// The sender knobs (`delta_t`, `instances`, `queue_capacity`, `queue_policy`) configure the
/// [`Scheduler`](crate::ble::scheduler::Scheduler) each BLE node runs, the one `beets-ble` runs
/// on a radio ([`BleSimConfig::scheduler`], [`BleSimConfig::limits`]); the stale-UUID knobs
/// configure the [`StaleUuids`](super::StaleUuids) model ([`BleSimConfig::stale_uuids`]).
#[derive(Clone, Debug, PartialEq)]
pub struct BleSimConfig {
    /// Δt: how long each frame is advertised before the next queued one replaces it. Default
    /// 500 ms (spec §6, the paper's value). Values under 1 ms act as 1 ms.
    pub delta_t: Duration,
    /// Advertising interval: time between two packets of one advertising instance. Default
    /// 100 ms (the paper's t_sw; BLE allows 20 ms and up for scannable advertising). Values
    /// under 1 ms act as 1 ms.
    pub adv_interval: Duration,
    /// Largest random advDelay added to every interval (BLE: 0..=10 ms). Default 10 ms.
    pub adv_delay_max: Duration,
    /// Advertising instances per node: frames advertised in parallel, each for Δt. Default 1.
    /// Values under 1 act as 1.
    pub instances: usize,
    /// Frames waiting for an instance, per node (the scheduler's queue). Default 16; values
    /// under 1 act as 1.
    pub queue_capacity: usize,
    /// What a full sender queue does with one more frame. Default [`QueuePolicy::DropOldest`]
    /// (drops counted in [`NodeSimStats::queue_dropped`](super::NodeSimStats::queue_dropped));
    /// [`QueuePolicy::Refuse`] refuses the new frame (counted in
    /// [`NodeSimStats::queue_refused`](super::NodeSimStats::queue_refused)).
    pub queue_policy: QueuePolicy,
    /// p0: probability that one advertising event from distance 0 reaches the scanning host
    /// with its scan response (scan duty cycle, channel hopping, host coalescing of updates all
    /// in one number). Default 0.32, calibrated so the paper's Fig. 8 set-up (4 senders, 1
    /// receiver a few metres away, Δt = 500 ms, 100 ms interval) receives about 80 % of frames.
    pub p0: f64,
    /// Air time of one advertising event (ADV_SCAN_IND on three channels plus the scan
    /// request and response). Two events overlap when their starts are closer than this.
    /// Default 2 ms.
    pub air_time: Duration,
    /// Probability that an overlapping event from another node the receiver hears (or the
    /// receiver's own transmission: a radio does not scan while it sends) destroys a packet.
    /// Applied once per overlapping event. Default 0.9.
    pub collision_loss: f64,
    /// RSSI at 1 m in dBm (log-distance path loss). Default −59 dBm.
    pub rssi_at_1m: f64,
    /// Path-loss exponent n of `rssi(d) = rssi_at_1m − 10·n·log10(d)`. Default 2.0 (free space).
    pub path_loss_exponent: f64,
    /// RSSI noise: uniform in ±this many dB, added per packet. Default 3 dB.
    pub rssi_noise_db: f64,
    /// BlueZ model ([`StaleUuids`](super::StaleUuids)): UUID sets of this many earlier frames of
    /// a sender linger in what a receiver sees (merged, unordered; spec §6 "Receiving"). 0 turns
    /// it off. Default 1 (a scanner that forgets each decoded device, as `beets-ble`'s does,
    /// leaves about that much). At most 8.
    pub stale_frames: usize,
    /// How long a stale UUID set lingers at a receiver after it was last heard. Default 30 s
    /// (BlueZ forgets unseen temporary devices after 30 s).
    pub stale_ttl: Duration,
}

impl BleSimConfig {
    /// The configuration of each node's [`Scheduler`](crate::ble::scheduler::Scheduler).
    pub fn scheduler(&self) -> SchedulerConfig {
        SchedulerConfig {
            delta_t: self.delta_t,
            queue_capacity: self.queue_capacity,
            queue_policy: self.queue_policy,
        }
    }

    /// The simulated controller: [`BleSimConfig::instances`] legacy instances (at least 1).
    pub fn limits(&self) -> AdvertisingLimits {
        AdvertisingLimits::legacy(self.instances.max(1))
    }

    /// The stale-UUID model's configuration ([`BleSimConfig::stale_frames`], at most 8, and
    /// [`BleSimConfig::stale_ttl`]).
    pub fn stale_uuids(&self) -> StaleUuidConfig {
        StaleUuidConfig {
            frames: self.stale_frames.min(MAX_STALE_FRAMES),
            ttl: self.stale_ttl,
        }
    }
}

/// Most earlier UUID sets [`BleSimConfig::stale_frames`] can keep.
const MAX_STALE_FRAMES: usize = 8;

impl Default for BleSimConfig {
    fn default() -> BleSimConfig {
        let sender = SchedulerConfig::default();
        BleSimConfig {
            delta_t: sender.delta_t,
            adv_interval: Duration::from_millis(100),
            adv_delay_max: Duration::from_millis(10),
            instances: 1,
            queue_capacity: sender.queue_capacity,
            queue_policy: sender.queue_policy,
            p0: 0.32,
            air_time: Duration::from_millis(2),
            collision_loss: 0.9,
            rssi_at_1m: -59.0,
            path_loss_exponent: 2.0,
            rssi_noise_db: 3.0,
            stale_frames: 1,
            stale_ttl: Duration::from_secs(30),
        }
    }
}

/// The medium: seed, geometry, fault knobs and the BLE and UDP models. Build with
/// [`SimConfig::new`] (realistic, lossy defaults) or [`SimConfig::ideal`] (no loss), then adjust
/// fields.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Seed of every random choice (node seeds included): same seed, same run.
    pub seed: u64,
    /// Range in metres: beyond it nothing is received (BLE) or the node is on another LAN
    /// segment (UDP). Default 30 m.
    pub range_m: f64,
    /// k of the distance factor `1 − (d / range)^k` of a BLE packet's reception probability.
    /// Default 2.
    pub distance_exponent: f64,
    /// Extra loss: probability that any delivery (BLE packet or datagram) is lost. Default 0.
    pub loss: f64,
    /// Probability that a delivery arrives twice (the copy with its own jitter). Default 0.
    pub duplicate: f64,
    /// Largest random extra delay per delivery, uniform in `0..=jitter`; reorders deliveries.
    /// Default 0.
    pub jitter: Duration,
    /// One-way latency of a datagram. Default 1 ms.
    pub udp_latency: Duration,
    /// UDP broadcast loops back to the sender (the engine must drop its own datagrams, spec §7).
    /// Default true.
    pub udp_loopback: bool,
    /// The BLE model.
    pub ble: BleSimConfig,
    /// Most events kept per node for [`Sim::events`](super::Sim::events); the oldest go first
    /// (counted in [`NodeSimStats::events_dropped`](super::NodeSimStats::events_dropped)).
    /// Default 10 000.
    pub event_log_capacity: usize,
    /// Most finished advertising periods kept for [`Sim::timeline`](super::Sim::timeline);
    /// the oldest go first. Default 10 000.
    pub timeline_capacity: usize,
    /// Most events one [`Sim::run_until`](super::Sim::run_until) or
    /// [`Sim::run_until_quiet`](super::Sim::run_until_quiet) call processes before it gives up
    /// (a bound for engines or hooks that answer each other forever at zero latency).
    /// Default 100 000 000.
    pub max_steps_per_run: u64,
}

impl SimConfig {
    /// Realistic defaults (see the field docs) with `seed`.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            range_m: 30.0,
            distance_exponent: 2.0,
            loss: 0.0,
            duplicate: 0.0,
            jitter: Duration::ZERO,
            udp_latency: Duration::from_millis(1),
            udp_loopback: true,
            ble: BleSimConfig::default(),
            event_log_capacity: 10_000,
            timeline_capacity: 10_000,
            max_steps_per_run: 100_000_000,
        }
    }

    /// A medium that loses nothing in range: p0 = 1, distance factor off (k = ∞ in effect),
    /// no collisions, no extra loss, duplication or jitter. Stale UUIDs stay on (they lose
    /// nothing; the CRC resolves them). For functional tests.
    pub fn ideal(seed: u64) -> SimConfig {
        let mut c = SimConfig::new(seed);
        c.distance_exponent = f64::INFINITY;
        c.ble.p0 = 1.0;
        c.ble.collision_loss = 0.0;
        c
    }

    /// Probability that one BLE packet from distance `d` metres is received, before collisions
    /// and [`SimConfig::loss`]: `p0 · (1 − (d / range)^k)` inside range, 0 beyond.
    pub fn ble_reception_probability(&self, d: f64) -> f64 {
        if d.partial_cmp(&self.range_m).is_none_or(Ordering::is_gt) {
            return 0.0;
        }
        let ratio = if self.range_m > 0.0 {
            d / self.range_m
        } else {
            0.0
        };
        let falloff = if ratio >= 1.0 {
            // At the edge (d == range) the factor is 0 whatever k is, except k = ∞ (no falloff).
            if self.distance_exponent.is_infinite() {
                1.0
            } else {
                0.0
            }
        } else {
            1.0 - ratio.powf(self.distance_exponent)
        };
        (self.ble.p0 * falloff).clamp(0.0, 1.0)
    }

    /// Mean RSSI in dBm at `d` metres (log-distance path loss; distances under 0.1 m act as
    /// 0.1 m). Noise ([`BleSimConfig::rssi_noise_db`]) is added per packet by the medium.
    pub fn mean_rssi(&self, d: f64) -> f64 {
        let d = d.max(0.1);
        self.ble.rssi_at_1m - 10.0 * self.ble.path_loss_exponent * d.log10()
    }
}

impl Default for SimConfig {
    /// [`SimConfig::new`] with seed 0.
    fn default() -> SimConfig {
        SimConfig::new(0)
    }
}
