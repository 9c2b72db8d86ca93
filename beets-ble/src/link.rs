//! [`BleLink`]: advertisements in and out without an engine, for gateways that carry BLE frames
//! to another medium (`beets-mqtt`'s BLE gateway).

use std::sync::Arc;

use beets_core::ble::BleAdvertisement;
use beets_core::driver::ReceivedFrame;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::node::{BleConfig, BleStats, Reception, SpawnError};
use crate::radio::{Radio, Shared, run_advertiser};
use crate::scheduler::{Scheduler, SchedulerError};
use crate::sim::SimAir;

/// A radio and a scanner with no engine on top: the frames the scanner recovers come out of
/// [`BleLink::recv`] as the engine would get them (local name and UUID set, not yet decoded),
/// and [`BleLink::advertise`] queues ready-made advertisements in the same Δt scheduler a
/// [`BleNode`](crate::BleNode) uses. The caller frames, decodes and deduplicates.
#[derive(Debug)]
pub struct BleLink {
    shared: Arc<Shared>,
    frames: mpsc::Receiver<ReceivedFrame>,
    advertiser: Option<JoinHandle<()>>,
    scanner: Option<JoinHandle<()>>,
}

impl BleLink {
    /// Runs `radio` (sending) and `reception` (receiving) on the current tokio runtime, with
    /// `config`'s Δt, queue and instance limit.
    ///
    /// # Errors
    /// [`SpawnError::NoRuntime`] outside a tokio runtime (the scanner task is aborted then).
    pub fn spawn<R: Radio>(
        config: &BleConfig,
        radio: R,
        reception: Reception,
    ) -> Result<BleLink, SpawnError> {
        let (frames, stats, scanner) = reception.into_parts();
        if tokio::runtime::Handle::try_current().is_err() {
            if let Some(task) = scanner {
                task.abort();
            }
            return Err(SpawnError::NoRuntime);
        }
        let mut limits = radio.limits();
        limits.instances = limits.instances.min(config.max_instances);
        let shared = Shared::new(Scheduler::new(config.scheduler(), limits), stats);
        shared.set_advertising(radio.status());
        let advertiser = tokio::spawn(run_advertiser(shared.clone(), radio));
        Ok(BleLink {
            shared,
            frames,
            advertiser: Some(advertiser),
            scanner,
        })
    }

    /// Joins the simulated `air` at `addr`, checking received frames with `key` (the space's
    /// key: it selects among stale UUID candidates, spec §6 "Receiving").
    ///
    /// # Errors
    /// [`SpawnError::NoRuntime`] outside a tokio runtime.
    pub fn spawn_sim(
        air: &SimAir,
        addr: [u8; 6],
        key: impl Into<crate::scan::FrameKey>,
        config: &BleConfig,
    ) -> Result<BleLink, SpawnError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SpawnError::NoRuntime);
        }
        let (radio, reception) = air.join(addr, key, config.scan, config.frame_channel);
        BleLink::spawn(config, radio, reception)
    }

    /// Queues `adv` for its Δt on air. A full queue drops its oldest frame
    /// ([`QueuePolicy::DropOldest`](crate::QueuePolicy::DropOldest), counted in
    /// [`BleStats::scheduler`]) or refuses this one, as configured.
    ///
    /// # Errors
    /// [`SchedulerError`]: the queue is full under `QueuePolicy::Refuse`, or the frame does not
    /// fit the controller.
    pub fn advertise(&self, adv: BleAdvertisement) -> Result<(), SchedulerError> {
        let pushed = self.shared.scheduler().push(adv);
        self.shared.wake.notify_one();
        if let Ok(Some(dropped)) = &pushed {
            debug!(name = %dropped.local_name, "sender queue full: oldest frame dropped");
        }
        pushed.map(|_| ())
    }

    /// The next frame the scanner recovered; `None` once the scanner has stopped.
    pub async fn recv(&mut self) -> Option<ReceivedFrame> {
        self.frames.recv().await
    }

    /// The counters now.
    pub fn stats(&self) -> BleStats {
        self.shared.stats()
    }

    /// Withdraws every advertisement and stops the scanner.
    pub async fn close(mut self) {
        self.shared.close();
        if let Some(a) = self.advertiser.take() {
            let _ = a.await;
        }
        if let Some(s) = self.scanner.take() {
            s.abort();
        }
    }
}

impl Drop for BleLink {
    fn drop(&mut self) {
        self.shared.close();
        if let Some(s) = self.scanner.take() {
            s.abort();
        }
    }
}
