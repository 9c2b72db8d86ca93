//! The sender address the engine sees for a datagram heard on MQTT.
//!
//! A broker hides its clients' addresses, and the engine's [`PeerAddr`] is a BLE or IP address.
//! A datagram heard on MQTT is therefore reported from a synthetic IPv6 address that carries the
//! datagram's node id (spec §7): `[fdbe:7500::<node id high 16 bits>:<low 16 bits>]:0`, in a
//! locally assigned (ULA) prefix, port 0 — never a reachable host. Neighbours, replies and
//! deliveries thus tell senders apart as on UDP; [`mqtt_node_id`] reads the id back and
//! [`peer_label`] prints it as `mqtt:<node id>`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use beets_core::PeerAddr;
use beets_core::udp::NodeId;

const PREFIX: [u16; 2] = [0xfdbe, 0x7500];

/// The synthetic sender address of a datagram heard on MQTT (see the module docs); node id 0
/// when the datagram is too short to carry one (the engine drops it anyway).
pub fn mqtt_peer(datagram: &[u8]) -> PeerAddr {
    let id = match datagram.get(3..7) {
        Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    };
    let ip = Ipv6Addr::new(
        PREFIX[0],
        PREFIX[1],
        0,
        0,
        0,
        0,
        (id >> 16) as u16,
        id as u16,
    );
    PeerAddr::Ip(SocketAddr::new(IpAddr::V6(ip), 0))
}

/// The node id inside a synthetic MQTT sender address, `None` for any other address.
pub fn mqtt_node_id(peer: &PeerAddr) -> Option<NodeId> {
    let PeerAddr::Ip(SocketAddr::V6(a)) = peer else {
        return None;
    };
    let s = a.ip().segments();
    if a.port() != 0 || s[..2] != PREFIX || s[2..6] != [0; 4] {
        return None;
    }
    NodeId::new((u32::from(s[6]) << 16) | u32::from(s[7]))
}

/// A sender address for people and JSON: `mqtt:<node id>` for a synthetic MQTT address, else
/// the address as the engine prints it.
pub fn peer_label(peer: &PeerAddr) -> String {
    match mqtt_node_id(peer) {
        Some(id) => format!("mqtt:{id}"),
        None => peer.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_round_trip_and_other_addresses_are_not_mqtt() {
        let d = [0xbe, 0x75, 1, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1, 0x50];
        let p = mqtt_peer(&d);
        assert_eq!(mqtt_node_id(&p).map(NodeId::get), Some(0xdead_beef));
        assert_eq!(peer_label(&p), "mqtt:deadbeef");
        assert_eq!(mqtt_node_id(&mqtt_peer(&[1, 2])), None);
        let udp = PeerAddr::Ip("127.0.0.1:49737".parse().unwrap());
        assert_eq!(mqtt_node_id(&udp), None);
        assert_eq!(peer_label(&udp), "127.0.0.1:49737");
        assert_eq!(mqtt_node_id(&PeerAddr::Ble([0; 6])), None);
    }
}
