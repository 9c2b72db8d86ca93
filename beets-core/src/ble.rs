//! The BLE frame: one BeeTS message in one legacy advertisement (spec wire-v1 §6, paper §4–§5).
//!
//! A frame `F = seq ‖ message ‖ crc` (5..=33 bytes) travels as an ASCII85 *local name* (in the
//! scan response) plus up to seven *16-bit service UUIDs* (in the advertising data):
//!
//! ```text
//!  F:     | seq | message (3..=31 bytes, encrypted if E) | CRC-8/SMBUS |
//!  n ≤ 22: local name = A85(F)                                   (7..=28 characters, no UUIDs)
//!  n > 22: local name = A85(F[0..22]) ‖ chr(0x21 + t)            (29 characters, t = n − 22)
//!          tail F[22..n] as bits, zero-padded to 13·m, m = ⌈8t/13⌉ ≤ 7 chunks d_j:
//!          UUID_j = (j << 13) | d_j                              (slot index in the top 3 bits)
//! ```
//!
//! **Why the slot index and the length character.** BlueZ (and bluer's `BTreeSet<Uuid>`) hands a
//! scanner the service UUIDs as a *set*: order is lost, equal values merge, and the UUIDs of a
//! device's earlier advertisements linger. The slot index restores the order, the length character
//! says how many slots belong to the frame, and the CRC picks the right candidate among stale ones.
//! [`unpack`] tries every combination of candidates (at most [`MAX_COMBINATIONS`]) and accepts a
//! frame only when exactly one combination has zero pad bits, a correct CRC and a message that
//! parses: ambiguous frames are dropped, never guessed.
//!
//! ```
//! use beets_core::ble;
//! let msg = [0x58, 0xd0, 0x24, 0x0c, 0x53, 0x45, 0x4e, 0x53, 0x4f, 0x52];
//! let adv = ble::pack(0, &msg)?;
//! assert_eq!(adv.local_name.as_str(), "!*ISn$r]Si;bp<F");
//! assert!(adv.service_uuids.is_empty());
//! let frame = ble::unpack(&adv.local_name, &[0x1234], None)?; // UUIDs ignored: name-only frame
//! assert_eq!(frame.seq, 0);
//! # Ok::<(), beets_core::ble::FrameError>(())
//! ```
//!
//! How frames are paced onto the air — a bounded queue, each frame advertised for Δt on one of
//! the controller's advertising instances — is the sans-IO [`scheduler`], shared by every BLE
//! sender (BlueZ, the simulated radio of `beets-ble`, the medium of [`crate::sim`]).

use arrayvec::{ArrayString, ArrayVec};
use crc::{CRC_8_SMBUS, Crc, Table};

use crate::ascii85::{self, Ascii85Error};
use crate::fpe::FpeKey;
use crate::message::{DecodeError, Decoded, MIN_MESSAGE_LEN, Message};

/// Largest message a BLE frame carries: 31 bytes (spec §6; the paper's 32-byte budget less seq).
pub const MAX_MESSAGE_LEN: usize = 31;
/// Smallest frame: seq, a 3-byte message, crc (spec §6: 5 ≤ n).
pub const MIN_FRAME_LEN: usize = MIN_MESSAGE_LEN + 2;
/// Largest frame: seq, 31 bytes of message, crc (spec §6: n ≤ 33).
pub const MAX_FRAME_LEN: usize = MAX_MESSAGE_LEN + 2;
/// Frame bytes carried by the name alone; longer frames put the rest in UUIDs (spec §6).
pub const NAME_BYTES: usize = 22;
/// Characters of A85(F[0..22]) (spec §6).
pub const NAME_HEAD_CHARS: usize = 28;
/// Longest BeeTS local name: 28 characters plus the length character (spec §6).
pub const MAX_NAME_LEN: usize = NAME_HEAD_CHARS + 1;
/// Most 16-bit service UUIDs a frame uses (⌈8·11/13⌉; spec §6).
pub const MAX_UUIDS: usize = 7;
/// Bits of frame data per UUID; the top 3 bits are the slot index (spec §6).
pub const UUID_DATA_BITS: u32 = 13;
/// Most candidate combinations [`unpack`] examines; more and the frame is dropped unexamined
/// (spec §6).
pub const MAX_COMBINATIONS: usize = 256;
/// The first length character, `"` (t = 1); the last is `,` (t = 11) (spec §6).
const LENGTH_CHAR_BASE: u8 = 0x21;

/// CRC-8/SMBUS (poly 0x07, init 0, no reflection, xorout 0; check 0xF4), spec §6.
#[cfg(test)]
pub(crate) const CRC8: Crc<u8> = Crc::<u8>::new(&CRC_8_SMBUS);

/// The frame check of spec §6: CRC-8/SMBUS (poly 0x07, init 0, no reflection, xorout 0) of
/// `bytes` (`seq ‖ message` for a frame).
///
/// ```
/// assert_eq!(beets_core::ble::crc8(b"123456789"), 0xf4);
/// ```
pub fn crc8(bytes: &[u8]) -> u8 {
    CRC8_SLICE16.checksum(bytes)
}

/// [`CRC8`] computed 16 bytes at a time (16 tables, 4 KiB): the one-table form is a chain of
/// dependent loads, one per byte, that dominated framing a 25-byte frame.
static CRC8_SLICE16: Crc<u8, Table<16>> = Crc::<u8, Table<16>>::new(&CRC_8_SMBUS);

/// What one frame looks like on the air: the local name and the 16-bit service UUID values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BleAdvertisement {
    /// The ASCII85 local name, 7..=29 characters (goes in the scan response).
    pub local_name: ArrayString<MAX_NAME_LEN>,
    /// 16-bit service UUID values in slot order, 0..=7 of them (AD type 0x03, sent
    /// little-endian; stacks show them as `0000XXXX-0000-1000-8000-00805F9B34FB`).
    pub service_uuids: ArrayVec<u16, MAX_UUIDS>,
}

/// A frame recovered by [`unpack`].
#[derive(Clone, Debug, PartialEq)]
pub struct BleFrame {
    /// The sender's frame sequence number.
    pub seq: u8,
    /// The frame's CRC (with `seq` and the sender address, the dedup key of spec §8).
    pub crc: u8,
    /// The decoded message.
    pub decoded: Decoded,
}

/// Why a message could not be framed, or an advertisement is not a valid BeeTS frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// At the sender: the message does not fit one advertisement.
    #[error("message needs {len} bytes, a BLE frame carries {max}")]
    MessageTooLong {
        /// Message length.
        len: usize,
        /// [`MAX_MESSAGE_LEN`].
        max: usize,
    },
    /// At the sender: shorter than any valid message.
    #[error("message of {len} bytes is shorter than the smallest valid message ({min} bytes)")]
    MessageTooShort {
        /// Message length.
        len: usize,
        /// [`MIN_MESSAGE_LEN`].
        min: usize,
    },
    /// A name over 29 characters: not a BeeTS name.
    #[error("local name of {len} characters is not a BeeTS name (at most {max})")]
    NameTooLong {
        /// Name length in bytes.
        len: usize,
        /// [`MAX_NAME_LEN`].
        max: usize,
    },
    /// A 29-character name whose last character is not `"`..=`,`.
    #[error("length character {found:?} is outside '\"'..=',' (tail of 1..=11 bytes)")]
    BadLengthChar {
        /// The character found.
        found: char,
    },
    /// The name is not canonical ASCII85.
    #[error("local name is not BeeTS ASCII85: {0}")]
    Ascii85(#[from] Ascii85Error),
    /// The frame is shorter than 5 bytes.
    #[error("frame of {len} bytes is shorter than the minimum {min}")]
    FrameTooShort {
        /// Decoded frame length.
        len: usize,
        /// [`MIN_FRAME_LEN`].
        min: usize,
    },
    /// No UUID carries the given slot.
    #[error("no service UUID for slot {slot} of {slots}")]
    MissingSlot {
        /// The empty slot.
        slot: usize,
        /// Slots the length character announces.
        slots: usize,
    },
    /// More candidate combinations than [`MAX_COMBINATIONS`].
    #[error("{count} UUID combinations exceed the limit of {max}; frame dropped unexamined")]
    TooManyCombinations {
        /// Combinations the UUID set offers (saturating).
        count: usize,
        /// [`MAX_COMBINATIONS`].
        max: usize,
    },
    /// The only candidate has non-zero pad bits.
    #[error("non-zero pad bits in the last UUID")]
    BadPadBits,
    /// The only candidate has a wrong CRC.
    #[error("CRC mismatch: frame says {found:#04x}, computed {computed:#04x}")]
    BadCrc {
        /// CRC byte in the frame.
        found: u8,
        /// CRC computed over seq ‖ message.
        computed: u8,
    },
    /// The only candidate's message does not decode.
    #[error("frame message: {0}")]
    Message(#[from] DecodeError),
    /// In a sealed space: the only candidate's message fails spec §12 receiving step 1, 2 or 4.
    #[error("sealed frame message: {0}")]
    Sealed(crate::sealed::OpenError),
    /// Several candidates, none valid.
    #[error("none of {tried} UUID combinations gives a valid frame")]
    NoValidCombination {
        /// Combinations examined.
        tried: usize,
    },
    /// Several candidates valid: never guessed.
    #[error("{valid} of {tried} UUID combinations give valid frames; ambiguous frame dropped")]
    Ambiguous {
        /// Combinations that passed.
        valid: usize,
        /// Combinations examined.
        tried: usize,
    },
}

/// Frames an encoded message (as [`Message::emit`] wrote it, encrypted or not) with sequence
/// number `seq`.
///
/// # Errors
/// [`FrameError::MessageTooLong`] over 31 bytes (the message names both sizes),
/// [`FrameError::MessageTooShort`] under 3.
pub fn pack(seq: u8, message: &[u8]) -> Result<BleAdvertisement, FrameError> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(FrameError::MessageTooLong {
            len: message.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    if message.len() < MIN_MESSAGE_LEN {
        return Err(FrameError::MessageTooShort {
            len: message.len(),
            min: MIN_MESSAGE_LEN,
        });
    }
    let n = message.len() + 2;
    let mut frame = [0u8; MAX_FRAME_LEN];
    frame[0] = seq;
    frame[1..n - 1].copy_from_slice(message);
    frame[n - 1] = CRC8_SLICE16.checksum(&frame[..n - 1]);

    let head = n.min(NAME_BYTES);
    let mut name_buf = [0u8; MAX_NAME_LEN];
    // 22 bytes encode to 28 characters: the buffer always fits.
    let Ok(mut len) = ascii85::encode_into(&frame[..head], &mut name_buf) else {
        unreachable!("a name buffer of 29 characters holds A85 of 22 bytes")
    };
    let mut service_uuids = ArrayVec::new();
    if n > NAME_BYTES {
        let t = n - NAME_BYTES;
        name_buf[len] = LENGTH_CHAR_BASE + t as u8;
        len += 1;
        let (m, pad) = slots_for(t);
        let mut bits: u128 = 0;
        for &b in &frame[NAME_BYTES..n] {
            bits = (bits << 8) | u128::from(b);
        }
        bits <<= pad;
        for j in 0..m {
            let shift = UUID_DATA_BITS * (m - 1 - j) as u32;
            let d = ((bits >> shift) & 0x1fff) as u16;
            service_uuids.push(((j as u16) << UUID_DATA_BITS) | d);
        }
    }
    // One conversion of the whole name (pushing it char by char cost more than framing it).
    let name = std::str::from_utf8(&name_buf[..len]).ok();
    let Some(Ok(local_name)) = name.map(ArrayString::from) else {
        unreachable!("A85 output is ASCII, and at most 29 characters")
    };
    Ok(BleAdvertisement {
        local_name,
        service_uuids,
    })
}

/// Frames `message`, emitting it with `key` first (convenience over [`Message::emit`] + [`pack`]).
///
/// # Errors
/// [`FrameError::MessageTooLong`] when the encoded message exceeds 31 bytes.
pub fn pack_message(
    seq: u8,
    message: &Message,
    key: Option<&FpeKey>,
) -> Result<BleAdvertisement, FrameError> {
    let len = message.buffer_len();
    if len > MAX_MESSAGE_LEN {
        return Err(FrameError::MessageTooLong {
            len,
            max: MAX_MESSAGE_LEN,
        });
    }
    let mut buf = [0u8; MAX_MESSAGE_LEN];
    let n = message
        .emit(&mut buf, key)
        .map_err(|e| FrameError::MessageTooLong {
            len: e.needed,
            max: MAX_MESSAGE_LEN,
        })?;
    pack(seq, &buf[..n])
}

/// Number of UUID slots and pad bits for a tail of `t` bytes.
#[inline]
const fn slots_for(t: usize) -> (usize, u32) {
    let bits = 8 * t;
    let m = bits.div_ceil(UUID_DATA_BITS as usize);
    (m, (m * UUID_DATA_BITS as usize - bits) as u32)
}

/// Recovers a frame from a received local name and the device's 16-bit service UUID values, as
/// an unordered set that may hold stale UUIDs of earlier frames and foreign UUIDs (spec §6,
/// "Receiving"). Duplicated values count once.
///
/// `key` decrypts E = 1 messages; without a key an E = 1 frame fails with
/// [`DecodeError::EncryptedNoKey`].
///
/// Cost: one ASCII85 decode and one CRC over the name's bytes, then per combination a CRC over
/// the ≤ 11 tail bytes and, when it matches, one parse; at most [`MAX_COMBINATIONS`]
/// combinations.
///
/// # Errors
/// A [`FrameError`] naming why this is not exactly one valid BeeTS frame.
pub fn unpack(name: &str, uuids: &[u16], key: Option<&FpeKey>) -> Result<BleFrame, FrameError> {
    let (seq, crc, decoded) = unpack_with(name, uuids, |m| Ok(Message::parse(m, key)?))?;
    Ok(BleFrame { seq, crc, decoded })
}

/// A frame of a sealed space (spec §6 with §12), from [`unpack_sealed`].
#[derive(Clone, Debug, PartialEq)]
pub struct SealedFrame {
    /// The sender's frame sequence number.
    pub seq: u8,
    /// The frame's CRC.
    pub crc: u8,
    /// The authenticated header: source id and counter, for the replay window (§12 step 3).
    pub opened: crate::sealed::Opened,
    /// The decrypted message.
    pub message: Message,
}

/// As [`unpack`] for a sealed space (spec §6 "Receiving" with §12): a candidate combination
/// "parses" when it passes §12 receiving steps 1, 2 and 4 with `key`. Step 3, the replay window,
/// is the caller's, once, on the frame returned.
///
/// Cost: as [`unpack`], with one AES block and one CCM pass per candidate whose CRC matches.
///
/// # Errors
/// A [`FrameError`]; a single candidate's §12 failure is [`FrameError::Sealed`] with its reason.
pub fn unpack_sealed(
    name: &str,
    uuids: &[u16],
    key: &crate::sealed::SealKey,
) -> Result<SealedFrame, FrameError> {
    let (seq, crc, (opened, message)) = unpack_with(name, uuids, |m| {
        key.open_message(crate::Transport::Ble, m)
            .map_err(FrameError::Sealed)
    })?;
    Ok(SealedFrame {
        seq,
        crc,
        opened,
        message,
    })
}

/// A frame's message bytes exactly as sent (FPE-encrypted or sealed as they were), from
/// [`unpack_raw`]: what a gateway forwards to another transport without the message changing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// The sender's frame sequence number.
    pub seq: u8,
    /// The frame's CRC (with `seq` and the sender address, the dedup key of spec §8).
    pub crc: u8,
    /// The message as sent, 3..=31 bytes.
    pub message: ArrayVec<u8, MAX_MESSAGE_LEN>,
}

/// As [`unpack`], returning the message bytes as sent instead of the decoded message. `check`
/// decides whether a candidate's message bytes "parse" (spec §6 "Receiving": for a frame with
/// UUIDs it selects the one combination that does), e.g. `Message::parse` with the space's
/// key, or §12 steps 1, 2 and 4 for a sealed space.
///
/// # Errors
/// A [`FrameError`] naming why this is not exactly one valid BeeTS frame; `check`'s error for a
/// single candidate.
pub fn unpack_raw(
    name: &str,
    uuids: &[u16],
    mut check: impl FnMut(&[u8]) -> Result<(), FrameError>,
) -> Result<RawFrame, FrameError> {
    let (seq, crc, message) = unpack_with(name, uuids, |m| {
        check(m)?;
        // A frame holds at most MAX_MESSAGE_LEN message bytes, so this never truncates.
        Ok(m.iter().copied().take(MAX_MESSAGE_LEN).collect())
    })?;
    Ok(RawFrame { seq, crc, message })
}

/// The frame search of [`unpack`], with `check` deciding whether a candidate's message
/// (`seq` and CRC removed) is valid; returns `(seq, crc, what check gave)`.
#[inline(always)] // one copy per caller: the decoded message is built in place, not moved
fn unpack_with<T>(
    name: &str,
    uuids: &[u16],
    mut check: impl FnMut(&[u8]) -> Result<T, FrameError>,
) -> Result<(u8, u8, T), FrameError> {
    let name = name.as_bytes();
    if name.len() > MAX_NAME_LEN {
        return Err(FrameError::NameTooLong {
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    let mut frame = [0u8; MAX_FRAME_LEN];
    if name.len() < MAX_NAME_LEN {
        // Name-only frame: UUIDs are ignored.
        let n = ascii85::decode_into(name, &mut frame[..NAME_BYTES])?;
        if n < MIN_FRAME_LEN {
            return Err(FrameError::FrameTooShort {
                len: n,
                min: MIN_FRAME_LEN,
            });
        }
        let computed = CRC8_SLICE16.checksum(&frame[..n - 1]);
        return check_frame(&frame[..n], computed, &mut check);
    }

    let last = name[NAME_HEAD_CHARS];
    let t = usize::from(last.wrapping_sub(LENGTH_CHAR_BASE));
    if !(1..=MAX_FRAME_LEN - NAME_BYTES).contains(&t) {
        return Err(FrameError::BadLengthChar {
            found: char::from(last),
        });
    }
    let head = ascii85::decode_into(&name[..NAME_HEAD_CHARS], &mut frame[..NAME_BYTES])?;
    debug_assert_eq!(head, NAME_BYTES);
    let n = NAME_BYTES + t;
    let (m, pad) = slots_for(t);

    // Candidates per slot, sorted and deduplicated. A slot with more than MAX_COMBINATIONS
    // candidates exceeds the limit by itself.
    let mut slots: [ArrayVec<u16, MAX_COMBINATIONS>; MAX_UUIDS] = Default::default();
    for &u in uuids {
        let j = usize::from(u >> UUID_DATA_BITS);
        if j < m {
            let data = u & 0x1fff;
            if !slots[j].contains(&data) && slots[j].try_push(data).is_err() {
                return Err(FrameError::TooManyCombinations {
                    count: usize::MAX,
                    max: MAX_COMBINATIONS,
                });
            }
        }
    }
    let mut count: usize = 1;
    for (slot, c) in slots[..m].iter().enumerate() {
        if c.is_empty() {
            return Err(FrameError::MissingSlot { slot, slots: m });
        }
        count = count.saturating_mul(c.len());
    }
    if count > MAX_COMBINATIONS {
        return Err(FrameError::TooManyCombinations {
            count,
            max: MAX_COMBINATIONS,
        });
    }

    // Every candidate shares F[0..22]: its CRC is computed once.
    let mut head_crc = CRC8_SLICE16.digest();
    head_crc.update(&frame[..NAME_BYTES]);
    let crc = |frame: &[u8; MAX_FRAME_LEN]| {
        let mut d = head_crc.clone();
        d.update(&frame[NAME_BYTES..n - 1]);
        d.finalize()
    };
    // Writes the tail of the combination `idx` (candidate `idx[j]` in slot j) into the frame;
    // `BadPadBits` when its pad bits are not zero.
    let fill_tail = |frame: &mut [u8; MAX_FRAME_LEN], idx: &[usize; MAX_UUIDS]| {
        let mut bits: u128 = 0;
        for j in 0..m {
            bits = (bits << UUID_DATA_BITS) | u128::from(slots[j][idx[j]]);
        }
        if bits & ((1u128 << pad) - 1) != 0 {
            return Err(FrameError::BadPadBits);
        }
        let tail = bits >> pad;
        for i in 0..t {
            frame[NAME_BYTES + i] = (tail >> (8 * (t - 1 - i))) as u8;
        }
        Ok(())
    };
    let mut idx = [0usize; MAX_UUIDS];
    if count == 1 {
        // The usual case, no stale UUIDs: the only candidate's error is the frame's, and its
        // frame is returned without passing through `found`.
        fill_tail(&mut frame, &idx)?;
        return check_frame(&frame[..n], crc(&frame), &mut check);
    }

    let mut found: Option<(u8, u8, T)> = None;
    let mut valid = 0;
    for _ in 0..count {
        let candidate = fill_tail(&mut frame, &idx)
            .and_then(|()| check_frame(&frame[..n], crc(&frame), &mut check));
        if let Ok(f) = candidate {
            valid += 1;
            found.get_or_insert(f);
        }
        // Mixed-radix increment.
        for j in 0..m {
            idx[j] += 1;
            if idx[j] < slots[j].len() {
                break;
            }
            idx[j] = 0;
        }
    }
    match (valid, found) {
        (1, Some(f)) => Ok(f),
        (0, _) => Err(FrameError::NoValidCombination { tried: count }),
        _ => Err(FrameError::Ambiguous {
            valid,
            tried: count,
        }),
    }
}

/// CRC and message checks of one candidate frame, whose CRC over `seq ‖ message` the caller
/// has `computed`.
#[inline(always)]
fn check_frame<T>(
    frame: &[u8],
    computed: u8,
    check: &mut impl FnMut(&[u8]) -> Result<T, FrameError>,
) -> Result<(u8, u8, T), FrameError> {
    let n = frame.len();
    let found = frame[n - 1];
    if computed != found {
        return Err(FrameError::BadCrc { found, computed });
    }
    Ok((frame[0], found, check(&frame[1..n - 1])?))
}

pub mod scheduler;

#[cfg(test)]
mod tests;
