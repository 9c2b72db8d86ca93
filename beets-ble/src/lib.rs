//! BeeTS over Bluetooth LE advertisements (paper §4–§5, spec wire-v1 §6): the BLE backend of
//! the BeeTS tuple spaces.
//!
//! Every BeeTS message travels as one legacy advertisement: the frame's ASCII85 *local name* in
//! the scan response and up to seven slot-indexed *16-bit service UUIDs* in the advertising data
//! ([`beets_core::ble`] packs and unpacks them). This crate moves those advertisements on and off
//! a radio and runs the protocol engine ([`beets_core::node::Node`]) on top, so an application
//! gets a [`SpaceHandle`](beets_core::driver::SpaceHandle) with async `out`, `rd`, `inp`, `test`,
//! `notify`.
//!
//! ```text
//!  SpaceHandle ─▶ engine (beets-core driver) ─Transmit─▶ Scheduler ─Start/Stop─▶ Radio
//!                       ▲                               (queue, Δt,              (BlueZ | sim)
//!                       │ ReceivedFrame                  instances)
//!                 ScanTracker ◀─ name / UUID set / RSSI changes ─ scanner (BlueZ | btleplug | sim)
//! ```
//!
//! - **Sending** ([`scheduler`]): a bounded queue of frames; each is advertised for Δt
//!   (default 500 ms) as a scannable advertisement (non-connectable where the controller
//!   allows it, see [`Connectable`]), then replaced by the next, on as
//!   many advertising instances as the controller runs in parallel. A full queue drops the oldest
//!   waiting frame or refuses the new one ([`QueuePolicy`]); a frame that does not fit the
//!   controller's advertising data or scan response is refused with both sizes
//!   ([`SchedulerError::FrameTooLarge`]). The [`Scheduler`] is sans-IO (time passed in) and
//!   lives in `beets-core`: the simulated radio, BlueZ and the core's seeded medium
//!   (`beets_core::sim`) run the very same one.
//! - **Receiving** ([`scan`]): active LE scanning with duplicate reports; each change of a
//!   device's name or UUID set becomes a frame for the engine, whose dedup absorbs repeats. The
//!   module documents each BlueZ behaviour this copes with and where it comes from.
//! - **Radios**: [`sim`] (always built), `bluez` (feature `bluer`), `btle` (feature
//!   `btleplug`).
//!
//! # Features
//! | feature | platform | what |
//! |---|---|---|
//! | *(none)* | any | the simulated radio only; no system libraries |
//! | `bluer` | Linux | advertise and scan through BlueZ (`bluetoothd`) over D-Bus; builds need `libdbus-1-dev` and `pkg-config` |
//! | `btleplug` | Linux, macOS, iOS, Windows, Android | scan only: receive-only nodes (btleplug cannot advertise) |
//!
//! # On a Raspberry Pi
//! Requirements for the `bluer` backend:
//! - `bluetoothd` running; BlueZ ≥ 5.56 recommended (Raspberry Pi OS 12 ships 5.66). The
//!   backend uses `LEAdvertisingManager1.RegisterAdvertisement` with a `broadcast`
//!   (non-connectable) or `peripheral` (connectable) advertisement, chosen per controller
//!   ([`Connectable`]: connectable only on legacy controllers, where it broadcasts the public
//!   address), with `ServiceUUIDs`, `LocalName`, `MinInterval`/`MaxInterval`, and reads `SupportedInstances`,
//!   `ActiveInstances`, `SupportedFeatures` and `SupportedCapabilities` (`MaxAdvLen`,
//!   `MaxScnRspLen`); where an older BlueZ lacks the last two, it assumes one instance and the
//!   legacy 31/31 bytes, and the requested interval is ignored (as it is on any controller
//!   without extended advertising).
//! - The adapter powered (the example powers it).
//! - The adapter's advertising to itself, on a controller without extended advertising: another
//!   program's advertisement there (`bluetoothctl advertise`, a beacon daemon) can keep every
//!   BeeTS frame off the air. The backend warns once with BlueZ's `ActiveInstances` /
//!   `SupportedInstances` and counts such frames in [`AdvertisingStatus::starved_frames`]
//!   ([`BleStats::advertising`]); see the `bluez` module docs.
//! - Permission to call `org.bluez` on the system bus, which the distribution's D-Bus policy
//!   (`/etc/dbus-1/system.d/bluetooth.conf`) decides: root always; on Debian and Raspberry Pi OS
//!   members of the `bluetooth` group (`sudo usermod -aG bluetooth $USER`). This crate opens no
//!   HCI socket, so it needs no `CAP_NET_ADMIN` itself (bluetoothd has it).
//!
//! This program (`examples/raspberry_pi.rs`) runs as written:
#![cfg_attr(feature = "bluer", doc = "```no_run")]
#![cfg_attr(not(feature = "bluer"), doc = "```ignore")]
#![doc = include_str!("../examples/raspberry_pi.rs")]
//! ```
//!
//! # Without a radio
//! The same node on the simulated medium, with tokio's paused clock (a second of radio in
//! microseconds):
//!
//! ```
//! use beets_ble::sim::{SimAir, SimAirConfig};
//! use beets_ble::BleConfig;
//! use beets_core::node::{Node, NodeConfig, Transport};
//! use beets_core::{Time, Tuple};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let air = SimAir::new(SimAirConfig { packet_loss: 0.3, ..SimAirConfig::default() });
//! let cfg = BleConfig { delta_t: Duration::from_millis(300), ..BleConfig::default() };
//! let node = |name: &str, seed| Node::new(NodeConfig::new(Transport::Ble, name).unwrap(), seed, Time::ZERO);
//! let pi = air.spawn_node("pi", node("pi", 1), [0xC0, 0, 0, 0, 0, 1], &cfg);
//! let phone = air.spawn_node("phone", node("phone", 2), [0xC0, 0, 0, 0, 0, 2], &cfg);
//! pi.handle().host_out(r#"("LUX", "pi", 480)"#.parse()?, None).await?;
//! let (reading, how) = phone
//!     .handle()
//!     .rd(r#"("LUX", ?, ?int16)"#.parse()?, Duration::from_secs(3))
//!     .await?
//!     .expect("the pi answers");
//! assert_eq!(reading, r#"("LUX", "pi", 480)"#.parse::<Tuple>()?);
//! tracing::info!(%reading, from = %how.from, rssi_dbm = ?how.rssi, "light reading");
//! # Ok(()) }
//! ```
//!
//! # What this crate does not do
//! - No extended or periodic advertising, no connections, no GATT: one frame is one legacy
//!   advertisement of at most 31 + 31 bytes.
//! - No confidentiality beyond the space key's format-preserving substitution
//!   ([`beets_core::fpe`]), which hides content from a casual listener only.
//! - It never changes the adapter's power, name or discoverable state, and never removes
//!   devices that are not BeeTS senders.
//! - The simulated radio models loss and BlueZ's device bookkeeping, not distance or
//!   collisions (`beets_core::sim` does, for capacity planning of dense neighbourhoods).
//! - Delivery is not guaranteed (paper §3): a frame may be lost, a reply may never come.
//!
//! # Testing
//! Tier 1 (`tests/sim_radio.rs`): nodes on the simulated radio. Tier 2 (`tests/bluez_double/`):
//! the real bluer and btleplug code against a BlueZ double on a private D-Bus
//! (`dbus-double/README.md`), run with `cargo test -p beets-ble --features bluer`. Tier 3
//! (`qemu/` in the repository): real BlueZ 5.66 on Linux 6.1 with virtual controllers in a
//! QEMU guest.
#![forbid(unsafe_code)]

#[cfg(feature = "bluer")]
pub mod bluez;
#[cfg(feature = "btleplug")]
pub mod btle;
mod builder;
mod link;
pub mod node;
pub mod radio;
pub mod scan;
pub mod sim;
pub mod uuid;

/// The Δt sender scheduler. It lives in `beets-core` ([`beets_core::ble::scheduler`]), sans-IO,
/// so that the core's simulated medium runs the very scheduler this crate's radios run; it is
/// re-exported here under its old path.
pub use beets_core::ble::scheduler;

/// The `bluer` crate this backend is built on (to open a `Session` and pick an `Adapter`).
#[cfg(feature = "bluer")]
pub use bluer;
pub use builder::BleNodeBuilder;
pub use link::BleLink;
pub use node::{BleConfig, BleNode, BleStats, Connectable, Reception, SpawnError};
pub use radio::{AdvertisingStatus, Radio, RadioStats, ReceiveOnly, SharedScanStats};
pub use scan::{DeviceUpdate, FrameKey, ScanConfig, ScanOutcome, ScanStats, ScanTracker};
pub use scheduler::{
    AdvertisingLimits, InstanceAction, QueuePolicy, Scheduler, SchedulerConfig, SchedulerError,
    SchedulerStats,
};
pub use sim::{SimAir, SimAirConfig};
