//! BeeTS: distributed tuple spaces over BLE advertisements and UDP broadcast.
//!
//! This facade re-exports the workspace crates ([`core`], [`udp`], [`ble`], [`agents`]); it
//! exists so the examples and benches of the repository root have one crate to stand on.
//! Applications may depend on it, or on `beets-core` plus a backend crate directly.
//!
//! The repository's README follows; its Rust quick start is compiled as a doctest here.
#![doc = include_str!("../README.md")]

pub use beets_agents as agents;
pub use beets_ble as ble;
pub use beets_core as core;
#[cfg(feature = "mqtt")]
pub use beets_mqtt as mqtt;
pub use beets_udp as udp;
