//! Allocations per `out` on a plain UDP space's steady-state path (the handle encodes on the
//! stack and sends from the caller's task), counted by a global allocator (`stats_alloc`):
//! zero once warm. A plain socket receives and drains the datagrams.
//!
//! One test in this binary: the counter is process-wide.

use std::alloc::System;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

use beets_core::{NodeConfig, Transport, Tuple, Value};
use beets_udp::{UdpConfig, UdpSpace};
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
    ])
    .unwrap()
}

/// Reads every datagram waiting at `sink`; returns how many.
fn drain(sink: &UdpSocket) -> u64 {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while sink.recv(&mut buf).is_ok() {
        n += 1;
    }
    n
}

#[test]
fn steady_state_out_allocates_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sink = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    sink.set_nonblocking(true).unwrap();
    let udp = UdpConfig {
        bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        broadcast: None,
        peers: vec![sink.local_addr().unwrap()],
        ..UdpConfig::default()
    };
    let (allocations, received) = rt.block_on(async {
        let space = UdpSpace::spawn(udp, NodeConfig::new(Transport::Udp, "a").unwrap(), 1).unwrap();
        let handle = space.handle().clone();
        let mut received = 0;
        let mut run = async |from: u64, n: u64| {
            for i in from..from + n {
                handle.out(tuple(i), None).await.unwrap();
                if i % 32 == 0 {
                    received += drain(&sink);
                }
            }
            received += drain(&sink);
        };
        run(0, WARM).await;
        let region = Region::new(GLOBAL);
        run(WARM, MEASURED).await;
        let stats = region.change();
        space.close().await;
        (stats.allocations + stats.reallocations, received)
    });
    assert!(received > 0, "the datagrams arrived");
    assert_eq!(
        allocations, 0,
        "allocations over {MEASURED} outs ({received} datagrams received in all)"
    );
}
