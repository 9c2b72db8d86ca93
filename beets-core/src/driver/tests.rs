//! Driver tests on in-memory buses and scripted sources and sinks.

use super::*;
use std::future::Future;
use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::Frame;
use crate::message::Message;
use crate::node::{Node, PeerAddr, Transmit};
use crate::node::{NodeConfig, Transport};
use crate::text::{parse_template, parse_tuple};
use crate::time::Time;
use crate::tuple::Tuple;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// An in-memory broadcast bus: every frame a sink sends reaches every other member.
type Members = Vec<(usize, mpsc::Sender<ReceivedFrame>)>;

#[derive(Clone, Default)]
struct Bus(Arc<Mutex<Members>>);

struct BusSink {
    bus: Bus,
    me: usize,
}

impl FrameSink for BusSink {
    async fn send(&mut self, tx: Transmit) -> Result<(), SendError> {
        let Transmit::Datagram(d) = tx else {
            return Err(io::Error::other("UDP bus").into());
        };
        let members = self.bus.0.lock().unwrap().clone();
        for (i, m) in members {
            if i != self.me {
                let from = PeerAddr::Ip(SocketAddr::from(([127, 0, 0, self.me as u8], 1)));
                let frame = OwnedFrame::Datagram(d.clone());
                let _ = m
                    .send(ReceivedFrame {
                        from,
                        frame,
                        rssi: None,
                    })
                    .await;
            }
        }
        Ok(())
    }
}

fn join(bus: &Bus, me: usize, name: &str) -> (SpaceHandle, tokio::task::JoinHandle<DriverStats>) {
    let (tx, rx) = mpsc::channel(64);
    bus.0.lock().unwrap().push((me, tx));
    let mut cfg = NodeConfig::new(Transport::Udp, name).unwrap();
    cfg.reply_backoff = Duration::from_millis(5);
    let node = Node::new(cfg, me as u64 + 1, Time::ZERO);
    spawn(
        name.into(),
        node,
        BusSink {
            bus: bus.clone(),
            me,
        },
        rx,
    )
}

/// Waits until `check` holds, polling; panics after 10 s (a deadline, not a guessed delay).
async fn eventually<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "condition not met within 10 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Dropping a request's future cancels it in the engine; a reply that still arrives (here an
/// INP's tuple, which the responder has removed) is counted and reported, not lost silently.
#[tokio::test]
async fn a_dropped_request_is_cancelled_and_its_late_reply_counted() {
    struct Capture(mpsc::UnboundedSender<Vec<u8>>);
    impl FrameSink for Capture {
        async fn send(&mut self, tx: Transmit) -> Result<(), SendError> {
            let Transmit::Datagram(d) = tx else {
                return Err(io::Error::other("UDP only").into());
            };
            let _ = self.0.send(d);
            Ok(())
        }
    }
    let (wire_tx, mut wire) = mpsc::unbounded_channel();
    let (frames, rx) = mpsc::channel(4);
    let node = Node::new(NodeConfig::new(Transport::Udp, "a").unwrap(), 1, Time::ZERO);
    let (a, _) = spawn("a".into(), node, Capture(wire_tx), rx);
    let a2 = a.clone();
    let request = tokio::spawn(async move {
        a2.inp(
            parse_template("(\"T\", ?)").unwrap(),
            Duration::from_secs(60),
        )
        .await
    });
    // The INP is on the wire; then the caller gives up (the future is dropped).
    let sent = wire.recv().await.unwrap();
    let (_, body) = crate::udp::parse_header(&sent).unwrap();
    assert!(matches!(
        Message::parse(body, None).unwrap().message,
        Message::Waiting {
            op: crate::message::RequestOp::Inp,
            ..
        }
    ));
    request.abort();
    assert!(request.await.unwrap_err().is_cancelled());
    // The reply of a responder that removed its tuple arrives late.
    let reply = Message::Tuple {
        tuple: parse_tuple("(\"T\", 7)").unwrap(),
        reply: true,
    };
    let header = crate::udp::DatagramHeader {
        node_id: crate::udp::NodeId::new(9).unwrap(),
        seq: 1,
    };
    let datagram = crate::udp::encode(&header, &reply, None).unwrap();
    frames
        .send(ReceivedFrame {
            from: PeerAddr::Ip(SocketAddr::from(([127, 0, 0, 9], 1))),
            frame: OwnedFrame::Datagram(datagram),
            rssi: None,
        })
        .await
        .unwrap();
    eventually(|| async { a.stats().await.unwrap().node.messages_in == 1 }).await;
    let stats = a.stats().await.unwrap().node;
    assert_eq!(stats.replies_after_cancel, 1);
    assert_eq!(stats.replies_matched, 0);
    assert_eq!(stats.replies_unmatched, 0);
}

#[tokio::test]
async fn out_rd_inp_over_a_memory_bus() {
    let bus = Bus::default();
    let (a, _) = join(&bus, 1, "a");
    let (b, _) = join(&bus, 2, "b");
    let mut sub = b
        .subscribe(parse_template("(\"T\", ?)").unwrap(), 4)
        .await
        .unwrap();
    a.out(parse_tuple("(\"T\", 1)").unwrap(), None)
        .await
        .unwrap();
    let d = sub.recv().await.unwrap();
    assert_eq!(d.tuple, parse_tuple("(\"T\", 1)").unwrap());
    assert_eq!(d.kind, crate::DeliveryKind::Out);
    assert!(matches!(d.from, Some(PeerAddr::Ip(_))));
    let (tuple, rx) = a
        .rd(
            parse_template("(\"T\", ?int16)").unwrap(),
            Duration::from_secs(2),
        )
        .await
        .unwrap()
        .expect("b answers");
    assert_eq!(tuple, parse_tuple("(\"T\", 1)").unwrap());
    assert!(matches!(rx.from, PeerAddr::Ip(_)));
    assert!(
        a.inp(
            parse_template("(\"T\", ?)").unwrap(),
            Duration::from_secs(2)
        )
        .await
        .unwrap()
        .is_some()
    );
    assert_eq!(
        b.host_count(parse_template("(?, ?)").unwrap())
            .await
            .unwrap(),
        0
    );
    let none = a
        .rd(
            parse_template("(\"T\", ?)").unwrap(),
            Duration::from_millis(100),
        )
        .await
        .unwrap();
    assert_eq!(none, None);
    let stats = b.stats().await.unwrap();
    assert_eq!(stats.node.stored, 1);
    assert_eq!(stats.node.replies_sent, 2);
}

#[tokio::test]
async fn pending_request_completes_with_closed_when_space_closes() {
    let bus = Bus::default();
    let (a, task) = join(&bus, 1, "a");
    let a2 = a.clone();
    let pending = tokio::spawn(async move {
        a2.rd(parse_template("(?)").unwrap(), Duration::from_secs(60))
            .await
    });
    // Close only once the request is out (not after a guessed delay).
    eventually(|| async { a.stats().await.unwrap().node.requests_sent == 1 }).await;
    a.close().await;
    assert_eq!(pending.await.unwrap(), Err(ClientError::Closed));
    assert_eq!(task.await.unwrap().node.requests_sent, 1);
    assert_eq!(a.stats().await, Err(ClientError::Closed));
    assert_eq!(
        a.out(parse_tuple("(1)").unwrap(), None)
            .await
            .unwrap_err()
            .to_string(),
        "space closed"
    );
}

#[tokio::test]
async fn send_errors_are_counted_and_node_keeps_running() {
    struct Failing;
    impl FrameSink for Failing {
        async fn send(&mut self, _: Transmit) -> Result<(), SendError> {
            Err(io::Error::other("network down").into())
        }
    }
    let (_tx, rx) = mpsc::channel(1);
    let node = Node::new(NodeConfig::new(Transport::Udp, "x").unwrap(), 1, Time::ZERO);
    let (h, _) = spawn("x".into(), node, Failing, rx);
    h.out(parse_tuple("(1)").unwrap(), None).await.unwrap();
    h.host_out(parse_tuple("(2)").unwrap(), None).await.unwrap();
    assert_eq!(
        h.host_tuples().await.unwrap(),
        vec![parse_tuple("(2)").unwrap()]
    );
    assert_eq!(h.stats().await.unwrap().send_errors, 1);
}

#[tokio::test]
async fn a_source_read_by_the_driver_feeds_the_engine_and_may_end() {
    // A source the driver reads itself: three OUT datagrams of another node, then one
    // spurious wake-up with nothing to read, then the end. The node stores all three and
    // keeps sending after its source is gone.
    use std::sync::atomic::AtomicBool;
    struct Scripted {
        datagrams: Vec<Vec<u8>>,
        spurious_done: bool,
        ended: Arc<AtomicBool>,
    }
    impl FrameSource for Scripted {
        async fn ready(&mut self) -> bool {
            if !self.datagrams.is_empty() {
                return true;
            }
            tokio::task::yield_now().await;
            if !self.spurious_done {
                self.spurious_done = true;
                return true;
            }
            self.ended.store(true, Ordering::SeqCst);
            false
        }
        fn try_recv<F>(&mut self, deliver: F) -> bool
        where
            F: FnOnce(PeerAddr, Frame<'_>, Option<i16>),
        {
            if self.datagrams.is_empty() {
                return false;
            }
            let d = self.datagrams.remove(0);
            let from = PeerAddr::Ip(SocketAddr::from(([127, 0, 0, 9], 1)));
            deliver(from, Frame::Datagram(&d), None);
            true
        }
    }
    struct Counting(Arc<Mutex<usize>>);
    impl FrameSink for Counting {
        async fn send(&mut self, _: Transmit) -> Result<(), SendError> {
            *self.0.lock().unwrap() += 1;
            Ok(())
        }
    }
    let sender = crate::udp::NodeId::new(9).unwrap();
    let datagrams = (1..=3)
        .map(|i| {
            let msg = Message::Out {
                tuple: parse_tuple(&format!("(\"T\", {i})")).unwrap(),
                lifetime: None,
            };
            let header = crate::udp::DatagramHeader {
                node_id: sender,
                seq: i,
            };
            crate::udp::encode(&header, &msg, None).unwrap()
        })
        .collect();
    let sent = Arc::new(Mutex::new(0));
    let node = Node::new(NodeConfig::new(Transport::Udp, "x").unwrap(), 1, Time::ZERO);
    let ended = Arc::new(AtomicBool::new(false));
    let source = Scripted {
        datagrams,
        spurious_done: false,
        ended: Arc::clone(&ended),
    };
    let (h, task) = spawn_with_source("x".into(), node, Counting(Arc::clone(&sent)), source);
    eventually(|| async { h.host_tuples().await.unwrap().len() == 3 }).await;
    // The source was asked until it ended.
    eventually(|| async { ended.load(Ordering::SeqCst) }).await;
    // The source has ended; the node still sends.
    let before = *sent.lock().unwrap();
    h.out(parse_tuple("(1)").unwrap(), None).await.unwrap();
    let stats = h.stats().await.unwrap();
    assert_eq!(*sent.lock().unwrap(), before + 1);
    assert_eq!(stats.node.frames_in, 3);
    h.close().await;
    task.await.unwrap();
}

#[tokio::test]
async fn out_is_sent_by_the_handle_and_falls_back_to_the_driver_when_it_would_block() {
    use std::sync::atomic::AtomicU8;
    // 0: the direct send works; 1: it would block; 2: it fails.
    #[derive(Default)]
    struct Wire {
        mode: AtomicU8,
        direct: Mutex<Vec<Vec<u8>>>,
        driver: Mutex<Vec<Vec<u8>>>,
    }
    struct Direct(Arc<Wire>);
    impl DirectSend for Direct {
        fn try_send_now(&self, datagram: &[u8]) -> Option<io::Result<()>> {
            match self.0.mode.load(Ordering::Relaxed) {
                0 => {
                    self.0.direct.lock().unwrap().push(datagram.to_vec());
                    Some(Ok(()))
                }
                1 => None,
                _ => Some(Err(io::Error::other("network down"))),
            }
        }
    }
    struct Sink(Arc<Wire>);
    impl FrameSink for Sink {
        async fn send(&mut self, tx: Transmit) -> Result<(), SendError> {
            let Transmit::Datagram(d) = tx else {
                return Err(io::Error::other("UDP only").into());
            };
            self.0.driver.lock().unwrap().push(d);
            Ok(())
        }
        fn direct(&self) -> Option<Arc<dyn DirectSend>> {
            Some(Arc::new(Direct(Arc::clone(&self.0))))
        }
    }
    let wire = Arc::new(Wire::default());
    let node = Node::new(NodeConfig::new(Transport::Udp, "x").unwrap(), 3, Time::ZERO);
    let id = node.node_id();
    let (_frames, rx) = mpsc::channel(1);
    let (h, task) = spawn("x".into(), node, Sink(Arc::clone(&wire)), rx);
    let header = |d: &[u8]| crate::udp::parse_header(d).unwrap().0;

    h.out(parse_tuple("(1)").unwrap(), None).await.unwrap();
    let sent = wire.direct.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "sent from the caller's task, at once");
    assert_eq!(header(&sent[0]).node_id, id);

    wire.mode.store(1, Ordering::Relaxed);
    h.out(parse_tuple("(2)").unwrap(), None).await.unwrap();
    eventually(|| async { !wire.driver.lock().unwrap().is_empty() }).await;
    let queued = wire.driver.lock().unwrap().clone();
    assert_eq!(queued.len(), 1, "the driver sent what would have blocked");
    // One counter for both paths: consecutive sequence numbers, the same node.
    assert_eq!(header(&queued[0]).node_id, id);
    assert_eq!(header(&queued[0]).seq, header(&sent[0]).seq.wrapping_add(1));
    let (_, body) = crate::udp::parse_header(&queued[0]).unwrap();
    let out = Message::parse(body, None).unwrap().message;
    assert_eq!(out.tuple(), Some(&parse_tuple("(2)").unwrap()));

    wire.mode.store(2, Ordering::Relaxed);
    h.out(parse_tuple("(3)").unwrap(), None).await.unwrap();
    let stats = h.stats().await.unwrap();
    assert_eq!(stats.send_errors, 1, "a failed direct send is counted");
    assert_eq!(stats.node.transmits, 3);
    assert_eq!(wire.direct.lock().unwrap().len(), 1);
    assert_eq!(wire.driver.lock().unwrap().len(), 1);

    h.close().await;
    task.await.unwrap();
    wire.mode.store(0, Ordering::Relaxed);
    let late = h.out(parse_tuple("(4)").unwrap(), None).await;
    assert_eq!(late, Err(ClientError::Closed));
    assert_eq!(
        wire.direct.lock().unwrap().len(),
        1,
        "nothing sent after close"
    );
}

#[tokio::test]
async fn a_frame_the_backend_refuses_is_reported_to_its_caller() {
    use crate::ble::scheduler::SchedulerError;
    let full = || SchedulerError::QueueFull {
        capacity: 2,
        instances: 1,
        delta_t: Duration::from_millis(500),
    };
    struct Refusing(SchedulerError);
    impl FrameSink for Refusing {
        async fn send(&mut self, _: Transmit) -> Result<(), SendError> {
            Err(SendError::Refused(self.0.clone().into()))
        }
    }
    let (_tx, rx) = mpsc::channel(1);
    let node = Node::new(NodeConfig::new(Transport::Ble, "x").unwrap(), 1, Time::ZERO);
    let (h, _) = spawn("x".into(), node, Refusing(full()), rx);
    let refused = ClientError::Refused(Refusal::Ble(full()));
    assert_eq!(
        h.out(parse_tuple("(1)").unwrap(), None).await,
        Err(refused.clone())
    );
    assert_eq!(h.notify(parse_tuple("(2)").unwrap()).await, Err(refused));
    let text = h
        .out(parse_tuple("(3)").unwrap(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.starts_with("not sent: BLE sender queue is full (2 frames"),
        "{text}"
    );
    // The node keeps serving.
    h.host_out(parse_tuple("(4)").unwrap(), None).await.unwrap();
    assert_eq!(h.stats().await.unwrap().send_errors, 3);
}

#[tokio::test]
async fn oversize_out_is_refused_with_the_limit() {
    let bus = Bus::default();
    let (a, _) = join(&bus, 1, "a");
    let big = Tuple::new([crate::Value::Bytes(vec![0; 1300])]).unwrap();
    let err = a.out(big, None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "OUT message needs 1304 bytes, a UDP datagram carries at most 1221"
    );
}

// --- Requests with a scope, leases and removal listeners through the driver (issue 13) ---

fn tpl(s: &str) -> crate::tuple::Template {
    parse_template(s).unwrap()
}

fn tup(s: &str) -> Tuple {
    parse_tuple(s).unwrap()
}

/// `rd_in(Local)` is answered at once from the local space, or woken by a later local store;
/// `inp_in(Local)` takes atomically; without a match it is `None` at the timeout. Nothing goes on
/// the air.
#[tokio::test]
async fn rd_in_local_is_answered_now_or_woken_by_a_later_store() {
    use crate::node::Scope;
    let bus = Bus::default();
    let (a, _) = join(&bus, 1, "a");
    a.host_out(tup("(\"T\", 1)"), None).await.unwrap();
    let now = a
        .rd_in(tpl("(\"T\", ?)"), Duration::from_secs(5), Scope::Local)
        .await
        .unwrap()
        .expect("held locally");
    assert_eq!(now.tuple, tup("(\"T\", 1)"));
    assert!(now.is_local());

    // Two waiting readers and one waiting taker of ("W", ?); one store wakes all three, the
    // taker takes it and the space is empty afterwards.
    let spawn_in = |op: u8| {
        let a = a.clone();
        tokio::spawn(async move {
            let t = tpl("(\"W\", ?)");
            let d = Duration::from_secs(30);
            match op {
                0 => a.rd_in(t, d, Scope::Local).await,
                _ => a.inp_in(t, d, Scope::Local).await,
            }
        })
    };
    let r1 = spawn_in(0);
    let r2 = spawn_in(0);
    let taker = spawn_in(1);
    eventually(|| async { a.stats().await.unwrap().pending_requests == 3 }).await;
    a.host_out(tup("(\"W\", 9)"), None).await.unwrap();
    for r in [r1, r2, taker] {
        let got = r.await.unwrap().unwrap().expect("woken");
        assert_eq!(got.tuple, tup("(\"W\", 9)"));
        assert!(got.is_local());
    }
    assert_eq!(a.host_count(tpl("(\"W\", ?)")).await.unwrap(), 0);

    let none = a
        .inp_in(tpl("(\"X\", ?)"), Duration::from_millis(50), Scope::Local)
        .await
        .unwrap();
    assert_eq!(none, None);
    let stats = a.stats().await.unwrap().node;
    assert_eq!(stats.requests_sent, 0, "local requests stay off the air");
    assert_eq!(stats.local_answers, 4);
}

/// `rd_in(Network)` never looks at the local space; its wait (spec §11) keeps it pending at the
/// other node, which answers when the tuple is stored there later.
#[tokio::test]
async fn rd_in_network_waits_at_the_holder_and_ignores_the_local_space() {
    use crate::node::Scope;
    let bus = Bus::default();
    let (a, _) = join(&bus, 1, "a");
    let (b, _) = join(&bus, 2, "b");
    a.host_out(tup("(\"T\", 1)"), None).await.unwrap();
    let a2 = a.clone();
    let pending = tokio::spawn(async move {
        a2.rd_in(tpl("(\"T\", ?)"), Duration::from_secs(30), Scope::Network)
            .await
    });
    eventually(|| async { b.stats().await.unwrap().node.waits_accepted == 1 }).await;
    b.host_out(tup("(\"T\", 2)"), None).await.unwrap();
    let got = pending
        .await
        .unwrap()
        .unwrap()
        .expect("b answers once it holds one");
    assert_eq!(got.tuple, tup("(\"T\", 2)"));
    assert!(!got.is_local());
    assert_eq!(b.stats().await.unwrap().node.replies_sent, 1);
}

/// `rd_in(Both)`: a local match answers without a request on the air; without one the request
/// goes out and whichever answers first wins — here a later local store.
#[tokio::test]
async fn rd_in_both_prefers_the_local_space_then_takes_the_first_answer() {
    use crate::node::Scope;
    let bus = Bus::default();
    let (a, _) = join(&bus, 1, "a");
    let (b, _) = join(&bus, 2, "b");
    a.host_out(tup("(\"L\", 1)"), None).await.unwrap();
    let got = a
        .rd_in(tpl("(\"L\", ?)"), Duration::from_secs(5), Scope::Both)
        .await
        .unwrap()
        .unwrap();
    assert!(got.is_local());
    assert_eq!(a.stats().await.unwrap().node.requests_sent, 0);

    // Nothing anywhere: the request goes out and waits at b too; a local store answers it.
    let a2 = a.clone();
    let pending = tokio::spawn(async move {
        a2.inp_in(tpl("(\"M\", ?)"), Duration::from_secs(30), Scope::Both)
            .await
    });
    eventually(|| async { b.stats().await.unwrap().node.waits_accepted == 1 }).await;
    a.host_out(tup("(\"M\", 5)"), None).await.unwrap();
    let got = pending.await.unwrap().unwrap().unwrap();
    assert!(got.is_local());
    assert_eq!(got.tuple, tup("(\"M\", 5)"));
    assert_eq!(a.host_count(tpl("(\"M\", ?)")).await.unwrap(), 0, "taken");
    assert_eq!(a.stats().await.unwrap().pending_requests, 0);

    // Nothing locally: b's later tuple answers.
    let a2 = a.clone();
    let pending = tokio::spawn(async move {
        a2.rd_in(tpl("(\"N\", ?)"), Duration::from_secs(30), Scope::Both)
            .await
    });
    eventually(|| async { b.stats().await.unwrap().node.waits_accepted == 2 }).await;
    b.host_out(tup("(\"N\", 6)"), None).await.unwrap();
    let got = pending.await.unwrap().unwrap().unwrap();
    assert!(!got.is_local());
    assert_eq!(got.tuple, tup("(\"N\", 6)"));
}

/// A lease renews (the tuple outlives its first lifetime), cancels (returns the tuple, listeners
/// hear `Rm`), and says `Gone` afterwards; a zero lifetime is refused with the reason.
#[tokio::test(start_paused = true)]
async fn a_lease_renews_and_cancels() {
    use crate::space::{DeliveryKinds, SpaceError};
    let bus = Bus::default();
    let (a, _) = join(&bus, 1, "a");
    let mut removals = a
        .subscribe_to(tpl("(\"L\", ?)"), DeliveryKinds::REMOVALS, 8)
        .await
        .unwrap();
    let lease = a
        .lease(tup("(\"L\", 1)"), Some(Duration::from_secs(2)))
        .await
        .unwrap();
    lease.renew(Some(Duration::from_secs(60))).await.unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        a.host_rd(tpl("(\"L\", ?)")).await.unwrap(),
        Some(tup("(\"L\", 1)")),
        "renewed past its first lifetime"
    );
    assert!(matches!(
        lease.renew(Some(Duration::ZERO)).await,
        Err(ClientError::Space(SpaceError::ZeroLifetime { .. }))
    ));
    let again = lease.clone();
    assert_eq!(lease.cancel().await.unwrap(), Some(tup("(\"L\", 1)")));
    let d = removals.recv().await.unwrap();
    assert_eq!(
        (d.kind, d.tuple),
        (crate::DeliveryKind::Rm, tup("(\"L\", 1)"))
    );
    assert_eq!(a.host_count(tpl("(\"L\", ?)")).await.unwrap(), 0);
    assert!(matches!(
        again.renew(None).await,
        Err(ClientError::Space(SpaceError::Gone))
    ));
    assert_eq!(again.cancel().await.unwrap(), None);

    // Not renewed: it expires, and listeners hear it.
    let short = a
        .lease(tup("(\"L\", 2)"), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    let d = removals.recv().await.unwrap();
    assert_eq!(
        (d.kind, d.tuple),
        (crate::DeliveryKind::Expired, tup("(\"L\", 2)"))
    );
    assert!(matches!(
        short.renew(None).await,
        Err(ClientError::Space(SpaceError::Gone))
    ));
    assert!(matches!(
        a.lease(tup("(\"L\", 3)"), Some(Duration::ZERO)).await,
        Err(ClientError::Space(SpaceError::ZeroLifetime { .. }))
    ));
}

/// Removal listeners hear each way a tuple leaves, with its kind: a local `inp_all` and a remote
/// INP (`Inp`), `rm_all` (`Rm`), eviction (`Evicted`); a listener of the default kinds hears
/// none of them.
#[tokio::test]
async fn subscribe_to_removals_says_which_removal() {
    use crate::DeliveryKind as K;
    use crate::space::{CapacityPolicy, DeliveryKinds};
    let bus = Bus::default();
    let (tx, rx) = mpsc::channel(64);
    bus.0.lock().unwrap().push((1, tx));
    let mut cfg = NodeConfig::new(Transport::Udp, "a").unwrap();
    cfg.reply_backoff = Duration::from_millis(5);
    cfg.space.capacity = 3;
    cfg.space.policy = CapacityPolicy::EvictOldest;
    let node = Node::new(cfg, 1, Time::ZERO);
    let (a, _) = spawn(
        "a".into(),
        node,
        BusSink {
            bus: bus.clone(),
            me: 1,
        },
        rx,
    );
    let (b, _) = join(&bus, 2, "b");
    let mut all = a
        .subscribe_to(tpl("(\"R\", ?)"), DeliveryKinds::REMOVALS, 16)
        .await
        .unwrap();
    let mut outs = a.subscribe(tpl("(\"R\", ?)"), 16).await.unwrap();
    for i in 1..=3 {
        a.host_out(tup(&format!("(\"R\", {i})")), None)
            .await
            .unwrap();
    }
    assert_eq!(
        a.host_inp_all(tpl("(\"R\", 1)")).await.unwrap(),
        vec![tup("(\"R\", 1)")]
    );
    assert_eq!(
        a.host_rm_all(tpl("(\"R\", 2)")).await.unwrap(),
        vec![tup("(\"R\", 2)")]
    );
    // Remote INP of ("R", 3).
    let taken = b
        .inp(tpl("(\"R\", 3)"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(taken.map(|(t, _)| t), Some(tup("(\"R\", 3)")));
    // Four stores into three places: the oldest is evicted.
    for i in 4..=7 {
        a.host_out(tup(&format!("(\"R\", {i})")), None)
            .await
            .unwrap();
    }
    let mut heard = Vec::new();
    for _ in 0..4 {
        let d = all.recv().await.unwrap();
        heard.push((d.kind, d.tuple));
    }
    assert_eq!(
        heard,
        vec![
            (K::Inp, tup("(\"R\", 1)")),
            (K::Rm, tup("(\"R\", 2)")),
            (K::Inp, tup("(\"R\", 3)")),
            (K::Evicted, tup("(\"R\", 4)")),
        ]
    );
    assert!(all.try_recv().is_err());
    let mut stored = Vec::new();
    while let Ok(d) = outs.try_recv() {
        assert_eq!(d.kind, K::Out, "the default listener hears no removal");
        stored.push(d.tuple);
    }
    assert_eq!(stored.len(), 7);
}

/// An `out` whose direct send would block goes through the driver; a close right after it
/// still sends it (the driver flushes before it ends).
#[tokio::test]
async fn close_sends_what_was_queued_before_it() {
    struct Blocked;
    impl DirectSend for Blocked {
        fn try_send_now(&self, _: &[u8]) -> Option<io::Result<()>> {
            None
        }
    }
    struct Sink(Arc<Mutex<usize>>);
    impl FrameSink for Sink {
        async fn send(&mut self, _: Transmit) -> Result<(), SendError> {
            *self.0.lock().unwrap() += 1;
            Ok(())
        }
        fn direct(&self) -> Option<Arc<dyn DirectSend>> {
            Some(Arc::new(Blocked))
        }
    }
    let sent = Arc::new(Mutex::new(0));
    let node = Node::new(NodeConfig::new(Transport::Udp, "x").unwrap(), 3, Time::ZERO);
    let (_frames, rx) = mpsc::channel(1);
    let (h, task) = spawn("x".into(), node, Sink(Arc::clone(&sent)), rx);
    h.out(tup("(1)"), None).await.unwrap();
    h.close().await;
    task.await.unwrap();
    assert_eq!(*sent.lock().unwrap(), 1);
}
