//! BeeTS core: the protocol of distributed tuple spaces over radio broadcast, with no I/O.
pub mod ascii85;
pub mod ble;
pub mod dedup;
#[cfg(feature = "tokio")]
pub mod driver;
pub mod fpe;
#[doc(hidden)]
pub mod fuzzing;
pub mod message;
pub mod node;
pub mod sim;
pub mod space;
pub mod text;
pub mod time;
pub mod tuple;
pub mod udp;
pub mod value;

pub use fpe::FpeKey;
pub use message::{DecodeError, Decoded, Message, Op};
pub use node::{
    Event, Frame, Node, NodeConfig, NodeError, NodeStats, PeerAddr, Received, RequestId, Transmit,
    Transport,
};
pub use space::{
    CapacityPolicy, Delivery, DeliveryKind, ListenerId, OutReport, Space, SpaceConfig, SpaceError,
    SpaceStats,
};
pub use text::{ParseError, parse_template, parse_tuple};
pub use time::Time;
pub use tuple::{Field, MAX_ARITY, Template, Tuple, TupleError};
pub use value::{MAX_VALUE_LEN, TypeCode, Value, ValueError};
