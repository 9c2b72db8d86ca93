//! Decisions the application (agents) takes on incoming messages, without ever blocking the
//! engine (paper §6: filter agents and routers).
//!
//! Before it stores an incoming OUT, answers a request or hands a notification to listeners, the
//! engine asks its [`Hooks`]. A hook answers at once ([`Verdict::Now`]) when it can decide
//! without waiting — typically "no rule of mine looks at this" — or takes the question away and
//! answers later ([`Verdict::Later`]), as the agent runtime does: its JavaScript runs on another
//! thread. The engine then **parks** the message under a [`DecisionToken`] and goes on serving
//! other frames; the answer comes back through [`Node::decide`](crate::Node::decide) (the async
//! driver routes it from the [`DecisionSender`] it attaches to the hooks).
//!
//! Parked messages are applied **in arrival order among themselves**: a decision that comes
//! early waits for the messages parked before it. Messages decided at once are applied at once,
//! so a stuck agent delays only what it was asked about; the rest of the space keeps being served
//! (an RD may therefore be answered before an OUT that arrived earlier is stored — broadcast
//! carries no order between messages anyway, paper §3). A parked
//! message whose answer has not come by its deadline ([`NodeConfig::decision_deadline`]) is
//! applied with the fail-closed default and counted in [`NodeStats::decisions_expired`]: an OUT
//! is stored and a notification delivered (nothing is lost), a request is refused unless
//! [`NodeConfig::allow_on_deadline`]. An answer that comes after that is dropped and counted in
//! [`NodeStats::decisions_late`] — it is never applied.
//!
//! ```text
//!  frame ─▶ decode ─▶ Hooks::decide(token, question) ─ Now(d) ─▶ apply at once
//!                                   └─ Later ─▶ parked ◀─ Node::decide(token, d) ── app / agents
//!                                                  └─ deadline ─▶ fail-closed default, counted
//! ```
//!
//! [`NodeConfig::decision_deadline`]: crate::NodeConfig::decision_deadline
//! [`NodeConfig::allow_on_deadline`]: crate::NodeConfig::allow_on_deadline
//! [`NodeStats::decisions_expired`]: crate::NodeStats::decisions_expired
//! [`NodeStats::decisions_late`]: crate::NodeStats::decisions_late

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::message::Op;
use crate::node::{Received, Transport};
use crate::tuple::{Template, Tuple};

/// Names one parked message until its decision comes (see the module docs). Tokens increase
/// with arrival and are never reused by a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DecisionToken(pub(crate) u64);

impl DecisionToken {
    /// A token numbered `n`. A node makes its own; this is for driving [`Hooks`] without a node
    /// (tests, benches).
    pub const fn new(n: u64) -> DecisionToken {
        DecisionToken(n)
    }

    /// The token's number (for logs).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// What the engine asks its [`Hooks`] about.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Question<'a> {
    /// An incoming OUT, before it is stored. [`Decision::Stop`] consumes it (not stored).
    Out {
        /// The tuple.
        tuple: &'a Tuple,
        /// Its lifetime as sent (spec §4 L), `None` for the space default.
        lifetime: Option<Duration>,
        /// How it arrived.
        received: &'a Received,
    },
    /// An incoming RD, INP or TEST that the local space can answer now.
    /// [`Decision::Stop`] refuses it silently (the paper's filter agents).
    Request {
        /// RD, INP or TEST.
        op: Op,
        /// The requested template.
        template: &'a Template,
        /// How it arrived.
        received: &'a Received,
    },
    /// An incoming notification (TUPLE, R = 0), before listeners see it. [`Decision::Stop`]
    /// keeps it from them.
    Notify {
        /// The tuple.
        tuple: &'a Tuple,
        /// How it arrived.
        received: &'a Received,
    },
}

/// The answer to a [`Question`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Do what the engine does without hooks: store the OUT, answer the request, deliver the
    /// notification.
    Proceed,
    /// Consume the OUT, refuse the request, or keep the notification from listeners.
    Stop,
}

/// A hook's reply to [`Hooks::decide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Decided now.
    Now(Decision),
    /// The hook will answer later through [`Node::decide`](crate::Node::decide) with the token
    /// it was given (or not at all: the deadline then applies the default).
    Later,
}

/// How a hook that answers later hands its decision back to the engine: given to
/// [`Hooks::attach`] by whoever runs the node (the async driver routes it to
/// [`Node::decide`](crate::Node::decide)). Cheap to clone, callable from any thread; never
/// blocks. Returns `false` when the node is gone.
#[derive(Clone)]
pub struct DecisionSender(Arc<dyn Fn(DecisionToken, Decision) -> bool + Send + Sync>);

impl DecisionSender {
    /// A sender calling `f` for each decision.
    pub fn new(f: impl Fn(DecisionToken, Decision) -> bool + Send + Sync + 'static) -> Self {
        DecisionSender(Arc::new(f))
    }

    /// Hands `decision` for `token` back; `false` when the node is gone.
    pub fn send(&self, token: DecisionToken, decision: Decision) -> bool {
        (self.0)(token, decision)
    }
}

impl fmt::Debug for DecisionSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DecisionSender")
    }
}

/// What hooks learn about the space they are installed on ([`Hooks::bind`]), so that their
/// own settings follow the node's instead of being set twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpaceInfo {
    /// The node's transport.
    pub transport: Transport,
    /// Whether the space has an FPE key (spec §5): it accepts only encrypted messages.
    pub keyed: bool,
    /// Whether the space is sealed (spec §12): every message it accepts is authenticated.
    pub sealed: bool,
}

/// Application callbacks consulted by the engine before it acts on incoming messages (the
/// agents' entry points, paper §6). The default proceeds with everything.
///
/// **`decide` must not block**: it runs inside the engine, between two frames. A hook that needs
/// time (another thread, I/O) returns [`Verdict::Later`] and answers through the
/// [`DecisionSender`] it was given in [`attach`](Self::attach).
pub trait Hooks: Send {
    /// Decides `question` now, or takes it away ([`Verdict::Later`]) and answers for `token`
    /// before the deadline.
    fn decide(&mut self, token: DecisionToken, question: &Question<'_>) -> Verdict {
        let _ = (token, question);
        Verdict::Now(Decision::Proceed)
    }

    /// Called when the node is attached to a runner that routes late decisions (the async
    /// driver does this when it starts, and again if the hooks are replaced). A hook that never
    /// answers later ignores it (the default).
    fn attach(&mut self, decisions: DecisionSender) {
        let _ = decisions;
    }

    /// Called by [`Node::set_hooks`](crate::Node::set_hooks) with the space the hooks are
    /// installed on (the agent runtime takes the space's key status from it).
    fn bind(&mut self, space: SpaceInfo) {
        let _ = space;
    }
}
