//! What a BLE backend must provide to send: a [`Radio`] with advertising instances. The
//! advertiser task that drives it from the [`Scheduler`] is the same
//! for every backend.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use beets_core::Time;
use beets_core::ble::BleAdvertisement;
use beets_core::driver::{FrameSink, SendError};
use beets_core::node::Transmit;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::scan::ScanStats;
use crate::scheduler::{AdvertisingLimits, InstanceAction, Scheduler};

/// A radio with advertising instances: BlueZ (`bluez::BluezRadio`, feature `bluer`), the simulated
/// radio ([`crate::sim::SimRadio`]) or [`ReceiveOnly`].
///
/// The advertiser task calls `start` and `stop` as the scheduler says, one call at a time, in
/// order: `start(i, …)` only on an idle instance `i < limits().instances`, `stop(i)` only on an
/// advertising one. An error is logged and counted ([`RadioStats`]); the scheduler carries on
/// (the frame's period passes without it on air).
pub trait Radio: Send + 'static {
    /// The controller's limits: instances this node may use and the data lengths.
    fn limits(&self) -> AdvertisingLimits;

    /// Starts advertising `adv` on `instance`: a scannable advertisement with the 16-bit service
    /// UUIDs in the advertising data and the local name in the scan response (spec §6
    /// "Placement"), connectable or not as the backend chose (BlueZ: [`crate::Connectable`]; the
    /// simulated radio has no such notion).
    ///
    /// # Errors
    /// Whatever the stack refused; the advertiser logs and counts it
    /// ([`RadioStats::start_errors`]).
    fn start(
        &mut self,
        instance: usize,
        adv: &BleAdvertisement,
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// Stops advertising on `instance`.
    ///
    /// # Errors
    /// Whatever the stack refused; logged and counted ([`RadioStats::stop_errors`]).
    fn stop(&mut self, instance: usize) -> impl Future<Output = io::Result<()>> + Send;

    /// What the radio knows about the controller's advertising now (read after every
    /// `start`/`stop` into [`BleStats::advertising`](crate::BleStats::advertising)). The default
    /// knows nothing.
    fn status(&self) -> AdvertisingStatus {
        AdvertisingStatus::default()
    }
}

/// What a radio reports about the controller's advertising, beyond its own calls
/// ([`Radio::status`], [`BleStats::advertising`](crate::BleStats::advertising)).
///
/// The BlueZ backend reads `LEAdvertisingManager1`'s `ActiveInstances` and `SupportedInstances`
/// when it starts and at the end of every frame's advertising period. BlueZ counts only
/// advertisements registered over D-Bus (e.g. `bluetoothctl advertise`, other BeeTS nodes), not
/// instances added straight through the kernel's management API (`btmgmt add-adv`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdvertisingStatus {
    /// Frames go out connectable (`Some(true)`) or not; `None` when the radio has no such
    /// notion (simulated, receive-only).
    pub connectable: Option<bool>,
    /// `ActiveInstances` at the last read: advertisements registered on the adapter by anyone,
    /// this node included.
    pub active_instances: Option<u8>,
    /// `SupportedInstances` at the last read: instances still free.
    pub supported_instances: Option<u8>,
    /// Advertisements of other programs at the last read (`ActiveInstances` minus this node's).
    pub foreign_instances: Option<u8>,
    /// Most advertisements of other programs seen at once.
    pub max_foreign_instances: u8,
    /// Frames likely kept off the air: their advertising period ended while another program's
    /// advertisement was registered on a controller that does not advertise instances in
    /// parallel (no `HardwareOffload`). Linux (6.1) puts a newly added instance on air at once
    /// only when no other instance is advertising; otherwise the other one keeps the air for its
    /// duration (2 s) before the kernel rotates, so at Δt = 500 ms most frames never go on air
    /// (tier 3: 1 of 6 delivered, an earlier run 0 of 30). An upper bound from the counts above,
    /// as BlueZ does not say which instance is on air: behind another BeeTS node, whose frames end
    /// every Δt, most frames still get through (tier 3: 22–24 of 30).
    pub starved_frames: u64,
    /// Reads of the instance counts that failed.
    pub read_errors: u64,
    /// Most instances the controller accepted at once, once it refused one more than that
    /// although it had announced them free; the node then uses only this many (see
    /// [`Scheduler::reduce_instances`]). `None`: no such refusal.
    pub instance_limit: Option<usize>,
}

/// A radio that cannot advertise (scan-only backends): no instances, every call fails.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReceiveOnly;

impl Radio for ReceiveOnly {
    fn limits(&self) -> AdvertisingLimits {
        AdvertisingLimits::RECEIVE_ONLY
    }

    async fn start(&mut self, _: usize, _: &BleAdvertisement) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "receive-only node: this backend cannot advertise",
        ))
    }

    async fn stop(&mut self, _: usize) -> io::Result<()> {
        Ok(())
    }
}

/// Counters of the advertiser task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RadioStats {
    /// `start` calls that succeeded.
    pub starts: u64,
    /// `start` calls that failed (the frame's period passed without it on air).
    pub start_errors: u64,
    /// `stop` calls that succeeded.
    pub stops: u64,
    /// `stop` calls that failed.
    pub stop_errors: u64,
}

/// State shared by the engine's sink, the advertiser task and the node handle.
#[derive(Debug)]
pub(crate) struct Shared {
    scheduler: Mutex<Scheduler>,
    pub(crate) wake: Notify,
    closed: AtomicBool,
    radio: Mutex<RadioStats>,
    advertising: Mutex<AdvertisingStatus>,
    pub(crate) scan: SharedScanStats,
}

impl Shared {
    pub(crate) fn new(scheduler: Scheduler, scan: SharedScanStats) -> Arc<Shared> {
        Arc::new(Shared {
            scheduler: Mutex::new(scheduler),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            radio: Mutex::new(RadioStats::default()),
            advertising: Mutex::new(AdvertisingStatus::default()),
            scan,
        })
    }

    pub(crate) fn scheduler(&self) -> MutexGuard<'_, Scheduler> {
        lock(&self.scheduler)
    }

    pub(crate) fn radio_stats(&self) -> RadioStats {
        *lock(&self.radio)
    }

    pub(crate) fn advertising(&self) -> AdvertisingStatus {
        *lock(&self.advertising)
    }

    pub(crate) fn set_advertising(&self, status: AdvertisingStatus) {
        *lock(&self.advertising) = status;
    }

    /// The BLE counters now (a node's or a link's).
    pub(crate) fn stats(&self) -> crate::BleStats {
        let s = self.scheduler();
        crate::BleStats {
            scheduler: s.stats(),
            radio: self.radio_stats(),
            scan: self.scan.get(),
            queue_len: s.queue_len(),
            instances: s.limits().instances,
            advertising: self.advertising(),
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// Scanner counters shared between a scanner task and the node handle.
#[derive(Clone, Debug, Default)]
pub struct SharedScanStats(Arc<Mutex<ScanStats>>);

impl SharedScanStats {
    /// A new, zeroed counter set.
    pub fn new() -> SharedScanStats {
        SharedScanStats::default()
    }

    /// A copy of the counters.
    pub fn get(&self) -> ScanStats {
        *lock(&self.0)
    }

    /// Replaces the counters (a scanner publishes its tracker's after each update).
    pub fn set(&self, stats: ScanStats) {
        *lock(&self.0) = stats;
    }
}

/// Locks, ignoring poisoning (the data are counters and a queue; a panicking holder leaves them
/// consistent enough to keep counting).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The engine's [`FrameSink`]: queues every advertisement in the scheduler.
#[derive(Debug)]
pub(crate) struct SchedulerSink {
    pub(crate) shared: Arc<Shared>,
}

impl FrameSink for SchedulerSink {
    /// Queues the advertisement; a frame the scheduler will not take (full queue under
    /// [`QueuePolicy::Refuse`](crate::QueuePolicy::Refuse), too large for the controller, no
    /// instance) is [`SendError::Refused`], so the `out` that made it returns the reason.
    async fn send(&mut self, tx: Transmit) -> Result<(), SendError> {
        match tx {
            Transmit::Advertisement(adv) => {
                let pushed = self.shared.scheduler().push(adv);
                self.shared.wake.notify_one();
                match pushed {
                    Ok(None) => Ok(()),
                    Ok(Some(dropped)) => {
                        debug!(name = %dropped.local_name, "sender queue full: oldest frame dropped");
                        Ok(())
                    }
                    Err(e) => Err(SendError::Refused(e.into())),
                }
            }
            Transmit::Datagram(_) => Err(SendError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a UDP datagram reached the BLE sender (node built for Transport::Udp?)",
            ))),
        }
    }
}

impl Drop for SchedulerSink {
    /// The driver has stopped: the advertiser stops every instance and ends.
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// Runs the scheduler against `radio` until the node closes, then stops every instance.
pub(crate) async fn run_advertiser<R: Radio>(shared: Arc<Shared>, mut radio: R) {
    let epoch = Instant::now();
    loop {
        let now = Time::from_millis(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX));
        let closed = shared.closed.load(Ordering::SeqCst);
        let (actions, wake) = {
            let mut s = shared.scheduler();
            let actions = if closed { s.stop_all() } else { s.poll(now) };
            (actions, s.next_wake())
        };
        for action in actions {
            apply(&shared, &mut radio, action).await;
            shared.set_advertising(radio.status());
        }
        if closed {
            debug!("advertiser stopped");
            return;
        }
        let notified = shared.wake.notified();
        match wake {
            Some(w) => {
                let at = epoch + std::time::Duration::from_millis(w.as_millis());
                tokio::select! {
                    () = notified => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => notified.await,
        }
    }
}

async fn apply<R: Radio>(shared: &Shared, radio: &mut R, action: InstanceAction) {
    match action {
        InstanceAction::Start { instance, adv } => {
            let r = radio.start(instance, &adv).await;
            let failed = r.is_err();
            {
                let mut st = lock(&shared.radio);
                match r {
                    Ok(()) => st.starts += 1,
                    Err(e) => {
                        st.start_errors += 1;
                        warn!(instance, name = %adv.local_name, error = %e, "could not start advertising");
                    }
                }
            }
            // The controller refused an instance it had announced: use fewer, and send the
            // refused frame (and those on dropped instances) again.
            let limit = radio.status().instance_limit;
            if failed && let Some(n) = limit.filter(|&n| n > 0) {
                let stops = shared.scheduler().reduce_instances(n, Some(instance));
                for stop in stops {
                    Box::pin(apply(shared, radio, stop)).await;
                }
            }
        }
        InstanceAction::Stop { instance } => {
            let r = radio.stop(instance).await;
            let mut st = lock(&shared.radio);
            match r {
                Ok(()) => st.stops += 1,
                Err(e) => {
                    st.stop_errors += 1;
                    warn!(instance, error = %e, "could not stop advertising");
                }
            }
        }
    }
}
