//! Real networks in Linux network namespaces (needs root, `ip` from iproute2 and `nft` from
//! nftables): three hosts on a private bridge, each running a UDP space in its own namespace.
//!
//! Shows (1) a subnet broadcast reaching the other namespaces, (2) a unicast peer list
//! delivering where broadcast is dropped (nftables), (3) repetition plus dedup keeping delivery
//! up under 30 % injected loss and applying each message once, (4) the multicast group.
//!
//! Topology, all made by the test and removed by a drop guard, nothing in the host's namespace:
//! ```text
//!  ns beetsudp-PID-n0 (10.250.X.1) ─veth─┐
//!  ns beetsudp-PID-n1 (10.250.X.2) ─veth─┼─ br0 in ns beetsudp-PID-hub
//!  ns beetsudp-PID-n2 (10.250.X.3) ─veth─┘
//! ```
//! Nodes run as this same test binary re-executed under `ip netns exec`, its role chosen by the
//! `BEETS_NETNS_*` environment variables. Without the privilege the test prints
//! `SKIPPED: <reason>` to stderr (past the test harness's capture) and returns; with
//! `BEETS_NETNS_REQUIRED=1` a skip fails the test instead (CI sets it).

mod common;
/// `ip`, `run`, skips and stale namespaces: shared with the facade's namespace test.
#[path = "../../tests/common/netns.rs"]
#[allow(dead_code)]
mod netns;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use beets_udp::DEFAULT_MULTICAST_GROUP;
use netns::{effective_uid, ip, remove_stale_namespaces, report, run};

/// The name of the test below; the re-executed children run exactly it.
const TEST_NAME: &str = "three_namespaces_broadcast_unicast_loss_multicast_requires_root";
const ROLE: &str = "BEETS_NETNS_ROLE";
const REQUIRED: &str = "BEETS_NETNS_REQUIRED";
const PREFIX: &str = "beetsudp";
/// Line prefix of everything a child reports on stdout.
const TAG: &str = "BEETS ";

#[test]
fn three_namespaces_broadcast_unicast_loss_multicast_requires_root() {
    if let Ok(role) = std::env::var(ROLE) {
        child::run(&role);
        return;
    }
    let lab = match Lab::new() {
        Ok(lab) => lab,
        Err(reason) => return skip(&reason),
    };
    let started = Instant::now();
    lab.broadcast_reaches_the_other_namespaces();
    lab.unicast_peers_deliver_where_broadcast_is_dropped();
    lab.repetition_and_dedup_survive_30_percent_loss();
    lab.multicast_group_reaches_the_other_namespaces();
    report(&format!(
        "netns: all scenarios passed in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
}

fn skip(reason: &str) {
    netns::skip(TEST_NAME, REQUIRED, reason);
}

// --- the lab: namespaces, bridge, addresses ------------------------------------------------------

struct Lab {
    hub: String,
    hosts: [String; 3],
    /// X of the private 10.250.X.0/24.
    subnet: u8,
}

impl Lab {
    fn new() -> Result<Lab, String> {
        let euid = effective_uid().ok_or("cannot read the effective uid")?;
        if euid != 0 {
            return Err(format!(
                "not root (euid {euid}); network namespaces need root"
            ));
        }
        run("nft", &["--version"])
            .map_err(|e| format!("nft unusable ({e}); install the Debian package nftables"))?;
        remove_stale_namespaces(PREFIX);
        let pid = std::process::id();
        // 1..=250: never .0/.255 subnets; unique enough between concurrent runs, which cannot
        // see each other's namespaces anyway.
        let subnet = (pid % 250 + 1) as u8;
        let name = |s: &str| format!("{PREFIX}-{pid}-{s}");
        let lab = Lab {
            hub: name("hub"),
            hosts: [name("n0"), name("n1"), name("n2")],
            subnet,
        };
        // `ip netns add` failing means no privilege (e.g. a container without CAP_SYS_ADMIN).
        run("ip", &["netns", "add", &lab.hub])
            .map_err(|e| format!("`ip netns add` failed: {e}"))?;
        // On failure `lab` is dropped here, which deletes whatever was created.
        lab.build()
            .map_err(|e| format!("setting up the namespaces failed: {e}"))?;
        report(&format!(
            "netns: hub {} with hosts {:?} on 10.250.{subnet}.0/24",
            lab.hub, lab.hosts
        ));
        Ok(lab)
    }

    fn build(&self) -> Result<(), String> {
        let hub = self.hub.as_str();
        ip(&[
            "-n",
            hub,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", hub, "link", "set", "br0", "up"])?;
        for (i, host) in self.hosts.iter().enumerate() {
            let port = format!("v{i}");
            ip(&["netns", "add", host])?;
            ip(&[
                "-n", hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                host,
            ])?;
            ip(&["-n", hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", hub, "link", "set", &port, "up"])?;
            let cidr = format!("{}/24", self.addr(i));
            ip(&["-n", host, "addr", "add", &cidr, "brd", "+", "dev", "eth0"])?;
            ip(&["-n", host, "link", "set", "eth0", "up"])?;
            ip(&["-n", host, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    fn addr(&self, host: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.subnet, host as u8 + 1)
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.subnet, 255)
    }

    /// Installs one input `rule` in table `inet beets` of host `i`'s namespace.
    fn nft(&self, i: usize, rule: &str) {
        let ruleset = format!(
            "table inet beets {{\n  chain in {{\n    type filter hook input priority 0; policy accept;\n    {rule}\n  }}\n}}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.hosts[i], "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nft");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ruleset.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft in {}: {}",
            self.hosts[i],
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The packet count of the nftables rule in host `i` that mentions `dport {port}`.
    fn nft_drops(&self, i: usize, port: u16) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.hosts[i],
                "nft",
                "list",
                "table",
                "inet",
                "beets",
            ])
            .output()
            .expect("nft list");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains(&format!("dport {port}")))
            .unwrap_or_else(|| panic!("no rule for port {port} in {text}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "packets").expect("counter");
        words[at + 1].parse().expect("packet count")
    }

    /// Runs one scenario: receivers in hosts 1 and 2, then the sender in host 0; returns the
    /// sender's and the receivers' result lines.
    fn scenario(&self, name: &str, receiver: &Env, sender: &Env) -> (Report, [Report; 2]) {
        let t0 = Instant::now();
        let mut receivers = [1, 2].map(|i| {
            let mut env = receiver.clone();
            env.set("NAME", &format!("n{i}"));
            env.set("SELF", &self.addr(i).to_string());
            Proc::spawn(&self.hosts[i], &env)
        });
        for r in &mut receivers {
            r.expect_line("READY", Duration::from_secs(10));
        }
        let mut s = sender.clone();
        s.set("NAME", "n0");
        s.set("SELF", &self.addr(0).to_string());
        s.set("EXPECT", "n1,n2");
        let mut sender = Proc::spawn(&self.hosts[0], &s);
        let sent = sender.result(Duration::from_secs(20));
        for r in &mut receivers {
            r.close_stdin();
        }
        let got = receivers.map(|mut r| r.result(Duration::from_secs(10)));
        report(&format!(
            "netns [{name}] {:.2} s\n  sender n0: {}\n  receiver n1: {}\n  receiver n2: {}",
            t0.elapsed().as_secs_f64(),
            sent.line,
            got[0].line,
            got[1].line
        ));
        (sent, got)
    }

    fn port_env(&self, port: u16) -> Env {
        let mut env = Env::default();
        env.set("BIND", &format!("0.0.0.0:{port}"));
        env.set("PORT", &port.to_string());
        env.set("BROADCAST", "none");
        env.set("MULTICAST", "none");
        env.set("PEERS", "");
        env.set("REPEAT", "0");
        env.set("COUNT", "20");
        env
    }

    /// (1) A subnet broadcast (10.250.X.255) from n0 reaches n1 and n2.
    fn broadcast_reaches_the_other_namespaces(&self) {
        let port = common::free_port();
        let mut env = self.port_env(port);
        env.set("BROADCAST", &format!("{}:{port}", self.broadcast()));
        env.set("TAG", "bcast");
        env.set("ROLE", "receiver");
        let mut sender = env.clone();
        sender.set("ROLE", "sender");
        let (s, r) = self.scenario("subnet broadcast", &env, &sender);
        s.assert_rd_from_subnet(self.subnet);
        for r in &r {
            r.assert_all_once(20);
            assert_eq!(r.get("duplicates"), 0, "{}", r.line);
        }
    }

    /// (2) Broadcast dropped at n1 and n2 by nftables (as on the paper's lossy WLAN side); the
    /// sender's peer list still delivers every OUT by unicast.
    fn unicast_peers_deliver_where_broadcast_is_dropped(&self) {
        let port = common::free_port();
        for i in [1, 2] {
            self.nft(
                i,
                &format!("udp dport {port} meta pkttype broadcast counter drop"),
            );
        }
        let mut env = self.port_env(port);
        env.set("BROADCAST", &format!("{}:{port}", self.broadcast()));
        env.set("TAG", "unicast");
        env.set("ROLE", "receiver");
        // Receivers answer n0 by unicast too (their broadcasts would reach n0, but be explicit).
        env.set("PEERS", &format!("{}:{port}", self.addr(0)));
        let mut sender = env.clone();
        sender.set("ROLE", "sender");
        sender.set(
            "PEERS",
            &format!("{}:{port},{}:{port}", self.addr(1), self.addr(2)),
        );
        let (s, r) = self.scenario("unicast peers, broadcast dropped", &env, &sender);
        s.assert_rd_from_subnet(self.subnet);
        for (i, r) in r.iter().enumerate() {
            r.assert_all_once(20);
            // Only the unicast copy arrived: the broadcast copy of each OUT was dropped.
            assert_eq!(r.get("duplicates"), 0, "{}", r.line);
            let dropped = self.nft_drops(i + 1, port);
            report(&format!(
                "  n{}: nftables dropped {dropped} broadcasts",
                i + 1
            ));
            assert!(dropped >= 20, "{dropped} broadcasts dropped at n{}", i + 1);
        }
        self.flush_nft();
    }

    /// (3) 30 % random loss on n1 and n2. Without copies about 70 of 100 OUTs arrive; with each
    /// datagram sent 3 more times ≥ 95 are stored, each once, the copies counted as duplicates.
    fn repetition_and_dedup_survive_30_percent_loss(&self) {
        let port = common::free_port();
        for i in [1, 2] {
            self.nft(
                i,
                &format!("udp dport {port} numgen random mod 100 < 30 counter drop"),
            );
        }
        let mut env = self.port_env(port);
        env.set("BROADCAST", &format!("{}:{port}", self.broadcast()));
        env.set("TAG", "loss");
        env.set("COUNT", "100");
        env.set("ROLE", "receiver");
        let mut sender = env.clone();
        sender.set("ROLE", "sender");
        // Control: without copies about 70 % arrive.
        let (_, r) = self.scenario("30 % loss, no repetition (control)", &env, &sender);
        for r in &r {
            let stored = r.get("count");
            assert!(
                stored < 95,
                "{stored} of 100 stored without repetition: is loss injected?"
            );
            assert_eq!(stored, r.get("distinct"), "{}", r.line);
        }
        sender.set("REPEAT", "3");
        let (s, r) = self.scenario("30 % loss, repeat 3", &env, &sender);
        // Every OUT went out 4 times (the copies of the last request may be cut short by close).
        assert!(s.get("repeats_sent") >= 300, "{}", s.line);
        for (i, r) in r.iter().enumerate() {
            let stored = r.get("count");
            assert!(
                stored >= 95,
                "only {stored} of 100 stored at n{}: {}",
                i + 1,
                r.line
            );
            assert_eq!(stored, r.get("distinct"), "{}", r.line);
            assert_eq!(stored, r.get("stored"), "{}", r.line);
            assert!(r.get("duplicates") > 0, "{}", r.line);
            let dropped = self.nft_drops(i + 1, port);
            report(&format!(
                "  n{}: nftables dropped {dropped} datagrams; {stored}/100 OUTs stored",
                i + 1
            ));
            assert!(dropped > 0);
        }
        self.flush_nft();
    }

    /// (4) The multicast group 239.255.75.75, joined on each host's eth0.
    fn multicast_group_reaches_the_other_namespaces(&self) {
        let port = common::free_port();
        let mut env = self.port_env(port);
        env.set("MULTICAST", &format!("{DEFAULT_MULTICAST_GROUP}:{port}"));
        env.set("TAG", "mcast");
        env.set("ROLE", "receiver");
        let mut sender = env.clone();
        sender.set("ROLE", "sender");
        let (s, r) = self.scenario("multicast 239.255.75.75", &env, &sender);
        s.assert_rd_from_subnet(self.subnet);
        for r in &r {
            r.assert_all_once(20);
        }
    }

    fn flush_nft(&self) {
        for i in [1, 2] {
            let _ = run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.hosts[i],
                    "nft",
                    "delete",
                    "table",
                    "inet",
                    "beets",
                ],
            );
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain([&self.hub]) {
            if !ns.is_empty() {
                let _ = run("ip", &["netns", "del", ns]);
            }
        }
    }
}

// --- child processes -----------------------------------------------------------------------------

/// `BEETS_NETNS_*` variables for a child.
#[derive(Clone, Default)]
struct Env(Vec<(String, String)>);

impl Env {
    fn set(&mut self, key: &str, value: &str) {
        let key = format!("BEETS_NETNS_{key}");
        self.0.retain(|(k, _)| *k != key);
        self.0.push((key, value.to_owned()));
    }
}

/// A child's `BEETS RESULT k=v …` line.
struct Report {
    line: String,
    fields: HashMap<String, String>,
}

impl Report {
    fn get(&self, key: &str) -> u64 {
        self.fields
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no number {key} in {}", self.line))
    }

    fn assert_all_once(&self, n: u64) {
        assert_eq!(self.get("count"), n, "{}", self.line);
        assert_eq!(self.get("distinct"), n, "{}", self.line);
        assert_eq!(self.get("stored"), n, "{}", self.line);
    }

    fn assert_rd_from_subnet(&self, subnet: u8) {
        let from: SocketAddr = self.fields["rd_from"]
            .parse()
            .unwrap_or_else(|_| panic!("rd not answered: {}", self.line));
        let ok = matches!(from.ip(), std::net::IpAddr::V4(a)
            if a.octets()[..3] == [10, 250, subnet] && a.octets()[3] != 1);
        assert!(ok, "rd answered from {from}");
    }
}

/// A child running in a namespace; killed when dropped.
struct Proc {
    host: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(host: &str, env: &Env) -> Proc {
        let exe = std::env::current_exe().expect("test binary path");
        let mut child = Command::new("ip")
            .args(["netns", "exec", host])
            .arg(exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .envs(env.0.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The harness's "test NAME ... " may precede the first report on its line.
                if let Some(at) = line.find(TAG)
                    && tx.send(line[at + TAG.len()..].to_owned()).is_err()
                {
                    break;
                }
            }
        });
        Proc {
            host: host.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    /// The next reported line starting with `prefix` (others are skipped).
    fn expect_line(&mut self, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("no {prefix} line from the node in {} ({e})", self.host),
            }
        }
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn result(&mut self, limit: Duration) -> Report {
        let line = self.expect_line("RESULT", limit);
        let status = self.wait(Duration::from_secs(5));
        assert!(
            status.is_some_and(|s| s.success()),
            "node in {} exited with {status:?}: {line}",
            self.host
        );
        let fields = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Report { line, fields }
    }

    fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
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

/// The node side, run inside a namespace by the re-executed test binary.
#[path = "netns/child.rs"]
mod child;
