//! Helpers of the tests that run the `beets` tool as real processes.

#![allow(dead_code)]

pub(crate) mod netns;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};

/// The `beets` example binary that `cargo test` builds beside the test.
pub(crate) fn beets_bin() -> PathBuf {
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

/// A port reserved for the rest of this test process (see `beets::udp::reserve_port`): no other
/// test or program is handed it meanwhile.
pub(crate) fn free_port() -> u16 {
    static HELD: std::sync::Mutex<Vec<beets::udp::PortReservation>> =
        std::sync::Mutex::new(Vec::new());
    let r = beets::udp::reserve_port().expect("reserve a port");
    let port = r.port();
    HELD.lock().unwrap().push(r);
    port
}

/// Starts `beets node --udp --name dut` on `port` of the loopback broadcast with `extra`
/// options: stdout piped (see [`stdout_lines`]), stderr shown, `RUST_LOG` from `NODE_LOG`
/// (default `error`).
pub(crate) fn spawn_udp_node(port: u16, extra: &[&str]) -> Child {
    Command::new(beets_bin())
        .args([
            "node",
            "--udp",
            "--name",
            "dut",
            "--port",
            &port.to_string(),
        ])
        .args(["--broadcast", "127.255.255.255"])
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("NODE_LOG").unwrap_or("error".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start beets node")
}

/// The lines `child` prints on its (piped) stdout, sent on a channel by a reader thread until
/// the output ends.
pub(crate) fn stdout_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    lines_of(child.stdout.take().expect("piped stdout"))
}

/// The lines read from `input`, sent on a channel by a reader thread until it ends.
pub(crate) fn lines_of(
    input: impl std::io::Read + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(input).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    lines
}

/// stdout and stderr of a finished process, together.
pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A running `beets node` whose stdout is read line by line.
pub(crate) struct NodeProcess {
    pub(crate) child: Child,
    out: BufReader<ChildStdout>,
    pub(crate) seen: String,
}

impl NodeProcess {
    /// Starts `beets node ARGS` (stdout piped, stderr discarded unless `RUST_LOG` asks).
    pub(crate) fn start(args: &[&str]) -> NodeProcess {
        let mut child = Command::new(beets_bin())
            .arg("node")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start beets node");
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        NodeProcess {
            child,
            out,
            seen: String::new(),
        }
    }

    /// Reads stdout until a line contains `what` (panics if the process ends first); returns
    /// that line.
    pub(crate) fn wait_for(&mut self, what: &str) -> String {
        loop {
            let mut line = String::new();
            let n = self.out.read_line(&mut line).expect("read node output");
            assert!(n > 0, "node ended before printing {what:?}:\n{}", self.seen);
            self.seen += &line;
            if line.contains(what) {
                return line;
            }
        }
    }

    /// Stops the node as Ctrl-C does (SIGINT: a clean stop that prints the final counters) and
    /// returns the rest of its output.
    pub(crate) fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.out, &mut rest);
        let _ = self.child.wait();
        self.seen + &rest
    }

    /// Kills the node at once (SIGKILL: no clean shutdown, nothing saved).
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process's resident memory in KiB (Linux `/proc/PID/status` `VmRSS`).
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

/// The number after `label` in `text` (e.g. `count(out, "stored ")`).
pub(crate) fn number_after(text: &str, label: &str) -> u64 {
    let at = text
        .rfind(label)
        .unwrap_or_else(|| panic!("{label:?} not in:\n{text}"));
    text[at + label.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after {label:?} in:\n{text}"))
}
