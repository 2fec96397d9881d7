//! Hot paths of the naming structures as the simulator drives them: warm-context churn and key
//! ownership lookups. Peer in the same run: a `HashMap<(app, node), Vec<id>>` idle index, the
//! obvious structure this crate's slab and intrusive lists replace.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sandstorm_naming::ring::KeyRing;
use sandstorm_naming::warm::WarmContexts;
use sandstorm_naming::{AppId, NodeId, TenantId};

fn warm(c: &mut Criterion) {
    let mut w = WarmContexts::new(1);
    for i in 0..10_000u32 {
        let id = w.insert(AppId(i % 1_000), NodeId(i % 16), 128, 0);
        let _ = w.release(id, 1);
    }
    let mut i = 0u64;
    c.bench_function("warm: acquire_idle_on + release", |b| {
        b.iter(|| {
            i += 1;
            let (app, node) = (AppId((i % 1_000) as u32), NodeId((i % 16) as u32));
            if let Some(id) = w.acquire_idle_on(app, node, i) {
                let _ = w.release(id, i);
            }
        })
    });
    let mut peer: HashMap<(u32, u32), Vec<u64>> = HashMap::new();
    for i in 0..10_000u64 {
        peer.entry(((i % 1_000) as u32, (i % 16) as u32))
            .or_default()
            .push(i);
    }
    c.bench_function("peer: HashMap<(app, node), Vec> pop + push", |b| {
        b.iter(|| {
            i += 1;
            let key = ((i % 1_000) as u32, (i % 16) as u32);
            if let Some(v) = peer.get_mut(&key)
                && let Some(id) = v.pop()
            {
                v.push(black_box(id));
            }
        })
    });
}

fn ring(c: &mut Criterion) {
    let mut r = KeyRing::default();
    for n in 0..64 {
        r.add_node(NodeId(n));
    }
    let mut i = 0u64;
    c.bench_function("ring: owner of a key, 64 nodes x 128 vnodes", |b| {
        b.iter(|| {
            i += 1;
            r.owner(TenantId(1), black_box(&i.to_le_bytes()))
        })
    });
}

criterion_group!(benches, warm, ring);
criterion_main!(benches);
