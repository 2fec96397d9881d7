//! The scheduler's view of the cluster: what each node can take right now.
//!
//! Live, it is rebuilt from every statistics message a node agent pushes ([`NodeView::reconcile`]:
//! the node's report of what it holds, plus the reservations it does not show yet), and moved
//! between messages by the placements and completions; in the simulator, by the engine as
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

/// What a node agent reported of itself in one statistics message: its truth.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeReport {
    /// The invocations it holds (waiting or running), by id, once per invocation.
    pub running: Vec<u64>,
    /// Sum of its cores' busy fractions over the last interval.
    pub busy_cores: f64,
    /// Work waiting in its run queues.
    pub queued: u32,
    /// Memory of its execution contexts, busy or idle (compute nodes), MiB.
    pub contexts_mb: u64,
    /// The part of `contexts_mb` held by idle contexts.
    pub idle_contexts_mb: u64,
    /// Pre-created part sets ready for assembly (compute nodes; `None`: the node has none).
    pub pool_ready: Option<u32>,
}

/// A reservation the scheduler holds on a node, with the invocation it was made for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Held {
    pub invocation: u64,
    pub reservation: Reservation,
}

impl NodeView {
    /// Rebuilds the node's load from its `report` and the reservations the scheduler holds on
    /// it (`held`: every one made for this node and not yet given back), so no error of the
    /// incremental updates between reports outlives the next one.
    ///
    /// - An invocation the report lists counts once, with the report's state of it: its
    ///   context's memory is in the report's, its backlog is its reservation's estimate (or
    ///   `work_per_request_us` for one the scheduler does not hold: placed by a previous
    ///   scheduler process, or given up by its caller while the node still runs it).
    /// - A held reservation the report does not list counts in full (load, backlog, a new
    ///   context's memory, the warm context or pool part it takes): it is on its way to the
    ///   node, or its answer is on its way back. Either way the reservation's guard gives it
    ///   back when the call ends, so this lasts one call, never longer.
    /// - What keeps the cores busy beyond the invocations listed (data requests from
    ///   elsewhere) becomes `remote_requests`, each costed at `work_per_request_us`.
    pub fn reconcile(&mut self, report: &NodeReport, held: &[Held], work_per_request_us: f64) {
        let per_request = work_per_request_us.max(0.0);
        let mut listed: std::collections::HashMap<u64, u32> =
            std::collections::HashMap::with_capacity(report.running.len());
        for &id in &report.running {
            *listed.entry(id).or_default() += 1;
        }
        let reported = u32::try_from(report.running.len()).unwrap_or(u32::MAX);
        let (mut load, mut backlog, mut matched) = (reported, 0.0, 0u32);
        let (mut new_mb, mut warm_taken_mb, mut parts_taken) = (0u64, 0u64, 0u32);
        for h in held {
            let r = &h.reservation;
            backlog += r.work_us.max(0.0);
            match listed.get_mut(&h.invocation) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    matched += 1;
                }
                _ => {
                    load += 1;
                    new_mb += u64::from(r.memory_mb);
                    warm_taken_mb += u64::from(r.warm_mb);
                    parts_taken += u32::from(r.pool_part);
                }
            }
        }
        backlog += f64::from(reported - matched) * per_request;
        let occupied = report.busy_cores.max(0.0).round() as u32 + report.queued;
        self.remote_requests = occupied.saturating_sub(reported);
        backlog += f64::from(self.remote_requests) * per_request;
        self.load = load;
        self.backlog_us = backlog;
        self.memory_used_mb = report.contexts_mb + new_mb;
        self.memory_idle_mb = report
            .idle_contexts_mb
            .min(report.contexts_mb)
            .saturating_sub(warm_taken_mb);
        if let Some(ready) = report.pool_ready {
            self.pool_ready = ready.saturating_sub(parts_taken);
        }
    }
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NODE: NodeId = NodeId(0);
    const PER_REQUEST_US: f64 = 10.0;

    fn reservation(work_us: f64, memory_mb: u32, warm_mb: u32, pool_part: bool) -> Reservation {
        Reservation {
            node: NODE,
            memory_mb,
            warm_mb,
            pool_part,
            work_us,
        }
    }

    fn held(invocation: u64, r: Reservation) -> Held {
        Held {
            invocation,
            reservation: r,
        }
    }

    #[test]
    fn a_report_and_the_reservations_it_does_not_show_make_the_view() {
        let mut node = NodeView::new(NODE, NodeRole::Compute, 2, 4096);
        // Whatever the incremental updates left is overwritten.
        node.load = 40;
        node.memory_used_mb = 9_999;
        node.backlog_us = 1e9;
        let report = NodeReport {
            // 1 is the scheduler's and running there; 2 runs for a caller that gave up.
            running: vec![1, 2],
            busy_cores: 2.0,
            queued: 1,
            contexts_mb: 384,
            idle_contexts_mb: 128,
            pool_ready: Some(3),
        };
        let holds = [
            held(1, reservation(100.0, 256, 0, true)),
            // On its way: a new container from a pool part, and a warm one's reuse.
            held(3, reservation(50.0, 512, 0, true)),
            held(4, reservation(20.0, 0, 128, false)),
        ];
        node.reconcile(&report, &holds, PER_REQUEST_US);
        assert_eq!(node.load, 4, "1 and 2 as reported, 3 and 4 on their way");
        // Estimates of 1, 3 and 4, the per-request cost of 2, and one unit of work beyond the
        // listed invocations (2 busy cores + 1 queued = 3 against 2 listed).
        assert_eq!(node.remote_requests, 1);
        assert!((node.backlog_us - (170.0 + 10.0 + 10.0)).abs() < 1e-9);
        assert_eq!(
            node.memory_used_mb,
            384 + 512,
            "1's container is in the report"
        );
        assert_eq!(node.memory_idle_mb, 0, "4 takes the idle container");
        assert_eq!(
            node.pool_ready, 2,
            "3 takes a part; 1's was taken before the report"
        );
    }

    /// One step of the property test's interleaving.
    #[derive(Debug, Clone)]
    enum Step {
        /// The scheduler places an invocation (work, a new context's memory: 0 = none).
        Place(u16, u8),
        /// The nth placed call not at the node yet arrives there.
        Arrive(usize),
        /// The nth invocation the node runs finishes there.
        Finish(usize),
        /// The nth call the node answered gets its answer to the scheduler.
        Answer(usize),
        /// The nth held call ends without an answer (client deadline, cancel, dropped stream).
        Cancel(usize),
        /// The node's agent restarts: it holds nothing, keeps no context.
        Restart,
        /// The node reports.
        Report,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (1u16..500, 0u8..4).prop_map(|(w, m)| Step::Place(w, m)),
            3 => any::<usize>().prop_map(Step::Arrive),
            3 => any::<usize>().prop_map(Step::Finish),
            2 => any::<usize>().prop_map(Step::Answer),
            1 => any::<usize>().prop_map(Step::Cancel),
            1 => Just(Step::Restart),
            2 => Just(Step::Report),
        ]
    }

    /// A call as the scheduler holds it.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Where {
        OnItsWay,
        AtNode,
        Answered,
    }

    /// The node agent: what it holds, and its contexts (memory, running in it).
    #[derive(Debug, Default)]
    struct Agent {
        running: Vec<u64>,
        contexts: Vec<(u64, u32, bool)>,
    }

    impl Agent {
        fn report(&self) -> NodeReport {
            NodeReport {
                running: self.running.clone(),
                busy_cores: self.running.len().min(2) as f64,
                queued: self.running.len().saturating_sub(2) as u32,
                contexts_mb: self.contexts.iter().map(|c| u64::from(c.1)).sum(),
                idle_contexts_mb: self
                    .contexts
                    .iter()
                    .filter(|c| !c.2)
                    .map(|c| u64::from(c.1))
                    .sum(),
                pool_ready: Some(4),
            }
        }
    }

    proptest! {
        /// Any interleaving of placements, arrivals, completions, cancellations, restarts and
        /// reports: after every report the view counts exactly the node's invocations and the
        /// held calls it does not show, and once every call has ended and the node reported,
        /// the view is the node's truth.
        #[test]
        fn the_view_returns_to_the_nodes_truth(steps in prop::collection::vec(step(), 0..120)) {
            let mut view = ClusterView::new(vec![NodeView::new(NODE, NodeRole::Compute, 2, 1 << 20)]);
            let mut agent = Agent::default();
            let mut calls: Vec<(u64, Reservation, Where)> = Vec::new();
            let mut next_id = 1;
            let pick = |calls: &[(u64, Reservation, Where)], w: Where, n: usize| {
                let idx: Vec<usize> = (0..calls.len()).filter(|&i| calls[i].2 == w).collect();
                (!idx.is_empty()).then(|| idx[n % idx.len()])
            };
            let holds = |calls: &[(u64, Reservation, Where)]| -> Vec<Held> {
                calls.iter().map(|&(id, r, _)| held(id, r)).collect()
            };
            for s in steps {
                match s {
                    Step::Place(work, memory) => {
                        let r = reservation(f64::from(work), u32::from(memory) * 64, 0, false);
                        view.reserve(r);
                        calls.push((next_id, r, Where::OnItsWay));
                        next_id += 1;
                    }
                    Step::Arrive(n) => {
                        if let Some(i) = pick(&calls, Where::OnItsWay, n) {
                            let (id, r, _) = calls[i];
                            agent.running.push(id);
                            if r.memory_mb > 0 {
                                agent.contexts.push((id, r.memory_mb, true));
                            }
                            calls[i].2 = Where::AtNode;
                        }
                    }
                    Step::Finish(n) => {
                        if agent.running.is_empty() {
                            continue;
                        }
                        let id = agent.running.remove(n % agent.running.len());
                        for c in agent.contexts.iter_mut().filter(|c| c.0 == id) {
                            c.2 = false;
                        }
                        if let Some(call) = calls.iter_mut().find(|c| c.0 == id) {
                            call.2 = Where::Answered;
                        }
                    }
                    Step::Answer(n) => {
                        if let Some(i) = pick(&calls, Where::Answered, n) {
                            let (_, r, _) = calls.remove(i);
                            view.complete(r.node, r.work_us);
                        }
                    }
                    Step::Cancel(n) => {
                        if !calls.is_empty() {
                            let (_, r, _) = calls.remove(n % calls.len());
                            view.unreserve(r);
                        }
                    }
                    Step::Restart => {
                        agent = Agent::default();
                        // Calls at the node fail as their stream breaks; those on their way
                        // will arrive at the new agent.
                        calls.retain(|c| c.2 == Where::OnItsWay);
                    }
                    Step::Report => {
                        let report = agent.report();
                        view.node_mut(NODE).unwrap().reconcile(&report, &holds(&calls), PER_REQUEST_US);
                        let node = view.node(NODE).unwrap();
                        let unlisted = calls
                            .iter()
                            .filter(|c| !agent.running.contains(&c.0))
                            .count();
                        prop_assert_eq!(node.load as usize, agent.running.len() + unlisted);
                        prop_assert!(node.memory_used_mb >= report.contexts_mb);
                    }
                }
            }
            // Every call ends, the node finishes what it runs, and reports.
            for (_, r, _) in calls.drain(..) {
                view.unreserve(r);
            }
            agent.running.clear();
            for c in &mut agent.contexts {
                c.2 = false;
            }
            let report = agent.report();
            view.node_mut(NODE).unwrap().reconcile(&report, &[], PER_REQUEST_US);
            let node = view.node(NODE).unwrap();
            prop_assert_eq!(node.load, 0);
            prop_assert_eq!(node.remote_requests, 0);
            prop_assert!(node.backlog_us.abs() < 1e-9);
            prop_assert_eq!(node.memory_used_mb, report.contexts_mb);
            prop_assert_eq!(node.memory_idle_mb, report.contexts_mb);
            prop_assert_eq!(node.pool_ready, 4);
        }
    }
}
