//! A flood of 100 000 random, malformed, fresh and replayed datagrams at one node over loopback
//! (127.0.0.1 only): the node counts each kind exactly, its dedup cache stays at its bound, and it
//! still answers an `rd` afterwards.

mod common;

use std::num::NonZeroU16;
use std::time::Duration;

use beets_core::udp::{self, DatagramHeader, HEADER_LEN, MAX_DATAGRAM_LEN, NodeId};
use beets_core::{FpeKey, Message};
use beets_udp::UdpConfig;
use common::*;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

const TOTAL: usize = 100_000;
/// Datagrams sent before waiting for the node to read them: small enough that the kernel's
/// default receive buffer (208 KiB on Linux) never overflows, so every count below is exact.
const CHUNK: usize = 64;
/// Replays pick among this many most recent fresh datagrams (all still in the dedup cache).
const RECENT: usize = 100;

#[derive(Default, Debug)]
struct Sent {
    malformed: u64,
    oversize: u64,
    /// Valid but encrypted (E = 1) for another space's key: dropped as a key mismatch.
    foreign_key: u64,
    fresh: u64,
    replayed: u64,
}

/// A datagram that fails spec §7 or §4 whatever the random bytes (one of eight named kinds), or
/// one that is valid but encrypted for another space.
fn malformed(rng: &mut SmallRng, valid: &[u8], sent: &mut Sent) -> Vec<u8> {
    let mut header = DatagramHeader {
        node_id: NodeId::new(0xf100_d000).unwrap(),
        seq: rng.random(),
    };
    let mut header_bytes = [0u8; HEADER_LEN];
    header.emit(&mut header_bytes);
    let kind = rng.random_range(0..9u8);
    if kind == 8 {
        sent.foreign_key += 1;
        header.seq = rng.random();
        let msg = Message::Tuple {
            tuple: t(r#"("secret", 1)"#),
            reply: false,
        };
        return udp::encode(&header, &msg, Some(&FpeKey::from_password("other"))).unwrap();
    }
    sent.malformed += 1;
    match kind {
        // Empty: shorter than the header.
        0 => Vec::new(),
        // Random bytes that do not start with the magic.
        1 => {
            let mut d: Vec<u8> = (0..rng.random_range(1..200))
                .map(|_| rng.random())
                .collect();
            if d[0] == 0xbe {
                d[0] = 0;
            }
            d
        }
        // A good header and a message whose version bits are not v1 (E clear: an E = 1 message
        // is dropped as a key mismatch by an unkeyed space before its version is looked at).
        2 => {
            let mut d = header_bytes.to_vec();
            d.extend((0..rng.random_range(1..100)).map(|_| rng.random::<u8>()));
            d[HEADER_LEN] &= 0x3b;
            d
        }
        // Envelope version 2.
        3 => {
            let mut d = valid.to_vec();
            d[2] = 2;
            d
        }
        // Node id 0.
        4 => {
            let mut d = valid.to_vec();
            d[3..7].fill(0);
            d
        }
        // Longer than 1232 bytes (the receive buffer keeps 1233 of it).
        5 => {
            sent.oversize += 1;
            let mut d = valid.to_vec();
            d.resize(rng.random_range(MAX_DATAGRAM_LEN + 1..=1400), 0);
            d
        }
        // Trailing byte after a valid message.
        6 => {
            let mut d = valid.to_vec();
            d.push(0);
            d
        }
        // Truncated message.
        _ => valid[..valid.len() - 1].to_vec(),
    }
}

/// A new, valid message from a fake node (new sequence number): OUT, notify, RD or WHERE that
/// match nothing the node would answer.
fn fresh(i: u64, from: NodeId, seq: u32) -> Vec<u8> {
    let tuple = t(&format!("(\"flood\", {})", i % 30_000));
    let msg = match i % 4 {
        0 => Message::Out {
            tuple,
            lifetime: NonZeroU16::new(600),
        },
        1 => Message::Tuple {
            tuple,
            reply: false,
        },
        2 => Message::Rd(tpl("(\"nothing\", ?)")),
        _ => Message::Where(tpl(r#"("NODE", "nobody")"#)),
    };
    udp::encode(&DatagramHeader { node_id: from, seq }, &msg, None).unwrap()
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_random_and_replayed_datagrams_leaves_the_node_answering() {
    let (pt, pa) = (free_port(), free_port());
    // The target answers only the asker (unicast); the asker asks only the target.
    let target = spawn_with(
        UdpConfig {
            broadcast: None,
            peers: vec![localhost(pa)],
            ..UdpConfig::loopback(pt)
        },
        "target",
        61,
    );
    let asker = spawn_with(
        UdpConfig {
            broadcast: None,
            peers: vec![localhost(pt)],
            ..UdpConfig::loopback(pa)
        },
        "asker",
        62,
    );
    let rss_before = rss_kib();

    let flooder = tokio::net::UdpSocket::bind(localhost(0)).await.unwrap();
    let dest = localhost(pt);
    let fake = NodeId::new(target.node_id().get() ^ 0x5a5a_5a5a).unwrap();
    let mut rng = SmallRng::seed_from_u64(0xf100d);
    let mut sent = Sent::default();
    let mut recent: Vec<Vec<u8>> = Vec::new();
    let first = fresh(0, fake, 0);
    let template = fresh(1, fake, 1);
    let started = std::time::Instant::now();
    for n in 0..TOTAL {
        let datagram = match rng.random_range(0..10u8) {
            0..=3 => malformed(&mut rng, &template, &mut sent),
            4..=6 if !recent.is_empty() => {
                sent.replayed += 1;
                recent[rng.random_range(0..recent.len())].clone()
            }
            _ => {
                let d = if sent.fresh == 0 {
                    first.clone()
                } else {
                    fresh(sent.fresh, fake, sent.fresh as u32)
                };
                sent.fresh += 1;
                if recent.len() == RECENT {
                    recent.remove(0);
                }
                recent.push(d.clone());
                d
            }
        };
        flooder.send_to(&datagram, dest).await.unwrap();
        if (n + 1) % CHUNK == 0 || n + 1 == TOTAL {
            let want = (n + 1) as u64;
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while target.udp_stats().datagrams_received < want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "node stopped reading at {} of {want} datagrams",
                    target.udp_stats().datagrams_received
                );
                tokio::task::yield_now().await;
            }
        }
    }
    let total = TOTAL as u64;
    eventually(
        Duration::from_secs(10),
        "engine processed the flood",
        || async { target.handle().stats().await.unwrap().node.frames_in == total },
    )
    .await;
    let elapsed = started.elapsed();

    let stats = target.handle().stats().await.unwrap().node;
    let udp_stats = target.udp_stats();
    eprintln!("flood of {total} in {elapsed:?}: {sent:?}\nengine {stats:?}\nsocket {udp_stats:?}");
    assert_eq!(
        sent.malformed + sent.foreign_key + sent.fresh + sent.replayed,
        total
    );
    assert!(sent.malformed > 30_000 && sent.fresh > 20_000 && sent.replayed > 20_000);
    assert_eq!(stats.frames_in, total);
    // A malformed datagram whose (node id, seq) the node already processed is dropped as a
    // repeat before its body is decoded (the engine skips decoding known keys), so it counts
    // as a duplicate: every malformed datagram is in one of the two counters.
    assert!(stats.duplicates >= sent.replayed);
    let malformed_as_repeats = stats.duplicates - sent.replayed;
    assert_eq!(
        stats.dropped_malformed + malformed_as_repeats,
        sent.malformed
    );
    assert_eq!(stats.messages_in, sent.fresh);
    assert_eq!(stats.dropped_own, 0);
    assert_eq!(stats.dropped_key, sent.foreign_key);
    assert_eq!(
        stats.replies_sent, 0,
        "the flood asked for nothing the node holds"
    );
    assert_eq!(udp_stats.oversize_received, sent.oversize);
    assert_eq!(udp_stats.receive_errors, 0);
    // Stored OUTs are bounded by the space (4096 by default, oldest evicted).
    let stored = target
        .handle()
        .host_count(tpl("(\"flood\", ?)"))
        .await
        .unwrap();
    assert!(stored <= beets_core::space::DEFAULT_CAPACITY, "{stored}");

    // The dedup cache is bounded (4096 keys, spec §8): the first fresh key, ~30 000 keys ago, was
    // forgotten, so its replay is processed again; the latest one is still remembered.
    flooder.send_to(&first, dest).await.unwrap();
    flooder.send_to(recent.last().unwrap(), dest).await.unwrap();
    eventually(Duration::from_secs(5), "the two replays", || async {
        target.handle().stats().await.unwrap().node.frames_in == total + 2
    })
    .await;
    let after = target.handle().stats().await.unwrap().node;
    assert_eq!(
        after.messages_in,
        stats.messages_in + 1,
        "evicted key is new again"
    );
    assert_eq!(
        after.duplicates,
        stats.duplicates + 1,
        "recent key still known"
    );

    // Still answering (the probe goes in now: the flood's OUTs evicted the oldest tuples).
    target
        .handle()
        .host_out(t(r#"("probe", 1)"#), None)
        .await
        .unwrap();
    let reply = asker
        .handle()
        .rd(tpl("(\"probe\", ?)"), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(reply.map(|r| r.0), Some(t(r#"("probe", 1)"#)));

    if let (Some(before), Some(now)) = (rss_before, rss_kib()) {
        let grown = now.saturating_sub(before);
        eprintln!("RSS {before} KiB -> {now} KiB");
        assert!(
            grown < 16 * 1024,
            "RSS grew by {grown} KiB during the flood"
        );
    }
    target.close().await;
    asker.close().await;
}
