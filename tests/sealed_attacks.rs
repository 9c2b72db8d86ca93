//! Attacks on a sealed space between real `beets node` processes on UDP loopback (spec §12): a
//! stranger on the same port captures, replays and forges datagrams, and tries to take tuples
//! without the key; a sender is killed with SIGKILL and restarted. Everything a key holder sent
//! arrives once, nothing the stranger sent takes effect, and each drop is counted by reason.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::{NodeProcess, free_port, number_after};
use socket2::{Domain, Protocol, Socket, Type};

const KEY: &str = "000102030405060708090a0b0c0d0e0f";

fn sealed_node(
    name: &str,
    port: u16,
    source: u16,
    dir: &std::path::Path,
    extra: &[&str],
) -> NodeProcess {
    let port = port.to_string();
    let source = source.to_string();
    let dir = dir.to_str().expect("utf-8 temp dir");
    let mut args = vec![
        "--udp",
        "--name",
        name,
        "--port",
        &port,
        "--broadcast",
        "127.255.255.255",
        "--seal-key",
        KEY,
        "--source-id",
        &source,
        "--state-dir",
        dir,
    ];
    args.extend_from_slice(extra);
    let mut n = NodeProcess::start(&args);
    n.wait_for(&format!("node {name} running"));
    n
}

/// The stranger's socket: bound to the nodes' port (with the same reuse options), so it hears
/// their broadcasts, and able to broadcast on loopback.
fn stranger(port: u16) -> UdpSocket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_reuse_port(true).unwrap();
    s.set_broadcast(true).unwrap();
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.into()
}

/// The next sealed OUT datagram `from` sends (spec §7 header with its node id, then control
/// byte 0x88: VER 10, OUT). Matching the node id skips the forgeries and the other nodes'
/// datagrams, and the sender is killed only after its OUT really left (a space sends its
/// batched datagrams at its next await, after `beets node` printed "running").
fn capture_sealed_out(sock: &UdpSocket, from: &NodeProcess) -> Vec<u8> {
    let id = node_id(from);
    let mut buf = [0u8; 1500];
    loop {
        let (n, _) = sock.recv_from(&mut buf).expect("a sealed OUT within 10 s");
        if n > 11 && buf[..2] == [0xbe, 0x75] && buf[3..7] == id && buf[11] == 0x88 {
            return buf[..n].to_vec();
        }
    }
}

/// The node id `beets node` printed (`udp-ts: node id 1d5efe4e`), as on the wire.
fn node_id(p: &NodeProcess) -> [u8; 4] {
    let at = p.seen.find("node id ").expect("the node printed its id") + "node id ".len();
    u32::from_str_radix(&p.seen[at..at + 8], 16)
        .expect("8 hex digits")
        .to_be_bytes()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("beets-attack-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn a_stranger_can_neither_replay_nor_forge_nor_take_and_a_killed_sender_reuses_no_counter() {
    let port = free_port();
    let to = SocketAddr::from(([127, 255, 255, 255], port));
    let (dir_a, dir_b, dir_c) = (temp_dir("a"), temp_dir("b"), temp_dir("c"));
    let evil = stranger(port);

    let b = sealed_node("b", port, 2, &dir_b, &[]);
    let rss_before = b.rss_kib();

    // A stores and broadcasts ("JOB", 1); the stranger captures it.
    let a = sealed_node("a", port, 1, &dir_a, &["--out", r#"("JOB", 1)"#]);
    let captured = capture_sealed_out(&evil, &a);
    a.kill();

    // Replays: the same bytes, and under a new envelope (node id and seq), which the §8
    // duplicate cache alone would have taken for a new message.
    evil.send_to(&captured, to).unwrap();
    let mut renamed = captured.clone();
    renamed[3..7].copy_from_slice(&0x0bad_cafe_u32.to_be_bytes());
    renamed[7..11].copy_from_slice(&1u32.to_be_bytes());
    evil.send_to(&renamed, to).unwrap();

    // 100 000 forgeries: valid envelopes, sealed OUT control bytes, random sealed bodies.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut forged = vec![0u8; 11 + 31];
    forged[..3].copy_from_slice(&[0xbe, 0x75, 0x01]);
    for i in 0..100_000u32 {
        forged[3..7].copy_from_slice(&(0x7000_0000 | i).to_be_bytes());
        forged[7..11].copy_from_slice(&i.to_be_bytes());
        forged[11] = 0x88;
        for byte in &mut forged[12..] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = x as u8;
        }
        let _ = evil.send_to(&forged, to);
    }
    // The stranger hears its own flood: empty its queue (loopback delivers within `send_to`), or
    // the sender's next OUTs would find it full and never reach `capture_sealed_out`.
    evil.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1500];
    while evil.recv_from(&mut buf).is_ok() {}
    evil.set_nonblocking(false).unwrap();

    // A node without the key tries to take the tuple for a while.
    let port_s = port.to_string();
    let root = env!("CARGO_MANIFEST_DIR");
    let mut taker = NodeProcess::start(&[
        "--udp",
        "--name",
        "x",
        "--port",
        &port_s,
        "--broadcast",
        "127.255.255.255",
        "--agent",
        &format!("{root}/tests/agents/job_taker.js"),
    ]);
    taker.wait_for("node x running");

    // The sender comes back after its SIGKILL (nothing saved at exit) and sends again, and again
    // after a second SIGKILL.
    for n in [2, 3] {
        let tuple = format!(r#"("JOB", {n})"#);
        let a = sealed_node("a", port, 1, &dir_a, &["--out", &tuple]);
        capture_sealed_out(&evil, &a);
        a.kill();
    }

    // A key holder still reads from b, after all that.
    let mut c = sealed_node(
        "c",
        port,
        3,
        &dir_c,
        &["--agent", &format!("{root}/tests/agents/job_reader.js")],
    );
    c.wait_for("agent job_reader: GOT [\"JOB\"");
    let taker_out = taker.stop();
    assert!(
        !taker_out.contains("TOOK"),
        "a node without the key took a tuple:\n{taker_out}"
    );
    let _ = c.stop();

    let rss_after = b.rss_kib();
    let out = b.stop();
    // Three tuples from the key holder, once each; nothing else.
    assert_eq!(number_after(&out, "stored "), 3, "{out}");
    assert_eq!(
        number_after(&out, "duplicate "),
        2,
        "the two replays:\n{out}"
    );
    assert_eq!(
        number_after(&out, "replay "),
        0,
        "no counter reused after SIGKILL:\n{out}"
    );
    let bad_mic = number_after(&out, "bad MIC ");
    assert!(
        bad_mic > 0,
        "the forgeries that reached b are counted:\n{out}"
    );
    assert!(
        number_after(&out, "not sealed ") > 0,
        "the stranger node's INPs:\n{out}"
    );
    // Memory stays bounded: forged traffic creates no state (windows only after a valid MIC).
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    for d in [dir_a, dir_b, dir_c] {
        let _ = std::fs::remove_dir_all(d);
    }
}
