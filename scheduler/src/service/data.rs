//! Tenants' data through the scheduler: each key is routed by the key ring to the storage node
//! that owns it, over that node's `KeyValue` channel, always as the calling tenant (the tenant
//! comes from the token, never from the request). Scans ask every storage node and merge. While
//! a key-ring move is sealed, writes to its moving keys wait for the switch (see
//! [`super::rebalance`]).

use std::sync::Arc;

use sandstorm_naming::{NodeId, TenantId};
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
        let node = self.key_owners().owner(tenant, key).ok_or_else(|| {
            ApiError::NoNode("no storage node has registered, so no node owns the key".into())
        })?;
        let inner = self.lock();
        Ok((
            inner.node_name(node.0),
            inner.nodes[node.0 as usize].kv.clone(),
        ))
    }

    /// Runs one call to a storage node with the RPC deadline, naming the node on failure.
    pub(super) async fn on_node<T>(
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

    /// Runs `call` on the owner of `key`: writes wait while a sealed move holds the key, and a
    /// call that failed while the key's owner changed is routed again, once.
    async fn on_owner<T, F, Fut>(
        &self,
        tenant: TenantId,
        key: &[u8],
        write: bool,
        call: F,
    ) -> Result<(String, T), ApiError>
    where
        F: Fn(KeyValueClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut again = true;
        loop {
            if write {
                self.await_write_turn(tenant, key).await?;
            }
            let version = *self.ring_version.borrow();
            let (node, kv) = self.owner(tenant, key)?;
            match self.on_node(&node, call(kv)).await {
                Ok(r) => return Ok((node, r)),
                Err(_) if again && self.route_changed(tenant, key, version) => again = false,
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn put_data(
        &self,
        tenant: TenantId,
        r: pb::PutDataRequest,
    ) -> Result<pb::PutDataResponse, ApiError> {
        let request = pb::PutRequest {
            tenant: tenant.0,
            key: r.key,
            value: r.value,
        };
        let (node, _) = self
            .on_owner(tenant, &request.key, true, |mut kv| {
                let request = request.clone();
                async move { kv.put(request).await }
            })
            .await?;
        Ok(pb::PutDataResponse { node })
    }

    pub async fn get_data(
        &self,
        tenant: TenantId,
        r: pb::GetDataRequest,
    ) -> Result<pb::GetDataResponse, ApiError> {
        let request = pb::GetRequest {
            tenant: tenant.0,
            key: r.key,
        };
        let (node, got) = self
            .on_owner(tenant, &request.key, false, |mut kv| {
                let request = request.clone();
                async move { kv.get(request).await }
            })
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
        let request = pb::DeleteRequest {
            tenant: tenant.0,
            key: r.key,
        };
        let (_, got) = self
            .on_owner(tenant, &request.key, true, |mut kv| {
                let request = request.clone();
                async move { kv.delete(request).await }
            })
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
        let nodes: Vec<(NodeId, String, KeyValueClient<Channel>)> = {
            let owners = self.key_owners();
            let inner = self.lock();
            owners
                .nodes()
                .iter()
                .map(|id| {
                    (
                        *id,
                        inner.node_name(id.0),
                        inner.nodes[id.0 as usize].kv.clone(),
                    )
                })
                .collect()
        };
        if nodes.is_empty() {
            return Err(ApiError::NoNode("no storage node has registered".into()));
        }
        let mut pairs = Vec::new();
        for (id, node, mut kv) in nodes {
            let call = kv.scan(pb::ScanRequest {
                tenant: tenant.0,
                prefix: r.prefix.clone(),
                limit,
            });
            let got = self.on_node(&node, call).await?;
            // A node that gave keys away in a move may still hold copies until it is told
            // the move finished: only the owner's pair counts.
            let ring = self.key_owners();
            pairs.extend(
                got.pairs
                    .into_iter()
                    .filter(|p| ring.owner(tenant, &p.key) == Some(id))
                    .map(|p| pb::DataPair {
                        key: p.key,
                        value: p.value,
                    }),
            );
        }
        pairs.sort_by(|a, b| a.key.cmp(&b.key));
        pairs.truncate(limit as usize);
        Ok(pb::ScanDataResponse { pairs })
    }
}
