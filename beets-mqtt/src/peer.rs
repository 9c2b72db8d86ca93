//! The sender address the engine sees for a datagram heard on MQTT.
//!
//! A broker hides its clients' addresses. A datagram heard on MQTT is therefore reported from
//! [`PeerAddr::Mqtt`] with the datagram's node id (spec §7), printed `mqtt:<node id>`:
//! neighbours, replies and deliveries tell senders apart as on UDP. A datagram too short to
//! carry a node id, or with node id 0 (the engine drops both as malformed), is reported from
//! the unspecified address `[::]:0`.

use std::net::{Ipv6Addr, SocketAddr};

use beets_core::PeerAddr;
use beets_core::udp::NodeId;

/// The sender address of a datagram heard on MQTT (see the module docs).
pub fn mqtt_peer(datagram: &[u8]) -> PeerAddr {
    datagram
        .get(3..7)
        .and_then(|b| NodeId::new(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
        .map_or(
            PeerAddr::Ip(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))),
            PeerAddr::Mqtt,
        )
}

/// The node id of an MQTT sender, `None` for any other address.
pub fn mqtt_node_id(peer: &PeerAddr) -> Option<NodeId> {
    match peer {
        PeerAddr::Mqtt(id) => Some(*id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_become_mqtt_senders_and_other_addresses_are_not_mqtt() {
        let d = [0xbe, 0x75, 1, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1, 0x50];
        let p = mqtt_peer(&d);
        assert_eq!(mqtt_node_id(&p).map(NodeId::get), Some(0xdead_beef));
        assert_eq!(p.to_string(), "mqtt:deadbeef");
        assert_eq!(mqtt_node_id(&mqtt_peer(&[1, 2])), None);
        assert_eq!(mqtt_peer(&[1, 2]).to_string(), "[::]:0");
        assert_eq!(mqtt_node_id(&mqtt_peer(&[0xbe, 0x75, 1, 0, 0, 0, 0])), None);
        let udp = PeerAddr::Ip("127.0.0.1:49737".parse().unwrap());
        assert_eq!(mqtt_node_id(&udp), None);
        assert_eq!(mqtt_node_id(&PeerAddr::Ble([0; 6])), None);
    }
}
