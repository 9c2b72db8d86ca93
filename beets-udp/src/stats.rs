//! Socket-level counters ([`UdpStats`]), beside the engine's and the driver's.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the socket tasks did. All count since the space was spawned.
///
/// The engine's own counters (frames in, duplicates, malformed, stored, …) are in
/// [`beets_core::driver::DriverStats`], from [`SpaceHandle::stats`](beets_core::driver::SpaceHandle::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdpStats {
    /// Datagrams read from the socket and handed to the engine (own broadcasts included).
    pub datagrams_received: u64,
    /// Of those, datagrams longer than 1232 bytes. They are handed on truncated to 1233 bytes
    /// and the engine drops and counts them (spec §7).
    pub oversize_received: u64,
    /// Errors reading the socket (logged at `warn`; the node pauses 10 ms and reads on).
    pub receive_errors: u64,
    /// Successful `send_to` calls, one per destination and copy.
    pub datagrams_sent: u64,
    /// Of those, repeated copies ([`UdpConfig::repeat`](crate::UdpConfig::repeat)).
    pub repeats_sent: u64,
    /// Failed `send_to` calls, one per destination and copy (logged at `warn`).
    pub send_errors: u64,
    /// Copies not sent because the repeat queue was full (the sender outran the interval).
    pub repeats_dropped: u64,
}

/// The shared, lock-free form of [`UdpStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) datagrams_received: AtomicU64,
    pub(crate) oversize_received: AtomicU64,
    pub(crate) receive_errors: AtomicU64,
    pub(crate) datagrams_sent: AtomicU64,
    pub(crate) repeats_sent: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    pub(crate) repeats_dropped: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> UdpStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        UdpStats {
            datagrams_received: get(&self.datagrams_received),
            oversize_received: get(&self.oversize_received),
            receive_errors: get(&self.receive_errors),
            datagrams_sent: get(&self.datagrams_sent),
            repeats_sent: get(&self.repeats_sent),
            send_errors: get(&self.send_errors),
            repeats_dropped: get(&self.repeats_dropped),
        }
    }
}
