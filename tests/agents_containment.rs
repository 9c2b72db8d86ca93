//! Agents that cannot take the node down, between real processes on UDP loopback: `beets node`
//! runs its agents in a supervised worker process; agents stuck in native code or hogging the
//! CPU are stopped and reported while a benign request filter on the same node keeps answering,
//! and the node's CPU goes back to idle. Also: active tuples replayed or forged with an old
//! version are refused, and kernel receive-queue drops show in the node's stats.

mod common;

use common::{beets_bin, free_port, spawn_udp_node, stdout_lines};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use beets::core::{FpeKey, NodeConfig, Transport};
use beets::udp::{UdpConfig, UdpSpace};

fn agent(name: &str) -> String {
    format!("{}/tests/agents/{name}.js", env!("CARGO_MANIFEST_DIR"))
}

/// A running `beets node` whose stdout lines arrive on a channel.
struct NodeProc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl NodeProc {
    fn start(port: u16, extra: &[&str]) -> NodeProc {
        let mut child = spawn_udp_node(port, extra);
        let lines = stdout_lines(&mut child);
        NodeProc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (at most `within`) for a line containing `what`.
    fn wait_for(&mut self, what: &str, within: Duration) -> bool {
        if self.seen.iter().any(|l| l.contains(what)) {
            return true;
        }
        let end = Instant::now() + within;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(what);
                    self.seen.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    fn drain(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    fn text(&mut self) -> String {
        self.drain();
        self.seen.join("\n")
    }

    /// utime + stime in clock ticks of the node and its (worker) child processes.
    fn cpu_ticks(&self) -> u64 {
        let pid = self.child.id();
        let mut pids = vec![pid];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                let c = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                pids.extend(c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
        pids.iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
            .map(|s| {
                // Fields after the command name in parentheses; utime and stime are 14 and 15.
                let rest = &s[s.rfind(')').unwrap() + 2..];
                let f: Vec<&str> = rest.split_whitespace().collect();
                f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
            })
            .sum()
    }

    fn stop(mut self) -> String {
        self.interrupt()
    }

    fn interrupt(&mut self) -> String {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.text()
    }
}

impl Drop for NodeProc {
    /// A failed test must not leave its node running (its worker ends with its stdin).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issues RDs to the node every 50 ms while `keep_going` says so; returns (answered, asked).
/// An RD counts as answered when its reply came within the node's back-off (30 ms) + 100 ms.
fn rd_loop(port: u16, mut keep_going: impl FnMut(usize) -> bool) -> (usize, usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let client = UdpSpace::spawn_random(
            UdpConfig::loopback(port),
            NodeConfig::new(Transport::Udp, "client").unwrap(),
        )
        .unwrap();
        let template: beets::core::Template = r#"("DATA", ?int16)"#.parse().unwrap();
        let (mut answered, mut asked) = (0, 0);
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while keep_going(asked) {
            tick.tick().await;
            asked += 1;
            let r = client
                .handle()
                .rd(template.clone(), Duration::from_millis(130))
                .await
                .unwrap();
            answered += usize::from(r.is_some());
        }
        client.close().await;
        (answered, asked)
    })
}

#[test]
fn stuck_and_greedy_agents_are_stopped_while_a_filter_keeps_answering() {
    let port = free_port();
    let freezers = [
        "freeze_indexof",
        "freeze_native_loop",
        "freeze_sort",
        "freeze_stringify",
        "freeze_regex",
    ];
    let mut args = vec!["--out".to_owned(), r#"("DATA", 1)"#.to_owned()];
    for a in ["benign_filter"]
        .iter()
        .chain(freezers.iter())
        .chain(["saturator"].iter())
    {
        args.push("--agent".into());
        args.push(agent(a));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut node = NodeProc::start(port, &args);
    assert!(
        node.wait_for("running (7 agents)", Duration::from_secs(20)),
        "{}",
        node.text()
    );
    let started = Instant::now();
    // RDs while the bad agents are being stopped: until each is disabled (and at least 4 s).
    let mut disabled = Vec::new();
    let (answered, asked) = rd_loop(port, |_| {
        node.drain();
        disabled = freezers
            .iter()
            .chain(["saturator"].iter())
            .filter(|a| {
                node.seen
                    .iter()
                    .any(|l| l.starts_with(&format!("agent {a}: disabled")))
            })
            .copied()
            .collect();
        (disabled.len() < 6 || started.elapsed() < Duration::from_secs(4))
            && started.elapsed() < Duration::from_secs(30)
    });
    let text = node.text();
    assert_eq!(
        disabled.len(),
        6,
        "not every bad agent was stopped:\n{text}"
    );
    // The sort's comparator is JavaScript, and the regex engine polls the interrupt handler:
    // those two are stopped by the budget; the other three only by the watchdog.
    for a in ["freeze_indexof", "freeze_native_loop", "freeze_stringify"] {
        assert!(
            text.contains(&format!("agent {a}: fault: stuck past its budget")),
            "{a} was not stopped as stuck:\n{text}"
        );
    }
    assert!(
        text.contains("agent saturator: fault: cpu share exceeded"),
        "{text}"
    );
    assert!(!text.contains("agent benign_filter: disabled"), "{text}");
    let ratio = answered as f64 / asked as f64;
    eprintln!(
        "answered {answered}/{asked} RDs ({:.1} %) in {:.1} s",
        ratio * 100.0,
        started.elapsed().as_secs_f64()
    );
    assert!(ratio >= 0.95, "answered {answered}/{asked}:\n{text}");

    // The CPU goes back to idle: over one second the node and its worker use < 5 %.
    let before = node.cpu_ticks();
    let t0 = Instant::now();
    let (_, _) = rd_loop(port, |asked| asked < 20);
    let ticks = node.cpu_ticks() - before;
    let hz = 100.0; // USER_HZ on Linux
    let share = ticks as f64 / hz / t0.elapsed().as_secs_f64();
    eprintln!(
        "CPU after the agents were stopped: {:.1} % of a core",
        share * 100.0
    );
    assert!(share < 0.10, "CPU still busy: {:.1} %", share * 100.0);
    let text = node.stop();
    assert!(text.contains("node dut stopping"), "{text}");
}

#[test]
fn a_bad_agent_file_is_reported_and_skipped_unless_strict() {
    let port = free_port();
    let mut node = NodeProc::start(
        port,
        &[
            "--agent",
            "/nonexistent/x.js",
            "--agent",
            &agent("benign_filter"),
            "--exit-after",
            "1",
        ],
    );
    assert!(
        node.wait_for("running (1 agents)", Duration::from_secs(20)),
        "{}",
        node.text()
    );
    let text = node.stop();
    assert!(
        text.contains("agent x: not loaded (/nonexistent/x.js)"),
        "{text}"
    );
    let out = Command::new(beets_bin())
        .args(["node", "--udp", "--port", &free_port().to_string()])
        .args([
            "--agent",
            "/nonexistent/x.js",
            "--strict-agents",
            "--exit-after",
            "1",
        ])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn replayed_and_forged_active_tuples_are_refused() {
    let port = free_port();
    let mut node = NodeProc::start(port, &["--key", "pw", "--active-fpe"]);
    assert!(
        node.wait_for("running", Duration::from_secs(20)),
        "{}",
        node.text()
    );
    let v1 = r#"({ init() { log("v1 up") } })"#;
    let v2 = r#"({ init() { log("v2 up") } })"#;
    let evil = r#"({ init() { log("evil up") } })"#;
    // Two workers: the test blocks one while it waits for the node's output.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut cfg = NodeConfig::new(Transport::Udp, "sender").unwrap();
        cfg.key = Some(FpeKey::from_password("pw"));
        let c = UdpSpace::spawn_random(UdpConfig::loopback(port), cfg).unwrap();
        let h = c.handle().clone();
        h.out(beets_agents::active::encode("hello", 2, v2).unwrap(), None)
            .await
            .unwrap();
        assert!(
            node.wait_for("agent active:hello: v2 up", Duration::from_secs(10)),
            "{}",
            node.text()
        );
        // A captured older version replayed: refused (no rollback).
        h.out(beets_agents::active::encode("hello", 1, v1).unwrap(), None)
            .await
            .unwrap();
        // A forgery that keeps the running version with other code: refused.
        h.out(
            beets_agents::active::encode("hello", 2, evil).unwrap(),
            None,
        )
        .await
        .unwrap();
        c.close().await;
    });
    assert!(
        node.wait_for("version 2 is not newer", Duration::from_secs(10)),
        "{}",
        node.text()
    );
    let text = node.stop();
    assert!(
        text.contains("agent hello: active tuple from 127.0.0.1:")
            && text.contains("refused: version 1 is not newer than version 2"),
        "{text}"
    );
    assert!(
        !text.contains("v1 up") && !text.contains("evil up"),
        "{text}"
    );
}

#[test]
fn kernel_receive_queue_drops_appear_in_the_stats() {
    let port = free_port();
    let mut node = NodeProc::start(
        port,
        &["--recv-buffer", "4096", "--agent", &agent("slow_out")],
    );
    assert!(
        node.wait_for("running", Duration::from_secs(20)),
        "{}",
        node.text()
    );
    // A burst of 3000 datagrams straight at the node's port, far faster than it reads.
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let junk = [0u8; 200];
    for _ in 0..3000 {
        let _ = s.send_to(&junk, ("127.0.0.1", port));
    }
    let text = node.stop();
    let drops: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("udp-ts: kernel receive-queue drops "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no drop count:\n{text}"));
    assert!(drops > 0, "{text}");
}
