//! A deterministic, seeded broadcast medium for many [`Node`]s (design notes, "Simulated radio
//! medium"; paper §5; spec wire-v1 §6–§8).
//!
//! [`Sim`] places engines at positions on a plane, carries their [`Transmit`]s to each other in
//! virtual time and feeds them back through [`Node::handle_frame`] and [`Node::handle_timeout`].
//! It is how tests exercise several nodes without a radio, and how a user sizes Δt, density and
//! redundancy before deploying: the per-link counters ([`SimStats`]) are the received/sent ratios
//! of the paper's Fig. 8. The same seed gives the same run, to the byte.
//!
//! # The model (units: metres, milliseconds, dBm)
//! **BLE** (a node with [`Transport::Ble`], knobs in [`BleSimConfig`]):
//! - *Sender.* Each BLE node runs the Δt [`Scheduler`], the very one `beets-ble` runs on
//!   BlueZ, so these numbers come from the code a Raspberry Pi runs. Every
//!   [`Transmit::Advertisement`] is pushed into it (queue of 16 frames by default; when full the
//!   oldest waiting frame is dropped, or with [`QueuePolicy::Refuse`] the new one is refused;
//!   both counted in [`NodeSimStats`]), and the medium applies what it says: a free *advertising
//!   instance* (default 1 per node) takes the head frame and advertises it for Δt (default
//!   500 ms), then takes the next; with an empty queue the instance stops advertising. The
//!   medium polls the scheduler after every push and at every end of a Δt period.
//! - *Packets.* An instance sends one advertising event at `start + advDelay`, then every
//!   `interval + advDelay` (default 100 ms, advDelay uniform in 0..=10 ms as in BLE) while before
//!   `start + Δt`. Each event occupies the air for `air_time` (default 2 ms) and is received, at
//!   the end of its air time, by every other BLE node within `range_m` (default 30 m) with
//!   probability `p0 · (1 − (d / range)^k)` (default p0 = 0.32, k = 2; see
//!   [`SimConfig::ble_reception_probability`]).
//! - *Collisions.* Every other event whose start is less than `air_time` away, sent by a node the
//!   receiver hears or by the receiver itself (a radio does not scan while it sends), destroys
//!   the packet with probability `collision_loss` (default 0.9). Instances of one node never
//!   collide with each other (one controller sends one event at a time).
//! - *What a receiver sees.* The frame's local name, an RSSI of `−59 − 20·log10(d)` dBm ± 3 dB
//!   (uniform), and a UUID *set* modelled on BlueZ by [`StaleUuids`] (the model `beets-ble`'s
//!   simulated air uses too): the frame's UUIDs merged with those of the last `stale_frames`
//!   (default 1) earlier frames this receiver heard from that sender within `stale_ttl`
//!   (default 30 s), deduplicated and shuffled. The engine must use the slot index and CRC to
//!   pick the right ones (spec §6).
//!
//! **UDP** (a node with [`Transport::Udp`]): each [`Transmit::Datagram`] is one datagram,
//! delivered once to every other UDP node within `range_m` (one LAN segment) after `udp_latency`
//! (default 1 ms), and looped back to its sender (default on; the engine drops it, spec §7).
//!
//! **Faults, both transports**: every delivery is lost with probability `loss`, duplicated with
//! probability `duplicate`, and delayed by a uniform `0..=jitter` (which reorders); all default to
//! 0. [`SimConfig::ideal`] turns every BLE loss off for functional tests.
//!
//! **Addresses.** BLE node *i* is `C0:BE:75:00:hh:ll` (hhll = i + 1, a random static address),
//! UDP node *i* is `127.0.0.1 + i` port 49737 (`127.0.0.1:49737`, `127.0.0.2:49737`, …).
//!
//! # Driving it
//! Build with [`Sim::new`], add nodes with [`Sim::add_node`], issue commands through
//! [`Sim::with_node`] (which drains the node afterwards) or [`Sim::node_mut`] (drained by the next
//! [`Sim::flush`], [`Sim::step`] or `run_*` call: every driver call drains every node first), then
//! advance virtual time with [`Sim::run_until`], [`Sim::run_for`] or [`Sim::run_until_quiet`].
//! The driver processes one event at a time from a priority queue ordered by (time, insertion):
//! node timers at exactly their [`Node::poll_timeout`], BLE advertising events, ends of air time
//! and deliveries. After every call into a node it drains `poll_transmit` into the medium,
//! `poll_event` into the node's log ([`Sim::events`], [`Sim::take_events`]) and re-arms the
//! node's timer. Every event moves time forward or is finite in number; an engine that wants a
//! timer at or before the time it was just woken is deferred by 1 ms
//! ([`MediumStats::timer_spins`]), and each `run_*` call processes at most
//! [`SimConfig::max_steps_per_run`] events, so every run terminates.
//!
//! # Reports
//! [`Sim::stats`] gives, per directed link (sender → receiver), the distinct frames sent,
//! received (at least one packet reached the receiver) and accepted (its engine processed it),
//! with their ratios; per node the frames and packets sent and received and the sender-queue
//! drops (every counter of its scheduler in [`NodeSimStats::scheduler`]; the scheduler itself,
//! queue and frames on air, through [`Sim::scheduler`]); for the medium the losses by cause.
//! [`SimStats::delivered_per_sec`] is the useful throughput, and `SimStats`'s `Display` prints a
//! table in the manner of Fig. 8.
//! [`Sim::timeline`] lists every advertising period (node, instance, frame, start, end, packets).
//! With the defaults, four senders 3 m around one receiver at Δt = 500 ms deliver ≈ 84 % of
//! their frames, 1.7 frames/s per sender (the paper: ≈ 80 %, ≈ 2/s); `cargo bench --bench sim`
//! prints the sweep over Δt, interval and instances.
//!
//! ```
//! use beets_core::node::{NodeConfig, Transport};
//! use beets_core::sim::{Sim, SimConfig};
//! use beets_core::{Template, Time, Tuple};
//!
//! let mut sim = Sim::new(SimConfig::ideal(7));
//! let a = sim.add_node(NodeConfig::new(Transport::Ble, "a")?, (0.0, 0.0));
//! let b = sim.add_node(NodeConfig::new(Transport::Ble, "b")?, (5.0, 0.0));
//! let reading: Tuple = r#"("SENSOR", "LIGHT", 512, 1.5)"#.parse()?;
//! sim.with_node(a, |node, now| node.out(now, reading.clone(), None))?;
//! sim.run_until(Time::from_millis(1_000));
//! let now = sim.now();
//! assert_eq!(sim.node_mut(b).host().count(now, &Template::exact(&reading)), 1);
//! let stats = sim.stats();
//! assert_eq!(stats.link(a, b).unwrap().frames_accepted, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What it does not model
//! Mobility between calls (move nodes yourself with [`Sim::set_position`]), capture effects,
//! per-channel behaviour, scan-request timing, or a name arriving before its UUIDs: BlueZ quirks
//! beyond stale UUIDs belong to the backend's tier-2 tests.

mod config;
mod medium;
mod stale;
mod stats;

pub mod plan;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::ble::BleAdvertisement;
use crate::ble::scheduler::{AdvertisingLimits, Scheduler};
use crate::node::{Event, Node, NodeConfig, PeerAddr, Transmit, Transport};
use crate::time::Time;
use crate::udp::DEFAULT_PORT;

/// The sender queue's policy: the [`Scheduler`]'s own type, re-exported here because
/// [`BleSimConfig::queue_policy`] takes it.
pub use crate::ble::scheduler::QueuePolicy;
pub use config::{BleSimConfig, SimConfig};
pub use stale::{MAX_REMEMBERED_FRAMES, StaleUuidConfig, StaleUuids};
pub use stats::{AdvertisingRecord, FrameId, LinkStats, MediumStats, NodeSimStats, SimStats};
/// Frame flags per receiver: at least one delivery reached it / its engine accepted one.
const GOT_RECEIVED: u8 = 1;
const GOT_ACCEPTED: u8 = 2;

/// Names a node in a [`Sim`]; ids count from 0 in the order nodes were added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SimNodeId(usize);

impl SimNodeId {
    /// The id as an index (0-based, in the order nodes were added).
    pub const fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for SimNodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// One frame on an advertising instance, as the medium sends it (the scheduler decides which
/// frame and for how long; this is the radio's side: its packets).
#[derive(Debug)]
struct OnAir {
    frame: FrameId,
    adv: Arc<BleAdvertisement>,
    start: Time,
    end: Time,
    packets: u32,
    /// Matches the instance's scheduled events to this period.
    generation: u64,
}

#[derive(Debug)]
struct SimNode {
    node: Node,
    addr: PeerAddr,
    position: (f64, f64),
    transport: Transport,
    /// The time of the queued timer event that is current, if any.
    armed: Option<Time>,
    /// No timer before this (set when the engine spins, see [`MediumStats::timer_spins`]).
    not_before: Time,
    log: VecDeque<(Time, Event)>,
    stats: NodeSimStats,
    /// The Δt scheduler (BLE; a UDP node's is receive-only and never used).
    sender: Scheduler,
    /// Per advertising instance: the frame the scheduler put on air, if any.
    instances: Vec<Option<OnAir>>,
    /// `frames_sent` of each earlier node when this one was added.
    baseline: Vec<u64>,
}

impl SimNode {
    /// The node's counters, the sender's from its scheduler.
    fn stats(&self) -> NodeSimStats {
        let sender = self.sender.stats();
        NodeSimStats {
            queue_dropped: sender.dropped_oldest,
            queue_refused: sender.refused,
            queue_max: sender.max_queue,
            scheduler: sender,
            ..self.stats
        }
    }
}

#[derive(Debug, Clone)]
enum Payload {
    Adv {
        adv: Arc<BleAdvertisement>,
        rssi: i16,
    },
    Datagram(Arc<[u8]>),
}

#[derive(Debug)]
enum Action {
    /// A node's timer, current if the node is still armed for this time.
    Timer { node: usize },
    /// The next advertising event of an instance.
    AdvPacket {
        node: usize,
        instance: usize,
        generation: u64,
    },
    /// An advertising period of a node ends now: poll its scheduler.
    SenderWake { node: usize },
    /// A BLE event's air time is over: decide who received it.
    AirEnd {
        sender: usize,
        frame: FrameId,
        start: Time,
        adv: Arc<BleAdvertisement>,
    },
    /// A packet or datagram reaches a node.
    Deliver {
        to: usize,
        from: usize,
        frame: FrameId,
        payload: Payload,
    },
}

#[derive(Debug)]
struct Scheduled {
    at: Time,
    seq: u64,
    action: Action,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: the earliest (time, insertion) is the greatest, for a max-heap.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A frame still in flight: on air, or with air ends or deliveries queued.
#[derive(Debug, Default)]
struct FrameTrack {
    on_air: bool,
    outstanding: u32,
    /// Per receiver index: [`GOT_RECEIVED`] | [`GOT_ACCEPTED`].
    got: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy)]
struct LinkCounters {
    frames_received: u64,
    frames_accepted: u64,
    packets_received: u64,
}

/// The simulated medium and its nodes. See the [module docs](self) for the model.
#[derive(Debug)]
pub struct Sim {
    config: SimConfig,
    rng: SmallRng,
    now: Time,
    nodes: Vec<SimNode>,
    queue: BinaryHeap<Scheduled>,
    next_seq: u64,
    next_frame: u64,
    next_generation: u64,
    frames: HashMap<FrameId, FrameTrack>,
    links: HashMap<(usize, usize), LinkCounters>,
    /// BLE events of the last 2·air_time: (start, sender).
    recent: VecDeque<(Time, usize)>,
    /// (receiver, sender) → the UUIDs the receiver's stack holds for the sender.
    heard: HashMap<(usize, usize), StaleUuids>,
    timeline: VecDeque<AdvertisingRecord>,
    medium: MediumStats,
}

impl Sim {
    /// An empty medium at time 0.
    pub fn new(config: SimConfig) -> Sim {
        Sim {
            rng: SmallRng::seed_from_u64(config.seed),
            config,
            now: Time::ZERO,
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            next_seq: 0,
            next_frame: 0,
            next_generation: 0,
            frames: HashMap::new(),
            links: HashMap::new(),
            recent: VecDeque::new(),
            heard: HashMap::new(),
            timeline: VecDeque::new(),
            medium: MediumStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Virtual time now.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Adds an engine at `position` (metres), built now with a seed drawn from the sim's RNG.
    /// Add nodes before traffic starts: a node added later does not count frames already on air
    /// in its links' `frames_sent`.
    pub fn add_node(&mut self, config: NodeConfig, position: (f64, f64)) -> SimNodeId {
        let i = self.nodes.len();
        let transport = config.transport;
        let node = Node::new(config, self.rng.random(), self.now);
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let addr = match transport {
            Transport::Ble => {
                let [_, _, hi, lo] = n.to_be_bytes();
                PeerAddr::Ble([0xC0, 0xBE, 0x75, 0x00, hi, lo])
            }
            Transport::Udp => {
                let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)).wrapping_add(n));
                PeerAddr::Ip(SocketAddr::V4(SocketAddrV4::new(ip, DEFAULT_PORT)))
            }
        };
        let limits = match transport {
            Transport::Ble => self.config.ble.limits(),
            Transport::Udp => AdvertisingLimits::RECEIVE_ONLY,
        };
        let sender = Scheduler::new(self.config.ble.scheduler(), limits);
        let baseline = self.nodes.iter().map(|n| n.stats.frames_sent).collect();
        self.nodes.push(SimNode {
            node,
            addr,
            position,
            transport,
            armed: None,
            not_before: Time::ZERO,
            log: VecDeque::new(),
            stats: NodeSimStats {
                id: SimNodeId(i),
                ..NodeSimStats::default()
            },
            instances: (0..limits.instances).map(|_| None).collect(),
            sender,
            baseline,
        });
        self.drain(i);
        SimNodeId(i)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// `true` before the first [`Sim::add_node`].
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node id, in order.
    pub fn ids(&self) -> impl Iterator<Item = SimNodeId> + use<> {
        (0..self.nodes.len()).map(SimNodeId)
    }

    /// The engine of `id`.
    ///
    /// # Panics
    /// If `id` is not from this sim (as every `id` accessor does).
    pub fn node(&self, id: SimNodeId) -> &Node {
        &self.nodes[id.0].node
    }

    /// The engine of `id`, to issue commands or use its local space. What it queues is drained
    /// by the next [`Sim::flush`], [`Sim::step`] or `run_*` call, at the time of that call;
    /// [`Sim::with_node`] drains at once.
    pub fn node_mut(&mut self, id: SimNodeId) -> &mut Node {
        &mut self.nodes[id.0].node
    }

    /// Runs `f` on the engine of `id` with the current time, then drains the node (its
    /// transmits go on the medium now, its events to its log, its timer is re-armed).
    ///
    /// ```
    /// # use beets_core::node::{NodeConfig, Transport};
    /// # use beets_core::sim::{Sim, SimConfig};
    /// # let mut sim = Sim::new(SimConfig::ideal(1));
    /// # let a = sim.add_node(NodeConfig::new(Transport::Udp, "a").unwrap(), (0.0, 0.0));
    /// let t = "(\"NODE\", ?)".parse()?;
    /// let id = sim.with_node(a, |node, now| node.r#where(now, t, std::time::Duration::from_secs(1)))?;
    /// # let _ = id;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_node<R>(&mut self, id: SimNodeId, f: impl FnOnce(&mut Node, Time) -> R) -> R {
        let r = f(&mut self.nodes[id.0].node, self.now);
        self.drain(id.0);
        r
    }

    /// The address other nodes see as `from` for `id`.
    pub fn addr(&self, id: SimNodeId) -> PeerAddr {
        self.nodes[id.0].addr
    }

    /// The node with address `addr`, if any.
    pub fn id_of(&self, addr: PeerAddr) -> Option<SimNodeId> {
        self.nodes
            .iter()
            .position(|n| n.addr == addr)
            .map(SimNodeId)
    }

    /// Position of `id` in metres.
    pub fn position(&self, id: SimNodeId) -> (f64, f64) {
        self.nodes[id.0].position
    }

    /// Moves `id` (takes effect for packets whose air time ends from now on).
    pub fn set_position(&mut self, id: SimNodeId, position: (f64, f64)) {
        self.nodes[id.0].position = position;
    }

    /// Distance between two nodes in metres.
    pub fn distance(&self, a: SimNodeId, b: SimNodeId) -> f64 {
        self.dist(a.0, b.0)
    }

    /// BLE frames waiting in the sender queue of `id` (those on air excluded).
    pub fn queue_len(&self, id: SimNodeId) -> usize {
        self.nodes[id.0].sender.queue_len()
    }

    /// The Δt scheduler of `id` (its queue, what is on air, its counters).
    pub fn scheduler(&self, id: SimNodeId) -> &Scheduler {
        &self.nodes[id.0].sender
    }

    /// BLE advertising instances of `id` now on air.
    pub fn advertising(&self, id: SimNodeId) -> usize {
        self.nodes[id.0].sender.on_air().count()
    }

    /// Events of `id` logged so far, oldest first (at most
    /// [`SimConfig::event_log_capacity`]).
    pub fn events(&self, id: SimNodeId) -> impl Iterator<Item = &Event> + '_ {
        self.nodes[id.0].log.iter().map(|(_, e)| e)
    }

    /// Events of `id` with the virtual time each was drained from the engine.
    pub fn timed_events(&self, id: SimNodeId) -> impl Iterator<Item = (Time, &Event)> + '_ {
        self.nodes[id.0].log.iter().map(|(t, e)| (*t, e))
    }

    /// Takes the events of `id` logged so far, leaving the log empty.
    pub fn take_events(&mut self, id: SimNodeId) -> Vec<Event> {
        self.nodes[id.0].log.drain(..).map(|(_, e)| e).collect()
    }

    /// Finished BLE advertising periods, in the order they ended (at most
    /// [`SimConfig::timeline_capacity`]).
    pub fn timeline(&self) -> impl Iterator<Item = &AdvertisingRecord> + '_ {
        self.timeline.iter()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        let mut links = Vec::new();
        for (s, sender) in self.nodes.iter().enumerate() {
            for (r, receiver) in self.nodes.iter().enumerate() {
                if s == r || sender.transport != receiver.transport {
                    continue;
                }
                let base = receiver.baseline.get(s).copied().unwrap_or(0);
                let c = self.links.get(&(s, r)).copied().unwrap_or_default();
                links.push(LinkStats {
                    from: SimNodeId(s),
                    to: SimNodeId(r),
                    frames_sent: sender.stats.frames_sent.saturating_sub(base),
                    frames_received: c.frames_received,
                    frames_accepted: c.frames_accepted,
                    packets_received: c.packets_received,
                });
            }
        }
        SimStats {
            elapsed: self.now.saturating_since(Time::ZERO),
            links,
            nodes: self.nodes.iter().map(SimNode::stats).collect(),
            medium: self.medium,
        }
    }

    // --- driver --------------------------------------------------------------------------------

    /// Drains every node now: transmits onto the medium, events into the logs, timers re-armed.
    /// Every other driver call does this first.
    pub fn flush(&mut self) {
        for i in 0..self.nodes.len() {
            self.drain(i);
        }
    }

    /// Drains every node, then processes the next scheduled event (advancing time to it).
    /// Returns `false` when nothing is scheduled.
    pub fn step(&mut self) -> bool {
        self.flush();
        self.process_next()
    }

    /// When the next scheduled event is due, if any.
    pub fn next_event_time(&self) -> Option<Time> {
        self.queue.peek().map(|s| s.at)
    }

    /// Processes every event due at or before `t`, then sets the time to `t` (if later).
    ///
    /// Stops early, leaving the time at the last event processed, after
    /// [`SimConfig::max_steps_per_run`] events (counted in [`MediumStats::step_limit_hits`]):
    /// the guard against nodes that answer each other without end at zero latency.
    pub fn run_until(&mut self, t: Time) {
        self.flush();
        let mut budget = self.config.max_steps_per_run;
        while self.next_event_time().is_some_and(|at| at <= t) {
            if budget == 0 {
                self.medium.step_limit_hits += 1;
                return;
            }
            budget -= 1;
            self.process_next();
        }
        self.now = self.now.max(t);
    }

    /// [`Sim::run_until`] `now + d`.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Runs until nothing is scheduled (no frame on air or queued, no delivery in flight, no
    /// node timer) or the next event is after `max`. Returns `true` when quiet; otherwise the
    /// time is set to `max`. Nodes that announce or hold tuples with lifetimes always have a
    /// timer, so for them this runs to `max`. Like [`Sim::run_until`] it stops after
    /// [`SimConfig::max_steps_per_run`] events (and returns `false`).
    pub fn run_until_quiet(&mut self, max: Time) -> bool {
        self.flush();
        let mut budget = self.config.max_steps_per_run;
        loop {
            match self.next_event_time() {
                None => return true,
                Some(at) if at > max => {
                    self.now = self.now.max(max);
                    return false;
                }
                Some(_) if budget == 0 => {
                    self.medium.step_limit_hits += 1;
                    return false;
                }
                Some(_) => {
                    budget -= 1;
                    self.process_next();
                }
            }
        }
    }

    fn schedule(&mut self, at: Time, action: Action) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push(Scheduled {
            at: at.max(self.now),
            seq,
            action,
        });
    }

    fn process_next(&mut self) -> bool {
        let Some(Scheduled { at, action, .. }) = self.queue.pop() else {
            return false;
        };
        self.now = self.now.max(at);
        self.medium.steps += 1;
        match action {
            Action::Timer { node } => self.fire_timer(node, at),
            Action::AdvPacket {
                node,
                instance,
                generation,
            } => self.adv_packet(node, instance, generation),
            Action::SenderWake { node } => self.poll_sender(node),
            Action::AirEnd {
                sender,
                frame,
                start,
                adv,
            } => self.air_end(sender, frame, start, adv),
            Action::Deliver {
                to,
                from,
                frame,
                payload,
            } => self.deliver(to, from, frame, payload),
        }
        true
    }

    /// Drains node `i`: transmits, events, timer.
    fn drain(&mut self, i: usize) {
        while let Some(tx) = self.nodes[i].node.poll_transmit() {
            match tx {
                Transmit::Advertisement(adv) => self.enqueue_adv(i, adv),
                Transmit::Datagram(bytes) => self.send_datagram(i, bytes),
            }
        }
        let cap = self.config.event_log_capacity;
        let now = self.now;
        let n = &mut self.nodes[i];
        while let Some(e) = n.node.poll_event() {
            if n.log.len() >= cap.max(1) {
                n.log.pop_front();
                n.stats.events_dropped += 1;
            }
            n.log.push_back((now, e));
        }
        self.arm(i);
    }

    fn arm(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let Some(want) = n.node.poll_timeout() else {
            n.armed = None;
            return;
        };
        let at = want.max(self.now).max(n.not_before);
        if n.armed != Some(at) {
            n.armed = Some(at);
            self.schedule(at, Action::Timer { node: i });
        }
    }

    fn fire_timer(&mut self, i: usize, at: Time) {
        if self.nodes[i].armed != Some(at) {
            return; // re-armed since
        }
        self.nodes[i].armed = None;
        let now = self.now;
        let n = &mut self.nodes[i];
        n.node.handle_timeout(now);
        if n.node.poll_timeout().is_some_and(|t| t <= now) {
            self.medium.timer_spins += 1;
            n.not_before = now + Duration::from_millis(1);
        }
        self.drain(i);
    }
}

#[cfg(test)]
mod tests;
