//! The cluster's keep-alive policy, run over the live compute nodes.
//!
//! The scheduler owns one keep-alive policy for the cluster (`sandstorm scheduler --keep-alive
//! POLICY`): the very [`KeepAlive`] code the simulator runs (`crate::keepalive`). A compute node
//! keeps one warm container per function, so here a context is a (function, compute node). When
//! an invocation ends the policy hears of it (`on_use`, `on_finish`, fed from the execution
//! records the profiler learns from) and says what becomes of the container now idle
//! (`on_idle`). Each answer is an [`Order`] for the node: reclaim the container once it has been
//! idle so long since its last use ([`Window::IdleFor`]; 0 is now), or keep it until told
//! otherwise ([`Window::UntilEvicted`]); the hybrid policy's pre-warm is an order, at its time,
//! to assemble a container before any invocation needs it. When a new container would take a
//! node past its memory, the policy's `victim`s make room.
//!
//! Without `--keep-alive` there is no policy here: each compute node reclaims by its own fixed
//! window (`sandstorm agent --keep-alive-secs`), as before.
//!
//! [`LiveKeepAlive`] is pure: time comes in as arguments (the scheduler's microsecond clock).
//! [`Scheduler::send_keep_alive`] sends its orders (`SetKeepAlive`) and wakes it for pre-warms.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sandstorm_naming::{AppId, FunctionId, NodeId};
use sandstorm_proto::v1 as pb;
use tracing::{debug, warn};

use super::state::Scheduler;
use crate::keepalive::{IdleAction, IdleContext, IdleReason, KeepAlive, KeepAliveSpec};

/// How long a node keeps a function's idle container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Reclaim it once it has been idle this long since its last use, microseconds (0: as soon
    /// as it is idle).
    IdleFor(u64),
    /// Keep it until told otherwise.
    UntilEvicted,
}

/// What one compute node is told about one function's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    pub function: FunctionId,
    pub node: NodeId,
    pub window: Window,
    /// Assemble a container first if it has none (a pre-warm).
    pub prewarm: bool,
    /// Increases with every order: a node applies an order only if it is newer than the last
    /// it applied for the function (orders travel on separate calls and may overtake).
    pub seq: u64,
}

/// A pre-warm the policy asked for: call [`LiveKeepAlive::prewarm_due`] at `at_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prewarm {
    pub function: FunctionId,
    pub node: NodeId,
    pub at_us: u64,
}

/// A live container as the policy sees it.
#[derive(Debug, Clone, Copy)]
struct Live {
    id: u64,
    app: AppId,
    memory_mb: u32,
    last_used_us: u64,
    first_idle_us: Option<u64>,
}

/// A compute invocation that ended, as the keep-alive policy hears of it.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    pub function: FunctionId,
    pub app: AppId,
    /// The compute node it ran on.
    pub node: NodeId,
    /// Its container's memory.
    pub memory_mb: u32,
    pub arrival_us: u64,
    pub end_us: u64,
    /// What starting its container from nothing costs there.
    pub start_cost_us: f64,
}

/// The cluster's policy and the containers it decides about.
#[derive(Debug)]
pub struct LiveKeepAlive {
    policy: Box<dyn KeepAlive>,
    contexts: HashMap<(FunctionId, NodeId), Live>,
    /// Pre-warms not yet done, by the time they are due; dropped when the function runs there
    /// before.
    prewarms: HashMap<(FunctionId, NodeId), u64>,
    next_id: u64,
    next_seq: u64,
}

impl LiveKeepAlive {
    /// The policy `spec` names, with nothing seen yet; its orders are numbered from `first_seq`
    /// (above any a previous scheduler process sent: its start time, say).
    pub fn new(spec: KeepAliveSpec, first_seq: u64) -> Self {
        Self {
            policy: spec.policy(),
            contexts: HashMap::new(),
            prewarms: HashMap::new(),
            next_id: 0,
            next_seq: first_seq,
        }
    }

    /// The policy's name (`fixed:10m`, `hybrid`, ...).
    pub fn name(&self) -> String {
        self.policy.name()
    }

    /// A compute invocation `ended`: the order for its container, and the pre-warm to schedule,
    /// if the policy unloads it until then.
    pub fn finished(&mut self, ended: &Ended) -> (Order, Option<Prewarm>) {
        let Ended {
            function,
            app,
            node,
            memory_mb,
            arrival_us,
            end_us,
            start_cost_us,
        } = *ended;
        let key = (function, node);
        self.prewarms.remove(&key);
        let next_id = &mut self.next_id;
        let live = self.contexts.entry(key).or_insert_with(|| {
            *next_id += 1;
            Live {
                id: *next_id,
                app,
                memory_mb,
                last_used_us: end_us,
                first_idle_us: None,
            }
        });
        live.memory_mb = memory_mb;
        let info = idle_context(live, node, end_us);
        self.policy.on_use(&info, start_cost_us);
        self.policy.on_finish(app, function, arrival_us, end_us);
        live.last_used_us = end_us;
        live.first_idle_us.get_or_insert(end_us);
        let info = idle_context(live, node, end_us);
        let action = self.policy.on_idle(&info, IdleReason::Finished, end_us);
        self.apply(key, action, end_us, false)
    }

    /// The pre-warm scheduled for `at_us` is due: the order to assemble the container and how
    /// long to keep it, unless the function ran there since (or the pre-warm was superseded).
    pub fn prewarm_due(
        &mut self,
        function: FunctionId,
        app: AppId,
        node: NodeId,
        memory_mb: u32,
        at_us: u64,
    ) -> Option<Order> {
        let key = (function, node);
        if self.prewarms.get(&key) != Some(&at_us) {
            return None;
        }
        self.prewarms.remove(&key);
        self.next_id += 1;
        let live = Live {
            id: self.next_id,
            app,
            memory_mb,
            last_used_us: at_us,
            first_idle_us: Some(at_us),
        };
        self.contexts.insert(key, live);
        let action = self.policy.on_idle(
            &idle_context(&live, node, at_us),
            IdleReason::Prewarmed,
            at_us,
        );
        let (order, _) = self.apply(key, action, at_us, true);
        Some(order)
    }

    /// A new container needing `needed_mb` more than `node` has free is going there: the
    /// containers the policy reclaims to make room (its victims, in its order), never
    /// `function`'s own.
    pub fn make_room(&mut self, node: NodeId, function: FunctionId, needed_mb: u64) -> Vec<Order> {
        let mut orders = Vec::new();
        let mut freed = 0u64;
        while freed < needed_mb {
            let idle: Vec<(FunctionId, IdleContext)> = self
                .contexts
                .iter()
                .filter(|((f, n), _)| *n == node && *f != function)
                .map(|(&(f, _), live)| (f, idle_context(live, node, live.last_used_us)))
                .collect();
            let contexts: Vec<IdleContext> = idle.iter().map(|(_, c)| *c).collect();
            let Some(victim) = self.policy.victim(&contexts) else {
                break;
            };
            let (f, ctx) = idle[victim];
            freed += u64::from(ctx.memory_mb);
            self.destroy((f, node));
            self.next_seq += 1;
            orders.push(Order {
                function: f,
                node,
                window: Window::IdleFor(0),
                prewarm: false,
                seq: self.next_seq,
            });
        }
        orders
    }

    /// `node` lost its containers (it restarted, or reports none).
    pub fn forget_node(&mut self, node: NodeId) {
        let gone: Vec<_> = self
            .contexts
            .keys()
            .filter(|(_, n)| *n == node)
            .copied()
            .collect();
        for key in gone {
            self.destroy(key);
        }
        self.prewarms.retain(|(_, n), _| *n != node);
    }

    /// `function` was redeployed or removed: its containers are gone everywhere.
    pub fn forget_function(&mut self, function: FunctionId) {
        let gone: Vec<_> = self
            .contexts
            .keys()
            .filter(|(f, _)| *f == function)
            .copied()
            .collect();
        for key in gone {
            self.destroy(key);
        }
        self.prewarms.retain(|(f, _), _| *f != function);
    }

    fn apply(
        &mut self,
        key: (FunctionId, NodeId),
        action: IdleAction,
        now_us: u64,
        prewarm: bool,
    ) -> (Order, Option<Prewarm>) {
        let (function, node) = key;
        self.next_seq += 1;
        let seq = self.next_seq;
        let order = |window| Order {
            function,
            node,
            window,
            prewarm,
            seq,
        };
        match action {
            IdleAction::KeepUntil(until) if until > now_us => {
                (order(Window::IdleFor(until - now_us)), None)
            }
            IdleAction::KeepUntilEvicted => (order(Window::UntilEvicted), None),
            IdleAction::UnloadAndPrewarm { at_us } => {
                self.destroy(key);
                self.prewarms.insert(key, at_us);
                let prewarm = Prewarm {
                    function,
                    node,
                    at_us,
                };
                (order(Window::IdleFor(0)), Some(prewarm))
            }
            IdleAction::KeepUntil(_) | IdleAction::Destroy => {
                self.destroy(key);
                (order(Window::IdleFor(0)), None)
            }
        }
    }

    fn destroy(&mut self, key: (FunctionId, NodeId)) {
        if let Some(live) = self.contexts.remove(&key) {
            let info = idle_context(&live, key.1, live.last_used_us);
            self.policy.on_destroy(&info);
        }
    }
}

fn idle_context(live: &Live, node: NodeId, now_us: u64) -> IdleContext {
    IdleContext {
        id: live.id,
        app: live.app,
        node,
        memory_mb: live.memory_mb,
        last_used_us: live.last_used_us,
        first_idle_us: live.first_idle_us.unwrap_or(now_us),
    }
}

impl Scheduler {
    /// Sends the keep-alive policy's orders to their nodes, and schedules its pre-warm (the
    /// policy is asked again when it is due).
    pub(super) fn send_keep_alive(self: &Arc<Self>, orders: Vec<Order>, prewarm: Option<Prewarm>) {
        for order in orders {
            self.send_order(order);
        }
        let Some(p) = prewarm else { return };
        let this = self.clone();
        tokio::spawn(async move {
            let wait = p.at_us.saturating_sub(this.now_us());
            tokio::time::sleep(Duration::from_micros(wait)).await;
            let order = {
                let mut inner = this.lock();
                let Some(f) = inner.functions.get(&p.function) else {
                    return;
                };
                let (app, memory_mb) = (AppId(f.id.0), f.limits.memory_mb.max(1));
                inner
                    .warm
                    .prewarm_due(p.function, app, p.node, memory_mb, p.at_us)
            };
            if let Some(order) = order {
                this.send_order(order);
            }
        });
    }

    fn send_order(self: &Arc<Self>, order: Order) {
        let target = {
            let inner = self.lock();
            match (
                inner.functions.get(&order.function),
                inner.nodes.get(order.node.0 as usize),
            ) {
                (Some(f), Some(entry)) => Some((
                    entry.agent.clone(),
                    f.tenant,
                    f.name.clone(),
                    inner.node_name(order.node.0),
                )),
                _ => None,
            }
        };
        let Some((mut agent, tenant, name, node)) = target else {
            return;
        };
        let request = pb::SetKeepAliveRequest {
            function: Some(pb::FunctionRef {
                tenant: tenant.0,
                name: name.clone(),
            }),
            idle_us: match order.window {
                Window::IdleFor(us) => Some(us),
                Window::UntilEvicted => None,
            },
            prewarm: order.prewarm,
            seq: order.seq,
        };
        // A pre-warm assembles a container: as long as a deployment may take.
        let timeout = if order.prewarm {
            self.config.deploy_timeout
        } else {
            self.config.rpc_timeout
        };
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, agent.set_keep_alive(request)).await {
                Ok(Ok(r)) if r.get_ref().reclaimed > 0 => {
                    debug!(%node, function = %name, "keep-alive policy reclaimed its container");
                }
                Ok(Ok(_)) => {}
                Ok(Err(status)) => {
                    warn!(%node, function = %name, error = %status.message(), "keep-alive order refused");
                }
                Err(_) => warn!(%node, function = %name, "keep-alive order timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;
    const F: FunctionId = FunctionId(1);
    const G: FunctionId = FunctionId(2);
    const N: NodeId = NodeId(3);

    fn policy(spec: &str) -> LiveKeepAlive {
        LiveKeepAlive::new(KeepAliveSpec::parse(spec).expect("a policy"), 0)
    }

    fn run(
        p: &mut LiveKeepAlive,
        f: FunctionId,
        arrival: u64,
        end: u64,
    ) -> (Order, Option<Prewarm>) {
        p.finished(&Ended {
            function: f,
            app: AppId(f.0),
            node: N,
            memory_mb: 128,
            arrival_us: arrival,
            end_us: end,
            start_cost_us: 50_000.0,
        })
    }

    #[test]
    fn fixed_keeps_a_window_from_the_last_use_and_fixed_lifetime_from_the_first_idle() {
        let mut fixed = policy("fixed:10s");
        let mut lifetime = policy("fixed-lifetime:10s");
        for (at, fixed_window, lifetime_window) in [
            (0, 10 * S, 10 * S),
            (4 * S, 10 * S, 6 * S),
            (9 * S, 10 * S, S),
        ] {
            assert_eq!(
                run(&mut fixed, F, at, at).0.window,
                Window::IdleFor(fixed_window)
            );
            assert_eq!(
                run(&mut lifetime, F, at, at).0.window,
                Window::IdleFor(lifetime_window)
            );
        }
        // Past its lifetime: reclaimed as soon as it is idle, and the next one starts afresh.
        assert_eq!(
            run(&mut lifetime, F, 11 * S, 11 * S).0.window,
            Window::IdleFor(0)
        );
        assert_eq!(
            run(&mut lifetime, F, 12 * S, 12 * S).0.window,
            Window::IdleFor(10 * S)
        );
    }

    #[test]
    fn greedy_dual_keeps_until_memory_is_needed_and_then_evicts_the_cheapest() {
        let mut gd = policy("greedy-dual");
        // F used three times, G once: G's priority (frequency x cost / size) is the lowest.
        for at in 0..3 {
            assert_eq!(
                run(&mut gd, F, at * S, at * S).0.window,
                Window::UntilEvicted
            );
        }
        assert_eq!(run(&mut gd, G, 4 * S, 4 * S).0.window, Window::UntilEvicted);
        let victims: Vec<_> = gd
            .make_room(N, FunctionId(9), 100)
            .into_iter()
            .map(|o| (o.function, o.node, o.window, o.prewarm))
            .collect();
        assert_eq!(victims, [(G, N, Window::IdleFor(0), false)]);
        // Not a function's own container, and nothing when nothing is left to evict.
        assert!(gd.make_room(N, F, 100).is_empty());
        assert_eq!(gd.make_room(N, FunctionId(9), 200).len(), 1);
        assert!(gd.make_room(N, FunctionId(9), 100).is_empty());
    }

    #[test]
    fn hybrid_unloads_a_regular_function_and_prewarms_it_before_its_next_call() {
        let mut hybrid = policy("hybrid");
        // A function that comes back every 10 minutes: a representative histogram.
        let mut t = 0;
        let mut last = None;
        for _ in 0..20 {
            last = Some(run(&mut hybrid, F, t, t + S));
            t += 10 * 60 * S;
        }
        let (order, prewarm) = last.expect("ran");
        assert_eq!(order.window, Window::IdleFor(0), "unloaded");
        let prewarm = prewarm.expect("a pre-warm");
        let end = t - 10 * 60 * S + S;
        // Pre-warmed at the 5th percentile (the 9-10 minute bin's start) less 10%.
        assert_eq!(prewarm.at_us, end + 9 * 60 * S * 9 / 10);
        let order = hybrid
            .prewarm_due(F, AppId(1), N, 128, prewarm.at_us)
            .expect("due");
        assert!(order.prewarm);
        // Kept to the end of the 99th percentile's bin (9-10 minutes: idle 9 min 59 s) plus 10%.
        assert_eq!(order.window, Window::IdleFor(10 * 60 * S * 11 / 10));
        // Superseded: a second call of the same pre-warm does nothing.
        assert_eq!(hybrid.prewarm_due(F, AppId(1), N, 128, prewarm.at_us), None);
    }

    #[test]
    fn a_function_that_runs_before_its_prewarm_cancels_it() {
        let mut hybrid = policy("hybrid");
        let mut t = 0;
        let mut prewarm = None;
        for _ in 0..20 {
            prewarm = run(&mut hybrid, F, t, t + S).1;
            t += 10 * 60 * S;
        }
        let prewarm = prewarm.expect("a pre-warm");
        run(&mut hybrid, F, prewarm.at_us - S, prewarm.at_us - 1);
        assert_eq!(hybrid.prewarm_due(F, AppId(1), N, 128, prewarm.at_us), None);
    }
}
