//! A receive-only BeeTS node with btleplug (Linux, macOS, Windows): prints every tuple and
//! notification it hears over BLE advertisements.
//!
//! Run: `cargo run -p beets-ble --features btleplug --example btleplug_listener`
//!
//! btleplug cannot advertise: this node never sends (its `out`s would be refused and counted).

use beets_ble::BleConfig;
use beets_core::node::{Node, NodeConfig, Transport};
use beets_core::{Template, Time};
use btleplug::api::Manager as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manager = btleplug::platform::Manager::new().await?;
    let central = manager
        .adapters()
        .await?
        .into_iter()
        .next()
        .ok_or("no Bluetooth adapter")?;
    let seed = u64::from(std::process::id());
    let node = Node::new(
        NodeConfig::new(Transport::Ble, "listener")?,
        seed,
        Time::ZERO,
    );
    let ble =
        beets_ble::btle::spawn_listener("listener", node, &central, &BleConfig::default()).await?;

    // One subscription per arity: a template only matches tuples of its own arity.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    for text in ["(?)", "(?, ?)", "(?, ?, ?)", "(?, ?, ?, ?)"] {
        let template: Template = text.parse()?;
        let mut sub = ble.handle().subscribe(template, 64).await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(t) = sub.recv().await {
                if tx.send(t).await.is_err() {
                    break;
                }
            }
        });
    }
    println!("listening (Ctrl-C to stop)");
    while let Some(d) = rx.recv().await {
        let s = ble.stats().scan;
        let (t, rssi) = (d.tuple, d.rssi.unwrap_or(0));
        println!(
            "{t} at {rssi} dBm    [{} frames decoded, {} foreign ads ignored]",
            s.decoded,
            s.no_name + s.not_beets
        );
    }
    Ok(())
}
