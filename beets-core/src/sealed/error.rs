//! The errors of sealing and opening (spec §12 "Receiving" names one reason per drop).

use std::num::NonZeroU16;

use super::ReplayError;
#[allow(unused_imports)] // named in doc links
use super::{Opened, SealKey};
use crate::message::{DecodeError, Flag, Op};
#[allow(unused_imports)] // named in doc links
use crate::message::{MIN_MESSAGE_LEN, Message};

/// Why [`SealKey::seal`] refused its input. Nothing was written and no counter was spent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The input is not a version-1 message: seal takes the bytes [`Message::emit`] writes.
    #[error(
        "not a version-1 message (version bits {version:#04b}): seal takes the plain bytes Message::emit writes"
    )]
    NotV1 {
        /// The version bits found (2 = already sealed).
        version: u8,
    },
    /// The input has E = 1: a sealed space does not use FPE; emit the message without a key.
    #[error("the message has E = 1 (FPE): seal takes a plain message, emitted without an FPE key")]
    Encrypted,
    /// Op code 0.
    #[error("bad op code 0 in control byte {control:#04x} (valid ops are 1..=7)")]
    BadOp {
        /// The control byte.
        control: u8,
    },
    /// R or L set on an op that does not allow it (spec §4).
    #[error("flag {flag} is not allowed on {op}")]
    FlagNotAllowed {
        /// The flag.
        flag: Flag,
        /// The op.
        op: Op,
    },
    /// Shorter than the smallest version-1 message.
    #[error("message of {len} bytes is shorter than the smallest message ({min} bytes)")]
    TooShort {
        /// Message length.
        len: usize,
        /// [`MIN_MESSAGE_LEN`].
        min: usize,
    },
    /// The body does not fit a sealed message on this transport.
    #[error(
        "sealed message needs {sealed_len} bytes (a body of {body_len}), {transport} carries {max_len} (a sealed body of at most {max_body_len})"
    )]
    TooLong {
        /// Body length (the plain message less its control byte).
        body_len: usize,
        /// The transport's largest sealed body (20 on BLE, 1206 on UDP).
        max_body_len: usize,
        /// Length the sealed message would have.
        sealed_len: usize,
        /// The transport's largest message (31 on BLE, 1221 on UDP).
        max_len: usize,
        /// The transport's name.
        transport: &'static str,
    },
    /// The output buffer is too small.
    #[error("buffer of {available} bytes is too small, the sealed message needs {needed}")]
    BufferTooSmall {
        /// Bytes the sealed message needs.
        needed: usize,
        /// Bytes in the buffer.
        available: usize,
    },
}

/// Why a received sealed message was dropped, one variant per reason of spec §12 "Receiving"
/// (and [`OpenError::reason`] names it as the spec counts it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Step 1: fewer than 7 + 2 + M bytes.
    #[error("sealed message of {len} bytes is too short (at least {min} on this transport)")]
    TooShort {
        /// Message length.
        len: usize,
        /// 13 on BLE, 17 on UDP.
        min: usize,
    },
    /// Step 1: more bytes than the transport carries.
    #[error("sealed message of {len} bytes is too long for {transport} (at most {max})")]
    TooLong {
        /// Message length.
        len: usize,
        /// 31 on BLE, 1221 on UDP.
        max: usize,
        /// The transport's name.
        transport: &'static str,
    },
    /// Version bits `01`: a plain or FPE message, dropped by a sealed space as "not sealed".
    #[error("not sealed: a version-1 message (plain or FPE) in a sealed space")]
    NotSealed,
    /// Version bits `00` or `11` (spec §4: reserved).
    #[error("unknown version {version:#04b} (sealed is 0b10)")]
    UnknownVersion {
        /// The version bits.
        version: u8,
    },
    /// Step 1: op code 0.
    #[error("bad op code 0 in control byte {control:#04x} (valid ops are 1..=7)")]
    BadOp {
        /// The control byte.
        control: u8,
    },
    /// Step 1: E = 1 (invalid on a sealed message).
    #[error("E set: control byte {control:#04x} has E = 1, invalid on a sealed message")]
    ESet {
        /// The control byte.
        control: u8,
    },
    /// Step 1: R or L set on an op that does not allow it.
    #[error("flag {flag} is not allowed on {op}")]
    FlagNotAllowed {
        /// The flag.
        flag: Flag,
        /// The op.
        op: Op,
    },
    /// Step 2: the MIC does not match: another key, another transport, or a forged or damaged
    /// message.
    #[error("bad MIC: not sealed with this space's key on this transport, or altered")]
    BadMic,
    /// Step 2: an authentic message with source id 0 (only a key holder can send one).
    #[error("bad source id 0 in an authentic message (source ids are 1..=65535)")]
    BadSourceId,
    /// Step 3: the counter is already marked in the source's window (a repeat or a replay).
    #[error("duplicate: counter {counter} of source id {source_id} was already accepted")]
    Duplicate {
        /// The source id.
        source_id: NonZeroU16,
        /// The counter.
        counter: u32,
    },
    /// Step 3: the counter is below the source's window.
    #[error(
        "replay: counter {counter} of source id {source_id} is below its window (lowest {lowest})"
    )]
    Replay {
        /// The source id.
        source_id: NonZeroU16,
        /// The counter.
        counter: u32,
        /// The lowest counter the window still tracks.
        lowest: u32,
    },
    /// Step 4: the decrypted body is not a valid version-1 body. Its counter stays used up.
    #[error("decrypted body does not parse: {0}")]
    Parse(DecodeError),
    /// The output buffer given to [`SealKey::open`] is too small.
    #[error("buffer of {available} bytes is too small, the opened message needs {needed}")]
    BufferTooSmall {
        /// Bytes the opened message needs.
        needed: usize,
        /// Bytes in the buffer.
        available: usize,
    },
}

impl OpenError {
    /// The reason as spec §12 counts it: `"too short"`, `"too long"`, `"not sealed"`,
    /// `"unknown version"`, `"bad op"`, `"E set"`, `"flag not allowed"`, `"bad MIC"`,
    /// `"bad source id"`, `"duplicate"`, `"replay"`, `"parse"` (step 4) or `"buffer too small"`
    /// (a caller's error, not the sender's).
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self {
            OpenError::TooShort { .. } => "too short",
            OpenError::TooLong { .. } => "too long",
            OpenError::NotSealed => "not sealed",
            OpenError::UnknownVersion { .. } => "unknown version",
            OpenError::BadOp { .. } => "bad op",
            OpenError::ESet { .. } => "E set",
            OpenError::FlagNotAllowed { .. } => "flag not allowed",
            OpenError::BadMic => "bad MIC",
            OpenError::BadSourceId => "bad source id",
            OpenError::Duplicate { .. } => "duplicate",
            OpenError::Replay { .. } => "replay",
            OpenError::Parse(_) => "parse",
            OpenError::BufferTooSmall { .. } => "buffer too small",
        }
    }

    /// The §12 receiving step that failed (1..=4), `None` for a version other than `10` and for
    /// [`OpenError::BufferTooSmall`].
    #[must_use]
    pub const fn step(&self) -> Option<u8> {
        match self {
            OpenError::TooShort { .. }
            | OpenError::TooLong { .. }
            | OpenError::BadOp { .. }
            | OpenError::ESet { .. }
            | OpenError::FlagNotAllowed { .. } => Some(1),
            OpenError::BadMic | OpenError::BadSourceId => Some(2),
            OpenError::Duplicate { .. } | OpenError::Replay { .. } => Some(3),
            OpenError::Parse(_) => Some(4),
            OpenError::NotSealed
            | OpenError::UnknownVersion { .. }
            | OpenError::BufferTooSmall { .. } => None,
        }
    }
}

impl From<ReplayError> for OpenError {
    fn from(e: ReplayError) -> OpenError {
        match e {
            ReplayError::Duplicate {
                source_id, counter, ..
            } => OpenError::Duplicate { source_id, counter },
            ReplayError::Replay {
                source_id,
                counter,
                lowest,
                ..
            } => OpenError::Replay {
                source_id,
                counter,
                lowest,
            },
        }
    }
}
