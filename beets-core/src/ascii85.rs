//! The checked Ascii85 codec of the BLE local name (spec §6).
//!
//! A BeeTS BLE frame travels (in part) as the advertised local name, written with the 85
//! printable characters `!` (0x21) ..= `u` (0x75):
//!
//! - each full group of 4 bytes, read as a big-endian `u32`, becomes 5 base-85 digits, most
//!   significant first, digit `d` written as the byte `0x21 + d`;
//! - a final partial group of k bytes (1..=3) is padded with zero bytes, encoded as 5 digits, and
//!   only the first k + 1 characters are kept;
//! - there is no `z` shortcut for a zero group, no `<~ ~>` delimiters and no whitespace.
//!
//! Decoding pads a final partial group with `u` (digit 84) and rejects, as distinct
//! [`Ascii85Error`]s: a character outside the alphabet, a group worth more than 2^32 − 1, a final
//! group of a single character (it carries no byte), and any text whose re-encoding differs from
//! it (non-canonical: several texts would otherwise decode to the same bytes). So every byte
//! string has exactly one encoding, and `encode(decode(s)?) == s` whenever decoding succeeds.
//!
//! # Why not the `ascii85` crate
//!
//! Radio names are untrusted input. The `ascii85` crate 0.2.1 wraps its output in `<~ ~>`, emits
//! a `z` for an all-zero group that its own decoder cannot read back, and panics with an integer
//! overflow on hostile input as short as `"s"`. This module never panics, whatever the input, and
//! needs no allocation on the frame path ([`encode_into`], [`decode_into`]). The crate stays a
//! dev-dependency to cross-check encodings in the tests.
//!
//! # Example
//!
//! ```
//! use beets_core::ascii85;
//!
//! // Spec §10: the BLE frame of the INP pattern ("SENSOR", ?int16) with seq 0.
//! let frame = [0x00, 0x58, 0xd0, 0x24, 0x0c, 0x53, 0x45, 0x4e, 0x53, 0x4f, 0x52, 0xda];
//! let mut name = [0u8; 29];
//! let n = ascii85::encode_into(&frame, &mut name)?;
//! assert_eq!(&name[..n], b"!*ISn$r]Si;bp<F");
//!
//! let mut back = [0u8; 33];
//! let m = ascii85::decode_into(&name[..n], &mut back)?;
//! assert_eq!(back[..m], frame);
//!
//! // Hostile names are errors, not panics.
//! assert!(ascii85::decode("s").is_err());
//! assert!(ascii85::decode("<~z~>").is_err());
//! # Ok::<(), ascii85::Ascii85Error>(())
//! ```

/// The first character of the alphabet, `!`, digit 0 (spec §6).
pub const FIRST_CHAR: u8 = b'!';
/// The last character of the alphabet, `u`, digit 84 (spec §6); also the pad of a final
/// partial group when decoding.
pub const LAST_CHAR: u8 = b'u';
/// Number of digits, 85.
const BASE: u32 = 85;
/// Bytes in a full group.
const GROUP_BYTES: usize = 4;
/// Characters in a full group.
const GROUP_CHARS: usize = 5;

/// Why a text is not a valid (canonical) Ascii85 encoding, or why an output buffer cannot hold
/// the result (spec §6).
///
/// Indices count bytes of the input text from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Ascii85Error {
    /// A byte outside `!`..=`u`: a `z` shortcut, a `<~ ~>` delimiter, whitespace, or a name that
    /// is not BeeTS Ascii85 at all.
    #[error("byte {byte:#04x} at index {index} is outside the Ascii85 alphabet '!'..='u'")]
    BadChar {
        /// Index of the byte in the text.
        index: usize,
        /// The offending byte (for a non-ASCII `&str`, the first byte of its UTF-8 encoding).
        byte: u8,
    },
    /// A group (5 characters, or a final partial group padded with `u`) is worth more than
    /// 2^32 − 1, so it encodes no 4 bytes; e.g. `s8W-"` (exactly 2^32) or `uuuuu`.
    #[error("the Ascii85 group starting at index {index} is worth more than 2^32 - 1")]
    GroupOverflow {
        /// Index of the group's first character.
        index: usize,
    },
    /// The text length is 1 more than a multiple of 5: its final group of 1 character carries
    /// no byte (an encoder never writes it; a truncated or forged name does).
    #[error("a final Ascii85 group of 1 character carries no byte")]
    LoneFinalChar,
    /// The final partial group decodes, but the bytes re-encode to other characters; a canonical
    /// encoder never writes it (e.g. `!u`, which decodes to `03` whose encoding is `!r`).
    #[error(
        "the Ascii85 group starting at index {index} is not canonical: it re-encodes differently"
    )]
    NonCanonical {
        /// Index of the group's first character.
        index: usize,
    },
    /// The output buffer is too short: `needed` bytes (decoded bytes for [`decode_into`],
    /// characters for [`encode_into`]), `available` given.
    #[error("the output needs {needed} bytes, the buffer has {available}")]
    OutputTooSmall {
        /// Bytes the output needs.
        needed: usize,
        /// Length of the buffer that was passed.
        available: usize,
    },
}

/// Number of characters that encode `n` bytes (spec §6): 5 per full group of 4 bytes, k + 1 for a
/// final partial group of k bytes. `encoded_len(22) == 28`, `encoded_len(12) == 15`.
///
/// Saturates at `usize::MAX` for `n` above `isize::MAX`, which no slice length reaches.
#[must_use]
pub const fn encoded_len(n: usize) -> usize {
    let rem = n % GROUP_BYTES;
    let tail = if rem == 0 { 0 } else { rem + 1 };
    (n / GROUP_BYTES)
        .saturating_mul(GROUP_CHARS)
        .saturating_add(tail)
}

/// Number of bytes that `chars` characters decode to (spec §6), or `None` when `chars % 5 == 1`
/// (a final group of 1 character, [`Ascii85Error::LoneFinalChar`]). `decoded_len(28) ==
/// Some(22)`.
///
/// The length alone does not make a text valid; [`decode_into`] checks the characters.
#[must_use]
pub const fn decoded_len(chars: usize) -> Option<usize> {
    let rem = chars % GROUP_CHARS;
    if rem == 1 {
        None
    } else {
        let tail = if rem == 0 { 0 } else { rem - 1 };
        Some(chars / GROUP_CHARS * GROUP_BYTES + tail)
    }
}

/// Encodes `data` into `out` as ASCII bytes of `!`..=`u` (spec §6) and returns the number of
/// bytes written, [`encoded_len`]`(data.len())`. Bytes of `out` past that are left as they were.
///
/// No allocation; a BLE frame (≤ 33 bytes) gives at most 42 characters, and the 22 bytes that fit
/// a local name give 28.
///
/// # Errors
///
/// [`Ascii85Error::OutputTooSmall`] when `out` is shorter than `encoded_len(data.len())`
/// (nothing is written then). Any `data` is encodable.
pub fn encode_into(data: &[u8], out: &mut [u8]) -> Result<usize, Ascii85Error> {
    let needed = encoded_len(data.len());
    let available = out.len();
    if available < needed {
        return Err(Ascii85Error::OutputTooSmall { needed, available });
    }
    let groups = data.chunks_exact(GROUP_BYTES);
    let tail = groups.remainder();
    let mut slots = out.chunks_exact_mut(GROUP_CHARS);
    for (group, slot) in groups.zip(&mut slots) {
        let mut word = [0u8; GROUP_BYTES];
        word.copy_from_slice(group);
        slot.copy_from_slice(&encode_group(u32::from_be_bytes(word)));
    }
    if !tail.is_empty() {
        let start = needed - (tail.len() + 1);
        out[start..needed].copy_from_slice(&encode_partial(tail)[..=tail.len()]);
    }
    Ok(needed)
}

/// Encodes `data` as a new `String` of `!`..=`u` (spec §6); the allocating form of
/// [`encode_into`]. The string has [`encoded_len`]`(data.len())` characters.
#[must_use]
pub fn encode(data: &[u8]) -> String {
    let mut text = String::with_capacity(encoded_len(data.len()));
    let groups = data.chunks_exact(GROUP_BYTES);
    let tail = groups.remainder();
    for group in groups {
        let mut word = [0u8; GROUP_BYTES];
        word.copy_from_slice(group);
        text.extend(encode_group(u32::from_be_bytes(word)).map(char::from));
    }
    if !tail.is_empty() {
        text.extend(
            encode_partial(tail)[..=tail.len()]
                .iter()
                .copied()
                .map(char::from),
        );
    }
    text
}

/// Decodes the Ascii85 `text` (spec §6) into `out` and returns the number of bytes written,
/// [`decoded_len`]`(text.len())`. Only `out[..n]` is written; after an error, a prefix of it may
/// hold the groups decoded before the bad one.
///
/// No allocation, never panics: every input, including hostile radio names, gives `Ok` or an
/// error. Empty text decodes to 0 bytes.
///
/// # Errors
///
/// - [`Ascii85Error::OutputTooSmall`] when `out` cannot hold the decoded length (checked first,
///   before any character);
/// - [`Ascii85Error::BadChar`] for a byte outside `!`..=`u` (`z`, `<~`, `~>`, whitespace, …);
/// - [`Ascii85Error::GroupOverflow`] for a group worth more than 2^32 − 1;
/// - [`Ascii85Error::LoneFinalChar`] when `text.len() % 5 == 1`;
/// - [`Ascii85Error::NonCanonical`] when the final partial group does not re-encode to itself.
///
/// Groups are checked in order, so the error names the first bad group; within the final group,
/// a bad character is reported before a lone final character.
pub fn decode_into(text: &[u8], out: &mut [u8]) -> Result<usize, Ascii85Error> {
    let groups = text.chunks_exact(GROUP_CHARS);
    let tail = groups.remainder();
    let full_bytes = text.len() / GROUP_CHARS * GROUP_BYTES;
    let needed = full_bytes + tail.len().saturating_sub(1);
    let available = out.len();
    if available < needed {
        return Err(Ascii85Error::OutputTooSmall { needed, available });
    }

    let mut index = 0;
    for (group, slot) in groups.zip(out.chunks_exact_mut(GROUP_BYTES)) {
        // A full group of 5 digits worth at most 2^32 - 1 is its own unique base-85 spelling, so
        // it is canonical by construction; only the range needs a check.
        let value = digits_value(group, index)?;
        let word = u32::try_from(value).map_err(|_| Ascii85Error::GroupOverflow { index })?;
        slot.copy_from_slice(&word.to_be_bytes());
        index += GROUP_CHARS;
    }

    if !tail.is_empty() {
        let mut value = digits_value(tail, index)?;
        if tail.len() == 1 {
            return Err(Ascii85Error::LoneFinalChar);
        }
        for _ in tail.len()..GROUP_CHARS {
            value = value * u64::from(BASE) + u64::from(LAST_CHAR - FIRST_CHAR);
        }
        let word = u32::try_from(value).map_err(|_| Ascii85Error::GroupOverflow { index })?;
        let bytes = word.to_be_bytes();
        let kept = &bytes[..tail.len() - 1];
        // Compared in place, not as slices (which is a `bcmp` call for 2 to 4 bytes).
        if !encode_partial(kept).iter().zip(tail).all(|(a, b)| a == b) {
            return Err(Ascii85Error::NonCanonical { index });
        }
        out[full_bytes..needed].copy_from_slice(kept);
    }
    Ok(needed)
}

/// Decodes the Ascii85 `text` (spec §6) into a new `Vec` of [`decoded_len`]`(text.len())`
/// bytes; the allocating form of [`decode_into`]. Never panics.
///
/// # Errors
///
/// As [`decode_into`] (except [`Ascii85Error::OutputTooSmall`], which cannot happen here): a
/// character outside `!`..=`u` (a non-ASCII character is reported by its first UTF-8 byte), a
/// group over 2^32 − 1, a lone final character, or a non-canonical final group.
pub fn decode(text: &str) -> Result<Vec<u8>, Ascii85Error> {
    let text = text.as_bytes();
    let capacity = text.len() / GROUP_CHARS * GROUP_BYTES + GROUP_BYTES;
    let mut out = vec![0u8; capacity];
    let n = decode_into(text, &mut out)?;
    out.truncate(n);
    Ok(out)
}

/// The 5 characters of one group value, most significant digit first.
#[inline]
fn encode_group(mut word: u32) -> [u8; GROUP_CHARS] {
    let mut chars = [0u8; GROUP_CHARS];
    for c in chars.iter_mut().rev() {
        // `word % BASE` < 85, so the cast is exact.
        *c = FIRST_CHAR + (word % BASE) as u8;
        word /= BASE;
    }
    chars
}

/// The 5 characters of a final partial group (`tail.len()` < 4) padded with zero bytes; the
/// encoding keeps the first `tail.len() + 1`.
#[inline]
fn encode_partial(tail: &[u8]) -> [u8; GROUP_CHARS] {
    // The big-endian word of `tail` ‖ zeros, built in a register (a copy into a 4-byte array
    // became a `memcpy` call).
    let word = tail
        .iter()
        .take(GROUP_BYTES)
        .enumerate()
        .fold(0u32, |w, (i, &b)| w | u32::from(b) << (24 - 8 * i));
    encode_group(word)
}

/// Value of up to 5 digits (at most 85^5 − 1 < 2^33, so a `u64` cannot overflow), or
/// [`Ascii85Error::BadChar`] for the first byte outside the alphabet. `start` is the index of
/// `chars[0]` in the whole text.
#[inline]
fn digits_value(chars: &[u8], start: usize) -> Result<u64, Ascii85Error> {
    let mut value = 0u64;
    for (offset, &byte) in chars.iter().enumerate() {
        let digit = byte.wrapping_sub(FIRST_CHAR);
        if digit > LAST_CHAR - FIRST_CHAR {
            return Err(Ascii85Error::BadChar {
                index: start + offset,
                byte,
            });
        }
        value = value * u64::from(BASE) + u64::from(digit);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Spec §10, "BLE frame, name only".
    const FRAME_12: [u8; 12] = [
        0x00, 0x58, 0xd0, 0x24, 0x0c, 0x53, 0x45, 0x4e, 0x53, 0x4f, 0x52, 0xda,
    ];
    const NAME_12: &str = "!*ISn$r]Si;bp<F";
    /// Spec §10, "BLE frame, 1 tail byte": F[0..22] and the 28 characters before the length
    /// character `"`.
    const FRAME_22: [u8; 22] = [
        0x07, 0x48, 0xf6, 0x0c, 0x53, 0x45, 0x4e, 0x53, 0x4f, 0x52, 0x0a, 0x4c, 0x49, 0x47, 0x48,
        0x54, 0x02, 0x00, 0x3f, 0xc0, 0x00, 0x00,
    ];
    const NAME_29: &str = "#>\"Os;ajG[:JqNn8Ol<N!WYI#!!!\"";

    fn bad(index: usize, byte: u8) -> Ascii85Error {
        Ascii85Error::BadChar { index, byte }
    }

    fn assert_rejects(text: &str, expected: &Ascii85Error) {
        assert_eq!(decode(text).as_ref(), Err(expected), "decode({text:?})");
        let mut out = [0u8; 64];
        assert_eq!(
            decode_into(text.as_bytes(), &mut out).as_ref(),
            Err(expected),
            "decode_into({text:?})"
        );
    }

    #[test]
    fn lengths() {
        let chars = [0, 2, 3, 4, 5, 7, 8, 9, 10];
        for (n, c) in chars.into_iter().enumerate() {
            assert_eq!(encoded_len(n), c);
            assert_eq!(decoded_len(c), Some(n));
        }
        assert_eq!(encoded_len(12), 15);
        assert_eq!(encoded_len(22), 28);
        assert_eq!(encoded_len(33), 42);
        assert_eq!(decoded_len(1), None);
        assert_eq!(decoded_len(6), None);
        assert_eq!(decoded_len(28), Some(22));
        assert_eq!(encoded_len(usize::MAX), usize::MAX);
        assert_eq!(decoded_len(usize::MAX), Some(usize::MAX / 5 * 4));
    }

    #[test]
    fn spec_vector_name_only() {
        assert_eq!(encode(&FRAME_12), NAME_12);
        assert_eq!(decode(NAME_12).unwrap(), FRAME_12);
        let mut name = [0u8; 15];
        assert_eq!(encode_into(&FRAME_12, &mut name), Ok(15));
        assert_eq!(&name, NAME_12.as_bytes());
        let mut frame = [0u8; 12];
        assert_eq!(decode_into(&name, &mut frame), Ok(12));
        assert_eq!(frame, FRAME_12);
    }

    #[test]
    fn spec_vector_28_char_prefix() {
        let prefix = &NAME_29[..28];
        assert_eq!(prefix, "#>\"Os;ajG[:JqNn8Ol<N!WYI#!!!");
        assert_eq!(encode(&FRAME_22), prefix);
        assert_eq!(decode(prefix).unwrap(), FRAME_22);
        // The whole 29-character name is not plain Ascii85: its last group is 4 characters
        // ("!!!\"" after 25), which does not re-encode (the frame layer strips it first).
        assert!(decode(NAME_29).is_err());
    }

    #[test]
    fn empty_and_partial_groups() {
        assert_eq!(encode(&[]), "");
        assert_eq!(decode(""), Ok(vec![]));
        assert_eq!(encode(&[0]), "!!");
        assert_eq!(encode(&[0, 0, 0, 0]), "!!!!!");
        assert_eq!(decode("!!!!!"), Ok(vec![0, 0, 0, 0]));
        assert_eq!(encode(&[0xff; 4]), "s8W-!");
        assert_eq!(decode("s8W-!"), Ok(vec![0xff; 4]));
        assert_eq!(encode(&[0xff; 3]), "s8W*");
        assert_eq!(decode("s8W*"), Ok(vec![0xff; 3]));
        assert_eq!(encode(&[3]), "!r");
        assert_eq!(decode("!r"), Ok(vec![3]));
    }

    #[test]
    fn encode_into_rejects_short_output() {
        let mut out = [0xAAu8; 14];
        assert_eq!(
            encode_into(&FRAME_12, &mut out),
            Err(Ascii85Error::OutputTooSmall {
                needed: 15,
                available: 14
            })
        );
        assert_eq!(out, [0xAA; 14]);
        assert_eq!(encode_into(&[], &mut []), Ok(0));
    }

    #[test]
    fn decode_into_rejects_short_output() {
        let mut out = [0u8; 11];
        assert_eq!(
            decode_into(NAME_12.as_bytes(), &mut out),
            Err(Ascii85Error::OutputTooSmall {
                needed: 12,
                available: 11
            })
        );
    }

    #[test]
    fn decode_rejects_char_outside_alphabet() {
        for (text, index, byte) in [
            ("!!!! ", 4, b' '),
            ("v", 0, b'v'),
            ("!!!!!~", 5, b'~'),
            ("\u{7f}!", 0, 0x7f),
            ("!\0", 1, 0),
            ("!é", 1, 0xc3),
        ] {
            assert_rejects(text, &bad(index, byte));
        }
        assert_eq!(
            Ascii85Error::BadChar {
                index: 3,
                byte: b'z'
            }
            .to_string(),
            "byte 0x7a at index 3 is outside the Ascii85 alphabet '!'..='u'"
        );
    }

    #[test]
    fn decode_rejects_z_shortcut() {
        // What the `ascii85` crate writes for 4 zero bytes, alone and inside a name.
        assert_rejects("z", &bad(0, b'z'));
        assert_rejects("!!!!!z", &bad(5, b'z'));
        assert_rejects("z!!", &bad(0, b'z'));
    }

    #[test]
    fn decode_rejects_group_overflow() {
        // s8W-" is exactly 2^32; s8W-! is 2^32 - 1 and fine.
        assert_rejects("s8W-\"", &Ascii85Error::GroupOverflow { index: 0 });
        assert_rejects("uuuuu", &Ascii85Error::GroupOverflow { index: 0 });
        assert_rejects("!!!!!uuuuu", &Ascii85Error::GroupOverflow { index: 5 });
        // A final partial group that overflows once padded with `u`.
        assert_rejects("!!!!!uu", &Ascii85Error::GroupOverflow { index: 5 });
        assert_rejects("s8X", &Ascii85Error::GroupOverflow { index: 0 });
    }

    #[test]
    fn decode_rejects_lone_final_char() {
        // "s" is the input that makes the `ascii85` crate 0.2.1 overflow.
        assert_rejects("s", &Ascii85Error::LoneFinalChar);
        assert_rejects("!", &Ascii85Error::LoneFinalChar);
        assert_rejects("!!!!!!", &Ascii85Error::LoneFinalChar);
        assert_eq!(decoded_len(1), None);
    }

    #[test]
    fn decode_rejects_non_canonical() {
        // "!u" pads to "!uuuu" = 85^4 - 1 = 0x031C84AF, byte 0x03, whose encoding is "!r".
        for text in ["!s", "!t", "!u", "!!!!!!u", "!!u", "!!!t"] {
            let index = if text.len() > 5 { 5 } else { 0 };
            assert_rejects(text, &Ascii85Error::NonCanonical { index });
        }
        // The spec's 29-character name: the final "!!!\"" (after 25 chars) decodes to 3 bytes
        // that re-encode as "!!!!".
        assert_rejects(NAME_29, &Ascii85Error::NonCanonical { index: 25 });
    }

    #[test]
    fn decode_rejects_whitespace() {
        for (text, index, byte) in [
            (" !!!!!", 0, b' '),
            ("!!!!!\n", 5, b'\n'),
            ("!!\t!!!", 2, b'\t'),
            ("!*ISn $r]Si", 5, b' '),
            ("!!!!!\r\n", 5, b'\r'),
        ] {
            assert_rejects(text, &bad(index, byte));
        }
    }

    #[test]
    fn decode_rejects_delimiters() {
        let wrapped = format!("<~{NAME_12}~>");
        assert_rejects(&wrapped, &bad(1, b'~'));
        assert_rejects("<~~>", &bad(1, b'~'));
        let trailing = format!("{NAME_12}~>");
        assert_rejects(&trailing, &bad(15, b'~'));
    }

    #[test]
    fn error_messages_name_the_cause() {
        assert_eq!(
            Ascii85Error::GroupOverflow { index: 5 }.to_string(),
            "the Ascii85 group starting at index 5 is worth more than 2^32 - 1"
        );
        assert_eq!(
            Ascii85Error::LoneFinalChar.to_string(),
            "a final Ascii85 group of 1 character carries no byte"
        );
        assert_eq!(
            Ascii85Error::OutputTooSmall {
                needed: 22,
                available: 16
            }
            .to_string(),
            "the output needs 22 bytes, the buffer has 16"
        );
    }

    /// The `ascii85` crate's encoding without `<~ ~>`, with its `z` mapped back to `!!!!!`.
    fn reference_encode(data: &[u8]) -> String {
        let wrapped = ::ascii85::encode(data);
        let inner = wrapped
            .strip_prefix("<~")
            .and_then(|s| s.strip_suffix("~>"))
            .expect("ascii85 crate wraps its output in <~ ~>");
        inner.replace('z', "!!!!!")
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(data in proptest::collection::vec(any::<u8>(), 0..=64)) {
            let text = encode(&data);
            prop_assert_eq!(text.len(), encoded_len(data.len()));
            prop_assert!(text.bytes().all(|c| (FIRST_CHAR..=LAST_CHAR).contains(&c)));
            prop_assert_eq!(decode(&text), Ok(data.clone()));

            let mut chars = [0u8; 80];
            let n = encode_into(&data, &mut chars).unwrap();
            prop_assert_eq!(&chars[..n], text.as_bytes());
            let mut bytes = [0u8; 64];
            let m = decode_into(&chars[..n], &mut bytes).unwrap();
            prop_assert_eq!(&bytes[..m], &data[..]);
        }

        #[test]
        fn encode_matches_ascii85_crate(data in proptest::collection::vec(any::<u8>(), 0..=64)) {
            prop_assert_eq!(encode(&data), reference_encode(&data));
        }

        #[test]
        fn encode_matches_ascii85_crate_with_zero_groups(
            data in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..=64),
        ) {
            prop_assert_eq!(encode(&data), reference_encode(&data));
        }

        #[test]
        fn decode_never_panics_and_is_canonical(
            text in proptest::collection::vec(any::<u8>(), 0..=40),
        ) {
            let mut out = [0u8; 32];
            if let Ok(n) = decode_into(&text, &mut out) {
                let mut again = [0u8; 40];
                let m = encode_into(&out[..n], &mut again).unwrap();
                prop_assert_eq!(&again[..m], &text[..]);
            }
            if let Ok(s) = core::str::from_utf8(&text)
                && let Ok(bytes) = decode(s)
            {
                prop_assert_eq!(encode(&bytes), s);
            }
        }

        #[test]
        fn decode_never_panics_on_alphabet_text(text in "[!-u]{0,40}") {
            // Mostly valid characters, so overflow and canonicity checks get exercised.
            if let Ok(bytes) = decode(&text) {
                prop_assert_eq!(encode(&bytes), text);
            }
        }
    }
}
