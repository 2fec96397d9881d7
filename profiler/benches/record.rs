//! Recording cost per observation. Peer in the same run: a bare `hdrhistogram` record of the
//! same value (the floor under a profile's two histograms and running means).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hdrhistogram::Histogram;
use sandstorm_naming::FunctionId;
use sandstorm_profiler::{IdleTimeHistogram, Observation, Profiler};

fn record(c: &mut Criterion) {
    let mut p = Profiler::new(Default::default());
    let mut i = 0u64;
    c.bench_function("profiler: record, 500 functions", |b| {
        b.iter(|| {
            i += 1;
            let obs = Observation {
                arrival_us: i * 10,
                duration_us: i % 100_000,
                cpu_us: i % 5_000,
                accesses: 3,
                rounds: 1,
                bytes: 100,
            };
            p.record(FunctionId((i % 500) as u32), black_box(&obs));
        })
    });
    let mut h = IdleTimeHistogram::atc20();
    c.bench_function("idle histogram: record", |b| {
        b.iter(|| {
            i += 1;
            h.record(black_box(i.wrapping_mul(7_000_000) % 20_000_000_000));
        })
    });
    let mut peer =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap_or_else(|e| panic!("{e}"));
    c.bench_function("peer: one hdrhistogram saturating_record", |b| {
        b.iter(|| {
            i += 1;
            peer.saturating_record(black_box(i % 100_000));
        })
    });
}

criterion_group!(benches, record);
criterion_main!(benches);
