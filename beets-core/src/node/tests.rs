//! Engine unit tests with a direct, lossless wire between nodes (the simulated medium's
//! multi-node scenarios are in `tests/sim_nodes.rs`).

use super::*;
use crate::space::{DeliveryKind, SpaceError};
use crate::text::{parse_template, parse_tuple};
use crate::udp::DatagramHeader;
use crate::value::Value;
use std::net::SocketAddr;

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn addr(i: u8) -> PeerAddr {
    PeerAddr::Ip(SocketAddr::from(([127, 0, 0, i], 49737)))
}

fn udp_node(name: &str, seed: u64) -> Node {
    Node::new(NodeConfig::new(Transport::Udp, name).unwrap(), seed, t(0))
}

fn ble_node(name: &str, seed: u64) -> Node {
    Node::new(NodeConfig::new(Transport::Ble, name).unwrap(), seed, t(0))
}

/// Delivers everything `from` has queued to each of `to`, as broadcast does; returns the count.
fn pump(now: Time, nodes: &mut [&mut Node], from: usize) -> usize {
    let mut n = 0;
    while let Some(tx) = nodes[from].poll_transmit() {
        n += 1;
        for (i, node) in nodes.iter_mut().enumerate() {
            if i == from {
                continue;
            }
            let src = if matches!(tx, Transmit::Advertisement(_)) {
                PeerAddr::Ble([0, 0, 0, 0, 0, from as u8])
            } else {
                addr(from as u8 + 1)
            };
            match &tx {
                Transmit::Datagram(d) => node.handle_frame(now, src, Frame::Datagram(d), None),
                Transmit::Advertisement(a) => node.handle_frame(
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
    }
    n
}

fn events(node: &mut Node) -> Vec<Event> {
    std::iter::from_fn(|| node.poll_event()).collect()
}

#[test]
fn out_is_stored_by_receivers_not_by_sender() {
    let (mut a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    a.out(t(0), parse_tuple("(\"X\", 1)").unwrap(), None)
        .unwrap();
    assert_eq!(pump(t(0), &mut [&mut a, &mut b], 0), 1);
    let tpl = parse_template("(\"X\", ?)").unwrap();
    assert_eq!(b.host().count(t(0), &tpl), 1);
    assert_eq!(a.host().count(t(0), &tpl), 0);
    assert_eq!(b.stats().stored, 1);
}

#[test]
fn out_lifetime_travels_and_expires() {
    let (mut a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    a.out(
        t(0),
        parse_tuple("(1)").unwrap(),
        Some(Duration::from_millis(1500)),
    )
    .unwrap();
    pump(t(0), &mut [&mut a, &mut b], 0);
    let tpl = parse_template("(?)").unwrap();
    assert_eq!(b.host().count(t(1999), &tpl), 1, "1.5 s rounds up to 2 s");
    assert_eq!(b.host().count(t(2000), &tpl), 0);
}

#[test]
fn out_rejects_oversize_tuple_with_limit() {
    let mut a = ble_node("a", 1);
    let big = parse_tuple(&format!("(\"{}\")", "x".repeat(29))).unwrap();
    let err = a.out(t(0), big, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "OUT message needs 32 bytes, a BLE frame carries at most 31"
    );
    assert!(a.poll_transmit().is_none());
    let mut u = udp_node("u", 1);
    let huge = Tuple::new([Value::Bytes(vec![0; 1300])]).unwrap();
    assert!(matches!(
        u.out(t(0), huge, None),
        Err(NodeError::TooLong { max: 1221, .. })
    ));
}

#[test]
fn out_rejects_unencodable_lifetime() {
    let mut a = udp_node("a", 1);
    let tup = parse_tuple("(1)").unwrap();
    assert!(matches!(
        a.out(t(0), tup.clone(), Some(Duration::ZERO)),
        Err(NodeError::BadLifetime(_))
    ));
    assert!(matches!(
        a.out(t(0), tup, Some(Duration::from_secs(65_536))),
        Err(NodeError::BadLifetime(_))
    ));
}

#[test]
fn rd_is_answered_after_backoff_with_a_copy() {
    for transport in [Transport::Udp, Transport::Ble] {
        let mut a = Node::new(NodeConfig::new(transport, "a").unwrap(), 1, t(0));
        let mut b = Node::new(NodeConfig::new(transport, "b").unwrap(), 2, t(0));
        b.host()
            .out(t(0), parse_tuple("(\"K\", 7)").unwrap(), None)
            .unwrap();
        let id = a
            .rd(
                t(0),
                parse_template("(\"K\", ?int16)").unwrap(),
                Duration::from_secs(5),
            )
            .unwrap();
        pump(t(0), &mut [&mut a, &mut b], 0);
        let due = b.poll_timeout().expect("a reply is scheduled");
        assert!(due <= t(0) + b.config().reply_backoff);
        b.handle_timeout(due);
        pump(due, &mut [&mut a, &mut b], 1);
        let ev = events(&mut a);
        assert!(
            matches!(&ev[..], [Event::Completed { id: got, op: Op::Rd, reply: Some((tup, _)) }]
                if *got == id && tup == &parse_tuple("(\"K\", 7)").unwrap()),
            "{transport:?}: {ev:?}"
        );
        assert_eq!(b.host().len(), 1, "rd leaves the tuple");
        assert_eq!(a.pending_requests(), 0);
    }
}

#[test]
fn inp_removes_and_test_copies() {
    let (mut a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    b.host()
        .out(t(0), parse_tuple("(\"K\", 7)").unwrap(), None)
        .unwrap();
    a.test(
        t(0),
        parse_template("(\"K\", ?)").unwrap(),
        Duration::from_secs(1),
    )
    .unwrap();
    pump(t(0), &mut [&mut a, &mut b], 0);
    b.handle_timeout(t(100));
    pump(t(100), &mut [&mut a, &mut b], 1);
    assert_eq!(b.host().len(), 1);
    a.inp(
        t(200),
        parse_template("(\"K\", ?)").unwrap(),
        Duration::from_secs(1),
    )
    .unwrap();
    pump(t(200), &mut [&mut a, &mut b], 0);
    b.handle_timeout(t(300));
    pump(t(300), &mut [&mut a, &mut b], 1);
    assert_eq!(b.host().len(), 0);
    let completed = events(&mut a)
        .into_iter()
        .filter(|e| matches!(e, Event::Completed { reply: Some(_), .. }))
        .count();
    assert_eq!(completed, 2);
}

#[test]
fn request_without_match_completes_with_none_at_deadline() {
    let (mut a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    let id = a
        .rd(
            t(0),
            parse_template("(?)").unwrap(),
            Duration::from_millis(750),
        )
        .unwrap();
    pump(t(0), &mut [&mut a, &mut b], 0);
    assert_eq!(b.poll_timeout(), None, "nothing to answer");
    assert_eq!(a.poll_timeout(), Some(t(750)));
    a.handle_timeout(t(749));
    assert!(events(&mut a).is_empty());
    a.handle_timeout(t(750));
    assert_eq!(
        events(&mut a),
        vec![Event::Completed {
            id,
            op: Op::Rd,
            reply: None
        }]
    );
    assert_eq!(a.stats().timeouts, 1);
}

#[test]
fn reply_heard_from_another_node_suppresses_ours() {
    // B and C both hold a match; C answers first; B hears C's reply and stays silent.
    let (mut a, mut b, mut c) = (udp_node("a", 1), udp_node("b", 2), udp_node("c", 3));
    for n in [&mut b, &mut c] {
        n.host()
            .out(t(0), parse_tuple("(\"K\", 1)").unwrap(), None)
            .unwrap();
    }
    a.inp(
        t(0),
        parse_template("(\"K\", ?)").unwrap(),
        Duration::from_secs(1),
    )
    .unwrap();
    pump(t(0), &mut [&mut a, &mut b, &mut c], 0);
    let (tb, tc) = (b.poll_timeout().unwrap(), c.poll_timeout().unwrap());
    let (first, second) = if tc <= tb { (2, 1) } else { (1, 2) };
    let mut nodes = [&mut a, &mut b, &mut c];
    let at = tb.min(tc);
    nodes[first].handle_timeout(at);
    pump(at, &mut nodes, first);
    let later = tb.max(tc);
    nodes[second].handle_timeout(later);
    assert_eq!(pump(later, &mut nodes, second), 0, "suppressed");
    assert_eq!(nodes[second].stats().replies_suppressed, 1);
    assert_eq!(
        b.host().len() + c.host().len(),
        1,
        "exactly one tuple removed"
    );
    let replies = events(&mut a)
        .into_iter()
        .filter(|e| matches!(e, Event::Completed { reply: Some(_), .. }))
        .count();
    assert_eq!(replies, 1);
}

#[test]
fn where_is_answered_by_matching_identity_only() {
    let (mut a, mut b, mut c) = (udp_node("a", 1), udp_node("beacon", 2), udp_node("c", 3));
    let id = a
        .r#where(
            t(0),
            parse_template("(\"NODE\", \"beacon\")").unwrap(),
            Duration::from_secs(2),
        )
        .unwrap();
    pump(t(0), &mut [&mut a, &mut b, &mut c], 0);
    assert_eq!(c.poll_timeout(), None);
    let due = b.poll_timeout().unwrap();
    b.handle_timeout(due);
    pump(due, &mut [&mut a, &mut b, &mut c], 1);
    let ev = events(&mut a);
    assert!(ev.iter().any(|e| matches!(e, Event::NeighbourSeen { .. })));
    assert!(ev.iter().any(|e| matches!(e,
        Event::Completed { id: got, op: Op::Where, reply: Some((tup, _)) }
            if *got == id && tup == &parse_tuple("(\"NODE\", \"beacon\")").unwrap())));
    assert_eq!(a.neighbours().count(), 1);
}

#[test]
fn notify_reaches_listeners_and_is_not_stored() {
    let (mut a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    let l = b.subscribe(parse_template("(\"ALERT\", ?)").unwrap());
    a.notify(t(0), parse_tuple("(\"ALERT\", 3)").unwrap())
        .unwrap();
    a.notify(t(0), parse_tuple("(\"OTHER\", 3)").unwrap())
        .unwrap();
    pump(t(0), &mut [&mut a, &mut b], 0);
    assert_eq!(b.host().len(), 0);
    assert_eq!(
        events(&mut b),
        vec![Event::Delivered {
            listener: l,
            delivery: Delivery {
                tuple: parse_tuple("(\"ALERT\", 3)").unwrap(),
                kind: DeliveryKind::Notify,
                from: Some(addr(1)),
                rssi: None,
                at: t(0),
                lifetime: None,
            }
        }]
    );
}

#[test]
fn periodic_announcements_are_heard_as_neighbours() {
    let mut cfg = NodeConfig::new(Transport::Ble, "beacon").unwrap();
    cfg.announce_interval = Some(Duration::from_secs(5));
    let mut a = Node::new(cfg, 1, t(0));
    let mut b = ble_node("b", 2);
    assert_eq!(a.poll_timeout(), Some(t(0)));
    a.handle_timeout(t(0));
    assert_eq!(a.poll_timeout(), Some(t(5000)));
    pump(t(0), &mut [&mut a, &mut b], 0);
    let ev = events(&mut b);
    assert!(
        matches!(&ev[..], [Event::NeighbourSeen { received, .. }] if received.rssi == Some(-60))
    );
}

#[test]
fn duplicates_are_processed_once() {
    let (mut a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    a.out(t(0), parse_tuple("(1)").unwrap(), None).unwrap();
    let Some(Transmit::Datagram(d)) = a.poll_transmit() else {
        panic!("a datagram")
    };
    for i in 0..5 {
        b.handle_frame(t(i), addr(1), Frame::Datagram(&d), None);
    }
    assert_eq!(b.host().len(), 1);
    assert_eq!(b.stats().duplicates, 4);
    // After the window the same key is new again (spec §8).
    b.handle_frame(t(10_000), addr(1), Frame::Datagram(&d), None);
    assert_eq!(b.host().len(), 2);
}

#[test]
fn own_datagram_is_dropped() {
    let mut a = udp_node("a", 1);
    a.out(t(0), parse_tuple("(1)").unwrap(), None).unwrap();
    let Some(Transmit::Datagram(d)) = a.poll_transmit() else {
        panic!("a datagram")
    };
    a.handle_frame(t(0), addr(1), Frame::Datagram(&d), None);
    assert_eq!(a.stats().dropped_own, 1);
    assert_eq!(a.host().len(), 0);
}

#[test]
fn keyed_and_unkeyed_spaces_ignore_each_other() {
    let keyed = |name, seed| {
        Node::new(
            NodeConfig::new(Transport::Udp, name)
                .unwrap()
                .with_password("hive"),
            seed,
            t(0),
        )
    };
    let (mut a, mut b, mut plain) = (keyed("a", 1), keyed("b", 2), udp_node("p", 3));
    a.out(t(0), parse_tuple("(\"secret\", 1)").unwrap(), None)
        .unwrap();
    pump(t(0), &mut [&mut a, &mut b, &mut plain], 0);
    assert_eq!(b.host().len(), 1);
    assert_eq!(plain.host().len(), 0);
    assert_eq!(plain.stats().dropped_key, 1, "E=1 at an unkeyed space");
    plain
        .out(t(0), parse_tuple("(\"open\", 1)").unwrap(), None)
        .unwrap();
    pump(t(0), &mut [&mut plain, &mut b], 0);
    assert_eq!(b.host().len(), 1);
    assert_eq!(b.stats().dropped_key, 1, "E=0 at a keyed space");
}

#[test]
fn wrong_transport_and_garbage_are_counted_and_reported() {
    let mut u = udp_node("u", 1);
    u.handle_frame(
        t(0),
        addr(9),
        Frame::Advertisement {
            local_name: "x",
            service_uuids: &[],
        },
        None,
    );
    u.handle_frame(t(0), addr(9), Frame::Datagram(b"hello"), None);
    assert_eq!(u.stats().dropped_transport, 1);
    assert_eq!(u.stats().dropped_malformed, 1);
    let ev = events(&mut u);
    assert!(matches!(
        ev[1],
        Event::Dropped {
            reason: DropReason::BadDatagram(DatagramError::TooShort { .. }),
            ..
        }
    ));
}

struct DenyFrom(PeerAddr);
impl Hooks for DenyFrom {
    fn decide(&mut self, _: DecisionToken, q: &Question<'_>) -> Verdict {
        let eat = |t: &Tuple| t.get(0) == Some(&Value::Str("EAT".into()));
        Verdict::Now(match q {
            Question::Request { received, .. } if received.from == self.0 => Decision::Stop,
            Question::Out { tuple, .. } | Question::Notify { tuple, .. } if eat(tuple) => {
                Decision::Stop
            }
            _ => Decision::Proceed,
        })
    }
}

/// Hooks that answer every question later: the test plays the agent thread.
#[derive(Default, Clone)]
struct Later(std::sync::Arc<std::sync::Mutex<Vec<(DecisionToken, String)>>>);
impl Hooks for Later {
    fn decide(&mut self, token: DecisionToken, q: &Question<'_>) -> Verdict {
        let what = match q {
            Question::Out { tuple, .. } => format!("out {tuple}"),
            Question::Request { op, template, .. } => format!("{op} {template}"),
            Question::Notify { tuple, .. } => format!("notify {tuple}"),
        };
        self.0.lock().unwrap().push((token, what));
        Verdict::Later
    }
}

impl Later {
    fn asked(&self) -> Vec<(DecisionToken, String)> {
        self.0.lock().unwrap().clone()
    }
}

/// A hook that answers later does not hold the engine: other frames are taken meanwhile, and the
/// parked messages are applied in arrival order once decided — a later decision does not
/// overtake an earlier undecided one.
#[test]
fn later_decisions_are_applied_in_arrival_order_without_blocking() {
    let (mut a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    let later = Later::default();
    b.set_hooks(Box::new(later.clone()));
    for x in ["(\"EAT\")", "(\"KEEP\")"] {
        a.out(t(0), parse_tuple(x).unwrap(), None).unwrap();
    }
    pump(t(0), &mut [&mut a, &mut b], 0);
    let asked = later.asked();
    assert_eq!(asked.len(), 2, "both frames taken while the first waits");
    assert_eq!(b.awaiting_decisions(), 2);
    assert_eq!(b.stats().decisions_deferred, 2);
    // The second is decided first: nothing happens until the first is.
    assert!(b.decide(t(10), asked[1].0, Decision::Proceed));
    assert!(b.host().is_empty(), "KEEP waits behind EAT");
    assert!(b.decide(t(20), asked[0].0, Decision::Stop));
    assert_eq!(
        b.host().iter(t(20)).cloned().collect::<Vec<_>>(),
        vec![parse_tuple("(\"KEEP\")").unwrap()]
    );
    assert_eq!((b.stats().stored, b.stats().not_stored), (1, 1));
    assert_eq!(b.awaiting_decisions(), 0);
}

/// A decision that misses its deadline: the fail-closed default applies (OUT stored, request
/// refused), and the late answer is dropped and counted, never applied.
#[test]
fn a_missed_deadline_fails_closed_and_the_late_decision_is_dropped() {
    let (mut a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    let later = Later::default();
    b.set_hooks(Box::new(later.clone()));
    b.host()
        .out(t(0), parse_tuple("(1)").unwrap(), None)
        .unwrap();
    a.out(t(0), parse_tuple("(\"EAT\")").unwrap(), None)
        .unwrap();
    a.rd(
        t(0),
        parse_template("(?int16)").unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    pump(t(0), &mut [&mut a, &mut b], 0);
    let asked = later.asked();
    assert_eq!(asked.len(), 2, "{asked:?}");
    let deadline = b.poll_timeout().expect("the decision deadline");
    assert_eq!(deadline, t(150));
    b.handle_timeout(deadline);
    assert_eq!(b.stats().decisions_expired, 2);
    assert_eq!(b.host().len(), 2, "the OUT was stored by default");
    assert_eq!(b.stats().filtered, 1, "the request was refused by default");
    // The agent answers now: too late, dropped.
    assert!(!b.decide(t(200), asked[0].0, Decision::Stop));
    assert!(!b.decide(t(200), asked[1].0, Decision::Proceed));
    assert_eq!(b.stats().decisions_late, 2);
    assert_eq!(b.host().len(), 2);
    assert_eq!(b.poll_transmit(), None, "no answer sent late");
}

/// The number of parked messages is bounded: one more pushes the oldest out with its default.
/// Messages the hooks decide at once are not held behind parked ones.
#[test]
fn parked_messages_are_bounded_and_immediate_ones_pass() {
    let mut cfg = NodeConfig::new(Transport::Udp, "b").unwrap();
    cfg.max_awaiting_decisions = 2;
    let mut b = Node::new(cfg, 2, t(0));
    let mut a = udp_node("a", 1);
    let later = Later::default();
    b.set_hooks(Box::new(later.clone()));
    for i in 0..3 {
        a.out(t(0), parse_tuple(&format!("({i})")).unwrap(), None)
            .unwrap();
    }
    pump(t(0), &mut [&mut a, &mut b], 0);
    assert_eq!(b.awaiting_decisions(), 2);
    assert_eq!(
        b.stats().decisions_expired,
        1,
        "the oldest took its default"
    );
    assert_eq!(b.host().len(), 1);
    let asked = later.asked();
    assert!(
        !b.decide(t(1), asked[0].0, Decision::Stop),
        "already applied"
    );
    assert!(b.decide(t(1), asked[2].0, Decision::Stop));
    assert!(b.decide(t(1), asked[1].0, Decision::Proceed));
    assert_eq!(b.host().len(), 2);
}

/// A hook that takes only `("SLOW", …)` away: while that one waits, other OUTs are stored and
/// requests answered at once.
#[test]
fn a_parked_message_does_not_hold_the_others() {
    struct SlowOnly(Later);
    impl Hooks for SlowOnly {
        fn decide(&mut self, token: DecisionToken, q: &Question<'_>) -> Verdict {
            match q {
                Question::Out { tuple, .. } if tuple.get(0) == Some(&Value::Str("SLOW".into())) => {
                    self.0.decide(token, q)
                }
                _ => Verdict::Now(Decision::Proceed),
            }
        }
    }
    let (mut a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    let later = Later::default();
    b.set_hooks(Box::new(SlowOnly(later.clone())));
    a.out(t(0), parse_tuple("(\"SLOW\")").unwrap(), None)
        .unwrap();
    a.out(t(0), parse_tuple("(1)").unwrap(), None).unwrap();
    pump(t(0), &mut [&mut a, &mut b], 0);
    assert_eq!(b.awaiting_decisions(), 1);
    assert_eq!(
        b.host().iter(t(0)).cloned().collect::<Vec<_>>(),
        vec![parse_tuple("(1)").unwrap()]
    );
    let id = a
        .rd(
            t(0),
            parse_template("(?int16)").unwrap(),
            Duration::from_secs(1),
        )
        .unwrap();
    pump(t(0), &mut [&mut a, &mut b], 0);
    b.handle_timeout(t(100));
    pump(t(100), &mut [&mut a, &mut b], 1);
    assert!(
        events(&mut a)
            .iter()
            .any(|e| matches!(e, Event::Completed { id: done, reply: Some(_), .. } if *done == id))
    );
    assert_eq!(b.awaiting_decisions(), 1, "the SLOW one still waits");
}

#[test]
fn hooks_see_notifications_before_listeners() {
    let (mut a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    b.set_hooks(Box::new(DenyFrom(addr(9))));
    let l = b.subscribe(parse_template("(?)").unwrap());
    a.notify(t(0), parse_tuple("(\"EAT\")").unwrap()).unwrap();
    a.notify(t(0), parse_tuple("(\"SEE\")").unwrap()).unwrap();
    pump(t(0), &mut [&mut a, &mut b], 0);
    assert_eq!(
        events(&mut b),
        vec![Event::Delivered {
            listener: l,
            delivery: Delivery {
                tuple: parse_tuple("(\"SEE\")").unwrap(),
                kind: DeliveryKind::Notify,
                from: Some(addr(1)),
                rssi: None,
                at: t(0),
                lifetime: None,
            }
        }]
    );
}

#[test]
fn hooks_filter_requests_and_consume_outs() {
    let (mut a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    b.set_hooks(Box::new(DenyFrom(addr(1))));
    b.host()
        .out(t(0), parse_tuple("(1)").unwrap(), None)
        .unwrap();
    a.rd(t(0), parse_template("(?)").unwrap(), Duration::from_secs(1))
        .unwrap();
    a.out(t(0), parse_tuple("(\"EAT\")").unwrap(), None)
        .unwrap();
    a.out(t(0), parse_tuple("(\"KEEP\")").unwrap(), None)
        .unwrap();
    pump(t(0), &mut [&mut a, &mut b], 0);
    assert_eq!(b.stats().filtered, 1);
    assert_eq!(b.poll_timeout(), None, "no reply scheduled");
    assert_eq!(b.host().len(), 2, "(1) and (\"KEEP\"), not (\"EAT\")");
    assert_eq!(b.stats().not_stored, 1);
}

#[test]
fn pending_requests_are_bounded() {
    let mut cfg = NodeConfig::new(Transport::Udp, "a").unwrap();
    cfg.max_pending = 2;
    let mut a = Node::new(cfg, 1, t(0));
    let tpl = parse_template("(?)").unwrap();
    a.rd(t(0), tpl.clone(), Duration::from_secs(1)).unwrap();
    a.rd(t(0), tpl.clone(), Duration::from_secs(1)).unwrap();
    assert_eq!(
        a.rd(t(0), tpl, Duration::from_secs(1)),
        Err(NodeError::TooManyPending { max: 2 })
    );
}

#[test]
fn bad_node_name_is_refused() {
    assert!(NodeConfig::new(Transport::Udp, "").is_err());
    assert_eq!(
        NodeConfig::new(Transport::Udp, "seventeen-bytes!!").unwrap_err(),
        NodeError::BadName { len: 17, max: 16 }
    );
}

/// A flood of random and replayed datagrams leaves the node answering with bounded memory.
#[test]
fn flood_of_garbage_and_replays_keeps_node_bounded_and_answering() {
    use rand::{RngExt, SeedableRng, rngs::SmallRng};
    let mut rng = SmallRng::seed_from_u64(7);
    let mut cfg = NodeConfig::new(Transport::Udp, "b").unwrap();
    cfg.dedup_capacity = 512;
    cfg.event_queue = 128;
    let mut b = Node::new(cfg, 2, t(0));
    b.host()
        .out(t(0), parse_tuple("(\"K\", 1)").unwrap(), None)
        .unwrap();
    let mut valid = Vec::new();
    for seq in 0..50u32 {
        let h = DatagramHeader {
            node_id: NodeId::new(99).unwrap(),
            seq,
        };
        let m = Message::Tuple {
            tuple: parse_tuple(&format!("({seq})")).unwrap(),
            reply: false,
        };
        valid.push(udp::encode(&h, &m, None).unwrap());
    }
    for i in 0..100_000u64 {
        let now = t(i / 10);
        if i % 3 == 0 {
            let d = &valid[rng.random_range(0..valid.len())];
            b.handle_frame(now, addr(5), Frame::Datagram(d), None);
        } else {
            let len = rng.random_range(0..64);
            let mut d: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if i % 2 == 0 && d.len() > 11 {
                d[..3].copy_from_slice(&[0xbe, 0x75, 1]);
            }
            b.handle_frame(now, addr(6), Frame::Datagram(&d), None);
        }
        assert!(b.dedup_len() <= 512);
    }
    let s = b.stats();
    assert_eq!(s.frames_in, 100_000);
    assert_eq!(
        s.frames_in,
        s.messages_in
            + s.duplicates
            + s.dropped_malformed
            + s.dropped_key
            + s.dropped_own
            + s.sealed.total()
    );
    assert!(s.duplicates > 30_000);
    assert!(
        s.events_dropped > 0,
        "the event queue overflowed and counted it"
    );
    assert!(
        events(&mut b).len() <= 128,
        "the event queue stayed bounded"
    );
    // Still answering.
    let mut a = udp_node("a", 1);
    a.rd(
        t(10_000),
        parse_template("(\"K\", ?)").unwrap(),
        Duration::from_secs(1),
    )
    .unwrap();
    pump(t(10_000), &mut [&mut a, &mut b], 0);
    let due = b.poll_timeout().unwrap();
    b.handle_timeout(due);
    pump(due, &mut [&mut a, &mut b], 1);
    assert!(
        events(&mut a)
            .iter()
            .any(|e| matches!(e, Event::Completed { reply: Some(_), .. }))
    );
}

/// A local store refuses a tuple that one reply on the node's transport cannot carry, naming
/// both sizes, so a remote INP never removes a tuple that then fails to send. Before the limit a
/// BLE node stored it and lost it to the first INP.
#[test]
fn host_out_refuses_a_tuple_no_reply_can_carry() {
    let (mut a, mut b) = (ble_node("a", 1), ble_node("b", 2));
    // 1 signature byte + 2 varint-prefixed strings = 31 bytes: the reply would be 32.
    let long = parse_tuple(r#"("SENSOR-LONG-NAME", "ABCDEFGHIJKL")"#).unwrap();
    assert_eq!(long.wire_len(), 31);
    assert_eq!(
        a.host().out(t(0), long, None),
        Err(SpaceError::TooLong { len: 31, max: 30 })
    );
    assert_eq!(a.host().stats().refused, 1);
    // One byte less fits, and a remote INP gets it.
    let fits = parse_tuple(r#"("SENSOR-LONG-NAME", "ABCDEFGHIJK")"#).unwrap();
    a.host().out(t(0), fits.clone(), None).unwrap();
    let id = b
        .inp(
            t(0),
            parse_template("(?, ?)").unwrap(),
            Duration::from_secs(2),
        )
        .unwrap();
    pump(t(0), &mut [&mut a, &mut b], 1);
    a.handle_timeout(t(600));
    pump(t(600), &mut [&mut a, &mut b], 0);
    let got = events(&mut b).into_iter().find_map(|e| match e {
        Event::Completed {
            id: done, reply, ..
        } if done == id => reply,
        _ => None,
    });
    assert_eq!(got.map(|(tuple, _)| tuple), Some(fits));
    assert!(a.host().is_empty());
}

/// On UDP the limit is 1220 bytes of tuple (1221-byte message less the control byte).
#[test]
fn udp_host_out_limit_is_one_reply() {
    let mut a = udp_node("a", 1);
    let bytes = |n: usize| Tuple::new([Value::Bytes(vec![0; n])]).unwrap();
    // signature 1 + varint 2 + n
    assert!(a.host().out(t(0), bytes(1217), None).is_ok());
    assert_eq!(
        a.host().out(t(0), bytes(1218), None),
        Err(SpaceError::TooLong {
            len: 1221,
            max: 1220
        })
    );
}

/// A reply to a cancelled request is counted and reported as lost until the request's timeout
/// would have passed; after that it is merely unmatched.
#[test]
fn reply_after_cancel_is_counted_until_the_timeout() {
    let (mut a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    b.host()
        .out(t(0), parse_tuple("(\"T\", 1)").unwrap(), None)
        .unwrap();
    b.host()
        .out(t(0), parse_tuple("(\"T\", 2)").unwrap(), None)
        .unwrap();
    let id = a
        .inp(
            t(0),
            parse_template("(\"T\", ?)").unwrap(),
            Duration::from_secs(2),
        )
        .unwrap();
    assert!(a.cancel(id));
    assert!(!a.cancel(id));
    pump(t(0), &mut [&mut a, &mut b], 0);
    b.handle_timeout(t(100));
    pump(t(100), &mut [&mut a, &mut b], 1);
    let evs = events(&mut a);
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::ReplyAfterCancel { op: Op::Inp, .. })),
        "{evs:?}"
    );
    assert_eq!(a.stats().replies_after_cancel, 1);
    assert_eq!(a.stats().replies_matched, 0);
    // Past the request's timeout a reply is only unmatched.
    let id = a
        .inp(
            t(3000),
            parse_template("(\"T\", ?)").unwrap(),
            Duration::from_secs(1),
        )
        .unwrap();
    assert!(a.cancel(id));
    pump(t(3000), &mut [&mut a, &mut b], 0);
    b.handle_timeout(t(5000));
    pump(t(5000), &mut [&mut a, &mut b], 1);
    assert_eq!(a.stats().replies_after_cancel, 1);
    assert_eq!(a.stats().replies_unmatched, 1);
}

/// Deliveries carry their context: the sender and receive time of an OUT from the air (RSSI on
/// BLE), no sender and the store time for a local out; the lifetime each OUT gave its tuple.
#[test]
fn deliveries_say_where_and_when_a_tuple_came_from() {
    let (mut a, mut b) = (ble_node("a", 1), ble_node("b", 2));
    let l = b.subscribe(parse_template("(?int16)").unwrap());
    a.out(
        t(5),
        parse_tuple("(1)").unwrap(),
        Some(Duration::from_secs(600)),
    )
    .unwrap();
    pump(t(7), &mut [&mut a, &mut b], 0);
    b.host_out(t(9), parse_tuple("(2)").unwrap(), None).unwrap();
    b.host_out(
        t(10),
        parse_tuple("(3)").unwrap(),
        Some(Duration::from_secs(30)),
    )
    .unwrap();
    a.out(t(11), parse_tuple("(4)").unwrap(), None).unwrap();
    pump(t(12), &mut [&mut a, &mut b], 0);
    let got: Vec<Delivery> = events(&mut b)
        .into_iter()
        .filter_map(|e| match e {
            Event::Delivered { listener, delivery } if listener == l => Some(delivery),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        vec![
            Delivery {
                tuple: parse_tuple("(1)").unwrap(),
                kind: DeliveryKind::Out,
                from: Some(PeerAddr::Ble([0, 0, 0, 0, 0, 0])),
                rssi: Some(-60),
                at: t(7),
                lifetime: Some(Duration::from_secs(600)),
            },
            Delivery {
                tuple: parse_tuple("(2)").unwrap(),
                kind: DeliveryKind::Out,
                from: None,
                rssi: None,
                at: t(9),
                lifetime: None,
            },
            Delivery {
                tuple: parse_tuple("(3)").unwrap(),
                kind: DeliveryKind::Out,
                from: None,
                rssi: None,
                at: t(10),
                lifetime: Some(Duration::from_secs(30)),
            },
            Delivery {
                tuple: parse_tuple("(4)").unwrap(),
                kind: DeliveryKind::Out,
                from: Some(PeerAddr::Ble([0, 0, 0, 0, 0, 0])),
                rssi: Some(-60),
                at: t(12),
                lifetime: None,
            },
        ]
    );
}

#[test]
fn mqtt_senders_print_with_their_node_id() {
    let id = crate::udp::NodeId::new(0xdead_beef).unwrap();
    assert_eq!(PeerAddr::Mqtt(id).to_string(), "mqtt:deadbeef");
}

// --- requests that wait (spec §11), scopes, leases, removals --------------------------------

fn tpl(s: &str) -> Template {
    parse_template(s).unwrap()
}

fn tup(s: &str) -> Tuple {
    parse_tuple(s).unwrap()
}

/// The message of the one transmit `node` has queued.
fn sent_message(node: &mut Node) -> Message {
    let Some(Transmit::Datagram(d)) = node.poll_transmit() else {
        panic!("one datagram queued")
    };
    Message::parse(udp::parse_header(&d).unwrap().1, None)
        .unwrap()
        .message
}

/// Runs `node`'s timers up to `until` (each due time in turn), pumping its transmits to `peers`.
fn run_until(until: Time, nodes: &mut [&mut Node]) {
    loop {
        let next = nodes.iter().filter_map(|n| n.poll_timeout()).min();
        match next {
            Some(at) if at <= until => {
                for i in 0..nodes.len() {
                    nodes[i].handle_timeout(at);
                    pump(at, nodes, i);
                }
            }
            _ => break,
        }
    }
}

fn completed(node: &mut Node) -> Vec<(RequestId, Option<Tuple>)> {
    events(node)
        .into_iter()
        .filter_map(|e| match e {
            Event::Completed { id, reply, .. } => Some((id, reply.map(|r| r.0))),
            Event::LocalAnswer { id, tuple, .. } => Some((id, Some(tuple))),
            _ => None,
        })
        .collect()
}

#[test]
fn requester_sends_its_timeout_as_the_wait() {
    let mut a = udp_node("a", 1);
    let sensor = tpl(r#"("SENSOR", ?int16)"#);
    a.rd(t(0), sensor.clone(), Duration::from_millis(30_999))
        .unwrap();
    assert_eq!(
        sent_message(&mut a).to_bytes(None),
        [
            0x51, 0xd0, 0x24, 0x0c, b'S', b'E', b'N', b'S', b'O', b'R', 0x00, 0x1e
        ]
    );
    a.inp(t(0), sensor.clone(), Duration::from_secs(1_000_000))
        .unwrap();
    assert_eq!(sent_message(&mut a).wait(), NonZeroU16::new(65535));
    // Less than a second: no L (a wait of 0 s, spec §9 as before).
    a.test(t(0), sensor.clone(), Duration::from_millis(999))
        .unwrap();
    assert_eq!(sent_message(&mut a), Message::Test(sensor.clone()));
    // WHERE never waits.
    a.r#where(t(0), sensor.clone(), Duration::from_secs(5))
        .unwrap();
    assert_eq!(sent_message(&mut a), Message::Where(sensor.clone()));
    // Off for revision-1 peers.
    let mut cfg = NodeConfig::new(Transport::Udp, "old").unwrap();
    cfg.send_waits = false;
    let mut old = Node::new(cfg, 3, t(0));
    old.rd(t(0), sensor.clone(), Duration::from_secs(10))
        .unwrap();
    assert_eq!(sent_message(&mut old), Message::Rd(sensor));
}

#[test]
fn a_wait_that_would_not_fit_ble_is_sent_without_l() {
    let mut a = ble_node("a", 1);
    // 1 + 29 bytes: the template fits, the two wait bytes would not.
    let long = tpl(r#"("SENSOR-LONG-NAME", "ABCDEFGHI", ?)"#);
    assert_eq!(long.wire_len(), 29);
    a.rd(t(0), long, Duration::from_secs(10)).unwrap();
    let Some(Transmit::Advertisement(adv)) = a.poll_transmit() else {
        panic!("an advertisement")
    };
    let f = ble::unpack(&adv.local_name, &adv.service_uuids, None).unwrap();
    assert!(matches!(f.decoded.message, Message::Rd(_)));
}

/// The issue's scenario: a mobile's `rd` with a 10 s wait reaches the beacon before the beacon
/// holds the tuple; the tuple arrives 3 s later and the beacon answers within its back-off.
#[test]
fn a_waiting_rd_is_answered_within_the_backoff_after_the_tuple_arrives() {
    let (mut mobile, mut beacon, mut sensor) = (
        udp_node("mobile", 1),
        udp_node("beacon", 2),
        udp_node("sensor", 3),
    );
    let id = mobile
        .rd(t(0), tpl(r#"("LIGHT", ?)"#), Duration::from_secs(10))
        .unwrap();
    pump(t(0), &mut [&mut mobile, &mut beacon], 0);
    assert_eq!(beacon.waiting_requests(), 1);
    assert_eq!(beacon.stats().waits_accepted, 1);
    run_until(t(3000), &mut [&mut mobile, &mut beacon]);
    assert!(completed(&mut mobile).is_empty());
    // The sensor's OUT reaches the beacon (not the mobile) at 3 s.
    sensor.out(t(3000), tup(r#"("LIGHT", 512)"#), None).unwrap();
    pump(t(3000), &mut [&mut sensor, &mut beacon], 0);
    run_until(
        t(3000) + beacon.config().reply_backoff,
        &mut [&mut beacon, &mut mobile],
    );
    assert_eq!(
        completed(&mut mobile),
        vec![(id, Some(tup(r#"("LIGHT", 512)"#)))]
    );
    assert_eq!(beacon.stats().replies_sent, 1);
    assert_eq!(
        beacon.waiting_requests(),
        0,
        "the reply it sent finished the wait"
    );
    assert_eq!(
        beacon.host().count(t(3100), &tpl("(?, ?)")),
        1,
        "RD leaves the tuple"
    );
}

#[test]
fn a_pending_request_expires_and_is_not_answered_after() {
    let (mut a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    a.rd(t(0), tpl("(\"X\", ?)"), Duration::from_millis(2500))
        .unwrap();
    pump(t(0), &mut [&mut a, &mut b], 0);
    assert_eq!(b.waiting_requests(), 1);
    // Wait = ⌊2.5⌋ = 2 s, timed by the receiver from arrival.
    assert_eq!(b.poll_timeout(), Some(t(2000)));
    b.handle_timeout(t(2000));
    assert_eq!(b.waiting_requests(), 0);
    assert_eq!(b.stats().waits_expired, 1);
    assert_eq!(b.stats().waits_dropped, 0, "expiry is not a drop");
    b.host_out(t(2100), tup("(\"X\", 1)"), None).unwrap();
    run_until(t(3000), &mut [&mut b]);
    assert_eq!(b.stats().replies_sent, 0);
}

/// A store that comes when a wait has ended, before the node's timer ran, answers nothing (local
/// waits: `tests/local_waits_model.rs`).
#[test]
fn a_store_after_a_wait_ended_answers_nothing_even_before_the_timer_ran() {
    let (mut a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    a.rd(t(0), tpl("(\"X\", ?)"), Duration::from_millis(2500))
        .unwrap();
    pump(t(0), &mut [&mut a, &mut b], 0);
    assert_eq!(b.waiting_requests(), 1);
    b.host_out(t(2000), tup("(\"X\", 1)"), None).unwrap();
    assert_eq!(b.waiting_requests(), 0);
    assert_eq!(b.stats().waits_expired, 1);
    run_until(t(3000), &mut [&mut b]);
    assert_eq!(b.stats().replies_sent, 0);
}

#[test]
fn a_flood_of_waiting_requests_stays_bounded_and_drops_the_first_to_expire() {
    let mut b = udp_node("b", 2);
    let mut cfg = NodeConfig::new(Transport::Udp, "a").unwrap();
    cfg.max_pending = 1000;
    let mut requester = Node::new(cfg, 1, t(0));
    // 300 distinct waiting requests, waits 1..=300 s in a shuffled order.
    for i in 0..300u32 {
        let wait = (i * 7) % 300 + 1;
        requester
            .rd(
                t(0),
                tpl(&format!("({i}, ?)")),
                Duration::from_secs(u64::from(wait)),
            )
            .unwrap();
        pump(t(0), &mut [&mut requester, &mut b], 0);
    }
    assert_eq!(b.waiting_requests(), 256);
    let s = b.stats();
    assert_eq!(
        (s.waits_accepted, s.waits_dropped),
        (300, 44),
        "each new one was accepted, 44 dropped"
    );
    // The survivors are the 256 that expire last: waits 45..=300 s.
    assert_eq!(b.poll_timeout(), Some(t(45_000)));
    b.handle_timeout(t(300_000));
    assert_eq!(b.waiting_requests(), 0);
    assert_eq!(b.stats().waits_expired, 256);
}

#[test]
fn a_repeat_of_a_waiting_request_adds_nothing_even_after_the_dedup_window() {
    let (a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    let msg = Message::request(RequestOp::Rd, tpl("(\"R\", ?)"), NonZeroU16::new(60));
    let h = DatagramHeader {
        node_id: a.node_id(),
        seq: 77,
    };
    let d = udp::encode(&h, &msg, None).unwrap();
    b.handle_frame(t(0), addr(1), Frame::Datagram(&d), None);
    // Past the §8 window (10 s) the same key is no longer a duplicate for the cache...
    b.handle_frame(t(20_000), addr(1), Frame::Datagram(&d), None);
    assert_eq!(b.stats().duplicates, 0);
    // ... but the pending table recognises it: no second entry, no restarted wait.
    assert_eq!(b.waiting_requests(), 1);
    assert_eq!(b.stats().waits_repeated, 1);
    assert_eq!(b.poll_timeout(), Some(t(60_000)));
}

/// Two pending INPs and one OUT give one answer: the oldest INP holds the tuple, its reply goes
/// on the air once and finishes the other INP too (requesters match replies by pattern).
#[test]
fn two_pending_inps_and_one_out_give_one_answer() {
    let (mut a1, mut a2, mut b) = (udp_node("a1", 1), udp_node("a2", 3), udp_node("b", 2));
    let take = tpl("(\"T\", ?)");
    a1.inp(t(0), take.clone(), Duration::from_secs(10)).unwrap();
    pump(t(0), &mut [&mut a1, &mut b], 0);
    a2.inp(t(1), take.clone(), Duration::from_secs(10)).unwrap();
    pump(t(1), &mut [&mut a2, &mut b], 0);
    assert_eq!(b.waiting_requests(), 2);
    b.host_out(t(1000), tup("(\"T\", 1)"), None).unwrap();
    run_until(t(2000), &mut [&mut b, &mut a1, &mut a2]);
    assert_eq!(b.stats().replies_sent, 1, "one reply on the air");
    assert_eq!(
        b.host().count(t(2000), &take),
        0,
        "the tuple was taken once"
    );
    assert_eq!(b.waiting_requests(), 0);
    assert_eq!(b.stats().waits_finished, 2);
    // A second tuple is kept: nobody waits any more.
    b.host_out(t(2000), tup("(\"T\", 2)"), None).unwrap();
    run_until(t(3000), &mut [&mut b]);
    assert_eq!(b.stats().replies_sent, 1);
    assert_eq!(b.host().count(t(3000), &take), 1);
}

#[test]
fn a_reply_heard_finishes_a_pending_request_and_releases_its_tuple() {
    let (mut a, mut c) = (udp_node("a", 1), udp_node("c", 3));
    let mut cfg = NodeConfig::new(Transport::Udp, "b").unwrap();
    cfg.reply_backoff = Duration::from_millis(500);
    let mut b = Node::new(cfg, 2, t(0));
    a.inp(t(0), tpl("(\"Q\", ?)"), Duration::from_secs(10))
        .unwrap();
    pump(t(0), &mut [&mut a, &mut b, &mut c], 0);
    assert_eq!((b.waiting_requests(), c.waiting_requests()), (1, 1));
    // Both store a match; c answers at once (back-off 30 ms), b would answer later.
    c.host_out(t(100), tup("(\"Q\", 1)"), None).unwrap();
    b.host_out(t(100), tup("(\"Q\", 2)"), None).unwrap();
    run_until(t(200), &mut [&mut c, &mut a, &mut b]);
    assert_eq!(c.stats().replies_sent, 1);
    assert_eq!(b.waiting_requests(), 0, "c's reply finished b's wait");
    run_until(t(2000), &mut [&mut b]);
    assert_eq!(b.stats().replies_sent, 0);
    assert_eq!(
        b.host().count(t(2000), &tpl("(\"Q\", ?)")),
        1,
        "b keeps its tuple"
    );
}

#[test]
fn an_out_from_the_air_wakes_a_waiting_request_after_the_hooks() {
    struct Consume;
    impl Hooks for Consume {
        fn decide(&mut self, _: DecisionToken, q: &Question<'_>) -> Verdict {
            match q {
                Question::Out { tuple, .. } if tuple.values()[1] == Value::Int16(0) => {
                    Verdict::Now(Decision::Stop)
                }
                _ => Verdict::Now(Decision::Proceed),
            }
        }
    }
    let (mut a, mut b, mut s) = (udp_node("a", 1), udp_node("b", 2), udp_node("s", 3));
    b.set_hooks(Box::new(Consume));
    let id = a
        .rd(t(0), tpl("(\"W\", ?)"), Duration::from_secs(5))
        .unwrap();
    pump(t(0), &mut [&mut a, &mut b], 0);
    s.out(t(10), tup("(\"W\", 0)"), None).unwrap();
    pump(t(10), &mut [&mut s, &mut b], 0);
    run_until(t(500), &mut [&mut b, &mut a]);
    assert!(
        completed(&mut a).is_empty(),
        "a consumed OUT is not offered"
    );
    s.out(t(600), tup("(\"W\", 1)"), None).unwrap();
    pump(t(600), &mut [&mut s, &mut b], 0);
    run_until(t(1000), &mut [&mut b, &mut a]);
    assert_eq!(completed(&mut a), vec![(id, Some(tup("(\"W\", 1)")))]);
}

#[test]
fn a_request_without_a_wait_still_does_not_wait() {
    let (mut a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    a.rd(t(0), tpl("(\"N\", ?)"), Duration::from_millis(900))
        .unwrap();
    pump(t(0), &mut [&mut a, &mut b], 0);
    assert_eq!(b.waiting_requests(), 0);
}

#[test]
fn local_scope_answers_at_once_or_waits_for_a_later_store() {
    let mut a = udp_node("a", 1);
    a.host_out(t(0), tup("(\"L\", 1)"), None).unwrap();
    let now = a
        .request_in(
            t(0),
            RequestOp::Rd,
            tpl("(\"L\", ?)"),
            Duration::ZERO,
            Scope::Local,
        )
        .unwrap();
    assert_eq!(completed(&mut a), vec![(now, Some(tup("(\"L\", 1)")))]);
    assert_eq!(a.poll_transmit(), None, "a local request sends nothing");
    let later = a
        .request_in(
            t(0),
            RequestOp::Rd,
            tpl("(\"M\", ?)"),
            Duration::from_secs(5),
            Scope::Local,
        )
        .unwrap();
    assert!(completed(&mut a).is_empty());
    a.host_out(t(1000), tup("(\"M\", 2)"), None).unwrap();
    assert_eq!(completed(&mut a), vec![(later, Some(tup("(\"M\", 2)")))]);
    assert_eq!(
        a.host().count(t(1000), &tpl("(\"M\", ?)")),
        1,
        "rd leaves it"
    );
    // Nothing comes: None at the timeout.
    let none = a
        .request_in(
            t(1000),
            RequestOp::Test,
            tpl("(\"Z\")"),
            Duration::from_secs(1),
            Scope::Local,
        )
        .unwrap();
    a.handle_timeout(t(2000));
    assert_eq!(completed(&mut a), vec![(none, None)]);
}

#[test]
fn local_inps_take_atomically_oldest_first() {
    let mut a = udp_node("a", 1);
    let take = tpl("(\"J\", ?)");
    let first = a
        .request_in(
            t(0),
            RequestOp::Inp,
            take.clone(),
            Duration::from_secs(9),
            Scope::Local,
        )
        .unwrap();
    let reader = a
        .request_in(
            t(0),
            RequestOp::Rd,
            take.clone(),
            Duration::from_secs(9),
            Scope::Local,
        )
        .unwrap();
    let second = a
        .request_in(
            t(1),
            RequestOp::Inp,
            take.clone(),
            Duration::from_secs(9),
            Scope::Local,
        )
        .unwrap();
    a.host_out(t(10), tup("(\"J\", 1)"), None).unwrap();
    assert_eq!(
        completed(&mut a),
        vec![
            (reader, Some(tup("(\"J\", 1)"))),
            (first, Some(tup("(\"J\", 1)")))
        ]
    );
    assert_eq!(a.host().count(t(10), &take), 0);
    a.host_out(t(20), tup("(\"J\", 2)"), None).unwrap();
    assert_eq!(completed(&mut a), vec![(second, Some(tup("(\"J\", 2)")))]);
    assert_eq!(a.host().count(t(20), &take), 0);
    assert_eq!(a.stats().local_answers, 3);
}

#[test]
fn both_scope_tries_local_then_network_and_a_local_store_ends_it() {
    let (mut a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    a.host_out(t(0), tup("(\"B\", 1)"), None).unwrap();
    let local = a
        .request_in(
            t(0),
            RequestOp::Inp,
            tpl("(\"B\", ?)"),
            Duration::from_secs(5),
            Scope::Both,
        )
        .unwrap();
    assert_eq!(completed(&mut a), vec![(local, Some(tup("(\"B\", 1)")))]);
    assert_eq!(a.poll_transmit(), None, "found locally: nothing sent");
    // Nothing local: the request goes on the air too, with its wait.
    let both = a
        .request_in(
            t(0),
            RequestOp::Rd,
            tpl("(\"C\", ?)"),
            Duration::from_secs(5),
            Scope::Both,
        )
        .unwrap();
    pump(t(0), &mut [&mut a, &mut b], 0);
    assert_eq!(b.waiting_requests(), 1);
    a.host_out(t(100), tup("(\"C\", 3)"), None).unwrap();
    assert_eq!(completed(&mut a), vec![(both, Some(tup("(\"C\", 3)")))]);
    // b's later answer reaches a request that is over: counted as after a cancel.
    b.host_out(t(200), tup("(\"C\", 4)"), None).unwrap();
    run_until(t(400), &mut [&mut b, &mut a]);
    assert_eq!(a.stats().replies_after_cancel, 1);
    // A network reply completes a Both request that found nothing locally.
    let net = a
        .request_in(
            t(500),
            RequestOp::Rd,
            tpl("(\"D\", ?)"),
            Duration::from_secs(5),
            Scope::Both,
        )
        .unwrap();
    b.host_out(t(500), tup("(\"D\", 5)"), None).unwrap();
    pump(t(500), &mut [&mut a, &mut b], 0);
    run_until(t(700), &mut [&mut b, &mut a]);
    assert_eq!(completed(&mut a), vec![(net, Some(tup("(\"D\", 5)")))]);
}

#[test]
fn a_local_only_request_ignores_replies_from_the_air() {
    let (mut a, mut c) = (udp_node("a", 1), udp_node("c", 3));
    let id = a
        .request_in(
            t(0),
            RequestOp::Rd,
            tpl("(\"E\", ?)"),
            Duration::from_secs(1),
            Scope::Local,
        )
        .unwrap();
    c.host_out(t(0), tup("(\"E\", 1)"), None).unwrap();
    // A reply from the air (to somebody else's request).
    c.send(&Message::Tuple {
        tuple: tup("(\"E\", 1)"),
        reply: true,
    })
    .unwrap();
    pump(t(10), &mut [&mut c, &mut a], 0);
    a.handle_timeout(t(1000));
    assert_eq!(completed(&mut a), vec![(id, None)]);
}

#[test]
fn own_local_waits_are_offered_a_tuple_before_remote_ones() {
    let (mut a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    a.inp(t(0), tpl("(\"O\", ?)"), Duration::from_secs(10))
        .unwrap();
    pump(t(0), &mut [&mut a, &mut b], 0);
    let mine = b
        .request_in(
            t(0),
            RequestOp::Inp,
            tpl("(\"O\", ?)"),
            Duration::from_secs(10),
            Scope::Local,
        )
        .unwrap();
    b.host_out(t(100), tup("(\"O\", 1)"), None).unwrap();
    assert_eq!(completed(&mut b), vec![(mine, Some(tup("(\"O\", 1)")))]);
    run_until(t(500), &mut [&mut b]);
    assert_eq!(
        b.stats().replies_sent,
        0,
        "taken locally, nothing left to answer"
    );
    assert_eq!(b.waiting_requests(), 1, "the remote INP still waits");
}

#[test]
fn leases_renew_and_cancel_and_a_zero_lifetime_is_refused() {
    let mut a = udp_node("a", 1);
    let gone = a.subscribe_to(tpl("(\"LZ\", ?)"), crate::space::DeliveryKinds::REMOVALS);
    let id = a
        .lease(t(0), tup("(\"LZ\", 1)"), Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(
        a.renew(t(1500), id, Some(Duration::from_secs(2))),
        Ok(t(3500))
    );
    a.handle_timeout(t(2500));
    assert_eq!(
        a.host().count(t(2500), &tpl("(\"LZ\", ?)")),
        1,
        "renewed: still there"
    );
    assert_eq!(
        a.renew(t(2500), id, Some(Duration::ZERO)),
        Err(SpaceError::ZeroLifetime {
            lifetime: Duration::ZERO
        })
    );
    assert_eq!(a.cancel_lease(t(2600), id), Some(tup("(\"LZ\", 1)")));
    assert_eq!(a.cancel_lease(t(2600), id), None);
    assert_eq!(a.renew(t(2600), id, None), Err(SpaceError::Gone));
    let expiring = a
        .lease(t(3000), tup("(\"LZ\", 2)"), Some(Duration::from_secs(1)))
        .unwrap();
    a.handle_timeout(t(4000));
    assert_eq!(a.renew(t(4000), expiring, None), Err(SpaceError::Gone));
    let kinds: Vec<_> = events(&mut a)
        .into_iter()
        .filter_map(|e| match e {
            Event::Delivered { listener, delivery } if listener == gone => Some(delivery.kind),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, vec![DeliveryKind::Rm, DeliveryKind::Expired]);
    assert_eq!(
        a.lease(t(5000), tup("(1)"), Some(Duration::ZERO)),
        Err(SpaceError::ZeroLifetime {
            lifetime: Duration::ZERO
        })
    );
}

#[test]
fn listeners_hear_a_remote_inp_take_a_tuple() {
    let (mut a, mut b) = (udp_node("a", 1), udp_node("b", 2));
    let removals = b.subscribe_to(tpl("(\"K\", ?)"), crate::space::DeliveryKinds::REMOVALS);
    let stores = b.subscribe(tpl("(\"K\", ?)"));
    b.host_out(t(0), tup("(\"K\", 1)"), None).unwrap();
    a.inp(t(0), tpl("(\"K\", ?)"), Duration::from_secs(1))
        .unwrap();
    pump(t(0), &mut [&mut a, &mut b], 0);
    run_until(t(100), &mut [&mut b, &mut a]);
    let got: Vec<_> = events(&mut b)
        .into_iter()
        .filter_map(|e| match e {
            Event::Delivered { listener, delivery } => Some((listener, delivery.kind)),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        vec![(stores, DeliveryKind::Out), (removals, DeliveryKind::Inp)]
    );
}
