//! Spec §12.1 vectors, the "Rejected" table, named rejections and round-trip properties.

use super::key::{derive_password_key, derive_privacy_key};
use super::*;
use crate::ble;
use crate::message::DecodeError;
use crate::message::tests::arb_message;
use crate::text::{parse_template, parse_tuple};
use crate::udp::{self, DatagramHeader, NodeId};
use aes::cipher::KeyInit;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn key() -> SealKey {
    SealKey::from_hex("000102030405060708090a0b0c0d0e0f").unwrap()
}

fn src(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap()
}

/// §10 OUT tuple `("SENSOR", "LIGHT", 512, 1.5f32)`.
const OUT_PLAIN: &str = "48 f6 0c 53 45 4e 53 4f 52 0a 4c 49 47 48 54 02 00 3f c0 00 00";
/// §12.1 a.
const A_SEALED: &str =
    "88 99 00 78 c4 c1 db d1 e1 12 29 9f ae 4c 57 19 60 72 10 ca d2 bd 3a 95 5b c7 56 ea dd 70 b2";
/// §12.1 b.
const B_SEALED: &str = "88 8d b4 b5 c3 47 ef 72 d5 78 2d f4 54 cd a4 a8 05 15 54 d9 6b 6b 79 07 09 f4 ec 20 90 e5 aa c8 d6 85 14";

/// Opens `sealed` and returns the header and the plain bytes.
fn open(key: &SealKey, t: Transport, sealed: &[u8]) -> Result<(Opened, Vec<u8>), OpenError> {
    let mut out = [0u8; MAX_OPENED_LEN];
    let opened = key.open(t, sealed, &mut out)?;
    Ok((opened, out[..opened.len()].to_vec()))
}

fn open_err(t: Transport, sealed: &str) -> OpenError {
    open(&key(), t, &hex(sealed)).unwrap_err()
}

/// Seals `plain`, compares with `expected`, and opens it back to `plain`.
fn check_vector(t: Transport, source: u16, counter: u32, plain: &str, expected: &str) {
    let (plain, expected) = (hex(plain), hex(expected));
    let k = key();
    let sealed = k.seal_to_vec(t, src(source), counter, &plain).unwrap();
    assert_eq!(sealed, expected, "sealed bytes");
    assert_eq!(t.sealed_len(plain.len()), expected.len());
    let (opened, back) = open(&k, t, &sealed).unwrap();
    assert_eq!(back, plain, "opened bytes");
    assert_eq!(
        (opened.transport(), opened.source_id(), opened.counter()),
        (t, src(source), counter)
    );
    assert_eq!(opened.len(), plain.len());
}

// --- spec §12.1 vectors ------------------------------------------------------------------------

#[test]
fn test_privacy_key_vector() {
    let k: [u8; 16] = core::array::from_fn(|i| i as u8);
    let cipher = aes::Aes128::new(&aes::cipher::Array::from(k));
    assert_eq!(
        derive_privacy_key(&cipher).to_vec(),
        hex("45 de be af 9e 4e a5 0f 8c 5c 40 d0 de 07 58 92")
    );
}

#[test]
fn test_vector_a_sealed_out_ble() {
    // The §10 bytes are what the existing codec emits for the tuple.
    let msg = Message::Out {
        tuple: parse_tuple(r#"("SENSOR", "LIGHT", 512, 1.5)"#).unwrap(),
        lifetime: None,
    };
    assert_eq!(msg.to_bytes(None), hex(OUT_PLAIN));
    check_vector(Transport::Ble, 0x0102, 7, OUT_PLAIN, A_SEALED);
    assert_eq!(hex(A_SEALED).len(), 31);
}

#[test]
fn test_vector_a_nonce_aad_ciphertext_pecb() {
    let k = key();
    let sealed = hex(A_SEALED);
    let header: [u8; HEADER_LEN] = hex("88 01 02 00 00 00 07").try_into().unwrap();
    // Nonce.
    assert_eq!(
        nonce(Transport::Ble, &header).to_vec(),
        hex("01 01 02 00 00 00 07 00 00 00 00 00 00")
    );
    // Ciphertext ‖ MIC.
    assert_eq!(
        sealed[HEADER_LEN..],
        hex("d1 e1 12 29 9f ae 4c 57 19 60 72 10 ca d2 bd 3a 95 5b c7 56 ea dd 70 b2")
    );
    // PECB[0..6], and the clear header (AAD) it uncovers.
    let mask = pecb(&k.privacy, &sealed[PRIVACY_SAMPLE]);
    assert_eq!(mask.to_vec(), hex("98 02 78 c4 c1 dc"));
    let clear: Vec<u8> = std::iter::once(sealed[0])
        .chain(sealed[OBFUSCATED].iter().zip(mask).map(|(s, m)| s ^ m))
        .collect();
    assert_eq!(clear, header);
}

#[test]
fn test_vector_b_sealed_out_udp_and_datagram() {
    check_vector(Transport::Udp, 0x0102, 7, OUT_PLAIN, B_SEALED);
    let sealed = hex(B_SEALED);
    assert_eq!(sealed.len(), 35);
    assert_eq!(
        pecb(&key().privacy, &sealed[PRIVACY_SAMPLE]).to_vec(),
        hex("8c b6 b5 c3 47 e8")
    );
    // The §7 envelope wraps the sealed message as it wraps a v1 one.
    let header = DatagramHeader {
        node_id: NodeId::new(0x1122_3344).unwrap(),
        seq: 5,
    };
    let mut datagram = [0u8; udp::HEADER_LEN];
    header.emit(&mut datagram);
    let datagram = [&datagram[..], &sealed].concat();
    assert_eq!(
        datagram,
        hex(&format!("be 75 01 11 22 33 44 00 00 00 05 {B_SEALED}"))
    );
    assert_eq!(datagram.len(), 46);
    let (h, message) = udp::parse_header(&datagram).unwrap();
    assert_eq!(h, header);
    let (opened, back) = open(&key(), Transport::Udp, message).unwrap();
    assert_eq!((opened.source_id(), opened.counter()), (src(0x0102), 7));
    assert_eq!(back, hex(OUT_PLAIN));
}

#[test]
fn test_vector_c_sealed_rd_with_wait_ble() {
    let plain = "51 d0 24 0c 53 45 4e 53 4f 52 00 1e";
    check_vector(
        Transport::Ble,
        0x0102,
        8,
        plain,
        "91 b2 19 25 fe 76 49 cc df 13 0d a2 e6 da bd 26 11 fd 43 fd e7 30",
    );
    // Step 4: the RD of ("SENSOR", ?int16) waiting 30 s (spec §11).
    let (opened, m) = key()
        .open_message(
            Transport::Ble,
            &hex("91 b2 19 25 fe 76 49 cc df 13 0d a2 e6 da bd 26 11 fd 43 fd e7 30"),
        )
        .unwrap();
    assert_eq!((opened.source_id().get(), opened.counter()), (0x0102, 8));
    assert_eq!(m.op(), Op::Rd);
    assert_eq!(m.wait(), Some(std::num::NonZeroU16::new(30).unwrap()));
}

#[test]
fn test_vector_d_sealed_tuple_reply_ble() {
    let msg = Message::Tuple {
        tuple: parse_tuple(r#"("SENSOR", 21)"#).unwrap(),
        reply: true,
    };
    let plain = "6a d0 0c 53 45 4e 53 4f 52 00 15";
    assert_eq!(msg.to_bytes(None), hex(plain));
    let sealed = "aa 17 80 b0 93 4d a0 12 5e c7 f4 ba 53 62 be 30 c7 d0 38 7f ac";
    check_vector(Transport::Ble, 0x0203, 0xffff_fffe, plain, sealed);
    let (opened, back) = key().open_message(Transport::Ble, &hex(sealed)).unwrap();
    assert_eq!(
        (opened.source_id(), opened.counter()),
        (src(0x0203), 0xffff_fffe)
    );
    assert_eq!(back, msg);
}

#[test]
fn test_vector_e_password_kdf() {
    assert_eq!(
        derive_password_key("secret").to_vec(),
        hex("ee a1 3e 24 6c 84 05 62 b1 10 ef d3 82 6c 9b 11")
    );
    let k: [u8; 16] = hex("ee a1 3e 24 6c 84 05 62 b1 10 ef d3 82 6c 9b 11")
        .try_into()
        .unwrap();
    let cipher = aes::Aes128::new(&aes::cipher::Array::from(k));
    assert_eq!(
        derive_privacy_key(&cipher).to_vec(),
        hex("8a f1 2a cc e9 ed ae b7 e8 94 7f 86 6c 67 5b ac")
    );
    // from_password is from_bytes of that K.
    let by_password = SealKey::from_password("secret");
    let by_bytes = SealKey::from_bytes(k);
    assert_eq!(by_password.id(), by_bytes.id());
    let sealed = by_password
        .seal_to_vec(Transport::Ble, src(1), 1, &hex(OUT_PLAIN))
        .unwrap();
    assert!(open(&by_bytes, Transport::Ble, &sealed).is_ok());
    assert_eq!(
        open(&key(), Transport::Ble, &sealed).unwrap_err(),
        OpenError::BadMic
    );
}

#[test]
fn test_vector_f_ble_frame_of_a() {
    let sealed = hex(A_SEALED);
    let frame = hex(&format!("09 {A_SEALED} 65"));
    assert_eq!(ble::CRC8.checksum(&frame[..32]), 0x65);
    let adv = ble::pack(9, &sealed).unwrap();
    assert_eq!(adv.local_name.as_str(), "$&FuLGf7GQdGY]eT<:jh).7Irb0g,");
    assert_eq!(
        adv.service_uuids.as_slice(),
        &[0x17A7, 0x2A55, 0x4DE3, 0x756E, 0x95BA, 0xBC2C, 0xD328]
    );
}

// --- spec §12.1 "Rejected" ---------------------------------------------------------------------

#[test]
fn test_rejected_mic_last_bit_flipped() {
    let e = open_err(
        Transport::Ble,
        "88 99 00 78 c4 c1 db d1 e1 12 29 9f ae 4c 57 19 60 72 10 ca d2 bd 3a 95 5b c7 56 ea dd 70 b3",
    );
    assert_eq!(e, OpenError::BadMic);
    assert_eq!((e.reason(), e.step()), ("bad MIC", Some(2)));
}

#[test]
fn test_rejected_obfuscated_source_id_bit_flipped() {
    let e = open_err(
        Transport::Ble,
        "88 19 00 78 c4 c1 db d1 e1 12 29 9f ae 4c 57 19 60 72 10 ca d2 bd 3a 95 5b c7 56 ea dd 70 b2",
    );
    assert_eq!(e, OpenError::BadMic);
}

#[test]
fn test_rejected_ctrl_l_set_is_in_the_aad() {
    let e = open_err(
        Transport::Ble,
        "89 99 00 78 c4 c1 db d1 e1 12 29 9f ae 4c 57 19 60 72 10 ca d2 bd 3a 95 5b c7 56 ea dd 70 b2",
    );
    assert_eq!(e, OpenError::BadMic);
}

#[test]
fn test_rejected_ctrl_e_set() {
    let e = open_err(
        Transport::Ble,
        "8c 99 00 78 c4 c1 db d1 e1 12 29 9f ae 4c 57 19 60 72 10 ca d2 bd 3a 95 5b c7 56 ea dd 70 b2",
    );
    assert_eq!(e, OpenError::ESet { control: 0x8c });
    assert_eq!((e.reason(), e.step()), ("E set", Some(1)));
}

#[test]
fn test_rejected_ctrl_r_on_out() {
    let e = open_err(
        Transport::Ble,
        "8a 99 00 78 c4 c1 db d1 e1 12 29 9f ae 4c 57 19 60 72 10 ca d2 bd 3a 95 5b c7 56 ea dd 70 b2",
    );
    assert_eq!(
        e,
        OpenError::FlagNotAllowed {
            flag: Flag::Reply,
            op: Op::Out
        }
    );
    assert_eq!(e.reason(), "flag not allowed");
}

#[test]
fn test_rejected_a_received_over_udp() {
    assert_eq!(open_err(Transport::Udp, A_SEALED), OpenError::BadMic);
}

#[test]
fn test_rejected_a_truncated_to_12_bytes() {
    let e = open_err(Transport::Ble, "88 99 00 78 c4 c1 db d1 e1 12 29 9f");
    assert_eq!(e, OpenError::TooShort { len: 12, min: 13 });
    assert_eq!(e.reason(), "too short");
}

#[test]
fn test_rejected_a_received_a_second_time() {
    let k = key();
    let mut window = ReplayWindow::default();
    let (opened, msg) = k
        .receive(&mut window, Transport::Ble, &hex(A_SEALED))
        .unwrap();
    assert_eq!((opened.source_id(), opened.counter()), (src(0x0102), 7));
    assert_eq!(msg.op(), Op::Out);
    let e = k
        .receive(&mut window, Transport::Ble, &hex(A_SEALED))
        .unwrap_err();
    assert_eq!(
        e,
        OpenError::Duplicate {
            source_id: src(0x0102),
            counter: 7
        }
    );
    assert_eq!((e.reason(), e.step()), ("duplicate", Some(3)));
}

// --- more named rejections ---------------------------------------------------------------------

#[test]
fn test_rejects_replay_below_the_window() {
    let k = key();
    let plain = hex(OUT_PLAIN);
    let mut window = ReplayWindow::default();
    let old = k.seal_to_vec(Transport::Ble, src(5), 10, &plain).unwrap();
    let new = k.seal_to_vec(Transport::Ble, src(5), 74, &plain).unwrap();
    k.receive(&mut window, Transport::Ble, &new).unwrap();
    assert_eq!(
        k.receive(&mut window, Transport::Ble, &old).unwrap_err(),
        OpenError::Replay {
            source_id: src(5),
            counter: 10,
            lowest: 11
        }
    );
}

#[test]
fn test_rejects_source_id_zero_after_the_mic() {
    let k = key();
    let mut sealed = [0u8; 31];
    let n = k
        .seal_raw(Transport::Ble, 0, 1, &hex(OUT_PLAIN), &mut sealed)
        .unwrap();
    let e = open(&k, Transport::Ble, &sealed[..n]).unwrap_err();
    assert_eq!(e, OpenError::BadSourceId);
    assert_eq!((e.reason(), e.step()), ("bad source id", Some(2)));
}

#[test]
fn test_rejects_versions_other_than_sealed() {
    let mut m = hex(A_SEALED);
    m[0] = 0x48;
    assert_eq!(
        open(&key(), Transport::Ble, &m).unwrap_err(),
        OpenError::NotSealed
    );
    m[0] = 0x08;
    assert_eq!(
        open(&key(), Transport::Ble, &m).unwrap_err(),
        OpenError::UnknownVersion { version: 0 }
    );
    m[0] = 0xc8;
    assert_eq!(
        open(&key(), Transport::Ble, &m).unwrap_err(),
        OpenError::UnknownVersion { version: 3 }
    );
    assert!(is_sealed(&hex(A_SEALED)));
    assert!(!is_sealed(&hex(OUT_PLAIN)));
    assert!(!is_sealed(&[]));
}

#[test]
fn test_rejects_bad_op_and_lengths() {
    let mut m = hex(A_SEALED);
    m[0] = 0x80;
    assert_eq!(
        open(&key(), Transport::Ble, &m).unwrap_err(),
        OpenError::BadOp { control: 0x80 }
    );
    let long = [&hex(A_SEALED)[..], &[0]].concat();
    assert_eq!(
        open(&key(), Transport::Ble, &long).unwrap_err(),
        OpenError::TooLong {
            len: 32,
            max: 31,
            transport: "a BLE frame"
        }
    );
    assert_eq!(
        open(&key(), Transport::Udp, &hex(A_SEALED)[..16]).unwrap_err(),
        OpenError::TooShort { len: 16, min: 17 }
    );
    assert_eq!(
        open(&key(), Transport::Ble, &[]).unwrap_err(),
        OpenError::TooShort { len: 0, min: 13 }
    );
    assert!(matches!(
        open(&key(), Transport::Udp, &vec![0x88; 1222]).unwrap_err(),
        OpenError::TooLong {
            len: 1222,
            max: 1221,
            ..
        }
    ));
    // IAMHERE (op 6) with L: L is only for OUT, RD, INP, TEST.
    m[0] = 0xb1;
    assert_eq!(
        open(&key(), Transport::Ble, &m).unwrap_err(),
        OpenError::FlagNotAllowed {
            flag: Flag::Lifetime,
            op: Op::IAmHere
        }
    );
}

#[test]
fn test_open_buffer_too_small() {
    let mut out = [0u8; 20];
    assert_eq!(
        key().open(Transport::Ble, &hex(A_SEALED), &mut out),
        Err(OpenError::BufferTooSmall {
            needed: 21,
            available: 20
        })
    );
}

#[test]
fn test_parse_failure_keeps_the_counter_used_up() {
    // An OUT whose tuple signature is 00: authentic, but not a v1 body (step 4).
    let k = key();
    let sealed = k
        .seal_to_vec(Transport::Udp, src(9), 3, &[0x48, 0x00, 0x00])
        .unwrap();
    let mut window = ReplayWindow::default();
    assert_eq!(
        k.receive(&mut window, Transport::Udp, &sealed).unwrap_err(),
        OpenError::Parse(DecodeError::BadTupleSignature { signature: 0 })
    );
    assert!(matches!(
        k.receive(&mut window, Transport::Udp, &sealed).unwrap_err(),
        OpenError::Duplicate { counter: 3, .. }
    ));
}

// --- sealing refusals ----------------------------------------------------------------------------

#[test]
fn test_seal_refuses_a_body_over_20_bytes_on_ble_naming_both_sizes() {
    // §12: the §10 OUT with a lifetime no longer fits BLE.
    let msg = Message::Out {
        tuple: parse_tuple(r#"("SENSOR", "LIGHT", 512, 1.5)"#).unwrap(),
        lifetime: NonZeroU16::new(600),
    };
    let plain = msg.to_bytes(None);
    let e = key()
        .seal_to_vec(Transport::Ble, src(1), 0, &plain)
        .unwrap_err();
    assert_eq!(
        e,
        SealError::TooLong {
            body_len: 22,
            max_body_len: 20,
            sealed_len: 33,
            max_len: 31,
            transport: "a BLE frame"
        }
    );
    let text = e.to_string();
    assert!(
        text.contains("33") && text.contains("31") && text.contains("20"),
        "{text}"
    );
    // It fits UDP.
    assert_eq!(
        key()
            .seal_to_vec(Transport::Udp, src(1), 0, &plain)
            .unwrap()
            .len(),
        37
    );
    let big = vec![0x48; 1208];
    assert!(matches!(
        key().seal_to_vec(Transport::Udp, src(1), 0, &big),
        Err(SealError::TooLong {
            body_len: 1207,
            max_body_len: 1206,
            ..
        })
    ));
}

#[test]
fn test_seal_refuses_what_is_not_a_plain_v1_message() {
    let k = key();
    let seal = |plain: &[u8]| k.seal_to_vec(Transport::Ble, src(1), 0, plain).unwrap_err();
    assert_eq!(seal(&hex(A_SEALED)), SealError::NotV1 { version: 2 });
    let mut fpe = hex(OUT_PLAIN);
    fpe[0] |= FLAG_E;
    crate::fpe::FpeKey::from_password("bee").encrypt(&mut fpe[1..]);
    assert_eq!(seal(&fpe), SealError::Encrypted);
    assert_eq!(seal(&[0x40, 1, 2]), SealError::BadOp { control: 0x40 });
    assert_eq!(
        seal(&[0x4a, 0x40, 0]),
        SealError::FlagNotAllowed {
            flag: Flag::Reply,
            op: Op::Out
        }
    );
    assert_eq!(seal(&[0x48, 0x40]), SealError::TooShort { len: 2, min: 3 });
    assert_eq!(seal(&[]), SealError::TooShort { len: 0, min: 3 });
    let mut out = [0u8; 30];
    assert_eq!(
        k.seal(Transport::Ble, src(1), 0, &hex(OUT_PLAIN), &mut out),
        Err(SealError::BufferTooSmall {
            needed: 31,
            available: 30
        })
    );
}

#[test]
fn test_smallest_sealed_messages() {
    let k = key();
    // ("") : signature 0xc0, varint 0.
    let plain = [0x48, 0xc0, 0x00];
    for (t, len) in [(Transport::Ble, 13), (Transport::Udp, 17)] {
        let sealed = k.seal_to_vec(t, src(1), 0, &plain).unwrap();
        assert_eq!(sealed.len(), len);
        assert_eq!(t.sealed_min_len(), len);
        assert_eq!(open(&k, t, &sealed).unwrap().1, plain);
    }
    assert_eq!(Transport::Ble.sealed_max_body_len(), 20);
    assert_eq!(Transport::Udp.sealed_max_body_len(), 1206);
}

#[test]
fn test_largest_sealed_messages() {
    let k = key();
    for t in [Transport::Ble, Transport::Udp] {
        let n = t.sealed_max_body_len();
        // A 1-tuple of bytes filling the body: signature, varint (1 or 2 bytes), data.
        let varint = if n - 2 < 64 { 1 } else { 2 };
        let data = vec![0xab; n - 1 - varint];
        let tuple = crate::Tuple::new(vec![crate::Value::Bytes(data)]).unwrap();
        let msg = Message::Tuple {
            tuple,
            reply: false,
        };
        let plain = msg.to_bytes(None);
        assert_eq!(plain.len(), n + 1);
        let sealed = k.seal_to_vec(t, src(2), 1, &plain).unwrap();
        assert_eq!(sealed.len(), t.max_message_len());
        assert_eq!(k.open_message(t, &sealed).unwrap().1, msg);
    }
}

#[test]
fn test_key_from_hex_errors_and_debug_hides_key() {
    assert_eq!(
        SealKey::from_hex("0001").unwrap_err(),
        KeyError::BadLength { len: 4 }
    );
    assert_eq!(
        SealKey::from_hex("000102030405060708090a0b0c0d0e0g").unwrap_err(),
        KeyError::BadDigit {
            position: 31,
            found: 'g'
        }
    );
    assert_eq!(
        SealKey::from_hex("000102030405060708090A0B0C0D0E0F")
            .unwrap()
            .id(),
        key().id()
    );
    let debug = format!("{:?}", key());
    assert!(debug.starts_with("SealKey { id: KeyId("), "{debug}");
    assert!(!debug.contains("0, 1, 2, 3"), "{debug}");
    assert_ne!(SealKey::from_bytes([0; 16]).id(), key().id());
    assert_eq!(key().id().to_string().len(), 16);
}

#[test]
fn test_sealer_seals_message_with_successive_counters() {
    let k = key();
    let mut sealer = Sealer::new(
        k.clone(),
        Transport::Ble,
        src(0x0102),
        MemoryCounterStore::new(),
    )
    .unwrap();
    let msg = Message::Rd(parse_template(r#"("SENSOR", ?int16)"#).unwrap());
    let mut out = [0u8; 31];
    for expected in 0..3 {
        let s = sealer.seal_message(&msg, &mut out).unwrap();
        assert_eq!(s.counter, expected);
        let (opened, back) = k.open_message(Transport::Ble, &out[..s.len]).unwrap();
        assert_eq!((opened.counter(), back), (expected, msg.clone()));
    }
    // Refused input spends no counter.
    let too_long = Message::Out {
        tuple: parse_tuple(r#"("SENSOR", "LIGHT", 512, 1.5)"#).unwrap(),
        lifetime: NonZeroU16::new(600),
    };
    assert!(matches!(
        sealer.seal_message(&too_long, &mut out),
        Err(SealerError::Seal(SealError::TooLong { .. }))
    ));
    let mut small = [0u8; 5];
    assert!(matches!(
        sealer.seal_message(&msg, &mut small),
        Err(SealerError::Seal(SealError::BufferTooSmall { .. }))
    ));
    assert_eq!(sealer.next_counter(), Some(3));
    let (v, c) = sealer.seal_to_vec(&msg.to_bytes(None)).unwrap();
    assert_eq!((v.len(), c), (msg.buffer_len() + 10, 3));
}

// --- properties ----------------------------------------------------------------------------------

fn arb_transport() -> impl Strategy<Value = Transport> {
    prop_oneof![Just(Transport::Ble), Just(Transport::Udp)]
}

proptest! {
    /// open(seal(x)) == x for every message that fits, on both transports; a message that does
    /// not fit is refused naming the sizes.
    #[test]
    fn seal_open_round_trips(
        msg in arb_message(),
        t in arb_transport(),
        source in 1u16..,
        counter in any::<u32>(),
    ) {
        let k = key();
        let plain = msg.to_bytes(None);
        match k.seal_to_vec(t, src(source), counter, &plain) {
            Ok(sealed) => {
                prop_assert!(plain.len() - 1 <= t.sealed_max_body_len());
                prop_assert_eq!(sealed.len(), t.sealed_len(plain.len()));
                prop_assert!(is_sealed(&sealed));
                let (opened, back) = open(&k, t, &sealed).unwrap();
                prop_assert_eq!(&back, &plain);
                prop_assert_eq!((opened.source_id().get(), opened.counter()), (source, counter));
                let (_, m) = k.open_message(t, &sealed).unwrap();
                prop_assert_eq!(m, msg);
            }
            Err(SealError::TooLong { body_len, max_body_len, .. }) => {
                prop_assert_eq!(body_len, plain.len() - 1);
                prop_assert!(body_len > max_body_len);
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    /// Every single-bit flip of a sealed message is rejected; past the control byte, always as
    /// "bad MIC" (never a different tuple).
    #[test]
    fn every_bit_flip_is_rejected(
        msg in arb_message(),
        t in arb_transport(),
        source in 1u16..,
        counter in any::<u32>(),
        bit in any::<prop::sample::Index>(),
    ) {
        let k = key();
        let plain = msg.to_bytes(None);
        prop_assume!(plain.len() - 1 <= t.sealed_max_body_len());
        let mut sealed = k.seal_to_vec(t, src(source), counter, &plain).unwrap();
        let bit = bit.index(sealed.len() * 8);
        sealed[bit / 8] ^= 1 << (bit % 8);
        let e = open(&k, t, &sealed).unwrap_err();
        if bit >= 8 {
            prop_assert_eq!(e, OpenError::BadMic);
        }
    }

    /// Arbitrary input never panics and is never accepted by chance in practice.
    #[test]
    fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), t in arb_transport()) {
        let mut out = [0u8; MAX_OPENED_LEN];
        let _ = key().open(t, &bytes, &mut out);
        let _ = key().open(t, &bytes, &mut out[..3]);
    }
}

#[test]
fn every_bit_flip_of_the_vectors_is_rejected() {
    let k = key();
    for (t, sealed) in [(Transport::Ble, A_SEALED), (Transport::Udp, B_SEALED)] {
        let sealed = hex(sealed);
        for bit in 0..sealed.len() * 8 {
            let mut m = sealed.clone();
            m[bit / 8] ^= 1 << (bit % 8);
            let e = open(&k, t, &m).unwrap_err();
            if bit >= 8 {
                assert_eq!(e, OpenError::BadMic, "bit {bit}");
            }
        }
    }
}
