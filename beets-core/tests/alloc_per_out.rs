//! Allocations per OUT on the engine's steady-state send path, counted by a global allocator
//! (`stats_alloc`): `Node::out`, `poll_transmit`, then `recycle` of the sent datagram, as the
//! tokio driver does. Plain and sealed UDP spaces: zero once warm. (The UDP backend's direct
//! path, `SpaceHandle::out` on a plain space, is counted in beets-udp/tests/alloc_per_out.rs.)
//!
//! One test in this binary: the counter is process-wide.

use std::alloc::System;
use std::num::NonZeroU16;

use beets_core::node::SealConfig;
use beets_core::sealed::{MemoryCounterStore, SealKey};
use beets_core::{Node, NodeConfig, Time, Transmit, Transport, Tuple, Value};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const WARM: u64 = 2_000;
const MEASURED: u64 = 20_000;

fn tuple(i: u64) -> Tuple {
    Tuple::new([
        Value::Str("SENSOR".into()),
        Value::Str("LIGHT".into()),
        Value::Int16((i % 30_000) as i16),
        Value::Float32(1.5),
    ])
    .unwrap()
}

/// OUTs `n` tuples and "sends" each datagram (recycling it); returns the bytes sent.
fn outs(node: &mut Node, from: u64, n: u64) -> usize {
    let mut sent = 0;
    for i in from..from + n {
        node.out(Time::from_millis(i), tuple(i), None).unwrap();
        while let Some(tx) = node.poll_transmit() {
            if let Transmit::Datagram(d) = &tx {
                sent += d.len();
            }
            node.recycle(tx);
        }
    }
    sent
}

fn allocations_per_out(mut node: Node) -> (f64, usize) {
    outs(&mut node, 0, WARM);
    let region = Region::new(GLOBAL);
    let sent = outs(&mut node, WARM, MEASURED);
    let stats = region.change();
    (
        (stats.allocations + stats.reallocations) as f64 / MEASURED as f64,
        sent,
    )
}

#[test]
fn steady_state_out_allocates_nothing() {
    let plain = Node::new(NodeConfig::new(Transport::Udp, "a").unwrap(), 1, Time::ZERO);
    let (per_out, sent) = allocations_per_out(plain);
    assert!(sent > 0);
    assert_eq!(per_out, 0.0, "plain UDP: allocations per OUT");

    let key = SealKey::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
    let seal = SealConfig::new(
        key,
        NonZeroU16::new(7).unwrap(),
        MemoryCounterStore::default(),
    );
    let cfg = NodeConfig::new(Transport::Udp, "s")
        .unwrap()
        .with_seal(seal);
    let sealed = Node::new(cfg, 2, Time::ZERO);
    let (per_out, sent) = allocations_per_out(sealed);
    assert!(sent > 0);
    // The counter store reserves blocks of 1024 counters (a write per block), nothing per OUT.
    assert!(
        per_out <= 0.001,
        "sealed UDP: {per_out} allocations per OUT"
    );
    println!("allocations per OUT: plain 0, sealed {per_out}");
}
