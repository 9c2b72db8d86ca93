//! The JSON form of tuples (sans-IO: [`tuple_to_json`], [`parse_json_out`]) and the
//! [`JsonMirror`] that publishes a node's deliveries and `out`s what arrives on `json/in`.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use beets_core::driver::SpaceHandle;
use beets_core::{Delivery, DeliveryKind, Field, MAX_ARITY, Template, Tuple, Value};
use bytes::Bytes;
use serde_json::{Map, Number, Value as Json, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info_span, warn};

use crate::config::MqttConfig;
use crate::error::MqttError;
use crate::link::{Link, MqttStats, Route};

/// Why a JSON tuple was refused (counted in [`JsonStats::bad_json`] and logged at `warn`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// Not JSON at all.
    #[error("not JSON: {0}")]
    Syntax(String),
    /// JSON, but not of the schema (see the crate docs, "JSON mirror").
    #[error("{0}")]
    Schema(String),
}

fn schema(why: impl Into<String>) -> JsonError {
    JsonError::Schema(why.into())
}

/// The type name of a value in `"types"`: `int16`, `float32`, `str` or `bytes`.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Int16(_) => "int16",
        Value::Float32(_) => "float32",
        Value::Str(_) => "str",
        Value::Bytes(_) => "bytes",
    }
}

fn value_to_json(v: &Value) -> Json {
    match v {
        Value::Int16(i) => Json::from(*i),
        Value::Float32(f) if f.is_infinite() => Json::from(if *f > 0.0 { "inf" } else { "-inf" }),
        // The shortest decimal that reads back as this float32 (1.5, 0.1, 512.0), not the
        // float64 widening's digits (0.10000000149011612).
        Value::Float32(f) => format!("{f:?}")
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::from(s.as_str()),
        Value::Bytes(b) => Json::from(hex::encode(b)),
    }
}

/// A tuple's `"tuple"` and `"types"` arrays: numbers stay numbers (an infinite float32 is the
/// string `"inf"` or `"-inf"`), byte strings are lowercase hex.
///
/// ```
/// use beets_mqtt::json::tuple_to_json;
/// let t = r#"("SENSOR", "LIGHT", 512, 1.5)"#.parse().unwrap();
/// let (values, types) = tuple_to_json(&t);
/// assert_eq!(values.to_string(), r#"["SENSOR","LIGHT",512,1.5]"#);
/// assert_eq!(types.to_string(), r#"["str","str","int16","float32"]"#);
/// ```
pub fn tuple_to_json(t: &Tuple) -> (Json, Json) {
    let values = t.values().iter().map(value_to_json).collect();
    let types = t
        .values()
        .iter()
        .map(|v| Json::from(type_name(v)))
        .collect();
    (Json::Array(values), Json::Array(types))
}

/// The mirror's message for one delivery (see the crate docs for the schema). `at` is the wall
/// clock time the mirror handled it.
pub fn delivery_to_json(d: &Delivery, at: SystemTime) -> Json {
    let (tuple, types) = tuple_to_json(&d.tuple);
    let mut m = Map::new();
    let op = match d.kind {
        DeliveryKind::Out => "out",
        _ => "notify",
    };
    m.insert("op".into(), json!(op));
    m.insert("tuple".into(), tuple);
    m.insert("types".into(), types);
    // As the OUT gave it (whole seconds; an OUT carries whole seconds); null: until taken, or
    // a notification.
    m.insert(
        "lifetime".into(),
        d.lifetime.map_or(Json::Null, |l| json!(l.as_secs())),
    );
    m.insert(
        "from".into(),
        json!(d.from.map_or_else(|| "local".to_owned(), |p| p.to_string())),
    );
    if let Some(rssi) = d.rssi {
        m.insert("rssi".into(), json!(rssi));
    }
    m.insert("at".into(), json!(rfc3339(at)));
    Json::Object(m)
}

fn value_from_json(i: usize, v: &Json, ty: Option<&str>) -> Result<Value, JsonError> {
    let at = |why: String| schema(format!("tuple[{i}]: {why}"));
    let int16 = |n: &Number| -> Result<Value, JsonError> {
        let n = n
            .as_i64()
            .ok_or_else(|| at(format!("{n} is not an integer")))?;
        i16::try_from(n)
            .map(Value::Int16)
            .map_err(|_| at(format!("{n} is outside int16 (-32768..=32767)")))
    };
    let float32 = |v: &Json| -> Result<Value, JsonError> {
        let f = match v {
            Json::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            Json::String(s) if s == "inf" => f64::INFINITY,
            Json::String(s) if s == "-inf" => f64::NEG_INFINITY,
            other => return Err(at(format!("{other} is not a float32"))),
        };
        let g = f as f32;
        if g.is_nan() || (g.is_infinite() && f.is_finite()) {
            return Err(at(format!("{f} does not fit float32")));
        }
        Ok(Value::Float32(g))
    };
    let value = match (ty, v) {
        (None | Some("int16"), Json::Number(n)) if n.is_i64() || n.is_u64() => int16(n)?,
        (Some("int16"), other) => return Err(at(format!("{other} is not an int16"))),
        (None, Json::Number(_)) | (Some("float32"), _) => float32(v)?,
        (None | Some("str"), Json::String(s)) => Value::Str(s.as_str().into()),
        (Some("str"), other) => return Err(at(format!("{other} is not a string"))),
        (Some("bytes"), Json::String(s)) => {
            Value::Bytes(hex::decode(s).map_err(|e| at(format!("bytes are hex: {e}")))?)
        }
        (Some("bytes"), other) => return Err(at(format!("{other} is not a hex string"))),
        (Some(t), _) => return Err(at(format!("unknown type {t:?}"))),
        (None, other) => return Err(at(format!("{other} is not a number or a string"))),
    };
    Ok(value)
}

/// A JSON tuple to `out`: its tuple and lifetime.
///
/// Accepted forms: an object `{"tuple": [...], "types": [...], "lifetime": 600, "op": "out"}`
/// (`types`, `lifetime` and `op` optional; `op` must be `"out"` when present; other fields, such
/// as a mirrored message's `from` and `at`, are ignored), or a bare array `[...]`. Without
/// `types`, an integer is int16 (out of range is an error), another number float32 and a
/// string str.
///
/// ```
/// use beets_mqtt::json::parse_json_out;
/// let (t, life) = parse_json_out(br#"{"tuple": ["SENSOR", 512, 1.5], "lifetime": 60}"#)?;
/// assert_eq!(t.to_string(), r#"("SENSOR", 512, 1.5)"#);
/// assert_eq!(life, Some(std::time::Duration::from_secs(60)));
/// let (t, _) = parse_json_out(br#"[1, "x"]"#)?;
/// assert_eq!(t.arity(), 2);
/// # Ok::<(), beets_mqtt::JsonError>(())
/// ```
///
/// # Errors
/// [`JsonError::Syntax`] for bad JSON; [`JsonError::Schema`] naming the field otherwise: no
/// tuple, arity outside 1..=4, `types` of another length or naming an unknown type, a value
/// that does not fit its type, a lifetime outside 1..=65535 s, an op other than `out`, a string
/// too long for a value.
pub fn parse_json_out(payload: &[u8]) -> Result<(Tuple, Option<Duration>), JsonError> {
    let doc: Json =
        serde_json::from_slice(payload).map_err(|e| JsonError::Syntax(e.to_string()))?;
    let (values, types, lifetime) = match &doc {
        Json::Array(values) => (values, None, None),
        Json::Object(m) => {
            if let Some(op) = m.get("op")
                && op != "out"
            {
                return Err(schema(format!("op {op} is not \"out\"")));
            }
            let Some(Json::Array(values)) = m.get("tuple") else {
                return Err(schema("no \"tuple\" array"));
            };
            let types = match m.get("types") {
                None | Some(Json::Null) => None,
                Some(Json::Array(t)) => Some(t),
                Some(other) => return Err(schema(format!("\"types\" {other} is not an array"))),
            };
            (values, types, m.get("lifetime"))
        }
        other => {
            return Err(schema(format!(
                "expected an object or an array, got {}",
                kind(other)
            )));
        }
    };
    if values.is_empty() || values.len() > MAX_ARITY {
        return Err(schema(format!(
            "a tuple has 1..={MAX_ARITY} values, this one {}",
            values.len()
        )));
    }
    if let Some(t) = types
        && t.len() != values.len()
    {
        return Err(schema(format!(
            "{} types for {} values",
            t.len(),
            values.len()
        )));
    }
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let ty = match types.map(|t| &t[i]) {
            None => None,
            Some(Json::String(s)) => Some(s.as_str()),
            Some(other) => return Err(schema(format!("types[{i}] {other} is not a string"))),
        };
        out.push(value_from_json(i, v, ty)?);
    }
    let tuple = Tuple::new(out).map_err(|e| schema(e.to_string()))?;
    let lifetime = match lifetime {
        None | Some(Json::Null) => None,
        Some(Json::Number(n)) => match n.as_u64() {
            Some(s @ 1..=65535) => Some(Duration::from_secs(s)),
            _ => return Err(schema(format!("lifetime {n} is outside 1..=65535 s"))),
        },
        Some(other) => return Err(schema(format!("lifetime {other} is not a number"))),
    };
    Ok((tuple, lifetime))
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// `t` as RFC 3339 UTC with milliseconds, e.g. `2025-01-31T12:00:00.250Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Counters of a [`JsonMirror`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JsonStats {
    /// Deliveries published on `<prefix>/<space>/json`.
    pub published: u64,
    /// Deliveries not published (the connection was down or its queue full).
    pub publish_dropped: u64,
    /// JSON tuples received on `<prefix>/<space>/json/in` and `out` by the node.
    pub outs: u64,
    /// Payloads on `json/in` refused: bad JSON or not of the schema (each logged at `warn`).
    pub bad_json: u64,
    /// Valid JSON tuples the node refused to `out` (too long for a datagram, space closed).
    pub out_errors: u64,
    /// The connection's counters.
    pub mqtt: MqttStats,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    publish_dropped: AtomicU64,
    outs: AtomicU64,
    bad_json: AtomicU64,
    out_errors: AtomicU64,
}

/// Deliveries waiting for the mirror's task, per subscription.
const DELIVERY_BUFFER: usize = 1024;

/// Publishes every tuple a node stores or is notified of as JSON on `<prefix>/<space>/json`,
/// and `out`s the JSON tuples published on `<prefix>/<space>/json/in` (see the crate docs for
/// the schema). It works with any node's [`SpaceHandle`] — a UDP node's, an MQTT node's — over
/// a connection of its own.
#[derive(Debug)]
pub struct JsonMirror {
    link: Arc<Link>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl JsonMirror {
    /// Subscribes to every tuple of `space` (one catch-all template per arity) and connects to
    /// `config`'s broker, subscribed to the `json/in` topic.
    ///
    /// # Errors
    /// [`MqttError::Config`] for a bad configuration or TLS files; [`MqttError::Closed`] when
    /// the space is closed; [`MqttError::Io`] outside a tokio runtime.
    pub async fn spawn(space: SpaceHandle, config: &MqttConfig) -> Result<JsonMirror, MqttError> {
        let mut deliveries = Vec::with_capacity(MAX_ARITY);
        for arity in 1..=MAX_ARITY {
            let template = Template::new(std::iter::repeat_n(Field::ANY, arity))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let rx = space
                .subscribe(template, DELIVERY_BUFFER)
                .await
                .map_err(|_| MqttError::Closed)?;
            deliveries.push(rx);
        }
        let (tx, json_in) = mpsc::channel(DELIVERY_BUFFER);
        let routes = vec![Route {
            topic: config.json_in_topic(),
            tx,
        }];
        let link = Arc::new(Link::start(config, "json", routes)?);
        let counters = Arc::new(Counters::default());
        let span = info_span!("beets_mqtt_json", topic = %config.json_topic());
        let task = tokio::spawn(
            run(
                Arc::clone(&link),
                config.json_topic(),
                space,
                deliveries,
                json_in,
                Arc::clone(&counters),
            )
            .instrument(span),
        );
        Ok(JsonMirror {
            link,
            counters,
            task,
        })
    }

    /// Waits until the mirror's connection is up and subscribed, at most `timeout`.
    ///
    /// # Errors
    /// [`MqttError::Refused`], [`MqttError::NotConnected`] after `timeout`, [`MqttError::Closed`].
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), MqttError> {
        self.link.shared.wait_connected(timeout).await
    }

    /// The counters now.
    pub fn stats(&self) -> JsonStats {
        let c = &self.counters;
        JsonStats {
            published: c.published.load(Ordering::Relaxed),
            publish_dropped: c.publish_dropped.load(Ordering::Relaxed),
            outs: c.outs.load(Ordering::Relaxed),
            bad_json: c.bad_json.load(Ordering::Relaxed),
            out_errors: c.out_errors.load(Ordering::Relaxed),
            mqtt: self.link.stats(),
        }
    }

    /// Stops the mirror and disconnects; returns the final counters.
    pub async fn close(mut self) -> JsonStats {
        self.task.abort();
        let _ = (&mut self.task).await;
        self.link.close().await;
        self.stats()
    }
}

async fn run(
    link: Arc<Link>,
    topic: String,
    space: SpaceHandle,
    mut deliveries: Vec<mpsc::Receiver<Delivery>>,
    mut json_in: mpsc::Receiver<Bytes>,
    counters: Arc<Counters>,
) {
    enum Next {
        Delivery(Delivery),
        In(Bytes),
        Done,
    }
    loop {
        let next = poll_fn(|cx| {
            if let Poll::Ready(p) = json_in.poll_recv(cx) {
                return Poll::Ready(p.map_or(Next::Done, Next::In));
            }
            for rx in &mut deliveries {
                if let Poll::Ready(d) = rx.poll_recv(cx) {
                    return Poll::Ready(d.map_or(Next::Done, Next::Delivery));
                }
            }
            Poll::Pending
        })
        .await;
        match next {
            Next::Done => break,
            Next::Delivery(d) => {
                let msg = delivery_to_json(&d, SystemTime::now()).to_string();
                match link.try_publish(&topic, msg.into_bytes(), None) {
                    Ok(()) => counters.published.fetch_add(1, Ordering::Relaxed),
                    Err(_) => counters.publish_dropped.fetch_add(1, Ordering::Relaxed),
                };
            }
            Next::In(payload) => match parse_json_out(&payload) {
                Ok((tuple, lifetime)) => {
                    debug!(%tuple, ?lifetime, "JSON tuple in: out");
                    match space.out(tuple, lifetime).await {
                        Ok(()) => counters.outs.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            warn!(error = %e, "JSON tuple not sent");
                            counters.out_errors.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
                Err(e) => {
                    counters.bad_json.fetch_add(1, Ordering::Relaxed);
                    warn!(reason = %e, len = payload.len(), "bad JSON tuple dropped");
                }
            },
        }
    }
    debug!("JSON mirror stopped: the space closed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_250); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.250Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599); // 2024-12-31T23:59:59
        assert_eq!(rfc3339(t), "2024-12-31T23:59:59.000Z");
    }

    #[test]
    fn the_issue_example_round_trips() {
        let t: Tuple = r#"("SENSOR", "LIGHT", 512, 1.5)"#.parse().unwrap();
        let (values, types) = tuple_to_json(&t);
        let doc = json!({"op": "out", "tuple": values, "types": types, "lifetime": 600});
        let (back, life) = parse_json_out(doc.to_string().as_bytes()).unwrap();
        assert_eq!(back, t);
        assert_eq!(life, Some(Duration::from_secs(600)));
    }

    #[test]
    fn bad_json_is_refused_with_a_reason() {
        for (payload, why) in [
            (&b"{"[..], "not JSON"),
            (b"42", "expected an object or an array"),
            (b"{}", "no \"tuple\""),
            (b"[]", "1..=4 values"),
            (b"[1,2,3,4,5]", "1..=4 values"),
            (b"[40000]", "outside int16"),
            (b"[true]", "not a number or a string"),
            (
                br#"{"tuple": [1], "types": ["int16", "str"]}"#,
                "2 types for 1",
            ),
            (br#"{"tuple": [1], "types": ["int8"]}"#, "unknown type"),
            (br#"{"tuple": [1.5], "types": ["int16"]}"#, "not an int16"),
            (br#"{"tuple": ["x"], "types": ["bytes"]}"#, "hex"),
            (br#"{"tuple": [1e39]}"#, "does not fit float32"),
            (br#"{"tuple": [1], "lifetime": 0}"#, "lifetime"),
            (br#"{"tuple": [1], "lifetime": 70000}"#, "lifetime"),
            (br#"{"tuple": [1], "op": "inp"}"#, "op"),
        ] {
            let e = parse_json_out(payload).unwrap_err().to_string();
            assert!(e.contains(why), "{}: {e}", String::from_utf8_lossy(payload));
        }
        let long = format!("[\"{}\"]", "x".repeat(100_000));
        assert!(parse_json_out(long.as_bytes()).is_err());
    }

    #[test]
    fn untyped_numbers_follow_the_text_syntax() {
        let (t, _) = parse_json_out(br#"[512, 1.5, -1, "inf"]"#).unwrap();
        assert_eq!(t.to_string(), r#"(512, 1.5, -1, "inf")"#);
        let (t, _) =
            parse_json_out(br#"{"tuple": [512, "inf"], "types": ["float32", "float32"]}"#).unwrap();
        assert_eq!(t.values()[0], Value::Float32(512.0));
        assert_eq!(t.values()[1], Value::Float32(f32::INFINITY));
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i16>().prop_map(Value::Int16),
            any::<f32>()
                .prop_filter("no NaN", |f| !f.is_nan())
                .prop_map(Value::Float32),
            ".{0,40}".prop_map(|s: String| Value::Str(s.as_str().into())),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        ]
    }

    proptest! {
        #[test]
        fn tuples_round_trip_through_json(values in proptest::collection::vec(value(), 1..=4)) {
            let Ok(t) = Tuple::new(values) else { return Ok(()) };
            let (v, ty) = tuple_to_json(&t);
            let doc = json!({"tuple": v, "types": ty}).to_string();
            let (back, life) = parse_json_out(doc.as_bytes()).unwrap();
            prop_assert_eq!(&back, &t);
            prop_assert_eq!(life, None);
        }

        #[test]
        fn arbitrary_bytes_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_json_out(&payload);
        }
    }
}
