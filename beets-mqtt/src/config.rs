//! [`MqttConfig`]: which broker, how to log in, which topics; and the `mqtt://` / `mqtts://` URL.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::ConfigError;

/// The default topic prefix, `beets/v1`: a space `S` travels on `beets/v1/S`.
pub const DEFAULT_PREFIX: &str = "beets/v1";
/// Default port of `mqtt://` URLs (MQTT over TCP).
pub const DEFAULT_PORT: u16 = 1883;
/// Default port of `mqtts://` URLs (MQTT over TLS).
pub const DEFAULT_TLS_PORT: u16 = 8883;

/// The MQTT protocol version spoken to the broker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// MQTT 3.1.1, for brokers without MQTT 5. The broker echoes each node its own datagrams
    /// (3.1.1 has no "no local"), which the engine then drops by node id: twice the broker's
    /// traffic for a space of publishers, and about half the throughput (see the README's
    /// performance section).
    V311,
    /// MQTT 5 (default; mosquitto ≥ 1.6, EMQX, HiveMQ, VerneMQ): the space topic is subscribed
    /// with "no local" (the broker does not echo a client's own datagrams), and an OUT's
    /// lifetime becomes the publish's message expiry interval.
    #[default]
    V5,
}

/// The quality of service of publishes and of the subscription.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Qos {
    /// QoS 0, at most once (default): a broadcast medium, as UDP; losses are the engine's to
    /// bear, as on the air.
    #[default]
    AtMostOnce,
    /// QoS 1, at least once: the broker acknowledges; repeats are dropped by the §8 dedup. With a
    /// persistent session ([`MqttConfig::persistent_session`]) the broker keeps what arrives
    /// while this client is away.
    AtLeastOnce,
}

/// A broker address from an `mqtt://` or `mqtts://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// TCP port (default 1883, or 8883 with TLS).
    pub port: u16,
    /// `mqtts://`: TLS to the broker.
    pub tls: bool,
    /// User name from the URL's user info, if any.
    pub username: Option<String>,
    /// Password from the URL's user info, if any (never printed by `Debug` or `Display`).
    pub password: Option<String>,
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}

impl fmt::Display for BrokerUrl {
    /// The URL without its credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for BrokerUrl {
    type Err = ConfigError;

    /// Parses `mqtt://[user[:password]@]host[:port][/]` or the same with `mqtts://`. User and
    /// password may be percent-encoded; an IPv6 host goes in brackets.
    ///
    /// # Errors
    /// [`ConfigError::Url`] naming what is wrong: another scheme, no host, a bad port, a path,
    /// query or fragment, a bad percent-encoding.
    fn from_str(url: &str) -> Result<BrokerUrl, ConfigError> {
        let bad = |why: &str| ConfigError::Url {
            url: redact(url),
            why: why.to_owned(),
        };
        let (tls, rest) = if let Some(r) = strip_prefix_ci(url, "mqtt://") {
            (false, r)
        } else if let Some(r) = strip_prefix_ci(url, "mqtts://") {
            (true, r)
        } else {
            return Err(bad("the scheme must be mqtt:// or mqtts://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(bad("a broker URL has no path, query or fragment"));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = match u.split_once(':') {
                    Some((user, pass)) => (user, Some(pass)),
                    None => (u, None),
                };
                let user = percent_decode(user).ok_or_else(|| bad("bad percent-encoding"))?;
                let pass = pass
                    .map(|p| percent_decode(p).ok_or_else(|| bad("bad percent-encoding")))
                    .transpose()?;
                ((!user.is_empty()).then_some(user), pass)
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 host needs its closing bracket"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected :port after the IPv6 host"))?,
                ),
            };
            (host, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => {
                if tls {
                    DEFAULT_TLS_PORT
                } else {
                    DEFAULT_PORT
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(bad("the port must be a number in 1..=65535")),
                Ok(p) => p,
            },
        };
        Ok(BrokerUrl {
            host: host.to_owned(),
            port,
            tls,
            username,
            password,
        })
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `url` with any password replaced by `…`, for error messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:…@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// TLS settings for `mqtts://` brokers (rustls with the `ring` provider).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file with the CA certificate(s) the broker's certificate must chain to. `None` uses
    /// the operating system's trust store.
    pub ca_file: Option<PathBuf>,
    /// PEM files of a client certificate (chain) and its private key, for brokers that
    /// authenticate clients by certificate.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Where and how a node (or gateway, or JSON mirror) reaches its broker, and the space's topics.
/// Build it with [`MqttConfig::new`] and change fields.
///
/// ```
/// use beets_mqtt::{MqttConfig, Protocol, Qos};
/// let mut c = MqttConfig::new("mqtt://127.0.0.1:1883", "hall")?;
/// c.protocol = Protocol::V311; // a broker without MQTT 5
/// c.qos = Qos::AtLeastOnce;
/// assert_eq!(c.space_topic(), "beets/v1/hall");
/// assert_eq!(c.json_topic(), "beets/v1/hall/json");
/// assert_eq!(c.json_in_topic(), "beets/v1/hall/json/in");
/// # Ok::<(), beets_mqtt::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MqttConfig {
    /// The broker (`mqtt://host:port` or `mqtts://host:port`).
    pub broker: BrokerUrl,
    /// MQTT 5 (default) or 3.1.1.
    pub protocol: Protocol,
    /// Topic prefix, default [`DEFAULT_PREFIX`] (`beets/v1`). No wildcards, no leading or
    /// trailing `/`.
    pub prefix: String,
    /// The space's name: its datagrams travel on `<prefix>/<space>`. One topic level: no `/`,
    /// `+` or `#`.
    pub space: String,
    /// MQTT client id; `None` (default) picks `beets-<16 random hex digits>` at each start. Set
    /// one for a persistent session. Two clients with one id push each other off the broker.
    pub client_id: Option<String>,
    /// TLS settings, used for `mqtts://`.
    pub tls: TlsOptions,
    /// MQTT keep-alive: the broker drops the client after 1.5 × this without a packet, and an
    /// outage is noticed within about this long. Default 30 s; at least 5 s (rumqttc's floor).
    pub keep_alive: Duration,
    /// Publish and subscribe QoS (default QoS 0).
    pub qos: Qos,
    /// `Some(expiry)`: a persistent session (MQTT 3.1.1 clean session off; MQTT 5 clean start off
    /// with this session expiry, whole seconds). With QoS 1 and a fixed
    /// [`client_id`](Self::client_id) the broker queues datagrams for this client while it is
    /// away. Default `None` (a clean session each time).
    pub persistent_session: Option<Duration>,
    /// First wait before reconnecting after the connection failed (default 100 ms); doubled at
    /// each failure in a row, up to [`reconnect_max`](Self::reconnect_max).
    pub reconnect_min: Duration,
    /// Longest wait between reconnection attempts (default 5 s).
    pub reconnect_max: Duration,
    /// Longest time a connection attempt (TCP, TLS, CONNECT/CONNACK) may take (default 5 s,
    /// whole seconds, at least 1).
    pub connect_timeout: Duration,
    /// Datagrams waiting to be handed to the connection (default 1024). When full, a send fails
    /// and is counted ([`MqttStats::publish_dropped`](crate::MqttStats::publish_dropped)).
    pub queue: usize,
    /// Also run a JSON mirror on the space (see [`JsonMirror`](crate::JsonMirror)) when the
    /// space is spawned by [`MqttSpace::spawn`](crate::MqttSpace::spawn). Default off.
    pub json_mirror: bool,
}

impl MqttConfig {
    /// Defaults for the broker at `url` and the space `space`: MQTT 5, QoS 0, prefix
    /// `beets/v1`, keep-alive 30 s. User and password in the URL become the credentials.
    ///
    /// # Errors
    /// [`ConfigError::Url`] for a bad URL; [`ConfigError::Topic`] for a bad space name.
    pub fn new(url: &str, space: &str) -> Result<MqttConfig, ConfigError> {
        let broker: BrokerUrl = url.parse()?;
        let c = MqttConfig {
            broker,
            protocol: Protocol::V5,
            prefix: DEFAULT_PREFIX.to_owned(),
            space: space.to_owned(),
            client_id: None,
            tls: TlsOptions::default(),
            keep_alive: Duration::from_secs(30),
            qos: Qos::AtMostOnce,
            persistent_session: None,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            queue: 1024,
            json_mirror: false,
        };
        c.validate()?;
        Ok(c)
    }

    /// Sets user name and password (replacing any from the URL).
    pub fn with_credentials(mut self, username: &str, password: &str) -> MqttConfig {
        self.broker.username = Some(username.to_owned());
        self.broker.password = Some(password.to_owned());
        self
    }

    /// Checks the topics and the numbers.
    ///
    /// # Errors
    /// [`ConfigError::Topic`] for a prefix or space name with wildcards, empty levels or (for
    /// the space) a `/`; [`ConfigError::Invalid`] for a zero queue, a keep-alive under 5 s, a
    /// password without a user name, an empty client id.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let topic = |what: &str, why: &str| ConfigError::Topic {
            what: what.to_owned(),
            why: why.to_owned(),
        };
        if self.space.is_empty() || self.space.contains(['/', '+', '#', '\0']) {
            return Err(topic(
                &self.space,
                "a space name is one non-empty topic level (no '/', '+', '#')",
            ));
        }
        if self.prefix.is_empty()
            || self.prefix.contains(['+', '#', '\0'])
            || self.prefix.split('/').any(str::is_empty)
        {
            return Err(topic(
                &self.prefix,
                "a prefix has no wildcards and no empty levels (no leading, trailing or double '/')",
            ));
        }
        let invalid = |why: &str| Err(ConfigError::Invalid(why.to_owned()));
        if self.queue == 0 {
            return invalid("queue must be at least 1");
        }
        if self.keep_alive < Duration::from_secs(5) {
            return invalid("keep_alive must be at least 5 s");
        }
        if self.broker.password.is_some() && self.broker.username.is_none() {
            return invalid("a password needs a user name");
        }
        if self.client_id.as_deref() == Some("") {
            return invalid("client_id must not be empty");
        }
        Ok(())
    }

    /// The space topic, `<prefix>/<space>`: every datagram of the space.
    pub fn space_topic(&self) -> String {
        format!("{}/{}", self.prefix, self.space)
    }

    /// The JSON mirror's output topic, `<prefix>/<space>/json`.
    pub fn json_topic(&self) -> String {
        format!("{}/{}/json", self.prefix, self.space)
    }

    /// The JSON mirror's input topic, `<prefix>/<space>/json/in`.
    pub fn json_in_topic(&self) -> String {
        format!("{}/{}/json/in", self.prefix, self.space)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults() {
        let u: BrokerUrl = "mqtt://broker.example".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("broker.example", 1883, false)
        );
        let u: BrokerUrl = "mqtts://broker.example/".parse().unwrap();
        assert_eq!((u.port, u.tls), (8883, true));
        let u: BrokerUrl = "MQTT://127.0.0.1:18830".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 18830));
        let u: BrokerUrl = "mqtt://[::1]:1884".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1884));
        assert_eq!(u.to_string(), "mqtt://[::1]:1884");
        let u: BrokerUrl = "mqtt://[::1]".parse().unwrap();
        assert_eq!(u.port, 1883);
    }

    #[test]
    fn credentials_come_from_the_url_and_stay_hidden() {
        let u: BrokerUrl = "mqtts://bee:s%40cret%3A1@h:1".parse().unwrap();
        assert_eq!(u.username.as_deref(), Some("bee"));
        assert_eq!(u.password.as_deref(), Some("s@cret:1"));
        assert!(!format!("{u:?} {u}").contains("cret"));
        let u: BrokerUrl = "mqtt://only@h".parse().unwrap();
        assert_eq!((u.username.as_deref(), u.password), (Some("only"), None));
    }

    #[test]
    fn bad_urls_say_why_without_the_password() {
        for (url, why) in [
            ("http://h", "scheme"),
            ("mqtt://", "no host"),
            ("mqtt://h:0", "port"),
            ("mqtt://h:99999", "port"),
            ("mqtt://h:x", "port"),
            ("mqtt://h/topic", "path"),
            ("mqtt://h?x=1", "path"),
            ("mqtt://[::1", "bracket"),
            ("mqtt://[::1]x", ":port"),
            ("mqtt://u:%zz@h", "percent"),
            ("mqtt://u:secret@h:bad", "port"),
        ] {
            let e = url.parse::<BrokerUrl>().unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
            assert!(!e.contains("secret"), "{url}: {e}");
        }
    }

    #[test]
    fn topics_are_checked() {
        assert!(MqttConfig::new("mqtt://h", "a/b").is_err());
        assert!(MqttConfig::new("mqtt://h", "").is_err());
        assert!(MqttConfig::new("mqtt://h", "a+").is_err());
        let mut c = MqttConfig::new("mqtt://h", "hall").unwrap();
        c.prefix = "site/beets".into();
        assert_eq!(c.space_topic(), "site/beets/hall");
        assert!(c.validate().is_ok());
        for bad in ["", "/x", "x/", "a//b", "a/#", "+"] {
            c.prefix = bad.into();
            assert!(c.validate().is_err(), "{bad}");
        }
        let c = MqttConfig::new("mqtt://:pw@h", "s");
        assert!(c.is_err());
    }
}
