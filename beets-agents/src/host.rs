//! The agent host: owns the agents of one node and dispatches events to them, with no I/O.

use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use beets_core::node::IncomingRequest;
use beets_core::space::DeliveryKinds;
use beets_core::{PeerAddr, Received, Time, Tuple, Value};

use crate::action::{
    Action, AgentEvent, AgentId, Completion, RequestOp, SpaceId, Token, TupleKind,
};
use crate::active;
use crate::agent::JsAgent;
use crate::api::Shared;
use crate::config::{HostConfig, Limits, SpaceSpec};
use crate::error::{AgentError, Fault};

/// Longest agent name, in bytes.
pub const MAX_AGENT_NAME_LEN: usize = 64;

/// Prefix of the names of agents started from active tuples.
pub const ACTIVE_PREFIX: &str = "active:";

/// Counters since the host was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostStats {
    /// Tuples given to `on_tuple`.
    pub tuples: u64,
    /// Tuples a `ts` handler consumed (active tuples included).
    pub consumed: u64,
    /// Requests given to `allow_request`.
    pub requests: u64,
    /// Requests refused (by a handler returning `false`, or by a faulting filter).
    pub refused: u64,
    /// Agent faults.
    pub faults: u64,
    /// Agents disabled after too many faults.
    pub disabled: u64,
    /// Actions queued.
    pub actions: u64,
    /// Actions dropped because the action queue was full.
    pub actions_dropped: u64,
    /// Events dropped because the event queue was full.
    pub events_dropped: u64,
    /// Agents started from active tuples.
    pub active_started: u64,
    /// Active tuples refused.
    pub active_refused: u64,
    /// Hook questions the agent runtime did not answer because their deadline had passed
    /// (queued too long, or a handler finished too late); the node applied its default.
    /// Always 0 for a bare [`AgentHost`]: counted by [`AgentRuntime`](crate::AgentRuntime).
    pub decisions_late: u64,
    /// Actions of handlers that finished after their question's deadline, dropped unexecuted
    /// (counted by [`AgentRuntime`](crate::AgentRuntime)).
    pub late_actions_dropped: u64,
    /// Hook questions answered with the fallback at once because the agent thread's command
    /// queue was full ([`RuntimeConfig::command_queue`](crate::RuntimeConfig::command_queue)).
    pub questions_busy: u64,
    /// Removals a `ts` rule wanted that were dropped because the agent thread's command queue
    /// was full (counted by [`AgentRuntime`](crate::AgentRuntime)).
    pub removals_busy: u64,
    /// Windows in which an agent exceeded its [`Limits::cpu_share`] (each is a
    /// [`FaultKind::Share`](crate::FaultKind::Share) fault).
    pub share_exceeded: u64,
    /// Events an agent did not see because it was throttled.
    pub throttled_events: u64,
    /// Log lines dropped by [`Limits::max_logs_per_window`] or [`Limits::max_logs_per_event`].
    pub logs_dropped: u64,
    /// Agents stopped by the watchdog while stuck in native code (process isolation only).
    pub stuck: u64,
    /// Agent worker processes started again after one was killed or died (process isolation
    /// only). Counters of the host restart from zero with each new worker, except this one and
    /// `stuck`.
    pub worker_restarts: u64,
}

/// Which incoming OUTs and requests can concern the agents, from [`AgentHost::rule_filter`].
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct RuleFilter {
    /// Per space: an OUT that matches none of these templates is neither consumed nor seen.
    pub out_templates: Vec<Vec<beets_core::Template>>,
    /// Per space: whether some request rule may refuse a request.
    pub requests: Vec<bool>,
    /// Per space: a notification that matches none of these templates is not seen.
    pub notify_templates: Vec<Vec<beets_core::Template>>,
    /// Per space: the templates of the `ts` rules that hear removals, each with the removal
    /// kinds it wants (only these are among the [`DeliveryKinds`]); a removal that matches none
    /// is not seen. [`AgentRuntime::serve`](crate::AgentRuntime::serve) subscribes to removals
    /// of the arities found here.
    pub removal_templates: Vec<Vec<(beets_core::Template, DeliveryKinds)>>,
}

impl RuleFilter {
    /// Whether `on_tuple` could do anything with an incoming OUT of `tuple` on `space`.
    pub fn wants_out(&self, space: SpaceId, tuple: &Tuple) -> bool {
        self.out_templates
            .get(space.index())
            .is_some_and(|t| t.iter().any(|t| t.matches(tuple)))
    }

    /// Whether `on_tuple` could do anything with an incoming notification of `tuple` on `space`.
    pub fn wants_notify(&self, space: SpaceId, tuple: &Tuple) -> bool {
        self.notify_templates
            .get(space.index())
            .is_some_and(|t| t.iter().any(|t| t.matches(tuple)))
    }

    /// Whether `on_tuple` could do anything with the removal of `tuple` from `space` (`kind`
    /// one of the removal kinds; `false` for `Out` and `Notify`).
    pub fn wants_removal(&self, space: SpaceId, kind: TupleKind, tuple: &Tuple) -> bool {
        let Some(kind) = kind.removal() else {
            return false;
        };
        self.removal_templates
            .get(space.index())
            .is_some_and(|t| t.iter().any(|(t, k)| k.contains(kind) && t.matches(tuple)))
    }

    /// The arities (1..=[`MAX_ARITY`](beets_core::MAX_ARITY)) of the templates that hear
    /// removals from `space`, ascending and each once.
    pub fn removal_arities(&self, space: SpaceId) -> Vec<usize> {
        let mut a: Vec<usize> = self
            .removal_templates
            .get(space.index())
            .into_iter()
            .flatten()
            .map(|(t, _)| t.arity())
            .collect();
        a.sort_unstable();
        a.dedup();
        a
    }

    /// Whether `allow_request` could refuse a request on `space`.
    pub fn wants_request(&self, space: SpaceId) -> bool {
        self.requests.get(space.index()).copied().unwrap_or(false)
    }
}

/// A snapshot of one agent, from [`AgentHost::agents`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AgentInfo {
    /// Its handle.
    pub id: AgentId,
    /// Its name.
    pub name: String,
    /// Still running (not disabled).
    pub enabled: bool,
    /// Faults so far.
    pub faults: u32,
    /// Started from an active tuple, and who sent it.
    pub active_from: Option<Option<PeerAddr>>,
    /// QuickJS heap in use, bytes (0 once disabled).
    pub memory: usize,
}

struct Slot {
    id: AgentId,
    name: String,
    /// Hash of the source, to recognise an active tuple that is already running.
    source_hash: u64,
    active_from: Option<Option<PeerAddr>>,
    js: Option<JsAgent>,
    faults: u32,
    limits: Limits,
    /// Version of an active agent.
    version: Option<i16>,
    /// CPU share and log window.
    window_start: Time,
    used: Duration,
    throttled: bool,
    logs_in_window: usize,
    logs_dropped_in_window: usize,
}

/// An active agent started by the host, for a supervisor that must start it again elsewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Started {
    pub(crate) name: String,
    pub(crate) source: String,
    pub(crate) from: Option<PeerAddr>,
    pub(crate) version: i16,
    pub(crate) id: AgentId,
}

/// The sans-IO agent host: owns the agents of one node and dispatches events to them.
///
/// ```text
///  caller ── on_tuple / allow_request / on_sensor ──▶ ┌───────────┐ ── poll_action ──▶ spaces
///  caller ── handle_timeout (at poll_timeout) ──────▶ │ AgentHost │ ── poll_event ───▶ logs
///  caller ── complete(token, reply) ────────────────▶ └───────────┘
/// ```
///
/// # Call contract
/// 1. Build with [`AgentHost::new`], naming the spaces agents can see; [`AgentHost::load`]
///    agents.
/// 2. Feed it what happens: [`on_tuple`](AgentHost::on_tuple) for every incoming OUT (its result
///    says whether an agent consumed it) and notification, [`allow_request`](AgentHost::allow_request)
///    before answering an RD, INP or TEST, [`on_sensor`](AgentHost::on_sensor) for readings, and
///    [`handle_timeout`](AgentHost::handle_timeout) when the time from
///    [`poll_timeout`](AgentHost::poll_timeout) has come.
/// 3. After any of these, drain [`poll_action`](AgentHost::poll_action) and perform each action;
///    complete those with a [`Token`] with [`complete`](AgentHost::complete). Drain
///    [`poll_event`](AgentHost::poll_event) for faults and logs.
/// 4. `now` must never go backwards.
///
/// Every call into an agent runs under its limits; a fault is reported as
/// [`AgentEvent::Fault`] and the host carries on. `AgentHost` is not `Send` (QuickJS runtimes are
/// single-threaded): use [`AgentRuntime`](crate::AgentRuntime) to run it on its own thread behind
/// the node's [`Hooks`](beets_core::node::Hooks).
pub struct AgentHost {
    config: HostConfig,
    shared: Rc<Shared>,
    agents: Vec<Slot>,
    next_id: u32,
    actions: VecDeque<Action>,
    events: VecDeque<AgentEvent>,
    stats: HostStats,
    /// Highest version of every active agent name ever started: never rolled back.
    active_versions: std::collections::HashMap<String, i16>,
    last_active_load: Option<Time>,
    started: Vec<Started>,
    /// Round-robin start of timer steps.
    timer_cursor: usize,
}

impl fmt::Debug for AgentHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentHost")
            .field("spaces", &self.config.spaces)
            .field("agents", &self.agents.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Queues an action, dropping the oldest when `bound` are waiting.
fn push_bounded(queue: &mut VecDeque<Action>, stats: &mut HostStats, bound: usize, a: Action) {
    stats.actions += 1;
    if queue.len() >= bound {
        queue.pop_front();
        stats.actions_dropped += 1;
    }
    queue.push_back(a);
}

fn source_hash(source: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut h);
    h.finish()
}

fn check_name(name: &str) -> Result<(), AgentError> {
    if name.is_empty() || name.len() > MAX_AGENT_NAME_LEN || name.chars().any(char::is_control) {
        return Err(AgentError::BadName(name.to_owned()));
    }
    Ok(())
}

impl AgentHost {
    /// A host with no agents.
    ///
    /// # Panics
    /// With more than 64 spaces (a node has one per transport).
    pub fn new(config: HostConfig) -> AgentHost {
        assert!(config.spaces.len() <= 64, "at most 64 spaces");
        AgentHost {
            shared: Rc::new(Shared::new(config.spaces.clone())),
            config,
            agents: Vec::new(),
            next_id: 1,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            stats: HostStats::default(),
            active_versions: Default::default(),
            last_active_load: None,
            started: Vec::new(),
            timer_cursor: 0,
        }
    }

    /// A host whose agent ids start at `first_id` and request tokens at `first_token` (a
    /// supervisor's new worker must not reuse the ids and tokens of the one it replaced).
    pub(crate) fn with_bases(config: HostConfig, first_id: u32, first_token: u64) -> AgentHost {
        let mut h = AgentHost::new(config);
        h.next_id = first_id.max(1);
        h.shared.next_token.set(first_token.max(1));
        h
    }

    /// Active agents started since the last call.
    pub(crate) fn take_started(&mut self) -> Vec<Started> {
        std::mem::take(&mut self.started)
    }

    /// Starts an active agent again that ran before (in a worker that was replaced): no policy
    /// check but the version memory.
    pub(crate) fn restore_active(
        &mut self,
        now: Time,
        name: &str,
        source: &str,
        from: Option<PeerAddr>,
        version: i16,
    ) -> Result<AgentId, AgentError> {
        let limits = self.config.active.limits.clone();
        let id = self.load_inner(now, name, source, limits, Some(from))?;
        self.note_version(name, version);
        if let Some(s) = self.agents.iter_mut().find(|s| s.id == id) {
            s.version = Some(version);
        }
        Ok(id)
    }

    fn note_version(&mut self, name: &str, version: i16) {
        let v = self
            .active_versions
            .entry(name.to_owned())
            .or_insert(version);
        *v = (*v).max(version);
    }
    /// The configuration.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The spaces, by [`SpaceId`] index.
    pub fn spaces(&self) -> &[SpaceSpec] {
        &self.config.spaces
    }

    /// The id of the space named `name`.
    pub fn space_id(&self, name: &str) -> Option<SpaceId> {
        self.config
            .spaces
            .iter()
            .position(|s| s.name == name)
            .map(|i| SpaceId(i as u8))
    }

    /// The counters.
    pub fn stats(&self) -> HostStats {
        self.stats
    }

    /// A snapshot of every agent loaded (disabled ones included), in load order.
    pub fn agents(&self) -> Vec<AgentInfo> {
        self.agents
            .iter()
            .map(|s| AgentInfo {
                id: s.id,
                name: s.name.clone(),
                enabled: s.js.is_some(),
                faults: s.faults,
                active_from: s.active_from,
                memory: s.js.as_ref().map_or(0, JsAgent::memory_used),
            })
            .collect()
    }

    /// Loads an agent from JavaScript source under [`HostConfig::limits`]. The source must
    /// evaluate to the agent object (see the [crate docs](crate)). Loading an agent with the name
    /// of a loaded one replaces it once the new one has loaded.
    ///
    /// # Errors
    /// An [`AgentError`]: a bad name, a source over the limit, a fault while evaluating it or
    /// running `init`, or an object that is not an agent. Nothing is left running then.
    pub fn load(&mut self, now: Time, name: &str, source: &str) -> Result<AgentId, AgentError> {
        self.load_with_limits(now, name, source, self.config.limits.clone())
    }

    /// As [`AgentHost::load`] with other limits.
    ///
    /// # Errors
    /// As [`AgentHost::load`].
    pub fn load_with_limits(
        &mut self,
        now: Time,
        name: &str,
        source: &str,
        limits: Limits,
    ) -> Result<AgentId, AgentError> {
        check_name(name)?;
        if name.starts_with(ACTIVE_PREFIX) {
            return Err(AgentError::BadName(name.to_owned()));
        }
        self.load_inner(now, name, source, limits, None)
    }

    fn load_inner(
        &mut self,
        now: Time,
        name: &str,
        source: &str,
        limits: Limits,
        active_from: Option<Option<PeerAddr>>,
    ) -> Result<AgentId, AgentError> {
        let id = AgentId(self.next_id);
        let mut js = JsAgent::load(id, name, source, &limits, &self.shared, now)?;
        // Loading is not charged to the share (it has its own budget).
        let _ = js.take_spent();
        self.next_id += 1;
        if let Some(old) = self.agents.iter().position(|s| s.name == name) {
            self.agents.remove(old);
        }
        self.agents.push(Slot {
            id,
            name: name.to_owned(),
            source_hash: source_hash(source),
            active_from,
            js: Some(js),
            faults: 0,
            limits,
            version: None,
            window_start: now,
            used: Duration::ZERO,
            throttled: false,
            logs_in_window: 0,
            logs_dropped_in_window: 0,
        });
        let idx = self.agents.len() - 1;
        self.collect(idx, true);
        self.push_event(AgentEvent::Loaded {
            agent: id,
            name: name.to_owned(),
            from: active_from.flatten(),
        });
        Ok(id)
    }

    /// Stops and frees an agent; `false` if unknown. Its pending promises are dropped.
    pub fn unload(&mut self, id: AgentId) -> bool {
        match self.agents.iter().position(|s| s.id == id) {
            Some(i) => {
                self.agents.remove(i);
                true
            }
            None => false,
        }
    }

    /// What the node's hooks need to skip the agents when no rule can fire: per space, the
    /// templates an incoming OUT must match for `on_tuple` to do anything (the `ts` rules of
    /// running agents, and the active-tuple shape where active tuples are accepted), and
    /// whether `allow_request` can refuse anything.
    pub fn rule_filter(&self) -> RuleFilter {
        let n = self.config.spaces.len();
        let mut f = RuleFilter {
            out_templates: vec![Vec::new(); n],
            requests: vec![false; n],
            notify_templates: vec![Vec::new(); n],
            removal_templates: vec![Vec::new(); n],
        };
        for i in 0..n {
            let space = SpaceId(i as u8);
            for a in self.agents.iter().filter_map(|s| s.js.as_ref()) {
                f.out_templates[i].extend(a.out_templates(space).cloned());
                f.notify_templates[i].extend(a.notify_templates(space).cloned());
                f.removal_templates[i]
                    .extend(a.removal_templates(space).map(|(t, k)| (t.clone(), k)));
                f.requests[i] |= RequestOp::ALL.iter().any(|op| a.wants_request(space, *op));
            }
            if self.active_allowed(space) {
                f.out_templates[i].push(active::template());
            }
        }
        f
    }

    fn active_allowed(&self, space: SpaceId) -> bool {
        let p = &self.config.active;
        let spec = &self.config.spaces[space.index()];
        let protected = match p.require {
            crate::config::Protection::None => true,
            crate::config::Protection::Keyed => spec.keyed || spec.sealed,
            crate::config::Protection::Sealed => spec.sealed,
        };
        p.enabled && protected && (p.spaces.is_empty() || p.spaces.contains(&spec.name))
    }

    /// Takes the settings of the node `space` runs on: whether it is keyed or sealed (which
    /// [`ActivePolicy::require`](crate::ActivePolicy::require) checks) and its
    /// transport's message limit. The [`AgentRuntime`](crate::AgentRuntime) calls it when its
    /// hooks are installed on a node, so [`SpaceSpec::keyed`](crate::SpaceSpec::keyed) need not
    /// be set by hand. Agents loaded before keep the message limit they were loaded with (hooks
    /// are normally installed before any agent is loaded). Unknown spaces are ignored.
    pub fn bind_space(&mut self, space: SpaceId, info: beets_core::node::SpaceInfo) {
        self.bind_parts(space, info.transport, info.keyed, info.sealed);
    }

    /// [`AgentHost::bind_space`] from its parts (a worker gets them over a pipe).
    pub(crate) fn bind_parts(
        &mut self,
        space: SpaceId,
        transport: beets_core::Transport,
        keyed: bool,
        sealed: bool,
    ) {
        let Some(spec) = self.config.spaces.get_mut(space.index()) else {
            return;
        };
        let max = transport.max_message_len();
        if spec.max_message_len != max {
            tracing::warn!(
                space = %spec.name,
                configured = spec.max_message_len,
                node = max,
                "space configured for another transport than its node; using the node's limit"
            );
        }
        spec.keyed = keyed;
        spec.sealed = sealed;
        spec.max_message_len = max;
    }

    /// An incoming OUT (`kind` = [`TupleKind::Out`], before it is stored) or notification on
    /// `space`: runs the matching `ts` rules of each agent in load order until a handler returns
    /// `true`. Returns whether the tuple was consumed (an OUT is then not stored).
    ///
    /// A removal (`kind` [`TupleKind::Inp`], `Rm`, `Expired` or `Evicted`: the tuple has left
    /// the space already) runs every matching `ts` rule of every agent, whatever they return,
    /// and returns `false`; [`AgentRuntime::serve`](crate::AgentRuntime::serve) feeds these
    /// from the spaces' removal deliveries.
    ///
    /// An OUT shaped like an active tuple is started as an agent and consumed when the
    /// [`ActivePolicy`](crate::ActivePolicy) allows it on this space. `lifetime` is the OUT's
    /// lifetime as sent (spec §4 L, whole seconds), which handlers see as `ev.lifetime` and the
    /// ready-made [`Router`](crate::Router) keeps when it forwards; `None` for none or a
    /// notification.
    pub fn on_tuple(
        &mut self,
        now: Time,
        space: SpaceId,
        kind: TupleKind,
        tuple: &Tuple,
        lifetime: Option<Duration>,
        received: Option<&Received>,
    ) -> bool {
        if space.index() >= self.config.spaces.len() {
            return false;
        }
        self.stats.tuples += 1;
        if kind == TupleKind::Out
            && self.active_allowed(space)
            && let Some((name, version, source)) = active::decode(tuple)
        {
            self.start_active(now, name, version, source, received.map(|r| r.from));
            self.stats.consumed += 1;
            return true;
        }
        for idx in 0..self.agents.len() {
            let budget = self.agents[idx].limits.event_budget;
            let Some(js) = self.agents[idx].js.as_mut() else {
                continue;
            };
            if !js.wants_tuple(space, kind, tuple) {
                continue;
            }
            if self.throttled(idx, now) {
                continue;
            }
            let js = self.agents[idx].js.as_mut().expect("checked above");
            let r = js.on_tuple(now, budget, space, kind, tuple, lifetime, received);
            if self.finish_at(idx, r, now) == Some(true) && !kind.is_removal() {
                self.stats.consumed += 1;
                return true;
            }
        }
        false
    }

    /// An incoming RD, INP or TEST the local space could answer: runs the matching request
    /// rules. Returns `false` when a handler returned `false` or a filter faulted (fail closed),
    /// `true` otherwise (also for ops other than RD, INP and TEST).
    pub fn allow_request(
        &mut self,
        now: Time,
        space: SpaceId,
        request: &IncomingRequest<'_>,
    ) -> bool {
        let Some(op) = RequestOp::from_op(request.op) else {
            return true;
        };
        if space.index() >= self.config.spaces.len() {
            return true;
        }
        self.stats.requests += 1;
        for idx in 0..self.agents.len() {
            let budget = self.agents[idx].limits.event_budget;
            let Some(js) = self.agents[idx].js.as_mut() else {
                continue;
            };
            if !js.wants_request(space, op) {
                continue;
            }
            if self.throttled(idx, now) {
                // A throttled filter cannot decide: fail closed.
                self.stats.refused += 1;
                return false;
            }
            let js = self.agents[idx].js.as_mut().expect("checked above");
            let r = js.on_request(now, budget, space, op, request.template, &request.received);
            match self.finish_at(idx, r, now) {
                Some(false) => {}
                Some(true) | None => {
                    self.stats.refused += 1;
                    return false;
                }
            }
        }
        true
    }

    /// A sensor reading: stores it (JavaScript `sensor(name)` returns it) and runs the sensor
    /// rules for `name` with the value and the previous one.
    pub fn on_sensor(&mut self, now: Time, name: &str, value: Value) {
        let previous = self
            .shared
            .sensors
            .borrow_mut()
            .insert(name.to_owned(), value.clone());
        for idx in 0..self.agents.len() {
            let budget = self.agents[idx].limits.event_budget;
            if self.agents[idx].js.is_none() || self.throttled(idx, now) {
                continue;
            }
            let Some(js) = self.agents[idx].js.as_mut() else {
                continue;
            };
            let r = js.on_sensor(now, budget, name, &value, previous.as_ref());
            self.finish_at(idx, r, now);
        }
    }

    /// Fires due timers and resolves requests whose deadline passed with `null`.
    pub fn handle_timeout(&mut self, now: Time) {
        while self.handle_timeout_step(now) {}
    }

    /// Fires **one** due timer or expired request, taking the agents in turn (round robin), and
    /// returns whether there was one. A caller that serves other work between steps (as
    /// [`AgentRuntime`](crate::AgentRuntime) does with the nodes' questions) keeps one agent's
    /// many timers from delaying everything else by more than one handler. A throttled agent's
    /// timers are skipped (they fire again at their next period).
    pub fn handle_timeout_step(&mut self, now: Time) -> bool {
        let n = self.agents.len();
        for k in 0..n {
            let idx = (self.timer_cursor + k) % n;
            let Some(js) = self.agents[idx].js.as_ref() else {
                continue;
            };
            let Some(due) = js.due(now).into_iter().next() else {
                continue;
            };
            self.timer_cursor = (idx + 1) % n;
            let budget = self.agents[idx].limits.event_budget;
            if matches!(due, crate::agent::Due::Timer(_)) && self.throttled(idx, now) {
                if let Some(js) = self.agents[idx].js.as_mut() {
                    js.skip_timer(now, due);
                }
                return true;
            }
            let Some(js) = self.agents[idx].js.as_mut() else {
                continue;
            };
            let r = js.fire(now, budget, due);
            self.finish_at(idx, r, now);
            return true;
        }
        false
    }

    /// Whether the agent is over its CPU share in the current window (rolls the window first).
    /// Counts the skipped event.
    fn throttled(&mut self, idx: usize, now: Time) -> bool {
        self.roll_window(idx, now);
        let t = self.agents[idx].throttled;
        if t {
            self.stats.throttled_events += 1;
        }
        t
    }

    fn roll_window(&mut self, idx: usize, now: Time) {
        let slot = &mut self.agents[idx];
        if now.saturating_since(slot.window_start) >= slot.limits.share_window {
            slot.window_start = now;
            slot.used = Duration::ZERO;
            slot.throttled = false;
            slot.logs_in_window = 0;
            slot.logs_dropped_in_window = 0;
        }
    }

    /// When [`AgentHost::handle_timeout`] should next run: the next timer or request deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        self.agents
            .iter()
            .filter_map(|s| s.js.as_ref()?.next_deadline())
            .min()
    }

    /// Resolves the promise of an [`Action::Request`] or [`Action::Host`]. Unknown or expired
    /// tokens are ignored.
    pub fn complete(&mut self, now: Time, token: Token, completion: Completion) {
        let Some(idx) = self
            .agents
            .iter()
            .position(|s| s.js.as_ref().is_some_and(|j| j.has_pending(token)))
        else {
            return;
        };
        if let Completion::Failed(why) = &completion {
            let slot = &self.agents[idx];
            let e = AgentEvent::Log {
                agent: slot.id,
                name: slot.name.clone(),
                message: format!("operation failed, resolving with null: {why}"),
            };
            self.push_event(e);
        }
        let budget = self.agents[idx].limits.event_budget;
        let Some(js) = self.agents[idx].js.as_mut() else {
            return;
        };
        let r = js.complete(now, budget, token, Some(completion));
        self.finish_at(idx, r, now);
    }

    /// The next action to perform, oldest first.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<AgentEvent> {
        self.events.pop_front()
    }

    fn start_active(
        &mut self,
        now: Time,
        name: &str,
        version: i16,
        source: &str,
        from: Option<PeerAddr>,
    ) {
        let refuse = |host: &mut AgentHost, reason: String| {
            host.stats.active_refused += 1;
            host.push_event(AgentEvent::ActiveRefused {
                from,
                name: name.to_owned(),
                reason,
            });
        };
        let policy = &self.config.active;
        if name.is_empty() || name.len() > active::MAX_ACTIVE_NAME_LEN {
            return refuse(
                self,
                format!("name must have 1..={} bytes", active::MAX_ACTIVE_NAME_LEN),
            );
        }
        if version < 1 {
            return refuse(self, format!("version {version} is not 1..=32767"));
        }
        let max = policy.max_source_len.min(active::MAX_ACTIVE_SOURCE_LEN);
        if source.len() > max {
            return refuse(
                self,
                format!("source has {} bytes, the limit is {max}", source.len()),
            );
        }
        let full = format!("{ACTIVE_PREFIX}{name}");
        // The same agent again (a repeated broadcast): keep the running one and its state.
        let hash = source_hash(source);
        if self.agents.iter().any(|s| {
            s.name == full && s.source_hash == hash && s.version == Some(version) && s.js.is_some()
        }) {
            return;
        }
        // No rollback: a replaced agent must carry a newer version than any this host ran
        // under that name (a captured older tuple replayed, or the same version with other code).
        if let Some(&seen) = self.active_versions.get(&full)
            && version <= seen
        {
            return refuse(
                self,
                format!(
                    "version {version} is not newer than version {seen} already run (replay or rollback)"
                ),
            );
        }
        if let Some(last) = self.last_active_load
            && now.saturating_since(last) < policy.min_load_interval
        {
            return refuse(
                self,
                format!(
                    "rate limited: one active load per {} ms (ActivePolicy::min_load_interval)",
                    policy.min_load_interval.as_millis()
                ),
            );
        }
        let running = self
            .agents
            .iter()
            .filter(|s| s.active_from.is_some() && s.js.is_some() && s.name != full)
            .count();
        if running >= policy.max_agents {
            let e = AgentError::TooManyActive {
                max: policy.max_agents,
            };
            return refuse(self, e.to_string());
        }
        let mut limits = policy.limits.clone();
        limits.max_source_len = limits.max_source_len.min(max);
        self.last_active_load = Some(now);
        match self.load_inner(now, &full, source, limits, Some(from)) {
            Ok(id) => {
                self.stats.active_started += 1;
                self.note_version(&full, version);
                if let Some(s) = self.agents.iter_mut().find(|s| s.id == id) {
                    s.version = Some(version);
                }
                self.started.push(Started {
                    name: full,
                    source: source.to_owned(),
                    from,
                    version,
                    id,
                });
            }
            Err(e) => refuse(self, e.to_string()),
        }
    }

    /// Moves an agent's actions and logs to the queues (actions only if `keep_actions`).
    fn collect(&mut self, idx: usize, keep_actions: bool) {
        let Some(js) = self.agents[idx].js.as_ref() else {
            return;
        };
        let (queue, stats, bound) = (
            &mut self.actions,
            &mut self.stats,
            self.config.action_queue.max(1),
        );
        let mut push = |a: Action| push_bounded(queue, stats, bound, a);
        let (mut logs, dropped) =
            js.drain(keep_actions.then_some(&mut push as &mut dyn FnMut(Action)));
        if logs.is_empty() && dropped == 0 {
            return;
        }
        self.stats.logs_dropped += dropped as u64;
        let slot = &mut self.agents[idx];
        let room = slot
            .limits
            .max_logs_per_window
            .saturating_sub(slot.logs_in_window);
        let mut window_notice = None;
        if logs.len() > room {
            let cut = logs.len() - room;
            logs.truncate(room);
            self.stats.logs_dropped += cut as u64;
            if slot.logs_dropped_in_window == 0 {
                window_notice = Some(format!(
                    "log lines dropped until the window ends (Limits::max_logs_per_window = {} per {} ms)",
                    slot.limits.max_logs_per_window,
                    slot.limits.share_window.as_millis()
                ));
            }
            slot.logs_dropped_in_window += cut;
        }
        slot.logs_in_window += logs.len();
        let (id, name) = (slot.id, slot.name.clone());
        if let Some(message) = window_notice {
            logs.push(message);
        }
        for message in logs {
            self.push_event(AgentEvent::Log {
                agent: id,
                name: name.clone(),
                message,
            });
        }
        if dropped > 0 {
            self.push_event(AgentEvent::Log {
                agent: id,
                name,
                message: format!("{dropped} log lines dropped (Limits::max_logs_per_event)"),
            });
        }
    }

    /// Collects an agent's output after a call and records a fault (a faulting event's actions
    /// are discarded), charging the call's time to the agent's CPU share in the window of `now`.
    fn finish_at<R>(&mut self, idx: usize, r: Result<R, Fault>, now: Time) -> Option<R> {
        self.roll_window(idx, now);
        let over = {
            let slot = &mut self.agents[idx];
            let spent = slot.js.as_mut().map_or(Duration::ZERO, JsAgent::take_spent);
            slot.used += spent;
            if !slot.throttled && slot.used > slot.limits.cpu_share {
                slot.throttled = true;
                Some(slot.used)
            } else {
                None
            }
        };
        let r = self.record(idx, r);
        if let Some(used) = over
            && self.agents[idx].js.is_some()
        {
            self.stats.share_exceeded += 1;
            let slot = &self.agents[idx];
            let fault = Fault {
                kind: crate::error::FaultKind::Share,
                during: "its share window".into(),
                message: format!(
                    "used {} ms of CPU within {} ms (Limits::cpu_share {} ms); throttled until the window ends",
                    used.as_millis(),
                    slot.limits.share_window.as_millis(),
                    slot.limits.cpu_share.as_millis()
                ),
            };
            self.fault(idx, fault);
        }
        r
    }

    fn record<R>(&mut self, idx: usize, r: Result<R, Fault>) -> Option<R> {
        match r {
            Ok(v) => {
                self.collect(idx, true);
                Some(v)
            }
            Err(fault) => {
                self.collect(idx, false);
                self.fault(idx, fault);
                None
            }
        }
    }

    /// Records a fault of agent `idx`; disables it at its limit.
    pub(crate) fn fault(&mut self, idx: usize, fault: Fault) {
        {
            {
                self.stats.faults += 1;
                let slot = &mut self.agents[idx];
                slot.faults += 1;
                let (id, name, count) = (slot.id, slot.name.clone(), slot.faults);
                let disable = count >= slot.limits.max_faults.max(1);
                if disable {
                    slot.js = None;
                }
                self.push_event(AgentEvent::Fault {
                    agent: id,
                    name: name.clone(),
                    fault,
                    count,
                });
                if disable {
                    self.stats.disabled += 1;
                    self.push_event(AgentEvent::Disabled {
                        agent: id,
                        name,
                        faults: count,
                    });
                }
            }
        }
    }

    fn push_event(&mut self, e: AgentEvent) {
        if self.events.len() >= self.config.event_queue.max(1) {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(e);
    }
}
