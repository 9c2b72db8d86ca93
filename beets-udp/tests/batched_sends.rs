//! Batched sends (GSO) on a current-thread runtime: `out`s in a row leave as batches of
//! equal-size segments, every datagram still arrives as its own datagram (unicast and on the
//! loopback broadcast), sizes may mix, and `close` sends what is still batched; the same on a
//! multi-thread runtime. Loopback only, each test on its own port.

mod common;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use beets_core::udp;
use beets_core::{Message, Tuple, Value};
use beets_udp::{UdpConfig, UdpSpace};
use common::*;
use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(5);

fn tuple(i: u64) -> Tuple {
    Tuple::new([Value::Str("B".into()), Value::Int16(i as i16)]).unwrap()
}

/// A tuple whose encoded size depends on `i` (1 to 3 string bytes).
fn mixed(i: u64) -> Tuple {
    Tuple::new([
        Value::Str("M".repeat(1 + (i % 3) as usize).into()),
        Value::Int16(i as i16),
    ])
    .unwrap()
}

/// A space on 127.0.0.1 that sends only to `peer`.
fn to_peer(peer: SocketAddr) -> UdpSpace {
    let udp = UdpConfig {
        bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        broadcast: None,
        peers: vec![peer],
        recv_buffer_size: Some(1 << 20),
        ..UdpConfig::default()
    };
    spawn_with(udp, "a", 1)
}

/// A raw socket with room for a burst.
async fn sink() -> UdpSocket {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    s.set_recv_buffer_size(1 << 20).unwrap();
    s.set_nonblocking(true).unwrap();
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    UdpSocket::from_std(s.into()).unwrap()
}

/// Reads `n` datagrams from `sink`; returns the OUT tuples they carry.
async fn receive(sink: &UdpSocket, n: usize) -> Vec<Tuple> {
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    while got.len() < n {
        let (len, _) = tokio::time::timeout(WAIT, sink.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{} of {n} datagrams arrived", got.len()))
            .unwrap();
        let (_, d) = udp::decode(&buf[..len], None).expect("one datagram each");
        let Message::Out { tuple, .. } = d.message else {
            panic!("not an OUT: {:?}", d.message)
        };
        got.push(tuple);
    }
    got
}

#[tokio::test(flavor = "current_thread")]
async fn outs_in_a_row_leave_in_batches_and_arrive_one_by_one() {
    let sink = sink().await;
    let a = to_peer(sink.local_addr().unwrap());
    const N: u64 = 300;
    for i in 0..N {
        a.handle().out(tuple(i), None).await.unwrap();
    }
    let got = receive(&sink, N as usize).await;
    let distinct: HashSet<_> = got.iter().map(|t| format!("{t:?}")).collect();
    assert_eq!(distinct.len(), N as usize, "every OUT once");
    let stats = a.udp_stats();
    assert_eq!(stats.datagrams_sent, N);
    assert_eq!(stats.send_errors, 0);
    assert!(
        stats.batched_sends >= 1 && stats.batched_sends < N,
        "batched: {stats:?}"
    );
    a.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn mixed_sizes_all_arrive() {
    let sink = sink().await;
    let a = to_peer(sink.local_addr().unwrap());
    const N: u64 = 90;
    // Runs of one size, then sizes alternating datagram by datagram.
    for i in 0..N {
        let t = if i < N / 2 { mixed(i / 15) } else { mixed(i) };
        let t = Tuple::new([t.values()[0].clone(), Value::Int16(i as i16)]).unwrap();
        a.handle().out(t, None).await.unwrap();
    }
    let got = receive(&sink, N as usize).await;
    let mut ids: Vec<i16> = got
        .iter()
        .map(|t| match t.values()[1] {
            Value::Int16(i) => i,
            ref v => panic!("{v:?}"),
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..N as i16).collect::<Vec<_>>());
    assert!(a.udp_stats().batched_sends >= 1, "{:?}", a.udp_stats());
    a.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn batches_on_the_loopback_broadcast_reach_every_node() {
    let port = free_port();
    let a = spawn_loopback(port, "a", 1);
    let b = spawn_loopback(port, "b", 2);
    let c = spawn_loopback(port, "c", 3);
    let mut subs = Vec::new();
    for n in [&b, &c] {
        subs.push(n.handle().subscribe(tpl("(\"B\", ?)"), 256).await.unwrap());
    }
    const N: u64 = 100;
    for i in 0..N {
        a.handle().out(tuple(i), None).await.unwrap();
    }
    for sub in &mut subs {
        for _ in 0..N {
            tokio::time::timeout(WAIT, sub.recv())
                .await
                .expect("every OUT delivered")
                .expect("subscribed");
        }
    }
    assert!(a.udp_stats().batched_sends >= 1, "{:?}", a.udp_stats());
    for n in [&b, &c] {
        assert_eq!(
            n.handle().host_count(tpl("(\"B\", ?)")).await.unwrap(),
            N as usize
        );
    }
    for n in [a, b, c] {
        n.close().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn close_sends_what_is_still_batched() {
    let sink = sink().await;
    let a = to_peer(sink.local_addr().unwrap());
    for i in 0..5 {
        a.handle().out(tuple(i), None).await.unwrap();
    }
    // No await that waits in between: the five are still batched here.
    let (_, stats) = a.close().await;
    assert_eq!(stats.datagrams_sent, 5);
    assert_eq!(receive(&sink, 5).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_thread_runtime_batches_too_and_everything_arrives() {
    let sink = sink().await;
    let a = to_peer(sink.local_addr().unwrap());
    for i in 0..50 {
        a.handle().out(tuple(i), None).await.unwrap();
    }
    receive(&sink, 50).await;
    // The final counters: a send on another worker may count just after its datagram arrived.
    let (_, stats) = a.close().await;
    assert_eq!((stats.datagrams_sent, stats.send_errors), (50, 0));
}

/// A sealed space's config (spec §12), counters in memory.
fn sealed(name: &str, source: u16) -> beets_core::NodeConfig {
    use beets_core::node::SealConfig;
    use beets_core::sealed::{MemoryCounterStore, SealKey};
    let key = SealKey::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
    let seal = SealConfig::new(
        key,
        std::num::NonZeroU16::new(source).unwrap(),
        MemoryCounterStore::default(),
    );
    node(name).with_seal(seal)
}

/// Sealed receivers accept counters at most 64 behind the newest (the replay window): batches
/// must not overtake one another. Bursts of 100 `out`s from two workers, every one delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_bursts_keep_their_order_closely_enough_for_the_replay_window() {
    let b_udp = UdpConfig {
        bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        broadcast: None,
        recv_buffer_size: Some(1 << 20),
        ..UdpConfig::default()
    };
    assert_loopback_only(&b_udp);
    let b = UdpSpace::spawn(b_udp, sealed("b", 2), 2).unwrap();
    let a_udp = UdpConfig {
        bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        broadcast: None,
        peers: vec![b.local_addr()],
        ..UdpConfig::default()
    };
    assert_loopback_only(&a_udp);
    let a = UdpSpace::spawn(a_udp, sealed("a", 1), 1).unwrap();
    let mut sub = b.handle().subscribe(tpl("(\"B\", ?)"), 256).await.unwrap();
    for burst in 0..20u64 {
        for i in 0..100 {
            a.handle().out(tuple(burst * 100 + i), None).await.unwrap();
        }
        for _ in 0..100 {
            tokio::time::timeout(WAIT, sub.recv())
                .await
                .unwrap_or_else(|_| panic!("burst {burst}: an OUT lost ({:?})", a.udp_stats()))
                .expect("subscribed");
        }
    }
    let stats = b.handle().stats().await.unwrap();
    assert_eq!(stats.node.sealed.replay, 0, "{stats:?}");
    a.close().await;
    b.close().await;
}
