//! Tenant quotas: their defaults and bounds, the admin's settings resolved against them, and
//! how each reaches the place that enforces it.
//!
//! - `max_stored_bytes`, `max_keys`: cluster-wide figures, split evenly over the storage nodes
//!   on the key ring (each gets `ceil(quota / nodes)`, see [`allowance`]) and pushed to them
//!   with `NodeAgent.SetTenantQuotas` when a storage node registers and when a tenant is
//!   created or updated (a node that missed a version gets it at its next periodic
//!   registration). The ring spreads a tenant's keys about evenly, so the split holds the
//!   tenant near the cluster figure; a tenant whose keys happen to crowd onto one node is
//!   refused a little before it. The nodes name the cluster figure in their refusals.
//! - `max_data_calls`, `max_data_bytes`: per invocation, in the `FunctionLimits` every function
//!   of the tenant is deployed with (storage and compute nodes count them in the sandbox); an
//!   update deploys the tenant's functions again (to a node that fails it, again at its next
//!   periodic registration).
//! - `max_concurrent`: at the scheduler ([`super::holds::TenantSlots`]).

use std::sync::Arc;

use sandstorm_naming::{NodeId, TenantId};
use sandstorm_proto::v1 as pb;
use tracing::{info, warn};

use super::error::{ApiError, check_name};
use super::state::{FunctionEntry, Scheduler};
use super::store::{QuotaSettings, TenantRecord};

/// Bytes (keys + values) a tenant may hold over the cluster by default: 1 GiB.
pub const DEFAULT_MAX_STORED_BYTES: u64 = 1 << 30;
/// Keys a tenant may hold over the cluster by default.
pub const DEFAULT_MAX_KEYS: u64 = 1_000_000;
/// Data calls one invocation may make by default (the storage node's own default).
pub const DEFAULT_MAX_DATA_CALLS: u64 = 10_000;
/// Bytes one invocation's data calls may move by default: 64 MiB (the storage node's own).
pub const DEFAULT_MAX_DATA_BYTES: u64 = 64 << 20;
/// Invocations of a tenant in flight at the scheduler by default.
pub const DEFAULT_MAX_CONCURRENT: u32 = 128;

/// Largest value each quota accepts: past these a figure is a typo, not a plan.
const BOUNDS: Bounds = Bounds {
    max_stored_bytes: 1 << 50,
    max_keys: 1 << 40,
    max_data_calls: 1 << 32,
    max_data_bytes: 1 << 40,
    max_concurrent: 1 << 20,
};

struct Bounds {
    max_stored_bytes: u64,
    max_keys: u64,
    max_data_calls: u64,
    max_data_bytes: u64,
    max_concurrent: u32,
}

/// A tenant's quotas in force, defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub max_stored_bytes: u64,
    pub max_keys: u64,
    pub max_data_calls: u64,
    pub max_data_bytes: u64,
    pub max_concurrent: u32,
}

fn or<T: Default + PartialEq>(set: T, default: T) -> T {
    if set == T::default() { default } else { set }
}

impl Quotas {
    /// The quotas `settings` put in force.
    pub fn resolve(settings: &QuotaSettings) -> Self {
        Self {
            max_stored_bytes: or(settings.max_stored_bytes, DEFAULT_MAX_STORED_BYTES),
            max_keys: or(settings.max_keys, DEFAULT_MAX_KEYS),
            max_data_calls: or(settings.max_data_calls, DEFAULT_MAX_DATA_CALLS),
            max_data_bytes: or(settings.max_data_bytes, DEFAULT_MAX_DATA_BYTES),
            max_concurrent: or(settings.max_concurrent, DEFAULT_MAX_CONCURRENT),
        }
    }

    pub fn to_pb(self) -> pb::TenantQuotas {
        pb::TenantQuotas {
            max_stored_bytes: self.max_stored_bytes,
            max_keys: self.max_keys,
            max_data_calls: self.max_data_calls,
            max_data_bytes: self.max_data_bytes,
            max_concurrent: self.max_concurrent,
        }
    }
}

fn check(name: &str, value: u64, max: u64) -> Result<(), ApiError> {
    if value > max {
        return Err(ApiError::InvalidArgument(format!(
            "quotas.{name} {value} is over the maximum of {max}"
        )));
    }
    Ok(())
}

/// `current` with the fields `requested` sets (non-zero) replaced, each checked against its
/// bound (INVALID_ARGUMENT naming the field).
pub fn apply(
    current: QuotaSettings,
    requested: Option<&pb::TenantQuotas>,
) -> Result<QuotaSettings, ApiError> {
    let Some(r) = requested else {
        return Ok(current);
    };
    check(
        "max_stored_bytes",
        r.max_stored_bytes,
        BOUNDS.max_stored_bytes,
    )?;
    check("max_keys", r.max_keys, BOUNDS.max_keys)?;
    check("max_data_calls", r.max_data_calls, BOUNDS.max_data_calls)?;
    check("max_data_bytes", r.max_data_bytes, BOUNDS.max_data_bytes)?;
    check(
        "max_concurrent",
        r.max_concurrent.into(),
        BOUNDS.max_concurrent.into(),
    )?;
    Ok(QuotaSettings {
        max_stored_bytes: or(r.max_stored_bytes, current.max_stored_bytes),
        max_keys: or(r.max_keys, current.max_keys),
        max_data_calls: or(r.max_data_calls, current.max_data_calls),
        max_data_bytes: or(r.max_data_bytes, current.max_data_bytes),
        max_concurrent: or(r.max_concurrent, current.max_concurrent),
    })
}

/// What `tenant` may hold on each of `storage_nodes` storage nodes: an even share of its
/// cluster quotas, rounded up (so the shares add up to at least the quota), naming the quotas.
pub fn allowance(tenant: TenantId, quotas: &Quotas, storage_nodes: usize) -> pb::TenantAllowance {
    let n = storage_nodes.max(1) as u64;
    pb::TenantAllowance {
        tenant: tenant.0,
        max_bytes: quotas.max_stored_bytes.div_ceil(n),
        max_keys: quotas.max_keys.div_ceil(n),
        quota_bytes: quotas.max_stored_bytes,
        quota_keys: quotas.max_keys,
    }
}

impl Scheduler {
    /// Changes the quotas of the tenant `name` (fields left 0 keep their value), stores them,
    /// and applies them: new calls get the concurrency limit, the storage nodes the
    /// allowances, and the tenant's functions are deployed again with the data quotas.
    pub async fn update_tenant(
        self: &Arc<Self>,
        name: &str,
        requested: Option<&pb::TenantQuotas>,
    ) -> Result<pb::UpdateTenantResponse, ApiError> {
        check_name("tenant", name)?;
        let (tenant, before, after) = {
            let tenant = self
                .lock()
                .catalog
                .tenant_by_name(name)
                .map(|t| t.id)
                .ok_or_else(|| ApiError::NoSuchTenant(name.to_owned()))?;
            let mut book = self.tenants();
            let before = book.settings(tenant);
            let after = apply(before, requested)?;
            let token_sha256 = book
                .token_hash(tenant)
                .ok_or_else(|| ApiError::NoSuchTenant(name.to_owned()))?;
            // Under the lock, so concurrent updates are stored in the order they apply.
            self.store.put_tenant(&TenantRecord {
                id: tenant.0,
                name: name.to_owned(),
                token_sha256,
                quotas: after,
            })?;
            book.set(tenant, after);
            (tenant, Quotas::resolve(&before), Quotas::resolve(&after))
        };
        self.tenant_slots.set_limit(tenant, after.max_concurrent);
        self.push_allowances(None).await;
        if (before.max_data_calls, before.max_data_bytes)
            != (after.max_data_calls, after.max_data_bytes)
        {
            self.redeploy(tenant, None).await;
        }
        info!(tenant = tenant.0, name, ?after, "tenant quotas updated");
        Ok(pb::UpdateTenantResponse {
            quotas: Some(after.to_pb()),
        })
    }

    /// Sends every storage node on the ring, and a node joining it, (or only `node`) its share
    /// of every tenant's stored data quotas, and notes which nodes acknowledged the current
    /// version. A node that does not answer is logged and sent them again when it next
    /// registers (every second).
    pub async fn push_allowances(&self, node: Option<NodeId>) {
        let mut storage = {
            let ring = self.ring();
            let mut storage = ring.owners().nodes().to_vec();
            storage.extend(ring.joining());
            storage
        };
        storage.sort_unstable();
        storage.dedup();
        let (version, tenants) = {
            let book = self.tenants();
            let tenants: Vec<pb::TenantAllowance> = (0..book.len())
                .map(|i| {
                    let t = TenantId(i as u32);
                    allowance(t, &book.quotas(t), storage.len())
                })
                .collect();
            (book.allowances_version(), tenants)
        };
        let agents = {
            let inner = self.lock();
            let agents: Vec<_> = storage
                .iter()
                .filter(|id| node.is_none_or(|n| n == **id))
                .filter_map(|id| {
                    let entry = inner.nodes.get(id.0 as usize)?;
                    Some((*id, inner.node_name(id.0), entry.agent.clone()))
                })
                .collect();
            agents
        };
        let calls = agents.into_iter().map(|(id, name, mut agent)| {
            let request = pb::SetTenantQuotasRequest {
                tenants: tenants.clone(),
            };
            async move {
                let sent =
                    tokio::time::timeout(self.config.rpc_timeout, agent.set_tenant_quotas(request))
                        .await;
                match sent {
                    Ok(Ok(_)) => {
                        let mut inner = self.lock();
                        if let Some(entry) = inner.nodes.get_mut(id.0 as usize) {
                            entry.quotas_pushed = entry.quotas_pushed.max(version);
                        }
                    }
                    Ok(Err(e)) => {
                        warn!(node = %name, error = %e, "setting tenant quotas failed; sent again when it registers")
                    }
                    Err(_) => {
                        warn!(node = %name, "setting tenant quotas timed out; sent again when it registers")
                    }
                }
            }
        });
        futures_util::future::join_all(calls).await;
    }

    /// Deploys every function of `tenant` again to every node (or only `node`), so their limits
    /// carry the tenant's data quotas now in force. A node that fails a deploy is marked and
    /// tried again at its next periodic registration.
    pub async fn redeploy(&self, tenant: TenantId, node: Option<NodeId>) {
        let (functions, agents): (Vec<FunctionEntry>, Vec<_>) = {
            let inner = self.lock();
            (
                inner
                    .functions
                    .values()
                    .filter(|f| f.tenant == tenant)
                    .cloned()
                    .collect(),
                (0..inner.nodes.len())
                    .map(|i| NodeId(i as u32))
                    .filter(|id| node.is_none_or(|n| n == *id))
                    .filter_map(|id| {
                        let role = inner.view.node(id)?.role;
                        let agent = inner.nodes[id.0 as usize].agent.clone();
                        Some((id, role, inner.node_name(id.0), agent))
                    })
                    .collect(),
            )
        };
        for (id, role, name, agent) in &agents {
            let mut failed = false;
            for f in functions.iter().filter(|f| f.code.runs_on(*role)) {
                if let Err(e) = self.deploy_to(agent, f).await {
                    warn!(node = %name, function = %f.name, error = %e, "deploying with new quotas failed; tried again when it registers");
                    failed = true;
                }
            }
            if failed {
                let mut inner = self.lock();
                let stale = &mut inner.nodes[id.0 as usize].stale_limits;
                if !stale.contains(&tenant) {
                    stale.push(tenant);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_keeps_the_setting_and_defaults_fill_the_rest() {
        let set = apply(
            QuotaSettings::default(),
            Some(&pb::TenantQuotas {
                max_keys: 5,
                ..Default::default()
            }),
        )
        .unwrap();
        let updated = apply(
            set,
            Some(&pb::TenantQuotas {
                max_concurrent: 2,
                ..Default::default()
            }),
        )
        .unwrap();
        let q = Quotas::resolve(&updated);
        assert_eq!((q.max_keys, q.max_concurrent), (5, 2));
        assert_eq!(q.max_stored_bytes, DEFAULT_MAX_STORED_BYTES);
        assert_eq!(q.max_data_calls, DEFAULT_MAX_DATA_CALLS);
    }

    #[test]
    fn absurd_values_are_refused_naming_the_field() {
        let e = apply(
            QuotaSettings::default(),
            Some(&pb::TenantQuotas {
                max_data_bytes: u64::MAX,
                ..Default::default()
            }),
        )
        .unwrap_err();
        assert!(matches!(e, ApiError::InvalidArgument(_)), "{e:?}");
        assert!(e.to_string().contains("quotas.max_data_bytes"), "{e}");
    }

    #[test]
    fn shares_cover_the_cluster_quota() {
        let q = Quotas::resolve(&QuotaSettings {
            max_keys: 10,
            max_stored_bytes: 1000,
            ..QuotaSettings::default()
        });
        let a = allowance(TenantId(3), &q, 3);
        assert_eq!((a.max_keys, a.max_bytes), (4, 334));
        assert_eq!((a.quota_keys, a.quota_bytes, a.tenant), (10, 1000, 3));
        assert_eq!(allowance(TenantId(3), &q, 0).max_keys, 10);
    }
}
