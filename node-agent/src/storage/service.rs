//! The storage node's gRPC services: `NodeAgent` (deploy, remove, execute, stats stream) and
//! `KeyValue` (the remote data API). This is the one place domain errors become `tonic::Status`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sandstorm_naming::TenantId;
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::handoff_server::{Handoff, HandoffServer};
use sandstorm_proto::v1::key_value_server::{KeyValue, KeyValueServer};
use sandstorm_proto::v1::node_agent_server::{NodeAgent, NodeAgentServer};
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use super::store::{Store, StoreError};
use super::workers::QueueError;
use super::{ExecuteError, StorageNode};
use crate::edge::{
    chain_steps, function_limits, function_ref, micros, nanos, not_deployed, step_failure,
};
use crate::sandbox::RunOutcome;
use crate::stats::Sampler;

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Log(_) => Status::unavailable(e.to_string()),
            StoreError::ReadOnly(_) => Status::failed_precondition(e.to_string()),
            StoreError::Moved { .. } => Status::aborted(e.to_string()),
            StoreError::UnknownMove(_) => Status::not_found(e.to_string()),
            StoreError::OverQuota { .. } | StoreError::RemoteOverQuota(_) => {
                Status::resource_exhausted(e.to_string())
            }
            _ => Status::invalid_argument(e.to_string()),
        }
    }
}

impl From<ExecuteError> for Status {
    fn from(e: ExecuteError) -> Self {
        use pb::FailureKind::{NotStarted, Refused, StartedThenFailed};
        use tonic::Code;
        let message = e.to_string();
        let (code, kind) = match e {
            ExecuteError::UnknownFunction { .. } => return not_deployed(message),
            ExecuteError::Run(e) => return e.into(),
            ExecuteError::Queue(QueueError::Full { .. } | QueueError::TenantFull { .. }) => {
                (Code::ResourceExhausted, Refused)
            }
            ExecuteError::Queue(QueueError::Stopped) => (Code::Unavailable, NotStarted),
            // It ran; its writes may be visible, but are not durable.
            ExecuteError::NotDurable(_) => (Code::Unavailable, StartedThenFailed),
        };
        sandstorm_proto::invocation_failure(code, message, kind)
    }
}

/// Waits for a write's acknowledgement from the log, if the node has one.
async fn durable(ack: Option<super::wal::Ack>) -> Result<(), Status> {
    match ack {
        None => Ok(()),
        Some(ack) => match ack.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Status::unavailable(e)),
            Err(_) => Err(Status::unavailable("the log writer stopped")),
        },
    }
}

/// The node's services, sharing one [`StorageNode`].
#[derive(Debug, Clone)]
pub struct StorageService {
    node: Arc<StorageNode>,
}

impl StorageService {
    /// Services over `node`.
    pub fn new(node: Arc<StorageNode>) -> Self {
        Self { node }
    }

    /// Runs a write on the store. A durable store's writes may wait for room in the log's
    /// queue, so they run where blocking is allowed; an in-memory store's never wait.
    async fn write<R: Send + 'static>(
        &self,
        write: impl FnOnce(&Store) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, Status> {
        let store = self.node.store().clone();
        if !store.is_durable() {
            return Ok(write(&store)?);
        }
        tokio::task::spawn_blocking(move || write(&store))
            .await
            .map_err(|e| Status::internal(format!("the write's thread failed: {e}")))?
            .map_err(Status::from)
    }

    /// Largest gRPC message the node accepts: a module at its size limit, with room for the rest.
    fn max_message(&self) -> usize {
        let sandbox = self.node.sandbox().config();
        sandbox.max_module_bytes.max(sandbox.max_payload_bytes) + (1 << 20)
    }
}

type StatsStream = Pin<Box<dyn Stream<Item = Result<pb::NodeStats, Status>> + Send>>;

#[tonic::async_trait]
impl NodeAgent for StorageService {
    async fn set_keep_alive(
        &self,
        _request: Request<pb::SetKeepAliveRequest>,
    ) -> Result<Response<pb::SetKeepAliveResponse>, Status> {
        Err(Status::failed_precondition(
            "set keep-alive: a storage node keeps no containers (it starts a pooled Wasm instance per invocation)",
        ))
    }

    type StreamStatsStream = StatsStream;

    async fn stream_stats(
        &self,
        request: Request<pb::StreamStatsRequest>,
    ) -> Result<Response<StatsStream>, Status> {
        let interval = match request.into_inner().interval_ms {
            0 => self.node.config().stats_interval,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let node = self.node.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut sampler = Sampler::default();
            let mut last = tokio::time::Instant::now();
            sampler.sample(node.cores(), interval);
            loop {
                ticker.tick().await;
                let now = tokio::time::Instant::now();
                let stats = node_stats(&node, &mut sampler, now - last);
                last = now;
                if tx.send(Ok(stats)).await.is_err() {
                    break; // The subscriber hung up.
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn deploy(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::DeployResponse>, Status> {
        let request = request.into_inner();
        let (tenant, name) = function_ref(request.function)?;
        if !request.command.is_empty() {
            return Err(Status::invalid_argument(
                "a storage node runs only WebAssembly modules; native commands run on compute nodes",
            ));
        }
        let limits = function_limits(request.limits);
        let node = self.node.clone();
        let module = request.module;
        let (compiled, replaced) =
            tokio::task::spawn_blocking(move || node.deploy(tenant, &name, &module, limits))
                .await
                .map_err(|e| Status::internal(format!("compilation thread failed: {e}")))??;
        Ok(Response::new(pb::DeployResponse {
            compile_us: micros(compiled.compile_time),
            replaced,
        }))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let (tenant, name) = function_ref(request.into_inner().function)?;
        Ok(Response::new(pb::RemoveResponse {
            existed: self.node.remove(tenant, &name),
        }))
    }

    async fn set_tenant_quotas(
        &self,
        request: Request<pb::SetTenantQuotasRequest>,
    ) -> Result<Response<pb::SetTenantQuotasResponse>, Status> {
        for t in request.into_inner().tenants {
            self.node.store().set_allowance(
                TenantId(t.tenant),
                super::store::Allowance {
                    max_bytes: t.max_bytes,
                    max_keys: t.max_keys,
                    quota_bytes: t.quota_bytes,
                    quota_keys: t.quota_keys,
                },
            );
        }
        Ok(Response::new(pb::SetTenantQuotasResponse {}))
    }

    async fn provision(
        &self,
        request: Request<pb::ProvisionRequest>,
    ) -> Result<Response<pb::ProvisionResponse>, Status> {
        let mut plan = Vec::new();
        for d in request.into_inner().dedicated {
            let (tenant, name) = function_ref(d.function)?;
            plan.push((tenant, name, d.cores as usize));
        }
        Ok(Response::new(pb::ProvisionResponse {
            skipped: self.node.dedicate_cores(&plan),
        }))
    }

    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let request = request.into_inner();
        let (tenant, name) = function_ref(request.function)?;
        let span = tracing::debug_span!("execute", invocation_id = request.invocation_id, tenant = tenant.0, function = %name);
        let input_bytes = request.input.len();
        let _held = self.node.in_flight().enter(&[request.invocation_id]);
        let mut run = self
            .node
            .execute(tenant, &name, request.input)
            .instrument(span)
            .await?;
        let output = std::mem::take(&mut run.outcome.output);
        let record = self.record(
            &run.outcome,
            Ran {
                invocation_id: request.invocation_id,
                core: run.core,
                queued: run.queued,
                durable_wait: run.durable_wait,
                input_bytes,
                handoff: Duration::ZERO,
            },
        );
        Ok(Response::new(pb::ExecuteResponse {
            output,
            record: Some(record),
        }))
    }

    type ExecuteStreamStream = crate::edge::ExecuteStream;

    async fn execute_stream(
        &self,
        request: Request<tonic::Streaming<pb::ExecuteStreamRequest>>,
    ) -> Result<Response<Self::ExecuteStreamStream>, Status> {
        Ok(Response::new(crate::edge::execute_stream(
            self,
            request.into_inner(),
        )))
    }

    async fn execute_chain(
        &self,
        request: Request<pb::ExecuteChainRequest>,
    ) -> Result<Response<pb::ExecuteChainResponse>, Status> {
        let request = request.into_inner();
        let (tenant, names, ids) = chain_steps(request.steps)?;
        let span = tracing::debug_span!(
            "execute_chain",
            first_invocation_id = ids[0],
            tenant = tenant.0,
            steps = names.len()
        );
        let _held = self.node.in_flight().enter(&ids);
        let run = self
            .node
            .execute_chain(tenant, &names, request.input)
            .instrument(span)
            .await?;
        let records = run
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                self.record(
                    &step.outcome,
                    Ran {
                        invocation_id: ids[i],
                        core: run.core,
                        // The chain waited once, before its first step.
                        queued: if i == 0 { run.queued } else { Duration::ZERO },
                        durable_wait: step.durable_wait,
                        input_bytes: step.input_bytes,
                        handoff: step.handoff,
                    },
                )
            })
            .collect();
        Ok(Response::new(pb::ExecuteChainResponse {
            output: run.output,
            records,
            failure: run.failure.map(|(i, e)| step_failure(i, &Status::from(e))),
        }))
    }
}

/// Where and how one run went, besides what the sandbox measured.
#[derive(Clone, Copy)]
struct Ran {
    invocation_id: u64,
    core: u16,
    queued: Duration,
    durable_wait: Duration,
    input_bytes: usize,
    handoff: Duration,
}

impl StorageService {
    /// The record of one run (an invocation, or one step of a chain).
    fn record(&self, o: &RunOutcome, ran: Ran) -> pb::ExecutionRecord {
        pb::ExecutionRecord {
            node: self.node.config().name.clone(),
            tier: pb::Tier::Storage.into(),
            start: pb::StartKind::Assembled.into(),
            core: u32::from(ran.core),
            invocation_id: ran.invocation_id,
            queue_us: micros(ran.queued),
            start_us: micros(o.start),
            exec_us: micros(o.exec),
            durable_us: micros(ran.durable_wait),
            data_calls: o.data_calls,
            keys_read: o.keys_read,
            bytes_read: o.bytes_read,
            bytes_written: o.bytes_written,
            input_bytes: ran.input_bytes as u64,
            handoff_ns: nanos(ran.handoff),
            // The data is local: its access time is part of the run.
            data_wait_us: 0,
        }
    }
}

pub(super) fn node_stats(
    node: &StorageNode,
    sampler: &mut Sampler,
    interval: Duration,
) -> pb::NodeStats {
    let mut assignment = node.core_assignment().into_iter();
    let cores = sampler
        .sample(node.cores(), interval)
        .into_iter()
        .enumerate()
        .map(|(i, c)| pb::CoreStats {
            core: u32::try_from(i).unwrap_or(u32::MAX),
            busy: c.busy,
            queue_len: c.queue_len,
            invocations: c.invocations,
            instance_starts: c.instance_starts,
            dedicated_to: assignment.next().unwrap_or_default(),
        })
        .collect();
    let samples = crate::edge::cost_samples(node.meter());
    let (keys, bytes) = node.store().size();
    pb::NodeStats {
        node: node.config().name.clone(),
        role: pb::Tier::Storage.into(),
        at_unix_us: crate::edge::now_unix_us(),
        cores,
        samples,
        keys,
        bytes,
        functions: u32::try_from(node.function_count()).unwrap_or(u32::MAX),
        tenants: node
            .store()
            .tenant_usage()
            .into_iter()
            .map(|u| pb::TenantUsage {
                tenant: u.tenant.0,
                keys: u.keys,
                bytes: u.bytes,
            })
            .collect(),
        read_only: node.store().read_only().unwrap_or_default(),
        running: node.in_flight().ids(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl KeyValue for StorageService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let r = request.into_inner();
        self.node.store().check_read(TenantId(r.tenant), &r.key)?;
        let value = self.node.store().get(TenantId(r.tenant), &r.key)?;
        Ok(Response::new(pb::GetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
        }))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let r = request.into_inner();
        let ack = self
            .write(move |store| store.put(TenantId(r.tenant), &r.key, &r.value))
            .await?;
        durable(ack).await?;
        Ok(Response::new(pb::PutResponse {}))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = request.into_inner();
        let (existed, ack) = self
            .write(move |store| store.delete(TenantId(r.tenant), &r.key))
            .await?;
        durable(ack).await?;
        Ok(Response::new(pb::DeleteResponse { existed }))
    }

    async fn multi_get(
        &self,
        request: Request<pb::MultiGetRequest>,
    ) -> Result<Response<pb::MultiGetResponse>, Status> {
        let r = request.into_inner();
        for key in &r.keys {
            self.node.store().check_read(TenantId(r.tenant), key)?;
        }
        let mut values = Vec::with_capacity(r.keys.len());
        self.node
            .store()
            .multi_get_with(TenantId(r.tenant), &r.keys, |v| {
                values.push(pb::MaybeValue {
                    found: v.is_some(),
                    value: v.map(<[u8]>::to_vec).unwrap_or_default(),
                });
            })?;
        Ok(Response::new(pb::MultiGetResponse { values }))
    }

    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let r = request.into_inner();
        let limit = match r.limit {
            0 => usize::MAX,
            n => n as usize,
        };
        let pairs = self
            .node
            .store()
            .scan(TenantId(r.tenant), &r.prefix, limit)?;
        let tenant = TenantId(r.tenant);
        let pairs = pairs
            .into_iter()
            .filter(|(key, _)| self.node.store().check_read(tenant, key).is_ok())
            .map(|(key, value)| pb::KeyValuePair { key, value })
            .collect();
        Ok(Response::new(pb::ScanResponse { pairs }))
    }
}

/// Most pairs one `Export` or `Changed` page holds.
const MOVE_PAGE: u32 = 1_000;

fn page_limit(limit: u32) -> usize {
    let n = match limit {
        0 => MOVE_PAGE,
        n => n.min(10 * MOVE_PAGE),
    };
    n as usize
}

fn moved_pairs(pairs: Vec<super::store::MovedPair>) -> Vec<pb::MovedPair> {
    pairs
        .into_iter()
        .map(|(tenant, key, value, to)| pb::MovedPair {
            tenant: tenant.0,
            key,
            present: value.is_some(),
            value: value.unwrap_or_default(),
            to,
        })
        .collect()
}

#[tonic::async_trait]
impl Handoff for StorageService {
    async fn begin(
        &self,
        request: Request<pb::HandoffRequest>,
    ) -> Result<Response<pb::HandoffResponse>, Status> {
        let r = request.into_inner();
        if r.vnodes == 0 {
            return Err(Status::invalid_argument("a key-ring move needs vnodes > 0"));
        }
        if !r.before.contains(&r.node_id) {
            return Err(Status::invalid_argument(format!(
                "move {}: node {} is not on the ring before it, so nothing moves out of it",
                r.move_id, r.node_id
            )));
        }
        let known = self.node.store().begin_handoff(
            r.move_id,
            r.node_id,
            (&r.before, &r.after, r.vnodes),
            r.seal,
            r.finish,
        )?;
        tracing::info!(
            move_id = r.move_id,
            known,
            seal = r.seal,
            finish = r.finish,
            "key-ring move out of this node"
        );
        if r.finish && known {
            // The new owners hold the keys now: drop this node's copies, in the background.
            let store = self.node.store().clone();
            let handoff = store.handoff(r.move_id)?;
            tokio::task::spawn_blocking(move || match store.purge_moved(&handoff) {
                Ok(n) => tracing::info!(move_id = handoff.id, keys = n, "moved keys purged"),
                Err(e) => {
                    tracing::warn!(move_id = handoff.id, error = %e, "purging moved keys failed")
                }
            });
        }
        Ok(Response::new(pb::HandoffResponse { known }))
    }

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<pb::ExportResponse>, Status> {
        let r = request.into_inner();
        let store = self.node.store();
        let handoff = store.handoff(r.move_id)?;
        let cursor = r.cursor.map(|c| (c.shard as usize, c.tenant, c.key));
        let (pairs, next) = store.export(&handoff, cursor, page_limit(r.limit));
        Ok(Response::new(pb::ExportResponse {
            pairs: moved_pairs(pairs),
            next: next.map(|(shard, tenant, key)| pb::ExportCursor {
                shard: u32::try_from(shard).unwrap_or(u32::MAX),
                tenant,
                key,
            }),
            settled: false,
        }))
    }

    async fn changed(
        &self,
        request: Request<pb::ChangedRequest>,
    ) -> Result<Response<pb::ExportResponse>, Status> {
        let r = request.into_inner();
        let store = self.node.store();
        let handoff = store.handoff(r.move_id)?;
        let (pairs, settled) = store.changed(&handoff, page_limit(r.limit));
        Ok(Response::new(pb::ExportResponse {
            pairs: moved_pairs(pairs),
            next: None,
            settled,
        }))
    }

    async fn import(
        &self,
        request: Request<pb::ImportRequest>,
    ) -> Result<Response<pb::ImportResponse>, Status> {
        let pairs: Vec<super::store::MovedPair> = request
            .into_inner()
            .pairs
            .into_iter()
            .map(|p| {
                (
                    TenantId(p.tenant),
                    p.key,
                    p.present.then_some(p.value),
                    p.to,
                )
            })
            .collect();
        let acks = self.write(move |store| store.import(&pairs)).await?;
        for ack in acks {
            durable(Some(ack)).await?;
        }
        Ok(Response::new(pb::ImportResponse {}))
    }
}

/// Serves the node's services on `listener` until `shutdown` completes.
pub async fn serve(
    node: Arc<StorageNode>,
    listener: TcpListener,
    credentials: &sandstorm_identity::Credentials,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    use sandstorm_identity::require;
    use tonic::service::interceptor::InterceptedService;
    let service = StorageService::new(node);
    let max = service.max_message();
    let agent = NodeAgentServer::new(service.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let handoff = HandoffServer::new(service.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let kv = KeyValueServer::new(service)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let routes = tonic::service::Routes::new(InterceptedService::new(
        agent,
        require(crate::edge::NODE_AGENT_CALLERS),
    ))
    .add_service(InterceptedService::new(
        kv,
        require(crate::edge::KEY_VALUE_CALLERS),
    ))
    .add_service(InterceptedService::new(
        handoff,
        require(crate::edge::NODE_AGENT_CALLERS),
    ));
    crate::edge::serve_cluster_routes(credentials, listener, routes, shutdown).await
}

/// The address a client dials for a node listening on `addr` (`0.0.0.0` becomes loopback).
pub fn endpoint(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    format!("https://{host}:{}", addr.port())
}
