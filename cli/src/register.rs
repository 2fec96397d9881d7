//! `sandstorm agent --scheduler ADDR`: the agent's registration with a scheduler.
//!
//! Registers once the agent serves, then again every second: registration is idempotent, and
//! repeating it is how a restarted scheduler learns its nodes again (and deploys their functions
//! back). Each agent process has a random incarnation, so the scheduler can tell a restarted
//! node (which lost its deployments) from a periodic call. Prints
//! `registered with the scheduler at ADDR as node-N (...)` whenever a registration started a new
//! session; logs failures once per outage.
//!
//! A compute agent also learns the storage nodes from every answer: the scheduler's key ring
//! (node ids and addresses). When it differs from what the agent routes with, the agent's
//! [`StorageRouter`] is replaced and it prints `storage nodes: node-ID=ADDR ...`, so the agent
//! and the scheduler agree on which storage node owns each key, and a storage node that joins or
//! moves is used within a second.

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use sandstorm_naming::NodeId;
use sandstorm_node_agent::compute::StorageRouter;
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::cluster_client::ClusterClient;

/// Re-registration period.
const PERIOD: Duration = Duration::from_secs(1);
/// Deadline of one registration (the scheduler deploys every function before answering).
const DEADLINE: Duration = Duration::from_secs(60);

/// What the agent announces.
#[derive(Debug, Clone)]
pub struct Registration {
    pub scheduler: String,
    pub name: String,
    pub role: pb::Tier,
    pub listen: SocketAddr,
    pub cores: u32,
    /// Compute role: how long an idle warm container is kept, ms (0 for storage nodes).
    pub keep_alive_ms: u64,
    /// Compute role: the router to keep in step with the scheduler's storage nodes.
    pub router: Option<Arc<StorageRouter>>,
}

/// `http://host:port` for `addr`, with an unspecified address as loopback.
fn url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// Starts the registration loop on the current tokio runtime.
pub fn spawn(registration: Registration) {
    tokio::spawn(register_forever(registration));
}

async fn register_forever(r: Registration) {
    let mut incarnation = [0u8; 8];
    if getrandom::fill(&mut incarnation).is_err() {
        // Fall back on the clock: only needs to differ between processes of one node.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        incarnation = now.to_le_bytes();
    }
    let incarnation = u64::from_le_bytes(incarnation);
    let mut host = r.listen;
    if host.ip().is_unspecified() {
        host.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let request = pb::RegisterRequest {
        name: r.name.clone(),
        role: r.role.into(),
        address: format!("http://{host}"),
        cores: r.cores,
        memory_mb: 0,
        incarnation,
        keep_alive_ms: r.keep_alive_ms,
    };
    let mut failing = false;
    loop {
        let attempt = async {
            let mut client = ClusterClient::connect(url(&r.scheduler))
                .await
                .map_err(|e| e.to_string())?;
            client
                .register(request.clone())
                .await
                .map(tonic::Response::into_inner)
                .map_err(|e| e.message().to_owned())
        };
        match tokio::time::timeout(DEADLINE, attempt).await {
            Ok(Ok(response)) => {
                if failing {
                    tracing::info!(scheduler = %r.scheduler, "registered again");
                }
                failing = false;
                if response.new_session {
                    println!(
                        "registered with the scheduler at {} as node-{} ({} functions deployed)",
                        r.scheduler, response.node_id, response.functions_deployed
                    );
                }
                if let Some(router) = &r.router {
                    follow_storage(router, &response);
                }
            }
            Ok(Err(error)) if !failing => {
                failing = true;
                tracing::warn!(scheduler = %r.scheduler, %error, "registration failed; retrying every second");
            }
            Err(_) if !failing => {
                failing = true;
                tracing::warn!(scheduler = %r.scheduler, "registration timed out; retrying every second");
            }
            _ => {}
        }
        tokio::time::sleep(PERIOD).await;
    }
}

/// Replaces `router`'s routes with the scheduler's storage nodes when they differ. An empty list
/// (the scheduler knows no storage node yet) leaves the routes alone: `--storage` seeds stay
/// usable until the scheduler has something to say.
fn follow_storage(router: &StorageRouter, response: &pb::RegisterResponse) {
    if response.storage.is_empty() {
        return;
    }
    let mut nodes: Vec<(NodeId, String)> = response
        .storage
        .iter()
        .map(|s| (NodeId(s.node_id), s.address.clone()))
        .collect();
    nodes.sort();
    if nodes == router.nodes() {
        return;
    }
    let vnodes = match response.ring_vnodes {
        0 => sandstorm_naming::ring::DEFAULT_VNODES_PER_NODE,
        n => n,
    };
    match router.replace(&nodes, vnodes) {
        Ok(()) => {
            let list: Vec<String> = nodes
                .iter()
                .map(|(id, addr)| format!("node-{}={addr}", id.0))
                .collect();
            println!("storage nodes: {}", list.join(" "));
        }
        Err(error) => {
            tracing::warn!(%error, "the scheduler named a storage node this agent cannot dial")
        }
    }
}
