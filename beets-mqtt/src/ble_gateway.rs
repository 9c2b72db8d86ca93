//! [`BleGateway`]: joins a BLE space (the air around one radio) and an MQTT space into one.
//!
//! ```text
//!   BLE air (§6 frames)                               broker topic <prefix>/<space>
//!  ─────────────┐   ┌─────────────── BleGateway ───────────────┐   ┌─────────────
//!   frames ─────┼──▶│ unpack → message as sent → §7 envelope    │──▶│ publish
//!               │   │   node id = h(BLE address), seq = seq‖crc │   │
//!               │◀──│ pack (gateway's frame seq) ◀ §7 envelope  │◀──┼── datagrams
//!  ─────────────┘   └───────────────────────────────────────────┘   └─────────────
//! ```
//!
//! Unlike the UDP [`Gateway`](crate::Gateway), this one cannot forward bytes unchanged: a BLE
//! frame (spec §6) is `seq ‖ message ‖ crc` spread over a local name and UUIDs, an MQTT payload
//! is a §7 datagram `magic ‖ ver ‖ node id ‖ seq ‖ message`. What stays unchanged is the
//! **message** (§4, plain or FPE-encrypted as sent); the gateway re-envelopes it:
//! - BLE → MQTT: the frame is unpacked (with the space's FPE key, if any: it selects among stale
//!   UUID candidates), and the message goes out in a datagram whose node id is a hash of the
//!   sender's BLE address and whose seq is `frame seq << 8 | crc` — the §8 BLE dedup key. Two
//!   gateways hearing one frame therefore publish the same datagram, and MQTT nodes drop the
//!   second copy by their usual (node id, seq) dedup.
//! - MQTT → BLE: the message of a datagram is framed with the gateway's own frame seq and
//!   advertised for Δt. Messages over 31 bytes do not fit a frame: counted
//!   ([`BleGatewayStats::too_long`]) and dropped.
//! - **Sealed messages do not cross** (counted in [`BleGatewayStats::sealed`]): §12 binds a
//!   sealed message to its transport (BLE: 4-byte MIC and nonce type 1; UDP and MQTT: 8-byte MIC
//!   and nonce type 2), so a BLE-sealed message cannot be opened by an MQTT node. Crossing would
//!   need a gateway that holds the sealing key and re-seals, i.e. one more endpoint to trust;
//!   join sealed BLE spaces with a node and a router agent instead.
//!
//! Loops: each key is forwarded once in the direction first heard (as the UDP gateway), and a
//! frame heard on the air that carries a message this gateway advertised within the dedup
//! window is an **echo** (another gateway in range re-publishing it with its own address hash):
//! dropped and counted ([`BleGatewayStats::echoes`]). That check has a race: when another
//! gateway's frame reaches this one before the broker's copy of the same message does, this
//! gateway publishes it once more under the other gateway's key (the BLE address hash), and MQTT
//! nodes store the tuple twice. Gateways that share an air therefore list each other in
//! [`BleGatewayConfig::peer_gateways`] (`beets node --mqtt-peer-gateway ADDR`): frames from a
//! peer gateway are never published.

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use beets_ble::{BleLink, BleStats, FrameKey};
use beets_core::ble::{self, FrameError};
use beets_core::dedup::{DEFAULT_CAPACITY, DEFAULT_WINDOW, DedupCache};
use beets_core::driver::{OwnedFrame, ReceivedFrame};
use beets_core::node::PeerAddr;
use beets_core::udp::{self, DatagramHeader, HEADER_LEN, NodeId};
use beets_core::{FpeKey, Message, Time};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, trace};

use crate::config::{MqttConfig, Protocol};
use crate::error::MqttError;
use crate::link::{Link, MqttStats, Route, stopped};
use crate::space::out_lifetime;

/// What a [`BleGateway`] joins, and how it remembers keys.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BleGatewayConfig {
    /// The MQTT side.
    pub mqtt: MqttConfig,
    /// The space's FPE key, if it has one: frames on the air are checked with it (it selects
    /// among stale UUID candidates, spec §6 "Receiving"), and FPE OUTs' lifetimes become MQTT 5
    /// message expiry intervals. Messages are forwarded encrypted as they are. Default `None`.
    pub key: Option<FpeKey>,
    /// How long a forwarded key (and an advertised message, for echoes) is remembered
    /// (default 10 s, spec §8's W).
    pub dedup_window: Duration,
    /// Most keys remembered (default 4096, spec §8); the oldest are forgotten first.
    pub dedup_capacity: usize,
    /// BLE addresses of the other gateways of this space within radio range. Everything they
    /// advertise came from the broker, so frames from them are never published (counted as
    /// [`BleGatewayStats::echoes`]). Without it, a frame another gateway advertised can reach
    /// this one before the broker's copy does and is then published once more, under that
    /// gateway's key: MQTT nodes store the tuple twice (see the module docs). Default empty.
    pub peer_gateways: Vec<[u8; 6]>,
}

impl BleGatewayConfig {
    /// A gateway to `mqtt` with the spec's dedup defaults and no key.
    pub fn new(mqtt: MqttConfig) -> BleGatewayConfig {
        BleGatewayConfig {
            mqtt,
            key: None,
            dedup_window: DEFAULT_WINDOW,
            dedup_capacity: DEFAULT_CAPACITY,
            peer_gateways: Vec::new(),
        }
    }

    /// What the BLE side checks received frames with (for [`BleLink::spawn_sim`] or a BlueZ
    /// scanner): the FPE key, or none.
    pub fn frame_key(&self) -> FrameKey {
        self.key.clone().into()
    }
}

/// Counters of a [`BleGateway`], since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BleGatewayStats {
    /// Frames the scanner recovered on the air.
    pub ble_in: u64,
    /// Datagrams received from the broker.
    pub mqtt_in: u64,
    /// Messages published to the broker (heard on the air first).
    pub to_mqtt: u64,
    /// Messages advertised on the air (heard from the broker first).
    pub to_ble: u64,
    /// Not forwarded because their key was already forwarded (repeats, echoes of own publishes).
    pub duplicates: u64,
    /// Frames heard on the air carrying a message this gateway advertised (another gateway's
    /// re-publication): not forwarded.
    pub echoes: u64,
    /// Frames that are not exactly one valid BeeTS frame, and datagrams with a bad envelope.
    pub malformed: u64,
    /// Sealed messages, which cannot cross between BLE and MQTT (see the module docs).
    pub sealed: u64,
    /// Datagrams whose message is over 31 bytes, too long for a BLE frame.
    pub too_long: u64,
    /// Frames the BLE sender refused (queue full under `QueuePolicy::Refuse`, too large for the
    /// controller).
    pub ble_refused: u64,
    /// Messages not published: the broker was unreachable or the queue was full.
    pub mqtt_dropped: u64,
    /// The MQTT connection's counters.
    pub mqtt: MqttStats,
}

#[derive(Debug, Default)]
struct Counters {
    ble_in: AtomicU64,
    mqtt_in: AtomicU64,
    to_mqtt: AtomicU64,
    to_ble: AtomicU64,
    duplicates: AtomicU64,
    echoes: AtomicU64,
    malformed: AtomicU64,
    sealed: AtomicU64,
    too_long: AtomicU64,
    ble_refused: AtomicU64,
    mqtt_dropped: AtomicU64,
}

fn add(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A running BLE gateway: a [`BleLink`] (radio and scanner), an MQTT connection and the task
/// forwarding between them.
#[derive(Debug)]
pub struct BleGateway {
    link: Arc<Link>,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    ble_stats: mpsc::Sender<oneshot::Sender<BleStats>>,
}

impl BleGateway {
    /// Connects to the broker and starts forwarding between it and `ble` (a link on the space's
    /// air, e.g. [`BleLink::spawn_sim`] with [`BleGatewayConfig::frame_key`]), on the current
    /// tokio runtime. Returns at once; see [`BleGateway::wait_connected`].
    ///
    /// # Errors
    /// [`MqttError::Io`] outside a tokio runtime; [`MqttError::Config`] for a bad MQTT
    /// configuration or TLS files.
    pub fn spawn(config: BleGatewayConfig, ble: BleLink) -> Result<BleGateway, MqttError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other("BleGateway::spawn needs a tokio runtime").into());
        }
        let (tx, from_mqtt) = mpsc::channel(1024);
        let topic = config.mqtt.space_topic();
        let routes = vec![Route {
            topic: topic.clone(),
            tx,
        }];
        let link = Arc::new(Link::start(&config.mqtt, "ble-gateway", routes)?);
        let counters = Arc::new(Counters::default());
        let (stop, stop_rx) = watch::channel(false);
        let (stats_tx, stats_rx) = mpsc::channel(4);
        let span = info_span!("beets_ble_gateway", topic = %topic);
        let fwd = Forwarder {
            ble,
            link: Arc::clone(&link),
            topic,
            expiry: config.mqtt.protocol == Protocol::V5,
            key: config.key,
            dedup: DedupCache::new(config.dedup_window, config.dedup_capacity),
            advertised: DedupCache::new(config.dedup_window, config.dedup_capacity),
            peer_gateways: config.peer_gateways,
            hasher: std::collections::hash_map::RandomState::new(),
            // §6: the frame seq starts at a random value (the hasher's keys are random per process).
            frame_seq: std::collections::hash_map::RandomState::new().hash_one(0u8) as u8,
            epoch: Instant::now(),
            counters: Arc::clone(&counters),
        };
        let task = tokio::spawn(fwd.run(from_mqtt, stop_rx, stats_rx).instrument(span));
        Ok(BleGateway {
            link,
            counters,
            stop,
            task,
            ble_stats: stats_tx,
        })
    }

    /// Waits until the MQTT side is up and subscribed, at most `timeout`.
    ///
    /// # Errors
    /// [`MqttError::Refused`], [`MqttError::NotConnected`] after `timeout`, [`MqttError::Closed`].
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), MqttError> {
        self.link.shared.wait_connected(timeout).await
    }

    /// The counters now.
    pub fn stats(&self) -> BleGatewayStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BleGatewayStats {
            ble_in: l(&c.ble_in),
            mqtt_in: l(&c.mqtt_in),
            to_mqtt: l(&c.to_mqtt),
            to_ble: l(&c.to_ble),
            duplicates: l(&c.duplicates),
            echoes: l(&c.echoes),
            malformed: l(&c.malformed),
            sealed: l(&c.sealed),
            too_long: l(&c.too_long),
            ble_refused: l(&c.ble_refused),
            mqtt_dropped: l(&c.mqtt_dropped),
            mqtt: self.link.stats(),
        }
    }

    /// The BLE side's counters now (sender queue, radio, scanner); `None` once stopped.
    pub async fn ble_stats(&self) -> Option<BleStats> {
        let (tx, rx) = oneshot::channel();
        self.ble_stats.send(tx).await.ok()?;
        rx.await.ok()
    }

    /// Stops forwarding, withdraws the advertisements and disconnects; returns the final
    /// counters.
    pub async fn close(mut self) -> BleGatewayStats {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
        self.link.close().await;
        self.stats()
    }
}

/// The §7 node id standing for BLE sender `addr` on the broker: FNV-1a of the address (never 0).
fn node_id_of(addr: [u8; 6]) -> NodeId {
    let mut h: u32 = 0x811c_9dc5;
    for b in addr {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    NodeId::new(h).or(NodeId::new(1)).expect("1 is non-zero")
}

struct Forwarder {
    ble: BleLink,
    link: Arc<Link>,
    topic: String,
    expiry: bool,
    key: Option<FpeKey>,
    dedup: DedupCache<(u32, u32)>,
    /// Hashes of the messages advertised, to recognise them coming back through another gateway.
    advertised: DedupCache<u64>,
    /// [`BleGatewayConfig::peer_gateways`].
    peer_gateways: Vec<[u8; 6]>,
    hasher: std::collections::hash_map::RandomState,
    frame_seq: u8,
    epoch: Instant,
    counters: Arc<Counters>,
}

impl Forwarder {
    async fn run(
        mut self,
        mut from_mqtt: mpsc::Receiver<Bytes>,
        mut stop: watch::Receiver<bool>,
        mut stats: mpsc::Receiver<oneshot::Sender<BleStats>>,
    ) {
        loop {
            tokio::select! {
                f = self.ble.recv() => match f {
                    Some(f) => {
                        add(&self.counters.ble_in);
                        self.heard_on_ble(&f);
                    }
                    None => break,
                },
                d = from_mqtt.recv() => match d {
                    Some(d) => {
                        add(&self.counters.mqtt_in);
                        self.heard_on_mqtt(&d);
                    }
                    None => break,
                },
                Some(reply) = stats.recv() => {
                    let _ = reply.send(self.ble.stats());
                }
                () = stopped(&mut stop) => break,
            }
        }
        self.ble.close().await;
        debug!("BLE gateway stopped");
    }

    fn now(&self) -> Time {
        Time::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn hash(&self, message: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(message);
        h.finish()
    }

    fn heard_on_ble(&mut self, f: &ReceivedFrame) {
        let (
            OwnedFrame::Advertisement {
                local_name,
                service_uuids,
            },
            PeerAddr::Ble(addr),
        ) = (&f.frame, f.from)
        else {
            add(&self.counters.malformed);
            return;
        };
        if self.peer_gateways.contains(&addr) {
            add(&self.counters.echoes);
            return;
        }
        let key = self.key.as_ref();
        let mut sealed = false;
        let raw = ble::unpack_raw(local_name, service_uuids, |m| {
            // A sealed message does not parse as a §4 message: refused below, counted apart.
            sealed |= beets_core::sealed::is_sealed(m);
            Message::parse(m, key).map(|_| ()).map_err(Into::into)
        });
        let raw = match raw {
            Ok(r) => r,
            Err(e) => {
                if sealed {
                    add(&self.counters.sealed);
                } else {
                    add(&self.counters.malformed);
                }
                trace!(reason = %e, "BLE frame not forwarded");
                return;
            }
        };
        let now = self.now();
        let id = node_id_of(addr);
        let seq = (u32::from(raw.seq) << 8) | u32::from(raw.crc);
        if !self.dedup.check(now, (id.get(), seq)) {
            add(&self.counters.duplicates);
            return;
        }
        if self.advertised.seen(now, &self.hash(&raw.message)) {
            add(&self.counters.echoes);
            return;
        }
        let mut datagram = vec![0u8; HEADER_LEN + raw.message.len()];
        let (head, body) = datagram.split_at_mut(HEADER_LEN);
        DatagramHeader { node_id: id, seq }.emit(head.try_into().expect("HEADER_LEN bytes"));
        body.copy_from_slice(&raw.message);
        let expiry = if self.expiry {
            out_lifetime(&datagram, key)
        } else {
            None
        };
        match self.link.try_publish(&self.topic, datagram, expiry) {
            Ok(()) => {
                add(&self.counters.to_mqtt);
                trace!(from = %f.from, len = raw.message.len(), "BLE → MQTT");
            }
            Err(e) => {
                add(&self.counters.mqtt_dropped);
                debug!(error = %e, "BLE frame not forwarded to the broker");
            }
        }
    }

    fn heard_on_mqtt(&mut self, datagram: &[u8]) {
        let (header, message) = match udp::parse_header(datagram) {
            Ok(h) => h,
            Err(e) => {
                add(&self.counters.malformed);
                trace!(reason = %e, "malformed datagram dropped");
                return;
            }
        };
        let now = self.now();
        if !self.dedup.check(now, (header.node_id.get(), header.seq)) {
            add(&self.counters.duplicates);
            return;
        }
        if beets_core::sealed::is_sealed(message) {
            add(&self.counters.sealed);
            return;
        }
        let adv = match ble::pack(self.frame_seq, message) {
            Ok(a) => a,
            Err(FrameError::MessageTooLong { .. }) => {
                add(&self.counters.too_long);
                return;
            }
            Err(e) => {
                add(&self.counters.malformed);
                trace!(reason = %e, "datagram message not framed");
                return;
            }
        };
        self.frame_seq = self.frame_seq.wrapping_add(1);
        let h = self.hash(message);
        match self.ble.advertise(adv) {
            Ok(()) => {
                self.advertised.check(now, h);
                add(&self.counters.to_ble);
                trace!(len = message.len(), "MQTT → BLE");
            }
            Err(e) => {
                add(&self.counters.ble_refused);
                debug!(error = %e, "BLE sender refused a frame");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_differ_by_address_and_are_never_zero() {
        let a = node_id_of([0xC0, 0, 0, 0, 0, 1]);
        let b = node_id_of([0xC0, 0, 0, 0, 0, 2]);
        assert_ne!(a, b);
        assert_eq!(a, node_id_of([0xC0, 0, 0, 0, 0, 1]));
    }
}
