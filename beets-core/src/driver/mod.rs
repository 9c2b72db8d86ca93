//! The async driver: runs a sans-IO [`Node`] on tokio and gives applications a cloneable
//! [`SpaceHandle`] with async `out`, `notify`, `rd`, `inp`, `test`, `where` and the local `host`
//! operations (feature `tokio`).
//!
//! Backends stay thin: a backend gives the driver a [`FrameSink`] (how to broadcast one frame)
//! and a [`FrameSource`] (where received frames come from). The driver owns the node, feeds it,
//! sleeps until [`Node::poll_timeout`](crate::Node::poll_timeout), sends what [`Node::poll_transmit`](crate::Node::poll_transmit) gives, and routes
//! [`Event`](crate::Event)s to the waiting callers. `beets-udp` and `beets-ble` both use it.
//!
//! ```text
//!  SpaceHandle ──commands──▶ ┌────────────── driver task ──────────────┐ ──▶ FrameSink::send
//!  (clone per task)          │ Node (sans-IO) + timer + request table │
//!  ◀── replies / None ────── └─────────────────────────────────────────┘ ◀── FrameSource
//! ```
//!
//! A source that can be read without waiting (a UDP socket: `beets-udp`) is polled by the driver
//! itself, so a datagram goes from the socket buffer into the engine with no task hop and no
//! copy. A backend whose frames come from tasks of its own (the BLE scanners) hands them over a
//! channel: [`spawn`] takes an `mpsc::Receiver<ReceivedFrame>`, which is a source too.
//!
//! Closing: when every handle is dropped, or [`SpaceHandle::close`] is called, the driver stops;
//! requests still pending complete with [`ClientError::Closed`] ("space closed"), never silently.
//!
//! The modules split the driver by role: `backend` holds what a backend implements
//! ([`FrameSink`], [`FrameSource`], [`DirectSend`]); `handle` what an application holds
//! ([`SpaceHandle`], [`ClientError`]); `task` the tokio task that owns the [`Node`]
//! ([`spawn`], [`spawn_with_source`], [`DriverStats`]). Only the engine inside is sans-IO: this
//! module runs on tokio, with tokio's clock (`Instant`) converted to the engine's [`Time`].
//!
//! [`Node`]: crate::Node
//! [`Time`]: crate::Time

mod backend;
mod handle;
mod task;
#[cfg(test)]
mod tests;

pub use backend::{
    ChannelSource, DirectSend, FrameSink, FrameSource, OwnedFrame, ReceivedFrame, Refusal,
    SendError,
};
pub use handle::{ClientError, Lease, Reply, SpaceHandle};
pub use task::{DriverStats, spawn, spawn_with_source};
