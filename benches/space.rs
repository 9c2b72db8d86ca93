//! Local tuple space throughput.
//!
//! Run: `cargo bench --bench space -- --warm-up-time 1 --measurement-time 3`
//!
//! - `space/out_inp/<n>`: a space prefilled with `n` tuples `("k<i>", i)` of distinct first
//!   values; each iteration outs `("k<j>", x)` for a spread-out existing key `j` and `inp`s
//!   `("k<j>", ?)`, which takes the older tuple of that key. The space stays at `n` tuples and every
//!   bucket at one or two, so the curve shows what the (arity, first value) index costs as the
//!   space grows. Throughput is in out+inp pairs.
//! - `space/rd_first_actual/100000`: `rd` by a first-field actual in the same 100k space.

use std::hint::black_box;

use beets::core::space::{Space, SpaceConfig};
use beets::core::{Field, Template, Time, Tuple, Value};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// A stride coprime with every size below, so consecutive iterations touch unrelated buckets.
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

fn filled(n: usize) -> Space {
    let mut space = Space::new(SpaceConfig {
        capacity: n + 16,
        ..SpaceConfig::default()
    });
    for i in 0..n {
        let t = Tuple::new([Value::Str(key(i)), Value::Int16(i as i16)]).unwrap();
        space.out(Time::ZERO, t, None).unwrap();
    }
    space
}

fn out_inp(c: &mut Criterion) {
    let mut group = c.benchmark_group("space/out_inp");
    group.throughput(Throughput::Elements(1));
    for n in [1_000usize, 10_000, 100_000, 1_000_000] {
        let mut space = filled(n);
        let mut j = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                j = (j + STRIDE) % n;
                let t = Tuple::new([Value::Str(key(j)), Value::Int16(j as i16)]).unwrap();
                space.out(Time::ZERO, t, None).unwrap();
                let p = Template::new([Field::Actual(Value::Str(key(j))), Field::ANY]).unwrap();
                black_box(space.inp(Time::ZERO, &p))
            });
        });
        assert_eq!(space.len(), n);
    }
    group.finish();
}

fn rd_first_actual(c: &mut Criterion) {
    let mut group = c.benchmark_group("space/rd_first_actual");
    group.throughput(Throughput::Elements(1));
    let n = 100_000;
    let mut space = filled(n);
    let templates: Vec<Template> = (0..n)
        .map(|i| Template::new([Field::Actual(Value::Str(key(i))), Field::ANY]).unwrap())
        .collect();
    let mut j = 0usize;
    group.bench_function(BenchmarkId::from_parameter(n), |b| {
        b.iter(|| {
            j = (j + STRIDE) % n;
            black_box(space.rd(Time::ZERO, &templates[j]))
        });
    });
    group.finish();
}

criterion_group!(benches, out_inp, rd_first_actual);
criterion_main!(benches);
