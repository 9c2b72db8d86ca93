//! The driver task: owns the [`Node`], feeds it frames, commands and time, sends what it
//! emits and routes its events to waiting callers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, trace, warn};

use super::backend::{ChannelSource, FrameSink, FrameSource, ReceivedFrame, SendError};
use super::handle::{ClientError, Command, Direct, Reply, Respond, SpaceHandle};
use crate::Op;
use crate::node::{
    Answer, Decision, DecisionSender, DecisionToken, Delivery, Event, Node, NodeStats, RequestId,
    Transmit,
};
use crate::space::ListenerId;
use crate::time::Time;

/// Driver counters beside the engine's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// The engine's counters.
    pub node: NodeStats,
    /// Frames the sink failed to send, as far as the driver and the handles' direct sends saw
    /// (a backend that batches sends may count later failures only in its own stats, as
    /// `beets-udp`'s `UdpStats::send_errors` does).
    pub send_errors: u64,
    /// Deliveries dropped because a subscriber's channel was full.
    pub deliveries_dropped: u64,
    /// Dedup keys remembered now (bounded by `NodeConfig::dedup_capacity`, spec §8).
    pub dedup_len: usize,
    /// Nodes heard recently (IAMHERE), now ([`Node::neighbours`](crate::Node::neighbours)).
    pub neighbours: usize,
    /// Frames waiting for the backend's answer now (an `out` whose send would block).
    pub queued: usize,
    /// Requests waiting for a reply or their timeout now.
    pub pending_requests: usize,
}

/// Most queued commands or frames taken per wake-up before sending what they produced.
const BATCH: usize = 64;

/// How long a closing driver keeps sending the frames queued before the close.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

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
    // Hooks that decide later (agents) answer over this channel; the driver applies each
    // decision as it comes, between frames (the engine never waits for one).
    let (decisions_tx, decisions) = mpsc::unbounded_channel();
    let mut node = node;
    node.attach_decisions(DecisionSender::new(move |token, decision| {
        decisions_tx.send((token, decision)).is_ok()
    }));
    let driver = Driver {
        decisions,
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

/// Where a request's outcome goes: the network-only API's reply, or a scoped request's answer.
enum Waiter {
    Reply(oneshot::Sender<Option<Reply>>),
    Answer(oneshot::Sender<Option<Answer>>),
}

struct Driver<S, R> {
    /// Late hook decisions ([`Verdict::Later`](crate::node::Verdict::Later)).
    decisions: mpsc::UnboundedReceiver<(DecisionToken, Decision)>,
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
    waiting: BTreeMap<RequestId, Waiter>,
    listeners: BTreeMap<ListenerId, mpsc::Sender<Delivery>>,
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
                Some((token, decision)) = self.decisions.recv() => {
                    let now = self.now();
                    self.node.decide(now, token, decision);
                    while let Ok((token, decision)) = self.decisions.try_recv() {
                        self.node.decide(now, token, decision);
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
        // Frames queued before the close (an `out` whose direct send would have blocked, a
        // command handled in the last batch) still go out, for at most CLOSE_FLUSH.
        if tokio::time::timeout(CLOSE_FLUSH, self.flush())
            .await
            .is_err()
        {
            warn!("frames still queued at close not sent within {CLOSE_FLUSH:?}");
        }
        // A sealed space keeps its replay window across restarts (spec §12).
        let now = self.now();
        if let Err(e) = self.node.save_seal_state(now) {
            warn!(error = %e, "replay window not saved");
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
        s.neighbours = self.node.neighbours().count();
        s.queued = self.outbox.len();
        s.pending_requests = self.node.pending_requests();
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
        let result = self.sink.send_ref(&tx).await;
        // The buffer goes back to the engine for its next datagram (no allocation per frame).
        self.node.recycle(tx);
        match result {
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
                let lost = match self.waiting.remove(&id) {
                    None => None,
                    Some(Waiter::Reply(w)) => w.send(reply).err().flatten(),
                    Some(Waiter::Answer(w)) => w
                        .send(reply.map(|(tuple, received)| Answer {
                            tuple,
                            received: Some(received),
                        }))
                        .err()
                        .flatten()
                        .and_then(|a| Some((a.tuple, a.received?))),
                };
                if let Some((tuple, received)) = lost {
                    // The caller dropped the request just before this reply came.
                    self.node.count_reply_after_cancel();
                    debug!(%op, %tuple, from = %received.from, "reply after the request was cancelled; tuple lost");
                }
            }
            Event::LocalAnswer { id, op, tuple, .. } => {
                let answer = Some(Answer {
                    tuple,
                    received: None,
                });
                let unclaimed = match self.waiting.remove(&id) {
                    Some(Waiter::Answer(w)) => w.send(answer).err().flatten(),
                    _ => answer,
                };
                // The caller went just before: a taken tuple goes back into the local space.
                if let Some(a) = unclaimed
                    && op == Op::Inp
                {
                    let now = self.now();
                    let _ = self.node.host_out(now, a.tuple, None);
                }
            }
            Event::ReplyAfterCancel {
                op,
                tuple,
                received,
            } => {
                debug!(%op, %tuple, from = %received.from, "reply after the request was cancelled; tuple lost");
            }
            Event::Delivered { listener, delivery } => {
                let Some(tx) = self.listeners.get(&listener) else {
                    return;
                };
                match tx.try_send(delivery) {
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
                            self.waiting.insert(id, Waiter::Reply(tx));
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
            Command::RequestIn(op, template, timeout, scope, r) => {
                match self.node.request_in(now, op, template, timeout, scope) {
                    Ok(id) => {
                        let (tx, rx) = oneshot::channel();
                        if r.send(Ok((id, rx))).is_ok() {
                            self.waiting.insert(id, Waiter::Answer(tx));
                        } else {
                            self.node.cancel(id);
                        }
                    }
                    Err(e) => {
                        let _ = r.send(Err(e.into()));
                    }
                }
            }
            Command::Lease(t, l, r) => {
                let _ = r.send(self.node.lease(now, t, l).map_err(Into::into));
            }
            Command::Renew(id, l, r) => {
                let res = self.node.renew(now, id, l).map(|_| ());
                let _ = r.send(res.map_err(Into::into));
            }
            Command::CancelLease(id, r) => {
                let _ = r.send(self.node.cancel_lease(now, id));
            }
            Command::HostRdAll(t, r) => {
                let _ = r.send(self.node.host().rd_all(now, &t));
            }
            Command::HostInpAll(t, r) => {
                let _ = r.send(self.node.host().inp_all(now, &t));
            }
            Command::HostRmAll(t, r) => {
                let _ = r.send(self.node.host().rm_all(now, &t));
            }
            Command::SubscribeTo(template, kinds, buffer, r) => {
                let id = self.node.subscribe_to(template, kinds);
                let (tx, rx) = mpsc::channel(buffer);
                self.listeners.insert(id, tx);
                let _ = r.send(rx);
            }
            Command::Cancel(id) => {
                if self.waiting.remove(&id).is_some() {
                    self.node.cancel(id);
                }
            }
            Command::HostOut(t, l, r) => {
                let res = self.node.host_out(now, t, l).map(|_| ());
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
