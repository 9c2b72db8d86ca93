//! # BeeTS core
//!
//! BeeTS shares Linda-style tuple spaces between small devices over connectionless radio
//! broadcast: Bluetooth LE advertisements and UDP broadcast (S. Bosse, *BeeTS: Smart Distributed
//! Sensor Tuple Spaces combined with Agents using Bluetooth and IP Broadcasting*, arXiv 2204.02464,
//! 2022). A node broadcasts `out` to store a tuple in every space in range, and `rd`, `inp` and
//! `test` to ask for a matching tuple; whoever holds one answers.
//!
//! This crate is the protocol and nothing else:
//! - the values, tuples and templates of paper §3 ([`Value`], [`Tuple`], [`Template`]) and their
//!   text syntax ([`text`]);
//! - wire format v1 ([`message`]), the BLE frame of ASCII85 local name + slot-indexed 16-bit
//!   service UUIDs ([`ble`]), the UDP datagram envelope ([`udp`]), the node-fpe-compatible
//!   byte substitution ([`fpe`]) and duplicate suppression ([`dedup`]);
//! - sealed messages ([`sealed`], spec §12): AES-128-CCM, replay window, header privacy and
//!   counter persistence, for spaces that need authentication rather than obfuscation;
//! - the local tuple space ([`space`]) and the sans-IO protocol engine ([`node`]);
//! - a seeded simulated broadcast medium for tests and capacity planning ([`sim`]);
//! - with the `tokio` feature, the async driver and [`SpaceHandle`](driver::SpaceHandle) that
//!   the backend crates (`beets-udp`, `beets-ble`) run the engine with ([`driver`]).
//!
//! **What it does not do.** No sockets, no radio, no clock, no threads: time is a [`Time`] passed
//! in, frames are bytes passed in and out. That keeps it deterministic, fast to test (thousands
//! of simulated seconds per test second) and portable. It gives no delivery guarantee (paper §3:
//! operations are broadcasts that may go unanswered). The FPE is a keyed per-byte substitution
//! without integrity, obfuscation only; [`sealed`] spaces are authenticated and replay-protected.
//!
//! ```text
//!  app: out / rd / inp / test / notify / where          radio or socket
//!        │                                                 ▲     │
//!        ▼                                  poll_transmit  │     │ handle_frame
//!  ┌───────────┐  Message ─▶ FPE ─▶ ble::pack / udp::encode┘     │
//!  │ node::Node│                                                 │
//!  │  + Space  │  ◀─ dedup ◀─ Message::parse ◀─ ble::unpack / udp::decode
//!  └───────────┘
//!        │ poll_event: replies, timeouts, listener deliveries, neighbours, drops
//! ```
//!
//! ```
//! use beets_core::{Message, Tuple, ble};
//! let tuple: Tuple = r#"("SENSOR", "LIGHT", 512, 1.5)"#.parse()?;
//! let bytes = Message::Out { tuple, lifetime: None }.to_bytes(None);
//! let adv = ble::pack(7, &bytes)?;
//! assert_eq!(adv.local_name.as_str(), r#"#>"Os;ajG[:JqNn8Ol<N!WYI#!!!""#);
//! assert_eq!(adv.service_uuids.as_slice(), &[0x1520]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
pub mod ascii85;
pub mod ble;
pub mod dedup;
#[cfg(feature = "tokio")]
pub mod driver;
pub mod fpe;
#[doc(hidden)]
pub mod fuzzing;
mod macros;
pub mod message;
pub mod node;
pub mod sealed;
pub mod sim;
pub mod space;
pub mod text;
pub mod time;
pub mod tuple;
pub mod udp;
pub mod value;

// Foreign types in public signatures come with their crates, so a major version of one of them
// is a major version of beets-core (tokio's rule for mio): `Value::Str` holds a `CompactString`,
// a `BleAdvertisement` an `ArrayString` name and an `ArrayVec` of UUIDs.
pub use arrayvec;
pub use compact_str;
pub use fpe::FpeKey;
#[doc(hidden)]
pub use macros::__private;
pub use message::{DecodeError, Decoded, Message, Op};
pub use node::{
    Delivery, Event, Frame, Node, NodeConfig, NodeError, NodeStats, PeerAddr, Received, RequestId,
    Transmit, Transport,
};
pub use sealed::{OpenError, Opened, ReplayWindow, SealError, SealKey, Sealer};
pub use space::{
    CapacityPolicy, DeliveryKind, ListenerId, OutReport, Space, SpaceConfig, SpaceError, SpaceStats,
};
pub use text::{ParseError, parse_template, parse_tuple};
pub use time::Time;
pub use tuple::{Field, MAX_ARITY, Template, Tuple, TupleError};
pub use value::{CompactString, MAX_VALUE_LEN, TypeCode, Value, ValueError};
