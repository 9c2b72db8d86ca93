//! BeeTS: distributed tuple spaces over BLE advertisements and UDP broadcast.
//!
//! This facade re-exports the workspace crates; it exists so the examples and benches of the
//! repository root have one crate to stand on. Applications depend on [`beets_core`] plus a backend
//! crate directly.

pub use beets_core as core;
