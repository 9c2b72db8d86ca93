//! A BeeTS node on a Raspberry Pi (or any Linux with BlueZ): every 5 s it broadcasts a light
//! reading as a BLE advertisement and keeps it in its own space for neighbours' `rd`; it prints
//! the readings it hears from others.
//!
//! Run: `cargo run -p beets-ble --features bluer --example raspberry_pi -- pi-1`
//!
//! Needs `bluetoothd` running (BlueZ >= 5.56; Raspberry Pi OS 12 ships 5.66) and permission to
//! call `org.bluez` on the system bus: root, or a user in the `bluetooth` group
//! (`sudo usermod -aG bluetooth $USER`, then log in again). Stop it with Ctrl-C: bluetoothd
//! withdraws the advertisements of a program that leaves the bus.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use beets_ble::{BleConfig, bluez};
use beets_core::node::{Node, NodeConfig, Transport};
use beets_core::{Template, Time, Tuple};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "pi".to_owned());
    let session = bluer::Session::new().await?;
    let adapter = session.default_adapter().await?;
    adapter.set_powered(true).await?;

    // A fresh seed per start: the first sequence number must differ between runs (spec §6).
    let seed = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64
        ^ u64::from(std::process::id());
    let node = Node::new(NodeConfig::new(Transport::Ble, &name)?, seed, Time::ZERO);
    let ble = bluez::spawn(&name, node, &adapter, &BleConfig::default()).await?;
    println!(
        "{name}: advertising on {} with {} instance(s), Δt 500 ms",
        adapter.name(),
        ble.stats().instances
    );

    let lux_template: Template = r#"("LUX", ?, ?)"#.parse()?;
    let mut heard = ble.handle().subscribe(lux_template, 16).await?;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut lux: i16 = 480;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                lux = (lux + 37) % 1000; // stand-in for reading a light sensor
                let reading: Tuple = format!(r#"("LUX", "{name}", {lux})"#).parse()?;
                let keep = Some(Duration::from_secs(60));
                ble.handle().host_out(reading.clone(), keep).await?; // answers remote rd
                ble.handle().out(reading, keep).await?; // broadcast to every space in range
            }
            Some(d) = heard.recv() => println!("heard {} from {:?} at {:?} dBm", d.tuple, d.from, d.rssi),
        }
    }
}
