//! Socket-level counters ([`UdpStats`]), beside the engine's and the driver's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

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
    /// Datagrams sent, one per destination and copy.
    pub datagrams_sent: u64,
    /// Of those, repeated copies ([`UdpConfig::repeat`](crate::UdpConfig::repeat)).
    pub repeats_sent: u64,
    /// Failed `send_to` calls, one per destination and copy (logged at `warn`).
    pub send_errors: u64,
    /// Copies not sent because the repeat queue was full (the sender outran the interval).
    pub repeats_dropped: u64,
    /// System calls that sent several datagrams at once (GSO batches, where the platform has
    /// GSO). Their datagrams count in `datagrams_sent`.
    pub batched_sends: u64,
    /// Datagrams the kernel dropped because the socket's receive buffer was full (the node read
    /// too slowly; raise [`UdpConfig::recv_buffer_size`](crate::UdpConfig::recv_buffer_size)).
    /// Read from the socket's `drops` counter in `/proc/self/net/udp` (or `udp6`) on Linux when
    /// the stats are taken, and once more when the socket closes; `None` where that counter
    /// cannot be read (other systems, no `/proc`).
    pub kernel_drops: Option<u64>,
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
    pub(crate) batched_sends: AtomicU64,
    /// The socket's inode and IP version, to find its row in `/proc/self/net/udp{,6}`.
    pub(crate) socket: OnceLock<(u64, bool)>,
    /// The last kernel drop count read (kept once the socket is closed).
    pub(crate) kernel_drops: Mutex<Option<u64>>,
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
            batched_sends: get(&self.batched_sends),
            kernel_drops: self.read_kernel_drops(),
        }
    }

    /// Reads the socket's kernel drop counter now, or the last value read once it is closed.
    pub(crate) fn read_kernel_drops(&self) -> Option<u64> {
        let mut last = self.kernel_drops.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&(inode, v6)) = self.socket.get()
            && let Some(n) = proc_drops(inode, v6)
        {
            *last = Some(n);
        }
        *last
    }
}

/// The `drops` column of the row of socket `inode` in `/proc/self/net/udp` (`udp6` for IPv6):
/// the datagrams the kernel discarded for this socket, mostly because its receive buffer was
/// full (the count `SO_RXQ_OVFL` reports per datagram, without a control message per read).
fn proc_drops(inode: u64, v6: bool) -> Option<u64> {
    let path = if v6 {
        "/proc/self/net/udp6"
    } else {
        "/proc/self/net/udp"
    };
    let table = std::fs::read_to_string(path).ok()?;
    parse_drops(&table, inode)
}

/// Finds `inode`'s row in a `/proc/net/udp` table and returns its last column, `drops`.
fn parse_drops(table: &str, inode: u64) -> Option<u64> {
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    // The header names "tr tm->when" and "retrnsmt uid" as columns of their own; count from
    // the end instead: "... inode ref pointer drops" in every kernel since 2.6.
    if header.last() != Some(&"drops") {
        return None;
    }
    lines.find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        let n = cols.len();
        (n >= 4 && cols[n - 4].parse::<u64>().ok()? == inode)
            .then(|| cols[n - 1].parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::parse_drops;

    #[test]
    fn drops_column_of_the_socket_row() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            \n\
  326: 00000000:C383 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 81234 2 0000000000000000 0          \n\
  327: 00000000:C384 00000000:0000 07 00000000:00034000 00:00000000 00000000     0        0 81240 2 0000000000000000 1753       \n";
        assert_eq!(parse_drops(table, 81240), Some(1753));
        assert_eq!(parse_drops(table, 81234), Some(0));
        assert_eq!(parse_drops(table, 1), None);
    }
}
