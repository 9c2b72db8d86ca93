//! The JavaScript API an agent sees (installed into a fresh context before its code runs).
//!
//! | global | what |
//! |---|---|
//! | `spaces[name].out(tuple, lifetimeSec?)` | broadcast an OUT on that space |
//! | `spaces[name].notify(tuple)` | broadcast a notification (TUPLE, R = 0) |
//! | `spaces[name].rd(template, timeoutMs?, callback?)` | remote read → `Promise` of `{tuple, from, time, rssi}` or `null` at the timeout (default 1000 ms); `callback` gets the same value |
//! | `spaces[name].rd(template, {timeout, wait, scope}, callback?)` | the same with options: `timeout` in ms, or `wait` in seconds (the timeout then; over the network the request carries it as its wait, spec §11, so a node that stores a match meanwhile answers); `scope` `"network"` (default), `"local"` (this node's space: at once, or the first match stored before the timeout; `from`, `time`, `rssi` are `null`) or `"both"` (local first, then the network; the first answer wins) |
//! | `spaces[name].inp(…)`, `spaces[name].test(…)` | as `rd`, take / test (a local `inp` takes atomically) |
//! | `spaces[name].host.out(tuple, lifetimeSec?)` | store in the local space only |
//! | `spaces[name].host.rd(template, callback?)`, `.inp(…)` | local read / take → `Promise` of the tuple or `null` |
//! | `spaces[name].host.count(template, callback?)`, `.rm(…)` | local count / remove all → `Promise` of a number |
//! | `spaces[name].host.rdAll(template, callback?)`, `.inpAll(…)` | every local match, oldest first (`inpAll` takes them all at once) → `Promise` of an array of tuples (empty when none) |
//! | `spaces[name].name` | the space's name |
//! | `host` | `spaces[<first space>].host` |
//! | `sensor(name)` | the sensor's current value, `null` if never set |
//! | `time()` | the host's current time in ms |
//! | `log(...args)` | one log line (arguments converted with `String`) |
//! | `float32(x)` | `x` typed as float32 (a `Number` object) |
//! | `ANY`, `INT16`, `FLOAT32`, `STR` | formal symbols for templates |
//!
//! Removal events are rules, not calls: a `ts` rule with `kind` `"inp"`, `"rm"`, `"expired"`,
//! `"evicted"` or `"removed"` hears tuples leaving the local space, `ev.kind` saying how (see the
//! rule table in the [crate docs](crate)).
//!
//! Every global and every API object is read-only and frozen. Operations are checked at once:
//! a malformed tuple or template throws `TypeError`, a message too long for the space's
//! transport, too many operations in one event or too many pending requests throw `RangeError`.

use std::cell::{Cell, Ref, RefCell};
use std::collections::HashMap;
use std::num::NonZeroU16;
use std::rc::Rc;
use std::time::Duration;

use beets_core::node::Scope;
use beets_core::{Op, Template, Time, Tuple, Value};
use rquickjs::function::{Opt, Rest, This};
use rquickjs::object::Property;
use rquickjs::{Coerced, Ctx, Function, Object, Persistent, Promise};

use crate::action::{Action, AgentId, HostQuery, RequestOp, SpaceId, Token};
use crate::config::{Limits, SpaceSpec};
use crate::convert::{
    Statics, range_error, template_from_js, tuple_from_js, type_error, value_to_js,
};

type JsValue<'js> = rquickjs::Value<'js>;

/// Timeout of a remote request when the agent gives none.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long after its timeout the host itself resolves a remote request with `null` when the
/// caller never completed it.
pub const REQUEST_GRACE: Duration = Duration::from_millis(100);

/// How long the host waits for a `host.*` query to be completed before resolving it with `null`
/// (or 0).
pub const HOST_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// State shared by every agent of a host.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) spaces: Vec<SpaceSpec>,
    pub(crate) sensors: RefCell<HashMap<String, Value>>,
    pub(crate) next_token: Cell<u64>,
}

impl Shared {
    pub(crate) fn new(spaces: Vec<SpaceSpec>) -> Shared {
        Shared {
            spaces,
            sensors: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
        }
    }

    fn token(&self) -> Token {
        let t = self.next_token.get();
        self.next_token.set(t + 1);
        Token(t)
    }
}

/// What a pending promise resolves with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `{tuple, from, time, rssi}` or null.
    Reply,
    /// The tuple array or null.
    Tuple,
    /// A number.
    Count,
    /// An array of tuple arrays (empty when nothing matched or the query failed).
    Tuples,
}

pub(crate) struct Pending {
    pub(crate) resolve: Persistent<Function<'static>>,
    pub(crate) deadline: Time,
    pub(crate) shape: Shape,
}

/// The per-event side of an agent: what its natives collected.
pub(crate) struct Io {
    pub(crate) agent: AgentId,
    pub(crate) limits: Limits,
    pub(crate) now: Time,
    pub(crate) actions: Vec<Action>,
    pub(crate) actions_in_event: usize,
    pub(crate) logs: Vec<String>,
    pub(crate) logs_in_event: usize,
    pub(crate) logs_dropped: usize,
    pub(crate) pending: HashMap<Token, Pending>,
    pub(crate) rejections: Vec<String>,
}

impl Io {
    fn admit(&mut self, ctx: &Ctx<'_>) -> rquickjs::Result<()> {
        if self.actions_in_event >= self.limits.max_actions_per_event {
            return Err(range_error(
                ctx,
                &format!(
                    "more than {} space operations in one event (Limits::max_actions_per_event)",
                    self.limits.max_actions_per_event
                ),
            ));
        }
        self.actions_in_event += 1;
        Ok(())
    }

    fn admit_request(&mut self, ctx: &Ctx<'_>) -> rquickjs::Result<()> {
        if self.pending.len() >= self.limits.max_pending {
            return Err(range_error(
                ctx,
                &format!(
                    "{} requests are already pending (Limits::max_pending)",
                    self.limits.max_pending
                ),
            ));
        }
        self.admit(ctx)
    }
}

/// Everything the natives of one agent reach. Holds the only Rust-side references into the
/// agent's heap; [`AgentCell::clear`] drops them before the runtime is freed.
pub(crate) struct AgentCell {
    pub(crate) io: RefCell<Io>,
    statics: RefCell<Option<Statics>>,
}

impl AgentCell {
    pub(crate) fn new(io: Io) -> AgentCell {
        AgentCell {
            io: RefCell::new(io),
            statics: RefCell::new(None),
        }
    }

    pub(crate) fn set_statics(&self, s: Statics) {
        *self.statics.borrow_mut() = Some(s);
    }

    pub(crate) fn statics<'a>(&'a self, ctx: &Ctx<'_>) -> rquickjs::Result<Ref<'a, Statics>> {
        Ref::filter_map(self.statics.borrow(), Option::as_ref)
            .map_err(|_| type_error(ctx, "agent is shutting down"))
    }

    /// Drops every persistent JavaScript value held from Rust.
    pub(crate) fn clear(&self) {
        self.statics.borrow_mut().take();
        let mut io = self.io.borrow_mut();
        io.pending.clear();
        io.rejections.clear();
    }
}

/// Checks that a message of `len` bytes (spec §4: control byte and body) fits the space.
fn check_fits(ctx: &Ctx<'_>, spec: &SpaceSpec, op: Op, len: usize) -> rquickjs::Result<()> {
    if len > spec.max_message_len {
        return Err(range_error(
            ctx,
            &format!(
                "{op} message needs {len} bytes, space {:?} carries at most {}",
                spec.name, spec.max_message_len
            ),
        ));
    }
    Ok(())
}

/// A lifetime in seconds (1..=65535), or none for `undefined`/`null`.
fn lifetime(ctx: &Ctx<'_>, v: Option<JsValue<'_>>) -> rquickjs::Result<Option<NonZeroU16>> {
    let Some(v) = v.filter(|v| !v.is_undefined() && !v.is_null()) else {
        return Ok(None);
    };
    let secs = v.as_number().unwrap_or(f64::NAN);
    if !(1.0..=65535.0).contains(&secs) {
        return Err(range_error(
            ctx,
            "a lifetime is a number of seconds in 1..=65535 (spec §4)",
        ));
    }
    Ok(NonZeroU16::new(secs.ceil() as u16))
}

/// `(timeout, callback)` from the optional arguments of a request.
fn timeout_and_callback<'js>(
    ctx: &Ctx<'js>,
    limits: &Limits,
    a: Option<JsValue<'js>>,
    b: Option<JsValue<'js>>,
) -> rquickjs::Result<(Duration, Option<JsValue<'js>>)> {
    let (t, cb) = match a {
        Some(f) if f.is_function() => (None, Some(f)),
        other => (other, b),
    };
    let timeout = match t.filter(|v| !v.is_undefined() && !v.is_null()) {
        None => DEFAULT_REQUEST_TIMEOUT,
        Some(v) => {
            let ms = v.as_number().unwrap_or(f64::NAN);
            if ms.is_nan() || ms < 0.0 {
                return Err(range_error(
                    ctx,
                    "a timeout is a number of milliseconds ≥ 0",
                ));
            }
            Duration::from_millis(ms.min(u64::MAX as f64) as u64).min(limits.max_timeout)
        }
    };
    let cb = cb.filter(|v| !v.is_undefined() && !v.is_null());
    if let Some(cb) = &cb
        && !cb.is_function()
    {
        return Err(type_error(ctx, "a callback must be a function"));
    }
    Ok((timeout, cb))
}

/// The options of `rd`/`inp`/`test`: a timeout in ms, or `{timeout, wait, scope}`, then an
/// optional callback (or the callback alone).
fn request_options<'js>(
    ctx: &Ctx<'js>,
    limits: &Limits,
    a: Option<JsValue<'js>>,
    b: Option<JsValue<'js>>,
) -> rquickjs::Result<(Duration, Scope, Option<JsValue<'js>>)> {
    let Some(opts) = a
        .as_ref()
        .and_then(|v| v.as_object())
        .filter(|o| !o.is_function() && !o.is_array())
        .cloned()
    else {
        let (timeout, cb) = timeout_and_callback(ctx, limits, a, b)?;
        return Ok((timeout, Scope::Network, cb));
    };
    let get = |k: &str| -> rquickjs::Result<Option<JsValue<'js>>> {
        let v: JsValue = opts.get(k)?;
        Ok((!v.is_undefined() && !v.is_null()).then_some(v))
    };
    let (timeout_ms, wait_s) = (get("timeout")?, get("wait")?);
    let timeout = match (timeout_ms, wait_s) {
        (Some(_), Some(_)) => {
            return Err(type_error(ctx, "give timeout (ms) or wait (s), not both"));
        }
        (None, Some(w)) => {
            let s = w.as_number().unwrap_or(f64::NAN);
            if s.is_nan() || s < 0.0 {
                return Err(range_error(ctx, "a wait is a number of seconds ≥ 0"));
            }
            Duration::from_secs_f64(s.min(limits.max_timeout.as_secs_f64())).min(limits.max_timeout)
        }
        (t, None) => timeout_and_callback(ctx, limits, t, None)?.0,
    };
    let scope = match get("scope")? {
        None => Scope::Network,
        Some(v) => match v.as_string().map(|s| s.to_string()).transpose()?.as_deref() {
            Some("network") => Scope::Network,
            Some("local") => Scope::Local,
            Some("both") => Scope::Both,
            _ => {
                return Err(type_error(
                    ctx,
                    "scope is \"network\", \"local\" or \"both\"",
                ));
            }
        },
    };
    let (_, cb) = timeout_and_callback(ctx, limits, None, b)?;
    Ok((timeout, scope, cb))
}

/// Creates the promise of a request and registers it; `make` builds the action.
fn start_request<'js>(
    ctx: &Ctx<'js>,
    cell: &AgentCell,
    shared: &Shared,
    shape: Shape,
    wait: Duration,
    callback: Option<JsValue<'js>>,
    make: impl FnOnce(AgentId, Token) -> Action,
) -> rquickjs::Result<Promise<'js>> {
    let (promise, resolve, _reject) = ctx.promise()?;
    {
        let mut io = cell.io.borrow_mut();
        io.admit_request(ctx)?;
        let token = shared.token();
        let deadline = io.now + wait;
        io.pending.insert(
            token,
            Pending {
                resolve: Persistent::save(ctx, resolve),
                deadline,
                shape,
            },
        );
        let action = make(io.agent, token);
        io.actions.push(action);
    }
    if let Some(cb) = callback {
        let then = promise.then()?;
        then.call::<_, JsValue>((This(promise.clone()), cb))?;
    }
    Ok(promise)
}

fn space_object<'js>(
    ctx: &Ctx<'js>,
    cell: &Rc<AgentCell>,
    shared: &Rc<Shared>,
    space: SpaceId,
) -> rquickjs::Result<(Object<'js>, Object<'js>)> {
    let obj = Object::new(ctx.clone())?;
    let spec = &shared.spaces[space.index()];
    obj.prop("name", spec.name.as_str())?;

    // out / notify
    for notify in [false, true] {
        let (cell, shared) = (cell.clone(), shared.clone());
        let f = Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  t: JsValue<'js>,
                  life: Opt<JsValue<'js>>|
                  -> rquickjs::Result<()> {
                let tuple = tuple_from_js(&ctx, &*cell.statics(&ctx)?, t)?;
                let spec = &shared.spaces[space.index()];
                let lifetime = if notify {
                    None
                } else {
                    lifetime(&ctx, life.0)?
                };
                let extra = if lifetime.is_some() { 2 } else { 0 };
                let op = if notify { Op::Tuple } else { Op::Out };
                check_fits(&ctx, spec, op, 1 + tuple.wire_len() + extra)?;
                let mut io = cell.io.borrow_mut();
                io.admit(&ctx)?;
                let agent = io.agent;
                io.actions.push(if notify {
                    Action::Notify {
                        agent,
                        space,
                        tuple,
                    }
                } else {
                    Action::Out {
                        agent,
                        space,
                        tuple,
                        lifetime: lifetime.map(|s| Duration::from_secs(u64::from(s.get()))),
                    }
                });
                Ok(())
            },
        )?
        .with_name(if notify { "notify" } else { "out" })?;
        obj.prop(if notify { "notify" } else { "out" }, f)?;
    }

    // rd / inp / test
    for op in [RequestOp::Rd, RequestOp::Inp, RequestOp::Test] {
        let (cell, shared) = (cell.clone(), shared.clone());
        let f = Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  tpl: JsValue<'js>,
                  a: Opt<JsValue<'js>>,
                  b: Opt<JsValue<'js>>|
                  -> rquickjs::Result<Promise<'js>> {
                let template = template_from_js(&ctx, &*cell.statics(&ctx)?, tpl)?;
                let wire_op = match op {
                    RequestOp::Rd => Op::Rd,
                    RequestOp::Inp => Op::Inp,
                    RequestOp::Test => Op::Test,
                };
                check_fits(
                    &ctx,
                    &shared.spaces[space.index()],
                    wire_op,
                    1 + template.wire_len(),
                )?;
                let limits = cell.io.borrow().limits.clone();
                let (timeout, scope, cb) = request_options(&ctx, &limits, a.0, b.0)?;
                start_request(
                    &ctx,
                    &cell,
                    &shared,
                    Shape::Reply,
                    timeout + REQUEST_GRACE,
                    cb,
                    |agent, token| Action::Request {
                        agent,
                        token,
                        space,
                        op,
                        template,
                        timeout,
                        scope,
                    },
                )
            },
        )?
        .with_name(op.name())?;
        obj.prop(op.name(), f)?;
    }

    // host.*
    let host = Object::new(ctx.clone())?;
    {
        let cell = cell.clone();
        let f = Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  t: JsValue<'js>,
                  life: Opt<JsValue<'js>>|
                  -> rquickjs::Result<()> {
                let tuple: Tuple = tuple_from_js(&ctx, &*cell.statics(&ctx)?, t)?;
                let lifetime = lifetime(&ctx, life.0)?;
                let mut io = cell.io.borrow_mut();
                io.admit(&ctx)?;
                let agent = io.agent;
                io.actions.push(Action::HostOut {
                    agent,
                    space,
                    tuple,
                    lifetime: lifetime.map(|s| Duration::from_secs(u64::from(s.get()))),
                });
                Ok(())
            },
        )?
        .with_name("out")?;
        host.prop("out", f)?;
    }
    for (name, query, shape) in [
        ("rd", HostQuery::Rd, Shape::Tuple),
        ("inp", HostQuery::Inp, Shape::Tuple),
        ("count", HostQuery::Count, Shape::Count),
        ("rm", HostQuery::Rm, Shape::Count),
        ("rdAll", HostQuery::RdAll, Shape::Tuples),
        ("inpAll", HostQuery::InpAll, Shape::Tuples),
    ] {
        let (cell, shared) = (cell.clone(), shared.clone());
        let f = Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  tpl: JsValue<'js>,
                  cb: Opt<JsValue<'js>>|
                  -> rquickjs::Result<Promise<'js>> {
                let template: Template = template_from_js(&ctx, &*cell.statics(&ctx)?, tpl)?;
                let cb = cb.0.filter(|v| !v.is_undefined() && !v.is_null());
                if let Some(cb) = &cb
                    && !cb.is_function()
                {
                    return Err(type_error(&ctx, "a callback must be a function"));
                }
                start_request(
                    &ctx,
                    &cell,
                    &shared,
                    shape,
                    HOST_QUERY_TIMEOUT,
                    cb,
                    |agent, token| Action::Host {
                        agent,
                        token,
                        space,
                        query,
                        template,
                    },
                )
            },
        )?
        .with_name(name)?;
        host.prop(name, f)?;
    }
    Ok((obj, host))
}

/// Freezes `obj` and every function among its own properties.
fn freeze_with_methods<'js>(
    ctx: &Ctx<'js>,
    statics: &Statics,
    obj: &Object<'js>,
) -> rquickjs::Result<()> {
    for v in obj.own_values::<JsValue>(rquickjs::object::Filter::new().string()) {
        if let Some(f) = v?.as_object().filter(|o| o.is_function()) {
            statics.freeze(ctx, f)?;
        }
    }
    statics.freeze(ctx, obj)
}

/// Installs the API into `ctx` (see the module docs).
pub(crate) fn install<'js>(
    ctx: &Ctx<'js>,
    cell: &Rc<AgentCell>,
    shared: &Rc<Shared>,
) -> rquickjs::Result<()> {
    let statics = cell.statics(ctx)?;
    let g = ctx.globals();

    let spaces = Object::new(ctx.clone())?;
    let mut first_host = None;
    for i in 0..shared.spaces.len() {
        let id = SpaceId(i as u8);
        let (obj, host) = space_object(ctx, cell, shared, id)?;
        freeze_with_methods(ctx, &statics, &host)?;
        obj.prop("host", host.clone())?;
        freeze_with_methods(ctx, &statics, &obj)?;
        spaces.prop(
            shared.spaces[i].name.as_str(),
            Property::from(obj).enumerable(),
        )?;
        first_host.get_or_insert(host);
    }
    statics.freeze(ctx, &spaces)?;
    g.prop("spaces", spaces)?;
    match first_host {
        Some(h) => g.prop("host", h)?,
        None => g.prop("host", JsValue::new_null(ctx.clone()))?,
    }

    {
        let (cell, shared) = (cell.clone(), shared.clone());
        let f = Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, name: Coerced<String>| -> rquickjs::Result<JsValue<'js>> {
                let sensors = shared.sensors.borrow();
                match sensors.get(&name.0) {
                    Some(v) => value_to_js(&ctx, &*cell.statics(&ctx)?, v),
                    None => Ok(JsValue::new_null(ctx.clone())),
                }
            },
        )?
        .with_name("sensor")?;
        statics.freeze(ctx, &f)?;
        g.prop("sensor", f)?;
    }
    {
        let cell = cell.clone();
        let f = Function::new(ctx.clone(), move || -> f64 {
            cell.io.borrow().now.as_millis() as f64
        })?
        .with_name("time")?;
        statics.freeze(ctx, &f)?;
        g.prop("time", f)?;
    }
    {
        let cell = cell.clone();
        let f = Function::new(
            ctx.clone(),
            move |args: Rest<Coerced<String>>| -> rquickjs::Result<()> {
                let mut io = cell.io.borrow_mut();
                if io.logs_in_event >= io.limits.max_logs_per_event {
                    io.logs_dropped += 1;
                    return Ok(());
                }
                io.logs_in_event += 1;
                let mut line = args
                    .0
                    .into_iter()
                    .map(|s| s.0)
                    .collect::<Vec<_>>()
                    .join(" ");
                truncate(&mut line, io.limits.max_log_len);
                io.logs.push(line);
                Ok(())
            },
        )?
        .with_name("log")?;
        statics.freeze(ctx, &f)?;
        g.prop("log", f)?;
    }
    {
        let cell = cell.clone();
        let f = Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, x: Coerced<f64>| -> rquickjs::Result<JsValue<'js>> {
                let x = x.0;
                let f = x as f32;
                if x.is_nan() || (x.is_finite() && f.is_infinite()) {
                    return Err(range_error(
                        &ctx,
                        &format!("float32({x}): NaN or beyond ±3.4e38"),
                    ));
                }
                cell.statics(&ctx)?.boxed(&ctx, f64::from(f))
            },
        )?
        .with_name("float32")?;
        statics.freeze(ctx, &f)?;
        g.prop("float32", f)?;
    }
    let [any, int16, float32, str] = statics.formals(ctx)?;
    g.prop("ANY", any)?;
    g.prop("INT16", int16)?;
    g.prop("FLOAT32", float32)?;
    g.prop("STR", str)?;
    Ok(())
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub(crate) fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}
