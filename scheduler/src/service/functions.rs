//! Tenants and functions: creating tenants (and their tokens), deploying, listing and removing
//! functions. The store is written first, then the in-memory catalog, then the nodes: a change a
//! client saw acknowledged survives a restart, and nodes that miss it get it when they register.

use std::sync::Arc;

use sandstorm_naming::{AppId, TenantId};
use sandstorm_proto::v1 as pb;
use tracing::{info, warn};

use super::error::{ApiError, check_name};
use super::state::{FunctionEntry, Scheduler};
use super::store::{FunctionLimits, FunctionRecord, QuotaSettings, TenantRecord};
use super::{auth, quota};

/// Default wall-clock budget of one invocation, ms (as the storage node's).
pub const DEFAULT_DEADLINE_MS: u32 = 1_000;
/// Default memory of one execution context, MiB.
pub const DEFAULT_MEMORY_MB: u32 = 16;
/// Longest deadline a function may ask for, ms.
pub const MAX_DEADLINE_MS: u32 = 60_000;
/// Most memory a function may ask for, MiB.
pub const MAX_MEMORY_MB: u32 = 4_096;

impl Scheduler {
    /// Resolves a request's limits against the defaults and bounds.
    fn limits(&self, l: Option<pb::Limits>) -> Result<FunctionLimits, ApiError> {
        let l = l.unwrap_or_default();
        let limits = FunctionLimits {
            deadline_ms: if l.deadline_ms == 0 {
                DEFAULT_DEADLINE_MS
            } else {
                l.deadline_ms
            },
            memory_mb: if l.memory_mb == 0 {
                DEFAULT_MEMORY_MB
            } else {
                l.memory_mb
            },
            max_payload_bytes: if l.max_payload_bytes == 0 {
                u32::try_from(self.config.max_payload_bytes).unwrap_or(u32::MAX)
            } else {
                l.max_payload_bytes
            },
        };
        if limits.deadline_ms > MAX_DEADLINE_MS {
            return Err(ApiError::InvalidArgument(format!(
                "limits.deadline_ms {} is over the maximum of {MAX_DEADLINE_MS}",
                limits.deadline_ms
            )));
        }
        if limits.memory_mb > MAX_MEMORY_MB {
            return Err(ApiError::InvalidArgument(format!(
                "limits.memory_mb {} is over the maximum of {MAX_MEMORY_MB}",
                limits.memory_mb
            )));
        }
        if limits.max_payload_bytes as usize > self.config.max_payload_bytes {
            return Err(ApiError::InvalidArgument(format!(
                "limits.max_payload_bytes {} is over the scheduler's limit of {}",
                limits.max_payload_bytes, self.config.max_payload_bytes
            )));
        }
        Ok(limits)
    }

    /// Creates a tenant with `quotas` (unset fields: the defaults); returns its id and token.
    /// The storage nodes learn its allowances from [`Scheduler::push_allowances`].
    pub fn create_tenant(
        &self,
        name: &str,
        quotas: Option<&pb::TenantQuotas>,
    ) -> Result<pb::CreateTenantResponse, ApiError> {
        check_name("tenant", name)?;
        let quotas = quota::apply(QuotaSettings::default(), quotas)?;
        let secret = auth::new_secret()
            .map_err(|e| ApiError::InvalidArgument(format!("no randomness for a token: {e}")))?;
        let mut inner = self.lock();
        if inner.catalog.tenant_by_name(name).is_some() {
            return Err(ApiError::TenantExists(name.to_owned()));
        }
        let id = TenantId(u32::try_from(inner.catalog.tenants().len()).unwrap_or(u32::MAX));
        let token = auth::tenant_token(id, &secret);
        let record = TenantRecord {
            id: id.0,
            name: name.to_owned(),
            token_sha256: auth::hash(&token),
            quotas,
        };
        // Under the lock, so two creations cannot take the same id.
        self.store.put_tenant(&record)?;
        let added = inner
            .catalog
            .add_tenant(name)
            .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
        debug_assert_eq!(added, id);
        inner.tokens.push(record.token_sha256);
        inner.quotas.push(quotas);
        inner.quota_version += 1;
        self.tenant_slots
            .set_limit(id, quota::Quotas::resolve(&quotas).max_concurrent);
        info!(tenant = id.0, name, "tenant created");
        Ok(pb::CreateTenantResponse {
            tenant_id: id.0,
            token,
        })
    }

    pub fn list_tenants(&self) -> pb::ListTenantsResponse {
        let inner = self.lock();
        let tenants = inner
            .catalog
            .tenants()
            .iter()
            .map(|t| pb::TenantInfo {
                tenant_id: t.id.0,
                name: t.name.clone(),
                functions: u32::try_from(inner.catalog.functions_of(t.id).count())
                    .unwrap_or(u32::MAX),
                quotas: Some(inner.tenant_quotas(t.id).to_pb()),
            })
            .collect();
        pb::ListTenantsResponse { tenants }
    }

    /// Deploys (or replaces) a function: validated by compiling it on one live node, stored,
    /// then sent to every other node.
    pub async fn deploy_function(
        self: &Arc<Self>,
        tenant: TenantId,
        r: pb::DeployFunctionRequest,
    ) -> Result<pb::DeployFunctionResponse, ApiError> {
        check_name("function", &r.name)?;
        if r.module.len() > self.config.max_module_bytes {
            return Err(ApiError::TooLarge {
                what: format!("module of {}", r.name),
                size: r.module.len(),
                limit: self.config.max_module_bytes,
            });
        }
        if !r.module.starts_with(b"\0asm") {
            return Err(ApiError::InvalidArgument(format!(
                "module of {} is not WebAssembly (no `\\0asm` header)",
                r.name
            )));
        }
        let limits = self.limits(r.limits)?;
        let sha256 = auth::hex(&auth::hash_bytes(&r.module));
        let mut entry = FunctionEntry {
            id: sandstorm_naming::FunctionId(u32::MAX),
            tenant,
            name: r.name.clone(),
            limits,
            module: Arc::new(r.module),
            sha256,
        };
        // Every node the scheduler can reach now; the first one validates the module.
        let now = self.now_us();
        let nodes: Vec<(String, _)> = {
            let mut inner = self.lock();
            inner.refresh_alive(now);
            inner
                .view
                .nodes()
                .iter()
                .filter(|n| n.alive)
                .map(|n| {
                    (
                        inner.node_name(n.id.0),
                        inner.nodes[n.id.0 as usize].agent.clone(),
                    )
                })
                .collect()
        };
        let mut deployed_on = Vec::new();
        let mut failures = Vec::new();
        // Nodes are tried in turn until one compiles it: that one validates the module.
        let mut rest = nodes.iter();
        for (name, agent) in rest.by_ref() {
            match self.deploy_to(agent, &entry).await {
                Ok(()) => {
                    deployed_on.push(name.clone());
                    break;
                }
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    return Err(ApiError::InvalidArgument(format!(
                        "module of {} rejected by {name}: {}",
                        entry.name,
                        status.message()
                    )));
                }
                Err(status) => {
                    warn!(node = %name, error = %status, "deploy failed; the node gets it when it registers again");
                    failures.push(format!("{name}: {}", status.message()));
                }
            }
        }
        if deployed_on.is_empty() {
            // Nothing stored: a deploy the client saw succeed is one some node can run.
            return Err(ApiError::DeployFailed(if failures.is_empty() {
                format!(
                    "no live node to deploy {} to: none has registered, or all are dead",
                    entry.name
                )
            } else {
                format!(
                    "no node compiled {} ({}); nothing was stored, try again",
                    entry.name,
                    failures.join("; ")
                )
            }));
        }
        let record = FunctionRecord {
            tenant: tenant.0,
            name: entry.name.clone(),
            limits,
            module: entry.module.as_ref().clone(),
            command: Vec::new(),
        };
        let replaced = {
            let mut inner = self.lock();
            self.store.put_function(&record)?;
            let old = inner
                .catalog
                .function_by_name(tenant, &entry.name)
                .map(|s| s.id);
            if let Some(old) = old {
                inner.catalog.remove_function(old);
                inner.functions.remove(&old);
                inner.profiler.forget(old);
                inner.warm.forget_function(old);
            }
            let id = inner
                .catalog
                .add_function(
                    tenant,
                    AppId(0),
                    entry.name.clone(),
                    limits.memory_mb.max(1),
                )
                .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
            entry.id = id;
            inner.functions.insert(id, entry.clone());
            old.is_some()
        };
        for (name, agent) in rest {
            match self.deploy_to(agent, &entry).await {
                Ok(()) => deployed_on.push(name.clone()),
                Err(status) => {
                    warn!(node = %name, error = %status, "deploy failed; the node gets it when it registers again")
                }
            }
        }
        info!(tenant = tenant.0, function = %entry.name, replaced, nodes = deployed_on.len(), "function deployed");
        Ok(pb::DeployFunctionResponse {
            replaced,
            deployed_on,
        })
    }

    pub fn list_functions(&self, tenant: TenantId) -> pb::ListFunctionsResponse {
        let inner = self.lock();
        let mut functions: Vec<pb::FunctionInfo> = inner
            .catalog
            .functions_of(tenant)
            .filter_map(|spec| inner.functions.get(&spec.id))
            .map(|f| {
                let profile = inner.profiler.profile(f.id);
                let workload = inner.profiler.workload(f.id);
                pb::FunctionInfo {
                    name: f.name.clone(),
                    limits: Some(pb::Limits {
                        deadline_ms: f.limits.deadline_ms,
                        memory_mb: f.limits.memory_mb,
                        max_payload_bytes: f.limits.max_payload_bytes,
                    }),
                    module_bytes: f.module.len() as u64,
                    module_sha256: f.sha256.clone(),
                    invocations: profile.map_or(0, |p| p.invocations()),
                    mean_exec_us: if profile.is_some() {
                        workload.compute_us
                    } else {
                        0.0
                    },
                    mean_accesses: if profile.is_some() {
                        workload.accesses
                    } else {
                        0.0
                    },
                }
            })
            .collect();
        // By name: the same order before and after a restart.
        functions.sort_by(|a, b| a.name.cmp(&b.name));
        pb::ListFunctionsResponse { functions }
    }

    /// Removes a function of `tenant` from the store, the catalog and every node.
    pub async fn remove_function(
        self: &Arc<Self>,
        tenant: TenantId,
        name: &str,
    ) -> Result<bool, ApiError> {
        check_name("function", name)?;
        let agents: Vec<_> = {
            let mut inner = self.lock();
            let Some(id) = inner.catalog.function_by_name(tenant, name).map(|s| s.id) else {
                return Ok(false);
            };
            self.store.remove_function(tenant.0, name)?;
            inner.catalog.remove_function(id);
            inner.functions.remove(&id);
            inner.profiler.forget(id);
            inner.warm.forget_function(id);
            inner.data_homes.forget(id);
            inner.nodes.iter().map(|n| n.agent.clone()).collect()
        };
        for mut agent in agents {
            let request = pb::RemoveRequest {
                function: Some(pb::FunctionRef {
                    tenant: tenant.0,
                    name: name.to_owned(),
                }),
            };
            if let Err(e) =
                tokio::time::timeout(self.config.rpc_timeout, agent.remove(request)).await
            {
                warn!(function = name, error = %e, "removing from a node timed out");
            }
        }
        info!(tenant = tenant.0, function = name, "function removed");
        Ok(true)
    }
}
