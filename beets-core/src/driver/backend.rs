//! What a backend implements: how to send a frame, where received frames come from.

use std::future::Future;
use std::io;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::Frame;
use crate::node::{PeerAddr, Transmit};

/// A frame a backend received, owned so it can cross a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedFrame {
    /// Sender address.
    pub from: PeerAddr,
    /// The frame.
    pub frame: OwnedFrame,
    /// Signal strength in dBm (BLE only).
    pub rssi: Option<i16>,
}

/// An owned [`Frame`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnedFrame {
    /// A UDP datagram.
    Datagram(Vec<u8>),
    /// A BLE advertisement's local name and 16-bit service UUID values.
    Advertisement {
        /// Local name.
        local_name: String,
        /// UUID values (a set, any order).
        service_uuids: Vec<u16>,
    },
}

impl OwnedFrame {
    /// The borrowed view the engine takes.
    pub fn as_frame(&self) -> Frame<'_> {
        match self {
            OwnedFrame::Datagram(d) => Frame::Datagram(d),
            OwnedFrame::Advertisement {
                local_name,
                service_uuids,
            } => Frame::Advertisement {
                local_name,
                service_uuids,
            },
        }
    }
}

/// Why a [`FrameSink`] did not send a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The backend would not take the frame, on purpose: a full sender queue under a refuse
    /// policy, a frame the controller cannot hold, a receive-only node. Nothing was sent; the
    /// `out` or `notify` that produced the frame returns [`ClientError::Refused`](super::ClientError::Refused) with this text.
    #[error(transparent)]
    Refused(Refusal),
    /// Sending failed. Logged and counted in [`DriverStats::send_errors`](super::DriverStats::send_errors); the node keeps
    /// running and the caller is not told (a broadcast may be lost anyway).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Why a backend would not take a frame, on purpose (see [`SendError::Refused`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The BLE sender refused it: a full queue under `QueuePolicy::Refuse`, a frame too large
    /// for the controller, or no advertising instance (a receive-only node).
    #[error(transparent)]
    Ble(#[from] crate::ble::scheduler::SchedulerError),
}

/// How a backend broadcasts one frame.
pub trait FrameSink: Send + 'static {
    /// Broadcasts `tx` (or queues it with the radio).
    ///
    /// # Errors
    /// [`SendError::Refused`] when the backend will not send it; [`SendError::Io`] when sending
    /// failed. Both are logged and counted by the driver, and the node keeps running.
    fn send(&mut self, tx: Transmit) -> impl Future<Output = Result<(), SendError>> + Send;

    /// As [`send`](Self::send), with the frame lent: the driver then hands its buffer back to
    /// the engine ([`Node::recycle`](crate::Node::recycle)) for a later frame, so a backend that
    /// implements this sends without allocating per frame. The default clones the frame into
    /// [`send`](Self::send).
    fn send_ref(&mut self, tx: &Transmit) -> impl Future<Output = Result<(), SendError>> + Send {
        self.send(tx.clone())
    }

    /// A way to send a UDP datagram at once from any task, if the backend has one. With it (and
    /// a UDP node), [`SpaceHandle::out`](super::SpaceHandle::out) encodes and sends in the caller's task instead of
    /// handing the message to the driver. `None` (the default) sends everything through the
    /// driver.
    fn direct(&self) -> Option<Arc<dyn DirectSend>> {
        None
    }
}

/// Sends a finished datagram without waiting, from any task (see [`FrameSink::direct`]).
pub trait DirectSend: Send + Sync + 'static {
    /// Sends `datagram` to each of the backend's destinations if that needs no waiting.
    /// `None`: nothing was sent because the socket would block — the driver then sends it,
    /// waiting as it does for its own frames. `Some(result)`: every destination was tried;
    /// the first error, if any (logged and counted by the driver as a send error, as for
    /// [`FrameSink::send`]; the node keeps running).
    fn try_send_now(&self, datagram: &[u8]) -> Option<io::Result<()>>;
}

/// Where the driver's received frames come from, read in the driver's own task.
///
/// The driver waits on [`ready`](Self::ready) beside its commands and timer, then calls
/// [`try_recv`](Self::try_recv) until it gives `false` (or a batch of 64 frames is done, so
/// commands and sends are not starved by a flood). A frame is handed over borrowed, straight
/// into [`Node::handle_frame`](crate::Node::handle_frame): a socket source reads into one buffer it reuses.
///
/// A source handles its own errors: it counts and logs them and, if it must back off, does so
/// inside `ready` (the driver goes on serving commands meanwhile). Neither method may panic.
pub trait FrameSource: Send + 'static {
    /// Waits until [`try_recv`](Self::try_recv) may have a frame (a spurious wake-up is fine).
    /// `false` means the source has ended for good: the driver stops polling it and goes on
    /// sending only.
    fn ready(&mut self) -> impl Future<Output = bool> + Send;

    /// Takes one frame if one is there now, without waiting, and calls `deliver` with the
    /// sender's address, the frame and its RSSI in dBm (BLE only). `false` when there was none.
    fn try_recv<F>(&mut self, deliver: F) -> bool
    where
        F: FnOnce(PeerAddr, Frame<'_>, Option<i16>);
}

/// Frames received by tasks of the backend (BLE scanners, test buses), over a channel: the
/// [`FrameSource`] that [`spawn`](super::spawn) builds from its `mpsc::Receiver`.
///
/// A channel cannot be peeked, so `ready` takes the first frame and holds it for the next
/// `try_recv` (receiving is cancel-safe, so nothing is lost when the driver's `select!` picks
/// another branch).
#[derive(Debug)]
pub struct ChannelSource {
    frames: mpsc::Receiver<ReceivedFrame>,
    held: Option<ReceivedFrame>,
}

impl ChannelSource {
    /// A source reading `frames`; it ends when every sender is dropped and the channel is empty.
    pub fn new(frames: mpsc::Receiver<ReceivedFrame>) -> ChannelSource {
        ChannelSource { frames, held: None }
    }
}

impl FrameSource for ChannelSource {
    async fn ready(&mut self) -> bool {
        if self.held.is_none() {
            self.held = self.frames.recv().await;
        }
        self.held.is_some()
    }

    fn try_recv<F>(&mut self, deliver: F) -> bool
    where
        F: FnOnce(PeerAddr, Frame<'_>, Option<i16>),
    {
        match self.held.take().or_else(|| self.frames.try_recv().ok()) {
            Some(f) => {
                deliver(f.from, f.frame.as_frame(), f.rssi);
                true
            }
            None => false,
        }
    }
}
