//! The node runner (`beets node`) end to end: two real nodes on loopback, agents loaded from
//! files, a tuple stored by one node's agent read by the other node's agent over UDP.

mod common;

use common::{beets_bin, free_port, text};
use std::process::Command;

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
        .args(["--agent", "/nonexistent/agent.js", "--strict-agents"])
        .args(["--exit-after", "1"])
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

/// Runs `beets ARGS`; returns (exit code, stdout, stderr).
fn beets(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(beets_bin())
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `-` is an Ascii85 character: a local name that starts with it is a value, not a flag.
#[test]
fn unframe_accepts_a_name_that_starts_with_a_hyphen() {
    let msg = "48f60c53454e534f520a4c4947485402003fc00000";
    let (code, framed, err) = beets(&["frame", "--seq", "38", msg]);
    assert_eq!(code, Some(0), "{err}");
    let mut lines = framed.lines();
    let name = lines.next().unwrap();
    let uuid = lines.next().unwrap();
    assert!(name.starts_with('-'), "{name}");
    let (code, out, err) = beets(&["unframe", "--name", name, "--uuid", uuid]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), msg);
    // A password may start with `-` too.
    let (code, enc, err) = beets(&["encode", "OUT", "(1)", "--key", "-pw"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, dec, err) = beets(&["decode", enc.trim(), "--key", "-pw"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(dec.contains("tuple: (1)"), "{dec}");
}

/// `--out` stores the tuple on the node itself as well: a node that starts after the broadcast
/// (and so never heard it) still reads it from the lone holder. `--announce` makes the holder
/// known to the reader as a neighbour.
#[test]
fn node_out_is_stored_locally_and_announce_is_heard() {
    use std::io::{BufRead, BufReader};
    let port = free_port().to_string();
    let mut a = Command::new(beets_bin())
        .args(["node", "--udp", "--name", "a", "--port", &port])
        .args(["--broadcast", "127.255.255.255", "--exit-after", "6"])
        .args(["--out", r#"("HELLO", "from-out", 7)"#, "--announce", "1"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start node a");
    // Wait until a has stored and broadcast its tuple (it prints "running" after that).
    let mut a_out = BufReader::new(a.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            a_out.read_line(&mut line).unwrap() > 0,
            "a ended early:\n{seen}"
        );
        seen += &line;
        if line.contains("node a running") {
            break;
        }
    }
    assert!(seen.contains("udp-ts: node id "), "{seen}");
    let root = env!("CARGO_MANIFEST_DIR");
    let b = Command::new(beets_bin())
        .args(["node", "--udp", "--name", "b", "--port", &port])
        .args(["--broadcast", "127.255.255.255", "--exit-after", "3"])
        .args(["--agent", &format!("{root}/tests/agents/consumer.js")])
        .env("RUST_LOG", "beets_core=debug")
        .output()
        .unwrap();
    let tb = text(&b);
    assert!(b.status.success(), "{tb}");
    assert!(
        tb.contains(r#"agent consumer: GOT ["HELLO","from-out",7]"#),
        "b never read a's --out tuple:\n{tb}"
    );
    assert!(
        tb.contains("neighbour") && tb.contains(r#"("NODE", "a")"#),
        "b never heard a's announcement:\n{tb}"
    );
    let _ = a.kill();
    let _ = a.wait();
}

/// Spec §12.1 vector a through the tool, both ways; a flipped MIC bit is refused by its reason.
#[test]
fn encode_and_decode_sealed_messages() {
    let k = "000102030405060708090a0b0c0d0e0f";
    let (code, out, err) = beets(&[
        "encode",
        "OUT",
        r#"("SENSOR", "LIGHT", 512, 1.5)"#,
        "--seal-key",
        k,
        "--source-id",
        "258",
        "--counter",
        "7",
        "--transport",
        "ble",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let a = "88990078c4c1dbd1e112299fae4c5719607210cad2bd3a955bc756eadd70b2";
    assert_eq!(out.trim(), a);
    let (code, out, err) = beets(&["decode", a, "--seal-key", k, "--transport", "ble"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("source id: 258") && out.contains("counter: 7"),
        "{out}"
    );
    assert!(
        out.contains(r#"tuple: ("SENSOR", "LIGHT", 512, 1.5)"#),
        "{out}"
    );
    let forged = format!("{}b3", &a[..a.len() - 2]);
    let (code, _, err) = beets(&["decode", &forged, "--seal-key", k, "--transport", "ble"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("bad MIC"), "{err}");
    // The same message received over UDP (M = 8) does not verify either.
    let (code, _, err) = beets(&["decode", a, "--seal-key", k, "--transport", "udp"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("bad MIC"), "{err}");
}
