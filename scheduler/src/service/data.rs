//! Tenants' data through the scheduler: each key is routed by the key ring to the storage node
//! that owns it, over that node's `KeyValue` channel, always as the calling tenant (the tenant
//! comes from the token, never from the request). Scans ask every storage node and merge.

use std::sync::Arc;

use sandstorm_naming::TenantId;
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::key_value_client::KeyValueClient;
use tonic::transport::Channel;

use super::error::ApiError;
use super::state::Scheduler;

/// Default and largest number of pairs a scan returns.
pub const SCAN_LIMIT: u32 = 1_000;

impl Scheduler {
    /// The owner of `key` of `tenant`: its name and channel.
    fn owner(
        &self,
        tenant: TenantId,
        key: &[u8],
    ) -> Result<(String, KeyValueClient<Channel>), ApiError> {
        if key.is_empty() {
            return Err(ApiError::InvalidArgument("the key is empty".into()));
        }
        let inner = self.lock();
        let node = inner.ring.owner(tenant, key).ok_or_else(|| {
            ApiError::NoNode("no storage node has registered, so no node owns the key".into())
        })?;
        Ok((
            inner.node_name(node.0),
            inner.nodes[node.0 as usize].kv.clone(),
        ))
    }

    /// Runs one call to a storage node with the RPC deadline, naming the node on failure.
    async fn on_node<T>(
        &self,
        node: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(self.config.rpc_timeout, call).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s))
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                ) =>
            {
                Err(ApiError::NodeFailed {
                    node: node.to_owned(),
                    message: s.message().to_owned(),
                })
            }
            Ok(Err(s)) => Err(ApiError::Node {
                node: node.to_owned(),
                code: s.code(),
                message: s.message().to_owned(),
            }),
            Err(_) => Err(ApiError::NodeTimeout {
                node: node.to_owned(),
                ms: u64::try_from(self.config.rpc_timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    pub async fn put_data(
        &self,
        tenant: TenantId,
        r: pb::PutDataRequest,
    ) -> Result<pb::PutDataResponse, ApiError> {
        let (node, mut kv) = self.owner(tenant, &r.key)?;
        let call = kv.put(pb::PutRequest {
            tenant: tenant.0,
            key: r.key,
            value: r.value,
        });
        self.on_node(&node, call).await?;
        Ok(pb::PutDataResponse { node })
    }

    pub async fn get_data(
        &self,
        tenant: TenantId,
        r: pb::GetDataRequest,
    ) -> Result<pb::GetDataResponse, ApiError> {
        let (node, mut kv) = self.owner(tenant, &r.key)?;
        let got = self
            .on_node(
                &node,
                kv.get(pb::GetRequest {
                    tenant: tenant.0,
                    key: r.key,
                }),
            )
            .await?;
        Ok(pb::GetDataResponse {
            found: got.found,
            value: got.value,
            node,
        })
    }

    pub async fn delete_data(
        &self,
        tenant: TenantId,
        r: pb::DeleteDataRequest,
    ) -> Result<pb::DeleteDataResponse, ApiError> {
        let (node, mut kv) = self.owner(tenant, &r.key)?;
        let got = self
            .on_node(
                &node,
                kv.delete(pb::DeleteRequest {
                    tenant: tenant.0,
                    key: r.key,
                }),
            )
            .await?;
        Ok(pb::DeleteDataResponse {
            existed: got.existed,
        })
    }

    pub async fn scan_data(
        self: &Arc<Self>,
        tenant: TenantId,
        r: pb::ScanDataRequest,
    ) -> Result<pb::ScanDataResponse, ApiError> {
        let limit = match r.limit {
            0 => SCAN_LIMIT,
            n => n.min(SCAN_LIMIT),
        };
        let nodes: Vec<(String, KeyValueClient<Channel>)> = {
            let inner = self.lock();
            inner
                .ring
                .nodes()
                .iter()
                .map(|id| (inner.node_name(id.0), inner.nodes[id.0 as usize].kv.clone()))
                .collect()
        };
        if nodes.is_empty() {
            return Err(ApiError::NoNode("no storage node has registered".into()));
        }
        let mut pairs = Vec::new();
        for (node, mut kv) in nodes {
            let call = kv.scan(pb::ScanRequest {
                tenant: tenant.0,
                prefix: r.prefix.clone(),
                limit,
            });
            let got = self.on_node(&node, call).await?;
            pairs.extend(got.pairs.into_iter().map(|p| pb::DataPair {
                key: p.key,
                value: p.value,
            }));
        }
        pairs.sort_by(|a, b| a.key.cmp(&b.key));
        pairs.truncate(limit as usize);
        Ok(pb::ScanDataResponse { pairs })
    }
}
