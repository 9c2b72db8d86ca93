//! Spec §6 fixtures, named rejections, stale/foreign UUID handling and the real-advertisement
//! negative corpus.

use super::*;
use crate::message::tests::arb_message;
use crate::text::parse_tuple;
use proptest::prelude::*;
use std::num::NonZeroU16;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const OUT_TUPLE: &str = "48 f6 0c 53 45 4e 53 4f 52 0a 4c 49 47 48 54 02 00 3f c0 00 00";
const OUT_LIFETIME: &str = "49 f6 0c 53 45 4e 53 4f 52 0a 4c 49 47 48 54 fe d4 41 ae 00 00 02 58";
const INP_PATTERN: &str = "58 d0 24 0c 53 45 4e 53 4f 52";

fn out_with_lifetime(seconds: u16) -> Message {
    Message::Out {
        tuple: parse_tuple(r#"("SENSOR", "LIGHT", -300, 21.75)"#).unwrap(),
        lifetime: NonZeroU16::new(seconds),
    }
}

#[test]
fn crc8_smbus_check_value() {
    assert_eq!(CRC8.checksum(b"123456789"), 0xf4);
    assert_eq!(CRC8_SLICE16.checksum(b"123456789"), 0xf4);
}

proptest! {
    /// The 16-table CRC used on the frame path is the spec's CRC-8/SMBUS, whole or resumed after
    /// the 22 name bytes.
    #[test]
    fn crc8_slice16_agrees_with_crc8(frame in proptest::collection::vec(any::<u8>(), 0..=MAX_FRAME_LEN)) {
        prop_assert_eq!(CRC8_SLICE16.checksum(&frame), CRC8.checksum(&frame));
        let split = frame.len().min(NAME_BYTES);
        let mut digest = CRC8_SLICE16.digest();
        digest.update(&frame[..split]);
        digest.update(&frame[split..]);
        prop_assert_eq!(digest.finalize(), CRC8.checksum(&frame));
    }
}

#[test]
fn test_pack_spec_name_only() {
    let adv = pack(0, &hex(INP_PATTERN)).unwrap();
    assert_eq!(adv.local_name.as_str(), "!*ISn$r]Si;bp<F");
    assert!(adv.service_uuids.is_empty());
    let f = unpack(&adv.local_name, &[], None).unwrap();
    assert_eq!((f.seq, f.crc), (0, 0xda));
    assert_eq!(f.decoded.message.to_bytes(None), hex(INP_PATTERN));
}

#[test]
fn test_pack_spec_one_tail_byte() {
    let adv = pack(7, &hex(OUT_TUPLE)).unwrap();
    assert_eq!(adv.local_name.as_str(), "#>\"Os;ajG[:JqNn8Ol<N!WYI#!!!\"");
    assert_eq!(adv.service_uuids.as_slice(), &[0x1520]);
    let f = unpack(&adv.local_name, &adv.service_uuids, None).unwrap();
    assert_eq!((f.seq, f.crc), (7, 0xa9));
    assert_eq!(f.decoded.message.to_bytes(None), hex(OUT_TUPLE));
}

#[test]
fn test_pack_spec_three_tail_bytes() {
    let adv = pack(200, &hex(OUT_LIFETIME)).unwrap();
    assert_eq!(adv.local_name.as_str(), "a@Z(6;ajG[:JqNn8Ol<NrmX6:!!!$");
    assert_eq!(adv.service_uuids.as_slice(), &[0x004b, 0x22a4]);
    // Order does not matter.
    let f = unpack(&adv.local_name, &[0x22a4, 0x004b], None).unwrap();
    assert_eq!(f.seq, 200);
    assert_eq!(f.decoded.message, out_with_lifetime(600));
}

#[test]
fn test_pack_maximum_frame_uses_seven_uuids() {
    let msg: Vec<u8> = {
        // TUPLE ("0123456789012345678901234567"): 3 + 28 = 31 bytes.
        let m = Message::Tuple {
            tuple: parse_tuple(r#"("0123456789012345678901234567")"#).unwrap(),
            reply: false,
        };
        m.to_bytes(None)
    };
    assert_eq!(msg.len(), MAX_MESSAGE_LEN);
    let adv = pack(255, &msg).unwrap();
    assert_eq!(adv.local_name.len(), MAX_NAME_LEN);
    assert!(adv.local_name.ends_with(','));
    assert_eq!(adv.service_uuids.len(), MAX_UUIDS);
    for (j, u) in adv.service_uuids.iter().enumerate() {
        assert_eq!(usize::from(u >> 13), j);
    }
    let f = unpack(&adv.local_name, &adv.service_uuids, None).unwrap();
    assert_eq!(f.decoded.message.to_bytes(None), msg);
}

#[test]
fn test_pack_encrypted_message() {
    let key = FpeKey::from_password("bee");
    let msg = out_with_lifetime(60);
    let adv = pack_message(3, &msg, Some(&key)).unwrap();
    let f = unpack(&adv.local_name, &adv.service_uuids, Some(&key)).unwrap();
    assert!(f.decoded.encrypted);
    assert_eq!(f.decoded.message, msg);
    assert_eq!(
        unpack(&adv.local_name, &adv.service_uuids, None),
        Err(FrameError::Message(DecodeError::EncryptedNoKey))
    );
}

#[test]
fn pack_rejects_message_over_31_bytes() {
    let err = pack(0, &[0x48; 32]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "message needs 32 bytes, a BLE frame carries 31"
    );
    let long = Message::Tuple {
        tuple: parse_tuple(r#"("01234567890123456789012345678")"#).unwrap(),
        reply: false,
    };
    assert_eq!(
        pack_message(0, &long, None),
        Err(FrameError::MessageTooLong { len: 32, max: 31 })
    );
}

#[test]
fn pack_rejects_message_under_3_bytes() {
    assert_eq!(
        pack(0, &[0x68, 0xc0]),
        Err(FrameError::MessageTooShort { len: 2, min: 3 })
    );
}

#[test]
fn unpack_ignores_stale_and_foreign_uuids() {
    let a = pack(10, &out_with_lifetime(600).to_bytes(None)).unwrap();
    let b = pack(11, &out_with_lifetime(601).to_bytes(None)).unwrap();
    // b's UUIDs are stale for a (same device, earlier frame), 0x180d and 0xfe9f are foreign,
    // 0xe123 has slot 7.
    let mut set: Vec<u16> = a.service_uuids.to_vec();
    set.extend_from_slice(&b.service_uuids);
    set.extend_from_slice(&[0x180d, 0xfe9f, 0xe123]);
    set.sort_unstable();
    let f = unpack(&a.local_name, &set, None).unwrap();
    assert_eq!(f.seq, 10);
    assert_eq!(f.decoded.message, out_with_lifetime(600));
}

#[test]
fn unpack_rejects_ambiguous_combinations() {
    // Same seq and head, different tails: both combinations are valid frames.
    let a = pack(5, &out_with_lifetime(600).to_bytes(None)).unwrap();
    let b = pack(5, &out_with_lifetime(601).to_bytes(None)).unwrap();
    assert_eq!(a.local_name, b.local_name);
    let mut set = a.service_uuids.to_vec();
    set.extend_from_slice(&b.service_uuids);
    assert!(matches!(
        unpack(&a.local_name, &set, None),
        Err(FrameError::Ambiguous { valid: 2, .. })
    ));
}

#[test]
fn unpack_rejects_name_too_long() {
    assert_eq!(
        unpack(&"!".repeat(30), &[], None),
        Err(FrameError::NameTooLong { len: 30, max: 29 })
    );
}

#[test]
fn unpack_rejects_bad_length_char() {
    let adv = pack(7, &hex(OUT_TUPLE)).unwrap();
    for c in ['!', '-', 'u', '~'] {
        let mut name = adv.local_name.to_string();
        name.pop();
        name.push(c);
        assert_eq!(
            unpack(&name, &adv.service_uuids, None),
            Err(FrameError::BadLengthChar { found: c })
        );
    }
}

#[test]
fn unpack_rejects_non_canonical_or_foreign_ascii85() {
    for name in [
        "s",
        "Hello World",
        "<~87cURD]i,\"Ebo80~>",
        "zzzzz",
        "!!!!!!",
    ] {
        assert!(
            matches!(unpack(name, &[], None), Err(FrameError::Ascii85(_))),
            "{name}"
        );
    }
}

#[test]
fn unpack_rejects_short_frame() {
    // 4 bytes decoded from 5 characters.
    let name = crate::ascii85::encode(&[0, 0x68, 0x40, 0]);
    assert_eq!(
        unpack(&name, &[], None),
        Err(FrameError::FrameTooShort { len: 4, min: 5 })
    );
}

#[test]
fn unpack_rejects_bad_crc() {
    let mut frame = hex("00 58 d0 24 0c 53 45 4e 53 4f 52 da");
    frame[11] ^= 1;
    let name = crate::ascii85::encode(&frame);
    assert!(matches!(
        unpack(&name, &[], None),
        Err(FrameError::BadCrc {
            found: 0xdb,
            computed: 0xda
        })
    ));
    // In the UUID tail too.
    let adv = pack(7, &hex(OUT_TUPLE)).unwrap();
    assert!(matches!(
        unpack(&adv.local_name, &[0x1540], None),
        Err(FrameError::BadCrc { .. })
    ));
}

#[test]
fn unpack_rejects_bad_pad_bits() {
    let adv = pack(7, &hex(OUT_TUPLE)).unwrap();
    // 1 tail byte in 13 bits: the low 5 bits are pad.
    assert_eq!(
        unpack(&adv.local_name, &[0x1521], None),
        Err(FrameError::BadPadBits)
    );
}

#[test]
fn unpack_rejects_missing_slot() {
    let adv = pack(200, &hex(OUT_LIFETIME)).unwrap();
    assert_eq!(
        unpack(&adv.local_name, &[0x004b], None),
        Err(FrameError::MissingSlot { slot: 1, slots: 2 })
    );
    assert_eq!(
        unpack(&adv.local_name, &[], None),
        Err(FrameError::MissingSlot { slot: 0, slots: 2 })
    );
}

#[test]
fn unpack_rejects_too_many_combinations() {
    let adv = pack(200, &hex(OUT_LIFETIME)).unwrap();
    // 17 × 17 = 289 > 256 candidates: dropped without examining them.
    let mut set: Vec<u16> = (0..17).collect();
    set.extend((0..17).map(|d| (1 << 13) | d));
    assert_eq!(
        unpack(&adv.local_name, &set, None),
        Err(FrameError::TooManyCombinations {
            count: 289,
            max: 256
        })
    );
    // 16 × 16 = 256 is examined (and here holds the real frame once).
    let mut set: Vec<u16> = (0..15).map(|d| d + 0x100).collect();
    set.extend((0..15).map(|d| (1 << 13) | (d + 0x100)));
    set.extend_from_slice(&adv.service_uuids);
    assert_eq!(unpack(&adv.local_name, &set, None).unwrap().seq, 200);
}

#[test]
fn unpack_rejects_message_that_does_not_parse() {
    // A valid CRC over a message with trailing bytes.
    let adv = pack(1, &hex("68 40 00 01 ff")).unwrap();
    assert!(matches!(
        unpack(&adv.local_name, &[], None),
        Err(FrameError::Message(DecodeError::TrailingBytes { .. }))
    ));
}

/// Every advertisement of the corpus (`testdata/real_ble_ads.jsonl`) of real third-party devices is dropped with an error,
/// never accepted and never a panic.
#[test]
fn real_third_party_advertisements_are_all_rejected() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/real_ble_ads.jsonl"
    );
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (testdata/ at the repository root)"));
    let mut seen = 0;
    let mut named = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let ad: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = ad["name"].as_str().unwrap_or("");
        let uuids: Vec<u16> = ad["uuids16"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u.as_u64())
                    .map(|u| u as u16)
                    .collect()
            })
            .unwrap_or_default();
        if !name.is_empty() {
            named += 1;
        }
        for key in [None, Some(&FpeKey::from_password("secret"))] {
            assert!(
                unpack(name, &uuids, key).is_err(),
                "accepted a foreign advertisement: {line}"
            );
        }
        seen += 1;
    }
    assert_eq!(seen, 675);
    assert!(named > 100, "corpus has {named} named advertisements");
}

proptest! {
    #[test]
    fn frame_round_trips_with_shuffled_stale_and_foreign_uuids(
        msg in arb_message().prop_filter("fits BLE", |m| m.buffer_len() <= MAX_MESSAGE_LEN),
        stale in arb_message().prop_filter("fits BLE", |m| m.buffer_len() <= MAX_MESSAGE_LEN),
        seq in any::<u8>(),
        foreign in proptest::collection::vec(any::<u16>(), 0..6),
        shuffle_seed in any::<u64>(),
    ) {
        let bytes = msg.to_bytes(None);
        let adv = pack(seq, &bytes).unwrap();
        // Alone: always recovered exactly.
        let f = unpack(&adv.local_name, &adv.service_uuids, None).unwrap();
        prop_assert_eq!(f.seq, seq);
        prop_assert_eq!(f.decoded.message.to_bytes(None), bytes.clone());

        // With the previous frame's UUIDs and foreign ones, in any order: the right frame, or a
        // refusal (ambiguous / too many) — never a different frame.
        let old = pack(seq.wrapping_sub(1), &stale.to_bytes(None)).unwrap();
        let mut set: Vec<u16> = adv.service_uuids.to_vec();
        set.extend_from_slice(&old.service_uuids);
        set.extend_from_slice(&foreign);
        let mut s = shuffle_seed;
        for i in (1..set.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            set.swap(i, (s >> 33) as usize % (i + 1));
        }
        match unpack(&adv.local_name, &set, None) {
            Ok(f) => {
                prop_assert_eq!(f.seq, seq);
                prop_assert_eq!(f.decoded.message.to_bytes(None), bytes);
            }
            Err(FrameError::Ambiguous { .. } | FrameError::TooManyCombinations { .. }) => {}
            Err(e) => prop_assert!(false, "lost the frame: {e}"),
        }
    }

    #[test]
    fn unpack_never_panics(name in "[!-u]{0,29}|\\PC{0,32}", uuids in proptest::collection::vec(any::<u16>(), 0..20)) {
        let _ = unpack(&name, &uuids, None);
    }
}

/// `unpack_raw` returns the message bytes as sent (FPE-encrypted ones still encrypted), for
/// frames with and without UUIDs, and its check selects among stale candidates as `unpack` does.
#[test]
fn unpack_raw_returns_the_message_bytes_as_sent() {
    let key = FpeKey::from_password("raw");
    for (text, with_key) in [(OUT_TUPLE, false), (OUT_LIFETIME, false), (OUT_TUPLE, true)] {
        let plain = hex(text);
        let sent = if with_key {
            let msg = Message::parse(&plain, None).unwrap().message;
            let mut buf = [0u8; MAX_MESSAGE_LEN];
            let n = msg.emit(&mut buf, Some(&key)).unwrap();
            buf[..n].to_vec()
        } else {
            plain
        };
        let adv = pack(9, &sent).unwrap();
        let k = with_key.then_some(&key);
        let raw = unpack_raw(&adv.local_name, &adv.service_uuids, |m| {
            Message::parse(m, k).map(|_| ()).map_err(Into::into)
        })
        .unwrap();
        assert_eq!(raw.seq, 9);
        assert_eq!(raw.message.as_slice(), sent.as_slice());
        let full = unpack(&adv.local_name, &adv.service_uuids, k).unwrap();
        assert_eq!(raw.crc, full.crc);
    }
    // A check that refuses everything refuses the frame.
    let adv = pack(1, &hex(OUT_LIFETIME)).unwrap();
    assert!(
        unpack_raw(&adv.local_name, &adv.service_uuids, |_| Err(
            FrameError::BadCrc {
                found: 0,
                computed: 1
            }
        ))
        .is_err()
    );
}
