//! Configuration: the spaces agents can see, the per-agent limits and the active-tuple policy.

use std::time::Duration;

use beets_core::Transport;

use crate::active::MAX_ACTIVE_SOURCE_LEN;

/// Default [`Limits::memory`]: 4 MiB of QuickJS heap per agent (an empty agent uses ≈ 0.25 MiB).
pub const DEFAULT_MEMORY_LIMIT: usize = 4 << 20;
/// Default [`Limits::stack`]: 256 KiB of native stack for JavaScript calls (QuickJS's default).
pub const DEFAULT_STACK_LIMIT: usize = 256 << 10;
/// Default [`Limits::event_budget`]: 10 ms of CPU per event per agent.
pub const DEFAULT_EVENT_BUDGET: Duration = Duration::from_millis(10);
/// Default [`Limits::load_budget`]: 100 ms to evaluate an agent's source and run its `init`.
pub const DEFAULT_LOAD_BUDGET: Duration = Duration::from_millis(100);
/// Default [`Limits::max_faults`]: an agent is disabled at its 3rd fault.
pub const DEFAULT_MAX_FAULTS: u32 = 3;
/// Default [`Limits::max_source_len`]: 64 KiB of source code for an agent loaded locally.
pub const DEFAULT_MAX_SOURCE_LEN: usize = 64 << 10;

/// Default [`Limits::cpu_share`]: 500 ms per [`DEFAULT_SHARE_WINDOW`] (half a core).
pub const DEFAULT_CPU_SHARE: Duration = Duration::from_millis(500);
/// Default [`Limits::share_window`]: 1 s.
pub const DEFAULT_SHARE_WINDOW: Duration = Duration::from_secs(1);

/// One tuple space an agent can address by name (`spaces["ble-ts"]` in JavaScript).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpaceSpec {
    /// The name agents use, e.g. `"ble-ts"`.
    pub name: String,
    /// The transport's largest message (31 on BLE, 1221 on UDP); an `out`, `notify` or request
    /// that does not fit throws a `RangeError` in the agent at once.
    pub max_message_len: usize,
    /// Whether the space has an FPE key; [`ActivePolicy::require`] = [`Protection::Keyed`]
    /// accepts active tuples only from keyed (or sealed) spaces.
    pub keyed: bool,
    /// Whether the space is sealed (spec §12); the default [`Protection::Sealed`] accepts active
    /// tuples only from such spaces. Set from the node when the runtime's hooks are installed.
    pub sealed: bool,
}

impl SpaceSpec {
    /// A space named `name` on `transport`, unkeyed.
    pub fn new(name: impl Into<String>, transport: Transport) -> SpaceSpec {
        SpaceSpec {
            name: name.into(),
            max_message_len: transport.max_message_len(),
            keyed: false,
            sealed: false,
        }
    }

    /// A BLE space named `name`.
    pub fn ble(name: impl Into<String>) -> SpaceSpec {
        SpaceSpec::new(name, Transport::Ble)
    }

    /// A UDP space named `name`.
    pub fn udp(name: impl Into<String>) -> SpaceSpec {
        SpaceSpec::new(name, Transport::Udp)
    }

    /// Marks the space as keyed (FPE, spec §5) or not. Installing the runtime's hooks on a node
    /// sets this from the node's key ([`AgentHost::bind_space`](crate::AgentHost::bind_space)),
    /// so only a bare [`AgentHost`](crate::AgentHost) needs it.
    pub fn keyed(mut self, keyed: bool) -> SpaceSpec {
        self.keyed = keyed;
        self
    }
}

/// Hard limits applied to every agent (each agent has its own QuickJS runtime). Build with
/// `Limits { memory: 1 << 20, ..Limits::default() }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// QuickJS heap limit in bytes ([`DEFAULT_MEMORY_LIMIT`]). An allocation beyond it throws
    /// `InternalError: out of memory` in the agent; the event ends as a memory fault.
    pub memory: usize,
    /// Native stack available to JavaScript in bytes ([`DEFAULT_STACK_LIMIT`]). Deeper recursion
    /// throws `RangeError: Maximum call stack size exceeded`.
    pub stack: usize,
    /// Wall-clock CPU budget of one event for one agent: its conditions, handlers and the promise
    /// jobs they start ([`DEFAULT_EVENT_BUDGET`]). Enforced by the QuickJS interrupt handler,
    /// whose deadline is re-armed for every event.
    pub event_budget: Duration,
    /// Budget to evaluate the source and run `init` ([`DEFAULT_LOAD_BUDGET`]).
    pub load_budget: Duration,
    /// Faults (exceptions, budget or memory overruns, unhandled rejections) after which the agent
    /// is disabled and its runtime freed ([`DEFAULT_MAX_FAULTS`]); 0 acts as 1.
    pub max_faults: u32,
    /// Longest source accepted by `load` ([`DEFAULT_MAX_SOURCE_LEN`]).
    pub max_source_len: usize,
    /// Most rules one agent may declare (default 64).
    pub max_rules: usize,
    /// Most space operations (`out`, `notify`, `rd`, `host.*`…) one agent may start per event
    /// (default 32); one more throws a `RangeError`.
    pub max_actions_per_event: usize,
    /// Most requests (`rd`/`inp`/`test`/`host.rd`…) one agent may have waiting (default 32).
    pub max_pending: usize,
    /// Most promise jobs run after one event (default 1000); more is a fault (a runaway chain).
    pub max_jobs_per_event: usize,
    /// Most `log` lines kept per event (default 16); the rest are counted and dropped.
    pub max_logs_per_event: usize,
    /// Longest `log` line in bytes, longer ones are cut (default 512).
    pub max_log_len: usize,
    /// Shortest timer period (default 10 ms); shorter `timer:` values are raised to it.
    pub min_timer: Duration,
    /// Longest request timeout an agent may ask for (default 60 s); longer ones are cut.
    pub max_timeout: Duration,
    /// CPU (wall time inside the agent's calls) the agent may use per [`Limits::share_window`]
    /// (default 500 ms: half a core; wall time, so time the thread was preempted inside a
    /// call counts too). Beyond it the agent commits a
    /// [`FaultKind::Share`](crate::FaultKind::Share) fault and is throttled until the window
    /// ends: its timers, sensors and tuple rules are skipped and its request filters refuse
    /// (fail closed). Three such windows disable it ([`Limits::max_faults`]).
    pub cpu_share: Duration,
    /// The window of [`Limits::cpu_share`] and [`Limits::max_logs_per_window`] (default 1 s).
    pub share_window: Duration,
    /// Most `log` lines one agent may emit per [`Limits::share_window`] (default 32), over all its
    /// events; the rest are dropped and counted in one line per window.
    pub max_logs_per_window: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory: DEFAULT_MEMORY_LIMIT,
            stack: DEFAULT_STACK_LIMIT,
            event_budget: DEFAULT_EVENT_BUDGET,
            load_budget: DEFAULT_LOAD_BUDGET,
            max_faults: DEFAULT_MAX_FAULTS,
            max_source_len: DEFAULT_MAX_SOURCE_LEN,
            max_rules: 64,
            max_actions_per_event: 32,
            max_pending: 32,
            max_jobs_per_event: 1000,
            max_logs_per_event: 16,
            max_log_len: 512,
            min_timer: Duration::from_millis(10),
            max_timeout: Duration::from_secs(60),
            cpu_share: DEFAULT_CPU_SHARE,
            share_window: DEFAULT_SHARE_WINDOW,
            max_logs_per_window: 32,
        }
    }
}

/// How a space must be protected for active tuples to be accepted from it
/// ([`ActivePolicy::require`]).
///
/// The default is [`Protection::Sealed`] (spec §12): only key holders can send an active tuple,
/// and a captured one cannot be replayed. [`Protection::Keyed`] also takes FPE-keyed spaces: an
/// FPE password hides content but neither authenticates nor prevents replay — anyone who has
/// learnt the substitution table (from observed traffic) can forge an active tuple; the explicit
/// opt-in of `beets node --active-fpe`. A space's protection follows its node when the runtime's
/// hooks are installed ([`AgentHost::bind_space`](crate::AgentHost::bind_space)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Protection {
    /// Any space, keyed or not (tests and closed set-ups only: anyone in range can load code).
    None,
    /// Spaces with an FPE key (spec §5) or sealed: senders need the password or the learnt
    /// table.
    Keyed,
    /// Sealed spaces only (spec §12): authenticated senders, no replays.
    Sealed,
}

/// Whether agent source received in a tuple is started (active tuples, see
/// [`active`](crate::active)). Off by default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivePolicy {
    /// Start agents received in `("AGENT", name, version, source)` tuples. Default `false`:
    /// such tuples are then ordinary data and are stored like any other.
    pub enabled: bool,
    /// The protection a space must have for its active tuples to be taken (default
    /// [`Protection::Keyed`]; see [`Protection`] for what that does not prevent).
    pub require: Protection,
    /// Spaces that accept them, by name; empty (default) means every space allowed by
    /// `require`.
    pub spaces: Vec<String>,
    /// Most active agents running at once (default 4); more are refused.
    pub max_agents: usize,
    /// Longest source accepted (default and upper bound [`MAX_ACTIVE_SOURCE_LEN`]).
    pub max_source_len: usize,
    /// Shortest time between two active loads on this host (default 1 s); an active tuple that
    /// comes sooner is refused (each load costs a runtime and runs code).
    pub min_load_interval: Duration,
    /// Limits for active agents (default: [`Limits::default`]).
    pub limits: Limits,
}

impl Default for ActivePolicy {
    fn default() -> ActivePolicy {
        ActivePolicy {
            enabled: false,
            require: Protection::Sealed,
            spaces: Vec::new(),
            max_agents: 4,
            max_source_len: MAX_ACTIVE_SOURCE_LEN,
            min_load_interval: Duration::from_secs(1),
            limits: Limits::default(),
        }
    }
}

/// Configuration of an [`AgentHost`](crate::AgentHost).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostConfig {
    /// The spaces agents can see, in order; their index is the [`SpaceId`](crate::SpaceId).
    /// The first one is also the JavaScript global `host`.
    pub spaces: Vec<SpaceSpec>,
    /// Limits for agents loaded with [`AgentHost::load`](crate::AgentHost::load).
    pub limits: Limits,
    /// Active tuples.
    pub active: ActivePolicy,
    /// Bound of the action queue (default 1024); when full the oldest action is dropped and
    /// counted in [`HostStats::actions_dropped`](crate::HostStats::actions_dropped).
    pub action_queue: usize,
    /// Bound of the event queue (default 1024), same policy.
    pub event_queue: usize,
}

impl HostConfig {
    /// A configuration for `spaces` with default limits and active tuples off.
    pub fn new(spaces: impl IntoIterator<Item = SpaceSpec>) -> HostConfig {
        HostConfig {
            spaces: spaces.into_iter().collect(),
            limits: Limits::default(),
            active: ActivePolicy::default(),
            action_queue: 1024,
            event_queue: 1024,
        }
    }
}
