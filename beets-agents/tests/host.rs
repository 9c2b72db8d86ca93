//! The sans-IO agent host: rules, the JavaScript API, promises and value mapping.

use std::time::Duration;

use beets_agents::{
    Action, AgentEvent, AgentHost, Completion, HostConfig, HostQuery, RequestOp, SpaceSpec,
    TupleKind, active,
};
use beets_core::node::IncomingRequest;
use beets_core::{Op, PeerAddr, Received, Time, Transport, Tuple, Value, parse_template};

fn t(s: &str) -> Tuple {
    s.parse().unwrap()
}

fn ms(n: u64) -> Time {
    Time::from_millis(n)
}

fn host() -> AgentHost {
    AgentHost::new(HostConfig::new([
        SpaceSpec::new("ble-ts", Transport::Ble),
        SpaceSpec::new("udp-ts", Transport::Udp),
    ]))
}

fn ble(last: u8, at: u64) -> Received {
    Received {
        from: PeerAddr::Ble([0xAA, 0xBB, 0xCC, 0xDD, 0xEE, last]),
        at: ms(at),
        rssi: Some(-70),
    }
}

fn actions(h: &mut AgentHost) -> Vec<Action> {
    std::iter::from_fn(|| h.poll_action()).collect()
}

fn logs(h: &mut AgentHost) -> Vec<String> {
    std::iter::from_fn(|| h.poll_event())
        .filter_map(|e| match e {
            AgentEvent::Log { message, .. } => Some(message),
            AgentEvent::Fault { fault, .. } => panic!("unexpected fault: {fault}"),
            _ => None,
        })
        .collect()
}

#[test]
fn filter_agent_refuses_rd_from_a_given_sender() {
    let mut h = host();
    h.load(
        ms(0),
        "filter",
        r#"({
            refused: 0,
            rules: [{ request: ["rd", "test"], space: "ble-ts",
                      handler(tpl, ev) {
                          if (ev.from === "AA:BB:CC:DD:EE:01") { this.refused++; log("refused", ev.op, tpl[0], tpl[1] === ANY); return false; }
                      } }]
        })"#,
    )
    .unwrap();
    let ble_ts = h.space_id("ble-ts").unwrap();
    let tpl = parse_template(r#"("SECRET", ?)"#).unwrap();
    let req = |op, rx| IncomingRequest {
        op,
        template: &tpl,
        received: rx,
    };
    assert!(!h.allow_request(ms(1), ble_ts, &req(Op::Rd, ble(0x01, 1))));
    assert!(h.allow_request(ms(2), ble_ts, &req(Op::Rd, ble(0x02, 2))));
    // INP is not filtered by this rule, nor is the other space.
    assert!(h.allow_request(ms(3), ble_ts, &req(Op::Inp, ble(0x01, 3))));
    let udp_ts = h.space_id("udp-ts").unwrap();
    assert!(h.allow_request(ms(4), udp_ts, &req(Op::Rd, ble(0x01, 4))));
    assert_eq!(h.stats().refused, 1);
    assert_eq!(logs(&mut h), ["refused rd SECRET true"]);
}

#[test]
fn consuming_ts_rule_returns_true_only_for_its_tuples() {
    let mut h = host();
    h.load(
        ms(0),
        "eater",
        r#"({ rules: [
            { ts: '("SENSOR", ?, ?, ?)', space: "ble-ts", kind: "out",
              cond(t, ev) { return ev.rssi > -80; },
              handler(t, ev) { log(ev.space, ev.kind, ev.from, ev.time, ev.rssi, t.join("|")); return t[2] > 100; } },
        ] })"#,
    )
    .unwrap();
    let s = h.space_id("ble-ts").unwrap();
    let rx = ble(7, 5);
    assert!(h.on_tuple(
        ms(5),
        s,
        TupleKind::Out,
        &t(r#"("SENSOR", "LIGHT", 512, 3)"#),
        None,
        Some(&rx)
    ));
    assert!(!h.on_tuple(
        ms(6),
        s,
        TupleKind::Out,
        &t(r#"("SENSOR", "LIGHT", 5, 3)"#),
        None,
        Some(&rx)
    ));
    // Other kind, other arity, other space, weak signal: not even called.
    assert!(!h.on_tuple(
        ms(7),
        s,
        TupleKind::Notify,
        &t(r#"("SENSOR", "LIGHT", 512, 3)"#),
        None,
        Some(&rx)
    ));
    assert!(!h.on_tuple(
        ms(8),
        s,
        TupleKind::Out,
        &t(r#"("SENSOR", 512)"#),
        None,
        Some(&rx)
    ));
    let u = h.space_id("udp-ts").unwrap();
    assert!(!h.on_tuple(
        ms(9),
        u,
        TupleKind::Out,
        &t(r#"("SENSOR", "LIGHT", 512, 3)"#),
        None,
        Some(&rx)
    ));
    let weak = Received {
        rssi: Some(-95),
        ..rx
    };
    assert!(!h.on_tuple(
        ms(10),
        s,
        TupleKind::Out,
        &t(r#"("SENSOR", "LIGHT", 512, 3)"#),
        None,
        Some(&weak)
    ));
    assert_eq!(
        logs(&mut h),
        [
            "ble-ts out AA:BB:CC:DD:EE:07 5 -70 SENSOR|LIGHT|512|3",
            "ble-ts out AA:BB:CC:DD:EE:07 5 -70 SENSOR|LIGHT|5|3",
        ]
    );
    assert_eq!(h.stats().consumed, 1);
}

#[test]
fn sensor_rule_sees_current_and_previous_value() {
    let mut h = host();
    h.load(
        ms(0),
        "light",
        r#"({ rules: [
            { sensor: "light", cond(v, prev) { return v !== prev; },
              handler(v, prev, ev) {
                  log(ev.sensor, v, prev, ev.time, sensor("light"));
                  spaces["ble-ts"].out(["SENSOR", "LIGHT", v, ev.time]);
              } },
        ] })"#,
    )
    .unwrap();
    h.on_sensor(ms(10), "light", Value::Int16(300));
    h.on_sensor(ms(20), "light", Value::Int16(300));
    h.on_sensor(ms(30), "light", Value::Int16(310));
    h.on_sensor(ms(40), "temp", Value::Float32(21.5));
    assert_eq!(
        logs(&mut h),
        ["light 300 null 10 300", "light 310 300 30 310"]
    );
    let outs = actions(&mut h);
    assert_eq!(outs.len(), 2);
    assert!(matches!(&outs[1], Action::Out { tuple, lifetime: None, .. }
        if *tuple == t(r#"("SENSOR", "LIGHT", 310, 30)"#)));
}

#[test]
fn timer_rules_fire_periodically_and_once() {
    let mut h = host();
    h.load(
        ms(1000),
        "clock",
        r#"({ ticks: 0, rules: [
            { timer: 100, handler(now) { this.ticks++; log("tick", now, this.ticks); } },
            { timer: 250, once: true, handler(now) { log("once", now, time()); } },
        ] })"#,
    )
    .unwrap();
    assert_eq!(h.poll_timeout(), Some(ms(1100)));
    h.handle_timeout(ms(1099));
    h.handle_timeout(ms(1100));
    assert_eq!(h.poll_timeout(), Some(ms(1200)));
    h.handle_timeout(ms(1200));
    h.handle_timeout(ms(1250));
    h.handle_timeout(ms(1305));
    assert_eq!(h.poll_timeout(), Some(ms(1405)));
    assert_eq!(
        logs(&mut h),
        [
            "tick 1100 1",
            "tick 1200 2",
            "once 1250 1250",
            "tick 1305 3"
        ]
    );
}

#[test]
fn rd_promise_resolves_with_reply_and_callback_runs() {
    let mut h = host();
    h.load(
        ms(0),
        "asker",
        r#"({ rules: [{ timer: 10, once: true, handler() {
            spaces["udp-ts"].rd(["SURVEY", ANY, INT16], 500).then(r => log("promise", r.tuple.join(","), r.from, r.time, r.rssi));
            spaces["udp-ts"].inp('("SURVEY", ?, ?int16)', r => log("callback", r.tuple[1]));
        } }] })"#,
    )
    .unwrap();
    h.handle_timeout(ms(10));
    let acts = actions(&mut h);
    let [
        Action::Request {
            token: t1,
            op: RequestOp::Rd,
            template,
            timeout,
            ..
        },
        Action::Request {
            token: t2,
            op: RequestOp::Inp,
            timeout: t2_timeout,
            ..
        },
    ] = &acts[..]
    else {
        panic!("{acts:?}")
    };
    assert_eq!(
        *template,
        parse_template(r#"("SURVEY", ?, ?int16)"#).unwrap()
    );
    assert_eq!(*timeout, Duration::from_millis(500));
    assert_eq!(*t2_timeout, beets_agents::DEFAULT_REQUEST_TIMEOUT);
    let rx = Received {
        from: PeerAddr::Ip("10.0.0.9:49737".parse().unwrap()),
        at: ms(12),
        rssi: None,
    };
    h.complete(
        ms(12),
        *t1,
        Completion::Tuple(Some((t(r#"("SURVEY", "Q1", 3)"#), Some(rx)))),
    );
    h.complete(
        ms(13),
        *t2,
        Completion::Tuple(Some((t(r#"("SURVEY", "Q2", 4)"#), Some(rx)))),
    );
    // A second completion of the same token is ignored.
    h.complete(ms(14), *t2, Completion::Tuple(None));
    assert_eq!(
        logs(&mut h),
        ["promise SURVEY,Q1,3 10.0.0.9:49737 12 null", "callback Q2"]
    );
    assert_eq!(h.poll_timeout(), None);
}

#[test]
fn promises_resolve_with_null_on_timeout() {
    let mut h = host();
    h.load(
        ms(0),
        "asker",
        r#"({ rules: [{ timer: 10, once: true, async handler() {
            spaces["ble-ts"].test(["X"], 200, r => log("callback", r));
            const r = await spaces["ble-ts"].rd(["X"], 100);
            log("awaited", r);
        } }] })"#,
    )
    .unwrap();
    h.handle_timeout(ms(10));
    let acts = actions(&mut h);
    assert_eq!(acts.len(), 2);
    // The caller completes the RD with "none at the timeout".
    let Action::Request { token, .. } = &acts[1] else {
        panic!()
    };
    h.complete(ms(110), *token, Completion::Tuple(None));
    // Nobody completes the TEST: the host resolves it itself after its timeout + grace.
    assert_eq!(
        h.poll_timeout(),
        Some(ms(10 + 200) + beets_agents::REQUEST_GRACE)
    );
    h.handle_timeout(ms(309));
    h.handle_timeout(ms(310));
    assert_eq!(logs(&mut h), ["awaited null", "callback null"]);
    assert_eq!(h.poll_timeout(), None);
}

#[test]
fn host_queries_resolve_with_tuples_and_counts() {
    let mut h = host();
    h.load(
        ms(0),
        "local",
        r#"({ rules: [{ timer: 10, once: true, handler() {
            host.out(["A", 1], 30);
            spaces["udp-ts"].host.rd(["A", ANY]).then(t => log("rd", t));
            host.count(["A", ANY], n => log("count", n));
            host.rm(["A", ANY]).then(n => log("rm", n));
            host.inp(["B"]).then(t => log("inp", t));
        } }] })"#,
    )
    .unwrap();
    h.handle_timeout(ms(10));
    let acts = actions(&mut h);
    assert!(
        matches!(&acts[0], Action::HostOut { lifetime: Some(l), .. } if *l == Duration::from_secs(30))
    );
    let tokens: Vec<_> = acts[1..]
        .iter()
        .map(|a| match a {
            Action::Host { token, query, .. } => (*token, *query),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        tokens.iter().map(|(_, q)| *q).collect::<Vec<_>>(),
        [
            HostQuery::Rd,
            HostQuery::Count,
            HostQuery::Rm,
            HostQuery::Inp
        ]
    );
    assert_eq!(acts[1].space(), h.space_id("udp-ts").unwrap());
    h.complete(
        ms(11),
        tokens[0].0,
        Completion::Tuple(Some((t(r#"("A", 1)"#), None))),
    );
    h.complete(ms(11), tokens[1].0, Completion::Count(1));
    h.complete(ms(11), tokens[2].0, Completion::Count(1));
    h.complete(
        ms(11),
        tokens[3].0,
        Completion::Failed("space closed".into()),
    );
    let events: Vec<_> = std::iter::from_fn(|| h.poll_event()).collect();
    let lines: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Log { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        lines,
        [
            "rd A,1",
            "count 1",
            "rm 1",
            "operation failed, resolving with null: space closed",
            "inp null"
        ]
    );
}

#[test]
fn values_keep_their_type_through_an_agent() {
    let mut h = host();
    h.load(
        ms(0),
        "echo",
        r#"({ rules: [{ ts: '(?, ?, ?, ?)', handler(t) {
            log(typeof t[0], typeof t[1], t[1] instanceof Number, typeof t[2], t[3] instanceof Uint8Array, t[3].length);
            spaces["udp-ts"].out(t);
            spaces["udp-ts"].out([1.5, 40000, -0, float32(3)]);
            spaces["udp-ts"].out(["é", new Uint8Array([1, 2, 255]), t[1] + 1, t[2]]);
        } }] })"#,
    )
    .unwrap();
    let s = h.space_id("ble-ts").unwrap();
    let input = Tuple::new([
        Value::Int16(-7),
        Value::Float32(2.0),
        Value::Float32(0.25),
        Value::Bytes(vec![0, 9]),
    ])
    .unwrap();
    h.on_tuple(ms(1), s, TupleKind::Notify, &input, None, None);
    assert_eq!(logs(&mut h), ["number object true number true 2"]);
    let outs: Vec<Tuple> = actions(&mut h)
        .into_iter()
        .map(|a| match a {
            Action::Out { tuple, .. } => tuple,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(outs[0], input);
    let v = outs[1].values();
    assert_eq!(v[0], Value::Float32(1.5));
    assert_eq!(v[1], Value::Float32(40000.0));
    assert!(matches!(v[2], Value::Float32(z) if z == 0.0 && z.is_sign_negative()));
    assert_eq!(v[3], Value::Float32(3.0));
    assert_eq!(
        outs[2].values(),
        [
            Value::Str("é".into()),
            Value::Bytes(vec![1, 2, 255]),
            Value::Int16(3),
            Value::Float32(0.25)
        ]
    );
}

#[test]
fn api_misuse_throws_with_the_limit_named() {
    let mut h = host();
    h.load(
        ms(0),
        "misuse",
        r#"({ rules: [{ timer: 10, once: true, handler() {
            const tryit = (f) => { try { f(); return "ok"; } catch (e) { return e.name + ": " + e.message; } };
            log(tryit(() => spaces["ble-ts"].out(["a string far too long for one BLE advertisement"])));
            log(tryit(() => spaces["ble-ts"].out([true])));
            log(tryit(() => spaces["ble-ts"].out([1, 2, 3, 4, 5])));
            log(tryit(() => spaces["ble-ts"].out([NaN])));
            log(tryit(() => spaces["ble-ts"].out(["x"], 0)));
            log(tryit(() => spaces["ble-ts"].rd('("x", ?bool)')));
            log(tryit(() => spaces.nope.out(["x"])));
        } }] })"#,
    )
    .unwrap();
    h.handle_timeout(ms(10));
    assert_eq!(
        logs(&mut h),
        [
            r#"RangeError: OUT message needs 50 bytes, space "ble-ts" carries at most 31"#,
            "TypeError: tuple element 0: a bool is not a BeeTS value (number, float32(x), string or Uint8Array)",
            "RangeError: a tuple has 1 to 4 elements, this array has 5",
            "RangeError: tuple element 0: NaN is not a BeeTS value (spec wire-v1 §1)",
            "RangeError: a lifetime is a number of seconds in 1..=65535 (spec §4)",
            "TypeError: template: expected a type after '?' (int16, float32 or str) at byte 7, found \"bool\"",
            "TypeError: cannot read property 'out' of undefined",
        ]
    );
    assert!(actions(&mut h).is_empty());
}

#[test]
fn load_errors_name_the_problem() {
    let mut h = host();
    let e = h.load(ms(0), "a", "42").unwrap_err();
    assert!(e.to_string().contains("must evaluate to an object"), "{e}");
    let e = h
        .load(ms(0), "a", r#"({ rules: [{ ts: "(", handler() {} }] })"#)
        .unwrap_err();
    assert!(
        e.to_string().starts_with("not an agent: rule 0: `ts`: "),
        "{e}"
    );
    let e = h
        .load(
            ms(0),
            "a",
            r#"({ rules: [{ ts: "(1)", space: "wifi", handler() {} }] })"#,
        )
        .unwrap_err();
    assert!(e.to_string().contains(r#"unknown space "wifi""#), "{e}");
    let e = h
        .load(ms(0), "a", r#"({ rules: [{ timer: 5 }] })"#)
        .unwrap_err();
    assert!(
        e.to_string().contains("`handler` must be a function"),
        "{e}"
    );
    let e = h.load(ms(0), "a", "syntax error here").unwrap_err();
    assert!(e.to_string().contains("SyntaxError"), "{e}");
    let e = h.load(ms(0), "", "({})").unwrap_err();
    assert!(e.to_string().contains("not 1..=64"), "{e}");
    assert!(h.agents().is_empty());
}

#[test]
fn loading_under_the_same_name_replaces_the_agent() {
    let mut h = host();
    let a = h.load(ms(0), "x", r#"({ init() { log("v1") } })"#).unwrap();
    let b = h.load(ms(0), "x", r#"({ init() { log("v2") } })"#).unwrap();
    assert_ne!(a, b);
    let agents = h.agents();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].id, b);
    assert!(agents[0].memory > 0);
    assert_eq!(logs(&mut h), ["v1", "v2"]);
    assert!(h.unload(b));
    assert!(!h.unload(b));
}

#[test]
fn active_tuples_are_plain_data_unless_enabled() {
    let src = r#"({ init() { log("hello from afar") } })"#;
    let tuple = active::encode("greeter", 1, src).unwrap();
    let rx = Received {
        from: PeerAddr::Ip("10.0.0.2:49737".parse().unwrap()),
        at: ms(1),
        rssi: None,
    };

    // Off by default: not consumed, nothing started.
    let mut h = host();
    let u = h.space_id("udp-ts").unwrap();
    assert!(!h.on_tuple(ms(1), u, TupleKind::Out, &tuple, None, Some(&rx)));
    assert!(h.agents().is_empty());

    // Enabled, but the space is not keyed: still plain data.
    let mut cfg = HostConfig::new([SpaceSpec::new("udp-ts", Transport::Udp)]);
    cfg.active.enabled = true;
    let mut h = AgentHost::new(cfg.clone());
    let u = h.space_id("udp-ts").unwrap();
    assert!(!h.on_tuple(ms(1), u, TupleKind::Out, &tuple, None, Some(&rx)));

    // Enabled on an FPE-keyed space: refused by default (Protection::Sealed), taken when the
    // host opts in to FPE spaces explicitly.
    cfg.spaces[0] = SpaceSpec::new("udp-ts", Transport::Udp).keyed(true);
    let mut h = AgentHost::new(cfg.clone());
    let u = h.space_id("udp-ts").unwrap();
    assert!(!h.on_tuple(ms(1), u, TupleKind::Out, &tuple, None, Some(&rx)));
    cfg.active.require = beets_agents::Protection::Keyed;
    cfg.active.max_agents = 1;
    cfg.active.min_load_interval = std::time::Duration::ZERO;
    let mut h = AgentHost::new(cfg.clone());
    assert!(h.on_tuple(ms(1), u, TupleKind::Out, &tuple, None, Some(&rx)));
    let agents = h.agents();
    assert_eq!(agents[0].name, "active:greeter");
    assert_eq!(agents[0].active_from, Some(Some(rx.from)));
    // A second one is over the limit; the same one again keeps running; a new version of the
    // first replaces it.
    let other = active::encode("other", 1, src).unwrap();
    assert!(h.on_tuple(ms(2), u, TupleKind::Out, &other, None, Some(&rx)));
    let first = h.agents()[0].id;
    assert!(h.on_tuple(ms(3), u, TupleKind::Out, &tuple, None, Some(&rx)));
    assert_eq!(h.agents()[0].id, first);
    let v2 = active::encode("greeter", 2, r#"({ init() { log("v2") } })"#).unwrap();
    assert!(h.on_tuple(ms(3), u, TupleKind::Out, &v2, None, Some(&rx)));
    assert_ne!(h.agents()[0].id, first);
    let events: Vec<_> = std::iter::from_fn(|| h.poll_event()).collect();
    assert!(events.iter().any(
        |e| matches!(e, AgentEvent::ActiveRefused { name, reason, .. }
        if name == "other" && reason.contains("1 active agents are already running"))
    ));
    assert_eq!(h.agents().len(), 1);
    assert_eq!(h.stats().active_started, 2);
    // An oversize one (sent by a non-conforming peer) is refused and consumed.
    let big = Tuple::new([
        Value::Str("AGENT".into()),
        Value::Str("big".into()),
        Value::Int16(1),
        Value::Str(format!("({{}}){}", " ".repeat(1200)).into()),
    ])
    .unwrap();
    assert!(h.on_tuple(ms(4), u, TupleKind::Out, &big, None, Some(&rx)));
    assert_eq!(h.stats().active_refused, 2);
    // Local agents cannot take the prefix.
    assert!(h.load(ms(5), "active:greeter", "({})").is_err());

    // No rollback: the captured version 1 replayed after version 2 is refused, and so is
    // version 2 with other code (what a forger who kept the version would send).
    assert!(h.on_tuple(ms(6), u, TupleKind::Out, &tuple, None, Some(&rx)));
    let forged = active::encode("greeter", 2, r#"({ init() { log("evil") } })"#).unwrap();
    assert!(h.on_tuple(ms(7), u, TupleKind::Out, &forged, None, Some(&rx)));
    let reasons: Vec<String> = std::iter::from_fn(|| h.poll_event())
        .filter_map(|e| match e {
            AgentEvent::ActiveRefused { reason, .. } if reason.contains("not newer") => {
                Some(reason)
            }
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(h.stats().active_started, 2);

    // Loads are rate-limited: a newer version within ActivePolicy::min_load_interval waits.
    cfg.active.min_load_interval = std::time::Duration::from_secs(1);
    let mut h = AgentHost::new(cfg);
    assert!(h.on_tuple(ms(1), u, TupleKind::Out, &tuple, None, Some(&rx)));
    assert!(h.on_tuple(ms(500), u, TupleKind::Out, &v2, None, Some(&rx)));
    assert_eq!(h.stats().active_refused, 1);
    assert!(h.on_tuple(ms(1001), u, TupleKind::Out, &v2, None, Some(&rx)));
    assert_eq!(h.stats().active_started, 2);
}

/// An OUT's lifetime reaches the handlers (`ev.lifetime`, seconds) and the ready-made router
/// forwards the OUT with it, unless the route sets its own.
#[test]
fn out_lifetimes_reach_handlers_and_routers_keep_them() {
    let mut h = host();
    let (b, u) = (h.space_id("ble-ts").unwrap(), h.space_id("udp-ts").unwrap());
    let router = beets_agents::Router::new()
        .route(
            "ble-ts",
            "udp-ts",
            parse_template(r#"("KEEP", ?)"#).unwrap(),
        )
        .with(
            beets_agents::Route::new("ble-ts", "udp-ts", parse_template(r#"("SET", ?)"#).unwrap())
                .lifetime(30),
        );
    h.load(ms(0), "router", &router.source()).unwrap();
    h.load(
        ms(0),
        "seer",
        r#"({ rules: [{ ts: '(?, ?)', handler(t, ev) { log(t[0], ev.lifetime); } }] })"#,
    )
    .unwrap();
    let rx = ble(1, 1);
    let ten_minutes = Some(Duration::from_secs(600));
    for (tuple, lifetime) in [
        (r#"("KEEP", 1)"#, ten_minutes),
        (r#"("KEEP", 2)"#, None),
        (r#"("SET", 3)"#, ten_minutes),
    ] {
        assert!(h.on_tuple(ms(1), b, TupleKind::Out, &t(tuple), lifetime, Some(&rx)));
    }
    let forwarded: Vec<(Tuple, Option<Duration>)> = actions(&mut h)
        .into_iter()
        .filter_map(|a| match a {
            Action::Out {
                space,
                tuple,
                lifetime,
                ..
            } if space == u => Some((tuple, lifetime)),
            _ => None,
        })
        .collect();
    assert_eq!(
        forwarded,
        vec![
            (t(r#"("KEEP", 1)"#), ten_minutes),
            (t(r#"("KEEP", 2)"#), None),
            (t(r#"("SET", 3)"#), Some(Duration::from_secs(30))),
        ]
    );
    // The router consumed them before the seer saw them; a tuple it does not route reaches it.
    assert!(!h.on_tuple(
        ms(2),
        b,
        TupleKind::Out,
        &t(r#"("OTHER", 4)"#),
        ten_minutes,
        Some(&rx)
    ));
    assert_eq!(logs(&mut h), ["OTHER 600"]);
}

/// Removal events (issue 13): `ts` rules with a removal `kind` hear tuples that left the space,
/// with `ev.kind` saying how, after the fact (a handler returning `true` neither consumes nor
/// stops the other rules); rules of the default kinds never hear them, and the rule filter
/// names the removal templates (and only them) for the serve task's subscriptions.
#[test]
fn removal_rules_hear_each_kind_of_removal() {
    use beets_core::DeliveryKind as K;
    use beets_core::space::DeliveryKinds;
    let mut h = host();
    h.load(
        ms(0),
        "gone",
        r#"({ rules: [
            { ts: ["J", ANY], space: "udp-ts", kind: "removed",
              handler(t, ev) { log("removed", ev.kind, t[1], ev.space, ev.from, ev.time, ev.rssi, ev.lifetime); return true; } },
            { ts: ["J", ANY], space: "udp-ts", kind: ["inp", "expired"],
              handler(t, ev) { log("inp-or-expired", ev.kind, t[1]); } },
            { ts: ["J", ANY], space: "udp-ts",
              handler(t, ev) { log("incoming", ev.kind, t[1]); } },
        ] })"#,
    )
    .unwrap();
    let (u, b) = (h.space_id("udp-ts").unwrap(), h.space_id("ble-ts").unwrap());
    let j = |n: i16| t(&format!("(\"J\", {n})"));
    for (i, kind) in [
        TupleKind::Inp,
        TupleKind::Rm,
        TupleKind::Expired,
        TupleKind::Evicted,
    ]
    .into_iter()
    .enumerate()
    {
        assert!(
            !h.on_tuple(ms(10), u, kind, &j(i as i16), None, None),
            "a removal is never consumed"
        );
    }
    // The incoming rule alone hears an OUT; nobody hears another space or another template.
    assert!(!h.on_tuple(ms(11), u, TupleKind::Out, &j(9), None, Some(&ble(1, 11))));
    assert!(!h.on_tuple(ms(12), b, TupleKind::Inp, &j(8), None, None));
    assert!(!h.on_tuple(ms(13), u, TupleKind::Rm, &t(r#"("K", 1)"#), None, None));
    assert_eq!(
        logs(&mut h),
        [
            "removed inp 0 udp-ts null null null null",
            "inp-or-expired inp 0",
            "removed rm 1 udp-ts null null null null",
            "removed expired 2 udp-ts null null null null",
            "inp-or-expired expired 2",
            "removed evicted 3 udp-ts null null null null",
            "incoming out 9",
        ]
    );
    assert_eq!(h.stats().consumed, 0);

    let f = h.rule_filter();
    let jt = parse_template(r#"("J", ?)"#).unwrap();
    assert_eq!(
        f.removal_templates[u.index()],
        [
            (jt.clone(), DeliveryKinds::REMOVALS),
            (jt.clone(), DeliveryKinds::only(K::Inp) | K::Expired)
        ]
    );
    assert!(f.removal_templates[b.index()].is_empty());
    assert_eq!(f.removal_arities(u), [2]);
    assert!(f.removal_arities(b).is_empty());
    assert!(f.wants_removal(u, TupleKind::Evicted, &j(1)));
    assert!(!f.wants_removal(u, TupleKind::Out, &j(1)));
    assert!(!f.wants_removal(u, TupleKind::Rm, &t(r#"("K", 1)"#)));
    assert!(!f.wants_removal(b, TupleKind::Rm, &j(1)));
    // A removal rule does not make the hooks ask about incoming OUTs it cannot see.
    assert_eq!(f.out_templates[u.index()], [jt]);

    // Kinds are checked at load.
    for (kind, says) in [
        (r#""gone""#, r#"`kind` "gone" is not one of"#),
        ("[]", "`kind` is an empty array"),
        ("[1]", "`kind` must be one of"),
        ("7", "`kind` must be one of"),
    ] {
        let e = h
            .load(
                ms(20),
                "bad",
                &format!(r#"({{ rules: [{{ ts: ["J", ANY], kind: {kind}, handler() {{}} }}] }})"#),
            )
            .unwrap_err();
        assert!(e.to_string().contains(says), "{kind}: {e}");
    }
}

/// Each event gets its own event object (the callers keep the objects' shapes alive, not the
/// objects): one a handler kept is not changed by later events, and what it adds does not show
/// up in the next one.
#[test]
fn kept_event_objects_are_not_reused() {
    let mut h = host();
    h.load(
        ms(0),
        "keeper",
        r#"({ kept: [], rules: [{ ts: '("K", ?)', handler(t, ev) {
            ev.mark = t[1];
            this.kept.push(ev);
            const [first] = this.kept;
            log(this.kept.length, first.time, first.mark, first === ev, Object.keys(ev).join(","));
        } }] })"#,
    )
    .unwrap();
    let s = h.space_id("ble-ts").unwrap();
    for (i, at) in [(1, 5), (2, 9)] {
        h.on_tuple(
            ms(at),
            s,
            TupleKind::Out,
            &t(&format!(r#"("K", {i})"#)),
            None,
            Some(&ble(1, at)),
        );
    }
    assert_eq!(
        logs(&mut h),
        [
            "1 5 1 true space,kind,from,time,rssi,lifetime,mark",
            "2 5 1 false space,kind,from,time,rssi,lifetime,mark",
        ]
    );
}
