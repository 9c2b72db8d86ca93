//! Tuples per second node → node over loopback UDP, against a raw tokio send/recv loop of the
//! same datagrams in the same run (and raw loops whose receiver reads with `recvmmsg`, one
//! sending a datagram per call and one sending batches of 32 as GSO: the raw batched baseline),
//! the receive path alone (a raw socket sending node-format
//! OUTs to a node), and node → node in a sealed space (spec §12; goal ≥ 0.8× the plain one).
//! Loopback (127.0.0.1) only.
//!
//! Run: `cargo bench -p beets-udp --bench udp`. Both sides keep at most `WINDOW` datagrams in
//! flight (the receiver's count is the credit), so neither overruns the socket buffer: UDP has no
//! flow control and a lost datagram would stall the count.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use beets_core::node::SealConfig;
use beets_core::sealed::{MemoryCounterStore, SealKey};
use beets_core::udp::{self, DatagramHeader, NodeId};
use beets_core::{Message, NodeConfig, Transport, Tuple, Value};
use beets_udp::{UdpConfig, UdpSpace};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

/// Tuples per measured batch.
const BATCH: u64 = 1000;
/// Most datagrams sent but not yet counted by the receiver.
const WINDOW: u64 = 128;
/// A stall this long means a datagram was lost.
const STALL: Duration = Duration::from_secs(2);

fn tuple(i: u64) -> Tuple {
    Tuple::new([
        Value::Str("BENCH".into()),
        Value::Int16((i % 30_000) as i16),
    ])
    .unwrap()
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Receiver-side progress: a count and a wake-up for the sender.
#[derive(Default)]
struct Credit {
    received: AtomicU64,
    notify: Notify,
}

impl Credit {
    fn add(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// Waits until `received >= target`.
    async fn wait_for(&self, target: u64) {
        loop {
            let notified = self.notify.notified();
            if self.received.load(Ordering::Relaxed) >= target {
                return;
            }
            if tokio::time::timeout(STALL, notified).await.is_err() {
                panic!(
                    "stalled at {} of {target}: a datagram was lost",
                    self.received.load(Ordering::Relaxed)
                );
            }
        }
    }
}

/// Raw baseline: the node's OUT datagrams, sent with `send_to` and read with `recv_from`.
struct Raw {
    tx: UdpSocket,
    dest: SocketAddr,
    credit: Arc<Credit>,
    datagrams: Vec<Vec<u8>>,
    sent: u64,
    /// Sends batched as GSO (one `sendmsg` of up to `GSO` equal-size segments), through
    /// quinn-udp; `None`: one `send_to` per datagram.
    gso: Option<quinn_udp::UdpSocketState>,
}

/// Segments per GSO send in the raw batched baseline.
const GSO: usize = 32;

impl Raw {
    /// `batched`: the receiver reads with `recvmmsg` (quinn-udp, up to 32 per call) instead of
    /// one `recv_from` per datagram.
    async fn new(batched: bool, gso: bool) -> Raw {
        let rx = UdpSocket::bind(localhost(0)).await.unwrap();
        let dest = rx.local_addr().unwrap();
        let tx = UdpSocket::bind(localhost(0)).await.unwrap();
        let credit = Arc::new(Credit::default());
        let c = Arc::clone(&credit);
        if batched {
            tokio::spawn(async move {
                const LEN: usize = udp::MAX_DATAGRAM_LEN + 1;
                const N: usize = quinn_udp::BATCH_SIZE;
                let state = quinn_udp::UdpSocketState::new((&rx).into()).unwrap();
                // GRO off, as in the node (recv.rs): one datagram per buffer.
                #[cfg(target_os = "linux")]
                nix::sys::socket::setsockopt(&rx, nix::sys::socket::sockopt::UdpGroSegment, &false)
                    .unwrap();
                let mut bufs = vec![0u8; N * LEN];
                let mut meta = vec![quinn_udp::RecvMeta::default(); N];
                loop {
                    rx.readable().await.unwrap();
                    let mut iovs: Vec<std::io::IoSliceMut<'_>> = bufs
                        .chunks_exact_mut(LEN)
                        .map(std::io::IoSliceMut::new)
                        .collect();
                    let got = rx.try_io(tokio::io::Interest::READABLE, || {
                        state.recv((&rx).into(), &mut iovs, &mut meta)
                    });
                    drop(iovs);
                    if let Ok(n) = got {
                        for (i, m) in meta[..n].iter().enumerate() {
                            // With GRO (quinn-udp turns it on) one buffer may hold several
                            // datagrams, `stride` bytes apart.
                            let buf = &bufs[i * LEN..][..m.len];
                            for d in buf.chunks(m.stride.max(1)) {
                                std::hint::black_box(d);
                                c.add();
                            }
                        }
                    }
                }
            });
        } else {
            tokio::spawn(async move {
                let mut buf = vec![0u8; udp::MAX_DATAGRAM_LEN + 1];
                loop {
                    let (n, _) = rx.recv_from(&mut buf).await.unwrap();
                    std::hint::black_box(&buf[..n]);
                    c.add();
                }
            });
        }
        let node_id = NodeId::new(7).unwrap();
        let datagrams = (0..BATCH)
            .map(|i| {
                let msg = Message::Out {
                    tuple: tuple(i),
                    lifetime: None,
                };
                let header = DatagramHeader {
                    node_id,
                    seq: i as u32,
                };
                udp::encode(&header, &msg, None).unwrap()
            })
            .collect();
        let gso = gso.then(|| quinn_udp::UdpSocketState::new((&tx).into()).unwrap());
        Raw {
            tx,
            dest,
            credit,
            datagrams,
            sent: 0,
            gso,
        }
    }

    async fn batch(&mut self) {
        if let Some(state) = &self.gso {
            let mut buf = Vec::with_capacity(GSO * 64);
            for chunk in self.datagrams.chunks(GSO) {
                let n = chunk.len() as u64;
                self.credit
                    .wait_for((self.sent + n).saturating_sub(WINDOW))
                    .await;
                buf.clear();
                for d in chunk {
                    assert_eq!(d.len(), chunk[0].len(), "equal-size segments");
                    buf.extend_from_slice(d);
                }
                let transmit = quinn_udp::Transmit {
                    destination: self.dest,
                    ecn: None,
                    contents: &buf,
                    segment_size: (chunk.len() > 1).then_some(chunk[0].len()),
                    src_ip: None,
                };
                let tx = &self.tx;
                tx.async_io(tokio::io::Interest::WRITABLE, || {
                    state.try_send(tx.into(), &transmit)
                })
                .await
                .unwrap();
                self.sent += n;
            }
            self.credit.wait_for(self.sent).await;
            return;
        }
        for d in &self.datagrams {
            self.credit
                .wait_for((self.sent + 1).saturating_sub(WINDOW))
                .await;
            self.tx.send_to(d, self.dest).await.unwrap();
            self.sent += 1;
        }
        self.credit.wait_for(self.sent).await;
    }
}

/// Two spaces, unicast to each other; the receiver counts stored OUTs through a subscription.
struct Nodes {
    a: UdpSpace,
    _b: UdpSpace,
    credit: Arc<Credit>,
    sent: u64,
    /// A plain socket that sends node-format OUT datagrams to `b`: the receive path alone.
    raw: UdpSocket,
    raw_dest: SocketAddr,
}

/// A sealed space's config for `name` (spec §12), counters in memory (a bench, not a device).
fn sealed(name: &str, source: u16) -> NodeConfig {
    let key = SealKey::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
    let seal = SealConfig::new(
        key,
        std::num::NonZeroU16::new(source).unwrap(),
        MemoryCounterStore::default(),
    );
    NodeConfig::new(Transport::Udp, name)
        .unwrap()
        .with_seal(seal)
}

impl Nodes {
    async fn new(seal: bool) -> Nodes {
        let config = |name: &str, source| {
            if seal {
                sealed(name, source)
            } else {
                NodeConfig::new(Transport::Udp, name).unwrap()
            }
        };
        let probe = std::net::UdpSocket::bind(localhost(0)).unwrap();
        let pb = probe.local_addr().unwrap().port();
        drop(probe);
        let b_cfg = UdpConfig {
            bind: localhost(pb),
            broadcast: None,
            recv_buffer_size: Some(1 << 20),
            ..UdpConfig::default()
        };
        let b = UdpSpace::spawn(b_cfg, config("b", 2), 2).unwrap();
        let a_cfg = UdpConfig {
            bind: localhost(0),
            broadcast: None,
            peers: vec![localhost(pb)],
            ..UdpConfig::default()
        };
        let a = UdpSpace::spawn(a_cfg, config("a", 1), 1).unwrap();
        let mut sub = b
            .handle()
            .subscribe("(\"BENCH\", ?)".parse().unwrap(), 4096)
            .await
            .unwrap();
        let credit = Arc::new(Credit::default());
        let c = Arc::clone(&credit);
        tokio::spawn(async move {
            while sub.recv().await.is_some() {
                c.add();
            }
        });
        Nodes {
            a,
            _b: b,
            credit,
            sent: 0,
            raw: UdpSocket::bind(localhost(0)).await.unwrap(),
            raw_dest: localhost(pb),
        }
    }

    /// `BATCH` OUT datagrams from a raw socket (a fresh sequence number each, so none is a
    /// duplicate), counted as stored at `b`.
    async fn batch_from_raw(&mut self) {
        let node_id = NodeId::new(77).unwrap();
        for i in 0..BATCH {
            self.credit
                .wait_for((self.sent + 1).saturating_sub(WINDOW))
                .await;
            let msg = Message::Out {
                tuple: tuple(i),
                lifetime: None,
            };
            let header = DatagramHeader {
                node_id,
                seq: self.sent as u32,
            };
            let d = udp::encode(&header, &msg, None).unwrap();
            self.raw.send_to(&d, self.raw_dest).await.unwrap();
            self.sent += 1;
        }
        self.credit.wait_for(self.sent).await;
    }

    async fn batch(&mut self) {
        for i in 0..BATCH {
            self.credit
                .wait_for((self.sent + 1).saturating_sub(WINDOW))
                .await;
            self.a.handle().out(tuple(i), None).await.unwrap();
            self.sent += 1;
        }
        self.credit.wait_for(self.sent).await;
    }
}

fn runtime(multi_thread: bool) -> tokio::runtime::Runtime {
    let mut builder = if multi_thread {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().unwrap()
}

fn bench(c: &mut Criterion) {
    for (name, multi_thread) in [("current_thread", false), ("multi_thread_2", true)] {
        let rt = runtime(multi_thread);
        let mut group = c.benchmark_group(format!("udp_loopback_{name}"));
        group.throughput(Throughput::Elements(BATCH));
        group.sample_size(20);
        group.measurement_time(Duration::from_secs(5));

        let mut raws = Vec::new();
        for (bench, batched, gso) in [
            ("raw_tokio_send_recv", false, false),
            ("raw_send_recvmmsg", true, false),
            ("raw_gso_send_recvmmsg", true, true),
        ] {
            raws.push((bench, rt.block_on(Raw::new(batched, gso))));
            let raw = &mut raws.last_mut().expect("just pushed").1;
            group.bench_function(bench, |bch| {
                bch.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            raw.batch().await;
                        }
                        start.elapsed()
                    })
                })
            });
        }

        let mut nodes = rt.block_on(Nodes::new(false));
        group.bench_function("node_to_node_out", |bch| {
            bch.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        nodes.batch().await;
                    }
                    start.elapsed()
                })
            })
        });
        group.bench_function("raw_to_node_receive_path", |bch| {
            bch.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        nodes.batch_from_raw().await;
                    }
                    start.elapsed()
                })
            })
        });
        // Sealed spaces (spec §12): every OUT sealed by a and opened (MIC, replay window) by b.
        let mut sealed_nodes = rt.block_on(Nodes::new(true));
        group.bench_function("sealed_node_to_node_out", |bch| {
            bch.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        sealed_nodes.batch().await;
                    }
                    start.elapsed()
                })
            })
        });
        group.finish();
        alternated(&rt, name, &mut raws, &mut nodes);
    }
}

/// Batches of the raw baselines and of node → node alternated, `ROUNDS` times, so all see the
/// same machine load; prints the median and best tuples/s of each and the node's ratios
/// (`UDP-RATIO …`).
fn alternated(
    rt: &tokio::runtime::Runtime,
    name: &str,
    raws: &mut [(&str, Raw)],
    nodes: &mut Nodes,
) {
    const ROUNDS: usize = 40;
    let per_s = |d: Duration| BATCH as f64 / d.as_secs_f64();
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(ROUNDS); raws.len() + 1];
    rt.block_on(async {
        for _ in 0..ROUNDS {
            for (i, (_, raw)) in raws.iter_mut().enumerate() {
                let t = Instant::now();
                raw.batch().await;
                times[i].push(t.elapsed());
            }
            let t = Instant::now();
            nodes.batch().await;
            times[raws.len()].push(t.elapsed());
        }
    });
    for t in &mut times {
        t.sort();
    }
    let median = |t: &[Duration]| per_s(t[t.len() / 2]);
    let best = |t: &[Duration]| per_s(t[0]);
    let node = &times[raws.len()];
    let mut line = format!(
        "UDP-RATIO {name}: node_to_node median {:.0} best {:.0} tuples/s",
        median(node),
        best(node)
    );
    for (i, (label, _)) in raws.iter().enumerate() {
        line += &format!(
            "; {label} median {:.0} best {:.0} (node/raw median {:.2}, best {:.2})",
            median(&times[i]),
            best(&times[i]),
            median(node) / median(&times[i]),
            best(node) / best(&times[i])
        );
    }
    println!("{line}");
}

/// Two UDP nodes on loopback, unicast to each other; `holder` stores `("RTT", 1)`, `asker`
/// reads it back. `read_backoff`: the holder's bound for RD/TEST answers (spec §9).
async fn rtt_pair(read_backoff: Duration) -> (UdpSpace, UdpSpace) {
    let probe = std::net::UdpSocket::bind(localhost(0)).unwrap();
    let p_holder = probe.local_addr().unwrap().port();
    let probe2 = std::net::UdpSocket::bind(localhost(0)).unwrap();
    let p_asker = probe2.local_addr().unwrap().port();
    drop((probe, probe2));
    let cfg = |port: u16, peer: u16| UdpConfig {
        bind: localhost(port),
        broadcast: None,
        peers: vec![localhost(peer)],
        ..UdpConfig::default()
    };
    let mut holder_cfg = NodeConfig::new(Transport::Udp, "holder").unwrap();
    holder_cfg.read_backoff = read_backoff;
    let holder = UdpSpace::spawn(cfg(p_holder, p_asker), holder_cfg, 11).unwrap();
    let asker = UdpSpace::spawn(
        cfg(p_asker, p_holder),
        NodeConfig::new(Transport::Udp, "asker").unwrap(),
        12,
    )
    .unwrap();
    holder
        .handle()
        .host_out("(\"RTT\", 1)".parse().unwrap(), None)
        .await
        .unwrap();
    (holder, asker)
}

/// The `rd` / `test` round trip between two nodes when one holds the match: the default policy
/// (RD/TEST answered after `1..=read_backoff` = 1 ms) beside the full 30 ms bound every op used
/// before (`read_backoff` = `reply_backoff`), in the same run.
fn round_trip(c: &mut Criterion) {
    let rt = runtime(false);
    let mut group = c.benchmark_group("udp_rd_round_trip");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(6));
    for (name, backoff) in [
        ("read_backoff_1ms", Duration::from_millis(1)),
        ("full_backoff_30ms", Duration::from_millis(30)),
    ] {
        let (holder, asker) = rt.block_on(rtt_pair(backoff));
        let template: beets_core::Template = "(\"RTT\", ?int16)".parse().unwrap();
        for op in ["rd", "test"] {
            group.bench_function(format!("{op}/{name}"), |bch| {
                bch.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let t = template.clone();
                            let got = if op == "rd" {
                                asker.handle().rd(t, Duration::from_secs(1)).await
                            } else {
                                asker.handle().test(t, Duration::from_secs(1)).await
                            };
                            assert!(got.unwrap().is_some(), "answered");
                        }
                        start.elapsed()
                    })
                })
            });
        }
        rt.block_on(async {
            asker.close().await;
            holder.close().await;
        });
    }
    group.finish();
}

criterion_group!(benches, bench, round_trip);
criterion_main!(benches);
