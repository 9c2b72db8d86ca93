//! The engine's public vocabulary: transports, addresses, frames in and out, events, errors,
//! hooks, configuration and counters (re-exported by [`node`](super)).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

#[allow(unused_imports)] // named in doc links
use super::Node;
use crate::ble::{self, BleAdvertisement, FrameError};
use crate::fpe::FpeKey;
use crate::message::Op;
use crate::space::{DeliveryKind, ListenerId, SpaceConfig};
use crate::time::Time;
use crate::tuple::{Template, Tuple};
use crate::udp::{self, DatagramError};
use crate::value::Value;

/// Longest node name in the default identity tuple `("NODE", name)`: 16 bytes (spec §4).
pub const MAX_NODE_NAME: usize = 16;

/// The transport a node speaks; it fixes the framing and the message size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// BLE advertisements: spec §6 frames, messages ≤ 31 bytes.
    Ble,
    /// UDP datagrams: spec §7 envelope, messages ≤ 1221 bytes.
    Udp,
}

impl Transport {
    /// Largest message in bytes: 31 (BLE) or 1221 (UDP).
    pub const fn max_message_len(self) -> usize {
        match self {
            Transport::Ble => ble::MAX_MESSAGE_LEN,
            Transport::Udp => udp::MAX_MESSAGE_LEN,
        }
    }

    /// Name used in error messages.
    pub const fn name(self) -> &'static str {
        match self {
            Transport::Ble => "a BLE frame",
            Transport::Udp => "a UDP datagram",
        }
    }
}

/// Where a frame came from: a BLE device address, an IP socket address, or the node id of a
/// datagram heard through an MQTT broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerAddr {
    /// A BLE device address (6 bytes, most significant first as printed).
    Ble([u8; 6]),
    /// An IP socket address.
    Ip(SocketAddr),
    /// A datagram heard through an MQTT broker (`beets-mqtt`), which hides its clients'
    /// addresses: the sender's spec §7 node id. Printed `mqtt:<node id>` (8 hex digits).
    Mqtt(udp::NodeId),
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Ble(a) => write!(
                f,
                "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
                a[0], a[1], a[2], a[3], a[4], a[5]
            ),
            PeerAddr::Ip(a) => a.fmt(f),
            PeerAddr::Mqtt(id) => write!(f, "mqtt:{id}"),
        }
    }
}

/// A received frame, as the transport delivers it.
#[derive(Clone, Copy, Debug)]
pub enum Frame<'a> {
    /// A UDP datagram (spec §7).
    Datagram(&'a [u8]),
    /// A BLE advertisement: local name and the device's 16-bit service UUIDs as a set (spec §6).
    Advertisement {
        /// The local name.
        local_name: &'a str,
        /// The 16-bit service UUID values, any order, possibly with stale and foreign ones.
        service_uuids: &'a [u16],
    },
}

/// Something to send, from [`Node::poll_transmit`]. Always a broadcast on the node's transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// A UDP datagram (≤ 1232 bytes).
    Datagram(Vec<u8>),
    /// A BLE advertisement to advertise for Δt.
    Advertisement(BleAdvertisement),
}

/// How a message was received: the annotation of spec §9.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Received {
    /// The sender's address.
    pub from: PeerAddr,
    /// Receive time.
    pub at: Time,
    /// Received signal strength in dBm (BLE only).
    pub rssi: Option<i16>,
}

/// A tuple handed to a listener, with its context: what the JavaScript agents see of a tuple
/// too (paper §5: each received message is annotated with sender, time and RSSI).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Delivery {
    /// The tuple.
    pub tuple: Tuple,
    /// Stored by an OUT, or only notified (TUPLE with R = 0, spec §9).
    pub kind: DeliveryKind,
    /// The sender's address; `None` for a tuple stored locally (`host` out).
    pub from: Option<PeerAddr>,
    /// Received signal strength in dBm (BLE only).
    pub rssi: Option<i16>,
    /// When the node received it (or stored it, for a local out), on the node's clock.
    pub at: Time,
    /// For a stored tuple ([`DeliveryKind::Out`]): the lifetime its OUT gave it, as sent (or as
    /// given to a local `host_out`), not the time left; `None` when it lives until taken, and
    /// for every other kind.
    pub lifetime: Option<Duration>,
}

/// A request handle from [`Node::rd`], [`Node::inp`], [`Node::test`] or `Node::r#where`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(super) u64);

impl RequestId {
    /// The handle as a number (unique per node).
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// Why an incoming frame was dropped.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DropReason {
    /// Not a valid BLE frame (includes every foreign advertisement).
    #[error("not a BeeTS BLE frame: {0}")]
    BadFrame(FrameError),
    /// Not a valid datagram.
    #[error("bad datagram: {0}")]
    BadDatagram(DatagramError),
    /// The frame kind does not belong to this node's transport.
    #[error("a {got} arrived at a {expected} node")]
    WrongTransport {
        /// The frame's kind.
        got: &'static str,
        /// This node's kind.
        expected: &'static str,
    },
    /// E flag does not fit this space: keyed spaces accept only E = 1, unkeyed only E = 0 (§4).
    #[error("encryption does not match this space (message E={encrypted}, space keyed={keyed})")]
    KeyMismatch {
        /// The message's E flag.
        encrypted: bool,
        /// Whether this space has a key.
        keyed: bool,
    },
    /// This node's own datagram looping back (spec §7).
    #[error("own datagram")]
    Own,
    /// A sealed-space filter (spec §12): the named receiving step failed, or the message is
    /// not sealed in a sealed space, or sealed in a space without K. Counted in
    /// [`NodeStats::sealed`].
    #[error("sealed space: {reason}")]
    Sealed {
        /// The reason as spec §12 names it (`"bad MIC"`, `"replay"`, `"not sealed"`, …).
        reason: &'static str,
    },
}

/// What happened, from [`Node::poll_event`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A request completed: with the first matching reply, or `None` at its timeout.
    Completed {
        /// The request.
        id: RequestId,
        /// The op asked (RD, INP, TEST or WHERE).
        op: Op,
        /// The reply tuple and how it arrived, `None` when the timeout passed first.
        reply: Option<(Tuple, Received)>,
    },
    /// A listener's template matched an OUT that was stored, or a notification.
    Delivered {
        /// The listener (see [`Node::subscribe`]).
        listener: ListenerId,
        /// The tuple and where it came from.
        delivery: Delivery,
    },
    /// A node announced itself or answered a WHERE.
    NeighbourSeen {
        /// Its identity tuple.
        identity: Tuple,
        /// How it was heard.
        received: Received,
    },
    /// A reply (TUPLE, R = 1) arrived for a request that was cancelled before its timeout (in
    /// the async API: its future was dropped). Nobody receives the tuple; after an INP the
    /// responder has removed it, so it is lost. Counted in [`NodeStats::replies_after_cancel`].
    ReplyAfterCancel {
        /// The op of the cancelled request.
        op: Op,
        /// The reply's tuple.
        tuple: Tuple,
        /// How it arrived.
        received: Received,
    },
    /// A request with a local scope ([`Node::request_in`]) found its tuple in the local space:
    /// a copy for RD and TEST, the tuple itself (taken out of the space) for INP.
    LocalAnswer {
        /// The request.
        id: RequestId,
        /// The op asked (RD, INP or TEST).
        op: Op,
        /// The tuple.
        tuple: Tuple,
        /// When (the node's clock).
        at: Time,
    },
    /// An incoming frame was dropped (duplicates are only counted, not reported).
    Dropped {
        /// Sender address.
        from: PeerAddr,
        /// Why.
        reason: DropReason,
    },
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The message does not fit the transport.
    #[error("{op} message needs {len} bytes, {transport} carries at most {max}")]
    TooLong {
        /// The op.
        op: Op,
        /// Encoded length.
        len: usize,
        /// The transport's limit.
        max: usize,
        /// The transport.
        transport: &'static str,
    },
    /// A lifetime that the wire cannot carry (1..=65535 s).
    #[error("lifetime {0:?} is outside 1 s..=65535 s (spec §4)")]
    BadLifetime(Duration),
    /// Too many requests are pending.
    #[error("{max} requests are already pending; wait for some to complete")]
    TooManyPending {
        /// [`NodeConfig::max_pending`].
        max: usize,
    },
    /// A sealed message's body is over the transport's sealed limit (spec §12: 20 bytes on BLE,
    /// 1206 on UDP).
    #[error(
        "{op} needs a sealed body of {body_len} bytes, a sealed {transport} carries at most {max_body_len} (spec §12)"
    )]
    SealedTooLong {
        /// The op.
        op: Op,
        /// The body's length (the message less its control byte).
        body_len: usize,
        /// The limit.
        max_body_len: usize,
        /// The transport.
        transport: &'static str,
    },
    /// The sealing counter cannot go on: exhausted (after 2^32 − 1 messages the key must be
    /// changed) or its store failed (the text says which; a counter must be durable before use).
    #[error("cannot seal: {0}")]
    SealCounter(String),
    /// A node name outside 1..=16 bytes.
    #[error("node name of {len} bytes is outside 1..={max}")]
    BadName {
        /// The name's length.
        len: usize,
        /// [`MAX_NODE_NAME`].
        max: usize,
    },
}

/// An incoming request as a request filter sees it (the agent host's `allow_request`; the
/// engine's [`Question::Request`](crate::node::Question::Request) carries the same).
#[derive(Clone, Copy, Debug)]
pub struct IncomingRequest<'a> {
    /// RD, INP or TEST.
    pub op: Op,
    /// The requested template.
    pub template: &'a Template,
    /// How it arrived.
    pub received: Received,
}

/// Engine configuration. Build with [`NodeConfig::new`] and adjust fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NodeConfig {
    /// BLE or UDP.
    pub transport: Transport,
    /// The identity tuple WHERE patterns are matched against (default `("NODE", name)`).
    pub identity: Tuple,
    /// The space key: `Some` makes a keyed space (accepts and sends only E = 1 messages).
    /// Obfuscation only (spec §5); for authentication use [`seal`](Self::seal).
    pub key: Option<FpeKey>,
    /// Seals the space (spec §12): AES-128-CCM on every message, a replay window per source,
    /// header privacy. Takes precedence over [`key`](Self::key), which must be `None` (set it
    /// with [`with_seal`](Self::with_seal)).
    pub seal: Option<super::seal::SealConfig>,
    /// The local space (capacity, default lifetime, policy).
    pub space: SpaceConfig,
    /// Dedup window W (spec §8, default 10 s).
    pub dedup_window: Duration,
    /// Dedup cache bound (spec §8, default 4096 keys).
    pub dedup_capacity: usize,
    /// Send an IAMHERE (R = 0) this often; `None` (default) never.
    pub announce_interval: Option<Duration>,
    /// Largest random delay before answering a request (see the module docs). Default 30 ms on
    /// UDP, 500 ms (one advertising period Δt) on BLE; zero answers at once. INP always uses it;
    /// RD, TEST and WHERE use the shorter of it and [`read_backoff`](Self::read_backoff).
    pub reply_backoff: Duration,
    /// Largest random delay before answering an RD, TEST or WHERE (spec §9 lets B differ per
    /// op): answering these takes nothing away, so a short bound only risks duplicate replies,
    /// while INP keeps the full [`reply_backoff`](Self::reply_backoff) its suppression needs.
    /// Default 1 ms on UDP (a round trip on a LAN stays near 1 ms instead of the 15 ms median of
    /// a 30 ms bound), Δt (500 ms) on BLE, where the air sets the pace anyway. When it is shorter
    /// than `reply_backoff` the delay is drawn from `1..=read_backoff` (at least one
    /// millisecond: the answer is still scheduled, and a reply heard meanwhile suppresses it);
    /// otherwise as for INP. A zero `reply_backoff` answers everything at once.
    pub read_backoff: Duration,
    /// Most requests pending at once (default 256).
    pub max_pending: usize,
    /// Bound of the event queue (default 4096).
    pub event_queue: usize,
    /// Bound of the transmit queue (default 1024).
    pub transmit_queue: usize,
    /// Most neighbours remembered (default 256; the least recently heard is forgotten).
    pub max_neighbours: usize,
    /// Longest a message waits for a hook that answered [`Verdict::Later`] (default 150 ms: the
    /// agent runtime's own 100 ms deadline plus a margin, so an agent that answers in time by
    /// its clock is not overtaken by the engine's). Then the fail-closed default applies (see
    /// [`hooks`](crate::node::hooks)).
    ///
    /// [`Verdict::Later`]: crate::node::Verdict::Later
    pub decision_deadline: Duration,
    /// Whether a request whose decision missed its deadline is answered (default `false`: it is
    /// refused, so a stuck filter fails closed).
    pub allow_on_deadline: bool,
    /// Most messages parked for a decision at once (default 1024). One more makes the oldest
    /// take its fail-closed default at once (counted as expired).
    pub max_awaiting_decisions: usize,
    /// Most remote requests waiting in this space (spec §11 P, default 256). One more drops the
    /// one that would expire first — possibly the new one — counted in
    /// [`NodeStats::waits_dropped`]; 0 keeps none.
    pub max_waits: usize,
    /// Whether this node's RD, INP and TEST carry its remaining timeout as their wait (spec §11
    /// L; default `true`). Turn it off only for peers whose decoder predates wire revision 2:
    /// they drop a request with L as malformed.
    pub send_waits: bool,
}

impl NodeConfig {
    /// Defaults for `transport` with identity `("NODE", name)`.
    ///
    /// # Errors
    /// [`NodeError::BadName`] when `name` is not 1..=16 bytes.
    pub fn new(transport: Transport, name: &str) -> Result<NodeConfig, NodeError> {
        if name.is_empty() || name.len() > MAX_NODE_NAME {
            return Err(NodeError::BadName {
                len: name.len(),
                max: MAX_NODE_NAME,
            });
        }
        let identity = Tuple::new([Value::Str("NODE".into()), Value::Str(name.into())])
            .expect("a 2-tuple of short strings is valid");
        Ok(NodeConfig {
            transport,
            identity,
            key: None,
            seal: None,
            space: SpaceConfig::default(),
            dedup_window: crate::dedup::DEFAULT_WINDOW,
            dedup_capacity: crate::dedup::DEFAULT_CAPACITY,
            announce_interval: None,
            reply_backoff: match transport {
                Transport::Ble => Duration::from_millis(500),
                Transport::Udp => Duration::from_millis(30),
            },
            read_backoff: match transport {
                Transport::Ble => Duration::from_millis(500),
                Transport::Udp => Duration::from_millis(1),
            },
            max_pending: 256,
            event_queue: 4096,
            transmit_queue: 1024,
            max_neighbours: 256,
            decision_deadline: Duration::from_millis(150),
            allow_on_deadline: false,
            max_awaiting_decisions: 1024,
            max_waits: 256,
            send_waits: true,
        })
    }

    /// Sets the space key from a password (FPE, spec §5).
    pub fn with_password(mut self, password: &str) -> NodeConfig {
        self.key = Some(FpeKey::from_password(password));
        self.seal = None;
        self
    }

    /// Seals the space (spec §12) instead of an FPE key: every message authenticated and
    /// encrypted with AES-128-CCM, replays dropped. Clears [`key`](Self::key).
    pub fn with_seal(mut self, seal: super::seal::SealConfig) -> NodeConfig {
        self.key = None;
        self.seal = Some(seal);
        self
    }
}

/// Counters a user can read ([`Node::stats`]). All count since the node was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Frames given to `handle_frame`.
    pub frames_in: u64,
    /// Messages processed (new, valid, right key).
    pub messages_in: u64,
    /// Valid repeats dropped by the dedup cache.
    pub duplicates: u64,
    /// Dropped: not a valid frame, datagram or message.
    pub dropped_malformed: u64,
    /// Dropped: E flag did not fit the space key.
    pub dropped_key: u64,
    /// Dropped: own datagram looping back.
    pub dropped_own: u64,
    /// Dropped: frame of the other transport.
    pub dropped_transport: u64,
    /// Incoming OUTs stored.
    pub stored: u64,
    /// Incoming OUTs the space refused (full) or a hook consumed.
    pub not_stored: u64,
    /// Requests refused by a hook.
    pub filtered: u64,
    /// Sealed-space drops by reason (spec §12), all zero in other spaces except
    /// [`SealedDrops::sealed_no_key`](super::SealedDrops::sealed_no_key).
    pub sealed: super::seal::SealedDrops,
    /// Replay-window saves that failed (sealed spaces; the store's error is logged by the
    /// runner through [`Node::save_seal_state`]).
    pub seal_store_errors: u64,
    /// Messages parked for a hook's later decision ([`Verdict::Later`]).
    ///
    /// [`Verdict::Later`]: crate::node::Verdict::Later
    pub decisions_deferred: u64,
    /// Parked messages whose decision did not come by [`NodeConfig::decision_deadline`] (or that
    /// were pushed out by [`NodeConfig::max_awaiting_decisions`]); the fail-closed default was
    /// applied.
    pub decisions_expired: u64,
    /// Decisions that came for a message no longer parked (after its deadline): dropped.
    pub decisions_late: u64,
    /// Messages queued for sending.
    pub transmits: u64,
    /// Replies (TUPLE R=1, IAMHERE R=1) sent.
    pub replies_sent: u64,
    /// Scheduled replies dropped because another node answered first.
    pub replies_suppressed: u64,
    /// Replies that completed a pending request.
    pub replies_matched: u64,
    /// Replies that matched no pending request (nor a cancelled one).
    pub replies_unmatched: u64,
    /// Replies that matched a request cancelled before its timeout ([`Node::cancel`]; the async
    /// API cancels when a request's future is dropped): their tuples reached nobody.
    pub replies_after_cancel: u64,
    /// Requests sent.
    pub requests_sent: u64,
    /// Requests that completed with none at their timeout.
    pub timeouts: u64,
    /// Events dropped because the event queue was full.
    pub events_dropped: u64,
    /// Transmits dropped because the transmit queue was full.
    pub transmits_dropped: u64,
    /// Remote requests that became pending here (spec §11: they waited, nothing matched).
    pub waits_accepted: u64,
    /// Repeats of a pending request (same §8 key) that added nothing (spec §11).
    pub waits_repeated: u64,
    /// Pending requests dropped by the bound [`NodeConfig::max_waits`] (spec §11 "Bounds").
    pub waits_dropped: u64,
    /// Pending requests whose wait ended unanswered (dropped without being "dropped").
    pub waits_expired: u64,
    /// Pending requests finished by a matching reply, sent by this node or heard (spec §11).
    pub waits_finished: u64,
    /// This node's own requests answered from its local space ([`Scope::Local`], [`Scope::Both`]).
    pub local_answers: u64,
}

/// A node heard recently.
#[derive(Clone, Debug, PartialEq)]
pub struct Neighbour {
    /// Its identity tuple.
    pub identity: Tuple,
    /// When and how it was last heard.
    pub last: Received,
}

/// Where a request looks ([`Node::request_in`]): the spaces in range, this node's own space, or
/// both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The spaces in range, by a broadcast request (the paper's `rd`; the default).
    #[default]
    Network,
    /// This node's local space only: answered at once when it holds a match, else woken by the
    /// first matching tuple stored later (a local out or an OUT from the air), or `None` at the
    /// timeout. A local INP takes its tuple atomically.
    Local,
    /// The local space first; without a match there, a broadcast request too, and whichever
    /// answers first wins (a later local match ends the network request).
    Both,
}

impl Scope {
    /// Whether the local space is looked at.
    pub const fn local(self) -> bool {
        matches!(self, Scope::Local | Scope::Both)
    }

    /// Whether a request goes on the air.
    pub const fn network(self) -> bool {
        matches!(self, Scope::Network | Scope::Both)
    }
}

/// How the pending-request table (spec §11) recognises one request: by the message's §8 key —
/// the same request repeated (BLE repeats a frame for Δt; UDP may repeat) adds no entry and does
/// not restart the wait, even after the §8 window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PendingKey {
    /// BLE (spec §8): (sender address, frame seq, frame crc).
    Ble {
        /// The sender.
        from: PeerAddr,
        /// The frame's sequence number.
        seq: u8,
        /// The frame's CRC.
        crc: u8,
    },
    /// UDP (spec §8): (node id, seq).
    Udp {
        /// The sender's node id.
        node: crate::udp::NodeId,
        /// The datagram's sequence number.
        seq: u32,
    },
    /// A sealed message (spec §11, §12): (transport, source id, counter).
    Sealed {
        /// The transport.
        transport: Transport,
        /// The sender's source id.
        source: u16,
        /// The message's counter.
        counter: u32,
    },
    /// A message dispatched without a key: never a repeat of another.
    Unkeyed(u64),
}

/// What a request with a scope ([`Node::request_in`]) found.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Answer {
    /// The tuple.
    pub tuple: Tuple,
    /// How the reply arrived; `None` when it came from the local space.
    pub received: Option<Received>,
}

impl Answer {
    /// Whether the tuple came from this node's own space.
    pub fn is_local(&self) -> bool {
        self.received.is_none()
    }
}
