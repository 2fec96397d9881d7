//! Warm execution contexts: which app has which live context on which node, busy or idle.
//!
//! A context belongs to an [`AppId`]: functions of one app share contexts (a catalog that gives
//! every function its own app makes them per function). A context has `in_flight` invocations;
//! it *has room* while `in_flight < concurrency` (the limit given to [`WarmContexts::new`]) and is
//! *idle* when `in_flight == 0`. With concurrency 1, the usual case, the two are the same. The
//! acquisition side ([`WarmContexts::acquire_idle`], [`WarmContexts::acquire_idle_on`],
//! [`WarmContexts::has_idle_on`], [`WarmContexts::idle_count`]) works on contexts with room; the
//! eviction side ([`WarmContexts::idle_iter`], [`WarmContexts::idle_on`]) yields only idle ones,
//! since a context with an invocation in flight cannot be evicted.
//!
//! Acquisition is LIFO: the context with room that was used (acquired or released) last is handed
//! out first, as real platforms do; it keeps the fewest contexts hot and lets the rest age into
//! eviction. Idle contexts are listed oldest first (by release order, which is last-use order as
//! long as callers pass non-decreasing times), the order an LRU evictor wants.
//!
//! Layout, for the simulator's hot path: contexts live in a slab (`Vec` + free list) addressed by
//! generation-tagged [`ContextId`]s, so a stale id never reaches a reused slot. Three intrusive
//! doubly linked lists thread through the slab: per app the contexts with room (MRU at the tail),
//! per node the idle contexts and globally the idle contexts (LRU at the head). Per node, a vector
//! of its contexts (swap-removed) backs [`WarmContexts::contexts_on`]. Every operation is O(1)
//! except `acquire_idle_on`/`has_idle_on`, which walk the app's contexts with room, and
//! allocation happens only when the slab or a per-app/per-node table grows.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{AppId, NodeId};

/// A warm execution context. The low 32 bits are its slab slot, the high 32 bits the slot's
/// generation; an id stays unique until one slot has been reused 2^32 times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContextId(pub u64);

impl ContextId {
    fn new(slot: u32, generation: u32) -> Self {
        Self(u64::from(generation) << 32 | u64::from(slot))
    }
    fn slot(self) -> u32 {
        self.0 as u32
    }
    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

impl fmt::Display for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ctx-{}.{}", self.slot(), self.generation())
    }
}

/// One live execution context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmContext {
    pub id: ContextId,
    pub app: AppId,
    pub node: NodeId,
    pub memory_mb: u32,
    pub created_us: u64,
    /// When it was last acquired or released.
    pub last_used_us: u64,
    pub in_flight: u32,
}

/// Why a context operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WarmError {
    /// The id names no live context (never existed, or removed).
    #[error("unknown execution context {0}")]
    UnknownContext(ContextId),
    /// `release` on a context with nothing in flight.
    #[error("execution context {0} has no invocation in flight to release")]
    NotInFlight(ContextId),
    /// `acquire` on a context already at its concurrency limit.
    #[error("execution context {id} already runs {in_flight} invocations (the limit)")]
    Full { id: ContextId, in_flight: u32 },
}

const NIL: u32 = u32::MAX;

/// The three intrusive lists a slot can be on.
#[derive(Clone, Copy)]
enum List {
    /// Contexts of one app with room; tail = most recently used.
    App = 0,
    /// Idle contexts of one node; head = least recently used.
    NodeIdle = 1,
    /// All idle contexts; head = least recently used.
    Idle = 2,
}

#[derive(Debug, Clone, Copy)]
struct ListHead {
    head: u32,
    tail: u32,
    len: u32,
}

impl Default for ListHead {
    fn default() -> Self {
        Self {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

#[derive(Debug, Clone)]
struct Slot {
    generation: u32,
    ctx: Option<WarmContext>,
    prev: [u32; 3],
    next: [u32; 3],
    /// Position in its node's `members` vector.
    member_pos: u32,
}

#[derive(Debug, Clone, Default)]
struct AppEntry {
    with_room: ListHead,
    total: u32,
}

#[derive(Debug, Clone, Default)]
struct NodeEntry {
    idle: ListHead,
    members: Vec<u32>,
    memory_mb: u64,
}

fn push_back(slots: &mut [Slot], list: &mut ListHead, which: List, idx: u32) {
    let w = which as usize;
    slots[idx as usize].prev[w] = list.tail;
    slots[idx as usize].next[w] = NIL;
    if list.tail == NIL {
        list.head = idx;
    } else {
        slots[list.tail as usize].next[w] = idx;
    }
    list.tail = idx;
    list.len += 1;
}

fn unlink(slots: &mut [Slot], list: &mut ListHead, which: List, idx: u32) {
    let w = which as usize;
    let (prev, next) = (slots[idx as usize].prev[w], slots[idx as usize].next[w]);
    if prev == NIL {
        list.head = next;
    } else {
        slots[prev as usize].next[w] = next;
    }
    if next == NIL {
        list.tail = prev;
    } else {
        slots[next as usize].prev[w] = prev;
    }
    slots[idx as usize].prev[w] = NIL;
    slots[idx as usize].next[w] = NIL;
    list.len -= 1;
}

fn grow_to<T: Default>(v: &mut Vec<T>, index: u32) -> &mut T {
    let i = index as usize;
    if v.len() <= i {
        v.resize_with(i + 1, T::default);
    }
    &mut v[i]
}

/// The warm contexts of a cluster (or of one node agent).
#[derive(Debug, Clone)]
pub struct WarmContexts {
    concurrency: u32,
    slots: Vec<Slot>,
    free: Vec<u32>,
    len: usize,
    apps: Vec<AppEntry>,
    nodes: Vec<NodeEntry>,
    idle: ListHead,
}

impl WarmContexts {
    /// An empty set whose contexts each take up to `concurrency` invocations at once (0 is taken
    /// as 1).
    pub fn new(concurrency: u32) -> Self {
        Self {
            concurrency: concurrency.max(1),
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            apps: Vec::new(),
            nodes: Vec::new(),
            idle: ListHead::default(),
        }
    }

    pub fn concurrency(&self) -> u32 {
        self.concurrency
    }

    /// Creates a context of `app` on `node`, busy with the invocation that caused it
    /// (`in_flight = 1`).
    pub fn insert(&mut self, app: AppId, node: NodeId, memory_mb: u32, now_us: u64) -> ContextId {
        let idx = match self.free.pop() {
            Some(idx) => idx,
            None => {
                // The slab cannot outgrow u32 slots: 4 billion live contexts is far beyond any
                // cluster this models, and NIL is reserved.
                let idx = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&i| i != NIL)
                    .unwrap_or_else(|| panic!("more than {NIL} live warm contexts"));
                self.slots.push(Slot {
                    generation: 0,
                    ctx: None,
                    prev: [NIL; 3],
                    next: [NIL; 3],
                    member_pos: 0,
                });
                idx
            }
        };
        let id = ContextId::new(idx, self.slots[idx as usize].generation);
        let node_entry = grow_to(&mut self.nodes, node.0);
        self.slots[idx as usize].member_pos = node_entry.members.len() as u32;
        node_entry.members.push(idx);
        node_entry.memory_mb += u64::from(memory_mb);
        self.slots[idx as usize].ctx = Some(WarmContext {
            id,
            app,
            node,
            memory_mb,
            created_us: now_us,
            last_used_us: now_us,
            in_flight: 1,
        });
        let app_entry = grow_to(&mut self.apps, app.0);
        app_entry.total += 1;
        if self.concurrency > 1 {
            push_back(&mut self.slots, &mut app_entry.with_room, List::App, idx);
        }
        self.len += 1;
        id
    }

    /// The slot of a live context, if `id` still names one.
    fn live_slot(&self, id: ContextId) -> Option<u32> {
        let slot = self.slots.get(id.slot() as usize)?;
        (slot.generation == id.generation() && slot.ctx.is_some()).then_some(id.slot())
    }

    fn ctx(&self, idx: u32) -> &WarmContext {
        match &self.slots[idx as usize].ctx {
            Some(ctx) => ctx,
            None => unreachable!("slot {idx} is on a list but holds no context"),
        }
    }

    fn ctx_mut(&mut self, idx: u32) -> &mut WarmContext {
        match &mut self.slots[idx as usize].ctx {
            Some(ctx) => ctx,
            None => unreachable!("slot {idx} is on a list but holds no context"),
        }
    }

    /// Adds one invocation to the context in slot `idx`, which must have room.
    fn take(&mut self, idx: u32, now_us: u64) -> ContextId {
        let concurrency = self.concurrency;
        let ctx = self.ctx_mut(idx);
        let (id, app, node, was) = (ctx.id, ctx.app, ctx.node, ctx.in_flight);
        ctx.in_flight += 1;
        ctx.last_used_us = now_us;
        if was == 0 {
            unlink(&mut self.slots, &mut self.idle, List::Idle, idx);
            let node_idle = &mut self.nodes[node.0 as usize].idle;
            unlink(&mut self.slots, node_idle, List::NodeIdle, idx);
        }
        let room = &mut self.apps[app.0 as usize].with_room;
        unlink(&mut self.slots, room, List::App, idx);
        if was + 1 < concurrency {
            // Still has room: it is now the most recently used.
            push_back(&mut self.slots, room, List::App, idx);
        }
        id
    }

    /// Takes the most recently used context of `app` with room (for concurrency 1: an idle one)
    /// and adds an invocation to it.
    pub fn acquire_idle(&mut self, app: AppId, now_us: u64) -> Option<ContextId> {
        let idx = self.apps.get(app.0 as usize)?.with_room.tail;
        (idx != NIL).then(|| self.take(idx, now_us))
    }

    /// The most recently used context of `app` with room on `node`. O(contexts of the app).
    fn find_on(&self, app: AppId, node: NodeId) -> Option<u32> {
        let mut idx = self.apps.get(app.0 as usize)?.with_room.tail;
        while idx != NIL {
            if self.ctx(idx).node == node {
                return Some(idx);
            }
            idx = self.slots[idx as usize].prev[List::App as usize];
        }
        None
    }

    /// Like [`WarmContexts::acquire_idle`], restricted to contexts on `node`.
    pub fn acquire_idle_on(&mut self, app: AppId, node: NodeId, now_us: u64) -> Option<ContextId> {
        let idx = self.find_on(app, node)?;
        Some(self.take(idx, now_us))
    }

    /// Adds an invocation to a specific context (one chosen earlier, e.g. at placement time).
    pub fn acquire(&mut self, id: ContextId, now_us: u64) -> Result<(), WarmError> {
        let idx = self.live_slot(id).ok_or(WarmError::UnknownContext(id))?;
        let in_flight = self.ctx(idx).in_flight;
        if in_flight >= self.concurrency {
            return Err(WarmError::Full { id, in_flight });
        }
        self.take(idx, now_us);
        Ok(())
    }

    /// Contexts of `app` with room (for concurrency 1: idle ones), most recently used first.
    pub fn with_room_of(&self, app: AppId) -> IdleIter<'_> {
        let list = self
            .apps
            .get(app.0 as usize)
            .map(|a| a.with_room)
            .unwrap_or_default();
        IdleIter {
            slots: &self.slots,
            next: list.tail,
            list: List::App,
            left: list.len as usize,
            backwards: true,
        }
    }

    /// Whether `app` has a context with room on `node`.
    pub fn has_idle_on(&self, app: AppId, node: NodeId) -> bool {
        self.find_on(app, node).is_some()
    }

    /// How many contexts of `app` have room (for concurrency 1: are idle).
    pub fn idle_count(&self, app: AppId) -> usize {
        self.apps
            .get(app.0 as usize)
            .map_or(0, |a| a.with_room.len as usize)
    }

    /// How many contexts `app` has, busy or not.
    pub fn count_of(&self, app: AppId) -> usize {
        self.apps
            .get(app.0 as usize)
            .map_or(0, |a| a.total as usize)
    }

    /// Ends one invocation on `id`; at zero in flight the context becomes idle, last used `now_us`.
    pub fn release(&mut self, id: ContextId, now_us: u64) -> Result<(), WarmError> {
        let idx = self.live_slot(id).ok_or(WarmError::UnknownContext(id))?;
        let ctx = self.ctx_mut(idx);
        if ctx.in_flight == 0 {
            return Err(WarmError::NotInFlight(id));
        }
        ctx.in_flight -= 1;
        ctx.last_used_us = now_us;
        let (app, node, now) = (ctx.app, ctx.node, ctx.in_flight);
        let room = &mut self.apps[app.0 as usize].with_room;
        if now + 1 < self.concurrency {
            // It was on the list already; move it to the most recently used end.
            unlink(&mut self.slots, room, List::App, idx);
        }
        push_back(&mut self.slots, room, List::App, idx);
        if now == 0 {
            push_back(&mut self.slots, &mut self.idle, List::Idle, idx);
            let node_idle = &mut self.nodes[node.0 as usize].idle;
            push_back(&mut self.slots, node_idle, List::NodeIdle, idx);
        }
        Ok(())
    }

    /// Removes a context, busy or idle (eviction, or its node died). Its id is dead from now on.
    pub fn remove(&mut self, id: ContextId) -> Option<WarmContext> {
        let idx = self.live_slot(id)?;
        let (app, node, in_flight) = {
            let ctx = self.ctx(idx);
            (ctx.app, ctx.node, ctx.in_flight)
        };
        if in_flight < self.concurrency {
            let room = &mut self.apps[app.0 as usize].with_room;
            unlink(&mut self.slots, room, List::App, idx);
        }
        if in_flight == 0 {
            unlink(&mut self.slots, &mut self.idle, List::Idle, idx);
            let node_idle = &mut self.nodes[node.0 as usize].idle;
            unlink(&mut self.slots, node_idle, List::NodeIdle, idx);
        }
        self.apps[app.0 as usize].total -= 1;
        let node_entry = &mut self.nodes[node.0 as usize];
        let pos = self.slots[idx as usize].member_pos;
        node_entry.members.swap_remove(pos as usize);
        if let Some(&moved) = node_entry.members.get(pos as usize) {
            self.slots[moved as usize].member_pos = pos;
        }
        let slot = &mut self.slots[idx as usize];
        let ctx = slot.ctx.take()?;
        node_entry.memory_mb -= u64::from(ctx.memory_mb);
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(idx);
        self.len -= 1;
        Some(ctx)
    }

    /// Removes every context on `node` (it died), returning them.
    pub fn drain_node(&mut self, node: NodeId) -> Vec<WarmContext> {
        let ids: Vec<ContextId> = self.contexts_on(node).map(|c| c.id).collect();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    pub fn get(&self, id: ContextId) -> Option<&WarmContext> {
        self.slots[self.live_slot(id)? as usize].ctx.as_ref()
    }

    /// Number of live contexts.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every live context, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &WarmContext> + '_ {
        self.slots.iter().filter_map(|s| s.ctx.as_ref())
    }

    /// The contexts on `node`, busy or idle, in no particular order.
    pub fn contexts_on(&self, node: NodeId) -> impl Iterator<Item = &WarmContext> + '_ {
        self.nodes
            .get(node.0 as usize)
            .map(|n| n.members.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|&idx| self.ctx(idx))
    }

    /// Every idle context, least recently used first.
    pub fn idle_iter(&self) -> IdleIter<'_> {
        IdleIter {
            slots: &self.slots,
            next: self.idle.head,
            list: List::Idle,
            left: self.idle.len as usize,
            backwards: false,
        }
    }

    /// The idle contexts on `node`, least recently used first.
    pub fn idle_on(&self, node: NodeId) -> IdleIter<'_> {
        let list = self
            .nodes
            .get(node.0 as usize)
            .map(|n| n.idle)
            .unwrap_or_default();
        IdleIter {
            slots: &self.slots,
            next: list.head,
            list: List::NodeIdle,
            left: list.len as usize,
            backwards: false,
        }
    }

    /// Number of idle contexts.
    pub fn idle_total(&self) -> usize {
        self.idle.len as usize
    }

    /// Memory held by the contexts on `node`, MiB.
    pub fn memory_on(&self, node: NodeId) -> u64 {
        self.nodes.get(node.0 as usize).map_or(0, |n| n.memory_mb)
    }
}

/// Idle contexts, least recently used first (see [`WarmContexts::idle_iter`]).
#[derive(Debug, Clone)]
pub struct IdleIter<'a> {
    slots: &'a [Slot],
    next: u32,
    list: List,
    left: usize,
    /// Walk from the tail (most recent) towards the head.
    backwards: bool,
}

impl fmt::Debug for List {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            List::App => "app",
            List::NodeIdle => "node-idle",
            List::Idle => "idle",
        })
    }
}

impl<'a> Iterator for IdleIter<'a> {
    type Item = &'a WarmContext;

    fn next(&mut self) -> Option<&'a WarmContext> {
        let slot = self.slots.get(self.next as usize)?;
        self.next = if self.backwards {
            slot.prev[self.list as usize]
        } else {
            slot.next[self.list as usize]
        };
        self.left = self.left.saturating_sub(1);
        slot.ctx.as_ref()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for IdleIter<'_> {}

#[cfg(test)]
#[path = "warm_tests.rs"]
mod tests;
