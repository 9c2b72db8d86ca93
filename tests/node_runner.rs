//! The node runner (`beets node`) end to end: two real nodes on loopback, agents loaded from
//! files, a tuple stored by one node's agent read by the other node's agent over UDP.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The `beets` example binary that `cargo test` builds beside this test.
fn beets_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("examples").join("beets");
    assert!(
        bin.exists(),
        "{} missing: run through `cargo test`, which builds examples",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn node(name: &str, port: u16, agent: &str) -> std::process::Child {
    let root = env!("CARGO_MANIFEST_DIR");
    Command::new(beets_bin())
        .args(["node", "--udp", "--name", name, "--port", &port.to_string()])
        // Loopback only: never the limited broadcast.
        .args(["--broadcast", "127.255.255.255"])
        .args(["--agent", &format!("{root}/tests/agents/{agent}.js")])
        .args(["--exit-after", "4"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start beets node")
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn two_nodes_exchange_a_tuple_through_agents_loaded_from_files() {
    let port = free_port();
    let a = node("a", port, "producer");
    let b = node("b", port, "consumer");
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (ta, tb) = (text(&a), text(&b));
    assert!(a.status.success(), "node a failed:\n{ta}");
    assert!(b.status.success(), "node b failed:\n{tb}");
    assert!(ta.contains("agent producer: stored"), "node a:\n{ta}");
    assert!(
        tb.contains(r#"agent consumer: GOT ["HELLO","from-agent",42]"#),
        "node b never read the tuple:\n{tb}"
    );
    assert!(
        ta.contains("replies sent 1"),
        "node a answered the rd:\n{ta}"
    );
    assert!(tb.contains("node b stopping"), "clean exit:\n{tb}");
}

#[test]
fn node_runner_reports_a_missing_agent_file_in_one_line() {
    let out = Command::new(beets_bin())
        .args([
            "node",
            "--udp",
            "--port",
            &free_port().to_string(),
            "--broadcast",
            "127.255.255.255",
        ])
        .args(["--agent", "/nonexistent/agent.js", "--exit-after", "1"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: agent /nonexistent/agent.js:"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
