//! The receive side: the socket as the driver's [`FrameSource`], read in the driver's own task.
//!
//! The driver waits for the socket to become readable beside its commands and timer, then reads
//! datagrams with non-blocking `try_recv_from` into one reused buffer and hands each, borrowed,
//! straight to the engine: no receive task, no channel hop, no copy per datagram. Under a flood
//! the driver takes at most 64 datagrams per turn before it sends and serves commands again,
//! and the kernel's socket buffer holds (or drops, bounded) the rest: memory stays bounded
//! without a queue of ours.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use beets_core::driver::FrameSource;
use beets_core::udp::MAX_DATAGRAM_LEN;
use beets_core::{Frame, PeerAddr};
use tokio::net::UdpSocket;
use tracing::{trace, warn};

use crate::stats::Counters;

/// Pause after a socket error, so a persistent error does not spin the driver.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// A UDP socket read by the driver.
///
/// The buffer is one byte longer than the largest valid datagram, so an oversize datagram shows
/// as 1233 bytes and the engine drops it as too long (spec §7) instead of parsing a truncation.
/// Checks, dedup and own-broadcast drop are the engine's (by node id).
pub(crate) struct UdpSource {
    socket: Arc<UdpSocket>,
    buf: Box<[u8]>,
    counters: Arc<Counters>,
    /// Set by a receive error: the next `ready` pauses first.
    backoff: bool,
}

impl UdpSource {
    pub(crate) fn new(socket: Arc<UdpSocket>, counters: Arc<Counters>) -> UdpSource {
        crate::socket::watch_drops(&socket, &counters);
        UdpSource {
            socket,
            buf: vec![0u8; MAX_DATAGRAM_LEN + 1].into_boxed_slice(),
            counters,
            backoff: false,
        }
    }

    /// Counts and logs a socket error; the next [`FrameSource::ready`] pauses first.
    fn failed(&mut self, e: &io::Error) {
        Counters::add(&self.counters.receive_errors, 1);
        warn!(error = %e, "receiving failed; retrying");
        self.backoff = true;
    }
}

impl Drop for UdpSource {
    /// The driver is stopping: read the kernel's drop counter while the socket is still open,
    /// so the final stats keep it.
    fn drop(&mut self) {
        let _ = self.counters.read_kernel_drops();
    }
}

impl FrameSource for UdpSource {
    async fn ready(&mut self) -> bool {
        if std::mem::take(&mut self.backoff) {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
        if let Err(e) = self.socket.readable().await {
            // Readiness itself failed (the reactor is gone): count it, back off, try again.
            self.failed(&e);
        }
        true
    }

    fn try_recv<F>(&mut self, deliver: F) -> bool
    where
        F: FnOnce(PeerAddr, Frame<'_>, Option<i16>),
    {
        match self.socket.try_recv_from(&mut self.buf) {
            Ok((len, from)) => {
                Counters::add(&self.counters.datagrams_received, 1);
                if len > MAX_DATAGRAM_LEN {
                    Counters::add(&self.counters.oversize_received, 1);
                    trace!(%from, "oversize datagram");
                }
                deliver(PeerAddr::Ip(from), Frame::Datagram(&self.buf[..len]), None);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => {
                self.failed(&e);
                false
            }
        }
    }
}
