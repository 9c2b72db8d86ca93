//! BeeTS agents: small sandboxed JavaScript programs that filter incoming requests, react to
//! tuples, sensors and timers, and route tuples between the BLE space and the UDP space
//! (paper §6).
//!
//! Agents run on [QuickJS](https://github.com/quickjs-ng/quickjs) through `rquickjs`, each in its
//! own runtime with a memory limit, a stack limit and a CPU budget per event, so a node can load
//! agent code from a file — or receive it in a tuple — and survive whatever the code does.
//!
//! ```text
//!      ┌──────────── AgentHost (sans-IO) ─────────────┐
//!      │ agent "filter"  agent "router"  agent …       │   one QuickJS runtime per agent
//!      │   rules: ts / request / sensor / timer        │
//!      └──┬───────────────▲──────────────────┬─────────┘
//!  on_tuple / allow_request / on_sensor     poll_action ──▶ out/notify/rd/… on named spaces
//!  handle_timeout / complete(reply)         poll_event  ──▶ faults, logs
//! ```
//!
//! [`AgentHost`] is the engine: synchronous, no I/O, no clock, in the manner of
//! `beets_core::Node`. [`AgentRuntime`] runs it on a dedicated thread, gives each node
//! [`AgentHooks`] (the node consults agents before storing an OUT and before answering an RD,
//! INP or TEST — without waiting for them: the decision comes back later, or the node's
//! fail-closed default applies at its deadline) and performs the agents' actions on
//! `SpaceHandle`s.
//!
//! ```rust,no_run
//! use beets_agents::{AgentRuntime, HostConfig, Router, RuntimeConfig, SpaceSpec};
//! use beets_core::driver::SpaceHandle;
//! use beets_core::{Node, Transport};
//!
//! # async fn wire(
//! #     mut ble: Node,
//! #     mut udp: Node,
//! #     spawn_backend: impl Fn(Node) -> SpaceHandle,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! let spaces = [
//!     SpaceSpec::new("ble-ts", Transport::Ble),
//!     SpaceSpec::new("udp-ts", Transport::Udp).keyed(true),
//! ];
//! let (agents, out) = AgentRuntime::spawn(HostConfig::new(spaces), RuntimeConfig::default())?;
//! ble.set_hooks(Box::new(agents.hooks("ble-ts")?));
//! udp.set_hooks(Box::new(agents.hooks("udp-ts")?));
//! // Run each node on its backend (beets-ble, beets-udp) to get its SpaceHandle.
//! let (ble_space, udp_space) = (spawn_backend(ble), spawn_backend(udp));
//! tokio::spawn(agents.serve(out.actions, [("ble-ts", ble_space), ("udp-ts", udp_space)])?);
//! agents.load("router", &Router::ble_udp().source()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What this crate does not do
//! - It gives agents no filesystem, no network, no timers of their own, no module loader
//!   (`import()` rejects), no `std`/`os`/`require`/`fetch`: only the API below. `eval` exists
//!   but only evaluates code inside the agent's own sandbox.
//! - It does not isolate agents from each other's *timing*: agents share one thread (or one
//!   worker process), so a busy agent delays the others by up to its budget.
//! - On a thread ([`Isolation::Thread`], the default) the CPU budget stops JavaScript code but not
//!   a long native call (`indexOf` on a huge string, a typed-array `sort`, `JSON.stringify`).
//!   [`Isolation::Process`] runs the agents in a supervised worker process whose watchdog ends it
//!   when a call overruns its budget plus a grace; the stuck agent is disabled
//!   ([`FaultKind::Stuck`]) and the others are loaded again into a new worker (see [`worker`]).
//!
//! # Agents
//! An agent's source is a script whose value is the agent object: its own state (any
//! properties) and `rules`. Handlers run with `this` bound to the agent object.
//!
//! ```js
//! ({
//!   refused: 0,
//!   init() { log("filter up"); },            // optional, runs once at load
//!   rules: [
//!     // Consulted before this node answers an RD/INP/TEST: return false to refuse.
//!     { request: "*", space: "ble-ts",
//!       handler(template, ev) { if (ev.from === "AA:BB:CC:DD:EE:FF") { this.refused++; return false; } } },
//!     // Incoming OUTs (kind "out") and notifications (kind "notify") matching a template:
//!     // return true to consume an OUT (it is then not stored).
//!     { ts: '("SENSOR", "LIGHT", ?, ?)', space: "ble-ts", kind: "out",
//!       cond(t, ev) { return ev.rssi > -80; },
//!       handler(t, ev) { spaces["udp-ts"].out(t); return true; } },
//!     // Tuples that left the local space: taken by an inp, removed by rm, or expired.
//!     { ts: '("JOB", ?)', kind: ["inp", "rm", "expired"],
//!       handler(t, ev) { log(`job ${t[1]} gone: ${ev.kind}`); } },
//!     { sensor: "light", cond(v, prev) { return v !== prev; },
//!       handler(v, prev, ev) { spaces["ble-ts"].out(["SENSOR", "LIGHT", v, ev.time & 0x7fff]); } },
//!     { timer: 5000, once: false, handler(now) { host.rm(["SENSOR", ANY, ANY, ANY]); } },
//!   ],
//! })
//! ```
//!
//! | rule | fires on | `cond` / `handler` arguments | handler result |
//! |---|---|---|---|
//! | `ts: template`, `space?`, `kind?` (`"out"`, `"notify"`, `"any"`: both, the default) | a matching incoming tuple | `(tuple, {space, kind, from, time, rssi, lifetime})` | `true` consumes an OUT |
//! | `ts: template`, `space?`, `kind:` `"inp"` / `"rm"` / `"expired"` / `"evicted"` / `"removed"` (all four) | a matching tuple leaving the local space: taken by an `inp` (local, `host.inp`/`inpAll`, or a remote INP this node answered), removed by `host.rm` or a cancelled lease, expired, evicted from a full space | `(tuple, {space, kind, from: null, time: null, rssi: null, lifetime: null})`, `kind` saying which | — (the tuple is gone; every matching rule runs) |
//! | `request: "rd"` / `"inp"` / `"test"` / `"*"` / array, `space?` | an RD/INP/TEST the local space could answer | `(template, {space, op, from, time, rssi})` | `false` refuses it |
//! | `sensor: name` | every reading of that sensor | `(value, previous, {sensor, time})` | — |
//! | `timer: ms`, `once?` | every `ms` (once if `once: true`), first `ms` after load | `(now)` | — |
//!
//! `kind` may also be an array of names (`["out", "expired"]`). Removals reach the agents
//! through [`AgentRuntime::serve`], which subscribes to them for as long as some rule wants them
//! (see there), after the fact and in the order the space reports them; an agent's own
//! `host.inp`, `host.rm` and `host.inpAll` are reported too.
//!
//! `space` is a space name or an array of names; without it a rule applies to every space.
//! `cond` is optional; the handler runs when it returns a truthy value. Rules run in order, and
//! agents in load order; the first `ts` handler that consumes ends the dispatch, as does the
//! first request handler that refuses. `from` is the sender's address as text (`"AA:BB:…"` for
//! BLE, `"ip:port"` for UDP), `time` the receive time in the node's milliseconds, `rssi` in dBm
//! or `null`. A `ts` or request decision must be returned synchronously (an `async` handler
//! returns a promise, which neither consumes nor refuses).
//!
//! # JavaScript API
//! See the [`api`] table: `spaces[name].out/notify/rd/inp/test`, `spaces[name].host.*` (local
//! space only), `host` (the first space's), `sensor(name)`, `time()`, `log(...)`,
//! `float32(x)`, and the formals `ANY`, `INT16`, `FLOAT32`, `STR`. Requests return promises that
//! resolve with `{tuple, from, time, rssi}` or with `null` at their timeout (or pass the same
//! value to a callback); every API object is frozen.
//!
//! Values map as described in [`convert`]: int16 ↔ number, float32 ↔ number (or a `Number`
//! object when the plain number would read back as int16), string ↔ string, bytes ↔
//! `Uint8Array`; tuples are arrays; a JavaScript number is classified by
//! [`Value::number`](beets_core::Value::number).
//!
//! # Limits and faults
//! | limit | default | on overrun |
//! |---|---|---|
//! | [`Limits::memory`] | 4 MiB per agent | `InternalError: out of memory` → [`FaultKind::Memory`] |
//! | [`Limits::stack`] | 256 KiB | `RangeError` → [`FaultKind::Stack`] |
//! | [`Limits::event_budget`] | 10 ms per event per agent (re-armed for every event) | interrupted → [`FaultKind::Budget`] |
//! | [`Limits::cpu_share`] | 500 ms per [`Limits::share_window`] (1 s) per agent | throttled for the window → [`FaultKind::Share`] |
//! | [`Limits::max_logs_per_window`] | 32 lines per window per agent | dropped, counted |
//! | [`WorkerCommand::grace`] (process isolation) | 50 ms past the budget | worker killed and restarted without the agent → [`FaultKind::Stuck`] |
//! | [`Limits::load_budget`] | 100 ms for the source and `init` | load fails |
//! | [`Limits::max_faults`] | 3 | agent disabled, runtime freed ([`AgentEvent::Disabled`]) |
//! | [`Limits::max_actions_per_event`] | 32 | `RangeError` in the agent |
//! | [`Limits::max_pending`] | 32 requests | `RangeError` in the agent |
//! | [`Limits::max_jobs_per_event`] | 1000 promise jobs | [`FaultKind::RunawayJobs`] |
//!
//! Every fault — an exception, a budget or memory overrun, an unhandled rejection — is reported
//! as [`AgentEvent::Fault`] with the agent's name; the event then has no effect (no consumption,
//! the request is refused, the actions it queued are dropped) and the node carries on.
//!
//! # Active tuples
//! Agent source can travel in a tuple `("AGENT", name, source)` over a keyed UDP space and is
//! started on receipt only when [`ActivePolicy::enabled`] (off by default); see [`active`] for
//! the checks and the code length limit (1192 bytes).
#![forbid(unsafe_code)]

mod action;
pub mod active;
mod agent;
pub mod api;
mod config;
pub mod convert;
mod error;
mod host;
mod ipc;
pub mod router;
mod rules;
mod runtime;
mod sandbox;
pub mod worker;

pub use action::{
    Action, AgentEvent, AgentId, Completion, HostQuery, RequestOp, SpaceId, Token, TupleKind,
};
pub use api::{DEFAULT_REQUEST_TIMEOUT, HOST_QUERY_TIMEOUT, REQUEST_GRACE};
pub use config::{
    ActivePolicy, DEFAULT_CPU_SHARE, DEFAULT_EVENT_BUDGET, DEFAULT_LOAD_BUDGET, DEFAULT_MAX_FAULTS,
    DEFAULT_MAX_SOURCE_LEN, DEFAULT_MEMORY_LIMIT, DEFAULT_SHARE_WINDOW, DEFAULT_STACK_LIMIT,
    HostConfig, Limits, Protection, SpaceSpec,
};
pub use error::{AgentError, Fault, FaultKind};
pub use host::{ACTIVE_PREFIX, AgentHost, AgentInfo, HostStats, MAX_AGENT_NAME_LEN, RuleFilter};
pub use router::{Route, Router};
pub use runtime::{AgentHooks, AgentOutputs, AgentRuntime, Isolation, RuntimeConfig, RuntimeError};
pub use worker::{WorkerCommand, serve_stdio};
