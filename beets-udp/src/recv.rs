//! The receive task: socket → engine.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use beets_core::PeerAddr;
use beets_core::driver::{OwnedFrame, ReceivedFrame};
use beets_core::udp::MAX_DATAGRAM_LEN;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, trace, warn};

use crate::stats::Counters;

/// Pause after a socket error, so a persistent error does not spin the task.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Reads datagrams into the driver's channel until the driver is gone.
///
/// The buffer is one byte longer than the largest valid datagram, so an oversize datagram shows
/// as 1233 bytes and the engine drops it as too long (spec §7) instead of parsing a truncation.
/// Checks, dedup and own-broadcast drop are the engine's (by node id).
///
/// Each wake-up drains what the socket holds (while the channel has room) before waiting again,
/// so a burst costs one wake-up, not one per datagram. When the channel is full the task waits
/// for room and the kernel's socket buffer takes up the slack (or drops, bounded).
pub(crate) async fn receive(
    socket: Arc<UdpSocket>,
    frames: mpsc::Sender<ReceivedFrame>,
    counters: Arc<Counters>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN + 1];
    'wait: loop {
        let ready = tokio::select! {
            biased;
            () = frames.closed() => break,
            r = socket.readable() => r,
        };
        if let Err(e) = ready {
            if pause_after(&e, &frames, &counters).await {
                continue;
            }
            break;
        }
        loop {
            // Yields now and then, so a flood cannot starve the other tasks of the runtime.
            tokio::task::consume_budget().await;
            let permit = match frames.try_reserve() {
                Ok(p) => p,
                Err(mpsc::error::TrySendError::Full(())) => match frames.reserve().await {
                    Ok(p) => p,
                    Err(_) => break 'wait,
                },
                Err(mpsc::error::TrySendError::Closed(())) => break 'wait,
            };
            match socket.try_recv_from(&mut buf) {
                Ok((len, from)) => permit.send(frame(&buf[..len], from, &counters)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue 'wait,
                Err(e) => {
                    if pause_after(&e, &frames, &counters).await {
                        continue 'wait;
                    }
                    break 'wait;
                }
            }
        }
    }
    debug!("receive task stopped");
}

fn frame(bytes: &[u8], from: SocketAddr, counters: &Counters) -> ReceivedFrame {
    Counters::add(&counters.datagrams_received, 1);
    if bytes.len() > MAX_DATAGRAM_LEN {
        Counters::add(&counters.oversize_received, 1);
        trace!(%from, "oversize datagram");
    }
    ReceivedFrame {
        from: PeerAddr::Ip(from),
        frame: OwnedFrame::Datagram(bytes.to_vec()),
        rssi: None,
    }
}

/// Counts and logs a socket error, then pauses; `false` when the driver is gone meanwhile.
async fn pause_after(
    e: &io::Error,
    frames: &mpsc::Sender<ReceivedFrame>,
    counters: &Counters,
) -> bool {
    Counters::add(&counters.receive_errors, 1);
    warn!(error = %e, "receiving failed; retrying");
    tokio::select! {
        () = frames.closed() => false,
        () = tokio::time::sleep(ERROR_PAUSE) => true,
    }
}
