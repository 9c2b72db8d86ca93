//! Entry points for the cargo-fuzz targets in `fuzz/` (one line each there). Each checks the
//! property the decoder promises: no panic, and accepted input re-encodes to the same bytes.
//! Not part of the stable API.

use crate::{ascii85, ble, fpe::FpeKey, message::Message, udp};

/// Message decode → emit → equal bytes, plain and with a fixed key.
pub fn message(data: &[u8]) {
    if let Ok(d) = Message::parse(data, None) {
        assert_eq!(d.message.to_bytes(None), data, "plain re-encode differs");
    }
    // Built once: a table build per input would slow the target twentyfold.
    static KEY: std::sync::LazyLock<FpeKey> =
        std::sync::LazyLock::new(|| FpeKey::from_password("fuzz"));
    if let Ok(d) = Message::parse(data, Some(&KEY)) {
        let again = d.message.to_bytes(d.encrypted.then_some(&*KEY));
        assert_eq!(again, data, "keyed re-encode differs");
    }
}

/// Ascii85 decode → encode → equal text.
pub fn ascii85(data: &[u8]) {
    let mut out = [0u8; 256];
    if let Ok(n) = ascii85::decode_into(data, &mut out) {
        let text = ascii85::encode(&out[..n]);
        assert_eq!(text.as_bytes(), data, "non-canonical Ascii85 accepted");
    }
}

/// BLE unframe of (name, UUID set) → re-pack gives the same name and a subset of the UUIDs.
/// Input layout: first byte = name length (mod 40), then the name bytes, then UUIDs as u16 BE.
pub fn ble_unframe(data: &[u8]) {
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let len = usize::from(len % 40).min(rest.len());
    let (name, uuid_bytes) = rest.split_at(len);
    let Ok(name) = std::str::from_utf8(name) else {
        return;
    };
    let uuids: Vec<u16> = uuid_bytes
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    if let Ok(frame) = ble::unpack(name, &uuids, None) {
        let adv = ble::pack_message(frame.seq, &frame.decoded.message, None)
            .expect("a received message fits a frame");
        assert_eq!(adv.local_name.as_str(), name, "re-packed name differs");
        for u in &adv.service_uuids {
            assert!(
                uuids.contains(u),
                "re-packed UUID {u:#06x} was not received"
            );
        }
    }
}

/// UDP datagram decode → encode → equal bytes.
pub fn udp_datagram(data: &[u8]) {
    if let Ok((header, d)) = udp::decode(data, None) {
        let again = udp::encode(&header, &d.message, None).expect("decoded message fits");
        assert_eq!(again, data, "datagram re-encode differs");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fuzz_entry_points_hold_on_random_input(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            message(&data);
            ascii85(&data);
            ble_unframe(&data);
            udp_datagram(&data);
        }
    }
}
