//! Two BeeTS nodes on the simulated BLE radio (no Bluetooth needed): a sensor publishes
//! readings, a collector reads and takes them, with the same scheduler and scanner code as on
//! hardware. A lossy air shows what Δt buys.
//!
//! Run: `cargo run -p beets-ble --example sim_pair`

use std::time::Duration;

use beets_ble::BleConfig;
use beets_ble::sim::{SimAir, SimAirConfig};
use beets_core::node::{Node, NodeConfig, Transport};
use beets_core::{Template, Time, Tuple};

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Each packet copy is lost with probability 0.3; a frame is sent 5 times in its Δt of 500 ms.
    let air = SimAir::new(SimAirConfig {
        seed: 7,
        packet_loss: 0.3,
        ..SimAirConfig::default()
    });
    let cfg = BleConfig::default();
    let node = |name: &str, seed| {
        Node::new(
            NodeConfig::new(Transport::Ble, name).unwrap(),
            seed,
            Time::ZERO,
        )
    };
    let sensor = air.spawn_node(
        "sensor",
        node("sensor", 1),
        [0xC0, 0xBE, 0x75, 0, 0, 1],
        &cfg,
    );
    let collector = air.spawn_node(
        "collector",
        node("collector", 2),
        [0xC0, 0xBE, 0x75, 0, 0, 2],
        &cfg,
    );

    for lux in [512, 530, 555] {
        let reading: Tuple = format!(r#"("SENSOR", "LIGHT", {lux})"#).parse()?;
        sensor.handle().out(reading, None).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all: Template = r#"("SENSOR", "LIGHT", ?int16)"#.parse()?;
    println!(
        "collector stored {} of 3 readings",
        collector.handle().host_count(all.clone()).await?
    );

    // The collector asks the sensor's space: it answers after a random back-off ≤ Δt.
    sensor
        .handle()
        .host_out(r#"("CONFIG", "interval", 60)"#.parse()?, None)
        .await?;
    let started = tokio::time::Instant::now();
    match collector
        .handle()
        .rd(
            r#"("CONFIG", "interval", ?)"#.parse()?,
            Duration::from_secs(3),
        )
        .await?
    {
        Some((t, how)) => println!(
            "rd answered by {} ({} dBm) after {:?}: {t}",
            how.from,
            how.rssi.unwrap_or_default(),
            started.elapsed()
        ),
        None => println!("rd: no answer within 3 s"),
    }
    let s = collector.stats();
    println!(
        "collector scanner: {} frames decoded, {} forwarded to the engine; air: {:?}",
        s.scan.decoded,
        s.scan.forwarded,
        air.stats()
    );
    sensor.close().await;
    collector.close().await;
    Ok(())
}
