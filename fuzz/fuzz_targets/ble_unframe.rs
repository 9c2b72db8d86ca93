//! BLE unframe of (name, UUID set) never panics and re-packs to the same name and a subset of the UUIDs.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| beets_core::fuzzing::ble_unframe(data));
