//! `beets encode|decode … --seal-key HEX32 | --seal-password PW`: sealed messages (spec §12).

use std::num::NonZeroU16;

use beets::core::sealed::SealKey;
use beets::core::{Message, Transport};
use clap::{Args, ValueEnum};

/// Options of a sealed message (spec §12).
#[derive(Args, Debug, Clone)]
pub(crate) struct SealArgs {
    /// Seal with this 16-byte key K as 32 hex digits (spec §12).
    #[arg(long, value_name = "HEX32", conflicts_with = "seal_password")]
    seal_key: Option<String>,
    /// Seal with K derived from this password (PBKDF2-HMAC-SHA256, spec §12).
    #[arg(long, value_name = "PW", allow_hyphen_values = true)]
    seal_password: Option<String>,
    /// The sender's source id, 1..=65535 (encode).
    #[arg(long, value_name = "N")]
    source_id: Option<u16>,
    /// The message counter, 0..=4294967294 (encode).
    #[arg(long, value_name = "N")]
    counter: Option<u32>,
    /// The transport the message is sealed for (its MIC length and nonce differ).
    #[arg(long, value_enum, default_value = "ble")]
    transport: TransportArg,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub(crate) enum TransportArg {
    Ble,
    Udp,
}

impl SealArgs {
    /// The key, when one was given.
    pub(crate) fn key(&self) -> Result<Option<SealKey>, String> {
        match (&self.seal_key, &self.seal_password) {
            (Some(hex), _) => SealKey::from_hex(hex)
                .map(Some)
                .map_err(|e| format!("--seal-key: {e}")),
            (None, Some(pw)) => Ok(Some(SealKey::from_password(pw))),
            (None, None) => Ok(None),
        }
    }

    fn transport(&self) -> Transport {
        match self.transport {
            TransportArg::Ble => Transport::Ble,
            TransportArg::Udp => Transport::Udp,
        }
    }

    /// The sealed message's hex.
    pub(crate) fn encode(&self, key: &SealKey, msg: &Message) -> Result<String, String> {
        let source = self
            .source_id
            .and_then(NonZeroU16::new)
            .ok_or("a sealed message needs --source-id 1..=65535")?;
        let counter = self.counter.ok_or("a sealed message needs --counter N")?;
        let plain = msg.to_bytes(None);
        let sealed = key
            .seal_to_vec(self.transport(), source, counter, &plain)
            .map_err(|e| e.to_string())?;
        Ok(hex::encode(sealed))
    }

    /// Source id, counter, op, flags and the tuple or template; or the §12 reason.
    pub(crate) fn decode(&self, key: &SealKey, bytes: &[u8]) -> Result<String, String> {
        let (opened, msg) = key
            .open_message(self.transport(), bytes)
            .map_err(|e| format!("refused ({}): {e}", e.reason()))?;
        let control = msg.control(false);
        let mut out = format!(
            "source id: {}\ncounter: {}\nop: {}\nflags: E=0 R={} L={}\n",
            opened.source_id(),
            opened.counter(),
            msg.op(),
            (control >> 1) & 1,
            control & 1
        );
        if let Some(t) = msg.tuple() {
            out += &format!("tuple: {t}");
        } else if let Some(t) = msg.template() {
            out += &format!("template: {t}");
        }
        Ok(out)
    }
}
