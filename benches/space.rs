//! Local tuple space throughput.
//!
//! Run: `cargo bench --bench space -- --warm-up-time 1 --measurement-time 3`
//!
//! On a shared machine, check the load first (`uptime`): wall time also counts the time the
//! benchmark waits for a core.
//!
//! Every space is prefilled with `n` tuples `("k<i>", i)` of distinct first values. Throughput is
//! in operations: one out+inp pair, or one rd.
//!
//! - `space/out_inp/<n>`: each iteration outs `("k<i>", x)` and `inp`s `("k<i>", ?)`, which takes
//!   the older tuple of that key, so the space stays at `n` tuples. The keys cycle over 1024 of the
//!   stored ones, spread across the space: the working set fits in cache whatever `n` is, so the
//!   curve shows what the (arity, first value) index costs as the space grows. A space that scans
//!   would grow linearly here.
//! - `space/out_inp_random/<n>`: the same pair with keys spread over all `n` stored tuples, so from
//!   100k on nearly every pair misses the caches: memory latency, not the index, sets the pace.
//! - `space/rustupolis_out_inp_random/<n>`: the peer in the same run — rustupolis 0.0.2's
//!   `SimpleStore` (a `BTreeSet` of tuples), prefilled the same way, `out` + `inp` of the same
//!   spread keys: `out` `("k<i>", -1)` beside the stored `("k<i>", i)`, then `inp` of that exact
//!   tuple (a `BTreeSet::take` down the same path). With a wildcard its `inp` prints a line to
//!   stdout per candidate it checks, which would measure the terminal; exact takes favour the
//!   peer.
//! - `space/rd_first_actual/100000`: `rd` by a first-field actual, keys over all 100k tuples; the
//!   result is a copy, so it includes cloning the tuple.
//! - `space/pending_check/<case>`: the `out_inp` pair on a 10k space, stored through the engine
//!   (`Node::host_out`, then `inp` on the local space), which offers each stored tuple to the
//!   remote requests waiting there (spec §11): `space` is the bare `Space` for reference, `none`
//!   the node with no request waiting, `256` the node with 256 waiting RDs (the default bound)
//!   of other keys, so each `out` is checked against all 256 and answers none.

use std::hint::black_box;

use beets::core::space::{Space, SpaceConfig};
use beets::core::{
    Field, Frame, Node, NodeConfig, PeerAddr, Template, Time, Transmit, Transport, Tuple, Value,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [usize; 4] = [1_000, 10_000, 100_000, 1_000_000];

/// Keys the `out_inp` pairs cycle over.
const HOT_KEYS: usize = 1024;

/// A prime stride, coprime with every size, so consecutive iterations touch unrelated buckets.
const STRIDE: usize = 7_919;

/// `"k<i>"`, formatted by hand: `format!` would cost as much as the space operations measured.
fn key(i: usize) -> String {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut i = i;
    loop {
        at -= 1;
        digits[at] = b'0' + (i % 10) as u8;
        i /= 10;
        if i == 0 {
            break;
        }
    }
    let mut s = String::with_capacity(1 + digits.len() - at);
    s.push('k');
    s.extend(digits[at..].iter().map(|&d| char::from(d)));
    s
}

fn tuple(i: usize) -> Tuple {
    Tuple::new([Value::Str(key(i).into()), Value::Int16(i as i16)]).unwrap()
}

fn template(i: usize) -> Template {
    Template::new([Field::Actual(Value::Str(key(i).into())), Field::ANY]).unwrap()
}

fn filled(n: usize) -> Space {
    let mut space = Space::new(SpaceConfig {
        capacity: n + 16,
        ..SpaceConfig::default()
    });
    for i in 0..n {
        space.out(Time::ZERO, tuple(i), None).unwrap();
    }
    space
}

/// One out+inp pair per iteration on the key `pick(iteration)`.
fn pairs(c: &mut Criterion, group: &str, pick: fn(usize, usize) -> usize) {
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        let mut space = filled(n);
        let mut iteration = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                iteration = iteration.wrapping_add(1);
                let i = pick(iteration, n);
                space.out(Time::ZERO, tuple(i), None).unwrap();
                black_box(space.inp(Time::ZERO, &template(i)))
            });
        });
        assert_eq!(space.len(), n);
    }
    group.finish();
}

fn out_inp(c: &mut Criterion) {
    pairs(c, "space/out_inp", |iteration, n| {
        let hot = HOT_KEYS.min(n);
        (iteration % hot) * STRIDE % hot * (n / hot)
    });
}

fn out_inp_random(c: &mut Criterion) {
    pairs(c, "space/out_inp_random", |iteration, n| {
        (iteration % n) * STRIDE % n
    });
}

/// `("k<i>", value)` for rustupolis (its integers are `i32`).
fn rustupolis_tuple(i: usize, value: i32) -> rustupolis::tuple::Tuple {
    use rustupolis::tuple::{E, Tuple as RTuple};
    RTuple::from_vec(vec![E::S(key(i)), E::I(value)])
}

fn rustupolis_out_inp_random(c: &mut Criterion) {
    use rustupolis::store::{SimpleStore, Store};
    let mut group = c.benchmark_group("space/rustupolis_out_inp_random");
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        let mut store = SimpleStore::new();
        for i in 0..n {
            store.out(rustupolis_tuple(i, i as i32)).unwrap();
        }
        let mut iteration = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                iteration = iteration.wrapping_add(1);
                let i = (iteration % n) * STRIDE % n;
                // A set: the new tuple must differ from the stored one of its key (values ≥ 0).
                store.out(rustupolis_tuple(i, -1)).unwrap();
                black_box(store.inp(&rustupolis_tuple(i, -1)).unwrap())
            });
        });
        assert_eq!(store.len(), n);
    }
    group.finish();
}

fn rd_first_actual(c: &mut Criterion) {
    let mut group = c.benchmark_group("space/rd_first_actual");
    group.throughput(Throughput::Elements(1));
    let n = 100_000;
    let mut space = filled(n);
    let templates: Vec<Template> = (0..n).map(template).collect();
    let mut i = 0usize;
    group.bench_function(BenchmarkId::from_parameter(n), |b| {
        b.iter(|| {
            i = (i + STRIDE) % n;
            black_box(space.rd(Time::ZERO, &templates[i]))
        });
    });
    group.finish();
}

/// A UDP node whose space holds `n` tuples, with `waiting` remote RDs pending (templates
/// `(<j>, "w", ?)`: arity 3, so they never match the stored 2-tuples — the check still runs).
fn node_with_waits(n: usize, waiting: usize) -> Node {
    let mut cfg = NodeConfig::new(Transport::Udp, "beacon").unwrap();
    cfg.space.capacity = n + 16;
    let mut node = Node::new(cfg, 1, Time::ZERO);
    for i in 0..n {
        node.host_out(Time::ZERO, tuple(i), None).unwrap();
    }
    let mut cfg = NodeConfig::new(Transport::Udp, "mobile").unwrap();
    cfg.max_pending = waiting.max(1);
    let mut mobile = Node::new(cfg, 2, Time::ZERO);
    let from = PeerAddr::Ip(([127, 0, 0, 2], 49737).into());
    for j in 0..waiting {
        let t = Template::new([
            Field::Actual(Value::Int16(j as i16)),
            Field::Actual(Value::Str("w".into())),
            Field::ANY,
        ])
        .unwrap();
        mobile
            .rd(Time::ZERO, t, std::time::Duration::from_secs(3600))
            .unwrap();
        while let Some(Transmit::Datagram(d)) = mobile.poll_transmit() {
            node.handle_frame(Time::ZERO, from, Frame::Datagram(&d), None);
        }
    }
    assert_eq!(node.waiting_requests(), waiting);
    node
}

fn pending_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("space/pending_check");
    group.throughput(Throughput::Elements(1));
    let n = 10_000;
    let pick = |iteration: usize| (iteration % HOT_KEYS) * STRIDE % HOT_KEYS * (n / HOT_KEYS);
    let mut space = filled(n);
    let mut iteration = 0usize;
    group.bench_function("space", |b| {
        b.iter(|| {
            iteration = iteration.wrapping_add(1);
            let i = pick(iteration);
            space.out(Time::ZERO, tuple(i), None).unwrap();
            black_box(space.inp(Time::ZERO, &template(i)))
        });
    });
    for (name, waiting) in [("none", 0), ("256", 256)] {
        let mut node = node_with_waits(n, waiting);
        group.bench_function(name, |b| {
            b.iter(|| {
                iteration = iteration.wrapping_add(1);
                let i = pick(iteration);
                node.host_out(Time::ZERO, tuple(i), None).unwrap();
                black_box(node.host().inp(Time::ZERO, &template(i)))
            });
        });
        assert_eq!(node.waiting_requests(), waiting);
        assert!(node.poll_transmit().is_none(), "nothing answered");
    }
    group.finish();
}

criterion_group!(
    benches,
    out_inp,
    out_inp_random,
    rustupolis_out_inp_random,
    rd_first_actual,
    pending_check
);
criterion_main!(benches);
