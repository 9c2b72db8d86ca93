//! Byte fixtures (spec §10 plus our own for every op and flag), named rejections and round-trips.

use super::*;
use crate::text::{parse_template, parse_tuple};
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn tuple(s: &str) -> Tuple {
    parse_tuple(s).unwrap()
}

fn template(s: &str) -> Template {
    parse_template(s).unwrap()
}

fn lifetime(s: u16) -> Option<NonZeroU16> {
    NonZeroU16::new(s)
}

/// Emits `msg`, compares with `expected`, and parses the bytes back to `msg`.
fn check_fixture(msg: &Message, expected: &str) {
    let bytes = hex(expected);
    assert_eq!(msg.to_bytes(None), bytes, "emit of {msg}");
    assert_eq!(msg.buffer_len(), bytes.len());
    let decoded = Message::parse(&bytes, None).unwrap();
    assert_eq!(&decoded.message, msg);
    assert!(!decoded.encrypted);
}

fn parse_err(bytes: &str) -> DecodeError {
    Message::parse(&hex(bytes), None).unwrap_err()
}

// --- spec §10 --------------------------------------------------------------------------------

#[test]
fn test_emit_spec_out_tuple() {
    check_fixture(
        &Message::Out {
            tuple: tuple(r#"("SENSOR", "LIGHT", 512, 1.5)"#),
            lifetime: None,
        },
        "48 f6 0c 53 45 4e 53 4f 52 0a 4c 49 47 48 54 02 00 3f c0 00 00",
    );
}

#[test]
fn test_emit_spec_rd_pattern() {
    check_fixture(
        &Message::Rd(template(r#"("SENSOR", "LIGHT", ?, ?)"#)),
        "50 f0 43 0c 53 45 4e 53 4f 52 0a 4c 49 47 48 54",
    );
}

#[test]
fn test_emit_spec_inp_pattern() {
    check_fixture(
        &Message::Inp(template(r#"("SENSOR", ?int16)"#)),
        "58 d0 24 0c 53 45 4e 53 4f 52",
    );
}

#[test]
fn test_emit_spec_out_with_lifetime() {
    check_fixture(
        &Message::Out {
            tuple: tuple(r#"("SENSOR", "LIGHT", -300, 21.75)"#),
            lifetime: lifetime(600),
        },
        "49 f6 0c 53 45 4e 53 4f 52 0a 4c 49 47 48 54 fe d4 41 ae 00 00 02 58",
    );
}

#[test]
fn test_emit_spec_encrypted_out() {
    let key = FpeKey::from_password("bee");
    let msg = Message::Out {
        tuple: tuple(r#"("Grüße", 0.001)"#),
        lifetime: None,
    };
    let expected = hex("4c e0 c9 99 9b 20 89 20 51 66 08 2e c2 bc");
    assert_eq!(msg.to_bytes(Some(&key)), expected);
    let decoded = Message::parse(&expected, Some(&key)).unwrap();
    assert_eq!(decoded.message, msg);
    assert!(decoded.encrypted);
}

// --- our own fixtures: every op and flag ----------------------------------------------------

#[test]
fn test_emit_test_pattern_typed_formals() {
    // TEST (?float32, ?str, ?) : signature 10 11 00 00 = 0xb0, pattern 0x3e.
    check_fixture(&Message::Test(template("(?float32, ?str, ?)")), "60 b0 3e");
}

#[test]
fn test_emit_tuple_notify_and_reply() {
    // TUPLE R=0 (-1): signature 01 = 0x40, int16 ffff.
    check_fixture(
        &Message::Tuple {
            tuple: tuple("(-1)"),
            reply: false,
        },
        "68 40 ff ff",
    );
    // TUPLE R=1 (x"00ff", -2.5): bytes kind 1, len 2 → h = 5.
    check_fixture(
        &Message::Tuple {
            tuple: tuple(r#"(x"00ff", -2.5)"#),
            reply: true,
        },
        "6a e0 05 00 ff c0 20 00 00",
    );
}

#[test]
fn test_emit_iamhere_and_where() {
    check_fixture(
        &Message::IAmHere {
            tuple: tuple(r#"("NODE", "a")"#),
            reply: false,
        },
        "70 f0 08 4e 4f 44 45 02 61",
    );
    check_fixture(
        &Message::IAmHere {
            tuple: tuple(r#"("NODE", "a")"#),
            reply: true,
        },
        "72 f0 08 4e 4f 44 45 02 61",
    );
    check_fixture(
        &Message::Where(template(r#"("NODE", ?)"#)),
        "78 c0 24 08 4e 4f 44 45",
    );
}

#[test]
fn test_emit_negative_numbers_and_extremes() {
    check_fixture(
        &Message::Out {
            tuple: tuple("(-32768, 32767, -inf, -0.0)"),
            lifetime: lifetime(65535),
        },
        "49 5a 80 00 7f ff ff 80 00 00 80 00 00 00 ff ff",
    );
}

#[test]
fn test_emit_two_byte_varint() {
    // A 64-byte string: h = 128 → varint 80 01.
    let s = "a".repeat(64);
    let msg = Message::Tuple {
        tuple: tuple(&format!("(\"{s}\")")),
        reply: false,
    };
    let bytes = msg.to_bytes(None);
    assert_eq!(bytes[..4], [0x68, 0xc0, 0x80, 0x01]);
    assert_eq!(bytes.len(), 4 + 64);
    assert_eq!(Message::parse(&bytes, None).unwrap().message, msg);
}

#[test]
fn test_emit_maximum_value_length() {
    // 8191 bytes: h = 16383 → varint ff 7f, the largest a 2-byte varint holds.
    let msg = Message::Tuple {
        tuple: Tuple::new([Value::Bytes(vec![7; 8191])]).unwrap(),
        reply: false,
    };
    let bytes = msg.to_bytes(None);
    assert_eq!(bytes[..4], [0x68, 0xc0, 0xff, 0x7f]);
    assert_eq!(Message::parse(&bytes, None).unwrap().message, msg);
}

#[test]
fn test_emit_and_parse_every_short_payload_length() {
    // The encoder copies short payloads with overlapping fixed-size moves (0, 1–3, 4–7, 8–16,
    // 17–32, longer) and the decoder keeps strings of ≤ 24 bytes inline and decrypts ≤ 64 bytes
    // on the stack: every length across those edges, after a value that shifts the offset, as
    // string and as bytes, plain and encrypted, must give the naive layout back.
    let key = FpeKey::from_password("edges");
    for n in 0..=70usize {
        let payload: Vec<u8> = (0..n).map(|i| b'A' + (i % 26) as u8).collect();
        let text = String::from_utf8(payload.clone()).unwrap();
        for (value, kind) in [
            (Value::Str(text.as_str().into()), 0u16),
            (Value::Bytes(payload.clone()), 1),
        ] {
            let msg = Message::Tuple {
                tuple: Tuple::new([Value::Int16(-2), value]).unwrap(),
                reply: false,
            };
            let bytes = msg.to_bytes(None);
            let h = ((n as u16) << 1) | kind;
            let mut expected = vec![0x68, 0b0111_0000, 0xff, 0xfe];
            if h < 0x80 {
                expected.push(h as u8);
            } else {
                expected.extend([(h as u8) | 0x80, (h >> 7) as u8]);
            }
            expected.extend(&payload);
            assert_eq!(bytes, expected, "plain, n = {n}, kind {kind}");
            assert_eq!(Message::parse(&bytes, None).unwrap().message, msg);
            let sealed = msg.to_bytes(Some(&key));
            let opened = Message::parse(&sealed, Some(&key)).unwrap();
            assert!(opened.encrypted);
            assert_eq!(opened.message, msg, "encrypted, n = {n}, kind {kind}");
        }
    }
}

#[test]
fn test_emit_buffer_too_small() {
    let msg = Message::Rd(template("(?)"));
    let mut buf = [0u8; 2];
    assert_eq!(
        msg.emit(&mut buf, None),
        Err(BufferTooSmall {
            needed: 3,
            available: 2
        })
    );
}

#[test]
fn test_check_len_names_both_sizes() {
    let msg = Message::Out {
        tuple: tuple(r#"("SENSOR", "LIGHT", "0123456789ABCDEFGHI")"#),
        lifetime: None,
    };
    let err = msg.check_len(31, "BLE").unwrap_err();
    assert_eq!(
        err.to_string(),
        "message of 35 bytes is too long for BLE (at most 31)"
    );
}

// --- rejections (spec §4's list) ------------------------------------------------------------

#[test]
fn parse_rejects_empty() {
    assert_eq!(parse_err(""), DecodeError::Truncated { needed: 1, len: 0 });
}

#[test]
fn parse_rejects_not_v1() {
    for control in ["08", "88", "c8"] {
        assert!(matches!(
            parse_err(&format!("{control} 40 00 01")),
            DecodeError::NotV1 { .. }
        ));
    }
}

#[test]
fn parse_rejects_not_v1_before_looking_at_the_key() {
    // VER = 10 with E set: "not v1", not "encrypted but no key".
    assert_eq!(parse_err("8c 40 00 01"), DecodeError::NotV1 { version: 2 });
}

#[test]
fn parse_rejects_op_zero() {
    assert_eq!(
        parse_err("40 40 00 01"),
        DecodeError::BadOp { control: 0x40 }
    );
}

#[test]
fn parse_rejects_reply_flag_on_requests() {
    for (control, op) in [
        ("4a", Op::Out),
        ("52", Op::Rd),
        ("5a", Op::Inp),
        ("62", Op::Test),
        ("7a", Op::Where),
    ] {
        assert_eq!(
            parse_err(&format!("{control} 40 10 00 01")),
            DecodeError::FlagNotAllowed {
                flag: Flag::Reply,
                op
            }
        );
    }
}

#[test]
fn parse_rejects_lifetime_flag_off_out() {
    assert_eq!(
        parse_err("69 40 00 01"),
        DecodeError::FlagNotAllowed {
            flag: Flag::Lifetime,
            op: Op::Tuple
        }
    );
    assert_eq!(
        parse_err("79 40 10 00 01"),
        DecodeError::FlagNotAllowed {
            flag: Flag::Lifetime,
            op: Op::Where
        }
    );
    assert_eq!(
        parse_err("71 40 00 01"),
        DecodeError::FlagNotAllowed {
            flag: Flag::Lifetime,
            op: Op::IAmHere
        }
    );
}

#[test]
fn parse_rejects_zero_lifetime() {
    assert_eq!(parse_err("49 40 00 01 00 00"), DecodeError::ZeroLifetime);
}

#[test]
fn parse_rejects_zero_wait() {
    for ctrl in ["51", "59", "61"] {
        assert_eq!(
            parse_err(&format!("{ctrl} d0 24 0c 53 45 4e 53 4f 52 00 00")),
            DecodeError::ZeroLifetime
        );
    }
}

#[test]
fn parse_rejects_truncated_or_trailing_wait() {
    assert_eq!(
        parse_err("51 d0 24 0c 53 45 4e 53 4f 52 00"),
        DecodeError::Truncated {
            needed: 12,
            len: 11
        }
    );
    assert_eq!(
        parse_err("51 d0 24 0c 53 45 4e 53 4f 52"),
        DecodeError::Truncated {
            needed: 12,
            len: 10
        }
    );
    assert_eq!(
        parse_err("51 d0 24 0c 53 45 4e 53 4f 52 00 1e 00"),
        DecodeError::TrailingBytes {
            offset: 12,
            extra: 1
        }
    );
}

// --- spec §11 --------------------------------------------------------------------------------

#[test]
fn test_emit_spec_rd_waiting() {
    let msg = Message::Waiting {
        op: RequestOp::Rd,
        template: template(r#"("SENSOR", ?int16)"#),
        wait: NonZeroU16::new(30).unwrap(),
    };
    check_fixture(&msg, "51 d0 24 0c 53 45 4e 53 4f 52 00 1e");
    assert_eq!(msg.control(false), 0x51);
    assert_eq!(msg.op(), Op::Rd);
    assert_eq!(msg.wait(), NonZeroU16::new(30));
    assert_eq!(msg.to_string(), r#"RD ("SENSOR", ?int16) W=30s"#);
    assert_eq!(
        Message::request(
            RequestOp::Rd,
            template(r#"("SENSOR", ?int16)"#),
            NonZeroU16::new(30)
        ),
        msg
    );
}

#[test]
fn test_emit_spec_rd_waiting_fpe() {
    // The wait is encrypted with the rest of bytes 1.. (spec §4 E).
    let key = FpeKey::from_password("secret");
    let msg = Message::Waiting {
        op: RequestOp::Rd,
        template: template(r#"("SENSOR", ?int16)"#),
        wait: NonZeroU16::new(30).unwrap(),
    };
    let expected = hex("55 d1 5d c7 35 aa 09 35 e1 a0 70 31");
    assert_eq!(msg.to_bytes(Some(&key)), expected);
    let decoded = Message::parse(&expected, Some(&key)).unwrap();
    assert_eq!(decoded.message, msg);
    assert!(decoded.encrypted);
}

#[test]
fn test_emit_inp_and_test_waiting() {
    check_fixture(
        &Message::request(
            RequestOp::Inp,
            template(r#"("SENSOR", ?int16)"#),
            NonZeroU16::new(65535),
        ),
        "59 d0 24 0c 53 45 4e 53 4f 52 ff ff",
    );
    check_fixture(
        &Message::request(RequestOp::Test, template("(?)"), NonZeroU16::new(1)),
        "61 00 18 00 01",
    );
    // Without a wait the request is the plain variant (one representation per message).
    assert_eq!(
        Message::request(RequestOp::Test, template("(?)"), None),
        Message::Test(template("(?)"))
    );
    assert_eq!(Message::Test(template("(?)")).wait(), None);
}

#[test]
fn parse_rejects_truncated() {
    let full = hex("48 f6 0c 53 45 4e 53 4f 52 0a 4c 49 47 48 54 02 00 3f c0 00 00");
    for cut in 1..full.len() {
        assert!(
            matches!(
                Message::parse(&full[..cut], None),
                Err(DecodeError::Truncated { .. })
            ),
            "cut at {cut}"
        );
    }
    // A missing lifetime.
    assert!(matches!(
        parse_err("49 40 00 01 02"),
        DecodeError::Truncated { .. }
    ));
}

#[test]
fn parse_rejects_trailing_bytes() {
    assert_eq!(
        parse_err("68 40 00 01 ff"),
        DecodeError::TrailingBytes {
            offset: 4,
            extra: 1
        }
    );
}

#[test]
fn parse_rejects_bad_tuple_signature() {
    // 00 signature; a non-zero code after 00.
    for sig in ["00", "10", "44", "c4", "01"] {
        assert!(
            matches!(
                parse_err(&format!("68 {sig} 00 01 00 01")),
                DecodeError::BadTupleSignature { .. }
            ),
            "signature {sig}"
        );
    }
}

#[test]
fn parse_rejects_bad_pattern_byte() {
    // arity 0, arity 5, a mask bit beyond the arity.
    for pb in ["00", "50", "14", "2e"] {
        assert!(
            matches!(
                parse_err(&format!("50 00 {pb}")),
                DecodeError::BadPatternByte { .. }
            ),
            "pattern byte {pb}"
        );
    }
}

#[test]
fn parse_rejects_bad_pattern_signature() {
    // Actual with code 00.
    assert!(matches!(
        parse_err("50 00 10"),
        DecodeError::BadPatternSignature { .. }
    ));
    // Code beyond the arity.
    assert!(matches!(
        parse_err("50 04 18"),
        DecodeError::BadPatternSignature { .. }
    ));
}

#[test]
fn parse_rejects_non_minimal_varint() {
    assert_eq!(
        parse_err("68 c0 82 00 61"),
        DecodeError::NonMinimalVarint { offset: 2 }
    );
}

#[test]
fn parse_rejects_varint_longer_than_two_bytes() {
    assert_eq!(
        parse_err("68 c0 80 80 01"),
        DecodeError::VarintTooLong { offset: 2 }
    );
}

#[test]
fn parse_rejects_bad_utf8() {
    assert_eq!(parse_err("68 c0 02 ff"), DecodeError::BadUtf8 { offset: 3 });
    // The same byte as raw bytes (kind 1) is fine.
    assert!(Message::parse(&hex("68 c0 03 ff"), None).is_ok());
}

#[test]
fn parse_rejects_nan() {
    for nan in ["7f c0 00 00", "ff c0 00 01", "7f 80 00 01"] {
        assert_eq!(
            parse_err(&format!("68 80 {nan}")),
            DecodeError::NaN { offset: 2 }
        );
    }
    // Infinity is fine.
    assert!(Message::parse(&hex("68 80 7f 80 00 00"), None).is_ok());
}

#[test]
fn parse_rejects_string_longer_than_input() {
    // Announces 8191 bytes, carries 1: no allocation of 8191, a Truncated error.
    assert!(matches!(
        parse_err("68 c0 fe 7f 61"),
        DecodeError::Truncated { .. }
    ));
}

#[test]
fn parse_rejects_encrypted_without_key() {
    assert_eq!(
        parse_err("4c e0 c9 99 9b 20 89 20 51 66 08 2e c2 bc"),
        DecodeError::EncryptedNoKey
    );
}

#[test]
fn parse_with_wrong_key_does_not_yield_the_message() {
    let right = FpeKey::from_password("bee");
    let wrong = FpeKey::from_password("wasp");
    let msg = Message::Out {
        tuple: tuple(r#"("Grüße", 0.001)"#),
        lifetime: None,
    };
    let bytes = msg.to_bytes(Some(&right));
    if let Ok(d) = Message::parse(&bytes, Some(&wrong)) {
        assert_ne!(d.message, msg);
    }
}

#[test]
fn op_names_round_trip() {
    for code in 1..=7 {
        let op = Op::from_code(code).unwrap();
        assert_eq!(op.name().parse::<Op>(), Ok(op));
        assert_eq!(op.name().to_lowercase().parse::<Op>(), Ok(op));
    }
    assert!("PUT".parse::<Op>().is_err());
}

#[test]
fn from_parts_checks_body_and_flags() {
    let t = Body::Tuple(tuple("(1)"));
    let p = Body::Template(template("(?)"));
    assert!(Message::from_parts(Op::Out, t.clone(), lifetime(5), false).is_ok());
    assert_eq!(
        Message::from_parts(Op::Rd, t.clone(), None, false),
        Err(BodyMismatch::Body(Op::Rd))
    );
    assert_eq!(
        Message::from_parts(Op::Out, p.clone(), None, false),
        Err(BodyMismatch::Body(Op::Out))
    );
    assert_eq!(
        Message::from_parts(Op::Out, t.clone(), None, true),
        Err(BodyMismatch::Flag(Flag::Reply, Op::Out))
    );
    assert_eq!(
        Message::from_parts(Op::Tuple, t, lifetime(1), false),
        Err(BodyMismatch::Flag(Flag::Lifetime, Op::Tuple))
    );
    assert_eq!(
        Message::from_parts(Op::Where, p.clone(), lifetime(1), false),
        Err(BodyMismatch::Flag(Flag::Lifetime, Op::Where))
    );
    assert_eq!(
        Message::from_parts(Op::Inp, p.clone(), lifetime(9), false),
        Ok(Message::Waiting {
            op: RequestOp::Inp,
            template: template("(?)"),
            wait: NonZeroU16::new(9).unwrap()
        })
    );
    assert_eq!(
        Message::from_parts(Op::Inp, p, None, false),
        Ok(Message::Inp(template("(?)")))
    );
}

// --- properties -----------------------------------------------------------------------------

/// Any message the API can build.
pub(crate) fn arb_message() -> impl Strategy<Value = Message> {
    use crate::text::strategies::{arb_template, arb_tuple};
    prop_oneof![
        (arb_tuple(), proptest::option::of(1u16..)).prop_map(|(tuple, l)| Message::Out {
            tuple,
            lifetime: l.and_then(NonZeroU16::new)
        }),
        arb_template().prop_map(Message::Rd),
        arb_template().prop_map(Message::Inp),
        arb_template().prop_map(Message::Test),
        arb_template().prop_map(Message::Where),
        (
            prop::sample::select(vec![RequestOp::Rd, RequestOp::Inp, RequestOp::Test]),
            arb_template(),
            1u16..
        )
            .prop_map(|(op, template, w)| Message::Waiting {
                op,
                template,
                wait: NonZeroU16::new(w).unwrap()
            }),
        (arb_tuple(), any::<bool>()).prop_map(|(tuple, reply)| Message::Tuple { tuple, reply }),
        (arb_tuple(), any::<bool>()).prop_map(|(tuple, reply)| Message::IAmHere { tuple, reply }),
    ]
}

proptest! {
    #[test]
    fn message_round_trips(msg in arb_message(), password in proptest::option::of("[a-z]{0,8}")) {
        let key = password.map(|p| FpeKey::from_password(&p));
        let bytes = msg.to_bytes(key.as_ref());
        prop_assert_eq!(bytes.len(), msg.buffer_len());
        let decoded = Message::parse(&bytes, key.as_ref()).unwrap();
        prop_assert_eq!(decoded.encrypted, key.is_some());
        // Bit-exact (PartialEq treats -0.0 == 0.0): re-encode and compare bytes.
        prop_assert_eq!(decoded.message.to_bytes(key.as_ref()), bytes);
        prop_assert_eq!(decoded.message, msg);
    }

    #[test]
    fn parse_never_panics_and_accepted_input_re_encodes_exactly(
        bytes in proptest::collection::vec(any::<u8>(), 0..40)
    ) {
        if let Ok(d) = Message::parse(&bytes, None) {
            prop_assert_eq!(d.message.to_bytes(None), bytes);
        }
    }

    #[test]
    fn parse_of_mutated_valid_messages_never_panics(
        msg in arb_message(), pos in any::<prop::sample::Index>(), byte in any::<u8>()
    ) {
        let mut bytes = msg.to_bytes(None);
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        if let Ok(d) = Message::parse(&bytes, None) {
            prop_assert_eq!(d.message.to_bytes(None), bytes);
        }
    }
}
