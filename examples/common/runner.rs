//! `beets node`: one real BeeTS node with agents loaded from files (what a Raspberry Pi runs).

use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::path::PathBuf;
use std::time::Duration;

use beets::core::node::SealConfig;
use beets::core::sealed::{FileCounterStore, SealKey};
use beets::core::{FpeKey, NodeConfig, Transport, parse_tuple};
use beets_agents::{
    AgentEvent, AgentRuntime, HostConfig, Isolation, Protection, RuntimeConfig, SpaceSpec,
    WorkerCommand,
};
use beets_udp::{UdpConfig, UdpSpace};
use clap::Args;
use tracing::{info, warn};

#[path = "stats.rs"]
mod stats;

#[path = "node_mqtt.rs"]
mod node_mqtt;

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
    #[command(flatten)]
    keys: SpaceKeyArgs,
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
    /// Start agents received in active tuples ("AGENT", name, version, source) on sealed spaces
    /// (--seal-key/--seal-password). Each must carry a newer version than the one running; loads
    /// are rate-limited.
    #[arg(long)]
    active: bool,
    /// Accept active tuples on FPE-keyed spaces (--key) too, explicitly: FPE does not
    /// authenticate, anyone who learnt the table can forge one (see the README).
    #[arg(long)]
    active_fpe: bool,
    /// Stop with an error when an --agent file does not load (default: report it and go on).
    #[arg(long)]
    strict_agents: bool,
    /// UDP socket receive buffer (SO_RCVBUF) in bytes (default: the OS's; Linux caps it at
    /// net.core.rmem_max). Datagrams the kernel drops when it is full are counted.
    #[arg(long, value_name = "BYTES")]
    recv_buffer: Option<usize>,
    /// Run agents in this thread instead of a supervised worker process (no protection from
    /// agents stuck in native code; for measurements).
    #[arg(long, hide = true)]
    agents_in_process: bool,
    /// Internal: be the agent worker process of a node (speaks on stdin/stdout).
    #[arg(long, hide = true)]
    agent_worker: bool,
    /// Print (and log) one line per space every SECS seconds, and once at stop: frames,
    /// messages, drops by reason, queue depth, pending requests and neighbours.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    stats: Option<u64>,
    /// With --stats: one JSON object per line instead of text.
    #[arg(long, requires = "stats")]
    stats_json: bool,
    // --- MQTT (--mqtt URL, --mqtt-space, --mqtt-json, ...): options in node_mqtt.rs ---
    #[command(flatten)]
    mqtt: node_mqtt::MqttArgs,
    // --- end MQTT ---
}

pub(crate) fn run(args: NodeArgs) -> Result<(), String> {
    if args.agent_worker {
        return beets_agents::serve_stdio().map_err(|e| format!("agent worker: {e}"));
    }
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
    let seal = seal_config(&args)?;
    let mut specs = Vec::new();
    if args.udp {
        specs.push(SpaceSpec::new("udp-ts", Transport::Udp));
    }
    if args.ble {
        specs.push(SpaceSpec::new("ble-ts", Transport::Ble));
    }
    let mut host = HostConfig::new(specs);
    if args.active || args.active_fpe {
        host.active.enabled = true;
        if args.active_fpe {
            // Explicit opt-in: FPE-keyed spaces too (and sealed ones).
            warn!(
                "active tuples enabled on FPE-keyed spaces: FPE does not authenticate, whoever \
                 learns the table can forge a newer version (replays of older ones are refused)"
            );
            host.active.require = Protection::Keyed;
        } else {
            // Sealed spaces only (spec §12): authenticated senders, no replays.
            if !args.keys.sealed() {
                warn!(
                    "--active without --seal-key/--seal-password: active tuples are only taken \
                     from sealed spaces (use --active-fpe to accept them on FPE-keyed spaces)"
                );
            }
            host.active.require = Protection::Sealed;
        }
    }
    let mut runtime = RuntimeConfig::default();
    if !args.agents_in_process {
        let exe = std::env::current_exe().map_err(|e| format!("agent worker: {e}"))?;
        runtime.isolation = Isolation::Process(WorkerCommand::new(exe, ["node", "--agent-worker"]));
    }
    let (agents, outputs) = AgentRuntime::spawn(host, runtime).map_err(|e| e.to_string())?;
    let mut handles = Vec::new();
    let mut named: Vec<(&str, beets::core::driver::SpaceHandle)> = Vec::new();
    let mut udp_space = None;
    if args.udp {
        let mut builder = UdpSpace::builder(&args.name)
            .port(args.port)
            .broadcast(args.broadcast)
            .repeat(args.repeat)
            .hooks(agents.hooks("udp-ts").map_err(|e| e.to_string())?)
            .node_config(engine_settings(&args, seal.as_ref()));
        for peer in &args.peers {
            builder = builder.peer(*peer);
        }
        if let Some(bytes) = args.recv_buffer {
            builder = builder.recv_buffer_size(bytes);
        }
        let space = builder.spawn().map_err(|e| format!("UDP: {e}"))?;
        info!(addr = %space.local_addr(), node_id = %space.node_id(), "UDP space udp-ts up");
        println!("udp-ts: node id {}", space.node_id());
        handles.push(space.handle().clone());
        named.push(("udp-ts", space.handle().clone()));
        udp_space = Some(space);
    }
    // --- MQTT: with --ble --mqtt, a BLE link of its own on the adapter for the BLE gateway ---
    #[allow(unused_mut)]
    let mut mqtt_ble_link: Option<beets_ble::BleLink> = None;
    // --- end MQTT ---
    #[cfg(feature = "bluer")]
    let ble_node = if args.ble {
        let hooks = agents.hooks("ble-ts").map_err(|e| e.to_string())?;
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
        let n = beets_ble::BleNode::builder(&args.name)
            .ble_config(ble_config)
            .hooks(hooks)
            .node_config(engine_settings(&args, seal.as_ref()))
            .spawn_bluez(&adapter)
            .await
            .map_err(|e| format!("BLE: {e}"))?;
        info!("BLE space ble-ts up");
        // --- MQTT: the BLE gateway's own radio and scanner on the same adapter (the node's
        // ble-ts does not hear them: a controller does not receive its own advertisements) ---
        if args.mqtt.mqtt.is_some() {
            let key = beets_ble::FrameKey::from(args.keys.fpe());
            // A D-Bus connection of its own: BlueZ keeps one discovery filter and session per
            // client, and refuses to set the filter again while this process's first session
            // (the node's scanner) runs. As a second client the gateway's filter is merged.
            let gateway_session = beets_ble::bluer::Session::new()
                .await
                .map_err(|e| format!("--mqtt BLE gateway: no BlueZ on the system D-Bus: {e}"))?;
            let gateway_adapter = gateway_session
                .adapter(adapter.name())
                .map_err(|e| format!("--mqtt BLE gateway: {e}"))?;
            let radio = beets_ble::bluez::BluezRadio::new(&gateway_adapter, &ble_config)
                .await
                .map_err(|e| format!("--mqtt BLE gateway: {e}"))?;
            let scan = beets_ble::bluez::scanner(&gateway_adapter, key, &ble_config)
                .await
                .map_err(|e| format!("--mqtt BLE gateway: {e}"))?;
            mqtt_ble_link = Some(
                beets_ble::BleLink::spawn(&ble_config, radio, scan)
                    .map_err(|e| format!("--mqtt BLE gateway: {e}"))?,
            );
        }
        // --- end MQTT ---
        handles.push(n.handle().clone());
        named.push(("ble-ts", n.handle().clone()));
        Some(n)
    } else {
        None
    };
    let mut loaded = 0;
    for path in &args.agents {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("agent")
            .to_owned();
        let r = match std::fs::read_to_string(path) {
            Ok(source) => agents.load(&name, &source).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match r {
            Ok(_) => loaded += 1,
            Err(e) if args.strict_agents => return Err(format!("agent {}: {e}", path.display())),
            Err(e) => {
                println!("agent {name}: not loaded ({}): {e}", path.display());
                warn!(agent = %name, error = %e, "agent not loaded; going on without it");
            }
        }
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
                AgentEvent::ActiveRefused { name, reason, from } => match from {
                    Some(from) => {
                        println!("agent {name}: active tuple from {from} refused: {reason}")
                    }
                    None => println!("agent {name}: active tuple refused: {reason}"),
                },
                _ => {}
            }
        }
    });
    tokio::spawn(
        agents
            .serve(outputs.actions, named.iter().cloned())
            .map_err(|e| e.to_string())?,
    );
    // --- MQTT: a gateway beside udp-ts (same port, broadcast and peers; no repeats), the BLE
    // gateway with --ble and the JSON mirror of the first space (before --out, so those are
    // mirrored too) ---
    let mqtt_udp = UdpConfig {
        bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, args.port)),
        broadcast: Some(SocketAddr::from((args.broadcast, args.port))),
        peers: args.peers.clone(),
        recv_buffer_size: args.recv_buffer,
        ..UdpConfig::default()
    };
    let mqtt_space = named.first().map(|(_, h)| h);
    let mqtt_side = node_mqtt::start(
        &args.mqtt,
        args.udp.then_some(&mqtt_udp),
        mqtt_ble_link,
        args.keys.key.as_deref(),
        mqtt_space,
    )
    .await?;
    // --- end MQTT ---
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
        args.name, loaded
    );
    // Ctrl-C (SIGINT) stops the node cleanly also when --exit-after is given.
    let exit_after = async {
        match args.exit_after {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = exit_after => {}
        r = tokio::signal::ctrl_c() => {
            if let Err(e) = r {
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
    // --- MQTT: stopped before the space it mirrors; prints the gateway's counters ---
    if let Some(m) = mqtt_side {
        m.stop().await;
    }
    // --- end MQTT ---
    if let Some(space) = udp_space {
        let (stats, udp_stats) = space.close().await;
        match udp_stats.kernel_drops {
            Some(n) => println!("udp-ts: kernel receive-queue drops {n}"),
            None => println!("udp-ts: kernel receive-queue drops unknown"),
        }
        println!(
            "udp-ts: frames in {}, messages {}, stored {}, replies sent {}",
            stats.node.frames_in,
            stats.node.messages_in,
            stats.node.stored,
            stats.node.replies_sent
        );
        let d = stats.node.sealed;
        if seal.is_some() || d.sealed_no_key > 0 {
            println!(
                "udp-ts sealed drops: bad MIC {}, duplicate {}, replay {}, not sealed {}, \
                 sealed but no key {}, too short {}, too long {}, other {}",
                d.bad_mic,
                d.duplicate,
                d.replay,
                d.not_sealed,
                d.sealed_no_key,
                d.too_short,
                d.too_long,
                d.bad_op + d.e_set + d.flag_not_allowed + d.bad_source_id + d.parse
            );
        }
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

/// The engine settings of every space from the command line (key or seal, announcements,
/// back-off, dedup window).
fn engine_settings(
    args: &NodeArgs,
    seal: Option<&SealConfig>,
) -> impl FnOnce(&mut NodeConfig) + 'static {
    let key = args.keys.fpe();
    let seal = seal.cloned();
    let announce = args.announce.map(Duration::from_secs);
    let backoff = args.reply_backoff_ms.map(Duration::from_millis);
    let dedup = args.dedup_window_s.map(Duration::from_secs);
    move |cfg: &mut NodeConfig| {
        cfg.key = key;
        if let Some(seal) = seal {
            cfg.key = None;
            cfg.seal = Some(seal);
        }
        cfg.announce_interval = announce;
        if let Some(b) = backoff {
            cfg.reply_backoff = b;
        }
        if let Some(d) = dedup {
            cfg.dedup_window = d;
        }
    }
}

/// The sealing of the node's spaces from `--seal-key`/`--seal-password`, `--source-id` and
/// `--state-dir`; `None` without a seal key.
fn seal_config(args: &NodeArgs) -> Result<Option<SealConfig>, String> {
    let seal = args.keys.seal_config()?;
    if let Some(s) = &seal {
        println!(
            "sealed spaces: key {} source id {}",
            s.key().id(),
            s.source_id()
        );
    }
    Ok(seal)
}
/// How a space is protected, from the command line: an FPE password or a sealing key with this
/// node's source id and state directory. Shared by `beets node` and the one-shot clients.
#[derive(Args, Debug, Clone)]
pub(crate) struct SpaceKeyArgs {
    /// Space password (FPE, spec §5): obfuscation only, see --seal-key.
    #[arg(long, value_name = "PASSWORD", allow_hyphen_values = true)]
    pub(crate) key: Option<String>,
    /// Seal the space (spec §12: authenticated, replay-protected) with this key, 32 hex digits.
    #[arg(long, value_name = "HEX32", conflicts_with_all = ["seal_password", "key"])]
    seal_key: Option<String>,
    /// Seal the space with a key derived from this password (PBKDF2, spec §12).
    #[arg(
        long,
        value_name = "PW",
        allow_hyphen_values = true,
        conflicts_with = "key"
    )]
    seal_password: Option<String>,
    /// This node's source id for a sealed space, 1..=65535; unique among all nodes of the key.
    /// Without it one is drawn and kept in --state-dir.
    #[arg(long, value_name = "N")]
    source_id: Option<u16>,
    /// Where a sealed node keeps its counters, replay window and source id (required with
    /// --seal-key/--seal-password: counters must never be reused across restarts).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

impl SpaceKeyArgs {
    /// The FPE key, if a password was given.
    pub(crate) fn fpe(&self) -> Option<FpeKey> {
        self.key.as_deref().map(FpeKey::from_password)
    }

    /// Whether a sealing key was given.
    pub(crate) fn sealed(&self) -> bool {
        self.seal_key.is_some() || self.seal_password.is_some()
    }

    /// The sealing of the space (`None` without a sealing key).
    pub(crate) fn seal_config(&self) -> Result<Option<SealConfig>, String> {
        let key = match (&self.seal_key, &self.seal_password) {
            (Some(hex), _) => SealKey::from_hex(hex).map_err(|e| format!("--seal-key: {e}"))?,
            (None, Some(pw)) => SealKey::from_password(pw),
            (None, None) => return Ok(None),
        };
        let dir = self.state_dir.as_deref().ok_or(
            "a sealed node needs --state-dir DIR: its counters must survive restarts (spec §12)",
        )?;
        std::fs::create_dir_all(dir).map_err(|e| format!("--state-dir {}: {e}", dir.display()))?;
        let id_file = dir.join(format!("source-id-{}", key.id()));
        let source = match self.source_id {
            Some(n) => NonZeroU16::new(n).ok_or("--source-id must be 1..=65535")?,
            None => match std::fs::read_to_string(&id_file) {
                Ok(text) => text
                    .trim()
                    .parse::<NonZeroU16>()
                    .map_err(|e| format!("{}: {e}", id_file.display()))?,
                Err(_) => {
                    let n = NonZeroU16::new((seed() % 65535) as u16 + 1).expect("1..=65535");
                    std::fs::write(&id_file, format!("{n}\n"))
                        .map_err(|e| format!("{}: {e}", id_file.display()))?;
                    warn!(
                        source_id = n.get(),
                        "drew a source id for this key and kept it in the state dir; source ids must be \
                     unique among all nodes of the key: give each node its own with --source-id"
                    );
                    n
                }
            },
        };
        let store = FileCounterStore::open(dir).map_err(|e| format!("--state-dir: {e}"))?;
        Ok(Some(SealConfig::new(key, source, store)))
    }
}

/// A fresh seed per start: node id and first sequence numbers must differ between runs (spec §7).
pub(crate) fn seed() -> u64 {
    use rand::TryRng;
    rand::rngs::SysRng.try_next_u64().unwrap_or_else(|_| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.as_nanos() as u64 ^ u64::from(std::process::id())
    })
}
