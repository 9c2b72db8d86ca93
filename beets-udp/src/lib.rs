//! BeeTS over UDP broadcast (paper §4, spec wire-v1 §7).
//!
//! Not built yet: this crate will hold the tokio socket adapter. The datagram envelope itself
//! (magic, envelope version, node id, sequence number) already lives in `beets_core::udp`.
