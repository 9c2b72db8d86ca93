//! Values across the JavaScript boundary.
//!
//! | BeeTS | JavaScript (to agents) | JavaScript (from agents) |
//! |---|---|---|
//! | int16 | number | a number that [`Value::number`] classifies as int16: integral, −32768..=32767, not −0 |
//! | float32 | number, or a `Number` object when the number alone would read back as int16 (an integral value in int16 range such as `2.0`, or ±∞) | any other finite number (rounded to float32); a `Number` object (`float32(x)`, `new Number(x)`) is always float32 |
//! | string | string | string (UTF-8, ≤ 8191 bytes) |
//! | bytes | `Uint8Array` (a copy) | `Uint8Array` (≤ 8191 bytes) |
//! | tuple | array of 1..=4 values | array of 1..=4 values, or a string in the text syntax `("A", 1)` |
//! | template | array; formals are the symbols `ANY`, `INT16`, `FLOAT32`, `STR` | array whose formals are those symbols, `null` or `undefined` (= `ANY`); or a string in the text syntax `("A", ?int16, ?)` |
//!
//! So a tuple handed to an agent and passed back unchanged (a router) keeps every element's type.
//! NaN, ±∞ as plain numbers, booleans, objects and other types throw a `TypeError` or
//! `RangeError` naming the element.

use beets_core::{Field, MAX_ARITY, MAX_VALUE_LEN, Template, Tuple, TypeCode, Value};
use rquickjs::IntoAtom;
use rquickjs::function::{Constructor, This};
use rquickjs::object::Property;
use rquickjs::{Array, Ctx, Exception, Function, IntoJs, Object, Persistent, Symbol, TypedArray};

type JsValue<'js> = rquickjs::Value<'js>;

/// Objects captured from a fresh context before any agent code ran, so later tampering with
/// globals cannot change how values are converted.
pub(crate) struct Statics {
    any: Persistent<Symbol<'static>>,
    int16: Persistent<Symbol<'static>>,
    float32: Persistent<Symbol<'static>>,
    str: Persistent<Symbol<'static>>,
    /// `Number`, to build boxed float32 values.
    number: Persistent<Constructor<'static>>,
    /// `Number.prototype.valueOf`: succeeds only on real `Number` objects.
    value_of: Persistent<Function<'static>>,
    /// `Object.freeze`.
    pub(crate) freeze: Persistent<Function<'static>>,
    /// `Reflect.apply`.
    apply: Persistent<Function<'static>>,
}

impl Statics {
    /// Captures the originals from `ctx`, which must not have run agent code yet.
    pub(crate) fn capture(ctx: &Ctx<'_>) -> rquickjs::Result<Statics> {
        let g = ctx.globals();
        let number: Constructor = g.get("Number")?;
        let proto: Object = number.get("prototype")?;
        let value_of: Function = proto.get("valueOf")?;
        let object: Object = g.get("Object")?;
        let freeze: Function = object.get("freeze")?;
        let reflect: Object = g.get("Reflect")?;
        let apply: Function = reflect.get("apply")?;
        let sym = |d: &str| Symbol::with_description(ctx.clone(), d);
        Ok(Statics {
            any: Persistent::save(ctx, sym("?")?),
            int16: Persistent::save(ctx, sym("?int16")?),
            float32: Persistent::save(ctx, sym("?float32")?),
            str: Persistent::save(ctx, sym("?str")?),
            number: Persistent::save(ctx, number),
            value_of: Persistent::save(ctx, value_of),
            freeze: Persistent::save(ctx, freeze),
            apply: Persistent::save(ctx, apply),
        })
    }

    /// The formal symbols, in the order `ANY`, `INT16`, `FLOAT32`, `STR`.
    pub(crate) fn formals<'js>(&self, ctx: &Ctx<'js>) -> rquickjs::Result<[Symbol<'js>; 4]> {
        Ok([
            self.any.clone().restore(ctx)?,
            self.int16.clone().restore(ctx)?,
            self.float32.clone().restore(ctx)?,
            self.str.clone().restore(ctx)?,
        ])
    }

    /// The original `Reflect.apply`.
    pub(crate) fn apply<'js>(&self, ctx: &Ctx<'js>) -> rquickjs::Result<Function<'js>> {
        self.apply.clone().restore(ctx)
    }

    /// One formal symbol: 0 `ANY`, 1 `INT16`, 2 `FLOAT32`, 3 `STR`.
    pub(crate) fn formal<'js>(&self, ctx: &Ctx<'js>, idx: usize) -> rquickjs::Result<Symbol<'js>> {
        [&self.any, &self.int16, &self.float32, &self.str][idx.min(3)]
            .clone()
            .restore(ctx)
    }

    /// A boxed `Number` holding `x` (what agents see for an ambiguous float32).
    pub(crate) fn boxed<'js>(&self, ctx: &Ctx<'js>, x: f64) -> rquickjs::Result<JsValue<'js>> {
        let number = self.number.clone().restore(ctx)?;
        number.construct((x,))
    }

    pub(crate) fn freeze<'js>(&self, ctx: &Ctx<'js>, obj: &Object<'js>) -> rquickjs::Result<()> {
        let freeze = self.freeze.clone().restore(ctx)?;
        freeze.call::<_, JsValue>((obj.clone(),))?;
        Ok(())
    }
}

/// Defines an own, writable, enumerable, configurable property: unlike `set`, it ignores
/// setters an agent may have put on `Object.prototype` or `Array.prototype`.
pub(crate) fn put<'js, K: IntoAtom<'js>, V: IntoJs<'js>>(
    obj: &Object<'js>,
    key: K,
    value: V,
) -> rquickjs::Result<()> {
    obj.prop(
        key,
        Property::from(value).writable().enumerable().configurable(),
    )
}

/// Throws a `TypeError` with `msg` (the `Err` to return from a native function).
pub(crate) fn type_error(ctx: &Ctx<'_>, msg: &str) -> rquickjs::Error {
    Exception::throw_type(ctx, msg)
}

/// Throws a `RangeError` with `msg`.
pub(crate) fn range_error(ctx: &Ctx<'_>, msg: &str) -> rquickjs::Error {
    Exception::throw_range(ctx, msg)
}

/// Whether a float32 would come back as something else if given to JavaScript as a plain number
/// (integral values in int16 range, ±∞).
fn float_needs_box(f: f32) -> bool {
    !matches!(Value::number(f64::from(f)), Ok(Value::Float32(g)) if g.to_bits() == f.to_bits())
}

/// One value for an agent.
pub(crate) fn value_to_js<'js>(
    ctx: &Ctx<'js>,
    statics: &Statics,
    v: &Value,
) -> rquickjs::Result<JsValue<'js>> {
    Ok(match v {
        Value::Int16(i) => JsValue::new_int(ctx.clone(), i32::from(*i)),
        Value::Float32(f) if float_needs_box(*f) => statics.boxed(ctx, f64::from(*f))?,
        Value::Float32(f) => JsValue::new_float(ctx.clone(), f64::from(*f)),
        Value::Str(s) => rquickjs::String::from_str(ctx.clone(), s)?.into_value(),
        Value::Bytes(b) => TypedArray::<u8>::new_copy(ctx.clone(), b)?.into_value(),
    })
}

/// A tuple for an agent: an array.
pub(crate) fn tuple_to_js<'js>(
    ctx: &Ctx<'js>,
    statics: &Statics,
    t: &Tuple,
) -> rquickjs::Result<JsValue<'js>> {
    let arr = Array::new(ctx.clone())?;
    for (i, v) in t.values().iter().enumerate() {
        put(&arr, i as u32, value_to_js(ctx, statics, v)?)?;
    }
    Ok(arr.into_value())
}

/// A template's elements for an agent: values, and formal symbols for formals.
pub(crate) fn template_elements<'js>(
    ctx: &Ctx<'js>,
    statics: &Statics,
    t: &Template,
) -> rquickjs::Result<Elements<'js>> {
    t.fields()
        .iter()
        .map(|f| match f {
            Field::Actual(v) => value_to_js(ctx, statics, v),
            Field::Formal(code) => {
                let idx = match code {
                    None => 0,
                    Some(TypeCode::Int16) => 1,
                    Some(TypeCode::Float32) => 2,
                    Some(TypeCode::Str) => 3,
                };
                Ok(statics.formal(ctx, idx)?.into_value())
            }
        })
        .collect()
}

/// The elements of a tuple or template as JavaScript values, without a heap allocation.
pub(crate) type Elements<'js> = arrayvec::ArrayVec<JsValue<'js>, MAX_ARITY>;

/// One value from an agent; `what` names it in error messages ("element 2").
pub(crate) fn value_from_js<'js>(
    ctx: &Ctx<'js>,
    statics: &Statics,
    v: JsValue<'js>,
    what: &dyn Fn() -> String,
) -> rquickjs::Result<Value> {
    if let Some(x) = v.as_number() {
        return Value::number(x).map_err(|e| range_error(ctx, &format!("{}: {e}", what())));
    }
    if let Some(s) = v.as_string() {
        // QuickJS hands out an ASCII string's own bytes (no copy); short strings then live
        // inline in the value, so a sensor name costs no allocation (`to_string` made two).
        let not_utf8 = || type_error(ctx, &format!("{}: not valid UTF-8", what()));
        let c = s.clone().to_cstring().map_err(|_| not_utf8())?;
        let s = std::str::from_utf8(c.as_bytes()).map_err(|_| not_utf8())?;
        return Value::string(s).map_err(|e| range_error(ctx, &format!("{}: {e}", what())));
    }
    if let Some(obj) = v.as_object() {
        if obj.is_typed_array::<u8>() {
            return bytes_from_js(ctx, obj, what);
        }
        let value_of = statics.value_of.clone().restore(ctx)?;
        if let Ok(x) = value_of.call::<_, f64>((This(obj.clone()),)) {
            let f = x as f32;
            if x.is_nan() || (x.is_finite() && f.is_infinite()) {
                return Err(range_error(
                    ctx,
                    &format!("{}: {x} is not a float32 (NaN or beyond ±3.4e38)", what()),
                ));
            }
            return Ok(Value::Float32(f));
        }
        // valueOf threw a TypeError for a non-Number object: forget it, throw ours.
        let _ = ctx.catch();
    }
    Err(type_error(
        ctx,
        &format!(
            "{}: a {} is not a BeeTS value (number, float32(x), string or Uint8Array)",
            what(),
            v.type_name()
        ),
    ))
}

/// Reads a `Uint8Array` element by element (bounded, no unsafe slice access, no use of the
/// tamperable `length` getter).
fn bytes_from_js<'js>(
    ctx: &Ctx<'js>,
    obj: &Object<'js>,
    what: &dyn Fn() -> String,
) -> rquickjs::Result<Value> {
    let mut out = Vec::new();
    loop {
        let idx = out.len() as u32;
        let b: JsValue = obj.get(idx)?;
        let Some(n) = b.as_int() else { break };
        if out.len() == MAX_VALUE_LEN {
            return Err(range_error(
                ctx,
                &format!("{}: bytes hold at most {MAX_VALUE_LEN} bytes", what()),
            ));
        }
        out.push(n as u8);
    }
    Ok(Value::Bytes(out))
}

fn elements<'js>(ctx: &Ctx<'js>, v: &JsValue<'js>, kind: &str) -> rquickjs::Result<Array<'js>> {
    let Some(arr) = v.as_array() else {
        return Err(type_error(
            ctx,
            &format!(
                "a {kind} is an array of 1 to 4 elements or a string in the text syntax, not a {}",
                v.type_name()
            ),
        ));
    };
    let n = arr.len();
    if n == 0 || n > MAX_ARITY {
        return Err(range_error(
            ctx,
            &format!("a {kind} has 1 to 4 elements, this array has {n}"),
        ));
    }
    Ok(arr.clone())
}

/// A tuple from an agent: an array, or a string in the text syntax.
pub(crate) fn tuple_from_js<'js>(
    ctx: &Ctx<'js>,
    statics: &Statics,
    v: JsValue<'js>,
) -> rquickjs::Result<Tuple> {
    if let Some(s) = v.as_string() {
        let s = s.to_string()?;
        return beets_core::parse_tuple(&s).map_err(|e| type_error(ctx, &format!("tuple: {e}")));
    }
    let arr = elements(ctx, &v, "tuple")?;
    // At most MAX_ARITY elements (`elements` checked; the range is taken once, so a `valueOf`
    // that grows the array changes nothing).
    let mut values = arrayvec::ArrayVec::<Value, MAX_ARITY>::new();
    for i in 0..arr.len() {
        let e: JsValue = arr.get(i)?;
        values.push(value_from_js(ctx, statics, e, &|| {
            format!("tuple element {i}")
        })?);
    }
    Tuple::new(values).map_err(|e| range_error(ctx, &format!("tuple: {e}")))
}

/// A template from an agent: an array (formals: `ANY`, `INT16`, `FLOAT32`, `STR`, `null`,
/// `undefined`), or a string in the text syntax.
pub(crate) fn template_from_js<'js>(
    ctx: &Ctx<'js>,
    statics: &Statics,
    v: JsValue<'js>,
) -> rquickjs::Result<Template> {
    if let Some(s) = v.as_string() {
        let s = s.to_string()?;
        return beets_core::parse_template(&s)
            .map_err(|e| type_error(ctx, &format!("template: {e}")));
    }
    let arr = elements(ctx, &v, "template")?;
    let mut fields = Vec::with_capacity(arr.len());
    let mut formals = None;
    for i in 0..arr.len() {
        let e: JsValue = arr.get(i)?;
        let field = if e.is_null() || e.is_undefined() {
            Field::ANY
        } else if e.is_symbol() {
            let s = match &formals {
                Some(s) => s,
                None => formals.insert(statics.formals(ctx)?),
            };
            match s.iter().position(|s| s.as_value() == &e) {
                Some(0) => Field::ANY,
                Some(1) => Field::Formal(Some(TypeCode::Int16)),
                Some(2) => Field::Formal(Some(TypeCode::Float32)),
                Some(3) => Field::Formal(Some(TypeCode::Str)),
                _ => {
                    return Err(type_error(
                        ctx,
                        &format!(
                            "template element {i}: an unknown symbol is not a formal (use ANY, INT16, FLOAT32 or STR)"
                        ),
                    ));
                }
            }
        } else {
            Field::Actual(value_from_js(ctx, statics, e, &|| {
                format!("template element {i}")
            })?)
        };
        fields.push(field);
    }
    Template::new(fields).map_err(|e| range_error(ctx, &format!("template: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_floats_are_boxed() {
        assert!(float_needs_box(2.0));
        assert!(float_needs_box(0.0));
        assert!(float_needs_box(f32::INFINITY));
        assert!(float_needs_box(-32768.0));
        assert!(!float_needs_box(-0.0));
        assert!(!float_needs_box(1.5));
        assert!(!float_needs_box(40000.0));
        assert!(!float_needs_box(0.1));
    }
}
