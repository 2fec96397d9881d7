//! Host queues, under `[cluster] admission = "queue"`: an invocation that no node can take (no
//! compute node has a warm context of its app with room, nor memory for a new one) waits at one
//! compute host, FIFO, as DSLab FaaS's invoker queues it, instead of being rejected.
//!
//! The host is the first compute node under `first-fit` (DSLab's basic scheduler falls back to
//! host 0) and otherwise the one with the fewest waiting, the first of those on a tie; only a
//! node whose whole memory could hold the app's context is chosen (none: rejected, as it could
//! never run). Whenever an invocation finishes on a host, the host walks its queue in order and
//! starts every waiting invocation it now can (a warm context of its app with room, or memory
//! free or held by idle contexts to evict), keeping the rest in order, as DSLab's invoker does.
//! A queued invocation counts as a cold start when it starts, whatever context it gets: it
//! waited for capacity as a cold start waits for its container. Its wait, arrival to start, is
//! in the report's `queue_wait_us`.

use std::collections::VecDeque;

use sandstorm_cost_model::{Candidate, StartKind, Tier, estimate};
use sandstorm_naming::{FunctionId, NodeId};
use sandstorm_placement::{Choice, Policy, Reservation};

use super::Engine;

/// An invocation waiting at a host.
#[derive(Debug, Clone, Copy)]
pub(super) struct Waiting {
    pub function: FunctionId,
    pub duration_us: u64,
    pub arrival_us: u64,
}

impl Engine<'_> {
    /// Queue an invocation no node could take; false when no host could ever run it.
    pub(super) fn enqueue(&mut self, waiting: Waiting, memory_mb: u32) -> bool {
        let fits = |n: u32| {
            self.view
                .node(NodeId(n))
                .is_some_and(|v| v.memory_mb >= u64::from(memory_mb))
        };
        let compute = self.cfg.cluster.storage_nodes..self.view.len() as u32;
        let host = if self.cfg.policy == Policy::FirstFit {
            compute.clone().find(|&n| fits(n))
        } else {
            compute
                .filter(|&n| fits(n))
                .min_by_key(|&n| self.queues.get(n as usize).map_or(0, VecDeque::len))
        };
        let Some(host) = host else { return false };
        let n = host as usize;
        if self.queues.len() <= n {
            self.queues.resize_with(n + 1, VecDeque::new);
        }
        self.queues[n].push_back(waiting);
        self.metrics.queued += 1;
        true
    }

    /// Start, in order, every invocation waiting at `node` that it can now take.
    pub(super) fn dequeue(&mut self, node: NodeId) {
        let n = node.0 as usize;
        let Some(queue) = self.queues.get_mut(n).filter(|q| !q.is_empty()) else {
            return;
        };
        let mut waiting = std::mem::take(queue);
        let mut kept = VecDeque::with_capacity(waiting.len());
        while let Some(w) = waiting.pop_front() {
            if !self.start_waiting(node, w) {
                kept.push_back(w);
            }
            if self.full(node) {
                kept.append(&mut waiting);
            }
        }
        // Starting an invocation never queues another at this node, so nothing joined meanwhile.
        self.queues[n] = kept;
    }

    /// Whether `node` can start nothing now: one invocation per context, no idle context and no
    /// free memory. Stops a walk of a long queue at once instead of trying every entry (an app
    /// needing no memory never queues: it always passes the placement's memory filter).
    fn full(&self, node: NodeId) -> bool {
        self.cfg.concurrency <= 1
            && self
                .view
                .node(node)
                .is_some_and(|v| v.memory_free_mb() + v.memory_idle_mb == 0)
    }

    /// Invocations still waiting (the run ended with them queued).
    pub(super) fn still_waiting(&self) -> u64 {
        self.queues.iter().map(|q| q.len() as u64).sum()
    }

    /// Start `w` on `node` if it can take it now: reserve what the placement would have
    /// reserved there and run it as placed.
    fn start_waiting(&mut self, node: NodeId, w: Waiting) -> bool {
        let app = self.app_of(w.function);
        let memory_mb =
            self.trace.apps[self.trace.functions[w.function.0 as usize].app.0 as usize].memory_mb;
        let Some(view) = self.view.node(node) else {
            return false;
        };
        let start = if self.warm.has_idle_on(app, node) {
            StartKind::Warm
        } else if view.memory_free_mb() + view.memory_idle_mb >= u64::from(memory_mb) {
            if view.pool_ready > 0 {
                StartKind::Assembled
            } else {
                StartKind::Cold
            }
        } else {
            return false;
        };
        let params = self.placer.config().params;
        let cost = estimate(
            &params,
            &self.profiler.workload(w.function),
            &Candidate {
                tier: Tier::Compute,
                start,
                queue_us: 0.0,
                local_fraction: 0.0,
            },
        );
        let new_container = start != StartKind::Warm;
        let reservation = Reservation {
            node,
            memory_mb: if new_container { memory_mb } else { 0 },
            warm_mb: if new_container { 0 } else { memory_mb },
            pool_part: start == StartKind::Assembled,
            work_us: cost.compute_cpu_us,
        };
        self.view.reserve(reservation);
        let choice = Choice {
            node,
            tier: Tier::Compute,
            start,
            cost,
            objective: 0.0,
            reservation: Some(reservation),
        };
        self.metrics.waited(self.now - w.arrival_us);
        let truth = self.truth(w.function, w.duration_us);
        let home = self.data_home(w.function, &truth);
        self.start_placed(
            w.function,
            app,
            &choice,
            &truth,
            home,
            memory_mb,
            w.arrival_us,
            true,
        );
        true
    }
}
