//! The receive side: the socket as the driver's [`FrameSource`], read in the driver's own task.
//!
//! The driver waits for the socket to become readable beside its commands and timer, then takes
//! datagrams one by one and hands each, borrowed, straight to the engine: no receive task, no
//! channel hop, no copy per datagram. Underneath, one `recvmmsg` call (through `quinn-udp`, whose
//! `unsafe` is its own) reads up to [`BATCH`] datagrams into reused buffers, so a flood costs one
//! system call per batch instead of one per datagram; where batching is not available (the
//! socket state cannot be set up, or the platform reads one at a time) the same code reads one
//! datagram per call. Under a flood the driver takes at most 64 datagrams per turn before it
//! sends and serves commands again, and the kernel's socket buffer holds (or drops, bounded) the
//! rest: memory stays bounded without a queue of ours.
//!
//! GRO (the kernel handing several same-size datagrams of one sender as one buffer) is turned
//! off again after `quinn-udp` turns it on: a GRO buffer needs room for 64 datagrams (2.5 MB for
//! a batch), and BeeTS datagrams are small and of mixed sizes. Segments at `stride` are still
//! split correctly should a platform coalesce anyway.

use std::io::{self, IoSliceMut};
use std::sync::Arc;
use std::time::Duration;

use beets_core::driver::FrameSource;
use beets_core::udp::MAX_DATAGRAM_LEN;
use beets_core::{Frame, PeerAddr};
use quinn_udp::{RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{debug, trace, warn};

use crate::stats::Counters;

/// Pause after a socket error, so a persistent error does not spin the driver.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Most datagrams read by one system call (`quinn-udp`'s batch: 32 on Linux).
pub(crate) const BATCH: usize = quinn_udp::BATCH_SIZE;

/// One receive buffer: one byte longer than the largest valid datagram, so an oversize datagram
/// shows as 1233 bytes and the engine drops it as too long (spec §7) instead of parsing a
/// truncation.
const BUF_LEN: usize = MAX_DATAGRAM_LEN + 1;

/// A UDP socket read by the driver, a batch at a time.
///
/// Checks, dedup and own-broadcast drop are the engine's (by node id).
pub(crate) struct UdpSource {
    socket: Arc<UdpSocket>,
    /// `quinn-udp`'s view of the socket; `None` when it could not be set up (then one
    /// `recv_from` per datagram).
    state: Option<Arc<UdpSocketState>>,
    /// `BATCH` buffers of `BUF_LEN` bytes, back to back.
    bufs: Box<[u8]>,
    meta: Box<[RecvMeta]>,
    /// Buffers filled by the last read, the one being handed out, and the offset of its next
    /// datagram (several only with GRO).
    filled: usize,
    next: usize,
    offset: usize,
    counters: Arc<Counters>,
    /// Set by a receive error: the next `ready` pauses first.
    backoff: bool,
}

impl UdpSource {
    /// `state`: from [`socket_state`].
    pub(crate) fn new(
        socket: Arc<UdpSocket>,
        state: Option<Arc<UdpSocketState>>,
        counters: Arc<Counters>,
    ) -> UdpSource {
        crate::socket::watch_drops(&socket, &counters);
        UdpSource {
            socket,
            state,
            bufs: vec![0u8; BATCH * BUF_LEN].into_boxed_slice(),
            meta: vec![RecvMeta::default(); BATCH].into_boxed_slice(),
            filled: 0,
            next: 0,
            offset: 0,
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

    /// Reads what the socket holds now, up to [`BATCH`] datagrams; `false` when nothing (or an
    /// error, counted).
    fn refill(&mut self) -> bool {
        self.next = 0;
        self.offset = 0;
        self.filled = 0;
        let result = match &self.state {
            Some(state) => {
                let mut iovs: [IoSliceMut<'_>; BATCH] = {
                    let mut chunks = self.bufs.chunks_exact_mut(BUF_LEN);
                    std::array::from_fn(|_| IoSliceMut::new(chunks.next().expect("BATCH buffers")))
                };
                let meta = &mut self.meta;
                let socket = &self.socket;
                socket.try_io(Interest::READABLE, || {
                    state.recv((&**socket).into(), &mut iovs, meta)
                })
            }
            None => self
                .socket
                .try_recv_from(&mut self.bufs[..BUF_LEN])
                .map(|(len, addr)| {
                    self.meta[0] = RecvMeta {
                        addr,
                        len,
                        stride: len,
                        ..RecvMeta::default()
                    };
                    1
                }),
        };
        match result {
            Ok(n) => {
                self.filled = n;
                n > 0
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => {
                self.failed(&e);
                false
            }
        }
    }
}

/// `quinn-udp`'s view of `socket`, set up for BeeTS (GRO and control messages off), for batched
/// receive and send; `None` when it cannot be set up (then one datagram per call).
pub(crate) fn socket_state(socket: &UdpSocket) -> Option<Arc<UdpSocketState>> {
    match UdpSocketState::new(socket.into()) {
        Ok(state) => {
            gro_off(socket);
            no_control_messages(socket);
            Some(Arc::new(state))
        }
        Err(e) => {
            debug!(error = %e, "batched receive and send unavailable; one datagram per call");
            None
        }
    }
}

/// Turns UDP GRO off (see the module docs); Linux only, and only where the kernel has it.
fn gro_off(socket: &UdpSocket) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use nix::sys::socket::{setsockopt, sockopt::UdpGroSegment};
        if let Err(e) = setsockopt(socket, UdpGroSegment, &false) {
            trace!(error = %e, "UDP_GRO not turned off");
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = socket;
}

/// Turns off the per-datagram control messages `quinn-udp` asks for (TOS/traffic class for ECN,
/// the packet's destination address): BeeTS reads neither, and the kernel would build them for
/// every datagram (`put_cmsg` was ≈ 1.5 % of a loopback flood's profile). Best effort.
fn no_control_messages(socket: &UdpSocket) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use nix::sys::socket::{setsockopt, sockopt};
        let sock = socket2::SockRef::from(socket);
        let v6 = socket.local_addr().is_ok_and(|a| a.is_ipv6());
        let (tos, info) = if v6 {
            (
                sock.set_recv_tclass_v6(false),
                setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &false),
            )
        } else {
            (
                sock.set_recv_tos_v4(false),
                setsockopt(socket, sockopt::Ipv4PacketInfo, &false),
            )
        };
        if tos.is_err() || info.is_err() {
            trace!(?tos, ?info, "some control messages left on");
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = socket;
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
        if self.next < self.filled {
            return true; // datagrams of the last batch are still to be handed out
        }
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
        if self.next >= self.filled && !self.refill() {
            return false;
        }
        let meta = self.meta[self.next];
        let buf = &self.bufs[self.next * BUF_LEN..][..meta.len.min(BUF_LEN)];
        // One datagram, or with GRO the next `stride` bytes of several.
        let stride = if meta.stride == 0 {
            buf.len()
        } else {
            meta.stride
        };
        let end = (self.offset + stride).min(buf.len());
        let datagram = &buf[self.offset..end];
        if end >= buf.len() {
            self.next += 1;
            self.offset = 0;
        } else {
            self.offset = end;
        }
        Counters::add(&self.counters.datagrams_received, 1);
        if datagram.len() > MAX_DATAGRAM_LEN {
            Counters::add(&self.counters.oversize_received, 1);
            trace!(from = %meta.addr, "oversize datagram");
        }
        deliver(PeerAddr::Ip(meta.addr), Frame::Datagram(datagram), None);
        true
    }
}
