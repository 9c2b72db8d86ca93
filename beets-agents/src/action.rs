//! What the agent host hands back to its caller: actions to perform on the spaces, and events.

use std::fmt;
use std::time::Duration;

use beets_core::{DeliveryKind, PeerAddr, Received, Template, Tuple};

use crate::error::Fault;

/// A space's index in [`HostConfig::spaces`](crate::HostConfig::spaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpaceId(pub(crate) u8);

impl SpaceId {
    /// The index in [`HostConfig::spaces`](crate::HostConfig::spaces).
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// An agent's handle, unique within its host (never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(pub(crate) u32);

impl AgentId {
    /// The handle as a number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Names a pending agent request; give it back with [`AgentHost::complete`](crate::AgentHost::complete).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub(crate) u64);

impl Token {
    /// The token as a number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// How a tuple reached the space, or how it left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TupleKind {
    /// An incoming OUT, before it is stored (a `ts` handler returning `true` consumes it).
    Out,
    /// A notification (TUPLE with R = 0): handed to listeners, never stored.
    Notify,
    /// A removal: the tuple was taken by an `inp` (a local one, `host.inp`/`inpAll`, or a
    /// remote INP this node answered); it is gone.
    Inp,
    /// A removal: the tuple was removed by `rm` (`host.rm`) or its lease was cancelled.
    Rm,
    /// A removal: the tuple's lifetime ended.
    Expired,
    /// A removal: the tuple was evicted to make room in a full space.
    Evicted,
}

impl TupleKind {
    /// Every kind, in declaration order.
    pub const ALL: [TupleKind; 6] = [
        TupleKind::Out,
        TupleKind::Notify,
        TupleKind::Inp,
        TupleKind::Rm,
        TupleKind::Expired,
        TupleKind::Evicted,
    ];

    /// `"out"`, `"notify"`, `"inp"`, `"rm"`, `"expired"` or `"evicted"`, as agents see it
    /// (`ev.kind`).
    pub const fn name(self) -> &'static str {
        match self {
            TupleKind::Out => "out",
            TupleKind::Notify => "notify",
            TupleKind::Inp => "inp",
            TupleKind::Rm => "rm",
            TupleKind::Expired => "expired",
            TupleKind::Evicted => "evicted",
        }
    }

    /// Whether the tuple left the space (every kind but `Out` and `Notify`): such an event is
    /// reported after the fact, and its handler's result is ignored.
    pub const fn is_removal(self) -> bool {
        !matches!(self, TupleKind::Out | TupleKind::Notify)
    }

    /// The kind of a listener's delivery (`DeliveryKind::Out`, a stored tuple, maps to `Out`).
    pub const fn from_delivery(kind: DeliveryKind) -> TupleKind {
        match kind {
            DeliveryKind::Out => TupleKind::Out,
            DeliveryKind::Notify => TupleKind::Notify,
            DeliveryKind::Inp => TupleKind::Inp,
            DeliveryKind::Rm => TupleKind::Rm,
            DeliveryKind::Expired => TupleKind::Expired,
            DeliveryKind::Evicted => TupleKind::Evicted,
        }
    }

    /// The listener delivery kind of a removal (`None` for `Out` and `Notify`).
    pub const fn removal(self) -> Option<DeliveryKind> {
        match self {
            TupleKind::Out | TupleKind::Notify => None,
            TupleKind::Inp => Some(DeliveryKind::Inp),
            TupleKind::Rm => Some(DeliveryKind::Rm),
            TupleKind::Expired => Some(DeliveryKind::Expired),
            TupleKind::Evicted => Some(DeliveryKind::Evicted),
        }
    }

    /// The kind's bit in a set of kinds.
    pub(crate) const fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The kind numbered `n` (its declaration order), for the worker's pipe.
    pub(crate) const fn from_index(n: u8) -> Option<TupleKind> {
        match n {
            0 => Some(TupleKind::Out),
            1 => Some(TupleKind::Notify),
            2 => Some(TupleKind::Inp),
            3 => Some(TupleKind::Rm),
            4 => Some(TupleKind::Expired),
            5 => Some(TupleKind::Evicted),
            _ => None,
        }
    }
}

/// A set of [`TupleKind`]s, as a `ts` rule's `kind` gives it.
pub(crate) type KindSet = u8;

/// What a `ts` rule without `kind` (or with `"any"`) sees: incoming OUTs and notifications.
pub(crate) const INCOMING: KindSet = TupleKind::Out.bit() | TupleKind::Notify.bit();

/// Every removal (`"removed"`).
pub(crate) const REMOVALS: KindSet = TupleKind::Inp.bit()
    | TupleKind::Rm.bit()
    | TupleKind::Expired.bit()
    | TupleKind::Evicted.bit();

/// A request that travels to the other nodes of a space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RequestOp {
    /// Read a copy.
    Rd,
    /// Take.
    Inp,
    /// Test for presence.
    Test,
}

impl RequestOp {
    /// RD, INP and TEST.
    pub const ALL: [RequestOp; 3] = [RequestOp::Rd, RequestOp::Inp, RequestOp::Test];

    /// `"rd"`, `"inp"` or `"test"`, as agents see it.
    pub const fn name(self) -> &'static str {
        match self {
            RequestOp::Rd => "rd",
            RequestOp::Inp => "inp",
            RequestOp::Test => "test",
        }
    }

    /// The op of an incoming request (`None` for ops that are not RD, INP or TEST).
    pub fn from_op(op: beets_core::Op) -> Option<RequestOp> {
        match op {
            beets_core::Op::Rd => Some(RequestOp::Rd),
            beets_core::Op::Inp => Some(RequestOp::Inp),
            beets_core::Op::Test => Some(RequestOp::Test),
            _ => None,
        }
    }
}

/// A query of the local space only (the paper's `host` mirror).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostQuery {
    /// Read a copy; complete with [`Completion::Tuple`].
    Rd,
    /// Take; complete with [`Completion::Tuple`].
    Inp,
    /// Count matches; complete with [`Completion::Count`].
    Count,
    /// Remove every match; complete with [`Completion::Count`].
    Rm,
    /// Copies of every match, oldest first (`host.rdAll`); complete with
    /// [`Completion::Tuples`].
    RdAll,
    /// Take every match at once, oldest first (`host.inpAll`); complete with
    /// [`Completion::Tuples`].
    InpAll,
}

/// Something an agent asked to be done on a space. Drain with
/// [`AgentHost::poll_action`](crate::AgentHost::poll_action), perform it, and for the variants
/// that carry a [`Token`] call [`AgentHost::complete`](crate::AgentHost::complete) with the
/// result.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// Broadcast an OUT (size already checked against the space's transport).
    Out {
        /// The agent.
        agent: AgentId,
        /// The space.
        space: SpaceId,
        /// The tuple.
        tuple: Tuple,
        /// Lifetime, `None` = receivers' default.
        lifetime: Option<Duration>,
    },
    /// Broadcast a notification (TUPLE, R = 0).
    Notify {
        /// The agent.
        agent: AgentId,
        /// The space.
        space: SpaceId,
        /// The tuple.
        tuple: Tuple,
    },
    /// Send an RD, INP or TEST; complete with [`Completion::Tuple`] (`None` at the timeout).
    Request {
        /// The agent.
        agent: AgentId,
        /// Give back to `complete`.
        token: Token,
        /// The space.
        space: SpaceId,
        /// The op.
        op: RequestOp,
        /// The template.
        template: Template,
        /// The request's timeout.
        timeout: Duration,
        /// Where to look: the spaces in range (the default), the node's own space, or both
        /// (local first). Over the network the request carries `timeout` as its wait (spec §11).
        scope: beets_core::node::Scope,
    },
    /// Store a tuple in the local space only.
    HostOut {
        /// The agent.
        agent: AgentId,
        /// The space.
        space: SpaceId,
        /// The tuple.
        tuple: Tuple,
        /// Lifetime, `None` = the space's default.
        lifetime: Option<Duration>,
    },
    /// Query the local space only; complete as the [`HostQuery`] says.
    Host {
        /// The agent.
        agent: AgentId,
        /// Give back to `complete`.
        token: Token,
        /// The space.
        space: SpaceId,
        /// The query.
        query: HostQuery,
        /// The template.
        template: Template,
    },
}

impl Action {
    /// The agent that asked.
    pub fn agent(&self) -> AgentId {
        match self {
            Action::Out { agent, .. }
            | Action::Notify { agent, .. }
            | Action::Request { agent, .. }
            | Action::HostOut { agent, .. }
            | Action::Host { agent, .. } => *agent,
        }
    }

    /// The space it is for.
    pub fn space(&self) -> SpaceId {
        match self {
            Action::Out { space, .. }
            | Action::Notify { space, .. }
            | Action::Request { space, .. }
            | Action::HostOut { space, .. }
            | Action::Host { space, .. } => *space,
        }
    }
}

/// The result of an [`Action::Request`] or [`Action::Host`], for
/// [`AgentHost::complete`](crate::AgentHost::complete).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Completion {
    /// A tuple (and how it arrived, for remote replies), or `None`: the promise resolves with a
    /// reply object or `null`.
    Tuple(Option<(Tuple, Option<Received>)>),
    /// A count (`host.count`, `host.rm`).
    Count(usize),
    /// Every match of a bulk query (`host.rdAll`, `host.inpAll`), oldest first.
    Tuples(Vec<Tuple>),
    /// The operation could not be performed (space closed, too many pending…): the promise
    /// resolves with `null` and a [`AgentEvent::Log`] records why.
    Failed(String),
}

/// What happened to agents, from [`AgentHost::poll_event`](crate::AgentHost::poll_event).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum AgentEvent {
    /// An agent was loaded and its rules are active.
    Loaded {
        /// The agent.
        agent: AgentId,
        /// Its name.
        name: String,
        /// `Some(sender)` when it arrived in an active tuple.
        from: Option<PeerAddr>,
    },
    /// An agent faulted; the node goes on. The event's effect is void (a faulting `ts` handler
    /// does not consume, a faulting request filter refuses).
    Fault {
        /// The agent.
        agent: AgentId,
        /// Its name.
        name: String,
        /// What happened.
        fault: Fault,
        /// Its faults so far, this one included.
        count: u32,
    },
    /// An agent reached its fault limit and was disabled; its runtime is freed.
    Disabled {
        /// The agent.
        agent: AgentId,
        /// Its name.
        name: String,
        /// Its faults.
        faults: u32,
    },
    /// A line an agent logged with `log(...)`, or a note about one of its operations.
    Log {
        /// The agent.
        agent: AgentId,
        /// Its name.
        name: String,
        /// The line (cut to [`Limits::max_log_len`](crate::Limits::max_log_len)).
        message: String,
    },
    /// An active tuple was not started (policy, size, or a load error).
    ActiveRefused {
        /// Sender.
        from: Option<PeerAddr>,
        /// The name it carried.
        name: String,
        /// Why.
        reason: String,
    },
}
