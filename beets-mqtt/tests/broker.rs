//! Against a real mosquitto, started by each test on a free loopback port with a generated
//! config and stopped at its end. Without the binary a test prints `SKIPPED: <reason>` and
//! returns, unless `BEETS_REQUIRE_MQTT=1` (CI), which turns the skip into a failure. Every
//! wait has a deadline and waits on an event (a delivery, a state change) or polls counters.

use std::future::Future;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use beets_core::driver::SpaceHandle;
use beets_core::{Delivery, NodeConfig, Transport};
use beets_mqtt::peer::mqtt_node_id;
use beets_mqtt::{
    ConnectionState, Gateway, GatewayConfig, MqttConfig, MqttError, MqttSpace, Protocol, Qos,
};
use beets_udp::{UdpConfig, UdpSpace, reserve_port};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

mod mosquitto;
use mosquitto::Mosquitto;

trait BrokerConfig {
    fn config(&self, space: &str) -> MqttConfig;
}

impl BrokerConfig for Mosquitto {
    fn config(&self, space: &str) -> MqttConfig {
        let mut c = MqttConfig::new(&self.url(), space).expect("config");
        c.reconnect_min = Duration::from_millis(50);
        c.reconnect_max = Duration::from_millis(400);
        c
    }
}

fn node(name: &str) -> NodeConfig {
    NodeConfig::new(Transport::Udp, name).expect("node config")
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Polls `check` (counters) until it holds, at most [`WAIT`].
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn subscribe(h: &SpaceHandle, template: &str) -> mpsc::Receiver<Delivery> {
    h.subscribe(template.parse().unwrap(), 64).await.unwrap()
}

async fn next(rx: &mut mpsc::Receiver<Delivery>, what: &str) -> Delivery {
    within(what, rx.recv()).await.expect("subscription open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_out_rd_inp_through_the_broker() {
    let Some(broker) = Mosquitto::start("exchange", "") else {
        return;
    };
    // MQTT 3.1.1, whose broker echoes each client its own publishes (checked at the end); MQTT
    // 5, the default, is the other tests'.
    let mut c = broker.config("hall");
    c.protocol = Protocol::V311;
    let a = MqttSpace::spawn(c.clone(), node("a"), 1).await.unwrap();
    let b = MqttSpace::spawn(c, node("b"), 2).await.unwrap();
    a.wait_connected(WAIT).await.unwrap();
    b.wait_connected(WAIT).await.unwrap();
    assert_eq!(a.mqtt_stats().state, ConnectionState::Connected);

    // OUT: b stores it, and sees a's node id as the sender.
    let mut at_b = subscribe(b.handle(), r#"("SENSOR", ?, ?)"#).await;
    a.handle()
        .out(r#"("SENSOR", "LIGHT", 512)"#.parse().unwrap(), None)
        .await
        .unwrap();
    let d = next(&mut at_b, "the OUT at b").await;
    assert_eq!(d.tuple.to_string(), r#"("SENSOR", "LIGHT", 512)"#);
    assert_eq!(d.from.as_ref().and_then(mqtt_node_id), Some(a.node_id()));

    // RD from a: b answers through the broker; INP takes it from b.
    let template = r#"("SENSOR", "LIGHT", ?int16)"#;
    let (t, how) = a
        .handle()
        .rd(template.parse().unwrap(), Duration::from_secs(3))
        .await
        .unwrap()
        .expect("an answer to rd");
    assert_eq!(t.to_string(), r#"("SENSOR", "LIGHT", 512)"#);
    assert_eq!(mqtt_node_id(&how.from), Some(b.node_id()));
    let (t, _) = a
        .handle()
        .inp(template.parse().unwrap(), Duration::from_secs(3))
        .await
        .unwrap()
        .expect("an answer to inp");
    assert_eq!(t.to_string(), r#"("SENSOR", "LIGHT", 512)"#);
    assert_eq!(
        b.handle()
            .host_count(template.parse().unwrap())
            .await
            .unwrap(),
        0
    );

    // Own datagrams: MQTT 3.1.1 echoes a's publishes to a, which drops them by node id.
    let a_stats = a.handle().stats().await.unwrap();
    assert!(a_stats.node.dropped_own >= 3, "{a_stats:?}");
    assert_eq!(
        a_stats.node.messages_in, 2,
        "two replies, nothing of its own"
    );

    // Garbage on the space topic: counted, dropped, the node keeps serving.
    let raw = RawV4::connect(&broker, "beets/v1/hall").await;
    raw.publish("beets/v1/hall", b"not a datagram".to_vec())
        .await;
    until("the malformed payload counted", async || {
        b.handle().stats().await.unwrap().node.dropped_malformed >= 1
    })
    .await;
    a.handle()
        .out(r#"("SENSOR", "TEMP", 21)"#.parse().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(
        next(&mut at_b, "an OUT after garbage")
            .await
            .tuple
            .to_string(),
        r#"("SENSOR", "TEMP", 21)"#
    );
    let (_, ms) = a.close().await;
    assert_eq!(ms.state, ConnectionState::Closed);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reconnect_after_a_broker_restart() {
    let Some(mut broker) = Mosquitto::start("restart", "") else {
        return;
    };
    let a = MqttSpace::spawn(broker.config("hall"), node("a"), 3)
        .await
        .unwrap();
    let b = MqttSpace::spawn(broker.config("hall"), node("b"), 4)
        .await
        .unwrap();
    a.wait_connected(WAIT).await.unwrap();
    b.wait_connected(WAIT).await.unwrap();
    let mut at_b = subscribe(b.handle(), r#"("N", ?int16)"#).await;

    broker.stop();
    for s in [&a, &b] {
        let mut w = s.watch_state();
        within(
            "the outage to show",
            w.wait_for(|s| *s == ConnectionState::Disconnected),
        )
        .await
        .unwrap();
    }
    // Sent during the outage: dropped and counted, never a panic or a stall.
    a.handle()
        .out(r#"("N", 1)"#.parse().unwrap(), None)
        .await
        .unwrap();
    assert!(a.mqtt_stats().publish_dropped >= 1);
    assert!(a.handle().stats().await.unwrap().send_errors >= 1);

    broker.launch();
    a.wait_connected(WAIT).await.unwrap();
    b.wait_connected(WAIT).await.unwrap();
    for s in [&a, &b] {
        let m = s.mqtt_stats();
        assert_eq!(m.reconnects, 1, "{m:?}");
        assert_eq!(m.disconnects, 1, "{m:?}");
        assert!(m.connection_errors >= 1 && m.last_error.is_some(), "{m:?}");
    }
    a.handle()
        .out(r#"("N", 2)"#.parse().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(
        next(&mut at_b, "an OUT after the restart")
            .await
            .tuple
            .to_string(),
        r#"("N", 2)"#
    );
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_surface_as_a_refusal() {
    let Some(broker) = Mosquitto::start("refused", "allow_anonymous false") else {
        return;
    };
    let c = broker.config("hall").with_credentials("bee", "wrong");
    let a = MqttSpace::spawn(c, node("a"), 5).await.unwrap();
    match a.wait_connected(WAIT).await {
        Err(MqttError::Refused(why)) => assert!(!why.is_empty()),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(a.mqtt_stats().state, ConnectionState::Refused);
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_on_each_lan_forms_one_space_without_loops() {
    let Some(broker) = Mosquitto::start("gateway", "") else {
        return;
    };
    // Two UDP "LANs" on loopback: two ports, each its own broadcast group.
    let (p1, p2) = (reserve_port().unwrap(), reserve_port().unwrap());
    let lan1 = UdpConfig::loopback(p1.port());
    let lan2 = UdpConfig::loopback(p2.port());
    let g1 = Gateway::spawn(GatewayConfig::new(lan1.clone(), broker.config("site"))).unwrap();
    let g2 = Gateway::spawn(GatewayConfig::new(lan2.clone(), broker.config("site"))).unwrap();
    g1.wait_connected(WAIT).await.unwrap();
    g2.wait_connected(WAIT).await.unwrap();
    let n1 = UdpSpace::spawn(lan1, node("n1"), 11).unwrap();
    let n2 = UdpSpace::spawn(lan2, node("n2"), 12).unwrap();

    let mut at_n2 = subscribe(n2.handle(), r#"("ROOM", ?)"#).await;
    n1.handle()
        .out(r#"("ROOM", 1)"#.parse().unwrap(), None)
        .await
        .unwrap();
    let d = next(&mut at_n2, "the OUT across the broker").await;
    assert_eq!(d.tuple.to_string(), r#"("ROOM", 1)"#);
    // The second gateway hears the datagram once more (its own broadcast on LAN 2; MQTT 5's
    // "no local" spares the first its own publish) and drops it: the key crossed once, no loop.
    until("the echo dropped", async || g2.stats().duplicates >= 1).await;
    let (s1, s2) = (g1.stats(), g2.stats());
    assert_eq!((s1.to_mqtt, s1.to_udp), (1, 0), "{s1:?}");
    assert_eq!((s2.to_mqtt, s2.to_udp), (0, 1), "{s2:?}");

    // RD from LAN 2 answered by LAN 1 (n1 keeps a tuple locally): the request and the reply
    // cross the broker.
    n1.handle()
        .host_out(r#"("ROOM", 2)"#.parse().unwrap(), None)
        .await
        .unwrap();
    let (t, _) = n2
        .handle()
        .rd(r#"("ROOM", 2)"#.parse().unwrap(), Duration::from_secs(3))
        .await
        .unwrap()
        .expect("an answer from the other LAN");
    assert_eq!(t.to_string(), r#"("ROOM", 2)"#);
    until("the rd's datagrams settled", async || {
        let (s1, s2) = (g1.stats(), g2.stats());
        s1.to_mqtt == 2 && s2.to_mqtt == 1 && s1.to_udp == 1 && s2.to_udp == 2
    })
    .await;
    let n2_stats = n2.handle().stats().await.unwrap();
    assert_eq!(n2_stats.node.duplicates, 0, "{n2_stats:?}");

    n1.close().await;
    n2.close().await;
    let (s1, s2) = (g1.close().await, g2.close().await);
    assert_eq!(s1.malformed + s2.malformed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_mirror_publishes_and_outs() {
    let Some(broker) = Mosquitto::start("json", "") else {
        return;
    };
    let mut c = broker.config("hall");
    c.json_mirror = true;
    let a = MqttSpace::spawn(c, node("a"), 21).await.unwrap();
    let b = MqttSpace::spawn(broker.config("hall"), node("b"), 22)
        .await
        .unwrap();
    a.wait_connected(WAIT).await.unwrap();
    b.wait_connected(WAIT).await.unwrap();
    let mut dash = RawV4::connect(&broker, "beets/v1/hall/json").await;

    // Out: b's OUT stored at a appears as JSON.
    b.handle()
        .out(
            r#"("SENSOR", "LIGHT", 512, 1.5)"#.parse().unwrap(),
            Some(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let (_, payload) = within("the mirrored JSON", dash.next()).await;
    let doc: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(doc["op"], "out");
    assert_eq!(
        doc["tuple"],
        serde_json::json!(["SENSOR", "LIGHT", 512, 1.5])
    );
    assert_eq!(
        doc["types"],
        serde_json::json!(["str", "str", "int16", "float32"])
    );
    assert_eq!(doc["from"], format!("mqtt:{}", b.node_id()));
    assert_eq!(doc["lifetime"], 600, "the OUT's lifetime as sent");
    assert!(doc["at"].as_str().unwrap().ends_with('Z'));
    // A local out without a lifetime: `null`, from "local".
    a.handle()
        .host_out(r#"("SENSOR", "DOOR", 1)"#.parse().unwrap(), None)
        .await
        .unwrap();
    let (_, payload) = within("the mirrored local out", dash.next()).await;
    let doc: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(doc["tuple"], serde_json::json!(["SENSOR", "DOOR", 1]));
    assert_eq!(
        (&doc["lifetime"], &doc["from"]),
        (&serde_json::Value::Null, &serde_json::json!("local"))
    );

    // In: a JSON tuple on json/in is out by a, and b stores it.
    let mut at_b = subscribe(b.handle(), r#"("CMD", ?, ?)"#).await;
    dash.publish(
        "beets/v1/hall/json/in",
        br#"{"tuple": ["CMD", "LAMP", 1], "lifetime": 30}"#.to_vec(),
    )
    .await;
    let d = next(&mut at_b, "the JSON tuple at b").await;
    assert_eq!(d.tuple.to_string(), r#"("CMD", "LAMP", 1)"#);
    assert_eq!(d.from.as_ref().and_then(mqtt_node_id), Some(a.node_id()));

    // Bad JSON: counted and dropped; the mirror keeps serving.
    dash.publish("beets/v1/hall/json/in", b"{not json".to_vec())
        .await;
    dash.publish("beets/v1/hall/json/in", br#"[70000]"#.to_vec())
        .await;
    dash.publish("beets/v1/hall/json/in", br#"["CMD", "FAN", 2]"#.to_vec())
        .await;
    let d = next(&mut at_b, "a good JSON tuple after bad ones").await;
    assert_eq!(d.tuple.to_string(), r#"("CMD", "FAN", 2)"#);
    let m = a.mirror().unwrap().stats();
    assert_eq!((m.bad_json, m.outs), (2, 2), "{m:?}");
    assert!(m.published >= 1);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_publishes_an_out_lifetime_as_message_expiry() {
    let Some(broker) = Mosquitto::start("expiry", "") else {
        return;
    };
    let mut c = broker.config("hall");
    c.protocol = Protocol::V5;
    let a = MqttSpace::spawn(c, node("a"), 31).await.unwrap();
    a.wait_connected(WAIT).await.unwrap();
    let mut raw = RawV5::connect(&broker, "beets/v1/hall").await;
    a.handle()
        .out(
            r#"("T", 1)"#.parse().unwrap(),
            Some(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let expiry = within("the v5 publish", raw.next_expiry()).await;
    // The broker forwards the remaining interval: 600 s less the (sub-second) wait.
    assert!(matches!(expiry, Some(599..=600)), "{expiry:?}");
    a.handle()
        .out(r#"("T", 2)"#.parse().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(
        within("an OUT without lifetime", raw.next_expiry()).await,
        None
    );
    // MQTT 5 "no local": the broker does not echo a's datagrams back to it.
    let s = a.handle().stats().await.unwrap();
    assert_eq!(s.node.dropped_own, 0, "{s:?}");
    a.close().await;
}

/// QoS 1 with a persistent session: the receiving node goes away (a clean disconnect), the
/// sender keeps publishing, and when a node comes back with the same client id the broker hands
/// it everything published meanwhile — nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_persistent_session_loses_nothing_while_the_node_is_away() {
    let Some(broker) = Mosquitto::start("qos1", "") else {
        return;
    };
    const N: i16 = 50;
    let mut sender_cfg = broker.config("hall");
    sender_cfg.qos = Qos::AtLeastOnce;
    let mut away_cfg = broker.config("hall");
    away_cfg.qos = Qos::AtLeastOnce;
    away_cfg.client_id = Some("beets-qos1-receiver".into());
    away_cfg.persistent_session = Some(Duration::from_secs(300));
    let a = MqttSpace::spawn(sender_cfg, node("a"), 41).await.unwrap();
    let b = MqttSpace::spawn(away_cfg.clone(), node("b"), 42)
        .await
        .unwrap();
    a.wait_connected(WAIT).await.unwrap();
    b.wait_connected(WAIT).await.unwrap();
    // Subscribed: one OUT before the outage arrives as usual.
    let mut at_b = subscribe(b.handle(), r#"("Q", ?int16)"#).await;
    a.handle()
        .out(r#"("Q", -1)"#.parse().unwrap(), None)
        .await
        .unwrap();
    next(&mut at_b, "the OUT before b leaves").await;
    let (_, gone) = b.close().await;
    assert_eq!(gone.state, ConnectionState::Closed);

    for i in 0..N {
        a.handle()
            .out(format!(r#"("Q", {i})"#).parse().unwrap(), None)
            .await
            .unwrap();
    }
    // All handed to the connection, none dropped at the sender.
    until("the sender's publishes handed over", async || {
        a.mqtt_stats().published > u64::from(N.unsigned_abs())
    })
    .await;
    assert_eq!(a.mqtt_stats().publish_dropped, 0);

    // b comes back under the same client id: the broker delivers the queued datagrams, and the
    // node stores every one of them.
    let b = MqttSpace::spawn(away_cfg, node("b"), 43).await.unwrap();
    b.wait_connected(WAIT).await.unwrap();
    let all = r#"("Q", ?int16)"#;
    until("every OUT published while b was away stored", async || {
        b.handle().host_count(all.parse().unwrap()).await.unwrap() >= usize::from(N.unsigned_abs())
    })
    .await;
    for i in 0..N {
        let t = format!(r#"("Q", {i})"#);
        assert_eq!(
            b.handle().host_count(t.parse().unwrap()).await.unwrap(),
            1,
            "{t} stored once"
        );
    }
    a.close().await;
    b.close().await;
}

/// QoS 0 through a broker outage: what the sender publishes while the broker is down is lost,
/// and every loss is counted (the connection's `publish_dropped`, the node's `send_errors`);
/// the receiver gets none of them and serves again after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_losses_under_a_broker_outage_are_counted() {
    let Some(mut broker) = Mosquitto::start("qos0", "") else {
        return;
    };
    const LOST: u64 = 25;
    let a = MqttSpace::spawn(broker.config("hall"), node("a"), 51)
        .await
        .unwrap();
    let b = MqttSpace::spawn(broker.config("hall"), node("b"), 52)
        .await
        .unwrap();
    a.wait_connected(WAIT).await.unwrap();
    b.wait_connected(WAIT).await.unwrap();
    let mut at_b = subscribe(b.handle(), r#"("L", ?int16)"#).await;
    a.handle()
        .out(r#"("L", -1)"#.parse().unwrap(), None)
        .await
        .unwrap();
    next(&mut at_b, "the OUT before the outage").await;
    let (dropped0, errors0) = (
        a.mqtt_stats().publish_dropped,
        a.handle().stats().await.unwrap().send_errors,
    );

    broker.stop();
    let mut w = a.watch_state();
    within(
        "the outage to show at a",
        w.wait_for(|s| *s == ConnectionState::Disconnected),
    )
    .await
    .unwrap();
    for i in 0..LOST {
        a.handle()
            .out(format!(r#"("L", {i})"#).parse().unwrap(), None)
            .await
            .unwrap();
    }
    let lost = a.mqtt_stats().publish_dropped - dropped0;
    let errors = a.handle().stats().await.unwrap().send_errors - errors0;
    assert_eq!((lost, errors), (LOST, LOST), "every loss counted");

    broker.launch();
    a.wait_connected(WAIT).await.unwrap();
    b.wait_connected(WAIT).await.unwrap();
    a.handle()
        .out(r#"("L", 1000)"#.parse().unwrap(), None)
        .await
        .unwrap();
    let d = next(&mut at_b, "the OUT after the restart").await;
    assert_eq!(
        d.tuple.to_string(),
        r#"("L", 1000)"#,
        "none of the lost ones"
    );
    assert_eq!(
        b.handle()
            .host_count(r#"("L", ?int16)"#.parse().unwrap())
            .await
            .unwrap(),
        2,
        "b stored the OUTs before and after the outage only"
    );
    a.close().await;
    b.close().await;
}

/// A plain rumqttc 3.1.1 client: what a dashboard or `mosquitto_sub` is.
struct RawV4 {
    client: rumqttc::AsyncClient,
    rx: mpsc::Receiver<(String, Vec<u8>)>,
    _task: tokio::task::JoinHandle<()>,
}

impl RawV4 {
    async fn connect(broker: &Mosquitto, topic: &str) -> RawV4 {
        let o = rumqttc::MqttOptions::new("raw-v4", "127.0.0.1", broker.port);
        let (client, mut el) = rumqttc::AsyncClient::new(o, 64);
        client
            .subscribe(topic, rumqttc::QoS::AtMostOnce)
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(64);
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            while let Ok(ev) = el.poll().await {
                match ev {
                    rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(());
                        }
                    }
                    rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                        let _ = tx.send((p.topic, p.payload.to_vec())).await;
                    }
                    _ => {}
                }
            }
        });
        within("the raw client's subscription", ready)
            .await
            .unwrap();
        RawV4 {
            client,
            rx,
            _task: task,
        }
    }

    async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, rumqttc::QoS::AtMostOnce, false, payload)
            .await
            .unwrap();
    }

    async fn next(&mut self) -> (String, Vec<u8>) {
        self.rx.recv().await.expect("raw client running")
    }
}

/// A plain rumqttc MQTT 5 subscriber, to see the publish properties.
struct RawV5 {
    rx: mpsc::Receiver<Option<u32>>,
    _client: rumqttc::v5::AsyncClient,
    _task: tokio::task::JoinHandle<()>,
}

impl RawV5 {
    async fn connect(broker: &Mosquitto, topic: &str) -> RawV5 {
        use rumqttc::v5::mqttbytes::v5::Packet;
        let o = rumqttc::v5::MqttOptions::new("raw-v5", "127.0.0.1", broker.port);
        let (client, mut el) = rumqttc::v5::AsyncClient::new(o, 64);
        client
            .subscribe(topic, rumqttc::v5::mqttbytes::QoS::AtMostOnce)
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(64);
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            while let Ok(ev) = el.poll().await {
                match ev {
                    rumqttc::v5::Event::Incoming(Packet::SubAck(_)) => {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(());
                        }
                    }
                    rumqttc::v5::Event::Incoming(Packet::Publish(p)) => {
                        let expiry = p.properties.and_then(|p| p.message_expiry_interval);
                        let _ = tx.send(expiry).await;
                    }
                    _ => {}
                }
            }
        });
        within("the raw v5 subscription", ready).await.unwrap();
        RawV5 {
            rx,
            _client: client,
            _task: task,
        }
    }

    async fn next_expiry(&mut self) -> Option<u32> {
        self.rx.recv().await.expect("raw v5 client running")
    }
}

/// Makes a CA and a server certificate for 127.0.0.1 with the `openssl` tool in `dir`; `None`
/// without the tool.
fn make_certs(dir: &std::path::Path) -> Option<()> {
    std::fs::create_dir_all(dir).ok()?;
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").ok()?;
    let ok = [
        [
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.crt"],
        ]
        .concat(),
        [
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "other.key", "-out", "other.crt"],
        ]
        .concat(),
        [
            &["req"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat(),
    ]
    .iter()
    .all(|a| run(&[a.as_slice(), &["-days", "1", "-subj", "/CN=beets-test"]].concat()))
        && run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ]);
    ok.then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_right_ca_connects_and_a_wrong_ca_is_refused_clearly() {
    let certs = std::env::temp_dir().join(format!("beets-mqtt-{}-certs", std::process::id()));
    if make_certs(&certs).is_none() {
        println!("SKIPPED: tls: no openssl tool to make test certificates");
        return;
    }
    let d = certs.display();
    let extra =
        format!("user root\ncafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n");
    let Some(broker) = Mosquitto::start("tls", &extra) else {
        return;
    };
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let mut c = MqttConfig::new(&url, "hall").unwrap();
    c.tls.ca_file = Some(certs.join("ca.crt"));
    let a = MqttSpace::spawn(c.clone(), node("a"), 41).await.unwrap();
    a.wait_connected(WAIT).await.unwrap();
    let b = MqttSpace::spawn(c.clone(), node("b"), 42).await.unwrap();
    b.wait_connected(WAIT).await.unwrap();
    let mut at_b = subscribe(b.handle(), r#"("TLS", ?)"#).await;
    a.handle()
        .out(r#"("TLS", 1)"#.parse().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(
        next(&mut at_b, "an OUT over TLS").await.tuple.to_string(),
        r#"("TLS", 1)"#
    );

    // Another CA: the handshake fails, and the wait says why.
    c.tls.ca_file = Some(certs.join("other.crt"));
    let wrong = MqttSpace::spawn(c, node("w"), 43).await.unwrap();
    match wrong.wait_connected(Duration::from_secs(2)).await {
        Err(MqttError::NotConnected { last_error, .. }) => {
            assert!(last_error.contains("certificate"), "{last_error}");
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    // A CA file that does not exist fails at once, naming it.
    let mut bad = MqttConfig::new(&url, "hall").unwrap();
    bad.tls.ca_file = Some(certs.join("missing.crt"));
    let e = MqttSpace::spawn(bad, node("x"), 44).await.unwrap_err();
    assert!(e.to_string().contains("missing.crt"), "{e}");
    a.close().await;
    b.close().await;
    wrong.close().await;
    let _ = std::fs::remove_dir_all(&certs);
}
