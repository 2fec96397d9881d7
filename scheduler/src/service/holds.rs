//! What the scheduler's calls hold while they run: every reservation per node ([`HeldTable`],
//! what each node's report is reconciled with), each tenant's admission places per node
//! ([`NodeShares`], its share), and each tenant's calls in flight ([`TenantSlots`], its
//! `max_concurrent` quota). Placement and the call path fill them; guards empty them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sandstorm_naming::{NodeId, TenantId};

use super::error::ApiError;

use crate::placement::{Held, Reservation};

/// Every reservation the scheduler holds, per node: what a node's report is reconciled with
/// ([`crate::placement::NodeView::reconcile`]). Entries go in with the placement and out with
/// their `invoke::HeldReservation`, so the table is exactly the calls not yet ended.
#[derive(Debug, Default)]
pub struct HeldTable {
    next_entry: u64,
    nodes: HashMap<NodeId, HashMap<u64, Held>>,
}

impl HeldTable {
    /// Enters `reservation`, made for `invocation`; returns its entry.
    pub fn hold(&mut self, invocation: u64, reservation: Reservation) -> u64 {
        self.next_entry += 1;
        self.nodes.entry(reservation.node).or_default().insert(
            self.next_entry,
            Held {
                invocation,
                reservation,
            },
        );
        self.next_entry
    }

    pub fn give_back(&mut self, node: NodeId, entry: u64) {
        if let Some(held) = self.nodes.get_mut(&node) {
            held.remove(&entry);
            if held.is_empty() {
                self.nodes.remove(&node);
            }
        }
    }

    /// The reservations held on `node`.
    pub fn on(&self, node: NodeId) -> Vec<Held> {
        self.nodes
            .get(&node)
            .map(|held| held.values().copied().collect())
            .unwrap_or_default()
    }

    /// Reservations held over all nodes.
    pub fn len(&self) -> usize {
        self.nodes.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// The admission places each tenant holds on each node: reserved by placement, given back with
/// the reservation. A tenant holding [`NodeShares::share`] of a node is not placed there.
#[derive(Debug, Default)]
pub struct NodeShares {
    held: HashMap<(TenantId, NodeId), u32>,
}

impl NodeShares {
    /// Most of the `limit` admission places of a node of `cores` one tenant may hold: all
    /// but one per core (at least one), so other tenants always find a place on every core.
    pub fn share(limit: u32, cores: u32) -> u32 {
        limit.saturating_sub(cores).max(1)
    }

    pub fn held(&self, tenant: TenantId, node: NodeId) -> u32 {
        self.held.get(&(tenant, node)).copied().unwrap_or(0)
    }

    pub fn take(&mut self, tenant: TenantId, node: NodeId) {
        *self.held.entry((tenant, node)).or_default() += 1;
    }

    pub fn give_back(&mut self, tenant: TenantId, node: NodeId) {
        if let Some(held) = self.held.get_mut(&(tenant, node)) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.held.remove(&(tenant, node));
            }
        }
    }
}

/// How many calls (invocations, chains) each tenant has in flight, each at most its
/// `max_concurrent` quota: one tenant cannot take every node's admission places from the others.
#[derive(Debug, Default)]
pub struct TenantSlots {
    /// Per tenant: calls in flight and the limit (a tenant never set has the default).
    tenants: Mutex<HashMap<TenantId, Slots>>,
}

#[derive(Debug, Clone, Copy)]
struct Slots {
    held: u32,
    limit: u32,
}

impl Default for Slots {
    fn default() -> Self {
        Self {
            held: 0,
            limit: super::quota::DEFAULT_MAX_CONCURRENT,
        }
    }
}

impl TenantSlots {
    /// Sets `tenant`'s limit; calls already in flight keep their places.
    pub fn set_limit(&self, tenant: TenantId, limit: u32) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        tenants.entry(tenant).or_default().limit = limit;
    }

    /// A place for one call of `tenant`, or RESOURCE_EXHAUSTED naming the quota.
    pub fn take(self: &Arc<Self>, tenant: TenantId) -> Result<TenantSlot, ApiError> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let slots = tenants.entry(tenant).or_default();
        if slots.held >= slots.limit {
            return Err(ApiError::Quota(format!(
                "{tenant} has {} calls in flight, its quota (max_concurrent {}); retry when \
                 some have finished",
                slots.held, slots.limit
            )));
        }
        slots.held += 1;
        Ok(TenantSlot {
            slots: self.clone(),
            tenant,
        })
    }

    /// Calls of `tenant` in flight now.
    pub fn held(&self, tenant: TenantId) -> u32 {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        tenants.get(&tenant).map_or(0, |s| s.held)
    }
}

/// A tenant's place for one call in flight; given back when dropped, however the call ends.
#[derive(Debug)]
pub struct TenantSlot {
    slots: Arc<TenantSlots>,
    tenant: TenantId,
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        let mut tenants = self.slots.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slots) = tenants.get_mut(&self.tenant) {
            slots.held = slots.held.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_leaves_one_place_per_core_and_gets_its_places_back() {
        assert_eq!(
            (
                NodeShares::share(9, 1),
                NodeShares::share(18, 2),
                NodeShares::share(1, 1)
            ),
            (8, 16, 1)
        );
        let mut shares = NodeShares::default();
        let (a, b, node) = (TenantId(1), TenantId(2), NodeId(0));
        for _ in 0..4 {
            shares.take(a, node);
        }
        shares.take(b, node);
        assert_eq!((shares.held(a, node), shares.held(b, node)), (4, 1));
        assert_eq!(shares.held(a, NodeId(1)), 0, "per node");
        for _ in 0..4 {
            shares.give_back(a, node);
        }
        shares.give_back(a, node);
        assert_eq!(shares.held(a, node), 0, "never below zero");
        shares.give_back(b, node);
        assert!(
            shares.held.is_empty(),
            "nothing kept for tenants that hold nothing"
        );
    }

    #[test]
    fn a_tenant_holds_at_most_its_quota_and_gets_places_back() {
        let slots = Arc::new(TenantSlots::default());
        let (a, b) = (TenantId(1), TenantId(2));
        slots.set_limit(a, 3);
        let held: Vec<TenantSlot> = (0..3).map(|_| slots.take(a).unwrap()).collect();
        let refused = slots.take(a).unwrap_err();
        assert!(matches!(refused, ApiError::Quota(_)), "{refused:?}");
        assert!(
            refused.to_string().contains("max_concurrent 3"),
            "{refused}"
        );
        // Another tenant is not held back by the first one's calls.
        let other = slots.take(b).unwrap();
        assert_eq!((slots.held(a), slots.held(b)), (3, 1));
        drop(held);
        drop(other);
        assert_eq!((slots.held(a), slots.held(b)), (0, 0));
        assert!(slots.take(a).is_ok());
        // A raised limit applies to the next call.
        let held: Vec<TenantSlot> = (0..3).map(|_| slots.take(a).unwrap()).collect();
        assert!(slots.take(a).is_err());
        slots.set_limit(a, 4);
        let fourth = slots.take(a).unwrap();
        assert_eq!(slots.held(a), 4);
        drop((held, fourth));
    }
}
