//! `beets out|rd|inp|test|watch`: one-shot clients of a UDP space — what `mosquitto_pub` and
//! `mosquitto_sub` are for MQTT.
//!
//! Each client runs a short-lived node of its own on the space's port (the port is shared:
//! `SO_REUSEPORT`, so a client and a `beets node` on one host hear the same broadcasts), does one
//! thing and closes. The client's node is passive: it refuses every request from the air (a hook
//! stops them), so it never answers or takes anything for others while it runs.
//!
//! Output: tuples in the text syntax on stdout, one per line; what happened on stderr. Exit code
//! 0 on a match (`rd`, `inp`, `test`), when sent (`out`) or when at least one delivery was printed
//! (`watch`); 1 on none and on errors.

use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::time::Duration;

use beets::core::driver::SpaceHandle;
use beets::core::message::RequestOp;
use beets::core::node::{Decision, DecisionToken, Hooks, Question, Scope, Verdict};
use beets::core::space::DeliveryKinds;
use beets::core::{DeliveryKind, Node, NodeConfig, Time, Transport};
use beets::core::{parse_template, parse_tuple};
use beets_udp::{UdpConfig, UdpSpace};
use clap::{Args, ValueEnum};

/// The UDP space a client joins (as `beets node` does).
#[derive(Args, Debug)]
pub(crate) struct UdpArgs {
    /// This client's node name (1..=16 bytes): its identity tuple is ("NODE", name).
    #[arg(long, default_value = "client")]
    name: String,
    /// UDP port of the space (bound shared with other nodes on this host, and sent to).
    #[arg(long, default_value_t = beets::core::udp::DEFAULT_PORT)]
    port: u16,
    /// UDP broadcast address (default 127.255.255.255: this machine only; give the LAN's, e.g.
    /// 192.168.1.255, to reach other hosts).
    #[arg(long, default_value_t = Ipv4Addr::new(127, 255, 255, 255))]
    broadcast: Ipv4Addr,
    /// Send to this unicast peer too (repeatable).
    #[arg(long = "peer", value_name = "IP:PORT")]
    peers: Vec<SocketAddr>,
    #[command(flatten)]
    keys: crate::runner::SpaceKeyArgs,
}

/// Options of `beets out`.
#[derive(Args, Debug)]
pub(crate) struct OutArgs {
    /// The tuple in the text syntax, e.g. '("SENSOR", "LIGHT", 512)'.
    #[arg(allow_hyphen_values = true)]
    tuple: String,
    /// Lifetime in seconds (1..=65535; default: the receivers' space default).
    #[arg(long, value_name = "SECS")]
    lifetime: Option<NonZeroU16>,
    #[command(flatten)]
    udp: UdpArgs,
}

/// Where a request looks (`--scope`).
#[derive(ValueEnum, Debug, Clone, Copy, Default)]
pub(crate) enum ScopeArg {
    /// The spaces in range (a broadcast request).
    #[default]
    Network,
    /// The client's own space: only tuples heard while it waits.
    Local,
    /// Both: the first answer wins.
    Both,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Scope {
        match s {
            ScopeArg::Network => Scope::Network,
            ScopeArg::Local => Scope::Local,
            ScopeArg::Both => Scope::Both,
        }
    }
}

/// Options of `beets rd|inp|test`.
#[derive(Args, Debug)]
pub(crate) struct RequestArgs {
    /// The template in the text syntax, e.g. '("SENSOR", ?, ?int16)'.
    #[arg(allow_hyphen_values = true)]
    template: String,
    /// How long to wait for an answer, in seconds (default 2). The request carries no wait:
    /// only spaces that hold a match when it arrives answer.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, conflicts_with = "wait")]
    timeout: Option<Duration>,
    /// Ask the spaces in range to keep the request pending up to SECS seconds (1..=65535,
    /// spec §11) and wait that long: a tuple stored there meanwhile is answered.
    #[arg(long, value_name = "SECS")]
    wait: Option<NonZeroU16>,
    /// Where to look.
    #[arg(long, value_enum, default_value = "network")]
    scope: ScopeArg,
    #[command(flatten)]
    udp: UdpArgs,
}

/// Options of `beets watch`.
#[derive(Args, Debug)]
pub(crate) struct WatchArgs {
    /// The template of the tuples to print, e.g. '("SENSOR", ?, ?)'.
    #[arg(allow_hyphen_values = true)]
    template: String,
    /// Stop after this many deliveries.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
    /// Which deliveries, comma-separated: out (stored OUTs), notify (notifications), and the
    /// removals from the client's own space inp, rm, expired, evicted; or all.
    #[arg(long, value_name = "KINDS", default_value = "out,notify", value_parser = parse_kinds)]
    kinds: DeliveryKinds,
    #[command(flatten)]
    udp: UdpArgs,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?}: give a positive number of seconds"))
}

fn parse_kinds(s: &str) -> Result<DeliveryKinds, String> {
    let mut kinds = DeliveryKinds::NONE;
    for word in s.split(',').map(str::trim) {
        kinds = kinds
            | match word {
                "out" => DeliveryKinds::only(DeliveryKind::Out),
                "notify" => DeliveryKinds::only(DeliveryKind::Notify),
                "inp" => DeliveryKinds::only(DeliveryKind::Inp),
                "rm" => DeliveryKinds::only(DeliveryKind::Rm),
                "expired" => DeliveryKinds::only(DeliveryKind::Expired),
                "evicted" => DeliveryKinds::only(DeliveryKind::Evicted),
                "all" => DeliveryKinds::ALL,
                _ => {
                    return Err(format!(
                        "{word:?}: expected out, notify, inp, rm, expired, evicted or all"
                    ));
                }
            };
    }
    Ok(kinds)
}

/// The lowercase name a delivery kind is printed with.
fn kind_name(kind: DeliveryKind) -> &'static str {
    match kind {
        DeliveryKind::Out => "out",
        DeliveryKind::Notify => "notify",
        DeliveryKind::Inp => "inp",
        DeliveryKind::Rm => "rm",
        DeliveryKind::Expired => "expired",
        DeliveryKind::Evicted => "evicted",
    }
}

/// Refuses every request from the air: a client never answers for the space.
struct Passive;

impl Hooks for Passive {
    fn decide(&mut self, _token: DecisionToken, question: &Question<'_>) -> Verdict {
        match question {
            Question::Request { .. } => Verdict::Now(Decision::Stop),
            _ => Verdict::Now(Decision::Proceed),
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

/// Joins the space: a passive node on the space's port.
fn join(args: &UdpArgs, send_waits: bool) -> Result<UdpSpace, String> {
    let mut cfg = NodeConfig::new(Transport::Udp, &args.name).map_err(|e| e.to_string())?;
    cfg.key = args.keys.fpe();
    if let Some(seal) = args.keys.seal_config()? {
        cfg = cfg.with_seal(seal);
    }
    cfg.send_waits = send_waits;
    let mut node = Node::new(cfg, crate::runner::seed(), Time::ZERO);
    node.set_hooks(Box::new(Passive));
    let udp = UdpConfig {
        bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, args.port)),
        broadcast: Some(SocketAddr::from((args.broadcast, args.port))),
        peers: args.peers.clone(),
        ..UdpConfig::default()
    };
    UdpSpace::spawn_node(udp, node).map_err(|e| format!("UDP: {e}"))
}

/// `beets out TUPLE`: broadcasts one OUT; prints nothing.
pub(crate) fn out(args: OutArgs) -> Result<String, String> {
    let tuple = parse_tuple(&args.tuple).map_err(|e| e.to_string())?;
    runtime()?.block_on(async {
        let space = join(&args.udp, false)?;
        let lifetime = args
            .lifetime
            .map(|l| Duration::from_secs(u64::from(l.get())));
        let sent = space.handle().out(tuple, lifetime).await;
        space.close().await;
        sent.map_err(|e| e.to_string())?;
        Ok(String::new())
    })
}

/// Waits until the driver has handled every command queued before this call (its queue is
/// first in, first out), then reports how many requests went on the air.
async fn requests_sent(handle: &SpaceHandle) -> u64 {
    handle.stats().await.map_or(0, |s| s.node.requests_sent)
}

/// `beets rd|inp|test TEMPLATE`: one request; prints the answer, or fails with "no match".
pub(crate) fn request(op: RequestOp, args: RequestArgs) -> Result<String, String> {
    let template = parse_template(&args.template).map_err(|e| e.to_string())?;
    let name = match op {
        RequestOp::Rd => "rd",
        RequestOp::Inp => "inp",
        RequestOp::Test => "test",
    };
    let timeout = match (args.wait, args.timeout) {
        (Some(w), _) => Duration::from_secs(u64::from(w.get())),
        (None, Some(t)) => t,
        (None, None) => Duration::from_secs(2),
    };
    let scope = Scope::from(args.scope);
    runtime()?.block_on(async {
        let space = join(&args.udp, args.wait.is_some())?;
        let handle = space.handle().clone();
        let started = tokio::time::Instant::now();
        let req = async {
            match op {
                RequestOp::Rd => handle.rd_in(template, timeout, scope).await,
                RequestOp::Inp => handle.inp_in(template, timeout, scope).await,
                RequestOp::Test => handle.test_in(template, timeout, scope).await,
            }
        };
        tokio::pin!(req);
        // Polled first, the request enters the driver's queue before the stats query, so the
        // stats answer comes after the request was handled (and sent).
        let answer = tokio::select! {
            biased;
            a = &mut req => Some(a),
            n = requests_sent(&handle) => {
                let how = match args.wait {
                    Some(w) => format!("waiting up to {} s (wait {w} s on the air)", timeout.as_secs_f64()),
                    None => format!("waiting up to {} s", timeout.as_secs_f64()),
                };
                eprintln!("{name}: {} {how}", if n > 0 { "sent," } else { "looking locally," });
                None
            }
        };
        let answer = match answer {
            Some(a) => a,
            None => req.await,
        };
        let elapsed = started.elapsed();
        space.close().await;
        match answer.map_err(|e| e.to_string())? {
            Some(a) => {
                match a.received {
                    Some(r) => eprintln!(
                        "{name}: answered by {} after {:.3} s",
                        r.from,
                        elapsed.as_secs_f64()
                    ),
                    None => eprintln!(
                        "{name}: answered by the local space after {:.3} s",
                        elapsed.as_secs_f64()
                    ),
                }
                Ok(a.tuple.to_string())
            }
            None => Err(format!(
                "{name}: no match within {} s",
                timeout.as_secs_f64()
            )),
        }
    })
}

/// `beets watch TEMPLATE`: prints each delivery as `KIND TUPLE from ADDR rssi N|none` until
/// Ctrl-C, `--count` or `--timeout`.
pub(crate) fn watch(args: WatchArgs) -> Result<String, String> {
    let template = parse_template(&args.template).map_err(|e| e.to_string())?;
    runtime()?.block_on(async {
        let space = join(&args.udp, false)?;
        let mut rx = space
            .handle()
            .subscribe_to(template, args.kinds, 1024)
            .await
            .map_err(|e| e.to_string())?;
        eprintln!("watch: listening on port {}", args.udp.port);
        let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
        let ends = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(ends);
        let mut printed = 0u64;
        while args.count.is_none_or(|n| printed < n) {
            tokio::select! {
                d = rx.recv() => {
                    let Some(d) = d else { break };
                    let from = d.from.map_or_else(|| "local".to_owned(), |f| f.to_string());
                    let rssi = d.rssi.map_or_else(|| "none".to_owned(), |r| format!("{r} dBm"));
                    println!("{} {} from {from} rssi {rssi}", kind_name(d.kind), d.tuple);
                    printed += 1;
                }
                _ = &mut ends => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        drop(rx);
        space.close().await;
        if printed == 0 {
            return Err("watch: nothing delivered".into());
        }
        Ok(String::new())
    })
}
