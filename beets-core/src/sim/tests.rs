//! Unit tests of the medium itself; multi-node protocol scenarios are in `tests/sim_nodes.rs`.

use super::*;
use crate::tuple::{Template, Tuple};

fn ble(name: &str) -> NodeConfig {
    NodeConfig::new(Transport::Ble, name).unwrap()
}

fn udp(name: &str) -> NodeConfig {
    NodeConfig::new(Transport::Udp, name).unwrap()
}

fn reading(i: i16) -> Tuple {
    format!("(\"SENSOR\", \"LIGHT\", {i}, 1.5)")
        .parse()
        .unwrap()
}

#[test]
fn reception_probability_falls_with_distance() {
    let c = SimConfig::new(0);
    assert!((c.ble_reception_probability(0.0) - c.ble.p0).abs() < 1e-12);
    let near = c.ble_reception_probability(5.0);
    let far = c.ble_reception_probability(25.0);
    assert!(near > far && far > 0.0);
    assert_eq!(c.ble_reception_probability(30.0), 0.0);
    assert_eq!(c.ble_reception_probability(31.0), 0.0);
    assert_eq!(c.ble_reception_probability(f64::NAN), 0.0);
    let ideal = SimConfig::ideal(0);
    assert_eq!(ideal.ble_reception_probability(29.9), 1.0);
    assert_eq!(ideal.ble_reception_probability(30.0), 1.0);
    assert_eq!(ideal.ble_reception_probability(30.1), 0.0);
}

#[test]
fn rssi_follows_log_distance() {
    let c = SimConfig::new(0);
    assert_eq!(c.mean_rssi(1.0), -59.0);
    assert!((c.mean_rssi(10.0) - -79.0).abs() < 1e-9);
    assert!(c.mean_rssi(0.0).is_finite());
}

#[test]
fn addresses_are_fake_and_distinct() {
    let mut sim = Sim::new(SimConfig::ideal(1));
    let a = sim.add_node(ble("a"), (0.0, 0.0));
    let b = sim.add_node(udp("b"), (0.0, 0.0));
    assert_eq!(sim.addr(a), PeerAddr::Ble([0xC0, 0xBE, 0x75, 0, 0, 1]));
    assert_eq!(
        sim.addr(b),
        PeerAddr::Ip("127.0.0.2:49737".parse().unwrap())
    );
    assert_eq!(sim.id_of(sim.addr(b)), Some(b));
    assert_eq!(sim.len(), 2);
}

#[test]
fn ble_frame_is_advertised_for_delta_t_with_packets_every_interval() {
    let mut sim = Sim::new(SimConfig::ideal(3));
    let a = sim.add_node(ble("a"), (0.0, 0.0));
    let b = sim.add_node(ble("b"), (1.0, 0.0));
    sim.with_node(a, |n, now| n.out(now, reading(1), None))
        .unwrap();
    assert_eq!(sim.advertising(a), 1);
    assert!(sim.run_until_quiet(Time::from_millis(5_000)));
    let t: Vec<_> = sim.timeline().collect();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].end - t[0].start, Duration::from_millis(500));
    // 500 ms at 100 ms + 0..=10 ms: 5 packets (first within 10 ms, then ≤ 110 ms apart).
    assert!((4..=5).contains(&t[0].packets), "{}", t[0].packets);
    let s = sim.stats();
    assert_eq!(s.node(a).packets_sent, u64::from(t[0].packets));
    let l = s.link(a, b).unwrap();
    assert_eq!(
        (l.frames_sent, l.frames_received, l.frames_accepted),
        (1, 1, 1)
    );
    assert_eq!(l.packets_received, u64::from(t[0].packets));
    assert_eq!(sim.node(b).stats().duplicates, l.packets_received - 1);
}

#[test]
fn out_of_range_hears_nothing() {
    let mut sim = Sim::new(SimConfig::ideal(3));
    let a = sim.add_node(udp("a"), (0.0, 0.0));
    let b = sim.add_node(udp("b"), (100.0, 0.0));
    sim.with_node(a, |n, now| n.out(now, reading(1), None))
        .unwrap();
    sim.run_until_quiet(Time::from_millis(1_000));
    assert_eq!(sim.node(b).stats().frames_in, 0);
    assert_eq!(
        sim.node(a).stats().dropped_own,
        1,
        "loopback reaches the sender"
    );
    assert_eq!(sim.stats().link(a, b).unwrap().frames_sent, 1);
}

#[test]
fn stale_uuids_linger_and_order_is_lost() {
    let mut sim = Sim::new(SimConfig::ideal(5));
    let a = sim.add_node(ble("a"), (0.0, 0.0));
    let _b = sim.add_node(ble("b"), (0.0, 0.0));
    let x: BleAdvertisement = crate::ble::pack(1, &[0x48; 24]).unwrap();
    let y: BleAdvertisement = crate::ble::pack(2, &[0x49; 24]).unwrap();
    let z: BleAdvertisement = crate::ble::pack(3, &[0x4a; 24]).unwrap();
    assert_eq!(sim.seen_uuids(1, a.0, &x).len(), x.service_uuids.len());
    let seen = sim.seen_uuids(1, a.0, &y);
    let mut want: Vec<u16> = x
        .service_uuids
        .iter()
        .chain(&y.service_uuids)
        .copied()
        .collect();
    want.sort_unstable();
    want.dedup();
    let mut got = seen.clone();
    got.sort_unstable();
    assert_eq!(got, want);
    // One stale frame by default: x is gone once z arrives.
    let seen = sim.seen_uuids(1, a.0, &z);
    assert!(y.service_uuids.iter().all(|u| seen.contains(u)));
    assert!(
        x.service_uuids.iter().all(|u| !seen.contains(u)
            || y.service_uuids.contains(u)
            || z.service_uuids.contains(u))
    );
}

#[test]
fn collisions_cost_packets_when_many_advertise() {
    let mut cfg = SimConfig::ideal(9);
    cfg.ble.collision_loss = 1.0;
    cfg.ble.air_time = Duration::from_millis(5);
    let mut sim = Sim::new(cfg);
    let senders: Vec<_> = (0..8)
        .map(|i| sim.add_node(ble(&format!("s{i}")), (1.0, i as f64)))
        .collect();
    let _rx = sim.add_node(ble("rx"), (0.0, 0.0));
    for (i, &s) in senders.iter().enumerate() {
        for k in 0..4 {
            sim.with_node(s, |n, now| n.out(now, reading((i * 10 + k) as i16), None))
                .unwrap();
        }
    }
    sim.run_until_quiet(Time::from_millis(10_000));
    assert!(sim.stats().medium.lost_collision > 0);
}

#[test]
fn spinning_engine_is_bounded() {
    // A healthy engine never spins; the counter stays 0 through a busy run.
    let mut sim = Sim::new(SimConfig::new(11));
    let a = sim.add_node(ble("a"), (0.0, 0.0));
    let _b = sim.add_node(ble("b"), (3.0, 0.0));
    let t: Template = "(\"SENSOR\", ?, ?, ?)".parse().unwrap();
    sim.with_node(a, |n, now| n.rd(now, t, Duration::from_secs(2)))
        .unwrap();
    sim.run_until(Time::from_millis(3_000));
    assert_eq!(sim.stats().medium.timer_spins, 0);
}

#[test]
fn frame_tracks_are_released() {
    let mut cfg = SimConfig::new(13);
    cfg.duplicate = 0.5;
    cfg.jitter = Duration::from_millis(200);
    let mut sim = Sim::new(cfg);
    let a = sim.add_node(ble("a"), (0.0, 0.0));
    let _b = sim.add_node(ble("b"), (2.0, 0.0));
    let c = sim.add_node(udp("c"), (0.0, 0.0));
    let _d = sim.add_node(udp("d"), (2.0, 0.0));
    for k in 0..5 {
        sim.with_node(a, |n, now| n.out(now, reading(k), None))
            .unwrap();
        sim.with_node(c, |n, now| n.out(now, reading(k), None))
            .unwrap();
    }
    assert!(sim.run_until_quiet(Time::from_millis(60_000)));
    assert!(
        sim.frames.is_empty(),
        "{} frames still tracked",
        sim.frames.len()
    );
}

#[test]
fn runs_are_bounded_by_the_step_budget() {
    let mut cfg = SimConfig::ideal(17);
    cfg.max_steps_per_run = 3;
    let mut sim = Sim::new(cfg);
    let a = sim.add_node(ble("a"), (0.0, 0.0));
    let _b = sim.add_node(ble("b"), (1.0, 0.0));
    sim.with_node(a, |n, now| n.out(now, reading(1), None))
        .unwrap();
    assert!(!sim.run_until_quiet(Time::from_millis(5_000)));
    sim.run_until(Time::from_millis(5_000));
    assert!(sim.now() < Time::from_millis(5_000));
    let m = sim.stats().medium;
    assert_eq!((m.steps, m.step_limit_hits), (6, 2));
}

#[test]
fn stats_print_as_a_fig8_table() {
    let mut sim = Sim::new(SimConfig::ideal(19));
    let a = sim.add_node(udp("a"), (0.0, 0.0));
    let _b = sim.add_node(udp("b"), (1.0, 0.0));
    let _c = sim.add_node(ble("c"), (1.0, 0.0));
    for k in 0..4 {
        sim.with_node(a, |n, now| n.out(now, reading(k), None))
            .unwrap();
    }
    sim.run_until(Time::from_millis(2_000));
    let s = sim.stats();
    assert_eq!(s.links.len(), 2, "UDP a↔b only: transports do not mix");
    assert_eq!(s.delivered_per_sec(), 2.0);
    assert_eq!(s.reception_ratio(), 1.0);
    let text = s.to_string();
    assert!(text.lines().next().unwrap().contains("recv%"), "{text}");
    assert!(
        text.contains("     0      1        4        4        4  100.0%  100.0%"),
        "{text}"
    );
    assert!(text.ends_with("2.0 s simulated, 2.00 distinct frames delivered/s, reception 100.0%"));
}

#[test]
fn stale_uuid_model_grows_until_forgotten_and_bounds_what_it_keeps() {
    let t = Time::from_millis;
    let mut dev = StaleUuids::new();
    let bluez = StaleUuidConfig::BLUEZ;
    // BlueZ as it is: every frame's UUIDs stay, merged and sorted.
    assert_eq!(dev.hear(t(0), &[0x2003, 0x0001], &bluez), [0x0001, 0x2003]);
    assert_eq!(dev.hear(t(1), &[], &bluez), [0x0001, 0x2003]);
    assert_eq!(dev.hear(t(2), &[0x0002], &bluez), [0x0001, 0x0002, 0x2003]);
    assert_eq!(
        dev.hear(t(3), &[0x0001, 0x2003], &bluez),
        [0x0001, 0x0002, 0x2003]
    );
    // More distinct frames than it remembers: the oldest go.
    for k in 0..200u16 {
        dev.hear(t(4 + u64::from(k)), &[0x4000 + k], &bluez);
    }
    let seen = dev.hear(t(300), &[0x6000], &bluez);
    assert_eq!(seen.len(), MAX_REMEMBERED_FRAMES + 1);
    assert!(!seen.contains(&0x0001));
    dev.forget();
    assert!(dev.is_empty());
    assert_eq!(dev.hear(t(301), &[0x6001], &bluez), [0x6001]);
    // A TTL drops sets not heard for longer than it.
    let ttl = StaleUuidConfig {
        frames: 4,
        ttl: Duration::from_secs(1),
    };
    let mut dev = StaleUuids::new();
    dev.hear(t(0), &[0x0001], &ttl);
    assert_eq!(dev.hear(t(1_000), &[0x0002], &ttl), [0x0001, 0x0002]);
    assert_eq!(dev.hear(t(1_500), &[0x0003], &ttl), [0x0002, 0x0003]);
    // Off: exactly the frame's own.
    assert_eq!(
        dev.hear(t(1_600), &[0x0004], &StaleUuidConfig::NONE),
        [0x0004]
    );
}
