//! The scheduler's view of the cluster: what each node can take right now.
//!
//! Live, it is fed by the per-core statistics node agents push; in the simulator, by the engine as
//! invocations start and finish. Either way the placement core reads it and changes it only
//! through [`ClusterView::reserve`] / [`ClusterView::unreserve`] and the completion calls, so the
//! two drivers cannot disagree on what a reservation means.

use sandstorm_naming::{NodeId, NodeRole};

/// One node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub id: NodeId,
    pub role: NodeRole,
    pub cores: u32,
    /// Invocations placed on the node and not finished: running plus waiting for a core.
    pub load: u32,
    pub memory_mb: u64,
    /// Memory held by the node's execution contexts, busy or idle.
    pub memory_used_mb: u64,
    /// The part of `memory_used_mb` held by idle contexts: reclaimable by evicting them.
    pub memory_idle_mb: u64,
    /// False once liveness declared the node dead; dead nodes are filtered out.
    pub alive: bool,
    /// Estimated core time of the work placed on the node and not finished (running and
    /// waiting), from the reservations' estimates; what a new invocation would queue behind.
    pub backlog_us: f64,
    /// Data requests from invocations elsewhere being served here (storage nodes): they share
    /// the cores but are not invocations, so they count in the backlog, not in `load`.
    pub remote_requests: u32,
    /// Pre-created container part sets ready for assembly (compute nodes).
    pub pool_ready: u32,
    /// Position among the nodes of the same role (0..n), set by [`ClusterView::new`].
    pub ordinal: u32,
}

impl NodeView {
    pub fn new(id: NodeId, role: NodeRole, cores: u32, memory_mb: u64) -> Self {
        Self {
            id,
            role,
            cores,
            load: 0,
            memory_mb,
            memory_used_mb: 0,
            memory_idle_mb: 0,
            alive: true,
            backlog_us: 0.0,
            remote_requests: 0,
            pool_ready: 0,
            ordinal: 0,
        }
    }

    /// Expected wait for a core if one more invocation arrives now: the invocations ahead of it
    /// beyond the free cores, served `cores` at a time at the mean service time.
    ///
    /// With a free core it is 0; otherwise the node's backlog shared over its cores. Work-based,
    /// not count-based, so a node holding a few long jobs looks as busy as it is: with a mix of
    /// 30 us and 2 ms invocations a count times a mean service time misjudges both.
    pub fn queue_us(&self) -> f64 {
        if self.load + self.remote_requests < self.cores {
            return 0.0;
        }
        self.backlog_us.max(0.0) / f64::from(self.cores.max(1))
    }

    /// Fraction of cores busy, 0..1 (waiting invocations count as a full node).
    pub fn utilisation(&self) -> f64 {
        (f64::from(self.load) / f64::from(self.cores.max(1))).min(1.0)
    }

    pub fn memory_free_mb(&self) -> u64 {
        self.memory_mb.saturating_sub(self.memory_used_mb)
    }
}

/// What a placement holds on its node until the invocation completes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reservation {
    pub node: NodeId,
    /// Memory for a new execution context (0 when a warm one is reused or on a storage node).
    /// When the node's free memory is short, the driver evicts idle contexts to make room.
    pub memory_mb: u32,
    /// Memory of the idle warm context taken (0 if none): no longer reclaimable while busy.
    pub warm_mb: u32,
    /// Whether a pooled part set was taken.
    pub pool_part: bool,
    /// Estimated core time the work will take on the node (added to its backlog).
    pub work_us: f64,
}

/// Every node, indexed by `NodeId.0`.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    nodes: Vec<NodeView>,
    compute_nodes: u32,
}

impl ClusterView {
    /// A view of `nodes`; their ids must be `0..n` in order.
    pub fn new(mut nodes: Vec<NodeView>) -> Self {
        debug_assert!(nodes.iter().enumerate().all(|(i, n)| n.id.0 as usize == i));
        let (mut storage, mut compute) = (0, 0);
        for node in &mut nodes {
            let counter = if node.role == NodeRole::Storage {
                &mut storage
            } else {
                &mut compute
            };
            node.ordinal = *counter;
            *counter += 1;
        }
        Self {
            nodes,
            compute_nodes: compute,
        }
    }

    /// How many compute nodes the view holds (alive or not).
    pub fn compute_nodes(&self) -> u32 {
        self.compute_nodes
    }

    pub fn nodes(&self) -> &[NodeView] {
        &self.nodes
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeView> {
        self.nodes.get(id.0 as usize)
    }

    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut NodeView> {
        self.nodes.get_mut(id.0 as usize)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Hold the node's capacity for a placed invocation.
    pub fn reserve(&mut self, r: Reservation) {
        if let Some(n) = self.nodes.get_mut(r.node.0 as usize) {
            n.load += 1;
            n.backlog_us += r.work_us;
            n.memory_used_mb += u64::from(r.memory_mb);
            n.memory_idle_mb = n.memory_idle_mb.saturating_sub(u64::from(r.warm_mb));
            if r.pool_part {
                n.pool_ready = n.pool_ready.saturating_sub(1);
            }
        }
    }

    /// Give back a reservation whose invocation never ran (the node failed, the dispatch was
    /// refused). The pool part, if one was taken, is gone either way.
    pub fn unreserve(&mut self, r: Reservation) {
        if let Some(n) = self.nodes.get_mut(r.node.0 as usize) {
            n.load = n.load.saturating_sub(1);
            n.backlog_us = (n.backlog_us - r.work_us).max(0.0);
            n.memory_used_mb = n.memory_used_mb.saturating_sub(u64::from(r.memory_mb));
            n.memory_idle_mb += u64::from(r.warm_mb);
        }
    }

    /// A data request of an invocation running elsewhere arrived at storage `node`.
    pub fn remote_request(&mut self, node: NodeId, work_us: f64) {
        if let Some(n) = self.nodes.get_mut(node.0 as usize) {
            n.remote_requests += 1;
            n.backlog_us += work_us;
        }
    }

    /// A data request served at `node` finished.
    pub fn remote_request_done(&mut self, node: NodeId, work_us: f64) {
        if let Some(n) = self.nodes.get_mut(node.0 as usize) {
            n.remote_requests = n.remote_requests.saturating_sub(1);
            n.backlog_us = (n.backlog_us - work_us).max(0.0);
        }
    }

    /// Work reserved on `node` with an estimate of `work_us` finished.
    pub fn complete(&mut self, node: NodeId, work_us: f64) {
        if let Some(n) = self.nodes.get_mut(node.0 as usize) {
            n.load = n.load.saturating_sub(1);
            n.backlog_us = (n.backlog_us - work_us).max(0.0);
        }
    }

    /// A context of `memory_mb` on `node` fell idle: its memory becomes reclaimable.
    pub fn context_idle(&mut self, node: NodeId, memory_mb: u32) {
        if let Some(n) = self.nodes.get_mut(node.0 as usize) {
            n.memory_idle_mb = (n.memory_idle_mb + u64::from(memory_mb)).min(n.memory_used_mb);
        }
    }

    /// A context was created outside a placement (a pre-warm), idle from the start.
    pub fn context_prewarmed(&mut self, node: NodeId, memory_mb: u32) {
        if let Some(n) = self.nodes.get_mut(node.0 as usize) {
            n.memory_used_mb += u64::from(memory_mb);
            n.memory_idle_mb += u64::from(memory_mb);
        }
    }

    /// A context on `node` was destroyed (it was idle if `idle`), freeing its memory.
    pub fn context_destroyed(&mut self, node: NodeId, memory_mb: u32, idle: bool) {
        if let Some(n) = self.nodes.get_mut(node.0 as usize) {
            n.memory_used_mb = n.memory_used_mb.saturating_sub(u64::from(memory_mb));
            if idle {
                n.memory_idle_mb = n.memory_idle_mb.saturating_sub(u64::from(memory_mb));
            }
        }
    }
}
