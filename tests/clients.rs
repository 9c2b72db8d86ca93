//! `beets out|rd|inp|test|watch` against a running `beets node`, real processes on UDP
//! loopback; and the scenario (issue 13): a `beets rd --wait 10` sent before the node
//! holds the tuple, the tuple arriving 3 s later by `beets out`, answered by the node then.
//!
//! No sleeps as synchronisation: each step waits for a line the other process printed (the only
//! sleep is the scenario's own 3 s between the request and the tuple).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{NodeProcess, beets_bin, free_port, number_after, text};

/// Runs a one-shot client to its end.
fn client(args: &[&str]) -> Output {
    Command::new(beets_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run beets client")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim_end().to_owned()
}

/// A client still running, its stdout and stderr read line by line.
struct Running {
    child: Child,
    out: BufReader<ChildStdout>,
    err: BufReader<ChildStderr>,
    seen: String,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(beets_bin())
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start beets client");
        Running {
            out: BufReader::new(child.stdout.take().unwrap()),
            err: BufReader::new(child.stderr.take().unwrap()),
            child,
            seen: String::new(),
        }
    }

    fn line(reader: &mut dyn BufRead, seen: &mut String, what: &str, stream: &str) -> String {
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("read client output");
            assert!(
                n > 0,
                "client ended before printing {what:?} on {stream}:\n{seen}"
            );
            *seen += &line;
            if line.contains(what) {
                return line.trim_end().to_owned();
            }
        }
    }

    /// Reads stderr until a line contains `what`.
    fn stderr_line(&mut self, what: &str) -> String {
        Self::line(&mut self.err, &mut self.seen, what, "stderr")
    }

    /// Reads stdout until a line contains `what`.
    fn stdout_line(&mut self, what: &str) -> String {
        Self::line(&mut self.out, &mut self.seen, what, "stdout")
    }

    /// Waits for the end; the exit code and the rest of stdout and stderr.
    fn finish(mut self) -> (i32, String) {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.out, &mut rest);
        let _ = std::io::Read::read_to_string(&mut self.err, &mut rest);
        let status = self.child.wait().expect("client exit");
        (status.code().unwrap_or(-1), self.seen + &rest)
    }
}

#[test]
fn shell_clients_against_a_running_node() {
    let port = free_port().to_string();
    let p = port.as_str();
    let mut node = NodeProcess::start(&["--udp", "--port", p, "--out", "(\"T\", 1)"]);
    node.wait_for("running");

    // rd and test: the node's tuple, in the text syntax, exit 0.
    let o = client(&["rd", "(\"T\", ?)", "--port", p]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(stdout(&o), "(\"T\", 1)");
    assert!(text(&o).contains(&format!("answered by 127.0.0.1:{p}")));
    let o = client(&["test", "(\"T\", ?int16)", "--port", p]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(stdout(&o), "(\"T\", 1)");

    // None: exit 1, nothing on stdout.
    let o = client(&["rd", "(\"NOPE\", ?)", "--port", p, "--timeout", "0.3"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(stdout(&o), "");
    assert!(text(&o).contains("no match within 0.3 s"), "{}", text(&o));

    // out stores at the node; inp takes it; then it is gone.
    let o = client(&["out", "(\"O\", 2, \"two\")", "--port", p]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(stdout(&o), "");
    let o = client(&["inp", "(\"O\", ?, ?str)", "--port", p]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(stdout(&o), "(\"O\", 2, \"two\")");
    let o = client(&["rd", "(\"O\", ?, ?)", "--port", p, "--timeout", "0.3"]);
    assert_eq!(o.status.code(), Some(1), "taken by inp: {}", text(&o));

    // watch: every OUT heard, with its kind, sender and RSSI, until --count.
    let mut watch = Running::start(&["watch", "(\"W\", ?)", "--port", p, "--count", "2"]);
    watch.stderr_line("listening");
    for i in 1..=2 {
        let o = client(&["out", &format!("(\"W\", {i})"), "--port", p]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    let first = watch.stdout_line("(\"W\", 1)");
    assert_eq!(
        first,
        format!("out (\"W\", 1) from 127.0.0.1:{p} rssi none")
    );
    watch.stdout_line("(\"W\", 2)");
    let (code, all) = watch.finish();
    assert_eq!(code, 0, "{all}");

    // watch that hears nothing: exit 1 at --timeout.
    let o = client(&["watch", "(\"Q\", ?)", "--port", p, "--timeout", "0.3"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // Clients are passive: they answered nothing, and only the node's answers count.
    let out = node.stop();
    assert_eq!(number_after(&out, "stored "), 3, "{out}");
    assert_eq!(number_after(&out, "replies sent "), 3, "{out}");
}

#[test]
fn shell_clients_on_a_sealed_space() {
    let port = free_port().to_string();
    let p = port.as_str();
    let dir = std::env::temp_dir().join(format!("beets-clients-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (node_dir, client_dir) = (dir.join("node"), dir.join("client"));
    let key = "000102030405060708090a0b0c0d0e0f";
    let node_state = node_dir.to_str().unwrap();
    let mut node = NodeProcess::start(&[
        "--udp",
        "--port",
        p,
        "--seal-key",
        key,
        "--source-id",
        "1",
        "--state-dir",
        node_state,
    ]);
    node.wait_for("running");
    let sealed = [
        "--port",
        p,
        "--seal-key",
        key,
        "--source-id",
        "2",
        "--state-dir",
        client_dir.to_str().unwrap(),
    ];
    let o = client(&[&["out", "(\"S\", 1)"][..], &sealed].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Counters persist in the client's state dir: a second run is no replay.
    let o = client(&[&["rd", "(\"S\", ?)"][..], &sealed].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(stdout(&o), "(\"S\", 1)");
    // Without the key: the node drops the request, nothing answers.
    let o = client(&["rd", "(\"S\", ?)", "--port", p, "--timeout", "0.3"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = node.stop();
    assert!(out.contains("replay 0"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The scenario between real processes: a mobile's `rd` waiting 10 s is sent before the
/// beacon holds the tuple; the tuple arrives 3 s later; the beacon answers then (after its §9
/// back-off), well inside the wait.
#[test]
fn a_waiting_rd_is_answered_when_the_tuple_arrives_later() {
    let port = free_port().to_string();
    let p = port.as_str();
    let mut beacon = NodeProcess::start(&["--udp", "--port", p, "--name", "beacon"]);
    beacon.wait_for("running");

    let mut mobile = Running::start(&["rd", "(\"EXHIBIT\", ?, ?str)", "--port", p, "--wait", "10"]);
    let sent = mobile.stderr_line("sent");
    assert!(sent.contains("wait 10 s on the air"), "{sent}");
    // The scenario's own delay: the tuple reaches the beacon 3 s after the request.
    std::thread::sleep(Duration::from_secs(3));
    let before_out = Instant::now();
    let o = client(&["out", "(\"EXHIBIT\", 7, \"bees\")", "--port", p]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let answer = mobile.stdout_line("EXHIBIT");
    let after_out = before_out.elapsed();
    assert_eq!(answer, "(\"EXHIBIT\", 7, \"bees\")");
    let answered = mobile.stderr_line("answered by");
    let (code, all) = mobile.finish();
    assert_eq!(code, 0, "{all}");
    // The rd's own clock: answered after the 3 s delay, before its 10 s wait ended.
    let secs: f64 = answered
        .rsplit("after ")
        .next()
        .and_then(|s| s.trim_end_matches(" s").parse().ok())
        .unwrap_or_else(|| panic!("no time in {answered:?}"));
    assert!((3.0..10.0).contains(&secs), "{answered}");
    eprintln!(
        "answered {} ms after `beets out` started ({answered})",
        after_out.as_millis()
    );
    // The beacon kept the request pending and answered it once, when the tuple arrived.
    let out = beacon.stop();
    assert_eq!(number_after(&out, "stored "), 1, "{out}");
    assert_eq!(number_after(&out, "replies sent "), 1, "{out}");
}
