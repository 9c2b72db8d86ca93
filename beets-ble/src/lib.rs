//! BeeTS over Bluetooth LE advertisements (paper §4–§5, spec wire-v1 §6).
//!
//! Not built yet: this crate will hold the advertiser/scanner adapters (BlueZ through `bluer`,
//! scan-only through `btleplug`) that move [`beets_core`] BLE frames on and off the radio.
//! The frame format itself (ASCII85 local name + slot-indexed 16-bit service UUIDs) already lives in
//! `beets_core::ble`.
