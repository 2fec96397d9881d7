//! Helpers the cluster tests share: a tenant's client of the scheduler, tenants, cluster status,
//! and reading an invocation record's candidates.

#![allow(dead_code)] // Each test file uses a different part.

use std::path::Path;

use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::admin_client::AdminClient;
use sandstorm_proto::v1::scheduler_client::SchedulerClient;
use tonic::Request;
use tonic::transport::Channel;

/// A request with `token` as its bearer token.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// The admin token the scheduler wrote into its data directory.
pub fn admin_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// A tenant's client of the scheduler at `endpoint`.
#[derive(Clone)]
pub struct Tenant {
    pub client: SchedulerClient<Channel>,
    pub token: String,
}

impl Tenant {
    /// Creates tenant `name` with the admin token and connects as it.
    pub async fn create(endpoint: &str, admin: &str, name: &str) -> Self {
        let mut admin_client = AdminClient::connect(endpoint.to_owned()).await.unwrap();
        let token = admin_client
            .create_tenant(authed(
                pb::CreateTenantRequest {
                    name: name.into(),
                    ..Default::default()
                },
                admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .token;
        Tenant {
            client: SchedulerClient::connect(endpoint.to_owned()).await.unwrap(),
            token,
        }
    }

    pub async fn deploy(&mut self, example: &str) {
        let request = pb::DeployFunctionRequest {
            name: example.into(),
            module: sandstorm_guest_examples::module(example).unwrap().to_vec(),
            limits: None,
            ..Default::default()
        };
        self.client
            .deploy_function(authed(request, &self.token))
            .await
            .unwrap();
    }

    pub async fn put(&mut self, key: &str, value: &str) {
        let request = pb::PutDataRequest {
            key: key.into(),
            value: value.into(),
        };
        self.client
            .put_data(authed(request, &self.token))
            .await
            .unwrap();
    }

    /// Invokes `function` with `input`, the input's first word as the key hint.
    pub async fn try_invoke(
        &mut self,
        function: &str,
        input: &str,
        tier: pb::Tier,
        retryable: bool,
    ) -> Result<pb::InvokeResponse, tonic::Status> {
        let request = pb::InvokeRequest {
            function: function.into(),
            input: input.into(),
            keys: input
                .split(' ')
                .take(1)
                .map(|k| k.as_bytes().to_vec())
                .collect(),
            retryable,
            tier: tier.into(),
        };
        self.client
            .invoke(authed(request, &self.token))
            .await
            .map(tonic::Response::into_inner)
    }

    /// [`Tenant::try_invoke`], which must succeed: the output and the record.
    pub async fn invoke(
        &mut self,
        function: &str,
        input: &str,
        tier: pb::Tier,
    ) -> (String, pb::InvocationRecord) {
        let r = self
            .try_invoke(function, input, tier, false)
            .await
            .unwrap_or_else(|e| panic!("{function} {input}: {e}"));
        (String::from_utf8(r.output).unwrap(), r.record.unwrap())
    }

    pub async fn status(&mut self) -> pb::ClusterStatusResponse {
        self.client
            .cluster_status(authed(pb::ClusterStatusRequest {}, &self.token))
            .await
            .unwrap()
            .into_inner()
    }

    /// The status of node `name`.
    pub async fn node(&mut self, name: &str) -> pb::NodeStatus {
        self.status()
            .await
            .nodes
            .into_iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in the cluster status"))
    }

    /// Polls the cluster status (every 50 ms, for at most 30 s: a bound on a broken run) until
    /// node `name` is reported alive (or dead) as `alive` says.
    pub async fn wait_alive(&mut self, name: &str, alive: bool) -> pb::NodeStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let status = self.status().await;
            if let Some(node) = status.nodes.iter().find(|n| n.name == name)
                && node.alive == alive
            {
                return node.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {name} not alive={alive} after 30 s: {status:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// The candidate of `record` on node `node`.
pub fn candidate<'a>(record: &'a pb::InvocationRecord, node: &str) -> &'a pb::CandidateCost {
    record
        .candidates
        .iter()
        .find(|c| c.node == node)
        .unwrap_or_else(|| panic!("no candidate {node} in {record:#?}"))
}

/// The objective the cost model gave the candidate on `node`.
pub fn objective(record: &pb::InvocationRecord, node: &str) -> f64 {
    candidate(record, node).cost.unwrap().objective
}

/// Asserts that `node` lost to the chosen node in `record`: either it was costed higher, or it
/// was not scored at all because the placement core's exact bound showed it could not beat the
/// chosen node (`unscored` counts it). Returns its breakdown when it was costed.
pub fn assert_lost(record: &pb::InvocationRecord, node: &str) -> Option<pb::CostBreakdown> {
    let chosen = objective(record, &record.node);
    match record.candidates.iter().find(|c| c.node == node) {
        Some(c) => {
            let cost = c.cost.unwrap();
            assert!(
                cost.objective > chosen,
                "{node}: {cost:?} against {chosen} for {}",
                record.node
            );
            Some(cost)
        }
        None => {
            assert!(record.unscored >= 1, "{node} is not in {record:#?}");
            None
        }
    }
}

/// The example `hash-chain`'s arithmetic (FNV-1a 64, chained), to check its output.
pub fn hash_chain(value: &[u8], rounds: u32) -> String {
    let fnv = |seed: u64| {
        let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
        for &b in value {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    let mut h = fnv(0);
    for _ in 0..rounds {
        h = fnv(h);
    }
    format!("{h:016x}")
}

/// The median of `values` (sorted in place).
pub fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}
