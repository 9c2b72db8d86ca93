//! Agents next to running spaces: the async driver on in-memory buses (one BLE, one UDP), the
//! agent thread behind the nodes' hooks, and `serve` performing the agents' actions.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beets_agents::{
    AgentEvent, AgentOutputs, AgentRuntime, HostConfig, Router, RuntimeConfig, SpaceSpec,
};
use beets_core::driver::{
    self, DriverStats, FrameSink, OwnedFrame, ReceivedFrame, SendError, SpaceHandle,
};
use beets_core::{Node, NodeConfig, PeerAddr, Template, Time, Transmit, Transport, Tuple, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

type Members = Vec<(u8, mpsc::Sender<ReceivedFrame>)>;

/// A broadcast medium in memory: every frame reaches every other member, at once, without loss.
#[derive(Clone, Default)]
struct Bus(Arc<Mutex<Members>>);

struct BusSink {
    bus: Bus,
    me: u8,
}

fn addr(transport: Transport, me: u8) -> PeerAddr {
    match transport {
        Transport::Ble => PeerAddr::Ble([0xAA, 0xBB, 0xCC, 0xDD, 0xEE, me]),
        Transport::Udp => PeerAddr::Ip(SocketAddr::from(([127, 0, 0, me], 49737))),
    }
}

impl FrameSink for BusSink {
    async fn send(&mut self, tx: Transmit) -> Result<(), SendError> {
        let (frame, from, rssi) = match tx {
            Transmit::Datagram(d) => (OwnedFrame::Datagram(d), addr(Transport::Udp, self.me), None),
            Transmit::Advertisement(a) => (
                OwnedFrame::Advertisement {
                    local_name: a.local_name.to_string(),
                    service_uuids: a.service_uuids.to_vec(),
                },
                addr(Transport::Ble, self.me),
                Some(-60),
            ),
        };
        let members = self.bus.0.lock().unwrap().clone();
        for (i, m) in members {
            if i != self.me {
                let _ = m
                    .send(ReceivedFrame {
                        from,
                        frame: frame.clone(),
                        rssi,
                    })
                    .await;
            }
        }
        Ok(())
    }
}

fn node(transport: Transport, name: &str, seed: u64) -> Node {
    let mut cfg = NodeConfig::new(transport, name).unwrap();
    cfg.reply_backoff = Duration::from_millis(5);
    // Above the tests' 2 s agent deadline (`rt_config`): a loaded test machine must not make the
    // engine apply its defaults before the agents answer.
    cfg.decision_deadline = Duration::from_secs(3);
    Node::new(cfg, seed, Time::ZERO)
}

fn join(bus: &Bus, me: u8, node: Node) -> (SpaceHandle, JoinHandle<DriverStats>) {
    let (tx, rx) = mpsc::channel(64);
    bus.0.lock().unwrap().push((me, tx));
    driver::spawn(
        format!("n{me}"),
        node,
        BusSink {
            bus: bus.clone(),
            me,
        },
        rx,
    )
}

/// Hooks wait long enough for a loaded test machine: a hook that gave up would store an OUT
/// the test expects consumed.
fn rt_config() -> RuntimeConfig {
    RuntimeConfig {
        hook_timeout: Duration::from_secs(2),
        ..RuntimeConfig::default()
    }
}

fn t(s: &str) -> Tuple {
    s.parse().unwrap()
}

fn tpl(s: &str) -> Template {
    s.parse().unwrap()
}

/// Waits until `check` holds, polling; panics after 10 s (a deadline, not a guessed delay).
async fn eventually<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn recv(rx: &mut mpsc::Receiver<beets_core::Delivery>) -> Option<Tuple> {
    timeout(Duration::from_secs(2), rx.recv())
        .await
        .ok()
        .flatten()
        .map(|d| d.tuple)
}

/// The paper's beacon: a BLE space and a UDP space on one node, an agent runtime between them.
struct Beacon {
    agents: AgentRuntime,
    events: mpsc::Receiver<AgentEvent>,
    ble: SpaceHandle,
    udp: SpaceHandle,
}

fn beacon(ble_bus: &Bus, udp_bus: &Bus, me: u8) -> Beacon {
    let cfg = HostConfig::new([
        SpaceSpec::new("ble-ts", Transport::Ble),
        SpaceSpec::new("udp-ts", Transport::Udp),
    ]);
    let rt_cfg = RuntimeConfig {
        hook_timeout: Duration::from_secs(2),
        ..RuntimeConfig::default()
    };
    let (
        agents,
        AgentOutputs {
            actions, events, ..
        },
    ) = AgentRuntime::spawn(cfg, rt_cfg).unwrap();
    let mut b = node(Transport::Ble, "beacon", 10);
    b.set_hooks(Box::new(agents.hooks("ble-ts").unwrap()));
    let mut u = node(Transport::Udp, "beacon", 11);
    u.set_hooks(Box::new(agents.hooks("udp-ts").unwrap()));
    let (ble, _) = join(ble_bus, me, b);
    let (udp, _) = join(udp_bus, me, u);
    tokio::spawn(
        agents
            .serve(actions, [("ble-ts", ble.clone()), ("udp-ts", udp.clone())])
            .unwrap(),
    );
    Beacon {
        agents,
        events,
        ble,
        udp,
    }
}

#[tokio::test]
async fn router_moves_tuples_between_two_spaces() {
    let (ble_bus, udp_bus) = (Bus::default(), Bus::default());
    let (mobile, _) = join(&ble_bus, 1, node(Transport::Ble, "mobile", 1));
    let (server, _) = join(&udp_bus, 3, node(Transport::Udp, "server", 3));
    let b = beacon(&ble_bus, &udp_bus, 2);
    b.agents
        .load("router", &Router::ble_udp().source())
        .await
        .unwrap();

    let mut at_server = server
        .subscribe(tpl("(\"SENSOR\", ?, ?, ?)"), 8)
        .await
        .unwrap();
    let mut at_mobile = mobile
        .subscribe(tpl("(\"SURVEY\", ?, ?)"), 8)
        .await
        .unwrap();

    // BLE → UDP: a mobile node's reading reaches the server; the beacon does not keep it.
    let reading = t(r#"("SENSOR", "LIGHT", 512, 1.5)"#);
    mobile.out(reading.clone(), None).await.unwrap();
    assert_eq!(recv(&mut at_server).await, Some(reading.clone()));
    assert_eq!(b.ble.host_count(tpl("(?, ?, ?, ?)")).await.unwrap(), 0);
    assert_eq!(server.host_tuples().await.unwrap(), vec![reading]);

    // UDP → BLE: a survey from the server reaches the mobile node.
    let survey = t(r#"("SURVEY", "Q1", 3)"#);
    server.out(survey.clone(), None).await.unwrap();
    assert_eq!(recv(&mut at_mobile).await, Some(survey.clone()));
    assert_eq!(mobile.host_tuples().await.unwrap(), vec![survey]);

    // Not routed: stays where it was sent. A routed reading sent after it is the marker: the
    // beacon handles its BLE frames in order, so once the marker reached the server, the other
    // tuple had its chance to be routed too.
    mobile.out(t(r#"("OTHER", 1)"#), None).await.unwrap();
    let marker = t(r#"("SENSOR", "LIGHT", 513, 1.5)"#);
    mobile.out(marker.clone(), None).await.unwrap();
    assert_eq!(recv(&mut at_server).await, Some(marker));
    assert_eq!(b.ble.host_count(tpl("(\"OTHER\", ?)")).await.unwrap(), 1);
    assert_eq!(b.udp.host_count(tpl("(\"OTHER\", ?)")).await.unwrap(), 0);
    assert_eq!(server.host_count(tpl("(\"OTHER\", ?)")).await.unwrap(), 0);

    let stats = b.agents.stats().await.unwrap();
    assert_eq!((stats.consumed, stats.faults), (3, 0));
}

#[tokio::test]
async fn custom_router_with_a_filter_and_a_counter() {
    let (ble_bus, udp_bus) = (Bus::default(), Bus::default());
    let (mobile, _) = join(&ble_bus, 1, node(Transport::Ble, "mobile", 1));
    let (server, _) = join(&udp_bus, 3, node(Transport::Udp, "server", 3));
    let mut b = beacon(&ble_bus, &udp_bus, 2);
    // Forwards only bright readings, tagged with the beacon's count, and keeps a local copy.
    b.agents
        .load(
            "bright",
            r#"({
                n: 0,
                rules: [{ ts: ["SENSOR", "LIGHT", INT16, ANY], space: "ble-ts",
                          cond(t, ev) { return t[2] >= 100 && ev.rssi !== null; },
                          handler(t, ev) {
                              this.n++;
                              spaces["udp-ts"].out(["BRIGHT", t[2], this.n], 60);
                              log("forwarded", t[2], "from", ev.from);
                              return false;
                          } }],
            })"#,
        )
        .await
        .unwrap();
    let mut at_server = server
        .subscribe(tpl("(\"BRIGHT\", ?, ?)"), 8)
        .await
        .unwrap();
    mobile
        .out(t(r#"("SENSOR", "LIGHT", 50, 0)"#), None)
        .await
        .unwrap();
    mobile
        .out(t(r#"("SENSOR", "LIGHT", 700, 0)"#), None)
        .await
        .unwrap();
    assert_eq!(recv(&mut at_server).await, Some(t(r#"("BRIGHT", 700, 1)"#)));
    // The agent's action can reach the server before its decision (store) reaches the beacon.
    eventually(|| async {
        b.ble
            .host_count(tpl("(\"SENSOR\", ?, ?, ?)"))
            .await
            .unwrap()
            == 2
    })
    .await;
    assert_eq!(
        b.ble
            .host_count(tpl("(\"SENSOR\", ?, ?, ?)"))
            .await
            .unwrap(),
        2
    );
    let ev = timeout(Duration::from_secs(2), b.events.recv())
        .await
        .unwrap();
    assert!(matches!(ev, Some(AgentEvent::Loaded { .. })));
    let ev = timeout(Duration::from_secs(2), b.events.recv())
        .await
        .unwrap();
    assert!(
        matches!(&ev, Some(AgentEvent::Log { message, .. }) if message == "forwarded 700 from AA:BB:CC:DD:EE:01"),
        "{ev:?}"
    );
}

/// An agent that takes longer than its deadline: the node does not wait for it (other frames are
/// served meanwhile), applies the fail-closed default (the OUT is stored), and neither that late
/// decision nor what its handler did is ever applied; a question still queued behind it at its
/// deadline is not run at all.
#[tokio::test]
async fn a_late_decision_is_dropped_and_its_actions_never_run() {
    let bus = Bus::default();
    let cfg = HostConfig::new([SpaceSpec::new("udp-ts", Transport::Udp)]);
    let rt_cfg = RuntimeConfig {
        hook_timeout: Duration::from_millis(50),
        ..RuntimeConfig::default()
    };
    let (agents, out) = AgentRuntime::spawn(cfg, rt_cfg).unwrap();
    let mut ncfg = NodeConfig::new(Transport::Udp, "server").unwrap();
    ncfg.reply_backoff = Duration::from_millis(5);
    ncfg.decision_deadline = Duration::from_millis(100);
    let mut s = Node::new(ncfg, 1, Time::ZERO);
    s.set_hooks(Box::new(agents.hooks("udp-ts").unwrap()));
    let (server, _) = join(&bus, 1, s);
    tokio::spawn(
        agents
            .serve(out.actions, [("udp-ts", server.clone())])
            .unwrap(),
    );
    // Busy for 120 ms — past the 50 ms deadline, within its 300 ms budget (no fault).
    let slow = beets_agents::Limits {
        event_budget: Duration::from_millis(300),
        ..beets_agents::Limits::default()
    };
    agents
        .load_with_limits(
            "slow",
            r#"({ rules: [{ ts: '("SLOW")', handler() {
                host.out(["FWD", 0]);
                const t0 = Date.now();
                while (Date.now() - t0 < 120) {}
                return true;
            } }] })"#,
            slow,
        )
        .await
        .unwrap();
    agents
        .load(
            "router",
            r#"({ rules: [{ ts: '("R", ?)', handler(t) { host.out(["FWD", t[1]]); return true; } }] })"#,
        )
        .await
        .unwrap();
    server.host_out(t(r#"("HELD", 1)"#), None).await.unwrap();
    let (peer, _) = join(&bus, 2, node(Transport::Udp, "peer", 2));
    peer.out(t(r#"("SLOW")"#), None).await.unwrap();
    peer.out(t(r#"("R", 1)"#), None).await.unwrap();
    // Served while the agent thread spins.
    let got = peer
        .rd(tpl(r#"("HELD", ?)"#), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(got.map(|(t, _)| t), Some(t(r#"("HELD", 1)"#)));
    // Both OUTs end stored by the fail-closed default, the router's decision never applied.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = server.stats().await.unwrap().node;
        if n.decisions_expired == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{n:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Wait for the agent thread to have dealt with both questions too.
    loop {
        let a = agents.stats().await.unwrap();
        if a.decisions_late == 2 {
            assert!(a.late_actions_dropped >= 1, "{a:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{a:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(server.host_count(tpl(r#"("SLOW")"#)).await.unwrap(), 1);
    assert_eq!(server.host_count(tpl(r#"("R", 1)"#)).await.unwrap(), 1);
    assert_eq!(server.host_count(tpl(r#"("FWD", ?)"#)).await.unwrap(), 0);
    assert_eq!(server.stats().await.unwrap().node.decisions_late, 0);
}

#[tokio::test]
async fn filter_agent_refuses_rd_from_one_sender_over_the_driver() {
    let bus = Bus::default();
    let cfg = HostConfig::new([SpaceSpec::new("udp-ts", Transport::Udp)]);
    let (agents, out) = AgentRuntime::spawn(cfg, rt_config()).unwrap();
    let mut s = node(Transport::Udp, "server", 1);
    s.set_hooks(Box::new(agents.hooks("udp-ts").unwrap()));
    let (server, _) = join(&bus, 1, s);
    tokio::spawn(
        agents
            .serve(out.actions, [("udp-ts", server.clone())])
            .unwrap(),
    );
    agents
        .load(
            "filter",
            r#"({ rules: [{ request: "*", handler(tpl, ev) { return ev.from !== "127.0.0.66:49737"; } }] })"#,
        )
        .await
        .unwrap();
    let (good, _) = join(&bus, 2, node(Transport::Udp, "good", 2));
    let (bad, _) = join(&bus, 66, node(Transport::Udp, "bad", 66));
    server.host_out(t(r#"("KEY", 42)"#), None).await.unwrap();
    let wait = Duration::from_millis(300);
    let got = good.rd(tpl("(\"KEY\", ?)"), wait).await.unwrap();
    assert_eq!(got.map(|(t, _)| t), Some(t(r#"("KEY", 42)"#)));
    assert_eq!(bad.rd(tpl("(\"KEY\", ?)"), wait).await.unwrap(), None);
    assert_eq!(bad.inp(tpl("(\"KEY\", ?)"), wait).await.unwrap(), None);
    assert_eq!(server.host_count(tpl("(\"KEY\", ?)")).await.unwrap(), 1);
    let stats = server.stats().await.unwrap();
    assert_eq!(stats.node.filtered, 2);
}

#[tokio::test]
async fn agent_requests_resolve_with_replies_or_null_through_serve() {
    let (ble_bus, udp_bus) = (Bus::default(), Bus::default());
    let (server, _) = join(&udp_bus, 3, node(Transport::Udp, "server", 3));
    server
        .host_out(t(r#"("SURVEY", "Q7")"#), None)
        .await
        .unwrap();
    let b = beacon(&ble_bus, &udp_bus, 2);
    b.agents
        .load(
            "asker",
            r#"({ rules: [{ timer: 10, once: true, async handler() {
                const r = await spaces["udp-ts"].rd(["SURVEY", STR], 1000);
                host.out(["GOT", r.tuple[1], r.from]);
                const none = await spaces["udp-ts"].rd(["ABSENT"], 100);
                host.out(["NONE", String(none)]);
                spaces["udp-ts"].host.count(["ABSENT"], n => host.out(["COUNT", n]));
            } }] })"#,
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let tuples = b.ble.host_tuples().await.unwrap();
        if tuples.len() == 3 || tokio::time::Instant::now() > deadline {
            assert_eq!(
                tuples,
                vec![
                    t(r#"("GOT", "Q7", "127.0.0.3:49737")"#),
                    t(r#"("NONE", "null")"#),
                    t(r#"("COUNT", 0)"#),
                ]
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sensor_readings_reach_agents_and_the_radio() {
    let ble_bus = Bus::default();
    let udp_bus = Bus::default();
    let (mobile, _) = join(&ble_bus, 1, node(Transport::Ble, "mobile", 1));
    let b = beacon(&ble_bus, &udp_bus, 2);
    b.agents
        .load(
            "light",
            r#"({ rules: [{ sensor: "light", cond(v, prev) { return prev === null || Math.abs(v - prev) >= 10; },
                           handler(v) { spaces["ble-ts"].out(["LIGHT", v]); } }] })"#,
        )
        .await
        .unwrap();
    let mut rx = mobile.subscribe(tpl("(\"LIGHT\", ?)"), 8).await.unwrap();
    for v in [300, 305, 320] {
        b.agents.set_sensor("light", Value::Int16(v)).unwrap();
    }
    assert_eq!(recv(&mut rx).await, Some(t(r#"("LIGHT", 300)"#)));
    assert_eq!(recv(&mut rx).await, Some(t(r#"("LIGHT", 320)"#)));
    assert_eq!(
        timeout(Duration::from_millis(100), rx.recv()).await.ok(),
        None
    );
}

#[tokio::test]
async fn active_tuple_starts_an_agent_on_a_sealed_space_when_allowed() {
    let bus = Bus::default();
    // Sealed spaces (spec §12), the default requirement for active tuples.
    let keyed = |name: &str, seed: u64| {
        let seal = beets_core::node::SealConfig::new(
            beets_core::sealed::SealKey::from_password("hive"),
            std::num::NonZeroU16::new(seed as u16).unwrap(),
            beets_core::sealed::MemoryCounterStore::default(),
        );
        let mut cfg = NodeConfig::new(Transport::Udp, name)
            .unwrap()
            .with_seal(seal);
        cfg.reply_backoff = Duration::from_millis(5);
        Node::new(cfg, seed, Time::ZERO)
    };
    // Not marked sealed here: the space's protection follows the node the hooks are installed on.
    let mut host = HostConfig::new([SpaceSpec::new("udp-ts", Transport::Udp)]);
    host.active.enabled = true;
    let (agents, out) = AgentRuntime::spawn(host, rt_config()).unwrap();
    let mut n = keyed("receiver", 1);
    n.set_hooks(Box::new(agents.hooks("udp-ts").unwrap()));
    let (receiver, _) = join(&bus, 1, n);
    tokio::spawn(
        agents
            .serve(out.actions, [("udp-ts", receiver.clone())])
            .unwrap(),
    );
    let (sender, _) = join(&bus, 2, keyed("sender", 2));

    // The agent answers every ("PING", n) with ("PONG", n + 1) and stores nothing else.
    let src = r#"({ rules: [{ ts: ["PING", INT16], handler(t) { spaces["udp-ts"].out(["PONG", t[1] + 1]); return true; } }] })"#;
    sender
        .out(beets_agents::active::encode("pong", 1, src).unwrap(), None)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while agents.agents().await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "active agent did not start: {:?} {:?}",
            agents.stats().await,
            receiver.stats().await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let info = &agents.agents().await.unwrap()[0];
    assert_eq!(info.name, "active:pong");
    assert_eq!(info.active_from, Some(Some(addr(Transport::Udp, 2))));
    // The active tuple itself was consumed.
    assert_eq!(receiver.host_tuples().await.unwrap(), vec![]);

    let mut pongs = sender.subscribe(tpl("(\"PONG\", ?)"), 4).await.unwrap();
    sender.out(t(r#"("PING", 41)"#), None).await.unwrap();
    assert_eq!(recv(&mut pongs).await, Some(t(r#"("PONG", 42)"#)));
}

#[tokio::test]
async fn fed_notifications_reach_notify_rules() {
    let cfg = HostConfig::new([SpaceSpec::new("udp-ts", Transport::Udp)]);
    let (agents, mut out) = AgentRuntime::spawn(cfg, rt_config()).unwrap();
    agents
        .load(
            "n",
            r#"({ rules: [{ ts: ["ALERT", ANY], kind: "notify", handler(t, ev) { log(ev.kind, t[1], ev.from); } }] })"#,
        )
        .await
        .unwrap();
    let space = agents.space_id("udp-ts").unwrap();
    agents
        .feed_tuple(
            space,
            beets_agents::TupleKind::Out,
            t(r#"("ALERT", 1)"#),
            None,
        )
        .unwrap();
    agents
        .feed_tuple(
            space,
            beets_agents::TupleKind::Notify,
            t(r#"("ALERT", 2)"#),
            None,
        )
        .unwrap();
    let mut lines = Vec::new();
    while let Ok(Some(e)) = timeout(Duration::from_millis(300), out.events.recv()).await {
        if let AgentEvent::Log { message, .. } = e {
            lines.push(message);
        }
    }
    assert_eq!(lines, ["notify 2 null"]);
}

#[tokio::test]
async fn radio_notifications_reach_notify_rules_through_the_node_hook() {
    let bus = Bus::default();
    let cfg = HostConfig::new([SpaceSpec::new("udp-ts", Transport::Udp)]);
    let (agents, mut out) = AgentRuntime::spawn(cfg, rt_config()).unwrap();
    let mut s = node(Transport::Udp, "server", 1);
    s.set_hooks(Box::new(agents.hooks("udp-ts").unwrap()));
    let (server, _) = join(&bus, 1, s);
    tokio::spawn(
        agents
            .serve(out.actions, [("udp-ts", server.clone())])
            .unwrap(),
    );
    agents
        .load(
            "n",
            r#"({ rules: [{ ts: ["ALERT", ANY], kind: "notify",
                 handler(t, ev) { log(ev.kind, t[1], ev.from); return t[1] === 1; } }] })"#,
        )
        .await
        .unwrap();
    let mut listener = server.subscribe(tpl("(\"ALERT\", ?)"), 8).await.unwrap();
    let (sender, _) = join(&bus, 7, node(Transport::Udp, "sender", 7));
    sender.notify(t(r#"("ALERT", 1)"#)).await.unwrap();
    sender.notify(t(r#"("ALERT", 2)"#)).await.unwrap();
    // The handler consumed ("ALERT", 1): listeners see only the second.
    assert_eq!(recv(&mut listener).await, Some(t(r#"("ALERT", 2)"#)));
    let mut lines = Vec::new();
    while let Ok(Some(e)) = timeout(Duration::from_millis(300), out.events.recv()).await {
        if let AgentEvent::Log { message, .. } = e {
            lines.push(message);
        }
    }
    assert_eq!(
        lines,
        ["notify 1 127.0.0.7:49737", "notify 2 127.0.0.7:49737"]
    );
}

/// `rd(template, {wait, scope})` and `host.rdAll`/`inpAll` (issue 13): a local read woken by a
/// later local store, a network read that waits at the server (spec §11) and is answered when
/// the tuple arrives there, the bulk queries, and a bad scope refused.
#[tokio::test]
async fn agent_requests_with_a_scope_and_a_wait_and_bulk_queries() {
    let (ble_bus, udp_bus) = (Bus::default(), Bus::default());
    let (server, _) = join(&udp_bus, 3, node(Transport::Udp, "server", 3));
    let b = beacon(&ble_bus, &udp_bus, 2);
    for i in 1..=3 {
        b.udp
            .host_out(t(&format!("(\"A\", {i})")), None)
            .await
            .unwrap();
    }
    b.agents
        .load(
            "asker",
            r#"({ rules: [{ timer: 10, once: true, async handler() {
                const sp = spaces["udp-ts"];
                try { sp.rd(["X"], {scope: "moon"}); } catch (e) { host.out(["ERR", e.name]); }
                try { sp.rd(["X"], {wait: 1, timeout: 5}); } catch (e) { host.out(["ERR2", e.name]); }
                const local = await sp.rd(["L", INT16], {scope: "local", wait: 30});
                host.out(["LOCAL", local.tuple[1], String(local.from)]);
                const net = await sp.rd(["N", INT16], {wait: 30});
                host.out(["NET", net.tuple[1], net.from]);
                const all = await sp.host.rdAll(["A", INT16]);
                const taken = await sp.host.inpAll(["A", INT16]);
                const none = await sp.host.rdAll(["A", INT16]);
                const left = await sp.host.count(["A", INT16]);
                host.out(["BULK", all.map(t => t[1]).join(","), taken.length, `${none.length}/${left}`]);
            } }] })"#,
        )
        .await
        .unwrap();
    // The local read waits in udp-ts; a later local store wakes it.
    eventually(|| async { b.udp.stats().await.unwrap().pending_requests == 1 }).await;
    b.udp.host_out(t(r#"("L", 1)"#), None).await.unwrap();
    // The network read waits at the server (it holds nothing yet); the tuple arrives there.
    eventually(|| async { server.stats().await.unwrap().node.waits_accepted == 1 }).await;
    server.host_out(t(r#"("N", 2)"#), None).await.unwrap();
    let want = vec![
        t(r#"("ERR", "TypeError")"#),
        t(r#"("ERR2", "TypeError")"#),
        t(r#"("LOCAL", 1, "null")"#),
        t(r#"("NET", 2, "127.0.0.3:49737")"#),
        t(r#"("BULK", "1,2,3", 3, "0/0")"#),
    ];
    eventually(|| async { b.ble.host_tuples().await.unwrap().len() >= want.len() }).await;
    assert_eq!(b.ble.host_tuples().await.unwrap(), want);
}

/// Removal events through `serve` (issue 13): an agent's `ts` rules with removal kinds hear the
/// tuples leaving udp-ts — a local `inp`, `rm`, a remote INP this node answered, an expiry —
/// each with its kind, while its rule of the default kinds hears only the OUT from the air. Its
/// own `host.inpAll` is heard too. An agent loaded later hears a removal made right after its
/// `load` returned.
#[tokio::test]
async fn agents_hear_removals_with_their_kind() {
    let (ble_bus, udp_bus) = (Bus::default(), Bus::default());
    let (server, _) = join(&udp_bus, 3, node(Transport::Udp, "server", 3));
    let b = beacon(&ble_bus, &udp_bus, 2);
    // `host` is ble-ts's: the agent writes what it heard there.
    let id = b
        .agents
        .load(
            "gone",
            r#"({ rules: [
                { ts: ["R", ANY], space: "udp-ts", kind: "removed",
                  handler(t, ev) { host.out(["GONE", t[1], ev.kind, String(ev.from)]); return true; } },
                { ts: ["R", ANY], space: "udp-ts", kind: ["inp", "expired"],
                  handler(t, ev) { host.out(["IE", t[1], ev.kind]); } },
                { ts: ["R", ANY], space: "udp-ts",
                  handler(t, ev) { host.out(["IN", t[1], ev.kind]); } },
                { ts: ["TAKE"], space: "udp-ts", kind: "out",
                  handler() { spaces["udp-ts"].host.inpAll(["S", ANY]); return true; } },
            ] })"#,
        )
        .await
        .unwrap();
    let r = |n: i16| t(&format!("(\"R\", {n})"));
    // From the air: the incoming rule hears it before it is stored.
    server.out(r(1), None).await.unwrap();
    eventually(|| async { b.udp.host_count(tpl("(\"R\", 1)")).await.unwrap() == 1 }).await;
    b.udp.host_out(r(2), None).await.unwrap();
    b.udp
        .host_out(r(3), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    b.udp.host_out(r(4), None).await.unwrap();
    assert_eq!(b.udp.host_inp(tpl("(\"R\", 1)")).await.unwrap(), Some(r(1)));
    assert_eq!(b.udp.host_rm(tpl("(\"R\", 2)")).await.unwrap(), 1);
    let taken = server
        .inp(tpl("(\"R\", 4)"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(taken.map(|(t, _)| t), Some(r(4)));
    // The agent's own bulk take, and a tuple of another shape nobody listens to.
    b.udp.host_out(t(r#"("S", 5)"#), None).await.unwrap();
    b.udp.host_out(t(r#"("S", 6)"#), None).await.unwrap();
    server.out(t(r#"("TAKE")"#), None).await.unwrap();
    eventually(|| async { b.udp.host_count(tpl("(\"S\", ?)")).await.unwrap() == 0 }).await;
    let mut want: Vec<Tuple> = [
        r#"("IN", 1, "out")"#,
        r#"("GONE", 1, "inp", "null")"#,
        r#"("IE", 1, "inp")"#,
        r#"("GONE", 2, "rm", "null")"#,
        r#"("GONE", 4, "inp", "null")"#,
        r#"("IE", 4, "inp")"#,
        r#"("GONE", 3, "expired", "null")"#,
        r#"("IE", 3, "expired")"#,
    ]
    .into_iter()
    .map(t)
    .collect();
    want.sort_by_key(|t| t.to_string());
    // ("R", 3) expires a second after its store.
    eventually(|| async { b.ble.host_tuples().await.unwrap().len() >= want.len() }).await;
    let mut got = b.ble.host_tuples().await.unwrap();
    got.sort_by_key(|t| t.to_string());
    assert_eq!(got, want);
    assert_eq!(b.agents.stats().await.unwrap().removals_busy, 0);

    // `load` returns once `serve` subscribed to what the new rules want (here arity 1, not
    // subscribed before): a removal right after it is heard.
    assert!(b.agents.unload(id).await.unwrap());
    b.agents
        .load(
            "witness",
            r#"({ rules: [{ ts: ["W"], space: "udp-ts", kind: "rm",
                  handler(t, ev) { host.out(["W", ev.kind]); } }] })"#,
        )
        .await
        .unwrap();
    b.udp.host_out(t(r#"("W")"#), None).await.unwrap();
    assert_eq!(b.udp.host_rm(tpl("(\"W\")")).await.unwrap(), 1);
    eventually(|| async { b.ble.host_count(tpl("(\"W\", ?)")).await.unwrap() == 1 }).await;
    assert_eq!(
        b.ble.host_rd(tpl("(\"W\", ?)")).await.unwrap(),
        Some(t(r#"("W", "rm")"#))
    );
}
