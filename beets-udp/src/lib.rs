//! BeeTS over UDP (paper §4, spec wire-v1 §7–§9): a tuple space whose nodes talk by UDP
//! broadcast, IPv4 multicast and/or a list of unicast peers.
//!
//! A [`UdpSpace`] is one node: one UDP socket, which the core's async driver reads itself and
//! feeds, datagram by datagram and without a copy, to the sans-IO engine ([`beets_core::Node`]),
//! and a sink that sends each datagram the engine emits to every configured destination,
//! optionally repeated. The application talks to it through the driver's [`SpaceHandle`]:
//! `out`, `notify`, `rd`, `inp`, `test`, `where`, the local `host_*` operations, `subscribe` and
//! `stats`.
//!
//! ```text
//!  SpaceHandle ──▶ driver task (Node: codec, FPE, dedup, replies, timers)
//!                     │ Transmit::Datagram                 ▲ Frame::Datagram (borrowed)
//!                     ▼                                    │
//!                  UdpSink ── batch ─▶ GSO sendmsg        UdpSource: readable → recvmmsg
//!                     │  to each destination               (up to 32 datagrams per call)
//!                     ├─ batcher task: sends a batch at the next runtime turn
//!                     └─ repeater task: `repeat` copies, `repeat_interval` apart (same seq)
//! ```
//!
//! Datagrams sent in a row (by `out`s from the caller's task, or by the engine in one driver
//! turn) leave as one GSO system call of equal-size segments where the platform has UDP GSO;
//! a lone datagram leaves at its sender's next await (see `UdpStats::batched_sends`). A task
//! that sends and then blocks its thread without awaiting holds its datagrams until the
//! runtime runs again.
//!
//! # Quick start
//! Two spaces on one machine hear each other over the loopback broadcast (Linux). On a LAN use
//! [`UdpConfig::default()`] (every node on port 49737, broadcast to 255.255.255.255) or a subnet
//! broadcast, a multicast group or a peer list.
//!
//! ```no_run
//! use std::time::Duration;
//! use beets_core::{NodeConfig, Transport};
//! use beets_udp::{UdpConfig, UdpSpace};
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let sensor = UdpSpace::spawn_random(
//!         UdpConfig::loopback(40100),
//!         NodeConfig::new(Transport::Udp, "sensor")?,
//!     )?;
//!     let server = UdpSpace::spawn_random(
//!         UdpConfig::loopback(40100),
//!         NodeConfig::new(Transport::Udp, "server")?,
//!     )?;
//!     // OUT is broadcast: every other space in range (here `server`) stores the tuple.
//!     sensor.handle().out(r#"("SENSOR", "LIGHT", 512)"#.parse()?, None).await?;
//!     // RD is broadcast too; the first matching reply completes it, `None` after the timeout.
//!     let template = r#"("SENSOR", "LIGHT", ?int16)"#.parse()?;
//!     if let Some((tuple, how)) = sensor.handle().rd(template, Duration::from_secs(1)).await? {
//!         tracing::info!(%tuple, from = %how.from, "heard");
//!     }
//!     sensor.close().await;
//!     server.close().await;
//!     Ok(())
//! }
//! ```
//!
//! A node never hears itself: its own broadcasts loop back and the engine drops them by node id,
//! so an `rd` is answered by *other* spaces (use `host_rd` for the local one).
//!
//! # What this crate does not do
//! - **No reliability.** Operations are not atomic and not guaranteed (paper §3): a datagram may be
//!   lost, a reply may never come. [`UdpConfig::repeat`] sends copies that receivers' dedup
//!   (spec §8) collapses; there are no acknowledgements or retransmissions.
//! - **No security.** The space key's format-preserving encryption (spec §5) only hides content
//!   from a casual listener; nothing is authenticated. Anyone who can send to the port can store,
//!   take and flood. Do not expose the port beyond a network you trust.
//! - **No fragmentation.** One message per datagram, at most 1232 bytes (1221 of message); larger
//!   tuples are refused when sent.
//! - **No routing.** Broadcast stays on the link; multicast leaves with TTL 1. It does not find
//!   interfaces or subnet broadcast addresses for you, and does not speak IPv6 multicast
//!   (spec §7's ff02::be75); an IPv6 bind address works with unicast peers only.
//! - **No rate limiting.** A flood costs bounded memory (bounded channel, the kernel's buffer,
//!   the engine's bounded dedup cache and space) but the node spends CPU on every datagram.
//!
//! # Socket options
//! [`UdpSpace::spawn`] sets up the socket with `socket2` before binding:
//! - `SO_BROADCAST` (IPv4): without it the kernel refuses to send to a broadcast address.
//! - `SO_REUSEADDR` and, on Unix (Linux, macOS, the BSDs), `SO_REUSEPORT`: several nodes on one
//!   host (several processes, or several spaces in one process) bind the same port.
//!   - *Linux*: both options are set so any mix of BeeTS sockets on the port can bind (with
//!     `SO_REUSEPORT` every socket on the port must set it and belong to the same user). A
//!     broadcast or multicast datagram is delivered to **every** socket bound to the port; a
//!     unicast datagram to one of them only (`SO_REUSEPORT` load-balances by a hash of the
//!     source). So several nodes on one host share a port for broadcast, but unicast peers on
//!     one host need distinct ports. A socket bound to a specific unicast address receives no
//!     broadcasts, hence the default bind address 0.0.0.0.
//!   - *macOS / BSD*: `SO_REUSEPORT` is what lets several sockets bind the same address and
//!     port (`SO_REUSEADDR` alone does so only for sockets bound to a multicast address).
//!     Broadcast and multicast go to every socket; unicast to one. macOS has no loopback
//!     broadcast: on one Mac use multicast or peers on 127.0.0.1.
//!   - *Windows*: `SO_REUSEADDR` only (there is no `SO_REUSEPORT`).
//! - Non-blocking, then handed to tokio (`UdpSocket::from_std`).
//! - With [`UdpConfig::multicast`]: `IP_ADD_MEMBERSHIP` on the interface of
//!   [`UdpConfig::multicast_interface`] (default the bound address, else the kernel's choice),
//!   `IP_MULTICAST_IF` when an interface is named, `IP_MULTICAST_TTL` 1, `IP_MULTICAST_LOOP` on.
//! - `SO_RCVBUF` when [`UdpConfig::recv_buffer_size`] is set.
//!
//! # Errors and logging
//! Each node logs in a `tracing` span named `beets` (field `node`: identity, node id and local
//! address); the repeat task in one named `beets_udp` (the driver reads the socket itself: there
//! is no receive task). A malformed datagram is
//! dropped and counted by the engine ([`NodeStats::dropped_malformed`], `trace` log); a send
//! error is logged at `warn` and counted ([`DriverStats::send_errors`], [`UdpStats::send_errors`])
//! and the node keeps running. [`UdpSpace::close`] (or [`SpaceHandle::close`]) stops the node:
//! pending requests complete with [`ClientError::Closed`]
//! and the socket tasks end.
//!
//! [`NodeStats::dropped_malformed`]: beets_core::NodeStats::dropped_malformed

mod builder;
mod config;
mod error;
mod port;
mod recv;
mod sink;
mod socket;
mod stats;

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use beets_core::driver::{self, DriverStats, SpaceHandle};
use beets_core::udp::NodeId;
use beets_core::{Node, NodeConfig, Time, Transport};
use rand::TryRng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info_span};

pub use beets_core::driver::ClientError;
pub use builder::UdpSpaceBuilder;
pub use config::{
    DEFAULT_MULTICAST_GROUP, DEFAULT_REPEAT_INTERVAL, LIMITED_BROADCAST, LOOPBACK_BROADCAST,
    UdpConfig,
};
pub use error::{ConfigError, UdpError};
pub use port::{PortReservation, reserve_port};
pub use stats::UdpStats;

use crate::sink::{Output, UdpSink};
use crate::stats::Counters;

/// A seed from the operating system's random source (spec §7: node ids and first sequence
/// numbers differ at each start).
pub(crate) fn os_seed() -> Result<u64, UdpError> {
    rand::rngs::SysRng
        .try_next_u64()
        .map_err(|e| UdpError::NoRandomness(e.to_string()))
}

/// Capacity of the repeater's inbox, in datagrams; when it is full, a datagram gets no copies.
const REPEAT_INBOX: usize = 1024;

/// A running UDP tuple space: one node, its socket and its tasks.
///
/// Use [`UdpSpace::handle`] for the operations (clone the [`SpaceHandle`] to use it from other
/// tasks). Dropping the `UdpSpace` does not stop the node while handle clones live; the node
/// stops at [`UdpSpace::close`], [`SpaceHandle::close`], or when every handle is gone.
#[derive(Debug)]
pub struct UdpSpace {
    handle: SpaceHandle,
    local_addr: SocketAddr,
    node_id: NodeId,
    counters: Arc<Counters>,
    /// For the batch still queued at [`UdpSpace::close`].
    output: Weak<Output>,
    driver: JoinHandle<DriverStats>,
    tasks: Vec<JoinHandle<()>>,
}

impl UdpSpace {
    /// Binds the socket described by `udp` and starts a node of `node` on it, on the current
    /// tokio runtime. `seed` drives the node id, the first sequence number and the reply back-off
    /// (spec §7: random at each start — use [`UdpSpace::spawn_random`] in production, a fixed
    /// seed in tests).
    ///
    /// # Errors
    /// [`UdpError::WrongTransport`] when `node` is not a UDP node; [`UdpError::Config`] when
    /// `udp` fails [`UdpConfig::validate`]; [`UdpError::Socket`] naming the step (creating, an
    /// option, binding, joining the group) when the socket cannot be set up;
    /// [`UdpError::NoRuntime`] outside a tokio runtime.
    pub fn spawn(udp: UdpConfig, node: NodeConfig, seed: u64) -> Result<UdpSpace, UdpError> {
        UdpSpace::spawn_node(udp, Node::new(node, seed, Time::ZERO))
    }

    /// As [`UdpSpace::spawn`], with a node built by the caller — e.g. with
    /// [`Node::set_hooks`](beets_core::Node::set_hooks) for agents. The node's clock starts at
    /// [`Time::ZERO`] when the driver starts.
    ///
    /// # Errors
    /// As [`UdpSpace::spawn`].
    pub fn spawn_node(udp: UdpConfig, node: Node) -> Result<UdpSpace, UdpError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(UdpError::NoRuntime);
        }
        let transport = node.config().transport;
        if transport != Transport::Udp {
            return Err(UdpError::WrongTransport(transport));
        }
        udp.validate()?;
        let socket = Arc::new(socket::open(&udp).map_err(UdpError::Socket)?);
        let local_addr = socket.local_addr().map_err(UdpError::Socket)?;
        let identity = node.config().identity.clone();
        let node_id = node.node_id();
        let name = format!("{identity} {node_id}@{local_addr}");
        let span = info_span!("beets_udp", node = %name);
        let counters = Arc::new(Counters::default());
        let state = recv::socket_state(&socket);
        // Batched sends where the platform has GSO (see `sink`).
        let batch = state.as_ref().and_then(|s| sink::Batch::new(Arc::clone(s)));
        let output = Arc::new(Output {
            socket: Arc::clone(&socket),
            destinations: udp.destinations().collect(),
            counters: Arc::clone(&counters),
            batch,
        });
        span.in_scope(|| {
            debug!(
                destinations = ?output.destinations,
                repeat = udp.repeat,
                batched = output.batch.is_some(),
                "UDP space starting"
            );
        });
        let mut tasks = Vec::new();
        if let Some(batch) = &output.batch {
            let task = sink::batcher(Arc::downgrade(&output), Arc::clone(&batch.wake));
            tasks.push(tokio::spawn(task.instrument(span.clone())));
        }
        let weak_output = Arc::downgrade(&output);
        let repeater = if udp.repeat > 0 && !udp.repeat_interval.is_zero() {
            let (tx, rx) = mpsc::channel(REPEAT_INBOX);
            let task = sink::repeater(Arc::clone(&output), udp.repeat, udp.repeat_interval, rx);
            tasks.push(tokio::spawn(task.instrument(span.clone())));
            Some(tx)
        } else {
            None
        };
        let sink = UdpSink {
            output,
            repeat: udp.repeat,
            repeater,
        };
        let source = recv::UdpSource::new(socket, state, Arc::clone(&counters));
        let (handle, driver) = driver::spawn_with_source(name, node, sink, source);
        Ok(UdpSpace {
            handle,
            local_addr,
            node_id,
            counters,
            output: weak_output,
            driver,
            tasks,
        })
    }

    /// [`UdpSpace::spawn`] with a seed from the operating system's random source.
    ///
    /// # Errors
    /// As [`UdpSpace::spawn`], or when the OS has no randomness to give.
    pub fn spawn_random(udp: UdpConfig, node: NodeConfig) -> Result<UdpSpace, UdpError> {
        UdpSpace::spawn(udp, node, os_seed()?)
    }

    /// A builder for a UDP space: the node name, then what differs from the defaults (port,
    /// broadcast address, peers, key, hooks), then [`spawn`](UdpSpaceBuilder::spawn). Hides the
    /// engine: the node is built with a seed from the OS.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let space = beets_udp::UdpSpace::builder("sensor").loopback(40100).spawn()?;
    /// space.handle().out(beets_core::tuple!("SENSOR", "LIGHT", 512)?, None).await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(name: &str) -> UdpSpaceBuilder {
        UdpSpaceBuilder::new(name)
    }

    /// The handle for `out`, `rd`, `inp`, …; clone it to share.
    pub fn handle(&self) -> &SpaceHandle {
        &self.handle
    }

    /// The address the socket is bound to (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This run's node id, in the header of every datagram the node sends (spec §7).
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The socket counters now (the engine's are in [`SpaceHandle::stats`]).
    pub fn udp_stats(&self) -> UdpStats {
        self.counters.snapshot()
    }

    /// Stops the node and waits for its tasks: pending requests complete with
    /// [`ClientError::Closed`], the driver and the repeat task end and the socket is closed.
    /// Returns the final driver (engine) and socket counters.
    ///
    /// # Panics
    /// Resumes the panic of a task that panicked (a bug).
    pub async fn close(self) -> (DriverStats, UdpStats) {
        // Datagrams still batched (see `sink`) go before the node stops.
        if let Some(output) = self.output.upgrade() {
            output.flush().await;
        }
        self.handle.close().await;
        let driver = join(self.driver).await.unwrap_or_default();
        for task in self.tasks {
            join(task).await;
        }
        (driver, self.counters.snapshot())
    }
}

/// Awaits a task; `None` if the runtime cancelled it; a panic is passed on.
async fn join<T>(task: JoinHandle<T>) -> Option<T> {
    match task.await {
        Ok(v) => Some(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}
