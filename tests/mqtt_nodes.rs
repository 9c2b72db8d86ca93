//! `beets node --mqtt` between real processes: two nodes on two loopback ports (two UDP
//! "LANs" that do not hear each other), each with a gateway to one mosquitto started by the
//! test. An `--out` on one LAN is read by an agent on the other, through both gateways and the
//! broker. Without mosquitto the test prints `SKIPPED: <reason>` (a failure with
//! `BEETS_REQUIRE_MQTT=1`). Every wait is on an output line, bounded by a watchdog that kills
//! the nodes at a deadline (a hung wait then ends as a failure naming the missing line).

#[allow(unreachable_pub)]
mod common;
#[path = "../beets-mqtt/tests/mosquitto/mod.rs"]
mod mosquitto;

use std::sync::mpsc;
use std::time::Duration;

use common::{NodeProcess, free_port, number_after};
use mosquitto::Mosquitto;

/// Kills the processes `pids` (SIGKILL) unless dropped within `deadline`: a node that never
/// prints the awaited line then ends, and `wait_for` fails instead of hanging.
struct Watchdog(Option<mpsc::Sender<()>>);

impl Watchdog {
    fn new(pids: Vec<u32>, deadline: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(deadline) {
                for pid in pids {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            }
        });
        Watchdog(Some(tx))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Dropping the sender wakes the watchdog with `Disconnected`: nothing is killed.
        self.0.take();
    }
}

#[test]
fn an_out_on_one_lan_is_read_by_an_agent_on_another_through_the_broker() {
    let Some(broker) = Mosquitto::start("nodes", "") else {
        return;
    };
    let url = broker.url();
    let (pa, pb) = (free_port().to_string(), free_port().to_string());
    let root = env!("CARGO_MANIFEST_DIR");
    let consumer = format!("{root}/tests/agents/consumer.js");
    let mut a = NodeProcess::start(&[
        "--udp",
        "--name",
        "a",
        "--port",
        &pa,
        "--mqtt",
        &url,
        "--mqtt-space",
        "campus",
        "--mqtt-json",
        "--out",
        r#"("HELLO", "via-mqtt", 7)"#,
    ]);
    let dog_a = Watchdog::new(vec![a.child.id()], Duration::from_secs(60));
    a.wait_for("mqtt: json mirror on beets/v1/campus/json");
    a.wait_for("mqtt: gateway connected to mqtt://127.0.0.1:");
    a.wait_for("node a running");
    let mut b = NodeProcess::start(&[
        "--udp",
        "--name",
        "b",
        "--port",
        &pb,
        "--mqtt",
        &url,
        "--mqtt-space",
        "campus",
        "--agent",
        &consumer,
    ]);
    let dog_b = Watchdog::new(vec![b.child.id()], Duration::from_secs(60));
    b.wait_for("mqtt: gateway connected");
    // The agent's rd crosses b's gateway, the broker and a's gateway; a answers from its local
    // copy of the --out tuple, and the reply comes back the same way.
    b.wait_for(r#"agent consumer: GOT ["HELLO","via-mqtt",7]"#);
    let tb = b.stop();
    let ta = a.stop();
    drop((dog_a, dog_b));
    // a's gateway took the request from the broker to its LAN and the reply the other way.
    assert!(
        number_after(&ta, "mqtt->udp ") >= 1,
        "a's gateway forwarded no request:\n{ta}"
    );
    assert!(
        number_after(&ta, "udp->mqtt ") >= 1,
        "a's gateway forwarded no reply:\n{ta}"
    );
    assert!(
        number_after(&tb, "udp->mqtt ") >= 1 && number_after(&tb, "mqtt->udp ") >= 1,
        "b's gateway:\n{tb}"
    );
    for t in [&ta, &tb] {
        assert_eq!(number_after(t, "malformed "), 0, "{t}");
        assert_eq!(number_after(t, "reconnects "), 0, "{t}");
    }
    // The mirror published a's --out tuple (stored locally) at least.
    assert!(number_after(&ta, "mqtt json: published ") >= 1, "{ta}");
    assert_eq!(number_after(&ta, "bad JSON "), 0, "{ta}");
}

/// A refused login stops the node with one clear error line.
#[test]
fn bad_broker_credentials_stop_the_node_with_the_reason() {
    let Some(broker) = Mosquitto::start("nodes-refused", "allow_anonymous false") else {
        return;
    };
    let port = free_port().to_string();
    let out = std::process::Command::new(common::beets_bin())
        .args(["node", "--udp", "--port", &port, "--mqtt", &broker.url()])
        .args(["--mqtt-user", "bee", "--mqtt-password", "wrong"])
        .args(["--exit-after", "30"])
        .env("RUST_LOG", "error")
        .output()
        .expect("run beets node");
    let t = common::text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("error: --mqtt:"), "{t}");
}
