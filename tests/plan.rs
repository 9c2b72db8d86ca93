//! `beets plan` and the plots: the planner on small presets gives fixed figures for a seed, its
//! tables and SVG plots hold what they claim, the command line and the TOML file build the same
//! deployment, and `beets node --stats` prints the node's own counters.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use beets::core::sim::plan::{self, Deployment, Layout, SweepParam, Workload};
use clap::Parser;

#[path = "../examples/common/plan.rs"]
#[allow(dead_code)]
mod plan_cli;
#[path = "../examples/common/plot.rs"]
mod plot;
#[path = "../examples/common/stats.rs"]
#[allow(dead_code)]
mod stats;

use plan_cli::{PlanArgs, Preset};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    plan: PlanArgs,
}

fn args(argv: &[&str]) -> PlanArgs {
    Cli::parse_from(std::iter::once("plan").chain(argv.iter().copied())).plan
}

/// Every `<text>` of an SVG document (after checking it parses as XML).
fn svg_texts(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).expect("the plot is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.tag_name().name() == "text")
        .map(|n| n.text().unwrap_or("").trim().to_owned())
        .collect()
}

/// Polylines of exactly `n` points (a series over `n` sweep points; grid lines and legend
/// samples have 2).
fn polylines_of(svg: &str, n: usize) -> usize {
    roxmltree::Document::parse(svg)
        .unwrap()
        .descendants()
        .filter(|e| e.tag_name().name() == "polyline")
        .filter(|e| {
            e.attribute("points")
                .unwrap_or("")
                .split_whitespace()
                .count()
                == n
        })
        .count()
}

#[test]
fn one_receiver_plan_reproduces_the_sim_bench_row() {
    // The README's Fig. 8 row (`cargo bench --bench sim`, seed 1): 6.7 tuples/s at 84.0 %.
    let d = Deployment::ring(4, 1, 3.0);
    let r = plan::run(&d);
    let rx = &r.receivers[0];
    assert_eq!((rx.frames_sent, rx.tuples), (481, 404));
    assert_eq!(format!("{:.1}", 100.0 * rx.delivery_ratio), "84.0");
    assert_eq!(format!("{:.2}", rx.per_sec), "6.73");
    assert_eq!(r.queue_drops(), 0);
}

#[test]
fn small_presets_give_fixed_figures_for_a_seed() {
    let mut d = Deployment::fig8();
    d.duration = Duration::from_secs(10);
    let a = plan::run(&d);
    assert_eq!(a, plan::run(&d));
    assert_eq!(a.receivers.len(), 4);
    let tuples: Vec<u64> = a.receivers.iter().map(|r| r.tuples).collect();
    let sent: Vec<u64> = a.receivers.iter().map(|r| r.frames_sent).collect();
    // Every receiver hears the same four senders: the same frames on air…
    assert!(sent.iter().all(|&s| s == sent[0]), "{sent:?}");
    // …and, for seed 1, these tuples (a change here changes the README's figures).
    assert_eq!(tuples, [63, 66, 66, 63], "frames sent {sent:?}");
    assert_eq!(sent[0], 81);
    d.medium.seed = 2;
    assert_ne!(plan::run(&d), a, "another seed, another run");
}

#[test]
fn a_sweep_has_one_row_per_point_and_its_plot_the_series_and_labels() {
    let mut base = Deployment::ring(3, 2, 3.0);
    base.duration = Duration::from_secs(8);
    base.workload = Workload::Rate(1.0);
    let sweep = "delta-t=200..1400:400".parse().unwrap();
    let points = plan::sweep(&base, &sweep).unwrap();
    assert_eq!(
        points.iter().map(|p| p.0).collect::<Vec<_>>(),
        [200.0, 600.0, 1000.0, 1400.0]
    );
    // Longer Δt: fewer frames lost on air; 1 tuple/s overflows a 1400 ms sender only.
    assert!(points[3].1.delivery_ratio() > points[0].1.delivery_ratio());
    assert!(points[3].1.end_to_end_ratio() < points[3].1.delivery_ratio());
    let table = plan_cli::sweep_table(SweepParam::DeltaT, &points);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 1 + 4 + 1, "{table}");
    assert!(
        rows[0].contains("Δt (ms)") && rows[0].contains("p99 ms"),
        "{table}"
    );
    assert!(rows[1].trim_start().starts_with("200 "), "{table}");

    let fig = plan_cli::sweep_figure("test sweep", SweepParam::DeltaT, &points, &[]);
    let svg = plot::svg(&fig).unwrap();
    let texts = svg_texts(&svg);
    for want in [
        "test sweep",
        "Δt (ms)",
        "delivery ratio (%)",
        "distinct tuples/s per receiver",
        "receiver R0",
        "receiver R1",
        "end to end (published → accepted, all receivers)",
    ] {
        assert!(texts.iter().any(|t| t == want), "{want:?} not in {texts:?}");
    }
    // Two panels: R0, R1 and end-to-end above, R0 and R1 below, one polyline each.
    assert_eq!(polylines_of(&svg, 4), 5);
    assert!(
        texts.iter().any(|t| t == "1400"),
        "x tick labels: {texts:?}"
    );
}

#[test]
fn the_fig8_preset_sweeps_delta_t_and_plots_the_papers_point() {
    let mut a = args(&["--preset", "fig8", "--duration", "4"]);
    assert_eq!(a.preset, Some(Preset::Fig8));
    let p = plan_cli::build(&a).unwrap();
    assert_eq!(p.deployment.layout, Deployment::fig8().layout);
    let s = p.sweep.unwrap();
    assert_eq!((s.param, s.values().len()), (SweepParam::DeltaT, 10));
    let dir = std::env::temp_dir().join(format!("beets-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("fig8.svg");
    a.plot = Some(file.clone());
    a.sweep = Some("delta-t=400..600:100".into());
    let out = plan_cli::run(&a).unwrap();
    assert_eq!(out.lines().filter(|l| l.contains('%')).count(), 3, "{out}");
    let svg = std::fs::read_to_string(&file).unwrap();
    let texts = svg_texts(&svg);
    for want in [
        "paper, Fig. 8: ≈ 80 %",
        "paper, Fig. 8: ≈ 2 tuples/s per sender (× 4)",
        "receiver R3",
    ] {
        assert!(texts.iter().any(|t| t == want), "{want:?} not in {texts:?}");
    }
    a.plot = Some(dir.join("fig8.png"));
    assert!(plan_cli::run(&a).unwrap_err().contains("only SVG"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_toml_file_and_the_command_line_build_the_same_deployment() {
    let dir = std::env::temp_dir().join(format!("beets-plan-toml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("site.toml");
    std::fs::write(
        &path,
        r#"
seed = 9
duration_s = 5
delta_t_ms = 300
adv_interval_ms = 50
instances = 2
queue = 4
queue_policy = "refuse"
rate = 10.0
loss = 0.1
range_m = 20.0
senders = 6
receivers = 2
distance_m = 4.5
"#,
    )
    .unwrap();
    let from_file = plan_cli::build(&args(&["--file", path.to_str().unwrap()])).unwrap();
    let from_cli = plan_cli::build(&args(&[
        "--seed",
        "9",
        "--duration",
        "5",
        "--delta-t",
        "300",
        "--interval",
        "50",
        "--instances",
        "2",
        "--queue",
        "4",
        "--queue-policy",
        "refuse",
        "--rate",
        "10",
        "--loss",
        "0.1",
        "--range",
        "20",
        "--senders",
        "6",
        "--receivers",
        "2",
        "--distance",
        "4.5",
    ]))
    .unwrap();
    assert_eq!(from_file.deployment, from_cli.deployment);
    let r = plan::run(&from_file.deployment);
    assert_eq!(r.senders.len(), 6);
    assert!(r.senders.iter().all(|s| s.queue_dropped == 0));
    assert!(
        r.queue_drops() > 0,
        "10 tuples/s overflow a 300 ms × 2 sender: refusals"
    );

    // Explicit positions, and an option overriding the file.
    std::fs::write(
        &path,
        "sender_positions = [[0.0, 0.0], [50.0, 0.0]]\nreceiver_positions = [[1.0, 0.0]]\nduration_s = 3\n",
    )
    .unwrap();
    let p = plan_cli::build(&args(&["--file", path.to_str().unwrap(), "--seed", "4"])).unwrap();
    assert_eq!(
        p.deployment.layout,
        Layout::Positions {
            senders: vec![(0.0, 0.0), (50.0, 0.0)],
            receivers: vec![(1.0, 0.0)]
        }
    );
    assert_eq!(p.deployment.medium.seed, 4);
    let out = plan_cli::run(&args(&["--file", path.to_str().unwrap()])).unwrap();
    assert!(out.contains("R0"), "{out}");
    // One of the two senders is out of range.
    assert_eq!(plan::run(&p.deployment).receivers[0].senders_in_range, 1);
    let err = plan_cli::build(&args(&[
        "--file",
        path.to_str().unwrap(),
        "--sweep",
        "distance=1..3:1",
    ]))
    .unwrap_err();
    assert!(err.contains("ring"), "{err}");
    std::fs::write(&path, "sendrs = 3\n").unwrap();
    let err = plan_cli::build(&args(&["--file", path.to_str().unwrap()])).unwrap_err();
    assert!(err.contains("sendrs"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_demo_timeline_plot_holds_both_series_and_the_round_trips() {
    let fig = plot::timeline_figure(
        "demo",
        &[0.1, 0.2, 1.5, 2.5],
        &[0.4, 2.7],
        &[(1.0, Some(420.0)), (2.0, None)],
        4,
    );
    assert_eq!(
        fig.panels[0].series[0].points,
        [(0.5, 2.0), (1.5, 1.0), (2.5, 1.0), (3.5, 0.0)]
    );
    assert_eq!(
        fig.panels[0].series[1].points,
        [(0.5, 1.0), (1.5, 0.0), (2.5, 1.0), (3.5, 0.0)]
    );
    let texts = svg_texts(&plot::svg(&fig).unwrap());
    for want in [
        "time since start (s)",
        "tuples per second",
        "round trip (ms)",
        "published by the mobiles",
        "delivered to the server (distinct)",
        "survey round trip (first answer)",
        "survey not answered",
    ] {
        assert!(texts.iter().any(|t| t == want), "{want:?} not in {texts:?}");
    }
}

// --- beets node --stats ---------------------------------------------------------------------

/// `key=value` pairs of a stats line.
fn fields(line: &str) -> std::collections::HashMap<String, u64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.trim_end_matches('s').parse().ok()?)))
        .collect()
}

#[test]
fn the_stats_line_and_json_carry_the_nodes_counters() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let port = beets::udp::reserve_port().unwrap();
        let cfg = beets::udp::UdpConfig::loopback(port.port());
        let node = |name: &str| beets::core::NodeConfig::new(beets::core::Transport::Udp, name);
        let a = beets::udp::UdpSpace::spawn(cfg.clone(), node("a").unwrap(), 1).unwrap();
        let b = beets::udp::UdpSpace::spawn(cfg, node("b").unwrap(), 2).unwrap();
        let t = beets::core::parse_tuple(r#"("HELLO", 1)"#).unwrap();
        let mut got = b
            .handle()
            .subscribe(beets::core::parse_template(r#"("HELLO", ?)"#).unwrap(), 4)
            .await
            .unwrap();
        a.handle().announce().await.unwrap();
        a.handle().out(t, None).await.unwrap();
        // The OUT left after the IAMHERE, from the same socket: once it is here, so is that.
        got.recv().await.unwrap();
        let s = b.handle().stats().await.unwrap();
        assert_eq!(s.neighbours, 1);
        let snap = stats::Snapshot {
            space: "udp-ts",
            uptime: Duration::from_secs(7),
            stats: s,
            queue: s.queued,
        };
        let line = stats::line(&snap);
        assert!(line.starts_with("stats udp-ts t=7s frames "), "{line}");
        let f = fields(&line);
        let n = &s.node;
        for (key, want) in [
            ("in", n.frames_in),
            ("out", n.transmits),
            ("messages", n.messages_in),
            ("stored", n.stored),
            ("replies", n.replies_sent),
            ("duplicate", n.duplicates),
            ("malformed", n.dropped_malformed),
            ("key", n.dropped_key),
            ("own", n.dropped_own),
            ("transport", n.dropped_transport),
            ("not-stored", n.not_stored),
            ("send-error", s.send_errors),
            ("delivery-full", s.deliveries_dropped),
            ("queue", s.queued as u64),
            ("pending", s.pending_requests as u64),
            ("neighbours", 1),
        ] {
            assert_eq!(f.get(key), Some(&want), "{key} in {line}");
        }
        assert_eq!((n.messages_in, n.stored), (2, 1), "{line}");
        let j: serde_json::Value = serde_json::from_str(&stats::json(&snap)).unwrap();
        assert_eq!(j["space"], "udp-ts");
        assert_eq!(j["frames_in"], n.frames_in);
        assert_eq!(j["messages"], 2);
        assert_eq!(j["neighbours"], 1);
        assert_eq!(j["drops"]["own"], n.dropped_own);
        assert_eq!(
            j["drops"].as_object().unwrap().len(),
            stats::drops(&s).len()
        );
        a.close().await;
        b.close().await;
    });
}

fn beets_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("examples").join("beets")
}

#[test]
fn beets_node_prints_stats_lines_that_match_its_stop_summary() {
    let port = beets::udp::reserve_port().unwrap();
    let out = Command::new(beets_bin())
        .args([
            "node",
            "--udp",
            "--name",
            "st",
            "--port",
            &port.port().to_string(),
        ])
        .args(["--broadcast", "127.255.255.255", "--out", r#"("A", 1)"#])
        .args(["--stats", "1", "--stats-json", "--exit-after", "1"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run beets node");
    drop(port);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let last: serde_json::Value = text
        .lines()
        .rfind(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no stats line:\n{text}"));
    // Its own broadcast came back and was dropped as its own; nothing else is on this port.
    assert_eq!(last["frames_in"], 1, "{text}");
    assert_eq!(last["drops"]["own"], 1, "{text}");
    assert_eq!(last["frames_out"], 1, "{text}");
    let summary = text
        .lines()
        .find(|l| l.starts_with("udp-ts: frames in"))
        .unwrap_or_else(|| panic!("no stop summary:\n{text}"));
    assert!(
        summary.starts_with("udp-ts: frames in 1, messages 0, stored 0"),
        "{summary}"
    );
    let bad = Command::new(beets_bin())
        .args(["node", "--udp", "--stats-json"])
        .output()
        .unwrap();
    assert!(!bad.status.success(), "--stats-json needs --stats");
}
