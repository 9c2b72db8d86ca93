//! Helpers shared by the integration tests. Every test sends only to loopback (or, in
//! `netns.rs`, inside network namespaces it creates) and picks its own free port.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use beets_core::{NodeConfig, Template, Transport, Tuple};
use beets_udp::{LIMITED_BROADCAST, UdpConfig, UdpSpace};

/// A port no other socket on this host can be handed while the test process runs (never the
/// BeeTS default 49737): reserved with [`beets_udp::reserve_port`] and kept for the process, so
/// two tests (or test binaries) never share a port and hear each other.
pub fn free_port() -> u16 {
    static HELD: Mutex<Vec<beets_udp::PortReservation>> = Mutex::new(Vec::new());
    let r = beets_udp::reserve_port().expect("reserve a port");
    let port = r.port();
    HELD.lock().unwrap().push(r);
    port
}

/// A UDP node config with a short reply back-off, so tests run fast.
pub fn node(name: &str) -> NodeConfig {
    let mut cfg = NodeConfig::new(Transport::Udp, name).expect("short name");
    cfg.reply_backoff = Duration::from_millis(5);
    cfg
}

/// Asserts that a config sends nowhere but the loopback network (the traffic rule of the tests).
pub fn assert_loopback_only(udp: &UdpConfig) {
    for d in udp.destinations() {
        assert_ne!(d.ip(), std::net::IpAddr::V4(LIMITED_BROADCAST), "{d}");
        assert!(d.ip().is_loopback(), "test destination {d} is not loopback");
    }
}

/// A node on the loopback broadcast of `port`, checked to stay on this host.
pub fn spawn_loopback(port: u16, name: &str, seed: u64) -> UdpSpace {
    spawn_with(UdpConfig::loopback(port), name, seed)
}

/// A node on `udp`, checked to stay on this host.
pub fn spawn_with(udp: UdpConfig, name: &str, seed: u64) -> UdpSpace {
    assert_loopback_only(&udp);
    UdpSpace::spawn(udp, node(name), seed).expect("spawn UDP space")
}

/// 127.0.0.1:`port`.
pub fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

pub fn t(s: &str) -> Tuple {
    s.parse().expect("tuple literal")
}

pub fn tpl(s: &str) -> Template {
    s.parse().expect("template literal")
}

/// Polls `check` every 5 ms until it returns true; panics with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
