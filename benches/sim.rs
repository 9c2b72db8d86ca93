//! Simulated BLE scenario bench (being written).
fn main() {}
