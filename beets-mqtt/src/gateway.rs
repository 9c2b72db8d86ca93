//! [`Gateway`]: joins a UDP space and an MQTT space into one, forwarding datagrams unchanged.
//!
//! ```text
//!   LAN (UDP broadcast)                         broker topic <prefix>/<space>
//!  ─────────────┐   ┌──────────── Gateway ────────────┐   ┌─────────────
//!   datagrams ──┼──▶│ envelope check → dedup (id,seq) │──▶│ publish raw
//!               │◀──│ send_to each UDP destination    │◀──┼── datagrams
//!  ─────────────┘   └─────────────────────────────────┘   └─────────────
//! ```
//!
//! The gateway is not a node: it has no node id, no space and never decodes a message (only the
//! spec §7 envelope is checked), so plain, FPE and sealed messages pass unchanged and keep the
//! original node id and seq. Each key (node id, seq) is forwarded once, in the direction it was
//! first heard, for the dedup window (10 s): its own broadcast looping back, its own publish
//! echoed by the broker and the same datagram coming back through another gateway are all
//! dropped as repeats, so two LANs with a gateway each form one space with no loop. Routers (JS
//! agents on a node) remain the way to forward selectively.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use beets_core::dedup::{DEFAULT_CAPACITY, DEFAULT_WINDOW, DedupCache};
use beets_core::udp::{self, MAX_DATAGRAM_LEN};
use beets_core::{FpeKey, Time};
use beets_udp::UdpConfig;
use bytes::Bytes;
use socket2::{Domain, Protocol as SockProtocol, SockAddr, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, trace, warn};

use crate::config::{MqttConfig, Protocol};
use crate::error::MqttError;
use crate::link::{Link, MqttStats, Route, stopped};
use crate::space::out_lifetime;

/// What a [`Gateway`] joins, and how it remembers keys.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// The UDP side: bind address and port (share the port of the LAN's nodes; `SO_REUSEPORT`
    /// lets a node and a gateway bind it on one host) and the destinations datagrams from the
    /// broker are sent to.
    pub udp: UdpConfig,
    /// The MQTT side.
    pub mqtt: MqttConfig,
    /// The space key, only to read FPE OUTs' lifetimes for the MQTT 5 message expiry (the
    /// gateway forwards without it, unchanged). Default `None`.
    pub key: Option<FpeKey>,
    /// How long a forwarded key is remembered (default 10 s, spec §8's W).
    pub dedup_window: Duration,
    /// Most keys remembered (default 4096, spec §8); the oldest are forgotten first.
    pub dedup_capacity: usize,
}

impl GatewayConfig {
    /// A gateway between `udp` and `mqtt` with the spec's dedup defaults.
    pub fn new(udp: UdpConfig, mqtt: MqttConfig) -> GatewayConfig {
        GatewayConfig {
            udp,
            mqtt,
            key: None,
            dedup_window: DEFAULT_WINDOW,
            dedup_capacity: DEFAULT_CAPACITY,
        }
    }
}

/// Counters of a [`Gateway`], since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GatewayStats {
    /// Datagrams received on the UDP socket.
    pub udp_in: u64,
    /// Datagrams received from the broker.
    pub mqtt_in: u64,
    /// Datagrams published to the broker (heard on UDP first).
    pub to_mqtt: u64,
    /// Datagrams sent on UDP (heard from the broker first); one per datagram, whatever the
    /// number of destinations.
    pub to_udp: u64,
    /// Datagrams not forwarded because their key was already forwarded (loops, echoes, repeats).
    pub duplicates: u64,
    /// Datagrams dropped for a bad envelope (spec §7: length, magic, version, node id 0).
    pub malformed: u64,
    /// UDP sends that failed (the first error of each datagram is logged).
    pub udp_send_errors: u64,
    /// Datagrams not published: the broker was unreachable or the queue was full.
    pub mqtt_dropped: u64,
    /// The MQTT connection's counters.
    pub mqtt: MqttStats,
}

#[derive(Debug, Default)]
struct Counters {
    udp_in: AtomicU64,
    mqtt_in: AtomicU64,
    to_mqtt: AtomicU64,
    to_udp: AtomicU64,
    duplicates: AtomicU64,
    malformed: AtomicU64,
    udp_send_errors: AtomicU64,
    mqtt_dropped: AtomicU64,
}

fn add(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A running gateway: a UDP socket, an MQTT connection and the task forwarding between them.
#[derive(Debug)]
pub struct Gateway {
    link: Arc<Link>,
    local_addr: SocketAddr,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Gateway {
    /// Binds the UDP socket, connects to the broker and starts forwarding, on the current tokio
    /// runtime. Returns at once; see [`Gateway::wait_connected`].
    ///
    /// # Errors
    /// [`MqttError::Io`] when the socket cannot be set up (naming the step) or outside a tokio
    /// runtime; [`MqttError::Config`] for a bad MQTT configuration, TLS files or UDP settings.
    pub fn spawn(config: GatewayConfig) -> Result<Gateway, MqttError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other("Gateway::spawn needs a tokio runtime").into());
        }
        config
            .udp
            .validate()
            .map_err(|e| crate::ConfigError::Invalid(format!("UDP side: {e}")))?;
        let socket = open(&config.udp)?;
        let local_addr = socket.local_addr()?;
        let (tx, from_mqtt) = mpsc::channel(1024);
        let topic = config.mqtt.space_topic();
        let routes = vec![Route {
            topic: topic.clone(),
            tx,
        }];
        let link = Arc::new(Link::start(&config.mqtt, "gateway", routes)?);
        let counters = Arc::new(Counters::default());
        let (stop, stop_rx) = watch::channel(false);
        let span = info_span!("beets_gateway", udp = %local_addr, topic = %topic);
        let fwd = Forwarder {
            socket,
            destinations: config.udp.destinations().collect(),
            link: Arc::clone(&link),
            topic,
            expiry: config.mqtt.protocol == Protocol::V5,
            key: config.key,
            dedup: DedupCache::new(config.dedup_window, config.dedup_capacity),
            epoch: Instant::now(),
            counters: Arc::clone(&counters),
        };
        span.in_scope(|| debug!(destinations = ?fwd.destinations, "gateway starting"));
        let task = tokio::spawn(fwd.run(from_mqtt, stop_rx).instrument(span));
        Ok(Gateway {
            link,
            local_addr,
            counters,
            stop,
            task,
        })
    }

    /// The UDP socket's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until the MQTT side is up and subscribed, at most `timeout`.
    ///
    /// # Errors
    /// [`MqttError::Refused`], [`MqttError::NotConnected`] after `timeout`, [`MqttError::Closed`].
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), MqttError> {
        self.link.shared.wait_connected(timeout).await
    }

    /// The counters now.
    pub fn stats(&self) -> GatewayStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        GatewayStats {
            udp_in: l(&c.udp_in),
            mqtt_in: l(&c.mqtt_in),
            to_mqtt: l(&c.to_mqtt),
            to_udp: l(&c.to_udp),
            duplicates: l(&c.duplicates),
            malformed: l(&c.malformed),
            udp_send_errors: l(&c.udp_send_errors),
            mqtt_dropped: l(&c.mqtt_dropped),
            mqtt: self.link.stats(),
        }
    }

    /// Stops forwarding, closes the socket and disconnects; returns the final counters.
    pub async fn close(mut self) -> GatewayStats {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
        self.link.close().await;
        self.stats()
    }
}

struct Forwarder {
    socket: UdpSocket,
    destinations: Vec<SocketAddr>,
    link: Arc<Link>,
    topic: String,
    expiry: bool,
    key: Option<FpeKey>,
    dedup: DedupCache<(u32, u32)>,
    epoch: Instant,
    counters: Arc<Counters>,
}

impl Forwarder {
    async fn run(mut self, mut from_mqtt: mpsc::Receiver<Bytes>, mut stop: watch::Receiver<bool>) {
        // One byte more than the largest datagram: an oversize one shows and is dropped.
        let mut buf = vec![0u8; MAX_DATAGRAM_LEN + 1];
        loop {
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((len, from)) => {
                        add(&self.counters.udp_in);
                        self.heard_on_udp(&buf[..len], from);
                    }
                    Err(e) => {
                        warn!(error = %e, "UDP receive failed; retrying");
                        // Keeps a persistent error from spinning the task.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                d = from_mqtt.recv() => match d {
                    Some(d) => {
                        add(&self.counters.mqtt_in);
                        self.heard_on_mqtt(&d).await;
                    }
                    None => break,
                },
                () = stopped(&mut stop) => break,
            }
        }
        debug!("gateway stopped");
    }

    /// `true` when `datagram`'s key is new: forward it.
    fn admit(&mut self, datagram: &[u8], side: &str) -> bool {
        let header = match udp::parse_header(datagram) {
            Ok((h, _)) => h,
            Err(e) => {
                add(&self.counters.malformed);
                trace!(side, reason = %e, "malformed datagram dropped");
                return false;
            }
        };
        let now =
            Time::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX));
        if self.dedup.check(now, (header.node_id.get(), header.seq)) {
            true
        } else {
            add(&self.counters.duplicates);
            false
        }
    }

    fn heard_on_udp(&mut self, datagram: &[u8], from: SocketAddr) {
        if !self.admit(datagram, "udp") {
            return;
        }
        let expiry = if self.expiry {
            out_lifetime(datagram, self.key.as_ref())
        } else {
            None
        };
        match self
            .link
            .try_publish(&self.topic, datagram.to_vec(), expiry)
        {
            Ok(()) => {
                add(&self.counters.to_mqtt);
                trace!(%from, len = datagram.len(), "UDP → MQTT");
            }
            Err(e) => {
                add(&self.counters.mqtt_dropped);
                debug!(error = %e, "UDP datagram not forwarded to the broker");
            }
        }
    }

    async fn heard_on_mqtt(&mut self, datagram: &[u8]) {
        if !self.admit(datagram, "mqtt") {
            return;
        }
        let mut failed = false;
        for &dest in &self.destinations {
            if let Err(e) = self.socket.send_to(datagram, dest).await {
                add(&self.counters.udp_send_errors);
                if !failed {
                    warn!(%dest, error = %e, "UDP send failed");
                }
                failed = true;
            }
        }
        add(&self.counters.to_udp);
        trace!(len = datagram.len(), "MQTT → UDP");
    }
}

/// Opens the gateway's UDP socket as `beets-udp` opens a node's: broadcast allowed, address and
/// port reusable (so it shares the port with the host's nodes), the multicast group joined.
fn open(config: &UdpConfig) -> io::Result<UdpSocket> {
    let context = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let socket = Socket::new(
        Domain::for_address(config.bind),
        Type::DGRAM,
        Some(SockProtocol::UDP),
    )
    .map_err(|e| context("creating the UDP socket", e))?;
    if config.bind.is_ipv4() {
        socket
            .set_broadcast(true)
            .map_err(|e| context("SO_BROADCAST", e))?;
    }
    socket
        .set_reuse_address(true)
        .map_err(|e| context("SO_REUSEADDR", e))?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    socket
        .set_reuse_port(true)
        .map_err(|e| context("SO_REUSEPORT", e))?;
    if let Some(size) = config.recv_buffer_size {
        socket
            .set_recv_buffer_size(size)
            .map_err(|e| context("SO_RCVBUF", e))?;
    }
    socket
        .set_nonblocking(true)
        .map_err(|e| context("non-blocking mode", e))?;
    socket
        .bind(&SockAddr::from(config.bind))
        .map_err(|e| context(&format!("binding {}", config.bind), e))?;
    if let Some(group) = config.multicast {
        let iface = match (config.multicast_interface, config.bind.ip()) {
            (i, _) if !i.is_unspecified() => i,
            (_, std::net::IpAddr::V4(b)) if !b.is_unspecified() => b,
            _ => std::net::Ipv4Addr::UNSPECIFIED,
        };
        socket
            .join_multicast_v4(group.ip(), &iface)
            .map_err(|e| context(&format!("joining {}", group.ip()), e))?;
        socket
            .set_multicast_ttl_v4(1)
            .map_err(|e| context("IP_MULTICAST_TTL", e))?;
    }
    UdpSocket::from_std(socket.into()).map_err(|e| context("registering with tokio", e))
}
