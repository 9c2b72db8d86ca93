//! Running agents next to async spaces: an agent host on its own thread, hooks for the nodes,
//! and a task that performs the agents' actions on space handles.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self as std_mpsc, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use beets_core::driver::{ClientError, SpaceHandle};
use beets_core::node::{
    Decision, DecisionSender, DecisionToken, Hooks, IncomingRequest, Question, SpaceInfo, Verdict,
};
use beets_core::space::DeliveryKinds;
use beets_core::{Delivery, Field, Op, Received, Template, Time, Tuple, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::action::{
    Action, AgentEvent, AgentId, Completion, HostQuery, RequestOp, SpaceId, Token, TupleKind,
};
use crate::config::{HostConfig, Limits};
use crate::error::AgentError;
use crate::host::{AgentHost, AgentInfo, HostStats, RuleFilter};
use crate::worker::{RemoteHost, WorkerCommand};

/// Where the agents run.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Isolation {
    /// On the runtime's own thread, in this process (default). The CPU budget stops JavaScript
    /// code; a long native call (a huge `indexOf`, `sort`, `JSON.stringify`) keeps the thread
    /// until it returns.
    #[default]
    Thread,
    /// In a supervised worker process (see [`crate::worker`]): a call that overruns its budget
    /// plus [`WorkerCommand::grace`] gets the worker killed and replaced, whatever it was doing.
    /// Costs one pipe round trip per call into the agents.
    Process(WorkerCommand),
}

/// The agents, here or in a worker process.
enum Engine {
    Local(AgentHost),
    Remote(RemoteHost),
}

macro_rules! both {
    ($self:expr, $h:ident => $e:expr) => {
        match $self {
            Engine::Local($h) => $e,
            Engine::Remote($h) => $e,
        }
    };
}

impl Engine {
    fn load(
        &mut self,
        now: Time,
        name: &str,
        source: &str,
        limits: Option<Limits>,
    ) -> Result<AgentId, AgentError> {
        match self {
            Engine::Local(h) => match limits {
                Some(l) => h.load_with_limits(now, name, source, l),
                None => h.load(now, name, source),
            },
            Engine::Remote(h) => h.load(now, name, source, limits),
        }
    }
    fn unload(&mut self, id: AgentId) -> bool {
        both!(self, h => h.unload(id))
    }
    fn on_tuple(
        &mut self,
        now: Time,
        space: SpaceId,
        kind: TupleKind,
        tuple: &Tuple,
        lifetime: Option<Duration>,
        received: Option<&Received>,
    ) -> bool {
        both!(self, h => h.on_tuple(now, space, kind, tuple, lifetime, received))
    }
    fn allow_request(&mut self, now: Time, space: SpaceId, req: &IncomingRequest<'_>) -> bool {
        both!(self, h => h.allow_request(now, space, req))
    }
    fn on_sensor(&mut self, now: Time, name: &str, value: Value) {
        both!(self, h => h.on_sensor(now, name, value))
    }
    fn handle_timeout_step(&mut self, now: Time) -> bool {
        both!(self, h => h.handle_timeout_step(now))
    }
    fn poll_timeout(&self) -> Option<Time> {
        both!(self, h => h.poll_timeout())
    }
    fn complete(&mut self, now: Time, token: Token, c: Completion) {
        both!(self, h => h.complete(now, token, c))
    }
    fn bind_space(&mut self, space: SpaceId, info: SpaceInfo) {
        both!(self, h => h.bind_space(space, info))
    }
    fn agents(&mut self) -> Vec<AgentInfo> {
        both!(self, h => h.agents())
    }
    fn stats(&mut self) -> HostStats {
        both!(self, h => h.stats())
    }
    fn rule_filter(&self) -> RuleFilter {
        both!(self, h => h.rule_filter())
    }
    fn poll_action(&mut self) -> Option<Action> {
        both!(self, h => h.poll_action())
    }
    fn poll_event(&mut self) -> Option<AgentEvent> {
        both!(self, h => h.poll_event())
    }
}

/// How the agent thread and its channels are set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// How long the agent thread has to decide on a message a hook handed it (default 100 ms;
    /// keep it above [`Limits::event_budget`] times the number of agents that may run for one
    /// tuple, and below the node's
    /// [`NodeConfig::decision_deadline`](beets_core::NodeConfig::decision_deadline), 150 ms by
    /// default). A question still queued at its deadline is not run; a handler that finishes
    /// after it has its decision and its actions dropped (counted in
    /// [`HostStats::decisions_late`]). The node meanwhile applies its fail-closed default.
    pub hook_timeout: Duration,
    /// What a hook answers at once for a request when the agent thread cannot take the question
    /// (its queue is full, or the hooks run without a driver). Default `false`: refuse, so a
    /// stuck filter fails closed. The node's own deadline default is
    /// [`NodeConfig::allow_on_deadline`](beets_core::NodeConfig::allow_on_deadline).
    pub allow_on_timeout: bool,
    /// Bound of the command channel into the thread (default 1024); hooks that find it full
    /// answer with their default at once.
    pub command_queue: usize,
    /// Bound of the action and event channels out of the thread (default 1024); when full, items
    /// are dropped and counted.
    pub output_queue: usize,
    /// Native stack of the agent thread (default 8 MiB; must exceed [`Limits::stack`]).
    pub thread_stack: usize,
    /// Where the agents run (default [`Isolation::Thread`]).
    pub isolation: Isolation,
}

impl Default for RuntimeConfig {
    fn default() -> RuntimeConfig {
        RuntimeConfig {
            hook_timeout: Duration::from_millis(100),
            allow_on_timeout: false,
            command_queue: 1024,
            output_queue: 1024,
            thread_stack: 8 << 20,
            isolation: Isolation::Thread,
        }
    }
}

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The agent thread has stopped (shut down, or every handle dropped).
    #[error("agent thread stopped")]
    Stopped,
    /// The command channel is full; try again later.
    #[error("agent thread busy: its command queue is full (RuntimeConfig::command_queue)")]
    Busy,
    /// The agent did not load.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The thread could not be started.
    #[error("could not start the agent thread: {0}")]
    Spawn(#[from] std::io::Error),
    /// A space name that is not in [`HostConfig::spaces`].
    #[error("no space named {0:?} in HostConfig::spaces")]
    UnknownSpace(String),
    /// A space of [`HostConfig::spaces`] was given no handle in [`AgentRuntime::serve`].
    #[error("space {0:?} of HostConfig::spaces has no SpaceHandle in serve")]
    MissingSpace(String),
}

enum Cmd {
    Load {
        name: String,
        source: String,
        limits: Option<Limits>,
        reply: oneshot::Sender<Result<AgentId, AgentError>>,
    },
    Unload(AgentId, oneshot::Sender<bool>),
    Tuple {
        space: SpaceId,
        kind: TupleKind,
        tuple: Tuple,
        received: Option<Received>,
    },
    /// A node's question, to answer through `reply` before `deadline`.
    Decide {
        space: SpaceId,
        asked: Asked,
        token: DecisionToken,
        deadline: Instant,
        reply: DecisionSender,
    },
    Sensor(String, Value),
    /// Hooks were installed on the node of a space: its settings follow the node's; the ack
    /// comes once the new rule masks are published.
    Bind(SpaceId, SpaceInfo, SyncSender<()>),
    Complete(Token, Completion),
    Agents(oneshot::Sender<Vec<AgentInfo>>),
    Stats(oneshot::Sender<HostStats>),
    Shutdown,
}

/// A question of the engine, owned so it can cross to the agent thread.
enum Asked {
    Tuple {
        kind: TupleKind,
        tuple: Tuple,
        lifetime: Option<Duration>,
        received: Received,
    },
    Request {
        op: Op,
        template: Template,
        received: Received,
    },
}

/// What the hooks need to skip the agent thread, published by it; and what the serve task
/// needs to follow the removal rules.
#[derive(Debug)]
struct Masks {
    filter: RwLock<RuleFilter>,
    /// Bumped by every publication of `filter`.
    published: watch::Sender<u64>,
    /// The publication whose removal subscriptions the serve task has in place (`u64::MAX`
    /// once no serve task runs).
    applied: watch::Sender<u64>,
    /// Serve tasks made and not yet ended.
    serving: AtomicUsize,
}

impl Masks {
    fn new(filter: RuleFilter) -> Masks {
        Masks {
            filter: RwLock::new(filter),
            published: watch::Sender::new(0),
            applied: watch::Sender::new(0),
            serving: AtomicUsize::new(0),
        }
    }
}

/// How many removal deliveries a subscription of the serve task buffers; beyond, the space
/// drops them (counted in its `deliveries_dropped`).
const REMOVAL_BUFFER: usize = 256;

/// The longest [`AgentRuntime::load`] waits for the serve task to subscribe to the removals
/// the new agent's rules want.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

/// Counts a serve task from its making to its end (or its drop unpolled).
struct Serving(Arc<Masks>);

impl Serving {
    fn new(masks: Arc<Masks>) -> Serving {
        if masks.serving.fetch_add(1, Ordering::AcqRel) == 0 {
            masks.applied.send_replace(0);
        }
        Serving(masks)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if self.0.serving.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Nobody follows the removal rules any more: release any `load` waiting for it.
            self.0.applied.send_replace(u64::MAX);
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The channels out of the agent thread; take them once from [`AgentRuntime::spawn`].
#[derive(Debug)]
#[non_exhaustive]
pub struct AgentOutputs {
    /// Actions to perform: give to [`AgentRuntime::serve`].
    pub actions: mpsc::Receiver<Action>,
    /// Loads, faults, disables, logs. Every event is also logged with `tracing`; dropping this
    /// receiver is fine.
    pub events: mpsc::Receiver<AgentEvent>,
}

/// A handle to agents running on their own thread: an [`AgentHost`] there, [`AgentHooks`] for
/// the nodes, and [`AgentRuntime::serve`] performing the agents' actions on [`SpaceHandle`]s.
/// Cheap to clone; the thread stops at [`AgentRuntime::shutdown`] or when every handle and every
/// [`AgentHooks`] is dropped.
///
/// QuickJS runtimes are not `Send`, and a node's hooks must be, so the host lives on a dedicated
/// thread and everything talks to it over channels:
///
/// ```text
///   Node (driver task) ── AgentHooks::decide → Verdict::Later ─────▶ ┌──────────────┐
///        ◀── Decision via the driver (Node::decide), or the node's ── │ agent thread │
///            fail-closed default at NodeConfig::decision_deadline      │  AgentHost   │
///   app ── load / set_sensor / feed_tuple ─────────────────────────▶ │  + timers    │
///   serve task ◀── actions ───────────────────────────────────────── │              │
///   serve task ── replies (complete) ────────────────────────────────▶ └──────────────┘
/// ```
///
/// The node never waits for the agents (see `beets_core::node::hooks`): a message an agent rule
/// may concern is parked and the driver goes on with other frames; the agent thread's decision
/// comes back through the driver. A question the thread reaches after
/// [`RuntimeConfig::hook_timeout`] is not run, and a handler that finishes after it has its
/// decision and its actions dropped, so nothing an agent decides takes effect after the node
/// has applied its default (an OUT stored, a request refused unless
/// `NodeConfig::allow_on_deadline`). Hooks skip the thread entirely for OUTs no `ts` rule
/// matches and for spaces without request rules.
///
/// Notifications (TUPLE, R = 0) reach `ts` rules of kind `"notify"` the same way (with sender,
/// time and RSSI); a handler returning `true` keeps them from
/// the node's listeners. [`AgentRuntime::feed_tuple`] feeds tuples from elsewhere.
#[derive(Clone, Debug)]
pub struct AgentRuntime {
    tx: SyncSender<Cmd>,
    masks: Arc<Masks>,
    spaces: Arc<[String]>,
    config: RuntimeConfig,
    /// Questions the hooks decided with their fallback because the command queue was full.
    refused_busy: Arc<AtomicU64>,
    /// Removals not handed to the agents because the command queue was full.
    removals_busy: Arc<AtomicU64>,
}

impl AgentRuntime {
    /// Starts the agent thread with an empty [`AgentHost`].
    ///
    /// # Errors
    /// [`RuntimeError::Spawn`] if the thread cannot be started.
    pub fn spawn(
        host: HostConfig,
        config: RuntimeConfig,
    ) -> Result<(AgentRuntime, AgentOutputs), RuntimeError> {
        let (tx, rx) = std_mpsc::sync_channel(config.command_queue.max(1));
        let (atx, arx) = mpsc::channel(config.output_queue.max(1));
        let (etx, erx) = mpsc::channel(config.output_queue.max(1));
        // The filter of an empty host (active tuples only), in place before any hook can run.
        let masks = Arc::new(Masks::new(AgentHost::new(host.clone()).rule_filter()));
        let spaces: Arc<[String]> = host.spaces.iter().map(|s| s.name.clone()).collect();
        let m = masks.clone();
        let isolation = config.isolation.clone();
        let (started_tx, started) = std_mpsc::sync_channel(1);
        thread::Builder::new()
            .name("beets-agents".into())
            .stack_size(config.thread_stack)
            .spawn(move || {
                let engine = match isolation {
                    Isolation::Thread => Engine::Local(AgentHost::new(host)),
                    Isolation::Process(cmd) => match RemoteHost::start(cmd, host) {
                        Ok(h) => Engine::Remote(h),
                        Err(e) => {
                            let _ = started_tx.send(Err(e));
                            return;
                        }
                    },
                };
                let _ = started_tx.send(Ok(()));
                let mut thread = AgentThread {
                    host: engine,
                    late: 0,
                    late_actions: 0,
                    epoch: Instant::now(),
                    actions: atx,
                    events: etx,
                    masks: m,
                };
                thread.run(rx);
            })?;
        started.recv().map_err(|_| RuntimeError::Stopped)??;
        let rt = AgentRuntime {
            tx,
            masks,
            spaces,
            config,
            refused_busy: Arc::new(AtomicU64::new(0)),
            removals_busy: Arc::new(AtomicU64::new(0)),
        };
        Ok((
            rt,
            AgentOutputs {
                actions: arx,
                events: erx,
            },
        ))
    }

    /// The id of the space named `name`.
    pub fn space_id(&self, name: &str) -> Option<SpaceId> {
        self.spaces
            .iter()
            .position(|s| s == name)
            .map(|i| SpaceId(i as u8))
    }

    /// The hooks to install on the node of space `name` with
    /// [`Node::set_hooks`](beets_core::Node::set_hooks) before spawning its driver.
    ///
    /// # Errors
    /// [`RuntimeError::UnknownSpace`].
    pub fn hooks(&self, name: &str) -> Result<AgentHooks, RuntimeError> {
        let space = self
            .space_id(name)
            .ok_or_else(|| RuntimeError::UnknownSpace(name.to_owned()))?;
        Ok(AgentHooks {
            space,
            tx: self.tx.clone(),
            masks: self.masks.clone(),
            deadline: self.config.hook_timeout,
            allow_on_timeout: self.config.allow_on_timeout,
            decisions: None,
            refused_busy: self.refused_busy.clone(),
        })
    }

    fn send(&self, cmd: Cmd) -> Result<(), RuntimeError> {
        self.tx.try_send(cmd).map_err(|e| match e {
            TrySendError::Full(_) => RuntimeError::Busy,
            TrySendError::Disconnected(_) => RuntimeError::Stopped,
        })
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Cmd,
    ) -> Result<T, RuntimeError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| RuntimeError::Stopped)
    }

    /// Loads an agent (see [`AgentHost::load`]). When a [`serve`](Self::serve) task runs, it
    /// returns once that task has subscribed to the removals the agent's rules ask for (at most
    /// 2 s later), so a removal right after `load` reaches them.
    ///
    /// # Errors
    /// [`RuntimeError::Agent`] when it does not load; [`RuntimeError::Stopped`] /
    /// [`RuntimeError::Busy`].
    pub async fn load(&self, name: &str, source: &str) -> Result<AgentId, RuntimeError> {
        self.load_inner(name, source, None).await
    }

    /// As [`AgentRuntime::load`], for synchronous callers: blocks the calling thread.
    ///
    /// # Panics
    /// When called from within an async runtime (use [`AgentRuntime::load`] there).
    ///
    /// # Errors
    /// As [`AgentRuntime::load`].
    pub fn load_blocking(&self, name: &str, source: &str) -> Result<AgentId, RuntimeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Load {
            name: name.to_owned(),
            source: source.to_owned(),
            limits: None,
            reply,
        })?;
        Ok(rx.blocking_recv().map_err(|_| RuntimeError::Stopped)??)
    }

    /// Loads an agent with its own limits (see [`AgentHost::load_with_limits`]).
    ///
    /// # Errors
    /// As [`AgentRuntime::load`].
    pub async fn load_with_limits(
        &self,
        name: &str,
        source: &str,
        limits: Limits,
    ) -> Result<AgentId, RuntimeError> {
        self.load_inner(name, source, Some(limits)).await
    }

    async fn load_inner(
        &self,
        name: &str,
        source: &str,
        limits: Option<Limits>,
    ) -> Result<AgentId, RuntimeError> {
        let (name, source) = (name.to_owned(), source.to_owned());
        let id = self
            .ask(|reply| Cmd::Load {
                name,
                source,
                limits,
                reply,
            })
            .await??;
        self.removals_followed().await;
        Ok(id)
    }

    /// Waits (at most [`SUBSCRIBE_WAIT`]) until a running serve task has subscribed to the
    /// removals the rules published so far want; at once when no serve task runs.
    async fn removals_followed(&self) {
        if self.masks.serving.load(Ordering::Acquire) == 0 {
            return;
        }
        let published = *self.masks.published.borrow();
        let mut applied = self.masks.applied.subscribe();
        let _ = tokio::time::timeout(SUBSCRIBE_WAIT, applied.wait_for(|a| *a >= published)).await;
    }

    /// Unloads an agent; `false` if unknown.
    ///
    /// # Errors
    /// [`RuntimeError::Stopped`] / [`RuntimeError::Busy`].
    pub async fn unload(&self, id: AgentId) -> Result<bool, RuntimeError> {
        self.ask(|r| Cmd::Unload(id, r)).await
    }

    /// A snapshot of the agents.
    ///
    /// # Errors
    /// [`RuntimeError::Stopped`] / [`RuntimeError::Busy`].
    pub async fn agents(&self) -> Result<Vec<AgentInfo>, RuntimeError> {
        self.ask(Cmd::Agents).await
    }

    /// The host's counters.
    ///
    /// # Errors
    /// [`RuntimeError::Stopped`] / [`RuntimeError::Busy`].
    pub async fn stats(&self) -> Result<HostStats, RuntimeError> {
        let mut stats = self.ask(Cmd::Stats).await?;
        stats.questions_busy = self.refused_busy.load(Ordering::Relaxed);
        stats.removals_busy = self.removals_busy.load(Ordering::Relaxed);
        Ok(stats)
    }

    /// A sensor reading (see [`AgentHost::on_sensor`]); does not wait.
    ///
    /// # Errors
    /// [`RuntimeError::Stopped`] / [`RuntimeError::Busy`].
    pub fn set_sensor(&self, name: &str, value: Value) -> Result<(), RuntimeError> {
        self.send(Cmd::Sensor(name.to_owned(), value))
    }

    /// Hands agents a tuple the hooks do not see (e.g. a notification from a subscription, or a
    /// removal of a [`TupleKind::is_removal`] kind); does not wait, and the tuple cannot be
    /// consumed.
    ///
    /// # Errors
    /// [`RuntimeError::Stopped`] / [`RuntimeError::Busy`].
    pub fn feed_tuple(
        &self,
        space: SpaceId,
        kind: TupleKind,
        tuple: Tuple,
        received: Option<Received>,
    ) -> Result<(), RuntimeError> {
        self.send(Cmd::Tuple {
            space,
            kind,
            tuple,
            received,
        })
    }

    /// Completes an agent's request (what [`AgentRuntime::serve`] does).
    ///
    /// # Errors
    /// [`RuntimeError::Stopped`] / [`RuntimeError::Busy`].
    pub fn complete(&self, token: Token, completion: Completion) -> Result<(), RuntimeError> {
        self.send(Cmd::Complete(token, completion))
    }

    /// Stops the agent thread (its agents are freed); pending hooks get their defaults.
    pub fn shutdown(&self) {
        let _ = self.tx.try_send(Cmd::Shutdown);
    }

    /// The task that performs the agents' actions on the running spaces, each given by its
    /// name in [`HostConfig::spaces`]: spawn what this returns. Broadcasts and local writes are
    /// performed in order; each request runs in its own task and its reply (or `None` at the
    /// timeout) is given back to the agent. It ends when the agent thread stops.
    ///
    /// It also hands the agents the **removals** their `ts` rules ask for (`kind: "inp"`,
    /// `"rm"`, `"expired"`, `"evicted"` or `"removed"`): while some rule of a space wants
    /// removals of tuples of arity *n*, the task holds a subscription to every removal of arity
    /// *n* from that space ([`SpaceHandle::subscribe_to`] with
    /// [`DeliveryKinds::REMOVALS`](beets_core::space::DeliveryKinds::REMOVALS)) and passes on the
    /// ones a rule matches, after the fact (the tuple is gone; a handler cannot keep it). It
    /// subscribes for the agents already loaded before it performs their first action, and
    /// follows later loads and unloads ([`AgentRuntime::load`] waits for it). A removal that
    /// finds the agent thread's command queue full is dropped and counted in
    /// [`HostStats::removals_busy`]; one that finds the subscription's buffer (256) full is
    /// dropped by the space (its `deliveries_dropped`).
    ///
    /// ```no_run
    /// # use beets_agents::*;
    /// # async fn f(agents: AgentRuntime, out: AgentOutputs,
    /// #     ble: beets_core::driver::SpaceHandle, udp: beets_core::driver::SpaceHandle)
    /// #     -> Result<(), RuntimeError> {
    /// tokio::spawn(agents.serve(out.actions, [("ble-ts", ble), ("udp-ts", udp)])?);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`RuntimeError::UnknownSpace`] for a name not in the host configuration;
    /// [`RuntimeError::MissingSpace`] when a configured space has no handle (its agents' actions
    /// would go nowhere).
    pub fn serve<'a>(
        &self,
        actions: mpsc::Receiver<Action>,
        spaces: impl IntoIterator<Item = (&'a str, SpaceHandle)>,
    ) -> Result<impl std::future::Future<Output = ()> + Send + 'static, RuntimeError> {
        let mut by_index: Vec<Option<SpaceHandle>> = vec![None; self.spaces.len()];
        for (name, handle) in spaces {
            let id = self
                .space_id(name)
                .ok_or_else(|| RuntimeError::UnknownSpace(name.to_owned()))?;
            by_index[id.index()] = Some(handle);
        }
        let handles = by_index
            .into_iter()
            .zip(self.spaces.iter())
            .map(|(h, name)| h.ok_or_else(|| RuntimeError::MissingSpace(name.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let serving = Serving::new(self.masks.clone());
        let rt = self.clone();
        Ok(async move {
            let _serving = serving;
            let mut published = rt.masks.published.subscribe();
            // Subscribe for the agents already loaded before performing their first action.
            let mut removals = Removals::default();
            removals.follow(&rt, &handles, &mut published).await;
            let follower = {
                let (rt, handles) = (rt.clone(), handles.clone());
                AbortOnDrop(tokio::spawn(async move {
                    while published.changed().await.is_ok() {
                        removals.follow(&rt, &handles, &mut published).await;
                    }
                }))
            };
            rt.run_actions(actions, handles).await;
            drop(follower);
        })
    }

    /// Hands the agents one removal from `space` when a rule wants it.
    async fn forward_removals(self, space: SpaceId, mut rx: mpsc::Receiver<Delivery>) {
        while let Some(d) = rx.recv().await {
            let kind = TupleKind::from_delivery(d.kind);
            let wanted = self
                .masks
                .filter
                .read()
                .map_or(true, |f| f.wants_removal(space, kind, &d.tuple));
            if !wanted {
                continue;
            }
            let cmd = Cmd::Tuple {
                space,
                kind,
                tuple: d.tuple,
                received: None,
            };
            match self.send(cmd) {
                Ok(()) => {}
                Err(RuntimeError::Busy) => {
                    self.removals_busy.fetch_add(1, Ordering::Relaxed);
                    debug!(space = space.index(), "agent thread busy: removal dropped");
                }
                Err(_) => return,
            }
        }
    }

    async fn run_actions(self, mut actions: mpsc::Receiver<Action>, spaces: Vec<SpaceHandle>) {
        while let Some(action) = actions.recv().await {
            let Some(h) = spaces.get(action.space().index()).cloned() else {
                warn!(
                    space = action.space().index(),
                    "no SpaceHandle for this space; action dropped"
                );
                continue;
            };
            let agent = action.agent();
            let failed = |what: &str, e: ClientError| {
                warn!(agent = %agent, error = %e, "agent {what} failed");
            };
            match action {
                Action::Out {
                    tuple, lifetime, ..
                } => {
                    if let Err(e) = h.out(tuple, lifetime).await {
                        failed("out", e);
                    }
                }
                Action::Notify { tuple, .. } => {
                    if let Err(e) = h.notify(tuple).await {
                        failed("notify", e);
                    }
                }
                Action::HostOut {
                    tuple, lifetime, ..
                } => {
                    if let Err(e) = h.host_out(tuple, lifetime).await {
                        failed("host.out", e);
                    }
                }
                Action::Host {
                    token,
                    query,
                    template,
                    ..
                } => {
                    let c = match query {
                        HostQuery::Rd => h
                            .host_rd(template)
                            .await
                            .map(|t| Completion::Tuple(t.map(|t| (t, None)))),
                        HostQuery::Inp => h
                            .host_inp(template)
                            .await
                            .map(|t| Completion::Tuple(t.map(|t| (t, None)))),
                        HostQuery::Count => h.host_count(template).await.map(Completion::Count),
                        HostQuery::Rm => h.host_rm(template).await.map(Completion::Count),
                        HostQuery::RdAll => h.host_rd_all(template).await.map(Completion::Tuples),
                        HostQuery::InpAll => h.host_inp_all(template).await.map(Completion::Tuples),
                    };
                    let c = c.unwrap_or_else(|e| Completion::Failed(e.to_string()));
                    let _ = self.complete(token, c);
                }
                Action::Request {
                    token,
                    op,
                    template,
                    timeout,
                    scope,
                    ..
                } => {
                    let rt = self.clone();
                    tokio::spawn(async move {
                        let r = match op {
                            RequestOp::Rd => h.rd_in(template, timeout, scope).await,
                            RequestOp::Inp => h.inp_in(template, timeout, scope).await,
                            RequestOp::Test => h.test_in(template, timeout, scope).await,
                        };
                        let c = match r {
                            Ok(answer) => Completion::Tuple(answer.map(|a| (a.tuple, a.received))),
                            Err(e) => Completion::Failed(e.to_string()),
                        };
                        let _ = rt.complete(token, c);
                    });
                }
            }
        }
        debug!("agent actions closed");
    }
}

/// The serve task's subscriptions to removals: one per space and arity that some rule wants.
#[derive(Default)]
struct Removals {
    subscriptions: BTreeMap<(usize, usize), AbortOnDrop>,
}

impl Removals {
    /// Brings the subscriptions in line with the latest published rules, then marks that
    /// publication applied.
    async fn follow(
        &mut self,
        rt: &AgentRuntime,
        spaces: &[SpaceHandle],
        published: &mut watch::Receiver<u64>,
    ) {
        // The filter is written before its publication is counted: reading the count first
        // means the filter read next is at least that new.
        let generation = *published.borrow_and_update();
        let wanted: BTreeSet<(usize, usize)> = match rt.masks.filter.read() {
            Ok(f) => (0..spaces.len())
                .flat_map(|i| {
                    f.removal_arities(SpaceId(i as u8))
                        .into_iter()
                        .map(move |n| (i, n))
                })
                .collect(),
            Err(_) => BTreeSet::new(),
        };
        self.subscriptions.retain(|key, _| wanted.contains(key));
        for (i, arity) in wanted {
            if self.subscriptions.contains_key(&(i, arity)) {
                continue;
            }
            let Ok(any) = Template::new(std::iter::repeat_n(Field::ANY, arity)) else {
                continue;
            };
            match spaces[i]
                .subscribe_to(any, DeliveryKinds::REMOVALS, REMOVAL_BUFFER)
                .await
            {
                Ok(rx) => {
                    let task = tokio::spawn(rt.clone().forward_removals(SpaceId(i as u8), rx));
                    self.subscriptions.insert((i, arity), AbortOnDrop(task));
                }
                Err(e) => warn!(space = i, error = %e, "could not subscribe to removals"),
            }
        }
        rt.masks.applied.send_modify(|a| *a = (*a).max(generation));
    }
}

/// [`Hooks`] for one space's node. A message that no agent rule can concern is decided at once
/// (no round trip); any other is handed to the agent thread and decided later
/// ([`Verdict::Later`]): the node keeps serving other frames meanwhile and applies the decision
/// when it comes, in arrival order, or its fail-closed default at its deadline.
#[derive(Debug)]
pub struct AgentHooks {
    space: SpaceId,
    tx: SyncSender<Cmd>,
    masks: Arc<Masks>,
    deadline: Duration,
    allow_on_timeout: bool,
    decisions: Option<DecisionSender>,
    refused_busy: Arc<AtomicU64>,
}

impl AgentHooks {
    /// Whether some agent rule may decide on `question` (else it proceeds at once).
    fn wanted(&self, question: &Question<'_>) -> bool {
        let Ok(f) = self.masks.filter.read() else {
            return true;
        };
        match question {
            Question::Out { tuple, .. } => f.wants_out(self.space, tuple),
            Question::Notify { tuple, .. } => f.wants_notify(self.space, tuple),
            Question::Request { .. } => f.wants_request(self.space),
            _ => true,
        }
    }

    /// The answer when the agent thread cannot take the question.
    fn fallback(&self, question: &Question<'_>) -> Decision {
        match question {
            Question::Request { .. } if !self.allow_on_timeout => Decision::Stop,
            _ => Decision::Proceed,
        }
    }
}

impl Hooks for AgentHooks {
    fn decide(&mut self, token: DecisionToken, question: &Question<'_>) -> Verdict {
        if !self.wanted(question) {
            return Verdict::Now(Decision::Proceed);
        }
        let asked = match *question {
            Question::Out {
                tuple,
                lifetime,
                received,
            } => Asked::Tuple {
                kind: TupleKind::Out,
                tuple: tuple.clone(),
                lifetime,
                received: *received,
            },
            Question::Notify { tuple, received } => Asked::Tuple {
                kind: TupleKind::Notify,
                tuple: tuple.clone(),
                lifetime: None,
                received: *received,
            },
            Question::Request {
                op,
                template,
                received,
            } => Asked::Request {
                op,
                template: template.clone(),
                received: *received,
            },
            _ => return Verdict::Now(Decision::Proceed),
        };
        let Some(reply) = self.decisions.clone() else {
            // Not run by a driver that routes late decisions: never block, fall back.
            return Verdict::Now(self.fallback(question));
        };
        let cmd = Cmd::Decide {
            space: self.space,
            asked,
            token,
            deadline: Instant::now() + self.deadline,
            reply,
        };
        match self.tx.try_send(cmd) {
            Ok(()) => Verdict::Later,
            Err(_) => {
                self.refused_busy.fetch_add(1, Ordering::Relaxed);
                Verdict::Now(self.fallback(question))
            }
        }
    }

    fn attach(&mut self, decisions: DecisionSender) {
        self.decisions = Some(decisions);
    }

    /// Tells the agent thread the space's settings and waits (at most 1 s) until it has taken
    /// them, so that the first message the node hears is judged with them.
    fn bind(&mut self, info: SpaceInfo) {
        let (ack, done) = std_mpsc::sync_channel(1);
        if self.tx.try_send(Cmd::Bind(self.space, info, ack)).is_err()
            || done.recv_timeout(Duration::from_secs(1)).is_err()
        {
            warn!(
                space = self.space.index(),
                "agent thread busy or stopped; space settings not taken"
            );
        }
    }
}

struct AgentThread {
    host: Engine,
    /// Questions not run (queued past their deadline) and handlers that finished too late.
    late: u64,
    late_actions: u64,
    epoch: Instant,
    actions: mpsc::Sender<Action>,
    events: mpsc::Sender<AgentEvent>,
    masks: Arc<Masks>,
}

impl AgentThread {
    fn now(&self) -> Time {
        Time::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn run(&mut self, rx: std_mpsc::Receiver<Cmd>) {
        self.publish();
        loop {
            let now = self.now();
            // Commands first (the nodes' questions have deadlines); timers one handler at a
            // time in between, so no agent's timers hold the thread for more than one call.
            let cmd = match self.host.poll_timeout() {
                Some(at) if at <= now => match rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => break,
                },
                Some(at) => match rx.recv_timeout(at.saturating_since(now)) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(c) => Some(c),
                    Err(_) => break,
                },
            };
            let now = self.now();
            let reply = match cmd {
                None => {
                    if self.host.poll_timeout().is_some_and(|t| t <= now) {
                        self.host.handle_timeout_step(now);
                    }
                    None
                }
                Some(Cmd::Shutdown) => break,
                Some(cmd) => self.command(now, cmd),
            };
            // Actions go out before a hook's answer, so they are queued when the node goes on.
            self.flush();
            if let Some((reply, token, decision)) = reply {
                reply.send(token, decision);
            }
        }
        debug!("agent thread stopped");
    }

    /// Runs a command; returns a hook's answer, to send after the flush.
    fn command(
        &mut self,
        now: Time,
        cmd: Cmd,
    ) -> Option<(DecisionSender, DecisionToken, Decision)> {
        match cmd {
            Cmd::Load {
                name,
                source,
                limits,
                reply,
            } => {
                let r = self.host.load(now, &name, &source, limits);
                if let Err(e) = &r {
                    warn!(agent = %name, error = %e, "agent did not load");
                }
                // Publish the rule masks before answering, so the hooks see the new rules as
                // soon as `load` returns.
                self.publish();
                let _ = reply.send(r);
            }
            Cmd::Unload(id, reply) => {
                let unloaded = self.host.unload(id);
                self.publish();
                let _ = reply.send(unloaded);
            }
            Cmd::Tuple {
                space,
                kind,
                tuple,
                received,
            } => {
                self.host
                    .on_tuple(now, space, kind, &tuple, None, received.as_ref());
            }
            Cmd::Decide {
                space,
                asked,
                token,
                deadline,
                reply,
            } => return self.decide(now, space, asked, token, deadline, reply),
            Cmd::Sensor(name, value) => self.host.on_sensor(now, &name, value),
            Cmd::Bind(space, info, ack) => {
                self.host.bind_space(space, info);
                // Whether active tuples are taken depends on the key: new masks for the hooks.
                self.publish();
                let _ = ack.try_send(());
            }
            Cmd::Complete(token, c) => self.host.complete(now, token, c),
            Cmd::Agents(r) => {
                let _ = r.send(self.host.agents());
            }
            Cmd::Stats(r) => {
                let mut stats = self.host.stats();
                stats.decisions_late = self.late;
                stats.late_actions_dropped = self.late_actions;
                let _ = r.send(stats);
            }
            Cmd::Shutdown => {}
        }
        None
    }

    /// Runs the agents on a node's question, unless its deadline has passed: then the node has
    /// applied its default already, and neither the decision nor the handlers' actions may take
    /// effect afterwards (a tuple both stored and forwarded late).
    fn decide(
        &mut self,
        now: Time,
        space: SpaceId,
        asked: Asked,
        token: DecisionToken,
        deadline: Instant,
        reply: DecisionSender,
    ) -> Option<(DecisionSender, DecisionToken, Decision)> {
        if Instant::now() >= deadline {
            self.late += 1;
            debug!(
                token = token.get(),
                "question reached the agents after its deadline; not run"
            );
            return None;
        }
        let proceed = match asked {
            Asked::Tuple {
                kind,
                tuple,
                lifetime,
                received,
            } => !self
                .host
                .on_tuple(now, space, kind, &tuple, lifetime, Some(&received)),
            Asked::Request {
                op,
                template,
                received,
            } => {
                let req = IncomingRequest {
                    op,
                    template: &template,
                    received,
                };
                self.host.allow_request(now, space, &req)
            }
        };
        if Instant::now() > deadline {
            // Too late: what the handlers queued for this question goes nowhere.
            self.late += 1;
            while self.host.poll_action().is_some() {
                self.late_actions += 1;
            }
            warn!(
                token = token.get(),
                "agents decided after the deadline; decision and actions dropped"
            );
            return None;
        }
        let decision = if proceed {
            Decision::Proceed
        } else {
            Decision::Stop
        };
        Some((reply, token, decision))
    }

    /// Publishes the rule filter the hooks and the serve task read.
    fn publish(&self) {
        let f = self.host.rule_filter();
        if let Ok(mut w) = self.masks.filter.write() {
            *w = f;
        }
        self.masks.published.send_modify(|g| *g += 1);
    }

    fn flush(&mut self) {
        while let Some(a) = self.host.poll_action() {
            if let Err(e) = self.actions.try_send(a) {
                warn!(error = %e, "agent action dropped (output queue full or closed)");
            }
        }
        let mut changed = false;
        while let Some(e) = self.host.poll_event() {
            match &e {
                AgentEvent::Loaded { name, from, .. } => {
                    info!(agent = %name, from = ?from, "agent loaded");
                    changed = true;
                }
                AgentEvent::Fault {
                    name, fault, count, ..
                } => warn!(agent = %name, count, "agent fault: {fault}"),
                AgentEvent::Disabled { name, faults, .. } => {
                    warn!(agent = %name, faults, "agent disabled");
                    changed = true;
                }
                AgentEvent::Log { name, message, .. } => info!(agent = %name, "{message}"),
                AgentEvent::ActiveRefused { name, reason, from } => {
                    warn!(agent = %name, from = ?from, "active tuple refused: {reason}");
                }
            }
            let _ = self.events.try_send(e);
        }
        if changed {
            self.publish();
        }
    }
}
