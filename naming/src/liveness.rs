//! Node liveness from heartbeats: a node is alive while its last heartbeat is at most
//! `timeout_us` old.
//!
//! A node never heard from (or forgotten) is not alive. Heartbeats that arrive out of order never
//! move a node's last-seen time backwards. The table is a dense vector indexed by `NodeId.0`
//! (node ids are dense, see [`crate::catalog`]).

use crate::NodeId;

/// Last heartbeat per node and the silence after which a node counts as dead.
#[derive(Debug, Clone)]
pub struct Liveness {
    timeout_us: u64,
    last_seen: Vec<Option<u64>>,
}

impl Liveness {
    /// A node is dead once `now_us > last heartbeat + timeout_us`.
    pub fn new(timeout_us: u64) -> Self {
        Self {
            timeout_us,
            last_seen: Vec::new(),
        }
    }

    pub fn timeout_us(&self) -> u64 {
        self.timeout_us
    }

    /// Records a heartbeat of `node` at `now_us`.
    pub fn heartbeat(&mut self, node: NodeId, now_us: u64) {
        let i = node.0 as usize;
        if self.last_seen.len() <= i {
            self.last_seen.resize(i + 1, None);
        }
        let seen = &mut self.last_seen[i];
        *seen = Some(seen.map_or(now_us, |t| t.max(now_us)));
    }

    /// Whether `node` heartbeated within the timeout before `now_us` (a heartbeat stamped after
    /// `now_us` counts as fresh).
    pub fn is_alive(&self, node: NodeId, now_us: u64) -> bool {
        self.last_seen(node)
            .is_some_and(|t| now_us.saturating_sub(t) <= self.timeout_us)
    }

    /// Nodes heard from once (and not forgotten) that are no longer alive, in id order.
    pub fn dead(&self, now_us: u64) -> Vec<NodeId> {
        self.dead_iter(now_us).collect()
    }

    /// [`Liveness::dead`] without the allocation.
    pub fn dead_iter(&self, now_us: u64) -> impl Iterator<Item = NodeId> + '_ {
        self.known()
            .filter(move |&(_, t)| now_us.saturating_sub(t) > self.timeout_us)
            .map(|(n, _)| n)
    }

    /// Nodes alive at `now_us`, in id order.
    pub fn alive_iter(&self, now_us: u64) -> impl Iterator<Item = NodeId> + '_ {
        self.known()
            .filter(move |&(_, t)| now_us.saturating_sub(t) <= self.timeout_us)
            .map(|(n, _)| n)
    }

    fn known(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.last_seen
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.map(|t| (NodeId(i as u32), t)))
    }

    /// Drops `node` (it left the cluster): it is neither alive nor dead until it heartbeats again.
    pub fn forget(&mut self, node: NodeId) {
        if let Some(seen) = self.last_seen.get_mut(node.0 as usize) {
            *seen = None;
        }
    }

    /// The newest heartbeat of `node`, microseconds.
    pub fn last_seen(&self, node: NodeId) -> Option<u64> {
        self.last_seen.get(node.0 as usize).copied().flatten()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn alive_within_timeout() {
        let mut l = Liveness::new(1_000);
        let (n0, n1, n2) = (NodeId(0), NodeId(1), NodeId(2));
        l.heartbeat(n0, 10_000);
        l.heartbeat(n2, 10_500);
        // (node, now, alive): alive while now - last <= 1000.
        let table = [
            (n0, 10_000, true),  // 0 after its heartbeat
            (n0, 11_000, true),  // 11000 - 10000 = 1000 <= 1000
            (n0, 11_001, false), // 1001 > 1000
            (n0, 9_000, true),   // a heartbeat "from the future" is fresh
            (n1, 10_000, false), // never seen
            (n2, 11_500, true),  // 11500 - 10500 = 1000
            (n2, 11_501, false),
        ];
        for (node, now, alive) in table {
            assert_eq!(l.is_alive(node, now), alive, "{node} at {now}");
        }
        assert_eq!(l.dead(11_200), vec![n0]); // n0 silent 1200, n2 700, n1 unknown
        assert_eq!(l.alive_iter(11_200).collect::<Vec<_>>(), vec![n2]);
        assert_eq!(l.dead(12_000), vec![n0, n2]);
    }

    #[test]
    fn late_heartbeats_do_not_go_back_and_forget_clears() {
        let mut l = Liveness::new(100);
        let n = NodeId(4);
        l.heartbeat(n, 500);
        l.heartbeat(n, 300); // delivered late
        assert_eq!(l.last_seen(n), Some(500));
        assert!(l.is_alive(n, 600)); // 600 - 500 = 100
        l.forget(n);
        l.forget(NodeId(99)); // unknown: no effect
        assert_eq!(l.last_seen(n), None);
        assert!(!l.is_alive(n, 500));
        assert!(l.dead(10_000).is_empty());
        assert_eq!(l.timeout_us(), 100);
    }

    proptest! {
        /// Every node heard from is either alive or dead, never both.
        #[test]
        fn alive_and_dead_partition_known_nodes(
            beats in proptest::collection::vec((0u32..20, 0u64..10_000), 0..60),
            now in 0u64..12_000,
            timeout in 0u64..3_000,
        ) {
            let mut l = Liveness::new(timeout);
            for &(n, t) in &beats {
                l.heartbeat(NodeId(n), t);
            }
            let dead = l.dead(now);
            let alive: Vec<_> = l.alive_iter(now).collect();
            let mut known: Vec<u32> = beats.iter().map(|&(n, _)| n).collect();
            known.sort_unstable();
            known.dedup();
            prop_assert_eq!(dead.len() + alive.len(), known.len());
            for n in dead {
                prop_assert!(!l.is_alive(n, now));
            }
            for n in alive {
                let newest = beats.iter().filter(|b| b.0 == n.0).map(|b| b.1).max();
                prop_assert_eq!(l.last_seen(n), newest);
                prop_assert!(l.is_alive(n, now));
            }
        }
    }
}
