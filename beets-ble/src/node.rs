//! A running BLE node: the engine's async driver, the advertiser task and a scanner, glued.

use std::sync::Arc;
use std::time::Duration;

use beets_core::driver::{self, DriverStats, ReceivedFrame, SpaceHandle};
use beets_core::node::Node;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::radio::{Radio, RadioStats, SchedulerSink, Shared, SharedScanStats, run_advertiser};
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
    /// Advertising interval to request (BlueZ `MinInterval`/`MaxInterval`, honoured only with
    /// extended advertising; `refresh_legacy_adv` in BlueZ's `src/advertising.c` ignores it).
    /// `None` leaves the controller default. Default 100 ms.
    pub adv_interval: Option<Duration>,
    /// Advertise connectable (`peripheral`, ADV_IND) rather than non-connectable (`broadcast`,
    /// ADV_SCAN_IND). Default true: a node that scans cannot send non-connectable advertisements
    /// on a legacy controller, because the kernel gives each a fresh non-resolvable random
    /// address and `LE Set Random Address` is disallowed while scanning is enabled (Bluetooth
    /// Core Vol 4 Part E §7.8.4; seen with BlueZ 5.66 and Linux 6.1 in the tier-3 QEMU run:
    /// `Add Extended Advertising Data` fails with status 0x03 after `Command Disallowed`).
    /// Connectable advertisements use the adapter's identity address. BeeTS accepts no
    /// connections itself; set false for advertise-only senders that do not scan.
    pub connectable: bool,
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
            connectable: true,
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
}

/// A running BeeTS node on BLE. Use [`BleNode::space`] for `out`/`rd`/`inp`/`test`/`notify`.
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
    /// Runs `node` (built for `Transport::Ble`) with `radio` sending and `reception` receiving,
    /// on the current tokio runtime. `name` labels the logs.
    ///
    /// The number of instances is `min(config.max_instances, radio.limits().instances)`.
    pub fn spawn<R: Radio>(
        name: &str,
        node: Node,
        config: &BleConfig,
        radio: R,
        reception: Reception,
    ) -> BleNode {
        let mut limits = radio.limits();
        limits.instances = limits.instances.min(config.max_instances);
        let scheduler = Scheduler::new(config.scheduler(), limits);
        let shared = Shared::new(scheduler, reception.stats);
        let sink = SchedulerSink {
            shared: shared.clone(),
        };
        let (space, driver) = driver::spawn(name.to_owned(), node, sink, reception.frames);
        let advertiser = tokio::spawn(run_advertiser(shared.clone(), radio));
        BleNode {
            space,
            shared,
            driver: Some(driver),
            advertiser: Some(advertiser),
            scanner: reception.task,
        }
    }

    /// The space: async `out`, `notify`, `rd`, `inp`, `test`, `where`, `host_*`, `subscribe`.
    pub fn space(&self) -> &SpaceHandle {
        &self.space
    }

    /// The BLE counters now.
    pub fn stats(&self) -> BleStats {
        let s = self.shared.scheduler();
        BleStats {
            scheduler: s.stats(),
            radio: self.shared.radio_stats(),
            scan: self.shared.scan.get(),
            queue_len: s.queue_len(),
            instances: s.limits().instances,
        }
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
