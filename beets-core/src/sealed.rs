//! Sealed messages (spec wire-v1 §12): authenticated encryption, replay protection and header
//! privacy for a whole tuple space, inside one 31-byte BLE message.
//!
//! # Why
//!
//! The FPE of spec §5 ([`fpe`](crate::fpe)) is a fixed per-byte substitution: it hides content
//! from a casual listener and nothing more. It has no integrity (anyone in range can forge an
//! OUT, remove tuples with INP, or silence replies with a matching TUPLE), no replay protection,
//! and it falls to frequency analysis. A **sealed** space instead encrypts and authenticates every
//! message with AES-128-CCM under a 16-byte key K, drops replays with a per-source counter and a
//! 64-entry window, and hides the source id and counter on the air. The design is Bluetooth Mesh's
//! network layer (Mesh Profile 1.1 §3.8: AES-CCM with a 32-bit MIC, per-source sequence numbers, a
//! replay protection list, header obfuscation), fitted to one message.
//!
//! # Layout (spec §12)
//!
//! ```text
//!  0       1             3                  7                        n-M         n
//! +-------+-------------+------------------+------------------------+-----------+
//! | ctrl  |  source id  |     counter      |  ciphertext (body)     |    MIC    |
//! +-------+-------------+------------------+------------------------+-----------+
//!  VER=10   u16 BE, ≠ 0   u32 BE             2..=20 B on BLE           M = 4 (BLE)
//!  OP,R,L   bytes 1..=6 XORed on the air     2..=1206 B on UDP         M = 8 (UDP)
//!  E = 0    with AES-128-ECB(P, 0¹⁰ ‖ bytes 7..=12)[0..6]
//! ```
//!
//! - CCM (RFC 3610): AES-128 with K, 13-byte nonce `T ‖ source id ‖ counter ‖ 00×6` (T = `01` on
//!   BLE, `02` on UDP), associated data = the clear header (bytes 0..=6), payload = the body of
//!   the equivalent version-1 message (bytes 1.. of what [`Message::emit`] writes).
//! - Sizes: a sealed message is the plain one plus 6 header bytes and the MIC: at most 31 bytes on
//!   BLE (so a body of at most **20 bytes**: the paper's `("SENSOR", "LIGHT", 512, 1.5)` fits
//!   exactly, with a lifetime it does not) and 1221 on UDP (body ≤ 1206). The smallest sealed
//!   message is 13 bytes on BLE, 17 on UDP.
//!
//! # Receiving, in the spec's order
//!
//! 1. structure ([`SealKey::open`]): too short, too long, bad op, E set, flag not allowed;
//! 2. header de-obfuscation and MIC check in constant time, then source id ≠ 0 ([`SealKey::open`]);
//! 3. the replay window of (transport, source id) ([`ReplayWindow::accept`], which takes the
//!    [`Opened`] proof that steps 1 and 2 passed);
//! 4. the decrypted body parsed as version 1 ([`Message::parse`] on the bytes `open` wrote).
//!
//! [`SealKey::receive`] runs all four; [`SealKey::open_message`] runs 1, 2 and 4 (what the BLE
//! receiver of spec §6 needs to choose among candidate frames, step 3 then running once on the
//! chosen one). Every failure is a distinct [`OpenError`] variant, named by
//! [`OpenError::reason`] as the spec counts it.
//!
//! Sending ([`SealKey::seal`], or [`Sealer`] which also allocates counters): a counter value is
//! never used twice with one key, on one transport, by one source id. [`FileCounterStore`]
//! reserves counters in blocks of 1024 so that a crash never makes a node reuse one.
//!
//! # What sealing does not do
//!
//! - Traffic analysis: sizes, timing and the control byte (op and flags) are visible; the UDP
//!   envelope's node id and seq (§7), the BLE frame seq (§6) and the BLE advertising address
//!   still link a node's messages.
//! - Everyone holding K can send as any source id: K protects a group, not a node.
//! - A 4-byte MIC gives a forger one chance in 2³² per try: at about 1 000 forged frames/s in
//!   range, ≈ 50 days of continuous flooding for one expected forgery (UDP's 8-byte MIC far
//!   longer).
//! - A receiver that does not persist its [`ReplayWindow`] (or evicted the source) accepts replays
//!   of messages captured before, in increasing counter order, until the source's own traffic
//!   moves the window past them.
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroU16;
//! use beets_core::sealed::{ReplayWindow, SealKey};
//! use beets_core::{Message, Transport, Tuple};
//!
//! let key = SealKey::from_hex("000102030405060708090a0b0c0d0e0f")?;
//! let tuple: Tuple = r#"("SENSOR", "LIGHT", 512, 1.5)"#.parse()?;
//! let plain = Message::Out { tuple, lifetime: None }.to_bytes(None);
//! let source = NonZeroU16::new(0x0102).unwrap();
//! let sealed = key.seal_to_vec(Transport::Ble, source, 7, &plain)?;
//! assert_eq!(sealed.len(), 31);
//! assert_eq!(sealed[0], 0x88); // VER = 10, OP = OUT
//!
//! let mut window = ReplayWindow::default();
//! let (opened, message) = key.receive(&mut window, Transport::Ble, &sealed)?;
//! assert_eq!((opened.source_id(), opened.counter()), (source, 7));
//! assert_eq!(message.op(), beets_core::Op::Out);
//! // The same bytes again are a duplicate.
//! assert!(key.receive(&mut window, Transport::Ble, &sealed).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::num::NonZeroU16;
use std::ops::Range;

use aes::Aes128;
use aes::cipher::{Array, BlockCipherEncrypt};
use ccm::aead::AeadInOut;
use ccm::aead::array::ArraySize;
use ccm::aead::inout::InOutBuf;
use ccm::consts::U13;
use ccm::{Ccm, TagSize};

use crate::message::{FLAG_E, FLAG_L, FLAG_R};
use crate::message::{Flag, MIN_MESSAGE_LEN, Message, Op, VERSION};
use crate::node::Transport;
use crate::{ble, udp};

mod counter;
mod error;
mod key;
mod sealer;
mod window;

pub use counter::{
    COUNTER_LIMIT, CounterAllocator, CounterError, CounterStore, CounterStream, FileCounterStore,
    MemoryCounterStore, RESERVATION_BLOCK, StoreError,
};
pub use error::{OpenError, SealError};
pub use key::{KDF_ITERATIONS, KDF_SALT, KEY_LEN, KeyError, KeyId, PRIVACY_LABEL, SealKey};
pub use sealer::{Sealed, Sealer, SealerError};
pub use window::{
    BadWindowEntry, DEFAULT_WINDOW_SOURCES, ReplayError, ReplayWindow, WINDOW_BITS, WindowEntry,
};

/// Version bits of a sealed message's control byte: `10` (spec §4, §12).
pub const SEALED_VERSION: u8 = 0b10;
/// The clear header: ctrl, source id, counter (7 bytes; the CCM associated data).
pub const HEADER_LEN: usize = 7;
/// Source id, u16 big-endian (bytes 1..3).
pub const SOURCE_ID: Range<usize> = 1..3;
/// Counter, u32 big-endian (bytes 3..7).
pub const COUNTER: Range<usize> = 3..7;
/// Bytes hidden on the air by header privacy: source id and counter (bytes 1..7).
pub const OBFUSCATED: Range<usize> = 1..7;
/// Bytes that feed PECB: the first 6 bytes of ciphertext ‖ MIC (bytes 7..13).
pub const PRIVACY_SAMPLE: Range<usize> = 7..13;
/// MIC bytes on BLE: 4 (spec §12).
pub const MIC_LEN_BLE: usize = 4;
/// MIC bytes on UDP: 8 (spec §12).
pub const MIC_LEN_UDP: usize = 8;
/// CCM nonce bytes: 13 (length field q = 2).
pub const NONCE_LEN: usize = 13;
/// Nonce byte 0 on BLE (T = `01`).
pub const NONCE_TYPE_BLE: u8 = 0x01;
/// Nonce byte 0 on UDP (T = `02`).
pub const NONCE_TYPE_UDP: u8 = 0x02;
/// Smallest body: a 1-tuple of an empty string (signature, varint), 2 bytes.
pub const MIN_BODY_LEN: usize = MIN_MESSAGE_LEN - 1;
/// Largest sealed body on BLE: 31 − 7 − 4 = 20 bytes.
pub const MAX_BODY_LEN_BLE: usize = ble::MAX_MESSAGE_LEN - HEADER_LEN - MIC_LEN_BLE;
/// Largest sealed body on UDP: 1221 − 7 − 8 = 1206 bytes.
pub const MAX_BODY_LEN_UDP: usize = udp::MAX_MESSAGE_LEN - HEADER_LEN - MIC_LEN_UDP;
/// Largest version-1 message [`SealKey::open`] writes: ctrl and a UDP body, 1207 bytes. A buffer
/// this size fits every output; `1 + MAX_BODY_LEN_BLE` (21) fits every BLE output.
pub const MAX_OPENED_LEN: usize = 1 + MAX_BODY_LEN_UDP;

/// The sealing parameters of each transport (spec §12).
impl Transport {
    /// MIC bytes M of a sealed message: 4 on BLE, 8 on UDP.
    pub const fn sealed_mic_len(self) -> usize {
        match self {
            Transport::Ble => MIC_LEN_BLE,
            Transport::Udp => MIC_LEN_UDP,
        }
    }

    /// Nonce byte T: `01` on BLE, `02` on UDP.
    pub const fn sealed_nonce_type(self) -> u8 {
        match self {
            Transport::Ble => NONCE_TYPE_BLE,
            Transport::Udp => NONCE_TYPE_UDP,
        }
    }

    /// Largest body of a sealed message: 20 bytes on BLE, 1206 on UDP.
    pub const fn sealed_max_body_len(self) -> usize {
        self.max_message_len() - HEADER_LEN - self.sealed_mic_len()
    }

    /// Smallest sealed message, 7 + 2 + M: 13 bytes on BLE, 17 on UDP.
    pub const fn sealed_min_len(self) -> usize {
        HEADER_LEN + MIN_BODY_LEN + self.sealed_mic_len()
    }

    /// Length of the sealed message of a version-1 message of `plain_len` bytes (≥ 1): the plain
    /// length + 6 + M.
    pub const fn sealed_len(self, plain_len: usize) -> usize {
        plain_len.saturating_sub(1) + HEADER_LEN + self.sealed_mic_len()
    }
}

/// Whether `message` is a sealed message (version bits `10`), for the space-level filter of spec
/// §12 "Key": a space without K drops such a message as "sealed but no key", a sealed space drops
/// everything else as "not sealed". `false` for an empty slice.
#[must_use]
pub fn is_sealed(message: &[u8]) -> bool {
    message.first().is_some_and(|&c| c >> 6 == SEALED_VERSION)
}

/// An authentic sealed message's header, returned by [`SealKey::open`] once steps 1 and 2 of
/// spec §12 passed. Only `open` makes one, so [`ReplayWindow::accept`], which takes it, can only
/// be fed authenticated counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    transport: Transport,
    source_id: NonZeroU16,
    counter: u32,
    len: usize,
}

impl Opened {
    /// For the window's own tests, which feed counters without sealing them.
    #[cfg(test)]
    pub(crate) fn for_test(transport: Transport, source_id: NonZeroU16, counter: u32) -> Opened {
        Opened {
            transport,
            source_id,
            counter,
            len: 0,
        }
    }

    /// The transport it was opened for.
    #[must_use]
    pub const fn transport(&self) -> Transport {
        self.transport
    }

    /// The sender's source id (authenticated, non-zero).
    #[must_use]
    pub const fn source_id(&self) -> NonZeroU16 {
        self.source_id
    }

    /// The sender's counter (authenticated).
    #[must_use]
    pub const fn counter(&self) -> u32 {
        self.counter
    }

    /// Bytes of the version-1 message written to the output buffer (ctrl with VER = 01, then
    /// the decrypted body): parse `&out[..len]` with [`Message::parse`]`(_, None)` (step 4).
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: an opened message has a control byte and a body of at least 2 bytes.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A structure error of a control byte (spec §4 flag rules, §12 step 1).
enum CtrlError {
    BadOp,
    ESet,
    Flag(Flag, Op),
}

/// Checks OP, E, R and L of a control byte (the version bits are the caller's). L is allowed on
/// OUT (lifetime) and on RD, INP and TEST (wait, spec §11); R on TUPLE and IAMHERE.
fn check_ctrl(control: u8) -> Result<Op, CtrlError> {
    let op = Op::from_code(control >> 3).ok_or(CtrlError::BadOp)?;
    if control & FLAG_E != 0 {
        return Err(CtrlError::ESet);
    }
    if control & FLAG_R != 0 && !op.allows_reply() {
        return Err(CtrlError::Flag(Flag::Reply, op));
    }
    if control & FLAG_L != 0 && !matches!(op, Op::Out | Op::Rd | Op::Inp | Op::Test) {
        return Err(CtrlError::Flag(Flag::Lifetime, op));
    }
    Ok(op)
}

/// The CCM nonce (spec §12): T ‖ source id ‖ counter ‖ six zero bytes.
fn nonce(transport: Transport, header: &[u8; HEADER_LEN]) -> Array<u8, U13> {
    let mut n = [0u8; NONCE_LEN];
    n[0] = transport.sealed_nonce_type();
    n[1..HEADER_LEN].copy_from_slice(&header[OBFUSCATED]);
    Array::from(n)
}

/// The first 6 bytes of PECB = AES-128-ECB(P, ten zero bytes ‖ `sample`).
fn pecb(privacy: &Aes128, sample: &[u8]) -> [u8; 6] {
    let mut block = Array::from([0u8; 16]);
    block[10..].copy_from_slice(sample);
    privacy.encrypt_block(&mut block);
    let mut out = [0u8; 6];
    out.copy_from_slice(&block[..6]);
    out
}

/// CCM-encrypts `body` in place and returns the MIC (written into `mic`).
fn ccm_seal<M: ArraySize + TagSize>(
    ccm: &Ccm<Aes128, M, U13>,
    nonce: &Array<u8, U13>,
    aad: &[u8],
    body: &mut [u8],
    mic: &mut [u8],
) -> bool {
    match ccm.encrypt_inout_detached(nonce, aad, body.into()) {
        Ok(tag) if tag.len() == mic.len() => {
            mic.copy_from_slice(&tag);
            true
        }
        _ => false,
    }
}

/// CCM-decrypts `ciphertext` into `body` (of the same length) if `mic` verifies (compared in
/// constant time by `ccm`); on failure `body` is zeroed.
fn ccm_open<M: ArraySize + TagSize>(
    ccm: &Ccm<Aes128, M, U13>,
    nonce: &Array<u8, U13>,
    aad: &[u8],
    ciphertext: &[u8],
    body: &mut [u8],
    mic: &[u8],
) -> bool {
    let Ok(tag) = <&Array<u8, M>>::try_from(mic) else {
        return false;
    };
    let Ok(buf) = InOutBuf::new(ciphertext, body) else {
        return false;
    };
    ccm.decrypt_inout_detached(nonce, aad, buf, tag).is_ok()
}

impl SealKey {
    /// Seals the version-1 message `plain` (the bytes [`Message::emit`] writes without an FPE
    /// key: ctrl with VER = 01 and E = 0, then the body) as source `source_id` with `counter`
    /// for `transport`, writing the sealed message into `out`; returns its length
    /// ([`Transport::sealed_len`]: the plain length + 6 + M).
    ///
    /// The caller owns the counter: it MUST never use a value twice with this key, transport and
    /// source id (spec §12). [`Sealer`] allocates counters and persists them safely. The body is
    /// not parsed: a malformed body is sealed as given, and receivers drop it at step 4.
    ///
    /// Cost: one CCM pass (2 AES blocks per 16 bytes of body, plus 3) and one AES block for the
    /// header privacy; no allocation.
    ///
    /// # Errors
    /// [`SealError::NotV1`], [`SealError::Encrypted`], [`SealError::BadOp`],
    /// [`SealError::FlagNotAllowed`] and [`SealError::TooShort`] for input that is not a plain
    /// version-1 message; [`SealError::TooLong`] when the body exceeds 20 bytes on BLE or 1206
    /// on UDP (naming both sizes); [`SealError::BufferTooSmall`] when `out` is shorter than the
    /// sealed message.
    pub fn seal(
        &self,
        transport: Transport,
        source_id: NonZeroU16,
        counter: u32,
        plain: &[u8],
        out: &mut [u8],
    ) -> Result<usize, SealError> {
        self.seal_raw(transport, source_id.get(), counter, plain, out)
    }

    /// [`seal`](Self::seal) into a new vector of exactly the sealed length.
    ///
    /// # Errors
    /// As [`seal`](Self::seal), except [`SealError::BufferTooSmall`].
    pub fn seal_to_vec(
        &self,
        transport: Transport,
        source_id: NonZeroU16,
        counter: u32,
        plain: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        check_plain(transport, plain)?;
        let mut out = vec![0; transport.sealed_len(plain.len())];
        let n = self.seal(transport, source_id, counter, plain, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// [`seal`](Self::seal) with any source id, 0 included (for tests of "bad source id").
    pub(crate) fn seal_raw(
        &self,
        transport: Transport,
        source_id: u16,
        counter: u32,
        plain: &[u8],
        out: &mut [u8],
    ) -> Result<usize, SealError> {
        let body_len = check_plain(transport, plain)?;
        let mic_len = transport.sealed_mic_len();
        let needed = HEADER_LEN + body_len + mic_len;
        let Some(out) = out.get_mut(..needed) else {
            return Err(SealError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        };
        let mut header = [0u8; HEADER_LEN];
        header[0] = (SEALED_VERSION << 6) | (plain[0] & 0x3f);
        header[SOURCE_ID].copy_from_slice(&source_id.to_be_bytes());
        header[COUNTER].copy_from_slice(&counter.to_be_bytes());
        let nonce = nonce(transport, &header);

        let (body, mic) = out[HEADER_LEN..].split_at_mut(body_len);
        body.copy_from_slice(&plain[1..]);
        let sealed = match transport {
            Transport::Ble => ccm_seal(&self.ble, &nonce, &header, body, mic),
            Transport::Udp => ccm_seal(&self.udp, &nonce, &header, body, mic),
        };
        // CCM fails only past 2^16 bytes of payload (q = 2); bodies are ≤ 1206 bytes.
        debug_assert!(sealed, "CCM refused a body of {body_len} bytes");

        // Header privacy: bytes 1..=6 XOR PECB[0..6], PECB from bytes 7..=12 as sent.
        let mask = pecb(&self.privacy, &out[PRIVACY_SAMPLE]);
        for ((o, h), m) in out[OBFUSCATED]
            .iter_mut()
            .zip(&header[OBFUSCATED])
            .zip(mask)
        {
            *o = h ^ m;
        }
        out[0] = header[0];
        Ok(needed)
    }

    /// Runs steps 1 and 2 of spec §12 "Receiving" on a received sealed message: checks its
    /// structure, removes the header obfuscation, verifies the MIC in constant time, checks the
    /// source id. On success writes the equivalent version-1 message (ctrl with VER = 01, then
    /// the decrypted body) into `out` and returns its header ([`Opened`]); `&out[..opened.len()]`
    /// is for [`Message::parse`]`(_, None)` (step 4), after the caller's
    /// [`ReplayWindow::accept`] (step 3).
    ///
    /// `out` needs the sealed length − 6 − M bytes; [`MAX_OPENED_LEN`] bytes always suffice.
    ///
    /// Cost: one AES block for the header, one CCM pass; no allocation, no panic on any input.
    ///
    /// # Errors
    /// Step 1: [`OpenError::TooShort`], [`OpenError::TooLong`], [`OpenError::NotSealed`] (VER =
    /// 01), [`OpenError::UnknownVersion`] (00, 11), [`OpenError::BadOp`], [`OpenError::ESet`],
    /// [`OpenError::FlagNotAllowed`]; step 2: [`OpenError::BadMic`] (then `out` holds zeros),
    /// [`OpenError::BadSourceId`]; [`OpenError::BufferTooSmall`] when `out` is too short.
    pub fn open(
        &self,
        transport: Transport,
        sealed: &[u8],
        out: &mut [u8],
    ) -> Result<Opened, OpenError> {
        let len = sealed.len();
        let min = transport.sealed_min_len();
        let control = *sealed.first().ok_or(OpenError::TooShort { len, min })?;
        // The space's filter first (spec §12 "Key"): a version-1 message of any length is "not
        // sealed", whatever else is wrong with it.
        match control >> 6 {
            SEALED_VERSION => {}
            VERSION => return Err(OpenError::NotSealed),
            version => return Err(OpenError::UnknownVersion { version }),
        }
        // Step 1: structure.
        if len < min {
            return Err(OpenError::TooShort { len, min });
        }
        let max = transport.max_message_len();
        if len > max {
            return Err(OpenError::TooLong {
                len,
                max,
                transport: transport.name(),
            });
        }
        check_ctrl(control).map_err(|e| match e {
            CtrlError::BadOp => OpenError::BadOp { control },
            CtrlError::ESet => OpenError::ESet { control },
            CtrlError::Flag(flag, op) => OpenError::FlagNotAllowed { flag, op },
        })?;
        let mic_len = transport.sealed_mic_len();
        let body_len = len - HEADER_LEN - mic_len;
        let needed = 1 + body_len;
        let available = out.len();
        let Some(out) = out.get_mut(..needed) else {
            return Err(OpenError::BufferTooSmall { needed, available });
        };

        // Step 2: header privacy off, then the MIC.
        let mask = pecb(&self.privacy, &sealed[PRIVACY_SAMPLE]);
        let mut header = [0u8; HEADER_LEN];
        header[0] = control;
        for ((h, s), m) in header[OBFUSCATED]
            .iter_mut()
            .zip(&sealed[OBFUSCATED])
            .zip(mask)
        {
            *h = s ^ m;
        }
        let nonce = nonce(transport, &header);
        let (ciphertext, mic) = sealed[HEADER_LEN..].split_at(body_len);
        let body = &mut out[1..];
        let authentic = match transport {
            Transport::Ble => ccm_open(&self.ble, &nonce, &header, ciphertext, body, mic),
            Transport::Udp => ccm_open(&self.udp, &nonce, &header, ciphertext, body, mic),
        };
        if !authentic {
            return Err(OpenError::BadMic);
        }
        let source_id = u16::from_be_bytes([header[1], header[2]]);
        let source_id = NonZeroU16::new(source_id).ok_or(OpenError::BadSourceId)?;
        let counter = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
        out[0] = (VERSION << 6) | (control & 0x3f);
        Ok(Opened {
            transport,
            source_id,
            counter,
            len: needed,
        })
    }

    /// Steps 1, 2 and 4 of spec §12 "Receiving": [`open`](Self::open) into a stack buffer, then
    /// [`Message::parse`]. Step 3 ([`ReplayWindow::accept`]) is the caller's, with the returned
    /// [`Opened`]; this order is the BLE receiver's of spec §6, which tries candidate frames
    /// with steps 1, 2 and 4 and runs step 3 once, on the chosen one. Use
    /// [`receive`](Self::receive) for all four steps in order.
    ///
    /// Allocates only what the message's strings and byte strings need.
    ///
    /// # Errors
    /// As [`open`](Self::open) (never `BufferTooSmall`), and [`OpenError::Parse`] when the
    /// decrypted body is not a valid version-1 body.
    pub fn open_message(
        &self,
        transport: Transport,
        sealed: &[u8],
    ) -> Result<(Opened, Message), OpenError> {
        self.open_parse(None, transport, sealed)
    }

    /// All four steps of spec §12 "Receiving", in order: [`open`](Self::open) (1, 2),
    /// `window`'s [`accept`](ReplayWindow::accept) (3), [`Message::parse`] (4). A message that
    /// passes step 3 and fails step 4 keeps its counter used up, as the spec says.
    ///
    /// # Errors
    /// As [`open_message`](Self::open_message), and [`OpenError::Duplicate`] or
    /// [`OpenError::Replay`] from the window.
    pub fn receive(
        &self,
        window: &mut ReplayWindow,
        transport: Transport,
        sealed: &[u8],
    ) -> Result<(Opened, Message), OpenError> {
        self.open_parse(Some(window), transport, sealed)
    }

    /// Steps 1, 2, 3 (with a window) and 4, in a stack buffer sized for the transport.
    fn open_parse(
        &self,
        window: Option<&mut ReplayWindow>,
        transport: Transport,
        sealed: &[u8],
    ) -> Result<(Opened, Message), OpenError> {
        let mut ble = [0u8; 1 + MAX_BODY_LEN_BLE];
        let mut udp;
        let buf: &mut [u8] = match transport {
            Transport::Ble => &mut ble,
            Transport::Udp => {
                udp = [0u8; MAX_OPENED_LEN];
                &mut udp
            }
        };
        let opened = self.open(transport, sealed, buf)?;
        if let Some(window) = window {
            window.accept(&opened)?;
        }
        let message = parse_opened(&buf[..opened.len])?;
        Ok((opened, message))
    }
}

/// Step 4: the opened bytes as a version-1 message.
fn parse_opened(bytes: &[u8]) -> Result<Message, OpenError> {
    Message::parse(bytes, None)
        .map(|d| d.message)
        .map_err(OpenError::Parse)
}

/// Checks that `plain` is a plain version-1 message whose body fits `transport` sealed; returns
/// the body length.
fn check_plain(transport: Transport, plain: &[u8]) -> Result<usize, SealError> {
    let len = plain.len();
    let control = *plain.first().ok_or(SealError::TooShort {
        len,
        min: MIN_MESSAGE_LEN,
    })?;
    let version = control >> 6;
    if version != VERSION {
        return Err(SealError::NotV1 { version });
    }
    check_ctrl(control).map_err(|e| match e {
        CtrlError::BadOp => SealError::BadOp { control },
        CtrlError::ESet => SealError::Encrypted,
        CtrlError::Flag(flag, op) => SealError::FlagNotAllowed { flag, op },
    })?;
    if len < MIN_MESSAGE_LEN {
        return Err(SealError::TooShort {
            len,
            min: MIN_MESSAGE_LEN,
        });
    }
    let body_len = len - 1;
    let max_body_len = transport.sealed_max_body_len();
    if body_len > max_body_len {
        return Err(SealError::TooLong {
            body_len,
            max_body_len,
            sealed_len: transport.sealed_len(len),
            max_len: transport.max_message_len(),
            transport: transport.name(),
        });
    }
    Ok(body_len)
}

#[cfg(test)]
mod tests;
