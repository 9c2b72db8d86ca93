//! One MQTT connection (rumqttc, 3.1.1 or 5): its task, its state and counters, raw publishes
//! and routed incoming payloads. The space, the gateway and the JSON mirror each own one.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::TryRng;
use rumqttc::v5;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::{MqttConfig, Protocol, Qos};
use crate::error::{ConfigError, MqttError};
use crate::tls;

/// The connection's state, as [`MqttStats::state`] and the wait functions see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connecting for the first time, or connected but the subscription not yet acknowledged.
    #[default]
    Connecting,
    /// Connected and subscribed: datagrams flow both ways.
    Connected,
    /// The connection was lost or could not be made; reconnecting with back-off. Datagrams sent
    /// meanwhile are dropped and counted.
    Disconnected,
    /// The broker refused the connection (credentials, authorisation, client id); still
    /// retrying with back-off, in case the broker's configuration changes.
    Refused,
    /// Closed by the application.
    Closed,
}

/// Counters and state of one MQTT connection. All counts since the connection was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MqttStats {
    /// The state now.
    pub state: ConnectionState,
    /// Successful connections (CONNACK accepted), the first included.
    pub connects: u64,
    /// Successful connections after the first: recoveries from outages.
    pub reconnects: u64,
    /// Connected periods that ended by an error (broker gone, keep-alive timeout…).
    pub disconnects: u64,
    /// Connection errors, each followed by a back-off (refused, unreachable, TLS, timeouts).
    pub connection_errors: u64,
    /// Publishes handed to the connection.
    pub published: u64,
    /// Publishes dropped: the broker was unreachable, or the queue was full.
    pub publish_dropped: u64,
    /// Payloads received on subscribed topics.
    pub received: u64,
    /// Received payloads dropped because the consumer's queue was full.
    pub receive_dropped: u64,
    /// The latest connection error, for logs and dashboards.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    connects: AtomicU64,
    disconnects: AtomicU64,
    connection_errors: AtomicU64,
    published: AtomicU64,
    publish_dropped: AtomicU64,
    received: AtomicU64,
    receive_dropped: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// State shared by the connection task and its users.
#[derive(Debug)]
pub(crate) struct Shared {
    counters: Counters,
    state: watch::Sender<ConnectionState>,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn set_state(&self, s: ConnectionState) {
        self.state.send_if_modified(|old| {
            let changed = *old != s;
            *old = s;
            changed
        });
    }

    fn set_error(&self, e: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e);
        }
    }

    pub(crate) fn stats(&self) -> MqttStats {
        let c = &self.counters;
        let connects = c.connects.load(Ordering::Relaxed);
        MqttStats {
            state: *self.state.borrow(),
            connects,
            reconnects: connects.saturating_sub(1),
            disconnects: c.disconnects.load(Ordering::Relaxed),
            connection_errors: c.connection_errors.load(Ordering::Relaxed),
            published: c.published.load(Ordering::Relaxed),
            publish_dropped: c.publish_dropped.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            receive_dropped: c.receive_dropped.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|l| l.clone()),
        }
    }

    /// Waits until the state is [`ConnectionState::Connected`], at most `timeout`.
    pub(crate) async fn wait_connected(&self, timeout: Duration) -> Result<(), MqttError> {
        let start = Instant::now();
        let mut rx = self.state.subscribe();
        let result = tokio::time::timeout(timeout, async {
            loop {
                let state = *rx.borrow_and_update();
                match state {
                    ConnectionState::Connected => return Ok(()),
                    ConnectionState::Refused => {
                        let why = self.stats().last_error.unwrap_or_default();
                        return Err(MqttError::Refused(why));
                    }
                    ConnectionState::Closed => return Err(MqttError::Closed),
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    return Err(MqttError::Closed);
                }
            }
        })
        .await;
        result.unwrap_or_else(|_| {
            Err(MqttError::NotConnected {
                waited_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
                last_error: self.stats().last_error.unwrap_or_else(|| "none".into()),
            })
        })
    }

    /// A receiver of state changes.
    pub(crate) fn watch(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }
}

/// Where the payloads of one subscribed topic go.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) topic: String,
    pub(crate) tx: mpsc::Sender<Bytes>,
}

#[derive(Clone, Debug)]
enum Client {
    V4(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

/// Why a publish was not handed to the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    #[error("broker not connected; datagram dropped")]
    Disconnected,
    #[error("MQTT send queue full; datagram dropped")]
    Full,
    #[error("MQTT connection closed")]
    Closed,
}

impl From<PublishError> for io::Error {
    fn from(e: PublishError) -> io::Error {
        let kind = match e {
            PublishError::Disconnected => io::ErrorKind::NotConnected,
            PublishError::Full => io::ErrorKind::WouldBlock,
            PublishError::Closed => io::ErrorKind::BrokenPipe,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// One MQTT connection: a client handle and the task that drives rumqttc's event loop.
#[derive(Debug)]
pub(crate) struct Link {
    client: Client,
    qos: Qos,
    pub(crate) shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    pub(crate) client_id: String,
}

impl Link {
    /// Starts a connection to `config`'s broker subscribed to each route's topic. `role` names
    /// it in logs and in the generated client id.
    pub(crate) fn start(
        config: &MqttConfig,
        role: &str,
        routes: Vec<Route>,
    ) -> Result<Link, MqttError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other("an MQTT connection needs a tokio runtime").into());
        }
        config.validate()?;
        let client_id = match &config.client_id {
            Some(id) => id.clone(),
            None => {
                let n = rand::rngs::SysRng
                    .try_next_u64()
                    .map_err(|e| io::Error::other(format!("no OS randomness: {e}")))?;
                format!("beets-{role}-{n:016x}")
            }
        };
        let transport = if config.broker.tls {
            Some(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls::client_config(&config.tls)?),
            ))
        } else {
            None
        };
        let cap = config.queue;
        let (state, _) = watch::channel(ConnectionState::Connecting);
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            state,
            last_error: Mutex::new(None),
        });
        let (stop, stop_rx) = watch::channel(false);
        let span = info_span!("beets_mqtt", role, client = %client_id, broker = %config.broker);
        let timeout = config.connect_timeout.as_secs().max(1);
        let (host, port) = (config.broker.host.clone(), config.broker.port);
        let backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
        let (client, task) = match config.protocol {
            Protocol::V311 => {
                let mut o = rumqttc::MqttOptions::new(client_id.clone(), host, port);
                o.set_keep_alive(config.keep_alive)
                    .set_clean_session(config.persistent_session.is_none())
                    .set_request_channel_capacity(cap);
                if let Some(t) = transport {
                    o.set_transport(t);
                }
                if let Some(user) = &config.broker.username {
                    o.set_credentials(user, config.broker.password.as_deref().unwrap_or(""));
                }
                let (client, mut el) = rumqttc::AsyncClient::new(o, cap);
                let mut net = rumqttc::NetworkOptions::new();
                net.set_connection_timeout(timeout);
                el.set_network_options(net);
                let filters: Vec<_> = routes
                    .iter()
                    .map(|r| rumqttc::SubscribeFilter::new(r.topic.clone(), qos_v4(config.qos)))
                    .collect();
                let ctx = Task {
                    shared: Arc::clone(&shared),
                    routes,
                    backoff,
                    stop: stop_rx,
                };
                let task = tokio::spawn(run_v4(el, client.clone(), filters, ctx).instrument(span));
                (Client::V4(client), task)
            }
            Protocol::V5 => {
                let mut o = v5::MqttOptions::new(client_id.clone(), host, port);
                o.set_keep_alive(config.keep_alive)
                    .set_clean_start(config.persistent_session.is_none())
                    .set_request_channel_capacity(cap)
                    .set_connection_timeout(timeout);
                if let Some(expiry) = config.persistent_session {
                    let secs = u32::try_from(expiry.as_secs()).unwrap_or(u32::MAX);
                    o.set_session_expiry_interval(Some(secs));
                }
                if let Some(t) = transport {
                    o.set_transport(t);
                }
                if let Some(user) = &config.broker.username {
                    o.set_credentials(user, config.broker.password.as_deref().unwrap_or(""));
                }
                let (client, el) = v5::AsyncClient::new(o, cap);
                let filters: Vec<_> = routes
                    .iter()
                    .map(|r| {
                        let mut f =
                            v5::mqttbytes::v5::Filter::new(r.topic.clone(), qos_v5(config.qos));
                        // The broker does not echo our own datagrams (the engine would drop them).
                        f.nolocal = true;
                        f
                    })
                    .collect();
                let ctx = Task {
                    shared: Arc::clone(&shared),
                    routes,
                    backoff,
                    stop: stop_rx,
                };
                let task = tokio::spawn(run_v5(el, client.clone(), filters, ctx).instrument(span));
                (Client::V5(client), task)
            }
        };
        Ok(Link {
            client,
            qos: config.qos,
            shared,
            stop,
            task: Mutex::new(Some(task)),
            client_id,
        })
    }

    /// Hands a publish to the connection without waiting. `expiry`: MQTT 5 message expiry
    /// interval in seconds (ignored on 3.1.1).
    pub(crate) fn try_publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        expiry: Option<u32>,
    ) -> Result<(), PublishError> {
        let counters = &self.shared.counters;
        let state = *self.shared.state.borrow();
        let result = match state {
            ConnectionState::Disconnected | ConnectionState::Refused => {
                Err(PublishError::Disconnected)
            }
            ConnectionState::Closed => Err(PublishError::Closed),
            ConnectionState::Connecting | ConnectionState::Connected => match &self.client {
                Client::V4(c) => c
                    .try_publish(topic, qos_v4(self.qos), false, payload)
                    .map_err(|_| PublishError::Full),
                Client::V5(c) => {
                    let props = v5::mqttbytes::v5::PublishProperties {
                        message_expiry_interval: expiry,
                        ..Default::default()
                    };
                    c.try_publish_with_properties(
                        topic,
                        qos_v5(self.qos),
                        false,
                        Bytes::from(payload),
                        props,
                    )
                    .map_err(|_| PublishError::Full)
                }
            },
        };
        match &result {
            Ok(()) => add(&counters.published, 1),
            Err(PublishError::Closed) => {}
            Err(_) => add(&counters.publish_dropped, 1),
        }
        result
    }

    /// The counters and state now.
    pub(crate) fn stats(&self) -> MqttStats {
        self.shared.stats()
    }

    /// Disconnects from the broker (politely, within 1 s) and ends the task.
    pub(crate) async fn close(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn qos_v4(q: Qos) -> rumqttc::QoS {
    match q {
        Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
        Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
    }
}

fn qos_v5(q: Qos) -> v5::mqttbytes::QoS {
    match q {
        Qos::AtMostOnce => v5::mqttbytes::QoS::AtMostOnce,
        Qos::AtLeastOnce => v5::mqttbytes::QoS::AtLeastOnce,
    }
}

/// Exponential back-off between reconnection attempts.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn take(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}

/// What both event-loop tasks share.
struct Task {
    shared: Arc<Shared>,
    routes: Vec<Route>,
    backoff: Backoff,
    stop: watch::Receiver<bool>,
}

impl Task {
    fn connected(&mut self, session_present: bool) {
        add(&self.shared.counters.connects, 1);
        self.backoff.reset();
        // Datagrams may be queued again; `Connected` comes with the subscription's SUBACK.
        self.shared.set_state(ConnectionState::Connecting);
        info!(session_present, "connected to the broker; subscribing");
    }

    fn subscribed(&self, failures: usize) {
        if failures > 0 {
            warn!(
                failures,
                "the broker refused a subscription; nothing arrives on it"
            );
            self.shared
                .set_error(format!("{failures} subscription(s) refused by the broker"));
        }
        self.shared.set_state(ConnectionState::Connected);
        debug!("subscribed");
    }

    fn incoming(&self, topic: &[u8], payload: Bytes) {
        let counters = &self.shared.counters;
        if let Some(r) = self.routes.iter().find(|r| r.topic.as_bytes() == topic) {
            add(&counters.received, 1);
            if r.tx.try_send(payload).is_err() {
                add(&counters.receive_dropped, 1);
            }
        }
    }

    /// Records a connection error and waits the back-off; `false` when stopped meanwhile.
    async fn failed(&mut self, error: String, refused: bool) -> bool {
        let s = &self.shared;
        add(&s.counters.connection_errors, 1);
        let was = *s.state.borrow();
        if was == ConnectionState::Connected {
            add(&s.counters.disconnects, 1);
        }
        let pause = self.backoff.take();
        warn!(%error, refused, retry_in_ms = pause.as_millis() as u64, "MQTT connection down");
        s.set_error(error);
        s.set_state(if refused {
            ConnectionState::Refused
        } else {
            ConnectionState::Disconnected
        });
        tokio::select! {
            () = tokio::time::sleep(pause) => true,
            () = stopped(&mut self.stop) => false,
        }
    }

    fn closed(&self) {
        self.shared.set_state(ConnectionState::Closed);
        debug!("MQTT connection closed");
    }
}

/// Resolves once `stop` is set (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Polls `el` after a disconnect request until the DISCONNECT is out (at most 1 s).
macro_rules! drain_disconnect {
    ($el:expr, $($outgoing:tt)+) => {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match $el.poll().await {
                    Ok(ev) if matches!(ev, $($outgoing)+) => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        })
        .await;
    };
}

async fn run_v4(
    mut el: rumqttc::EventLoop,
    client: rumqttc::AsyncClient,
    filters: Vec<rumqttc::SubscribeFilter>,
    mut t: Task,
) {
    use rumqttc::{ConnectionError, Event, Packet, SubscribeReasonCode};
    loop {
        let ev = tokio::select! {
            ev = el.poll() => ev,
            () = stopped(&mut t.stop) => break,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                t.connected(ack.session_present);
                if !filters.is_empty() && client.try_subscribe_many(filters.clone()).is_err() {
                    warn!("could not queue the subscription");
                } else if filters.is_empty() {
                    t.subscribed(0);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let failures = ack
                    .return_codes
                    .iter()
                    .filter(|c| matches!(c, SubscribeReasonCode::Failure))
                    .count();
                t.subscribed(failures);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => t.incoming(p.topic.as_bytes(), p.payload),
            Ok(_) => {}
            Err(e) => {
                let refused = matches!(e, ConnectionError::ConnectionRefused(_));
                if !t.failed(e.to_string(), refused).await {
                    break;
                }
            }
        }
    }
    if client.try_disconnect().is_ok() {
        drain_disconnect!(el, Event::Outgoing(rumqttc::Outgoing::Disconnect));
    }
    t.closed();
}

async fn run_v5(
    mut el: v5::EventLoop,
    client: v5::AsyncClient,
    filters: Vec<v5::mqttbytes::v5::Filter>,
    mut t: Task,
) {
    use v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
    use v5::{ConnectionError, Event};
    loop {
        let ev = tokio::select! {
            ev = el.poll() => ev,
            () = stopped(&mut t.stop) => break,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                t.connected(ack.session_present);
                if !filters.is_empty() && client.try_subscribe_many(filters.clone()).is_err() {
                    warn!("could not queue the subscription");
                } else if filters.is_empty() {
                    t.subscribed(0);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let failures = ack
                    .return_codes
                    .iter()
                    .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                    .count();
                t.subscribed(failures);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => t.incoming(&p.topic, p.payload),
            Ok(_) => {}
            Err(e) => {
                let refused = matches!(e, ConnectionError::ConnectionRefused(_));
                if !t.failed(e.to_string(), refused).await {
                    break;
                }
            }
        }
    }
    if client.try_disconnect().is_ok() {
        drain_disconnect!(el, Event::Outgoing(rumqttc::Outgoing::Disconnect));
    }
    t.closed();
}

/// A TLS error while loading files, as a [`ConfigError`].
pub(crate) fn tls_error(what: &str, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Tls(format!("{what}: {e}"))
}
