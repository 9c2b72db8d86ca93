//! [`UdpSpaceBuilder`]: a UDP space from a node name and what differs from the defaults.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use beets_core::node::Hooks;
use beets_core::udp::DEFAULT_PORT;
use beets_core::{FpeKey, Node, NodeConfig, Time, Transport};

use crate::config::{LIMITED_BROADCAST, LOOPBACK_BROADCAST};
use crate::{UdpConfig, UdpError, UdpSpace, os_seed};

/// A change to the engine settings, applied when the node is built.
type NodeConfigChange = Box<dyn FnOnce(&mut NodeConfig)>;

/// Builds a [`UdpSpace`]; from [`UdpSpace::builder`]. Defaults: port 49737 on every IPv4
/// interface, broadcast to 255.255.255.255 (spec §7), no key, no hooks, a seed from the OS.
///
/// The port applies to the bind address, the broadcast destination and the multicast group
/// alike, whatever order the calls come in.
///
/// ```
/// use beets_udp::UdpSpace;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let space = UdpSpace::builder("display")
///     .loopback(40210) // stays on this host: 127.255.255.255:40210
///     .key("bee")      // FPE-keyed space (spec §5)
///     .spawn()?;
/// assert_eq!(space.local_addr().port(), 40210);
/// space.close().await;
/// # Ok(()) }
/// ```
pub struct UdpSpaceBuilder {
    name: String,
    port: u16,
    bind: IpAddr,
    broadcast: Option<IpAddr>,
    multicast: Option<Ipv4Addr>,
    peers: Vec<SocketAddr>,
    repeat: u8,
    recv_buffer_size: Option<usize>,
    key: Option<FpeKey>,
    hooks: Option<Box<dyn Hooks>>,
    seed: Option<u64>,
    tune: Vec<NodeConfigChange>,
}

impl fmt::Debug for UdpSpaceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSpaceBuilder")
            .field("name", &self.name)
            .field("port", &self.port)
            .field("broadcast", &self.broadcast)
            .field("peers", &self.peers)
            .field("keyed", &self.key.is_some())
            .field("hooks", &self.hooks.is_some())
            .finish_non_exhaustive()
    }
}

impl UdpSpaceBuilder {
    pub(crate) fn new(name: &str) -> UdpSpaceBuilder {
        UdpSpaceBuilder {
            name: name.to_owned(),
            port: DEFAULT_PORT,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            broadcast: Some(IpAddr::V4(LIMITED_BROADCAST)),
            multicast: None,
            peers: Vec::new(),
            repeat: 0,
            recv_buffer_size: None,
            key: None,
            hooks: None,
            seed: None,
            tune: Vec::new(),
        }
    }

    /// The UDP port to bind and to send to (default 49737, spec §7).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Every node of this host on `port`, nothing off the host: broadcasts to the loopback
    /// broadcast 127.255.255.255 (Linux). For demos and tests; see [`UdpConfig::loopback`].
    pub fn loopback(mut self, port: u16) -> Self {
        self.port = port;
        self.broadcast = Some(IpAddr::V4(LOOPBACK_BROADCAST));
        self
    }

    /// The broadcast address, e.g. your LAN's `192.168.1.255` (IPv4 only).
    pub fn broadcast(mut self, address: impl Into<IpAddr>) -> Self {
        self.broadcast = Some(address.into());
        self
    }

    /// Sends no broadcast (use [`multicast`](Self::multicast) or [`peer`](Self::peer)).
    pub fn no_broadcast(mut self) -> Self {
        self.broadcast = None;
        self
    }

    /// Also sends to and joins an IPv4 multicast group (e.g.
    /// [`DEFAULT_MULTICAST_GROUP`](crate::DEFAULT_MULTICAST_GROUP)), with TTL 1.
    pub fn multicast(mut self, group: Ipv4Addr) -> Self {
        self.multicast = Some(group);
        self
    }

    /// Also sends every datagram to this unicast peer (repeatable).
    pub fn peer(mut self, peer: SocketAddr) -> Self {
        self.peers.push(peer);
        self
    }

    /// Binds this local address instead of every IPv4 interface (a socket bound to a unicast
    /// address receives no broadcasts on Linux).
    pub fn bind(mut self, address: impl Into<IpAddr>) -> Self {
        self.bind = address.into();
        self
    }

    /// Sends each datagram `n` extra times (receivers' dedup drops the copies, spec §8).
    pub fn repeat(mut self, n: u8) -> Self {
        self.repeat = n;
        self
    }

    /// The socket receive buffer (`SO_RCVBUF`) in bytes.
    pub fn recv_buffer_size(mut self, bytes: usize) -> Self {
        self.recv_buffer_size = Some(bytes);
        self
    }

    /// Keys the space with this password (FPE, spec §5: obfuscation against casual listeners,
    /// not authentication). Every node of the space needs the same one.
    pub fn key(mut self, password: &str) -> Self {
        self.key = Some(FpeKey::from_password(password));
        self
    }

    /// Installs hooks (e.g. `AgentRuntime::hooks("udp-ts")` of `beets-agents`): they decide on
    /// incoming OUTs, requests and notifications without blocking the node.
    pub fn hooks(mut self, hooks: impl Hooks + 'static) -> Self {
        self.hooks = Some(Box::new(hooks));
        self
    }

    /// A fixed seed for the node id, the first sequence number and the reply back-off, for
    /// reproducible tests. Production nodes keep the default, a seed from the OS (spec §7: they
    /// must differ at each start).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Changes engine settings beyond the builder's (reply back-off, dedup window, capacity,
    /// announcements…) on the [`NodeConfig`] before the node is built.
    pub fn node_config(mut self, change: impl FnOnce(&mut NodeConfig) + 'static) -> Self {
        self.tune.push(Box::new(change));
        self
    }

    /// The socket configuration these settings make.
    pub fn udp_config(&self) -> UdpConfig {
        UdpConfig {
            bind: SocketAddr::new(self.bind, self.port),
            broadcast: self.broadcast.map(|ip| SocketAddr::new(ip, self.port)),
            multicast: self.multicast.map(|g| SocketAddrV4::new(g, self.port)),
            peers: self.peers.clone(),
            repeat: self.repeat,
            recv_buffer_size: self.recv_buffer_size,
            ..UdpConfig::default()
        }
    }

    /// Binds the socket and starts the node on the current tokio runtime.
    ///
    /// # Errors
    /// [`UdpError::Node`] for a name outside 1..=16 bytes; [`UdpError::NoRandomness`] when no
    /// seed was given and the OS has none; otherwise as [`UdpSpace::spawn`].
    pub fn spawn(self) -> Result<UdpSpace, UdpError> {
        let udp = self.udp_config();
        let mut config = NodeConfig::new(Transport::Udp, &self.name)?;
        config.key = self.key;
        for change in self.tune {
            change(&mut config);
        }
        let seed = match self.seed {
            Some(seed) => seed,
            None => os_seed()?,
        };
        let mut node = Node::new(config, seed, Time::ZERO);
        if let Some(hooks) = self.hooks {
            node.set_hooks(hooks);
        }
        UdpSpace::spawn_node(udp, node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_applies_to_every_address_whatever_the_order() {
        let b = UdpSpace::builder("n")
            .broadcast(Ipv4Addr::new(192, 168, 1, 255))
            .multicast(crate::DEFAULT_MULTICAST_GROUP)
            .port(40000);
        let udp = b.udp_config();
        assert_eq!(udp.bind, "0.0.0.0:40000".parse().unwrap());
        assert_eq!(udp.broadcast, Some("192.168.1.255:40000".parse().unwrap()));
        assert_eq!(udp.multicast, Some("239.255.75.75:40000".parse().unwrap()));
        let lo = UdpSpace::builder("n").loopback(40001).udp_config();
        assert_eq!(lo, UdpConfig::loopback(40001));
    }

    #[tokio::test]
    async fn bad_settings_are_typed_errors() {
        let long = UdpSpace::builder("seventeen-bytes!!").loopback(0).spawn();
        assert!(matches!(long, Err(UdpError::Node(_))), "{long:?}");
        let v6 = UdpSpace::builder("n")
            .bind(std::net::Ipv6Addr::LOCALHOST)
            .loopback(0)
            .spawn();
        assert!(
            matches!(
                v6,
                Err(UdpError::Config(
                    crate::ConfigError::BroadcastNeedsIpv4 { .. }
                ))
            ),
            "{v6:?}"
        );
    }

    #[test]
    fn outside_a_runtime_is_an_error_not_a_panic() {
        let r = UdpSpace::builder("n").loopback(0).spawn();
        assert!(matches!(r, Err(UdpError::NoRuntime)), "{r:?}");
    }
}
