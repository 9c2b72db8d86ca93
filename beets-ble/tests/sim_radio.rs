//! Tier 1: BLE nodes on the simulated radio, with the real scheduler and scanner bookkeeping.

use std::time::Duration;

use beets_ble::sim::{SimAir, SimAirConfig};
use beets_ble::{BleConfig, BleNode, QueuePolicy};
use beets_core::driver::ClientError;
use beets_core::node::{Node, NodeConfig, Transport};
use beets_core::{PeerAddr, Template, Time, Tuple};
use tokio::time::Instant;

const A: [u8; 6] = [0xC0, 0xBE, 0x75, 0, 0, 1];
const B: [u8; 6] = [0xC0, 0xBE, 0x75, 0, 0, 2];

fn node(name: &str, seed: u64) -> Node {
    Node::new(
        NodeConfig::new(Transport::Ble, name).unwrap(),
        seed,
        Time::ZERO,
    )
}

fn tuple(s: &str) -> Tuple {
    s.parse().unwrap()
}

fn template(s: &str) -> Template {
    s.parse().unwrap()
}

fn pair(air: &SimAir, cfg: &BleConfig) -> (BleNode, BleNode) {
    (
        air.spawn_node("a", node("a", 1), A, cfg),
        air.spawn_node("b", node("b", 2), B, cfg),
    )
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn two_nodes_exchange_out_rd_inp_test_notify() {
    let air = SimAir::new(SimAirConfig::default());
    let (a, b) = pair(&air, &BleConfig::default());
    let (sa, sb) = (a.handle(), b.handle());
    let mut notes = sb.subscribe(template(r#"("NOTE", ?)"#), 8).await.unwrap();

    // out: b stores a's tuple.
    sa.out(tuple(r#"("SENSOR", "LIGHT", 512)"#), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        sb.host_count(template(r#"("SENSOR", ?, ?)"#))
            .await
            .unwrap(),
        1
    );

    // rd: b answers with a copy and keeps it.
    let (got, how) = sa
        .rd(
            template(r#"("SENSOR", "LIGHT", ?int16)"#),
            Duration::from_secs(3),
        )
        .await
        .unwrap()
        .expect("b answers rd");
    assert_eq!(got, tuple(r#"("SENSOR", "LIGHT", 512)"#));
    assert_eq!(how.from, PeerAddr::Ble(B));
    assert_eq!(how.rssi, Some(-60));
    assert_eq!(
        sb.host_count(template(r#"("SENSOR", ?, ?)"#))
            .await
            .unwrap(),
        1
    );

    // test: answered with a copy too.
    assert!(
        sa.test(template(r#"("SENSOR", ?, ?)"#), Duration::from_secs(3))
            .await
            .unwrap()
            .is_some()
    );

    // inp: b gives the tuple away.
    let (taken, _) = sa
        .inp(template(r#"("SENSOR", ?, ?)"#), Duration::from_secs(3))
        .await
        .unwrap()
        .expect("b answers inp");
    assert_eq!(taken, tuple(r#"("SENSOR", "LIGHT", 512)"#));
    assert_eq!(
        sb.host_count(template(r#"("SENSOR", ?, ?)"#))
            .await
            .unwrap(),
        0
    );

    // Nothing left: rd times out with none.
    let none = sa
        .rd(template(r#"("SENSOR", ?, ?)"#), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(none, None);

    // notify: delivered to b's listener, not stored.
    sa.notify(tuple(r#"("NOTE", "hello")"#)).await.unwrap();
    let note = tokio::time::timeout(Duration::from_secs(2), notes.recv())
        .await
        .expect("notification in time");
    let note = note.expect("a delivery");
    assert_eq!(note.tuple, tuple(r#"("NOTE", "hello")"#));
    assert!(note.rssi.is_some(), "BLE deliveries carry the RSSI");
    assert_eq!(sb.host_count(template(r#"("NOTE", ?)"#)).await.unwrap(), 0);

    // Each frame was decoded once by the engine; every repeat was absorbed by dedup.
    let eb = sb.stats().await.unwrap().node;
    assert_eq!(eb.dropped_malformed, 0);
    assert!(eb.duplicates > 0, "packets every 100 ms repeat each frame");
    let ble = b.stats();
    assert!(ble.scan.forgets >= 1);
    assert_eq!(ble.radio.start_errors, 0);
    let _ = a.close().await;
    let _ = b.close().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn scheduler_rotates_queued_frames_every_delta_t() {
    let air = SimAir::new(SimAirConfig::default());
    let cfg = BleConfig {
        delta_t: Duration::from_millis(300),
        ..BleConfig::default()
    };
    let (a, b) = pair(&air, &cfg);
    let mut rx = b
        .handle()
        .subscribe(template("(?int16)"), 16)
        .await
        .unwrap();
    let t0 = Instant::now();
    for i in 0..4 {
        a.handle()
            .out(tuple(&format!("({i})")), None)
            .await
            .unwrap();
    }
    let mut arrivals = Vec::new();
    for i in 0..4 {
        let got = tokio::time::timeout(Duration::from_secs(3), rx.recv())
            .await
            .unwrap()
            .unwrap()
            .tuple;
        assert_eq!(got, tuple(&format!("({i})")), "frames go on air in order");
        arrivals.push(t0.elapsed().as_millis());
    }
    // One instance: frame k goes on air at k·Δt and is heard within one advertising interval.
    for (k, ms) in arrivals.iter().enumerate() {
        let start = 300 * k as u128;
        assert!(
            (start..start + 110).contains(ms),
            "frame {k} arrived at {ms} ms, expected within 110 ms of {start} ms ({arrivals:?})"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let st = a.stats();
    assert_eq!(st.scheduler.started, 4);
    assert_eq!(st.scheduler.idled, 1);
    assert_eq!((st.queue_len, st.instances), (0, 1));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn several_instances_advertise_in_parallel() {
    let air = SimAir::new(SimAirConfig {
        instances: 3,
        ..SimAirConfig::default()
    });
    let (a, b) = pair(&air, &BleConfig::default());
    assert_eq!(a.stats().instances, 3);
    let mut rx = b
        .handle()
        .subscribe(template("(?int16)"), 16)
        .await
        .unwrap();
    let t0 = Instant::now();
    for i in 0..3 {
        a.handle()
            .out(tuple(&format!("({i})")), None)
            .await
            .unwrap();
    }
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .unwrap()
            .unwrap();
    }
    assert!(
        t0.elapsed() < Duration::from_millis(120),
        "three instances carry three frames within one interval, took {:?}",
        t0.elapsed()
    );
    // max_instances caps what is used.
    let capped = air.spawn_node(
        "c",
        node("c", 3),
        [0xC0, 0xBE, 0x75, 0, 0, 3],
        &BleConfig {
            max_instances: 2,
            ..BleConfig::default()
        },
    );
    assert_eq!(capped.stats().instances, 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn full_queue_drops_the_oldest_waiting_frame() {
    let air = SimAir::new(SimAirConfig::default());
    let cfg = BleConfig {
        queue_capacity: 2,
        queue_policy: QueuePolicy::DropOldest,
        ..BleConfig::default()
    };
    let (a, b) = pair(&air, &cfg);
    let mut rx = b
        .handle()
        .subscribe(template("(?int16)"), 16)
        .await
        .unwrap();
    for i in 0..6 {
        a.handle()
            .out(tuple(&format!("({i})")), None)
            .await
            .unwrap();
    }
    // Each `out` returns once its frame is in the scheduler; the advertiser may put the first
    // on air at once, the rest wait in 2 places, each newcomer dropping the oldest waiting one:
    // the last two are always advertised, and every frame is either advertised or dropped.
    let mut got = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
        got.push(d.tuple);
    }
    assert!(got.ends_with(&[tuple("(4)"), tuple("(5)")]), "{got:?}");
    let st = a.stats().scheduler;
    assert_eq!((st.queued, st.refused), (6, 0));
    assert_eq!(st.started as usize, got.len());
    assert_eq!(st.started + st.dropped_oldest, 6);
    assert_eq!(a.handle().stats().await.unwrap().send_errors, 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn full_queue_refuses_new_frames_with_refuse_policy() {
    let air = SimAir::new(SimAirConfig::default());
    let cfg = BleConfig {
        queue_capacity: 2,
        queue_policy: QueuePolicy::Refuse,
        ..BleConfig::default()
    };
    let (a, b) = pair(&air, &cfg);
    let mut rx = b
        .handle()
        .subscribe(template("(?int16)"), 16)
        .await
        .unwrap();
    // Each `out` returns once the scheduler took its frame or refused it, and says which: the
    // queue's 2 places (plus the instance the advertiser may already have given the first frame)
    // take the first frames, the rest are refused with the reason. Δt has not passed, so no
    // place has come free in between.
    let mut accepted = Vec::new();
    for i in 0..6 {
        let t = tuple(&format!("({i})"));
        match a.handle().out(t.clone(), None).await {
            Ok(()) => {
                assert_eq!(accepted.len(), i, "a refusal came before an acceptance");
                accepted.push(t);
            }
            Err(err) => {
                assert!(matches!(err, ClientError::Refused(_)), "{err}");
                assert!(err.to_string().contains("queue"), "{err}");
            }
        }
    }
    assert!((2..=3).contains(&accepted.len()), "{accepted:?}");
    let mut got = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
        got.push(d.tuple);
    }
    assert_eq!(got, accepted, "exactly the accepted frames were advertised");
    let st = a.stats().scheduler;
    let refused = 6 - accepted.len() as u64;
    assert_eq!((st.refused, st.dropped_oldest), (refused, 0));
    // The engine's driver counted the refusals as send errors too.
    assert_eq!(a.handle().stats().await.unwrap().send_errors, refused);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn lossy_air_and_lost_scan_responses_still_decode_each_frame_once() {
    let air = SimAir::new(SimAirConfig {
        seed: 42,
        packet_loss: 0.3,
        scan_response_loss: 0.3,
        ..SimAirConfig::default()
    });
    let (a, b) = pair(&air, &BleConfig::default());
    let mut rx = b
        .handle()
        .subscribe(template(r#"("R", ?, ?)"#), 64)
        .await
        .unwrap();
    let n = 20;
    for i in 0..n {
        // 27-byte messages: the tail rides in UUIDs, so name/UUID mixtures are exercised.
        a.handle()
            .out(tuple(&format!(r#"("R", "reading-number", {i})"#)), None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut got = Vec::new();
    while let Ok(d) = rx.try_recv() {
        got.push(d.tuple);
    }
    let distinct: std::collections::BTreeSet<_> = got.iter().map(ToString::to_string).collect();
    assert_eq!(distinct.len(), got.len(), "no frame delivered twice");
    assert!(
        got.len() >= 18,
        "5 packets per frame at 30 % loss: got {}",
        got.len()
    );
    let eb = b.handle().stats().await.unwrap().node;
    assert_eq!(eb.messages_in as usize, got.len());
    assert!(air.stats().scan_responses_lost > 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn close_withdraws_every_advertisement() {
    let air = SimAir::new(SimAirConfig::default());
    let (a, b) = pair(&air, &BleConfig::default());
    a.handle().out(tuple("(1)"), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stats = a.close().await.expect("driver stats");
    assert_eq!(stats.node.transmits, 1);
    let sent = air.stats().packets_sent;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(air.stats().packets_sent, sent, "no packet after close");
    drop(b);
}

/// A node built for UDP is refused with a typed error before anything starts (it used to run,
/// and every frame it made failed as an I/O error while `out` returned Ok).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_udp_node_is_refused_with_a_typed_error() {
    use beets_ble::{ReceiveOnly, Reception, SpawnError};

    let udp = || {
        Node::new(
            NodeConfig::new(Transport::Udp, "udp").unwrap(),
            7,
            Time::ZERO,
        )
    };
    let refused = BleNode::spawn(
        "udp",
        udp(),
        &BleConfig::default(),
        ReceiveOnly,
        Reception::none(),
    );
    assert_eq!(
        refused.unwrap_err(),
        SpawnError::WrongTransport(Transport::Udp)
    );
    let air = SimAir::new(SimAirConfig::default());
    let err = air
        .try_spawn_node("udp", udp(), A, &BleConfig::default())
        .unwrap_err();
    assert_eq!(err, SpawnError::WrongTransport(Transport::Udp));
    assert!(err.to_string().contains("Transport::Ble"), "{err}");
    // The medium was not joined: a BLE node alone on it hears nothing and sends to no one.
    let b = air.spawn_node("b", node("b", 2), B, &BleConfig::default());
    b.handle().out(tuple("(1)"), None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.stats().radio.stops < 1 {
        assert!(Instant::now() < deadline, "b's frame never left the air");
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    let st = air.stats();
    assert!(st.packets_sent > 0, "{st:?}");
    assert_eq!(st.delivered, 0, "nobody else is on the air: {st:?}");
    b.close().await;
}

/// Outside a tokio runtime the refusal is an error too, not a panic.
#[test]
fn spawn_outside_a_runtime_is_an_error() {
    let err = BleNode::spawn(
        "a",
        node("a", 1),
        &BleConfig::default(),
        beets_ble::ReceiveOnly,
        beets_ble::Reception::none(),
    )
    .unwrap_err();
    assert_eq!(err, beets_ble::SpawnError::NoRuntime);
}

/// Sealed spaces on the simulated air (spec §12 on BLE): key holders exchange an OUT and an RD
/// through the scheduler and the BlueZ-model scanner (which recognises sealed frames as complete
/// and forgets the device), while an open node in range stores nothing and its OUT is dropped as
/// "not sealed".
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sealed_nodes_exchange_and_strangers_are_dropped() {
    use beets_core::node::SealConfig;
    use beets_core::sealed::{MemoryCounterStore, SealKey};
    let sealed = |name: &str, source: u16, seed: u64| {
        let key = SealKey::from_password("hive");
        let seal = SealConfig::new(
            key,
            std::num::NonZeroU16::new(source).unwrap(),
            MemoryCounterStore::default(),
        );
        let cfg = NodeConfig::new(Transport::Ble, name)
            .unwrap()
            .with_seal(seal);
        Node::new(cfg, seed, Time::ZERO)
    };
    let air = SimAir::new(SimAirConfig::default());
    let cfg = BleConfig::default();
    let a = air.spawn_node("a", sealed("a", 1, 1), A, &cfg);
    let b = air.spawn_node("b", sealed("b", 2, 2), B, &cfg);
    let x = air.spawn_node("x", node("x", 3), [0xC0, 0xBE, 0x75, 0, 0, 3], &cfg);
    a.handle()
        .out(tuple(r#"("SENSOR", "LIGHT", 512, 1.5)"#), None)
        .await
        .unwrap();
    x.handle().out(tuple(r#"("OPEN", 1)"#), None).await.unwrap();
    let got = b
        .handle()
        .rd(template(r#"("SENSOR", ?, ?, ?)"#), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(got.is_none(), "b holds it; a and x do not answer for it");
    let got = a
        .handle()
        .rd(template(r#"("SENSOR", ?, ?, ?)"#), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        got.map(|(t, _)| t),
        Some(tuple(r#"("SENSOR", "LIGHT", 512, 1.5)"#))
    );
    let sb = b.handle().stats().await.unwrap().node;
    assert!(sb.sealed.not_sealed >= 1, "{:?}", sb.sealed);
    assert_eq!(
        b.handle()
            .host_count(template("(\"OPEN\", ?)"))
            .await
            .unwrap(),
        0
    );
    let sx = x.handle().stats().await.unwrap().node;
    assert!(sx.sealed.sealed_no_key >= 1, "{:?}", sx.sealed);
    assert_eq!(
        x.handle()
            .host_count(template("(?, ?, ?, ?)"))
            .await
            .unwrap(),
        0
    );
    assert!(
        b.stats().scan.decoded > 0,
        "sealed frames recognised by the scanner"
    );
}
