//! Warm containers on compute nodes, as the scheduler infers them from invocation records.
//!
//! A compute node keeps one container per function, shared by that function's concurrent
//! invocations (SAND's two levels: each invocation is a process forked inside it), and reclaims
//! it once it has been idle for the node's keep-alive window (announced when the node
//! registers). So after an invocation of `f` ran on compute node `n`, a new invocation of `f` on
//! `n` starts warm until the keep-alive window has passed since that run started; this table
//! remembers when that was, per (function, node), and answers which nodes are warm for a
//! function now: the placement request's `warm` list.
//!
//! With a cluster keep-alive policy (`sandstorm scheduler --keep-alive`), the policy decides
//! instead ([`super::keep_alive`]): the table runs it as invocations end and keeps the window it
//! gave each container, and the caller sends the policy's orders to the nodes.
//!
//! It is an inference, corrected from the node's side at every statistics message, which lists
//! the containers the node keeps ([`WarmTable::reconcile`]): an entry whose container the node
//! no longer reports is forgotten (reclaimed, or lost with a restart), and a reported container
//! the table did not know (made before this scheduler started) is entered. An entry also goes
//! when the function is redeployed or removed (the node drops the old version's container). A wrong guess costs one estimate, not correctness:
//! the node reports the start kind it really had, and the record carries both.
//!
//! Pure: time comes in as arguments (the scheduler's microsecond clock).

use std::collections::{HashMap, HashSet};

use sandstorm_naming::{AppId, FunctionId, NodeId};

use super::keep_alive::{Ended, LiveKeepAlive, Order, Prewarm, Window};
use crate::keepalive::KeepAliveSpec;

/// The keep-alive window assumed for a node that did not announce one (docs/design.md's baseline).
pub const DEFAULT_KEEP_ALIVE_US: u64 = 600_000_000;

/// When each (function, compute node) container was last used, and each node's window.
#[derive(Debug, Default)]
pub struct WarmTable {
    /// Start of the last invocation that ran in the container, scheduler clock.
    last_used_us: HashMap<(FunctionId, NodeId), u64>,
    /// Keep-alive window per node, microseconds.
    keep_alive_us: HashMap<NodeId, u64>,
    /// Containers the re-provisioner had a node keep whatever their idle time.
    pinned: HashSet<(FunctionId, NodeId)>,
    /// The cluster's keep-alive policy, if one was chosen, and the window it gave each container
    /// (in place of its node's).
    policy: Option<LiveKeepAlive>,
    windows: HashMap<(FunctionId, NodeId), Window>,
}

impl WarmTable {
    /// A table whose containers live as `policy` says (`None`: as their nodes' own windows say).
    /// Its orders are numbered from `first_seq`.
    pub fn with_policy(policy: Option<KeepAliveSpec>, first_seq: u64) -> Self {
        Self {
            policy: policy.map(|spec| LiveKeepAlive::new(spec, first_seq)),
            ..Self::default()
        }
    }

    /// The cluster's keep-alive policy, by name, if it has one.
    pub fn policy_name(&self) -> Option<String> {
        self.policy.as_ref().map(LiveKeepAlive::name)
    }

    /// A compute invocation `ended`: the cluster policy's order for its container (none without
    /// a policy), and the pre-warm it asks for.
    pub fn finished(&mut self, ended: &Ended) -> (Option<Order>, Option<Prewarm>) {
        let Some(policy) = &mut self.policy else {
            return (None, None);
        };
        let (order, prewarm) = policy.finished(ended);
        let end_us = ended.end_us;
        let changed = self.note(&order, end_us);
        (changed.then_some(order), prewarm)
    }

    /// A pre-warm is due at `at_us`: the order to make it, unless it is no longer wanted.
    pub fn prewarm_due(
        &mut self,
        function: FunctionId,
        app: AppId,
        node: NodeId,
        memory_mb: u32,
        at_us: u64,
    ) -> Option<Order> {
        let order = self
            .policy
            .as_mut()?
            .prewarm_due(function, app, node, memory_mb, at_us)?;
        self.note(&order, at_us);
        Some(order)
    }

    /// A new container of `function` needs `needed_mb` more than `node` has free: the policy's
    /// orders reclaiming the idle containers that make room (none without a policy).
    pub fn make_room(&mut self, node: NodeId, function: FunctionId, needed_mb: u64) -> Vec<Order> {
        let Some(policy) = &mut self.policy else {
            return Vec::new();
        };
        let orders = policy.make_room(node, function, needed_mb);
        for order in &orders {
            self.note(order, 0);
        }
        orders
    }

    /// What an order does to the table; whether it changes what the node was told (the same
    /// window again need not be sent).
    fn note(&mut self, order: &Order, now_us: u64) -> bool {
        let key = (order.function, order.node);
        if order.window == Window::IdleFor(0) && !order.prewarm {
            self.last_used_us.remove(&key);
            self.windows.remove(&key);
            return true;
        }
        let changed = self.windows.insert(key, order.window) != Some(order.window);
        if order.prewarm {
            self.used(order.function, order.node, now_us);
        }
        changed || order.prewarm
    }

    /// Node `node` keeps idle containers for `keep_alive_us` (0: the default).
    pub fn set_keep_alive(&mut self, node: NodeId, keep_alive_us: u64) {
        let window = if keep_alive_us == 0 {
            DEFAULT_KEEP_ALIVE_US
        } else {
            keep_alive_us
        };
        self.keep_alive_us.insert(node, window);
    }

    /// Node `node` keeps a warm container of each of `functions` (the applied plan), replacing
    /// what it kept before.
    pub fn pin(&mut self, node: NodeId, functions: &[FunctionId]) {
        self.pinned.retain(|(_, n)| *n != node);
        self.pinned.extend(functions.iter().map(|&f| (f, node)));
    }

    /// An invocation of `function` ran on compute node `node`, starting at `started_us`.
    pub fn used(&mut self, function: FunctionId, node: NodeId, started_us: u64) {
        let last = self.last_used_us.entry((function, node)).or_insert(0);
        *last = (*last).max(started_us);
    }

    /// Whether `function`'s container on `node` is still inside its keep-alive window at `now_us`.
    pub fn is_warm(&self, function: FunctionId, node: NodeId, now_us: u64) -> bool {
        let window = match self.windows.get(&(function, node)) {
            Some(Window::IdleFor(window)) => *window,
            Some(Window::UntilEvicted) => u64::MAX,
            None => self.node_window(node),
        };
        self.pinned.contains(&(function, node))
            || self
                .last_used_us
                .get(&(function, node))
                .is_some_and(|&last| now_us.saturating_sub(last) < window)
    }

    fn node_window(&self, node: NodeId) -> u64 {
        self.keep_alive_us
            .get(&node)
            .copied()
            .unwrap_or(DEFAULT_KEEP_ALIVE_US)
    }

    /// The nodes where `function` has a warm container at `now_us`, in node order.
    pub fn warm_nodes(&self, function: FunctionId, now_us: u64) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .last_used_us
            .keys()
            .chain(&self.pinned)
            .filter(|(f, n)| *f == function && self.is_warm(*f, *n, now_us))
            .map(|(_, n)| *n)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Node `node` reported keeping a container of each of `present` at `now_us`: entries for
    /// others are forgotten, and reported ones the table did not know count as used now.
    pub fn reconcile(&mut self, node: NodeId, present: &[FunctionId], now_us: u64) {
        self.last_used_us
            .retain(|(f, n), _| *n != node || present.contains(f));
        for &f in present {
            self.last_used_us.entry((f, node)).or_insert(now_us);
        }
    }

    /// Containers the table holds warm on `node` at `now_us`.
    pub fn warm_on(&self, node: NodeId, now_us: u64) -> usize {
        let mut functions: Vec<FunctionId> = self
            .last_used_us
            .keys()
            .chain(&self.pinned)
            .filter(|(f, n)| *n == node && self.is_warm(*f, *n, now_us))
            .map(|(f, _)| *f)
            .collect();
        functions.sort_unstable();
        functions.dedup();
        functions.len()
    }

    /// The node lost its containers (it restarted).
    pub fn forget_node(&mut self, node: NodeId) {
        self.last_used_us.retain(|(_, n), _| *n != node);
        self.pinned.retain(|(_, n)| *n != node);
        self.windows.retain(|(_, n), _| *n != node);
        if let Some(policy) = &mut self.policy {
            policy.forget_node(node);
        }
    }

    /// The function was redeployed or removed: its containers are gone everywhere.
    pub fn forget_function(&mut self, function: FunctionId) {
        self.last_used_us.retain(|(f, _), _| *f != function);
        self.pinned.retain(|(f, _)| *f != function);
        self.windows.retain(|(f, _), _| *f != function);
        if let Some(policy) = &mut self.policy {
            policy.forget_function(function);
        }
    }

    /// Drops entries past their window (keeps the table small).
    pub fn expire(&mut self, now_us: u64) {
        let expired: Vec<_> = self
            .last_used_us
            .keys()
            .filter(|(f, n)| !self.is_warm(*f, *n, now_us))
            .copied()
            .collect();
        for key in expired {
            self.last_used_us.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_is_warm_for_the_nodes_keep_alive_window_after_its_last_use() {
        let (f, g) = (FunctionId(1), FunctionId(2));
        let (a, b) = (NodeId(3), NodeId(4));
        let mut warm = WarmTable::default();
        warm.set_keep_alive(a, 1_000);
        warm.set_keep_alive(b, 0); // the default window
        warm.used(f, a, 100);
        warm.used(f, b, 200);
        warm.used(g, a, 300);
        // (now, warm nodes of f): a's window is 1,000 us from its use at 100.
        let table = [(150, vec![a, b]), (1_099, vec![a, b]), (1_100, vec![b])];
        for (now, nodes) in table {
            assert_eq!(warm.warm_nodes(f, now), nodes, "at {now}");
        }
        // A later use extends the window; an earlier report does not shorten it.
        warm.used(f, a, 2_000);
        warm.used(f, a, 1_500);
        assert!(warm.is_warm(f, a, 2_999));
        assert!(!warm.is_warm(f, a, 3_000));
        warm.forget_node(a);
        assert_eq!(warm.warm_nodes(f, 2_100), vec![b]);
        assert!(warm.warm_nodes(g, 400).is_empty());
        warm.forget_function(f);
        assert!(warm.warm_nodes(f, 2_100).is_empty());
        warm.used(g, b, 10);
        warm.expire(DEFAULT_KEEP_ALIVE_US + 10);
        assert!(
            warm.warm_nodes(g, 11).is_empty(),
            "expired entries are dropped"
        );
    }

    #[test]
    fn with_a_policy_a_container_is_warm_for_the_window_the_policy_gave_it() {
        let (f, g) = (FunctionId(1), FunctionId(2));
        let a = NodeId(3);
        let s = 1_000_000;
        let spec = |text| Some(KeepAliveSpec::parse(text).expect("a policy"));
        // Greedy-dual: kept past the node's own window, until evicted.
        let mut warm = WarmTable::with_policy(spec("greedy-dual"), 100);
        warm.set_keep_alive(a, 1_000);
        warm.used(f, a, 0);
        let (order, _) = warm.finished(&Ended {
            function: f,
            app: AppId(1),
            node: a,
            memory_mb: 128,
            arrival_us: 0,
            end_us: 10,
            start_cost_us: 50_000.0,
        });
        let order = order.expect("the first window is sent");
        assert_eq!((order.window, order.seq), (Window::UntilEvicted, 101));
        assert!(warm.is_warm(f, a, 1_000 * s));
        // The same window again is not sent again.
        warm.used(f, a, 20);
        assert_eq!(
            warm.finished(&Ended {
                function: f,
                app: AppId(1),
                node: a,
                memory_mb: 128,
                arrival_us: 20,
                end_us: 30,
                start_cost_us: 50_000.0
            })
            .0,
            None
        );
        // Evicted to make room for g: cold from then on.
        let evicted = warm.make_room(a, g, 64);
        assert_eq!(evicted.len(), 1);
        assert!(!warm.is_warm(f, a, 40));
        // Fixed lifetime: the window shrinks as uses go by, and is gone past it.
        let mut warm = WarmTable::with_policy(spec("fixed-lifetime:10s"), 0);
        for (at, window) in [(0, Some(10 * s)), (4 * s, Some(6 * s)), (11 * s, Some(0))] {
            warm.used(f, a, at);
            let (order, _) = warm.finished(&Ended {
                function: f,
                app: AppId(1),
                node: a,
                memory_mb: 128,
                arrival_us: at,
                end_us: at,
                start_cost_us: 50_000.0,
            });
            assert_eq!(
                order.map(|o| o.window),
                window.map(Window::IdleFor),
                "at {at}"
            );
        }
        assert!(!warm.is_warm(f, a, 11 * s));
        // Without a policy nothing is sent: the node's own window applies.
        let mut warm = WarmTable::default();
        assert_eq!(
            warm.finished(&Ended {
                function: f,
                app: AppId(1),
                node: a,
                memory_mb: 128,
                arrival_us: 0,
                end_us: 0,
                start_cost_us: 1.0
            }),
            (None, None)
        );
        assert_eq!(warm.policy_name(), None);
    }

    #[test]
    fn a_pinned_container_stays_warm_until_the_plan_or_the_node_drops_it() {
        let (f, g) = (FunctionId(1), FunctionId(2));
        let a = NodeId(3);
        let mut warm = WarmTable::default();
        warm.set_keep_alive(a, 1_000);
        warm.pin(a, &[f, g]);
        assert_eq!(warm.warm_nodes(f, 1_000_000), vec![a]);
        warm.used(f, a, 10);
        assert_eq!(warm.warm_nodes(f, 20), vec![a], "one entry per node");
        warm.pin(a, &[g]);
        assert!(!warm.is_warm(f, a, 1_000_000));
        assert!(warm.is_warm(g, a, 1_000_000));
        warm.forget_function(g);
        assert!(!warm.is_warm(g, a, 0));
        warm.pin(a, &[f]);
        warm.forget_node(a);
        assert!(!warm.is_warm(f, a, 0));
    }
}
