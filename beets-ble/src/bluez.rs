//! BlueZ backend through [`bluer`] (feature `bluer`, Linux): advertise and scan.
//!
//! - **Sending.** [`BluezRadio`] registers one `LEAdvertisingManager1` advertisement per frame
//!   and instance: type `broadcast` (non-connectable) or `peripheral` (connectable), chosen per
//!   controller ([`Connectable`], logged at start; scannable either way because BlueZ puts
//!   `LocalName` in the scan response, `generate_scan_rsp` in `src/advertising.c`),
//!   `ServiceUUIDs` = the frame's
//!   16-bit values on the base UUID, `LocalName` = the ASCII85 name, and the requested
//!   `MinInterval`/`MaxInterval`. Replacing a frame unregisters the old advertisement (dropping
//!   bluer's `AdvertisementHandle`) and registers the next. Instances:
//!   `min(BleConfig::max_instances, SupportedInstances)`, and only 1 unless the controller
//!   reports `HardwareOffload` (see [`BleConfig::software_rotation`]). Frame sizes are checked
//!   against `SupportedCapabilities` `MaxAdvLen`/`MaxScnRspLen` before anything is registered.
//! - **Receiving.** [`scanner`] sets the discovery filter `Transport = le`,
//!   `DuplicateData = true` and runs bluer's discovery (BlueZ discovery scans actively, so scan
//!   responses, which carry the name, are requested); a flag-less broadcast advertisement is
//!   only reported by BlueZ during *filtered* discovery (`device_is_discoverable` in
//!   `src/adapter.c`), which bluer always uses. Each device's `Name`, `UUIDs` and `RSSI` changes
//!   feed a [`ScanTracker`]; devices are removed (`RemoveDevice`) after decoded frames; discovery
//!   restarts every [`ScanConfig::restart_every`](crate::scan::ScanConfig::restart_every).
//!
//! # Sharing the adapter with other advertisers
//! Other programs' advertisements on the same adapter (`bluetoothctl advertise`, a beacon
//! daemon, another BeeTS node) take instances, and on a controller that does not advertise
//! instances in parallel (no `HardwareOffload`, i.e. no extended advertising) they can starve
//! BeeTS almost completely: Linux 6.1 puts a newly added instance on air at once only when no
//! other instance is advertising, else it waits until the one on air has had its duration (2 s),
//! and BeeTS replaces its advertisement every Δt, so behind one long-lived foreign advertisement
//! most frames never go on air (tier 3: 1 of 6 and 0 of 30 delivered; behind a second BeeTS
//! node 22–24 of 30). [`BluezRadio`] reads `ActiveInstances` and
//! `SupportedInstances` at start and at the end of every frame's period, warns once with the
//! numbers when another program advertises, and counts the frames likely lost that way in
//! [`AdvertisingStatus::starved_frames`] (in [`BleStats::advertising`](crate::BleStats)). Give
//! BeeTS the adapter to itself, use a controller with extended advertising, or a Δt longer than
//! the kernel's instance rotation (2 s).
//!
//! A controller may also hold fewer advertising sets than BlueZ announces in
//! `SupportedInstances` (tier 3: btvirt's 5.x controller announces 3 and refuses the third with
//! `Memory Capacity Exceeded`). The first refused registration while other instances of the node
//! advertise lowers the node's instance count for good ([`AdvertisingStatus::instance_limit`]),
//! and the refused frame is sent again.
//!
//! # Requirements
//! - `bluetoothd` running, BlueZ ≥ 5.56 recommended (earlier 5.x lacks `MinInterval`/
//!   `MaxInterval` and may lack `SupportedCapabilities`, in which case 31/31 bytes are assumed).
//! - The adapter powered (`Adapter::set_powered(true)`).
//! - D-Bus permission to call `org.bluez` on the system bus: root, or membership of the group
//!   the distribution's `/etc/dbus-1/system.d/bluetooth.conf` allows (`bluetooth` on Debian and
//!   Raspberry Pi OS; some distributions allow any console user).
//!
//! # Not done
//! Extended advertising (longer data), periodic advertising, connections, GATT. Nothing here
//! changes the adapter's power, name, or discoverable state.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::pin::Pin;
use std::time::Duration;

use beets_core::Time;
use beets_core::ble::BleAdvertisement;
use beets_core::driver::ReceivedFrame;
use beets_core::node::{Node, Transport};
use bluer::adv::{Advertisement, AdvertisementHandle, PlatformFeature, Type};
use bluer::{
    Adapter, AdapterEvent, Address, DeviceEvent, DeviceProperty, DiscoveryFilter,
    DiscoveryTransport, ErrorKind, Uuid,
};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::node::{BleConfig, BleNode, Connectable, Reception, SpawnError};
use crate::radio::{AdvertisingStatus, Radio, SharedScanStats};
use crate::scan::{DeviceUpdate, ScanOutcome, ScanTracker};
use crate::scheduler::{AdvertisingLimits, LEGACY_DATA_LEN};
use crate::uuid::uuid128_from_u16;

/// Times a registration refused with `NotPermitted` ("Maximum advertisements reached") is
/// retried: bluer unregisters a dropped advertisement from a spawned task, so the next
/// registration can overtake it.
const REGISTER_RETRIES: u32 = 8;
/// First retry delay; doubles each time.
const REGISTER_RETRY_DELAY: Duration = Duration::from_millis(5);
/// How long an advertisement this radio dropped still counts as its own in `ActiveInstances`
/// (bluer unregisters it from a spawned task, a D-Bus round trip later).
const UNREGISTER_GRACE: Duration = Duration::from_millis(250);
/// Wait before retrying a failed discovery start.
const DISCOVERY_RETRY: Duration = Duration::from_secs(1);

/// Why the BlueZ backend could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BluezError {
    /// A BlueZ call failed.
    #[error(
        "BlueZ: {0} (is bluetoothd running, the adapter present and powered, and may this user \
         call org.bluez on the system bus?)"
    )]
    Bluez(#[from] bluer::Error),
    /// The node could not be started (e.g. it was built for UDP).
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// Every advertising instance is taken.
    #[error(
        "adapter {adapter} has no free advertising instance ({active} registered by this or other \
         programs); stop another advertiser or use a receive-only node"
    )]
    NoAdvertisingInstance {
        /// The adapter.
        adapter: String,
        /// `ActiveInstances`.
        active: u8,
    },
}

/// What the controller offers, as BlueZ reports it (`LEAdvertisingManager1` properties).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ControllerInfo {
    /// `SupportedInstances`: instances still free (BlueZ reports max − registered).
    pub free_instances: u8,
    /// `ActiveInstances`: instances registered now, by anyone.
    pub active_instances: u8,
    /// `SupportedFeatures` contains `HardwareOffload`: instances advertise in parallel.
    pub hardware_offload: bool,
    /// The controller has extended advertising: `SupportedFeatures` contains `HardwareOffload`
    /// or `CanSetTxPower` (Linux reports both only for extended advertising), or `MaxAdvLen`
    /// is over 31.
    pub extended_advertising: bool,
    /// `SupportedCapabilities["MaxAdvLen"]` (31 when BlueZ does not say).
    pub max_adv_len: u8,
    /// `SupportedCapabilities["MaxScnRspLen"]` (31 when BlueZ does not say).
    pub max_scan_rsp_len: u8,
}

impl ControllerInfo {
    /// Reads the advertising manager's properties of `adapter`.
    ///
    /// # Errors
    /// [`BluezError::Bluez`] when the adapter or its advertising manager is missing.
    pub async fn read(adapter: &Adapter) -> Result<ControllerInfo, BluezError> {
        let free_instances = adapter.supported_advertising_instances().await?;
        let active_instances = adapter.active_advertising_instances().await?;
        let features = adapter
            .supported_advertising_features()
            .await?
            .unwrap_or_default();
        let hardware_offload = features.contains(&PlatformFeature::HardwareOffload);
        let can_set_tx_power = features.contains(&PlatformFeature::CanSetTxPower);
        // bluer 0.17 fails to parse SupportedCapabilities when it lacks MinTxPower/MaxTxPower,
        // which bluetoothd omits for controllers without a TX power range (legacy advertising):
        // those have the legacy 31/31 bytes.
        let caps = adapter
            .supported_advertising_capabilities()
            .await
            .ok()
            .flatten();
        let legacy = LEGACY_DATA_LEN as u8;
        let max_adv_len = caps.as_ref().map_or(legacy, |c| c.max_advertisement_length);
        Ok(ControllerInfo {
            free_instances,
            active_instances,
            hardware_offload,
            extended_advertising: hardware_offload || can_set_tx_power || max_adv_len > legacy,
            max_adv_len,
            max_scan_rsp_len: caps.as_ref().map_or(legacy, |c| c.max_scan_response_length),
        })
    }

    /// Whether a node with `mode` advertises connectable on this controller, and why (see
    /// [`Connectable`]).
    pub fn connectable(&self, mode: Connectable) -> ConnectableChoice {
        let (connectable, reason) = match mode {
            Connectable::Connectable => (true, "forced by BleConfig::connectable"),
            Connectable::NonConnectable => (false, "forced by BleConfig::connectable"),
            Connectable::Auto if self.extended_advertising => (
                false,
                "the controller has extended advertising (a random address per advertising set), \
                 so non-connectable advertising works while scanning (spec §6)",
            ),
            Connectable::Auto => (
                true,
                "legacy controller: non-connectable advertising needs a fresh random address, \
                 which the controller refuses while scanning; the adapter's public address is \
                 broadcast instead (with privacy on, set Connectable::NonConnectable)",
            ),
        };
        ConnectableChoice {
            connectable,
            reason,
        }
    }

    /// The limits a node with `config` uses on this controller (0 instances when none is free).
    pub fn limits(&self, config: &BleConfig) -> AdvertisingLimits {
        let mut instances = usize::from(self.free_instances).min(config.max_instances);
        if !self.hardware_offload && !config.software_rotation {
            instances = instances.min(1);
        }
        AdvertisingLimits::new(
            instances,
            usize::from(self.max_adv_len),
            usize::from(self.max_scan_rsp_len),
        )
    }
}

/// Connectable or not, and why ([`ControllerInfo::connectable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectableChoice {
    /// Frames go out connectable (`peripheral`, ADV_IND).
    pub connectable: bool,
    /// Why, in words (logged at start).
    pub reason: &'static str,
}

/// The advertisement BeeTS registers for one frame (spec §6 "Placement"): the UUIDs in the
/// advertising data, the local name in the scan response, `peripheral` (connectable, ADV_IND)
/// when `connectable`, else `broadcast` (non-connectable, scannable) — see [`Connectable`] for
/// when a scanning node needs the former.
pub fn advertisement(
    adv: &BleAdvertisement,
    interval: Option<Duration>,
    connectable: bool,
) -> Advertisement {
    Advertisement {
        advertisement_type: if connectable {
            Type::Peripheral
        } else {
            Type::Broadcast
        },
        service_uuids: adv
            .service_uuids
            .iter()
            .map(|&v| Uuid::from_u128(uuid128_from_u16(v)))
            .collect::<BTreeSet<_>>(),
        local_name: Some(adv.local_name.to_string()),
        min_interval: interval,
        max_interval: interval,
        ..Default::default()
    }
}

/// Advertising through BlueZ: one registered advertisement per busy instance.
pub struct BluezRadio {
    adapter: Adapter,
    limits: AdvertisingLimits,
    interval: Option<Duration>,
    connectable: bool,
    /// The controller advertises instances in parallel (`HardwareOffload`).
    parallel: bool,
    handles: Vec<Option<AdvertisementHandle>>,
    status: AdvertisingStatus,
    warned: bool,
    /// When this radio last dropped advertisement handles: bluer unregisters them from a
    /// spawned task, so BlueZ may still count them for a moment.
    recent_drops: Vec<Instant>,
}

impl std::fmt::Debug for BluezRadio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BluezRadio")
            .field("adapter", &self.adapter.name())
            .field("limits", &self.limits)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl BluezRadio {
    /// Reads the controller's limits and prepares to advertise on `adapter`: chooses
    /// connectable or not ([`ControllerInfo::connectable`], logged at info with the reason) and
    /// warns when other programs already advertise there (see the [module docs](self)).
    ///
    /// # Errors
    /// [`BluezError::Bluez`] when BlueZ cannot be asked; [`BluezError::NoAdvertisingInstance`]
    /// when every instance is taken.
    pub async fn new(adapter: &Adapter, config: &BleConfig) -> Result<BluezRadio, BluezError> {
        let info = ControllerInfo::read(adapter).await?;
        let limits = info.limits(config);
        if limits.instances == 0 {
            return Err(BluezError::NoAdvertisingInstance {
                adapter: adapter.name().to_owned(),
                active: info.active_instances,
            });
        }
        debug!(
            adapter = adapter.name(),
            ?info,
            ?limits,
            "BlueZ advertising"
        );
        let choice = info.connectable(config.connectable);
        info!(
            adapter = adapter.name(),
            connectable = choice.connectable,
            extended_advertising = info.extended_advertising,
            mode = ?config.connectable,
            reason = choice.reason,
            "BeeTS advertises {}",
            if choice.connectable {
                "connectable"
            } else {
                "non-connectable"
            }
        );
        let mut radio = BluezRadio {
            adapter: adapter.clone(),
            limits,
            interval: config.adv_interval,
            connectable: choice.connectable,
            parallel: info.hardware_offload,
            handles: (0..limits.instances).map(|_| None).collect(),
            status: AdvertisingStatus {
                connectable: Some(choice.connectable),
                ..AdvertisingStatus::default()
            },
            warned: false,
            recent_drops: Vec::new(),
        };
        radio.record(info.active_instances, info.free_instances);
        Ok(radio)
    }

    /// Whether frames go out connectable.
    pub fn connectable(&self) -> bool {
        self.connectable
    }

    /// Reads `ActiveInstances` and `SupportedInstances` now and records them. Returns the
    /// number of other programs' advertisements, `None` when BlueZ could not be asked.
    async fn check_instances(&mut self) -> Option<u8> {
        let active = self.adapter.active_advertising_instances().await;
        let free = self.adapter.supported_advertising_instances().await;
        match (active, free) {
            (Ok(active), Ok(free)) => Some(self.record(active, free)),
            (Err(e), _) | (_, Err(e)) => {
                self.status.read_errors += 1;
                debug!(adapter = self.adapter.name(), error = %e, "cannot read advertising instances");
                None
            }
        }
    }

    /// A registration failed while other instances of this node advertise: the controller holds
    /// fewer advertising sets than BlueZ announced (tier 3: btvirt's 5.x controller, 3 announced,
    /// the third refused with `Memory Capacity Exceeded`). Records the lower limit, which the
    /// advertiser applies ([`AdvertisingStatus::instance_limit`]).
    fn refused(&mut self, e: &bluer::Error) {
        let ours = self.handles.iter().flatten().count();
        if ours == 0 || self.status.instance_limit.is_some_and(|n| n <= ours) {
            return;
        }
        warn!(
            adapter = self.adapter.name(),
            instances = self.limits.instances,
            accepted = ours,
            error = %e,
            "the controller refused an advertising instance BlueZ announced as free; using \
             {ours} instance(s) from now on"
        );
        self.status.instance_limit = Some(ours);
    }

    /// Records the counts; warns once when other programs advertise. Returns their number.
    fn record(&mut self, active: u8, free: u8) -> u8 {
        let now = Instant::now();
        self.recent_drops
            .retain(|&t| now.duration_since(t) < UNREGISTER_GRACE);
        let ours = self.handles.iter().flatten().count() + self.recent_drops.len();
        let ours = u8::try_from(ours).unwrap_or(u8::MAX);
        let foreign = active.saturating_sub(ours);
        self.status.active_instances = Some(active);
        self.status.supported_instances = Some(free);
        self.status.foreign_instances = Some(foreign);
        self.status.max_foreign_instances = self.status.max_foreign_instances.max(foreign);
        if foreign > 0 && !self.warned {
            self.warned = true;
            if self.parallel {
                warn!(
                    adapter = self.adapter.name(),
                    active_instances = active,
                    supported_instances = free,
                    ours,
                    foreign,
                    "other programs advertise on this adapter ({foreign} of {active} active \
                     instances, {free} free); the controller advertises instances in parallel"
                );
            } else {
                warn!(
                    adapter = self.adapter.name(),
                    active_instances = active,
                    supported_instances = free,
                    ours,
                    foreign,
                    "other programs advertise on this adapter ({foreign} of {active} active \
                     instances, {free} free) and the controller advertises one instance at a \
                     time: BeeTS frames may never go on air (Linux starts a new instance only \
                     when none is advertising); counted in BleStats::advertising.starved_frames"
                );
            }
        }
        foreign
    }
}

impl Radio for BluezRadio {
    fn limits(&self) -> AdvertisingLimits {
        self.limits
    }

    fn status(&self) -> AdvertisingStatus {
        self.status
    }

    async fn start(&mut self, instance: usize, adv: &BleAdvertisement) -> io::Result<()> {
        if instance >= self.handles.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no such advertising instance",
            ));
        }
        self.handles[instance] = None;
        let mut delay = REGISTER_RETRY_DELAY;
        let mut attempt = 0;
        let handle = loop {
            match self
                .adapter
                .advertise(advertisement(adv, self.interval, self.connectable))
                .await
            {
                Ok(h) => break h,
                Err(e) if e.kind == ErrorKind::NotPermitted && attempt < REGISTER_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    self.refused(&e);
                    return Err(io::Error::other(e));
                }
            }
        };
        self.handles[instance] = Some(handle);
        Ok(())
    }

    /// Ends a frame's period: reads the instance counts while the frame is still registered
    /// (our earlier advertisements are unregistered by now, so the difference is exact), counts
    /// the frame as starved when another program held the controller, then unregisters.
    async fn stop(&mut self, instance: usize) -> io::Result<()> {
        if self.handles.get(instance).is_some_and(Option::is_some) {
            let foreign = self.check_instances().await;
            if foreign.is_some_and(|n| n > 0) && !self.parallel {
                self.status.starved_frames += 1;
            }
        }
        // Dropping the handle unregisters the advertisement.
        if let Some(h) = self.handles.get_mut(instance)
            && h.take().is_some()
        {
            self.recent_drops.push(Instant::now());
        }
        Ok(())
    }
}

/// Starts active LE discovery on `adapter` and returns what it hears for a node whose space key
/// is `key`.
///
/// # Errors
/// [`BluezError::Bluez`] when discovery cannot start (adapter off, no permission, another
/// program's discovery session holds a different filter …).
pub async fn scanner(
    adapter: &Adapter,
    key: impl Into<crate::scan::FrameKey>,
    config: &BleConfig,
) -> Result<Reception, BluezError> {
    adapter
        .set_discovery_filter(DiscoveryFilter {
            transport: DiscoveryTransport::Le,
            duplicate_data: true,
            ..Default::default()
        })
        .await?;
    let discovery: Discovery = Box::pin(adapter.discover_devices().await?);
    let (tx, rx) = mpsc::channel(config.frame_channel.max(1));
    let stats = SharedScanStats::new();
    let task = tokio::spawn(scan_loop(
        adapter.clone(),
        discovery,
        ScanTracker::new(config.scan, key),
        tx,
        stats.clone(),
    ));
    Ok(Reception::new(rx, stats, Some(task)))
}

/// Runs `node` on `adapter`: advertising with [`BluezRadio`], receiving with [`scanner`].
///
/// # Errors
/// [`BluezError::Spawn`] for a node not built for `Transport::Ble` (checked first); as
/// [`BluezRadio::new`] and [`scanner`].
pub async fn spawn(
    name: &str,
    node: Node,
    adapter: &Adapter,
    config: &BleConfig,
) -> Result<BleNode, BluezError> {
    check_transport(&node)?;
    let radio = BluezRadio::new(adapter, config).await?;
    let reception = scanner(adapter, crate::scan::FrameKey::of(node.config()), config).await?;
    Ok(BleNode::spawn(name, node, config, radio, reception)?)
}

/// Refuses a node not built for BLE before anything is registered or scanned.
fn check_transport(node: &Node) -> Result<(), SpawnError> {
    match node.config().transport {
        Transport::Ble => Ok(()),
        other => Err(SpawnError::WrongTransport(other)),
    }
}

/// Runs `node` on `adapter` receive-only: no advertising (every send is refused and counted).
///
/// # Errors
/// [`BluezError::Spawn`] for a node not built for `Transport::Ble`; as [`scanner`].
pub async fn spawn_listener(
    name: &str,
    node: Node,
    adapter: &Adapter,
    config: &BleConfig,
) -> Result<BleNode, BluezError> {
    check_transport(&node)?;
    let reception = scanner(adapter, crate::scan::FrameKey::of(node.config()), config).await?;
    Ok(BleNode::spawn(
        name,
        node,
        config,
        crate::radio::ReceiveOnly,
        reception,
    )?)
}

type Discovery = Pin<Box<dyn Stream<Item = AdapterEvent> + Send>>;

struct ScanState {
    adapter: Adapter,
    tracker: ScanTracker,
    tx: mpsc::Sender<ReceivedFrame>,
    stats: SharedScanStats,
    epoch: Instant,
    dev_tx: mpsc::UnboundedSender<([u8; 6], DeviceProperty)>,
    watchers: HashMap<[u8; 6], JoinHandle<()>>,
}

impl Drop for ScanState {
    fn drop(&mut self) {
        for (_, w) in self.watchers.drain() {
            w.abort();
        }
    }
}

async fn scan_loop(
    adapter: Adapter,
    mut discovery: Discovery,
    tracker: ScanTracker,
    tx: mpsc::Sender<ReceivedFrame>,
    stats: SharedScanStats,
) {
    let (dev_tx, mut dev_rx) = mpsc::unbounded_channel();
    let restart_every = tracker.config().restart_every;
    let mut st = ScanState {
        adapter,
        tracker,
        tx,
        stats,
        epoch: Instant::now(),
        dev_tx,
        watchers: HashMap::new(),
    };
    st.tracker.stats_mut().discovery_starts += 1;
    loop {
        let restart_at = restart_every.map(|d| Instant::now() + d);
        loop {
            let keep_going = tokio::select! {
                ev = discovery.next() => match ev {
                    Some(AdapterEvent::DeviceAdded(addr)) => st.device_added(addr).await,
                    Some(AdapterEvent::DeviceRemoved(addr)) => {
                        st.device_removed(addr);
                        true
                    }
                    Some(AdapterEvent::PropertyChanged(_)) => true,
                    None => {
                        debug!("discovery ended; restarting");
                        break;
                    }
                },
                Some((addr, prop)) = dev_rx.recv() => st.property(addr, prop).await,
                () = sleep_until(restart_at) => break,
            };
            st.stats.set(st.tracker.stats());
            if !keep_going {
                return;
            }
        }
        // Dropping the stream ends bluer's discovery session (StopDiscovery); bluer waits for
        // that before the next StartDiscovery.
        drop(discovery);
        discovery = loop {
            match st.adapter.discover_devices().await {
                Ok(d) => break Box::pin(d),
                Err(e) => {
                    st.tracker.stats_mut().stack_errors += 1;
                    st.stats.set(st.tracker.stats());
                    warn!(error = %e, "could not restart discovery");
                    tokio::time::sleep(DISCOVERY_RETRY).await;
                }
            }
        };
        st.tracker.stats_mut().discovery_starts += 1;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl ScanState {
    fn now(&self) -> Time {
        Time::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// A device object appeared (or was already known when discovery started): watch its
    /// property changes, then read what it has.
    async fn device_added(&mut self, addr: Address) -> bool {
        let key = addr.0;
        if self.watchers.contains_key(&key) {
            return true;
        }
        let device = match self.adapter.device(addr) {
            Ok(d) => d,
            Err(_) => return true,
        };
        match device.events().await {
            Ok(events) => {
                let tx = self.dev_tx.clone();
                let watcher = tokio::spawn(async move {
                    let mut events = std::pin::pin!(events);
                    while let Some(DeviceEvent::PropertyChanged(p)) = events.next().await {
                        if tx.send((key, p)).is_err() {
                            break;
                        }
                    }
                });
                self.watchers.insert(key, watcher);
            }
            Err(e) => {
                self.tracker.stats_mut().stack_errors += 1;
                debug!(%addr, error = %e, "cannot watch device");
            }
        }
        // A device removed meanwhile answers with errors: it reports nothing.
        let name = device.name().await.unwrap_or(None);
        let uuids = device.uuids().await.unwrap_or(None).unwrap_or_default();
        let rssi = device.rssi().await.unwrap_or(None);
        let update = DeviceUpdate::full(name, uuids.iter().map(Uuid::as_u128), rssi);
        let now = self.now();
        let out = self.tracker.update(now, key, update);
        self.outcome(key, out).await
    }

    fn device_removed(&mut self, addr: Address) {
        if let Some(w) = self.watchers.remove(&addr.0) {
            w.abort();
        }
        self.tracker.removed(addr.0);
    }

    async fn property(&mut self, addr: [u8; 6], prop: DeviceProperty) -> bool {
        let update = match prop {
            DeviceProperty::Name(n) => DeviceUpdate::name(&n),
            DeviceProperty::Uuids(u) => DeviceUpdate::uuids(u.iter().map(Uuid::as_u128)),
            DeviceProperty::Rssi(r) => DeviceUpdate::default().with_rssi(Some(r)),
            _ => return true,
        };
        let now = self.now();
        let out = self.tracker.update(now, addr, update);
        self.outcome(addr, out).await
    }

    /// Hands a frame to the engine and forgets the device if asked. `false` when the engine is
    /// gone.
    async fn outcome(&mut self, addr: [u8; 6], out: ScanOutcome) -> bool {
        if let Some(f) = out.frame
            && self.tx.send(f).await.is_err()
        {
            self.tracker.stats_mut().channel_closed += 1;
            return false;
        }
        if out.forget {
            match self.adapter.remove_device(Address(addr)).await {
                Ok(()) => self.tracker.removed(addr),
                Err(e) => {
                    self.tracker.stats_mut().forget_errors += 1;
                    debug!(error = %e, "RemoveDevice failed");
                }
            }
        }
        true
    }
}
