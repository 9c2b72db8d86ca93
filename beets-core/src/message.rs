//! The transport-independent BeeTS message (spec wire-v1 §1–§4), in the smoltcp style: a
//! [`Message`] representation with [`Message::parse`], [`Message::emit`] and
//! [`Message::buffer_len`].
//!
//! ```text
//!  byte 0 (never encrypted)        bytes 1.. (FPE-encrypted when E = 1)
//!  7 6 5 4 3 2 1 0
//! +---+-----+-+-+-+  +-----------+-----------+----------------+-----------------+
//! |VER| OP  |E|R|L|  | signature | [pattern] | values ...     | [lifetime, BE]  |
//! +---+-----+-+-+-+  +-----------+-----------+----------------+-----------------+
//!  VER = 01            OUT, TUPLE, IAMHERE: a tuple (§2), OUT then 2 bytes of lifetime if L
//!  OP 1..=7            RD, INP, TEST, WHERE: signature, pattern byte, actual values (§3),
//!                      RD, INP, TEST then 2 bytes of wait if L (§11)
//! ```
//!
//! A request that waits (L on RD, INP or TEST, spec §11) is [`Message::Waiting`]; `Message::Rd`,
//! `Message::Inp` and `Message::Test` are the same requests without a wait, so every message has
//! exactly one representation.
//!
//! The decoder reads the input once, never panics and never indexes out of bounds. What it
//! allocates is bounded by the input: strings of more than 24 bytes and byte strings it returns
//! (strings of up to 24 bytes live inline in their `CompactString`), and, for an encrypted
//! (E = 1) string of more than 64 bytes, one temporary decrypted copy (shorter ones are
//! decrypted on the stack). Every violation of a MUST in the spec is a distinct [`DecodeError`]
//! variant.
//!
//! ```
//! use beets_core::{Message, Tuple};
//! let tuple: Tuple = r#"("SENSOR", "LIGHT", 512, 1.5)"#.parse().unwrap();
//! let msg = Message::Out { tuple, lifetime: None };
//! let bytes = msg.to_bytes(None);
//! assert_eq!(bytes[..3], [0x48, 0xf6, 0x0c]);
//! let decoded = Message::parse(&bytes, None)?;
//! assert_eq!(decoded.message, msg);
//! assert!(!decoded.encrypted);
//! # Ok::<(), beets_core::DecodeError>(())
//! ```

use std::fmt;
use std::num::NonZeroU16;

use crate::fpe::FpeKey;
use crate::tuple::{Field, MAX_ARITY, Template, Tuple};
use crate::value::{CompactString, TypeCode, Value};

/// Protocol version carried in bits 7..6 of the control byte (spec §4).
pub const VERSION: u8 = 0b01;
/// Control byte: encrypted flag E (bit 2, spec §4).
pub const FLAG_E: u8 = 0b100;
/// Control byte: reply flag R (bit 1, spec §4).
pub const FLAG_R: u8 = 0b010;
/// Control byte: flag L (bit 0, spec §4): a lifetime on OUT, a wait on RD, INP, TEST (§11).
pub const FLAG_L: u8 = 0b001;
/// Smallest possible message: control, signature and an empty string (3 bytes; spec §1–§4).
pub const MIN_MESSAGE_LEN: usize = 3;

/// Operation code, bits 5..3 of the control byte (spec §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// 1: store a tuple in every space in range.
    Out = 1,
    /// 2: ask for a copy of a matching tuple.
    Rd = 2,
    /// 3: ask for a matching tuple to be removed and sent.
    Inp = 3,
    /// 4: ask whether a matching tuple exists (answered with a copy).
    Test = 4,
    /// 5: a tuple: a reply (R = 1) or a notification for listeners (R = 0).
    Tuple = 5,
    /// 6: a node's identity tuple: a presence announcement or a reply to WHERE.
    IAmHere = 6,
    /// 7: ask which nodes' identity tuples match a pattern.
    Where = 7,
}

impl Op {
    /// The op of a 3-bit code, `None` for 0.
    pub const fn from_code(code: u8) -> Option<Op> {
        Some(match code & 0b111 {
            1 => Op::Out,
            2 => Op::Rd,
            3 => Op::Inp,
            4 => Op::Test,
            5 => Op::Tuple,
            6 => Op::IAmHere,
            7 => Op::Where,
            _ => return None,
        })
    }

    /// The op's name as the spec writes it (`OUT`, `RD`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Op::Out => "OUT",
            Op::Rd => "RD",
            Op::Inp => "INP",
            Op::Test => "TEST",
            Op::Tuple => "TUPLE",
            Op::IAmHere => "IAMHERE",
            Op::Where => "WHERE",
        }
    }

    /// Whether the body is a pattern (RD, INP, TEST, WHERE) rather than a tuple.
    pub const fn carries_pattern(self) -> bool {
        matches!(self, Op::Rd | Op::Inp | Op::Test | Op::Where)
    }

    /// Whether the R flag is allowed (TUPLE, IAMHERE).
    pub const fn allows_reply(self) -> bool {
        matches!(self, Op::Tuple | Op::IAmHere)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Op {
    type Err = UnknownOp;
    /// Parses `OUT`, `RD`, `INP`, `TEST`, `TUPLE`, `IAMHERE`, `WHERE` (any case).
    fn from_str(s: &str) -> Result<Op, UnknownOp> {
        (1..=7)
            .filter_map(Op::from_code)
            .find(|op| op.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownOp(s.to_owned()))
    }
}

/// An op name that is not one of the seven of spec §4.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown op {0:?}: expected OUT, RD, INP, TEST, TUPLE, IAMHERE or WHERE")]
pub struct UnknownOp(pub String);

/// A flag of the control byte, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// R, the reply flag.
    Reply,
    /// L: the lifetime (OUT) or the wait (RD, INP, TEST; spec §11).
    Lifetime,
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flag::Reply => "R (reply)",
            Flag::Lifetime => "L (lifetime or wait)",
        })
    }
}

/// Why a message was rejected (spec §4 lists the causes). One variant per cause; offsets are
/// byte positions in the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message is empty or ends before a field it announces.
    #[error("message truncated: {needed} bytes needed, {len} present")]
    Truncated {
        /// Bytes the fields read so far need.
        needed: usize,
        /// Bytes present.
        len: usize,
    },
    /// Bits 7..6 of the control byte are not `01`.
    #[error("not a v1 message: version bits are {version:#04b}, v1 is 0b01")]
    NotV1 {
        /// The version bits found.
        version: u8,
    },
    /// Op code 0.
    #[error("bad op code 0 in control byte {control:#04x} (valid ops are 1..=7)")]
    BadOp {
        /// The control byte.
        control: u8,
    },
    /// R or L set on an op that does not allow it.
    #[error("flag {flag} is not allowed on {op}")]
    FlagNotAllowed {
        /// The flag.
        flag: Flag,
        /// The op.
        op: Op,
    },
    /// Bytes left after the last field.
    #[error("{extra} trailing bytes after the message's last field (at offset {offset})")]
    TrailingBytes {
        /// Offset where the message should have ended.
        offset: usize,
        /// Bytes left over.
        extra: usize,
    },
    /// A tuple signature of `00`, or a non-zero code after a `00` (spec §2).
    #[error(
        "bad tuple signature {signature:#04x}: codes must be non-zero for 1..=4 leading elements, then 00"
    )]
    BadTupleSignature {
        /// The signature byte.
        signature: u8,
    },
    /// A pattern byte with arity outside 1..=4 or mask bits set beyond the arity (spec §3).
    #[error(
        "bad pattern byte {pattern:#04x}: arity must be 1..=4 and formal-mask bits beyond the arity 0"
    )]
    BadPatternByte {
        /// The pattern byte.
        pattern: u8,
    },
    /// A pattern signature with an actual of code `00` or a code beyond the arity (spec §3).
    #[error(
        "bad pattern signature {signature:#04x} for pattern byte {pattern:#04x}: actuals need a type code, positions beyond the arity must be 00"
    )]
    BadPatternSignature {
        /// The signature byte.
        signature: u8,
        /// The pattern byte.
        pattern: u8,
    },
    /// A 2-byte varint whose second byte is 0 (spec §1: varints are minimal).
    #[error("non-minimal varint at offset {offset}")]
    NonMinimalVarint {
        /// Offset of the varint.
        offset: usize,
    },
    /// A varint of more than 2 bytes (spec §1: at most 2 bytes, so lengths ≤ 8191).
    #[error("varint at offset {offset} is longer than 2 bytes (string/bytes length limit 8191)")]
    VarintTooLong {
        /// Offset of the varint.
        offset: usize,
    },
    /// A string (kind 0) that is not valid UTF-8.
    #[error("string at offset {offset} is not valid UTF-8")]
    BadUtf8 {
        /// Offset of the string's first byte.
        offset: usize,
    },
    /// A float32 NaN (spec §1: any NaN is rejected).
    #[error("float32 at offset {offset} is NaN")]
    NaN {
        /// Offset of the float.
        offset: usize,
    },
    /// An L flag with lifetime or wait 0 (spec §4: 1..=65535 s).
    #[error("lifetime or wait of 0 s is invalid (1..=65535 s)")]
    ZeroLifetime,
    /// The message is longer than the transport carries.
    #[error("message of {len} bytes is too long for {transport} (at most {max})")]
    TooLong {
        /// Message length.
        len: usize,
        /// The transport's limit.
        max: usize,
        /// The transport's name.
        transport: &'static str,
    },
    /// E = 1 but this space has no key (spec §4 "encrypted but no key").
    #[error("message is encrypted (E flag) but no key was given")]
    EncryptedNoKey,
}

/// The output buffer given to [`Message::emit`] is too small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("buffer of {available} bytes is too small, the message needs {needed}")]
pub struct BufferTooSmall {
    /// Bytes the message needs ([`Message::buffer_len`]).
    pub needed: usize,
    /// Bytes in the buffer.
    pub available: usize,
}

/// A BeeTS message (spec §4), by op. Invalid flag combinations cannot be represented; the E flag
/// is not part of the message but of its encoding (see [`Message::emit`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// OUT: store `tuple`, for `lifetime` seconds if given (flag L).
    Out {
        /// The tuple to store.
        tuple: Tuple,
        /// Lifetime in seconds, 1..=65535; `None` = the receiving space's default.
        lifetime: Option<NonZeroU16>,
    },
    /// RD: request a copy of a tuple matching the template.
    Rd(Template),
    /// INP: request removal of a tuple matching the template.
    Inp(Template),
    /// TEST: request a copy, as a presence test.
    Test(Template),
    /// TUPLE: a reply (R = 1) to RD/INP/TEST, or a notification (R = 0).
    Tuple {
        /// The tuple.
        tuple: Tuple,
        /// R flag.
        reply: bool,
    },
    /// IAMHERE: an identity tuple; a reply to WHERE (R = 1) or an announcement (R = 0).
    IAmHere {
        /// The sender's identity tuple.
        tuple: Tuple,
        /// R flag.
        reply: bool,
    },
    /// WHERE: ask for nodes whose identity tuple matches the template.
    Where(Template),
    /// RD, INP or TEST with L = 1: a request that waits (spec §11). Receivers without a match
    /// keep it pending for `wait` seconds. Without a wait the same request is
    /// [`Message::Rd`], [`Message::Inp`] or [`Message::Test`].
    Waiting {
        /// RD, INP or TEST.
        op: RequestOp,
        /// The requested template.
        template: Template,
        /// The requester's wait in seconds, 1..=65535.
        wait: NonZeroU16,
    },
}

/// The ops that may wait (spec §11): RD, INP, TEST.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestOp {
    /// RD.
    Rd,
    /// INP.
    Inp,
    /// TEST.
    Test,
}

impl RequestOp {
    /// The wire op.
    pub const fn op(self) -> Op {
        match self {
            RequestOp::Rd => Op::Rd,
            RequestOp::Inp => Op::Inp,
            RequestOp::Test => Op::Test,
        }
    }

    /// The request op of `op`, `None` for OUT, TUPLE, IAMHERE and WHERE.
    pub const fn from_op(op: Op) -> Option<RequestOp> {
        match op {
            Op::Rd => Some(RequestOp::Rd),
            Op::Inp => Some(RequestOp::Inp),
            Op::Test => Some(RequestOp::Test),
            _ => None,
        }
    }
}

/// A message decoded by [`Message::parse`], with the E flag it arrived with.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    /// The message.
    pub message: Message,
    /// Whether the body was FPE-encrypted (E flag).
    pub encrypted: bool,
}

impl Message {
    /// The op.
    pub const fn op(&self) -> Op {
        match self {
            Message::Out { .. } => Op::Out,
            Message::Rd(_) => Op::Rd,
            Message::Inp(_) => Op::Inp,
            Message::Test(_) => Op::Test,
            Message::Tuple { .. } => Op::Tuple,
            Message::IAmHere { .. } => Op::IAmHere,
            Message::Where(_) => Op::Where,
            Message::Waiting { op, .. } => op.op(),
        }
    }

    /// An RD, INP or TEST of `template`, waiting `wait` seconds if given (spec §11): a
    /// [`Message::Waiting`] with a wait, else [`Message::Rd`], [`Message::Inp`] or
    /// [`Message::Test`].
    pub fn request(op: RequestOp, template: Template, wait: Option<NonZeroU16>) -> Message {
        match (op, wait) {
            (op, Some(wait)) => Message::Waiting { op, template, wait },
            (RequestOp::Rd, None) => Message::Rd(template),
            (RequestOp::Inp, None) => Message::Inp(template),
            (RequestOp::Test, None) => Message::Test(template),
        }
    }

    /// The wait of a request that waits (spec §11), `None` for every other message.
    pub const fn wait(&self) -> Option<NonZeroU16> {
        match self {
            Message::Waiting { wait, .. } => Some(*wait),
            _ => None,
        }
    }

    /// Builds the message of `op` from a tuple (OUT, TUPLE, IAMHERE) or a template (the others);
    /// used by tools that take the op as text. `lifetime` is the L field: the lifetime of an OUT
    /// or the wait of an RD, INP or TEST (spec §11); `reply` applies to TUPLE and IAMHERE only.
    ///
    /// # Errors
    /// [`BodyMismatch::Flag`] when `reply` or `lifetime` is given for an op that does not allow
    /// it, [`BodyMismatch::Body`] when a tuple op gets a template or the reverse.
    pub fn from_parts(
        op: Op,
        body: Body,
        lifetime: Option<NonZeroU16>,
        reply: bool,
    ) -> Result<Message, BodyMismatch> {
        if reply && !op.allows_reply() {
            return Err(BodyMismatch::Flag(Flag::Reply, op));
        }
        if lifetime.is_some() && !allows_l(op) {
            return Err(BodyMismatch::Flag(Flag::Lifetime, op));
        }
        if let (Some(r), Body::Template(template)) = (RequestOp::from_op(op), &body) {
            return Ok(Message::request(r, template.clone(), lifetime));
        }
        Ok(match (op, body) {
            (Op::Out, Body::Tuple(tuple)) => Message::Out { tuple, lifetime },
            (Op::Tuple, Body::Tuple(tuple)) => Message::Tuple { tuple, reply },
            (Op::IAmHere, Body::Tuple(tuple)) => Message::IAmHere { tuple, reply },
            (Op::Rd, Body::Template(t)) => Message::Rd(t),
            (Op::Inp, Body::Template(t)) => Message::Inp(t),
            (Op::Test, Body::Template(t)) => Message::Test(t),
            (Op::Where, Body::Template(t)) => Message::Where(t),
            (op, _) => return Err(BodyMismatch::Body(op)),
        })
    }

    /// The control byte this message is emitted with (E as given).
    pub fn control(&self, encrypted: bool) -> u8 {
        let (reply, lifetime) = match self {
            Message::Out { lifetime, .. } => (false, lifetime.is_some()),
            Message::Waiting { .. } => (false, true),
            Message::Tuple { reply, .. } | Message::IAmHere { reply, .. } => (*reply, false),
            _ => (false, false),
        };
        (VERSION << 6)
            | ((self.op() as u8) << 3)
            | if encrypted { FLAG_E } else { 0 }
            | if reply { FLAG_R } else { 0 }
            | if lifetime { FLAG_L } else { 0 }
    }

    /// The tuple of OUT, TUPLE and IAMHERE.
    pub fn tuple(&self) -> Option<&Tuple> {
        match self {
            Message::Out { tuple, .. }
            | Message::Tuple { tuple, .. }
            | Message::IAmHere { tuple, .. } => Some(tuple),
            _ => None,
        }
    }

    /// The template of RD, INP, TEST and WHERE.
    pub fn template(&self) -> Option<&Template> {
        match self {
            Message::Rd(t) | Message::Inp(t) | Message::Test(t) | Message::Where(t) => Some(t),
            Message::Waiting { template, .. } => Some(template),
            _ => None,
        }
    }

    /// Bytes [`emit`](Self::emit) writes: control byte, body, lifetime. Constant time: tuples
    /// and templates keep their encoded length.
    pub fn buffer_len(&self) -> usize {
        1 + match self {
            Message::Out { tuple, lifetime } => {
                tuple.wire_len() + if lifetime.is_some() { 2 } else { 0 }
            }
            Message::Tuple { tuple, .. } | Message::IAmHere { tuple, .. } => tuple.wire_len(),
            Message::Rd(t) | Message::Inp(t) | Message::Test(t) | Message::Where(t) => t.wire_len(),
            Message::Waiting { template, .. } => template.wire_len() + 2,
        }
    }

    /// Writes the message into `buf` and returns the length written ([`buffer_len`](Self::buffer_len)).
    /// With a key, bytes 1.. are FPE-encrypted and the E flag is set (spec §5).
    ///
    /// # Errors
    /// [`BufferTooSmall`] if `buf` is shorter than `buffer_len()`; nothing is written then.
    pub fn emit(&self, buf: &mut [u8], key: Option<&FpeKey>) -> Result<usize, BufferTooSmall> {
        let needed = self.buffer_len();
        let Some(buf) = buf.get_mut(..needed) else {
            return Err(BufferTooSmall {
                needed,
                available: buf.len(),
            });
        };
        buf[0] = self.control(key.is_some());
        let mut w = Writer { buf, pos: 1 };
        match self {
            Message::Out { tuple, lifetime } => {
                w.tuple(tuple);
                if let Some(l) = lifetime {
                    w.put(&l.get().to_be_bytes());
                }
            }
            Message::Tuple { tuple, .. } | Message::IAmHere { tuple, .. } => w.tuple(tuple),
            Message::Rd(t) | Message::Inp(t) | Message::Test(t) | Message::Where(t) => {
                w.template(t)
            }
            Message::Waiting { template, wait, .. } => {
                w.template(template);
                w.put(&wait.get().to_be_bytes());
            }
        }
        debug_assert_eq!(w.pos, needed);
        if let Some(key) = key {
            key.encrypt(&mut w.buf[1..]);
        }
        Ok(needed)
    }

    /// The encoded message as a new vector (see [`emit`](Self::emit)).
    pub fn to_bytes(&self, key: Option<&FpeKey>) -> Vec<u8> {
        let mut v = vec![0; self.buffer_len()];
        let n = self.emit(&mut v, key).expect("buffer sized by buffer_len");
        debug_assert_eq!(n, v.len());
        v
    }

    /// Decodes a whole message (spec §1–§4). An E = 1 message is decrypted with `key`; an E = 0
    /// message is decoded as is even when a key is given — whether a space accepts it is the
    /// caller's filter (spec §4 "Keys"), told by [`Decoded::encrypted`].
    ///
    /// # Errors
    /// A [`DecodeError`] naming the first violation found; see the variants.
    pub fn parse(bytes: &[u8], key: Option<&FpeKey>) -> Result<Decoded, DecodeError> {
        let control = *bytes
            .first()
            .ok_or(DecodeError::Truncated { needed: 1, len: 0 })?;
        // Byte 0 is never encrypted: a foreign version is "not v1" whatever its E bit says.
        let version = control >> 6;
        if version != VERSION {
            return Err(DecodeError::NotV1 { version });
        }
        // Each arm hands its result straight back: no intermediate `Message` to move.
        if control & FLAG_E != 0 {
            let key = key.ok_or(DecodeError::EncryptedNoKey)?;
            parse_body(control, Reader::new(bytes, Decrypt(key)))
        } else {
            parse_body(control, Reader::new(bytes, Plain))
        }
    }

    /// Checks the encoded length against a transport's limit.
    ///
    /// # Errors
    /// [`DecodeError::TooLong`] naming both sizes.
    pub fn check_len(&self, max: usize, transport: &'static str) -> Result<usize, DecodeError> {
        let len = self.buffer_len();
        if len > max {
            Err(DecodeError::TooLong {
                len,
                max,
                transport,
            })
        } else {
            Ok(len)
        }
    }
}

/// The body of a message: a tuple or a template (for [`Message::from_parts`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// For OUT, TUPLE, IAMHERE.
    Tuple(Tuple),
    /// For RD, INP, TEST, WHERE.
    Template(Template),
}

/// An op given a body or flag it cannot carry (by [`Message::from_parts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyMismatch {
    /// OUT/TUPLE/IAMHERE need a tuple, RD/INP/TEST/WHERE a template.
    #[error("{0} needs a {kind}", kind = if .0.carries_pattern() { "template" } else { "tuple (no formals)" })]
    Body(Op),
    /// A flag the op does not allow.
    #[error("flag {0} is not allowed on {1}")]
    Flag(Flag, Op),
}

impl fmt::Display for Message {
    /// `OP body`, e.g. `OUT ("A", 1) L=60s`, `RD ("A", ?) W=30s` or `TUPLE ("A", 1) R`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Out { tuple, lifetime } => {
                write!(f, "OUT {tuple}")?;
                if let Some(l) = lifetime {
                    write!(f, " L={l}s")?;
                }
                Ok(())
            }
            Message::Tuple { tuple, reply } | Message::IAmHere { tuple, reply } => {
                write!(f, "{} {tuple}{}", self.op(), if *reply { " R" } else { "" })
            }
            Message::Rd(t) | Message::Inp(t) | Message::Test(t) | Message::Where(t) => {
                write!(f, "{} {t}", self.op())
            }
            Message::Waiting { template, wait, .. } => {
                write!(f, "{} {template} W={wait}s", self.op())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// How body bytes are read: as they are, or through the FPE decryption table. Monomorphised, so
/// the plain path has no per-byte branch.
trait ByteMap: Copy {
    fn byte(self, b: u8) -> u8;
    fn slice(self, s: &mut [u8]);
    /// Calls `f` with `s` mapped: `s` itself for [`Plain`], a decrypted copy for [`Decrypt`].
    fn with_mapped<R>(self, s: &[u8], f: impl FnOnce(&[u8]) -> R) -> R;
}

#[derive(Clone, Copy)]
struct Plain;
impl ByteMap for Plain {
    #[inline(always)]
    fn byte(self, b: u8) -> u8 {
        b
    }
    #[inline(always)]
    fn slice(self, _: &mut [u8]) {}
    #[inline(always)]
    fn with_mapped<R>(self, s: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
        f(s)
    }
}

#[derive(Clone, Copy)]
struct Decrypt<'k>(&'k FpeKey);
impl ByteMap for Decrypt<'_> {
    #[inline(always)]
    fn byte(self, b: u8) -> u8 {
        self.0.decrypt_byte(b)
    }
    #[inline(always)]
    fn slice(self, s: &mut [u8]) {
        self.0.decrypt(s)
    }
    #[inline]
    fn with_mapped<R>(self, s: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
        // Short values (all of BLE, most of UDP) are decrypted on the stack.
        const STACK: usize = 64;
        if s.len() <= STACK {
            let mut buf = [0u8; STACK];
            let buf = &mut buf[..s.len()];
            buf.copy_from_slice(s);
            self.0.decrypt(buf);
            f(buf)
        } else {
            let mut buf = s.to_vec();
            self.0.decrypt(&mut buf);
            f(&buf)
        }
    }
}

/// A bounds-checked cursor: every read returns `Truncated` instead of panicking.
struct Reader<'a, M> {
    buf: &'a [u8],
    pos: usize,
    map: M,
}

impl<'a, M: ByteMap> Reader<'a, M> {
    /// A reader positioned after the control byte.
    fn new(buf: &'a [u8], map: M) -> Self {
        Reader { buf, pos: 1, map }
    }

    #[inline]
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated {
            needed: self.pos + 1,
            len: self.buf.len(),
        })?;
        self.pos += 1;
        Ok(self.map.byte(b))
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.saturating_add(n);
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated {
            needed: end,
            len: self.buf.len(),
        })?;
        self.pos = end;
        Ok(s)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        self.map.slice(&mut a);
        Ok(a)
    }

    /// A value of the given code (spec §1). Inlined into the tuple and template loops, so the
    /// fixed-size values cost no call; strings go through [`Reader::string`].
    #[inline(always)]
    fn value(&mut self, code: TypeCode) -> Result<Value, DecodeError> {
        match code {
            TypeCode::Int16 => Ok(Value::Int16(i16::from_be_bytes(self.array()?))),
            TypeCode::Float32 => {
                let offset = self.pos;
                let f = f32::from_be_bytes(self.array()?);
                if f.is_nan() {
                    Err(DecodeError::NaN { offset })
                } else {
                    Ok(Value::Float32(f))
                }
            }
            TypeCode::Str => self.string(),
        }
    }

    /// A string or byte string (code `11`): the length varint, then the bytes (spec §1).
    /// Inlined like [`Reader::value`]: the `Value` is then built in registers and stored once,
    /// straight into its slot (returned through memory, it was stored, then re-read with wider
    /// loads, a store-forwarding stall that cost more than the call).
    #[inline(always)]
    fn string(&mut self) -> Result<Value, DecodeError> {
        let offset = self.pos;
        let b0 = self.u8()?;
        let h = if b0 & 0x80 == 0 {
            u16::from(b0)
        } else {
            let b1 = self.u8()?;
            if b1 & 0x80 != 0 {
                return Err(DecodeError::VarintTooLong { offset });
            }
            if b1 == 0 {
                return Err(DecodeError::NonMinimalVarint { offset });
            }
            u16::from(b0 & 0x7f) | (u16::from(b1) << 7)
        };
        let len = usize::from(h >> 1);
        let data_offset = self.pos;
        // `take` checks the length against the input before anything is allocated.
        let raw = self.take(len)?;
        if h & 1 == 0 {
            // Checked and copied straight from the input (no intermediate `Vec`); a string of
            // up to 24 bytes lands inline in the `CompactString`, with no allocation at all.
            self.map
                .with_mapped(raw, |s| core::str::from_utf8(s).map(CompactString::new))
                .map(Value::Str)
                .map_err(|_| DecodeError::BadUtf8 {
                    offset: data_offset,
                })
        } else {
            let mut data = raw.to_vec();
            self.map.slice(&mut data);
            Ok(Value::Bytes(data))
        }
    }

    /// A tuple (spec §2: signature byte, then the values), pushed onto the empty `tuple`.
    fn tuple(&mut self, tuple: &mut Tuple) -> Result<(), DecodeError> {
        let start = self.pos;
        let signature = self.u8()?;
        let arity = tuple_arity(signature).ok_or(DecodeError::BadTupleSignature { signature })?;
        for i in 0..arity {
            let code = code_at(signature, i).ok_or(DecodeError::BadTupleSignature { signature })?;
            tuple.push_decoded(self.value(code)?);
        }
        // The values were read under `signature` and took exactly these bytes; a tuple is at most
        // 1 + 4 · (2 + 8191) bytes (the varint caps each value), so the length fits a `u16`.
        tuple.set_wire(signature, (self.pos - start) as u16);
        Ok(())
    }

    /// A pattern (spec §3: signature, pattern byte, actual values), pushed onto the empty
    /// `template`.
    fn template(&mut self, template: &mut Template) -> Result<(), DecodeError> {
        let signature = self.u8()?;
        let pattern = self.u8()?;
        let arity = usize::from(pattern >> 4);
        let mask = pattern & 0x0f;
        if !(1..=MAX_ARITY).contains(&arity) || mask & ((1 << (4 - arity)) - 1) != 0 {
            return Err(DecodeError::BadPatternByte { pattern });
        }
        // Positions ≥ arity must have code 00.
        let unused_bits = 8 - 2 * arity as u32;
        if unused_bits > 0 && signature & ((1u16 << unused_bits) - 1) as u8 != 0 {
            return Err(DecodeError::BadPatternSignature { signature, pattern });
        }
        for i in 0..arity {
            let code = code_at(signature, i);
            let formal = mask & (1 << (3 - i)) != 0;
            template.push_checked(if formal {
                Field::Formal(code)
            } else {
                let code = code.ok_or(DecodeError::BadPatternSignature { signature, pattern })?;
                Field::Actual(self.value(code)?)
            });
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.pos < self.buf.len() {
            Err(DecodeError::TrailingBytes {
                offset: self.pos,
                extra: self.buf.len() - self.pos,
            })
        } else {
            Ok(())
        }
    }
}

/// Whether L may be set on `op`: OUT (lifetime), RD, INP, TEST (wait, spec §11).
const fn allows_l(op: Op) -> bool {
    matches!(op, Op::Out | Op::Rd | Op::Inp | Op::Test)
}

/// The code of element `i` (0..=3) of a signature byte.
#[inline]
fn code_at(signature: u8, i: usize) -> Option<TypeCode> {
    TypeCode::from_bits(signature >> (6 - 2 * i))
}

/// The arity of a valid tuple signature (spec §2), `None` when invalid.
#[inline]
fn tuple_arity(signature: u8) -> Option<usize> {
    let arity = (0..MAX_ARITY)
        .take_while(|&i| code_at(signature, i).is_some())
        .count();
    // Everything after the last non-zero code must be zero.
    let rest_bits = 8 - 2 * arity as u32;
    let rest_zero = rest_bits == 0 || signature & ((1u16 << rest_bits) - 1) as u8 == 0;
    (arity > 0 && rest_zero).then_some(arity)
}

fn parse_body<M: ByteMap>(control: u8, mut r: Reader<'_, M>) -> Result<Decoded, DecodeError> {
    let version = control >> 6;
    if version != VERSION {
        return Err(DecodeError::NotV1 { version });
    }
    let op = Op::from_code(control >> 3).ok_or(DecodeError::BadOp { control })?;
    let reply = control & FLAG_R != 0;
    let has_lifetime = control & FLAG_L != 0;
    if reply && !op.allows_reply() {
        return Err(DecodeError::FlagNotAllowed {
            flag: Flag::Reply,
            op,
        });
    }
    if has_lifetime && !allows_l(op) {
        return Err(DecodeError::FlagNotAllowed {
            flag: Flag::Lifetime,
            op,
        });
    }
    // The message is built first, with an empty body that is then decoded in place: building
    // the tuple or template on its own and moving it into the message costs two copies of
    // ~140 bytes, each stalled on the stores that just wrote it.
    let mut decoded = Decoded {
        message: match op {
            Op::Out => Message::Out {
                tuple: Tuple::empty(),
                lifetime: None,
            },
            Op::Tuple => Message::Tuple {
                tuple: Tuple::empty(),
                reply,
            },
            Op::IAmHere => Message::IAmHere {
                tuple: Tuple::empty(),
                reply,
            },
            Op::Rd | Op::Inp | Op::Test if has_lifetime => Message::Waiting {
                op: RequestOp::from_op(op).expect("a request op"),
                template: Template::empty(),
                wait: NonZeroU16::MIN,
            },
            Op::Rd => Message::Rd(Template::empty()),
            Op::Inp => Message::Inp(Template::empty()),
            Op::Test => Message::Test(Template::empty()),
            Op::Where => Message::Where(Template::empty()),
        },
        encrypted: control & FLAG_E != 0,
    };
    match &mut decoded.message {
        Message::Out { tuple, lifetime } => {
            r.tuple(tuple)?;
            if has_lifetime {
                let l = u16::from_be_bytes(r.array()?);
                *lifetime = Some(NonZeroU16::new(l).ok_or(DecodeError::ZeroLifetime)?);
            }
        }
        Message::Tuple { tuple, .. } | Message::IAmHere { tuple, .. } => r.tuple(tuple)?,
        Message::Rd(t) | Message::Inp(t) | Message::Test(t) | Message::Where(t) => r.template(t)?,
        Message::Waiting { template, wait, .. } => {
            r.template(template)?;
            let w = u16::from_be_bytes(r.array()?);
            *wait = NonZeroU16::new(w).ok_or(DecodeError::ZeroLifetime)?;
        }
    }
    r.finish()?;
    Ok(decoded)
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// A cursor over a buffer already sized by `buffer_len`.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }

    /// One value (spec §1). Always inlined into the tuple and template loops (as a call, it was
    /// a quarter of encoding a 4-tuple).
    #[inline(always)]
    fn value(&mut self, v: &Value) {
        match v {
            Value::Int16(i) => self.put(&i.to_be_bytes()),
            Value::Float32(f) => self.put(&f.to_be_bytes()),
            Value::Str(s) => self.bytes(s.as_bytes(), 0),
            Value::Bytes(b) => self.bytes(b, 1),
        }
    }

    #[inline(always)]
    fn bytes(&mut self, data: &[u8], kind: u16) {
        // Lengths are ≤ 8191 by construction of Value (checked in Tuple/Template::new).
        let h = ((data.len() as u16) << 1) | kind;
        if h < 0x80 {
            self.put(&[h as u8]);
        } else {
            self.put(&[(h as u8) | 0x80, (h >> 7) as u8]);
        }
        self.put_short(data);
    }

    /// [`put`](Self::put) for a payload of variable length. Short payloads — most strings in a
    /// sensor tuple — are copied with two overlapping fixed-size moves instead of a call into
    /// `memcpy`, which was a fifth of encoding the spec's 4-tuple.
    #[inline(always)]
    fn put_short(&mut self, data: &[u8]) {
        let n = data.len();
        let dst = &mut self.buf[self.pos..self.pos + n];
        match n {
            0 => {}
            1..=3 => {
                dst[0] = data[0];
                dst[n / 2] = data[n / 2];
                dst[n - 1] = data[n - 1];
            }
            4..=7 => {
                dst[..4].copy_from_slice(&data[..4]);
                dst[n - 4..].copy_from_slice(&data[n - 4..]);
            }
            8..=16 => {
                dst[..8].copy_from_slice(&data[..8]);
                dst[n - 8..].copy_from_slice(&data[n - 8..]);
            }
            17..=32 => {
                dst[..16].copy_from_slice(&data[..16]);
                dst[n - 16..].copy_from_slice(&data[n - 16..]);
            }
            _ => dst.copy_from_slice(data),
        }
        self.pos += n;
    }

    fn tuple(&mut self, t: &Tuple) {
        self.put(&[t.signature()]);
        for v in t.values() {
            self.value(v);
        }
    }

    fn template(&mut self, t: &Template) {
        self.put(&[t.signature(), t.pattern_byte()]);
        for f in t.fields() {
            if let Field::Actual(v) = f {
                self.value(v);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
