//! The paper's Fig. 8 set-up on the simulated BLE medium, and a sweep of Δt and advertising
//! instances for the README table.
//!
//! Run: `cargo bench --bench sim -- --warm-up-time 1 --measurement-time 5`
//!
//! Four mobile nodes 3 m around one receiver publish distinct `("SENSOR", "LIGHT", i, t)` tuples
//! as fast as their sender queue allows (each keeps one frame waiting per advertising instance),
//! starting at staggered phases (real devices are not synchronised). Before Criterion runs, the
//! bench simulates 60 s for each configuration and prints the distinct tuples the receiver's engine
//! accepted per second and the delivery ratio (accepted / sent over the four links), then the best
//! configuration for each advertising interval that keeps the ratio at or above 90 %.
//!
//! Criterion then measures the wall time of simulating those 60 s (`sim/fig8_60s/<Δt>ms`): how much
//! faster than real time the medium runs.

use std::hint::black_box;
use std::time::Duration;

use beets::core::node::{NodeConfig, Transport};
use beets::core::sim::{Sim, SimConfig, SimNodeId};
use beets::core::{Time, Tuple, Value};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const SENDERS: usize = 4;
const SECONDS: u64 = 60;
/// How often the producers look at their queues (ms).
const TICK_MS: u64 = 5;

/// One configuration of the sweep.
#[derive(Clone, Copy, Debug)]
struct Setup {
    delta_t_ms: u64,
    instances: usize,
    interval_ms: u64,
}

/// What one run delivered.
#[derive(Clone, Copy, Debug)]
struct Outcome {
    /// Distinct tuples the receiver accepted per second.
    per_sec: f64,
    /// Accepted / sent over the sender → receiver links.
    ratio: f64,
    /// Frames the senders put on air per second (all four).
    sent_per_sec: f64,
    /// Tuples stored at the receiver (a cross-check of `per_sec`).
    stored: usize,
}

fn reading(i: usize, k: u32) -> Tuple {
    Tuple::new([
        Value::Str("SENSOR".into()),
        Value::Str("LIGHT".into()),
        Value::Int16(i as i16),
        Value::Float32(k as f32 + 0.5),
    ])
    .expect("a valid 4-tuple")
}

fn run(setup: Setup, seed: u64) -> Outcome {
    let mut config = SimConfig::new(seed);
    config.ble.delta_t = Duration::from_millis(setup.delta_t_ms);
    config.ble.instances = setup.instances;
    config.ble.adv_interval = Duration::from_millis(setup.interval_ms);
    config.event_log_capacity = 64;
    let mut sim = Sim::new(config);
    let ble = |name: &str| NodeConfig::new(Transport::Ble, name).expect("a short name");
    let rx = sim.add_node(ble("RX"), (0.0, 0.0));
    let senders: Vec<SimNodeId> = (0..SENDERS)
        .map(|i| {
            let a = i as f64 * std::f64::consts::TAU / SENDERS as f64;
            sim.add_node(ble(&format!("S{i}")), (3.0 * a.cos(), 3.0 * a.sin()))
        })
        .collect();
    // Staggered starts: sender i begins at i · 37 ms.
    let start = |i: usize| Time::from_millis(37 * i as u64);
    let mut next = [0u32; SENDERS];
    let end = Time::from_millis(SECONDS * 1000);
    let mut t = 0;
    while Time::from_millis(t) < end {
        for (i, &s) in senders.iter().enumerate() {
            if sim.now() < start(i) {
                continue;
            }
            while sim.queue_len(s) < setup.instances {
                let tuple = reading(i, next[i]);
                next[i] += 1;
                sim.with_node(s, |n, now| n.out(now, tuple, None))
                    .expect("a 21-byte message fits a BLE frame");
            }
        }
        t += TICK_MS;
        sim.run_until(Time::from_millis(t));
    }
    let stats = sim.stats();
    let secs = stats.elapsed.as_secs_f64();
    let (mut sent, mut accepted) = (0, 0);
    for &s in &senders {
        let l = stats.link(s, rx).expect("BLE link");
        sent += l.frames_sent;
        accepted += l.frames_accepted;
    }
    let stored = sim.node_mut(rx).host().len();
    Outcome {
        per_sec: accepted as f64 / secs,
        ratio: if sent == 0 {
            1.0
        } else {
            accepted as f64 / sent as f64
        },
        sent_per_sec: sent as f64 / secs,
        stored,
    }
}

/// The sweep, printed once before Criterion measures.
fn report() {
    println!();
    println!(
        "Fig. 8 set-up: {SENDERS} BLE senders → 1 receiver at 3 m, {SECONDS} s simulated, default lossy medium (p0 = {})",
        SimConfig::new(0).ble.p0
    );
    println!(
        "| Δt (ms) | interval (ms) | instances | sent/s | delivered/s | per sender/s | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut bests = Vec::new();
    for interval_ms in [100, 20] {
        let mut best: Option<(Setup, Outcome)> = None;
        for instances in [1, 2] {
            for delta_t_ms in [100, 200, 300, 400, 500, 700, 1000] {
                let setup = Setup {
                    delta_t_ms,
                    instances,
                    interval_ms,
                };
                let o = run(setup, 1);
                assert_eq!(o.stored as f64, (o.per_sec * SECONDS as f64).round());
                println!(
                    "| {delta_t_ms} | {interval_ms} | {instances} | {:.1} | {:.2} | {:.2} | {:.1} % |",
                    o.sent_per_sec,
                    o.per_sec,
                    o.per_sec / SENDERS as f64,
                    100.0 * o.ratio
                );
                if o.ratio >= 0.9 && best.is_none_or(|(_, b)| o.per_sec > b.per_sec) {
                    best = Some((setup, o));
                }
            }
        }
        bests.push((interval_ms, best));
    }
    for (interval_ms, best) in bests {
        match best {
            Some((s, o)) => println!(
                "best at a {interval_ms} ms interval with ratio ≥ 90 %: Δt = {} ms, {} instance(s): {:.2} tuples/s at {:.1} %",
                s.delta_t_ms,
                s.instances,
                o.per_sec,
                100.0 * o.ratio
            ),
            None => println!("no configuration at a {interval_ms} ms interval reached 90 %"),
        }
    }
    println!();
}

fn fig8(c: &mut Criterion) {
    report();
    let mut group = c.benchmark_group("sim/fig8_60s");
    group.sample_size(10);
    for delta_t_ms in [500, 100] {
        let setup = Setup {
            delta_t_ms,
            instances: 1,
            interval_ms: 100,
        };
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{delta_t_ms}ms")),
            &setup,
            |b, &setup| b.iter(|| black_box(run(setup, 1))),
        );
    }
    group.finish();
}

criterion_group!(benches, fig8);
criterion_main!(benches);
