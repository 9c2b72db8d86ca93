//! A node's own requests on its local space (issue 13: `request_in` with `Scope::Local`, and
//! `Scope::Both` with nobody else on the air) against a simple model: a vector of live tuples,
//! oldest first, each with its expiry, and the list of waiting requests, oldest first. Random
//! runs of local stores (`host_out`, with and without lifetimes), `rd`/`inp`/`test` with
//! timeouts from 0 up, direct takes from the space, cancels, the clock moving on (with and
//! without the node's timer running) must give exactly the model's answers, in the model's
//! order; a request of scope both goes on the air exactly when the local space had nothing:
//!
//! - a request finds the oldest live match at once (an `inp` takes it); otherwise it waits until
//!   its deadline (the time it was made plus its timeout);
//! - a store is offered to the requests still waiting (deadline not passed): every matching
//!   `rd`/`test` gets a copy, in the order they were made, then the oldest matching `inp` takes
//!   the tuple at once (atomically: it is never seen in the space afterwards);
//! - a request whose deadline has passed gets nothing, even when a store comes before the
//!   node's timer ran, and completes with none when the timer runs;
//! - an expired tuple answers nobody.
//!
//! Sans-IO: the node is driven with explicit times, so nothing sleeps.

use std::time::Duration;

use beets_core::message::RequestOp;
use beets_core::node::Scope;
use beets_core::{
    Event, Node, NodeConfig, RequestId, Time, Transport, Tuple, parse_template, parse_tuple,
};
use proptest::prelude::*;

mod model;
use model::{Pat, pat};

#[derive(Clone, Debug)]
enum Step {
    /// `host_out((k, v))` with a lifetime in ms.
    Out(u8, u8, Option<u16>),
    /// A request with a timeout in ms, of scope `Local` or (`true`) `Both`.
    Request(Op, Pat, u16, bool),
    /// A take straight from the space (`host().inp`), not through the node.
    HostInp(Pat),
    /// Cancels the i-th waiting request (modulo their number).
    Cancel(usize),
    /// The clock moves on by this many ms; the node's timer does not run.
    Advance(u16),
    /// The node's timer runs (`handle_timeout`) now.
    Timer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Rd,
    Inp,
    Test,
}

impl Op {
    fn request(self) -> RequestOp {
        match self {
            Op::Rd => RequestOp::Rd,
            Op::Inp => RequestOp::Inp,
            Op::Test => RequestOp::Test,
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![Just(Op::Rd), Just(Op::Inp), Just(Op::Test)]
}

fn step() -> impl Strategy<Value = Step> {
    let timeout = prop_oneof![1 => Just(0u16), 4 => 1u16..3000];
    prop_oneof![
        4 => (0u8..3, 0u8..3, proptest::option::of(1u16..2000))
            .prop_map(|(k, v, l)| Step::Out(k, v, l)),
        5 => (op(), pat(), timeout, proptest::bool::weighted(0.25))
            .prop_map(|(o, p, t, both)| Step::Request(o, p, t, both)),
        1 => pat().prop_map(Step::HostInp),
        1 => (0usize..8).prop_map(Step::Cancel),
        3 => (0u16..1500).prop_map(Step::Advance),
        2 => Just(Step::Timer),
    ]
}

fn tuple((k, v): (u8, u8)) -> Tuple {
    parse_tuple(&format!("({k}, {v})")).unwrap()
}

/// A stored tuple of the model.
#[derive(Clone, Debug)]
struct Stored {
    kv: (u8, u8),
    /// ms; `None`: never.
    expires: Option<u64>,
}

/// A waiting request of the model.
#[derive(Clone, Debug)]
struct Waiting {
    id: RequestId,
    op: Op,
    pat: Pat,
    /// ms.
    deadline: u64,
}

#[derive(Default, Debug)]
struct Model {
    now: u64,
    tuples: Vec<Stored>,
    waiting: Vec<Waiting>,
}

/// What a request ended with: its tuple, or none at its deadline.
type Outcome = (RequestId, Option<Tuple>);

impl Model {
    fn live(&self, s: &Stored) -> bool {
        s.expires.is_none_or(|e| e > self.now)
    }

    /// The index of the oldest live tuple `p` matches.
    fn find(&self, p: Pat) -> Option<usize> {
        self.tuples
            .iter()
            .position(|s| self.live(s) && p.matches(s.kv))
    }

    fn live_count(&self) -> usize {
        self.tuples.iter().filter(|s| self.live(s)).count()
    }

    /// Stores a tuple and offers it to the requests still waiting.
    fn out(&mut self, kv: (u8, u8), lifetime: Option<u16>) -> Vec<Outcome> {
        let now = self.now;
        let open = |w: &&Waiting| w.deadline > now && w.pat.matches(kv);
        let mut done: Vec<Outcome> = self
            .waiting
            .iter()
            .filter(open)
            .filter(|w| w.op != Op::Inp)
            .map(|w| (w.id, Some(tuple(kv))))
            .collect();
        let taker = self
            .waiting
            .iter()
            .filter(open)
            .find(|w| w.op == Op::Inp)
            .map(|w| w.id);
        if let Some(id) = taker {
            done.push((id, Some(tuple(kv))));
        } else {
            self.tuples.push(Stored {
                kv,
                expires: lifetime.map(|l| now + u64::from(l)),
            });
        }
        self.waiting
            .retain(|w| !done.iter().any(|(id, _)| *id == w.id));
        done
    }

    /// A local request: answered at once, or waiting (`None`).
    fn request(&mut self, id: RequestId, op: Op, p: Pat, timeout: u16) -> Option<Tuple> {
        if let Some(i) = self.find(p) {
            let kv = self.tuples[i].kv;
            if op == Op::Inp {
                self.tuples.remove(i);
            }
            return Some(tuple(kv));
        }
        self.waiting.push(Waiting {
            id,
            op,
            pat: p,
            deadline: self.now + u64::from(timeout),
        });
        None
    }

    fn host_inp(&mut self, p: Pat) -> Option<Tuple> {
        let i = self.find(p)?;
        Some(tuple(self.tuples.remove(i).kv))
    }

    /// The node's timer at `now`: every request whose deadline has come completes with none,
    /// in the order they were made.
    fn timer(&mut self) -> Vec<Outcome> {
        let now = self.now;
        let done = self
            .waiting
            .iter()
            .filter(|w| w.deadline <= now)
            .map(|w| (w.id, None))
            .collect();
        self.waiting.retain(|w| w.deadline > now);
        done
    }
}

fn outcomes(node: &mut Node, now: Time) -> Vec<Outcome> {
    std::iter::from_fn(|| node.poll_event())
        .map(|e| match e {
            Event::LocalAnswer { id, tuple, at, .. } => {
                assert_eq!(at, now, "answered at the node's time");
                (id, Some(tuple))
            }
            Event::Completed {
                id, reply: None, ..
            } => (id, None),
            other => panic!("unexpected event {other:?}"),
        })
        .collect()
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut node = Node::new(
        NodeConfig::new(Transport::Udp, "local").unwrap(),
        7,
        Time::ZERO,
    );
    let mut model = Model::default();
    let any = parse_template("(?, ?)").unwrap();
    for step in steps {
        let now = Time::from_millis(model.now);
        match step {
            Step::Out(k, v, life) => {
                let want = model.out((k, v), life);
                node.host_out(
                    now,
                    tuple((k, v)),
                    life.map(|l| Duration::from_millis(u64::from(l))),
                )
                .unwrap();
                prop_assert_eq!(outcomes(&mut node, now), want, "out ({}, {})", k, v);
            }
            Step::Request(op, p, timeout, both) => {
                let scope = if both { Scope::Both } else { Scope::Local };
                let id = node
                    .request_in(
                        now,
                        op.request(),
                        p.template(),
                        Duration::from_millis(u64::from(timeout)),
                        scope,
                    )
                    .unwrap();
                let want: Vec<Outcome> = model
                    .request(id, op, p, timeout)
                    .map(|t| (id, Some(t)))
                    .into_iter()
                    .collect();
                let sent = std::iter::from_fn(|| node.poll_transmit()).count();
                // Scope both goes on the air only when the local space had nothing.
                let on_air = usize::from(both && want.is_empty());
                prop_assert_eq!(sent, on_air, "{:?} {:?} {:?}", op, p, scope);
                prop_assert_eq!(outcomes(&mut node, now), want, "{:?} {:?}", op, p);
            }
            Step::HostInp(p) => {
                prop_assert_eq!(node.host().inp(now, &p.template()), model.host_inp(p));
            }
            Step::Cancel(i) => {
                if !model.waiting.is_empty() {
                    let w = model.waiting.remove(i % model.waiting.len());
                    prop_assert!(node.cancel(w.id));
                    prop_assert!(!node.cancel(w.id));
                }
            }
            Step::Advance(ms) => model.now += u64::from(ms),
            Step::Timer => {
                let want = model.timer();
                node.handle_timeout(now);
                prop_assert_eq!(outcomes(&mut node, now), want, "timer at {}", model.now);
            }
        }
        let now = Time::from_millis(model.now);
        prop_assert_eq!(node.host().count(now, &any), model.live_count());
        // The node's next deadline is never later than the first waiting request's.
        if let Some(first) = model.waiting.iter().map(|w| w.deadline).min() {
            let at = node.poll_timeout();
            prop_assert!(
                at.is_some_and(|at| at <= Time::from_millis(first)),
                "next timeout {:?}, a request waits until {}",
                at,
                first
            );
        }
    }
    // In the end every request completes: with none once its deadline passes.
    model.now += 3000;
    let now = Time::from_millis(model.now);
    let want = model.timer();
    node.handle_timeout(now);
    prop_assert_eq!(outcomes(&mut node, now), want);
    prop_assert!(model.waiting.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn local_waits_match_the_model(steps in proptest::collection::vec(step(), 1..60)) {
        run(steps)?;
    }
}

/// The case the model pins down: a request whose deadline passed before the store, the node's
/// timer not having run yet, takes nothing, and completes with none when the timer runs.
#[test]
fn a_store_after_the_deadline_does_not_answer_a_request_the_timer_has_not_ended() {
    run(vec![
        Step::Request(Op::Inp, Pat(Some(1), None), 100, false),
        Step::Advance(100),
        Step::Out(1, 1, None),
        Step::Timer,
        Step::Request(Op::Rd, Pat(Some(1), Some(1)), 0, true),
    ])
    .unwrap();
}
