//! The tuple space against a simple model (issue 13): a vector of live tuples, oldest first,
//! each with its expiry and lease. Random runs of `out` (with and without lifetimes, on a full
//! space that evicts or refuses), `rd`, `inp`, `rm`, the bulk `rd_all`/`inp_all`/`rm_all`,
//! leases (`take`, `cancel`, `renew`) and the passing of time must give the model's results, and
//! a listener of every kind must hear exactly the model's deliveries, each with its kind.
//!
//! Time advances before each step and `expire` runs then, as an engine's timer does, so expired
//! tuples leave at a defined point (reads would otherwise remove the ones they meet, in bucket
//! order).

use std::time::Duration;

use beets_core::space::{DeliveryKinds, TupleId};
use beets_core::{
    CapacityPolicy, DeliveryKind, Space, SpaceConfig, SpaceError, Time, Tuple, parse_template,
    parse_tuple,
};
use proptest::prelude::*;

mod model;
use model::{Pat, pat};

const CAPACITY: usize = 6;

#[derive(Clone, Debug)]
enum Step {
    Out(u8, u8, Option<u16>),
    Rd(Pat),
    Inp(Pat),
    Rm(Pat),
    RdAll(Pat),
    InpAll(Pat),
    RmAll(Pat),
    Take(usize),
    Cancel(usize),
    Renew(usize, Option<u16>),
}

fn step() -> impl Strategy<Value = Step> {
    let life = proptest::option::of(1u16..40);
    prop_oneof![
        4 => (0u8..3, 0u8..3, life.clone()).prop_map(|(k, v, l)| Step::Out(k, v, l)),
        1 => pat().prop_map(Step::Rd),
        1 => pat().prop_map(Step::Inp),
        1 => pat().prop_map(Step::Rm),
        1 => pat().prop_map(Step::RdAll),
        1 => pat().prop_map(Step::InpAll),
        1 => pat().prop_map(Step::RmAll),
        1 => (0usize..16).prop_map(Step::Take),
        1 => (0usize..16).prop_map(Step::Cancel),
        1 => (0usize..16, life).prop_map(|(i, l)| Step::Renew(i, l)),
    ]
}

fn tuple((k, v): (u8, u8)) -> Tuple {
    parse_tuple(&format!("({k}, {v})")).unwrap()
}

/// One live tuple of the model.
#[derive(Clone, Debug)]
struct Entry {
    lease: usize,
    kv: (u8, u8),
    /// Milliseconds; `None`: never.
    expires: Option<u64>,
}

#[derive(Default)]
struct Model {
    live: Vec<Entry>,
    next_lease: usize,
    /// (kind, tuple) heard in this step.
    heard: Vec<(DeliveryKind, (u8, u8))>,
}

impl Model {
    fn expire(&mut self, now: u64) {
        let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.live)
            .into_iter()
            .partition(|e| e.expires.is_some_and(|x| x <= now));
        self.live = keep;
        for e in gone {
            self.heard.push((DeliveryKind::Expired, e.kv));
        }
    }

    fn remove_where(&mut self, p: Pat, kind: DeliveryKind, first_only: bool) -> Vec<(u8, u8)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.live.len() {
            if (out.is_empty() || !first_only) && p.matches(self.live[i].kv) {
                let e = self.live.remove(i);
                self.heard.push((kind, e.kv));
                out.push(e.kv);
            } else {
                i += 1;
            }
        }
        out
    }

    fn by_lease(&self, lease: usize) -> Option<usize> {
        self.live.iter().position(|e| e.lease == lease)
    }
}

fn lifetime(l: Option<u16>) -> Option<Duration> {
    l.map(|ms| Duration::from_millis(u64::from(ms)))
}

fn run(steps: Vec<(u8, Step)>, evict: bool) -> Result<(), TestCaseError> {
    let mut space = Space::new(SpaceConfig {
        capacity: CAPACITY,
        policy: if evict {
            CapacityPolicy::EvictOldest
        } else {
            CapacityPolicy::Refuse
        },
        delivery_queue: 10_000,
        ..SpaceConfig::default()
    });
    let all = parse_template("(?, ?)").unwrap();
    space.subscribe_to(all.clone(), DeliveryKinds::ALL);
    let removals = space.subscribe_to(all, DeliveryKinds::REMOVALS);
    let mut model = Model::default();
    // Lease number → the space's id (leases of refused outs are never handed out).
    let mut ids: Vec<TupleId> = Vec::new();
    let mut now = 0u64;
    for (advance, step) in steps {
        now += u64::from(advance);
        let t = Time::from_millis(now);
        space.expire(t);
        model.expire(now);
        match step {
            Step::Out(k, v, l) => {
                let full = model.live.len() >= CAPACITY;
                let got = space.out(t, tuple((k, v)), lifetime(l));
                if full && !evict {
                    prop_assert!(matches!(got, Err(SpaceError::Full { .. })), "{got:?}");
                } else {
                    let report = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    if full {
                        let oldest = model.live.remove(0);
                        model.heard.push((DeliveryKind::Evicted, oldest.kv));
                        prop_assert_eq!(report.evicted, Some(tuple(oldest.kv)));
                    } else {
                        prop_assert_eq!(report.evicted, None);
                    }
                    model.heard.push((DeliveryKind::Out, (k, v)));
                    model.live.push(Entry {
                        lease: model.next_lease,
                        kv: (k, v),
                        expires: l.map(|ms| now + u64::from(ms)),
                    });
                    model.next_lease += 1;
                    ids.push(report.id);
                }
            }
            Step::Rd(p) => {
                let want = model
                    .live
                    .iter()
                    .find(|e| p.matches(e.kv))
                    .map(|e| tuple(e.kv));
                prop_assert_eq!(space.rd(t, &p.template()), want);
            }
            Step::Inp(p) => {
                let want = model.remove_where(p, DeliveryKind::Inp, true);
                prop_assert_eq!(
                    space.inp(t, &p.template()),
                    want.first().copied().map(tuple)
                );
            }
            Step::Rm(p) => {
                let want = model.remove_where(p, DeliveryKind::Rm, false);
                prop_assert_eq!(space.rm(t, &p.template()), want.len());
            }
            Step::RdAll(p) => {
                let want: Vec<Tuple> = model
                    .live
                    .iter()
                    .filter(|e| p.matches(e.kv))
                    .map(|e| tuple(e.kv))
                    .collect();
                prop_assert_eq!(space.rd_all(t, &p.template()), want);
            }
            Step::InpAll(p) => {
                let want: Vec<Tuple> = model
                    .remove_where(p, DeliveryKind::Inp, false)
                    .into_iter()
                    .map(tuple)
                    .collect();
                prop_assert_eq!(space.inp_all(t, &p.template()), want);
            }
            Step::RmAll(p) => {
                let want: Vec<Tuple> = model
                    .remove_where(p, DeliveryKind::Rm, false)
                    .into_iter()
                    .map(tuple)
                    .collect();
                prop_assert_eq!(space.rm_all(t, &p.template()), want);
            }
            Step::Take(i) | Step::Cancel(i) => {
                let Some(&id) = ids.get(i) else { continue };
                let kind = if matches!(step, Step::Take(_)) {
                    DeliveryKind::Inp
                } else {
                    DeliveryKind::Rm
                };
                let want = model.by_lease(i).map(|at| {
                    let e = model.live.remove(at);
                    model.heard.push((kind, e.kv));
                    tuple(e.kv)
                });
                let got = match kind {
                    DeliveryKind::Inp => space.take(t, id),
                    _ => space.cancel(t, id),
                };
                prop_assert_eq!(got, want);
            }
            Step::Renew(i, l) => {
                let Some(&id) = ids.get(i) else { continue };
                let got = space.renew(t, id, lifetime(l));
                match model.by_lease(i) {
                    None => prop_assert_eq!(got, Err(SpaceError::Gone)),
                    Some(at) => {
                        let expires = l.map(|ms| now + u64::from(ms));
                        model.live[at].expires = expires;
                        prop_assert_eq!(got, Ok(expires.map_or(Time::MAX, Time::from_millis)));
                    }
                }
            }
        }
        // Deliveries of this step: every kind to the first listener, removals to the second.
        let mut got_all = Vec::new();
        let mut got_removals = Vec::new();
        while let Some(d) = space.poll_delivery() {
            let kv = (d.tuple.clone(), d.kind);
            if d.listener == removals {
                got_removals.push(kv);
            } else {
                got_all.push(kv);
            }
        }
        let mut want_all: Vec<(Tuple, DeliveryKind)> = std::mem::take(&mut model.heard)
            .into_iter()
            .map(|(k, kv)| (tuple(kv), k))
            .collect();
        let mut want_removals: Vec<_> = want_all
            .iter()
            .filter(|(_, k)| k.is_removal())
            .cloned()
            .collect();
        let key = |x: &(Tuple, DeliveryKind)| format!("{:?}", x);
        for v in [
            &mut got_all,
            &mut got_removals,
            &mut want_all,
            &mut want_removals,
        ] {
            v.sort_by_key(key);
        }
        prop_assert_eq!(got_all, want_all);
        prop_assert_eq!(got_removals, want_removals);
        // What is live agrees, oldest first.
        let live: Vec<Tuple> = model.live.iter().map(|e| tuple(e.kv)).collect();
        prop_assert_eq!(space.rd_all(t, &parse_template("(?, ?)").unwrap()), live);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn space_agrees_with_the_model(
        steps in proptest::collection::vec((0u8..15, step()), 1..60),
        evict in any::<bool>(),
    ) {
        run(steps, evict)?;
    }
}

/// A zero lifetime is an error that says so, for `out` and for `renew`; nothing changes.
#[test]
fn zero_lifetimes_are_refused_with_the_reason() {
    let mut space = Space::new(SpaceConfig::default());
    let t = Time::from_millis(5);
    let err = space
        .out(t, tuple((1, 1)), Some(Duration::ZERO))
        .unwrap_err();
    assert!(err.to_string().contains("lifetime 0 is invalid"), "{err}");
    let id = space.out(t, tuple((1, 1)), None).unwrap().id;
    let err = space.renew(t, id, Some(Duration::ZERO)).unwrap_err();
    assert!(matches!(err, SpaceError::ZeroLifetime { .. }), "{err}");
    assert_eq!(space.get(t, id), Some(&tuple((1, 1))));
}
