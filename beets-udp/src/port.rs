//! Choosing a free port for a group of nodes on one host, without a race.
//!
//! The usual trick — bind port 0, read the port, close the socket, bind again — leaves a gap in
//! which another program (or another test binary) can be handed the same port by the kernel;
//! with `SO_REUSEPORT` the two groups then bind together and hear each other's broadcasts. A
//! [`PortReservation`] closes that gap: it keeps a socket on `127.0.0.2:port` for as long as it
//! lives, which the kernel's ephemeral-port choice never hands out again, while BeeTS nodes still
//! bind `0.0.0.0:port` beside it (both sockets set `SO_REUSEADDR`). Bound to 127.0.0.2, it receives
//! none of the nodes' datagrams: not the loopback broadcast, not unicast to 127.0.0.1.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// A UDP port that the kernel hands to no other socket while this value lives. Nodes of one
/// group use [`port`](Self::port) in their [`UdpConfig`](crate::UdpConfig) (e.g.
/// [`UdpConfig::loopback`](crate::UdpConfig::loopback)); drop the reservation when they are
/// done (or keep it for the whole process).
///
/// Linux only guarantees this behaviour (the loopback network is 127.0.0.0/8 there); on other
/// systems the reservation still excludes the port from ephemeral binds but 127.0.0.2 may not
/// exist, in which case [`reserve_port`] fails.
#[derive(Debug)]
pub struct PortReservation {
    socket: Socket,
    port: u16,
}

impl PortReservation {
    /// The reserved port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket holding the port (for diagnostics).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))
    }
}

/// Reserves a free UDP port on this host, never the BeeTS default 49737.
///
/// # Errors
/// The socket calls' errors (no 127.0.0.2, no free ephemeral port).
pub fn reserve_port() -> io::Result<PortReservation> {
    loop {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        // Bound without SO_REUSEADDR first, so the kernel picks a port that no socket uses at
        // all; only then may BeeTS sockets (which set SO_REUSEADDR) bind beside it.
        socket.bind(&SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), 0)).into())?;
        socket.set_reuse_address(true)?;
        let port = socket
            .local_addr()?
            .as_socket()
            .map(|a| a.port())
            .ok_or_else(|| io::Error::other("not an IP socket"))?;
        if port != beets_core::udp::DEFAULT_PORT {
            return Ok(PortReservation { socket, port });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[tokio::test]
    async fn a_reserved_port_is_not_handed_out_but_nodes_bind_beside_it() {
        let r = reserve_port().unwrap();
        let port = r.port();
        // Many ephemeral binds: none gets the reserved port.
        let others: Vec<UdpSocket> = (0..2000)
            .filter_map(|_| UdpSocket::bind("0.0.0.0:0").ok())
            .collect();
        assert!(
            others
                .iter()
                .all(|s| s.local_addr().unwrap().port() != port)
        );
        // A BeeTS socket (SO_REUSEADDR + SO_REUSEPORT on 0.0.0.0) binds the port beside it.
        let cfg = crate::UdpConfig::loopback(port);
        let node = crate::socket::open(&cfg).expect("node binds the reserved port");
        drop(node);
        assert_eq!(r.local_addr().unwrap().port(), port);
    }
}
