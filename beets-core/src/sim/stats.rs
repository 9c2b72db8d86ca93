//! What the medium counts: per directed link, per node, for the whole medium (paper Fig. 8).

use std::fmt;
use std::time::Duration;

use arrayvec::ArrayString;

use crate::ble::MAX_NAME_LEN;
use crate::ble::scheduler::SchedulerStats;
use crate::time::Time;

use super::SimNodeId;

/// Names one frame put on the medium: one BLE advertisement (advertised for Δt) or one datagram.
/// Unique within a [`Sim`](super::Sim), increasing in the order frames go on air.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameId(pub(super) u64);

impl FrameId {
    /// The id as a number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// One sender → receiver direction. Counts frames the receiver could have heard: the sender's
/// frames put on air since both nodes existed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStats {
    /// The sender.
    pub from: SimNodeId,
    /// The receiver.
    pub to: SimNodeId,
    /// Distinct frames the sender put on air.
    pub frames_sent: u64,
    /// Distinct frames of which at least one packet (or datagram copy) reached the receiver's
    /// `handle_frame`.
    pub frames_received: u64,
    /// Distinct frames the receiver's engine accepted from at least one delivery (processed as
    /// new, or dropped as a repeat of one it processed): what reached the application.
    pub frames_accepted: u64,
    /// Packets (BLE) or datagram copies delivered, repeats included.
    pub packets_received: u64,
}

impl LinkStats {
    /// `frames_received / frames_sent` (1 when nothing was sent): the medium's view, Fig. 8.
    pub fn reception_ratio(&self) -> f64 {
        ratio(self.frames_received, self.frames_sent)
    }

    /// `frames_accepted / frames_sent` (1 when nothing was sent): what the application saw.
    pub fn delivery_ratio(&self) -> f64 {
        ratio(self.frames_accepted, self.frames_sent)
    }
}

/// Counters of one node on the medium.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeSimStats {
    /// The node.
    pub id: SimNodeId,
    /// Distinct frames put on air (BLE: advertising periods started; UDP: datagrams sent).
    pub frames_sent: u64,
    /// BLE advertising packets sent (UDP: datagrams sent).
    pub packets_sent: u64,
    /// Distinct frames of other nodes of which at least one delivery reached this node.
    pub frames_received: u64,
    /// Distinct frames of other nodes its engine accepted (see [`LinkStats::frames_accepted`]).
    pub frames_accepted: u64,
    /// Deliveries to this node, repeats included (UDP loopback excluded).
    pub packets_received: u64,
    /// BLE frames dropped from a full sender queue ([`QueuePolicy::DropOldest`](super::QueuePolicy::DropOldest));
    /// the scheduler's [`SchedulerStats::dropped_oldest`].
    pub queue_dropped: u64,
    /// BLE frames refused by a full sender queue ([`QueuePolicy::Refuse`](super::QueuePolicy::Refuse));
    /// the scheduler's [`SchedulerStats::refused`].
    pub queue_refused: u64,
    /// Largest sender queue length seen (frames waiting, those on air excluded); the
    /// scheduler's [`SchedulerStats::max_queue`].
    pub queue_max: u64,
    /// Every counter of the node's BLE [`Scheduler`](crate::ble::scheduler::Scheduler), as
    /// `beets-ble` reports them for a radio (all 0 for a UDP node).
    pub scheduler: SchedulerStats,
    /// Events dropped from the sim's per-node log ([`SimConfig::event_log_capacity`](super::SimConfig::event_log_capacity)).
    pub events_dropped: u64,
}

/// Counters of the whole medium.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediumStats {
    /// Delivery attempts: (packet or datagram, receiver in range) pairs.
    pub attempts: u64,
    /// Deliveries made, duplicates included.
    pub delivered: u64,
    /// BLE packets lost to distance and the scanner (p0 and the distance factor).
    pub lost_distance: u64,
    /// BLE packets lost to overlapping events.
    pub lost_collision: u64,
    /// Deliveries lost to [`SimConfig::loss`](super::SimConfig::loss).
    pub lost_random: u64,
    /// Extra copies made by [`SimConfig::duplicate`](super::SimConfig::duplicate).
    pub duplicated: u64,
    /// Times a node still wanted a timeout at or before `now` right after `handle_timeout(now)`
    /// (an engine that spins); the sim then waits 1 ms. 0 for a healthy engine.
    pub timer_spins: u64,
    /// Events processed by the driver.
    pub steps: u64,
    /// `run_*` calls that stopped at [`SimConfig::max_steps_per_run`](super::SimConfig::max_steps_per_run).
    pub step_limit_hits: u64,
}

/// A snapshot of the medium's counters, from [`Sim::stats`](super::Sim::stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimStats {
    /// Simulated time since the start (time 0).
    pub elapsed: Duration,
    /// Every ordered pair of distinct nodes on the same transport, sorted by (from, to).
    pub links: Vec<LinkStats>,
    /// Every node, in id order.
    pub nodes: Vec<NodeSimStats>,
    /// The medium.
    pub medium: MediumStats,
}

impl SimStats {
    /// The link `from → to`, if both exist and share a transport.
    pub fn link(&self, from: SimNodeId, to: SimNodeId) -> Option<&LinkStats> {
        self.links
            .binary_search_by_key(&(from, to), |l| (l.from, l.to))
            .ok()
            .map(|i| &self.links[i])
    }

    /// A node's counters.
    pub fn node(&self, id: SimNodeId) -> &NodeSimStats {
        &self.nodes[id.index()]
    }

    /// Distinct (frame, receiver) pairs accepted, per simulated second: the medium's useful
    /// throughput. 0 when no time has passed.
    pub fn delivered_per_sec(&self) -> f64 {
        per_sec(
            self.links.iter().map(|l| l.frames_accepted).sum(),
            self.elapsed,
        )
    }

    /// Distinct frames accepted by `to` (from anyone), per simulated second.
    pub fn accepted_per_sec(&self, to: SimNodeId) -> f64 {
        per_sec(self.node(to).frames_accepted, self.elapsed)
    }

    /// Overall reception ratio: Σ frames received / Σ frames sent over all links.
    pub fn reception_ratio(&self) -> f64 {
        let (r, s) = self.links.iter().fold((0, 0), |(r, s), l| {
            (r + l.frames_received, s + l.frames_sent)
        });
        ratio(r, s)
    }

    /// Overall delivery ratio: Σ frames accepted / Σ frames sent over all links.
    pub fn delivery_ratio(&self) -> f64 {
        let (a, s) = self.links.iter().fold((0, 0), |(a, s), l| {
            (a + l.frames_accepted, s + l.frames_sent)
        });
        ratio(a, s)
    }
}

impl fmt::Display for SimStats {
    /// A table in the manner of the paper's Fig. 8: one line per link that carried anything.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>6} {:>6} {:>8} {:>8} {:>8} {:>7} {:>7}",
            "from", "to", "sent", "recv", "accept", "recv%", "accept%"
        )?;
        for l in self.links.iter().filter(|l| l.frames_sent > 0) {
            writeln!(
                f,
                "{:>6} {:>6} {:>8} {:>8} {:>8} {:>6.1}% {:>6.1}%",
                l.from.index(),
                l.to.index(),
                l.frames_sent,
                l.frames_received,
                l.frames_accepted,
                100.0 * l.reception_ratio(),
                100.0 * l.delivery_ratio()
            )?;
        }
        write!(
            f,
            "{:.1} s simulated, {:.2} distinct frames delivered/s, reception {:.1}%",
            self.elapsed.as_secs_f64(),
            self.delivered_per_sec(),
            100.0 * self.reception_ratio()
        )
    }
}

/// One advertising period of one frame on one instance, from [`Sim::timeline`](super::Sim::timeline).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdvertisingRecord {
    /// The advertiser.
    pub node: SimNodeId,
    /// The advertising instance (0-based).
    pub instance: usize,
    /// The frame.
    pub frame: FrameId,
    /// Its local name (tells frames apart in a test).
    pub local_name: ArrayString<MAX_NAME_LEN>,
    /// When it went on air.
    pub start: Time,
    /// When the next frame replaced it or advertising stopped (start + Δt).
    pub end: Time,
    /// Advertising packets sent during the period.
    pub packets: u32,
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}

fn per_sec(count: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 { count as f64 / s } else { 0.0 }
}
