//! BeeTS: distributed tuple spaces over BLE advertisements and UDP broadcast.
//!
//! This facade re-exports the workspace crates ([`core`], [`udp`], [`ble`], [`agents`]); it
//! exists so the examples and benches of the repository root have one crate to stand on.
//! Applications may depend on it, or on `beets-core` plus a backend crate directly.
//!
//! Features: `udp`, `ble`, `agents`, `mqtt` (all on by default), `bluer` and `btleplug` for
//! real BLE radios.
//!
//! # Five short programs
//!
//! A UDP space on this machine (port 40501, the loopback broadcast):
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let space = beets::udp::UdpSpace::builder("sensor").loopback(40501).spawn()?;
//! println!("node {} on {}", space.node_id(), space.local_addr());
//! # Ok(()) }
//! ```
//!
//! `out` with a lifetime: every space in range stores the tuple for 10 minutes.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let space = beets::udp::UdpSpace::builder("sensor").loopback(40502).spawn()?;
//! use std::time::Duration;
//! let reading = beets::core::tuple!("SENSOR", "LIGHT", 512, 1.5)?;
//! space.handle().out(reading, Some(Duration::from_secs(600))).await?;
//! # Ok(()) }
//! ```
//!
//! `rd` with a timeout: the first matching reply from any space in range, `None` after 1 s.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let space = beets::udp::UdpSpace::builder("display").loopback(40503).spawn()?;
//! use std::time::Duration;
//! let wanted = beets::core::template!("SENSOR", "LIGHT", ?int16, ?float32)?;
//! match space.handle().rd(wanted, Duration::from_secs(1)).await? {
//!     Some((tuple, how)) => println!("{tuple} from {}", how.from),
//!     None => println!("nobody answered"),
//! }
//! # Ok(()) }
//! ```
//!
//! Subscribe, and print each delivery's sender and RSSI (BLE; `None` on UDP):
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use beets::ble::{BleNode, SimAir, SimAirConfig};
//! let air = SimAir::new(SimAirConfig::default());
//! let node = BleNode::builder("listener").spawn_sim(&air, [0xC0, 0, 0, 0, 0, 1])?;
//! let template = beets::core::template!("SENSOR", ?, ?, ?)?;
//! let mut heard = node.handle().subscribe(template, 16).await?;
//! while let Some(d) = heard.recv().await {
//!     println!("{} from {:?} at {:?} dBm", d.tuple, d.from, d.rssi);
//! }
//! # Ok(()) }
//! ```
//!
//! A JavaScript router between a BLE space (here the simulated air) and a UDP space: readings go
//! from BLE to UDP, surveys back (the paper's beacon, §7).
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use beets::agents::{AgentRuntime, HostConfig, Router, RuntimeConfig, SpaceSpec};
//! use beets::ble::{BleNode, SimAir, SimAirConfig};
//! let spaces = HostConfig::new([SpaceSpec::ble("ble-ts"), SpaceSpec::udp("udp-ts")]);
//! let (agents, out) = AgentRuntime::spawn(spaces, RuntimeConfig::default())?;
//! let air = SimAir::new(SimAirConfig::default());
//! let ble = BleNode::builder("beacon").hooks(agents.hooks("ble-ts")?);
//! let ble = ble.spawn_sim(&air, [0xC0, 0, 0, 0, 0, 2])?;
//! let udp = beets::udp::UdpSpace::builder("beacon").loopback(40505);
//! let udp = udp.hooks(agents.hooks("udp-ts")?).spawn()?;
//! let handles = [("ble-ts", ble.handle().clone()), ("udp-ts", udp.handle().clone())];
//! tokio::spawn(agents.serve(out.actions, handles)?);
//! agents.load("router", &Router::ble_udp().source()).await?;
//! # Ok(()) }
//! ```
//!
//! The repository's README follows; its Rust quick start is compiled as a doctest here.
#![doc = include_str!("../README.md")]

#[cfg(feature = "agents")]
pub use beets_agents as agents;
#[cfg(feature = "ble")]
pub use beets_ble as ble;
pub use beets_core as core;
#[cfg(feature = "mqtt")]
pub use beets_mqtt as mqtt;
#[cfg(feature = "udp")]
pub use beets_udp as udp;
