//! The sending side: a [`FrameSink`] that sends each datagram to every destination, and the
//! repeater task that sends the extra copies later.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use beets_core::Transmit;
use beets_core::driver::{DirectSend, FrameSink, SendError};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::stats::Counters;

/// Most datagrams waiting for their repeated copies; beyond it new datagrams get no copies (and
/// [`UdpStats::repeats_dropped`](crate::UdpStats::repeats_dropped) counts them).
pub(crate) const REPEAT_QUEUE: usize = 4096;

/// Socket, destinations and counters, shared by the sink and the repeater.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) destinations: Box<[SocketAddr]>,
    pub(crate) counters: Arc<Counters>,
}

impl Output {
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
        let result = output.try_send_all(datagram)?;
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
        let result = self.output.send_all(datagram, false).await;
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
                if let Err(e) = output.send_all(&due.datagram, true).await {
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
