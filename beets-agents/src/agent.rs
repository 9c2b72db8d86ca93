//! One agent: its own QuickJS runtime and context, its rules, and the limits around every call.
//!
//! Each agent gets a fresh `Runtime` + `Context` so that its heap, memory limit, interrupt
//! handler and job queue are its own: memory a failed script leaves behind is freed with the
//! runtime, and no agent can reach another's objects.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use beets_core::space::DeliveryKinds;
use beets_core::{PeerAddr, Received, Template, Time, Tuple, Value};
use rquickjs::context::EvalOptions;
use rquickjs::function::This;
use rquickjs::{Coerced, Context, Ctx, FromJs, Function, Object, Persistent, Runtime};

use crate::action::{AgentId, Completion, REMOVALS, RequestOp, SpaceId, Token, TupleKind};
use crate::api::{self, AgentCell, Io, Shape, Shared};
use crate::config::Limits;
use crate::convert::{Elements, Statics, put, template_elements, tuple_to_js, value_to_js};
use crate::error::{AgentError, Fault, FaultKind};
use crate::rules::{Rule, Trigger, bind_rules, during_rule, read_rules};
use crate::sandbox::{Guard, Intrinsics, describe, fault_from};

type JsValue<'js> = rquickjs::Value<'js>;

/// Words agents see in event objects, after the space names in [`JsAgent::words`].
const WORDS: [&str; 8] = [
    "out", "notify", "rd", "inp", "test", "rm", "expired", "evicted",
];

/// The index of `kind`'s name in [`WORDS`].
fn kind_word(kind: TupleKind) -> usize {
    match kind {
        TupleKind::Out => 0,
        TupleKind::Notify => 1,
        TupleKind::Inp => 3,
        TupleKind::Rm => 5,
        TupleKind::Expired => 6,
        TupleKind::Evicted => 7,
    }
}

/// Senders whose address text is kept as a JavaScript string.
const FROM_CACHE: usize = 8;

/// An item due at a time, from [`JsAgent::due`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    Expired(Token),
    Timer(usize),
}

/// A loaded agent. Field order matters: every persistent value is dropped before `ctx` and
/// `rt` (see also `Drop`).
pub(crate) struct JsAgent {
    rules: Vec<Rule>,
    this: Option<Persistent<Object<'static>>>,
    /// The space names, then [`WORDS`], as JavaScript strings.
    words: Vec<Persistent<rquickjs::String<'static>>>,
    /// Recent senders' address text.
    from_cache: RefCell<VecDeque<(PeerAddr, Persistent<rquickjs::String<'static>>)>>,
    cell: Rc<AgentCell>,
    guard: Rc<Guard>,
    shared: Rc<Shared>,
    /// Time spent in calls, not yet taken by the host (CPU share).
    spent: Duration,
    ctx: Context,
    rt: Runtime,
}

impl Drop for JsAgent {
    fn drop(&mut self) {
        self.rules.clear();
        self.this = None;
        self.words.clear();
        self.from_cache.borrow_mut().clear();
        self.cell.clear();
    }
}

fn shape_error(msg: impl Into<String>) -> AgentError {
    AgentError::Shape(msg.into())
}

impl JsAgent {
    /// Creates the runtime, installs the API, evaluates `source` and reads its rules, all within
    /// `limits`.
    pub(crate) fn load(
        id: AgentId,
        name: &str,
        source: &str,
        limits: &Limits,
        shared: &Rc<Shared>,
        now: Time,
    ) -> Result<JsAgent, AgentError> {
        if source.len() > limits.max_source_len {
            return Err(AgentError::SourceTooLong {
                len: source.len(),
                max: limits.max_source_len,
            });
        }
        let rt_err = |e: rquickjs::Error| AgentError::Runtime(e.to_string());
        let rt = Runtime::new().map_err(rt_err)?;
        rt.set_memory_limit(limits.memory);
        rt.set_max_stack_size(limits.stack);
        let guard = Rc::new(Guard::default());
        guard.agent.set(id.0);
        {
            let g = guard.clone();
            rt.set_interrupt_handler(Some(Box::new(move || match g.deadline.get() {
                Some(d) if Instant::now() >= d => {
                    g.tripped.set(true);
                    true
                }
                _ => false,
            })));
        }
        let cell = Rc::new(AgentCell::new(Io {
            agent: id,
            limits: limits.clone(),
            now,
            actions: Vec::new(),
            actions_in_event: 0,
            logs: Vec::new(),
            logs_in_event: 0,
            logs_dropped: 0,
            pending: Default::default(),
            rejections: Vec::new(),
        }));
        {
            let cell = cell.clone();
            rt.set_host_promise_rejection_tracker(Some(Box::new(
                move |ctx, _promise, reason, handled| {
                    if handled {
                        cell.io.borrow_mut().rejections.pop();
                    } else {
                        let msg = describe(&ctx, reason);
                        cell.io.borrow_mut().rejections.push(msg);
                    }
                },
            )));
        }
        let ctx = Context::builder()
            .with::<Intrinsics>()
            .build(&rt)
            .map_err(rt_err)?;
        let words = ctx
            .with(|ctx| -> rquickjs::Result<_> {
                cell.set_statics(Statics::capture(&ctx)?);
                api::install(&ctx, &cell, shared)?;
                let words = shared
                    .spaces
                    .iter()
                    .map(|s| s.name.as_str())
                    .chain(WORDS)
                    .map(|w| {
                        Ok(Persistent::save(
                            &ctx,
                            rquickjs::String::from_str(ctx.clone(), w)?,
                        ))
                    })
                    .collect::<rquickjs::Result<Vec<_>>>()?;
                Ok(words)
            })
            .map_err(rt_err)?;

        let mut agent = JsAgent {
            rules: Vec::new(),
            this: None,
            words,
            from_cache: RefCell::new(VecDeque::new()),
            cell,
            guard,
            shared: shared.clone(),
            spent: Duration::ZERO,
            ctx,
            rt,
        };
        agent.begin(now, limits.load_budget);
        let r = agent.evaluate(name, source, limits, now);
        let r = agent.finish(r, |_| "load".into());
        match r {
            Ok(Ok(())) => Ok(agent),
            Ok(Err(shape)) => Err(shape),
            Err(fault) => Err(AgentError::Fault(fault)),
        }
    }

    /// Evaluates the source and reads the agent object; the outer error is a fault, the inner
    /// one a shape error.
    fn evaluate(
        &mut self,
        name: &str,
        source: &str,
        limits: &Limits,
        now: Time,
    ) -> Result<Result<(), AgentError>, Fault> {
        let shared = self.shared.clone();
        let tripped = || self.guard.tripped();
        let result = self.ctx.with(|ctx| {
            let mut opts = EvalOptions::default();
            opts.global = true;
            opts.strict = false;
            opts.backtrace_barrier = true;
            opts.filename = Some(name.to_owned());
            let value: JsValue = match ctx.eval_with_options(source, opts) {
                Ok(v) => v,
                Err(e) => return Err(fault_from(&ctx, e, tripped(), "load".into())),
            };
            let Some(obj) = value.into_object() else {
                return Ok(Err(shape_error(
                    "the source must evaluate to an object, e.g. ({ rules: [ ... ] })",
                )));
            };
            let statics = match self.cell.statics(&ctx) {
                Ok(s) => s,
                Err(e) => return Err(fault_from(&ctx, e, tripped(), "load".into())),
            };
            let mut rules = match read_rules(&ctx, &statics, &obj, limits, &shared, now) {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Ok(Err(e)),
                Err(e) => return Err(fault_from(&ctx, e, tripped(), "reading rules".into())),
            };
            let bound = bind_rules(&ctx, &statics, &obj, &mut rules);
            drop(statics);
            if let Err(e) = bound {
                return Err(fault_from(&ctx, e, tripped(), "reading rules".into()));
            }
            let init: JsValue = match obj.get("init") {
                Ok(v) => v,
                Err(e) => return Err(fault_from(&ctx, e, tripped(), "init".into())),
            };
            if let Some(f) = init.as_function()
                && let Err(e) = f.call::<_, JsValue>((This(obj.clone()),))
            {
                return Err(fault_from(&ctx, e, tripped(), "init".into()));
            }
            Ok(Ok((rules, Persistent::save(&ctx, obj))))
        });
        match result {
            Ok(Ok((rules, this))) => {
                self.rules = rules;
                self.this = Some(this);
                Ok(Ok(()))
            }
            Ok(Err(e)) => Ok(Err(e)),
            Err(f) => Err(f),
        }
    }

    fn begin(&self, now: Time, budget: Duration) {
        {
            let mut io = self.cell.io.borrow_mut();
            io.now = now;
            io.actions_in_event = 0;
            io.logs_in_event = 0;
        }
        self.guard.arm(budget);
    }

    /// Runs the promise jobs the event started, checks for unhandled rejections, disarms the
    /// budget and collects garbage after a fault.
    fn finish<R>(
        &mut self,
        r: Result<R, Fault>,
        during: impl FnOnce(&JsAgent) -> String,
    ) -> Result<R, Fault> {
        let r = r.and_then(|v| self.run_jobs().map(|()| v));
        let rejection = self.cell.io.borrow_mut().rejections.drain(..).next();
        let r = match (r, rejection) {
            (Ok(_), Some(message)) => Err(Fault {
                kind: FaultKind::UnhandledRejection,
                during: during(self),
                message,
            }),
            (r, _) => r,
        };
        self.guard.disarm();
        self.spent += self.guard.spent();
        if r.is_err() {
            self.rt.run_gc();
        }
        r
    }

    /// Wall time spent in calls into this agent since the last call of this function.
    pub(crate) fn take_spent(&mut self) -> Duration {
        std::mem::take(&mut self.spent)
    }

    fn run_jobs(&mut self) -> Result<(), Fault> {
        if !self.rt.is_job_pending() {
            return Ok(());
        }
        let max = self.cell.io.borrow().limits.max_jobs_per_event;
        for _ in 0..max {
            match self.rt.execute_pending_job() {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(job) => {
                    let tripped = self.guard.tripped();
                    return Err(job.0.with(|ctx| {
                        fault_from(
                            &ctx,
                            rquickjs::Error::Exception,
                            tripped,
                            "promise job".into(),
                        )
                    }));
                }
            }
        }
        if self.rt.is_job_pending() {
            return Err(Fault {
                kind: FaultKind::RunawayJobs,
                during: "promise jobs".into(),
                message: format!("more than {max} promise jobs after one event"),
            });
        }
        Ok(())
    }

    /// Whether a `ts` rule of this agent could fire.
    pub(crate) fn wants_tuple(&self, space: SpaceId, kind: TupleKind, tuple: &Tuple) -> bool {
        self.rules
            .iter()
            .any(|r| r.trigger.on_tuple(space, kind, tuple))
    }

    /// Whether a request rule of this agent could fire.
    pub(crate) fn wants_request(&self, space: SpaceId, op: RequestOp) -> bool {
        self.rules.iter().any(|r| r.trigger.on_request(space, op))
    }

    /// The templates of the `ts` rules that can see an incoming OUT on `space`.
    pub(crate) fn out_templates(&self, space: SpaceId) -> impl Iterator<Item = &Template> {
        self.tuple_templates(space, TupleKind::Out)
    }

    /// The templates of `ts` rules that can fire for an incoming notification on `space`.
    pub(crate) fn notify_templates(&self, space: SpaceId) -> impl Iterator<Item = &Template> {
        self.tuple_templates(space, TupleKind::Notify)
    }

    fn tuple_templates(
        &self,
        space: SpaceId,
        wanted: TupleKind,
    ) -> impl Iterator<Item = &Template> {
        self.rules.iter().filter_map(move |r| match &r.trigger {
            Trigger::Tuple {
                spaces,
                template,
                kinds,
            } if kinds & wanted.bit() != 0
                && spaces.as_ref().is_none_or(|s| s.contains(&space)) =>
            {
                Some(template)
            }
            _ => None,
        })
    }

    /// The templates of `ts` rules that fire on removals from `space`, each with the removal
    /// kinds it wants.
    pub(crate) fn removal_templates(
        &self,
        space: SpaceId,
    ) -> impl Iterator<Item = (&Template, DeliveryKinds)> {
        self.rules.iter().filter_map(move |r| match &r.trigger {
            Trigger::Tuple {
                spaces,
                template,
                kinds,
            } if kinds & REMOVALS != 0 && spaces.as_ref().is_none_or(|s| s.contains(&space)) => {
                let set = TupleKind::ALL
                    .iter()
                    .filter(|k| kinds & k.bit() != 0)
                    .filter_map(|k| k.removal())
                    .fold(DeliveryKinds::NONE, |set, k| set | k);
                Some((template, set))
            }
            _ => None,
        })
    }

    /// Calls the matching rules with `args`, in order, until `stop` says a result ends the event.
    /// Returns whether it stopped.
    fn dispatch(
        &mut self,
        now: Time,
        budget: Duration,
        selects: impl Fn(usize, &Trigger) -> bool,
        args: impl for<'js> FnOnce(&Ctx<'js>, &Statics) -> rquickjs::Result<Vec<JsValue<'js>>>,
        stop: impl for<'js> Fn(&JsValue<'js>) -> bool,
    ) -> Result<bool, Fault> {
        self.begin(now, budget);
        let current = Cell::new(usize::MAX);
        let tripped = || self.guard.tripped();
        let r = self.ctx.with(|ctx| {
            let run = || -> rquickjs::Result<bool> {
                let this = match &self.this {
                    Some(t) => t.clone().restore(&ctx)?,
                    None => return Ok(false),
                };
                let args = args(&ctx, &*self.cell.statics(&ctx)?)?;
                for (i, rule) in self.rules.iter().enumerate() {
                    if !selects(i, &rule.trigger) {
                        continue;
                    }
                    current.set(i);
                    let call = |f: &Persistent<Function<'static>>| {
                        let f = f.clone().restore(&ctx)?;
                        let mut a = rquickjs::function::Args::new(ctx.clone(), args.len());
                        a.this(this.clone())?;
                        a.push_args(args.iter().cloned())?;
                        f.call_arg::<JsValue>(a)
                    };
                    if let Some(c) = &rule.cond {
                        let ok = call(c)?;
                        if !Coerced::<bool>::from_js(&ctx, ok)?.0 {
                            continue;
                        }
                    }
                    if stop(&call(&rule.handler)?) {
                        return Ok(true);
                    }
                }
                Ok(false)
            };
            run().map_err(|e| {
                let during = during_rule(&self.rules, current.get());
                fault_from(&ctx, e, tripped(), during)
            })
        });
        let at = current.get();
        self.finish(r, |a| during_rule(&a.rules, at))
    }

    /// The sender's address as a JavaScript string, from the cache when it was seen recently.
    fn sender_text<'js>(
        &self,
        ctx: &Ctx<'js>,
        from: PeerAddr,
    ) -> rquickjs::Result<rquickjs::String<'js>> {
        let mut cache = self.from_cache.borrow_mut();
        if let Some((_, s)) = cache.iter().find(|(a, _)| *a == from) {
            return s.clone().restore(ctx);
        }
        let s = rquickjs::String::from_str(ctx.clone(), &from.to_string())?;
        if cache.len() >= FROM_CACHE {
            cache.pop_front();
        }
        cache.push_back((from, Persistent::save(ctx, s.clone())));
        Ok(s)
    }

    /// Runs the matching `ts` or request rules through their callers (see `rules::CALLER_FACTORY`).
    /// `words` indexes [`JsAgent::words`]: the space name and the kind or op. Returns whether a
    /// caller returned `stop` (1: the handler returned `true`, 2: `false`).
    fn dispatch_event(
        &mut self,
        now: Time,
        budget: Duration,
        selects: impl Fn(&Trigger) -> bool,
        elements: impl for<'js> FnOnce(&Ctx<'js>, &Statics) -> rquickjs::Result<Elements<'js>>,
        (words, rx, lifetime): ((usize, usize), Option<&Received>, Option<Duration>),
        stop: i32,
    ) -> Result<bool, Fault> {
        self.begin(now, budget);
        let current = Cell::new(usize::MAX);
        let tripped = || self.guard.tripped();
        let r = self.ctx.with(|ctx| {
            let run = || -> rquickjs::Result<bool> {
                let elements = elements(&ctx, &*self.cell.statics(&ctx)?)?;
                let undefined = JsValue::new_undefined(ctx.clone());
                let null = JsValue::new_null(ctx.clone());
                let word = |i: usize| -> rquickjs::Result<JsValue> {
                    Ok(self.words[i].clone().restore(&ctx)?.into_value())
                };
                let (space, what) = (word(words.0)?, word(words.1)?);
                let (from, time, rssi) = match rx {
                    Some(rx) => (
                        self.sender_text(&ctx, rx.from)?.into_value(),
                        JsValue::new_float(ctx.clone(), rx.at.as_millis() as f64),
                        match rx.rssi {
                            Some(r) => JsValue::new_int(ctx.clone(), i32::from(r)),
                            None => null.clone(),
                        },
                    ),
                    None => (null.clone(), null.clone(), null.clone()),
                };
                let lifetime = match lifetime {
                    Some(l) => JsValue::new_float(ctx.clone(), l.as_secs_f64()),
                    None => null.clone(),
                };
                for (i, rule) in self.rules.iter().enumerate() {
                    let Some(caller) = rule.call.as_ref().filter(|_| selects(&rule.trigger)) else {
                        continue;
                    };
                    current.set(i);
                    let caller = caller.clone().restore(&ctx)?;
                    let mut a = rquickjs::function::Args::new(ctx.clone(), 11);
                    a.push_arg(elements.len() as i32)?;
                    for k in 0..4 {
                        a.push_arg(elements.get(k).unwrap_or(&undefined).clone())?;
                    }
                    a.push_arg(space.clone())?;
                    a.push_arg(what.clone())?;
                    a.push_arg(from.clone())?;
                    a.push_arg(time.clone())?;
                    a.push_arg(rssi.clone())?;
                    a.push_arg(lifetime.clone())?;
                    let code: i32 = caller.call_arg(a)?;
                    if code == stop {
                        return Ok(true);
                    }
                }
                Ok(false)
            };
            run().map_err(|e| {
                let during = during_rule(&self.rules, current.get());
                fault_from(&ctx, e, tripped(), during)
            })
        });
        let at = current.get();
        self.finish(r, |a| during_rule(&a.rules, at))
    }

    /// `ts` rules: `handler(tuple, ev)`; returns whether one returned `true` (never for a
    /// removal: every matching rule runs). `lifetime` is an OUT's lifetime as sent
    /// (`ev.lifetime`, seconds; `null` for none, a notification or a removal).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_tuple(
        &mut self,
        now: Time,
        budget: Duration,
        space: SpaceId,
        kind: TupleKind,
        tuple: &Tuple,
        lifetime: Option<Duration>,
        rx: Option<&Received>,
    ) -> Result<bool, Fault> {
        let word = self.shared.spaces.len() + kind_word(kind);
        // A removal is reported after the fact: every matching rule runs, whatever it returns.
        let stop = if kind.is_removal() { -1 } else { 1 };
        self.dispatch_event(
            now,
            budget,
            |t| t.on_tuple(space, kind, tuple),
            |ctx, st| {
                tuple
                    .values()
                    .iter()
                    .map(|v| value_to_js(ctx, st, v))
                    .collect()
            },
            ((space.index(), word), rx, lifetime),
            stop,
        )
    }

    /// Request rules: `handler(template, ev)`; returns whether one returned `false` (refused).
    pub(crate) fn on_request(
        &mut self,
        now: Time,
        budget: Duration,
        space: SpaceId,
        op: RequestOp,
        template: &Template,
        rx: &Received,
    ) -> Result<bool, Fault> {
        let word = self.shared.spaces.len() + 2 + op as usize;
        self.dispatch_event(
            now,
            budget,
            |t| t.on_request(space, op),
            |ctx, st| template_elements(ctx, st, template),
            ((space.index(), word), Some(rx), None),
            2,
        )
    }

    /// Sensor rules: `handler(value, previous, {sensor, time})`.
    pub(crate) fn on_sensor(
        &mut self,
        now: Time,
        budget: Duration,
        name: &str,
        value: &Value,
        previous: Option<&Value>,
    ) -> Result<(), Fault> {
        if !self.rules.iter().any(|r| r.trigger.on_sensor(name)) {
            return Ok(());
        }
        self.dispatch(
            now,
            budget,
            |_, t| t.on_sensor(name),
            |ctx, st| {
                let v = value_to_js(ctx, st, value)?;
                let p = match previous {
                    Some(p) => value_to_js(ctx, st, p)?,
                    None => JsValue::new_null(ctx.clone()),
                };
                let ev = Object::new(ctx.clone())?;
                put(&ev, "sensor", name)?;
                put(&ev, "time", now.as_millis() as f64)?;
                Ok(vec![v, p, ev.into_value()])
            },
            |_| false,
        )
        .map(|_| ())
    }

    /// The earliest timer or request deadline.
    pub(crate) fn next_deadline(&self) -> Option<Time> {
        let timers = self.rules.iter().filter_map(|r| match &r.trigger {
            Trigger::Timer { next, .. } => *next,
            _ => None,
        });
        let pending = self.cell.io.borrow();
        let deadlines = pending.pending.values().map(|p| p.deadline);
        timers.chain(deadlines).min()
    }

    /// What is due at `now`: expired requests (resolve with `null`) and timers.
    pub(crate) fn due(&self, now: Time) -> Vec<Due> {
        let mut expired: Vec<Token> = self
            .cell
            .io
            .borrow()
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        expired.sort_unstable();
        let timers = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r.trigger, Trigger::Timer { next: Some(n), .. } if n <= now))
            .map(|(i, _)| Due::Timer(i));
        expired
            .into_iter()
            .map(Due::Expired)
            .chain(timers)
            .collect()
    }

    /// Runs one item from [`JsAgent::due`].
    pub(crate) fn fire(&mut self, now: Time, budget: Duration, due: Due) -> Result<(), Fault> {
        match due {
            Due::Expired(t) => self.complete(now, budget, t, None),
            Due::Timer(i) => {
                if let Some(Trigger::Timer { period, once, next }) =
                    self.rules.get_mut(i).map(|r| &mut r.trigger)
                {
                    *next = if *once { None } else { Some(now + *period) };
                }
                self.fire_timer(now, budget, i)
            }
        }
    }

    /// Re-arms a due timer without running it (the agent is throttled); other items are fired
    /// as usual by the caller later.
    pub(crate) fn skip_timer(&mut self, now: Time, due: Due) {
        if let Due::Timer(i) = due
            && let Some(Trigger::Timer { period, once, next }) =
                self.rules.get_mut(i).map(|r| &mut r.trigger)
        {
            *next = if *once { None } else { Some(now + *period) };
        }
    }

    /// Whether `token` is one of this agent's pending requests.
    pub(crate) fn has_pending(&self, token: Token) -> bool {
        self.cell.io.borrow().pending.contains_key(&token)
    }

    fn fire_timer(&mut self, now: Time, budget: Duration, index: usize) -> Result<(), Fault> {
        self.dispatch(
            now,
            budget,
            |i, _| i == index,
            |ctx, _| {
                Ok(vec![JsValue::new_float(
                    ctx.clone(),
                    now.as_millis() as f64,
                )])
            },
            |_| false,
        )
        .map(|_| ())
    }

    /// Resolves a pending request (`None` = timed out: `null`). Unknown tokens are ignored.
    pub(crate) fn complete(
        &mut self,
        now: Time,
        budget: Duration,
        token: Token,
        completion: Option<Completion>,
    ) -> Result<(), Fault> {
        let Some(p) = self.cell.io.borrow_mut().pending.remove(&token) else {
            return Ok(());
        };
        self.begin(now, budget);
        let tripped = || self.guard.tripped();
        let r = self.ctx.with(|ctx| {
            let run = || -> rquickjs::Result<()> {
                let resolve = p.resolve.restore(&ctx)?;
                let st = self.cell.statics(&ctx)?;
                let null = || JsValue::new_null(ctx.clone());
                let v = match (p.shape, completion) {
                    (Shape::Reply, Some(Completion::Tuple(Some((t, rx))))) => {
                        let o = Object::new(ctx.clone())?;
                        put(&o, "tuple", tuple_to_js(&ctx, &st, &t)?)?;
                        match rx {
                            Some(rx) => {
                                put(&o, "from", rx.from.to_string())?;
                                put(&o, "time", rx.at.as_millis() as f64)?;
                                match rx.rssi {
                                    Some(r) => put(&o, "rssi", i32::from(r))?,
                                    None => put(&o, "rssi", null())?,
                                }
                            }
                            None => {
                                put(&o, "from", null())?;
                                put(&o, "time", null())?;
                                put(&o, "rssi", null())?;
                            }
                        }
                        o.into_value()
                    }
                    (Shape::Tuple, Some(Completion::Tuple(Some((t, _))))) => {
                        tuple_to_js(&ctx, &st, &t)?
                    }
                    (Shape::Count, Some(Completion::Count(n))) => {
                        JsValue::new_float(ctx.clone(), n as f64)
                    }
                    (Shape::Count, _) => JsValue::new_int(ctx.clone(), 0),
                    (Shape::Tuples, Some(Completion::Tuples(ts))) => {
                        let arr = rquickjs::Array::new(ctx.clone())?;
                        for (i, t) in ts.iter().enumerate() {
                            arr.set(i, tuple_to_js(&ctx, &st, t)?)?;
                        }
                        arr.into_value()
                    }
                    (Shape::Tuples, _) => rquickjs::Array::new(ctx.clone())?.into_value(),
                    _ => null(),
                };
                drop(st);
                resolve.call::<_, JsValue>((v,))?;
                Ok(())
            };
            run().map_err(|e| fault_from(&ctx, e, tripped(), "promise resolution".into()))
        });
        self.finish(r, |_| "promise callbacks".into())
    }

    /// Moves the actions and log lines collected so far out.
    /// Empties the collected actions into `actions` (when given; otherwise drops them) and
    /// returns the log lines and the number of lines dropped. The buffer keeps its capacity.
    pub(crate) fn drain(
        &self,
        actions: Option<&mut dyn FnMut(crate::Action)>,
    ) -> (Vec<String>, usize) {
        let mut buf = std::mem::take(&mut self.cell.io.borrow_mut().actions);
        match actions {
            Some(f) => buf.drain(..).for_each(f),
            None => buf.clear(),
        }
        let mut io = self.cell.io.borrow_mut();
        io.actions = buf;
        let dropped = std::mem::take(&mut io.logs_dropped);
        let logs = if io.logs.is_empty() {
            Vec::new()
        } else {
            std::mem::take(&mut io.logs)
        };
        (logs, dropped)
    }

    /// Heap in use, in bytes.
    pub(crate) fn memory_used(&self) -> usize {
        usize::try_from(self.rt.memory_usage().memory_used_size).unwrap_or(usize::MAX)
    }
}
