//! Helpers the cluster tests share: a tenant's client of the scheduler, tenants, cluster status,
//! and reading an invocation record's candidates.

#![allow(dead_code)] // Each test file uses a different part.

use std::path::{Path, PathBuf};

use sandstorm_identity::{ClusterCa, Credentials, Peer, Role};
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

/// A cluster CA of a test's own, for agents started standalone (no scheduler): each gets
/// credentials issued offline, as `sandstorm cluster issue` does, and the test calls them as the
/// scheduler would.
pub struct TestCa {
    pub dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        ClusterCa::load_or_create(dir.path()).unwrap();
        TestCa { dir }
    }

    /// An identity directory holding credentials for the `role` node `name`.
    pub fn identity(&self, role: Role, name: &str) -> PathBuf {
        let dir = self.dir.path().join(format!("{name}.{role}"));
        issue(self.dir.path(), &Peer::new(role, name).unwrap())
            .save(&dir)
            .unwrap();
        dir
    }

    /// A channel to `agent`, the `role` node `name`, as the scheduler.
    pub async fn dial(&self, agent: &sandstorm_tests::Service, role: Role, name: &str) -> Channel {
        agent_channel(self.dir.path(), agent.addr, role, name).await
    }
}

/// Credentials for `peer` from the CA kept in `ca_dir` (a scheduler's data directory, or a
/// [`TestCa`]'s).
pub fn issue(ca_dir: &Path, peer: &Peer) -> Credentials {
    ClusterCa::load(ca_dir)
        .unwrap()
        .issue_with_key(peer, &[])
        .unwrap()
}

/// A channel to the agent at `addr` (its certificate names the `role` node `name`) over mutual
/// TLS, as the scheduler, with a certificate from the CA in `ca_dir`.
pub async fn agent_channel(
    ca_dir: &Path,
    addr: std::net::SocketAddr,
    role: Role,
    name: &str,
) -> Channel {
    issue(ca_dir, &Peer::scheduler())
        .endpoint(&Peer::new(role, name).unwrap(), &addr.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to the {role} node {name} at {addr}: {e:?}"))
}

/// A channel to `scheduler`'s client port: TLS trusting the cluster CA when the port speaks
/// TLS (off loopback), plaintext on loopback.
pub async fn client_channel(scheduler: &sandstorm_tests::Service) -> Channel {
    let endpoint = if scheduler.client_tls() {
        let ca = std::fs::read_to_string(scheduler.ca_file()).unwrap();
        tonic::transport::Endpoint::from_shared(format!("https://{}", scheduler.addr))
            .unwrap()
            .tls_config(sandstorm_identity::anonymous_client_tls(&ca, None))
            .unwrap()
    } else {
        tonic::transport::Endpoint::from_shared(scheduler.endpoint()).unwrap()
    };
    endpoint
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to the scheduler at {}: {e:?}", scheduler.addr))
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
    pub async fn create(scheduler: &sandstorm_tests::Service, admin: &str, name: &str) -> Self {
        let channel = client_channel(scheduler).await;
        let mut admin_client = AdminClient::new(channel.clone());
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
            client: SchedulerClient::new(channel),
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

/// The HTTP status of `GET path` on the server at `base` (`http://HOST:PORT` or `HOST:PORT`),
/// with the header line `header` if any.
pub fn http_status(base: &str, path: &str, header: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let host = base.strip_prefix("http://").unwrap_or(base);
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    let extra = header.map(|h| format!("{h}\r\n")).unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

/// The next statistics message of the agent behind `agent`.
pub async fn next_stats(
    agent: &mut sandstorm_proto::v1::node_agent_client::NodeAgentClient<Channel>,
) -> pb::NodeStats {
    let mut stream = agent
        .stream_stats(pb::StreamStatsRequest { interval_ms: 20 })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap()
}
