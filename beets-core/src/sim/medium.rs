//! The medium proper: UDP delivery, the BLE sender (the Δt scheduler's actions applied to
//! advertising instances, advertising events) and BLE reception (distance, collisions, stale
//! UUID sets), plus frame bookkeeping.

use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use rand::rngs::SmallRng;

use crate::ble::BleAdvertisement;
use crate::ble::scheduler::InstanceAction;
use crate::node::{Frame, Transport};
use crate::time::Time;

use super::{
    Action, AdvertisingRecord, FrameId, FrameTrack, GOT_ACCEPTED, GOT_RECEIVED, OnAir, Payload,
    Sim, SimNodeId,
};

impl Sim {
    // --- UDP -----------------------------------------------------------------------------------

    pub(super) fn send_datagram(&mut self, i: usize, bytes: Vec<u8>) {
        let frame = self.new_frame();
        let bytes: Arc<[u8]> = bytes.into();
        self.nodes[i].stats.frames_sent += 1;
        self.nodes[i].stats.packets_sent += 1;
        let latency = self.config.udp_latency;
        if self.config.udp_loopback {
            self.track(frame).outstanding += 1;
            self.schedule(
                self.now + latency,
                Action::Deliver {
                    to: i,
                    from: i,
                    frame,
                    payload: Payload::Datagram(bytes.clone()),
                },
            );
        }
        for r in 0..self.nodes.len() {
            if r == i || self.nodes[r].transport != Transport::Udp || !self.in_range(i, r) {
                continue;
            }
            self.medium.attempts += 1;
            self.faults_and_deliver(r, i, frame, latency, &Payload::Datagram(bytes.clone()));
        }
        self.untrack_if_done(frame);
    }

    /// Applies loss, duplication and jitter to one delivery, `delay` after now.
    fn faults_and_deliver(
        &mut self,
        to: usize,
        from: usize,
        frame: FrameId,
        delay: Duration,
        payload: &Payload,
    ) {
        if chance(&mut self.rng, self.config.loss) {
            self.medium.lost_random += 1;
            return;
        }
        let copies = if chance(&mut self.rng, self.config.duplicate) {
            self.medium.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = self.uniform(self.config.jitter);
            self.track(frame).outstanding += 1;
            self.schedule(
                self.now + delay + jitter,
                Action::Deliver {
                    to,
                    from,
                    frame,
                    payload: payload.clone(),
                },
            );
        }
    }

    // --- BLE sender ----------------------------------------------------------------------------

    /// Pushes `adv` into node `i`'s scheduler (a full queue drops or refuses as its
    /// [`QueuePolicy`](super::QueuePolicy) says, counted there) and applies what it says now.
    pub(super) fn enqueue_adv(&mut self, i: usize, adv: BleAdvertisement) {
        // A refusal (full queue under `Refuse`) is counted in the scheduler's stats. The engine
        // is not told: its call has returned (a radio's driver reports it to the caller).
        let _ = self.nodes[i].sender.push(adv);
        self.poll_sender(i);
    }

    /// Polls node `i`'s scheduler and applies its actions to the instances: a stop ends an
    /// advertising period, a start begins one (first packet within advDelay, a wake at its end).
    pub(super) fn poll_sender(&mut self, i: usize) {
        let now = self.now;
        for action in self.nodes[i].sender.poll(now) {
            match action {
                InstanceAction::Stop { instance } => self.end_period(i, instance),
                InstanceAction::Start { instance, adv } => self.start_period(i, instance, adv),
            }
        }
    }

    fn start_period(&mut self, i: usize, instance: usize, adv: BleAdvertisement) {
        let frame = self.new_frame();
        self.track(frame).on_air = true;
        let delta_t = self.nodes[i].sender.delta_t();
        let end = self.now + delta_t;
        let generation = self.next_generation;
        self.next_generation += 1;
        let n = &mut self.nodes[i];
        n.stats.frames_sent += 1;
        n.instances[instance] = Some(OnAir {
            frame,
            adv: Arc::new(adv),
            start: self.now,
            end,
            packets: 0,
            generation,
        });
        let first_max = self
            .config
            .ble
            .adv_delay_max
            .min(delta_t - Duration::from_millis(1));
        let first = self.now + self.uniform(first_max);
        self.schedule(
            first,
            Action::AdvPacket {
                node: i,
                instance,
                generation,
            },
        );
        // The scheduler's next wake for this instance (`Scheduler::next_wake`).
        self.schedule(end, Action::SenderWake { node: i });
    }

    /// Uniform in `0..=max`, whole milliseconds.
    fn uniform(&mut self, max: Duration) -> Duration {
        let max = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        if max == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(self.rng.random_range(0..=max))
        }
    }

    pub(super) fn adv_packet(&mut self, i: usize, instance: usize, generation: u64) {
        let now = self.now;
        let Some(on) = self.nodes[i].instances[instance]
            .as_mut()
            .filter(|o| o.generation == generation)
        else {
            return;
        };
        on.packets += 1;
        let (frame, adv, end) = (on.frame, on.adv.clone(), on.end);
        self.nodes[i].stats.packets_sent += 1;
        self.recent.push_back((now, i));
        self.track(frame).outstanding += 1;
        let air = self.config.ble.air_time;
        self.schedule(
            now + air,
            Action::AirEnd {
                sender: i,
                frame,
                start: now,
                adv,
            },
        );
        let interval = self.config.ble.adv_interval.max(Duration::from_millis(1));
        let next = now + interval + self.uniform(self.config.ble.adv_delay_max);
        if next < end {
            self.schedule(
                next,
                Action::AdvPacket {
                    node: i,
                    instance,
                    generation,
                },
            );
        }
    }

    fn end_period(&mut self, i: usize, instance: usize) {
        let Some(on) = self.nodes[i].instances[instance].take() else {
            return;
        };
        if self.timeline.len() >= self.config.timeline_capacity.max(1) {
            self.timeline.pop_front();
        }
        self.timeline.push_back(AdvertisingRecord {
            node: SimNodeId(i),
            instance,
            frame: on.frame,
            local_name: on.adv.local_name,
            start: on.start,
            end: self.now,
            packets: on.packets,
        });
        if let Some(t) = self.frames.get_mut(&on.frame) {
            t.on_air = false;
        }
        self.untrack_if_done(on.frame);
    }

    // --- BLE receivers -------------------------------------------------------------------------

    pub(super) fn air_end(
        &mut self,
        s: usize,
        frame: FrameId,
        start: Time,
        adv: Arc<BleAdvertisement>,
    ) {
        let air = self.config.ble.air_time;
        // Events starting at or before now − 2·air_time can overlap no event ending from now on.
        let horizon = Time::from_millis(
            self.now
                .as_millis()
                .saturating_sub(2 * u64::try_from(air.as_millis()).unwrap_or(u64::MAX)),
        );
        while self.recent.front().is_some_and(|&(t, _)| t <= horizon) {
            self.recent.pop_front();
        }
        for r in 0..self.nodes.len() {
            if r == s || self.nodes[r].transport != Transport::Ble {
                continue;
            }
            if !self.in_range(s, r) {
                continue;
            }
            let d = self.dist(s, r);
            self.medium.attempts += 1;
            let p = self.config.ble_reception_probability(d);
            if !chance(&mut self.rng, p) {
                self.medium.lost_distance += 1;
                continue;
            }
            if self.collides(s, r, start, air) {
                self.medium.lost_collision += 1;
                continue;
            }
            let noise = self.config.ble.rssi_noise_db;
            let noise = if noise > 0.0 {
                (self.rng.random::<f64>() * 2.0 - 1.0) * noise
            } else {
                0.0
            };
            let rssi = (self.config.mean_rssi(d) + noise)
                .round()
                .clamp(-127.0, 20.0) as i16;
            let payload = Payload::Adv {
                adv: adv.clone(),
                rssi,
            };
            self.faults_and_deliver(r, s, frame, Duration::ZERO, &payload);
        }
        self.track(frame).outstanding -= 1;
        self.untrack_if_done(frame);
    }

    /// Whether another event overlapping `start` destroys the packet `s → r`.
    fn collides(&mut self, s: usize, r: usize, start: Time, air: Duration) -> bool {
        let air = u64::try_from(air.as_millis()).unwrap_or(u64::MAX);
        let overlapping = self
            .recent
            .iter()
            .filter(|&&(t, o)| {
                o != s
                    && t.as_millis().abs_diff(start.as_millis()) < air
                    && (o == r || self.in_range(o, r))
            })
            .count();
        let loss = self.config.ble.collision_loss;
        (0..overlapping).any(|_| chance(&mut self.rng, loss))
    }

    /// The UUID set receiver `r` sees for `adv` from `s`: BlueZ keeps earlier frames' UUIDs
    /// ([`StaleUuids`](super::StaleUuids)) and reports them as a set, in no order.
    pub(super) fn seen_uuids(&mut self, r: usize, s: usize, adv: &BleAdvertisement) -> Vec<u16> {
        let config = self.config.ble.stale_uuids();
        let mut set =
            self.heard
                .entry((r, s))
                .or_default()
                .hear(self.now, &adv.service_uuids, &config);
        // Fisher–Yates: a set has no order.
        for k in (1..set.len()).rev() {
            let j = self.rng.random_range(0..=k);
            set.swap(k, j);
        }
        set
    }

    pub(super) fn deliver(&mut self, to: usize, from: usize, frame: FrameId, payload: Payload) {
        let now = self.now;
        let from_addr = self.nodes[from].addr;
        let uuids = match &payload {
            Payload::Adv { adv, .. } => self.seen_uuids(to, from, adv),
            Payload::Datagram(_) => Vec::new(),
        };
        let node = &mut self.nodes[to].node;
        let before = node.stats();
        match &payload {
            Payload::Adv { adv, rssi } => node.handle_frame(
                now,
                from_addr,
                Frame::Advertisement {
                    local_name: &adv.local_name,
                    service_uuids: &uuids,
                },
                Some(*rssi),
            ),
            Payload::Datagram(bytes) => {
                node.handle_frame(now, from_addr, Frame::Datagram(bytes), None)
            }
        }
        let after = node.stats();
        if to != from {
            self.medium.delivered += 1;
            let accepted =
                after.messages_in > before.messages_in || after.duplicates > before.duplicates;
            let track = self.frames.entry(frame).or_default();
            if track.got.len() <= to {
                track.got.resize(to + 1, 0);
            }
            let old = track.got[to];
            let mut new = old | GOT_RECEIVED;
            if accepted {
                new |= GOT_ACCEPTED;
            }
            track.got[to] = new;
            let link = self.links.entry((from, to)).or_default();
            let stats = &mut self.nodes[to].stats;
            link.packets_received += 1;
            stats.packets_received += 1;
            if old & GOT_RECEIVED == 0 {
                link.frames_received += 1;
                stats.frames_received += 1;
            }
            if old & GOT_ACCEPTED == 0 && new & GOT_ACCEPTED != 0 {
                link.frames_accepted += 1;
                stats.frames_accepted += 1;
            }
        }
        if let Some(t) = self.frames.get_mut(&frame) {
            t.outstanding = t.outstanding.saturating_sub(1);
        }
        self.untrack_if_done(frame);
        self.drain(to);
    }

    // --- bookkeeping ---------------------------------------------------------------------------

    fn new_frame(&mut self) -> FrameId {
        let f = FrameId(self.next_frame);
        self.next_frame += 1;
        f
    }

    fn track(&mut self, frame: FrameId) -> &mut FrameTrack {
        self.frames.entry(frame).or_default()
    }

    fn untrack_if_done(&mut self, frame: FrameId) {
        if self
            .frames
            .get(&frame)
            .is_some_and(|t| !t.on_air && t.outstanding == 0)
        {
            self.frames.remove(&frame);
        }
    }

    /// Within [`SimConfig::range_m`](super::SimConfig::range_m) (never for a NaN position).
    fn in_range(&self, a: usize, b: usize) -> bool {
        self.dist(a, b) <= self.config.range_m
    }

    pub(super) fn dist(&self, a: usize, b: usize) -> f64 {
        let (pa, pb) = (self.nodes[a].position, self.nodes[b].position);
        (pa.0 - pb.0).hypot(pa.1 - pb.1)
    }
}

/// `true` with probability `p` (clamped to 0..=1; NaN counts as 0). Draws nothing when `p` is 0
/// or 1.
fn chance(rng: &mut SmallRng, p: f64) -> bool {
    if p >= 1.0 {
        true
    } else if p > 0.0 {
        rng.random::<f64>() < p
    } else {
        false
    }
}
