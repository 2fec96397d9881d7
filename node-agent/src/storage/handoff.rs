//! The storage node's side of a key-ring membership change: which of its keys move out, the
//! writes to them since the move began, and the refusals that keep a moved key from being
//! written (or read) here once another node owns it.
//!
//! The scheduler drives every move (`scheduler/src/service/rebalance.rs`) through the
//! `Handoff` service: it begins one here, copies the moving keys as they are ([`super::store::Store::export`])
//! to their new owners, then copies again what changed meanwhile ([`Handoff::take_changed`])
//! until little is left, seals (new writes to moving keys are refused), copies the last
//! changes, switches ownership in its own durable store, and finishes (reads are refused too).
//! A write is remembered here when it becomes visible, after it is durable, so a value copied
//! from the map is never older than one already acknowledged. Nothing here is durable: a node
//! that restarts forgets its moves, answers NOT_FOUND for them, and the scheduler starts again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rustc_hash::FxHashSet;
use sandstorm_naming::ring::{KeyRing, key_hash};
use sandstorm_naming::{NodeId, TenantId};

/// One move out of this node.
#[derive(Debug)]
pub struct Handoff {
    pub id: u64,
    me: NodeId,
    before: KeyRing,
    after: KeyRing,
    sealed: AtomicBool,
    finished: AtomicBool,
    /// Moving keys that became visible since the move began or since the last `take_changed`.
    changed: Mutex<FxHashSet<(TenantId, Box<[u8]>)>>,
}

impl Handoff {
    /// The move `id` of node `me` from the ring of `before` to the ring of `after`.
    pub fn new(id: u64, me: NodeId, before: &[u32], after: &[u32], vnodes: u32) -> Self {
        let ring = |ids: &[u32]| KeyRing::with_nodes(vnodes, ids.iter().map(|&n| NodeId(n)));
        Self {
            id,
            me,
            before: ring(before),
            after: ring(after),
            sealed: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            changed: Mutex::default(),
        }
    }

    /// Whether it describes the same move as a request naming these rings.
    pub fn same(&self, me: NodeId, before: &[u32], after: &[u32]) -> bool {
        let ids = |r: &KeyRing| r.nodes().iter().map(|n| n.0).collect::<Vec<_>>();
        let sorted = |s: &[u32]| {
            let mut v = s.to_vec();
            v.sort_unstable();
            v.dedup();
            v
        };
        self.me == me && ids(&self.before) == sorted(before) && ids(&self.after) == sorted(after)
    }

    /// The new owner of `key` of `tenant` if it moves out of this node.
    pub fn destination(&self, tenant: TenantId, key: &[u8]) -> Option<NodeId> {
        let hash = key_hash(tenant, key);
        if self.before.owner_of_hash(hash) != Some(self.me) {
            return None;
        }
        self.after.owner_of_hash(hash).filter(|&to| to != self.me)
    }

    pub fn seal(&self) {
        self.sealed.store(true, Ordering::SeqCst);
    }

    pub fn finish(&self) {
        self.seal();
        self.finished.store(true, Ordering::SeqCst);
    }

    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::SeqCst)
    }

    /// Whether a write to `key` must be refused: it is sealed and the key moves.
    pub fn refuses_write(&self, tenant: TenantId, key: &[u8]) -> Option<NodeId> {
        if !self.is_sealed() {
            return None;
        }
        self.destination(tenant, key)
    }

    /// Whether a read of `key` must be refused: ownership switched and the key moved.
    pub fn refuses_read(&self, tenant: TenantId, key: &[u8]) -> Option<NodeId> {
        if !self.finished.load(Ordering::SeqCst) {
            return None;
        }
        self.destination(tenant, key)
    }

    /// `key` now holds what it will be copied with: remember it if it moves.
    pub fn note_visible(&self, tenant: TenantId, key: &[u8]) {
        if self.destination(tenant, key).is_some() {
            self.changed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((tenant, key.into()));
        }
    }

    /// Whether any moving key was written since the last `take_changed`.
    pub fn has_changed(&self) -> bool {
        !self
            .changed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Up to `limit` keys written since the last call, forgotten here.
    pub fn take_changed(&self, limit: usize) -> Vec<(TenantId, Box<[u8]>)> {
        let mut changed = self.changed.lock().unwrap_or_else(|e| e.into_inner());
        let taken: Vec<_> = changed.iter().take(limit).cloned().collect();
        for k in &taken {
            changed.remove(k);
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_owned_before_and_not_after_move() {
        // Node 0 alone, then node 1 joins: about half of node 0's keys move, all to node 1.
        let join = Handoff::new(1, NodeId(0), &[0], &[0, 1], 64);
        // Node 1 looks at the same move: it owned nothing before, so nothing moves out of it.
        let other = Handoff::new(1, NodeId(1), &[0], &[0, 1], 64);
        let mut moving = 0;
        for i in 0..2_000 {
            let key = format!("k{i}");
            if let Some(to) = join.destination(TenantId(1), key.as_bytes()) {
                assert_eq!(to, NodeId(1));
                moving += 1;
            }
            assert_eq!(other.destination(TenantId(1), key.as_bytes()), None);
        }
        assert!((500..1_500).contains(&moving), "{moving} of 2000 moved");
        // Draining node 0 out of {0, 1} moves every key it holds.
        let drain = Handoff::new(2, NodeId(0), &[0, 1], &[1], 64);
        let key = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| join.destination(TenantId(1), k.as_bytes()).is_none())
            .expect("a key that stays on node 0 when node 1 joins");
        assert_eq!(
            drain.destination(TenantId(1), key.as_bytes()),
            Some(NodeId(1))
        );
        assert!(drain.same(NodeId(0), &[1, 0], &[1]));
        assert!(!drain.same(NodeId(0), &[0, 1], &[0]));
    }

    #[test]
    fn seal_refuses_writes_and_finish_reads_of_moving_keys_only() {
        let h = Handoff::new(1, NodeId(0), &[0], &[0, 1], 64);
        let moving = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| h.destination(TenantId(1), k.as_bytes()).is_some())
            .expect("a moving key");
        let staying = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| h.destination(TenantId(1), k.as_bytes()).is_none())
            .expect("a staying key");
        let (m, s) = (moving.as_bytes(), staying.as_bytes());
        h.note_visible(TenantId(1), m);
        h.note_visible(TenantId(1), s);
        assert_eq!(h.take_changed(10), vec![(TenantId(1), m.into())]);
        assert!(h.take_changed(10).is_empty());
        assert_eq!(h.refuses_write(TenantId(1), m), None);
        h.seal();
        assert_eq!(h.refuses_write(TenantId(1), m), Some(NodeId(1)));
        assert_eq!(h.refuses_write(TenantId(1), s), None);
        assert_eq!(h.refuses_read(TenantId(1), m), None);
        h.finish();
        assert_eq!(h.refuses_read(TenantId(1), m), Some(NodeId(1)));
        assert_eq!(h.refuses_read(TenantId(1), s), None);
    }
}
