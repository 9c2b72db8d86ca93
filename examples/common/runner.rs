//! `beets node`: one real BeeTS node with agents loaded from files (what a Raspberry Pi runs).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use beets::core::{FpeKey, Node, NodeConfig, Time, Transport, parse_tuple};
use beets_agents::{AgentEvent, AgentRuntime, HostConfig, RuntimeConfig, SpaceSpec};
use beets_udp::{UdpConfig, UdpSpace};
use clap::Args;
use tracing::{info, warn};

#[path = "stats.rs"]
mod stats;

/// Options of `beets node`.
#[derive(Args, Debug)]
pub(crate) struct NodeArgs {
    /// Node name (1..=16 bytes): the identity tuple is ("NODE", name).
    #[arg(long, default_value = "node")]
    name: String,
    /// Run the UDP space "udp-ts".
    #[arg(long)]
    udp: bool,
    /// UDP port to bind and to send to.
    #[arg(long, default_value_t = beets::core::udp::DEFAULT_PORT)]
    port: u16,
    /// UDP broadcast address. The default, 127.255.255.255, stays on this machine; give your
    /// LAN's broadcast address (e.g. 192.168.1.255) to reach other hosts.
    #[arg(long, default_value_t = Ipv4Addr::new(127, 255, 255, 255))]
    broadcast: Ipv4Addr,
    /// Send to this unicast peer too (repeatable), e.g. for WLAN clients that lose broadcasts.
    #[arg(long = "peer", value_name = "IP:PORT")]
    peers: Vec<SocketAddr>,
    /// Send every datagram this many extra times (receivers drop the copies).
    #[arg(long, default_value_t = 0)]
    repeat: u8,
    /// Run the BLE space "ble-ts" on BlueZ (Linux; needs the `bluer` feature and bluetoothd).
    #[arg(long)]
    ble: bool,
    /// BlueZ adapter for --ble, e.g. hci1 (default: BlueZ's default adapter).
    #[arg(long, value_name = "NAME")]
    adapter: Option<String>,
    /// Advertise connectable (`yes`), non-connectable (`no`, spec §6) or choose per controller
    /// (`auto`: non-connectable with extended advertising). See the README on what connectable
    /// costs.
    #[arg(long, value_name = "auto|yes|no", default_value = "auto", value_parser = parse_connectable)]
    ble_connectable: beets_ble::Connectable,
    /// Space password (FPE, spec §5) for every space.
    #[arg(long, value_name = "PASSWORD", allow_hyphen_values = true)]
    key: Option<String>,
    /// Load this agent (repeatable). Its name is the file stem.
    #[arg(long = "agent", value_name = "FILE.js")]
    agents: Vec<PathBuf>,
    /// Store this tuple in the node's first space (udp-ts, else ble-ts) and broadcast it once the
    /// node is up (repeatable). Stored locally too, so remote `rd`/`inp` requests find it even
    /// when nobody heard the broadcast.
    #[arg(long = "out", value_name = "TUPLE", allow_hyphen_values = true)]
    outs: Vec<String>,
    /// Announce this node (IAMHERE, R = 0, spec §9) every SECS seconds, so neighbours record it.
    #[arg(long, value_name = "SECS")]
    announce: Option<u64>,
    /// Longest random wait before answering a request, in ms (spec §9 reply back-off B; default
    /// 30 on UDP, 500 on BLE).
    #[arg(long, value_name = "MS")]
    reply_backoff_ms: Option<u64>,
    /// How long repeated copies of a message are recognised and dropped, in seconds (spec §8
    /// window W; default 10).
    #[arg(long, value_name = "SECS")]
    dedup_window_s: Option<u64>,
    /// Stop after this many seconds instead of waiting for Ctrl-C.
    #[arg(long, value_name = "SECS")]
    exit_after: Option<u64>,
    /// Print (and log) one line per space every SECS seconds, and once at stop: frames,
    /// messages, drops by reason, queue depth, pending requests and neighbours.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    stats: Option<u64>,
    /// With --stats: one JSON object per line instead of text.
    #[arg(long, requires = "stats")]
    stats_json: bool,
}

pub(crate) fn run(args: NodeArgs) -> Result<(), String> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(node(args))
}

async fn node(args: NodeArgs) -> Result<(), String> {
    if !args.udp && !args.ble {
        return Err("give --udp, --ble or both".into());
    }
    if args.ble && !cfg!(feature = "bluer") {
        return Err(
            "--ble needs BlueZ support: build with `--features bluer` on Linux (see the README)"
                .into(),
        );
    }
    let mut specs = Vec::new();
    if args.udp {
        specs.push(SpaceSpec::new("udp-ts", Transport::Udp));
    }
    if args.ble {
        specs.push(SpaceSpec::new("ble-ts", Transport::Ble));
    }
    let (agents, outputs) = AgentRuntime::spawn(HostConfig::new(specs), RuntimeConfig::default())
        .map_err(|e| e.to_string())?;
    let mut handles = Vec::new();
    let mut named: Vec<(&str, beets::core::driver::SpaceHandle)> = Vec::new();
    let mut udp_space = None;
    if args.udp {
        let cfg = node_config(&args, Transport::Udp)?;
        let mut node = Node::new(cfg, seed(), Time::ZERO);
        node.set_hooks(Box::new(agents.hooks("udp-ts").map_err(|e| e.to_string())?));
        let udp = UdpConfig {
            bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, args.port)),
            broadcast: Some(SocketAddr::from((args.broadcast, args.port))),
            peers: args.peers.clone(),
            repeat: args.repeat,
            ..UdpConfig::default()
        };
        let space = UdpSpace::spawn_node(udp, node).map_err(|e| format!("UDP: {e}"))?;
        info!(addr = %space.local_addr(), node_id = %space.node_id(), "UDP space udp-ts up");
        println!("udp-ts: node id {}", space.node_id());
        handles.push(space.handle().clone());
        named.push(("udp-ts", space.handle().clone()));
        udp_space = Some(space);
    }
    #[cfg(feature = "bluer")]
    let ble_node = if args.ble {
        let cfg = node_config(&args, Transport::Ble)?;
        let mut node = Node::new(cfg, seed(), Time::ZERO);
        node.set_hooks(Box::new(agents.hooks("ble-ts").map_err(|e| e.to_string())?));
        let session = beets_ble::bluer::Session::new()
            .await
            .map_err(|e| format!("BLE: no BlueZ on the system D-Bus: {e}"))?;
        let adapter = match &args.adapter {
            Some(name) => session.adapter(name),
            None => session.default_adapter().await,
        }
        .map_err(|e| format!("BLE: no adapter: {e}"))?;
        adapter
            .set_powered(true)
            .await
            .map_err(|e| format!("BLE: cannot power the adapter: {e}"))?;
        let ble_config = beets_ble::BleConfig {
            connectable: args.ble_connectable,
            ..beets_ble::BleConfig::default()
        };
        let info = beets_ble::bluez::ControllerInfo::read(&adapter)
            .await
            .map_err(|e| format!("BLE: {e}"))?;
        println!(
            "BLE {}: controller accepts {} bytes of advertising data and {} of scan response, {} free instances{}",
            adapter.name(),
            info.max_adv_len,
            info.max_scan_rsp_len,
            info.free_instances,
            if info.hardware_offload {
                " (hardware offload)"
            } else {
                ""
            }
        );
        let n = beets_ble::bluez::spawn(&args.name, node, &adapter, &ble_config)
            .await
            .map_err(|e| format!("BLE: {e}"))?;
        info!("BLE space ble-ts up");
        handles.push(n.space().clone());
        named.push(("ble-ts", n.space().clone()));
        Some(n)
    } else {
        None
    };
    for path in &args.agents {
        let source =
            std::fs::read_to_string(path).map_err(|e| format!("agent {}: {e}", path.display()))?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("agent")
            .to_owned();
        agents
            .load(&name, &source)
            .await
            .map_err(|e| format!("agent {}: {e}", path.display()))?;
    }
    let mut events = outputs.events;
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                AgentEvent::Log { name, message, .. } => println!("agent {name}: {message}"),
                AgentEvent::Fault { name, fault, .. } => println!("agent {name}: fault: {fault}"),
                AgentEvent::Disabled { name, faults, .. } => {
                    println!("agent {name}: disabled after {faults} faults")
                }
                AgentEvent::Loaded { name, .. } => println!("agent {name}: loaded"),
                _ => {}
            }
        }
    });
    tokio::spawn(
        agents
            .serve(outputs.actions, named.iter().cloned())
            .map_err(|e| e.to_string())?,
    );
    if let Some(first) = handles.first() {
        for text in &args.outs {
            let tuple = parse_tuple(text).map_err(|e| format!("--out {text}: {e}"))?;
            first
                .host_out(tuple.clone(), None)
                .await
                .map_err(|e| format!("--out {text}: {e}"))?;
            first
                .out(tuple, None)
                .await
                .map_err(|e| format!("--out {text}: {e}"))?;
        }
    }
    // --- stats (--stats / --stats-json): a task of its own, stopped before the spaces close ---
    let stats_spaces: Vec<(&'static str, beets::core::driver::SpaceHandle)> =
        named.iter().map(|(n, h)| (*n, h.clone())).collect();
    let stats_started = tokio::time::Instant::now();
    let stats_task = args.stats.map(|secs| {
        tokio::spawn(stats::task(
            stats_spaces.clone(),
            Duration::from_secs(secs),
            stats_started,
            args.stats_json,
        ))
    });
    // --- end stats ---
    println!(
        "node {} running ({} agents); Ctrl-C stops it",
        args.name,
        args.agents.len()
    );
    match args.exit_after {
        Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
        None => {
            if let Err(e) = tokio::signal::ctrl_c().await {
                warn!(error = %e, "no Ctrl-C handler; stopping");
            }
        }
    }
    // --- stats: the last line, from the same counters the stop summary prints ---
    if let Some(task) = stats_task {
        task.abort();
        stats::report(&stats_spaces, stats_started, args.stats_json).await;
    }
    // --- end stats ---
    println!("node {} stopping", args.name);
    if let Some(space) = udp_space {
        let (stats, _) = space.close().await;
        println!(
            "udp-ts: frames in {}, messages {}, stored {}, replies sent {}",
            stats.node.frames_in,
            stats.node.messages_in,
            stats.node.stored,
            stats.node.replies_sent
        );
    }
    #[cfg(feature = "bluer")]
    if let Some(n) = ble_node {
        let s = n.stats();
        println!(
            "ble-ts: connectable {:?}, instances {} (limit {:?}), frames starved by other advertisers {} (most other instances seen {}), radio start errors {}",
            s.advertising.connectable,
            s.instances,
            s.advertising.instance_limit,
            s.advertising.starved_frames,
            s.advertising.max_foreign_instances,
            s.radio.start_errors,
        );
        n.close().await;
    }
    agents.shutdown();
    Ok(())
}

fn parse_connectable(s: &str) -> Result<beets_ble::Connectable, String> {
    match s {
        "auto" => Ok(beets_ble::Connectable::Auto),
        "yes" => Ok(beets_ble::Connectable::Connectable),
        "no" => Ok(beets_ble::Connectable::NonConnectable),
        _ => Err(format!("{s:?}: expected auto, yes or no")),
    }
}

/// The engine settings of one space from the command line.
fn node_config(args: &NodeArgs, transport: Transport) -> Result<NodeConfig, String> {
    let mut cfg = NodeConfig::new(transport, &args.name).map_err(|e| e.to_string())?;
    cfg.key = args.key.as_deref().map(FpeKey::from_password);
    cfg.announce_interval = args.announce.map(Duration::from_secs);
    if let Some(ms) = args.reply_backoff_ms {
        cfg.reply_backoff = Duration::from_millis(ms);
    }
    if let Some(secs) = args.dedup_window_s {
        cfg.dedup_window = Duration::from_secs(secs);
    }
    Ok(cfg)
}

/// A fresh seed per start: node id and first sequence numbers must differ between runs (spec §7).
fn seed() -> u64 {
    use rand::TryRng;
    rand::rngs::SysRng.try_next_u64().unwrap_or_else(|_| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.as_nanos() as u64 ^ u64::from(std::process::id())
    })
}
