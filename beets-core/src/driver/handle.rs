//! What an application holds: the cloneable [`SpaceHandle`] and its errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::DirectSend;
use super::DriverStats;
use crate::Op;
use crate::message::{Message, RequestOp};
use crate::node::{
    Answer, DatagramEncoder, Delivery, NodeError, Received, RequestId, Scope, Transmit, Transport,
};
use crate::space::{DeliveryKinds, SpaceError, TupleId};
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
    Refused(super::Refusal),
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

/// A scoped request the engine accepted ([`SpaceHandle::rd_in`]).
pub(super) type StartedIn = (RequestId, oneshot::Receiver<Option<Answer>>);

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
    RequestIn(
        RequestOp,
        Template,
        Duration,
        Scope,
        Respond<Result<StartedIn, ClientError>>,
    ),
    /// The caller dropped a request's future: the engine forgets the request.
    Cancel(RequestId),
    Lease(
        Tuple,
        Option<Duration>,
        Respond<Result<TupleId, ClientError>>,
    ),
    Renew(TupleId, Option<Duration>, Respond<Result<(), ClientError>>),
    CancelLease(TupleId, Respond<Option<Tuple>>),
    HostRdAll(Template, Respond<Vec<Tuple>>),
    HostInpAll(Template, Respond<Vec<Tuple>>),
    HostRmAll(Template, Respond<Vec<Tuple>>),
    SubscribeTo(
        Template,
        DeliveryKinds,
        usize,
        Respond<mpsc::Receiver<Delivery>>,
    ),
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
                // Encoded on the stack: no allocation unless the socket would block.
                let mut buf = [0u8; crate::udp::MAX_DATAGRAM_LEN];
                let n = direct.encoder.encode_into(&msg, &mut buf)?;
                let datagram = &buf[..n];
                match direct.sink.try_send_now(datagram) {
                    Some(Ok(())) => return Ok(()),
                    Some(Err(e)) => {
                        direct.send_errors.fetch_add(1, Ordering::Relaxed);
                        warn!(error = %e, "send failed; node keeps running");
                        return Ok(());
                    }
                    None => Command::Transmit(Transmit::Datagram(datagram.to_vec())),
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

    async fn request_in(
        &self,
        op: RequestOp,
        template: Template,
        timeout: Duration,
        scope: Scope,
    ) -> Result<Option<Answer>, ClientError> {
        let (id, rx) = self
            .call(|r| Command::RequestIn(op, template, timeout, scope, r))
            .await??;
        let guard = CancelOnDrop {
            tx: &self.tx,
            id: Some(id),
        };
        let answer = rx.await.map_err(|_| ClientError::Closed);
        guard.disarm();
        answer
    }

    /// Reads a copy of a matching tuple in `scope`: the spaces in range ([`Scope::Network`], as
    /// [`rd`](Self::rd)), this node's own space ([`Scope::Local`]: at once if it holds a match,
    /// else the first matching tuple stored here before `timeout` — a local
    /// [`host_out`](Self::host_out) or an OUT from the air), or the local space first and then
    /// the network too ([`Scope::Both`]). `None` when nothing answered within `timeout`.
    /// [`Answer::received`] is `None` for a tuple from the local space.
    ///
    /// Over the network the request carries the timeout as its wait (spec §11): a node in range
    /// that stores a matching tuple while the request waits answers then.
    ///
    /// # Errors
    /// As [`SpaceHandle::rd`].
    pub async fn rd_in(
        &self,
        template: Template,
        timeout: Duration,
        scope: Scope,
    ) -> Result<Option<Answer>, ClientError> {
        self.request_in(RequestOp::Rd, template, timeout, scope)
            .await
    }

    /// Takes a matching tuple in `scope` (see [`rd_in`](Self::rd_in)). Locally the take is
    /// atomic: a tuple stored while this waits goes to the oldest waiting local `inp_in` and to
    /// nothing else.
    ///
    /// # Errors
    /// As [`SpaceHandle::rd`].
    pub async fn inp_in(
        &self,
        template: Template,
        timeout: Duration,
        scope: Scope,
    ) -> Result<Option<Answer>, ClientError> {
        self.request_in(RequestOp::Inp, template, timeout, scope)
            .await
    }

    /// Tests for a matching tuple in `scope` (see [`rd_in`](Self::rd_in)).
    ///
    /// # Errors
    /// As [`SpaceHandle::rd`].
    pub async fn test_in(
        &self,
        template: Template,
        timeout: Duration,
        scope: Scope,
    ) -> Result<Option<Answer>, ClientError> {
        self.request_in(RequestOp::Test, template, timeout, scope)
            .await
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

    /// Copies of every match in the local space, oldest first (the bulk `rd`).
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn host_rd_all(&self, template: Template) -> Result<Vec<Tuple>, ClientError> {
        self.call(|r| Command::HostRdAll(template, r)).await
    }

    /// Takes every match from the local space at once (the bulk `inp`, atomic: the driver does
    /// nothing else in between), oldest first. Listeners of removals hear
    /// [`DeliveryKind::Inp`](crate::DeliveryKind::Inp).
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn host_inp_all(&self, template: Template) -> Result<Vec<Tuple>, ClientError> {
        self.call(|r| Command::HostInpAll(template, r)).await
    }

    /// Removes every match from the local space and returns them, oldest first (listeners of
    /// removals hear [`DeliveryKind::Rm`](crate::DeliveryKind::Rm)).
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn host_rm_all(&self, template: Template) -> Result<Vec<Tuple>, ClientError> {
        self.call(|r| Command::HostRmAll(template, r)).await
    }

    /// Stores a tuple in the local space only, as [`host_out`](Self::host_out), and returns its
    /// [`Lease`]: renew it or cancel it while the tuple lives (JavaSpaces' `Lease`).
    ///
    /// # Errors
    /// As [`host_out`](Self::host_out); a lifetime of 0 is
    /// [`SpaceError::ZeroLifetime`] (use `None` for "until taken").
    pub async fn lease(
        &self,
        tuple: Tuple,
        lifetime: Option<Duration>,
    ) -> Result<Lease, ClientError> {
        let id = self.call(|r| Command::Lease(tuple, lifetime, r)).await??;
        Ok(Lease {
            handle: self.clone(),
            id,
        })
    }

    /// Subscribes to the `kinds` of deliveries of tuples matching `template`: with
    /// [`DeliveryKinds::REMOVALS`] also tuples taken by `inp` (local or remote), removed by `rm`
    /// or a cancelled lease, expired or evicted, each [`Delivery::kind`] saying which. Otherwise as
    /// [`subscribe`](Self::subscribe).
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn subscribe_to(
        &self,
        template: Template,
        kinds: DeliveryKinds,
        buffer: usize,
    ) -> Result<mpsc::Receiver<Delivery>, ClientError> {
        self.call(|r| Command::SubscribeTo(template, kinds, buffer.max(1), r))
            .await
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

/// A tuple stored by [`SpaceHandle::lease`], renewable and cancellable while it lives. Dropping
/// the lease leaves the tuple as it is.
#[derive(Clone, Debug)]
pub struct Lease {
    handle: SpaceHandle,
    id: TupleId,
}

impl Lease {
    /// The stored tuple's id in its space.
    pub fn id(&self) -> TupleId {
        self.id
    }

    /// The tuple now lives `lifetime` from now (`None`: until taken), whatever it had left.
    ///
    /// # Errors
    /// [`ClientError::Space`] with [`SpaceError::Gone`] once the tuple has left the space (taken,
    /// removed, evicted, expired) and [`SpaceError::ZeroLifetime`] for a zero lifetime;
    /// [`ClientError::Closed`].
    pub async fn renew(&self, lifetime: Option<Duration>) -> Result<(), ClientError> {
        self.handle
            .call(|r| Command::Renew(self.id, lifetime, r))
            .await?
    }

    /// Removes the tuple now and returns it; `None` when it had already left the space.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub async fn cancel(self) -> Result<Option<Tuple>, ClientError> {
        self.handle.call(|r| Command::CancelLease(self.id, r)).await
    }
}
