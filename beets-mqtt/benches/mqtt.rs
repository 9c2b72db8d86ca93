//! MQTT through a real mosquitto (started on a free loopback port, as the tests do):
//!
//! - `mqtt_<runtime>/node_to_node_out`: tuples/s from one `MqttSpace` to another (an `out` each,
//!   waited for as deliveries; MQTT 5, the default), against `raw_rumqttc_pub_sub`: the same
//!   datagrams published by a plain rumqttc (3.1.1) client and received by another, through the
//!   same broker in the same run; `node_to_node_out_mqtt311`: the nodes on MQTT 3.1.1, whose
//!   broker echoes each node its own datagrams.
//! - The gateway's added latency: one tuple at a time from a UDP node through a `Gateway` to an
//!   MQTT node, against MQTT node to MQTT node directly; p50 and p99 of each and the difference
//!   are printed (`MQTT-LATENCY …`), as is the throughput ratio of best batches
//!   (`MQTT-RATIO …`).
//!
//! Without mosquitto it prints `SKIPPED: <reason>` and measures nothing (a failure with
//! `BEETS_REQUIRE_MQTT=1`).

#[path = "../tests/mosquitto/mod.rs"]
mod mosquitto;

use std::time::{Duration, Instant};

use beets_core::udp::{self, DatagramHeader, NodeId};
use beets_core::{Delivery, Message, NodeConfig, Transport, Tuple};
use beets_mqtt::{Gateway, GatewayConfig, MqttConfig, MqttSpace, Protocol};
use beets_udp::{UdpConfig, UdpSpace, reserve_port};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mosquitto::Mosquitto;
use tokio::sync::mpsc;

/// Tuples per batch: well under the connection queue (1024), so QoS 0 loses none locally.
const BATCH: u64 = 200;
/// Latency samples per path.
const SAMPLES: usize = 1000;
const WAIT: Duration = Duration::from_secs(10);

fn tuple(k: u64) -> Tuple {
    format!(r#"("SENSOR", "LIGHT", {}, 1.5)"#, k % 30_000)
        .parse()
        .unwrap()
}

fn node(name: &str) -> NodeConfig {
    NodeConfig::new(Transport::Udp, name).unwrap()
}

async fn recv(rx: &mut mpsc::Receiver<Delivery>) -> Delivery {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a delivery within 10 s (lost through the broker?)")
        .expect("subscription open")
}

/// Two MQTT nodes on one space; b subscribes to everything a sends.
struct Nodes {
    a: MqttSpace,
    b: MqttSpace,
    rx: mpsc::Receiver<Delivery>,
    k: u64,
}

impl Nodes {
    /// `protocol`: MQTT 5 is the default; on 3.1.1 the broker echoes each node its own
    /// datagrams.
    async fn new(broker: &Mosquitto, space: &str, protocol: Protocol) -> Nodes {
        let mut c = MqttConfig::new(&broker.url(), space).unwrap();
        c.protocol = protocol;
        let a = MqttSpace::spawn(c.clone(), node("a"), 1).await.unwrap();
        let b = MqttSpace::spawn(c, node("b"), 2).await.unwrap();
        a.wait_connected(WAIT).await.unwrap();
        b.wait_connected(WAIT).await.unwrap();
        let rx = b
            .handle()
            .subscribe(r#"("SENSOR", "LIGHT", ?, ?)"#.parse().unwrap(), 4096)
            .await
            .unwrap();
        Nodes { a, b, rx, k: 0 }
    }

    async fn batch(&mut self) {
        for _ in 0..BATCH {
            self.k += 1;
            self.a.handle().out(tuple(self.k), None).await.unwrap();
        }
        for _ in 0..BATCH {
            recv(&mut self.rx).await;
        }
    }

    /// One tuple, sent and delivered.
    async fn one(&mut self) -> Duration {
        self.k += 1;
        let t = Instant::now();
        self.a.handle().out(tuple(self.k), None).await.unwrap();
        recv(&mut self.rx).await;
        t.elapsed()
    }
}

/// A plain rumqttc publisher and subscriber on their own topic, with the nodes' datagrams.
struct Raw {
    publisher: rumqttc::AsyncClient,
    rx: mpsc::Receiver<()>,
    datagrams: Vec<Vec<u8>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

const RAW_TOPIC: &str = "beets/v1/raw-bench";

impl Raw {
    async fn new(broker: &Mosquitto) -> Raw {
        let o = rumqttc::MqttOptions::new("raw-pub", "127.0.0.1", broker.port);
        let (publisher, mut pub_loop) = rumqttc::AsyncClient::new(o, 1024);
        let o = rumqttc::MqttOptions::new("raw-sub", "127.0.0.1", broker.port);
        let (subscriber, mut sub_loop) = rumqttc::AsyncClient::new(o, 1024);
        subscriber
            .subscribe(RAW_TOPIC, rumqttc::QoS::AtMostOnce)
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(4096);
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let sub_task = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let _keep = subscriber;
            while let Ok(ev) = sub_loop.poll().await {
                match ev {
                    rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(());
                        }
                    }
                    rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                        // What a node's source does: hand the payload on.
                        std::hint::black_box(&p.payload);
                        let _ = tx.send(()).await;
                    }
                    _ => {}
                }
            }
        });
        let pub_task = tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
        tokio::time::timeout(WAIT, ready).await.unwrap().unwrap();
        let header = DatagramHeader {
            node_id: NodeId::new(0x0bee_7500).unwrap(),
            seq: 0,
        };
        let datagrams = (0..BATCH)
            .map(|k| {
                let h = DatagramHeader {
                    seq: k as u32 + 1,
                    ..header
                };
                let m = Message::Out {
                    tuple: tuple(k),
                    lifetime: None,
                };
                udp::encode(&h, &m, None).unwrap()
            })
            .collect();
        Raw {
            publisher,
            rx,
            datagrams,
            tasks: vec![sub_task, pub_task],
        }
    }

    async fn batch(&mut self) {
        for d in &self.datagrams {
            self.publisher
                .publish(RAW_TOPIC, rumqttc::QoS::AtMostOnce, false, d.clone())
                .await
                .unwrap();
        }
        for _ in 0..BATCH {
            tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .expect("a raw message within 10 s")
                .unwrap();
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A UDP node whose LAN has a gateway to the broker, and an MQTT node on the gateway's space.
struct ViaGateway {
    udp: UdpSpace,
    gateway: Gateway,
    mqtt: MqttSpace,
    rx: mpsc::Receiver<Delivery>,
    k: u64,
    _port: beets_udp::PortReservation,
}

impl ViaGateway {
    async fn new(broker: &Mosquitto) -> ViaGateway {
        let port = reserve_port().unwrap();
        let lan = UdpConfig::loopback(port.port());
        let c = MqttConfig::new(&broker.url(), "gw-bench").unwrap();
        let gateway = Gateway::spawn(GatewayConfig::new(lan.clone(), c.clone())).unwrap();
        gateway.wait_connected(WAIT).await.unwrap();
        let udp = UdpSpace::spawn(lan, node("lan"), 3).unwrap();
        let mqtt = MqttSpace::spawn(c, node("far"), 4).await.unwrap();
        mqtt.wait_connected(WAIT).await.unwrap();
        let rx = mqtt
            .handle()
            .subscribe(r#"("SENSOR", "LIGHT", ?, ?)"#.parse().unwrap(), 4096)
            .await
            .unwrap();
        ViaGateway {
            udp,
            gateway,
            mqtt,
            rx,
            k: 0,
            _port: port,
        }
    }

    async fn one(&mut self) -> Duration {
        self.k += 1;
        let t = Instant::now();
        self.udp.handle().out(tuple(self.k), None).await.unwrap();
        recv(&mut self.rx).await;
        t.elapsed()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn bench(c: &mut Criterion) {
    let Some(broker) = Mosquitto::start("bench", "max_queued_messages 100000") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut nodes = rt.block_on(Nodes::new(&broker, "bench", Protocol::V5));
    let mut nodes311 = rt.block_on(Nodes::new(&broker, "bench311", Protocol::V311));
    let mut raw = rt.block_on(Raw::new(&broker));

    let mut group = c.benchmark_group("mqtt_multi_thread_2");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("raw_rumqttc_pub_sub", |bch| {
        bch.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    raw.batch().await;
                }
                start.elapsed()
            })
        })
    });
    for (name, nodes) in [
        ("node_to_node_out", &mut nodes),
        ("node_to_node_out_mqtt311", &mut nodes311),
    ] {
        group.bench_function(name, |bch| {
            bch.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        nodes.batch().await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();

    // Batches alternated so all paths see the same machine load: median and best of each, and
    // the nodes' ratios to raw.
    const ROUNDS: usize = 30;
    let (mut t_raw, mut t_node, mut t_311) = (Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        for _ in 0..ROUNDS {
            let t = Instant::now();
            raw.batch().await;
            t_raw.push(t.elapsed());
            let t = Instant::now();
            nodes.batch().await;
            t_node.push(t.elapsed());
            let t = Instant::now();
            nodes311.batch().await;
            t_311.push(t.elapsed());
        }
    });
    let per_s = |d: Duration| BATCH as f64 / d.as_secs_f64();
    for t in [&mut t_raw, &mut t_node, &mut t_311] {
        t.sort();
    }
    let (median, best) = (
        |t: &[Duration]| per_s(t[t.len() / 2]),
        |t: &[Duration]| per_s(t[0]),
    );
    println!(
        "MQTT-RATIO raw median {:.0} best {:.0} tuples/s; node (MQTT 5) median {:.0} best {:.0} \
         (node/raw median {:.2}, best {:.2}); node on MQTT 3.1.1 median {:.0} best {:.0} \
         (median {:.2}, best {:.2})",
        median(&t_raw),
        best(&t_raw),
        median(&t_node),
        best(&t_node),
        median(&t_node) / median(&t_raw),
        best(&t_node) / best(&t_raw),
        median(&t_311),
        best(&t_311),
        median(&t_311) / median(&t_raw),
        best(&t_311) / best(&t_raw),
    );

    // Latency, one tuple at a time: direct MQTT node → node, and UDP node → gateway → broker →
    // MQTT node, alternated.
    let mut via = rt.block_on(ViaGateway::new(&broker));
    let (mut direct, mut gw) = (Vec::with_capacity(SAMPLES), Vec::with_capacity(SAMPLES));
    rt.block_on(async {
        for _ in 0..SAMPLES {
            direct.push(nodes.one().await);
            gw.push(via.one().await);
        }
    });
    direct.sort();
    gw.sort();
    let (d50, d99, g50, g99) = (
        percentile(&direct, 0.5),
        percentile(&direct, 0.99),
        percentile(&gw, 0.5),
        percentile(&gw, 0.99),
    );
    println!(
        "MQTT-LATENCY direct node->node p50 {:.0} us p99 {:.0} us; UDP node->gateway->MQTT node \
         p50 {:.0} us p99 {:.0} us; the gateway adds p50 {:.0} us p99 {:.0} us",
        us(d50),
        us(d99),
        us(g50),
        us(g99),
        us(g50) - us(d50),
        us(g99) - us(d99)
    );
    rt.block_on(async {
        let ViaGateway {
            udp, gateway, mqtt, ..
        } = via;
        udp.close().await;
        gateway.close().await;
        mqtt.close().await;
        drop(raw);
        for n in [nodes, nodes311] {
            n.a.close().await;
            n.b.close().await;
        }
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
