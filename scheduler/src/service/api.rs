//! The gRPC services over [`Scheduler`]: `Scheduler` (the client API), `Admin` and `Cluster`.
//! Each handler authenticates, calls one method of the scheduler and converts its error with the
//! single `ApiError -> Status` mapping; handlers hold no logic of their own.

use std::future::ready;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::admin_server::Admin;
use sandstorm_proto::v1::cluster_server::Cluster;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use super::auth::Caller;
use super::results;
use super::state::Scheduler;
use super::telemetry;

/// Longest `WaitResult` wait.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// `WaitResult` wait when the request says 0.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// The services, sharing one scheduler.
#[derive(Debug, Clone)]
pub struct Api {
    pub scheduler: Arc<Scheduler>,
}

type Reply<T> = Result<Response<T>, Status>;

/// Invocations one `InvokeStream` runs at once; further requests wait in the stream (HTTP/2
/// flow control then holds the client back).
pub const STREAM_IN_FLIGHT: usize = 4096;

/// The answers of `Scheduler.InvokeStream`.
pub type InvokeStream =
    Pin<Box<dyn Stream<Item = Result<pb::InvokeStreamResponse, Status>> + Send>>;

impl Api {
    fn tenant<T>(
        &self,
        request: &Request<T>,
        action: &'static str,
    ) -> Result<sandstorm_naming::TenantId, Status> {
        Ok(self
            .scheduler
            .authenticate(request.metadata())?
            .tenant(action)?)
    }

    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        Ok(self.scheduler.authenticate(request.metadata())?)
    }
}

fn ok<T>(value: T) -> Reply<T> {
    Ok(Response::new(value))
}

#[tonic::async_trait]
impl pb::scheduler_server::Scheduler for Api {
    async fn deploy_function(
        &self,
        request: Request<pb::DeployFunctionRequest>,
    ) -> Reply<pb::DeployFunctionResponse> {
        let tenant = self.tenant(&request, "deploy functions")?;
        ok(self
            .scheduler
            .deploy_function(tenant, request.into_inner())
            .await?)
    }

    async fn list_functions(
        &self,
        request: Request<pb::ListFunctionsRequest>,
    ) -> Reply<pb::ListFunctionsResponse> {
        let tenant = self.tenant(&request, "list functions")?;
        ok(self.scheduler.list_functions(tenant))
    }

    async fn remove_function(
        &self,
        request: Request<pb::RemoveFunctionRequest>,
    ) -> Reply<pb::RemoveFunctionResponse> {
        let tenant = self.tenant(&request, "remove functions")?;
        let existed = self
            .scheduler
            .remove_function(tenant, &request.into_inner().name)
            .await?;
        ok(pb::RemoveFunctionResponse { existed })
    }

    async fn put_data(&self, request: Request<pb::PutDataRequest>) -> Reply<pb::PutDataResponse> {
        let tenant = self.tenant(&request, "write data")?;
        ok(self
            .scheduler
            .put_data(tenant, request.into_inner())
            .await?)
    }

    async fn get_data(&self, request: Request<pb::GetDataRequest>) -> Reply<pb::GetDataResponse> {
        let tenant = self.tenant(&request, "read data")?;
        ok(self
            .scheduler
            .get_data(tenant, request.into_inner())
            .await?)
    }

    async fn delete_data(
        &self,
        request: Request<pb::DeleteDataRequest>,
    ) -> Reply<pb::DeleteDataResponse> {
        let tenant = self.tenant(&request, "delete data")?;
        ok(self
            .scheduler
            .delete_data(tenant, request.into_inner())
            .await?)
    }

    async fn scan_data(
        &self,
        request: Request<pb::ScanDataRequest>,
    ) -> Reply<pb::ScanDataResponse> {
        let tenant = self.tenant(&request, "scan data")?;
        ok(self
            .scheduler
            .scan_data(tenant, request.into_inner())
            .await?)
    }

    async fn invoke(&self, request: Request<pb::InvokeRequest>) -> Reply<pb::InvokeResponse> {
        let tenant = self.tenant(&request, "invoke functions")?;
        let started = std::time::Instant::now();
        let result = self
            .scheduler
            .invoke(tenant, request.into_inner(), None)
            .await;
        telemetry::invocation(
            "invoke",
            started,
            result.as_ref().ok().and_then(|r| r.record.as_ref()),
        );
        ok(result?)
    }

    type InvokeStreamStream = InvokeStream;

    async fn invoke_stream(
        &self,
        request: Request<Streaming<pb::InvokeStreamRequest>>,
    ) -> Reply<InvokeStream> {
        let tenant = self.tenant(&request, "invoke functions")?;
        let scheduler = self.scheduler.clone();
        let answers = request
            .into_inner()
            .take_while(|r| ready(r.is_ok()))
            .filter_map(|r| ready(r.ok()))
            .map(move |r| {
                let scheduler = scheduler.clone();
                async move {
                    let result = match r.request {
                        None => Err(Status::invalid_argument("`request` is required")),
                        Some(request) => {
                            let started = std::time::Instant::now();
                            let result = scheduler.invoke(tenant, request, None).await;
                            telemetry::invocation(
                                "invoke_stream",
                                started,
                                result.as_ref().ok().and_then(|r| r.record.as_ref()),
                            );
                            result.map_err(Status::from)
                        }
                    };
                    let result = match result {
                        Ok(response) => pb::invoke_stream_response::Result::Response(response),
                        Err(status) => pb::invoke_stream_response::Result::Error(
                            sandstorm_proto::call_error(&status),
                        ),
                    };
                    Ok(pb::InvokeStreamResponse {
                        tag: r.tag,
                        result: Some(result),
                    })
                }
            })
            .buffer_unordered(STREAM_IN_FLIGHT);
        ok(Box::pin(answers))
    }

    async fn invoke_async(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Reply<pb::InvokeAsyncResponse> {
        let tenant = self.tenant(&request, "invoke functions")?;
        let request = request.into_inner();
        // Bad input is an error of this call, not of the result fetched later.
        self.scheduler.lock().function(tenant, &request.function)?;
        let id = self.scheduler.next_invocation_id();
        let tx = self.scheduler.results.start(tenant, id);
        let scheduler = self.scheduler.clone();
        let span = tracing::info_span!("invoke_async", async_id = id, tenant = tenant.0);
        tokio::spawn(
            async move {
                let started = std::time::Instant::now();
                let outcome = scheduler.invoke_as(id, tenant, request, None).await;
                telemetry::invocation(
                    "async",
                    started,
                    outcome.as_ref().ok().and_then(|r| r.record.as_ref()),
                );
                let outcome = outcome.map_err(|e| {
                    let status = Status::from(e);
                    (status.code() as i32, status.message().to_owned())
                });
                scheduler.results.finish(id, &tx, outcome);
            }
            .instrument(span),
        );
        ok(pb::InvokeAsyncResponse { invocation_id: id })
    }

    async fn wait_result(
        &self,
        request: Request<pb::WaitResultRequest>,
    ) -> Reply<pb::ResultResponse> {
        let tenant = self.tenant(&request, "fetch results")?;
        let r = request.into_inner();
        let wait = match r.timeout_ms {
            0 => DEFAULT_WAIT,
            ms => Duration::from_millis(u64::from(ms)).min(MAX_WAIT),
        };
        let outcome = self
            .scheduler
            .results
            .wait(tenant, r.invocation_id, wait)
            .await?;
        ok(results::response(r.invocation_id, outcome))
    }

    async fn get_result(
        &self,
        request: Request<pb::GetResultRequest>,
    ) -> Reply<pb::ResultResponse> {
        let tenant = self.tenant(&request, "fetch results")?;
        let id = request.into_inner().invocation_id;
        ok(results::response(
            id,
            self.scheduler.results.get(tenant, id)?,
        ))
    }

    async fn invoke_chain(
        &self,
        request: Request<pb::InvokeChainRequest>,
    ) -> Reply<pb::InvokeChainResponse> {
        let tenant = self.tenant(&request, "invoke functions")?;
        let started = std::time::Instant::now();
        let result = self
            .scheduler
            .invoke_chain(tenant, request.into_inner())
            .await;
        telemetry::invocation(
            "chain",
            started,
            result.as_ref().ok().and_then(|r| r.records.last()),
        );
        ok(result?)
    }

    async fn cluster_status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Reply<pb::ClusterStatusResponse> {
        let caller = self.caller(&request)?;
        let mut status = self.scheduler.status();
        if let Caller::Tenant(tenant) = caller {
            // A tenant sees how the nodes are doing, not where they are or what others keep.
            for node in &mut status.nodes {
                node.address.clear();
                node.functions = 0;
                node.keys = 0;
                node.memory_used_mb = 0;
                node.reported_memory_mb = 0;
                node.containers = 0;
                node.idle_containers = 0;
                node.view_containers = 0;
            }
            status.tenants = 0;
            status.functions = u32::try_from(self.scheduler.list_functions(tenant).functions.len())
                .unwrap_or(u32::MAX);
        }
        status.plan = Some(self.scheduler.plan_status(match caller {
            Caller::Admin => None,
            Caller::Tenant(t) => Some(t),
        }));
        ok(status)
    }
}

#[tonic::async_trait]
impl Admin for Api {
    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Reply<pb::CreateTenantResponse> {
        self.caller(&request)?.admin("creating tenants")?;
        let r = request.into_inner();
        let created = self.scheduler.create_tenant(&r.name, r.quotas.as_ref())?;
        self.scheduler.push_allowances(None).await;
        ok(created)
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Reply<pb::ListTenantsResponse> {
        self.caller(&request)?.admin("listing tenants")?;
        ok(self.scheduler.list_tenants())
    }

    async fn update_tenant(
        &self,
        request: Request<pb::UpdateTenantRequest>,
    ) -> Reply<pb::UpdateTenantResponse> {
        self.caller(&request)?.admin("updating tenants")?;
        let r = request.into_inner();
        ok(self
            .scheduler
            .update_tenant(&r.name, r.quotas.as_ref())
            .await?)
    }

    async fn drain_node(
        &self,
        request: Request<pb::DrainNodeRequest>,
    ) -> Reply<pb::DrainNodeResponse> {
        self.caller(&request)?.admin("draining storage nodes")?;
        self.scheduler.drain_node(&request.into_inner().name)?;
        ok(pb::DrainNodeResponse {})
    }

    async fn create_join_token(
        &self,
        request: Request<pb::CreateJoinTokenRequest>,
    ) -> Reply<pb::CreateJoinTokenResponse> {
        self.caller(&request)?.admin("creating join tokens")?;
        let ttl = Duration::from_secs(u64::from(request.into_inner().ttl_s));
        let (token, expires_unix_s) = self
            .scheduler
            .membership
            .create_join_token(&self.scheduler.store, ttl)?;
        ok(pb::CreateJoinTokenResponse {
            token,
            expires_unix_s,
        })
    }
}

#[tonic::async_trait]
impl Cluster for Api {
    async fn join(&self, request: Request<pb::JoinRequest>) -> Reply<pb::JoinResponse> {
        let r = request.into_inner();
        let role = match pb::Tier::try_from(r.role) {
            Ok(pb::Tier::Storage) => sandstorm_identity::Role::Storage,
            Ok(pb::Tier::Compute) => sandstorm_identity::Role::Compute,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "join: role {} is neither TIER_STORAGE nor TIER_COMPUTE",
                    r.role
                )));
            }
        };
        let (certificate_pem, ca_pem) = self.scheduler.membership.join(
            &self.scheduler.store,
            &r.token,
            &r.name,
            role,
            &r.public_key,
        )?;
        ok(pb::JoinResponse {
            certificate_pem,
            ca_pem,
        })
    }

    async fn register(&self, request: Request<pb::RegisterRequest>) -> Reply<pb::RegisterResponse> {
        use sandstorm_identity::Role;
        let caller = sandstorm_identity::authorize(&request, &[Role::Storage, Role::Compute])?;
        let leaf = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| c.to_vec()))
            .unwrap_or_default();
        ok(self
            .scheduler
            .register(&caller, &leaf, request.into_inner())
            .await?)
    }
}
