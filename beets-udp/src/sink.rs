//! The sending side: a [`FrameSink`] that sends each datagram to every destination, the
//! repeater task that sends the extra copies later, and the batcher that sends datagrams queued
//! in one runtime turn together.
//!
//! **Batched sends (GSO).** Where the platform has UDP GSO (Linux ≥ 4.18, through `quinn-udp`;
//! no `unsafe` of ours), a datagram is not sent at once but appended to a batch of equal-size
//! segments, and the batch leaves as one `sendmsg` with `UDP_SEGMENT` per destination: when it
//! is full (32 segments or ≈ 64 KB), when a datagram of another size comes, at close, or when the
//! batcher task runs. The batcher is woken by the first datagram of a batch and, scheduled from
//! a runtime thread, runs on that thread as soon as the task that sent awaits anything that
//! waits — so `out`s in a row (and the engine's datagrams of one driver turn: replies,
//! requests, frames that waited for the socket, the repeater's copies) share a system call, and a lone `out` leaves
//! at its caller's next await. The kernel splits the batch back into datagrams: receivers see
//! ordinary datagrams. Without GSO every datagram is sent at once, as before.
//!
//! The price: a task that `out`s and then blocks its thread without awaiting (a synchronous
//! wait inside async code, or `Runtime::block_on(out)` followed by blocking code on a
//! current-thread runtime) holds its datagrams until the runtime runs again.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use std::sync::Mutex;

use beets_core::Transmit;
use beets_core::driver::{DirectSend, FrameSink, SendError};
use quinn_udp::UdpSocketState;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::stats::Counters;

/// Most datagrams waiting for their repeated copies; beyond it new datagrams get no copies (and
/// [`UdpStats::repeats_dropped`](crate::UdpStats::repeats_dropped) counts them).
pub(crate) const REPEAT_QUEUE: usize = 4096;

/// Most segments in one GSO send (the kernel allows 64): a batch that falls back behind later
/// datagrams stays well within a sealed receiver's replay window of 64 counters.
const GSO_SEGMENTS: usize = 32;
/// Most bytes in one GSO send: the largest UDP payload over IPv4 is 65 507 bytes.
const GSO_BYTES: usize = 65_000;

/// Socket, destinations and counters, shared by the sink, the handles' direct path, the
/// repeater and the batcher.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) destinations: Box<[SocketAddr]>,
    pub(crate) counters: Arc<Counters>,
    /// Batched sends (see the module docs); `None`: every datagram at once.
    pub(crate) batch: Option<Batch>,
}

/// Datagrams waiting to leave together, and how they leave.
#[derive(Debug)]
pub(crate) struct Batch {
    state: Arc<UdpSocketState>,
    max_segments: usize,
    pending: Mutex<Segments>,
    /// Wakes the batcher task when a batch starts (and when the output is dropped).
    pub(crate) wake: Arc<Notify>,
}

impl Batch {
    /// A batch sending through `state`, or `None` when the platform has no GSO.
    pub(crate) fn new(state: Arc<UdpSocketState>) -> Option<Batch> {
        let max_segments = state.max_gso_segments().min(GSO_SEGMENTS);
        (max_segments > 1).then(|| Batch {
            state,
            max_segments,
            pending: Mutex::new(Segments {
                buf: Vec::with_capacity(GSO_BYTES),
                size: 0,
                count: 0,
            }),
            wake: Arc::new(Notify::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Segments> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Equal-size datagrams back to back: one GSO send.
#[derive(Debug)]
struct Segments {
    buf: Vec<u8>,
    /// The size of each.
    size: usize,
    count: usize,
}

impl Segments {
    fn clear(&mut self) {
        self.buf.clear();
        self.size = 0;
        self.count = 0;
    }

    /// Whether `len` more bytes can join (same size, room left).
    fn fits(&self, len: usize, max_segments: usize) -> bool {
        self.count == 0
            || (len == self.size && self.count < max_segments && self.buf.len() + len <= GSO_BYTES)
    }
}

impl Output {
    /// Appends `datagram` to the batch (sending the batch first when it does not fit); `None`
    /// when the batch had to go first and the socket would block (nothing queued: the caller
    /// sends `datagram` another way). Only with [`Output::batch`].
    fn queue(&self, batch: &Batch, datagram: &[u8]) -> Option<io::Result<()>> {
        let mut pending = batch.lock();
        let mut result = Ok(());
        if !pending.fits(datagram.len(), batch.max_segments) {
            result = self.try_send_segments(batch, &pending)?;
            pending.clear();
        }
        if pending.count == 0 {
            pending.size = datagram.len();
            // The batcher sends it when the runtime next runs it.
            batch.wake.notify_one();
        }
        pending.buf.extend_from_slice(datagram);
        pending.count += 1;
        if pending.count >= batch.max_segments
            && let Some(r) = self.try_send_segments(batch, &pending)
        {
            pending.clear();
            result = result.and(r);
        }
        Some(result)
    }

    /// Sends `segments` to every destination without waiting: `None` when the first send would
    /// block (nothing sent). Counts each datagram.
    fn try_send_segments(&self, batch: &Batch, segments: &Segments) -> Option<io::Result<()>> {
        let mut first_error = None;
        for (i, &dest) in self.destinations.iter().enumerate() {
            let transmit = gso_transmit(dest, segments);
            let socket = &self.socket;
            let result = socket.try_io(Interest::WRITABLE, || {
                batch.state.try_send((&**socket).into(), &transmit)
            });
            if i == 0 && matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                return None;
            }
            self.count_segments(result, dest, segments, &mut first_error);
        }
        Some(first_error.map_or(Ok(()), Err))
    }

    /// Sends what the batch holds, waiting for the socket when it would block. The batch is
    /// sent from its place, under its lock, so no later datagram overtakes it (a sealed space's
    /// receivers accept counters at most 64 behind the newest: spec §12's replay window).
    pub(crate) async fn flush(&self) {
        let Some(batch) = &self.batch else { return };
        loop {
            {
                let mut pending = batch.lock();
                if pending.count == 0 {
                    return;
                }
                if let Some(result) = self.try_send_segments(batch, &pending) {
                    pending.clear();
                    if let Err(e) = result {
                        warn!(error = %e, "batched send failed");
                    }
                    return;
                }
            }
            // The socket would block: wait for room, the batch keeping its place.
            if let Err(e) = self.socket.writable().await {
                let mut pending = batch.lock();
                Counters::add(&self.counters.send_errors, pending.count as u64);
                warn!(error = %e, "batched send failed");
                pending.clear();
                return;
            }
        }
    }

    /// Counts one GSO send of `segments` to `dest`. GSO refused (`EIO`/`EINVAL`: a device
    /// without segmentation offload; `quinn-udp` then stops offering it) sends the segments one
    /// by one instead.
    fn count_segments(
        &self,
        result: io::Result<()>,
        dest: SocketAddr,
        segments: &Segments,
        first_error: &mut Option<io::Error>,
    ) {
        let n = segments.count as u64;
        match result {
            Ok(()) => {
                Counters::add(&self.counters.datagrams_sent, n);
                if n > 1 {
                    Counters::add(&self.counters.batched_sends, 1);
                }
            }
            Err(_) if n > 1 => {
                for d in segments.buf.chunks(segments.size) {
                    let r = self.socket.try_send_to(d, dest);
                    self.count(r, dest, false, first_error);
                }
            }
            Err(e) => self.count(Err(e), dest, false, first_error),
        }
    }

    /// Sends `datagram` to every destination; tries all of them, then returns the first error
    /// (with the destination in its message).
    async fn send_all(&self, datagram: &[u8], copy: bool) -> io::Result<()> {
        let mut first_error = None;
        for &dest in &self.destinations {
            let result = self.socket.send_to(datagram, dest).await;
            self.count(result, dest, copy, &mut first_error);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// [`send_all`](Self::send_all) without waiting: `None` when the first send would block
    /// (nothing sent). A later destination that would block — the socket's buffer filled up
    /// in between — counts as a failed send to it.
    fn try_send_all(&self, datagram: &[u8]) -> Option<io::Result<()>> {
        let mut first_error = None;
        for (i, &dest) in self.destinations.iter().enumerate() {
            let result = self.socket.try_send_to(datagram, dest);
            if i == 0 && matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                return None;
            }
            self.count(result, dest, false, &mut first_error);
        }
        Some(first_error.map_or(Ok(()), Err))
    }

    /// Sends `datagram` now or, with batching, queues it; `None` when it would block.
    fn try_send_or_queue(&self, datagram: &[u8]) -> Option<io::Result<()>> {
        match &self.batch {
            Some(batch) => self.queue(batch, datagram),
            None => self.try_send_all(datagram),
        }
    }

    /// Sends a repeated copy: into the batch when there is one (counted as a repeat once
    /// queued; its send is counted with the batch), else at once.
    async fn send_copy(&self, datagram: &[u8]) -> io::Result<()> {
        if let Some(batch) = &self.batch
            && let Some(result) = self.queue(batch, datagram)
        {
            Counters::add(&self.counters.repeats_sent, self.destinations.len() as u64);
            return result;
        }
        self.send_all(datagram, true).await
    }

    /// Counts one `send_to` and keeps the first error, naming the destination.
    fn count(
        &self,
        result: io::Result<usize>,
        dest: SocketAddr,
        copy: bool,
        first_error: &mut Option<io::Error>,
    ) {
        match result {
            Ok(_) => {
                Counters::add(&self.counters.datagrams_sent, 1);
                if copy {
                    Counters::add(&self.counters.repeats_sent, 1);
                }
            }
            Err(e) => {
                Counters::add(&self.counters.send_errors, 1);
                first_error.get_or_insert_with(|| {
                    io::Error::new(e.kind(), format!("send to {dest} failed: {e}"))
                });
            }
        }
    }
}

impl Drop for Output {
    /// The last user is gone (the space closed, or the runtime shut down): what the batch still
    /// holds goes out if the socket takes it now, and the batcher task ends.
    fn drop(&mut self) {
        if let Some(batch) = &self.batch {
            let mut pending = batch.lock();
            if pending.count > 0 {
                for &dest in &self.destinations {
                    let transmit = gso_transmit(dest, &pending);
                    let result = batch.state.try_send((&*self.socket).into(), &transmit);
                    let mut first_error = None;
                    self.count_segments(result, dest, &pending, &mut first_error);
                }
                pending.clear();
            }
            batch.wake.notify_one();
        }
    }
}

/// One GSO send of `segments` to `dest` (a plain datagram when there is one).
fn gso_transmit(dest: SocketAddr, segments: &Segments) -> quinn_udp::Transmit<'_> {
    quinn_udp::Transmit {
        destination: dest,
        ecn: None,
        contents: &segments.buf,
        segment_size: (segments.count > 1).then_some(segments.size),
        src_ip: None,
    }
}

/// The batcher task: sends each batch when the runtime gets to it (see the module docs). Ends
/// when the output is gone.
pub(crate) async fn batcher(output: Weak<Output>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(output) = output.upgrade() else {
            break;
        };
        output.flush().await;
    }
}

/// Hands the datagram's repeated copies to the repeater (or counts them dropped when its inbox
/// is full).
fn queue_repeats(output: &Output, repeat: u8, inbox: &mpsc::Sender<Arc<[u8]>>, datagram: &[u8]) {
    if inbox.try_send(datagram.into()).is_err() {
        Counters::add(&output.counters.repeats_dropped, u64::from(repeat));
    }
}

/// The handles' direct path ([`FrameSink::direct`]): the first copy at once from the caller's
/// task, further copies by the repeater task.
///
/// Handles may outlive the space, so this holds the socket and the repeater's inbox weakly:
/// closing the space still closes the socket and ends the repeater, and a late `out` then
/// finds nothing to send with and goes to the (closed) driver, which reports
/// [`ClientError::Closed`](beets_core::driver::ClientError::Closed).
#[derive(Debug)]
pub(crate) struct UdpDirect {
    output: Weak<Output>,
    repeat: u8,
    repeater: Option<mpsc::WeakSender<Arc<[u8]>>>,
}

impl DirectSend for UdpDirect {
    fn try_send_now(&self, datagram: &[u8]) -> Option<io::Result<()>> {
        let output = self.output.upgrade()?;
        let result = output.try_send_or_queue(datagram)?;
        if let Some(inbox) = &self.repeater {
            match inbox.upgrade() {
                Some(inbox) => queue_repeats(&output, self.repeat, &inbox, datagram),
                None => Counters::add(&output.counters.repeats_dropped, u64::from(self.repeat)),
            }
        }
        Some(result)
    }
}

/// The driver's sink: first copy at once, further copies by the repeater (or at once when the
/// interval is zero).
#[derive(Debug)]
pub(crate) struct UdpSink {
    pub(crate) output: Arc<Output>,
    pub(crate) repeat: u8,
    /// The repeater's inbox; `None` when copies go back to back (or there are none).
    pub(crate) repeater: Option<mpsc::Sender<Arc<[u8]>>>,
}

impl FrameSink for UdpSink {
    async fn send(&mut self, tx: Transmit) -> Result<(), SendError> {
        self.send_ref(&tx).await
    }

    /// Sends the datagram from the engine's buffer, which the driver then recycles.
    async fn send_ref(&mut self, tx: &Transmit) -> Result<(), SendError> {
        let Transmit::Datagram(datagram) = tx else {
            return Err(SendError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a BLE advertisement cannot be sent over UDP",
            )));
        };
        let result = match self.output.try_send_or_queue(datagram) {
            Some(r) => r,
            None => self.output.send_all(datagram, false).await,
        };
        if self.repeat > 0 {
            match &self.repeater {
                Some(inbox) => queue_repeats(&self.output, self.repeat, inbox, datagram),
                None => {
                    for _ in 0..self.repeat {
                        if let Err(e) = self.output.send_all(datagram, true).await {
                            warn!(error = %e, "repeated copy not sent");
                        }
                    }
                }
            }
        }
        result.map_err(SendError::Io)
    }

    /// The direct path, unless copies go back to back (`repeat` > 0 with a zero interval: those
    /// wait for the socket, so they stay with the driver).
    fn direct(&self) -> Option<Arc<dyn DirectSend>> {
        if self.repeat > 0 && self.repeater.is_none() {
            return None;
        }
        Some(Arc::new(UdpDirect {
            output: Arc::downgrade(&self.output),
            repeat: self.repeat,
            repeater: self.repeater.as_ref().map(mpsc::Sender::downgrade),
        }))
    }
}

struct Due {
    at: Instant,
    left: u8,
    datagram: Arc<[u8]>,
}

/// Sends `repeat` copies of each datagram from `inbox`, `interval` apart, until the sink (and so
/// the space) is gone. Every entry is queued at "now + interval", so the queue stays in order.
pub(crate) async fn repeater(
    output: Arc<Output>,
    repeat: u8,
    interval: Duration,
    mut inbox: mpsc::Receiver<Arc<[u8]>>,
) {
    let mut queue: VecDeque<Due> = VecDeque::new();
    loop {
        let next = queue.front().map(|d| d.at);
        tokio::select! {
            msg = inbox.recv() => {
                let Some(datagram) = msg else { break };
                if queue.len() >= REPEAT_QUEUE {
                    Counters::add(&output.counters.repeats_dropped, u64::from(repeat));
                } else {
                    queue.push_back(Due { at: Instant::now() + interval, left: repeat, datagram });
                }
            }
            // Disabled while nothing waits (the inbox branch is always on).
            () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let Some(mut due) = queue.pop_front() else { continue };
                if let Err(e) = output.send_copy(&due.datagram).await {
                    warn!(error = %e, "repeated copy not sent");
                }
                due.left -= 1;
                if due.left > 0 {
                    due.at = Instant::now() + interval;
                    queue.push_back(due);
                }
            }
        }
    }
    let pending: u64 = queue.iter().map(|d| u64::from(d.left)).sum();
    debug!(pending, "repeater stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use beets_core::{Message, ble};

    #[tokio::test(flavor = "current_thread")]
    async fn an_advertisement_is_refused_not_sent() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let counters = Arc::new(Counters::default());
        let mut sink = UdpSink {
            output: Arc::new(Output {
                socket: Arc::new(socket),
                destinations: Box::new([]),
                counters: Arc::clone(&counters),
                batch: None,
            }),
            repeat: 0,
            repeater: None,
        };
        let msg = Message::Rd("(\"T\", ?)".parse().unwrap());
        let adv = ble::pack_message(0, &msg, None).unwrap();
        let err = sink.send(Transmit::Advertisement(adv)).await.unwrap_err();
        assert!(
            matches!(&err, SendError::Io(e) if e.kind() == io::ErrorKind::InvalidInput),
            "{err}"
        );
        assert_eq!(counters.snapshot(), crate::UdpStats::default());
    }
}
