//! `beets node --stats SECS`: one line per space every SECS seconds — frames, messages, drops by
//! reason, queue depth and neighbours — printed on stdout and logged; `--stats-json` prints one
//! JSON object per line instead.

use std::time::Duration;

use beets::core::driver::{DriverStats, SpaceHandle};
use tracing::info;

/// A space's counters at one moment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot<'a> {
    /// The space's name (`udp-ts`, `ble-ts`).
    pub(crate) space: &'a str,
    /// Seconds since the node started.
    pub(crate) uptime: Duration,
    /// The driver's and engine's counters.
    pub(crate) stats: DriverStats,
    /// Frames waiting to be sent: the driver's (UDP) or the BLE sender queue.
    pub(crate) queue: usize,
}

/// The drops, by reason, in the order printed: (name, count).
pub(crate) fn drops(s: &DriverStats) -> [(&'static str, u64); 11] {
    let n = &s.node;
    [
        ("duplicate", n.duplicates),
        ("malformed", n.dropped_malformed),
        ("key", n.dropped_key),
        ("own", n.dropped_own),
        ("transport", n.dropped_transport),
        ("not-stored", n.not_stored),
        ("filtered", n.filtered),
        ("decision-expired", n.decisions_expired),
        ("transmit-full", n.transmits_dropped),
        ("send-error", s.send_errors),
        ("delivery-full", s.deliveries_dropped),
    ]
}

/// `stats udp-ts t=5s frames in=3 out=2 messages=2 stored=1 drops duplicate=1 … queue=0 pending=0 neighbours=1`
pub(crate) fn line(s: &Snapshot<'_>) -> String {
    let n = &s.stats.node;
    let mut out = format!(
        "stats {} t={}s frames in={} out={} messages={} stored={} replies={} drops",
        s.space,
        s.uptime.as_secs(),
        n.frames_in,
        n.transmits,
        n.messages_in,
        n.stored,
        n.replies_sent
    );
    for (name, count) in drops(&s.stats) {
        out += &format!(" {name}={count}");
    }
    out += &format!(
        " queue={} pending={} neighbours={}",
        s.queue, s.stats.pending_requests, s.stats.neighbours
    );
    out
}

/// The same as one JSON object.
pub(crate) fn json(s: &Snapshot<'_>) -> String {
    let n = &s.stats.node;
    let drops: serde_json::Map<String, serde_json::Value> = drops(&s.stats)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
    serde_json::json!({
        "space": s.space,
        "t_s": s.uptime.as_secs(),
        "frames_in": n.frames_in,
        "frames_out": n.transmits,
        "messages": n.messages_in,
        "stored": n.stored,
        "replies": n.replies_sent,
        "drops": drops,
        "queue": s.queue,
        "pending": s.stats.pending_requests,
        "neighbours": s.stats.neighbours,
    })
    .to_string()
}

/// Prints (and logs) one line per space.
pub(crate) async fn report(
    spaces: &[(&'static str, SpaceHandle)],
    started: tokio::time::Instant,
    as_json: bool,
) {
    for (name, handle) in spaces {
        let Ok(stats) = handle.stats().await else {
            continue;
        };
        let snap = Snapshot {
            space: name,
            uptime: started.elapsed(),
            stats,
            queue: stats.queued,
        };
        let text = if as_json { json(&snap) } else { line(&snap) };
        println!("{text}");
        info!(target: "beets::stats", "{text}");
    }
}

/// Reports every `every` until the task is aborted.
pub(crate) async fn task(
    spaces: Vec<(&'static str, SpaceHandle)>,
    every: Duration,
    started: tokio::time::Instant,
    as_json: bool,
) {
    let mut tick = tokio::time::interval_at(started + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        report(&spaces, started, as_json).await;
    }
}
