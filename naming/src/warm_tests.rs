//! Tests of [`super::WarmContexts`]: unit tables and a model-checked property test.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;

const A: AppId = AppId(0);
const B: AppId = AppId(1);
const N0: NodeId = NodeId(0);
const N1: NodeId = NodeId(1);

fn ids(it: impl Iterator<Item = ContextId>) -> Vec<ContextId> {
    it.collect()
}

/// Walks every intrusive list and checks it against the contexts' states.
fn check_invariants(w: &WarmContexts) {
    let walk = |head: ListHead, list: List| -> Vec<u32> {
        let mut out = Vec::new();
        let (mut idx, mut prev) = (head.head, NIL);
        while idx != NIL {
            assert_eq!(
                w.slots[idx as usize].prev[list as usize], prev,
                "{list:?} back link"
            );
            out.push(idx);
            prev = idx;
            idx = w.slots[idx as usize].next[list as usize];
        }
        assert_eq!(head.tail, prev, "{list:?} tail");
        assert_eq!(head.len as usize, out.len(), "{list:?} len");
        out
    };
    let live: Vec<&WarmContext> = w.iter().collect();
    assert_eq!(live.len(), w.len());
    let with_room: HashSet<u32> = w
        .apps
        .iter()
        .flat_map(|a| walk(a.with_room, List::App))
        .collect();
    let idle: HashSet<u32> = walk(w.idle, List::Idle).into_iter().collect();
    let node_idle: HashSet<u32> = w
        .nodes
        .iter()
        .flat_map(|n| walk(n.idle, List::NodeIdle))
        .collect();
    for ctx in &live {
        let idx = ctx.id.slot();
        assert!(ctx.in_flight <= w.concurrency, "{} over its limit", ctx.id);
        assert_eq!(with_room.contains(&idx), ctx.in_flight < w.concurrency);
        assert_eq!(idle.contains(&idx), ctx.in_flight == 0);
        assert_eq!(node_idle.contains(&idx), ctx.in_flight == 0);
        assert_eq!(
            w.nodes[ctx.node.0 as usize].members[w.slots[idx as usize].member_pos as usize],
            idx
        );
    }
    assert_eq!(
        with_room.len(),
        live.iter().filter(|c| c.in_flight < w.concurrency).count()
    );
    for (n, entry) in w.nodes.iter().enumerate() {
        let node = NodeId(n as u32);
        let memory: u64 = live
            .iter()
            .filter(|c| c.node == node)
            .map(|c| u64::from(c.memory_mb))
            .sum();
        assert_eq!(entry.memory_mb, memory, "memory on {node}");
        assert_eq!(
            w.contexts_on(node).count(),
            live.iter().filter(|c| c.node == node).count()
        );
        assert!(w.idle_on(node).all(|c| c.node == node && c.in_flight == 0));
    }
    for (a, entry) in w.apps.iter().enumerate() {
        let count = live.iter().filter(|c| c.app == AppId(a as u32)).count();
        assert_eq!(entry.total as usize, count);
    }
}

#[test]
fn lifecycle_with_concurrency_one() {
    let mut w = WarmContexts::new(1);
    let c0 = w.insert(A, N0, 128, 100);
    assert_eq!(w.get(c0).map(|c| c.in_flight), Some(1));
    // Busy with the invocation that created it: nothing to acquire.
    assert_eq!(w.acquire_idle(A, 110), None);
    w.release(c0, 200).expect("in flight");
    assert_eq!(
        w.get(c0).map(|c| (c.in_flight, c.last_used_us)),
        Some((0, 200))
    );
    assert_eq!((w.idle_count(A), w.idle_count(B)), (1, 0));
    assert!(w.has_idle_on(A, N0) && !w.has_idle_on(A, N1) && !w.has_idle_on(B, N0));
    assert_eq!(w.acquire_idle_on(A, N1, 250), None);
    assert_eq!(w.acquire_idle(A, 300), Some(c0));
    assert_eq!(
        w.get(c0)
            .map(|c| (c.in_flight, c.last_used_us, c.created_us)),
        Some((1, 300, 100))
    );
    assert_eq!(w.idle_count(A), 0);
    check_invariants(&w);
}

#[test]
fn acquisition_is_lifo_and_eviction_order_is_lru() {
    let mut w = WarmContexts::new(1);
    let c: Vec<ContextId> = (0..3).map(|i| w.insert(A, NodeId(i % 2), 64, 0)).collect();
    // Released at t = 10, 30, 20: c1 is the most recent, then c2, then c0.
    for (ctx, t) in [(c[0], 10), (c[1], 30), (c[2], 20)] {
        w.release(ctx, t).expect("in flight");
    }
    // Idle contexts come oldest first, by release order.
    assert_eq!(ids(w.idle_iter().map(|x| x.id)), vec![c[0], c[1], c[2]]);
    assert_eq!(w.idle_iter().len(), 3);
    // c0 and c2 are on node 0 (i % 2 == 0), c1 on node 1.
    assert_eq!(ids(w.idle_on(N0).map(|x| x.id)), vec![c[0], c[2]]);
    assert_eq!(ids(w.idle_on(NodeId(9)).map(|x| x.id)), vec![]);
    // LIFO: the last one released comes back first.
    assert_eq!(w.acquire_idle(A, 40), Some(c[2]));
    assert_eq!(w.acquire_idle_on(A, N0, 41), Some(c[0]));
    assert_eq!(w.acquire_idle_on(A, N0, 42), None);
    assert_eq!(w.acquire_idle(A, 43), Some(c[1]));
    assert_eq!(w.idle_total(), 0);
    check_invariants(&w);
}

#[test]
fn concurrency_packs_onto_the_most_recent_context() {
    let mut w = WarmContexts::new(3);
    let c0 = w.insert(A, N0, 256, 0); // in flight 1 of 3: still has room
    assert_eq!(w.idle_count(A), 1);
    assert_eq!(w.acquire_idle(A, 1), Some(c0)); // 2 of 3
    assert_eq!(w.acquire_idle(A, 2), Some(c0)); // 3 of 3: full
    assert_eq!(w.acquire_idle(A, 3), None);
    assert_eq!(
        w.acquire(c0, 3),
        Err(WarmError::Full {
            id: c0,
            in_flight: 3
        })
    );
    let c1 = w.insert(A, N0, 256, 4);
    w.release(c0, 5).expect("in flight"); // c0: 2 of 3, most recent
    assert_eq!(w.acquire_idle(A, 6), Some(c0));
    assert_eq!(w.acquire_idle(A, 7), Some(c1));
    // Neither is idle while something runs in it.
    assert_eq!(w.idle_total(), 0);
    assert_eq!(w.memory_on(N0), 512); // 256 + 256
    check_invariants(&w);
}

#[test]
fn stale_ids_never_reach_reused_slots() {
    let mut w = WarmContexts::new(1);
    let old = w.insert(A, N0, 128, 0);
    let removed = w.remove(old).expect("live");
    assert_eq!((removed.id, removed.in_flight), (old, 1));
    let new = w.insert(B, N1, 64, 10);
    assert_eq!(new.slot(), old.slot(), "the slot is reused");
    assert_ne!(new, old);
    assert_eq!(w.get(old), None);
    assert_eq!(w.remove(old), None);
    assert_eq!(w.release(old, 11), Err(WarmError::UnknownContext(old)));
    assert_eq!(w.acquire(old, 11), Err(WarmError::UnknownContext(old)));
    assert_eq!(w.get(new).map(|c| c.app), Some(B));
    assert_eq!(format!("{old} {new}"), "ctx-0.0 ctx-0.1");
    check_invariants(&w);
}

#[test]
fn errors_name_the_context() {
    let mut w = WarmContexts::new(1);
    let c = w.insert(A, N0, 1, 0);
    w.release(c, 1).expect("in flight");
    let cases = [
        (
            w.release(c, 2),
            "execution context ctx-0.0 has no invocation in flight to release",
        ),
        (
            w.release(ContextId(7), 2),
            "unknown execution context ctx-7.0",
        ),
    ];
    for (got, message) in cases {
        assert_eq!(got.map_err(|e| e.to_string()), Err(message.to_string()));
    }
    w.acquire(c, 3).expect("idle");
    assert_eq!(
        w.acquire(c, 4).map_err(|e| e.to_string()),
        Err("execution context ctx-0.0 already runs 1 invocations (the limit)".to_string())
    );
}

#[test]
fn memory_and_node_membership() {
    let mut w = WarmContexts::new(1);
    let a = w.insert(A, N0, 100, 0);
    let b = w.insert(B, N0, 200, 0);
    let c = w.insert(A, N1, 400, 0);
    assert_eq!(
        (w.memory_on(N0), w.memory_on(N1), w.memory_on(NodeId(5))),
        (300, 400, 0)
    );
    w.release(b, 1).expect("in flight");
    w.remove(a);
    assert_eq!(w.memory_on(N0), 200); // 300 - 100
    assert_eq!(ids(w.contexts_on(N0).map(|x| x.id)), vec![b]);
    let drained = w.drain_node(N0);
    assert_eq!(drained.iter().map(|x| x.id).collect::<Vec<_>>(), vec![b]);
    assert_eq!((w.memory_on(N0), w.len(), w.idle_total()), (0, 1, 0));
    assert_eq!((w.count_of(A), w.count_of(B)), (1, 0));
    assert_eq!(w.get(c).map(|x| x.node), Some(N1));
    check_invariants(&w);
}

#[derive(Debug, Clone)]
enum Op {
    Insert { app: u8, node: u8, memory: u16 },
    Acquire { app: u8 },
    AcquireOn { app: u8, node: u8 },
    Release { pick: prop::sample::Index },
    Remove { pick: prop::sample::Index },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, 0u8..3, 1u16..512).prop_map(|(app, node, memory)| Op::Insert {
            app,
            node,
            memory
        }),
        (0u8..4).prop_map(|app| Op::Acquire { app }),
        (0u8..4, 0u8..3).prop_map(|(app, node)| Op::AcquireOn { app, node }),
        any::<prop::sample::Index>().prop_map(|pick| Op::Release { pick }),
        any::<prop::sample::Index>().prop_map(|pick| Op::Remove { pick }),
    ]
}

proptest! {
    /// Against a model: never beyond the concurrency limit, removed contexts never come back,
    /// LIFO choice among contexts with room, and every index stays consistent.
    #[test]
    fn model_check(concurrency in 1u32..4, ops in proptest::collection::vec(op(), 1..200)) {
        let mut w = WarmContexts::new(concurrency);
        // id -> (app, node, in_flight, last_touch) for live contexts.
        let mut model: HashMap<ContextId, (AppId, NodeId, u32, u64)> = HashMap::new();
        let mut removed: HashSet<ContextId> = HashSet::new();
        for (t, op) in ops.into_iter().enumerate() {
            let now = t as u64;
            let mut live: Vec<ContextId> = model.keys().copied().collect();
            live.sort();
            match op {
                Op::Insert { app, node, memory } => {
                    let (app, node) = (AppId(app.into()), NodeId(node.into()));
                    let id = w.insert(app, node, memory.into(), now);
                    prop_assert!(!removed.contains(&id) && !model.contains_key(&id));
                    model.insert(id, (app, node, 1, now));
                }
                Op::Acquire { app } | Op::AcquireOn { app, .. } => {
                    let app = AppId(app.into());
                    let on = if let Op::AcquireOn { node, .. } = op { Some(NodeId(node.into())) } else { None };
                    let got = match on {
                        Some(node) => w.acquire_idle_on(app, node, now),
                        None => w.acquire_idle(app, now),
                    };
                    let candidates = model.iter().filter(|(_, m)| {
                        m.0 == app && m.2 < concurrency && on.is_none_or(|n| m.1 == n)
                    });
                    let newest = candidates.map(|(_, m)| m.3).max();
                    match got {
                        Some(id) => {
                            prop_assert!(!removed.contains(&id), "removed {id} handed out");
                            let m = model.get_mut(&id).expect("handed out a live context");
                            prop_assert!(m.2 < concurrency, "{id} handed out beyond its limit");
                            prop_assert_eq!(Some(m.3), newest, "not the most recently used");
                            m.2 += 1;
                            m.3 = now;
                        }
                        None => prop_assert_eq!(newest, None),
                    }
                }
                Op::Release { pick } if !live.is_empty() => {
                    let id = live[pick.index(live.len())];
                    let m = model.get_mut(&id).expect("live");
                    let result = w.release(id, now);
                    if m.2 == 0 {
                        prop_assert_eq!(result, Err(WarmError::NotInFlight(id)));
                    } else {
                        prop_assert_eq!(result, Ok(()));
                        m.2 -= 1;
                        m.3 = now;
                    }
                }
                Op::Remove { pick } if !live.is_empty() => {
                    let id = live[pick.index(live.len())];
                    prop_assert_eq!(w.remove(id).map(|c| c.id), Some(id));
                    model.remove(&id);
                    removed.insert(id);
                }
                Op::Release { .. } | Op::Remove { .. } => {}
            }
            check_invariants(&w);
            prop_assert_eq!(w.len(), model.len());
            for id in &removed {
                prop_assert!(w.get(*id).is_none());
            }
            for (id, m) in &model {
                let ctx = w.get(*id).expect("live in the model");
                prop_assert_eq!((ctx.app, ctx.node, ctx.in_flight, ctx.last_used_us), *m);
            }
        }
    }
}
