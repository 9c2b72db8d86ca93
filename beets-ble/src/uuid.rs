//! 16-bit service UUID values ↔ 128-bit UUIDs on the Bluetooth base UUID (spec wire-v1 §6).
//!
//! Stacks hand 16-bit service UUIDs over as 128-bit UUIDs `0000XXXX-0000-1000-8000-00805F9B34FB`
//! (Bluetooth Core spec Vol 3, Part B, §2.5.1). These helpers work on `u128` so they need no UUID
//! crate: `bluer::Uuid` and btleplug's `Uuid` convert with `from_u128` / `as_u128`.
//!
//! ```
//! use beets_ble::uuid::{uuid128_from_u16, uuid16_from_u128};
//! let u = uuid128_from_u16(0x1520);
//! assert_eq!(u, 0x0000_1520_0000_1000_8000_0080_5f9b_34fb);
//! assert_eq!(uuid16_from_u128(u), Some(0x1520));
//! assert_eq!(uuid16_from_u128(0x1234_5678_0000_1000_8000_0080_5f9b_34fb), None); // 32-bit
//! ```

/// The Bluetooth base UUID `00000000-0000-1000-8000-00805F9B34FB`.
pub const BASE_UUID: u128 = 0x0000_0000_0000_1000_8000_0080_5f9b_34fb;

/// Bits of the base UUID below the 16/32-bit value field.
const VALUE_SHIFT: u32 = 96;

/// The 128-bit UUID of a 16-bit UUID value `v`.
pub const fn uuid128_from_u16(v: u16) -> u128 {
    ((v as u128) << VALUE_SHIFT) | BASE_UUID
}

/// The 16-bit value of a 128-bit UUID, if it is a 16-bit UUID on the base UUID.
pub const fn uuid16_from_u128(u: u128) -> Option<u16> {
    let low_mask = (1u128 << VALUE_SHIFT) - 1;
    let value = u >> VALUE_SHIFT;
    if u & low_mask == BASE_UUID && value <= 0xffff {
        Some(value as u16)
    } else {
        None
    }
}
