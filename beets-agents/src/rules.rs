//! An agent's rules, read once from the agent object at load time.

use std::time::Duration;

use beets_core::{Template, Time, Tuple};
use rquickjs::context::EvalOptions;
use rquickjs::{Coerced, Ctx, Function, Object, Persistent};

use crate::action::{INCOMING, KindSet, REMOVALS, RequestOp, SpaceId, TupleKind};
use crate::api::Shared;
use crate::config::Limits;
use crate::convert::Statics;
use crate::error::AgentError;
use crate::sandbox::describe;

fn shape_error(msg: impl Into<String>) -> AgentError {
    AgentError::Shape(msg.into())
}

type JsValue<'js> = rquickjs::Value<'js>;

/// What starts a rule.
#[derive(Debug)]
pub(crate) enum Trigger {
    Tuple {
        spaces: Option<Vec<SpaceId>>,
        template: Template,
        /// The [`TupleKind`]s it fires on.
        kinds: KindSet,
    },
    Request {
        spaces: Option<Vec<SpaceId>>,
        ops: [bool; 3],
    },
    Sensor {
        name: String,
    },
    Timer {
        period: Duration,
        once: bool,
        next: Option<Time>,
    },
}

fn space_ok(spaces: &Option<Vec<SpaceId>>, space: SpaceId) -> bool {
    spaces.as_ref().is_none_or(|s| s.contains(&space))
}

fn op_index(op: RequestOp) -> usize {
    match op {
        RequestOp::Rd => 0,
        RequestOp::Inp => 1,
        RequestOp::Test => 2,
    }
}

impl Trigger {
    pub(crate) fn on_tuple(&self, space: SpaceId, kind: TupleKind, tuple: &Tuple) -> bool {
        matches!(self, Trigger::Tuple { spaces, template, kinds }
            if space_ok(spaces, space) && kinds & kind.bit() != 0 && template.matches(tuple))
    }

    pub(crate) fn on_request(&self, space: SpaceId, op: RequestOp) -> bool {
        matches!(self, Trigger::Request { spaces, ops } if space_ok(spaces, space) && ops[op_index(op)])
    }

    pub(crate) fn on_sensor(&self, name: &str) -> bool {
        matches!(self, Trigger::Sensor { name: n } if n == name)
    }
}

pub(crate) struct Rule {
    pub(crate) trigger: Trigger,
    pub(crate) cond: Option<Persistent<Function<'static>>>,
    pub(crate) handler: Persistent<Function<'static>>,
    /// For `ts` and request rules, the caller bound at load time.
    pub(crate) call: Option<Persistent<Function<'static>>>,
}

/// Makes the caller of a `ts` or request rule: `make(apply, handler, cond, agent, key)` returns
/// a function of `(n, a, b, c, d, space, what, from, time, rssi, lifetime)` that builds the tuple
/// (or template) array and the event object `{space, <key>: what, from, time, rssi, lifetime}`
/// (`key` is `"kind"` or `"op"`) with literals —
/// so setters an agent put on `Array.prototype` or `Object.prototype` never run — and calls
/// `cond` and `handler` through `apply`, the original `Reflect.apply`. The caller returns 0 when
/// `cond` said no, 1 when the handler returned `true`, 2 for `false`, 3 for anything else.
///
/// The event object is a fresh object per event (a handler may keep it), but its shape is not:
/// QuickJS frees a shape with the last object that has it, so the chain of shapes the literal
/// walks through (one per property) would be created, hashed and freed again on every event
/// (≈ 15 % of a router's dispatch). `shapes` holds one object at each step of the chain, so the
/// literal finds every step in QuickJS's shape table. The key is written out rather than
/// computed (`[key]: what`), which QuickJS defines through its slower generic path.
///
/// The source reads no global, so it is safe to compile after the agent's code ran; it is
/// compiled only for agents that have such rules.
pub(crate) const CALLER_FACTORY: &str = r#"(apply, h, c, s, key) => {
  const op = key === "op";
  const shapes = op
    ? [{ space: 0 }, { space: 0, op: 0 }, { space: 0, op: 0, from: 0 },
       { space: 0, op: 0, from: 0, time: 0 }, { space: 0, op: 0, from: 0, time: 0, rssi: 0 },
       { space: 0, op: 0, from: 0, time: 0, rssi: 0, lifetime: 0 }]
    : [{ space: 0 }, { space: 0, kind: 0 }, { space: 0, kind: 0, from: 0 },
       { space: 0, kind: 0, from: 0, time: 0 }, { space: 0, kind: 0, from: 0, time: 0, rssi: 0 },
       { space: 0, kind: 0, from: 0, time: 0, rssi: 0, lifetime: 0 }];
  return (n, a, b, x, d, space, what, from, time, rssi, lifetime) => {
    // Never true: makes the closure hold `shapes`.
    if (n < 0) return shapes;
    const t = [a, b, x, d];
    t.length = n;
    const ev = op
      ? { space, op: what, from, time, rssi, lifetime }
      : { space, kind: what, from, time, rssi, lifetime };
    if (c !== void 0 && !apply(c, s, [t, ev])) return 0;
    const r = apply(h, s, [t, ev]);
    return r === true ? 1 : r === false ? 2 : 3;
  };
}"#;

/// Binds each `ts` and request rule to its caller (see [`CALLER_FACTORY`]).
pub(crate) fn bind_rules<'js>(
    ctx: &Ctx<'js>,
    statics: &Statics,
    this: &Object<'js>,
    rules: &mut [Rule],
) -> rquickjs::Result<()> {
    let mut factory: Option<Function> = None;
    for rule in rules {
        let key = match rule.trigger {
            Trigger::Tuple { .. } => "kind",
            Trigger::Request { .. } => "op",
            _ => continue,
        };
        let factory = match &factory {
            Some(f) => f,
            None => {
                let mut opts = EvalOptions::default();
                opts.strict = true;
                opts.filename = Some("<beets-agents>".into());
                factory.insert(ctx.eval_with_options(CALLER_FACTORY, opts)?)
            }
        };
        let handler = rule.handler.clone().restore(ctx)?;
        let cond = match &rule.cond {
            Some(c) => c.clone().restore(ctx)?.into_value(),
            None => JsValue::new_undefined(ctx.clone()),
        };
        let apply = statics.apply(ctx)?;
        let caller: Function = factory.call((apply, handler, cond, this.clone(), key))?;
        rule.call = Some(Persistent::save(ctx, caller));
    }
    Ok(())
}

/// Where a call happens, for fault messages.
pub(crate) fn during_rule(rules: &[Rule], i: usize) -> String {
    let Some(r) = rules.get(i) else {
        return "event set-up".into();
    };
    match &r.trigger {
        Trigger::Tuple { template, .. } => format!("ts rule {i} {template}"),
        Trigger::Request { .. } => format!("request rule {i}"),
        Trigger::Sensor { name } => format!("sensor rule {i} ({name})"),
        Trigger::Timer { period, .. } => format!("timer rule {i} ({} ms)", period.as_millis()),
    }
}

/// Reads `obj.rules`. The outer error is a JavaScript exception (a getter threw), the inner one a
/// shape error.
pub(crate) fn read_rules<'js>(
    ctx: &Ctx<'js>,
    statics: &Statics,
    obj: &Object<'js>,
    limits: &Limits,
    shared: &Shared,
    now: Time,
) -> rquickjs::Result<Result<Vec<Rule>, AgentError>> {
    let rules: JsValue = obj.get("rules")?;
    if rules.is_undefined() {
        return Ok(Ok(Vec::new()));
    }
    let Some(arr) = rules.as_array() else {
        return Ok(Err(shape_error("`rules` must be an array of rule objects")));
    };
    if arr.len() > limits.max_rules {
        return Ok(Err(shape_error(format!(
            "{} rules, the limit is {} (Limits::max_rules)",
            arr.len(),
            limits.max_rules
        ))));
    }
    let mut out = Vec::with_capacity(arr.len());
    for i in 0..arr.len() {
        let r: JsValue = arr.get(i)?;
        let Some(r) = r.into_object() else {
            return Ok(Err(shape_error(format!("rule {i} is not an object"))));
        };
        match read_rule(ctx, statics, &r, i, limits, shared, now)? {
            Ok(rule) => out.push(rule),
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(out))
}

fn read_spaces<'js>(
    v: JsValue<'js>,
    i: usize,
    shared: &Shared,
) -> rquickjs::Result<Result<Option<Vec<SpaceId>>, AgentError>> {
    if v.is_undefined() || v.is_null() {
        return Ok(Ok(None));
    }
    let names: Vec<String> = if let Some(s) = v.as_string() {
        vec![s.to_string()?]
    } else if let Some(a) = v.as_array() {
        let mut names = Vec::new();
        for j in 0..a.len() {
            let n: Coerced<String> = a.get(j)?;
            names.push(n.0);
        }
        names
    } else {
        return Ok(Err(shape_error(format!(
            "rule {i}: `space` must be a space name or an array of names"
        ))));
    };
    let mut ids = Vec::new();
    for n in names {
        match shared.spaces.iter().position(|s| s.name == n) {
            Some(p) => ids.push(SpaceId(p as u8)),
            None => {
                let known: Vec<&str> = shared.spaces.iter().map(|s| s.name.as_str()).collect();
                return Ok(Err(shape_error(format!(
                    "rule {i}: unknown space {n:?} (known: {known:?})"
                ))));
            }
        }
    }
    Ok(Ok(Some(ids)))
}

/// A `ts` rule's `kind`: a name or an array of names (see the crate docs); none means
/// `"any"`, incoming OUTs and notifications.
fn read_kinds(v: JsValue<'_>, i: usize) -> rquickjs::Result<Result<KindSet, AgentError>> {
    if v.is_undefined() || v.is_null() {
        return Ok(Ok(INCOMING));
    }
    let names: Vec<Option<String>> = if let Some(a) = v.as_array() {
        let mut names = Vec::new();
        for j in 0..a.len() {
            let n: JsValue = a.get(j)?;
            names.push(n.as_string().map(|s| s.to_string()).transpose()?);
        }
        names
    } else {
        vec![v.as_string().map(|s| s.to_string()).transpose()?]
    };
    let mut kinds = 0;
    for n in names {
        kinds |= match n.as_deref() {
            Some("any") => INCOMING,
            Some("removed") => REMOVALS,
            Some(name) => match TupleKind::ALL.iter().find(|k| k.name() == name) {
                Some(k) => k.bit(),
                None => {
                    return Ok(Err(shape_error(format!(
                        "rule {i}: `kind` {name:?} is not one of {KIND_NAMES}"
                    ))));
                }
            },
            None => {
                return Ok(Err(shape_error(format!(
                    "rule {i}: `kind` must be one of {KIND_NAMES}, or an array of them"
                ))));
            }
        };
    }
    if kinds == 0 {
        return Ok(Err(shape_error(format!(
            "rule {i}: `kind` is an empty array (give one of {KIND_NAMES})"
        ))));
    }
    Ok(Ok(kinds))
}

/// The names a `ts` rule's `kind` takes, for error messages.
const KIND_NAMES: &str =
    "\"out\", \"notify\", \"any\", \"inp\", \"rm\", \"expired\", \"evicted\", \"removed\"";

fn read_rule<'js>(
    ctx: &Ctx<'js>,
    statics: &Statics,
    r: &Object<'js>,
    i: usize,
    limits: &Limits,
    shared: &Shared,
    now: Time,
) -> rquickjs::Result<Result<Rule, AgentError>> {
    let handler: JsValue = r.get("handler")?;
    let Some(handler) = handler.into_function() else {
        return Ok(Err(shape_error(format!(
            "rule {i}: `handler` must be a function"
        ))));
    };
    let cond: JsValue = r.get("cond")?;
    let cond = if cond.is_undefined() || cond.is_null() {
        None
    } else {
        match cond.into_function() {
            Some(f) => Some(Persistent::save(ctx, f)),
            None => {
                return Ok(Err(shape_error(format!(
                    "rule {i}: `cond` must be a function"
                ))));
            }
        }
    };
    let space = match read_spaces(r.get("space")?, i, shared)? {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    let ts: JsValue = r.get("ts")?;
    let request: JsValue = r.get("request")?;
    let sensor: JsValue = r.get("sensor")?;
    let timer: JsValue = r.get("timer")?;
    let trigger = if !ts.is_undefined() {
        let template = match crate::convert::template_from_js(ctx, statics, ts) {
            Ok(t) => t,
            Err(rquickjs::Error::Exception) => {
                let msg = describe(ctx, ctx.catch());
                return Ok(Err(shape_error(format!("rule {i}: `ts`: {msg}"))));
            }
            Err(e) => return Err(e),
        };
        let kinds = match read_kinds(r.get("kind")?, i)? {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        Trigger::Tuple {
            spaces: space,
            template,
            kinds,
        }
    } else if !request.is_undefined() {
        let names: Vec<String> = if let Some(s) = request.as_string() {
            vec![s.to_string()?]
        } else if let Some(a) = request.as_array() {
            let mut v = Vec::new();
            for j in 0..a.len() {
                v.push(a.get::<Coerced<String>>(j)?.0);
            }
            v
        } else if request.as_bool() == Some(true) {
            vec!["*".into()]
        } else {
            return Ok(Err(shape_error(format!(
                "rule {i}: `request` must be \"rd\", \"inp\", \"test\", \"*\" or an array of them"
            ))));
        };
        let mut ops = [false; 3];
        for n in names {
            match n.as_str() {
                "*" => ops = [true; 3],
                "rd" => ops[0] = true,
                "inp" => ops[1] = true,
                "test" => ops[2] = true,
                other => {
                    return Ok(Err(shape_error(format!(
                        "rule {i}: unknown request op {other:?} (rd, inp, test or *)"
                    ))));
                }
            }
        }
        Trigger::Request { spaces: space, ops }
    } else if !sensor.is_undefined() {
        let Some(name) = sensor.as_string() else {
            return Ok(Err(shape_error(format!(
                "rule {i}: `sensor` must be a sensor name"
            ))));
        };
        Trigger::Sensor {
            name: name.to_string()?,
        }
    } else if !timer.is_undefined() {
        let ms = timer.as_number().unwrap_or(f64::NAN);
        if ms.is_nan() || ms < 0.0 {
            return Ok(Err(shape_error(format!(
                "rule {i}: `timer` must be a number of milliseconds"
            ))));
        }
        let once: JsValue = r.get("once")?;
        let period = Duration::from_millis(ms.min(1e12) as u64).max(limits.min_timer);
        Trigger::Timer {
            period,
            once: once.as_bool() == Some(true),
            next: Some(now + period),
        }
    } else {
        return Ok(Err(shape_error(format!(
            "rule {i} has no event: give `ts`, `request`, `sensor` or `timer`"
        ))));
    };
    Ok(Ok(Rule {
        trigger,
        cond,
        handler: Persistent::save(ctx, handler),
        call: None,
    }))
}
