//! Why a UDP space did not start.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};

use beets_core::{NodeError, Transport};

/// A [`UdpConfig`](crate::UdpConfig) that cannot work, found before anything is bound.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Broadcast is IPv4 only: the broadcast address and the bind address must both be IPv4.
    #[error(
        "broadcast {broadcast} needs an IPv4 address and an IPv4 bind address (bind is {bind})"
    )]
    BroadcastNeedsIpv4 {
        /// The broadcast destination.
        broadcast: SocketAddr,
        /// The bind address.
        bind: SocketAddr,
    },
    /// A multicast group needs an IPv4 bind address.
    #[error("multicast group {group} needs an IPv4 bind address (bind is {bind})")]
    MulticastNeedsIpv4 {
        /// The group.
        group: SocketAddrV4,
        /// The bind address.
        bind: SocketAddr,
    },
    /// The multicast group is not in 224.0.0.0/4.
    #[error("multicast group {} is not an IPv4 multicast address (224.0.0.0/4)", group.ip())]
    NotMulticast {
        /// The group given.
        group: SocketAddrV4,
    },
    /// A unicast peer of the other address family than the bind address.
    #[error("peer {peer} is of another address family than the bind address {bind}")]
    PeerFamily {
        /// The peer.
        peer: SocketAddr,
        /// The bind address.
        bind: SocketAddr,
    },
}

/// Why [`UdpSpace`](crate::UdpSpace) did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UdpError {
    /// Called outside a tokio runtime (the space runs tasks on the current one).
    #[error("a UDP space must be started inside a tokio runtime")]
    NoRuntime,
    /// The node was built for another transport.
    #[error("a UDP space needs a node built with Transport::Udp, this one is for {0:?}")]
    WrongTransport(Transport),
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The node configuration was refused (e.g. a name outside 1..=16 bytes).
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Setting up the socket failed; the message names the step (creating, an option, binding,
    /// joining the group). A busy port without address reuse, a missing interface, or no
    /// permission are the usual causes.
    #[error("UDP socket: {0}")]
    Socket(#[source] io::Error),
    /// The operating system gave no randomness for the node's seed.
    #[error("no OS randomness for the node seed: {0}")]
    NoRandomness(String),
}
