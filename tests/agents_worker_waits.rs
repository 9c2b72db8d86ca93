//! Issue 13's agent actions end to end in the worker process, as `beets node` runs them: an agent
//! (`tests/agents/waits_worker.js`) in `beets node`'s supervised worker process uses
//! `rd(template, {wait, scope})` locally, over the air and both, `host.rdAll`/`host.inpAll`, and
//! hears removals (`inp`, `rm`, expiry, a remote INP) through `ts` rules with removal kinds —
//! against the node's real UDP space, a test node on the same loopback port feeding it.
//!
//! No sleeps as synchronisation: each step waits for a line the agent logged (or the test
//! node's counters), with a deadline; the only wait of its own is the 1 s lifetime of the tuple
//! that expires.

mod common;

use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use beets::core::{NodeConfig, Template, Transport, Tuple};
use beets::udp::{UdpConfig, UdpSpace};
use common::{free_port, spawn_udp_node, stdout_lines};

/// How long any one step may take.
const STEP: Duration = Duration::from_secs(20);

/// A running `beets node` whose stdout lines arrive on a channel.
struct NodeProc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl NodeProc {
    fn start(port: u16, agent: &str) -> NodeProc {
        let mut child = spawn_udp_node(port, &["--agent", agent]);
        let lines = stdout_lines(&mut child);
        NodeProc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The line containing `what`, printed before or within [`STEP`]; panics otherwise.
    fn expect(&mut self, what: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(what)) {
            return l.clone();
        }
        let end = Instant::now() + STEP;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(what);
                    self.seen.push(l.clone());
                    if hit {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line with {what:?}; the node printed:\n{}", self.text());
    }

    fn text(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }

    /// The command lines of the node's child processes.
    fn children(&self) -> Vec<String> {
        let pid = self.child.id();
        let mut out = Vec::new();
        for t in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let c = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for p in c.split_whitespace() {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                out.push(String::from_utf8_lossy(&cmd).replace('\0', " "));
            }
        }
        out
    }

    /// Stops the node as Ctrl-C does; returns everything it printed.
    fn stop(mut self) -> String {
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

fn t(s: &str) -> Tuple {
    s.parse().unwrap()
}

fn tpl(s: &str) -> Template {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_waits_bulk_queries_and_removal_events_in_the_worker_process() {
    let port = free_port();
    let agent = format!(
        "{}/tests/agents/waits_worker.js",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut node = NodeProc::start(port, &agent);
    let mut expect = |what: &str| tokio::task::block_in_place(|| node.expect(what));
    expect("waiting for L");
    expect("running");
    let tester = UdpSpace::spawn_random(
        UdpConfig::loopback(port),
        NodeConfig::new(Transport::Udp, "tester").unwrap(),
    )
    .unwrap();
    let me = tester.handle();

    // A local wait, woken by an OUT from the air.
    me.out(t(r#"("L", 5)"#), None).await.unwrap();
    expect(r#"local rd ["L",5] from null"#);

    // A network read that waits here (spec §11) until this node holds the tuple.
    let deadline = Instant::now() + STEP;
    while me.stats().await.unwrap().node.waits_accepted == 0 {
        assert!(
            Instant::now() < deadline,
            "the agent's rd never waited here"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    me.host_out(t(r#"("N", 6)"#), None).await.unwrap();
    expect(&format!(r#"network rd ["N",6] from 127.0.0.1:{port}"#));

    // Scope both: neither space holds ("B", 3) yet; the node stores it from the air after
    // ("B", 1) and ("B", 2), which it answers for.
    for i in 1..=2 {
        let b = t(&format!("(\"B\", {i})"));
        me.out(b.clone(), None).await.unwrap();
        let got = me
            .rd(tpl(&format!("(\"B\", {i})")), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got.map(|(t, _)| t), Some(b));
    }
    me.out(t(r#"("B", 3)"#), None).await.unwrap();
    expect(r#"both rd ["B",3] from null"#);
    expect("rdAll 1,2,3");
    expect("inpAll 1,2,3");
    expect("left 0");
    for i in 1..=3 {
        expect(&format!(r#"removed ["B",{i}] inp from null"#));
    }
    expect("rm 1");
    expect(r#"removed ["M",1] rm"#);
    expect("local inp null");

    // Removals the test causes: an expiry and a remote INP.
    me.out(t(r#"("E", 1)"#), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    me.out(t(r#"("R", 1)"#), None).await.unwrap();
    let taken = me
        .inp(tpl(r#"("R", ?)"#), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(taken.map(|(t, _)| t), Some(t(r#"("R", 1)"#)));
    expect(r#"removed ["R",1] inp"#);
    expect(r#"removed ["E",1] expired"#);

    // All of it ran in the worker process, without a fault.
    let children = node.children();
    assert!(
        children.iter().any(|c| c.contains("node --agent-worker")),
        "no agent worker among the node's children: {children:?}"
    );
    tester.close().await;
    let out = node.stop();
    assert!(!out.contains("fault"), "{out}");
    assert!(!out.contains("error"), "{out}");
}
