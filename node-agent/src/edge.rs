//! The gRPC edge both roles share: request fields to domain types, domain errors to
//! `tonic::Status`.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use sandstorm_naming::TenantId;
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::node_agent_server::NodeAgent;
use tonic::{Request, Status, Streaming};

use crate::sandbox::{DeployError, FunctionLimits, RunError};
use crate::stats::{CostKind, CostMeter};

impl From<DeployError> for Status {
    fn from(e: DeployError) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

impl From<RunError> for Status {
    fn from(e: RunError) -> Self {
        use pb::FailureKind::{Function, NotStarted, Refused, TimedOut};
        use tonic::Code;
        let message = e.to_string();
        let (code, kind) = match e {
            RunError::DeadlineExceeded { .. } => (Code::DeadlineExceeded, TimedOut),
            RunError::NoSlot(_) => (Code::ResourceExhausted, Refused),
            RunError::MemoryLimit { .. }
            | RunError::DataQuota { .. }
            | RunError::StorageQuota { .. } => (Code::ResourceExhausted, Function),
            RunError::InputTooLarge { .. } => (Code::InvalidArgument, NotStarted),
            RunError::Trap(_) | RunError::Failed(_) => (Code::Aborted, Function),
        };
        sandstorm_proto::invocation_failure(code, message, kind)
    }
}

/// The status of an invocation the node does not have the function for: nothing ran.
pub fn not_deployed(message: String) -> Status {
    sandstorm_proto::invocation_failure(tonic::Code::NotFound, message, pb::FailureKind::NotStarted)
}

/// The tenant and name of a request's function, or INVALID_ARGUMENT.
pub fn function_ref(f: Option<pb::FunctionRef>) -> Result<(TenantId, String), Status> {
    let f =
        f.ok_or_else(|| Status::invalid_argument("`function` (tenant and name) is required"))?;
    if f.name.is_empty() {
        return Err(Status::invalid_argument("`function.name` is empty"));
    }
    Ok((TenantId(f.tenant), f.name))
}

/// A deploy request's limits, zeros meaning the defaults.
pub fn function_limits(limits: Option<pb::FunctionLimits>) -> FunctionLimits {
    let defaults = FunctionLimits::default();
    let limits = limits.unwrap_or_default();
    FunctionLimits {
        deadline: match limits.deadline_ms {
            0 => defaults.deadline,
            ms => Duration::from_millis(u64::from(ms)),
        },
        memory_bytes: match limits.memory_bytes {
            0 => defaults.memory_bytes,
            b => usize::try_from(b).unwrap_or(usize::MAX),
        },
        max_data_calls: match limits.max_data_calls {
            0 => defaults.max_data_calls,
            n => n,
        },
        max_data_bytes: match limits.max_data_bytes {
            0 => defaults.max_data_bytes,
            n => n,
        },
    }
}

/// Whole microseconds, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What the meter measured so far, as stats-stream samples.
pub fn cost_samples(meter: &CostMeter) -> Vec<pb::CostSample> {
    meter
        .measured()
        .into_iter()
        .map(|m| pb::CostSample {
            kind: match m.kind {
                CostKind::WasmStart => pb::cost_sample::Kind::WasmStart,
                CostKind::LocalAccess => pb::cost_sample::Kind::LocalAccess,
                CostKind::Dispatch => pb::cost_sample::Kind::Dispatch,
                CostKind::ContainerAssembly => pb::cost_sample::Kind::ContainerAssembly,
                CostKind::WarmStart => pb::cost_sample::Kind::WarmStart,
                CostKind::ContainerCold => pb::cost_sample::Kind::ContainerCold,
            }
            .into(),
            micros: m.mean,
            count: m.count,
            total_micros: m.total,
        })
        .collect()
}

/// Microseconds since the Unix epoch, now.
pub fn now_unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, micros)
}

/// How long open calls may run on after a shutdown signal: a scheduler's stats stream never
/// ends on its own, so a graceful shutdown that waited for every call would wait forever.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Runs a server built by `serve` (given the future that tells it to stop) until `shutdown`
/// completes and then at most [`SHUTDOWN_GRACE`] more.
pub async fn serve_until<F, E>(
    serve: impl FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
    shutdown: impl Future<Output = ()>,
) -> Result<(), E>
where
    F: Future<Output = Result<(), E>>,
{
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let server = serve(Box::pin(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result,
        () = shutdown => {
            let _ = stop.send(true);
            match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::info!("calls still open {SHUTDOWN_GRACE:?} after the shutdown signal; stopping anyway");
                    Ok(())
                }
            }
        }
    }
}

/// Serves `routes` to cluster members only: mutual TLS with the node's `credentials`, every
/// caller's certificate checked against the cluster CA (a stranger's handshake fails), plus gRPC
/// health. Which roles may call which service is the services' own interceptors'
/// ([`sandstorm_identity::require`]). Runs until `shutdown`, as [`serve_until`].
pub async fn serve_cluster_routes(
    credentials: &sandstorm_identity::Credentials,
    listener: tokio::net::TcpListener,
    routes: tonic::service::Routes,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let (_, health) = tonic_health::server::health_reporter();
    let mut builder = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .tls_config(credentials.server_tls(sandstorm_identity::ClientAuth::Required))?;
    serve_until(
        |stop| {
            builder
                .add_routes(routes.add_service(health))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop,
                )
        },
        shutdown,
    )
    .await
}

/// Only the scheduler calls `NodeAgent`.
pub const NODE_AGENT_CALLERS: &[sandstorm_identity::Role] = &[sandstorm_identity::Role::Scheduler];
/// The scheduler (tenants' data it routes) and compute nodes (their containers' data calls,
/// stamped with the container's tenant) call `KeyValue`.
pub const KEY_VALUE_CALLERS: &[sandstorm_identity::Role] = &[
    sandstorm_identity::Role::Scheduler,
    sandstorm_identity::Role::Compute,
];

/// Most steps one `ExecuteChain` runs (the scheduler's chain limit).
pub const MAX_CHAIN_STEPS: usize = 16;

/// A chain request's tenant, function names and invocation ids, or INVALID_ARGUMENT: 1 to
/// [`MAX_CHAIN_STEPS`] steps, every one naming a function of the same tenant.
pub fn chain_steps(steps: Vec<pb::ChainStep>) -> Result<(TenantId, Vec<String>, Vec<u64>), Status> {
    if steps.is_empty() || steps.len() > MAX_CHAIN_STEPS {
        return Err(Status::invalid_argument(format!(
            "a chain has 1 to {MAX_CHAIN_STEPS} steps, not {}",
            steps.len()
        )));
    }
    let mut tenant = None;
    let mut names = Vec::with_capacity(steps.len());
    let mut ids = Vec::with_capacity(steps.len());
    for (i, step) in steps.into_iter().enumerate() {
        let (t, name) = function_ref(step.function)
            .map_err(|s| Status::invalid_argument(format!("step {i}: {}", s.message())))?;
        if *tenant.get_or_insert(t) != t {
            return Err(Status::invalid_argument(format!(
                "step {i}: every step of a chain belongs to one tenant"
            )));
        }
        names.push(name);
        ids.push(step.invocation_id);
    }
    Ok((tenant.unwrap_or(TenantId(0)), names, ids))
}

/// A failed chain step as the response names it.
pub fn step_failure(step: usize, status: &Status) -> pb::StepFailure {
    let e = sandstorm_proto::call_error(status);
    pb::StepFailure {
        step: u32::try_from(step).unwrap_or(u32::MAX),
        code: e.code,
        message: e.message,
        kind: e.kind,
    }
}

/// Nanoseconds of `d`, saturating.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Invocations one `ExecuteStream` runs at once; further requests wait in the stream (HTTP/2
/// flow control then holds the caller back).
pub const STREAM_IN_FLIGHT: usize = 4096;

/// The answers of `NodeAgent.ExecuteStream`.
pub type ExecuteStream =
    Pin<Box<dyn Stream<Item = Result<pb::ExecuteStreamResponse, Status>> + Send>>;

/// Serves `NodeAgent.ExecuteStream` with the service's own `execute`, so both roles answer a
/// streamed invocation exactly as the unary call would: up to [`STREAM_IN_FLIGHT`] at once,
/// each answered as soon as it finishes. The stream ends when the caller's does (or breaks)
/// and everything in flight has been answered.
pub fn execute_stream<S>(
    service: &S,
    requests: Streaming<pb::ExecuteStreamRequest>,
) -> ExecuteStream
where
    S: NodeAgent + Clone,
{
    let service = service.clone();
    Box::pin(
        requests
            .take_while(|r| std::future::ready(r.is_ok()))
            .filter_map(|r| std::future::ready(r.ok()))
            .map(move |r| {
                let service = service.clone();
                async move {
                    let Some(request) = r.request else {
                        return Ok(answer_error(
                            r.tag,
                            &Status::invalid_argument("`request` is required"),
                        ));
                    };
                    let result = match service.execute(Request::new(request)).await {
                        Ok(response) => {
                            pb::execute_stream_response::Result::Response(response.into_inner())
                        }
                        Err(status) => return Ok(answer_error(r.tag, &status)),
                    };
                    Ok(pb::ExecuteStreamResponse {
                        tag: r.tag,
                        result: Some(result),
                    })
                }
            })
            .buffer_unordered(STREAM_IN_FLIGHT),
    )
}

fn answer_error(tag: u64, status: &Status) -> pb::ExecuteStreamResponse {
    pb::ExecuteStreamResponse {
        tag,
        result: Some(pb::execute_stream_response::Result::Error(
            sandstorm_proto::call_error(status),
        )),
    }
}
