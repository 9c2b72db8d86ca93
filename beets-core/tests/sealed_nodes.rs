//! Sealed spaces through the engine (spec §12): what strangers in range can no longer do — store,
//! forge, replay — and what key holders still can, on UDP and BLE, across restarts.

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::time::Duration;

use beets_core::node::SealConfig;
use beets_core::sealed::{FileCounterStore, MemoryCounterStore, SealKey};
use beets_core::{
    Event, Frame, Node, NodeConfig, NodeError, PeerAddr, Time, Transmit, Transport, Tuple,
    parse_template,
};

fn key() -> SealKey {
    SealKey::from_hex("000102030405060708090a0b0c0d0e0f").unwrap()
}

fn sid(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap()
}

fn sealed(transport: Transport, name: &str, source: u16, seed: u64) -> Node {
    let seal = SealConfig::new(key(), sid(source), MemoryCounterStore::default());
    let cfg = NodeConfig::new(transport, name).unwrap().with_seal(seal);
    Node::new(cfg, seed, Time::ZERO)
}

fn plain(transport: Transport, name: &str, seed: u64) -> Node {
    Node::new(NodeConfig::new(transport, name).unwrap(), seed, Time::ZERO)
}

fn t(s: &str) -> Tuple {
    s.parse().unwrap()
}

fn ms(n: u64) -> Time {
    Time::from_millis(n)
}

fn ip(i: u8) -> PeerAddr {
    PeerAddr::Ip(SocketAddr::from(([127, 0, 0, i], 49737)))
}

/// Everything `from` has queued, as transmits.
fn drain(from: &mut Node) -> Vec<Transmit> {
    std::iter::from_fn(|| from.poll_transmit()).collect()
}

fn deliver(to: &mut Node, now: Time, src: PeerAddr, tx: &Transmit) {
    match tx {
        Transmit::Datagram(d) => to.handle_frame(now, src, Frame::Datagram(d), None),
        Transmit::Advertisement(a) => to.handle_frame(
            now,
            src,
            Frame::Advertisement {
                local_name: &a.local_name,
                service_uuids: &a.service_uuids,
            },
            Some(-60),
        ),
    }
}

fn pump(from: &mut Node, to: &mut Node, now: Time, src: PeerAddr) -> Vec<Transmit> {
    let txs = drain(from);
    for tx in &txs {
        deliver(to, now, src, tx);
    }
    txs
}

fn count(n: &mut Node, tpl: &str) -> usize {
    n.host().count(ms(0), &parse_template(tpl).unwrap())
}

#[test]
fn key_holders_exchange_out_and_rd_on_both_transports() {
    for transport in [Transport::Udp, Transport::Ble] {
        let (mut a, mut b) = (sealed(transport, "a", 1, 1), sealed(transport, "b", 2, 2));
        a.out(ms(0), t(r#"("SENSOR", "LIGHT", 512, 1.5)"#), None)
            .unwrap();
        pump(&mut a, &mut b, ms(0), ip(1));
        assert_eq!(count(&mut b, "(?, ?, ?, ?)"), 1, "{transport:?}");
        let id = a
            .rd(
                ms(1),
                parse_template(r#"("SENSOR", ?, ?, ?)"#).unwrap(),
                Duration::from_secs(5),
            )
            .unwrap();
        pump(&mut a, &mut b, ms(1), ip(1));
        b.handle_timeout(ms(600));
        pump(&mut b, &mut a, ms(600), ip(2));
        let got = std::iter::from_fn(|| a.poll_event()).find_map(|e| match e {
            Event::Completed {
                id: done, reply, ..
            } if done == id => reply,
            _ => None,
        });
        assert_eq!(
            got.map(|(t, _)| t),
            Some(t(r#"("SENSOR", "LIGHT", 512, 1.5)"#))
        );
        assert_eq!(b.stats().sealed.total(), 0, "{transport:?}");
    }
}

#[test]
fn strangers_cannot_store_and_unsealed_spaces_ignore_sealed_messages() {
    let (mut stranger, mut space) = (
        plain(Transport::Udp, "x", 9),
        sealed(Transport::Udp, "b", 2, 2),
    );
    stranger.out(ms(0), t(r#"("OPEN", "DOOR")"#), None).unwrap();
    pump(&mut stranger, &mut space, ms(0), ip(9));
    assert_eq!(count(&mut space, "(?, ?)"), 0);
    assert_eq!(space.stats().sealed.not_sealed, 1);

    let mut a = sealed(Transport::Udp, "a", 1, 1);
    a.out(ms(1), t(r#"("SECRET", 1)"#), None).unwrap();
    pump(&mut a, &mut stranger, ms(1), ip(1));
    assert_eq!(count(&mut stranger, "(?, ?)"), 0);
    assert_eq!(stranger.stats().sealed.sealed_no_key, 1);
}

#[test]
fn forged_and_replayed_messages_are_dropped_by_reason() {
    let (mut a, mut b) = (
        sealed(Transport::Udp, "a", 1, 1),
        sealed(Transport::Udp, "b", 2, 2),
    );
    a.out(ms(0), t(r#"("JOB", 1)"#), None).unwrap();
    let sent = pump(&mut a, &mut b, ms(0), ip(1));
    assert_eq!(count(&mut b, "(?, ?)"), 1);
    let Transmit::Datagram(d) = &sent[0] else {
        panic!()
    };

    // Replayed under another envelope (new node id and seq: the §8 cache would take it).
    let mut replay = d.clone();
    replay[3..7].copy_from_slice(&0x0bad_cafe_u32.to_be_bytes());
    replay[7..11].copy_from_slice(&7u32.to_be_bytes());
    deliver(&mut b, ms(1), ip(66), &Transmit::Datagram(replay));
    assert_eq!(b.stats().sealed.duplicate, 1);

    // Forged: any bit of the sealed part flipped.
    let mut forged = d.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    forged[3] ^= 0x80; // a new envelope too
    deliver(&mut b, ms(2), ip(66), &Transmit::Datagram(forged));
    assert_eq!(b.stats().sealed.bad_mic, 1);

    // Another key: bad MIC as well.
    let other = SealConfig::new(
        SealKey::from_password("not the key"),
        sid(3),
        MemoryCounterStore::default(),
    );
    let mut c = Node::new(
        NodeConfig::new(Transport::Udp, "c")
            .unwrap()
            .with_seal(other),
        3,
        Time::ZERO,
    );
    c.out(ms(3), t(r#"("JOB", 2)"#), None).unwrap();
    pump(&mut c, &mut b, ms(3), ip(3));
    assert_eq!(b.stats().sealed.bad_mic, 2);

    // Many later messages move the window past the first: now it is a replay.
    for i in 0..70 {
        a.out(ms(10 + i), t(&format!(r#"("JOB", {})"#, 10 + i)), None)
            .unwrap();
        pump(&mut a, &mut b, ms(10 + i), ip(1));
    }
    deliver(&mut b, ms(100), ip(66), &Transmit::Datagram(d.clone()));
    assert_eq!(b.stats().sealed.replay, 1);
    assert_eq!(count(&mut b, "(\"JOB\", ?)"), 71);
}

#[test]
fn a_ble_sealed_body_is_at_most_20_bytes_and_out_names_both_sizes() {
    let mut a = sealed(Transport::Ble, "a", 1, 1);
    // The paper's tuple fits exactly; with a lifetime (2 more bytes) it does not.
    a.out(ms(0), t(r#"("SENSOR", "LIGHT", 512, 1.5)"#), None)
        .unwrap();
    let err = a
        .out(
            ms(0),
            t(r#"("SENSOR", "LIGHT", 512, 1.5)"#),
            Some(Duration::from_secs(600)),
        )
        .unwrap_err();
    assert_eq!(
        err,
        NodeError::SealedTooLong {
            op: beets_core::Op::Out,
            body_len: 22,
            max_body_len: 20,
            transport: Transport::Ble.name(),
        }
    );
    assert!(
        err.to_string().contains("22") && err.to_string().contains("20"),
        "{err}"
    );
    // And the local space refuses what no sealed reply could carry.
    assert!(
        a.host()
            .out(ms(0), t(r#"("SENSOR-LONG", "LIGHT", 512, 1.5)"#), None)
            .is_err()
    );
}

/// The §12.1 vector b, a UDP datagram sealed by an independent implementation, stores its tuple.
#[test]
fn the_spec_vector_datagram_is_accepted() {
    let mut b = sealed(Transport::Udp, "b", 2, 2);
    let hex = "be75011122334400000005888db4b5c347ef72d5782df454cda4a8051554d96b6b790709f4ec2090e5aac8d68514";
    let d: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    b.handle_frame(ms(0), ip(9), Frame::Datagram(&d), None);
    assert_eq!(count(&mut b, r#"("SENSOR", "LIGHT", 512, 1.5)"#), 1);
    b.handle_frame(ms(1), ip(9), Frame::Datagram(&d), None);
    assert_eq!(b.stats().sealed.duplicate, 1);
}

fn state_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("beets-sealed-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A node that crashes (no clean shutdown) and restarts on the same state directory never
/// reuses a counter: the receiver, whose window remembers the old ones, accepts everything
/// the restarted node sends. A receiver that restarts with its saved window still drops
/// replays of what it saw before.
#[test]
fn counters_and_the_replay_window_survive_restarts() {
    let (dir_a, dir_b) = (state_dir("a"), state_dir("b"));
    let node = |dir: &std::path::Path, name: &str, source: u16, seed: u64| {
        let store = FileCounterStore::open(dir).unwrap();
        let seal = SealConfig::new(key(), sid(source), store);
        Node::new(
            NodeConfig::new(Transport::Udp, name)
                .unwrap()
                .with_seal(seal),
            seed,
            Time::ZERO,
        )
    };
    let mut b = node(&dir_b, "b", 2, 2);
    let mut first = Vec::new();
    {
        let mut a = node(&dir_a, "a", 1, 1);
        for i in 0..5 {
            a.out(ms(i), t(&format!("({i})")), None).unwrap();
            first.extend(pump(&mut a, &mut b, ms(i), ip(1)));
        }
        // Dropped without saving anything: a crash.
    }
    let mut a = node(&dir_a, "a", 1, 11);
    for i in 5..10 {
        a.out(ms(i), t(&format!("({i})")), None).unwrap();
        pump(&mut a, &mut b, ms(i), ip(1));
    }
    assert_eq!(b.stats().sealed.total(), 0, "no counter reused");
    assert_eq!(count(&mut b, "(?)"), 10);

    // b shuts down cleanly and comes back: the old messages are still refused.
    b.save_seal_state(ms(20)).unwrap();
    drop(b);
    let mut b = node(&dir_b, "b", 2, 12);
    for tx in &first {
        deliver(&mut b, ms(30), ip(66), tx);
    }
    // The restarted sender continued at its reserved bound (1024), so the old counters are
    // below the window now: replays.
    assert_eq!(b.stats().sealed.replay, 5);
    assert_eq!(count(&mut b, "(?)"), 0);
    let _ = std::fs::remove_dir_all(&dir_a);
    let _ = std::fs::remove_dir_all(&dir_b);
}

/// On BLE a captured advertisement replayed from another device address (the §8 key would be
/// new) is a duplicate by its counter; a forged one (a UUID changed) has no valid combination.
#[test]
fn ble_replays_from_another_address_are_duplicates() {
    let (mut a, mut b) = (
        sealed(Transport::Ble, "a", 1, 1),
        sealed(Transport::Ble, "b", 2, 2),
    );
    a.out(ms(0), t(r#"("DOOR", "open")"#), None).unwrap();
    let sent = pump(&mut a, &mut b, ms(0), PeerAddr::Ble([0xC0, 0, 0, 0, 0, 1]));
    assert_eq!(count(&mut b, "(?, ?)"), 1);
    let stranger = PeerAddr::Ble([0x66, 0, 0, 0, 0, 66]);
    deliver(&mut b, ms(1), stranger, &sent[0]);
    assert_eq!(b.stats().sealed.duplicate, 1);
    assert_eq!(count(&mut b, "(?, ?)"), 1);
}
