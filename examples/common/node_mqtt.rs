//! `beets node --mqtt URL`: a gateway between the node's UDP space and an MQTT broker, with
//! `--ble` one between the BLE air and the broker too (and, with `--mqtt-json`, the JSON mirror of
//! the node's first space), beside the node (see the README, "Beyond one LAN").

use std::path::PathBuf;
use std::time::Duration;

use beets::core::driver::SpaceHandle;
use beets_udp::UdpConfig;
use clap::Args;

/// The MQTT options of `beets node`.
#[derive(Args, Debug)]
pub(crate) struct MqttArgs {
    /// Join the UDP space (--udp) and the BLE air (--ble) to an MQTT broker,
    /// `mqtt://[user:pw@]host[:port]` or `mqtts://…`: a gateway forwards every message between
    /// the LAN or the air and the broker topic `<prefix>/<space>`, once per key.
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,
    /// The space name on the broker (one topic level): gateways of one name form one space.
    #[arg(long, value_name = "NAME", default_value = "udp-ts", requires = "mqtt")]
    pub mqtt_space: String,
    /// Topic prefix (default beets/v1).
    #[arg(long, value_name = "P", requires = "mqtt")]
    pub mqtt_prefix: Option<String>,
    /// Also publish every tuple the node's first space stores or is notified of as JSON on
    /// `<prefix>/<space>/json`, and `out` the JSON tuples published on `…/json/in`.
    #[arg(long, requires = "mqtt")]
    pub mqtt_json: bool,
    /// User name for the broker.
    #[arg(long, value_name = "U", requires = "mqtt")]
    pub mqtt_user: Option<String>,
    /// Password for the broker (visible in `ps`: prefer --mqtt-password-file).
    #[arg(
        long,
        value_name = "PW",
        requires = "mqtt_user",
        allow_hyphen_values = true,
        conflicts_with = "mqtt_password_file"
    )]
    pub mqtt_password: Option<String>,
    /// File holding the broker password (its first line).
    #[arg(long, value_name = "FILE", requires = "mqtt_user")]
    pub mqtt_password_file: Option<PathBuf>,
    /// PEM file of the CA the broker's certificate must chain to (mqtts://; default: the
    /// system's trust store).
    #[arg(long, value_name = "FILE", requires = "mqtt")]
    pub mqtt_ca: Option<PathBuf>,
    /// BLE address (AA:BB:CC:DD:EE:FF, as `beets node` prints it) of another BLE gateway of
    /// this space within radio range; repeatable. Frames from it came from the broker and are
    /// never published back (without it, one that arrives before the broker's copy is
    /// published twice).
    #[arg(long, value_name = "ADDR", value_parser = parse_ble_addr, requires = "mqtt")]
    pub mqtt_peer_gateway: Vec<[u8; 6]>,
}

/// `AA:BB:CC:DD:EE:FF` → the six bytes in the order written (as `PeerAddr::Ble` prints them).
fn parse_ble_addr(s: &str) -> Result<[u8; 6], String> {
    let bad = || format!("{s:?} is not a BLE address like AA:BB:CC:DD:EE:FF");
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

/// The running gateways and mirror.
pub(crate) struct MqttSide {
    #[cfg(feature = "mqtt")]
    gateway: Option<beets::mqtt::Gateway>,
    #[cfg(feature = "mqtt")]
    ble_gateway: Option<beets::mqtt::BleGateway>,
    #[cfg(feature = "mqtt")]
    mirror: Option<beets::mqtt::JsonMirror>,
}

/// How long the start waits for the broker before going on (the connection keeps retrying).
#[cfg(feature = "mqtt")]
const FIRST_CONNECT: Duration = Duration::from_secs(5);

#[cfg(feature = "mqtt")]
fn config(args: &MqttArgs, url: &str) -> Result<beets::mqtt::MqttConfig, String> {
    let mut c =
        beets::mqtt::MqttConfig::new(url, &args.mqtt_space).map_err(|e| format!("--mqtt: {e}"))?;
    if let Some(p) = &args.mqtt_prefix {
        c.prefix = p.clone();
    }
    if let Some(user) = &args.mqtt_user {
        let password = match (&args.mqtt_password, &args.mqtt_password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| format!("--mqtt-password-file {}: {e}", f.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            (None, None) => c.broker.password.clone().unwrap_or_default(),
        };
        c = c.with_credentials(user, &password);
    }
    c.tls.ca_file = args.mqtt_ca.clone();
    c.validate().map_err(|e| format!("--mqtt: {e}"))?;
    Ok(c)
}

/// Starts the gateway beside the UDP space `udp` (the node's own UDP settings; `None` without
/// --udp), the BLE gateway on `ble` (a link on the node's adapter; `None` without --ble) and the
/// JSON mirror on `space`; `Ok(None)` without `--mqtt`. Waits a few seconds for the broker,
/// then goes on (the connections keep retrying); a refusal (bad credentials) is an error.
pub(crate) async fn start(
    args: &MqttArgs,
    udp: Option<&UdpConfig>,
    ble: Option<beets_ble::BleLink>,
    key: Option<&str>,
    space: Option<&SpaceHandle>,
) -> Result<Option<MqttSide>, String> {
    let Some(url) = args.mqtt.as_deref() else {
        return Ok(None);
    };
    #[cfg(not(feature = "mqtt"))]
    {
        let _ = (url, udp, ble, key, space);
        Err(
            "--mqtt needs the `mqtt` feature (on by default; built with --no-default-features?)"
                .into(),
        )
    }
    #[cfg(feature = "mqtt")]
    {
        use beets::mqtt::MqttError;
        use beets::mqtt::{BleGateway, BleGatewayConfig, Gateway, GatewayConfig, JsonMirror};
        let c = config(args, url)?;
        let fpe = key.map(beets::core::FpeKey::from_password);
        let gateway = match udp {
            Some(udp) => {
                let mut g = GatewayConfig::new(udp.clone(), c.clone());
                g.key = fpe.clone();
                let gateway = Gateway::spawn(g).map_err(|e| format!("--mqtt gateway: {e}"))?;
                println!(
                    "mqtt: gateway {} <-> {} topic {}",
                    gateway.local_addr(),
                    c.broker,
                    c.space_topic()
                );
                Some(gateway)
            }
            None => None,
        };
        let ble_gateway = match ble {
            Some(link) => {
                let mut g = BleGatewayConfig::new(c.clone());
                g.key = fpe;
                g.peer_gateways = args.mqtt_peer_gateway.clone();
                let gateway =
                    BleGateway::spawn(g, link).map_err(|e| format!("--mqtt BLE gateway: {e}"))?;
                println!(
                    "mqtt: BLE gateway <-> {} topic {}",
                    c.broker,
                    c.space_topic()
                );
                Some(gateway)
            }
            None => None,
        };
        let mirror = match (args.mqtt_json, space) {
            (true, Some(space)) => Some(
                JsonMirror::spawn(space.clone(), &c)
                    .await
                    .map_err(|e| format!("--mqtt-json: {e}"))?,
            ),
            _ => None,
        };
        let connected = async {
            if let Some(g) = &gateway {
                g.wait_connected(FIRST_CONNECT).await?;
            }
            if let Some(g) = &ble_gateway {
                g.wait_connected(FIRST_CONNECT).await?;
            }
            if let Some(m) = &mirror {
                m.wait_connected(FIRST_CONNECT).await?;
                println!("mqtt: json mirror on {}", c.json_topic());
            }
            Ok::<(), MqttError>(())
        };
        match connected.await {
            Ok(()) => println!("mqtt: gateway connected to {}", c.broker),
            Err(e @ MqttError::Refused(_)) => return Err(format!("--mqtt: {e}")),
            Err(e) => {
                println!("mqtt: not connected yet ({e}); retrying in the background");
                tracing::warn!(error = %e, "MQTT broker not reached yet; retrying");
            }
        }
        Ok(Some(MqttSide {
            gateway,
            ble_gateway,
            mirror,
        }))
    }
}

impl MqttSide {
    /// Stops the mirror and the gateway and prints their counters.
    pub(crate) async fn stop(self) {
        #[cfg(feature = "mqtt")]
        {
            if let Some(m) = self.mirror {
                let s = m.close().await;
                println!(
                    "mqtt json: published {}, not published {}, outs {}, bad JSON {}, out errors {}",
                    s.published, s.publish_dropped, s.outs, s.bad_json, s.out_errors
                );
            }
            if let Some(g) = self.ble_gateway {
                let s = g.close().await;
                println!(
                    "mqtt BLE gateway: ble in {}, mqtt in {}, ble->mqtt {}, mqtt->ble {}, \
                     duplicates {}, echoes {}, malformed {}, sealed {}, too long {}, ble refused {}, \
                     mqtt dropped {}; connects {}, reconnects {}, disconnects {}",
                    s.ble_in,
                    s.mqtt_in,
                    s.to_mqtt,
                    s.to_ble,
                    s.duplicates,
                    s.echoes,
                    s.malformed,
                    s.sealed,
                    s.too_long,
                    s.ble_refused,
                    s.mqtt_dropped,
                    s.mqtt.connects,
                    s.mqtt.reconnects,
                    s.mqtt.disconnects
                );
            }
            let Some(g) = self.gateway else { return };
            let s = g.close().await;
            println!(
                "mqtt gateway: udp in {}, mqtt in {}, udp->mqtt {}, mqtt->udp {}, duplicates {}, \
                 malformed {}, mqtt dropped {}, udp send errors {}; connects {}, reconnects {}, \
                 disconnects {}",
                s.udp_in,
                s.mqtt_in,
                s.to_mqtt,
                s.to_udp,
                s.duplicates,
                s.malformed,
                s.mqtt_dropped,
                s.udp_send_errors,
                s.mqtt.connects,
                s.mqtt.reconnects,
                s.mqtt.disconnects
            );
        }
    }
}
