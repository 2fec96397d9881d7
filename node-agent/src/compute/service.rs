//! The compute node's gRPC service: `NodeAgent`, the same contract as the storage role's
//! (deploy, remove, execute, a chain's steps on the local bus, stats stream), and [`run`], which serves a node until shutdown and
//! reclaims idle warm containers meanwhile.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::node_agent_server::{NodeAgent, NodeAgentServer};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::info;

use super::{ComputeConfig, ComputeNode, ExecuteError, Execution, StartKind};
use crate::edge::{
    chain_steps, cost_samples, function_limits, function_ref, micros, nanos, not_deployed,
    now_unix_us, step_failure,
};
use crate::stats::CpuSampler;

impl From<ExecuteError> for Status {
    fn from(e: ExecuteError) -> Self {
        use sandstorm_proto::v1::FailureKind::{NotStarted, StartedThenFailed};
        let message = e.to_string();
        let kind = match e {
            ExecuteError::UnknownFunction { .. } => return not_deployed(message),
            ExecuteError::Run(e) => return e.into(),
            ExecuteError::Assembly(_) => NotStarted,
            ExecuteError::Lost(_) => StartedThenFailed,
        };
        sandstorm_proto::invocation_failure(tonic::Code::Unavailable, message, kind)
    }
}

/// The service over one [`ComputeNode`].
#[derive(Debug, Clone)]
pub struct ComputeService {
    node: Arc<ComputeNode>,
    stats_interval: Duration,
}

type StatsStream = Pin<Box<dyn Stream<Item = Result<pb::NodeStats, Status>> + Send>>;

/// Largest message: a 16 MiB module with room for the rest.
const MAX_MESSAGE: usize = 17 << 20;

/// Most part sets a pool may be asked to hold (each is a netns, an IPC/UTS pair, a root file
/// system and a cgroup with a parked forker).
const MAX_POOL_SIZE: u32 = 256;

#[tonic::async_trait]
impl NodeAgent for ComputeService {
    type StreamStatsStream = StatsStream;

    async fn stream_stats(
        &self,
        request: Request<pb::StreamStatsRequest>,
    ) -> Result<Response<StatsStream>, Status> {
        let interval = match request.into_inner().interval_ms {
            0 => self.stats_interval,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let node = self.node.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut cpus = CpuSampler::default();
            cpus.sample();
            loop {
                ticker.tick().await;
                if tx.send(Ok(node_stats(&node, &mut cpus))).await.is_err() {
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
        let limits = function_limits(request.limits);
        let node = self.node.clone();
        let (module, command) = (request.module, request.command);
        let deployed =
            tokio::task::spawn_blocking(move || match (module.is_empty(), command.is_empty()) {
                (false, true) => node.deploy_wasm(tenant, &name, &module, limits),
                (true, false) => node.deploy_native(tenant, &name, command, limits),
                (false, false) => Err(crate::sandbox::DeployError::BadCommand(
                    "give either a WebAssembly module or a native command, not both".into(),
                )),
                (true, true) => Err(crate::sandbox::DeployError::BadCommand(
                    "give a WebAssembly module or a native command".into(),
                )),
            })
            .await
            .map_err(|e| Status::internal(format!("deploy thread failed: {e}")))?;
        let (function, replaced) = deployed?;
        Ok(Response::new(pb::DeployResponse {
            compile_us: micros(function.compile_time),
            replaced,
        }))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let (tenant, name) = function_ref(request.into_inner().function)?;
        let node = self.node.clone();
        let existed = tokio::task::spawn_blocking(move || node.remove(tenant, &name))
            .await
            .map_err(|e| Status::internal(format!("remove thread failed: {e}")))?;
        Ok(Response::new(pb::RemoveResponse { existed }))
    }

    /// Quotas on stored data concern storage nodes only.
    async fn set_keep_alive(
        &self,
        request: Request<pb::SetKeepAliveRequest>,
    ) -> Result<Response<pb::SetKeepAliveResponse>, Status> {
        let request = request.into_inner();
        let (tenant, name) = function_ref(request.function)?;
        let window = request.idle_us.map(Duration::from_micros);
        let reclaimed = self
            .node
            .set_keep_alive(tenant, &name, window, request.prewarm, request.seq)
            .await?;
        Ok(Response::new(pb::SetKeepAliveResponse {
            reclaimed: u32::try_from(reclaimed).unwrap_or(u32::MAX),
        }))
    }

    async fn set_tenant_quotas(
        &self,
        _request: Request<pb::SetTenantQuotasRequest>,
    ) -> Result<Response<pb::SetTenantQuotasResponse>, Status> {
        Ok(Response::new(pb::SetTenantQuotasResponse {}))
    }

    async fn provision(
        &self,
        request: Request<pb::ProvisionRequest>,
    ) -> Result<Response<pb::ProvisionResponse>, Status> {
        let request = request.into_inner();
        let functions = request
            .keep_warm
            .into_iter()
            .map(|f| function_ref(Some(f)))
            .collect::<Result<Vec<_>, _>>()?;
        if request.pool_size > MAX_POOL_SIZE {
            return Err(Status::invalid_argument(format!(
                "pool_size {} is over the limit of {MAX_POOL_SIZE} part sets",
                request.pool_size
            )));
        }
        if request.pool_size > 0 {
            let (node, size) = (self.node.clone(), request.pool_size as usize);
            // Shrinking releases parts (their teardown blocks).
            tokio::task::spawn_blocking(move || node.set_pool_size(size))
                .await
                .map_err(|e| Status::internal(format!("resizing the pools failed: {e}")))?;
        }
        Ok(Response::new(pb::ProvisionResponse {
            skipped: self.node.keep_warm(&functions).await,
        }))
    }

    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let request = request.into_inner();
        let (tenant, name) = function_ref(request.function)?;
        let input_bytes = request.input.len() as u64;
        let _held = self.node.in_flight().enter(&[request.invocation_id]);
        let mut run = self.node.execute(tenant, &name, request.input).await?;
        let output = std::mem::take(&mut run.output);
        let record = self.record(&run, request.invocation_id, input_bytes, Duration::ZERO);
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
        let _held = self.node.in_flight().enter(&ids);
        let run = self
            .node
            .execute_chain(tenant, &names, request.input)
            .await?;
        let records = run
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                self.record(
                    &step.execution,
                    ids[i],
                    step.input_bytes as u64,
                    step.handoff,
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

impl ComputeService {
    /// The record of one run.
    fn record(
        &self,
        run: &Execution,
        invocation_id: u64,
        input_bytes: u64,
        handoff: Duration,
    ) -> pb::ExecutionRecord {
        pb::ExecutionRecord {
            node: self.node.config().name.clone(),
            tier: pb::Tier::Compute.into(),
            start: match run.start_kind {
                StartKind::Warm => pb::StartKind::Warm,
                StartKind::Assembled => pb::StartKind::Assembled,
                StartKind::Cold => pb::StartKind::Cold,
            }
            .into(),
            core: 0,
            invocation_id,
            queue_us: micros(run.queue),
            start_us: micros(run.start),
            exec_us: micros(run.exec),
            durable_us: 0,
            data_calls: run.data_calls,
            keys_read: run.keys_read,
            bytes_read: run.bytes_read,
            bytes_written: run.bytes_written,
            input_bytes,
            handoff_ns: nanos(handoff),
            data_wait_us: micros(run.data_wait),
        }
    }
}

fn node_stats(node: &ComputeNode, cpus: &mut CpuSampler) -> pb::NodeStats {
    let counters = node.counters();
    let busy = cpus.sample();
    // Invocations are processes on any CPU, not queued behind a core: only those beyond one per
    // core wait (the scheduler adds `queue_len` to the busy cores, so counting the running ones
    // here would count them twice).
    let waiting = counters
        .in_flight
        .load(Ordering::Relaxed)
        .saturating_sub(busy.len() as u64);
    let cores = busy
        .into_iter()
        .enumerate()
        .map(|(i, busy)| {
            // Node-wide counts ride on core 0.
            let first = i == 0;
            let count = |c: &std::sync::atomic::AtomicU64| {
                if first { c.load(Ordering::Relaxed) } else { 0 }
            };
            pb::CoreStats {
                core: u32::try_from(i).unwrap_or(u32::MAX),
                busy,
                queue_len: if first {
                    u32::try_from(waiting).unwrap_or(u32::MAX)
                } else {
                    0
                },
                invocations: count(&counters.invocations),
                instance_starts: count(&counters.assemblies),
                ..Default::default()
            }
        })
        .collect();
    let pools = node
        .pool_levels()
        .into_iter()
        .map(|(part, ready, target)| pb::PoolLevel {
            part: part.to_owned(),
            ready: u32::try_from(ready).unwrap_or(u32::MAX),
            target: u32::try_from(target).unwrap_or(u32::MAX),
        })
        .collect();
    pb::NodeStats {
        node: node.config().name.clone(),
        role: pb::Tier::Compute.into(),
        at_unix_us: now_unix_us(),
        cores,
        samples: cost_samples(node.meter()),
        keys: 0,
        bytes: 0,
        functions: u32::try_from(node.function_count()).unwrap_or(u32::MAX),
        warm_containers: u32::try_from(node.warm_containers()).unwrap_or(u32::MAX),
        pools,
        tenants: Vec::new(),
        read_only: String::new(),
        running: node.in_flight().ids(),
        containers: node
            .containers()
            .into_iter()
            .map(|(tenant, name, memory_mb, running)| pb::ContainerState {
                function: Some(pb::FunctionRef {
                    tenant: tenant.0,
                    name,
                }),
                memory_mb,
                running,
            })
            .collect(),
    }
}

/// Why a compute node could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// the machine lacks something, or a part could not be made
    #[error("starting the compute node: {0}")]
    Start(std::io::Error),
    /// the address could not be bound
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// the gRPC server failed
    #[error("serving gRPC: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Starts a compute node and serves it on `listen` until `shutdown` completes; calls `ready`
/// with the bound address once it accepts connections. Idle warm containers are reclaimed
/// every second.
pub async fn run(
    config: ComputeConfig,
    listen: SocketAddr,
    credentials: sandstorm_identity::Credentials,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let stats_interval = Duration::from_millis(10);
    let node = tokio::task::spawn_blocking(move || ComputeNode::start(config))
        .await
        .map_err(|e| RunError::Start(std::io::Error::other(e)))?
        .map_err(RunError::Start)?;
    let node = Arc::new(node);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| RunError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| RunError::Bind {
        addr: listen,
        source,
    })?;
    let reaper = {
        let node = node.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let node = node.clone();
                let reclaimer = node.clone();
                if let Ok(n) = tokio::task::spawn_blocking(move || reclaimer.reclaim_idle()).await
                    && n > 0
                {
                    info!(containers = n, "reclaimed idle warm containers");
                }
                crate::telemetry::gauge("sandstorm_warm_containers", node.warm_containers() as f64);
                crate::telemetry::gauge("sandstorm_functions", node.function_count() as f64);
                for (part, ready, target) in node.pool_levels() {
                    crate::telemetry::pool_level(part, ready, target);
                }
            }
        })
    };
    info!(node = %node.config().name, %addr, "compute node serving");
    ready(addr);
    let service = ComputeService {
        node: node.clone(),
        stats_interval,
    };
    let agent = NodeAgentServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let routes = tonic::service::Routes::new(tonic::service::interceptor::InterceptedService::new(
        agent,
        sandstorm_identity::require(crate::edge::NODE_AGENT_CALLERS),
    ));
    let served = crate::edge::serve_cluster_routes(&credentials, listener, routes, shutdown).await;
    reaper.abort();
    // Tear down containers and pools on a blocking thread (it waits for processes to die).
    let _ = tokio::task::spawn_blocking(move || drop(node)).await;
    Ok(served?)
}
