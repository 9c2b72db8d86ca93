//! A simulated BLE radio on tokio: the real [`Scheduler`](crate::scheduler::Scheduler) and
//! [`ScanTracker`] over an in-process broadcast medium, so examples and tests run the hardware's
//! scheduling code on a machine without Bluetooth.
//!
//! # The model
//! - **Sender.** [`SimRadio`] is a [`Radio`]: while an instance advertises a frame it emits one
//!   advertising packet at `start + advDelay`, then every `adv_interval + advDelay` (advDelay
//!   uniform in `0..=adv_delay_max`, as in BLE), until the scheduler stops it. Instances of one
//!   node advertise in parallel.
//! - **Air.** Every packet reaches every *other* member, each copy lost with probability
//!   [`SimAirConfig::packet_loss`] (seeded), after no delay. Its scan response (the name) is
//!   lost on its own with probability [`SimAirConfig::scan_response_loss`]: the receiver then
//!   sees the new UUIDs beside the previous name. No positions, no collisions (see
//!   `beets_core::sim` for a medium with distance and collision models).
//! - **Receiver: a BlueZ model.** Each member keeps BlueZ-like device objects per sender
//!   address: the name is replaced, and the UUIDs are the stale-UUID model of
//!   [`beets_core::sim::StaleUuids`] (the one the core medium uses too): by default
//!   ([`StaleUuidConfig::BLUEZ`]) the set only grows (stale UUIDs persist, BlueZ
//!   `device_add_eir_uuids`) until the scanner forgets the device; see
//!   [`SimAirConfig::stale_uuids`]. Name and UUID changes are reported as separate updates in a
//!   random order. The member's [`ScanTracker`] turns them into frames exactly as the BlueZ
//!   backend does.
//!
//! Time is tokio's: under `#[tokio::test(start_paused = true)]` a minute of radio runs in
//! milliseconds. Determinism: loss and delays come from one seeded RNG, so a run on a
//! single-threaded runtime with paused time repeats exactly.
//!
//! ```
//! use beets_ble::sim::{SimAir, SimAirConfig};
//! use beets_ble::BleConfig;
//! use beets_core::node::{Node, NodeConfig, Transport};
//! use beets_core::{Template, Time, Tuple};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let air = SimAir::new(SimAirConfig::default());
//! let cfg = BleConfig::default();
//! let node = |name: &str, seed| Node::new(NodeConfig::new(Transport::Ble, name).unwrap(), seed, Time::ZERO);
//! let a = air.spawn_node("a", node("a", 1), [0xC0, 0, 0, 0, 0, 1], &cfg);
//! let b = air.spawn_node("b", node("b", 2), [0xC0, 0, 0, 0, 0, 2], &cfg);
//! let reading: Tuple = r#"("SENSOR", "LIGHT", 512)"#.parse()?;
//! a.handle().out(reading.clone(), None).await?;
//! tokio::time::sleep(Duration::from_secs(1)).await;
//! assert_eq!(b.handle().host_count(Template::exact(&reading)).await?, 1);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beets_core::Time;
use beets_core::ble::BleAdvertisement;
use beets_core::driver::ReceivedFrame;
use beets_core::node::{Node, Transport};
use beets_core::sim::{StaleUuidConfig, StaleUuids};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::node::{BleConfig, BleNode, Reception, SpawnError};
use crate::radio::{Radio, SharedScanStats, lock};
use crate::scan::{DeviceUpdate, ScanConfig, ScanTracker};
use crate::scheduler::AdvertisingLimits;
use crate::uuid::uuid128_from_u16;

/// The medium's knobs. Build with `SimAirConfig { packet_loss: 0.5, ..SimAirConfig::default() }`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimAirConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Advertising interval: time between two packets of one instance. Default 100 ms.
    pub adv_interval: Duration,
    /// Largest random advDelay added to every interval (BLE: 0..=10 ms). Default 10 ms.
    pub adv_delay_max: Duration,
    /// Probability that one packet copy is lost at one receiver. Default 0.
    pub packet_loss: f64,
    /// Probability that a received packet's scan response is lost (UUIDs without the name).
    /// Default 0.
    pub scan_response_loss: f64,
    /// RSSI every receiver reports, dBm. Default −60.
    pub rssi: i16,
    /// Advertising instances each simulated controller offers. Default 1.
    pub instances: usize,
    /// How long a sender's earlier UUIDs linger in a receiver's device object. Default
    /// [`StaleUuidConfig::BLUEZ`]: until the scanner forgets the device.
    pub stale_uuids: StaleUuidConfig,
}

impl Default for SimAirConfig {
    fn default() -> SimAirConfig {
        SimAirConfig {
            seed: 0,
            adv_interval: Duration::from_millis(100),
            adv_delay_max: Duration::from_millis(10),
            packet_loss: 0.0,
            scan_response_loss: 0.0,
            rssi: -60,
            instances: 1,
            stale_uuids: StaleUuidConfig::BLUEZ,
        }
    }
}

/// Counters of the medium.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AirStats {
    /// Advertising packets sent (all members).
    pub packets_sent: u64,
    /// Packet copies delivered to a receiver.
    pub delivered: u64,
    /// Packet copies lost.
    pub lost: u64,
    /// Delivered copies whose scan response was lost.
    pub scan_responses_lost: u64,
}

#[derive(Debug)]
struct Packet {
    from: [u8; 6],
    adv: Arc<BleAdvertisement>,
    with_name: bool,
    name_first: bool,
}

#[derive(Debug)]
struct Member {
    addr: [u8; 6],
    tx: mpsc::UnboundedSender<Packet>,
}

#[derive(Debug)]
struct Air {
    config: SimAirConfig,
    rng: SmallRng,
    members: Vec<Member>,
    stats: AirStats,
}

/// The simulated medium. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct SimAir {
    inner: Arc<Mutex<Air>>,
}

impl SimAir {
    /// An empty medium.
    pub fn new(config: SimAirConfig) -> SimAir {
        SimAir {
            inner: Arc::new(Mutex::new(Air {
                rng: SmallRng::seed_from_u64(config.seed),
                config,
                members: Vec::new(),
                stats: AirStats::default(),
            })),
        }
    }

    /// The configuration.
    pub fn config(&self) -> SimAirConfig {
        lock(&self.inner).config
    }

    /// The counters.
    pub fn stats(&self) -> AirStats {
        lock(&self.inner).stats
    }

    /// Joins the medium at address `addr`: a radio to send with and a [`Reception`] fed by a
    /// BlueZ-model scanner (spawned on the current tokio runtime). `key` is the space key.
    pub fn join(
        &self,
        addr: [u8; 6],
        key: impl Into<crate::scan::FrameKey>,
        scan: ScanConfig,
        frame_channel: usize,
    ) -> (SimRadio, Reception) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (instances, rssi, stale) = {
            let mut air = lock(&self.inner);
            air.members.push(Member { addr, tx });
            (
                air.config.instances,
                air.config.rssi,
                air.config.stale_uuids,
            )
        };
        let (frames_tx, frames_rx) = mpsc::channel(frame_channel.max(1));
        let stats = SharedScanStats::new();
        let task = tokio::spawn(receiver(
            rx,
            ScanTracker::new(scan, key),
            frames_tx,
            stats.clone(),
            rssi,
            stale,
        ));
        let radio = SimRadio {
            air: self.clone(),
            addr,
            limits: AdvertisingLimits::legacy(instances),
            tasks: (0..instances).map(|_| None).collect(),
        };
        (radio, Reception::new(frames_rx, stats, Some(task)))
    }

    /// Joins the medium and runs `node` on it with `config` (the usual way to build a simulated
    /// node in tests and demos).
    ///
    /// # Panics
    /// When [`SimAir::try_spawn_node`] fails: `node` was not built for `Transport::Ble`, or no
    /// tokio runtime runs.
    pub fn spawn_node(&self, name: &str, node: Node, addr: [u8; 6], config: &BleConfig) -> BleNode {
        match self.try_spawn_node(name, node, addr, config) {
            Ok(n) => n,
            Err(e) => panic!("SimAir::spawn_node({name}): {e}"),
        }
    }

    /// As [`SimAir::spawn_node`], returning the refusal instead of panicking.
    ///
    /// # Errors
    /// As [`BleNode::spawn`]: [`SpawnError::WrongTransport`] for a node not built for
    /// `Transport::Ble`, [`SpawnError::NoRuntime`] outside a tokio runtime. The medium is left
    /// as it was.
    pub fn try_spawn_node(
        &self,
        name: &str,
        node: Node,
        addr: [u8; 6],
        config: &BleConfig,
    ) -> Result<BleNode, SpawnError> {
        if node.config().transport != Transport::Ble {
            return Err(SpawnError::WrongTransport(node.config().transport));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SpawnError::NoRuntime);
        }
        let key = crate::scan::FrameKey::of(node.config());
        let (radio, reception) = self.join(addr, key, config.scan, config.frame_channel);
        BleNode::spawn(name, node, config, radio, reception)
    }

    /// One packet of `adv` from `from` to every other member.
    fn transmit(&self, from: [u8; 6], adv: &Arc<BleAdvertisement>) {
        let mut air = lock(&self.inner);
        let Air {
            config,
            rng,
            members,
            stats,
        } = &mut *air;
        stats.packets_sent += 1;
        members.retain(|m| !m.tx.is_closed());
        for m in members.iter().filter(|m| m.addr != from) {
            if chance(rng, config.packet_loss) {
                stats.lost += 1;
                continue;
            }
            let with_name = !chance(rng, config.scan_response_loss);
            if !with_name {
                stats.scan_responses_lost += 1;
            }
            let name_first = rng.random::<bool>();
            stats.delivered += 1;
            let _ = m.tx.send(Packet {
                from,
                adv: adv.clone(),
                with_name,
                name_first,
            });
        }
    }

    fn delay(&self, base: Duration) -> Duration {
        let mut air = lock(&self.inner);
        let max = u64::try_from(air.config.adv_delay_max.as_millis()).unwrap_or(0);
        let extra = if max == 0 {
            0
        } else {
            air.rng.random_range(0..=max)
        };
        base + Duration::from_millis(extra)
    }
}

fn chance(rng: &mut SmallRng, p: f64) -> bool {
    if p >= 1.0 {
        true
    } else if p > 0.0 {
        rng.random::<f64>() < p
    } else {
        false
    }
}

/// A member's sending side: one packet task per advertising instance.
#[derive(Debug)]
pub struct SimRadio {
    air: SimAir,
    addr: [u8; 6],
    limits: AdvertisingLimits,
    tasks: Vec<Option<JoinHandle<()>>>,
}

impl SimRadio {
    /// This member's address.
    pub fn addr(&self) -> [u8; 6] {
        self.addr
    }
}

impl Radio for SimRadio {
    fn limits(&self) -> AdvertisingLimits {
        self.limits
    }

    async fn start(&mut self, instance: usize, adv: &BleAdvertisement) -> io::Result<()> {
        let slot = self.tasks.get_mut(instance).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no such advertising instance")
        })?;
        if let Some(old) = slot.take() {
            old.abort();
        }
        let air = self.air.clone();
        let from = self.addr;
        let adv = Arc::new(adv.clone());
        let interval = air.config().adv_interval.max(Duration::from_millis(1));
        *slot = Some(tokio::spawn(async move {
            let mut next = Instant::now() + air.delay(Duration::ZERO);
            loop {
                tokio::time::sleep_until(next).await;
                air.transmit(from, &adv);
                next += air.delay(interval);
            }
        }));
        Ok(())
    }

    async fn stop(&mut self, instance: usize) -> io::Result<()> {
        if let Some(t) = self.tasks.get_mut(instance).and_then(Option::take) {
            t.abort();
        }
        Ok(())
    }
}

impl Drop for SimRadio {
    fn drop(&mut self) {
        for t in self.tasks.iter_mut().filter_map(Option::take) {
            t.abort();
        }
    }
}

/// What a BlueZ device object holds for one sender address.
#[derive(Debug, Default)]
struct SimDevice {
    name: Option<String>,
    /// The UUIDs of the frames heard (the stale-UUID model).
    heard: StaleUuids,
    /// The UUID set last reported.
    uuids: Vec<u16>,
}

/// A member's receiving side: BlueZ device model → tracker → engine.
async fn receiver(
    mut rx: mpsc::UnboundedReceiver<Packet>,
    mut tracker: ScanTracker,
    frames: mpsc::Sender<ReceivedFrame>,
    stats: SharedScanStats,
    rssi: i16,
    stale: StaleUuidConfig,
) {
    let epoch = Instant::now();
    let mut devices: HashMap<[u8; 6], SimDevice> = HashMap::new();
    while let Some(p) = rx.recv().await {
        let now = Time::from_millis(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(0));
        let dev = devices.entry(p.from).or_default();
        let mut updates = Vec::with_capacity(2);
        let uuids = dev.heard.hear(now, &p.adv.service_uuids, &stale);
        if uuids != dev.uuids {
            dev.uuids = uuids;
            updates.push(DeviceUpdate::uuids(
                dev.uuids.iter().map(|&v| uuid128_from_u16(v)),
            ));
        }
        if p.with_name && dev.name.as_deref() != Some(p.adv.local_name.as_str()) {
            dev.name = Some(p.adv.local_name.to_string());
            let u = DeviceUpdate::name(&p.adv.local_name);
            if p.name_first {
                updates.insert(0, u);
            } else {
                updates.push(u);
            }
        }
        for u in updates {
            let out = tracker.update(now, p.from, u.with_rssi(Some(rssi)));
            if out.forget {
                devices.remove(&p.from);
                tracker.removed(p.from);
            }
            if let Some(f) = out.frame
                && frames.send(f).await.is_err()
            {
                tracker.stats_mut().channel_closed += 1;
                stats.set(tracker.stats());
                return;
            }
            if out.forget {
                break;
            }
        }
        stats.set(tracker.stats());
    }
}
