//! The live cluster: agents register, the scheduler dials each back, consumes its `StreamStats`
//! and folds every message into the placement view (per-core load; on compute nodes also the
//! part pools' level, which decides whether a new container is assembled or cold, and the warm
//! container count, which corrects the warm table), liveness (a node silent longer than the node
//! timeout is declared dead) and the cost model's calibration (the measured cost samples). On
//! every (re)registration it deploys every function to the node. Every registration answer,
//! periodic ones included, lists the storage nodes on the key ring with their addresses: that
//! is how compute nodes learn where data lives, by the scheduler's own node ids.

use std::sync::Arc;
use std::time::Duration;

use sandstorm_naming::{FunctionId, NodeId, NodeRole, TenantId};
use sandstorm_proto::v1 as pb;
use tracing::{info, warn};

use super::error::ApiError;
use super::state::{
    DEFAULT_NODE_MEMORY_MB, FunctionCode, FunctionEntry, LastStats, NodeEntry, NodeLinks,
    Scheduler, node_channels, node_peer,
};
use super::store::NodeRecord;
use crate::placement::NodeReport;

/// What a stats message says of the node's own state, for [`crate::placement::NodeView::reconcile`].
pub fn report(stats: &pb::NodeStats) -> NodeReport {
    let (mut contexts_mb, mut idle_contexts_mb) = (0u64, 0u64);
    for c in &stats.containers {
        contexts_mb += u64::from(c.memory_mb);
        if c.running == 0 {
            idle_contexts_mb += u64::from(c.memory_mb);
        }
    }
    NodeReport {
        running: stats.running.clone(),
        busy_cores: stats.cores.iter().map(|c| c.busy).sum(),
        queued: stats.cores.iter().map(|c| c.queue_len).sum(),
        contexts_mb,
        idle_contexts_mb,
        // A container can be assembled while every part pool has a part ready.
        pool_ready: (stats.role == i32::from(pb::Tier::Compute))
            .then(|| stats.pools.iter().map(|p| p.ready).min().unwrap_or(0)),
    }
}

fn role(tier: i32) -> Result<NodeRole, ApiError> {
    match pb::Tier::try_from(tier) {
        Ok(pb::Tier::Storage) => Ok(NodeRole::Storage),
        Ok(pb::Tier::Compute) => Ok(NodeRole::Compute),
        _ => Err(ApiError::InvalidArgument(format!(
            "register: role {tier} is neither TIER_STORAGE nor TIER_COMPUTE"
        ))),
    }
}

impl Scheduler {
    /// A node agent (re)registers. `caller` is the peer its client certificate `leaf` (checked
    /// against the cluster CA by the handshake) names: it may register only that name and role,
    /// and only with the certificate bound to the name. Deploys every function to it before
    /// answering.
    pub async fn register(
        self: &Arc<Self>,
        caller: &sandstorm_identity::Peer,
        leaf: &[u8],
        r: pb::RegisterRequest,
    ) -> Result<pb::RegisterResponse, ApiError> {
        let role = role(r.role)?;
        let claimed = node_peer(role, &r.name)?;
        if claimed != *caller {
            return Err(ApiError::Denied(format!(
                "register: the caller's certificate is a {caller}'s; it cannot register {claimed}"
            )));
        }
        self.membership.admit(&self.store, caller, leaf)?;
        if r.cores == 0 {
            return Err(ApiError::InvalidArgument(format!(
                "register: node {} has 0 cores",
                r.name
            )));
        }
        if r.address.is_empty() {
            return Err(ApiError::InvalidArgument(format!(
                "register: node {} gave no address",
                r.name
            )));
        }
        let memory_mb = if r.memory_mb == 0 {
            DEFAULT_NODE_MEMORY_MB
        } else {
            r.memory_mb
        };
        // Channels to the node, over mutual TLS to the peer it proved to be.
        let links = || {
            node_channels(
                caller,
                &r.address,
                &self.membership.credentials,
                self.config.connect_timeout,
            )
        };
        let (id, session, agent) = {
            let mut inner = self.lock();
            let known = inner.catalog.node_by_name(&r.name).map(|n| (n.id, n.role));
            let id = match known {
                Some((id, known_role)) => {
                    if known_role != role {
                        return Err(ApiError::InvalidArgument(format!(
                            "register: node {} registered before as a {known_role} node, now as {role}",
                            r.name
                        )));
                    }
                    let entry = &inner.nodes[id.0 as usize];
                    let streaming = entry.stats_task.as_ref().is_some_and(|t| !t.is_finished());
                    if entry.session != 0
                        && entry.address == r.address
                        && entry.incarnation == r.incarnation
                        && streaming
                    {
                        // Already live: a periodic re-registration. Allowances and limits it
                        // missed are sent again.
                        if role == NodeRole::Storage
                            && entry.quotas_pushed < self.tenants().allowances_version()
                        {
                            let scheduler = self.clone();
                            tokio::spawn(async move { scheduler.push_allowances(Some(id)).await });
                        }
                        let stale = std::mem::take(&mut inner.nodes[id.0 as usize].stale_limits);
                        if !stale.is_empty() {
                            let scheduler = self.clone();
                            tokio::spawn(async move {
                                for tenant in stale {
                                    scheduler.redeploy(tenant, Some(id)).await;
                                }
                            });
                        }
                        return Ok(pb::RegisterResponse {
                            node_id: id.0,
                            new_session: false,
                            functions_deployed: 0,
                            storage: inner.storage_addresses(&self.key_owners()),
                            ring_vnodes: self.ring().vnodes_per_node(),
                        });
                    }
                    id
                }
                None => {
                    let NodeLinks {
                        agent,
                        kv,
                        handoff,
                        executor,
                    } = links()?;
                    let entry = NodeEntry {
                        address: r.address.clone(),
                        agent,
                        kv,
                        handoff,
                        executor,
                        session: 0,
                        incarnation: r.incarnation,
                        stats_task: None,
                        last: None,
                        quotas_pushed: 0,
                        stale_limits: Vec::new(),
                    };
                    inner.add_node(&r.name, role, r.cores, memory_mb, entry)?
                }
            };
            let NodeLinks {
                agent,
                kv,
                handoff,
                executor,
            } = links()?;
            if inner.nodes[id.0 as usize].incarnation != r.incarnation {
                // A new agent process: its containers (and deployments) are gone.
                inner.warm.forget_node(id);
            }
            inner
                .warm
                .set_keep_alive(id, r.keep_alive_ms.saturating_mul(1000));
            let entry = &mut inner.nodes[id.0 as usize];
            if let Some(task) = entry.stats_task.take() {
                task.abort();
            }
            entry.address = r.address.clone();
            entry.incarnation = r.incarnation;
            entry.agent = agent.clone();
            entry.kv = kv;
            entry.handoff = handoff;
            entry.executor = executor;
            entry.session += 1;
            let session = entry.session;
            if let Some(view) = inner.view.node_mut(id) {
                view.cores = r.cores;
                view.memory_mb = memory_mb;
            }
            let now = self.now_us();
            inner.liveness.heartbeat(id, now);
            (id, session, agent)
        };
        self.store.put_node(&NodeRecord {
            id: id.0,
            name: r.name.clone(),
            role: role.to_string(),
            address: r.address.clone(),
            cores: r.cores,
            memory_mb,
        })?;
        let task = tokio::spawn(self.clone().consume_stats(id, session, agent.clone()));
        {
            let mut inner = self.lock();
            let entry = &mut inner.nodes[id.0 as usize];
            if entry.session == session {
                entry.stats_task = Some(task.abort_handle());
            } else {
                task.abort();
            }
        }
        let functions: Vec<FunctionEntry> = self
            .lock()
            .functions
            .values()
            .filter(|f| f.code.runs_on(role))
            .cloned()
            .collect();
        let mut deployed = 0;
        for f in &functions {
            match self.deploy_to(&agent, f).await {
                Ok(()) => deployed += 1,
                Err(e) => {
                    warn!(node = %r.name, function = %f.name, tenant = f.tenant.0, error = %e, "deploying to a registering node failed")
                }
            }
        }
        if role == NodeRole::Storage {
            // The first storage node owns the whole (empty) ring at once; any later one joins
            // by a move, which copies its ranges to it first.
            self.join_empty_ring(id)?;
            self.rebalance_wake.notify_one();
            // Every storage node's share changes with their number.
            self.tenants().allowances_changed();
            self.push_allowances(None).await;
        }
        info!(node = %r.name, node_id = id.0, %role, address = %r.address, cores = r.cores, deployed, "node registered");
        let owners = self.key_owners();
        let storage = self.lock().storage_addresses(&owners);
        let ring_vnodes = owners.vnodes_per_node();
        Ok(pb::RegisterResponse {
            node_id: id.0,
            new_session: true,
            functions_deployed: deployed,
            storage,
            ring_vnodes,
        })
    }

    /// Deploys `f` to the node behind `agent`, with its tenant's data quotas in its limits.
    pub async fn deploy_to(
        &self,
        agent: &sandstorm_proto::v1::node_agent_client::NodeAgentClient<tonic::transport::Channel>,
        f: &FunctionEntry,
    ) -> Result<(), tonic::Status> {
        let mut request = pb::DeployRequest {
            function: Some(pb::FunctionRef {
                tenant: f.tenant.0,
                name: f.name.clone(),
            }),
            limits: Some(pb::FunctionLimits {
                deadline_ms: f.limits.deadline_ms,
                memory_bytes: u64::from(f.limits.memory_mb) << 20,
                ..Default::default()
            }),
            ..Default::default()
        };
        match &f.code {
            FunctionCode::Wasm(module) => request.module = module.as_ref().clone(),
            FunctionCode::Native(argv) => request.command = argv.as_ref().clone(),
        }
        let mut agent = agent.clone();
        let quotas = self.tenants().quotas(f.tenant);
        if let Some(limits) = request.limits.as_mut() {
            limits.max_data_calls = quotas.max_data_calls;
            limits.max_data_bytes = quotas.max_data_bytes;
        }
        match tokio::time::timeout(self.config.deploy_timeout, agent.deploy(request)).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "deploy did not answer within {} ms",
                self.config.deploy_timeout.as_millis()
            ))),
        }
    }

    /// Consumes one node's stats stream for one registration session, reconnecting after a
    /// broken stream, until the node registers again (a newer session takes over).
    async fn consume_stats(
        self: Arc<Self>,
        node: NodeId,
        session: u64,
        mut agent: sandstorm_proto::v1::node_agent_client::NodeAgentClient<
            tonic::transport::Channel,
        >,
    ) {
        let interval_ms = u32::try_from(self.config.stats_interval.as_millis()).unwrap_or(u32::MAX);
        let silence = self.config.node_timeout;
        loop {
            let open = tokio::time::timeout(
                silence,
                agent.stream_stats(pb::StreamStatsRequest { interval_ms }),
            )
            .await;
            match open {
                Ok(Ok(stream)) => {
                    let mut stream = stream.into_inner();
                    loop {
                        match tokio::time::timeout(silence, stream.message()).await {
                            Ok(Ok(Some(stats))) => self.apply_stats(node, &stats),
                            Ok(Ok(None)) => break,
                            Ok(Err(e)) => {
                                warn!(node_id = node.0, error = %e, "stats stream broke");
                                break;
                            }
                            Err(_) => {
                                warn!(
                                    node_id = node.0,
                                    "stats stream silent for the node timeout; reconnecting"
                                );
                                break;
                            }
                        }
                    }
                }
                Ok(Err(e)) => {
                    warn!(node_id = node.0, error = %e, "could not open the stats stream")
                }
                Err(_) => warn!(node_id = node.0, "opening the stats stream timed out"),
            }
            if self
                .lock()
                .nodes
                .get(node.0 as usize)
                .is_none_or(|n| n.session != session)
            {
                return;
            }
            // Retry at the stats interval: a node that comes back is seen again quickly.
            tokio::time::sleep(self.config.stats_interval.max(Duration::from_millis(50))).await;
        }
    }

    /// One stats message: liveness, the view rebuilt from the node's report and the
    /// reservations held there, calibration.
    fn apply_stats(&self, node: NodeId, stats: &pb::NodeStats) {
        self.dashboard.node_stats(node.0, stats);
        let now = self.now_us();
        let report = report(stats);
        let mut inner = self.lock();
        inner.liveness.heartbeat(node, now);
        let per_request = inner.placer.config().params.dispatch_us;
        let held = inner.held.on(node);
        match inner.view.node_mut(node) {
            Some(view) => {
                view.alive = true;
                view.reconcile(&report, &held, per_request);
            }
            None => return,
        }
        if stats.role == i32::from(pb::Tier::Compute) {
            let present: Vec<FunctionId> = stats
                .containers
                .iter()
                .filter_map(|c| c.function.as_ref())
                .filter_map(|f| inner.catalog.function_by_name(TenantId(f.tenant), &f.name))
                .map(|spec| spec.id)
                .collect();
            inner.warm.reconcile(node, &present, now);
        }
        if let Some(entry) = inner.nodes.get_mut(node.0 as usize) {
            entry.last = Some(LastStats {
                busy: report.busy_cores,
                queue_len: report.queued,
                functions: stats.functions,
                keys: stats.keys,
                running: u32::try_from(report.running.len()).unwrap_or(u32::MAX),
                memory_mb: report.contexts_mb,
                containers: u32::try_from(stats.containers.len()).unwrap_or(u32::MAX),
                idle_containers: u32::try_from(
                    stats.containers.iter().filter(|c| c.running == 0).count(),
                )
                .unwrap_or(u32::MAX),
            });
        }
        // A bad sample (negative, NaN) is dropped: the previous estimate stands.
        let inner = &mut *inner;
        let (_, errors) = inner
            .calibration
            .fold_samples(node, &stats.samples, &mut inner.placer);
        if !errors.is_empty() {
            warn!(node_id = node.0, errors = ?errors, "cost samples dropped");
        }
    }

    /// Periodically copies liveness into the view and logs nodes that went silent or came back.
    pub async fn watch_liveness(self: Arc<Self>) {
        let period = (self.config.node_timeout / 4).max(Duration::from_millis(10));
        let mut was_alive: Vec<bool> = Vec::new();
        loop {
            tokio::time::sleep(period).await;
            let now = self.now_us();
            let mut inner = self.lock();
            inner.refresh_alive(now);
            was_alive.resize(inner.view.len(), false);
            for (i, node) in inner.view.nodes().iter().enumerate() {
                if node.alive != was_alive[i] {
                    let name = inner.node_name(i as u32);
                    if node.alive {
                        info!(node = %name, "node alive");
                    } else {
                        let silent_ms = inner
                            .liveness
                            .last_seen(node.id)
                            .map_or(0, |t| now.saturating_sub(t) / 1000);
                        warn!(node = %name, silent_ms, "node declared dead: silent longer than the node timeout");
                    }
                    was_alive[i] = node.alive;
                }
            }
        }
    }

    /// The cluster as the scheduler sees it.
    pub fn status(&self) -> pb::ClusterStatusResponse {
        let now = self.now_us();
        let mut inner = self.lock();
        inner.refresh_alive(now);
        let nodes = inner
            .catalog
            .nodes()
            .iter()
            .map(|spec| {
                let entry = &inner.nodes[spec.id.0 as usize];
                let view = inner.view.node(spec.id);
                let last = entry.last.unwrap_or_default();
                pb::NodeStatus {
                    name: spec.name.clone(),
                    node_id: spec.id.0,
                    role: super::record::role_tier(spec.role).into(),
                    address: entry.address.clone(),
                    cores: spec.cores,
                    alive: view.is_some_and(|v| v.alive),
                    silent_ms: inner
                        .liveness
                        .last_seen(spec.id)
                        .map_or(0, |t| now.saturating_sub(t) / 1000),
                    load: view.map_or(0, |v| v.load),
                    busy: last.busy / f64::from(spec.cores.max(1)),
                    queue_len: last.queue_len,
                    functions: last.functions,
                    keys: last.keys,
                    reported_running: last.running,
                    memory_used_mb: view.map_or(0, |v| v.memory_used_mb),
                    reported_memory_mb: last.memory_mb,
                    containers: last.containers,
                    view_containers: u32::try_from(inner.warm.warm_on(spec.id, now))
                        .unwrap_or(u32::MAX),
                    idle_containers: last.idle_containers,
                    membership: self.ring().membership(spec.id, spec.role).into(),
                }
            })
            .collect();
        let params = inner
            .calibration
            .entries()
            .into_iter()
            .map(|c| pb::CalibratedParam {
                name: c.name.into(),
                micros: c.micros,
                samples: c.samples,
                node: c.node.map(|n| inner.node_name(n.0)).unwrap_or_default(),
            })
            .collect();
        pb::ClusterStatusResponse {
            nodes,
            policy: inner.placer.policy().name().into(),
            params,
            tenants: u32::try_from(inner.catalog.tenants().len()).unwrap_or(u32::MAX),
            functions: u32::try_from(inner.catalog.function_count()).unwrap_or(u32::MAX),
            // Filled by the caller: what a tenant may see of it depends on who asks.
            plan: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stats_message_becomes_the_nodes_report() {
        let container = |memory_mb, running| pb::ContainerState {
            function: None,
            memory_mb,
            running,
        };
        let core = |busy, queue_len| pb::CoreStats {
            busy,
            queue_len,
            ..Default::default()
        };
        let stats = pb::NodeStats {
            role: pb::Tier::Compute.into(),
            cores: vec![core(0.5, 1), core(1.0, 2)],
            running: vec![7, 9, 9],
            containers: vec![container(128, 0), container(256, 2), container(64, 0)],
            pools: vec![
                pb::PoolLevel {
                    part: "netns".into(),
                    ready: 3,
                    target: 4,
                },
                pb::PoolLevel {
                    part: "rootfs".into(),
                    ready: 1,
                    target: 4,
                },
            ],
            ..Default::default()
        };
        let r = report(&stats);
        assert_eq!(r.running, [7, 9, 9]);
        assert!((r.busy_cores - 1.5).abs() < 1e-9);
        assert_eq!(r.queued, 3);
        assert_eq!((r.contexts_mb, r.idle_contexts_mb), (448, 192));
        assert_eq!(r.pool_ready, Some(1), "the scarcest pool decides");
        let storage = pb::NodeStats {
            role: pb::Tier::Storage.into(),
            ..stats
        };
        assert_eq!(report(&storage).pool_ready, None);
    }

    #[test]
    fn roles_must_be_storage_or_compute() {
        assert!(role(99).is_err());
        assert_eq!(role(pb::Tier::Compute as i32).ok(), Some(NodeRole::Compute));
    }
}
