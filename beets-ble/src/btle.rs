//! Scan-only backend through [`btleplug`] (feature `btleplug`): a receive-only node on every
//! platform btleplug supports (Linux/BlueZ, macOS and iOS/CoreBluetooth, Windows/WinRT,
//! Android).
//!
//! btleplug cannot advertise, so a node built here hears `out`s and notifications and answers
//! nothing: its sends are refused ([`SchedulerError::ReceiveOnly`](crate::SchedulerError),
//! counted in the driver's `send_errors`). Use it for gateways, loggers and dashboards.
//!
//! How it maps into the engine: every btleplug event for a peripheral (`DeviceDiscovered`,
//! `DeviceUpdated`, `ServicesAdvertisement`, `RssiUpdate`, …) re-reads its
//! `PeripheralProperties` (`advertisement_name`, else `local_name`; `services`; `rssi`) and feeds
//! the same [`ScanTracker`] as the BlueZ backend. Differences, by platform:
//! - **BlueZ**: btleplug emits no event when only the name changes (bluez-async has no name
//!   event), so the listener also re-reads every known peripheral every
//!   [`POLL_INTERVAL`]. btleplug cannot remove devices, so stale UUIDs stay until BlueZ drops the
//!   device (the slot index and CRC still pick the right ones; ambiguous frames are dropped).
//!   btleplug asks for `DuplicateData` and `Transport = auto`.
//! - **CoreBluetooth** hides device addresses: the peer address is derived from the
//!   `PeripheralId` (a stable per-host UUID), so replies cannot be correlated with another
//!   host's view of the same sender; dedup is unaffected.

use std::time::Duration;

use beets_core::driver::ReceivedFrame;
use beets_core::node::{Node, Transport};
use beets_core::{FpeKey, Time};
use btleplug::api::{Central, CentralEvent, Peripheral as _, ScanFilter};
use btleplug::platform::{Adapter, Peripheral, PeripheralId};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use crate::node::{BleConfig, BleNode, Reception, SpawnError};
use crate::radio::{ReceiveOnly, SharedScanStats};
use crate::scan::{DeviceUpdate, ScanTracker};

/// How often every known peripheral's properties are re-read: 200 ms.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Starts a scan on `central` and returns what it hears for a node whose space key is `key`.
///
/// # Errors
/// The btleplug error when the event stream or the scan cannot start.
pub async fn scanner(
    central: &Adapter,
    key: Option<FpeKey>,
    config: &BleConfig,
) -> Result<Reception, btleplug::Error> {
    let events = central.events().await?;
    central.start_scan(ScanFilter::default()).await?;
    let (tx, rx) = mpsc::channel(config.frame_channel.max(1));
    let stats = SharedScanStats::new();
    let tracker = ScanTracker::new(config.scan, key);
    let central = central.clone();
    let shared = stats.clone();
    let task = tokio::spawn(async move {
        let mut events = events;
        let mut st = Listener {
            central,
            tracker,
            tx,
            stats: shared,
            epoch: Instant::now(),
        };
        st.tracker.stats_mut().discovery_starts += 1;
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let alive = tokio::select! {
                ev = events.next() => match ev {
                    Some(ev) => match event_id(ev) {
                        Some(id) => st.refresh_id(&id).await,
                        None => true,
                    },
                    None => false,
                },
                _ = poll.tick() => st.refresh_all().await,
            };
            st.stats.set(st.tracker.stats());
            if !alive {
                break;
            }
        }
        let _ = st.central.stop_scan().await;
    });
    Ok(Reception::new(rx, stats, Some(task)))
}

/// Runs `node` receive-only on `central`.
///
/// # Errors
/// As [`scanner`]; `btleplug::Error::Other` holding a [`SpawnError`] when `node` was not built
/// for `Transport::Ble` (checked before scanning starts).
pub async fn spawn_listener(
    name: &str,
    node: Node,
    central: &Adapter,
    config: &BleConfig,
) -> Result<BleNode, btleplug::Error> {
    if node.config().transport != Transport::Ble {
        return Err(btleplug::Error::Other(Box::new(
            SpawnError::WrongTransport(node.config().transport),
        )));
    }
    let reception = scanner(central, node.config().key.clone(), config).await?;
    BleNode::spawn(name, node, config, ReceiveOnly, reception)
        .map_err(|e| btleplug::Error::Other(Box::new(e)))
}

fn event_id(ev: CentralEvent) -> Option<PeripheralId> {
    match ev {
        CentralEvent::DeviceDiscovered(id) | CentralEvent::DeviceUpdated(id) => Some(id),
        CentralEvent::ServicesAdvertisement { id, .. }
        | CentralEvent::ServiceDataAdvertisement { id, .. }
        | CentralEvent::ManufacturerDataAdvertisement { id, .. }
        | CentralEvent::RssiUpdate { id, .. } => Some(id),
        _ => None,
    }
}

struct Listener {
    central: Adapter,
    tracker: ScanTracker,
    tx: mpsc::Sender<ReceivedFrame>,
    stats: SharedScanStats,
    epoch: Instant,
}

impl Listener {
    async fn refresh_id(&mut self, id: &PeripheralId) -> bool {
        match self.central.peripheral(id).await {
            Ok(p) => self.refresh(&p).await,
            Err(_) => true,
        }
    }

    async fn refresh_all(&mut self) -> bool {
        let Ok(all) = self.central.peripherals().await else {
            self.tracker.stats_mut().stack_errors += 1;
            return true;
        };
        for p in all {
            // A device whose name is not BeeTS stays so until an event says otherwise.
            let addr = p.address().into_inner();
            if addr != [0; 6] && self.tracker.is_foreign(addr) {
                continue;
            }
            if !self.refresh(&p).await {
                return false;
            }
        }
        true
    }

    /// Reads one peripheral's properties into the tracker; `false` when the engine is gone.
    async fn refresh(&mut self, p: &Peripheral) -> bool {
        let props = match p.properties().await {
            Ok(Some(props)) => props,
            Ok(None) => return true,
            Err(e) => {
                self.tracker.stats_mut().stack_errors += 1;
                debug!(error = %e, "cannot read peripheral properties");
                return true;
            }
        };
        let mut addr = props.address.into_inner();
        if addr == [0; 6] {
            addr = addr_from_id(&p.id());
        }
        let name = props.advertisement_name.or(props.local_name);
        let update =
            DeviceUpdate::full(name, props.services.iter().map(|u| u.as_u128()), props.rssi);
        let now = Time::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(0));
        let out = self.tracker.update(now, addr, update);
        if let Some(f) = out.frame
            && self.tx.send(f).await.is_err()
        {
            self.tracker.stats_mut().channel_closed += 1;
            return false;
        }
        // btleplug cannot make the stack forget a device; the tracker's request is dropped.
        true
    }
}

/// A stable 6-byte address for a platform that hides addresses (CoreBluetooth): FNV-1a of the
/// peripheral id, marked as a locally administered random static address.
fn addr_from_id(id: &PeripheralId) -> [u8; 6] {
    let text = format!("{id:?}");
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let b = h.to_be_bytes();
    [b[2] | 0xC0, b[3], b[4], b[5], b[6], b[7]]
}
