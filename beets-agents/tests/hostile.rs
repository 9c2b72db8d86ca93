//! Hostile agents. Each test loads an agent that misbehaves on every incoming `("T", ?)`, runs a
//! real (sans-IO) node whose hooks consult it, and checks that the agent is stopped, reported by
//! name, and that the node keeps storing and serving tuples throughout. The test is the node's
//! runner: it routes the agents' late decisions back to the node, as the async driver does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use beets_agents::{
    AgentEvent, AgentRuntime, FaultKind, HostConfig, Limits, RuntimeConfig, SpaceSpec,
};
use beets_core::node::{Decision, DecisionSender, DecisionToken};
use beets_core::{Event, Frame, Node, NodeConfig, PeerAddr, Time, Transmit, Transport, Tuple};
use tokio::sync::mpsc;

const SPIN: &str = r#"({ rules: [{ ts: '("T", ?)', handler() { while (true) {} } }] })"#;

/// Node `a` (with the agents' hooks) and node `b` (a plain peer) on one UDP space.
struct Pair {
    a: Node,
    b: Node,
    now: Time,
    decisions: std::sync::mpsc::Receiver<(DecisionToken, Decision)>,
}

impl Pair {
    fn new(rt: &AgentRuntime) -> Pair {
        let mut cfg = NodeConfig::new(Transport::Udp, "a").unwrap();
        cfg.reply_backoff = Duration::ZERO;
        let mut a = Node::new(cfg, 1, Time::ZERO);
        a.set_hooks(Box::new(rt.hooks("udp-ts").unwrap()));
        let (tx, decisions) = std::sync::mpsc::channel();
        a.attach_decisions(DecisionSender::new(move |t, d| tx.send((t, d)).is_ok()));
        let b = Node::new(NodeConfig::new(Transport::Udp, "b").unwrap(), 2, Time::ZERO);
        Pair {
            a,
            b,
            now: Time::ZERO,
            decisions,
        }
    }

    /// Applies the agents' decisions until nothing waits for one.
    fn settle(&mut self) {
        while self.a.awaiting_decisions() > 0 {
            let (token, decision) = self
                .decisions
                .recv_timeout(Duration::from_secs(10))
                .expect("the agent thread decides (or its budget stops the agent)");
            self.a.decide(self.now, token, decision);
        }
    }

    fn deliver(from: &mut Node, to: &mut Node, from_port: u16, now: Time) {
        let addr = PeerAddr::Ip(SocketAddr::from(([127, 0, 0, 1], from_port)));
        while let Some(tx) = from.poll_transmit() {
            let Transmit::Datagram(d) = tx else {
                panic!("UDP node")
            };
            to.handle_frame(now, addr, Frame::Datagram(&d), None);
        }
    }

    /// `b` sends an OUT of `("T", i)` to `a`, then reads it back with RD; panics unless `a`
    /// stored it and answered.
    fn keeps_serving(&mut self, i: i16) {
        self.now = self.now + Duration::from_millis(10);
        let tuple = Tuple::new([beets_core::Value::Str("T".into()), i.into()]).unwrap();
        self.b.out(self.now, tuple.clone(), None).unwrap();
        Self::deliver(&mut self.b, &mut self.a, 2, self.now);
        self.settle();
        let template = beets_core::Template::exact(&tuple);
        let id = self
            .b
            .rd(self.now, template, Duration::from_secs(1))
            .unwrap();
        Self::deliver(&mut self.b, &mut self.a, 2, self.now);
        self.settle();
        Self::deliver(&mut self.a, &mut self.b, 1, self.now);
        let reply = std::iter::from_fn(|| self.b.poll_event()).find_map(|e| match e {
            Event::Completed { id: got, reply, .. } if got == id => Some(reply),
            _ => None,
        });
        let (got, _) = reply.flatten().expect("node a answers the RD");
        assert_eq!(got, tuple);
        while self.a.poll_event().is_some() {}
    }
}

fn runtime(limits: Limits) -> (AgentRuntime, mpsc::Receiver<AgentEvent>) {
    let mut cfg = HostConfig::new([SpaceSpec::new("udp-ts", Transport::Udp)]);
    cfg.limits = limits;
    // A generous hook timeout: tests run in parallel on loaded machines, and a hook that gave
    // up would refuse the RD these tests expect to be answered.
    let rt_cfg = RuntimeConfig {
        hook_timeout: Duration::from_secs(5),
        ..RuntimeConfig::default()
    };
    let (rt, out) = AgentRuntime::spawn(cfg, rt_cfg).unwrap();
    (rt, out.events)
}

/// The events so far: everything that arrives until the channel is quiet for 200 ms.
async fn events(rx: &mut mpsc::Receiver<AgentEvent>) -> Vec<AgentEvent> {
    let mut v = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
        v.push(e);
    }
    v
}

fn faults(events: &[AgentEvent], name: &str) -> Vec<(FaultKind, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Fault { name: n, fault, .. } if n == name => {
                Some((fault.kind, fault.message.clone()))
            }
            _ => None,
        })
        .collect()
}

fn disabled(events: &[AgentEvent], name: &str) -> bool {
    events
        .iter()
        .any(|e| matches!(e, AgentEvent::Disabled { name: n, .. } if n == name))
}

fn logs(events: &[AgentEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Log { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// Runs 5 rounds against a hostile agent loaded as `name`; returns the events.
async fn survive(name: &str, source: &str, limits: Limits) -> Vec<AgentEvent> {
    let (rt, mut ev) = runtime(limits);
    rt.load(name, source).await.unwrap();
    let mut pair = Pair::new(&rt);
    for i in 0..5 {
        pair.keeps_serving(i);
    }
    let events = events(&mut ev).await;
    assert!(disabled(&events, name), "{events:#?}");
    assert_eq!(rt.stats().await.unwrap().disabled, 1);
    events
}

#[tokio::test]
async fn infinite_loop_is_stopped_within_its_budget() {
    let budget = Duration::from_millis(20);
    let limits = Limits {
        event_budget: budget,
        ..Limits::default()
    };
    let (rt, mut ev) = runtime(limits);
    rt.load("spin", SPIN).await.unwrap();
    let mut pair = Pair::new(&rt);
    for i in 0..5 {
        let t0 = Instant::now();
        pair.keeps_serving(i);
        // The hook returned because the budget stopped the loop (the hook itself would wait 5 s).
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "round {i} took {:?}",
            t0.elapsed()
        );
    }
    let events = events(&mut ev).await;
    let f = faults(&events, "spin");
    assert_eq!(f.len(), 3);
    assert!(
        f.iter()
            .all(|(k, m)| *k == FaultKind::Budget && m == "stopped by the CPU budget of 20ms"),
        "{f:?}"
    );
    assert!(disabled(&events, "spin"));
}

#[tokio::test]
async fn infinite_loop_at_load_is_refused_within_the_load_budget() {
    let (rt, _ev) = runtime(Limits {
        load_budget: Duration::from_millis(30),
        ..Limits::default()
    });
    let t0 = Instant::now();
    let err = rt.load("spin", "for (;;) {}").await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_millis(200));
    assert!(
        err.to_string().contains("cpu budget exceeded during load"),
        "{err}"
    );
    let err = rt
        .load("spin2", "({ init() { while (true) {} } })")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("during init"), "{err}");
    assert!(rt.agents().await.unwrap().is_empty());
}

#[tokio::test]
async fn allocation_bomb_is_stopped_by_the_memory_limit() {
    let src = r#"({ hoard: [], rules: [{ ts: '("T", ?)', handler() {
        for (;;) this.hoard.push(new Array(4096).fill("x".repeat(64)));
    } }] })"#;
    let events = survive(
        "bomb",
        src,
        Limits {
            memory: 2 << 20,
            event_budget: Duration::from_secs(2),
            ..Limits::default()
        },
    )
    .await;
    let f = faults(&events, "bomb");
    assert_eq!(f.len(), 3);
    assert!(
        f.iter()
            .all(|(k, m)| *k == FaultKind::Memory && m.contains("out of memory")),
        "{f:?}"
    );
}

#[tokio::test]
async fn huge_buffer_is_stopped_by_the_memory_limit() {
    let src =
        r#"({ rules: [{ ts: '("T", ?)', handler() { this.b = new Uint8Array(256 << 20); } }] })"#;
    let events = survive("buffer", src, Limits::default()).await;
    let f = faults(&events, "buffer");
    assert!(f.iter().all(|(k, _)| *k == FaultKind::Memory), "{f:?}");
}

#[tokio::test]
async fn deep_recursion_is_stopped_by_the_stack_limit() {
    let src = r#"({ rules: [{ ts: '("T", ?)', handler() { const f = (n) => f(n + 1) + 1; return f(0); } }] })"#;
    let events = survive("deep", src, Limits::default()).await;
    let f = faults(&events, "deep");
    assert_eq!(f.len(), 3);
    assert!(
        f.iter()
            .all(|(k, m)| *k == FaultKind::Stack && m.contains("Maximum call stack size")),
        "{f:?}"
    );
}

#[tokio::test]
async fn throwing_handler_is_reported_and_disabled_after_n_faults() {
    let src = r#"({ rules: [{ ts: '("T", ?)', handler(t) { throw new TypeError("bad tuple " + t[1]); } }] })"#;
    let (rt, mut ev) = runtime(Limits::default());
    rt.load_with_limits(
        "thrower",
        src,
        Limits {
            max_faults: 2,
            ..Limits::default()
        },
    )
    .await
    .unwrap();
    // A well-behaved agent loaded next keeps working throughout.
    rt.load(
        "counter",
        r#"({ n: 0, rules: [{ ts: '("T", ?)', handler() { this.n++; log("seen", this.n); } }] })"#,
    )
    .await
    .unwrap();
    let mut pair = Pair::new(&rt);
    for i in 0..4 {
        pair.keeps_serving(i);
    }
    let events = events(&mut ev).await;
    let f = faults(&events, "thrower");
    assert_eq!(
        f,
        [
            (
                FaultKind::Exception,
                "TypeError: bad tuple 0 (at handler (thrower:1:78))".into()
            ),
            (
                FaultKind::Exception,
                "TypeError: bad tuple 1 (at handler (thrower:1:78))".into()
            ),
        ]
    );
    assert!(disabled(&events, "thrower"));
    assert_eq!(logs(&events), ["seen 1", "seen 2", "seen 3", "seen 4"]);
    let agents = rt.agents().await.unwrap();
    assert!(!agents[0].enabled && agents[0].memory == 0);
    assert!(agents[1].enabled && agents[1].faults == 0);
}

#[tokio::test]
async fn async_handler_rejection_is_a_fault() {
    let src = r#"({ rules: [{ ts: '("T", ?)', async handler() { await null; throw new Error("later"); } }] })"#;
    let events = survive("async", src, Limits::default()).await;
    let f = faults(&events, "async");
    assert!(
        f.iter()
            .all(|(k, m)| *k == FaultKind::UnhandledRejection && m.starts_with("Error: later")),
        "{f:?}"
    );
}

#[tokio::test]
async fn runaway_promise_chain_is_stopped() {
    let src = r#"({ rules: [{ ts: '("T", ?)', handler() { const f = () => Promise.resolve().then(f); f(); } }] })"#;
    let events = survive("chain", src, Limits::default()).await;
    assert!(
        faults(&events, "chain")
            .iter()
            .all(|(k, _)| matches!(k, FaultKind::RunawayJobs | FaultKind::Budget))
    );
}

#[tokio::test]
async fn std_os_require_import_and_fetch_are_out_of_reach() {
    let (rt, mut ev) = runtime(Limits::default());
    rt.load(
        "probe",
        r#"({ rules: [{ ts: '("T", ?)', handler() {
            log([typeof std, typeof os, typeof require, typeof fetch, typeof XMLHttpRequest,
                 typeof process, typeof Deno, typeof print, typeof setTimeout, typeof WebSocket].join(","));
            log(Object.getOwnPropertyNames(globalThis).filter(n => /^(std|os|require|fetch|process|scriptArgs|bjson|Worker)$/.test(n)).join(",") || "none");
            for (const m of ["std", "os", "qjs:std", "./x.js", "/etc/passwd"]) {
                import(m).then(() => log("imported " + m), e => log("import " + m + ": " + e.name));
            }
            try { new Function("return import('os')")().catch(e => log("fn import: " + e.name)); } catch (e) { log("fn: " + e.name); }
            log("eval", eval("6 * 7"));
        } }] })"#,
    )
    .await
    .unwrap();
    let mut pair = Pair::new(&rt);
    pair.keeps_serving(1);
    let events = events(&mut ev).await;
    assert!(faults(&events, "probe").is_empty(), "{events:#?}");
    let logs = logs(&events);
    assert_eq!(logs[0], ["undefined"; 10].join(","));
    assert_eq!(logs[1], "none");
    assert_eq!(logs[2], "eval 42");
    let imports: Vec<_> = logs[3..].iter().map(String::as_str).collect();
    assert_eq!(
        imports,
        [
            "import std: ReferenceError",
            "import os: ReferenceError",
            "import qjs:std: ReferenceError",
            "import ./x.js: ReferenceError",
            "import /etc/passwd: ReferenceError",
            "fn import: ReferenceError",
        ]
    );
}

#[tokio::test]
async fn prototype_tampering_of_the_api_objects_fails() {
    let (rt, mut ev) = runtime(Limits::default());
    rt.load(
        "tamper",
        r#"
        "use strict";
        const attempts = [
            () => { spaces["udp-ts"].out = () => log("hijacked"); },
            () => { delete spaces["udp-ts"].out; },
            () => { spaces["udp-ts"].host.out = null; },
            () => { Object.setPrototypeOf(spaces["udp-ts"], { out() {} }); },
            () => { Object.defineProperty(spaces, "udp-ts", { value: {} }); },
            () => { spaces.extra = {}; },
            () => { globalThis.spaces = {}; },
            () => { globalThis.host = {}; },
            () => { globalThis.ANY = "?"; },
            () => { log.call = null; sensor.apply = null; },
        ];
        const failed = attempts.filter(f => { try { f(); return false; } catch (e) { return e instanceof TypeError; } }).length;
        // Tampering with shared built-ins only affects this agent's own sandbox.
        Object.defineProperty(Object.prototype, "from", { set() { throw new Error("setter"); } });
        Object.defineProperty(Array.prototype, "0", { set() { throw new Error("setter"); } });
        Object.prototype.toJSON = () => { throw new Error("toJSON"); };
        Array.prototype.join = () => "joined?";
        Number.prototype.valueOf = () => 99;
        ({ rules: [{ ts: '("T", ?)', handler(t, ev) {
            log("failed", failed, "of", attempts.length);
            log("tuple", t.length, t[1], ev.from);
            spaces["udp-ts"].host.out(["SEEN", t[1], float32(2)]);
        } }] })
        "#,
    )
    .await
    .unwrap();
    let mut pair = Pair::new(&rt);
    pair.keeps_serving(3);
    let events = events(&mut ev).await;
    assert!(faults(&events, "tamper").is_empty(), "{events:#?}");
    assert_eq!(logs(&events), ["failed 10 of 10", "tuple 2 3 127.0.0.1:2"]);
}

#[tokio::test]
async fn agents_cannot_reach_each_other() {
    let (rt, mut ev) = runtime(Limits::default());
    rt.load(
        "one",
        r#"globalThis.secret = 42; Object.prototype.leak = "one"; ({ rules: [] })"#,
    )
    .await
    .unwrap();
    rt.load(
        "two",
        r#"({ init() { log(typeof secret, ({}).leak, typeof globalThis.one); } })"#,
    )
    .await
    .unwrap();
    let events = events(&mut ev).await;
    assert_eq!(logs(&events), ["undefined undefined undefined"]);
}

#[tokio::test]
async fn operation_flood_is_bounded() {
    let (rt, mut ev) = runtime(Limits::default());
    rt.load(
        "flood",
        r#"({ rules: [{ ts: '("T", ?)', handler() {
            let n = 0;
            try { for (;;) { spaces["udp-ts"].host.out(["F", n]); n++; } }
            catch (e) { log(n, e.name); }
            let r = 0;
            try { for (;;) { spaces["udp-ts"].rd(["F", r]); r++; } }
            catch (e) { log(r, e.message); }
        } }] })"#,
    )
    .await
    .unwrap();
    let mut pair = Pair::new(&rt);
    pair.keeps_serving(0);
    let events = events(&mut ev).await;
    assert_eq!(
        logs(&events),
        [
            "32 RangeError",
            "0 more than 32 space operations in one event (Limits::max_actions_per_event)"
        ]
    );
}

#[tokio::test]
async fn catastrophic_regex_is_stopped_within_its_budget() {
    let src = r#"({ rules: [{ ts: '("T", ?)', handler() {
        return /^(a+)+$/.test("a".repeat(40) + "b");
    } }] })"#;
    let events = survive("regex", src, Limits::default()).await;
    let f = faults(&events, "regex");
    assert!(f.iter().all(|(k, _)| *k == FaultKind::Budget), "{f:?}");
}

#[tokio::test]
async fn atomics_wait_cannot_block_the_agent_thread() {
    let (rt, mut ev) = runtime(Limits::default());
    rt.load(
        "waiter",
        r#"({ rules: [{ ts: '("T", ?)', handler() {
            try { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); log("returned"); }
            catch (e) { log(e.name); }
        } }] })"#,
    )
    .await
    .unwrap();
    let mut pair = Pair::new(&rt);
    let t0 = Instant::now();
    pair.keeps_serving(1);
    assert!(t0.elapsed() < Duration::from_secs(1));
    let events = events(&mut ev).await;
    assert_eq!(logs(&events), ["TypeError"]);
}
