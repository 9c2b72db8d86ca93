//! What an application holds: the cloneable [`SpaceHandle`] and its errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::DirectSend;
use super::DriverStats;
use crate::Op;
use crate::message::Message;
use crate::node::{DatagramEncoder, Delivery, NodeError, Received, RequestId, Transmit, Transport};
use crate::space::SpaceError;
use crate::tuple::{Template, Tuple};

/// Why an async operation failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The space's driver has stopped (closed, or all handles dropped); pending requests end so.
    #[error("space closed")]
    Closed,
    /// The engine refused the command (size, lifetime, too many pending).
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The local space refused the tuple (full).
    #[error(transparent)]
    Space(#[from] SpaceError),
    /// The backend refused the frame ([`SendError::Refused`](super::SendError::Refused)): it was not sent.
    #[error("not sent: {0}")]
    Refused(String),
}

/// A reply to a request: the tuple and how it arrived.
pub type Reply = (Tuple, Received);

/// What a handle needs to send an `out` itself.
pub(super) struct Direct {
    pub(super) encoder: DatagramEncoder,
    pub(super) sink: Arc<dyn DirectSend>,
    /// Send errors on this path, added to [`DriverStats::send_errors`].
    pub(super) send_errors: AtomicU64,
}

pub(super) type Respond<T> = oneshot::Sender<T>;

/// A request the engine accepted: its id and where its reply (or `None`) will come.
pub(super) type Started = (RequestId, oneshot::Receiver<Option<Reply>>);

pub(super) enum Command {
    Send(Message, Respond<Result<(), ClientError>>),
    /// A datagram a handle encoded but could not send without waiting.
    Transmit(Transmit),
    Notify(Tuple, Respond<Result<(), ClientError>>),
    Request(
        Op,
        Template,
        Duration,
        Respond<Result<Started, ClientError>>,
    ),
    /// The caller dropped a request's future: the engine forgets the request.
    Cancel(RequestId),
    HostOut(Tuple, Option<Duration>, Respond<Result<(), ClientError>>),
    HostRd(Template, Respond<Option<Tuple>>),
    HostInp(Template, Respond<Option<Tuple>>),
    HostRm(Template, Respond<usize>),
    HostCount(Template, Respond<usize>),
    HostSnapshot(Respond<Vec<Tuple>>),
    Subscribe(Template, usize, Respond<mpsc::Receiver<Delivery>>),
    Announce(Respond<Result<(), ClientError>>),
    Stats(Respond<DriverStats>),
    Close,
}

/// A cloneable handle to a running space. Every method is async and cheap to call from many
/// tasks; the driver serialises them.
#[derive(Clone, Debug)]
pub struct SpaceHandle {
    pub(super) tx: mpsc::Sender<Command>,
    pub(super) transport: Transport,
    pub(super) direct: Option<Arc<Direct>>,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("encoder", &self.encoder)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

/// Sends [`Command::Cancel`] when a request's future is dropped before its reply.
struct CancelOnDrop<'a> {
    tx: &'a mpsc::Sender<Command>,
    id: Option<RequestId>,
}

impl CancelOnDrop<'_> {
    fn disarm(mut self) {
        self.id = None;
    }
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            // A full command queue loses this cancel; the driver then notices the dropped
            // receiver when the reply or the timeout comes, and counts the reply all the same.
            let _ = self.tx.try_send(Command::Cancel(id));
        }
    }
}

impl SpaceHandle {
    async fn call<T>(&self, make: impl FnOnce(Respond<T>) -> Command) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// Broadcasts an OUT (see [`Node::out`](crate::Node::out)).
    ///
    /// On a UDP space whose backend has a direct path ([`FrameSink::direct`](super::FrameSink::direct)) the datagram is
    /// encoded and sent right here, in the caller's task; only when the socket would block does
    /// it go to the driver, which waits for the socket. (Two `out`s may then leave in another
    /// order than they were called — UDP may reorder them anyway; receivers do not rely on it.)
    ///
    /// # Errors
    /// [`ClientError::Node`] for an oversize tuple or bad lifetime; [`ClientError::Refused`] when
    /// the backend would not take the frame (e.g. a full BLE queue under a refuse policy);
    /// [`ClientError::Closed`].
    pub async fn out(&self, tuple: Tuple, lifetime: Option<Duration>) -> Result<(), ClientError> {
        // Checked here, never waiting for a reply.
        let msg = crate::node::out_message(self.transport, tuple, lifetime)?;
        let command = match &self.direct {
            // UDP with a direct sink: encoded and sent in this task, no hop to the driver.
            Some(direct) => {
                if self.tx.is_closed() {
                    return Err(ClientError::Closed);
                }
                let datagram = direct.encoder.encode(&msg)?;
                match direct.sink.try_send_now(&datagram) {
                    Some(Ok(())) => return Ok(()),
                    Some(Err(e)) => {
                        direct.send_errors.fetch_add(1, Ordering::Relaxed);
                        warn!(error = %e, "send failed; node keeps running");
                        return Ok(());
                    }
                    None => Command::Transmit(Transmit::Datagram(datagram)),
                }
            }
            // Otherwise the driver sends it and answers once the backend took it or refused.
            None => return self.call(|r| Command::Send(msg, r)).await?,
        };
        self.tx.send(command).await.map_err(|_| ClientError::Closed)
    }

    /// Broadcasts a notification (TUPLE, R = 0; see [`Node::notify`](crate::Node::notify)).
    ///
    /// # Errors
    /// [`ClientError::Node`] for an oversize tuple; [`ClientError::Refused`] when the backend
    /// would not take the frame; [`ClientError::Closed`].
    pub async fn notify(&self, tuple: Tuple) -> Result<(), ClientError> {
        self.call(|r| Command::Notify(tuple, r)).await?
    }

    async fn request(
        &self,
        op: Op,
        template: Template,
        timeout: Duration,
    ) -> Result<Option<Reply>, ClientError> {
        let (id, rx) = self
            .call(|r| Command::Request(op, template, timeout, r))
            .await??;
        // Dropping this future (a `select!`, a task abort) cancels the request in the engine, so
        // a reply that still comes is counted as lost instead of vanishing.
        let guard = CancelOnDrop {
            tx: &self.tx,
            id: Some(id),
        };
        let reply = rx.await.map_err(|_| ClientError::Closed);
        guard.disarm();
        reply
    }

    /// Reads a copy of a matching tuple from any space in range; `None` when nothing answered
    /// within `timeout`.
    ///
    /// # Errors
    /// [`ClientError::Node`] for an oversize template or too many pending requests;
    /// [`ClientError::Closed`] if the space closes first.
    pub async fn rd(
        &self,
        template: Template,
        timeout: Duration,
    ) -> Result<Option<Reply>, ClientError> {
        self.request(Op::Rd, template, timeout).await
    }

    /// Takes a matching tuple from a space in range; `None` on timeout.
    ///
    /// # Errors
    /// As [`SpaceHandle::rd`].
    pub async fn inp(
        &self,
        template: Template,
        timeout: Duration,
    ) -> Result<Option<Reply>, ClientError> {
        self.request(Op::Inp, template, timeout).await
    }

    /// Tests for a matching tuple in range; `None` on timeout.
    ///
    /// # Errors
    /// As [`SpaceHandle::rd`].
    pub async fn test(
        &self,
        template: Template,
        timeout: Duration,
    ) -> Result<Option<Reply>, ClientError> {
        self.request(Op::Test, template, timeout).await
    }

    /// Finds a node whose identity tuple matches; `None` on timeout.
    ///
    /// # Errors
    /// As [`SpaceHandle::rd`].
    pub async fn r#where(
        &self,
        template: Template,
        timeout: Duration,
    ) -> Result<Option<Reply>, ClientError> {
        self.request(Op::Where, template, timeout).await
    }

    /// Broadcasts this node's identity (IAMHERE) now.
    ///
    /// # Errors
    /// [`ClientError::Closed`], or [`ClientError::Node`] if the identity does not fit.
    pub async fn announce(&self) -> Result<(), ClientError> {
        self.call(Command::Announce).await?
    }

    /// Stores a tuple in the local space only (the paper's `host.out`).
    ///
    /// # Errors
    /// [`ClientError::Space`] when the space is full (refuse policy) or the lifetime is zero.
    pub async fn host_out(
        &self,
        tuple: Tuple,
        lifetime: Option<Duration>,
    ) -> Result<(), ClientError> {
        self.call(|r| Command::HostOut(tuple, lifetime, r)).await?
    }

    /// Reads from the local space only.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn host_rd(&self, template: Template) -> Result<Option<Tuple>, ClientError> {
        self.call(|r| Command::HostRd(template, r)).await
    }

    /// Takes from the local space only.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn host_inp(&self, template: Template) -> Result<Option<Tuple>, ClientError> {
        self.call(|r| Command::HostInp(template, r)).await
    }

    /// Removes every match from the local space; returns how many.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn host_rm(&self, template: Template) -> Result<usize, ClientError> {
        self.call(|r| Command::HostRm(template, r)).await
    }

    /// Counts matches in the local space (the `test` of the host mirror).
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn host_count(&self, template: Template) -> Result<usize, ClientError> {
        self.call(|r| Command::HostCount(template, r)).await
    }

    /// A copy of every live tuple in the local space, oldest first.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn host_tuples(&self) -> Result<Vec<Tuple>, ClientError> {
        self.call(Command::HostSnapshot).await
    }

    /// Subscribes to stored OUTs and notifications matching `template`: each comes as a
    /// [`Delivery`] with the tuple, whether it was stored or only notified, the sender's address,
    /// the RSSI in dBm (BLE) and the receive time. At most `buffer` deliveries wait in the
    /// channel; more are dropped and counted ([`DriverStats::deliveries_dropped`]). Dropping the
    /// receiver ends the subscription.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn subscribe(
        &self,
        template: Template,
        buffer: usize,
    ) -> Result<mpsc::Receiver<Delivery>, ClientError> {
        self.call(|r| Command::Subscribe(template, buffer.max(1), r))
            .await
    }

    /// The counters.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn stats(&self) -> Result<DriverStats, ClientError> {
        self.call(Command::Stats).await
    }

    /// Stops the driver; pending requests complete with [`ClientError::Closed`].
    pub async fn close(&self) {
        let _ = self.tx.send(Command::Close).await;
    }
}
