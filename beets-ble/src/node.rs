//! A running BLE node: the engine's async driver, the advertiser task and a scanner, glued.

use std::sync::Arc;
use std::time::Duration;

use beets_core::driver::{self, DriverStats, ReceivedFrame, SpaceHandle};
use beets_core::node::{Node, Transport};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::radio::{
    AdvertisingStatus, Radio, RadioStats, SchedulerSink, Shared, SharedScanStats, run_advertiser,
};
use crate::scan::{ScanConfig, ScanStats};
use crate::scheduler::{QueuePolicy, Scheduler, SchedulerConfig, SchedulerStats};

/// Default bound of the channel from a scanner to the engine: 256 frames.
pub const DEFAULT_FRAME_CHANNEL: usize = 256;
/// Default requested advertising interval: 100 ms (the paper's t_sw; BLE allows 20 ms and up).
pub const DEFAULT_ADV_INTERVAL: Duration = Duration::from_millis(100);
/// Default upper bound on advertising instances used: 4.
pub const DEFAULT_MAX_INSTANCES: usize = 4;

/// Everything a BLE node can be told. Build with `BleConfig { delta_t: …, ..BleConfig::default() }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BleConfig {
    /// Δt: how long each frame is advertised before the next replaces it. Default 500 ms.
    pub delta_t: Duration,
    /// Frames waiting for an advertising instance. Default 16.
    pub queue_capacity: usize,
    /// What a full sender queue does. Default [`QueuePolicy::DropOldest`]. With
    /// [`QueuePolicy::Refuse`] a refused frame is logged, counted in
    /// [`SchedulerStats::refused`] and in the driver's `send_errors`, and the `out` or `notify`
    /// that produced it returns [`ClientError::Refused`](beets_core::driver::ClientError::Refused)
    /// naming the queue; a refused `rd`/`inp`/`test`/`where` frame ends as its timeout (`None`).
    pub queue_policy: QueuePolicy,
    /// Most advertising instances used; the node uses `min(max_instances, what the controller
    /// has free)`. Default 4; 0 makes a receive-only node.
    pub max_instances: usize,
    /// BlueZ: use several instances even when the controller does not advertise them in
    /// parallel (no `HardwareOffload` feature). The kernel then rotates instances in software,
    /// each for its `Duration` (2 s by default), which defeats a Δt below that. Default false:
    /// without hardware offload one instance is used.
    pub software_rotation: bool,
    /// Advertising interval to request (BlueZ `MinInterval`/`MaxInterval`). `None` leaves the
    /// controller default. Default 100 ms. With BlueZ 5.66 and Linux 6.1 it is honoured for
    /// connectable advertising and on controllers with extended advertising; for a legacy
    /// controller's non-connectable advertising the kernel uses its own 100–150 ms.
    pub adv_interval: Option<Duration>,
    /// Connectable (`peripheral`, ADV_IND) or non-connectable (`broadcast`, ADV_SCAN_IND)
    /// advertising. Default [`Connectable::Auto`]: non-connectable (spec §6) where the controller
    /// allows it while scanning, connectable otherwise; see [`Connectable`] for the rule and
    /// what connectable advertising costs. Only the BlueZ backend uses it.
    pub connectable: Connectable,
    /// Scanner knobs.
    pub scan: ScanConfig,
    /// Bound of the scanner → engine channel. Default 256.
    pub frame_channel: usize,
}

impl Default for BleConfig {
    fn default() -> BleConfig {
        let s = SchedulerConfig::default();
        BleConfig {
            delta_t: s.delta_t,
            queue_capacity: s.queue_capacity,
            queue_policy: s.queue_policy,
            max_instances: DEFAULT_MAX_INSTANCES,
            software_rotation: false,
            adv_interval: Some(DEFAULT_ADV_INTERVAL),
            connectable: Connectable::Auto,
            scan: ScanConfig::default(),
            frame_channel: DEFAULT_FRAME_CHANNEL,
        }
    }
}

impl BleConfig {
    /// The scheduler part.
    pub fn scheduler(&self) -> SchedulerConfig {
        SchedulerConfig {
            delta_t: self.delta_t,
            queue_capacity: self.queue_capacity,
            queue_policy: self.queue_policy,
        }
    }
}

/// Whether BeeTS frames go out connectable. Spec §6 asks for non-connectable, scannable
/// advertisements.
///
/// Why it is a choice: on a *legacy* controller (no extended advertising) without privacy, Linux
/// gives every non-connectable advertisement a fresh non-resolvable random address, and `LE Set
/// Random Address` is disallowed while the same controller scans (Bluetooth Core Vol 4 Part E
/// §7.8.4). A BeeTS node always scans, so there its non-connectable frames never go on air (seen
/// with BlueZ 5.66 and Linux 6.1 in the tier-3 QEMU run: `Command Disallowed`, then `Add Extended
/// Advertising Data` fails with status 0x03). Connectable advertisements use the adapter's
/// identity address and work. A controller with extended advertising sets a random address per
/// advertising set, so non-connectable works there (tier 3: every frame and an `rd` delivered).
///
/// What connectable costs: the adapter's **public address is broadcast and stays the same**, so
/// anyone in range can recognise and track the node across frames and days; and the node
/// **accepts connection requests** (BeeTS itself offers no service and never pairs, but
/// bluetoothd answers the connection and whatever GATT services other programs registered).
/// Non-connectable frames come from a fresh random address each time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Connectable {
    /// Per controller: non-connectable when it has extended advertising (BlueZ
    /// `SupportedFeatures` has `HardwareOffload` or `CanSetTxPower`, or
    /// `SupportedCapabilities["MaxAdvLen"]` > 31), connectable otherwise. BlueZ 5.66 does not
    /// report whether privacy is on; with `Privacy = device` (or `network`) in bluetoothd's
    /// `main.conf` a legacy controller advertises non-connectable fine, so force
    /// [`Connectable::NonConnectable`] there. The backend logs the choice and the reason.
    #[default]
    Auto,
    /// Always connectable (ADV_IND): works on every controller, at the costs above.
    Connectable,
    /// Always non-connectable (ADV_SCAN_IND), as spec §6: right for advertise-only senders,
    /// for controllers with privacy on, and for extended advertising.
    NonConnectable,
}

/// What a scanner hands to a node: received frames, its counters and its task.
#[derive(Debug)]
pub struct Reception {
    frames: mpsc::Receiver<ReceivedFrame>,
    stats: SharedScanStats,
    task: Option<JoinHandle<()>>,
}

impl Reception {
    /// Wraps a scanner: `frames` from its task, `stats` it keeps current, `task` aborted when
    /// the node is closed or dropped.
    pub fn new(
        frames: mpsc::Receiver<ReceivedFrame>,
        stats: SharedScanStats,
        task: Option<JoinHandle<()>>,
    ) -> Reception {
        Reception {
            frames,
            stats,
            task,
        }
    }

    /// The frames, the counters and the scanner task.
    #[allow(clippy::type_complexity)]
    pub(crate) fn into_parts(
        self,
    ) -> (
        mpsc::Receiver<ReceivedFrame>,
        SharedScanStats,
        Option<JoinHandle<()>>,
    ) {
        (self.frames, self.stats, self.task)
    }

    /// No scanner: a send-only node.
    pub fn none() -> Reception {
        let (_, frames) = mpsc::channel(1);
        Reception::new(frames, SharedScanStats::new(), None)
    }
}

/// All counters of a BLE node besides the engine's (see [`SpaceHandle::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BleStats {
    /// The sender queue and rotation.
    pub scheduler: SchedulerStats,
    /// Radio calls.
    pub radio: RadioStats,
    /// The scanner.
    pub scan: ScanStats,
    /// Frames waiting in the sender queue now.
    pub queue_len: usize,
    /// Advertising instances in use.
    pub instances: usize,
    /// What the radio reports about the controller: connectable or not, the instance counts it
    /// last read, other programs' advertisements, frames likely starved by them.
    pub advertising: AdvertisingStatus,
}

/// Why [`BleNode::spawn`] refused to start a node.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The node was built for another transport: its frames could not be sent as BLE
    /// advertisements.
    #[error("a BLE node needs a node built with Transport::Ble, this one was built for {0:?}")]
    WrongTransport(Transport),
    /// Called outside a tokio runtime.
    #[error("BleNode::spawn must be called inside a tokio runtime")]
    NoRuntime,
    /// The node configuration was refused (e.g. a name outside 1..=16 bytes).
    #[error(transparent)]
    BadConfig(beets_core::NodeError),
    /// No seed was given and the OS gave no randomness.
    #[error("no OS randomness for the node seed: {0}")]
    NoRandomness(String),
}

/// A running BeeTS node on BLE. Use [`BleNode::handle`] for `out`/`rd`/`inp`/`test`/`notify`.
///
/// Keep it alive while the node should run: dropping it stops the scanner and, once every
/// [`SpaceHandle`] clone is gone, the engine and the advertiser. [`BleNode::close`] stops
/// everything and withdraws every advertisement.
#[derive(Debug)]
pub struct BleNode {
    space: SpaceHandle,
    shared: Arc<Shared>,
    driver: Option<JoinHandle<DriverStats>>,
    advertiser: Option<JoinHandle<()>>,
    scanner: Option<JoinHandle<()>>,
}

impl BleNode {
    /// A builder for a BLE node: the name, then what differs from the defaults, then
    /// [`spawn_sim`](crate::BleNodeBuilder::spawn_sim) or `spawn_bluez` (feature `bluer`).
    pub fn builder(name: &str) -> crate::BleNodeBuilder {
        crate::BleNodeBuilder::new(name)
    }

    /// Runs `node` (built for `Transport::Ble`) with `radio` sending and `reception` receiving,
    /// on the current tokio runtime. `name` labels the logs.
    ///
    /// The number of instances is `min(config.max_instances, radio.limits().instances)`.
    ///
    /// # Errors
    /// [`SpawnError::WrongTransport`] when `node` was not built for [`Transport::Ble`] (a UDP
    /// node's datagrams cannot go out as advertisements); [`SpawnError::NoRuntime`] outside a
    /// tokio runtime. Nothing is started then.
    pub fn spawn<R: Radio>(
        name: &str,
        node: Node,
        config: &BleConfig,
        radio: R,
        reception: Reception,
    ) -> Result<BleNode, SpawnError> {
        let refused = if node.config().transport != Transport::Ble {
            Some(SpawnError::WrongTransport(node.config().transport))
        } else if tokio::runtime::Handle::try_current().is_err() {
            Some(SpawnError::NoRuntime)
        } else {
            None
        };
        if let Some(e) = refused {
            if let Some(task) = reception.task {
                task.abort();
            }
            return Err(e);
        }
        let mut limits = radio.limits();
        limits.instances = limits.instances.min(config.max_instances);
        let scheduler = Scheduler::new(config.scheduler(), limits);
        let shared = Shared::new(scheduler, reception.stats);
        shared.set_advertising(radio.status());
        let sink = SchedulerSink {
            shared: shared.clone(),
        };
        let (space, driver) = driver::spawn(name.to_owned(), node, sink, reception.frames);
        let advertiser = tokio::spawn(run_advertiser(shared.clone(), radio));
        Ok(BleNode {
            space,
            shared,
            driver: Some(driver),
            advertiser: Some(advertiser),
            scanner: reception.task,
        })
    }

    /// The handle for `out`, `notify`, `rd`, `inp`, `test`, `where`, `host_*`, `subscribe`
    /// (the same [`SpaceHandle`] as every backend's `handle()`; clone it to share).
    pub fn handle(&self) -> &SpaceHandle {
        &self.space
    }

    /// The BLE counters now.
    pub fn stats(&self) -> BleStats {
        self.shared.stats()
    }

    /// Stops the node: closes the space (pending requests end with `ClientError::Closed`),
    /// withdraws every advertisement and stops the scanner. Returns the engine's final counters
    /// (`None` if the driver task panicked).
    pub async fn close(mut self) -> Option<DriverStats> {
        self.space.close().await;
        let stats = match self.driver.take() {
            Some(d) => d.await.ok(),
            None => None,
        };
        self.shared.close();
        if let Some(a) = self.advertiser.take() {
            let _ = a.await;
        }
        if let Some(s) = self.scanner.take() {
            s.abort();
        }
        stats
    }
}

impl Drop for BleNode {
    fn drop(&mut self) {
        if let Some(s) = self.scanner.take() {
            s.abort();
        }
    }
}
