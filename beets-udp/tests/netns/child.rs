//! The node side of `netns.rs`, run inside a namespace by the re-executed test binary.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use beets_core::{NodeConfig, Transport};
use beets_udp::{UdpConfig, UdpSpace};

use super::TAG;
use crate::common::{t, tpl};

fn var(key: &str) -> String {
    std::env::var(format!("BEETS_NETNS_{key}")).unwrap_or_default()
}

fn addr(s: &str) -> Option<SocketAddr> {
    (s != "none" && !s.is_empty()).then(|| s.parse().expect("socket address"))
}

fn config() -> UdpConfig {
    let me: Ipv4Addr = var("SELF").parse().expect("own address");
    UdpConfig {
        bind: var("BIND").parse().expect("bind address"),
        broadcast: addr(&var("BROADCAST")),
        multicast: addr(&var("MULTICAST")).map(|a| match a {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => panic!("IPv4 group"),
        }),
        multicast_interface: me,
        peers: var("PEERS")
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().expect("peer address"))
            .collect(),
        repeat: var("REPEAT").parse().expect("repeat"),
        repeat_interval: Duration::from_millis(2),
        ..UdpConfig::default()
    }
}

pub(super) fn run(role: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        let udp = config();
        assert!(
            udp.destinations()
                .all(|d| d.ip() != beets_udp::LIMITED_BROADCAST),
            "test node must not send to the limited broadcast"
        );
        let mut node = NodeConfig::new(Transport::Udp, &var("NAME")).unwrap();
        node.reply_backoff = Duration::from_millis(10);
        let space = UdpSpace::spawn_random(udp, node).expect("spawn node");
        match role {
            "receiver" => receiver(space).await,
            "sender" => sender(space).await,
            other => panic!("unknown role {other}"),
        }
    });
    println!("{TAG}RESULT {result}");
}

/// Serves until the parent closes stdin, then reports what was stored.
async fn receiver(space: UdpSpace) -> String {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        let _ = tx.send(());
    });
    println!("{TAG}READY {}", space.local_addr());
    let _ = rx.await;
    let tag = var("TAG");
    let mine: Vec<_> = space
        .handle()
        .host_tuples()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.get(0).and_then(|v| v.as_str()) == Some(tag.as_str()))
        .collect();
    let distinct: BTreeSet<String> = mine.iter().map(|t| format!("{t}")).collect();
    let (driver, udp) = space.close().await;
    let n = driver.node;
    format!(
        "count={} distinct={} stored={} duplicates={} messages_in={} frames_in={} \
         malformed={} received={} send_errors={}",
        mine.len(),
        distinct.len(),
        n.stored,
        n.duplicates,
        n.messages_in,
        n.frames_in,
        n.dropped_malformed,
        udp.datagrams_received,
        driver.send_errors
    )
}

/// Finds the receivers (WHERE, retried), sends COUNT OUTs, then reads one back.
async fn sender(space: UdpSpace) -> String {
    let h = space.handle();
    for name in var("EXPECT").split(',') {
        let mut found = None;
        for _ in 0..25 {
            let who = tpl(&format!("(\"NODE\", \"{name}\")"));
            if let Some((_, how)) = h.r#where(who, Duration::from_millis(200)).await.unwrap() {
                found = Some(how.from);
                break;
            }
        }
        match found {
            Some(from) => println!("{TAG}FOUND {name} at {from}"),
            None => return format!("error=unreachable:{name}"),
        }
    }
    let tag = var("TAG");
    let count: u32 = var("COUNT").parse().unwrap();
    for i in 0..count {
        h.out(t(&format!("(\"{tag}\", {i})")), None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // Let the last copies go out and be stored.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut rd_from = "none".to_owned();
    for _ in 0..5 {
        let template = tpl(&format!("(\"{tag}\", ?)"));
        if let Some((_, how)) = h.rd(template, Duration::from_millis(300)).await.unwrap() {
            rd_from = how.from.to_string();
            break;
        }
    }
    let (driver, udp) = space.close().await;
    format!(
        "rd_from={rd_from} outs={count} sent_datagrams={} repeats_sent={} send_errors={} \
         requests={}",
        udp.datagrams_sent, udp.repeats_sent, driver.send_errors, driver.node.requests_sent
    )
}
