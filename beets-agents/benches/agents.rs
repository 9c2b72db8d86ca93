//! Agent start-up and per-tuple rule dispatch.
//!
//! Run: `cargo bench -p beets-agents --bench agents -- --warm-up-time 1 --measurement-time 3`
//!
//! - `agents/start/filter`: `AgentHost::load` of a one-rule filter agent and its unload: a fresh
//!   QuickJS runtime and context, the API installed, the source evaluated, the rules read, and
//!   everything freed. Goal ≤ 300 µs.
//! - `agents/dispatch/filter_request`: `allow_request` for an RD that a request rule inspects and
//!   allows (template to JS, event object, one call). Goal ≤ 2 µs.
//! - `agents/dispatch/filter_ts`: `on_tuple` for a 4-tuple a `ts` rule inspects and does not
//!   consume.
//! - `agents/dispatch/router`: `on_tuple` for a `("SENSOR", ?, ?, ?)` tuple the ready-made router
//!   forwards: the call, the `out` back into Rust (tuple conversion, size check, action) and the
//!   action drained. Goal ≤ 2 µs.
//! - `agents/dispatch/no_match`: `on_tuple` for a tuple no rule matches (Rust only).
//! - `agents/hook/ts_filter_round_trip`: the same `ts` filter reached the way a node reaches it,
//!   through `AgentHooks::consume_out` and the agent thread (two channel hops and a thread
//!   wake-up on top of the dispatch).
//! - `baseline/*`: bare rquickjs, for comparison: `Runtime` + `Context::full`, and calling a JS
//!   filter with a 4-element array built from Rust.

use std::hint::black_box;

use beets_agents::{
    AgentHost, AgentRuntime, HostConfig, Router, RuntimeConfig, SpaceSpec, TupleKind,
};
use beets_core::node::{Hooks, IncomingRequest};
use beets_core::{Op, PeerAddr, Received, Template, Time, Transport, Tuple};
use criterion::{Criterion, criterion_group, criterion_main};
use rquickjs::{Array, Context, Function, Runtime};

const FILTER: &str = r#"({
    refused: 0,
    rules: [{ request: "*", handler(tpl, ev) {
        if (ev.from === "AA:BB:CC:DD:EE:FF") { this.refused++; return false; }
    } }],
})"#;

const TS_FILTER: &str = r#"({
    rules: [{ ts: '("SENSOR", ?, ?, ?)', handler(t, ev) { return t[2] > 1000 && ev.rssi > -90; } }],
})"#;

fn host() -> AgentHost {
    AgentHost::new(HostConfig::new([
        SpaceSpec::new("ble-ts", Transport::Ble),
        SpaceSpec::new("udp-ts", Transport::Udp),
    ]))
}

fn received() -> Received {
    Received {
        from: PeerAddr::Ble([0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0x01]),
        at: Time::from_millis(5),
        rssi: Some(-70),
    }
}

fn sensor() -> Tuple {
    r#"("SENSOR", "LIGHT", 512, 1.5)"#.parse().unwrap()
}

fn start(c: &mut Criterion) {
    let mut g = c.benchmark_group("agents/start");
    let mut h = host();
    g.bench_function("filter", |b| {
        b.iter(|| {
            let id = h.load(Time::ZERO, "filter", black_box(FILTER)).unwrap();
            h.unload(id);
            while h.poll_event().is_some() {}
        })
    });
    g.finish();
}

fn dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("agents/dispatch");
    let rx = received();
    let now = Time::from_millis(5);

    let mut h = host();
    h.load(Time::ZERO, "filter", FILTER).unwrap();
    let ble = h.space_id("ble-ts").unwrap();
    let template: Template = r#"("SENSOR", "LIGHT", ?, ?)"#.parse().unwrap();
    g.bench_function("filter_request", |b| {
        b.iter(|| {
            let req = IncomingRequest {
                op: Op::Rd,
                template: &template,
                received: rx,
            };
            assert!(h.allow_request(now, ble, black_box(&req)));
        })
    });

    let mut h = host();
    h.load(Time::ZERO, "ts", TS_FILTER).unwrap();
    let tuple = sensor();
    g.bench_function("filter_ts", |b| {
        b.iter(|| {
            assert!(!h.on_tuple(now, ble, TupleKind::Out, black_box(&tuple), Some(&rx)));
        })
    });

    let mut h = host();
    h.load(Time::ZERO, "router", &Router::ble_udp().source())
        .unwrap();
    g.bench_function("router", |b| {
        b.iter(|| {
            assert!(h.on_tuple(now, ble, TupleKind::Out, black_box(&tuple), Some(&rx)));
            black_box(h.poll_action().expect("forwarded"));
        })
    });

    let other: Tuple = r#"("OTHER", 1)"#.parse().unwrap();
    g.bench_function("no_match", |b| {
        b.iter(|| {
            assert!(!h.on_tuple(now, ble, TupleKind::Out, black_box(&other), Some(&rx)));
        })
    });
    g.finish();
}

fn hook(c: &mut Criterion) {
    let mut g = c.benchmark_group("agents/hook");
    let cfg = HostConfig::new([SpaceSpec::new("ble-ts", Transport::Ble)]);
    let (rt, _out) = AgentRuntime::spawn(cfg, RuntimeConfig::default()).unwrap();
    rt.load_blocking("ts", TS_FILTER).unwrap();
    let mut hooks = rt.hooks("ble-ts").unwrap();
    let (tuple, rx) = (sensor(), received());
    g.bench_function("ts_filter_round_trip", |b| {
        b.iter(|| assert!(!hooks.consume_out(black_box(&tuple), &rx)))
    });
    g.finish();
    rt.shutdown();
}

fn baseline(c: &mut Criterion) {
    let mut g = c.benchmark_group("baseline");
    g.bench_function("runtime_context", |b| {
        b.iter(|| {
            let rt = Runtime::new().unwrap();
            let ctx = Context::full(&rt).unwrap();
            black_box((rt, ctx));
        })
    });
    let rt = Runtime::new().unwrap();
    let ctx = Context::full(&rt).unwrap();
    ctx.with(|ctx| {
        let f: Function = ctx.eval("(function (t) { return t[2] > 1000; })").unwrap();
        g.bench_function("call_filter_4_array", |b| {
            b.iter(|| {
                let a = Array::new(ctx.clone()).unwrap();
                a.set(0, "SENSOR").unwrap();
                a.set(1, "LIGHT").unwrap();
                a.set(2, 512).unwrap();
                a.set(3, 1.5).unwrap();
                let r: bool = f.call((a,)).unwrap();
                black_box(r)
            })
        });
    });
    g.finish();
}

criterion_group!(benches, start, dispatch, hook, baseline);
criterion_main!(benches);
