//! [`MqttSpace`]: one node whose transport is a broker topic — the core's driver with an MQTT
//! [`FrameSink`] and [`FrameSource`], as `beets-udp` is with a socket.

use std::io;
use std::sync::{Arc, Weak};
use std::time::Duration;

use beets_core::driver::{self, DirectSend, DriverStats, FrameSink, FrameSource, SendError};
use beets_core::udp::{self, NodeId};
use beets_core::{FpeKey, Frame, Message, Node, NodeConfig, PeerAddr, Time, Transmit, Transport};
use bytes::Bytes;
use rand::TryRng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{MqttConfig, Protocol};
use crate::error::MqttError;
use crate::json::JsonMirror;
use crate::link::{ConnectionState, Link, MqttStats, Route};
use crate::peer::mqtt_peer;

/// Received datagrams waiting for the driver.
const INBOX: usize = 1024;

/// The lifetime of the OUT inside `datagram`, in seconds, if it is one with L = 1 (spec §4);
/// `key` decrypts an FPE message. `None` for anything else (other ops, no lifetime, a sealed or
/// undecodable message). Only the control byte is looked at unless it says OUT with L.
///
/// ```
/// use beets_core::udp::{self, DatagramHeader, NodeId};
/// use beets_core::Message;
/// let msg = Message::Out { tuple: "(\"T\", 1)".parse().unwrap(), lifetime: std::num::NonZeroU16::new(600) };
/// let header = DatagramHeader { node_id: NodeId::new(7).unwrap(), seq: 1 };
/// let d = udp::encode(&header, &msg, None).unwrap();
/// assert_eq!(beets_mqtt::out_lifetime(&d, None), Some(600));
/// ```
pub fn out_lifetime(datagram: &[u8], key: Option<&FpeKey>) -> Option<u32> {
    let (_, message) = udp::parse_header(datagram).ok()?;
    let control = *message.first()?;
    // VER 01, OP 1 (OUT), L = 1; E may be set.
    if control >> 6 != 0b01 || (control >> 3) & 0b111 != 1 || control & 1 == 0 {
        return None;
    }
    match Message::parse(message, key).ok()?.message {
        Message::Out {
            lifetime: Some(l), ..
        } => Some(u32::from(l.get())),
        _ => None,
    }
}

/// Publishes datagrams on the space topic; shared by the sink and the handles' direct path.
#[derive(Debug)]
struct Output {
    link: Arc<Link>,
    topic: String,
    /// MQTT 5: OUT lifetimes become message expiry intervals.
    expiry: bool,
    key: Option<FpeKey>,
}

impl Output {
    fn publish(&self, datagram: Vec<u8>) -> io::Result<()> {
        let expiry = if self.expiry {
            out_lifetime(&datagram, self.key.as_ref())
        } else {
            None
        };
        Ok(self.link.try_publish(&self.topic, datagram, expiry)?)
    }
}

struct MqttSink {
    output: Arc<Output>,
}

impl FrameSink for MqttSink {
    async fn send(&mut self, tx: Transmit) -> Result<(), SendError> {
        match tx {
            Transmit::Datagram(d) => self.output.publish(d).map_err(SendError::Io),
            Transmit::Advertisement(_) => Err(SendError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a BLE advertisement cannot be sent over MQTT",
            ))),
        }
    }

    fn direct(&self) -> Option<Arc<dyn DirectSend>> {
        Some(Arc::new(MqttDirect {
            output: Arc::downgrade(&self.output),
        }))
    }
}

/// The handles' direct path: publishing never waits (rumqttc's request queue), so an `out`
/// is published from the caller's task. Weak, so a handle outliving the space sends nothing.
struct MqttDirect {
    output: Weak<Output>,
}

impl DirectSend for MqttDirect {
    fn try_send_now(&self, datagram: &[u8]) -> Option<io::Result<()>> {
        let output = self.output.upgrade()?;
        Some(output.publish(datagram.to_vec()))
    }
}

/// Datagrams from the space topic, read by the driver (the connection task fills the queue).
struct MqttSource {
    inbox: mpsc::Receiver<Bytes>,
    held: Option<Bytes>,
}

impl FrameSource for MqttSource {
    async fn ready(&mut self) -> bool {
        if self.held.is_none() {
            self.held = self.inbox.recv().await;
        }
        self.held.is_some()
    }

    fn try_recv<F>(&mut self, deliver: F) -> bool
    where
        F: FnOnce(PeerAddr, Frame<'_>, Option<i16>),
    {
        match self.held.take().or_else(|| self.inbox.try_recv().ok()) {
            Some(d) => {
                deliver(mqtt_peer(&d), Frame::Datagram(&d), None);
                true
            }
            None => false,
        }
    }
}

/// A running MQTT tuple space: one node whose datagrams travel through a broker.
///
/// Use [`MqttSpace::handle`] for the operations, exactly as with a `UdpSpace`. The node is
/// built with [`Transport::Udp`]: the broker carries the spec §7 datagrams unchanged, so the
/// engine's UDP path (envelope checks, own-datagram drop by node id, §8 dedup by node id and
/// seq, the 1221-byte message limit) is the MQTT path too.
#[derive(Debug)]
pub struct MqttSpace {
    handle: driver::SpaceHandle,
    node_id: NodeId,
    link: Arc<Link>,
    output: Arc<Output>,
    driver: JoinHandle<DriverStats>,
    mirror: Option<JsonMirror>,
}

impl MqttSpace {
    /// Connects to `mqtt`'s broker and starts a node of `node` on the space topic, on the
    /// current tokio runtime. `seed` drives the node id, the first sequence number and the reply
    /// back-off (random in production: [`MqttSpace::spawn_random`]). Returns at once: the
    /// connection comes up in the background (see [`MqttSpace::wait_connected`]). With
    /// [`MqttConfig::json_mirror`] a [`JsonMirror`] runs on the node too.
    ///
    /// # Errors
    /// [`MqttError::Config`] when `node` is not a [`Transport::Udp`] node, for a bad MQTT
    /// configuration or unreadable TLS files; [`MqttError::Io`] outside a tokio runtime.
    pub async fn spawn(
        mqtt: MqttConfig,
        node: NodeConfig,
        seed: u64,
    ) -> Result<MqttSpace, MqttError> {
        MqttSpace::spawn_node(mqtt, Node::new(node, seed, Time::ZERO)).await
    }

    /// As [`MqttSpace::spawn`], with a node built by the caller (e.g. with hooks for agents).
    ///
    /// # Errors
    /// As [`MqttSpace::spawn`].
    pub async fn spawn_node(mqtt: MqttConfig, node: Node) -> Result<MqttSpace, MqttError> {
        if node.config().transport != Transport::Udp {
            return Err(crate::ConfigError::Invalid(
                "an MQTT space needs a node built with Transport::Udp (it carries spec §7 datagrams)"
                    .into(),
            )
            .into());
        }
        let (tx, inbox) = mpsc::channel(INBOX);
        let routes = vec![Route {
            topic: mqtt.space_topic(),
            tx,
        }];
        let link = Arc::new(Link::start(&mqtt, "node", routes)?);
        let output = Arc::new(Output {
            link: Arc::clone(&link),
            topic: mqtt.space_topic(),
            expiry: mqtt.protocol == Protocol::V5,
            key: node.config().key.clone(),
        });
        let node_id = node.node_id();
        let name = format!(
            "{} {node_id}@{}/{}",
            node.config().identity,
            mqtt.broker,
            mqtt.space_topic()
        );
        let sink = MqttSink {
            output: Arc::clone(&output),
        };
        let source = MqttSource { inbox, held: None };
        let (handle, driver) = driver::spawn_with_source(name, node, sink, source);
        let mirror = if mqtt.json_mirror {
            Some(JsonMirror::spawn(handle.clone(), &mqtt).await?)
        } else {
            None
        };
        Ok(MqttSpace {
            handle,
            node_id,
            link,
            output,
            driver,
            mirror,
        })
    }

    /// [`MqttSpace::spawn`] with a seed from the operating system's random source.
    ///
    /// # Errors
    /// As [`MqttSpace::spawn`], or [`MqttError::Io`] when the OS has no randomness to give.
    pub async fn spawn_random(mqtt: MqttConfig, node: NodeConfig) -> Result<MqttSpace, MqttError> {
        let seed = rand::rngs::SysRng
            .try_next_u64()
            .map_err(|e| io::Error::other(format!("no OS randomness for the node seed: {e}")))?;
        MqttSpace::spawn(mqtt, node, seed).await
    }

    /// The handle for `out`, `rd`, `inp`, …; clone it to share.
    pub fn handle(&self) -> &driver::SpaceHandle {
        &self.handle
    }

    /// This run's node id, in the header of every datagram the node publishes (spec §7).
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The MQTT client id in use (generated unless configured).
    pub fn client_id(&self) -> &str {
        &self.link.client_id
    }

    /// The connection's counters and state now (the engine's are in
    /// [`SpaceHandle::stats`](beets_core::driver::SpaceHandle::stats)).
    pub fn mqtt_stats(&self) -> MqttStats {
        self.link.stats()
    }

    /// The JSON mirror, when [`MqttConfig::json_mirror`] started one.
    pub fn mirror(&self) -> Option<&JsonMirror> {
        self.mirror.as_ref()
    }

    /// A receiver of connection state changes (to log or show outages).
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.link.shared.watch()
    }

    /// Waits until the connection is up and subscribed (and the mirror's, if any), at most
    /// `timeout`.
    ///
    /// # Errors
    /// [`MqttError::Refused`] when the broker refused the connection (bad credentials…);
    /// [`MqttError::NotConnected`] with the last connection error after `timeout` (e.g. a TLS
    /// certificate the CA does not vouch for); [`MqttError::Closed`].
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), MqttError> {
        self.link.shared.wait_connected(timeout).await?;
        if let Some(m) = &self.mirror {
            m.wait_connected(timeout).await?;
        }
        Ok(())
    }

    /// Stops the node, its mirror and its connection: pending requests complete with
    /// `ClientError::Closed`. Returns the final driver and connection counters.
    pub async fn close(self) -> (DriverStats, MqttStats) {
        self.handle.close().await;
        let stats = self.driver.await.unwrap_or_default();
        if let Some(m) = self.mirror {
            m.close().await;
        }
        drop(self.output);
        self.link.close().await;
        (stats, self.link.stats())
    }
}
