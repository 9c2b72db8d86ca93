//! The sans-IO protocol engine (spec wire-v1 §8–§9, paper §3–§5).
//!
//! A [`Node`] is one tuple space on one transport (BLE or UDP). It owns the local [`Space`], turns
//! operations into broadcast messages and incoming messages into space actions and replies. It has
//! no sockets, no clock and no threads, in the manner of `quinn-proto`: the caller feeds it
//! received frames and the current [`Time`], and drains what it wants sent, what happened, and
//! when it next needs to be woken.
//!
//! ```text
//!   app ── out/notify/rd/inp/test/where ──▶ ┌──────┐ ── poll_transmit ──▶ radio / socket
//!   app ◀── poll_event (replies, timeouts, ─ │ Node │ ◀── handle_frame ─── radio / socket
//!            listeners, neighbours, drops)   └──────┘ ◀── handle_timeout ── timer (poll_timeout)
//! ```
//!
//! # Call contract
//! 1. Build with [`Node::new`] (the seed chooses the node id, the first sequence number and the
//!    reply back-off; give a random seed in production, a fixed one in tests).
//! 2. Feed every received frame to [`Node::handle_frame`] and call [`Node::handle_timeout`] when
//!    the time from [`Node::poll_timeout`] has come (calling it early is harmless).
//! 3. After **any** call that takes `&mut self` — a command, `handle_frame` or `handle_timeout` —
//!    drain [`Node::poll_transmit`] (send each), [`Node::poll_event`] (act on each) and re-read
//!    [`Node::poll_timeout`] (re-arm the timer). Both queues are bounded: an undrained queue drops
//!    its oldest entries and counts them in [`NodeStats`].
//! 4. `now` must never go backwards between calls.
//!
//! # Replies and suppression
//! A node that can answer an RD, INP or TEST waits a random back-off in
//! `0..=`[`NodeConfig::reply_backoff`] before answering (RD, TEST and WHERE: `1..=` the shorter
//! [`NodeConfig::read_backoff`], 1 ms on UDP; spec §9 lets B differ per op). If it hears another
//! node's reply (a TUPLE with R = 1 matching the same template) meanwhile, it stays silent — and
//! for INP it keeps its tuple. So among nodes that hear each other, an INP removes one tuple, not
//! one per node (paper §3: operations are not atomic; nodes out of each other's range may still
//! both answer).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::ble::{self, FrameError};
use crate::dedup::DedupCache;
use crate::fpe::FpeKey;
use crate::message::{DecodeError, Message, Op, RequestOp};
use crate::space::{self, ListenerId, Space};
use crate::time::Time;
use crate::tuple::{Template, Tuple};
use crate::udp::{self, DatagramError, DatagramHeader, NodeId};

pub mod hooks;
pub mod seal;
mod types;
mod waits;
pub use hooks::{Decision, DecisionSender, DecisionToken, Hooks, Question, SpaceInfo, Verdict};
pub use seal::{SealConfig, SealedDrops};
pub use types::{Answer, PendingKey, Scope};
pub use types::{
    Delivery, DropReason, Event, Frame, IncomingRequest, MAX_NODE_NAME, Neighbour, NodeConfig,
    NodeError, NodeStats, PeerAddr, Received, RequestId, Transmit, Transport,
};
pub use waits::wait_secs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum DedupKey {
    Ble([u8; 6], u8, u8),
    Udp(NodeId, u32),
    /// A BLE frame from a non-BLE address (simulations).
    Other(PeerAddr, u8, u8),
}

/// Most cancelled requests remembered for [`NodeStats::replies_after_cancel`]; the oldest goes
/// first.
const MAX_CANCELLED: usize = 256;

#[derive(Debug)]
struct Pending {
    op: Op,
    template: Template,
    deadline: Time,
    /// Where it looks (own requests; [`Node::request_in`]).
    scope: Scope,
}

impl From<DedupKey> for PendingKey {
    fn from(k: DedupKey) -> PendingKey {
        match k {
            DedupKey::Ble(a, seq, crc) => PendingKey::Ble {
                from: PeerAddr::Ble(a),
                seq,
                crc,
            },
            DedupKey::Other(from, seq, crc) => PendingKey::Ble { from, seq, crc },
            DedupKey::Udp(node, seq) => PendingKey::Udp { node, seq },
        }
    }
}

/// An incoming message parked until a hook decides on it (see [`hooks`]).
#[derive(Debug)]
enum Parked {
    Out {
        tuple: Tuple,
        lifetime: Option<Duration>,
        received: Received,
    },
    Request {
        op: Op,
        template: Template,
        received: Received,
        /// The wait of a request that waits (spec §11) and its key.
        wait: Option<(NonZeroU16, PendingKey)>,
    },
    Notify {
        tuple: Tuple,
        received: Received,
    },
}

#[derive(Debug)]
struct Awaiting {
    token: DecisionToken,
    deadline: Time,
    decision: Option<Decision>,
    parked: Parked,
}

#[derive(Debug)]
struct ScheduledReply {
    at: Time,
    op: Op,
    template: Template,
}

/// The protocol engine. See the [module docs](self) for the call contract.
pub struct Node {
    config: NodeConfig,
    space: Space,
    dedup: DedupCache<DedupKey>,
    node_id: NodeId,
    /// The next sequence number (spec §6–§7), shared with this node's [`DatagramEncoder`]s.
    seq: Arc<AtomicU32>,
    /// Datagrams those encoders produced, for [`NodeStats::transmits`].
    encoded_elsewhere: Arc<AtomicU64>,
    rng: SmallRng,
    next_request: u64,
    pending: HashMap<RequestId, Pending>,
    /// Requests cancelled before their timeout, kept until it would have passed so that a reply
    /// still on its way is recognised and counted as lost ([`NodeStats::replies_after_cancel`]).
    cancelled: VecDeque<Pending>,
    scheduled: Vec<ScheduledReply>,
    /// Remote requests waiting here (spec §11), oldest first.
    waits: Vec<waits::Wait>,
    /// Keys for requests dispatched without one ([`PendingKey::Unkeyed`]).
    next_unkeyed: u64,
    next_announce: Option<Time>,
    neighbours: HashMap<PeerAddr, Neighbour>,
    transmits: VecDeque<Transmit>,
    /// Datagram buffers handed back by [`Node::recycle`], reused for the next datagrams (at most
    /// [`SPARE_BUFFERS`]): steady-state sending allocates nothing.
    spare: Vec<Vec<u8>>,
    events: VecDeque<Event>,
    hooks: Option<Box<dyn Hooks>>,
    /// Sealed spaces (spec §12): the sealer and the replay window.
    seal: Option<seal::SealState>,
    /// Where hooks that answer later send their decisions (set by the runner).
    decisions: Option<DecisionSender>,
    /// Messages waiting for a decision, in arrival order (see [`hooks`]).
    awaiting: VecDeque<Awaiting>,
    next_token: u64,
    /// The latest time the node was given (stamps deliveries of local outs).
    clock: Time,
    stats: NodeStats,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("transport", &self.config.transport)
            .field("identity", &self.config.identity)
            .field("node_id", &self.node_id)
            .field("stored", &self.space.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Parked {
    fn question(&self) -> Question<'_> {
        match self {
            Parked::Out {
                tuple,
                lifetime,
                received,
            } => Question::Out {
                tuple,
                lifetime: *lifetime,
                received,
            },
            Parked::Request {
                op,
                template,
                received,
                ..
            } => Question::Request {
                op: *op,
                template,
                received,
            },
            Parked::Notify { tuple, received } => Question::Notify { tuple, received },
        }
    }
}

impl Node {
    /// A node at time `now`. `seed` drives the node id (UDP), the first sequence number (spec
    /// §6–§7: random at each start) and the reply back-off.
    pub fn new(config: NodeConfig, seed: u64, now: Time) -> Node {
        let mut rng = SmallRng::seed_from_u64(seed);
        let node_id = NodeId::new(rng.random_range(1..=u32::MAX)).expect("non-zero by range");
        let seq = rng.random();
        let next_announce = config.announce_interval.map(|_| now);
        // Every stored tuple must fit one reply (a TUPLE with R = 1: the control byte and the
        // tuple), or a remote INP would remove a tuple that can never be sent.
        let mut config = config;
        let seal_state = config
            .seal
            .clone()
            .map(|s| seal::SealState::new(s, config.transport, now));
        if seal_state.is_some() {
            // A sealed space has no FPE key (spec §4 "Keys": one key per space).
            config.key = None;
        }
        let mut space = config.space.clone();
        let reply_max = if seal_state.is_some() {
            // The reply's body is the tuple, sealed (spec §12: ≤ 20 bytes on BLE).
            config.transport.sealed_max_body_len()
        } else {
            config.transport.max_message_len() - 1
        };
        space.max_tuple_len = Some(space.max_tuple_len.map_or(reply_max, |m| m.min(reply_max)));
        Node {
            space: Space::new(space),
            dedup: DedupCache::new(config.dedup_window, config.dedup_capacity),
            node_id,
            seq: Arc::new(AtomicU32::new(seq)),
            encoded_elsewhere: Arc::new(AtomicU64::new(0)),
            rng,
            next_request: 1,
            pending: HashMap::new(),
            cancelled: VecDeque::new(),
            scheduled: Vec::new(),
            waits: Vec::new(),
            next_unkeyed: 0,
            next_announce,
            neighbours: HashMap::new(),
            transmits: VecDeque::new(),
            spare: Vec::new(),
            events: VecDeque::new(),
            hooks: None,
            seal: seal_state,
            decisions: None,
            awaiting: VecDeque::new(),
            next_token: 0,
            clock: now,
            stats: NodeStats::default(),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// This run's node id (the UDP envelope's; unused on BLE).
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The counters.
    pub fn stats(&self) -> NodeStats {
        let mut stats = self.stats;
        stats.transmits += self.encoded_elsewhere.load(Ordering::Relaxed);
        stats
    }

    /// An encoder of this node's UDP datagrams that works outside the node (any thread): same
    /// node id, key and sequence-number counter, so what it encodes is indistinguishable from
    /// what [`poll_transmit`](Self::poll_transmit) gives. The async driver gives one to its
    /// handles, so that an `out` is encoded and sent from the caller's task without a hop to the
    /// driver. `None` on a BLE node (BLE frames are paced by the advertising scheduler).
    #[cfg(feature = "tokio")]
    pub(crate) fn datagram_encoder(&self) -> Option<DatagramEncoder> {
        (self.config.transport == Transport::Udp).then(|| DatagramEncoder {
            node_id: self.node_id,
            key: self.config.key.clone().map(Arc::new),
            seal: self.seal.as_ref().map(seal::SealState::sealer),
            seq: Arc::clone(&self.seq),
            encoded: Arc::clone(&self.encoded_elsewhere),
        })
    }

    /// Dedup keys remembered now (bounded by [`NodeConfig::dedup_capacity`]).
    pub fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    /// Requests pending now.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// Installs application hooks (agents), replacing any before. Messages parked for the old
    /// hooks keep waiting for their decisions (or deadlines).
    pub fn set_hooks(&mut self, mut hooks: Box<dyn Hooks>) {
        hooks.bind(SpaceInfo {
            transport: self.config.transport,
            keyed: self.config.key.is_some(),
            sealed: self.seal.is_some(),
        });
        if let Some(d) = &self.decisions {
            hooks.attach(d.clone());
        }
        self.hooks = Some(hooks);
    }

    /// Gives the hooks (now and later ones) the way their late decisions come back; a runner
    /// that routes them to [`Node::decide`] calls this once. The async driver does.
    pub fn attach_decisions(&mut self, decisions: DecisionSender) {
        if let Some(h) = self.hooks.as_mut() {
            h.attach(decisions.clone());
        }
        self.decisions = Some(decisions);
    }

    /// A hook's decision for the message parked under `token` ([`Verdict::Later`]). Parked
    /// messages are applied in arrival order, so this one takes effect once those before it are
    /// decided or expired. `false` (and [`NodeStats::decisions_late`] counted) when `token` is no
    /// longer parked: its deadline passed and the default was applied; the decision is dropped.
    pub fn decide(&mut self, now: Time, token: DecisionToken, decision: Decision) -> bool {
        self.clock = now;
        let Some(a) = self
            .awaiting
            .iter_mut()
            .find(|a| a.token == token && a.decision.is_none())
        else {
            self.stats.decisions_late += 1;
            return false;
        };
        a.decision = Some(decision);
        self.settle(now);
        self.drain_deliveries();
        true
    }

    /// Messages parked for a decision now.
    pub fn awaiting_decisions(&self) -> usize {
        self.awaiting.len()
    }

    /// Stores `tuple` in the local space only (the paper's `host.out`): answerable by remote
    /// `rd`/`inp`/`test`, delivered to local listeners (stamped `now`, no sender). As
    /// [`Space::out`] on [`Node::host`], plus the delivery stamp.
    ///
    /// # Errors
    /// As [`Space::out`]: [`SpaceError::Full`](crate::SpaceError::Full),
    /// [`SpaceError::ZeroLifetime`](crate::SpaceError::ZeroLifetime),
    /// [`SpaceError::TooLong`](crate::SpaceError::TooLong) (a tuple no reply can carry).
    pub fn host_out(
        &mut self,
        now: Time,
        tuple: Tuple,
        lifetime: Option<Duration>,
    ) -> Result<crate::space::OutReport, crate::SpaceError> {
        self.clock = now;
        self.drain_deliveries();
        let report = self.space.out(now, tuple, lifetime);
        // This out's deliveries carry its lifetime.
        self.drain_deliveries_from(None, lifetime);
        let report = report?;
        self.stored(now, report.id);
        Ok(report)
    }

    /// Stores `tuple` in the local space as [`Node::host_out`] does and returns its lease: the
    /// [`TupleId`](crate::space::TupleId) to [`renew`](Node::renew) or [`cancel_lease`](Node::cancel_lease).
    ///
    /// # Errors
    /// As [`Node::host_out`].
    pub fn lease(
        &mut self,
        now: Time,
        tuple: Tuple,
        lifetime: Option<Duration>,
    ) -> Result<crate::space::TupleId, crate::SpaceError> {
        self.host_out(now, tuple, lifetime).map(|r| r.id)
    }

    /// Renews a lease: the tuple now lives `lifetime` from `now` (`None`: until taken). Returns
    /// its new expiry ([`Time::MAX`]: never).
    ///
    /// # Errors
    /// [`SpaceError::Gone`](crate::SpaceError::Gone) when the tuple has left the space;
    /// [`SpaceError::ZeroLifetime`](crate::SpaceError::ZeroLifetime) for a zero lifetime.
    pub fn renew(
        &mut self,
        now: Time,
        id: crate::space::TupleId,
        lifetime: Option<Duration>,
    ) -> Result<Time, crate::SpaceError> {
        self.clock = now;
        self.space.renew(now, id, lifetime)
    }

    /// Cancels a lease: removes the tuple (listeners of removals hear
    /// [`DeliveryKind::Rm`](crate::DeliveryKind::Rm)) and returns it; `None` when it had already
    /// left the space.
    pub fn cancel_lease(&mut self, now: Time, id: crate::space::TupleId) -> Option<Tuple> {
        self.clock = now;
        let t = self.space.cancel(now, id);
        self.drain_deliveries();
        t
    }

    /// The local space: the paper's `host` mirror. Operations on it send nothing; an `out` here
    /// is answerable by remote `rd`/`inp`/`test`. Drain [`Node::poll_event`] after using it so
    /// listener deliveries are reported. A tuple stored here directly is **not** offered to
    /// waiting requests (spec §11, local waits): store with [`Node::host_out`] or
    /// [`Node::lease`] for that.
    pub fn host(&mut self) -> &mut Space {
        &mut self.space
    }

    /// The nodes heard recently (IAMHERE), by address.
    pub fn neighbours(&self) -> impl Iterator<Item = (&PeerAddr, &Neighbour)> {
        self.neighbours.iter()
    }

    /// Subscribes to incoming stored OUTs and notifications matching `template`
    /// ([`Event::Delivered`]).
    pub fn subscribe(&mut self, template: Template) -> ListenerId {
        self.space.subscribe(template)
    }

    /// Subscribes to the `kinds` of deliveries of tuples matching `template`, removals included
    /// ([`DeliveryKinds::REMOVALS`](crate::space::DeliveryKinds::REMOVALS)).
    pub fn subscribe_to(
        &mut self,
        template: Template,
        kinds: crate::space::DeliveryKinds,
    ) -> ListenerId {
        self.space.subscribe_to(template, kinds)
    }

    /// Ends a subscription; `false` if unknown.
    pub fn unsubscribe(&mut self, id: ListenerId) -> bool {
        self.space.unsubscribe(id)
    }

    // --- commands ------------------------------------------------------------------------------

    /// Broadcasts an OUT: every space in range stores `tuple` for `lifetime` (whole seconds,
    /// rounded up; `None` = each receiver's default). The local space is not changed (use
    /// [`Node::host`]).
    ///
    /// # Errors
    /// [`NodeError::TooLong`] when the message exceeds the transport (31 bytes on BLE, 1221 on
    /// UDP); [`NodeError::BadLifetime`] outside 1..=65535 s.
    pub fn out(
        &mut self,
        now: Time,
        tuple: Tuple,
        lifetime: Option<Duration>,
    ) -> Result<(), NodeError> {
        let _ = now;
        let msg = out_message(self.config.transport, tuple, lifetime)?;
        self.send(&msg)
    }

    /// Sends a message built and checked by [`out_message`] (the async driver checks on the
    /// caller's side and hands the message over without waiting for an answer).
    #[cfg(feature = "tokio")]
    pub(crate) fn send_checked(&mut self, msg: &Message) -> Result<(), NodeError> {
        self.send(msg)
    }

    /// Broadcasts a TUPLE with R = 0: handed to receivers' listeners and agents, not stored.
    ///
    /// # Errors
    /// [`NodeError::TooLong`] when the message exceeds the transport.
    pub fn notify(&mut self, now: Time, tuple: Tuple) -> Result<(), NodeError> {
        let _ = now;
        self.send(&Message::Tuple {
            tuple,
            reply: false,
        })
    }

    /// Asks for a copy of a tuple matching `template`; completes with the first reply or with
    /// none after `timeout` ([`Event::Completed`]).
    ///
    /// # Errors
    /// [`NodeError::TooLong`] or [`NodeError::TooManyPending`].
    pub fn rd(
        &mut self,
        now: Time,
        template: Template,
        timeout: Duration,
    ) -> Result<RequestId, NodeError> {
        self.request(now, Op::Rd, template, timeout)
    }

    /// Asks for a tuple matching `template` to be removed and sent (see the module docs on
    /// suppression).
    ///
    /// # Errors
    /// [`NodeError::TooLong`] or [`NodeError::TooManyPending`].
    pub fn inp(
        &mut self,
        now: Time,
        template: Template,
        timeout: Duration,
    ) -> Result<RequestId, NodeError> {
        self.request(now, Op::Inp, template, timeout)
    }

    /// Asks whether a tuple matching `template` exists (answered with a copy).
    ///
    /// # Errors
    /// [`NodeError::TooLong`] or [`NodeError::TooManyPending`].
    pub fn test(
        &mut self,
        now: Time,
        template: Template,
        timeout: Duration,
    ) -> Result<RequestId, NodeError> {
        self.request(now, Op::Test, template, timeout)
    }

    /// Asks which nodes' identity tuples match `template`; completes with the first IAMHERE
    /// reply (all replies also update [`Node::neighbours`]).
    ///
    /// # Errors
    /// [`NodeError::TooLong`] or [`NodeError::TooManyPending`].
    pub fn r#where(
        &mut self,
        now: Time,
        template: Template,
        timeout: Duration,
    ) -> Result<RequestId, NodeError> {
        self.request(now, Op::Where, template, timeout)
    }

    /// Broadcasts this node's identity (IAMHERE, R = 0) now.
    ///
    /// # Errors
    /// [`NodeError::TooLong`] when the identity tuple does not fit the transport.
    pub fn announce(&mut self, now: Time) -> Result<(), NodeError> {
        let _ = now;
        self.send(&Message::IAmHere {
            tuple: self.config.identity.clone(),
            reply: false,
        })
    }

    /// Cancels a pending request: it completes with no event. Until its timeout would have
    /// passed, a reply that matches it is counted in [`NodeStats::replies_after_cancel`] and
    /// reported as [`Event::ReplyAfterCancel`] (for an INP the replying node has removed that
    /// tuple, so it is lost). `false` if `id` was not pending.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        let Some(p) = self.pending.remove(&id) else {
            return false;
        };
        if p.scope.network() {
            self.remember_cancelled(p);
        }
        true
    }

    fn remember_cancelled(&mut self, p: Pending) {
        if self.cancelled.len() >= MAX_CANCELLED {
            self.cancelled.pop_front();
        }
        self.cancelled.push_back(p);
    }

    /// Counts a reply whose request completed in the engine but whose caller had already gone
    /// (the async driver's race between a dropped future and the reply).
    #[cfg(feature = "tokio")]
    pub(crate) fn count_reply_after_cancel(&mut self) {
        self.stats.replies_matched = self.stats.replies_matched.saturating_sub(1);
        self.stats.replies_after_cancel += 1;
    }

    /// Completes every pending request with none, at once (used when a space is closed).
    /// Returns the handles.
    pub fn cancel_all(&mut self) -> Vec<RequestId> {
        let mut ids: Vec<RequestId> = self.pending.drain().map(|(id, _)| id).collect();
        ids.sort_unstable();
        ids
    }

    fn request(
        &mut self,
        now: Time,
        op: Op,
        template: Template,
        timeout: Duration,
    ) -> Result<RequestId, NodeError> {
        if let Some(op) = RequestOp::from_op(op) {
            return self.request_in(now, op, template, timeout, Scope::Network);
        }
        if self.pending.len() >= self.config.max_pending {
            return Err(NodeError::TooManyPending {
                max: self.config.max_pending,
            });
        }
        self.send(&Message::Where(template.clone()))?;
        self.stats.requests_sent += 1;
        let id = self.next_id();
        self.pending.insert(
            id,
            Pending {
                op,
                template,
                deadline: now + timeout,
                scope: Scope::Network,
            },
        );
        Ok(id)
    }

    /// Encodes and queues a message.
    fn send(&mut self, msg: &Message) -> Result<(), NodeError> {
        if self.seal.is_some() {
            return self.send_sealed(msg);
        }
        let transport = self.config.transport;
        let len = msg.buffer_len();
        let max = transport.max_message_len();
        let too_long = || NodeError::TooLong {
            op: msg.op(),
            len,
            max,
            transport: transport.name(),
        };
        if len > max {
            return Err(too_long());
        }
        let key = self.config.key.as_ref();
        // Taken atomically (the node's encoders share the counter) once the message is known
        // to fit; a later encoding failure only leaves a gap, which receivers do not mind.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let transmit = match transport {
            Transport::Udp => {
                let header = DatagramHeader {
                    node_id: self.node_id,
                    seq,
                };
                let mut d = self
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(udp::MAX_DATAGRAM_LEN));
                d.resize(udp::HEADER_LEN + len, 0);
                let n = udp::emit(&header, msg, key, &mut d).map_err(|_| too_long())?;
                d.truncate(n);
                Transmit::Datagram(d)
            }
            Transport::Ble => Transmit::Advertisement(
                ble::pack_message(seq as u8, msg, key).map_err(|_| too_long())?,
            ),
        };
        self.stats.transmits += 1;
        self.push_transmit(transmit);
        Ok(())
    }

    /// Seals `msg` with the next counter (spec §12) and queues it in its frame or datagram.
    fn send_sealed(&mut self, msg: &Message) -> Result<(), NodeError> {
        let transport = self.config.transport;
        let body_len = msg.buffer_len() - 1;
        let max_body_len = transport.sealed_max_body_len();
        if body_len > max_body_len {
            return Err(NodeError::SealedTooLong {
                op: msg.op(),
                body_len,
                max_body_len,
                transport: transport.name(),
            });
        }
        let mut d = self.datagram_buffer();
        d.resize(udp::HEADER_LEN + crate::udp::MAX_MESSAGE_LEN, 0);
        let Some(state) = self.seal.as_mut() else {
            return Err(NodeError::SealCounter("not a sealed space".into()));
        };
        let sealed_len = state
            .seal_into(msg, &mut d[udp::HEADER_LEN..])
            .map_err(|e| match e {
                crate::sealed::SealerError::Seal(crate::sealed::SealError::TooLong { .. }) => {
                    NodeError::SealedTooLong {
                        op: msg.op(),
                        body_len,
                        max_body_len,
                        transport: transport.name(),
                    }
                }
                other => NodeError::SealCounter(other.to_string()),
            })?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let transmit = match transport {
            Transport::Udp => {
                let header = DatagramHeader {
                    node_id: self.node_id,
                    seq,
                };
                // Sealed in place behind the header: no copy, no allocation once warm.
                d.truncate(udp::HEADER_LEN + sealed_len);
                header.emit(
                    (&mut d[..udp::HEADER_LEN])
                        .try_into()
                        .expect("header length"),
                );
                Transmit::Datagram(d)
            }
            Transport::Ble => {
                let frame = ble::pack(seq as u8, &d[udp::HEADER_LEN..][..sealed_len]);
                // The buffer only held the sealed bytes: keep it for the next message.
                self.recycle(Transmit::Datagram(d));
                Transmit::Advertisement(
                    frame.map_err(|e| NodeError::SealCounter(format!("BLE frame: {e}")))?,
                )
            }
        };
        self.stats.transmits += 1;
        self.push_transmit(transmit);
        Ok(())
    }

    /// Persists the replay window of a sealed space now (the runner calls it on shutdown; the
    /// node also does every [`SealConfig::save_every`]). Nothing to do in other spaces.
    ///
    /// # Errors
    /// The store's error (see [`FileCounterStore`](crate::sealed::FileCounterStore)).
    pub fn save_seal_state(&mut self, now: Time) -> Result<(), crate::sealed::StoreError> {
        match self.seal.as_mut() {
            Some(s) => s.save(now),
            None => Ok(()),
        }
    }

    /// Queues a transmit already encoded — by a [`DatagramEncoder`] whose direct send could not
    /// go out at once — behind the node's own (bounded like them).
    #[cfg(feature = "tokio")]
    pub(crate) fn queue_encoded(&mut self, transmit: Transmit) {
        // Counted in `transmits` by the encoder already.
        self.push_transmit(transmit);
    }

    /// A buffer for the next datagram: a recycled one, else a new one of the largest datagram's
    /// capacity.
    fn datagram_buffer(&mut self) -> Vec<u8> {
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(udp::MAX_DATAGRAM_LEN))
    }

    /// Hands back a transmit taken with [`poll_transmit`](Self::poll_transmit) once it has been
    /// sent: its buffer is reused for a later datagram, so a driver that recycles every transmit
    /// sends without allocating (the tokio driver does). Optional; advertisements are dropped.
    pub fn recycle(&mut self, transmit: Transmit) {
        if let Transmit::Datagram(mut d) = transmit
            && self.spare.len() < SPARE_BUFFERS
            && d.capacity() >= udp::MAX_DATAGRAM_LEN
        {
            d.clear();
            self.spare.push(d);
        }
    }

    /// Queues `transmit`; when the queue is full the oldest is dropped and counted.
    fn push_transmit(&mut self, transmit: Transmit) {
        if self.transmits.len() >= self.config.transmit_queue.max(1) {
            self.transmits.pop_front();
            self.stats.transmits_dropped += 1;
        }
        self.transmits.push_back(transmit);
    }

    // --- input ---------------------------------------------------------------------------------

    /// Processes one received frame: checks and decodes it, drops repeats (spec §8) and acts on
    /// it (spec §9). `rssi` in dBm, BLE only. Never panics on any input; a bad frame is counted
    /// and reported as [`Event::Dropped`].
    pub fn handle_frame(&mut self, now: Time, from: PeerAddr, frame: Frame<'_>, rssi: Option<i16>) {
        self.clock = now;
        self.stats.frames_in += 1;
        let key = self.config.key.as_ref();
        let decoded = match (self.config.transport, frame) {
            (Transport::Udp, Frame::Datagram(bytes)) => {
                let (header, message) = match udp::parse_header(bytes) {
                    Ok(h) => h,
                    Err(e) => return self.drop_malformed(from, DropReason::BadDatagram(e)),
                };
                if header.node_id == self.node_id {
                    self.stats.dropped_own += 1;
                    return;
                }
                if self.seal.is_some() {
                    // §12: the replay window, not the §8 cache, filters sealed messages.
                    return self.receive_sealed_datagram(now, from, message);
                }
                if crate::sealed::is_sealed(message) {
                    return self.drop_sealed_no_key(from);
                }
                let dedup_key = DedupKey::Udp(header.node_id, header.seq);
                // Only valid messages are remembered, so a remembered key is a repeat of one
                // already processed: skip decoding it again (floods of replays stay cheap).
                let hash = self.dedup.hash(&dedup_key);
                if self.dedup.seen_hashed(now, hash, &dedup_key) {
                    self.stats.duplicates += 1;
                    return;
                }
                match Message::parse(message, key) {
                    Ok(d) => (dedup_key, hash, d),
                    Err(DecodeError::EncryptedNoKey) => {
                        return self.drop_key_mismatch(from, true);
                    }
                    Err(e) => {
                        let reason = DropReason::BadDatagram(DatagramError::Message(e));
                        return self.drop_malformed(from, reason);
                    }
                }
            }
            (
                Transport::Ble,
                Frame::Advertisement {
                    local_name,
                    service_uuids,
                },
            ) if self.seal.is_some() => {
                return self.receive_sealed_advertisement(
                    now,
                    from,
                    local_name,
                    service_uuids,
                    rssi,
                );
            }
            (
                Transport::Ble,
                Frame::Advertisement {
                    local_name,
                    service_uuids,
                },
            ) => match ble::unpack(local_name, service_uuids, key) {
                Ok(f) => {
                    let k = match from {
                        PeerAddr::Ble(a) => DedupKey::Ble(a, f.seq, f.crc),
                        other => DedupKey::Other(other, f.seq, f.crc),
                    };
                    (k, self.dedup.hash(&k), f.decoded)
                }
                Err(FrameError::Message(DecodeError::EncryptedNoKey)) => {
                    return self.drop_key_mismatch(from, true);
                }
                Err(FrameError::Message(DecodeError::NotV1 {
                    version: crate::sealed::SEALED_VERSION,
                })) => return self.drop_sealed_no_key(from),
                Err(e) => return self.drop_malformed(from, DropReason::BadFrame(e)),
            },
            (expected, frame) => {
                self.stats.dropped_transport += 1;
                let got = match frame {
                    Frame::Datagram(_) => "datagram",
                    Frame::Advertisement { .. } => "advertisement",
                };
                let expected = match expected {
                    Transport::Ble => "BLE",
                    Transport::Udp => "UDP",
                };
                self.push_event(Event::Dropped {
                    from,
                    reason: DropReason::WrongTransport { got, expected },
                });
                return;
            }
        };
        let (dedup_key, hash, decoded) = decoded;
        if decoded.encrypted != self.config.key.is_some() {
            return self.drop_key_mismatch(from, decoded.encrypted);
        }
        if !self.dedup.check_hashed(now, hash, dedup_key) {
            self.stats.duplicates += 1;
            return;
        }
        self.stats.messages_in += 1;
        let received = Received {
            from,
            at: now,
            rssi,
        };
        self.dispatch_keyed(now, decoded.message, received, Some(dedup_key.into()));
        self.drain_deliveries();
    }

    /// Spec §4 "Keys": a keyed space takes only E = 1, an unkeyed one only E = 0; the other kind
    /// belongs to another space (or is an attack) and is dropped above the decoder.
    fn drop_key_mismatch(&mut self, from: PeerAddr, encrypted: bool) {
        self.stats.dropped_key += 1;
        let keyed = self.config.key.is_some();
        self.push_event(Event::Dropped {
            from,
            reason: DropReason::KeyMismatch { encrypted, keyed },
        });
    }

    /// Spec §12 steps 1–4 in order for a datagram's message in a sealed space.
    fn receive_sealed_datagram(&mut self, now: Time, from: PeerAddr, message: &[u8]) {
        let Some(state) = self.seal.as_mut() else {
            return;
        };
        match state.receive(Transport::Udp, message) {
            Ok((opened, msg)) => self.accept_sealed(now, from, &opened, msg, None),
            Err(e) => self.drop_sealed(from, &e),
        }
    }

    /// Spec §6 "Receiving" with §12: candidates tried with steps 1, 2 and 4, step 3 once.
    fn receive_sealed_advertisement(
        &mut self,
        now: Time,
        from: PeerAddr,
        local_name: &str,
        service_uuids: &[u16],
        rssi: Option<i16>,
    ) {
        let Some(state) = self.seal.as_mut() else {
            return;
        };
        match ble::unpack_sealed(local_name, service_uuids, state.key()) {
            Ok(f) => match state.accept(&f.opened) {
                Ok(()) => self.accept_sealed(now, from, &f.opened, f.message, rssi),
                Err(e) => self.drop_sealed(from, &e),
            },
            Err(FrameError::Sealed(e)) => self.drop_sealed(from, &e),
            Err(e) => self.drop_malformed(from, DropReason::BadFrame(e)),
        }
    }

    fn accept_sealed(
        &mut self,
        now: Time,
        from: PeerAddr,
        opened: &crate::sealed::Opened,
        message: Message,
        rssi: Option<i16>,
    ) {
        self.stats.messages_in += 1;
        let received = Received {
            from,
            at: now,
            rssi,
        };
        // §11: a waiting request's repeat is recognised by (transport, source id, counter).
        let key = PendingKey::Sealed {
            transport: opened.transport(),
            source: opened.source_id().get(),
            counter: opened.counter(),
        };
        self.dispatch_keyed(now, message, received, Some(key));
        self.drain_deliveries();
    }

    fn drop_sealed(&mut self, from: PeerAddr, e: &crate::sealed::OpenError) {
        self.stats.sealed.count(e);
        self.push_event(Event::Dropped {
            from,
            reason: DropReason::Sealed { reason: e.reason() },
        });
    }

    fn drop_sealed_no_key(&mut self, from: PeerAddr) {
        self.stats.sealed.sealed_no_key += 1;
        self.push_event(Event::Dropped {
            from,
            reason: DropReason::Sealed {
                reason: "sealed but no key",
            },
        });
    }

    fn drop_malformed(&mut self, from: PeerAddr, reason: DropReason) {
        self.stats.dropped_malformed += 1;
        self.push_event(Event::Dropped { from, reason });
    }

    /// Spec §9 (and §11), one arm per message type. `key` is the message's §8 key, by which a
    /// waiting request is recognised when repeated (sealed messages: [`PendingKey::Sealed`]).
    fn dispatch_keyed(
        &mut self,
        now: Time,
        message: Message,
        received: Received,
        key: Option<PendingKey>,
    ) {
        match message {
            Message::Out { tuple, lifetime } => {
                let lifetime = lifetime.map(|s| Duration::from_secs(u64::from(s.get())));
                self.consult(
                    now,
                    Parked::Out {
                        tuple,
                        lifetime,
                        received,
                    },
                );
            }
            Message::Rd(t) => self.consider_request(now, Op::Rd, t, received, None),
            Message::Inp(t) => self.consider_request(now, Op::Inp, t, received, None),
            Message::Test(t) => self.consider_request(now, Op::Test, t, received, None),
            Message::Waiting { op, template, wait } => {
                let key = key.unwrap_or_else(|| {
                    self.next_unkeyed += 1;
                    PendingKey::Unkeyed(self.next_unkeyed)
                });
                self.consider_request(now, op.op(), template, received, Some((wait, key)));
            }
            Message::Tuple {
                tuple,
                reply: false,
            } => self.consult(now, Parked::Notify { tuple, received }),
            Message::Tuple { tuple, reply: true } => {
                // Another node answered: stay silent on the same request.
                let before = self.scheduled.len();
                self.scheduled
                    .retain(|s| s.op == Op::Where || !s.template.matches(&tuple));
                self.stats.replies_suppressed += (before - self.scheduled.len()) as u64;
                // ... and every request pending here that it matches is answered (spec §11).
                self.finish_waits(&tuple);
                self.complete_matching(&[Op::Rd, Op::Inp, Op::Test], &tuple, received);
            }
            Message::Where(t) => {
                if t.matches(&self.config.identity) {
                    let delay = self.backoff(Op::Where);
                    self.schedule(now + delay, Op::Where, t);
                }
            }
            Message::IAmHere { tuple, reply } => {
                self.record_neighbour(&tuple, received);
                if reply {
                    self.complete_matching(&[Op::Where], &tuple, received);
                }
            }
        }
    }

    fn consider_request(
        &mut self,
        now: Time,
        op: Op,
        template: Template,
        received: Received,
        wait: Option<(NonZeroU16, PendingKey)>,
    ) {
        match &wait {
            // A repeat of a request pending here adds nothing and restarts nothing (spec §11).
            Some((_, key)) if self.is_waiting(key) => {
                self.stats.waits_repeated += 1;
                return;
            }
            Some(_) => {}
            // Hooks are not bothered with requests this node cannot answer anyway.
            None if self.space.count(now, &template) == 0 => return,
            None => {}
        }
        self.consult(
            now,
            Parked::Request {
                op,
                template,
                received,
                wait,
            },
        );
    }

    /// Asks the hooks about `parked` and applies it now, or parks it until its decision (see
    /// [`hooks`]).
    fn consult(&mut self, now: Time, parked: Parked) {
        let token = DecisionToken(self.next_token);
        self.next_token += 1;
        let verdict = match self.hooks.as_mut() {
            None => Verdict::Now(Decision::Proceed),
            Some(h) => h.decide(token, &parked.question()),
        };
        let decision = match verdict {
            Verdict::Now(d) => return self.apply(now, parked, d),
            Verdict::Later => {
                self.stats.decisions_deferred += 1;
                None
            }
        };
        if self.awaiting.len() >= self.config.max_awaiting_decisions.max(1) {
            // Make room in order: the oldest takes its decision or its default now.
            if let Some(oldest) = self.awaiting.pop_front() {
                self.apply_awaited(now, oldest);
            }
        }
        self.awaiting.push_back(Awaiting {
            token,
            deadline: now + self.config.decision_deadline,
            decision,
            parked,
        });
        self.settle(now);
    }

    /// Applies parked messages from the front while they are decided or past their deadline.
    fn settle(&mut self, now: Time) {
        while let Some(front) = self.awaiting.front() {
            if front.decision.is_none() && front.deadline > now {
                break;
            }
            let a = self.awaiting.pop_front().expect("front exists");
            self.apply_awaited(now, a);
        }
    }

    fn apply_awaited(&mut self, now: Time, a: Awaiting) {
        let decision = match a.decision {
            Some(d) => d,
            None => {
                self.stats.decisions_expired += 1;
                match a.parked {
                    Parked::Request { .. } if !self.config.allow_on_deadline => Decision::Stop,
                    _ => Decision::Proceed,
                }
            }
        };
        self.apply(now, a.parked, decision);
    }

    fn apply(&mut self, now: Time, parked: Parked, decision: Decision) {
        match (parked, decision) {
            (
                Parked::Out {
                    tuple,
                    lifetime,
                    received,
                },
                Decision::Proceed,
            ) => {
                // Local deliveries queued before belong to no message: drain them first.
                self.drain_deliveries();
                let stored = match self.space.out(now, tuple, lifetime) {
                    Ok(r) => {
                        self.stats.stored += 1;
                        Some(r.id)
                    }
                    Err(_) => {
                        self.stats.not_stored += 1;
                        None
                    }
                };
                self.drain_deliveries_from(Some(&received), lifetime);
                if let Some(id) = stored {
                    self.stored(now, id);
                }
            }
            (Parked::Out { .. }, Decision::Stop) => self.stats.not_stored += 1,
            (Parked::Notify { tuple, received }, Decision::Proceed) => {
                self.drain_deliveries();
                self.space.notify(&tuple);
                self.drain_deliveries_from(Some(&received), None);
            }
            (Parked::Notify { .. }, Decision::Stop) => {}
            (
                Parked::Request {
                    op,
                    template,
                    wait,
                    received,
                },
                Decision::Proceed,
            ) => {
                if let Some((wait, key)) = wait
                    && let Some(op) = RequestOp::from_op(op)
                    && self.space.count(now, &template) == 0
                {
                    // Nothing matches: the request waits (spec §11), from its arrival.
                    let expires = received.at + Duration::from_secs(u64::from(wait.get()));
                    self.add_wait(now, key, op, template, expires);
                    return;
                }
                self.schedule_answer(now, op, template);
            }
            (Parked::Request { .. }, Decision::Stop) => self.stats.filtered += 1,
        }
    }

    /// Schedules the answer to a request the hooks let through (spec §9 back-off).
    fn schedule_answer(&mut self, now: Time, op: Op, template: Template) {
        // One scheduled answer per (op, template) is enough.
        if self
            .scheduled
            .iter()
            .any(|s| s.op == op && s.template == template)
        {
            return;
        }
        let delay = self.backoff(op);
        if delay.is_zero() {
            self.answer(now, op, &template);
        } else {
            self.schedule(now + delay, op, template);
        }
    }

    /// A random delay for an answer to `op` (spec §9): `0..=B` with the full
    /// [`NodeConfig::reply_backoff`] for INP; for the ops that take nothing away (RD, TEST,
    /// WHERE) `1..=B` with the shorter [`NodeConfig::read_backoff`] when it is shorter — at least
    /// one millisecond, so the answer is still scheduled (a reply heard meanwhile suppresses it)
    /// rather than sent from inside the request's handling.
    fn backoff(&mut self, op: Op) -> Duration {
        let full = self.config.reply_backoff;
        let read = self.config.read_backoff;
        let (min, bound) = if op != Op::Inp && read < full {
            (1, read)
        } else {
            (0, full)
        };
        let max = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
        if max == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(self.rng.random_range(min..=max))
        }
    }

    fn schedule(&mut self, at: Time, op: Op, template: Template) {
        const MAX_SCHEDULED: usize = 256;
        if self.scheduled.len() >= MAX_SCHEDULED {
            self.stats.replies_suppressed += 1;
            return;
        }
        self.scheduled.push(ScheduledReply { at, op, template });
    }

    /// Sends the reply of a scheduled answer, re-checking the space at the time of sending.
    fn answer(&mut self, now: Time, op: Op, template: &Template) {
        let (tuple, msg_reply) = match op {
            Op::Where => (Some(self.config.identity.clone()), true),
            Op::Inp => (self.space.inp(now, template), false),
            _ => (self.space.rd(now, template), false),
        };
        let Some(tuple) = tuple else { return };
        let msg = if msg_reply {
            Message::IAmHere { tuple, reply: true }
        } else {
            Message::Tuple { tuple, reply: true }
        };
        // A stored tuple always fits a reply: the space refuses longer ones
        // (`SpaceConfig::max_tuple_len`, set in `Node::new`).
        if self.send(&msg).is_ok() {
            self.stats.replies_sent += 1;
        }
        if let Message::Tuple { tuple, .. } = &msg {
            // This reply answers every request pending here that it matches (spec §11).
            self.finish_waits(tuple);
        }
    }

    fn complete_matching(&mut self, ops: &[Op], tuple: &Tuple, received: Received) {
        let mut done: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.scope.network() && ops.contains(&p.op) && p.template.matches(tuple))
            .map(|(id, _)| *id)
            .collect();
        if done.is_empty() {
            let now = received.at;
            self.cancelled.retain(|c| c.deadline > now);
            if let Some(c) = self
                .cancelled
                .iter()
                .find(|c| ops.contains(&c.op) && c.template.matches(tuple))
            {
                self.stats.replies_after_cancel += 1;
                let op = c.op;
                self.push_event(Event::ReplyAfterCancel {
                    op,
                    tuple: tuple.clone(),
                    received,
                });
            } else {
                self.stats.replies_unmatched += 1;
            }
            return;
        }
        done.sort_unstable();
        for id in done {
            if let Some(p) = self.pending.remove(&id) {
                self.stats.replies_matched += 1;
                self.push_event(Event::Completed {
                    id,
                    op: p.op,
                    reply: Some((tuple.clone(), received)),
                });
            }
        }
    }

    fn record_neighbour(&mut self, identity: &Tuple, received: Received) {
        if !self.neighbours.contains_key(&received.from)
            && self.neighbours.len() >= self.config.max_neighbours.max(1)
            && let Some(oldest) = self
                .neighbours
                .iter()
                .min_by_key(|(_, n)| n.last.at)
                .map(|(a, _)| *a)
        {
            self.neighbours.remove(&oldest);
        }
        self.neighbours.insert(
            received.from,
            Neighbour {
                identity: identity.clone(),
                last: received,
            },
        );
        self.push_event(Event::NeighbourSeen {
            identity: identity.clone(),
            received,
        });
    }

    /// Runs what is due at `now`: scheduled replies, request timeouts, announcements, expiry.
    pub fn handle_timeout(&mut self, now: Time) {
        self.clock = now;
        // Decisions that did not come in time: fail-closed defaults, in order.
        self.settle(now);
        // Scheduled replies, earliest first.
        let mut due: Vec<ScheduledReply> = Vec::new();
        self.scheduled.retain_mut(|s| {
            if s.at <= now {
                due.push(ScheduledReply {
                    at: s.at,
                    op: s.op,
                    template: s.template.clone(),
                });
                false
            } else {
                true
            }
        });
        due.sort_by_key(|s| s.at);
        for s in due {
            self.answer(now, s.op, &s.template);
        }
        // Answers to requests that waited (spec §11), then the waits that ended.
        self.answer_waits(now);
        self.expire_waits(now);
        // Timeouts.
        let mut expired: Vec<(RequestId, Op)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, p)| (*id, p.op))
            .collect();
        expired.sort_unstable_by_key(|(id, _)| *id);
        for (id, op) in expired {
            self.pending.remove(&id);
            self.stats.timeouts += 1;
            self.push_event(Event::Completed {
                id,
                op,
                reply: None,
            });
        }
        // Announcements.
        if let (Some(at), Some(every)) = (self.next_announce, self.config.announce_interval)
            && at <= now
        {
            let _ = self.announce(now);
            self.next_announce = Some(now + every.max(Duration::from_millis(1)));
        }
        if let Some(state) = self.seal.as_mut()
            && state.next_save() <= now
            && state.save(now).is_err()
        {
            self.stats.seal_store_errors += 1;
        }
        self.space.expire(now);
        self.dedup.expire(now);
        self.drain_deliveries();
    }

    // --- output --------------------------------------------------------------------------------

    /// The next frame to broadcast, oldest first.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.drain_deliveries();
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] should next run; `None` when nothing is scheduled.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        let replies = self.scheduled.iter().map(|s| s.at);
        let deadlines = self.pending.values().map(|p| p.deadline);
        // Only the front's deadline matters: parked messages are applied in order.
        let decision = self
            .awaiting
            .front()
            .filter(|a| a.decision.is_none())
            .map(|a| a.deadline);
        replies
            .chain(deadlines)
            .chain(decision)
            .chain(self.next_wait_timeout())
            .chain(self.seal.as_ref().map(seal::SealState::next_save))
            .chain(self.next_announce)
            .chain(self.space.next_expiry())
            .min()
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= self.config.event_queue.max(1) {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    /// Turns the space's pending deliveries into events: `received` is the message they came
    /// from (`None`: a local out, stamped with the node's latest time), `lifetime` the lifetime
    /// of the out that stored them (given to [`DeliveryKind::Out`](crate::DeliveryKind::Out)
    /// deliveries only).
    fn drain_deliveries_from(&mut self, received: Option<&Received>, lifetime: Option<Duration>) {
        while let Some(space::Delivery {
            listener,
            tuple,
            kind,
        }) = self.space.poll_delivery()
        {
            let delivery = Delivery {
                tuple,
                kind,
                from: received.map(|r| r.from),
                rssi: received.and_then(|r| r.rssi),
                at: received.map_or(self.clock, |r| r.at),
                lifetime: lifetime.filter(|_| kind == crate::DeliveryKind::Out),
            };
            self.push_event(Event::Delivered { listener, delivery });
        }
    }

    fn drain_deliveries(&mut self) {
        self.drain_deliveries_from(None, None);
    }
}

/// Most datagram buffers a node keeps for reuse ([`Node::recycle`]).
const SPARE_BUFFERS: usize = 16;

/// Encodes messages as one node's UDP datagrams (spec §7) from outside the node, from any thread:
/// the node's id and key, and the next number of the node's own sequence-number counter (shared,
/// so datagrams from the node and from its encoders never reuse a number). From
/// [`Node::datagram_encoder`]; cloning shares the counter.
#[derive(Clone)]
pub(crate) struct DatagramEncoder {
    node_id: NodeId,
    key: Option<Arc<FpeKey>>,
    /// A sealed space's sealer (spec §12), shared with the node: one counter stream.
    #[cfg(feature = "tokio")]
    seal: Option<seal::SharedSealer>,
    seq: Arc<AtomicU32>,
    encoded: Arc<AtomicU64>,
}

impl fmt::Debug for DatagramEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramEncoder")
            .field("node_id", &self.node_id)
            .field("keyed", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

impl DatagramEncoder {
    /// Writes the datagram of `msg` into `buf` and returns its length: header with the node id
    /// and the next sequence number, then the message, encrypted under the node's key if it has
    /// one. Allocates nothing. Counted in the node's [`NodeStats::transmits`].
    ///
    /// # Errors
    /// [`NodeError::TooLong`] when the message is over the UDP limit (1221 bytes, spec §7) or
    /// `buf` cannot hold the datagram (a [`udp::MAX_DATAGRAM_LEN`]-byte buffer always can); no
    /// sequence number is used then.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))] // the handles' direct path
    pub(crate) fn encode_into(&self, msg: &Message, buf: &mut [u8]) -> Result<usize, NodeError> {
        #[cfg(feature = "tokio")]
        if let Some(sealer) = &self.seal {
            return self.seal_into(sealer, msg, buf);
        }
        let (len, max) = (msg.buffer_len(), Transport::Udp.max_message_len());
        let too_long = || NodeError::TooLong {
            op: msg.op(),
            len,
            max,
            transport: Transport::Udp.name(),
        };
        if len > max || buf.len() < udp::HEADER_LEN + len {
            return Err(too_long());
        }
        let header = DatagramHeader {
            node_id: self.node_id,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        };
        let n = udp::emit(&header, msg, self.key.as_deref(), buf).map_err(|_| too_long())?;
        self.encoded.fetch_add(1, Ordering::Relaxed);
        Ok(n)
    }
}

impl DatagramEncoder {
    /// The sealed datagram of `msg` (spec §12 inside §7) with the node's next counter.
    #[cfg(feature = "tokio")]
    fn seal_into(
        &self,
        sealer: &seal::SharedSealer,
        msg: &Message,
        buf: &mut [u8],
    ) -> Result<usize, NodeError> {
        let transport = Transport::Udp;
        let body_len = msg.buffer_len() - 1;
        let max_body_len = transport.sealed_max_body_len();
        let too_long = || NodeError::SealedTooLong {
            op: msg.op(),
            body_len,
            max_body_len,
            transport: transport.name(),
        };
        if body_len > max_body_len {
            return Err(too_long());
        }
        let Some(body) = buf.get_mut(udp::HEADER_LEN..) else {
            return Err(too_long());
        };
        let sealed_len = seal::seal_shared(sealer, msg, body).map_err(|e| match e {
            crate::sealed::SealerError::Seal(crate::sealed::SealError::TooLong { .. }) => {
                too_long()
            }
            other => NodeError::SealCounter(other.to_string()),
        })?;
        let header = DatagramHeader {
            node_id: self.node_id,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        };
        header.emit(
            (&mut buf[..udp::HEADER_LEN])
                .try_into()
                .expect("header length"),
        );
        self.encoded.fetch_add(1, Ordering::Relaxed);
        Ok(udp::HEADER_LEN + sealed_len)
    }
}

/// The OUT message for `tuple`, checked against `transport`'s size limit and the wire's lifetime
/// range: exactly the checks of [`Node::out`].
pub(crate) fn out_message(
    transport: Transport,
    tuple: Tuple,
    lifetime: Option<Duration>,
) -> Result<Message, NodeError> {
    let lifetime = lifetime.map(lifetime_secs).transpose()?;
    let msg = Message::Out { tuple, lifetime };
    let (len, max) = (msg.buffer_len(), transport.max_message_len());
    if len > max {
        return Err(NodeError::TooLong {
            op: Op::Out,
            len,
            max,
            transport: transport.name(),
        });
    }
    Ok(msg)
}

/// Whole seconds for the wire's lifetime field, rounded up.
fn lifetime_secs(d: Duration) -> Result<NonZeroU16, NodeError> {
    let secs = d.as_millis().div_ceil(1000);
    u16::try_from(secs)
        .ok()
        .and_then(NonZeroU16::new)
        .ok_or(NodeError::BadLifetime(d))
}

#[cfg(test)]
mod tests;
