//! Capacity of a BLE neighbourhood on the simulated radio, with the real scheduler and scanner:
//! distinct tuples/s per node and reception ratio against Δt and advertising instances.
//!
//! Run: `cargo bench -p beets-ble --bench ble_scenario` (about a minute of CPU for 24 scenarios,
//! each 60 s of virtual time; `-- --quick` runs 20 s each).
//!
//! Set-up: 4 nodes in range of each other; each offers a new 4-byte OUT every 20 ms (50/s, more
//! than any configuration carries), sender queue 16 with drop-oldest; packets every 100 ms +
//! 0..=10 ms advDelay. "ideal" loses nothing; "lossy" loses each packet copy with probability
//! 0.68 and each scan response with 0.1 (p = 0.32 per packet is the core medium's calibration
//! for the paper's Fig. 8 set-up, which saw ≈ 80 % at Δt = 500 ms).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beets_ble::sim::{SimAir, SimAirConfig};
use beets_ble::{BleConfig, QueuePolicy};
use beets_core::node::{Node, NodeConfig, Transport};
use beets_core::{Template, Time, Tuple, Value};

const NODES: usize = 4;

/// Per receiving node: the (sender, counter) pairs heard.
type Heard = Arc<Mutex<Vec<HashSet<(i16, i16)>>>>;
const OFFER_EVERY: Duration = Duration::from_millis(20);

struct Row {
    delta_ms: u64,
    instances: usize,
    advertised_per_node: f64,
    received_per_node: f64,
    reception: f64,
}

fn run(delta_ms: u64, instances: usize, lossy: bool, secs: u64) -> Row {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let air = SimAir::new(SimAirConfig {
            seed: delta_ms * 31 + instances as u64,
            instances,
            packet_loss: if lossy { 0.68 } else { 0.0 },
            scan_response_loss: if lossy { 0.1 } else { 0.0 },
            ..SimAirConfig::default()
        });
        let cfg = BleConfig {
            delta_t: Duration::from_millis(delta_ms),
            queue_capacity: 16,
            queue_policy: QueuePolicy::DropOldest,
            max_instances: instances,
            ..BleConfig::default()
        };
        let mut nodes = Vec::new();
        let received: Heard = Arc::new(Mutex::new(vec![HashSet::new(); NODES]));
        for i in 0..NODES {
            let name = format!("n{i}");
            let node = Node::new(
                NodeConfig::new(Transport::Ble, &name).expect("name"),
                i as u64 + 1,
                Time::ZERO,
            );
            let n = air.spawn_node(&name, node, [0xC0, 0xBE, 0x75, 0, 0, i as u8 + 1], &cfg);
            let mut rx = n
                .handle()
                .subscribe(
                    "(?int16, ?int16)".parse::<Template>().expect("template"),
                    4096,
                )
                .await
                .expect("subscribe");
            let received = received.clone();
            tokio::spawn(async move {
                while let Some(d) = rx.recv().await {
                    let t = d.tuple;
                    if let (Some(Value::Int16(from)), Some(Value::Int16(k))) = (t.get(0), t.get(1))
                    {
                        received.lock().expect("lock")[i].insert((*from, *k));
                    }
                }
            });
            nodes.push(n);
        }
        let handles: Vec<_> = nodes.iter().map(|n| n.handle().clone()).collect();
        let offer = tokio::spawn(async move {
            let mut k: i16 = 0;
            let mut tick = tokio::time::interval(OFFER_EVERY);
            loop {
                tick.tick().await;
                for (i, h) in handles.iter().enumerate() {
                    let t = Tuple::new([Value::Int16(i as i16), Value::Int16(k)]).expect("tuple");
                    let _ = h.out(t, None).await;
                }
                k = k.wrapping_add(1);
            }
        });
        let t0 = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        offer.abort();
        // Drain: every queued frame gets its period, then the last ones end and are heard.
        while nodes.iter().any(|n| n.stats().queue_len > 0) {
            tokio::time::sleep(Duration::from_millis(delta_ms)).await;
        }
        tokio::time::sleep(Duration::from_millis(delta_ms + 200)).await;
        let advertised: u64 = nodes.iter().map(|n| n.stats().scheduler.started).sum();
        let secs = t0.elapsed().as_secs_f64();
        let got = received.lock().expect("lock");
        let mut distinct = 0usize;
        for (i, set) in got.iter().enumerate() {
            distinct += set.iter().filter(|(from, _)| *from as usize != i).count();
        }
        Row {
            delta_ms,
            instances,
            advertised_per_node: advertised as f64 / NODES as f64 / secs,
            received_per_node: distinct as f64 / NODES as f64 / secs,
            reception: distinct as f64 / (advertised as f64 * (NODES - 1) as f64),
        }
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `cargo bench` passes --bench; `cargo test --benches` runs this as a test: keep it short.
    let as_test = !std::env::args().any(|a| a == "--bench");
    let secs = if as_test {
        2
    } else if quick {
        20
    } else {
        60
    };
    let deltas: &[u64] = if as_test {
        &[500]
    } else {
        &[100, 250, 500, 1000]
    };
    let instances: &[usize] = if as_test { &[1] } else { &[1, 2, 4] };
    for lossy in [false, true] {
        println!(
            "\n{} air, {NODES} nodes, {secs} s simulated each, offered 50 tuples/s per node",
            if lossy {
                "lossy (packet loss 0.68, scan-response loss 0.1)"
            } else {
                "ideal"
            }
        );
        println!(
            "{:>6} {:>9} {:>16} {:>22} {:>10}",
            "Δt ms", "instances", "advertised/s/node", "distinct received/s/node", "reception"
        );
        for &d in deltas {
            for &n in instances {
                let r = run(d, n, lossy, secs);
                println!(
                    "{:>6} {:>9} {:>16.2} {:>22.2} {:>9.1}%",
                    r.delta_ms,
                    r.instances,
                    r.advertised_per_node,
                    r.received_per_node,
                    100.0 * r.reception
                );
            }
        }
    }
}
