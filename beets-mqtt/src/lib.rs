//! BeeTS over MQTT: spaces that reach past one broadcast domain through a broker (mosquitto,
//! EMQX, HiveMQ, any MQTT 3.1.1 or 5 broker), on `rumqttc`.
//!
//! A broker is one more broadcast medium. Every node of a space subscribes to one topic and
//! publishes its spec §7 datagrams there, unchanged (envelope + message: plain, FPE, later
//! sealed); every other subscriber hears them, as on a LAN.
//!
//! - [`MqttSpace`]: one node on a broker topic — the core's driver with an MQTT sink and
//!   source, as `beets_udp::UdpSpace` is with a socket. Same [`SpaceHandle`] API.
//! - [`Gateway`]: joins a UDP space and an MQTT space transparently (two LANs with a gateway
//!   each form one space through the broker).
//! - [`JsonMirror`]: tuples as JSON for dashboards and integrations (Node-RED, Home Assistant,
//!   `mosquitto_sub`), both ways.
//!
//! # Topic layout
//!
//! | topic | payload | who publishes | who subscribes |
//! |---|---|---|---|
//! | `<prefix>/<space>` | one spec §7 datagram (≤ 1232 bytes) | every node and gateway of the space | every node and gateway of the space |
//! | `<prefix>/<space>/json` | one JSON delivery (below) | each [`JsonMirror`] | dashboards |
//! | `<prefix>/<space>/json/in` | one JSON tuple to `out` | dashboards, scripts | each [`JsonMirror`] |
//!
//! The prefix defaults to `beets/v1` ([`DEFAULT_PREFIX`]); the space name is one topic level.
//! Nothing is retained. QoS 0 by default, QoS 1 configurable ([`Qos`]).
//!
//! # The engine's UDP path, reused
//! An MQTT space is built with [`Transport::Udp`](beets_core::Transport::Udp): the broker
//! carries exactly the UDP datagrams, so the engine's UDP path applies as it is — the envelope
//! check, the drop of the node's **own** datagrams by node id (MQTT 3.1.1 brokers echo a
//! client's publishes to its own subscription; on MQTT 5 the subscription asks "no local"), the
//! §8 dedup by (node id, seq), the 1221-byte message limit, and the direct `out` path
//! (publishing never waits: it goes into rumqttc's queue from the caller's task). No new
//! transport variant is needed. A datagram heard on MQTT is reported from
//! [`PeerAddr::Mqtt`](beets_core::PeerAddr::Mqtt) with its node id (see [`peer`]).
//!
//! With MQTT 5, an OUT with a lifetime is published with that lifetime as its **message expiry
//! interval** ([`out_lifetime`]), so a broker that queues it for a persistent session does not
//! deliver it after the tuple would have expired.
//!
//! # JSON mirror
//! Each tuple a node stores (an OUT, from any sender, or a local `host_out`) or is notified of
//! (TUPLE with R = 0) is published on `<prefix>/<space>/json` as:
//!
//! ```json
//! {"op": "out", "tuple": ["SENSOR", "LIGHT", 512, 1.5], "types": ["str", "str", "int16", "float32"],
//!  "lifetime": 600, "from": "mqtt:1a2b3c4d", "at": "2025-01-31T12:00:00.250Z"}
//! ```
//!
//! | field | meaning |
//! |---|---|
//! | `op` | `"out"` (stored) or `"notify"` (notified, not stored) |
//! | `tuple` | the values: int16 and float32 as JSON numbers (a float32 in its shortest form, `1.5`, `512.0`; ±∞ as the strings `"inf"`, `"-inf"`), str as a string, bytes as a lowercase hex string |
//! | `types` | one of `"int16"`, `"float32"`, `"str"`, `"bytes"` per value |
//! | `lifetime` | seconds, as the OUT gave it (not the time left), or `null`: no lifetime (stored until taken), or a notification |
//! | `from` | the sender: `"mqtt:<node id>"` for a datagram heard on MQTT, `"ip:port"` on UDP, a BLE address, `"local"` for a local out |
//! | `rssi` | dBm, BLE only (absent otherwise) |
//! | `at` | when the mirror handled it, UTC RFC 3339 with milliseconds |
//!
//! A JSON tuple published on `<prefix>/<space>/json/in` is `out` by the mirror's node: an
//! object `{"tuple": [...], "types": [...], "lifetime": 600}` (`types` and `lifetime`
//! optional; `op`, if present, must be `"out"`; other fields are ignored, so a mirrored message
//! can be fed back) or a bare array `["SENSOR", "LIGHT", 512, 1.5]`. Without `types` an integer
//! is int16 (out of range is an error, never a silent float), another number float32, a string
//! str. Anything else is counted ([`JsonStats::bad_json`]), dropped and logged at `warn` with
//! the reason; the node keeps serving. Try it with mosquitto's tools:
//!
//! ```sh
//! mosquitto_sub -t 'beets/v1/hall/json' -v &
//! mosquitto_pub -t 'beets/v1/hall/json/in' -m '{"tuple": ["SENSOR", "LIGHT", 512, 1.5], "lifetime": 600}'
//! ```
//!
//! # Connection
//! `mqtt://host[:port]` (default 1883) or `mqtts://host[:port]` (default 8883), user and
//! password in the URL or [`MqttConfig::with_credentials`], TLS by rustls with a CA file or the
//! system trust store and an optional client certificate ([`TlsOptions`]), client id,
//! keep-alive. rumqttc's event loop reconnects after an outage; this crate waits between
//! attempts with exponential back-off ([`MqttConfig::reconnect_min`] to
//! [`MqttConfig::reconnect_max`]). The outage is visible: a `warn` log per failed attempt,
//! [`MqttStats::state`] (and [`MqttSpace::watch_state`]), and the counters `connects`,
//! `reconnects`, `disconnects`, `connection_errors`, `last_error`. While the broker is
//! unreachable, datagrams are dropped and counted ([`MqttStats::publish_dropped`]) — loss, as on
//! the air.
//!
//! # Security
//! The payloads travel unchanged: a plain space is readable by anyone who can subscribe, an FPE
//! space only hides content from a casual reader (spec §5), sealed spaces (spec §12, planned)
//! protect end to end. TLS (`mqtts://`) protects each hop to the broker, and the broker's ACLs
//! decide who may publish and subscribe on the space's topics; the broker itself sees every
//! payload. The JSON mirror publishes tuples in clear text (decoded by its node): enable it only
//! on topics your ACLs protect as the tuples deserve.
//!
//! # Quick start
//! ```no_run
//! use std::time::Duration;
//! use beets_core::{NodeConfig, Transport};
//! use beets_mqtt::{MqttConfig, MqttSpace};
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let mqtt = MqttConfig::new("mqtt://127.0.0.1:1883", "hall")?;
//!     let sensor = MqttSpace::spawn_random(mqtt.clone(), NodeConfig::new(Transport::Udp, "sensor")?).await?;
//!     let display = MqttSpace::spawn_random(mqtt, NodeConfig::new(Transport::Udp, "display")?).await?;
//!     sensor.wait_connected(Duration::from_secs(5)).await?;
//!     display.wait_connected(Duration::from_secs(5)).await?;
//!     sensor.handle().out(r#"("SENSOR", "LIGHT", 512, 1.5)"#.parse()?, Some(Duration::from_secs(600))).await?;
//!     let reply = display.handle().rd(r#"("SENSOR", ?, ?, ?)"#.parse()?, Duration::from_secs(1)).await?;
//!     tracing::info!(?reply, "read through the broker");
//!     sensor.close().await;
//!     display.close().await;
//!     Ok(())
//! }
//! ```
//!
//! # Logging
//! Each connection logs in a `tracing` span `beets_mqtt` (fields `role`, `client`, `broker`),
//! the gateway in `beets_gateway`, the mirror in `beets_mqtt_json`, the node in the driver's
//! `beets` span. rumqttc itself logs with `log`.
//!
//! [`SpaceHandle`]: beets_core::driver::SpaceHandle
#![forbid(unsafe_code)]

#[cfg(feature = "ble")]
mod ble_gateway;
mod config;
mod error;
mod gateway;
pub mod json;
mod link;
pub mod peer;
mod space;
mod tls;

pub use beets_core::driver::ClientError;
#[cfg(feature = "ble")]
pub use ble_gateway::{BleGateway, BleGatewayConfig, BleGatewayStats};
pub use config::{
    BrokerUrl, DEFAULT_PORT, DEFAULT_PREFIX, DEFAULT_TLS_PORT, MqttConfig, Protocol, Qos,
    TlsOptions,
};
pub use error::{ConfigError, MqttError};
pub use gateway::{Gateway, GatewayConfig, GatewayStats};
pub use json::{JsonError, JsonMirror, JsonStats};
pub use link::{ConnectionState, MqttStats};
pub use space::{MqttSpace, out_lifetime};
