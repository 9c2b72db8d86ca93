//! The UDP datagram envelope (spec wire-v1 §7, paper §4).
//!
//! ```text
//!  0      2     3          7          11
//! +------+-----+----------+----------+------------------------+
//! | BE 75| ver |  node id |   seq    |  message (≤ 1221 B)    |
//! +------+-----+----------+----------+------------------------+
//!  magic  0x01  u32 BE,    u32 BE,     spec §4, encrypted if E
//!               random,    per node,
//!               non-zero   +1 per new message
//! ```
//!
//! One message per datagram, at most [`MAX_DATAGRAM_LEN`] bytes (the IPv6 minimum MTU less
//! headers), so it is never fragmented. The node id changes at every start, so a restarted node's
//! sequence numbers never collide with the keys receivers remember (spec §8).
//!
//! ```
//! use beets_core::udp::{self, DatagramHeader, NodeId};
//! use beets_core::Message;
//! let msg: Message = Message::Rd("(\"SENSOR\", ?)".parse().unwrap());
//! let header = DatagramHeader { node_id: NodeId::new(7).unwrap(), seq: 1 };
//! let bytes = udp::encode(&header, &msg, None)?;
//! let (h, decoded) = udp::decode(&bytes, None)?;
//! assert_eq!((h, decoded.message), (header, msg));
//! # Ok::<(), udp::DatagramError>(())
//! ```

use std::fmt;
use std::num::NonZeroU32;

use crate::fpe::FpeKey;
use crate::message::{DecodeError, Decoded, Message};

/// First two bytes of every BeeTS datagram (spec §7).
pub const MAGIC: [u8; 2] = [0xbe, 0x75];
/// Envelope version, byte 2 (spec §7).
pub const ENVELOPE_VERSION: u8 = 1;
/// Header bytes before the message: magic, version, node id, seq (spec §7).
pub const HEADER_LEN: usize = 11;
/// Largest datagram: 1232 bytes (IPv6 minimum MTU 1280 less 40 + 8 bytes of headers; spec §7).
pub const MAX_DATAGRAM_LEN: usize = 1232;
/// Largest message a datagram carries: 1221 bytes (spec §7).
pub const MAX_MESSAGE_LEN: usize = MAX_DATAGRAM_LEN - HEADER_LEN;
/// Default UDP port, 49737 (spec §7).
pub const DEFAULT_PORT: u16 = 49737;

/// A node's random, non-zero 32-bit identity for one run (spec §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(NonZeroU32);

impl NodeId {
    /// The id `v`, `None` for 0.
    pub const fn new(v: u32) -> Option<NodeId> {
        match NonZeroU32::new(v) {
            Some(n) => Some(NodeId(n)),
            None => None,
        }
    }

    /// The id as a number.
    pub const fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// The envelope fields of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DatagramHeader {
    /// The sending node.
    pub node_id: NodeId,
    /// The sender's message sequence number; a deliberate repeat reuses it.
    pub seq: u32,
}

impl DatagramHeader {
    /// Writes the 11 header bytes.
    pub fn emit(&self, buf: &mut [u8; HEADER_LEN]) {
        buf[..2].copy_from_slice(&MAGIC);
        buf[2] = ENVELOPE_VERSION;
        buf[3..7].copy_from_slice(&self.node_id.get().to_be_bytes());
        buf[7..11].copy_from_slice(&self.seq.to_be_bytes());
    }
}

/// Why a datagram was dropped (spec §7).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// Shorter than the 11-byte header.
    #[error("datagram of {len} bytes is shorter than the {min}-byte header")]
    TooShort {
        /// Datagram length.
        len: usize,
        /// [`HEADER_LEN`].
        min: usize,
    },
    /// Longer than 1232 bytes.
    #[error("datagram of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Datagram length.
        len: usize,
        /// [`MAX_DATAGRAM_LEN`].
        max: usize,
    },
    /// Not `BE 75`: not a BeeTS datagram.
    #[error("bad magic {found:02x?}, BeeTS datagrams start with be 75")]
    BadMagic {
        /// The first two bytes.
        found: [u8; 2],
    },
    /// Envelope version other than 1.
    #[error("envelope version {found}, this node speaks version 1")]
    BadEnvelopeVersion {
        /// The version byte.
        found: u8,
    },
    /// Node id 0.
    #[error("node id 0 is invalid")]
    ZeroNodeId,
    /// The message is invalid.
    #[error("datagram message: {0}")]
    Message(#[from] DecodeError),
    /// The caller's buffer is shorter than the datagram [`emit`] was asked to write (a sending
    /// error; the datagram itself is within the limits).
    #[error("datagram needs {needed} bytes, the buffer holds {available}")]
    BufferTooSmall {
        /// The datagram's length.
        needed: usize,
        /// The buffer's length.
        available: usize,
    },
}

/// Checks the envelope and splits a datagram into header and (still encoded) message.
///
/// # Errors
/// [`DatagramError`] for a short or long datagram, wrong magic, envelope version ≠ 1, node id 0.
pub fn parse_header(bytes: &[u8]) -> Result<(DatagramHeader, &[u8]), DatagramError> {
    if bytes.len() > MAX_DATAGRAM_LEN {
        return Err(DatagramError::TooLong {
            len: bytes.len(),
            max: MAX_DATAGRAM_LEN,
        });
    }
    let Some((header, message)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(DatagramError::TooShort {
            len: bytes.len(),
            min: HEADER_LEN,
        });
    };
    let magic = [header[0], header[1]];
    if magic != MAGIC {
        return Err(DatagramError::BadMagic { found: magic });
    }
    if header[2] != ENVELOPE_VERSION {
        return Err(DatagramError::BadEnvelopeVersion { found: header[2] });
    }
    let id = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
    let node_id = NodeId::new(id).ok_or(DatagramError::ZeroNodeId)?;
    let seq = u32::from_be_bytes([header[7], header[8], header[9], header[10]]);
    Ok((DatagramHeader { node_id, seq }, message))
}

/// Decodes a whole datagram: envelope, then the message with `key` for E = 1.
///
/// # Errors
/// See [`parse_header`]; [`DatagramError::Message`] when the message fails spec §4.
pub fn decode(
    bytes: &[u8],
    key: Option<&FpeKey>,
) -> Result<(DatagramHeader, Decoded), DatagramError> {
    let (header, message) = parse_header(bytes)?;
    Ok((header, Message::parse(message, key)?))
}

/// Writes header and message into `buf`, returning the datagram length.
///
/// # Errors
/// [`DatagramError::Message`] with [`DecodeError::TooLong`] when the message exceeds
/// [`MAX_MESSAGE_LEN`]; [`DatagramError::BufferTooSmall`] when `buf` is too small for the
/// datagram (nothing is written then).
pub fn emit(
    header: &DatagramHeader,
    message: &Message,
    key: Option<&FpeKey>,
    buf: &mut [u8],
) -> Result<usize, DatagramError> {
    let len = message.check_len(MAX_MESSAGE_LEN, "a UDP datagram")?;
    let total = HEADER_LEN + len;
    let Some(buf) = buf.get_mut(..total) else {
        return Err(DatagramError::BufferTooSmall {
            needed: total,
            available: buf.len(),
        });
    };
    let (head, body) = buf.split_at_mut(HEADER_LEN);
    header.emit(head.try_into().expect("HEADER_LEN bytes"));
    message.emit(body, key).expect("body sized by buffer_len");
    Ok(total)
}

/// The datagram as a new vector (see [`emit`]).
///
/// # Errors
/// [`DatagramError::Message`] when the message exceeds [`MAX_MESSAGE_LEN`].
pub fn encode(
    header: &DatagramHeader,
    message: &Message,
    key: Option<&FpeKey>,
) -> Result<Vec<u8>, DatagramError> {
    let mut buf = vec![0; HEADER_LEN + message.buffer_len()];
    let n = emit(header, message, key, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::tests::arb_message;
    use crate::text::parse_tuple;
    use proptest::prelude::*;

    fn header() -> DatagramHeader {
        DatagramHeader {
            node_id: NodeId::new(0x0102_0304).unwrap(),
            seq: 0xa0b0_c0d0,
        }
    }

    fn notify() -> Message {
        Message::Tuple {
            tuple: parse_tuple("(1)").unwrap(),
            reply: false,
        }
    }

    #[test]
    fn test_emit_datagram() {
        let bytes = encode(&header(), &notify(), None).unwrap();
        assert_eq!(
            bytes,
            [
                0xbe, 0x75, 0x01, 1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0, 0x68, 0x40, 0x00, 0x01
            ]
        );
        assert_eq!(
            decode(&bytes, None).unwrap(),
            (
                header(),
                Decoded {
                    message: notify(),
                    encrypted: false
                }
            )
        );
    }

    #[test]
    fn emit_into_a_short_buffer_says_so() {
        let mut buf = [0u8; 12];
        let needed = encode(&header(), &notify(), None).unwrap().len();
        assert_eq!(
            emit(&header(), &notify(), None, &mut buf),
            Err(DatagramError::BufferTooSmall {
                needed,
                available: 12
            })
        );
        assert_eq!(buf, [0; 12], "nothing written");
    }

    #[test]
    fn decode_rejects_short_datagram() {
        assert_eq!(
            decode(&[0xbe, 0x75, 1], None),
            Err(DatagramError::TooShort { len: 3, min: 11 })
        );
    }

    #[test]
    fn decode_rejects_long_datagram() {
        let mut bytes = encode(&header(), &notify(), None).unwrap();
        bytes.resize(1233, 0);
        assert_eq!(
            decode(&bytes, None),
            Err(DatagramError::TooLong {
                len: 1233,
                max: 1232
            })
        );
    }

    #[test]
    fn decode_rejects_bad_magic() {
        let mut bytes = encode(&header(), &notify(), None).unwrap();
        bytes[1] = 0x76;
        assert_eq!(
            decode(&bytes, None),
            Err(DatagramError::BadMagic {
                found: [0xbe, 0x76]
            })
        );
    }

    #[test]
    fn decode_rejects_envelope_version() {
        let mut bytes = encode(&header(), &notify(), None).unwrap();
        bytes[2] = 2;
        assert_eq!(
            decode(&bytes, None),
            Err(DatagramError::BadEnvelopeVersion { found: 2 })
        );
    }

    #[test]
    fn decode_rejects_zero_node_id() {
        let mut bytes = encode(&header(), &notify(), None).unwrap();
        bytes[3..7].fill(0);
        assert_eq!(decode(&bytes, None), Err(DatagramError::ZeroNodeId));
    }

    #[test]
    fn decode_rejects_bad_message() {
        let mut bytes = encode(&header(), &notify(), None).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode(&bytes, None),
            Err(DatagramError::Message(DecodeError::TrailingBytes { .. }))
        ));
        // Header only: an empty message.
        assert!(matches!(
            decode(&bytes[..HEADER_LEN], None),
            Err(DatagramError::Message(DecodeError::Truncated { .. }))
        ));
    }

    #[test]
    fn emit_rejects_message_over_1221_bytes() {
        let big = Message::Tuple {
            tuple: crate::Tuple::new([
                crate::Value::Bytes(vec![0; 1000]),
                crate::Value::Bytes(vec![0; 300]),
            ])
            .unwrap(),
            reply: false,
        };
        let err = encode(&header(), &big, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "datagram message: message of 1306 bytes is too long for a UDP datagram (at most 1221)"
        );
    }

    proptest! {
        #[test]
        fn datagram_round_trips(msg in arb_message(), id in 1u32.., seq in any::<u32>(), keyed in any::<bool>()) {
            let key = keyed.then(|| FpeKey::from_password("udp"));
            let h = DatagramHeader { node_id: NodeId::new(id).unwrap(), seq };
            let bytes = encode(&h, &msg, key.as_ref()).unwrap();
            let (h2, d) = decode(&bytes, key.as_ref()).unwrap();
            prop_assert_eq!(h2, h);
            prop_assert_eq!(d.message.to_bytes(key.as_ref()), bytes[HEADER_LEN..].to_vec());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes, None);
        }
    }
}
