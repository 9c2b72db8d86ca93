//! A custom router agent between a BLE space and a UDP space, on the simulated radio medium:
//! mobile nodes publish light readings over BLE, a beacon's agent forwards the ones it hears
//! well to a server over UDP, and carries the server's survey back to the mobiles.
//!
//! Run: `cargo run -p beets-agents --example router`
//!
//! The ready-made `beets_agents::Router::ble_udp()` does the plain forwarding; this one also
//! filters by signal strength and reshapes the tuples. The medium is the realistic, lossy one
//! (seeded, so every run prints the same): expect part of the readings, and the survey's single
//! advertisement, to be lost, as in the paper's Fig. 8.

use std::time::Duration;

use beets_agents::{Action, AgentRuntime, HostConfig, RuntimeConfig, SpaceSpec};
use beets_core::sim::{Sim, SimConfig, SimNodeId};
use beets_core::{Event, NodeConfig, Transport, Tuple};

const ROUTER: &str = r#"({
  forwarded: 0,
  rules: [
    // Readings heard well enough go to the server, with the RSSI and a sequence number;
    // consumed, so the beacon does not keep them.
    { ts: ["SENSOR", "LIGHT", INT16, ANY], space: "ble-ts",
      cond(t, ev) { return ev.rssi > -85; },
      handler(t, ev) {
        spaces["udp-ts"].out(["LIGHT", t[2], ev.rssi, this.forwarded++]);
        return true;
      } },
    // The server's surveys go out over BLE.
    { ts: ["SURVEY", STR], space: "udp-ts",
      handler(t) { spaces["ble-ts"].out(t); log("survey", t[1], "sent over BLE"); return true; } },
  ],
})"#;

fn tuple(s: &str) -> Tuple {
    s.parse().expect("valid tuple")
}

fn main() {
    let mut sim = Sim::new(SimConfig::new(7));
    let node = |t, name: &str| NodeConfig::new(t, name).expect("short name");
    let mobiles: Vec<SimNodeId> = (0..3)
        .map(|i| {
            sim.add_node(
                node(Transport::Ble, &format!("m{i}")),
                (8.0 * i as f64, 4.0),
            )
        })
        .collect();
    let beacon_ble = sim.add_node(node(Transport::Ble, "beacon"), (8.0, 0.0));
    let beacon_udp = sim.add_node(node(Transport::Udp, "beacon"), (0.0, 0.0));
    let server = sim.add_node(node(Transport::Udp, "server"), (0.0, 0.0));

    // The beacon's agents see both of its spaces.
    let spaces = [
        SpaceSpec::new("ble-ts", Transport::Ble),
        SpaceSpec::new("udp-ts", Transport::Udp),
    ];
    let (agents, mut out) =
        AgentRuntime::spawn(HostConfig::new(spaces), RuntimeConfig::default()).expect("thread");
    sim.node_mut(beacon_ble)
        .set_hooks(Box::new(agents.hooks("ble-ts").expect("space")));
    sim.node_mut(beacon_udp)
        .set_hooks(Box::new(agents.hooks("udp-ts").expect("space")));
    agents
        .load_blocking("router", ROUTER)
        .expect("router loads");

    sim.node_mut(server)
        .subscribe(r#"("LIGHT", ?, ?, ?)"#.parse().expect("template"));
    for &m in &mobiles {
        sim.node_mut(m)
            .subscribe(r#"("SURVEY", ?)"#.parse().expect("template"));
    }

    let rounds = 10;
    for round in 0..rounds {
        for (i, &m) in mobiles.iter().enumerate() {
            let reading = tuple(&format!(
                r#"("SENSOR", "LIGHT", {}, {round})"#,
                100 * i + round
            ));
            sim.with_node(m, |n, now| n.out(now, reading, None))
                .expect("fits a BLE frame");
        }
        if round == 3 {
            sim.with_node(server, |n, now| {
                n.out(now, tuple(r#"("SURVEY", "Q1")"#), None)
            })
            .expect("fits");
        }
        // Two seconds of virtual time; perform the router's actions on the beacon's nodes.
        for _ in 0..20 {
            sim.run_for(Duration::from_millis(100));
            while let Ok(action) = out.actions.try_recv() {
                if let Action::Out {
                    space,
                    tuple,
                    lifetime,
                    ..
                } = action
                {
                    let node = [beacon_ble, beacon_udp][space.index()];
                    let _ = sim.with_node(node, |n, now| n.out(now, tuple, lifetime));
                }
            }
        }
    }

    let delivered = |sim: &Sim, id| {
        sim.events(id)
            .filter_map(|e| match e {
                Event::Delivered { delivery, .. } => Some(delivery.tuple.to_string()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let at_server = delivered(&sim, server);
    println!(
        "server received {} of {} readings:",
        at_server.len(),
        rounds * mobiles.len()
    );
    for t in &at_server {
        println!("  {t}");
    }
    for &m in &mobiles {
        println!("{} received {:?}", sim.addr(m), delivered(&sim, m));
    }
    while let Ok(e) = out.events.try_recv() {
        println!("agent event: {e:?}");
    }
    agents.shutdown();
}
