//! The BLE↔MQTT gateway on the simulated BLE air with a real mosquitto (started by the test on
//! a free loopback port; without the binary the test prints `SKIPPED: <reason>`, a failure with
//! `BEETS_REQUIRE_MQTT=1`). A BLE node and an MQTT node share one space through a
//! [`BleGateway`]: an OUT from BLE reaches the MQTT node, an rd from MQTT is answered from BLE,
//! an OUT from MQTT reaches BLE, each message is forwarded once, and a message too long for a
//! BLE frame is counted and dropped; two gateways on one air do not loop; an FPE-keyed space
//! crosses encrypted and a sealed BLE message is counted, not forwarded. Every wait is on an
//! event with a deadline (the gateway's counters are polled every 10 ms up to it).
#![cfg(feature = "ble")]

use std::future::Future;
use std::time::Duration;

use beets_ble::sim::{SimAir, SimAirConfig};
use beets_ble::{BleConfig, BleLink, BleNode};
use beets_core::driver::SpaceHandle;
use beets_core::{Delivery, NodeConfig, PeerAddr, Transport};
use beets_mqtt::peer::mqtt_node_id;
use beets_mqtt::{BleGateway, BleGatewayConfig, BleGatewayStats, MqttConfig, MqttSpace};
use tokio::sync::mpsc;

mod mosquitto;
use mosquitto::Mosquitto;

const WAIT: Duration = Duration::from_secs(10);
const GATEWAY_ADDR: [u8; 6] = [0xC0, 0, 0, 0, 0, 0x99];
const SENSOR_ADDR: [u8; 6] = [0xC0, 0, 0, 0, 0, 0x01];

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn subscribe(h: &SpaceHandle, template: &str) -> mpsc::Receiver<Delivery> {
    h.subscribe(template.parse().unwrap(), 64).await.unwrap()
}

/// An MQTT node named "server" in the space of `mqtt`, connected.
async fn mqtt_server(mqtt: MqttConfig, node: NodeConfig, seed: u64) -> MqttSpace {
    let server = MqttSpace::spawn(mqtt, node, seed).await.unwrap();
    server.wait_connected(WAIT).await.unwrap();
    server
}

fn server_node() -> NodeConfig {
    NodeConfig::new(Transport::Udp, "server").unwrap()
}

/// Waits until the gateway's counters satisfy `check` (polled: they are plain counters), at
/// most [`WAIT`].
async fn gateway_until(
    g: &BleGateway,
    what: &str,
    check: impl Fn(&BleGatewayStats) -> bool,
) -> BleGatewayStats {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = g.stats();
        if check(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ble_node_and_an_mqtt_node_share_a_space_through_the_gateway() {
    let Some(broker) = Mosquitto::start("ble-gateway", "") else {
        return;
    };
    let mqtt = |space: &str| {
        let mut c = MqttConfig::new(&broker.url(), space).expect("config");
        c.reconnect_min = Duration::from_millis(50);
        c
    };
    // A lossless air and a short Δt: this test is about the gateway, not about BLE losses.
    let air = SimAir::new(SimAirConfig {
        packet_loss: 0.0,
        scan_response_loss: 0.0,
        ..SimAirConfig::default()
    });
    let ble = BleConfig {
        delta_t: Duration::from_millis(100),
        ..BleConfig::default()
    };
    let config = BleGatewayConfig::new(mqtt("garden"));
    let link = BleLink::spawn_sim(&air, GATEWAY_ADDR, config.frame_key(), &ble).unwrap();
    let gateway = BleGateway::spawn(config, link).unwrap();
    gateway.wait_connected(WAIT).await.unwrap();
    let sensor = BleNode::builder("sensor")
        .ble_config(ble)
        .node_config(|c| c.reply_backoff = Duration::from_millis(50))
        .seed(7)
        .spawn_sim(&air, SENSOR_ADDR)
        .unwrap();
    let server = mqtt_server(mqtt("garden"), server_node(), 8).await;

    // 1. An OUT on BLE reaches the MQTT node, sent by the node id standing for the sensor.
    let mut at_server = subscribe(server.handle(), r#"("LUX", ?, ?int16)"#).await;
    sensor
        .handle()
        .out(r#"("LUX", "bed-1", 480)"#.parse().unwrap(), None)
        .await
        .unwrap();
    let d = within("the OUT at the MQTT node", at_server.recv())
        .await
        .unwrap();
    assert_eq!(d.tuple.to_string(), r#"("LUX", "bed-1", 480)"#);
    let via = d
        .from
        .as_ref()
        .and_then(mqtt_node_id)
        .expect("an MQTT sender");
    // The frame is advertised for Δt and heard many times; it crossed once.
    let s = gateway_until(&gateway, "the OUT published", |s| s.to_mqtt >= 1).await;
    assert_eq!((s.to_mqtt, s.to_ble), (1, 0), "{s:?}");

    // 2. An rd on MQTT is answered from BLE: the sensor holds a tuple it never sent.
    sensor
        .handle()
        .host_out(r#"("LUX", "bed-2", 300)"#.parse().unwrap(), None)
        .await
        .unwrap();
    let (t, how) = server
        .handle()
        .rd(r#"("LUX", "bed-2", ?int16)"#.parse().unwrap(), WAIT)
        .await
        .unwrap()
        .expect("the sensor answers through the gateway");
    assert_eq!(t.to_string(), r#"("LUX", "bed-2", 300)"#);
    assert_eq!(mqtt_node_id(&how.from), Some(via), "the same BLE sender");
    let s = gateway_until(&gateway, "the reply published", |s| s.to_mqtt >= 2).await;
    assert_eq!(
        (s.to_mqtt, s.to_ble),
        (2, 1),
        "request in, reply out: {s:?}"
    );

    // 3. An OUT on MQTT reaches the BLE node, from the gateway's address.
    let mut at_sensor = subscribe(sensor.handle(), r#"("CMD", ?str)"#).await;
    server
        .handle()
        .out(r#"("CMD", "lamp-on")"#.parse().unwrap(), None)
        .await
        .unwrap();
    let d = within("the OUT at the BLE node", at_sensor.recv())
        .await
        .unwrap();
    assert_eq!(d.tuple.to_string(), r#"("CMD", "lamp-on")"#);
    assert_eq!(d.from, Some(PeerAddr::Ble(GATEWAY_ADDR)));

    // 4. A message over 31 bytes cannot become a BLE frame: counted, not advertised.
    server
        .handle()
        .out(
            r#"("CMD", "a command much too long for one BLE frame")"#
                .parse()
                .unwrap(),
            None,
        )
        .await
        .unwrap();
    let s = gateway_until(&gateway, "the long message counted", |s| s.too_long >= 1).await;
    assert_eq!(s.to_ble, 2, "request and the short OUT only: {s:?}");
    assert_eq!(s.to_mqtt, 2, "{s:?}");
    assert_eq!((s.malformed, s.sealed, s.echoes), (0, 0, 0), "{s:?}");
    assert_eq!((s.mqtt_dropped, s.ble_refused), (0, 0), "{s:?}");
    // MQTT 5 (the default) subscribes with no-local: the broker does not send the gateway its
    // own publishes back, so nothing was a repeat.
    assert_eq!(s.duplicates, 0, "{s:?}");
    let ble_stats = gateway.ble_stats().await.expect("running");
    assert_eq!(ble_stats.radio.start_errors, 0, "{ble_stats:?}");
    // The sensor stored the short OUT once.
    let sensor_stats = sensor.handle().stats().await.unwrap();
    assert_eq!(sensor_stats.node.stored, 1, "{sensor_stats:?}");

    let s = gateway.close().await;
    assert_eq!(s.mqtt.reconnects, 0, "{s:?}");
    server.close().await;
    sensor.close().await;
}

/// Two gateways on one air that list each other as peer gateways: an OUT from MQTT is
/// advertised by both; each hears the other's frame and does not publish it back (an echo),
/// so the OUT reaches the broker once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_air_do_not_loop() {
    let Some(broker) = Mosquitto::start("ble-gateway-loop", "") else {
        return;
    };
    let mqtt = |space: &str| MqttConfig::new(&broker.url(), space).expect("config");
    let air = SimAir::new(SimAirConfig {
        packet_loss: 0.0,
        scan_response_loss: 0.0,
        ..SimAirConfig::default()
    });
    let ble = BleConfig {
        delta_t: Duration::from_millis(100),
        ..BleConfig::default()
    };
    let mut gateways = Vec::new();
    let addrs = [[0xC0, 0, 0, 0, 0, 0x91], [0xC0, 0, 0, 0, 0, 0x92]];
    for (i, addr) in addrs.into_iter().enumerate() {
        let mut config = BleGatewayConfig::new(mqtt("porch"));
        // Each lists the other: a frame of the other gateway can arrive before the broker's
        // copy (then, without the list, it would be published back under the other's key).
        config.peer_gateways = vec![addrs[1 - i]];
        let link = BleLink::spawn_sim(&air, addr, config.frame_key(), &ble).unwrap();
        let g = BleGateway::spawn(config, link).unwrap();
        g.wait_connected(WAIT).await.unwrap();
        gateways.push(g);
    }
    let sensor = BleNode::builder("sensor")
        .ble_config(ble)
        .seed(3)
        .spawn_sim(&air, SENSOR_ADDR)
        .unwrap();
    let server = mqtt_server(mqtt("porch"), server_node(), 4).await;
    let mut at_sensor = subscribe(sensor.handle(), r#"("CMD", ?str)"#).await;
    server
        .handle()
        .out(r#"("CMD", "porch-light")"#.parse().unwrap(), None)
        .await
        .unwrap();
    within("the OUT at the BLE node", at_sensor.recv())
        .await
        .unwrap();
    // Both advertised it, and each heard the other's frame as an echo.
    for g in &gateways {
        gateway_until(g, "the echo of the other gateway's frame", |s| {
            s.to_ble == 1 && s.echoes >= 1
        })
        .await;
    }
    let stats: Vec<BleGatewayStats> = futures_close(gateways).await;
    for s in &stats {
        assert_eq!(s.to_mqtt, 0, "a gateway published the OUT back: {s:?}");
    }
    let server_stats = server.handle().stats().await.unwrap();
    assert_eq!(
        server_stats.node.messages_in, 0,
        "nothing came back to the MQTT node: {server_stats:?}"
    );
    server.close().await;
    sensor.close().await;
}

async fn futures_close(gateways: Vec<BleGateway>) -> Vec<BleGatewayStats> {
    let mut out = Vec::new();
    for g in gateways {
        out.push(g.close().await);
    }
    out
}

/// An FPE-keyed space crosses encrypted (the gateway holds the key only to pick frames out of
/// the air), and a sealed BLE message does not cross: §12 binds it to BLE (counted, dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fpe_messages_cross_encrypted_and_sealed_ones_are_counted_not_forwarded() {
    use beets_core::node::SealConfig;
    use beets_core::sealed::{MemoryCounterStore, SealKey};
    use std::num::NonZeroU16;

    let Some(broker) = Mosquitto::start("ble-gateway-keys", "") else {
        return;
    };
    let air = SimAir::new(SimAirConfig {
        packet_loss: 0.0,
        scan_response_loss: 0.0,
        ..SimAirConfig::default()
    });
    let ble = BleConfig {
        delta_t: Duration::from_millis(100),
        ..BleConfig::default()
    };
    let mut config =
        BleGatewayConfig::new(MqttConfig::new(&broker.url(), "vault").expect("config"));
    config.key = Some(beets_core::FpeKey::from_password("orchard"));
    let link = BleLink::spawn_sim(&air, GATEWAY_ADDR, config.frame_key(), &ble).unwrap();
    let gateway = BleGateway::spawn(config, link).unwrap();
    gateway.wait_connected(WAIT).await.unwrap();
    let keyed = BleNode::builder("keyed")
        .ble_config(ble)
        .key("orchard")
        .seed(11)
        .spawn_sim(&air, SENSOR_ADDR)
        .unwrap();
    let mut server_cfg = server_node();
    server_cfg.key = Some(beets_core::FpeKey::from_password("orchard"));
    let server = mqtt_server(
        MqttConfig::new(&broker.url(), "vault").expect("config"),
        server_cfg,
        12,
    )
    .await;
    let mut at_server = subscribe(server.handle(), r#"("SOIL", ?int16)"#).await;
    keyed
        .handle()
        .out(r#"("SOIL", 42)"#.parse().unwrap(), None)
        .await
        .unwrap();
    let d = within("the FPE OUT at the MQTT node", at_server.recv())
        .await
        .unwrap();
    assert_eq!(d.tuple.to_string(), r#"("SOIL", 42)"#);

    // A sealed BLE node on the same air: its frames reach the gateway and stop there.
    let sealed = BleNode::builder("sealed")
        .ble_config(ble)
        .seal(SealConfig::new(
            SealKey::from_password("hive"),
            NonZeroU16::new(5).unwrap(),
            MemoryCounterStore::new(),
        ))
        .seed(13)
        .spawn_sim(&air, [0xC0, 0, 0, 0, 0, 0x05])
        .unwrap();
    sealed
        .handle()
        .out(r#"("HIVE", 7)"#.parse().unwrap(), None)
        .await
        .unwrap();
    let s = gateway_until(&gateway, "the sealed frame counted", |s| s.sealed >= 1).await;
    assert_eq!(s.to_mqtt, 1, "only the FPE OUT was published: {s:?}");
    let server_stats = server.handle().stats().await.unwrap();
    assert_eq!(server_stats.node.messages_in, 1, "{server_stats:?}");
    gateway.close().await;
    server.close().await;
    keyed.close().await;
    sealed.close().await;
}
