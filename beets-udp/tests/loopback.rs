//! Several UDP spaces in one process on real sockets, on the loopback network only: the loopback
//! broadcast 127.255.255.255 and unicast to 127.0.0.1, each test on its own free port.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use beets_core::PeerAddr;
use beets_udp::{ClientError, UdpConfig, UdpSpace};
use common::*;

const WAIT: Duration = Duration::from_secs(5);
const ASK: Duration = Duration::from_secs(2);

#[test]
fn test_configs_never_target_the_limited_broadcast() {
    // Built the way these tests and the crate's examples build them.
    let port = free_port();
    let configs = [
        UdpConfig::loopback(port),
        UdpConfig {
            broadcast: None,
            peers: vec![localhost(port)],
            ..UdpConfig::loopback(port)
        },
    ];
    for c in &configs {
        assert_loopback_only(c);
        assert!(
            c.destinations()
                .all(|d| d.ip() != beets_udp::LIMITED_BROADCAST)
        );
    }
    // The library default does target it (for users' LANs), which is why tests never use it.
    assert!(
        UdpConfig::default()
            .destinations()
            .any(|d| d.ip() == beets_udp::LIMITED_BROADCAST)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_port_all_hear_a_loopback_broadcast() {
    let port = free_port();
    let nodes: Vec<UdpSpace> = (0..3)
        .map(|i| spawn_loopback(port, &format!("n{i}"), 100 + i))
        .collect();
    for n in &nodes {
        assert_eq!(n.local_addr().port(), port);
    }
    let mut subs = Vec::new();
    for n in &nodes {
        subs.push(n.handle().subscribe(tpl("(\"EV\", ?)"), 8).await.unwrap());
    }
    // Each node notifies once; each notification reaches the two others, never the sender.
    for (i, n) in nodes.iter().enumerate() {
        n.handle()
            .notify(t(&format!("(\"EV\", {i})")))
            .await
            .unwrap();
    }
    for (i, sub) in subs.iter_mut().enumerate() {
        let mut got = Vec::new();
        for _ in 0..2 {
            let tuple = tokio::time::timeout(WAIT, sub.recv())
                .await
                .expect("notification in time")
                .unwrap();
            assert_eq!(tuple.kind, beets_core::DeliveryKind::Notify);
            assert!(tuple.from.is_some());
            got.push(tuple.tuple);
        }
        got.sort_by_key(|t| format!("{t}"));
        let expect: Vec<_> = (0..3)
            .filter(|&j| j != i)
            .map(|j| t(&format!("(\"EV\", {j})")))
            .collect();
        assert_eq!(got, expect, "node {i}");
    }
    for n in nodes {
        let (driver, udp) = n.close().await;
        // Each socket got all 3 broadcasts, its own included; the engine dropped its own.
        assert_eq!(udp.datagrams_received, 3);
        assert_eq!(driver.node.dropped_own, 1);
        assert_eq!(driver.node.messages_in, 2);
        assert_eq!(driver.send_errors, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_rd_inp_test_where_notify_end_to_end() {
    let port = free_port();
    let a = spawn_loopback(port, "a", 1);
    let b = spawn_loopback(port, "b", 2);
    let c = spawn_loopback(port, "c", 3);

    // OUT: stored by the two others, not by the sender.
    a.handle().out(t(r#"("T", 1)"#), None).await.unwrap();
    for n in [&b, &c] {
        eventually(WAIT, "OUT stored", || async {
            n.handle().host_count(tpl("(\"T\", ?)")).await.unwrap() == 1
        })
        .await;
    }
    assert_eq!(a.handle().host_count(tpl("(?, ?)")).await.unwrap(), 0);

    // RD: answered by b or c, from a loopback address on the shared port.
    let (tuple, how) = a
        .handle()
        .rd(tpl(r#"("T", ?int16)"#), ASK)
        .await
        .unwrap()
        .expect("rd answered");
    assert_eq!(tuple, t(r#"("T", 1)"#));
    let PeerAddr::Ip(from) = how.from else {
        panic!("UDP reply from {:?}", how.from)
    };
    assert!(from.ip().is_loopback() && from.port() == port, "{from}");
    assert_eq!(how.rssi, None);

    // TEST: a copy, nothing removed.
    let (tuple, _) = a
        .handle()
        .test(tpl("(\"T\", ?)"), ASK)
        .await
        .unwrap()
        .expect("test answered");
    assert_eq!(tuple, t(r#"("T", 1)"#));
    assert_eq!(b.handle().host_count(tpl("(?, ?)")).await.unwrap(), 1);

    // INP: the tuple comes back and the replying holder has removed its copy. Whether the other
    // holder also answers (and removes) depends on whether it heard the first reply within its
    // back-off (operations are not atomic, paper §3); each holder that replied has removed
    // exactly its copy, and each that kept its copy sent no reply.
    let settled = |s: beets_core::NodeStats| s.replies_sent + s.replies_suppressed;
    // First each holder settles the RD and the TEST (a reply, or a suppression once it hears
    // the other's): a suppression still on its way would count towards the INP below.
    for n in [&b, &c] {
        eventually(WAIT, "RD and TEST answers sent or suppressed", || async {
            settled(n.handle().stats().await.unwrap().node) == 2
        })
        .await;
    }
    let mut before = Vec::new();
    for n in [&b, &c] {
        before.push(n.handle().stats().await.unwrap().node);
    }
    let (tuple, _) = a
        .handle()
        .inp(tpl("(\"T\", ?)"), ASK)
        .await
        .unwrap()
        .expect("inp answered");
    assert_eq!(tuple, t(r#"("T", 1)"#));
    // Wait until both holders have settled: each has either replied or suppressed its answer.
    let mut replied = 0;
    for (n, was) in [&b, &c].into_iter().zip(before) {
        eventually(WAIT, "INP answer sent or suppressed", || async {
            settled(n.handle().stats().await.unwrap().node) == settled(was) + 1
        })
        .await;
        let inp_replied = n.handle().stats().await.unwrap().node.replies_sent - was.replies_sent;
        let left = n.handle().host_count(tpl("(?, ?)")).await.unwrap() as u64;
        assert_eq!(
            left + inp_replied,
            1,
            "a holder removes its copy iff it replied"
        );
        replied += inp_replied;
    }
    assert!((1..=2).contains(&replied));

    // WHERE: c answers with its identity.
    let (identity, how) = a
        .handle()
        .r#where(tpl(r#"("NODE", "c")"#), ASK)
        .await
        .unwrap()
        .expect("where answered");
    assert_eq!(identity, t(r#"("NODE", "c")"#));
    assert!(matches!(how.from, PeerAddr::Ip(f) if f.ip().is_loopback()));

    // NOTIFY: delivered to listeners, never stored.
    let mut sub = b.handle().subscribe(tpl("(\"EV\", ?)"), 4).await.unwrap();
    a.handle().notify(t(r#"("EV", 7)"#)).await.unwrap();
    let got = tokio::time::timeout(WAIT, sub.recv()).await.unwrap();
    assert_eq!(got.map(|d| d.tuple), Some(t(r#"("EV", 7)"#)));
    assert_eq!(b.handle().host_count(tpl("(\"EV\", ?)")).await.unwrap(), 0);

    // Nothing matches: none at the timeout.
    let none = a
        .handle()
        .rd(tpl("(\"missing\", ?)"), Duration::from_millis(150))
        .await
        .unwrap();
    assert_eq!(none, None);

    let stats = a.handle().stats().await.unwrap();
    assert_eq!(stats.node.requests_sent, 5);
    assert_eq!(stats.node.timeouts, 1);
    assert_eq!(stats.send_errors, 0);
    for n in [a, b, c] {
        n.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicast_peers_reach_nodes_without_broadcast() {
    // Two nodes on distinct ports (unicast reaches one socket per port), broadcast disabled.
    let (pa, pb) = (free_port(), free_port());
    let peer_only = |bind: u16, peer: u16| UdpConfig {
        broadcast: None,
        peers: vec![localhost(peer)],
        ..UdpConfig::loopback(bind)
    };
    let a = spawn_with(peer_only(pa, pb), "a", 11);
    let b = spawn_with(peer_only(pb, pa), "b", 12);
    a.handle().out(t(r#"("U", 1)"#), None).await.unwrap();
    let (tuple, how) = a
        .handle()
        .rd(tpl("(\"U\", ?)"), ASK)
        .await
        .unwrap()
        .expect("b answers over unicast");
    assert_eq!(tuple, t(r#"("U", 1)"#));
    assert_eq!(how.from, PeerAddr::Ip(localhost(pb)));
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_are_applied_once() {
    let port = free_port();
    let sender = spawn_with(
        UdpConfig {
            repeat: 3,
            repeat_interval: Duration::from_millis(1),
            ..UdpConfig::loopback(port)
        },
        "s",
        21,
    );
    let receiver = spawn_loopback(port, "r", 22);
    for i in 0..20 {
        sender
            .handle()
            .out(t(&format!("(\"R\", {i})")), None)
            .await
            .unwrap();
    }
    eventually(WAIT, "60 copies dropped as duplicates", || async {
        receiver.handle().stats().await.unwrap().node.duplicates == 60
    })
    .await;
    let stats = receiver.handle().stats().await.unwrap();
    assert_eq!(stats.node.stored, 20);
    assert_eq!(
        receiver
            .handle()
            .host_count(tpl("(\"R\", ?)"))
            .await
            .unwrap(),
        20
    );
    let (_, udp) = sender.close().await;
    assert_eq!(udp.datagrams_sent, 80);
    assert_eq!(udp.repeats_sent, 60);
    assert_eq!(udp.repeats_dropped, 0);
    receiver.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_outs_from_many_tasks_each_get_their_own_sequence_number() {
    // `out` encodes in the caller's task; the node's sequence counter is shared, so OUTs from
    // tasks on both worker threads never share a number (a receiver would drop one as a repeat).
    let port = free_port();
    let sender = spawn_loopback(port, "s", 61);
    let receiver = spawn_loopback(port, "r", 62);
    let mut tasks = Vec::new();
    for task in 0..4 {
        let h = sender.handle().clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                h.out(t(&format!("(\"C\", {task}, {i})")), None)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    eventually(WAIT, "200 OUTs stored", || async {
        receiver
            .handle()
            .host_count(tpl("(\"C\", ?, ?)"))
            .await
            .unwrap()
            == 200
    })
    .await;
    let stats = receiver.handle().stats().await.unwrap();
    assert_eq!((stats.node.stored, stats.node.duplicates), (200, 0));
    assert_eq!(sender.handle().stats().await.unwrap().node.transmits, 200);
    sender.close().await;
    receiver.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_repeats_with_a_zero_interval() {
    let port = free_port();
    let sender = spawn_with(
        UdpConfig {
            repeat: 2,
            repeat_interval: Duration::ZERO,
            ..UdpConfig::loopback(port)
        },
        "s",
        23,
    );
    let receiver = spawn_loopback(port, "r", 24);
    for i in 0..10 {
        sender
            .handle()
            .notify(t(&format!("(\"Z\", {i})")))
            .await
            .unwrap();
    }
    eventually(WAIT, "20 copies dropped as duplicates", || async {
        receiver.handle().stats().await.unwrap().node.duplicates == 20
    })
    .await;
    assert_eq!(
        receiver.handle().stats().await.unwrap().node.messages_in,
        10
    );
    assert_eq!(sender.udp_stats().repeats_sent, 20);
    sender.close().await;
    receiver.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_errors_are_counted_and_the_node_keeps_running() {
    let port = free_port();
    // 127.0.0.1:0 makes send_to fail (EINVAL): no datagram leaves, the error is counted.
    let bad: SocketAddr = localhost(0);
    let a = spawn_with(
        UdpConfig {
            peers: vec![bad],
            ..UdpConfig::loopback(port)
        },
        "a",
        31,
    );
    let b = spawn_loopback(port, "b", 32);
    a.handle().out(t(r#"("S", 1)"#), None).await.unwrap();
    a.handle().out(t(r#"("S", 2)"#), None).await.unwrap();
    // The broadcast still went out to the other destination.
    eventually(WAIT, "both OUTs stored at b", || async {
        b.handle().host_count(tpl("(\"S\", ?)")).await.unwrap() == 2
    })
    .await;
    // The failed sends are counted (a batch's — GSO — by whichever task sent it, maybe just
    // after b stored the broadcast copies).
    eventually(WAIT, "both failed sends counted", || async {
        a.udp_stats().send_errors == 2
    })
    .await;
    assert_eq!(a.udp_stats().datagrams_sent, 2);
    // The driver counts the failures it saw itself: none of a batched send's, which only the
    // socket's counters see.
    let stats = a.handle().stats().await.unwrap();
    assert!(stats.send_errors <= 2, "{stats:?}");
    // And the node keeps working: requests and replies still flow.
    let reply = a.handle().rd(tpl("(\"S\", 2)"), ASK).await.unwrap();
    assert_eq!(reply.map(|r| r.0), Some(t(r#"("S", 2)"#)));
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_completes_pending_requests_and_closes_the_socket() {
    let port = free_port();
    let a = spawn_loopback(port, "a", 41);
    let h = a.handle().clone();
    let pending = tokio::spawn(async move { h.rd(tpl("(?)"), Duration::from_secs(60)).await });
    eventually(WAIT, "the request is sent", || async {
        a.handle().stats().await.unwrap().node.requests_sent == 1
    })
    .await;
    let (driver, _) = tokio::time::timeout(WAIT, a.close())
        .await
        .expect("close returns once the tasks end");
    assert_eq!(driver.node.requests_sent, 1);
    assert_eq!(pending.await.unwrap(), Err(ClientError::Closed));
    // The socket is closed: the port binds again without any reuse option.
    // (127.0.0.1 without reuse options conflicts with any node socket still bound to 0.0.0.0,
    // and not with the test's port reservation on 127.0.0.2.)
    std::net::UdpSocket::bind(("127.0.0.1", port)).expect("port released after close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_close_also_stops_the_socket_tasks() {
    let port = free_port();
    let a = spawn_loopback(port, "a", 51);
    let h = a.handle().clone();
    h.close().await;
    assert_eq!(h.stats().await, Err(ClientError::Closed));
    tokio::time::timeout(WAIT, a.close())
        .await
        .expect("tasks already ending");
    // A handle outliving its space holds no socket (its `out` sends from the caller's task,
    // through a weak reference): the port is free and a late `out` reports the close.
    // (127.0.0.1 without reuse options conflicts with any node socket still bound to 0.0.0.0,
    // and not with the test's port reservation on 127.0.0.2.)
    std::net::UdpSocket::bind(("127.0.0.1", port)).expect("port released after close");
    assert_eq!(
        h.out(t(r#"("late", 1)"#), None).await,
        Err(ClientError::Closed)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn spawn_refuses_a_ble_node_and_a_bad_config() {
    let ble = beets_core::NodeConfig::new(beets_core::Transport::Ble, "x").unwrap();
    let err = UdpSpace::spawn(UdpConfig::loopback(free_port()), ble, 1).unwrap_err();
    assert!(
        matches!(
            err,
            beets_udp::UdpError::WrongTransport(beets_core::Transport::Ble)
        ),
        "{err}"
    );
    let udp = UdpConfig {
        multicast: Some("10.0.0.1:5".parse().unwrap()),
        ..UdpConfig::loopback(free_port())
    };
    let err = UdpSpace::spawn(udp, node("x"), 1).unwrap_err();
    assert!(
        matches!(
            err,
            beets_udp::UdpError::Config(beets_udp::ConfigError::NotMulticast { .. })
        ),
        "{err}"
    );
}

#[test]
fn spawn_outside_a_runtime_is_an_error_not_a_panic() {
    let err = UdpSpace::spawn(UdpConfig::loopback(free_port()), node("x"), 1).unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}
