//! Agents in a supervised child process ([`Isolation::Process`](crate::Isolation::Process)).
//!
//! QuickJS polls its interrupt handler in the bytecode interpreter and a few natives only: a
//! long native call (`indexOf` on a large string, `sort` of a typed array, `JSON.stringify` of a
//! large array) cannot be interrupted, and a thread cannot be killed safely. So the agents run in
//! a **worker process** (the application's own executable, started with arguments that make it
//! call [`serve_stdio`]). The agent thread of the [`AgentRuntime`](crate::AgentRuntime) drives it
//! over its stdin/stdout with one request per host call; inside the worker a watchdog thread
//! sees every call into an agent armed with its budget, and when one has not returned at
//! `budget + grace` it reports the agent and ends the process: the kernel reclaims the CPU.
//! The supervisor then starts a fresh worker and loads every other agent again (their
//! JavaScript state starts over); the stuck agent is reported ([`FaultKind::Stuck`]) and
//! disabled.

use std::collections::VecDeque;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beets_core::node::{IncomingRequest, SpaceInfo};
use beets_core::{Op, PeerAddr, Received, Time, Transport, Tuple, Value};
use tracing::{debug, warn};

use crate::action::{Action, AgentEvent, AgentId, Completion, SpaceId, Token, TupleKind};
use crate::config::{HostConfig, Limits};
use crate::error::{AgentError, Fault, FaultKind};
use crate::host::{AgentHost, AgentInfo, HostStats, RuleFilter};
use crate::ipc::{R, W, read_frame, write_frame};
use crate::sandbox::{WATCHDOG, Watchdog};

/// How to start an agent worker process: a program that calls [`serve_stdio`] when given
/// `args` (typically the application's own executable, `std::env::current_exe()`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerCommand {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// How long past its budget a call into an agent may run before the watchdog ends the
    /// worker (default [`DEFAULT_GRACE`]). A stuck agent is stopped `budget + grace` (plus the
    /// scheduler's latency) after its call began.
    pub grace: Duration,
}

/// Default [`WorkerCommand::grace`]: 50 ms.
pub const DEFAULT_GRACE: Duration = Duration::from_millis(50);

impl WorkerCommand {
    /// `program args…` with the default grace.
    pub fn new(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> WorkerCommand {
        WorkerCommand {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            grace: DEFAULT_GRACE,
        }
    }
}

/// Longest the supervisor waits for any answer of the worker before it kills it (the worker's
/// own watchdog normally acts far sooner; this catches a worker that is wedged otherwise).
const BACKSTOP: Duration = Duration::from_secs(5);

// Request tags.
const INIT: u8 = 0;
const LOAD: u8 = 1;
const RESTORE: u8 = 2;
const UNLOAD: u8 = 3;
const TUPLE: u8 = 4;
const REQUEST: u8 = 5;
const SENSOR: u8 = 6;
const STEP: u8 = 7;
const COMPLETE: u8 = 8;
const BIND: u8 = 9;
const AGENTS: u8 = 10;
const STATS: u8 = 11;

// Answer tags.
const REPLY: u8 = 0;
const STUCK: u8 = 1;

/// The worker's main: serves the supervisor on stdin/stdout until stdin closes. Call it from the
/// program named in [`WorkerCommand`] and print nothing else on stdout.
///
/// # Errors
/// When stdin or stdout fail or the supervisor sends a malformed frame.
pub fn serve_stdio() -> io::Result<()> {
    let out: Arc<Mutex<Box<dyn Write + Send>>> =
        Arc::new(Mutex::new(Box::new(BufWriter::new(io::stdout()))));
    let mut input = BufReader::new(io::stdin().lock());
    let init = read_frame(&mut input)?;
    let mut r = R(&init);
    if r.u8()? != INIT {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "expected init"));
    }
    let config = r.host_config()?;
    let first_id = r.u32()?;
    let first_token = r.u64()?;
    let grace = r.dur()?;
    let report = Arc::clone(&out);
    let watchdog = Watchdog::start(grace, move |armed| {
        let mut w = W::default();
        w.u8(STUCK).u32(armed.agent).dur(armed.budget);
        if let Ok(mut out) = report.lock() {
            let _ = write_frame(&mut *out, &w.0);
        }
        // Ends every thread, the stuck one too; the kernel takes the CPU back.
        std::process::exit(3);
    })?;
    let _ = WATCHDOG.set(watchdog);
    let mut host = AgentHost::with_bases(config, first_id, first_token);
    let mut w = W::default();
    tail(&mut host, &mut w, true);
    send(&out, &w)?;
    loop {
        let frame = match read_frame(&mut input) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut r = R(&frame);
        let mut result = W::default();
        let mut changed = false;
        match r.u8()? {
            LOAD => {
                let now = r.time()?;
                let name = r.str()?;
                let source = r.str()?;
                let limits = r.opt_limits()?;
                let x = match limits {
                    Some(l) => host.load_with_limits(now, &name, &source, l),
                    None => host.load(now, &name, &source),
                };
                load_result(&mut result, x);
                changed = true;
            }
            RESTORE => {
                let now = r.time()?;
                let name = r.str()?;
                let source = r.str()?;
                let from = r.opt_peer()?;
                let version = r.u32()? as i16;
                load_result(
                    &mut result,
                    host.restore_active(now, &name, &source, from, version),
                );
                changed = true;
            }
            UNLOAD => {
                result.bool(host.unload(AgentId(r.u32()?)));
                changed = true;
            }
            TUPLE => {
                let now = r.time()?;
                let space = SpaceId(r.u8()?);
                let kind = TupleKind::from_index(r.u8()?).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "unknown tuple kind")
                })?;
                let tuple = r.tuple()?;
                let lifetime = r.opt_dur()?;
                let rx = r.opt_received()?;
                result.bool(host.on_tuple(now, space, kind, &tuple, lifetime, rx.as_ref()));
            }
            REQUEST => {
                let now = r.time()?;
                let space = SpaceId(r.u8()?);
                let op = match r.u8()? {
                    0 => Op::Rd,
                    1 => Op::Inp,
                    _ => Op::Test,
                };
                let template = r.template()?;
                let received = r.received()?;
                let req = IncomingRequest {
                    op,
                    template: &template,
                    received,
                };
                result.bool(host.allow_request(now, space, &req));
            }
            SENSOR => {
                let now = r.time()?;
                let name = r.str()?;
                let value = r.value()?;
                host.on_sensor(now, &name, value);
            }
            STEP => {
                let now = r.time()?;
                result.bool(host.handle_timeout_step(now));
            }
            COMPLETE => {
                let now = r.time()?;
                let token = Token(r.u64()?);
                let c = r.completion()?;
                host.complete(now, token, c);
            }
            BIND => {
                let space = SpaceId(r.u8()?);
                let transport = if r.u8()? == 0 {
                    Transport::Ble
                } else {
                    Transport::Udp
                };
                let keyed = r.bool()?;
                let sealed = r.bool()?;
                host.bind_parts(space, transport, keyed, sealed);
                changed = true;
            }
            AGENTS => {
                let a = host.agents();
                result.u32(a.len() as u32);
                for i in &a {
                    result.info(i);
                }
            }
            STATS => {
                result.stats(&host.stats());
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unknown request",
                ));
            }
        }
        let mut w = W::default();
        tail(&mut host, &mut w, changed);
        w.0.extend_from_slice(&result.0);
        send(&out, &w)?;
    }
}

fn send(out: &Mutex<Box<dyn Write + Send>>, w: &W) -> io::Result<()> {
    let mut out = out
        .lock()
        .map_err(|_| io::Error::other("stdout lock poisoned"))?;
    write_frame(&mut *out, &w.0)
}

fn load_result(w: &mut W, r: Result<AgentId, AgentError>) {
    match r {
        Ok(id) => w.u8(0).u32(id.0),
        Err(e) => w.u8(1).str(&e.to_string()),
    };
}

/// What every answer carries: the actions and events the call produced, the next timeout, the
/// rule filter when it may have changed, and the active agents started.
fn tail(host: &mut AgentHost, w: &mut W, mut changed: bool) {
    w.u8(REPLY);
    let actions: Vec<Action> = std::iter::from_fn(|| host.poll_action()).collect();
    w.u32(actions.len() as u32);
    for a in &actions {
        w.action(a);
    }
    let events: Vec<AgentEvent> = std::iter::from_fn(|| host.poll_event()).collect();
    w.u32(events.len() as u32);
    for e in &events {
        changed |= matches!(e, AgentEvent::Loaded { .. } | AgentEvent::Disabled { .. });
        w.event(e);
    }
    w.opt_time(host.poll_timeout());
    w.bool(changed);
    if changed {
        w.filter(&host.rule_filter());
    }
    let started = host.take_started();
    w.u32(started.len() as u32);
    for s in &started {
        w.str(&s.name)
            .str(&s.source)
            .opt_peer(s.from.as_ref())
            .u32(s.version as u16 as u32)
            .u32(s.id.0);
    }
}

/// An agent the supervisor loads again into a new worker.
#[derive(Debug, Clone)]
struct Reg {
    id: AgentId,
    name: String,
    source: String,
    limits: Option<Limits>,
    /// Active agent: sender and version.
    active: Option<(Option<PeerAddr>, i16)>,
}

/// The supervisor's view of the worker: the same calls as [`AgentHost`], each one request to
/// the worker process.
pub(crate) struct RemoteHost {
    command: WorkerCommand,
    config: HostConfig,
    child: Option<Child>,
    stdin: Option<BufWriter<ChildStdin>>,
    rx: Option<Receiver<io::Result<Vec<u8>>>>,
    actions: VecDeque<Action>,
    events: VecDeque<AgentEvent>,
    filter: RuleFilter,
    timeout: Option<Time>,
    registry: Vec<Reg>,
    bound: Vec<(SpaceId, SpaceInfo)>,
    generation: u32,
    stuck: u64,
    restarts: u64,
    crashes: VecDeque<Instant>,
    now: Time,
}

impl std::fmt::Debug for RemoteHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteHost")
            .field("command", &self.command)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl RemoteHost {
    /// Starts the first worker.
    pub(crate) fn start(command: WorkerCommand, config: HostConfig) -> io::Result<RemoteHost> {
        let mut h = RemoteHost {
            command,
            config,
            child: None,
            stdin: None,
            rx: None,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            filter: RuleFilter::default(),
            timeout: None,
            registry: Vec::new(),
            bound: Vec::new(),
            generation: 0,
            stuck: 0,
            restarts: 0,
            crashes: VecDeque::new(),
            now: Time::ZERO,
        };
        h.spawn()?;
        Ok(h)
    }

    fn spawn(&mut self) -> io::Result<()> {
        self.generation += 1;
        let mut child = Command::new(&self.command.program)
            .args(&self.command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("agent-worker-reader".into())
            .spawn(move || {
                let mut stdout = BufReader::new(stdout);
                loop {
                    let f = read_frame(&mut stdout);
                    let end = f.is_err();
                    if tx.send(f).is_err() || end {
                        return;
                    }
                }
            })?;
        self.child = Some(child);
        self.stdin = Some(BufWriter::new(stdin));
        self.rx = Some(rx);
        let mut w = W::default();
        w.u8(INIT)
            .host_config(&self.config)
            .u32(self.generation.wrapping_mul(1_000_000) + 1)
            .u64(u64::from(self.generation) << 40)
            .dur(self.command.grace);
        match self.exchange(&w.0) {
            Answer::Reply(_) => Ok(()),
            _ => Err(io::Error::other("agent worker did not start")),
        }
    }

    /// Sends one request and waits for its answer.
    fn exchange(&mut self, req: &[u8]) -> Answer {
        let (Some(stdin), Some(rx)) = (self.stdin.as_mut(), self.rx.as_ref()) else {
            return Answer::Died;
        };
        if write_frame(stdin, req).is_err() {
            return Answer::Died;
        }
        match rx.recv_timeout(BACKSTOP) {
            Ok(Ok(frame)) => match frame.first() {
                Some(&REPLY) => match self.take_tail(&frame[1..]) {
                    Ok(rest) => Answer::Reply(rest),
                    Err(_) => Answer::Died,
                },
                Some(&STUCK) => {
                    let mut r = R(&frame[1..]);
                    match (r.u32(), r.dur()) {
                        (Ok(a), Ok(b)) => Answer::Stuck(AgentId(a), b),
                        _ => Answer::Died,
                    }
                }
                _ => Answer::Died,
            },
            Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => Answer::Died,
            Err(RecvTimeoutError::Timeout) => Answer::Died,
        }
    }

    /// Takes the common part of an answer; returns the call's own result bytes.
    fn take_tail(&mut self, bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut r = R(bytes);
        for _ in 0..r.u32()? {
            self.actions.push_back(r.action()?);
        }
        for _ in 0..r.u32()? {
            let e = r.event()?;
            if let AgentEvent::Disabled { agent, .. } = &e {
                self.registry.retain(|g| g.id != *agent);
            }
            self.events.push_back(e);
        }
        self.timeout = r.opt_time()?;
        if r.bool()? {
            self.filter = r.filter()?;
        }
        for _ in 0..r.u32()? {
            let name = r.str()?;
            let source = r.str()?;
            let from = r.opt_peer()?;
            let version = r.u32()? as u16 as i16;
            let id = AgentId(r.u32()?);
            self.registry.retain(|g| g.name != name);
            self.registry.push(Reg {
                id,
                name,
                source,
                limits: None,
                active: Some((from, version)),
            });
        }
        Ok(r.0.to_vec())
    }

    /// One call: its result bytes, or `None` when the worker had to be replaced (the caller
    /// applies its fail-closed default).
    fn call(&mut self, req: &W) -> Option<Vec<u8>> {
        match self.exchange(&req.0) {
            Answer::Reply(rest) => Some(rest),
            Answer::Stuck(agent, budget) => {
                self.stopped_stuck(agent, budget);
                self.restart();
                None
            }
            Answer::Died => {
                warn!("agent worker died or stopped answering; starting a new one");
                self.crashes.push_back(Instant::now());
                while self
                    .crashes
                    .front()
                    .is_some_and(|t| t.elapsed() > Duration::from_secs(10))
                {
                    self.crashes.pop_front();
                }
                if self.crashes.len() >= 3 {
                    // Something kills every worker: start without agents rather than loop.
                    for g in std::mem::take(&mut self.registry) {
                        self.events.push_back(AgentEvent::Disabled {
                            agent: g.id,
                            name: g.name,
                            faults: 0,
                        });
                    }
                }
                self.restart();
                None
            }
        }
    }

    fn stopped_stuck(&mut self, agent: AgentId, budget: Duration) {
        self.stuck += 1;
        let name = self
            .registry
            .iter()
            .find(|g| g.id == agent)
            .map_or_else(|| format!("agent {agent}"), |g| g.name.clone());
        self.registry.retain(|g| g.id != agent);
        let message = format!(
            "did not return within its budget of {budget:?} + {:?} grace (stuck in native code); \
             its worker process was killed and started again without it",
            self.command.grace
        );
        warn!(agent = %name, "{message}");
        self.events.push_back(AgentEvent::Fault {
            agent,
            name: name.clone(),
            fault: Fault {
                kind: FaultKind::Stuck,
                during: "a call".into(),
                message,
            },
            count: 1,
        });
        self.events.push_back(AgentEvent::Disabled {
            agent,
            name,
            faults: 1,
        });
    }

    /// Kills the worker and starts a new one with every registered agent.
    fn restart(&mut self) {
        self.kill();
        self.restarts += 1;
        self.filter = RuleFilter::default();
        self.timeout = None;
        if let Err(e) = self.spawn() {
            warn!(error = %e, "could not start a new agent worker; agents stopped");
            self.registry.clear();
            return;
        }
        for (space, info) in self.bound.clone() {
            let mut w = W::default();
            w.u8(BIND)
                .u8(space.0)
                .u8(u8::from(info.transport == Transport::Udp))
                .bool(info.keyed)
                .bool(info.sealed);
            if self.call(&w).is_none() {
                return;
            }
        }
        let agents = std::mem::take(&mut self.registry);
        for mut g in agents {
            let mut w = W::default();
            match g.active {
                None => w
                    .u8(LOAD)
                    .time(self.now)
                    .str(&g.name)
                    .str(&g.source)
                    .opt_limits(g.limits.as_ref()),
                Some((from, version)) => w
                    .u8(RESTORE)
                    .time(self.now)
                    .str(&g.name)
                    .str(&g.source)
                    .opt_peer(from.as_ref())
                    .u32(version as u16 as u32),
            };
            // A reload that gets stuck restarts again (recursively) without it.
            let Some(rest) = self.call(&w) else { return };
            if let Ok(id) = read_load(&rest) {
                g.id = id;
                if g.active.is_some() {
                    // The worker lists it as started: keep one entry.
                    self.registry.retain(|r| r.name != g.name);
                }
                self.registry.push(g);
            }
        }
        debug!(generation = self.generation, "agent worker restarted");
    }

    fn kill(&mut self) {
        self.stdin = None;
        self.rx = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn load(
        &mut self,
        now: Time,
        name: &str,
        source: &str,
        limits: Option<Limits>,
    ) -> Result<AgentId, AgentError> {
        self.now = now;
        let mut w = W::default();
        w.u8(LOAD)
            .time(now)
            .str(name)
            .str(source)
            .opt_limits(limits.as_ref());
        let rest = self.call(&w).ok_or_else(|| {
            AgentError::Worker("the agent's load was stopped by the watchdog".into())
        })?;
        let id = read_load(&rest)?;
        self.registry.retain(|g| g.name != name);
        self.registry.push(Reg {
            id,
            name: name.to_owned(),
            source: source.to_owned(),
            limits,
            active: None,
        });
        Ok(id)
    }

    pub(crate) fn unload(&mut self, id: AgentId) -> bool {
        let mut w = W::default();
        w.u8(UNLOAD).u32(id.0);
        let done = self.call(&w).is_some_and(|r| R(&r).bool().unwrap_or(false));
        self.registry.retain(|g| g.id != id);
        done
    }

    pub(crate) fn on_tuple(
        &mut self,
        now: Time,
        space: SpaceId,
        kind: TupleKind,
        tuple: &Tuple,
        lifetime: Option<Duration>,
        received: Option<&Received>,
    ) -> bool {
        self.now = now;
        let mut w = W::default();
        w.u8(TUPLE)
            .time(now)
            .u8(space.0)
            .u8(kind as u8)
            .tuple(tuple)
            .opt_dur(lifetime)
            .opt_received(received);
        self.call(&w).is_some_and(|r| R(&r).bool().unwrap_or(false))
    }

    pub(crate) fn allow_request(
        &mut self,
        now: Time,
        space: SpaceId,
        req: &IncomingRequest<'_>,
    ) -> bool {
        self.now = now;
        let op = match req.op {
            Op::Rd => 0,
            Op::Inp => 1,
            Op::Test => 2,
            _ => return true,
        };
        let mut w = W::default();
        w.u8(REQUEST)
            .time(now)
            .u8(space.0)
            .u8(op)
            .template(req.template)
            .received(&req.received);
        // A worker replaced during the call refuses: fail closed.
        self.call(&w).is_some_and(|r| R(&r).bool().unwrap_or(false))
    }

    pub(crate) fn on_sensor(&mut self, now: Time, name: &str, value: Value) {
        self.now = now;
        let mut w = W::default();
        w.u8(SENSOR).time(now).str(name).value(&value);
        let _ = self.call(&w);
    }

    pub(crate) fn handle_timeout_step(&mut self, now: Time) -> bool {
        self.now = now;
        let mut w = W::default();
        w.u8(STEP).time(now);
        // A replaced worker has new timers: report progress so the caller looks again.
        self.call(&w).is_none_or(|r| R(&r).bool().unwrap_or(false))
    }

    pub(crate) fn poll_timeout(&self) -> Option<Time> {
        self.timeout
    }

    pub(crate) fn complete(&mut self, now: Time, token: Token, c: Completion) {
        self.now = now;
        let mut w = W::default();
        w.u8(COMPLETE).time(now).u64(token.0).completion(&c);
        let _ = self.call(&w);
    }

    pub(crate) fn bind_space(&mut self, space: SpaceId, info: SpaceInfo) {
        self.bound.retain(|(s, _)| *s != space);
        self.bound.push((space, info));
        if let Some(spec) = self.config.spaces.get_mut(space.index()) {
            spec.keyed = info.keyed;
            spec.sealed = info.sealed;
            spec.max_message_len = info.transport.max_message_len();
        }
        let mut w = W::default();
        w.u8(BIND)
            .u8(space.0)
            .u8(u8::from(info.transport == Transport::Udp))
            .bool(info.keyed)
            .bool(info.sealed);
        let _ = self.call(&w);
    }

    pub(crate) fn agents(&mut self) -> Vec<AgentInfo> {
        let mut w = W::default();
        w.u8(AGENTS);
        let Some(rest) = self.call(&w) else {
            return Vec::new();
        };
        let mut r = R(&rest);
        let n = r.u32().unwrap_or(0);
        (0..n).map_while(|_| r.info().ok()).collect()
    }

    pub(crate) fn stats(&mut self) -> HostStats {
        let mut w = W::default();
        w.u8(STATS);
        let mut s = self
            .call(&w)
            .and_then(|r| R(&r).stats().ok())
            .unwrap_or_default();
        s.stuck = self.stuck;
        s.worker_restarts = self.restarts;
        s
    }

    pub(crate) fn rule_filter(&self) -> RuleFilter {
        self.filter.clone()
    }

    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub(crate) fn poll_event(&mut self) -> Option<AgentEvent> {
        self.events.pop_front()
    }
}

impl Drop for RemoteHost {
    fn drop(&mut self) {
        self.kill();
    }
}

enum Answer {
    Reply(Vec<u8>),
    Stuck(AgentId, Duration),
    Died,
}

fn read_load(rest: &[u8]) -> Result<AgentId, AgentError> {
    let mut r = R(rest);
    let bad = |_| AgentError::Worker("malformed answer of the agent worker".into());
    match r.u8().map_err(bad)? {
        0 => Ok(AgentId(r.u32().map_err(bad)?)),
        _ => Err(AgentError::Worker(r.str().map_err(bad)?)),
    }
}
