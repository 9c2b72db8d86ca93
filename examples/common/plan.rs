//! `beets plan`: a deployment on the command line or in a TOML file → the simulated medium's
//! answer (`beets_core::sim::plan`) as a table, one row per sweep point, and an SVG plot.
//!
//! The TOML file (every key optional; command-line options override it):
//!
//! ```toml
//! seed = 1
//! duration_s = 60
//! delta_t_ms = 500          # Δt
//! adv_interval_ms = 100
//! instances = 1             # advertising instances per sender
//! queue = 16                # sender queue, frames
//! queue_policy = "drop-oldest"   # or "refuse"
//! rate = 2.0                # tuples/s per sender; 0 or absent: as fast as the queue takes them
//! loss = 0.0                # extra loss per packet
//! range_m = 30.0
//! p0 = 0.32                 # per-packet reception probability at 0 m (the calibration)
//! senders = 4               # ring layout: senders on a circle of distance_m around the receivers
//! receivers = 1
//! distance_m = 3.0
//! # or explicit positions (metres) instead of the ring:
//! # sender_positions = [[0.0, 0.0], [5.0, 0.0]]
//! # receiver_positions = [[2.0, 1.0]]
//! sweep = "delta-t=200..2000:100"   # or distance=…, senders=…
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use beets::core::sim::QueuePolicy;
use beets::core::sim::plan::{self, Deployment, Layout, Report, Sweep, SweepParam, Workload};
use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::plot::{Figure, Panel, Series};

/// Options of `beets plan`.
#[derive(Args, Debug, Default, Clone)]
pub(crate) struct PlanArgs {
    /// Start from a preset (`fig8`: the paper's Fig. 8 set-up, swept over Δt = 100..1000 ms
    /// unless --sweep says otherwise).
    #[arg(long, value_enum)]
    pub(crate) preset: Option<Preset>,
    /// A deployment file (TOML, see `examples/common/plan.rs`); options below override it.
    #[arg(long, value_name = "FILE.toml")]
    pub(crate) file: Option<PathBuf>,
    /// Senders (mobiles) on a circle around the receivers.
    #[arg(long)]
    pub(crate) senders: Option<usize>,
    /// Receivers (beacons), all at the centre.
    #[arg(long)]
    pub(crate) receivers: Option<usize>,
    /// Sender–receiver distance in metres.
    #[arg(long, value_name = "M")]
    pub(crate) distance: Option<f64>,
    /// Δt in ms: how long each frame is advertised.
    #[arg(long = "delta-t", value_name = "MS")]
    pub(crate) delta_t: Option<u64>,
    /// Advertising interval in ms.
    #[arg(long, value_name = "MS")]
    pub(crate) interval: Option<u64>,
    /// Advertising instances per sender.
    #[arg(long)]
    pub(crate) instances: Option<usize>,
    /// Sender queue capacity in frames.
    #[arg(long, value_name = "FRAMES")]
    pub(crate) queue: Option<usize>,
    /// What a full sender queue does.
    #[arg(long, value_enum)]
    pub(crate) queue_policy: Option<Policy>,
    /// Tuples per second per sender (0: as fast as the queue takes them).
    #[arg(long, value_name = "TUPLES/S")]
    pub(crate) rate: Option<f64>,
    /// Extra loss per packet, 0..1.
    #[arg(long, value_name = "P")]
    pub(crate) loss: Option<f64>,
    /// Radio range in metres.
    #[arg(long, value_name = "M")]
    pub(crate) range: Option<f64>,
    /// Per-packet reception probability at 0 m (the medium's calibration, default 0.32).
    #[arg(long, value_name = "P")]
    pub(crate) p0: Option<f64>,
    /// Simulated seconds per point.
    #[arg(long, value_name = "SECS")]
    pub(crate) duration: Option<f64>,
    /// Seed of the medium.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// One row per point: delta-t=FROM..TO:STEP (ms), distance=… (m) or senders=….
    #[arg(long, value_name = "PARAM=FROM..TO:STEP")]
    pub(crate) sweep: Option<String>,
    /// Write an SVG plot: delivery ratio and tuples/s per receiver against the swept parameter.
    #[arg(long, value_name = "FILE.svg")]
    pub(crate) plot: Option<PathBuf>,
}

/// Presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Preset {
    /// The paper's Fig. 8 set-up: 4 mobiles 3 m from 4 beacons at one spot, 100 ms interval.
    Fig8,
}

/// Queue policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Policy {
    /// Drop the oldest waiting frame.
    DropOldest,
    /// Refuse the new frame.
    Refuse,
}

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanFile {
    seed: Option<u64>,
    duration_s: Option<f64>,
    delta_t_ms: Option<u64>,
    adv_interval_ms: Option<u64>,
    instances: Option<usize>,
    queue: Option<usize>,
    queue_policy: Option<Policy>,
    rate: Option<f64>,
    loss: Option<f64>,
    range_m: Option<f64>,
    p0: Option<f64>,
    senders: Option<usize>,
    receivers: Option<usize>,
    distance_m: Option<f64>,
    sender_positions: Option<Vec<[f64; 2]>>,
    receiver_positions: Option<Vec<[f64; 2]>>,
    sweep: Option<String>,
}

/// A value the paper reports, drawn beside the simulation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reference {
    /// (x, delivery ratio in %), labelled.
    pub(crate) ratio: Option<(f64, f64, String)>,
    /// (x, tuples/s per receiver), labelled.
    pub(crate) per_sec: Option<(f64, f64, String)>,
}

/// What to run: the deployment, the sweep if any, and a title and references for the plot.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    pub(crate) deployment: Deployment,
    pub(crate) sweep: Option<Sweep>,
    pub(crate) title: String,
    pub(crate) references: Vec<Reference>,
}

/// Builds the plan from the preset, the file and the options, in that order.
pub(crate) fn build(args: &PlanArgs) -> Result<Plan, String> {
    let file: PlanFile = match &args.file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => PlanFile::default(),
    };
    let mut references = Vec::new();
    let mut sweep = None;
    let mut d = match args.preset {
        Some(Preset::Fig8) => {
            sweep = Some("delta-t=100..1000:100".to_owned());
            references.push(Reference {
                ratio: Some((500.0, 80.0, "paper, Fig. 8: ≈ 80 %".into())),
                per_sec: Some((
                    500.0,
                    8.0,
                    "paper, Fig. 8: ≈ 2 tuples/s per sender (× 4)".into(),
                )),
            });
            Deployment::fig8()
        }
        None => Deployment::ring(4, 1, 3.0),
    };
    sweep = args.sweep.clone().or(file.sweep).or(sweep);
    let seed = args.seed.or(file.seed);
    if let Some(seed) = seed {
        d.medium.seed = seed;
    }
    let m = &mut d.medium;
    if let Some(s) = args.duration.or(file.duration_s) {
        if !(s > 0.0 && s <= 86_400.0) {
            return Err(format!("duration {s} s: give 0 < SECS ≤ 86400"));
        }
        d.duration = Duration::from_secs_f64(s);
    }
    if let Some(ms) = args.delta_t.or(file.delta_t_ms) {
        m.ble.delta_t = Duration::from_millis(ms.max(1));
    }
    if let Some(ms) = args.interval.or(file.adv_interval_ms) {
        m.ble.adv_interval = Duration::from_millis(ms.max(1));
    }
    if let Some(n) = args.instances.or(file.instances) {
        m.ble.instances = n.max(1);
    }
    if let Some(n) = args.queue.or(file.queue) {
        m.ble.queue_capacity = n.max(1);
    }
    if let Some(p) = args.queue_policy.or(file.queue_policy) {
        m.ble.queue_policy = match p {
            Policy::DropOldest => QueuePolicy::DropOldest,
            Policy::Refuse => QueuePolicy::Refuse,
        };
    }
    let prob = |name: &str, p: f64| {
        if (0.0..=1.0).contains(&p) {
            Ok(p)
        } else {
            Err(format!("{name} {p}: give a probability in 0..=1"))
        }
    };
    if let Some(p) = args.loss.or(file.loss) {
        m.loss = prob("loss", p)?;
    }
    if let Some(p) = args.p0.or(file.p0) {
        m.ble.p0 = prob("p0", p)?;
    }
    if let Some(r) = args.range.or(file.range_m) {
        if !(r > 0.0 && r.is_finite()) {
            return Err(format!("range {r}: give metres > 0"));
        }
        m.range_m = r;
    }
    match args.rate.or(file.rate) {
        Some(r) if !(r >= 0.0 && r.is_finite()) => {
            return Err(format!("rate {r}: give tuples/s ≥ 0"));
        }
        Some(r) if r > 0.0 => d.workload = Workload::Rate(r),
        Some(_) => d.workload = Workload::Saturate,
        None => {}
    }
    let explicit = file.sender_positions.is_some() || file.receiver_positions.is_some();
    let ring_opts = args.senders.is_some() || args.receivers.is_some() || args.distance.is_some();
    if explicit && !ring_opts {
        let pos = |v: Option<Vec<[f64; 2]>>| -> Vec<(f64, f64)> {
            v.unwrap_or_default()
                .into_iter()
                .map(|[x, y]| (x, y))
                .collect()
        };
        d.layout = Layout::Positions {
            senders: pos(file.sender_positions),
            receivers: pos(file.receiver_positions),
        };
    } else if let Layout::Ring {
        senders,
        receivers,
        distance,
    } = &mut d.layout
    {
        *senders = args.senders.or(file.senders).unwrap_or(*senders);
        *receivers = args.receivers.or(file.receivers).unwrap_or(*receivers);
        *distance = args.distance.or(file.distance_m).unwrap_or(*distance);
        if !(*distance >= 0.0 && distance.is_finite()) {
            return Err(format!("distance {distance}: give metres ≥ 0"));
        }
    }
    let (ns, nr) = (
        d.layout.sender_positions().len(),
        d.layout.receiver_positions().len(),
    );
    if ns == 0 || nr == 0 || ns + nr > 200 {
        return Err(format!(
            "{ns} senders and {nr} receivers: give at least one of each, 200 nodes at most"
        ));
    }
    let sweep = sweep
        .map(|s| s.parse::<Sweep>().map_err(|e| e.to_string()))
        .transpose()?;
    if let Some(s) = &sweep {
        // Checked before anything runs: every point must build.
        for v in s.values() {
            d.with(s.param, v).map_err(|e| e.to_string())?;
        }
    }
    let title = match args.preset {
        Some(Preset::Fig8) => format!(
            "Fig. 8 set-up: 4 mobiles 3 m from 4 beacons, {} ms interval, {} s per point, seed {}",
            d.medium.ble.adv_interval.as_millis(),
            d.duration.as_secs_f64(),
            d.medium.seed
        ),
        None => {
            let layout = match &d.layout {
                Layout::Ring {
                    senders,
                    receivers,
                    distance,
                } => format!("{senders} senders {distance} m from {receivers} receivers"),
                Layout::Positions { senders, receivers } => {
                    format!("{} senders, {} receivers", senders.len(), receivers.len())
                }
            };
            let workload = match d.workload {
                Workload::Saturate => "saturated".to_owned(),
                Workload::Rate(r) => format!("{r} tuples/s each"),
            };
            format!(
                "{layout}, {workload}, {} ms interval, {} instance(s), seed {}",
                d.medium.ble.adv_interval.as_millis(),
                d.medium.ble.instances,
                d.medium.seed
            )
        }
    };
    Ok(Plan {
        deployment: d,
        sweep,
        title,
        references,
    })
}

/// One line saying what is simulated.
pub(crate) fn describe(d: &Deployment) -> String {
    let layout = match &d.layout {
        Layout::Ring {
            senders,
            receivers,
            distance,
        } => format!("{senders} senders {distance} m from {receivers} receivers"),
        Layout::Positions { senders, receivers } => {
            format!(
                "{} senders, {} receivers at given positions",
                senders.len(),
                receivers.len()
            )
        }
    };
    let ble = &d.medium.ble;
    let workload = match d.workload {
        Workload::Saturate => "as fast as the queue takes them".to_owned(),
        Workload::Rate(r) => format!("{r} tuples/s per sender"),
    };
    format!(
        "{layout}; Δt {} ms, interval {} ms, {} instance(s), queue {} ({:?}); {workload}; loss {}, p0 {}, range {} m; {} s, seed {}",
        ble.delta_t.as_millis(),
        ble.adv_interval.as_millis(),
        ble.instances,
        ble.queue_capacity,
        ble.queue_policy,
        d.medium.loss,
        ble.p0,
        d.medium.range_m,
        d.duration.as_secs_f64(),
        d.medium.seed
    )
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// The per-receiver table of one run.
pub(crate) fn receiver_table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<4} {:>14} {:>5} {:>9} {:>8} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "rx",
        "position (m)",
        "heard",
        "published",
        "tuples",
        "tuples/s",
        "ratio",
        "e2e",
        "p50 ms",
        "p90 ms",
        "p99 ms"
    );
    for (i, r) in report.receivers.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:<4} {:>14} {:>5} {:>9} {:>8} {:>9.2} {:>6.1}% {:>6.1}% {:>7} {:>7} {:>7}",
            format!("R{i}"),
            format!("({:.1}, {:.1})", r.position.0, r.position.1),
            r.senders_in_range,
            r.published,
            r.tuples,
            r.per_sec,
            100.0 * r.delivery_ratio,
            100.0 * r.end_to_end_ratio,
            ms(r.latency.p50),
            ms(r.latency.p90),
            ms(r.latency.p99)
        );
    }
    let published: u64 = report.senders.iter().map(|s| s.published).sum();
    let on_air: u64 = report.senders.iter().map(|s| s.frames_sent).sum();
    let dropped: u64 = report.senders.iter().map(|s| s.queue_dropped).sum();
    let refused: u64 = report.senders.iter().map(|s| s.queue_refused).sum();
    let longest = report
        .senders
        .iter()
        .map(|s| s.queue_max)
        .max()
        .unwrap_or(0);
    let _ = write!(
        out,
        "senders: published {published}, on air {on_air}, queue drops {dropped} (oldest dropped) + {refused} (refused), longest queue {longest}"
    );
    out
}

/// One row per sweep point.
pub(crate) fn sweep_table(param: SweepParam, points: &[(f64, Report)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>7} {:>7} {:>10} {:>10} {:>11} {:>7} {:>7} {:>7}",
        param.label(),
        "ratio",
        "e2e",
        "tuples/s",
        "min rx/s",
        "queue drops",
        "p50 ms",
        "p90 ms",
        "p99 ms"
    );
    for (x, r) in points {
        let lat = r.latency();
        let min = r
            .receivers
            .iter()
            .map(|r| r.per_sec)
            .fold(f64::INFINITY, f64::min);
        let _ = writeln!(
            out,
            "{:>12} {:>6.1}% {:>6.1}% {:>10.2} {:>10.2} {:>11} {:>7} {:>7} {:>7}",
            x,
            100.0 * r.delivery_ratio(),
            100.0 * r.end_to_end_ratio(),
            r.mean_per_sec(),
            if min.is_finite() { min } else { 0.0 },
            r.queue_drops(),
            ms(lat.p50),
            ms(lat.p90),
            ms(lat.p99)
        );
    }
    out.push_str("tuples/s: distinct tuples per receiver per second (mean over receivers); ratio: tuples / frames on air; e2e: tuples / published");
    out
}

/// The figure of a sweep: delivery ratio and tuples/s per receiver against the parameter.
pub(crate) fn sweep_figure(
    title: &str,
    param: SweepParam,
    points: &[(f64, Report)],
    references: &[Reference],
) -> Figure {
    let receivers = points.first().map_or(0, |(_, r)| r.receivers.len());
    let per_rx = |f: &dyn Fn(&plan::ReceiverReport) -> f64| -> Vec<Series> {
        (0..receivers)
            .map(|i| {
                Series::line(
                    format!("receiver R{i}"),
                    points
                        .iter()
                        .filter_map(|(x, r)| r.receivers.get(i).map(|rx| (*x, f(rx))))
                        .collect(),
                )
            })
            .collect()
    };
    let mut ratio = per_rx(&|r| 100.0 * r.delivery_ratio);
    if receivers > 0 {
        ratio.push(Series::line(
            "end to end (published → accepted, all receivers)",
            points
                .iter()
                .map(|(x, r)| (*x, 100.0 * r.end_to_end_ratio()))
                .collect(),
        ));
    }
    let mut rate = per_rx(&|r| r.per_sec);
    for reference in references {
        if let Some((x, y, label)) = &reference.ratio {
            ratio.push(Series::points(label.clone(), vec![(*x, *y)]));
        }
        if let Some((x, y, label)) = &reference.per_sec {
            rate.push(Series::points(label.clone(), vec![(*x, *y)]));
        }
    }
    Figure {
        title: title.to_owned(),
        x_label: param.label().to_owned(),
        panels: vec![
            Panel {
                y_label: "delivery ratio (%)".into(),
                series: ratio,
                y_range: Some((0.0, 105.0)),
                legend_low: true,
            },
            Panel {
                y_label: "distinct tuples/s per receiver".into(),
                series: rate,
                y_range: None,
                legend_low: false,
            },
        ],
    }
}

/// The figure of a single run: one point per receiver.
pub(crate) fn single_figure(title: &str, report: &Report) -> Figure {
    let pts = |f: &dyn Fn(&plan::ReceiverReport) -> f64| -> Vec<(f64, f64)> {
        report
            .receivers
            .iter()
            .enumerate()
            .map(|(i, r)| (i as f64, f(r)))
            .collect()
    };
    Figure {
        title: title.to_owned(),
        x_label: "receiver".into(),
        panels: vec![
            Panel {
                y_label: "delivery ratio (%)".into(),
                series: vec![Series::points(
                    "delivery ratio",
                    pts(&|r| 100.0 * r.delivery_ratio),
                )],
                y_range: Some((0.0, 105.0)),
                legend_low: true,
            },
            Panel {
                y_label: "distinct tuples/s per receiver".into(),
                series: vec![Series::points("tuples/s", pts(&|r| r.per_sec))],
                y_range: None,
                legend_low: false,
            },
        ],
    }
}

/// Runs `beets plan`: the text to print (and the plot written, if asked).
pub(crate) fn run(args: &PlanArgs) -> Result<String, String> {
    let plan = build(args)?;
    let mut out = format!("{}\n", describe(&plan.deployment));
    let figure = match &plan.sweep {
        Some(s) => {
            let points = plan::sweep(&plan.deployment, s).map_err(|e| e.to_string())?;
            out += &sweep_table(s.param, &points);
            sweep_figure(&plan.title, s.param, &points, &plan.references)
        }
        None => {
            let report = plan::run(&plan.deployment);
            out += &receiver_table(&report);
            single_figure(&plan.title, &report)
        }
    };
    if let Some(path) = &args.plot {
        crate::plot::write(path, &figure)?;
        let _ = write!(out, "\nplot written to {}", path.display());
    }
    Ok(out)
}
