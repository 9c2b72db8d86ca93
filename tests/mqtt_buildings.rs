//! Two (and three) buildings joined through one MQTT broker, in Linux network namespaces (needs
//! root, `ip` from iproute2 and `mosquitto`): each building is a namespace with its own LAN (a
//! bridge `lan0`, 10.252.B.1/24, broadcast 10.252.B.255) and an uplink to a core namespace that
//! runs mosquitto. The core does not forward, so no packet — broadcast or not — goes from one
//! building to another except through the broker.
//!
//! ```text
//!  ns beetsmq-PID-b0 (building A): lan0 10.252.1.1/24, uplink 10.253.1.2 ─veth─┐
//!  ns beetsmq-PID-b1 (building B): lan0 10.252.2.1/24, uplink 10.253.2.2 ─veth─┼─ ns beetsmq-PID-core
//!  ns beetsmq-PID-b2 (building C): lan0 10.252.3.1/24, uplink 10.253.3.2 ─veth─┘   mosquitto :1883
//! ```
//!
//! Real processes of the `beets` tool run in the buildings with `ip netns exec`: a node `a1` in
//! building A holding a tuple that it broadcast before any gateway was up, `beets node --udp
//! --mqtt` gateways, one watcher node per reading building (`--stats 1`: its counters show
//! every copy that entered the building), the one-shot `beets rd` and `beets out` clients.
//! Scenarios, each on its own port and MQTT space:
//! 1. two buildings, a gateway each: an `rd` in B is answered by `a1` in A (request and reply
//!    cross both gateways), an `out` in A is stored in B; every datagram enters each building
//!    once (the watchers count no duplicate) and each gateway forwards into its LAN exactly what
//!    the other gateways took from theirs (no loop, nothing lost);
//! 2. three buildings, a gateway each (three gateways): the same from A to B and to C;
//! 3. three gateways, two of them in building A: B's gateway forwards each key once although
//!    both A gateways may publish it (B's watcher counts no duplicate).
//!
//! In every scenario each gateway forwards each datagram of the space exactly once, in the
//! direction it first heard it: its two counters add up to the number of distinct datagrams.
//!
//! Everything the test creates is removed by a drop guard, also when an assertion fails; stale
//! namespaces of killed runs are removed at the start. Without the privilege, `ip` or mosquitto
//! the test prints `SKIPPED: <reason>` and returns; with `BEETS_NETNS_REQUIRED=1` (CI) or, for a
//! missing mosquitto, `BEETS_REQUIRE_MQTT=1`, a skip fails instead.

#[allow(unreachable_pub)]
mod common;
#[path = "../beets-mqtt/tests/mosquitto/mod.rs"]
mod mosquitto;

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::netns::{self, effective_uid, ip, remove_stale_namespaces, report, run};
use common::{beets_bin, free_port, lines_of, number_after};

const TEST_NAME: &str = "buildings_joined_through_a_broker_in_namespaces_requires_root";
const PREFIX: &str = "beetsmq";
/// The broker's port in the core namespace (a namespace of our own: no clash possible).
const BROKER_PORT: u16 = 1883;
/// How long any awaited line may take (a loaded CI machine; the usual wait is well under 1 s).
const LINE: Duration = Duration::from_secs(30);

#[test]
fn buildings_joined_through_a_broker_in_namespaces_requires_root() {
    let lab = match Lab::new(3) {
        Ok(lab) => lab,
        Err(reason) => return skip(&reason),
    };
    let started = Instant::now();
    lab.assert_buildings_isolated();
    lab.scenario("two buildings", &[0, 1], &[1]);
    lab.scenario("three buildings", &[0, 1, 2], &[1, 2]);
    lab.scenario("two gateways in A", &[0, 0, 1], &[1]);
    report(&format!(
        "mqtt buildings: all scenarios passed in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
}

fn skip(reason: &str) {
    netns::skip(TEST_NAME, "BEETS_NETNS_REQUIRED", reason);
}

// --- the lab ------------------------------------------------------------------------------------

struct Lab {
    core: String,
    buildings: Vec<String>,
    /// mosquitto in the core namespace; stopped before the namespaces are deleted.
    broker: Option<Proc>,
    conf_dir: std::path::PathBuf,
}

impl Lab {
    fn new(buildings: usize) -> Result<Lab, String> {
        let euid = effective_uid().ok_or("cannot read the effective uid")?;
        if euid != 0 {
            return Err(format!(
                "not root (euid {euid}); network namespaces need root"
            ));
        }
        run("ip", &["-V"]).map_err(|e| format!("no `ip` ({e}); install iproute2"))?;
        let Some(mosquitto) = mosquitto::find_mosquitto() else {
            assert!(
                std::env::var("BEETS_REQUIRE_MQTT").as_deref() != Ok("1"),
                "BEETS_REQUIRE_MQTT=1 but no mosquitto binary (apt-get install mosquitto)"
            );
            return Err("no mosquitto binary (apt-get install mosquitto)".into());
        };
        remove_stale_namespaces(PREFIX);
        let pid = std::process::id();
        let name = |s: &str| format!("{PREFIX}-{pid}-{s}");
        let conf_dir = std::env::temp_dir().join(name("conf"));
        let mut lab = Lab {
            core: name("core"),
            buildings: Vec::new(),
            broker: None,
            conf_dir,
        };
        // `ip netns add` failing means no privilege (e.g. a container without CAP_SYS_ADMIN).
        run("ip", &["netns", "add", &lab.core])
            .map_err(|e| format!("`ip netns add` failed: {e}"))?;
        // From here on a failure drops `lab`, which deletes whatever was created.
        lab.build(buildings)
            .map_err(|e| format!("setting up the namespaces failed: {e}"))?;
        lab.start_broker(&mosquitto)?;
        report(&format!(
            "mqtt buildings: core {} (mosquitto :{BROKER_PORT}), buildings {:?}",
            lab.core, lab.buildings
        ));
        Ok(lab)
    }

    fn build(&mut self, buildings: usize) -> Result<(), String> {
        let core = self.core.clone();
        ip(&["-n", &core, "link", "set", "lo", "up"])?;
        // The core answers MQTT and routes nothing between the buildings.
        run(
            "ip",
            &[
                "netns",
                "exec",
                &core,
                "sh",
                "-c",
                "echo 0 > /proc/sys/net/ipv4/ip_forward",
            ],
        )?;
        for b in 0..buildings {
            let ns = format!("{PREFIX}-{}-b{b}", std::process::id());
            ip(&["netns", "add", &ns])?;
            self.buildings.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // The building's LAN: a bridge (hosts could be attached; here the processes of the
            // building share the namespace and hear each other's broadcasts on it).
            ip(&["-n", &ns, "link", "add", "lan0", "type", "bridge"])?;
            let lan = format!("{}/24", lan_addr(b));
            ip(&["-n", &ns, "addr", "add", &lan, "brd", "+", "dev", "lan0"])?;
            ip(&["-n", &ns, "link", "set", "lan0", "up"])?;
            // The uplink to the core.
            let port = format!("up{b}");
            ip(&[
                "-n", &core, "link", "add", &port, "type", "veth", "peer", "name", "uplink",
                "netns", &ns,
            ])?;
            let core_cidr = format!("{}/24", broker_addr(b));
            let own_cidr = format!("{}/24", Ipv4Addr::new(10, 253, b as u8 + 1, 2));
            ip(&["-n", &core, "addr", "add", &core_cidr, "dev", &port])?;
            ip(&["-n", &core, "link", "set", &port, "up"])?;
            ip(&["-n", &ns, "addr", "add", &own_cidr, "dev", "uplink"])?;
            ip(&["-n", &ns, "link", "set", "uplink", "up"])?;
        }
        Ok(())
    }

    fn start_broker(&mut self, bin: &std::path::Path) -> Result<(), String> {
        std::fs::create_dir_all(&self.conf_dir).map_err(|e| format!("config dir: {e}"))?;
        let conf = self.conf_dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {BROKER_PORT} 0.0.0.0\nallow_anonymous true\npersistence false\n\
                 log_dest stderr\n"
            ),
        )
        .map_err(|e| format!("mosquitto config: {e}"))?;
        let mut broker = Proc::spawn(
            &self.core,
            "mosquitto",
            Command::new(bin).arg("-c").arg(&conf),
            true,
        );
        broker.expect("running", LINE);
        self.broker = Some(broker);
        Ok(())
    }

    /// No route from one building to another: only the broker joins them.
    fn assert_buildings_isolated(&self) {
        for (a, ns) in self.buildings.iter().enumerate() {
            for b in (0..self.buildings.len()).filter(|&b| b != a) {
                let to = lan_addr(b).to_string();
                let r = run("ip", &["-n", ns, "route", "get", &to]);
                assert!(
                    r.is_err(),
                    "building {a} has a route to building {b}: {r:?}"
                );
            }
        }
    }

    /// Starts `beets ARGS` in building `b`.
    fn beets(&self, b: usize, label: &str, args: &[&str]) -> Proc {
        let mut cmd = Command::new(beets_bin());
        cmd.args(args);
        Proc::spawn(&self.buildings[b], label, &mut cmd, false)
    }

    /// Runs the one-shot `beets ARGS` in building `b` to the end; returns (success, stdout,
    /// stderr). The clients end by themselves (`out` at once, `rd` after its `--timeout`).
    fn client(&self, b: usize, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.buildings[b]])
            .arg(beets_bin())
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run a beets client");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// One scenario: a gateway in building `gateways[i]` for each `i`; `a1`, the `out` client
    /// in building A (0); an `rd` client and a watcher in each of `readers`.
    fn scenario(&self, name: &str, gateways: &[usize], readers: &[usize]) {
        let t0 = Instant::now();
        let port = free_port().to_string();
        let space = name.replace(' ', "-");
        let udp = |b: usize, node: &str| -> Vec<String> {
            [
                "node",
                "--udp",
                "--name",
                node,
                "--port",
                &port,
                "--broadcast",
                &lan_broadcast(b).to_string(),
            ]
            .map(str::to_owned)
            .to_vec()
        };
        let start = |b: usize, label: &str, args: Vec<String>| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.beets(b, label, &args)
        };
        // a1 broadcasts its tuple before any gateway is up: only a1 holds it.
        let mut args = udp(0, "a1");
        args.extend(["--out".into(), r#"("ROOM", "A-101", 21)"#.into()]);
        let mut a1 = start(0, "a1", args);
        a1.expect("node a1 running", LINE);
        let mut gws: Vec<(usize, Proc)> = Vec::new();
        for (i, &b) in gateways.iter().enumerate() {
            let gname = format!("g{b}-{i}");
            let mut args = udp(b, &gname);
            let url = format!("mqtt://{}:{BROKER_PORT}", broker_addr(b));
            args.extend(["--mqtt".into(), url, "--mqtt-space".into(), space.clone()]);
            let mut g = start(b, &gname, args);
            g.expect("mqtt: gateway connected", LINE);
            g.expect("running", LINE);
            gws.push((b, g));
        }
        let mut watchers: Vec<(usize, Proc)> = readers
            .iter()
            .map(|&b| {
                let wname = format!("w{b}");
                let mut args = udp(b, &wname);
                args.extend(["--stats".into(), "1".into()]);
                let mut w = start(b, &wname, args);
                w.expect("running", LINE);
                (b, w)
            })
            .collect();
        // An rd in each reading building, answered by a1 in A through two gateways.
        for &b in readers {
            let bcast = lan_broadcast(b).to_string();
            let (ok, stdout, stderr) = self.client(
                b,
                &[
                    "rd",
                    r#"("ROOM", "A-101", ?int16)"#,
                    "--name",
                    &format!("rd{b}"),
                    "--port",
                    &port,
                    "--broadcast",
                    &bcast,
                    "--timeout",
                    "15",
                ],
            );
            assert!(
                ok && stdout.trim() == r#"("ROOM", "A-101", 21)"#,
                "[{name}] rd in building {b}: {stdout}\n{stderr}"
            );
            report(&format!("  [{name}] rd in building {b}: {}", stderr.trim()));
        }
        // An out in A, stored by every reading building's watcher.
        let (ok, stdout, stderr) = self.client(
            0,
            &[
                "out",
                r#"("ROOM", "A-102", 22)"#,
                "--name",
                "out0",
                "--port",
                &port,
                "--broadcast",
                &lan_broadcast(0).to_string(),
            ],
        );
        assert!(ok, "[{name}] out in A: {stdout}\n{stderr}");
        for (b, w) in &mut watchers {
            let deadline = Instant::now() + LINE;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let line = w.expect("stats udp-ts", left);
                if number_after(&line, " stored=") >= 1 {
                    break;
                }
            }
            report(&format!("  [{name}] the out reached building {b}"));
        }
        // Stop: watchers, gateways, a1, each printing its final counters.
        let watched: Vec<(usize, String)> =
            watchers.into_iter().map(|(b, w)| (b, w.stop())).collect();
        let gw: Vec<(usize, Gw)> = gws
            .into_iter()
            .map(|(b, g)| (b, Gw::parse(&g.stop())))
            .collect();
        let a1_text = a1.stop();
        report(&format!(
            "  [{name}] {:.2} s; gateways (building: udp->mqtt, mqtt->udp, duplicates): {}",
            t0.elapsed().as_secs_f64(),
            gw.iter()
                .map(|(b, g)| format!("{b}: {} {} {}", g.to_mqtt, g.to_udp, g.duplicates))
                .collect::<Vec<_>>()
                .join("; ")
        ));
        assert!(
            number_after(&a1_text, "replies sent ") >= readers.len() as u64,
            "[{name}] a1 answered fewer rds than asked:\n{a1_text}"
        );
        for (_, g) in &gw {
            assert_eq!(g.malformed, 0, "[{name}] {}", g.text);
            assert_eq!(g.dropped, 0, "[{name}] {}", g.text);
            assert_eq!(g.reconnects, 0, "[{name}] {}", g.text);
            assert!(g.to_mqtt >= 1, "[{name}] {}", g.text);
        }
        let single = |b: usize| gateways.iter().filter(|&&x| x == b).count() == 1;
        let gateway_of = |b: usize| &gw.iter().find(|(x, _)| *x == b).expect("a gateway").1;
        for (b, text) in &watched {
            if !single(*b) {
                continue;
            }
            let last = text
                .lines()
                .rfind(|l| l.starts_with("stats udp-ts"))
                .expect("a stats line");
            // Every datagram entered the building once: its watcher saw no copy ...
            assert_eq!(
                number_after(last, "duplicate="),
                0,
                "[{name}] a datagram entered building {b} twice: {last}"
            );
            assert_eq!(
                number_after(last, " stored="),
                1,
                "[{name}] building {b}: {last}"
            );
            // ... and each message it heard was sent in the building (and taken to the broker
            // by its gateway) or brought in by its gateway, once.
            let g = gateway_of(*b);
            assert_eq!(
                number_after(last, "messages="),
                g.to_mqtt + g.to_udp,
                "[{name}] building {b}: watcher {last}\ngateway {}",
                g.text
            );
        }
        if gateways.iter().all(|&b| single(b)) {
            // One gateway per building: each forwards into its LAN exactly the datagrams the
            // others took from theirs, once each (a loop would forward more, a loss fewer).
            for (b, g) in &gw {
                let others: u64 = gw
                    .iter()
                    .filter(|(c, _)| c != b)
                    .map(|(_, o)| o.to_mqtt)
                    .sum();
                assert_eq!(
                    g.to_udp, others,
                    "[{name}] building {b}'s gateway forwarded {} into its LAN, the others took \
                     {others} from theirs",
                    g.to_udp
                );
            }
        }
        // Every gateway hears every datagram of the space (its LAN's directly, the others'
        // from the broker) and forwards each exactly once, in the direction it heard it first
        // — also with two gateways on one LAN, whichever copy wins the race. So each forwarded
        // as many as there were distinct datagrams: what the first reader's watcher counted.
        let first = &watched[0].1;
        let distinct = number_after(
            first
                .lines()
                .rfind(|l| l.starts_with("stats udp-ts"))
                .expect("a stats line"),
            "messages=",
        );
        for (b, g) in &gw {
            assert_eq!(
                g.to_mqtt + g.to_udp,
                distinct,
                "[{name}] building {b}'s gateway forwarded {} + {} of {distinct} datagrams: {}",
                g.to_mqtt,
                g.to_udp,
                g.text
            );
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(b) = self.broker.take() {
            drop(b);
        }
        for ns in self.buildings.iter().chain([&self.core]) {
            let _ = run("ip", &["netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.conf_dir);
    }
}

fn lan_addr(b: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 252, b as u8 + 1, 1)
}

fn lan_broadcast(b: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 252, b as u8 + 1, 255)
}

/// The broker's address as seen from building `b` (the core's end of `b`'s uplink).
fn broker_addr(b: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 253, b as u8 + 1, 1)
}

/// A gateway's final counters (`beets node --mqtt` prints them at stop).
struct Gw {
    text: String,
    to_mqtt: u64,
    to_udp: u64,
    duplicates: u64,
    malformed: u64,
    dropped: u64,
    reconnects: u64,
}

impl Gw {
    fn parse(text: &str) -> Gw {
        let line = text
            .lines()
            .find(|l| l.starts_with("mqtt gateway:"))
            .unwrap_or_else(|| panic!("no gateway counters in:\n{text}"));
        Gw {
            text: line.to_owned(),
            to_mqtt: number_after(line, "udp->mqtt "),
            to_udp: number_after(line, "mqtt->udp "),
            duplicates: number_after(line, "duplicates "),
            malformed: number_after(line, "malformed "),
            dropped: number_after(line, "mqtt dropped "),
            reconnects: number_after(line, "reconnects "),
        }
    }
}

// --- processes ----------------------------------------------------------------------------------

/// A process in a namespace whose stdout lines arrive on a channel; killed when dropped.
struct Proc {
    label: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: String,
}

impl Proc {
    /// Starts `cmd` in namespace `ns`, reading its stdout (or its stderr when `stderr`: where
    /// mosquitto logs unbuffered).
    fn spawn(ns: &str, label: &str, cmd: &mut Command, stderr: bool) -> Proc {
        let mut full = Command::new("ip");
        full.args(["netns", "exec", ns]).arg(cmd.get_program());
        full.args(cmd.get_args());
        let (out, err) = if stderr {
            (Stdio::null(), Stdio::piped())
        } else {
            (Stdio::piped(), Stdio::null())
        };
        let mut child = full
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {label}: {e}"));
        let stdout: Box<dyn std::io::Read + Send> = match (child.stdout.take(), child.stderr.take())
        {
            (Some(o), _) => Box::new(o),
            (None, Some(e)) => Box::new(e),
            (None, None) => unreachable!("one stream is piped"),
        };
        let lines = lines_of(stdout);
        Proc {
            label: label.to_owned(),
            child,
            lines,
            seen: String::new(),
        }
    }

    /// The next line containing `what` (earlier lines are kept in `seen`); panics after `limit`
    /// or when the process ends first.
    fn expect(&mut self, what: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen += &line;
                    self.seen.push('\n');
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "{}: no line with {what:?} ({e}); output so far:\n{}",
                    self.label, self.seen
                ),
            }
        }
    }

    /// Stops the process as Ctrl-C does (`ip netns exec` execs it: the pid is the node's) and
    /// returns all its output; killed if it has not ended after `LINE`.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + LINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen += &line;
                    self.seen.push('\n');
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("{} did not stop; output:\n{}", self.label, self.seen)
                }
            }
        }
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
