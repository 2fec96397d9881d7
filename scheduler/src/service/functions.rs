//! Tenants and functions: creating tenants (and their tokens), deploying, listing and removing
//! functions. The store is written first, then the in-memory catalog, then the nodes: a change a
//! client saw acknowledged survives a restart, and nodes that miss it get it when they register.

use std::sync::Arc;

use sandstorm_naming::catalog::Catalog;
use sandstorm_naming::{AppId, TenantId};
use sandstorm_proto::v1 as pb;
use tracing::{info, warn};

use super::error::{ApiError, check_name};
use super::state::{FunctionCode, FunctionEntry, Scheduler};
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
/// Most arguments of a native command, the program included.
pub const MAX_COMMAND_ARGS: usize = 256;
/// Most bytes of a native command's arguments together.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Most functions one tenant may have deployed at once.
pub const MAX_FUNCTIONS_PER_TENANT: usize = 1_000;

/// Whether `tenant` may deploy `name`: a replacement always, a new function while it has fewer
/// than [`MAX_FUNCTIONS_PER_TENANT`].
fn room_for_function(catalog: &Catalog, tenant: TenantId, name: &str) -> Result<(), ApiError> {
    let limit = MAX_FUNCTIONS_PER_TENANT;
    if catalog.function_by_name(tenant, name).is_some()
        || catalog.functions_of(tenant).count() < limit
    {
        return Ok(());
    }
    Err(ApiError::Quota(format!(
        "{tenant} has {limit} functions deployed, the most a tenant may have \
         (max_functions = {limit}); remove one first"
    )))
}

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

    /// Checks what a deploy asks to run: a WebAssembly module or a native command, not both.
    fn function_code(
        &self,
        name: &str,
        module: Vec<u8>,
        command: Vec<String>,
    ) -> Result<FunctionCode, ApiError> {
        let bad = |why: String| Err(ApiError::InvalidArgument(format!("function {name}: {why}")));
        match (module.is_empty(), command.is_empty()) {
            (false, false) => bad("give a WebAssembly module or a native command, not both".into()),
            (true, true) => bad("give a WebAssembly module or a native command".into()),
            (false, true) => {
                if module.len() > self.config.max_module_bytes {
                    return Err(ApiError::TooLarge {
                        what: format!("module of {name}"),
                        size: module.len(),
                        limit: self.config.max_module_bytes,
                    });
                }
                if !module.starts_with(b"\0asm") {
                    return bad("the module is not WebAssembly (no `\\0asm` header)".into());
                }
                Ok(FunctionCode::Wasm(Arc::new(module)))
            }
            (true, false) => {
                if command.len() > MAX_COMMAND_ARGS {
                    return bad(format!(
                        "the command has {} arguments; at most {MAX_COMMAND_ARGS}",
                        command.len()
                    ));
                }
                let bytes: usize = command.iter().map(String::len).sum();
                if bytes > MAX_COMMAND_BYTES {
                    return bad(format!(
                        "the command's arguments are {bytes} bytes; at most {MAX_COMMAND_BYTES}"
                    ));
                }
                if let Some(i) = command.iter().position(|a| a.contains('\0')) {
                    return bad(format!("argument {i} of the command holds a NUL byte"));
                }
                if !command[0].starts_with('/') {
                    return bad(format!(
                        "the command's program must be an absolute path in the compute nodes' base root file system (such as /bin/sh); got {:?}",
                        command[0]
                    ));
                }
                Ok(FunctionCode::Native(Arc::new(command)))
            }
        }
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
        let booked = self.tenants().add(record.token_sha256, quotas);
        debug_assert_eq!((added, booked), (id, id));
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
                quotas: Some(self.tenants().quotas(t.id).to_pb()),
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
        // Checked before compiling, and again when it is stored (deploys may race).
        room_for_function(&self.lock().catalog, tenant, &r.name)?;
        let code = self.function_code(&r.name, r.module, r.command)?;
        let limits = self.limits(r.limits)?;
        let mut entry = FunctionEntry {
            id: sandstorm_naming::FunctionId(u32::MAX),
            tenant,
            name: r.name.clone(),
            limits,
            sha256: code.sha256(),
            code,
        };
        // Every node the scheduler can reach now that can run it; the first one validates it.
        let now = self.now_us();
        let nodes: Vec<(String, _)> = {
            let mut inner = self.lock();
            inner.refresh_alive(now);
            inner
                .view
                .nodes()
                .iter()
                .filter(|n| n.alive && entry.code.runs_on(n.role))
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
                        "{} rejected by {name}: {}",
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
                    "no live {} to deploy {} to: none has registered, or all are dead",
                    match entry.code {
                        FunctionCode::Wasm(_) => "node",
                        FunctionCode::Native(_) =>
                            "compute node (a native command runs on compute nodes only)",
                    },
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
        let (module, command) = match &entry.code {
            FunctionCode::Wasm(module) => (module.as_ref().clone(), Vec::new()),
            FunctionCode::Native(argv) => (Vec::new(), argv.as_ref().clone()),
        };
        let record = FunctionRecord {
            tenant: tenant.0,
            name: entry.name.clone(),
            limits,
            module,
            command,
        };
        let room = room_for_function(&self.lock().catalog, tenant, &entry.name);
        if let Err(e) = room {
            // A racing deploy took the last place: the node that compiled it forgets it.
            if let Some((_, agent)) = nodes.iter().find(|(n, _)| *n == deployed_on[0]) {
                self.remove_from(agent.clone(), tenant, &entry.name).await;
            }
            return Err(e);
        }
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
                self.history().forget(old);
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
                let history = self.history();
                let profile = history.profiler.profile(f.id);
                let workload = history.profiler.workload(f.id);
                pb::FunctionInfo {
                    name: f.name.clone(),
                    limits: Some(pb::Limits {
                        deadline_ms: f.limits.deadline_ms,
                        memory_mb: f.limits.memory_mb,
                        max_payload_bytes: f.limits.max_payload_bytes,
                    }),
                    module_bytes: match &f.code {
                        FunctionCode::Wasm(module) => module.len() as u64,
                        FunctionCode::Native(_) => 0,
                    },
                    module_sha256: f.sha256.clone(),
                    command: match &f.code {
                        FunctionCode::Wasm(_) => Vec::new(),
                        FunctionCode::Native(argv) => argv.as_ref().clone(),
                    },
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
            self.history().forget(id);
            inner.warm.forget_function(id);
            inner.nodes.iter().map(|n| n.agent.clone()).collect()
        };
        for agent in agents {
            self.remove_from(agent, tenant, name).await;
        }
        info!(tenant = tenant.0, function = name, "function removed");
        Ok(true)
    }

    /// Removes function `name` of `tenant` from the node behind `agent`, logging a failure.
    async fn remove_from(
        &self,
        mut agent: sandstorm_proto::v1::node_agent_client::NodeAgentClient<
            tonic::transport::Channel,
        >,
        tenant: TenantId,
        name: &str,
    ) {
        let request = pb::RemoveRequest {
            function: Some(pb::FunctionRef {
                tenant: tenant.0,
                name: name.to_owned(),
            }),
        };
        if let Err(e) = tokio::time::timeout(self.config.rpc_timeout, agent.remove(request)).await {
            warn!(function = name, error = %e, "removing from a node timed out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_deploys_at_most_its_function_limit_and_may_always_replace() {
        let mut catalog = Catalog::default();
        let (full, other) = (TenantId(0), TenantId(1));
        catalog.add_tenant("full").unwrap();
        catalog.add_tenant("other").unwrap();
        for i in 0..MAX_FUNCTIONS_PER_TENANT {
            catalog
                .add_function(full, AppId(0), format!("f{i}"), 16)
                .unwrap();
        }
        let refused = room_for_function(&catalog, full, "one-more").unwrap_err();
        assert!(matches!(refused, ApiError::Quota(_)), "{refused:?}");
        assert!(
            refused.to_string().contains("max_functions = 1000"),
            "{refused}"
        );
        assert!(
            room_for_function(&catalog, full, "f7").is_ok(),
            "a replacement"
        );
        assert!(
            room_for_function(&catalog, other, "f0").is_ok(),
            "another tenant"
        );
    }
}
