//! [`UdpConfig`]: where a UDP space listens and where it sends.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use beets_core::udp::DEFAULT_PORT;

use crate::ConfigError;

/// The IPv4 limited broadcast address, 255.255.255.255: the default destination (spec wire-v1 §7).
pub const LIMITED_BROADCAST: Ipv4Addr = Ipv4Addr::BROADCAST;

/// The loopback broadcast address, 127.255.255.255: reaches every socket on this host bound to
/// the port (on Linux; see [`UdpConfig::loopback`]).
pub const LOOPBACK_BROADCAST: Ipv4Addr = Ipv4Addr::new(127, 255, 255, 255);

/// The suggested IPv4 multicast group for BeeTS, 239.255.75.75 (organisation-local scope,
/// spec wire-v1 §7). Not used unless [`UdpConfig::multicast`] names it.
pub const DEFAULT_MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 75, 75);

/// Default spacing of repeated copies, 5 ms.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_millis(5);

/// Where a UDP space listens and where it sends. A plain data struct: build it with
/// `..Default::default()` or [`UdpConfig::loopback`] and change fields.
///
/// Every datagram the engine emits goes to **each** destination: the broadcast address (if any),
/// the multicast group (if any) and every unicast peer, and then `repeat` more times.
///
/// ```
/// use beets_udp::UdpConfig;
/// use std::net::SocketAddr;
/// // A LAN where broadcast does not reach the Wi-Fi side: a subnet broadcast plus two peers.
/// let udp = UdpConfig {
///     broadcast: Some("192.168.1.255:49737".parse().unwrap()),
///     peers: vec!["10.0.0.7:49737".parse().unwrap(), "10.0.0.8:49737".parse().unwrap()],
///     repeat: 1,
///     ..Default::default()
/// };
/// assert_eq!(udp.destinations().count(), 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpConfig {
    /// Local address and port the socket binds to. Default `0.0.0.0:49737` (all IPv4 interfaces,
    /// the BeeTS port). A socket bound to a specific unicast address does **not** receive
    /// broadcasts on Linux, so keep the unspecified address when you rely on broadcast. Port 0
    /// picks a free port (see [`UdpSpace::local_addr`](crate::UdpSpace::local_addr)).
    pub bind: SocketAddr,
    /// Broadcast destination (address and port). Default `255.255.255.255:49737`, the IPv4
    /// limited broadcast, which reaches the LAN segments of the host's interfaces; a subnet
    /// broadcast such as `192.168.1.255:49737` picks one. `None` sends no broadcast (use
    /// `multicast` or `peers`). IPv4 only.
    pub broadcast: Option<SocketAddr>,
    /// IPv4 multicast group and port to send to and to join on the bound interface (see
    /// `multicast_interface`), e.g. `239.255.75.75:49737` ([`DEFAULT_MULTICAST_GROUP`]). Default
    /// `None`. Datagrams leave with TTL 1 (they stay on the local network) and loop back to
    /// sockets on this host, where the engine drops the node's own.
    pub multicast: Option<SocketAddrV4>,
    /// Interface (by its IPv4 address) that joins the multicast group and sends to it. Default
    /// `0.0.0.0`: the bound address when `bind` names one, else the kernel's choice by route.
    pub multicast_interface: Ipv4Addr,
    /// Unicast peers that get every datagram too. Default empty. The paper found broadcast from
    /// a wired LAN to a WLAN losing up to 50 % of datagrams; servers fell back to N unicasts.
    pub peers: Vec<SocketAddr>,
    /// Extra copies of each datagram: 0 (default) sends each once, `n` sends it `n + 1` times.
    /// Copies keep the datagram's sequence number, so receivers' dedup (spec §8) applies each
    /// message once. Worth it on lossy links; multiplies the traffic.
    pub repeat: u8,
    /// Time between copies of one datagram. Default 5 ms (tokio's timer resolution is 1 ms).
    /// Zero sends the copies back to back.
    pub repeat_interval: Duration,
    /// Socket receive buffer (`SO_RCVBUF`) in bytes; `None` (default) keeps the OS default. The
    /// kernel may cap it (Linux: `net.core.rmem_max`) and counts its own overhead in it.
    pub recv_buffer_size: Option<usize>,
}

impl Default for UdpConfig {
    fn default() -> UdpConfig {
        UdpConfig {
            bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_PORT)),
            broadcast: Some(SocketAddr::from((LIMITED_BROADCAST, DEFAULT_PORT))),
            multicast: None,
            multicast_interface: Ipv4Addr::UNSPECIFIED,
            peers: Vec::new(),
            repeat: 0,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
            recv_buffer_size: None,
        }
    }
}

impl UdpConfig {
    /// Every node of this host on one port, and nothing off the host: binds `0.0.0.0:port` and
    /// broadcasts to the loopback broadcast `127.255.255.255:port`. Several spaces built so on
    /// one machine all hear each other (Linux; macOS has no loopback broadcast, use `peers` of
    /// `127.0.0.1` on distinct ports there). For demos and tests.
    ///
    /// ```
    /// use beets_udp::UdpConfig;
    /// let udp = UdpConfig::loopback(40123);
    /// assert!(udp.destinations().all(|d| d.ip().is_loopback()));
    /// ```
    pub fn loopback(port: u16) -> UdpConfig {
        UdpConfig {
            bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
            broadcast: Some(SocketAddr::from((LOOPBACK_BROADCAST, port))),
            ..UdpConfig::default()
        }
    }

    /// Every address a datagram goes to: broadcast, multicast group, then peers.
    pub fn destinations(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.broadcast
            .into_iter()
            .chain(self.multicast.map(SocketAddr::V4))
            .chain(self.peers.iter().copied())
    }

    /// Checks what can be checked before binding: address families and the multicast group.
    ///
    /// # Errors
    /// The [`ConfigError`] naming the field: a broadcast or multicast setting on an IPv6
    /// socket, a broadcast address that is IPv6, a multicast group outside 224.0.0.0/4, a peer
    /// of the other address family.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let v4 = self.bind.is_ipv4();
        if let Some(b) = self.broadcast
            && !(v4 && b.is_ipv4())
        {
            return Err(ConfigError::BroadcastNeedsIpv4 {
                broadcast: b,
                bind: self.bind,
            });
        }
        if let Some(m) = self.multicast {
            if !v4 {
                return Err(ConfigError::MulticastNeedsIpv4 {
                    group: m,
                    bind: self.bind,
                });
            }
            if !m.ip().is_multicast() {
                return Err(ConfigError::NotMulticast { group: m });
            }
        }
        if let Some(p) = self.peers.iter().find(|p| p.is_ipv4() != v4) {
            return Err(ConfigError::PeerFamily {
                peer: *p,
                bind: self.bind,
            });
        }
        Ok(())
    }

    /// The interface that joins and sends to the multicast group.
    pub(crate) fn multicast_if(&self) -> Ipv4Addr {
        match (self.multicast_interface, self.bind.ip()) {
            (i, _) if !i.is_unspecified() => i,
            (_, IpAddr::V4(b)) if !b.is_unspecified() && !b.is_broadcast() => b,
            _ => Ipv4Addr::UNSPECIFIED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec() {
        let c = UdpConfig::default();
        assert_eq!(c.bind, "0.0.0.0:49737".parse().unwrap());
        assert_eq!(c.broadcast, Some("255.255.255.255:49737".parse().unwrap()));
        assert_eq!(c.repeat, 0);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn loopback_config_never_targets_the_limited_broadcast() {
        // The way tests and examples build their configs: no datagram may leave the host.
        for port in [1024, 40000, 65535] {
            let c = UdpConfig::loopback(port);
            assert!(
                c.destinations()
                    .all(|d| d.ip() != IpAddr::V4(LIMITED_BROADCAST))
            );
            assert!(c.destinations().all(|d| d.ip().is_loopback()));
            assert_eq!(c.destinations().count(), 1);
        }
    }

    #[test]
    fn validate_names_the_bad_field() {
        let c = UdpConfig {
            bind: "[::]:0".parse().unwrap(),
            ..UdpConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("broadcast"));
        let c = UdpConfig {
            multicast: Some("10.0.0.1:5".parse().unwrap()),
            ..UdpConfig::loopback(5)
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("not an IPv4 multicast")
        );
        let c = UdpConfig {
            peers: vec!["[::1]:5".parse().unwrap()],
            ..UdpConfig::loopback(5)
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("peer [::1]:5")
        );
    }

    #[test]
    fn multicast_interface_defaults_to_the_bound_address() {
        let mut c = UdpConfig::loopback(5);
        assert_eq!(c.multicast_if(), Ipv4Addr::UNSPECIFIED);
        c.bind = "10.1.2.3:5".parse().unwrap();
        assert_eq!(c.multicast_if(), Ipv4Addr::new(10, 1, 2, 3));
        c.multicast_interface = Ipv4Addr::new(10, 9, 9, 9);
        assert_eq!(c.multicast_if(), Ipv4Addr::new(10, 9, 9, 9));
    }
}
