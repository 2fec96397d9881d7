//! Execution contexts in a run: obtaining one for an invocation (warm, assembled or cold),
//! keep-alive actions and timers, pre-warms, eviction under memory pressure, and the reuse
//! order of idle contexts.

use sandstorm_cost_model::StartKind;
use sandstorm_naming::warm::ContextId;
use sandstorm_naming::{AppId, NodeId};
use sandstorm_placement::keepalive::{IdleAction, IdleContext};
use sandstorm_placement::{ClusterView, Policy};

use super::{ContextExtra, Engine, Event, ReuseOrder};

impl Engine<'_> {
    /// Get a context of `app` on compute `node` as the placement decided; returns it, how it was
    /// really obtained, and any wait for it to be ready.
    pub(super) fn obtain_context(
        &mut self,
        app: AppId,
        node: NodeId,
        start: StartKind,
        memory_mb: u32,
    ) -> (ContextId, StartKind, u64) {
        let pick = match self.cfg.reuse {
            ReuseOrder::MostRecent => self.warm.acquire_idle_on(app, node, self.now),
            ReuseOrder::FirstInSet => self.acquire_first_in_set(app, node),
        };
        if start == StartKind::Warm
            && let Some(id) = pick
        {
            let ready = self.extra_of(id).ready_us;
            if ready > self.now {
                // A pre-warm still starting: the invocation waits for it, and it counts as
                // cold, as it would to the user.
                return (id, StartKind::Cold, ready - self.now);
            }
            return (id, StartKind::Warm, 0);
        }
        let start = if start == StartKind::Warm {
            StartKind::Cold
        } else {
            start
        };
        self.make_room(node);
        let id = self.warm.insert(app, node, memory_mb, self.now);
        *self.extra_mut(id) = ContextExtra::default();
        if self.cfg.reuse == ReuseOrder::FirstInSet {
            // Deploying with its invocation reserved: in the set, not eligible, until it starts.
            self.free_order.entry((app, node)).or_default().push(id);
        }
        if start == StartKind::Assembled {
            let refill = self.now.saturating_add(self.cfg.pool_refill_us);
            self.schedule(refill, Event::PoolRefill(node));
        }
        (id, start, 0)
    }

    /// Evict idle contexts on `node` (the keep-alive policy's victims) until what the placement
    /// reserved fits.
    pub(super) fn make_room(&mut self, node: NodeId) {
        let over = |v: &ClusterView| v.node(node).is_some_and(|n| n.memory_used_mb > n.memory_mb);
        while over(&self.view) {
            let idle: Vec<IdleContext> = self
                .warm
                .idle_on(node)
                .map(|c| self.idle_info(c.id))
                .collect();
            let Some(victim) = self.cfg.keep_alive.victim(&idle) else {
                break;
            };
            self.destroy(ContextId(idle[victim].id));
        }
    }

    /// Start a pre-warmed context of `app`: on `preferred` (where the unloaded one was) if it
    /// fits there, else on the first compute node with room. Under `first-fit` always on the
    /// first compute node with room, as DSLab FaaS's `BasicDeployer` places its pre-warms.
    pub(super) fn prewarm(&mut self, app: AppId, preferred: NodeId, memory_mb: u32) {
        let fits = |e: &Self, n: NodeId| {
            e.view
                .node(n)
                .is_some_and(|v| v.memory_free_mb() >= u64::from(memory_mb))
        };
        let node = if self.cfg.policy != Policy::FirstFit && fits(self, preferred) {
            Some(preferred)
        } else {
            (self.cfg.cluster.storage_nodes..self.view.len() as u32)
                .map(NodeId)
                .find(|n| fits(self, *n))
        };
        let Some(node) = node else { return };
        let id = self.warm.insert(app, node, memory_mb, self.now);
        self.view.context_prewarmed(node, memory_mb);
        let ready = self
            .now
            .saturating_add(self.placer.config().params.container_cold_us as u64);
        // Idle from the start, usable (with a wait) by an invocation that arrives meanwhile.
        let _ = self.warm.release(id, ready);
        if self.cfg.reuse == ReuseOrder::FirstInSet {
            self.free_order.entry((app, node)).or_default().push(id);
        }
        *self.extra_mut(id) = ContextExtra {
            ready_us: ready,
            ..ContextExtra::default()
        };
        self.schedule(ready, Event::PrewarmReady(id));
    }

    pub(super) fn apply_idle_action(&mut self, id: ContextId, action: IdleAction) {
        match action {
            IdleAction::KeepUntil(until) if until <= self.now => self.destroy(id),
            IdleAction::KeepUntil(until) => {
                let extra = self.extra_mut(id);
                extra.expires_us = until;
                if extra.timer_us.is_none_or(|t| t > until) {
                    extra.timer_us = Some(until);
                    self.schedule(until, Event::Expire(id));
                }
            }
            IdleAction::KeepUntilEvicted => self.extra_mut(id).expires_us = u64::MAX,
            IdleAction::UnloadAndPrewarm { at_us } => {
                if let Some(ctx) = self.warm.get(id) {
                    let (app, node, memory_mb) = (ctx.app, ctx.node, ctx.memory_mb);
                    let arrivals_then = self.app_arrivals[app.0 as usize];
                    self.destroy(id);
                    self.schedule(
                        at_us,
                        Event::Prewarm {
                            app,
                            node,
                            memory_mb,
                            arrivals_then,
                        },
                    );
                }
            }
            IdleAction::Destroy => self.destroy(id),
        }
    }

    pub(super) fn expire(&mut self, id: ContextId) {
        let Some(idle) = self.warm.get(id).map(|c| c.in_flight == 0) else {
            return;
        };
        let now = self.now;
        let extra = self.extra_mut(id);
        if extra.timer_us != Some(now) {
            return; // superseded by an earlier timer that re-armed
        }
        extra.timer_us = None;
        if !idle || extra.expires_us == u64::MAX {
            return;
        }
        if extra.expires_us <= now {
            self.destroy(id);
        } else {
            let at = extra.expires_us;
            extra.timer_us = Some(at);
            self.schedule(at, Event::Expire(id));
        }
    }

    /// [`ReuseOrder::FirstInSet`]: the first idle context of the set that is ready, else the
    /// one ready soonest (a pre-warm still starting); it leaves the set by swap-removal.
    pub(super) fn acquire_first_in_set(&mut self, app: AppId, node: NodeId) -> Option<ContextId> {
        let now = self.now;
        let list = self.free_order.get_mut(&(app, node))?;
        let mut best: Option<(usize, u64)> = None;
        for (i, id) in list.iter().enumerate() {
            if self.warm.get(*id).is_none_or(|c| c.in_flight > 0) {
                continue;
            }
            let slot = (id.0 as u32) as usize;
            let ready = self
                .extra
                .get(slot)
                .map_or(0, |e| e.ready_us)
                .saturating_sub(now);
            if best.is_none_or(|(_, r)| ready < r) {
                best = Some((i, ready));
                if ready == 0 {
                    break; // the first ready one: nothing later in the set can beat it
                }
            }
        }
        let (i, _) = best?;
        let id = list.swap_remove(i);
        self.warm.acquire(id, now).ok()?;
        Some(id)
    }

    /// [`ReuseOrder::FirstInSet`]: `id` leaves its set (it got busy or was destroyed).
    pub(super) fn leave_set(&mut self, app: AppId, node: NodeId, id: ContextId) {
        if let Some(list) = self.free_order.get_mut(&(app, node))
            && let Some(i) = list.iter().position(|x| *x == id)
        {
            list.swap_remove(i);
        }
    }

    pub(super) fn destroy(&mut self, id: ContextId) {
        let info = self.idle_info(id);
        if let Some((app, node)) = self.warm.get(id).map(|c| (c.app, c.node)) {
            self.leave_set(app, node, id);
        }
        if let Some(ctx) = self.warm.remove(id) {
            self.view
                .context_destroyed(ctx.node, ctx.memory_mb, ctx.in_flight == 0);
            self.cfg.keep_alive.on_destroy(&info);
        }
    }

    pub(super) fn idle_info(&self, id: ContextId) -> IdleContext {
        let ctx = self.warm.get(id);
        let extra = self
            .extra
            .get((id.0 as u32) as usize)
            .copied()
            .unwrap_or_default();
        IdleContext {
            id: id.0,
            app: ctx.map_or(AppId(0), |c| c.app),
            node: ctx.map_or(NodeId(0), |c| c.node),
            memory_mb: ctx.map_or(0, |c| c.memory_mb),
            last_used_us: ctx.map_or(0, |c| c.last_used_us),
            first_idle_us: extra.first_idle_us.unwrap_or(self.now),
        }
    }

    pub(super) fn extra_of(&self, id: ContextId) -> ContextExtra {
        self.extra
            .get((id.0 as u32) as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Sim-side facts of a context, indexed by its slot (the low half of its id).
    pub(super) fn extra_mut(&mut self, id: ContextId) -> &mut ContextExtra {
        let slot = (id.0 as u32) as usize;
        if self.extra.len() <= slot {
            self.extra.resize(slot + 1, ContextExtra::default());
        }
        &mut self.extra[slot]
    }
}
