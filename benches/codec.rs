//! Codec benches: message encode/decode against postcard on the same data (owned `String` fields,
//! and borrowed `&str` fields, which decode without allocating), FPE table build and apply, BLE
//! frame pack + unpack with and without stale UUIDs.
//!
//! Run: `cargo bench --bench codec` (add `-- --quick` for a short run).

use std::hint::black_box;

use beets::core::{FpeKey, Message, Transport, Tuple, ble};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};

/// The reference: the spec's OUT 4-tuple as a plain Rust struct for postcard.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Reading {
    kind: String,
    sensor: String,
    value: i16,
    scale: f32,
}

/// The same with borrowed strings: postcard's zero-allocation decode, the stricter peer.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct ReadingRef<'a> {
    kind: &'a str,
    sensor: &'a str,
    value: i16,
    scale: f32,
}

fn spec_out() -> Message {
    let tuple: Tuple = r#"("SENSOR", "LIGHT", 512, 1.5)"#.parse().unwrap();
    Message::Out {
        tuple,
        lifetime: None,
    }
}

fn codec(c: &mut Criterion) {
    let msg = spec_out();
    let bytes = msg.to_bytes(None);
    let mut g = c.benchmark_group("message");
    g.bench_function("encode_out4", |b| {
        let mut buf = [0u8; 64];
        b.iter(|| black_box(&msg).emit(&mut buf, None).unwrap())
    });
    g.bench_function("decode_out4", |b| {
        b.iter(|| Message::parse(black_box(&bytes), None).unwrap())
    });
    let reading = Reading {
        kind: "SENSOR".into(),
        sensor: "LIGHT".into(),
        value: 512,
        scale: 1.5,
    };
    let pc = postcard::to_allocvec(&reading).unwrap();
    g.bench_function("postcard_encode", |b| {
        let mut buf = [0u8; 64];
        b.iter(|| {
            postcard::to_slice(black_box(&reading), &mut buf)
                .unwrap()
                .len()
        })
    });
    g.bench_function("postcard_decode", |b| {
        b.iter(|| postcard::from_bytes::<Reading>(black_box(&pc)).unwrap())
    });
    let borrowed = ReadingRef {
        kind: "SENSOR",
        sensor: "LIGHT",
        value: 512,
        scale: 1.5,
    };
    assert_eq!(postcard::to_allocvec(&borrowed).unwrap(), pc, "same bytes");
    g.bench_function("postcard_borrowed_encode", |b| {
        let mut buf = [0u8; 64];
        b.iter(|| {
            postcard::to_slice(black_box(&borrowed), &mut buf)
                .unwrap()
                .len()
        })
    });
    g.bench_function("postcard_borrowed_decode", |b| {
        b.iter(|| postcard::from_bytes::<ReadingRef<'_>>(black_box(&pc)).unwrap())
    });
    g.finish();
}

fn fpe(c: &mut Criterion) {
    let mut g = c.benchmark_group("fpe");
    g.bench_function("table_build", |b| {
        b.iter(|| FpeKey::from_password(black_box("secret")))
    });
    let key = FpeKey::from_password("secret");
    let mut buf = vec![0u8; 1024];
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("apply_1k", |b| b.iter(|| key.encrypt(black_box(&mut buf))));
    g.finish();
}

fn ble_frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("ble");
    // The spec's OUT with lifetime: 23 bytes, 2 UUIDs.
    let msg: Message = Message::Out {
        tuple: r#"("SENSOR", "LIGHT", -300, 21.75)"#.parse().unwrap(),
        lifetime: std::num::NonZeroU16::new(600),
    };
    let bytes = msg.to_bytes(None);
    g.bench_function("pack_unpack", |b| {
        b.iter(|| {
            let adv = ble::pack(200, black_box(&bytes)).unwrap();
            ble::unpack(&adv.local_name, &adv.service_uuids, None).unwrap()
        })
    });
    // Seven stale UUIDs of the same device's earlier frames mixed in.
    let adv = ble::pack(200, &bytes).unwrap();
    let mut uuids = adv.service_uuids.to_vec();
    for s in 0..7u16 {
        let old = Message::Out {
            tuple: format!(r#"("SENSOR", "LIGHT", {}, 21.75)"#, -300 + i32::from(s))
                .parse()
                .unwrap(),
            lifetime: std::num::NonZeroU16::new(600 + s),
        };
        let old = ble::pack(199u8.wrapping_sub(s as u8), &old.to_bytes(None)).unwrap();
        uuids.extend_from_slice(&old.service_uuids);
    }
    uuids.sort_unstable();
    uuids.dedup();
    assert_eq!(
        uuids.len(),
        2 + 7,
        "seven stale slot-1 UUIDs beside the frame's two"
    );
    ble::unpack(&adv.local_name, &uuids, None).expect("stale UUIDs are told apart");
    g.bench_function("pack_unpack_7_stale", |b| {
        b.iter(|| {
            let fresh = ble::pack(200, black_box(&bytes)).unwrap();
            ble::unpack(&fresh.local_name, black_box(&uuids), None).unwrap()
        })
    });
    g.finish();
}

/// The engine's receive path per message: envelope, decode, dedup, spec §9 action (here an OUT
/// stored in a space that evicts its oldest tuple when full, so the space stays at its capacity).
fn engine(c: &mut Criterion) {
    use beets::core::udp::{self, DatagramHeader, NodeId};
    use beets::core::{Frame, Node, NodeConfig, PeerAddr, Time, Transport};
    let mut g = c.benchmark_group("engine");
    let msg = spec_out();
    let datagrams: Vec<Vec<u8>> = (0..4096u32)
        .map(|seq| {
            let h = DatagramHeader {
                node_id: NodeId::new(7).unwrap(),
                seq,
            };
            udp::encode(&h, &msg, None).unwrap()
        })
        .collect();
    let from = PeerAddr::Ip(([127, 0, 0, 7], 49737).into());
    g.bench_function("handle_frame_udp_out", |b| {
        let mut node = Node::new(
            NodeConfig::new(Transport::Udp, "bench").unwrap(),
            1,
            Time::ZERO,
        );
        let mut i = 0usize;
        let mut now = 0u64;
        b.iter(|| {
            // Distinct keys: each datagram is new to the dedup cache once its key was evicted.
            i = (i + 1) % datagrams.len();
            now += 3; // 4096 keys × 3 ms > the 10 s window: every frame is fresh
            node.handle_frame(
                Time::from_millis(now),
                from,
                Frame::Datagram(black_box(&datagrams[i])),
                None,
            );
            while node.poll_event().is_some() {}
        })
    });
    g.bench_function("handle_frame_udp_duplicate", |b| {
        let mut node = Node::new(
            NodeConfig::new(Transport::Udp, "bench").unwrap(),
            1,
            Time::ZERO,
        );
        node.handle_frame(Time::ZERO, from, Frame::Datagram(&datagrams[0]), None);
        b.iter(|| {
            node.handle_frame(
                Time::ZERO,
                from,
                Frame::Datagram(black_box(&datagrams[0])),
                None,
            )
        })
    });
    g.finish();
}

/// Spec §12 on BLE: seal the spec's OUT (20-byte body, M = 4) and open it again (goal ≤ 1 µs
/// together), beside FPE-encrypting and decoding the same message in the same run.
fn sealed(c: &mut Criterion) {
    use beets_core::sealed::SealKey;
    let mut g = c.benchmark_group("sealed");
    let key = SealKey::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
    let source = std::num::NonZeroU16::new(0x0102).unwrap();
    let plain = spec_out().to_bytes(None);
    let mut out = [0u8; 31];
    let mut counter = 0u32;
    g.bench_function("seal_open_ble_spec_out", |b| {
        b.iter(|| {
            counter = counter.wrapping_add(1);
            let n = key
                .seal(Transport::Ble, source, counter, black_box(&plain), &mut out)
                .unwrap();
            black_box(key.open_message(Transport::Ble, &out[..n]).unwrap())
        })
    });
    let fpe = FpeKey::from_password("secret");
    g.bench_function("fpe_encode_decode_spec_out", |b| {
        b.iter(|| {
            let bytes = black_box(spec_out()).to_bytes(Some(&fpe));
            black_box(Message::parse(&bytes, Some(&fpe)).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, codec, fpe, ble_frame, engine, sealed);
criterion_main!(benches);
