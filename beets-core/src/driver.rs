//! The async driver: runs a sans-IO [`Node`] on tokio and gives applications a cloneable
//! [`SpaceHandle`] with async `out`, `notify`, `rd`, `inp`, `test`, `where` and the local `host`
//! operations (feature `tokio`).
//!
//! Backends stay thin: a backend gives the driver a [`FrameSink`] (how to broadcast one frame)
//! and a [`FrameSource`] (where received frames come from). The driver owns the node, feeds it,
//! sleeps until [`Node::poll_timeout`], sends what [`Node::poll_transmit`] gives, and routes
//! [`Event`]s to the waiting callers. `beets-udp` and `beets-ble` both use it.
//!
//! ```text
//!  SpaceHandle ──commands──▶ ┌────────────── driver task ──────────────┐ ──▶ FrameSink::send
//!  (clone per task)          │ Node (sans-IO) + timer + request table │
//!  ◀── replies / None ────── └─────────────────────────────────────────┘ ◀── FrameSource
//! ```
//!
//! A source that can be read without waiting (a UDP socket: `beets-udp`) is polled by the driver
//! itself, so a datagram goes from the socket buffer into the engine with no task hop and no
//! copy. A backend whose frames come from tasks of its own (the BLE scanners) hands them over a
//! channel: [`spawn`] takes an `mpsc::Receiver<ReceivedFrame>`, which is a source too.
//!
//! Closing: when every handle is dropped, or [`SpaceHandle::close`] is called, the driver stops;
//! requests still pending complete with [`ClientError::Closed`] ("space closed"), never silently.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, trace, warn};

use crate::message::Message;
use crate::node::{
    DatagramEncoder, Event, Node, NodeError, NodeStats, PeerAddr, Received, RequestId, Transmit,
    Transport,
};
use crate::space::{ListenerId, SpaceError};
use crate::time::Time;
use crate::tuple::{Template, Tuple};
use crate::{Frame, Op};

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
    /// `out` or `notify` that produced the frame returns [`ClientError::Refused`] with this text.
    #[error("{0}")]
    Refused(String),
    /// Sending failed. Logged and counted in [`DriverStats::send_errors`]; the node keeps
    /// running and the caller is not told (a broadcast may be lost anyway).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// How a backend broadcasts one frame.
pub trait FrameSink: Send + 'static {
    /// Broadcasts `tx` (or queues it with the radio).
    ///
    /// # Errors
    /// [`SendError::Refused`] when the backend will not send it; [`SendError::Io`] when sending
    /// failed. Both are logged and counted by the driver, and the node keeps running.
    fn send(&mut self, tx: Transmit) -> impl Future<Output = Result<(), SendError>> + Send;

    /// A way to send a UDP datagram at once from any task, if the backend has one. With it (and
    /// a UDP node), [`SpaceHandle::out`] encodes and sends in the caller's task instead of
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

/// What a handle needs to send an `out` itself.
struct Direct {
    encoder: DatagramEncoder,
    sink: Arc<dyn DirectSend>,
    /// Send errors on this path, added to [`DriverStats::send_errors`].
    send_errors: AtomicU64,
}

/// Where the driver's received frames come from, read in the driver's own task.
///
/// The driver waits on [`ready`](Self::ready) beside its commands and timer, then calls
/// [`try_recv`](Self::try_recv) until it gives `false` (or a batch of 64 frames is done, so
/// commands and sends are not starved by a flood). A frame is handed over borrowed, straight
/// into [`Node::handle_frame`]: a socket source reads into one buffer it reuses.
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
/// [`FrameSource`] that [`spawn`] builds from its `mpsc::Receiver`.
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

/// Why an async operation failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The space's driver has stopped (closed, or all handles dropped); pending requests end so.
    #[error("space closed")]
    Closed,
    /// The engine refused the command (size, lifetime, too many pending).
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The local space refused the tuple (full).
    #[error(transparent)]
    Space(#[from] SpaceError),
    /// The backend refused the frame ([`SendError::Refused`]): it was not sent.
    #[error("not sent: {0}")]
    Refused(String),
}

/// A reply to a request: the tuple and how it arrived.
pub type Reply = (Tuple, Received);

/// Driver counters beside the engine's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// The engine's counters.
    pub node: NodeStats,
    /// Frames the sink failed to send.
    pub send_errors: u64,
    /// Deliveries dropped because a subscriber's channel was full.
    pub deliveries_dropped: u64,
    /// Dedup keys remembered now (bounded by `NodeConfig::dedup_capacity`, spec §8).
    pub dedup_len: usize,
}

type Respond<T> = oneshot::Sender<T>;

/// Most queued commands or frames taken per wake-up before sending what they produced.
const BATCH: usize = 64;

enum Command {
    Send(Message, Respond<Result<(), ClientError>>),
    /// A datagram a handle encoded but could not send without waiting.
    Transmit(Transmit),
    Notify(Tuple, Respond<Result<(), ClientError>>),
    Request(
        Op,
        Template,
        Duration,
        Respond<Result<(RequestId, oneshot::Receiver<Option<Reply>>), ClientError>>,
    ),
    /// The caller dropped a request's future: the engine forgets the request.
    Cancel(RequestId),
    HostOut(Tuple, Option<Duration>, Respond<Result<(), ClientError>>),
    HostRd(Template, Respond<Option<Tuple>>),
    HostInp(Template, Respond<Option<Tuple>>),
    HostRm(Template, Respond<usize>),
    HostCount(Template, Respond<usize>),
    HostSnapshot(Respond<Vec<Tuple>>),
    Subscribe(Template, usize, Respond<mpsc::Receiver<Tuple>>),
    Announce(Respond<Result<(), ClientError>>),
    Stats(Respond<DriverStats>),
    Close,
}

/// A cloneable handle to a running space. Every method is async and cheap to call from many
/// tasks; the driver serialises them.
#[derive(Clone, Debug)]
pub struct SpaceHandle {
    tx: mpsc::Sender<Command>,
    transport: Transport,
    direct: Option<Arc<Direct>>,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("encoder", &self.encoder)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

/// Sends [`Command::Cancel`] when a request's future is dropped before its reply.
struct CancelOnDrop<'a> {
    tx: &'a mpsc::Sender<Command>,
    id: Option<RequestId>,
}

impl CancelOnDrop<'_> {
    fn disarm(mut self) {
        self.id = None;
    }
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            // A full command queue loses this cancel; the driver then notices the dropped
            // receiver when the reply or the timeout comes, and counts the reply all the same.
            let _ = self.tx.try_send(Command::Cancel(id));
        }
    }
}

impl SpaceHandle {
    async fn call<T>(&self, make: impl FnOnce(Respond<T>) -> Command) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// Broadcasts an OUT (see [`Node::out`]).
    ///
    /// On a UDP space whose backend has a direct path ([`FrameSink::direct`]) the datagram is
    /// encoded and sent right here, in the caller's task; only when the socket would block does
    /// it go to the driver, which waits for the socket. (Two `out`s may then leave in another
    /// order than they were called — UDP may reorder them anyway; receivers do not rely on it.)
    ///
    /// # Errors
    /// [`ClientError::Node`] for an oversize tuple or bad lifetime; [`ClientError::Refused`] when
    /// the backend would not take the frame (e.g. a full BLE queue under a refuse policy);
    /// [`ClientError::Closed`].
    pub async fn out(&self, tuple: Tuple, lifetime: Option<Duration>) -> Result<(), ClientError> {
        // Checked here, never waiting for a reply.
        let msg = crate::node::out_message(self.transport, tuple, lifetime)?;
        let command = match &self.direct {
            // UDP with a direct sink: encoded and sent in this task, no hop to the driver.
            Some(direct) => {
                if self.tx.is_closed() {
                    return Err(ClientError::Closed);
                }
                let datagram = direct.encoder.encode(&msg)?;
                match direct.sink.try_send_now(&datagram) {
                    Some(Ok(())) => return Ok(()),
                    Some(Err(e)) => {
                        direct.send_errors.fetch_add(1, Ordering::Relaxed);
                        warn!(error = %e, "send failed; node keeps running");
                        return Ok(());
                    }
                    None => Command::Transmit(Transmit::Datagram(datagram)),
                }
            }
            // Otherwise the driver sends it and answers once the backend took it or refused.
            None => return self.call(|r| Command::Send(msg, r)).await?,
        };
        self.tx.send(command).await.map_err(|_| ClientError::Closed)
    }

    /// Broadcasts a notification (TUPLE, R = 0; see [`Node::notify`]).
    ///
    /// # Errors
    /// [`ClientError::Node`] for an oversize tuple; [`ClientError::Refused`] when the backend
    /// would not take the frame; [`ClientError::Closed`].
    pub async fn notify(&self, tuple: Tuple) -> Result<(), ClientError> {
        self.call(|r| Command::Notify(tuple, r)).await?
    }

    async fn request(
        &self,
        op: Op,
        template: Template,
        timeout: Duration,
    ) -> Result<Option<Reply>, ClientError> {
        let (id, rx) = self
            .call(|r| Command::Request(op, template, timeout, r))
            .await??;
        // Dropping this future (a `select!`, a task abort) cancels the request in the engine, so
        // a reply that still comes is counted as lost instead of vanishing.
        let guard = CancelOnDrop {
            tx: &self.tx,
            id: Some(id),
        };
        let reply = rx.await.map_err(|_| ClientError::Closed);
        guard.disarm();
        reply
    }

    /// Reads a copy of a matching tuple from any space in range; `None` when nothing answered
    /// within `timeout`.
    ///
    /// # Errors
    /// [`ClientError::Node`] for an oversize template or too many pending requests;
    /// [`ClientError::Closed`] if the space closes first.
    pub async fn rd(
        &self,
        template: Template,
        timeout: Duration,
    ) -> Result<Option<Reply>, ClientError> {
        self.request(Op::Rd, template, timeout).await
    }

    /// Takes a matching tuple from a space in range; `None` on timeout.
    ///
    /// # Errors
    /// As [`SpaceHandle::rd`].
    pub async fn inp(
        &self,
        template: Template,
        timeout: Duration,
    ) -> Result<Option<Reply>, ClientError> {
        self.request(Op::Inp, template, timeout).await
    }

    /// Tests for a matching tuple in range; `None` on timeout.
    ///
    /// # Errors
    /// As [`SpaceHandle::rd`].
    pub async fn test(
        &self,
        template: Template,
        timeout: Duration,
    ) -> Result<Option<Reply>, ClientError> {
        self.request(Op::Test, template, timeout).await
    }

    /// Finds a node whose identity tuple matches; `None` on timeout.
    ///
    /// # Errors
    /// As [`SpaceHandle::rd`].
    pub async fn r#where(
        &self,
        template: Template,
        timeout: Duration,
    ) -> Result<Option<Reply>, ClientError> {
        self.request(Op::Where, template, timeout).await
    }

    /// Broadcasts this node's identity (IAMHERE) now.
    ///
    /// # Errors
    /// [`ClientError::Closed`], or [`ClientError::Node`] if the identity does not fit.
    pub async fn announce(&self) -> Result<(), ClientError> {
        self.call(Command::Announce).await?
    }

    /// Stores a tuple in the local space only (the paper's `host.out`).
    ///
    /// # Errors
    /// [`ClientError::Space`] when the space is full (refuse policy) or the lifetime is zero.
    pub async fn host_out(
        &self,
        tuple: Tuple,
        lifetime: Option<Duration>,
    ) -> Result<(), ClientError> {
        self.call(|r| Command::HostOut(tuple, lifetime, r)).await?
    }

    /// Reads from the local space only.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn host_rd(&self, template: Template) -> Result<Option<Tuple>, ClientError> {
        self.call(|r| Command::HostRd(template, r)).await
    }

    /// Takes from the local space only.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn host_inp(&self, template: Template) -> Result<Option<Tuple>, ClientError> {
        self.call(|r| Command::HostInp(template, r)).await
    }

    /// Removes every match from the local space; returns how many.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn host_rm(&self, template: Template) -> Result<usize, ClientError> {
        self.call(|r| Command::HostRm(template, r)).await
    }

    /// Counts matches in the local space (the `test` of the host mirror).
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn host_count(&self, template: Template) -> Result<usize, ClientError> {
        self.call(|r| Command::HostCount(template, r)).await
    }

    /// A copy of every live tuple in the local space, oldest first.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn host_tuples(&self) -> Result<Vec<Tuple>, ClientError> {
        self.call(Command::HostSnapshot).await
    }

    /// Subscribes to stored OUTs and notifications matching `template`. At most `buffer` tuples
    /// wait in the channel; more are dropped and counted ([`DriverStats::deliveries_dropped`]).
    /// Dropping the receiver ends the subscription.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn subscribe(
        &self,
        template: Template,
        buffer: usize,
    ) -> Result<mpsc::Receiver<Tuple>, ClientError> {
        self.call(|r| Command::Subscribe(template, buffer.max(1), r))
            .await
    }

    /// The counters.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn stats(&self) -> Result<DriverStats, ClientError> {
        self.call(Command::Stats).await
    }

    /// Stops the driver; pending requests complete with [`ClientError::Closed`].
    pub async fn close(&self) {
        let _ = self.tx.send(Command::Close).await;
    }
}

/// Spawns the driver of `node` on the current tokio runtime. `sink` broadcasts frames, `frames`
/// delivers what the backend's receive tasks heard; `name` labels the tracing span. The task ends
/// when the space is closed or every handle is dropped.
pub fn spawn<S: FrameSink>(
    name: String,
    node: Node,
    sink: S,
    frames: mpsc::Receiver<ReceivedFrame>,
) -> (SpaceHandle, tokio::task::JoinHandle<DriverStats>) {
    spawn_with_source(name, node, sink, ChannelSource::new(frames))
}

/// As [`spawn`], with a [`FrameSource`] the driver reads itself (e.g. a socket) instead of a
/// channel fed by another task.
pub fn spawn_with_source<S: FrameSink, R: FrameSource>(
    name: String,
    node: Node,
    sink: S,
    source: R,
) -> (SpaceHandle, tokio::task::JoinHandle<DriverStats>) {
    let (tx, rx) = mpsc::channel(256);
    let transport = node.config().transport;
    let span = info_span!("beets", node = %name);
    let direct = match (sink.direct(), node.datagram_encoder()) {
        (Some(sink), Some(encoder)) => Some(Arc::new(Direct {
            encoder,
            sink,
            send_errors: AtomicU64::new(0),
        })),
        _ => None,
    };
    let driver = Driver {
        direct: direct.clone(),
        outbox: VecDeque::new(),
        node,
        sink,
        source: Some(source),
        commands: rx,
        epoch: Instant::now(),
        waiting: BTreeMap::new(),
        listeners: BTreeMap::new(),
        stats: DriverStats::default(),
    };
    let task = tokio::spawn(driver.run().instrument(span));
    (
        SpaceHandle {
            tx,
            transport,
            direct,
        },
        task,
    )
}

struct Driver<S, R> {
    /// The handles' direct path, for its error count.
    direct: Option<Arc<Direct>>,
    /// Frames whose `out`/`notify` waits for the backend's answer, sent before the node's own.
    outbox: VecDeque<(Transmit, Respond<Result<(), ClientError>>)>,
    node: Node,
    sink: S,
    /// `None` once the source has ended.
    source: Option<R>,
    commands: mpsc::Receiver<Command>,
    epoch: Instant,
    // Keyed by the engine's own ids (small, increasing): ordered maps, no hashing per delivery.
    waiting: BTreeMap<RequestId, oneshot::Sender<Option<Reply>>>,
    listeners: BTreeMap<ListenerId, mpsc::Sender<Tuple>>,
    stats: DriverStats,
}

impl<S: FrameSink, R: FrameSource> Driver<S, R> {
    fn now(&self) -> Time {
        Time::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn instant(&self, t: Time) -> Instant {
        self.epoch + Duration::from_millis(t.as_millis())
    }

    async fn run(mut self) -> DriverStats {
        loop {
            self.flush().await;
            let deadline = self.node.poll_timeout().map(|t| self.instant(t));
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Close) => break,
                    Some(cmd) => {
                        self.command(cmd);
                        // Take what else is queued before the next flush (fewer task wake-ups).
                        let mut closed = false;
                        for _ in 0..BATCH {
                            match self.commands.try_recv() {
                                Ok(Command::Close) => { closed = true; break; }
                                Ok(cmd) => self.command(cmd),
                                Err(mpsc::error::TryRecvError::Empty) => break,
                                Err(mpsc::error::TryRecvError::Disconnected) => { closed = true; break; }
                            }
                        }
                        if closed {
                            break;
                        }
                    }
                },
                open = source_ready(&mut self.source) => {
                    if open {
                        self.receive();
                    } else {
                        debug!("frame source ended; sending only");
                        self.source = None;
                    }
                },
                // Disabled while the node needs no wake-up (the commands branch is always on).
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)),
                    if deadline.is_some() => {
                    let now = self.now();
                    self.node.handle_timeout(now);
                }
            }
        }
        // Pending requests see their reply channel dropped: ClientError::Closed.
        self.waiting.clear();
        self.node.cancel_all();
        self.stats = self.snapshot();
        debug!(stats = ?self.stats, "space closed");
        self.stats
    }

    /// The counters now: the driver's, the engine's and the handles' direct sends.
    fn snapshot(&self) -> DriverStats {
        let mut s = self.stats;
        s.node = self.node.stats();
        s.dedup_len = self.node.dedup_len();
        if let Some(d) = &self.direct {
            s.send_errors += d.send_errors.load(Ordering::Relaxed);
        }
        s
    }

    /// Feeds the engine what the source holds now, up to [`BATCH`] frames.
    fn receive(&mut self) {
        let now = self.now();
        let Driver { node, source, .. } = self;
        let Some(source) = source else { return };
        for _ in 0..BATCH {
            let got =
                source.try_recv(|from, frame, rssi| node.handle_frame(now, from, frame, rssi));
            if !got {
                break;
            }
        }
    }

    /// Sends queued frames and routes events.
    async fn flush(&mut self) {
        loop {
            let mut idle = true;
            // Frames whose callers wait for the backend's answer go first: they were queued
            // before anything the node has produced since.
            while let Some((tx, waiting)) = self.outbox.pop_front() {
                idle = false;
                let result = self.send(tx).await;
                let _ = waiting.send(result);
            }
            while let Some(tx) = self.node.poll_transmit() {
                idle = false;
                let _ = self.send(tx).await;
            }
            while let Some(ev) = self.node.poll_event() {
                idle = false;
                self.event(ev);
            }
            if idle {
                break;
            }
        }
    }

    /// Sends one frame; a refusal is the caller's answer, an I/O error is only counted.
    async fn send(&mut self, tx: Transmit) -> Result<(), ClientError> {
        match self.sink.send(tx).await {
            Ok(()) => Ok(()),
            Err(SendError::Refused(why)) => {
                self.stats.send_errors += 1;
                warn!(%why, "frame refused by the backend; not sent");
                Err(ClientError::Refused(why))
            }
            Err(SendError::Io(e)) => {
                self.stats.send_errors += 1;
                warn!(error = %e, "send failed; node keeps running");
                Ok(())
            }
        }
    }

    /// Moves what the node has queued to the driver's outbox, `waiting` answered by the send of
    /// the last of them: the frame of the message just given to the node (the node's queue
    /// only ever drops its oldest).
    fn take_transmits(&mut self, waiting: Respond<Result<(), ClientError>>) {
        let mut frames = Vec::new();
        while let Some(tx) = self.node.poll_transmit() {
            frames.push(tx);
        }
        let Some(last) = frames.pop() else {
            let _ = waiting.send(Ok(()));
            return;
        };
        for tx in frames {
            // Earlier frames with nobody waiting: a closed receiver, answered into the void.
            let (nobody, _) = oneshot::channel();
            self.outbox.push_back((tx, nobody));
        }
        self.outbox.push_back((last, waiting));
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Completed { id, op, reply } => {
                if let Some(w) = self.waiting.remove(&id)
                    && let Err(Some((tuple, received))) = w.send(reply)
                {
                    // The caller dropped the request just before this reply came.
                    self.node.count_reply_after_cancel();
                    debug!(%op, %tuple, from = %received.from, "reply after the request was cancelled; tuple lost");
                }
            }
            Event::ReplyAfterCancel {
                op,
                tuple,
                received,
            } => {
                debug!(%op, %tuple, from = %received.from, "reply after the request was cancelled; tuple lost");
            }
            Event::Delivered {
                listener, tuple, ..
            } => {
                let Some(tx) = self.listeners.get(&listener) else {
                    return;
                };
                match tx.try_send(tuple) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => self.stats.deliveries_dropped += 1,
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        self.listeners.remove(&listener);
                        self.node.unsubscribe(listener);
                    }
                }
            }
            Event::NeighbourSeen { identity, received } => {
                debug!(%identity, from = %received.from, rssi = ?received.rssi, "neighbour");
            }
            Event::Dropped { from, reason } => trace!(%from, %reason, "dropped frame"),
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = self.now();
        match cmd {
            Command::Send(msg, r) => match self.node.send_checked(&msg) {
                Ok(()) => self.take_transmits(r),
                Err(e) => {
                    let _ = r.send(Err(e.into()));
                }
            },
            Command::Transmit(t) => self.node.queue_encoded(t),
            Command::Notify(t, r) => match self.node.notify(now, t) {
                Ok(()) => self.take_transmits(r),
                Err(e) => {
                    let _ = r.send(Err(e.into()));
                }
            },
            Command::Announce(r) => {
                let _ = r.send(self.node.announce(now).map_err(Into::into));
            }
            Command::Request(op, template, timeout, r) => {
                let started = match op {
                    Op::Rd => self.node.rd(now, template, timeout),
                    Op::Inp => self.node.inp(now, template, timeout),
                    Op::Test => self.node.test(now, template, timeout),
                    _ => self.node.r#where(now, template, timeout),
                };
                match started {
                    Ok(id) => {
                        let (tx, rx) = oneshot::channel();
                        if r.send(Ok((id, rx))).is_ok() {
                            self.waiting.insert(id, tx);
                        } else {
                            // The caller was gone before the request even started.
                            self.node.cancel(id);
                        }
                    }
                    Err(e) => {
                        let _ = r.send(Err(e.into()));
                    }
                }
            }
            Command::Cancel(id) => {
                if self.waiting.remove(&id).is_some() {
                    self.node.cancel(id);
                }
            }
            Command::HostOut(t, l, r) => {
                let res = self.node.host().out(now, t, l).map(|_| ());
                let _ = r.send(res.map_err(Into::into));
            }
            Command::HostRd(t, r) => {
                let _ = r.send(self.node.host().rd(now, &t));
            }
            Command::HostInp(t, r) => {
                let _ = r.send(self.node.host().inp(now, &t));
            }
            Command::HostRm(t, r) => {
                let _ = r.send(self.node.host().rm(now, &t));
            }
            Command::HostCount(t, r) => {
                let _ = r.send(self.node.host().count(now, &t));
            }
            Command::HostSnapshot(r) => {
                let _ = r.send(self.node.host().iter(now).cloned().collect());
            }
            Command::Subscribe(template, buffer, r) => {
                let id = self.node.subscribe(template);
                let (tx, rx) = mpsc::channel(buffer);
                self.listeners.insert(id, tx);
                let _ = r.send(rx);
            }
            Command::Stats(r) => {
                let _ = r.send(self.snapshot());
            }
            Command::Close => {}
        }
    }
}

async fn source_ready<R: FrameSource>(source: &mut Option<R>) -> bool {
    match source {
        Some(source) => source.ready().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{NodeConfig, Transport};
    use crate::text::{parse_template, parse_tuple};
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    /// An in-memory broadcast bus: every frame a sink sends reaches every other member.
    type Members = Vec<(usize, mpsc::Sender<ReceivedFrame>)>;

    #[derive(Clone, Default)]
    struct Bus(Arc<Mutex<Members>>);

    struct BusSink {
        bus: Bus,
        me: usize,
    }

    impl FrameSink for BusSink {
        async fn send(&mut self, tx: Transmit) -> Result<(), SendError> {
            let Transmit::Datagram(d) = tx else {
                return Err(io::Error::other("UDP bus").into());
            };
            let members = self.bus.0.lock().unwrap().clone();
            for (i, m) in members {
                if i != self.me {
                    let from = PeerAddr::Ip(SocketAddr::from(([127, 0, 0, self.me as u8], 1)));
                    let frame = OwnedFrame::Datagram(d.clone());
                    let _ = m
                        .send(ReceivedFrame {
                            from,
                            frame,
                            rssi: None,
                        })
                        .await;
                }
            }
            Ok(())
        }
    }

    fn join(
        bus: &Bus,
        me: usize,
        name: &str,
    ) -> (SpaceHandle, tokio::task::JoinHandle<DriverStats>) {
        let (tx, rx) = mpsc::channel(64);
        bus.0.lock().unwrap().push((me, tx));
        let mut cfg = NodeConfig::new(Transport::Udp, name).unwrap();
        cfg.reply_backoff = Duration::from_millis(5);
        let node = Node::new(cfg, me as u64 + 1, Time::ZERO);
        spawn(
            name.into(),
            node,
            BusSink {
                bus: bus.clone(),
                me,
            },
            rx,
        )
    }

    /// Waits until `check` holds, polling; panics after 10 s (a deadline, not a guessed delay).
    async fn eventually<F, Fut>(mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check().await {
            assert!(Instant::now() < deadline, "condition not met within 10 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Dropping a request's future cancels it in the engine; a reply that still arrives (here an
    /// INP's tuple, which the responder has removed) is counted and reported, not lost silently.
    #[tokio::test]
    async fn a_dropped_request_is_cancelled_and_its_late_reply_counted() {
        struct Capture(mpsc::UnboundedSender<Vec<u8>>);
        impl FrameSink for Capture {
            async fn send(&mut self, tx: Transmit) -> Result<(), SendError> {
                let Transmit::Datagram(d) = tx else {
                    return Err(io::Error::other("UDP only").into());
                };
                let _ = self.0.send(d);
                Ok(())
            }
        }
        let (wire_tx, mut wire) = mpsc::unbounded_channel();
        let (frames, rx) = mpsc::channel(4);
        let node = Node::new(NodeConfig::new(Transport::Udp, "a").unwrap(), 1, Time::ZERO);
        let (a, _) = spawn("a".into(), node, Capture(wire_tx), rx);
        let a2 = a.clone();
        let request = tokio::spawn(async move {
            a2.inp(
                parse_template("(\"T\", ?)").unwrap(),
                Duration::from_secs(60),
            )
            .await
        });
        // The INP is on the wire; then the caller gives up (the future is dropped).
        let sent = wire.recv().await.unwrap();
        let (_, body) = crate::udp::parse_header(&sent).unwrap();
        assert!(matches!(
            Message::parse(body, None).unwrap().message,
            Message::Inp(_)
        ));
        request.abort();
        assert!(request.await.unwrap_err().is_cancelled());
        // The reply of a responder that removed its tuple arrives late.
        let reply = Message::Tuple {
            tuple: parse_tuple("(\"T\", 7)").unwrap(),
            reply: true,
        };
        let header = crate::udp::DatagramHeader {
            node_id: crate::udp::NodeId::new(9).unwrap(),
            seq: 1,
        };
        let datagram = crate::udp::encode(&header, &reply, None).unwrap();
        frames
            .send(ReceivedFrame {
                from: PeerAddr::Ip(SocketAddr::from(([127, 0, 0, 9], 1))),
                frame: OwnedFrame::Datagram(datagram),
                rssi: None,
            })
            .await
            .unwrap();
        eventually(|| async { a.stats().await.unwrap().node.messages_in == 1 }).await;
        let stats = a.stats().await.unwrap().node;
        assert_eq!(stats.replies_after_cancel, 1);
        assert_eq!(stats.replies_matched, 0);
        assert_eq!(stats.replies_unmatched, 0);
    }

    #[tokio::test]
    async fn out_rd_inp_over_a_memory_bus() {
        let bus = Bus::default();
        let (a, _) = join(&bus, 1, "a");
        let (b, _) = join(&bus, 2, "b");
        let mut sub = b
            .subscribe(parse_template("(\"T\", ?)").unwrap(), 4)
            .await
            .unwrap();
        a.out(parse_tuple("(\"T\", 1)").unwrap(), None)
            .await
            .unwrap();
        assert_eq!(sub.recv().await, Some(parse_tuple("(\"T\", 1)").unwrap()));
        let (tuple, rx) = a
            .rd(
                parse_template("(\"T\", ?int16)").unwrap(),
                Duration::from_secs(2),
            )
            .await
            .unwrap()
            .expect("b answers");
        assert_eq!(tuple, parse_tuple("(\"T\", 1)").unwrap());
        assert!(matches!(rx.from, PeerAddr::Ip(_)));
        assert!(
            a.inp(
                parse_template("(\"T\", ?)").unwrap(),
                Duration::from_secs(2)
            )
            .await
            .unwrap()
            .is_some()
        );
        assert_eq!(
            b.host_count(parse_template("(?, ?)").unwrap())
                .await
                .unwrap(),
            0
        );
        let none = a
            .rd(
                parse_template("(\"T\", ?)").unwrap(),
                Duration::from_millis(100),
            )
            .await
            .unwrap();
        assert_eq!(none, None);
        let stats = b.stats().await.unwrap();
        assert_eq!(stats.node.stored, 1);
        assert_eq!(stats.node.replies_sent, 2);
    }

    #[tokio::test]
    async fn pending_request_completes_with_closed_when_space_closes() {
        let bus = Bus::default();
        let (a, task) = join(&bus, 1, "a");
        let a2 = a.clone();
        let pending = tokio::spawn(async move {
            a2.rd(parse_template("(?)").unwrap(), Duration::from_secs(60))
                .await
        });
        // Close only once the request is out (not after a guessed delay).
        eventually(|| async { a.stats().await.unwrap().node.requests_sent == 1 }).await;
        a.close().await;
        assert_eq!(pending.await.unwrap(), Err(ClientError::Closed));
        assert_eq!(task.await.unwrap().node.requests_sent, 1);
        assert_eq!(a.stats().await, Err(ClientError::Closed));
        assert_eq!(
            a.out(parse_tuple("(1)").unwrap(), None)
                .await
                .unwrap_err()
                .to_string(),
            "space closed"
        );
    }

    #[tokio::test]
    async fn send_errors_are_counted_and_node_keeps_running() {
        struct Failing;
        impl FrameSink for Failing {
            async fn send(&mut self, _: Transmit) -> Result<(), SendError> {
                Err(io::Error::other("network down").into())
            }
        }
        let (_tx, rx) = mpsc::channel(1);
        let node = Node::new(NodeConfig::new(Transport::Udp, "x").unwrap(), 1, Time::ZERO);
        let (h, _) = spawn("x".into(), node, Failing, rx);
        h.out(parse_tuple("(1)").unwrap(), None).await.unwrap();
        h.host_out(parse_tuple("(2)").unwrap(), None).await.unwrap();
        assert_eq!(
            h.host_tuples().await.unwrap(),
            vec![parse_tuple("(2)").unwrap()]
        );
        assert_eq!(h.stats().await.unwrap().send_errors, 1);
    }

    #[tokio::test]
    async fn a_source_read_by_the_driver_feeds_the_engine_and_may_end() {
        // A source the driver reads itself: three OUT datagrams of another node, then one
        // spurious wake-up with nothing to read, then the end. The node stores all three and
        // keeps sending after its source is gone.
        use std::sync::atomic::AtomicBool;
        struct Scripted {
            datagrams: Vec<Vec<u8>>,
            spurious_done: bool,
            ended: Arc<AtomicBool>,
        }
        impl FrameSource for Scripted {
            async fn ready(&mut self) -> bool {
                if !self.datagrams.is_empty() {
                    return true;
                }
                tokio::task::yield_now().await;
                if !self.spurious_done {
                    self.spurious_done = true;
                    return true;
                }
                self.ended.store(true, Ordering::SeqCst);
                false
            }
            fn try_recv<F>(&mut self, deliver: F) -> bool
            where
                F: FnOnce(PeerAddr, Frame<'_>, Option<i16>),
            {
                if self.datagrams.is_empty() {
                    return false;
                }
                let d = self.datagrams.remove(0);
                let from = PeerAddr::Ip(SocketAddr::from(([127, 0, 0, 9], 1)));
                deliver(from, Frame::Datagram(&d), None);
                true
            }
        }
        struct Counting(Arc<Mutex<usize>>);
        impl FrameSink for Counting {
            async fn send(&mut self, _: Transmit) -> Result<(), SendError> {
                *self.0.lock().unwrap() += 1;
                Ok(())
            }
        }
        let sender = crate::udp::NodeId::new(9).unwrap();
        let datagrams = (1..=3)
            .map(|i| {
                let msg = Message::Out {
                    tuple: parse_tuple(&format!("(\"T\", {i})")).unwrap(),
                    lifetime: None,
                };
                let header = crate::udp::DatagramHeader {
                    node_id: sender,
                    seq: i,
                };
                crate::udp::encode(&header, &msg, None).unwrap()
            })
            .collect();
        let sent = Arc::new(Mutex::new(0));
        let node = Node::new(NodeConfig::new(Transport::Udp, "x").unwrap(), 1, Time::ZERO);
        let ended = Arc::new(AtomicBool::new(false));
        let source = Scripted {
            datagrams,
            spurious_done: false,
            ended: Arc::clone(&ended),
        };
        let (h, task) = spawn_with_source("x".into(), node, Counting(Arc::clone(&sent)), source);
        eventually(|| async { h.host_tuples().await.unwrap().len() == 3 }).await;
        // The source was asked until it ended.
        eventually(|| async { ended.load(Ordering::SeqCst) }).await;
        // The source has ended; the node still sends.
        let before = *sent.lock().unwrap();
        h.out(parse_tuple("(1)").unwrap(), None).await.unwrap();
        let stats = h.stats().await.unwrap();
        assert_eq!(*sent.lock().unwrap(), before + 1);
        assert_eq!(stats.node.frames_in, 3);
        h.close().await;
        task.await.unwrap();
    }

    #[tokio::test]
    async fn out_is_sent_by_the_handle_and_falls_back_to_the_driver_when_it_would_block() {
        use std::sync::atomic::AtomicU8;
        // 0: the direct send works; 1: it would block; 2: it fails.
        #[derive(Default)]
        struct Wire {
            mode: AtomicU8,
            direct: Mutex<Vec<Vec<u8>>>,
            driver: Mutex<Vec<Vec<u8>>>,
        }
        struct Direct(Arc<Wire>);
        impl DirectSend for Direct {
            fn try_send_now(&self, datagram: &[u8]) -> Option<io::Result<()>> {
                match self.0.mode.load(Ordering::Relaxed) {
                    0 => {
                        self.0.direct.lock().unwrap().push(datagram.to_vec());
                        Some(Ok(()))
                    }
                    1 => None,
                    _ => Some(Err(io::Error::other("network down"))),
                }
            }
        }
        struct Sink(Arc<Wire>);
        impl FrameSink for Sink {
            async fn send(&mut self, tx: Transmit) -> Result<(), SendError> {
                let Transmit::Datagram(d) = tx else {
                    return Err(io::Error::other("UDP only").into());
                };
                self.0.driver.lock().unwrap().push(d);
                Ok(())
            }
            fn direct(&self) -> Option<Arc<dyn DirectSend>> {
                Some(Arc::new(Direct(Arc::clone(&self.0))))
            }
        }
        let wire = Arc::new(Wire::default());
        let node = Node::new(NodeConfig::new(Transport::Udp, "x").unwrap(), 3, Time::ZERO);
        let id = node.node_id();
        let (_frames, rx) = mpsc::channel(1);
        let (h, task) = spawn("x".into(), node, Sink(Arc::clone(&wire)), rx);
        let header = |d: &[u8]| crate::udp::parse_header(d).unwrap().0;

        h.out(parse_tuple("(1)").unwrap(), None).await.unwrap();
        let sent = wire.direct.lock().unwrap().clone();
        assert_eq!(sent.len(), 1, "sent from the caller's task, at once");
        assert_eq!(header(&sent[0]).node_id, id);

        wire.mode.store(1, Ordering::Relaxed);
        h.out(parse_tuple("(2)").unwrap(), None).await.unwrap();
        eventually(|| async { !wire.driver.lock().unwrap().is_empty() }).await;
        let queued = wire.driver.lock().unwrap().clone();
        assert_eq!(queued.len(), 1, "the driver sent what would have blocked");
        // One counter for both paths: consecutive sequence numbers, the same node.
        assert_eq!(header(&queued[0]).node_id, id);
        assert_eq!(header(&queued[0]).seq, header(&sent[0]).seq.wrapping_add(1));
        let (_, body) = crate::udp::parse_header(&queued[0]).unwrap();
        let out = Message::parse(body, None).unwrap().message;
        assert_eq!(out.tuple(), Some(&parse_tuple("(2)").unwrap()));

        wire.mode.store(2, Ordering::Relaxed);
        h.out(parse_tuple("(3)").unwrap(), None).await.unwrap();
        let stats = h.stats().await.unwrap();
        assert_eq!(stats.send_errors, 1, "a failed direct send is counted");
        assert_eq!(stats.node.transmits, 3);
        assert_eq!(wire.direct.lock().unwrap().len(), 1);
        assert_eq!(wire.driver.lock().unwrap().len(), 1);

        h.close().await;
        task.await.unwrap();
        wire.mode.store(0, Ordering::Relaxed);
        let late = h.out(parse_tuple("(4)").unwrap(), None).await;
        assert_eq!(late, Err(ClientError::Closed));
        assert_eq!(
            wire.direct.lock().unwrap().len(),
            1,
            "nothing sent after close"
        );
    }

    #[tokio::test]
    async fn a_frame_the_backend_refuses_is_reported_to_its_caller() {
        struct Refusing;
        impl FrameSink for Refusing {
            async fn send(&mut self, _: Transmit) -> Result<(), SendError> {
                Err(SendError::Refused("sender queue full (2 frames)".into()))
            }
        }
        let (_tx, rx) = mpsc::channel(1);
        let node = Node::new(NodeConfig::new(Transport::Ble, "x").unwrap(), 1, Time::ZERO);
        let (h, _) = spawn("x".into(), node, Refusing, rx);
        let refused = ClientError::Refused("sender queue full (2 frames)".into());
        assert_eq!(
            h.out(parse_tuple("(1)").unwrap(), None).await,
            Err(refused.clone())
        );
        assert_eq!(h.notify(parse_tuple("(2)").unwrap()).await, Err(refused));
        assert_eq!(
            h.out(parse_tuple("(3)").unwrap(), None)
                .await
                .unwrap_err()
                .to_string(),
            "not sent: sender queue full (2 frames)"
        );
        // The node keeps serving.
        h.host_out(parse_tuple("(4)").unwrap(), None).await.unwrap();
        assert_eq!(h.stats().await.unwrap().send_errors, 3);
    }

    #[tokio::test]
    async fn oversize_out_is_refused_with_the_limit() {
        let bus = Bus::default();
        let (a, _) = join(&bus, 1, "a");
        let big = Tuple::new([crate::Value::Bytes(vec![0; 1300])]).unwrap();
        let err = a.out(big, None).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "OUT message needs 1304 bytes, a UDP datagram carries at most 1221"
        );
    }
}
