//! Socket set-up with `socket2` (see the crate docs, "Socket options").

use std::io;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::UdpSocket;

use crate::UdpConfig;
use crate::stats::Counters;

/// Remembers the socket's inode, whose row in `/proc/self/net/udp` carries the kernel's count of
/// datagrams dropped for it (a full receive buffer). Linux only; elsewhere
/// [`UdpStats::kernel_drops`](crate::UdpStats::kernel_drops) stays `None`.
///
/// Why not `SO_RXQ_OVFL`: it reports the same counter, but in a control message of every
/// `recvmsg`, which `std`/tokio cannot read without `unsafe` (forbidden here) or a new
/// dependency, and which would cost a larger syscall on every datagram of the hot path. The
/// `/proc` row costs one small file read per stats snapshot and nothing per datagram.
pub(crate) fn watch_drops(socket: &UdpSocket, counters: &Counters) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let fd = socket.as_raw_fd();
        if let Ok(meta) = std::fs::metadata(format!("/proc/self/fd/{fd}")) {
            let v6 = socket.local_addr().is_ok_and(|a| a.is_ipv6());
            let _ = counters.socket.set((meta.ino(), v6));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (socket, counters);
}

/// Opens, configures and binds the socket of one space, and registers it with tokio.
///
/// Order matters: the reuse options must be set before `bind`, or the second node on the port
/// fails with "address in use".
pub(crate) fn open(config: &UdpConfig) -> io::Result<UdpSocket> {
    let context = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let socket = Socket::new(
        Domain::for_address(config.bind),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .map_err(|e| context("creating the UDP socket", e))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| context("setting SO_REUSEADDR", e))?;
    #[cfg(all(
        unix,
        not(any(
            target_os = "solaris",
            target_os = "illumos",
            target_os = "cygwin",
            target_os = "nuttx",
            target_os = "wasi"
        ))
    ))]
    socket
        .set_reuse_port(true)
        .map_err(|e| context("setting SO_REUSEPORT", e))?;
    if config.bind.is_ipv4() {
        socket
            .set_broadcast(true)
            .map_err(|e| context("setting SO_BROADCAST", e))?;
    }
    if let Some(size) = config.recv_buffer_size {
        socket
            .set_recv_buffer_size(size)
            .map_err(|e| context("setting SO_RCVBUF", e))?;
    }
    socket
        .set_nonblocking(true)
        .map_err(|e| context("setting O_NONBLOCK", e))?;
    socket
        .bind(&SockAddr::from(config.bind))
        .map_err(|e| context(&format!("binding {}", config.bind), e))?;
    if let Some(group) = config.multicast {
        let interface = config.multicast_if();
        socket
            .join_multicast_v4(group.ip(), &interface)
            .map_err(|e| {
                context(
                    &format!("joining multicast group {} on {interface}", group.ip()),
                    e,
                )
            })?;
        if !interface.is_unspecified() {
            socket
                .set_multicast_if_v4(&interface)
                .map_err(|e| context("setting IP_MULTICAST_IF", e))?;
        }
        socket
            .set_multicast_ttl_v4(1)
            .map_err(|e| context("setting IP_MULTICAST_TTL", e))?;
        socket
            .set_multicast_loop_v4(true)
            .map_err(|e| context("setting IP_MULTICAST_LOOP", e))?;
    }
    UdpSocket::from_std(socket.into())
}
