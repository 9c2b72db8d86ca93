//! The BeeTS main demo: the paper's building light-control use case (§7), end to end.
//!
//! Run from the repository root (no radio needed; exits by itself):
//!
//! ```text
//! cargo run --example demo
//! cargo run --example demo -- --mobiles 10 --beacons 3 --delta-t 300 --duration 30 --seed 7
//! ```
//!
//! N mobile nodes publish `("SENSOR", "LIGHT", lux, tag)` over the BLE space when their light
//! reading changes; M beacons run the router agent `examples/agents/beacon.js`, which moves the
//! readings to the UDP space where a central server node collects them; the server publishes
//! `("SURVEY", id, question)` tuples that the beacons move to the mobiles, whose
//! `("ANSWER", id, score)` tuples flow back the same way.
//!
//! The server sits in the **city tier**: the beacons' UDP space is one building's LAN, a
//! gateway (`beets::mqtt::Gateway`) joins it to an MQTT broker, and the server is an MQTT node
//! (`MqttSpace`) on that broker — mobiles → BLE → beacons → UDP → gateway → broker → server.
//! Without `--mqtt URL` the demo starts an in-process broker (`rumqttd`) on a free loopback port,
//! so it needs nothing installed; `--mqtt mqtt://host:1883` uses a real broker (mosquitto, …).
//!
//! Without `--ble hardware` the BLE space runs on the simulated air of `beets-ble` (seeded loss,
//! lost scan responses, BlueZ-like UUID sets, the same Δt scheduler as on hardware); the UDP space
//! uses real sockets on loopback, broadcasting to 127.255.255.255 unless `--udp-broadcast` names
//! a LAN broadcast address.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beets::core::{NodeConfig, Transport, Tuple, Value, parse_template};
use beets::mqtt::{Gateway, GatewayConfig, MqttConfig, MqttSpace, Protocol};
use beets_agents::{AgentRuntime, HostConfig, RuntimeConfig, SpaceSpec};
use beets_ble::{BleConfig, BleNode, SimAir, SimAirConfig};
use beets_udp::{UdpConfig, UdpSpace, UdpSpaceBuilder};
use clap::{Parser, ValueEnum};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

#[path = "common/plot.rs"]
mod plot;

/// The router agent every beacon runs.
const BEACON_AGENT: &str = include_str!("agents/beacon.js");

/// BeeTS demo: mobiles → BLE → beacons (agents) → UDP → gateway → MQTT → server, and surveys
/// back.
#[derive(Parser, Debug, Clone)]
#[command(name = "demo", about)]
pub struct Args {
    /// Mobile nodes publishing light readings over BLE.
    #[arg(long, default_value_t = 6)]
    pub mobiles: usize,
    /// Beacons routing between the BLE space and the UDP space.
    #[arg(long, default_value_t = 2)]
    pub beacons: usize,
    /// Δt: how long each BLE frame is advertised, in ms (paper: 500).
    #[arg(long = "delta-t", default_value_t = 500)]
    pub delta_t: u64,
    /// How long the mobiles publish, in seconds (the demo then drains for 3 s and exits).
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Seed of the sensor model and of the simulated air.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Probability that one advertising packet is lost at one receiver (simulated air).
    #[arg(long, default_value_t = 0.3)]
    pub loss: f64,
    /// BLE radio: the simulated air, or BlueZ hardware (needs the `bluer` feature of beets-ble).
    #[arg(long, value_enum, default_value_t = Ble::Sim)]
    pub ble: Ble,
    /// UDP broadcast destination; the default stays on this machine. Give your LAN's broadcast
    /// address (e.g. 192.168.1.255) to reach other hosts.
    #[arg(long = "udp-broadcast", default_value_t = Ipv4Addr::new(127, 255, 255, 255))]
    pub udp_broadcast: Ipv4Addr,
    /// The city tier's MQTT broker, `mqtt://host[:port]` (or `mqtts://…`); default: an
    /// in-process broker (rumqttd) on a free loopback port.
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,
    /// UDP port; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Print every forwarded tuple, not only the summary.
    #[arg(long)]
    pub verbose: bool,
    /// Write an SVG timeline: published versus delivered tuples per second, and the survey
    /// round trips.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
}

/// Which BLE radio.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Ble {
    /// The simulated air of beets-ble.
    Sim,
    /// BlueZ through bluer (Linux, needs bluetoothd and the `bluer` feature).
    Hardware,
}

/// What the server saw.
#[derive(Default, Debug)]
struct ServerLog {
    light_tags: HashSet<i16>,
    light_copies: u64,
    answers: HashSet<(i16, i16)>,
    answer_copies: u64,
    survey_sent: BTreeMap<i16, Instant>,
    first_answer: BTreeMap<i16, Duration>,
    /// For --plot: when each distinct light tag first reached the server.
    light_first_at: Vec<Instant>,
}

/// A UDP space of the demo: `port`, the broadcast address of the arguments.
fn udp_space(args: &Args, port: u16, name: &str) -> UdpSpaceBuilder {
    UdpSpace::builder(name)
        .port(port)
        .broadcast(args.udp_broadcast)
}

/// The socket configuration every UDP space of the demo gets: never the limited broadcast
/// unless asked.
pub fn udp_config(args: &Args, port: u16) -> UdpConfig {
    udp_space(args, port, "demo").udp_config()
}

/// How long the city tier may take to connect to the broker at the start.
const BROKER_WAIT: Duration = Duration::from_secs(10);

/// Starts an MQTT broker (rumqttd, MQTT 3.1.1) in this process on a free port of 127.0.0.1 and
/// returns its URL. It runs on a thread of its own until the process exits.
fn embedded_broker() -> Result<String, Box<dyn std::error::Error>> {
    use std::collections::HashMap;
    // rumqttd binds the address it is given and does not report an ephemeral port: take a free
    // one from the OS and hand it over (the clients retry until the broker listens).
    let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    let server = rumqttd::ServerSettings {
        name: "demo-v4".into(),
        listen: (Ipv4Addr::LOCALHOST, port).into(),
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 20_480,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = rumqttd::Config {
        router: rumqttd::RouterConfig {
            max_connections: 64,
            max_outgoing_packet_count: 200,
            // The router keeps each topic's messages in an in-memory log of segments: 10 × 1 MiB.
            max_segment_size: 1 << 20,
            max_segment_count: 10,
            ..rumqttd::RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..rumqttd::Config::default()
    };
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                eprintln!("embedded MQTT broker stopped: {e}");
            }
        })?;
    Ok(format!("mqtt://127.0.0.1:{port}"))
}

fn s(x: &str) -> Value {
    Value::Str(x.into())
}

#[tokio::main]
async fn main() {
    // rumqttd logs a client's ordinary disconnect at the end as an ERROR ("no-connection id 1
    // is already gone"): its logs are off unless RUST_LOG asks for them.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rumqttd=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.ble == Ble::Hardware {
        return Err(
            "--ble hardware: run `beets node --ble` on each device with BlueZ (see the README); \
                    this demo drives many nodes on one machine and needs the simulated air"
                .into(),
        );
    }
    if args.mobiles == 0 || args.beacons == 0 || args.mobiles > 30 {
        return Err("--mobiles must be 1..=30 and --beacons at least 1".into());
    }
    // Held for the whole run: no other program is handed the port meanwhile.
    let reservation = if args.port == 0 {
        Some(beets::udp::reserve_port()?)
    } else {
        None
    };
    let port = reservation.as_ref().map_or(args.port, |r| r.port());
    let udp = udp_config(&args, port);
    let air = SimAir::new(SimAirConfig {
        seed: args.seed,
        packet_loss: args.loss,
        scan_response_loss: 0.05,
        ..SimAirConfig::default()
    });
    let ble = BleConfig {
        delta_t: Duration::from_millis(args.delta_t),
        ..BleConfig::default()
    };
    let (url, broker_kind) = match &args.mqtt {
        Some(url) => (url.clone(), "broker"),
        None => (embedded_broker()?, "in-process rumqttd"),
    };
    println!(
        "BeeTS demo: {} mobiles, {} beacons, Δt {} ms, {} s, seed {} — BLE: simulated air ({:.0} % packet loss); UDP: {}; city tier: MQTT {url} ({broker_kind})",
        args.mobiles,
        args.beacons,
        args.delta_t,
        args.duration,
        args.seed,
        args.loss * 100.0,
        udp.broadcast.map_or("peers only".into(), |a| a.to_string())
    );

    // The city tier: a gateway between the building's UDP space and the broker, and the server,
    // an MQTT node collecting readings and answers.
    let mut mqtt = MqttConfig::new(&url, "demo-city")?;
    mqtt.reconnect_min = Duration::from_millis(50);
    if args.mqtt.is_none() {
        // The embedded rumqttd listens for MQTT 3.1.1 only (its v5 listener is less complete);
        // a real broker gets the default, MQTT 5.
        mqtt.protocol = Protocol::V311;
    }
    let gateway = Gateway::spawn(GatewayConfig::new(udp.clone(), mqtt.clone()))?;
    let server = MqttSpace::spawn(
        mqtt,
        NodeConfig::new(Transport::Udp, "server")?,
        args.seed ^ 0x5e,
    )
    .await?;
    gateway.wait_connected(BROKER_WAIT).await?;
    server.wait_connected(BROKER_WAIT).await?;
    let log = Arc::new(Mutex::new(ServerLog::default()));
    let mut light = server
        .handle()
        .subscribe(parse_template(r#"("SENSOR", "LIGHT", ?, ?)"#)?, 1024)
        .await?;
    let mut answers = server
        .handle()
        .subscribe(parse_template(r#"("ANSWER", ?, ?)"#)?, 1024)
        .await?;
    let verbose = args.verbose;
    let l = log.clone();
    tokio::spawn(async move {
        while let Some(d) = light.recv().await {
            let t = d.tuple;
            let tag = t.get(3).and_then(Value::as_i16).unwrap_or(-1);
            let mut g = l.lock().expect("log lock");
            g.light_copies += 1;
            if g.light_tags.insert(tag) {
                g.light_first_at.push(Instant::now());
                if verbose {
                    println!("  server  ← {t}");
                }
            }
        }
    });
    let l = log.clone();
    tokio::spawn(async move {
        while let Some(d) = answers.recv().await {
            let t = d.tuple;
            let id = t.get(1).and_then(Value::as_i16).unwrap_or(-1);
            let who = t.get(2).and_then(Value::as_i16).unwrap_or(-1);
            let mut g = l.lock().expect("log lock");
            g.answer_copies += 1;
            g.answers.insert((id, who));
            if let Some(sent) = g.survey_sent.get(&id).copied() {
                g.first_answer.entry(id).or_insert_with(|| sent.elapsed());
            }
        }
    });

    // Beacons: a BLE node and a UDP node joined by the router agent.
    let mut beacons = Vec::new();
    for b in 0..args.beacons {
        let name = format!("beacon-{b}");
        let (rt, outputs) = AgentRuntime::spawn(
            HostConfig::new([SpaceSpec::ble("ble-ts"), SpaceSpec::udp("udp-ts")]),
            RuntimeConfig::default(),
        )?;
        let ble_node = BleNode::builder(&name)
            .ble_config(ble)
            .hooks(rt.hooks("ble-ts")?)
            .seed(args.seed * 100 + b as u64)
            .spawn_sim(&air, [0xbe, 0xac, 0, 0, 0, b as u8])?;
        let udp_space = udp_space(&args, port, &name)
            .hooks(rt.hooks("udp-ts")?)
            .seed(args.seed * 100 + 50 + b as u64)
            .spawn()?;
        rt.load("beacon", BEACON_AGENT).await?;
        tokio::spawn(rt.serve(
            outputs.actions,
            [
                ("ble-ts", ble_node.handle().clone()),
                ("udp-ts", udp_space.handle().clone()),
            ],
        )?);
        beacons.push((name, rt, ble_node, udp_space));
    }

    // Mobiles: light sensors on the BLE space that also answer surveys.
    let started = Instant::now();
    let publish_until = started + Duration::from_secs(args.duration);
    let published = Arc::new(Mutex::new(0u64));
    // For --plot: when each light tuple was published.
    let published_at = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let mut mobiles = Vec::new();
    let mut tasks = Vec::new();
    for m in 0..args.mobiles {
        let name = format!("mobile-{m}");
        let mobile = BleNode::builder(&name)
            .ble_config(ble)
            .seed(args.seed * 1000 + m as u64)
            .spawn_sim(&air, [0x0b, 0x11, 0, 0, 0, m as u8])?;
        let space = mobile.handle().clone();
        let mut surveys = space
            .subscribe(parse_template(r#"("SURVEY", ?int16, ?str)"#)?, 64)
            .await?;
        let mut rng = SmallRng::seed_from_u64(args.seed.wrapping_mul(31).wrapping_add(m as u64));
        let published = published.clone();
        let published_at = published_at.clone();
        tasks.push(tokio::spawn(async move {
            let mut lux: i16 = rng.random_range(100..800);
            let mut last_sent: Option<i16> = None;
            let mut count: i16 = 0;
            let mut answered = HashSet::new();
            let mut tick = tokio::time::interval(Duration::from_millis(400));
            while Instant::now() < publish_until {
                tokio::select! {
                    _ = tick.tick() => {
                        // Sensor model: a random walk; publish when the reading moved by ≥ 20 lux.
                        lux = (lux + rng.random_range(-40..=40)).clamp(0, 2000);
                        if last_sent.is_none_or(|l| (l - lux).abs() >= 20) && count < 999 {
                            let tag = (m as i16) * 1000 + count;
                            let t = Tuple::new([s("SENSOR"), s("LIGHT"), Value::Int16(lux), Value::Int16(tag)]).expect("4-tuple");
                            if space.out(t, Some(Duration::from_secs(60))).await.is_ok() {
                                count += 1;
                                last_sent = Some(lux);
                                *published.lock().expect("lock") += 1;
                                published_at.lock().expect("lock").push(Instant::now());
                            }
                        }
                    }
                    Some(q) = surveys.recv() => {
                        let id = q.tuple.get(1).and_then(Value::as_i16).unwrap_or(0);
                        if answered.insert(id) {
                            let score = rng.random_range(1..=5);
                            let who = m as i16 * 10 + score;
                            let a = Tuple::new([s("ANSWER"), Value::Int16(id), Value::Int16(who)]).expect("3-tuple");
                            let _ = space.out(a, Some(Duration::from_secs(60))).await;
                        }
                    }
                }
            }
        }));
        mobiles.push(mobile);
    }

    // The server asks a survey question every 5 s.
    let server_handle = server.handle().clone();
    let l = log.clone();
    let survey_task = tokio::spawn(async move {
        let mut id: i16 = 1;
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tick.tick().await;
            // Leave a survey time to make the round trip before the mobiles stop.
            if Instant::now() + Duration::from_secs(3) > publish_until {
                break;
            }
            let q =
                Tuple::new([s("SURVEY"), Value::Int16(id), s("Light ok? 1-5")]).expect("3-tuple");
            if server_handle
                .out(q, Some(Duration::from_secs(30)))
                .await
                .is_ok()
            {
                l.lock()
                    .expect("lock")
                    .survey_sent
                    .insert(id, Instant::now());
                println!(
                    "  server  → SURVEY {id} at {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                id += 1;
            }
        }
    });

    // Live log: one line every 5 s.
    while Instant::now() < publish_until {
        tokio::time::sleep(Duration::from_secs(5).min(publish_until - Instant::now())).await;
        let g = log.lock().expect("lock");
        println!(
            "  t={:>4.1} s  published {:>4}  at server {:>4} distinct ({} copies)  answers {}",
            started.elapsed().as_secs_f64(),
            *published.lock().expect("lock"),
            g.light_tags.len(),
            g.light_copies,
            g.answers.len()
        );
    }
    for t in tasks {
        let _ = t.await;
    }
    let _ = survey_task.await;
    // Let frames still queued on the air go out.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Summary, from the run's own counters.
    let published = *published.lock().expect("lock");
    println!("\nsummary");
    for (name, rt, ble_node, udp_space) in &beacons {
        let ble = ble_node.handle().stats().await?.node;
        let udpst = udp_space.handle().stats().await?.node;
        let hs = rt.stats().await?;
        println!(
            "  {name}: BLE frames in {:>5}, messages {:>4}, consumed by its agent {:>4} (agent actions {}), UDP messages in {:>4}, agent faults {}",
            ble.frames_in, ble.messages_in, hs.consumed, hs.actions, udpst.messages_in, hs.faults
        );
    }
    let g = std::mem::take(&mut *log.lock().expect("lock"));
    let distinct = g.light_tags.len() as u64;
    let ratio = if published == 0 {
        0.0
    } else {
        distinct as f64 / published as f64
    };
    let gs = gateway.stats();
    println!(
        "  gateway (building LAN ↔ {broker_kind}): UDP→MQTT {}, MQTT→UDP {}, repeats dropped {}, not published {}, reconnects {}",
        gs.to_mqtt, gs.to_udp, gs.duplicates, gs.mqtt_dropped, gs.mqtt.reconnects
    );
    println!(
        "  mobiles published {published} light tuples; the server received {distinct} distinct ({} copies via {} beacons)",
        g.light_copies,
        beacons.len()
    );
    println!("  delivery ratio {:.1} %", ratio * 100.0);
    let rtts: Vec<u128> = g.first_answer.values().map(|d| d.as_millis()).collect();
    println!(
        "  surveys sent {}, answered {}, answers {} (round trip first answer: {})",
        g.survey_sent.len(),
        g.first_answer.len(),
        g.answers.len(),
        if rtts.is_empty() {
            "—".into()
        } else {
            format!(
                "min {} ms, max {} ms",
                rtts.iter().min().unwrap_or(&0),
                rtts.iter().max().unwrap_or(&0)
            )
        }
    );
    println!(
        "DEMO-SUMMARY published={published} delivered={distinct} ratio={ratio:.3} surveys={} answered={}",
        g.survey_sent.len(),
        g.first_answer.len()
    );
    if let Some(path) = &args.plot {
        let secs = |t: &Instant| t.saturating_duration_since(started).as_secs_f64();
        let published_at: Vec<f64> = published_at
            .lock()
            .expect("lock")
            .iter()
            .map(secs)
            .collect();
        let delivered_at: Vec<f64> = g.light_first_at.iter().map(secs).collect();
        let surveys: Vec<(f64, Option<f64>)> = g
            .survey_sent
            .iter()
            .map(|(id, t)| {
                (
                    secs(t),
                    g.first_answer.get(id).map(|d| d.as_secs_f64() * 1e3),
                )
            })
            .collect();
        let figure = plot::timeline_figure(
            &format!(
                "BeeTS demo: {} mobiles, {} beacons, Δt {} ms, seed {} (simulated BLE air, UDP on loopback, MQTT city tier)",
                args.mobiles, args.beacons, args.delta_t, args.seed
            ),
            &published_at,
            &delivered_at,
            &surveys,
            args.duration + 3,
        );
        plot::write(path, &figure)?;
        println!("  plot written to {}", path.display());
    }
    for m in mobiles {
        m.close().await;
    }
    for (_, rt, ble_node, udp_space) in beacons {
        ble_node.close().await;
        udp_space.close().await;
        rt.shutdown();
    }
    server.close().await;
    gateway.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// The demo as the README runs it sends UDP only to the loopback broadcast.
    #[test]
    fn default_demo_traffic_stays_on_loopback() {
        let args = Args::parse_from(["demo"]);
        let udp = udp_config(&args, 40_000);
        assert_eq!(
            udp.broadcast,
            Some(SocketAddr::from(([127, 255, 255, 255], 40_000)))
        );
        let dests: Vec<SocketAddr> = udp.destinations().collect();
        assert!(!dests.is_empty());
        assert!(dests.iter().all(|d| d.ip().is_loopback()), "{dests:?}");
        assert!(udp.bind.ip().is_unspecified());
    }
}
