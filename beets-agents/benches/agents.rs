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
//!   through `AgentHooks::decide` (→ `Verdict::Later`), the agent thread and the decision sent
//!   back (two channel hops and a thread wake-up on top of the dispatch).
//! - `agents/hook/ts_filter_round_trip_process`: the same with the agents in a worker process
//!   (`Isolation::Process`; this bench binary is its own worker): the question crosses two
//!   pipes to the worker and back on top of the thread hops.
//! - `agents/driver/router_{later,blocking}`: a UDP space's driver taking 512 OUT datagrams that
//!   the ready-made router consumes and forwards, per datagram. `later` is the engine as it is:
//!   hooks answer later and the driver keeps reading frames meanwhile. `blocking` emulates the
//!   former synchronous hooks in the same run: each question waits for the agent thread's answer
//!   inside the engine (what `AgentHooks` did until the asynchronous decisions).
//! - `baseline/*`: bare rquickjs, for comparison: `Runtime` + `Context::full`, and calling a JS
//!   filter with a 4-element array built from Rust.

use std::hint::black_box;

use beets_agents::{
    AgentHost, AgentRuntime, HostConfig, Isolation, Router, RuntimeConfig, SpaceSpec, TupleKind,
    WorkerCommand,
};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use beets_core::driver::{self, FrameSink, OwnedFrame, ReceivedFrame, SendError};
use beets_core::node::{
    Decision, DecisionSender, DecisionToken, Hooks, IncomingRequest, Question, Verdict,
};
use beets_core::udp::{DatagramHeader, NodeId};
use beets_core::{Message, Node, NodeConfig, Transmit};
use beets_core::{Op, PeerAddr, Received, Template, Time, Transport, Tuple};
use criterion::{Criterion, criterion_group};
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
    AgentHost::new(unshared([
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
    // The clock moves 1 ms per event, as an engine's would: with a frozen clock the agents' CPU
    // share window never rolls over, and after a second's worth of calls the host throttles them
    // (every later event then measured a skipped agent, or failed the asserts).
    let mut ms = 5;
    let mut tick = move || {
        ms += 1;
        Time::from_millis(ms)
    };

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
            assert!(h.allow_request(tick(), ble, black_box(&req)));
        })
    });

    let mut h = host();
    h.load(Time::ZERO, "ts", TS_FILTER).unwrap();
    let tuple = sensor();
    g.bench_function("filter_ts", |b| {
        b.iter(|| {
            let now = tick();
            assert!(!h.on_tuple(now, ble, TupleKind::Out, black_box(&tuple), None, Some(&rx)));
        })
    });

    let mut h = host();
    h.load(Time::ZERO, "router", &Router::ble_udp().source())
        .unwrap();
    g.bench_function("router", |b| {
        b.iter(|| {
            let now = tick();
            assert!(h.on_tuple(now, ble, TupleKind::Out, black_box(&tuple), None, Some(&rx)));
            black_box(h.poll_action().expect("forwarded"));
        })
    });

    let other: Tuple = r#"("OTHER", 1)"#.parse().unwrap();
    g.bench_function("no_match", |b| {
        b.iter(|| {
            let now = tick();
            assert!(!h.on_tuple(now, ble, TupleKind::Out, black_box(&other), None, Some(&rx)));
        })
    });
    g.finish();
}

/// A host config whose agents have no CPU share limit: a bench keeps one agent busy on purpose,
/// and on a loaded machine preemption inside its calls would count against its share.
fn unshared(spaces: impl IntoIterator<Item = SpaceSpec>) -> HostConfig {
    let mut cfg = HostConfig::new(spaces);
    cfg.limits.cpu_share = cfg.limits.share_window;
    cfg
}

fn hook(c: &mut Criterion) {
    let mut g = c.benchmark_group("agents/hook");
    let cfg = unshared([SpaceSpec::new("ble-ts", Transport::Ble)]);
    let (rt, _out) = AgentRuntime::spawn(cfg, RuntimeConfig::default()).unwrap();
    rt.load_blocking("ts", TS_FILTER).unwrap();
    let mut hooks = rt.hooks("ble-ts").unwrap();
    let (dtx, drx) = std_mpsc::channel();
    hooks.attach(DecisionSender::new(move |t, d| dtx.send((t, d)).is_ok()));
    let (tuple, rx) = (sensor(), received());
    let question = Question::Out {
        tuple: &tuple,
        lifetime: None,
        received: &rx,
    };
    let mut token = 0;
    g.bench_function("ts_filter_round_trip", |b| {
        b.iter(|| {
            token += 1;
            let verdict = hooks.decide(token_of(token), black_box(&question));
            assert_eq!(verdict, Verdict::Later);
            let (_, decision) = drx.recv().unwrap();
            assert_eq!(decision, Decision::Proceed);
        })
    });
    rt.shutdown();
    // The same in a worker process.
    let cfg = unshared([SpaceSpec::new("ble-ts", Transport::Ble)]);
    let exe = std::env::current_exe().unwrap();
    let config = RuntimeConfig {
        isolation: Isolation::Process(WorkerCommand::new(exe, ["--agent-worker"])),
        ..RuntimeConfig::default()
    };
    let (rt, _out) = AgentRuntime::spawn(cfg, config).unwrap();
    rt.load_blocking("ts", TS_FILTER).unwrap();
    let mut hooks = rt.hooks("ble-ts").unwrap();
    let (dtx, drx) = std_mpsc::channel();
    hooks.attach(DecisionSender::new(move |t, d| dtx.send((t, d)).is_ok()));
    g.bench_function("ts_filter_round_trip_process", |b| {
        b.iter(|| {
            token += 1;
            let verdict = hooks.decide(token_of(token), black_box(&question));
            assert_eq!(verdict, Verdict::Later);
            let (_, decision) = drx.recv().unwrap();
            assert_eq!(decision, Decision::Proceed);
        })
    });
    g.finish();
    rt.shutdown();
}

/// A token for the bench's direct calls (an engine hands out its own).
fn token_of(n: u64) -> DecisionToken {
    DecisionToken::new(n)
}

/// The former synchronous hooks, for comparison: the question waits inside the engine for the
/// agent thread's answer (up to 100 ms).
struct Blocking {
    inner: beets_agents::AgentHooks,
    answers: std_mpsc::Receiver<(DecisionToken, Decision)>,
}

impl Blocking {
    fn new(mut inner: beets_agents::AgentHooks) -> Blocking {
        let (tx, answers) = std_mpsc::channel();
        inner.attach(DecisionSender::new(move |t, d| tx.send((t, d)).is_ok()));
        Blocking { inner, answers }
    }
}

impl Hooks for Blocking {
    fn decide(&mut self, token: DecisionToken, question: &Question<'_>) -> Verdict {
        match self.inner.decide(token, question) {
            Verdict::Later => match self.answers.recv_timeout(Duration::from_millis(100)) {
                Ok((_, d)) => Verdict::Now(d),
                Err(_) => Verdict::Now(Decision::Proceed),
            },
            now => now,
        }
    }
}

struct Discard;
impl FrameSink for Discard {
    async fn send(&mut self, _: Transmit) -> Result<(), SendError> {
        Ok(())
    }
}

fn driver_with_router(c: &mut Criterion) {
    const BATCH: u32 = 512;
    let mut g = c.benchmark_group("agents/driver");
    g.throughput(criterion::Throughput::Elements(u64::from(BATCH)));
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for blocking in [false, true] {
        let cfg = unshared([
            SpaceSpec::new("udp-ts", Transport::Udp),
            SpaceSpec::new("out-ts", Transport::Udp),
        ]);
        let (rt, outputs) = AgentRuntime::spawn(cfg, RuntimeConfig::default()).unwrap();
        let router = Router::new().route(
            "udp-ts",
            "out-ts",
            r#"("SENSOR", ?, ?, ?)"#.parse().unwrap(),
        );
        rt.load_blocking("router", &router.source()).unwrap();
        let (frames, h) = tokio.block_on(async {
            let mut node = Node::new(
                NodeConfig::new(Transport::Udp, "bench").unwrap(),
                1,
                Time::ZERO,
            );
            let hooks = rt.hooks("udp-ts").unwrap();
            if blocking {
                node.set_hooks(Box::new(Blocking::new(hooks)));
            } else {
                node.set_hooks(Box::new(hooks));
            }
            let (tx, rx) = tokio::sync::mpsc::channel(BATCH as usize);
            let (h, _) = driver::spawn("bench".into(), node, Discard, rx);
            // The router's forwarded outs go nowhere.
            let mut actions = outputs.actions;
            tokio::spawn(async move { while actions.recv().await.is_some() {} });
            (tx, h)
        });
        let msg = Message::Out {
            tuple: sensor(),
            lifetime: None,
        };
        let mut seq = 0u32;
        let name = if blocking {
            "router_blocking"
        } else {
            "router_later"
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                tokio.block_on(async {
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        let target = h.stats().await.unwrap().node.not_stored + u64::from(BATCH);
                        for _ in 0..BATCH {
                            seq += 1;
                            let header = DatagramHeader {
                                node_id: NodeId::new(7).unwrap(),
                                seq,
                            };
                            let d = beets_core::udp::encode(&header, &msg, None).unwrap();
                            frames
                                .send(ReceivedFrame {
                                    from: PeerAddr::Ip(([127, 0, 0, 7], 1).into()),
                                    frame: OwnedFrame::Datagram(d),
                                    rssi: None,
                                })
                                .await
                                .unwrap();
                        }
                        // Every OUT consumed by the router (decided, not expired).
                        while h.stats().await.unwrap().node.not_stored < target {
                            tokio::task::yield_now().await;
                        }
                    }
                    start.elapsed()
                })
            })
        });
        let stats = tokio.block_on(h.stats()).unwrap().node;
        assert_eq!(stats.decisions_expired, 0, "{name}: every decision in time");
        rt.shutdown();
    }
    g.finish();
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

criterion_group!(benches, start, dispatch, hook, driver_with_router, baseline);
fn main() {
    // This binary is also the agent worker of the process-isolated hook bench.
    if std::env::args().any(|a| a == "--agent-worker") {
        beets_agents::serve_stdio().unwrap();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
