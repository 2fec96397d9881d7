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
//! (node ids, names and addresses). When it differs from what the agent routes with, the agent's
//! [`StorageRouter`] is replaced and it prints `storage nodes: node-ID=NAME@ADDR ...`, so the
//! agent and the scheduler agree on which storage node owns each key, and a storage node that
//! joins or moves is used within a second.
//!
//! Everything here runs on the scheduler's cluster port over mutual TLS. An agent without
//! credentials first joins ([`credentials`]): it makes a key pair, presents the join token and
//! its public key, and keeps the certificate it gets in its identity directory, so a restarted
//! agent registers again with the same certificate (the only one its name is bound to).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sandstorm_identity::{Credentials, Peer, Role};
use sandstorm_naming::NodeId;
use sandstorm_node_agent::compute::{StorageRoute, StorageRouter};
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::cluster_client::ClusterClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Re-registration period.
const PERIOD: Duration = Duration::from_secs(1);
/// Deadline of one registration (the scheduler deploys every function before answering).
const DEADLINE: Duration = Duration::from_secs(60);

/// How an agent gets its cluster credentials.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// Where they are kept (`ca.pem`, `node.pem`, `node-key.pem`).
    pub dir: PathBuf,
    /// The scheduler's cluster port (`host:port`), to join through.
    pub scheduler: Option<String>,
    /// A join token from `sandstorm cluster join-token`.
    pub join_token: Option<String>,
    /// The cluster CA's certificate (the scheduler's `DATA_DIR/ca.pem`), to trust the scheduler
    /// while joining.
    pub ca_file: Option<PathBuf>,
}

/// The agent's credentials: those kept in the identity directory, or (the first time) new ones
/// from joining the cluster with the join token. They must name `peer`.
pub async fn credentials(peer: &Peer, b: &Bootstrap) -> anyhow::Result<Credentials> {
    if let Some(creds) = Credentials::load(&b.dir)? {
        if creds.peer != *peer {
            bail!(
                "the identity directory {} holds the certificate of the {}, not of the {peer}; \
                 give this agent another --identity-dir (or its own --name)",
                b.dir.display(),
                creds.peer
            );
        }
        if let Some(ca_file) = &b.ca_file {
            let ca_pem = std::fs::read_to_string(ca_file)
                .with_context(|| format!("reading the cluster CA {}", ca_file.display()))?;
            if ca_pem.trim() != creds.ca_pem.trim() {
                bail!(
                    "the credentials in {} were issued by another cluster CA than {}: this node \
                     belonged to another cluster; remove that directory to join this one",
                    b.dir.display(),
                    ca_file.display()
                );
            }
        }
        return Ok(creds);
    }
    let (Some(scheduler), Some(token), Some(ca_file)) = (&b.scheduler, &b.join_token, &b.ca_file)
    else {
        bail!(
            "no cluster credentials in {} and nothing to join with: an agent joins once with \
             --scheduler ADDR --join-token TOKEN --ca CA.pem (the token from `sandstorm cluster \
             join-token`, the CA from the scheduler's data directory)",
            b.dir.display()
        );
    };
    let ca_pem = std::fs::read_to_string(ca_file)
        .with_context(|| format!("reading the cluster CA {}", ca_file.display()))?;
    let (key_pem, public_key) = sandstorm_identity::new_key()?;
    let channel = cluster_channel(
        scheduler,
        sandstorm_identity::anonymous_client_tls(&ca_pem, Some(&Peer::scheduler())),
    )?;
    let role = match peer.role {
        Role::Storage => pb::Tier::Storage,
        Role::Compute => pb::Tier::Compute,
        Role::Scheduler => bail!("the scheduler does not join its own cluster"),
    };
    let joined = tokio::time::timeout(
        DEADLINE,
        ClusterClient::new(channel).join(pb::JoinRequest {
            token: token.clone(),
            name: peer.name.clone(),
            role: role.into(),
            public_key,
        }),
    )
    .await
    .with_context(|| format!("joining through {scheduler}: no answer"))?
    .map_err(|s| anyhow::anyhow!("joining through {scheduler}: {}", s.message()))?
    .into_inner();
    let creds = Credentials::from_pem(joined.ca_pem, joined.certificate_pem, key_pem)?;
    if creds.peer != *peer {
        bail!(
            "the scheduler issued a certificate for the {}, not the {peer}",
            creds.peer
        );
    }
    creds.save(&b.dir)?;
    println!(
        "joined the cluster as the {peer}; credentials kept in {}",
        b.dir.display()
    );
    Ok(creds)
}

/// The default identity directory of node `name`: `<data dir>/identity`.
pub fn default_identity_dir(data_dir: Option<&Path>, name: &str) -> PathBuf {
    data_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("sandstorm-data").join(name))
        .join("identity")
}

/// A lazily connected channel to the scheduler's cluster port with `tls`.
fn cluster_channel(scheduler: &str, tls: ClientTlsConfig) -> anyhow::Result<Channel> {
    let host = scheduler
        .strip_prefix("https://")
        .or_else(|| scheduler.strip_prefix("http://"))
        .unwrap_or(scheduler);
    Ok(Endpoint::from_shared(format!("https://{host}"))
        .with_context(|| format!("the scheduler address {scheduler:?}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy())
}

/// What the agent announces.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The scheduler's cluster port.
    pub scheduler: String,
    /// The agent's certificate: registration, like every cluster link, is mutual TLS.
    pub credentials: Credentials,
    pub name: String,
    pub role: pb::Tier,
    pub listen: SocketAddr,
    pub cores: u32,
    /// Compute role: how long an idle warm container is kept, ms (0 for storage nodes).
    pub keep_alive_ms: u64,
    /// Compute role: the router to keep in step with the scheduler's storage nodes.
    pub router: Option<Arc<StorageRouter>>,
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
        address: format!("https://{host}"),
        cores: r.cores,
        memory_mb: 0,
        incarnation,
        keep_alive_ms: r.keep_alive_ms,
    };
    let mut failing = false;
    let channel = match cluster_channel(&r.scheduler, r.credentials.client_tls(&Peer::scheduler()))
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(scheduler = %r.scheduler, error = %e, "cannot register: bad scheduler address");
            return;
        }
    };
    loop {
        let attempt = async {
            let mut client = ClusterClient::new(channel.clone());
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
    let mut nodes: Vec<StorageRoute> = response
        .storage
        .iter()
        .map(|s| StorageRoute {
            id: NodeId(s.node_id),
            name: s.name.clone(),
            address: s.address.clone(),
        })
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
                .map(|r| format!("node-{}={}@{}", r.id.0, r.name, r.address))
                .collect();
            println!("storage nodes: {}", list.join(" "));
        }
        Err(error) => {
            tracing::warn!(%error, "the scheduler named a storage node this agent cannot dial")
        }
    }
}
