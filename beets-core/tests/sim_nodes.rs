//! Multi-node scenarios on the simulated medium (`beets_core::sim`): the engine's operations
//! between nodes, FPE between spaces, BLE sender scheduling, and robustness under loss,
//! duplication and reordering. Each protocol test runs on the BLE and on the UDP model.

use std::collections::HashMap;
use std::time::Duration;

use beets_core::node::{DropReason, Event, NodeConfig, RequestId, Transport};
use beets_core::sim::{QueuePolicy, Sim, SimConfig, SimNodeId};
use beets_core::space::DeliveryKind;
use beets_core::{Op, Template, Time, Tuple};
use proptest::prelude::*;

const BOTH: [Transport; 2] = [Transport::Ble, Transport::Udp];
const TIMEOUT: Duration = Duration::from_secs(5);

fn cfg(transport: Transport, name: &str) -> NodeConfig {
    NodeConfig::new(transport, name).unwrap()
}

fn tuple(s: &str) -> Tuple {
    s.parse().unwrap()
}

fn template(s: &str) -> Template {
    s.parse().unwrap()
}

/// Live tuples matching `t` in the local space of `id`.
fn count(sim: &mut Sim, id: SimNodeId, t: &Template) -> usize {
    let now = sim.now();
    sim.node_mut(id).host().count(now, t)
}

/// A completion: when, and the reply tuple with the node that sent it (`None` at the timeout).
type Completion = (Time, Option<(Tuple, Option<SimNodeId>)>);

/// Every completion of request `req` on `id`: (time, reply tuple, replying node).
fn completions(sim: &Sim, id: SimNodeId, req: RequestId) -> Vec<Completion> {
    sim.timed_events(id)
        .filter_map(|(at, e)| match e {
            Event::Completed { id: r, reply, .. } if *r == req => Some((
                at,
                reply
                    .as_ref()
                    .map(|(t, rx)| (t.clone(), sim.id_of(rx.from))),
            )),
            _ => None,
        })
        .collect()
}

/// Four nodes: A at the origin, B and C within range (30 m), D at 100 m.
fn square(sim: &mut Sim, transport: Transport) -> [SimNodeId; 4] {
    [
        sim.add_node(cfg(transport, "A"), (0.0, 0.0)),
        sim.add_node(cfg(transport, "B"), (10.0, 0.0)),
        sim.add_node(cfg(transport, "C"), (0.0, 10.0)),
        sim.add_node(cfg(transport, "D"), (100.0, 0.0)),
    ]
}

// --- operations between nodes ------------------------------------------------------------------

#[test]
fn out_is_stored_by_nodes_in_range_and_not_beyond() {
    for transport in BOTH {
        let mut sim = Sim::new(SimConfig::ideal(1));
        let [a, b, c, d] = square(&mut sim, transport);
        let t = tuple(r#"("SENSOR", "LIGHT", 512, 1.5)"#);
        sim.with_node(a, |n, now| n.out(now, t.clone(), None))
            .unwrap();
        assert!(sim.run_until_quiet(Time::from_millis(10_000)));
        let exact = Template::exact(&t);
        assert_eq!(count(&mut sim, b, &exact), 1, "{transport:?}: B stores");
        assert_eq!(count(&mut sim, c, &exact), 1, "{transport:?}: C stores");
        assert_eq!(
            count(&mut sim, d, &exact),
            0,
            "{transport:?}: D out of range"
        );
        assert_eq!(
            count(&mut sim, a, &exact),
            0,
            "{transport:?}: out leaves A alone"
        );
        assert_eq!(sim.node(d).stats().frames_in, 0);
        let stats = sim.stats();
        assert_eq!(stats.link(a, b).unwrap().delivery_ratio(), 1.0);
        assert_eq!(stats.link(a, d).unwrap().frames_received, 0);
    }
}

#[test]
fn out_reaches_most_nodes_on_the_default_lossy_ble_medium() {
    // Realistic defaults: each frame is heard with ≈ 80 % probability; five redundant copies of
    // a reading (distinct tuples) get through to both neighbours with near certainty.
    let mut sim = Sim::new(SimConfig::new(2));
    let [a, b, c, d] = square(&mut sim, Transport::Ble);
    for k in 0..5 {
        let t = tuple(&format!(r#"("SENSOR", "LIGHT", 512, {k})"#));
        sim.with_node(a, |n, now| n.out(now, t, None)).unwrap();
    }
    assert!(sim.run_until_quiet(Time::from_millis(10_000)));
    let any = template(r#"("SENSOR", "LIGHT", 512, ?)"#);
    assert!(count(&mut sim, b, &any) >= 1);
    assert!(count(&mut sim, c, &any) >= 1);
    assert_eq!(count(&mut sim, d, &any), 0);
}

#[test]
fn rd_is_answered_with_a_copy_and_the_responder_keeps_it() {
    for transport in BOTH {
        let mut sim = Sim::new(SimConfig::ideal(3));
        let [a, b, _c, _d] = square(&mut sim, transport);
        let t = tuple(r#"("TEMP", 21)"#);
        let now = sim.now();
        sim.node_mut(b).host().out(now, t.clone(), None).unwrap();
        let req = sim
            .with_node(a, |n, now| n.rd(now, template(r#"("TEMP", ?)"#), TIMEOUT))
            .unwrap();
        assert!(sim.run_until_quiet(Time::from_millis(20_000)));
        let done = completions(&sim, a, req);
        assert_eq!(done.len(), 1, "{transport:?}: {done:?}");
        assert_eq!(done[0].1, Some((t.clone(), Some(b))), "{transport:?}");
        assert!(done[0].0 < Time::ZERO + TIMEOUT);
        assert_eq!(count(&mut sim, b, &Template::exact(&t)), 1, "B keeps it");
        assert_eq!(
            count(&mut sim, a, &Template::exact(&t)),
            0,
            "rd stores nothing"
        );
    }
}

#[test]
fn test_op_is_answered_with_a_copy() {
    for transport in BOTH {
        let mut sim = Sim::new(SimConfig::ideal(4));
        let [a, b, _c, _d] = square(&mut sim, transport);
        let t = tuple(r#"("DOOR", "open")"#);
        let now = sim.now();
        sim.node_mut(b).host().out(now, t.clone(), None).unwrap();
        let req = sim
            .with_node(a, |n, now| {
                n.test(now, template(r#"("DOOR", ?str)"#), TIMEOUT)
            })
            .unwrap();
        assert!(sim.run_until_quiet(Time::from_millis(20_000)));
        let done = completions(&sim, a, req);
        assert_eq!(done.len(), 1, "{transport:?}");
        assert_eq!(done[0].1, Some((t.clone(), Some(b))));
        assert_eq!(count(&mut sim, b, &Template::exact(&t)), 1);
    }
}

/// Runs the INP race; returns (tuples removed from B and C, A's completions).
fn inp_race(transport: Transport, seed: u64) -> (usize, Vec<Completion>) {
    let mut sim = Sim::new(SimConfig::ideal(seed));
    let [a, b, c, _d] = square(&mut sim, transport);
    let t = tuple(r#"("JOB", 7)"#);
    let now = sim.now();
    for id in [b, c] {
        sim.node_mut(id).host().out(now, t.clone(), None).unwrap();
    }
    let req = sim
        .with_node(a, |n, now| {
            n.inp(now, template(r#"("JOB", ?int16)"#), TIMEOUT)
        })
        .unwrap();
    assert!(sim.run_until_quiet(Time::from_millis(20_000)));
    let exact = Template::exact(&t);
    let left = count(&mut sim, b, &exact) + count(&mut sim, c, &exact);
    (2 - left, completions(&sim, a, req))
}

/// With the default per-op back-off (spec §9: RD and TEST answered after 1..=1 ms on UDP, INP
/// after up to 30 ms), an RD or TEST that two holders can answer completes within 3 ms of the
/// request on the ideal medium (1 ms each way plus the back-off), for every seed — with the one
/// 30 ms bound for every op it took up to 31 ms.
#[test]
fn udp_reads_are_answered_within_a_few_milliseconds() {
    for seed in 0..200 {
        for op in ["rd", "test"] {
            let mut sim = Sim::new(SimConfig::ideal(seed));
            let [a, b, c, _d] = square(&mut sim, Transport::Udp);
            let t = tuple(r#"("JOB", 7)"#);
            let now = sim.now();
            for id in [b, c] {
                sim.node_mut(id).host().out(now, t.clone(), None).unwrap();
            }
            let tpl = template(r#"("JOB", ?int16)"#);
            let req = sim
                .with_node(a, |n, now| match op {
                    "rd" => n.rd(now, tpl, TIMEOUT),
                    _ => n.test(now, tpl, TIMEOUT),
                })
                .unwrap();
            assert!(sim.run_until_quiet(Time::from_millis(20_000)));
            let done = completions(&sim, a, req);
            assert_eq!(done.len(), 1, "seed {seed} {op}: one completion");
            assert!(done[0].1.is_some(), "seed {seed} {op}: with the tuple");
            let took = done[0].0.saturating_since(now);
            assert!(
                took <= Duration::from_millis(3),
                "seed {seed} {op}: answered after {took:?}"
            );
        }
    }
}

/// B and C both hold a match and hear each other; A sends one INP. Over 1000 seeds per transport
/// on the ideal medium, every race gives A exactly one completion, with the tuple, and removes one
/// or two copies; one copy in ≈ 96 % of races on BLE (back-off 0..=500 ms, first packet within
/// 12 ms) and ≈ 88 % on UDP (back-off 0..=30 ms in whole milliseconds, 1 ms latency: both answer
/// when their back-offs differ by ≤ 1 ms). Suppression needs the other's reply to arrive before
/// one's own back-off ends, so a double removal is the measured race, not a bug (paper §3:
/// operations are not atomic). The bounds leave room for the rates, not for a change of policy.
#[test]
fn inp_removes_one_copy_in_most_races_and_always_completes_once() {
    for (transport, min_percent) in [(Transport::Ble, 93), (Transport::Udp, 84)] {
        let runs = 1000;
        let mut once = 0;
        for seed in 0..runs {
            let (removed, done) = inp_race(transport, seed);
            assert_eq!(done.len(), 1, "{transport:?} seed {seed}: one completion");
            assert!(
                done[0].1.is_some(),
                "{transport:?} seed {seed}: with a tuple"
            );
            assert!((1..=2).contains(&removed), "{transport:?} seed {seed}");
            once += usize::from(removed == 1);
        }
        assert!(
            once * 100 >= min_percent * runs as usize,
            "{transport:?}: only {once}/{runs} INPs removed exactly one tuple"
        );
        eprintln!("{transport:?}: {once}/{runs} INPs removed exactly one tuple");
    }
}

#[test]
fn where_finds_a_node_by_its_identity_tuple() {
    for transport in BOTH {
        let mut sim = Sim::new(SimConfig::ideal(5));
        let [a, _b, c, _d] = square(&mut sim, transport);
        let req = sim
            .with_node(a, |n, now| {
                n.r#where(now, template(r#"("NODE", "C")"#), TIMEOUT)
            })
            .unwrap();
        assert!(sim.run_until_quiet(Time::from_millis(20_000)));
        let done = completions(&sim, a, req);
        assert_eq!(done.len(), 1, "{transport:?}");
        assert_eq!(done[0].1, Some((tuple(r#"("NODE", "C")"#), Some(c))));
        let addr = sim.addr(c);
        assert!(
            sim.node(a).neighbours().any(|(from, _)| *from == addr),
            "{transport:?}: the answer is recorded as a neighbour"
        );
    }
}

#[test]
fn request_without_match_completes_with_none_at_its_deadline() {
    for transport in BOTH {
        let mut sim = Sim::new(SimConfig::ideal(6));
        let [a, _b, _c, _d] = square(&mut sim, transport);
        sim.run_until(Time::from_millis(1_234));
        let issued = sim.now();
        let req = sim
            .with_node(a, |n, now| n.rd(now, template(r#"("NOBODY", ?)"#), TIMEOUT))
            .unwrap();
        let deadline = issued + TIMEOUT;
        sim.run_until(Time::from_millis(deadline.as_millis() - 1));
        assert!(
            completions(&sim, a, req).is_empty(),
            "{transport:?}: not before the deadline"
        );
        sim.run_until(deadline);
        let done = completions(&sim, a, req);
        assert_eq!(
            done,
            vec![(deadline, None)],
            "{transport:?}: at the deadline"
        );
        assert_eq!(sim.node(a).stats().timeouts, 1);
        assert_eq!(sim.node(a).pending_requests(), 0);
        assert!(sim.run_until_quiet(Time::from_millis(60_000)));
    }
}

#[test]
fn notify_reaches_listeners_and_is_not_stored() {
    for transport in BOTH {
        let mut sim = Sim::new(SimConfig::ideal(7));
        let [a, b, _c, d] = square(&mut sim, transport);
        let listener = sim.node_mut(b).subscribe(template(r#"("ALARM", ?)"#));
        let far = sim.node_mut(d).subscribe(template(r#"("ALARM", ?)"#));
        let t = tuple(r#"("ALARM", "smoke")"#);
        sim.with_node(a, |n, now| n.notify(now, t.clone())).unwrap();
        assert!(sim.run_until_quiet(Time::from_millis(10_000)));
        let delivered: Vec<_> = sim
            .events(b)
            .filter_map(|e| match e {
                Event::Delivered {
                    listener: l,
                    delivery,
                } => Some((*l, delivery.tuple.clone(), delivery.kind)),
                _ => None,
            })
            .collect();
        assert_eq!(
            delivered,
            vec![(listener, t.clone(), DeliveryKind::Notify)],
            "{transport:?}: once, despite BLE repeats"
        );
        assert_eq!(count(&mut sim, b, &Template::exact(&t)), 0, "not stored");
        assert!(sim.node_mut(b).host().is_empty());
        let _ = far;
        assert!(
            !sim.events(d).any(|e| matches!(e, Event::Delivered { .. })),
            "{transport:?}: out of range"
        );
    }
}

#[test]
fn out_with_lifetime_expires_at_the_receivers() {
    for transport in BOTH {
        let mut sim = Sim::new(SimConfig::ideal(17));
        let [a, b, c, _d] = square(&mut sim, transport);
        let t = tuple(r#"("EPHEMERAL", 1)"#);
        sim.with_node(a, |n, now| {
            n.out(now, t.clone(), Some(Duration::from_secs(2)))
        })
        .unwrap();
        sim.run_until(Time::from_millis(1_000));
        let exact = Template::exact(&t);
        assert_eq!(count(&mut sim, b, &exact), 1, "{transport:?}");
        // Received at ≤ 12 ms (BLE) or 1 ms (UDP): gone 2 s later, removed by the node's timer.
        sim.run_until(Time::from_millis(2_100));
        assert_eq!(count(&mut sim, b, &exact), 0, "{transport:?}");
        assert!(
            sim.node_mut(c).host().is_empty(),
            "{transport:?}: expired and removed"
        );
        assert!(sim.run_until_quiet(Time::from_millis(10_000)));
    }
}

#[test]
fn announcements_make_nodes_neighbours_with_rssi_on_ble() {
    for transport in BOTH {
        let mut sim = Sim::new(SimConfig::ideal(18));
        let mut c = cfg(transport, "A");
        c.announce_interval = Some(Duration::from_secs(2));
        let a = sim.add_node(c, (0.0, 0.0));
        let near = sim.add_node(cfg(transport, "NEAR"), (1.0, 0.0));
        let far = sim.add_node(cfg(transport, "FAR"), (20.0, 0.0));
        sim.run_until(Time::from_millis(5_000));
        for (id, d) in [(near, 1.0), (far, 20.0)] {
            let seen: Vec<_> = sim
                .timed_events(id)
                .filter_map(|(at, e)| match e {
                    Event::NeighbourSeen { identity, received } => {
                        Some((at, identity.clone(), *received))
                    }
                    _ => None,
                })
                .collect();
            // Announced at 0, 2 s and 4 s: three distinct messages.
            assert_eq!(seen.len(), 3, "{transport:?} {id}");
            for (at, identity, received) in seen {
                assert_eq!(identity, tuple(r#"("NODE", "A")"#));
                assert_eq!(received.from, sim.addr(a));
                assert_eq!(received.at, at);
                match transport {
                    Transport::Ble => {
                        let rssi = f64::from(received.rssi.expect("BLE has RSSI"));
                        let mean = sim.config().mean_rssi(d);
                        assert!((rssi - mean).abs() <= 3.5, "{rssi} dBm at {d} m");
                    }
                    Transport::Udp => assert_eq!(received.rssi, None),
                }
            }
        }
        assert!(
            !sim.run_until_quiet(Time::from_millis(8_000)),
            "announcing never ends"
        );
        assert_eq!(sim.now(), Time::from_millis(8_000));
    }
}

// --- FPE ---------------------------------------------------------------------------------------

#[test]
fn same_password_exchanges_tuples_other_key_or_none_stores_nothing() {
    for transport in BOTH {
        let mut sim = Sim::new(SimConfig::ideal(8));
        let a = sim.add_node(cfg(transport, "A").with_password("bee"), (0.0, 0.0));
        let b = sim.add_node(cfg(transport, "B").with_password("bee"), (5.0, 0.0));
        let c = sim.add_node(cfg(transport, "C").with_password("wasp"), (0.0, 5.0));
        let d = sim.add_node(cfg(transport, "D"), (5.0, 5.0));
        let t = tuple(r#"("SENSOR", "LIGHT", 512, 1.5)"#);
        sim.with_node(a, |n, now| n.out(now, t.clone(), None))
            .unwrap();
        assert!(sim.run_until_quiet(Time::from_millis(10_000)));
        assert_eq!(count(&mut sim, b, &Template::exact(&t)), 1, "{transport:?}");
        for id in [c, d] {
            assert!(sim.node_mut(id).host().is_empty(), "{transport:?} {id}");
            let s = sim.node(id).stats();
            assert!(
                s.dropped_key + s.dropped_malformed >= 1,
                "{transport:?} {id}: {s:?}"
            );
            assert_eq!(s.messages_in, 0);
        }
        // The keyed pair answers requests too.
        let req = sim
            .with_node(b, |n, now| {
                n.rd(now, template(r#"("SENSOR", ?, ?, ?)"#), TIMEOUT)
            })
            .unwrap();
        let now = sim.now();
        sim.node_mut(a).host().out(now, t.clone(), None).unwrap();
        assert!(sim.run_until_quiet(Time::from_millis(30_000)));
        assert_eq!(completions(&sim, b, req)[0].1, Some((t.clone(), Some(a))));
    }
}

#[test]
fn unkeyed_node_ignores_keyed_traffic_and_keyed_node_ignores_plain() {
    for transport in BOTH {
        let mut sim = Sim::new(SimConfig::ideal(9));
        let plain = sim.add_node(cfg(transport, "P"), (0.0, 0.0));
        let keyed = sim.add_node(cfg(transport, "K").with_password("bee"), (5.0, 0.0));
        let t = tuple(r#"("X", 1)"#);
        sim.with_node(plain, |n, now| n.out(now, t.clone(), None))
            .unwrap();
        assert!(sim.run_until_quiet(Time::from_millis(10_000)));
        assert!(sim.node_mut(keyed).host().is_empty());
        assert!(sim.node(keyed).stats().dropped_key >= 1, "{transport:?}");
    }
}

/// Spec §4: "an unkeyed space accepts only E = 0 messages. The other kind is dropped and counted
/// by the space […]; this is a filter above the decoder, not a decode error."
///
/// FAILS against the engine as of this writing: `Node::handle_frame` decodes with `key = None`,
/// the decoder rejects the message with `DecodeError::EncryptedNoKey`, and the node counts it in
/// `dropped_malformed` with `DropReason::BadFrame`/`BadDatagram`, so
/// `DropReason::KeyMismatch { encrypted: true, keyed: false }` is never reported. On BLE every
/// repeated packet of the frame is counted again (5 per frame), since the dedup check comes after
/// decoding.
#[test]
fn unkeyed_space_counts_encrypted_messages_as_key_mismatch() {
    for transport in BOTH {
        let mut sim = Sim::new(SimConfig::ideal(19));
        let a = sim.add_node(cfg(transport, "A").with_password("bee"), (0.0, 0.0));
        let plain = sim.add_node(cfg(transport, "P"), (5.0, 0.0));
        sim.with_node(a, |n, now| n.out(now, tuple(r#"("X", 1)"#), None))
            .unwrap();
        assert!(sim.run_until_quiet(Time::from_millis(10_000)));
        let s = sim.node(plain).stats();
        assert_eq!(s.dropped_malformed, 0, "{transport:?}: {s:?}");
        assert!(s.dropped_key >= 1, "{transport:?}: {s:?}");
        assert!(
            sim.events(plain).any(|e| matches!(
                e,
                Event::Dropped {
                    reason: DropReason::KeyMismatch {
                        encrypted: true,
                        keyed: false
                    },
                    ..
                }
            )),
            "{transport:?}"
        );
    }
}

// --- BLE sender scheduling ---------------------------------------------------------------------

fn ble_pair(config: SimConfig) -> (Sim, SimNodeId, SimNodeId) {
    let mut sim = Sim::new(config);
    let a = sim.add_node(cfg(Transport::Ble, "A"), (0.0, 0.0));
    let b = sim.add_node(cfg(Transport::Ble, "B"), (3.0, 0.0));
    (sim, a, b)
}

fn reading(k: i16) -> Tuple {
    tuple(&format!(r#"("SENSOR", "LIGHT", {k}, 1.5)"#))
}

#[test]
fn ble_sender_advertises_queued_frames_one_after_another_each_for_delta_t() {
    let (mut sim, a, b) = ble_pair(SimConfig::ideal(10));
    for k in 0..3 {
        sim.with_node(a, |n, now| n.out(now, reading(k), None))
            .unwrap();
    }
    assert_eq!(sim.advertising(a), 1);
    assert_eq!(sim.queue_len(a), 2);
    assert!(sim.run_until_quiet(Time::from_millis(10_000)));
    let periods: Vec<_> = sim.timeline().filter(|r| r.node == a).collect();
    assert_eq!(periods.len(), 3);
    let delta_t = sim.config().ble.delta_t;
    for (k, p) in periods.iter().enumerate() {
        assert_eq!(p.instance, 0);
        assert_eq!(p.start, Time::ZERO + delta_t * k as u32, "back to back");
        assert_eq!(p.end - p.start, delta_t);
        assert!((4..=5).contains(&p.packets), "{} packets", p.packets);
    }
    assert!(periods.windows(2).all(|w| w[0].frame < w[1].frame));
    // B stored the three readings in the order they were queued.
    let now = sim.now();
    let got: Vec<Tuple> = sim.node_mut(b).host().iter(now).cloned().collect();
    assert_eq!(got, (0..3).map(reading).collect::<Vec<_>>());
    let s = sim.stats();
    assert_eq!(s.node(a).frames_sent, 3);
    assert_eq!(s.node(a).queue_max, 2);
    assert_eq!(sim.advertising(a), 0, "empty queue: advertising stops");
}

#[test]
fn ble_sender_queue_overflow_drops_the_oldest_waiting_frame() {
    let mut config = SimConfig::ideal(11);
    config.ble.queue_capacity = 2;
    let (mut sim, a, b) = ble_pair(config);
    for k in 0..5 {
        sim.with_node(a, |n, now| n.out(now, reading(k), None))
            .unwrap();
    }
    // 0 is on air; 1 and 2 were dropped for 3 and 4.
    assert_eq!(sim.queue_len(a), 2);
    assert!(sim.run_until_quiet(Time::from_millis(10_000)));
    let s = sim.stats();
    assert_eq!((s.node(a).queue_dropped, s.node(a).queue_refused), (2, 0));
    assert_eq!(s.node(a).frames_sent, 3);
    let now = sim.now();
    let got: Vec<Tuple> = sim.node_mut(b).host().iter(now).cloned().collect();
    assert_eq!(got, vec![reading(0), reading(3), reading(4)]);
}

#[test]
fn ble_sender_queue_overflow_refuses_new_frames_under_refuse() {
    let mut config = SimConfig::ideal(12);
    config.ble.queue_capacity = 2;
    config.ble.queue_policy = QueuePolicy::Refuse;
    let (mut sim, a, b) = ble_pair(config);
    for k in 0..5 {
        sim.with_node(a, |n, now| n.out(now, reading(k), None))
            .unwrap();
    }
    assert!(sim.run_until_quiet(Time::from_millis(10_000)));
    let s = sim.stats();
    assert_eq!((s.node(a).queue_dropped, s.node(a).queue_refused), (0, 2));
    let now = sim.now();
    let got: Vec<Tuple> = sim.node_mut(b).host().iter(now).cloned().collect();
    assert_eq!(got, vec![reading(0), reading(1), reading(2)]);
}

#[test]
fn ble_two_instances_advertise_two_frames_in_parallel() {
    let mut config = SimConfig::ideal(13);
    config.ble.instances = 2;
    let (mut sim, a, b) = ble_pair(config);
    for k in 0..4 {
        sim.with_node(a, |n, now| n.out(now, reading(k), None))
            .unwrap();
    }
    assert_eq!(sim.advertising(a), 2);
    assert!(sim.run_until_quiet(Time::from_millis(10_000)));
    let mut starts: Vec<(u64, usize)> = sim
        .timeline()
        .map(|r| (r.start.as_millis(), r.instance))
        .collect();
    starts.sort_unstable();
    assert_eq!(starts, vec![(0, 0), (0, 1), (500, 0), (500, 1)]);
    assert_eq!(sim.node_mut(b).host().len(), 4);
}

#[test]
fn ble_stale_uuids_of_earlier_frames_do_not_break_decoding() {
    // Frames of 23..=33 bytes carry UUIDs; with two stale frames per sender the receiver sees up
    // to three candidates per slot and must pick by CRC (spec §6).
    let mut config = SimConfig::ideal(14);
    config.ble.stale_frames = 2;
    let (mut sim, a, b) = ble_pair(config);
    let n = 40;
    for k in 0..n {
        sim.run_for(Duration::from_millis(450));
        // 21..=31-byte messages: 1..=11 tail bytes in 1..=7 UUIDs.
        let pad = "abcdefghijklm".get(..3 + (k as usize % 11)).unwrap();
        let t = tuple(&format!(r#"("SENSOR", "LIGHT", {k}, "{pad}")"#));
        sim.with_node(a, |node, now| node.out(now, t, None))
            .unwrap();
    }
    assert!(sim.run_until_quiet(Time::from_millis(60_000)));
    let s = sim.stats();
    let link = s.link(a, b).unwrap();
    assert_eq!(link.frames_sent, n);
    // An ambiguous frame is dropped (never guessed) but its later packets may still decode.
    assert!(link.frames_accepted >= n - 1, "{link:?}");
    assert_eq!(sim.node_mut(b).host().len() as u64, link.frames_accepted);
}

#[test]
fn lossy_ble_fig8_setup_receives_about_eighty_percent() {
    // Paper Fig. 8: four mobile senders, one receiver a few metres away, Δt = 500 ms.
    let mut sim = Sim::new(SimConfig::new(15));
    let rx = sim.add_node(cfg(Transport::Ble, "RX"), (0.0, 0.0));
    let senders: Vec<_> = (0..4)
        .map(|i| {
            let angle = f64::from(i) * std::f64::consts::FRAC_PI_2;
            sim.add_node(
                cfg(Transport::Ble, &format!("S{i}")),
                (3.0 * angle.cos(), 3.0 * angle.sin()),
            )
        })
        .collect();
    // Each sender queues a reading every Δt, at its own phase (devices are not synchronised).
    for round in 0..40i16 {
        for (i, &s) in senders.iter().enumerate() {
            sim.run_until(Time::from_millis(500 * round as u64 + 120 * i as u64));
            let t = tuple(&format!(r#"("SENSOR", "LIGHT", {i}, {round}.5)"#));
            sim.with_node(s, |n, now| n.out(now, t, None)).unwrap();
        }
    }
    sim.run_until_quiet(Time::from_millis(60_000));
    let s = sim.stats();
    for &snd in &senders {
        let l = s.link(snd, rx).unwrap();
        assert_eq!(l.frames_sent, 40);
        assert!(
            (0.65..=0.95).contains(&l.delivery_ratio()),
            "{snd}: {:.2}",
            l.delivery_ratio()
        );
    }
}

// --- robustness ----------------------------------------------------------------------------------

/// One operation of the property test.
#[derive(Clone, Debug)]
enum Op2 {
    /// Node `from` broadcasts a unique tuple.
    Out { from: usize },
    /// Node `from` asks for any unique tuple (RD or INP).
    Ask { from: usize, take: bool },
    /// Let time pass.
    Wait { ms: u64 },
}

fn op2() -> impl Strategy<Value = Op2> {
    prop_oneof![
        4 => (0..4usize).prop_map(|from| Op2::Out { from }),
        2 => (0..4usize, any::<bool>()).prop_map(|(from, take)| Op2::Ask { from, take }),
        2 => (1..800u64).prop_map(|ms| Op2::Wait { ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Under 30 % loss, duplication and reordering no message is applied twice, the dedup cache
    /// stays within its bound, and every request completes (tuple or none) by its deadline.
    #[test]
    fn lossy_medium_applies_each_message_once_and_completes_every_request(
        seed in any::<u64>(),
        ble in any::<bool>(),
        instances in 1..=2usize,
        stale_frames in 0..=3usize,
        ops in proptest::collection::vec(op2(), 1..24),
    ) {
        let transport = if ble { Transport::Ble } else { Transport::Udp };
        let mut config = SimConfig::new(seed);
        config.ble.instances = instances;
        config.ble.stale_frames = stale_frames;
        config.loss = 0.3;
        config.duplicate = 0.3;
        config.jitter = Duration::from_millis(250);
        let mut sim = Sim::new(config);
        let dedup_capacity = 64;
        let ids: Vec<SimNodeId> = (0..4)
            .map(|i| {
                let mut c = cfg(transport, &format!("N{i}"));
                c.dedup_capacity = dedup_capacity;
                sim.add_node(c, (3.0 * i as f64, 0.0))
            })
            .collect();
        let timeout = Duration::from_secs(3);
        let mut requests: Vec<(SimNodeId, RequestId, Time)> = Vec::new();
        let mut next = 0i16;
        for op in ops {
            match op {
                Op2::Out { from } => {
                    let t = tuple(&format!(r#"("U", {next})"#));
                    next += 1;
                    sim.with_node(ids[from], |n, now| n.out(now, t, None)).unwrap();
                }
                Op2::Ask { from, take } => {
                    let t = template(r#"("U", ?int16)"#);
                    let issued = sim.now();
                    let req = sim.with_node(ids[from], |n, now| {
                        if take { n.inp(now, t, timeout) } else { n.rd(now, t, timeout) }
                    }).unwrap();
                    requests.push((ids[from], req, issued + timeout));
                }
                Op2::Wait { ms } => sim.run_for(Duration::from_millis(ms)),
            }
            for &id in &ids {
                prop_assert!(sim.node(id).dedup_len() <= dedup_capacity);
            }
        }
        sim.run_for(timeout + Duration::from_secs(2));
        for &id in &ids {
            prop_assert!(sim.node(id).dedup_len() <= dedup_capacity);
            for k in 0..next {
                let exact = Template::exact(&tuple(&format!(r#"("U", {k})"#)));
                prop_assert!(count(&mut sim, id, &exact) <= 1, "{id} holds U{k} twice");
            }
            let s = sim.node(id).stats();
            prop_assert!(s.stored <= u64::from(next.unsigned_abs()));
        }
        let mut done: HashMap<(SimNodeId, RequestId), Vec<Time>> = HashMap::new();
        for &id in &ids {
            for (at, e) in sim.timed_events(id) {
                if let Event::Completed { id: req, op, .. } = e {
                    prop_assert!(matches!(op, Op::Rd | Op::Inp));
                    done.entry((id, *req)).or_default().push(at);
                }
            }
        }
        for (id, req, deadline) in &requests {
            let at = done.get(&(*id, *req)).cloned().unwrap_or_default();
            prop_assert_eq!(at.len(), 1, "{} request {:?} completed {:?}", id, req, at);
            prop_assert!(at[0] <= *deadline, "completed at {:?} after {:?}", at[0], deadline);
        }
        // Each distinct frame is processed at most once; its other copies are counted duplicates.
        let stats = sim.stats();
        let (mut repeats, mut dups) = (0, 0);
        for &id in &ids {
            let s = sim.node(id).stats();
            let m = stats.node(id);
            prop_assert!(s.messages_in <= m.frames_accepted, "{}: {:?} {:?}", id, s, m);
            repeats += m.packets_received - m.frames_received;
            dups += s.duplicates;
        }
        prop_assert!(repeats < 8 || dups > 0, "{} repeated deliveries, no duplicates counted", repeats);
    }
}

#[test]
fn dedup_cache_stays_within_its_bound_under_a_flood() {
    for transport in BOTH {
        let mut config = SimConfig::ideal(16);
        config.duplicate = 0.5;
        let mut sim = Sim::new(config);
        let mut c = cfg(transport, "RX");
        c.dedup_capacity = 8;
        let rx = sim.add_node(c, (0.0, 0.0));
        let tx = sim.add_node(cfg(transport, "TX"), (1.0, 0.0));
        for k in 0..100 {
            let t = tuple(&format!(r#"("F", {k})"#));
            sim.with_node(tx, |n, now| n.out(now, t, None)).unwrap();
            sim.run_for(Duration::from_millis(10));
            assert!(sim.node(rx).dedup_len() <= 8);
        }
        sim.run_until_quiet(Time::from_millis(120_000));
        assert!(sim.node(rx).dedup_len() <= 8);
        assert!(sim.node(rx).stats().duplicates > 0, "{transport:?}");
    }
}

// --- determinism ---------------------------------------------------------------------------------

fn busy_run(seed: u64) -> (beets_core::sim::SimStats, Vec<Vec<Event>>) {
    let mut config = SimConfig::new(seed);
    config.loss = 0.1;
    config.duplicate = 0.1;
    config.jitter = Duration::from_millis(50);
    let mut sim = Sim::new(config);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(sim.add_node(
            cfg(Transport::Ble, &format!("B{i}")),
            (4.0 * f64::from(i), 0.0),
        ));
        ids.push(sim.add_node(
            cfg(Transport::Udp, &format!("U{i}")),
            (4.0 * f64::from(i), 1.0),
        ));
    }
    for round in 0..20i16 {
        for (k, &id) in ids.iter().enumerate() {
            let t = tuple(&format!(r#"("R", {k}, {round})"#));
            sim.with_node(id, |n, now| n.out(now, t, None)).unwrap();
        }
        let asker = ids[round as usize % ids.len()];
        sim.with_node(asker, |n, now| {
            n.inp(now, template(r#"("R", ?, ?)"#), TIMEOUT)
        })
        .unwrap();
        sim.run_for(Duration::from_millis(700));
    }
    sim.run_until(Time::from_millis(60_000));
    let events = ids.iter().map(|&id| sim.take_events(id)).collect();
    (sim.stats(), events)
}

#[test]
fn same_seed_same_run() {
    let (s1, e1) = busy_run(42);
    let (s2, e2) = busy_run(42);
    assert_eq!(s1, s2);
    assert_eq!(e1, e2);
    assert!(s1.medium.delivered > 0);
    let (s3, _) = busy_run(43);
    assert_ne!(s1, s3, "another seed gives another run");
}

// --- requests that wait (spec §11) -------------------------------------------------------------

/// The issue's scenario on both media: a mobile's `rd` with a 10 s timeout (so a 10 s wait) is
/// sent before the beacon holds a match; a sensor's OUT reaches the beacon 3 s later and the
/// beacon answers within its back-off (BLE: Δt of back-off plus the frame's time on the air).
#[test]
fn a_waiting_rd_is_answered_when_the_tuple_arrives_later() {
    for transport in BOTH {
        let mut sim = Sim::new(SimConfig::ideal(21));
        let mobile = sim.add_node(cfg(transport, "mobile"), (0.0, 0.0));
        let beacon = sim.add_node(cfg(transport, "beacon"), (10.0, 0.0));
        let req = sim
            .with_node(mobile, |n, now| {
                n.rd(now, template(r#"("LIGHT", ?)"#), Duration::from_secs(10))
            })
            .unwrap();
        sim.run_until(Time::from_millis(3000));
        assert_eq!(sim.node_mut(beacon).waiting_requests(), 1, "{transport:?}");
        assert!(completions(&sim, mobile, req).is_empty());
        // The tuple reaches the beacon's space at 3 s (stored through the node).
        sim.with_node(beacon, |n, now| {
            n.host_out(now, tuple(r#"("LIGHT", 300)"#), None)
        })
        .unwrap();
        let backoff = sim.node_mut(beacon).config().reply_backoff;
        assert!(sim.run_until_quiet(Time::from_millis(20_000)));
        let done = completions(&sim, mobile, req);
        assert_eq!(done.len(), 1, "{transport:?}: {done:?}");
        assert_eq!(
            done[0].1,
            Some((tuple(r#"("LIGHT", 300)"#), Some(beacon))),
            "{transport:?}"
        );
        // Within the back-off plus one advertising period (BLE) after the store.
        let bound = Time::from_millis(3000) + backoff + Duration::from_millis(600);
        assert!(
            done[0].0 <= bound,
            "{transport:?}: {:?} > {bound:?}",
            done[0].0
        );
        assert_eq!(sim.node_mut(beacon).waiting_requests(), 0);
    }
}

/// Two waiting INPs from two mobiles and one OUT: one reply on the air, one tuple removed.
#[test]
fn two_waiting_inps_and_one_out_give_one_answer() {
    for transport in BOTH {
        let mut sim = Sim::new(SimConfig::ideal(22));
        let m1 = sim.add_node(cfg(transport, "m1"), (0.0, 0.0));
        let m2 = sim.add_node(cfg(transport, "m2"), (0.0, 10.0));
        let beacon = sim.add_node(cfg(transport, "beacon"), (10.0, 0.0));
        let sensor = sim.add_node(cfg(transport, "sensor"), (10.0, 10.0));
        for m in [m1, m2] {
            sim.with_node(m, |n, now| {
                n.inp(now, template("(\"JOB\", ?)"), Duration::from_secs(10))
            })
            .unwrap();
            sim.run_for(Duration::from_millis(1500));
        }
        assert_eq!(sim.node_mut(beacon).waiting_requests(), 2, "{transport:?}");
        sim.with_node(sensor, |n, now| n.out(now, tuple("(\"JOB\", 1)"), None))
            .unwrap();
        assert!(sim.run_until_quiet(Time::from_millis(30_000)));
        let (b, s) = (sim.node_mut(beacon).stats(), sim.node_mut(sensor).stats());
        assert_eq!(b.stored, 1, "{transport:?}");
        // The sensor too heard both INPs and stores nothing itself; only the beacon answers.
        assert_eq!((b.replies_sent, s.replies_sent), (1, 0), "{transport:?}");
        assert_eq!(count(&mut sim, beacon, &template("(\"JOB\", ?)")), 0);
    }
}
