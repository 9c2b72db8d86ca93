//! Errors of this crate.

use std::io;

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The broker URL is not `mqtt://…` or `mqtts://…` (the password is never shown).
    #[error("broker URL {url}: {why}")]
    Url {
        /// The URL, password replaced by `…`.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// A topic prefix or space name that cannot be used in a topic.
    #[error("topic part {what:?}: {why}")]
    Topic {
        /// The prefix or space name.
        what: String,
        /// What is wrong.
        why: String,
    },
    /// Another setting out of range.
    #[error("MQTT config: {0}")]
    Invalid(String),
    /// The TLS settings cannot be loaded (CA file, client certificate or key).
    #[error("TLS: {0}")]
    Tls(String),
}

/// Why a space, gateway or mirror could not start, or a wait for the broker failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqttError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A socket (the gateway's UDP side) could not be set up, or no tokio runtime.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The broker refused the connection (bad credentials, not authorised, bad client id…).
    /// The client keeps retrying with back-off; this is what [`wait_connected`] reports.
    ///
    /// [`wait_connected`]: crate::MqttSpace::wait_connected
    #[error("broker refused the connection: {0}")]
    Refused(String),
    /// The broker was not reached in time; `last_error` is the latest connection error seen
    /// (e.g. a TLS certificate the CA does not vouch for, connection refused by the host).
    #[error("broker not connected after {waited_ms} ms (last error: {last_error})")]
    NotConnected {
        /// How long was waited, in milliseconds.
        waited_ms: u64,
        /// The latest connection error, or "none".
        last_error: String,
    },
    /// The connection task has stopped (closed).
    #[error("MQTT connection closed")]
    Closed,
}
