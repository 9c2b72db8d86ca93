//! A capacity planner on the simulated medium: "how many senders can one receiver hear, at what
//! Δt, how far apart, with what loss?" (paper §5, Fig. 8).
//!
//! A [`Deployment`] places BLE senders and receivers, sets the medium ([`SimConfig`]: Δt,
//! advertising interval, instances, sender queue, loss, seed) and a workload (tuples per second
//! per sender, or as fast as the sender queue takes them), and [`run`] simulates it on [`Sim`]
//! and reports, per receiver, the distinct tuples it accepted (per second), the delivery ratio,
//! and the latency from `out` to acceptance; per sender, what it published, put on air and
//! dropped from its queue. [`sweep`] runs one deployment per value of a [`SweepParam`]
//! (Δt, distance or number of senders).
//!
//! Same deployment, same seed: same report, to the last tuple. Everything here is sans-IO; the
//! `beets plan` command line prints and plots these reports.
//!
//! ```
//! use std::time::Duration;
//! use beets_core::sim::plan::{self, Deployment};
//!
//! let mut d = Deployment::ring(2, 1, 3.0);
//! d.duration = Duration::from_secs(5);
//! let report = plan::run(&d);
//! assert_eq!(report.receivers.len(), 1);
//! assert!(report.receivers[0].tuples > 0);
//! assert_eq!(report, plan::run(&d)); // deterministic for a seed
//! ```

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::node::{Event, NodeConfig, Transport};
use crate::time::Time;
use crate::tuple::{Template, Tuple};
use crate::value::Value;

use super::{Sim, SimConfig, SimNodeId};

/// Where the nodes stand (metres).
#[derive(Clone, Debug, PartialEq)]
pub enum Layout {
    /// `senders` evenly on a circle of radius `distance` around `receivers` that all stand at
    /// the centre (the paper's Fig. 8 set-up: mobiles a few metres from the beacons).
    Ring {
        /// Sending nodes (mobiles).
        senders: usize,
        /// Receiving nodes (beacons), all at (0, 0).
        receivers: usize,
        /// Radius in metres.
        distance: f64,
    },
    /// Explicit positions.
    Positions {
        /// Sender positions.
        senders: Vec<(f64, f64)>,
        /// Receiver positions.
        receivers: Vec<(f64, f64)>,
    },
}

impl Layout {
    /// Sender positions.
    pub fn sender_positions(&self) -> Vec<(f64, f64)> {
        match self {
            Layout::Ring {
                senders, distance, ..
            } => (0..*senders)
                .map(|i| {
                    let a = i as f64 * std::f64::consts::TAU / *senders as f64;
                    (distance * a.cos(), distance * a.sin())
                })
                .collect(),
            Layout::Positions { senders, .. } => senders.clone(),
        }
    }

    /// Receiver positions.
    pub fn receiver_positions(&self) -> Vec<(f64, f64)> {
        match self {
            Layout::Ring { receivers, .. } => vec![(0.0, 0.0); *receivers],
            Layout::Positions { receivers, .. } => receivers.clone(),
        }
    }
}

/// What every sender publishes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    /// Keep one frame waiting per advertising instance: as many tuples as the medium can take
    /// (the `sim` bench's Fig. 8 workload; no queue drops by construction).
    Saturate,
    /// This many tuples per second per sender, evenly spaced (more than the sender can send
    /// fill its queue: drops or refusals, counted).
    Rate(f64),
}

/// A deployment to simulate. Build with [`Deployment::ring`] or [`Deployment::fig8`] and adjust.
#[derive(Clone, Debug, PartialEq)]
pub struct Deployment {
    /// Where the nodes stand.
    pub layout: Layout,
    /// The medium: seed, range, loss and the BLE knobs (Δt, interval, instances, queue).
    pub medium: SimConfig,
    /// What the senders publish.
    pub workload: Workload,
    /// Simulated time. Tuples still queued at the end count as published, not delivered.
    pub duration: Duration,
    /// Sender *i* starts publishing at `i · stagger` (real devices are not synchronised).
    /// Default 37 ms.
    pub stagger: Duration,
    /// How often the producers act and receivers are read. Default 5 ms.
    pub tick: Duration,
}

impl Deployment {
    /// `senders` on a circle of `distance` m around `receivers`, the default lossy medium
    /// (seed 1), as fast as the queue allows, 60 s.
    pub fn ring(senders: usize, receivers: usize, distance: f64) -> Deployment {
        Deployment {
            layout: Layout::Ring {
                senders,
                receivers,
                distance,
            },
            medium: SimConfig::new(1),
            workload: Workload::Saturate,
            duration: Duration::from_secs(60),
            stagger: Duration::from_millis(37),
            tick: Duration::from_millis(5),
        }
    }

    /// The paper's Fig. 8 set-up: four mobiles 3 m from four beacons standing at one spot,
    /// Δt = 500 ms, 100 ms advertising interval, one instance, the default (calibrated) medium,
    /// senders as fast as their queues allow, 60 s, seed 1.
    pub fn fig8() -> Deployment {
        Deployment::ring(4, 4, 3.0)
    }

    /// This deployment with `param` set to `value` (Δt in ms, distance in m, senders as a
    /// count).
    ///
    /// # Errors
    /// Distance and senders need a [`Layout::Ring`]; a value must be finite and non-negative
    /// (senders: a whole number ≥ 1).
    pub fn with(&self, param: SweepParam, value: f64) -> Result<Deployment, PlanError> {
        if !value.is_finite() || value < 0.0 {
            return Err(PlanError::BadValue(param, value));
        }
        let mut d = self.clone();
        match (param, &mut d.layout) {
            (SweepParam::DeltaT, _) => d.medium.ble.delta_t = Duration::from_secs_f64(value / 1e3),
            (SweepParam::Distance, Layout::Ring { distance, .. }) => *distance = value,
            (SweepParam::Senders, Layout::Ring { senders, .. }) => {
                if value < 1.0 || value.fract() != 0.0 {
                    return Err(PlanError::BadValue(param, value));
                }
                *senders = value as usize;
            }
            (_, Layout::Positions { .. }) => return Err(PlanError::NeedsRing(param)),
        }
        Ok(d)
    }
}

/// Why a plan cannot run.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// Sweeping distance or senders needs a ring layout.
    #[error("sweeping {0} needs a ring layout (senders around receivers), not explicit positions")]
    NeedsRing(SweepParam),
    /// A value out of range for the parameter.
    #[error("{1} is not a valid {0}")]
    BadValue(SweepParam, f64),
    /// A malformed `PARAM=FROM..TO:STEP`.
    #[error(
        "bad sweep {0:?}: expected PARAM=FROM..TO:STEP with PARAM delta-t, distance or senders"
    )]
    BadSweep(String),
}

/// What a sweep varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SweepParam {
    /// Δt in milliseconds.
    DeltaT,
    /// Sender–receiver distance in metres ([`Layout::Ring`]).
    Distance,
    /// Number of senders ([`Layout::Ring`]).
    Senders,
}

impl SweepParam {
    /// The axis label, with its unit.
    pub fn label(self) -> &'static str {
        match self {
            SweepParam::DeltaT => "Δt (ms)",
            SweepParam::Distance => "distance (m)",
            SweepParam::Senders => "senders",
        }
    }
}

impl fmt::Display for SweepParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SweepParam::DeltaT => "delta-t",
            SweepParam::Distance => "distance",
            SweepParam::Senders => "senders",
        })
    }
}

/// A sweep: `param` from `from` to `to` (inclusive) by `step`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sweep {
    /// What varies.
    pub param: SweepParam,
    /// First value.
    pub from: f64,
    /// Last value (included when the steps land on it).
    pub to: f64,
    /// Step, > 0.
    pub step: f64,
}

impl Sweep {
    /// The values, `from`, `from + step`, … up to `to` (at most 1000).
    pub fn values(&self) -> Vec<f64> {
        let mut v = Vec::new();
        let mut i = 0u32;
        loop {
            let x = self.from + f64::from(i) * self.step;
            if x > self.to + self.step * 1e-9 || v.len() >= 1000 {
                return v;
            }
            v.push(x);
            i += 1;
        }
    }
}

impl FromStr for Sweep {
    type Err = PlanError;

    /// `delta-t=200..2000:100`, `distance=1..25:2`, `senders=1..12:1`.
    fn from_str(s: &str) -> Result<Sweep, PlanError> {
        let bad = || PlanError::BadSweep(s.to_owned());
        let (name, range) = s.split_once('=').ok_or_else(bad)?;
        let param = match name.trim() {
            "delta-t" | "delta_t" | "dt" => SweepParam::DeltaT,
            "distance" => SweepParam::Distance,
            "senders" => SweepParam::Senders,
            _ => return Err(bad()),
        };
        let (span, step) = range.split_once(':').ok_or_else(bad)?;
        let (from, to) = span.split_once("..").ok_or_else(bad)?;
        let num = |t: &str| t.trim().parse::<f64>().ok().filter(|x| x.is_finite());
        let (from, to, step) = (
            num(from).ok_or_else(bad)?,
            num(to).ok_or_else(bad)?,
            num(step).ok_or_else(bad)?,
        );
        if step <= 0.0 || to < from || from < 0.0 {
            return Err(bad());
        }
        Ok(Sweep {
            param,
            from,
            to,
            step,
        })
    }
}

/// Latency percentiles (nearest rank) from `out` to acceptance at a receiver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    /// Tuples measured.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

impl Latency {
    /// Percentiles of `samples` (milliseconds; sorted here).
    pub fn of(samples: &mut [u64]) -> Latency {
        samples.sort_unstable();
        let n = samples.len();
        if n == 0 {
            return Latency::default();
        }
        let rank = |p: f64| {
            let r = (p * n as f64).ceil() as usize;
            Duration::from_millis(samples[r.clamp(1, n) - 1])
        };
        Latency {
            count: n as u64,
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: Duration::from_millis(samples[n - 1]),
        }
    }
}

/// One receiver's view.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ReceiverReport {
    /// Its position.
    pub position: (f64, f64),
    /// Senders within range.
    pub senders_in_range: usize,
    /// Tuples those senders published.
    pub published: u64,
    /// Frames those senders put on air (Fig. 8's "sent").
    pub frames_sent: u64,
    /// Distinct tuples accepted.
    pub tuples: u64,
    /// `tuples` per simulated second.
    pub per_sec: f64,
    /// `tuples / frames_sent`: the Fig. 8 ratio (1 when nothing was sent).
    pub delivery_ratio: f64,
    /// `tuples / published`: includes tuples dropped from sender queues or still queued at the
    /// end (1 when nothing was published).
    pub end_to_end_ratio: f64,
    /// From `out` (queueing included) to acceptance.
    pub latency: Latency,
}

/// One sender's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SenderReport {
    /// Tuples given to `out` (refused ones included).
    pub published: u64,
    /// Frames put on air.
    pub frames_sent: u64,
    /// Frames dropped from a full queue (drop-oldest).
    pub queue_dropped: u64,
    /// Frames refused by a full queue (refuse policy).
    pub queue_refused: u64,
    /// Longest queue seen.
    pub queue_max: u64,
}

/// What [`run`] found.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Report {
    /// Simulated time.
    pub elapsed: Duration,
    /// Per receiver, in layout order.
    pub receivers: Vec<ReceiverReport>,
    /// Per sender, in layout order.
    pub senders: Vec<SenderReport>,
    /// Every receiver's latencies in ms, for [`Report::latency`].
    samples: Vec<u64>,
}

impl Report {
    /// Σ tuples / Σ frames sent over all receivers (1 when nothing was sent).
    pub fn delivery_ratio(&self) -> f64 {
        ratio(
            self.receivers.iter().map(|r| r.tuples).sum(),
            self.receivers.iter().map(|r| r.frames_sent).sum(),
        )
    }

    /// Σ tuples / Σ published over all receivers.
    pub fn end_to_end_ratio(&self) -> f64 {
        ratio(
            self.receivers.iter().map(|r| r.tuples).sum(),
            self.receivers.iter().map(|r| r.published).sum(),
        )
    }

    /// Mean distinct tuples per second per receiver.
    pub fn mean_per_sec(&self) -> f64 {
        if self.receivers.is_empty() {
            return 0.0;
        }
        self.receivers.iter().map(|r| r.per_sec).sum::<f64>() / self.receivers.len() as f64
    }

    /// Frames dropped or refused by every sender queue.
    pub fn queue_drops(&self) -> u64 {
        self.senders
            .iter()
            .map(|s| s.queue_dropped + s.queue_refused)
            .sum()
    }

    /// Latency over every receiver's tuples.
    pub fn latency(&self) -> Latency {
        let mut all = self.samples.clone();
        Latency::of(&mut all)
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}

/// The tuple sender `i` publishes `k`-th: the spec's 21-byte OUT `("SENSOR", "LIGHT", i, k + 0.5)`
/// (the `sim` bench's, so a one-receiver plan reproduces its numbers).
fn tuple(i: usize, k: u32) -> Tuple {
    Tuple::new([
        Value::Str("SENSOR".into()),
        Value::Str("LIGHT".into()),
        Value::Int16(i as i16),
        Value::Float32(k as f32 + 0.5),
    ])
    .expect("a valid 4-tuple")
}

/// Simulates `deployment` and reports.
///
/// The medium is built from [`Deployment::medium`]; receivers are added first (in order), then
/// senders, every one a BLE node. Each tick, every sender due publishes (`out`) and every
/// receiver's accepted tuples are read; a tuple's latency is the time from its `out` to the
/// receiver's acceptance.
pub fn run(deployment: &Deployment) -> Report {
    let mut config = deployment.medium.clone();
    config.event_log_capacity = config.event_log_capacity.max(1024);
    let mut sim = Sim::new(config);
    let ble = |name: &str| NodeConfig::new(Transport::Ble, name).expect("a short name");
    let template: Template =
        crate::text::parse_template(r#"("SENSOR", "LIGHT", ?int16, ?float32)"#)
            .expect("a valid template");
    let receivers: Vec<SimNodeId> = deployment
        .layout
        .receiver_positions()
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let id = sim.add_node(ble(&format!("R{i}")), p);
            sim.node_mut(id).subscribe(template.clone());
            id
        })
        .collect();
    let senders: Vec<SimNodeId> = deployment
        .layout
        .sender_positions()
        .into_iter()
        .enumerate()
        .map(|(i, p)| sim.add_node(ble(&format!("S{i}")), p))
        .collect();
    let instances = sim.config().ble.instances.max(1);
    // Per sender: the time each tuple was published, by sequence number.
    let mut published: Vec<Vec<Time>> = vec![Vec::new(); senders.len()];
    let mut seen: Vec<HashSet<(i16, u32)>> = vec![HashSet::new(); receivers.len()];
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); receivers.len()];
    let end = Time::ZERO + deployment.duration;
    let tick = deployment.tick.max(Duration::from_millis(1));
    let mut t = Time::ZERO;
    while sim.now() < end {
        for (i, &s) in senders.iter().enumerate() {
            let start = Time::ZERO + deployment.stagger * i as u32;
            if sim.now() < start {
                continue;
            }
            let due = |sim: &Sim, count: usize| match deployment.workload {
                Workload::Saturate => sim.queue_len(s) < instances,
                Workload::Rate(r) if r > 0.0 => {
                    start + Duration::from_secs_f64(count as f64 / r) <= sim.now()
                }
                Workload::Rate(_) => false,
            };
            while due(&sim, published[i].len()) {
                let k = published[i].len() as u32;
                let now = sim.now();
                published[i].push(now);
                // A refused frame is counted by the scheduler; an `out` error (none for this
                // small tuple) would be a bug in the engine.
                let _ = sim.with_node(s, |n, now| n.out(now, tuple(i, k), None));
            }
        }
        t = (t + tick).min(end);
        sim.run_until(t);
        for (r, &rx) in receivers.iter().enumerate() {
            for e in sim.take_events(rx) {
                let Event::Delivered { delivery, .. } = e else {
                    continue;
                };
                let (Some(i), Some(k)) = (
                    delivery.tuple.get(2).and_then(Value::as_i16),
                    delivery.tuple.get(3).and_then(as_f32),
                ) else {
                    continue;
                };
                let k = (k - 0.5) as u32;
                if !seen[r].insert((i, k)) {
                    continue;
                }
                if let Some(at) = published.get(i as usize).and_then(|p| p.get(k as usize)) {
                    samples[r].push(delivery.at.saturating_since(*at).as_millis() as u64);
                }
            }
        }
    }
    let stats = sim.stats();
    let secs = stats.elapsed.as_secs_f64();
    let range = sim.config().range_m;
    let sender_reports: Vec<SenderReport> = senders
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let n = stats.node(s);
            SenderReport {
                published: published[i].len() as u64,
                frames_sent: n.frames_sent,
                queue_dropped: n.queue_dropped,
                queue_refused: n.queue_refused,
                queue_max: n.queue_max,
            }
        })
        .collect();
    let mut all = Vec::new();
    let receiver_reports = receivers
        .iter()
        .enumerate()
        .map(|(r, &rx)| {
            let in_range: Vec<usize> = (0..senders.len())
                .filter(|&i| sim.distance(senders[i], rx) <= range)
                .collect();
            let published: u64 = in_range.iter().map(|&i| sender_reports[i].published).sum();
            let frames_sent: u64 = in_range
                .iter()
                .filter_map(|&i| stats.link(senders[i], rx))
                .map(|l| l.frames_sent)
                .sum();
            let tuples = seen[r].len() as u64;
            all.extend_from_slice(&samples[r]);
            ReceiverReport {
                position: sim.position(rx),
                senders_in_range: in_range.len(),
                published,
                frames_sent,
                tuples,
                per_sec: if secs > 0.0 {
                    tuples as f64 / secs
                } else {
                    0.0
                },
                delivery_ratio: ratio(tuples, frames_sent),
                end_to_end_ratio: ratio(tuples, published),
                latency: Latency::of(&mut samples[r]),
            }
        })
        .collect();
    Report {
        elapsed: stats.elapsed,
        receivers: receiver_reports,
        senders: sender_reports,
        samples: all,
    }
}

fn as_f32(v: &Value) -> Option<f32> {
    match v {
        Value::Float32(x) => Some(*x),
        _ => None,
    }
}

/// Runs `base` once per value of `sweep`: `(value, report)` in order.
///
/// # Errors
/// As [`Deployment::with`], before anything runs.
pub fn sweep(base: &Deployment, sweep: &Sweep) -> Result<Vec<(f64, Report)>, PlanError> {
    let deployments = sweep
        .values()
        .into_iter()
        .map(|v| base.with(sweep.param, v).map(|d| (v, d)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(deployments.into_iter().map(|(v, d)| (v, run(&d))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Deployment {
        let mut d = Deployment::ring(2, 2, 3.0);
        d.duration = Duration::from_secs(6);
        d
    }

    #[test]
    fn same_seed_same_report_and_counts_add_up() {
        let d = small();
        let a = run(&d);
        assert_eq!(a, run(&d));
        for r in &a.receivers {
            assert_eq!(r.senders_in_range, 2);
            assert!(r.tuples <= r.frames_sent && r.frames_sent <= r.published);
            assert_eq!(r.latency.count, r.tuples);
            assert!(r.latency.p50 <= r.latency.p90 && r.latency.p90 <= r.latency.max);
        }
        assert_eq!(a.queue_drops(), 0, "saturation keeps the queue short");
    }

    #[test]
    fn ideal_medium_delivers_everything_sent() {
        let mut d = small();
        d.medium = SimConfig::ideal(3);
        let r = run(&d);
        for rx in &r.receivers {
            // Frames that went on air in the last packet interval may not have been heard yet.
            assert!(rx.frames_sent - rx.tuples <= 2, "{rx:?}");
            assert!(rx.delivery_ratio > 0.95, "{rx:?}");
        }
    }

    #[test]
    fn a_rate_above_capacity_drops_from_the_queue() {
        let mut d = small();
        d.workload = Workload::Rate(20.0);
        d.medium.ble.queue_capacity = 4;
        let r = run(&d);
        assert!(r.queue_drops() > 0);
        assert!(r.end_to_end_ratio() < r.delivery_ratio());
        let s = r.senders[0];
        assert!((115..=120).contains(&s.published), "{s:?}");
    }

    #[test]
    fn out_of_range_receivers_hear_nothing() {
        let mut d = small();
        d.layout = Layout::Positions {
            senders: vec![(0.0, 0.0)],
            receivers: vec![(2.0, 0.0), (100.0, 0.0)],
        };
        let r = run(&d);
        assert!(r.receivers[0].tuples > 0);
        assert_eq!(r.receivers[1].senders_in_range, 0);
        assert_eq!(r.receivers[1].tuples, 0);
        assert_eq!(
            d.with(SweepParam::Distance, 1.0),
            Err(PlanError::NeedsRing(SweepParam::Distance))
        );
    }

    #[test]
    fn sweeps_parse_and_step() {
        let s: Sweep = "delta-t=200..2000:100".parse().unwrap();
        assert_eq!(s.param, SweepParam::DeltaT);
        assert_eq!(s.values().len(), 19);
        assert_eq!(s.values()[18], 2000.0);
        let s: Sweep = "senders=1..4:1".parse().unwrap();
        assert_eq!(s.values(), [1.0, 2.0, 3.0, 4.0]);
        for bad in [
            "delta-t=5..1:1",
            "x=1..2:1",
            "distance=1..2",
            "senders=1..2:0",
        ] {
            assert!(bad.parse::<Sweep>().is_err(), "{bad}");
        }
        assert!(small().with(SweepParam::Senders, 1.5).is_err());
    }

    #[test]
    fn latency_percentiles_by_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let l = Latency::of(&mut v);
        assert_eq!(
            (l.count, l.p50, l.p90, l.p99, l.max),
            (
                100,
                Duration::from_millis(50),
                Duration::from_millis(90),
                Duration::from_millis(99),
                Duration::from_millis(100)
            )
        );
        assert_eq!(Latency::of(&mut []), Latency::default());
    }
}
